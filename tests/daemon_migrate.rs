//! Migrate jobs in `ossrelay serve`: a migration between two simulated regions/accounts runs
//! to an identical image, resumes at its stage after the daemon is killed, and bad bodies are
//! refused naming the field.

mod common;
mod daemon_support;

use std::time::Duration;

use common::*;
use daemon_support::*;
use ossrelay_sim::{SimConfig, SimImage, SimRole};
use serde_json::{json, Value};

const IMAGE: &str = "m-src0001";
const IMAGE_SIZE: u64 = (3 << 20) + 5 * 512;

fn with_image_and_export_role(c: &mut SimConfig) {
    let mut img = SimImage::new(IMAGE, IMAGE_SIZE, &src_account().name);
    img.name = "web-server".into();
    c.images.push(img);
    c.roles.push(SimRole {
        account: src_account().name,
        name: "AliyunECSImageExportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    // Long enough to kill the daemon while it waits for the export.
    c.task_duration = Duration::from_secs(3);
}

fn with_import_role(c: &mut SimConfig) {
    c.roles.push(SimRole {
        account: dst_account().name,
        name: "AliyunECSImageImportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    c.task_duration = Duration::from_millis(300);
}

fn migrate_job(w: &World) -> Value {
    let (src, dst) = (w.src.endpoint(), w.dst.endpoint());
    json!({
        "kind": "migrate",
        "src_region": SRC_REGION, "image_id": IMAGE, "src_bucket": SRC_BUCKET,
        "dst_region": DST_REGION, "dst_bucket": DST_BUCKET,
        "src_profile": "src", "dst_profile": "dst",
        "src_endpoint": src, "src_ecs_endpoint": src,
        "dst_endpoint": dst, "dst_ecs_endpoint": dst,
        "concurrency": 4, "part_size": "1MiB",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_job_survives_kill_9_and_imports_an_identical_image() {
    let w = World::new(with_image_and_export_role, with_import_role).await;
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;

    // Invalid bodies: 400 naming the field.
    let with = |k: &str, v: Value| {
        let mut b = migrate_job(&w);
        b[k] = v;
        b.to_string()
    };
    let without = |k: &str| {
        let mut b = migrate_job(&w);
        b.as_object_mut().unwrap().remove(k);
        b.to_string()
    };
    for (body, field) in [
        (without("image_id"), "image_id"),
        (without("dst_bucket"), "dst_bucket"),
        (with("image_id", json!("i-123")), "image_id"),
        (with("src_bucket", json!("UPPER")), "src_bucket"),
        (with("format", json!("iso")), "format"),
        (with("part_size", json!(10)), "part_size"),
        (with("state_dir", json!("/tmp")), "state_dir"),
        (
            with("dst_sts_endpoint", json!("https://sts.example.com")),
            "dst_sts_endpoint",
        ),
        (
            with("src_ecs_endpoint", json!("http://ecs.aliyuncs.com")),
            "src_ecs_endpoint",
        ),
    ] {
        let (s, v) = d.call("POST", "/v1/jobs", Some(&body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }

    let job = d.submit(&migrate_job(&w)).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["kind"], "migrate");
    assert_eq!(job["part_size"], MIB, "sizes are stored as bytes");
    // The same migration twice would race one state file.
    let (s, v) = d
        .call("POST", "/v1/jobs", Some(&migrate_job(&w).to_string()))
        .await;
    assert_eq!(s, 409, "{v}");

    let j = d
        .wait_job(&id, Duration::from_secs(20), |j| {
            j["stage"] == "wait-export" || j["state"] != "running" && j["state"] != "queued"
        })
        .await;
    assert_eq!(j["state"], "running", "{j}");
    // kill -9 while the export runs; the restarted daemon resumes the migration at its stage.
    drop(d);
    let d = start_daemon(w.dir.path(), &w.state_dir(), &[]).await;
    let done = d
        .wait_job(&id, Duration::from_secs(30), |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["runs"].as_u64().unwrap() >= 2, "{done}");
    assert_eq!(
        count_all(&w.src.stats(), "ExportImage"),
        1,
        "the export was not repeated"
    );
    let new_id = done["result"]["image_id"].as_str().expect("image id");
    assert_eq!(done["result"]["region"], DST_REGION);
    let src = w.src.image_crc64(IMAGE).expect("source image");
    assert_eq!(w.dst.image_crc64(new_id), Some(src), "{done}");
    assert_eq!(done["bytes_done"], done["result"]["bytes"]);
    assert!(done["result"]["bytes"].as_u64().unwrap() > 0, "{done}");

    // The CLI client: the list names the migration; a bad option is refused naming it.
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
    let list = stdout(&out);
    assert!(list.contains("migrate"), "{list}");
    assert!(list.contains(&format!("{SRC_REGION}/{IMAGE}")), "{list}");
    let mut args: Vec<String> = vec!["jobs".into(), "--server".into(), server, "submit".into()];
    args.push("migrate".into());
    for kv in [
        format!("src_region={SRC_REGION}"),
        "image_id=i-123".into(),
        format!("src_bucket={SRC_BUCKET}"),
        format!("dst_region={DST_REGION}"),
        format!("dst_bucket={DST_BUCKET}"),
    ] {
        args.extend(["--set".into(), kv]);
    }
    let out = w.run(args).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("image_id"), "{}", stderr(&out));
}
