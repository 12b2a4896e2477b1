//! End-to-end checks of the simulator's OSS API over raw HTTP (path style on 127.0.0.1).

mod sim_support;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use ossrelay::crc64;
use ossrelay_sim::{self as sim, SimAccount, SimBucket, SimConfig, StoreKind, SyntheticObject};
use sim_support::*;

fn config() -> SimConfig {
    SimConfig {
        accounts: vec![
            SimAccount {
                name: "sim".into(),
                access_key_id: AK.into(),
                access_key_secret: SK.into(),
            },
            SimAccount {
                name: "other".into(),
                access_key_id: "otherak".into(),
                access_key_secret: "othersecret".into(),
            },
        ],
        buckets: vec![
            SimBucket {
                name: "bkt".into(),
                account: "sim".into(),
            },
            SimBucket {
                name: "theirs".into(),
                account: "other".into(),
            },
        ],
        remote_buckets: vec![("far".into(), "us-west-1".into())],
        synthetic: vec![
            SyntheticObject {
                bucket: "src".into(),
                key: "disk.raw".into(),
                size: 1 << 40,
            },
            SyntheticObject {
                bucket: "src".into(),
                key: "small.raw".into(),
                size: (3 << 20) + 4321,
            },
        ],
        discard: vec!["sink".into()],
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn put_get_head_delete_roundtrip() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let data = pattern(300_000, 1);
    let key = "dir/my file+1.txt";
    let r = Req::new(&ep, Method::PUT, "bkt", key)
        .h("content-type", "text/x-test")
        .h("x-oss-meta-author", "alice")
        .h("content-md5", md5_b64(&data))
        .body(data.clone())
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.h("etag").unwrap(), format!("\"{}\"", md5_hex(&data)));
    assert_eq!(r.crc(), crc64::checksum(&data));
    assert_eq!(r.h("content-md5").unwrap(), md5_b64(&data));
    let rid = r.h("x-oss-request-id").unwrap();
    assert_eq!(rid.len(), 24);
    assert!(rid
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_eq!(r.h("server"), Some("AliyunOSS"));
    assert!(httpdate::parse_http_date(r.h("date").unwrap()).is_ok());

    let g = Req::new(&ep, Method::GET, "bkt", key).send().await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body.as_ref().unwrap().as_ref(), &data[..]);
    assert_eq!(g.h("content-type"), Some("text/x-test"));
    assert_eq!(g.h("x-oss-meta-author"), Some("alice"));
    assert_eq!(g.crc(), crc64::checksum(&data));
    assert!(g.h("last-modified").is_some());

    let h = Req::new(&ep, Method::HEAD, "bkt", key).send().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.h("content-length"), Some("300000"));
    assert_eq!(h.h("x-oss-object-type"), Some("Normal"));
    assert_eq!(
        s.object_crc64("bkt", key),
        Some((300_000, crc64::checksum(&data)))
    );

    let d = Req::new(&ep, Method::DELETE, "bkt", key).send().await;
    assert_eq!(d.status, 204);
    let d = Req::new(&ep, Method::DELETE, "bkt", key).send().await;
    assert_eq!(d.status, 204, "deleting a missing key is not an error");
    let g = Req::new(&ep, Method::GET, "bkt", key).send().await;
    assert_eq!(g.status, 404);
    assert_eq!(g.code(), "NoSuchKey");
    assert_eq!(xml_value(&g.text(), "EC").as_deref(), Some("0026-00000001"));

    // HEAD errors: empty body, x-oss-err carries the XML.
    let h = Req::new(&ep, Method::HEAD, "bkt", key).send().await;
    assert_eq!(h.status, 404);
    assert!(h.body.as_ref().unwrap().is_empty());
    assert_eq!(h.h("x-oss-ec"), Some("0026-00000001"));
    let xml = base64::engine::general_purpose::STANDARD
        .decode(h.h("x-oss-err").unwrap())
        .unwrap();
    let xml = String::from_utf8(xml).unwrap();
    assert_eq!(xml_value(&xml, "Code").as_deref(), Some("NoSuchKey"));
    assert_eq!(
        xml_value(&xml, "RequestId").as_deref(),
        h.h("x-oss-request-id")
    );

    // Bad Content-MD5 → InvalidDigest; the object is not written.
    let r = Req::new(&ep, Method::PUT, "bkt", "x")
        .h("content-md5", md5_b64(b"other"))
        .body(Bytes::from_static(b"hello"))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidDigest")
    );
    assert_eq!(s.object_crc64("bkt", "x"), None);
    // Key rules.
    let long = "k".repeat(1024);
    let r = Req::new(&ep, Method::PUT, "bkt", &long).send().await;
    assert_eq!(r.code(), "InvalidObjectName");
    s.shutdown().await;
}

#[tokio::test]
async fn ranges_and_conditionals() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let data = pattern(1000, 2);
    s.put_object_bytes("bkt", "o", Bytes::from(data.clone()));
    let whole = crc64::checksum(&data);
    let get = |range: &'static str, std: bool| {
        let mut r = Req::new(&ep, Method::GET, "bkt", "o").h("range", range);
        if std {
            r = r.h("x-oss-range-behavior", "standard");
        }
        r.send()
    };
    let r = get("bytes=0-9", false).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.h("content-range"), Some("bytes 0-9/1000"));
    assert_eq!(r.body.as_ref().unwrap().as_ref(), &data[..10]);
    assert_eq!(r.crc(), whole, "206 carries the whole-object CRC");
    let r = get("bytes=500-2000", false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref().unwrap().len(), 1000);
    assert!(r.h("content-range").is_none());
    let r = get("bytes=500-2000", true).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.h("content-range"), Some("bytes 500-999/1000"));
    assert_eq!(r.body.as_ref().unwrap().as_ref(), &data[500..]);
    let r = get("bytes=1000-2000", true).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.code(), "InvalidRange");
    let r = get("bytes=-100", false).await;
    assert_eq!(r.body.as_ref().unwrap().as_ref(), &data[900..]);

    let etag = Req::new(&ep, Method::HEAD, "bkt", "o")
        .send()
        .await
        .h("etag")
        .unwrap()
        .to_string();
    let unquoted = etag.trim_matches('"').to_string();
    let lm = Req::new(&ep, Method::HEAD, "bkt", "o")
        .send()
        .await
        .h("last-modified")
        .unwrap()
        .to_string();
    let cond = |h: &'static str, v: String| Req::new(&ep, Method::GET, "bkt", "o").h(h, v).send();
    assert_eq!(cond("if-match", unquoted.clone()).await.status, 200);
    assert_eq!(cond("if-match", etag.clone()).await.status, 200);
    let r = cond("if-match", "\"0000\"".into()).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (412, "PreconditionFailed")
    );
    assert_eq!(cond("if-none-match", etag.clone()).await.status, 304);
    assert_eq!(cond("if-none-match", "\"0000\"".into()).await.status, 200);
    assert_eq!(cond("if-modified-since", lm.clone()).await.status, 304);
    assert_eq!(cond("if-unmodified-since", lm.clone()).await.status, 200);
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(86_400));
    assert_eq!(cond("if-unmodified-since", past.clone()).await.status, 412);
    assert_eq!(cond("if-modified-since", past).await.status, 200);
    assert_eq!(
        cond("if-modified-since", "garbage".into()).await.status,
        200
    );
    s.shutdown().await;
}

#[tokio::test]
async fn auth_and_bucket_errors() {
    let s = sim::start(SimConfig {
        clock_skew: 0,
        ..config()
    })
    .await
    .unwrap();
    let ep = s.endpoint();
    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .creds(Some((AK, "wrong")))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let sts = xml_value(&r.text(), "StringToSign").unwrap();
    assert!(
        sts.starts_with("GET\n\n\n") && sts.ends_with("/bkt/a"),
        "{sts:?}"
    );
    assert!(xml_value(&r.text(), "StringToSignBytes")
        .unwrap()
        .starts_with("47 45 54 0A"));
    assert!(!r.text().contains(SK), "the secret never appears in errors");

    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .creds(Some(("nope", "x")))
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "InvalidAccessKeyId")
    );
    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .creds(None)
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AccessDenied")
    );
    let r = Req::new(&ep, Method::GET, "theirs", "a").send().await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AccessDenied")
    );
    let r = Req::new(&ep, Method::GET, "nobucket", "a").send().await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "NoSuchBucket")
    );
    let r = Req::new(&ep, Method::GET, "far", "a").send().await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "AccessDenied")
    );
    assert_eq!(xml_value(&r.text(), "Bucket").as_deref(), Some("far"));
    assert_eq!(
        xml_value(&r.text(), "Endpoint").as_deref(),
        Some("oss-us-west-1.aliyuncs.com")
    );

    // Skewed request: 403 with the diagnostic elements and a correct Date header.
    let mut req = Req::new(&ep, Method::GET, "bkt", "a");
    req.date = Some(SystemTime::now() - Duration::from_secs(20 * 60));
    let r = req.send().await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "RequestTimeTooSkewed")
    );
    assert_eq!(
        xml_value(&r.text(), "MaxAllowedSkewMilliseconds").as_deref(),
        Some("900000")
    );
    assert!(xml_value(&r.text(), "RequestTime")
        .unwrap()
        .ends_with(".000Z"));
    assert!(xml_value(&r.text(), "ServerTime").is_some());
    let server_date = httpdate::parse_http_date(r.h("date").unwrap()).unwrap();
    let diff = server_date
        .duration_since(SystemTime::now() - Duration::from_secs(5))
        .unwrap();
    assert!(diff < Duration::from_secs(10));

    // Temporary credentials: right token works, expired is refused.
    let future = SystemTime::now() + Duration::from_secs(600);
    s.add_temporary_credentials("STS.tmp", "tmpsecret", "tok", "sim", future);
    s.put_object_bytes("bkt", "a", Bytes::from_static(b"abc"));
    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .creds(Some(("STS.tmp", "tmpsecret")))
        .h("x-oss-security-token", "tok")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .creds(Some(("STS.tmp", "tmpsecret")))
        .send()
        .await;
    assert_eq!(r.status, 403);
    s.add_temporary_credentials("STS.old", "oldsecret", "tok", "sim", SystemTime::now());
    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .creds(Some(("STS.old", "oldsecret")))
        .h("x-oss-security-token", "tok")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "SecurityTokenExpired")
    );
    // Long-term keys accept (and ignore) a token.
    let r = Req::new(&ep, Method::GET, "bkt", "a")
        .h("x-oss-security-token", "whatever")
        .send()
        .await;
    assert_eq!(r.status, 200);

    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("location", "")
        .send()
        .await;
    assert_eq!(
        r.text().trim_end().lines().last(),
        Some("<LocationConstraint>oss-cn-hangzhou</LocationConstraint>")
    );
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("bucketInfo", "")
        .send()
        .await;
    assert_eq!(
        xml_value(&r.text(), "Location").as_deref(),
        Some("oss-cn-hangzhou")
    );
    assert_eq!(xml_value(&r.text(), "Name").as_deref(), Some("bkt"));
    s.shutdown().await;
}

#[tokio::test]
async fn path_style_can_be_refused() {
    let s = sim::start(SimConfig {
        reject_path_style: true,
        ..config()
    })
    .await
    .unwrap();
    let r = Req::new(&s.endpoint(), Method::GET, "bkt", "a")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (403, "SecondLevelDomainForbidden")
    );
    s.shutdown().await;
}

async fn upload_part<'a>(
    ep: &'a str,
    bucket: &'a str,
    key: &'a str,
    id: &'a str,
    n: &'a str,
    data: &[u8],
) -> Resp {
    Req::new(ep, Method::PUT, bucket, key)
        .q("partNumber", n)
        .q("uploadId", id)
        .body(Bytes::copy_from_slice(data))
        .send()
        .await
}

async fn initiate(ep: &str, bucket: &str, key: &str) -> String {
    let r = Req::new(ep, Method::POST, bucket, key)
        .q("uploads", "")
        .h("content-type", "application/x-disk")
        .h("x-oss-meta-origin", "vm-1")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    xml_value(&r.text(), "UploadId").unwrap()
}

async fn complete(ep: &str, bucket: &str, key: &str, id: &str, parts: &[(u32, &str)]) -> Resp {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (n, e) in parts {
        body.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    Req::new(ep, Method::POST, bucket, key)
        .q("uploadId", id)
        .body(body)
        .send()
        .await
}

async fn multipart_flow(s: &sim::SimServer) {
    let ep = s.endpoint();
    let key = "img/disk.qcow2";
    let id = initiate(&ep, "bkt", key).await;
    let id2 = initiate(&ep, "bkt", key).await;
    assert_ne!(id, id2);
    assert_eq!(id.len(), 32);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    assert_eq!(s.stats()["open_uploads"], 2);

    let p1 = pattern(150_000, 3);
    let p2 = pattern(120_000, 4);
    let p3 = pattern(5_000, 5);
    let r = upload_part(&ep, "bkt", key, &id, "1", &pattern(999, 9)).await;
    assert_eq!(r.status, 200);
    let r1 = upload_part(&ep, "bkt", key, &id, "1", &p1).await; // replaces
    assert_eq!(r1.h("etag").unwrap(), format!("\"{}\"", md5_hex(&p1)));
    assert_eq!(r1.crc(), crc64::checksum(&p1));
    let r2 = upload_part(&ep, "bkt", key, &id, "2", &p2).await;
    let r3 = upload_part(&ep, "bkt", key, &id, "3", &p3).await;
    let (e1, e2, e3) = (
        r1.h("etag").unwrap().to_string(),
        r2.h("etag").unwrap().to_string(),
        r3.h("etag").unwrap().to_string(),
    );
    for bad in ["0", "10001", "x"] {
        let r = upload_part(&ep, "bkt", key, &id, bad, b"z").await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (400, "InvalidArgument"),
            "{bad}"
        );
    }
    let r = upload_part(
        &ep,
        "bkt",
        key,
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
        "1",
        b"z",
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "NoSuchUpload")
    );
    let r = Req::new(&ep, Method::PUT, "bkt", key)
        .q("partNumber", "4")
        .q("uploadId", &id)
        .h("content-md5", md5_b64(b"nope"))
        .body(Bytes::from_static(b"data"))
        .send()
        .await;
    assert_eq!(r.code(), "InvalidDigest");

    // ListParts with paging.
    let r = Req::new(&ep, Method::GET, "bkt", key)
        .q("uploadId", &id)
        .q("max-parts", "2")
        .send()
        .await;
    let t = r.text();
    assert_eq!(xml_values(&t, "PartNumber"), ["1", "2"]);
    assert_eq!(xml_value(&t, "IsTruncated").as_deref(), Some("true"));
    assert_eq!(xml_value(&t, "NextPartNumberMarker").as_deref(), Some("2"));
    assert_eq!(
        xml_values(&t, "HashCrc64ecma")[0],
        crc64::checksum(&p1).to_string()
    );
    let r = Req::new(&ep, Method::GET, "bkt", key)
        .q("uploadId", &id)
        .q("part-number-marker", "2")
        .send()
        .await;
    let t = r.text();
    assert_eq!(xml_values(&t, "PartNumber"), ["3"]);
    assert_eq!(xml_value(&t, "IsTruncated").as_deref(), Some("false"));
    assert_eq!(xml_values(&t, "Size"), ["5000"]);

    // Complete validation.
    let r = complete(&ep, "bkt", key, &id, &[(2, &e2), (1, &e1)]).await;
    assert_eq!(r.code(), "InvalidPartOrder");
    let r = complete(&ep, "bkt", key, &id, &[(1, &e1), (2, &e3)]).await;
    assert_eq!(r.code(), "InvalidPart");
    let r = complete(&ep, "bkt", key, &id, &[(1, &e1), (3, &e3), (4, &e3)]).await;
    assert_eq!(r.code(), "InvalidPart");
    let r = complete(&ep, "bkt", key, &id, &[(3, &e3), (4, &e3)]).await;
    assert_eq!(r.code(), "InvalidPart");
    let r = Req::new(&ep, Method::POST, "bkt", key)
        .q("uploadId", &id)
        .body("<nope")
        .send()
        .await;
    assert_eq!(r.code(), "MalformedXML");
    let r = Req::new(&ep, Method::POST, "bkt", key)
        .q("uploadId", &id)
        .h("x-oss-complete-all", "yes")
        .body("<CompleteMultipartUpload/>")
        .send()
        .await;
    assert_eq!(r.code(), "InvalidArgument");
    // Part 3 (5000 B) listed before the last → EntityTooSmall.
    let small = pattern(200_000, 6);
    let r4 = upload_part(&ep, "bkt", key, &id, "4", &small).await;
    let e4 = r4.h("etag").unwrap().to_string();
    let r = complete(&ep, "bkt", key, &id, &[(1, &e1), (3, &e3), (4, &e4)]).await;
    assert_eq!(r.code(), "EntityTooSmall");

    // Success: parts 1, 2, 3 (4 is discarded).
    let r = complete(&ep, "bkt", key, &id, &[(1, &e1), (2, &e2), (3, &e3)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut all = p1.clone();
    all.extend_from_slice(&p2);
    all.extend_from_slice(&p3);
    let want_crc = crc64::combine_all([
        (crc64::checksum(&p1), p1.len() as u64),
        (crc64::checksum(&p2), p2.len() as u64),
        (crc64::checksum(&p3), p3.len() as u64),
    ]);
    assert_eq!(want_crc, crc64::checksum(&all));
    assert_eq!(r.crc(), want_crc);
    let etag = r.h("etag").unwrap().to_string();
    assert!(etag.ends_with("-3\""), "{etag}");
    assert_eq!(xml_value(&r.text(), "ETag").unwrap(), etag);
    assert_eq!(xml_value(&r.text(), "Key").as_deref(), Some(key));
    let g = Req::new(&ep, Method::GET, "bkt", key).send().await;
    assert_eq!(g.body.as_ref().unwrap().as_ref(), &all[..]);
    assert_eq!(g.h("x-oss-object-type"), Some("Multipart"));
    assert_eq!(g.h("content-type"), Some("application/x-disk"));
    assert_eq!(g.h("x-oss-meta-origin"), Some("vm-1"));
    assert_eq!(g.crc(), want_crc);
    let g = Req::new(&ep, Method::GET, "bkt", key)
        .h("range", "bytes=149990-150009")
        .send()
        .await;
    assert_eq!(g.body.as_ref().unwrap().as_ref(), &all[149_990..150_010]);

    // Completed upload is gone; the other upload ID is unaffected.
    let r = upload_part(&ep, "bkt", key, &id, "1", b"x").await;
    assert_eq!(r.code(), "NoSuchUpload");
    assert_eq!(s.stats()["open_uploads"], 1);

    // complete-all on the second upload.
    upload_part(&ep, "bkt", key, &id2, "2", &p1).await;
    upload_part(&ep, "bkt", key, &id2, "1", &p2).await;
    let r = Req::new(&ep, Method::POST, "bkt", key)
        .q("uploadId", &id2)
        .h("x-oss-complete-all", "yes")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut both = p2.clone();
    both.extend_from_slice(&p1);
    assert_eq!(r.crc(), crc64::checksum(&both));

    // Abort: 204, then 404.
    let id3 = initiate(&ep, "bkt", key).await;
    let a = Req::new(&ep, Method::DELETE, "bkt", key)
        .q("uploadId", &id3)
        .send()
        .await;
    assert_eq!(a.status, 204);
    let a = Req::new(&ep, Method::DELETE, "bkt", key)
        .q("uploadId", &id3)
        .send()
        .await;
    assert_eq!(
        (a.status.as_u16(), a.code().as_str()),
        (404, "NoSuchUpload")
    );
    assert_eq!(s.stats()["open_uploads"], 0);
}

#[tokio::test]
async fn multipart_memory_store() {
    let s = sim::start(config()).await.unwrap();
    multipart_flow(&s).await;
    s.shutdown().await;
}

#[tokio::test]
async fn multipart_dir_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim::start(SimConfig {
        store: StoreKind::Dir(dir.path().to_path_buf()),
        ..config()
    })
    .await
    .unwrap();
    multipart_flow(&s).await;
    // Replaced parts, unlisted parts, aborted uploads and the object overwritten by the second
    // Complete leave no files behind: only the live object's two part files remain.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn list_multipart_uploads_paging() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let mut ids = Vec::new();
    for key in ["a/1", "a/1", "a/2", "b/1", "c"] {
        ids.push((key, initiate(&ep, "bkt", key).await));
    }
    let list = |km: String, im: String, max: &'static str| {
        let ep = ep.clone();
        async move {
            let mut r = Req::new(&ep, Method::GET, "bkt", "")
                .q("uploads", "")
                .q("max-uploads", max);
            if !km.is_empty() {
                r = r.q("key-marker", Box::leak(km.into_boxed_str()));
            }
            if !im.is_empty() {
                r = r.q("upload-id-marker", Box::leak(im.into_boxed_str()));
            }
            r.send().await.text()
        }
    };
    let mut seen = Vec::new();
    let (mut km, mut im) = (String::new(), String::new());
    loop {
        let t = list(km.clone(), im.clone(), "2").await;
        seen.extend(xml_values(&t, "UploadId"));
        if xml_value(&t, "IsTruncated").as_deref() != Some("true") {
            break;
        }
        km = xml_value(&t, "NextKeyMarker").unwrap();
        im = xml_value(&t, "NextUploadIdMarker").unwrap();
    }
    let want: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(seen, want);
    let t = Req::new(&ep, Method::GET, "bkt", "")
        .q("uploads", "")
        .q("prefix", "a/")
        .send()
        .await
        .text();
    assert_eq!(xml_values(&t, "UploadId").len(), 3);
    let t = Req::new(&ep, Method::GET, "bkt", "")
        .q("uploads", "")
        .q("delimiter", "/")
        .send()
        .await
        .text();
    assert_eq!(xml_values(&t, "Prefix")[1..], ["a/", "b/"]);
    s.shutdown().await;
}

#[tokio::test]
async fn lifecycle_and_listing() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("lifecycle", "")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (404, "NoSuchLifecycle")
    );
    let rules = "<LifecycleConfiguration><Rule><ID>abort-mpu</ID><Prefix></Prefix><Status>Enabled</Status><AbortMultipartUpload><Days>3</Days></AbortMultipartUpload></Rule></LifecycleConfiguration>";
    let r = Req::new(&ep, Method::PUT, "bkt", "")
        .q("lifecycle", "")
        .body(rules)
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "MissingContentMd5")
    );
    let r = Req::new(&ep, Method::PUT, "bkt", "")
        .q("lifecycle", "")
        .h("content-md5", md5_b64(b"x"))
        .body(rules)
        .send()
        .await;
    assert_eq!(r.code(), "InvalidDigest");
    let r = Req::new(&ep, Method::PUT, "bkt", "")
        .q("lifecycle", "")
        .h("content-md5", md5_b64(rules.as_bytes()))
        .body(rules)
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("lifecycle", "")
        .send()
        .await;
    assert!(r
        .text()
        .contains("<AbortMultipartUpload><Days>3</Days></AbortMultipartUpload>"));
    assert!(r.text().starts_with("<?xml"));

    for k in ["a/1", "a/2", "a/b/3", "b", "c d+e"] {
        s.put_object_bytes("bkt", k, Bytes::from_static(b"x"));
    }
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("list-type", "2")
        .q("max-keys", "2")
        .send()
        .await;
    let t = r.text();
    assert_eq!(xml_values(&t, "Key"), ["a/1", "a/2"]);
    let token = xml_value(&t, "NextContinuationToken").unwrap();
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("list-type", "2")
        .q("continuation-token", &token)
        .q("encoding-type", "url")
        .send()
        .await;
    assert_eq!(
        xml_values(&r.text(), "Key"),
        ["a%2Fb%2F3", "b", "c%20d%2Be"]
    );
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .q("list-type", "2")
        .q("prefix", "a/")
        .q("delimiter", "/")
        .send()
        .await;
    let t = r.text();
    assert_eq!(xml_values(&t, "Key"), ["a/1", "a/2"]);
    assert_eq!(xml_value(&t, "KeyCount").as_deref(), Some("3"));
    assert!(t.contains("<CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes>"));
    s.shutdown().await;
}

#[tokio::test]
async fn synthetic_objects() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let t = Instant::now();
    let h = Req::new(&ep, Method::HEAD, "src", "disk.raw").send().await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(h.status, 200);
    assert_eq!(h.h("content-length"), Some("1099511627776"));
    assert_eq!(
        Some((1u64 << 40, h.crc())),
        s.object_crc64("src", "disk.raw")
    );

    let g = Req::new(&ep, Method::GET, "src", "small.raw").send().await;
    let body = g.body.unwrap();
    assert_eq!(body.len(), (3 << 20) + 4321);
    assert_eq!(
        crc64::checksum(&body),
        g.headers["x-oss-hash-crc64ecma"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
    assert_eq!(s.get_object_bytes("src", "small.raw").unwrap(), body);

    // A range deep inside the 1 TiB object is served and deterministic.
    let r1 = Req::new(&ep, Method::GET, "src", "disk.raw")
        .h("range", "bytes=999999999000-999999999999")
        .send()
        .await;
    assert_eq!(r1.status, 206);
    let r2 = Req::new(&ep, Method::GET, "src", "disk.raw")
        .h("range", "bytes=999999999000-999999999999")
        .send()
        .await;
    assert_eq!(r1.body.unwrap(), r2.body.unwrap());
    s.shutdown().await;
}

#[tokio::test]
async fn discard_bucket() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let data = pattern(200_000, 7);
    let r = Req::new(&ep, Method::PUT, "sink", "one")
        .body(data.clone())
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.crc(), crc64::checksum(&data));
    let h = Req::new(&ep, Method::HEAD, "sink", "one").send().await;
    assert_eq!(h.status, 200);
    assert_eq!(h.crc(), crc64::checksum(&data));
    let g = Req::new(&ep, Method::GET, "sink", "one").send().await;
    assert_eq!(g.status, 403);
    assert!(g.text().contains("discard bucket"));
    // With Content-MD5 the digest is still checked.
    let r = Req::new(&ep, Method::PUT, "sink", "two")
        .h("content-md5", md5_b64(b"zzz"))
        .body(data.clone())
        .send()
        .await;
    assert_eq!(r.code(), "InvalidDigest");

    let id = initiate(&ep, "sink", "big").await;
    let p2 = pattern(1000, 8);
    let r1 = upload_part(&ep, "sink", "big", &id, "1", &data).await;
    let r2 = upload_part(&ep, "sink", "big", &id, "2", &p2).await;
    let r = complete(
        &ep,
        "sink",
        "big",
        &id,
        &[(1, r1.h("etag").unwrap()), (2, r2.h("etag").unwrap())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut all = data.clone();
    all.extend_from_slice(&p2);
    assert_eq!(r.crc(), crc64::checksum(&all));
    assert_eq!(
        s.object_crc64("sink", "big"),
        Some((all.len() as u64, crc64::checksum(&all)))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn copy_object_and_upload_part_copy() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let src = pattern(300_000, 12);
    Req::new(&ep, Method::PUT, "bkt", "src obj")
        .h("x-oss-meta-k", "v")
        .h("content-type", "text/x-src")
        .body(src.clone())
        .send()
        .await;
    let r = Req::new(&ep, Method::PUT, "bkt", "copy")
        .h("x-oss-copy-source", "/bkt/src%20obj")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.crc(), crc64::checksum(&src));
    assert!(xml_value(&r.text(), "ETag").is_some());
    let g = Req::new(&ep, Method::GET, "bkt", "copy").send().await;
    assert_eq!(g.h("x-oss-meta-k"), Some("v"));
    assert_eq!(g.body.unwrap().as_ref(), &src[..]);

    // Multipart copy from a synthetic source (same region), two ranges.
    let id = initiate(&ep, "bkt", "from-synth").await;
    let p1 = Req::new(&ep, Method::PUT, "bkt", "from-synth")
        .q("partNumber", "1")
        .q("uploadId", &id)
        .h("x-oss-copy-source", "/src/small.raw")
        .h("x-oss-copy-source-range", "bytes=0-2097151")
        .send()
        .await;
    assert_eq!(p1.status, 200, "{}", p1.text());
    let p2 = Req::new(&ep, Method::PUT, "bkt", "from-synth")
        .q("partNumber", "2")
        .q("uploadId", &id)
        .h("x-oss-copy-source", "/src/small.raw")
        .h(
            "x-oss-copy-source-range",
            format!("bytes=2097152-{}", (3 << 20) + 4320),
        )
        .send()
        .await;
    assert_eq!(p2.status, 200, "{}", p2.text());
    let e1 = xml_value(&p1.text(), "ETag").unwrap();
    let e2 = xml_value(&p2.text(), "ETag").unwrap();
    let r = complete(&ep, "bkt", "from-synth", &id, &[(1, &e1), (2, &e2)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        Some((r.crc(), (3 << 20) + 4321)),
        s.object_crc64("src", "small.raw").map(|(sz, c)| (c, sz))
    );
    // Errors: missing source, bad range, cross-region and foreign-account sources.
    let bad = |src: &'static str, range: Option<&'static str>| {
        let mut r = Req::new(&ep, Method::PUT, "bkt", "x")
            .q("partNumber", "1")
            .q("uploadId", "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")
            .h("x-oss-copy-source", src);
        if let Some(rg) = range {
            r = r.h("x-oss-copy-source-range", rg);
        }
        r.send()
    };
    assert_eq!(bad("/bkt/src%20obj", None).await.code(), "NoSuchUpload");
    let id = initiate(&ep, "bkt", "x").await;
    let part = |src: &'static str, range: Option<&'static str>| {
        let mut r = Req::new(&ep, Method::PUT, "bkt", "x")
            .q("partNumber", "1")
            .q("uploadId", Box::leak(id.clone().into_boxed_str()))
            .h("x-oss-copy-source", src);
        if let Some(rg) = range {
            r = r.h("x-oss-copy-source-range", rg);
        }
        r.send()
    };
    assert_eq!(part("/bkt/none", None).await.code(), "NoSuchKey");
    assert_eq!(
        part("/bkt/src%20obj", Some("bytes=10-5000000"))
            .await
            .code(),
        "InvalidArgument"
    );
    assert_eq!(part("/far/k", None).await.code(), "AccessDenied");
    assert_eq!(part("/theirs/k", None).await.code(), "AccessDenied");
    assert_eq!(part("/sink/k", None).await.code(), "NoSuchKey");
    s.shutdown().await;
}

#[tokio::test]
async fn missing_content_length_is_411() {
    let s = sim::start(config()).await.unwrap();
    let addr = s.local_addr();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Signature does not matter: the length check needs no body; auth runs first, so sign.
    let date = httpdate::fmt_http_date(SystemTime::now());
    let sts = format!("PUT\n\n\n{date}\n/bkt/k");
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha1::Sha1> as Mac>::new_from_slice(SK.as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let req = format!(
        "PUT /bkt/k HTTP/1.1\r\nHost: {addr}\r\nDate: {date}\r\nAuthorization: OSS {AK}:{sig}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 411"), "{out}");
    assert!(out.contains("<Code>MissingContentLength</Code>"));
    s.shutdown().await;
}

#[tokio::test]
async fn v4_and_virtual_hosted_requests() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let key = "v4/目录/a b+c.txt";
    let r = Req::new(&ep, Method::PUT, "bkt", key)
        .v4("cn-hangzhou")
        .h("content-type", "text/plain")
        .h("x-oss-meta-x", "1")
        .body(Bytes::from_static(b"v4 body"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Virtual-hosted style: bucket from Host, key from the path.
    let r = Req::new(&ep, Method::GET, "bkt", key)
        .v4("cn-hangzhou")
        .virtual_host("oss-cn-hangzhou.aliyuncs.com")
        .q("response-content-type", "application/x-y")
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.as_ref().unwrap().as_ref(), b"v4 body");
    assert_eq!(r.h("content-type"), Some("application/x-y"));
    let r = Req::new(&ep, Method::GET, "bkt", "")
        .v4("cn-hangzhou")
        .virtual_host("localhost")
        .q("list-type", "2")
        .q("prefix", "v4/")
        .send()
        .await;
    assert_eq!(xml_values(&r.text(), "Key"), [key]);
    // Wrong secret and wrong scope region are refused.
    let r = Req::new(&ep, Method::GET, "bkt", key)
        .v4("cn-hangzhou")
        .creds(Some((AK, "bad")))
        .send()
        .await;
    assert_eq!(r.code(), "SignatureDoesNotMatch");
    assert!(xml_value(&r.text(), "CanonicalRequest").is_some());
    let r = Req::new(&ep, Method::GET, "bkt", key)
        .v4("cn-beijing")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidArgument")
    );
    s.shutdown().await;
}

#[tokio::test]
async fn dropping_the_server_stops_listening() {
    let s = sim::start(config()).await.unwrap();
    let addr = s.local_addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
