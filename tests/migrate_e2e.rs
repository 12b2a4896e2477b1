//! End-to-end image commands against two simulated regions and accounts: `preflight --fix`,
//! `export --wait`, `import --wait`, and `migrate` (the binary, and the library state machine
//! with an unpacking relay plugged in).

mod common;

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ossrelay::acs::ecs::EcsClient;
use ossrelay::acs::ram::RoleRetry;
use ossrelay::acs::wait::PollSchedule;
use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::migrate::{
    self, Backends, Cloud, DiskResult, ImageApi, MigrateConfig, MigrateError, MigrationKey,
    RelayFn, Stage,
};
use ossrelay::oss::{EndpointSpec, OssClient, OssConfig};
use ossrelay::store::{ObjectStore, PutOptions};
use ossrelay::transfer::{CopyOptions, Location};
use ossrelay_sim::{SimConfig, SimImage, SimRole};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "m-src0001";
const IMAGE_SIZE: u64 = (3 << 20) + 5 * 512;

fn with_image_and_export_role(c: &mut SimConfig) {
    let mut img = SimImage::new(IMAGE, IMAGE_SIZE, &src_account().name);
    img.name = "web-server".into();
    img.boot_mode = "UEFI".into();
    img.platform = "Ubuntu".into();
    img.nvme = "supported".into();
    c.images.push(img);
    c.roles.push(SimRole {
        account: src_account().name,
        name: "AliyunECSImageExportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    c.task_duration = Duration::from_millis(300);
}

fn with_import_role(c: &mut SimConfig) {
    c.roles.push(SimRole {
        account: dst_account().name,
        name: "AliyunECSImageImportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    c.task_duration = Duration::from_millis(300);
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The single member of a gzip tarball.
fn untar(tgz: &[u8]) -> (String, Vec<u8>) {
    let gz = flate2::read::GzDecoder::new(tgz);
    let mut ar = tar::Archive::new(gz);
    let mut entries = ar.entries().unwrap();
    let mut e = entries.next().expect("one member").unwrap();
    let name = e.path().unwrap().display().to_string();
    let mut data = Vec::new();
    e.read_to_end(&mut data).unwrap();
    assert!(entries.next().is_none(), "exactly one member");
    (name, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_then_fixes_missing_roles() {
    let w = World::new(|_| {}, |_| {}).await;
    let ep = w.src.endpoint();
    let base = s(&[
        "preflight",
        "--region",
        SRC_REGION,
        "--profile",
        "src",
        "--bucket",
        SRC_BUCKET,
        "--oss-endpoint",
        &ep,
        "--ecs-endpoint",
        &ep,
        "--ram-endpoint",
        &ep,
        "--sts-endpoint",
        &ep,
    ]);
    let out = w.run(base.clone()).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(&format!("ok   caller acs:ram::{}", src_account().name)),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok   bucket {SRC_BUCKET} is in {SRC_REGION}")),
        "{text}"
    );
    assert!(
        text.contains("FAIL role AliyunECSImageExportDefaultRole does not exist; run `ossrelay preflight --fix`"),
        "{text}"
    );

    let mut fix = base.clone();
    fix.extend(s(&["--fix", "--propagation-wait", "1s"]));
    let out = w.run(fix).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(
            "role AliyunECSImageImportDefaultRole: created with AliyunECSImageImportRolePolicy"
        ),
        "{text}"
    );

    let out = w.run(base.clone()).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out)
        .contains("ok   role AliyunECSImageExportDefaultRole has AliyunECSImageExportRolePolicy"));

    // A bucket of another account or region fails the check.
    let mut other = base;
    other.extend(s(&["--bucket", "no-such-bucket"]));
    let out = w.run(other).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL bucket no-such-bucket"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_across_two_accounts() {
    let w = World::new(with_image_and_export_role, with_import_role).await;
    let (src_ep, dst_ep) = (w.src.endpoint(), w.dst.endpoint());
    let out = w
        .run(s(&[
            "export",
            "--region",
            SRC_REGION,
            "--image-id",
            IMAGE,
            "--bucket",
            SRC_BUCKET,
            "--prefix",
            "mig1",
            "--wait",
            "--json",
            "--profile",
            "src",
            "--oss-endpoint",
            &src_ep,
            "--ecs-endpoint",
            &src_ep,
        ]))
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sum = summary(&out);
    assert!(sum["task_id"].as_str().unwrap().starts_with("t-"), "{sum}");
    let objects: Vec<&str> = sum["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let want = format!("oss://{SRC_BUCKET}/mig1_{IMAGE}_system.raw.tar.gz");
    assert_eq!(objects, [want.as_str()]);
    assert!(stderr(&out).contains("Finished 100%"), "{}", stderr(&out));

    // Unpack by hand (the relay's unpack stage is a separate component) and import the raw.
    let key = format!("mig1_{IMAGE}_system.raw.tar.gz");
    let tgz = w
        .src
        .get_object_bytes(SRC_BUCKET, &key)
        .expect("export written");
    let (member, raw) = untar(&tgz);
    assert_eq!(member, format!("mig1_{IMAGE}_system.raw"));
    w.dst
        .put_object_bytes(DST_BUCKET, &member, Bytes::from(raw));
    let out = w
        .run(s(&[
            "import",
            "--region",
            DST_REGION,
            "--image-name",
            "web-server-eu",
            "--disk",
            &format!("oss://{DST_BUCKET}/{member}"),
            "--boot-mode",
            "UEFI",
            "--platform",
            "Ubuntu",
            "--wait",
            "--json",
            "--profile",
            "dst",
            "--oss-endpoint",
            &dst_ep,
            "--ecs-endpoint",
            &dst_ep,
        ]))
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sum = summary(&out);
    assert_eq!(sum["status"], "Available", "{sum}");
    let new_id = sum["image_id"].as_str().unwrap();
    assert!(!sum["task_id"].as_str().unwrap().is_empty());
    assert_eq!(w.dst.image_crc64(new_id), w.src.image_crc64(IMAGE));
    let img = w.dst.image(new_id).unwrap();
    assert_eq!(img["BootMode"], "UEFI");
    assert_eq!(img["Platform"], "Ubuntu");

    // The same name again: a typed error with the hint.
    let out = w
        .run(s(&[
            "import",
            "--region",
            DST_REGION,
            "--image-name",
            "web-server-eu",
            "--disk",
            &format!("oss://{DST_BUCKET}/{member}"),
            "--profile",
            "dst",
            "--oss-endpoint",
            &dst_ep,
            "--ecs-endpoint",
            &dst_ep,
        ]))
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("InvalidImageName.Duplicated"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--image-name"), "{}", stderr(&out));

    // A missing disk object is reported before any ImportImage call.
    let imports_before = count_all(&w.dst.stats(), "ImportImage");
    assert_eq!(imports_before, 2, "{}", w.dst.stats());
    let out = w
        .run(s(&[
            "import",
            "--region",
            DST_REGION,
            "--image-name",
            "other-name",
            "--disk",
            &format!("oss://{DST_BUCKET}/no-such.raw"),
            "--profile",
            "dst",
            "--oss-endpoint",
            &dst_ep,
            "--ecs-endpoint",
            &dst_ep,
        ]))
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("oss://dst-bucket/no-such.raw"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), imports_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_without_role_says_run_preflight_fix() {
    let w = World::new(
        |c| {
            with_image_and_export_role(c);
            c.roles.clear();
        },
        |_| {},
    )
    .await;
    let ep = w.src.endpoint();
    let mut cmd = w.command(&s(&[
        "export",
        "--region",
        SRC_REGION,
        "--image-id",
        IMAGE,
        "--bucket",
        SRC_BUCKET,
        "--profile",
        "src",
        "--oss-endpoint",
        &ep,
        "--ecs-endpoint",
        &ep,
        "--role-retries",
        "1",
    ]));
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    // One retry 5 s after the first refusal, then the error.
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("NoSetRoletoECSServiceAcount"), "{err}");
    assert!(err.contains("ossrelay preflight --fix"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_binary_unpacks_the_export_and_imports_an_identical_disk() {
    let w = World::new(with_image_and_export_role, with_import_role).await;
    let out = w.run(w.migrate_args(IMAGE, "dst")).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let image_id = v["image_id"].as_str().unwrap().to_string();
    // The image the destination ECS built holds exactly the source image's disk.
    let src_disk = w.src.image_crc64(IMAGE).expect("source image");
    assert_eq!(w.dst.image_crc64(&image_id), Some(src_disk), "{v}");
    let disk = &v["disks"][0];
    assert_eq!(disk["bytes"].as_u64(), Some(src_disk.0), "{v}");
    assert_eq!(
        disk["crc64"].as_str(),
        Some(src_disk.1.to_string().as_str())
    );
    assert!(
        disk["destination"].as_str().unwrap().ends_with(".raw"),
        "{v}"
    );
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);
    assert_eq!(w.dst.stats()["open_uploads"].as_u64(), Some(0));
    // Rerun: everything is done, nothing is repeated.
    let out = w.run(w.migrate_args(IMAGE, "dst")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), 1);
    for e in std::fs::read_dir(w.state_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert!(!text.contains("SECRET"), "secret in {}", p.display());
        }
    }
}

/// A stand-in for the streaming unpack stage: reads the (small) tarball, writes its member.
fn unpacking_relay() -> RelayFn {
    Arc::new(|src: Location, dst: Location, _opts, _progress, _cancel| {
        Box::pin(async move {
            let meta = src.store.head(&src.key).await.map_err(store_err)?;
            let mut body = src
                .store
                .get_range(&src.key, 0, meta.size, None)
                .await
                .map_err(store_err)?;
            let mut tgz = Vec::new();
            use futures::StreamExt as _;
            while let Some(chunk) = body.next().await {
                tgz.extend_from_slice(&chunk.map_err(store_err)?);
            }
            let (_, raw) = untar(&tgz);
            let len = raw.len() as u64;
            let crc = ossrelay::crc64::checksum(&raw);
            let stream = futures::stream::once(async move { Ok(Bytes::from(raw)) });
            dst.store
                .put(&dst.key, Box::pin(stream), len, &PutOptions::default())
                .await
                .map_err(store_err)?;
            Ok(DiskResult {
                source: src.describe(),
                destination: dst.describe(),
                bytes: len,
                crc64: crc,
                verified_by: Vec::new(),
                zero_share: None,
                raw_bytes: None,
                raw_crc64: None,
            })
        })
    })
}

fn store_err(e: ossrelay::store::StoreError) -> MigrateError {
    MigrateError::State(format!("test relay: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_state_machine_over_the_wire_with_an_unpacking_relay() {
    let w = World::new(with_image_and_export_role, with_import_role).await;
    let creds = |a: ossrelay_sim::SimAccount| {
        Arc::new(StaticProvider(Credentials::new(
            a.access_key_id,
            a.access_key_secret,
        )))
    };
    let (src_creds, dst_creds) = (creds(src_account()), creds(dst_account()));
    let bucket = |ep: String, region: &str, c: Arc<StaticProvider>, name: &str| {
        Arc::new(
            OssClient::new(OssConfig::new(EndpointSpec::Url(ep), region, c))
                .unwrap()
                .bucket(name),
        ) as Arc<dyn ObjectStore>
    };
    let backends = Backends {
        src: ImageApi::Aliyun(Arc::new(EcsClient::new(
            SRC_REGION,
            Some(w.src.endpoint()),
            src_creds.clone(),
        ))),
        dst: ImageApi::Aliyun(Arc::new(EcsClient::new(
            DST_REGION,
            Some(w.dst.endpoint()),
            dst_creds.clone(),
        ))),
        src_store: bucket(w.src.endpoint(), SRC_REGION, src_creds, SRC_BUCKET),
        dst_store: bucket(w.dst.endpoint(), DST_REGION, dst_creds, DST_BUCKET),
        relay: unpacking_relay(),
    };
    let cfg = MigrateConfig {
        key: MigrationKey {
            src_region: SRC_REGION.into(),
            image_id: IMAGE.into(),
            dst_region: DST_REGION.into(),
            dst_bucket: DST_BUCKET.into(),
            src_cloud: Cloud::Aliyun,
            dst_cloud: Cloud::Aliyun,
        },
        src_bucket: SRC_BUCKET.into(),
        image_name: None,
        export_prefix: "ossrelay".into(),
        export_format: None,
        disk_format: ossrelay::migrate::DiskPlan::Fixed(ossrelay::transfer::DiskFormat::Raw),
        keep_objects: false,
        state_dir: w.state_dir(),
        poll: PollSchedule {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            timeout: Duration::from_secs(60),
            ..PollSchedule::default()
        },
        role_retry: RoleRetry {
            interval: Duration::from_millis(50),
            retries: 2,
        },
        copy: CopyOptions::default(),
    };
    let stages = std::sync::Mutex::new(Vec::new());
    let sink = |e: migrate::Event<'_>| {
        if let migrate::Event::Stage(s) = e {
            stages.lock().unwrap().push(s);
        }
    };
    let out = migrate::migrate(&cfg, &backends, &CancellationToken::new(), &sink)
        .await
        .unwrap();
    assert_eq!(
        *stages.lock().unwrap(),
        [
            Stage::WaitExport,
            Stage::Relay,
            Stage::Import,
            Stage::WaitImport,
            Stage::Cleanup,
            Stage::Done
        ]
    );
    assert_eq!(out.region, DST_REGION);
    assert_eq!(out.disks.len(), 1);
    let (size, crc) = w.src.image_crc64(IMAGE).unwrap();
    assert_eq!(out.disks[0].bytes, size);
    assert_eq!(out.disks[0].crc64, crc);
    assert_eq!(w.dst.image_crc64(&out.image_id), Some((size, crc)));
    let img = w.dst.image(&out.image_id).unwrap();
    assert_eq!(img["ImageName"], "web-server");
    assert_eq!(img["BootMode"], "UEFI");
    assert_eq!(img["Platform"], "Ubuntu");
    assert_eq!(img["Features"]["NvmeSupport"], "supported");
    assert_eq!(
        img["Tags"]["Tag"][0]["TagValue"],
        format!("{SRC_REGION}/{IMAGE}")
    );
    // Intermediate objects are gone on both sides.
    let key = format!("ossrelay_{IMAGE}_system.raw.tar.gz");
    assert!(w.src.get_object_bytes(SRC_BUCKET, &key).is_none());
    assert!(w
        .dst
        .get_object_bytes(DST_BUCKET, key.trim_end_matches(".tar.gz"))
        .is_none());
    // The JSON shape the CLI prints.
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["disks"][0]["crc64"], crc.to_string());
    assert!(json["disks"][0]["source"]
        .as_str()
        .unwrap()
        .starts_with("oss://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_bucket_outside_its_region_before_exporting() {
    let w = World::new(with_image_and_export_role, with_import_role).await;
    let mut args = w.migrate_args(IMAGE, "dst");
    let i = args.iter().position(|a| a == "--dst-region").unwrap();
    args[i + 1] = "ap-southeast-1".into();
    let out = w.run(args).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The simulated endpoint serves one region, so the V4 signing region already tells.
    assert!(err.contains("--dst-bucket dst-bucket"), "{err}");
    assert!(
        err.contains(DST_REGION) && err.contains("ap-southeast-1"),
        "{err}"
    );
    assert!(!err.contains("export task"), "{err}");
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_waiting_exits_130_and_rerun_resumes_the_same_export() {
    let w = World::new(
        |c| {
            with_image_and_export_role(c);
            c.task_duration = Duration::from_secs(4);
        },
        with_import_role,
    )
    .await;
    let child = w.command(&w.migrate_args(IMAGE, "dst")).spawn().unwrap();
    let pid = child.id();
    // Wait until the state file records the export task.
    let t0 = std::time::Instant::now();
    loop {
        let recorded = std::fs::read_dir(w.state_dir())
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .any(|t| t.contains("\"stage\": \"wait-export\""));
        if recorded {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "export never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("rerun the same command to resume"), "{err}");

    let out = w.run(w.migrate_args(IMAGE, "dst")).await;
    let err = stderr(&out);
    assert!(err.contains("resuming at stage wait-export"), "{err}");
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1, "{err}");
    // It went on past the export, relayed (unpacking) and imported.
    assert!(err.contains("relaying disk 1/1"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_roles_propagate_while_export_retries_and_throttling_is_retried() {
    let w = World::new(
        |c| {
            with_image_and_export_role(c);
            c.roles.clear();
            // A role attached through RAM becomes usable only after this delay.
            c.role_propagation = Duration::from_secs(3);
            c.rpc_faults.push(ossrelay_sim::RpcFault {
                action: "DescribeTaskAttribute".into(),
                code: "Throttling.User".into(),
                status: 400,
                count: 2,
            });
        },
        |_| {},
    )
    .await;
    let ep = w.src.endpoint();
    let endpoints = s(&[
        "--profile",
        "src",
        "--oss-endpoint",
        &ep,
        "--ecs-endpoint",
        &ep,
        "--ram-endpoint",
        &ep,
        "--sts-endpoint",
        &ep,
    ]);
    let mut fix = s(&[
        "preflight",
        "--region",
        SRC_REGION,
        "--fix",
        "--propagation-wait",
        "1s",
    ]);
    fix.extend(endpoints.clone());
    let out = w.run(fix).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let mut export = s(&[
        "export",
        "--region",
        SRC_REGION,
        "--image-id",
        IMAGE,
        "--bucket",
        SRC_BUCKET,
        "--wait",
        "--json",
    ]);
    export.extend(endpoints[..6].iter().cloned());
    let out = w.run(export).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats = w.src.stats();
    // Refused while the role propagated, then accepted; throttled polls were retried.
    assert!(count(&stats, "ExportImage", "403") >= 1, "{stats}");
    assert_eq!(count(&stats, "ExportImage", "200"), 1, "{stats}");
    assert_eq!(count(&stats, "DescribeTaskAttribute", "400"), 2, "{stats}");
    assert_eq!(summary(&out)["objects"].as_array().unwrap().len(), 1);
}

/// Where ExportImage honours `ImageFormat=vhd`, no unpacking is needed: the binary runs the
/// whole migration to an Available image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_binary_end_to_end_with_a_vhd_export() {
    const VHD_REGION: &str = "ap-southeast-1";
    let w = World::new(
        |c| {
            with_image_and_export_role(c);
            c.region = VHD_REGION.into();
        },
        with_import_role,
    )
    .await;
    let mut args = w.migrate_args(IMAGE, "dst");
    let i = args.iter().position(|a| a == "--src-region").unwrap();
    args[i + 1] = VHD_REGION.into();
    args.extend(s(&["--format", "vhd", "--image-name", "web-eu"]));
    let out = w.run(args.clone()).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let sum = summary(&out);
    let new_id = sum["image_id"].as_str().unwrap().to_string();
    assert_eq!(sum["region"], DST_REGION);
    let key = format!("ossrelay_{IMAGE}_system.vhd");
    assert_eq!(
        sum["disks"][0]["source"],
        format!("oss://{SRC_BUCKET}/{key}")
    );
    assert_eq!(
        sum["disks"][0]["destination"],
        format!("oss://{DST_BUCKET}/{key}")
    );
    // The imported disk is bit-identical to the source image's.
    let (size, crc) = w.src.image_crc64(IMAGE).unwrap();
    assert_eq!(w.dst.image_crc64(&new_id), Some((size, crc)));
    let img = w.dst.image(&new_id).unwrap();
    assert_eq!(img["Status"], "Available");
    assert_eq!(img["ImageName"], "web-eu");
    assert_eq!(img["BootMode"], "UEFI");
    assert_eq!(img["Features"]["NvmeSupport"], "supported");
    // Objects cleaned up on both sides.
    assert!(w.src.get_object_bytes(SRC_BUCKET, &key).is_none());
    assert!(w.dst.get_object_bytes(DST_BUCKET, &key).is_none());
    assert!(
        err.contains(&format!("deleted oss://{DST_BUCKET}/{key}")),
        "{err}"
    );

    // Rerunning the finished migration changes nothing and prints the same result.
    let again = w.run(args).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(summary(&again), sum);
    assert_eq!(count_all(&w.src.stats(), "ExportImage"), 1);
    assert_eq!(count_all(&w.dst.stats(), "ImportImage"), 1);
}
