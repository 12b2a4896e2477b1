//! Without a terminal, `copy` logs a progress line every `--progress-interval` seconds
//! (bytes, percent, rate, ETA, retries) on stderr, as text or, with `--log-format json`, as
//! JSON objects with the same fields; `jobs watch` logs the same lines for a daemon job.

mod common;
mod daemon_support;

use common::*;

const MIB: u64 = 1024 * 1024;

fn progress_args(w: &World, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = w
        .copy_args("disk.raw", DISCARD_BUCKET, "disk.raw")
        .into_iter()
        .filter(|a| a != "--quiet")
        .collect();
    args.extend(
        [
            "--part-size",
            "1MiB",
            "--concurrency",
            "2",
            "--progress-interval",
            "1",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A copy of 4–8 s: 16 MiB over connections of 1 MiB/s at `--concurrency 2`. Not a fixed
/// time: with 1 MiB parts a part's body fits the socket buffers, so it is "all sent" (and
/// its slot free, #19) while its connection still drains, and up to 2 × concurrency
/// connections carry bytes. At 2 MiB/s such a copy took 2.0 s, too short for two 1 s lines.
async fn paced_world() -> World {
    World::with_disk(16 * MIB, |c| c.conn_rate = Some(MIB)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_without_a_terminal_logs_a_progress_line_every_interval() {
    let w = paced_world().await;
    let out = w.run(progress_args(&w, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("parts in flight"))
        .collect();
    assert!(lines.len() >= 2, "progress lines: {err}");
    for l in &lines {
        for needle in [" / 16.00 MiB (", "%), ", "/s, ETA ", " retries"] {
            assert!(l.contains(needle), "{needle:?} missing in {l}");
        }
    }
    // The default interval is 10 s: a copy of at most 8 s logs none.
    let w = paced_world().await;
    let mut args = progress_args(&w, &[]);
    let i = args
        .iter()
        .position(|a| a == "--progress-interval")
        .unwrap();
    args.drain(i..i + 2);
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("parts in flight"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_makes_progress_lines_structured() {
    let w = paced_world().await;
    let out = w.run(progress_args(&w, &["--log-format", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let events: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["fields"]["total_bytes"] == 16 * MIB)
        .collect();
    assert!(progress.len() >= 2, "{err}");
    let last = progress.last().unwrap();
    assert!(
        last["fields"]["bytes"].as_u64().unwrap() <= 16 * MIB,
        "{last}"
    );
    assert!(last["fields"]["percent"].as_f64().is_some(), "{last}");
    assert!(last["fields"]["retries"].as_u64().is_some(), "{last}");
    assert_eq!(last["level"], "INFO", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_watch_without_a_terminal_logs_the_same_progress_lines() {
    let w = paced_world().await;
    let d = daemon_support::start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let mut job = daemon_support::copy_job(&w, "disk.raw", DISCARD_BUCKET, "disk.raw");
    job["part_size"] = "1MiB".into();
    job["concurrency"] = 2.into();
    let id = d.submit(&job).await["id"].as_str().unwrap().to_string();
    let out = w
        .run(
            [
                "jobs",
                "watch",
                &id,
                "--server",
                &format!("http://{}", d.addr),
                "--progress-interval",
                "1",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&id) && l.contains("parts in flight"))
        .collect();
    assert!(lines.len() >= 2, "watch progress lines: {err}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" / 16.00 MiB (") && l.contains("ETA")),
        "{lines:#?}"
    );
}
