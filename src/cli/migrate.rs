//! `ossrelay migrate`: export an image in one region/account, relay its disks, import it in
//! another, resumably (see [`crate::migrate`]).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::cloud::{image_line, parse_duration, task_line, StatusLine};
use super::copy::default_state_dir;
use super::progress;
use super::util::{human_bytes, install_interrupt_handler, parse_rate, parse_size};
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::acs::ecs::ImageFormat;
use crate::cloud::Endpoints;
use crate::migrate::setup::{MigrateParams, SetupError};
use crate::migrate::{self, Cloud, Event, MigrateDiskFormat, MigrateError};
use crate::transfer::CopyOptions;

/// Flags of `ossrelay migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Cloud of the source image: aliyun (ECS image m-…, OSS bucket) or aws (AMI ami-…, S3
    /// bucket, EC2 VM Import/Export).
    #[arg(long, value_enum, default_value_t = Cloud::Aliyun)]
    pub src_cloud: Cloud,
    /// Cloud of the new image.
    #[arg(long, value_enum, default_value_t = Cloud::Aliyun)]
    pub dst_cloud: Cloud,
    /// Region of the source image.
    #[arg(long)]
    pub src_region: String,
    /// Source image: an ECS custom image m-… or an AMI ami-….
    #[arg(long)]
    pub image_id: String,
    /// Bucket in the source region that receives the export (OSS or S3, by --src-cloud).
    #[arg(long)]
    pub src_bucket: String,
    /// Region of the new image.
    #[arg(long)]
    pub dst_region: String,
    /// Bucket in the destination region the import reads from.
    #[arg(long)]
    pub dst_bucket: String,
    /// Profile of the source account: aliyun CLI profile, or ~/.aws profile for aws
    /// (default: the credential chain).
    #[arg(long)]
    pub src_profile: Option<String>,
    /// Profile of the destination account (as --src-profile).
    #[arg(long)]
    pub dst_profile: Option<String>,
    /// Name of the new image (default: the source image's name).
    #[arg(long)]
    pub image_name: Option<String>,
    /// Keep the exported and relayed objects (default: delete them once the image is Available).
    #[arg(long)]
    pub keep_objects: bool,
    /// Where the migration and copy state live (default: $XDG_STATE_HOME/ossrelay or ~/.local/state/ossrelay).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// ExportImage object prefix (letters and digits).
    #[arg(long, default_value = "ossrelay")]
    pub export_prefix: String,
    /// Export format (RAW arrives as .raw.tar.gz and is unpacked on the way; qcow2/vhd only in some regions).
    #[arg(long, value_enum)]
    pub format: Option<ImageFormat>,
    /// What a RAW export is relayed and imported as: raw (default), qcow2 (converted on the
    /// way, zeros never sent; ECS imports only), vhd (fixed: ECS refuses dynamic VHDs), auto
    /// (for ECS: qcow2 when the export's sampled share of all-zero clusters outweighs
    /// QCOW2's tables, else raw; qcow2 for a .raw.tar.gz, which cannot be sampled before it
    /// is decoded; raw for EC2).
    #[arg(long, value_enum, default_value_t = MigrateDiskFormat::Raw)]
    pub disk_format: MigrateDiskFormat,
    /// Give up waiting for the export or the import after this long (each).
    #[arg(long, value_parser = parse_duration, default_value = "12h")]
    pub timeout: Duration,
    /// Print one final JSON object {image_id, region, cloud, disks} on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// End this migration for good instead of running it: cancel its running export or
    /// import task, abort its half-sent relay upload, delete its intermediate objects (unless
    /// --keep-objects) and forget its state. Ctrl-C only interrupts (a rerun resumes).
    #[arg(long)]
    pub abandon: bool,
    /// Retries, 5 s apart, while ECS reports its service role missing (a new role propagates).
    #[arg(long, default_value_t = 12)]
    pub role_retries: u32,

    /// Source object store endpoint override (OSS, or S3 for aws).
    #[arg(long)]
    pub src_endpoint: Option<String>,
    /// Destination object store endpoint override (OSS, or S3 for aws).
    #[arg(long)]
    pub dst_endpoint: Option<String>,
    /// Source EC2 endpoint override (aws).
    #[arg(long)]
    pub src_ec2_endpoint: Option<String>,
    /// Destination EC2 endpoint override (aws).
    #[arg(long)]
    pub dst_ec2_endpoint: Option<String>,
    /// Source IAM endpoint override (aws).
    #[arg(long)]
    pub src_iam_endpoint: Option<String>,
    /// Destination IAM endpoint override (aws).
    #[arg(long)]
    pub dst_iam_endpoint: Option<String>,
    /// Source ECS endpoint override.
    #[arg(long)]
    pub src_ecs_endpoint: Option<String>,
    /// Destination ECS endpoint override.
    #[arg(long)]
    pub dst_ecs_endpoint: Option<String>,
    /// Source RAM endpoint override.
    #[arg(long)]
    pub src_ram_endpoint: Option<String>,
    /// Destination RAM endpoint override.
    #[arg(long)]
    pub dst_ram_endpoint: Option<String>,
    /// Source STS endpoint override (Alibaba or AWS STS, by --src-cloud).
    #[arg(long)]
    pub src_sts_endpoint: Option<String>,
    /// Destination STS endpoint override.
    #[arg(long)]
    pub dst_sts_endpoint: Option<String>,

    /// Parts in flight per disk relay.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Part size, e.g. 64MiB (default: automatic).
    #[arg(long, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Buffer budget for all streams together.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    pub memory: u64,
    /// Cap on bytes per second, e.g. 200MiB/s.
    #[arg(long, value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
}

/// Prints migration [`Event`]s on stderr: stage changes, task progress, a progress bar per disk.
pub(crate) struct Printer {
    quiet: bool,
    status: StatusLine,
    bar: Mutex<Option<progress::Bar>>,
}

impl Printer {
    pub(crate) fn new(quiet: bool) -> Self {
        Self {
            quiet,
            status: StatusLine::default(),
            bar: Mutex::new(None),
        }
    }

    pub(crate) fn on(&self, e: Event<'_>) {
        if self.quiet {
            return;
        }
        let (status, bar) = (&self.status, &self.bar);
        match e {
            Event::Resumed { stage, path } => eprintln!(
                "resuming at stage {} (state {})",
                stage.as_str(),
                path.display()
            ),
            Event::Stage(s) => tracing::info!(stage = s.as_str(), "migration stage"),
            Event::ExportStarted { task_id, adopted } => eprintln!(
                "export task {task_id} {}",
                if adopted {
                    "found running, waiting for it"
                } else {
                    "started"
                }
            ),
            Event::ExportProgress(t) => status.show(task_line("export", t)),
            Event::Exported(disks) => {
                for d in disks {
                    eprintln!("exported {d}");
                }
            }
            Event::TaskProgress(line) => status.show(line),
            Event::DiskStarted {
                index,
                total,
                source,
                destination,
                progress: p,
            } => {
                eprintln!(
                    "relaying disk {}/{total}: {source} -> {destination}",
                    index + 1
                );
                let mut g = bar.lock().unwrap_or_else(|p| p.into_inner());
                *g = Some(progress::spawn(p));
            }
            Event::DiskDone { result, .. } => {
                if let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    tokio::spawn(b.finish());
                }
                let zeros = result
                    .zero_share
                    .map(|z| format!(", {:.1} % of the sampled RAW in zero clusters", z * 100.0))
                    .unwrap_or_default();
                eprintln!(
                    "relayed {} ({}, CRC-64 {}{zeros})",
                    result.destination,
                    human_bytes(result.bytes as f64),
                    result.crc64
                );
            }
            Event::ImportStarted {
                image_id,
                task_id,
                adopted,
            } => eprintln!(
                "image {image_id} {}{}",
                if adopted {
                    "found importing, waiting for it"
                } else {
                    "importing"
                },
                task_id.map(|t| format!(" (task {t})")).unwrap_or_default()
            ),
            Event::ImportProgress(i) => status.show(image_line(i)),
            Event::Deleted { object } => eprintln!("deleted {object}"),
        }
    }

    /// Stops a progress bar still running (after a failure mid-relay).
    pub(crate) async fn finish(&self) {
        let last = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(b) = last {
            b.finish().await;
        }
    }
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

impl MigrateArgs {
    /// The library's description of this migration (`state_dir` already defaulted).
    pub fn params(&self, state_dir: PathBuf) -> MigrateParams {
        MigrateParams {
            src_cloud: self.src_cloud,
            dst_cloud: self.dst_cloud,
            src_region: self.src_region.clone(),
            image_id: self.image_id.clone(),
            src_bucket: self.src_bucket.clone(),
            dst_region: self.dst_region.clone(),
            dst_bucket: self.dst_bucket.clone(),
            src_profile: self.src_profile.clone(),
            dst_profile: self.dst_profile.clone(),
            image_name: self.image_name.clone(),
            keep_objects: self.keep_objects,
            export_prefix: self.export_prefix.clone(),
            format: self.format,
            disk_format: self.disk_format,
            timeout: self.timeout,
            role_retries: self.role_retries,
            src: Endpoints {
                oss: self.src_endpoint.clone(),
                ecs: self.src_ecs_endpoint.clone(),
                ram: self.src_ram_endpoint.clone(),
                sts: self.src_sts_endpoint.clone(),
                ec2: self.src_ec2_endpoint.clone(),
                iam: self.src_iam_endpoint.clone(),
            },
            dst: Endpoints {
                oss: self.dst_endpoint.clone(),
                ecs: self.dst_ecs_endpoint.clone(),
                ram: self.dst_ram_endpoint.clone(),
                sts: self.dst_sts_endpoint.clone(),
                ec2: self.dst_ec2_endpoint.clone(),
                iam: self.dst_iam_endpoint.clone(),
            },
            copy: CopyOptions {
                concurrency: self.concurrency,
                part_size: self.part_size,
                memory: self.memory,
                bandwidth: self.bandwidth,
                ..CopyOptions::default()
            },
            state_dir,
        }
    }
}

/// Runs the command; returns the exit code.
pub async fn run(args: MigrateArgs) -> i32 {
    let Some(state_dir) = args.state_dir.clone().or_else(default_state_dir) else {
        return usage("no state directory: pass --state-dir (HOME is not set)");
    };
    let params = args.params(state_dir);
    if let Err(e) = params.validate() {
        return usage(e);
    }
    let (cfg, backends) = match params.prepare().await {
        Ok(x) => x,
        Err(SetupError::Usage(e)) => return usage(e),
        Err(SetupError::Failed(e)) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };

    if args.abandon {
        return match migrate::abandon(&cfg, &backends).await {
            Ok(lines) => {
                for l in lines {
                    eprintln!("{l}");
                }
                EXIT_OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_FAILED
            }
        };
    }
    let cancel = CancellationToken::new();
    install_interrupt_handler(cancel.clone());
    let quiet = args.quiet;
    let printer = Printer::new(quiet);
    let sink = |e: Event<'_>| printer.on(e);
    let result = migrate::migrate(&cfg, &backends, &cancel, &sink).await;
    printer.finish().await;
    match result {
        Ok(out) => {
            if args.json {
                match serde_json::to_string(&out) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the summary: {e}");
                        return EXIT_FAILED;
                    }
                }
            } else {
                if !quiet {
                    eprintln!("image {} is Available in {}", out.image_id, out.region);
                }
                println!("{}", out.image_id);
            }
            EXIT_OK
        }
        Err(e) if e.is_interrupted() => {
            eprintln!("{e}");
            EXIT_INTERRUPTED
        }
        Err(e @ MigrateError::Usage(_)) => usage(e),
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("rerun the same command to resume from this point");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: MigrateArgs,
    }

    #[test]
    fn parses_all_endpoint_flags_and_copy_options() {
        let w = W::try_parse_from([
            "x",
            "--src-region",
            "cn-hangzhou",
            "--image-id",
            "m-1",
            "--src-bucket",
            "src",
            "--dst-region",
            "eu-central-1",
            "--dst-bucket",
            "dst",
            "--src-endpoint",
            "http://a",
            "--dst-endpoint",
            "http://b",
            "--src-ecs-endpoint",
            "http://a",
            "--dst-ecs-endpoint",
            "http://b",
            "--src-ram-endpoint",
            "http://a",
            "--dst-ram-endpoint",
            "http://b",
            "--src-sts-endpoint",
            "http://a",
            "--dst-sts-endpoint",
            "http://b",
            "--keep-objects",
            "--json",
            "--timeout",
            "30m",
            "--concurrency",
            "4",
            "--part-size",
            "8MiB",
            "--format",
            "qcow2",
        ])
        .unwrap();
        let a = w.a;
        assert_eq!(a.dst_ram_endpoint.as_deref(), Some("http://b"));
        assert_eq!(a.src_sts_endpoint.as_deref(), Some("http://a"));
        assert_eq!(a.timeout, Duration::from_secs(1800));
        assert_eq!(a.part_size, Some(8 << 20));
        assert_eq!(a.format, Some(ImageFormat::Qcow2));
        assert_eq!(a.export_prefix, "ossrelay");
        assert!(a.keep_objects && a.json);
        // Every required flag is required.
        assert!(W::try_parse_from(["x", "--src-region", "r", "--image-id", "m-1"]).is_err());
    }
}
