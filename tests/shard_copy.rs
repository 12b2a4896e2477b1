//! A sharded copy end to end, each "pod" an `ossrelay` process with `JOB_COMPLETION_INDEX`
//! set, as a Kubernetes Indexed Job runs them: plan, four workers, complete; a worker killed
//! with SIGKILL and only its index rerun; the same index twice at once; a worker before the
//! plan; a source overwritten after the plan; a shard missing at Complete; a tampered
//! manifest; an `s3://` destination. The result is proven by the simulator's own bytes and
//! CRC-64, never by the client's word.

mod common;

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ossrelay::crc64;

const MIB: u64 = 1024 * 1024;
const SHARDS: u32 = 4;

fn manifest_url(dst_key: &str) -> String {
    format!("oss://{DST_BUCKET}/{dst_key}.ossrelay/manifest.json")
}

/// A world whose source holds `size` bytes of real data at `disk.raw` (returned).
async fn world(
    size: usize,
    dst_cfg: impl FnOnce(&mut ossrelay_sim::SimConfig),
) -> (World, Vec<u8>) {
    let w = World::new(|_| {}, dst_cfg).await;
    let data = bytes(size, 42);
    w.src
        .put_object_bytes(SRC_BUCKET, "disk.raw", Bytes::from(data.clone()));
    (w, data)
}

/// `copy` flags reaching both simulators, without SRC DST.
fn sides(w: &World) -> Vec<String> {
    let mut a = w.copy_args("x", DST_BUCKET, "x");
    a.drain(1..3);
    a
}

/// `--plan` of `disk.raw` into `dst_key` in 1 MiB parts (`extra` may give another size).
fn plan_args(w: &World, dst_key: &str, extra: &[&str]) -> Vec<String> {
    let mut a = w.copy_args("disk.raw", DST_BUCKET, dst_key);
    a.extend(["--shards", &SHARDS.to_string(), "--plan", "--json"].map(String::from));
    if !extra.contains(&"--part-size") {
        a.extend(["--part-size".to_string(), "1MiB".to_string()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn worker_args(w: &World, manifest: &str, extra: &[&str]) -> Vec<String> {
    let mut a = sides(w);
    a.extend([
        "--manifest".to_string(),
        manifest.to_string(),
        "--json".into(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn complete_args(w: &World, manifest: &str) -> Vec<String> {
    worker_args(w, manifest, &["--complete"])
}

/// One pod of the Indexed Job: the worker with `JOB_COMPLETION_INDEX=index`.
fn pod(w: &World, manifest: &str, index: u32, extra: &[&str]) -> Child {
    w.command(&worker_args(w, manifest, extra))
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .spawn()
        .expect("spawn a worker")
}

async fn wait(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("worker output"))
        .await
        .unwrap()
}

async fn plan(w: &World, dst_key: &str) -> serde_json::Value {
    let out = w.run(plan_args(w, dst_key, &[])).await;
    assert_eq!(out.status.code(), Some(0), "plan: {}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        s["manifest"].as_str(),
        Some(manifest_url(dst_key).as_str()),
        "{s}"
    );
    s
}

/// Runs the given shards as pods at once; each must exit 0.
async fn run_pods(w: &World, manifest: &str, shards: &[u32]) -> Vec<serde_json::Value> {
    let pods: Vec<Child> = shards.iter().map(|&i| pod(w, manifest, i, &[])).collect();
    let mut out = Vec::new();
    for (p, i) in pods.into_iter().zip(shards) {
        let o = wait(p).await;
        assert_eq!(o.status.code(), Some(0), "shard {i}: {}", stderr(&o));
        let s = summary(&o);
        assert_eq!(s["shard"].as_u64(), Some(*i as u64), "{s}");
        out.push(s);
    }
    out
}

/// The destination holds exactly `data`: its bytes as the simulator serves them, and the
/// simulator's own CRC-64 of them.
fn assert_identical(w: &World, key: &str, data: &[u8]) {
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, key)
        .expect("destination exists");
    assert_eq!(got.len(), data.len());
    assert!(got.as_ref() == data, "bytes differ");
    let (size, crc) = w.dst.object_crc64(DST_BUCKET, key).unwrap();
    assert_eq!((size, crc), (data.len() as u64, crc64::checksum(data)));
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

fn record_keys(w: &World) -> Vec<String> {
    w.dst
        .list_keys(DST_BUCKET)
        .into_iter()
        .filter(|k| k.contains(".ossrelay/records/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pods_relay_one_object_byte_identical() {
    let (w, data) = world(22 * MIB as usize + 4321, |_| {}).await;
    let p = plan(&w, "disk.raw").await;
    assert_eq!(p["parts"].as_u64(), Some(23));
    assert_eq!(p["shards"].as_u64(), Some(SHARDS as u64));
    let m = manifest_url("disk.raw");
    let shards = run_pods(&w, &m, &[0, 1, 2, 3]).await;
    let sent: u64 = shards.iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
    assert_eq!(sent, data.len() as u64);
    assert!(!record_keys(&w).is_empty(), "workers record their parts");
    // A pod run again after its shard is done exits 0 at once, sending nothing.
    let parts_before = count(&w.dst.stats(), "UploadPart", "200");
    let again = run_pods(&w, &m, &[2]).await;
    assert_eq!(again[0]["resumed_bytes"], again[0]["bytes"]);
    assert_eq!(count(&w.dst.stats(), "UploadPart", "200"), parts_before);

    let out = w.run(complete_args(&w, &m)).await;
    assert_eq!(out.status.code(), Some(0), "complete: {}", stderr(&out));
    let c = summary(&out);
    assert_eq!(
        c["crc64"].as_str(),
        Some(crc64::checksum(&data).to_string().as_str())
    );
    let proofs = c["verified_by"].to_string();
    for p in [
        "source_crc64ecma",
        "part_crc64ecma",
        "destination_crc64ecma",
    ] {
        assert!(proofs.contains(p), "{p} missing: {c}");
    }
    assert_eq!(c["end_to_end"].as_bool(), Some(true));
    assert_identical(&w, "disk.raw", &data);
    assert!(
        record_keys(&w).is_empty(),
        "records left: {:?}",
        record_keys(&w)
    );
    // Complete again, a late pod, a plan again: nothing to do, and they say so.
    let out = w.run(complete_args(&w, &m)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary(&out)["already_complete"].as_bool(), Some(true));
    let late = run_pods(&w, &m, &[1]).await;
    assert_eq!(late[0]["already_complete"].as_bool(), Some(true));
    assert_eq!(plan(&w, "disk.raw").await["complete"].as_bool(), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_killed_with_sigkill_is_rerun_alone_and_the_last_pod_completes() {
    let (w, data) = world(24 * MIB as usize, |_| {}).await;
    plan(&w, "disk.raw").await;
    let m = manifest_url("disk.raw");
    // Shard 1 is slow (a 2 MiB/s NIC): killed once some of its parts are recorded.
    let mut slow = pod(&w, &m, 1, &["--bandwidth", "2MiB/s", "--concurrency", "2"]);
    let t0 = Instant::now();
    while count(&w.dst.stats(), "UploadPart", "200") < 2 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.kill().expect("SIGKILL");
    let _ = slow.wait();
    w.wait_dst_quiet().await;
    run_pods(&w, &m, &[0, 2, 3]).await;
    // Complete now: shard 1 is missing and named.
    let out = w.run(complete_args(&w, &m)).await;
    assert_clean_failure(&out, 1, "rerun shard(s) 1 ");
    // Only index 1 again, completing when done (it is the last).
    let o = wait(pod(&w, &m, 1, &["--complete-when-done"])).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "worker and complete summaries: {lines:?}");
    assert!(
        lines[0]["resumed_bytes"].as_u64().unwrap() > 0,
        "recorded parts of the killed pod are kept: {}",
        lines[0]
    );
    assert_eq!(
        lines[1]["crc64"].as_str(),
        Some(crc64::checksum(&data).to_string().as_str())
    );
    assert_identical(&w, "disk.raw", &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_index_twice_at_once_is_harmless() {
    let (w, data) = world(16 * MIB as usize, |_| {}).await;
    plan(&w, "disk.raw").await;
    let m = manifest_url("disk.raw");
    // A replacement pod started before the old one ended: both run shard 2.
    let a = pod(&w, &m, 2, &[]);
    let b = pod(&w, &m, 2, &[]);
    let (a, b) = (wait(a).await, wait(b).await);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
    assert_eq!(summary(&a)["crc64"], summary(&b)["crc64"]);
    run_pods(&w, &m, &[0, 1, 3]).await;
    let out = w.run(complete_args(&w, &m)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_identical(&w, "disk.raw", &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_before_the_plan_and_a_missing_shard_say_what_to_do() {
    let (w, data) = world(8 * MIB as usize, |_| {}).await;
    let m = manifest_url("disk.raw");
    let o = wait(pod(&w, &m, 0, &[])).await;
    assert_clean_failure(&o, 1, "no manifest");
    assert!(stderr(&o).contains("--plan"), "{}", stderr(&o));
    // No index at all: a usage error naming the variable.
    let o = w.run(worker_args(&w, &m, &[])).await;
    assert_clean_failure(&o, 2, "JOB_COMPLETION_INDEX");

    plan(&w, "disk.raw").await;
    run_pods(&w, &m, &[0, 1, 3]).await;
    let out = w.run(complete_args(&w, &m)).await;
    assert_clean_failure(&out, 1, "rerun shard(s) 2 ");
    assert!(w.dst.get_object_bytes(DST_BUCKET, "disk.raw").is_none());
    // An index the plan does not have.
    let o = wait(pod(&w, &m, 4, &[])).await;
    assert_clean_failure(&o, 1, "has 4 shard(s)");
    run_pods(&w, &m, &[2]).await;
    let out = w.run(complete_args(&w, &m)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_identical(&w, "disk.raw", &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_overwritten_after_the_plan_fails_every_worker_and_complete() {
    let (w, _) = world(8 * MIB as usize, |_| {}).await;
    plan(&w, "disk.raw").await;
    let m = manifest_url("disk.raw");
    w.src.put_object_bytes(
        SRC_BUCKET,
        "disk.raw",
        Bytes::from(bytes(8 * MIB as usize, 7)),
    );
    let pods: Vec<Child> = (0..SHARDS).map(|i| pod(&w, &m, i, &[])).collect();
    for p in pods {
        let o = wait(p).await;
        assert_clean_failure(&o, 1, "changed");
    }
    let out = w.run(complete_args(&w, &m)).await;
    assert_clean_failure(&out, 1, "changed");
    assert!(w.dst.get_object_bytes(DST_BUCKET, "disk.raw").is_none());
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0), "aborted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_manifest_is_refused() {
    let (w, _) = world(4 * MIB as usize, |_| {}).await;
    plan(&w, "disk.raw").await;
    let other = plan(&w, "other.raw").await;
    let key = "disk.raw.ossrelay/manifest.json";
    let text =
        String::from_utf8(w.dst.get_object_bytes(DST_BUCKET, key).unwrap().to_vec()).unwrap();
    let mine: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The upload id of another object's upload.
    let forged = text.replace(
        mine["upload_id"].as_str().unwrap(),
        other["upload_id"].as_str().unwrap(),
    );
    assert_ne!(forged, text);
    w.dst
        .put_object_bytes(DST_BUCKET, key, Bytes::from(forged.into_bytes()));
    let m = manifest_url("disk.raw");
    let o = wait(pod(&w, &m, 0, &[])).await;
    assert_clean_failure(&o, 1, "cannot be used");
    let out = w.run(complete_args(&w, &m)).await;
    assert_clean_failure(&out, 1, "cannot be used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_destination_is_sharded_the_same_way() {
    // S3 takes parts of 5 MiB and more.
    let (w, data) = world(41 * MIB as usize, |c| c.dialect = ossrelay_sim::Dialect::S3).await;
    let aws = w.dir.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[dst]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            dst_account().access_key_id,
            dst_account().access_key_secret
        ),
    )
    .unwrap();
    std::fs::write(aws.join("config"), "").unwrap();
    let fix = |mut a: Vec<String>| -> Vec<String> {
        for s in a.iter_mut() {
            *s = s.replace(
                &format!("oss://{DST_BUCKET}"),
                &format!("s3://{DST_BUCKET}"),
            );
        }
        a
    };
    let run = |args: Vec<String>, index: Option<u32>| {
        let mut c = w.command(&fix(args));
        c.env("AWS_EC2_METADATA_DISABLED", "true");
        if let Some(i) = index {
            c.env("JOB_COMPLETION_INDEX", i.to_string());
        }
        c.spawn().unwrap()
    };
    let o = wait(run(
        plan_args(&w, "disk.raw", &["--part-size", "5MiB"]),
        None,
    ))
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = format!("s3://{DST_BUCKET}/disk.raw.ossrelay/manifest.json");
    assert_eq!(summary(&o)["manifest"].as_str(), Some(m.as_str()));
    let pods: Vec<Child> = (0..SHARDS)
        .map(|i| run(worker_args(&w, &m, &[]), Some(i)))
        .collect();
    for p in pods {
        let o = wait(p).await;
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let o = wait(run(complete_args(&w, &m), None)).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let c = summary(&o);
    assert_eq!(c["end_to_end"].as_bool(), Some(true), "{c}");
    let got = w.dst.get_object_bytes(DST_BUCKET, "disk.raw").unwrap();
    assert!(got.as_ref() == data.as_slice(), "bytes differ");
    let (_, nvme) = w.dst.object_crc64nvme(DST_BUCKET, "disk.raw").unwrap();
    assert_eq!(nvme, ossrelay::checksum::nvme::checksum(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_pod_with_130_and_what_cannot_be_sharded_is_refused() {
    let (w, data) = world(12 * MIB as usize, |_| {}).await;
    // --shards without --plan, and an archive that would be unpacked: usage errors.
    let mut a = w.copy_args("disk.raw", DST_BUCKET, "disk.raw");
    a.extend(["--shards".into(), "4".into()]);
    assert_clean_failure(&w.run(a).await, 2, "add --plan");
    w.src
        .put_object_bytes(SRC_BUCKET, "disk.raw.tar.gz", Bytes::from(vec![0u8; 1024]));
    let mut a = w.copy_args("disk.raw.tar.gz", DST_BUCKET, "disk.raw");
    a.extend(["--shards", "4", "--plan"].map(String::from));
    assert_clean_failure(&w.run(a).await, 2, "one sequential stream");
    // A conversion to a sparse format is one sequential stream too.
    let mut a = w.copy_args("disk.raw", DST_BUCKET, "disk.qcow2");
    a.extend(["--shards", "4", "--plan", "--format", "qcow2"].map(String::from));
    assert_clean_failure(&w.run(a).await, 2, "one sequential stream");

    // A pod told to stop (node drain): in-flight parts finish, exit 130, a rerun resumes.
    plan(&w, "disk.raw").await;
    let m = manifest_url("disk.raw");
    let slow = pod(&w, &m, 0, &["--bandwidth", "1MiB/s", "--concurrency", "1"]);
    let t0 = Instant::now();
    while count(&w.dst.stats(), "UploadPart", "200") < 1 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = slow.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let o = wait(slow).await;
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("rerun the same command"),
        "{}",
        stderr(&o)
    );
    let again = run_pods(&w, &m, &[0, 1, 2, 3]).await;
    assert!(
        again[0]["resumed_bytes"].as_u64().unwrap() > 0,
        "{}",
        again[0]
    );
    let out = w.run(complete_args(&w, &m)).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_identical(&w, "disk.raw", &data);
}
