//! `ossrelay import`: ImportImage from disk objects in a bucket of the region; `--like` copies
//! the attributes of an existing image; with `--wait`, poll until the image is Available.

use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::cloud::{image_line, parse_duration, EndpointArgs, StatusLine};
use super::export::wait_failed;
use super::util::install_interrupt_handler;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::acs::ecs::{
    DescribeImagesInput, EcsApi, Image, ImageFormat, ImportDisk, ImportImageInput,
};
use crate::acs::ram::{retry_missing_role, RoleRetry};
use crate::acs::wait::{hint_suffix, wait_image, PollSchedule};
use crate::cloud::Side;
use crate::locate::ObjectUrl;
use crate::migrate::is_tar_gz;

/// CPU architecture of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "arm64")]
    Arm64,
}

/// OS family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OsType {
    Linux,
    Windows,
}

/// Firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootMode {
    #[value(name = "BIOS")]
    Bios,
    #[value(name = "UEFI")]
    Uefi,
}

/// Flags of `ossrelay import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Region of the bucket and of the new image.
    #[arg(long)]
    pub region: String,
    /// Name of the new image.
    #[arg(long)]
    pub image_name: String,
    /// Disk object, oss://BUCKET/KEY; the first is the system disk (repeatable, up to 17).
    #[arg(long = "disk", required = true)]
    pub disks: Vec<String>,
    /// Copy architecture, OS type, platform, boot mode, disk sizes and features from an
    /// existing image, REGION:m-… (read with the same credentials).
    #[arg(long)]
    pub like: Option<String>,
    /// OS type of the image.
    #[arg(long, value_enum)]
    pub os_type: Option<OsType>,
    /// Platform, e.g. Ubuntu, CentOS, "Others Linux".
    #[arg(long)]
    pub platform: Option<String>,
    /// CPU architecture.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// Firmware (arm64 needs UEFI).
    #[arg(long, value_enum)]
    pub boot_mode: Option<BootMode>,
    /// Format of every disk (default: from the object name, else detected by ECS).
    #[arg(long, value_enum)]
    pub format: Option<ImageFormat>,
    /// Wait until the image is Available.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (the import keeps running).
    #[arg(long, value_parser = parse_duration, default_value = "12h")]
    pub timeout: Duration,
    /// With --wait: print one JSON object {image_id, task_id, status} on stdout.
    #[arg(long)]
    pub json: bool,
    /// aliyun CLI profile (default: the credential chain).
    #[arg(long)]
    pub profile: Option<String>,
    /// Retries, 5 s apart, while ECS reports its service role missing (a new role propagates).
    #[arg(long, default_value_t = 12)]
    pub role_retries: u32,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
}

/// The final `--json` object.
#[derive(Debug, serde::Serialize)]
pub struct ImportSummary {
    pub image_id: String,
    pub task_id: String,
    pub status: String,
}

/// Parses `REGION:m-…`.
pub fn parse_like(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((r, id)) if !r.is_empty() && id.starts_with("m-") => Ok((r.into(), id.into())),
        _ => Err(format!(
            "--like {s:?}: give REGION:IMAGE_ID, e.g. cn-hangzhou:m-bp1abc"
        )),
    }
}

/// Builds the ImportImage input: `like` supplies defaults, explicit flags win.
pub fn build_input(
    args: &ImportArgs,
    disks: &[(String, String)],
    like: Option<&Image>,
) -> ImportImageInput {
    let from_like = |f: fn(&Image) -> &String| {
        like.map(|i| f(i).clone())
            .filter(|v: &String| !v.is_empty())
    };
    let mut like_sizes: Vec<Option<u64>> = Vec::new();
    if let Some(img) = like {
        like_sizes.push(img.system_disk().and_then(|d| d.size_gib()));
        like_sizes.extend(img.data_disks().iter().map(|d| d.size_gib()));
    }
    ImportImageInput {
        image_name: args.image_name.clone(),
        description: like.map(|i| format!("Imported by ossrelay like {}", i.image_id)),
        architecture: args
            .arch
            .map(|a| match a {
                Arch::X86_64 => "x86_64".to_string(),
                Arch::Arm64 => "arm64".to_string(),
            })
            .or_else(|| from_like(|i| &i.architecture)),
        os_type: args
            .os_type
            .map(|o| match o {
                OsType::Linux => "linux".to_string(),
                OsType::Windows => "windows".to_string(),
            })
            .or_else(|| from_like(|i| &i.os_type)),
        platform: args.platform.clone().or_else(|| from_like(|i| &i.platform)),
        boot_mode: args
            .boot_mode
            .map(|b| match b {
                BootMode::Bios => "BIOS".to_string(),
                BootMode::Uefi => "UEFI".to_string(),
            })
            .or_else(|| from_like(|i| &i.boot_mode)),
        license_type: None,
        role_name: None,
        disks: disks
            .iter()
            .enumerate()
            .map(|(n, (bucket, key))| ImportDisk {
                oss_bucket: bucket.clone(),
                oss_object: key.clone(),
                format: args.format.or_else(|| ImageFormat::from_key(key)),
                disk_image_size: like_sizes.get(n).copied().flatten(),
            })
            .collect(),
        nvme_support: from_like(|i| &i.features.nvme_support),
        imds_support: from_like(|i| &i.features.imds_support),
        tags: Vec::new(),
        client_token: None,
    }
}

/// Runs the command; returns the exit code.
pub async fn run(args: ImportArgs) -> i32 {
    if args.json && !args.wait {
        eprintln!("error: --json needs --wait (without it only the image id is printed)");
        return EXIT_USAGE;
    }
    if args.disks.len() > 17 {
        eprintln!("error: ImportImage takes at most 17 disks (1 system + 16 data)");
        return EXIT_USAGE;
    }
    let mut disks = Vec::new();
    for d in &args.disks {
        match d.parse::<ObjectUrl>() {
            Ok(ObjectUrl::Oss { bucket, key }) if !key.is_empty() && !key.ends_with('/') => {
                if is_tar_gz(&key) {
                    eprintln!("warning: {d} is a tarball; ECS does not document importing .tar.gz (unpack it to .raw, as `ossrelay migrate` does)");
                }
                disks.push((bucket, key));
            }
            Ok(_) => {
                eprintln!("error: --disk {d}: give oss://BUCKET/KEY of an object");
                return EXIT_USAGE;
            }
            Err(e) => {
                eprintln!("error: --disk: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let like = match args.like.as_deref().map(parse_like).transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let side = match Side::new(
        &args.region,
        args.profile.as_deref(),
        args.endpoints.endpoints(),
        "--region",
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    // A missing or empty disk object fails the import only after the task started; check now.
    for (bucket, key) in &disks {
        let b = match side.bucket(bucket) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: --disk oss://{bucket}/{key}: {e}");
                return EXIT_USAGE;
            }
        };
        match b.head_object(key).await {
            Ok(meta) if meta.size == 0 => {
                eprintln!("error: oss://{bucket}/{key} is empty");
                return EXIT_FAILED;
            }
            Ok(_) => {}
            Err(e) if e.class == crate::store::ErrorClass::NotFound => {
                eprintln!("error: oss://{bucket}/{key}: {e}");
                return EXIT_FAILED;
            }
            Err(e) => tracing::warn!(error = %e, "cannot check oss://{bucket}/{key}; continuing"),
        }
    }
    let like_image = match &like {
        Some((region, id)) => {
            let ecs = side.ecs_in(region);
            match ecs.describe_images(&DescribeImagesInput::by_id(id)).await {
                Ok(list) => match list.images.into_iter().find(|i| &i.image_id == id) {
                    Some(i) => Some(i),
                    None => {
                        eprintln!("error: --like: image {id} not found in {region}");
                        return EXIT_FAILED;
                    }
                },
                Err(e) => {
                    eprintln!("error: --like: {e}");
                    return EXIT_FAILED;
                }
            }
        }
        None => None,
    };
    let input = build_input(&args, &disks, like_image.as_ref());
    let started = retry_missing_role(
        RoleRetry {
            retries: args.role_retries,
            ..RoleRetry::default()
        },
        || side.ecs.import_image(&input),
    )
    .await;
    let (image_id, task_id) = match started {
        Ok(t) if !t.image_id.is_empty() => (t.image_id, t.task_id),
        Ok(_) => {
            eprintln!("error: ImportImage answered without an ImageId");
            return EXIT_FAILED;
        }
        Err(e) => {
            let hint = hint_suffix(e.code());
            eprintln!("error: {e}{hint}");
            return EXIT_FAILED;
        }
    };
    if !args.wait {
        eprintln!("import task {task_id} started");
        println!("{image_id}");
        return EXIT_OK;
    }
    eprintln!("image {image_id} importing (task {task_id})");
    let cancel = CancellationToken::new();
    install_interrupt_handler(cancel.clone());
    let schedule = PollSchedule {
        timeout: args.timeout,
        ..PollSchedule::default()
    };
    let status = StatusLine::default();
    let mut show = |i: &Image| status.show(image_line(i));
    let image = match wait_image(&side.ecs, &image_id, &schedule, &cancel, &mut show).await {
        Ok(i) => i,
        Err(e) => return wait_failed(e, &format!("the import of {image_id}")),
    };
    if args.json {
        let s = ImportSummary {
            image_id,
            task_id,
            status: image.status,
        };
        match serde_json::to_string(&s) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode the summary: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        println!("{image_id}");
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::ecs::{DiskDeviceMapping, ImageFeatures};
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: ImportArgs,
    }

    fn parse(extra: &[&str]) -> Result<ImportArgs, clap::Error> {
        let mut v = vec!["x", "--region", "eu-central-1", "--image-name", "img"];
        v.extend_from_slice(extra);
        W::try_parse_from(v).map(|w| w.a)
    }

    #[test]
    fn flags_and_like_precedence() {
        assert!(parse(&[]).is_err(), "--disk is required");
        assert!(parse(&["--disk", "oss://b1/k", "--arch", "sparc"]).is_err());
        let a = parse(&[
            "--disk",
            "oss://bkt/sys.raw",
            "--disk",
            "oss://bkt/data.qcow2",
            "--like",
            "cn-hangzhou:m-src",
            "--boot-mode",
            "BIOS",
            "--arch",
            "x86_64",
            "--wait",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            parse_like(a.like.as_deref().unwrap()).unwrap(),
            ("cn-hangzhou".to_string(), "m-src".to_string())
        );
        assert!(parse_like("m-src").is_err());
        let like = Image {
            image_id: "m-src".into(),
            architecture: "arm64".into(),
            os_type: "linux".into(),
            platform: "Ubuntu".into(),
            boot_mode: "UEFI".into(),
            features: ImageFeatures {
                nvme_support: "supported".into(),
                imds_support: String::new(),
            },
            disk_device_mappings: vec![
                DiskDeviceMapping {
                    size: "40".into(),
                    r#type: "system".into(),
                    ..Default::default()
                },
                DiskDeviceMapping {
                    size: "200".into(),
                    r#type: "data".into(),
                    ..Default::default()
                },
            ],
            ..Image::default()
        };
        let disks = vec![
            ("bkt".to_string(), "sys.raw".to_string()),
            ("bkt".to_string(), "data.qcow2".to_string()),
        ];
        let input = build_input(&a, &disks, Some(&like));
        // Explicit flags win over --like; the rest comes from the like image.
        assert_eq!(input.boot_mode.as_deref(), Some("BIOS"));
        assert_eq!(input.architecture.as_deref(), Some("x86_64"));
        assert_eq!(input.os_type.as_deref(), Some("linux"));
        assert_eq!(input.platform.as_deref(), Some("Ubuntu"));
        assert_eq!(input.nvme_support.as_deref(), Some("supported"));
        assert_eq!(input.imds_support, None);
        assert_eq!(input.disks[0].disk_image_size, Some(40));
        assert_eq!(input.disks[1].disk_image_size, Some(200));
        assert_eq!(input.disks[0].format, Some(ImageFormat::Raw));
        assert_eq!(input.disks[1].format, Some(ImageFormat::Qcow2));
        let plain = build_input(&a, &disks[..1], None);
        assert_eq!(plain.os_type, None);
        assert_eq!(plain.disks[0].disk_image_size, None);
    }
}
