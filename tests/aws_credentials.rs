//! AWS credentials against in-process doubles of STS and the EC2 instance metadata service:
//! what goes on the wire (SigV4 on AssumeRole, recomputed here with the signer; the web
//! identity token re-read from its file; the IMDSv2 token dance), refresh before expiry, and
//! how service errors reach the user. End-to-end runs against the simulator come separately.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use ossrelay::aws::sigv4::{sha256_hex, sign_headers, SigningParams};
use ossrelay::credentials::aws::{resolve, AwsCredentialOptions};
use ossrelay::credentials::{CredentialsError, EnvLookup};
use ossrelay::http::RetryPolicy;

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The decoded form fields of the body.
    fn form(&self) -> Vec<(String, String)> {
        self.body
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .unwrap()
                        .to_string()
                };
                (dec(k), dec(v))
            })
            .collect()
    }

    fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

type Handler = Arc<dyn Fn(usize, &Recorded) -> Response<Full<Bytes>> + Send + Sync>;

struct Double {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Double {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
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
                        let rec = Recorded {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            headers: parts.headers,
                            body: String::from_utf8_lossy(&body).to_string(),
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

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .body(Full::new(body.into()))
        .unwrap()
}

fn expiry_in(d: Duration) -> String {
    let t: chrono::DateTime<chrono::Utc> = (SystemTime::now() + d).into();
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A successful AssumeRole / AssumeRoleWithWebIdentity answer.
fn sts_ok(action: &str, key: &str, ttl: Duration) -> Response<Full<Bytes>> {
    reply(
        200,
        format!(
            r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId>
      <SecretAccessKey>secret-of-{key}</SecretAccessKey>
      <SessionToken>token-of-{key}</SessionToken>
      <Expiration>{}</Expiration>
    </Credentials>
    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>ARO:s</AssumedRoleId></AssumedRoleUser>
  </{action}Result>
  <ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata>
</{action}Response>"#,
            expiry_in(ttl)
        ),
    )
}

fn sts_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        format!(
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>err-req-1</RequestId></ErrorResponse>"#
        ),
    )
}

const CONFIG: &str = "\
[profile admin]
role_arn = arn:aws:iam::123456789012:role/admin
source_profile = dev
external_id = ext-123
role_session_name = relay
duration_seconds = 1800
region = eu-central-1

[profile second]
role_arn = arn:aws:iam::210987654321:role/second
source_profile = admin
role_session_name = hop2
";

const CREDENTIALS: &str = "\
[dev]
aws_access_key_id = AKIADEVEXAMPLE
aws_secret_access_key = dev-secret-key
aws_session_token = dev-session-token
";

/// Files in a temp dir, the instance metadata service off unless a test points it somewhere.
fn env_with(dir: &Path, extra: &[(&str, String)]) -> EnvLookup {
    std::fs::write(dir.join("config"), CONFIG).unwrap();
    std::fs::write(dir.join("credentials"), CREDENTIALS).unwrap();
    let mut v: Vec<(String, String)> = vec![
        (
            "AWS_CONFIG_FILE".into(),
            dir.join("config").to_str().unwrap().into(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".into(),
            dir.join("credentials").to_str().unwrap().into(),
        ),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    for (k, val) in extra {
        v.retain(|(kk, _)| kk != k);
        v.push((k.to_string(), val.clone()));
    }
    EnvLookup::from_map(v)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(20),
    }
}

fn opts(sts: &Double) -> AwsCredentialOptions {
    AwsCredentialOptions {
        sts_endpoint: Some(sts.url()),
        region: None,
        sts_retry: Some(fast_retry()),
    }
}

/// Recomputes the request's signature with the signer, from what arrived on the wire.
fn verify_sigv4(r: &Recorded, secret: &str, region: &str) {
    let auth = r.header("authorization").expect("signed");
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .collect();
    assert!(
        signed.contains(&"host") && signed.contains(&"x-amz-date"),
        "{auth}"
    );
    let credential = auth
        .split("Credential=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let key_id = credential.split('/').next().unwrap();
    assert!(
        credential.ends_with(&format!("/{region}/sts/aws4_request")),
        "{credential}"
    );
    let date = r.header("x-amz-date").unwrap();
    let time: SystemTime = chrono::NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
        .into();
    let mut headers = HeaderMap::new();
    for name in &signed {
        if matches!(*name, "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let v = r.headers.get(*name).unwrap();
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    let uri: Uri = format!("http://{}{}", r.header("host").unwrap(), r.path)
        .parse()
        .unwrap();
    let method = Method::from_bytes(r.method.as_bytes()).unwrap();
    sign_headers(
        &method,
        &uri,
        &mut headers,
        &sha256_hex(r.body.as_bytes()),
        &SigningParams {
            access_key_id: key_id,
            secret_access_key: secret,
            session_token: r.header("x-amz-security-token"),
            region,
            service: "sts",
            time,
        },
    );
    assert_eq!(
        headers.get("authorization").unwrap().to_str().unwrap(),
        auth,
        "the signature does not verify"
    );
}

#[tokio::test]
async fn assume_role_is_signed_and_carries_the_profile_settings() {
    let sts = double(Arc::new(|_, _| {
        sts_ok("AssumeRole", "ASIAADMIN", Duration::from_secs(3600))
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_with(dir.path(), &[]);
    let p = resolve(Some("admin"), &opts(&sts), &env).unwrap();
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAADMIN");
    assert_eq!(c.access_key_secret, "secret-of-ASIAADMIN");
    assert_eq!(c.security_token.as_deref(), Some("token-of-ASIAADMIN"));
    // Cached: a second ask does not call STS.
    p.credentials().await.unwrap();
    let reqs = sts.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    let want = [
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", "arn:aws:iam::123456789012:role/admin"),
        ("RoleSessionName", "relay"),
        ("ExternalId", "ext-123"),
        ("DurationSeconds", "1800"),
    ];
    for (k, v) in want {
        assert_eq!(r.field(k).as_deref(), Some(v), "{k} in {}", r.body);
    }
    // Signed with the source profile's keys (and its session token), in the role profile's
    // region.
    assert!(r
        .header("authorization")
        .unwrap()
        .contains("Credential=AKIADEVEXAMPLE/"));
    assert_eq!(r.header("x-amz-security-token"), Some("dev-session-token"));
    verify_sigv4(r, "dev-secret-key", "eu-central-1");
    // Nothing secret in the provider's Debug or name.
    let dbg = format!("{p:?} {}", p.name());
    assert!(
        !dbg.contains("secret") && !dbg.contains("token-of"),
        "{dbg}"
    );
}

#[tokio::test]
async fn chained_roles_sign_with_the_previous_role_keys() {
    let sts = double(Arc::new(|n, _| {
        sts_ok(
            "AssumeRole",
            &format!("ASIAHOP{n}"),
            Duration::from_secs(3600),
        )
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_with(dir.path(), &[("AWS_REGION", "us-west-2".into())]);
    let p = resolve(Some("second"), &opts(&sts), &env).unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAHOP1");
    let reqs = sts.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[0].field("RoleArn").as_deref(),
        Some("arn:aws:iam::123456789012:role/admin")
    );
    assert_eq!(
        reqs[1].field("RoleArn").as_deref(),
        Some("arn:aws:iam::210987654321:role/second")
    );
    assert_eq!(reqs[1].field("RoleSessionName").as_deref(), Some("hop2"));
    assert_eq!(reqs[1].field("ExternalId"), None);
    assert_eq!(reqs[1].field("DurationSeconds"), None);
    // AWS_REGION wins over the profile's region for STS.
    verify_sigv4(&reqs[0], "dev-secret-key", "us-west-2");
    assert!(reqs[1]
        .header("authorization")
        .unwrap()
        .contains("Credential=ASIAHOP0/"));
    assert_eq!(
        reqs[1].header("x-amz-security-token"),
        Some("token-of-ASIAHOP0")
    );
    verify_sigv4(&reqs[1], "secret-of-ASIAHOP0", "us-west-2");
}

#[tokio::test]
async fn assume_role_is_called_again_before_expiry() {
    // Three-second credentials: refreshed once a third of their life is left.
    let sts = double(Arc::new(|n, _| {
        sts_ok("AssumeRole", &format!("ASIAGEN{n}"), Duration::from_secs(3))
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_with(dir.path(), &[]);
    let p = resolve(Some("admin"), &opts(&sts), &env).unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAGEN0");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAGEN0");
    assert_eq!(sts.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAGEN1");
    assert!(c.expiration.unwrap() > SystemTime::now() + Duration::from_secs(2));
    assert_eq!(sts.requests().len(), 2);
    verify_sigv4(&sts.requests()[1], "dev-secret-key", "eu-central-1");
}

#[tokio::test]
async fn web_identity_sends_the_file_token_unsigned_and_rereads_it() {
    let sts = double(Arc::new(|n, _| {
        sts_ok(
            "AssumeRoleWithWebIdentity",
            &format!("ASIAWEB{n}"),
            Duration::from_secs(3),
        )
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJ.first-token.sig\n").unwrap();
    let env = env_with(
        dir.path(),
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.to_str().unwrap().into(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pod".into()),
            ("AWS_ROLE_SESSION_NAME", "pod-7f9c".into()),
            ("AWS_ENDPOINT_URL_STS", sts.url()),
            ("AWS_REGION", "eu-west-1".into()),
        ],
    );
    let o = AwsCredentialOptions {
        sts_retry: Some(fast_retry()),
        ..Default::default()
    };
    let p = resolve(None, &o, &env).unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAWEB0");
    // The platform rotates the token; the next refresh must send the new one.
    std::fs::write(&token, "eyJ.second-token.sig").unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAWEB1");
    let reqs = sts.requests();
    assert_eq!(reqs.len(), 2);
    for (r, tok) in reqs
        .iter()
        .zip(["eyJ.first-token.sig", "eyJ.second-token.sig"])
    {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("authorization"), None, "must be unsigned");
        assert_eq!(
            r.field("Action").as_deref(),
            Some("AssumeRoleWithWebIdentity")
        );
        assert_eq!(r.field("Version").as_deref(), Some("2011-06-15"));
        assert_eq!(
            r.field("RoleArn").as_deref(),
            Some("arn:aws:iam::123456789012:role/pod")
        );
        assert_eq!(r.field("RoleSessionName").as_deref(), Some("pod-7f9c"));
        assert_eq!(r.field("WebIdentityToken").as_deref(), Some(tok));
    }
    assert!(!format!("{p:?}").contains("token.sig"));
}

#[tokio::test]
async fn sts_errors_name_the_role_and_next_step() {
    let sts = double(Arc::new(|_, r: &Recorded| {
        match r.field("Action").as_deref() {
            Some("AssumeRoleWithWebIdentity") => sts_error(
                400,
                "InvalidIdentityToken",
                "No OpenIDConnect provider found in your account for https://oidc.example eyJ.secret-token.sig",
            ),
            _ => sts_error(
                403,
                "AccessDenied",
                "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: sts:AssumeRole",
            ),
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_with(dir.path(), &[]);
    let p = resolve(Some("admin"), &opts(&sts), &env).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(matches!(e, CredentialsError::Invalid { .. }), "{e}");
    let msg = e.to_string();
    for want in [
        "arn:aws:iam::123456789012:role/admin",
        "AccessDenied",
        "not authorized",
        "trust policy",
        "err-req-1",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert!(
        !msg.contains('\n') && !msg.contains("dev-secret-key"),
        "{msg}"
    );
    // Final errors are not retried.
    assert_eq!(sts.requests().len(), 1);

    let token = dir.path().join("token");
    std::fs::write(&token, "eyJ.secret-token.sig").unwrap();
    let env = env_with(
        dir.path(),
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token.to_str().unwrap().into(),
            ),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/pod".into()),
        ],
    );
    let p = resolve(None, &opts(&sts), &env).unwrap();
    let msg = p.credentials().await.unwrap_err().to_string();
    assert!(msg.contains("InvalidIdentityToken"), "{msg}");
    assert!(msg.contains("arn:aws:iam::123456789012:role/pod"), "{msg}");
    assert!(msg.contains("IAM OIDC provider"), "{msg}");
    assert!(!msg.contains("eyJ.secret-token.sig"), "token leaked: {msg}");
}

#[tokio::test]
async fn throttling_is_retried_by_the_transport_rule() {
    let sts = double(Arc::new(|n, _| {
        if n == 0 {
            sts_error(400, "Throttling", "Rate exceeded")
        } else {
            sts_ok("AssumeRole", "ASIAAFTER", Duration::from_secs(3600))
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let p = resolve(Some("admin"), &opts(&sts), &env_with(dir.path(), &[])).unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAAFTER");
    let reqs = sts.requests();
    assert_eq!(reqs.len(), 2);
    // Signed anew for the second attempt (each verifies on its own).
    verify_sigv4(&reqs[1], "dev-secret-key", "eu-central-1");

    let down = double(Arc::new(|_, _| {
        sts_error(
            403,
            "RegionDisabledException",
            "STS is not activated in this region",
        )
    }))
    .await;
    let p = resolve(Some("admin"), &opts(&down), &env_with(dir.path(), &[])).unwrap();
    let msg = p.credentials().await.unwrap_err().to_string();
    assert!(
        msg.contains("not activated in region eu-central-1"),
        "{msg}"
    );
    assert_eq!(down.requests().len(), 1);
}

/// An IMDS double: tokens `tok-N`, role `relay-role`, credentials valid for `ttl`; `reject`
/// lists tokens answered with 401, `put_status` replaces the token answer.
fn imds_handler(
    ttl: Duration,
    reject: &'static [&'static str],
    put_status: Option<u16>,
) -> Handler {
    let puts = Arc::new(Mutex::new(0usize));
    Arc::new(move |n, r: &Recorded| {
        if r.method == "PUT" && r.path == "/latest/api/token" {
            if let Some(s) = put_status {
                return reply(s, "");
            }
            assert_eq!(
                r.header("x-aws-ec2-metadata-token-ttl-seconds"),
                Some("21600")
            );
            let mut p = puts.lock().unwrap();
            *p += 1;
            return reply(200, format!("tok-{p}"));
        }
        if let Some(t) = r.header("x-aws-ec2-metadata-token") {
            if reject.contains(&t) {
                return reply(401, "");
            }
        } else if put_status.is_none() {
            return reply(401, "");
        }
        match r.path.as_str() {
            "/latest/meta-data/iam/security-credentials/" => reply(200, "relay-role\n"),
            "/latest/meta-data/iam/security-credentials/relay-role" => reply(
                200,
                format!(
                    r#"{{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAIMDS{n}","SecretAccessKey":"imds-secret-{n}","Token":"imds-token-{n}","Expiration":"{}"}}"#,
                    expiry_in(ttl)
                ),
            ),
            _ => reply(404, ""),
        }
    })
}

fn imds_env(dir: &Path, imds: &Double, extra: &[(&str, String)]) -> EnvLookup {
    let mut v = vec![
        ("AWS_EC2_METADATA_DISABLED", "false".to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url()),
        ("HOME", dir.to_str().unwrap().to_string()),
    ];
    v.extend(extra.iter().map(|(k, s)| (*k, s.clone())));
    // No files: the chain falls through to the instance role.
    let mut env = env_with(dir, &v);
    let config = dir.join("empty");
    std::fs::write(&config, "").unwrap();
    let c = config.to_str().unwrap().to_string();
    let inner = env.clone();
    env = EnvLookup::from_fn(move |k| match k {
        "AWS_CONFIG_FILE" | "AWS_SHARED_CREDENTIALS_FILE" => Some(c.clone()),
        _ => inner.get(k),
    });
    env
}

#[tokio::test]
async fn imds_v2_token_flow_and_refresh() {
    let imds = double(imds_handler(Duration::from_secs(3), &[], None)).await;
    let dir = tempfile::tempdir().unwrap();
    let env = imds_env(dir.path(), &imds, &[]);
    let p = resolve(None, &AwsCredentialOptions::default(), &env).unwrap();
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAIMDS2");
    assert_eq!(c.access_key_secret, "imds-secret-2");
    assert_eq!(c.security_token.as_deref(), Some("imds-token-2"));
    let reqs = imds.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/meta-data/iam/security-credentials/"),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/relay-role"
            ),
        ]
    );
    assert_eq!(reqs[1].header("x-aws-ec2-metadata-token"), Some("tok-1"));
    assert_eq!(reqs[2].header("x-aws-ec2-metadata-token"), Some("tok-1"));
    // Expiry-driven refresh re-reads the credentials with the same (still valid) token.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAIMDS4");
    let reqs = imds.requests();
    assert_eq!(reqs.len(), 5);
    assert!(reqs[3..]
        .iter()
        .all(|r| r.method == "GET" && r.header("x-aws-ec2-metadata-token") == Some("tok-1")));
    assert!(!format!("{p:?}").contains("imds-secret"));
}

#[tokio::test]
async fn imds_401_fetches_a_new_token() {
    let imds = double(imds_handler(Duration::from_secs(3600), &["tok-1"], None)).await;
    let dir = tempfile::tempdir().unwrap();
    let env = imds_env(dir.path(), &imds, &[]);
    let p = resolve(None, &AwsCredentialOptions::default(), &env).unwrap();
    p.credentials().await.unwrap();
    let reqs = imds.requests();
    let puts = reqs.iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 2, "{reqs:?}");
    assert_eq!(reqs[1].header("x-aws-ec2-metadata-token"), Some("tok-1"));
    assert_eq!(reqs[3].header("x-aws-ec2-metadata-token"), Some("tok-2"));
    assert_eq!(
        reqs.last().unwrap().header("x-aws-ec2-metadata-token"),
        Some("tok-2")
    );
}

#[tokio::test]
async fn imds_v1_fallback_only_when_allowed() {
    let imds = double(imds_handler(Duration::from_secs(3600), &[], Some(403))).await;
    let dir = tempfile::tempdir().unwrap();
    let env = imds_env(dir.path(), &imds, &[]);
    let p = resolve(None, &AwsCredentialOptions::default(), &env).unwrap();
    let c = p.credentials().await.unwrap();
    assert!(c.access_key_id.starts_with("ASIAIMDS"));
    let reqs = imds.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[1..]
        .iter()
        .all(|r| r.header("x-aws-ec2-metadata-token").is_none()));

    let env = imds_env(
        dir.path(),
        &imds,
        &[("AWS_EC2_METADATA_V1_DISABLED", "true".into())],
    );
    let p = resolve(None, &AwsCredentialOptions::default(), &env).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(matches!(e, CredentialsError::AwsNotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("AWS_EC2_METADATA_V1_DISABLED=true forbids"),
        "{msg}"
    );
    assert!(
        msg.contains("env:") && msg.contains("web identity:"),
        "{msg}"
    );
}

#[tokio::test]
async fn imds_without_a_role_says_so() {
    let imds = double(Arc::new(|_, r: &Recorded| {
        if r.method == "PUT" {
            reply(200, "tok")
        } else {
            reply(404, "")
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = imds_env(dir.path(), &imds, &[]);
    let p = resolve(None, &AwsCredentialOptions::default(), &env).unwrap();
    let msg = p.credentials().await.unwrap_err().to_string();
    assert!(msg.contains("no IAM role is attached"), "{msg}");
}

#[tokio::test]
async fn imds_token_is_renewed_when_its_ttl_runs_out() {
    use ossrelay::credentials::aws::imds::ImdsProvider;
    use ossrelay::credentials::CredentialsProvider;
    let imds = double(Arc::new(|n, r: &Recorded| {
        if r.method == "PUT" {
            return reply(200, format!("tok-{n}"));
        }
        match r.path.as_str() {
            "/latest/meta-data/iam/security-credentials/" => reply(200, "relay-role"),
            _ => reply(
                200,
                format!(
                    r#"{{"Code":"Success","AccessKeyId":"ASIA{n}","SecretAccessKey":"s","Token":"t","Expiration":"{}"}}"#,
                    expiry_in(Duration::from_secs(3600))
                ),
            ),
        }
    }))
    .await;
    let env = EnvLookup::from_map([("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())]);
    // A 2 s token is kept for 1.5 s (a quarter of its life is the renewal margin).
    let p = ImdsProvider::new(&env).with_token_ttl(Duration::from_secs(2));
    p.credentials().await.unwrap();
    p.credentials().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    p.credentials().await.unwrap();
    let reqs = imds.requests();
    let puts: Vec<_> = reqs.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 2, "{reqs:?}");
    assert_eq!(
        puts[0].header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("2")
    );
    let tokens: Vec<_> = reqs
        .iter()
        .filter_map(|r| r.header("x-aws-ec2-metadata-token"))
        .collect();
    assert_eq!(
        tokens,
        ["tok-0", "tok-0", "tok-0", "tok-0", "tok-5", "tok-5"]
    );
}
