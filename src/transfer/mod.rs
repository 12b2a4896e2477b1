//! The relay engine: plan parts, pipe ranged GETs into UploadParts, retry, verify, resume.
