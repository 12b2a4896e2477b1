//! `ossrelay preflight`: are credentials, buckets and the ECS service roles ready for an image
//! export or import in a region? With `--fix`, creates the missing roles.

use std::time::Duration;

use clap::Args;

use super::cloud::{parse_duration, EndpointArgs};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::acs::ram::{check_service_role, RoleCheck, ServiceRole};
use crate::acs::wait::hint_suffix;
use crate::cloud::Side;

/// Flags of `ossrelay preflight`.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Region to check, e.g. cn-hangzhou.
    #[arg(long)]
    pub region: String,
    /// aliyun CLI profile (default: the credential chain).
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
    }
}
