//! Global budgets shared by all parts of a copy: buffered bytes (memory) and bytes per second.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Progress;

/// A byte budget: every chunk acquires its length before it enters a part's buffer and gives
/// it back when the uploader takes the next chunk (or drops the body). The total can never
/// exceed `limit`, whatever the part size.
#[derive(Debug)]
pub struct MemoryBudget {
    sem: Arc<Semaphore>,
    limit: u64,
    progress: Arc<Progress>,
}

/// Bytes of one chunk charged to the budget; released on drop.
#[derive(Debug)]
pub struct BudgetPermit {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    progress: Arc<Progress>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at least 1) reporting into `progress`.
    pub fn new(limit: u64, progress: Arc<Progress>) -> Arc<Self> {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS as u64);
        Arc::new(Self {
            sem: Arc::new(Semaphore::new(limit as usize)),
            limit,
            progress,
        })
    }

    /// The most one chunk may weigh (callers split bigger chunks).
    pub fn max_chunk(&self) -> u64 {
        self.limit.min(u32::MAX as u64)
    }

    /// Waits until `bytes` (≤ [`max_chunk`](Self::max_chunk)) fit in the budget.
    pub async fn acquire(&self, bytes: u64) -> BudgetPermit {
        let n = bytes.min(self.max_chunk()) as u32;
        let permit = self
            .sem
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the budget semaphore is never closed");
        let now = self.progress.buffered_bytes.fetch_add(n as u64, Relaxed) + n as u64;
        self.progress.peak_buffered_bytes.fetch_max(now, Relaxed);
        BudgetPermit {
            _permit: permit,
            bytes: n as u64,
            progress: self.progress.clone(),
        }
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.progress.buffered_bytes.fetch_sub(self.bytes, Relaxed);
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
        assert_eq!(p.buffered_bytes.load(Relaxed), 60);
        let blocked = tokio::time::timeout(Duration::from_millis(20), b.acquire(50)).await;
        assert!(blocked.is_err(), "60 + 50 > 100 must wait");
        drop(a);
        let c = b.acquire(50).await;
        assert_eq!(p.buffered_bytes.load(Relaxed), 50);
        assert_eq!(p.peak_buffered_bytes.load(Relaxed), 60);
        drop(c);
        assert_eq!(p.buffered_bytes.load(Relaxed), 0);
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
