//! `copy --format qcow2|vhd|vhd-dynamic`, checked by an independent oracle: every image the
//! relay writes must pass `qemu-img check`, be identical to the source RAW for
//! `qemu-img compare`, and have the RAW's size as its virtual size for `qemu-img info`.
//! qemu-img is required (Debian's qemu-utils; `.ci/run` installs it): without it these tests
//! fail, they do not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ossrelay::crc64;

const MIB: u64 = 1024 * 1024;
const FORMATS: [(&str, &str); 3] = [("qcow2", "qcow2"), ("vhd", "vpc"), ("vhd-dynamic", "vpc")];

fn qemu_img(args: &[&str]) -> Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("qemu-img is required for these tests (apt-get install qemu-utils): {e}")
        })
}

/// A RAW disk of `size` bytes (sparse on disk) with `data` written at its offsets.
fn raw_disk(path: &Path, size: u64, data: &[(u64, Vec<u8>)]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, d) in data {
        f.write_all_at(d, *off).unwrap();
    }
}

fn crc_of_file(path: &Path) -> u64 {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut c = crc64::Crc64::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        c.update(&buf[..n]);
    }
    c.sum()
}

fn copy_args(dir: &Path, src: &Path, dst: &Path, format: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "copy",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--format",
        format,
        "--json",
        "--quiet",
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(dir: &Path, args: &[String]) -> Output {
    command_in(dir, args).output().expect("run ossrelay")
}

/// The oracle: check, compare, virtual size.
fn assert_image(img: &Path, qfmt: &str, raw: &Path, vsize: u64) {
    let img_s = img.to_str().unwrap();
    let check = qemu_img(&["check", "-f", qfmt, img_s]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    if qfmt == "vpc" {
        // qemu has no checker for VHD: it says so with exit status 63.
        assert!(
            check.status.success() || check.status.code() == Some(63),
            "qemu-img check {img_s}: {out}"
        );
    } else {
        assert!(
            check.status.success() && out.contains("No errors"),
            "qemu-img check {img_s}: {out}"
        );
    }
    let cmp = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        qfmt,
        raw.to_str().unwrap(),
        img_s,
    ]);
    assert!(
        cmp.status.success(),
        "qemu-img compare {img_s}: {}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
    let info = qemu_img(&["info", "--output", "json", "-f", qfmt, img_s]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    // qemu counts whole sectors: a QCOW2 of a size that is not one shows it rounded up.
    assert_eq!(
        v["virtual-size"].as_u64(),
        Some(vsize.div_ceil(512) * 512),
        "virtual size of {img_s}"
    );
}

/// Converts `raw` into every format, checks each image and the summary.
fn convert_all(dir: &Path, name: &str, raw: &Path, vsize: u64, extra: &[&str]) -> Vec<Output> {
    let crc = crc_of_file(raw);
    let mut outs = Vec::new();
    for (fmt, qfmt) in FORMATS {
        let dst = dir.join(format!("{name}.{fmt}"));
        let out = run(dir, &copy_args(dir, raw, &dst, fmt, extra));
        assert_eq!(out.status.code(), Some(0), "{fmt}: {}", stderr(&out));
        let s = summary(&out);
        assert_eq!(s["format"].as_str(), Some(fmt));
        assert_eq!(s["raw_bytes"].as_u64(), Some(vsize), "{fmt}");
        assert_eq!(
            s["raw_crc64"].as_str(),
            Some(crc.to_string().as_str()),
            "{fmt}"
        );
        let len = std::fs::metadata(&dst).unwrap().len();
        assert_eq!(s["bytes"].as_u64(), Some(len), "{fmt}");
        assert_eq!(
            s["crc64"].as_str(),
            Some(crc_of_file(&dst).to_string().as_str()),
            "{fmt}: the container's CRC-64"
        );
        assert_image(&dst, qfmt, raw, vsize);
        outs.push(out);
    }
    outs
}

#[test]
fn empty_and_full_disks() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Empty: nothing but metadata is written.
    let empty = dir.join("empty.raw");
    raw_disk(&empty, 6 * MIB, &[]);
    let outs = convert_all(dir, "empty", &empty, 6 * MIB, &["--part-size", "1MiB"]);
    let q = summary(&outs[0]);
    assert_eq!(q["units_written"].as_u64(), Some(0));
    assert!(q["bytes"].as_u64().unwrap() < 512 * 1024, "{q}");
    let vd = summary(&outs[2]);
    assert_eq!(vd["units_written"].as_u64(), Some(0));
    // Full, and a size that is a whole number of sectors but not of clusters or blocks.
    let size = 5 * MIB + 3 * 512;
    let full = dir.join("full.raw");
    raw_disk(&full, size, &[(0, bytes(size as usize, 7))]);
    let outs = convert_all(dir, "full", &full, size, &["--part-size", "1MiB"]);
    let q = summary(&outs[0]);
    assert_eq!(q["units_written"], q["units"]);
    assert!(q["parts"].as_u64().unwrap() >= 6, "{q}");
}

#[test]
fn data_at_odd_offsets_and_in_the_last_sector() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let size = 9 * MIB + 7 * 512;
    let raw = dir.join("odd.raw");
    raw_disk(
        &raw,
        size,
        &[
            (1, vec![0xaa]),
            (65535, vec![1, 2, 3]),
            (2 * MIB - 1, vec![4, 5]),
            (4 * MIB + 12345, bytes(100_000, 3)),
            (size - 512, vec![0x55; 512]),
            (size - 1, vec![0x77]),
        ],
    );
    let outs = convert_all(dir, "odd", &raw, size, &["--part-size", "1MiB"]);
    let q = summary(&outs[0]);
    // Clusters 0, 1 (65535..65538 spans two), 31, 32, the ones around 4 MiB and the last.
    assert!(q["units_written"].as_u64().unwrap() < 12, "{q}");
    // A size that is not a whole number of sectors: QCOW2 takes it, VHD refuses clearly.
    let ragged = dir.join("ragged.raw");
    raw_disk(&ragged, 1_000_001, &[(999_999, vec![9, 9])]);
    let dst = dir.join("ragged.qcow2");
    let out = run(dir, &copy_args(dir, &ragged, &dst, "qcow2", &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The guest sees whole sectors: the RAW padded with zeros, and the figures say so.
    let s = summary(&out);
    assert_eq!(s["raw_bytes"].as_u64(), Some(1_000_448));
    let mut padded = vec![0u8; 1_000_448];
    padded[999_999] = 9;
    padded[1_000_000] = 9;
    assert_eq!(
        s["raw_crc64"].as_str(),
        Some(crc64::checksum(&padded).to_string().as_str())
    );
    assert_image(&dst, "qcow2", &ragged, 1_000_001);
    let dst = dir.join("ragged.vhd");
    let out = run(dir, &copy_args(dir, &ragged, &dst, "vhd-dynamic", &[]));
    assert_clean_failure(&out, 1, "512-byte sectors");
    assert!(!dst.exists());
}

#[test]
fn a_large_mostly_empty_disk_sends_little() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // Large enough to need several L2 tables (512 MiB each at 64 KiB clusters) and VHD
    // blocks by the thousand, small enough for a test: the RAW is read in full.
    let size = 3 * 1024 * MIB;
    let raw = dir.join("big.raw");
    raw_disk(
        &raw,
        size,
        &[
            (0, bytes(300_000, 1)),
            (1536 * MIB + 77, bytes(70_000, 2)),
            (size - 4096, bytes(4096, 3)),
        ],
    );
    for (fmt, qfmt) in [("qcow2", "qcow2"), ("vhd-dynamic", "vpc")] {
        let dst = dir.join(format!("big.{fmt}"));
        let t = Instant::now();
        let out = run(dir, &copy_args(dir, &raw, &dst, fmt, &[]));
        assert_eq!(out.status.code(), Some(0), "{fmt}: {}", stderr(&out));
        let s = summary(&out);
        let written = s["bytes"].as_u64().unwrap();
        assert!(written < 16 * MIB, "{fmt}: {written} bytes written; {s}");
        assert_image(&dst, qfmt, &raw, size);
        eprintln!("{fmt}: 3 GiB disk → {written} bytes in {:?}", t.elapsed());
    }
}

#[test]
fn an_archive_is_unpacked_and_converted() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let payload = dir.join("payload");
    std::fs::create_dir_all(&payload).unwrap();
    let size = 4 * MIB + 512;
    let raw = payload.join("exp_system.raw");
    raw_disk(
        &raw,
        size,
        &[(100, bytes(200_000, 5)), (3 * MIB, bytes(5000, 6))],
    );
    let archive = dir.join("exp_system.raw.tar.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --format=gnu -C '{}' -cf - exp_system.raw | gzip -1 -c > '{}'",
            payload.display(),
            archive.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dst = PathBuf::from(format!("{}/", out_dir.display()));
    let out = run(
        dir,
        &copy_args(dir, &archive, &dst, "qcow2", &["--part-size", "1MiB"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["member"].as_str(), Some("exp_system.raw"));
    assert_eq!(
        s["raw_crc64"].as_str(),
        Some(crc_of_file(&raw).to_string().as_str())
    );
    // Named after the member, with the container's extension.
    let img = out_dir.join("exp_system.qcow2");
    assert_image(&img, "qcow2", &raw, size);
}

#[test]
fn kill_9_then_rerun_resumes_the_conversion() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let size = 24 * MIB;
    let raw = dir.join("slow.raw");
    // Data in most clusters, some holes.
    let data: Vec<(u64, Vec<u8>)> = (0..24u64)
        .filter(|i| i % 4 != 1)
        .map(|i| (i * MIB + 3, bytes(700_000, i)))
        .collect();
    raw_disk(&raw, size, &data);
    let dst = dir.join("slow.qcow2");
    let args = copy_args(
        dir,
        &raw,
        &dst,
        "qcow2",
        &["--part-size", "1MiB", "--concurrency", "2"],
    );
    let mut slow = args.clone();
    slow.extend(["--bandwidth".to_string(), "3MiB/s".to_string()]);
    let mut child = command_in(dir, &slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the conversion finished before the kill"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!dst.exists(), "nothing at the destination before Complete");
    let out = run(dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    assert!(s["resumed_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_image(&dst, "qcow2", &raw, size);
    assert_eq!(
        s["raw_crc64"].as_str(),
        Some(crc_of_file(&raw).to_string().as_str())
    );
}

/// `qemu-img convert -O <fmt> [opts] raw img`.
fn qemu_convert(raw: &Path, img: &Path, fmt: &str, opts: &[&str]) {
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(opts);
    args.extend([raw.to_str().unwrap(), img.to_str().unwrap()]);
    let out = qemu_img(&args);
    assert!(
        out.status.success(),
        "qemu-img convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qemu_made_images_are_read_back() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let size = 7 * MIB + 512;
    let raw = dir.join("src.raw");
    raw_disk(
        &raw,
        size,
        &[
            (5, bytes(3000, 1)),
            (2 * MIB + 65536, bytes(200_000, 2)),
            (size - 512, bytes(512, 3)),
        ],
    );
    let crc = crc_of_file(&raw).to_string();
    let inputs: [(&str, &str, &[&str], &str); 5] = [
        ("in.qcow2", "qcow2", &[], "qcow2"),
        (
            "in-dyn.vhd",
            "vpc",
            &["-o", "subformat=dynamic,force_size=on"],
            "vhd",
        ),
        (
            "in-fixed.vhd",
            "vpc",
            &["-o", "subformat=fixed,force_size=on"],
            "vhd",
        ),
        (
            "in.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"],
            "vmdk",
        ),
        (
            "in-small-clusters.qcow2",
            "qcow2",
            &["-o", "cluster_size=4096"],
            "qcow2",
        ),
    ];
    for (name, qfmt, opts, input) in inputs {
        let img = dir.join(name);
        qemu_convert(&raw, &img, qfmt, opts);
        // Back to RAW, the format named.
        let out_raw = dir.join(format!("{name}.raw"));
        let out = run(
            dir,
            &copy_args(dir, &img, &out_raw, "raw", &["--input-format", input]),
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(crc_of_file(&out_raw).to_string(), crc, "{name} → raw");
        assert_eq!(std::fs::metadata(&out_raw).unwrap().len(), size, "{name}");
        // To QCOW2, the format detected.
        let out_q = dir.join(format!("{name}.out.qcow2"));
        let out = run(
            dir,
            &copy_args(dir, &img, &out_q, "qcow2", &["--part-size", "1MiB"]),
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let s = summary(&out);
        assert_eq!(s["raw_crc64"].as_str(), Some(crc.as_str()), "{name}");
        assert_image(&out_q, "qcow2", &raw, size);
    }
    // Holes read back arrive as lengths: a fixed VHD writes them out, a dynamic one skips
    // them.
    for (fmt, qfmt) in [("vhd", "vpc"), ("vhd-dynamic", "vpc")] {
        let img = dir.join("in.qcow2");
        let out_v = dir.join(format!("in.qcow2.out.{fmt}"));
        let out = run(
            dir,
            &copy_args(dir, &img, &out_v, fmt, &["--part-size", "1MiB"]),
        );
        assert_eq!(out.status.code(), Some(0), "{fmt}: {}", stderr(&out));
        let s = summary(&out);
        assert_eq!(s["raw_crc64"].as_str(), Some(crc.as_str()), "{fmt}");
        assert_image(&out_v, qfmt, &raw, size);
    }
}

#[test]
fn broken_images_fail_clearly_and_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let raw = dir.join("src.raw");
    // Compressible (qemu stores a cluster uncompressed when compression does not shrink it).
    let text: Vec<u8> = (0..3 * MIB)
        .map(|i| b"ossrelay "[(i % 9) as usize])
        .collect();
    raw_disk(&raw, 3 * MIB, &[(0, text)]);
    let vmdk = dir.join("good.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    let good = std::fs::read(&vmdk).unwrap();
    // Truncated: the end-of-stream marker and the last grains are gone.
    let truncated = dir.join("truncated.vmdk");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    // A compressed QCOW2 is refused.
    let compressed = dir.join("compressed.qcow2");
    qemu_convert(&raw, &compressed, "qcow2", &["-c"]);
    // A QCOW2 with a backing file is refused.
    let base = dir.join("base.qcow2");
    qemu_convert(&raw, &base, "qcow2", &[]);
    let overlay = dir.join("overlay.qcow2");
    let o = qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        overlay.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (src, needle) in [
        (&truncated, "truncated"),
        (&compressed, "compressed"),
        (&overlay, "backing file"),
    ] {
        let dst = dir.join("out.qcow2");
        let out = run(dir, &copy_args(dir, src, &dst, "qcow2", &[]));
        assert_clean_failure(&out, 1, needle);
        assert!(!dst.exists(), "{}", src.display());
        let partial: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("ossrelay-partial"))
            .collect();
        assert!(partial.is_empty(), "left behind: {partial:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_simulated_regions_part_1_goes_last() {
    let w = World::new(|_| {}, |_| {}).await;
    let dir = w.dir.path().to_path_buf();
    let size = 6 * MIB + 4096;
    let mut raw = vec![0u8; size as usize];
    raw[..300_000].copy_from_slice(&bytes(300_000, 8));
    raw[(4 * MIB) as usize..(5 * MIB) as usize].copy_from_slice(&bytes(MIB as usize, 9));
    w.src
        .put_object_bytes(SRC_BUCKET, "disks/d.raw", bytes::Bytes::from(raw.clone()));
    let raw_path = dir.join("d.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    for (fmt, qfmt) in FORMATS {
        let mut args = w.copy_args("disks/d.raw", DST_BUCKET, "images/");
        args.extend(
            ["--format", fmt, "--json", "--part-size", "1MiB"]
                .iter()
                .map(|s| s.to_string()),
        );
        let out = w.run(args).await;
        assert_eq!(out.status.code(), Some(0), "{fmt}: {}", stderr(&out));
        let s = summary(&out);
        let key = if fmt == "qcow2" {
            "images/d.qcow2"
        } else {
            "images/d.vhd"
        };
        assert_eq!(
            s["raw_crc64"].as_str(),
            Some(crc64::checksum(&raw).to_string().as_str())
        );
        // The source reports its CRC-64: the RAW stream was proven against it.
        assert!(
            s["verified_by"].to_string().contains("source_crc64"),
            "{fmt}: {s}"
        );
        let img = w.dst.get_object_bytes(DST_BUCKET, key).expect(key);
        assert_eq!(s["bytes"].as_u64(), Some(img.len() as u64));
        let path = dir.join(format!("out.{fmt}"));
        std::fs::write(&path, &img).unwrap();
        assert_image(&path, qfmt, &raw_path, size);
    }
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

/// `migrate --disk-format qcow2|vhd|auto`: the RAW export is converted on the way and
/// ImportImage (the simulator reading the image with its own QCOW2/VHD reader) builds a disk
/// identical to the source image's. `auto` cannot measure a `.raw.tar.gz` export before it is
/// decoded: QCOW2, and no `zero_share` in `--json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_converts_the_export_and_the_imported_disk_is_identical() {
    use ossrelay_sim::{SimImage, SimRole};
    const IMAGE: &str = "m-conv0001";
    for (format, ext) in [("qcow2", ".qcow2"), ("vhd", ".vhd"), ("auto", ".qcow2")] {
        let w = World::new(
            |c| {
                c.images.push(SimImage::new(
                    IMAGE,
                    (5 << 20) + 3 * 512,
                    &src_account().name,
                ));
                c.roles.push(SimRole {
                    account: src_account().name,
                    name: "AliyunECSImageExportDefaultRole".into(),
                    trusted: "ecs".into(),
                });
                c.task_duration = Duration::from_millis(300);
            },
            |c| {
                c.roles.push(SimRole {
                    account: dst_account().name,
                    name: "AliyunECSImageImportDefaultRole".into(),
                    trusted: "ecs".into(),
                });
                c.task_duration = Duration::from_millis(300);
            },
        )
        .await;
        let mut args = w.migrate_args(IMAGE, "dst");
        args.extend(["--disk-format".to_string(), format.to_string()]);
        let out = w.run(args).await;
        assert_eq!(out.status.code(), Some(0), "{format}: {}", stderr(&out));
        let v: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
        let image_id = v["image_id"].as_str().unwrap();
        let disk = &v["disks"][0];
        assert!(
            disk["destination"].as_str().unwrap().ends_with(ext),
            "{format}: {v}"
        );
        assert!(disk.get("zero_share").is_none(), "{format}: {v}");
        // The guest disk's figures, as copy --json gives them.
        let (src_size, src_crc) = w.src.image_crc64(IMAGE).expect("source image");
        assert_eq!(disk["raw_bytes"].as_u64(), Some(src_size), "{format}: {v}");
        assert_eq!(
            disk["raw_crc64"].as_str(),
            Some(src_crc.to_string().as_str()),
            "{format}: {v}"
        );
        let src_disk = w.src.image_crc64(IMAGE).expect("source image");
        let img = w.dst.image(image_id).unwrap();
        assert_eq!(
            w.dst.image_crc64(image_id),
            Some(src_disk),
            "{format}: {v} {img}"
        );
        let imported = if format == "auto" { "qcow2" } else { format };
        assert!(
            img.to_string()
                .to_uppercase()
                .contains(&imported.to_uppercase()),
            "{format}: the import names its format: {img}"
        );
        assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
    }
}

/// The layouts as an S3 destination gets them (the head padded to its 5 MiB minimum part),
/// written whole through the public layout API and checked by qemu-img: the padding between
/// the tables and the data must read as nothing at all.
#[test]
fn heads_padded_to_s3_minimum_parts_are_valid_images() {
    use ossrelay::transfer::format::{Alloc, Container, TailCursor};
    use ossrelay::transfer::DiskFormat;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let size = 3 * MIB + 512;
    let mut raw = vec![0u8; size as usize];
    raw[10..5000].copy_from_slice(&bytes(4990, 1));
    raw[(2 * MIB) as usize..(2 * MIB + 70_000) as usize].copy_from_slice(&bytes(70_000, 2));
    let raw_path = dir.join("r.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    for (fmt, qfmt) in [
        (DiskFormat::Qcow2, "qcow2"),
        (DiskFormat::VhdDynamic, "vpc"),
    ] {
        let c = Container::plan(fmt, size, 1 << 20, 5 * MIB, "seed").unwrap();
        assert_eq!(c.head_len(), 5 * MIB, "{fmt:?}");
        let unit = c.unit() as usize;
        let mut alloc = Alloc::new(c.units());
        let mut out = vec![0u8; c.head_len() as usize];
        for (i, u) in raw.chunks(unit).enumerate() {
            if u.iter().all(|&b| b == 0) {
                continue;
            }
            alloc.set(i as u64);
            out.extend(std::iter::repeat_n(0xffu8, c.unit_prefix()));
            out.extend_from_slice(u);
            out.resize(out.len() + unit - u.len(), 0);
        }
        let mut cur = TailCursor::default();
        while let Some(t) = c.tail_next(&alloc, &mut cur) {
            out.extend_from_slice(&t);
        }
        let head = c.head(&alloc);
        out[..head.len()].copy_from_slice(&head);
        assert_eq!(out.len() as u64, c.file_len(&alloc));
        let img = dir.join(format!("padded.{qfmt}"));
        std::fs::write(&img, &out).unwrap();
        assert_image(&img, qfmt, &raw_path, size);
    }
}

/// The "2 TiB mostly-empty synthetic disk": virtual size large, data small. A RAW of
/// 2 TiB cannot be read in a test, so the input is sparse already: a QCOW2 made by qemu-img
/// and qemu-io, relayed between the simulated regions, and the stream-optimized VMDK qemu-img
/// converts it to, copied between local files (qemu writes every grain table of it, 257 MiB
/// of zeros, too much to hold in a simulator for a test). Holes must cost next to nothing:
/// each copy finishes in well under a second here. The guest disk's CRC-64 is computed with
/// the simulator's own CRC-64 from the data pieces and the zero runs between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_tib_mostly_empty_disk_converts_in_seconds() {
    use ossrelay_sim::crc64 as sim_crc;
    const TIB: u64 = 1024 * 1024 * MIB;
    let vsize = 2 * TIB;
    let w = World::new(|_| {}, |_| {}).await;
    let dir = w.dir.path().to_path_buf();
    let img = dir.join("big.qcow2");
    let img_s = img.to_str().unwrap();
    let o = qemu_img(&["create", "-f", "qcow2", img_s, "2T"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 1 MiB at 1 GiB, 64 KiB in the last cluster.
    let last = vsize - 64 * 1024;
    let o = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0xab 1G 1M", "-c"])
        .arg(format!("write -P 0x5c {last} 64K"))
        .arg(img_s)
        .output()
        .expect("qemu-io (qemu-utils) is required");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vmdk = dir.join("big.vmdk");
    let o = qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        img_s,
        vmdk.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want_crc = sim_crc::combine_all([
        (sim_crc::zeros(1024 * MIB), 1024 * MIB),
        (sim_crc::checksum(&vec![0xab; MIB as usize]), MIB),
        (sim_crc::zeros(last - 1025 * MIB), last - 1025 * MIB),
        (sim_crc::checksum(&[0x5c; 64 * 1024]), 64 * 1024),
    ]);
    // The part size is planned for the largest file a 2 TiB disk can become, as for a RAW
    // of that size: above the default --memory.
    let flags = [
        "--input-format",
        "auto",
        "--format",
        "qcow2",
        "--json",
        "--memory",
        "600MiB",
    ]
    .map(String::from);
    let qcow2_body = std::fs::read(&img).unwrap();
    assert!(qcow2_body.len() < 4 * MIB as usize);
    w.src.put_object_bytes(
        SRC_BUCKET,
        "disks/big.qcow2",
        bytes::Bytes::from(qcow2_body),
    );
    for (name, input) in [("big.qcow2", &img), ("big.vmdk", &vmdk)] {
        let path = dir.join(format!("{name}.out.qcow2"));
        let key = format!("images/{name}.out.qcow2");
        let args = if name.ends_with("qcow2") {
            let mut a = w.copy_args("disks/big.qcow2", DST_BUCKET, &key);
            a.extend(flags.iter().cloned());
            a
        } else {
            let mut a = vec![
                "copy".to_string(),
                input.display().to_string(),
                path.display().to_string(),
                "--quiet".to_string(),
                "--state-dir".to_string(),
                dir.join("state").display().to_string(),
            ];
            a.extend(flags.iter().cloned());
            a
        };
        let t = Instant::now();
        let out = w.run(args).await;
        let took = t.elapsed();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        // Before holes went as lengths, the QCOW2 took 7.5 s (a CRC combine per cluster).
        assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
        let s = summary(&out);
        assert_eq!(s["raw_bytes"].as_u64(), Some(vsize), "{name}: {s}");
        assert_eq!(
            s["raw_crc64"].as_str(),
            Some(want_crc.to_string().as_str()),
            "{name}: the guest disk's CRC-64"
        );
        // 1 MiB and 64 KiB of data: 17 clusters.
        assert_eq!(s["units_written"].as_u64(), Some(17), "{name}: {s}");
        if name.ends_with("qcow2") {
            let got = w.dst.get_object_bytes(DST_BUCKET, &key).expect("converted");
            std::fs::write(&path, &got).unwrap();
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 4 * MIB, "{name}: {len} bytes");
        assert_eq!(s["bytes"].as_u64(), Some(len), "{name}");
        let p = path.to_str().unwrap();
        let check = qemu_img(&["check", "-f", "qcow2", p]);
        assert!(
            check.status.success(),
            "qemu-img check: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let cmp = qemu_img(&["compare", "-f", "qcow2", "-F", "qcow2", img_s, p]);
        assert!(
            cmp.status.success(),
            "qemu-img compare {name}: {}{}",
            String::from_utf8_lossy(&cmp.stdout),
            String::from_utf8_lossy(&cmp.stderr)
        );
        let info = qemu_img(&["info", "--output", "json", "-f", "qcow2", p]);
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(v["virtual-size"].as_u64(), Some(vsize), "{name}");
        eprintln!("{name}: 2 TiB disk → {len} bytes in {took:?}");
    }
    // A VHD holds at most 2040 GiB: refused in one line before a byte moves.
    let mut args = w.copy_args("disks/big.qcow2", DST_BUCKET, "images/big.vhd");
    args.extend(
        ["--format", "vhd-dynamic", "--memory", "600MiB"]
            .iter()
            .map(|s| s.to_string()),
    );
    let out = w.run(args).await;
    assert_clean_failure(&out, 1, "at most 2040 GiB");
    assert!(w
        .dst
        .get_object_bytes(DST_BUCKET, "images/big.vhd")
        .is_none());
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}
