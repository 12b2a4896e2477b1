//! ExportImage, DescribeExportImageTasks, CancelExportTask.
//!
//! An export checks the AMI (the caller's, available, not already exporting), the bucket (in
//! this region, the caller's), the service role (trusts VM Import/Export and may
//! `s3:GetBucketLocation` the bucket and `s3:PutObject` the key) and the per-account limit of
//! active export tasks, then walks `validating → converting → updating → completed` and writes
//! `<S3Prefix><ExportImageTaskId>.raw` (see `world::ec2`).
//!
//! Choice (documented in `ossrelay sim --help`): only `RAW` is produced; `VHD` and `VMDK` are
//! refused with `InvalidParameter` naming the workaround, rather than writing a file no test
//! could check byte for byte. A second export of an AMI while one is active, and cancelling a
//! task that is no longer active, are `IncorrectState` (AWS's codes here are UNCONFIRMED).

use super::{
    check_bucket, check_role, dry_run_passed, filters, fingerprint, flag, invalid_parameter,
    invalid_value, list, matches, page, required, tag_set, tags, token_mismatch, wrap,
};
use crate::aws::{QueryError, QueryRequest};
use crate::config::{valid_ami_id, Ec2TaskKind};
use crate::sigv4::Verified;
use crate::world::ec2::{ExportTask, TaskState};
use crate::world::World;
use crate::xml::el;

/// The members of an export task; `full` adds those only ExportImage's answer has.
fn task_xml(t: &ExportTask, full: bool) -> String {
    let mut x = el("exportImageTaskId", &t.id);
    x += &el("imageId", &t.image_id);
    if full {
        x += &el("diskImageFormat", &t.format);
        x += &el("roleName", &t.role_name);
    }
    if !t.description.is_empty() {
        x += &el("description", &t.description);
    }
    x += &el("progress", &t.pace.progress.to_string());
    x += &format!(
        "<s3ExportLocation>{}{}</s3ExportLocation>",
        el("s3Bucket", &t.bucket),
        el("s3Prefix", &t.prefix)
    );
    x += &el("status", t.pace.state.as_str());
    if !t.pace.message.is_empty() {
        x += &el("statusMessage", &t.pace.message);
    }
    x + &tag_set(&t.tags)
}

fn not_found(id: &str) -> QueryError {
    QueryError::sender(
        400,
        "InvalidExportTaskID.NotFound",
        format!("The export task ID '{id}' does not exist"),
    )
}

pub(crate) fn export_image(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let account = auth.account.as_str();
    let image_id = required(req, "ImageId")?;
    if !valid_ami_id(image_id) {
        return Err(QueryError::sender(
            400,
            "InvalidAMIID.Malformed",
            format!("Invalid id: \"{image_id}\" (expecting \"ami-...\")"),
        ));
    }
    let format = required(req, "DiskImageFormat")?.to_ascii_uppercase();
    match format.as_str() {
        "RAW" => {}
        "VHD" | "VMDK" => {
            return Err(invalid_parameter(format!(
                "DiskImageFormat {format} is not produced by this simulator (it writes RAW exports only); export RAW"
            )))
        }
        _ => {
            return Err(invalid_value(format!(
                "Value ({format}) for parameter DiskImageFormat is invalid. Expected: 'VMDK', 'RAW', 'VHD'."
            )))
        }
    }
    let bucket = required(req, "S3ExportLocation.S3Bucket")?;
    let prefix = req.p("S3ExportLocation.S3Prefix").unwrap_or_default();
    let role = req
        .p("RoleName")
        .filter(|r| !r.is_empty())
        .unwrap_or("vmimport");
    let description = req.p("Description").unwrap_or_default();
    if description.chars().count() > 255 {
        return Err(invalid_value(
            "The description must be at most 255 characters.",
        ));
    }
    let tags = tags(req, "export-image-task")?;
    let dry_run = flag(req, "DryRun")?;
    let token = req.p("ClientToken").filter(|t| !t.is_empty());
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    if let Some(tok) = token {
        let k = (account.to_string(), "ExportImage", tok.to_string());
        if let Some((fp, id)) = st.tokens.get(&k) {
            if *fp != fingerprint(req) {
                return Err(token_mismatch(tok));
            }
            let t = st.exports.get(id).expect("a token names an existing task");
            return Ok(wrap("ExportImage", &task_xml(t, true), &req.request_id));
        }
    }
    let Some(img) = st.images.get(image_id).filter(|i| i.account == account) else {
        return Err(QueryError::sender(
            400,
            "InvalidAMIID.NotFound",
            format!("The image id '[{image_id}]' does not exist"),
        ));
    };
    if img.state != "available" {
        return Err(QueryError::sender(
            400,
            "InvalidAMIID.Unavailable",
            format!(
                "The image {image_id} is in state {} and cannot be exported",
                img.state
            ),
        ));
    }
    let disk = img.disk.clone();
    check_bucket(w, account, bucket)?;
    let task = w.ec2.new_export(
        account,
        image_id,
        disk,
        &format,
        bucket,
        prefix,
        role,
        description,
        tags,
    );
    check_role(
        w,
        &st,
        account,
        role,
        &[
            ("s3:GetBucketLocation", format!("arn:aws:s3:::{bucket}")),
            (
                "s3:PutObject",
                format!("arn:aws:s3:::{bucket}/{}", task.key()),
            ),
        ],
    )?;
    if let Some(t) = st
        .exports
        .values()
        .find(|t| t.image_id == image_id && t.pace.state == TaskState::Active)
    {
        return Err(QueryError::sender(
            400,
            "IncorrectState",
            format!(
                "The image {image_id} is already being exported by task {}",
                t.id
            ),
        ));
    }
    if st.active(account, Ec2TaskKind::Export) >= w.ec2.task_limit {
        return Err(QueryError::sender(
            400,
            "ResourceCountExceeded",
            format!(
                "You have reached the limit of {} active export image tasks in this Region; wait for one to finish",
                w.ec2.task_limit
            ),
        ));
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    tracing::info!(task = %task.id, image = %image_id, bucket = %bucket, "EC2 export started");
    let body = task_xml(&task, true);
    if let Some(tok) = token {
        st.tokens.insert(
            (account.to_string(), "ExportImage", tok.to_string()),
            (fingerprint(req), task.id.clone()),
        );
    }
    st.exports.insert(task.id.clone(), task);
    Ok(wrap("ExportImage", &body, &req.request_id))
}

pub(crate) fn describe_export_image_tasks(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let ids = list(req, "ExportImageTaskId");
    let filters = filters(req, "Filter");
    let dry_run = flag(req, "DryRun")?;
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    let mine = |t: &&ExportTask| t.account == auth.account;
    if let Some(id) = ids
        .iter()
        .find(|id| st.exports.get(*id).filter(mine).is_none())
    {
        return Err(not_found(id));
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    let mut picked = Vec::new();
    for t in st.exports.values().filter(mine) {
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
        .map(|t| format!("<item>{}</item>", task_xml(t, false)))
        .collect();
    Ok(wrap(
        "DescribeExportImageTasks",
        &format!("<exportImageTaskSet>{items}</exportImageTaskSet>{next}"),
        &req.request_id,
    ))
}

pub(crate) fn cancel_export_task(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let id = required(req, "ExportTaskId")?;
    let dry_run = flag(req, "DryRun")?;
    let mut st = w.ec2.lock();
    st.refresh(&w.oss);
    let Some(t) = st.exports.get_mut(id).filter(|t| t.account == auth.account) else {
        return Err(not_found(id));
    };
    if t.pace.state != TaskState::Active {
        return Err(QueryError::sender(
            400,
            "IncorrectState",
            format!(
                "Export task {id} is {} and can no longer be cancelled",
                t.pace.state.as_str()
            ),
        ));
    }
    if dry_run {
        return Err(dry_run_passed());
    }
    t.pace.cancel("Cancelled by the user".into());
    tracing::info!(task = %id, "EC2 export cancelled");
    Ok(wrap("CancelExportTask", "", &req.request_id))
}
