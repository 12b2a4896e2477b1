//! Simulated ECS image APIs (ecs-api.md §3–§5): custom images with synthetic disks,
//! ExportImage writing a real `.raw.tar.gz` into the simulated OSS, ImportImage validating and
//! checksumming the object, and the task state machine behind DescribeTaskAttribute.
//!
//! Tasks progress over simulated time: `Waiting` for the first tenth of the configured task
//! duration, then `Processing` with a rising `TaskProcess`, then `Finished` / `Failed` once the
//! duration has passed *and* the work (compressing or checksumming the disk) is done.
//!
//! Choices where the reference is UNCONFIRMED: a cancelled task ends as `Cancelled` (its import
//! image as `CreateFailed`); `ImageFormat=vhd` is honoured in the regions the 2025 doc lists
//! (an uncompressed fixed VHD `<prefix>_<imageId>_system.vhd`), QCOW2 / VMDK / VDI and VHD
//! elsewhere are `InvalidImageFormat.RegionNotSupported`; a VHD import's disk is the object minus its
//! footer, QCOW2/VMDK disks are kept as uploaded; an import's failure reason is shown in
//! DescribeTaskAttribute's `OperationProgress` (`ErrorCode` / `ErrorMsg`) — DescribeImages only
//! says `CreateFailed`, as the real API; a bucket of another account is
//! `403 InvalidOSS.NotAuthorized`; an ImportImage task's RelatedItemSet holds the `ImageId`.

mod common;
mod export;
mod import;

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::rpc::{Caller, RpcError, RpcRequest};
use crate::world::cloud::{Cloud, Phase};
use crate::world::World;
use common::{check_region, image_json, page, task_json, task_not_found, ts_minutes};
use export::export_image;
use import::import_image;

/// ECS actions served.
pub const ACTIONS: &[&str] = &[
    "DescribeRegions",
    "DescribeImages",
    "ExportImage",
    "ImportImage",
    "DescribeTaskAttribute",
    "DescribeTasks",
    "CancelTask",
];

/// Serves one ECS action.
pub(crate) fn handle(
    world: &Arc<World>,
    caller: &Caller,
    req: &RpcRequest,
    action: &str,
) -> Result<Value, RpcError> {
    let cloud = &world.cloud;
    if action == "DescribeRegions" {
        return Ok(json!({"Regions": {"Region": [{
            "RegionId": cloud.region,
            "LocalName": cloud.region,
            "RegionEndpoint": format!("ecs.{}.aliyuncs.com", cloud.region),
            "Status": "available",
        }]}}));
    }
    check_region(cloud, req)?;
    match action {
        "DescribeImages" => describe_images(world, caller, req),
        "ExportImage" => export_image(world, caller, req),
        "ImportImage" => import_image(world, caller, req),
        "DescribeTaskAttribute" => {
            let id = req.required("TaskId")?;
            let mut st = cloud.lock();
            st.refresh();
            match st.tasks.get(id) {
                Some(t) if t.account == caller.account => Ok(task_json(t, &cloud.region)),
                _ => Err(task_not_found()),
            }
        }
        "DescribeTasks" => describe_tasks(world, caller, req),
        "CancelTask" => {
            let id = req.required("TaskId")?;
            let mut st = cloud.lock();
            st.refresh();
            let t = match st.tasks.get_mut(id) {
                Some(t) if t.account == caller.account => t,
                _ => return Err(task_not_found()),
            };
            if t.phase != Phase::Running {
                return Err(RpcError::new(
                    403,
                    "InvalidTaskId.IncorrectTaskStatus",
                    "The current status of the task does not support this operation.",
                ));
            }
            t.phase = Phase::Cancelled;
            t.finished = Some(SystemTime::now());
            let (action, image) = (t.action, t.image_id.clone());
            if action == "ImportImage" {
                if let Some(img) = st.images.get_mut(&image) {
                    img.status = "CreateFailed";
                }
            }
            Ok(json!({}))
        }
        _ => Err(RpcError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

const IMAGE_STATUSES: &[&str] = &[
    "Creating",
    "Waiting",
    "Available",
    "UnAvailable",
    "CreateFailed",
    "Deprecated",
];

fn describe_images(
    world: &Arc<World>,
    caller: &Caller,
    req: &RpcRequest,
) -> Result<Value, RpcError> {
    let statuses: Vec<String> = match req.get("Status").filter(|s| !s.is_empty()) {
        None => vec!["Available".into()],
        Some("ALL") => IMAGE_STATUSES.iter().map(|s| s.to_string()).collect(),
        Some(list) => {
            let v: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            if let Some(bad) = v.iter().find(|s| !IMAGE_STATUSES.contains(&s.as_str())) {
                return Err(RpcError::invalid("Status", bad));
            }
            v
        }
    };
    let ids: Option<Vec<&str>> = req
        .get("ImageId")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::trim).collect());
    let name = req.get("ImageName").filter(|s| !s.is_empty());
    let owner_ok = match req.get("ImageOwnerAlias").filter(|s| !s.is_empty()) {
        None | Some("self") => true,
        Some("system" | "others" | "marketplace") => false,
        Some(v) => return Err(RpcError::invalid("ImageOwnerAlias", v)),
    };
    let (num, size) = page(req, 100)?;
    let cloud = &world.cloud;
    let mut st = cloud.lock();
    st.refresh();
    let matching: Vec<Value> = st
        .images
        .values()
        .filter(|i| owner_ok && i.account == caller.account)
        .filter(|i| statuses.iter().any(|s| s == i.status))
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id.as_str())))
        .filter(|i| name.is_none_or(|n| i.name.contains(n)))
        .map(|i| image_json(i, &cloud.region))
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip((num - 1) * size)
        .take(size)
        .collect();
    Ok(json!({
        "RegionId": cloud.region,
        "PageNumber": num,
        "PageSize": size,
        "TotalCount": total,
        "Images": {"Image": page},
    }))
}

fn describe_tasks(
    world: &Arc<World>,
    caller: &Caller,
    req: &RpcRequest,
) -> Result<Value, RpcError> {
    let ids: Option<Vec<&str>> = req
        .get("TaskIds")
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(str::trim).collect());
    let action = req.get("TaskAction").filter(|s| !s.is_empty());
    let status = req
        .get("TaskStatus")
        .filter(|s| matches!(*s, "Finished" | "Processing" | "Failed"));
    let (num, size) = page(req, 100)?;
    let cloud = &world.cloud;
    let mut st = cloud.lock();
    st.refresh();
    let matching: Vec<Value> = st
        .tasks
        .values()
        .filter(|t| t.account == caller.account)
        .filter(|t| ids.as_ref().is_none_or(|ids| ids.contains(&t.id.as_str())))
        .filter(|t| action.is_none_or(|a| a == t.action))
        .filter(|t| status.is_none_or(|s| s == t.view().0))
        .map(|t| {
            json!({
                "TaskId": t.id,
                "TaskAction": t.action,
                "TaskStatus": t.view().0,
                "SupportCancel": if t.phase == Phase::Running { "true" } else { "false" },
                "CreationTime": ts_minutes(t.created),
                "FinishedTime": t.finished.map(ts_minutes).unwrap_or_default(),
                "ResourceId": t.image_id,
            })
        })
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip((num - 1) * size)
        .take(size)
        .collect();
    Ok(json!({
        "RegionId": cloud.region,
        "PageNumber": num,
        "PageSize": size,
        "TotalCount": total,
        "TaskSet": {"Task": page},
    }))
}

/// The DescribeImages entry of an image, plus its task's failure (`FailureCode` /
/// `FailureMessage`) when it failed.
pub(crate) fn image_view(cloud: &Cloud, id: &str) -> Option<Value> {
    let mut st = cloud.lock();
    st.refresh();
    let i = st.images.get(id)?;
    let mut v = image_json(i, &cloud.region);
    if let Some((c, m)) = st
        .tasks
        .values()
        .find(|t| t.image_id == id && t.action == "ImportImage")
        .and_then(|t| t.error.clone())
    {
        v["FailureCode"] = c.into();
        v["FailureMessage"] = m.into();
    }
    Some(v)
}
