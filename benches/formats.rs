//! `cargo bench --bench formats`: `copy --format raw|qcow2|vhd-dynamic` of one ECS-style
//! `.raw.tar.gz` (a disk with 5 % data: one incompressible MiB in every 20, zeros elsewhere)
//! into a destination behind the simulator's WAN model, in the same run: bytes uploaded, wall
//! time and peak RSS of each (issue #17).
//!
//! Targets: a sparse format uploads at most 1.05 × the data plus its metadata, and finishes at
//! least 3× sooner than RAW output; peak RSS stays within `--memory` (256 MiB default).
//! The disk is 64 GiB of RAW as the issue asks (`--size-gib N` for another size); `--quick`:
//! 1 GiB. The WAN: 16 MiB/s per connection, 20 ms before
//! each response's first byte, on the destination only (the export is read in-region).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ossrelay_sim::{self as sim, SimConfig};

mod common;
use common::{account, buckets, disk_archive, vm_hwm_kib};

const MIB: u64 = 1 << 20;

struct Run {
    secs: f64,
    uploaded: u64,
    peak_kib: u64,
    summary: serde_json::Value,
}

/// One `ossrelay copy --format FORMAT` as its own process (its RSS is its own).
fn relay(src: &str, dst: &str, format: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args([
            "copy",
            "oss://src/exports/bench_m-bench_system.raw.tar.gz",
            "oss://dst/images/",
            "--src-endpoint",
            src,
            "--dst-endpoint",
            dst,
            "--format",
            format,
            "--concurrency",
            "16",
            "--quiet",
            "--json",
            "--state-dir",
            &dir.path().display().to_string(),
        ])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "simak")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "simsecret")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ossrelay");
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        peak_kib = peak_kib.max(vm_hwm_kib(child.id()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "copy --format {format}: {err}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("JSON summary")).expect("JSON");
    Run {
        secs,
        uploaded: summary["bytes"].as_u64().unwrap_or(0),
        peak_kib,
        summary,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    let size_gib = args
        .iter()
        .position(|a| a == "--size-gib")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse::<u64>().expect("--size-gib takes a whole number"));
    let raw_mib = 1024 * size_gib.unwrap_or(if quick { 1 } else { 64 });
    let t = Instant::now();
    // 5 % data: one incompressible MiB in every 20.
    let (archive, data) = disk_archive("m-bench_system.raw", raw_mib, 20, 7, 16);
    println!(
        "archive: {raw_mib} MiB RAW with {} MiB of data -> {:.0} MiB gzip'd tar (built in {:.1}s)",
        data / MIB,
        archive.len() as f64 / MIB as f64,
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (src, dst) = rt.block_on(async {
        let src = sim::start(SimConfig {
            accounts: vec![account()],
            buckets: buckets(&["src"]),
            ..SimConfig::default()
        })
        .await
        .expect("start source simulator");
        let dst = sim::start(SimConfig {
            accounts: vec![account()],
            buckets: buckets(&["dst"]),
            discard: vec!["dst".into()],
            conn_rate: Some(16 * MIB),
            latency: Duration::from_millis(20),
            ..SimConfig::default()
        })
        .await
        .expect("start destination simulator");
        (src, dst)
    });
    src.put_object_bytes(
        "src",
        "exports/bench_m-bench_system.raw.tar.gz",
        Bytes::from(archive),
    );
    println!("| format | uploaded | ÷ data | wall | vs raw | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let mut raw_secs = f64::NAN;
    for format in ["raw", "qcow2", "vhd-dynamic"] {
        let r = relay(&src.endpoint(), &dst.endpoint(), format);
        if format == "raw" {
            raw_secs = r.secs;
        }
        println!(
            "| {format} | {:.1} MiB | {:.3} | {:.1} s | {:.1}× | {:.0} MiB |",
            r.uploaded as f64 / MIB as f64,
            r.uploaded as f64 / data as f64,
            r.secs,
            raw_secs / r.secs,
            r.peak_kib as f64 / 1024.0
        );
        if format != "raw" {
            assert_eq!(
                r.summary["raw_bytes"].as_u64(),
                Some(raw_mib * MIB),
                "{}",
                r.summary
            );
        }
    }
    println!(
        "targets: uploaded <= 1.05 x data + metadata; sparse formats >= 3x faster than raw \
         under the WAN model (16 x 16 MiB/s, 20 ms); peak RSS within --memory (256 MiB)"
    );
    rt.block_on(async {
        src.shutdown().await;
        dst.shutdown().await;
    });
}
