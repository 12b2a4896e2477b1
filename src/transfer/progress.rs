//! Live counters of one copy, shared with the progress bar and the daemon.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Atomic counters; readers take a [`ProgressSnapshot`]. Bytes count only once the destination
/// acknowledged them, so a bar never runs ahead of what is really stored.
#[derive(Debug, Default)]
pub struct Progress {
    /// Size of the object being copied (set after planning).
    pub total_bytes: AtomicU64,
    /// Bytes acknowledged by the destination, including resumed bytes.
    pub acked_bytes: AtomicU64,
    /// Bytes kept from a previous run.
    pub resumed_bytes: AtomicU64,
    /// Bytes fetched from the source, retried fetches included (billed egress).
    pub downloaded_bytes: AtomicU64,
    /// Parts of the upload (0 for a single PUT).
    pub parts_total: AtomicU64,
    /// Parts acknowledged, including resumed ones.
    pub parts_done: AtomicU64,
    /// Parts currently transferring.
    pub inflight_parts: AtomicU64,
    /// Current adaptive concurrency limit.
    pub concurrency_limit: AtomicU64,
    /// Lowest concurrency limit reached (shows throttling happened).
    pub lowest_concurrency_limit: AtomicU64,
    /// Retried parts and requests.
    pub retries: AtomicU64,
    /// Bytes held in buffers between downloads and uploads (sampled twice a second).
    pub buffered_bytes: AtomicU64,
    /// High-water mark of `buffered_bytes`.
    pub peak_buffered_bytes: AtomicU64,
    /// Part CRC-64 mismatches seen (each one caused a retry).
    pub crc_mismatches: AtomicU64,
}

/// A consistent-enough copy of [`Progress`] for display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgressSnapshot {
    pub total_bytes: u64,
    pub acked_bytes: u64,
    pub resumed_bytes: u64,
    pub downloaded_bytes: u64,
    pub parts_total: u64,
    pub parts_done: u64,
    pub inflight_parts: u64,
    pub concurrency_limit: u64,
    pub retries: u64,
    pub buffered_bytes: u64,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            total_bytes: self.total_bytes.load(Relaxed),
            acked_bytes: self.acked_bytes.load(Relaxed),
            resumed_bytes: self.resumed_bytes.load(Relaxed),
            downloaded_bytes: self.downloaded_bytes.load(Relaxed),
            parts_total: self.parts_total.load(Relaxed),
            parts_done: self.parts_done.load(Relaxed),
            inflight_parts: self.inflight_parts.load(Relaxed),
            concurrency_limit: self.concurrency_limit.load(Relaxed),
            retries: self.retries.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
        }
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.concurrency_limit.store(limit as u64, Relaxed);
        self.lowest_concurrency_limit
            .fetch_min(limit as u64, Relaxed);
    }
}

/// Decrements `inflight_parts` when a part ends, however it ends (also when aborted).
pub(crate) struct InflightGuard(pub(crate) Arc<Progress>);

impl InflightGuard {
    pub(crate) fn new(p: Arc<Progress>) -> Self {
        p.inflight_parts.fetch_add(1, Relaxed);
        Self(p)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight_parts.fetch_sub(1, Relaxed);
    }
}
