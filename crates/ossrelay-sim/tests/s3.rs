//! The S3 dialect end to end over real sockets: a raw HTTP/1.1 client and a tiny SigV4 signer
//! written here (not the simulator's verifier, so the two check each other).

use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ossrelay_sim::{Dialect, S3Flavour, SimAccount, SimBucket, SimConfig};

const AK: &str = "AKIDTEST";
const SK: &str = "secret";

fn hmac(k: &[u8], m: &str) -> Vec<u8> {
    let mut h = Hmac::<Sha256>::new_from_slice(k).unwrap();
    h.update(m.as_bytes());
    h.finalize().into_bytes().to_vec()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn nvme(b: &[u8]) -> String {
    let c = crc::Crc::<u64>::new(&crc::CRC_64_NVME).checksum(b);
    base64::engine::general_purpose::STANDARD.encode(c.to_be_bytes())
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn h(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Signs for S3 (header form, path style, host = addr) and sends one request.
#[allow(clippy::too_many_arguments)]
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    query: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    secret: &str,
    region: &str,
    host: Option<&str>,
) -> Resp {
    send_as(
        addr,
        method,
        path,
        query,
        extra,
        body,
        (AK, secret, None),
        region,
        host,
        "s3",
    )
    .await
}

/// Signs with `(access key, secret, session token)` for `service` and sends one request.
#[allow(clippy::too_many_arguments)]
async fn send_as(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    query: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    (ak, secret, token): (&str, &str, Option<&str>),
    region: &str,
    host: Option<&str>,
    service: &str,
) -> Resp {
    let host = host.map(String::from).unwrap_or_else(|| addr.to_string());
    let now: chrono::DateTime<chrono::Utc> = SystemTime::now().into();
    let amz = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz[..8];
    // A caller-given x-amz-content-sha256 (e.g. a STREAMING mode) replaces the body hash.
    let payload = extra
        .iter()
        .find(|(k, _)| *k == "x-amz-content-sha256")
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| sha(body));
    let mut hs: Vec<(String, String)> = vec![
        ("host".into(), host.clone()),
        ("x-amz-content-sha256".into(), payload.clone()),
        ("x-amz-date".into(), amz.clone()),
    ];
    for (k, v) in extra.iter().filter(|(k, _)| *k != "x-amz-content-sha256") {
        hs.push((k.to_string(), v.to_string()));
    }
    if let Some(t) = token {
        hs.push(("x-amz-security-token".into(), t.to_string()));
    }
    hs.sort();
    let mut q: Vec<&str> = query.split('&').filter(|s| !s.is_empty()).collect();
    q.sort();
    let cq = q
        .iter()
        .map(|p| {
            if p.contains('=') {
                p.to_string()
            } else {
                format!("{p}=")
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let signed = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let ch: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let cr = format!("{method}\n{path}\n{cq}\n{ch}\n{signed}\n{payload}");
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!("AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}", sha(cr.as_bytes()));
    let mut k = hmac(format!("AWS4{secret}").as_bytes(), date);
    for p in [region, service, "aws4_request"] {
        k = hmac(&k, p);
    }
    let sig = hex::encode(hmac(&k, &sts));
    let mut req = format!(
        "{method} {path}{}{query} HTTP/1.1\r\n",
        if query.is_empty() { "" } else { "?" }
    );
    for (k, v) in &hs {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "authorization: AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}\r\n"
    ));
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let i = xml.find(&open)? + open.len();
    let j = xml[i..].find(&format!("</{name}>"))?;
    Some(&xml[i..i + j])
}

async fn start() -> ossrelay_sim::SimServer {
    start_with(false).await
}

async fn start_with(quirks: bool) -> ossrelay_sim::SimServer {
    start_cfg(|c| c.quirks = quirks).await
}

async fn start_cfg(f: impl FnOnce(&mut SimConfig)) -> ossrelay_sim::SimServer {
    let mut cfg = SimConfig {
        dialect: Dialect::S3,
        region: "us-east-1".into(),
        accounts: vec![SimAccount {
            name: "a".into(),
            access_key_id: AK.into(),
            access_key_secret: SK.into(),
        }],
        buckets: vec![SimBucket {
            name: "bkt".into(),
            account: "a".into(),
        }],
        remote_buckets: vec![("eub".into(), "eu-west-1".into())],
        aws_roles: vec![ossrelay_sim::SimAwsRole {
            account: "a".into(),
            name: "reader".into(),
            external_id: Some("ext".into()),
        }],
        imds_role: Some(("a".into(), "vm".into())),
        ..SimConfig::default()
    };
    f(&mut cfg);
    ossrelay_sim::start(cfg).await.unwrap()
}

#[tokio::test]
async fn put_get_head_and_signature_errors() {
    let sim = start().await;
    let a = sim.local_addr();
    let data = b"hello world!".repeat(1000);
    let r = send(
        a,
        "PUT",
        "/bkt/k.bin",
        "",
        &[],
        &data,
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.h("etag").unwrap(),
        format!("\"{:x}\"", md5::Md5::digest(&data))
    );
    assert!(r.h("x-amz-request-id").is_some() && r.h("x-amz-id-2").is_some());
    let r = send(
        a,
        "GET",
        "/bkt/k.bin",
        "",
        &[("range", "bytes=2-5")],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (206, &data[2..6]));
    let r = send(
        a,
        "HEAD",
        "/bkt/k.bin",
        "",
        &[("x-amz-checksum-mode", "ENABLED")],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.h("x-amz-checksum-crc64nvme"), Some(nvme(&data).as_str()));
    assert_eq!(r.h("x-amz-checksum-type"), Some("FULL_OBJECT"));
    let r = send(
        a,
        "GET",
        "/bkt/k.bin",
        "",
        &[("if-match", "\"nope\"")],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.status, 412);
    let r = send(
        a,
        "GET",
        "/bkt/missing",
        "",
        &[],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!((r.status, tag(&r.text(), "Code")), (404, Some("NoSuchKey")));
    // Wrong secret: the error shows what the server signed.
    let r = send(
        a,
        "GET",
        "/bkt/k.bin",
        "",
        &[],
        b"",
        "bad",
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let t = r.text();
    assert_eq!(tag(&t, "Code"), Some("SignatureDoesNotMatch"));
    assert!(tag(&t, "CanonicalRequest")
        .unwrap()
        .starts_with("GET\n/bkt/k.bin\n"));
    assert!(tag(&t, "StringToSign").is_some());
    // A checksum header that does not match the body.
    let r = send(
        a,
        "PUT",
        "/bkt/x",
        "",
        &[("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=")],
        b"abc",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(tag(&r.text(), "Code"), Some("BadDigest"));
    // Signed for the wrong region, and sent to the wrong regional endpoint.
    let r = send(a, "GET", "/eub/k", "", &[], b"", SK, "us-east-1", None).await;
    assert_eq!(r.status, 400);
    assert_eq!(tag(&r.text(), "Region"), Some("eu-west-1"));
    let r = send(
        a,
        "GET",
        "/k",
        "",
        &[],
        b"",
        SK,
        "eu-west-1",
        Some("eub.s3.us-east-1.amazonaws.com"),
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(r.h("x-amz-bucket-region"), Some("eu-west-1"));
    assert_eq!(tag(&r.text(), "Code"), Some("PermanentRedirect"));
    let r = send(
        a,
        "HEAD",
        "/k",
        "",
        &[],
        b"",
        SK,
        "eu-west-1",
        Some("eub.s3.us-east-1.amazonaws.com"),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (301, 0));
    // Virtual-hosted in the right region works.
    let r = send(
        a,
        "PUT",
        "/v",
        "",
        &[],
        b"x",
        SK,
        "eu-west-1",
        Some("eub.s3.eu-west-1.amazonaws.com"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stats = sim.stats();
    assert_eq!(stats["requests"]["PutObject"]["200"], 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn multipart_full_object_crc64nvme() {
    let sim = start().await;
    let a = sim.local_addr();
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        "uploads",
        &[
            ("x-amz-checksum-algorithm", "CRC64NVME"),
            ("x-amz-checksum-type", "FULL_OBJECT"),
        ],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    let id = tag(&t, "UploadId").unwrap().to_string();
    let p1 = vec![7u8; 5 << 20];
    let p2 = b"tail".to_vec();
    let mut etags = Vec::new();
    for (n, p) in [(1, &p1), (2, &p2)] {
        let q = format!("partNumber={n}&uploadId={id}");
        let r = send(a, "PUT", "/bkt/mp", &q, &[], p, SK, "us-east-1", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.h("x-amz-checksum-crc64nvme"), Some(nvme(p).as_str()));
        etags.push(r.h("etag").unwrap().to_string());
    }
    let r = send(
        a,
        "GET",
        "/bkt/mp",
        &format!("max-parts=1&uploadId={id}"),
        &[],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    let t = r.text();
    assert_eq!(tag(&t, "IsTruncated"), Some("true"));
    assert_eq!(tag(&t, "NextPartNumberMarker"), Some("1"));
    assert_eq!(tag(&t, "ChecksumCRC64NVME"), Some(nvme(&p1).as_str()));
    let doc = |parts: &[(u32, &str)]| {
        let mut s = String::from("<CompleteMultipartUpload>");
        for (n, e) in parts {
            s.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
            ));
        }
        s + "</CompleteMultipartUpload>"
    };
    let whole = [p1.clone(), p2.clone()].concat();
    let q = format!("uploadId={id}");
    let good = doc(&[(1, &etags[0]), (2, &etags[1])]);
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        &q,
        &[("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=")],
        good.as_bytes(),
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(tag(&r.text(), "Code"), Some("BadDigest"));
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        &q,
        &[("x-amz-mp-object-size", "5")],
        good.as_bytes(),
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(tag(&r.text(), "Code"), Some("InvalidRequest"));
    // Per-part checksums listed in the body are checked against the stored parts.
    let with_sums = |second: &str| {
        format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag><ChecksumCRC64NVME>{}</ChecksumCRC64NVME></Part><Part><PartNumber>2</PartNumber><ETag>{}</ETag><ChecksumCRC64NVME>{second}</ChecksumCRC64NVME></Part></CompleteMultipartUpload>",
            etags[0],
            nvme(&p1),
            etags[1]
        )
    };
    for (body, code) in [
        (with_sums(&nvme(b"tali")), "InvalidPart"),
        (
            with_sums(&nvme(&p2)).replace("ChecksumCRC64NVME>", "ChecksumCRC32>"),
            "InvalidPart",
        ),
    ] {
        let r = call(a, "POST", "/bkt/mp", &q, &[], body.as_bytes()).await;
        assert_eq!(
            (r.status, tag(&r.text(), "Code")),
            (400, Some(code)),
            "{body}"
        );
        if code == "InvalidPart" {
            assert!(r.text().contains("<PartNumber>"), "{}", r.text());
        }
    }
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        &q,
        &[],
        doc(&[(2, &etags[1]), (1, &etags[0])]).as_bytes(),
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(tag(&r.text(), "Code"), Some("InvalidPartOrder"));
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        &q,
        &[],
        doc(&[(1, "\"00\"")]).as_bytes(),
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(tag(&r.text(), "Code"), Some("InvalidPart"));
    let size = whole.len().to_string();
    let sum = nvme(&whole);
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        &q,
        &[
            ("x-amz-checksum-crc64nvme", &sum),
            ("x-amz-mp-object-size", &size),
        ],
        good.as_bytes(),
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    assert_eq!(tag(&t, "ChecksumCRC64NVME"), Some(sum.as_str()));
    let mut m = md5::Md5::new();
    for e in &etags {
        m.update(hex::decode(e.trim_matches('"')).unwrap());
    }
    assert_eq!(
        tag(&t, "ETag"),
        Some(format!("\"{:x}-2\"", m.finalize()).as_str())
    );
    assert_eq!(
        sim.object_crc64nvme("bkt", "mp"),
        Some((
            whole.len() as u64,
            crc::Crc::<u64>::new(&crc::CRC_64_NVME).checksum(&whole)
        ))
    );
    let r = send(
        a,
        "POST",
        "/bkt/mp",
        &q,
        &[],
        good.as_bytes(),
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (404, Some("NoSuchUpload"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unsigned_trailer_body_is_checked() {
    let sim = start().await;
    let a = sim.local_addr();
    let h = [
        ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        ("x-amz-decoded-content-length", "5"),
    ];
    // CRC-32 of "hello" is 0x3610A686.
    let good = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
    let r = send(a, "PUT", "/bkt/t", "", &h, good, SK, "us-east-1", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.h("x-amz-checksum-crc32"), Some("NhCmhg=="));
    assert_eq!(sim.get_object_bytes("bkt", "t").unwrap().as_ref(), b"hello");
    let bad = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
    let r = send(a, "PUT", "/bkt/t2", "", &h, bad, SK, "us-east-1", None).await;
    assert_eq!(tag(&r.text(), "Code"), Some("BadDigest"));
    sim.shutdown().await;
}

#[tokio::test]
async fn quirks_ignore_checksums_but_keep_md5() {
    let sim = start_with(true).await;
    let a = sim.local_addr();
    let r = send(
        a,
        "PUT",
        "/bkt/q",
        "",
        &[("x-amz-checksum-crc64nvme", "AAAAAAAAAAA=")],
        b"abc",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.h("x-amz-checksum-crc64nvme").is_none());
    let r = send(
        a,
        "HEAD",
        "/bkt/q",
        "",
        &[("x-amz-checksum-mode", "ENABLED")],
        b"",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert!(r.h("x-amz-checksum-crc64nvme").is_none());
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"abd"));
    let r = send(
        a,
        "PUT",
        "/bkt/q",
        "",
        &[("content-md5", &md5)],
        b"abc",
        SK,
        "us-east-1",
        None,
    )
    .await;
    assert_eq!(tag(&r.text(), "Code"), Some("BadDigest"));
    sim.shutdown().await;
}

#[tokio::test]
async fn sts_assume_role_keys_work_on_s3() {
    let sim = start().await;
    let a = sim.local_addr();
    let ctl: std::net::SocketAddr = sim
        .ec2_endpoint()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let form = |ext: &str| {
        format!("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3Aa%3Arole%2Freader&RoleSessionName=t1&DurationSeconds=900&ExternalId={ext}")
    };
    let ct = [(
        "content-type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    let r = send_as(
        ctl,
        "POST",
        "/",
        "",
        &ct,
        form("bad").as_bytes(),
        (AK, SK, None),
        "us-east-1",
        None,
        "sts",
    )
    .await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (403, Some("AccessDenied"))
    );
    assert_eq!(tag(&r.text(), "Type"), Some("Sender"));
    let r = send_as(
        ctl,
        "POST",
        "/",
        "",
        &ct,
        form("ext").as_bytes(),
        (AK, SK, None),
        "us-east-1",
        None,
        "sts",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.text();
    let (ak, sk, tok) = (
        tag(&t, "AccessKeyId").unwrap(),
        tag(&t, "SecretAccessKey").unwrap(),
        tag(&t, "SessionToken").unwrap(),
    );
    assert!(ak.starts_with("ASIA"));
    let r = send_as(
        a,
        "PUT",
        "/bkt/sts",
        "",
        &[],
        b"x",
        (ak, sk, Some(tok)),
        "us-east-1",
        None,
        "s3",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send_as(
        a,
        "PUT",
        "/bkt/sts",
        "",
        &[],
        b"x",
        (ak, sk, None),
        "us-east-1",
        None,
        "s3",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send_as(
        ctl,
        "POST",
        "/",
        "",
        &ct,
        b"Action=GetCallerIdentity&Version=2011-06-15",
        (ak, sk, Some(tok)),
        "us-east-1",
        None,
        "sts",
    )
    .await;
    assert_eq!(
        tag(&r.text(), "Arn"),
        Some("arn:aws:sts::a:assumed-role/reader/t1")
    );
    let r = send_as(
        ctl,
        "POST",
        "/",
        "",
        &ct,
        b"Action=GetCallerIdentity&Version=2011-06-15",
        (AK, "bad", None),
        "us-east-1",
        None,
        "sts",
    )
    .await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (403, Some("SignatureDoesNotMatch"))
    );
    sim.shutdown().await;
}

/// The sigv4-streaming document example (s3-protocol.md §4.2) replayed byte for byte against
/// a simulator whose clock is set back to 2013-05-24.
#[tokio::test]
async fn signed_chunked_doc_example_end_to_end() {
    let then = 1_369_353_600i64; // 2013-05-24T00:00:00Z
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sim = ossrelay_sim::start(SimConfig {
        dialect: Dialect::S3,
        region: "us-east-1".into(),
        accounts: vec![SimAccount {
            name: "doc".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            access_key_secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }],
        buckets: vec![SimBucket {
            name: "examplebucket".into(),
            account: "doc".into(),
        }],
        clock_skew: then - now,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let body = |c1: &str| {
        let mut b = Vec::new();
        b.extend_from_slice(format!("10000;chunk-signature={c1}\r\n").as_bytes());
        b.extend(std::iter::repeat_n(b'a', 65_536));
        b.extend_from_slice(b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n");
        b.extend(std::iter::repeat_n(b'a', 1024));
        b.extend_from_slice(b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n");
        b
    };
    let addr = sim.local_addr();
    let ok = put_doc(
        addr,
        body("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(
        sim.object_crc64nvme("examplebucket", "chunkObject.txt")
            .map(|x| x.0),
        Some(66_560)
    );
    let bad = put_doc(
        addr,
        body("0000000000000000000000000000000000000000000000000000000000000000"),
    )
    .await;
    assert!(
        bad.starts_with("HTTP/1.1 403") && bad.contains("SignatureDoesNotMatch"),
        "{bad}"
    );
    sim.shutdown().await;
}

async fn put_doc(addr: std::net::SocketAddr, b: Vec<u8>) -> String {
    let head = format!(
            "PUT /examplebucket/chunkObject.txt HTTP/1.1\r\nhost: s3.amazonaws.com\r\nx-amz-date: 20130524T000000Z\r\nx-amz-storage-class: REDUCED_REDUNDANCY\r\nauthorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9\r\nx-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD\r\ncontent-encoding: aws-chunked\r\nx-amz-decoded-content-length: 66560\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            b.len()
        );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&b).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

async fn raw(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn imdsv2_aws_shapes() {
    let sim = start().await;
    let a = sim.local_addr();
    let put = |ttl: &str, extra: &str| {
        format!("PUT /latest/api/token HTTP/1.1\r\nhost: x\r\nx-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n")
    };
    assert!(raw(a, &put("0", "")).await.starts_with("HTTP/1.1 400"));
    assert!(raw(a, &put("21601", "")).await.starts_with("HTTP/1.1 400"));
    assert!(raw(a, &put("60", "x-forwarded-for: 1.2.3.4\r\n"))
        .await
        .starts_with("HTTP/1.1 403"));
    let r = raw(a, &put("60", "")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let token = r.split("\r\n\r\n").nth(1).unwrap().to_string();
    let get = |path: &str, tok: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nx-aws-ec2-metadata-token: {tok}\r\nconnection: close\r\n\r\n")
    };
    let base = "/latest/meta-data/iam/security-credentials/";
    assert!(raw(a, &get(base, "nope")).await.starts_with("HTTP/1.1 401"));
    let r = raw(a, &get(base, &token)).await;
    assert!(r.ends_with("\r\n\r\nvm"), "{r}");
    let r = raw(a, &get(&format!("{base}vm"), &token)).await;
    let doc: serde_json::Value = serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    assert!(doc["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    for k in ["SecretAccessKey", "Token", "Expiration", "LastUpdated"] {
        assert!(doc[k].is_string(), "{k}");
    }
    // The instance-role keys work on S3.
    let (ak, sk, tok) = (
        doc["AccessKeyId"].as_str().unwrap(),
        doc["SecretAccessKey"].as_str().unwrap(),
        doc["Token"].as_str().unwrap(),
    );
    let r = send_as(
        a,
        "GET",
        "/bkt",
        "list-type=2",
        &[],
        b"",
        (ak, sk, Some(tok)),
        "us-east-1",
        None,
        "s3",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    sim.shutdown().await;
}

#[tokio::test]
async fn complete_faults_embedded_error_and_keepalive() {
    let sim = start().await;
    let a = sim.local_addr();
    sim.set_fault_ops(Some(vec!["CompleteMultipartUpload".into()]));
    for (kind, embedded) in [
        (ossrelay_sim::FaultKind::CompleteError, true),
        (ossrelay_sim::FaultKind::KeepAlive, false),
    ] {
        let r = send(
            a,
            "POST",
            "/bkt/f",
            "uploads",
            &[],
            b"",
            SK,
            "us-east-1",
            None,
        )
        .await;
        let t = r.text();
        let id = tag(&t, "UploadId").unwrap().to_string();
        let r = send(
            a,
            "PUT",
            "/bkt/f",
            &format!("partNumber=1&uploadId={id}"),
            &[],
            b"abc",
            SK,
            "us-east-1",
            None,
        )
        .await;
        let doc = format!("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>", r.h("etag").unwrap());
        sim.set_faults(vec![(kind, 1.0)]);
        let r = send(
            a,
            "POST",
            "/bkt/f",
            &format!("uploadId={id}"),
            &[],
            doc.as_bytes(),
            SK,
            "us-east-1",
            None,
        )
        .await;
        sim.set_faults(vec![]);
        assert_eq!(r.status, 200);
        let t = r.text();
        if embedded {
            assert_eq!(tag(&t, "Code"), Some("InternalError"), "{t}");
            // The upload is still open: a retry completes it.
            let r = send(
                a,
                "POST",
                "/bkt/f",
                &format!("uploadId={id}"),
                &[],
                doc.as_bytes(),
                SK,
                "us-east-1",
                None,
            )
            .await;
            assert!(
                r.text().contains("<CompleteMultipartUploadResult"),
                "{}",
                r.text()
            );
        } else {
            assert!(
                t.contains("\n ") && t.contains("<CompleteMultipartUploadResult"),
                "{t}"
            );
        }
    }
    sim.shutdown().await;
}

/// [`send`] with the account's secret, in us-east-1, to the listener's own address.
async fn call(
    a: std::net::SocketAddr,
    method: &str,
    path: &str,
    query: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    send(a, method, path, query, extra, body, SK, "us-east-1", None).await
}

fn md5_b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b))
}

#[tokio::test]
async fn bucket_lifecycle_get_put_delete() {
    let sim = start().await;
    let a = sim.local_addr();
    let req = |method: &'static str, extra: Vec<(&'static str, String)>, body: Vec<u8>| async move {
        let h: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send(
            a,
            method,
            "/bkt",
            "lifecycle",
            &h,
            &body,
            SK,
            "us-east-1",
            None,
        )
        .await
    };
    let r = req("GET", vec![], vec![]).await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (404, Some("NoSuchLifecycleConfiguration"))
    );
    let good = b"<LifecycleConfiguration><Rule><ID>ossrelay-abort-incomplete</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>3</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>".to_vec();
    let r = req("PUT", vec![], good.clone()).await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (400, Some("InvalidRequest"))
    );
    assert_eq!(
        tag(&r.text(), "Message"),
        Some("Missing required header for this request: Content-MD5")
    );
    let r = req(
        "PUT",
        vec![("content-md5", md5_b64(b"other"))],
        good.clone(),
    )
    .await;
    assert_eq!((r.status, tag(&r.text(), "Code")), (400, Some("BadDigest")));
    let bad = b"<LifecycleConfiguration><Rule>".to_vec();
    let r = req("PUT", vec![("content-md5", md5_b64(&bad))], bad).await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (400, Some("MalformedXML"))
    );
    let r = req("PUT", vec![("content-md5", md5_b64(&good))], good.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = req("GET", vec![], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text()
            .contains("<DaysAfterInitiation>3</DaysAfterInitiation>"),
        "{}",
        r.text()
    );
    // An x-amz-checksum-* header stands in for Content-MD5; it is verified too.
    let r = req(
        "PUT",
        vec![("x-amz-checksum-crc64nvme", nvme(b"x"))],
        good.clone(),
    )
    .await;
    assert_eq!((r.status, tag(&r.text(), "Code")), (400, Some("BadDigest")));
    let r = req(
        "PUT",
        vec![("x-amz-checksum-crc64nvme", nvme(&good))],
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Uploads under the rule's prefix are still listed (they are younger than 3 days).
    let r = call(a, "POST", "/bkt/p/k", "uploads", &[], b"").await;
    let id = tag(&r.text(), "UploadId").unwrap().to_string();
    let r = call(a, "GET", "/bkt", "uploads", &[], b"").await;
    assert_eq!(
        tag(&r.text(), "UploadId"),
        Some(id.as_str()),
        "{}",
        r.text()
    );
    let r = req("DELETE", vec![], vec![]).await;
    assert_eq!(r.status, 204);
    let r = req("GET", vec![], vec![]).await;
    assert_eq!(r.status, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn quirks_refuse_aws_chunked_bodies() {
    let h = [
        ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        ("x-amz-decoded-content-length", "5"),
    ];
    let body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
    let sim = start_with(true).await;
    let a = sim.local_addr();
    let r = call(a, "PUT", "/bkt/t", "", &h, body).await;
    assert_eq!(
        (r.status, tag(&r.text(), "Code")),
        (501, Some("NotImplemented")),
        "{}",
        r.text()
    );
    assert!(r.text().contains("aws-chunked"), "{}", r.text());
    assert!(sim.get_object_bytes("bkt", "t").is_none());
    // A plain body still goes in.
    let r = call(a, "PUT", "/bkt/t", "", &[], b"hello").await;
    assert_eq!(r.status, 200, "{}", r.text());
    sim.shutdown().await;
    // S3 itself (no quirks) takes the same aws-chunked request.
    let sim = start().await;
    let r = call(sim.local_addr(), "PUT", "/bkt/t", "", &h, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    sim.shutdown().await;
}

#[tokio::test]
async fn cos_flavour_reports_crc64ecma() {
    let sim = start_cfg(|c| c.s3_flavour = S3Flavour::Cos).await;
    let a = sim.local_addr();
    // CRC-64/XZ check value of "123456789".
    let want = "11051210869376104954";
    let r = call(a, "PUT", "/bkt/c", "", &[], b"123456789").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.h("x-cos-hash-crc64ecma"), Some(want));
    let r = call(
        a,
        "HEAD",
        "/bkt/c",
        "",
        &[("x-amz-checksum-mode", "ENABLED")],
        b"",
    )
    .await;
    assert_eq!(r.h("x-cos-hash-crc64ecma"), Some(want));
    assert!(
        r.h("x-amz-checksum-crc64nvme").is_none(),
        "COS ignores x-amz-checksum-*"
    );
    let r = call(a, "POST", "/bkt/m", "uploads", &[], b"").await;
    let id = tag(&r.text(), "UploadId").unwrap().to_string();
    let q = format!("partNumber=1&uploadId={id}");
    let r = call(a, "PUT", "/bkt/m", &q, &[], b"123456789").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.h("x-cos-hash-crc64ecma"), Some(want));
    sim.shutdown().await;
    // Plain S3 sends no COS header.
    let sim = start().await;
    let r = call(sim.local_addr(), "PUT", "/bkt/c", "", &[], b"123456789").await;
    assert!(r.h("x-cos-hash-crc64ecma").is_none());
    sim.shutdown().await;
}
