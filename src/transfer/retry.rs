//! Retry delays (decorrelated jitter) and the adaptive (AIMD) concurrency limit.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::store::ErrorClass;

/// Decorrelated-jitter backoff: each delay is uniform in `[base, 3 × previous]`, capped.
/// Spreads retries of many parts apart instead of letting them hit the server in waves.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    prev: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            prev: base,
        }
    }

    /// The delay before the next attempt after an error of `class`.
    pub fn next(&mut self, class: ErrorClass) -> Duration {
        match class {
            // The clock offset has been corrected by the store: retry at once.
            ErrorClass::ClockSkew => Duration::ZERO,
            _ => {
                // Throttling means the service asked us to slow down: start from a longer floor.
                let floor = if class == ErrorClass::Throttled {
                    (self.base * 4).min(self.cap)
                } else {
                    self.base
                };
                let hi = (self.prev * 3).max(floor).min(self.cap);
                let d = if hi > floor {
                    rand::thread_rng().gen_range(floor..=hi)
                } else {
                    floor
                };
                self.prev = d;
                d
            }
        }
    }
}

/// Additive-increase / multiplicative-decrease limit on parts in flight: halve on throttling
/// (at most once per `cooldown`, so one burst of 503s counts once), +1 after a window's worth
/// of successes; always within `1..=max`.
#[derive(Debug)]
pub struct Aimd {
    limit: usize,
    max: usize,
    successes: usize,
    last_decrease: Option<Instant>,
    cooldown: Duration,
}

impl Aimd {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            limit: max,
            max,
            successes: 0,
            last_decrease: None,
            cooldown: Duration::from_millis(500),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn on_throttle(&mut self) {
        let now = Instant::now();
        if self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < self.cooldown)
        {
            return;
        }
        self.last_decrease = Some(now);
        self.limit = (self.limit / 2).max(1);
        self.successes = 0;
    }

    pub fn on_success(&mut self) {
        if self.limit >= self.max {
            return;
        }
        self.successes += 1;
        if self.successes >= self.limit {
            self.successes = 0;
            self.limit += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn aimd_halves_and_recovers() {
        let mut a = Aimd::new(16);
        a.on_throttle();
        assert_eq!(a.limit(), 8);
        a.on_throttle(); // within cooldown: same congestion event
        assert_eq!(a.limit(), 8);
        a.last_decrease = None;
        for _ in 0..4 {
            a.on_throttle();
            a.last_decrease = None;
        }
        assert_eq!(a.limit(), 1, "never below 1");
        a.on_success();
        assert_eq!(a.limit(), 2);
        for _ in 0..1000 {
            a.on_success();
        }
        assert_eq!(a.limit(), 16, "never above max");
    }
}
