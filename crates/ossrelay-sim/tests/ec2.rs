//! EC2 VM Import/Export and IAM on the S3 dialect's control listener, end to end over real
//! sockets: a raw HTTP/1.1 client and a small SigV4 signer written here (form body, signed
//! `content-type;host;x-amz-date` as botocore does), so the simulator's verifier is checked by
//! code that is not its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ossrelay_sim::{
    Dialect, Ec2TaskKind, RpcFault, SimAccount, SimBucket, SimConfig, SimEc2Image, SimEc2TaskFail,
    SimServer,
};

const A: (&str, &str, &str) = ("111122223333", "AKIDAAAA", "secret-a");
const B: (&str, &str, &str) = ("444455556666", "AKIDBBBB", "secret-b");
const REGION: &str = "us-west-2";
const AMI: &str = "ami-0123456789abcdef0";
/// 3 GiB + 1 MiB: a volume of 4 GiB, never stored (synthetic).
const AMI_SIZE: u64 = (3 << 30) + (1 << 20);

fn hmac(k: &[u8], m: &str) -> Vec<u8> {
    let mut h = Hmac::<Sha256>::new_from_slice(k).unwrap();
    h.update(m.as_bytes());
    h.finalize().into_bytes().to_vec()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn tag(&self, name: &str) -> Option<&str> {
        tag(&self.body, name)
    }
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&format!("</{name}>"))?;
    Some(&xml[i..i + j])
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `k=v&…` with values percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn raw(addr: SocketAddr, head: String, body: &[u8]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Resp {
        status,
        body: String::from_utf8_lossy(&out[split + 4..]).into_owned(),
    }
}

/// Sends a signed Query request: POST form body, or (`get`) the same pairs in the query.
async fn call_as(
    addr: SocketAddr,
    who: (&str, &str, &str),
    service: &str,
    region: &str,
    body: &str,
    get: bool,
) -> Resp {
    let (_, ak, secret) = who;
    let host = addr.to_string();
    let now: chrono::DateTime<chrono::Utc> = SystemTime::now().into();
    let amz = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz[..8];
    let (query, payload_body) = if get { (body, "") } else { ("", body) };
    let ct = "application/x-www-form-urlencoded; charset=utf-8";
    let mut hs: Vec<(&str, String)> = vec![("host", host.clone()), ("x-amz-date", amz.clone())];
    if !get {
        hs.insert(0, ("content-type", ct.to_string()));
    }
    let mut q: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
    q.sort();
    let cq = q.join("&");
    let signed = hs.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let ch: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let cr = format!(
        "{}\n/\n{cq}\n{ch}\n{signed}\n{}",
        if get { "GET" } else { "POST" },
        sha(payload_body.as_bytes())
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!("AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}", sha(cr.as_bytes()));
    let mut k = hmac(format!("AWS4{secret}").as_bytes(), date);
    for p in [region, service, "aws4_request"] {
        k = hmac(&k, p);
    }
    let sig = hex::encode(hmac(&k, &sts));
    let mut head = format!(
        "{} /{}{query} HTTP/1.1\r\n",
        if get { "GET" } else { "POST" },
        if get { "?" } else { "" }
    );
    for (k, v) in &hs {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!(
        "authorization: AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        payload_body.len()
    );
    raw(addr, head, payload_body.as_bytes()).await
}

fn ctl(sim: &SimServer) -> SocketAddr {
    sim.ec2_endpoint()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

async fn ec2(sim: &SimServer, who: (&str, &str, &str), pairs: &[(&str, &str)]) -> Resp {
    let mut all = vec![("Version", "2016-11-15")];
    all.extend_from_slice(pairs);
    call_as(ctl(sim), who, "ec2", REGION, &form(&all), false).await
}

async fn iam(sim: &SimServer, who: (&str, &str, &str), pairs: &[(&str, &str)]) -> Resp {
    let mut all = vec![("Version", "2010-05-08")];
    all.extend_from_slice(pairs);
    call_as(ctl(sim), who, "iam", "us-east-1", &form(&all), false).await
}

async fn start(task_secs: f64, tweak: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut cfg = SimConfig {
        dialect: Dialect::S3,
        region: REGION.into(),
        accounts: [A, B]
            .iter()
            .map(|(n, k, s)| SimAccount {
                name: n.to_string(),
                access_key_id: k.to_string(),
                access_key_secret: s.to_string(),
            })
            .collect(),
        buckets: vec![
            SimBucket {
                name: "exports".into(),
                account: A.0.into(),
            },
            SimBucket {
                name: "b-disks".into(),
                account: B.0.into(),
            },
        ],
        remote_buckets: vec![("far-away".into(), "eu-west-1".into())],
        ec2_images: vec![
            SimEc2Image::parse(&format!("{AMI}:{AMI_SIZE}:boot=uefi,name=web"), A.0).unwrap(),
            SimEc2Image::parse("ami-0000000000000000b:1MiB", B.0).unwrap(),
        ],
        vmimport_roles: vec![A.0.into()],
        task_duration: Duration::from_secs_f64(task_secs),
        ..SimConfig::default()
    };
    tweak(&mut cfg);
    ossrelay_sim::start(cfg).await.unwrap()
}

/// Polls a task until it is `completed` or `deleted`; returns the last item and every
/// StatusMessage seen on the way.
async fn wait_task(
    sim: &SimServer,
    who: (&str, &str, &str),
    action: &str,
    id_param: &str,
    id: &str,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let r = ec2(sim, who, &[("Action", action), (id_param, id)]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if let Some(m) = r.tag("statusMessage") {
            if seen.last().map(String::as_str) != Some(m) {
                seen.push(m.to_string());
            }
        }
        let status = r.tag("status").unwrap().to_string();
        if status == "completed" || status == "deleted" {
            return (r.body, seen);
        }
        assert!(Instant::now() < deadline, "task {id} stuck: {}", r.body);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

async fn image_check(sim: &SimServer, id: &str) -> (u16, serde_json::Value) {
    let head =
        format!("GET /-/images/{id} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    let r = raw(ctl(sim), head, b"").await;
    (r.status, serde_json::from_str(&r.body).unwrap())
}

fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 17
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

async fn export(sim: &SimServer, extra: &[(&str, &str)]) -> Resp {
    let mut p = vec![
        ("Action", "ExportImage"),
        ("ImageId", AMI),
        ("DiskImageFormat", "RAW"),
        ("S3ExportLocation.S3Bucket", "exports"),
        ("S3ExportLocation.S3Prefix", "vm/"),
    ];
    // An extra pair replaces the default of the same name.
    p.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    p.extend_from_slice(extra);
    ec2(sim, A, &p).await
}

#[tokio::test]
async fn describe_images_shows_the_preloaded_ami() {
    let sim = start(1.0, |_| {}).await;
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImages"),
            ("ImageId.1", AMI),
            ("Owner.1", "self"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(
        "<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>"
    ));
    for (k, v) in [
        ("imageId", AMI),
        ("name", "web"),
        ("imageState", "available"),
        ("architecture", "x86_64"),
        ("bootMode", "uefi"),
        ("platformDetails", "Linux/UNIX"),
        ("rootDeviceName", "/dev/xvda"),
        ("rootDeviceType", "ebs"),
        ("virtualizationType", "hvm"),
        ("volumeSize", "4"),
        ("volumeType", "gp3"),
        ("encrypted", "false"),
        ("deleteOnTermination", "true"),
        ("imageOwnerId", A.0),
        ("imdsSupport", "v2.0"),
    ] {
        assert_eq!(r.tag(k), Some(v), "{k} in {}", r.body);
    }
    assert!(r.tag("platform").is_none(), "platform only for Windows");
    assert!(is_id(r.tag("snapshotId").unwrap(), "snap-"));
    // The same through GET with the query string; a filter that excludes it.
    let q = form(&[
        ("Action", "DescribeImages"),
        ("Version", "2016-11-15"),
        ("Filter.1.Name", "architecture"),
        ("Filter.1.Value.1", "arm64"),
    ]);
    let r = call_as(ctl(&sim), A, "ec2", REGION, &q, true).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<imagesSet></imagesSet>"), "{}", r.body);
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImages"),
            ("Filter.1.Name", "name"),
            ("Filter.1.Value.1", "w*"),
        ],
    )
    .await;
    assert_eq!(r.tag("imageId"), Some(AMI));
    // Account B's AMI is invisible to A; a malformed ID is refused.
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImages"),
            ("ImageId.1", "ami-0000000000000000b"),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.tag("Code"), Some("InvalidAMIID.NotFound"));
    assert_eq!(
        r.tag("Message"),
        Some("The image id '[ami-0000000000000000b]' does not exist")
    );
    assert!(
        r.body.contains("<Response><Errors><Error>") && r.tag("RequestID").is_some(),
        "{}",
        r.body
    );
    let r = ec2(
        &sim,
        A,
        &[("Action", "DescribeImages"), ("ImageId.1", "ami-xyz")],
    )
    .await;
    assert_eq!(r.tag("Code"), Some("InvalidAMIID.Malformed"));
    let (status, v) = image_check(&sim, AMI).await;
    assert_eq!(status, 200);
    assert_eq!(v["size"], AMI_SIZE);
    let (size, crc) = sim.image_crc64(AMI).unwrap();
    assert_eq!(
        (size, v["crc64"].as_str().unwrap()),
        (AMI_SIZE, format!("{crc:016x}").as_str())
    );
    assert_eq!(image_check(&sim, "ami-00000000000000001").await.0, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn export_then_import_round_trips_the_disk() {
    let sim = start(0.8, |_| {}).await;
    let r = export(
        &sim,
        &[
            ("TagSpecification.1.ResourceType", "export-image-task"),
            ("TagSpecification.1.Tag.1.Key", "k"),
            ("TagSpecification.1.Tag.1.Value", "v"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.tag("exportImageTaskId").unwrap().to_string();
    assert!(is_id(&task, "export-ami-"), "{task}");
    assert_eq!(
        (r.tag("status"), r.tag("statusMessage"), r.tag("progress")),
        (Some("active"), Some("validating"), Some("0"))
    );
    assert_eq!((r.tag("key"), r.tag("value")), (Some("k"), Some("v")));
    let key = format!("vm/{task}.raw");
    assert!(
        sim.object_crc64("exports", &key).is_none(),
        "no object before completion"
    );
    let (last, seen) = wait_task(
        &sim,
        A,
        "DescribeExportImageTasks",
        "ExportImageTaskId.1",
        &task,
    )
    .await;
    assert_eq!(tag(&last, "status"), Some("completed"), "{last}");
    assert_eq!(tag(&last, "s3Prefix"), Some("vm/"));
    assert!(
        seen.iter()
            .all(|m| ["validating", "converting", "updating"].contains(&m.as_str())),
        "{seen:?}"
    );
    assert!(seen.len() >= 2, "the status message moves on: {seen:?}");
    let (size, crc) = sim.object_crc64("exports", &key).expect("export object");
    assert_eq!(Some((size, crc)), sim.image_crc64(AMI));
    assert_eq!(
        sim.object_crc64nvme("exports", &key).map(|(s, _)| s),
        Some(AMI_SIZE)
    );

    // Import the exported object (Url form), then compare the new AMI's disk with the source.
    let url = format!("s3://exports/{key}");
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "ImportImage"),
            ("Architecture", "x86_64"),
            ("BootMode", "uefi"),
            ("Platform", "Linux"),
            ("LicenseType", "BYOL"),
            ("DiskContainer.1.Format", "raw"),
            ("DiskContainer.1.Url", &url),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.tag("importTaskId").unwrap().to_string();
    assert!(is_id(&task, "import-ami-"), "{task}");
    assert_eq!(
        (r.tag("status"), r.tag("statusMessage")),
        (Some("active"), Some("pending"))
    );
    assert!(
        r.tag("imageId").is_none(),
        "ImageId is set only at completion"
    );
    // Filters.N (not Filter.N) selects by state.
    let active = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImportImageTasks"),
            ("Filters.1.Name", "task-state"),
            ("Filters.1.Value.1", "completed"),
        ],
    )
    .await;
    assert!(
        active
            .body
            .contains("<importImageTaskSet></importImageTaskSet>"),
        "{}",
        active.body
    );
    let (last, seen) =
        wait_task(&sim, A, "DescribeImportImageTasks", "ImportTaskId.1", &task).await;
    assert_eq!(tag(&last, "status"), Some("completed"), "{last}");
    assert!(
        seen.iter().all(|m| [
            "pending",
            "validating",
            "converting",
            "booting",
            "preparing ami"
        ]
        .contains(&m.as_str())),
        "{seen:?}"
    );
    let done = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImportImageTasks"),
            ("Filters.1.Name", "task-state"),
            ("Filters.1.Value.1", "completed"),
        ],
    )
    .await;
    assert_eq!(done.tag("importTaskId"), Some(task.as_str()));
    let none = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImportImageTasks"),
            ("Filters.1.Name", "task-state"),
            ("Filters.1.Value.1", "active"),
        ],
    )
    .await;
    assert!(
        none.body
            .contains("<importImageTaskSet></importImageTaskSet>"),
        "{}",
        none.body
    );
    let new_ami = tag(&last, "imageId").unwrap().to_string();
    assert!(is_id(&new_ami, "ami-"), "{new_ami}");
    assert_eq!(
        tag(&last, "diskImageSize"),
        Some(format!("{AMI_SIZE}.0").as_str())
    );
    assert_eq!(tag(&last, "deviceName"), Some("/dev/sda1"));
    assert_eq!(tag(&last, "url"), Some(url.as_str()));
    let r = ec2(
        &sim,
        A,
        &[("Action", "DescribeImages"), ("ImageId.1", &new_ami)],
    )
    .await;
    assert_eq!(
        (r.tag("imageState"), r.tag("bootMode"), r.tag("volumeSize")),
        (Some("available"), Some("uefi"), Some("4")),
        "{}",
        r.body
    );
    let (status, v) = image_check(&sim, &new_ami).await;
    let (src_size, src_crc) = sim.image_crc64(AMI).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["image_id"], new_ami.as_str());
    assert_eq!(v["size"], src_size);
    assert_eq!(v["crc64"], format!("{src_crc:016x}"));
    sim.shutdown().await;
}

#[tokio::test]
async fn client_tokens_make_tasks_idempotent() {
    let sim = start(5.0, |_| {}).await;
    let a = export(&sim, &[("ClientToken", "tok-1")]).await;
    let b = export(&sim, &[("ClientToken", "tok-1")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(a.tag("exportImageTaskId"), b.tag("exportImageTaskId"));
    let c = export(&sim, &[("ClientToken", "tok-1"), ("Description", "other")]).await;
    assert_eq!(
        (c.status, c.tag("Code")),
        (400, Some("IdempotentParameterMismatch"))
    );
    // Another token: a second export of the same AMI while one is active is refused.
    let d = export(&sim, &[("ClientToken", "tok-2")]).await;
    assert_eq!(
        (d.status, d.tag("Code")),
        (400, Some("IncorrectState")),
        "{}",
        d.body
    );
    let r = ec2(&sim, A, &[("Action", "DescribeExportImageTasks")]).await;
    assert_eq!(
        r.body.matches("<exportImageTaskId>").count(),
        1,
        "{}",
        r.body
    );

    sim.put_object_bytes("exports", "d.raw", vec![0u8; 4096].into());
    let imp = |extra: &'static str| {
        let sim = &sim;
        async move {
            ec2(
                sim,
                A,
                &[
                    ("Action", "ImportImage"),
                    ("ClientToken", "imp-1"),
                    ("Description", extra),
                    ("DiskContainer.1.Format", "RAW"),
                    ("DiskContainer.1.UserBucket.S3Bucket", "exports"),
                    ("DiskContainer.1.UserBucket.S3Key", "d.raw"),
                ],
            )
            .await
        }
    };
    let (x, y, z) = (imp("one").await, imp("one").await, imp("two").await);
    assert_eq!(x.status, 200, "{}", x.body);
    assert_eq!(x.tag("importTaskId"), y.tag("importTaskId"));
    assert_eq!(z.tag("Code"), Some("IdempotentParameterMismatch"));
    sim.shutdown().await;
}

#[tokio::test]
async fn cancelled_tasks_end_deleted_and_leave_nothing() {
    let sim = start(30.0, |_| {}).await;
    let r = export(&sim, &[]).await;
    let task = r.tag("exportImageTaskId").unwrap().to_string();
    let c = ec2(
        &sim,
        A,
        &[("Action", "CancelExportTask"), ("ExportTaskId", &task)],
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert!(c.body.contains("<CancelExportTaskResponse"));
    let (last, _) = wait_task(
        &sim,
        A,
        "DescribeExportImageTasks",
        "ExportImageTaskId.1",
        &task,
    )
    .await;
    assert_eq!(tag(&last, "status"), Some("deleted"));
    assert!(tag(&last, "statusMessage").is_some_and(|m| !m.is_empty()));
    assert!(sim
        .object_crc64("exports", &format!("vm/{task}.raw"))
        .is_none());
    let again = ec2(
        &sim,
        A,
        &[("Action", "CancelExportTask"), ("ExportTaskId", &task)],
    )
    .await;
    assert_eq!(again.tag("Code"), Some("IncorrectState"));
    let unknown = ec2(
        &sim,
        A,
        &[
            ("Action", "CancelExportTask"),
            ("ExportTaskId", "export-ami-00000000000000000"),
        ],
    )
    .await;
    assert_eq!(unknown.tag("Code"), Some("InvalidExportTaskID.NotFound"));

    sim.put_object_bytes("exports", "d.raw", vec![1u8; 8192].into());
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "ImportImage"),
            ("DiskContainer.1.Format", "RAW"),
            ("DiskContainer.1.UserBucket.S3Bucket", "exports"),
            ("DiskContainer.1.UserBucket.S3Key", "d.raw"),
        ],
    )
    .await;
    let task = r.tag("importTaskId").unwrap().to_string();
    let c = ec2(
        &sim,
        A,
        &[
            ("Action", "CancelImportTask"),
            ("ImportTaskId", &task),
            ("CancelReason", "changed my mind"),
        ],
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(
        (
            c.tag("importTaskId"),
            c.tag("previousState"),
            c.tag("state")
        ),
        (Some(task.as_str()), Some("active"), Some("deleting"))
    );
    let (last, _) = wait_task(&sim, A, "DescribeImportImageTasks", "ImportTaskId.1", &task).await;
    assert_eq!(
        (tag(&last, "status"), tag(&last, "statusMessage")),
        (Some("deleted"), Some("changed my mind"))
    );
    assert!(tag(&last, "imageId").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn import_needs_a_role_iam_can_create() {
    let sim = start(0.5, |_| {}).await;
    sim.put_object_bytes("b-disks", "root.raw", vec![7u8; 1 << 16].into());
    let import = || {
        ec2(
            &sim,
            B,
            &[
                ("Action", "ImportImage"),
                ("DiskContainer.1.Format", "raw"),
                ("DiskContainer.1.UserBucket.S3Bucket", "b-disks"),
                ("DiskContainer.1.UserBucket.S3Key", "root.raw"),
            ],
        )
    };
    let r = import().await;
    assert_eq!(
        (r.status, r.tag("Code")),
        (400, Some("InvalidParameter")),
        "{}",
        r.body
    );
    assert_eq!(r.tag("Message"), Some("The service role vmimport provided does not exist or does not have sufficient permissions"));

    let r = iam(&sim, B, &[("Action", "GetRole"), ("RoleName", "vmimport")]).await;
    assert_eq!(
        (r.status, r.tag("Code")),
        (404, Some("NoSuchEntity")),
        "{}",
        r.body
    );
    assert!(r.body.contains("<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type>"));
    let r = iam(
        &sim,
        B,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "vmimport"),
            ("AssumeRolePolicyDocument", "{\"Statement\":"),
        ],
    )
    .await;
    assert_eq!(
        (r.status, r.tag("Code")),
        (400, Some("MalformedPolicyDocument"))
    );
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:Externalid":"vmimport"}}}]}"#;
    let r = iam(
        &sim,
        B,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "vmimport"),
            ("AssumeRolePolicyDocument", trust),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.tag("Arn"),
        Some(format!("arn:aws:iam::{}:role/vmimport", B.0).as_str())
    );
    assert!(r.tag("RoleId").unwrap().starts_with("AROA"));
    let again = iam(
        &sim,
        B,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "vmimport"),
            ("AssumeRolePolicyDocument", trust),
        ],
    )
    .await;
    assert_eq!(
        (again.status, again.tag("Code")),
        (409, Some("EntityAlreadyExists"))
    );
    // A role without a policy is not enough; nor is a policy for another bucket.
    assert_eq!(import().await.tag("Code"), Some("InvalidParameter"));
    let policy = |bucket: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["s3:GetBucketLocation","s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::{bucket}","arn:aws:s3:::{bucket}/*"]}}]}}"#
        )
    };
    let put = |doc: String| {
        let sim = &sim;
        async move {
            iam(
                sim,
                B,
                &[
                    ("Action", "PutRolePolicy"),
                    ("RoleName", "vmimport"),
                    ("PolicyName", "vmimport"),
                    ("PolicyDocument", &doc),
                ],
            )
            .await
        }
    };
    assert_eq!(put(policy("elsewhere")).await.status, 200);
    assert_eq!(import().await.tag("Code"), Some("InvalidParameter"));
    let r = put(policy("b-disks")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<PutRolePolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><ResponseMetadata><RequestId>"));
    let r = iam(
        &sim,
        B,
        &[
            ("Action", "GetRolePolicy"),
            ("RoleName", "vmimport"),
            ("PolicyName", "vmimport"),
        ],
    )
    .await;
    let encoded = r.tag("PolicyDocument").unwrap();
    assert!(
        encoded.starts_with("%7B%22Version%22"),
        "URL-encoded: {encoded}"
    );
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .unwrap();
    assert_eq!(decoded, policy("b-disks"));
    let r = iam(
        &sim,
        B,
        &[
            ("Action", "GetRolePolicy"),
            ("RoleName", "vmimport"),
            ("PolicyName", "nope"),
        ],
    )
    .await;
    assert_eq!((r.status, r.tag("Code")), (404, Some("NoSuchEntity")));
    let r = put("{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:*\"}]}".into()).await;
    assert_eq!(
        r.tag("Code"),
        Some("MalformedPolicyDocument"),
        "no Resource"
    );

    let r = import().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.tag("importTaskId").unwrap().to_string();
    let (last, _) = wait_task(&sim, B, "DescribeImportImageTasks", "ImportTaskId.1", &task).await;
    assert_eq!(tag(&last, "status"), Some("completed"), "{last}");
    let ami = tag(&last, "imageId").unwrap();
    let (size, crc) = sim.image_crc64(ami).unwrap();
    assert_eq!(
        (size, Some((size, crc))),
        (1 << 16, sim.object_crc64("b-disks", "root.raw"))
    );
    // A's tasks are not B's.
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "DescribeImportImageTasks"),
            ("ImportTaskId.1", &task),
        ],
    )
    .await;
    assert_eq!(r.tag("Code"), Some("InvalidConversionTaskId.NotFound"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_fresh_role_waits_for_propagation() {
    let sim = start(0.5, |c| c.role_propagation = Duration::from_millis(700)).await;
    sim.put_object_bytes("b-disks", "root.raw", vec![7u8; 4096].into());
    let trust = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:Externalid":"vmimport"}}}]}"#;
    let all = r#"{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    assert_eq!(
        iam(
            &sim,
            B,
            &[
                ("Action", "CreateRole"),
                ("RoleName", "vmimport"),
                ("AssumeRolePolicyDocument", trust)
            ]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        iam(
            &sim,
            B,
            &[
                ("Action", "PutRolePolicy"),
                ("RoleName", "vmimport"),
                ("PolicyName", "p"),
                ("PolicyDocument", all)
            ]
        )
        .await
        .status,
        200
    );
    let import = || {
        ec2(
            &sim,
            B,
            &[
                ("Action", "ImportImage"),
                ("DiskContainer.1.UserBucket.S3Bucket", "b-disks"),
                ("DiskContainer.1.UserBucket.S3Key", "root.raw"),
            ],
        )
    };
    assert_eq!(
        import().await.tag("Code"),
        Some("InvalidParameter"),
        "not propagated yet"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = import().await;
    assert_eq!(r.status, 200, "{}", r.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_disks_fail_the_task_with_a_client_error() {
    let sim = start(0.4, |_| {}).await;
    sim.put_object_bytes(
        "exports",
        "disk.vmdk",
        bytes::Bytes::from_static(b"KDMV\x01\0\0\0 not really a vmdk"),
    );
    sim.put_object_bytes("exports", "odd.raw", vec![0u8; 1000].into());
    for (key, format, text) in [
        ("disk.vmdk", "vmdk", "ClientError: Unsupported"),
        ("odd.raw", "raw", "ClientError: Disk validation failed"),
    ] {
        let r = ec2(
            &sim,
            A,
            &[
                ("Action", "ImportImage"),
                ("DiskContainer.1.Format", format),
                ("DiskContainer.1.UserBucket.S3Bucket", "exports"),
                ("DiskContainer.1.UserBucket.S3Key", key),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let task = r.tag("importTaskId").unwrap().to_string();
        let (last, _) =
            wait_task(&sim, A, "DescribeImportImageTasks", "ImportTaskId.1", &task).await;
        assert_eq!(tag(&last, "status"), Some("deleted"), "{last}");
        let m = tag(&last, "statusMessage").unwrap();
        assert!(m.starts_with(text), "{key}: {m}");
        assert!(tag(&last, "imageId").is_none());
    }
    // Synchronous refusals: an unknown format, a missing object, a bucket of another region.
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "ImportImage"),
            ("DiskContainer.1.Format", "qcow2"),
            ("DiskContainer.1.UserBucket.S3Bucket", "exports"),
            ("DiskContainer.1.UserBucket.S3Key", "odd.raw"),
        ],
    )
    .await;
    assert_eq!(r.tag("Code"), Some("InvalidParameter"));
    let r = ec2(
        &sim,
        A,
        &[
            ("Action", "ImportImage"),
            ("DiskContainer.1.UserBucket.S3Bucket", "exports"),
            ("DiskContainer.1.UserBucket.S3Key", "missing.raw"),
        ],
    )
    .await;
    assert_eq!(r.tag("Code"), Some("InvalidParameter"));
    let r = export(&sim, &[("S3ExportLocation.S3Bucket", "far-away")]).await;
    assert_eq!(
        r.tag("Message"),
        Some("The given S3 bucket is not local to the Region"),
        "{}",
        r.body
    );
    let r = export(&sim, &[("DiskImageFormat", "VMDK")]).await;
    assert_eq!(r.tag("Code"), Some("InvalidParameter"));
    let r = export(&sim, &[("DryRun", "true")]).await;
    assert_eq!((r.status, r.tag("Code")), (412, Some("DryRunOperation")));
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_export_failure_leaves_no_object() {
    let sim = start(0.4, |c| {
        c.ec2_task_fail = vec![SimEc2TaskFail {
            kind: Ec2TaskKind::Export,
            message: "Simulated disk read error".into(),
        }]
    })
    .await;
    let r = export(&sim, &[]).await;
    let task = r.tag("exportImageTaskId").unwrap().to_string();
    let (last, _) = wait_task(
        &sim,
        A,
        "DescribeExportImageTasks",
        "ExportImageTaskId.1",
        &task,
    )
    .await;
    assert_eq!(tag(&last, "status"), Some("deleted"));
    assert_eq!(
        tag(&last, "statusMessage"),
        Some("ClientError: Simulated disk read error")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sim
        .object_crc64("exports", &format!("vm/{task}.raw"))
        .is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn signatures_and_faults_use_each_service_format() {
    let sim = start(1.0, |_| {}).await;
    let body = form(&[("Action", "DescribeImages"), ("Version", "2016-11-15")]);
    // EC2 request signed for another service / region → AuthFailure in EC2's XML.
    for (service, region) in [("s3", REGION), ("ec2", "us-east-1")] {
        let r = call_as(ctl(&sim), A, service, region, &body, false).await;
        assert_eq!(
            (r.status, r.tag("Code")),
            (401, Some("AuthFailure")),
            "{service} {region}: {}",
            r.body
        );
        assert!(r
            .body
            .contains("<Response><Errors><Error><Code>AuthFailure</Code>"));
    }
    // IAM is scoped to us-east-1 whatever the region; another service → SignatureDoesNotMatch.
    let body = form(&[
        ("Action", "GetRole"),
        ("Version", "2010-05-08"),
        ("RoleName", "vmimport"),
    ]);
    let r = call_as(ctl(&sim), A, "iam", REGION, &body, false).await;
    assert_eq!(
        (r.status, r.tag("Code")),
        (403, Some("SignatureDoesNotMatch")),
        "{}",
        r.body
    );
    let r = call_as(ctl(&sim), A, "ec2", "us-east-1", &body, false).await;
    assert_eq!(
        (r.status, r.tag("Code")),
        (403, Some("SignatureDoesNotMatch")),
        "{}",
        r.body
    );
    let r = call_as(ctl(&sim), A, "iam", "us-east-1", &body, false).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.tag("RoleName"), Some("vmimport"));

    sim.add_rpc_fault(RpcFault {
        action: "DescribeExportImageTasks".into(),
        code: "RequestLimitExceeded".into(),
        status: 503,
        count: 1,
    });
    let r = ec2(&sim, A, &[("Action", "DescribeExportImageTasks")]).await;
    assert_eq!(
        (r.status, r.tag("Code")),
        (503, Some("RequestLimitExceeded")),
        "{}",
        r.body
    );
    assert!(r.body.contains("<Response><Errors><Error>") && r.tag("RequestID").is_some());
    let r = ec2(&sim, A, &[("Action", "DescribeExportImageTasks")]).await;
    assert_eq!(r.status, 200, "the fault was for one call: {}", r.body);
    sim.shutdown().await;
}
