//! End-to-end checks of the simulated ECS / RAM / STS APIs and metadata service, driven by the
//! project's RPC client (and raw HTTP where the client would not send the request).

mod sim_support;

use std::io::Read as _;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ossrelay::acs::rpc::{signed_parts, RetryPolicy, RpcClient, RpcError, RpcRequest};
use ossrelay::acs::sts::{AssumeRoleInput, StsClient};
use ossrelay::crc64;
use ossrelay::credentials::imds::EcsRamRoleProvider;
use ossrelay::credentials::{Credentials, CredentialsProvider, EnvLookup, StaticProvider};
use ossrelay_sim::{self as sim, SimAccount, SimBucket, SimConfig, SimImage, SimRole, SimServer};
use serde_json::Value;
use sim_support::Req;

const ECS: &str = "2014-05-26";
const RAM: &str = "2015-05-01";
const STS: &str = "2015-04-01";
const REGION: &str = "cn-hangzhou";
const IMAGE: &str = "m-src0001";
const IMAGE_SIZE: u64 = (6 << 20) + 3 * 512;

fn a1() -> StaticProvider {
    StaticProvider(Credentials::new("ak1", "sk1"))
}
fn a2() -> StaticProvider {
    StaticProvider(Credentials::new("ak2", "sk2"))
}

fn config() -> SimConfig {
    let acct = |n: &str, k: &str, s: &str| SimAccount {
        name: n.into(),
        access_key_id: k.into(),
        access_key_secret: s.into(),
    };
    let bucket = |n: &str, a: &str| SimBucket {
        name: n.into(),
        account: a.into(),
    };
    let mut img = SimImage::new(IMAGE, IMAGE_SIZE, "111");
    img.platform = "Ubuntu".into();
    img.boot_mode = "UEFI".into();
    img.nvme = "supported".into();
    SimConfig {
        accounts: vec![acct("111", "ak1", "sk1"), acct("222", "ak2", "sk2")],
        buckets: vec![bucket("src-bkt", "111"), bucket("dst-bkt", "222")],
        remote_buckets: vec![("far-bkt".into(), "eu-central-1".into())],
        images: vec![img],
        roles: vec![
            SimRole {
                account: "222".into(),
                name: "migrator".into(),
                trusted: "111".into(),
            },
            SimRole {
                account: "222".into(),
                name: "AliyunECSImageImportDefaultRole".into(),
                trusted: "ecs".into(),
            },
        ],
        task_duration: Duration::from_millis(400),
        ..SimConfig::default()
    }
}

fn client() -> RpcClient {
    RpcClient::new().with_retry(RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    })
}

async fn call(
    s: &SimServer,
    creds: &dyn CredentialsProvider,
    version: &str,
    action: &str,
    params: &[(&str, &str)],
) -> Result<Value, RpcError> {
    let mut req = RpcRequest::new(s.ecs_endpoint(), version, action);
    for (k, v) in params {
        req = req.param(*k, *v);
    }
    client().call(creds, &req).await
}

fn api(e: RpcError) -> (u16, String, String) {
    match e {
        RpcError::Api(a) => (a.status, a.code, a.message),
        other => panic!("expected an API error, got {other}"),
    }
}

async fn wait_task(s: &SimServer, creds: &dyn CredentialsProvider, task: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = call(
            s,
            creds,
            ECS,
            "DescribeTaskAttribute",
            &[("RegionId", s.region()), ("TaskId", task)],
        )
        .await
        .unwrap();
        match t["TaskStatus"].as_str().unwrap() {
            "Waiting" | "Processing" => {}
            _ => return t,
        }
        assert!(Instant::now() < deadline, "task {task} never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gunzip_tar(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let gz = flate2::read::GzDecoder::new(data);
    let mut a = tar::Archive::new(gz);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            (name, buf)
        })
        .collect()
}

async fn import(
    s: &SimServer,
    creds: &dyn CredentialsProvider,
    bucket: &str,
    object: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<Value, RpcError> {
    let mut p = vec![
        ("RegionId", REGION),
        ("ImageName", name),
        ("DiskDeviceMapping.1.OSSBucket", bucket),
        ("DiskDeviceMapping.1.OSSObject", object),
        ("DiskDeviceMapping.1.DiskImageSize", "1"),
    ];
    p.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    p.extend_from_slice(extra);
    call(s, creds, ECS, "ImportImage", &p).await
}

#[tokio::test]
async fn export_then_import_proves_the_same_disk() {
    let s = sim::start(config()).await.unwrap();
    let (c1, c2) = (a1(), a2());
    let export = [
        ("RegionId", REGION),
        ("ImageId", IMAGE),
        ("OSSBucket", "src-bkt"),
        ("OSSPrefix", "mig"),
    ];

    // No export role yet.
    let e = api(call(&s, &c1, ECS, "ExportImage", &export)
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (403, "NoSetRoletoECSServiceAcount"));

    // Create it through RAM, the way the client does.
    let role = "AliyunECSImageExportDefaultRole";
    let e = api(call(&s, &c1, RAM, "GetRole", &[("RoleName", role)])
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (404, "EntityNotExist.Role"));
    let trust = r#"{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":["ecs.aliyuncs.com"]}}],"Version":"1"}"#;
    let r = call(
        &s,
        &c1,
        RAM,
        "CreateRole",
        &[("RoleName", role), ("AssumeRolePolicyDocument", trust)],
    )
    .await
    .unwrap();
    assert_eq!(r["Role"]["Arn"], format!("acs:ram::111:role/{role}"));
    // A role without its system policy is not enough.
    let e = api(call(&s, &c1, ECS, "ExportImage", &export)
        .await
        .unwrap_err());
    assert_eq!(e.1, "NoSetRoletoECSServiceAcount");
    let attach = [
        ("PolicyType", "System"),
        ("PolicyName", "AliyunECSImageExportRolePolicy"),
        ("RoleName", role),
    ];
    call(&s, &c1, RAM, "AttachPolicyToRole", &attach)
        .await
        .unwrap();
    let e = api(call(&s, &c1, RAM, "AttachPolicyToRole", &attach)
        .await
        .unwrap_err());
    assert_eq!(e.1, "EntityAlreadyExists.Role.Policy");
    let l = call(&s, &c1, RAM, "ListPoliciesForRole", &[("RoleName", role)])
        .await
        .unwrap();
    assert_eq!(
        l["Policies"]["Policy"][0]["PolicyName"],
        "AliyunECSImageExportRolePolicy"
    );

    // Bucket rules: another region, another account.
    let mut far = export;
    far[2].1 = "far-bkt";
    let e = api(call(&s, &c1, ECS, "ExportImage", &far).await.unwrap_err());
    assert_eq!(e.1, "InvalidOSSBucket.NotFound");
    let mut theirs = export;
    theirs[2].1 = "dst-bkt";
    let e = api(call(&s, &c1, ECS, "ExportImage", &theirs)
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (403, "InvalidOSS.NotAuthorized"));
    // Account 222 does not see 111's image.
    let e = api(call(&s, &c2, ECS, "ExportImage", &export)
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (404, "InvalidImageId.NotFound"));

    let t = call(&s, &c1, ECS, "ExportImage", &export).await.unwrap();
    let task = t["TaskId"].as_str().unwrap().to_string();
    assert!(task.starts_with("t-"));
    let e = api(call(&s, &c1, ECS, "ExportImage", &export)
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (403, "ImageIsExporting"));
    let early = call(
        &s,
        &c1,
        ECS,
        "DescribeTaskAttribute",
        &[("RegionId", REGION), ("TaskId", &task)],
    )
    .await
    .unwrap();
    assert!(
        matches!(early["TaskStatus"].as_str(), Some("Waiting" | "Processing")),
        "{early}"
    );
    assert_eq!(early["SupportCancel"], "true");
    let done = wait_task(&s, &c1, &task).await;
    assert_eq!(done["TaskStatus"], "Finished", "{done}");
    assert_eq!(done["TaskProcess"], "100%");
    let key = "mig_m-src0001_system.raw.tar.gz";
    let items =
        &done["OperationProgressSet"]["OperationProgress"][0]["RelatedItemSet"]["RelatedItem"];
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["Name"] == "OSSObject" && i["Value"] == key),
        "{done}"
    );

    // The object is a real gzip'd tar with one .raw member equal to the image's disk.
    let (src_size, src_crc) = s.image_crc64(IMAGE).unwrap();
    assert_eq!(src_size, IMAGE_SIZE);
    let tgz = s.get_object_bytes("src-bkt", key).unwrap();
    assert!(
        (tgz.len() as u64) < IMAGE_SIZE,
        "a mostly-zero disk compresses"
    );
    assert_eq!(
        s.object_crc64("src-bkt", key).unwrap().1,
        crc64::checksum(&tgz)
    );
    let members = gunzip_tar(&tgz);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].0, "mig_m-src0001_system.raw");
    let raw = Bytes::from(members[0].1.clone());
    assert_eq!(raw.len() as u64, IMAGE_SIZE);
    assert_eq!(crc64::checksum(&raw), src_crc);
    assert!(raw.iter().filter(|&&b| b == 0).count() > raw.len() / 2);

    // Import rules.
    let e = api(import(&s, &c1, "src-bkt", key, "from-tgz", &[])
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (400, "UnsupportedSuffix.OSSObject"));
    s.put_object_bytes("src-bkt", "disk.raw", raw.clone());
    let e = api(import(&s, &c1, "src-bkt", "disk.raw", "no-role", &[])
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (403, "NoSetRoletoECSServiceAcount"));
    s.put_object_bytes("dst-bkt", "mig/disk.raw", raw.clone());
    let e = api(import(&s, &c2, "dst-bkt", "missing.raw", "x1", &[])
        .await
        .unwrap_err());
    assert_eq!(e.1, "InvalidOSSObject.NotFound");
    s.put_object_bytes("dst-bkt", "empty.raw", Bytes::new());
    let e = api(import(&s, &c2, "dst-bkt", "empty.raw", "x2", &[])
        .await
        .unwrap_err());
    assert_eq!(e.1, "InvalidOSSObject.Size");

    // Import what the source exported (copied by the "relay") into account 222.
    let like = [
        ("Architecture", "x86_64"),
        ("OSType", "linux"),
        ("Platform", "Ubuntu"),
        ("BootMode", "UEFI"),
        ("Features.NvmeSupport", "supported"),
        ("DiskDeviceMapping.1.Format", "RAW"),
    ];
    let r = import(&s, &c2, "dst-bkt", "mig/disk.raw", "migrated-1", &like)
        .await
        .unwrap();
    let new_id = r["ImageId"].as_str().unwrap().to_string();
    let import_task = r["TaskId"].as_str().unwrap().to_string();
    assert!(new_id.starts_with("m-") && new_id != IMAGE);
    let e = api(
        import(&s, &c2, "dst-bkt", "mig/disk.raw", "migrated-1", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(e.1, "InvalidImageName.Duplicated");
    // Hidden by the default Status filter while it is being created.
    let hidden = call(
        &s,
        &c2,
        ECS,
        "DescribeImages",
        &[("RegionId", REGION), ("ImageId", &new_id)],
    )
    .await
    .unwrap();
    assert_eq!(hidden["TotalCount"], 0);
    assert_eq!(hidden["Images"]["Image"].as_array().unwrap().len(), 0);
    let creating = call(
        &s,
        &c2,
        ECS,
        "DescribeImages",
        &[
            ("RegionId", REGION),
            ("ImageId", &new_id),
            (
                "Status",
                "Creating,Waiting,Available,UnAvailable,CreateFailed",
            ),
        ],
    )
    .await
    .unwrap();
    let st = creating["Images"]["Image"][0]["Status"].as_str().unwrap();
    assert!(matches!(st, "Waiting" | "Creating"), "{creating}");
    assert_eq!(s.image_crc64(&new_id), None);
    let t = wait_task(&s, &c2, &import_task).await;
    assert_eq!(t["TaskStatus"], "Finished", "{t}");
    let shown = call(
        &s,
        &c2,
        ECS,
        "DescribeImages",
        &[("RegionId", REGION), ("ImageId", &new_id)],
    )
    .await
    .unwrap();
    let img = &shown["Images"]["Image"][0];
    assert_eq!(img["Status"], "Available", "{shown}");
    assert_eq!(img["Platform"], "Ubuntu");
    assert_eq!(img["BootMode"], "UEFI");
    assert_eq!(img["Features"]["NvmeSupport"], "supported");
    assert_eq!(
        img["DiskDeviceMappings"]["DiskDeviceMapping"][0]["ImportOSSObject"],
        "mig/disk.raw"
    );
    assert_eq!(s.image_crc64(&new_id), Some((IMAGE_SIZE, src_crc)));

    // The source image's attributes, as `--like` reads them.
    let src = call(
        &s,
        &c1,
        ECS,
        "DescribeImages",
        &[("RegionId", REGION), ("ImageId", IMAGE)],
    )
    .await
    .unwrap();
    let si = &src["Images"]["Image"][0];
    assert_eq!(si["Size"], 1);
    assert_eq!(
        si["DiskDeviceMappings"]["DiskDeviceMapping"][0]["Size"],
        "1"
    );
    assert_eq!(si["Architecture"], "x86_64");

    // A RAW whose size is not a multiple of 512 fails asynchronously, with a reason.
    s.put_object_bytes("dst-bkt", "bad.raw", Bytes::from(vec![1u8; 1000]));
    let r = import(&s, &c2, "dst-bkt", "bad.raw", "bad-1", &[])
        .await
        .unwrap();
    let bad_id = r["ImageId"].as_str().unwrap().to_string();
    let t = wait_task(&s, &c2, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(t["TaskStatus"], "Failed", "{t}");
    assert_eq!(
        t["OperationProgressSet"]["OperationProgress"][0]["ErrorCode"],
        "InvalidImageSize"
    );
    let v = s.image(&bad_id).unwrap();
    assert_eq!(v["Status"], "CreateFailed");
    assert!(v["FailureMessage"].as_str().unwrap().contains("512"), "{v}");
    // A QCOW2 declaration over raw bytes fails too.
    let r = import(
        &s,
        &c2,
        "dst-bkt",
        "mig/disk.raw",
        "not-qcow",
        &[("DiskDeviceMapping.1.Format", "QCOW2")],
    )
    .await
    .unwrap();
    let t = wait_task(&s, &c2, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(
        t["OperationProgressSet"]["OperationProgress"][0]["ErrorCode"],
        "InvalidImageFormat.Malformed"
    );

    let tasks = call(
        &s,
        &c2,
        ECS,
        "DescribeTasks",
        &[
            ("RegionId", REGION),
            ("TaskAction", "ImportImage"),
            ("TaskStatus", "Failed"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(tasks["TotalCount"], 2, "{tasks}");

    let stats = s.stats();
    assert_eq!(stats["requests"]["ExportImage"]["200"], 1);
    assert!(stats["requests"]["ExportImage"]["403"].as_u64().unwrap() >= 3);
    s.shutdown().await;
}

fn fixed_vhd(raw: &[u8], disk_type: u32) -> Vec<u8> {
    let mut f = [0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[40..48].copy_from_slice(&(raw.len() as u64).to_be_bytes());
    f[48..56].copy_from_slice(&(raw.len() as u64).to_be_bytes());
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    let sum: u32 = f.iter().map(|&b| b as u32).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    let mut v = raw.to_vec();
    v.extend_from_slice(&f);
    v
}

#[tokio::test]
async fn vhd_imports_check_the_footer() {
    let s = sim::start(config()).await.unwrap();
    let c2 = a2();
    let raw: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    s.put_object_bytes("dst-bkt", "fixed.vhd", Bytes::from(fixed_vhd(&raw, 2)));
    s.put_object_bytes("dst-bkt", "dynamic.vhd", Bytes::from(fixed_vhd(&raw, 3)));
    // Auto-detected (no Format) fixed VHD: the disk is everything before the footer.
    let r = import(&s, &c2, "dst-bkt", "fixed.vhd", "vhd-ok", &[])
        .await
        .unwrap();
    let t = wait_task(&s, &c2, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(t["TaskStatus"], "Finished", "{t}");
    let id = r["ImageId"].as_str().unwrap();
    assert_eq!(
        s.image_crc64(id),
        Some((raw.len() as u64, crc64::checksum(&raw)))
    );
    assert_eq!(
        s.image(id).unwrap()["DiskDeviceMappings"]["DiskDeviceMapping"][0]["Format"],
        "VHD"
    );
    let r = import(
        &s,
        &c2,
        "dst-bkt",
        "dynamic.vhd",
        "vhd-bad",
        &[("DiskDeviceMapping.1.Format", "VHD")],
    )
    .await
    .unwrap();
    let t = wait_task(&s, &c2, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(
        t["OperationProgressSet"]["OperationProgress"][0]["ErrorCode"],
        "InvalidVHDImage.IncorrectSize"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn imported_data_disks_export_as_separate_objects() {
    let mut cfg = config();
    cfg.roles.push(SimRole {
        account: "222".into(),
        name: "AliyunECSImageExportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    let s = sim::start(cfg).await.unwrap();
    let c2 = a2();
    let sys: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 241) as u8).collect();
    let data: Vec<u8> = (0..(512u32 << 10)).map(|i| (i % 239) as u8).collect();
    s.put_object_bytes("dst-bkt", "sys.raw", Bytes::from(sys.clone()));
    s.put_object_bytes("dst-bkt", "data.raw", Bytes::from(data.clone()));
    let r = import(
        &s,
        &c2,
        "dst-bkt",
        "sys.raw",
        "two-disks",
        &[
            ("DiskDeviceMapping.2.OSSBucket", "dst-bkt"),
            ("DiskDeviceMapping.2.OSSObject", "data.raw"),
            ("DiskDeviceMapping.2.DiskImageSize", "2"),
        ],
    )
    .await
    .unwrap();
    let t = wait_task(&s, &c2, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(t["TaskStatus"], "Finished", "{t}");
    let id = r["ImageId"].as_str().unwrap().to_string();
    let maps = s.image(&id).unwrap()["DiskDeviceMappings"]["DiskDeviceMapping"].clone();
    assert_eq!(maps[1]["Type"], "data");
    assert_eq!(maps[1]["Size"], "2");
    let t = call(
        &s,
        &c2,
        ECS,
        "ExportImage",
        &[
            ("RegionId", REGION),
            ("ImageId", &id),
            ("OSSBucket", "dst-bkt"),
            ("OSSPrefix", "x"),
        ],
    )
    .await
    .unwrap();
    let done = wait_task(&s, &c2, t["TaskId"].as_str().unwrap()).await;
    assert_eq!(done["TaskStatus"], "Finished", "{done}");
    assert_eq!(done["TotalCount"], 2);
    for (key, member, want) in [
        (
            format!("x_{id}_system.raw.tar.gz"),
            format!("x_{id}_system.raw"),
            &sys,
        ),
        (
            format!("x_{id}_data_xvdb.raw.tar.gz"),
            format!("x_{id}_data_xvdb.raw"),
            &data,
        ),
    ] {
        let m = gunzip_tar(&s.get_object_bytes("dst-bkt", &key).unwrap());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, member);
        assert!(&m[0].1 == want, "{key} content differs");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn vhd_export_where_the_region_supports_it() {
    let mut cfg = config();
    cfg.region = "eu-central-1".into();
    cfg.roles.push(SimRole {
        account: "111".into(),
        name: "AliyunECSImageExportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    cfg.roles.push(SimRole {
        account: "111".into(),
        name: "AliyunECSImageImportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    let s = sim::start(cfg).await.unwrap();
    let c1 = a1();
    let region = "eu-central-1";
    let e = api(call(
        &s,
        &c1,
        ECS,
        "ExportImage",
        &[
            ("RegionId", region),
            ("ImageId", IMAGE),
            ("OSSBucket", "src-bkt"),
            ("ImageFormat", "qcow2"),
        ],
    )
    .await
    .unwrap_err());
    assert_eq!(e.1, "InvalidImageFormat.RegionNotSupported");
    let t = call(
        &s,
        &c1,
        ECS,
        "ExportImage",
        &[
            ("RegionId", region),
            ("ImageId", IMAGE),
            ("OSSBucket", "src-bkt"),
            ("OSSPrefix", "v"),
            ("ImageFormat", "vhd"),
        ],
    )
    .await
    .unwrap();
    let done = wait_task(&s, &c1, t["TaskId"].as_str().unwrap()).await;
    assert_eq!(done["TaskStatus"], "Finished", "{done}");
    let key = "v_m-src0001_system.vhd";
    let (size, _) = s.object_crc64("src-bkt", key).unwrap();
    assert_eq!(size, IMAGE_SIZE + 512);
    // Importing the VHD back yields the same disk.
    let mut p = vec![
        ("RegionId", region),
        ("ImageName", "back-from-vhd"),
        ("DiskDeviceMapping.1.OSSBucket", "src-bkt"),
        ("DiskDeviceMapping.1.OSSObject", key),
        ("DiskDeviceMapping.1.Format", "VHD"),
    ];
    p.push(("DiskDeviceMapping.1.DiskImageSize", "1"));
    let r = call(&s, &c1, ECS, "ImportImage", &p).await.unwrap();
    let t = wait_task(&s, &c1, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(t["TaskStatus"], "Finished", "{t}");
    assert_eq!(
        s.image_crc64(r["ImageId"].as_str().unwrap()),
        s.image_crc64(IMAGE)
    );
    s.shutdown().await;
}

#[tokio::test]
async fn cancel_task_and_describe_images_filters() {
    let mut cfg = config();
    cfg.task_duration = Duration::from_secs(30);
    cfg.roles.push(SimRole {
        account: "111".into(),
        name: "AliyunECSImageExportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    let s = sim::start(cfg).await.unwrap();
    let c1 = a1();
    // An unknown ImageId is an empty 200.
    let r = call(
        &s,
        &c1,
        ECS,
        "DescribeImages",
        &[("RegionId", REGION), ("ImageId", "m-nothere")],
    )
    .await
    .unwrap();
    assert_eq!(r["TotalCount"], 0);
    let r = call(&s, &c1, ECS, "DescribeImages", &[("RegionId", REGION)])
        .await
        .unwrap();
    assert_eq!(r["Images"]["Image"][0]["ImageId"], IMAGE);
    let e = api(
        call(&s, &c1, ECS, "DescribeImages", &[("RegionId", "us-east-1")])
            .await
            .unwrap_err(),
    );
    assert_eq!((e.0, e.1.as_str()), (400, "InvalidRegionId.NotFound"));
    let t = call(
        &s,
        &c1,
        ECS,
        "ExportImage",
        &[
            ("RegionId", REGION),
            ("ImageId", IMAGE),
            ("OSSBucket", "src-bkt"),
        ],
    )
    .await
    .unwrap();
    let task = t["TaskId"].as_str().unwrap();
    call(
        &s,
        &c1,
        ECS,
        "CancelTask",
        &[("RegionId", REGION), ("TaskId", task)],
    )
    .await
    .unwrap();
    let d = call(
        &s,
        &c1,
        ECS,
        "DescribeTaskAttribute",
        &[("RegionId", REGION), ("TaskId", task)],
    )
    .await
    .unwrap();
    assert_eq!(d["TaskStatus"], "Cancelled");
    assert_eq!(d["SupportCancel"], "false");
    let e = api(call(
        &s,
        &c1,
        ECS,
        "CancelTask",
        &[("RegionId", REGION), ("TaskId", task)],
    )
    .await
    .unwrap_err());
    assert_eq!(e.1, "InvalidTaskId.IncorrectTaskStatus");
    let e = api(call(
        &s,
        &c1,
        ECS,
        "DescribeTaskAttribute",
        &[("RegionId", REGION), ("TaskId", "t-nothere")],
    )
    .await
    .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (400, "InvalidTaskId.NotFound"));
    // DryRun passes validation and says so as an error.
    let e = api(call(
        &s,
        &c1,
        ECS,
        "ExportImage",
        &[
            ("RegionId", REGION),
            ("ImageId", IMAGE),
            ("OSSBucket", "src-bkt"),
            ("DryRun", "True"),
        ],
    )
    .await
    .unwrap_err());
    assert_eq!(e.1, "DryRunOperation");
    // Throttling fault knob.
    s.set_fault_ops(Some(vec!["DescribeImages".into()]));
    s.set_faults(vec![(sim::FaultKind::Slowdown, 1.0)]);
    let e = api(
        call(&s, &c1, ECS, "DescribeImages", &[("RegionId", REGION)])
            .await
            .unwrap_err(),
    );
    assert_eq!(e.1, "Throttling.User");
    s.set_faults(Vec::new());
    // Scripted errors, including an error Code on HTTP 200; the client retries through them.
    s.add_rpc_fault(sim::RpcFault {
        action: "DescribeTasks".into(),
        code: "ServiceUnavailable".into(),
        status: 200,
        count: 1,
    });
    let e = call(&s, &c1, ECS, "DescribeTasks", &[("RegionId", REGION)])
        .await
        .unwrap_err();
    let RpcError::Api(a) = e else { panic!("{e}") };
    assert_eq!((a.status, a.code.as_str()), (200, "ServiceUnavailable"));
    s.add_rpc_fault(sim::RpcFault {
        action: "*".into(),
        code: "Throttling.User".into(),
        status: 400,
        count: 2,
    });
    let retrying = RpcClient::new().with_retry(RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    });
    let req = RpcRequest::new(s.ecs_endpoint(), ECS, "DescribeTasks").param("RegionId", REGION);
    let ok = retrying.call(&c1, &req).await.unwrap();
    assert_eq!(ok["TotalCount"], 1);
    assert_eq!(s.stats()["requests"]["DescribeTasks"]["400"], 2);
    s.shutdown().await;
}

#[tokio::test]
async fn attached_policies_take_time_to_propagate_and_synthetic_disks_import() {
    let mut cfg = config();
    cfg.role_propagation = Duration::from_millis(700);
    cfg.synthetic = vec![ossrelay_sim::SyntheticObject {
        bucket: "src-bkt".into(),
        key: "huge.raw".into(),
        size: 100 << 30,
    }];
    cfg.roles.push(SimRole {
        account: "111".into(),
        name: "AliyunECSImageImportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    let s = sim::start(cfg).await.unwrap();
    let c1 = a1();
    let role = "AliyunECSImageExportDefaultRole";
    let trust = r#"{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":["ecs.aliyuncs.com"]}}],"Version":"1"}"#;
    call(
        &s,
        &c1,
        RAM,
        "CreateRole",
        &[("RoleName", role), ("AssumeRolePolicyDocument", trust)],
    )
    .await
    .unwrap();
    call(
        &s,
        &c1,
        RAM,
        "AttachPolicyToRole",
        &[
            ("PolicyType", "System"),
            ("PolicyName", "AliyunECSImageExportRolePolicy"),
            ("RoleName", role),
        ],
    )
    .await
    .unwrap();
    let export = [
        ("RegionId", REGION),
        ("ImageId", IMAGE),
        ("OSSBucket", "src-bkt"),
    ];
    let e = api(call(&s, &c1, ECS, "ExportImage", &export)
        .await
        .unwrap_err());
    assert_eq!(e.1, "NoSetRoletoECSServiceAcount", "not propagated yet");
    tokio::time::sleep(Duration::from_millis(800)).await;
    call(&s, &c1, ECS, "ExportImage", &export).await.unwrap();

    // A 100 GiB generated disk imports without being read.
    let r = import(
        &s,
        &c1,
        "src-bkt",
        "huge.raw",
        "huge-1",
        &[("DiskDeviceMapping.1.DiskImageSize", "100")],
    )
    .await
    .unwrap();
    let t = wait_task(&s, &c1, r["TaskId"].as_str().unwrap()).await;
    assert_eq!(t["TaskStatus"], "Finished", "{t}");
    let id = r["ImageId"].as_str().unwrap();
    let (size, crc) = s.object_crc64("src-bkt", "huge.raw").unwrap();
    assert_eq!(s.image_crc64(id), Some((size, crc)));
    assert_eq!(s.image(id).unwrap()["Size"], 100);
    s.shutdown().await;
}

async fn raw_get(uri: &str) -> (u16, String) {
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(Method::GET)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn signature_errors_follow_the_reference() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.ecs_endpoint();
    let wrong = StaticProvider(Credentials::new("ak1", "not-the-secret"));
    let e = call(&s, &wrong, ECS, "DescribeRegions", &[])
        .await
        .unwrap_err();
    let RpcError::Api(a) = e else { panic!() };
    assert_eq!((a.status, a.code.as_str()), (400, "SignatureDoesNotMatch"));
    assert!(
        a.message.contains(
            "server string to sign is:POST&%2F&AccessKeyId%3Dak1%26Action%3DDescribeRegions"
        ),
        "{}",
        a.message
    );
    assert!(a.host_id.as_deref() == Some("127.0.0.1"), "{:?}", a.host_id);
    assert!(a
        .recommend
        .as_deref()
        .unwrap()
        .starts_with("https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch&product=Ecs"));
    let unknown = StaticProvider(Credentials::new("nobody", "x"));
    let e = api(call(&s, &unknown, ECS, "DescribeRegions", &[])
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (404, "InvalidAccessKeyId.NotFound"));
    let e = api(call(&s, &a1(), ECS, "NoSuchThing", &[]).await.unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (404, "InvalidAction.NotFound"));
    let e = api(call(&s, &a1(), "2099-01-01", "DescribeRegions", &[])
        .await
        .unwrap_err());
    assert_eq!(e.1, "InvalidVersion");
    let ok = call(&s, &a1(), ECS, "DescribeRegions", &[]).await.unwrap();
    assert_eq!(ok["Regions"]["Region"][0]["RegionId"], REGION);
    assert!(ok["RequestId"].as_str().unwrap().len() >= 32);

    // Raw GETs: nonce reuse, stale timestamp, XML by default.
    let creds = Credentials::new("ak1", "sk1");
    let req = RpcRequest::new(&ep, ECS, "DescribeRegions").get();
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (uri, _) = signed_parts(&req, &creds, &now, "nonce-1");
    let (st, body) = raw_get(&uri).await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = raw_get(&uri).await;
    assert_eq!(st, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Code"], "SignatureNonceUsed");
    for k in ["RequestId", "HostId", "Message", "Recommend"] {
        assert!(v[k].is_string(), "{k} missing: {v}");
    }
    let old = chrono::DateTime::<chrono::Utc>::from(SystemTime::now() - Duration::from_secs(3600))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (uri, _) = signed_parts(&req, &creds, &old, "nonce-2");
    let (st, body) = raw_get(&uri).await;
    assert_eq!(st, 400);
    assert!(body.contains("InvalidTimeStamp.Expired"), "{body}");
    let (uri, _) = signed_parts(&req, &creds, &now, "nonce-3");
    let (st, body) = raw_get(&uri.replace("Format=JSON", "Format=XML")).await;
    assert_eq!(st, 400, "Format is signed: {body}");
    assert!(
        body.starts_with("<?xml") && body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );

    // A V3 (ACS3-HMAC-SHA256) request signed by the client's V3 signer.
    let host = ep.trim_start_matches("http://").to_string();
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let v3_headers = |nonce: &str| {
        vec![
            ("host".to_string(), host.clone()),
            ("x-acs-action".to_string(), "DescribeImages".to_string()),
            ("x-acs-version".to_string(), ECS.to_string()),
            ("x-acs-date".to_string(), now.clone()),
            ("x-acs-signature-nonce".to_string(), nonce.to_string()),
            ("x-acs-content-sha256".to_string(), empty.to_string()),
        ]
    };
    let query = vec![("RegionId".to_string(), REGION.to_string())];
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for (secret, want) in [("sk1", 200u16), ("wrong", 400)] {
        let headers = v3_headers(&format!("v3-{secret}"));
        let auth =
            ossrelay::acs::rpc::authorization_v3("ak1", secret, "POST", &query, &headers, empty);
        let mut b = http::Request::builder()
            .method(Method::POST)
            .uri(format!("{ep}/?RegionId={REGION}"));
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b = b.header("authorization", auth);
        let resp = c
            .request(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{body}");
        if want == 200 {
            assert!(
                body.starts_with("<?xml"),
                "no Format parameter: XML, {body}"
            );
            assert!(body.contains("<ImageId>m-src0001</ImageId>"), "{body}");
        } else {
            assert!(body.contains("SignatureDoesNotMatch"), "{body}");
        }
    }
    s.shutdown().await;
}

#[tokio::test]
async fn assume_role_across_accounts_and_expiry() {
    let mut cfg = config();
    cfg.sts_ttl = Some(Duration::from_millis(1500));
    let s = sim::start(cfg).await.unwrap();
    let ep = s.ecs_endpoint();
    let sts = StsClient::new(&ep).with_rpc(client());
    let input = |arn: &str| AssumeRoleInput {
        role_arn: arn.into(),
        role_session_name: "image-migrate".into(),
        duration_seconds: 3600,
        policy: None,
        external_id: None,
    };
    let out = sts
        .assume_role(&a1(), &input("acs:ram::222:role/migrator"))
        .await
        .unwrap();
    let c = &out.credentials;
    assert!(c.access_key_id.starts_with("STS."));
    let temp = StaticProvider(Credentials {
        access_key_id: c.access_key_id.clone(),
        access_key_secret: c.access_key_secret.clone(),
        security_token: Some(c.security_token.clone()),
        expiration: None,
    });
    let who = sts.get_caller_identity(&temp).await.unwrap();
    assert_eq!(who.account_id, "222");
    assert_eq!(who.identity_type, "AssumedRole");
    let me = sts.get_caller_identity(&a1()).await.unwrap();
    assert_eq!(me.account_id, "111");
    let raw = call(&s, &a2(), STS, "GetCallerIdentity", &[])
        .await
        .unwrap();
    assert_eq!(raw["Arn"], "acs:ram::222:root");

    // The temporary credentials act for 222 on OSS.
    let put = |body: &'static str| {
        Req::new(&ep, Method::PUT, "dst-bkt", "from-111.txt")
            .creds(Some((&c.access_key_id, &c.access_key_secret)))
            .h("x-oss-security-token", c.security_token.clone())
            .body(body)
    };
    let r = put("hello").send().await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let r = Req::new(&ep, Method::PUT, "src-bkt", "x.txt")
        .creds(Some((&c.access_key_id, &c.access_key_secret)))
        .h("x-oss-security-token", c.security_token.clone())
        .body("x")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 403, "111's bucket is not 222's");

    // Trust and existence.
    let e = api(sts
        .assume_role(&a2(), &input("acs:ram::222:role/migrator"))
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (403, "NoPermission"));
    let e = api(sts
        .assume_role(&a1(), &input("acs:ram::222:role/nope"))
        .await
        .unwrap_err());
    assert_eq!((e.0, e.1.as_str()), (404, "EntityNotExist.Role"));
    let mut short = input("acs:ram::222:role/migrator");
    short.duration_seconds = 60;
    let e = api(sts.assume_role(&a1(), &short).await.unwrap_err());
    assert_eq!(e.1, "InvalidParameter.DurationSeconds");

    // After the configured lifetime: OSS 403 SecurityTokenExpired, RPC InvalidSecurityToken.Expired.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let r = put("late").send().await;
    assert_eq!(r.status.as_u16(), 403);
    assert_eq!(r.code(), "SecurityTokenExpired");
    let e = api(sts.get_caller_identity(&temp).await.unwrap_err());
    assert_eq!(e.1, "InvalidSecurityToken.Expired");
    s.shutdown().await;
}

#[tokio::test]
async fn metadata_service_rotates_role_credentials() {
    let mut cfg = config();
    cfg.imds_role = Some(("222".into(), "relay-vm".into()));
    cfg.imds_rotation = Duration::from_millis(1000);
    let s = sim::start(cfg).await.unwrap();
    let ep = s.ecs_endpoint();
    let env = EnvLookup::from_map([("OSSRELAY_IMDS_ENDPOINT", ep.as_str())]);
    let p = EcsRamRoleProvider::new(None, &env).with_imdsv1_disabled(true);
    let first = p.credentials().await.unwrap();
    assert!(first.access_key_id.starts_with("STS."));
    assert!(first.expiration.unwrap() > SystemTime::now());
    let r = Req::new(&ep, Method::PUT, "dst-bkt", "vm.txt")
        .creds(Some((&first.access_key_id, &first.access_key_secret)))
        .h(
            "x-oss-security-token",
            first.security_token.clone().unwrap(),
        )
        .body("from the vm")
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let again = p.credentials().await.unwrap();
    assert_eq!(again.access_key_id, first.access_key_id, "same period");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = p.credentials().await.unwrap();
    assert_ne!(next.access_key_id, first.access_key_id, "rotated");

    // Token rules over raw HTTP.
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let send = |m: Method, path: &str, h: Option<(&str, &str)>| {
        let mut b = http::Request::builder()
            .method(m)
            .uri(format!("{ep}{path}"));
        if let Some((k, v)) = h {
            b = b.header(k, v);
        }
        c.request(b.body(Full::new(Bytes::new())).unwrap())
    };
    let r = send(Method::PUT, "/latest/api/token", None).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = send(
        Method::GET,
        "/latest/meta-data/ram/security-credentials/",
        Some(("X-aliyun-ecs-metadata-token", "forged")),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = send(
        Method::GET,
        "/latest/meta-data/ram/security-credentials/other",
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    s.shutdown().await;
}

#[tokio::test]
async fn metadata_token_modes() {
    for (mode, v1_allowed, v2_works) in [
        (sim::ImdsTokens::Required, false, true),
        (sim::ImdsTokens::Unsupported, true, false),
    ] {
        let mut cfg = config();
        cfg.imds_role = Some(("222".into(), "relay-vm".into()));
        cfg.imds_tokens = mode;
        let s = sim::start(cfg).await.unwrap();
        let env = EnvLookup::from_map([("OSSRELAY_IMDS_ENDPOINT", s.endpoint())]);
        let v2_only = EcsRamRoleProvider::new(None, &env).with_imdsv1_disabled(true);
        assert_eq!(v2_only.credentials().await.is_ok(), v2_works, "{mode:?}");
        let fallback = EcsRamRoleProvider::new(None, &env);
        assert_eq!(
            fallback.credentials().await.is_ok(),
            v1_allowed || v2_works,
            "{mode:?}"
        );
        let (st, _) = raw_get(&format!(
            "{}/latest/meta-data/ram/security-credentials/relay-vm",
            s.endpoint()
        ))
        .await;
        assert_eq!(st == 200, v1_allowed, "{mode:?}");
        s.shutdown().await;
    }
}

#[tokio::test]
async fn export_into_a_directory_store_reads_back_over_oss() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.store = ossrelay_sim::StoreKind::Dir(dir.path().to_path_buf());
    cfg.roles.push(SimRole {
        account: "111".into(),
        name: "AliyunECSImageExportDefaultRole".into(),
        trusted: "ecs".into(),
    });
    let s = sim::start(cfg).await.unwrap();
    let c1 = a1();
    let t = call(
        &s,
        &c1,
        ECS,
        "ExportImage",
        &[
            ("RegionId", REGION),
            ("ImageId", IMAGE),
            ("OSSBucket", "src-bkt"),
        ],
    )
    .await
    .unwrap();
    let done = wait_task(&s, &c1, t["TaskId"].as_str().unwrap()).await;
    assert_eq!(done["TaskStatus"], "Finished", "{done}");
    let key = "m-src0001_system.raw.tar.gz";
    let ep = s.endpoint();
    let r = Req::new(&ep, Method::GET, "src-bkt", key)
        .creds(Some(("ak1", "sk1")))
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 200);
    let crc = r.crc();
    let body = r.body.unwrap();
    assert_eq!(crc, crc64::checksum(&body));
    let m = gunzip_tar(&body);
    assert_eq!(m[0].0, "m-src0001_system.raw");
    assert_eq!(
        (m[0].1.len() as u64, crc64::checksum(&m[0].1)),
        s.image_crc64(IMAGE).unwrap()
    );
    s.shutdown().await;
}
