//! Command-line conventions users and packagers rely on: shell completions that the shells
//! accept, a manual page that renders, `--version` naming the commit and target, exit codes in
//! `--help`, and an environment variable for every `serve` flag.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn ossrelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("run ossrelay")
}

fn ok_stdout(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

/// Whether `prog` can be run on this machine (the shells and `man` are optional in CI images).
fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `<shell> -n FILE`: parses the script without running it.
fn syntax_check(shell: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("ossrelay.{shell}"));
    std::fs::write(&file, script).unwrap();
    let out = Command::new(shell).arg("-n").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{shell} -n rejects the script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_for_bash_zsh_and_fish_parse() {
    let bash = ok_stdout(&ossrelay(&["completions", "bash"]));
    // Subcommands and their flags are completed, not only the top level.
    for want in [
        "_ossrelay()",
        "complete -F _ossrelay",
        "uploads",
        "--dry-run",
    ] {
        assert!(bash.contains(want), "bash script lacks {want:?}");
    }
    // bash is what the test image always has; the script must be valid bash.
    assert!(
        have("bash"),
        "bash is needed to check the completion script"
    );
    syntax_check("bash", &bash);

    let zsh = ok_stdout(&ossrelay(&["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef ossrelay"), "{}", &zsh[..40]);
    if have("zsh") {
        syntax_check("zsh", &zsh);
    }
    let fish = ok_stdout(&ossrelay(&["completions", "fish"]));
    assert!(fish.contains("complete -c ossrelay"), "fish script");
    if have("fish") {
        syntax_check("fish", &fish);
    }

    let out = ossrelay(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "unknown shell is a usage error");
}

#[test]
fn man_page_renders() {
    let page = ok_stdout(&ossrelay(&["man"]));
    // roff structure: a title header and the sections clap_mangen writes.
    assert!(
        page.contains(".TH ossrelay 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS", ".SH VERSION"] {
        assert!(page.contains(section), "no {section}");
    }
    assert!(
        page.contains("Exit codes"),
        "exit codes belong in the page too"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = ossrelay(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    ok_stdout(&out);
    for f in [
        "ossrelay.1",
        "ossrelay-uploads.1",
        "ossrelay-uploads-abort.1",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} not written");
    }

    if have("man") {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("ossrelay.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l fails: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in ["NAME", "SYNOPSIS", "uploads", "completions"] {
            assert!(text.contains(want), "rendered page lacks {want:?}: {text}");
        }
    }

    let out = ossrelay(&["man", "--out-dir", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.lines().count() == 1,
        "{err}"
    );
}

/// The commit this checkout is at, when it is a git checkout (it is for the tests of a clone).
fn head_commit() -> Option<String> {
    let out = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_commit_and_target() {
    let v = ok_stdout(&ossrelay(&["--version"]));
    let line = v.trim();
    assert!(
        line.starts_with(concat!("ossrelay ", env!("CARGO_PKG_VERSION"), " (commit ")),
        "{line}"
    );
    // The target triple of this build (the test binary shares it).
    let arch = std::env::consts::ARCH;
    let os = std::env::consts::OS;
    assert!(line.contains(arch) && line.contains(os), "{line}");
    match head_commit() {
        Some(c) => assert!(
            line.contains(&format!("(commit {c},")),
            "{line} vs HEAD {c}"
        ),
        None => assert!(line.contains("(commit unknown,"), "{line}"),
    }
}

#[test]
fn help_lists_exit_codes() {
    let help = ok_stdout(&ossrelay(&["--help"]));
    let tail = help
        .split("Exit codes:")
        .nth(1)
        .expect("an Exit codes section");
    for code in ["0 ", "1 ", "2 ", "130 "] {
        assert!(
            tail.lines().any(|l| l.trim_start().starts_with(code)),
            "exit code {code} missing: {tail}"
        );
    }
    assert!(tail.contains("--yes"), "{tail}");
}

#[test]
fn every_serve_flag_has_an_environment_variable() {
    let help = ok_stdout(&ossrelay(&["serve", "--help"]));
    // Option blocks start with the flag; clap prints `[env: NAME=]` inside the block.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with("--") || (t.starts_with('-') && t.chars().nth(2) == Some(',')) {
            let flag = t
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap()
                .trim_end_matches(',')
                .to_string();
            blocks.push((flag, line.to_string()));
        } else if let Some(last) = blocks.last_mut() {
            last.1.push_str(line);
        }
    }
    let flags: Vec<&str> = blocks.iter().map(|(f, _)| f.as_str()).collect();
    assert!(flags.contains(&"--listen"), "{help}");
    for (flag, text) in &blocks {
        if matches!(flag.as_str(), "--help" | "--version") {
            continue;
        }
        let want = format!(
            "[env: OSSRELAY_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_ascii_uppercase()
        );
        // --log is global and has been OSSRELAY_LOG all along.
        assert!(text.contains(&want), "{flag} has no {want}…]: {text}");
    }
}

#[tokio::test]
async fn serve_reads_its_flags_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state-from-env");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .env("OSSRELAY_LISTEN", "127.0.0.1:0")
        .env("OSSRELAY_STATE_DIR", &state)
        .env("OSSRELAY_MAX_JOBS", "3")
        .env("OSSRELAY_MEMORY", "64MiB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .expect("ready line")
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
    let listen = v["listen"].as_str().unwrap();
    assert!(listen.starts_with("http://127.0.0.1:"), "{listen}");
    assert!(
        !listen.ends_with(":9870"),
        "OSSRELAY_LISTEN ignored: {listen}"
    );
    assert_eq!(Path::new(v["state_dir"].as_str().unwrap()), state);

    // A bad value in a variable is a usage error naming the flag, like a bad flag.
    let out = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .arg("serve")
        .env_clear()
        .env("OSSRELAY_MAX_JOBS", "many")
        .env("OSSRELAY_STATE_DIR", &state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-jobs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
