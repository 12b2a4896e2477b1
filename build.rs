//! Stamps the binary with the commit it was built from and its target triple, for `--version`.
//!
//! Guarantees: never fails the build. Outside a git checkout (a source tarball, `cargo install`
//! from crates.io), without a `git` binary, or when the manifest sits inside some *other*
//! repository (a vendored copy), the commit is `unknown`; packagers can set
//! `OSSRELAY_BUILD_COMMIT` instead. Cargo reruns this script only when HEAD or the branch it
//! points to moves (not on every source edit), so builds stay incremental.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OSSRELAY_BUILD_COMMIT");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=OSSRELAY_BUILD_TARGET={target}");

    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = std::env::var("OSSRELAY_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| commit_of(&manifest))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OSSRELAY_BUILD_COMMIT={commit}");
}

/// The short commit of `manifest`'s own checkout, registering HEAD and its ref for reruns.
fn commit_of(manifest: &Path) -> Option<String> {
    let top = git(manifest, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), manifest) {
        return None;
    }
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            manifest.join(p)
        }
    };
    // In a worktree HEAD lives in the worktree's git dir, branch refs in the common dir.
    if let Some(git_dir) = git(manifest, &["rev-parse", "--git-dir"]).map(abs) {
        rerun_if_exists(&git_dir.join("HEAD"));
    }
    if let Some(common) = git(manifest, &["rev-parse", "--git-common-dir"]).map(abs) {
        if let Some(head_ref) = git(manifest, &["symbolic-ref", "-q", "HEAD"]) {
            let loose = common.join(head_ref);
            if loose.is_file() {
                rerun_if_exists(&loose);
            } else if let Some(dir) = loose.parent().filter(|d| d.is_dir()) {
                // The branch is only in packed-refs (after `git gc`): its next commit creates
                // the loose file, which changes neither HEAD nor packed-refs, only this directory.
                println!("cargo:rerun-if-changed={}", dir.display());
            }
        }
        // A branch whose ref was packed moves by rewriting packed-refs.
        rerun_if_exists(&common.join("packed-refs"));
    }
    git(manifest, &["rev-parse", "--short=12", "HEAD"])
}

/// A missing path would make Cargo rerun the script on every build: register only real files.
fn rerun_if_exists(p: &Path) {
    if p.is_file() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
