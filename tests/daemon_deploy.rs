//! Deployment material and the OpenAPI document agree with what the daemon really does:
//! every metric the Grafana dashboard and the alert rules use is exported, and every path,
//! method and request field the OpenAPI document lists is served.

mod common;
mod daemon_support;

use std::collections::BTreeSet;

use common::*;
use daemon_support::*;
use serde_json::{json, Value};

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Metric names the daemon exports: the engine's constants in src/metrics.rs and the daemon's.
fn exported() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = repo("src/metrics.rs")
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains(": &str"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    assert!(
        names.len() >= 10,
        "engine metric constants not found: {names:?}"
    );
    names.extend(
        ossrelay::daemon::metrics::DAEMON_METRICS
            .iter()
            .map(|s| s.to_string()),
    );
    names
}

fn metric_tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ossrelay_") {
        let start = i + pos;
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if before_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

fn check_referenced(what: &str, refs: &BTreeSet<String>) {
    let names = exported();
    assert!(!refs.is_empty(), "{what} references no ossrelay metric");
    for r in refs {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| r.strip_suffix(s).filter(|b| b.ends_with("_seconds")))
            .unwrap_or(r);
        assert!(
            names.contains(base),
            "{what} uses {r}, which the daemon does not export ({names:?})"
        );
    }
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_uses_only_exported_metrics_and_has_the_required_panels() {
    let dash: Value =
        serde_json::from_str(&repo("deploy/grafana/ossrelay-dashboard.json")).unwrap();
    let mut ex = Vec::new();
    exprs(&dash, &mut ex);
    let refs: BTreeSet<String> = ex.iter().flat_map(|e| metric_tokens(e)).collect();
    check_referenced("the dashboard", &refs);
    let titles: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_lowercase())
        .collect();
    for needle in [
        "throughput per job",
        "progress",
        "eta",
        "in-flight parts",
        "retries by reason",
        "latency percentiles",
        "errors by",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(needle)),
            "no panel about {needle}: {titles:?}"
        );
    }
    for needle in [
        "ossrelay_job_bytes_total",
        "ossrelay_job_concurrency_limit",
        "ossrelay_request_duration_seconds_bucket",
        "ossrelay_retries_total",
    ] {
        assert!(refs.contains(needle), "dashboard does not use {needle}");
    }
}

#[test]
fn alert_rules_use_only_exported_metrics_and_cover_the_failure_modes() {
    let text = repo("deploy/prometheus/alerts.yml");
    let expr_text: String = text
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("summary") && !l.trim_start().starts_with("description")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let refs = metric_tokens(&expr_text);
    check_referenced("the alert rules", &refs);
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for a in [
        "OssrelayDaemonDown",
        "OssrelayJobStalled",
        "OssrelayHighRetryRate",
        "OssrelayCrcMismatch",
        "OssrelayJobFailed",
        "OssrelayCredentialRefreshFailing",
    ] {
        assert!(alerts.contains(&a), "missing alert {a}: {alerts:?}");
    }
    for m in [
        "ossrelay_job_bytes_total",
        "ossrelay_crc_mismatches_total",
        "ossrelay_credential_refreshes_total",
        "ossrelay_job_state",
    ] {
        assert!(refs.contains(m), "alerts do not use {m}");
    }
    // Every rule has an expression.
    assert_eq!(
        text.matches("- alert: ").count(),
        text.matches("expr:").count()
    );
}

/// Paths and their methods from docs/openapi.yaml (two-space indented path keys).
fn openapi_routes(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_paths = false;
    let mut current = None;
    for l in doc.lines() {
        if l == "paths:" {
            in_paths = true;
            continue;
        }
        if in_paths && !l.starts_with(' ') && !l.is_empty() {
            break;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = l.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            current = Some(format!("/{p}"));
        } else if let Some(m) = l.strip_prefix("    ").and_then(|m| m.strip_suffix(':')) {
            if ["get", "post", "delete", "put", "patch"].contains(&m) {
                out.push((current.clone().unwrap(), m.to_uppercase()));
            }
        }
    }
    out
}

/// Property names of a schema in components/schemas.
fn schema_properties(doc: &str, schema: &str) -> BTreeSet<String> {
    let header = format!("    {schema}:");
    let mut lines = doc.lines().skip_while(|l| *l != header).skip(1);
    let mut out = BTreeSet::new();
    let mut in_props = false;
    for l in lines.by_ref() {
        if l.starts_with("    ") && !l.starts_with("     ") {
            break; // next schema
        }
        if l == "      properties:" {
            in_props = true;
            continue;
        }
        if in_props {
            if let Some(rest) = l.strip_prefix("        ") {
                if !rest.starts_with(' ') {
                    if let Some((name, _)) = rest.split_once(':') {
                        out.insert(name.to_string());
                    }
                }
            } else {
                in_props = false;
            }
        }
    }
    assert!(
        !out.is_empty(),
        "schema {schema} not found in the OpenAPI document"
    );
    out
}

#[test]
fn openapi_request_fields_are_the_ones_the_server_accepts() {
    let doc = repo("docs/openapi.yaml");
    let props = schema_properties(&doc, "CopyRequest");
    let mut body = json!({"kind": "copy", "source": "oss://abc/k", "destination": "oss://abd/k"});
    for p in &props {
        let v = match p.as_str() {
            "kind" | "source" | "destination" => continue,
            "src_internal" | "dst_internal" => json!(true),
            "concurrency" => json!(4),
            "shards" => json!(4),
            "part_size" => json!("1MiB"),
            "unpack" => json!("always"),
            // raw/auto: converting forbids the shards above.
            "format" => json!("raw"),
            "input_format" => json!("auto"),
            "src_provider" | "dst_provider" => json!("minio"),
            "src_path_style" | "dst_path_style" => json!(true),
            p if p.ends_with("_endpoint") => json!("http://127.0.0.1:1"),
            _ => json!("name-1"),
        };
        body[p.as_str()] = v;
    }
    let spec = ossrelay::daemon::jobs::parse_spec(body.clone())
        .unwrap_or_else(|e| panic!("documented field refused: {e}"));
    // And the stored job shows every documented field back.
    let shown = serde_json::to_value(&spec).unwrap();
    let shown: BTreeSet<String> = shown.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        shown, props,
        "documented CopyRequest fields vs. the server's"
    );
    let job_props = schema_properties(&doc, "Job");
    for p in &props {
        assert!(job_props.contains(p), "Job schema lacks option {p}");
    }

    // The same for migrate jobs.
    let props = schema_properties(&doc, "MigrateRequest");
    let mut body = json!({"kind": "migrate"});
    for p in &props {
        let v = match p.as_str() {
            "kind" => continue,
            "keep_objects" => json!(true),
            "concurrency" => json!(4),
            "part_size" => json!("1MiB"),
            "image_id" => json!("m-1"),
            "src_cloud" | "dst_cloud" => json!("aliyun"),
            "format" => json!("vhd"),
            "disk_format" => json!("qcow2"),
            "export_prefix" => json!("ossrelay"),
            p if p.ends_with("_endpoint") => json!("http://127.0.0.1:1"),
            _ => json!("name-1"),
        };
        body[p.as_str()] = v;
    }
    let spec = ossrelay::daemon::jobs::parse_spec(body.clone())
        .unwrap_or_else(|e| panic!("documented migrate field refused: {e}"));
    let shown = serde_json::to_value(&spec).unwrap();
    let shown: BTreeSet<String> = shown.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        shown, props,
        "documented MigrateRequest fields vs. the server's"
    );
    for p in &props {
        assert!(job_props.contains(p), "Job schema lacks migrate option {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_and_metrics_are_exported() {
    let w = World::new(|_| {}, |_| {}).await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let routes = openapi_routes(&repo("docs/openapi.yaml"));
    assert!(routes.len() >= 10, "{routes:?}");
    for (path, method) in &routes {
        let p = path.replace("{id}", "j-0123456789abcdef");
        let body = (method == "POST").then_some("{}");
        let (s, text) = d.call_raw(method, &p, "", body).await;
        assert_ne!(s, 405, "{method} {p} is documented but not allowed: {text}");
        assert!(
            !text.contains("no route"),
            "{method} {p} is documented but not routed: {text}"
        );
        assert!(s < 500, "{method} {p}: {s} {text}");
    }
    // Every field of a served job is documented in the Job schema.
    let job_props = schema_properties(&repo("docs/openapi.yaml"), "Job");
    let id = d
        .submit(&copy_job(&w, "none.raw", DST_BUCKET, "none.raw"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = d
        .wait_state(&id, "failed", std::time::Duration::from_secs(30))
        .await;
    for k in j.as_object().unwrap().keys() {
        assert!(
            job_props.contains(k),
            "job field {k} is not in the OpenAPI Job schema"
        );
    }
    // Daemon series are present from the start (job series appear with jobs).
    let m = d.metrics().await;
    for name in ossrelay::daemon::metrics::DAEMON_METRICS {
        assert!(
            m.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics"
        );
    }
    assert!(m.contains("ossrelay_crc_mismatches_total 0"), "{m}");
    // Exposition format: every sample line is `name{labels} value`.
    for l in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample line {l:?}");
    }
}
