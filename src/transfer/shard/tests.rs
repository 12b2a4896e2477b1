//! Sharded copy against `MemoryStore`: plan, workers, Complete, and what each refuses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::crc64;
use crate::store::memory::MemoryStore;
use crate::store::ObjectStore;

const KIB: u64 = 1024;
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
        concurrency: 3,
        part_size: Some(PART),
        retry_base: Duration::from_millis(1),
        retry_cap: Duration::from_millis(10),
        idle_timeout: Some(Duration::from_secs(5)),
        request_timeout: Some(Duration::from_secs(5)),
        max_attempts: 4,
        ..CopyOptions::default()
    }
}

struct Env {
    src: Arc<MemoryStore>,
    dst: Arc<MemoryStore>,
    bytes: Bytes,
}

impl Env {
    fn new(size: u64) -> Self {
        let src = MemoryStore::new("src");
        let dst = MemoryStore::new("dst");
        let bytes = data(size, size + 3);
        src.insert("disk.raw", bytes.clone());
        Self { src, dst, bytes }
    }

    fn src(&self) -> Location {
        Location::new(self.src.clone() as Arc<dyn ObjectStore>, "disk.raw")
    }

    fn dst(&self) -> Location {
        Location::new(self.dst.clone() as Arc<dyn ObjectStore>, "copy.raw")
    }

    fn at(&self) -> Location {
        Location::new(
            self.dst.clone() as Arc<dyn ObjectStore>,
            default_manifest_key("copy.raw"),
        )
    }

    async fn plan(&self, shards: u32) -> PlanSummary {
        plan(
            self.src(),
            self.dst(),
            self.at(),
            shards,
            opts(),
            CancellationToken::new(),
        )
        .await
        .expect("plan")
    }

    async fn manifest(&self) -> Manifest {
        read_manifest(&self.at(), &opts()).await.expect("manifest")
    }

    async fn work(&self, i: u32) -> Result<ShardSummary, ShardError> {
        let m = read_manifest(&self.at(), &opts()).await?;
        work(
            &self.at(),
            &m,
            self.src(),
            self.dst(),
            i,
            opts(),
            Progress::new(),
            CancellationToken::new(),
        )
        .await
    }

    async fn complete(&self) -> Result<CompleteSummary, ShardError> {
        let m = read_manifest(&self.at(), &opts()).await?;
        complete(
            &self.at(),
            &m,
            self.src(),
            self.dst(),
            opts(),
            CancellationToken::new(),
        )
        .await
    }

    /// Whether any record of the plan `m` is left.
    fn records_left(&self, m: &Manifest) -> bool {
        let part = (1..=m.parts).any(|n| {
            self.dst
                .object(&format!("{}part-{n:05}.json", m.records))
                .is_some()
        });
        let shard = (0..m.shards.len()).any(|i| {
            self.dst
                .object(&format!("{}shard-{i:05}.json", m.records))
                .is_some()
        });
        part || shard
    }
}

#[tokio::test]
async fn four_shards_make_the_object_and_complete_cleans_up() {
    let size = 10 * PART + 12_345;
    let e = Env::new(size);
    let p = e.plan(4).await;
    assert_eq!(p.parts, 11);
    assert_eq!(p.shards, 4);
    assert!(!p.reused);
    assert_eq!(p.assignment.iter().map(|s| s.parts).sum::<u32>(), 11);
    // The same plan again: kept.
    let again = e.plan(4).await;
    assert!(again.reused);
    assert_eq!(again.upload_id, p.upload_id);
    assert_eq!(e.dst.open_uploads(), 1);

    let mut crcs = Vec::new();
    for i in 0..4 {
        let s = e.work(i).await.expect("worker");
        assert_eq!(s.resumed_bytes, 0);
        crcs.push((s.crc64, s.bytes));
    }
    // A rerun of a finished shard sends nothing.
    let uploads = e.dst.calls(crate::store::memory::Op::UploadPart);
    let s = e.work(2).await.unwrap();
    assert_eq!(s.resumed_bytes, s.bytes);
    assert_eq!(e.dst.calls(crate::store::memory::Op::UploadPart), uploads);
    // The shards' CRCs fold into the object's.
    let folded = crcs
        .iter()
        .fold(0, |acc, &(c, len)| crc64::combine(acc, c, len));
    assert_eq!(folded, crc64::checksum(&e.bytes));

    let c = e.complete().await.expect("complete");
    assert_eq!(c.crc64, crc64::checksum(&e.bytes));
    assert!(!c.already_complete);
    assert_eq!(c.records_left, 0);
    assert!(
        c.verified_by.contains(&"source_crc64ecma".to_string()),
        "{:?}",
        c.verified_by
    );
    assert!(
        c.verified_by.contains(&"part_crc64ecma".to_string()),
        "{:?}",
        c.verified_by
    );
    assert!(e.dst.object("copy.raw").unwrap() == e.bytes, "bytes differ");
    assert_eq!(e.dst.open_uploads(), 0);
    let m = e.manifest().await;
    assert!(!e.records_left(&m), "records deleted");
    // Everything after is a no-op that says so.
    assert!(e.complete().await.unwrap().already_complete);
    assert!(e.work(1).await.unwrap().already_complete);
    assert!(e.plan(4).await.complete);
}

#[tokio::test]
async fn complete_names_the_missing_shards_and_a_rerun_of_them_finishes() {
    let e = Env::new(9 * PART);
    e.plan(3).await;
    e.work(0).await.unwrap();
    e.work(2).await.unwrap();
    let err = e.complete().await.unwrap_err();
    assert!(
        matches!(&err, ShardError::Incomplete { shards, .. } if shards == &[1]),
        "{err}"
    );
    assert!(err.to_string().contains("rerun shard(s) 1"), "{err}");
    e.work(1).await.unwrap();
    e.complete().await.unwrap();
    assert!(e.dst.object("copy.raw").unwrap() == e.bytes);
}

#[tokio::test]
async fn a_changed_source_fails_workers_and_complete() {
    let e = Env::new(6 * PART);
    e.plan(2).await;
    e.work(0).await.unwrap();
    e.src.insert("disk.raw", data(6 * PART, 99));
    let err = e.work(1).await.unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
    let err = e.complete().await.unwrap_err();
    assert!(err.to_string().contains("changed"), "{err}");
    assert_eq!(e.dst.open_uploads(), 0, "Complete aborted the upload");
    assert!(e.dst.object("copy.raw").is_none());
}

#[tokio::test]
async fn a_tampered_manifest_is_refused() {
    let e = Env::new(4 * PART);
    e.plan(2).await;
    let mut m = e.manifest().await;
    // Edited by hand: the check fails.
    let mut edited = m.clone();
    edited.upload_id = "another".into();
    e.dst.insert(&e.at().key, edited.to_bytes());
    let err = read_manifest(&e.at(), &opts()).await.unwrap_err();
    assert!(matches!(err, ShardError::BadManifest { .. }), "{err}");
    // Resealed with the upload id of another object's upload: the destination refuses it.
    let other = e
        .dst
        .create_multipart("other.raw", 1, &Default::default())
        .await
        .unwrap();
    m.upload_id = other;
    m.records = format!(
        "copy.raw.ossrelay/records/{}/",
        manifest::plan_id(&m.destination, &m.upload_id)
    );
    m.seal();
    e.dst.insert(&e.at().key, m.to_bytes());
    let err = e.work(0).await.unwrap_err();
    assert!(
        matches!(&err, ShardError::BadManifest { why, .. } if why.contains("not an open upload")),
        "{err}"
    );
    // Read from another place: refused.
    let moved = Location::new(e.dst.clone() as Arc<dyn ObjectStore>, "elsewhere.json");
    e.dst.insert("elsewhere.json", m.to_bytes());
    let err = read_manifest(&moved, &opts()).await.unwrap_err();
    assert!(err.to_string().contains("written for"), "{err}");
}

#[tokio::test]
async fn no_manifest_and_a_shard_out_of_range_say_what_to_do() {
    let e = Env::new(4 * PART);
    let err = read_manifest(&e.at(), &opts()).await.unwrap_err();
    assert!(err.to_string().contains("--plan"), "{err}");
    e.plan(2).await;
    let err = e.work(2).await.unwrap_err();
    assert!(err.to_string().contains("has 2 shard(s)"), "{err}");
}

#[tokio::test]
async fn two_workers_of_one_shard_at_once_agree() {
    let e = Env::new(12 * PART);
    e.plan(2).await;
    let (a, b) = tokio::join!(e.work(0), e.work(0));
    assert_eq!(a.unwrap().crc64, b.unwrap().crc64);
    e.work(1).await.unwrap();
    e.complete().await.unwrap();
    assert!(e.dst.object("copy.raw").unwrap() == e.bytes);
}

/// The overhead of the largest plan (10,000 parts, what a 1 TiB object has) beyond its bytes:
/// Plan, and Complete with its record reads, ListParts and 10,004 record deletes, each
/// request answered after 2 ms (a store in the same region). The parts are 1 KiB here: the
/// steps measured do not depend on the bytes. Figures on stderr (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_complete_of_ten_thousand_parts_take_seconds() {
    use crate::store::memory::{Fault, FaultRule, Op};
    let parts = 10_000u64;
    let e = Env::new(parts * KIB);
    for s in [&e.src, &e.dst] {
        s.set_limits(crate::store::Limits {
            min_part_size: KIB,
            max_part_size: 5 << 30,
            max_parts: 10_000,
            max_single_put: 5 << 30,
        });
    }
    let o = CopyOptions {
        part_size: Some(KIB),
        concurrency: 32,
        ..opts()
    };
    let latency = |on: bool| {
        e.dst.clear_faults();
        if on {
            for op in [
                Op::Head,
                Op::Get,
                Op::Put,
                Op::CreateMultipart,
                Op::ListParts,
                Op::Complete,
                Op::Delete,
            ] {
                e.dst
                    .inject(FaultRule::new(op, Fault::Delay(Duration::from_millis(2))));
            }
        }
    };
    latency(true);
    let t = std::time::Instant::now();
    let p = plan(
        e.src(),
        e.dst(),
        e.at(),
        4,
        o.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let planned = t.elapsed();
    assert_eq!(p.parts, 10_000);
    latency(false);
    let m = read_manifest(&e.at(), &o).await.unwrap();
    let at = e.at();
    let workers = (0..4).map(|i| {
        work(
            &at,
            &m,
            e.src(),
            e.dst(),
            i,
            o.clone(),
            Progress::new(),
            CancellationToken::new(),
        )
    });
    for r in futures::future::join_all(workers).await {
        r.unwrap();
    }
    latency(true);
    let t = std::time::Instant::now();
    let c = complete(
        &e.at(),
        &m,
        e.src(),
        e.dst(),
        o.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let completed = t.elapsed();
    assert_eq!(c.crc64, crc64::checksum(&e.bytes));
    assert_eq!(c.records_left, 0);
    eprintln!(
        "10,000 parts, 2 ms per request: plan {:.2} s, complete {:.2} s",
        planned.as_secs_f64(),
        completed.as_secs_f64()
    );
    assert!(
        planned + completed < Duration::from_secs(10),
        "plan {planned:?} + complete {completed:?}"
    );
}

#[tokio::test]
async fn two_completes_at_once_both_succeed_and_a_stale_worker_stops() {
    let e = Env::new(8 * PART);
    e.plan(2).await;
    let stale = e.manifest().await;
    e.work(0).await.unwrap();
    e.work(1).await.unwrap();
    // The last two workers of --complete-when-done finishing together.
    let (a, b) = tokio::join!(e.complete(), e.complete());
    assert_eq!(a.unwrap().crc64, crc64::checksum(&e.bytes));
    assert_eq!(b.unwrap().crc64, crc64::checksum(&e.bytes));
    assert!(e.dst.object("copy.raw").unwrap() == e.bytes);
    // A worker that read the manifest before the Complete: nothing to do.
    let s = work(
        &e.at(),
        &stale,
        e.src(),
        e.dst(),
        0,
        opts(),
        Progress::new(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(s.already_complete);
}

#[tokio::test]
async fn run_local_plans_runs_every_shard_and_completes() {
    let e = Env::new(7 * PART + 5);
    let p = Progress::new();
    let c = run_local(
        e.src(),
        e.dst(),
        e.at(),
        3,
        opts(),
        p.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(c.crc64, crc64::checksum(&e.bytes));
    assert!(e.dst.object("copy.raw").unwrap() == e.bytes);
    assert_eq!(
        p.acked_bytes.load(std::sync::atomic::Ordering::Relaxed),
        7 * PART + 5
    );
    assert_eq!(p.parts_done.load(std::sync::atomic::Ordering::Relaxed), 8);
}

#[tokio::test]
async fn abandon_aborts_the_upload_and_removes_the_plan() {
    let e = Env::new(6 * PART);
    let p = e.plan(2).await;
    e.work(0).await.unwrap();
    let gone = abandon(&e.at(), &e.dst(), &opts()).await.unwrap();
    assert_eq!(gone.as_deref(), Some(p.upload_id.as_str()));
    assert_eq!(e.dst.open_uploads(), 0);
    assert!(e.dst.object(&e.at().key).is_none(), "manifest removed");
    assert!(abandon(&e.at(), &e.dst(), &opts()).await.unwrap().is_none());
}
