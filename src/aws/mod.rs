//! AWS-side protocol pieces shared by the S3 data path and the AWS control APIs.
//!
//! Guarantees: [`sigv4`] is the only SigV4 implementation in the crate; S3 ([`crate::s3`]) and
//! the Query APIs ([`query`]: EC2, IAM, STS) all sign through it, so a fix to canonicalisation
//! lands everywhere at once. [`query`] is the one Query protocol client (form encoding, both
//! error shapes, retry); [`ec2`] and [`iam`] are typed calls on top, [`wait`] polls EC2 tasks,
//! [`vmimport`] checks and repairs the VM Import/Export service role, [`preflight`] runs the
//! checks `ossrelay preflight --cloud aws` prints.

pub mod ec2;
pub mod iam;
pub mod preflight;
pub mod query;
pub mod sigv4;
pub mod vmimport;
pub mod wait;
pub mod xml;
