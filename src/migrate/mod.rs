//! Image migration across regions and accounts: export → wait → relay each disk object →
//! import with the source image's attributes → wait until Available → clean up.
//!
//! Every stage is recorded in a state file ([`state`]) before and after its cloud side effect,
//! so rerunning the same migration after a crash or Ctrl-C continues where it stopped: a
//! finished export is not repeated, a running one is found again (DescribeTasks), relayed disks
//! are skipped and a half-relayed one resumes inside the engine, and a running import is found
//! by name and tag (DescribeImages with every status) instead of being started twice.
//!
//! The stages talk to ECS through [`EcsApi`] and relay through a pluggable [`RelayFn`], so the
//! whole state machine runs in tests without HTTP.

pub mod setup;
pub mod state;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::acs::ecs::{
    describe_all_images, DescribeImagesInput, DescribeTasksInput, EcsApi, ExportImageInput, Image,
    ImageFormat, ImportDisk, ImportImageInput, TaskAttribute, TaskStatus, TaskSummary,
};
use crate::acs::ram::{retry_missing_role, RoleRetry};
use crate::acs::rpc::RpcError;
use crate::acs::wait::{hint_suffix, wait_image, wait_task, PollSchedule, WaitError};
use crate::store::{ErrorClass, ObjectStore, StoreError};
use crate::transfer::{self, CopyOptions, Location, Progress, TransferError};

pub use state::{DiskState, MigrateState, MigrationKey, Stage};

/// Tag put on imported images so a rerun can tell its own import from someone else's.
pub const SOURCE_TAG: &str = "ossrelay:source";

/// What one relayed disk became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskResult {
    pub source: String,
    pub destination: String,
    pub bytes: u64,
    /// CRC-64 of the destination object, as a decimal string in JSON.
    #[serde(serialize_with = "crate::transfer::state::ser_u64_string")]
    pub crc64: u64,
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
    // ImportImage does not take .tar.gz: stream the member out of the archive, unpacked.
    let transform = if is_tar_gz(&src.key) {
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
    Ok(DiskResult {
        source: s.source.clone(),
        destination: s.destination.clone(),
        bytes: s.bytes,
        crc64: s.crc64,
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
    pub keep_objects: bool,
    pub state_dir: PathBuf,
    pub poll: PollSchedule,
    pub role_retry: RoleRetry,
    pub copy: CopyOptions,
}

/// The two sides: ECS in each region and the two buckets.
#[derive(Clone)]
pub struct Backends {
    pub src_ecs: Arc<dyn EcsApi>,
    pub dst_ecs: Arc<dyn EcsApi>,
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
    Exported(&'a [DiskState]),
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
    Deleted {
        object: String,
    },
}

/// Receives [`Event`]s.
pub type EventSink<'a> = &'a (dyn Fn(Event<'_>) + Send + Sync);

/// The finished migration (printed with `--json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateOutcome {
    pub image_id: String,
    pub region: String,
    pub disks: Vec<DiskResult>,
}

/// The default name of the new image: the source's, when ImportImage would accept it.
pub fn default_image_name(source: &Image) -> String {
    let n = &source.image_name;
    let valid = (2..=128).contains(&n.chars().count())
        && n.chars().next().is_some_and(|c| c.is_alphabetic())
        && !n.starts_with("aliyun")
        && !n.starts_with("acs:")
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | ':' | '_' | '-'));
    if valid {
        n.clone()
    } else {
        format!("migrated-{}", source.image_id)
    }
}

/// Orders exported objects system disk first, then data disks by name, and pairs them with the
/// source image's disk sizes.
pub fn plan_disks(
    objects: &[crate::acs::ecs::TaskObject],
    image: Option<&Image>,
) -> Vec<DiskState> {
    let mut objs: Vec<_> = objects.to_vec();
    objs.sort_by_key(|o| (!o.key.contains("system"), o.key.clone()));
    let data_sizes: Vec<Option<u64>> = image
        .map(|i| i.data_disks().iter().map(|d| d.size_gib()).collect())
        .unwrap_or_default();
    let mut data_index = 0;
    objs.into_iter()
        .enumerate()
        .map(|(i, o)| {
            let system = i == 0;
            let size_gib = if system {
                image
                    .and_then(|img| img.system_disk())
                    .and_then(|d| d.size_gib())
            } else {
                data_index += 1;
                data_sizes.get(data_index - 1).copied().flatten()
            };
            DiskState {
                role: if system { "system" } else { "data" }.into(),
                destination_key: unpacked_key(&o.key),
                source_bucket: o.bucket,
                source_key: o.key,
                size_gib,
                copied: false,
                bytes: 0,
                crc64: None,
            }
        })
        .collect()
}

/// The ImportImage call for the relayed disks, carrying the source image's attributes.
pub fn import_input(
    name: &str,
    source: Option<&Image>,
    key: &MigrationKey,
    dst_bucket: &str,
    disks: &[DiskState],
    client_token: String,
) -> ImportImageInput {
    let attr = |f: fn(&Image) -> &String| {
        source
            .map(|i| f(i).clone())
            .filter(|v: &String| !v.is_empty())
    };
    ImportImageInput {
        image_name: name.to_string(),
        description: Some(format!(
            "Migrated by ossrelay from {}/{}",
            key.src_region, key.image_id
        )),
        architecture: attr(|i| &i.architecture),
        os_type: attr(|i| &i.os_type),
        platform: attr(|i| &i.platform),
        boot_mode: attr(|i| &i.boot_mode),
        license_type: None,
        role_name: None,
        disks: disks
            .iter()
            .map(|d| ImportDisk {
                oss_bucket: dst_bucket.to_string(),
                oss_object: d.destination_key.clone(),
                format: ImageFormat::from_key(&d.destination_key),
                disk_image_size: d.size_gib,
            })
            .collect(),
        nvme_support: attr(|i| &i.features.nvme_support),
        imds_support: attr(|i| &i.features.imds_support),
        tags: vec![(SOURCE_TAG.into(), source_tag(key))],
        client_token: Some(client_token),
    }
}

fn source_tag(key: &MigrationKey) -> String {
    format!("{}/{}", key.src_region, key.image_id)
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
                Stage::Export => self.export().await?,
                Stage::WaitExport => self.wait_export().await?,
                Stage::Relay => self.relay().await?,
                Stage::Import => self.import().await?,
                Stage::WaitImport => self.wait_import().await?,
                Stage::Cleanup => self.cleanup().await?,
                Stage::Done => return Ok(self.outcome()),
            }
        }
    }

    fn outcome(&self) -> MigrateOutcome {
        MigrateOutcome {
            image_id: self.state.new_image_id.clone().unwrap_or_default(),
            region: self.cfg.key.dst_region.clone(),
            disks: self
                .state
                .disks
                .iter()
                .map(|d| DiskResult {
                    source: self.b.src_store.describe(&d.source_key),
                    destination: self.b.dst_store.describe(&d.destination_key),
                    bytes: d.bytes,
                    crc64: d.crc64.unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// An ExportImage task for our image: a running one first, else (when a previous run may
    /// have started one whose answer was lost) the newest finished one.
    async fn find_export_task(
        &self,
        include_finished: bool,
    ) -> Result<Option<String>, MigrateError> {
        let list = self
            .b
            .src_ecs
            .describe_tasks(&DescribeTasksInput {
                task_action: Some("ExportImage".into()),
                resource_ids: vec![self.cfg.key.image_id.clone()],
                page_size: Some(100),
                ..DescribeTasksInput::default()
            })
            .await
            .map_err(MigrateError::api("DescribeTasks"))?;
        let ours: Vec<&TaskSummary> = list
            .task_set
            .iter()
            .filter(|t| t.resource_id.is_empty() || t.resource_id == self.cfg.key.image_id)
            .collect();
        if let Some(t) = ours.iter().find(|t| !t.task_status.is_terminal()) {
            return Ok(Some(t.task_id.clone()));
        }
        if include_finished {
            let newest = ours
                .iter()
                .filter(|t| t.task_status == TaskStatus::Finished)
                .max_by(|a, b| a.creation_time.cmp(&b.creation_time));
            return Ok(newest.map(|t| t.task_id.clone()));
        }
        Ok(None)
    }

    async fn export(&mut self) -> Result<(), MigrateError> {
        let key = self.cfg.key.clone();
        if self.state.source_image.is_none() {
            let list = self
                .b
                .src_ecs
                .describe_images(&DescribeImagesInput::by_id(&key.image_id))
                .await
                .map_err(MigrateError::api("DescribeImages"))?;
            let img = list
                .images
                .into_iter()
                .find(|i| i.image_id == key.image_id)
                .ok_or_else(|| MigrateError::ImageNotFound {
                    image_id: key.image_id.clone(),
                    region: key.src_region.clone(),
                })?;
            if img.status != "Available" {
                return Err(MigrateError::ImageNotAvailable {
                    image_id: key.image_id.clone(),
                    status: img.status,
                });
            }
            self.state.source_image = Some(img);
            self.save()?;
        }
        if self.state.export_task_id.is_none() {
            self.check_unpack_memory()?;
            // A previous run may have started an export and crashed before recording it.
            let adopted = if self.state.export_requested {
                self.find_export_task(true).await?
            } else {
                None
            };
            let (task_id, adopted) = match adopted {
                Some(t) => (t, true),
                None => {
                    self.state.export_requested = true;
                    self.save()?;
                    let input = ExportImageInput {
                        image_id: key.image_id.clone(),
                        oss_bucket: self.cfg.src_bucket.clone(),
                        oss_prefix: Some(self.cfg.export_prefix.clone()),
                        image_format: self.cfg.export_format,
                        role_name: None,
                    };
                    let ecs = self.b.src_ecs.clone();
                    match retry_missing_role(self.cfg.role_retry, || ecs.export_image(&input)).await
                    {
                        Ok(t) if !t.task_id.is_empty() => (t.task_id, false),
                        Ok(_) => {
                            return Err(MigrateError::State(
                                "ExportImage answered without a TaskId".into(),
                            ))
                        }
                        Err(e) if e.code() == Some("ImageIsExporting") => {
                            match self.find_export_task(false).await? {
                                Some(t) => (t, true),
                                None => return Err(MigrateError::api("ExportImage")(e)),
                            }
                        }
                        Err(e) => return Err(MigrateError::api("ExportImage")(e)),
                    }
                }
            };
            self.state.export_task_id = Some(task_id);
            self.save()?;
            let id = self.state.export_task_id.clone().unwrap_or_default();
            (self.events)(Event::ExportStarted {
                task_id: &id,
                adopted,
            });
        }
        self.advance(Stage::WaitExport)
    }

    /// A RAW export arrives as `.raw.tar.gz` and is unpacked on the way; a disk too large for
    /// `--memory` would fail only at the relay, after an export of hours. Refuse it up front.
    fn check_unpack_memory(&self) -> Result<(), MigrateError> {
        if !matches!(self.cfg.export_format, None | Some(ImageFormat::Raw)) {
            return Ok(());
        }
        let Some(img) = &self.state.source_image else {
            return Ok(());
        };
        let limits = self.b.dst_store.limits();
        for d in &img.disk_device_mappings {
            let Ok(gib) = d.size.trim().parse::<u64>() else {
                continue;
            };
            if let Err(e) = transfer::unpack::check_memory(gib << 30, &self.cfg.copy, limits) {
                return Err(MigrateError::Usage(format!(
                    "disk {} of {} ({gib} GiB): {e}; nothing was exported",
                    d.device, self.cfg.key.image_id
                )));
            }
        }
        Ok(())
    }

    async fn wait_export(&mut self) -> Result<(), MigrateError> {
        let task_id = match &self.state.export_task_id {
            Some(t) => t.clone(),
            None => return self.advance(Stage::Export),
        };
        let events = self.events;
        let mut on_progress = |t: &TaskAttribute| events(Event::ExportProgress(t));
        let result = wait_task(
            self.b.src_ecs.as_ref(),
            &task_id,
            &self.cfg.poll,
            self.cancel,
            &mut on_progress,
        )
        .await;
        let task = match result {
            Ok(t) => t,
            Err(e @ WaitError::TaskFailed { .. }) => {
                // A failed export is over: the next run starts a new one.
                self.state.export_task_id = None;
                self.state.export_requested = false;
                self.state.stage = Stage::Export;
                self.save()?;
                return Err(MigrateError::Wait(e));
            }
            Err(e) => return Err(MigrateError::Wait(e)),
        };
        let objects = task.exported_objects(&self.cfg.src_bucket);
        if objects.is_empty() {
            return Err(MigrateError::NoExportedObjects { task_id });
        }
        if let Some(o) = objects.iter().find(|o| o.bucket != self.cfg.src_bucket) {
            return Err(MigrateError::UnexpectedBucket {
                task_id,
                bucket: o.bucket.clone(),
                expected: self.cfg.src_bucket.clone(),
            });
        }
        self.state.disks = plan_disks(&objects, self.state.source_image.as_ref());
        (self.events)(Event::Exported(&self.state.disks));
        self.advance(Stage::Relay)
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
            let result = (self.b.relay)(
                src,
                dst,
                self.cfg.copy.clone(),
                progress,
                self.cancel.clone(),
            )
            .await?;
            let disk = &mut self.state.disks[i];
            disk.copied = true;
            disk.bytes = result.bytes;
            disk.crc64 = Some(result.crc64);
            self.save()?;
            (self.events)(Event::DiskDone {
                index: i,
                result: &result,
            });
        }
        self.advance(Stage::Import)
    }

    /// An image made by this migration (name and source tag match) that is not failed.
    async fn find_our_import(&self, name: &str) -> Result<Option<Image>, MigrateError> {
        let images =
            describe_all_images(self.b.dst_ecs.as_ref(), &DescribeImagesInput::by_name(name))
                .await
                .map_err(MigrateError::api("DescribeImages"))?;
        let tag = source_tag(&self.cfg.key);
        Ok(images.into_iter().find(|i| {
            i.image_name == name
                && i.tag(SOURCE_TAG) == Some(tag.as_str())
                && matches!(i.status.as_str(), "Creating" | "Waiting" | "Available")
        }))
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

    async fn import(&mut self) -> Result<(), MigrateError> {
        if self.state.new_image_id.is_none() {
            // An explicit --image-name wins (e.g. after a name clash); otherwise keep the name
            // chosen at the first attempt.
            let name = match (&self.cfg.image_name, &self.state.image_name) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => self
                    .state
                    .source_image
                    .as_ref()
                    .map(default_image_name)
                    .unwrap_or_else(|| format!("migrated-{}", self.cfg.key.image_id)),
            };
            self.state.image_name = Some(name.clone());
            self.save()?;
            let (image_id, task_id, adopted) = match self.find_our_import(&name).await? {
                Some(img) => (img.image_id, None, true),
                None => {
                    self.verify_relayed().await?;
                    let input = import_input(
                        &name,
                        self.state.source_image.as_ref(),
                        &self.cfg.key,
                        &self.cfg.key.dst_bucket,
                        &self.state.disks,
                        self.client_token(),
                    );
                    let ecs = self.b.dst_ecs.clone();
                    match retry_missing_role(self.cfg.role_retry, || ecs.import_image(&input)).await
                    {
                        Ok(t) if !t.image_id.is_empty() => {
                            let task = (!t.task_id.is_empty()).then_some(t.task_id);
                            (t.image_id, task, false)
                        }
                        Ok(_) => {
                            return Err(MigrateError::State(
                                "ImportImage answered without an ImageId".into(),
                            ))
                        }
                        Err(e)
                            if matches!(
                                e.code(),
                                Some("InvalidImageName.Duplicated" | "ImageIsImporting")
                            ) =>
                        {
                            match self.find_our_import(&name).await? {
                                Some(img) => (img.image_id, None, true),
                                None => {
                                    return Err(MigrateError::NameTaken {
                                        name,
                                        region: self.cfg.key.dst_region.clone(),
                                    })
                                }
                            }
                        }
                        Err(e) => return Err(MigrateError::api("ImportImage")(e)),
                    }
                }
            };
            self.state.new_image_id = Some(image_id.clone());
            self.state.import_task_id = task_id.clone();
            self.save()?;
            (self.events)(Event::ImportStarted {
                image_id: &image_id,
                task_id: task_id.as_deref(),
                adopted,
            });
        }
        self.advance(Stage::WaitImport)
    }

    async fn wait_import(&mut self) -> Result<(), MigrateError> {
        let image_id = match &self.state.new_image_id {
            Some(i) => i.clone(),
            None => return self.advance(Stage::Import),
        };
        let events = self.events;
        let mut on_progress = |i: &Image| events(Event::ImportProgress(i));
        match wait_image(
            self.b.dst_ecs.as_ref(),
            &image_id,
            &self.cfg.poll,
            self.cancel,
            &mut on_progress,
        )
        .await
        {
            Ok(_) => self.advance(Stage::Cleanup),
            Err(e @ (WaitError::ImageFailed { .. } | WaitError::ImageGone { .. })) => {
                // The relayed objects are still there: the next run imports them again.
                self.state.new_image_id = None;
                self.state.import_task_id = None;
                self.state.import_attempt += 1;
                self.state.stage = Stage::Import;
                self.save()?;
                Err(MigrateError::Wait(e))
            }
            Err(e) => Err(MigrateError::Wait(e)),
        }
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
