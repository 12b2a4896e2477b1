//! The EC2 side of the world (S3 dialect): AMIs with one EBS volume each, VM Import/Export
//! tasks moving over simulated time through AWS's status sequence, the IAM roles VM
//! Import/Export assumes, and ClientToken records.
//!
//! Guarantees callers rely on:
//! * a task's view changes only in [`Ec2State::refresh`], which every reader calls first under
//!   [`Ec2::lock`]; a task is `completed` no earlier than `--task-seconds` after its start;
//! * an export writes exactly one object, `<prefix><task id>.raw`, at completion and never
//!   before, so a cancelled or failed export leaves nothing in the bucket; its content is the
//!   AMI's disk (shared, not copied: a synthetic multi-GiB disk costs no memory);
//! * an import's AMI exists (and is `available`) exactly when its task is `completed`; its
//!   disk's CRC-64 was computed by the simulator's own code from the object's bytes.
//!
//! Lock order: this lock, then the OSS lock (the export writes its object while refreshing);
//! nothing takes them the other way round.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::cloud::GIB;
use super::iam::{IamRole, VMIE_POLICY_ALL_BUCKETS, VMIE_TRUST};
use super::oss::Oss;
use crate::config::{Ec2TaskKind, SimConfig, SimError};
use crate::store::Content;
use crate::synthetic::Synthetic;

/// The bytes of an AMI's root volume. `size` may be shorter than `content` (a VHD's disk is
/// the file without its footer); readers only ever read `[0, size)`.
#[derive(Clone)]
pub(crate) struct AmiDisk {
    pub(crate) size: u64,
    /// CRC-64/XZ (ECMA) of the disk.
    pub(crate) crc: u64,
    /// CRC-64/NVME of the disk, when known (the S3 object an export writes reports it).
    pub(crate) nvme: Option<u64>,
    pub(crate) content: Content,
}

/// An AMI.
pub(crate) struct Ami {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) state: &'static str,
    pub(crate) architecture: String,
    pub(crate) boot_mode: String,
    /// `linux` or `windows`.
    pub(crate) platform: String,
    pub(crate) created: SystemTime,
    pub(crate) snapshot_id: String,
    pub(crate) disk: AmiDisk,
}

impl Ami {
    /// The root volume's size in GiB, rounded up.
    pub(crate) fn volume_gib(&self) -> u64 {
        self.disk.size.div_ceil(GIB).max(1)
    }
}

/// `Status` of an export or import task.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TaskState {
    Active,
    Completed,
    Deleting,
    Deleted,
}

impl TaskState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Active => "active",
            TaskState::Completed => "completed",
            TaskState::Deleting => "deleting",
            TaskState::Deleted => "deleted",
        }
    }
}

/// Where a task is in its simulated duration, and how it ends.
pub(crate) struct Pace {
    started: Instant,
    duration: Duration,
    pub(crate) state: TaskState,
    pub(crate) message: String,
    pub(crate) progress: u32,
    /// When it entered `deleting`.
    deleting_since: Option<Instant>,
}

impl Pace {
    fn new(duration: Duration) -> Self {
        Self {
            started: Instant::now(),
            duration,
            state: TaskState::Active,
            message: String::new(),
            progress: 0,
            deleting_since: None,
        }
    }

    /// Share of the duration elapsed (1.0 and more: time is up).
    fn fraction(&self) -> f64 {
        if self.duration.is_zero() {
            return 1.0;
        }
        self.started.elapsed().as_secs_f64() / self.duration.as_secs_f64()
    }

    /// Sets the message and progress of the stage `f` falls in (`stages` = upper bounds).
    fn stage(&mut self, f: f64, stages: &[(f64, &str)], floor: u32) {
        let name = stages
            .iter()
            .find(|(end, _)| f < *end)
            .or(stages.last())
            .map(|(_, n)| *n)
            .unwrap_or_default();
        self.message = name.to_string();
        self.progress = ((f * 100.0) as u32).clamp(floor, 99);
    }

    /// Ends the task `deleted` with `message` (failures skip `deleting`).
    fn fail(&mut self, message: String) {
        self.state = TaskState::Deleted;
        self.message = message;
    }

    fn complete(&mut self) {
        self.state = TaskState::Completed;
        self.message.clear();
        self.progress = 100;
    }

    /// `deleting` now, `deleted` a moment later (a tenth of the task time, at most 1 s).
    pub(crate) fn cancel(&mut self, message: String) {
        self.state = TaskState::Deleting;
        self.message = message;
        self.deleting_since = Some(Instant::now());
    }

    fn settle_deleting(&mut self) {
        let linger = (self.duration / 10).min(Duration::from_secs(1));
        if self.state == TaskState::Deleting
            && self.deleting_since.is_some_and(|t| t.elapsed() >= linger)
        {
            self.state = TaskState::Deleted;
        }
    }
}

/// An ExportImage task.
pub(crate) struct ExportTask {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) image_id: String,
    pub(crate) format: String,
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    pub(crate) role_name: String,
    pub(crate) description: String,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) pace: Pace,
    /// Injected failure (`--ec2-task-fail export`).
    fail: Option<String>,
    disk: AmiDisk,
}

impl ExportTask {
    /// The one object this export writes.
    pub(crate) fn key(&self) -> String {
        format!(
            "{}{}.{}",
            self.prefix,
            self.id,
            self.format.to_ascii_lowercase()
        )
    }
}

/// The disk an ImportImage task reads.
pub(crate) struct ImportSource {
    /// As given (`raw`, `VHD`, …).
    pub(crate) format: String,
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// `DiskContainer.N.Url` when the source was given that way.
    pub(crate) url: Option<String>,
    pub(crate) description: String,
    pub(crate) device_name: String,
    pub(crate) size: u64,
}

/// An ImportImage task.
pub(crate) struct ImportTask {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) description: String,
    pub(crate) architecture: String,
    /// `Linux` / `Windows` as given (empty: detected as Linux at completion).
    pub(crate) platform: String,
    pub(crate) boot_mode: String,
    pub(crate) license_type: String,
    pub(crate) encrypted: bool,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) source: ImportSource,
    pub(crate) pace: Pace,
    pub(crate) image_id: Option<String>,
    pub(crate) snapshot_id: Option<String>,
    fail: Option<String>,
    /// What the worker found: the disk, or the `ClientError: …` the task ends with.
    pub(crate) outcome: Option<Result<AmiDisk, String>>,
}

/// The EC2 / IAM state under one lock.
#[derive(Default)]
pub(crate) struct Ec2State {
    pub(crate) images: BTreeMap<String, Ami>,
    pub(crate) exports: BTreeMap<String, ExportTask>,
    pub(crate) imports: BTreeMap<String, ImportTask>,
    /// `(account, role name)` → role.
    pub(crate) roles: BTreeMap<(String, String), IamRole>,
    /// `(account, action, ClientToken)` → (parameter fingerprint, task ID).
    pub(crate) tokens: HashMap<(String, &'static str, String), (String, String)>,
}

/// The simulated EC2 of one region (S3 dialect).
pub(crate) struct Ec2 {
    pub(crate) task_duration: Duration,
    pub(crate) role_propagation: Duration,
    /// Active tasks per account and kind.
    pub(crate) task_limit: usize,
    task_fail: Vec<(Ec2TaskKind, String)>,
    state: Mutex<Ec2State>,
}

/// `n` random lower-case hex digits.
pub(crate) fn hex_id(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).expect("digit"))
        .collect()
}

/// A preloaded role: created and written long enough ago to have propagated.
fn preloaded_role(account: &str, now: SystemTime, propagation: Duration) -> IamRole {
    let at = now
        .checked_sub(propagation)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    IamRole {
        name: "vmimport".into(),
        path: "/".into(),
        role_id: super::iam::role_id(account, "vmimport"),
        description: "VM Import/Export service role (preloaded by the simulator)".into(),
        max_session: 3600,
        created: at,
        trust: VMIE_TRUST.into(),
        policies: [(
            "vmimport".to_string(),
            (VMIE_POLICY_ALL_BUCKETS.to_string(), at),
        )]
        .into(),
    }
}

impl Ec2 {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let known = |a: &str| cfg.accounts.iter().any(|x| x.name == a);
        let now = SystemTime::now();
        let mut st = Ec2State::default();
        for i in &cfg.ec2_images {
            if !known(&i.account) {
                return Err(SimError::Config(format!(
                    "EC2 image {} names unknown account {}",
                    i.id, i.account
                )));
            }
            if i.size == 0 || !i.size.is_multiple_of(512) {
                return Err(SimError::Config(format!(
                    "EC2 image {} size {} must be a positive multiple of 512 bytes",
                    i.id, i.size
                )));
            }
            let syn = Synthetic::new(&i.id, i.size);
            let ami = Ami {
                id: i.id.clone(),
                account: i.account.clone(),
                name: if i.name.is_empty() {
                    format!("img-{}", i.id)
                } else {
                    i.name.clone()
                },
                description: String::new(),
                state: "available",
                architecture: i.architecture.clone(),
                boot_mode: i.boot_mode.clone(),
                platform: i.platform.clone(),
                created: now,
                snapshot_id: format!("snap-{}", hex_id(17)),
                disk: AmiDisk {
                    size: i.size,
                    crc: syn.crc(),
                    nvme: Some(syn.nvme()),
                    content: Content::Synthetic(Arc::new(syn)),
                },
            };
            if st.images.insert(i.id.clone(), ami).is_some() {
                return Err(SimError::Config(format!(
                    "EC2 image {} is defined twice",
                    i.id
                )));
            }
        }
        for a in &cfg.vmimport_roles {
            if !known(a) {
                return Err(SimError::Config(format!(
                    "--vmimport-role names unknown account {a}"
                )));
            }
            st.roles.insert(
                (a.clone(), "vmimport".into()),
                preloaded_role(a, now, cfg.role_propagation),
            );
        }
        if cfg.ec2_task_limit == 0 {
            return Err(SimError::Config(
                "the EC2 task limit must be at least 1".into(),
            ));
        }
        Ok(Self {
            task_duration: cfg.task_duration,
            role_propagation: cfg.role_propagation,
            task_limit: cfg.ec2_task_limit,
            task_fail: cfg
                .ec2_task_fail
                .iter()
                .map(|f| (f.kind, f.message.clone()))
                .collect(),
            state: Mutex::new(st),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Ec2State> {
        self.state.lock().expect("ec2 lock")
    }

    fn injected(&self, kind: Ec2TaskKind) -> Option<String> {
        self.task_fail
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, m)| m.clone())
    }

    /// A new export task of `disk` (checks done by the caller).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_export(
        &self,
        account: &str,
        image_id: &str,
        disk: AmiDisk,
        format: &str,
        bucket: &str,
        prefix: &str,
        role_name: &str,
        description: &str,
        tags: Vec<(String, String)>,
    ) -> ExportTask {
        let mut pace = Pace::new(self.task_duration);
        pace.message = "validating".into();
        ExportTask {
            id: format!("export-ami-{}", hex_id(17)),
            account: account.into(),
            image_id: image_id.into(),
            format: format.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            role_name: role_name.into(),
            description: description.into(),
            tags,
            pace,
            fail: self.injected(Ec2TaskKind::Export),
            disk,
        }
    }

    /// A new import task (its worker sets `outcome` later).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_import(
        &self,
        account: &str,
        description: &str,
        architecture: &str,
        platform: &str,
        boot_mode: &str,
        license_type: &str,
        encrypted: bool,
        tags: Vec<(String, String)>,
        source: ImportSource,
    ) -> ImportTask {
        let mut pace = Pace::new(self.task_duration);
        pace.message = "pending".into();
        pace.progress = 2;
        ImportTask {
            id: format!("import-ami-{}", hex_id(17)),
            account: account.into(),
            description: description.into(),
            architecture: architecture.into(),
            platform: platform.into(),
            boot_mode: boot_mode.into(),
            license_type: license_type.into(),
            encrypted,
            tags,
            source,
            pace,
            image_id: None,
            snapshot_id: None,
            fail: self.injected(Ec2TaskKind::Import),
            outcome: None,
        }
    }

    /// `(size, crc64)` of an `available` AMI's disk.
    pub(crate) fn image_crc64(&self, oss: &Oss, id: &str) -> Option<(u64, u64)> {
        let mut st = self.lock();
        st.refresh(oss);
        let i = st.images.get(id)?;
        (i.state == "available").then_some((i.disk.size, i.disk.crc))
    }
}

const EXPORT_STAGES: &[(f64, &str)] =
    &[(0.2, "validating"), (0.8, "converting"), (1.0, "updating")];
const IMPORT_STAGES: &[(f64, &str)] = &[
    (0.1, "pending"),
    (0.3, "validating"),
    (0.55, "converting"),
    (0.75, "booting"),
    (1.0, "preparing ami"),
];

fn client_error(m: &str) -> String {
    if m.starts_with("ClientError") {
        m.to_string()
    } else {
        format!("ClientError: {m}")
    }
}

impl Ec2State {
    /// Moves every task to where its time and work put it; completes exports (writing their
    /// object) and imports (registering their AMI).
    pub(crate) fn refresh(&mut self, oss: &Oss) {
        let now = SystemTime::now();
        for t in self.exports.values_mut() {
            t.pace.settle_deleting();
            if t.pace.state != TaskState::Active {
                continue;
            }
            let f = t.pace.fraction();
            if let Some(m) = t.fail.as_ref().filter(|_| f >= 0.5) {
                t.pace.fail(client_error(m));
            } else if f >= 1.0 {
                let d = &t.disk;
                match oss.put_object_content(
                    &t.bucket,
                    &t.key(),
                    d.size,
                    d.crc,
                    d.nvme,
                    d.content.clone(),
                    now,
                ) {
                    Ok(()) => t.pace.complete(),
                    Err(e) => t.pace.fail(client_error(&e)),
                }
            } else {
                t.pace.stage(f, EXPORT_STAGES, 0);
            }
        }
        let mut new_images = Vec::new();
        for t in self.imports.values_mut() {
            t.pace.settle_deleting();
            if t.pace.state != TaskState::Active {
                continue;
            }
            let f = t.pace.fraction();
            match (&t.outcome, &t.fail) {
                (_, Some(m)) if f >= 0.5 => t.pace.fail(client_error(m)),
                (Some(Err(m)), _) if f >= IMPORT_STAGES[1].0 => t.pace.fail(m.clone()),
                (Some(Ok(disk)), _) if f >= 1.0 => {
                    let id = format!("ami-{}", hex_id(17));
                    let snap = format!("snap-{}", hex_id(17));
                    new_images.push(Ami {
                        id: id.clone(),
                        account: t.account.clone(),
                        name: t.id.clone(),
                        description: t.description.clone(),
                        state: "available",
                        architecture: t.architecture.clone(),
                        boot_mode: t.boot_mode.clone(),
                        platform: t.platform.to_ascii_lowercase(),
                        created: now,
                        snapshot_id: snap.clone(),
                        disk: disk.clone(),
                    });
                    t.image_id = Some(id);
                    t.snapshot_id = Some(snap);
                    t.pace.complete();
                }
                _ => t.pace.stage(f.min(0.999), IMPORT_STAGES, 2),
            }
        }
        for i in new_images {
            self.images.insert(i.id.clone(), i);
        }
    }

    /// Active tasks of `account` (exports or imports).
    pub(crate) fn active(&self, account: &str, kind: Ec2TaskKind) -> usize {
        match kind {
            Ec2TaskKind::Export => self
                .exports
                .values()
                .filter(|t| t.account == account && t.pace.state == TaskState::Active)
                .count(),
            Ec2TaskKind::Import => self
                .imports
                .values()
                .filter(|t| t.account == account && t.pace.state == TaskState::Active)
                .count(),
        }
    }
}
