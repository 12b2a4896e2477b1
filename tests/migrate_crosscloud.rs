//! `ossrelay migrate` across clouds against two simulators, one per cloud and account: an S3
//! dialect simulator serving S3, EC2 VM Import/Export, IAM and STS (AWS), and an OSS one
//! serving OSS and ECS (Alibaba Cloud). Every success is judged by the simulators' own disk
//! CRC-64 of the source image and of the image the import created.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ossrelay::aws::ec2::{Ec2Api, Ec2Client};
use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay_sim::{
    self as sim, Dialect, SimBucket, SimConfig, SimEc2Image, SimEc2TaskFail, SimImage, SimRole,
    SimServer,
};

const AMI: &str = "ami-0123456789abcdef0";
const ECS_IMAGE: &str = "m-src0001";
/// Three and a bit MiB: several parts at the tests' 1 MiB part size would be too small for S3
/// (5 MiB minimum), so disks stay single-part unless a test says otherwise.
const DISK: u64 = (3 << 20) + 7 * 512;
const AWS_REGION: &str = "us-east-1";
const AWS_BUCKET: &str = "xfer-bucket";

/// Which way the image travels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    AwsToAliyun,
    AliyunToAws,
}

struct XWorld {
    aws: SimServer,
    ali: SimServer,
    way: Way,
    dir: tempfile::TempDir,
}

impl XWorld {
    /// The AWS side belongs to the source account when it is the source, else to the
    /// destination account; the Alibaba side to the other.
    async fn new(
        way: Way,
        aws_cfg: impl FnOnce(&mut SimConfig),
        ali_cfg: impl FnOnce(&mut SimConfig),
    ) -> Self {
        let (aws_acct, ali_acct) = match way {
            Way::AwsToAliyun => (src_account(), dst_account()),
            Way::AliyunToAws => (dst_account(), src_account()),
        };
        let mut a = SimConfig {
            region: AWS_REGION.into(),
            accounts: vec![src_account(), dst_account()],
            buckets: vec![SimBucket {
                name: AWS_BUCKET.into(),
                account: aws_acct.name.clone(),
            }],
            dialect: Dialect::S3,
            task_duration: Duration::from_millis(300),
            vmimport_roles: vec![aws_acct.name.clone()],
            ..SimConfig::default()
        };
        if way == Way::AwsToAliyun {
            let mut img = SimEc2Image::parse(
                &format!("{AMI}:{DISK}:arch=x86_64,boot=uefi,platform=linux,name=web-ubuntu-22.04"),
                &aws_acct.name,
            )
            .unwrap();
            img.account = aws_acct.name.clone();
            a.ec2_images.push(img);
        }
        aws_cfg(&mut a);
        let (ali_region, ali_bucket) = match way {
            Way::AwsToAliyun => (DST_REGION, DST_BUCKET),
            Way::AliyunToAws => (SRC_REGION, SRC_BUCKET),
        };
        let mut o = SimConfig {
            region: ali_region.into(),
            accounts: vec![src_account(), dst_account()],
            buckets: vec![SimBucket {
                name: ali_bucket.into(),
                account: ali_acct.name.clone(),
            }],
            task_duration: Duration::from_millis(300),
            ..SimConfig::default()
        };
        match way {
            Way::AwsToAliyun => o.roles.push(SimRole {
                account: ali_acct.name.clone(),
                name: "AliyunECSImageImportDefaultRole".into(),
                trusted: "ecs".into(),
            }),
            Way::AliyunToAws => {
                let mut img = SimImage::new(ECS_IMAGE, DISK, &ali_acct.name);
                img.name = "web-server".into();
                img.boot_mode = "UEFI".into();
                img.platform = "Ubuntu".into();
                o.images.push(img);
                o.roles.push(SimRole {
                    account: ali_acct.name.clone(),
                    name: "AliyunECSImageExportDefaultRole".into(),
                    trusted: "ecs".into(),
                });
            }
        }
        ali_cfg(&mut o);
        let aws = sim::start(a).await.expect("start AWS simulator");
        let ali = sim::start(o).await.expect("start Alibaba simulator");
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "current": "src",
            "profiles": [
                {"name": "src", "mode": "AK", "access_key_id": src_account().access_key_id,
                 "access_key_secret": src_account().access_key_secret, "region_id": SRC_REGION},
                {"name": "dst", "mode": "AK", "access_key_id": dst_account().access_key_id,
                 "access_key_secret": dst_account().access_key_secret, "region_id": DST_REGION}
            ]
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let aws_dir = dir.path().join(".aws");
        std::fs::create_dir_all(&aws_dir).unwrap();
        std::fs::write(
            aws_dir.join("credentials"),
            format!(
                "[src]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n\
                 [dst]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                src_account().access_key_id,
                src_account().access_key_secret,
                dst_account().access_key_id,
                dst_account().access_key_secret,
            ),
        )
        .unwrap();
        std::fs::write(aws_dir.join("config"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        XWorld { aws, ali, way, dir }
    }

    fn ec2_endpoint(&self) -> String {
        self.aws
            .ec2_endpoint()
            .expect("the S3 simulator serves EC2")
    }

    fn aws_side(&self, p: &str) -> Vec<String> {
        let ec2 = self.ec2_endpoint();
        vec![
            format!("--{p}-cloud"),
            "aws".into(),
            format!("--{p}-region"),
            AWS_REGION.into(),
            format!("--{p}-bucket"),
            AWS_BUCKET.into(),
            format!("--{p}-endpoint"),
            self.aws.endpoint(),
            format!("--{p}-ec2-endpoint"),
            ec2.clone(),
            format!("--{p}-iam-endpoint"),
            ec2.clone(),
            format!("--{p}-sts-endpoint"),
            ec2,
        ]
    }

    fn ali_side(&self, p: &str) -> Vec<String> {
        let ep = self.ali.endpoint();
        let (region, bucket) = match p {
            "src" => (SRC_REGION, SRC_BUCKET),
            _ => (DST_REGION, DST_BUCKET),
        };
        vec![
            format!("--{p}-region"),
            region.into(),
            format!("--{p}-bucket"),
            bucket.into(),
            format!("--{p}-endpoint"),
            ep.clone(),
            format!("--{p}-ecs-endpoint"),
            ep.clone(),
            format!("--{p}-sts-endpoint"),
            ep,
        ]
    }

    fn migrate_args(&self) -> Vec<String> {
        let mut v = vec!["migrate".to_string(), "--image-id".into()];
        match self.way {
            Way::AwsToAliyun => {
                v.push(AMI.into());
                v.extend(self.aws_side("src"));
                v.extend(self.ali_side("dst"));
            }
            Way::AliyunToAws => {
                v.push(ECS_IMAGE.into());
                v.extend(self.ali_side("src"));
                v.extend(self.aws_side("dst"));
            }
        }
        v.extend(
            [
                "--src-profile",
                "src",
                "--dst-profile",
                "dst",
                "--state-dir",
                &self.dir.path().join("state").display().to_string(),
                "--timeout",
                "2m",
                "--role-retries",
                "0",
                "--json",
            ]
            .map(String::from),
        );
        v
    }

    fn command(&self, args: &[String]) -> std::process::Command {
        let mut cmd = command_in(self.dir.path(), args);
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    async fn run(&self, args: Vec<String>) -> Output {
        let mut cmd = self.command(&args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run ossrelay"))
            .await
            .unwrap()
    }

    /// The source image's disk as its simulator knows it.
    fn source_disk(&self) -> (u64, u64) {
        match self.way {
            Way::AwsToAliyun => self.aws.image_crc64(AMI),
            Way::AliyunToAws => self.ali.image_crc64(ECS_IMAGE),
        }
        .expect("source image")
    }

    /// The new image's disk as the destination simulator knows it.
    fn imported_disk(&self, id: &str) -> Option<(u64, u64)> {
        match self.way {
            Way::AwsToAliyun => self.ali.image_crc64(id),
            Way::AliyunToAws => self.aws.image_crc64(id),
        }
    }

    /// EC2 as the AWS-side account sees it (an independent look at the tasks).
    fn ec2(&self) -> Ec2Client {
        let acct = match self.way {
            Way::AwsToAliyun => src_account(),
            Way::AliyunToAws => dst_account(),
        };
        let creds = Arc::new(StaticProvider(Credentials::new(
            acct.access_key_id,
            acct.access_key_secret,
        )));
        Ec2Client::new(AWS_REGION, Some(self.ec2_endpoint()), creds)
    }
}

fn summary_of(o: &Output) -> serde_json::Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    serde_json::from_str(stdout(o).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// The imported disk equals the source's; the JSON names the image, cloud and proofs.
fn assert_migrated(w: &XWorld, out: &Output) -> String {
    let sum = summary_of(out);
    let id = sum["image_id"].as_str().unwrap().to_string();
    let (cloud, prefix, region) = match w.way {
        Way::AwsToAliyun => ("aliyun", "m-", DST_REGION),
        Way::AliyunToAws => ("aws", "ami-", AWS_REGION),
    };
    assert_eq!(sum["cloud"], cloud, "{sum}");
    assert_eq!(sum["region"], region, "{sum}");
    assert!(id.starts_with(prefix), "{sum}");
    assert_eq!(w.imported_disk(&id), Some(w.source_disk()), "{sum}");
    let disk = &sum["disks"][0];
    assert_eq!(disk["bytes"], DISK, "{sum}");
    let proofs = disk["verified_by"].as_array().expect("verified_by");
    assert!(!proofs.is_empty(), "{sum}");
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_ami_to_alibaba_image_end_to_end() {
    let w = XWorld::new(Way::AwsToAliyun, |_| {}, |_| {}).await;
    let out = w.run(w.migrate_args()).await;
    let id = assert_migrated(&w, &out);
    // The AMI's attributes arrived: UEFI, x86_64, a Linux platform from the name.
    let img = w.ali.image(&id).expect("new ECS image");
    assert_eq!(img["BootMode"], "UEFI", "{img}");
    assert_eq!(img["Architecture"], "x86_64", "{img}");
    assert_eq!(img["Platform"], "Ubuntu", "{img}");
    // One export task, and the intermediate objects are gone (no --keep-objects).
    let tasks = w.ec2().describe_export_image_tasks(&[]).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(w.aws.list_keys(AWS_BUCKET), Vec::<String>::new());
    assert_eq!(w.ali.list_keys(DST_BUCKET), Vec::<String>::new());
    assert!(
        !stderr(&out).contains(&src_account().access_key_secret),
        "{}",
        stderr(&out)
    );
}

/// `--disk-format auto` into ECS from a plain RAW export (what EC2 writes): the export's
/// all-zero clusters are measured before the relay, `--json` reports the share, and the
/// format follows it (the simulated AMI is mostly zeros: QCOW2), ImportImage's Format with
/// it; the imported disk is the source's.
#[tokio::test(flavor = "multi_thread")]
async fn disk_format_auto_measures_the_export_zero_share() {
    let w = XWorld::new(Way::AwsToAliyun, |_| {}, |_| {}).await;
    let mut args = w.migrate_args();
    args.extend(["--disk-format", "auto"].map(String::from));
    let out = w.run(args).await;
    let sum = summary_of(&out);
    let id = sum["image_id"].as_str().unwrap().to_string();
    assert_eq!(w.imported_disk(&id), Some(w.source_disk()), "{sum}");
    let disk = &sum["disks"][0];
    // The QCOW2 leaves the zero clusters out.
    assert!(disk["bytes"].as_u64().unwrap() < DISK, "{sum}");
    let share = disk["zero_share"].as_f64().expect("zero_share in --json");
    assert!((0.0..=1.0).contains(&share), "{sum}");
    // OSS's smallest part (100 KiB) pads the QCOW2 head.
    let want = ossrelay::migrate::zeros::choose(share, DISK, 100 * 1024);
    assert_eq!(want, ossrelay::transfer::DiskFormat::Qcow2, "{sum}");
    assert!(
        disk["destination"].as_str().unwrap().ends_with(".qcow2"),
        "{sum}"
    );
    let img = w.ali.image(&id).expect("new ECS image");
    assert!(img.to_string().to_uppercase().contains("QCOW2"), "{img}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alibaba_image_to_aws_ami_end_to_end_unpacking_the_export() {
    let w = XWorld::new(Way::AliyunToAws, |_| {}, |_| {}).await;
    let mut args = w.migrate_args();
    args.push("--keep-objects".into());
    let out = w.run(args).await;
    let id = assert_migrated(&w, &out);
    // The .raw.tar.gz export arrived unpacked as .raw, which EC2 imported as RAW.
    let keys = w.aws.list_keys(AWS_BUCKET);
    assert!(keys.len() == 1 && keys[0].ends_with(".raw"), "{keys:?}");
    let ec2 = w.ec2();
    let imports = ec2.describe_import_image_tasks(&[]).await.unwrap();
    assert_eq!(imports.len(), 1, "{imports:?}");
    assert_eq!(imports[0].image_id.as_deref(), Some(id.as_str()));
    assert_eq!(imports[0].boot_mode.as_deref(), Some("uefi"));
    let amis = ec2
        .describe_images(std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(amis[0].state, "available");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_vmimport_role_says_how_to_fix_and_preflight_fix_makes_it_work() {
    let w = XWorld::new(Way::AwsToAliyun, |c| c.vmimport_roles.clear(), |_| {}).await;
    let out = w.run(w.migrate_args()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("vmimport"), "{err}");
    assert!(err.contains("preflight --cloud aws"), "{err}");
    assert!(err.contains("--fix"), "{err}");
    // Nothing was exported.
    assert_eq!(w.aws.list_keys(AWS_BUCKET), Vec::<String>::new());

    let ec2 = w.ec2_endpoint();
    let fix = w
        .run(
            [
                "preflight",
                "--cloud",
                "aws",
                "--region",
                AWS_REGION,
                "--bucket",
                AWS_BUCKET,
                "--profile",
                "src",
                "--s3-endpoint",
                &w.aws.endpoint(),
                "--ec2-endpoint",
                &ec2,
                "--iam-endpoint",
                &ec2,
                "--sts-endpoint",
                &ec2,
                "--fix",
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
    assert_eq!(
        fix.status.code(),
        Some(0),
        "{}{}",
        stdout(&fix),
        stderr(&fix)
    );
    let out = w.run(w.migrate_args()).await;
    assert_migrated(&w, &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_export_task_is_a_clear_error_and_leaves_nothing() {
    let w = XWorld::new(
        Way::AwsToAliyun,
        |c| {
            c.ec2_task_fail.push(
                "export:ClientError: Unsupported configuration"
                    .parse::<SimEc2TaskFail>()
                    .unwrap(),
            )
        },
        |_| {},
    )
    .await;
    let out = w.run(w.migrate_args()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("export task"), "{err}");
    assert!(err.contains("Unsupported configuration"), "{err}");
    assert_eq!(w.aws.list_keys(AWS_BUCKET), Vec::<String>::new());
    assert_eq!(w.ali.list_keys(DST_BUCKET), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn user_errors_are_one_clean_line() {
    let w = XWorld::new(Way::AwsToAliyun, |_| {}, |_| {}).await;
    // An AMI that does not exist.
    let mut args = w.migrate_args();
    let i = args.iter().position(|a| a == AMI).unwrap();
    args[i] = "ami-00000000000000000".into();
    let out = w.run(args).await;
    assert_clean_failure(&out, 1, "was not found");
    // An ECS image id with --src-cloud aws.
    let mut args = w.migrate_args();
    args[i] = "m-123".into();
    assert_clean_failure(&w.run(args).await, 2, "not an AMI id");
    // aws → aws is EC2's own job.
    let mut args = w.migrate_args();
    let d = args.iter().position(|a| a == "--dst-region").unwrap();
    args.splice(d..d, ["--dst-cloud".to_string(), "aws".into()]);
    assert_clean_failure(&w.run(args).await, 2, "copy-image");
    // A format EC2 cannot import, asked of an Alibaba → AWS migration.
    let back = XWorld::new(Way::AliyunToAws, |_| {}, |_| {}).await;
    let mut args = back.migrate_args();
    args.extend(["--format".to_string(), "qcow2".into()]);
    assert_clean_failure(&back.run(args).await, 2, "cannot be imported by EC2");
    // The S3 bucket in another region than --src-region.
    let mut args = w.migrate_args();
    let r = args.iter().position(|a| a == AWS_REGION).unwrap();
    args[r] = "eu-west-1".into();
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(AWS_BUCKET), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_each_stage_then_rerun_makes_one_export_and_one_import() {
    let w = XWorld::new(
        Way::AwsToAliyun,
        |c| c.task_duration = Duration::from_secs(2),
        |c| c.task_duration = Duration::from_secs(2),
    )
    .await;
    let state = w.dir.path().join("state");
    for stage in ["wait-export", "wait-import"] {
        let mut child = w.command(&w.migrate_args()).spawn().unwrap();
        let t0 = std::time::Instant::now();
        loop {
            let text: String = std::fs::read_dir(&state)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("migrate-"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect();
            if text.contains(&format!("\"stage\": \"{stage}\"")) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "never reached {stage}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        let _ = child.wait();
    }
    let out = w.run(w.migrate_args()).await;
    let id = assert_migrated(&w, &out);
    assert_eq!(
        w.ec2()
            .describe_export_image_tasks(&[])
            .await
            .unwrap()
            .len(),
        1
    );
    // One ECS import: the rerun found the running one instead of starting another.
    assert!(w.ali.image(&id).is_some());
    assert_eq!(count(&w.ali.stats(), "ImportImage", "200"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn abandon_cancels_the_running_export_and_forgets_the_migration() {
    let w = XWorld::new(
        Way::AwsToAliyun,
        |c| c.task_duration = Duration::from_secs(30),
        |_| {},
    )
    .await;
    let state = w.dir.path().join("state");
    let mut child = w.command(&w.migrate_args()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|t| t.contains("\"stage\": \"wait-export\""))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never reached wait-export"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    let mut args = w.migrate_args();
    args.push("--abandon".into());
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cancelled the EC2 export task"),
        "{}",
        stderr(&out)
    );
    // EC2 stopped the task (cancelling, then deleted), nothing was written, no state is left.
    let tasks = w.ec2().describe_export_image_tasks(&[]).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(
        matches!(tasks[0].status.as_str(), "deleting" | "deleted"),
        "{tasks:?}"
    );
    assert_eq!(w.aws.list_keys(AWS_BUCKET), Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("migrate-") && n.ends_with(".json"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A second abandon has nothing to undo.
    let mut args = w.migrate_args();
    args.push("--abandon".into());
    let again = w.run(args).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("nothing to undo"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assumed_aws_role_whose_credentials_expire_mid_relay_is_refreshed() {
    let w = XWorld::new(
        Way::AwsToAliyun,
        |c| {
            c.aws_roles.push(ossrelay_sim::SimAwsRole {
                account: src_account().name,
                name: "migrator".into(),
                external_id: None,
            });
            c.sts_ttl = Some(Duration::from_secs(2));
            // ~1 MiB/s per connection: the relay outlives several credential lifetimes.
            c.conn_rate = Some(1 << 20);
        },
        |_| {},
    )
    .await;
    std::fs::write(
        w.dir.path().join(".aws/config"),
        format!(
            "[profile src-role]\nrole_arn = arn:aws:iam::{}:role/migrator\nsource_profile = dst\n",
            src_account().name
        ),
    )
    .unwrap();
    let mut args = w.migrate_args();
    let p = args.iter().position(|a| a == "--src-profile").unwrap();
    args[p + 1] = "src-role".into();
    let out = w.run(args).await;
    assert_migrated(&w, &out);
    // More than one AssumeRole: the relay went on with refreshed credentials.
    assert!(
        count(&w.aws.stats(), "AssumeRole", "200") >= 2,
        "{}",
        w.aws.stats()
    );
}
