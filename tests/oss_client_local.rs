//! The OSS client against a tiny in-process HTTP double that returns canned responses and
//! records what it received. (The real simulator lives in `src/sim/`; this double only
//! checks what the client puts on the wire.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::oss::sign::{v4_authorization, SignParams};
use ossrelay::oss::{EndpointSpec, OssClient, OssConfig};
use ossrelay::store::{ByteStream, ErrorClass, ObjectStore, PartSpec, PutOptions};

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Handler = Arc<dyn Fn(usize, &Recorded) -> Response<Full<Bytes>> + Send + Sync>;

struct Double {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Double {
    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

/// Header a handler sets to make the double wait before answering.
const DELAY: &str = "x-test-delay-ms";

async fn double(handler: Handler) -> Double {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        let rec = Recorded {
                            method: parts.method.to_string(),
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        };
                        let n = {
                            let mut l = log.lock().unwrap();
                            l.push(rec.clone());
                            l.len() - 1
                        };
                        let mut resp = handler(n, &rec);
                        if let Some(d) = resp.headers_mut().remove(DELAY) {
                            let ms: u64 = d.to_str().unwrap().parse().unwrap();
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Double { addr, log }
}

fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap());
    b = b.header("x-oss-request-id", "5C3D8D2A0ACA54D87B430000");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

fn config(url: &str, connect_to: Option<SocketAddr>) -> OssConfig {
    let mut cfg = OssConfig::new(
        EndpointSpec::Url(url.into()),
        "cn-hangzhou",
        Arc::new(StaticProvider(Credentials::new("ak", "sk"))),
    );
    cfg.connect_to = connect_to;
    cfg.read_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg
}

fn client(url: &str, connect_to: Option<SocketAddr>) -> OssClient {
    OssClient::new(config(url, connect_to)).unwrap()
}

fn head_ok() -> Response<Full<Bytes>> {
    let mut r = reply(
        200,
        &[
            ("etag", "\"D80CF0E5BE2436514894D64B2BCFB2AE\""),
            ("x-oss-hash-crc64ecma", "11051210869376104954"),
            ("x-oss-meta-origin", "test"),
        ],
        Bytes::new(),
    );
    r.headers_mut()
        .insert("content-length", "9".parse().unwrap());
    r
}

fn stream_of(chunks: Vec<&'static [u8]>) -> ByteStream {
    Box::pin(futures::stream::iter(
        chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
    ))
}

/// The Authorization a request carries must be the V4 signature of what was actually sent.
fn assert_signed(rec: &Recorded, bucket: &str, key: Option<&str>) {
    let (_, q) = rec
        .path_and_query
        .split_once('?')
        .unwrap_or((&rec.path_and_query, ""));
    let query: Vec<(String, String)> = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let d = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            (d(k), d(v))
        })
        .collect();
    let dt = rec.header("x-oss-date").expect("x-oss-date sent");
    let p = SignParams {
        method: &rec.method,
        bucket: Some(bucket),
        key,
        query: &query,
        headers: &rec.headers,
    };
    let want = v4_authorization(&p, dt, "cn-hangzhou", &Credentials::new("ak", "sk"), &[]);
    assert_eq!(rec.header("authorization"), Some(want.as_str()));
}

#[tokio::test]
async fn path_style_for_ip_endpoints() {
    let d = double(Arc::new(|_, _| head_ok())).await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let meta = c.bucket("bkt").head_object("dir/a b+c.txt").await.unwrap();
    assert_eq!(meta.size, 9);
    assert_eq!(meta.etag, "D80CF0E5BE2436514894D64B2BCFB2AE");
    assert_eq!(meta.checksums.crc64_xz(), Some(11051210869376104954));
    assert_eq!(
        meta.user_meta,
        vec![("origin".to_string(), "test".to_string())]
    );
    let reqs = d.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "HEAD");
    assert_eq!(r.path_and_query, "/bkt/dir/a%20b%2Bc.txt");
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{}", d.addr.port()).as_str())
    );
    assert_eq!(r.header("x-oss-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    let auth = r.header("authorization").unwrap();
    assert!(
        auth.starts_with("OSS4-HMAC-SHA256 Credential=ak/")
            && auth.contains("/cn-hangzhou/oss/aliyun_v4_request,Signature="),
        "{auth}"
    );
    assert!(!auth.contains("AdditionalHeaders"));
    assert!(r.header("date").is_some());
    assert_signed(r, "bkt", Some("dir/a b+c.txt"));
}

#[tokio::test]
async fn virtual_hosted_for_named_endpoints() {
    let d = double(Arc::new(|_, _| head_ok())).await;
    let c = client("https://oss-cn-hangzhou.aliyuncs.com", Some(d.addr));
    // connect_to with https would need the real certificate; use http for the double.
    let c2 = client("http://oss-cn-hangzhou.aliyuncs.com", Some(d.addr));
    assert!(!c.endpoint().path_style);
    c2.bucket("examplebucket")
        .head_object("a/b.txt")
        .await
        .unwrap();
    let r = &d.requests()[0];
    assert_eq!(
        r.header("host"),
        Some("examplebucket.oss-cn-hangzhou.aliyuncs.com")
    );
    assert_eq!(r.path_and_query, "/a/b.txt");
    assert_signed(r, "examplebucket", Some("a/b.txt"));

    // Bucket-level call: path "/" plus the sub-resource.
    let d = double(Arc::new(|_, _| {
        reply(200, &[("content-type", "application/xml")], "<BucketInfo><Bucket><Name>examplebucket</Name><Location>oss-cn-hangzhou</Location><Owner><ID>1</ID></Owner></Bucket></BucketInfo>")
    }))
    .await;
    let c = client("http://oss-cn-hangzhou.aliyuncs.com", Some(d.addr));
    let info = c.bucket("examplebucket").get_bucket_info().await.unwrap();
    assert_eq!(info.region, "cn-hangzhou");
    let r = &d.requests()[0];
    assert_eq!(r.path_and_query, "/?bucketInfo");
    assert_signed(r, "examplebucket", None);
}

#[tokio::test]
async fn ranged_get_sends_standard_behavior_and_if_match() {
    let d = double(Arc::new(|_, _| {
        reply(
            206,
            &[
                ("content-range", "bytes 10-19/100"),
                ("etag", "\"ABC\""),
                ("x-oss-hash-crc64ecma", "7"),
            ],
            &b"0123456789"[..],
        )
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let b = c.bucket("bkt");
    let out = b.get_object("k", Some(10..20), Some("ABC")).await.unwrap();
    assert_eq!(out.object_size, 100);
    assert_eq!(out.content_length, 10);
    assert_eq!(out.etag, "ABC");
    let data: Vec<Bytes> = out.body.map(|r| r.unwrap()).collect().await;
    assert_eq!(data.concat(), b"0123456789");
    let r = &d.requests()[0];
    assert_eq!(r.header("range"), Some("bytes=10-19"));
    assert_eq!(r.header("x-oss-range-behavior"), Some("standard"));
    assert_eq!(r.header("if-match"), Some("\"ABC\""));
    assert_signed(r, "bkt", Some("k"));

    // Through the ObjectStore trait as well.
    let s = b.get_range("k", 10, 20, None).await.unwrap();
    let data: Vec<Bytes> = s.map(|r| r.unwrap()).collect().await;
    assert_eq!(data.concat().len(), 10);
    assert_eq!(b.describe("k"), "oss://bkt/k");
}

#[tokio::test]
async fn ranged_get_rejects_200_and_wrong_content_range() {
    let d = double(Arc::new(|n, _| {
        if n == 0 {
            reply(200, &[("etag", "\"ABC\"")], vec![b'x'; 100])
        } else {
            reply(
                206,
                &[("etag", "\"ABC\""), ("content-range", "bytes 10-14/15")],
                vec![b'x'; 5],
            )
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let err = c
        .bucket("bkt")
        .get_object("k", Some(10..20), None)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Client);
    assert!(err.message.contains("ignored the Range"), "{err}");
    let err = c
        .bucket("bkt")
        .get_object("k", Some(10..20), None)
        .await
        .unwrap_err();
    assert!(!err.class.is_retryable());
    assert!(err.message.contains("10-14/15"), "{err}");
}

#[tokio::test]
async fn precondition_failed_is_classified() {
    let d = double(Arc::new(|_, _| {
        reply(412, &[("content-type", "application/xml")], "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><EC>0017-00001001</EC></Error>")
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let Err(err) = c.bucket("bkt").get_range("k", 0, 10, Some("OLD")).await else {
        panic!("412 must fail");
    };
    assert_eq!(err.class, ErrorClass::Precondition);
    assert_eq!(d.requests().len(), 1, "412 must not be retried");
}

/// A raw server that promises 100 bytes and sends 50, then closes.
#[tokio::test]
async fn short_body_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let head = "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nContent-Range: bytes 0-99/1000\r\nETag: \"X\"\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[7u8; 50]).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
    });
    let c = client(&format!("http://127.0.0.1:{}", addr.port()), None);
    let out = c
        .bucket("bkt")
        .get_object("k", Some(0..100), None)
        .await
        .unwrap();
    let items: Vec<_> = out.body.collect().await;
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("short body must error");
    assert_eq!(err.class, ErrorClass::Transient);
    let got: usize = items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|b| b.len())
        .sum();
    assert!(got <= 50);
}

#[tokio::test]
async fn stalled_body_times_out_as_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = s.read(&mut buf).await.unwrap();
        let head = "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nContent-Range: bytes 0-99/1000\r\nETag: \"X\"\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[7u8; 10]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let mut cfg = config(&format!("http://127.0.0.1:{}", addr.port()), None);
    cfg.read_timeout = Duration::from_millis(300);
    let c = OssClient::new(cfg).unwrap();
    let out = c
        .bucket("bkt")
        .get_object("k", Some(0..100), None)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let items: Vec<_> = out.body.collect().await;
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("stall must error");
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.message.contains("stalled"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn skew_error(server: SystemTime) -> Response<Full<Bytes>> {
    let iso = chrono::DateTime::<chrono::Utc>::from(server)
        .format("%Y-%m-%dT%H:%M:%S.000Z")
        .to_string();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message><RequestId>5C3D8D2A0ACA54D87B430001</RequestId><HostId>h</HostId><MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds><RequestTime>x</RequestTime><ServerTime>{iso}</ServerTime></Error>"
    );
    let err = base64::engine::general_purpose::STANDARD.encode(&body);
    reply(
        403,
        &[
            ("content-type", "application/xml"),
            ("date", &httpdate::fmt_http_date(server)),
            ("x-oss-err", &err),
        ],
        body,
    )
}

fn parse_v4_date(s: &str) -> SystemTime {
    let dt = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").unwrap();
    SystemTime::from(dt.and_utc())
}

#[tokio::test]
async fn clock_skew_is_learned_and_request_resigned() {
    let ahead = Duration::from_secs(2 * 3600);
    let d = double(Arc::new(move |n, _| {
        if n == 0 {
            skew_error(SystemTime::now() + ahead)
        } else {
            head_ok()
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    c.bucket("bkt").head_object("k").await.unwrap();
    let reqs = d.requests();
    assert_eq!(reqs.len(), 2);
    let first = parse_v4_date(reqs[0].header("x-oss-date").unwrap());
    let second = parse_v4_date(reqs[1].header("x-oss-date").unwrap());
    let gap = second.duration_since(first).unwrap();
    assert!(
        gap > ahead - Duration::from_secs(60) && gap < ahead + Duration::from_secs(60),
        "{gap:?}"
    );
    assert_ne!(
        reqs[0].header("authorization"),
        reqs[1].header("authorization")
    );
    assert_signed(&reqs[1], "bkt", Some("k"));
    let off = c.clock_offset().num_seconds();
    assert!((off - 7200).abs() < 60, "{off}");

    // A streaming upload is single-shot: it reports ClockSkew (offset already fixed).
    let d = double(Arc::new(move |_, _| skew_error(SystemTime::now() - ahead))).await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let err = c
        .bucket("bkt")
        .upload_part("k", "UPLOAD", 1, stream_of(vec![b"abc"]), 3, None)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::ClockSkew);
    assert_eq!(d.requests().len(), 1);
    assert!((c.clock_offset().num_seconds() + 7200).abs() < 60);
}

#[tokio::test]
async fn throttling_is_retried_then_succeeds() {
    let d = double(Arc::new(|n, _| {
        if n < 2 {
            reply(503, &[("content-type", "application/xml")], "<Error><Code>TotalQpsLimitExceeded</Code><Message>Max total qps limit is exceeded</Message></Error>")
        } else {
            reply(204, &[], Bytes::new())
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    c.bucket("bkt").delete_object("k").await.unwrap();
    let reqs = d.requests();
    assert_eq!(reqs.len(), 3);
    assert_ne!(reqs[0].header("authorization"), None);

    // Exhausted attempts surface the class.
    let d = double(Arc::new(|_, _| {
        reply(500, &[], "<Error><Code>InternalError</Code></Error>")
    }))
    .await;
    let mut cfg = config(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    cfg.max_attempts = 2;
    let c = OssClient::new(cfg).unwrap();
    let err = c.bucket("bkt").delete_object("k").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(err.attempts, 2);
    assert_eq!(d.requests().len(), 2);
}

#[tokio::test]
async fn streaming_uploads_are_single_shot_and_exact() {
    let d = double(Arc::new(|n, r| {
        if n == 0 {
            reply(500, &[], "<Error><Code>InternalError</Code></Error>")
        } else {
            assert_eq!(r.body.len(), 11);
            reply(
                200,
                &[("etag", "\"E1\""), ("x-oss-hash-crc64ecma", "42")],
                Bytes::new(),
            )
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let b = c.bucket("bkt");
    let err = ObjectStore::upload_part(
        &b,
        "big/file.bin",
        "UP1",
        PartSpec {
            number: 3,
            offset: 0,
            len: 11,
        },
        stream_of(vec![b"hello", b" world"]),
        &ossrelay::checksum::Checksums::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert_eq!(d.requests().len(), 1);

    let up = b
        .upload_part(
            "big/file.bin",
            "UP1",
            3,
            stream_of(vec![b"hello", b" world"]),
            11,
            None,
        )
        .await
        .unwrap();
    assert_eq!(up.etag, "E1");
    assert_eq!(up.checksums.crc64_xz(), Some(42));
    let r = &d.requests()[1];
    assert_eq!(r.body, Bytes::from_static(b"hello world"));
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(
        r.path_and_query,
        "/bkt/big/file.bin?partNumber=3&uploadId=UP1"
    );
    assert_signed(r, "bkt", Some("big/file.bin"));

    // PutObject carries content type and metadata; a body shorter than declared fails.
    let opts = PutOptions {
        content_type: Some("application/x-raw-disk-image".into()),
        user_meta: vec![("Source".into(), "oss://a/b".into())],
    };
    b.put_object("img.raw", stream_of(vec![b"hello world"]), 11, &opts)
        .await
        .unwrap();
    let r = &d.requests()[2];
    assert_eq!(
        r.header("content-type"),
        Some("application/x-raw-disk-image")
    );
    assert_eq!(r.header("x-oss-meta-source"), Some("oss://a/b"));
    assert_signed(r, "bkt", Some("img.raw"));
    let err = b
        .put_object("img.raw", stream_of(vec![b"hello"]), 11, &opts)
        .await
        .unwrap_err();
    assert!(err.message.contains("short"), "{err}");
}

#[tokio::test]
async fn multipart_calls_on_the_wire() {
    let d = double(Arc::new(|_, r| {
        let q = r.path_and_query.as_str();
        match (r.method.as_str(), q) {
            ("POST", q) if q.ends_with("?uploads") => reply(200, &[], "<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key><UploadId>0004B9894A22E5B1888A1E29F8236E2D</UploadId></InitiateMultipartUploadResult>"),
            ("POST", _) => reply(200, &[("etag", "\"H-2\""), ("x-oss-hash-crc64ecma", "99")], "<CompleteMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key><ETag>\"AB-2\"</ETag></CompleteMultipartUploadResult>"),
            ("GET", q) if q.contains("part-number-marker=0") => reply(200, &[], "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>1</NextPartNumberMarker><Part><PartNumber>1</PartNumber><ETag>\"P1\"</ETag><Size>102400</Size><HashCrc64ecma>5</HashCrc64ecma></Part></ListPartsResult>"),
            ("GET", q) if q.contains("part-number-marker=1") => reply(200, &[], "<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>2</PartNumber><ETag>\"P2\"</ETag><Size>3</Size></Part></ListPartsResult>"),
            ("GET", q) if q.contains("uploads") && !q.contains("key-marker") => reply(200, &[], "<ListMultipartUploadsResult><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><NextKeyMarker>a%20b</NextKeyMarker><NextUploadIdMarker>U1</NextUploadIdMarker><Upload><Key>a%20b</Key><UploadId>U1</UploadId><Initiated>2024-01-01T00:00:00.000Z</Initiated></Upload></ListMultipartUploadsResult>"),
            ("GET", q) if q.contains("uploads") => reply(200, &[], "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated><Upload><Key>c</Key><UploadId>U2</UploadId></Upload></ListMultipartUploadsResult>"),
            ("DELETE", _) => reply(204, &[], Bytes::new()),
            ("PUT", q) if q.contains("lifecycle") => reply(200, &[], Bytes::new()),
            _ => reply(400, &[], "<Error><Code>InvalidArgument</Code></Error>"),
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let b = c.bucket("bkt");
    let opts = PutOptions {
        content_type: Some("application/octet-stream".into()),
        user_meta: vec![],
    };
    let id = b.create_multipart("k", 1 << 30, &opts).await.unwrap();
    assert_eq!(id, "0004B9894A22E5B1888A1E29F8236E2D");
    let parts = ObjectStore::list_parts(&b, "k", &id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.number).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(parts[0].checksums.crc64_xz(), Some(5));
    let done = b
        .complete(
            "k",
            &id,
            &[(1, "P1".into()), (2, "P2".into())],
            1 << 30,
            &ossrelay::checksum::Checksums::new(),
        )
        .await
        .unwrap();
    assert_eq!(done.etag, "AB-2");
    assert_eq!(done.checksums.crc64_xz(), Some(99));
    let ups = b.list_multipart_uploads(Some("a")).await.unwrap();
    assert_eq!(
        ups.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(),
        vec!["a b", "c"]
    );
    b.abort("k", &id).await.unwrap();
    let mut cfg = ossrelay::oss::LifecycleConfiguration::default();
    cfg.rules.push(ossrelay::oss::LifecycleRule {
        id: Some("abort-mpu".into()),
        prefix: Some(String::new()),
        status: "Enabled".into(),
        abort_multipart_upload: Some(ossrelay::oss::LifecycleAction::after_days(7)),
        ..Default::default()
    });
    b.put_bucket_lifecycle(&cfg).await.unwrap();

    let reqs = d.requests();
    let init = &reqs[0];
    assert_eq!(init.path_and_query, "/bkt/k?uploads");
    assert_eq!(
        init.header("content-type"),
        Some("application/octet-stream")
    );
    assert_signed(init, "bkt", Some("k"));
    assert!(reqs[1]
        .path_and_query
        .contains("uploadId=0004B9894A22E5B1888A1E29F8236E2D"));
    let complete = &reqs[3];
    assert_eq!(complete.method, "POST");
    let body = std::str::from_utf8(&complete.body).unwrap();
    assert!(body.contains("<Part><PartNumber>1</PartNumber><ETag>\"P1\"</ETag></Part><Part><PartNumber>2</PartNumber>"), "{body}");
    let md5 = base64::engine::general_purpose::STANDARD
        .encode(<md5::Md5 as md5::Digest>::digest(&complete.body));
    assert_eq!(complete.header("content-md5"), Some(md5.as_str()));
    assert_signed(complete, "bkt", Some("k"));
    assert!(reqs[4].path_and_query.contains("prefix=a"));
    assert!(
        reqs[5].path_and_query.contains("key-marker=a%20b"),
        "{}",
        reqs[5].path_and_query
    );
    assert_eq!(reqs[6].method, "DELETE");
    let lc = &reqs[7];
    assert_eq!(lc.path_and_query, "/bkt/?lifecycle");
    let md5 = base64::engine::general_purpose::STANDARD
        .encode(<md5::Md5 as md5::Digest>::digest(&lc.body));
    assert_eq!(lc.header("content-md5"), Some(md5.as_str()));
    assert!(std::str::from_utf8(&lc.body)
        .unwrap()
        .contains("<AbortMultipartUpload><Days>7</Days></AbortMultipartUpload>"));
    assert_signed(lc, "bkt", None);
}

/// The client retries a Complete whose answer was lost (it is replayable) and reports the
/// `NoSuchUpload` the retry gets as it is: it cannot tell the object it completed from another
/// one. The relay's upload session, which knows the expected CRC-64, decides
/// (`transfer::tests::a_lost_complete_answer_is_recovered_by_size_and_crc64`, and end to end
/// `oss_vs_sim::lost_complete_response_is_recovered`).
#[tokio::test]
async fn a_lost_complete_response_comes_back_as_no_such_upload() {
    let d = double(Arc::new(|n, r| match (n, r.method.as_str()) {
        // First Complete: applied, but the answer comes too late (client times out).
        (0, "POST") => {
            let mut resp = reply(200, &[], "<CompleteMultipartUploadResult><ETag>\"AB-2\"</ETag></CompleteMultipartUploadResult>");
            resp.headers_mut().insert(DELAY, "1500".parse().unwrap());
            resp
        }
        (_, "POST") => reply(404, &[], "<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>"),
        (_, "HEAD") => {
            let now = httpdate::fmt_http_date(SystemTime::now());
            let mut resp = reply(
                200,
                &[("etag", "\"AB-2\""), ("x-oss-object-type", "Multipart"), ("x-oss-hash-crc64ecma", "77"), ("last-modified", &now), ("date", &now)],
                Bytes::new(),
            );
            resp.headers_mut().insert("content-length", "204800".parse().unwrap());
            resp
        }
        _ => reply(400, &[], Bytes::new()),
    }))
    .await;
    let mut cfg = config(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    cfg.read_timeout = Duration::from_millis(500);
    let c = OssClient::new(cfg).unwrap();
    let err = c
        .bucket("bkt")
        .complete_multipart_upload("k", "U", &[(1, "P1".into()), (2, "P2".into())])
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound, "{err}");
    let methods: Vec<String> = d.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(
        methods,
        vec!["POST", "POST"],
        "retried once, no HEAD guesswork"
    );

    // A NoSuchUpload on the first attempt is a plain NotFound too.
    let d = double(Arc::new(|_, _| {
        reply(404, &[], "<Error><Code>NoSuchUpload</Code></Error>")
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let err = c
        .bucket("bkt")
        .complete_multipart_upload("k", "U", &[(1, "P1".into())])
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::NotFound);
    assert_eq!(d.requests().len(), 1);
}

#[tokio::test]
async fn wrong_region_error_reaches_the_user() {
    let d = double(Arc::new(|_, _| {
        reply(403, &[("content-type", "application/xml")], "<Error><Code>AccessDenied</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><RequestId>63E03DBE1B08F731365BE4DE</RequestId><HostId>jeffcott.oss-cn-hangzhou.aliyuncs.com</HostId><Bucket>jeffcott</Bucket><Endpoint>oss-cn-beijing.aliyuncs.com</Endpoint></Error>")
    }))
    .await;
    let mut cfg = config("http://oss-cn-hangzhou.aliyuncs.com", Some(d.addr));
    cfg.region_flag = "--dst-region".into();
    let c = OssClient::new(cfg).unwrap();
    let err = c.bucket("jeffcott").get_bucket_info().await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    assert!(
        err.to_string()
            .contains("bucket jeffcott is in region cn-beijing; use --dst-region cn-beijing"),
        "{err}"
    );
    assert_eq!(d.requests().len(), 1);
}

const TEST_CERT_DER_B64: &str = "MIIBmzCCAUGgAwIBAgIUeKuCuxGrVZ+6OnMc2d4XRlTKZm0wCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjA4MjIyM1oYDzIxMjYxMTAyMDgyMjIzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATgCV9nch2kqtCOyR1hzrSFymtXKxICNhwfXqEhD4/YVAR9IUr7fpwHe92CsZyvbiCZOkFusVNelkcdxjFjWv92o28wbTAdBgNVHQ4EFgQUlcH1D1XAosVOWKq93wW6orfmT8IwHwYDVR0jBBgwFoAUlcH1D1XAosVOWKq93wW6orfmT8IwDwYDVR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZIzj0EAwIDSAAwRQIhAPB24V2fjYjS1cJWYLP2TOQR8RTrDkf0jRx9LG5qj8CnAiA39tM1J5g07kFZu0zv2Oj9U3FoMkBWtBu774deRMCZsQ==";
const TEST_KEY_PKCS8_B64: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvOdZQdDf/l8wGJO/xq0ON88xAJQT1fXPnICOwp2JxHOhRANCAATgCV9nch2kqtCOyR1hzrSFymtXKxICNhwfXqEhD4/YVAR9IUr7fpwHe92CsZyvbiCZOkFusVNelkcdxjFjWv92";

/// A TLS server with a self-signed certificate (valid for 127.0.0.1) must be refused.
#[tokio::test]
async fn https_verifies_certificates() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let b64 = base64::engine::general_purpose::STANDARD;
    let cert = CertificateDer::from(b64.decode(TEST_CERT_DER_B64).unwrap());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        b64.decode(TEST_KEY_PKCS8_B64).unwrap(),
    ));
    let server_cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(Mutex::new(0u32));
    let hs = handshakes.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut tcp) = stream else { return };
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut conn = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
            *hs.lock().unwrap() += 1;
            // Drive the handshake until the client gives up on our certificate.
            while conn.is_handshaking() {
                if conn.complete_io(&mut tcp).is_err() {
                    break;
                }
            }
        }
    });
    let c = client(&format!("https://127.0.0.1:{port}"), None);
    let err = c.bucket("bkt").head_object("k").await.unwrap_err();
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.class.is_retryable(), "{err:?}");
    assert_eq!(
        *handshakes.lock().unwrap(),
        1,
        "a certificate failure must not be retried"
    );
}

/// A HEAD 403 without any error body or `x-oss-err` is still recognised as clock skew when
/// the server's Date is far from ours.
#[tokio::test]
async fn bodiless_head_403_with_far_date_is_clock_skew() {
    let ahead = Duration::from_secs(3600);
    let d = double(Arc::new(move |n, _| {
        if n == 0 {
            reply(
                403,
                &[("date", &httpdate::fmt_http_date(SystemTime::now() + ahead))],
                Bytes::new(),
            )
        } else {
            head_ok()
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    c.bucket("bkt").head_object("k").await.unwrap();
    assert_eq!(d.requests().len(), 2);
    assert!((c.clock_offset().num_seconds() - 3600).abs() < 60);

    // A plain 403 with a correct Date is an Auth failure and is not retried.
    let d = double(Arc::new(|_, _| {
        reply(
            403,
            &[("date", &httpdate::fmt_http_date(SystemTime::now()))],
            Bytes::new(),
        )
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let err = c.bucket("bkt").head_object("k").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Auth);
    assert_eq!(d.requests().len(), 1);
}

/// Hands out a new key id on every call, like a provider that refreshed.
struct Rotating(std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl ossrelay::credentials::CredentialsProvider for Rotating {
    async fn credentials(&self) -> Result<Credentials, ossrelay::credentials::CredentialsError> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut c = Credentials::new(format!("STS.id{n}"), "secret");
        c.security_token = Some(format!("token{n}"));
        Ok(c)
    }
    fn name(&self) -> String {
        "rotating".into()
    }
}

#[tokio::test]
async fn credentials_are_fetched_per_attempt_and_v1_is_selectable() {
    let d = double(Arc::new(|n, _| {
        if n == 0 {
            reply(503, &[], "<Error><Code>ServiceUnavailable</Code></Error>")
        } else {
            head_ok()
        }
    }))
    .await;
    let mut cfg = config(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    cfg.credentials = Arc::new(Rotating(Default::default()));
    let c = OssClient::new(cfg).unwrap();
    c.bucket("bkt").head_object("k").await.unwrap();
    let reqs = d.requests();
    assert_eq!(reqs.len(), 2);
    for (i, r) in reqs.iter().enumerate() {
        assert!(r
            .header("authorization")
            .unwrap()
            .contains(&format!("Credential=STS.id{i}/")));
        assert_eq!(
            r.header("x-oss-security-token"),
            Some(format!("token{i}").as_str())
        );
    }

    let d = double(Arc::new(|_, _| head_ok())).await;
    let mut cfg = config(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    cfg.sign_version = ossrelay::oss::SignVersion::V1;
    let c = OssClient::new(cfg).unwrap();
    c.bucket("bkt").head_object("a b").await.unwrap();
    let r = &d.requests()[0];
    let date = r.header("date").unwrap();
    assert!(r.header("x-oss-date").is_none());
    let sts = format!("HEAD\n\n\n{date}\n/bkt/a b");
    let want = format!("OSS ak:{}", ossrelay::oss::sign::v1_signature("sk", &sts));
    assert_eq!(r.header("authorization"), Some(want.as_str()));
}

#[tokio::test]
async fn broken_source_stream_keeps_its_class() {
    let d = double(Arc::new(|_, _| {
        reply(200, &[("etag", "\"E\"")], Bytes::new())
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let items: Vec<Result<Bytes, ossrelay::store::StoreError>> = vec![
        Ok(Bytes::from_static(b"abc")),
        Err(ossrelay::store::StoreError::new(
            ErrorClass::Throttled,
            "source GET throttled",
        )),
    ];
    let body: ByteStream = Box::pin(futures::stream::iter(items));
    let err = c
        .bucket("bkt")
        .upload_part("k", "U", 1, body, 10, None)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Throttled);
    assert!(err.message.contains("source GET throttled"), "{err}");

    // More bytes than declared is a caller bug, not retryable.
    let err = c
        .bucket("bkt")
        .upload_part("k", "U", 1, stream_of(vec![b"abc", b"def"]), 4, None)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Client);
}

#[tokio::test]
async fn chunked_ranged_body_is_accepted_and_length_checked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = s.read(&mut buf).await.unwrap();
        let resp = "HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 0-9/20\r\nETag: \"X\"\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n";
        s.write_all(resp.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let c = client(&format!("http://127.0.0.1:{}", addr.port()), None);
    let out = c
        .bucket("bkt")
        .get_object("k", Some(0..10), None)
        .await
        .unwrap();
    let data: Vec<Bytes> = out.body.map(|r| r.unwrap()).collect().await;
    assert_eq!(data.concat(), b"0123456789");
}

/// Moved from the engine's "create error" / "head error" cases, with the retrying of control
/// requests: a transient or throttled HEAD, Initiate, ListParts, Complete or Abort is retried
/// by the transport (a replayable request), once per failure, and the store counts it.
#[tokio::test]
async fn control_requests_are_retried_by_the_transport() {
    let d = double(Arc::new(|n, r| {
        // Every even request fails: each operation's first attempt.
        if n % 2 == 0 {
            return if n % 4 == 0 {
                reply(503, &[], "<Error><Code>SlowDown</Code></Error>")
            } else {
                reply(500, &[], "<Error><Code>InternalError</Code></Error>")
            };
        }
        let q = r.path_and_query.as_str();
        match (r.method.as_str(), q) {
            ("HEAD", _) => head_ok(),
            ("POST", q) if q.ends_with("?uploads") => reply(200, &[], "<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key><UploadId>U1</UploadId></InitiateMultipartUploadResult>"),
            ("GET", _) => reply(200, &[], "<ListPartsResult><IsTruncated>false</IsTruncated></ListPartsResult>"),
            ("POST", _) => reply(200, &[("etag", "\"AB-1\"")], "<CompleteMultipartUploadResult><ETag>\"AB-1\"</ETag></CompleteMultipartUploadResult>"),
            ("DELETE", _) => reply(204, &[], Bytes::new()),
            _ => reply(400, &[], "<Error><Code>InvalidArgument</Code></Error>"),
        }
    }))
    .await;
    let c = client(&format!("http://127.0.0.1:{}", d.addr.port()), None);
    let b = c.bucket("bkt");
    let store: &dyn ObjectStore = &b;
    assert_eq!(store.head("k").await.unwrap().size, 9);
    let id = store
        .create_multipart("k", 1 << 20, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(id, "U1");
    assert!(store.list_parts("k", &id).await.unwrap().is_empty());
    assert_eq!(
        store
            .complete(
                "k",
                &id,
                &[(1, "P1".into())],
                1 << 20,
                &ossrelay::checksum::Checksums::new()
            )
            .await
            .unwrap()
            .etag,
        "AB-1"
    );
    store.abort("k", &id).await.unwrap();
    assert_eq!(d.requests().len(), 10, "two attempts per operation");
    assert_eq!(store.retries(), 5, "one retry per operation, counted");
}
