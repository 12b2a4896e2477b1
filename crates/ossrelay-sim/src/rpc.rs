//! The RPC protocol of the simulated cloud (ECS, RAM, STS): the request, its own V1
//! (HMAC-SHA1) and V3 (ACS3-HMAC-SHA256) signature verifiers, the error, and the JSON / XML
//! rendering. A leaf: the dispatch by `Action` + `Version` is `crate::acs`.
//!
//! The verifier signs whatever parameters it received (query ∪ form body, minus `Signature`),
//! never a fixed list, so SDKs that add `SignatureType=` verify too. It shares no code with the
//! client signer (`ossrelay::acs`): the simulator must catch client signing bugs, not repeat them.
//!
//! Choices where the reference is silent or UNCONFIRMED:
//! * a missing `Signature` / `AccessKeyId` / `SignatureNonce` / `Timestamp`, or a
//!   `SignatureMethod` other than `HMAC-SHA1`, is `400 IncompleteSignature`;
//! * the `Timestamp` window is ±15 minutes; nonces are remembered per AccessKey for 15 minutes;
//! * STS token problems (`InvalidSecurityToken.*`) are HTTP 400;
//! * V3 (`ACS3-HMAC-SHA256`) is verified too; its `host` and every `x-acs-*` header must be
//!   signed, and `x-acs-content-sha256` must match the body;
//! * without `Format=JSON` (any case) the answer is XML, as on the real service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Response};
use http_body_util::{BodyExt, Full};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::auth::KeyInfo;
use crate::reply::Body;
use crate::xml::esc;

/// ECS API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// RAM API version.
pub const RAM_VERSION: &str = "2015-05-01";
/// STS API version.
pub const STS_VERSION: &str = "2015-04-01";

const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
const NONCE_TTL: Duration = Duration::from_secs(15 * 60);

/// Strict RFC 3986 percent-encoding of UTF-8 bytes, upper-case hex (reference §2.1 step 2).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The V1 string-to-sign over `params` (any `Signature` entry is ignored).
pub fn string_to_sign(method: &str, params: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "Signature")
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    enc.sort();
    let canonical = enc
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}&%2F&{}", percent_encode(&canonical))
}

/// Base64 HMAC-SHA1 of `string_to_sign` keyed with `secret + "&"`.
pub fn signature(string_to_sign: &str, secret: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// An RPC error answer: rendered as the reference §7 JSON (or XML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl RpcError {
    /// An error with an explicit status, code and message.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `400 MissingParameter` for `name`.
    pub fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!("An input parameter \"{name}\" that is mandatory for processing the request is not supplied."),
        )
    }

    /// `400 InvalidParameter` for `name`.
    pub fn invalid(name: &str, value: &str) -> Self {
        Self::new(
            400,
            "InvalidParameter",
            format!("The specified parameter \"{name}\" is not valid: {value:?}."),
        )
    }

    fn incomplete(why: &str) -> Self {
        Self::new(
            400,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards. {why}"),
        )
    }
}

/// Which product a request addresses (by its `Version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Ecs,
    Ram,
    Sts,
}

impl Product {
    pub(crate) fn from_version(v: &str) -> Option<Self> {
        match v {
            ECS_VERSION => Some(Product::Ecs),
            RAM_VERSION => Some(Product::Ram),
            STS_VERSION => Some(Product::Sts),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Product::Ecs => "Ecs",
            Product::Ram => "Ram",
            Product::Sts => "Sts",
        }
    }
}

/// One parsed RPC request. `Debug` redacts `Signature` and `SecurityToken`.
#[derive(Clone)]
pub struct RpcRequest {
    pub method: String,
    /// Query and form parameters as received (decoded).
    pub params: Vec<(String, String)>,
    pub host_id: String,
    pub request_id: String,
    /// How many leading entries of `params` came from the query string (V3 signs only those).
    pub query_count: usize,
    /// Lower-hex SHA-256 of the body (V3 `x-acs-content-sha256`).
    pub body_sha256: String,
}

impl std::fmt::Debug for RpcRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| match k.as_str() {
                "Signature" | "SecurityToken" => (k.as_str(), "<redacted>"),
                _ => (k.as_str(), v.as_str()),
            })
            .collect();
        f.debug_struct("RpcRequest")
            .field("method", &self.method)
            .field("params", &params)
            .field("host_id", &self.host_id)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl RpcRequest {
    /// The action, from the `Action` parameter or (V3) the `x-acs-action` header.
    pub fn action_in(&self, headers: &HeaderMap) -> String {
        self.get("Action")
            .filter(|a| !a.is_empty())
            .or_else(|| headers.get("x-acs-action").and_then(|v| v.to_str().ok()))
            .unwrap_or_default()
            .to_string()
    }

    /// The version, from the `Version` parameter or (V3) the `x-acs-version` header.
    pub fn version_in(&self, headers: &HeaderMap) -> String {
        self.get("Version")
            .filter(|a| !a.is_empty())
            .or_else(|| headers.get("x-acs-version").and_then(|v| v.to_str().ok()))
            .unwrap_or_default()
            .to_string()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value of `name`, else `MissingParameter`.
    pub fn required(&self, name: &str) -> Result<&str, RpcError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RpcError::missing(name))
    }

    /// `true`/`false` in any case (absent = false).
    pub fn flag(&self, name: &str) -> Result<bool, RpcError> {
        match self.get(name) {
            None | Some("") => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(RpcError::invalid(name, v)),
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.get("Format")
            .is_some_and(|f| f.eq_ignore_ascii_case("json"))
    }
}

/// Who signed a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key_id: String,
    /// The account name (= account ID in ARNs).
    pub account: String,
    /// Signed with temporary (STS) credentials.
    pub temporary: bool,
}

/// Nonces seen recently, per AccessKey ID.
#[derive(Default)]
pub struct Nonces {
    seen: HashMap<(String, String), SystemTime>,
}

impl Nonces {
    /// Records `nonce`; false when it was already used within the window.
    pub fn check_and_insert(&mut self, ak: &str, nonce: &str, now: SystemTime) -> bool {
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, t| {
                now.duration_since(*t)
                    .map(|d| d < NONCE_TTL)
                    .unwrap_or(true)
            });
        }
        let key = (ak.to_string(), nonce.to_string());
        if let Some(t) = self.seen.get(&key) {
            if now
                .duration_since(*t)
                .map(|d| d < NONCE_TTL)
                .unwrap_or(true)
            {
                return false;
            }
        }
        self.seen.insert(key, now);
        true
    }
}

fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let dt = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ").ok()?;
    Some(dt.and_utc().into())
}

/// Verifies a V1 signature and the checks around it (timestamp skew, nonce reuse, STS token).
pub fn verify(
    req: &RpcRequest,
    headers: &HeaderMap,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
    nonces: &mut Nonces,
) -> Result<Caller, RpcError> {
    let get = |n: &str| req.get(n).filter(|v| !v.is_empty());
    let Some(provided) = get("Signature") else {
        if let Some(auth) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("ACS3-"))
        {
            return verify_v3(req, headers, auth, now, lookup, nonces);
        }
        return Err(RpcError::incomplete("The Signature parameter is missing."));
    };
    let Some(ak) = get("AccessKeyId") else {
        return Err(RpcError::incomplete(
            "The AccessKeyId parameter is missing.",
        ));
    };
    match get("SignatureMethod") {
        Some("HMAC-SHA1") => {}
        Some(m) => {
            return Err(RpcError::incomplete(&format!(
                "SignatureMethod {m:?} is not supported; use HMAC-SHA1."
            )))
        }
        None => {
            return Err(RpcError::incomplete(
                "The SignatureMethod parameter is missing.",
            ))
        }
    }
    if let Some(v) = get("SignatureVersion") {
        if v != "1.0" {
            return Err(RpcError::incomplete(&format!(
                "SignatureVersion {v:?} is not supported; use 1.0."
            )));
        }
    }
    let Some(nonce) = get("SignatureNonce") else {
        return Err(RpcError::incomplete(
            "The SignatureNonce parameter is missing.",
        ));
    };
    let Some(ts) = get("Timestamp") else {
        return Err(RpcError::incomplete("The Timestamp parameter is missing."));
    };
    check_time(ts, now)?;
    let key = find_key(ak, lookup)?;
    let sts = string_to_sign(&req.method, &req.params);
    if signature(&sts, &key.secret) != provided {
        return Err(mismatch(&sts));
    }
    accept(key, ak, get("SecurityToken"), nonce, now, nonces)
}

fn check_time(ts: &str, now: SystemTime) -> Result<(), RpcError> {
    let Some(t) = parse_timestamp(ts) else {
        return Err(RpcError::new(
            400,
            "InvalidTimeStamp.Format",
            format!("Specified time stamp or date value is not well formatted: {ts:?}; expected yyyy-MM-ddTHH:mm:ssZ."),
        ));
    };
    let skew = now.duration_since(t).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(RpcError::new(
            400,
            "InvalidTimeStamp.Expired",
            format!(
                "Specified time stamp or date value is expired. Timestamp {ts} differs from the server time {} by more than 15 minutes.",
                chrono::DateTime::<chrono::Utc>::from(now).format("%Y-%m-%dT%H:%M:%SZ")
            ),
        ));
    }
    Ok(())
}

fn find_key(ak: &str, lookup: &dyn Fn(&str) -> Option<KeyInfo>) -> Result<KeyInfo, RpcError> {
    lookup(ak).ok_or_else(|| {
        RpcError::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    })
}

fn mismatch(sts: &str) -> RpcError {
    // The string-to-sign goes back to the caller (as real servers do) but not into our logs:
    // it carries the SecurityToken.
    tracing::debug!("RPC signature mismatch");
    RpcError::new(
        400,
        "SignatureDoesNotMatch",
        format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
    )
}

/// The checks after a valid signature: STS token, then nonce reuse.
fn accept(
    key: KeyInfo,
    ak: &str,
    security_token: Option<&str>,
    nonce: &str,
    now: SystemTime,
    nonces: &mut Nonces,
) -> Result<Caller, RpcError> {
    if let Some((token, expires)) = &key.token {
        match security_token.filter(|t| !t.is_empty()) {
            None => {
                return Err(RpcError::new(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "The temporary AccessKey needs its SecurityToken.",
                ))
            }
            Some(t) if t != token => {
                return Err(RpcError::new(
                    400,
                    "InvalidSecurityToken.Malformed",
                    "Specified SecurityToken is malformed or does not belong to the AccessKey.",
                ))
            }
            Some(_) => {}
        }
        if now >= *expires {
            return Err(RpcError::new(
                400,
                "InvalidSecurityToken.Expired",
                "Specified SecurityToken is expired.",
            ));
        }
    }
    if !nonces.check_and_insert(ak, nonce, now) {
        return Err(RpcError::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok(Caller {
        access_key_id: ak.to_string(),
        account: key.account,
        temporary: key.token.is_some(),
    })
}

/// V3 (`ACS3-HMAC-SHA256`): canonical request over the query string, the signed headers and
/// the body hash (reference §2.2).
fn verify_v3(
    req: &RpcRequest,
    headers: &HeaderMap,
    auth: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
    nonces: &mut Nonces,
) -> Result<Caller, RpcError> {
    let Some(rest) = auth.strip_prefix("ACS3-HMAC-SHA256 ") else {
        return Err(RpcError::incomplete(
            "Only ACS3-HMAC-SHA256 is supported for V3 signatures.",
        ));
    };
    let mut fields = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            fields.insert(k.trim(), v.trim());
        }
    }
    let (Some(ak), Some(signed), Some(provided)) = (
        fields.get("Credential").copied(),
        fields.get("SignedHeaders").copied(),
        fields.get("Signature").copied(),
    ) else {
        return Err(RpcError::incomplete(
            "Authorization needs Credential, SignedHeaders and Signature.",
        ));
    };
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let signed_list: Vec<&str> = signed.split(';').collect();
    for name in headers.keys().map(|n| n.as_str()) {
        if (name == "host" || name.starts_with("x-acs-")) && !signed_list.contains(&name) {
            return Err(RpcError::incomplete(&format!(
                "The header {name} must be signed."
            )));
        }
    }
    let (Some(ts), Some(nonce), Some(payload)) = (
        h("x-acs-date"),
        h("x-acs-signature-nonce"),
        h("x-acs-content-sha256"),
    ) else {
        return Err(RpcError::incomplete(
            "x-acs-date, x-acs-signature-nonce and x-acs-content-sha256 are required.",
        ));
    };
    check_time(ts, now)?;
    if payload != req.body_sha256 {
        return Err(RpcError::new(
            400,
            "SignatureDoesNotMatch",
            "x-acs-content-sha256 does not match the SHA-256 of the request body.",
        ));
    }
    let key = find_key(ak, lookup)?;
    let mut q: Vec<(String, String)> = req.params[..req.query_count]
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    q.sort();
    let cq = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let ch: String = signed_list
        .iter()
        .map(|n| {
            let v = headers
                .get_all(*n)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(",");
            format!("{n}:{v}\n")
        })
        .collect();
    let canonical = format!("{}\n/\n{cq}\n{ch}\n{signed}\n{payload}", req.method);
    let sts = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.secret.as_bytes()).expect("any key length");
    mac.update(sts.as_bytes());
    if hex::encode(mac.finalize().into_bytes()) != provided {
        return Err(mismatch(&sts));
    }
    accept(key, ak, h("x-acs-security-token"), nonce, now, nonces)
}

pub(crate) fn decode_form(raw: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

/// True when a request on path `/` is an RPC call rather than an OSS one.
pub(crate) fn is_rpc(parts: &http::request::Parts) -> bool {
    if parts.uri.path() != "/" {
        return false;
    }
    let q = parts.uri.query().unwrap_or("");
    let has = |n: &str| {
        q.split('&')
            .any(|p| p == n || p.starts_with(&format!("{n}=")))
    };
    (has("Action") && has("Version"))
        || parts.headers.contains_key("x-acs-action")
        || (parts.method == Method::POST
            && parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")))
}

fn json_to_xml(out: &mut String, name: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::Array(items) => {
            for i in items {
                json_to_xml(out, name, i);
            }
        }
        serde_json::Value::Object(m) => {
            out.push_str(&format!("<{name}>"));
            for (k, v) in m {
                json_to_xml(out, k, v);
            }
            out.push_str(&format!("</{name}>"));
        }
        serde_json::Value::Null => out.push_str(&format!("<{name}/>")),
        serde_json::Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", esc(s))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

fn body_of(b: Vec<u8>) -> Body {
    Full::new(Bytes::from(b))
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn render(
    status: u16,
    root: &str,
    v: &serde_json::Value,
    json: bool,
    request_id: &str,
) -> Response<Body> {
    let (ct, body) = if json {
        (
            "application/json;charset=utf-8",
            serde_json::to_vec(v).unwrap_or_default(),
        )
    } else {
        let mut s = String::from("<?xml version='1.0' encoding='UTF-8'?>");
        json_to_xml(&mut s, root, v);
        ("text/xml;charset=utf-8", s.into_bytes())
    };
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .header("x-acs-request-id", request_id)
        .body(body_of(body))
        .expect("valid response")
}

pub(crate) fn error_json(
    e: &RpcError,
    req: &RpcRequest,
    product: Option<Product>,
) -> serde_json::Value {
    let product = product.map(Product::label).unwrap_or("Ecs");
    serde_json::json!({
        "RequestId": req.request_id,
        "HostId": req.host_id,
        "Code": e.code,
        "Message": e.message,
        "Recommend": format!(
            "https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={}",
            e.code, req.request_id
        ),
    })
}

/// UTC `yyyy-MM-ddTHH:mm:ssZ`.
pub(crate) fn ts(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A request ID shaped like the real ones (upper-case UUID).
pub fn new_request_id() -> String {
    let h = hex::encode_upper(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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
        p(&[
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
            (
                "SecurityToken",
                "CAIS8gF1q6Ft5B2yfSjIr5bSEsj3trZs0a+GVEzDmW4/Y+1uvpTjlDz2IH1Ee3ZtB+4Zs/8zmGpW7/4clqF+T5pI",
            ),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "6f1d2c3b-4a59-4e8f-9a0b-c1d2e3f4a5b6"),
            ("SignatureVersion", "1.0"),
            ("Tag.1.Key", "source"),
            ("Tag.1.Value", "cn-hangzhou/m-bp1abc"),
            ("Timestamp", "2024-05-01T08:31:05Z"),
            ("Version", "2014-05-26"),
        ])
    }

    fn v1d() -> Vec<(String, String)> {
        // Query and form body merged, in transmission order (not sorted).
        let mut v = p(&[
            ("AccessKeyId", "LTAI5tExampleKeyId01"),
            ("Action", "AssumeRole"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "0d1f2e3c-4b5a-6978-8a9b-acbdcedf0011"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2024-05-01T08:40:00Z"),
            ("Version", "2015-04-01"),
        ]);
        v.extend(decode_form(
            "DurationSeconds=3600&RoleArn=acs%3Aram%3A%3A1234567890123456%3Arole%2Fimage-migrator&RoleSessionName=ecs-image-migrate",
        ));
        v
    }

    fn with_type(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
        v.push(("SignatureType".into(), String::new()));
        v
    }

    #[test]
    fn reference_v1_vectors() {
        let a = string_to_sign("GET", &v1a());
        assert_eq!(a, "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26");
        assert_eq!(signature(&a, "testsecret"), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        let b = string_to_sign("GET", &v1b());
        assert_eq!(b, "GET&%2F&AccessKeyId%3DLTAI5tExampleKeyId01%26Action%3DDescribeTaskAttribute%26Format%3DJSON%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Db0c4d6e1-7a2f-4f0e-9d3b-5a6c7e8f9012%26SignatureVersion%3D1.0%26TaskId%3Dt-bp1example0000001%26Timestamp%3D2024-05-01T08%253A30%253A00Z%26Version%3D2014-05-26");
        let sec = "ExampleSecret0123456789abcdefXYZ";
        assert_eq!(signature(&b, sec), "04Zprs2aDthwgohcfZptxxdkA3w=");
        let c = string_to_sign("POST", &v1c());
        assert_eq!(c, "POST&%2F&AccessKeyId%3DSTS.NExampleTempKeyId%26Action%3DImportImage%26Architecture%3Dx86_64%26BootMode%3DUEFI%26Description%3Da%2520b%252Ac~d%252Be%252Ff%253Dg%2526h%253A%25E4%25B8%25AD%25E6%2596%2587%2521%2527%2528%2529%26DiskDeviceMapping.1.DiskImageSize%3D40%26DiskDeviceMapping.1.Format%3DQCOW2%26DiskDeviceMapping.1.OSSBucket%3Dmy-bucket-eu%26DiskDeviceMapping.1.OSSObject%3Dexports%252Fimg%25201%252B2.qcow2%26Features.NvmeSupport%3Dsupported%26Format%3DJSON%26ImageName%3Dmigrated-img_01%26OSType%3Dlinux%26Platform%3DOthers%2520Linux%26RegionId%3Deu-central-1%26SecurityToken%3DCAIS8gF1q6Ft5B2yfSjIr5bSEsj3trZs0a%252BGVEzDmW4%252FY%252B1uvpTjlDz2IH1Ee3ZtB%252B4Zs%252F8zmGpW7%252F4clqF%252BT5pI%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D6f1d2c3b-4a59-4e8f-9a0b-c1d2e3f4a5b6%26SignatureVersion%3D1.0%26Tag.1.Key%3Dsource%26Tag.1.Value%3Dcn-hangzhou%252Fm-bp1abc%26Timestamp%3D2024-05-01T08%253A31%253A05Z%26Version%3D2014-05-26");
        assert_eq!(
            signature(&c, "TempSecret/with+chars="),
            "TK/PC1DK5krqhdzJ2YOCWziTPak="
        );
        let d = string_to_sign("POST", &v1d());
        assert_eq!(d, "POST&%2F&AccessKeyId%3DLTAI5tExampleKeyId01%26Action%3DAssumeRole%26DurationSeconds%3D3600%26Format%3DJSON%26RoleArn%3Dacs%253Aram%253A%253A1234567890123456%253Arole%252Fimage-migrator%26RoleSessionName%3Decs-image-migrate%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D0d1f2e3c-4b5a-6978-8a9b-acbdcedf0011%26SignatureVersion%3D1.0%26Timestamp%3D2024-05-01T08%253A40%253A00Z%26Version%3D2015-04-01");
        assert_eq!(signature(&d, sec), "MtvaEpdZMiLEmY8iTVq6690tsg0=");
        assert_eq!(
            signature(&string_to_sign("GET", &v1d()), sec),
            "LUmVsLtQGUR/Q87vGlg2fKclpWQ="
        );
        // The SignatureType= variants.
        assert_eq!(
            signature(&string_to_sign("GET", &with_type(v1a())), "testsecret"),
            "l2RHWHoXOKbFEAkq17TTwV31vac="
        );
        assert_eq!(
            signature(&string_to_sign("GET", &with_type(v1b())), sec),
            "nPEvrqdHlspitkgMKJ5Z2jYy+90="
        );
        assert_eq!(
            signature(
                &string_to_sign("POST", &with_type(v1c())),
                "TempSecret/with+chars="
            ),
            "jmXjoVcolBsFfZk73Eh9dztlp0Q="
        );
    }

    fn req(method: &str, mut params: Vec<(String, String)>, sig: &str) -> RpcRequest {
        params.push(("Signature".into(), sig.into()));
        RpcRequest {
            method: method.into(),
            query_count: params.len(),
            params,
            host_id: "ecs.cn-hangzhou.aliyuncs.com".into(),
            request_id: "R".into(),
            body_sha256: EMPTY_SHA256.into(),
        }
    }

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn v3_request(
        method: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (RpcRequest, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let r = RpcRequest {
            method: method.into(),
            query_count: query.len(),
            params: p(query),
            host_id: "ecs-cn-hangzhou.aliyuncs.com".into(),
            request_id: "R".into(),
            body_sha256: EMPTY_SHA256.into(),
        };
        (r, h)
    }

    const EXPORT_QUERY: &[(&str, &str)] = &[
        ("ImageFormat", "qcow2"),
        ("ImageId", "m-bp1example0000001"),
        ("OSSBucket", "my-export-bucket"),
        ("OSSPrefix", "mig2024"),
        ("RegionId", "cn-hangzhou"),
        ("RoleName", "AliyunECSImageExportDefaultRole"),
    ];

    #[test]
    fn reference_v3_vectors() {
        let sec = "ExampleSecret0123456789abcdefXYZ";
        let now = parse_timestamp("2024-05-01T08:30:10Z").unwrap();
        let lk = |ak: &str| (ak == "LTAI5tExampleKeyId01").then(|| key(sec, None));
        // V3-A: every header the SDK sent is signed.
        let (r, h) = v3_request(
            "POST",
            EXPORT_QUERY,
            &[
                ("accept", "application/json"),
                ("host", "ecs-cn-hangzhou.aliyuncs.com"),
                ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.6"),
                ("x-acs-action", "ExportImage"),
                ("x-acs-content-sha256", EMPTY_SHA256),
                ("x-acs-credentials-provider", "static_ak"),
                ("x-acs-date", "2024-05-01T08:30:00Z"),
                ("x-acs-signature-nonce", "3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e"),
                ("x-acs-version", "2014-05-26"),
                ("authorization", "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId01,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=9c404b555d262677ae737a4fd36d57c1e399c3afe81f5d0050525d798e9c8f00"),
            ],
        );
        assert_eq!(r.action_in(&h), "ExportImage");
        assert_eq!(r.version_in(&h), "2014-05-26");
        verify(&r, &h, now, &lk, &mut Nonces::default()).unwrap();
        // V3-B: the minimal signed set.
        let minimal = [
            ("host", "ecs-cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", "ExportImage"),
            ("x-acs-content-sha256", EMPTY_SHA256),
            ("x-acs-date", "2024-05-01T08:30:00Z"),
            (
                "x-acs-signature-nonce",
                "3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e",
            ),
            ("x-acs-version", "2014-05-26"),
        ];
        let auth_b = "ACS3-HMAC-SHA256 Credential=LTAI5tExampleKeyId01,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=578fdc9b954d915e1da6b4434dfdd8006a9f3c8db9878c95f1d419305782fabc";
        let mut hb = minimal.to_vec();
        hb.push(("authorization", auth_b));
        let (r, h) = v3_request("POST", EXPORT_QUERY, &hb);
        verify(&r, &h, now, &lk, &mut Nonces::default()).unwrap();
        // Tampered query value, wrong method, unsigned x-acs header, wrong body hash.
        // A wrong secret echoes the reference's string-to-sign.
        let other = |_: &str| Some(key("wrong", None));
        let e = verify(&r, &h, now, &other, &mut Nonces::default()).unwrap_err();
        assert!(
            e.message.ends_with(
                "server string to sign is:ACS3-HMAC-SHA256\n7d6e661e761b1bf54ba30846cd580486944b742a352e30bb9f08f415f5ea13e4"
            ),
            "{}",
            e.message
        );
        let mut q = EXPORT_QUERY.to_vec();
        q[0].1 = "raw";
        let (r2, h2) = v3_request("POST", &q, &hb);
        let e = verify(&r2, &h2, now, &lk, &mut Nonces::default()).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert!(
            e.message
                .contains("server string to sign is:ACS3-HMAC-SHA256\n"),
            "{}",
            e.message
        );
        let (r3, h3) = v3_request("GET", EXPORT_QUERY, &hb);
        assert_eq!(
            verify(&r3, &h3, now, &lk, &mut Nonces::default())
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );
        let mut extra = hb.clone();
        extra.push(("x-acs-extra", "1"));
        let (r4, h4) = v3_request("POST", EXPORT_QUERY, &extra);
        assert_eq!(
            verify(&r4, &h4, now, &lk, &mut Nonces::default())
                .unwrap_err()
                .code,
            "IncompleteSignature"
        );
        let (mut r5, h5) = v3_request("POST", EXPORT_QUERY, &hb);
        r5.body_sha256 = "00".into();
        assert_eq!(
            verify(&r5, &h5, now, &lk, &mut Nonces::default())
                .unwrap_err()
                .code,
            "SignatureDoesNotMatch"
        );

        // V3-C: GET with STS credentials.
        let token = "CAIStoken+/=";
        let (r, h) = v3_request(
            "GET",
            &[
                ("PageSize", "50"),
                ("RegionId", "cn-hangzhou"),
                ("TaskIds", "t-1,t-2"),
                ("TaskStatus", "Processing"),
            ],
            &[
                ("host", "ecs-cn-hangzhou.aliyuncs.com"),
                ("x-acs-accesskey-id", "STS.NExampleTempKeyId"),
                ("x-acs-action", "DescribeTasks"),
                ("x-acs-content-sha256", EMPTY_SHA256),
                ("x-acs-date", "2024-05-01T08:30:00Z"),
                ("x-acs-security-token", token),
                ("x-acs-signature-nonce", "3a5d7c9e-1b2f-4a6d-8e0c-2f4b6d8a0c1e"),
                ("x-acs-version", "2014-05-26"),
                ("authorization", "ACS3-HMAC-SHA256 Credential=STS.NExampleTempKeyId,SignedHeaders=host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,Signature=d5aca87d313dcbb9f104340fa21c0768ed182fcc1d6a32101f25048ebade1881"),
            ],
        );
        let sts = |_: &str| {
            Some(key(
                "TempSecret/with+chars=",
                Some((token, now + Duration::from_secs(60))),
            ))
        };
        assert!(
            verify(&r, &h, now, &sts, &mut Nonces::default())
                .unwrap()
                .temporary
        );
    }

    fn key(secret: &str, token: Option<(&str, SystemTime)>) -> KeyInfo {
        KeyInfo {
            secret: secret.into(),
            account: "acct".into(),
            token: token.map(|(t, e)| (t.to_string(), e)),
        }
    }

    #[test]
    fn verifier_accepts_vectors_and_rejects_tampering() {
        let sec = "ExampleSecret0123456789abcdefXYZ";
        let at = |ts: &str| parse_timestamp(ts).unwrap() + Duration::from_secs(60);
        let h = HeaderMap::new();
        let lk = |ak: &str| (ak == "LTAI5tExampleKeyId01").then(|| key(sec, None));
        let mut n = Nonces::default();
        let ok = req("GET", v1b(), "04Zprs2aDthwgohcfZptxxdkA3w=");
        let c = verify(&ok, &h, at("2024-05-01T08:30:00Z"), &lk, &mut n).unwrap();
        assert_eq!(c.account, "acct");
        assert!(!c.temporary);
        // Same nonce again → SignatureNonceUsed.
        let e = verify(&ok, &h, at("2024-05-01T08:30:00Z"), &lk, &mut n).unwrap_err();
        assert_eq!(e.code, "SignatureNonceUsed");
        // V1-D with the form parameters merged, and with SignatureType=.
        let mut n = Nonces::default();
        let d = req("POST", v1d(), "MtvaEpdZMiLEmY8iTVq6690tsg0=");
        verify(&d, &h, at("2024-05-01T08:40:00Z"), &lk, &mut n).unwrap();
        let bt = req("GET", with_type(v1b()), "nPEvrqdHlspitkgMKJ5Z2jYy+90=");
        verify(
            &bt,
            &h,
            at("2024-05-01T08:30:00Z"),
            &lk,
            &mut Nonces::default(),
        )
        .unwrap();
        // Wrong method, tampered value, wrong secret.
        let e = verify(
            &req("POST", v1b(), "04Zprs2aDthwgohcfZptxxdkA3w="),
            &h,
            at("2024-05-01T08:30:00Z"),
            &lk,
            &mut Nonces::default(),
        )
        .unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "SignatureDoesNotMatch"));
        assert!(e
            .message
            .ends_with("server string to sign is:POST&%2F&AccessKeyId%3DLTAI5tExampleKeyId01%26Action%3DDescribeTaskAttribute%26Format%3DJSON%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3Db0c4d6e1-7a2f-4f0e-9d3b-5a6c7e8f9012%26SignatureVersion%3D1.0%26TaskId%3Dt-bp1example0000001%26Timestamp%3D2024-05-01T08%253A30%253A00Z%26Version%3D2014-05-26"));
        let mut tampered = v1b();
        tampered[7].1 = "t-other".into();
        let e = verify(
            &req("GET", tampered, "04Zprs2aDthwgohcfZptxxdkA3w="),
            &h,
            at("2024-05-01T08:30:00Z"),
            &lk,
            &mut Nonces::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        let lk2 = |_: &str| Some(key("other", None));
        let e = verify(
            &ok,
            &h,
            at("2024-05-01T08:30:00Z"),
            &lk2,
            &mut Nonces::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        // Unknown key, skew, missing pieces.
        let none = |_: &str| None;
        let e = verify(
            &ok,
            &h,
            at("2024-05-01T08:30:00Z"),
            &none,
            &mut Nonces::default(),
        )
        .unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (404, "InvalidAccessKeyId.NotFound")
        );
        let late = parse_timestamp("2024-05-01T08:46:01Z").unwrap();
        let e = verify(&ok, &h, late, &lk, &mut Nonces::default()).unwrap_err();
        assert_eq!(e.code, "InvalidTimeStamp.Expired");
        let early = parse_timestamp("2024-05-01T08:14:00Z").unwrap();
        let e = verify(&ok, &h, early, &lk, &mut Nonces::default()).unwrap_err();
        assert_eq!(e.code, "InvalidTimeStamp.Expired");
        let mut no_sig = ok.clone();
        no_sig.params.retain(|(k, _)| k != "Signature");
        let e = verify(
            &no_sig,
            &h,
            at("2024-05-01T08:30:00Z"),
            &lk,
            &mut Nonces::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "IncompleteSignature");
        let mut bad_ts = ok.clone();
        for (k, v) in bad_ts.params.iter_mut() {
            if k == "Timestamp" {
                *v = "2024-05-01 08:30:00".into();
            }
        }
        let e = verify(
            &bad_ts,
            &h,
            at("2024-05-01T08:30:00Z"),
            &lk,
            &mut Nonces::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidTimeStamp.Format");
    }

    #[test]
    fn sts_token_checks() {
        let now = parse_timestamp("2024-05-01T08:31:30Z").unwrap();
        let h = HeaderMap::new();
        let token = "CAIS8gF1q6Ft5B2yfSjIr5bSEsj3trZs0a+GVEzDmW4/Y+1uvpTjlDz2IH1Ee3ZtB+4Zs/8zmGpW7/4clqF+T5pI";
        let sec = "TempSecret/with+chars=";
        let c = req("POST", v1c(), "TK/PC1DK5krqhdzJ2YOCWziTPak=");
        let valid = |_: &str| Some(key(sec, Some((token, now + Duration::from_secs(60)))));
        assert!(
            verify(&c, &h, now, &valid, &mut Nonces::default())
                .unwrap()
                .temporary
        );
        let other = |_: &str| Some(key(sec, Some(("other", now + Duration::from_secs(60)))));
        let e = verify(&c, &h, now, &other, &mut Nonces::default()).unwrap_err();
        assert_eq!(e.code, "InvalidSecurityToken.Malformed");
        let expired = |_: &str| Some(key(sec, Some((token, now - Duration::from_secs(1)))));
        let e = verify(&c, &h, now, &expired, &mut Nonces::default()).unwrap_err();
        assert_eq!(e.code, "InvalidSecurityToken.Expired");
    }

    #[test]
    fn debug_redacts_secrets() {
        let r = req("POST", v1c(), "TK/PC1DK5krqhdzJ2YOCWziTPak=");
        let d = format!("{r:?}");
        assert!(!d.contains("TK/PC1DK5") && !d.contains("CAIS8gF1"), "{d}");
        assert!(d.contains("ImportImage"));
    }

    #[test]
    fn encoding_and_xml() {
        assert_eq!(percent_encode("a b*~+/中"), "a%20b%2A~%2B%2F%E4%B8%AD");
        assert_eq!(
            decode_form("a=1%2B2&b=x+y"),
            p(&[("a", "1+2"), ("b", "x y")])
        );
        let mut s = String::new();
        json_to_xml(
            &mut s,
            "R",
            &serde_json::json!({"Images":{"Image":[{"ImageId":"m-1"},{"ImageId":"m-2"}]},"TotalCount":2}),
        );
        assert_eq!(
            s,
            "<R><Images><Image><ImageId>m-1</ImageId></Image><Image><ImageId>m-2</ImageId></Image></Images><TotalCount>2</TotalCount></R>"
        );
    }
}
