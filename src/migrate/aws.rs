//! The AWS side of a migration: EC2 `ExportImage` into S3 and `ImportImage` from it (VM
//! Import/Export, `../shared/reference/ec2-vm-import-export.md`).
//!
//! Both calls carry a `ClientToken` derived from the migration (and the attempt number), so a
//! rerun after a crash between the call and the state write gets the same task back from EC2
//! instead of starting a second export or import. The state records that a call was made
//! before making it; the token does the rest, with no listing and guessing.

use super::*;
use crate::aws::ec2::{
    DiskContainer, DiskImageFormat, DiskSource, Ec2Api, Ec2Image, ExportImageInput,
    ExportImageTask, ImportImageInput, ImportImageTask,
};
use crate::aws::query::AwsQueryError;
use crate::aws::wait::{wait_export_task, wait_image_available, wait_import_task, Ec2WaitError};

/// The text EC2 answers while the `vmimport` role is missing, untrusted or not yet propagated.
fn is_role_problem(e: &AwsQueryError) -> bool {
    e.code() == Some("InvalidParameter") && e.message().is_some_and(|m| m.contains("service role"))
}

/// Runs `call`, retrying while EC2 reports the service role unusable (IAM propagates a new
/// role within about two minutes; terraform-provider-aws waits the same way).
async fn retry_role<T, F, Fut>(schedule: RoleRetry, mut call: F) -> Result<T, AwsQueryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsQueryError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if is_role_problem(&e) && tries < schedule.retries => {
                tries += 1;
                tracing::info!(error = %e, tries, "vmimport role not usable yet; retrying");
                tokio::time::sleep(schedule.interval).await;
            }
            other => return other,
        }
    }
}

impl ImageAttrs {
    /// An AMI's attributes (AWS → Alibaba), by the mapping of the reference's §7.
    pub fn from_ec2(i: &Ec2Image) -> Self {
        let platform_details = i.platform_details.clone().unwrap_or_default();
        let windows = i
            .platform
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("windows"))
            || platform_details.to_ascii_lowercase().starts_with("windows");
        let os_type = if windows {
            mapping::OsType::Windows
        } else {
            mapping::OsType::Linux
        };
        let architecture = i.architecture.clone();
        let boot_mode = match i.boot_mode.as_deref().unwrap_or_default() {
            "uefi" => mapping::BootMode::Uefi,
            "legacy-bios" => mapping::BootMode::Bios,
            // uefi-preferred or unset: the instance-type default, UEFI on Graviton.
            _ if architecture == "arm64" => mapping::BootMode::Uefi,
            _ => mapping::BootMode::Bios,
        };
        let text = format!("{} {} {}", i.name, i.description, platform_details);
        Self {
            cloud: Cloud::Aws,
            image_id: i.image_id.clone(),
            name: i.name.clone(),
            description: i.description.clone(),
            architecture,
            boot_mode,
            os_type,
            platform: mapping::alibaba_platform(os_type, &text),
            imds_v2: i.imds_support.as_deref() == Some("v2.0"),
            nvme: false,
            disks_gib: vec![i.root_volume_gib()],
        }
    }
}

impl Run<'_> {
    fn aws_api(step: &'static str) -> impl FnOnce(AwsQueryError) -> MigrateError {
        move |source| MigrateError::Aws {
            step,
            source: Box::new(source),
        }
    }

    /// `ossrelay-<hash>`: the ClientToken of `what` (export or import) at `attempt`.
    fn ec2_token(&self, what: &str, attempt: u32) -> String {
        use sha2::{Digest, Sha256};
        let k = &self.cfg.key;
        let mut h = Sha256::new();
        for p in [
            what,
            k.src_cloud.as_str(),
            &k.src_region,
            &k.image_id,
            k.dst_cloud.as_str(),
            &k.dst_region,
            &k.dst_bucket,
        ] {
            h.update(p.as_bytes());
            h.update(b"\n");
        }
        h.update(attempt.to_le_bytes());
        format!("ossrelay-{}", &hex::encode(h.finalize())[..32])
    }

    fn ec2_tags(&self) -> Vec<(String, String)> {
        vec![(SOURCE_TAG.into(), self.source_tag())]
    }

    pub(super) async fn ec2_export(&mut self, ec2: &Arc<dyn Ec2Api>) -> Result<(), MigrateError> {
        let key = self.cfg.key.clone();
        if self.state.source_attrs.is_none() {
            let images = ec2
                .describe_images(std::slice::from_ref(&key.image_id))
                .await
                .map_err(Self::aws_api("DescribeImages"))?;
            let img = images
                .into_iter()
                .find(|i| i.image_id == key.image_id)
                .ok_or_else(|| MigrateError::ImageNotFound {
                    image_id: key.image_id.clone(),
                    region: key.src_region.clone(),
                })?;
            if img.state != "available" {
                return Err(MigrateError::ImageNotAvailable {
                    image_id: key.image_id.clone(),
                    status: img.state,
                });
            }
            if !img.product_codes.is_empty() {
                return Err(MigrateError::Usage(format!(
                    "image {} carries AWS Marketplace product codes; EC2 refuses to export it",
                    key.image_id
                )));
            }
            let attrs = ImageAttrs::from_ec2(&img);
            attrs
                .check_importable(key.dst_cloud)
                .map_err(MigrateError::Usage)?;
            self.state.source_attrs = Some(attrs);
            self.save()?;
        }
        if self.state.export_task_id.is_none() {
            let adopted = self.state.export_requested;
            self.state.export_requested = true;
            self.save()?;
            let input = ExportImageInput {
                image_id: key.image_id.clone(),
                format: DiskImageFormat::Raw,
                s3_bucket: self.cfg.src_bucket.clone(),
                s3_prefix: Some(format!("{}/", self.cfg.export_prefix)),
                role_name: None,
                description: Some(format!(
                    "ossrelay migration to {} {}",
                    key.dst_cloud, key.dst_region
                )),
                client_token: Some(self.ec2_token("export", self.state.export_attempt)),
                tags: self.ec2_tags(),
            };
            let api = ec2.clone();
            let task = retry_role(self.cfg.role_retry, || api.export_image(&input))
                .await
                .map_err(Self::aws_api("ExportImage"))?;
            if task.task_id.is_empty() {
                return Err(MigrateError::State(
                    "ExportImage answered without an ExportImageTaskId".into(),
                ));
            }
            self.state.export_task_id = Some(task.task_id.clone());
            self.save()?;
            (self.events)(Event::ExportStarted {
                task_id: &task.task_id,
                adopted,
            });
        }
        self.advance(Stage::WaitExport)
    }

    pub(super) async fn ec2_wait_export(
        &mut self,
        ec2: &Arc<dyn Ec2Api>,
    ) -> Result<(), MigrateError> {
        let task_id = match &self.state.export_task_id {
            Some(t) => t.clone(),
            None => return self.advance(Stage::Export),
        };
        let events = self.events;
        let mut on_progress = |t: &ExportImageTask| {
            events(Event::TaskProgress(task_line(
                "export",
                &t.task_id,
                &t.status,
                t.status_message.as_deref(),
                t.progress,
            )))
        };
        let task = match wait_export_task(
            ec2.as_ref(),
            &task_id,
            &self.cfg.poll,
            self.cancel,
            &mut on_progress,
        )
        .await
        {
            Ok(t) => t,
            Err(e @ Ec2WaitError::TaskFailed { .. }) => {
                // A failed export is over (EC2 removed its partial object): the next run
                // starts a new one, with a new ClientToken.
                self.state.export_task_id = None;
                self.state.export_requested = false;
                self.state.export_attempt += 1;
                self.state.stage = Stage::Export;
                self.save()?;
                return Err(MigrateError::AwsWait(Box::new(e)));
            }
            Err(e) => return Err(MigrateError::AwsWait(Box::new(e))),
        };
        let bucket = if task.s3_bucket.is_empty() {
            self.cfg.src_bucket.clone()
        } else {
            task.s3_bucket.clone()
        };
        if bucket != self.cfg.src_bucket {
            return Err(MigrateError::UnexpectedBucket {
                task_id,
                bucket,
                expected: self.cfg.src_bucket.clone(),
            });
        }
        let key = task.object_key(DiskImageFormat::Raw);
        // The export names no object: look for it where AWS documents it, so a wrong guess
        // fails here and not an hour into the relay.
        match self.b.src_store.head(&key).await {
            Ok(_) => {}
            Err(e) if e.class == ErrorClass::NotFound => {
                return Err(MigrateError::NoExportedObjects { task_id })
            }
            Err(source) => {
                return Err(MigrateError::Check {
                    object: self.b.src_store.describe(&key),
                    source,
                })
            }
        }
        let size_gib = self
            .state
            .source_attrs
            .as_ref()
            .and_then(|a| a.disks_gib.first().copied().flatten());
        let (destination_key, zero_share) = self.destination(&key, &unpacked_key(&key)).await?;
        self.state.disks = vec![DiskState {
            role: "system".into(),
            source_bucket: bucket,
            destination_key,
            zero_share,
            raw_bytes: None,
            raw_crc64: None,
            source_key: key,
            size_gib,
            copied: false,
            bytes: 0,
            crc64: None,
            verified_by: Vec::new(),
        }];
        self.tell_exported();
        self.advance(Stage::Relay)
    }

    pub(super) async fn ec2_import(&mut self, ec2: &Arc<dyn Ec2Api>) -> Result<(), MigrateError> {
        if self.state.import_task_id.is_none() {
            let attrs = self.source_attrs()?;
            attrs
                .check_importable(Cloud::Aws)
                .map_err(MigrateError::Usage)?;
            self.verify_relayed().await?;
            let input = ImportImageInput {
                disk_containers: self
                    .state
                    .disks
                    .iter()
                    .map(|d| DiskContainer {
                        // What the relay wrote: an ECS VHD export stays VHD, RAW otherwise
                        // (setup refuses QCOW2 for EC2).
                        format: if d.destination_key.to_ascii_lowercase().ends_with(".vhd") {
                            "VHD".into()
                        } else {
                            "RAW".into()
                        },
                        source: DiskSource::UserBucket {
                            bucket: self.cfg.key.dst_bucket.clone(),
                            key: d.destination_key.clone(),
                        },
                        description: Some(format!("{} disk of {}", d.role, attrs.image_id)),
                        device_name: None,
                    })
                    .collect(),
                encrypted: None,
                architecture: Some(attrs.architecture.clone()),
                boot_mode: Some(attrs.ec2_boot_mode().into()),
                platform: Some(attrs.ec2_platform().into()),
                license_type: Some(attrs.ec2_license_type().into()),
                role_name: None,
                description: Some(format!(
                    "Migrated by ossrelay from {} {} ({})",
                    attrs.cloud, attrs.image_id, attrs.name
                )),
                client_token: Some(self.ec2_token("import", self.state.import_attempt)),
                tags: self.ec2_tags(),
            };
            let api = ec2.clone();
            let task = retry_role(self.cfg.role_retry, || api.import_image(&input))
                .await
                .map_err(Self::aws_api("ImportImage"))?;
            if task.task_id.is_empty() {
                return Err(MigrateError::State(
                    "ImportImage answered without an ImportTaskId".into(),
                ));
            }
            self.state.import_task_id = Some(task.task_id.clone());
            self.save()?;
            (self.events)(Event::ImportStarted {
                image_id: "(assigned when the import completes)",
                task_id: Some(&task.task_id),
                // The ClientToken returns a task started before a crash; EC2 does not say
                // whether it did, so this run reports it as started.
                adopted: false,
            });
        }
        self.advance(Stage::WaitImport)
    }

    pub(super) async fn ec2_wait_import(
        &mut self,
        ec2: &Arc<dyn Ec2Api>,
    ) -> Result<(), MigrateError> {
        let task_id = match &self.state.import_task_id {
            Some(t) => t.clone(),
            None => return self.advance(Stage::Import),
        };
        let events = self.events;
        if self.state.new_image_id.is_none() {
            let mut on_progress = |t: &ImportImageTask| {
                events(Event::TaskProgress(task_line(
                    "import",
                    &t.task_id,
                    &t.status,
                    t.status_message.as_deref(),
                    t.progress,
                )))
            };
            match wait_import_task(
                ec2.as_ref(),
                &task_id,
                &self.cfg.poll,
                self.cancel,
                &mut on_progress,
            )
            .await
            {
                Ok(image_id) => {
                    self.state.new_image_id = Some(image_id);
                    self.save()?;
                }
                Err(e @ (Ec2WaitError::TaskFailed { .. } | Ec2WaitError::ImageFailed { .. })) => {
                    // The relayed object is still there: the next run imports it again.
                    self.state.import_task_id = None;
                    self.state.import_attempt += 1;
                    self.state.stage = Stage::Import;
                    self.save()?;
                    return Err(MigrateError::AwsWait(Box::new(e)));
                }
                Err(e) => return Err(MigrateError::AwsWait(Box::new(e))),
            }
        }
        let image_id = self.state.new_image_id.clone().unwrap_or_default();
        let mut on_progress = |i: &Ec2Image| {
            events(Event::TaskProgress(format!(
                "image {}: {}",
                i.image_id, i.state
            )))
        };
        wait_image_available(
            ec2.as_ref(),
            &image_id,
            &self.cfg.poll,
            self.cancel,
            &mut on_progress,
        )
        .await
        .map_err(|e| MigrateError::AwsWait(Box::new(e)))?;
        self.advance(Stage::Cleanup)
    }
}

/// `export task export-ami-…: active, converting, 40%`.
fn task_line(
    kind: &str,
    id: &str,
    status: &str,
    message: Option<&str>,
    progress: Option<u32>,
) -> String {
    let mut line = format!("{kind} task {id}: {status}");
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        line.push_str(", ");
        line.push_str(m);
    }
    if let Some(p) = progress {
        line.push_str(&format!(", {p}%"));
    }
    line
}
