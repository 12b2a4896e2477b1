//! `cargo bench --bench crosscloud`: `ossrelay copy` across clouds against `rclone copyto`
//! between the same simulators, on loopback and under the WAN model, plus the cost of the
//! second CRC.
//!
//! Simulators (in this process): an S3 source and an OSS source, each holding one synthetic
//! `src/disk.raw`, an S3 destination and an OSS destination whose `dst` buckets discard what
//! they receive (after checking it), so no large file touches the disk. Every copy goes to a
//! fresh key, and the destination's record of it (size and, from an S3 source, the
//! whole-object CRC-64/NVME) is compared with the source before the figure counts.
//!
//! Contenders, each a child process timed from spawn to exit, peak RSS its `VmHWM` (polled
//! every 10 ms until `wait4` reaps it), CPU time from `wait4`'s rusage:
//! * `ossrelay copy s3://… s3://…` and `ossrelay copy oss://… s3://…` (16 streams, 256 MiB
//!   buffer budget, the default; 16 MiB parts with `--quick`, else automatic);
//! * `rclone copyto SRC:src/disk.raw DST:dst/KEY` s3 → s3, when `rclone` is on PATH (the bench
//!   says which version, or that it is skipped). rclone has no OSS-dialect backend (its s3
//!   backend needs OSS's S3-compatible mode, which the simulator's OSS dialect does not
//!   speak), so oss → s3 has no rclone row. Before the rounds of each network model every
//!   rclone variant in [`RCLONE_VARIANTS`] is run once on half the size, and the fastest
//!   is the one measured (`CROSSCLOUD_RCLONE_ARGS` replaces the sweep with one variant).
//!
//! Sections (`CROSSCLOUD_BENCH=loopback,wan,crc` runs a subset):
//! 1. loopback: no link model;
//! 2. wan: every simulator at `--conn-rate 16MiB/s --latency 20` (as `benches/relay.rs`);
//! 3. crc: the second CRC's cost: `ossrelay` oss → oss (CRC-64/XZ only) against oss → s3
//!    (XZ + CRC-64/NVME in the same pass) on loopback; CPU seconds per GiB of the copy
//!    process are printed beside the rates, as the load-independent view.
//!
//! Contenders alternate within a round (the order rotates each round) so they see the same
//! share of the machine's noise; `--rounds N` (default 3; 1 with `--quick`), medians and the
//! min–max spread are printed as a table. `--quick` copies 512 MiB instead of 2 GiB.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ossrelay_sim::{self as sim, Dialect, SimConfig, SimServer, SyntheticObject};

mod common;
use common::{account, buckets, median, vm_hwm_kib};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const S3_REGION: &str = "us-east-1";

/// rclone settings tried (all with `--transfers 16`, which a single object does not use).
/// `--multi-thread-streams` only applies to a local destination in rclone 1.60 (multi-thread
/// copies into S3 came with OpenChunkWriter in 1.64), but it is tried anyway.
const RCLONE_VARIANTS: &[(&str, &str)] = &[
    ("defaults", ""),
    (
        "chunk16M-up16",
        "--s3-chunk-size 16M --s3-upload-concurrency 16",
    ),
    (
        "chunk64M-up8",
        "--s3-chunk-size 64M --s3-upload-concurrency 8",
    ),
    (
        "chunk16M-up16-nocsum-mt16",
        "--s3-chunk-size 16M --s3-upload-concurrency 16 --s3-disable-checksum --multi-thread-streams 16 --buffer-size 64M",
    ),
];

struct Sims {
    s3_src: SimServer,
    oss_src: SimServer,
    s3_dst: SimServer,
    oss_dst: SimServer,
}

async fn start(dialect: Dialect, size: Option<u64>, wan: bool) -> SimServer {
    sim::start(SimConfig {
        accounts: vec![account()],
        buckets: buckets(&["src", "dst"]),
        // `half.raw` is what the rclone sweep copies.
        synthetic: size
            .map(|size| {
                [("disk.raw", size), ("half.raw", size / 2)].map(|(key, size)| SyntheticObject {
                    bucket: "src".into(),
                    key: key.into(),
                    size,
                })
            })
            .into_iter()
            .flatten()
            .collect(),
        discard: vec!["dst".into()],
        conn_rate: wan.then_some(16 * MIB),
        latency: Duration::from_millis(if wan { 20 } else { 0 }),
        dialect,
        region: match dialect {
            Dialect::S3 => S3_REGION.into(),
            Dialect::Oss => SimConfig::default().region,
        },
        ..SimConfig::default()
    })
    .await
    .expect("start simulator")
}

async fn sims(size: u64, wan: bool) -> Sims {
    Sims {
        s3_src: start(Dialect::S3, Some(size), wan).await,
        oss_src: start(Dialect::Oss, Some(size), wan).await,
        s3_dst: start(Dialect::S3, None, wan).await,
        oss_dst: start(Dialect::Oss, None, wan).await,
    }
}

impl Sims {
    async fn shutdown(self) {
        self.s3_src.shutdown().await;
        self.oss_src.shutdown().await;
        self.s3_dst.shutdown().await;
        self.oss_dst.shutdown().await;
    }
}

/// One measured copy.
#[derive(Clone, Copy)]
struct Run {
    /// Bytes per second, spawn to exit.
    rate: f64,
    /// Peak RSS in bytes.
    rss: u64,
    /// CPU seconds (user + system) of the child.
    cpu: f64,
}

/// Runs `cmd` to completion: wall time, peak RSS and CPU time of the child.
// The child is reaped by `wait4` (which also gives its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(mut cmd: Command, size: u64, what: &str) -> Run {
    // stderr into a file, shown if the copy fails (a pipe could fill and stall the child).
    let log = tempfile::tempfile().unwrap();
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id() as i32;
    let mut peak_kib = 0u64;
    let mut status = 0i32;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        peak_kib = peak_kib.max(vm_hwm_kib(pid as u32));
        // SAFETY: pid is our child, status and usage are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 {what}: {}", std::io::Error::last_os_error());
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = t.elapsed().as_secs_f64();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        use std::io::{Read, Seek};
        let mut log = log;
        let mut stderr = String::new();
        let _ = log.rewind();
        let _ = log.read_to_string(&mut stderr);
        panic!("{what} failed (wait status {status}): {stderr}");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Run {
        rate: size as f64 / secs,
        // Not `ru_maxrss`: the child's signal struct keeps the high-water mark of the mm it
        // was spawned from (this process, simulators included, through posix_spawn's shared
        // mm), so it reads as this process's RSS whenever that is the larger.
        rss: peak_kib * 1024,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
    }
}

/// `(url, flags)` of one side of an `ossrelay copy`.
fn side(sim: &SimServer, bucket_key: &str, prefix: &str) -> (String, Vec<String>) {
    let mut flags = vec![format!("--{prefix}-endpoint"), sim.endpoint()];
    let url = match sim.dialect() {
        Dialect::S3 => {
            flags.extend([format!("--{prefix}-region"), S3_REGION.into()]);
            format!("s3://{bucket_key}")
        }
        Dialect::Oss => format!("oss://{bucket_key}"),
    };
    (url, flags)
}

fn relay_copy(
    src: &SimServer,
    dst: &SimServer,
    key: &str,
    size: u64,
    part: Option<u64>,
    state: &Path,
) -> Run {
    let (src_url, src_flags) = side(src, "src/disk.raw", "src");
    let (dst_url, dst_flags) = side(dst, &format!("dst/{key}"), "dst");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossrelay"));
    cmd.args(["copy", &src_url, &dst_url])
        .args(src_flags)
        .args(dst_flags)
        .args(["--concurrency", "16", "--quiet", "--json", "--state-dir"])
        .arg(state.join(key));
    if let Some(p) = part {
        cmd.args(["--part-size", &p.to_string()]);
    }
    cmd.env("ALIBABA_CLOUD_ACCESS_KEY_ID", "simak")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "simsecret")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "simak")
        .env("AWS_SECRET_ACCESS_KEY", "simsecret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_SHARED_CREDENTIALS_FILE", state.join("none"))
        .env("AWS_CONFIG_FILE", state.join("none"));
    measure(cmd, size, "ossrelay copy")
}

#[allow(clippy::too_many_arguments)]
fn rclone(
    src: &SimServer,
    src_key: &str,
    dst: &SimServer,
    key: &str,
    size: u64,
    args: &str,
    cfg: &Path,
) -> Run {
    let mut cmd = Command::new("rclone");
    cmd.args([
        "copyto",
        &format!("SRC:src/{src_key}"),
        &format!("DST:dst/{key}"),
    ])
    .args(["-q", "--transfers", "16", "--s3-no-check-bucket"])
    .args(args.split_whitespace())
    .env("RCLONE_CONFIG", cfg)
    // A CA bundle in the environment makes rclone 1.60 refuse to build its S3 client
    // ("LoadCustomCABundleError: ... unsupported transport"); the endpoints are http.
    .env_remove("AWS_CA_BUNDLE");
    for (name, sim) in [("SRC", src), ("DST", dst)] {
        for (k, v) in [
            ("TYPE", "s3".to_string()),
            ("PROVIDER", "Other".into()),
            ("ENDPOINT", sim.endpoint()),
            ("FORCE_PATH_STYLE", "true".into()),
            ("ACCESS_KEY_ID", "simak".into()),
            ("SECRET_ACCESS_KEY", "simsecret".into()),
            ("REGION", S3_REGION.into()),
        ] {
            cmd.env(format!("RCLONE_CONFIG_{name}_{k}"), v);
        }
    }
    measure(cmd, size, "rclone copyto")
}

/// The destination received the whole object (from an S3 source: the same CRC-64/NVME).
fn check(src: &SimServer, src_key: &str, dst: &SimServer, key: &str, size: u64) {
    let got = match dst.dialect() {
        Dialect::S3 => dst.object_crc64nvme("dst", key).map(|(s, _)| s),
        Dialect::Oss => dst.object_crc64("dst", key).map(|(s, _)| s),
    };
    assert_eq!(got, Some(size), "destination dst/{key} missing or short");
    if src.dialect() == Dialect::S3 && dst.dialect() == Dialect::S3 {
        assert_eq!(
            dst.object_crc64nvme("dst", key),
            src.object_crc64nvme("src", src_key),
            "dst/{key}: CRC-64/NVME differs from the source"
        );
    }
}

fn rclone_version() -> Option<String> {
    let out = Command::new("rclone").arg("version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("rclone")
            .to_string()
    })
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One row of the table: a contender's runs in one section.
struct Row {
    section: &'static str,
    name: String,
    runs: Vec<Run>,
}

fn mb(v: f64) -> f64 {
    v / 1e6
}

fn print_table(rows: &[Row], size: u64) {
    let gib = size as f64 / GIB as f64;
    println!(
        "\n{:<9} {:<44} {:>8} {:>15} {:>9} {:>9}",
        "section", "contender", "MB/s", "min-max", "RSS MiB", "CPU s/GiB"
    );
    for r in rows {
        let rates: Vec<f64> = r.runs.iter().map(|x| x.rate).collect();
        let lo = rates.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().cloned().fold(0.0, f64::max);
        let rss: Vec<f64> = r.runs.iter().map(|x| x.rss as f64).collect();
        println!(
            "{:<9} {:<44} {:>8.0} {:>15} {:>9.1} {:>9.2}",
            r.section,
            r.name,
            mb(median(&rates)),
            format!("{:.0}-{:.0}", mb(lo), mb(hi)),
            median(&rss) / MIB as f64,
            median(&r.runs.iter().map(|x| x.cpu).collect::<Vec<_>>()) / gib,
        );
    }
}

fn find<'a>(rows: &'a [Row], section: &str, prefix: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.section == section && r.name.starts_with(prefix))
}

fn med(r: &Row, f: impl Fn(&Run) -> f64) -> f64 {
    median(&r.runs.iter().map(f).collect::<Vec<_>>())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 })
        .max(1);
    let only = std::env::var("CROSSCLOUD_BENCH").ok();
    let enabled = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == name))
    };
    let size = if quick { 512 * MIB } else { 2 * GIB };
    // Enough parts for 16 streams at the quick size; automatic (64 MiB) otherwise.
    let part = quick.then_some(16 * MIB);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cpus} CPUs, {}, load average {} (start); {} MiB per copy, {rounds} round(s)",
        std::env::consts::ARCH,
        load(),
        size / MIB
    );
    let rclone_ver = rclone_version();
    match &rclone_ver {
        Some(v) => println!("rclone: {v} (PATH)"),
        None => println!("rclone: not found on PATH, its rows are skipped (apt install rclone)"),
    }
    let forced = std::env::var("CROSSCLOUD_RCLONE_ARGS").ok();
    let variants: Vec<(String, String)> = match &forced {
        Some(a) => vec![("CROSSCLOUD_RCLONE_ARGS".into(), a.clone())],
        None => RCLONE_VARIANTS
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rclone_cfg = dir.path().join("rclone.conf");
    std::fs::write(&rclone_cfg, "").unwrap();
    let mut n = 0u64;
    let mut next_key = || {
        n += 1;
        format!("copy-{n}.raw")
    };
    let mut rows: Vec<Row> = Vec::new();

    for (section, wan) in [("loopback", false), ("wan", true)] {
        if !enabled(section) {
            continue;
        }
        let s = rt.block_on(sims(size, wan));
        // rclone: the sweep on half the size, then the fastest variant in the rounds. Both
        // sizes stay above rclone's 200 MiB upload cutoff: below it rclone sends one PutObject
        // with the source's ETag as Content-MD5, and a synthetic object's ETag is not an MD5.
        let best = rclone_ver.as_ref().map(|_| {
            let mut best: Option<(String, String, f64)> = None;
            for (name, a) in &variants {
                let key = next_key();
                let r = rclone(
                    &s.s3_src,
                    "half.raw",
                    &s.s3_dst,
                    &key,
                    size / 2,
                    a,
                    &rclone_cfg,
                );
                check(&s.s3_src, "half.raw", &s.s3_dst, &key, size / 2);
                println!(
                    "{section}: rclone sweep {name:<28} {:>6.0} MB/s, peak RSS {:>6.1} MiB  [{a}]",
                    mb(r.rate),
                    r.rss as f64 / MIB as f64
                );
                if best.as_ref().is_none_or(|b| r.rate > b.2) {
                    best = Some((name.clone(), a.clone(), r.rate));
                }
            }
            let (name, a, _) = best.unwrap();
            (name, a)
        });
        let mut relay_s3 = Vec::new();
        let mut relay_oss = Vec::new();
        let mut rc = Vec::new();
        for round in 0..rounds {
            for turn in 0..3 {
                let key = next_key();
                match (turn + round) % 3 {
                    0 => {
                        relay_s3.push(relay_copy(
                            &s.s3_src,
                            &s.s3_dst,
                            &key,
                            size,
                            part,
                            dir.path(),
                        ));
                        check(&s.s3_src, "disk.raw", &s.s3_dst, &key, size);
                    }
                    1 => {
                        relay_oss.push(relay_copy(
                            &s.oss_src,
                            &s.s3_dst,
                            &key,
                            size,
                            part,
                            dir.path(),
                        ));
                        check(&s.oss_src, "disk.raw", &s.s3_dst, &key, size);
                    }
                    _ => {
                        if let Some((_, a)) = &best {
                            rc.push(rclone(
                                &s.s3_src,
                                "disk.raw",
                                &s.s3_dst,
                                &key,
                                size,
                                a,
                                &rclone_cfg,
                            ));
                            check(&s.s3_src, "disk.raw", &s.s3_dst, &key, size);
                        }
                    }
                }
            }
        }
        rt.block_on(s.shutdown());
        rows.push(Row {
            section,
            name: "ossrelay s3->s3".into(),
            runs: relay_s3,
        });
        rows.push(Row {
            section,
            name: "ossrelay oss->s3".into(),
            runs: relay_oss,
        });
        if let Some((name, _)) = best {
            rows.push(Row {
                section,
                name: format!("rclone s3->s3 ({name})"),
                runs: rc,
            });
        }
    }

    if enabled("crc") {
        let s = rt.block_on(sims(size, false));
        let (mut xz, mut both) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(2) {
            for turn in [round % 2 == 0, round % 2 != 0] {
                let key = next_key();
                if turn {
                    xz.push(relay_copy(
                        &s.oss_src,
                        &s.oss_dst,
                        &key,
                        size,
                        part,
                        dir.path(),
                    ));
                    check(&s.oss_src, "disk.raw", &s.oss_dst, &key, size);
                } else {
                    both.push(relay_copy(
                        &s.oss_src,
                        &s.s3_dst,
                        &key,
                        size,
                        part,
                        dir.path(),
                    ));
                    check(&s.oss_src, "disk.raw", &s.s3_dst, &key, size);
                }
            }
        }
        rt.block_on(s.shutdown());
        rows.push(Row {
            section: "crc",
            name: "ossrelay oss->oss (CRC-64/XZ)".into(),
            runs: xz,
        });
        rows.push(Row {
            section: "crc",
            name: "ossrelay oss->s3 (XZ + NVME)".into(),
            runs: both,
        });
    }

    print_table(&rows, size);
    println!("(CPU s/GiB: CPU seconds of the copy process per GiB copied; simulators excluded)");
    println!("machine load average {} (end)", load());

    // Targets.
    if let (Some(o), Some(r)) = (
        find(&rows, "wan", "ossrelay s3->s3"),
        find(&rows, "wan", "rclone"),
    ) {
        let speed = med(o, |x| x.rate) / med(r, |x| x.rate);
        let mem = med(o, |x| x.rss as f64) / med(r, |x| x.rss as f64);
        println!(
            "wan: ossrelay s3->s3 / rclone throughput {speed:.2}x (target >= 1.5x), peak RSS {mem:.2} of rclone's (target <= 0.25)"
        );
    }
    if let (Some(o), Some(r)) = (
        find(&rows, "loopback", "ossrelay s3->s3"),
        find(&rows, "loopback", "rclone"),
    ) {
        println!(
            "loopback: ossrelay s3->s3 / rclone throughput {:.2}x, peak RSS {:.2} of rclone's",
            med(o, |x| x.rate) / med(r, |x| x.rate),
            med(o, |x| x.rss as f64) / med(r, |x| x.rss as f64)
        );
    }
    if let (Some(x), Some(b)) = (
        find(&rows, "crc", "ossrelay oss->oss"),
        find(&rows, "crc", "ossrelay oss->s3"),
    ) {
        let cost = 1.0 - med(b, |r| r.rate) / med(x, |r| r.rate);
        println!(
            "crc: oss->s3 (XZ + NVME) is {:.1} % slower than oss->oss (XZ) on loopback (target <= 5 %); CPU {:.2} vs {:.2} s/GiB",
            cost * 100.0,
            med(b, |r| r.cpu / (size as f64 / GIB as f64)),
            med(x, |r| r.cpu / (size as f64 / GIB as f64)),
        );
    }
}
