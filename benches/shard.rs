//! `cargo bench --bench shard` (or, with the dev profile's build, `cargo test --bench shard`):
//! a sharded copy's aggregate throughput with N = 1, 2, 4 worker processes, each capped by
//! `--bandwidth` to model one VM's NIC, through a WAN-model simulator (8 MiB/s per
//! connection, 20 ms latency), and the time of its plan and complete steps.
//!
//! The goal (issue #16): at N = 4 the aggregate is at least 0.9 × N × cap. The overhead of
//! plan + complete at 10,000 parts (a 1 TiB object) is measured by
//! `transfer::shard::tests::plan_and_complete_of_ten_thousand_parts_take_seconds`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ossrelay_sim::{self as sim, SimConfig, SyntheticObject};

mod common;
use common::{account, buckets, median};

const MIB: u64 = 1 << 20;

fn ossrelay(endpoint: &str, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ossrelay"));
    c.args(args)
        .args([
            "--src-endpoint",
            endpoint,
            "--dst-endpoint",
            endpoint,
            "--quiet",
            "--json",
        ])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "simak")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "simsecret")
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("OSSRELAY_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

fn ok(mut c: Command, what: &str) {
    let s = c.status().expect("run ossrelay");
    assert!(s.success(), "{what} failed");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let size = if quick { 96 * MIB } else { 256 * MIB };
    let cap = 16 * MIB;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(async {
        sim::start(SimConfig {
            accounts: vec![account()],
            buckets: buckets(&["src", "dst", "meta"]),
            synthetic: vec![SyntheticObject {
                bucket: "src".into(),
                key: "disk.raw".into(),
                size,
            }],
            discard: vec!["dst".into()],
            conn_rate: Some(8 * MIB),
            latency: Duration::from_millis(20),
            ..SimConfig::default()
        })
        .await
        .expect("start simulator")
    });
    let ep = sim.endpoint();
    println!(
        "sharded copy of {} MiB, 8 MiB parts, each worker --bandwidth {} MiB/s --concurrency 4, \
         simulator 8 MiB/s per connection, 20 ms latency",
        size / MIB,
        cap / MIB
    );
    let mut ratios = Vec::new();
    for n in [1u32, 2, 4] {
        let manifest = format!("oss://meta/disk-{n}.json");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let t = Instant::now();
        ok(
            ossrelay(
                &ep,
                &s(&[
                    "copy",
                    "oss://src/disk.raw",
                    &format!("oss://dst/disk-{n}.raw"),
                    "--shards",
                    &n.to_string(),
                    "--plan",
                    "--part-size",
                    "8MiB",
                    "--manifest",
                    &manifest,
                ]),
            ),
            "plan",
        );
        let plan = t.elapsed();
        let t = Instant::now();
        let workers: Vec<Child> = (0..n)
            .map(|i| {
                let mut c = ossrelay(
                    &ep,
                    &s(&[
                        "copy",
                        "--manifest",
                        &manifest,
                        "--bandwidth",
                        &format!("{cap}"),
                        "--concurrency",
                        "4",
                    ]),
                );
                c.env("JOB_COMPLETION_INDEX", i.to_string());
                c.spawn().expect("spawn a worker")
            })
            .collect();
        for mut w in workers {
            assert!(w.wait().unwrap().success(), "a worker failed");
        }
        let work = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ok(
            ossrelay(&ep, &s(&["copy", "--manifest", &manifest, "--complete"])),
            "complete",
        );
        let complete = t.elapsed();
        let aggregate = size as f64 / work;
        ratios.push(aggregate / (n as f64 * cap as f64));
        println!(
            "N = {n}: {:.1} MiB/s aggregate = {:.2} × N × cap; plan {:.2} s, complete {:.2} s",
            aggregate / MIB as f64,
            aggregate / (n as f64 * cap as f64),
            plan.as_secs_f64(),
            complete.as_secs_f64()
        );
    }
    println!("median of aggregate / (N × cap): {:.2}", median(&ratios));
    rt.block_on(sim.shutdown());
}
