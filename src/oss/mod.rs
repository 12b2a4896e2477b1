//! OSS wire protocol: endpoints and addressing, V1/V4 signing, typed operations, XML, errors.

// OssError carries every diagnostic field OSS sends; errors are rare and off the hot path,
// so keeping it flat (not boxed) is simpler for callers that match on fields.
#![allow(clippy::result_large_err)]

pub mod endpoint;
pub mod error;
pub mod sign;
pub mod xml;

pub use endpoint::{Endpoint, EndpointSpec, Scheme};
pub use error::OssError;
pub use sign::SignVersion;
