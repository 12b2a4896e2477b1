//! `ossrelay serve` end to end against the simulator: submit, list, progress, metrics, watch,
//! pause/resume/cancel, validation, auth and the global memory budget.

mod common;
mod daemon_support;

use std::time::Duration;

use common::*;
use daemon_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_list_progress_metrics_watch_and_delete() {
    let size = 48 * MIB;
    let w = World::new(
        |c| c.synthetic.push(synthetic("disk.raw", size)),
        |c| c.conn_rate = Some(6 * MIB),
    )
    .await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let (s, v) = d.call("GET", "/healthz", None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, _) = d.call("GET", "/readyz", None).await;
    assert_eq!(s, 200);

    let mut body = copy_job(&w, "disk.raw", DISCARD_BUCKET, "copy/");
    body["part_size"] = json!("4MiB");
    body["concurrency"] = json!(2);
    let job = d.submit(&body).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("j-"), "{job}");
    assert!(
        ["queued", "running"].contains(&job["state"].as_str().unwrap()),
        "{job}"
    );
    assert_eq!(job["kind"], "copy");
    assert_eq!(job["part_size"], 4 * MIB, "sizes are stored as bytes");

    let (s, list) = d.call("GET", "/v1/jobs", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["jobs"][0]["id"], id.as_str());
    let (_, none) = d.call("GET", "/v1/jobs?state=succeeded", None).await;
    assert_eq!(none["jobs"].as_array().unwrap().len(), 0, "{none}");

    // Progress moves, with throughput and an ETA while running.
    let j1 = d
        .wait_job(&id, Duration::from_secs(30), |j| {
            j["state"] == "running" && j["bytes_done"].as_u64().unwrap() > 0
        })
        .await;
    let b1 = j1["bytes_done"].as_u64().unwrap();
    let j2 = d
        .wait_job(&id, Duration::from_secs(30), |j| {
            j["bytes_done"].as_u64().unwrap() > b1 || j["state"] != "running"
        })
        .await;
    assert_eq!(j2["state"], "running", "the copy should still run: {j2}");
    assert_eq!(j2["bytes_total"], size);
    assert_eq!(j2["stage"], "transferring");
    assert!(
        j2["throughput_bytes_per_sec"].as_f64().unwrap() > 0.0,
        "{j2}"
    );
    assert!(j2["eta_seconds"].as_f64().unwrap() > 0.0, "{j2}");

    // Metrics while it runs: documented names with sane values.
    let m = d.metrics().await;
    let label = format!("job_id=\"{id}\"");
    let done = sample(&m, "ossrelay_job_bytes_total", &label).expect("job bytes");
    assert!(done > 0.0 && done <= size as f64, "{done}");
    assert_eq!(
        sample(&m, "ossrelay_job_size_bytes", &label),
        Some(size as f64)
    );
    assert_eq!(
        sample(
            &m,
            "ossrelay_job_state",
            &format!("{label},state=\"running\"")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "ossrelay_job_stage",
            &format!("{label},stage=\"transferring\"")
        ),
        Some(1.0)
    );
    assert_eq!(sample(&m, "ossrelay_jobs", "state=\"running\""), Some(1.0));
    assert_eq!(sample(&m, "ossrelay_jobs", "state=\"queued\""), Some(0.0));
    assert_eq!(sample(&m, "ossrelay_build_info", "version="), Some(1.0));
    assert!(
        sample(&m, "ossrelay_bytes_total", "direction=\"upload\"").unwrap() > 0.0,
        "{m}"
    );
    assert!(
        sample(&m, "ossrelay_requests_total", "operation=\"UploadPart\"").is_some(),
        "{m}"
    );
    assert!(
        m.contains("ossrelay_request_duration_seconds_bucket"),
        "{m}"
    );
    assert_eq!(sample(&m, "ossrelay_crc_mismatches_total", ""), Some(0.0));
    // Parts under way include those awaiting their acknowledgement, which hold no slot: at
    // most 2 × concurrency (2 here).
    let inflight = sample(&m, "ossrelay_job_inflight_parts", &label).unwrap();
    assert!((0.0..=4.0).contains(&inflight), "{inflight}");
    assert_eq!(sample(&m, "ossrelay_daemon_max_jobs", ""), Some(2.0));
    let limit = sample(&m, "ossrelay_job_concurrency_limit", &label).unwrap();
    assert!((1.0..=2.0).contains(&limit), "{limit}");

    // `jobs watch` follows it to the end and exits 0.
    let out = w
        .run(vec![
            "jobs".into(),
            "--server".into(),
            format!("http://{}", d.addr),
            "watch".into(),
            id.clone(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (src_size, src_crc) = w.src.object_crc64(SRC_BUCKET, "disk.raw").unwrap();
    assert!(
        stdout(&out).contains(&src_crc.to_string()),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        w.dst.object_crc64(DISCARD_BUCKET, "copy/disk.raw"),
        Some((src_size, src_crc)),
        "a destination key ending in / takes the source's name"
    );
    let done = d.job(&id).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["stage"], "done");
    assert_eq!(done["result"]["crc64"], src_crc.to_string());
    assert_eq!(done["bytes_done"], size);
    assert!(done["finished_at"].is_string());
    assert_eq!(w.dst.stats()["open_uploads"], 0);

    // `jobs list` and `jobs show` through the binary.
    let server = format!("http://{}", d.addr);
    let out = w
        .run(vec![
            "jobs".into(),
            "--server".into(),
            server.clone(),
            "list".into(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&id) && stdout(&out).contains("succeeded"),
        "{}",
        stdout(&out)
    );

    // Deleting a finished job removes it and its metric labels.
    let (s, _) = d.call("DELETE", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, v) = d.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    let m = d.metrics().await;
    assert!(!m.contains(&id), "deleted job still labelled in /metrics");
    let (s, _) = d.call("DELETE", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_pause_resume_and_cancel_leave_no_upload_behind() {
    let size = 96 * MIB;
    let w = World::new(
        |c| c.synthetic.push(synthetic("big.raw", size)),
        |c| c.conn_rate = Some(6 * MIB),
    )
    .await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &["--max-jobs", "1"]).await;
    let mut body = copy_job(&w, "big.raw", DISCARD_BUCKET, "a.raw");
    body["part_size"] = json!(4 * MIB);
    body["concurrency"] = json!(2);
    let a = d.submit(&body).await["id"].as_str().unwrap().to_string();
    let (s, v) = d.call("POST", "/v1/jobs", Some(&body.to_string())).await;
    assert_eq!(
        s, 409,
        "a second job writing the same object is refused: {v}"
    );
    assert!(v["error"]["message"].as_str().unwrap().contains(&a), "{v}");
    body["destination"] = json!(format!("oss://{DISCARD_BUCKET}/b.raw"));
    let b = d.submit(&body).await["id"].as_str().unwrap().to_string();

    d.wait_job(&a, Duration::from_secs(30), |j| {
        j["bytes_done"].as_u64().unwrap() >= 8 * MIB
    })
    .await;
    assert_eq!(
        d.job(&b).await["state"],
        "queued",
        "--max-jobs 1 keeps the second job queued"
    );
    let (s, _) = d.call("GET", "/v1/jobs?state=queued", None).await;
    assert_eq!(s, 200);

    // Cancelling a queued job: nothing was started, nothing to abort.
    let (s, v) = d.call("POST", &format!("/v1/jobs/{b}/cancel"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let (s, v) = d.call("POST", &format!("/v1/jobs/{b}/pause"), None).await;
    assert_eq!(s, 409, "a cancelled job cannot be paused: {v}");

    // Pause keeps the upload and its parts; nothing moves while paused.
    let (s, v) = d.call("POST", &format!("/v1/jobs/{a}/pause"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "paused", "{v}");
    let paused_at = v["bytes_done"].as_u64().unwrap();
    assert!(paused_at >= 8 * MIB && paused_at < size, "{v}");
    assert_eq!(
        w.dst.stats()["open_uploads"],
        1,
        "pause keeps the multipart upload"
    );
    let in_before = w.dst.stats()["bytes_in"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        w.dst.stats()["bytes_in"].as_u64().unwrap(),
        in_before,
        "bytes moved while paused"
    );
    let (_, m) = d.call_raw("GET", "/metrics", "", None).await;
    assert_eq!(sample(&m, "ossrelay_jobs", "state=\"paused\""), Some(1.0));

    // Resume continues from the acknowledged parts (resumed bytes are not sent again).
    let (s, v) = d.call("POST", &format!("/v1/jobs/{a}/resume"), None).await;
    assert_eq!(s, 200, "{v}");
    let j = d
        .wait_job(&a, Duration::from_secs(30), |j| {
            j["state"] == "running" && j["bytes_done"].as_u64().unwrap() > paused_at
        })
        .await;
    assert_eq!(j["runs"], 2, "{j}");
    let in_after = w.dst.stats()["bytes_in"].as_u64().unwrap();
    let sent = in_after - in_before;
    assert!(
        sent <= j["bytes_done"].as_u64().unwrap() - paused_at + 2 * 4 * MIB,
        "resume re-sent acknowledged parts: {sent} bytes in after resume, {j}"
    );

    // Cancel aborts the multipart upload.
    let (s, v) = d.call("POST", &format!("/v1/jobs/{a}/cancel"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(
        w.dst.stats()["open_uploads"],
        0,
        "cancel must abort the upload"
    );
    assert!(
        !w.state_dir().join("jobs").join(&a).exists(),
        "the job's resume state is removed"
    );
    let (s, _) = d.call("POST", &format!("/v1/jobs/{a}/resume"), None).await;
    assert_eq!(s, 409);
    let (s, _) = d.call("DELETE", &format!("/v1/jobs/{a}"), None).await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_with_reasons() {
    let w = World::new(|_| {}, |_| {}).await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let good = copy_job(&w, "x.raw", DST_BUCKET, "x.raw");
    let with = |k: &str, v: serde_json::Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "body"),
        ("[1,2]".into(), "body"),
        (json!({"source": "oss://abc/k"}).to_string(), "kind"),
        (with("kind", json!("teleport")), "kind"),
        (with("part_size", json!("lots")), "part_size"),
        (with("part_size", json!(10)), "part_size"),
        (with("concurrency", json!(-1)), "concurrency"),
        (with("concurrency", json!("8")), "concurrency"),
        (with("src_endpoint", json!("ftp://x")), "src_endpoint"),
        (with("source", json!("/etc/passwd")), "source"),
        (with("destination", json!("s3://b/k")), "destination"),
        (with("no_such_option", json!(true)), "no_such_option"),
        (with("access_key_secret", json!("s")), "access_key_secret"),
        (
            with("dst_endpoint", json!("https://collector.example.com")),
            "dst_endpoint",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = d.call("POST", "/v1/jobs", Some(&body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5, "{v}");
    }
    let (s, v) = d
        .call("POST", "/v1/jobs", Some(r#"{"kind":"migrate"}"#))
        .await;
    // A migrate job names its first missing option (tests/daemon_migrate.rs runs one).
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("src_region")),
        "{v}"
    );
    let (s, v) = d.call("GET", "/v1/jobs?state=sleeping", None).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("state")));

    // Oversize bodies: declared or streamed.
    let big = format!(r#"{{"kind":"copy","pad":"{}"}}"#, "x".repeat(100 * 1024));
    let (s, _) = d.call("POST", "/v1/jobs", Some(&big)).await;
    assert_eq!(s, 413);
    let chunked = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        big.len(),
        big
    );
    let (s, _) = raw(&d.addr, chunked.as_bytes()).await;
    assert_eq!(s, 413);

    // Unknown ids, malformed ids and traversal attempts never reach the file system.
    for (method, path) in [
        ("GET", "/v1/jobs/j-0123456789abcdef"),
        ("DELETE", "/v1/jobs/j-0123456789abcdef"),
        ("POST", "/v1/jobs/j-0123456789abcdef/cancel"),
        ("POST", "/v1/jobs/j-0123456789abcdef/pause"),
        ("POST", "/v1/jobs/j-0123456789abcdef/resume"),
    ] {
        let (s, v) = d.call(method, path, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    for path in [
        "/v1/jobs/../../etc/passwd",
        "/v1/jobs/..%2F..%2Fjobs.redb",
        "/v1/jobs/%2e%2e",
        "/v1/jobs/j-0123456789abcdef/../../jobs.redb",
        "/v1/jobs/j-..%2f..%2fjobs.redb",
    ] {
        for method in ["GET", "DELETE", "POST"] {
            let p = if method == "POST" {
                format!("{path}/cancel")
            } else {
                path.to_string()
            };
            let (s, body) = d.call_raw(method, &p, "", None).await;
            assert!(s == 404 || s == 400, "{method} {p}: {s} {body}");
        }
    }
    assert!(
        w.state_dir().join("jobs.redb").exists(),
        "the database is still there"
    );
    let (s, _) = d.call("PUT", "/v1/jobs", Some("{}")).await;
    assert_eq!(s, 405);
    let (s, _) = d.call("GET", "/v2/jobs", None).await;
    assert_eq!(s, 404);

    // A job whose source does not exist fails with a readable error, and can be deleted.
    let id = d.submit(&good).await["id"].as_str().unwrap().to_string();
    let j = d.wait_state(&id, "failed", Duration::from_secs(30)).await;
    assert_eq!(j["state"], "failed", "{j}");
    let err = j["last_error"].as_str().unwrap();
    assert!(err.contains("x.raw"), "{err}");
    assert!(!j.to_string().contains("SECRET-do-not-leak"), "{j}");
    let (s, _) = d.call("DELETE", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(s, 204);
    // Deleting a queued/running job is refused.
    let (s, _) = d.call("GET", "/v1/jobs", None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_api() {
    let w = World::new(|_| {}, |_| {}).await;
    let state = w.state_dir();
    // Non-loopback without a token: refuses to start.
    let out = w
        .run(vec![
            "serve".into(),
            "--listen".into(),
            "0.0.0.0:0".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ])
        .await;
    assert_clean_failure(&out, 2, "token");
    // A token that is too short is refused too.
    let short = w.dir.path().join("short-token");
    std::fs::write(&short, "abc\n").unwrap();
    let out = w
        .run(vec![
            "serve".into(),
            "--listen".into(),
            "0.0.0.0:0".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--token-file".into(),
            short.display().to_string(),
        ])
        .await;
    assert_clean_failure(&out, 2, "token");

    let token_file = w.dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789abcdef\n").unwrap();
    let tf = token_file.display().to_string();
    let d = start_daemon(w.dir.path(), &state, &["--token-file", &tf]).await;
    // A second daemon on the same state directory refuses to start.
    let out = w
        .run(vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--state-dir".into(),
            state.display().to_string(),
        ])
        .await;
    assert_clean_failure(&out, 1, "another `ossrelay serve`");
    let (s, _) = d.call_raw("GET", "/v1/jobs", "", None).await;
    assert_eq!(s, 401);
    let (s, _) = d
        .call_raw(
            "GET",
            "/v1/jobs",
            "Authorization: Bearer wrong-token-0123456789abc\r\n",
            None,
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = d
        .call_raw("GET", "/metrics", "Authorization: Basic czNjcmV0\r\n", None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = d.call_raw("POST", "/v1/jobs", "", Some("{}")).await;
    assert_eq!(s, 401, "validation must not run before authentication");
    let (s, v) = d.call("GET", "/v1/jobs", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = d.call_raw("GET", "/healthz", "", None).await;
    assert_eq!(s, 200, "health checks need no token");

    // The CLI client reads the token from --token-file.
    let server = format!("http://{}", d.addr);
    let out = w
        .run(vec![
            "jobs".into(),
            "--server".into(),
            server.clone(),
            "list".into(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    let out = w
        .run(vec![
            "jobs".into(),
            "--server".into(),
            server.clone(),
            "--token-file".into(),
            tf.clone(),
            "list".into(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // `jobs submit copy` sends the copy options and prints the new id.
    let mut args: Vec<String> = [
        "jobs",
        "--server",
        &server,
        "--token-file",
        &tf,
        "submit",
        "copy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        format!("oss://{SRC_BUCKET}/none.raw"),
        format!("oss://{DST_BUCKET}/none.raw"),
        "--src-endpoint".into(),
        w.src.endpoint(),
        "--dst-endpoint".into(),
        w.dst.endpoint(),
        "--src-profile".into(),
        "src".into(),
        "--dst-profile".into(),
        "dst".into(),
        "--part-size".into(),
        "8MiB".into(),
        "--concurrency".into(),
        "3".into(),
    ]);
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let j = d.job(&id).await;
    assert_eq!(
        (j["part_size"].as_u64(), j["concurrency"].as_u64()),
        (Some(8 * MIB), Some(3)),
        "{j}"
    );
    assert_eq!(j["src_profile"], "src");
    // `jobs submit migrate` reaches the daemon, which says what it supports.
    let out = w
        .run(
            [
                "jobs",
                "--server",
                &server,
                "--token-file",
                &tf,
                "submit",
                "migrate",
                "--set",
                "image_id=m-123",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // An incomplete migrate job is a 400 naming the first missing field.
    assert!(stderr(&out).contains("src_region"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bandwidth_cap_is_shared_by_all_jobs() {
    let size = 6 * MIB;
    let w = World::new(
        |c| {
            c.synthetic.push(synthetic("one.raw", size));
            c.synthetic.push(synthetic("two.raw", size));
        },
        |_| {},
    )
    .await;
    let d = start_daemon(
        w.dir.path(),
        &w.state_dir(),
        &["--max-jobs", "2", "--bandwidth", "4MiB/s"],
    )
    .await;
    let t0 = std::time::Instant::now();
    let mut ids = Vec::new();
    for key in ["one.raw", "two.raw"] {
        let mut body = copy_job(&w, key, DISCARD_BUCKET, key);
        body["part_size"] = json!("1MiB");
        ids.push(d.submit(&body).await["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let j = d.wait_state(id, "succeeded", Duration::from_secs(30)).await;
        assert_eq!(j["state"], "succeeded", "{j}");
    }
    // 12 MiB through one 4 MiB/s bucket (1 MiB burst) takes at least 2.75 s; two separate
    // 4 MiB/s caps would finish in about 1.5 s.
    let el = t0.elapsed().as_secs_f64();
    assert!(el >= 2.5, "12 MiB moved in {el:.2}s: the cap is not shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_share_the_global_memory_budget() {
    let size = 24 * MIB;
    let budget = 2 * MIB;
    let w = World::new(
        |c| {
            c.synthetic.push(synthetic("one.raw", size));
            c.synthetic.push(synthetic("two.raw", size));
        },
        |c| c.conn_rate = Some(4 * MIB),
    )
    .await;
    let d = start_daemon(
        w.dir.path(),
        &w.state_dir(),
        &["--max-jobs", "2", "--memory", "2MiB"],
    )
    .await;
    let mut ids = Vec::new();
    for key in ["one.raw", "two.raw"] {
        let mut body = copy_job(&w, key, DISCARD_BUCKET, key);
        body["part_size"] = json!("1MiB");
        body["concurrency"] = json!(8);
        ids.push(d.submit(&body).await["id"].as_str().unwrap().to_string());
    }
    // Both run at once and both make progress: neither starves the other.
    let mut both_moving = false;
    let mut max_in_use = 0.0f64;
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(45) {
        let a = d.job(&ids[0]).await;
        let b = d.job(&ids[1]).await;
        let m = d.metrics().await;
        max_in_use = max_in_use.max(sample(&m, "ossrelay_daemon_memory_in_use_bytes", "").unwrap());
        if a["state"] == "running"
            && b["state"] == "running"
            && a["bytes_done"].as_u64().unwrap() > 0
            && b["bytes_done"].as_u64().unwrap() > 0
        {
            both_moving = true;
        }
        if a["state"] == "succeeded" && b["state"] == "succeeded" {
            break;
        }
        assert!(a["state"] != "failed" && b["state"] != "failed", "{a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        both_moving,
        "the two jobs never made progress at the same time"
    );
    for (id, key) in ids.iter().zip(["one.raw", "two.raw"]) {
        assert_eq!(d.job(id).await["state"], "succeeded");
        assert_eq!(
            w.dst.object_crc64(DISCARD_BUCKET, key),
            w.src.object_crc64(SRC_BUCKET, key)
        );
    }
    let m = d.metrics().await;
    let peak = sample(&m, "ossrelay_daemon_memory_peak_bytes", "").unwrap();
    assert!(
        peak > 0.0 && peak <= budget as f64,
        "peak {peak} over budget {budget}"
    );
    assert!(max_in_use <= budget as f64, "{max_in_use}");
    assert_eq!(
        sample(&m, "ossrelay_daemon_memory_budget_bytes", ""),
        Some(budget as f64)
    );
    let buffered = sample(&m, "ossrelay_buffered_bytes", "").unwrap();
    assert!(buffered <= budget as f64, "{buffered}");
}

/// #18 item 6: a second job writing the same object is refused however its endpoint and
/// region are spelled (on the old code every spelling below was accepted with 201, and both
/// jobs "succeeded" over each other's upload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_destination_under_another_spelling_is_refused() {
    let w = World::new(
        |c| c.synthetic.push(synthetic("big.raw", 512 * MIB)),
        |c| c.conn_rate = Some(2 * MIB),
    )
    .await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &["--max-jobs", "1"]).await;
    // A long job holds the only slot: the jobs compared below stay queued (never run) while
    // they are compared, whatever their endpoints.
    let mut blocker = copy_job(&w, "big.raw", DISCARD_BUCKET, "blocker.raw");
    blocker["part_size"] = json!("4MiB");
    blocker["concurrency"] = json!(1);
    let blocker = d.submit(&blocker).await["id"].as_str().unwrap().to_string();
    d.wait_state(&blocker, "running", Duration::from_secs(30))
        .await;

    let ep = w.dst.endpoint();
    let port = ep.rsplit(':').next().unwrap().to_string();
    let job = |set: &[(&str, serde_json::Value)], unset: &[&str]| {
        let mut b = copy_job(&w, "x.raw", DST_BUCKET, "x.raw");
        for (k, v) in set {
            b[*k] = v.clone();
        }
        for k in unset {
            b.as_object_mut().unwrap().remove(*k);
        }
        b
    };
    let at = |e: &str| job(&[("dst_endpoint", json!(e))], &[]);
    let hz = "https://oss-cn-hangzhou.aliyuncs.com";
    // (what differs, first job, second job, second refused?)
    let cases = vec![
        ("trailing /", at(&ep), at(&format!("{ep}/")), true),
        (
            "localhost for 127.0.0.1",
            at(&ep),
            at(&format!("http://localhost:{port}")),
            true,
        ),
        (
            "case of scheme and host",
            at(&ep),
            at(&format!("HTTP://LocalHost:{port}")),
            true,
        ),
        (
            "explicit default port",
            at("http://127.0.0.1:80"),
            at("http://127.0.0.1"),
            true,
        ),
        (
            "explicit https port",
            at(hz),
            at(&format!("{hz}:443/")),
            true,
        ),
        (
            "explicit dst_region equal to the profile's",
            job(&[], &["dst_region"]),
            job(&[("dst_region", json!(DST_REGION))], &[]),
            true,
        ),
        (
            "explicit default dst_region",
            job(&[], &["dst_region", "dst_profile"]),
            job(&[("dst_region", json!(SRC_REGION))], &["dst_profile"]),
            true,
        ),
        (
            "internal endpoint for the public one",
            job(
                &[
                    ("dst_region", json!(SRC_REGION)),
                    ("dst_internal", json!(true)),
                ],
                &["dst_endpoint"],
            ),
            at(hz),
            true,
        ),
        (
            "a directory destination naming the same object",
            at(&ep),
            job(
                &[("destination", json!(format!("oss://{DST_BUCKET}/")))],
                &[],
            ),
            true,
        ),
        // Controls: another server, another object.
        ("another port", at(&ep), at("http://127.0.0.1:1"), false),
        (
            "another key",
            at(&ep),
            job(
                &[("destination", json!(format!("oss://{DST_BUCKET}/y.raw")))],
                &[],
            ),
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (what, first, second, refused) in cases {
        let a = d.submit(&first).await["id"].as_str().unwrap().to_string();
        let (s, v) = d.call("POST", "/v1/jobs", Some(&second.to_string())).await;
        if refused {
            if s != 409 || !v["error"]["message"].as_str().unwrap_or("").contains(&a) {
                failures.push(format!("{what}: want 409 naming {a}, got {s} {v}"));
            }
        } else if s != 201 {
            failures.push(format!("{what}: want 201, got {s} {v}"));
        }
        let mut ids = vec![a];
        if s == 201 {
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        for id in ids {
            let (s, v) = d.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
            assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")), "{v}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(d.job(&blocker).await["state"], "running");
    let (s, _) = d
        .call("POST", &format!("/v1/jobs/{blocker}/cancel"), None)
        .await;
    assert_eq!(s, 200);
}

/// Rounds of each command race: at 150 ms apart a race is won by whichever side happens to
/// be faster, so one round proves little; 20 rounds made the old code fail most of them.
const RACE_ROUNDS: usize = 20;

/// #18 item 7: a resume sent 150 ms after a pause, while the pause is still taking effect
/// (in-flight parts finishing), is honoured once the pause lands: the job ends running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_150ms_after_a_pause_ends_running() {
    let w = World::new(
        |c| c.synthetic.push(synthetic("big.raw", 4096 * MIB)),
        |c| c.conn_rate = Some(4 * MIB),
    )
    .await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let mut body = copy_job(&w, "big.raw", DISCARD_BUCKET, "big.raw");
    // Parts of 2 MiB at 4 MiB/s: a pause waits up to half a second for in-flight parts.
    body["part_size"] = json!("2MiB");
    body["concurrency"] = json!(2);
    let id = d.submit(&body).await["id"].as_str().unwrap().to_string();
    let mut lost = Vec::new();
    for round in 0..RACE_ROUNDS {
        let before = d
            .wait_job(&id, Duration::from_secs(60), |j| {
                j["state"] == "running" && j["stage"] == "transferring"
            })
            .await;
        let pause_path = format!("/v1/jobs/{id}/pause");
        let (pause, resume) = tokio::join!(d.call("POST", &pause_path, None), async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            d.call("POST", &format!("/v1/jobs/{id}/resume"), None).await
        });
        assert!(
            pause.0 == 200 && [200, 202].contains(&resume.0),
            "round {round}: pause {pause:?}, resume {resume:?}"
        );
        // Both answered: the pause has landed (or the resume says it is still pending).
        let j = d.job(&id).await;
        if j["state"] == "paused" {
            lost.push(round);
            let (s, v) = d.call("POST", &format!("/v1/jobs/{id}/resume"), None).await;
            assert_eq!(s, 200, "{v}");
        } else {
            assert!(
                ["queued", "running"].contains(&j["state"].as_str().unwrap()),
                "round {round}: {j}"
            );
        }
        let after = d
            .wait_job(&id, Duration::from_secs(60), |j| j["state"] == "running")
            .await;
        assert!(
            after["runs"].as_u64() > before["runs"].as_u64(),
            "round {round}: the pause never stopped the job: {after}"
        );
    }
    assert!(
        lost.is_empty(),
        "the resume was lost (job ended paused) in {} of {RACE_ROUNDS} rounds: {lost:?}",
        lost.len()
    );
    let (s, v) = d.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    assert_eq!(w.dst.stats()["open_uploads"], 0);
}

/// #18 item 7: cancel is sticky. A pause 150 ms after a cancel, and a resume 50 ms after
/// that, are refused with 409 and the job's state; the job ends cancelled, its upload aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_or_resume_after_a_cancel_is_refused_and_the_job_ends_cancelled() {
    let w = World::new(
        |c| c.synthetic.push(synthetic("big.raw", 1024 * MIB)),
        |c| c.conn_rate = Some(4 * MIB),
    )
    .await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let mut body = copy_job(&w, "big.raw", DISCARD_BUCKET, "big.raw");
    body["part_size"] = json!("2MiB");
    body["concurrency"] = json!(2);
    let mut failures = Vec::new();
    for round in 0..RACE_ROUNDS {
        let id = d.submit(&body).await["id"].as_str().unwrap().to_string();
        // An acknowledged part: the multipart upload exists and must be aborted.
        d.wait_job(&id, Duration::from_secs(60), |j| {
            j["state"] == "running" && j["bytes_done"].as_u64().unwrap() > 0
        })
        .await;
        let path = |cmd: &str| format!("/v1/jobs/{id}/{cmd}");
        let cancel_path = path("cancel");
        let (cancel, pause, resume) = tokio::join!(
            d.call("POST", &cancel_path, None),
            async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                d.call("POST", &path("pause"), None).await
            },
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                d.call("POST", &path("resume"), None).await
            }
        );
        let mut problems = Vec::new();
        if (cancel.0, cancel.1["state"].as_str()) != (200, Some("cancelled")) {
            problems.push(format!("cancel answered {cancel:?}"));
        }
        for (cmd, (s, v)) in [("pause", &pause), ("resume", &resume)] {
            if *s != 409 {
                problems.push(format!("{cmd} answered {s} {v}"));
                continue;
            }
            let state = v["error"]["state"].as_str().unwrap_or("");
            let told =
                state == "cancelled" || (state == "running" && v["error"]["stage"] == "cancelling");
            if !told {
                problems.push(format!("{cmd}'s 409 does not carry the job's state: {v}"));
            }
        }
        // Old code: the job ended paused (or was started again) with its upload kept.
        let j = d
            .wait_job(&id, Duration::from_secs(30), |j| j["state"] != "running")
            .await;
        if j["state"] != "cancelled" {
            problems.push(format!("ended {}", j["state"]));
            let _ = d.call("POST", &path("cancel"), None).await;
        }
        if w.dst.stats()["open_uploads"] != 0 {
            problems.push("the upload was not aborted".into());
            let _ = d.call("POST", &path("cancel"), None).await;
        }
        if !problems.is_empty() {
            failures.push(format!("round {round}: {}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {RACE_ROUNDS} rounds lost the cancel:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// #18 item 7: a request that announces a body and never sends it is answered 408 (and the
/// connection closed) after the daemon's body timeout, 10 s; the old daemon held it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_cut_off_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::new(|_| {}, |_| {}).await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let stall = |path: &'static str| {
        let addr = d.addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"kind\":"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let t0 = std::time::Instant::now();
            let mut buf = Vec::new();
            // The connection stays open on our side: only the daemon can end this read.
            let r = tokio::time::timeout(Duration::from_secs(25), s.read_to_end(&mut buf)).await;
            (
                r.is_ok(),
                t0.elapsed(),
                String::from_utf8_lossy(&buf).into_owned(),
            )
        }
    };
    let (submit, cancel) = tokio::join!(
        stall("/v1/jobs"),
        stall("/v1/jobs/j-0123456789abcdef/cancel")
    );
    for (what, (closed, took, text)) in [("submit", submit), ("cancel", cancel)] {
        assert!(
            closed,
            "{what}: the daemon held the connection for {took:?}: {text:?}"
        );
        assert!(
            took >= Duration::from_secs(9) && took <= Duration::from_secs(15),
            "{what}: cut after {took:?}"
        );
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text:?}");
        assert!(text.contains("request_timeout"), "{what}: {text:?}");
    }
    let (s, _) = d.call("GET", "/healthz", None).await;
    assert_eq!(s, 200, "the daemon still serves");
}

/// #18 item 7: cancel is sticky for a paused job too. Its cancel aborts the upload (slow here:
/// every response of the destination takes 300 ms); a resume arriving meanwhile is refused
/// with 409 and the state, instead of starting the job on the upload being aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_while_a_paused_job_is_being_cancelled_is_refused() {
    let w = World::new(
        |c| c.synthetic.push(synthetic("big.raw", 1024 * MIB)),
        |c| {
            c.conn_rate = Some(4 * MIB);
            c.latency = Duration::from_millis(300);
        },
    )
    .await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let mut body = copy_job(&w, "big.raw", DISCARD_BUCKET, "big.raw");
    body["part_size"] = json!("1MiB");
    body["concurrency"] = json!(2);
    let mut failures = Vec::new();
    for round in 0..RACE_ROUNDS {
        let id = d.submit(&body).await["id"].as_str().unwrap().to_string();
        d.wait_job(&id, Duration::from_secs(60), |j| {
            j["state"] == "running" && j["bytes_done"].as_u64().unwrap() > 0
        })
        .await;
        let path = |cmd: &str| format!("/v1/jobs/{id}/{cmd}");
        let (s, v) = d.call("POST", &path("pause"), None).await;
        assert_eq!((s, v["state"].as_str()), (200, Some("paused")), "{v}");
        let cancel_path = path("cancel");
        let (cancel, resume) = tokio::join!(d.call("POST", &cancel_path, None), async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            d.call("POST", &path("resume"), None).await
        });
        let mut problems = Vec::new();
        if (cancel.0, cancel.1["state"].as_str()) != (200, Some("cancelled")) {
            problems.push(format!(
                "cancel answered {} {}",
                cancel.0, cancel.1["state"]
            ));
        }
        let told =
            ["paused", "cancelled"].contains(&resume.1["error"]["state"].as_str().unwrap_or(""));
        if resume.0 != 409 || !told {
            problems.push(format!("resume answered {} {}", resume.0, resume.1));
        }
        // The old daemon started the job again on the upload being aborted.
        let j = d
            .wait_job(&id, Duration::from_secs(30), |j| {
                !["running", "queued"].contains(&j["state"].as_str().unwrap())
            })
            .await;
        if j["state"] != "cancelled" {
            problems.push(format!("ended {}", j["state"]));
        }
        if w.dst.stats()["open_uploads"] != 0 {
            problems.push("an upload was left open".into());
        }
        if !problems.is_empty() {
            failures.push(format!("round {round}: {}", problems.join("; ")));
            if j["state"] != "cancelled" {
                let _ = d.call("POST", &path("cancel"), None).await;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {RACE_ROUNDS} rounds lost the cancel:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A gzip'd tar of one member, as ECS exports a RAW image (`<name>.raw.tar.gz`).
fn tar_gz(member: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, member, data).unwrap();
    b.into_inner().unwrap().finish().unwrap()
}

/// A copy job with `"unpack"` streams the image out of an export archive, as `copy --unpack`
/// does; without it (the default for jobs) the archive is copied as it is; a bad value is a
/// 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_job_can_unpack_an_export_archive() {
    let w = World::new(|_| {}, |_| {}).await;
    let raw = bytes(3 * MIB as usize + 123, 17);
    let archive = tar_gz("d_system.raw", &raw);
    w.src.put_object_bytes(
        SRC_BUCKET,
        "exports/d_system.raw.tar.gz",
        bytes::Bytes::from(archive.clone()),
    );
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;

    let mut bad = copy_job(&w, "exports/d_system.raw.tar.gz", DST_BUCKET, "images/");
    bad["unpack"] = json!("sometimes");
    let (s, v) = d.call("POST", "/v1/jobs", Some(&bad.to_string())).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("unpack")),
        "{v}"
    );

    let mut body = copy_job(&w, "exports/d_system.raw.tar.gz", DST_BUCKET, "images/");
    body["unpack"] = json!("auto");
    body["part_size"] = json!("1MiB");
    let job = d.submit(&body).await;
    assert_eq!(job["unpack"], "auto", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = d
        .wait_state(&id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["member"], "d_system.raw", "{done}");
    let crc = ossrelay::crc64::checksum(&raw);
    assert_eq!(done["result"]["crc64"], crc.to_string(), "{done}");
    assert_eq!(done["result"]["bytes"], raw.len() as u64, "{done}");
    assert_eq!(
        w.dst.object_crc64(DST_BUCKET, "images/d_system.raw"),
        Some((raw.len() as u64, crc)),
        "the RAW, not the archive, is at the member's name"
    );

    // Jobs do not unpack unless asked: the archive arrives as it is.
    let plain = copy_job(&w, "exports/d_system.raw.tar.gz", DST_BUCKET, "as-is/");
    let id = d.submit(&plain).await["id"].as_str().unwrap().to_string();
    let done = d
        .wait_state(&id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        w.dst
            .object_crc64(DST_BUCKET, "as-is/d_system.raw.tar.gz")
            .map(|(n, _)| n),
        Some(archive.len() as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_job_can_run_in_shards() {
    let w = World::new(|_| {}, |_| {}).await;
    let data = bytes(6 * MIB as usize + 77, 23);
    w.src
        .put_object_bytes(SRC_BUCKET, "disk.raw", bytes::Bytes::from(data.clone()));
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let mut bad = copy_job(&w, "disk.raw", DST_BUCKET, "disk.raw");
    bad["shards"] = json!(0);
    let (s, v) = d.call("POST", "/v1/jobs", Some(&bad.to_string())).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("shards")),
        "{v}"
    );

    let mut body = copy_job(&w, "disk.raw", DST_BUCKET, "disk.raw");
    body["shards"] = json!(3);
    body["part_size"] = json!("1MiB");
    let job = d.submit(&body).await;
    assert_eq!(job["shards"], 3, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = d
        .wait_state(&id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let crc = ossrelay::crc64::checksum(&data);
    assert_eq!(done["result"]["crc64"], crc.to_string(), "{done}");
    assert_eq!(done["result"]["parts"], 7, "{done}");
    let got = w.dst.get_object_bytes(DST_BUCKET, "disk.raw").unwrap();
    assert!(got.as_ref() == data.as_slice(), "bytes differ");
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_sharded_copy_job_aborts_its_upload() {
    let w = World::new(|_| {}, |c| c.conn_rate = Some(2 * MIB)).await;
    w.src.put_object_bytes(
        SRC_BUCKET,
        "disk.raw",
        bytes::Bytes::from(bytes(24 * MIB as usize, 5)),
    );
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let mut body = copy_job(&w, "disk.raw", DST_BUCKET, "disk.raw");
    body["shards"] = json!(2);
    body["part_size"] = json!("1MiB");
    body["concurrency"] = json!(2);
    let id = d.submit(&body).await["id"].as_str().unwrap().to_string();
    d.wait_job(&id, Duration::from_secs(30), |j| {
        j["bytes_done"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let (s, v) = d.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(
        w.dst.stats()["open_uploads"],
        0,
        "cancel must abort the upload"
    );
    assert!(
        w.dst
            .get_object_bytes(DST_BUCKET, "disk.raw.ossrelay/manifest.json")
            .is_none(),
        "the plan is removed"
    );
}

/// A copy job with `"format"` converts as `copy --format` does: the RAW arrives as a QCOW2
/// named with the container's extension, which qemu-img finds sound and identical to the
/// RAW, and the result carries the guest disk's size and CRC-64. A bad value is a 400
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_job_can_convert_to_qcow2() {
    let w = World::new(|_| {}, |_| {}).await;
    let size = 5 * MIB as usize + 512;
    let mut raw = vec![0u8; size];
    raw[100..200_100].copy_from_slice(&bytes(200_000, 3));
    raw[4 * MIB as usize..4 * MIB as usize + 70_000].copy_from_slice(&bytes(70_000, 4));
    w.src
        .put_object_bytes(SRC_BUCKET, "disks/d.raw", bytes::Bytes::from(raw.clone()));
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;

    for (field, v) in [("format", "vmdk"), ("input_format", "iso")] {
        let mut bad = copy_job(&w, "disks/d.raw", DST_BUCKET, "images/");
        bad[field] = json!(v);
        let (s, e) = d.call("POST", "/v1/jobs", Some(&bad.to_string())).await;
        assert_eq!((s, e["error"]["field"].as_str()), (400, Some(field)), "{e}");
    }

    let mut body = copy_job(&w, "disks/d.raw", DST_BUCKET, "images/");
    body["format"] = json!("qcow2");
    body["input_format"] = json!("auto");
    body["part_size"] = json!("1MiB");
    let job = d.submit(&body).await;
    assert_eq!(job["format"], "qcow2", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let done = d
        .wait_state(&id, "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["format"], "qcow2", "{done}");
    assert_eq!(r["raw_bytes"], size as u64, "{done}");
    assert_eq!(
        r["raw_crc64"],
        ossrelay::crc64::checksum(&raw).to_string(),
        "{done}"
    );
    let img = w
        .dst
        .get_object_bytes(DST_BUCKET, "images/d.qcow2")
        .expect("named with the container's extension");
    assert_eq!(r["bytes"], img.len() as u64, "{done}");
    assert!(img.len() < size / 2, "zeros travelled: {} bytes", img.len());
    let dir = w.dir.path();
    let (img_p, raw_p) = (dir.join("job.qcow2"), dir.join("job.raw"));
    std::fs::write(&img_p, &img).unwrap();
    std::fs::write(&raw_p, &raw).unwrap();
    for args in [
        vec!["check", "-f", "qcow2", img_p.to_str().unwrap()],
        vec![
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            raw_p.to_str().unwrap(),
            img_p.to_str().unwrap(),
        ],
    ] {
        let o = std::process::Command::new("qemu-img")
            .args(&args)
            .output()
            .expect("qemu-img (qemu-utils) is required");
        assert!(
            o.status.success(),
            "qemu-img {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
