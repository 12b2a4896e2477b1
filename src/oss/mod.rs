//! OSS wire protocol: endpoints and addressing, V1/V4 signing, typed operations, XML, errors.

pub mod endpoint;
pub mod error;
pub mod sign;
pub mod xml;

pub use endpoint::{Endpoint, EndpointSpec, Scheme};
pub use error::OssError;
pub use sign::SignVersion;
