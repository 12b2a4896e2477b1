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

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use flate2::write::GzEncoder;
use futures::StreamExt;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use super::imds::ImdsState;
use super::ram::{self, Roles};
use super::rpc::{Caller, Nonces, RpcError, RpcRequest};
use super::server::{BucketPlace, Shared};
use super::store::{self, Content};
use super::sts::Session;
use super::synthetic::Synthetic;
use super::{RpcFault, SimConfig, SimError};
use crate::crc64;

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

const GIB: u64 = 1 << 30;

/// The ECS / RAM / STS / IMDS state of one simulator.
pub(crate) struct Cloud {
    pub(crate) region: String,
    pub(crate) task_duration: Duration,
    pub(crate) sts_ttl: Option<Duration>,
    /// RAM OIDC identity providers (AssumeRoleWithOIDC).
    pub(crate) oidc_providers: Vec<super::SimOidcProvider>,
    /// `(account, role)` served by the metadata service.
    pub(crate) imds_role: Option<(String, String)>,
    pub(crate) imds_rotation: Duration,
    pub(crate) imds_tokens: super::ImdsTokens,
    /// Delay before a policy attached through RAM is seen by ECS.
    pub(crate) role_propagation: Duration,
    pub(crate) started: SystemTime,
    pub(crate) nonces: Mutex<Nonces>,
    pub(crate) state: Mutex<CloudState>,
    scripted: Mutex<Vec<RpcFault>>,
}

#[derive(Default)]
pub(crate) struct CloudState {
    pub(crate) images: BTreeMap<String, Image>,
    pub(crate) tasks: BTreeMap<String, Task>,
    pub(crate) roles: Roles,
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) imds: ImdsState,
    client_tokens: HashMap<(String, String), (String, String)>,
}

/// One disk of an image.
#[derive(Clone)]
pub(crate) struct Disk {
    /// Bytes of the raw disk.
    size: u64,
    crc: u64,
    content: Content,
    /// Declared size in GiB.
    gib: u64,
    format: String,
    import: Option<(String, String)>,
}

/// A custom image.
pub(crate) struct Image {
    id: String,
    name: String,
    description: String,
    account: String,
    status: &'static str,
    progress: u32,
    created: SystemTime,
    architecture: String,
    os_type: String,
    platform: String,
    boot_mode: String,
    nvme: String,
    imds_support: String,
    disks: Vec<Disk>,
    size_gib: u64,
    tags: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Running,
    Finished,
    Failed,
    Cancelled,
}

/// What a finished worker produced.
type Outcome = Result<Vec<Disk>, (String, String)>;

/// An asynchronous ExportImage / ImportImage task.
pub(crate) struct Task {
    id: String,
    action: &'static str,
    account: String,
    image_id: String,
    created: SystemTime,
    started: Instant,
    duration: Duration,
    phase: Phase,
    finished: Option<SystemTime>,
    outcome: Option<Outcome>,
    /// Per disk: the RelatedItemSet pairs.
    items: Vec<Vec<(String, String)>>,
    error: Option<(String, String)>,
}

impl Task {
    /// `(status, percent)` right now.
    fn view(&self) -> (&'static str, u32) {
        match self.phase {
            Phase::Finished => ("Finished", 100),
            Phase::Failed => ("Failed", 100),
            Phase::Cancelled => ("Cancelled", 0),
            Phase::Running => {
                let f = if self.duration.is_zero() {
                    1.0
                } else {
                    self.started.elapsed().as_secs_f64() / self.duration.as_secs_f64()
                };
                if f < 0.1 {
                    ("Waiting", 0)
                } else {
                    ("Processing", ((f * 100.0) as u32).clamp(1, 99))
                }
            }
        }
    }
}

fn random_id(prefix: &str) -> String {
    let s: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{prefix}{s}")
}

fn ts(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn ts_minutes(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%MZ")
        .to_string()
}

impl Cloud {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let now = SystemTime::now();
        let known = |a: &str| cfg.accounts.iter().any(|x| x.name == a);
        let mut st = CloudState::default();
        for p in &cfg.oidc_providers {
            if !known(&p.account) {
                return Err(SimError::Config(format!(
                    "OIDC provider {} names unknown account {}",
                    p.name, p.account
                )));
            }
        }
        for r in &cfg.roles {
            if !known(&r.account) {
                return Err(SimError::Config(format!(
                    "role {} names unknown account {}",
                    r.name, r.account
                )));
            }
            st.roles.preload(&r.account, &r.name, &r.trusted, now);
        }
        for i in &cfg.images {
            if !known(&i.account) {
                return Err(SimError::Config(format!(
                    "image {} names unknown account {}",
                    i.id, i.account
                )));
            }
            if i.size == 0 || i.size % 512 != 0 {
                return Err(SimError::Config(format!(
                    "image {} size {} must be a positive multiple of 512 bytes",
                    i.id, i.size
                )));
            }
            if st.images.contains_key(&i.id) {
                return Err(SimError::Config(format!("image {} is defined twice", i.id)));
            }
            let syn = Synthetic::new(&i.id, i.size);
            let gib = i.size.div_ceil(GIB).max(1);
            st.images.insert(
                i.id.clone(),
                Image {
                    id: i.id.clone(),
                    name: if i.name.is_empty() {
                        format!("img-{}", i.id)
                    } else {
                        i.name.clone()
                    },
                    description: String::new(),
                    account: i.account.clone(),
                    status: "Available",
                    progress: 100,
                    created: now,
                    architecture: i.architecture.clone(),
                    os_type: i.os_type.clone(),
                    platform: i.platform.clone(),
                    boot_mode: i.boot_mode.clone(),
                    nvme: i.nvme.clone(),
                    imds_support: "v2".into(),
                    disks: vec![Disk {
                        size: i.size,
                        crc: syn.crc(),
                        content: Content::Synthetic(Arc::new(syn)),
                        gib,
                        format: String::new(),
                        import: None,
                    }],
                    size_gib: gib,
                    tags: Vec::new(),
                },
            );
        }
        if let Some((account, role)) = &cfg.imds_role {
            if !known(account) {
                return Err(SimError::Config(format!(
                    "metadata role {role} names unknown account {account}"
                )));
            }
            if st.roles.get(account, role).is_none() {
                st.roles.preload(account, role, "ecs", now);
            }
        }
        Ok(Self {
            region: cfg.region.clone(),
            task_duration: cfg.task_duration,
            sts_ttl: cfg.sts_ttl,
            oidc_providers: cfg.oidc_providers.clone(),
            imds_role: cfg.imds_role.clone(),
            imds_rotation: cfg.imds_rotation,
            imds_tokens: cfg.imds_tokens,
            role_propagation: cfg.role_propagation,
            started: now,
            nonces: Mutex::new(Nonces::default()),
            state: Mutex::new(st),
            scripted: Mutex::new(cfg.rpc_faults.clone()),
        })
    }

    /// Adds scripted RPC errors at runtime.
    pub(crate) fn add_rpc_fault(&self, f: RpcFault) {
        self.scripted.lock().expect("fault lock").push(f);
    }

    /// The next scripted error for `action`, if any is left.
    pub(crate) fn scripted_fault(&self, action: &str) -> Option<RpcError> {
        let mut list = self.scripted.lock().expect("fault lock");
        let f = list
            .iter_mut()
            .find(|f| f.count > 0 && (f.action == action || f.action == "*"))?;
        f.count -= 1;
        Some(RpcError::new(
            f.status,
            f.code.clone(),
            format!("Injected by the simulator for {action}."),
        ))
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, CloudState> {
        self.state.lock().expect("cloud lock")
    }
}

impl CloudState {
    /// Moves tasks whose time is up and whose work is done to their terminal state.
    fn refresh(&mut self) {
        let now = SystemTime::now();
        let mut done = Vec::new();
        for t in self.tasks.values_mut() {
            if t.phase != Phase::Running {
                continue;
            }
            if let Some(img) = self.images.get_mut(&t.image_id) {
                if t.action == "ImportImage" {
                    let (s, p) = t.view();
                    img.status = if s == "Waiting" {
                        "Waiting"
                    } else {
                        "Creating"
                    };
                    img.progress = p;
                }
            }
            if t.started.elapsed() < t.duration {
                continue;
            }
            let Some(outcome) = t.outcome.take() else {
                continue;
            };
            t.finished = Some(now);
            match outcome {
                Ok(disks) => {
                    t.phase = Phase::Finished;
                    done.push((t.image_id.clone(), t.action, Ok(disks)));
                }
                Err(e) => {
                    t.phase = Phase::Failed;
                    t.error = Some(e.clone());
                    done.push((t.image_id.clone(), t.action, Err(e)));
                }
            }
        }
        for (image_id, action, r) in done {
            if action != "ImportImage" {
                continue;
            }
            if let Some(img) = self.images.get_mut(&image_id) {
                match r {
                    Ok(disks) => {
                        img.disks = disks;
                        img.status = "Available";
                        img.progress = 100;
                    }
                    Err(_) => {
                        img.status = "CreateFailed";
                    }
                }
            }
        }
    }
}

fn image_json(img: &Image, region: &str) -> Value {
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

fn task_json(t: &Task, region: &str) -> Value {
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

fn check_region(cloud: &Cloud, req: &RpcRequest) -> Result<(), RpcError> {
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

fn no_role(role: &str) -> RpcError {
    RpcError::new(
        403,
        "NoSetRoletoECSServiceAcount",
        format!("The specified service account (role {role}) has not been authorized by RAM. Create the role and attach its system policy first."),
    )
}

fn check_role(
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

fn check_bucket(shared: &Shared, account: &str, bucket: &str) -> Result<(), RpcError> {
    match shared.bucket_place(bucket) {
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

fn page(req: &RpcRequest, max: usize) -> Result<(usize, usize), RpcError> {
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

/// Serves one ECS action.
pub(crate) fn handle(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: &RpcRequest,
    action: &str,
) -> Result<Value, RpcError> {
    let cloud = &shared.cloud;
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
        "DescribeImages" => describe_images(shared, caller, req),
        "ExportImage" => export_image(shared, caller, req),
        "ImportImage" => import_image(shared, caller, req),
        "DescribeTaskAttribute" => {
            let id = req.required("TaskId")?;
            let mut st = cloud.lock();
            st.refresh();
            match st.tasks.get(id) {
                Some(t) if t.account == caller.account => Ok(task_json(t, &cloud.region)),
                _ => Err(task_not_found()),
            }
        }
        "DescribeTasks" => describe_tasks(shared, caller, req),
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

fn task_not_found() -> RpcError {
    RpcError::new(
        400,
        "InvalidTaskId.NotFound",
        "The specified \"TaskId\" is not found.",
    )
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
    shared: &Arc<Shared>,
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
    let cloud = &shared.cloud;
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
    shared: &Arc<Shared>,
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
    let cloud = &shared.cloud;
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

// ---------------------------------------------------------------------------------------------
// ExportImage

fn export_image(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: &RpcRequest,
) -> Result<Value, RpcError> {
    let image_id = req.required("ImageId")?;
    let bucket = req.required("OSSBucket")?;
    let prefix = req.get("OSSPrefix").unwrap_or_default();
    if !prefix.is_empty()
        && (prefix.len() > 30 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return Err(RpcError::new(
            400,
            "InvalidOSSPrefix.Malformed",
            "The specified OSSPrefix is not valid: 1-30 letters and digits.",
        ));
    }
    let vhd =
        match req
            .get("ImageFormat")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") | Some("raw") => false,
            Some("vhd") if VHD_EXPORT_REGIONS.contains(&shared.cloud.region.as_str()) => true,
            Some("vhd" | "qcow2" | "vmdk" | "vdi") => return Err(RpcError::new(
                400,
                "InvalidImageFormat.RegionNotSupported",
                "The specified region does not support exporting to this image format; export RAW.",
            )),
            Some(_) => {
                return Err(RpcError::new(
                    400,
                    "InvalidImageFormat.Malformed",
                    "The specified ImageFormat is not valid.",
                ))
            }
        };
    let ext = if vhd { "vhd" } else { "raw.tar.gz" };
    let dry_run = req.flag("DryRun")?;
    let cloud = &shared.cloud;
    let mut st = cloud.lock();
    st.refresh();
    let disks = match st.images.get(image_id) {
        Some(i) if i.account == caller.account => {
            if i.status != "Available" {
                return Err(RpcError::new(
                    400,
                    "IncorrectImageStatus",
                    "The current status of the image does not support this operation.",
                ));
            }
            i.disks.clone()
        }
        _ => {
            return Err(RpcError::new(
                404,
                "InvalidImageId.NotFound",
                "The specified ImageId does not exist.",
            ))
        }
    };
    check_role(
        &st,
        shared.sim_now(),
        &caller.account,
        req,
        ram::EXPORT_ROLE,
        ram::EXPORT_POLICY,
    )?;
    check_bucket(shared, &caller.account, bucket)?;
    if st
        .tasks
        .values()
        .any(|t| t.action == "ExportImage" && t.image_id == image_id && t.phase == Phase::Running)
    {
        return Err(RpcError::new(
            403,
            "ImageIsExporting",
            "The specified image is being exported.",
        ));
    }
    if dry_run {
        return Err(RpcError::new(
            400,
            "DryRunOperation",
            "Request validation has been passed with DryRun flag set.",
        ));
    }
    let task_id = random_id("t-");
    let stem = if prefix.is_empty() {
        image_id.to_string()
    } else {
        format!("{prefix}_{image_id}")
    };
    let names: Vec<String> = (0..disks.len())
        .map(|i| {
            if i == 0 {
                format!("{stem}_system.{ext}")
            } else {
                format!("{stem}_data_xvd{}.{ext}", (b'a' + i as u8) as char)
            }
        })
        .collect();
    let items = names
        .iter()
        .map(|n| {
            vec![
                ("OSSBucket".to_string(), bucket.to_string()),
                ("OSSObject".to_string(), n.clone()),
                (
                    "ImageFormat".to_string(),
                    if vhd { "vhd" } else { "raw" }.to_string(),
                ),
            ]
        })
        .collect();
    st.tasks.insert(
        task_id.clone(),
        Task {
            id: task_id.clone(),
            action: "ExportImage",
            account: caller.account.clone(),
            image_id: image_id.to_string(),
            created: SystemTime::now(),
            started: Instant::now(),
            duration: cloud.task_duration,
            phase: Phase::Running,
            finished: None,
            outcome: None,
            items,
            error: None,
        },
    );
    drop(st);
    let (sh, tid, bucket) = (shared.clone(), task_id.clone(), bucket.to_string());
    tokio::spawn(async move {
        let mut result = Ok(Vec::new());
        for (disk, key) in disks.iter().zip(&names) {
            let member = key.trim_end_matches(".tar.gz").to_string();
            let written = if vhd {
                write_vhd(&sh, &bucket, key, disk).await
            } else {
                write_export(&sh, &bucket, key, &member, disk).await
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, key = %key, "simulated export failed");
                result = Err((
                    "ExportImageFailed".to_string(),
                    format!("Writing {key} failed: {e}"),
                ));
                break;
            }
        }
        let mut st = sh.cloud.lock();
        if let Some(t) = st.tasks.get_mut(&tid) {
            t.outcome = Some(result);
        }
    });
    Ok(json!({"TaskId": task_id, "RegionId": cloud.region}))
}

/// Regions where ExportImage honours `ImageFormat` (2025 doc); the simulator produces VHD
/// there and refuses QCOW2 / VMDK / VDI everywhere.
const VHD_EXPORT_REGIONS: &[&str] = &[
    "ap-northeast-1",
    "ap-southeast-5",
    "eu-central-1",
    "me-east-1",
    "us-east-1",
    "eu-west-1",
    "ap-southeast-1",
    "ap-southeast-3",
    "us-west-1",
];

/// The 512-byte footer of a fixed-size VHD holding `size` bytes.
fn vhd_footer_for(size: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[28..32].copy_from_slice(b"sim ");
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    // CHS geometry per the VHD spec's algorithm.
    let sectors = (size / 512).min(65535 * 16 * 255);
    let (mut spt, mut heads, mut cth);
    if sectors >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = sectors / spt;
    } else {
        spt = 17;
        cth = sectors / spt;
        heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = sectors / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = sectors / spt;
        }
    }
    let cyl = (cth / heads).min(65535) as u16;
    f[56..58].copy_from_slice(&cyl.to_be_bytes());
    f[58] = heads as u8;
    f[59] = spt as u8;
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&rand::random::<[u8; 16]>());
    let sum: u32 = f.iter().map(|&b| b as u32).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// Streams `disk ‖ fixed-VHD footer` into `bucket/key`.
async fn write_vhd(
    shared: &Arc<Shared>,
    bucket: &str,
    key: &str,
    disk: &Disk,
) -> std::io::Result<()> {
    let mut w = shared.blob_writer(bucket).await?;
    let mut body = store::content_stream(disk.content.clone(), 0, disk.size);
    while let Some(c) = body.next().await {
        w.write(c?).await?;
    }
    w.write(Bytes::copy_from_slice(&vhd_footer_for(disk.size)))
        .await?;
    shared.commit_blob(bucket, key, w).await
}

/// A ustar/GNU header block for one regular file (GNU base-256 size above 8 GiB − 1).
fn tar_header(name: &str, size: u64, kind: u8, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.as_bytes();
    h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 0o77777777777 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(format!("{:011o}\0", mtime.min(0o77777777777)).as_bytes());
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// The tar prelude (GNU long-name record when needed, then the member header).
fn tar_prelude(name: &str, size: u64, mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if name.len() >= 100 {
        let long = format!("{name}\0");
        out.extend_from_slice(&tar_header("././@LongLink", long.len() as u64, b'L', mtime));
        out.extend_from_slice(long.as_bytes());
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&tar_header(name, size, b'0', mtime));
    out
}

/// Compresses `data` with `enc` off the async threads; returns the encoder and its output.
async fn deflate(
    mut enc: GzEncoder<Vec<u8>>,
    data: Bytes,
) -> std::io::Result<(GzEncoder<Vec<u8>>, Bytes)> {
    tokio::task::spawn_blocking(move || {
        enc.write_all(&data)?;
        let out = std::mem::take(enc.get_mut());
        Ok((enc, Bytes::from(out)))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Streams `gzip(tar(member = disk))` into `bucket/key` (memory bounded by one chunk).
async fn write_export(
    shared: &Arc<Shared>,
    bucket: &str,
    key: &str,
    member: &str,
    disk: &Disk,
) -> std::io::Result<()> {
    let mut w = shared.blob_writer(bucket).await?;
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let (e, out) = deflate(enc, Bytes::from(tar_prelude(member, disk.size, mtime))).await?;
    enc = e;
    w.write(out).await?;
    let mut body = store::content_stream(disk.content.clone(), 0, disk.size);
    let mut pending = Vec::with_capacity(1 << 20);
    let mut n = 0u64;
    loop {
        let next = body.next().await.transpose()?;
        if let Some(c) = &next {
            n += c.len() as u64;
            pending.extend_from_slice(c);
        }
        if pending.len() >= 1 << 20 || (next.is_none() && !pending.is_empty()) {
            let (e, out) = deflate(enc, Bytes::from(std::mem::take(&mut pending))).await?;
            enc = e;
            w.write(out).await?;
        }
        if next.is_none() {
            break;
        }
    }
    if n != disk.size {
        return Err(std::io::Error::other(
            "the disk content is shorter than recorded",
        ));
    }
    let pad = (512 - (disk.size % 512) as usize) % 512 + 1024;
    let (e, out) = deflate(enc, Bytes::from(vec![0u8; pad])).await?;
    w.write(out).await?;
    let tail = tokio::task::spawn_blocking(move || e.finish())
        .await
        .map_err(std::io::Error::other)??;
    w.write(Bytes::from(tail)).await?;
    shared.commit_blob(bucket, key, w).await
}

// ---------------------------------------------------------------------------------------------
// ImportImage

const PLATFORMS: &[&str] = &[
    "Aliyun",
    "Anolis",
    "CentOS",
    "Ubuntu",
    "CoreOS",
    "SUSE",
    "Debian",
    "OpenSUSE",
    "FreeBSD",
    "RedHat",
    "Kylin",
    "UOS",
    "Fedora",
    "Fedora CoreOS",
    "CentOS Stream",
    "AlmaLinux",
    "Rocky Linux",
    "Gentoo",
    "Customized Linux",
    "Others Linux",
    "Windows Server 2022",
    "Windows Server 2019",
    "Windows Server 2016",
    "Windows Server 2012",
    "Windows Server 2008",
    "Windows Server 2003",
    "Other Windows",
];

const ARCHIVE_SUFFIXES: &[&str] = &[".tar.gz", ".tgz", ".gz", ".tar", ".zip", ".bz2", ".xz"];

struct ImportDisk {
    bucket: String,
    object: String,
    format: String,
    gib: u64,
    size: u64,
    content: Content,
}

fn malformed(code: &str, what: &str) -> RpcError {
    RpcError::new(
        400,
        code,
        format!("The specified {what} is wrongly formed."),
    )
}

fn valid_image_name(n: &str) -> bool {
    let first = n.chars().next().unwrap_or(' ');
    (2..=128).contains(&n.chars().count())
        && (first.is_alphabetic())
        && !n.starts_with("aliyun")
        && !n.starts_with("acs:")
        && !n.starts_with("http://")
        && !n.starts_with("https://")
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | ':' | '_' | '-'))
}

fn import_image(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: &RpcRequest,
) -> Result<Value, RpcError> {
    let cloud = &shared.cloud;
    if let Some(tok) = req.get("ClientToken").filter(|t| !t.is_empty()) {
        if tok.len() > 64 || !tok.is_ascii() {
            return Err(malformed("InvalidClientToken.Malformed", "ClientToken"));
        }
        let st = cloud.lock();
        if let Some((image, task)) = st
            .client_tokens
            .get(&(caller.account.clone(), tok.to_string()))
        {
            return Ok(json!({"ImageId": image, "TaskId": task, "RegionId": cloud.region}));
        }
    }
    let mut specs = Vec::new();
    for n in 1..=17 {
        let b = req
            .get(&format!("DiskDeviceMapping.{n}.OSSBucket"))
            .filter(|v| !v.is_empty());
        let o = req
            .get(&format!("DiskDeviceMapping.{n}.OSSObject"))
            .filter(|v| !v.is_empty());
        if n == 1 || b.is_some() || o.is_some() {
            let b =
                b.ok_or_else(|| RpcError::missing(&format!("DiskDeviceMapping.{n}.OSSBucket")))?;
            let o =
                o.ok_or_else(|| RpcError::missing(&format!("DiskDeviceMapping.{n}.OSSObject")))?;
            specs.push((n, b, o));
        }
    }
    let name = req.get("ImageName").filter(|v| !v.is_empty());
    if let Some(n) = name {
        if !valid_image_name(n) {
            return Err(malformed("InvalidImageName.Malformed", "ImageName"));
        }
    }
    let description = req.get("Description").unwrap_or_default();
    if !description.is_empty()
        && (!(2..=256).contains(&description.chars().count())
            || description.starts_with("http://")
            || description.starts_with("https://"))
    {
        return Err(malformed("InvalidDescription.Malformed", "Description"));
    }
    let arch = req
        .get("Architecture")
        .filter(|v| !v.is_empty())
        .unwrap_or("x86_64");
    if !matches!(arch, "i386" | "x86_64" | "arm64") {
        return Err(malformed("InvalidArchitecture.Malformed", "Architecture"));
    }
    let os = req
        .get("OSType")
        .filter(|v| !v.is_empty())
        .unwrap_or("linux");
    if !matches!(os, "linux" | "windows") {
        return Err(malformed("InvalidOSType.Malformed", "OSType"));
    }
    let platform = req
        .get("Platform")
        .filter(|v| !v.is_empty())
        .unwrap_or("Others Linux");
    if !PLATFORMS.contains(&platform) {
        return Err(malformed("InvalidPlatform.Malformed", "Platform"));
    }
    let boot = req
        .get("BootMode")
        .filter(|v| !v.is_empty())
        .unwrap_or(if arch == "arm64" { "UEFI" } else { "BIOS" });
    if !matches!(boot, "BIOS" | "UEFI") {
        return Err(malformed("InvalidBootMode.Malformed", "BootMode"));
    }
    if arch == "arm64" && boot == "BIOS" {
        return Err(RpcError::new(
            400,
            "InvalidBootMode.NotSupport",
            "arm64 images support only the UEFI boot mode.",
        ));
    }
    let nvme = req
        .get("Features.NvmeSupport")
        .filter(|v| !v.is_empty())
        .unwrap_or("unsupported");
    if !matches!(nvme, "supported" | "unsupported") {
        return Err(RpcError::invalid("Features.NvmeSupport", nvme));
    }
    let imds_support = req
        .get("Features.ImdsSupport")
        .filter(|v| !v.is_empty())
        .unwrap_or("v1");
    if !matches!(imds_support, "v1" | "v2") {
        return Err(RpcError::new(
            400,
            "InvalidParameter.FeaturesImdsSupport",
            "Features.ImdsSupport must be v1 or v2.",
        ));
    }
    let mut tags = Vec::new();
    for n in 1..=20 {
        if let Some(k) = req.get(&format!("Tag.{n}.Key")).filter(|v| !v.is_empty()) {
            tags.push((
                k.to_string(),
                req.get(&format!("Tag.{n}.Value"))
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    let mut parsed = Vec::new();
    for (n, bucket, object) in &specs {
        let format = req
            .get(&format!("DiskDeviceMapping.{n}.Format"))
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !matches!(format.as_str(), "" | "RAW" | "VHD" | "QCOW2" | "VMDK") {
            return Err(malformed("InvalidImageFormat.Malformed", "Format"));
        }
        let gib = req
            .get(&format!("DiskDeviceMapping.{n}.DiskImageSize"))
            .or_else(|| req.get(&format!("DiskDeviceMapping.{n}.DiskImSize")))
            .filter(|v| !v.is_empty());
        let gib =
            match gib {
                None => None,
                Some(v) => {
                    Some(
                        v.parse::<u64>()
                            .ok()
                            .filter(|g| (1..=2048).contains(g))
                            .ok_or_else(|| {
                                RpcError::new(
                    400,
                    if *n == 1 { "InvalidImageSize" } else { "InvalidDataDiskSize" },
                    format!("The specified DiskImageSize {v:?} is not valid: 1-2048 GiB."),
                )
                            })?,
                    )
                }
            };
        let lower = object.to_ascii_lowercase();
        if ARCHIVE_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
            return Err(RpcError::new(
                400,
                "UnsupportedSuffix.OSSObject",
                "The specified OSS object suffix is not supported.",
            ));
        }
        parsed.push((bucket.to_string(), object.to_string(), format, gib));
    }
    let dry_run = req.flag("DryRun")?;
    let mut st = cloud.lock();
    st.refresh();
    check_role(
        &st,
        shared.sim_now(),
        &caller.account,
        req,
        ram::IMPORT_ROLE,
        ram::IMPORT_POLICY,
    )?;
    let mut disks = Vec::new();
    for (bucket, object, format, gib) in parsed {
        check_bucket(shared, &caller.account, &bucket)?;
        let Some(info) = shared.object_info(&bucket, &object) else {
            return Err(RpcError::new(
                400,
                "InvalidOSSObject.NotFound",
                format!("The specified OSS object {object} does not exist in this region."),
            ));
        };
        if info.size == 0 {
            return Err(RpcError::new(
                400,
                "InvalidOSSObject.Size",
                "The size of the specified OSS object is invalid (empty).",
            ));
        }
        if matches!(
            info.storage_class.as_str(),
            "Archive" | "ColdArchive" | "DeepColdArchive"
        ) {
            return Err(RpcError::new(
                400,
                "InvalidOSSObject.NeedRestore",
                "The specified OSS object is archived and must be restored first.",
            ));
        }
        disks.push(ImportDisk {
            bucket,
            object,
            format,
            gib: gib.unwrap_or_else(|| info.size.div_ceil(GIB).max(1)),
            size: info.size,
            content: info.content,
        });
    }
    let name =
        match name {
            Some(n) => {
                if st.images.values().any(|i| {
                    i.account == caller.account && i.name == n && i.status != "CreateFailed"
                }) {
                    return Err(RpcError::new(
                        400,
                        "InvalidImageName.Duplicated",
                        "The specified ImageName already exists.",
                    ));
                }
                n.to_string()
            }
            None => random_id("import-"),
        };
    if dry_run {
        return Err(RpcError::new(
            400,
            "DRYRUN.SUCCESS",
            "This request is a dryrun request with successful result.",
        ));
    }
    let image_id = random_id("m-");
    let task_id = random_id("t-");
    let now = SystemTime::now();
    st.images.insert(
        image_id.clone(),
        Image {
            id: image_id.clone(),
            name,
            description: description.to_string(),
            account: caller.account.clone(),
            status: "Waiting",
            progress: 0,
            created: now,
            architecture: arch.into(),
            os_type: os.into(),
            platform: platform.into(),
            boot_mode: boot.into(),
            nvme: nvme.into(),
            imds_support: imds_support.into(),
            disks: disks
                .iter()
                .map(|d| Disk {
                    size: 0,
                    crc: 0,
                    content: Content::Discarded,
                    gib: d.gib,
                    format: d.format.clone(),
                    import: Some((d.bucket.clone(), d.object.clone())),
                })
                .collect(),
            size_gib: disks[0].gib,
            tags,
        },
    );
    st.tasks.insert(
        task_id.clone(),
        Task {
            id: task_id.clone(),
            action: "ImportImage",
            account: caller.account.clone(),
            image_id: image_id.clone(),
            created: now,
            started: Instant::now(),
            duration: cloud.task_duration,
            phase: Phase::Running,
            finished: None,
            outcome: None,
            items: vec![vec![("ImageId".to_string(), image_id.clone())]],
            error: None,
        },
    );
    if let Some(tok) = req.get("ClientToken").filter(|t| !t.is_empty()) {
        st.client_tokens.insert(
            (caller.account.clone(), tok.to_string()),
            (image_id.clone(), task_id.clone()),
        );
    }
    drop(st);
    let (sh, tid) = (shared.clone(), task_id.clone());
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut result = Ok(());
        for d in disks {
            match check_import(d).await {
                Ok(disk) => out.push(disk),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut st = sh.cloud.lock();
        if let Some(t) = st.tasks.get_mut(&tid) {
            t.outcome = Some(result.map(|_| out));
        }
    });
    Ok(json!({"ImageId": image_id, "TaskId": task_id, "RegionId": cloud.region}))
}

fn qcow2(head: &[u8]) -> bool {
    head.starts_with(b"QFI\xfb")
}

fn vmdk(head: &[u8]) -> bool {
    head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile")
}

/// A VHD footer: `conectix` cookie, valid one's-complement checksum.
fn vhd_footer(tail: &[u8]) -> Option<(u64, u32)> {
    if tail.len() < 512 || !tail.starts_with(b"conectix") {
        return None;
    }
    let sum: u32 = tail
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &b)| b as u32)
        .sum();
    let stored = u32::from_be_bytes(tail[64..68].try_into().ok()?);
    if !sum != stored {
        return None;
    }
    let current = u64::from_be_bytes(tail[48..56].try_into().ok()?);
    let disk_type = u32::from_be_bytes(tail[60..64].try_into().ok()?);
    Some((current, disk_type))
}

/// The first and last 512 bytes and the CRC-64 of `content` (a synthetic object's CRC is
/// known, so huge generated disks import without being read).
async fn scan(content: &Content, size: u64) -> std::io::Result<(Vec<u8>, Vec<u8>, u64)> {
    if let Content::Synthetic(syn) = content {
        let grab = |a: u64, b: u64| {
            syn.chunks(a, b)
                .flat_map(|c| c.to_vec())
                .collect::<Vec<u8>>()
        };
        return Ok((
            grab(0, size.min(512)),
            grab(size.saturating_sub(512), size),
            syn.crc(),
        ));
    }
    let mut head = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut all = crc64::Crc64::new();
    let mut body = store::content_stream(content.clone(), 0, size);
    while let Some(c) = body.next().await {
        let c = c?;
        if head.len() < 512 {
            let take = (512 - head.len()).min(c.len());
            head.extend_from_slice(&c[..take]);
        }
        tail.extend_from_slice(&c[c.len().saturating_sub(512)..]);
        if tail.len() > 512 {
            tail.drain(..tail.len() - 512);
        }
        all.update(&c);
    }
    Ok((head, tail, all.sum()))
}

/// Reads the object once: CRC-64 of the disk bytes, and the format checks.
async fn check_import(d: ImportDisk) -> Result<Disk, (String, String)> {
    let fail = |c: &str, m: String| (c.to_string(), m);
    let (head, tail, all) = scan(&d.content, d.size).await.map_err(|e| {
        fail(
            "ImportImageFailed",
            format!("Reading the OSS object failed: {e}"),
        )
    })?;
    let format = match d.format.as_str() {
        "" if qcow2(&head) => "QCOW2",
        "" if vmdk(&head) => "VMDK",
        "" if vhd_footer(&tail).is_some() => "VHD",
        "" => "RAW",
        f => f,
    }
    .to_string();
    let limit = d.gib * GIB;
    let (disk_size, crc) = match format.as_str() {
        "RAW" => {
            if !d.size.is_multiple_of(512) {
                return Err(fail(
                    "InvalidImageSize",
                    format!(
                        "The RAW image size {} is not a multiple of 512 bytes.",
                        d.size
                    ),
                ));
            }
            if d.size > limit {
                return Err(fail(
                    "InvalidImageSize",
                    format!(
                        "The RAW image ({} bytes) is larger than DiskImageSize ({} GiB).",
                        d.size, d.gib
                    ),
                ));
            }
            (d.size, all)
        }
        "VHD" => {
            let Some((current, kind)) = vhd_footer(&tail) else {
                return Err(fail(
                    "InvalidImageFormat.Malformed",
                    "The object is not a valid VHD: no valid 'conectix' footer.".into(),
                ));
            };
            if kind != 2 || current + 512 != d.size {
                return Err(fail(
                    "InvalidVHDImage.IncorrectSize",
                    "The VHD is not a fixed-size VHD whose size matches its footer.".into(),
                ));
            }
            if current > limit {
                return Err(fail(
                    "InvalidImageSize",
                    format!(
                        "The VHD's virtual size is larger than DiskImageSize ({} GiB).",
                        d.gib
                    ),
                ));
            }
            // The disk is everything before the footer: checksum it by a second pass.
            let mut crc = crc64::Crc64::new();
            let mut s = store::content_stream(d.content.clone(), 0, current);
            while let Some(c) = s.next().await {
                crc.update(&c.map_err(|e| fail("ImportImageFailed", e.to_string()))?);
            }
            (current, crc.sum())
        }
        "QCOW2" => {
            if !qcow2(&head) || head.len() < 32 {
                return Err(fail(
                    "InvalidImageFormat.Malformed",
                    "The object is not a QCOW2 image (bad header magic).".into(),
                ));
            }
            let virt = u64::from_be_bytes(head[24..32].try_into().expect("8 bytes"));
            if virt > limit {
                return Err(fail(
                    "InvalidImageSize",
                    format!(
                        "The QCOW2 virtual size is larger than DiskImageSize ({} GiB).",
                        d.gib
                    ),
                ));
            }
            (d.size, all)
        }
        _ => {
            if !vmdk(&head) {
                return Err(fail(
                    "InvalidImageFormat.Malformed",
                    "The object is not a VMDK image (bad header magic).".into(),
                ));
            }
            (d.size, all)
        }
    };
    Ok(Disk {
        size: disk_size,
        crc,
        content: d.content,
        gib: d.gib,
        format,
        import: Some((d.bucket, d.object)),
    })
}

// ---------------------------------------------------------------------------------------------
// Test accessors

impl Cloud {
    /// `(size, crc64)` of an image's system disk (`None` if unknown or still importing).
    pub(crate) fn image_crc64(&self, id: &str) -> Option<(u64, u64)> {
        let mut st = self.lock();
        st.refresh();
        let i = st.images.get(id)?;
        (i.status == "Available")
            .then(|| i.disks.first().map(|d| (d.size, d.crc)))
            .flatten()
    }

    /// The DescribeImages entry of an image, plus its task's failure (`FailureCode` /
    /// `FailureMessage`) when it failed.
    pub(crate) fn image(&self, id: &str) -> Option<Value> {
        let mut st = self.lock();
        st.refresh();
        let i = st.images.get(id)?;
        let mut v = image_json(i, &self.region);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn tar_headers_read_back() {
        let mut archive = tar_prelude("x_m-1_system.raw", 1000, 1_700_000_000);
        archive.extend(vec![7u8; 1000]);
        archive.resize(archive.len() + 24 + 1024, 0);
        let mut a = tar::Archive::new(archive.as_slice());
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), "x_m-1_system.raw");
        assert_eq!(e.header().size().unwrap(), 1000);
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, vec![7u8; 1000]);
        drop(e);
        assert!(entries.next().is_none());
        // Sizes ≥ 8 GiB use base-256; long names a GNU long-name record.
        let h = tar_header("big", 10 << 30, b'0', 0);
        let hdr = tar::Header::from_byte_slice(&h);
        assert_eq!(hdr.size().unwrap(), 10 << 30);
        let long = "p".repeat(150);
        let mut archive = tar_prelude(&long, 0, 0);
        archive.resize(archive.len() + 1024, 0);
        let mut a = tar::Archive::new(archive.as_slice());
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
    }

    #[test]
    fn vhd_footer_checks() {
        let mut f = [0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[48..56].copy_from_slice(&(1u64 << 20).to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let sum: u32 = f.iter().map(|&b| b as u32).sum();
        f[64..68].copy_from_slice(&(!sum).to_be_bytes());
        assert_eq!(vhd_footer(&f), Some((1 << 20, 2)));
        f[70] ^= 1;
        assert_eq!(vhd_footer(&f), None);
        assert!(qcow2(b"QFI\xfb\0\0\0\x03"));
        assert!(valid_image_name("migrated-img_01"));
        assert!(
            !valid_image_name("1abc") && !valid_image_name("aliyun-x") && !valid_image_name("a")
        );
    }
}
