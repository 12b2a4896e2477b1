//! What the ECS handlers share: IDs and timestamps, the DescribeImages / DescribeTaskAttribute
//! JSON views, and the region, role, bucket and paging checks.

use serde_json::{json, Value};

use rand::distributions::Alphanumeric;
use rand::Rng;
use std::time::SystemTime;

use crate::rpc::{ts, RpcError, RpcRequest};
use crate::world::cloud::{Cloud, CloudState, Image, Phase, Task};
use crate::world::oss::BucketPlace;
use crate::world::World;

pub(crate) fn random_id(prefix: &str) -> String {
    let s: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{prefix}{s}")
}

pub(crate) fn ts_minutes(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%MZ")
        .to_string()
}

pub(crate) fn image_json(img: &Image, region: &str) -> Value {
    let mappings: Vec<Value> = img
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (bucket, object) = d.import.clone().unwrap_or_default();
            json!({
                "Device": format!("/dev/xvd{}", (b'a' + i as u8) as char),
                "Size": d.gib.to_string(),
                "SnapshotId": format!("s-{}", &img.id.trim_start_matches("m-")),
                "Type": if i == 0 { "system" } else { "data" },
                "Format": d.format,
                "ImportOSSBucket": bucket,
                "ImportOSSObject": object,
                "Progress": format!("{}%", img.progress),
                "RemainTime": 0,
                "Encrypted": "false",
            })
        })
        .collect();
    let tags: Vec<Value> = img
        .tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    json!({
        "ImageId": img.id,
        "ImageName": img.name,
        "Description": img.description,
        "Status": img.status,
        "Progress": format!("{}%", img.progress),
        "Size": img.size_gib,
        "CreationTime": ts(img.created),
        "Architecture": img.architecture,
        "OSType": img.os_type,
        "Platform": img.platform,
        "OSName": format!("{} {}", img.platform, img.architecture),
        "OSNameEn": format!("{} {}", img.platform, img.architecture),
        "BootMode": img.boot_mode,
        "ImageOwnerAlias": "self",
        "ImageOwnerId": img.account,
        "IsCopied": false,
        "IsSelfShared": "False",
        "IsPublic": false,
        "IsSupportCloudinit": true,
        "IsSupportIoOptimized": true,
        "LicenseType": "Auto",
        "Usage": "none",
        "ResourceGroupId": "",
        "ImageFamily": "",
        "RegionId": region,
        "Features": {"NvmeSupport": img.nvme, "ImdsSupport": img.imds_support},
        "Tags": {"Tag": tags},
        "DiskDeviceMappings": {"DiskDeviceMapping": mappings},
    })
}

pub(crate) fn task_json(t: &Task, region: &str) -> Value {
    let (status, pct) = t.view();
    let ops: Vec<Value> = t
        .items
        .iter()
        .map(|items| {
            let (op_status, code, msg) = match (&t.phase, &t.error) {
                (Phase::Finished, _) => ("Success", String::new(), String::new()),
                (_, Some((c, m))) => ("Failed", c.clone(), m.clone()),
                (Phase::Cancelled, None) => (
                    "Failed",
                    "TaskCancelled".into(),
                    "The task was cancelled.".into(),
                ),
                _ => ("Processing", String::new(), String::new()),
            };
            let related: Vec<Value> = items
                .iter()
                .map(|(n, v)| json!({"Name": n, "Value": v}))
                .collect();
            json!({
                "OperationStatus": op_status,
                "ErrorCode": code,
                "ErrorMsg": msg,
                "RelatedItemSet": {"RelatedItem": related},
            })
        })
        .collect();
    let total = t.items.len();
    let (ok, failed) = match t.phase {
        Phase::Finished => (total, 0),
        Phase::Failed | Phase::Cancelled => (0, total),
        Phase::Running => (0, 0),
    };
    json!({
        "RegionId": region,
        "TaskId": t.id,
        "TaskAction": t.action,
        "TaskStatus": status,
        "TaskProcess": format!("{pct}%"),
        "SupportCancel": if t.phase == Phase::Running { "true" } else { "false" },
        "CreationTime": ts_minutes(t.created),
        "FinishedTime": t.finished.map(ts_minutes).unwrap_or_default(),
        "TotalCount": total,
        "SuccessCount": ok,
        "FailedCount": failed,
        "OperationProgressSet": {"OperationProgress": ops},
    })
}

pub(crate) fn check_region(cloud: &Cloud, req: &RpcRequest) -> Result<(), RpcError> {
    let r = req.required("RegionId")?;
    if r != cloud.region {
        return Err(RpcError::new(
            400,
            "InvalidRegionId.NotFound",
            format!(
                "The specified RegionId {r:?} does not exist (this simulator serves {}).",
                cloud.region
            ),
        ));
    }
    Ok(())
}

pub(crate) fn no_role(role: &str) -> RpcError {
    RpcError::new(
        403,
        "NoSetRoletoECSServiceAcount",
        format!("The specified service account (role {role}) has not been authorized by RAM. Create the role and attach its system policy first."),
    )
}

pub(crate) fn check_role(
    st: &CloudState,
    now: SystemTime,
    account: &str,
    req: &RpcRequest,
    default_role: &str,
    policy: &str,
) -> Result<(), RpcError> {
    let role = req
        .get("RoleName")
        .filter(|r| !r.is_empty())
        .unwrap_or(default_role);
    match st.roles.get(account, role) {
        Some(r) if !role.eq_ignore_ascii_case(default_role) || r.policy_effective(policy, now) => {
            Ok(())
        }
        _ => Err(no_role(role)),
    }
}

pub(crate) fn check_bucket(world: &World, account: &str, bucket: &str) -> Result<(), RpcError> {
    match world.oss.bucket_place(bucket) {
        BucketPlace::Local(owner) if owner == account => Ok(()),
        BucketPlace::Local(_) => Err(RpcError::new(
            403,
            "InvalidOSS.NotAuthorized",
            format!("The ECS service role is not authorized to access OSS bucket {bucket}."),
        )),
        BucketPlace::Remote(r) => Err(RpcError::new(
            400,
            "InvalidOSSBucket.NotFound",
            format!(
                "The specified OSS bucket {bucket} does not exist in this region (it is in {r})."
            ),
        )),
        BucketPlace::Missing => Err(RpcError::new(
            400,
            "InvalidOSSBucket.NotFound",
            format!("The specified OSS bucket {bucket} does not exist in this region."),
        )),
    }
}

pub(crate) fn page(req: &RpcRequest, max: usize) -> Result<(usize, usize), RpcError> {
    let num = match req.get("PageNumber").filter(|v| !v.is_empty()) {
        None => 1,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| RpcError::invalid("PageNumber", v))?,
    };
    let size = match req.get("PageSize").filter(|v| !v.is_empty()) {
        None => 10,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| RpcError::invalid("PageSize", v))?,
    };
    Ok((num, size))
}

pub(crate) fn task_not_found() -> RpcError {
    RpcError::new(
        400,
        "InvalidTaskId.NotFound",
        "The specified \"TaskId\" is not found.",
    )
}
