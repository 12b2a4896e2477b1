//! Progress on stderr: a bar when stderr is a terminal; otherwise (systemd, CI, a pipe) one
//! line every `--progress-interval` seconds (default 10, 0 = none) with bytes, percent, rate,
//! ETA and retries, logged as an event of target `ossrelay::progress` so `--log-format json`
//! makes it structured. Bytes are the destination-acknowledged ones; the rate is the bytes
//! streamed, smoothed over ~10 s ([`RateMeter`]).

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::util::human_bytes;
use crate::transfer::progress::RateMeter;
use crate::transfer::{CopySummary, Progress};

/// The tracing target of progress lines (always enabled at `info`, whatever `--log` says).
pub const TARGET: &str = "ossrelay::progress";

static INTERVAL: OnceLock<Duration> = OnceLock::new();

/// Sets `--progress-interval` (call once, before any progress starts); zero turns the lines
/// off.
pub fn set_interval(every: Duration) {
    let _ = INTERVAL.set(every);
}

/// The interval between progress lines when stderr is not a terminal.
pub fn interval() -> Duration {
    INTERVAL.get().copied().unwrap_or(Duration::from_secs(10))
}

/// What one progress line reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    /// Bytes the destination acknowledged.
    pub bytes: u64,
    /// Size of the object (0 while planning).
    pub total: u64,
    /// Bytes per second (smoothed), if known yet.
    pub rate: Option<f64>,
    /// Seconds left, if known.
    pub eta: Option<f64>,
    pub retries: u64,
    pub inflight_parts: u64,
}

impl Line {
    /// The human text: `1.00 GiB / 4.00 GiB (25.0%), 40.10 MiB/s, ETA 1m17s, 4 parts in
    /// flight, 0 retries`.
    pub fn text(&self) -> String {
        let pct = if self.total > 0 {
            format!(" ({:.1}%)", self.bytes as f64 * 100.0 / self.total as f64)
        } else {
            String::new()
        };
        let total = if self.total > 0 {
            human_bytes(self.total as f64)
        } else {
            "?".into()
        };
        let rate = self
            .rate
            .map(|r| format!("{}/s", human_bytes(r)))
            .unwrap_or_else(|| "rate ?".into());
        let eta = self.eta.map(eta_text).unwrap_or_else(|| "?".into());
        format!(
            "{} / {total}{pct}, {rate}, ETA {eta}, {} parts in flight, {} retries",
            human_bytes(self.bytes as f64),
            self.inflight_parts,
            self.retries
        )
    }

    /// Logs the line as one event (fields for JSON logs, the text as its message).
    pub fn emit(&self, what: &str) {
        let percent = (self.total > 0).then(|| self.bytes as f64 * 100.0 / self.total as f64);
        tracing::info!(
            target: TARGET,
            bytes = self.bytes,
            total_bytes = self.total,
            percent,
            rate_bytes_per_sec = self.rate,
            eta_seconds = self.eta,
            retries = self.retries,
            inflight_parts = self.inflight_parts,
            "{what}{}",
            self.text()
        );
    }
}

/// `75s` → `1m15s`; `3725s` → `1h02m05s`.
fn eta_text(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

/// A running progress bar; `finish` stops it and clears the line.
pub struct Bar {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Bar {
    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Starts drawing `progress` on stderr if it is a terminal; otherwise logs a [`Line`] every
/// [`interval`] (none when it is zero).
pub fn spawn(progress: Arc<Progress>) -> Bar {
    if !std::io::stderr().is_terminal() {
        let every = interval();
        if every.is_zero() {
            return Bar {
                stop: None,
                task: None,
            };
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(lines(progress, every, rx));
        return Bar {
            stop: Some(tx),
            task: Some(task),
        };
    }
    let (tx, mut rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut rx => break,
            }
            let snap = progress.snapshot();
            bar.set_length(snap.total_bytes);
            bar.set_position(snap.acked_bytes);
            bar.set_message(format!(
                "{} parts in flight (limit {}), {} retries",
                snap.inflight_parts, snap.concurrency_limit, snap.retries
            ));
        }
        bar.finish_and_clear();
    });
    Bar {
        stop: Some(tx),
        task: Some(task),
    }
}

/// The progress of a copy as it stands.
fn line_of(p: &Progress, meter: &mut RateMeter) -> Line {
    let s = p.snapshot();
    let rate = meter.sample(Instant::now(), s.sent_bytes);
    Line {
        bytes: s.acked_bytes,
        total: s.total_bytes,
        rate,
        eta: (s.total_bytes > 0)
            .then(|| meter.eta(s.total_bytes.saturating_sub(s.acked_bytes)))
            .flatten(),
        retries: s.retries,
        inflight_parts: s.inflight_parts,
    }
}

/// A line every `every` until stopped; the rate is sampled every second in between.
async fn lines(progress: Arc<Progress>, every: Duration, mut stop: oneshot::Receiver<()>) {
    let mut meter = RateMeter::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(every));
    let mut next = Instant::now() + every;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let line = line_of(&progress, &mut meter);
        if Instant::now() >= next {
            next += every;
            line.emit("");
        }
    }
}

/// One human line describing a finished copy.
pub fn summary_line(s: &CopySummary) -> String {
    format!(
        "copied {} -> {}: {} in {:.1}s ({}/s), {} parts of up to {}, CRC-64 {} verified{}{}",
        s.source,
        s.destination,
        human_bytes(s.bytes as f64),
        s.seconds,
        human_bytes(s.throughput_bytes_per_sec),
        s.parts,
        human_bytes(s.part_size as f64),
        s.crc64,
        if s.retries > 0 {
            format!(", {} retries", s.retries)
        } else {
            String::new()
        },
        if s.resumed_bytes > 0 {
            format!(", {} resumed", human_bytes(s.resumed_bytes as f64))
        } else {
            String::new()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_bytes_percent_rate_eta_and_retries() {
        let l = Line {
            bytes: 1 << 30,
            total: 4 << 30,
            rate: Some(40.0 * 1024.0 * 1024.0),
            eta: Some(76.8),
            retries: 3,
            inflight_parts: 4,
        };
        assert_eq!(
            l.text(),
            "1.00 GiB / 4.00 GiB (25.0%), 40.00 MiB/s, ETA 1m17s, 4 parts in flight, 3 retries"
        );
        let planning = Line::default();
        assert_eq!(
            planning.text(),
            "0 B / ?, rate ?, ETA ?, 0 parts in flight, 0 retries"
        );
        assert_eq!(eta_text(3725.0), "1h02m05s");
    }

    #[test]
    fn a_line_carries_the_smoothed_rate_and_the_eta() {
        let p = Progress::new();
        p.total_bytes
            .store(1000 * 1024 * 1024, std::sync::atomic::Ordering::Relaxed);
        let mut meter = RateMeter::default();
        let mut last = Line::default();
        for _ in 0..=30 {
            p.sent_bytes
                .fetch_add(10 * 1024 * 1024, std::sync::atomic::Ordering::Relaxed);
            p.acked_bytes
                .fetch_add(10 * 1024 * 1024, std::sync::atomic::Ordering::Relaxed);
            last = line_of(&p, &mut meter);
            std::thread::sleep(Duration::from_millis(20));
        }
        // 10 MiB every 20 ms of wall time: about 500 MiB/s.
        let rate = last.rate.unwrap() / (1024.0 * 1024.0);
        assert!((300.0..700.0).contains(&rate), "rate {rate} MiB/s");
        assert!(last.eta.unwrap() < 2.0, "{last:?}");
    }
}
