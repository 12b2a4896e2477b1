//! Alibaba Cloud RPC-style API calls (ECS, RAM, STS): signing, sending, error JSON.
//!
//! Requests are signed with signature V1 (HMAC-SHA1 over the sorted, strictly RFC 3986-encoded
//! parameters), which every RPC product accepts. The V3 (`ACS3-HMAC-SHA256`) functions are here
//! so the algorithm is pinned by the reference vectors; the client itself sends V1.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Method, Request, StatusCode};
use rand::Rng;
use serde::de::DeserializeOwned;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::credentials::{Credentials, CredentialsError, CredentialsProvider};
use crate::http::proxy::ProxyConfig;
use crate::http::{Metered, Replay, ReqBody, Retryable, Timeouts, Transport, TransportConfig};
use crate::store::ErrorClass;

/// How often and how patiently calls are retried (the transport's policy type; the default
/// is 5 attempts, 0.5 s doubling up to 20 s).
pub use crate::http::RetryPolicy;

/// ECS API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// STS API version.
pub const STS_VERSION: &str = "2015-04-01";
/// RAM API version.
pub const RAM_VERSION: &str = "2015-05-01";

/// Largest response body accepted; RPC answers are small JSON documents.
const MAX_BODY: usize = 4 << 20;

/// `Code` values that some services put in successful answers (the metadata service sends
/// `"Success"`, a few gateways `"200"` / `"OK"`); anything else in `Code` is an error.
pub const SUCCESS_CODES: &[&str] = &["success", "ok", "200"];

// ---------------------------------------------------------------------------------------------
// Signature V1

/// Strict RFC 3986 percent-encoding: only `A-Z a-z 0-9 - _ . ~` stay; everything else becomes
/// `%XY` (upper-case hex) per UTF-8 byte. Space → `%20`, never `+`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
    out
}

/// `name=value` pairs, each part percent-encoded, sorted by encoded name (then value),
/// joined with `&`. `Signature` itself must not be in `params`.
pub fn canonicalized_query(params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD & %2F & percentEncode(CanonicalizedQueryString)`.
pub fn string_to_sign_v1(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{method}&%2F&{}",
        percent_encode(&canonicalized_query(params))
    )
}

/// Base64(HMAC-SHA1(secret + "&", StringToSign)).
pub fn sign_v1(method: &str, params: &[(String, String)], secret: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(string_to_sign_v1(method, params).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Signature V3 (ACS3-HMAC-SHA256)

/// The V3 canonical request and the `SignedHeaders` list. Every header in `headers` is signed.
pub fn canonical_request_v3(
    method: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    hashed_payload: &str,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let req = format!(
        "{method}\n/\n{}\n{canonical_headers}\n{signed}\n{hashed_payload}",
        canonicalized_query(query)
    );
    (req, signed)
}

/// The `Authorization` header value for V3.
pub fn authorization_v3(
    access_key_id: &str,
    secret: &str,
    method: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    hashed_payload: &str,
) -> String {
    let (req, signed) = canonical_request_v3(method, query, headers, hashed_payload);
    let sts = format!("ACS3-HMAC-SHA256\n{}", hex::encode(Sha256::digest(req)));
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(sts.as_bytes());
    format!(
        "ACS3-HMAC-SHA256 Credential={access_key_id},SignedHeaders={signed},Signature={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Requests and errors

/// One RPC call: product endpoint, version, action, and its parameters.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    /// `https://ecs.eu-central-1.aliyuncs.com`, or a bare host (HTTPS is assumed).
    pub endpoint: String,
    pub version: String,
    pub action: String,
    /// `POST` (default) or `GET`.
    pub method: Method,
    /// Action parameters sent in the query string.
    pub query: Vec<(String, String)>,
    /// Action parameters sent in a form body (signed together with the query).
    pub form: Vec<(String, String)>,
}

impl RpcRequest {
    /// A POST with no parameters yet.
    pub fn new(
        endpoint: impl Into<String>,
        version: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            version: version.into(),
            action: action.into(),
            method: Method::POST,
            query: Vec::new(),
            form: Vec::new(),
        }
    }

    /// Sends it as GET instead.
    pub fn get(mut self) -> Self {
        self.method = Method::GET;
        self
    }

    /// Adds a query parameter.
    pub fn param(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }

    /// Adds a form-body parameter (switches nothing else; POST is the default).
    pub fn form_param(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.form.push((k.into(), v.into()));
        self
    }

    fn service(&self) -> &'static str {
        match self.version.as_str() {
            ECS_VERSION => "ecs",
            STS_VERSION => "sts",
            RAM_VERSION => "ram",
            _ => "rpc",
        }
    }

    fn base_url(&self) -> String {
        let e = self.endpoint.trim().trim_end_matches('/');
        if e.contains("://") {
            e.to_string()
        } else {
            format!("https://{e}")
        }
    }
}

/// An error answer from the service (the error JSON).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{action} failed: {code}: {message} (HTTP {status}, RequestId {request_id}){}", recommend.as_deref().map(|r| format!("; see {r}")).unwrap_or_default())]
pub struct ApiError {
    pub action: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: String,
    pub host_id: Option<String>,
    pub recommend: Option<String>,
    /// From `x-acs-retry-after`, when the service sent it.
    pub retry_after: Option<Duration>,
}

/// Why an RPC call failed. Messages never contain secrets, tokens or signatures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The service answered with an error `Code`.
    #[error(transparent)]
    Api(Box<ApiError>),
    #[error("{action}: cannot reach {endpoint}: {reason}")]
    Transport {
        action: String,
        endpoint: String,
        reason: String,
    },
    #[error("{action}: no complete response from {endpoint} within {timeout:?}")]
    Timeout {
        action: String,
        endpoint: String,
        timeout: Duration,
    },
    #[error("{action}: unexpected response from {endpoint} (HTTP {status}): {reason}")]
    InvalidResponse {
        action: String,
        endpoint: String,
        status: u16,
        reason: String,
    },
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl RpcError {
    /// The service error code, if the service sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api(e) => Some(&e.code),
            _ => None,
        }
    }

    /// How retries should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api(e) => classify(&e.code, e.status),
            Self::Transport { .. } | Self::Timeout { .. } => ErrorClass::Transient,
            Self::InvalidResponse { status, .. } if *status >= 500 => ErrorClass::Transient,
            Self::InvalidResponse { .. } | Self::InvalidEndpoint { .. } => ErrorClass::Client,
            Self::Credentials(_) => ErrorClass::Auth,
        }
    }

    /// Whether the same call may succeed when repeated.
    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }
}

/// Classifies a service error code the way the official SDKs decide retries.
pub fn classify(code: &str, status: u16) -> ErrorClass {
    if code.contains("Throttling") || code == "ServiceUnavailable" {
        ErrorClass::Throttled
    } else if status >= 500 || code == "InternalError" || code == "SignatureNonceUsed" {
        // A reused nonce is fixed by re-signing with a fresh one.
        ErrorClass::Transient
    } else if code.starts_with("SignatureDoesNotMatch")
        || code.starts_with("IncompleteSignature")
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || code.starts_with("InvalidTimeStamp")
        || code.starts_with("AuthenticationFail")
        || code.starts_with("Forbidden")
        || code.starts_with("Forbbiden")
        || code == "NoPermission"
        || status == 401
        || status == 403
    {
        ErrorClass::Auth
    } else if code.contains("NotFound") || code.starts_with("EntityNotExist") || status == 404 {
        ErrorClass::NotFound
    } else {
        ErrorClass::Client
    }
}

/// Replaces the security token (raw, encoded once or twice, as echoed in a server
/// string-to-sign) with `<redacted>`.
fn redact(msg: &str, creds: &Credentials) -> String {
    let mut out = msg.to_string();
    let mut needles = vec![creds.access_key_secret.clone()];
    if let Some(t) = &creds.security_token {
        let once = percent_encode(t);
        needles.push(percent_encode(&once));
        needles.push(once);
        needles.push(t.clone());
    }
    for n in needles.iter().filter(|n| n.len() >= 4) {
        out = out.replace(n.as_str(), "<redacted>");
    }
    out
}

fn value_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Turns a response into the JSON document or a typed error. Any `Code` other than a
/// success code is an error even with HTTP 200, since some gateways answer that way.
pub fn interpret_response(
    action: &str,
    endpoint: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    creds: &Credentials,
) -> Result<serde_json::Value, RpcError> {
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);
    let doc = match parsed {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            let snippet = crate::store::wire::one_line(&String::from_utf8_lossy(body), 200);
            return Err(RpcError::InvalidResponse {
                action: action.into(),
                endpoint: endpoint.into(),
                status: status.as_u16(),
                reason: if status.is_success() {
                    "the body is not a JSON object".into()
                } else {
                    format!("non-JSON error body: {}", redact(&snippet, creds))
                },
            });
        }
    };
    // Server text goes into one-line errors: no control characters, bounded length.
    let field = |k: &str| {
        doc.get(k)
            .and_then(value_to_string)
            .map(|s| crate::store::wire::one_line(&s, 500))
    };
    let code = field("Code").filter(|c| !c.is_empty());
    let is_error = match &code {
        Some(c) => !SUCCESS_CODES.iter().any(|s| c.eq_ignore_ascii_case(s)),
        None => !status.is_success(),
    };
    if !is_error {
        return Ok(doc);
    }
    Err(RpcError::Api(Box::new(ApiError {
        action: action.into(),
        status: status.as_u16(),
        code: code.unwrap_or_else(|| format!("HTTP{}", status.as_u16())),
        message: redact(&field("Message").unwrap_or_default(), creds),
        request_id: field("RequestId").unwrap_or_else(|| "-".into()),
        host_id: field("HostId"),
        recommend: field("Recommend"),
        retry_after,
    })))
}

// ---------------------------------------------------------------------------------------------
// The client

/// Sends signed RPC requests over HTTPS (rustls, certificate verification on; plain `http://`
/// endpoints are accepted for local test doubles).
#[derive(Clone)]
pub struct RpcClient {
    transport: Transport,
    retry: RetryPolicy,
    timeout: Duration,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for RpcClient {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcClient {
    /// Default retry policy, 30 s per attempt, 10 s connect timeout; proxies from the
    /// environment ([`crate::proxy`]).
    pub fn new() -> Self {
        Self::with_proxy(ProxyConfig::from_env())
    }

    /// Like [`RpcClient::new`], through the given proxy settings.
    pub fn with_proxy(proxy: ProxyConfig) -> Self {
        let transport = Transport::new(&TransportConfig {
            proxy,
            ..TransportConfig::new(Duration::from_secs(10))
        })
        .expect("the ring provider supports the default TLS versions");
        Self {
            transport,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the per-attempt timeout (connect + response + body).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls the action and deserializes the JSON answer into `T`.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        creds: &dyn CredentialsProvider,
        req: &RpcRequest,
    ) -> Result<T, RpcError> {
        let doc = self.call(creds, req).await?;
        serde_json::from_value(doc).map_err(|e| RpcError::InvalidResponse {
            action: req.action.clone(),
            endpoint: req.base_url(),
            status: 200,
            reason: format!("unexpected JSON shape: {e}"),
        })
    }

    /// Calls an action that takes no signature (STS AssumeRoleWithOIDC: the OIDC token in the
    /// parameters is the proof of identity) and deserializes the JSON answer into `T`.
    ///
    /// `secret` is a value that must never reach an error message (the OIDC token); it is
    /// redacted from the service's error text like a signing secret would be.
    pub async fn call_unsigned_json<T: DeserializeOwned>(
        &self,
        req: &RpcRequest,
        secret: &str,
    ) -> Result<T, RpcError> {
        let doc = self.call_inner(None, Some(secret), req).await?;
        serde_json::from_value(doc).map_err(|e| RpcError::InvalidResponse {
            action: req.action.clone(),
            endpoint: req.base_url(),
            status: 200,
            reason: format!("unexpected JSON shape: {e}"),
        })
    }

    /// Calls the action, retrying retryable failures; credentials are fetched and the request
    /// signed anew (fresh nonce and timestamp) for every attempt.
    pub async fn call(
        &self,
        creds: &dyn CredentialsProvider,
        req: &RpcRequest,
    ) -> Result<serde_json::Value, RpcError> {
        self.call_inner(Some(creds), None, req).await
    }

    /// Signed with `creds`, or unsigned when `None` (then `secret` is what to redact).
    async fn call_inner(
        &self,
        creds: Option<&dyn CredentialsProvider>,
        secret: Option<&str>,
        req: &RpcRequest,
    ) -> Result<serde_json::Value, RpcError> {
        crate::http::retry(
            &self.retry,
            Replay::Replayable,
            &req.action,
            |_| async move {
                let c = match creds {
                    Some(p) => Some(p.credentials().await?),
                    None => None,
                };
                let redact_with = c.clone().unwrap_or_else(|| Credentials {
                    access_key_id: String::new(),
                    access_key_secret: String::new(),
                    security_token: secret.map(str::to_string),
                    expiration: None,
                });
                self.attempt(c.as_ref(), &redact_with, req).await
            },
        )
        .await
    }

    async fn attempt(
        &self,
        creds: Option<&Credentials>,
        redact_with: &Credentials,
        req: &RpcRequest,
    ) -> Result<serde_json::Value, RpcError> {
        let base = req.base_url();
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let (uri, body) = match creds {
            Some(c) => signed_parts(req, c, &timestamp, &new_nonce()),
            None => unsigned_parts(req, &timestamp),
        };
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(&uri)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("ossrelay/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-acs-action", &req.action)
            .header("x-acs-version", &req.version);
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let body = match body {
            Some(b) if !b.is_empty() => ReqBody::full(Bytes::from(b)),
            _ => ReqBody::Empty,
        };
        let http_req = builder.body(body).map_err(|e| RpcError::InvalidEndpoint {
            endpoint: base.clone(),
            reason: e.to_string(),
        })?;

        let action = req.action.clone();
        let meter = Metered {
            service: req.service(),
            operation: &action,
        };
        let timeouts = Timeouts {
            stall: self.timeout,
            attempt: Some(self.timeout),
        };
        let (status, headers, bytes) = self
            .transport
            .fetch(http_req, timeouts, MAX_BODY, Some(meter))
            .await
            .map_err(|e| match e.timed_out() {
                Some(_) => RpcError::Timeout {
                    action: action.clone(),
                    endpoint: base.clone(),
                    timeout: self.timeout,
                },
                None => RpcError::Transport {
                    action: action.clone(),
                    endpoint: base.clone(),
                    reason: e.to_string(),
                },
            })?;
        let retry_after = headers
            .get("x-acs-retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(300.0)));
        tracing::debug!(action = %action, endpoint = %base, status = status.as_u16(), "RPC response");
        interpret_response(&action, &base, status, retry_after, &bytes, redact_with)
    }
}

impl Retryable for RpcError {
    fn class(&self) -> ErrorClass {
        RpcError::class(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RpcError::Api(a) => a.retry_after,
            _ => None,
        }
    }
}

/// A random UUID-shaped nonce.
pub fn new_nonce() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The common V1 parameters for one attempt (without `Signature`).
pub fn common_params(
    creds: &Credentials,
    action: &str,
    version: &str,
    timestamp: &str,
    nonce: &str,
) -> Vec<(String, String)> {
    let mut p = vec![
        ("Action".to_string(), action.to_string()),
        ("Version".into(), version.to_string()),
        ("Format".into(), "JSON".into()),
        ("AccessKeyId".into(), creds.access_key_id.clone()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), nonce.to_string()),
        ("Timestamp".into(), timestamp.to_string()),
    ];
    if let Some(t) = &creds.security_token {
        p.push(("SecurityToken".into(), t.clone()));
    }
    p
}

/// The URI and form body of an unsigned call: the common parameters without `AccessKeyId`,
/// `Signature*` or `SecurityToken` (as credentials-go sends AssumeRoleWithOIDC).
pub fn unsigned_parts(req: &RpcRequest, timestamp: &str) -> (String, Option<String>) {
    let mut query: Vec<(String, String)> = vec![
        ("Action".into(), req.action.clone()),
        ("Version".into(), req.version.clone()),
        ("Format".into(), "JSON".into()),
        ("Timestamp".into(), timestamp.to_string()),
    ];
    query.extend(req.query.iter().cloned());
    (
        format!("{}/?{}", req.base_url(), encode_pairs(&query)),
        (!req.form.is_empty()).then(|| encode_pairs(&req.form)),
    )
}

fn encode_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The full signed URI and the form body (if any) for one attempt.
pub fn signed_parts(
    req: &RpcRequest,
    creds: &Credentials,
    timestamp: &str,
    nonce: &str,
) -> (String, Option<String>) {
    let mut query = common_params(creds, &req.action, &req.version, timestamp, nonce);
    query.extend(req.query.iter().cloned());
    let mut all = query.clone();
    all.extend(req.form.iter().cloned());
    let signature = sign_v1(req.method.as_str(), &all, &creds.access_key_secret);
    query.push(("Signature".into(), signature));
    let qs = query
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let body = (!req.form.is_empty()).then(|| {
        req.form
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    });
    (format!("{}/?{qs}", req.base_url()), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn v1a() -> Vec<(String, String)> {
        p(&[
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ])
    }

    fn v1b() -> Vec<(String, String)> {
        p(&[
            ("AccessKeyId", "LTAI5tExampleKeyId01"),
            ("Action", "DescribeTaskAttribute"),
            ("Format", "JSON"),
            ("RegionId", "cn-hangzhou"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "b0c4d6e1-7a2f-4f0e-9d3b-5a6c7e8f9012"),
            ("SignatureVersion", "1.0"),
            ("TaskId", "t-bp1example0000001"),
            ("Timestamp", "2024-05-01T08:30:00Z"),
            ("Version", "2014-05-26"),
        ])
    }

    fn v1c() -> Vec<(String, String)> {
        // Deliberately not in sorted order: the signer must sort.
        p(&[
            ("Version", "2014-05-26"),
            ("AccessKeyId", "STS.NExampleTempKeyId"),
            ("Action", "ImportImage"),
            ("Architecture", "x86_64"),
            ("BootMode", "UEFI"),
            ("Description", "a b*c~d+e/f=g&h:中文!'()"),
            ("DiskDeviceMapping.1.DiskImageSize", "40"),
            ("DiskDeviceMapping.1.Format", "QCOW2"),
            ("DiskDeviceMapping.1.OSSBucket", "my-bucket-eu"),
            ("DiskDeviceMapping.1.OSSObject", "exports/img 1+2.qcow2"),
            ("Features.NvmeSupport", "supported"),
            ("Format", "JSON"),
            ("ImageName", "migrated-img_01"),
            ("OSType", "linux"),
            ("Platform", "Others Linux"),
            ("RegionId", "eu-central-1"),
            ("SecurityToken", "CAIS8gF1q6Ft5B2yfSjIr5bSEsj3trZs0a+GVEzDmW4/Y+1uvpTjlDz2IH1Ee3ZtB+4Zs/8zmGpW7/4clqF+T5pI"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "6f1d2c3b-4a59-4e8f-9a0b-c1d2e3f4a5b6"),
            ("SignatureVersion", "1.0"),
            ("Tag.1.Key", "source"),
            ("Tag.1.Value", "cn-hangzhou/m-bp1abc"),
            ("Timestamp", "2024-05-01T08:31:05Z"),
        ])
    }

    fn v1d() -> Vec<(String, String)> {
        p(&[
            ("AccessKeyId", "LTAI5tExampleKeyId01"),
            ("Action", "AssumeRole"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "0d1f2e3c-4b5a-6978-8a9b-acbdcedf0011"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2024-05-01T08:40:00Z"),
            ("Version", "2015-04-01"),
            ("DurationSeconds", "3600"),
            ("RoleArn", "acs:ram::1234567890123456:role/image-migrator"),
            ("RoleSessionName", "ecs-image-migrate"),
        ])
    }

    const SECRET_B: &str = "ExampleSecret0123456789abcdefXYZ";
    const SECRET_C: &str = "TempSecret/with+chars=";

    #[test]
    fn encoding_rules() {
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode(" "), "%20");
        assert_eq!(
            percent_encode("*+/:=&,!'()"),
            "%2A%2B%2F%3A%3D%26%2C%21%27%28%29"
        );
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
        assert_eq!(percent_encode("%"), "%25");
    }

    #[test]
    fn v1a_documentation_example() {
        let params = v1a();
        assert_eq!(
            canonicalized_query(&params),
            "AccessKeyId=testid&Action=DescribeRegions&Format=XML&SignatureMethod=HMAC-SHA1&SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0&Timestamp=2016-02-23T12%3A46%3A24Z&Version=2014-05-26"
        );
        assert_eq!(
            string_to_sign_v1("GET", &params),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        let sig = sign_v1("GET", &params, "testsecret");
        assert_eq!(sig, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        assert_eq!(percent_encode(&sig), "OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D");
    }

    #[test]
    fn v1b_describe_task_attribute() {
        let params = v1b();
        assert_eq!(
            canonicalized_query(&params),
            "AccessKeyId=LTAI5tExampleKeyId01&Action=DescribeTaskAttribute&Format=JSON&RegionId=cn-hangzhou&SignatureMethod=HMAC-SHA1&SignatureNonce=b0c4d6e1-7a2f-4f0e-9d3b-5a6c7e8f9012&SignatureVersion=1.0&TaskId=t-bp1example0000001&Timestamp=2024-05-01T08%3A30%3A00Z&Version=2014-05-26"
        );
        assert_eq!(
            string_to_sign_v1("GET", &params),
            "GET&%2F&AccessKeyId%3DLTAI5tExampleKeyId01%26Action%3DDescribeTaskAttribute%26Format%3DJSON%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Db0c4d6e1-7a2f-4f0e-9d3b-5a6c7e8f9012%26SignatureVersion%3D1.0%26TaskId%3Dt-bp1example0000001%26Timestamp%3D2024-05-01T08%253A30%253A00Z%26Version%3D2014-05-26"
        );
        assert_eq!(
            sign_v1("GET", &params, SECRET_B),
            "04Zprs2aDthwgohcfZptxxdkA3w="
        );
    }

    #[test]
    fn v1c_import_image_special_characters() {
        let params = v1c();
        assert_eq!(
            canonicalized_query(&params),
            "AccessKeyId=STS.NExampleTempKeyId&Action=ImportImage&Architecture=x86_64&BootMode=UEFI&Description=a%20b%2Ac~d%2Be%2Ff%3Dg%26h%3A%E4%B8%AD%E6%96%87%21%27%28%29&DiskDeviceMapping.1.DiskImageSize=40&DiskDeviceMapping.1.Format=QCOW2&DiskDeviceMapping.1.OSSBucket=my-bucket-eu&DiskDeviceMapping.1.OSSObject=exports%2Fimg%201%2B2.qcow2&Features.NvmeSupport=supported&Format=JSON&ImageName=migrated-img_01&OSType=linux&Platform=Others%20Linux&RegionId=eu-central-1&SecurityToken=CAIS8gF1q6Ft5B2yfSjIr5bSEsj3trZs0a%2BGVEzDmW4%2FY%2B1uvpTjlDz2IH1Ee3ZtB%2B4Zs%2F8zmGpW7%2F4clqF%2BT5pI&SignatureMethod=HMAC-SHA1&SignatureNonce=6f1d2c3b-4a59-4e8f-9a0b-c1d2e3f4a5b6&SignatureVersion=1.0&Tag.1.Key=source&Tag.1.Value=cn-hangzhou%2Fm-bp1abc&Timestamp=2024-05-01T08%3A31%3A05Z&Version=2014-05-26"
        );
        assert_eq!(
            string_to_sign_v1("POST", &params),
            "POST&%2F&AccessKeyId%3DSTS.NExampleTempKeyId%26Action%3DImportImage%26Architecture%3Dx86_64%26BootMode%3DUEFI%26Description%3Da%2520b%252Ac~d%252Be%252Ff%253Dg%2526h%253A%25E4%25B8%25AD%25E6%2596%2587%2521%2527%2528%2529%26DiskDeviceMapping.1.DiskImageSize%3D40%26DiskDeviceMapping.1.Format%3DQCOW2%26DiskDeviceMapping.1.OSSBucket%3Dmy-bucket-eu%26DiskDeviceMapping.1.OSSObject%3Dexports%252Fimg%25201%252B2.qcow2%26Features.NvmeSupport%3Dsupported%26Format%3DJSON%26ImageName%3Dmigrated-img_01%26OSType%3Dlinux%26Platform%3DOthers%2520Linux%26RegionId%3Deu-central-1%26SecurityToken%3DCAIS8gF1q6Ft5B2yfSjIr5bSEsj3trZs0a%252BGVEzDmW4%252FY%252B1uvpTjlDz2IH1Ee3ZtB%252B4Zs%252F8zmGpW7%252F4clqF%252BT5pI%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D6f1d2c3b-4a59-4e8f-9a0b-c1d2e3f4a5b6%26SignatureVersion%3D1.0%26Tag.1.Key%3Dsource%26Tag.1.Value%3Dcn-hangzhou%252Fm-bp1abc%26Timestamp%3D2024-05-01T08%253A31%253A05Z%26Version%3D2014-05-26"
        );
        assert_eq!(
            sign_v1("POST", &params, SECRET_C),
            "TK/PC1DK5krqhdzJ2YOCWziTPak="
        );
    }

    #[test]
    fn v1d_assume_role_query_plus_form() {
        let params = v1d();
        assert_eq!(
            canonicalized_query(&params),
            "AccessKeyId=LTAI5tExampleKeyId01&Action=AssumeRole&DurationSeconds=3600&Format=JSON&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Fimage-migrator&RoleSessionName=ecs-image-migrate&SignatureMethod=HMAC-SHA1&SignatureNonce=0d1f2e3c-4b5a-6978-8a9b-acbdcedf0011&SignatureVersion=1.0&Timestamp=2024-05-01T08%3A40%3A00Z&Version=2015-04-01"
        );
        assert_eq!(
            string_to_sign_v1("POST", &params),
            "POST&%2F&AccessKeyId%3DLTAI5tExampleKeyId01%26Action%3DAssumeRole%26DurationSeconds%3D3600%26Format%3DJSON%26RoleArn%3Dacs%253Aram%253A%253A1234567890123456%253Arole%252Fimage-migrator%26RoleSessionName%3Decs-image-migrate%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D0d1f2e3c-4b5a-6978-8a9b-acbdcedf0011%26SignatureVersion%3D1.0%26Timestamp%3D2024-05-01T08%253A40%253A00Z%26Version%3D2015-04-01"
        );
        assert_eq!(
            sign_v1("POST", &params, SECRET_B),
            "MtvaEpdZMiLEmY8iTVq6690tsg0="
        );
        assert_eq!(
            sign_v1("GET", &params, SECRET_B),
            "LUmVsLtQGUR/Q87vGlg2fKclpWQ="
        );
    }

    #[test]
    fn v1_signature_type_variants() {
        let with_type = |mut v: Vec<(String, String)>| {
            v.push(("SignatureType".into(), String::new()));
            v
        };
        assert_eq!(
            sign_v1("GET", &with_type(v1a()), "testsecret"),
            "l2RHWHoXOKbFEAkq17TTwV31vac="
        );
        assert_eq!(
            sign_v1("GET", &with_type(v1b()), SECRET_B),
            "nPEvrqdHlspitkgMKJ5Z2jYy+90="
        );
        assert_eq!(
            sign_v1("POST", &with_type(v1c()), SECRET_C),
            "jmXjoVcolBsFfZk73Eh9dztlp0Q="
        );
    }

    /// The request the client builds for V1-D reproduces the vector: common params in the
    /// query, action params in the form body, signature over both.
    #[test]
    fn signed_parts_match_v1d() {
        let req = RpcRequest::new("sts.aliyuncs.com", STS_VERSION, "AssumeRole")
            .form_param("DurationSeconds", "3600")
            .form_param("RoleArn", "acs:ram::1234567890123456:role/image-migrator")
            .form_param("RoleSessionName", "ecs-image-migrate");
        let creds = Credentials::new("LTAI5tExampleKeyId01", SECRET_B);
        let (uri, body) = signed_parts(
            &req,
            &creds,
            "2024-05-01T08:40:00Z",
            "0d1f2e3c-4b5a-6978-8a9b-acbdcedf0011",
        );
        assert!(
            uri.starts_with("https://sts.aliyuncs.com/?Action=AssumeRole&"),
            "{uri}"
        );
        assert!(
            uri.ends_with("&Signature=MtvaEpdZMiLEmY8iTVq6690tsg0%3D"),
            "{uri}"
        );
        assert!(!uri.contains("SecurityToken"));
        assert_eq!(
            body.as_deref(),
            Some("DurationSeconds=3600&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Fimage-migrator&RoleSessionName=ecs-image-migrate")
        );
    }

    #[test]
    fn signed_parts_get_with_token() {
        let req = RpcRequest::new("http://127.0.0.1:9/", ECS_VERSION, "DescribeTasks")
            .get()
            .param("RegionId", "cn-hangzhou");
        let mut creds = Credentials::new("STS.id", "sec");
        creds.security_token = Some("tok+/=".into());
        let (uri, body) = signed_parts(&req, &creds, "2024-05-01T08:30:00Z", "n1");
        assert!(uri.starts_with("http://127.0.0.1:9/?"), "{uri}");
        assert!(uri.contains("&SecurityToken=tok%2B%2F%3D&"), "{uri}");
        assert!(uri.contains("&RegionId=cn-hangzhou&"), "{uri}");
        assert_eq!(body, None);
        let mut params = common_params(
            &creds,
            "DescribeTasks",
            ECS_VERSION,
            "2024-05-01T08:30:00Z",
            "n1",
        );
        params.push(("RegionId".into(), "cn-hangzhou".into()));
        let sig = sign_v1("GET", &params, "sec");
        assert!(uri.ends_with(&format!("Signature={}", percent_encode(&sig))));
    }

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn export_query() -> Vec<(String, String)> {
        p(&[
            ("ImageFormat", "qcow2"),
            ("ImageId", "m-bp1example0000001"),
            ("OSSBucket", "my-export-bucket"),
            ("OSSPrefix", "mig2024"),
            ("RegionId", "cn-hangzhou"),
            ("RoleName", "AliyunECSImageExportDefaultRole"),
        ])
    }

    #[test]
    fn v3a_sdk_request() {
        let headers = p(&[
            ("accept", "application/json"),
            ("host", "ecs-cn-hangzhou.aliyuncs.com"),
            (
                "user-agent",
                "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.6",
            ),
            ("x-acs-action", "ExportImage"),
            ("x-acs-content-sha256", EMPTY_SHA),
            ("x-acs-credentials-provider", "static_ak"),
            ("x-acs-date", "2024-05-01T08:30:00Z"),
            (
                "x-acs-signature-nonce",
                "3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e",
            ),
            ("x-acs-version", "2014-05-26"),
        ]);
        assert_eq!(
            authorization_v3("LTAI5tExampleKeyId01", SECRET_B, "POST", &export_query(), &headers, EMPTY_SHA),
            "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId01,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=9c404b555d262677ae737a4fd36d57c1e399c3afe81f5d0050525d798e9c8f00"
        );
    }

    #[test]
    fn v3b_minimal_headers() {
        let headers = p(&[
            ("x-acs-version", "2014-05-26"),
            ("host", "ecs-cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", "ExportImage"),
            ("x-acs-content-sha256", EMPTY_SHA),
            ("x-acs-date", "2024-05-01T08:30:00Z"),
            (
                "x-acs-signature-nonce",
                "3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e",
            ),
        ]);
        let (canon, signed) = canonical_request_v3("POST", &export_query(), &headers, EMPTY_SHA);
        assert_eq!(
            canon,
            "POST\n/\nImageFormat=qcow2&ImageId=m-bp1example0000001&OSSBucket=my-export-bucket&OSSPrefix=mig2024&RegionId=cn-hangzhou&RoleName=AliyunECSImageExportDefaultRole\nhost:ecs-cn-hangzhou.aliyuncs.com\nx-acs-action:ExportImage\nx-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-acs-date:2024-05-01T08:30:00Z\nx-acs-signature-nonce:3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e\nx-acs-version:2014-05-26\n\nhost;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&canon)),
            "7d6e661e761b1bf54ba30846cd580486944b742a352e30bb9f08f415f5ea13e4"
        );
        assert_eq!(
            signed,
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
        );
        assert_eq!(
            authorization_v3("LTAI5tExampleKeyId01", SECRET_B, "POST", &export_query(), &headers, EMPTY_SHA),
            "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId01,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=578fdc9b954d915e1da6b4434dfdd8006a9f3c8db9878c95f1d419305782fabc"
        );
    }

    #[test]
    fn v3c_sts_get() {
        let query = p(&[
            ("TaskStatus", "Processing"),
            ("PageSize", "50"),
            ("RegionId", "cn-hangzhou"),
            ("TaskIds", "t-1,t-2"),
        ]);
        let headers = p(&[
            ("host", "ecs-cn-hangzhou.aliyuncs.com"),
            ("x-acs-accesskey-id", "STS.NExampleTempKeyId"),
            ("x-acs-action", "DescribeTasks"),
            ("x-acs-content-sha256", EMPTY_SHA),
            ("x-acs-date", "2024-05-01T08:30:00Z"),
            ("x-acs-security-token", "CAIStoken+/="),
            (
                "x-acs-signature-nonce",
                "3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e",
            ),
            ("x-acs-version", "2014-05-26"),
        ]);
        let (canon, _) = canonical_request_v3("GET", &query, &headers, EMPTY_SHA);
        assert_eq!(
            hex::encode(Sha256::digest(&canon)),
            "8a52337c4b5ba73795bdcea5fdd6a0092122c7db123f155aef01e0c72aaed06a"
        );
        assert_eq!(
            authorization_v3("STS.NExampleTempKeyId", SECRET_C, "GET", &query, &headers, EMPTY_SHA),
            "ACS3-HMAC-SHA256 Credential=STS.NExampleTempKeyId,SignedHeaders=host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,Signature=d5aca87d313dcbb9f104340fa21c0768ed182fcc1d6a32101f25048ebade1881"
        );
    }

    fn creds() -> Credentials {
        Credentials {
            security_token: Some("CAIS+tok/en=".into()),
            ..Credentials::new("STS.id", "topsecret")
        }
    }

    fn interpret(status: u16, body: &str) -> Result<serde_json::Value, RpcError> {
        interpret_response(
            "ExportImage",
            "https://ecs.cn-hangzhou.aliyuncs.com",
            StatusCode::from_u16(status).unwrap(),
            None,
            body.as_bytes(),
            &creds(),
        )
    }

    #[test]
    fn error_json_is_typed() {
        let err = interpret(404, r#"{"RequestId":"7DC0013A","HostId":"ecs.cn-hangzhou.aliyuncs.com","Code":"InvalidImageId.NotFound","Message":"The specified ImageId does not exist.","Recommend":"https://api.aliyun.com/troubleshoot?q=x"}"#).unwrap_err();
        match &err {
            RpcError::Api(a) => {
                let ApiError {
                    status,
                    code,
                    message,
                    request_id,
                    host_id,
                    recommend,
                    ..
                } = a.as_ref();
                assert_eq!(*status, 404);
                assert_eq!(code, "InvalidImageId.NotFound");
                assert_eq!(message, "The specified ImageId does not exist.");
                assert_eq!(request_id, "7DC0013A");
                assert_eq!(host_id.as_deref(), Some("ecs.cn-hangzhou.aliyuncs.com"));
                assert_eq!(
                    recommend.as_deref(),
                    Some("https://api.aliyun.com/troubleshoot?q=x")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.class(), ErrorClass::NotFound);
        assert_eq!(err.code(), Some("InvalidImageId.NotFound"));
        let msg = err.to_string();
        assert!(
            msg.contains("ExportImage failed: InvalidImageId.NotFound"),
            "{msg}"
        );
        assert!(msg.contains("RequestId 7DC0013A"), "{msg}");
    }

    #[test]
    fn code_on_http_200_is_an_error() {
        let err = interpret(200, r#"{"RequestId":"r","Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Throttled);
        assert!(err.is_retryable());
        // Success codes are not errors.
        assert!(interpret(200, r#"{"Code":"Success","AccessKeyId":"x"}"#).is_ok());
        assert!(interpret(200, r#"{"Code":200,"Data":{}}"#).is_ok());
        assert_eq!(
            interpret(200, r#"{"RequestId":"r","TaskId":"t-1"}"#).unwrap()["TaskId"],
            "t-1"
        );
    }

    #[test]
    fn classification() {
        let cases = [
            ("Throttling", 400, ErrorClass::Throttled),
            ("Throttling.Api", 400, ErrorClass::Throttled),
            ("Rejected.Throttling", 400, ErrorClass::Throttled),
            ("ServiceUnavailable", 503, ErrorClass::Throttled),
            ("InternalError", 500, ErrorClass::Transient),
            ("UnknownError", 502, ErrorClass::Transient),
            ("SignatureNonceUsed", 400, ErrorClass::Transient),
            ("SignatureDoesNotMatch", 400, ErrorClass::Auth),
            ("InvalidAccessKeyId.NotFound", 404, ErrorClass::Auth),
            ("InvalidSecurityToken.Expired", 400, ErrorClass::Auth),
            ("Forbidden.RAM", 403, ErrorClass::Auth),
            ("NoPermission", 403, ErrorClass::Auth),
            ("EntityNotExist.Role", 404, ErrorClass::NotFound),
            ("InvalidTaskId.NotFound", 400, ErrorClass::NotFound),
            ("MissingParameter", 400, ErrorClass::Client),
            ("DryRunOperation", 400, ErrorClass::Client),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify(code, status), want, "{code}");
        }
    }

    #[test]
    fn error_without_code_and_non_json() {
        let err = interpret(503, r#"{"RequestId":"r"}"#).unwrap_err();
        assert_eq!(err.code(), Some("HTTP503"));
        assert!(err.is_retryable());
        let err = interpret(502, "<html>bad gateway</html>").unwrap_err();
        assert!(matches!(err, RpcError::InvalidResponse { status: 502, .. }));
        assert!(err.is_retryable());
        assert!(err.to_string().contains("bad gateway"));
        let err = interpret(200, "[1,2]").unwrap_err();
        assert!(matches!(err, RpcError::InvalidResponse { .. }));
        assert!(!err.is_retryable());
    }

    #[test]
    fn echoed_string_to_sign_does_not_leak_the_token() {
        let token_in_sts = percent_encode(&percent_encode("CAIS+tok/en="));
        let body = format!(
            r#"{{"RequestId":"r","Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:POST&%2F&AccessKeyId%3DSTS.id%26SecurityToken%3D{token_in_sts}%26X%3Dtopsecret"}}"#
        );
        let err = interpret(400, &body).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains("server string to sign is:"), "{text}");
        assert!(!text.contains(&token_in_sts), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(!text.contains("tok%252Fen"), "{text}");
        assert_eq!(err.class(), ErrorClass::Auth);
    }

    #[test]
    fn nonce_is_uuid_shaped_and_unique() {
        let a = new_nonce();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, new_nonce());
    }
}
