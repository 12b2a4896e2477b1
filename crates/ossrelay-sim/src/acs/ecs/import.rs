//! ImportImage: parameter checks, the task, and the worker reading the object once (format
//! checks, CRC-64 of the disk bytes) before the image becomes Available.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use serde_json::{json, Value};

use super::common::{check_bucket, check_role, random_id};
use crate::crc64;
use crate::diskfmt::{qcow2, qcow2_guest, scan, vhd_footer, vmdk, Scan};
use crate::rpc::{Caller, RpcError, RpcRequest};
use crate::store::{self, Content};
use crate::world::cloud::{Disk, Image, Phase, Task, GIB};
use crate::world::roles as ram;
use crate::world::World;

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

pub(crate) fn import_image(
    world: &Arc<World>,
    caller: &Caller,
    req: &RpcRequest,
) -> Result<Value, RpcError> {
    let cloud = &world.cloud;
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
        world.now(),
        &caller.account,
        req,
        ram::IMPORT_ROLE,
        ram::IMPORT_POLICY,
    )?;
    let mut disks = Vec::new();
    for (bucket, object, format, gib) in parsed {
        check_bucket(world, &caller.account, &bucket)?;
        let Some(info) = world.oss.object_info(&bucket, &object) else {
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
    let (sh, tid) = (world.clone(), task_id.clone());
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

/// Reads the object once: CRC-64 of the disk bytes, and the format checks.
async fn check_import(d: ImportDisk) -> Result<Disk, (String, String)> {
    let fail = |c: &str, m: String| (c.to_string(), m);
    let Scan {
        head,
        tail,
        crc: all,
        ..
    } = scan(&d.content, d.size).await.map_err(|e| {
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
            // ECS imports fixed-size VHDs only (ecs-api.md: "VHD must be fixed-size
            // compatible"): a dynamic one is refused as real ECS refuses it.
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
            // The disk the image holds, as an importer reads it: its CRC-64 proves it.
            qcow2_guest(&d.content, d.size)
                .await
                .map_err(|e| fail("InvalidImageFormat.Malformed", format!("The QCOW2: {e}.")))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert!(valid_image_name("migrated-img_01"));
        assert!(
            !valid_image_name("1abc") && !valid_image_name("aliyun-x") && !valid_image_name("a")
        );
    }
}
