//! Global budgets shared by all parts of a copy: buffered bytes (memory) and bytes per second.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::Progress;

/// A byte budget: every chunk acquires its length before it enters a part's buffer and gives
/// it back when the uploader takes the next chunk (or drops the body). The total can never
/// exceed `limit`, whatever the part size.
///
/// The hot path touches only the semaphore: a permit handed to a buffer is "forgotten" and
/// given back with [`release`](Self::release) by whoever holds the chunk, so no reference
/// count or shared counter is bumped per chunk (those cache lines would bounce between the
/// cores running different parts). In-use bytes are derived from the semaphore when sampled.
#[derive(Debug)]
pub struct MemoryBudget {
    sem: Semaphore,
    limit: u64,
    progress: Arc<Progress>,
}

/// Bytes of one chunk charged to the budget; released on drop unless handed over.
#[derive(Debug)]
pub struct BudgetPermit<'a> {
    permit: SemaphorePermit<'a>,
    bytes: u32,
}

impl BudgetPermit<'_> {
    /// Bytes this permit holds.
    pub fn bytes(&self) -> u32 {
        self.bytes
    }

    /// Detaches the bytes from this guard: the new holder must [`MemoryBudget::release`] them.
    pub fn hand_over(self) -> u32 {
        let n = self.bytes;
        self.permit.forget();
        n
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least 1) reporting its high-water mark into `progress`.
    pub fn new(limit: u64, progress: Arc<Progress>) -> Arc<Self> {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS as u64);
        Arc::new(Self {
            sem: Semaphore::new(limit as usize),
            limit,
            progress,
        })
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The most one chunk may weigh (callers split bigger chunks).
    pub fn max_chunk(&self) -> u64 {
        self.limit.min(u32::MAX as u64)
    }

    /// Waits until `bytes` (≤ [`max_chunk`](Self::max_chunk)) fit in the budget.
    pub async fn acquire(&self, bytes: u64) -> BudgetPermit<'_> {
        let n = bytes.min(self.max_chunk()) as u32;
        // The synchronous attempt skips building a future in the common case; it cannot
        // starve waiters, as released permits go to queued waiters first.
        let permit = match self.sem.try_acquire_many(n) {
            Ok(p) => p,
            Err(_) => self
                .sem
                .acquire_many(n)
                .await
                .expect("the budget semaphore is never closed"),
        };
        self.note_peak();
        BudgetPermit { permit, bytes: n }
    }

    /// Takes `bytes` (≤ [`max_chunk`](Self::max_chunk)) if they fit now, already detached:
    /// the caller must [`release`](Self::release) the returned weight.
    pub fn try_take(&self, bytes: u64) -> Option<u32> {
        let n = bytes.min(self.max_chunk()) as u32;
        self.sem.try_acquire_many(n).ok()?.forget();
        self.note_peak();
        Some(n)
    }

    fn note_peak(&self) {
        let in_use = self.in_use();
        // Read first: the shared line is only written when a new peak is reached.
        if in_use > self.progress.peak_buffered_bytes.load(Relaxed) {
            self.progress.peak_buffered_bytes.fetch_max(in_use, Relaxed);
        }
    }

    /// Gives back bytes detached with [`BudgetPermit::hand_over`].
    pub fn release(&self, bytes: u32) {
        self.sem.add_permits(bytes as usize);
    }

    /// Bytes currently charged.
    pub fn in_use(&self) -> u64 {
        self.limit - self.sem.available_permits() as u64
    }
}

/// A token bucket on bytes shared by all streams of a copy.
///
/// Hand-rolled rather than `governor`: governor's `until_n_ready` rejects requests larger than
/// the burst size and counts in `u32` cells, which fits poorly with byte counts and chunk sizes
/// that vary per store. Here a request may overdraw the bucket; the caller then sleeps until
/// the debt is repaid, which keeps the long-run rate exact with one short lock per chunk.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` bytes per second (at least 1); bursts up to a quarter second of traffic.
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 4.0).max(64.0 * 1024.0);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `bytes` tokens, sleeping as long as the bucket is in debt.
    pub async fn acquire(&self, bytes: u64) {
        let wait = {
            let mut s = self.state.lock().expect("token bucket lock");
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - bytes as f64;
            s.1 = now;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_blocks_until_released() {
        let p = Progress::new();
        let b = MemoryBudget::new(100, p.clone());
        let a = b.acquire(60).await;
        assert_eq!(b.in_use(), 60);
        let blocked = tokio::time::timeout(Duration::from_millis(20), b.acquire(50)).await;
        assert!(blocked.is_err(), "60 + 50 > 100 must wait");
        drop(a);
        assert_eq!(b.in_use(), 0);
        let c = b.acquire(50).await.hand_over();
        assert_eq!(b.in_use(), 50, "handed-over bytes stay charged");
        assert_eq!(p.peak_buffered_bytes.load(Relaxed), 60);
        b.release(c);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.acquire(1000).await.bytes, 100, "clamped to the budget");
    }

    #[tokio::test]
    async fn token_bucket_paces_bytes() {
        let tb = TokenBucket::new(4_000_000);
        let start = Instant::now();
        for _ in 0..20 {
            tb.acquire(100_000).await;
        }
        // 2 MB at 4 MB/s with a 1 MB initial burst: about 0.25 s.
        let el = start.elapsed().as_secs_f64();
        assert!((0.23..2.0).contains(&el), "took {el}");
    }
}
