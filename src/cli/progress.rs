//! The progress bar: destination-acknowledged bytes, rate, ETA and parts in flight, on stderr,
//! only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::util::human_bytes;
use crate::transfer::{CopySummary, Progress};

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

/// Starts drawing `progress` on stderr if it is a terminal; otherwise does nothing.
pub fn spawn(progress: Arc<Progress>) -> Bar {
    if !std::io::stderr().is_terminal() {
        return Bar {
            stop: None,
            task: None,
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

/// One human line describing a finished copy.
pub fn summary_line(s: &CopySummary) -> String {
    format!(
        "copied {} -> {}: {} in {:.1}s ({}/s), {} parts of {}, CRC-64 {} verified{}{}",
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
