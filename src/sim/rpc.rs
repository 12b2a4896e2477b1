//! The RPC side of the simulated cloud (ECS, RAM, STS): request parsing, its own V1
//! (HMAC-SHA1) signature verifier, the error JSON, and the dispatch by `Action` + `Version`.
//!
//! The verifier signs whatever parameters it received (query ∪ form body, minus `Signature`),
//! never a fixed list, so SDKs that add `SignatureType=` verify too. It shares no code with the
//! client signer in `crate::ecs`: the simulator must catch client signing bugs, not repeat them.
//!
//! Choices where the reference is silent or UNCONFIRMED:
//! * a missing `Signature` / `AccessKeyId` / `SignatureNonce` / `Timestamp`, or a
//!   `SignatureMethod` other than `HMAC-SHA1`, is `400 IncompleteSignature`;
//! * the `Timestamp` window is ±15 minutes; nonces are remembered per AccessKey for 15 minutes;
//! * STS token problems (`InvalidSecurityToken.*`) are HTTP 400;
//! * V3 (`ACS3-HMAC-SHA256`) requests are refused with `400 IncompleteSignature`;
//! * without `Format=JSON` (any case) the answer is XML, as on the real service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use sha1::Sha1;

use super::auth::KeyInfo;
use super::server::{Body, Shared};
use super::xml::esc;

/// ECS API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// RAM API version.
pub const RAM_VERSION: &str = "2015-05-01";
/// STS API version.
pub const STS_VERSION: &str = "2015-04-01";

const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
const NONCE_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_FORM: usize = 1 << 20;

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
    fn from_version(v: &str) -> Option<Self> {
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

/// One parsed RPC request.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    pub method: String,
    /// Query and form parameters as received (decoded).
    pub params: Vec<(String, String)>,
    pub host_id: String,
    pub request_id: String,
}

impl RpcRequest {
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

    fn json(&self) -> bool {
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
        let v3 = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("ACS3-"));
        return Err(RpcError::incomplete(if v3 {
            "This simulator verifies RPC signature V1 (HMAC-SHA1) only."
        } else {
            "The Signature parameter is missing."
        }));
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
    let Some(key) = lookup(ak) else {
        return Err(RpcError::new(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    };
    let sts = string_to_sign(&req.method, &req.params);
    if signature(&sts, &key.secret) != provided {
        tracing::debug!(string_to_sign = %sts, "RPC signature mismatch");
        return Err(RpcError::new(
            400,
            "SignatureDoesNotMatch",
            format!("Specified signature is not matched with our calculation. server string to sign is:{sts}"),
        ));
    }
    if let Some((token, expires)) = &key.token {
        match get("SecurityToken") {
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

fn decode_form(raw: &str) -> Vec<(String, String)> {
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

fn render(status: u16, root: &str, v: &serde_json::Value, json: bool) -> Response<Body> {
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
        .body(body_of(body))
        .expect("valid response")
}

fn error_json(e: &RpcError, req: &RpcRequest, product: Option<Product>) -> serde_json::Value {
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

/// Serves one RPC request end to end: parse, verify, dispatch, render.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    parts: http::request::Parts,
    body: Incoming,
    host_id: String,
) -> Response<Body> {
    let mut params = decode_form(parts.uri.query().unwrap_or(""));
    let form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let raw = match http_body_util::Limited::new(body, MAX_FORM).collect().await {
        Ok(c) => Some(c.to_bytes()),
        Err(_) => None,
    };
    let mut req = RpcRequest {
        method: parts.method.as_str().to_string(),
        params: Vec::new(),
        host_id,
        request_id: new_request_id(),
    };
    let Some(raw) = raw else {
        req.params = params;
        let e = RpcError::new(
            400,
            "InvalidParameter",
            "The request body is too large or was cut off.",
        );
        shared.rpc_record("Unsupported", 400);
        return render(400, "Error", &error_json(&e, &req, None), req.json());
    };
    if form {
        params.extend(decode_form(&String::from_utf8_lossy(&raw)));
    }
    req.params = params;
    let action = req.get("Action").unwrap_or_default().to_string();
    let product = req.get("Version").and_then(Product::from_version);
    let op = if action.is_empty() {
        "Unsupported"
    } else {
        action.as_str()
    };
    let result = dispatch(&shared, &req, &parts.headers, product, &action);
    let resp = match result {
        Ok(mut v) => {
            if let Some(m) = v.as_object_mut() {
                m.insert("RequestId".into(), req.request_id.clone().into());
            }
            render(200, &format!("{action}Response"), &v, req.json())
        }
        Err(e) => {
            tracing::debug!(action = %action, code = %e.code, status = e.status, "RPC error");
            render(
                e.status,
                "Error",
                &error_json(&e, &req, product),
                req.json(),
            )
        }
    };
    shared.rpc_record(op, resp.status().as_u16());
    resp
}

fn dispatch(
    shared: &Arc<Shared>,
    req: &RpcRequest,
    headers: &HeaderMap,
    product: Option<Product>,
    action: &str,
) -> Result<serde_json::Value, RpcError> {
    if req.get("Action").filter(|a| !a.is_empty()).is_none() {
        return Err(RpcError::missing("Action"));
    }
    let Some(product) = product else {
        return match req.get("Version") {
            None | Some("") => Err(RpcError::missing("Version")),
            Some(v) => Err(RpcError::new(
                400,
                "InvalidVersion",
                format!("Specified parameter Version {v:?} is not valid."),
            )),
        };
    };
    let known = match product {
        Product::Ecs => super::ecs::ACTIONS.contains(&action),
        Product::Ram => super::ram::ACTIONS.contains(&action),
        Product::Sts => super::sts::ACTIONS.contains(&action),
    };
    if !known {
        return Err(RpcError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        ));
    }
    let caller = {
        let now = shared.sim_now();
        let lookup = |ak: &str| shared.key_lookup(ak);
        let mut nonces = shared.cloud.nonces.lock().expect("nonce lock");
        verify(req, headers, now, &lookup, &mut nonces)?
    };
    if let Some(e) = shared.rpc_fault(action) {
        return Err(e);
    }
    match product {
        Product::Ecs => super::ecs::handle(shared, &caller, req, action),
        Product::Ram => super::ram::handle(shared, &caller, req, action),
        Product::Sts => super::sts::handle(shared, &caller, req, action),
    }
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
            params,
            host_id: "ecs.cn-hangzhou.aliyuncs.com".into(),
            request_id: "R".into(),
        }
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
