//! The job model: what a client submits, what the daemon stores and what it reports.
//!
//! Submitted bodies are checked field by field (not with a derived deserializer) so that every
//! `400` names the offending field, and unknown fields are refused rather than ignored: a typo
//! in `part_size` must not silently run a copy with the default.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::locate::{self, ObjectUrl, SideOptions};
use crate::migrate::MigrateDiskFormat;
use crate::transfer::{
    CopyOptions, CopySummary, DiskFormat, InputFormat, Location, Relayed, Target, Transform,
    UnpackMode,
};

/// Lifecycle of a job. Terminal states: `succeeded`, `failed`, `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in display order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lowercase name used in JSON, query strings and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a lowercase state name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job will not change state by itself any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Options of a `copy` job: the CLI's long option names with `_` for `-`. Credentials are
/// never part of it; they are resolved from profiles or the chain when the job runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySpec {
    pub source: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<String>,
    #[serde(default)]
    pub src_internal: bool,
    #[serde(default)]
    pub dst_internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_profile: Option<String>,
    /// S3 provider of an `s3://` source, as `copy --src-provider` (default aws).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_provider: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub src_path_style: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dst_path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_sts_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_sts_endpoint: Option<String>,
    /// Parts in flight for this job (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Part size in bytes (default: automatic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// `auto`, `always` or `never`, as `copy --unpack`. Absent means `never`: jobs stored by
    /// a release without unpack resume exactly as they were submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack: Option<UnpackMode>,
    /// Relay the object in this many shards at once (`copy --shards N`, run in the daemon;
    /// see [`crate::transfer::shard::run_local`]). Absent or 1: one relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    /// Disk format to write, as `copy --format`: `raw` (absent: the bytes as they are),
    /// `qcow2`, `vhd` or `vhd-dynamic`, converted on the fly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// Disk format of a plain source, as `copy --input-format`: `auto` (absent), `raw`,
    /// `qcow2`, `vhd` or `vmdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_format: Option<InputFormat>,
}

/// Options of a `migrate` job: the `ossrelay migrate` long option names with `_` for `-`.
/// The state directory is the job's own; the export/import wait limit is the CLI default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateSpec {
    pub src_region: String,
    pub image_id: String,
    pub src_bucket: String,
    pub dst_region: String,
    pub dst_bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(default)]
    pub keep_objects: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_prefix: Option<String>,
    /// ExportImage's format, as `migrate --format`: `raw`, `vhd` or `qcow2` (default: the
    /// region's default, RAW). Not the relayed format: that is `disk_format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// What a RAW export is relayed and imported as, as `migrate --disk-format`: `raw`
    /// (absent), `auto`, `qcow2` or `vhd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<MigrateDiskFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ecs_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ecs_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ram_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ram_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_sts_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_sts_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
    /// `aliyun` (default; absent in jobs stored before clouds existed) or `aws`.
    #[serde(default)]
    pub src_cloud: crate::migrate::Cloud,
    #[serde(default)]
    pub dst_cloud: crate::migrate::Cloud,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ec2_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ec2_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_iam_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_iam_endpoint: Option<String>,
}

impl MigrateSpec {
    /// The endpoint fields of a migrate job, with their values.
    pub fn endpoints(&self) -> [(&'static str, &Option<String>); 12] {
        [
            ("src_ec2_endpoint", &self.src_ec2_endpoint),
            ("dst_ec2_endpoint", &self.dst_ec2_endpoint),
            ("src_iam_endpoint", &self.src_iam_endpoint),
            ("dst_iam_endpoint", &self.dst_iam_endpoint),
            ("src_endpoint", &self.src_endpoint),
            ("dst_endpoint", &self.dst_endpoint),
            ("src_ecs_endpoint", &self.src_ecs_endpoint),
            ("dst_ecs_endpoint", &self.dst_ecs_endpoint),
            ("src_ram_endpoint", &self.src_ram_endpoint),
            ("dst_ram_endpoint", &self.dst_ram_endpoint),
            ("src_sts_endpoint", &self.src_sts_endpoint),
            ("dst_sts_endpoint", &self.dst_sts_endpoint),
        ]
    }

    /// The library's description of this migration, with its state in `state_dir`.
    pub fn params(&self, state_dir: &Path) -> crate::migrate::setup::MigrateParams {
        use crate::cloud::Endpoints;
        crate::migrate::setup::MigrateParams {
            src_cloud: self.src_cloud,
            dst_cloud: self.dst_cloud,
            src_region: self.src_region.clone(),
            image_id: self.image_id.clone(),
            src_bucket: self.src_bucket.clone(),
            dst_region: self.dst_region.clone(),
            dst_bucket: self.dst_bucket.clone(),
            src_profile: self.src_profile.clone(),
            dst_profile: self.dst_profile.clone(),
            image_name: self.image_name.clone(),
            keep_objects: self.keep_objects,
            export_prefix: self
                .export_prefix
                .clone()
                .unwrap_or_else(|| "ossrelay".into()),
            format: self.format.as_deref().and_then(parse_format),
            disk_format: self.disk_format.unwrap_or_default(),
            timeout: std::time::Duration::from_secs(12 * 3600),
            role_retries: 12,
            src: Endpoints {
                oss: self.src_endpoint.clone(),
                ecs: self.src_ecs_endpoint.clone(),
                ram: self.src_ram_endpoint.clone(),
                sts: self.src_sts_endpoint.clone(),
                ec2: self.src_ec2_endpoint.clone(),
                iam: self.src_iam_endpoint.clone(),
            },
            dst: Endpoints {
                oss: self.dst_endpoint.clone(),
                ecs: self.dst_ecs_endpoint.clone(),
                ram: self.dst_ram_endpoint.clone(),
                sts: self.dst_sts_endpoint.clone(),
                ec2: self.dst_ec2_endpoint.clone(),
                iam: self.dst_iam_endpoint.clone(),
            },
            copy: CopyOptions {
                concurrency: self.concurrency.unwrap_or(16),
                part_size: self.part_size,
                resume: true,
                ..CopyOptions::default()
            },
            state_dir: state_dir.to_path_buf(),
        }
    }
}

fn parse_format(s: &str) -> Option<crate::acs::ecs::ImageFormat> {
    use crate::acs::ecs::ImageFormat;
    [ImageFormat::Raw, ImageFormat::Vhd, ImageFormat::Qcow2]
        .into_iter()
        .find(|f| f.export_name() == s)
}

/// What a job does. Everything that depends on the kind matches on this enum, so the
/// compiler lists the places to extend: [`parse_spec`], [`check_policy`],
/// `Scheduler::run_job`, `Scheduler::abort_leftover`, `JobSpec::kind`, the OpenAPI
/// `JobRequest` schema and `ossrelay jobs submit`.
// A few hundred bytes per job, held a handful at a time: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobSpec {
    Copy(CopySpec),
    Migrate(MigrateSpec),
}

impl JobSpec {
    /// Whether two jobs write the same object, however their endpoints and regions are
    /// spelled (see [`locate::same_object`]).
    pub fn same_target(&self, other: &JobSpec) -> bool {
        match (self, other) {
            (JobSpec::Copy(a), JobSpec::Copy(b)) => match (a.dst_object(), b.dst_object()) {
                (Some(x), Some(y)) => locate::same_object(&x, &a.dst_side(), &y, &b.dst_side()),
                _ => false,
            },
            // Same migration key = the same state and the same new image.
            (JobSpec::Migrate(a), JobSpec::Migrate(b)) => {
                (
                    a.src_cloud,
                    &a.src_region,
                    &a.image_id,
                    a.dst_cloud,
                    &a.dst_region,
                    &a.dst_bucket,
                ) == (
                    b.src_cloud,
                    &b.src_region,
                    &b.image_id,
                    b.dst_cloud,
                    &b.dst_region,
                    &b.dst_bucket,
                )
            }
            _ => false,
        }
    }

    /// The `kind` name.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Copy(_) => "copy",
            JobSpec::Migrate(_) => "migrate",
        }
    }
}

/// The result of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// Whole-object CRC-64/XZ as a decimal string (as OSS writes it).
    pub crc64: String,
    pub bytes: u64,
    pub parts: u32,
    pub part_size: u64,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
    pub retries: u64,
    pub resumed_bytes: u64,
    /// Straggling parts sent a second time on another connection (the first acknowledged
    /// won; the bytes proven are the same either way).
    #[serde(default)]
    pub hedged_parts: u64,
    pub source: String,
    pub destination: String,
    /// The new image (migrate jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The new image's region (migrate jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The new image's cloud, `aliyun` or `aws` (migrate jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<String>,
    /// Each relayed disk with its proof (migrate jobs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<crate::migrate::DiskResult>,
    /// The archive member that was unpacked (copy jobs with `unpack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The disk format written (copy jobs with a `format` or `input_format` that converts),
    /// as `copy --json`'s `format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DiskFormat>,
    /// Bytes of the guest-visible RAW disk (converting copy jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    /// CRC-64/XZ of the guest-visible RAW disk as a decimal string (converting copy jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_crc64: Option<String>,
}

impl From<&Relayed> for JobResult {
    /// The destination's figures, plus what the transform adds (an unpack's member, a
    /// conversion's guest disk).
    fn from(r: &Relayed) -> Self {
        let mut result = JobResult::from(r.summary());
        match r {
            Relayed::Copied(_) => {}
            Relayed::Unpacked(u) => result.member = Some(u.member.clone()),
            Relayed::Converted(c) => {
                result.member = c.member.clone();
                result.format = Some(c.format);
                result.raw_bytes = Some(c.raw_bytes);
                result.raw_crc64 = Some(c.raw_crc64.to_string());
            }
        }
        result
    }
}

impl From<&CopySummary> for JobResult {
    fn from(s: &CopySummary) -> Self {
        Self {
            crc64: s.crc64.to_string(),
            bytes: s.bytes,
            parts: s.parts,
            part_size: s.part_size,
            seconds: s.seconds,
            throughput_bytes_per_sec: s.throughput_bytes_per_sec,
            retries: s.retries,
            resumed_bytes: s.resumed_bytes,
            hedged_parts: s.hedged_parts,
            source: s.source.clone(),
            destination: s.destination.clone(),
            image_id: None,
            region: None,
            cloud: None,
            disks: Vec::new(),
            member: None,
            format: None,
            raw_bytes: None,
            raw_crc64: None,
        }
    }
}

/// One job as stored in the database and returned by the API (live figures are filled in by
/// the scheduler when a job is running).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Submission order; the queue is FIFO by this number.
    pub seq: u64,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub state: JobState,
    /// Finer-grained position: `queued`, `planning`, `transferring`, `verifying`, `paused`,
    /// `done`, `failed`, `cancelled`.
    pub stage: String,
    pub created_at: String,
    /// Who submitted the job: its token's name (`anonymous` on a daemon without tokens), never
    /// the token; absent for jobs stored before callers were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Bytes the destination acknowledged (resumed bytes included).
    #[serde(default)]
    pub bytes_done: u64,
    /// Size of the object (0 until planned).
    #[serde(default)]
    pub bytes_total: u64,
    #[serde(default)]
    pub parts_done: u64,
    #[serde(default)]
    pub parts_total: u64,
    #[serde(default)]
    pub inflight_parts: u64,
    /// The engine's current adaptive limit on parts in flight (lowered on throttling).
    #[serde(default)]
    pub concurrency_limit: u64,
    /// Bytes per second acknowledged during the current run.
    #[serde(default)]
    pub throughput_bytes_per_sec: f64,
    /// Seconds left at the current throughput; `null` when unknown.
    #[serde(default)]
    pub eta_seconds: Option<f64>,
    /// Retried parts and requests, over all runs.
    #[serde(default)]
    pub retries: u64,
    /// Times the job was started (a restart after a crash counts again).
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub result: Option<JobResult>,
}

/// A submitted body that cannot become a job; `field` names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Parses a byte size: a JSON number of bytes or a string such as `"64MiB"`.
pub fn parse_size_value(field: &str, v: &Value) -> Result<u64, InvalidField> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| invalid(field, "must be a non-negative whole number of bytes")),
        Value::String(s) => parse_size::Config::new()
            .with_binary()
            .parse_size(s.trim())
            .map_err(|e| {
                invalid(
                    field,
                    format!("invalid size {s:?} ({e}); use e.g. \"64MiB\""),
                )
            }),
        _ => Err(invalid(
            field,
            "must be a number of bytes or a string like \"64MiB\"",
        )),
    }
}

fn take_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, InvalidField> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 2048 => Ok(Some(s)),
        Some(Value::String(_)) => Err(invalid(field, "is longer than 2048 characters")),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn take_bool(obj: &mut Map<String, Value>, field: &str) -> Result<bool, InvalidField> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(invalid(field, "must be true or false")),
    }
}

fn check_endpoint(field: &str, v: &Option<String>) -> Result<(), InvalidField> {
    if let Some(url) = v {
        if !matches!(url_scheme(url).as_deref(), Some("http" | "https")) {
            return Err(invalid(
                field,
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
    }
    Ok(())
}

fn check_name(field: &str, v: &Option<String>) -> Result<(), InvalidField> {
    if let Some(s) = v {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(invalid(
                field,
                "must be 1-128 characters of letters, digits, '-', '_' and '.'",
            ));
        }
    }
    Ok(())
}

/// Turns a submitted JSON body into a job spec. Refuses unknown fields and unsupported kinds.
pub fn parse_spec(body: Value) -> Result<JobSpec, InvalidField> {
    let Value::Object(mut obj) = body else {
        return Err(invalid("body", "must be a JSON object"));
    };
    let kind = match obj.remove("kind") {
        Some(Value::String(k)) => k,
        Some(_) => return Err(invalid("kind", "must be a string such as \"copy\"")),
        None => return Err(invalid("kind", "is required (\"copy\" or \"migrate\")")),
    };
    let spec = match kind.as_str() {
        "copy" => JobSpec::Copy(parse_copy(&mut obj)?),
        "migrate" => JobSpec::Migrate(parse_migrate(&mut obj)?),
        other => {
            return Err(invalid(
                "kind",
                format!("unknown kind {other:?}; supported: \"copy\", \"migrate\""),
            ))
        }
    };
    if let Some(field) = obj.keys().next() {
        let why = match field.as_str() {
            "memory" | "bandwidth" => {
                "is a daemon-wide budget shared by all jobs: set it with `ossrelay serve --memory/--bandwidth`"
            }
            "state_dir" | "no_resume" => {
                "is managed by the daemon (each job keeps its resume state under --state-dir)"
            }
            "json" | "quiet" | "metrics_listen" => {
                "is a command-line display option; the daemon reports through its API and /metrics"
            }
            _ => "unknown field",
        };
        return Err(invalid(field, why));
    }
    Ok(spec)
}

fn parse_copy(obj: &mut Map<String, Value>) -> Result<CopySpec, InvalidField> {
    let source = take_string(obj, "source")?.ok_or_else(|| invalid("source", "is required"))?;
    let destination =
        take_string(obj, "destination")?.ok_or_else(|| invalid("destination", "is required"))?;
    let src: ObjectUrl = source.parse().map_err(|e: String| invalid("source", e))?;
    let dst: ObjectUrl = destination
        .parse()
        .map_err(|e: String| invalid("destination", e))?;
    // A daemon reads and writes only object storage: a local path in a request would let any
    // API client read or overwrite files as the daemon's user.
    match &src {
        ObjectUrl::Local(_) => return Err(invalid(
            "source",
            "must be oss://BUCKET/KEY or s3://BUCKET/KEY (the daemon does not read local files)",
        )),
        u if u.key().is_empty() || u.key().ends_with('/') => {
            return Err(invalid(
                "source",
                format!(
                    "{source} does not name an object: give oss://BUCKET/KEY or s3://BUCKET/KEY"
                ),
            ))
        }
        _ => {}
    }
    if let ObjectUrl::Local(_) = dst {
        return Err(invalid(
            "destination",
            "must be oss://BUCKET/KEY or s3://BUCKET/KEY (the daemon does not write local files)",
        ));
    }
    let provider = |obj: &mut Map<String, Value>, field: &str| -> Result<_, InvalidField> {
        let v = take_string(obj, field)?;
        let side = SideOptions {
            provider: v.clone(),
            ..SideOptions::default()
        };
        locate::provider(&side).map_err(|e| invalid(field, e))?;
        Ok((v, side))
    };
    let (src_provider, _) = provider(obj, "src_provider")?;
    let (dst_provider, dst_probe) = provider(obj, "dst_provider")?;
    let limits = dst
        .limits(&dst_probe)
        .map_err(|e| invalid("dst_provider", e))?;
    let (concurrency, part_size) = take_copy_tuning(obj, limits)?;
    let spec = CopySpec {
        source,
        destination,
        src_region: take_string(obj, "src_region")?,
        dst_region: take_string(obj, "dst_region")?,
        src_endpoint: take_string(obj, "src_endpoint")?,
        dst_endpoint: take_string(obj, "dst_endpoint")?,
        src_internal: take_bool(obj, "src_internal")?,
        dst_internal: take_bool(obj, "dst_internal")?,
        src_profile: take_string(obj, "src_profile")?,
        dst_profile: take_string(obj, "dst_profile")?,
        src_provider,
        dst_provider,
        src_path_style: take_bool(obj, "src_path_style")?,
        dst_path_style: take_bool(obj, "dst_path_style")?,
        src_sts_endpoint: take_string(obj, "src_sts_endpoint")?,
        dst_sts_endpoint: take_string(obj, "dst_sts_endpoint")?,
        concurrency,
        part_size,
        unpack: match take_string(obj, "unpack")? {
            None => None,
            Some(v) => Some(
                <UnpackMode as clap::ValueEnum>::from_str(&v, true)
                    .map_err(|_| invalid("unpack", "must be auto, always or never"))?,
            ),
        },
        shards: match obj.remove("shards") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n @ 1..=64) => Some(n as u32),
                _ => return Err(invalid("shards", "must be a whole number from 1 to 64")),
            },
        },
        format: take_enum(obj, "format", "raw, qcow2, vhd or vhd-dynamic")?,
        input_format: take_enum(obj, "input_format", "auto, raw, qcow2, vhd or vmdk")?,
    };
    let input = spec.input_format.unwrap_or_default();
    if spec.unpacks() && !matches!(input, InputFormat::Auto | InputFormat::Raw) {
        return Err(invalid(
            "input_format",
            format!(
                "{} does not apply to a .tar.gz source that is unpacked (it holds a RAW disk); \
                 submit unpack \"never\" to read the source itself as {0}",
                input.name()
            ),
        ));
    }
    if spec.converts() && spec.shards.is_some_and(|n| n > 1) {
        return Err(invalid(
            "shards",
            "a disk format conversion is one sequential stream and cannot be sharded; submit \
             the job without shards",
        ));
    }
    check_endpoint("src_endpoint", &spec.src_endpoint)?;
    check_endpoint("dst_endpoint", &spec.dst_endpoint)?;
    check_endpoint("src_sts_endpoint", &spec.src_sts_endpoint)?;
    check_endpoint("dst_sts_endpoint", &spec.dst_sts_endpoint)?;
    check_name("src_region", &spec.src_region)?;
    check_name("dst_region", &spec.dst_region)?;
    check_name("src_profile", &spec.src_profile)?;
    check_name("dst_profile", &spec.dst_profile)?;
    if spec
        .dst_object()
        .is_some_and(|d| locate::same_object(&src, &spec.src_side(), &d, &spec.dst_side()))
    {
        return Err(invalid(
            "destination",
            "is the same object as the source: name another key, bucket or endpoint",
        ));
    }
    Ok(spec)
}

/// `limits` are the destination's: the part size is checked against the store that will
/// receive the parts.
fn take_copy_tuning(
    obj: &mut Map<String, Value>,
    limits: crate::store::Limits,
) -> Result<(Option<usize>, Option<u64>), InvalidField> {
    let concurrency = match obj.remove("concurrency") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1024) => Some(n as usize),
            _ => {
                return Err(invalid(
                    "concurrency",
                    "must be a whole number from 1 to 1024",
                ))
            }
        },
    };
    let part_size = match obj.remove("part_size") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let p = parse_size_value("part_size", &v)?;
            limits
                .check_part_size(p)
                .map_err(|e| invalid("part_size", e))?;
            Some(p)
        }
    };
    Ok((concurrency, part_size))
}

/// A value of one of the CLI's value enums, spelled exactly as on the command line.
fn take_enum<T: clap::ValueEnum>(
    obj: &mut Map<String, Value>,
    field: &str,
    choices: &str,
) -> Result<Option<T>, InvalidField> {
    match take_string(obj, field) {
        Ok(None) => Ok(None),
        Ok(Some(v)) => T::from_str(&v, false)
            .map(Some)
            .map_err(|_| invalid(field, format!("{v:?} is not one of {choices}"))),
        Err(_) => Err(invalid(field, format!("must be a string: {choices}"))),
    }
}

fn required(obj: &mut Map<String, Value>, field: &str) -> Result<String, InvalidField> {
    take_string(obj, field)?.ok_or_else(|| invalid(field, "is required"))
}

/// `aliyun` or `aws`; absent = `aliyun`.
fn take_cloud(
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<crate::migrate::Cloud, InvalidField> {
    use crate::migrate::Cloud;
    match take_string(obj, field)?.as_deref() {
        None | Some("aliyun") => Ok(Cloud::Aliyun),
        Some("aws") => Ok(Cloud::Aws),
        Some(_) => Err(invalid(field, "must be \"aliyun\" or \"aws\"")),
    }
}

fn parse_migrate(obj: &mut Map<String, Value>) -> Result<MigrateSpec, InvalidField> {
    // A migration relays between OSS buckets.
    let (concurrency, part_size) = take_copy_tuning(obj, crate::oss::LIMITS)?;
    let spec = MigrateSpec {
        src_region: required(obj, "src_region")?,
        image_id: required(obj, "image_id")?,
        src_bucket: required(obj, "src_bucket")?,
        dst_region: required(obj, "dst_region")?,
        dst_bucket: required(obj, "dst_bucket")?,
        src_profile: take_string(obj, "src_profile")?,
        dst_profile: take_string(obj, "dst_profile")?,
        image_name: take_string(obj, "image_name")?,
        keep_objects: take_bool(obj, "keep_objects")?,
        export_prefix: take_string(obj, "export_prefix")?,
        format: take_string(obj, "format")?,
        disk_format: take_enum(obj, "disk_format", "raw, auto, qcow2 or vhd")?,
        src_endpoint: take_string(obj, "src_endpoint")?,
        dst_endpoint: take_string(obj, "dst_endpoint")?,
        src_ecs_endpoint: take_string(obj, "src_ecs_endpoint")?,
        dst_ecs_endpoint: take_string(obj, "dst_ecs_endpoint")?,
        src_ram_endpoint: take_string(obj, "src_ram_endpoint")?,
        dst_ram_endpoint: take_string(obj, "dst_ram_endpoint")?,
        src_sts_endpoint: take_string(obj, "src_sts_endpoint")?,
        dst_sts_endpoint: take_string(obj, "dst_sts_endpoint")?,
        concurrency,
        part_size,
        src_cloud: take_cloud(obj, "src_cloud")?,
        dst_cloud: take_cloud(obj, "dst_cloud")?,
        src_ec2_endpoint: take_string(obj, "src_ec2_endpoint")?,
        dst_ec2_endpoint: take_string(obj, "dst_ec2_endpoint")?,
        src_iam_endpoint: take_string(obj, "src_iam_endpoint")?,
        dst_iam_endpoint: take_string(obj, "dst_iam_endpoint")?,
    };
    for (field, v) in spec.endpoints() {
        check_endpoint(field, v)?;
    }
    check_name("src_region", &Some(spec.src_region.clone()))?;
    check_name("dst_region", &Some(spec.dst_region.clone()))?;
    check_name("src_profile", &spec.src_profile)?;
    check_name("dst_profile", &spec.dst_profile)?;
    let (prefix, what) = match spec.src_cloud {
        crate::migrate::Cloud::Aliyun => ("m-", "an ECS custom image id (m-…)"),
        crate::migrate::Cloud::Aws => ("ami-", "an AMI id (ami-…)"),
    };
    if !spec.image_id.starts_with(prefix) {
        return Err(invalid(
            "image_id",
            format!("{:?} is not {what}", spec.image_id),
        ));
    }
    if spec.src_cloud == crate::migrate::Cloud::Aws && spec.dst_cloud == crate::migrate::Cloud::Aws
    {
        return Err(invalid(
            "dst_cloud",
            "aws → aws is EC2's own copy-image; ossrelay migrates within Alibaba Cloud and between the two clouds",
        ));
    }
    check_name("image_id", &Some(spec.image_id.clone()))?;
    for (field, b) in [
        ("src_bucket", &spec.src_bucket),
        ("dst_bucket", &spec.dst_bucket),
    ] {
        locate::validate_bucket_name(b).map_err(|e| invalid(field, e))?;
    }
    if let Some(p) = &spec.export_prefix {
        crate::acs::ecs::validate_oss_prefix(p).map_err(|e| invalid("export_prefix", e))?;
    }
    if let Some(f) = &spec.format {
        if parse_format(f).is_none() {
            return Err(invalid("format", "must be \"raw\", \"vhd\" or \"qcow2\""));
        }
    }
    if spec.dst_cloud == crate::migrate::Cloud::Aws
        && matches!(
            spec.disk_format,
            Some(MigrateDiskFormat::Qcow2 | MigrateDiskFormat::Vhd)
        )
    {
        return Err(invalid(
            "disk_format",
            "qcow2 and vhd are for ECS imports; EC2 imports the RAW (use raw or auto)",
        ));
    }
    if let Some(n) = &spec.image_name {
        if n.is_empty() || n.len() > 128 {
            return Err(invalid("image_name", "must be 1-128 characters"));
        }
    }
    Ok(spec)
}

/// The scheme of a URL, lowercased (the client accepts `HTTP://` as well).
fn url_scheme(url: &str) -> Option<String> {
    Some(url.split_once("://")?.0.to_ascii_lowercase())
}

/// The host of an `http(s)://host[:port]/…` URL, lowercased (brackets kept for IPv6).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether an endpoint override is acceptable without `--allow-any-endpoint`: Alibaba Cloud
/// and AWS endpoints over HTTPS, or this machine (a simulator, a local proxy). Anything else would let
/// an API client send the daemon's signed requests, and any STS token in them, to a host of
/// its choosing.
pub fn endpoint_allowed(url: &str) -> bool {
    let Some(host) = url_host(url) else {
        return false;
    };
    if matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        return true;
    }
    url_scheme(url).as_deref() == Some("https")
        && (host.ends_with(".aliyuncs.com")
            || host.ends_with(".amazonaws.com")
            || host.ends_with(".amazonaws.com.cn"))
}

/// Checks what a job may do on this daemon (beyond being well-formed).
pub fn check_policy(spec: &JobSpec, allow_any_endpoint: bool) -> Result<(), InvalidField> {
    if allow_any_endpoint {
        return Ok(());
    }
    let fields: Vec<(&str, &Option<String>)> = match spec {
        JobSpec::Copy(c) => vec![
            ("src_endpoint", &c.src_endpoint),
            ("dst_endpoint", &c.dst_endpoint),
            ("src_sts_endpoint", &c.src_sts_endpoint),
            ("dst_sts_endpoint", &c.dst_sts_endpoint),
        ],
        JobSpec::Migrate(m) => m.endpoints().to_vec(),
    };
    for (field, v) in fields {
        if let Some(url) = v {
            if !endpoint_allowed(url) {
                return Err(invalid(
                    field,
                    format!(
                        "{url:?} is neither an https://….aliyuncs.com or ….amazonaws.com endpoint nor on this machine; \
                         start the daemon with --allow-any-endpoint to permit it"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl CopySpec {
    /// How to reach the source.
    pub fn src_side(&self) -> SideOptions {
        SideOptions {
            region: self.src_region.clone(),
            endpoint: self.src_endpoint.clone(),
            internal: self.src_internal,
            profile: self.src_profile.clone(),
            provider: self.src_provider.clone(),
            path_style: self.src_path_style,
            sts_endpoint: self.src_sts_endpoint.clone(),
            region_flag: Some("src_region"),
            ..SideOptions::default()
        }
    }

    /// How to reach the destination.
    pub fn dst_side(&self) -> SideOptions {
        SideOptions {
            region: self.dst_region.clone(),
            endpoint: self.dst_endpoint.clone(),
            internal: self.dst_internal,
            profile: self.dst_profile.clone(),
            provider: self.dst_provider.clone(),
            path_style: self.dst_path_style,
            sts_endpoint: self.dst_sts_endpoint.clone(),
            region_flag: Some("dst_region"),
            ..SideOptions::default()
        }
    }

    /// Whether the job unpacks its source (`unpack`, default never).
    pub fn unpacks(&self) -> bool {
        let unpack = self.unpack.unwrap_or(UnpackMode::Never);
        let key = match self.source.parse::<ObjectUrl>() {
            Ok(u @ (ObjectUrl::Oss { .. } | ObjectUrl::S3 { .. })) => u.key().to_string(),
            _ => String::new(),
        };
        unpack.applies(&key)
    }

    /// Whether the job converts a disk format, as `copy` decides it: an output `format`
    /// other than raw, or a plain source read back from a named `input_format`.
    pub fn converts(&self) -> bool {
        let input = self.input_format.unwrap_or_default();
        self.format.unwrap_or_default() != DiskFormat::Raw
            || (!self.unpacks() && !matches!(input, InputFormat::Auto | InputFormat::Raw))
    }

    /// What the relay does with the source: unpack (`unpack`, default never), convert
    /// (`format`, `input_format`) or nothing.
    pub fn transform(&self) -> Transform {
        if self.converts() {
            Transform::Convert {
                format: self.format.unwrap_or_default(),
                unpack: self.unpacks(),
                input: self.input_format.unwrap_or_default(),
            }
        } else if self.unpacks() {
            Transform::Unpack
        } else {
            Transform::None
        }
    }

    /// Whether the destination is named only once the relay reads the source (an unpack or
    /// a conversion, as `copy` does).
    fn named_later(&self) -> bool {
        self.transform() != Transform::None
    }

    /// The object the job writes: the destination, with the source's file name filled in
    /// when it ends in `/` (as [`Self::locations`] resolves it); `None` if it names none, or
    /// if it is named after an archive's member, unknown until the archive is read.
    pub fn dst_object(&self) -> Option<ObjectUrl> {
        match self.destination.parse::<ObjectUrl>().ok()? {
            local @ ObjectUrl::Local(_) => Some(local),
            url => {
                let mut key = url.key().to_string();
                if key.is_empty() || key.ends_with('/') {
                    if self.unpacks() {
                        return None;
                    }
                    let src: ObjectUrl = self.source.parse().ok()?;
                    let base = locate::base_name(&src)?;
                    if self.converts() {
                        // Named as the conversion names it: the container's extension.
                        let format = self.format.unwrap_or_default();
                        key.push_str(&crate::transfer::convert::container_name(&base, format));
                    } else {
                        key.push_str(&base);
                    }
                }
                Some(url.with_key(&key))
            }
        }
    }

    /// Resolves both sides (credentials are looked up now, at run time). An unpack into a
    /// destination ending in `/` is named after the archive's member once it is read.
    pub fn locations(&self) -> Result<(Location, Target), String> {
        let src: ObjectUrl = self.source.parse().map_err(|e| format!("source: {e}"))?;
        let dst: ObjectUrl = self
            .destination
            .parse()
            .map_err(|e| format!("destination: {e}"))?;
        let s = locate::resolve(&src, &self.src_side(), None)
            .map_err(|e| format!("source {src}: {e}"))?;
        let dst_side = self.dst_side();
        if self.named_later() {
            // Reachable at all? (as `copy --unpack` checks before reading the archive)
            locate::resolve(&dst, &dst_side, Some("unpacked.raw"))
                .map_err(|e| format!("destination {dst}: {e}"))?;
            return Ok((
                s,
                Target::Named(Box::new(move |member: &str| {
                    locate::resolve(&dst, &dst_side, Some(member))
                        .map_err(|e| format!("destination {dst}: {e}"))
                })),
            ));
        }
        let d = locate::resolve(&dst, &dst_side, locate::base_name(&src).as_deref())
            .map_err(|e| format!("destination {dst}: {e}"))?;
        Ok((s, Target::Fixed(d)))
    }

    /// Engine options for this job; the daemon adds its shared budgets.
    pub fn copy_options(&self, state_dir: &Path) -> CopyOptions {
        CopyOptions {
            concurrency: self.concurrency.unwrap_or(16),
            part_size: self.part_size,
            state_dir: Some(state_dir.to_path_buf()),
            resume: true,
            ..CopyOptions::default()
        }
    }
}

/// Whether `id` has the shape of a job id (so it can never name a path outside the state
/// directory, whatever a client sends).
pub fn valid_id(id: &str) -> bool {
    id.len() == 18
        && id.starts_with("j-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random job id such as `j-3f9c0a1b2c3d4e5f`.
pub fn new_id() -> String {
    format!("j-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_copy_job_with_sizes_as_strings_or_numbers() {
        let spec = parse_spec(json!({"kind":"copy","source":"oss://src-b/a.raw",
            "destination":"oss://dst-b/","part_size":"1MiB","concurrency":4,
            "src_endpoint":"http://127.0.0.1:1","dst_profile":"dst"}))
        .unwrap();
        let JobSpec::Copy(c) = spec else {
            panic!("not a copy")
        };
        assert_eq!(c.part_size, Some(1 << 20));
        assert_eq!(c.concurrency, Some(4));
        assert_eq!(c.dst_profile.as_deref(), Some("dst"));
        let spec = parse_spec(json!({"kind":"copy","source":"oss://src-b/a.raw",
            "destination":"oss://dst-b/x","part_size":204800}))
        .unwrap();
        let JobSpec::Copy(c) = spec else {
            panic!("not a copy")
        };
        assert_eq!(c.part_size, Some(204800));
    }

    #[test]
    fn errors_name_the_field() {
        for (body, field) in [
            (json!([]), "body"),
            (json!({"source":"oss://abc/k"}), "kind"),
            (json!({"kind":"bogus"}), "kind"),
            (json!({"kind":"migrate"}), "src_region"),
            (json!({"kind":"copy","destination":"oss://abc/k"}), "source"),
            (json!({"kind":"copy","source":"oss://abc/k"}), "destination"),
            (
                json!({"kind":"copy","source":"/etc/passwd","destination":"oss://abc/k"}),
                "source",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"/tmp/x"}),
                "destination",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abd/k","part_size":"huge"}),
                "part_size",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abd/k","part_size":1}),
                "part_size",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abd/k","concurrency":0}),
                "concurrency",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abd/k","src_endpoint":"ftp://x"}),
                "src_endpoint",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abd/k","dst_profile":"../x"}),
                "dst_profile",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abd/k","partsize":5}),
                "partsize",
            ),
            (
                json!({"kind":"copy","source":"oss://abc/k","destination":"oss://abc/k"}),
                "destination",
            ),
        ] {
            let e = parse_spec(body.clone()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        let e = parse_spec(json!({"kind":"copy","source":"oss://abc/k",
            "destination":"oss://abd/k","memory":"1GiB"}))
        .unwrap_err();
        assert_eq!(e.field, "memory");
        assert!(e.message.contains("serve --memory"), "{e}");
    }

    #[test]
    fn copy_jobs_take_the_disk_formats_of_copy() {
        let copy = |extra: Value| {
            let mut b = json!({"kind":"copy","source":"oss://src-b/d/x.raw",
                "destination":"oss://dst-b/img/"});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse_spec(b)
        };
        // Every value the CLI takes, passed through to the relay as `copy` would.
        for (f, want) in [
            ("raw", DiskFormat::Raw),
            ("qcow2", DiskFormat::Qcow2),
            ("vhd", DiskFormat::Vhd),
            ("vhd-dynamic", DiskFormat::VhdDynamic),
        ] {
            let JobSpec::Copy(c) = copy(json!({ "format": f })).unwrap() else {
                panic!("not a copy")
            };
            assert_eq!(c.format, Some(want));
            let t = c.transform();
            if want == DiskFormat::Raw {
                assert_eq!(t, Transform::None, "{f}");
            } else {
                assert_eq!(
                    t,
                    Transform::Convert {
                        format: want,
                        unpack: false,
                        input: InputFormat::Auto
                    },
                    "{f}"
                );
            }
            // Stored and shown as submitted.
            assert_eq!(serde_json::to_value(&c).unwrap()["format"], json!(f));
        }
        for (f, want) in [
            ("auto", InputFormat::Auto),
            ("raw", InputFormat::Raw),
            ("qcow2", InputFormat::Qcow2),
            ("vhd", InputFormat::Vhd),
            ("vmdk", InputFormat::Vmdk),
        ] {
            let JobSpec::Copy(c) = copy(json!({ "input_format": f })).unwrap() else {
                panic!("not a copy")
            };
            assert_eq!(c.input_format, Some(want));
            // As `copy --format raw --input-format F`: a named container is read back.
            let converts = !matches!(want, InputFormat::Auto | InputFormat::Raw);
            assert_eq!(c.converts(), converts, "{f}");
        }
        // A directory destination takes the container's extension, as the relay names it.
        let JobSpec::Copy(c) = copy(json!({"format": "qcow2"})).unwrap() else {
            panic!("not a copy")
        };
        assert_eq!(
            c.dst_object().map(|u| u.key().to_string()),
            Some("img/x.qcow2".to_string())
        );
        // An unpacked archive converted: unpack and convert in one transform.
        let JobSpec::Copy(c) = copy(json!({"source": "oss://src-b/e.raw.tar.gz",
            "unpack": "auto", "format": "vhd-dynamic"}))
        .unwrap() else {
            panic!("not a copy")
        };
        assert_eq!(
            c.transform(),
            Transform::Convert {
                format: DiskFormat::VhdDynamic,
                unpack: true,
                input: InputFormat::Auto
            }
        );
        // Absent: the bytes as they are, and a job stored before the fields existed reads
        // back unchanged.
        let JobSpec::Copy(c) = copy(json!({})).unwrap() else {
            panic!("not a copy")
        };
        assert_eq!((c.format, c.input_format), (None, None));
        assert_eq!(c.transform(), Transform::None);
        let shown = serde_json::to_value(&c).unwrap();
        assert!(shown.get("format").is_none() && shown.get("input_format").is_none());
        // Bad values: 400 with the field named, in one line.
        for (patch, field) in [
            (json!({"format": "vmdk"}), "format"),
            (json!({"format": "QCOW2"}), "format"),
            (json!({"format": 2}), "format"),
            (json!({"input_format": "iso"}), "input_format"),
            (json!({"input_format": true}), "input_format"),
            (
                json!({"source": "oss://src-b/e.raw.tar.gz", "unpack": "always",
                    "input_format": "vmdk"}),
                "input_format",
            ),
            (json!({"format": "qcow2", "shards": 4}), "shards"),
        ] {
            let e = copy(patch.clone()).unwrap_err();
            assert_eq!(e.field, field, "{patch}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn migrate_jobs_take_disk_format_beside_the_export_format() {
        use crate::migrate::Cloud;
        for (f, want) in [
            ("raw", MigrateDiskFormat::Raw),
            ("auto", MigrateDiskFormat::Auto),
            ("qcow2", MigrateDiskFormat::Qcow2),
            ("vhd", MigrateDiskFormat::Vhd),
        ] {
            let mut body = migrate_body();
            body["disk_format"] = json!(f);
            // The export's format is another field, and stays one.
            body["format"] = json!("raw");
            let JobSpec::Migrate(m) = parse_spec(body).unwrap() else {
                panic!("not a migrate job")
            };
            assert_eq!(m.disk_format, Some(want));
            let p = m.params(Path::new("/tmp/x"));
            assert_eq!(p.disk_format, want);
            assert_eq!(p.format, Some(crate::acs::ecs::ImageFormat::Raw));
            assert_eq!(serde_json::to_value(&m).unwrap()["disk_format"], json!(f));
        }
        let JobSpec::Migrate(m) = parse_spec(migrate_body()).unwrap() else {
            panic!("not a migrate job")
        };
        assert_eq!(
            m.params(Path::new("/tmp/x")).disk_format,
            MigrateDiskFormat::Raw
        );
        for (patch, field) in [
            (json!({"disk_format": "vhd-dynamic"}), "disk_format"),
            (json!({"disk_format": 1}), "disk_format"),
            (
                json!({"src_cloud": "aws", "image_id": "ami-0123456789abcdef0",
                    "dst_cloud": "aliyun", "disk_format": "bogus"}),
                "disk_format",
            ),
        ] {
            let mut body = migrate_body();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let e = parse_spec(body.clone()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        // EC2 imports the RAW: qcow2 and vhd are refused for an aws destination.
        let mut body = migrate_body();
        body["dst_cloud"] = json!("aws");
        body["disk_format"] = json!("qcow2");
        let e = parse_spec(body.clone()).unwrap_err();
        assert_eq!(e.field, "disk_format", "{e}");
        body["disk_format"] = json!("auto");
        let JobSpec::Migrate(m) = parse_spec(body).unwrap() else {
            panic!("not a migrate job")
        };
        assert_eq!(m.dst_cloud, Cloud::Aws);
    }

    #[test]
    fn a_conversion_result_carries_the_guest_disk() {
        use crate::transfer::ConvertSummary;
        let copy = CopySummary {
            source: "oss://a/x.raw".into(),
            destination: "oss://b/x.qcow2".into(),
            bytes: 7,
            seconds: 1.0,
            throughput_bytes_per_sec: 7.0,
            crc64: 5,
            checksums: Default::default(),
            parts: 2,
            part_size: 1 << 20,
            retries: 0,
            resumed_bytes: 0,
            source_crc64_known: true,
            verified_by: Vec::new(),
            end_to_end: true,
            hedged_parts: 0,
        };
        let r = JobResult::from(&Relayed::Converted(ConvertSummary {
            copy: copy.clone(),
            format: DiskFormat::Qcow2,
            raw_bytes: 1 << 30,
            raw_crc64: u64::MAX,
            units: 16384,
            units_written: 1,
            unit_size: 65536,
            member: None,
            source_bytes: None,
            source_crc64: None,
        }));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["format"], json!("qcow2"));
        assert_eq!(v["raw_bytes"], json!(1u64 << 30));
        assert_eq!(v["raw_crc64"], json!(u64::MAX.to_string()));
        assert_eq!(v["crc64"], json!("5"));
        let plain = serde_json::to_value(JobResult::from(&Relayed::Copied(copy))).unwrap();
        assert!(plain.get("raw_bytes").is_none() && plain.get("format").is_none());
    }

    fn migrate_body() -> Value {
        json!({"kind":"migrate","src_region":"cn-hangzhou","image_id":"m-1","src_bucket":"src-b",
            "dst_region":"eu-central-1","dst_bucket":"dst-b"})
    }

    #[test]
    fn cross_cloud_migrate_jobs_check_their_clouds_and_ids() {
        use crate::migrate::Cloud;
        let mut body = migrate_body();
        body["src_cloud"] = json!("aws");
        body["image_id"] = json!("ami-0123456789abcdef0");
        body["src_ec2_endpoint"] = json!("http://127.0.0.1:9");
        body["src_iam_endpoint"] = json!("http://127.0.0.1:9");
        let JobSpec::Migrate(m) = parse_spec(body.clone()).unwrap() else {
            panic!("not a migrate job")
        };
        assert_eq!((m.src_cloud, m.dst_cloud), (Cloud::Aws, Cloud::Aliyun));
        let p = m.params(Path::new("/tmp/x"));
        assert_eq!(p.src.ec2.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(p.src_cloud, Cloud::Aws);
        // The stored job says which clouds; one stored before clouds existed is Alibaba's.
        let stored = serde_json::to_value(&m).unwrap();
        assert_eq!(
            (&stored["src_cloud"], &stored["dst_cloud"]),
            (&json!("aws"), &json!("aliyun"))
        );
        let mut old = stored.clone();
        old.as_object_mut().unwrap().remove("src_cloud");
        let old: MigrateSpec = serde_json::from_value(old).unwrap();
        assert_eq!(old.src_cloud, Cloud::Aliyun);
        // Two migrations of one image to one bucket in different clouds are different jobs.
        let same_cloud = parse_spec(migrate_body()).unwrap();
        assert!(!JobSpec::Migrate(m.clone()).same_target(&same_cloud));
        assert!(JobSpec::Migrate(m.clone()).same_target(&JobSpec::Migrate(m)));
        for (patch, field) in [
            (json!({"src_cloud": "gcp"}), "src_cloud"),
            (json!({"dst_cloud": 1}), "dst_cloud"),
            // An ECS image id from an AWS source, an AMI from an Alibaba one.
            (json!({"src_cloud": "aws"}), "image_id"),
            (json!({"image_id": "ami-0123456789abcdef0"}), "image_id"),
            (
                json!({"src_cloud": "aws", "dst_cloud": "aws", "image_id": "ami-0123456789abcdef0"}),
                "dst_cloud",
            ),
            (json!({"dst_ec2_endpoint": "ftp://x"}), "dst_ec2_endpoint"),
        ] {
            let mut body = migrate_body();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            let e = parse_spec(body.clone()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn parses_a_migrate_job_and_names_bad_fields() {
        let mut body = migrate_body();
        body["dst_ram_endpoint"] = json!("http://127.0.0.1:9");
        body["part_size"] = json!("8MiB");
        body["keep_objects"] = json!(true);
        body["format"] = json!("vhd");
        let JobSpec::Migrate(m) = parse_spec(body).unwrap() else {
            panic!("not a migrate job")
        };
        assert_eq!(m.part_size, Some(8 << 20));
        assert!(m.keep_objects);
        let p = m.params(Path::new("/tmp/x"));
        assert_eq!(p.dst.ram.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(p.format, Some(crate::acs::ecs::ImageFormat::Vhd));
        assert_eq!(p.copy.part_size, Some(8 << 20));
        for (field, v) in [
            ("image_id", json!("i-1")),
            ("src_bucket", json!("Bad_Bucket")),
            ("dst_bucket", json!(5)),
            ("src_ecs_endpoint", json!("ftp://x")),
            ("format", json!("iso")),
            ("concurrency", json!(0)),
            ("part_size", json!("huge")),
            ("export_prefix", json!("a/b")),
            ("keep_objects", json!("yes")),
            ("timeout", json!("1h")),
        ] {
            let mut body = migrate_body();
            body[field] = v;
            let e = parse_spec(body.clone()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
        for field in [
            "src_region",
            "image_id",
            "src_bucket",
            "dst_region",
            "dst_bucket",
        ] {
            let mut body = migrate_body();
            body.as_object_mut().unwrap().remove(field);
            assert_eq!(parse_spec(body).unwrap_err().field, field);
        }
        // The endpoint policy covers every endpoint field of a migration.
        for field in [
            "src_endpoint",
            "dst_sts_endpoint",
            "src_ram_endpoint",
            "dst_ecs_endpoint",
        ] {
            let mut body = migrate_body();
            body[field] = json!("https://evil.example.com");
            let spec = parse_spec(body).unwrap();
            assert_eq!(check_policy(&spec, false).unwrap_err().field, field);
            assert!(check_policy(&spec, true).is_ok());
        }
        // Two jobs for the same migration key conflict; another image does not.
        let a = parse_spec(migrate_body()).unwrap();
        let mut other = migrate_body();
        other["image_id"] = json!("m-2");
        assert!(a.same_target(&parse_spec(migrate_body()).unwrap()));
        assert!(!a.same_target(&parse_spec(other).unwrap()));
    }

    #[test]
    fn same_target_compares_resolved_destinations() {
        let copy = |extra: Value| {
            let mut b = json!({"kind":"copy","source":"oss://src-b/d/x.raw",
                "destination":"oss://dst-b/x.raw","dst_region":"eu-central-1",
                "dst_endpoint":"http://127.0.0.1:9000"});
            for (k, v) in extra.as_object().unwrap() {
                b[k] = v.clone();
            }
            parse_spec(b).unwrap()
        };
        let a = copy(json!({}));
        for same in [
            json!({"dst_endpoint": "http://127.0.0.1:9000/"}),
            json!({"dst_endpoint": "http://localhost:9000"}),
            json!({"dst_endpoint": "HTTP://LOCALHOST:9000"}),
            json!({"dst_region": "oss-eu-central-1"}),
            json!({"destination": "oss://dst-b/"}),
            json!({"source": "oss://src-b/other.raw", "src_endpoint": "http://127.0.0.1:1"}),
        ] {
            assert!(a.same_target(&copy(same.clone())), "{same}");
        }
        for other in [
            json!({"dst_endpoint": "http://127.0.0.1:9001"}),
            json!({"destination": "oss://dst-b/y.raw"}),
            json!({"destination": "oss://dst-c/x.raw"}),
        ] {
            assert!(!a.same_target(&copy(other.clone())), "{other}");
        }
        // A source that is the destination, however spelled.
        let e = parse_spec(json!({"kind":"copy","source":"oss://abc/k",
            "src_endpoint":"http://127.0.0.1:9/","src_region":"cn-hangzhou",
            "destination":"oss://abc/k","dst_endpoint":"http://localhost:9",
            "dst_region":"cn-hangzhou"}))
        .unwrap_err();
        assert_eq!(e.field, "destination", "{e}");
        let e = parse_spec(json!({"kind":"copy","source":"oss://abc/d/k",
            "destination":"oss://abc/d/"}))
        .unwrap_err();
        assert_eq!(e.field, "destination", "{e}");
    }

    #[test]
    fn endpoint_policy() {
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:1/",
            "http://[::1]:80",
            "https://oss-cn-hangzhou.aliyuncs.com",
            "https://oss-eu-central-1-internal.aliyuncs.com/",
        ] {
            assert!(endpoint_allowed(ok), "{ok}");
        }
        for bad in [
            "http://oss-cn-hangzhou.aliyuncs.com",
            "https://evil.example.com",
            "https://aliyuncs.com.evil.example",
            "https://127.0.0.1@evil.example",
            "http://127.0.0.2",
            "not a url",
        ] {
            assert!(!endpoint_allowed(bad), "{bad}");
        }
        let spec = parse_spec(json!({"kind":"copy","source":"oss://abc/k",
            "destination":"oss://abd/k","dst_endpoint":"https://evil.example.com"}))
        .unwrap();
        assert_eq!(
            check_policy(&spec, false).unwrap_err().field,
            "dst_endpoint"
        );
        assert!(check_policy(&spec, true).is_ok());
    }

    #[test]
    fn ids_are_checked_strictly() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        for bad in [
            "",
            "..",
            "j-../../etc/passwd",
            "j-0123456789abcdeg",
            "J-0123456789abcdef",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn job_round_trips_through_json_with_its_kind() {
        let job = Job {
            id: new_id(),
            seq: 3,
            spec: JobSpec::Copy(CopySpec {
                source: "oss://abc/k".into(),
                destination: "oss://abd/k".into(),
                ..CopySpec::default()
            }),
            state: JobState::Queued,
            stage: "queued".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            submitted_by: Some("ci".into()),
            started_at: None,
            finished_at: None,
            bytes_done: 0,
            bytes_total: 0,
            parts_done: 0,
            parts_total: 0,
            inflight_parts: 0,
            concurrency_limit: 0,
            throughput_bytes_per_sec: 0.0,
            eta_seconds: None,
            retries: 0,
            runs: 0,
            last_error: None,
            result: None,
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["kind"], "copy");
        assert_eq!(v["state"], "queued");
        assert_eq!(v["source"], "oss://abc/k");
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back, job);
    }
}
