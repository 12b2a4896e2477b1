//! OSS wire protocol: endpoints and addressing, V1/V4 signing, typed operations, XML, errors.
//!
//! [`OssClient`] owns the connection pool and signs every attempt at send time;
//! [`OssBucket`] holds the typed operations and implements [`crate::store::ObjectStore`].

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

pub use bucket::{GetObjectOutput, OssBucket};
pub use client::{OssClient, OssConfig};
pub use endpoint::{Endpoint, EndpointSpec, Scheme};
pub use error::OssError;
pub use sign::SignVersion;
pub use xml::{BucketInfo, LifecycleAction, LifecycleConfiguration, LifecycleRule};
