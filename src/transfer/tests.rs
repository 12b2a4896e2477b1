//! Engine tests against `MemoryStore` and `LocalFile`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::crc64;
use crate::store::local::LocalFile;
use crate::store::memory::{Fault, FaultRule, MemoryStore, Op};
use crate::store::{ErrorClass, ObjectStore};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const PART: u64 = 128 * KIB;

fn data(n: u64, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n as usize + 8);
    while (v.len() as u64) < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n as usize);
    Bytes::from(v)
}

fn opts() -> CopyOptions {
    CopyOptions {
        concurrency: 4,
        part_size: Some(PART),
        retry_base: Duration::from_millis(1),
        retry_cap: Duration::from_millis(10),
        idle_timeout: Some(Duration::from_secs(5)),
        request_timeout: Some(Duration::from_secs(5)),
        grace: Duration::from_secs(2),
        max_attempts: 5,
        ..CopyOptions::default()
    }
}

struct Env {
    src: Arc<MemoryStore>,
    dst: Arc<MemoryStore>,
    bytes: Bytes,
}

fn env(size: u64) -> Env {
    let src = MemoryStore::new("src");
    let dst = MemoryStore::new("dst");
    let bytes = data(size, size + 7);
    src.insert("obj", bytes.clone());
    Env { src, dst, bytes }
}

impl Env {
    fn locs(&self) -> (Location, Location) {
        (
            Location::new(self.src.clone() as Arc<dyn ObjectStore>, "obj"),
            Location::new(self.dst.clone() as Arc<dyn ObjectStore>, "copy"),
        )
    }

    async fn run(&self, o: CopyOptions) -> (Result<CopySummary, TransferError>, Arc<Progress>) {
        let (s, d) = self.locs();
        let p = Progress::new();
        let r = copy(s, d, o, p.clone(), CancellationToken::new()).await;
        (r, p)
    }

    fn assert_copied(&self, s: &CopySummary) {
        let got = self.dst.object("copy").expect("destination object exists");
        assert_eq!(got.len(), self.bytes.len());
        assert!(got == self.bytes, "bytes differ");
        assert_eq!(s.crc64, crc64::checksum(&self.bytes));
        assert_eq!(s.bytes, self.bytes.len() as u64);
        assert_eq!(self.dst.open_uploads(), 0);
    }
}

#[tokio::test]
async fn copies_objects_of_edge_sizes() {
    for (size, parts) in [
        (0, 0),
        (1, 0),
        (100 * KIB - 1, 0),
        (PART - 1, 0),
        (PART, 1),
        (PART + 1, 2),
        (5 * PART + 17, 6),
    ] {
        let e = env(size);
        let (r, p) = e.run(opts()).await;
        let s = r.unwrap_or_else(|err| panic!("size {size}: {err}"));
        e.assert_copied(&s);
        assert_eq!(s.parts, parts, "size {size}");
        assert!(s.source_crc64_known);
        assert_eq!(s.retries, 0);
        assert_eq!(p.acked_bytes.load(Relaxed), size);
        assert_eq!(p.downloaded_bytes.load(Relaxed), size);
        assert_eq!(p.inflight_parts.load(Relaxed), 0);
        assert_eq!(p.buffered_bytes.load(Relaxed), 0, "all budget returned");
        if parts > 0 {
            assert_eq!(e.dst.calls(Op::UploadPart), parts as u64);
        }
    }
}

#[tokio::test]
async fn carries_content_type_and_user_meta() {
    let e = env(0);
    let meta = vec![("owner".to_string(), "ops".to_string())];
    e.src.insert_with_meta(
        "obj",
        data(3 * PART, 1),
        Some("application/x-raw-disk"),
        meta.clone(),
    );
    let (r, _) = e.run(opts()).await;
    r.unwrap();
    let h = e.dst.head("copy").await.unwrap();
    assert_eq!(h.content_type.as_deref(), Some("application/x-raw-disk"));
    assert_eq!(h.user_meta, meta);
    // Single PUT path too.
    e.src
        .insert_with_meta("obj", data(10, 1), Some("text/plain"), meta.clone());
    e.run(opts()).await.0.unwrap();
    let h = e.dst.head("copy").await.unwrap();
    assert_eq!(h.content_type.as_deref(), Some("text/plain"));
    assert_eq!(h.user_meta, meta);
}

#[tokio::test]
async fn recovers_from_each_fault() {
    type Inject = Arc<dyn Fn(&Env)>;
    let cases: Vec<(&str, Inject)> = vec![
        (
            "get error",
            Arc::new(|e: &Env| {
                e.src
                    .inject(FaultRule::new(Op::Get, Fault::Error(ErrorClass::Transient)).nth(2))
            }),
        ),
        (
            "upload error",
            Arc::new(|e: &Env| {
                e.dst.inject(
                    FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Transient)).times(2),
                )
            }),
        ),
        (
            "clock skew",
            Arc::new(|e: &Env| {
                e.dst.inject(
                    FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::ClockSkew)).times(1),
                )
            }),
        ),
        (
            "truncated get",
            Arc::new(|e: &Env| {
                e.src
                    .inject(FaultRule::new(Op::Get, Fault::Truncate { after: 1000 }).nth(3))
            }),
        ),
        (
            "broken get",
            Arc::new(|e: &Env| {
                e.src
                    .inject(FaultRule::new(Op::Get, Fault::Break { after: 70_000 }).nth(1))
            }),
        ),
        (
            "corrupted upload",
            Arc::new(|e: &Env| {
                e.dst.inject(
                    FaultRule::new(Op::UploadPart, Fault::Corrupt { at: 5 })
                        .part(3)
                        .times(1),
                )
            }),
        ),
        (
            "wrong crc reported",
            Arc::new(|e: &Env| {
                e.dst
                    .inject(FaultRule::new(Op::UploadPart, Fault::WrongCrc).times(2))
            }),
        ),
        // "create error", "head error" and "complete error" moved with the retrying of control requests to the
        // transport: `control_requests_are_retried_by_the_transport` in
        // tests/oss_client_local.rs; `control_requests_are_not_retried_by_the_engine` below.
    ];
    for (name, inject) in cases {
        let e = env(6 * PART + 5);
        inject(&e);
        let (r, p) = e.run(opts()).await;
        let s = r.unwrap_or_else(|err| panic!("{name}: {err}"));
        e.assert_copied(&s);
        assert!(s.retries >= 1, "{name}: a retry was counted");
        assert_eq!(p.retries.load(Relaxed), s.retries);
        if name.contains("crc") || name.contains("corrupt") {
            assert!(p.crc_mismatches.load(Relaxed) >= 1, "{name}");
        }
    }
}

#[tokio::test]
async fn corrupted_download_is_found_and_resent() {
    // A flipped bit on the GET side cannot be seen per part (the destination stores what it
    // got); the whole-object CRC proof catches it and the re-read finds the part.
    let e = env(6 * PART + 5);
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Corrupt { at: 1234 }).nth(4));
    let (r, p) = e.run(opts()).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    // The repair pass re-read everything once and re-fetched one part.
    assert_eq!(p.downloaded_bytes.load(Relaxed), 2 * (6 * PART + 5) + PART);
    assert!(p.crc_mismatches.load(Relaxed) >= 1);
    let resent: u32 = (1..=7).map(|n| e.dst.part_uploads(n)).sum();
    assert_eq!(resent, 8, "exactly one part sent twice");
}

#[tokio::test]
async fn corrupted_download_in_single_put_is_never_committed() {
    let e = env(PART / 2);
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Corrupt { at: 10 }).nth(1));
    let (r, _) = e.run(opts()).await;
    e.assert_copied(&r.unwrap());
    assert_eq!(
        e.dst.counters.puts.load(Relaxed),
        1,
        "the corrupted PUT never completed"
    );
}

#[tokio::test]
async fn throttling_lowers_concurrency() {
    let e = env(24 * PART);
    e.dst
        .inject(FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Throttled)).times(3));
    let o = CopyOptions {
        concurrency: 8,
        ..opts()
    };
    let (r, p) = e.run(o).await;
    e.assert_copied(&r.unwrap());
    let lowest = p.lowest_concurrency_limit.load(Relaxed);
    assert!((1..8).contains(&lowest), "lowest limit {lowest}");
}

/// One rule for failure: the store's transport retries control requests (HEAD, Initiate…),
/// the engine does not retry them again (that multiplied the attempts).
#[tokio::test]
async fn control_requests_are_not_retried_by_the_engine() {
    for (side, op, class) in [
        ("dst", Op::CreateMultipart, ErrorClass::Transient),
        ("src", Op::Head, ErrorClass::Throttled),
        ("dst", Op::Complete, ErrorClass::Transient),
    ] {
        let e = env(6 * PART + 5);
        let rule = FaultRule::new(op, Fault::Error(class)).times(1);
        if side == "src" {
            e.src.inject(rule);
        } else {
            e.dst.inject(rule);
        }
        let (r, p) = e.run(opts()).await;
        let err = r.expect_err("a failed control request fails the copy");
        let TransferError::Store { source, .. } = err.root() else {
            panic!("{op:?}: {err}");
        };
        assert_eq!(source.class, class, "{op:?}: {err}");
        assert_eq!(p.retries.load(Relaxed), 0, "{op:?}: no engine retry");
        assert!(e.dst.object("copy").is_none());
    }
}

#[tokio::test]
async fn idle_stream_times_out_and_retries() {
    let e = env(3 * PART);
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Stall { after: 100 }).nth(1));
    let o = CopyOptions {
        idle_timeout: Some(Duration::from_millis(200)),
        // The stall timer is what is tested: no hedge may cure the stall first.
        max_hedges: 0,
        ..opts()
    };
    let (r, _) = e.run(o).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.retries, 1);
    assert_eq!(s.hedged_parts, 0);
}

#[tokio::test]
async fn source_change_mid_copy_fails_and_leaves_nothing() {
    let e = env(8 * PART);
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Replace(data(8 * PART, 99))).nth(3));
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let (r, _) = e.run(o).await;
    let err = r.unwrap_err();
    assert!(matches!(err, TransferError::SourceChanged { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("mem://src/obj") && msg.contains("changed"),
        "{msg}"
    );
    assert!(e.dst.object("copy").is_none());
    assert_eq!(e.dst.open_uploads(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "state removed"
    );
}

#[tokio::test]
async fn non_retryable_error_fails_fast_without_orphans() {
    let e = env(8 * PART);
    e.dst.inject(FaultRule::new(
        Op::UploadPart,
        Fault::Error(ErrorClass::Auth),
    ));
    let (r, p) = e.run(opts()).await;
    let err = r.unwrap_err();
    match err.root() {
        TransferError::Store { source, .. } => assert_eq!(source.class, ErrorClass::Auth),
        other => panic!("unexpected {other}"),
    }
    assert!(
        e.dst.calls(Op::UploadPart) <= 4,
        "no retries of an auth error"
    );
    assert_eq!(p.retries.load(Relaxed), 0);
    assert_eq!(e.dst.open_uploads(), 0);
    assert!(e.dst.object("copy").is_none());
}

#[tokio::test]
async fn part_failing_every_attempt_fails_the_copy() {
    let e = env(4 * PART);
    e.dst
        .inject(FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Transient)).part(2));
    let (r, _) = e.run(opts()).await;
    let err = r.unwrap_err();
    assert!(err.to_string().contains("part 2"), "{err}");
    assert!(err.to_string().contains("5 attempt"), "{err}");
    assert_eq!(e.dst.calls(Op::UploadPart) - 3, 5);
    assert_eq!(e.dst.open_uploads(), 0);
}

#[tokio::test]
async fn failure_with_state_keeps_upload_and_says_how_to_resume() {
    let e = env(4 * PART);
    e.dst.inject(
        FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Transient))
            .part(2)
            .times(5),
    );
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let err = e.run(o.clone()).await.0.unwrap_err();
    assert!(matches!(err, TransferError::Resumable { .. }));
    assert!(err.to_string().contains("rerun the same command"), "{err}");
    assert_eq!(e.dst.open_uploads(), 1);
    e.dst.reset_part_uploads();
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, 3 * PART);
    assert_eq!(e.dst.part_uploads(2), 1);
    assert_eq!(e.dst.part_uploads(1), 0);
}

#[tokio::test]
async fn memory_budget_bounds_buffers_whatever_the_part_size() {
    let e = env(16 * MIB);
    e.src.set_chunk_size(256 * 1024);
    let o = CopyOptions {
        concurrency: 8,
        part_size: Some(4 * MIB),
        memory: 256 * KIB,
        chunk_size: 64 * 1024,
        ..opts()
    };
    let (r, p) = e.run(o).await;
    e.assert_copied(&r.unwrap());
    let peak = p.peak_buffered_bytes.load(Relaxed);
    assert!(peak > 0 && peak <= 256 * KIB, "peak {peak}");
    assert!(
        e.dst.counters.max_inflight_uploads.load(Relaxed) > 1,
        "parts ran in parallel"
    );
}

#[tokio::test]
async fn bandwidth_cap_paces_the_copy() {
    let e = env(2 * MIB);
    let o = CopyOptions {
        part_size: Some(512 * KIB),
        bandwidth: Some(2 * MIB),
        ..opts()
    };
    let t = std::time::Instant::now();
    e.assert_copied(&e.run(o).await.0.unwrap());
    // 2 MiB at 2 MiB/s with a 512 KiB burst: at least 0.75 s.
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}

/// Runs a copy and cancels it once `after` parts were acknowledged.
async fn interrupted(e: &Env, o: CopyOptions, after: u64) -> TransferError {
    let (s, d) = e.locs();
    let p = Progress::new();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(copy(s, d, o, p.clone(), cancel.clone()));
    while p.parts_done.load(Relaxed) < after {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cancel.cancel();
    task.await.unwrap().unwrap_err()
}

fn slow(e: &Env) {
    e.dst.inject(FaultRule::new(
        Op::UploadPart,
        Fault::Delay(Duration::from_millis(15)),
    ));
}

/// A slowed copy with its state in `state_dir`, interrupted once at least `after` parts were
/// recorded: the options to rerun it with, the state file and the recorded part numbers.
async fn interrupted_with_state(
    e: &Env,
    state_dir: &std::path::Path,
    after: u64,
) -> (CopyOptions, std::path::PathBuf, Vec<u32>) {
    slow(e);
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(state_dir.to_path_buf()),
        ..opts()
    };
    let err = interrupted(e, o.clone(), after).await;
    let TransferError::Interrupted {
        state_file: Some(path),
    } = &err
    else {
        panic!("{err}")
    };
    assert!(path.exists());
    assert!(err.to_string().contains("rerun"), "{err}");
    assert_eq!(e.dst.open_uploads(), 1, "the upload is kept for resume");
    let saved = state::load(path).unwrap().unwrap();
    let kept: Vec<u32> = saved.parts.iter().map(|p| p.number).collect();
    assert!(kept.len() as u64 >= after, "{kept:?}");
    (o, path.clone(), kept)
}

#[tokio::test]
async fn resumes_after_interrupt_sending_only_missing_parts() {
    let e = env(20 * PART + 3);
    let dir = tempfile::tempdir().unwrap();
    let (o, path, kept) = interrupted_with_state(&e, &dir.path().join("state"), 5).await;
    let path = &path;
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.to_lowercase().contains("secret"));

    e.dst.clear_faults();
    e.dst.reset_part_uploads();
    let (r, p) = e.run(o).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, kept.len() as u64 * PART);
    assert_eq!(p.resumed_bytes.load(Relaxed), s.resumed_bytes);
    for n in 1..=21u32 {
        let want = if kept.contains(&n) { 0 } else { 1 };
        assert_eq!(e.dst.part_uploads(n), want, "part {n}");
    }
    assert!(!path.exists(), "state removed after success");
}

/// The state file `st` as the release before typed checksums wrote it (format 1: CRC-64/XZ in
/// bare `crc64` fields, decimal strings).
fn as_version_1(st: &state::CopyState) -> String {
    let parts: Vec<serde_json::Value> = st
        .parts
        .iter()
        .map(|p| {
            serde_json::json!({
                "number": p.number, "size": p.size,
                "crc64": p.crc64().to_string(), "etag": p.etag,
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "version": 1,
        "source": st.source,
        "destination": st.destination,
        "upload_id": st.upload_id,
        "part_size": st.part_size,
        "source_meta": {
            "size": st.source_meta.size,
            "etag": st.source_meta.etag,
            "last_modified": st.source_meta.last_modified,
            "crc64": st.source_meta.checksums.crc64_xz().map(|c| c.to_string()),
        },
        "parts": parts,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_version_1_state_file_resumes() {
    let e = env(20 * PART + 3);
    let dir = tempfile::tempdir().unwrap();
    let (o, path, kept) = interrupted_with_state(&e, &dir.path().join("state"), 5).await;
    let saved = state::load(&path).unwrap().unwrap();
    assert!(saved.source_meta.checksums.crc64_xz().is_some());
    std::fs::write(&path, as_version_1(&saved)).unwrap();

    e.dst.clear_faults();
    e.dst.reset_part_uploads();
    let (r, _) = e.run(o).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(
        s.resumed_bytes,
        kept.len() as u64 * PART,
        "every part the version 1 file records is kept"
    );
    for n in 1..=21u32 {
        let want = if kept.contains(&n) { 0 } else { 1 };
        assert_eq!(e.dst.part_uploads(n), want, "part {n}");
    }
    assert_eq!(e.dst.open_uploads(), 0);
}

#[tokio::test]
async fn resumes_after_the_process_dies() {
    // Dropping the copy future is what a kill does to in-memory work; the state on disk must
    // be enough.
    let e = env(20 * PART);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let (s, d) = e.locs();
    let p = Progress::new();
    let mut fut = Box::pin(copy(s, d, o.clone(), p.clone(), CancellationToken::new()));
    loop {
        tokio::select! {
            _ = &mut fut => panic!("finished too early"),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
        if p.parts_done.load(Relaxed) >= 6 {
            break;
        }
    }
    drop(fut);
    // Let the background state write land (the kill -9 equivalent may lose the latest acks,
    // which are then simply sent again).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = state::state_path(dir.path(), "mem://src/obj", "mem://dst/copy");
    let saved = state::load(&path).unwrap().expect("state on disk");
    assert!(!saved.parts.is_empty());
    e.dst.clear_faults();
    e.dst.reset_part_uploads();
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, saved.parts.len() as u64 * PART);
    let sent: u32 = (1..=20).map(|n| e.dst.part_uploads(n)).sum();
    assert_eq!(sent as u64, 20 - s.resumed_bytes / PART);
}

#[tokio::test]
async fn resume_with_changed_source_starts_over() {
    let e = env(12 * PART);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    interrupted(&e, o.clone(), 3).await;
    assert_eq!(e.dst.open_uploads(), 1);
    let e = Env {
        bytes: data(12 * PART, 4242),
        ..e
    };
    e.src.insert("obj", e.bytes.clone());
    e.dst.clear_faults();
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, 0);
    assert_eq!(
        e.dst.counters.aborts.load(Relaxed),
        1,
        "the stale upload was aborted"
    );
}

#[tokio::test]
async fn no_resume_discards_state_and_aborts_the_old_upload() {
    let e = env(12 * PART);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    interrupted(&e, o.clone(), 3).await;
    e.dst.clear_faults();
    let s = e.run(CopyOptions { resume: false, ..o }).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, 0);
    assert_eq!(e.dst.counters.aborts.load(Relaxed), 1);
}

#[tokio::test]
async fn interrupt_without_state_aborts_the_upload() {
    let e = env(12 * PART);
    slow(&e);
    let o = CopyOptions {
        concurrency: 2,
        ..opts()
    };
    let err = interrupted(&e, o, 2).await;
    assert!(
        matches!(err, TransferError::Interrupted { state_file: None }),
        "{err}"
    );
    assert_eq!(e.dst.open_uploads(), 0);
    assert!(e.dst.object("copy").is_none());
}

#[tokio::test]
async fn resume_redoes_parts_the_destination_does_not_confirm() {
    let e = env(10 * PART);
    let dir = tempfile::tempdir().unwrap();
    let (o, path, _) = interrupted_with_state(&e, dir.path(), 4).await;
    // Tamper: the state claims part 1 has another CRC than the destination holds.
    let mut st = state::load(&path).unwrap().unwrap();
    st.parts[0] = crate::transfer::state::StatePart::new(
        st.parts[0].number,
        st.parts[0].size,
        st.parts[0].crc64() ^ 1,
        st.parts[0].etag.clone(),
    );
    state::save(&path, &st).unwrap();
    e.dst.clear_faults();
    e.dst.reset_part_uploads();
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(e.dst.part_uploads(1), 1, "part 1 was sent again");
    assert_eq!(s.resumed_bytes, (st.parts.len() as u64 - 1) * PART);
}

#[tokio::test]
async fn crc_mismatch_at_complete_removes_the_destination() {
    let e = env(4 * PART);
    e.dst.inject(FaultRule::new(Op::Complete, Fault::WrongCrc));
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let err = e.run(o).await.0.unwrap_err();
    assert!(matches!(err, TransferError::CrcMismatch { .. }), "{err}");
    assert!(e.dst.object("copy").is_none());
    assert_eq!(e.dst.open_uploads(), 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn wrong_crc_on_every_put_fails_and_removes_the_object() {
    let e = env(PART / 2);
    e.dst.inject(FaultRule::new(Op::Put, Fault::WrongCrc));
    let err = e.run(opts()).await.0.unwrap_err();
    assert!(err.to_string().contains("CRC-64"), "{err}");
    assert!(e.dst.object("copy").is_none());
}

#[tokio::test]
async fn source_without_crc_is_reported() {
    let e = env(3 * PART + 1);
    e.src.set_report_crc(false);
    let s = e.run(opts()).await.0.unwrap();
    e.assert_copied(&s);
    assert!(!s.source_crc64_known);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(
        json["crc64"],
        serde_json::Value::String(s.crc64.to_string())
    );
}

#[tokio::test]
async fn local_file_to_memory_and_back() {
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1000, 3 * PART + 11] {
        let bytes = data(size, 5);
        let src_path = dir.path().join(format!("in-{size}"));
        std::fs::write(&src_path, &bytes).unwrap();
        let mem = MemoryStore::new("m");
        let src = Location::new(
            Arc::new(LocalFile::new(&src_path).with_read_chunk(50_000)),
            "",
        );
        let dst = Location::new(mem.clone() as Arc<dyn ObjectStore>, "k");
        let s = copy(src, dst, opts(), Progress::new(), CancellationToken::new())
            .await
            .unwrap();
        assert!(!s.source_crc64_known);
        assert_eq!(s.crc64, crc64::checksum(&bytes));
        assert!(mem.object("k").unwrap() == bytes);

        let out_path = dir.path().join(format!("out-{size}"));
        let src = Location::new(mem.clone() as Arc<dyn ObjectStore>, "k");
        let dst = Location::new(Arc::new(LocalFile::new(&out_path)), "");
        let s = copy(src, dst, opts(), Progress::new(), CancellationToken::new())
            .await
            .unwrap();
        assert!(s.source_crc64_known);
        assert_eq!(std::fs::read(&out_path).unwrap(), bytes);
    }
}

#[tokio::test]
async fn local_destination_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(12 * PART);
    e.src.inject(FaultRule::new(
        Op::Get,
        Fault::Delay(Duration::from_millis(15)),
    ));
    let out = dir.path().join("disk.raw");
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().join("state")),
        ..opts()
    };
    let run = |cancel: CancellationToken, p: Arc<Progress>| {
        copy(
            Location::new(e.src.clone() as Arc<dyn ObjectStore>, "obj"),
            Location::new(Arc::new(LocalFile::new(&out)), ""),
            o.clone(),
            p,
            cancel,
        )
    };
    let cancel = CancellationToken::new();
    let p = Progress::new();
    let (r, _) = tokio::join!(run(cancel.clone(), p.clone()), async {
        while p.parts_done.load(Relaxed) < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cancel.cancel();
    });
    assert!(matches!(
        r,
        Err(TransferError::Interrupted {
            state_file: Some(_)
        })
    ));
    assert!(!out.exists(), "nothing at the target path yet");
    e.src.clear_faults();
    let s = run(CancellationToken::new(), Progress::new())
        .await
        .unwrap();
    assert!(s.resumed_bytes >= 4 * PART);
    assert_eq!(std::fs::read(&out).unwrap(), e.bytes);
}

#[tokio::test]
async fn bad_options_are_rejected() {
    let e = env(10);
    let err = e
        .run(CopyOptions {
            part_size: Some(10),
            ..opts()
        })
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, TransferError::Plan(_)));
    let err = e
        .run(CopyOptions {
            concurrency: 0,
            ..opts()
        })
        .await
        .0
        .unwrap_err();
    assert!(matches!(err, TransferError::Plan(_)));
    let missing = Env {
        src: MemoryStore::new("empty"),
        ..env(1)
    };
    let err = missing.run(opts()).await.0.unwrap_err();
    assert!(
        err.to_string().contains("cannot read mem://empty/obj"),
        "{err}"
    );
}

#[tokio::test]
async fn shrunk_source_discards_the_old_multipart_upload() {
    let e = env(12 * PART);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    interrupted(&e, o.clone(), 2).await;
    assert_eq!(e.dst.open_uploads(), 1);
    let e = Env {
        bytes: data(1000, 3),
        ..e
    };
    e.src.insert("obj", e.bytes.clone());
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.parts, 0);
    assert_eq!(e.dst.open_uploads(), 0, "the old upload was aborted");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A large plan ends in smaller parts (see `plan::Tail`); the tail is recorded with the
/// upload, so a resumed copy keeps its part numbers and sends none of the recorded ones again.
#[tokio::test]
async fn a_plan_with_a_tail_of_small_parts_resumes() {
    // 32 MiB parts: 16 full ones, then the last 512 MiB (and 5 bytes) in 8 MiB parts.
    let part = 32 * MIB;
    let e = env(32 * part + 5);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        part_size: Some(part),
        memory: 256 * MIB,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    interrupted(&e, o.clone(), 20).await;
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a state file");
    let saved = state::load(&path).unwrap().unwrap();
    let tail = saved.tail.expect("the plan's tail is recorded");
    assert_eq!(tail.offset, 16 * part);
    assert_eq!(tail.part_size, 8 * MIB);
    let kept: Vec<u32> = saved.parts.iter().map(|p| p.number).collect();
    assert!(
        kept.iter().any(|&n| n > 16),
        "some tail parts were recorded: {kept:?}"
    );
    e.dst.clear_faults();
    e.dst.reset_part_uploads();
    let (r, p) = e.run(o).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(p.parts_total.load(Relaxed), 16 + 65);
    let tail_len = |n: u32| match n {
        1..=16 => part,
        81 => 5,
        _ => 8 * MIB,
    };
    assert_eq!(
        s.resumed_bytes,
        kept.iter().map(|&n| tail_len(n)).sum::<u64>()
    );
    for n in 1..=81u32 {
        let want = if kept.contains(&n) { 0 } else { 1 };
        assert_eq!(e.dst.part_uploads(n), want, "part {n}");
    }
    assert_eq!(e.dst.part_uploads(82), 0, "no part beyond the plan");
}

#[tokio::test]
async fn resume_keeps_the_recorded_part_size() {
    let e = env(12 * PART);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    interrupted(&e, o.clone(), 3).await;
    e.dst.clear_faults();
    let s = e
        .run(CopyOptions {
            part_size: Some(3 * PART),
            ..o
        })
        .await
        .0
        .unwrap();
    e.assert_copied(&s);
    assert_eq!(s.part_size, PART, "the interrupted upload's plan wins");
    assert!(s.resumed_bytes >= 3 * PART);
}

#[tokio::test]
async fn cancelled_before_start_sends_nothing() {
    let e = env(8 * PART);
    let (s, d) = e.locs();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = copy(s, d, opts(), Progress::new(), cancel)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TransferError::Interrupted { state_file: None }
    ));
    assert_eq!(e.dst.calls(Op::UploadPart), 0);
    assert_eq!(e.dst.open_uploads(), 0);
}

#[tokio::test]
async fn survives_random_faults_everywhere() {
    let e = env(30 * PART + 99);
    for (op, class) in [
        (Op::Get, ErrorClass::Transient),
        (Op::UploadPart, ErrorClass::Transient),
        (Op::UploadPart, ErrorClass::Throttled),
    ] {
        let store = if op == Op::Get { &e.src } else { &e.dst };
        store.inject(FaultRule::new(op, Fault::Error(class)).probability(0.1));
    }
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Break { after: 50_000 }).probability(0.1));
    e.dst
        .inject(FaultRule::new(Op::UploadPart, Fault::WrongCrc).probability(0.05));
    let o = CopyOptions {
        concurrency: 8,
        max_attempts: 30,
        ..opts()
    };
    let (r, p) = e.run(o).await;
    e.assert_copied(&r.unwrap());
    assert_eq!(p.parts_done.load(Relaxed), 31);
}

#[tokio::test]
async fn local_source_changed_mid_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    std::fs::write(&path, data(10 * PART, 1)).unwrap();
    let mem = MemoryStore::new("m");
    mem.inject(FaultRule::new(
        Op::UploadPart,
        Fault::Delay(Duration::from_millis(20)),
    ));
    let p = Progress::new();
    let o = CopyOptions {
        concurrency: 2,
        ..opts()
    };
    let run = copy(
        Location::new(Arc::new(LocalFile::new(&path)), ""),
        Location::new(mem.clone() as Arc<dyn ObjectStore>, "k"),
        o,
        p.clone(),
        CancellationToken::new(),
    );
    let (r, _) = tokio::join!(run, async {
        while p.parts_done.load(Relaxed) < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        std::fs::write(&path, data(10 * PART + 1, 2)).unwrap();
    });
    let err = r.unwrap_err();
    assert!(matches!(err, TransferError::SourceChanged { .. }), "{err}");
    assert_eq!(mem.open_uploads(), 0);
    assert!(mem.object("k").is_none());
}

/// A slow copy of 8 parts, one at a time, with a state directory, started and running (one
/// part acknowledged): its task and its options.
async fn a_running_copy(
    e: &Env,
    dir: &tempfile::TempDir,
) -> (
    tokio::task::JoinHandle<Result<CopySummary, TransferError>>,
    CopyOptions,
) {
    slow(e);
    let o = CopyOptions {
        concurrency: 1,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let (s, d) = e.locs();
    let p = Progress::new();
    let task = tokio::spawn(copy(s, d, o.clone(), p.clone(), CancellationToken::new()));
    while p.parts_done.load(Relaxed) < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (task, o)
}

#[tokio::test]
async fn the_same_pair_cannot_run_twice_at_once() {
    let e = env(8 * PART);
    let dir = tempfile::tempdir().unwrap();
    let (first, o) = a_running_copy(&e, &dir).await;
    let err = e.run(o).await.0.unwrap_err();
    assert!(matches!(err, TransferError::State(_)), "{err}");
    assert!(err.to_string().contains("another copy"), "{err}");
    e.assert_copied(&first.await.unwrap().unwrap());
}

#[tokio::test]
async fn resume_trusts_etags_when_the_destination_reports_no_crc() {
    let e = env(10 * PART);
    e.dst.set_report_crc(false);
    let dir = tempfile::tempdir().unwrap();
    let (o, path, _) = interrupted_with_state(&e, dir.path(), 3).await;
    // Tamper with one recorded ETag: without a CRC from the server, that part is not trusted.
    let mut st = state::load(&path).unwrap().unwrap();
    let kept = st.parts.len() as u64;
    st.parts[1].etag.push('x');
    let tampered = st.parts[1].number;
    state::save(&path, &st).unwrap();
    e.dst.clear_faults();
    e.dst.reset_part_uploads();
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, (kept - 1) * PART);
    assert_eq!(e.dst.part_uploads(tampered), 1);
}

#[tokio::test]
async fn a_part_backing_off_does_not_hold_up_the_others() {
    let e = env(6 * PART);
    e.dst.inject(
        FaultRule::new(Op::UploadPart, Fault::Error(ErrorClass::Transient))
            .part(1)
            .times(1),
    );
    let o = CopyOptions {
        concurrency: 1,
        retry_base: Duration::from_millis(400),
        retry_cap: Duration::from_millis(400),
        ..opts()
    };
    let (s, d) = e.locs();
    let p = Progress::new();
    let task = tokio::spawn(copy(s, d, o, p.clone(), CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.parts_done.load(Relaxed), 5, "parts 2-6 went ahead");
    e.assert_copied(&task.await.unwrap().unwrap());
}

#[tokio::test]
async fn copies_can_share_one_memory_budget() {
    let global = Progress::new();
    let shared = budget::MemoryBudget::new(256 * KIB, global.clone());
    let (a, b) = (env(4 * MIB), env(4 * MIB + 1));
    let o = CopyOptions {
        concurrency: 8,
        part_size: Some(MIB),
        chunk_size: 32 * 1024,
        shared_memory: Some(shared.clone()),
        ..opts()
    };
    let (ra, rb) = tokio::join!(a.run(o.clone()), b.run(o));
    a.assert_copied(&ra.0.unwrap());
    b.assert_copied(&rb.0.unwrap());
    let peak = global.peak_buffered_bytes.load(Relaxed);
    assert!(peak > 0 && peak <= 256 * KIB, "peak {peak}");
    assert_eq!(shared.in_use(), 0);
}

#[tokio::test]
async fn hung_requests_time_out_and_are_retried() {
    let short = Duration::from_millis(150);
    let o = CopyOptions {
        idle_timeout: Some(short),
        request_timeout: Some(short),
        ..opts()
    };
    // A GET that never answers; an upload that never reads a part small enough to sit
    // entirely in the buffer; one that never reads a part bigger than the buffer. (A Complete
    // that never answers is a request, retried by the transport, not by the engine:
    // `a_hung_complete_fails_the_copy_once_and_keeps_the_upload`.)
    let cases: Vec<(&str, u64, Op)> = vec![
        ("get", PART, Op::Get),
        ("small part", PART, Op::UploadPart),
        ("big part", 8 * MIB, Op::UploadPart),
    ];
    for (name, part, op) in cases {
        let e = env(3 * part);
        let store = if op == Op::Get { &e.src } else { &e.dst };
        store.inject(FaultRule::new(op, Fault::Hang).nth(1));
        let (r, p) = e
            .run(CopyOptions {
                part_size: Some(part),
                ..o.clone()
            })
            .await;
        let s = r.unwrap_or_else(|err| panic!("{name}: {err}"));
        e.assert_copied(&s);
        assert_eq!(p.retries.load(Relaxed), 1, "{name}");
    }
}

#[tokio::test]
async fn a_hung_complete_fails_the_copy_once_and_keeps_the_upload() {
    let short = Duration::from_millis(150);
    let e = env(3 * PART);
    e.dst
        .inject(FaultRule::new(Op::Complete, Fault::Hang).nth(1));
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = e
        .run(CopyOptions {
            request_timeout: Some(short),
            state_dir: Some(dir.path().join("state")),
            ..opts()
        })
        .await;
    let err = r.expect_err("a Complete that never answers fails the copy");
    assert!(err.to_string().contains("no response within"), "{err}");
    assert!(matches!(err, TransferError::Resumable { .. }), "{err}");
    assert_eq!(
        e.dst.calls(Op::Complete),
        1,
        "the engine sends Complete once"
    );
    assert_eq!(p.retries.load(Relaxed), 0);
    assert_eq!(e.dst.open_uploads(), 1, "the upload is kept for the rerun");
    // The rerun completes it.
    let (r, _) = e
        .run(CopyOptions {
            state_dir: Some(dir.path().join("state")),
            ..opts()
        })
        .await;
    e.assert_copied(&r.unwrap());
}

/// A Complete applied by the store whose answer was lost, then answered `NoSuchUpload` (what
/// the transport's retry gets from OSS or S3): the session accepts the object only because
/// its size and CRC-64 are the expected ones.
#[tokio::test]
async fn a_lost_complete_answer_is_recovered_by_size_and_crc64() {
    let e = env(3 * PART + 9);
    e.dst
        .inject(FaultRule::new(Op::Complete, Fault::AppliedThenNotFound).times(1));
    let (r, _) = e.run(opts()).await;
    let s = r.expect("recovered");
    e.assert_copied(&s);
    assert_eq!(e.dst.calls(Op::Complete), 1);

    // Without a CRC-64 from the destination the object cannot be told from another one of
    // the same size: that answer is an error, never taken for success.
    let e = env(3 * PART + 9);
    e.dst
        .inject(FaultRule::new(Op::Complete, Fault::AppliedThenNotFound).times(1));
    e.dst.set_report_crc(false);
    let (r, _) = e.run(opts()).await;
    let err = r.expect_err("without a CRC-64 to compare, nothing is accepted");
    assert!(err.to_string().contains("cannot complete"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Nothing lost: the state directory, the lock, a crash after Complete, damaged state.

/// A copy that failed on its CompleteMultipartUpload (so that the state file is kept), whose
/// upload is then completed behind the engine's back: the state a kill -9 between the
/// service's Complete and the removal of the state file leaves.
async fn completed_behind_our_back(e: &Env, o: &CopyOptions) -> std::path::PathBuf {
    e.dst
        .inject(FaultRule::new(Op::Complete, Fault::Error(ErrorClass::Client)).times(1));
    let err = e.run(o.clone()).await.0.unwrap_err();
    let TransferError::Resumable { state_file, .. } = err else {
        panic!("expected a resumable failure, got {err}")
    };
    let st = state::load(&state_file).unwrap().expect("state kept");
    let parts: Vec<(u32, String)> = st
        .parts
        .iter()
        .map(|p| (p.number, p.etag.clone()))
        .collect();
    e.dst
        .complete(
            "copy",
            &st.upload_id,
            &parts,
            0,
            &crate::checksum::Checksums::new(),
        )
        .await
        .unwrap();
    assert_eq!(e.dst.open_uploads(), 0);
    state_file
}

#[tokio::test]
async fn a_rerun_after_a_completed_upload_sends_nothing() {
    for with_record in [true, false] {
        let e = env(6 * PART + 5);
        let dir = tempfile::tempdir().unwrap();
        let o = CopyOptions {
            state_dir: Some(dir.path().to_path_buf()),
            ..opts()
        };
        let path = completed_behind_our_back(&e, &o).await;
        let mut st = state::load(&path).unwrap().unwrap();
        assert!(st.completing.is_some(), "written before Complete");
        if !with_record {
            // A state file of the previous release: the recorded parts stand in.
            st.completing = None;
            state::save(&path, &st).unwrap();
        }
        e.dst.reset_part_uploads();
        let (creates, gets) = (e.dst.calls(Op::CreateMultipart), e.src.calls(Op::Get));
        let s = e.run(o.clone()).await.0.unwrap();
        e.assert_copied(&s);
        assert_eq!(s.resumed_bytes, s.bytes, "record {with_record}");
        assert_eq!(s.parts, 7);
        assert_eq!(e.dst.calls(Op::CreateMultipart), creates, "no new upload");
        assert_eq!(e.src.calls(Op::Get), gets, "not a byte read again");
        assert!((1..=7).all(|n| e.dst.part_uploads(n) == 0));
        assert!(!path.exists(), "state removed");
    }
}

#[tokio::test]
async fn a_completed_upload_with_other_bytes_is_sent_again() {
    let e = env(6 * PART + 5);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    completed_behind_our_back(&e, &o).await;
    // Someone overwrote the destination since: same size, other bytes.
    e.dst.insert("copy", data(6 * PART + 5, 99));
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.resumed_bytes, 0);
}

#[cfg(unix)]
#[tokio::test]
async fn a_failing_state_dir_keeps_the_upload_and_the_last_saved_state() {
    use std::os::unix::fs::PermissionsExt;
    // Root ignores directory permissions: then nothing here can make a write fail.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: running as root (tests/nothing_lost.rs covers this on a tmpfs)");
        return;
    }
    let e = env(12 * PART);
    slow(&e);
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let (s, d) = e.locs();
    let p = Progress::new();
    let task = tokio::spawn(copy(s, d, o.clone(), p.clone(), CancellationToken::new()));
    while p.parts_done.load(Relaxed) < 4 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
    let err = task.await.unwrap().unwrap_err();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(err, TransferError::StateWrite { .. }), "{err}");
    assert!(
        err.to_string().contains("then rerun the same command"),
        "{err}"
    );
    assert_eq!(e.dst.open_uploads(), 1, "the upload is kept");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert!(s.resumed_bytes >= PART, "resumed {}", s.resumed_bytes);
}

#[tokio::test]
async fn a_single_put_waits_for_a_live_multipart_run_of_the_pair() {
    let e = env(8 * PART);
    let dir = tempfile::tempdir().unwrap();
    let (first, o) = a_running_copy(&e, &dir).await;
    // The whole object fits one part of this size: the single-PUT path.
    let big = CopyOptions {
        part_size: Some(16 * PART),
        ..o.clone()
    };
    let err = e.run(big).await.0.unwrap_err();
    assert!(err.to_string().contains("another copy"), "{err}");
    assert_eq!(e.dst.calls(Op::Abort), 0, "the live upload was not aborted");
    e.assert_copied(&first.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_damaged_state_file_aborts_the_upload_it_names() {
    let e = env(10 * PART);
    let dir = tempfile::tempdir().unwrap();
    let (o, path, _) = interrupted_with_state(&e, dir.path(), 3).await;
    assert_eq!(e.dst.open_uploads(), 1);
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    e.dst.clear_faults();
    let s = e.run(o).await.0.unwrap();
    e.assert_copied(&s);
    assert_eq!(
        e.dst.calls(Op::Abort),
        1,
        "the damaged state's upload was aborted"
    );
    assert_eq!(e.dst.open_uploads(), 0, "nothing orphaned");
}

/// Samples `f` every 2 ms until the returned guard is dropped; the guard holds the maximum.
fn sample_max(
    p: &Arc<Progress>,
    f: fn(&Progress) -> u64,
) -> (
    Arc<std::sync::atomic::AtomicU64>,
    tokio_util::task::AbortOnDropHandle<()>,
) {
    let max = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (m, p) = (max.clone(), p.clone());
    let h = tokio::spawn(async move {
        loop {
            m.fetch_max(f(&p), Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (max, tokio_util::task::AbortOnDropHandle::new(h))
}

impl Env {
    async fn run_watched(
        &self,
        o: CopyOptions,
        f: fn(&Progress) -> u64,
    ) -> (Result<CopySummary, TransferError>, Arc<Progress>, u64) {
        let (s, d) = self.locs();
        let p = Progress::new();
        let (max, _sampler) = sample_max(&p, f);
        let r = copy(s, d, o, p.clone(), CancellationToken::new()).await;
        (r, p, max.load(Relaxed))
    }
}

/// A part whose body is all sent waits for its UploadPart response without a slot: another
/// part moves bytes meanwhile, so the store sees more uploads at once than `concurrency`
/// (before, a slot idled through every acknowledgement); parts awaiting acknowledgement stay
/// within the documented bound (twice the limit) and are all recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_awaiting_acknowledgement_hold_no_slot_and_stay_bounded() {
    let e = env(12 * PART);
    e.dst.inject(FaultRule::new(
        Op::UploadPart,
        Fault::AckDelay(Duration::from_millis(300)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 2,
        // Bodies take ~0.15 s each, so a body and an acknowledgement overlap.
        bandwidth: Some(2 * 1024 * 1024),
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let (r, p, awaiting) = e
        .run_watched(o, |p| p.awaiting_ack_parts.load(Relaxed))
        .await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.retries, 0);
    assert!(
        awaiting >= 1,
        "no part was seen awaiting its acknowledgement"
    );
    assert!(
        awaiting <= 4,
        "{awaiting} parts awaited acknowledgement (bound: 2 × --concurrency = 4)"
    );
    let most = e.dst.counters.max_inflight_uploads.load(Relaxed);
    assert!(
        (3..=4).contains(&most),
        "{most} uploads at once with --concurrency 2 (want 3..=4: 2 moving + awaiting)"
    );
    assert_eq!(p.awaiting_ack_parts.load(Relaxed), 0);
    assert_eq!(p.parts_done.load(Relaxed), 12);
}

/// The next part's GET is issued about one time-to-first-byte before the body ahead of it
/// ends: with one slot, two attempts overlap (the old scheduler ran them strictly one after
/// the other, idling a round trip per part).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_get_starts_a_round_trip_before_the_slot_frees() {
    let e = env(6 * PART);
    // Every GET answers after 80 ms: the round trip the scheduler must measure and hide.
    e.src.inject(FaultRule::new(
        Op::Get,
        Fault::Delay(Duration::from_millis(80)),
    ));
    let o = CopyOptions {
        concurrency: 1,
        // ~0.3 s per body after the bucket's first burst.
        bandwidth: Some(400 * 1024),
        ..opts()
    };
    let (r, _, inflight) = e.run_watched(o, |p| p.inflight_parts.load(Relaxed)).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(s.hedged_parts, 0, "nothing straggles here");
    assert_eq!(
        inflight, 2,
        "with --concurrency 1, the next part must start as the body ahead ends"
    );
}

/// `--concurrency` bounds the parts moving body bytes (`sending_parts`, the
/// `ossrelay_parts_sending` gauge): at most the limit plus a quarter of it (at least one) in
/// early starts finishing their last round trip, while GETs started early and still waiting
/// for their first byte are under way on top (`inflight_parts`). 24 parts, ~0.25 s each,
/// a 60 ms GET round trip: early starts happen about once per part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_parts_moving_bytes_not_the_gets_waiting() {
    let e = env(24 * PART);
    e.src.inject(FaultRule::new(
        Op::Get,
        Fault::Delay(Duration::from_millis(60)),
    ));
    let o = CopyOptions {
        concurrency: 4,
        bandwidth: Some(2 * 1024 * 1024),
        ..opts()
    };
    let p = Progress::new();
    let (sending, _s) = sample_max(&p, |p| p.sending_parts.load(Relaxed));
    let (inflight, _i) = sample_max(&p, |p| p.inflight_parts.load(Relaxed));
    let (s, d) = e.locs();
    let r = copy(s, d, o, p.clone(), CancellationToken::new()).await;
    e.assert_copied(&r.unwrap());
    let (sending, inflight) = (sending.load(Relaxed), inflight.load(Relaxed));
    assert!(
        (3..=5).contains(&sending),
        "{sending} parts moved bytes at once with --concurrency 4 (bound 4 + 1 early start)"
    );
    assert!(
        inflight > sending,
        "early GETs waiting for their first byte ({inflight} under way) are not moving bytes \
         ({sending})"
    );
    assert_eq!(p.sending_parts.load(Relaxed), 0);
}

/// A part stalled near the end (no other part left to start) is hedged: the second attempt
/// is acknowledged long before the stall timer would fire, the stalled one is cancelled and
/// never reaches the store.
#[tokio::test]
async fn a_stalled_straggler_is_hedged_and_the_hedge_wins() {
    let e = env(3 * PART);
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Stall { after: 100 }).nth(1));
    let t = std::time::Instant::now();
    let (r, p) = e.run(opts()).await;
    let s = r.unwrap();
    e.assert_copied(&s);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "waited for the stall timer"
    );
    assert_eq!(s.hedged_parts, 1);
    assert_eq!(p.hedged_parts.load(Relaxed), 1);
    assert_eq!(s.retries, 0, "a hedge is not a retry");
    assert_eq!(e.dst.part_uploads(1), 1, "the stalled attempt never landed");
}

/// Both attempts of a hedged part reach the store, the loser last (its acknowledgement
/// comes after the winner's, and the store keeps the last body). Each upload gets its own
/// ETag here (a store whose ETag is not the MD5), so Complete succeeds only if the ETag
/// recorded is the one the store lists: the part is re-listed, recorded once, with the
/// same CRC-64 (the object's CRC-64 is proven).
#[tokio::test]
async fn a_hedged_part_and_its_original_both_acknowledged_one_record_the_listed_etag() {
    let e = env(4 * PART);
    e.dst.set_unique_etags(true);
    // Part 4's GET is slow to answer: a straggler once parts 1–3 are done.
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Delay(Duration::from_millis(800))).nth(4));
    // Its hedge (the 5th GET) is slower still, so the original's body is all sent first…
    e.src
        .inject(FaultRule::new(Op::Get, Fault::Delay(Duration::from_millis(1500))).nth(5));
    // …but the original is stored and acknowledged only after the hedge was.
    e.dst.inject(
        FaultRule::new(Op::UploadPart, Fault::AckDelay(Duration::from_millis(2500)))
            .part(4)
            .times(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let o = CopyOptions {
        concurrency: 8,
        state_dir: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let (r, _) = e.run(o).await;
    let s = r.unwrap_or_else(|err| panic!("{err}"));
    e.assert_copied(&s);
    assert_eq!(s.hedged_parts, 1);
    assert_eq!(e.dst.part_uploads(4), 2, "both attempts were stored");
    assert_eq!(
        e.dst.calls(Op::ListParts),
        1,
        "the hedged part was re-listed"
    );
    assert_eq!(s.parts, 4);
}

/// Hedging is bounded whatever happens: under a storm of stalled GETs (40 % of them), over
/// three rounds, no run hedges more than `max_hedges` parts, and every copy completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_never_exceeds_its_bound_under_a_stall_storm() {
    let mut total = 0;
    for round in 0..3 {
        let e = env(24 * PART);
        e.src
            .inject(FaultRule::new(Op::Get, Fault::Stall { after: 0 }).probability(0.4));
        let o = CopyOptions {
            idle_timeout: Some(Duration::from_millis(400)),
            max_attempts: 30,
            max_hedges: 2,
            ..opts()
        };
        let (r, p) = e.run(o).await;
        let s = r.unwrap_or_else(|err| panic!("round {round}: {err}"));
        e.assert_copied(&s);
        assert!(
            s.hedged_parts <= 2,
            "round {round}: {} hedges",
            s.hedged_parts
        );
        assert_eq!(p.hedged_parts.load(Relaxed), s.hedged_parts);
        total += s.hedged_parts;
    }
    assert!(
        total >= 1,
        "stalls at the end of three copies and not one hedge"
    );
}

/// A new upload's first parts are requested from the source while InitiateMultipartUpload
/// is outstanding (one round trip saved per connection at the start), and those GETs are
/// the ones the parts use: no part is read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_gets_go_out_with_the_initiate_and_are_used() {
    let e = env(8 * PART);
    e.dst.inject(FaultRule::new(
        Op::CreateMultipart,
        Fault::Delay(Duration::from_millis(300)),
    ));
    let (src, dst) = (e.src.clone(), e.dst.clone());
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = seen.clone();
    let sampler = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        loop {
            // Initiate asked for and not yet answered: the GETs the source has seen so far.
            // (No part sent and nothing completed: after the Complete the mock again holds
            // no open upload, and that window must not count.)
            // The GET count is read first and kept only if the window was still open after
            // it was read, so a count taken just as the Initiate returned cannot slip in.
            let gets = src.calls(Op::Get);
            if dst.calls(Op::CreateMultipart) == 1
                && dst.open_uploads() == 0
                && dst.calls(Op::UploadPart) == 0
                && dst.calls(Op::Complete) == 0
            {
                s2.fetch_max(gets, Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }));
    let (r, _) = e.run(opts()).await;
    drop(sampler);
    let s = r.unwrap();
    e.assert_copied(&s);
    assert_eq!(
        seen.load(Relaxed),
        4,
        "the first --concurrency (4) GETs must be under way before the upload id is known"
    );
    assert_eq!(e.src.calls(Op::Get), 8, "each of the 8 parts read once");
    assert_eq!(s.retries, 0);
}

/// When the Initiate fails, the GETs issued ahead are dropped, not waited for: the copy
/// fails at once with the Initiate's error, and no part reaches the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_initiate_drops_the_gets_issued_ahead() {
    let e = env(8 * PART);
    e.src.inject(FaultRule::new(
        Op::Get,
        Fault::Delay(Duration::from_secs(3)),
    ));
    e.dst.inject(FaultRule::new(
        Op::CreateMultipart,
        Fault::Error(ErrorClass::Auth),
    ));
    let t = std::time::Instant::now();
    let (r, _) = e.run(opts()).await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("cannot start an upload"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the copy waited {:?} for GETs nobody will use",
        t.elapsed()
    );
    assert_eq!(e.dst.calls(Op::UploadPart), 0);
    assert_eq!(e.dst.open_uploads(), 0);
}
