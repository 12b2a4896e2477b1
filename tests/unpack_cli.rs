//! End-to-end `ossrelay copy --unpack` between two simulated regions, with archives made by
//! GNU tar and gzip on the fly.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use ossrelay::crc64;

const MIB: usize = 1024 * 1024;

/// Writes `files` under `dir/payload` and returns `tar --format=gnu -cf - NAMES | gzip`.
fn gnu_archive(dir: &Path, files: &[(&str, &[u8])], names: &[&str]) -> Vec<u8> {
    let payload = dir.join("payload");
    let _ = std::fs::remove_dir_all(&payload);
    std::fs::create_dir_all(&payload).unwrap();
    for (name, data) in files {
        let p = payload.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --format=gnu -C '{}' -cf - {} | gzip -1 -c",
            payload.display(),
            names.join(" ")
        ))
        .output()
        .expect("run tar | gzip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A disk-like RAW: incompressible blocks between runs of zeros.
fn disk(len: usize, seed: u64) -> Vec<u8> {
    let mut d = bytes(len, seed);
    for (i, chunk) in d.chunks_mut(256 * 1024).enumerate() {
        if i % 3 != 0 {
            chunk.fill(0);
        }
    }
    d
}

fn with_unpack_args(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_multi_part_archives_unpack_byte_identical() {
    let w = World::new(|_| {}, |_| {}).await;
    for (len, seed) in [(1000usize, 1u64), (5 * MIB + 123, 2)] {
        let raw = disk(len, seed);
        let name = format!("exp_m-{seed}_system.raw");
        let archive = gnu_archive(w.dir.path(), &[(&name, &raw)], &[&name]);
        let key = format!("exports/{name}.tar.gz");
        w.src
            .put_object_bytes(SRC_BUCKET, &key, Bytes::from(archive.clone()));
        let args = with_unpack_args(
            w.copy_args(&key, DST_BUCKET, "raw/"),
            &["--json", "--part-size", "1MiB"],
        );
        let out = w.run(args).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let s = summary(&out);
        let dst_key = format!("raw/{name}");
        let got = w
            .dst
            .get_object_bytes(DST_BUCKET, &dst_key)
            .unwrap_or_else(|| panic!("{dst_key} missing; {s}"));
        assert!(got.as_ref() == raw.as_slice(), "RAW differs for {len}");
        assert_eq!(s["bytes"].as_u64(), Some(len as u64));
        assert_eq!(
            s["crc64"].as_str(),
            Some(crc64::checksum(&raw).to_string().as_str())
        );
        assert_eq!(s["source_bytes"].as_u64(), Some(archive.len() as u64));
        assert_eq!(
            s["source_crc64"].as_str(),
            Some(crc64::checksum(&archive).to_string().as_str())
        );
        assert_eq!(s["source_crc64_known"].as_bool(), Some(true));
        assert_eq!(s["member"].as_str(), Some(name.as_str()));
        assert_eq!(s["parts"].as_u64(), Some(len.div_ceil(MIB) as u64));
        assert_eq!(
            w.dst.object_crc64(DST_BUCKET, &dst_key),
            Some((len as u64, crc64::checksum(&raw)))
        );
    }
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_archives_fail_clearly_and_leave_nothing() {
    let w = World::new(|_| {}, |_| {}).await;
    let raw = bytes(2 * MIB, 3);
    let good = gnu_archive(w.dir.path(), &[("d_system.raw", &raw)], &["d_system.raw"]);
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x10;
    let truncated = good[..good.len() * 2 / 3].to_vec();
    let two = gnu_archive(
        w.dir.path(),
        &[("a.raw", &raw[..100_000]), ("b.raw", &raw[..5000])],
        &["a.raw", "b.raw"],
    );
    let with_dir = gnu_archive(w.dir.path(), &[("img/x.raw", &raw[..4096])], &["img"]);
    let cases: Vec<(&str, Vec<u8>, &[&str], &str)> = vec![
        ("corrupt.raw.tar.gz", corrupt, &[], "gzip"),
        ("truncated.raw.tar.gz", truncated, &[], "truncated"),
        ("two.tar.gz", two, &[], "more than one member"),
        ("dir.tgz", with_dir, &[], "directory"),
        (
            "plain.raw",
            raw.clone(),
            &["--unpack", "always"],
            "not a valid gzip",
        ),
    ];
    for (key, data, extra, needle) in cases {
        w.src.put_object_bytes(SRC_BUCKET, key, Bytes::from(data));
        let mut extra = extra.to_vec();
        extra.extend(["--part-size", "1MiB"]);
        let args = with_unpack_args(w.copy_args(key, DST_BUCKET, "out/disk.raw"), &extra);
        let out = w.run(args).await;
        assert_clean_failure(&out, 1, needle);
        assert!(
            w.dst.get_object_bytes(DST_BUCKET, "out/disk.raw").is_none(),
            "{key}: a destination object was left"
        );
        assert_eq!(
            w.dst.stats()["open_uploads"].as_u64(),
            Some(0),
            "{key}: an upload was left open"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(w.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(leftovers.is_empty(), "state left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpack_never_copies_the_archive_as_is() {
    let w = World::new(|_| {}, |_| {}).await;
    let raw = disk(300_000, 4);
    let archive = gnu_archive(w.dir.path(), &[("n.raw", &raw)], &["n.raw"]);
    w.src
        .put_object_bytes(SRC_BUCKET, "n.raw.tar.gz", Bytes::from(archive.clone()));
    let args = with_unpack_args(
        w.copy_args("n.raw.tar.gz", DST_BUCKET, "k/"),
        &["--unpack", "never"],
    );
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, "k/n.raw.tar.gz")
        .unwrap();
    assert!(got.as_ref() == archive.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_archive_to_oss_and_oss_archive_to_local_file() {
    let w = World::new(|_| {}, |_| {}).await;
    let raw = disk(3 * MIB + 999, 6);
    let archive = gnu_archive(w.dir.path(), &[("l_system.raw", &raw)], &["l_system.raw"]);
    let local = w.dir.path().join("l_system.raw.tar.gz");
    std::fs::write(&local, &archive).unwrap();
    // Local archive → OSS "directory".
    let mut args = w.copy_args("unused", DST_BUCKET, "from-local/");
    args[1] = local.display().to_string();
    args.extend(["--json".into(), "--part-size".into(), "1MiB".into()]);
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["source_crc64_known"].as_bool(), Some(false));
    assert_eq!(
        s["source_crc64"].as_str(),
        Some(crc64::checksum(&archive).to_string().as_str())
    );
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, "from-local/l_system.raw")
        .unwrap();
    assert!(got.as_ref() == raw.as_slice());

    // OSS archive → local directory.
    w.src
        .put_object_bytes(SRC_BUCKET, "e/l_system.raw.tar.gz", Bytes::from(archive));
    let outdir = w.dir.path().join("restore");
    std::fs::create_dir_all(&outdir).unwrap();
    let mut args = w.copy_args("e/l_system.raw.tar.gz", DST_BUCKET, "unused");
    args[2] = format!("{}/", outdir.display());
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = std::fs::read(outdir.join("l_system.raw")).unwrap();
    assert!(got == raw, "local RAW differs");
}

/// The recorded parts of the single state file in `dir`.
fn recorded_parts(dir: &Path) -> Vec<u64> {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    v["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_unpack_then_rerun_completes_without_resending_recorded_parts() {
    let len = 40 * MIB;
    let parts = (len / MIB) as u64;
    // ~4 × 4 MiB/s into the destination: a few seconds, long enough to kill it mid-way.
    let w = World::new(|_| {}, |c| c.conn_rate = Some(4 * MIB as u64)).await;
    let raw = bytes(len, 8);
    let archive = gnu_archive(w.dir.path(), &[("k_system.raw", &raw)], &["k_system.raw"]);
    w.src
        .put_object_bytes(SRC_BUCKET, "k_system.raw.tar.gz", Bytes::from(archive));
    let args = with_unpack_args(
        w.copy_args("k_system.raw.tar.gz", DST_BUCKET, "r/"),
        &["--json", "--part-size", "1MiB", "--concurrency", "4"],
    );
    let mut child = w.command(&args).spawn().unwrap();
    let t0 = Instant::now();
    while count(&w.dst.stats(), "UploadPart", "200") < 10 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    w.wait_dst_quiet().await;
    let before = count(&w.dst.stats(), "UploadPart", "200");
    assert!(before < parts, "the unpack finished before the kill");
    let recorded = recorded_parts(&w.state_dir());
    assert!(!recorded.is_empty(), "no part was recorded before the kill");

    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    let after = count(&w.dst.stats(), "UploadPart", "200");
    assert_eq!(
        after - before,
        parts - recorded.len() as u64,
        "the rerun must send exactly the parts not recorded ({recorded:?})"
    );
    assert_eq!(
        s["resumed_bytes"].as_u64(),
        Some(recorded.len() as u64 * MIB as u64)
    );
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, "r/k_system.raw")
        .unwrap();
    assert!(got.as_ref() == raw.as_slice(), "RAW differs after resume");
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_both_sides_are_retried_and_the_raw_is_verified() {
    use ossrelay_sim::FaultKind;
    let w = World::new(|_| {}, |_| {}).await;
    let faults = vec![
        (FaultKind::Error500, 0.03),
        (FaultKind::Slowdown, 0.03),
        (FaultKind::Reset, 0.03),
        (FaultKind::Truncate, 0.03),
    ];
    w.src.set_faults(faults.clone());
    w.dst.set_faults(faults);
    let raw = disk(6 * MIB + 7, 31);
    let archive = gnu_archive(w.dir.path(), &[("f_system.raw", &raw)], &["f_system.raw"]);
    w.src
        .put_object_bytes(SRC_BUCKET, "f_system.raw.tar.gz", Bytes::from(archive));
    // A small budget: many short ranges and 1 MiB parts, so faults hit both sides.
    let args = with_unpack_args(
        w.copy_args("f_system.raw.tar.gz", DST_BUCKET, "f/"),
        &["--json", "--part-size", "1MiB", "--memory", "8MiB"],
    );
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, "f/f_system.raw")
        .unwrap();
    assert!(got.as_ref() == raw.as_slice(), "RAW differs");
    assert_eq!(
        s["crc64"].as_str(),
        Some(crc64::checksum(&raw).to_string().as_str())
    );
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_unpack_exits_130_and_rerun_completes() {
    let len = 24 * MIB;
    let w = World::new(|_| {}, |c| c.conn_rate = Some(4 * MIB as u64)).await;
    let raw = bytes(len, 41);
    // POSIX (PAX) format this time: the reader must skip the extended header.
    let payload = w.dir.path().join("pax");
    std::fs::create_dir_all(&payload).unwrap();
    std::fs::write(payload.join("s_system.raw"), &raw).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --format=posix -C '{}' -cf - s_system.raw | gzip -1 -c",
            payload.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    w.src
        .put_object_bytes(SRC_BUCKET, "s_system.raw.tar.gz", Bytes::from(out.stdout));
    let args = with_unpack_args(
        w.copy_args("s_system.raw.tar.gz", DST_BUCKET, "s/"),
        &["--json", "--part-size", "1MiB", "--concurrency", "4"],
    );
    let child = w.command(&args).spawn().unwrap();
    let t0 = Instant::now();
    while count(&w.dst.stats(), "UploadPart", "200") < 4 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(
        w.dst.stats()["open_uploads"].as_u64(),
        Some(1),
        "upload kept for resume"
    );
    let recorded = recorded_parts(&w.state_dir());
    assert!(!recorded.is_empty());
    let before = count(&w.dst.stats(), "UploadPart", "200");

    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        s["resumed_bytes"].as_u64(),
        Some(recorded.len() as u64 * MIB as u64)
    );
    let after = count(&w.dst.stats(), "UploadPart", "200");
    assert_eq!(after - before, (len / MIB) as u64 - recorded.len() as u64);
    let got = w
        .dst
        .get_object_bytes(DST_BUCKET, "s/s_system.raw")
        .unwrap();
    assert!(got.as_ref() == raw.as_slice(), "RAW differs after resume");
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

/// #18 item 6: unpacking an archive onto itself is refused however the destination endpoint
/// is spelled; the old guard compared the endpoint strings, so `EP/` overwrote the source
/// archive with its own RAW.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpacking_an_archive_onto_itself_is_refused_under_any_spelling() {
    let w = World::new(|_| {}, |_| {}).await;
    let raw = disk(3 * MIB, 7);
    let archive = gnu_archive(w.dir.path(), &[("x.raw", &raw)], &["x.raw"]);
    w.src
        .put_object_bytes(SRC_BUCKET, "x.raw.tar.gz", Bytes::from(archive));
    let original = w.src.object_crc64(SRC_BUCKET, "x.raw.tar.gz").unwrap();
    let ep = w.src.endpoint();
    let port = ep.rsplit(':').next().unwrap().to_string();
    let object = format!("oss://{SRC_BUCKET}/x.raw.tar.gz");
    let (slash, localhost, upper) = (
        format!("{ep}/"),
        format!("http://localhost:{port}"),
        format!("HTTP://LOCALHOST:{port}/"),
    );
    let spellings: [(&str, &[&str]); 5] = [
        ("trailing /", &[&slash, "--dst-region", SRC_REGION]),
        ("localhost", &[&localhost, "--dst-region", SRC_REGION]),
        (
            "scheme and host case",
            &[&upper, "--dst-region", SRC_REGION],
        ),
        // The profile's region, named on one side only.
        ("region from the profile", &[&ep]),
        ("explicit region", &[&ep, "--dst-region", "oss-cn-hangzhou"]),
    ];
    for (what, dst) in spellings {
        let mut args: Vec<String> = [
            "copy",
            &object,
            &object,
            "--src-endpoint",
            &ep,
            "--src-region",
            SRC_REGION,
            "--src-profile",
            "src",
            "--dst-profile",
            "src",
            "--unpack",
            "always",
            "--quiet",
            "--state-dir",
            &w.state_dir().display().to_string(),
            "--dst-endpoint",
        ]
        .map(String::from)
        .to_vec();
        args.extend(dst.iter().map(|s| s.to_string()));
        let out = w.run(args).await;
        eprintln!("{what}: {}", stderr(&out));
        assert_clean_failure(&out, 2, "same object");
        assert_eq!(
            w.src.object_crc64(SRC_BUCKET, "x.raw.tar.gz"),
            Some(original),
            "{what}: the source archive was overwritten"
        );
    }
}
