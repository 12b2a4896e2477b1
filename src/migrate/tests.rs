//! The migration state machine against an in-memory ECS fake and in-memory buckets: the real
//! engine relays the objects, the fake plays ExportImage / ImportImage with tasks that finish
//! after a few polls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::acs::ecs::{
    DescribeImagesInput, DescribeTasksInput, DiskDeviceMapping, ExportImageInput, ImageList,
    ImportImageInput, OperationProgress, RelatedItem, Tag, TaskList, TaskStarted, TaskStatus,
    TaskSummary,
};
use crate::acs::rpc::ApiError;
use crate::store::memory::MemoryStore;

fn api_err(action: &str, code: &str, status: u16) -> RpcError {
    RpcError::Api(Box::new(ApiError {
        action: action.into(),
        status,
        code: code.into(),
        message: format!("{code} (fake)"),
        request_id: "fake".into(),
        host_id: None,
        recommend: None,
        retry_after: None,
    }))
}

struct FakeTask {
    action: String,
    resource: String,
    polls_left: u32,
    status: TaskStatus,
    objects: Vec<String>,
    fail: Option<(String, String)>,
}

#[derive(Default)]
struct Inner {
    images: Vec<Image>,
    /// Polls until each creating image becomes Available.
    image_polls: HashMap<String, u32>,
    tasks: HashMap<String, FakeTask>,
    task_order: Vec<String>,
    calls: Vec<String>,
    next: u32,
    /// Export suffix (`.raw.tar.gz` as the real service writes, or `.qcow2`).
    suffix: String,
    data_disks: usize,
    fail_export: Option<(String, String)>,
    missing_role_times: u32,
    /// ImportImage creates the image, then "loses" the answer (transport error).
    lose_import_answer: bool,
}

/// ECS in one region; exports write into `bucket` (a memory store).
struct FakeEcs {
    region: String,
    bucket_name: String,
    bucket: Arc<MemoryStore>,
    inner: Mutex<Inner>,
}

impl FakeEcs {
    fn new(region: &str, bucket_name: &str, bucket: Arc<MemoryStore>) -> Arc<Self> {
        Arc::new(Self {
            region: region.into(),
            bucket_name: bucket_name.into(),
            bucket,
            inner: Mutex::new(Inner {
                suffix: ".qcow2".into(),
                ..Inner::default()
            }),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap())
    }

    fn calls(&self, action: &str) -> usize {
        self.with(|i| i.calls.iter().filter(|c| *c == action).count())
    }

    fn add_source_image(&self, id: &str, data_disks: usize) {
        let mut disks = vec![DiskDeviceMapping {
            device: "/dev/xvda".into(),
            size: "40".into(),
            r#type: "system".into(),
            ..DiskDeviceMapping::default()
        }];
        for n in 0..data_disks {
            disks.push(DiskDeviceMapping {
                device: format!("/dev/xvd{}", (b'b' + n as u8) as char),
                size: format!("{}", 100 + n),
                r#type: "data".into(),
                ..DiskDeviceMapping::default()
            });
        }
        self.with(|i| {
            i.data_disks = data_disks;
            i.images.push(Image {
                image_id: id.into(),
                image_name: "web-server".into(),
                status: "Available".into(),
                architecture: "arm64".into(),
                os_type: "linux".into(),
                platform: "Ubuntu".into(),
                boot_mode: "UEFI".into(),
                features: crate::acs::ecs::ImageFeatures {
                    nvme_support: "supported".into(),
                    imds_support: "v2".into(),
                },
                disk_device_mappings: disks,
                ..Image::default()
            })
        });
    }
}

fn disk_bytes(key: &str) -> Vec<u8> {
    // Deterministic, distinct per object, above the engine's single-PUT threshold for memory
    // stores is not needed: small objects use one PUT.
    key.bytes().cycle().take(200 * 1024 + key.len()).collect()
}

#[async_trait]
impl EcsApi for FakeEcs {
    fn region(&self) -> &str {
        &self.region
    }

    async fn export_image(&self, input: &ExportImageInput) -> Result<TaskStarted, RpcError> {
        self.with(|i| {
            i.calls.push("ExportImage".into());
            if i.missing_role_times > 0 {
                i.missing_role_times -= 1;
                return Err(api_err("ExportImage", "NoSetRoletoECSServiceAcount", 403));
            }
            if !i.images.iter().any(|m| m.image_id == input.image_id) {
                return Err(api_err("ExportImage", "InvalidImageId.NotFound", 404));
            }
            if input.oss_bucket != self.bucket_name {
                return Err(api_err("ExportImage", "InvalidOSSBucket.NotFound", 400));
            }
            let busy = i.tasks.values().any(|t| {
                t.action == "ExportImage" && t.resource == input.image_id && !t.status.is_terminal()
            });
            if busy {
                return Err(api_err("ExportImage", "ImageIsExporting", 403));
            }
            i.next += 1;
            let id = format!("t-exp{}", i.next);
            let prefix = input.oss_prefix.clone().unwrap_or_default();
            let mut objects = vec![format!("{prefix}_{}_system{}", input.image_id, i.suffix)];
            for n in 0..i.data_disks {
                objects.push(format!(
                    "{prefix}_{}_data_xvd{}{}",
                    input.image_id,
                    (b'b' + n as u8) as char,
                    i.suffix
                ));
            }
            i.tasks.insert(
                id.clone(),
                FakeTask {
                    action: "ExportImage".into(),
                    resource: input.image_id.clone(),
                    polls_left: 2,
                    status: TaskStatus::Waiting,
                    objects,
                    fail: i.fail_export.clone(),
                },
            );
            i.task_order.push(id.clone());
            Ok(TaskStarted {
                task_id: id,
                region_id: self.region.clone(),
                ..TaskStarted::default()
            })
        })
    }

    async fn describe_task_attribute(&self, task_id: &str) -> Result<TaskAttribute, RpcError> {
        let (attr, write) = self.with(|i| {
            i.calls.push("DescribeTaskAttribute".into());
            let Some(t) = i.tasks.get_mut(task_id) else {
                return Err(api_err(
                    "DescribeTaskAttribute",
                    "InvalidTaskId.NotFound",
                    400,
                ));
            };
            let mut write = Vec::new();
            if !t.status.is_terminal() {
                if t.polls_left == 0 {
                    t.status = if t.fail.is_some() {
                        TaskStatus::Failed
                    } else {
                        write = t.objects.clone();
                        TaskStatus::Finished
                    };
                } else {
                    t.polls_left -= 1;
                    t.status = TaskStatus::Processing;
                }
            }
            let mut items = vec![RelatedItem {
                name: "OSSBucket".into(),
                value: self.bucket_name.clone(),
            }];
            if t.status == TaskStatus::Finished {
                items.extend(t.objects.iter().map(|o| RelatedItem {
                    name: "OSSObject".into(),
                    value: o.clone(),
                }));
            }
            let (code, msg) = match (&t.status, &t.fail) {
                (TaskStatus::Failed, Some((c, m))) => (c.clone(), m.clone()),
                _ => (String::new(), String::new()),
            };
            Ok((
                TaskAttribute {
                    task_id: task_id.into(),
                    task_action: t.action.clone(),
                    task_status: t.status.clone(),
                    task_process: if t.status == TaskStatus::Finished {
                        "100%".into()
                    } else {
                        "50%".into()
                    },
                    operation_progress_set: vec![OperationProgress {
                        operation_status: if code.is_empty() { "Success" } else { "Failed" }.into(),
                        error_code: code,
                        error_msg: msg,
                        related_item_set: items,
                    }],
                    ..TaskAttribute::default()
                },
                write,
            ))
        })?;
        for key in write {
            self.bucket.insert(&key, disk_bytes(&key));
        }
        Ok(attr)
    }

    async fn describe_tasks(&self, input: &DescribeTasksInput) -> Result<TaskList, RpcError> {
        self.with(|i| {
            i.calls.push("DescribeTasks".into());
            let task_set: Vec<TaskSummary> = i
                .task_order
                .iter()
                .filter_map(|id| i.tasks.get(id).map(|t| (id, t)))
                .filter(|(_, t)| {
                    input.task_action.as_deref().is_none_or(|a| a == t.action)
                        && (input.resource_ids.is_empty()
                            || input.resource_ids.contains(&t.resource))
                })
                .map(|(id, t)| TaskSummary {
                    task_id: id.clone(),
                    task_action: t.action.clone(),
                    task_status: t.status.clone(),
                    resource_id: t.resource.clone(),
                    creation_time: format!("2024-05-01T08:{:02}Z", id.len()),
                    ..TaskSummary::default()
                })
                .collect();
            Ok(TaskList {
                total_count: task_set.len() as u64,
                task_set,
                ..TaskList::default()
            })
        })
    }

    async fn cancel_task(&self, task_id: &str) -> Result<(), RpcError> {
        self.with(|i| {
            i.calls.push("CancelTask".into());
            match i.tasks.get_mut(task_id) {
                Some(t) => {
                    t.status = TaskStatus::Other("Cancelled".into());
                    Ok(())
                }
                None => Err(api_err("CancelTask", "InvalidTaskId.NotFound", 400)),
            }
        })
    }

    async fn import_image(&self, input: &ImportImageInput) -> Result<TaskStarted, RpcError> {
        self.with(|i| {
            i.calls.push("ImportImage".into());
            if i.missing_role_times > 0 {
                i.missing_role_times -= 1;
                return Err(api_err("ImportImage", "NoSetRoletoECSServiceAcount", 403));
            }
            if i.images.iter().any(|m| m.image_name == input.image_name) {
                return Err(api_err("ImportImage", "InvalidImageName.Duplicated", 400));
            }
            for d in &input.disks {
                if self.bucket.object(&d.oss_object).is_none() {
                    return Err(api_err("ImportImage", "InvalidOSSObject.NotFound", 400));
                }
            }
            i.next += 1;
            let image_id = format!("m-new{}", i.next);
            let task_id = format!("t-imp{}", i.next);
            i.images.push(Image {
                image_id: image_id.clone(),
                image_name: input.image_name.clone(),
                status: "Creating".into(),
                architecture: input.architecture.clone().unwrap_or_default(),
                boot_mode: input.boot_mode.clone().unwrap_or_default(),
                tags: input
                    .tags
                    .iter()
                    .map(|(k, v)| Tag {
                        tag_key: k.clone(),
                        tag_value: v.clone(),
                    })
                    .collect(),
                disk_device_mappings: input
                    .disks
                    .iter()
                    .map(|d| DiskDeviceMapping {
                        size: d.disk_image_size.map(|s| s.to_string()).unwrap_or_default(),
                        import_oss_bucket: d.oss_bucket.clone(),
                        import_oss_object: d.oss_object.clone(),
                        format: d
                            .format
                            .map(|f| f.import_name().to_string())
                            .unwrap_or_default(),
                        ..DiskDeviceMapping::default()
                    })
                    .collect(),
                ..Image::default()
            });
            i.image_polls.insert(image_id.clone(), 2);
            if i.lose_import_answer {
                i.lose_import_answer = false;
                return Err(RpcError::Transport {
                    action: "ImportImage".into(),
                    endpoint: "fake".into(),
                    reason: "connection reset".into(),
                });
            }
            Ok(TaskStarted {
                image_id,
                task_id,
                region_id: self.region.clone(),
                ..TaskStarted::default()
            })
        })
    }

    async fn describe_images(&self, input: &DescribeImagesInput) -> Result<ImageList, RpcError> {
        self.with(|i| {
            i.calls.push("DescribeImages".into());
            let statuses: Vec<String> = input
                .status
                .as_deref()
                .unwrap_or("Available")
                .split(',')
                .map(str::to_string)
                .collect();
            // Each poll of a creating image moves it on.
            for img in i.images.iter_mut() {
                if let Some(left) = i.image_polls.get_mut(&img.image_id) {
                    if input.image_ids.contains(&img.image_id) {
                        if *left == 0 {
                            img.status = "Available".into();
                        } else {
                            *left -= 1;
                        }
                    }
                }
            }
            let images: Vec<Image> = i
                .images
                .iter()
                .filter(|m| input.image_ids.is_empty() || input.image_ids.contains(&m.image_id))
                .filter(|m| {
                    input
                        .image_name
                        .as_deref()
                        .is_none_or(|n| m.image_name.contains(n))
                })
                .filter(|m| statuses.contains(&m.status))
                .cloned()
                .collect();
            Ok(ImageList {
                total_count: images.len() as u64,
                images,
                ..ImageList::default()
            })
        })
    }
}

struct Harness {
    src: Arc<FakeEcs>,
    dst: Arc<FakeEcs>,
    src_bucket: Arc<MemoryStore>,
    dst_bucket: Arc<MemoryStore>,
    dir: tempfile::TempDir,
    events: Arc<Mutex<Vec<String>>>,
}

impl Harness {
    fn new() -> Self {
        let src_bucket = MemoryStore::new("src-bucket");
        let dst_bucket = MemoryStore::new("dst-bucket");
        let src = FakeEcs::new("cn-hangzhou", "src-bucket", src_bucket.clone());
        let dst = FakeEcs::new("eu-central-1", "dst-bucket", dst_bucket.clone());
        src.add_source_image("m-src1", 1);
        Self {
            src,
            dst,
            src_bucket,
            dst_bucket,
            dir: tempfile::tempdir().unwrap(),
            events: Arc::default(),
        }
    }

    fn config(&self) -> MigrateConfig {
        MigrateConfig {
            key: MigrationKey {
                src_region: "cn-hangzhou".into(),
                image_id: "m-src1".into(),
                dst_region: "eu-central-1".into(),
                dst_bucket: "dst-bucket".into(),
                src_cloud: Cloud::Aliyun,
                dst_cloud: Cloud::Aliyun,
            },
            src_bucket: "src-bucket".into(),
            image_name: None,
            export_prefix: "ossrelay".into(),
            export_format: None,
            disk_format: super::DiskPlan::Fixed(crate::transfer::DiskFormat::Raw),
            keep_objects: false,
            state_dir: self.dir.path().to_path_buf(),
            poll: PollSchedule {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
                ..PollSchedule::default()
            },
            role_retry: RoleRetry {
                interval: Duration::from_millis(1),
                retries: 3,
            },
            copy: CopyOptions::default(),
        }
    }

    fn backends(&self, relay: RelayFn) -> Backends {
        Backends {
            src: ImageApi::Aliyun(self.src.clone()),
            dst: ImageApi::Aliyun(self.dst.clone()),
            src_store: self.src_bucket.clone(),
            dst_store: self.dst_bucket.clone(),
            relay,
        }
    }

    async fn run(
        &self,
        cfg: &MigrateConfig,
        relay: RelayFn,
    ) -> Result<MigrateOutcome, MigrateError> {
        let events = self.events.clone();
        let sink = move |e: Event<'_>| {
            let s = match e {
                Event::Resumed { stage, .. } => format!("resumed {}", stage.as_str()),
                Event::Stage(s) => format!("stage {}", s.as_str()),
                Event::ExportStarted { task_id, adopted } => format!("export {task_id} {adopted}"),
                Event::ImportStarted {
                    image_id, adopted, ..
                } => {
                    format!("import {image_id} {adopted}")
                }
                Event::Deleted { object } => format!("deleted {object}"),
                Event::DiskDone { index, .. } => format!("disk {index}"),
                _ => return,
            };
            events.lock().unwrap().push(s);
        };
        migrate(cfg, &self.backends(relay), &CancellationToken::new(), &sink).await
    }

    fn state(&self, cfg: &MigrateConfig) -> MigrateState {
        state::load(&state::state_path(self.dir.path(), &cfg.key), &cfg.key)
            .unwrap()
            .unwrap()
    }
}

/// A stand-in for the unpack stage: copies the tarball's bytes under the `.raw` name.
fn opaque_relay() -> RelayFn {
    Arc::new(|src, dst, opts, progress, cancel| {
        Box::pin(async move {
            let s = transfer::copy(src, dst, opts, progress, cancel)
                .await
                .map_err(MigrateError::from_transfer)?;
            Ok(DiskResult {
                source: s.source,
                destination: s.destination,
                bytes: s.bytes,
                crc64: s.crc64,
                verified_by: s.verified_by.clone(),
                zero_share: None,
                raw_bytes: None,
                raw_crc64: None,
            })
        })
    })
}

#[tokio::test]
async fn full_migration_relays_imports_and_cleans_up() {
    let h = Harness::new();
    let cfg = h.config();
    let out = h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(out.region, "eu-central-1");
    assert!(out.image_id.starts_with("m-new"));
    assert_eq!(out.disks.len(), 2);
    let sys_key = "ossrelay_m-src1_system.qcow2";
    assert_eq!(out.disks[0].source, format!("mem://src-bucket/{sys_key}"));
    assert_eq!(
        out.disks[0].destination,
        format!("mem://dst-bucket/{sys_key}")
    );
    assert_eq!(out.disks[0].bytes, disk_bytes(sys_key).len() as u64);
    assert_eq!(
        out.disks[0].crc64,
        crate::crc64::checksum(&disk_bytes(sys_key))
    );
    assert!(out.disks[1].source.contains("_data_xvdb"));

    // Imported with the source image's attributes and disk sizes, tagged with its origin.
    let img = h.dst.with(|i| i.images[0].clone());
    assert_eq!(img.status, "Available");
    assert_eq!(img.image_name, "web-server");
    assert_eq!(img.architecture, "arm64");
    assert_eq!(img.boot_mode, "UEFI");
    assert_eq!(img.tag(SOURCE_TAG), Some("cn-hangzhou/m-src1"));
    let sizes: Vec<_> = img
        .disk_device_mappings
        .iter()
        .map(|d| d.size.clone())
        .collect();
    assert_eq!(sizes, ["40", "100"]);
    assert_eq!(img.disk_device_mappings[0].format, "QCOW2");

    // Intermediate objects deleted on both sides only at the end.
    assert!(h.src_bucket.object(sys_key).is_none());
    assert!(h.dst_bucket.object(sys_key).is_none());
    let ev = h.events.lock().unwrap().clone();
    let deleted_at = ev.iter().position(|e| e.starts_with("deleted")).unwrap();
    let cleanup_at = ev.iter().position(|e| e == "stage cleanup").unwrap();
    assert!(cleanup_at < deleted_at, "{ev:?}");
    assert_eq!(h.state(&cfg).stage, Stage::Done);

    // Rerunning a finished migration repeats nothing and prints the same result.
    let again = h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(again, out);
    assert_eq!(h.src.calls("ExportImage"), 1);
    assert_eq!(h.dst.calls("ImportImage"), 1);
}

#[tokio::test]
async fn failed_relay_of_tar_gz_resumes_without_a_second_export() {
    let h = Harness::new();
    h.src.with(|i| i.suffix = ".raw.tar.gz".into());
    let mut cfg = h.config();
    cfg.keep_objects = true;
    // The fake export's object is not a real archive: the unpacking relay refuses it.
    let err = h.run(&cfg, default_relay()).await.unwrap_err();
    assert!(matches!(err, MigrateError::Transfer(_)), "{err}");
    let st = h.state(&cfg);
    assert_eq!(st.stage, Stage::Relay);
    assert_eq!(st.disks[0].destination_key, "ossrelay_m-src1_system.raw");

    // With an unpacking relay plugged in, the rerun continues at the relay.
    let out = h.run(&cfg, opaque_relay()).await.unwrap();
    assert_eq!(h.src.calls("ExportImage"), 1);
    assert!(out.disks[0].destination.ends_with("_system.raw"));
    // Kept: both the export and the relayed objects remain.
    assert!(h
        .src_bucket
        .object("ossrelay_m-src1_system.raw.tar.gz")
        .is_some());
    assert!(h.dst_bucket.object("ossrelay_m-src1_system.raw").is_some());
    let img = h.dst.with(|i| i.images[0].clone());
    assert_eq!(img.disk_device_mappings[0].format, "RAW");
}

#[tokio::test]
async fn lost_import_answer_is_found_again_not_repeated() {
    let h = Harness::new();
    h.dst.with(|i| i.lose_import_answer = true);
    let cfg = h.config();
    let err = h.run(&cfg, default_relay()).await.unwrap_err();
    assert!(
        matches!(
            err,
            MigrateError::Api {
                step: "ImportImage",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(h.state(&cfg).stage, Stage::Import);
    assert_eq!(h.state(&cfg).image_name.as_deref(), Some("web-server"));

    let out = h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(
        h.dst.calls("ImportImage"),
        1,
        "the running import was adopted"
    );
    assert_eq!(out.image_id, h.dst.with(|i| i.images[0].image_id.clone()));
    assert!(h
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == &format!("import {} true", out.image_id)));
}

#[tokio::test]
async fn foreign_image_with_the_same_name_is_not_adopted() {
    let h = Harness::new();
    h.dst.with(|i| {
        i.images.push(Image {
            image_id: "m-other".into(),
            image_name: "web-server".into(),
            status: "Available".into(),
            ..Image::default()
        })
    });
    let mut cfg = h.config();
    let err = h.run(&cfg, default_relay()).await.unwrap_err();
    assert!(matches!(err, MigrateError::NameTaken { .. }), "{err}");
    assert!(err.to_string().contains("--image-name"));
    cfg.image_name = Some("web-server-eu".into());
    let out = h.run(&cfg, default_relay()).await.unwrap();
    assert_ne!(out.image_id, "m-other");
    assert_eq!(h.src.calls("ExportImage"), 1);
}

#[tokio::test]
async fn running_export_is_adopted() {
    let h = Harness::new();
    // Someone (or a crashed earlier run) already exports this image.
    h.src
        .export_image(&ExportImageInput {
            image_id: "m-src1".into(),
            oss_bucket: "src-bucket".into(),
            oss_prefix: Some("ossrelay".into()),
            image_format: None,
            role_name: None,
        })
        .await
        .unwrap();
    let cfg = h.config();
    h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(
        h.src.calls("ExportImage"),
        2,
        "one refused with ImageIsExporting"
    );
    assert_eq!(h.src.with(|i| i.tasks.len()), 1);
    assert!(h
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == "export t-exp1 true"));
}

#[tokio::test]
async fn crash_after_export_request_finds_the_task() {
    let h = Harness::new();
    let cfg = h.config();
    // Simulate: the state recorded the request, ExportImage went through, the answer was lost.
    let path = state::state_path(h.dir.path(), &cfg.key);
    let mut st = MigrateState::new(cfg.key.clone(), cfg.src_bucket.clone());
    st.export_requested = true;
    state::save(&path, &mut st).unwrap();
    h.src
        .export_image(&ExportImageInput {
            image_id: "m-src1".into(),
            oss_bucket: "src-bucket".into(),
            oss_prefix: Some("ossrelay".into()),
            image_format: None,
            role_name: None,
        })
        .await
        .unwrap();
    h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(h.src.calls("ExportImage"), 1);
    assert!(h
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e == "resumed export"));
}

#[tokio::test]
async fn failed_export_reports_code_and_hint_and_restarts_next_time() {
    let h = Harness::new();
    h.src.with(|i| {
        i.fail_export = Some((
            "NoSetRoletoECSServiceAcount".into(),
            "The role is not authorized".into(),
        ))
    });
    let cfg = h.config();
    let err = h.run(&cfg, default_relay()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("NoSetRoletoECSServiceAcount"), "{msg}");
    assert!(msg.contains("ossrelay preflight --fix"), "{msg}");
    let st = h.state(&cfg);
    assert_eq!(st.stage, Stage::Export);
    assert_eq!(st.export_task_id, None);

    h.src.with(|i| i.fail_export = None);
    h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(h.src.calls("ExportImage"), 2);
}

#[tokio::test]
async fn missing_role_is_retried_while_it_propagates() {
    let h = Harness::new();
    h.src.with(|i| i.missing_role_times = 2);
    h.dst.with(|i| i.missing_role_times = 3);
    let cfg = h.config();
    h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(h.src.calls("ExportImage"), 3);
    assert_eq!(h.dst.calls("ImportImage"), 4);
}

#[tokio::test]
async fn interrupted_wait_resumes_with_the_same_task() {
    let h = Harness::new();
    let cfg = h.config();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let sink = |_: Event<'_>| {};
    // Cancelled before anything: nothing is started.
    let err = migrate(&cfg, &h.backends(default_relay()), &cancel, &sink)
        .await
        .unwrap_err();
    assert!(err.is_interrupted());
    assert!(err.to_string().contains("rerun the same command"), "{err}");
    assert_eq!(h.src.calls("ExportImage"), 0);

    // Start the export, stop while waiting.
    let mut slow = cfg.clone();
    slow.poll.initial = Duration::from_secs(30);
    slow.poll.max = Duration::from_secs(30);
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let err = migrate(&slow, &h.backends(default_relay()), &cancel, &sink)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MigrateError::Interrupted {
                stage: "wait-export",
                ..
            }
        ),
        "{err}"
    );
    let task = h.state(&cfg).export_task_id.clone().unwrap();

    h.run(&cfg, default_relay()).await.unwrap();
    assert_eq!(h.src.calls("ExportImage"), 1);
    assert_eq!(h.src.with(|i| i.task_order.clone()), [task]);
}

#[tokio::test]
async fn unknown_or_unavailable_source_image() {
    let h = Harness::new();
    let mut cfg = h.config();
    cfg.key.image_id = "m-nope".into();
    let err = h.run(&cfg, default_relay()).await.unwrap_err();
    assert!(matches!(err, MigrateError::ImageNotFound { .. }), "{err}");
    h.src.with(|i| i.images[0].status = "Creating".into());
    let cfg = h.config();
    let err = h.run(&cfg, default_relay()).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::ImageNotAvailable { .. }),
        "{err}"
    );
}

#[test]
fn names_keys_and_disk_plan() {
    assert_eq!(unpacked_key("p_m-1_system.raw.tar.gz"), "p_m-1_system.raw");
    assert_eq!(unpacked_key("x.qcow2"), "x.qcow2");
    assert!(is_tar_gz("A.RAW.TAR.GZ"));
    assert!(!is_tar_gz("a.raw"));
    let mut img = Image {
        image_id: "m-1".into(),
        image_name: "ok-name_1".into(),
        ..Image::default()
    };
    assert_eq!(default_image_name(&img), "ok-name_1");
    img.image_name = "1bad".into();
    assert_eq!(default_image_name(&img), "migrated-m-1");
    img.image_name = "aliyun_x".into();
    assert_eq!(default_image_name(&img), "migrated-m-1");

    img.disk_device_mappings = vec![
        DiskDeviceMapping {
            size: "20".into(),
            r#type: "system".into(),
            ..DiskDeviceMapping::default()
        },
        DiskDeviceMapping {
            size: "7".into(),
            r#type: "data".into(),
            ..DiskDeviceMapping::default()
        },
    ];
    let objs = [
        crate::acs::ecs::TaskObject {
            bucket: "b".into(),
            key: "p_m-1_data_xvdb.raw.tar.gz".into(),
        },
        crate::acs::ecs::TaskObject {
            bucket: "b".into(),
            key: "p_m-1_system.raw.tar.gz".into(),
        },
    ];
    let disks = plan_disks(&objs, Some(&img));
    assert_eq!(disks[0].role, "system");
    assert_eq!(disks[0].size_gib, Some(20));
    assert_eq!(disks[1].role, "data");
    assert_eq!(disks[1].size_gib, Some(7));
    assert_eq!(disks[1].destination_key, "p_m-1_data_xvdb.raw");
}
