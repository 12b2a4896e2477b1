//! `cargo bench --bench unpack`: `copy --unpack` of an ECS-style `.raw.tar.gz` against the
//! single-core decompression rate of the same archive, in the same run.
//!
//! 1. Ceiling: gunzip + tar of the archive from memory on one core (bytes discarded).
//! 2. `ossrelay copy --unpack` of that archive from the simulator into a discard bucket.
//! 3. Peak RSS (VmHWM) of that copy process.
//!
//! The archive stands for a realistic disk: mostly zeros with incompressible 1 MiB blocks
//! (one in four). It is assembled from independently deflated 1 MiB blocks (full flushes),
//! so building 4 GiB of RAW takes seconds; the decoder sees an ordinary gzip stream.
//! The two are measured in alternation, `--rounds N` times (default 5; 1 with `--quick`), and
//! the median of the per-round ratios is reported: this VM's single-core rate drifts by ±10 %
//! from minute to minute. `--quick` uses 1 GiB of RAW instead of 4 GiB; `--verbose` prints
//! the relay's log; `UNPACK_BENCH_ARGS` adds flags to the `copy` command line.
//! `UNPACK_BENCH_B_ARGS` makes it an A/B run: every second round adds these flags too, and
//! the medians of the two variants are reported apart (e.g. `--decoder-cpu off`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ossrelay::transfer::tar;
use ossrelay_sim::{self as sim, SimConfig};

mod common;
use common::{account, buckets, disk_archive, median, vm_hwm_kib};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// CPU seconds used by the calling thread so far.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Gunzip + tar (header, member data, end) on this thread; returns RAW bytes per second of
/// wall time and of this thread's CPU time.
fn ceiling(archive: &[u8], raw: u64) -> (f64, f64) {
    let t = Instant::now();
    let cpu = thread_cpu();
    let mut gz = flate2::bufread::GzDecoder::new(archive);
    let h = tar::next_header(&mut gz).unwrap().unwrap();
    assert_eq!(h.size, raw);
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = gz.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    assert_eq!(n, raw + 1024);
    (
        raw as f64 / t.elapsed().as_secs_f64(),
        raw as f64 / (thread_cpu() - cpu),
    )
}

/// A `key=value` number from the relay's "decoder finished" debug line.
fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// One `copy --unpack` run of the relay, measured from outside.
struct RelayRun {
    rate: f64,
    secs: f64,
    parts: u64,
    part_size: u64,
    cpu_secs: f64,
    peak_kib: u64,
    /// The relay's "decoder finished" debug line.
    decoder: String,
}

/// Runs `ossrelay copy --unpack` as a separate process (so its RSS is its own) against `sim`.
fn relay(endpoint: &str, extra: &str, raw: u64, compressed: u64, verbose: bool) -> RelayRun {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args([
            "copy",
            "oss://src/exports/bench_m-bench_system.raw.tar.gz",
            "oss://dst/images/",
            "--src-endpoint",
            endpoint,
            "--dst-endpoint",
            endpoint,
            "--concurrency",
            "16",
            "--quiet",
            "--json",
            "--state-dir",
            &dir.path().display().to_string(),
        ])
        .args(extra.split_whitespace())
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "simak")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "simsecret")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("OSSRELAY_LOG", "info,ossrelay::transfer::decode=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ossrelay");
    let stat_path = format!("/proc/{}/stat", child.id());
    let mut peak_kib = 0u64;
    let mut cpu_ticks = 0u64;
    loop {
        // utime + stime (fields 14 and 15), sampled until the process exits.
        if let Ok(s) = std::fs::read_to_string(&stat_path) {
            if let Some(rest) = s.rsplit(')').next() {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() > 13 {
                    let t = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
                    cpu_ticks = cpu_ticks.max(t);
                }
            }
        }
        peak_kib = peak_kib.max(vm_hwm_kib(child.id()));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let status = child.wait().unwrap();
    assert!(status.success(), "ossrelay copy --unpack failed: {err}");
    if verbose {
        eprint!("{err}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("JSON summary")).expect("JSON");
    assert_eq!(summary["bytes"].as_u64(), Some(raw));
    assert_eq!(summary["source_bytes"].as_u64(), Some(compressed));
    let secs = summary["seconds"].as_f64().unwrap();
    RelayRun {
        rate: raw as f64 / secs,
        secs,
        parts: summary["parts"].as_u64().unwrap_or(0),
        part_size: summary["part_size"].as_u64().unwrap_or(0),
        // Clock ticks are 100 Hz on Linux.
        cpu_secs: cpu_ticks as f64 / 100.0,
        peak_kib,
        decoder: err
            .lines()
            .find(|l| l.contains("decoder finished"))
            .unwrap_or_default()
            .to_string(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let verbose = args.iter().any(|a| a == "--verbose");
    // Rounds of (ceiling, relay), each ratio taken against the ceiling measured just before:
    // this VM's single-core rate drifts by ±10 % between minutes, so one pair can mislead.
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 })
        .max(1);
    let raw_mib = if quick { 1024 } else { 4096 };
    let raw = raw_mib * MIB;
    let t = Instant::now();
    // Every 4th MiB incompressible, the rest zeros.
    let (archive, _) = disk_archive("m-bench_system.raw", raw_mib, 4, 1, 64);
    println!(
        "archive: {:.0} MiB RAW -> {:.0} MiB gzip'd tar (built in {:.1}s)",
        raw as f64 / MIB as f64,
        archive.len() as f64 / MIB as f64,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(async {
        sim::start(SimConfig {
            accounts: vec![account()],
            buckets: buckets(&["src", "dst"]),
            discard: vec!["dst".into()],
            ..SimConfig::default()
        })
        .await
        .expect("start simulator")
    });
    let compressed = archive.len() as u64;
    sim.put_object_bytes(
        "src",
        "exports/bench_m-bench_system.raw.tar.gz",
        Bytes::from(archive.clone()),
    );
    // Extra `copy` flags for experiments, e.g. UNPACK_BENCH_ARGS="--part-size 16MiB".
    let extra = std::env::var("UNPACK_BENCH_ARGS").unwrap_or_default();
    if !extra.is_empty() {
        println!("extra copy flags: {extra}");
    }
    let b_args = std::env::var("UNPACK_BENCH_B_ARGS").unwrap_or_default();
    if !b_args.is_empty() {
        println!("A/B: rounds 2, 4, ... add: {b_args}");
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut ratios = Vec::new();
    let mut b_ratios = Vec::new();
    let mut ceilings = Vec::new();
    let mut rates = Vec::new();
    let mut peak_kib = 0u64;
    for round in 1..=rounds {
        // 1. The ceiling: gunzip + tar of the same archive from memory, on this thread.
        let (ceil, ceil_cpu) = ceiling(&archive, raw);
        // 2 + 3. The relay, right after.
        let b = !b_args.is_empty() && round % 2 == 0;
        let args = if b {
            format!("{extra} {b_args}")
        } else {
            extra.clone()
        };
        let r = relay(&sim.endpoint(), &args, raw, compressed, verbose);
        let ratio = r.rate / ceil;
        println!(
            "round {round}/{rounds}{}: ceiling {:.0} MB/s (RAW; {:.0} MB per CPU-second); relay \
             {:.0} MB/s in {:.1}s, {} parts of {} MiB, {:.1} core-seconds ({:.2} cores of {cores}); \
             ratio {ratio:.2}; peak RSS {:.1} MiB",
            if b { " (B)" } else { "" },
            ceil / 1e6,
            ceil_cpu / 1e6,
            r.rate / 1e6,
            r.secs,
            r.parts,
            r.part_size / MIB,
            r.cpu_secs,
            r.cpu_secs / r.secs,
            r.peak_kib as f64 / 1024.0,
        );
        // Where the decoder thread's wall time went: its own CPU, waiting for the network,
        // for memory (uploads behind), for the cutter, and the rest: runnable but not running.
        let d = &r.decoder;
        let (wall, cpu) = (field(d, "wall_ms"), field(d, "cpu_ms"));
        let (input, budget, output) = (
            field(d, "input_wait_ms"),
            field(d, "budget_wait_ms"),
            field(d, "output_wait_ms"),
        );
        let waits = input + budget + output;
        println!(
            "  decoder thread: wall {wall:.0} ms = CPU {cpu:.0} ms + waits {waits:.0} ms (input \
             {input:.0}, memory {budget:.0}, cutter {output:.0}) + descheduled {:.0} ms; {:.0} MB \
             per CPU-second = {:.2} of the ceiling's",
            (wall - cpu - waits).max(0.0),
            raw as f64 / (cpu / 1e3) / 1e6,
            raw as f64 / (cpu / 1e3) / ceil_cpu
        );
        if b {
            b_ratios.push(ratio);
        } else {
            ratios.push(ratio);
        }
        ceilings.push(ceil);
        rates.push(r.rate);
        peak_kib = peak_kib.max(r.peak_kib);
    }
    rt.block_on(sim.shutdown());
    if !b_ratios.is_empty() {
        println!(
            "ratio (B: {b_args}): {:.2} median of {} rounds ({:.2?})",
            median(&b_ratios),
            b_ratios.len(),
            b_ratios
        );
    }
    let n = ratios.len();
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "ceiling: single-core gunzip+tar from memory, median {:.0} MB/s (RAW)",
        median(&ceilings) / 1e6
    );
    println!(
        "relay: copy --unpack, median {:.0} MB/s (RAW)",
        median(&rates) / 1e6
    );
    println!(
        "ratio: relay / ceiling = {:.2} median of {n} rounds (range {lo:.2}-{hi:.2}; target \
         >= 0.90; the simulator shares the machine's {cores} cores), load average {}",
        median(&ratios),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    println!(
        "memory: peak RSS {:.1} MiB (--memory 256 MiB default) for {} GiB of RAW",
        peak_kib as f64 / 1024.0,
        raw / GIB
    );
}
