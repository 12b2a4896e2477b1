//! The adaptive (AIMD) concurrency limit of the part scheduler. Retry delays are the one
//! [`crate::store::retry::Backoff`].

use std::time::{Duration, Instant};

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
