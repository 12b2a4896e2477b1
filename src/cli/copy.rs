//! `ossrelay copy SRC DST`: the relay engine on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::util::{install_interrupt_handler, parse_rate, parse_size};
use super::{progress, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::locate::{self, ObjectUrl, SideOptions};
use crate::transfer::{
    self, CopyOptions, DecoderCpu, DiskFormat, InputFormat, Progress, Relayed, TransferError,
    Transform, UnpackMode, UnpackTarget,
};

/// Flags of `ossrelay copy` (names are a contract: scripts and checks rely on them).
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: oss://BUCKET/KEY, s3://BUCKET/KEY or a local file path.
    #[arg(required_unless_present = "manifest")]
    pub src: Option<String>,
    /// Destination: oss://BUCKET/KEY or s3://BUCKET/KEY (a key ending in `/` takes the
    /// source's name) or a path.
    #[arg(required_unless_present = "manifest")]
    pub dst: Option<String>,

    /// Source region (oss://: the profile's region_id, else cn-hangzhou; s3://: AWS_REGION,
    /// AWS_DEFAULT_REGION, the profile's region, else us-east-1).
    #[arg(long)]
    pub src_region: Option<String>,
    /// Destination region (defaults as for --src-region).
    #[arg(long)]
    pub dst_region: Option<String>,
    /// Source endpoint URL override, e.g. http://127.0.0.1:40123.
    #[arg(long)]
    pub src_endpoint: Option<String>,
    /// Destination endpoint URL override.
    #[arg(long)]
    pub dst_endpoint: Option<String>,
    /// Use the source region's -internal endpoint.
    #[arg(long)]
    pub src_internal: bool,
    /// Use the destination region's -internal endpoint.
    #[arg(long)]
    pub dst_internal: bool,
    /// Profile for the source: an aliyun CLI profile for oss://, an AWS profile
    /// (~/.aws/credentials, ~/.aws/config) for s3:// (default: the credential chain).
    #[arg(long)]
    pub src_profile: Option<String>,
    /// Profile for the destination (as for --src-profile).
    #[arg(long)]
    pub dst_profile: Option<String>,
    /// Which S3 service an s3:// source is: aws, cos, obs, gcs, minio, r2, oss, other
    /// (default aws). Sets the endpoint from the region, addressing, part limits and which
    /// checksums the store honours.
    #[arg(long, value_name = "PROVIDER")]
    pub src_provider: Option<String>,
    /// Which S3 service an s3:// destination is (as for --src-provider).
    #[arg(long, value_name = "PROVIDER")]
    pub dst_provider: Option<String>,
    /// Path-style addressing for an s3:// source (default for IP and localhost endpoints).
    #[arg(long)]
    pub src_path_style: bool,
    /// Path-style addressing for an s3:// destination.
    #[arg(long)]
    pub dst_path_style: bool,
    /// AWS STS endpoint for the source's role credentials (default AWS_ENDPOINT_URL_STS,
    /// else the regional STS endpoint).
    #[arg(long, value_name = "URL")]
    pub src_sts_endpoint: Option<String>,
    /// AWS STS endpoint for the destination's role credentials.
    #[arg(long, value_name = "URL")]
    pub dst_sts_endpoint: Option<String>,
    /// Fail (exit 1) when nothing proves the destination holds the bytes read: no part or
    /// whole-object checksum of the destination's own matched ours.
    #[arg(long)]
    pub require_proof: bool,

    /// Connections moving part bytes at once (a part waiting only for its UploadPart
    /// response holds none).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Near the end of a copy, send at most this many straggling parts (well below the
    /// median rate) a second time on another connection; the first acknowledged wins
    /// (0 = never).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_hedges: u32,
    /// Part size, e.g. 64MiB (default: automatic, at least 64 MiB and enough for 10,000 parts).
    #[arg(long, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Buffer budget for all streams together.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    pub memory: u64,
    /// Cap on bytes per second, e.g. 200MiB/s (default: unlimited).
    #[arg(long, value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// Resume state directory (default: $XDG_STATE_HOME/ossrelay or ~/.local/state/ossrelay).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Discard saved state, abort its upload, and start over.
    #[arg(long)]
    pub no_resume: bool,
    /// Print a final machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Serve Prometheus /metrics on this address while running, e.g. 127.0.0.1:9871.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Unpack a gzip'd tar (an ECS `.raw.tar.gz` export) into its one RAW file: `auto` when
    /// the source ends in .tar.gz or .tgz, `always`, or `never` (copy the bytes as they are).
    /// A destination ending in `/` is named after the tar member.
    #[arg(long, value_enum, default_value_t = UnpackMode::Auto)]
    pub unpack: UnpackMode,
    /// Disk format to write: `raw` (the bytes as they are), `qcow2` or `vhd-dynamic`
    /// (all-zero clusters/blocks are not sent), `vhd` (fixed: RAW plus a footer). Converts
    /// a RAW source, or the RAW unpacked from a .raw.tar.gz, on the fly.
    #[arg(long, value_enum, default_value_t = DiskFormat::Raw)]
    pub format: DiskFormat,
    /// Disk format of a plain source: `auto` reads QCOW2, stream-optimized VMDK and dynamic
    /// VHD by their magic numbers (a .vhd key without one as a fixed VHD) when --format is not
    /// raw; with --format raw the source is copied as it is unless a format is named here.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,
    /// Where the unpack decoder runs: `auto` gives it a CPU of its own (other threads keep
    /// the rest) when the process may use two or more; `off` leaves it to the OS scheduler.
    #[arg(long, value_enum, default_value_t = DecoderCpu::Auto)]
    pub decoder_cpu: DecoderCpu,
    /// Seconds a request may wait for its response, or a body may go without moving a byte,
    /// before it is cut and retried on a new connection (a stalled or slow-loris peer).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_stall_timeout)]
    pub stall_timeout: std::time::Duration,
    /// A sharded copy (`--shards N --plan`, `--manifest URL --shard I`, `--complete`).
    #[command(flatten)]
    pub shard: super::shard::ShardArgs,
}

/// `--stall-timeout`: seconds (fractions allowed, optional `s` suffix), 0.1 to 3600.
fn parse_stall_timeout(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let t = t.strip_suffix('s').unwrap_or(t);
    match t.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.1 and 3600, e.g. 30 or 2.5"
        )),
    }
}

/// Default resume-state directory: `$XDG_STATE_HOME/ossrelay` or `~/.local/state/ossrelay`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("ossrelay"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".local/state/ossrelay"))
}

/// Installs the Prometheus exporter on `addr` (no token: a copy's metrics hold no secret).
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    crate::metrics::builder()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}; pick a free ADDR:PORT"))?;
    crate::metrics::after_install(true);
    // The exporter renders on its own task: refresh the process gauges at the finest
    // useful scrape interval.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            crate::metrics::collect_process();
        }
    });
    Ok(())
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

/// The engine's options from `copy`'s flags.
pub(super) fn copy_options(args: &CopyArgs) -> CopyOptions {
    CopyOptions {
        concurrency: args.concurrency,
        part_size: args.part_size,
        memory: args.memory,
        bandwidth: args.bandwidth,
        state_dir: args.state_dir.clone().or_else(default_state_dir),
        resume: !args.no_resume,
        decoder_cpu: args.decoder_cpu,
        max_hedges: args.max_hedges,
        ..CopyOptions::default()
    }
}

/// How to reach the source and the destination, from `copy`'s flags.
pub(super) fn side_options(args: &CopyArgs) -> (SideOptions, SideOptions) {
    let src_side = SideOptions {
        region: args.src_region.clone(),
        endpoint: args.src_endpoint.clone(),
        internal: args.src_internal,
        profile: args.src_profile.clone(),
        provider: args.src_provider.clone(),
        path_style: args.src_path_style,
        sts_endpoint: args.src_sts_endpoint.clone(),
        region_flag: Some("--src-region"),
        read_timeout: Some(args.stall_timeout),
    };
    let dst_side = SideOptions {
        region: args.dst_region.clone(),
        endpoint: args.dst_endpoint.clone(),
        internal: args.dst_internal,
        profile: args.dst_profile.clone(),
        provider: args.dst_provider.clone(),
        path_style: args.dst_path_style,
        sts_endpoint: args.dst_sts_endpoint.clone(),
        region_flag: Some("--dst-region"),
        read_timeout: Some(args.stall_timeout),
    };
    (src_side, dst_side)
}

/// Runs the command; returns the exit code.
pub async fn run(args: CopyArgs) -> i32 {
    if args.shard.active() {
        if args.concurrency == 0 || args.concurrency > 1024 {
            return usage("--concurrency must be between 1 and 1024");
        }
        let (src_side, dst_side) = side_options(&args);
        return super::shard::run(&args, copy_options(&args), src_side, dst_side).await;
    }
    let src: ObjectUrl = match args.src.as_deref().unwrap_or_default().parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("source: {e}")),
    };
    let dst: ObjectUrl = match args.dst.as_deref().unwrap_or_default().parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("destination: {e}")),
    };
    if !matches!(src, ObjectUrl::Local(_)) && (src.key().is_empty() || src.key().ends_with('/')) {
        let scheme = src.to_string();
        let scheme = scheme.split("://").next().unwrap_or("oss");
        return usage(format!(
            "source {src} does not name an object: give {scheme}://BUCKET/KEY"
        ));
    }
    if args.concurrency == 0 {
        return usage("--concurrency must be at least 1");
    }
    if args.concurrency > 1024 {
        return usage("--concurrency above 1024 is not supported");
    }
    let opts = copy_options(&args);
    let (src_side, dst_side) = side_options(&args);
    for (side, flag) in [(&src_side, "--src-provider"), (&dst_side, "--dst-provider")] {
        if let Err(e) = locate::provider(side) {
            return usage(format!("{flag}: {e}"));
        }
    }
    match dst.limits(&dst_side) {
        Ok(limits) => {
            if let Err(e) = opts.validate(limits) {
                return usage(e);
            }
        }
        Err(e) => return usage(format!("--dst-provider: {e}")),
    }
    let src_loc = match locate::resolve(&src, &src_side, None) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: source {src}: {e}");
            return EXIT_FAILED;
        }
    };
    let src_name = src.name();
    let unpack = args.unpack.applies(&src_name);
    // When unpacking, a destination "directory" is named after the tar member, known only
    // once the archive is being read: check now that the destination can be reached at all.
    if unpack && !matches!(args.input_format, InputFormat::Auto | InputFormat::Raw) {
        return usage(format!(
            "--input-format {} does not apply to a .tar.gz source (it holds a RAW disk); pass \
             --unpack never to read the source itself as {0}",
            args.input_format.name()
        ));
    }
    let decode_input =
        !unpack && !matches!(args.input_format, InputFormat::Auto | InputFormat::Raw);
    let convert = args.format != DiskFormat::Raw || decode_input;
    let probe_name = if unpack || convert {
        Some("unpacked.raw".to_string())
    } else {
        locate::base_name(&src)
    };
    let dst_loc = match locate::resolve(&dst, &dst_side, probe_name.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: destination {dst}: {e}");
            return EXIT_FAILED;
        }
    };
    // The destination as resolved (a directory destination carries its file name now).
    let dst_object = dst.with_key(&dst_loc.key);
    if locate::same_object(&src, &src_side, &dst_object, &dst_side) {
        return usage(format!(
            "source and destination are the same object ({})",
            src_loc.store.describe(&src_loc.key)
        ));
    }
    if let Some(addr) = args.metrics_listen {
        if let Err(e) = serve_metrics(addr) {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
        if !args.quiet {
            eprintln!("metrics: http://{addr}/metrics");
        }
    }

    let cancel = CancellationToken::new();
    install_interrupt_handler(cancel.clone());
    let prog = Arc::new(Progress::default());
    let bar = (!args.quiet).then(|| progress::spawn(prog.clone()));
    let target = if unpack || convert {
        let (dst, dst_side) = (dst.clone(), dst_side.clone());
        UnpackTarget::Named(Box::new(move |member: &str| {
            locate::resolve(&dst, &dst_side, Some(member))
                .map_err(|e| format!("destination {dst}: {e}"))
        }))
    } else {
        UnpackTarget::Fixed(dst_loc)
    };
    let transform = if convert {
        Transform::Convert {
            format: args.format,
            unpack,
            input: args.input_format,
        }
    } else if unpack {
        Transform::Unpack
    } else {
        Transform::None
    };
    let result = transfer::relay(src_loc, target, transform, opts, prog, cancel).await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    match result {
        Ok(finished) => {
            let json = serde_json::to_string(&finished);
            let summary = finished.summary();
            if args.json {
                match json {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the summary: {e}");
                        return EXIT_FAILED;
                    }
                }
            } else if !args.quiet {
                eprintln!("{}", progress::summary_line(summary));
                if let Relayed::Converted(c) = &finished {
                    eprintln!(
                        "wrote {} ({} of {} {}-byte units hold data) for a RAW disk of {} bytes, \
                         CRC-64 {}",
                        c.format.name(),
                        c.units_written,
                        c.units,
                        c.unit_size,
                        c.raw_bytes,
                        c.raw_crc64
                    );
                }
                if let Relayed::Unpacked(u) = &finished {
                    eprintln!(
                        "unpacked {:?} from {} compressed bytes (CRC-64 {}{}); gzip CRC-32 and \
                         length verified",
                        u.member,
                        u.source_bytes,
                        u.source_crc64,
                        if u.copy.source_crc64_known {
                            ", matches the source"
                        } else {
                            ""
                        }
                    );
                }
            }
            if !summary.end_to_end {
                eprintln!(
                    "warning: nothing proves that {} holds the bytes read from {}: the \
                     destination reported no checksum this copy could compare{}",
                    summary.destination,
                    summary.source,
                    if args.require_proof {
                        " (--require-proof: failing)"
                    } else {
                        "; pass --require-proof to treat this as a failure"
                    }
                );
                if args.require_proof {
                    return EXIT_FAILED;
                }
            }
            EXIT_OK
        }
        Err(e) if matches!(e.root(), TransferError::Interrupted { .. }) => {
            eprintln!("interrupted: state saved; rerun the same command to resume");
            EXIT_INTERRUPTED
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}
