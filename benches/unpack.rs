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
//! `--quick` uses 1 GiB of RAW instead of 4 GiB; `--verbose` prints the relay's log;
//! `UNPACK_BENCH_ARGS` adds flags to the `copy` command line.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use ossrelay::sim::{self, SimAccount, SimBucket, SimConfig};
use ossrelay::transfer::tar;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn deflate(c: &mut Compress, data: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut out = Vec::new();
    let start_in = c.total_in();
    loop {
        out.reserve(256 * 1024);
        let consumed = (c.total_in() - start_in) as usize;
        c.compress_vec(&data[consumed..], &mut out, flush).unwrap();
        let consumed = (c.total_in() - start_in) as usize;
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A gzip'd GNU tar with one `raw_mib` MiB member: every 4th MiB incompressible, the rest zeros.
fn disk_archive(name: &str, raw_mib: u64) -> Vec<u8> {
    let size = raw_mib * MIB;
    let header = tar::gnu_header(name, size, b'0');
    let mut c = Compress::new(Compression::fast(), false);
    let mut crc = Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(deflate(&mut c, &header, FlushCompress::Full));
    crc.update(&header);
    let zeros = vec![0u8; MIB as usize];
    let zero_block = deflate(&mut c, &zeros, FlushCompress::Full);
    let mut zero_crc = Crc::new();
    zero_crc.update(&zeros);
    let pool: Vec<(Vec<u8>, Crc)> = (0..64)
        .map(|i| {
            let data = noise(MIB as usize, i + 1);
            let mut k = Crc::new();
            k.update(&data);
            (deflate(&mut c, &data, FlushCompress::Full), k)
        })
        .collect();
    for i in 0..raw_mib {
        if i % 4 == 1 {
            let (block, k) = &pool[(i / 4 % 64) as usize];
            out.extend_from_slice(block);
            crc.combine(k);
        } else {
            out.extend_from_slice(&zero_block);
            crc.combine(&zero_crc);
        }
    }
    let tail = vec![0u8; 1024];
    out.extend(deflate(&mut c, &tail, FlushCompress::Finish));
    crc.update(&tail);
    let total = 512 + size + 1024;
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out
}

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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let raw_mib = if quick { 1024 } else { 4096 };
    let raw = raw_mib * MIB;
    let t = Instant::now();
    let archive = disk_archive("m-bench_system.raw", raw_mib);
    println!(
        "archive: {:.0} MiB RAW -> {:.0} MiB gzip'd tar (built in {:.1}s)",
        raw as f64 / MIB as f64,
        archive.len() as f64 / MIB as f64,
        t.elapsed().as_secs_f64()
    );

    // 1. The ceiling, best of two.
    let (a, b) = (ceiling(&archive, raw), ceiling(&archive, raw));
    let ceil = a.0.max(b.0);
    let ceil_cpu = a.1.max(b.1);
    println!(
        "ceiling: single-core gunzip+tar from memory {:.0} MB/s (RAW); {:.0} MB per CPU-second",
        ceil / 1e6,
        ceil_cpu / 1e6
    );

    // 2 + 3. The relay, as a separate process so its RSS is its own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(async {
        sim::start(SimConfig {
            accounts: vec![SimAccount {
                name: "sim".into(),
                access_key_id: "simak".into(),
                access_key_secret: "simsecret".into(),
            }],
            buckets: vec![
                SimBucket {
                    name: "src".into(),
                    account: "sim".into(),
                },
                SimBucket {
                    name: "dst".into(),
                    account: "sim".into(),
                },
            ],
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
        Bytes::from(archive),
    );
    let dir = tempfile::tempdir().unwrap();
    // Extra `copy` flags for experiments, e.g. UNPACK_BENCH_ARGS="--part-size 16MiB".
    let extra = std::env::var("UNPACK_BENCH_ARGS").unwrap_or_default();
    if !extra.is_empty() {
        println!("extra copy flags: {extra}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args([
            "copy",
            "oss://src/exports/bench_m-bench_system.raw.tar.gz",
            "oss://dst/images/",
            "--src-endpoint",
            &sim.endpoint(),
            "--dst-endpoint",
            &sim.endpoint(),
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
        .env("OSSRELAY_LOG", "info,ossrelay::transfer::unpack=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ossrelay");
    let status_path = format!("/proc/{}/status", child.id());
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
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            for line in s.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak_kib = peak_kib.max(kib);
                }
            }
        }
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
    if std::env::args().any(|a| a == "--verbose") {
        eprint!("{err}");
    }
    let decoder = err
        .lines()
        .find(|l| l.contains("decoder finished"))
        .unwrap_or_default()
        .to_string();
    let summary: serde_json::Value =
        serde_json::from_str(out.lines().last().expect("JSON summary")).expect("JSON");
    assert_eq!(summary["bytes"].as_u64(), Some(raw));
    assert_eq!(summary["source_bytes"].as_u64(), Some(compressed));
    let secs = summary["seconds"].as_f64().unwrap();
    let rate = raw as f64 / secs;
    rt.block_on(sim.shutdown());
    println!(
        "relay: copy --unpack {:.0} MB/s (RAW) in {:.1}s, {} parts of {} MiB",
        rate / 1e6,
        secs,
        summary["parts"],
        summary["part_size"].as_u64().unwrap_or(0) / MIB
    );
    // Clock ticks are 100 Hz on Linux.
    let cpu = cpu_ticks as f64 / 100.0;
    println!(
        "relay CPU: {cpu:.1} core-seconds ({:.2} cores on average) on a machine with {} cores, load average {}",
        cpu / secs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    // Where the decoder thread's wall time went: its own CPU, waiting for the network,
    // for memory (uploads behind), for the cutter, and the rest: runnable but not running.
    let (wall, cpu) = (field(&decoder, "wall_ms"), field(&decoder, "cpu_ms"));
    let waits = field(&decoder, "input_wait_ms")
        + field(&decoder, "budget_wait_ms")
        + field(&decoder, "output_wait_ms");
    println!(
        "decoder thread: wall {wall:.0} ms = CPU {cpu:.0} ms + waits {waits:.0} ms (input {:.0}, \
         memory {:.0}, cutter {:.0}) + descheduled {:.0} ms; {:.0} MB per CPU-second = {:.2} of \
         the ceiling's",
        field(&decoder, "input_wait_ms"),
        field(&decoder, "budget_wait_ms"),
        field(&decoder, "output_wait_ms"),
        (wall - cpu - waits).max(0.0),
        raw as f64 / (cpu / 1e3) / 1e6,
        raw as f64 / (cpu / 1e3) / ceil_cpu
    );
    println!(
        "ratio: relay / ceiling = {:.2} (target >= 0.90; the simulator shares the machine's cores)",
        rate / ceil
    );
    println!(
        "memory: peak RSS {:.1} MiB (--memory 256 MiB default) for {} GiB of RAW",
        peak_kib as f64 / 1024.0,
        raw / GIB
    );
}
