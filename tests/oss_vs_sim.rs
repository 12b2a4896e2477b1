//! The real OSS client against the real simulator, in-process: every bucket operation under V4
//! (and V1 where signing matters), every error code the client must understand, clock skew
//! recovery, and each injected fault kind as the client observes it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use ossrelay::crc64;
use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::oss::{
    EndpointSpec, LifecycleAction, LifecycleConfiguration, LifecycleRule, OssBucket, OssClient,
    OssConfig, OssError, SignVersion,
};
use ossrelay::store::{ByteStream, ErrorClass, ObjectStore, PartSpec, PutOptions};
use ossrelay_sim::synthetic::Synthetic;
use ossrelay_sim::{
    self as sim, FaultKind, SimAccount, SimBucket, SimConfig, SimServer, SyntheticObject,
};

const AK: &str = "LTAIsimAccessKey";
const SK: &str = "sim-SECRET-never-printed";
const OTHER_AK: &str = "LTAIotherAccessKey";
const OTHER_SK: &str = "other-SECRET-never-printed";
const BUCKET: &str = "home-bucket";
const OTHER_BUCKET: &str = "someone-elses";
const REMOTE_BUCKET: &str = "far-away";
const DISCARD: &str = "bench-discard";
const HUGE: &str = "images/huge.raw";
const TIB: u64 = 1 << 40;
const KIB100: usize = 100 * 1024;

fn sim_config() -> SimConfig {
    SimConfig {
        accounts: vec![
            SimAccount {
                name: "1000000000000001".into(),
                access_key_id: AK.into(),
                access_key_secret: SK.into(),
            },
            SimAccount {
                name: "2000000000000002".into(),
                access_key_id: OTHER_AK.into(),
                access_key_secret: OTHER_SK.into(),
            },
        ],
        buckets: vec![
            SimBucket {
                name: BUCKET.into(),
                account: "1000000000000001".into(),
            },
            SimBucket {
                name: DISCARD.into(),
                account: "1000000000000001".into(),
            },
            SimBucket {
                name: OTHER_BUCKET.into(),
                account: "2000000000000002".into(),
            },
        ],
        remote_buckets: vec![(REMOTE_BUCKET.into(), "cn-beijing".into())],
        synthetic: vec![SyntheticObject {
            bucket: BUCKET.into(),
            key: HUGE.into(),
            size: TIB,
        }],
        discard: vec![DISCARD.into()],
        ..SimConfig::default()
    }
}

async fn start(f: impl FnOnce(&mut SimConfig)) -> SimServer {
    let mut cfg = sim_config();
    f(&mut cfg);
    sim::start(cfg).await.expect("simulator starts")
}

fn config(s: &SimServer, ak: &str, sk: &str) -> OssConfig {
    let mut c = OssConfig::new(
        EndpointSpec::Url(s.endpoint()),
        s.region(),
        Arc::new(StaticProvider(Credentials::new(ak, sk))),
    );
    c.read_timeout = Duration::from_secs(10);
    c
}

fn client_with(s: &SimServer, f: impl FnOnce(&mut OssConfig)) -> OssClient {
    let mut c = config(s, AK, SK);
    f(&mut c);
    OssClient::new(c).expect("client")
}

fn client(s: &SimServer, version: SignVersion) -> OssClient {
    client_with(s, |c| c.sign_version = version)
}

fn stream_of(data: Bytes) -> ByteStream {
    // Several chunks, so the streaming request body path is exercised for real.
    let chunks: Vec<Result<Bytes, ossrelay::store::StoreError>> = (0..data.len())
        .step_by(7919)
        .map(|i| Ok(data.slice(i..(i + 7919).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn pattern(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8 ^ seed)
            .collect::<Vec<u8>>(),
    )
}

async fn collect(mut body: ByteStream) -> Result<Vec<u8>, ossrelay::store::StoreError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn put(b: &OssBucket, key: &str, data: &Bytes) {
    b.put_object(
        key,
        stream_of(data.clone()),
        data.len() as u64,
        &PutOptions::default(),
    )
    .await
    .expect("put");
}

/// The count of `op` requests the simulator answered with `status` (e.g. "200", "reset").
fn stat(s: &SimServer, op: &str, status: &str) -> u64 {
    s.stats()["requests"][op][status].as_u64().unwrap_or(0)
}

fn assert_err(e: &OssError, status: u16, code: &str, class: ErrorClass) {
    assert_eq!(e.status, Some(status), "{e:?}");
    assert_eq!(e.code.as_deref(), Some(code), "{e:?}");
    assert_eq!(e.class, class, "{e:?}");
    for secret in [SK, OTHER_SK] {
        assert!(!e.to_string().contains(secret), "secret leaked: {e}");
        assert!(!format!("{e:?}").contains(secret), "secret leaked: {e:?}");
    }
}

#[tokio::test]
async fn object_operations_under_v4_and_v1() {
    let s = start(|_| {}).await;
    for version in [SignVersion::V4, SignVersion::V1] {
        let b = client(&s, version).bucket(BUCKET);
        let key = format!("dir {version:?}/ob+ject 文件.bin");
        let data = pattern(300_001, 3);
        let opts = PutOptions {
            content_type: Some("application/x-raw-disk-image".into()),
            user_meta: vec![("Source".into(), "hz".into()), ("run".into(), "7".into())],
        };
        let up = b
            .put_object(&key, stream_of(data.clone()), data.len() as u64, &opts)
            .await
            .unwrap();
        assert_eq!(up.checksums.crc64_xz(), Some(crc64::checksum(&data)));
        assert_eq!(
            s.object_crc64(BUCKET, &key),
            Some((300_001, crc64::checksum(&data)))
        );

        let meta = b.head_object(&key).await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.etag, up.etag);
        assert_eq!(meta.checksums.crc64_xz(), Some(crc64::checksum(&data)));
        assert_eq!(
            meta.content_type.as_deref(),
            Some("application/x-raw-disk-image")
        );
        assert_eq!(
            meta.user_meta,
            vec![("run".into(), "7".into()), ("source".into(), "hz".into())]
        );
        assert!(meta.last_modified.is_some());

        let whole = b.get_object(&key, None, None).await.unwrap();
        assert_eq!(whole.object_size, data.len() as u64);
        assert_eq!(
            whole.object_checksums.crc64_xz(),
            Some(crc64::checksum(&data))
        );
        assert_eq!(collect(whole.body).await.unwrap(), &data[..]);

        for r in [0..1, 5..17, 299_000..300_001, 0..300_001] {
            let g = b
                .get_object(&key, Some(r.clone()), Some(&meta.etag))
                .await
                .unwrap();
            assert_eq!(g.content_length, r.end - r.start);
            assert_eq!(g.object_size, data.len() as u64);
            assert_eq!(g.etag, meta.etag);
            let got = collect(g.body).await.unwrap();
            assert_eq!(got, &data[r.start as usize..r.end as usize], "{r:?}");
        }

        // If-Match with another ETag: the object changed under us.
        let e = b
            .get_object(&key, Some(0..10), Some("0123456789ABCDEF0123456789ABCDEF"))
            .await
            .unwrap_err();
        assert_err(&e, 412, "PreconditionFailed", ErrorClass::Precondition);
        assert!(e.message.contains("changed"), "{e}");

        // A range past the end of the object.
        let e = b
            .get_object(&key, Some(300_001..300_010), None)
            .await
            .unwrap_err();
        assert_err(&e, 416, "InvalidRange", ErrorClass::Client);
        assert!(e.message.contains("outside the object"), "{e}");

        b.delete_object(&key).await.unwrap();
        b.delete_object(&key)
            .await
            .expect("deleting a missing key is fine");
        // HEAD errors arrive without a body: the code comes from x-oss-err.
        let e = b.head_object(&key).await.unwrap_err();
        assert_err(&e, 404, "NoSuchKey", ErrorClass::NotFound);
        assert!(e.message.contains("does not exist"), "{e}");
        assert!(e.request_id.is_some());
        let e = b.get_object(&key, None, None).await.unwrap_err();
        assert_err(&e, 404, "NoSuchKey", ErrorClass::NotFound);
        assert_eq!(e.attempts, 1, "404 is not retried");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn bucket_info_and_lifecycle() {
    let s = start(|_| {}).await;
    let b = client(&s, SignVersion::V4).bucket(BUCKET);
    let info = b.get_bucket_info().await.unwrap();
    assert_eq!(info.name, BUCKET);
    assert_eq!(info.region, "cn-hangzhou");
    let owner = info.owner_id.expect("owner id");
    assert!(
        owner.len() == 16 && owner.bytes().all(|b| b.is_ascii_digit()),
        "{owner}"
    );

    assert_eq!(b.get_bucket_lifecycle().await.unwrap(), None);
    let cfg = LifecycleConfiguration {
        rules: vec![LifecycleRule {
            id: Some("logs".into()),
            prefix: Some("logs/".into()),
            status: "Enabled".into(),
            expiration: Some(LifecycleAction::after_days(30)),
            ..Default::default()
        }],
    };
    b.put_bucket_lifecycle(&cfg).await.unwrap();
    assert_eq!(b.get_bucket_lifecycle().await.unwrap(), Some(cfg.clone()));
    assert!(b
        .protect_incomplete_uploads("exports/", 3, false)
        .await
        .unwrap());
    assert!(!b
        .protect_incomplete_uploads("exports/", 3, false)
        .await
        .unwrap());
    let now = b.get_bucket_lifecycle().await.unwrap().unwrap();
    assert_eq!(now.rules.len(), 2);
    assert_eq!(now.rules[0], cfg.rules[0]);
    s.shutdown().await;
}

#[tokio::test]
async fn multipart_under_v4_and_v1() {
    let s = start(|_| {}).await;
    for version in [SignVersion::V4, SignVersion::V1] {
        let b = client(&s, version).bucket(BUCKET);
        let key = format!("mp/{version:?}.raw");
        let opts = PutOptions {
            content_type: Some("application/octet-stream".into()),
            user_meta: vec![("origin".into(), "relay".into())],
        };
        let id = b.initiate_multipart_upload(&key, &opts).await.unwrap();
        let parts = [pattern(KIB100, 1), pattern(KIB100 + 3, 2), pattern(999, 3)];
        let mut etags = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let up = b
                .upload_part(
                    &key,
                    &id,
                    i as u32 + 1,
                    stream_of(p.clone()),
                    p.len() as u64,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(
                up.checksums.crc64_xz(),
                Some(crc64::checksum(p)),
                "part {}",
                i + 1
            );
            etags.push(up.etag);
        }
        // Re-uploading a part number replaces it.
        let replacement = pattern(KIB100 + 3, 9);
        let up = b
            .upload_part(
                &key,
                &id,
                2,
                stream_of(replacement.clone()),
                replacement.len() as u64,
                None,
            )
            .await
            .unwrap();
        assert_ne!(up.etag, etags[1]);
        etags[1] = up.etag;
        let listed = b.list_parts(&key, &id).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[1].number, 2);
        assert_eq!(listed[1].etag, etags[1]);
        assert_eq!(listed[1].size, replacement.len() as u64);
        assert_eq!(
            listed[1].checksums.crc64_xz(),
            Some(crc64::checksum(&replacement))
        );
        let uploads = b.list_multipart_uploads(Some("mp/")).await.unwrap();
        assert!(uploads.iter().any(|u| u.upload_id == id && u.key == key));

        let numbered: Vec<(u32, String)> = (1..=3).zip(etags.iter().cloned()).collect();
        let done = b
            .complete_multipart_upload(&key, &id, &numbered)
            .await
            .unwrap();
        let expected: Vec<u8> = [&parts[0][..], &replacement[..], &parts[2][..]].concat();
        let crc = crc64::combine_all(
            [&parts[0], &replacement, &parts[2]]
                .iter()
                .map(|p| (crc64::checksum(p), p.len() as u64)),
        );
        assert_eq!(crc, crc64::checksum(&expected));
        assert_eq!(done.checksums.crc64_xz(), Some(crc));
        assert!(done.etag.ends_with("-3"), "{}", done.etag);
        let meta = b.head_object(&key).await.unwrap();
        assert_eq!(meta.etag, done.etag);
        assert_eq!(meta.checksums.crc64_xz(), Some(crc));
        assert_eq!(meta.size, expected.len() as u64);
        assert_eq!(
            meta.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(meta.user_meta, vec![("origin".into(), "relay".into())]);
        let got = b
            .get_object(&key, Some(KIB100 as u64 - 5..KIB100 as u64 + 5), None)
            .await;
        assert_eq!(
            collect(got.unwrap().body).await.unwrap(),
            &expected[KIB100 - 5..KIB100 + 5]
        );
        // The upload is gone once completed.
        let e = b.list_parts(&key, &id).await.unwrap_err();
        assert_err(&e, 404, "NoSuchUpload", ErrorClass::NotFound);
    }
    assert_eq!(s.stats()["open_uploads"], 0);
    s.shutdown().await;
}

#[tokio::test]
async fn multipart_errors() {
    let s = start(|_| {}).await;
    let b = client(&s, SignVersion::V4).bucket(BUCKET);
    let key = "errs/obj";
    let id = b
        .initiate_multipart_upload(key, &PutOptions::default())
        .await
        .unwrap();
    let small = pattern(10, 1);
    let e1 = b
        .upload_part(key, &id, 1, stream_of(small.clone()), 10, None)
        .await
        .unwrap();
    let e2 = b
        .upload_part(key, &id, 2, stream_of(small.clone()), 10, None)
        .await
        .unwrap();

    // Every part but the last must be at least 100 KiB.
    let e = b
        .complete_multipart_upload(key, &id, &[(1, e1.etag.clone()), (2, e2.etag.clone())])
        .await
        .unwrap_err();
    assert_err(&e, 400, "EntityTooSmall", ErrorClass::Client);

    // A part that was never uploaded, and a wrong ETag.
    for parts in [
        vec![(1, e1.etag.clone()), (3, e2.etag.clone())],
        vec![(1, "00".repeat(16))],
    ] {
        let e = b
            .complete_multipart_upload(key, &id, &parts)
            .await
            .unwrap_err();
        assert_err(&e, 400, "InvalidPart", ErrorClass::Client);
        assert_eq!(e.attempts, 1, "client errors are not retried");
    }

    // Out-of-order parts never reach OSS (which would answer InvalidPartOrder): the client
    // refuses them itself.
    let before = stat(&s, "CompleteMultipartUpload", "400");
    let e = b
        .complete_multipart_upload(key, &id, &[(2, e2.etag.clone()), (1, e1.etag.clone())])
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Client);
    assert!(e.message.contains("ascending"), "{e}");
    assert_eq!(stat(&s, "CompleteMultipartUpload", "400"), before);

    // Unknown upload ids.
    let bogus = "0004B9894A22E5B1888A1E29F823XXXX";
    let e = b
        .upload_part(key, bogus, 1, stream_of(small.clone()), 10, None)
        .await
        .unwrap_err();
    assert_err(&e, 404, "NoSuchUpload", ErrorClass::NotFound);
    assert!(e.message.contains("aborted, completed or expired"), "{e}");
    let e = b.list_parts(key, bogus).await.unwrap_err();
    assert_err(&e, 404, "NoSuchUpload", ErrorClass::NotFound);

    // Abort, then everything about the upload is NoSuchUpload.
    assert_eq!(s.stats()["open_uploads"], 1);
    b.abort_multipart_upload(key, &id).await.unwrap();
    assert_eq!(s.stats()["open_uploads"], 0);
    let e = b.abort_multipart_upload(key, &id).await.unwrap_err();
    assert_err(&e, 404, "NoSuchUpload", ErrorClass::NotFound);
    let e = b
        .complete_multipart_upload(key, &id, &[(1, e1.etag.clone())])
        .await
        .unwrap_err();
    assert_err(&e, 404, "NoSuchUpload", ErrorClass::NotFound);
    assert!(b.head_object(key).await.unwrap_err().is_code("NoSuchKey"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_to_the_end() {
    let s = start(|_| {}).await;
    let b = client(&s, SignVersion::V4).bucket(BUCKET);
    // ListParts returns at most 1000 parts a page: 1001 one-byte parts need two pages.
    let id = b
        .initiate_multipart_upload("paged/parts", &PutOptions::default())
        .await
        .unwrap();
    let results: Vec<_> = futures::stream::iter(1..=1001u32)
        .map(|n| {
            let b = b.clone();
            let id = id.clone();
            async move {
                b.upload_part(
                    "paged/parts",
                    &id,
                    n,
                    stream_of(Bytes::from(vec![n as u8])),
                    1,
                    None,
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(|r| r.is_ok()));
    let parts = b.list_parts("paged/parts", &id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.number).collect::<Vec<_>>(),
        (1..=1001).collect::<Vec<_>>()
    );
    assert_eq!(stat(&s, "ListParts", "200"), 2);

    // ListMultipartUploads returns at most 1000 uploads a page.
    let ids: Vec<String> = futures::stream::iter(0..1001)
        .map(|i| {
            let b = b.clone();
            async move {
                b.initiate_multipart_upload(
                    &format!("paged/up/{:02}", i % 40),
                    &PutOptions::default(),
                )
                .await
                .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let listed = b.list_multipart_uploads(Some("paged/up/")).await.unwrap();
    assert_eq!(listed.len(), 1001);
    let mut got: Vec<&str> = listed.iter().map(|u| u.upload_id.as_str()).collect();
    got.sort();
    got.dedup();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want, "every upload exactly once");
    assert!(listed.iter().all(|u| u.key.starts_with("paged/up/")));
    assert_eq!(stat(&s, "ListMultipartUploads", "200"), 2);
    // The whole bucket has one more (the parts upload above).
    assert_eq!(b.list_multipart_uploads(None).await.unwrap().len(), 1002);
    s.shutdown().await;
}

/// Captures the client's tracing output (debug level) for one test.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

#[tokio::test]
async fn signature_and_key_errors() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // Current-thread runtime: the guard covers every poll of this test.
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = start(|_| {}).await;
    put(
        &client(&s, SignVersion::V4).bucket(BUCKET),
        "k",
        &pattern(100, 1),
    )
    .await;
    let wrong_secret = "WRONG-secret-value-xyz";
    for version in [SignVersion::V4, SignVersion::V1] {
        let c = OssClient::new(OssConfig {
            sign_version: version,
            ..config(&s, AK, wrong_secret)
        })
        .unwrap();
        let b = c.bucket(BUCKET);
        let e = b.get_object("k", None, None).await.unwrap_err();
        assert_err(&e, 403, "SignatureDoesNotMatch", ErrorClass::Auth);
        assert!(e.message.contains("check the AccessKey secret"), "{e}");
        assert!(!e.to_string().contains(wrong_secret));
        assert_eq!(e.attempts, 1, "auth errors are not retried");
        // HEAD: no body, the code comes from x-oss-err.
        let e = b.head_object("k").await.unwrap_err();
        assert_err(&e, 403, "SignatureDoesNotMatch", ErrorClass::Auth);
        assert!(e.message.contains("check the AccessKey secret"), "{e}");
    }
    // The server's StringToSign (from the error XML) is in the debug log for diagnosis, the
    // secret is not.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("server_string_to_sign=\"OSS4-HMAC-SHA256"),
        "{text}"
    );
    assert!(
        text.contains("server_string_to_sign=\"GET"),
        "V1 StringToSign: {text}"
    );
    for secret in [wrong_secret, SK] {
        assert!(!text.contains(secret), "secret in logs");
    }

    let c = OssClient::new(config(&s, "LTAInobodyHasThisKey", SK)).unwrap();
    let e = c
        .bucket(BUCKET)
        .get_object("k", None, None)
        .await
        .unwrap_err();
    assert_err(&e, 403, "InvalidAccessKeyId", ErrorClass::Auth);
    assert!(e.message.contains("check the AccessKey ID"), "{e}");
    let e = c.bucket(BUCKET).head_object("k").await.unwrap_err();
    assert_err(&e, 403, "InvalidAccessKeyId", ErrorClass::Auth);
    s.shutdown().await;
}

#[tokio::test]
async fn bucket_access_errors() {
    let s = start(|_| {}).await;
    let c = client_with(&s, |c| c.region_flag = "--dst-region".into());

    // Another account's bucket: the signature is fine, the bucket is not ours.
    for e in [
        c.bucket(OTHER_BUCKET).head_object("k").await.unwrap_err(),
        c.bucket(OTHER_BUCKET)
            .put_object("k", stream_of(pattern(5, 1)), 5, &PutOptions::default())
            .await
            .unwrap_err(),
        c.bucket(OTHER_BUCKET)
            .list_multipart_uploads(None)
            .await
            .unwrap_err(),
    ] {
        assert_err(&e, 403, "AccessDenied", ErrorClass::Auth);
        assert!(e.message.contains("access denied"), "{e}");
        assert!(e.message.contains(OTHER_BUCKET), "{e}");
    }
    // ... while its owner is served.
    let owner = OssClient::new(config(&s, OTHER_AK, OTHER_SK)).unwrap();
    put(&owner.bucket(OTHER_BUCKET), "k", &pattern(5, 1)).await;
    owner.bucket(OTHER_BUCKET).head_object("k").await.unwrap();

    // A bucket in another region: the error names the region and the flag to set.
    for e in [
        c.bucket(REMOTE_BUCKET).head_object("k").await.unwrap_err(),
        c.bucket(REMOTE_BUCKET)
            .get_object("k", Some(0..1), None)
            .await
            .unwrap_err(),
        c.bucket(REMOTE_BUCKET)
            .initiate_multipart_upload("k", &PutOptions::default())
            .await
            .unwrap_err(),
    ] {
        assert_err(&e, 403, "AccessDenied", ErrorClass::Auth);
        assert_eq!(e.endpoint.as_deref(), Some("oss-cn-beijing.aliyuncs.com"));
        assert!(
            e.message
                .contains("is in region cn-beijing; use --dst-region cn-beijing"),
            "{e}"
        );
    }

    // No such bucket.
    let e = c
        .bucket("no-such-bucket")
        .head_object("k")
        .await
        .unwrap_err();
    assert_err(&e, 404, "NoSuchBucket", ErrorClass::NotFound);
    assert!(e.message.contains("no-such-bucket does not exist"), "{e}");
    let e = c
        .bucket("no-such-bucket")
        .get_bucket_info()
        .await
        .unwrap_err();
    assert_err(&e, 404, "NoSuchBucket", ErrorClass::NotFound);
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_signing_region_names_the_right_one() {
    let s = start(|_| {}).await;
    put(
        &client(&s, SignVersion::V4).bucket(BUCKET),
        "k",
        &pattern(10, 1),
    )
    .await;
    let c = client_with(&s, |c| {
        c.region = "cn-beijing".into();
        c.region_flag = "--src-region".into();
    });
    for e in [
        c.bucket(BUCKET)
            .get_object("k", None, None)
            .await
            .unwrap_err(),
        c.bucket(BUCKET).head_object("k").await.unwrap_err(),
    ] {
        assert_eq!(e.status, Some(400), "{e:?}");
        assert_eq!(e.class, ErrorClass::Client, "{e:?}");
        assert_eq!(e.attempts, 1);
        assert!(e.message.contains("cn-beijing"), "{e}");
        assert!(
            e.message.contains("signed for region cn-beijing but the endpoint serves cn-hangzhou; use --src-region cn-hangzhou"),
            "{e}"
        );
    }
    // V1 has no region in its signature: the same client settings work.
    let v1 = client_with(&s, |c| {
        c.region = "cn-beijing".into();
        c.sign_version = SignVersion::V1;
    });
    v1.bucket(BUCKET).head_object("k").await.unwrap();
    s.shutdown().await;
}

#[tokio::test]
async fn skewed_clock_is_learned_and_requests_succeed() {
    for skew in [20 * 60i64, -20 * 60] {
        let s = start(|c| c.clock_skew = skew).await;
        let b = client(&s, SignVersion::V4).bucket(BUCKET);
        // A replayable request: the first attempt gets RequestTimeTooSkewed, the client learns
        // the offset from ServerTime and the retry succeeds.
        b.initiate_multipart_upload("skew/a", &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(stat(&s, "InitiateMultipartUpload", "403"), 1);
        let off = b.client().clock_offset().num_seconds();
        assert!((off - skew).abs() <= 5, "offset {off} for skew {skew}");

        // HEAD learns it from x-oss-err too, on a fresh client.
        put(&b, "skew/obj", &pattern(10, 1)).await;
        for version in [SignVersion::V1, SignVersion::V4] {
            let fresh = client(&s, version).bucket(BUCKET);
            assert_eq!(fresh.head_object("skew/obj").await.unwrap().size, 10);
            assert!((fresh.client().clock_offset().num_seconds() - skew).abs() <= 5);
        }
        assert_eq!(stat(&s, "HeadObject", "403"), 2);

        // A streaming upload gets one attempt: it fails as ClockSkew and a retry by the caller
        // (the engine) succeeds because the offset is now known.
        let c = client(&s, SignVersion::V4).bucket(BUCKET);
        let id = b
            .initiate_multipart_upload("skew/b", &PutOptions::default())
            .await
            .unwrap();
        let data = pattern(1000, 2);
        let e = c
            .upload_part("skew/b", &id, 1, stream_of(data.clone()), 1000, None)
            .await
            .unwrap_err();
        assert_err(&e, 403, "RequestTimeTooSkewed", ErrorClass::ClockSkew);
        assert!(e.message.contains("NTP"), "{e}");
        assert!(e.class.is_retryable());
        let up = c
            .upload_part("skew/b", &id, 1, stream_of(data.clone()), 1000, None)
            .await
            .unwrap();
        assert_eq!(up.checksums.crc64_xz(), Some(crc64::checksum(&data)));
        s.shutdown().await;
    }
}

/// Reads a GET body to the end; the error class if it broke.
async fn read_body(
    b: &OssBucket,
    key: &str,
    range: std::ops::Range<u64>,
) -> Result<Vec<u8>, ErrorClass> {
    let g = b
        .get_object(key, Some(range), None)
        .await
        .map_err(|e| e.class)?;
    collect(g.body).await.map_err(|e| e.class)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_kind_is_observable() {
    let s = start(|c| c.fault_seed = 7).await;
    let len = 256 * 1024;
    let data = pattern(len, 5);
    let b = client_with(&s, |c| {
        c.max_attempts = 2;
    })
    .bucket(BUCKET);
    put(&b, "f/obj", &data).await;
    let all = 0..len as u64;

    // error500: retried, then given up as Transient.
    s.set_fault_ops(Some(vec!["HeadObject".into(), "UploadPart".into()]));
    s.set_faults(vec![(FaultKind::Error500, 1.0)]);
    let e = b.head_object("f/obj").await.unwrap_err();
    assert_eq!(
        (e.status, e.class, e.attempts),
        (Some(500), ErrorClass::Transient, 2),
        "{e:?}"
    );
    let e = b
        .upload_part("f/x", "nope", 1, stream_of(pattern(10, 1)), 10, None)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_deref()),
        (Some(500), Some("InternalError"))
    );
    assert_eq!(
        (e.class, e.attempts),
        (ErrorClass::Transient, 1),
        "streams are single-shot"
    );

    // slowdown: 503 SlowDown is throttling.
    s.set_faults(vec![(FaultKind::Slowdown, 1.0)]);
    let e = b.head_object("f/obj").await.unwrap_err();
    assert_err(&e, 503, "SlowDown", ErrorClass::Throttled);
    assert_eq!(e.attempts, 2);

    // reset: a dropped connection is a Transient network error, on every kind of request.
    s.set_fault_ops(Some(vec![
        "HeadObject".into(),
        "GetObject".into(),
        "UploadPart".into(),
    ]));
    s.set_faults(vec![(FaultKind::Reset, 1.0)]);
    let e = b.head_object("f/obj").await.unwrap_err();
    assert_eq!((e.status, e.class), (None, ErrorClass::Transient), "{e:?}");
    let id = b
        .initiate_multipart_upload("f/up", &PutOptions::default())
        .await
        .unwrap();
    let e = b
        .upload_part("f/up", &id, 1, stream_of(data.clone()), len as u64, None)
        .await
        .unwrap_err();
    assert_eq!((e.status, e.class), (None, ErrorClass::Transient), "{e:?}");
    assert_eq!(
        read_body(&b, "f/obj", all.clone()).await,
        Err(ErrorClass::Transient)
    );
    // GetObject's reset comes mid-body, after the 206 was counted.
    assert_eq!(stat(&s, "HeadObject", "reset"), 2, "{}", s.stats());
    assert_eq!(stat(&s, "UploadPart", "reset"), 1, "{}", s.stats());

    // truncate: the body ends short of Content-Length.
    s.set_fault_ops(Some(vec!["GetObject".into()]));
    s.set_faults(vec![(FaultKind::Truncate, 1.0)]);
    assert_eq!(
        read_body(&b, "f/obj", all.clone()).await,
        Err(ErrorClass::Transient)
    );
    assert_eq!(
        read_body(&b, "f/obj", 1000..200_000).await,
        Err(ErrorClass::Transient)
    );

    // corrupt: the client gets every byte and no error; only the CRC-64 shows the damage.
    s.set_faults(vec![(FaultKind::Corrupt, 1.0)]);
    let head_crc = {
        s.set_faults(vec![]);
        let m = b.head_object("f/obj").await.unwrap();
        s.set_faults(vec![(FaultKind::Corrupt, 1.0)]);
        m.checksums.crc64_xz().unwrap()
    };
    let half = len as u64 / 2;
    let first = read_body(&b, "f/obj", 0..half).await.unwrap();
    let second = read_body(&b, "f/obj", half..len as u64).await.unwrap();
    assert_eq!(first.len() + second.len(), len);
    assert_ne!(
        crc64::checksum(&first),
        crc64::checksum(&data[..half as usize])
    );
    // The engine's end-to-end check: part CRCs folded in order must equal the source's.
    let folded = crc64::combine(
        crc64::checksum(&first),
        crc64::checksum(&second),
        len as u64 - half,
    );
    assert_ne!(folded, head_crc, "corruption is caught by the CRC-64 fold");
    // ... and the per-part check: OSS acknowledges the CRC of what it received.
    s.set_faults(vec![]);
    let up = b
        .upload_part(
            "f/up",
            &id,
            1,
            stream_of(Bytes::from(first.clone())),
            half,
            None,
        )
        .await
        .unwrap();
    assert_eq!(up.checksums.crc64_xz(), Some(crc64::checksum(&first)));
    s.set_faults(vec![(FaultKind::Corrupt, 1.0)]);

    // stall: the body goes silent for 30 s; the client gives up after its read timeout.
    let quick = client_with(&s, |c| c.read_timeout = Duration::from_secs(1)).bucket(BUCKET);
    s.set_faults(vec![(FaultKind::Stall, 1.0)]);
    let started = Instant::now();
    let g = quick
        .get_object("f/obj", Some(all.clone()), None)
        .await
        .unwrap();
    let e = collect(g.body).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient, "{e}");
    assert!(e.message.contains("stalled"), "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(8),
        "{waited:?}"
    );

    // Faults off: everything is fine again.
    s.set_faults(vec![]);
    assert_eq!(read_body(&b, "f/obj", all).await.unwrap(), &data[..]);
    drop(s);
}

/// The simulator applies the Complete, then drops the connection: the client's transport
/// retries it (after a backoff of at least 200 ms) and gets NoSuchUpload; the relay's upload
/// session finds the object by HEAD with the expected size and CRC-64 and accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_complete_response_is_recovered() {
    use ossrelay::transfer::{self, CopyOptions, Location, Progress};
    let s = start(|_| {}).await;
    let b = client(&s, SignVersion::V4).bucket(BUCKET);
    let key = "lost/complete.raw";
    let all: Vec<u8> = [pattern(KIB100, 1), pattern(77, 2)].concat();
    let src = ossrelay::store::memory::MemoryStore::new("src");
    src.insert("disk.raw", Bytes::from(all.clone()));
    s.set_fault_ops(Some(vec!["CompleteMultipartUpload".into()]));
    s.set_faults(vec![(FaultKind::Reset, 1.0)]);
    let task = {
        let b = b.clone();
        tokio::spawn(async move {
            transfer::copy(
                Location::new(src, "disk.raw"),
                Location::new(Arc::new(b), key),
                CopyOptions {
                    part_size: Some(KIB100 as u64),
                    ..CopyOptions::default()
                },
                Progress::new(),
                tokio_util::sync::CancellationToken::new(),
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&s, "CompleteMultipartUpload", "reset") == 0 {
        assert!(Instant::now() < deadline, "no reset fault: {}", s.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.set_faults(vec![]);
    let done = task
        .await
        .unwrap()
        .expect("recovered after the lost response");
    assert_eq!(
        stat(&s, "CompleteMultipartUpload", "404"),
        1,
        "{}",
        s.stats()
    );
    assert_eq!(done.crc64, crc64::checksum(&all));
    assert_eq!(done.parts, 2);
    assert_eq!(
        s.object_crc64(BUCKET, key),
        Some((all.len() as u64, crc64::checksum(&all)))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn synthetic_terabyte_head_and_discard_bucket() {
    let s = start(|_| {}).await;
    let b = client(&s, SignVersion::V4).bucket(BUCKET);
    let started = Instant::now();
    let meta = b.head_object(HUGE).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(meta.size, TIB);
    let synth = Synthetic::new(HUGE, TIB);
    assert_eq!(meta.checksums.crc64_xz(), Some(synth.crc()));
    // A range at the far end is served and matches the generator.
    let r = TIB - 4096..TIB;
    let got = read_body(&b, HUGE, r.clone()).await.unwrap();
    let want: Vec<u8> = synth
        .chunks(r.start, r.end)
        .flat_map(|c| c.to_vec())
        .collect();
    assert_eq!(got, want);

    // A discard bucket checks and counts uploads but keeps no bytes; HEAD still answers.
    let d = client(&s, SignVersion::V4).bucket(DISCARD);
    let id = d
        .initiate_multipart_upload("sink.raw", &PutOptions::default())
        .await
        .unwrap();
    let parts = [pattern(KIB100, 4), pattern(5000, 6)];
    let mut numbered = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let up = d
            .upload_part(
                "sink.raw",
                &id,
                i as u32 + 1,
                stream_of(p.clone()),
                p.len() as u64,
                None,
            )
            .await
            .unwrap();
        assert_eq!(up.checksums.crc64_xz(), Some(crc64::checksum(p)));
        numbered.push((i as u32 + 1, up.etag));
    }
    let done = d
        .complete_multipart_upload("sink.raw", &id, &numbered)
        .await
        .unwrap();
    let all = parts.concat();
    let meta = d.head_object("sink.raw").await.unwrap();
    assert_eq!(meta.size, all.len() as u64);
    assert_eq!(meta.checksums.crc64_xz(), Some(crc64::checksum(&all)));
    assert_eq!(meta.etag, done.etag);
    let e = d.get_object("sink.raw", None, None).await.unwrap_err();
    assert_err(&e, 403, "AccessDenied", ErrorClass::Auth);
    s.shutdown().await;
}

/// The engine sees OSS only through `ObjectStore`; the same calls work against the simulator.
#[tokio::test]
async fn object_store_trait_against_the_simulator() {
    let s = start(|_| {}).await;
    let store: Arc<dyn ObjectStore> = Arc::new(client(&s, SignVersion::V4).bucket(BUCKET));
    assert_eq!(store.describe("a/b"), format!("oss://{BUCKET}/a/b"));
    let data = pattern(KIB100 + 10, 8);
    let up = store
        .put(
            "t/whole",
            stream_of(data.clone()),
            data.len() as u64,
            &PutOptions::default(),
        )
        .await
        .unwrap();
    let meta = store.head("t/whole").await.unwrap();
    assert_eq!(
        (meta.size, meta.checksums.crc64_xz()),
        (data.len() as u64, up.checksums.crc64_xz())
    );
    let r = collect(
        store
            .get_range("t/whole", 10, 5000, Some(&meta.etag))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.unwrap(), &data[10..5000]);
    assert!(
        collect(store.get_range("t/whole", 7, 7, None).await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let e = store
        .get_range("t/whole", 0, 10, Some("FFFF"))
        .await
        .err()
        .unwrap();
    assert_eq!((e.class, e.status), (ErrorClass::Precondition, Some(412)));

    let id = store
        .create_multipart("t/mp", data.len() as u64, &PutOptions::default())
        .await
        .unwrap();
    let cut = KIB100 as u64;
    let p1 = store
        .upload_part(
            "t/mp",
            &id,
            PartSpec {
                number: 1,
                offset: 0,
                len: cut,
            },
            stream_of(data.slice(..KIB100)),
            &ossrelay::checksum::Checksums::new(),
        )
        .await
        .unwrap();
    let p2 = store
        .upload_part(
            "t/mp",
            &id,
            PartSpec {
                number: 2,
                offset: cut,
                len: 10,
            },
            stream_of(data.slice(KIB100..)),
            &ossrelay::checksum::Checksums::new(),
        )
        .await
        .unwrap();
    let listed = store.list_parts("t/mp", &id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.number, p.size))
            .collect::<Vec<_>>(),
        [(1, cut), (2, 10)]
    );
    let done = store
        .complete(
            "t/mp",
            &id,
            &[(1, p1.etag), (2, p2.etag)],
            cut + 10,
            &ossrelay::checksum::Checksums::new(),
        )
        .await
        .unwrap();
    assert_eq!(done.checksums.crc64_xz(), Some(crc64::checksum(&data)));

    let id = store
        .create_multipart("t/aborted", 1, &PutOptions::default())
        .await
        .unwrap();
    store.abort("t/aborted", &id).await.unwrap();
    let e = store.list_parts("t/aborted", &id).await.unwrap_err();
    assert_eq!(
        (e.class, e.code.as_deref()),
        (ErrorClass::NotFound, Some("NoSuchUpload"))
    );
    store.delete("t/mp").await.unwrap();
    let e = store.head("t/mp").await.unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::NotFound, Some(404)));
    s.shutdown().await;
}

/// Temporary (STS) credentials: the token is sent and checked; an expired or wrong token is an
/// Auth error telling the user to refresh.
#[tokio::test]
async fn sts_credentials() {
    let s = start(|_| {}).await;
    let in_an_hour = std::time::SystemTime::now() + Duration::from_secs(3600);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    s.add_temporary_credentials(
        "STS.good",
        "sts-SECRET-x",
        "token-good",
        "1000000000000001",
        in_an_hour,
    );
    s.add_temporary_credentials(
        "STS.old",
        "sts-SECRET-y",
        "token-old",
        "1000000000000001",
        an_hour_ago,
    );
    let sts = |ak: &str, sk: &str, token: &str| {
        let mut creds = Credentials::new(ak, sk);
        creds.security_token = Some(token.to_string());
        let mut c = config(&s, ak, sk);
        c.credentials = Arc::new(StaticProvider(creds));
        OssClient::new(c).unwrap().bucket(BUCKET)
    };
    for version in [SignVersion::V4, SignVersion::V1] {
        let mut creds = Credentials::new("STS.good", "sts-SECRET-x");
        creds.security_token = Some("token-good".into());
        let mut c = config(&s, "STS.good", "sts-SECRET-x");
        c.credentials = Arc::new(StaticProvider(creds));
        c.sign_version = version;
        let b = OssClient::new(c).unwrap().bucket(BUCKET);
        put(&b, "sts/obj", &pattern(10, 1)).await;
        assert_eq!(b.head_object("sts/obj").await.unwrap().size, 10);
    }
    let e = sts("STS.old", "sts-SECRET-y", "token-old")
        .get_object("sts/obj", None, None)
        .await
        .unwrap_err();
    assert_err(&e, 403, "SecurityTokenExpired", ErrorClass::Auth);
    assert!(e.message.contains("refresh"), "{e}");
    assert!(!e.to_string().contains("token-old") && !e.to_string().contains("sts-SECRET"));
    let e = sts("STS.good", "sts-SECRET-x", "token-forged")
        .get_object("sts/obj", None, None)
        .await
        .unwrap_err();
    assert_err(&e, 403, "InvalidSecurityToken", ErrorClass::Auth);
    assert!(!e.to_string().contains("token-forged"));
    s.shutdown().await;
}

/// Keys that need encoding survive ListMultipartUploads (encoding-type=url) and ListParts.
#[tokio::test]
async fn odd_keys_in_listings() {
    let s = start(|_| {}).await;
    let b = client(&s, SignVersion::V4).bucket(BUCKET);
    let keys = ["odd/a b+c.raw", "odd/目录/文件%20.vhd", "odd/q?x#y&z=1"];
    let mut ids = Vec::new();
    for k in keys {
        let id = b
            .initiate_multipart_upload(k, &PutOptions::default())
            .await
            .unwrap();
        b.upload_part(k, &id, 1, stream_of(pattern(3, 1)), 3, None)
            .await
            .unwrap();
        assert_eq!(b.list_parts(k, &id).await.unwrap().len(), 1, "{k}");
        ids.push(id);
    }
    let listed = b.list_multipart_uploads(Some("odd/")).await.unwrap();
    let mut got: Vec<(&str, &str)> = listed
        .iter()
        .map(|u| (u.key.as_str(), u.upload_id.as_str()))
        .collect();
    got.sort();
    let mut want: Vec<(&str, &str)> = keys
        .iter()
        .copied()
        .zip(ids.iter().map(String::as_str))
        .collect();
    want.sort();
    assert_eq!(got, want);
    for (k, id) in want {
        b.abort_multipart_upload(k, id).await.unwrap();
    }
    assert_eq!(s.stats()["open_uploads"], 0);
    s.shutdown().await;
}
