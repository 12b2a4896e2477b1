//! ImportImage, DescribeImportImageTasks, CancelImportTask.
//!
//! ImportImage checks its parameters, the bucket, the service role (`s3:GetBucketLocation` on
//! the bucket, `s3:GetObject` on the key) and that the object exists, then starts a task and a
//! worker that reads the object once through the simulated S3 store. Format problems are not
//! refused up front: as on AWS, the task walks into `validating` and ends `deleted` with a
//! `ClientError: …` StatusMessage. What the worker accepts:
//! * `raw`: any non-zero multiple of 512 bytes; the disk is the object;
//! * `vhd`: a fixed VHD (valid `conectix` footer, type 2, file = disk + 512); the disk is the
//!   file without its footer (its CRC-64 read in a second pass);
//! * anything else (`vmdk`, `ova`, `vhdx`, dynamic/differencing VHD): refused by the task,
//!   since the simulator converts nothing.
//!
//! One disk per image (`DiskContainer.1`): more is `InvalidParameter` (the simulator's limit);
//! `Url` must be `s3://bucket/key` (presigned https URLs are refused).

use std::sync::Arc;

use super::{
    check_bucket, check_role, dry_run_passed, filters, fingerprint, flag, invalid_parameter,
    invalid_value, list, matches, page, required, tag_set, tags, token_mismatch, wrap,
};
use crate::aws::{QueryError, QueryRequest};
use crate::config::Ec2TaskKind;
use crate::diskfmt::{scan, vhd_footer};
use crate::sigv4::Verified;
use crate::store::Content;
use crate::world::ec2::{AmiDisk, ImportSource, ImportTask, TaskState};
use crate::world::World;
use crate::xml::el;

fn task_xml(t: &ImportTask) -> String {
    let mut x = el("importTaskId", &t.id);
    x += &el("architecture", &t.architecture);
    if !t.description.is_empty() {
        x += &el("description", &t.description);
    }
    x += &el("licenseType", &t.license_type);
    x += &el("platform", &t.platform);
    x += &el("bootMode", &t.boot_mode);
    x += &el("encrypted", if t.encrypted { "true" } else { "false" });
    x += &el("progress", &t.pace.progress.to_string());
    x += &el("status", t.pace.state.as_str());
    if !t.pace.message.is_empty() {
        x += &el("statusMessage", &t.pace.message);
    }
    if let Some(id) = &t.image_id {
        x += &el("imageId", id);
    }
    let s = &t.source;
    let shown_size = if t.pace.state == TaskState::Active && t.pace.message == "pending" {
        0
    } else {
        s.size
    };
    let mut d = String::from("<item>");
    if !s.description.is_empty() {
        d += &el("description", &s.description);
    }
    d += &el("deviceName", &s.device_name);
    d += &el("diskImageSize", &format!("{shown_size}.0"));
    d += &el("format", &s.format.to_ascii_uppercase());
    if let Some(snap) = &t.snapshot_id {
        d += &el("snapshotId", snap);
    }
    d += &el("status", t.pace.state.as_str());
    if let Some(u) = &s.url {
        d += &el("url", u);
    }
    d += &format!(
        "<userBucket>{}{}</userBucket></item>",
        el("s3Bucket", &s.bucket),
        el("s3Key", &s.key)
    );
    x += &format!("<snapshotDetailSet>{d}</snapshotDetailSet>");
    x + &tag_set(&t.tags)
}

fn not_found(id: &str) -> QueryError {
    QueryError::sender(
        400,
        "InvalidConversionTaskId.NotFound",
        format!("The task ID '{id}' does not exist"),
    )
}

/// `(bucket, key, url)` of `DiskContainer.1`.
fn source_location(req: &QueryRequest) -> Result<(String, String, Option<String>), QueryError> {
    if req.p("DiskContainer.1.SnapshotId").is_some() {
        return Err(invalid_parameter(
            "Importing from an EBS snapshot is not served by this simulator; give UserBucket or an s3:// Url",
        ));
    }
    if let Some(url) = req.p("DiskContainer.1.Url").filter(|u| !u.is_empty()) {
        let Some((b, k)) = url
            .strip_prefix("s3://")
            .and_then(|r| r.split_once('/'))
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return Err(invalid_parameter(format!(
                "Invalid S3 source location: {url} (the simulator reads s3://BUCKET/KEY URLs)"
            )));
        };
        return Ok((b.to_string(), k.to_string(), Some(url.to_string())));
    }
    let b = required(req, "DiskContainer.1.UserBucket.S3Bucket")?;
    let k = required(req, "DiskContainer.1.UserBucket.S3Key")?;
    Ok((b.to_string(), k.to_string(), None))
}

fn one_of<'a>(
    req: &'a QueryRequest,
    name: &str,
    allowed: &[&str],
    default: &'a str,
) -> Result<&'a str, QueryError> {
    match req.p(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) if allowed.contains(&v) => Ok(v),
        Some(v) => Err(invalid_value(format!(
            "Value ({v}) for parameter {name} is invalid. Expected one of {allowed:?}."
        ))),
    }
}

pub(crate) fn import_image(
    w: &Arc<World>,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let account = auth.account.as_str();
    if req.p("DiskContainer.2.Format").is_some()
        || req.p("DiskContainer.2.Url").is_some()
        || req.p("DiskContainer.2.UserBucket.S3Bucket").is_some()
    {
        return Err(invalid_parameter(
            "The simulator imports one disk per image (DiskContainer.1 only)",
        ));
    }
    let (bucket, key, url) = source_location(req)?;
    let format = match req.p("DiskContainer.1.Format").filter(|f| !f.is_empty()) {
        Some(f) => f.to_string(),
        None => key
            .rsplit_once('.')
            .map(|(_, e)| e.to_string())
            .unwrap_or_default(),
    };
    if !matches!(
        format.to_ascii_uppercase().as_str(),
        "OVA" | "VHD" | "VHDX" | "VMDK" | "RAW"
    ) {
        return Err(invalid_parameter(format!(
            "Parameter disk-image-size=0 has an invalid format ({format:?}); use OVA, VHD, VHDX, VMDK or RAW"
        )));
    }
    let architecture = one_of(req, "Architecture", &["i386", "x86_64", "arm64"], "x86_64")?;
    let boot_default = if architecture == "arm64" {
        "uefi"
    } else {
        "legacy-bios"
    };
    let boot_mode = one_of(req, "BootMode", &["legacy-bios", "uefi"], boot_default)?;
    let platform = match req.p("Platform").filter(|v| !v.is_empty()) {
        None => "Linux",
        Some(p) if p.eq_ignore_ascii_case("linux") => "Linux",
        Some(p) if p.eq_ignore_ascii_case("windows") => "Windows",
        Some(p) => {
            return Err(invalid_value(format!(
                "Value ({p}) for parameter Platform is invalid. Expected: 'Windows', 'Linux'."
            )))
        }
    };
    let license_default = if platform == "Windows" { "AWS" } else { "BYOL" };
    let license_type = one_of(req, "LicenseType", &["AWS", "BYOL"], license_default)?;
    let encrypted = flag(req, "Encrypted")?;
    if req.p("KmsKeyId").is_some() && !encrypted {
        return Err(QueryError::sender(
            400,
            "InvalidParameterCombination",
            "KmsKeyId requires Encrypted=true",
        ));
    }
    let role = req
        .p("RoleName")
        .filter(|r| !r.is_empty())
        .unwrap_or("vmimport");
    let description = req.p("Description").unwrap_or_default();
    let tags = tags(req, "import-image-task")?;
    let dry_run = flag(req, "DryRun")?;
    let token = req.p("ClientToken").filter(|t| !t.is_empty());
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    if let Some(tok) = token {
        let k = (account.to_string(), "ImportImage", tok.to_string());
        if let Some((fp, id)) = st.tokens.get(&k) {
            if *fp != fingerprint(req) {
                return Err(token_mismatch(tok));
            }
            let t = st.imports.get(id).expect("a token names an existing task");
            return Ok(wrap("ImportImage", &task_xml(t), &req.request_id));
        }
    }
    check_bucket(w, account, &bucket)?;
    check_role(
        w,
        &st,
        account,
        role,
        &[
            ("s3:GetBucketLocation", format!("arn:aws:s3:::{bucket}")),
            ("s3:GetObject", format!("arn:aws:s3:::{bucket}/{key}")),
        ],
    )?;
    let Some((size, _, _, content)) = w.oss.object_full(&bucket, &key) else {
        return Err(invalid_parameter(format!(
            "Invalid S3 source location: s3://{bucket}/{key} does not exist"
        )));
    };
    if st.active(account, Ec2TaskKind::Import) >= w.ec2.task_limit {
        return Err(QueryError::sender(
            400,
            "ResourceCountExceeded",
            format!(
                "You have reached the limit of {} active import image tasks in this Region; wait for one to finish",
                w.ec2.task_limit
            ),
        ));
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    let source = ImportSource {
        format: format.clone(),
        bucket: bucket.clone(),
        key: key.clone(),
        url,
        description: req
            .p("DiskContainer.1.Description")
            .unwrap_or_default()
            .to_string(),
        device_name: "/dev/sda1".into(),
        size,
    };
    let task = w.ec2.new_import(
        account,
        description,
        architecture,
        platform,
        boot_mode,
        license_type,
        encrypted,
        tags,
        source,
    );
    let id = task.id.clone();
    let body = task_xml(&task);
    if let Some(tok) = token {
        st.tokens.insert(
            (account.to_string(), "ImportImage", tok.to_string()),
            (fingerprint(req), id.clone()),
        );
    }
    st.imports.insert(id.clone(), task);
    drop(st);
    tracing::info!(task = %id, bucket = %bucket, key = %key, "EC2 import started");
    let world = w.clone();
    tokio::spawn(async move {
        let outcome = inspect(&format, size, content).await;
        if let Err(m) = &outcome {
            tracing::info!(task = %id, reason = %m, "EC2 import will fail");
        }
        if let Some(t) = world.ec2.lock().imports.get_mut(&id) {
            t.outcome = Some(outcome);
        }
    });
    Ok(wrap("ImportImage", &body, &req.request_id))
}

/// Reads the object: the guest-visible disk and its CRC-64s, or the task's `ClientError`.
async fn inspect(format: &str, size: u64, content: Content) -> Result<AmiDisk, String> {
    let read_err = |e: std::io::Error| format!("ClientError: Unable to read the S3 object: {e}");
    match format.to_ascii_lowercase().as_str() {
        "raw" => {
            if size == 0 || !size.is_multiple_of(512) {
                return Err(format!(
                    "ClientError: Disk validation failed [Unsupported RAW disk size {size}: it must be a non-zero multiple of 512 bytes]"
                ));
            }
            let s = scan(&content, size).await.map_err(read_err)?;
            Ok(AmiDisk {
                size,
                crc: s.crc,
                nvme: Some(s.nvme),
                content,
            })
        }
        "vhd" => {
            let s = scan(&content, size).await.map_err(read_err)?;
            let Some((current, kind)) = vhd_footer(&s.tail) else {
                return Err("ClientError: Disk validation failed [Unsupported VHD: no valid footer]".into());
            };
            if kind != 2 {
                return Err(format!(
                    "ClientError: Unsupported VHD disk type {kind}: the simulator imports fixed VHDs only"
                ));
            }
            if current + 512 != size || !current.is_multiple_of(512) {
                return Err("ClientError: Footers not identical".into());
            }
            let disk = scan(&content, current).await.map_err(read_err)?;
            Ok(AmiDisk {
                size: current,
                crc: disk.crc,
                nvme: Some(disk.nvme),
                content,
            })
        }
        other => Err(format!(
            "ClientError: Unsupported file format {}: the simulator imports RAW and fixed VHD disks only",
            other.to_ascii_uppercase()
        )),
    }
}

pub(crate) fn describe_import_image_tasks(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let ids = list(req, "ImportTaskId");
    // DescribeImportImageTasks spells it `Filters.N` (the others: `Filter.N`).
    let filters = filters(req, "Filters");
    let dry_run = flag(req, "DryRun")?;
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    let mine = |t: &&ImportTask| t.account == auth.account;
    if let Some(id) = ids
        .iter()
        .find(|id| st.imports.get(*id).filter(mine).is_none())
    {
        return Err(not_found(id));
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    let mut picked = Vec::new();
    for t in st.imports.values().filter(mine) {
        if !ids.is_empty() && !ids.contains(&t.id) {
            continue;
        }
        let field = |n: &str| (n == "task-state").then(|| t.pace.state.as_str().to_string());
        if matches(&filters, &field)? {
            picked.push(t);
        }
    }
    let (picked, next) = page(picked, req, (1, 500))?;
    let items: String = picked
        .iter()
        .map(|t| format!("<item>{}</item>", task_xml(t)))
        .collect();
    Ok(wrap(
        "DescribeImportImageTasks",
        &format!("<importImageTaskSet>{items}</importImageTaskSet>{next}"),
        &req.request_id,
    ))
}

pub(crate) fn cancel_import_task(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let id = required(req, "ImportTaskId")?;
    let reason = req.p("CancelReason").filter(|r| !r.is_empty());
    let dry_run = flag(req, "DryRun")?;
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    let Some(t) = st.imports.get_mut(id).filter(|t| t.account == auth.account) else {
        return Err(not_found(id));
    };
    let previous = t.pace.state;
    if previous != TaskState::Active {
        return Err(QueryError::sender(
            400,
            "IncorrectState",
            format!(
                "Import task {id} is {} and can no longer be cancelled",
                previous.as_str()
            ),
        ));
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    t.pace
        .cancel(reason.unwrap_or("Cancelled by the user").to_string());
    tracing::info!(task = %id, "EC2 import cancelled");
    let inner = el("importTaskId", id)
        + &el("previousState", previous.as_str())
        + &el("state", t.pace.state.as_str());
    Ok(wrap("CancelImportTask", &inner, &req.request_id))
}
