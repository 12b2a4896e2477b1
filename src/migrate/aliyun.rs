//! The Alibaba Cloud side of a migration: ECS ExportImage into OSS and ImportImage from it,
//! found again after a crash by DescribeTasks (export) and by name and tag (import).

use super::*;
use crate::acs::ecs::{
    describe_all_images, DescribeImagesInput, DescribeTasksInput, EcsApi, ExportImageInput, Image,
    ImageFormat, ImportDisk, ImportImageInput, TaskAttribute, TaskStatus, TaskSummary,
};
use crate::acs::ram::retry_missing_role;
use crate::acs::wait::{wait_image, wait_task};

/// The default name of the new image: the source's, when ImportImage would accept it.
pub fn default_image_name(source: &Image) -> String {
    let n = &source.image_name;
    let valid = (2..=128).contains(&n.chars().count())
        && n.chars().next().is_some_and(|c| c.is_alphabetic())
        && !n.starts_with("aliyun")
        && !n.starts_with("acs:")
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | ':' | '_' | '-'));
    if valid {
        n.clone()
    } else {
        format!("migrated-{}", source.image_id)
    }
}

/// Orders exported objects system disk first, then data disks by name, and pairs them with the
/// source image's disk sizes.
pub fn plan_disks(
    objects: &[crate::acs::ecs::TaskObject],
    image: Option<&Image>,
) -> Vec<DiskState> {
    let mut objs: Vec<_> = objects.to_vec();
    objs.sort_by_key(|o| (!o.key.contains("system"), o.key.clone()));
    let data_sizes: Vec<Option<u64>> = image
        .map(|i| i.data_disks().iter().map(|d| d.size_gib()).collect())
        .unwrap_or_default();
    let mut data_index = 0;
    objs.into_iter()
        .enumerate()
        .map(|(i, o)| {
            let system = i == 0;
            let size_gib = if system {
                image
                    .and_then(|img| img.system_disk())
                    .and_then(|d| d.size_gib())
            } else {
                data_index += 1;
                data_sizes.get(data_index - 1).copied().flatten()
            };
            DiskState {
                role: if system { "system" } else { "data" }.into(),
                destination_key: unpacked_key(&o.key),
                source_bucket: o.bucket,
                source_key: o.key,
                size_gib,
                copied: false,
                bytes: 0,
                crc64: None,
                verified_by: Vec::new(),
                zero_share: None,
                raw_bytes: None,
                raw_crc64: None,
            }
        })
        .collect()
}

/// The ImportImage call for the relayed disks, carrying the source image's attributes.
pub fn import_input(
    name: &str,
    source: Option<&Image>,
    key: &MigrationKey,
    dst_bucket: &str,
    disks: &[DiskState],
    client_token: String,
) -> ImportImageInput {
    let attr = |f: fn(&Image) -> &String| {
        source
            .map(|i| f(i).clone())
            .filter(|v: &String| !v.is_empty())
    };
    ImportImageInput {
        image_name: name.to_string(),
        description: Some(format!(
            "Migrated by ossrelay from {}/{}",
            key.src_region, key.image_id
        )),
        architecture: attr(|i| &i.architecture),
        os_type: attr(|i| &i.os_type),
        platform: attr(|i| &i.platform),
        boot_mode: attr(|i| &i.boot_mode),
        license_type: None,
        role_name: None,
        disks: ecs_import_disks(dst_bucket, disks),
        nvme_support: attr(|i| &i.features.nvme_support),
        imds_support: attr(|i| &i.features.imds_support),
        tags: vec![(SOURCE_TAG.into(), source_tag(key))],
        client_token: Some(client_token),
    }
}

/// ImportImage's `DiskDeviceMapping`s for the relayed disks in `dst_bucket`.
pub(super) fn ecs_import_disks(dst_bucket: &str, disks: &[DiskState]) -> Vec<ImportDisk> {
    disks
        .iter()
        .map(|d| ImportDisk {
            oss_bucket: dst_bucket.to_string(),
            oss_object: d.destination_key.clone(),
            format: ImageFormat::from_key(&d.destination_key),
            disk_image_size: d.size_gib,
        })
        .collect()
}

fn source_tag(key: &MigrationKey) -> String {
    format!("{}/{}", key.src_region, key.image_id)
}

impl Run<'_> {
    /// An ExportImage task for our image: a running one first, else (when a previous run may
    /// have started one whose answer was lost) the newest finished one.
    async fn find_export_task(
        &self,
        ecs: &Arc<dyn EcsApi>,
        include_finished: bool,
    ) -> Result<Option<String>, MigrateError> {
        let list = ecs
            .describe_tasks(&DescribeTasksInput {
                task_action: Some("ExportImage".into()),
                resource_ids: vec![self.cfg.key.image_id.clone()],
                page_size: Some(100),
                ..DescribeTasksInput::default()
            })
            .await
            .map_err(MigrateError::api("DescribeTasks"))?;
        let ours: Vec<&TaskSummary> = list
            .task_set
            .iter()
            .filter(|t| t.resource_id.is_empty() || t.resource_id == self.cfg.key.image_id)
            .collect();
        if let Some(t) = ours.iter().find(|t| !t.task_status.is_terminal()) {
            return Ok(Some(t.task_id.clone()));
        }
        if include_finished {
            let newest = ours
                .iter()
                .filter(|t| t.task_status == TaskStatus::Finished)
                .max_by(|a, b| a.creation_time.cmp(&b.creation_time));
            return Ok(newest.map(|t| t.task_id.clone()));
        }
        Ok(None)
    }

    pub(super) async fn ecs_export(&mut self, ecs: &Arc<dyn EcsApi>) -> Result<(), MigrateError> {
        let key = self.cfg.key.clone();
        if self.state.source_image.is_none() {
            let list = ecs
                .describe_images(&DescribeImagesInput::by_id(&key.image_id))
                .await
                .map_err(MigrateError::api("DescribeImages"))?;
            let img = list
                .images
                .into_iter()
                .find(|i| i.image_id == key.image_id)
                .ok_or_else(|| MigrateError::ImageNotFound {
                    image_id: key.image_id.clone(),
                    region: key.src_region.clone(),
                })?;
            if img.status != "Available" {
                return Err(MigrateError::ImageNotAvailable {
                    image_id: key.image_id.clone(),
                    status: img.status,
                });
            }
            if !key.dst_cloud.is_aliyun() {
                let attrs = ImageAttrs::from_ecs(&img);
                attrs
                    .check_importable(key.dst_cloud)
                    .map_err(MigrateError::Usage)?;
                self.state.source_attrs = Some(attrs);
            }
            self.state.source_image = Some(img);
            self.save()?;
        }
        if self.state.export_task_id.is_none() {
            self.check_unpack_memory()?;
            // A previous run may have started an export and crashed before recording it.
            let adopted = if self.state.export_requested {
                self.find_export_task(ecs, true).await?
            } else {
                None
            };
            let (task_id, adopted) = match adopted {
                Some(t) => (t, true),
                None => {
                    self.state.export_requested = true;
                    self.save()?;
                    let input = ExportImageInput {
                        image_id: key.image_id.clone(),
                        oss_bucket: self.cfg.src_bucket.clone(),
                        oss_prefix: Some(self.cfg.export_prefix.clone()),
                        image_format: self.cfg.export_format,
                        role_name: None,
                    };
                    let api = ecs.clone();
                    match retry_missing_role(self.cfg.role_retry, || api.export_image(&input)).await
                    {
                        Ok(t) if !t.task_id.is_empty() => (t.task_id, false),
                        Ok(_) => {
                            return Err(MigrateError::State(
                                "ExportImage answered without a TaskId".into(),
                            ))
                        }
                        Err(e) if e.code() == Some("ImageIsExporting") => {
                            match self.find_export_task(ecs, false).await? {
                                Some(t) => (t, true),
                                None => return Err(MigrateError::api("ExportImage")(e)),
                            }
                        }
                        Err(e) => return Err(MigrateError::api("ExportImage")(e)),
                    }
                }
            };
            self.state.export_task_id = Some(task_id);
            self.save()?;
            let id = self.state.export_task_id.clone().unwrap_or_default();
            (self.events)(Event::ExportStarted {
                task_id: &id,
                adopted,
            });
        }
        self.advance(Stage::WaitExport)
    }

    /// A RAW export arrives as `.raw.tar.gz` and is unpacked on the way; a disk too large for
    /// `--memory` would fail only at the relay, after an export of hours. Refuse it up front.
    fn check_unpack_memory(&self) -> Result<(), MigrateError> {
        if !matches!(self.cfg.export_format, None | Some(ImageFormat::Raw)) {
            return Ok(());
        }
        let Some(img) = &self.state.source_image else {
            return Ok(());
        };
        let limits = self.b.dst_store.limits();
        for d in &img.disk_device_mappings {
            let Ok(gib) = d.size.trim().parse::<u64>() else {
                continue;
            };
            if let Err(e) = transfer::unpack::check_memory(gib << 30, &self.cfg.copy, limits) {
                return Err(MigrateError::Usage(format!(
                    "disk {} of {} ({gib} GiB): {e}; nothing was exported",
                    d.device, self.cfg.key.image_id
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn ecs_wait_export(
        &mut self,
        ecs: &Arc<dyn EcsApi>,
    ) -> Result<(), MigrateError> {
        let task_id = match &self.state.export_task_id {
            Some(t) => t.clone(),
            None => return self.advance(Stage::Export),
        };
        let events = self.events;
        let mut on_progress = |t: &TaskAttribute| events(Event::ExportProgress(t));
        let result = wait_task(
            ecs.as_ref(),
            &task_id,
            &self.cfg.poll,
            self.cancel,
            &mut on_progress,
        )
        .await;
        let task = match result {
            Ok(t) => t,
            Err(e @ WaitError::TaskFailed { .. }) => {
                // A failed export is over: the next run starts a new one.
                self.state.export_task_id = None;
                self.state.export_requested = false;
                self.state.stage = Stage::Export;
                self.save()?;
                return Err(MigrateError::Wait(e));
            }
            Err(e) => return Err(MigrateError::Wait(e)),
        };
        let objects = task.exported_objects(&self.cfg.src_bucket);
        if objects.is_empty() {
            return Err(MigrateError::NoExportedObjects { task_id });
        }
        if let Some(o) = objects.iter().find(|o| o.bucket != self.cfg.src_bucket) {
            return Err(MigrateError::UnexpectedBucket {
                task_id,
                bucket: o.bucket.clone(),
                expected: self.cfg.src_bucket.clone(),
            });
        }
        let mut disks = plan_disks(&objects, self.state.source_image.as_ref());
        for d in &mut disks {
            (d.destination_key, d.zero_share) =
                self.destination(&d.source_key, &d.destination_key).await?;
        }
        self.state.disks = disks;
        self.tell_exported();
        self.advance(Stage::Relay)
    }

    /// An image made by this migration (name and source tag match) that is not failed.
    async fn find_our_import(
        &self,
        ecs: &Arc<dyn EcsApi>,
        name: &str,
    ) -> Result<Option<Image>, MigrateError> {
        let images = describe_all_images(ecs.as_ref(), &DescribeImagesInput::by_name(name))
            .await
            .map_err(MigrateError::api("DescribeImages"))?;
        let tag = self.source_tag();
        Ok(images.into_iter().find(|i| {
            i.image_name == name
                && i.tag(SOURCE_TAG) == Some(tag.as_str())
                && matches!(i.status.as_str(), "Creating" | "Waiting" | "Available")
        }))
    }

    pub(super) async fn ecs_import(&mut self, ecs: &Arc<dyn EcsApi>) -> Result<(), MigrateError> {
        if self.state.new_image_id.is_none() {
            // An explicit --image-name wins (e.g. after a name clash); otherwise keep the name
            // chosen at the first attempt.
            let name = match (&self.cfg.image_name, &self.state.image_name) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => n.clone(),
                (None, None) => match (&self.state.source_image, &self.state.source_attrs) {
                    (Some(img), _) => default_image_name(img),
                    (None, Some(a)) => mapping::ecs_image_name(&a.name, &a.image_id),
                    (None, None) => format!("migrated-{}", self.cfg.key.image_id),
                },
            };
            self.state.image_name = Some(name.clone());
            self.save()?;
            let (image_id, task_id, adopted) = match self.find_our_import(ecs, &name).await? {
                Some(img) => (img.image_id, None, true),
                None => {
                    self.verify_relayed().await?;
                    let input = if self.cfg.key.src_cloud.is_aliyun() {
                        import_input(
                            &name,
                            self.state.source_image.as_ref(),
                            &self.cfg.key,
                            &self.cfg.key.dst_bucket,
                            &self.state.disks,
                            self.client_token(),
                        )
                    } else {
                        self.source_attrs()?.ecs_import_input(
                            &name,
                            &self.cfg.key.dst_bucket,
                            &self.state.disks,
                            vec![(SOURCE_TAG.into(), self.source_tag())],
                            self.client_token(),
                        )
                    };
                    let api = ecs.clone();
                    match retry_missing_role(self.cfg.role_retry, || api.import_image(&input)).await
                    {
                        Ok(t) if !t.image_id.is_empty() => {
                            let task = (!t.task_id.is_empty()).then_some(t.task_id);
                            (t.image_id, task, false)
                        }
                        Ok(_) => {
                            return Err(MigrateError::State(
                                "ImportImage answered without an ImageId".into(),
                            ))
                        }
                        Err(e)
                            if matches!(
                                e.code(),
                                Some("InvalidImageName.Duplicated" | "ImageIsImporting")
                            ) =>
                        {
                            match self.find_our_import(ecs, &name).await? {
                                Some(img) => (img.image_id, None, true),
                                None => {
                                    return Err(MigrateError::NameTaken {
                                        name,
                                        region: self.cfg.key.dst_region.clone(),
                                    })
                                }
                            }
                        }
                        Err(e) => return Err(MigrateError::api("ImportImage")(e)),
                    }
                }
            };
            self.state.new_image_id = Some(image_id.clone());
            self.state.import_task_id = task_id.clone();
            self.save()?;
            (self.events)(Event::ImportStarted {
                image_id: &image_id,
                task_id: task_id.as_deref(),
                adopted,
            });
        }
        self.advance(Stage::WaitImport)
    }

    pub(super) async fn ecs_wait_import(
        &mut self,
        ecs: &Arc<dyn EcsApi>,
    ) -> Result<(), MigrateError> {
        let image_id = match &self.state.new_image_id {
            Some(i) => i.clone(),
            None => return self.advance(Stage::Import),
        };
        let events = self.events;
        let mut on_progress = |i: &Image| events(Event::ImportProgress(i));
        match wait_image(
            ecs.as_ref(),
            &image_id,
            &self.cfg.poll,
            self.cancel,
            &mut on_progress,
        )
        .await
        {
            Ok(_) => self.advance(Stage::Cleanup),
            Err(e @ (WaitError::ImageFailed { .. } | WaitError::ImageGone { .. })) => {
                // The relayed objects are still there: the next run imports them again.
                self.state.new_image_id = None;
                self.state.import_task_id = None;
                self.state.import_attempt += 1;
                self.state.stage = Stage::Import;
                self.save()?;
                Err(MigrateError::Wait(e))
            }
            Err(e) => Err(MigrateError::Wait(e)),
        }
    }
}
