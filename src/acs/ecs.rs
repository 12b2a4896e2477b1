//! Typed ECS calls for image export and import (ecs-api.md §3–§5), plus DescribeRegions.
//!
//! The JSON models are lenient where the real service is inconsistent: numbers that arrive as
//! strings and back, `SupportCancel` as a string or a boolean, lists wrapped twice
//! (`{"Images":{"Image":[…]}}`) or, in one documented example, wrapped in an array.

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use super::rpc::{RpcClient, RpcError, RpcRequest, ECS_VERSION};
use crate::credentials::CredentialsProvider;

/// The export service role (ecs-api.md §8.2).
pub const EXPORT_ROLE: &str = "AliyunECSImageExportDefaultRole";
/// The import service role.
pub const IMPORT_ROLE: &str = "AliyunECSImageImportDefaultRole";

/// Every image status; DescribeImages without `Status` shows only `Available` images.
pub const ALL_IMAGE_STATUSES: &str = "Creating,Waiting,Available,UnAvailable,CreateFailed";

/// `https://ecs.<region>.aliyuncs.com` (the recommended public endpoint, ecs-api.md §1.2).
pub fn default_endpoint(region: &str) -> String {
    format!("https://ecs.{region}.aliyuncs.com")
}

/// `https://ecs-vpc.<region>.aliyuncs.com`, reachable from inside a VPC.
pub fn vpc_endpoint(region: &str) -> String {
    format!("https://ecs-vpc.{region}.aliyuncs.com")
}

// ---------------------------------------------------------------------------------------------
// Lenient field decoders

/// Accepts a string, number, boolean or null and yields a string (null → empty).
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s,
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => return Err(D::Error::custom(format!("expected a scalar, got {other}"))),
    })
}

/// Accepts a number or a numeric string (empty → 0).
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = lenient_string(d)?;
    let t = s.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.parse::<u64>()
        .map_err(|_| D::Error::custom(format!("expected a whole number, got {s:?}")))
}

/// A list the RPC API wraps as `{"Item":[…]}`; also accepts a bare array, an array of such
/// wrappers (a documented DescribeTasks example), a single object in place of the array, or
/// null.
fn wrapped_list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    unwrap_list(v).map_err(D::Error::custom)
}

fn unwrap_list<T: DeserializeOwned>(v: serde_json::Value) -> Result<Vec<T>, String> {
    use serde_json::Value;
    let one = |v: Value| serde_json::from_value::<T>(v).map_err(|e| e.to_string());
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => {
            // The wrapper has one key whose value is the list.
            match map.into_iter().next() {
                None => Ok(Vec::new()),
                Some((_, Value::Array(items))) => items.into_iter().map(one).collect(),
                Some((_, Value::Null)) => Ok(Vec::new()),
                Some((_, inner @ Value::Object(_))) => Ok(vec![one(inner)?]),
                Some((k, other)) => Err(format!("unexpected {k} value {other}")),
            }
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                let is_wrapper = matches!(&item, Value::Object(m)
                    if m.len() == 1 && m.values().all(|v| v.is_array()));
                if is_wrapper {
                    out.extend(unwrap_list::<T>(item)?);
                } else {
                    out.push(one(item)?);
                }
            }
            Ok(out)
        }
        other => Err(format!("expected a list, got {other}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Models

/// Export / import disk formats ossrelay exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Raw,
    Vhd,
    Qcow2,
}

impl ImageFormat {
    /// ExportImage's spelling (lower case, as in the docs).
    pub fn export_name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Vhd => "vhd",
            Self::Qcow2 => "qcow2",
        }
    }

    /// ImportImage's spelling (`RAW`, `VHD`, `QCOW2`).
    pub fn import_name(self) -> &'static str {
        match self {
            Self::Raw => "RAW",
            Self::Vhd => "VHD",
            Self::Qcow2 => "QCOW2",
        }
    }

    /// Guesses the format from an object key (`….raw`, `….raw.tar.gz`, `….vhd`, `….qcow2`).
    pub fn from_key(key: &str) -> Option<Self> {
        let k = key.to_ascii_lowercase();
        let k = k.strip_suffix(".tar.gz").unwrap_or(&k);
        if k.ends_with(".raw") || k.ends_with(".img") {
            Some(Self::Raw)
        } else if k.ends_with(".vhd") {
            Some(Self::Vhd)
        } else if k.ends_with(".qcow2") {
            Some(Self::Qcow2)
        } else {
            None
        }
    }
}

/// ExportImage parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportImageInput {
    pub image_id: String,
    pub oss_bucket: String,
    /// 1–30 letters and digits.
    pub oss_prefix: Option<String>,
    pub image_format: Option<ImageFormat>,
    /// Defaults to [`EXPORT_ROLE`] when `None`.
    pub role_name: Option<String>,
}

/// Checks ExportImage's `OSSPrefix` rule locally, so the user gets the reason before a call.
pub fn validate_oss_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 30 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(format!(
            "invalid export prefix {prefix:?}: ExportImage accepts 1-30 letters and digits only"
        ));
    }
    Ok(())
}

/// ExportImage / ImportImage answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskStarted {
    #[serde(deserialize_with = "lenient_string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub region_id: String,
    /// ImportImage only.
    #[serde(deserialize_with = "lenient_string")]
    pub image_id: String,
}

/// A task's state. Unknown values (including the unconfirmed cancelled state) are terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TaskStatus {
    Waiting,
    Processing,
    Finished,
    Failed,
    Other(String),
}

impl TaskStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "Waiting" => Self::Waiting,
            "Processing" => Self::Processing,
            "Finished" => Self::Finished,
            "Failed" => Self::Failed,
            other => Self::Other(other.to_string()),
        }
    }

    /// Whether the task will not change any more.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Waiting | Self::Processing)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Waiting => "Waiting",
            Self::Processing => "Processing",
            Self::Finished => "Finished",
            Self::Failed => "Failed",
            Self::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&lenient_string(d)?))
    }
}

impl Default for TaskStatus {
    fn default() -> Self {
        Self::Other(String::new())
    }
}

/// One `{"Name":…, "Value":…}` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RelatedItem {
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub value: String,
}

/// One operation of a task (DescribeTaskAttribute's `OperationProgressSet`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct OperationProgress {
    #[serde(deserialize_with = "lenient_string")]
    pub operation_status: String,
    #[serde(deserialize_with = "lenient_string")]
    pub error_code: String,
    #[serde(deserialize_with = "lenient_string")]
    pub error_msg: String,
    #[serde(deserialize_with = "wrapped_list")]
    pub related_item_set: Vec<RelatedItem>,
}

/// A DescribeTaskAttribute answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskAttribute {
    #[serde(deserialize_with = "lenient_string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub region_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub task_action: String,
    pub task_status: TaskStatus,
    /// A percent string such as `"45%"` (possibly empty early on); see [`Self::percent`].
    #[serde(deserialize_with = "lenient_string")]
    pub task_process: String,
    /// `"true"` / `"false"` (or a bare boolean in doc examples); see [`Self::cancellable`].
    #[serde(deserialize_with = "lenient_string")]
    pub support_cancel: String,
    #[serde(deserialize_with = "lenient_string")]
    pub creation_time: String,
    #[serde(deserialize_with = "lenient_string")]
    pub finished_time: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub total_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub success_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub failed_count: u64,
    #[serde(deserialize_with = "wrapped_list")]
    pub operation_progress_set: Vec<OperationProgress>,
}

/// An OSS object a task names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskObject {
    pub bucket: String,
    pub key: String,
}

impl TaskAttribute {
    /// `TaskProcess` as a number (0–100), if it holds one.
    pub fn percent(&self) -> Option<f64> {
        let t = self.task_process.trim().trim_end_matches('%').trim();
        t.parse::<f64>().ok().filter(|p| p.is_finite())
    }

    pub fn cancellable(&self) -> bool {
        self.support_cancel.trim().eq_ignore_ascii_case("true")
    }

    /// The objects an export produced: every `OSSObject` item, paired with the nearest
    /// preceding `OSSBucket` of the same operation (or `default_bucket`).
    pub fn exported_objects(&self, default_bucket: &str) -> Vec<TaskObject> {
        let mut out = Vec::new();
        for op in &self.operation_progress_set {
            let mut bucket = default_bucket.to_string();
            for item in &op.related_item_set {
                match item.name.as_str() {
                    "OSSBucket" if !item.value.is_empty() => bucket = item.value.clone(),
                    "OSSObject" if !item.value.is_empty() => out.push(TaskObject {
                        bucket: bucket.clone(),
                        key: item.value.clone(),
                    }),
                    _ => {}
                }
            }
        }
        out
    }

    /// The first failed operation's `(ErrorCode, ErrorMsg)`, when any operation failed.
    pub fn failure(&self) -> Option<(String, String)> {
        self.operation_progress_set
            .iter()
            .find(|op| {
                !op.error_code.is_empty()
                    || (!op.operation_status.is_empty() && op.operation_status != "Success")
            })
            .map(|op| (op.error_code.clone(), op.error_msg.clone()))
    }
}

/// DescribeTasks filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeTasksInput {
    pub task_ids: Vec<String>,
    /// `ExportImage`, `ImportImage`, …
    pub task_action: Option<String>,
    /// Only `Finished`, `Processing` and `Failed` filter; others are ignored by the service.
    pub task_status: Option<String>,
    pub resource_ids: Vec<String>,
    pub page_number: Option<u32>,
    pub page_size: Option<u32>,
}

/// One task in a DescribeTasks answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskSummary {
    #[serde(deserialize_with = "lenient_string")]
    pub task_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub task_action: String,
    pub task_status: TaskStatus,
    #[serde(deserialize_with = "lenient_string")]
    pub support_cancel: String,
    #[serde(deserialize_with = "lenient_string")]
    pub creation_time: String,
    #[serde(deserialize_with = "lenient_string")]
    pub finished_time: String,
    #[serde(deserialize_with = "lenient_string")]
    pub resource_id: String,
}

/// A DescribeTasks answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskList {
    #[serde(deserialize_with = "lenient_string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub total_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub page_number: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub page_size: u64,
    #[serde(deserialize_with = "wrapped_list")]
    pub task_set: Vec<TaskSummary>,
}

/// One disk of an ImportImage call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportDisk {
    pub oss_bucket: String,
    pub oss_object: String,
    /// `None` lets the service detect the format.
    pub format: Option<ImageFormat>,
    /// GiB; must be at least the disk's virtual size.
    pub disk_image_size: Option<u64>,
}

/// ImportImage parameters. The first disk is the system disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportImageInput {
    pub image_name: String,
    pub description: Option<String>,
    pub architecture: Option<String>,
    pub os_type: Option<String>,
    pub platform: Option<String>,
    pub boot_mode: Option<String>,
    pub license_type: Option<String>,
    /// Defaults to [`IMPORT_ROLE`] when `None`.
    pub role_name: Option<String>,
    pub disks: Vec<ImportDisk>,
    pub nvme_support: Option<String>,
    pub imds_support: Option<String>,
    pub tags: Vec<(String, String)>,
    pub client_token: Option<String>,
}

/// DescribeImages filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeImagesInput {
    pub image_ids: Vec<String>,
    pub image_name: Option<String>,
    /// A comma list of statuses; `None` means the service default (`Available` only).
    pub status: Option<String>,
    pub image_owner_alias: Option<String>,
    pub page_number: Option<u32>,
    pub page_size: Option<u32>,
}

impl DescribeImagesInput {
    /// One image by id, whatever its status.
    pub fn by_id(image_id: &str) -> Self {
        Self {
            image_ids: vec![image_id.to_string()],
            status: Some(ALL_IMAGE_STATUSES.into()),
            ..Self::default()
        }
    }

    /// Images whose name matches (the service matches fuzzily), whatever their status.
    pub fn by_name(name: &str) -> Self {
        Self {
            image_name: Some(name.to_string()),
            status: Some(ALL_IMAGE_STATUSES.into()),
            page_size: Some(100),
            ..Self::default()
        }
    }
}

/// `Features` of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageFeatures {
    #[serde(deserialize_with = "lenient_string")]
    pub nvme_support: String,
    #[serde(deserialize_with = "lenient_string")]
    pub imds_support: String,
}

/// One disk of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DiskDeviceMapping {
    #[serde(deserialize_with = "lenient_string")]
    pub device: String,
    /// GiB, as a string in the API.
    #[serde(deserialize_with = "lenient_string")]
    pub size: String,
    #[serde(deserialize_with = "lenient_string")]
    pub snapshot_id: String,
    /// `system` or `data`.
    #[serde(deserialize_with = "lenient_string")]
    pub r#type: String,
    #[serde(deserialize_with = "lenient_string")]
    pub format: String,
    #[serde(rename = "ImportOSSBucket", deserialize_with = "lenient_string")]
    pub import_oss_bucket: String,
    #[serde(rename = "ImportOSSObject", deserialize_with = "lenient_string")]
    pub import_oss_object: String,
}

impl DiskDeviceMapping {
    /// Size in GiB, when it parses.
    pub fn size_gib(&self) -> Option<u64> {
        self.size.trim().parse().ok()
    }
}

/// A tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Tag {
    #[serde(deserialize_with = "lenient_string")]
    pub tag_key: String,
    #[serde(deserialize_with = "lenient_string")]
    pub tag_value: String,
}

/// An image as DescribeImages reports it (the fields ossrelay uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Image {
    #[serde(deserialize_with = "lenient_string")]
    pub image_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub image_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub description: String,
    #[serde(deserialize_with = "lenient_string")]
    pub status: String,
    #[serde(deserialize_with = "lenient_string")]
    pub progress: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub size: u64,
    #[serde(deserialize_with = "lenient_string")]
    pub creation_time: String,
    #[serde(deserialize_with = "lenient_string")]
    pub architecture: String,
    #[serde(rename = "OSType", deserialize_with = "lenient_string")]
    pub os_type: String,
    #[serde(deserialize_with = "lenient_string")]
    pub platform: String,
    #[serde(rename = "OSName", deserialize_with = "lenient_string")]
    pub os_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub boot_mode: String,
    #[serde(deserialize_with = "lenient_string")]
    pub image_owner_alias: String,
    #[serde(deserialize_with = "lenient_string")]
    pub license_type: String,
    pub features: ImageFeatures,
    #[serde(deserialize_with = "wrapped_list")]
    pub tags: Vec<Tag>,
    #[serde(deserialize_with = "wrapped_list")]
    pub disk_device_mappings: Vec<DiskDeviceMapping>,
}

impl Image {
    /// The system disk mapping (type `system`, else the first).
    pub fn system_disk(&self) -> Option<&DiskDeviceMapping> {
        self.disk_device_mappings
            .iter()
            .find(|d| d.r#type.eq_ignore_ascii_case("system"))
            .or_else(|| self.disk_device_mappings.first())
    }

    /// Data disk mappings in the order the service lists them.
    pub fn data_disks(&self) -> Vec<&DiskDeviceMapping> {
        let sys = self.system_disk().map(|d| d as *const _);
        self.disk_device_mappings
            .iter()
            .filter(|d| Some(*d as *const _) != sys)
            .collect()
    }

    /// `Progress` as a number (0–100), if it holds one.
    pub fn percent(&self) -> Option<f64> {
        self.progress
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse()
            .ok()
    }

    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.tag_key == key)
            .map(|t| t.tag_value.as_str())
    }
}

/// A DescribeImages answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageList {
    #[serde(deserialize_with = "lenient_string")]
    pub request_id: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub total_count: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub page_number: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub page_size: u64,
    #[serde(deserialize_with = "wrapped_list")]
    pub images: Vec<Image>,
}

/// One region of DescribeRegions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Region {
    #[serde(deserialize_with = "lenient_string")]
    pub region_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub local_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub region_endpoint: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RegionList {
    #[serde(deserialize_with = "wrapped_list")]
    regions: Vec<Region>,
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Adds `DiskDeviceMapping.N.*`, `Features.*`, `Tag.N.*` etc. for ImportImage.
pub fn import_image_request(endpoint: &str, region: &str, input: &ImportImageInput) -> RpcRequest {
    let mut r = RpcRequest::new(endpoint, ECS_VERSION, "ImportImage")
        .param("RegionId", region)
        .param("ImageName", &input.image_name)
        .param(
            "RoleName",
            input.role_name.as_deref().unwrap_or(IMPORT_ROLE),
        );
    let opt = |r: RpcRequest, k: &str, v: &Option<String>| match v {
        Some(v) if !v.is_empty() => r.param(k, v),
        _ => r,
    };
    r = opt(r, "Description", &input.description);
    r = opt(r, "Architecture", &input.architecture);
    r = opt(r, "OSType", &input.os_type);
    r = opt(r, "Platform", &input.platform);
    r = opt(r, "BootMode", &input.boot_mode);
    r = opt(r, "LicenseType", &input.license_type);
    r = opt(r, "Features.NvmeSupport", &input.nvme_support);
    r = opt(r, "Features.ImdsSupport", &input.imds_support);
    r = opt(r, "ClientToken", &input.client_token);
    for (i, d) in input.disks.iter().enumerate() {
        let n = i + 1;
        r = r
            .param(format!("DiskDeviceMapping.{n}.OSSBucket"), &d.oss_bucket)
            .param(format!("DiskDeviceMapping.{n}.OSSObject"), &d.oss_object);
        if let Some(f) = d.format {
            r = r.param(format!("DiskDeviceMapping.{n}.Format"), f.import_name());
        }
        if let Some(s) = d.disk_image_size {
            r = r.param(
                format!("DiskDeviceMapping.{n}.DiskImageSize"),
                s.to_string(),
            );
        }
    }
    for (i, (k, v)) in input.tags.iter().enumerate() {
        r = r
            .param(format!("Tag.{}.Key", i + 1), k)
            .param(format!("Tag.{}.Value", i + 1), v);
    }
    r
}

/// The ExportImage request.
pub fn export_image_request(endpoint: &str, region: &str, input: &ExportImageInput) -> RpcRequest {
    let mut r = RpcRequest::new(endpoint, ECS_VERSION, "ExportImage")
        .param("RegionId", region)
        .param("ImageId", &input.image_id)
        .param("OSSBucket", &input.oss_bucket)
        .param(
            "RoleName",
            input.role_name.as_deref().unwrap_or(EXPORT_ROLE),
        );
    if let Some(p) = &input.oss_prefix {
        r = r.param("OSSPrefix", p);
    }
    if let Some(f) = input.image_format {
        r = r.param("ImageFormat", f.export_name());
    }
    r
}

/// The DescribeImages request.
pub fn describe_images_request(
    endpoint: &str,
    region: &str,
    input: &DescribeImagesInput,
) -> RpcRequest {
    let mut r = RpcRequest::new(endpoint, ECS_VERSION, "DescribeImages").param("RegionId", region);
    if !input.image_ids.is_empty() {
        r = r.param("ImageId", input.image_ids.join(","));
    }
    if let Some(n) = &input.image_name {
        r = r.param("ImageName", n);
    }
    if let Some(s) = &input.status {
        r = r.param("Status", s);
    }
    if let Some(a) = &input.image_owner_alias {
        r = r.param("ImageOwnerAlias", a);
    }
    if let Some(p) = input.page_number {
        r = r.param("PageNumber", p.to_string());
    }
    if let Some(p) = input.page_size {
        r = r.param("PageSize", p.to_string());
    }
    r
}

/// The DescribeTasks request.
pub fn describe_tasks_request(
    endpoint: &str,
    region: &str,
    input: &DescribeTasksInput,
) -> RpcRequest {
    let mut r = RpcRequest::new(endpoint, ECS_VERSION, "DescribeTasks").param("RegionId", region);
    if !input.task_ids.is_empty() {
        r = r.param("TaskIds", input.task_ids.join(","));
    }
    if let Some(a) = &input.task_action {
        r = r.param("TaskAction", a);
    }
    if let Some(s) = &input.task_status {
        r = r.param("TaskStatus", s);
    }
    for (i, id) in input.resource_ids.iter().enumerate() {
        r = r.param(format!("ResourceIds.{}", i + 1), id);
    }
    if let Some(p) = input.page_number {
        r = r.param("PageNumber", p.to_string());
    }
    if let Some(p) = input.page_size {
        r = r.param("PageSize", p.to_string());
    }
    r
}

// ---------------------------------------------------------------------------------------------
// The client

/// The ECS operations ossrelay needs, as a trait so waiting and migration logic can be tested
/// against an in-memory fake.
#[async_trait]
pub trait EcsApi: Send + Sync {
    /// The region every call targets.
    fn region(&self) -> &str;
    async fn export_image(&self, input: &ExportImageInput) -> Result<TaskStarted, RpcError>;
    async fn describe_task_attribute(&self, task_id: &str) -> Result<TaskAttribute, RpcError>;
    async fn describe_tasks(&self, input: &DescribeTasksInput) -> Result<TaskList, RpcError>;
    async fn cancel_task(&self, task_id: &str) -> Result<(), RpcError>;
    async fn import_image(&self, input: &ImportImageInput) -> Result<TaskStarted, RpcError>;
    async fn describe_images(&self, input: &DescribeImagesInput) -> Result<ImageList, RpcError>;
}

/// ECS in one region, with one set of credentials.
#[derive(Clone)]
pub struct EcsClient {
    rpc: RpcClient,
    endpoint: String,
    region: String,
    creds: Arc<dyn CredentialsProvider>,
}

impl std::fmt::Debug for EcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("creds", &self.creds.name())
            .finish()
    }
}

impl EcsClient {
    /// A client for `region`; `endpoint` `None` means [`default_endpoint`].
    pub fn new(
        region: impl Into<String>,
        endpoint: Option<String>,
        creds: Arc<dyn CredentialsProvider>,
    ) -> Self {
        let region = region.into();
        Self {
            rpc: RpcClient::new(),
            endpoint: endpoint.unwrap_or_else(|| default_endpoint(&region)),
            region,
            creds,
        }
    }

    /// Uses `rpc` (retry policy, timeouts).
    pub fn with_rpc(mut self, rpc: RpcClient) -> Self {
        self.rpc = rpc;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn call<T: DeserializeOwned>(&self, req: &RpcRequest) -> Result<T, RpcError> {
        self.rpc.call_json(self.creds.as_ref(), req).await
    }

    /// DescribeRegions: regions and their ECS endpoints.
    pub async fn describe_regions(&self) -> Result<Vec<Region>, RpcError> {
        let req = RpcRequest::new(&self.endpoint, ECS_VERSION, "DescribeRegions")
            .param("RegionId", &self.region);
        let list: RegionList = self.call(&req).await?;
        Ok(list.regions)
    }

    /// Every page of DescribeImages (100 per page).
    pub async fn describe_all_images(
        &self,
        input: &DescribeImagesInput,
    ) -> Result<Vec<Image>, RpcError> {
        describe_all_images(self, input).await
    }
}

/// Every page of DescribeImages (100 per page, at most 100 pages).
pub async fn describe_all_images(
    ecs: &dyn EcsApi,
    input: &DescribeImagesInput,
) -> Result<Vec<Image>, RpcError> {
    let mut out = Vec::new();
    for page in 1..=100u32 {
        let mut q = input.clone();
        q.page_number = Some(page);
        q.page_size = Some(100);
        let list = ecs.describe_images(&q).await?;
        let n = list.images.len();
        out.extend(list.images);
        if n < 100 || out.len() as u64 >= list.total_count {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl EcsApi for EcsClient {
    fn region(&self) -> &str {
        &self.region
    }

    async fn export_image(&self, input: &ExportImageInput) -> Result<TaskStarted, RpcError> {
        self.call(&export_image_request(&self.endpoint, &self.region, input))
            .await
    }

    async fn describe_task_attribute(&self, task_id: &str) -> Result<TaskAttribute, RpcError> {
        let req = RpcRequest::new(&self.endpoint, ECS_VERSION, "DescribeTaskAttribute")
            .param("RegionId", &self.region)
            .param("TaskId", task_id);
        let attr: TaskAttribute = self.call(&req).await?;
        // Terraform treats a 200 with an empty TaskId as "not found"; so do we.
        if attr.task_id.is_empty() {
            return Err(RpcError::Api(Box::new(super::rpc::ApiError {
                action: "DescribeTaskAttribute".into(),
                status: 200,
                code: "InvalidTaskId.NotFound".into(),
                message: format!("task {task_id} was not found (empty answer)"),
                request_id: attr.request_id,
                host_id: None,
                recommend: None,
                retry_after: None,
            })));
        }
        Ok(attr)
    }

    async fn describe_tasks(&self, input: &DescribeTasksInput) -> Result<TaskList, RpcError> {
        self.call(&describe_tasks_request(&self.endpoint, &self.region, input))
            .await
    }

    async fn cancel_task(&self, task_id: &str) -> Result<(), RpcError> {
        let req = RpcRequest::new(&self.endpoint, ECS_VERSION, "CancelTask")
            .param("RegionId", &self.region)
            .param("TaskId", task_id);
        let _: serde_json::Value = self.call(&req).await?;
        Ok(())
    }

    async fn import_image(&self, input: &ImportImageInput) -> Result<TaskStarted, RpcError> {
        self.call(&import_image_request(&self.endpoint, &self.region, input))
            .await
    }

    async fn describe_images(&self, input: &DescribeImagesInput) -> Result<ImageList, RpcError> {
        self.call(&describe_images_request(
            &self.endpoint,
            &self.region,
            input,
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_attribute_reference_answer() {
        let body = r#"{
          "RequestId": "4BE2C7FE-C7A4-4675-A153-174E032AABFB",
          "RegionId": "cn-hangzhou",
          "TaskId": "t-ce946ntx4wr****",
          "TaskAction": "ExportImage",
          "TaskStatus": "Finished",
          "TaskProcess": "100%",
          "SupportCancel": "true",
          "CreationTime": "2015-11-23T02:13Z",
          "FinishedTime": "2015-11-23T02:19Z",
          "TotalCount": 1, "SuccessCount": 1, "FailedCount": 0,
          "OperationProgressSet": {"OperationProgress": [{
              "OperationStatus": "Success", "ErrorCode": "", "ErrorMsg": "",
              "RelatedItemSet": {"RelatedItem": [
                  {"Name": "OSSBucket", "Value": "image-temp"},
                  {"Name": "OSSObject", "Value": "MYOSSPRE_m-23f8tcp***_t-23ym6mv***.vhd"},
                  {"Name": "ImageFormat", "Value": "vhd"}]}}]}
        }"#;
        let t: TaskAttribute = serde_json::from_str(body).unwrap();
        assert_eq!(t.task_status, TaskStatus::Finished);
        assert!(t.task_status.is_terminal());
        assert_eq!(t.percent(), Some(100.0));
        assert!(t.cancellable());
        assert_eq!(t.total_count, 1);
        assert_eq!(t.failure(), None);
        assert_eq!(
            t.exported_objects("fallback"),
            vec![TaskObject {
                bucket: "image-temp".into(),
                key: "MYOSSPRE_m-23f8tcp***_t-23ym6mv***.vhd".into()
            }]
        );
    }

    #[test]
    fn task_attribute_variants() {
        // Early answer: empty progress, bare boolean, numeric strings, unknown status.
        let t: TaskAttribute = serde_json::from_str(
            r#"{"TaskId":"t-1","TaskStatus":"Waiting","TaskProcess":"","SupportCancel":false,"TotalCount":"2","FinishedTime":""}"#,
        )
        .unwrap();
        assert_eq!(t.percent(), None);
        assert!(!t.cancellable());
        assert_eq!(t.total_count, 2);
        assert!(!t.task_status.is_terminal());
        assert!(t.operation_progress_set.is_empty());
        let t: TaskAttribute =
            serde_json::from_str(r#"{"TaskId":"t-1","TaskStatus":"Cancelled"}"#).unwrap();
        assert_eq!(t.task_status, TaskStatus::Other("Cancelled".into()));
        assert!(t.task_status.is_terminal());
        let t: TaskAttribute = serde_json::from_str(
            r#"{"TaskId":"t-1","TaskStatus":"Failed","TaskProcess":"37 %","OperationProgressSet":{"OperationProgress":[{"OperationStatus":"Failed","ErrorCode":"NoSetRoletoECSServiceAcount","ErrorMsg":"role missing"}]}}"#,
        )
        .unwrap();
        assert_eq!(t.percent(), Some(37.0));
        assert_eq!(
            t.failure(),
            Some(("NoSetRoletoECSServiceAcount".into(), "role missing".into()))
        );
    }

    #[test]
    fn multi_disk_export_objects() {
        let t: TaskAttribute = serde_json::from_str(
            r#"{"TaskId":"t-2","TaskStatus":"Finished","OperationProgressSet":{"OperationProgress":[
              {"OperationStatus":"Success","RelatedItemSet":{"RelatedItem":[
                {"Name":"OSSBucket","Value":"b1"},{"Name":"OSSObject","Value":"p_m-1_system.raw.tar.gz"},
                {"Name":"OSSObject","Value":"p_m-1_data_xvdb.raw.tar.gz"}]}},
              {"OperationStatus":"Success","RelatedItemSet":{"RelatedItem":{"Name":"OSSObject","Value":"p_m-1_data_xvdc.raw.tar.gz"}}}]}}"#,
        )
        .unwrap();
        let objs = t.exported_objects("dflt");
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[1].bucket, "b1");
        assert_eq!(objs[1].key, "p_m-1_data_xvdb.raw.tar.gz");
        assert_eq!(objs[2].bucket, "dflt");
    }

    #[test]
    fn describe_tasks_both_shapes() {
        let a: TaskList = serde_json::from_str(
            r#"{"RequestId":"r","TotalCount":1,"PageNumber":1,"PageSize":10,"TaskSet":{"Task":[{"TaskId":"t-1","TaskAction":"ExportImage","TaskStatus":"Processing","SupportCancel":"true","CreationTime":"2024-05-01T08:30Z","ResourceId":"m-1"}]}}"#,
        )
        .unwrap();
        // The doc example that wraps TaskSet in an array.
        let b: TaskList = serde_json::from_str(
            r#"{"RequestId":"r","TotalCount":1,"PageNumber":1,"PageSize":10,"TaskSet":[{"Task":[{"TaskId":"t-1","TaskAction":"ExportImage","TaskStatus":"Processing","SupportCancel":"true","CreationTime":"2024-05-01T08:30Z","ResourceId":"m-1"}]}]}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.task_set[0].resource_id, "m-1");
        assert_eq!(a.task_set[0].task_status, TaskStatus::Processing);
        let empty: TaskList =
            serde_json::from_str(r#"{"RequestId":"r","TotalCount":0,"TaskSet":{"Task":[]}}"#)
                .unwrap();
        assert!(empty.task_set.is_empty());
    }

    #[test]
    fn images_model() {
        let body = r#"{"RequestId":"r","RegionId":"cn-hangzhou","PageNumber":1,"PageSize":10,"TotalCount":1,
          "Images":{"Image":[{"ImageId":"m-bp1","ImageName":"web","Description":"d","Status":"Available","Progress":"100%",
            "Size":40,"CreationTime":"2024-05-01T08:30:00Z","Architecture":"x86_64","OSType":"linux","Platform":"Ubuntu",
            "OSName":"Ubuntu 22.04 64位","BootMode":"UEFI","ImageOwnerAlias":"self","IsCopied":false,"IsSelfShared":"False",
            "Features":{"NvmeSupport":"supported","ImdsSupport":"v2"},
            "Tags":{"Tag":[{"TagKey":"k","TagValue":"v"}]},
            "DiskDeviceMappings":{"DiskDeviceMapping":[
              {"Device":"/dev/xvdb","Size":"100","SnapshotId":"s-2","Type":"data","Format":"","ImportOSSBucket":"","ImportOSSObject":""},
              {"Device":"/dev/xvda","Size":"40","SnapshotId":"s-1","Type":"system","Format":"RAW","ImportOSSBucket":"b","ImportOSSObject":"o"}]}}]}}"#;
        let list: ImageList = serde_json::from_str(body).unwrap();
        assert_eq!(list.total_count, 1);
        let img = &list.images[0];
        assert_eq!(img.os_type, "linux");
        assert_eq!(img.boot_mode, "UEFI");
        assert_eq!(img.features.nvme_support, "supported");
        assert_eq!(img.tag("k"), Some("v"));
        assert_eq!(img.system_disk().unwrap().size_gib(), Some(40));
        assert_eq!(img.system_disk().unwrap().import_oss_object, "o");
        let data = img.data_disks();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].device, "/dev/xvdb");
        assert_eq!(img.percent(), Some(100.0));
        // Unknown image id: an empty list, not an error.
        let none: ImageList =
            serde_json::from_str(r#"{"RequestId":"r","TotalCount":0,"Images":{"Image":[]}}"#)
                .unwrap();
        assert!(none.images.is_empty());
    }

    #[test]
    fn start_answers() {
        let e: TaskStarted = serde_json::from_str(
            r#"{"RequestId":"C8B26B44-0189-443E-9816-D951F596****","TaskId":"t-bp67acfmxazb4p****","RegionId":"cn-hangzhou"}"#,
        )
        .unwrap();
        assert_eq!(e.task_id, "t-bp67acfmxazb4p****");
        assert_eq!(e.image_id, "");
        let i: TaskStarted = serde_json::from_str(
            r#"{"RequestId":"473469C7-AA6F-4DC5-B3DB-A3DC0DE3****","ImageId":"m-bp67acfmxazb4p****","TaskId":"t-bp67acfmxazb4p****","RegionId":"cn-hangzhou"}"#,
        )
        .unwrap();
        assert_eq!(i.image_id, "m-bp67acfmxazb4p****");
    }

    #[test]
    fn regions_model() {
        let list: RegionList = serde_json::from_str(
            r#"{"RequestId":"r","Regions":{"Region":[{"RegionId":"cn-hangzhou","LocalName":"华东1（杭州）","RegionEndpoint":"ecs.cn-hangzhou.aliyuncs.com","Status":"available"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            list.regions[0].region_endpoint,
            "ecs.cn-hangzhou.aliyuncs.com"
        );
    }

    fn names(r: &RpcRequest) -> Vec<(&str, &str)> {
        r.query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn import_request_flattening() {
        let input = ImportImageInput {
            image_name: "migrated-img_01".into(),
            architecture: Some("x86_64".into()),
            boot_mode: Some("UEFI".into()),
            os_type: Some("linux".into()),
            platform: Some("Others Linux".into()),
            nvme_support: Some("supported".into()),
            disks: vec![
                ImportDisk {
                    oss_bucket: "my-bucket-eu".into(),
                    oss_object: "exports/img 1+2.qcow2".into(),
                    format: Some(ImageFormat::Qcow2),
                    disk_image_size: Some(40),
                },
                ImportDisk {
                    oss_bucket: "my-bucket-eu".into(),
                    oss_object: "d.raw".into(),
                    format: None,
                    disk_image_size: None,
                },
            ],
            tags: vec![("source".into(), "cn-hangzhou/m-bp1abc".into())],
            ..ImportImageInput::default()
        };
        let r = import_image_request("http://127.0.0.1:1", "eu-central-1", &input);
        assert_eq!(r.action, "ImportImage");
        let q = names(&r);
        for want in [
            ("RegionId", "eu-central-1"),
            ("RoleName", IMPORT_ROLE),
            ("DiskDeviceMapping.1.OSSBucket", "my-bucket-eu"),
            ("DiskDeviceMapping.1.OSSObject", "exports/img 1+2.qcow2"),
            ("DiskDeviceMapping.1.Format", "QCOW2"),
            ("DiskDeviceMapping.1.DiskImageSize", "40"),
            ("DiskDeviceMapping.2.OSSObject", "d.raw"),
            ("Features.NvmeSupport", "supported"),
            ("OSType", "linux"),
            ("Platform", "Others Linux"),
            ("Tag.1.Key", "source"),
            ("Tag.1.Value", "cn-hangzhou/m-bp1abc"),
        ] {
            assert!(q.contains(&want), "{want:?} missing from {q:?}");
        }
        assert!(!q.iter().any(|(k, _)| *k == "DiskDeviceMapping.2.Format"));
        assert!(!q.iter().any(|(k, _)| *k == "Description"));
    }

    #[test]
    fn export_and_describe_requests() {
        let r = export_image_request(
            "e",
            "cn-hangzhou",
            &ExportImageInput {
                image_id: "m-1".into(),
                oss_bucket: "b".into(),
                oss_prefix: Some("mig2024".into()),
                image_format: Some(ImageFormat::Qcow2),
                role_name: None,
            },
        );
        let q = names(&r);
        assert!(q.contains(&("ImageFormat", "qcow2")));
        assert!(q.contains(&("RoleName", EXPORT_ROLE)));
        assert!(q.contains(&("OSSPrefix", "mig2024")));
        let r = describe_images_request("e", "r1", &DescribeImagesInput::by_id("m-1"));
        assert!(names(&r).contains(&("Status", ALL_IMAGE_STATUSES)));
        assert!(names(&r).contains(&("ImageId", "m-1")));
        let r = describe_tasks_request(
            "e",
            "r1",
            &DescribeTasksInput {
                task_action: Some("ExportImage".into()),
                resource_ids: vec!["m-1".into()],
                ..Default::default()
            },
        );
        assert!(names(&r).contains(&("ResourceIds.1", "m-1")));
        assert!(names(&r).contains(&("TaskAction", "ExportImage")));
    }

    #[test]
    fn prefixes_and_formats() {
        assert!(validate_oss_prefix("mig2024").is_ok());
        assert!(validate_oss_prefix("").is_err());
        assert!(validate_oss_prefix("with-dash").is_err());
        assert!(validate_oss_prefix(&"a".repeat(31)).is_err());
        assert_eq!(
            ImageFormat::from_key("p_m-1_system.raw.tar.gz"),
            Some(ImageFormat::Raw)
        );
        assert_eq!(ImageFormat::from_key("x.QCOW2"), Some(ImageFormat::Qcow2));
        assert_eq!(ImageFormat::from_key("x.vhd"), Some(ImageFormat::Vhd));
        assert_eq!(ImageFormat::from_key("x.bin"), None);
    }
}
