//! `ossrelay copy --metrics-listen` serves the documented Prometheus names while a copy runs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn value(text: &str, series_prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(series_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_documented_names_with_sane_values_while_running() {
    let size = 96 * MIB;
    let w = World::with_disk(size, |c| {
        c.conn_rate = Some(16 * MIB);
        c.faults = vec![(ossrelay_sim::FaultKind::Error500, 0.15)];
        c.fault_ops = Some(vec!["UploadPart".into()]);
        c.fault_seed = 3;
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = w.copy_args("disk.raw", DISCARD_BUCKET, "disk.raw");
    args.extend([
        "--part-size".into(),
        "4MiB".into(),
        "--concurrency".into(),
        "4".into(),
        "--metrics-listen".into(),
        addr.clone(),
    ]);
    let mut child = w.command(&args).spawn().unwrap();
    let t0 = Instant::now();
    let mut seen = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if let Some(text) = scrape(&addr) {
            let streamed =
                value(&text, "ossrelay_bytes_total{direction=\"upload\"}").unwrap_or(0.0);
            let retries = value(&text, "ossrelay_retries_total").unwrap_or(0.0);
            // Streamed bytes run ahead of acknowledged ones: on a loaded machine 8 MiB can be
            // on the wire before the first part is acknowledged, so wait for both.
            let acked = value(&text, "ossrelay_acknowledged_bytes_total").unwrap_or(0.0);
            if streamed >= (8 * MIB) as f64 && retries > 0.0 && acked > 0.0 {
                seen = Some(text);
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text =
        seen.expect("no scrape showed upload progress, acknowledged bytes and retries mid-copy");
    for name in [
        "ossrelay_bytes_total{direction=\"download\"}",
        "ossrelay_bytes_total{direction=\"upload\"}",
        "ossrelay_parts_total{",
        "ossrelay_requests_total{",
        "ossrelay_request_duration_seconds_bucket{",
        "ossrelay_inflight_parts",
        "ossrelay_buffered_bytes",
        "ossrelay_concurrency_limit",
        "ossrelay_retries_total{",
        "ossrelay_crc_mismatches_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    let upload = value(&text, "ossrelay_bytes_total{direction=\"upload\"}").unwrap();
    assert!(
        upload <= size as f64,
        "more acknowledged than the object: {upload}"
    );
    let acked = value(&text, "ossrelay_acknowledged_bytes_total").unwrap();
    assert!(
        acked > 0.0 && acked <= size as f64,
        "acknowledged bytes {acked} of {size}"
    );
    // Streamed bytes run ahead of acknowledged ones, never behind.
    assert!(upload >= acked, "upload {upload} < acknowledged {acked}");
    for name in [
        "ossrelay_bytes_total",
        "ossrelay_acknowledged_bytes_total",
        "ossrelay_parts_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
    }
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    let limit = value(&text, "ossrelay_concurrency_limit").unwrap();
    assert!((1.0..=4.0).contains(&limit), "concurrency limit {limit}");
    let inflight = value(&text, "ossrelay_inflight_parts").unwrap();
    assert!(
        (0.0..=4.0).contains(&inflight),
        "in-flight parts {inflight}"
    );
    assert!(
        text.contains("service=\"oss\"") && text.contains("operation=\"UploadPart\""),
        "requests lack labels:\n{text}"
    );
    assert!(!text.contains("SECRET-do-not-leak"), "secret in metrics");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
