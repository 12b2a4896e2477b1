//! Credential providers against tiny in-process stand-ins for STS AssumeRole and the ECS
//! metadata service. The STS double verifies every RPC V1 signature with its own
//! implementation of the algorithm, checks nonces and tokens, and counts calls.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use ossrelay::acs::{RetryPolicy, RpcClient, StsClient};
use ossrelay::credentials::chain::{default_chain_with, from_profile_with};
use ossrelay::credentials::imds::EcsRamRoleProvider;
use ossrelay::credentials::sts::{AssumeRoleProvider, AssumeRoleSpec};
use ossrelay::credentials::{
    Credentials, CredentialsError, CredentialsProvider, EnvLookup, StaticProvider,
};

// ---------------------------------------------------------------------------------------------
// A minimal HTTP server

struct Req {
    method: String,
    path: String,
    query: String,
    headers: http::HeaderMap,
    body: String,
}

type Handler = Arc<dyn Fn(Req) -> (u16, String) + Send + Sync>;

/// Serves `handler` on 127.0.0.1 until the test's runtime ends; returns the base URL.
async fn serve(handler: Handler) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let h = h.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let (status, text) = h(Req {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            query: parts.uri.query().unwrap_or("").to_string(),
                            headers: parts.headers,
                            body: String::from_utf8(body.to_vec()).unwrap(),
                        });
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn expiration_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// RPC V1 verification, written independently of the client's signer

const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

fn decode_pairs(s: &str, plus_is_space: bool) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |x: &str| {
                let x = if plus_is_space {
                    x.replace('+', " ")
                } else {
                    x.to_string()
                };
                percent_decode_str(&x).decode_utf8().unwrap().into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn expected_signature(method: &str, params: &[(String, String)], secret: &str) -> String {
    let mut enc_pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (enc(k), enc(v)))
        .collect();
    enc_pairs.sort();
    let canonical = enc_pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let sts = format!("{method}&%2F&{}", enc(&canonical));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(sts.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// STS double

#[derive(Default)]
struct Sts {
    /// AccessKeyId → (secret, required token).
    keys: HashMap<String, (String, Option<String>)>,
    nonces: HashSet<String>,
    ttl_secs: i64,
    throttle_next: usize,
    /// (received at, issued key id, its expiration, form params)
    calls: Vec<(Instant, String, SystemTime, HashMap<String, String>)>,
    rejected: Vec<String>,
}

fn sts_error(status: u16, code: &str, msg: &str) -> (u16, String) {
    (
        status,
        serde_json::json!({"RequestId": "REQ-1", "HostId": "sts.aliyuncs.com", "Code": code, "Message": msg, "Recommend": "https://api.aliyun.com/troubleshoot?q=x"}).to_string(),
    )
}

fn sts_handler(state: Arc<Mutex<Sts>>) -> Handler {
    Arc::new(move |req: Req| {
        let mut s = state.lock().unwrap();
        let query = decode_pairs(&req.query, false);
        let form = decode_pairs(&req.body, true);
        let all: Vec<(String, String)> = query.iter().chain(form.iter()).cloned().collect();
        let get = |k: &str| all.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        let reject = |s: &mut Sts, why: &str, resp: (u16, String)| {
            s.rejected.push(why.to_string());
            resp
        };
        if req.method != "POST" || req.path != "/" {
            return reject(
                &mut s,
                "method",
                sts_error(404, "InvalidAction.NotFound", "x"),
            );
        }
        let action = get("Action").unwrap_or_default();
        if action != "AssumeRole" && action != "GetCallerIdentity" {
            return reject(
                &mut s,
                "action",
                sts_error(404, "InvalidAction.NotFound", "x"),
            );
        }
        for (k, v) in [
            ("Version", "2015-04-01"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
        ] {
            if get(k).as_deref() != Some(v) {
                return reject(&mut s, k, sts_error(400, "MissingParameter", k));
            }
        }
        // Action parameters travel in the form body, common ones in the query.
        if action == "AssumeRole"
            && (query.iter().any(|(k, _)| k == "RoleArn")
                || !form.iter().any(|(k, _)| k == "RoleArn"))
        {
            return reject(
                &mut s,
                "layout",
                sts_error(400, "MissingParameter", "RoleArn"),
            );
        }
        let ts = get("Timestamp").unwrap_or_default();
        let ts_ok = chrono::DateTime::parse_from_rfc3339(&ts)
            .map(|t| (chrono::Utc::now() - t.to_utc()).num_seconds().abs() < 300)
            .unwrap_or(false);
        if !ts_ok || !ts.ends_with('Z') {
            return reject(
                &mut s,
                "timestamp",
                sts_error(400, "InvalidTimeStamp.Format", &ts),
            );
        }
        let nonce = get("SignatureNonce").unwrap_or_default();
        if nonce.is_empty() || !s.nonces.insert(nonce) {
            return reject(&mut s, "nonce", sts_error(400, "SignatureNonceUsed", "x"));
        }
        let key_id = get("AccessKeyId").unwrap_or_default();
        let Some((secret, token)) = s.keys.get(&key_id).cloned() else {
            return reject(
                &mut s,
                "key",
                sts_error(
                    404,
                    "InvalidAccessKeyId.NotFound",
                    "Specified access key is not found.",
                ),
            );
        };
        if get("SecurityToken") != token {
            return reject(
                &mut s,
                "token",
                sts_error(400, "InvalidSecurityToken.MismatchWithAccessKey", "x"),
            );
        }
        if get("Signature") != Some(expected_signature("POST", &all, &secret)) {
            return reject(
                &mut s,
                "signature",
                sts_error(
                    400,
                    "SignatureDoesNotMatch",
                    "Specified signature is not matched with our calculation.",
                ),
            );
        }
        if action == "GetCallerIdentity" {
            let (arn, kind) = if key_id.starts_with("STS.") {
                ("acs:ram::2:assumed-role/second/two", "AssumedRoleUser")
            } else {
                ("acs:ram::1:user/relay", "RAMUser")
            };
            return (
                200,
                serde_json::json!({"RequestId": "REQ-ID", "AccountId": if kind == "RAMUser" { "1" } else { "2" }, "Arn": arn, "IdentityType": kind, "PrincipalId": "p", "UserId": "u", "RoleId": ""}).to_string(),
            );
        }
        if get("RoleArn").as_deref() == Some("acs:ram::1:role/denied") {
            return sts_error(
                403,
                "NoPermission",
                "You are not authorized to do this action.",
            );
        }
        if s.throttle_next > 0 {
            s.throttle_next -= 1;
            return sts_error(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            );
        }
        let n = s.calls.len() + 1;
        let (id, sec, tok) = (
            format!("STS.issued{n}"),
            format!("sts-secret-{n}"),
            format!("sts-token-{n}"),
        );
        let exp = expiration_in(s.ttl_secs);
        let exp_time = SystemTime::from(chrono::DateTime::parse_from_rfc3339(&exp).unwrap());
        s.keys.insert(id.clone(), (sec.clone(), Some(tok.clone())));
        s.calls.push((
            Instant::now(),
            id.clone(),
            exp_time,
            form.into_iter().collect(),
        ));
        (
            200,
            serde_json::json!({
                "RequestId": format!("REQ-{n}"),
                "AssumedRoleUser": {"Arn": "acs:ram::1:role/x/s", "AssumedRoleId": "1:s"},
                "Credentials": {"AccessKeyId": id, "AccessKeySecret": sec, "SecurityToken": tok, "Expiration": exp},
                "SourceIdentity": ""
            })
            .to_string(),
        )
    })
}

async fn sts_double(ttl_secs: i64) -> (String, Arc<Mutex<Sts>>) {
    let mut s = Sts {
        ttl_secs,
        ..Default::default()
    };
    s.keys
        .insert("LTAIbase".into(), ("base-secret+/=".into(), None));
    let state = Arc::new(Mutex::new(s));
    (serve(sts_handler(state.clone())).await, state)
}

fn base() -> Arc<dyn CredentialsProvider> {
    Arc::new(StaticProvider(Credentials::new(
        "LTAIbase",
        "base-secret+/=",
    )))
}

fn no_env() -> EnvLookup {
    EnvLookup::from_map(Vec::<(String, String)>::new())
}

fn role(url: &str, arn: &str) -> AssumeRoleSpec {
    AssumeRoleSpec {
        role_arn: arn.into(),
        session_name: Some("relay-test".into()),
        duration_seconds: Some(900),
        sts_endpoint: Some(url.into()),
        ..Default::default()
    }
}

fn fast_client() -> RpcClient {
    RpcClient::new()
        .with_retry(RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        })
        .with_timeout(Duration::from_secs(5))
}

// ---------------------------------------------------------------------------------------------
// STS tests

#[tokio::test]
async fn assume_role_rotates_and_refreshes_before_expiry() {
    let (url, state) = sts_double(3).await;
    let p = AssumeRoleProvider::new(
        base(),
        &role(&url, "acs:ram::1234:role/migrator"),
        &no_env(),
    )
    .unwrap()
    .with_client(fast_client())
    .cached();

    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while started.elapsed() < Duration::from_millis(5200) {
        let c = p.credentials().await.unwrap();
        let exp = c.expiration.expect("STS credentials expire");
        assert!(exp > SystemTime::now(), "served expired credentials");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("sts-secret") && !dbg.contains("sts-token"),
            "{dbg}"
        );
        if seen.last() != Some(&c.access_key_id) {
            seen.push(c.access_key_id.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let s = state.lock().unwrap();
    assert!(s.rejected.is_empty(), "rejected: {:?}", s.rejected);
    // 3 s credentials are refreshed every ~2 s: rotation happened, without extra calls.
    assert!(seen.len() >= 2, "no rotation: {seen:?}");
    assert_eq!(seen.len(), s.calls.len(), "{seen:?}");
    let issued: Vec<&String> = s.calls.iter().map(|c| &c.1).collect();
    assert_eq!(issued, seen.iter().collect::<Vec<_>>());
    // Each refresh happened while the previous credentials were still valid.
    let t0 = SystemTime::now() - started.elapsed();
    for w in s.calls.windows(2) {
        let refreshed_at = t0 + w[1].0.duration_since(started);
        assert!(refreshed_at < w[0].2, "refresh came after expiry");
    }
    let form = &s.calls[0].3;
    assert_eq!(form["RoleArn"], "acs:ram::1234:role/migrator");
    assert_eq!(form["RoleSessionName"], "relay-test");
    assert_eq!(form["DurationSeconds"], "900");
}

#[tokio::test]
async fn assume_role_retries_throttling_with_fresh_signatures() {
    let (url, state) = sts_double(3600).await;
    state.lock().unwrap().throttle_next = 2;
    let p = AssumeRoleProvider::new(base(), &role(&url, "acs:ram::1:role/x"), &no_env())
        .unwrap()
        .with_client(fast_client());
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "STS.issued1");
    let s = state.lock().unwrap();
    // Three distinct nonces were accepted (a reused nonce would have been rejected).
    assert_eq!(s.nonces.len(), 3);
    assert!(s.rejected.is_empty(), "{:?}", s.rejected);
}

#[tokio::test]
async fn assume_role_errors_are_typed_and_secret_free() {
    let (url, state) = sts_double(3600).await;
    let p = AssumeRoleProvider::new(base(), &role(&url, "acs:ram::1:role/denied"), &no_env())
        .unwrap()
        .with_client(fast_client());
    let err = p.credentials().await.unwrap_err();
    assert!(matches!(err, CredentialsError::Refresh { .. }), "{err}");
    let msg = format!("{err} {err:?} {p:?}");
    assert!(msg.contains("NoPermission"), "{msg}");
    assert!(msg.contains("REQ-1"), "{msg}");
    assert!(!msg.contains("base-secret"), "{msg}");
    // Permission errors are not retried.
    assert_eq!(state.lock().unwrap().nonces.len(), 1);

    // A wrong base secret is caught by the double's signature check.
    let wrong: Arc<dyn CredentialsProvider> =
        Arc::new(StaticProvider(Credentials::new("LTAIbase", "wrong")));
    let p = AssumeRoleProvider::new(wrong, &role(&url, "acs:ram::1:role/x"), &no_env())
        .unwrap()
        .with_client(fast_client());
    let msg = p.credentials().await.unwrap_err().to_string();
    assert!(msg.contains("SignatureDoesNotMatch"), "{msg}");
    assert!(!msg.contains("wrong"), "{msg}");
}

#[tokio::test]
async fn chainable_role_signs_with_the_source_role_token() {
    let (url, state) = sts_double(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"current":"hop2","profiles":[
            {"name":"base","mode":"AK","access_key_id":"LTAIbase","access_key_secret":"base-secret+/="},
            {"name":"hop1","mode":"ChainableRamRoleArn","source_profile":"base","ram_role_arn":"acs:ram::1:role/first","ram_session_name":"one"},
            {"name":"hop2","mode":"ChainableRamRoleArn","source_profile":"hop1","ram_role_arn":"acs:ram::2:role/second","ram_session_name":"two","region_id":"eu-central-1"},
            {"name":"rra","mode":"RamRoleArn","access_key_id":"LTAIbase","access_key_secret":"base-secret+/=","ram_role_arn":"acs:ram::3:role/third","expired_seconds":1200}
        ]}"#,
    )
    .unwrap();
    let env = EnvLookup::from_map([
        ("ALIBABA_CLOUD_CONFIG_FILE", config.to_str().unwrap()),
        ("ALIBABA_CLOUD_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("ALIBABA_CLOUD_STS_ENDPOINT", url.as_str()),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
    ]);

    // The default chain picks `current` = hop2: base → first → second.
    let chain = default_chain_with(env.clone());
    let c = chain.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "STS.issued2");
    assert_eq!(c.security_token.as_deref(), Some("sts-token-2"));
    {
        let s = state.lock().unwrap();
        assert!(s.rejected.is_empty(), "{:?}", s.rejected);
        assert_eq!(s.calls[0].3["RoleArn"], "acs:ram::1:role/first");
        assert_eq!(s.calls[1].3["RoleArn"], "acs:ram::2:role/second");
        assert_eq!(s.calls[1].3["RoleSessionName"], "two");
    }
    // Cached: no further STS calls.
    chain.credentials().await.unwrap();
    assert_eq!(state.lock().unwrap().calls.len(), 2);

    let rra = from_profile_with("rra", &env).unwrap();
    assert_eq!(
        rra.credentials().await.unwrap().access_key_id,
        "STS.issued3"
    );
    let s = state.lock().unwrap();
    assert_eq!(s.calls[2].3["DurationSeconds"], "1200");
    assert_eq!(s.calls[2].3["RoleArn"], "acs:ram::3:role/third");
}

#[tokio::test]
async fn get_caller_identity_for_keys_and_assumed_roles() {
    let (url, state) = sts_double(3600).await;
    let sts = StsClient::new(&url).with_rpc(fast_client());
    let me = sts.get_caller_identity(base().as_ref()).await.unwrap();
    assert_eq!(
        (me.account_id.as_str(), me.identity_type.as_str()),
        ("1", "RAMUser")
    );
    let assumed = AssumeRoleProvider::new(base(), &role(&url, "acs:ram::2:role/second"), &no_env())
        .unwrap()
        .with_client(fast_client())
        .cached();
    let them = sts.get_caller_identity(&assumed).await.unwrap();
    assert_eq!(them.account_id, "2");
    assert_eq!(them.identity_type, "AssumedRoleUser");
    // The second call was signed with the STS key and its token, and the double verified both.
    assert!(state.lock().unwrap().rejected.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Metadata service double

#[derive(Default)]
struct Imds {
    v2: bool,
    ttl_secs: i64,
    code: String,
    token_puts: usize,
    discoveries: usize,
    fetches: usize,
    /// Token header value seen on each GET.
    get_tokens: Vec<Option<String>>,
    bad_ttl_header: bool,
}

const TOKEN: &str = "imds-token-xyz";

fn imds_handler(state: Arc<Mutex<Imds>>) -> Handler {
    Arc::new(move |req: Req| {
        let mut s = state.lock().unwrap();
        let token = req
            .headers
            .get("x-aliyun-ecs-metadata-token")
            .map(|v| v.to_str().unwrap().to_string());
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                s.token_puts += 1;
                if req
                    .headers
                    .get("x-aliyun-ecs-metadata-token-ttl-seconds")
                    .and_then(|v| v.to_str().ok())
                    != Some("21600")
                {
                    s.bad_ttl_header = true;
                }
                if s.v2 {
                    (200, TOKEN.into())
                } else {
                    (403, "forbidden".into())
                }
            }
            ("GET", path) if path.starts_with("/latest/meta-data/ram/security-credentials/") => {
                s.get_tokens.push(token.clone());
                if s.v2 && token.as_deref() != Some(TOKEN) {
                    return (401, "token required".into());
                }
                let role = &path["/latest/meta-data/ram/security-credentials/".len()..];
                if role.is_empty() {
                    s.discoveries += 1;
                    return (200, "relay-role\n".into());
                }
                if role != "relay-role" {
                    return (404, "not found".into());
                }
                s.fetches += 1;
                let n = s.fetches;
                (
                    200,
                    serde_json::json!({
                        "AccessKeyId": format!("STS.imds{n}"),
                        "AccessKeySecret": format!("imds-secret-{n}"),
                        "SecurityToken": format!("imds-token-{n}"),
                        "Expiration": expiration_in(s.ttl_secs),
                        "LastUpdated": expiration_in(0),
                        "Code": s.code,
                    })
                    .to_string(),
                )
            }
            _ => (404, "not found".into()),
        }
    })
}

async fn imds_double(v2: bool, ttl_secs: i64) -> (String, Arc<Mutex<Imds>>) {
    let state = Arc::new(Mutex::new(Imds {
        v2,
        ttl_secs,
        code: "Success".into(),
        ..Default::default()
    }));
    (serve(imds_handler(state.clone())).await, state)
}

#[tokio::test]
async fn imds_v2_token_flow_with_rotation() {
    let (url, state) = imds_double(true, 4).await;
    let p = EcsRamRoleProvider::new(None, &no_env())
        .with_endpoint(&url)
        .cached();
    let first = p.credentials().await.unwrap();
    assert_eq!(first.access_key_id, "STS.imds1");
    assert_eq!(first.security_token.as_deref(), Some("imds-token-1"));
    assert_eq!(p.credentials().await.unwrap().access_key_id, "STS.imds1");
    // Expiration has whole seconds, so the lifetime is 3-4 s and the margin a third of it:
    // 2.8 s in, the first credentials are inside the margin but not yet expired.
    tokio::time::sleep(Duration::from_millis(2800)).await;
    let asked_at = SystemTime::now();
    let second = p.credentials().await.unwrap();
    assert_eq!(second.access_key_id, "STS.imds2");
    assert!(
        first.expiration.unwrap() > asked_at,
        "refresh came after expiry"
    );

    let s = state.lock().unwrap();
    assert_eq!(s.fetches, 2);
    assert_eq!(s.token_puts, 2);
    assert_eq!(s.discoveries, 1, "role name is discovered once");
    assert!(!s.bad_ttl_header);
    assert!(s.get_tokens.iter().all(|t| t.as_deref() == Some(TOKEN)));
    let dbg = format!("{first:?} {p:?}", p = p.inner());
    assert!(
        !dbg.contains("imds-secret") && !dbg.contains("imds-token-1"),
        "{dbg}"
    );
}

#[tokio::test]
async fn imds_falls_back_to_v1_unless_disabled() {
    let (url, state) = imds_double(false, 3600).await;
    let env = EnvLookup::from_map([("OSSRELAY_IMDS_ENDPOINT", url.as_str())]);
    let p = EcsRamRoleProvider::new(Some("relay-role".into()), &env);
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "STS.imds1");
    {
        let s = state.lock().unwrap();
        assert_eq!(s.token_puts, 1);
        assert_eq!(s.discoveries, 0, "configured role name: no discovery");
        assert_eq!(s.get_tokens, vec![None]);
    }

    let env = EnvLookup::from_map([
        ("OSSRELAY_IMDS_ENDPOINT", url.as_str()),
        ("ALIBABA_CLOUD_IMDSV1_DISABLED", "true"),
    ]);
    let msg = EcsRamRoleProvider::new(None, &env)
        .credentials()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("HTTP 403") && msg.contains("ALIBABA_CLOUD_IMDSV1_DISABLED"),
        "{msg}"
    );
    assert_eq!(state.lock().unwrap().fetches, 1);
}

#[tokio::test]
async fn imds_rejects_bad_answers() {
    let (url, state) = imds_double(true, 3600).await;
    state.lock().unwrap().code = "Failed".into();
    let p = EcsRamRoleProvider::new(None, &no_env()).with_endpoint(&url);
    let msg = p.credentials().await.unwrap_err().to_string();
    assert!(msg.contains("Code \"Failed\""), "{msg}");

    let p = EcsRamRoleProvider::new(Some("other-role".into()), &no_env()).with_endpoint(&url);
    let msg = p.credentials().await.unwrap_err().to_string();
    assert!(msg.contains("\"other-role\" is not attached"), "{msg}");
}

#[tokio::test]
async fn default_chain_falls_through_to_instance_role() {
    let (url, state) = imds_double(true, 3600).await;
    let env = EnvLookup::from_map([
        ("ALIBABA_CLOUD_CONFIG_FILE", "/nonexistent/config.json"),
        ("ALIBABA_CLOUD_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("OSSRELAY_IMDS_ENDPOINT", url.as_str()),
    ]);
    let chain = default_chain_with(env);
    assert_eq!(
        chain.credentials().await.unwrap().access_key_id,
        "STS.imds1"
    );
    assert_eq!(chain.name(), "imds");
    // The winner is reused, with its cache: no second fetch.
    assert_eq!(
        chain.credentials().await.unwrap().access_key_id,
        "STS.imds1"
    );
    assert_eq!(state.lock().unwrap().fetches, 1);
}

// ---------------------------------------------------------------------------------------------
// Generic RPC behaviour

#[tokio::test]
async fn rpc_retries_5xx_and_treats_code_on_200_as_error() {
    let hits = Arc::new(Mutex::new(Vec::<String>::new()));
    let h = hits.clone();
    let url = serve(Arc::new(move |req: Req| {
        let mut hits = h.lock().unwrap();
        let params = decode_pairs(&req.query, false);
        let action = params
            .iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let sig_ok = params
            .iter()
            .find(|(k, _)| k == "Signature")
            .map(|(_, v)| v.clone())
            == Some(expected_signature(&req.method, &params, "base-secret+/="));
        hits.push(format!("{} {action} sig_ok={sig_ok}", req.method));
        match (action.as_str(), hits.len()) {
            ("DescribeTasks", 1) => (
                503,
                r#"{"RequestId":"R1","Code":"ServiceUnavailable","Message":"busy"}"#.into(),
            ),
            ("DescribeTasks", _) => (200, r#"{"RequestId":"R2","TaskSet":{"Task":[]}}"#.into()),
            _ => (
                200,
                r#"{"RequestId":"R3","Code":"Forbidden.RAM","Message":"User not authorized"}"#
                    .into(),
            ),
        }
    }))
    .await;
    let rpc = fast_client();
    let req = ossrelay::acs::RpcRequest::new(&url, "2014-05-26", "DescribeTasks")
        .get()
        .param("RegionId", "cn-hangzhou");
    let doc = rpc.call(base().as_ref(), &req).await.unwrap();
    assert_eq!(doc["RequestId"], "R2");

    let req = ossrelay::acs::RpcRequest::new(&url, "2014-05-26", "ExportImage");
    let err = rpc.call(base().as_ref(), &req).await.unwrap_err();
    assert_eq!(err.code(), Some("Forbidden.RAM"));
    assert!(!err.is_retryable());
    assert_eq!(
        *hits.lock().unwrap(),
        vec![
            "GET DescribeTasks sig_ok=true",
            "GET DescribeTasks sig_ok=true",
            "POST ExportImage sig_ok=true",
        ]
    );
}
