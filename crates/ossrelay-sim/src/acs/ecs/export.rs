//! ExportImage: the task, and the worker streaming `gzip(tar(disk))` (or a fixed VHD) into the
//! simulated OSS.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use flate2::write::GzEncoder;
use futures::StreamExt;
use serde_json::{json, Value};

use super::common::{check_bucket, check_role, random_id};
use crate::rpc::{Caller, RpcError, RpcRequest};
use crate::store;
use crate::world::cloud::{Disk, Phase, Task};
use crate::world::roles as ram;
use crate::world::World;

pub(crate) fn export_image(
    world: &Arc<World>,
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
            Some("vhd") if VHD_EXPORT_REGIONS.contains(&world.cloud.region.as_str()) => true,
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
    let cloud = &world.cloud;
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
        world.now(),
        &caller.account,
        req,
        ram::EXPORT_ROLE,
        ram::EXPORT_POLICY,
    )?;
    check_bucket(world, &caller.account, bucket)?;
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
    let (sh, tid, bucket) = (world.clone(), task_id.clone(), bucket.to_string());
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
    world: &Arc<World>,
    bucket: &str,
    key: &str,
    disk: &Disk,
) -> std::io::Result<()> {
    let mut w = world.oss.blob_writer(bucket).await?;
    let mut body = store::content_stream(disk.content.clone(), 0, disk.size);
    while let Some(c) = body.next().await {
        w.write(c?).await?;
    }
    w.write(Bytes::copy_from_slice(&vhd_footer_for(disk.size)))
        .await?;
    world.oss.commit_blob(bucket, key, w, world.now()).await
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
    world: &Arc<World>,
    bucket: &str,
    key: &str,
    member: &str,
    disk: &Disk,
) -> std::io::Result<()> {
    let mut w = world.oss.blob_writer(bucket).await?;
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
    world.oss.commit_blob(bucket, key, w, world.now()).await
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
}
