//! The S3 client against a tiny in-process HTTP double that returns canned responses, records
//! what it received and re-verifies every request's SigV4 signature with the signer (the
//! independent verifier is the simulator's; this double checks what the client puts on the
//! wire: headers per provider, plain bodies, paging, error mapping).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use ossrelay::aws::sigv4;
use ossrelay::checksum::{Checksum, Checksums};
use ossrelay::credentials::{Credentials, CredentialsError, CredentialsProvider, StaticProvider};
use ossrelay::http::proxy::ProxyConfig;
use ossrelay::s3::{Provider, S3Bucket, S3Client, S3Config};
use ossrelay::store::{ByteStream, ErrorClass, ObjectStore, PartSpec, PutOptions};

const AK: &str = "AKIDEXAMPLE";
const SK: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    /// Whether the signature recomputed from the received request matched.
    signature_ok: bool,
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

/// Recomputes the signature of a received request with the secret the double knows.
fn verify(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> bool {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let field = |name: &str| {
        auth.split([',', ' '])
            .find_map(|p| p.trim().strip_prefix(name))
            .map(str::to_string)
    };
    let (Some(cred), Some(signed), Some(sig)) = (
        field("Credential="),
        field("SignedHeaders="),
        field("Signature="),
    ) else {
        return false;
    };
    let scope: Vec<&str> = cred.split('/').collect();
    let date = headers["x-amz-date"].to_str().unwrap();
    let mut h = HeaderMap::new();
    for name in signed.split(';') {
        for v in headers.get_all(name) {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.clone(),
            );
        }
    }
    let token = headers
        .get("x-amz-security-token")
        .map(|v| v.to_str().unwrap().to_string());
    let s = sigv4::sign_headers_detailed(
        method,
        uri,
        &mut h,
        headers["x-amz-content-sha256"].to_str().unwrap(),
        &sigv4::SigningParams {
            access_key_id: scope[0],
            secret_access_key: SK,
            session_token: token.as_deref(),
            region: scope[2],
            service: scope[3],
            time: sigv4::parse_amz_datetime(date).unwrap(),
        },
    );
    s.signature == sig && s.signed_headers == signed
}

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
                        let signature_ok = verify(&parts.method, &parts.uri, &parts.headers);
                        let rec = Recorded {
                            method: parts.method.to_string(),
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body,
                            signature_ok,
                        };
                        let n = {
                            let mut l = log.lock().unwrap();
                            l.push(rec.clone());
                            l.len() - 1
                        };
                        Ok::<_, Infallible>(handler(n, &rec))
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
    b = b.header("x-amz-request-id", "REQ1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).unwrap()
}

fn error_xml(code: &str, extra: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>msg</Message>{extra}<RequestId>R1</RequestId></Error>")
}

fn config(d: &Double, provider: Provider, creds: Arc<dyn CredentialsProvider>) -> S3Config {
    let mut cfg = S3Config::new(
        provider,
        "us-east-1",
        Some(format!("http://{}", d.addr)),
        creds,
    );
    cfg.read_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.proxy = ProxyConfig::none();
    cfg.region_flag = "--src-region".into();
    cfg
}

fn static_creds() -> Arc<dyn CredentialsProvider> {
    Arc::new(StaticProvider(Credentials::new(AK, SK)))
}

fn bucket(d: &Double, provider: Provider) -> S3Bucket {
    S3Client::new(config(d, provider, static_creds()))
        .unwrap()
        .bucket("bkt")
}

fn body(data: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(data))]))
}

fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(data).into()
}

fn nvme(data: &[u8]) -> u64 {
    let mut d = ossrelay::checksum::MultiDigest::new([ossrelay::checksum::Algorithm::Crc64Nvme]);
    d.update(data);
    d.finish().crc64_nvme().unwrap()
}

const PART: &[u8] = b"hello world!";

/// A double that plays a healthy S3 for the multipart calls.
fn multipart_handler() -> Handler {
    Arc::new(|_, r: &Recorded| {
        let q = r.path_and_query.as_str();
        match r.method.as_str() {
            "POST" if q.ends_with("?uploads") => reply(
                200,
                &[],
                "<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key><UploadId>UP1</UploadId></InitiateMultipartUploadResult>",
            ),
            "PUT" => {
                let etag = format!("\"{}\"", hex::encode(md5(&r.body)));
                let mut h = vec![("etag", etag.clone())];
                if let Some(c) = r.header("x-amz-checksum-crc64nvme") {
                    h.push(("x-amz-checksum-crc64nvme", c.to_string()));
                }
                let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
                reply(200, &h, "")
            }
            "POST" => reply(
                200,
                &[],
                "<CompleteMultipartUploadResult><ETag>\"abc-1\"</ETag><ChecksumCRC64NVME>2RYNH6jkGOM=</ChecksumCRC64NVME><ChecksumType>FULL_OBJECT</ChecksumType></CompleteMultipartUploadResult>",
            ),
            _ => reply(404, &[], error_xml("NoSuchKey", "")),
        }
    })
}

fn expected_part() -> Checksums {
    Checksums::new()
        .with(Checksum::Crc64Nvme(nvme(PART)))
        .with(Checksum::Md5(md5(PART)))
}

#[tokio::test]
async fn aws_multipart_sends_checksums_plain_bodies_and_valid_signatures() {
    let d = double(multipart_handler()).await;
    let b = bucket(&d, Provider::Aws);
    let id = b
        .create_multipart("dir/disk 1.raw", 12, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(id, "UP1");
    let part = PartSpec {
        number: 1,
        offset: 0,
        len: PART.len() as u64,
    };
    let up = ObjectStore::upload_part(
        &b,
        "dir/disk 1.raw",
        &id,
        part,
        body(PART),
        &expected_part(),
    )
    .await
    .unwrap();
    assert_eq!(up.checksums.crc64_nvme(), Some(0xD9160D1FA8E418E3));
    assert_eq!(
        up.checksums.get(ossrelay::checksum::Algorithm::Md5),
        Some(Checksum::Md5(md5(PART)))
    );
    let done = b
        .complete(
            "dir/disk 1.raw",
            &id,
            &[(1, up.etag.clone())],
            12,
            &Checksums::new().with(Checksum::Crc64Nvme(nvme(PART))),
        )
        .await
        .unwrap();
    assert_eq!(done.etag, "abc-1");
    assert_eq!(done.checksums.crc64_nvme(), Some(0xD9160D1FA8E418E3));

    let reqs = d.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert!(
            r.signature_ok,
            "signature of {} {}",
            r.method, r.path_and_query
        );
        assert_eq!(r.header("host"), Some(d.addr.to_string().as_str()));
        assert!(r.header("content-encoding").is_none(), "never aws-chunked");
        assert!(r.header("x-amz-decoded-content-length").is_none());
    }
    let create = &reqs[0];
    assert_eq!(create.path_and_query, "/bkt/dir/disk%201.raw?uploads");
    assert_eq!(create.header("x-amz-checksum-algorithm"), Some("CRC64NVME"));
    assert_eq!(create.header("x-amz-checksum-type"), Some("FULL_OBJECT"));
    let put = &reqs[1];
    assert_eq!(
        put.path_and_query,
        "/bkt/dir/disk%201.raw?partNumber=1&uploadId=UP1"
    );
    assert_eq!(put.header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    assert_eq!(put.header("content-length"), Some("12"));
    assert!(put.header("transfer-encoding").is_none());
    assert_eq!(put.header("x-amz-checksum-crc64nvme"), Some("2RYNH6jkGOM="));
    assert_eq!(
        put.header("content-md5"),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(md5(PART))
                .as_str()
        )
    );
    assert_eq!(&put.body[..], PART);
    let complete = &reqs[2];
    assert_eq!(
        complete.header("x-amz-checksum-crc64nvme"),
        Some("2RYNH6jkGOM=")
    );
    assert_eq!(complete.header("x-amz-checksum-type"), Some("FULL_OBJECT"));
    assert_eq!(complete.header("x-amz-mp-object-size"), Some("12"));
    let xml = String::from_utf8_lossy(&complete.body);
    assert!(
        xml.contains("<Part><PartNumber>1</PartNumber><ETag>&quot;"),
        "{xml}"
    );
    assert_eq!(
        complete.header("x-amz-content-sha256"),
        Some(sigv4::sha256_hex(&complete.body).as_str()),
        "small XML bodies are hashed"
    );
}

#[tokio::test]
async fn quirks_providers_send_only_content_md5() {
    for (provider, quirks) in [
        (Provider::Obs, false),
        (Provider::Oss, false),
        (Provider::Aws, true),
    ] {
        let d = double(multipart_handler()).await;
        let mut cfg = config(&d, provider, static_creds());
        cfg.ignore_checksum_headers = quirks;
        if provider == Provider::Oss {
            cfg.path_style = None;
        }
        let b = S3Client::new(cfg).unwrap().bucket("bkt");
        assert!(b
            .checksums()
            .verifies
            .contains(&ossrelay::checksum::Algorithm::Md5));
        let id = b
            .create_multipart("k", 12, &PutOptions::default())
            .await
            .unwrap();
        let part = PartSpec {
            number: 1,
            offset: 0,
            len: 12,
        };
        let up = ObjectStore::upload_part(&b, "k", &id, part, body(PART), &expected_part())
            .await
            .unwrap();
        assert_eq!(up.checksums.crc64_nvme(), None, "{provider}");
        assert!(
            up.checksums
                .get(ossrelay::checksum::Algorithm::Md5)
                .is_some(),
            "{provider}"
        );
        b.complete("k", &id, &[(1, up.etag)], 12, &expected_part())
            .await
            .unwrap();
        let reqs = d.requests();
        assert!(reqs.iter().all(|r| r.signature_ok));
        assert!(
            reqs[0].header("x-amz-checksum-algorithm").is_none(),
            "{provider}"
        );
        assert!(
            reqs[1].header("x-amz-checksum-crc64nvme").is_none(),
            "{provider}"
        );
        assert!(reqs[1].header("content-md5").is_some(), "{provider}");
        assert!(
            reqs[2].header("x-amz-checksum-crc64nvme").is_none(),
            "{provider}"
        );
        assert!(
            reqs[2].header("x-amz-mp-object-size").is_none(),
            "{provider}"
        );
    }
}

#[tokio::test]
async fn head_reads_full_object_crc_and_ignores_composite() {
    let d = double(Arc::new(|n, _r: &Recorded| {
        let (sum, ty) = if n == 0 {
            ("rosUhgp5mIg=", "FULL_OBJECT")
        } else {
            ("rosUhgp5mIg=-3", "COMPOSITE")
        };
        reply(
            200,
            &[
                ("content-length", "9"),
                ("etag", "\"0123456789abcdef0123456789abcdef\""),
                ("x-amz-checksum-crc64nvme", sum),
                ("x-amz-checksum-type", ty),
                ("x-amz-meta-owner", "me"),
            ],
            "",
        )
    }))
    .await;
    let b = bucket(&d, Provider::Aws);
    let m = b.head("k").await.unwrap();
    assert_eq!(m.size, 9);
    assert_eq!(m.checksums.crc64_nvme(), Some(0xAE8B14860A799888));
    assert!(m
        .checksums
        .get(ossrelay::checksum::Algorithm::Md5)
        .is_none());
    assert_eq!(m.user_meta, vec![("owner".to_string(), "me".to_string())]);
    let m = b.head("k").await.unwrap();
    assert!(m.checksums.is_empty());
    let reqs = d.requests();
    assert_eq!(reqs[0].method, "HEAD");
    assert_eq!(reqs[0].header("x-amz-checksum-mode"), Some("ENABLED"));
    assert!(reqs[0].signature_ok);
}

#[tokio::test]
async fn get_range_streams_with_if_match_and_412_is_precondition() {
    let d = double(Arc::new(|n, r: &Recorded| {
        assert_eq!(r.header("range"), Some("bytes=2-5"));
        assert_eq!(r.header("if-match"), Some("\"e1\""));
        if n == 0 {
            reply(
                206,
                &[("content-range", "bytes 2-5/12"), ("etag", "\"e1\"")],
                "llo ",
            )
        } else {
            reply(412, &[], error_xml("PreconditionFailed", ""))
        }
    }))
    .await;
    let b = bucket(&d, Provider::Aws);
    let mut s = b.get_range("k", 2, 6, Some("e1")).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = s.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, b"llo ");
    let e = b.get_range("k", 2, 6, Some("e1")).await.err().unwrap();
    assert_eq!(e.class, ErrorClass::Precondition, "{e}");
}

#[tokio::test]
async fn wrong_region_names_the_region_and_flag() {
    // HEAD: 301 without a body, region in the header.
    let d = double(Arc::new(|_, _r: &Recorded| {
        reply(301, &[("x-amz-bucket-region", "eu-west-1")], "")
    }))
    .await;
    let e = bucket(&d, Provider::Aws).head("k").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Client, "{e}");
    assert!(
        e.message.contains("eu-west-1") && e.message.contains("--src-region"),
        "{e}"
    );
    assert!(!e.message.contains('\n'));
    assert_eq!(d.requests().len(), 1, "not retried");

    // 400 AuthorizationHeaderMalformed with <Region>.
    let d = double(Arc::new(|_, _r: &Recorded| {
        reply(
            400,
            &[],
            error_xml(
                "AuthorizationHeaderMalformed",
                "<Region>ap-southeast-2</Region>",
            ),
        )
    }))
    .await;
    let e = bucket(&d, Provider::Aws)
        .list_parts("k", "U")
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Client);
    assert!(e.message.contains("--src-region ap-southeast-2"), "{e}");
}

#[tokio::test]
async fn error_codes_map_to_classes() {
    for (status, code, want, attempts) in [
        (503, "SlowDown", ErrorClass::Throttled, 2),
        (500, "InternalError", ErrorClass::Transient, 2),
        (403, "AccessDenied", ErrorClass::Auth, 1),
        (403, "SignatureDoesNotMatch", ErrorClass::Auth, 1),
        (403, "InvalidAccessKeyId", ErrorClass::Auth, 1),
        (404, "NoSuchUpload", ErrorClass::NotFound, 1),
        (400, "InvalidPart", ErrorClass::Client, 1),
    ] {
        let d = double(Arc::new(move |_, _r: &Recorded| {
            reply(status, &[], error_xml(code, ""))
        }))
        .await;
        let mut cfg = config(&d, Provider::Aws, static_creds());
        cfg.max_attempts = 2;
        let b = S3Client::new(cfg).unwrap().bucket("bkt");
        let e = b.list_parts("k", "U").await.unwrap_err();
        assert_eq!(e.class, want, "{code}: {e}");
        assert_eq!(e.code.as_deref(), Some(code));
        assert_eq!(d.requests().len(), attempts, "{code}");
        assert!(!e.message.contains('\n'));
    }
}

#[tokio::test]
async fn clock_skew_corrects_offset_and_resigns() {
    let d = double(Arc::new(|n, _r: &Recorded| {
        if n == 0 {
            let past =
                httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
            reply(
                403,
                &[("date", past.as_str())],
                error_xml("RequestTimeTooSkewed", ""),
            )
        } else {
            reply(
                200,
                &[],
                "<ListPartsResult><IsTruncated>false</IsTruncated></ListPartsResult>",
            )
        }
    }))
    .await;
    let b = bucket(&d, Provider::Aws);
    b.list_parts("k", "U").await.unwrap();
    let reqs = d.requests();
    assert_eq!(reqs.len(), 2);
    assert_ne!(reqs[0].header("x-amz-date"), reqs[1].header("x-amz-date"));
    assert!(b.client().clock_offset().num_seconds() < -3500);
}

#[tokio::test]
async fn embedded_error_in_complete_200_is_retried_or_fails() {
    let d = double(Arc::new(|n, _r: &Recorded| {
        if n == 0 {
            reply(200, &[], "     \n   <Error><Code>InternalError</Code><Message>try again</Message></Error>")
        } else {
            reply(200, &[], "   <CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>")
        }
    }))
    .await;
    let b = bucket(&d, Provider::Aws);
    let done = b
        .complete(
            "k",
            "U",
            &[(1, "a".into()), (2, "b".into())],
            10,
            &Checksums::new(),
        )
        .await
        .unwrap();
    assert_eq!(done.etag, "x-2");
    assert_eq!(d.requests().len(), 2);

    let d = double(Arc::new(|_, _r: &Recorded| {
        reply(
            200,
            &[],
            "  <Error><Code>InvalidPart</Code><Message>bad etag</Message></Error>",
        )
    }))
    .await;
    let e = bucket(&d, Provider::Aws)
        .complete("k", "U", &[(1, "a".into())], 10, &Checksums::new())
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Client, "{e}");
    assert_eq!(e.code.as_deref(), Some("InvalidPart"));
    assert_eq!(d.requests().len(), 1);
}

#[tokio::test]
async fn list_parts_pages() {
    let d = double(Arc::new(|n, _r: &Recorded| {
        if n == 0 {
            reply(200, &[], "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>1</NextPartNumberMarker><Part><PartNumber>1</PartNumber><ETag>\"fc3ff98e8c6a0d3087d515c0473f8677\"</ETag><Size>12</Size><ChecksumCRC64NVME>2RYNH6jkGOM=</ChecksumCRC64NVME></Part></ListPartsResult>")
        } else {
            reply(200, &[], "<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>2</PartNumber><ETag>\"e\"</ETag><Size>3</Size></Part></ListPartsResult>")
        }
    }))
    .await;
    let parts = bucket(&d, Provider::Aws)
        .list_parts("k", "U/1")
        .await
        .unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].checksums.crc64_nvme(), Some(0xD9160D1FA8E418E3));
    assert_eq!(
        parts[0].checksums.get(ossrelay::checksum::Algorithm::Md5),
        Some(Checksum::Md5(md5(PART)))
    );
    assert_eq!(parts[1].size, 3);
    let reqs = d.requests();
    assert_eq!(
        reqs[0].path_and_query,
        "/bkt/k?uploadId=U%2F1&max-parts=1000"
    );
    assert_eq!(
        reqs[1].path_and_query,
        "/bkt/k?uploadId=U%2F1&max-parts=1000&part-number-marker=1"
    );
    assert!(reqs.iter().all(|r| r.signature_ok));
}

/// Hands out token T1 first, then T2 (a provider whose cache refreshed).
struct Rotating(AtomicUsize);

#[async_trait]
impl CredentialsProvider for Rotating {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Credentials {
            security_token: Some(if n == 0 { "T1" } else { "T2" }.into()),
            ..Credentials::new(AK, SK)
        })
    }

    fn name(&self) -> String {
        "rotating".into()
    }
}

#[tokio::test]
async fn expired_token_refetches_credentials_once() {
    let d = double(Arc::new(|_, r: &Recorded| {
        if r.header("x-amz-security-token") == Some("T1") {
            reply(400, &[], error_xml("ExpiredToken", ""))
        } else {
            reply(204, &[], "")
        }
    }))
    .await;
    let mut cfg = config(&d, Provider::Aws, Arc::new(Rotating(AtomicUsize::new(0))));
    cfg.max_attempts = 1;
    let b = S3Client::new(cfg).unwrap().bucket("bkt");
    b.abort("k", "U").await.unwrap();
    let reqs = d.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.signature_ok));
    assert_eq!(reqs[1].header("x-amz-security-token"), Some("T2"));

    // A token that stays expired is an Auth error after that one re-fetch.
    let d = double(Arc::new(|_, _r: &Recorded| {
        reply(400, &[], error_xml("ExpiredToken", ""))
    }))
    .await;
    let mut cfg = config(&d, Provider::Aws, static_creds());
    cfg.max_attempts = 1;
    let e = S3Client::new(cfg)
        .unwrap()
        .bucket("bkt")
        .abort("k", "U")
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(
        e.message.contains("refresh the temporary credentials"),
        "{e}"
    );
    assert_eq!(d.requests().len(), 2);
}

#[tokio::test]
async fn virtual_hosted_addressing_through_connect_to() {
    let d = double(Arc::new(|_, _r: &Recorded| reply(204, &[], ""))).await;
    let mut cfg = config(&d, Provider::Other, static_creds());
    cfg.endpoint = Some(format!("http://s3.test.example:{}", d.addr.port()));
    cfg.connect_to = Some(d.addr);
    let b = S3Client::new(cfg).unwrap().bucket("bkt");
    b.delete("a/b c").await.unwrap();
    let r = &d.requests()[0];
    assert_eq!(
        r.header("host"),
        Some(format!("bkt.s3.test.example:{}", d.addr.port()).as_str())
    );
    assert_eq!(r.path_and_query, "/a/b%20c");
    assert!(r.signature_ok);
}

#[tokio::test]
async fn single_put_is_plain_and_reports_etag_md5() {
    let d = double(Arc::new(|_, r: &Recorded| {
        let etag = format!("\"{}\"", hex::encode(md5(&r.body)));
        reply(200, &[("etag", etag.as_str())], "")
    }))
    .await;
    let b = bucket(&d, Provider::Aws);
    let up = b
        .put("k", body(PART), 12, &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        up.checksums.get(ossrelay::checksum::Algorithm::Md5),
        Some(Checksum::Md5(md5(PART)))
    );
    let r = &d.requests()[0];
    assert_eq!(r.header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    assert_eq!(r.header("content-length"), Some("12"));
    assert!(r.signature_ok);
}
