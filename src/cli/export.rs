//! `ossrelay export`: ExportImage into a bucket of the image's region; with `--wait`, poll the
//! task and print the objects it produced.

use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::cloud::{parse_duration, task_line, EndpointArgs, StatusLine};
use super::util::install_interrupt_handler;
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::acs::ecs::{validate_oss_prefix, EcsApi, ExportImageInput, ImageFormat, TaskAttribute};
use crate::acs::ram::{retry_missing_role, RoleRetry};
use crate::acs::wait::{hint_suffix, wait_task, PollSchedule, WaitError};
use crate::cloud::{check_bucket_region, Side};

/// Flags of `ossrelay export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Region of the image.
    #[arg(long)]
    pub region: String,
    /// Custom image to export, m-….
    #[arg(long)]
    pub image_id: String,
    /// Bucket in the same region that receives the disk objects.
    #[arg(long)]
    pub bucket: String,
    /// Object name prefix (1-30 letters and digits).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Disk format; RAW arrives as .raw.tar.gz. Other formats only in some regions.
    #[arg(long, value_enum)]
    pub format: Option<ImageFormat>,
    /// Wait for the task and print each produced object as oss://BUCKET/KEY.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (the task keeps running).
    #[arg(long, value_parser = parse_duration, default_value = "12h")]
    pub timeout: Duration,
    /// With --wait: print one JSON object {task_id, objects} on stdout.
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
pub struct ExportSummary {
    pub task_id: String,
    pub objects: Vec<String>,
}

/// Prints a failed wait with what to do; returns the exit code.
pub(crate) fn wait_failed(e: WaitError, what: &str) -> i32 {
    match e {
        WaitError::Interrupted { .. } => {
            eprintln!("interrupted: {what} keeps running in the cloud; wait for it again or check it in the console");
            EXIT_INTERRUPTED
        }
        other => {
            eprintln!("error: {other}");
            EXIT_FAILED
        }
    }
}

/// `oss://bucket/key` for each produced object.
pub fn object_urls(t: &TaskAttribute, bucket: &str) -> Vec<String> {
    t.exported_objects(bucket)
        .into_iter()
        .map(|o| format!("oss://{}/{}", o.bucket, o.key))
        .collect()
}

/// Runs the command; returns the exit code.
pub async fn run(args: ExportArgs) -> i32 {
    if let Some(p) = &args.prefix {
        if let Err(e) = validate_oss_prefix(p) {
            eprintln!("error: --prefix: {e}");
            return EXIT_USAGE;
        }
    }
    if !args.image_id.starts_with("m-") {
        eprintln!(
            "error: --image-id {:?} is not a custom image id (m-…)",
            args.image_id
        );
        return EXIT_USAGE;
    }
    if args.json && !args.wait {
        eprintln!("error: --json needs --wait (without it only the task id is printed)");
        return EXIT_USAGE;
    }
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
    if let Err(e) = check_bucket_region(&side, &args.bucket, "--bucket").await {
        eprintln!("error: {e}");
        return EXIT_FAILED;
    }
    let input = ExportImageInput {
        image_id: args.image_id.clone(),
        oss_bucket: args.bucket.clone(),
        oss_prefix: args.prefix.clone(),
        image_format: args.format,
        role_name: None,
    };
    let started = retry_missing_role(
        RoleRetry {
            retries: args.role_retries,
            ..RoleRetry::default()
        },
        || side.ecs.export_image(&input),
    )
    .await;
    let task_id = match started {
        Ok(t) if !t.task_id.is_empty() => t.task_id,
        Ok(_) => {
            eprintln!("error: ExportImage answered without a TaskId");
            return EXIT_FAILED;
        }
        Err(e) => {
            let hint = hint_suffix(e.code());
            eprintln!("error: {e}{hint}");
            return EXIT_FAILED;
        }
    };
    if !args.wait {
        println!("{task_id}");
        return EXIT_OK;
    }
    eprintln!("export task {task_id} started");
    let cancel = CancellationToken::new();
    install_interrupt_handler(cancel.clone());
    let schedule = PollSchedule {
        timeout: args.timeout,
        ..PollSchedule::default()
    };
    let status = StatusLine::default();
    let mut show = |t: &TaskAttribute| status.show(task_line("export", t));
    let task = match wait_task(&side.ecs, &task_id, &schedule, &cancel, &mut show).await {
        Ok(t) => t,
        Err(e) => return wait_failed(e, &format!("export task {task_id}")),
    };
    let objects = object_urls(&task, &args.bucket);
    if args.json {
        match serde_json::to_string(&ExportSummary { task_id, objects }) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot encode the summary: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        for o in objects {
            println!("{o}");
        }
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: ExportArgs,
    }

    #[test]
    fn flags() {
        let a = W::try_parse_from([
            "x",
            "--region",
            "cn-hangzhou",
            "--image-id",
            "m-1",
            "--bucket",
            "b1b",
            "--format",
            "vhd",
            "--wait",
            "--ecs-endpoint",
            "http://127.0.0.1:9",
        ])
        .unwrap()
        .a;
        assert_eq!(a.format, Some(ImageFormat::Vhd));
        assert_eq!(a.timeout, Duration::from_secs(12 * 3600));
        assert!(a.wait && !a.json);
        assert!(W::try_parse_from(["x", "--region", "r", "--image-id", "m-1"]).is_err());
        assert!(W::try_parse_from([
            "x",
            "--region",
            "r",
            "--image-id",
            "m-1",
            "--bucket",
            "b",
            "--format",
            "vmdk"
        ])
        .is_err());
    }
}
