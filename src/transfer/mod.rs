//! The relay engine: plan parts, pipe ranged GETs into UploadParts, retry, verify, resume.
//!
//! The engine knows nothing about HTTP: it talks to [`ObjectStore`]s. One copy is:
//! HEAD the source → plan the part size → (resume or) create a multipart upload → stream up to
//! `concurrency` parts at once, each one ranged GET piped straight into one UploadPart through a
//! small buffer charged against a global memory budget → fold the part CRC-64s and prove them
//! against the source and the Complete response.
//!
//! Guarantees callers can rely on:
//! * Memory: bytes buffered between GETs and uploads never exceed [`CopyOptions::memory`]
//!   (a byte semaphore; each chunk carries its bytes until the uploader takes the next one),
//!   and a part holds no more than one chunk between its GET and its upload, whatever the part
//!   size (the upload body pulls from the GET body).
//! * Proof: each part's CRC-64 is computed as it streams and must equal the destination's;
//!   the folded part CRCs must equal the source's CRC-64 (a mismatch re-reads the source to
//!   find and resend the corrupted parts) and the Complete response's. A final mismatch
//!   deletes the destination object and returns [`TransferError::CrcMismatch`].
//! * Resume: with a state directory, acknowledged parts survive a crash or Ctrl-C; a rerun
//!   reconciles them with ListParts and sends only the rest. Without one, any failure or
//!   interrupt aborts the upload, so nothing is left behind.
//! * Errors: [`TransferError::Interrupted`] (exit 130 in the CLI), [`TransferError::SourceChanged`],
//!   [`TransferError::Resumable`] (the message says how to resume) — all one line.

pub mod affinity;
pub mod budget;
pub mod convert;
mod cut;
mod decode;
mod engine;
pub mod format;
mod pipe;
pub mod plan;
pub mod progress;
mod proof;
mod relay;
pub mod retry;
mod schedule;
mod session;
pub mod shard;
mod source;
pub mod state;
pub mod tar;
pub mod unpack;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::checksum::{Checksum, Checksums};
use crate::store::{Limits, ObjectStore, StoreError};

pub use affinity::DecoderCpu;
pub use convert::{Conversion, ConvertSummary};
pub use engine::copy;
pub use format::{DiskFormat, InputFormat};
pub use plan::plan_part_size;
pub use progress::{Progress, ProgressSnapshot};
pub use relay::{relay, Relayed, Target, Transform};
pub use unpack::{copy_convert, copy_unpack, UnpackMode, UnpackSummary, UnpackTarget};

/// One side of a copy: a store and a key in it.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub key: String,
}

impl Location {
    pub fn new(store: Arc<dyn ObjectStore>, key: impl Into<String>) -> Self {
        Self {
            store,
            key: key.into(),
        }
    }

    /// Human description, e.g. `oss://bucket/key`.
    pub fn describe(&self) -> String {
        self.store.describe(&self.key)
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Tuning knobs of one copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Maximum parts in flight (the adaptive limit never goes above it).
    pub concurrency: usize,
    /// Requested part size; `None` = 64 MiB. Raised if the object would need > 10,000 parts.
    pub part_size: Option<u64>,
    /// Bytes the engine may hold in buffers between downloads and uploads, whatever the part size.
    pub memory: u64,
    /// Bytes per second over all streams; `None` = unlimited.
    pub bandwidth: Option<u64>,
    /// Where resume state lives; `None` = no resume (an interrupted upload is aborted).
    pub state_dir: Option<PathBuf>,
    /// `false` (`--no-resume`): discard existing state, abort its upload, start over.
    pub resume: bool,
    /// Attempts per part (a new GET and a new upload each time) before the copy fails.
    /// Control requests (HEAD, Initiate, ListParts, Abort…) are attempted once here: the
    /// store's transport retries them (see [`crate::http`]).
    pub max_attempts: u32,
    /// An engine-side stall timer for stores without one of their own (test doubles): a body
    /// that yields no chunk (or is not consumed) for this long is cut (transient error).
    /// `None` (the default): the store's transport times out stalled requests
    /// (`--stall-timeout`), and the engine keeps no second timer.
    pub idle_timeout: Option<Duration>,
    /// With `idle_timeout`, for the same stores: limit on getting a response (and on the
    /// UploadPart response after its body was sent). `None` by default, as above.
    pub request_timeout: Option<Duration>,
    /// How long in-flight parts may finish after cancellation before they are dropped.
    pub grace: Duration,
    /// Largest chunk handed from a download to an upload (bigger chunks are split, not copied).
    pub chunk_size: usize,
    /// Shortest first retry delay of a part; later delays double, with jitter
    /// ([`crate::store::retry::Backoff`]).
    pub retry_base: Duration,
    /// Largest retry delay.
    pub retry_cap: Duration,
    /// A memory budget shared with other copies (a daemon's global limit); replaces `memory`.
    pub shared_memory: Option<Arc<budget::MemoryBudget>>,
    /// A bandwidth bucket shared with other copies (a daemon's global cap); replaces
    /// `bandwidth`.
    pub shared_bandwidth: Option<Arc<budget::TokenBucket>>,
    /// Whether an unpack's decoder gets a CPU of its own (`--decoder-cpu`).
    pub decoder_cpu: DecoderCpu,
    /// At most this many straggling parts are sent a second time on a fresh connection
    /// near the end of a copy (`--max-hedges`; 0 = never).
    pub max_hedges: u32,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            part_size: None,
            memory: 256 * 1024 * 1024,
            bandwidth: None,
            state_dir: None,
            resume: true,
            max_attempts: 10,
            idle_timeout: None,
            request_timeout: None,
            grace: Duration::from_secs(5),
            chunk_size: 256 * 1024,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(20),
            shared_memory: None,
            shared_bandwidth: None,
            max_hedges: 4,
            decoder_cpu: DecoderCpu::Auto,
        }
    }
}

impl CopyOptions {
    /// Checks user-supplied knobs before any request is made (a usage error, not a failure).
    /// `dst` is the destination's [`Limits`]: the part size is checked against the store
    /// that will receive the parts.
    pub fn validate(&self, dst: Limits) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if let Some(p) = self.part_size {
            dst.check_part_size(p)
                .map_err(|e| format!("--part-size {e}"))?;
        }
        // Each stream needs at least one chunk in memory to make progress.
        let min_memory = self.chunk_size as u64;
        if self.memory < min_memory {
            return Err(format!(
                "--memory {} is too small: at least {} bytes (one chunk) are needed",
                self.memory, min_memory
            ));
        }
        if self.memory > 1 << 40 {
            return Err(format!(
                "--memory {} is absurd: the budget bounds buffers, 256MiB-4GiB is plenty",
                self.memory
            ));
        }
        if self.bandwidth == Some(0) {
            return Err("--bandwidth must be greater than zero".into());
        }
        Ok(())
    }
}

/// What a finished copy did; printed by the CLI (JSON with `--json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CopySummary {
    pub source: String,
    pub destination: String,
    pub bytes: u64,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
    /// Whole-object CRC-64/XZ, serialised as a decimal string (JSON numbers lose u64 precision).
    #[serde(serialize_with = "state::ser_u64_string")]
    pub crc64: u64,
    /// Every checksum of the destination object this run proved, by algorithm (`crc64` is
    /// the CRC-64/XZ among them, kept for scripts that read it).
    pub checksums: Checksums,
    /// Parts of the multipart upload; 0 when a single PUT was used.
    pub parts: u32,
    pub part_size: u64,
    pub retries: u64,
    /// Bytes of a previous run that were kept and not sent again.
    pub resumed_bytes: u64,
    /// Whether the source reported a CRC-64 the result was proven against (a local file has none).
    pub source_crc64_known: bool,
    /// The independent proofs that held, e.g. `source_crc64nvme`, `part_md5`,
    /// `destination_crc64ecma`, `destination_full_object_crc64nvme` (see `transfer::proof`).
    /// Parts kept from an earlier run were proven by that run and add nothing here.
    pub verified_by: Vec<String>,
    /// Whether the destination is proven to hold what was read (a checksum of its own, per
    /// part or whole, matched ours; a source checksum, when there is one, always must). False
    /// when the destination reports and checks nothing the copy computed; `--require-proof`
    /// refuses that.
    pub end_to_end: bool,
    /// Straggling parts sent a second time on a fresh connection near the end (at most
    /// `CopyOptions::max_hedges`); the proof is unchanged: one record per part number.
    pub hedged_parts: u64,
}

/// Why a copy failed. Messages are one line and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{}", interrupted_message(.state_file))]
    Interrupted { state_file: Option<PathBuf> },
    #[error("source {source_desc} changed during the copy (ETag {old_etag} → {new_etag}); rerun to start over")]
    SourceChanged {
        source_desc: String,
        old_etag: String,
        new_etag: String,
    },
    #[error("{} mismatch for {what}: expected {expected}, got {actual}; the destination was removed, rerun to copy again", .expected.algorithm())]
    CrcMismatch {
        what: String,
        expected: Checksum,
        actual: Checksum,
    },
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    Plan(String),
    #[error("resume state: {0}")]
    State(String),
    /// The state directory failed (full, read-only, gone) while an upload was recorded in it.
    /// Nothing is aborted: the last state file that was written still names the upload.
    #[error("cannot save resume state {}: {reason}; free space in (or fix) {}, then rerun the same command to resume from the progress last saved", .state_file.display(), state_dir(.state_file).display())]
    StateWrite { state_file: PathBuf, reason: String },
    /// The source is not a usable image archive (corrupt, truncated, not one regular file).
    #[error("{0}; nothing was written to the destination")]
    Archive(String),
    #[error("{source}; progress is saved in {}: rerun the same command to resume (or pass --no-resume to start over)", .state_file.display())]
    Resumable {
        #[source]
        source: Box<TransferError>,
        state_file: PathBuf,
    },
}

fn state_dir(file: &std::path::Path) -> &std::path::Path {
    file.parent().unwrap_or(std::path::Path::new("."))
}

fn interrupted_message(state_file: &Option<PathBuf>) -> String {
    match state_file {
        Some(p) => format!(
            "interrupted; progress is saved in {}: rerun the same command to resume",
            p.display()
        ),
        None => {
            "interrupted; the partial upload was aborted (no state directory, nothing to resume)"
                .to_string()
        }
    }
}

impl TransferError {
    /// Two CRC-64/XZ values that should have been equal.
    pub(crate) fn crc64_mismatch(what: impl Into<String>, expected: u64, actual: u64) -> Self {
        Self::CrcMismatch {
            what: what.into(),
            expected: Checksum::Crc64Xz(expected),
            actual: Checksum::Crc64Xz(actual),
        }
    }

    pub(crate) fn store(context: impl Into<String>, source: StoreError) -> Self {
        Self::Store {
            context: context.into(),
            source,
        }
    }

    /// The innermost error, looking through [`TransferError::Resumable`].
    pub fn root(&self) -> &TransferError {
        match self {
            Self::Resumable { source, .. } => source.root(),
            other => other,
        }
    }
}

/// `fut`, or `None` if it took longer than `limit` (no limit: `fut` as it is).
pub(crate) async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    fut: F,
) -> Option<F::Output> {
    match limit {
        Some(t) => tokio::time::timeout(t, fut).await.ok(),
        None => Some(fut.await),
    }
}

#[cfg(test)]
mod tests;
