//! Nothing lost under contention and local faults, end to end against the simulators: a state
//! directory that fills up or turns read-only mid-copy, two identical copies (or migrations)
//! started at once, a single PUT racing a multipart run of the same pair, guards that must
//! refuse before any work (archive member names, `migrate --memory`), and a part size changed
//! on resume.
//!
//! The state-directory tests mount a small tmpfs, which needs root (CI runs as root); without
//! it they say so on stderr and return.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ossrelay_sim::{SimConfig, SimImage, SimRole};

/// Parts of 100 KiB (OSS's smallest): many parts, each a line in the state file.
const PART: u64 = 100 * 1024;

/// A tmpfs mounted for one test; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// `None` (after saying why) when this process may not mount.
    fn mount(path: &Path, size: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs for the state directory needs root");
            return None;
        }
        std::fs::create_dir_all(path).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        if !st.success() {
            eprintln!("skipped: cannot mount a tmpfs here ({st})");
            return None;
        }
        Some(Self {
            path: path.to_path_buf(),
        })
    }

    /// Remounts with `opts`; a read-only remount is refused (busy) while a state write has a
    /// file open, so it is tried a few times.
    fn remount(&self, opts: &str) {
        for _ in 0..50 {
            let out = std::process::Command::new("mount")
                .args(["-o", &format!("remount,{opts}")])
                .arg(&self.path)
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("remount {opts} of {} failed", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Parts recorded in the one copy state file of `dir`.
fn recorded_parts(dir: &Path) -> usize {
    let name = names(dir)
        .into_iter()
        .find(|n| n.starts_with("copy-") && n.ends_with(".json"))
        .unwrap_or_else(|| panic!("no state file in {:?}", names(dir)));
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
    st["parts"].as_array().unwrap().len()
}

fn copy_args(w: &World, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = w.copy_args("disk.raw", DST_BUCKET, "disk.raw");
    let i = a.iter().position(|x| x == "--state-dir").unwrap();
    a[i + 1] = state.display().to_string();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// After the failed run: exit 1 with the fix named, the upload still open, no temp file, the
/// last state on disk; after the fix, the rerun resumes what that state lists and verifies.
async fn assert_failed_then_resumes(w: &World, fs: &Tmpfs, out: std::process::Output) {
    let err = stderr(&out);
    assert_clean_failure(&out, 1, "then rerun the same command");
    assert!(
        err.contains(&fs.path.display().to_string()),
        "names the directory: {err}"
    );
    assert_eq!(
        w.dst.stats()["open_uploads"].as_u64(),
        Some(1),
        "the upload is kept"
    );
    let left = names(&fs.path);
    assert!(
        !left.iter().any(|n| n.contains(".tmp.")),
        "temp files: {left:?}"
    );
    let kept = recorded_parts(&fs.path);
    assert!(kept > 0, "the last durable state lists parts");

    fs.remount("rw,size=4m");
    // Requests the killed run left in the kernel's buffers may still complete.
    w.wait_dst_quiet().await;
    let sent_before = count(&w.dst.stats(), "UploadPart", "200");
    let out = w
        .run(copy_args(w, &fs.path, &["--part-size", "100KiB", "--json"]))
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = summary(&out);
    let resumed = s["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= kept as u64 * PART,
        "resumed {resumed}, state had {kept} parts"
    );
    let sent = count(&w.dst.stats(), "UploadPart", "200") - sent_before;
    assert_eq!(
        sent,
        256 - resumed / PART,
        "only the missing parts were sent"
    );
    let (size, crc) = w.dst.object_crc64(DST_BUCKET, "disk.raw").unwrap();
    assert_eq!(
        Some((size, crc)),
        w.src.object_crc64(SRC_BUCKET, "disk.raw")
    );
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_dir_keeps_the_upload_and_resumes() {
    let w = World::with_disk(256 * PART, |_| {}).await;
    // Six pages: the lock file, the state file and its temp copy soon no longer fit.
    let Some(fs) = Tmpfs::mount(&w.dir.path().join("small-state"), "24k") else {
        return;
    };
    let out = w
        .run(copy_args(&w, &fs.path, &["--part-size", "100KiB"]))
        .await;
    assert!(
        stderr(&out).to_lowercase().contains("no space"),
        "{}",
        stderr(&out)
    );
    assert_failed_then_resumes(&w, &fs, out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_turned_read_only_keeps_the_upload_and_resumes() {
    // ~4 MiB/s per connection: the 25 MiB copy runs for seconds.
    let w = World::with_disk(256 * PART, |c| c.conn_rate = Some(4 << 20)).await;
    let Some(fs) = Tmpfs::mount(&w.dir.path().join("ro-state"), "1m") else {
        return;
    };
    let child = w
        .command(&copy_args(&w, &fs.path, &["--part-size", "100KiB"]))
        .spawn()
        .unwrap();
    w.wait_for_parts(60).await;
    fs.remount("ro");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        stderr(&out).to_lowercase().contains("read-only"),
        "{}",
        stderr(&out)
    );
    assert_failed_then_resumes(&w, &fs, out).await;
}

/// Rounds of [`two_identical_copies_run_one_at_a_time`].
const COPY_RACE_ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_copies_run_one_at_a_time() {
    for round in 0..COPY_RACE_ROUNDS {
        let w = World::with_disk(40 * PART, |c| c.conn_rate = Some(2 << 20)).await;
        let args = copy_args(&w, &w.state_dir(), &["--part-size", "100KiB"]);
        let (a, b) = (
            w.command(&args).spawn().unwrap(),
            w.command(&args).spawn().unwrap(),
        );
        let (a, b) = tokio::task::spawn_blocking(move || {
            (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
        })
        .await
        .unwrap();
        let (ok, lost) = match (a.status.code(), b.status.code()) {
            (Some(0), Some(1)) => (a, b),
            (Some(1), Some(0)) => (b, a),
            other => panic!(
                "round {round}: exit codes {other:?}: {} / {}",
                stderr(&a),
                stderr(&b)
            ),
        };
        let err = stderr(&lost);
        assert_clean_failure(&lost, 1, "another copy of the same source and destination");
        let pid = ok_pid(&err);
        assert!(pid > 0, "round {round}: the winner's pid is named: {err}");
        assert_eq!(ok.status.code(), Some(0));
        assert_eq!(
            count_all(&w.dst.stats(), "InitiateMultipartUpload"),
            1,
            "round {round}: one upload"
        );
        assert_eq!(
            w.dst.object_crc64(DST_BUCKET, "disk.raw"),
            w.src.object_crc64(SRC_BUCKET, "disk.raw")
        );
    }
}

/// The pid in "(pid N, lock …)".
fn ok_pid(err: &str) -> u32 {
    err.split("(pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_put_of_the_pair_does_not_abort_a_live_copy() {
    let w = World::with_disk(80 * PART, |c| c.conn_rate = Some(2 << 20)).await;
    let a = w
        .command(&copy_args(&w, &w.state_dir(), &["--part-size", "100KiB"]))
        .spawn()
        .unwrap();
    w.wait_for_parts(5).await;
    // 8 MB fits one PUT of a 512 MiB part: the single-PUT path.
    let b = w
        .run(copy_args(&w, &w.state_dir(), &["--part-size", "512MiB"]))
        .await;
    assert_clean_failure(&b, 1, "another copy of the same source and destination");
    let a = tokio::task::spawn_blocking(move || a.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    assert_eq!(count_all(&w.dst.stats(), "AbortMultipartUpload"), 0);
    assert_eq!(
        w.dst.object_crc64(DST_BUCKET, "disk.raw"),
        w.src.object_crc64(SRC_BUCKET, "disk.raw")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_part_size_on_resume_is_named() {
    let w = World::with_disk(60 * PART, |c| c.conn_rate = Some(2 << 20)).await;
    let mut child = w
        .command(&copy_args(&w, &w.state_dir(), &["--part-size", "100KiB"]))
        .spawn()
        .unwrap();
    w.wait_for_parts(5).await;
    child.kill().unwrap();
    child.wait().unwrap();
    w.wait_dst_quiet().await;
    let out = w
        .run(copy_args(
            &w,
            &w.state_dir(),
            &["--part-size", "200KiB", "--json"],
        ))
        .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("--part-size 204800 applies only to a new upload"),
        "{err}"
    );
    assert_eq!(summary(&out)["part_size"].as_u64(), Some(PART));
}

/// A gzip'd tar whose one regular member is named `name` (bytes written into the header as
/// they are: no tar writer accepts `..`).
fn archive_named(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    let mut t = Vec::new();
    t.extend_from_slice(h.as_bytes());
    t.extend_from_slice(data);
    t.resize(t.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &t).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_members_that_cannot_name_a_file_are_refused_up_front() {
    let w = World::new(|_| {}, |_| {}).await;
    for name in [&b".."[..], b".", b"disk/.."] {
        let key = "exports/odd.raw.tar.gz";
        w.src.put_object_bytes(
            SRC_BUCKET,
            key,
            Bytes::from(archive_named(name, &bytes(300_000, 3))),
        );
        let out_dir = w.dir.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let mut args = w.copy_args(key, DST_BUCKET, "x");
        args[2] = format!("{}/", out_dir.display());
        args.extend(["--unpack".into(), "always".into()]);
        let out = w.run(args).await;
        let shown = String::from_utf8_lossy(name);
        assert_clean_failure(&out, 1, "cannot name the destination");
        assert!(
            !stderr(&out).contains("rerun"),
            "{shown}: no resume hint that cannot work: {}",
            stderr(&out)
        );
        assert_eq!(names(&out_dir), Vec::<String>::new(), "{shown}: no junk");
        assert_eq!(names(&w.state_dir()), Vec::<String>::new(), "{shown}");
    }
}

const IMAGE: &str = "m-src0005";

fn migrate_world_cfg(size: u64, task: Duration) -> impl FnOnce(&mut SimConfig) {
    move |c: &mut SimConfig| {
        c.images
            .push(SimImage::new(IMAGE, size, &src_account().name));
        c.roles.push(SimRole {
            account: src_account().name,
            name: "AliyunECSImageExportDefaultRole".into(),
            trusted: "ecs".into(),
        });
        c.task_duration = task;
    }
}

fn dst_roles(c: &mut SimConfig) {
    c.roles.push(SimRole {
        account: dst_account().name,
        name: "AliyunECSImageImportDefaultRole".into(),
        trusted: "ecs".into(),
    });
}

/// Rounds of [`the_same_migration_twice_at_once_exports_once`].
const MIGRATE_RACE_ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_migration_twice_at_once_exports_once() {
    for round in 0..MIGRATE_RACE_ROUNDS {
        let w = World::new(
            migrate_world_cfg(1 << 20, Duration::from_millis(1500)),
            dst_roles,
        )
        .await;
        let args = w.migrate_args(IMAGE, "dst");
        let (a, b) = (
            w.command(&args).spawn().unwrap(),
            w.command(&args).spawn().unwrap(),
        );
        let (a, b) = tokio::task::spawn_blocking(move || {
            (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
        })
        .await
        .unwrap();
        let lost = match (a.status.code(), b.status.code()) {
            (Some(0), Some(1)) => b,
            (Some(1), Some(0)) => a,
            other => panic!(
                "round {round}: exit codes {other:?}: {} / {}",
                stderr(&a),
                stderr(&b)
            ),
        };
        assert_clean_failure(&lost, 1, "another run of this migration is running");
        assert!(ok_pid(&stderr(&lost)) > 0, "{}", stderr(&lost));
        assert_eq!(
            count_all(&w.src.stats(), "ExportImage"),
            1,
            "round {round}: one export task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_disk_too_large_for_memory_before_exporting() {
    // 2 TiB: at 10,000 parts each part is ~210 MiB, more than 3/4 of the default 256 MiB.
    let w = World::new(
        migrate_world_cfg(2 << 40, Duration::from_millis(100)),
        dst_roles,
    )
    .await;
    let out = w.run(w.migrate_args(IMAGE, "dst")).await;
    assert_clean_failure(&out, 2, "--memory");
    assert!(
        stderr(&out).contains("nothing was exported"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 0);
}
