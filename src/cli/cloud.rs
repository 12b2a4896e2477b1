//! What the image commands (preflight, export, import, migrate) share: one "side" of the cloud
//! (region, credentials, and ECS / RAM / STS / OSS clients with their endpoint overrides),
//! durations, and progress lines for waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::credentials::sts::{DEFAULT_STS_ENDPOINT, ENV_STS_ENDPOINT};
use crate::credentials::{self, CredentialsProvider, EnvLookup};
use crate::ecs::ecs::{EcsClient, Image, TaskAttribute};
use crate::ecs::ram::RamClient;
use crate::ecs::StsClient;
use crate::locate::{self, LocateError, SideOptions};
use crate::oss::OssBucket;

/// Endpoint overrides of one side (all `None` = the real endpoints).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub oss: Option<String>,
    pub ecs: Option<String>,
    pub ram: Option<String>,
    pub sts: Option<String>,
}

/// The endpoint override flags of the single-side commands (`preflight`, `export`, `import`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EndpointArgs {
    /// OSS endpoint override.
    #[arg(long)]
    pub oss_endpoint: Option<String>,
    /// ECS endpoint override, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    pub ecs_endpoint: Option<String>,
    /// RAM endpoint override.
    #[arg(long)]
    pub ram_endpoint: Option<String>,
    /// STS endpoint override.
    #[arg(long)]
    pub sts_endpoint: Option<String>,
}

impl EndpointArgs {
    /// The overrides as [`Endpoints`].
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            oss: self.oss_endpoint.clone(),
            ecs: self.ecs_endpoint.clone(),
            ram: self.ram_endpoint.clone(),
            sts: self.sts_endpoint.clone(),
        }
    }
}

/// Region, credentials and clients of one side.
pub struct Side {
    pub region: String,
    pub creds: Arc<dyn CredentialsProvider>,
    pub ecs: EcsClient,
    pub ram: RamClient,
    pub sts: StsClient,
    pub endpoints: Endpoints,
    oss: SideOptions,
}

impl Side {
    /// Resolves credentials for `profile` (the chain when `None`). `--sts-endpoint` also
    /// steers AssumeRole inside the credential providers (RamRoleArn profiles), as
    /// `ALIBABA_CLOUD_STS_ENDPOINT` does.
    pub fn new(
        region: &str,
        profile: Option<&str>,
        endpoints: Endpoints,
        region_flag: &'static str,
    ) -> Result<Self, String> {
        let sts_override = endpoints.sts.clone();
        let env = match sts_override.clone() {
            Some(e) => EnvLookup::from_fn(move |k| {
                if k == ENV_STS_ENDPOINT {
                    Some(e.clone())
                } else {
                    std::env::var(k).ok()
                }
            }),
            None => EnvLookup::process(),
        };
        let (creds, _profile_region) = credentials::chain::resolve_with(profile, env)
            .map_err(|e| format!("credentials: {e}"))?;
        let sts_endpoint = sts_override
            .or_else(|| {
                std::env::var(ENV_STS_ENDPOINT)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_STS_ENDPOINT.to_string());
        Ok(Self {
            region: region.to_string(),
            ecs: EcsClient::new(region, endpoints.ecs.clone(), creds.clone()),
            ram: RamClient::new(endpoints.ram.clone(), creds.clone()),
            sts: StsClient::new(sts_endpoint),
            oss: SideOptions {
                region: Some(region.to_string()),
                endpoint: endpoints.oss.clone(),
                internal: false,
                profile: profile.map(str::to_string),
                region_flag: Some(region_flag),
                ..SideOptions::default()
            },
            creds,
            endpoints,
        })
    }

    /// An OSS bucket of this side (same credentials, region and endpoint override).
    pub fn bucket(&self, name: &str) -> Result<OssBucket, LocateError> {
        locate::validate_bucket_name(name).map_err(LocateError::Invalid)?;
        Ok(
            locate::oss_client_with(&self.oss, self.creds.clone(), Some(self.region.clone()))?
                .bucket(name),
        )
    }

    /// ECS in another region with the same credentials (the ECS override, if any, is kept:
    /// a simulator serves every region at one address).
    pub fn ecs_in(&self, region: &str) -> EcsClient {
        EcsClient::new(region, self.endpoints.ecs.clone(), self.creds.clone())
    }
}

/// Checks that `bucket` exists and is in this side's region (ECS exports and imports only use
/// buckets of the image's region). Lookup failures that may be transient or a missing
/// oss:GetBucketInfo permission are logged and let through for ECS to judge.
pub async fn check_bucket_region(side: &Side, bucket: &str, flag: &str) -> Result<(), String> {
    let b = side.bucket(bucket).map_err(|e| format!("{flag}: {e}"))?;
    match b.get_bucket_info().await {
        Ok(info) if info.region != side.region => Err(format!(
            "bucket {bucket} is in {}, not {}: ECS exports and imports only use a bucket of the image's region",
            info.region, side.region
        )),
        Ok(_) => Ok(()),
        // No such bucket, or one the endpoint cannot serve (wrong region): both are fatal.
        Err(e)
            if matches!(
                e.class,
                crate::store::ErrorClass::NotFound | crate::store::ErrorClass::Client
            ) || e.endpoint.is_some() =>
        {
            Err(format!("{flag} {bucket}: {e}"))
        }
        Err(e) => {
            tracing::warn!(error = %e, bucket, "cannot check the bucket's region; continuing");
            Ok(())
        }
    }
}

/// Parses `90`, `90s`, `15m`, `6h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}; use e.g. 90s, 15m, 6h or 2d"))?;
    let mult = match unit.trim() {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "invalid duration {s:?}; use e.g. 90s, 15m, 6h or 2d"
            ))
        }
    };
    if n == 0 {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Prints `line` on stderr unless it equals the previous one (polls repeat themselves).
#[derive(Default)]
pub struct StatusLine {
    last: Mutex<String>,
}

impl StatusLine {
    pub fn show(&self, line: String) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last != line {
            eprintln!("{line}");
            *last = line;
        }
    }
}

/// `export t-1: Processing 45%`.
pub fn task_line(what: &str, t: &TaskAttribute) -> String {
    match t.percent() {
        Some(p) => format!("{what} {}: {} {p:.0}%", t.task_id, t.task_status.as_str()),
        None => format!("{what} {}: {}", t.task_id, t.task_status.as_str()),
    }
}

/// `image m-1: Creating 30%`.
pub fn image_line(i: &Image) -> String {
    match i.percent() {
        Some(p) => format!("image {}: {} {p:.0}%", i.image_id, i.status),
        None => format!("image {}: {}", i.image_id, i.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86400)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
