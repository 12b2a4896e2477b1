//! The small object-store trait the transfer engine talks to.
//!
//! OSS implements it (`crate::oss::OssBucket`), a local file implements the parts that make
//! sense (`crate::store::local`), and other dialects can be added without touching the engine.

pub mod local;
pub mod memory;

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

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
    /// Whole-object CRC-64/XZ (`x-oss-hash-crc64ecma`), when the store has one.
    pub crc64: Option<u64>,
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
    /// CRC-64 the store computed over the bytes it received, if it reports one.
    pub crc64: Option<u64>,
}

/// A part as ListParts reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub crc64: Option<u64>,
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

/// OSS limits: 100 KiB – 5 GiB parts, 10,000 parts, 5 GiB PutObject.
pub const OSS_LIMITS: Limits = Limits {
    min_part_size: 100 * 1024,
    max_part_size: 5 * 1024 * 1024 * 1024,
    max_parts: 10_000,
    max_single_put: 5 * 1024 * 1024 * 1024,
};

/// The storage operations the transfer engine needs. Keys are object keys within one
/// bucket (or, for local files, ignored: the store is bound to one path).
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A short description for messages, e.g. `oss://bucket/key` or `./disk.raw`.
    fn describe(&self, key: &str) -> String;

    fn limits(&self) -> Limits {
        OSS_LIMITS
    }

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

    /// Uploads one part from a body of exactly `part.len` bytes.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartSpec,
        body: ByteStream,
    ) -> Result<Uploaded, StoreError>;

    /// Every part uploaded so far (all pages).
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, StoreError>;

    /// Completes the upload with exactly these parts `(number, etag)` in ascending order.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<Uploaded, StoreError>;

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}
