//! One side of a migration: a cloud account in one region, with its credentials and the
//! control-plane (ECS, RAM, STS) and OSS clients, each with its endpoint override.
//!
//! Below the CLI and the daemon (both build sides from their flags or job specs); above the
//! protocol rooms it combines.

use std::sync::Arc;

use crate::acs::ecs::EcsClient;
use crate::acs::ram::RamClient;
use crate::acs::StsClient;
use crate::credentials::sts::{DEFAULT_STS_ENDPOINT, ENV_STS_ENDPOINT};
use crate::credentials::{self, CredentialsProvider, EnvLookup};
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
