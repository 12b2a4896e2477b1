//! AWS-side protocol pieces shared by the S3 data path and the AWS control APIs.
//!
//! Guarantees: [`sigv4`] is the only SigV4 implementation in the crate; S3 ([`crate::s3`]) and
//! the Query APIs (STS now, EC2/IAM later) both sign through it, so a fix to canonicalisation
//! lands everywhere at once.

pub mod sigv4;
