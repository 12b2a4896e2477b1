//! End-to-end `ossrelay copy` between two simulated regions with different accounts.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ossrelay::crc64;

const MIB: u64 = 1024 * 1024;

async fn copy_real_object(size: usize, part_size: &str) {
    let w = World::new(|_| {}, |_| {}).await;
    let data = bytes(size, size as u64 + 7);
    w.src
        .put_object_bytes(SRC_BUCKET, "obj", Bytes::from(data.clone()));
    let mut args = w.copy_args("obj", DST_BUCKET, "copy/obj");
    args.extend(["--json".into(), "--part-size".into(), part_size.into()]);
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "size {size}: {}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["bytes"].as_u64(), Some(size as u64));
    assert_eq!(
        s["crc64"].as_str(),
        Some(crc64::checksum(&data).to_string().as_str())
    );
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, "copy/obj")
        .expect("destination exists");
    assert_eq!(got.len(), size, "size {size}");
    assert!(
        got.as_ref() == data.as_slice(),
        "bytes differ for size {size}"
    );
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
    // OSS to OSS: the source's CRC-64 and the destination's echo of every part (or of the
    // single PUT) and of the whole object prove the copy.
    let proofs: Vec<&str> = s["verified_by"]
        .as_array()
        .unwrap_or_else(|| panic!("no verified_by: {s}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        proofs.contains(&"source_crc64ecma"),
        "size {size}: {proofs:?}"
    );
    let multipart = s["parts"].as_u64() != Some(0);
    assert!(
        proofs.contains(&"destination_crc64ecma"),
        "size {size}: {proofs:?}"
    );
    if multipart {
        assert!(
            proofs.contains(&"part_crc64ecma"),
            "size {size}: {proofs:?}"
        );
    }
    assert_eq!(s["end_to_end"].as_bool(), Some(true), "{s}");
    // Metadata travels: the simulator default content type is kept on both sides.
    for key in [
        "source",
        "destination",
        "seconds",
        "throughput_bytes_per_sec",
        "parts",
        "part_size",
        "retries",
        "resumed_bytes",
    ] {
        assert!(s.get(key).is_some(), "summary lacks {key}: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_around_part_boundaries_are_byte_identical() {
    for size in [
        0usize,
        1,
        100 * 1024 - 1,
        MIB as usize,
        MIB as usize + 1,
        3 * MIB as usize + 12345,
    ] {
        copy_real_object(size, "1MiB").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_size_is_raised_to_stay_under_ten_thousand_parts() {
    // 10,001 parts of 100 KiB do not fit: the planner must raise the part size to a whole MiB.
    let size = 10_001 * 100 * 1024u64;
    let w = World::new(
        |c| {
            c.synthetic.push(ossrelay_sim::SyntheticObject {
                bucket: SRC_BUCKET.into(),
                key: "big.raw".into(),
                size,
            })
        },
        |_| {},
    )
    .await;
    let mut args = w.copy_args("big.raw", DISCARD_BUCKET, "big.raw");
    args.extend(["--json".into(), "--part-size".into(), "100KiB".into()]);
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["part_size"].as_u64(), Some(MIB));
    assert_eq!(s["parts"].as_u64(), Some(size.div_ceil(MIB)));
    let src = w.src.object_crc64(SRC_BUCKET, "big.raw").unwrap();
    let dst = w.dst.object_crc64(DISCARD_BUCKET, "big.raw").unwrap();
    assert_eq!(src, dst, "simulators disagree on (size, crc)");
    assert_eq!(s["crc64"].as_str(), Some(src.1.to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_rerun_resends_only_parts_in_flight() {
    let size = 192 * MIB;
    let part = 4 * MIB;
    let concurrency = 4u64;
    let w = World::with_disk(
        size,
        // ~4 × 24 MiB/s: the copy takes a few seconds, long enough to kill it mid-way.
        |c| c.conn_rate = Some(24 * MIB),
    )
    .await;
    let mut args = w.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
    args.extend([
        "--json".into(),
        "--part-size".into(),
        "4MiB".into(),
        "--concurrency".into(),
        concurrency.to_string(),
    ]);
    let mut child = w.command(&args).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        let done = count(&w.dst.stats(), "UploadPart", "200");
        if done >= 12 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "copy made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    w.wait_dst_quiet().await;
    let before = w.dst.stats();
    let acked_before = count(&before, "UploadPart", "200");
    assert!(
        acked_before * part < size,
        "the copy finished before the kill"
    );

    let out = w.run(args.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    // Parts the server acknowledged but whose acks were not yet saved count as in flight.
    // The scheduler's bound (issue #19): attempts under way plus unsaved acks stay below
    // 2 × --concurrency, since a part all sent awaits its ack without a slot; here a 4 MiB
    // body fits in loopback socket buffers, so parts the paced simulator is still reading
    // already count as sent.
    let resumed = s["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= acked_before.saturating_sub(2 * concurrency) * part,
        "{s}"
    );
    let after = w.dst.stats();
    let total_in = after["bytes_in"].as_u64().unwrap();
    // `bytes_in` also counts the small XML bodies (InitiateMultipartUpload, Complete...).
    let xml_slack = 64 * 1024;
    let hedged = s["hedged_parts"].as_u64().unwrap();
    assert!(
        total_in <= size + (2 * concurrency + hedged) * part + xml_slack,
        "re-sent too much: {total_in} bytes received for a {size}-byte object"
    );
    let src = w.src.object_crc64(SRC_BUCKET, "disk.raw").unwrap();
    assert_eq!(w.dst.object_crc64(DISCARD_BUCKET, "disk.raw"), Some(src));
    assert_eq!(after["open_uploads"].as_u64(), Some(0));
}

/// A 400 ms round trip before every destination answer and 1 MiB parts (~30 ms of body
/// each): most parts in flight are all sent and await their acknowledgement, holding no slot.
/// A kill -9 then loses only acknowledgements not yet recorded, within the documented bound
/// (attempts under way plus unsaved acks < 2 × --concurrency); the rerun re-sends exactly the
/// parts that were not recorded and no recorded one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_many_parts_awaiting_acknowledgement_resends_only_unrecorded_ones() {
    let size = 96 * MIB;
    let part = MIB;
    let parts = size / part;
    let concurrency = 4u64;
    let w = World::with_disk(size, |c| {
        c.conn_rate = Some(32 * MIB);
        c.latency = Duration::from_millis(400);
    })
    .await;
    let mut args = w.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
    args.extend([
        "--json".into(),
        "--part-size".into(),
        "1MiB".into(),
        "--concurrency".into(),
        concurrency.to_string(),
    ]);
    let mut child = w.command(&args).spawn().unwrap();
    w.wait_for_parts(16).await;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    w.wait_dst_quiet().await;
    let before = w.dst.stats();
    let acked_before = count(&before, "UploadPart", "200");
    assert!(acked_before < parts, "the copy finished before the kill");

    let out = w.run(args.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    let resumed_parts = s["resumed_bytes"].as_u64().unwrap() / part;
    let after = w.dst.stats();
    let resent = count(&after, "UploadPart", "200") - acked_before;
    let hedged = s["hedged_parts"].as_u64().unwrap();
    assert_eq!(
        resent,
        parts - resumed_parts + hedged,
        "the rerun sends exactly the parts not recorded: {s}"
    );
    assert!(
        acked_before - resumed_parts <= 2 * concurrency,
        "{} acknowledged parts were lost (bound: 2 x {concurrency}): {s}",
        acked_before - resumed_parts
    );
    let src = w.src.object_crc64(SRC_BUCKET, "disk.raw").unwrap();
    assert_eq!(w.dst.object_crc64(DISCARD_BUCKET, "disk.raw"), Some(src));
    assert_eq!(after["open_uploads"].as_u64(), Some(0));
}

/// A storm of stalled GETs (15 % of them never send a byte): hedging never exceeds
/// `--max-hedges`, and every copy completes, proven. Three rounds, one fault seed each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_stays_within_max_hedges_under_a_stall_storm() {
    let size = 32 * MIB;
    for seed in 1..=3u64 {
        let w = World::new(
            |c| {
                c.synthetic.push(ossrelay_sim::SyntheticObject {
                    bucket: SRC_BUCKET.into(),
                    key: "disk.raw".into(),
                    size,
                });
                c.faults.push((ossrelay_sim::FaultKind::Stall, 0.15));
                c.fault_ops = Some(vec!["GetObject".into()]);
                c.fault_seed = seed;
            },
            |_| {},
        )
        .await;
        let mut args = w.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
        args.extend(
            [
                "--json",
                "--part-size",
                "1MiB",
                "--concurrency",
                "4",
                "--max-hedges",
                "2",
                "--stall-timeout",
                "1",
            ]
            .map(String::from),
        );
        let out = w.run(args).await;
        assert_eq!(out.status.code(), Some(0), "seed {seed}: {}", stderr(&out));
        let s = summary(&out);
        let hedged = s["hedged_parts"].as_u64().unwrap();
        assert!(
            hedged <= 2,
            "seed {seed}: {hedged} hedges with --max-hedges 2"
        );
        let src = w.src.object_crc64(SRC_BUCKET, "disk.raw").unwrap();
        assert_eq!(w.dst.object_crc64(DISCARD_BUCKET, "disk.raw"), Some(src));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_130_and_rerun_completes() {
    let size = 128 * MIB;
    let w = World::with_disk(size, |c| c.conn_rate = Some(16 * MIB)).await;
    let mut args = w.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
    args.extend([
        "--json".into(),
        "--part-size".into(),
        "4MiB".into(),
        "--concurrency".into(),
        "4".into(),
    ]);
    let child = w.command(&args).spawn().unwrap();
    w.wait_for_parts(4).await;
    let pid = child.id() as i32;
    // SAFETY-free: plain kill(2) through the shell utility keeps the test free of libc.
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("rerun"), "{}", stderr(&out));
    assert_eq!(
        w.dst.stats()["open_uploads"].as_u64(),
        Some(1),
        "upload kept for resume"
    );

    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(summary(&out)["resumed_bytes"].as_u64().unwrap() > 0);
    let src = w.src.object_crc64(SRC_BUCKET, "disk.raw").unwrap();
    assert_eq!(w.dst.object_crc64(DISCARD_BUCKET, "disk.raw"), Some(src));
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_overwritten_mid_copy_fails_and_leaves_nothing() {
    let size = 96 * MIB;
    let w = World::with_disk(size, |c| c.conn_rate = Some(16 * MIB)).await;
    let mut args = w.copy_args("disk.raw", DST_BUCKET, "disk.raw");
    args.extend([
        "--part-size".into(),
        "4MiB".into(),
        "--concurrency".into(),
        "4".into(),
    ]);
    let child = w.command(&args).spawn().unwrap();
    w.wait_for_parts(2).await;
    w.src
        .put_object_bytes(SRC_BUCKET, "disk.raw", Bytes::from(bytes(4096, 1)));
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_clean_failure(&out, 1, "changed");
    assert_eq!(
        w.dst.object_crc64(DST_BUCKET, "disk.raw"),
        None,
        "no destination object"
    );
    assert_eq!(
        w.dst.stats()["open_uploads"].as_u64(),
        Some(0),
        "upload aborted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_a_few_percent_are_survived_and_verified() {
    use ossrelay_sim::FaultKind;
    let size = 48 * MIB;
    for kind in [
        FaultKind::Error500,
        FaultKind::Slowdown,
        FaultKind::Reset,
        FaultKind::Truncate,
        FaultKind::Corrupt,
    ] {
        let w = World::new(
            |c| {
                c.synthetic.push(ossrelay_sim::SyntheticObject {
                    bucket: SRC_BUCKET.into(),
                    key: "disk.raw".into(),
                    size,
                });
                c.faults = vec![(kind, 0.08)];
                c.fault_seed = 7;
            },
            |c| {
                c.faults = vec![(kind, 0.04)];
                c.fault_seed = 11;
            },
        )
        .await;
        let mut args = w.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
        args.extend(["--json".into(), "--part-size".into(), "1MiB".into()]);
        let out = w.run(args).await;
        assert_eq!(out.status.code(), Some(0), "{kind:?}: {}", stderr(&out));
        let s = summary(&out);
        assert!(
            s["retries"].as_u64().unwrap() > 0,
            "{kind:?} injected no retry? {s}"
        );
        let src = w.src.object_crc64(SRC_BUCKET, "disk.raw").unwrap();
        assert_eq!(
            w.dst.object_crc64(DISCARD_BUCKET, "disk.raw"),
            Some(src),
            "{kind:?}"
        );
        assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0), "{kind:?}");
    }
}

// Bad inputs (missing objects and buckets, wrong secrets, other accounts, unknown profiles,
// usage errors, wrong regions, ...) are rows of the table in tests/bad_inputs.rs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_round_trip() {
    let w = World::new(|_| {}, |_| {}).await;
    let data = bytes(5 * MIB as usize + 333, 9);
    let local = w.dir.path().join("disk.raw");
    std::fs::write(&local, &data).unwrap();
    // Local → OSS.
    let args: Vec<String> = vec![
        "copy".into(),
        local.display().to_string(),
        format!("oss://{DST_BUCKET}/up/disk.raw"),
        "--dst-endpoint".into(),
        w.dst.endpoint(),
        "--dst-region".into(),
        DST_REGION.into(),
        "--dst-profile".into(),
        "dst".into(),
        "--part-size".into(),
        "1MiB".into(),
        "--state-dir".into(),
        w.state_dir().display().to_string(),
        "--json".into(),
    ];
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        w.dst
            .get_object_bytes(DST_BUCKET, "up/disk.raw")
            .unwrap()
            .as_ref(),
        data.as_slice()
    );
    // OSS → local.
    let back = w.dir.path().join("back.raw");
    let args: Vec<String> = vec![
        "copy".into(),
        format!("oss://{DST_BUCKET}/up/disk.raw"),
        back.display().to_string(),
        "--src-endpoint".into(),
        w.dst.endpoint(),
        "--src-region".into(),
        DST_REGION.into(),
        "--src-profile".into(),
        "dst".into(),
        "--part-size".into(),
        "1MiB".into(),
        "--state-dir".into(),
        w.state_dir().display().to_string(),
        "--json".into(),
    ];
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    assert_eq!(
        summary(&out)["crc64"].as_str(),
        Some(crc64::checksum(&data).to_string().as_str())
    );
}
