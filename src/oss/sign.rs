//! Request signing: V4 (`OSS4-HMAC-SHA256`, the default) and V1 (`OSS`, HMAC-SHA1).
//!
//! Everything here is pure: inputs are the request's method, bucket, key, decoded query,
//! headers, time and credentials; outputs are header values. The client signs at send
//! time, on every attempt, so a queued request never carries a stale date.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::credentials::Credentials;

/// Which signature algorithm to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignVersion {
    /// Legacy HMAC-SHA1; closed to new accounts and buckets, kept for old deployments.
    V1,
    /// `OSS4-HMAC-SHA256`, required by new accounts and buckets.
    #[default]
    V4,
}

/// The request facts a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignParams<'a> {
    pub method: &'a str,
    pub bucket: Option<&'a str>,
    /// Raw (decoded) object key.
    pub key: Option<&'a str>,
    /// Decoded query parameters; an empty value means a bare `name`.
    pub query: &'a [(String, String)],
    pub headers: &'a HeaderMap,
}

/// The V4 payload hash OSS requires for header-signed requests.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const V4_ALGORITHM: &str = "OSS4-HMAC-SHA256";
const V4_TERMINATOR: &str = "aliyun_v4_request";
const V4_PRODUCT: &str = "oss";

/// Query names that are V1 sub-resources (signed); all others are not.
const V1_SUB_RESOURCES: &[&str] = &[
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
];

fn is_v1_sub_resource(name: &str) -> bool {
    V1_SUB_RESOURCES.contains(&name) || name.starts_with("x-oss-")
}

/// V4 URI encoding: unreserved bytes kept, everything else `%XX` upper-case.
const V4_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const V4_PATH_SET: &AsciiSet = &V4_SET.remove(b'/');

fn v4_encode(s: &str) -> String {
    utf8_percent_encode(s, V4_SET).to_string()
}

/// `/bucket/key`, `/bucket/` or `/` with the raw key.
fn raw_resource_path(bucket: Option<&str>, key: Option<&str>) -> String {
    match (bucket, key) {
        (Some(b), Some(k)) => format!("/{b}/{k}"),
        (Some(b), None) => format!("/{b}/"),
        (None, _) => "/".to_string(),
    }
}

/// Header name → trimmed values joined by `,` (lower-case names, sorted).
fn header_lines(headers: &HeaderMap, keep: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if !keep(n) {
            continue;
        }
        let v = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
        out.entry(n.to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// ---------------------------------------------------------------------------------------
// V1

/// The V1 canonicalized resource: `/bucket/key` (raw key) plus sorted sub-resources.
pub fn v1_canonical_resource(
    bucket: Option<&str>,
    key: Option<&str>,
    query: &[(String, String)],
) -> String {
    let mut res = raw_resource_path(bucket, key);
    let mut subs: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| is_v1_sub_resource(k))
        .collect();
    subs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (i, (k, v)) in subs.into_iter().enumerate() {
        res.push(if i == 0 { '?' } else { '&' });
        res.push_str(k);
        if !v.is_empty() {
            res.push('=');
            res.push_str(v);
        }
    }
    res
}

/// The V1 StringToSign; `date` is the Date slot (the `x-oss-date`/`Date` value, or the
/// absolute expiry of a presigned URL).
pub fn v1_string_to_sign(p: &SignParams<'_>, date: &str) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(p.method);
    s.push('\n');
    s.push_str(header_str(p.headers, "content-md5"));
    s.push('\n');
    s.push_str(header_str(p.headers, "content-type"));
    s.push('\n');
    s.push_str(date);
    s.push('\n');
    for (k, v) in header_lines(p.headers, |n| n.starts_with("x-oss-")) {
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    s.push_str(&v1_canonical_resource(p.bucket, p.key, p.query));
    s
}

/// Base64(HMAC-SHA1(secret, string_to_sign)).
pub fn v1_signature(secret: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("hmac accepts any key");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `OSS <AccessKeyId>:<Signature>` for a request whose Date slot is `date`.
pub fn v1_authorization(p: &SignParams<'_>, date: &str, creds: &Credentials) -> String {
    let sts = v1_string_to_sign(p, date);
    format!(
        "OSS {}:{}",
        creds.access_key_id,
        v1_signature(&creds.access_key_secret, &sts)
    )
}

/// Query parameters of a V1 presigned URL (the caller's `query` first, then
/// `security-token`, `OSSAccessKeyId`, `Expires`, `Signature`), decoded.
pub fn v1_presign_query(
    p: &SignParams<'_>,
    expires_unix: u64,
    creds: &Credentials,
) -> Vec<(String, String)> {
    let mut query: Vec<(String, String)> = p.query.to_vec();
    if let Some(t) = &creds.security_token {
        query.push(("security-token".into(), t.clone()));
    }
    let expires = expires_unix.to_string();
    let sts = v1_string_to_sign(
        &SignParams {
            query: &query,
            ..*p
        },
        &expires,
    );
    let sig = v1_signature(&creds.access_key_secret, &sts);
    query.push(("OSSAccessKeyId".into(), creds.access_key_id.clone()));
    query.push(("Expires".into(), expires));
    query.push(("Signature".into(), sig));
    query
}

// ---------------------------------------------------------------------------------------
// V4

/// Lower-cased, sorted, deduplicated extra headers that are present and not signed anyway.
fn effective_additional(headers: &HeaderMap, additional: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = additional
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| {
            !h.is_empty()
                && !h.starts_with("x-oss-")
                && h != "content-type"
                && h != "content-md5"
                && headers.contains_key(h.as_str())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The V4 CanonicalQuery: every parameter, name and value encoded, sorted by encoded name.
pub fn v4_canonical_query(query: &[(String, String)]) -> String {
    let mut enc: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (v4_encode(k), v4_encode(v)))
        .collect();
    enc.sort();
    enc.iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The V4 CanonicalRequest. `additional` are extra headers to sign (usually none).
pub fn v4_canonical_request(p: &SignParams<'_>, additional: &[&str]) -> String {
    let extra = effective_additional(p.headers, additional);
    let uri = utf8_percent_encode(&raw_resource_path(p.bucket, p.key), V4_PATH_SET).to_string();
    let mut s = String::with_capacity(512);
    s.push_str(p.method);
    s.push('\n');
    s.push_str(&uri);
    s.push('\n');
    s.push_str(&v4_canonical_query(p.query));
    s.push('\n');
    let lines = header_lines(p.headers, |n| {
        n.starts_with("x-oss-")
            || n == "content-type"
            || n == "content-md5"
            || extra.iter().any(|e| e == n)
    });
    for (k, v) in lines {
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&extra.join(";"));
    s.push('\n');
    let payload = p
        .headers
        .get("x-oss-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(UNSIGNED_PAYLOAD);
    s.push_str(payload);
    s
}

/// `YYYYMMDD/<region>/oss/aliyun_v4_request`.
pub fn v4_scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/{V4_PRODUCT}/{V4_TERMINATOR}")
}

/// The V4 StringToSign for a canonical request signed at `datetime` (`YYYYMMDDTHHMMSSZ`).
pub fn v4_string_to_sign(datetime: &str, region: &str, canonical_request: &str) -> String {
    let date = &datetime[..8.min(datetime.len())];
    format!(
        "{V4_ALGORITHM}\n{datetime}\n{}\n{}",
        v4_scope(date, region),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac accepts any key");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The V4 signing key for `date` (`YYYYMMDD`) and `region` (e.g. `cn-hangzhou`).
pub fn v4_signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let k_date = hmac256(format!("aliyun_v4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac256(&k_date, region.as_bytes());
    let k_service = hmac256(&k_region, V4_PRODUCT.as_bytes());
    hmac256(&k_service, V4_TERMINATOR.as_bytes())
}

/// Lower-case hex V4 signature of `string_to_sign`.
pub fn v4_signature(secret: &str, datetime: &str, region: &str, string_to_sign: &str) -> String {
    let key = v4_signing_key(secret, &datetime[..8.min(datetime.len())], region);
    hex::encode(hmac256(&key, string_to_sign.as_bytes()))
}

/// The V4 Authorization header value. `p.headers` must already hold `x-oss-date`,
/// `x-oss-content-sha256` and (for STS) `x-oss-security-token`.
pub fn v4_authorization(
    p: &SignParams<'_>,
    datetime: &str,
    region: &str,
    creds: &Credentials,
    additional: &[&str],
) -> String {
    let canonical = v4_canonical_request(p, additional);
    let sts = v4_string_to_sign(datetime, region, &canonical);
    let sig = v4_signature(&creds.access_key_secret, datetime, region, &sts);
    let extra = effective_additional(p.headers, additional);
    let mut auth = format!(
        "{V4_ALGORITHM} Credential={}/{},",
        creds.access_key_id,
        v4_scope(&datetime[..8.min(datetime.len())], region)
    );
    // An empty AdditionalHeaders= is rejected by OSS, so the key is omitted when unused.
    if !extra.is_empty() {
        auth.push_str("AdditionalHeaders=");
        auth.push_str(&extra.join(";"));
        auth.push(',');
    }
    auth.push_str("Signature=");
    auth.push_str(&sig);
    auth
}

/// Query parameters of a V4 presigned URL valid for `expires_secs` from `time`, decoded.
pub fn v4_presign_query(
    p: &SignParams<'_>,
    time: SystemTime,
    expires_secs: u64,
    region: &str,
    creds: &Credentials,
) -> Vec<(String, String)> {
    let datetime = v4_datetime(time);
    let mut query: Vec<(String, String)> = p.query.to_vec();
    query.push(("x-oss-signature-version".into(), V4_ALGORITHM.into()));
    query.push(("x-oss-date".into(), datetime.clone()));
    query.push(("x-oss-expires".into(), expires_secs.to_string()));
    query.push((
        "x-oss-credential".into(),
        format!(
            "{}/{}",
            creds.access_key_id,
            v4_scope(&datetime[..8], region)
        ),
    ));
    if let Some(t) = &creds.security_token {
        query.push(("x-oss-security-token".into(), t.clone()));
    }
    let canonical = v4_canonical_request(
        &SignParams {
            query: &query,
            ..*p
        },
        &[],
    );
    let sts = v4_string_to_sign(&datetime, region, &canonical);
    let sig = v4_signature(&creds.access_key_secret, &datetime, region, &sts);
    query.push(("x-oss-signature".into(), sig));
    query
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn v4_datetime(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// What [`sign_request`] needs besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct SignContext<'a> {
    pub version: SignVersion,
    /// V4 scope region, e.g. `cn-hangzhou` (never `oss-cn-hangzhou`).
    pub region: &'a str,
    pub time: SystemTime,
    pub credentials: &'a Credentials,
}

/// Adds the date, token and payload headers to `headers` and returns the Authorization
/// value (marked sensitive, so it is never printed by `Debug`).
pub fn sign_request(
    method: &str,
    bucket: Option<&str>,
    key: Option<&str>,
    query: &[(String, String)],
    headers: &mut HeaderMap,
    ctx: &SignContext<'_>,
) -> HeaderValue {
    let date = httpdate::fmt_http_date(ctx.time);
    headers.insert(
        http::header::DATE,
        HeaderValue::from_str(&date).expect("http date is ascii"),
    );
    match &ctx.credentials.security_token {
        Some(t) => {
            let mut v = HeaderValue::from_str(t).unwrap_or_else(|_| HeaderValue::from_static(""));
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-oss-security-token"), v);
        }
        None => {
            headers.remove("x-oss-security-token");
        }
    }
    let auth = match ctx.version {
        SignVersion::V1 => {
            headers.remove("x-oss-date");
            headers.remove("x-oss-content-sha256");
            let p = SignParams {
                method,
                bucket,
                key,
                query,
                headers,
            };
            v1_authorization(&p, &date, ctx.credentials)
        }
        SignVersion::V4 => {
            let dt = v4_datetime(ctx.time);
            headers.insert(
                HeaderName::from_static("x-oss-date"),
                HeaderValue::from_str(&dt).expect("ascii"),
            );
            headers.insert(
                HeaderName::from_static("x-oss-content-sha256"),
                HeaderValue::from_static(UNSIGNED_PAYLOAD),
            );
            let p = SignParams {
                method,
                bucket,
                key,
                query,
                headers,
            };
            v4_authorization(&p, &dt, ctx.region, ctx.credentials, &[])
        }
    };
    let mut v = HeaderValue::from_str(&auth).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const DATE: &str = "Wed, 28 Dec 2022 10:27:41 GMT";
    const DT: &str = "20231216T162057Z";

    fn creds() -> Credentials {
        Credentials::new("LTAI5tExampleKeyId", "ExampleSecretKey1234567890abcd")
    }
    fn sts_creds() -> Credentials {
        let mut c = creds();
        c.security_token = Some("STS.exampletoken".into());
        c
    }
    fn go_creds() -> Credentials {
        Credentials::new("ak", "sk")
    }
    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
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
    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_v1(
        method: &str,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        sts: &str,
        auth: &str,
        c: &Credentials,
    ) {
        let h = hm(headers);
        let query = q(query);
        let p = SignParams {
            method,
            bucket,
            key,
            query: &query,
            headers: &h,
        };
        assert_eq!(v1_string_to_sign(&p, DATE), sts);
        assert_eq!(v1_authorization(&p, DATE, c), auth);
    }

    #[test]
    fn v1_a_get_object() {
        check_v1(
            "GET",
            Some("examplebucket"),
            Some("a/b.txt"),
            &[],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/a/b.txt",
            "OSS LTAI5tExampleKeyId:oZvYmV0P5vB7mlXUnEjjrwJGCFc=",
            &creds(),
        );
    }

    #[test]
    fn v1_b_put_with_meta() {
        check_v1(
            "PUT",
            Some("examplebucket"),
            Some("nelson"),
            &[],
            &[
                ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw=="),
                ("Content-Type", "text/html"),
                ("X-OSS-Meta-Magic", "abracadabra"),
                ("x-oss-meta-author", "alice"),
            ],
            "PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n/examplebucket/nelson",
            "OSS LTAI5tExampleKeyId:ya4Qj1oMguXdy1t2F7NZexVBbrs=",
            &creds(),
        );
    }

    #[test]
    fn v1_c_upload_part() {
        check_v1(
            "PUT",
            Some("examplebucket"),
            Some("big/file.bin"),
            &[("uploadId", "0004B9894A22E5B1888A1E29F8236E2D"), ("partNumber", "3")],
            &[("Content-Type", "application/octet-stream")],
            "PUT\n\napplication/octet-stream\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/big/file.bin?partNumber=3&uploadId=0004B9894A22E5B1888A1E29F8236E2D",
            "OSS LTAI5tExampleKeyId:ZhEJ0Bz2R2VHkY7r45ZZE845GXw=",
            &creds(),
        );
    }

    #[test]
    fn v1_d_list_objects_v2() {
        check_v1(
            "GET",
            Some("examplebucket"),
            None,
            &[
                ("list-type", "2"),
                ("prefix", "dir/"),
                ("max-keys", "100"),
                ("continuation-token", "abc"),
            ],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/?continuation-token=abc",
            "OSS LTAI5tExampleKeyId:h0RgFTYaLKaQOlfvCGvtl5QCI/I=",
            &creds(),
        );
    }

    #[test]
    fn v1_e_initiate() {
        check_v1(
            "POST",
            Some("examplebucket"),
            Some("big/file.bin"),
            &[("uploads", "")],
            &[("x-oss-storage-class", "IA")],
            "POST\n\n\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-storage-class:IA\n/examplebucket/big/file.bin?uploads",
            "OSS LTAI5tExampleKeyId:JUo93BccjNQsBCx7tXIkA1+f5HU=",
            &creds(),
        );
    }

    #[test]
    fn v1_f_sts_range() {
        check_v1(
            "GET",
            Some("examplebucket"),
            Some("obj"),
            &[],
            &[("Range", "bytes=0-99"), ("x-oss-security-token", "STS.exampletoken")],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-security-token:STS.exampletoken\n/examplebucket/obj",
            "OSS LTAI5tExampleKeyId:s4ap63MSwlqy6rmaIPYub50x9q4=",
            &sts_creds(),
        );
    }

    #[test]
    fn v1_g_h_location_and_list_buckets() {
        check_v1(
            "GET",
            Some("examplebucket"),
            None,
            &[("location", "")],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/?location",
            "OSS LTAI5tExampleKeyId:Imkr5ZPw1jbhTO51LZkw00TpeeM=",
            &creds(),
        );
        check_v1(
            "GET",
            None,
            None,
            &[],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/",
            "OSS LTAI5tExampleKeyId:aU+PfP9QpGPQei2kncXKFWj44OQ=",
            &creds(),
        );
    }

    #[test]
    fn v1_i_utf8_key() {
        check_v1(
            "GET",
            Some("examplebucket"),
            Some("目录/文件 1+2.txt"),
            &[("versionId", "CAEQ")],
            &[],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/目录/文件 1+2.txt?versionId=CAEQ",
            "OSS LTAI5tExampleKeyId:6KA9BwWxiMaPkWIyoOPV39EK7Og=",
            &creds(),
        );
    }

    #[test]
    fn v1_p_q_presigned() {
        let h = HeaderMap::new();
        let p = SignParams {
            method: "GET",
            bucket: Some("examplebucket"),
            key: Some("a/b.txt"),
            query: &[],
            headers: &h,
        };
        assert_eq!(
            v1_string_to_sign(&p, "1700003600"),
            "GET\n\n\n1700003600\n/examplebucket/a/b.txt"
        );
        let qp = v1_presign_query(&p, 1_700_003_600, &creds());
        assert_eq!(
            qp,
            q(&[
                ("OSSAccessKeyId", "LTAI5tExampleKeyId"),
                ("Expires", "1700003600"),
                ("Signature", "plfydVF6NHDoKBR6j6BRNNoGG+k=")
            ])
        );

        let extra = q(&[("response-content-type", "text/plain")]);
        let p = SignParams { query: &extra, ..p };
        let qp = v1_presign_query(&p, 1_700_000_060, &sts_creds());
        let with_token = q(&[
            ("response-content-type", "text/plain"),
            ("security-token", "STS.exampletoken"),
        ]);
        assert_eq!(
            v1_string_to_sign(
                &SignParams {
                    query: &with_token,
                    ..p
                },
                "1700000060"
            ),
            "GET\n\n\n1700000060\n/examplebucket/a/b.txt?response-content-type=text/plain&security-token=STS.exampletoken"
        );
        assert_eq!(qp.last().unwrap().1, "VnJZwD0lIil83YoWfVVDcSfutSo=");
        assert_eq!(qp[1], ("security-token".into(), "STS.exampletoken".into()));
    }

    #[test]
    fn go_v1_vectors() {
        let headers = [
            ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw=="),
            ("Content-Type", "text/html"),
            ("x-oss-meta-author", "alice"),
            ("x-oss-meta-magic", "abracadabra"),
            ("x-oss-date", DATE),
        ];
        check_v1(
            "PUT",
            Some("examplebucket"),
            Some("nelson"),
            &[],
            &headers,
            "PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-date:Wed, 28 Dec 2022 10:27:41 GMT\nx-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n/examplebucket/nelson",
            "OSS ak:kSHKmLxlyEAKtZPkJhG9bZb5k7M=",
            &go_creds(),
        );
        let h = hm(&headers);
        let acl = q(&[("acl", "")]);
        let p = SignParams {
            method: "PUT",
            bucket: Some("examplebucket"),
            key: Some("nelson"),
            query: &acl,
            headers: &h,
        };
        assert!(v1_string_to_sign(&p, DATE).ends_with("/examplebucket/nelson?acl"));
        assert_eq!(
            v1_authorization(&p, DATE, &go_creds()),
            "OSS ak:/afkugFbmWDQ967j1vr6zygBLQk="
        );
        check_v1(
            "GET",
            Some("examplebucket"),
            None,
            &[("resourceGroup", ""), ("acl", "")],
            &[("x-oss-date", DATE)],
            "GET\n\n\nWed, 28 Dec 2022 10:27:41 GMT\nx-oss-date:Wed, 28 Dec 2022 10:27:41 GMT\n/examplebucket/?acl&resourceGroup",
            "OSS ak:x3E5TgOvl/i7PN618s5mEvpJDYk=",
            &go_creds(),
        );
        assert_eq!(
            v1_signature("sk", "GET\n\n\n1699807420\n/bucket/key?versionId=versionId"),
            "dcLTea+Yh9ApirQ8o8dOPqtvJXQ="
        );
        // GO-V1-P2 through the presign builder: key "key+123", versionId + token.
        let h = HeaderMap::new();
        let vq = q(&[("versionId", "versionId")]);
        let mut c = go_creds();
        c.security_token = Some("token".into());
        let p = SignParams {
            method: "GET",
            bucket: Some("bucket"),
            key: Some("key+123"),
            query: &vq,
            headers: &h,
        };
        let qp = v1_presign_query(&p, 1_699_808_204, &c);
        assert_eq!(qp.last().unwrap().1, "jzKYRrM5y6Br0dRFPaTGOsbrDhY=");
    }

    fn v4_headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = hm(extra);
        h.insert("x-oss-date", HeaderValue::from_static(DT));
        h.insert(
            "x-oss-content-sha256",
            HeaderValue::from_static(UNSIGNED_PAYLOAD),
        );
        h
    }

    #[allow(clippy::too_many_arguments)]
    fn check_v4(
        method: &str,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(&str, &str)],
        h: &HeaderMap,
        region: &str,
        additional: &[&str],
        canonical: &str,
        sts_hash: &str,
        signature: &str,
        c: &Credentials,
        dt: &str,
    ) -> String {
        let query = q(query);
        let p = SignParams {
            method,
            bucket,
            key,
            query: &query,
            headers: h,
        };
        let cr = v4_canonical_request(&p, additional);
        assert_eq!(cr, canonical);
        let sts = v4_string_to_sign(dt, region, &cr);
        assert!(sts.ends_with(sts_hash), "{sts}");
        let auth = v4_authorization(&p, dt, region, c, additional);
        assert!(auth.ends_with(&format!("Signature={signature}")), "{auth}");
        auth
    }

    #[test]
    fn v4_signing_keys() {
        assert_eq!(
            hex::encode(v4_signing_key(
                &creds().access_key_secret,
                "20231216",
                "cn-hangzhou"
            )),
            "de5dbc2e8d6967bc66d87cb7030d4f98296a68f29db7404e1dcdaaa020c73371"
        );
        assert_eq!(
            hex::encode(v4_signing_key(
                &creds().access_key_secret,
                "20231216",
                "us-west-1"
            )),
            "41ef2e7782ad3660d63a1a7876f729f29a8f06805096254371a44e5d1c984421"
        );
    }

    #[test]
    fn v4_a_get_object() {
        let h = v4_headers(&[]);
        let auth = check_v4(
            "GET",
            Some("examplebucket"),
            Some("a/b.txt"),
            &[],
            &h,
            "cn-hangzhou",
            &[],
            "GET\n/examplebucket/a/b.txt\n\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD",
            "aee0234862ebdd1e73dd94c9ab1dd15c69c2a08799fdddfe183f1fe1c9ff8b86",
            "d14d671915a44ef5a99524039eb6cc951f8369de764cb09c7ab1b16c2b4a57bb",
            &creds(),
            DT,
        );
        assert_eq!(
            auth,
            "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=d14d671915a44ef5a99524039eb6cc951f8369de764cb09c7ab1b16c2b4a57bb"
        );
        let query: Vec<(String, String)> = Vec::new();
        let p = SignParams {
            method: "GET",
            bucket: Some("examplebucket"),
            key: Some("a/b.txt"),
            query: &query,
            headers: &h,
        };
        assert_eq!(
            v4_string_to_sign(DT, "cn-hangzhou", &v4_canonical_request(&p, &[])),
            "OSS4-HMAC-SHA256\n20231216T162057Z\n20231216/cn-hangzhou/oss/aliyun_v4_request\naee0234862ebdd1e73dd94c9ab1dd15c69c2a08799fdddfe183f1fe1c9ff8b86"
        );
    }

    #[test]
    fn v4_b_put_object() {
        let h = v4_headers(&[
            ("Content-Type", "text/plain"),
            ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw=="),
            ("x-oss-meta-author", "alice"),
        ]);
        check_v4(
            "PUT",
            Some("examplebucket"),
            Some("dir/my file+1.txt"),
            &[],
            &h,
            "cn-hangzhou",
            &[],
            "PUT\n/examplebucket/dir/my%20file%2B1.txt\n\ncontent-md5:eB5eJF1ptWaXm4bijSPyxw==\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-meta-author:alice\n\n\nUNSIGNED-PAYLOAD",
            "a243c69646e3dfd0af543972ff0d42ee7bb6a43e72006df932a9df2520b5164c",
            "c0135a8bba8640d724db16e92b01a8c2a4024f45773559a8e85d752e6a1f2b9b",
            &creds(),
            DT,
        );
    }

    #[test]
    fn v4_c_upload_part() {
        check_v4(
            "PUT",
            Some("examplebucket"),
            Some("big/file.bin"),
            &[("partNumber", "1"), ("uploadId", "0004B9894A22E5B1888A1E29F8236E2D")],
            &v4_headers(&[]),
            "cn-hangzhou",
            &[],
            "PUT\n/examplebucket/big/file.bin\npartNumber=1&uploadId=0004B9894A22E5B1888A1E29F8236E2D\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD",
            "5f0feda20ea50a139f3e378cf2cf5934cd475dc5b1340ff7ee7babf5cdfb0eb8",
            "c2dabf619e5160c8cc3121832d4bf31821b0b8e5a46423a318740e0028d7e62a",
            &creds(),
            DT,
        );
    }

    #[test]
    fn v4_d_list_objects_us_west() {
        let query = q(&[
            ("list-type", "2"),
            ("prefix", "dir/sub dir/"),
            ("max-keys", "10"),
        ]);
        let h = v4_headers(&[]);
        let p = SignParams {
            method: "GET",
            bucket: Some("examplebucket"),
            key: None,
            query: &query,
            headers: &h,
        };
        let cr = v4_canonical_request(&p, &[]);
        assert_eq!(cr, "GET\n/examplebucket/\nlist-type=2&max-keys=10&prefix=dir%2Fsub%20dir%2F\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD");
        assert_eq!(
            v4_string_to_sign(DT, "us-west-1", &cr),
            "OSS4-HMAC-SHA256\n20231216T162057Z\n20231216/us-west-1/oss/aliyun_v4_request\nd5bdc80d8c23e6276ea0ebe235ac1d9ce040c9d5f24d32816bc6ec73e1cee9a5"
        );
        assert!(
            v4_authorization(&p, DT, "us-west-1", &creds(), &[]).ends_with(
                "Signature=ad2d34ed8c82b9d7b30ca17fa2e928355a32ac282b587f80e50dc44b47321942"
            )
        );
    }

    #[test]
    fn v4_e_additional_host() {
        let h = v4_headers(&[
            ("Host", "examplebucket.oss-cn-hangzhou.aliyuncs.com"),
            ("Range", "bytes=0-9"),
        ]);
        let auth = check_v4(
            "GET",
            Some("examplebucket"),
            Some("obj"),
            &[],
            &h,
            "cn-hangzhou",
            &["host"],
            "GET\n/examplebucket/obj\n\nhost:examplebucket.oss-cn-hangzhou.aliyuncs.com\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\nhost\nUNSIGNED-PAYLOAD",
            "85926d6874fb3994a28d0cf96559cb8fbc7788f3fac284be500cc5bb0a334568",
            "14be9f46bc5b7df3aa483a4c88e31a874e79853a567e45da5f7ea6f627929fa0",
            &creds(),
            DT,
        );
        assert!(auth.contains(",AdditionalHeaders=host,"));
        // Unused or always-signed additional headers must not produce `AdditionalHeaders=`.
        let query = Vec::new();
        let p = SignParams {
            method: "GET",
            bucket: Some("examplebucket"),
            key: Some("obj"),
            query: &query,
            headers: &h,
        };
        let a = v4_authorization(&p, DT, "cn-hangzhou", &creds(), &["x-oss-date", "absent"]);
        assert!(!a.contains("AdditionalHeaders"), "{a}");
    }

    #[test]
    fn v4_f_sts_head() {
        let h = v4_headers(&[
            ("Date", "Sat, 16 Dec 2023 16:20:57 GMT"),
            ("x-oss-security-token", "STS.exampletoken"),
        ]);
        let auth = check_v4(
            "HEAD",
            Some("examplebucket"),
            Some("a/b.txt"),
            &[],
            &h,
            "cn-hangzhou",
            &[],
            "HEAD\n/examplebucket/a/b.txt\n\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-security-token:STS.exampletoken\n\n\nUNSIGNED-PAYLOAD",
            "48fa800c6a27912eb82d7f9b4775c47118a5625cd73ee8d4fe8bb3b9b34c4bbc",
            "49e6ecd78d5391847c81008890b9b6910e8236d3728ad4abefd8d063c307bef8",
            &sts_creds(),
            DT,
        );
        assert_eq!(auth, "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=49e6ecd78d5391847c81008890b9b6910e8236d3728ad4abefd8d063c307bef8");
    }

    #[test]
    fn v4_i_utf8_key() {
        check_v4(
            "GET",
            Some("examplebucket"),
            Some("目录/文件 1+2.txt"),
            &[("versionId", "CAEQ")],
            &v4_headers(&[]),
            "cn-hangzhou",
            &[],
            "GET\n/examplebucket/%E7%9B%AE%E5%BD%95/%E6%96%87%E4%BB%B6%201%2B2.txt\nversionId=CAEQ\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\n\n\nUNSIGNED-PAYLOAD",
            "127070a73b65a69e8df7d9550c9ca8395bdebc597f60e326dbd0e816179cd66e",
            "f165cfc5ce2816b6c13036f841781cbdbbee7cec7589b708a35c440a8b27f88c",
            &creds(),
            DT,
        );
    }

    #[test]
    fn v4_p_presigned() {
        let h = HeaderMap::new();
        let p = SignParams {
            method: "GET",
            bucket: Some("examplebucket"),
            key: Some("a/b.txt"),
            query: &[],
            headers: &h,
        };
        let qp = v4_presign_query(&p, at(1_702_743_657), 3600, "cn-hangzhou", &creds());
        let signed: Vec<(String, String)> = qp[..qp.len() - 1].to_vec();
        let cr = v4_canonical_request(
            &SignParams {
                query: &signed,
                ..p
            },
            &[],
        );
        assert_eq!(cr, "GET\n/examplebucket/a/b.txt\nx-oss-credential=LTAI5tExampleKeyId%2F20231216%2Fcn-hangzhou%2Foss%2Faliyun_v4_request&x-oss-date=20231216T162057Z&x-oss-expires=3600&x-oss-signature-version=OSS4-HMAC-SHA256\n\n\nUNSIGNED-PAYLOAD");
        assert!(v4_string_to_sign(DT, "cn-hangzhou", &cr)
            .ends_with("0e7c3db03f19f3b375d2443fc803fd5bba6e4d8b837fee53079de30b26104c4a"));
        assert_eq!(
            qp.last().unwrap(),
            &(
                "x-oss-signature".to_string(),
                "c579bfa518f1d9134750cd2c4c7b002ade3f18d69eebf6a212505cba9a80b4d5".to_string()
            )
        );
    }

    fn go_v4_headers(dt: &str) -> HeaderMap {
        let mut h = hm(&[
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "text/plain"),
            ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ]);
        h.insert("x-oss-date", HeaderValue::from_str(dt).unwrap());
        h
    }
    const GO_QUERY: &[(&str, &str)] = &[
        ("param1", "value1"),
        ("+param1", "value3"),
        ("|param1", "value4"),
        ("+param2", ""),
        ("|param2", ""),
        ("param2", ""),
    ];

    #[test]
    fn go_v4_1_and_2() {
        let dt = v4_datetime(at(1_702_743_657));
        assert_eq!(dt, DT);
        let auth = check_v4(
            "PUT",
            Some("bucket"),
            Some("1234+-/123/1.txt"),
            GO_QUERY,
            &go_v4_headers(&dt),
            "cn-hangzhou",
            &[],
            "PUT\n/bucket/1234%2B-/123/1.txt\n%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T162057Z\nx-oss-head1:value\n\n\nUNSIGNED-PAYLOAD",
            "f4613657f1b108998e8dbd10a1aa5da621dc2c6e02c9ddec0f163664848704c4",
            "e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe",
            &go_creds(),
            &dt,
        );
        assert_eq!(auth, "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe");

        let dt2 = v4_datetime(at(1_702_747_512));
        let h = go_v4_headers(&dt2);
        let query = q(GO_QUERY);
        let p = SignParams {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some("1234+-/123/1.txt"),
            query: &query,
            headers: &h,
        };
        assert_eq!(v4_canonical_request(&p, &["ZAbc", "abc"]), "PUT\n/bucket/1234%2B-/123/1.txt\n%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\nabc:value\ncontent-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\nx-oss-date:20231216T172512Z\nx-oss-head1:value\nzabc:value\n\nabc;zabc\nUNSIGNED-PAYLOAD");
        assert_eq!(
            v4_authorization(&p, &dt2, "cn-hangzhou", &go_creds(), &["ZAbc", "abc"]),
            "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,AdditionalHeaders=abc;zabc,Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f"
        );
    }

    #[test]
    fn go_v4_3_sts_token() {
        let dt = v4_datetime(at(1_702_784_856));
        assert_eq!(dt, "20231217T034736Z");
        let mut h = go_v4_headers(&dt);
        h.insert("x-oss-security-token", HeaderValue::from_static("token"));
        let mut c = go_creds();
        c.security_token = Some("token".into());
        let query = q(GO_QUERY);
        let p = SignParams {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some("1234+-/123/1.txt"),
            query: &query,
            headers: &h,
        };
        assert_eq!(
            v4_authorization(&p, &dt, "cn-hangzhou", &c, &[]),
            "OSS4-HMAC-SHA256 Credential=ak/20231217/cn-hangzhou/oss/aliyun_v4_request,Signature=b94a3f999cf85bcdc00d332fbd3734ba03e48382c36fa4d5af5df817395bd9ea"
        );
    }

    #[test]
    fn go_v4_4_and_5_presigned() {
        let h = hm(&[
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "application/octet-stream"),
        ]);
        let query = q(GO_QUERY);
        let p = SignParams {
            method: "PUT",
            bucket: Some("bucket"),
            key: Some("1234+-/123/1.txt"),
            query: &query,
            headers: &h,
        };
        let get = |qp: &[(String, String)], k: &str| {
            qp.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let qp = v4_presign_query(
            &p,
            at(1_702_781_677),
            1_702_782_276 - 1_702_781_677,
            "cn-hangzhou",
            &go_creds(),
        );
        assert_eq!(get(&qp, "x-oss-expires"), "599");
        assert_eq!(get(&qp, "x-oss-signature-version"), "OSS4-HMAC-SHA256");
        assert_eq!(
            get(&qp, "x-oss-credential"),
            "ak/20231217/cn-hangzhou/oss/aliyun_v4_request"
        );
        assert_eq!(
            get(&qp, "x-oss-signature"),
            "a39966c61718be0d5b14e668088b3fa07601033f6518ac7b523100014269c0fe"
        );
        assert_eq!(get(&qp, "x-oss-additional-headers"), "");

        let mut c = go_creds();
        c.security_token = Some("token".into());
        let qp = v4_presign_query(&p, at(1_702_785_388), 599, "cn-hangzhou", &c);
        assert_eq!(get(&qp, "x-oss-date"), "20231217T035628Z");
        assert_eq!(get(&qp, "x-oss-security-token"), "token");
        assert_eq!(
            get(&qp, "x-oss-signature"),
            "3817ac9d206cd6dfc90f1c09c00be45005602e55898f26f5ddb06d7892e1f8b5"
        );
    }

    #[test]
    fn sign_request_sets_headers() {
        let mut h = HeaderMap::new();
        let c = sts_creds();
        let ctx = SignContext {
            version: SignVersion::V4,
            region: "cn-hangzhou",
            time: at(1_702_743_657),
            credentials: &c,
        };
        let auth = sign_request(
            "HEAD",
            Some("examplebucket"),
            Some("a/b.txt"),
            &[],
            &mut h,
            &ctx,
        );
        assert!(auth.is_sensitive());
        assert_eq!(h["x-oss-date"], "20231216T162057Z");
        assert_eq!(h["date"], "Sat, 16 Dec 2023 16:20:57 GMT");
        assert_eq!(h["x-oss-security-token"], "STS.exampletoken");
        assert_eq!(h["x-oss-content-sha256"], UNSIGNED_PAYLOAD);
        // Same inputs as V4-F.
        assert_eq!(auth.to_str().unwrap(), "OSS4-HMAC-SHA256 Credential=LTAI5tExampleKeyId/20231216/cn-hangzhou/oss/aliyun_v4_request,Signature=49e6ecd78d5391847c81008890b9b6910e8236d3728ad4abefd8d063c307bef8");

        let mut h = HeaderMap::new();
        let c = creds();
        let ctx = SignContext {
            version: SignVersion::V1,
            region: "cn-hangzhou",
            time: httpdate::parse_http_date(DATE).unwrap(),
            credentials: &c,
        };
        let auth = sign_request(
            "GET",
            Some("examplebucket"),
            Some("a/b.txt"),
            &[],
            &mut h,
            &ctx,
        );
        assert_eq!(
            auth.to_str().unwrap(),
            "OSS LTAI5tExampleKeyId:oZvYmV0P5vB7mlXUnEjjrwJGCFc="
        );
        assert!(h.get("x-oss-date").is_none());
        assert!(h.get("x-oss-security-token").is_none());
    }
}
