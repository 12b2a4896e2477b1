//! The S3 dialect: Amazon S3 and S3-compatible stores (COS, OBS, GCS XML, MinIO, R2, OSS in
//! S3 mode) behind [`crate::store::ObjectStore`].
//!
//! Guarantees: every attempt is signed at send time with SigV4 ([`crate::aws::sigv4`]) and the
//! credentials the provider returns then; bodies are plain (`UNSIGNED-PAYLOAD`,
//! `Content-Length`, never aws-chunked); only checksums a provider verifies are sent and only
//! those it reports are returned ([`Provider::checksum_caps`]); every error is an [`S3Error`]
//! with a [`crate::store::ErrorClass`] and one actionable line. Retries happen only in the
//! shared transport ([`crate::http`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ossrelay::s3::S3Error> {
//! use std::sync::Arc;
//! use ossrelay::credentials::{Credentials, StaticProvider};
//! use ossrelay::s3::{Provider, S3Client, S3Config};
//!
//! let creds = Arc::new(StaticProvider(Credentials::new("AKIA...", "secret")));
//! let mut cfg = S3Config::new(Provider::Aws, "eu-west-1", None, creds);
//! cfg.region_flag = "--src-region".into();
//! let bucket = S3Client::new(cfg)?.bucket("images");
//! let meta = bucket.head_object("disk.raw").await?;
//! println!("{} bytes, CRC-64/NVME {:?}", meta.size, meta.checksums.crc64_nvme());
//! # Ok(()) }
//! ```

// S3Error carries the diagnostic fields S3 sends; errors are off the hot path.
#![allow(clippy::result_large_err)]

pub mod bucket;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod lifecycle;
pub mod provider;
pub mod xml;

pub use bucket::S3Bucket;
pub use client::{S3Client, S3Config};
pub use endpoint::{S3Endpoint, Scheme};
pub use error::S3Error;
pub use lifecycle::{ProtectOutcome, S3Lifecycle};
pub use provider::Provider;
