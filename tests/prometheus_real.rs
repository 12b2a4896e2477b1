//! A real Prometheus server (Debian's `prometheus` package) against ossrelay.
//!
//! * `promtool` accepts the shipped scrape config and alert rules, and the rule unit tests in
//!   `deploy/prometheus/alerts_test.yml` fire every alert of `alerts.yml`.
//! * Prometheus, on 127.0.0.1 with its storage in a temp dir, scrapes `ossrelay serve
//!   --metrics-listen` and `ossrelay copy --metrics-listen` every second while each runs a
//!   copy paced by the simulator's WAN model. `rate(ossrelay_bytes_total[10s])`, asked from
//!   Prometheus's HTTP API, must be within 15 % of the throughput the destination simulator
//!   really received (its `bytes_in`, polled by this test) over the same 10 s, for every
//!   sample after the first 5 s; every PromQL expression of the Grafana dashboard must
//!   evaluate to data.
//!
//! Without `prometheus`/`promtool` on PATH these tests fail, saying how to install them
//! (`.ci/run` installs the package when it runs as root): a monitoring check that silently
//! passes would prove nothing.

mod common;
mod daemon_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use daemon_support::*;
use ossrelay_sim::{SimConfig, SimRole};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A program from PATH, or a failure that says how to get it.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed, so the monitoring checks cannot run: install Debian's \
                 `prometheus` package (`apt-get install prometheus`; .ci/run does it as root)"
            )
        })
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn promtool_accepts_the_shipped_config_and_every_alert_fires_in_its_rule_test() {
    let promtool = tool("promtool");
    let dir = repo("deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every alert has a rule test that expects it to fire.
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let fired: Vec<&str> = tests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname: "))
        .collect();
    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for a in names {
        assert!(fired.contains(&a), "no rule test fires {a}");
    }
    assert!(
        !tests.contains("exp_alerts: []"),
        "a rule test that expects nothing proves nothing"
    );
}

/// A Prometheus server on 127.0.0.1, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (scrape job name, `host:port`) every second.
    async fn start(targets: &[(&str, &str)]) -> Self {
        let bin = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nscrape_configs:\n",
        );
        for (job, target) in targets {
            cfg.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
        std::fs::copy(
            repo("deploy/prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let t0 = Instant::now();
        loop {
            if let Some((200, _)) = get(&p.addr, "/-/ready").await {
                return p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "prometheus not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query at `time` (unix seconds); the `data.result` array.
    async fn query(&self, q: &str, time: f64) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}&time={time:.3}", enc(q));
        self.api(&path).await
    }

    /// A range query; the `data.result` array of matrices.
    async fn query_range(&self, q: &str, start: f64, end: f64, step: f64) -> Vec<Value> {
        let path = format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
            enc(q)
        );
        self.api(&path).await
    }

    async fn api(&self, path: &str) -> Vec<Value> {
        let (status, body) = get(&self.addr, path)
            .await
            .unwrap_or_else(|| panic!("no answer from prometheus for {path}"));
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {status} {e}: {body}"));
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn enc(q: &str) -> String {
    percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One HTTP/1.0 GET (no chunked encoding to undo); `None` if the connection failed.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// `(unix time, bytes the destination simulator received)`, polled every 100 ms.
type Truth = Arc<Mutex<Vec<(f64, f64)>>>;

/// Bytes received by `at` (linear between polls).
fn bytes_at(t: &[(f64, f64)], at: f64) -> f64 {
    match t.iter().position(|&(ts, _)| ts >= at) {
        None => t.last().map_or(0.0, |p| p.1),
        Some(0) => t[0].1,
        Some(i) => {
            let ((t0, b0), (t1, b1)) = (t[i - 1], t[i]);
            b0 + (b1 - b0) * (at - t0) / (t1 - t0).max(1e-9)
        }
    }
}

/// Rows of (time since start, prometheus rate, truth, ratio) for every step in
/// `[start + 5 s, end]`.
async fn compare(
    p: &Prometheus,
    job: &str,
    truth: &[(f64, f64)],
    start: f64,
    end: f64,
) -> Vec<(f64, f64, f64, f64)> {
    let q = format!("sum(rate(ossrelay_bytes_total{{job=\"{job}\",direction=\"upload\"}}[10s]))");
    let res = p.query_range(&q, start + 5.0, end, 1.0).await;
    assert_eq!(res.len(), 1, "{q}: {res:?}");
    res[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let t = v[0].as_f64().unwrap();
            let rate: f64 = v[1].as_str().unwrap().parse().unwrap();
            let real = (bytes_at(truth, t) - bytes_at(truth, t - 10.0)) / 10.0;
            (t - start, rate, real, rate / real)
        })
        .collect()
}

// Large enough to still be running at 19 s: a part awaiting its acknowledgement holds no
// slot (#19), so small parts can keep more than 4 connections busy.
const SIZE: u64 = 320 * MIB;
// Parts of 1 MiB: a loopback socket buffer swallows a small part at once, so the client's
// count moves a part per connection at a time; against 10 s windows of ~80 MiB that
// granularity stays within a few percent.

fn paced(c: &mut SimConfig) {
    // 2 MiB/s per connection, 4 connections (up to 8 with parts awaiting acks): 8–16 MiB/s,
    // 20–40 s per copy.
    c.conn_rate = Some(2 * MIB);
    c.roles.push(SimRole {
        account: dst_account().name,
        name: "relay".into(),
        trusted: src_account().name,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_rate_of_bytes_matches_the_measured_throughput_and_the_dashboard_has_data() {
    tool("prometheus");
    let wd = Arc::new(World::with_disk(SIZE, paced).await);
    let wc = Arc::new(World::with_disk(SIZE, paced).await);
    // Held back until Prometheus has seen every counter at zero (a scrape-based system cannot
    // know about bytes moved before its first scrape of a process).
    wd.dst.set_slow_loris(Some(32 * 1024));
    wc.dst.set_slow_loris(Some(32 * 1024));

    // The daemon's destination credentials come from STS (AssumeRole), so the credential
    // refresh series exist.
    wd.add_role_profile("relay");
    let sts = wd.dst.endpoint();
    let d = start_daemon_with(
        wd.dir.path(),
        &wd.state_dir(),
        &["--metrics-listen", "127.0.0.1:0"],
        |c| {
            c.env("ALIBABA_CLOUD_STS_ENDPOINT", &sts);
        },
    )
    .await
    .0;
    let daemon_metrics = d
        .metrics_addr
        .clone()
        .expect("metrics_listen in the ready line");
    let copy_metrics = format!("127.0.0.1:{}", free_port());
    let prom = Prometheus::start(&[
        ("ossrelay", daemon_metrics.as_str()),
        ("ossrelay-copy", copy_metrics.as_str()),
    ])
    .await;

    // A job that fails (no such object), for the error and failed-job series.
    let mut bad = copy_job(&wd, "none.raw", DISCARD_BUCKET, "none.raw");
    bad["dst_profile"] = "dst-role".into();
    let bad_id = d.submit(&bad).await["id"].as_str().unwrap().to_string();
    d.wait_state(&bad_id, "failed", Duration::from_secs(30))
        .await;

    let mut job = copy_job(&wd, "disk.raw", DISCARD_BUCKET, "disk.raw");
    job["dst_profile"] = "dst-role".into();
    job["concurrency"] = 4.into();
    job["part_size"] = "1MiB".into();
    let id = d.submit(&job).await["id"].as_str().unwrap().to_string();
    let mut args = wc.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
    args.extend(
        [
            "--part-size",
            "1MiB",
            "--concurrency",
            "4",
            "--metrics-listen",
            &copy_metrics,
        ]
        .map(String::from),
    );
    let child = wc.command(&args).spawn().unwrap();
    let copy = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());

    // Both targets scraped, with their byte counters, before the bytes flow.
    let t0 = Instant::now();
    loop {
        let seen = prom
            .query("count(ossrelay_bytes_total{direction=\"upload\"})", now())
            .await;
        if seen.first().and_then(|s| s["value"][1].as_str()) == Some("2") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "prometheus never scraped both targets: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let truth_d: Truth = Arc::default();
    let truth_c: Truth = Arc::default();
    let polling = {
        let (td, tc) = (truth_d.clone(), truth_c.clone());
        let (wd, wc) = (wd.clone(), wc.clone());
        tokio::spawn(async move {
            loop {
                let t = now();
                let bd = wd.dst.stats()["bytes_in"].as_f64().unwrap();
                let bc = wc.dst.stats()["bytes_in"].as_f64().unwrap();
                td.lock().unwrap().push((t, bd));
                tc.lock().unwrap().push((t, bc));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = now();
    wd.dst.set_slow_loris(None);
    wc.dst.set_slow_loris(None);

    // Mid-copy: every dashboard expression has data (ETA and concurrency exist only while
    // a job runs).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let running = d.job(&id).await;
    assert_eq!(running["state"], "running", "{running}");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/ossrelay-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let at = now();
    let mut empty = Vec::new();
    for e in &exprs {
        let q = e.replace("$instance", ".*");
        if prom.query(&q, at).await.is_empty() {
            empty.push(q);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard expressions without data: {empty:#?}"
    );

    // Both copies finish.
    let done = d
        .wait_job(&id, Duration::from_secs(120), |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let out = copy.await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_secs(2)).await;
    polling.abort();

    let mut failures = Vec::new();
    for (job, truth, what) in [
        ("ossrelay", &truth_d, "ossrelay serve"),
        ("ossrelay-copy", &truth_c, "ossrelay copy"),
    ] {
        let truth = truth.lock().unwrap().clone();
        // The copy ended when the destination stopped receiving.
        let total = truth.last().unwrap().1;
        let end = truth.iter().find(|p| p.1 >= total).unwrap().0.floor();
        assert!(
            total >= SIZE as f64,
            "{what}: the destination received {total} bytes"
        );
        let rows = compare(&prom, job, &truth, start, end).await;
        println!(
            "\n{what} (job=\"{job}\"): rate(ossrelay_bytes_total{{direction=\"upload\"}}[10s]) vs bytes the destination received"
        );
        println!(
            "{:>6} {:>14} {:>14} {:>7}",
            "t (s)", "prom (MiB/s)", "truth (MiB/s)", "ratio"
        );
        for &(t, rate, real, ratio) in &rows {
            println!(
                "{t:>6.0} {:>14.2} {:>14.2} {ratio:>7.3}",
                rate / MIB as f64,
                real / MIB as f64
            );
            if !(0.85..=1.15).contains(&ratio) {
                failures.push(format!("{what} at {t:.0} s: ratio {ratio:.3}"));
            }
        }
        assert!(
            rows.len() >= 10,
            "{what}: only {} samples compared (the copy ran {:.0} s)",
            rows.len(),
            end - start
        );
    }
    assert!(
        failures.is_empty(),
        "Prometheus' rate is more than 15% off the truth: {failures:#?}"
    );
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}
