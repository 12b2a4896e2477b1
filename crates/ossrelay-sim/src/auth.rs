//! Server-side signature verification (V1 `OSS`, V4 `OSS4-HMAC-SHA256`, both presign forms).
//!
//! Written from the protocol description, independently of the client signer in `src/oss`: the
//! simulator is the other side of the wire and must catch client signing bugs, not share them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Maximum accepted distance between request time and server time.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// V1 sub-resources (oss2 2.19.1's list ∪ `cloudboxes`); only these enter the canonical resource.
const V1_SUBRESOURCES: &[&str] = &[
    "acl",
    "append",
    "asyncFetch",
    "bucketInfo",
    "callback",
    "callback-var",
    "cloudboxes",
    "cname",
    "comp",
    "continuation-token",
    "cors",
    "delete",
    "encryption",
    "endTime",
    "group",
    "httpsConfig",
    "inventory",
    "inventoryId",
    "lifecycle",
    "link",
    "live",
    "location",
    "logging",
    "metaQuery",
    "objectInfo",
    "objectMeta",
    "partNumber",
    "policy",
    "position",
    "qos",
    "qosInfo",
    "referer",
    "regionList",
    "replication",
    "replicationLocation",
    "replicationProgress",
    "requestPayment",
    "resourceGroup",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "security-token",
    "sequential",
    "startTime",
    "stat",
    "status",
    "style",
    "styleName",
    "symlink",
    "tagging",
    "transferAcceleration",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "vod",
    "website",
    "worm",
    "wormExtend",
    "wormId",
    "x-oss-process",
    "x-oss-traffic-limit",
    "x-oss-request-payer",
    "x-oss-async-process",
    "x-oss-write-get-object-response",
    "x-oss-access-point-name",
];

/// The parts of a request a signature covers, already decoded by the router.
pub struct AuthRequest<'a> {
    pub method: &'a str,
    /// Bucket named by Host or path; `None` for service-level requests.
    pub bucket: Option<&'a str>,
    /// Decoded object key; empty for bucket-level requests.
    pub key: &'a str,
    /// Decoded query parameters in request order.
    pub query: &'a [(String, String)],
    pub headers: &'a http::HeaderMap,
}

/// What the verifier needs to know about an AccessKey ID.
#[derive(Clone)]
pub struct KeyInfo {
    pub secret: String,
    pub account: String,
    /// Temporary (STS) credentials: the token the request must carry and its expiry.
    pub token: Option<(String, SystemTime)>,
}

impl std::fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyInfo")
            .field("account", &self.account)
            .field("temporary", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub access_key_id: String,
    pub account: String,
}

/// Why a request was refused; mapped to OSS error XML by the server.
#[derive(Debug, Clone)]
pub enum AuthError {
    /// No Authorization header and no presign query.
    Anonymous,
    /// Missing `Date`/`x-oss-date`.
    MissingDate,
    InvalidAccessKeyId {
        ak: String,
    },
    SecurityTokenExpired {
        ak: String,
    },
    InvalidSecurityToken {
        ak: String,
    },
    SignatureDoesNotMatch {
        ak: String,
        provided: String,
        string_to_sign: String,
        canonical_request: Option<String>,
    },
    RequestTimeTooSkewed {
        request_time: SystemTime,
    },
    PresignExpired {
        expires: SystemTime,
    },
    InvalidArgument {
        message: String,
        ec: &'static str,
    },
}

fn invalid(message: impl Into<String>, ec: &'static str) -> AuthError {
    AuthError::InvalidArgument {
        message: message.into(),
        ec,
    }
}

/// Verifies the request signature. `region` is the region this server serves (V4 scope check),
/// `now` the server clock, `lookup` resolves AccessKey IDs.
pub fn verify(
    req: &AuthRequest<'_>,
    region: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<Principal, AuthError> {
    if let Some(auth) = header(req.headers, "authorization") {
        if let Some(rest) = auth.strip_prefix("OSS4-HMAC-SHA256 ") {
            return verify_v4_header(req, rest, region, now, lookup);
        }
        if let Some(rest) = auth.strip_prefix("OSS ") {
            return verify_v1_header(req, rest, now, lookup);
        }
        return Err(invalid(
            "Authorization header is invalid: unsupported signature scheme.",
            "0002-00000201",
        ));
    }
    if query_get(req.query, "x-oss-signature-version").is_some() {
        return verify_v4_presign(req, region, now, lookup);
    }
    if query_get(req.query, "OSSAccessKeyId").is_some() {
        return verify_v1_presign(req, now, lookup);
    }
    Err(AuthError::Anonymous)
}

fn header<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_get<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn lookup_key(
    ak: &str,
    presented_token: Option<&str>,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<KeyInfo, AuthError> {
    let info = lookup(ak).ok_or_else(|| AuthError::InvalidAccessKeyId { ak: ak.to_string() })?;
    if let Some((token, expires)) = &info.token {
        if presented_token != Some(token.as_str()) {
            return Err(AuthError::InvalidSecurityToken { ak: ak.to_string() });
        }
        if now >= *expires {
            return Err(AuthError::SecurityTokenExpired { ak: ak.to_string() });
        }
    }
    Ok(info)
}

fn check_skew(request_time: SystemTime, now: SystemTime) -> Result<(), AuthError> {
    let diff = match request_time.duration_since(now) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if diff > MAX_SKEW {
        return Err(AuthError::RequestTimeTooSkewed { request_time });
    }
    Ok(())
}

fn hmac_sha1_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(msg);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Byte-wise comparison whose duration does not depend on where the first difference is.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------------------
// V1

fn is_v1_subresource(name: &str) -> bool {
    V1_SUBRESOURCES.contains(&name) || name.starts_with("x-oss-ac-")
}

/// V1 CanonicalizedResource. `x_oss_rule` adds every `x-oss-*` query key (go-sdk-v2's signer).
pub fn v1_canonical_resource(
    bucket: Option<&str>,
    key: &str,
    query: &[(String, String)],
    x_oss_rule: bool,
    excluded: &[&str],
) -> String {
    let mut out = match bucket {
        None => "/".to_string(),
        Some(b) => format!("/{b}/{key}"),
    };
    let mut params: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| !excluded.contains(&k.as_str()))
        .filter(|(k, _)| is_v1_subresource(k) || (x_oss_rule && k.starts_with("x-oss-")))
        .collect();
    params.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (i, (k, v)) in params.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        if !v.is_empty() {
            out.push('=');
            out.push_str(v);
        }
    }
    out
}

/// V1 CanonicalizedOSSHeaders: sorted `name:value\n` lines of every `x-oss-*` header.
pub fn v1_canonical_headers(headers: &http::HeaderMap) -> String {
    let mut names: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| n.starts_with("x-oss-"))
        .collect();
    names.sort();
    names.dedup();
    let mut out = String::new();
    for n in names {
        let joined = joined_values(headers, n);
        out.push_str(n);
        out.push(':');
        out.push_str(&joined);
        out.push('\n');
    }
    out
}

fn joined_values(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// V1 StringToSign; `date` is the Date slot (Date/x-oss-date header, or presign Expires).
pub fn v1_string_to_sign(req: &AuthRequest<'_>, date: &str, resource: &str) -> String {
    let md5 = header(req.headers, "content-md5").unwrap_or("");
    let ctype = header(req.headers, "content-type").unwrap_or("");
    format!(
        "{}\n{}\n{}\n{}\n{}{}",
        req.method,
        md5,
        ctype,
        date,
        v1_canonical_headers(req.headers),
        resource
    )
}

fn v1_check(
    req: &AuthRequest<'_>,
    ak: &str,
    secret: &str,
    provided: &str,
    date: &str,
    excluded: &[&str],
) -> Result<(), AuthError> {
    let mut first = None;
    for x_oss_rule in [true, false] {
        let resource = v1_canonical_resource(req.bucket, req.key, req.query, x_oss_rule, excluded);
        let sts = v1_string_to_sign(req, date, &resource);
        if same(&hmac_sha1_b64(secret.as_bytes(), sts.as_bytes()), provided) {
            return Ok(());
        }
        first.get_or_insert(sts);
    }
    Err(AuthError::SignatureDoesNotMatch {
        ak: ak.to_string(),
        provided: provided.to_string(),
        string_to_sign: first.unwrap_or_default(),
        canonical_request: None,
    })
}

fn verify_v1_header(
    req: &AuthRequest<'_>,
    rest: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<Principal, AuthError> {
    let (ak, sig) = rest
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| invalid("Authorization header is invalid.", "0002-00000201"))?;
    let info = lookup_key(ak, header(req.headers, "x-oss-security-token"), now, lookup)?;
    let date = header(req.headers, "x-oss-date")
        .or_else(|| header(req.headers, "date"))
        .ok_or(AuthError::MissingDate)?;
    let t = httpdate::parse_http_date(date).map_err(|_| AuthError::MissingDate)?;
    check_skew(t, now)?;
    v1_check(req, ak, &info.secret, sig, date, &[])?;
    Ok(Principal {
        access_key_id: ak.to_string(),
        account: info.account,
    })
}

fn verify_v1_presign(
    req: &AuthRequest<'_>,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<Principal, AuthError> {
    let ak = query_get(req.query, "OSSAccessKeyId").unwrap_or_default();
    let expires_s = query_get(req.query, "Expires").unwrap_or_default();
    // A literal '+' in base64 may have arrived unencoded and been decoded as a space.
    let sig = query_get(req.query, "Signature")
        .unwrap_or_default()
        .replace(' ', "+");
    let info = lookup_key(ak, query_get(req.query, "security-token"), now, lookup)?;
    let expires_secs: u64 = expires_s
        .parse()
        .map_err(|_| invalid("Expires is not a valid Unix time.", "0002-00000051"))?;
    let expires = UNIX_EPOCH + Duration::from_secs(expires_secs);
    if now > expires {
        return Err(AuthError::PresignExpired { expires });
    }
    v1_check(
        req,
        ak,
        &info.secret,
        &sig,
        expires_s,
        &["OSSAccessKeyId", "Expires", "Signature"],
    )?;
    Ok(Principal {
        access_key_id: ak.to_string(),
        account: info.account,
    })
}

// ---------------------------------------------------------------------------------------------
// V4

/// Percent-encodes everything except `A-Za-z0-9-._~` (and `/` when `keep_slash`), upper-case hex.
pub fn v4_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// V4 CanonicalRequest for this request. `additional` must already be lower-cased and sorted.
pub fn v4_canonical_request(
    req: &AuthRequest<'_>,
    additional: &[String],
    skip_query: &[&str],
    payload: &str,
) -> String {
    let uri = match req.bucket {
        None => "/".to_string(),
        Some(b) => v4_encode(&format!("/{b}/{}", req.key), true),
    };
    let mut q: Vec<(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !skip_query.contains(&k.as_str()))
        .map(|(k, v)| (v4_encode(k, false), v4_encode(v, false)))
        .collect();
    q.sort();
    let query = q
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut names: Vec<&str> = req
        .headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| {
            n.starts_with("x-oss-")
                || *n == "content-type"
                || *n == "content-md5"
                || additional.iter().any(|a| a == n)
        })
        .collect();
    names.sort();
    names.dedup();
    let mut headers = String::new();
    for n in names {
        headers.push_str(n);
        headers.push(':');
        headers.push_str(&joined_values(req.headers, n));
        headers.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri,
        query,
        headers,
        additional.join(";"),
        payload
    )
}

/// The V4 signing key for (secret, YYYYMMDD, region, product).
pub fn v4_signing_key(secret: &str, date: &str, region: &str, product: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("aliyun_v4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, product.as_bytes());
    hmac_sha256(&k_service, b"aliyun_v4_request")
}

/// V4 StringToSign from the timestamp, scope and canonical request.
pub fn v4_string_to_sign(datetime: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "OSS4-HMAC-SHA256\n{datetime}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

struct Scope {
    ak: String,
    date: String,
    region: String,
    product: String,
}

fn parse_credential(cred: &str, region: &str) -> Result<Scope, AuthError> {
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 5 || parts[0].is_empty() {
        return Err(invalid(
            "Credential is malformed: expected <AccessKeyId>/<date>/<region>/oss/aliyun_v4_request.",
            "0002-00000213",
        ));
    }
    if parts[4] != "aliyun_v4_request" {
        return Err(invalid(
            "Credential must end with /aliyun_v4_request.",
            "0002-00000213",
        ));
    }
    if parts[1].len() != 8 || !parts[1].bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "Credential date must be in YYYYMMDD format.",
            "0002-00000212",
        ));
    }
    if parts[3] != "oss" {
        return Err(invalid(
            format!("Credential product must be oss, not {}.", parts[3]),
            "0002-00000227",
        ));
    }
    if parts[2] != region {
        return Err(invalid(
            format!(
                "Invalid signing region in Authorization header: {} (this endpoint serves {region}).",
                parts[2]
            ),
            "0002-00000226",
        ));
    }
    Ok(Scope {
        ak: parts[0].to_string(),
        date: parts[1].to_string(),
        region: parts[2].to_string(),
        product: parts[3].to_string(),
    })
}

fn parse_v4_time(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    let secs = t.and_utc().timestamp();
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64))
}

fn parse_additional(list: &str) -> Result<Vec<String>, AuthError> {
    if list.trim().is_empty() {
        return Err(invalid(
            "AdditionalHeaders must not be empty when present.",
            "0002-00000209",
        ));
    }
    let mut v: Vec<String> = list
        .split(';')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
fn v4_check(
    req: &AuthRequest<'_>,
    scope: &Scope,
    secret: &str,
    datetime: &str,
    additional: &[String],
    skip_query: &[&str],
    payload: &str,
    provided: &str,
) -> Result<(), AuthError> {
    let canonical = v4_canonical_request(req, additional, skip_query, payload);
    let scope_s = format!(
        "{}/{}/{}/aliyun_v4_request",
        scope.date, scope.region, scope.product
    );
    let sts = v4_string_to_sign(datetime, &scope_s, &canonical);
    let key = v4_signing_key(secret, &scope.date, &scope.region, &scope.product);
    let expected = hex::encode(hmac_sha256(&key, sts.as_bytes()));
    if same(&expected, &provided.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(AuthError::SignatureDoesNotMatch {
            ak: scope.ak.clone(),
            provided: provided.to_string(),
            string_to_sign: sts,
            canonical_request: Some(canonical),
        })
    }
}

fn verify_v4_header(
    req: &AuthRequest<'_>,
    rest: &str,
    region: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<Principal, AuthError> {
    let (mut cred, mut additional, mut sig) = (None, None, None);
    for item in rest.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item.split_once('=').ok_or_else(|| {
            invalid(
                format!("Authorization header element {item:?} is not key=value."),
                "0002-00000204",
            )
        })?;
        match k.trim() {
            "Credential" => cred = Some(v.trim()),
            "AdditionalHeaders" => additional = Some(v.trim()),
            "Signature" => sig = Some(v.trim()),
            other => {
                return Err(invalid(
                    format!("Authorization header has an unknown element {other:?}."),
                    "0002-00000204",
                ))
            }
        }
    }
    let (cred, sig) = match (cred, sig) {
        (Some(c), Some(s)) => (c, s),
        _ => {
            return Err(invalid(
                "Authorization header must contain Credential and Signature.",
                "0002-00000202",
            ))
        }
    };
    let scope = parse_credential(cred, region)?;
    let additional = match additional {
        Some(a) => parse_additional(a)?,
        None => Vec::new(),
    };
    let info = lookup_key(
        &scope.ak,
        header(req.headers, "x-oss-security-token"),
        now,
        lookup,
    )?;
    match header(req.headers, "x-oss-content-sha256") {
        Some("UNSIGNED-PAYLOAD") => {}
        Some(_) => {
            return Err(invalid(
                "x-oss-content-sha256 must be UNSIGNED-PAYLOAD.",
                "0002-00000214",
            ))
        }
        None => {
            return Err(invalid(
                "x-oss-content-sha256 header is required with V4 signatures; set it to UNSIGNED-PAYLOAD.",
                "0002-00000214",
            ))
        }
    }
    let datetime = header(req.headers, "x-oss-date").ok_or(AuthError::MissingDate)?;
    let t = parse_v4_time(datetime).ok_or_else(|| {
        invalid(
            "x-oss-date must be in YYYYMMDDTHHMMSSZ format.",
            "0002-00000212",
        )
    })?;
    check_skew(t, now)?;
    if !datetime.starts_with(&scope.date) {
        return Err(invalid(
            "The date in x-oss-date does not match the credential scope date.",
            "0002-00000212",
        ));
    }
    v4_check(
        req,
        &scope,
        &info.secret,
        datetime,
        &additional,
        &[],
        "UNSIGNED-PAYLOAD",
        sig,
    )?;
    Ok(Principal {
        access_key_id: scope.ak,
        account: info.account,
    })
}

fn verify_v4_presign(
    req: &AuthRequest<'_>,
    region: &str,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<Principal, AuthError> {
    if query_get(req.query, "x-oss-signature-version") != Some("OSS4-HMAC-SHA256") {
        return Err(invalid(
            "x-oss-signature-version must be OSS4-HMAC-SHA256.",
            "0002-00000201",
        ));
    }
    let (Some(cred), Some(sig), Some(datetime), Some(expires)) = (
        query_get(req.query, "x-oss-credential"),
        query_get(req.query, "x-oss-signature"),
        query_get(req.query, "x-oss-date"),
        query_get(req.query, "x-oss-expires"),
    ) else {
        return Err(invalid(
            "A V4 presigned URL needs x-oss-credential, x-oss-date, x-oss-expires and x-oss-signature.",
            "0002-00000202",
        ));
    };
    let scope = parse_credential(cred, region)?;
    let additional = match query_get(req.query, "x-oss-additional-headers") {
        Some(a) => parse_additional(a)?,
        None => Vec::new(),
    };
    let info = lookup_key(
        &scope.ak,
        query_get(req.query, "x-oss-security-token"),
        now,
        lookup,
    )?;
    let t = parse_v4_time(datetime).ok_or_else(|| {
        invalid(
            "x-oss-date must be in YYYYMMDDTHHMMSSZ format.",
            "0002-00000212",
        )
    })?;
    let secs: u64 = expires
        .parse()
        .ok()
        .filter(|s| (1..=604_800).contains(s))
        .ok_or_else(|| invalid("x-oss-expires must be within 1..604800.", "0002-00000232"))?;
    let expiry = t + Duration::from_secs(secs);
    if now > expiry {
        return Err(AuthError::PresignExpired { expires: expiry });
    }
    v4_check(
        req,
        &scope,
        &info.secret,
        datetime,
        &additional,
        &["x-oss-signature"],
        "UNSIGNED-PAYLOAD",
        sig,
    )?;
    Ok(Principal {
        access_key_id: scope.ak,
        account: info.account,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    const AK: &str = "LTAI5tExampleKeyId";
    const SK: &str = "ExampleSecretKey1234567890abcd";
    const V1_DATE: &str = "Wed, 28 Dec 2022 10:27:41 GMT";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn lookup_with(ak: &'static str, sk: &'static str) -> impl Fn(&str) -> Option<KeyInfo> {
        move |a: &str| {
            (a == ak).then(|| KeyInfo {
                secret: sk.to_string(),
                account: "acct".into(),
                token: None,
            })
        }
    }

    fn at(s: &str) -> SystemTime {
        httpdate::parse_http_date(s).unwrap()
    }

    fn unix(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[allow(clippy::too_many_arguments)]
    fn v1_case(
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &[(&str, &str)],
        hdrs: &[(&str, &str)],
        expect_sts: &str,
        auth: &str,
        ak: &'static str,
        sk: &'static str,
    ) {
        let mut hv: Vec<(&str, &str)> = hdrs.to_vec();
        if !hdrs
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-oss-date"))
        {
            hv.push(("Date", V1_DATE));
        }
        hv.push(("Authorization", auth));
        let h = headers(&hv);
        let qv = q(query);
        let req = AuthRequest {
            method,
            bucket,
            key,
            query: &qv,
            headers: &h,
        };
        let resource = v1_canonical_resource(bucket, key, &qv, true, &[]);
        assert_eq!(v1_string_to_sign(&req, V1_DATE, &resource), expect_sts);
        let p = verify(&req, "cn-hangzhou", at(V1_DATE), &lookup_with(ak, sk)).unwrap();
        assert_eq!(p.access_key_id, ak);
        // Same request with a wrong secret must fail with the server's string to sign.
        match verify(&req, "cn-hangzhou", at(V1_DATE), &lookup_with(ak, "wrong")) {
            Err(AuthError::SignatureDoesNotMatch { string_to_sign, .. }) => {
                assert_eq!(string_to_sign, expect_sts)
            }
            other => panic!("expected mismatch, got {other:?}"),
        }
    }

    #[test]
    fn v1_vectors_a_to_i() {
        let b = Some("examplebucket");
        v1_case(
            "GET",
            b,
            "a/b.txt",
            &[],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/a/b.txt",
            "OSS LTAI5tExampleKeyId:oZvYmV0P5vB7mlXUnEjjrwJGCFc=",
            AK,
            SK,
        );
        v1_case(
            "PUT",
            b,
            "nelson",
            &[],
            &[
                ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw=="),
                ("Content-Type", "text/html"),
                ("X-OSS-Meta-Magic", "abracadabra"),
                ("x-oss-meta-author", "alice"),
            ],
            "PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n/examplebucket/nelson",
            "OSS LTAI5tExampleKeyId:ya4Qj1oMguXdy1t2F7NZexVBbrs=",
            AK,
            SK,
        );
        v1_case(
            "PUT",
            b,
            "big/file.bin",
            &[("uploadId", "0004B9894A22E5B1888A1E29F8236E2D"), ("partNumber", "3")],
            &[("Content-Type", "application/octet-stream")],
            "PUT\n\napplication/octet-stream\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/big/file.bin?partNumber=3&uploadId=0004B9894A22E5B1888A1E29F8236E2D",
            "OSS LTAI5tExampleKeyId:ZhEJ0Bz2R2VHkY7r45ZZE845GXw=",
            AK,
            SK,
        );
        v1_case(
            "GET",
            b,
            "",
            &[
                ("list-type", "2"),
                ("prefix", "dir/"),
                ("max-keys", "100"),
                ("continuation-token", "abc"),
            ],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/?continuation-token=abc",
            "OSS LTAI5tExampleKeyId:h0RgFTYaLKaQOlfvCGvtl5QCI/I=",
            AK,
            SK,
        );
        v1_case(
            "POST",
            b,
            "big/file.bin",
            &[("uploads", "")],
            &[("x-oss-storage-class", "IA")],
            "POST\n\n\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-storage-class:IA\n/examplebucket/big/file.bin?uploads",
            "OSS LTAI5tExampleKeyId:JUo93BccjNQsBCx7tXIkA1+f5HU=",
            AK,
            SK,
        );
        v1_case(
            "GET",
            b,
            "obj",
            &[],
            &[
                ("Range", "bytes=0-99"),
                ("x-oss-security-token", "STS.exampletoken"),
            ],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-security-token:STS.exampletoken\n/examplebucket/obj",
            "OSS LTAI5tExampleKeyId:s4ap63MSwlqy6rmaIPYub50x9q4=",
            AK,
            SK,
        );
        v1_case(
            "GET",
            b,
            "",
            &[("location", "")],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/?location",
            "OSS LTAI5tExampleKeyId:Imkr5ZPw1jbhTO51LZkw00TpeeM=",
            AK,
            SK,
        );
        v1_case(
            "GET",
            None,
            "",
            &[],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/",
            "OSS LTAI5tExampleKeyId:aU+PfP9QpGPQei2kncXKFWj44OQ=",
            AK,
            SK,
        );
        v1_case(
            "GET",
            b,
            "目录/文件 1+2.txt",
            &[("versionId", "CAEQ")],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/目录/文件 1+2.txt?versionId=CAEQ",
            "OSS LTAI5tExampleKeyId:6KA9BwWxiMaPkWIyoOPV39EK7Og=",
            AK,
            SK,
        );
    }

    #[test]
    fn v1_go_sdk_vectors() {
        let b = Some("examplebucket");
        let hdrs = [
            ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw=="),
            ("Content-Type", "text/html"),
            ("x-oss-meta-author", "alice"),
            ("x-oss-meta-magic", "abracadabra"),
            ("x-oss-date", V1_DATE),
        ];
        v1_case(
            "PUT",
            b,
            "nelson",
            &[],
            &hdrs,
            "PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-date:Wed, 28 Dec 2022 10:27:41 GMT\nx-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n/examplebucket/nelson",
            "OSS ak:kSHKmLxlyEAKtZPkJhG9bZb5k7M=",
            "ak",
            "sk",
        );
        v1_case(
            "PUT",
            b,
            "nelson",
            &[("acl", "")],
            &hdrs,
            "PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-date:Wed, 28 Dec 2022 10:27:41 GMT\nx-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n/examplebucket/nelson?acl",
            "OSS ak:/afkugFbmWDQ967j1vr6zygBLQk=",
            "ak",
            "sk",
        );
        v1_case(
            "GET",
            b,
            "",
            &[("resourceGroup", ""), ("acl", "")],
            &[("x-oss-date", V1_DATE)],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-date:Wed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/?acl&resourceGroup",
            "OSS ak:x3E5TgOvl/i7PN618s5mEvpJDYk=",
            "ak",
            "sk",
        );
    }

    fn presign_v1(
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        now: SystemTime,
        ak: &'static str,
        sk: &'static str,
    ) -> Result<Principal, AuthError> {
        let h = HeaderMap::new();
        let qv = q(query);
        let req = AuthRequest {
            method: "GET",
            bucket: Some(bucket),
            key,
            query: &qv,
            headers: &h,
        };
        let lookup = move |a: &str| {
            (a == ak).then(|| KeyInfo {
                secret: sk.to_string(),
                account: "acct".into(),
                token: None,
            })
        };
        verify(&req, "cn-hangzhou", now, &lookup)
    }

    #[test]
    fn v1_presign_vectors() {
        let p = presign_v1(
            "examplebucket",
            "a/b.txt",
            &[
                ("OSSAccessKeyId", AK),
                ("Expires", "1700003600"),
                ("Signature", "plfydVF6NHDoKBR6j6BRNNoGG+k="),
            ],
            unix(1700000000),
            AK,
            SK,
        );
        assert!(p.is_ok(), "{p:?}");
        let p = presign_v1(
            "examplebucket",
            "a/b.txt",
            &[
                ("response-content-type", "text/plain"),
                ("security-token", "STS.exampletoken"),
                ("OSSAccessKeyId", AK),
                ("Expires", "1700000060"),
                ("Signature", "VnJZwD0lIil83YoWfVVDcSfutSo="),
            ],
            unix(1700000000),
            AK,
            SK,
        );
        assert!(p.is_ok(), "{p:?}");
        // Expired URL.
        let p = presign_v1(
            "examplebucket",
            "a/b.txt",
            &[
                ("OSSAccessKeyId", AK),
                ("Expires", "1700003600"),
                ("Signature", "plfydVF6NHDoKBR6j6BRNNoGG+k="),
            ],
            unix(1700003601),
            AK,
            SK,
        );
        assert!(matches!(p, Err(AuthError::PresignExpired { .. })));
        // go-sdk-v2 presign vectors.
        let p = presign_v1(
            "bucket",
            "key",
            &[
                ("versionId", "versionId"),
                ("OSSAccessKeyId", "ak"),
                ("Expires", "1699807420"),
                ("Signature", "dcLTea+Yh9ApirQ8o8dOPqtvJXQ="),
            ],
            unix(1699807000),
            "ak",
            "sk",
        );
        assert!(p.is_ok(), "{p:?}");
        let p = presign_v1(
            "bucket",
            "key+123",
            &[
                ("versionId", "versionId"),
                ("security-token", "token"),
                ("OSSAccessKeyId", "ak"),
                ("Expires", "1699808204"),
                ("Signature", "jzKYRrM5y6Br0dRFPaTGOsbrDhY="),
            ],
            unix(1699808000),
            "ak",
            "sk",
        );
        assert!(p.is_ok(), "{p:?}");
    }

    const V4_TIME: &str = "20231216T162057Z";

    #[allow(clippy::too_many_arguments)]
    fn v4_case(
        method: &str,
        bucket: Option<&str>,
        key: &str,
        query: &[(&str, &str)],
        hdrs: &[(&str, &str)],
        region: &str,
        expect_canonical: &str,
        auth: &str,
        ak: &'static str,
        sk: &'static str,
        now: SystemTime,
    ) {
        let mut hv: Vec<(&str, &str)> = hdrs.to_vec();
        hv.push(("Authorization", auth));
        let h = headers(&hv);
        let qv = q(query);
        let req = AuthRequest {
            method,
            bucket,
            key,
            query: &qv,
            headers: &h,
        };
        let additional: Vec<String> = auth
            .split("AdditionalHeaders=")
            .nth(1)
            .map(|s| parse_additional(s.split(',').next().unwrap()).unwrap())
            .unwrap_or_default();
        assert_eq!(
            v4_canonical_request(&req, &additional, &[], "UNSIGNED-PAYLOAD"),
            expect_canonical
        );
        let p = verify(&req, region, now, &lookup_with(ak, sk));
        assert!(p.is_ok(), "{p:?}");
        match verify(&req, region, now, &lookup_with(ak, "nope")) {
            Err(AuthError::SignatureDoesNotMatch {
                canonical_request, ..
            }) => assert_eq!(canonical_request.as_deref(), Some(expect_canonical)),
            other => panic!("expected mismatch, got {other:?}"),
        }
    }

    fn v4_now() -> SystemTime {
        parse_v4_time(V4_TIME).unwrap()
    }

    fn std_v4_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-oss-date", V4_TIME),
        ]
    }

    #[test]
    fn v4_signing_keys() {
        assert_eq!(
            hex::encode(v4_signing_key(SK, "20231216", "cn-hangzhou", "oss")),
            "de5dbc2e8d6967bc66d87cb7030d4f98296a68f29db7404e1dcdaaa020c73371"
        );
        assert_eq!(
            hex::encode(v4_signing_key(SK, "20231216", "us-west-1", "oss")),
            "41ef2e7782ad3660d63a1a7876f729f29a8f06805096254371a44e5d1c984421"
        );
    }

    #[test]
    fn v4_vector_a_both_header_styles() {
        let canonical = "GET\n/examplebucket/a/b.txt\n\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD";
        assert_eq!(
            v4_string_to_sign(V4_TIME, "20231216/cn-hangzhou/oss/aliyun_v4_request", canonical),
            "OSS4-HMAC-SHA256\n20231216T162057Z\n20231216/cn-hangzhou/oss/aliyun_v4_request\naee0234862ebdd1e73dd94c9ab1dd15c69c2a08799fdddfe183f1fe1c9ff8b86"
        );
        for auth in [
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=d14d671915a44ef5a99524039eb6cc951f8369de764cb09c7ab1b16c2b4a57bb",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request, Signature=d14d671915a44ef5a99524039eb6cc951f8369de764cb09c7ab1b16c2b4a57bb",
        ] {
            v4_case(
                "GET",
                Some("examplebucket"),
                "a/b.txt",
                &[],
                &std_v4_headers(),
                "cn-hangzhou",
                canonical,
                auth,
                AK,
                SK,
                v4_now(),
            );
        }
    }

    #[test]
    fn v4_vectors_b_to_i() {
        let b = Some("examplebucket");
        let mut h = std_v4_headers();
        h.extend([
            ("Content-Type", "text/plain"),
            ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw=="),
            ("x-oss-meta-author", "alice"),
        ]);
        v4_case(
            "PUT",
            b,
            "dir/my file+1.txt",
            &[],
            &h,
            "cn-hangzhou",
            "PUT\n/examplebucket/dir/my%20file%2B1.txt\n\ncontent-md5:eB5eJF1ptWaXm4bijSPyxw==\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-meta-author:alice\n\n\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=c0135a8bba8640d724db16e92b01a8c2a4024f45773559a8e85d752e6a1f2b9b",
            AK,
            SK,
            v4_now(),
        );
        v4_case(
            "PUT",
            b,
            "big/file.bin",
            &[("partNumber", "1"), ("uploadId", "0004B9894A22E5B1888A1E29F8236E2D")],
            &std_v4_headers(),
            "cn-hangzhou",
            "PUT\n/examplebucket/big/file.bin\npartNumber=1&uploadId=0004B9894A22E5B1888A1E29F8236E2D\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=c2dabf619e5160c8cc3121832d4bf31821b0b8e5a46423a318740e0028d7e62a",
            AK,
            SK,
            v4_now(),
        );
        v4_case(
            "GET",
            b,
            "",
            &[("list-type", "2"), ("prefix", "dir/sub dir/"), ("max-keys", "10")],
            &std_v4_headers(),
            "us-west-1",
            "GET\n/examplebucket/\nlist-type=2&max-keys=10&prefix=dir%2Fsub%20dir%2F\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/us-west-1/oss/aliyun_v4_request,Signature=ad2d34ed8c82b9d7b30ca17fa2e928355a32ac282b587f80e50dc44b47321942",
            AK,
            SK,
            v4_now(),
        );
        let mut h = std_v4_headers();
        h.extend([
            ("Host", "examplebucket.oss-cn-hangzhou.aliyuncs.com"),
            ("Range", "bytes=0-9"),
        ]);
        v4_case(
            "GET",
            b,
            "obj",
            &[],
            &h,
            "cn-hangzhou",
            "GET\n/examplebucket/obj\n\nhost:examplebucket.oss-cn-hangzhou.aliyuncs.com\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\nhost\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request, Signature=14be9f46bc5b7df3aa483a4c88e31a874e79853a567e45da5f7ea6f627929fa0, AdditionalHeaders=host",
            AK,
            SK,
            v4_now(),
        );
        let mut h = std_v4_headers();
        h.extend([
            ("Date", "Sat, 16 Dec 2023 16:20:57 GMT"),
            ("x-oss-security-token", "STS.exampletoken"),
        ]);
        v4_case(
            "HEAD",
            b,
            "a/b.txt",
            &[],
            &h,
            "cn-hangzhou",
            "HEAD\n/examplebucket/a/b.txt\n\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-security-token:STS.exampletoken\n\n\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=49e6ecd78d5391847c81008890b9b6910e8236d3728ad4abefd8d063c307bef8",
            AK,
            SK,
            v4_now(),
        );
        v4_case(
            "GET",
            b,
            "目录/文件 1+2.txt",
            &[("versionId", "CAEQ")],
            &std_v4_headers(),
            "cn-hangzhou",
            "GET\n/examplebucket/%E7%9B%AE%E5%BD%95/%E6%96%87%E4%BB%B6%201%2B2.txt\nversionId=CAEQ\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=f165cfc5ce2816b6c13036f841781cbdbbee7cec7589b708a35c440a8b27f88c",
            AK,
            SK,
            v4_now(),
        );
    }

    #[test]
    fn v4_go_sdk_vectors() {
        let query = [
            ("param1", "value1"),
            ("+param1", "value3"),
            ("|param1", "value4"),
            ("+param2", ""),
            ("|param2", ""),
            ("param2", ""),
        ];
        let mut h = vec![
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "text/plain"),
            ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ];
        h.push(("x-oss-date", "20231216T162057Z"));
        v4_case(
            "PUT",
            Some("bucket"),
            "1234+-/123/1.txt",
            &query,
            &h,
            "cn-hangzhou",
            "PUT\n/bucket/1234%2B-/123/1.txt\n%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-head1:value\n\n\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe",
            "ak",
            "sk",
            unix(1702743657),
        );
        h.pop();
        h.push(("x-oss-date", "20231216T172512Z"));
        v4_case(
            "PUT",
            Some("bucket"),
            "1234+-/123/1.txt",
            &query,
            &h,
            "cn-hangzhou",
            "PUT\n/bucket/1234%2B-/123/1.txt\n%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\nabc:value\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T172512Z\nx-oss-head1:value\nzabc:value\n\nabc;zabc\nUNSIGNED-PAYLOAD",
            "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,AdditionalHeaders=abc;zabc,Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f",
            "ak",
            "sk",
            unix(1702747512),
        );
    }

    #[test]
    fn v4_presign_vector_p() {
        let h = HeaderMap::new();
        let qv = q(&[
            ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
            ("x-oss-date", "20231216T162057Z"),
            ("x-oss-expires", "3600"),
            (
                "x-oss-credential",
                "LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request",
            ),
            (
                "x-oss-signature",
                "c579bfa518f1d9134750cd2c4c7b002ade3f18d69eebf6a212505cba9a80b4d5",
            ),
        ]);
        let req = AuthRequest {
            method: "GET",
            bucket: Some("examplebucket"),
            key: "a/b.txt",
            query: &qv,
            headers: &h,
        };
        assert_eq!(
            v4_canonical_request(&req, &[], &["x-oss-signature"], "UNSIGNED-PAYLOAD"),
            "GET\n/examplebucket/a/b.txt\nx-oss-credential=LTAI5tExampleKeyId%2F20231216%2Fcn-hangzhou%2Foss%2Faliyun_v4_request&x-oss-date=20231216T162057Z&x-oss-expires=3600&x-oss-signature-version=OSS4-HMAC-SHA256\n\n\nUNSIGNED-PAYLOAD"
        );
        let lookup = lookup_with(AK, SK);
        assert!(verify(&req, "cn-hangzhou", v4_now(), &lookup).is_ok());
        let late = v4_now() + Duration::from_secs(3601);
        assert!(matches!(
            verify(&req, "cn-hangzhou", late, &lookup),
            Err(AuthError::PresignExpired { .. })
        ));
        assert!(matches!(
            verify(&req, "cn-hangzhou", v4_now(), &lookup_with(AK, "bad")),
            Err(AuthError::SignatureDoesNotMatch { .. })
        ));
    }

    #[test]
    fn v4_rejections() {
        let auth = "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=d14d671915a44ef5a99524039eb6cc951f8369de764cb09c7ab1b16c2b4a57bb";
        let run = |hdrs: Vec<(&str, &str)>, region: &str, now: SystemTime| {
            let h = headers(&hdrs);
            let req = AuthRequest {
                method: "GET",
                bucket: Some("examplebucket"),
                key: "a/b.txt",
                query: &[],
                headers: &h,
            };
            verify(&req, region, now, &lookup_with(AK, SK))
        };
        let mut h = std_v4_headers();
        h.push(("Authorization", auth));
        // Wrong scope region.
        assert!(matches!(
            run(h.clone(), "cn-beijing", v4_now()),
            Err(AuthError::InvalidArgument {
                ec: "0002-00000226",
                ..
            })
        ));
        // Skew.
        assert!(matches!(
            run(
                h.clone(),
                "cn-hangzhou",
                v4_now() + Duration::from_secs(16 * 60)
            ),
            Err(AuthError::RequestTimeTooSkewed { .. })
        ));
        assert!(run(
            h.clone(),
            "cn-hangzhou",
            v4_now() + Duration::from_secs(14 * 60)
        )
        .is_ok());
        // Missing x-oss-content-sha256.
        let h2: Vec<_> = h
            .iter()
            .copied()
            .filter(|(k, _)| *k != "x-oss-content-sha256")
            .collect();
        assert!(matches!(
            run(h2, "cn-hangzhou", v4_now()),
            Err(AuthError::InvalidArgument {
                ec: "0002-00000214",
                ..
            })
        ));
        // Unknown element, empty AdditionalHeaders, unknown key.
        let mut h3 = std_v4_headers();
        h3.push(("Authorization", "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Foo=bar,Signature=00"));
        assert!(matches!(
            run(h3, "cn-hangzhou", v4_now()),
            Err(AuthError::InvalidArgument {
                ec: "0002-00000204",
                ..
            })
        ));
        let mut h4 = std_v4_headers();
        h4.push(("Authorization", "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,AdditionalHeaders=,Signature=00"));
        assert!(matches!(
            run(h4, "cn-hangzhou", v4_now()),
            Err(AuthError::InvalidArgument {
                ec: "0002-00000209",
                ..
            })
        ));
        let mut h5 = std_v4_headers();
        h5.push(("Authorization", "OSS4-HMAC-SHA256 Credential=NOPE/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=00"));
        assert!(matches!(
            run(h5, "cn-hangzhou", v4_now()),
            Err(AuthError::InvalidAccessKeyId { .. })
        ));
    }

    #[test]
    fn temporary_credentials() {
        let h = headers(&[
            ("Date", V1_DATE),
            ("x-oss-security-token", "STS.exampletoken"),
            ("Range", "bytes=0-99"),
            (
                "Authorization",
                "OSS LTAI5tExampleKeyId:s4ap63MSwlqy6rmaIPYub50x9q4=",
            ),
        ]);
        let req = AuthRequest {
            method: "GET",
            bucket: Some("examplebucket"),
            key: "obj",
            query: &[],
            headers: &h,
        };
        let now = at(V1_DATE);
        let mk = |token: &'static str, expires: SystemTime| {
            move |a: &str| {
                (a == AK).then(|| KeyInfo {
                    secret: SK.into(),
                    account: "acct".into(),
                    token: Some((token.to_string(), expires)),
                })
            }
        };
        let later = now + Duration::from_secs(60);
        assert!(verify(&req, "cn-hangzhou", now, &mk("STS.exampletoken", later)).is_ok());
        assert!(matches!(
            verify(&req, "cn-hangzhou", now, &mk("STS.other", later)),
            Err(AuthError::InvalidSecurityToken { .. })
        ));
        assert!(matches!(
            verify(&req, "cn-hangzhou", now, &mk("STS.exampletoken", now)),
            Err(AuthError::SecurityTokenExpired { .. })
        ));
    }

    #[test]
    fn v1_skew_and_missing_date() {
        let h = headers(&[
            ("Date", V1_DATE),
            (
                "Authorization",
                "OSS LTAI5tExampleKeyId:oZvYmV0P5vB7mlXUnEjjrwJGCFc=",
            ),
        ]);
        let req = AuthRequest {
            method: "GET",
            bucket: Some("examplebucket"),
            key: "a/b.txt",
            query: &[],
            headers: &h,
        };
        let far = at(V1_DATE) - Duration::from_secs(16 * 60);
        assert!(matches!(
            verify(&req, "cn-hangzhou", far, &lookup_with(AK, SK)),
            Err(AuthError::RequestTimeTooSkewed { .. })
        ));
        let h = headers(&[(
            "Authorization",
            "OSS LTAI5tExampleKeyId:oZvYmV0P5vB7mlXUnEjjrwJGCFc=",
        )]);
        let req = AuthRequest {
            method: "GET",
            bucket: Some("examplebucket"),
            key: "a/b.txt",
            query: &[],
            headers: &h,
        };
        assert!(matches!(
            verify(&req, "cn-hangzhou", at(V1_DATE), &lookup_with(AK, SK)),
            Err(AuthError::MissingDate)
        ));
    }
}
