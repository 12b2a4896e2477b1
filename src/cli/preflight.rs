//! `ossrelay preflight`: are credentials, buckets and the service roles ready for an image
//! export or import in a region? With `--fix`, creates the missing roles.
//!
//! `--cloud aliyun` (the default) checks ECS, OSS and the two ECS service roles in RAM;
//! `--cloud aws` checks STS, S3 buckets, EC2 and the `vmimport` role in IAM
//! ([`crate::aws::preflight`] holds the checks, this file only wires flags and prints).

use std::time::Duration;

use clap::Args;

use super::cloud::{parse_duration, EndpointArgs};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::acs::ram::{check_service_role, RoleCheck, ServiceRole};
use crate::acs::wait::hint_suffix;
use crate::cloud::Side;
use crate::credentials::aws::sts::{sts_endpoint, StsClient};
use crate::credentials::aws::AwsCredentialOptions;
use crate::credentials::EnvLookup;

/// Which cloud `preflight` checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Cloud {
    /// Alibaba Cloud: ECS, OSS, RAM.
    #[default]
    Aliyun,
    /// AWS: EC2 VM Import/Export, S3, IAM.
    Aws,
}

/// Flags of `ossrelay preflight`.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Which cloud to check: aliyun (ECS/OSS/RAM) or aws (EC2/S3/IAM).
    #[arg(long, value_enum, default_value_t = Cloud::Aliyun)]
    pub cloud: Cloud,
    /// Region to check, e.g. cn-hangzhou or eu-west-1.
    #[arg(long)]
    pub region: String,
    /// aliyun CLI profile, or AWS profile with --cloud aws (default: the credential chain).
    #[arg(long)]
    pub profile: Option<String>,
    /// A bucket that must exist in the region (repeatable).
    #[arg(long = "bucket")]
    pub buckets: Vec<String>,
    /// Create missing service roles and attach their system policies.
    #[arg(long)]
    pub fix: bool,
    /// After --fix changed a role, wait this long for RAM to propagate it.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub propagation_wait: Duration,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// --cloud aws: S3 endpoint override, e.g. http://127.0.0.1:9000.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// --cloud aws: EC2 endpoint override (default https://ec2.<region>.amazonaws.com).
    #[arg(long, value_name = "URL")]
    pub ec2_endpoint: Option<String>,
    /// --cloud aws: IAM endpoint override (default https://iam.amazonaws.com).
    #[arg(long, value_name = "URL")]
    pub iam_endpoint: Option<String>,
    /// --cloud aws: the VM Import/Export service role to check.
    #[arg(long, default_value = crate::aws::vmimport::ROLE_NAME)]
    pub role_name: String,
}

/// Flags that only one cloud reads: naming one for the other cloud is a usage error.
fn cloud_flag_mismatch(args: &PreflightArgs) -> Option<String> {
    let e = &args.endpoints;
    let (flags, other): (Vec<(&str, bool)>, &str) = match args.cloud {
        Cloud::Aliyun => (
            vec![
                ("--s3-endpoint", args.s3_endpoint.is_some()),
                ("--ec2-endpoint", args.ec2_endpoint.is_some()),
                ("--iam-endpoint", args.iam_endpoint.is_some()),
                (
                    "--role-name",
                    args.role_name != crate::aws::vmimport::ROLE_NAME,
                ),
            ],
            "aws",
        ),
        Cloud::Aws => (
            vec![
                ("--oss-endpoint", e.oss_endpoint.is_some()),
                ("--ecs-endpoint", e.ecs_endpoint.is_some()),
                ("--ram-endpoint", e.ram_endpoint.is_some()),
            ],
            "aliyun",
        ),
    };
    flags
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(f, _)| format!("{f} applies to --cloud {other} only"))
}

fn report(ok: bool, line: String) {
    println!("{} {line}", if ok { "ok  " } else { "FAIL" });
}

fn role_line(c: &RoleCheck) -> String {
    let name = c.role.role_name();
    let policy = c.role.policy_name();
    match (c.exists, c.policy_attached) {
        (true, true) if c.created => format!("role {name}: created with {policy}"),
        (true, true) if c.attached => format!("role {name}: attached {policy}"),
        (true, true) => format!("role {name} has {policy}"),
        (true, false) => {
            format!("role {name} lacks the system policy {policy}; run `ossrelay preflight --fix`")
        }
        (false, _) => format!("role {name} does not exist; run `ossrelay preflight --fix`"),
    }
}

/// Runs the checks; returns the exit code.
pub async fn run(args: PreflightArgs) -> i32 {
    if args.region.trim().is_empty() {
        eprintln!("error: --region must name a region, e.g. cn-hangzhou");
        return EXIT_USAGE;
    }
    if let Some(e) = cloud_flag_mismatch(&args) {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    if args.cloud == Cloud::Aws {
        return run_aws(args).await;
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
    let mut all_ok = true;
    let mut fail = |line: String| {
        all_ok = false;
        report(false, line);
    };

    match side.sts.get_caller_identity(side.creds.as_ref()).await {
        Ok(id) => report(
            true,
            format!(
                "caller {} (account {}, {})",
                id.arn, id.account_id, id.identity_type
            ),
        ),
        Err(e) => fail(format!("caller identity: {e}")),
    }

    match side.ecs.describe_regions().await {
        Ok(regions) if regions.iter().any(|r| r.region_id == args.region) => {
            report(true, format!("ECS serves region {}", args.region))
        }
        Ok(regions) => fail(format!(
            "region {} is not among ECS regions ({})",
            args.region,
            regions
                .iter()
                .map(|r| r.region_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => fail(format!("ECS DescribeRegions: {e}")),
    }

    for name in &args.buckets {
        let bucket = match side.bucket(name) {
            Ok(b) => b,
            Err(e) => {
                fail(format!("bucket {name}: {e}"));
                continue;
            }
        };
        match bucket.get_bucket_info().await {
            Ok(info) if info.region == args.region => {
                report(true, format!("bucket {name} is in {}", info.region))
            }
            Ok(info) => fail(format!(
                "bucket {name} is in {}, not {}; ECS exports and imports only use buckets of the image's region",
                info.region, args.region
            )),
            Err(e) => fail(format!("bucket {name}: {e}")),
        }
    }

    let mut changed = false;
    for role in [ServiceRole::Export, ServiceRole::Import] {
        match check_service_role(&side.ram, role, args.fix).await {
            Ok(c) => {
                changed |= c.changed();
                if c.ok() {
                    report(true, role_line(&c));
                } else {
                    fail(role_line(&c));
                }
            }
            Err(e) => {
                let hint = hint_suffix(e.code());
                fail(format!("role {}: {e}{hint}", role.role_name()));
            }
        }
    }
    if changed && !args.propagation_wait.is_zero() {
        eprintln!(
            "waiting {}s for the RAM changes to take effect",
            args.propagation_wait.as_secs()
        );
        tokio::time::sleep(args.propagation_wait).await;
    }
    if all_ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// `--cloud aws`: credentials, buckets, EC2, the vmimport role.
async fn run_aws(args: PreflightArgs) -> i32 {
    use crate::aws::ec2::Ec2Client;
    use crate::aws::iam::IamClient;
    use crate::aws::preflight::{check_ec2, check_identity, check_role, Line};
    use crate::s3::{Provider, S3Client, S3Config};

    let region = args.region.trim().to_string();
    let env = EnvLookup::process();
    let show = |l: &Line| report(l.ok, l.text.clone());
    let creds = match crate::credentials::aws::resolve(
        args.profile.as_deref(),
        &AwsCredentialOptions {
            sts_endpoint: args.endpoints.sts_endpoint.clone(),
            region: Some(region.clone()),
            ..Default::default()
        },
        &env,
    ) {
        Ok(c) => c,
        Err(e) => {
            report(false, format!("AWS credentials: {e}"));
            return EXIT_FAILED;
        }
    };
    let sts = StsClient::new(
        sts_endpoint(args.endpoints.sts_endpoint.as_deref(), &region, &env),
        region.clone(),
    );
    let identity = check_identity(&sts, creds.as_ref()).await;
    show(&identity);
    if !identity.ok {
        // Every other check would fail for the same reason.
        return EXIT_FAILED;
    }
    let mut all_ok = true;

    let mut cfg = S3Config::new(
        Provider::Aws,
        region.clone(),
        args.s3_endpoint.clone(),
        creds.clone(),
    );
    cfg.region_flag = "--region".into();
    match S3Client::new(cfg) {
        Ok(s3) => {
            for name in &args.buckets {
                let line = match s3.bucket(name.as_str()).bucket_region().await {
                    Ok(Some(r)) if r == region => Line::ok(format!("bucket {name} is in {r}")),
                    Ok(Some(r)) => Line::fail(format!(
                        "bucket {name} is in {r}, not {region}; VM Import/Export only uses buckets of the image's region (use a bucket in {region}, or --region {r})"
                    )),
                    Ok(None) => Line::ok(format!("bucket {name} exists (the endpoint names no region)")),
                    Err(e) => Line::fail(format!("bucket {name}: {e}")),
                };
                all_ok &= line.ok;
                show(&line);
            }
        }
        Err(e) => {
            all_ok = false;
            report(false, format!("S3: {e}"));
        }
    }

    let ec2 = Ec2Client::new(region.clone(), args.ec2_endpoint.clone(), creds.clone());
    let line = check_ec2(&ec2).await;
    all_ok &= line.ok;
    show(&line);

    let iam = IamClient::new(&region, args.iam_endpoint.clone(), creds.clone());
    let (lines, changed) =
        check_role(&iam, &args.role_name, &region, &args.buckets, args.fix).await;
    for l in &lines {
        all_ok &= l.ok;
        show(l);
    }
    if changed && !args.propagation_wait.is_zero() {
        eprintln!(
            "waiting {}s for the IAM changes to take effect",
            args.propagation_wait.as_secs()
        );
        tokio::time::sleep(args.propagation_wait).await;
    }
    if all_ok {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: PreflightArgs,
    }

    #[test]
    fn flags() {
        let a = W::try_parse_from([
            "x",
            "--region",
            "r1",
            "--bucket",
            "b1",
            "--bucket",
            "b2",
            "--fix",
            "--propagation-wait",
            "5s",
            "--ram-endpoint",
            "http://h",
        ])
        .unwrap()
        .a;
        assert_eq!(a.buckets, ["b1", "b2"]);
        assert!(a.fix);
        assert_eq!(a.propagation_wait, Duration::from_secs(5));
        assert_eq!(a.endpoints.ram_endpoint.as_deref(), Some("http://h"));
        assert!(W::try_parse_from(["x"]).is_err(), "--region is required");
        assert_eq!(a.cloud, Cloud::Aliyun, "aliyun stays the default");
        assert_eq!(cloud_flag_mismatch(&a), None);
    }

    #[test]
    fn aws_flags() {
        let a = W::try_parse_from([
            "x",
            "--cloud",
            "aws",
            "--region",
            "eu-west-1",
            "--bucket",
            "b",
            "--s3-endpoint",
            "http://s3",
            "--ec2-endpoint",
            "http://ec2",
            "--iam-endpoint",
            "http://iam",
            "--sts-endpoint",
            "http://sts",
            "--profile",
            "p",
        ])
        .unwrap()
        .a;
        assert_eq!(a.cloud, Cloud::Aws);
        assert_eq!(a.s3_endpoint.as_deref(), Some("http://s3"));
        assert_eq!(a.ec2_endpoint.as_deref(), Some("http://ec2"));
        assert_eq!(a.iam_endpoint.as_deref(), Some("http://iam"));
        assert_eq!(a.endpoints.sts_endpoint.as_deref(), Some("http://sts"));
        assert_eq!(a.role_name, "vmimport");
        assert_eq!(cloud_flag_mismatch(&a), None);
        let wrong = W::try_parse_from(["x", "--region", "r", "--ec2-endpoint", "http://e"])
            .unwrap()
            .a;
        assert_eq!(
            cloud_flag_mismatch(&wrong).as_deref(),
            Some("--ec2-endpoint applies to --cloud aws only")
        );
        let wrong = W::try_parse_from([
            "x",
            "--cloud",
            "aws",
            "--region",
            "r",
            "--ram-endpoint",
            "http://e",
        ])
        .unwrap()
        .a;
        assert!(cloud_flag_mismatch(&wrong)
            .unwrap()
            .contains("--cloud aliyun"));
        assert!(W::try_parse_from(["x", "--cloud", "gcp", "--region", "r"]).is_err());
    }
}
