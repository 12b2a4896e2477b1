//! Crash loops: one transfer is killed at 20 random moments (`kill -9`, then SIGTERM in a
//! second loop; the daemon `kill -9`'d a few times in a third), restarted each time with the
//! same state, and must end byte-identical (read back and CRC'd here), having re-sent at most
//! the parts in flight at each crash, with no multipart upload left behind.
//!
//! The moments come from a seeded RNG; the seed is printed, and `CRASHLOOP_SEED=N` replays it.

mod common;
mod daemon_support;

use std::process::Child;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use daemon_support::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

const MIB: u64 = 1024 * 1024;
const KIB: u64 = 1024;
const PART: u64 = 512 * KIB;
const CONCURRENCY: u64 = 4;
const KEY: &str = "img.raw";

fn crc64(data: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
}

fn rng(name: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("CRASHLOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{name}: CRASHLOOP_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// A world whose source holds `size` random bytes under KEY, destination paced to one part
/// per second per connection so a run lasts long enough to be killed at a random moment.
async fn paced_world(size: usize) -> (World, Vec<u8>) {
    let w = World::new(|_| {}, |c| c.conn_rate = Some(PART)).await;
    let data = bytes(size, 42);
    w.src
        .put_object_bytes(SRC_BUCKET, KEY, Bytes::from(data.clone()));
    (w, data)
}

fn copy_args(w: &World) -> Vec<String> {
    let mut a = w.copy_args(KEY, DST_BUCKET, KEY);
    a.extend(
        [
            "--json",
            "--part-size",
            "512KiB",
            "--concurrency",
            "4",
            "--stall-timeout",
            "5",
        ]
        .map(String::from),
    );
    a
}

/// The end of every loop: identical bytes, re-sent bytes within the bound, nothing left open.
fn assert_converged(w: &World, name: &str, data: &[u8], crashes: u64) {
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, KEY)
        .unwrap_or_else(|| panic!("{name}: no destination object"));
    assert_eq!(got.len(), data.len(), "{name}: size");
    assert_eq!(crc64(&got), crc64(data), "{name}: CRC-64 differs");
    assert!(got == data, "{name}: bytes differ");
    let stats = w.dst.stats();
    let received = stats["bytes_in"].as_u64().unwrap();
    let size = data.len() as u64;
    // A crash may lose the acknowledgements of every part under way: since #19 parts awaiting
    // theirs hold no slot, so up to 2 x CONCURRENCY per crash.
    let bound = crashes * 2 * CONCURRENCY * PART;
    eprintln!(
        "{name}: {crashes} crashes, {received} bytes received for {size}: re-sent {} bytes, \
         bound {bound} ({crashes} x 2 x {CONCURRENCY} x {PART})",
        received - size
    );
    assert!(
        received <= size + bound,
        "{name}: re-sent {} bytes, more than {bound}",
        received - size
    );
    assert_eq!(
        stats["open_uploads"].as_u64(),
        Some(0),
        "{name}: multipart uploads left behind: {stats}"
    );
}

async fn wait_output(child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

/// Kills (`sig`) a fresh `copy` at a random moment up to `max_ms` after its start, 20 times;
/// returns the crashes that hit a running copy and whether a run finished the copy.
async fn crash_loop(
    w: &World,
    sig: &str,
    max_ms: u64,
    rng: &mut rand::rngs::StdRng,
) -> (u64, bool) {
    let args = copy_args(w);
    let mut crashes = 0;
    for i in 0..20 {
        let mut cmd = w.command(&args);
        if std::env::var_os("CRASHLOOP_VERBOSE").is_some() {
            cmd.env("RUST_LOG", "ossrelay=debug");
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..max_ms))).await;
        signal(pid, sig);
        let t0 = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(20), wait_output(child))
            .await
            .unwrap_or_else(|_| panic!("{sig} #{i}: the copy did not exit within 20 s"));
        let took = t0.elapsed();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{sig} #{i}: {err}");
        match out.status.code() {
            // Finished before the signal landed: nothing left to crash.
            Some(0) => return (crashes, true),
            Some(130) if sig == "-TERM" => {
                assert!(err.contains("rerun"), "{sig} #{i}: {err}");
                // In-flight parts get a 5 s grace to finish, then state is saved.
                assert!(
                    took < Duration::from_secs(8),
                    "{sig} #{i}: exit took {took:?}"
                );
            }
            None if sig == "-9" => {}
            other => panic!("{sig} #{i}: exit {other:?}: {err}"),
        }
        crashes += 1;
        w.wait_dst_quiet().await;
        let st = w.dst.stats();
        eprintln!(
            "{sig} #{i}: exit {:?} after {took:?}; destination received {} bytes, {} parts acked",
            out.status.code(),
            st["bytes_in"],
            count(&st, "UploadPart", "200")
        );
        if std::env::var_os("CRASHLOOP_VERBOSE").is_some() {
            eprintln!("{err}");
        }
    }
    (crashes, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_then_identical() {
    // Large enough that twenty kills land before the (pipelined) copy finishes.
    let (w, data) = paced_world(64 * MIB as usize).await;
    let mut rng = rng("kill -9 loop");
    let (crashes, finished) = crash_loop(&w, "-9", 2000, &mut rng).await;
    assert!(
        crashes >= 15,
        "the copy finished after only {crashes} kills"
    );
    if !finished {
        let out = w.run(copy_args(&w)).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(summary(&out)["resumed_bytes"].as_u64().unwrap() > 0);
    }
    assert_converged(&w, "kill -9 loop", &data, crashes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_twenty_times_exits_130_then_identical() {
    // Each SIGTERM lets the parts in flight finish: runs progress faster than under kill -9.
    let (w, data) = paced_world(64 * MIB as usize).await;
    let mut rng = rng("SIGTERM loop");
    let (crashes, finished) = crash_loop(&w, "-TERM", 600, &mut rng).await;
    assert!(
        crashes >= 15,
        "the copy finished after only {crashes} signals"
    );
    if !finished {
        let out = w.run(copy_args(&w)).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_converged(&w, "SIGTERM loop", &data, crashes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_kill_9_six_times_then_identical() {
    // 80 parts: at most 4 x 1.6 s of running before the fourth kill, at most 8 parts a
    // second (2 x CONCURRENCY connections, one part a second each) — never the whole copy.
    // 24 MiB with 0.5–2.5 s sleeps let a fast run finish after 3 kills.
    let (w, data) = paced_world(40 * MIB as usize).await;
    let mut rng = rng("daemon kill -9 loop");
    let state = w.state_dir();
    let mut body = copy_job(&w, KEY, DST_BUCKET, KEY);
    body["part_size"] = json!(PART);
    body["concurrency"] = json!(CONCURRENCY);
    let mut d = start_daemon(w.dir.path(), &state, &["--max-jobs", "1"]).await;
    let addr = d.addr.clone();
    let id = d.submit(&body).await["id"].as_str().unwrap().to_string();
    let mut crashes = 0;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(400..1600))).await;
        if d.job(&id).await["state"] == "succeeded" {
            break;
        }
        d.child.kill().unwrap(); // SIGKILL
        let _ = d.child.wait();
        crashes += 1;
        w.wait_dst_quiet().await;
        d = start_daemon(
            w.dir.path(),
            &state,
            &["--max-jobs", "1", "--listen", &addr],
        )
        .await;
        let j = d.job(&id).await;
        assert!(
            ["queued", "running", "succeeded"].contains(&j["state"].as_str().unwrap()),
            "after kill #{i}: {j}"
        );
    }
    assert!(crashes >= 4, "the job finished after only {crashes} kills");
    let j = d
        .wait_state(&id, "succeeded", Duration::from_secs(90))
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_converged(&w, "daemon kill -9 loop", &data, crashes);
}
