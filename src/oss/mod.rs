//! OSS wire protocol: endpoints and addressing, V1/V4 signing, typed operations, XML, errors.
//!
//! [`OssClient`] owns the connection pool and signs every attempt at send time;
//! [`OssBucket`] holds the typed operations and implements [`crate::store::ObjectStore`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), ossrelay::oss::OssError> {
//! use std::sync::Arc;
//! use ossrelay::credentials::{Credentials, StaticProvider};
//! use ossrelay::oss::{EndpointSpec, OssClient, OssConfig};
//!
//! let creds = Arc::new(StaticProvider(Credentials::new("LTAI...", "secret")));
//! let endpoint = EndpointSpec::Region { region: "cn-hangzhou".into(), internal: false };
//! let client = OssClient::new(OssConfig::new(endpoint, "cn-hangzhou", creds))?;
//! let meta = client.bucket("images").head_object("disk.raw").await?;
//! println!("{} bytes, CRC-64 {:?}", meta.size, meta.checksums.crc64_xz());
//! # Ok(()) }
//! ```

// OssError carries every diagnostic field OSS sends; errors are rare and off the hot path,
// so keeping it flat (not boxed) is simpler for callers that match on fields.
#![allow(clippy::result_large_err)]

pub mod bucket;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod lifecycle;
pub mod sign;
pub mod xml;

pub use bucket::{GetObjectOutput, OssBucket, CHECKSUMS, LIMITS};
pub use client::{OssClient, OssConfig};
pub use endpoint::{Endpoint, EndpointSpec, Scheme};
pub use error::OssError;
pub use sign::SignVersion;
pub use xml::{BucketInfo, LifecycleAction, LifecycleConfiguration, LifecycleRule};
