//! Typed EC2 calls for VM Import/Export of images (ec2-vm-import-export.md §1–§4), and the
//! [`Ec2Api`] seam the cross-cloud migration is written against (tests use a fake).
//!
//! Guarantees callers can rely on:
//! * Requests carry exactly the wire names botocore sends (`Filter.N` for
//!   DescribeExportImageTasks/DescribeImages, **`Filters.N`** for DescribeImportImageTasks,
//!   `DiskContainer.N`, `TagSpecification.N…Tag.M`, `ExportImageTaskId.N`, `ImportTaskId.N`);
//!   the `*_params` functions build them and are unit-tested against the reference's bodies.
//! * Answers are read leniently (a missing field is absent, not an error): lowerCamel
//!   elements, `<xxxSet><item>` lists, namespace ignored ([`super::xml`]).
//! * `describe_*_tasks` follow `NextToken` until the last page; `describe_images` of an unknown
//!   id answers `Ok` without that image (EC2's `InvalidAMIID.NotFound` is swallowed there, so
//!   "not listed yet" and "gone" look the same to the caller, who decides by absence).
//! * Every failure is an [`AwsQueryError`] (see [`super::query`] for retries).

use std::sync::Arc;

use async_trait::async_trait;

use super::query::{self, AwsQueryError, Params, QueryClient, EC2};
use super::xml::Node;
use crate::credentials::CredentialsProvider;

/// The service role VM Import/Export assumes unless told otherwise.
pub const DEFAULT_ROLE: &str = "vmimport";

/// Longest pagination we follow (500 items a page): a guard against a looping `NextToken`.
const MAX_PAGES: usize = 1000;

/// ExportImage's disk formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskImageFormat {
    Raw,
    Vhd,
    Vmdk,
}

impl DiskImageFormat {
    /// The wire spelling: `RAW`, `VHD`, `VMDK`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "RAW",
            Self::Vhd => "VHD",
            Self::Vmdk => "VMDK",
        }
    }

    /// The exported object's suffix: `raw`, `vhd`, `vmdk`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Vhd => "vhd",
            Self::Vmdk => "vmdk",
        }
    }

    /// Case-insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(Self::Raw),
            "vhd" => Some(Self::Vhd),
            "vmdk" => Some(Self::Vmdk),
            _ => None,
        }
    }
}

/// One EBS mapping of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDevice {
    pub device_name: String,
    /// `Ebs.VolumeSize` in GiB; `None` for instance-store or unset.
    pub volume_size_gib: Option<u64>,
    pub snapshot_id: Option<String>,
}

/// An AMI as DescribeImages reports it (the fields the migration maps, §4 and §7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ec2Image {
    pub image_id: String,
    pub name: String,
    pub description: String,
    /// `pending`, `available`, `failed`, …
    pub state: String,
    /// `x86_64`, `i386`, `arm64`, …
    pub architecture: String,
    /// `legacy-bios`, `uefi`, `uefi-preferred`, or `None` (the instance type's default).
    pub boot_mode: Option<String>,
    /// `Windows` or `None`.
    pub platform: Option<String>,
    /// Billing platform, e.g. `Linux/UNIX`, `Windows`.
    pub platform_details: Option<String>,
    pub root_device_name: Option<String>,
    /// `v2.0` when the image requires IMDSv2.
    pub imds_support: Option<String>,
    pub block_devices: Vec<BlockDevice>,
    /// Marketplace product codes (such images are not exportable).
    pub product_codes: Vec<String>,
    pub tags: Vec<(String, String)>,
}

impl Ec2Image {
    /// The root volume's size in GiB: the mapping whose device is `RootDeviceName`, else the
    /// first mapping with a size.
    pub fn root_volume_gib(&self) -> Option<u64> {
        let root = self.root_device_name.as_deref();
        self.block_devices
            .iter()
            .find(|b| Some(b.device_name.as_str()) == root && b.volume_size_gib.is_some())
            .or_else(|| {
                self.block_devices
                    .iter()
                    .find(|b| b.volume_size_gib.is_some())
            })
            .and_then(|b| b.volume_size_gib)
    }
}

/// What ExportImage needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportImageInput {
    pub image_id: String,
    pub format: DiskImageFormat,
    pub s3_bucket: String,
    /// Concatenated raw with the task id: give it a trailing `/` for a "directory".
    pub s3_prefix: Option<String>,
    /// Default (`None`): `vmimport`.
    pub role_name: Option<String>,
    pub description: Option<String>,
    /// Idempotency token: the same token returns the same task instead of a second one.
    pub client_token: Option<String>,
    /// Tags of the export task.
    pub tags: Vec<(String, String)>,
}

impl ExportImageInput {
    /// Export `image_id` as `format` into `s3_bucket`, everything else default.
    pub fn new(
        image_id: impl Into<String>,
        format: DiskImageFormat,
        s3_bucket: impl Into<String>,
    ) -> Self {
        Self {
            image_id: image_id.into(),
            format,
            s3_bucket: s3_bucket.into(),
            s3_prefix: None,
            role_name: None,
            description: None,
            client_token: None,
            tags: Vec::new(),
        }
    }
}

/// An export-image task (ExportImage's answer or one item of DescribeExportImageTasks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportImageTask {
    pub task_id: String,
    pub image_id: String,
    /// `active`, `completed`, `deleting`, `deleted`.
    pub status: String,
    /// `validating`, `converting`, …, or the failure reason.
    pub status_message: Option<String>,
    /// Percent.
    pub progress: Option<u32>,
    pub s3_bucket: String,
    pub s3_prefix: String,
    /// `RAW`/`VHD`/`VMDK` when the answer says (DescribeExportImageTasks often does not).
    pub disk_image_format: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl ExportImageTask {
    /// The one object the export writes: `<prefix><task id>.<format in lower case>`.
    pub fn object_key(&self, format: DiskImageFormat) -> String {
        format!("{}{}.{}", self.s3_prefix, self.task_id, format.extension())
    }
}

/// Where an ImportImage disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    UserBucket {
        bucket: String,
        key: String,
    },
    /// `s3://bucket/key` or a presigned https URL.
    Url(String),
}

/// One `DiskContainer.N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskContainer {
    /// `RAW`, `VHD`, `VHDX`, `VMDK`, `OVA` (case-insensitive on the wire).
    pub format: String,
    pub source: DiskSource,
    pub description: Option<String>,
    pub device_name: Option<String>,
}

/// What ImportImage needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportImageInput {
    pub disk_containers: Vec<DiskContainer>,
    /// `x86_64`, `i386`.
    pub architecture: Option<String>,
    /// `legacy-bios`, `uefi`.
    pub boot_mode: Option<String>,
    /// `Linux`, `Windows`.
    pub platform: Option<String>,
    /// `AWS`, `BYOL`.
    pub license_type: Option<String>,
    /// Default (`None`): `vmimport`.
    pub role_name: Option<String>,
    pub description: Option<String>,
    pub encrypted: Option<bool>,
    pub client_token: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// One `SnapshotDetail` of an import task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotDetail {
    pub device_name: Option<String>,
    /// Bytes, whatever the docs say (ec2-vm-import-export.md §3.1).
    pub disk_image_size: Option<f64>,
    pub format: Option<String>,
    pub snapshot_id: Option<String>,
    pub status: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_key: Option<String>,
}

/// An import-image task (ImportImage's answer or one item of DescribeImportImageTasks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportImageTask {
    pub task_id: String,
    /// `active`, `completed`, `deleting`, `deleted`.
    pub status: String,
    /// `pending`, `validating`, `converting`, `booting`, `preparing ami`, or the failure.
    pub status_message: Option<String>,
    pub progress: Option<u32>,
    /// Set late, when the AMI is registered.
    pub image_id: Option<String>,
    pub architecture: Option<String>,
    pub boot_mode: Option<String>,
    pub platform: Option<String>,
    pub snapshot_details: Vec<SnapshotDetail>,
    pub tags: Vec<(String, String)>,
}

/// The EC2 calls of VM Import/Export, behind a trait so migration logic runs against a fake.
#[async_trait]
pub trait Ec2Api: Send + Sync {
    /// The region every call targets.
    fn region(&self) -> &str;
    /// The images among `ids` that exist (unknown ids are simply absent).
    async fn describe_images(&self, ids: &[String]) -> Result<Vec<Ec2Image>, AwsQueryError>;
    async fn export_image(
        &self,
        input: &ExportImageInput,
    ) -> Result<ExportImageTask, AwsQueryError>;
    /// The tasks `ids` (empty: every export-image task), across all pages.
    async fn describe_export_image_tasks(
        &self,
        ids: &[String],
    ) -> Result<Vec<ExportImageTask>, AwsQueryError>;
    async fn cancel_export_task(&self, task_id: &str) -> Result<(), AwsQueryError>;
    async fn import_image(
        &self,
        input: &ImportImageInput,
    ) -> Result<ImportImageTask, AwsQueryError>;
    /// The tasks `ids` (empty: every import-image task), across all pages.
    async fn describe_import_image_tasks(
        &self,
        ids: &[String],
    ) -> Result<Vec<ImportImageTask>, AwsQueryError>;
    async fn cancel_import_task(&self, task_id: &str, reason: &str) -> Result<(), AwsQueryError>;
}

// ---------------------------------------------------------------------------------------------
// Requests

/// ExportImage's parameters.
pub fn export_image_params(i: &ExportImageInput) -> Params {
    let mut p = Params::new("ExportImage", EC2);
    p.set("ImageId", i.image_id.clone())
        .set("DiskImageFormat", i.format.as_str())
        .set("S3ExportLocation.S3Bucket", i.s3_bucket.clone())
        .opt("S3ExportLocation.S3Prefix", i.s3_prefix.as_deref())
        .opt("RoleName", i.role_name.as_deref())
        .opt("Description", i.description.as_deref())
        .opt("ClientToken", i.client_token.as_deref())
        .tag_specification("export-image-task", &i.tags);
    p
}

/// DescribeExportImageTasks' parameters for one page.
pub fn describe_export_image_tasks_params(
    ids: &[String],
    states: &[&str],
    max_results: Option<u32>,
    next_token: Option<&str>,
) -> Params {
    let mut p = Params::new("DescribeExportImageTasks", EC2);
    p.list("ExportImageTaskId", ids);
    if !states.is_empty() {
        p.filters(
            "Filter",
            &[("task-state", states.iter().map(|s| s.to_string()).collect())],
        );
    }
    if let Some(m) = max_results {
        p.set("MaxResults", m.to_string());
    }
    p.opt("NextToken", next_token);
    p
}

/// CancelExportTask's parameters.
pub fn cancel_export_task_params(task_id: &str) -> Params {
    let mut p = Params::new("CancelExportTask", EC2);
    p.set("ExportTaskId", task_id);
    p
}

/// ImportImage's parameters (botocore's member order).
pub fn import_image_params(i: &ImportImageInput) -> Params {
    let mut p = Params::new("ImportImage", EC2);
    p.opt("Description", i.description.as_deref())
        .opt("Architecture", i.architecture.as_deref())
        .opt("BootMode", i.boot_mode.as_deref())
        .opt("Platform", i.platform.as_deref())
        .opt("LicenseType", i.license_type.as_deref())
        .opt("RoleName", i.role_name.as_deref())
        .opt("ClientToken", i.client_token.as_deref());
    if let Some(e) = i.encrypted {
        p.bool("Encrypted", e);
    }
    for (n, d) in i.disk_containers.iter().enumerate() {
        let pre = format!("DiskContainer.{}", n + 1);
        p.opt(format!("{pre}.Description"), d.description.as_deref())
            .opt(format!("{pre}.DeviceName"), d.device_name.as_deref())
            .set(format!("{pre}.Format"), d.format.clone());
        match &d.source {
            DiskSource::UserBucket { bucket, key } => {
                p.set(format!("{pre}.UserBucket.S3Bucket"), bucket.clone())
                    .set(format!("{pre}.UserBucket.S3Key"), key.clone());
            }
            DiskSource::Url(u) => {
                p.set(format!("{pre}.Url"), u.clone());
            }
        }
    }
    p.tag_specification("import-image-task", &i.tags);
    p
}

/// DescribeImportImageTasks' parameters for one page (note `Filters.N`, not `Filter.N`).
pub fn describe_import_image_tasks_params(
    ids: &[String],
    states: &[&str],
    max_results: Option<u32>,
    next_token: Option<&str>,
) -> Params {
    let mut p = Params::new("DescribeImportImageTasks", EC2);
    p.list("ImportTaskId", ids);
    if !states.is_empty() {
        p.filters(
            "Filters",
            &[("task-state", states.iter().map(|s| s.to_string()).collect())],
        );
    }
    if let Some(m) = max_results {
        p.set("MaxResults", m.to_string());
    }
    p.opt("NextToken", next_token);
    p
}

/// CancelImportTask's parameters.
pub fn cancel_import_task_params(task_id: &str, reason: &str) -> Params {
    let mut p = Params::new("CancelImportTask", EC2);
    p.set("ImportTaskId", task_id)
        .opt("CancelReason", Some(reason));
    p
}

/// DescribeImages' parameters.
pub fn describe_images_params(
    ids: &[String],
    owners: &[String],
    filters: &[(&str, Vec<String>)],
    include_deprecated: bool,
) -> Params {
    let mut p = Params::new("DescribeImages", EC2);
    p.list("ImageId", ids)
        .list("Owner", owners)
        .filters("Filter", filters);
    if include_deprecated {
        p.bool("IncludeDeprecated", true);
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Answers

fn tags(n: &Node) -> Vec<(String, String)> {
    n.items_at(&["tagSet"])
        .into_iter()
        .map(|t| (t.string_at(&["key"]), t.string_at(&["value"])))
        .collect()
}

/// `"45"`, `"45%"`, `"45.0"` → 45.
fn progress(n: &Node) -> Option<u32> {
    let t = n.text_at(&["progress"])?;
    let t = t.trim().trim_end_matches('%');
    t.parse::<u32>()
        .ok()
        .or_else(|| t.parse::<f64>().ok().map(|f| f.clamp(0.0, 100.0) as u32))
}

/// One export-image task element (the answer root of ExportImage, or an item).
pub fn parse_export_task(n: &Node) -> ExportImageTask {
    ExportImageTask {
        task_id: n.string_at(&["exportImageTaskId"]),
        image_id: n.string_at(&["imageId"]),
        status: n.string_at(&["status"]),
        status_message: n.text_at(&["statusMessage"]),
        progress: progress(n),
        s3_bucket: n.string_at(&["s3ExportLocation", "s3Bucket"]),
        s3_prefix: n.string_at(&["s3ExportLocation", "s3Prefix"]),
        disk_image_format: n.text_at(&["diskImageFormat"]),
        tags: tags(n),
    }
}

/// One import-image task element (the answer root of ImportImage, or an item).
pub fn parse_import_task(n: &Node) -> ImportImageTask {
    ImportImageTask {
        task_id: n.string_at(&["importTaskId"]),
        status: n.string_at(&["status"]),
        status_message: n.text_at(&["statusMessage"]),
        progress: progress(n),
        image_id: n.text_at(&["imageId"]),
        architecture: n.text_at(&["architecture"]),
        boot_mode: n.text_at(&["bootMode"]),
        platform: n.text_at(&["platform"]),
        snapshot_details: n
            .items_at(&["snapshotDetailSet"])
            .into_iter()
            .map(|s| SnapshotDetail {
                device_name: s.text_at(&["deviceName"]),
                disk_image_size: s.text_at(&["diskImageSize"]).and_then(|v| v.parse().ok()),
                format: s.text_at(&["format"]),
                snapshot_id: s.text_at(&["snapshotId"]),
                status: s.text_at(&["status"]),
                s3_bucket: s.text_at(&["userBucket", "s3Bucket"]),
                s3_key: s.text_at(&["userBucket", "s3Key"]),
            })
            .collect(),
        tags: tags(n),
    }
}

/// One `imagesSet/item`.
pub fn parse_image(n: &Node) -> Ec2Image {
    Ec2Image {
        image_id: n.string_at(&["imageId"]),
        name: n.string_at(&["name"]),
        description: n.string_at(&["description"]),
        // The model's locationName for State is `imageState`.
        state: n
            .text_at(&["imageState"])
            .or_else(|| n.text_at(&["state"]))
            .unwrap_or_default(),
        architecture: n.string_at(&["architecture"]),
        boot_mode: n.text_at(&["bootMode"]),
        platform: n.text_at(&["platform"]),
        platform_details: n.text_at(&["platformDetails"]),
        root_device_name: n.text_at(&["rootDeviceName"]),
        imds_support: n.text_at(&["imdsSupport"]),
        block_devices: n
            .items_at(&["blockDeviceMapping"])
            .into_iter()
            .map(|b| BlockDevice {
                device_name: b.string_at(&["deviceName"]),
                volume_size_gib: b
                    .text_at(&["ebs", "volumeSize"])
                    .and_then(|v| v.parse().ok()),
                snapshot_id: b.text_at(&["ebs", "snapshotId"]),
            })
            .collect(),
        product_codes: n
            .items_at(&["productCodes"])
            .into_iter()
            .filter_map(|p| p.text_at(&["productCode"]))
            .collect(),
        tags: tags(n),
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// EC2 in one region with one set of credentials; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ec2Client {
    query: QueryClient,
    region: String,
}

impl Ec2Client {
    /// A client for `region`; `endpoint` `None` means [`query::ec2_endpoint`].
    pub fn new(
        region: impl Into<String>,
        endpoint: Option<String>,
        creds: Arc<dyn CredentialsProvider>,
    ) -> Self {
        let region = region.into();
        let endpoint = endpoint
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| query::ec2_endpoint(&region));
        Self {
            query: QueryClient::new(EC2, endpoint, region.clone(), creds),
            region,
        }
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: crate::http::RetryPolicy) -> Self {
        self.query = self.query.with_retry(retry);
        self
    }

    pub fn endpoint(&self) -> &str {
        self.query.endpoint()
    }
}

/// Calls `call(page(token))` from no token on, following `nextToken` until a page has none
/// (or repeats the last one), and collects the `set` items of every page.
pub(crate) async fn paginate<T, C, Fut>(
    mut call: C,
    page: impl Fn(Option<&str>) -> Params,
    set: &str,
    parse: fn(&Node) -> T,
) -> Result<Vec<T>, AwsQueryError>
where
    C: FnMut(Params) -> Fut,
    Fut: std::future::Future<Output = Result<Node, AwsQueryError>>,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let root = call(page(token.as_deref())).await?;
        out.extend(root.items_at(&[set]).into_iter().map(parse));
        match root.text_at(&["nextToken"]) {
            Some(t) if Some(&t) != token.as_ref() => token = Some(t),
            _ => return Ok(out),
        }
    }
    tracing::warn!(set, pages = MAX_PAGES, "stopped following nextToken");
    Ok(out)
}

#[async_trait]
impl Ec2Api for Ec2Client {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_images(&self, ids: &[String]) -> Result<Vec<Ec2Image>, AwsQueryError> {
        match self
            .query
            .call(&describe_images_params(ids, &[], &[], true))
            .await
        {
            Ok(root) => Ok(root
                .items_at(&["imagesSet"])
                .into_iter()
                .map(parse_image)
                .collect()),
            Err(e) if e.is_code("InvalidAMIID.NotFound") => {
                if ids.len() > 1 {
                    // One unknown id fails the whole call: ask for each so the known ones are
                    // still reported.
                    let mut out = Vec::new();
                    for id in ids {
                        out.extend(self.describe_images(std::slice::from_ref(id)).await?);
                    }
                    return Ok(out);
                }
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    async fn export_image(
        &self,
        input: &ExportImageInput,
    ) -> Result<ExportImageTask, AwsQueryError> {
        let root = self.query.call(&export_image_params(input)).await?;
        let mut task = parse_export_task(&root);
        // The answer repeats the request; fill what a terse answer leaves out.
        if task.image_id.is_empty() {
            task.image_id = input.image_id.clone();
        }
        if task.s3_bucket.is_empty() {
            task.s3_bucket = input.s3_bucket.clone();
        }
        if task.s3_prefix.is_empty() {
            task.s3_prefix = input.s3_prefix.clone().unwrap_or_default();
        }
        if task.task_id.is_empty() {
            return Err(AwsQueryError::InvalidResponse {
                service: "ec2",
                action: "ExportImage".into(),
                endpoint: self.endpoint().to_string(),
                status: 200,
                reason: "the answer has no exportImageTaskId".into(),
            });
        }
        Ok(task)
    }

    async fn describe_export_image_tasks(
        &self,
        ids: &[String],
    ) -> Result<Vec<ExportImageTask>, AwsQueryError> {
        let max = ids.is_empty().then_some(500);
        paginate(
            |p| async move { self.query.call(&p).await },
            |t| describe_export_image_tasks_params(ids, &[], max, t),
            "exportImageTaskSet",
            parse_export_task,
        )
        .await
    }

    async fn cancel_export_task(&self, task_id: &str) -> Result<(), AwsQueryError> {
        self.query.call(&cancel_export_task_params(task_id)).await?;
        Ok(())
    }

    async fn import_image(
        &self,
        input: &ImportImageInput,
    ) -> Result<ImportImageTask, AwsQueryError> {
        let root = self.query.call(&import_image_params(input)).await?;
        let task = parse_import_task(&root);
        if task.task_id.is_empty() {
            return Err(AwsQueryError::InvalidResponse {
                service: "ec2",
                action: "ImportImage".into(),
                endpoint: self.endpoint().to_string(),
                status: 200,
                reason: "the answer has no importTaskId".into(),
            });
        }
        Ok(task)
    }

    async fn describe_import_image_tasks(
        &self,
        ids: &[String],
    ) -> Result<Vec<ImportImageTask>, AwsQueryError> {
        let max = ids.is_empty().then_some(500);
        paginate(
            |p| async move { self.query.call(&p).await },
            |t| describe_import_image_tasks_params(ids, &[], max, t),
            "importImageTaskSet",
            parse_import_task,
        )
        .await
    }

    async fn cancel_import_task(&self, task_id: &str, reason: &str) -> Result<(), AwsQueryError> {
        self.query
            .call(&cancel_import_task_params(task_id, reason))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "ec2/tests.rs"]
mod tests;
