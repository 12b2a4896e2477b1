//! `ossrelay demo`: two simulated regions in one process, a synthetic disk image relayed from
//! one account to another through the real engine, the real OSS client and real signatures.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::copy::serve_metrics;
use super::util::{human_bytes, install_interrupt_handler, parse_size};
use super::{progress, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK};
use crate::credentials::{Credentials, StaticProvider};
use crate::oss::{EndpointSpec, OssClient, OssConfig};
use crate::transfer::{self, CopyOptions, Location, Progress, TransferError};
use ossrelay_sim::{self as sim, SimAccount, SimBucket, SimConfig, SyntheticObject};

/// Flags of `ossrelay demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Size of the synthetic disk image (default: 64MiB for the migration, 2GiB with --relay-only).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Parts in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Model a WAN link on the source side, e.g. 32MiB/s per connection (--relay-only).
    #[arg(long, value_parser = super::util::parse_rate)]
    pub conn_rate: Option<u64>,
    /// Address for the Prometheus endpoint (default: a free loopback port).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Only relay a disk object between the two buckets, without the ExportImage / ImportImage
    /// around it.
    #[arg(long)]
    pub relay_only: bool,
    /// Migrate across clouds instead: an AMI from a simulated AWS account (EC2 ExportImage
    /// into S3) to a simulated Alibaba Cloud account (relay into OSS, ECS ImportImage).
    #[arg(long, conflicts_with = "relay_only")]
    pub cross_cloud: bool,
    /// The whole migration (the default; kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "relay_only")]
    pub migrate: bool,
}

/// Default disk size of the migration demo: the simulated export gzips the whole image.
const MIGRATE_DEFAULT_SIZE: u64 = 64 << 20;
/// Default disk size of the relay-only demo.
const RELAY_DEFAULT_SIZE: u64 = 2 << 30;

const SRC_REGION: &str = "cn-hangzhou";
const DST_REGION: &str = "eu-central-1";
const SRC_BUCKET: &str = "images-hangzhou";
const DST_BUCKET: &str = "images-frankfurt";
const KEY: &str = "exports/m-demo0001_system.raw";

fn free_port() -> Option<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    l.local_addr().ok()
}

/// Runs the demo; returns the exit code.
pub async fn run(args: DemoArgs) -> i32 {
    let result = if args.relay_only {
        demo(args).await
    } else if args.cross_cloud {
        let metrics = args.metrics_listen.or_else(free_port);
        super::demo_migrate::run_cross_cloud(
            args.size.unwrap_or(MIGRATE_DEFAULT_SIZE),
            args.concurrency,
            args.quiet,
            metrics,
        )
        .await
    } else {
        let metrics = args.metrics_listen.or_else(free_port);
        super::demo_migrate::run(
            args.size.unwrap_or(MIGRATE_DEFAULT_SIZE),
            args.concurrency,
            args.quiet,
            metrics,
        )
        .await
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

async fn demo(args: DemoArgs) -> Result<i32, String> {
    let size = args.size.unwrap_or(RELAY_DEFAULT_SIZE);
    let src_account = SimAccount {
        name: "1111111111111111".into(),
        access_key_id: "LTAIdemoSourceKey".into(),
        access_key_secret: "demo-source-secret".into(),
    };
    let dst_account = SimAccount {
        name: "2222222222222222".into(),
        access_key_id: "LTAIdemoTargetKey".into(),
        access_key_secret: "demo-target-secret".into(),
    };
    let src_sim = sim::start(SimConfig {
        region: SRC_REGION.into(),
        accounts: vec![src_account.clone()],
        buckets: vec![SimBucket {
            name: SRC_BUCKET.into(),
            account: src_account.name.clone(),
        }],
        synthetic: vec![SyntheticObject {
            bucket: SRC_BUCKET.into(),
            key: KEY.into(),
            size,
        }],
        conn_rate: args.conn_rate,
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the source simulator: {e}"))?;
    let dst_sim = sim::start(SimConfig {
        region: DST_REGION.into(),
        accounts: vec![dst_account.clone()],
        buckets: vec![SimBucket {
            name: DST_BUCKET.into(),
            account: dst_account.name.clone(),
        }],
        discard: vec![DST_BUCKET.into()],
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the destination simulator: {e}"))?;

    let metrics_addr = args
        .metrics_listen
        .or_else(free_port)
        .ok_or("no free port for the metrics endpoint")?;
    serve_metrics(metrics_addr)?;

    println!(
        "source:      simulated OSS {SRC_REGION} (account {}) at {}",
        src_account.name,
        src_sim.endpoint()
    );
    println!(
        "destination: simulated OSS {DST_REGION} (account {}) at {}",
        dst_account.name,
        dst_sim.endpoint()
    );
    println!("metrics:     http://{metrics_addr}/metrics");
    println!(
        "relaying oss://{SRC_BUCKET}/{KEY} ({}) -> oss://{DST_BUCKET}/{KEY}",
        human_bytes(size as f64)
    );

    let client = |endpoint: String, region: &str, acct: &SimAccount| {
        let creds = Arc::new(StaticProvider(Credentials::new(
            acct.access_key_id.clone(),
            acct.access_key_secret.clone(),
        )));
        OssClient::new(OssConfig::new(
            EndpointSpec::Url(endpoint),
            region.to_string(),
            creds,
        ))
        .map_err(|e| format!("cannot build the OSS client: {e}"))
    };
    let src = Location {
        store: Arc::new(client(src_sim.endpoint(), SRC_REGION, &src_account)?.bucket(SRC_BUCKET)),
        key: KEY.into(),
    };
    let dst = Location {
        store: Arc::new(client(dst_sim.endpoint(), DST_REGION, &dst_account)?.bucket(DST_BUCKET)),
        key: KEY.into(),
    };
    let opts = CopyOptions {
        concurrency: args.concurrency,
        state_dir: None,
        ..CopyOptions::default()
    };
    let cancel = CancellationToken::new();
    install_interrupt_handler(cancel.clone());
    let prog = Arc::new(Progress::default());
    let bar = (!args.quiet).then(|| progress::spawn(prog.clone()));
    let result = transfer::copy(src, dst, opts, prog, cancel).await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    let summary = match result {
        Ok(s) => s,
        Err(e) if matches!(e.root(), TransferError::Interrupted { .. }) => {
            eprintln!("interrupted");
            return Ok(EXIT_INTERRUPTED);
        }
        Err(e) => return Err(e.to_string()),
    };
    // Ask the simulators themselves, independently of the engine's own claim.
    let src_truth = src_sim.object_crc64(SRC_BUCKET, KEY);
    let dst_truth = dst_sim.object_crc64(DST_BUCKET, KEY);
    if src_truth.is_none() || src_truth != dst_truth {
        return Err(format!(
            "verification failed: source {src_truth:?} != destination {dst_truth:?} (size, CRC-64)"
        ));
    }
    println!("{}", progress::summary_line(&summary));
    println!(
        "verified:    destination CRC-64 {} equals the source's (checked in both simulators)",
        summary.crc64
    );
    println!(
        "throughput:  {}/s over {} parts of up to {} with {} streams",
        human_bytes(summary.throughput_bytes_per_sec),
        summary.parts,
        human_bytes(summary.part_size as f64),
        args.concurrency
    );
    src_sim.shutdown().await;
    dst_sim.shutdown().await;
    Ok(EXIT_OK)
}
