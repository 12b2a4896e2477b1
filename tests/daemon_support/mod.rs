//! Fixtures for daemon tests: the `ossrelay serve` binary as a process, a raw HTTP/1.1 client
//! (so tests can send exactly the bytes they mean, traversal attempts included), polling.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

pub const MIB: u64 = 1024 * 1024;

/// A running `ossrelay serve` process.
pub struct Daemon {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub token: Option<String>,
    /// `127.0.0.1:PORT` of `--metrics-listen`, when given.
    pub metrics_addr: Option<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ossrelay serve --listen 127.0.0.1:0 --state-dir STATE extra…` with the world's
/// clean credential environment and waits for its ready line.
pub async fn start_daemon(dir: &Path, state: &Path, extra: &[&str]) -> Daemon {
    start_daemon_with(dir, state, extra, |_| {}).await.0
}

/// [`start_daemon`], also returning the ready line's `listen` URL (`https://…` under TLS).
pub async fn start_daemon_url(dir: &Path, state: &Path, extra: &[&str]) -> (Daemon, String) {
    start_daemon_with(dir, state, extra, |_| {}).await
}

/// [`start_daemon_url`], with a last change to the command (environment, `pre_exec`).
pub async fn start_daemon_with(
    dir: &Path,
    state: &Path,
    extra: &[&str],
    customize: impl FnOnce(&mut std::process::Command),
) -> (Daemon, String) {
    let mut args: Vec<String> = vec!["serve".into()];
    if !extra.contains(&"--listen") {
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    }
    args.extend([
        "--state-dir".into(),
        state.display().to_string(),
        "--log".into(),
        "info".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let token = extra.iter().position(|a| *a == "--token-file").map(|i| {
        std::fs::read_to_string(extra[i + 1])
            .unwrap()
            .trim()
            .to_string()
    });
    let mut cmd = command_in(dir, &args);
    customize(&mut cmd);
    let mut child = cmd.spawn().expect("spawn ossrelay serve");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        // Keep draining so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(20), line)
        .await
        .expect("daemon ready line within 20s")
        .unwrap();
    let v: Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("bad ready line {line:?}: {e}; stderr: {}", stderr(&out))
        }
    };
    let url = v["listen"].as_str().unwrap().to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string();
    let metrics_addr = v["metrics_listen"]
        .as_str()
        .map(|m| m.trim_start_matches("http://").to_string());
    if let Some(se) = child.stderr.take() {
        // Forward the daemon's log to the test output (shown on failure).
        std::thread::spawn(move || {
            for l in BufReader::new(se).lines().map_while(Result::ok) {
                eprintln!("[daemon] {l}");
            }
        });
    }
    (
        Daemon {
            child,
            addr,
            token,
            metrics_addr,
        },
        url,
    )
}

/// One raw HTTP/1.1 request; returns (status, body).
pub async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to daemon");
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("daemon answered within 30s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

impl Daemon {
    /// A request with the daemon's token (if any); the body parsed as JSON (Null if empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let (status, text) = self.call_raw(method, path, &auth, body).await;
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        raw(&self.addr, req.as_bytes()).await
    }

    pub async fn job(&self, id: &str) -> Value {
        let (s, v) = self.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn metrics(&self) -> String {
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let (s, text) = self.call_raw("GET", "/metrics", &auth, None).await;
        assert_eq!(s, 200, "{text}");
        text
    }

    /// Submits a job body; asserts 201 and returns the job.
    pub async fn submit(&self, body: &Value) -> Value {
        let (s, v) = self.call("POST", "/v1/jobs", Some(&body.to_string())).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    /// Polls the job until `pred` holds (panics after `limit`).
    pub async fn wait_job(
        &self,
        id: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.job(id).await;
            if pred(&j) {
                return j;
            }
            assert!(
                t0.elapsed() < limit,
                "job never reached the expected condition: {j}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the job is in `state`.
    pub async fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        self.wait_job(id, limit, |j| {
            j["state"] == state || (j["state"] == "failed" && state != "failed")
        })
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A copy job body between the world's simulators.
pub fn copy_job(w: &World, src_key: &str, dst_bucket: &str, dst_key: &str) -> Value {
    serde_json::json!({
        "kind": "copy",
        "source": format!("oss://{SRC_BUCKET}/{src_key}"),
        "destination": format!("oss://{dst_bucket}/{dst_key}"),
        "src_endpoint": w.src.endpoint(),
        "dst_endpoint": w.dst.endpoint(),
        "src_region": SRC_REGION,
        "dst_region": DST_REGION,
        "src_profile": "src",
        "dst_profile": "dst",
    })
}

/// The value of the first sample of `name` whose labels contain `label` (e.g. `job="j-…"`).
pub fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let (series, value) = l.rsplit_once(' ')?;
        let metric = series.split('{').next()?;
        (metric == name && series.contains(label)).then(|| value.parse().ok())?
    })
}

pub fn synthetic(key: &str, size: u64) -> ossrelay_sim::SyntheticObject {
    ossrelay_sim::SyntheticObject {
        bucket: SRC_BUCKET.into(),
        key: key.into(),
        size,
    }
}
