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
    /// The object store: OSS on Alibaba Cloud, S3 on AWS.
    pub oss: Option<String>,
    pub ecs: Option<String>,
    pub ram: Option<String>,
    /// STS of the side's cloud (Alibaba STS or AWS STS).
    pub sts: Option<String>,
    /// AWS: EC2 (VM Import/Export).
    pub ec2: Option<String>,
    /// AWS: IAM (the vmimport role).
    pub iam: Option<String>,
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

/// Region, credentials and clients of one AWS side of a migration: S3 (`--src-endpoint` /
/// `--dst-endpoint`), EC2 and STS, sharing one credential provider (and its cache).
pub struct AwsSide {
    pub region: String,
    pub creds: Arc<dyn CredentialsProvider>,
    pub ec2: crate::aws::ec2::Ec2Client,
    pub endpoints: Endpoints,
    s3: crate::s3::S3Client,
}

impl AwsSide {
    /// Resolves AWS credentials for `profile` (the AWS chain when `None`: environment,
    /// `~/.aws` files, web identity, instance role).
    pub fn new(
        region: &str,
        profile: Option<&str>,
        endpoints: Endpoints,
        region_flag: &'static str,
    ) -> Result<Self, String> {
        let env = EnvLookup::process();
        let creds = credentials::aws::resolve(
            profile,
            &credentials::aws::AwsCredentialOptions {
                sts_endpoint: endpoints.sts.clone(),
                region: Some(region.to_string()),
                ..Default::default()
            },
            &env,
        )
        .map_err(|e| format!("credentials: {e}"))?;
        let mut cfg = crate::s3::S3Config::new(
            crate::s3::provider::Provider::Aws,
            region,
            endpoints.oss.clone(),
            creds.clone(),
        );
        cfg.region_flag = region_flag.to_string();
        let s3 = crate::s3::S3Client::new(cfg).map_err(|e| format!("S3: {e}"))?;
        Ok(Self {
            region: region.to_string(),
            ec2: crate::aws::ec2::Ec2Client::new(region, endpoints.ec2.clone(), creds.clone()),
            creds,
            endpoints,
            s3,
        })
    }

    /// An S3 bucket of this side.
    pub fn bucket(&self, name: &str) -> Result<crate::s3::S3Bucket, LocateError> {
        locate::validate_bucket_name(name).map_err(LocateError::Invalid)?;
        Ok(self.s3.bucket(name))
    }

    /// Checks that `bucket` exists and is in this side's region (VM Import/Export only uses
    /// buckets of the task's region).
    pub async fn check_bucket_region(&self, bucket: &str, flag: &str) -> Result<(), String> {
        let b = self.bucket(bucket).map_err(|e| format!("{flag}: {e}"))?;
        match b.bucket_region().await {
            Ok(Some(r)) if r != self.region => Err(format!(
                "bucket {bucket} is in {r}, not {}: EC2 exports and imports only use a bucket of the task's region",
                self.region
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{flag} {bucket}: {e}")),
        }
    }
}
