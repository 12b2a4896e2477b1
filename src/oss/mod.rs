//! OSS wire protocol: endpoints and addressing, V1/V4 signing, typed operations, XML, errors.
