//! `ossrelay preflight --cloud aws` as a user runs it (the real binary, a controlled
//! environment) and the EC2/IAM clients at the library level, against an in-process S3-dialect
//! simulator whose control listener serves STS, EC2 and IAM with their own SigV4 verifier.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use ossrelay::aws::ec2::{
    DiskContainer, DiskImageFormat, DiskSource, Ec2Api, Ec2Client, ExportImageInput,
    ImportImageInput,
};
use ossrelay::aws::iam::{IamApi, IamClient};
use ossrelay::aws::vmimport;
use ossrelay::aws::wait::{
    wait_export_task, wait_image_available, wait_import_task, Ec2WaitError, PollSchedule,
};
use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::http::RetryPolicy;
use ossrelay_sim::{
    self as sim, Dialect, Ec2TaskKind, SimAccount, SimBucket, SimConfig, SimEc2Image,
    SimEc2TaskFail, SimServer,
};
use tokio_util::sync::CancellationToken;

use common::{command_in, stderr, stdout};

const ACCOUNT: &str = "111122223333";
const AK: &str = "AKIAPREFLIGHTTEST001";
const SK: &str = "aws-SECRET-do-not-leak-preflight";
const REGION: &str = "us-west-2";
const BUCKET: &str = "pf-bucket";
const FAR_BUCKET: &str = "pf-far";
const FAR_REGION: &str = "eu-west-1";
const AMI: &str = "ami-0123456789abcdef0";
const AMI_SIZE: u64 = 4 << 20;

async fn aws_sim(cfg: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut c = SimConfig {
        region: REGION.into(),
        dialect: Dialect::S3,
        accounts: vec![SimAccount {
            name: ACCOUNT.into(),
            access_key_id: AK.into(),
            access_key_secret: SK.into(),
        }],
        buckets: vec![SimBucket {
            name: BUCKET.into(),
            account: ACCOUNT.into(),
        }],
        remote_buckets: vec![(FAR_BUCKET.into(), FAR_REGION.into())],
        ec2_images: vec![SimEc2Image::parse(&format!("{AMI}:{AMI_SIZE}"), ACCOUNT).unwrap()],
        task_duration: Duration::from_millis(600),
        ..SimConfig::default()
    };
    cfg(&mut c);
    sim::start(c).await.expect("start the S3 simulator")
}

fn control(s: &SimServer) -> String {
    s.ec2_endpoint()
        .expect("the S3 dialect serves STS, EC2 and IAM")
}

fn preflight(s: &SimServer, buckets: &[&str], extra: &[&str]) -> Vec<String> {
    let c = control(s);
    let mut a: Vec<String> = ["preflight", "--cloud", "aws", "--region", REGION]
        .iter()
        .map(|x| x.to_string())
        .collect();
    for b in buckets {
        a.extend(["--bucket".to_string(), b.to_string()]);
    }
    for (flag, url) in [
        ("--s3-endpoint", s.endpoint()),
        ("--ec2-endpoint", c.clone()),
        ("--iam-endpoint", c.clone()),
        ("--sts-endpoint", c),
    ] {
        a.extend([flag.to_string(), url]);
    }
    a.extend(["--propagation-wait".to_string(), "1s".to_string()]);
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Runs the binary with only the given AWS keys in the environment; asserts no secret and no
/// panic in the output.
async fn run(home: &Path, secret: &str, args: Vec<String>) -> Output {
    let mut cmd = command_in(home, &args);
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", secret);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ossrelay"))
        .await
        .unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        !all.contains(SK) && !all.contains(secret),
        "secret leaked: {all}"
    );
    assert!(!all.contains("panicked"), "{all}");
    out
}

fn lines(o: &Output) -> Vec<String> {
    stdout(o).lines().map(str::to_string).collect()
}

fn has(o: &Output, prefix: &str, needle: &str) -> bool {
    lines(o)
        .iter()
        .any(|l| l.starts_with(prefix) && l.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_role_fails_then_fix_makes_every_check_pass() {
    let s = aws_sim(|_| {}).await;
    let home = tempfile::tempdir().unwrap();

    let out = run(home.path(), SK, preflight(&s, &[BUCKET], &[])).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        has(&out, "ok  ", &format!("caller arn:aws:iam::{ACCOUNT}:")),
        "{text}"
    );
    assert!(
        has(&out, "ok  ", &format!("bucket {BUCKET} is in {REGION}")),
        "{text}"
    );
    assert!(has(&out, "ok  ", "EC2 answers in us-west-2"), "{text}");
    assert!(
        has(
            &out,
            "FAIL",
            "role vmimport does not exist (VM Import/Export needs it); run `ossrelay preflight --cloud aws --region us-west-2 --bucket pf-bucket --fix`"
        ),
        "{text}"
    );

    let out = run(home.path(), SK, preflight(&s, &[BUCKET], &["--fix"])).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        has(
            &out,
            "ok  ",
            "role vmimport: created, trusting vmie.amazonaws.com"
        ),
        "{text}"
    );
    assert!(
        has(&out, "ok  ", "role vmimport: granted bucket pf-bucket"),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");

    let out = run(home.path(), SK, preflight(&s, &[BUCKET], &[])).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(!text.contains("FAIL"), "{text}");
    assert!(
        has(
            &out,
            "ok  ",
            "role vmimport trusts vmie.amazonaws.com (external id vmimport)"
        ),
        "{text}"
    );
    assert!(
        has(&out, "ok  ", "role vmimport grants bucket pf-bucket"),
        "{text}"
    );
    assert!(has(&out, "ok  ", "role vmimport grants the EC2"), "{text}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_in_another_region_and_wrong_secret_and_usage() {
    let s = aws_sim(|c| c.vmimport_roles = vec![ACCOUNT.into()]).await;
    let home = tempfile::tempdir().unwrap();

    let out = run(home.path(), SK, preflight(&s, &[FAR_BUCKET], &[])).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        has(&out, "FAIL", "bucket pf-far is in eu-west-1, not us-west-2"),
        "{text}"
    );

    let wrong = "aws-WRONG-secret-0000000000000";
    let out = run(home.path(), wrong, preflight(&s, &[BUCKET], &[])).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let l = lines(&out);
    assert_eq!(l.len(), 1, "stops after the credentials line: {text}");
    assert!(
        l[0].starts_with("FAIL AWS credentials (aws-env): "),
        "{text}"
    );
    assert!(!l[0].contains("Canonical String"), "{text}");
    assert!(l[0].contains("SignatureDoesNotMatch"), "{text}");

    let out = run(
        home.path(),
        SK,
        vec![
            "preflight".into(),
            "--region".into(),
            REGION.into(),
            "--ec2-endpoint".into(),
            control(&s),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ec2-endpoint applies to --cloud aws only"),
        "{}",
        stderr(&out)
    );
    s.shutdown().await;
}

fn creds() -> Arc<StaticProvider> {
    Arc::new(StaticProvider(Credentials {
        access_key_id: AK.into(),
        access_key_secret: SK.into(),
        security_token: None,
        expiration: None,
    }))
}

fn fast() -> PollSchedule {
    PollSchedule {
        initial: Duration::from_millis(50),
        factor: 1.5,
        max: Duration::from_millis(200),
        timeout: Duration::from_secs(60),
        max_consecutive_errors: 5,
    }
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_through_the_ec2_client() {
    let s = aws_sim(|_| {}).await;
    let ec2 = Ec2Client::new(REGION, Some(control(&s)), creds()).with_retry(quick_retry());
    let iam = IamClient::new(REGION, Some(control(&s)), creds()).with_retry(quick_retry());

    // A user's own inline policy survives the fix; the bucket grant is added next to it.
    let mine = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Mine","Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#;
    iam.create_role("vmimport", &vmimport::trust_policy(), "t")
        .await
        .unwrap();
    iam.put_role_policy("vmimport", "vmimport", mine)
        .await
        .unwrap();
    let f = vmimport::fix(&iam, "vmimport", "aws", &[BUCKET.to_string()])
        .await
        .unwrap();
    assert_eq!(f.added_buckets, [BUCKET]);
    let doc: serde_json::Value = serde_json::from_str(
        &iam.get_role_policy("vmimport", "vmimport")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["Statement"][0]["Sid"], "Mine", "{doc}");
    assert!(iam.get_role("nope").await.unwrap().is_none());

    let img = ec2.describe_images(&[AMI.to_string()]).await.unwrap();
    assert_eq!(img.len(), 1);
    assert_eq!(img[0].state, "available");
    assert_eq!(img[0].root_volume_gib(), Some(1));
    assert!(ec2
        .describe_images(&["ami-00000000000000000".to_string()])
        .await
        .unwrap()
        .is_empty());

    let mut input = ExportImageInput::new(AMI, DiskImageFormat::Raw, BUCKET);
    input.s3_prefix = Some("exports/".into());
    input.tags = vec![("job".into(), "t14".into())];
    let task = ec2.export_image(&input).await.unwrap();
    assert!(task.task_id.starts_with("export-ami-"), "{task:?}");
    let mut seen = Vec::new();
    let done = wait_export_task(
        &ec2,
        &task.task_id,
        &fast(),
        &CancellationToken::new(),
        &mut |t| seen.push(t.status_message.clone()),
    )
    .await
    .unwrap();
    assert_eq!(done.status, "completed");
    assert!(
        seen.iter().any(|m| m.as_deref() == Some("converting")),
        "{seen:?}"
    );
    let key = done.object_key(DiskImageFormat::Raw);
    assert_eq!(key, format!("exports/{}.raw", task.task_id));
    assert_eq!(
        s.object_crc64(BUCKET, &key).map(|c| c.0),
        Some(AMI_SIZE),
        "the export wrote <prefix><task>.raw"
    );
    let all = ec2.describe_export_image_tasks(&[]).await.unwrap();
    assert!(all.iter().any(|t| t.task_id == task.task_id));

    let import = ec2
        .import_image(&ImportImageInput {
            disk_containers: vec![DiskContainer {
                format: "RAW".into(),
                source: DiskSource::UserBucket {
                    bucket: BUCKET.into(),
                    key: key.clone(),
                },
                description: Some("root".into()),
                device_name: None,
            }],
            architecture: Some("x86_64".into()),
            boot_mode: Some("legacy-bios".into()),
            platform: Some("Linux".into()),
            license_type: Some("BYOL".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(import.task_id.starts_with("import-ami-"), "{import:?}");
    let ami = wait_import_task(
        &ec2,
        &import.task_id,
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    let img = wait_image_available(&ec2, &ami, &fast(), &CancellationToken::new(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(img.architecture, "x86_64");
    assert_eq!(
        s.image_crc64(&ami),
        s.image_crc64(AMI),
        "the imported AMI holds the exported disk"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_cancelled_tasks_end_the_wait_with_the_reason() {
    let s = aws_sim(|c| {
        c.vmimport_roles = vec![ACCOUNT.into()];
        c.ec2_task_fail = vec![SimEc2TaskFail {
            kind: Ec2TaskKind::Export,
            message: "Unsupported configuration - Multiple directories found".into(),
        }];
    })
    .await;
    let ec2 = Ec2Client::new(REGION, Some(control(&s)), creds()).with_retry(quick_retry());
    let task = ec2
        .export_image(&ExportImageInput::new(AMI, DiskImageFormat::Raw, BUCKET))
        .await
        .unwrap();
    let e = wait_export_task(
        &ec2,
        &task.task_id,
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Ec2WaitError::TaskFailed { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "export task {} failed: ClientError: Unsupported configuration",
            task.task_id
        )),
        "{msg}"
    );

    // A cancelled import ends deleting/deleted: a failure, not a success.
    s.put_object_bytes(BUCKET, "disk.raw", bytes::Bytes::from(vec![0u8; 1 << 20]));
    let import = ec2
        .import_image(&ImportImageInput {
            disk_containers: vec![DiskContainer {
                format: "RAW".into(),
                source: DiskSource::UserBucket {
                    bucket: BUCKET.into(),
                    key: "disk.raw".into(),
                },
                description: None,
                device_name: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    ec2.cancel_import_task(&import.task_id, "test")
        .await
        .unwrap();
    let e = wait_import_task(
        &ec2,
        &import.task_id,
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, Ec2WaitError::TaskFailed { status, .. } if status == "deleting" || status == "deleted"),
        "{e}"
    );

    // An unknown image is an error the caller can match.
    let e = ec2
        .export_image(&ExportImageInput::new(
            "ami-00000000000000000",
            DiskImageFormat::Raw,
            BUCKET,
        ))
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        e.to_string()
            .starts_with("ec2 ExportImage: InvalidAMIID.NotFound"),
        "{e}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_client_retries_throttling_and_5xx_refreshes_expired_once_and_nothing_else() {
    use ossrelay_sim::RpcFault;
    let s = aws_sim(|_| {}).await;
    let ec2 = Ec2Client::new(REGION, Some(control(&s)), creds()).with_retry(quick_retry());
    let ids = [AMI.to_string()];
    let calls = |s: &SimServer| common::count_all(&s.stats(), "DescribeImages");
    let fault = |code: &str, status: u16, count: u32| RpcFault {
        action: "DescribeImages".into(),
        code: code.into(),
        status,
        count,
    };

    // Throttling and a 5xx: retried with backoff until the answer comes.
    s.add_rpc_fault(fault("RequestLimitExceeded", 503, 1));
    s.add_rpc_fault(fault("InternalError", 500, 1));
    assert_eq!(ec2.describe_images(&ids).await.unwrap().len(), 1);
    assert_eq!(calls(&s), 3);

    // A final error: one call, the code, message and request id in one line.
    s.add_rpc_fault(fault("UnauthorizedOperation", 403, 1));
    let e = ec2.describe_images(&ids).await.unwrap_err();
    assert_eq!(calls(&s), 4);
    assert!(e.is_auth() && !e.is_retryable(), "{e}");
    assert_eq!(e.status(), Some(403));
    assert!(e.request_id().is_some_and(|r| r != "-"), "{e}");
    assert!(!e.to_string().contains('\n'));

    // Expired credentials: asked again and the call repeated exactly once.
    s.add_rpc_fault(fault("RequestExpired", 400, 1));
    assert_eq!(ec2.describe_images(&ids).await.unwrap().len(), 1);
    assert_eq!(calls(&s), 6);
    s.add_rpc_fault(fault("RequestExpired", 400, 2));
    let e = ec2.describe_images(&ids).await.unwrap_err();
    assert!(e.is_expired(), "{e}");
    assert_eq!(calls(&s), 8);

    // Throttled on every attempt: gives up after max_attempts.
    s.add_rpc_fault(fault("RequestLimitExceeded", 503, 10));
    let e = ec2.describe_images(&ids).await.unwrap_err();
    assert!(e.is_throttled(), "{e}");
    assert_eq!(calls(&s), 11);
    s.shutdown().await;
}
