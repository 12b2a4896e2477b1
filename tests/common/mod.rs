//! Shared fixtures for end-to-end tests: two simulated regions with different accounts, a
//! profile file naming both, and a runner for the `ossrelay` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ossrelay_sim::{self as sim, SimAccount, SimBucket, SimConfig, SimServer};

pub const SRC_REGION: &str = "cn-hangzhou";
pub const DST_REGION: &str = "eu-central-1";
pub const SRC_BUCKET: &str = "src-bucket";
pub const DST_BUCKET: &str = "dst-bucket";
pub const DISCARD_BUCKET: &str = "dst-discard";

pub fn src_account() -> SimAccount {
    SimAccount {
        name: "1000000000000001".into(),
        access_key_id: "LTAIsourceAccessKey".into(),
        access_key_secret: "source-SECRET-do-not-leak".into(),
    }
}

pub fn dst_account() -> SimAccount {
    SimAccount {
        name: "2000000000000002".into(),
        access_key_id: "LTAItargetAccessKey".into(),
        access_key_secret: "target-SECRET-do-not-leak".into(),
    }
}

/// Two simulators (source region/account, destination region/account) and a temp dir holding
/// an aliyun CLI config with profiles `src` and `dst`, and a state dir.
pub struct World {
    pub src: SimServer,
    pub dst: SimServer,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new(
        src_cfg: impl FnOnce(&mut SimConfig),
        dst_cfg: impl FnOnce(&mut SimConfig),
    ) -> Self {
        let mut s = SimConfig {
            region: SRC_REGION.into(),
            // Accounts are global in the cloud: both simulated regions know both of them.
            accounts: vec![src_account(), dst_account()],
            buckets: vec![SimBucket {
                name: SRC_BUCKET.into(),
                account: src_account().name,
            }],
            ..SimConfig::default()
        };
        src_cfg(&mut s);
        let mut d = SimConfig {
            region: DST_REGION.into(),
            accounts: vec![dst_account(), src_account()],
            buckets: vec![
                SimBucket {
                    name: DST_BUCKET.into(),
                    account: dst_account().name,
                },
                SimBucket {
                    name: DISCARD_BUCKET.into(),
                    account: dst_account().name,
                },
            ],
            discard: vec![DISCARD_BUCKET.into()],
            ..SimConfig::default()
        };
        dst_cfg(&mut d);
        let src = sim::start(s).await.expect("start source sim");
        let dst = sim::start(d).await.expect("start destination sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::json!({
            "current": "src",
            "profiles": [
                {"name": "src", "mode": "AK", "access_key_id": src_account().access_key_id,
                 "access_key_secret": src_account().access_key_secret, "region_id": SRC_REGION},
                {"name": "dst", "mode": "AK", "access_key_id": dst_account().access_key_id,
                 "access_key_secret": dst_account().access_key_secret, "region_id": DST_REGION},
                {"name": "wrong", "mode": "AK", "access_key_id": dst_account().access_key_id,
                 "access_key_secret": "not-the-secret", "region_id": DST_REGION}
            ]
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        World { src, dst, dir }
    }

    /// A world whose source bucket holds a synthetic `disk.raw` of `size` bytes.
    pub async fn with_disk(size: u64, dst_cfg: impl FnOnce(&mut SimConfig)) -> Self {
        Self::new(
            |c| {
                c.synthetic.push(sim::SyntheticObject {
                    bucket: SRC_BUCKET.into(),
                    key: "disk.raw".into(),
                    size,
                })
            },
            dst_cfg,
        )
        .await
    }

    /// Waits until the destination acknowledged `n` UploadParts (at most 60 s).
    pub async fn wait_for_parts(&self, n: u64) {
        let t0 = std::time::Instant::now();
        while count(&self.dst.stats(), "UploadPart", "200") < n {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "the copy made no progress"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// After killing a client, waits until the destination stopped receiving: the kernel may
    /// still hold request bytes the (paced) simulator reads and completes after the kill.
    pub async fn wait_dst_quiet(&self) {
        let mut last = self.dst.stats()["bytes_in"].as_u64();
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let now = self.dst.stats()["bytes_in"].as_u64();
            if now == last {
                return;
            }
            last = now;
        }
        panic!("the destination kept receiving for 30 s after the client was killed");
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `ossrelay copy` arguments for oss://SRC_BUCKET/src_key → oss://dst_bucket/dst_key.
    pub fn copy_args(&self, src_key: &str, dst_bucket: &str, dst_key: &str) -> Vec<String> {
        vec![
            "copy".into(),
            format!("oss://{SRC_BUCKET}/{src_key}"),
            format!("oss://{dst_bucket}/{dst_key}"),
            "--src-endpoint".into(),
            self.src.endpoint(),
            "--dst-endpoint".into(),
            self.dst.endpoint(),
            "--src-region".into(),
            SRC_REGION.into(),
            "--dst-region".into(),
            DST_REGION.into(),
            "--src-profile".into(),
            "src".into(),
            "--dst-profile".into(),
            "dst".into(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--quiet".into(),
        ]
    }

    /// A `Command` for the binary with a clean credential environment pointing at our profiles.
    /// `ossrelay migrate` arguments for `image` from the source sim's region to the
    /// destination's (both sims serve OSS, ECS and STS on one endpoint).
    pub fn migrate_args(&self, image: &str, dst_profile: &str) -> Vec<String> {
        let (src_ep, dst_ep) = (self.src.endpoint(), self.dst.endpoint());
        [
            "migrate",
            "--src-region",
            SRC_REGION,
            "--image-id",
            image,
            "--src-bucket",
            SRC_BUCKET,
            "--dst-region",
            DST_REGION,
            "--dst-bucket",
            DST_BUCKET,
            "--src-profile",
            "src",
            "--dst-profile",
            dst_profile,
            "--src-endpoint",
            &src_ep,
            "--src-ecs-endpoint",
            &src_ep,
            "--dst-endpoint",
            &dst_ep,
            "--dst-ecs-endpoint",
            &dst_ep,
            "--dst-sts-endpoint",
            &dst_ep,
            "--state-dir",
            &self.state_dir().display().to_string(),
            "--json",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Appends `profiles` to the world's aliyun config file.
    pub fn add_profiles(&self, profiles: impl IntoIterator<Item = serde_json::Value>) {
        let path = self.dir.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["profiles"].as_array_mut().unwrap().extend(profiles);
        std::fs::write(&path, config.to_string()).unwrap();
    }

    /// Adds a RamRoleArn profile `dst-role`: the source account's AccessKey assuming `role`
    /// of the destination account.
    pub fn add_role_profile(&self, role: &str) {
        self.add_profiles([serde_json::json!({
            "name": "dst-role",
            "mode": "RamRoleArn",
            "access_key_id": src_account().access_key_id,
            "access_key_secret": src_account().access_key_secret,
            "ram_role_arn": format!("acs:ram::{}:role/{role}", dst_account().name),
            "ram_session_name": "ossrelay-test",
            "expired_seconds": 900,
            "region_id": DST_REGION
        })]);
    }

    pub fn command(&self, args: &[String]) -> Command {
        command_in(self.dir.path(), args)
    }

    pub async fn run(&self, args: Vec<String>) -> Output {
        let mut cmd = self.command(&args);
        tokio::task::spawn_blocking(move || cmd.output().expect("run ossrelay"))
            .await
            .unwrap()
    }
}

/// A `Command` for the `ossrelay` binary isolated from the user's credentials.
pub fn command_in(dir: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossrelay"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("ALIBABA_CLOUD_CONFIG_FILE", dir.join("config.json"))
        .env(
            "ALIBABA_CLOUD_CREDENTIALS_FILE",
            dir.join("no-such-credentials"),
        )
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses the `--json` summary line.
pub fn summary(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON summary on stdout; stderr: {}", stderr(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `requests[op][status]` from a simulator's stats.
pub fn count(stats: &serde_json::Value, op: &str, status: &str) -> u64 {
    stats["requests"][op][status].as_u64().unwrap_or(0)
}

/// Sum over all statuses of `requests[op]`.
pub fn count_all(stats: &serde_json::Value, op: &str) -> u64 {
    stats["requests"][op]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0)
}

/// Asserts a failure message is one line (plus nothing else) and carries no panic/backtrace.
pub fn assert_clean_failure(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "backtrace hint: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "error line {:?} should mention {needle:?}",
        lines[0]
    );
    assert!(!err.contains("SECRET-do-not-leak"), "secret leaked: {err}");
}
