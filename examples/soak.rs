//! Soak run (not in CI; `scripts/soak` builds and starts it): one big synthetic object relayed
//! by the real `ossrelay copy` binary between two simulated regions, through the WAN model
//! (per-connection bandwidth cap and first-byte latency on the destination), with mixed faults
//! on downloads and uploads and short-lived STS credentials on the destination (RamRoleArn).
//!
//! Prints throughput over time, retries, injected faults, credential refreshes, peak RSS of the
//! copy process and the final verification (the destination's CRC-64, computed by the
//! simulator from the bytes it received, against the source's). Exit 0 only if verified.
//!
//! `cargo run --example soak -- [SIZE] [--faults PCT] [--sts-ttl SECS] [--conn-rate RATE]
//! [--latency MS] [--concurrency N] [--part-size SIZE] [--interval SECS] [--bin PATH]`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ossrelay_sim::{
    self as sim, FaultKind, SimAccount, SimBucket, SimConfig, SimRole, SyntheticObject,
};

const MIB: f64 = 1024.0 * 1024.0;

struct Opts {
    size: u64,
    faults_pct: f64,
    sts_ttl: u64,
    conn_rate: u64,
    latency_ms: u64,
    concurrency: u32,
    part_size: Option<String>,
    interval: u64,
    bin: PathBuf,
}

fn size_arg(s: &str) -> u64 {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim_end_matches("/s"))
        .unwrap_or_else(|e| die(&format!("bad size {s:?}: {e}")))
}

fn die(msg: &str) -> ! {
    eprintln!("soak: {msg}");
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        size: 100 << 30,
        faults_pct: 2.0,
        sts_ttl: 30,
        conn_rate: 16 << 20,
        latency_ms: 20,
        concurrency: 16,
        part_size: None,
        interval: 10,
        bin: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debug/ossrelay"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--faults" => o.faults_pct = val().parse().unwrap_or_else(|_| die("bad --faults")),
            "--sts-ttl" => o.sts_ttl = val().parse().unwrap_or_else(|_| die("bad --sts-ttl")),
            "--conn-rate" => o.conn_rate = size_arg(&val()),
            "--latency" => o.latency_ms = val().parse().unwrap_or_else(|_| die("bad --latency")),
            "--concurrency" => {
                o.concurrency = val().parse().unwrap_or_else(|_| die("bad --concurrency"))
            }
            "--part-size" => o.part_size = Some(val()),
            "--interval" => o.interval = val().parse().unwrap_or_else(|_| die("bad --interval")),
            "--bin" => o.bin = PathBuf::from(val()),
            s if !s.starts_with('-') => o.size = size_arg(s),
            other => die(&format!("unknown option {other}")),
        }
    }
    o
}

/// Every fault kind at an equal share of `pct` percent.
fn mixed(pct: f64) -> Vec<(FaultKind, f64)> {
    let each = pct / 100.0 / 6.0;
    [
        FaultKind::Error500,
        FaultKind::Slowdown,
        FaultKind::Reset,
        FaultKind::Truncate,
        FaultKind::Corrupt,
        FaultKind::Stall,
    ]
    .into_iter()
    .map(|k| (k, each))
    .collect()
}

fn account(name: &str, ak: &str, secret: &str) -> SimAccount {
    SimAccount {
        name: name.into(),
        access_key_id: ak.into(),
        access_key_secret: secret.into(),
    }
}

fn count(stats: &serde_json::Value, op: &str, status: &str) -> u64 {
    stats["requests"][op][status].as_u64().unwrap_or(0)
}

/// `VmHWM` (peak resident set) of a live process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = parse_opts();
    if !o.bin.exists() {
        die(&format!(
            "{} not found: build it first (cargo build --bin ossrelay) or pass --bin",
            o.bin.display()
        ));
    }
    let src_acc = account("1000000000000001", "LTAIsoakSource", "soak-source-secret");
    let dst_acc = account("2000000000000002", "LTAIsoakTarget", "soak-target-secret");
    let src = sim::start(SimConfig {
        region: "cn-hangzhou".into(),
        accounts: vec![src_acc.clone(), dst_acc.clone()],
        buckets: vec![SimBucket {
            name: "src-bucket".into(),
            account: src_acc.name.clone(),
        }],
        synthetic: vec![SyntheticObject {
            bucket: "src-bucket".into(),
            key: "disk.raw".into(),
            size: o.size,
        }],
        faults: mixed(o.faults_pct),
        fault_ops: Some(vec!["GetObject".into()]),
        fault_seed: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|e| die(&e.to_string()));
    let dst = sim::start(SimConfig {
        region: "eu-central-1".into(),
        accounts: vec![dst_acc.clone(), src_acc.clone()],
        buckets: vec![SimBucket {
            name: "dst-discard".into(),
            account: dst_acc.name.clone(),
        }],
        // 100 GiB cannot be kept: the destination checks the CRC-64 and drops the bytes.
        discard: vec!["dst-discard".into()],
        roles: vec![SimRole {
            account: dst_acc.name.clone(),
            name: "relay".into(),
            trusted: src_acc.name.clone(),
        }],
        sts_ttl: Some(Duration::from_secs(o.sts_ttl)),
        conn_rate: Some(o.conn_rate),
        latency: Duration::from_millis(o.latency_ms),
        faults: mixed(o.faults_pct),
        fault_ops: Some(vec!["UploadPart".into()]),
        fault_seed: 2,
        ..SimConfig::default()
    })
    .await
    .unwrap_or_else(|e| die(&e.to_string()));

    let dir = tempfile::tempdir().expect("temp dir");
    let config = serde_json::json!({
        "current": "src",
        "profiles": [
            {"name": "src", "mode": "AK", "access_key_id": src_acc.access_key_id,
             "access_key_secret": src_acc.access_key_secret, "region_id": "cn-hangzhou"},
            {"name": "dst-role", "mode": "RamRoleArn", "access_key_id": src_acc.access_key_id,
             "access_key_secret": src_acc.access_key_secret,
             "ram_role_arn": format!("acs:ram::{}:role/relay", dst_acc.name),
             "ram_session_name": "ossrelay-soak", "expired_seconds": 900,
             "region_id": "eu-central-1"}
        ]
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
    let mut args: Vec<String> = [
        "copy",
        "oss://src-bucket/disk.raw",
        "oss://dst-discard/disk.raw",
        "--src-region",
        "cn-hangzhou",
        "--dst-region",
        "eu-central-1",
        "--src-profile",
        "src",
        "--dst-profile",
        "dst-role",
        "--quiet",
        "--json",
        "--stall-timeout",
        "5",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "--src-endpoint".into(),
        src.endpoint(),
        "--dst-endpoint".into(),
        dst.endpoint(),
        "--state-dir".into(),
        dir.path().join("state").display().to_string(),
        "--concurrency".into(),
        o.concurrency.to_string(),
    ]);
    if let Some(p) = &o.part_size {
        args.extend(["--part-size".into(), p.clone()]);
    }
    println!(
        "soak: {:.1} GiB synthetic, WAN {} MiB/s x {} streams, {} ms latency, {}% mixed faults \
         (GETs and uploads), STS credentials living {} s",
        o.size as f64 / (MIB * 1024.0),
        o.conn_rate as f64 / MIB,
        o.concurrency,
        o.latency_ms,
        o.faults_pct,
        o.sts_ttl
    );
    let t0 = Instant::now();
    let mut child = Command::new(&o.bin)
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("ALIBABA_CLOUD_CONFIG_FILE", dir.path().join("config.json"))
        .env("ALIBABA_CLOUD_CREDENTIALS_FILE", dir.path().join("none"))
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("ALIBABA_CLOUD_STS_ENDPOINT", dst.endpoint())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot start {}: {e}", o.bin.display())));
    let pid = child.id();
    println!(
        "{:>7} {:>10} {:>11} {:>11} {:>8} {:>8} {:>7} {:>9}",
        "t(s)", "GiB", "MiB/s now", "MiB/s avg", "src err", "dst err", "STS", "peak RSS"
    );
    let mut peak = 0u64;
    let mut last = (0.0f64, 0u64);
    let status = loop {
        let step = Instant::now();
        while step.elapsed() < Duration::from_secs(o.interval) {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            peak = peak.max(peak_rss(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (s, d) = (src.stats(), dst.stats());
        let t = t0.elapsed().as_secs_f64();
        let bytes = d["bytes_in"].as_u64().unwrap_or(0);
        println!(
            "{:>7.0} {:>10.2} {:>11.1} {:>11.1} {:>8} {:>8} {:>7} {:>7.0}MiB",
            t,
            bytes as f64 / (MIB * 1024.0),
            (bytes - last.1) as f64 / MIB / (t - last.0).max(1e-3),
            bytes as f64 / MIB / t,
            ossrelay_sim::failed_requests(&s),
            ossrelay_sim::failed_requests(&d),
            count(&d, "AssumeRole", "200"),
            peak as f64 / MIB
        );
        last = (t, bytes);
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let wall = t0.elapsed().as_secs_f64();
    let (s, d) = (src.stats(), dst.stats());
    println!("--- result after {wall:.0} s: exit {:?}", status.code());
    if !stderr.trim().is_empty() {
        println!("stderr: {}", stderr.trim());
    }
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    println!(
        "bytes {} in {:.0} s = {:.1} MiB/s; retries {}; parts {} x {} MiB",
        summary["bytes"],
        summary["seconds"].as_f64().unwrap_or(0.0),
        summary["throughput_bytes_per_sec"].as_f64().unwrap_or(0.0) / MIB,
        summary["retries"],
        summary["parts"],
        summary["part_size"].as_u64().unwrap_or(0) / (1 << 20)
    );
    println!(
        "faults answered: source {} (GETs {}), destination {} (UploadPart {}); body faults \
         (truncate/corrupt/stall) show only in retries",
        ossrelay_sim::failed_requests(&s),
        s["requests"]["GetObject"],
        ossrelay_sim::failed_requests(&d),
        d["requests"]["UploadPart"],
    );
    println!(
        "STS AssumeRole calls {}; 403s on uploads {}; destination received {:.2} GiB for {:.2} GiB \
         ({:.2} % re-sent); source served {:.2} GiB",
        count(&d, "AssumeRole", "200"),
        count(&d, "UploadPart", "403"),
        d["bytes_in"].as_u64().unwrap_or(0) as f64 / (MIB * 1024.0),
        o.size as f64 / (MIB * 1024.0),
        (d["bytes_in"].as_u64().unwrap_or(0) as f64 / o.size as f64 - 1.0) * 100.0,
        s["bytes_out"].as_u64().unwrap_or(0) as f64 / (MIB * 1024.0),
    );
    println!("peak RSS of ossrelay copy: {:.0} MiB", peak as f64 / MIB);
    let want = src.object_crc64("src-bucket", "disk.raw");
    let got = dst.object_crc64("dst-discard", "disk.raw");
    let open = d["open_uploads"].as_u64().unwrap_or(u64::MAX);
    let ok = status.success() && want.is_some() && want == got && open == 0;
    println!(
        "verification: source (size, CRC-64) {:?}, destination {:?}, open uploads {open}: {}",
        want,
        got,
        if ok { "IDENTICAL" } else { "FAILED" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
