//! The one retry decision and the one retry delay of the crate, next to the error taxonomy
//! they read ([`ErrorClass`]). The HTTP transport ([`crate::http`]) applies them to replayable
//! requests, the transfer engine's part scheduler to parts; both import them from here, so
//! neither depends on the other.
//!
//! [`should_retry`]: retry after attempt `attempt` failed when the class is retryable and
//! fewer than `max_attempts` attempts were made.
//!
//! [`Backoff`]: jittered exponential backoff, capped.
//!
//! Guarantees callers can rely on:
//! * The `n`-th delay (counting from 1) is uniform in `[hi/2, hi)` where
//!   `hi = min(cap, base × 2ⁿ)`, and never below `base` (nor, after throttling, below
//!   `4 × base`), never above `cap`: so the first delay is in `[base, 2 × base)`, and delays
//!   double until they reach the cap.
//! * Half of every delay is random ("equal jitter"): many clients or parts throttled together
//!   come back spread out instead of in waves, yet a delay never collapses to zero.
//! * [`ErrorClass::ClockSkew`] waits nothing (the signer's clock was corrected; the same
//!   request signed anew succeeds at once) and does not advance the sequence.
//! * [`ErrorClass::Throttled`] starts from a four times higher floor: the service asked us to
//!   slow down.

use std::time::Duration;

use rand::Rng;

use crate::store::ErrorClass;

/// The retry decision of the crate: retry after attempt `attempt` (from 1) failed with
/// `class` when the class is retryable and fewer than `max_attempts` attempts were made.
/// A non-replayable request has `max_attempts` 1.
pub fn should_retry(class: ErrorClass, attempt: u32, max_attempts: u32) -> bool {
    class.is_retryable() && attempt < max_attempts
}

/// Retry delays for one request or one part; clone it to start another sequence.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Delays handed out so far.
    n: u32,
}

impl Backoff {
    /// Delays from `base` (the shortest first delay) up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            n: 0,
        }
    }

    /// The delay before the next attempt after an error of `class`.
    pub fn next(&mut self, class: ErrorClass) -> Duration {
        if class == ErrorClass::ClockSkew {
            return Duration::ZERO;
        }
        self.n = self.n.saturating_add(1);
        self.delay(self.n, class)
    }

    /// The `n`-th delay (from 1) after an error of `class`, without advancing the sequence.
    pub fn delay(&self, n: u32, class: ErrorClass) -> Duration {
        let floor = match class {
            ErrorClass::ClockSkew => return Duration::ZERO,
            ErrorClass::Throttled => (self.base * 4).min(self.cap),
            _ => self.base,
        };
        let hi = floor.saturating_mul(1u32 << n.clamp(1, 20)).min(self.cap);
        let lo = (hi / 2).max(floor);
        if hi > lo {
            rand::thread_rng().gen_range(lo..hi)
        } else {
            lo
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the transfer engine's former copy of the backoff (moved here with the code).
    #[test]
    fn backoff_stays_within_bounds_and_grows() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut b = Backoff::new(base, cap);
        let mut max_seen = Duration::ZERO;
        for _ in 0..50 {
            let d = b.next(ErrorClass::Transient);
            assert!(d >= base && d <= cap, "{d:?}");
            max_seen = max_seen.max(d);
        }
        assert!(max_seen > base * 3, "delays grow: {max_seen:?}");
        assert_eq!(b.next(ErrorClass::ClockSkew), Duration::ZERO);
        let mut t = Backoff::new(base, cap);
        assert!(t.next(ErrorClass::Throttled) >= base * 4);
    }

    /// From the OSS client's former copy (moved here with the code): bounded, and jittered.
    #[test]
    fn backoff_is_bounded_and_jittered() {
        let base = Duration::from_millis(200);
        let cap = Duration::from_secs(10);
        let mut b = Backoff::new(base, cap);
        for _ in 0..50 {
            let d = b.next(ErrorClass::Transient);
            assert!(d >= base && d <= cap, "{d:?}");
        }
        let samples: std::collections::HashSet<u128> = (0..50)
            .map(|_| b.delay(4, ErrorClass::Transient).as_millis())
            .collect();
        assert!(samples.len() > 10, "no jitter: {samples:?}");
    }

    /// Each delay lies in its doubling window, half of it random; the cap holds.
    #[test]
    fn delays_double_within_their_jitter_window_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_millis(1000);
        let b = Backoff::new(base, cap);
        for _ in 0..200 {
            let d1 = b.delay(1, ErrorClass::Transient);
            assert!(d1 >= base && d1 < base * 2, "{d1:?}");
            let d2 = b.delay(2, ErrorClass::Transient);
            assert!(d2 >= base * 2 && d2 < base * 4, "{d2:?}");
            let d3 = b.delay(3, ErrorClass::Transient);
            assert!(d3 >= base * 4 && d3 < base * 8, "{d3:?}");
            for n in [4, 5, 9, 30, u32::MAX] {
                let d = b.delay(n, ErrorClass::Transient);
                assert!(d >= cap / 2 && d < cap, "n={n}: {d:?}");
            }
            let t = b.delay(1, ErrorClass::Throttled);
            assert!(t >= base * 4 && t < base * 8, "{t:?}");
        }
        // Jitter: the spread covers most of the window, not one value.
        let spread: Vec<Duration> = (0..200)
            .map(|_| b.delay(3, ErrorClass::Transient))
            .collect();
        let (lo, hi) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
        assert!(*hi - *lo > base * 2, "too little jitter: {lo:?}..{hi:?}");
        // A cap below the base is raised to it; a delay never exceeds the cap.
        let flat = Backoff::new(base, Duration::from_millis(10));
        assert_eq!(flat.delay(7, ErrorClass::Transient), base);
        assert_eq!(
            Backoff::new(base, cap).next(ErrorClass::ClockSkew),
            Duration::ZERO
        );
    }
}
