//! Building a migration from user options: the `ossrelay migrate` flags and the daemon's
//! migrate jobs share this, so both validate, resolve credentials and check buckets alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{default_relay, Backends, MigrateConfig, MigrationKey};
use crate::acs::ecs::{validate_oss_prefix, ImageFormat};
use crate::acs::ram::RoleRetry;
use crate::acs::wait::PollSchedule;
use crate::cloud::{check_bucket_region, Endpoints, Side};
use crate::transfer::CopyOptions;

/// Everything that describes one migration (the CLI's `migrate` options).
#[derive(Debug, Clone)]
pub struct MigrateParams {
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
        if !self.image_id.starts_with("m-") {
            return Err(SetupError::Usage(format!(
                "--image-id {:?} is not a custom image id (m-…)",
                self.image_id
            )));
        }
        validate_oss_prefix(&self.export_prefix)
            .map_err(|e| SetupError::Usage(format!("--export-prefix: {e}")))?;
        for b in [&self.src_bucket, &self.dst_bucket] {
            crate::locate::validate_bucket_name(b).map_err(SetupError::Usage)?;
        }
        self.copy
            .validate(crate::oss::LIMITS)
            .map_err(|e| SetupError::Usage(e.to_string()))?;
        Ok(())
    }

    /// Validates, resolves both sides' credentials and clients, and checks that each bucket
    /// is in its side's region (minutes here save an hour-long export into a bucket the
    /// import can never read).
    pub async fn prepare(&self) -> Result<(MigrateConfig, Backends), SetupError> {
        self.validate()?;
        let side = |region: &str, profile: &Option<String>, ep: &Endpoints, flag| {
            Side::new(region, profile.as_deref(), ep.clone(), flag)
        };
        let src = side(
            &self.src_region,
            &self.src_profile,
            &self.src,
            "--src-region",
        )
        .map_err(|e| SetupError::Failed(format!("source: {e}")))?;
        let dst = side(
            &self.dst_region,
            &self.dst_profile,
            &self.dst,
            "--dst-region",
        )
        .map_err(|e| SetupError::Failed(format!("destination: {e}")))?;
        let src_store = src
            .bucket(&self.src_bucket)
            .map_err(|e| SetupError::Failed(e.to_string()))?;
        let dst_store = dst
            .bucket(&self.dst_bucket)
            .map_err(|e| SetupError::Failed(e.to_string()))?;
        for (s, bucket, flag) in [
            (&src, &self.src_bucket, "--src-bucket"),
            (&dst, &self.dst_bucket, "--dst-bucket"),
        ] {
            check_bucket_region(s, bucket, flag)
                .await
                .map_err(SetupError::Failed)?;
        }
        let cfg = MigrateConfig {
            key: MigrationKey {
                src_region: self.src_region.clone(),
                image_id: self.image_id.clone(),
                dst_region: self.dst_region.clone(),
                dst_bucket: self.dst_bucket.clone(),
            },
            src_bucket: self.src_bucket.clone(),
            image_name: self.image_name.clone(),
            export_prefix: self.export_prefix.clone(),
            export_format: self.format,
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
            src_ecs: Arc::new(src.ecs.clone()),
            dst_ecs: Arc::new(dst.ecs.clone()),
            src_store: Arc::new(src_store),
            dst_store: Arc::new(dst_store),
            relay: default_relay(),
        };
        Ok((cfg, backends))
    }
}
