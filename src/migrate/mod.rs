//! Image migration across regions, accounts and clouds: export → wait → relay each disk object
//! → import with the source image's attributes → wait until Available → clean up.
//!
//! Every stage is recorded in a state file ([`state`]) before and after its cloud side effect,
//! so rerunning the same migration after a crash or Ctrl-C continues where it stopped: a
//! finished export is not repeated, a running one is found again (DescribeTasks), relayed disks
//! are skipped and a half-relayed one resumes inside the engine, and a running import is found
//! by name and tag (DescribeImages with every status) instead of being started twice.
//!
//! The stages talk to each cloud's image service through [`ImageApi`] (ECS in [`aliyun`], EC2
//! VM Import/Export in [`aws`]) and relay through a pluggable [`RelayFn`], so the whole state
//! machine runs in tests without HTTP. What the source image is travels as
//! [`mapping::ImageAttrs`], so each side speaks only its own cloud's words.

mod abandon;
mod aliyun;
mod aws;
pub mod mapping;
pub mod setup;
pub mod state;
pub mod zeros;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::acs::ecs::{EcsApi, Image, ImageFormat, TaskAttribute};
use crate::acs::ram::RoleRetry;
use crate::acs::rpc::RpcError;
use crate::acs::wait::{hint_suffix, PollSchedule, WaitError};
use crate::aws::ec2::Ec2Api;
use crate::store::{ErrorClass, ObjectStore, StoreError};
use crate::transfer::{self, CopyOptions, Location, Progress, TransferError};

pub use abandon::{abandon, AbandonReport};
pub use aliyun::{default_image_name, import_input, plan_disks};
pub use mapping::{Cloud, ImageAttrs};
pub use state::{DiskState, MigrateState, MigrationKey, Stage};

/// Tag put on imported images so a rerun can tell its own import from someone else's.
pub const SOURCE_TAG: &str = "ossrelay:source";

/// What one relayed disk became.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DiskResult {
    pub source: String,
    pub destination: String,
    pub bytes: u64,
    /// CRC-64 of the destination object, as a decimal string in JSON.
    #[serde(
        serialize_with = "crate::transfer::state::ser_u64_string",
        deserialize_with = "crate::transfer::state::de_u64_string"
    )]
    pub crc64: u64,
    /// The independent proofs that held for this disk's relay (the copy's `verified_by`).
    #[serde(default)]
    pub verified_by: Vec<String>,
    /// With `--disk-format auto` and a RAW export that could be sampled before the relay:
    /// the share of the sampled bytes in all-zero 64 KiB clusters (0.0 to 1.0), which chose
    /// QCOW2 or RAW (see [`zeros`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_share: Option<f64>,
    /// A disk converted on the way (`--disk-format qcow2|vhd|auto`): the guest RAW's size
    /// and CRC-64/XZ (decimal string), as `copy --json`'s `raw_bytes` and `raw_crc64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    #[serde(
        with = "state::opt_u64_string",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub raw_crc64: Option<u64>,
}

/// The future a [`RelayFn`] returns.
pub type RelayFuture = Pin<Box<dyn Future<Output = Result<DiskResult, MigrateError>> + Send>>;

/// Relays one exported disk object to its destination. The default is [`relay_disk`]; the
/// streaming unpack of `.raw.tar.gz` exports plugs in here.
pub type RelayFn = Arc<
    dyn Fn(Location, Location, CopyOptions, Arc<Progress>, CancellationToken) -> RelayFuture
        + Send
        + Sync,
>;

/// [`relay_disk`] as a [`RelayFn`].
pub fn default_relay() -> RelayFn {
    Arc::new(|src, dst, opts, progress, cancel| {
        Box::pin(relay_disk(src, dst, opts, progress, cancel))
    })
}

/// The disk format `migrate` relays into (`--disk-format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MigrateDiskFormat {
    /// The exported disk as the export wrote it (a RAW export unpacked): today's behaviour.
    #[default]
    Raw,
    /// For an ECS import, QCOW2 when the export's measured zero share makes it smaller
    /// than the RAW, else RAW (a `.raw.tar.gz` cannot be measured before it is decoded:
    /// QCOW2, at worst ≈0.02 % larger); RAW for EC2. See [`zeros`].
    Auto,
    /// A RAW export converted to QCOW2 on the way (ECS imports only).
    Qcow2,
    /// A RAW export written as a fixed VHD on the way (ECS imports only; ECS refuses
    /// dynamic VHDs with InvalidVHDImage.IncorrectSize, so zeros still travel).
    Vhd,
}

impl MigrateDiskFormat {
    /// What a RAW export is written as, for a destination cloud.
    pub fn resolve(self, dst: Cloud) -> DiskPlan {
        match (self, dst) {
            (Self::Raw, _) | (Self::Auto, Cloud::Aws) => DiskPlan::Fixed(transfer::DiskFormat::Raw),
            (Self::Auto, _) => DiskPlan::Measured,
            (Self::Qcow2, _) => DiskPlan::Fixed(transfer::DiskFormat::Qcow2),
            (Self::Vhd, _) => DiskPlan::Fixed(transfer::DiskFormat::Vhd),
        }
    }
}

/// What a RAW export is relayed as, resolved for the destination cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskPlan {
    /// Always this format.
    Fixed(transfer::DiskFormat),
    /// QCOW2 or RAW, whichever the export's zero share measured before the relay makes
    /// smaller; QCOW2 for what cannot be measured first (see [`zeros`]).
    Measured,
}

/// The destination key of a RAW disk written as `format` (`x.raw` → `x.qcow2`); other keys
/// (an export that is already QCOW2, VHD or VMDK) are relayed as they are.
pub fn converted_key(key: &str, format: transfer::DiskFormat) -> String {
    if format == transfer::DiskFormat::Raw || !key.to_ascii_lowercase().ends_with(".raw") {
        return key.to_string();
    }
    transfer::convert::container_name(key, format)
}

/// Whether a key names a gzip tarball (how RAW exports arrive).
pub fn is_tar_gz(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with(".tar.gz") || k.ends_with(".tgz")
}

/// The destination key of an exported object: `x.raw.tar.gz` → `x.raw`; others unchanged.
pub fn unpacked_key(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    if lower.ends_with(".tar.gz") {
        key[..key.len() - ".tar.gz".len()].to_string()
    } else if lower.ends_with(".tgz") {
        format!("{}.raw", &key[..key.len() - ".tgz".len()])
    } else {
        key.to_string()
    }
}

/// Copies one disk object with the relay engine. A `.tar.gz` export must be unpacked on the
/// way (ImportImage does not take tarballs), which needs the unpack stage.
pub async fn relay_disk(
    src: Location,
    dst: Location,
    opts: CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<DiskResult, MigrateError> {
    // ImportImage does not take .tar.gz: stream the member out of the archive, unpacked; a
    // RAW bound for a `.qcow2`/`.vhd` key is converted on the way (`--disk-format`).
    let src_raw = is_tar_gz(&src.key) || src.key.to_ascii_lowercase().ends_with(".raw");
    let dst_key = dst.key.to_ascii_lowercase();
    let container = if dst_key.ends_with(".qcow2") {
        transfer::DiskFormat::Qcow2
    } else if dst_key.ends_with(".vhd") {
        // Fixed: ECS refuses dynamic VHDs (InvalidVHDImage.IncorrectSize).
        transfer::DiskFormat::Vhd
    } else {
        transfer::DiskFormat::Raw
    };
    let transform = if src_raw && container != transfer::DiskFormat::Raw {
        transfer::Transform::Convert {
            format: container,
            unpack: is_tar_gz(&src.key),
            input: transfer::InputFormat::Raw,
        }
    } else if is_tar_gz(&src.key) {
        transfer::Transform::Unpack
    } else {
        transfer::Transform::None
    };
    let r = transfer::relay(
        src,
        transfer::Target::Fixed(dst),
        transform,
        opts,
        progress,
        cancel,
    )
    .await
    .map_err(MigrateError::from_transfer)?;
    let s = r.summary();
    let (raw_bytes, raw_crc64) = match &r {
        transfer::Relayed::Converted(c) => (Some(c.raw_bytes), Some(c.raw_crc64)),
        _ => (None, None),
    };
    Ok(DiskResult {
        source: s.source.clone(),
        destination: s.destination.clone(),
        bytes: s.bytes,
        crc64: s.crc64,
        verified_by: s.verified_by.clone(),
        zero_share: None,
        raw_bytes,
        raw_crc64,
    })
}

/// Why a migration stopped. Messages say what to do; rerunning resumes in every case.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{step}: {source}{}", hint_suffix(source.code()))]
    Api {
        step: &'static str,
        #[source]
        source: RpcError,
    },
    #[error(transparent)]
    Wait(WaitError),
    #[error("{step}: {source}{}", aws_hint(step, source))]
    Aws {
        step: &'static str,
        #[source]
        source: Box<crate::aws::query::AwsQueryError>,
    },
    #[error(transparent)]
    AwsWait(Box<crate::aws::wait::Ec2WaitError>),
    #[error("image {image_id} was not found in {region} (check --src-region, --image-id and the source profile)")]
    ImageNotFound { image_id: String, region: String },
    #[error("image {image_id} is {status}; only Available images can be exported")]
    ImageNotAvailable { image_id: String, status: String },
    #[error("export task {task_id} finished but named no OSS objects")]
    NoExportedObjects { task_id: String },
    #[error("export task {task_id} wrote to bucket {bucket}, but the migration uses {expected}")]
    UnexpectedBucket {
        task_id: String,
        bucket: String,
        expected: String,
    },
    #[error(transparent)]
    Transfer(TransferError),
    #[error("deleting {object}: {source}")]
    Store {
        object: String,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    State(String),
    #[error("an image named {name:?} already exists in {region} and was not made by this migration; pass another --image-name")]
    NameTaken { name: String, region: String },
    #[error(
        "interrupted during {stage}; progress is saved in {path}: rerun the same command to resume"
    )]
    Interrupted { stage: &'static str, path: String },
    #[error("{0}")]
    Usage(String),
    #[error("checking {object} before the import: {source}")]
    Check {
        object: String,
        #[source]
        source: StoreError,
    },
    /// The relayed object no longer holds what the relay wrote: importing it would build an
    /// image that differs from the source.
    #[error("{object} changed after the relay ({got_bytes} bytes, CRC-64 {got_crc}; the relay wrote {bytes} bytes, CRC-64 {crc}); not importing it: rerun to relay the disk again")]
    RelayedObjectChanged {
        object: String,
        bytes: u64,
        crc: String,
        got_bytes: u64,
        got_crc: String,
    },
}

impl MigrateError {
    fn api(step: &'static str) -> impl FnOnce(RpcError) -> Self {
        move |source| Self::Api { step, source }
    }

    /// Maps an engine error; an interrupted copy becomes [`MigrateError::Interrupted`].
    pub fn from_transfer(e: TransferError) -> Self {
        if matches!(e.root(), TransferError::Interrupted { .. }) {
            Self::Interrupted {
                stage: Stage::Relay.as_str(),
                path: String::new(),
            }
        } else {
            Self::Transfer(e)
        }
    }

    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Interrupted { .. })
            || matches!(self, Self::Wait(WaitError::Interrupted { .. }))
            || matches!(
                self,
                Self::AwsWait(e) if matches!(**e, crate::aws::wait::Ec2WaitError::Interrupted { .. })
            )
    }
}

/// What to do about an EC2 error, when it is clear.
fn aws_hint(step: &str, e: &crate::aws::query::AwsQueryError) -> String {
    match e.code() {
        Some("InvalidParameter") if e.message().is_some_and(|m| m.contains("service role")) => {
            format!(
                "; {step} needs the vmimport service role: run `ossrelay preflight --cloud aws \
             --region REGION --bucket BUCKET --fix`"
            )
        }
        Some("AuthFailure" | "UnauthorizedOperation") => {
            "; check the AWS credentials of this side and their EC2 permissions".into()
        }
        Some("InvalidAMIID.NotFound" | "InvalidAMIID.Malformed") => {
            "; check --image-id and --src-region".into()
        }
        _ => String::new(),
    }
}

/// What the caller chose.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub key: MigrationKey,
    pub src_bucket: String,
    /// Name of the new image; default: the source image's name.
    pub image_name: Option<String>,
    /// ExportImage `OSSPrefix` (letters and digits).
    pub export_prefix: String,
    /// `None`: the service default (RAW, as `.raw.tar.gz`).
    pub export_format: Option<ImageFormat>,
    /// What a RAW export is relayed as (resolved for the destination cloud).
    pub disk_format: DiskPlan,
    pub keep_objects: bool,
    pub state_dir: PathBuf,
    pub poll: PollSchedule,
    pub role_retry: RoleRetry,
    pub copy: CopyOptions,
}

/// One side's image service.
#[derive(Clone)]
pub enum ImageApi {
    /// ECS (ExportImage / ImportImage) in the side's region.
    Aliyun(Arc<dyn EcsApi>),
    /// EC2 VM Import/Export in the side's region.
    Aws(Arc<dyn Ec2Api>),
}

impl ImageApi {
    pub fn cloud(&self) -> Cloud {
        match self {
            Self::Aliyun(_) => Cloud::Aliyun,
            Self::Aws(_) => Cloud::Aws,
        }
    }
}

/// The two sides: the image service in each region and the two buckets.
#[derive(Clone)]
pub struct Backends {
    pub src: ImageApi,
    pub dst: ImageApi,
    /// The source bucket (where the export lands).
    pub src_store: Arc<dyn ObjectStore>,
    /// The destination bucket (what the import reads).
    pub dst_store: Arc<dyn ObjectStore>,
    pub relay: RelayFn,
}

/// Things worth telling the user while a migration runs.
pub enum Event<'a> {
    Resumed {
        stage: Stage,
        path: &'a Path,
    },
    Stage(Stage),
    ExportStarted {
        task_id: &'a str,
        adopted: bool,
    },
    ExportProgress(&'a TaskAttribute),
    /// The exported disk objects, described (`oss://…`, `s3://…`).
    Exported(Vec<String>),
    DiskStarted {
        index: usize,
        total: usize,
        source: String,
        destination: String,
        progress: Arc<Progress>,
    },
    DiskDone {
        index: usize,
        result: &'a DiskResult,
    },
    ImportStarted {
        image_id: &'a str,
        task_id: Option<&'a str>,
        adopted: bool,
    },
    ImportProgress(&'a Image),
    /// A task's status in words (EC2 export and import tasks).
    TaskProgress(String),
    Deleted {
        object: String,
    },
}

/// Receives [`Event`]s.
pub type EventSink<'a> = &'a (dyn Fn(Event<'_>) + Send + Sync);

/// The finished migration (printed with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrateOutcome {
    pub image_id: String,
    pub region: String,
    /// The cloud of the new image.
    pub cloud: Cloud,
    pub disks: Vec<DiskResult>,
}

struct Run<'a> {
    cfg: &'a MigrateConfig,
    b: &'a Backends,
    cancel: &'a CancellationToken,
    events: EventSink<'a>,
    path: PathBuf,
    state: MigrateState,
}

/// Runs (or resumes) a migration to the end.
pub async fn migrate(
    cfg: &MigrateConfig,
    backends: &Backends,
    cancel: &CancellationToken,
    events: EventSink<'_>,
) -> Result<MigrateOutcome, MigrateError> {
    let path = state::state_path(&cfg.state_dir, &cfg.key);
    // Two runs of one migration would start two export tasks writing one object, then two
    // imports: exactly one may hold the state file.
    let _lock = lock_path(&path)?;
    let state = match state::load(&path, &cfg.key)? {
        Some(s) => {
            if s.src_bucket != cfg.src_bucket {
                return Err(MigrateError::Usage(format!(
                    "this migration was started with --src-bucket {}; rerun with it (or move {} away to start over)",
                    s.src_bucket,
                    path.display()
                )));
            }
            events(Event::Resumed {
                stage: s.stage,
                path: &path,
            });
            s
        }
        None => MigrateState::new(cfg.key.clone(), cfg.src_bucket.clone()),
    };
    let mut run = Run {
        cfg,
        b: backends,
        cancel,
        events,
        path,
        state,
    };
    run.save()?;
    run.drive().await.map_err(|e| run.locate_interrupt(e))
}

/// Takes the lock of a migration's state file; the error names the run holding it.
fn lock_path(path: &std::path::Path) -> Result<crate::transfer::state::StateLock, MigrateError> {
    use crate::transfer::state::{lock_file, LockError};
    lock_file(path).map_err(|e| match e {
        LockError::Busy { pid, lock } => MigrateError::State(format!(
            "another run of this migration is running ({}, lock {}); wait for it to finish or \
             stop it",
            LockError::holder(pid),
            lock.display()
        )),
        LockError::Io { path, error } => MigrateError::State(format!(
            "cannot create {}: {error}; choose a writable --state-dir",
            path.display()
        )),
    })
}

impl Run<'_> {
    fn save(&mut self) -> Result<(), MigrateError> {
        state::save(&self.path, &mut self.state)
    }

    fn advance(&mut self, stage: Stage) -> Result<(), MigrateError> {
        self.state.stage = stage;
        self.save()?;
        (self.events)(Event::Stage(stage));
        Ok(())
    }

    fn locate_interrupt(&self, e: MigrateError) -> MigrateError {
        if e.is_interrupted() {
            MigrateError::Interrupted {
                stage: self.state.stage.as_str(),
                path: self.path.display().to_string(),
            }
        } else {
            e
        }
    }

    async fn drive(&mut self) -> Result<MigrateOutcome, MigrateError> {
        loop {
            if self.cancel.is_cancelled() {
                return Err(MigrateError::Interrupted {
                    stage: self.state.stage.as_str(),
                    path: String::new(),
                });
            }
            match self.state.stage {
                Stage::Export => match self.b.src.clone() {
                    ImageApi::Aliyun(ecs) => self.ecs_export(&ecs).await?,
                    ImageApi::Aws(ec2) => self.ec2_export(&ec2).await?,
                },
                Stage::WaitExport => match self.b.src.clone() {
                    ImageApi::Aliyun(ecs) => self.ecs_wait_export(&ecs).await?,
                    ImageApi::Aws(ec2) => self.ec2_wait_export(&ec2).await?,
                },
                Stage::Relay => self.relay().await?,
                Stage::Import => match self.b.dst.clone() {
                    ImageApi::Aliyun(ecs) => self.ecs_import(&ecs).await?,
                    ImageApi::Aws(ec2) => self.ec2_import(&ec2).await?,
                },
                Stage::WaitImport => match self.b.dst.clone() {
                    ImageApi::Aliyun(ecs) => self.ecs_wait_import(&ecs).await?,
                    ImageApi::Aws(ec2) => self.ec2_wait_import(&ec2).await?,
                },
                Stage::Cleanup => self.cleanup().await?,
                Stage::Done => return Ok(self.outcome()),
            }
        }
    }

    fn outcome(&self) -> MigrateOutcome {
        MigrateOutcome {
            image_id: self.state.new_image_id.clone().unwrap_or_default(),
            region: self.cfg.key.dst_region.clone(),
            cloud: self.b.dst.cloud(),
            disks: self
                .state
                .disks
                .iter()
                .map(|d| DiskResult {
                    source: self.b.src_store.describe(&d.source_key),
                    destination: self.b.dst_store.describe(&d.destination_key),
                    bytes: d.bytes,
                    crc64: d.crc64.unwrap_or_default(),
                    verified_by: d.verified_by.clone(),
                    zero_share: d.zero_share,
                    raw_bytes: d.raw_bytes,
                    raw_crc64: d.raw_crc64,
                })
                .collect(),
        }
    }

    async fn relay(&mut self) -> Result<(), MigrateError> {
        let total = self.state.disks.len();
        for i in 0..total {
            if self.state.disks[i].copied {
                continue;
            }
            let d = self.state.disks[i].clone();
            let src = Location::new(self.b.src_store.clone(), d.source_key.clone());
            let dst = Location::new(self.b.dst_store.clone(), d.destination_key.clone());
            let progress = Arc::new(Progress::default());
            (self.events)(Event::DiskStarted {
                index: i,
                total,
                source: src.describe(),
                destination: dst.describe(),
                progress: progress.clone(),
            });
            let mut result = (self.b.relay)(
                src,
                dst,
                self.cfg.copy.clone(),
                progress,
                self.cancel.clone(),
            )
            .await?;
            result.zero_share = d.zero_share;
            let disk = &mut self.state.disks[i];
            disk.copied = true;
            disk.bytes = result.bytes;
            disk.crc64 = Some(result.crc64);
            disk.verified_by = result.verified_by.clone();
            disk.raw_bytes = result.raw_bytes;
            disk.raw_crc64 = result.raw_crc64;
            self.save()?;
            (self.events)(Event::DiskDone {
                index: i,
                result: &result,
            });
        }
        self.advance(Stage::Import)
    }

    /// The destination key of the exported disk `source_key` (`unpacked`: its key once
    /// unpacked) and, when `--disk-format auto` measured it, the zero share that chose the
    /// format. Decided once, when the export is done: the key is kept in the state, so a
    /// rerun relays and imports the same format.
    async fn destination(
        &self,
        source_key: &str,
        unpacked: &str,
    ) -> Result<(String, Option<f64>), MigrateError> {
        let plain_raw = !is_tar_gz(source_key) && source_key.to_ascii_lowercase().ends_with(".raw");
        let format = match self.cfg.disk_format {
            DiskPlan::Fixed(f) => f,
            // Its RAW exists only as it is decoded: QCOW2, at worst ≈0.02 % larger.
            DiskPlan::Measured if !plain_raw => transfer::DiskFormat::Qcow2,
            DiskPlan::Measured => {
                let check = |source| MigrateError::Check {
                    object: self.b.src_store.describe(source_key),
                    source,
                };
                let meta = self.b.src_store.head(source_key).await.map_err(check)?;
                let sample = zeros::sample(
                    self.b.src_store.as_ref(),
                    source_key,
                    meta.size,
                    Some(meta.etag.as_str()).filter(|e| !e.is_empty()),
                )
                .await
                .map_err(check)?;
                let share = sample.share();
                let min_part = self.b.dst_store.limits().min_part_size;
                let format = zeros::choose(share, meta.size, min_part);
                tracing::info!(
                    object = %self.b.src_store.describe(source_key),
                    zero_share = share,
                    sampled_bytes = sample.sampled,
                    format = format.name(),
                    "--disk-format auto: measured the export's all-zero clusters"
                );
                return Ok((converted_key(unpacked, format), Some(share)));
            }
        };
        Ok((converted_key(unpacked, format), None))
    }

    /// Tells the exported disk objects, described (`oss://…`, `s3://…`).
    fn tell_exported(&self) {
        let described = self
            .state
            .disks
            .iter()
            .map(|d| {
                format!(
                    "{} disk: {}",
                    d.role,
                    self.b.src_store.describe(&d.source_key)
                )
            })
            .collect();
        (self.events)(Event::Exported(described));
    }

    /// The tag value naming this migration's source on what it creates.
    fn source_tag(&self) -> String {
        let k = &self.cfg.key;
        if k.src_cloud.is_aliyun() {
            format!("{}/{}", k.src_region, k.image_id)
        } else {
            format!("{}/{}/{}", k.src_cloud, k.src_region, k.image_id)
        }
    }

    /// The source image's cross-cloud description, recorded at the export.
    fn source_attrs(&self) -> Result<ImageAttrs, MigrateError> {
        if let Some(a) = &self.state.source_attrs {
            return Ok(a.clone());
        }
        self.state
            .source_image
            .as_ref()
            .map(ImageAttrs::from_ecs)
            .ok_or_else(|| {
                MigrateError::State(
                    "the state file lacks the source image's attributes; move it away to start over"
                        .into(),
                )
            })
    }

    fn client_token(&self) -> String {
        use sha2::{Digest, Sha256};
        let k = &self.cfg.key;
        let mut h = Sha256::new();
        for p in [&k.src_region, &k.image_id, &k.dst_region, &k.dst_bucket] {
            h.update(p.as_bytes());
            h.update(b"\n");
        }
        h.update(self.state.import_attempt.to_le_bytes());
        format!("ossrelay-{}", &hex::encode(h.finalize())[..32])
    }

    /// Checks each relayed object still has the size and CRC-64 the relay recorded, so the
    /// import never builds an image from bytes that differ from the source. A changed disk is
    /// marked for relaying again on the next run.
    async fn verify_relayed(&mut self) -> Result<(), MigrateError> {
        for i in 0..self.state.disks.len() {
            let d = self.state.disks[i].clone();
            let object = self.b.dst_store.describe(&d.destination_key);
            let meta = self
                .b
                .dst_store
                .head(&d.destination_key)
                .await
                .map_err(|source| MigrateError::Check {
                    object: object.clone(),
                    source,
                })?;
            let crc_differs =
                matches!((d.crc64, meta.checksums.crc64_xz()), (Some(a), Some(b)) if a != b);
            if meta.size != d.bytes || crc_differs {
                let show = |c: Option<u64>| c.map_or_else(|| "unknown".into(), |c| c.to_string());
                self.state.disks[i].copied = false;
                self.state.stage = Stage::Relay;
                self.save()?;
                return Err(MigrateError::RelayedObjectChanged {
                    object,
                    bytes: d.bytes,
                    crc: show(d.crc64),
                    got_bytes: meta.size,
                    got_crc: show(meta.checksums.crc64_xz()),
                });
            }
        }
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), MigrateError> {
        if !self.cfg.keep_objects {
            for d in self.state.disks.clone() {
                for (store, key) in [
                    (&self.b.src_store, &d.source_key),
                    (&self.b.dst_store, &d.destination_key),
                ] {
                    match store.delete(key).await {
                        Ok(()) => (self.events)(Event::Deleted {
                            object: store.describe(key),
                        }),
                        Err(e) if e.class == ErrorClass::NotFound => {}
                        Err(source) => {
                            return Err(MigrateError::Store {
                                object: store.describe(key),
                                source,
                            })
                        }
                    }
                }
            }
        }
        self.advance(Stage::Done)
    }
}

#[cfg(test)]
mod tests;
