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
    /// Bytes fetched from the source, retried fetches included (billed egress), counted as
    /// each chunk arrives.
    pub downloaded_bytes: AtomicU64,
    /// Bytes handed to the destination as they stream, resent bytes included: the live
    /// throughput (`acked_bytes` moves a whole part at a time).
    pub sent_bytes: AtomicU64,
    /// Parts of the upload (0 for a single PUT).
    pub parts_total: AtomicU64,
    /// Parts acknowledged, including resumed ones.
    pub parts_done: AtomicU64,
    /// Parts currently transferring.
    pub inflight_parts: AtomicU64,
    /// Parts all sent, waiting for the destination's acknowledgement (holding no slot).
    pub awaiting_ack_parts: AtomicU64,
    /// Parts moving body bytes: first byte taken, body not all sent. What `--concurrency`
    /// bounds (plus at most a quarter of it in early starts finishing their last round trip);
    /// `inflight_parts` also counts GETs still waiting for their first byte.
    pub sending_parts: AtomicU64,
    /// Straggling parts sent a second time on a fresh connection.
    pub hedged_parts: AtomicU64,
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
    pub sent_bytes: u64,
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
            sent_bytes: self.sent_bytes.load(Relaxed),
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

/// Counts bytes as they stream: into [`Progress`] and `ossrelay_bytes_total{direction}`.
/// The counter handle is looked up once (a registry lookup hashes the labels); each chunk
/// then costs two relaxed atomic adds, next to the CRC of the same chunk.
#[derive(Clone)]
pub(crate) struct StreamCounter {
    progress: Arc<Progress>,
    metric: metrics::Counter,
    upload: bool,
}

impl StreamCounter {
    /// Bytes received from the source.
    pub(crate) fn download(progress: Arc<Progress>) -> Self {
        let metric = metrics::counter!(crate::metrics::BYTES_TOTAL, "direction" => "download");
        Self {
            progress,
            metric,
            upload: false,
        }
    }

    /// Bytes handed to the destination.
    pub(crate) fn upload(progress: Arc<Progress>) -> Self {
        let metric = metrics::counter!(crate::metrics::BYTES_TOTAL, "direction" => "upload");
        Self {
            progress,
            metric,
            upload: true,
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let c = if self.upload {
            &self.progress.sent_bytes
        } else {
            &self.progress.downloaded_bytes
        };
        c.fetch_add(n, Relaxed);
        self.metric.increment(n);
    }

    /// Wraps an upload body so its bytes count as the uploader pulls them.
    pub(crate) fn counted(self, body: crate::store::ByteStream) -> crate::store::ByteStream {
        use futures::StreamExt;
        Box::pin(body.inspect(move |item| {
            if let Ok(b) = item {
                self.add(b.len() as u64);
            }
        }))
    }
}

/// A throughput smoothed over about [`RateMeter::TAU`]: an exponentially weighted moving
/// average of the rate between samples, weighted by each interval's length so irregular
/// sampling (API polls, scrapes) gives the same answer as a steady clock. An average since
/// the start would keep the planning pause and early ramp-up in the rate for the whole job
/// (an ETA rising while the job runs at full speed); the last interval alone would jump
/// with every part.
#[derive(Debug, Clone, Default)]
pub struct RateMeter {
    /// The first sample: until it is [`RateMeter::TAU`] old, the rate is the plain average
    /// since then (an EWMA seeded with one short interval would start at that interval's
    /// rate, zero if no chunk happened to pass in it).
    first: Option<(std::time::Instant, u64)>,
    last: Option<(std::time::Instant, u64)>,
    rate: Option<f64>,
}

impl RateMeter {
    /// The smoothing time constant, in seconds.
    pub const TAU: f64 = 10.0;
    /// Samples closer together than this are merged into the next (a burst of API calls
    /// must not turn one chunk into a rate).
    const MIN_INTERVAL: f64 = 0.5;

    /// Records that `bytes` (a monotonic counter) was reached at `now`; returns the rate.
    pub fn sample(&mut self, now: std::time::Instant, bytes: u64) -> Option<f64> {
        let (Some((t0, b0)), Some((tf, bf))) = (self.last, self.first) else {
            self.last = Some((now, bytes));
            self.first = Some((now, bytes));
            return self.rate;
        };
        if bytes < b0 {
            // A new counter (the next disk of a migration): start its interval afresh.
            self.last = Some((now, bytes));
            self.first = Some((now, bytes));
            return self.rate;
        }
        let dt = now.saturating_duration_since(t0).as_secs_f64();
        if dt < Self::MIN_INTERVAL {
            return self.rate;
        }
        let since_first = now.saturating_duration_since(tf).as_secs_f64();
        self.rate = Some(match self.rate {
            Some(r) if since_first > Self::TAU => {
                let inst = bytes.saturating_sub(b0) as f64 / dt;
                r + (1.0 - (-dt / Self::TAU).exp()) * (inst - r)
            }
            _ => bytes.saturating_sub(bf) as f64 / since_first,
        });
        self.last = Some((now, bytes));
        self.rate
    }

    /// The smoothed rate, once two samples far enough apart were seen.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Seconds to move `remaining` bytes at the smoothed rate.
    pub fn eta(&self, remaining: u64) -> Option<f64> {
        self.rate.filter(|r| *r > 0.0).map(|r| remaining as f64 / r)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn rate_meter_follows_a_steady_rate_and_ignores_bursts_of_samples() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.sample(t0, 0), None);
        // 10 MB/s, sampled every second, with part-sized jumps every third second.
        let mut last = None;
        for s in 1..=60u64 {
            let bytes = (s / 3) * 30_000_000;
            last = m.sample(t0 + Duration::from_secs(s), bytes);
        }
        let r = last.unwrap();
        assert!((8.5e6..11.5e6).contains(&r), "smoothed rate {r}");
        // Ten calls within a millisecond do not change it.
        let t = t0 + Duration::from_secs(60);
        for i in 0..10 {
            m.sample(t + Duration::from_micros(i), 600_000_000 + i * 1_000_000);
        }
        assert_eq!(m.rate(), Some(r));
    }

    #[test]
    fn eta_does_not_keep_a_slow_start_in_the_rate() {
        // 20 s of planning at zero, then 40 s at 40 MB/s with 2 GB left: an average since the
        // start (26.7 MB/s) would say 75 s; the smoothed rate is within 10% of 40 MB/s.
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        let mut bytes = 0;
        for s in 0..=60u64 {
            if s > 20 {
                bytes += 40_000_000;
            }
            m.sample(t0 + Duration::from_secs(s), bytes);
        }
        let eta = m.eta(2_000_000_000).unwrap();
        assert!((45.0..56.0).contains(&eta), "eta {eta}");
    }

    #[test]
    fn stream_counter_counts_each_chunk_as_it_is_pulled() {
        use futures::StreamExt;
        let p = Progress::new();
        let chunks: Vec<Result<bytes::Bytes, crate::store::StoreError>> = (0..4)
            .map(|_| Ok(bytes::Bytes::from_static(&[7u8; 1000])))
            .collect();
        let mut body =
            StreamCounter::upload(p.clone()).counted(Box::pin(futures::stream::iter(chunks)));
        futures::executor::block_on(async {
            body.next().await;
            assert_eq!(p.snapshot().sent_bytes, 1000);
            body.next().await;
            assert_eq!(p.snapshot().sent_bytes, 2000);
        });
        assert_eq!(p.snapshot().downloaded_bytes, 0);
    }
}
