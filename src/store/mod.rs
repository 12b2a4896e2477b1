//! The small object-store trait the transfer engine talks to.
//!
//! OSS implements it (`crate::oss::OssBucket`), a local file implements the parts that make
//! sense (`crate::store::local`), and other dialects can be added without touching the engine.

pub mod local;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod retry;
pub mod wire;

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::checksum::{Algorithm, Checksums};

/// A stream of body chunks. Errors mid-stream carry the reason the body broke off.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send + 'static>>;

/// How the engine should react to a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 503 SlowDown / *RateLimitExceeded / 429: back off and lower concurrency.
    Throttled,
    /// 5xx, connection reset, timeout, truncated or corrupted body: retry.
    Transient,
    /// RequestTimeTooSkewed: the clock offset was adjusted; retry at once.
    ClockSkew,
    /// Bad credentials or signature, access denied: retrying does not help.
    Auth,
    /// NoSuchBucket / NoSuchKey / NoSuchUpload.
    NotFound,
    /// If-Match failed: the source changed under us.
    Precondition,
    /// Any other 4xx or a local usage error: retrying does not help.
    Client,
}

impl ErrorClass {
    /// Whether a retry of the same request may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::ClockSkew)
    }

    /// Label used in metrics (`ossrelay_retries_total{reason}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::ClockSkew => "clock_skew",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::Precondition => "precondition",
            Self::Client => "client",
        }
    }
}

/// An error from an object store, already classified for retry decisions.
///
/// `message` is one line a user can act on; it never contains secrets or signatures.
#[derive(Debug, Clone, thiserror::Error)]
pub struct StoreError {
    pub class: ErrorClass,
    /// Service error code such as `NoSuchKey`, when the service sent one.
    pub code: Option<String>,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Service request id, for support tickets.
    pub request_id: Option<String>,
    pub message: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.code {
            write!(f, " ({code}")?;
            if let Some(s) = self.status {
                write!(f, ", HTTP {s}")?;
            }
            if let Some(r) = &self.request_id {
                write!(f, ", request id {r}")?;
            }
            f.write_str(")")?;
        } else if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        Ok(())
    }
}

impl StoreError {
    /// A classified error with no service details.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            code: None,
            status: None,
            request_id: None,
            message: message.into(),
        }
    }

    /// A transient I/O or network failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }
}

/// What HEAD tells about an object.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    pub last_modified: Option<String>,
    /// Whole-object checksums the store reports (OSS: CRC-64/XZ from `x-oss-hash-crc64ecma`).
    pub checksums: Checksums,
    pub content_type: Option<String>,
    /// User metadata, names lower-cased without the `x-oss-meta-` prefix.
    pub user_meta: Vec<(String, String)>,
}

/// Metadata to give a new object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_meta: Vec<(String, String)>,
}

/// Where a part sits in the object; stores that write by offset (local files) need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpec {
    /// 1-based part number.
    pub number: u32,
    pub offset: u64,
    pub len: u64,
}

/// A stored (uploaded) part or whole object as the store acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Uploaded {
    /// ETag without quotes.
    pub etag: String,
    /// Checksums the store computed over the bytes it received (see [`ChecksumCaps::reports`]).
    pub checksums: Checksums,
}

/// A part as ListParts reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    /// The part's checksums as the store lists them.
    pub checksums: Checksums,
}

/// An in-progress multipart upload as ListMultipartUploads reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUpload {
    pub key: String,
    pub upload_id: String,
    /// ISO-8601 initiation time as the service wrote it.
    pub initiated: String,
}

/// The store's limits the planner must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_part_size: u64,
    pub max_part_size: u64,
    pub max_parts: u32,
    pub max_single_put: u64,
}

impl Limits {
    /// Checks a requested part size; the error names the range, e.g. "100KiB to 5GiB".
    pub fn check_part_size(&self, part_size: u64) -> Result<(), String> {
        if part_size < self.min_part_size || part_size > self.max_part_size {
            return Err(format!(
                "{part_size} bytes is out of range: the destination takes parts of {} to {}",
                human_size(self.min_part_size),
                human_size(self.max_part_size)
            ));
        }
        Ok(())
    }
}

/// `5GiB`, `100KiB`, `1536KiB`, `1000B`: exact, in the largest binary unit that divides.
pub fn human_size(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

/// Which checksums a store computes and which it verifies, so the engine proves each side with
/// what that side speaks (no store is assumed to be OSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumCaps {
    /// Algorithms the store reports for what it stored: in [`Uploaded::checksums`] of a part
    /// or object, in [`ListedPart::checksums`] and in [`ObjectMeta::checksums`].
    pub reports: &'static [Algorithm],
    /// Algorithms whose expected values the store checks itself when they are passed to
    /// [`ObjectStore::upload_part`] or [`ObjectStore::complete`], rejecting the request on a
    /// mismatch (OSS: `Content-MD5` on UploadPart).
    pub verifies: &'static [Algorithm],
}

impl ChecksumCaps {
    pub fn reports(&self, alg: Algorithm) -> bool {
        self.reports.contains(&alg)
    }

    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.verifies.contains(&alg)
    }
}

/// The storage operations the transfer engine needs. Keys are object keys within one
/// bucket (or, for local files, ignored: the store is bound to one path).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A short description for messages, e.g. `oss://bucket/key` or `./disk.raw`.
    fn describe(&self, key: &str) -> String;

    /// Part and object size limits of this store (a capability: there is no default).
    fn limits(&self) -> Limits;

    /// The checksums this store reports and verifies.
    fn checksums(&self) -> ChecksumCaps;

    /// Requests this store retried on its own so far (a copy reports the growth during its
    /// run with its own retries).
    fn retries(&self) -> u64 {
        0
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// Bytes `[start, end)` of the object; with `if_match`, fails with
    /// [`ErrorClass::Precondition`] if the object's ETag differs.
    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<ByteStream, StoreError>;

    /// Writes a whole object from a body of exactly `len` bytes.
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded, StoreError>;

    /// Starts a multipart upload of an object of `total_size` bytes; returns its upload id.
    async fn create_multipart(
        &self,
        key: &str,
        total_size: u64,
        opts: &PutOptions,
    ) -> Result<String, StoreError>;

    /// Uploads one part from a body of exactly `part.len` bytes. `expected` holds the part's
    /// checksums when they are known before it is sent (a part cut from memory); the store
    /// sends those it [verifies](ChecksumCaps::verifies) and ignores the rest.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartSpec,
        body: ByteStream,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError>;

    /// Every part uploaded so far (all pages).
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, StoreError>;

    /// Completes the upload with exactly these parts `(number, etag)` in ascending order into
    /// an object of `size` bytes (S3 checks it against `x-amz-mp-object-size`). `expected`
    /// holds the whole object's checksums; the store sends those it
    /// [verifies](ChecksumCaps::verifies) and ignores the rest.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        size: u64,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError>;

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}
