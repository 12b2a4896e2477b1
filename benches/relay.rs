//! `cargo bench --bench relay`: the relay engine against the simulator, each figure compared
//! with a baseline measured in the same run.
//!
//! 1. WAN model: 16 streams through `--conn-rate 16MiB/s --latency 20` (8 GiB) → fraction of
//!    capacity; the same at `--latency 200` on both simulators (source and destination apart,
//!    8 GiB, 64 MiB parts: a cross-continent round trip). In both, the link's total
//!    `--link-rate` is the 16 connections', so the ratio cannot exceed 1. And with
//!    `--conn-rate-spread 0.5` on the source (every connection's cap drawn from 8–24 MiB/s,
//!    seeded: the straggler tail).
//!    Both rows also show how many connections the simulators saw moving bytes at once.
//! 2. Loopback: the engine vs a bare pipe (same ranged GETs into UploadParts, same client, no
//!    CRC, no accounting, no state) → ratio.
//! 3. Memory: peak RSS of `ossrelay copy` for 1 GiB (64 MiB parts) and 32 GiB (512 MiB parts).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::oss::{EndpointSpec, OssClient, OssConfig};
use ossrelay::store::{ObjectStore, PartSpec, PutOptions};
use ossrelay::transfer::{self, CopyOptions, Location, Progress};
use ossrelay_sim::{self as sim, SimConfig, SimServer, SyntheticObject};
use tokio_util::sync::CancellationToken;

mod common;
use common::{account, buckets, median, vm_hwm_kib};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One simulator serving both sides; `link_rate`: the total of all connections, per
/// direction (see [`wan_200_row`] for why a WAN row has one).
async fn sim_with(
    size: u64,
    conn_rate: Option<u64>,
    link_rate: Option<u64>,
    latency_ms: u64,
) -> SimServer {
    sim::start(SimConfig {
        accounts: vec![account()],
        buckets: buckets(&["src", "dst"]),
        synthetic: vec![SyntheticObject {
            bucket: "src".into(),
            key: "disk.raw".into(),
            size,
        }],
        discard: vec!["dst".into()],
        conn_rate,
        link_rate,
        latency: Duration::from_millis(latency_ms),
        ..SimConfig::default()
    })
    .await
    .expect("start simulator")
}

/// One side of a WAN row: its per-connection cap, their spread, the link's total (if any).
#[derive(Clone, Copy)]
struct Side {
    rate: u64,
    spread: f64,
    link: Option<u64>,
}

/// Two simulators, one per side, each with its own WAN model and `latency_ms`: the source
/// serves the synthetic object, the destination discards what it verifies.
async fn sim_pair(size: u64, src: Side, dst: Side, latency_ms: u64) -> (SimServer, SimServer) {
    let side = |synthetic: bool, seed: u64, m: Side| SimConfig {
        accounts: vec![account()],
        buckets: buckets(&["src", "dst"]),
        synthetic: if synthetic {
            vec![SyntheticObject {
                bucket: "src".into(),
                key: "disk.raw".into(),
                size,
            }]
        } else {
            Vec::new()
        },
        discard: vec!["dst".into()],
        conn_rate: Some(m.rate),
        conn_rate_spread: m.spread,
        link_rate: m.link,
        wan_seed: seed,
        latency: Duration::from_millis(latency_ms),
        ..SimConfig::default()
    };
    let src = sim::start(side(true, 1, src))
        .await
        .expect("start source simulator");
    let dst = sim::start(side(false, 2, dst))
        .await
        .expect("start destination simulator");
    (src, dst)
}

/// What one engine copy between two simulators showed.
struct PairRun {
    /// Bytes/s.
    rate: f64,
    hedged: u64,
    /// Connections moving bytes at once, sampled every 10 ms (a byte within 50 ms): peak and
    /// mean over the copy, source and destination side.
    src_moving: (usize, f64),
    dst_moving: (usize, f64),
    /// The client's own view: parts moving body bytes (first byte taken, body not all sent;
    /// `Progress::sending_parts`), peak and mean.
    client_moving: (usize, f64),
}

/// The engine from one simulator to the other (see [`sim_pair`]).
async fn engine_copy_pair(
    src_sim: &SimServer,
    dst_sim: &SimServer,
    concurrency: usize,
    part: u64,
) -> PairRun {
    let (s, d) = (client(src_sim.endpoint()), client(dst_sim.endpoint()));
    let src = Location {
        store: Arc::new(s.bucket("src")),
        key: "disk.raw".into(),
    };
    let dst = Location {
        store: Arc::new(d.bucket("dst")),
        key: "disk.raw".into(),
    };
    let opts = CopyOptions {
        concurrency,
        part_size: Some(part),
        state_dir: None,
        ..CopyOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let t = Instant::now();
    let (mut src_n, mut dst_n, mut cl_n) = (Vec::new(), Vec::new(), Vec::new());
    let copy = transfer::copy(src, dst, opts, progress.clone(), CancellationToken::new());
    let sample = async {
        let window = Duration::from_millis(50);
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            src_n.push(src_sim.moving_connections(window));
            dst_n.push(dst_sim.moving_connections(window));
            let sending = progress
                .sending_parts
                .load(std::sync::atomic::Ordering::Relaxed);
            cl_n.push(sending as usize);
        }
    };
    let s = tokio::select! {
        r = copy => r.expect("engine copy"),
        () = sample => unreachable!("the sampler never ends"),
    };
    let rate = s.bytes as f64 / t.elapsed().as_secs_f64();
    if std::env::var_os("RELAY_TIMELINE").is_some() {
        // Where a row loses time: connections moving bytes at each side, mean per second.
        for (sec, (s, d)) in src_n.chunks(100).zip(dst_n.chunks(100)).enumerate() {
            let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
            eprintln!(
                "t={sec:>3}s source {:>5.1} destination {:>5.1}",
                mean(s),
                mean(d)
            );
        }
    }
    let stats = |v: &[usize]| {
        let peak = v.iter().copied().max().unwrap_or(0);
        (peak, v.iter().sum::<usize>() as f64 / v.len().max(1) as f64)
    };
    PairRun {
        rate,
        hedged: progress
            .hedged_parts
            .load(std::sync::atomic::Ordering::Relaxed),
        src_moving: stats(&src_n),
        dst_moving: stats(&dst_n),
        client_moving: stats(&cl_n),
    }
}

/// Object and part size of a WAN pair row: quick is cheap enough to prove the row works;
/// the figures are the full run's.
fn pair_sizes(quick: bool) -> (u64, u64) {
    if quick {
        (512 * MIB, 16 * MIB)
    } else {
        (8 * GIB, 64 * MIB)
    }
}

/// The cross-continent row: 16 × 16 MiB/s connections with a 200 ms round trip on both
/// sides, and a link whose total is those 16 connections (256 MiB/s). Without the total,
/// connections still draining their kernel buffers after the client moved on would add to
/// the ratio; with it, the ratio says how busy the link was kept, never more than all of it.
fn wan_200_row(rt: &tokio::runtime::Runtime, quick: bool) {
    let (size, part) = pair_sizes(quick);
    let rate = 16 * MIB;
    let side = Side {
        rate,
        spread: 0.0,
        link: Some(16 * rate),
    };
    let (run, ceiling) = rt.block_on(async {
        let (src, dst) = sim_pair(size, side, side, 200).await;
        let r = engine_copy_pair(&src, &dst, 16, part).await;
        src.shutdown().await;
        dst.shutdown().await;
        // The model's own ceiling: one part per connection (size / 16 each), so only two
        // round trips in the whole copy go unused, and nothing the scheduler does between
        // parts matters.
        let (src, dst) = sim_pair(size, side, side, 200).await;
        let c = engine_copy_pair(&src, &dst, 16, size / 16).await;
        src.shutdown().await;
        dst.shutdown().await;
        (r, c)
    });
    let capacity = 16.0 * rate as f64;
    println!(
        "wan_200ms_ceiling: {:.1} MiB/s = {:.3} of capacity (the same model, one {} MiB part per connection); the scheduler's row is {:.3} of it",
        ceiling.rate / MIB as f64,
        ceiling.rate / capacity,
        size / 16 / MIB,
        run.rate / ceiling.rate
    );
    println!(
        "wan_200ms: {:.1} MiB/s of {:.1} MiB/s modelled (16 x 16 MiB/s, link total 256 MiB/s, 200 ms on both sides, {} GiB, {} MiB parts) = {:.3} of capacity (target >= 0.95); connections moving bytes: source peak {} mean {:.1}, destination peak {} mean {:.1}; the client's parts moving body bytes (ossrelay_parts_sending): peak {} mean {:.1}; hedged parts {}",
        run.rate / MIB as f64,
        capacity / MIB as f64,
        size as f64 / GIB as f64,
        part / MIB,
        run.rate / capacity,
        run.src_moving.0,
        run.src_moving.1,
        run.dst_moving.0,
        run.dst_moving.1,
        run.client_moving.0,
        run.client_moving.1,
        run.hedged,
    );
}

/// The straggler row: the source's connections' caps drawn from 8–24 MiB/s (seeded), 20 ms;
/// the destination's connections 24 MiB/s each, so the source's draws alone decide. The
/// target: completion within 10 % of bytes ÷ the caps of 16 connections, taken as 16 × the
/// mean cap of the source connections the copy opened (it may open more than 16: hedges and
/// early starts take fresh ones).
fn wan_spread_row(rt: &tokio::runtime::Runtime, quick: bool) {
    let (size, part) = pair_sizes(quick);
    let rate = 16 * MIB;
    let src_side = Side {
        rate,
        spread: 0.5,
        link: None,
    };
    let dst_side = Side {
        rate: rate * 3 / 2,
        spread: 0.0,
        link: None,
    };
    let (run, caps) = rt.block_on(async {
        let (src, dst) = sim_pair(size, src_side, dst_side, 20).await;
        let r = engine_copy_pair(&src, &dst, 16, part).await;
        let caps = src.connection_caps();
        src.shutdown().await;
        dst.shutdown().await;
        (r, caps)
    });
    let mean = caps.iter().sum::<u64>() as f64 / caps.len().max(1) as f64;
    let capacity = 16.0 * mean;
    println!(
        "wan_spread_0.5: {:.1} MiB/s of {:.1} MiB/s (16 x the mean cap {:.1} MiB/s of the {} source connections, caps 8-24 MiB/s, 20 ms, {} GiB, {} MiB parts) = {:.3} (target >= 0.91, i.e. within 10 %); hedged parts {}; source connections moving bytes: peak {} mean {:.1}",
        run.rate / MIB as f64,
        capacity / MIB as f64,
        mean / MIB as f64,
        caps.len(),
        size as f64 / GIB as f64,
        part / MIB,
        run.rate / capacity,
        run.hedged,
        run.src_moving.0,
        run.src_moving.1,
    );
}

fn client(endpoint: String) -> OssClient {
    let creds = Arc::new(StaticProvider(Credentials::new("simak", "simsecret")));
    OssClient::new(OssConfig::new(
        EndpointSpec::Url(endpoint),
        "cn-hangzhou",
        creds,
    ))
    .expect("client")
}

async fn engine_copy(sim: &SimServer, concurrency: usize, part: u64) -> f64 {
    let c = client(sim.endpoint());
    let src = Location {
        store: Arc::new(c.bucket("src")),
        key: "disk.raw".into(),
    };
    let dst = Location {
        store: Arc::new(c.bucket("dst")),
        key: "disk.raw".into(),
    };
    let opts = CopyOptions {
        concurrency,
        part_size: Some(part),
        state_dir: None,
        ..CopyOptions::default()
    };
    let t = Instant::now();
    let s = transfer::copy(
        src,
        dst,
        opts,
        Arc::new(Progress::default()),
        CancellationToken::new(),
    )
    .await
    .expect("engine copy");
    let secs = t.elapsed().as_secs_f64();
    s.bytes as f64 / secs
}

/// The minimum I/O: the same ranged GETs streamed into UploadParts, nothing else.
async fn bare_pipe(sim: &SimServer, size: u64, concurrency: usize, part: u64) -> f64 {
    let c = client(sim.endpoint());
    let src = Arc::new(c.bucket("src"));
    let dst = Arc::new(c.bucket("dst"));
    let t = Instant::now();
    let upload = ObjectStore::create_multipart(&*dst, "bare.raw", size, &PutOptions::default())
        .await
        .unwrap();
    let parts = size.div_ceil(part);
    let results: Vec<(u32, String)> = futures::stream::iter(0..parts)
        .map(|i| {
            let (src, dst, upload) = (src.clone(), dst.clone(), upload.clone());
            async move {
                let off = i * part;
                let len = part.min(size - off);
                let body = ObjectStore::get_range(&*src, "disk.raw", off, off + len, None)
                    .await
                    .unwrap();
                let spec = PartSpec {
                    number: i as u32 + 1,
                    offset: off,
                    len,
                };
                let up = ObjectStore::upload_part(
                    &*dst,
                    "bare.raw",
                    &upload,
                    spec,
                    body,
                    &ossrelay::checksum::Checksums::new(),
                )
                .await
                .unwrap();
                (spec.number, up.etag)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut results = results;
    results.sort_by_key(|p| p.0);
    ObjectStore::complete(
        &*dst,
        "bare.raw",
        &upload,
        &results,
        size,
        &ossrelay::checksum::Checksums::new(),
    )
    .await
    .unwrap();
    size as f64 / t.elapsed().as_secs_f64()
}

/// Peak RSS (VmHWM) of `ossrelay copy` of a synthetic object into a discard bucket.
fn copy_peak_rss(size: u64, part: u64) -> (u64, f64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(sim_with(size, None, None, 0));
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args([
            "copy",
            "oss://src/disk.raw",
            "oss://dst/disk.raw",
            "--src-endpoint",
            &sim.endpoint(),
            "--dst-endpoint",
            &sim.endpoint(),
            "--part-size",
            &format!("{part}"),
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
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ossrelay");
    let mut peak_kib = 0u64;
    loop {
        peak_kib = peak_kib.max(vm_hwm_kib(child.id()));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "ossrelay copy failed");
    let secs = t.elapsed().as_secs_f64();
    rt.block_on(sim.shutdown());
    (peak_kib * 1024, size as f64 / secs)
}

/// CPU seconds (user + system) this process has used so far, sim included.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports clock ticks of 1/100 s on every mainstream configuration.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `RELAY_BENCH=wan,wan200,spread,loopback,memory` runs a subset (e.g. under a profiler).
    let only = std::env::var("RELAY_BENCH").ok();
    let enabled = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == name))
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs, {}, load average {}",
        std::env::consts::ARCH,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // 1. WAN model.
    if enabled("wan") {
        // 8 GiB, like the 200 ms row: at 2 GiB (two parts per stream) the first and last
        // round trips and the last parts' ends swung the figure from 0.90 to 0.96 between
        // runs of the same binary.
        let size = if quick { 512 * MIB } else { 8 * GIB };
        let rate = 16 * MIB;
        let rate_result = rt.block_on(async {
            // The link's total is the 16 connections': parts that end while their connection
            // still drains its socket buffers would otherwise count extra connections as
            // capacity (1.12 once the rounds were staggered, see `plan::stagger`).
            let sim = sim_with(size, Some(rate), Some(16 * rate), 20).await;
            // The engine's default 64 MiB parts. Each part pays two request latencies (GET
            // first byte, UploadPart response), hidden by starting the next part early.
            let part = if quick { 16 * MIB } else { 64 * MIB };
            let r = engine_copy(&sim, 16, part).await;
            sim.shutdown().await;
            r
        });
        let capacity = 16.0 * rate as f64;
        println!(
            "wan_model: {:.1} MiB/s of {:.1} MiB/s modelled (16 x 16 MiB/s, link total 256 MiB/s, 20 ms) = {:.3} of capacity (target >= 0.97)",
            rate_result / MIB as f64,
            capacity / MIB as f64,
            rate_result / capacity
        );
    }

    // 1b. Cross-continent round trips and unequal connections, source and destination apart.
    if enabled("wan200") {
        wan_200_row(&rt, quick);
    }
    if enabled("spread") {
        wan_spread_row(&rt, quick);
    }

    // 2. Loopback: engine vs bare pipe, interleaved (alternating which goes first) so both
    // see the same share of the machine's noise; CPU per GiB is the load-independent view.
    if enabled("loopback") {
        let size = if quick { GIB } else { 4 * GIB };
        let reps = if quick { 3 } else { 5 };
        let (e, b, ecpu, bcpu) = rt.block_on(async {
            let sim = sim_with(size, None, None, 0).await;
            let (mut e, mut b, mut ecpu, mut bcpu) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in 0..reps {
                for engine_turn in [i % 2 == 0, i % 2 != 0] {
                    let c0 = cpu_seconds();
                    if engine_turn {
                        e.push(engine_copy(&sim, 16, 64 * MIB).await);
                        ecpu.push((cpu_seconds() - c0) / (size as f64 / GIB as f64));
                    } else {
                        b.push(bare_pipe(&sim, size, 16, 64 * MIB).await);
                        bcpu.push((cpu_seconds() - c0) / (size as f64 / GIB as f64));
                    }
                }
            }
            sim.shutdown().await;
            (e, b, ecpu, bcpu)
        });
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        println!(
            "loopback: engine {:.0} MB/s, bare pipe {:.0} MB/s, ratio {:.3} (target >= 0.90; best of {reps} each); medians {:.0} / {:.0} MB/s = {:.3}; CPU s/GiB (sim included) engine {:.2}, bare {:.2}",
            best(&e) / 1e6,
            best(&b) / 1e6,
            best(&e) / best(&b),
            median(&e) / 1e6,
            median(&b) / 1e6,
            median(&e) / median(&b),
            median(&ecpu),
            median(&bcpu),
        );
    }

    // 3. Memory.
    if enabled("memory") {
        let bound = 64 * MIB + 16 * 4 * MIB;
        let (small, small_rate) = copy_peak_rss(GIB, 64 * MIB);
        let big_size = if quick { 8 * GIB } else { 32 * GIB };
        let (big, big_rate) = copy_peak_rss(big_size, 512 * MIB);
        println!(
            "memory: peak RSS {:.1} MiB for 1 GiB/64 MiB parts ({:.0} MB/s), {:.1} MiB for {} GiB/512 MiB parts ({:.0} MB/s); bound {} MiB; difference {:.1} % (target <= 10 %)",
            small as f64 / MIB as f64,
            small_rate / 1e6,
            big as f64 / MIB as f64,
            big_size / GIB,
            big_rate / 1e6,
            bound / MIB,
            (big as f64 - small as f64).abs() / small.max(1) as f64 * 100.0
        );
    }
}
