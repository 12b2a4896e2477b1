//! `ossrelay migrate` beyond the happy path: a destination reached through a RamRoleArn
//! profile whose STS credentials expire mid-run, kill -9 at every stage then resume, corrupted
//! relays, and user errors (unknown image, wrong region, unsupported format).

mod common;

use std::time::{Duration, Instant};

use common::*;
use ossrelay_sim::{FaultKind, SimConfig, SimImage, SimRole};

const IMAGE: &str = "m-src0002";
/// Enough data that the throttled relay outlives a few STS credential lifetimes.
const BIG: u64 = 6 << 20;
const SMALL: u64 = (1 << 20) + 512;
const MIGRATOR_ROLE: &str = "image-migrator";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn src_side(size: u64, task: Duration) -> impl FnOnce(&mut SimConfig) {
    move |c: &mut SimConfig| {
        let mut img = SimImage::new(IMAGE, size, &src_account().name);
        img.name = "db-server".into();
        c.images.push(img);
        c.roles.push(SimRole {
            account: src_account().name,
            name: "AliyunECSImageExportDefaultRole".into(),
            trusted: "ecs".into(),
        });
        c.task_duration = task;
    }
}

fn dst_side(task: Duration) -> impl FnOnce(&mut SimConfig) {
    move |c: &mut SimConfig| {
        c.roles.push(SimRole {
            account: dst_account().name,
            name: "AliyunECSImageImportDefaultRole".into(),
            trusted: "ecs".into(),
        });
        c.task_duration = task;
    }
}

fn migrate_args(w: &World, dst_profile: &str) -> Vec<String> {
    let mut a = w.migrate_args(IMAGE, dst_profile);
    a.extend(["--role-retries".into(), "1".into()]);
    a
}

fn assert_imported_identical(w: &World, out: &std::process::Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let sum = summary(out);
    let id = sum["image_id"].as_str().expect("image_id").to_string();
    let src = w.src.image_crc64(IMAGE).expect("source image");
    assert_eq!(w.dst.image_crc64(&id), Some(src), "{sum}");
    assert_eq!(w.dst.image(&id).unwrap()["Status"], "Available");
    assert!(!err.contains("SECRET-do-not-leak"), "{err}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_role_arn_destination_survives_expiring_sts_credentials() {
    let w = World::new(src_side(BIG, Duration::from_millis(300)), |c| {
        dst_side(Duration::from_secs(4))(c);
        c.roles.push(SimRole {
            account: dst_account().name,
            name: MIGRATOR_ROLE.into(),
            trusted: src_account().name,
        });
        c.sts_ttl = Some(Duration::from_secs(3));
        // ~1 MiB/s per connection: the relay of 6 MiB takes several seconds.
        c.conn_rate = Some(1 << 20);
    })
    .await;
    w.add_role_profile(MIGRATOR_ROLE);
    let mut args = migrate_args(&w, "dst-role");
    args.extend(s(&["--concurrency", "2", "--part-size", "1MiB"]));
    let t0 = Instant::now();
    let out = w.run(args).await;
    assert_imported_identical(&w, &out);
    // The run outlived several credential lifetimes, so AssumeRole was called again.
    assert!(t0.elapsed() > Duration::from_secs(6), "{:?}", t0.elapsed());
    let stats = w.dst.stats();
    assert!(count(&stats, "AssumeRole", "200") >= 2, "{stats}");
    assert_eq!(count_all(&stats, "ImportImage"), 1, "{stats}");
    // Nothing was refused for expired credentials along the way.
    let refused: u64 = ["UploadPart", "CompleteMultipartUpload", "DescribeImages"]
        .iter()
        .map(|op| count(&stats, op, "403"))
        .sum();
    assert_eq!(refused, 0, "{stats}");
}

/// Waits until the migration state file records `stage`.
async fn wait_stage(w: &World, stage: &str, child: &mut std::process::Child) {
    let needle = format!("\"stage\": \"{stage}\"");
    let t0 = Instant::now();
    loop {
        // The state file itself, not a temp file an atomic write has not renamed yet: a
        // kill -9 then leaves the stage before it.
        let seen = std::fs::read_dir(w.state_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .any(|t| t.contains(&needle));
        if seen {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("migrate exited ({st}) before reaching stage {stage}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never reached {stage}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kill9(child: &mut std::process::Child) {
    let st = std::process::Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let st = child.wait().unwrap();
    assert_eq!(st.code(), None, "killed by a signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_every_stage_then_rerun_completes_without_repeating_stages() {
    let w = World::new(src_side(BIG, Duration::from_secs(2)), |c| {
        dst_side(Duration::from_secs(2))(c);
        c.conn_rate = Some(1 << 20);
    })
    .await;
    let mut args = migrate_args(&w, "dst");
    args.extend(s(&["--concurrency", "2", "--part-size", "1MiB"]));

    let mut child = w.command(&args).spawn().unwrap();
    wait_stage(&w, "wait-export", &mut child).await;
    kill9(&mut child);
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);

    let mut child = w.command(&args).spawn().unwrap();
    wait_stage(&w, "relay", &mut child).await;
    // Let some parts land so the rerun has a partial upload to resume.
    w.wait_for_parts(1).await;
    kill9(&mut child);
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), 0);

    let mut child = w.command(&args).spawn().unwrap();
    wait_stage(&w, "wait-import", &mut child).await;
    kill9(&mut child);
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), 1);

    let out = w.run(args.clone()).await;
    assert_imported_identical(&w, &out);
    let err = stderr(&out);
    assert!(err.contains("resuming at stage wait-import"), "{err}");
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), 1);
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_source_reads_fail_the_relay_and_never_import() {
    let w = World::new(
        |c| {
            src_side(SMALL, Duration::from_millis(200))(c);
            c.faults.push((FaultKind::Corrupt, 1.0));
            c.fault_ops = Some(vec!["GetObject".into()]);
        },
        dst_side(Duration::from_millis(200)),
    )
    .await;
    let out = w.run(migrate_args(&w, "dst")).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("CRC-64 mismatch"), "{err}");
    assert!(
        errors[0].contains("ossrelay_m-src0002_system.raw.tar.gz"),
        "{err}"
    );
    // The partial destination was removed: no half-written disk is left to import.
    let key = format!("ossrelay_{IMAGE}_system.raw");
    assert!(w.dst.get_object_bytes(DST_BUCKET, &key).is_none());
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_object_tampered_before_import_is_never_imported() {
    // Export and relay, then stop at the import (the destination refuses to start it once).
    let w = World::new(src_side(SMALL, Duration::from_millis(200)), |c| {
        dst_side(Duration::from_millis(200))(c);
        c.rpc_faults.push(ossrelay_sim::RpcFault {
            action: "ImportImage".into(),
            code: "InvalidParameter".into(),
            status: 400,
            count: 1,
        });
    })
    .await;
    let args = migrate_args(&w, "dst");
    let out = w.run(args.clone()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Someone rewrites the relayed disk in the destination bucket.
    let key = format!("ossrelay_{IMAGE}_system.raw");
    let mut data = w
        .dst
        .get_object_bytes(DST_BUCKET, &key)
        .expect("relayed disk")
        .to_vec();
    data[4096] ^= 0x40;
    w.dst
        .put_object_bytes(DST_BUCKET, &key, bytes::Bytes::from(data));

    let out = w.run(args.clone()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&key), "{err}");
    assert!(err.contains("changed after the relay"), "{err}");
    let stats = w.dst.stats();
    assert_eq!(count(&stats, "ImportImage", "200"), 0, "{stats}");

    // The rerun relays the disk again and imports the source's bytes.
    let out = w.run(args).await;
    assert_imported_identical(&w, &out);
    assert_eq!(count(&w.dst.stats(), "ImportImage", "200"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_one_clean_line() {
    let w = World::new(
        src_side(SMALL, Duration::from_millis(200)),
        dst_side(Duration::from_millis(200)),
    )
    .await;
    // Unknown image.
    let mut args = migrate_args(&w, "dst");
    let i = args.iter().position(|a| a == "--image-id").unwrap();
    args[i + 1] = "m-nosuchimage".into();
    let out = w.run(args).await;
    assert_clean_failure(&out, 1, "m-nosuchimage");
    assert_eq!(count(&w.src.stats(), "ExportImage", "200"), 0);

    // The source image asked for in a region whose endpoint serves another.
    let mut args = migrate_args(&w, "dst");
    let i = args.iter().position(|a| a == "--src-region").unwrap();
    args[i + 1] = "ap-southeast-1".into();
    let out = w.run(args).await;
    assert_clean_failure(&out, 1, "ap-southeast-1");
    assert_eq!(count(&w.src.stats(), "ExportImage", "200"), 0);

    // A format this region cannot export.
    let mut args = migrate_args(&w, "dst");
    args.extend(s(&["--format", "qcow2"]));
    let out = w.run(args).await;
    assert_clean_failure(&out, 1, "InvalidImageFormat.RegionNotSupported");
    assert_eq!(count(&w.src.stats(), "ExportImage", "200"), 0);

    // A format nobody knows is a usage error.
    let mut args = migrate_args(&w, "dst");
    args.extend(s(&["--format", "iso"]));
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    // Only the refused qcow2 request ever reached ExportImage.
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);
}
