//! Building a migration from user options: the `ossrelay migrate` flags and the daemon's
//! migrate jobs share this, so both validate, resolve credentials and check buckets alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{default_relay, Backends, Cloud, ImageApi, MigrateConfig, MigrationKey};
use crate::acs::ecs::{validate_oss_prefix, ImageFormat};
use crate::acs::ram::RoleRetry;
use crate::acs::wait::PollSchedule;
use crate::cloud::{check_bucket_region, AwsSide, Endpoints, Side};
use crate::store::ObjectStore;
use crate::transfer::CopyOptions;

/// Everything that describes one migration (the CLI's `migrate` options).
#[derive(Debug, Clone)]
pub struct MigrateParams {
    pub src_cloud: Cloud,
    pub dst_cloud: Cloud,
    pub src_region: String,
    pub image_id: String,
    pub src_bucket: String,
    pub dst_region: String,
    pub dst_bucket: String,
    pub src_profile: Option<String>,
    pub dst_profile: Option<String>,
    pub image_name: Option<String>,
    pub keep_objects: bool,
    pub export_prefix: String,
    pub format: Option<ImageFormat>,
    /// What a RAW export is relayed as (`--disk-format`).
    pub disk_format: super::MigrateDiskFormat,
    /// Limit on each of the export and import waits.
    pub timeout: Duration,
    pub role_retries: u32,
    pub src: Endpoints,
    pub dst: Endpoints,
    /// Relay options; `state_dir` is set from [`MigrateParams::state_dir`].
    pub copy: CopyOptions,
    /// Where the migration and copy state live.
    pub state_dir: PathBuf,
}

/// Why a migration cannot start: wrong options (`Usage`, names the option with
/// `--flag` spelling) or an environment problem (credentials, buckets).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl MigrateParams {
    /// Checks the options that need no network.
    pub fn validate(&self) -> Result<(), SetupError> {
        if self.dst_cloud == Cloud::Aws
            && matches!(
                self.disk_format,
                super::MigrateDiskFormat::Qcow2 | super::MigrateDiskFormat::Vhd
            )
        {
            return Err(SetupError::Usage(
                "--disk-format qcow2 and vhd are for ECS imports; EC2 imports the RAW (use \
                 --disk-format raw or auto)"
                    .into(),
            ));
        }
        match self.src_cloud {
            Cloud::Aliyun if !self.image_id.starts_with("m-") => {
                return Err(SetupError::Usage(format!(
                    "--image-id {:?} is not an ECS custom image id (m-…); for an AMI pass --src-cloud aws",
                    self.image_id
                )));
            }
            Cloud::Aws if !self.image_id.starts_with("ami-") => {
                return Err(SetupError::Usage(format!(
                    "--image-id {:?} is not an AMI id (ami-…); for an ECS image pass --src-cloud aliyun",
                    self.image_id
                )));
            }
            _ => {}
        }
        if self.src_cloud == Cloud::Aws && self.dst_cloud == Cloud::Aws {
            return Err(SetupError::Usage(
                "--src-cloud aws --dst-cloud aws: EC2 copies AMIs itself (`aws ec2 copy-image`); \
                 ossrelay migrates within Alibaba Cloud and between the two clouds"
                    .into(),
            ));
        }
        if self.dst_cloud == Cloud::Aws && self.format == Some(ImageFormat::Qcow2) {
            return Err(SetupError::Usage(
                "--format qcow2 cannot be imported by EC2 (it takes RAW, VHD, VMDK, OVA): \
                 use --format raw (the default) or vhd"
                    .into(),
            ));
        }
        if self.format.is_some() && self.src_cloud == Cloud::Aws {
            return Err(SetupError::Usage(
                "--format applies to ECS exports; an AMI is exported as RAW".into(),
            ));
        }
        validate_oss_prefix(&self.export_prefix)
            .map_err(|e| SetupError::Usage(format!("--export-prefix: {e}")))?;
        for b in [&self.src_bucket, &self.dst_bucket] {
            crate::locate::validate_bucket_name(b).map_err(SetupError::Usage)?;
        }
        self.copy
            .validate(match self.dst_cloud {
                Cloud::Aliyun => crate::oss::LIMITS,
                Cloud::Aws => crate::s3::provider::Provider::Aws.limits(),
            })
            .map_err(|e| SetupError::Usage(e.to_string()))?;
        Ok(())
    }

    /// Validates, resolves both sides' credentials and clients, and checks that each bucket
    /// is in its side's region (minutes here save an hour-long export into a bucket the
    /// import can never read).
    pub async fn prepare(&self) -> Result<(MigrateConfig, Backends), SetupError> {
        self.validate()?;
        let (src, src_store) = side(
            self.src_cloud,
            &self.src_region,
            &self.src_profile,
            &self.src,
            &self.src_bucket,
            "src",
        )
        .await?;
        let (dst, dst_store) = side(
            self.dst_cloud,
            &self.dst_region,
            &self.dst_profile,
            &self.dst,
            &self.dst_bucket,
            "dst",
        )
        .await?;
        let cfg = MigrateConfig {
            key: MigrationKey {
                src_region: self.src_region.clone(),
                image_id: self.image_id.clone(),
                dst_region: self.dst_region.clone(),
                dst_bucket: self.dst_bucket.clone(),
                src_cloud: self.src_cloud,
                dst_cloud: self.dst_cloud,
            },
            src_bucket: self.src_bucket.clone(),
            image_name: self.image_name.clone(),
            export_prefix: self.export_prefix.clone(),
            export_format: self.format,
            disk_format: self.disk_format.resolve(self.dst_cloud),
            keep_objects: self.keep_objects,
            state_dir: self.state_dir.clone(),
            poll: PollSchedule {
                timeout: self.timeout,
                ..PollSchedule::default()
            },
            role_retry: RoleRetry {
                retries: self.role_retries,
                ..RoleRetry::default()
            },
            copy: CopyOptions {
                state_dir: Some(self.state_dir.clone()),
                ..self.copy.clone()
            },
        };
        let backends = Backends {
            src,
            dst,
            src_store,
            dst_store,
            relay: default_relay(),
        };
        Ok((cfg, backends))
    }
}

/// Resolves one side's credentials and clients and checks that its bucket is in its region
/// (minutes here save an hour-long export into a bucket the import can never read). `which`
/// is `src` or `dst`, for the flags named in errors.
async fn side(
    cloud: Cloud,
    region: &str,
    profile: &Option<String>,
    endpoints: &Endpoints,
    bucket: &str,
    which: &'static str,
) -> Result<(ImageApi, Arc<dyn ObjectStore>), SetupError> {
    let (region_flag, bucket_flag, what) = match which {
        "src" => ("--src-region", "--src-bucket", "source"),
        _ => ("--dst-region", "--dst-bucket", "destination"),
    };
    let failed = |e: String| SetupError::Failed(format!("{what}: {e}"));
    match cloud {
        Cloud::Aliyun => {
            let s = Side::new(region, profile.as_deref(), endpoints.clone(), region_flag)
                .map_err(failed)?;
            let store = s.bucket(bucket).map_err(|e| failed(e.to_string()))?;
            check_bucket_region(&s, bucket, bucket_flag)
                .await
                .map_err(SetupError::Failed)?;
            Ok((ImageApi::Aliyun(Arc::new(s.ecs.clone())), Arc::new(store)))
        }
        Cloud::Aws => {
            let s = AwsSide::new(region, profile.as_deref(), endpoints.clone(), region_flag)
                .map_err(failed)?;
            let store = s.bucket(bucket).map_err(|e| failed(e.to_string()))?;
            s.check_bucket_region(bucket, bucket_flag)
                .await
                .map_err(SetupError::Failed)?;
            Ok((ImageApi::Aws(Arc::new(s.ec2.clone())), Arc::new(store)))
        }
    }
}
