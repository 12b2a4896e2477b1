//! AWS Signature Version 4: header signing, presigned URLs, aws-chunked chunk and trailer
//! signatures.
//!
//! Contract:
//! - [`sign_headers`] is deterministic in its inputs (method, URI, headers, payload hash, keys,
//!   region, service, time) and adds exactly `x-amz-date`, `x-amz-content-sha256` (service `s3`
//!   only), `x-amz-security-token` (when a session token is given) and `authorization`. It signs
//!   `host` plus every header already in the map except hop-by-hop and transport-owned ones
//!   ([`UNSIGNED_HEADERS`]), so whatever a caller puts in the map before signing must be sent
//!   unchanged.
//! - Call it once per attempt, at send time, with the credentials the provider returns then:
//!   `x-amz-date` must be within 15 minutes of the server clock and temporary keys rotate.
//! - Service `s3` gets S3's rules: the canonical URI is the path as sent, each segment
//!   URI-encoded once and never normalised (`a//b` and `..` stay). Every other service (STS,
//!   EC2, IAM …) gets the generic rules: the path is normalised (`.`/`..`/empty segments
//!   removed) and encoded a second time on top of its wire form.
//! - Secrets never reach `Debug` output or logs: [`SigningParams`]' `Debug` redacts them and
//!   nothing here logs.
//!
//! The vectors of `s3-protocol.md` §4 (S3 docs examples, aws-chunked, trailer and the
//! aws-sig-v4-test-suite cases) are the unit tests below; every one of them passes.

use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST};
use http::{Method, Uri};
use sha2::{Digest, Sha256};

/// The only algorithm name we sign with.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Payload line for bodies that are not hashed (TLS and part checksums protect them instead).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Payload line of a signed aws-chunked body.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// Payload line of a signed aws-chunked body with a signed trailer.
pub const STREAMING_PAYLOAD_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Presigned URLs live between 1 second and 7 days (S3 and OSS S3 mode reject others).
pub const MAX_PRESIGN_EXPIRES: Duration = Duration::from_secs(604_800);

/// Headers never signed: hop-by-hop ones and those a proxy or the transport may rewrite, plus
/// `authorization` itself. botocore excludes `user-agent`, `expect` and `x-amzn-trace-id` for
/// the same reason.
pub const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

type HmacSha256 = Hmac<Sha256>;

/// Who signs, for which region and service, and when.
#[derive(Clone, Copy)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    /// Scope region: the bucket's region for S3 (`auto` for R2), the endpoint's for Query APIs.
    pub region: &'a str,
    /// Signing name: `s3`, `sts`, `ec2`, `iam`, …
    pub service: &'a str,
    pub time: SystemTime,
}

impl fmt::Debug for SigningParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningParams")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .field("region", &self.region)
            .field("service", &self.service)
            .field("time", &self.time)
            .finish()
    }
}

impl SigningParams<'_> {
    /// `YYYYMMDDTHHMMSSZ`.
    pub fn datetime(&self) -> String {
        amz_datetime(self.time)
    }

    /// `<yyyymmdd>/<region>/<service>/aws4_request`.
    pub fn scope(&self) -> String {
        let dt = self.datetime();
        format!("{}/{}/{}/aws4_request", &dt[..8], self.region, self.service)
    }

    /// kSigning for this date, region and service.
    pub fn signing_key(&self) -> [u8; 32] {
        signing_key(
            self.secret_access_key,
            &self.datetime()[..8],
            self.region,
            self.service,
        )
    }
}

/// What one header signature produced; the seed of an aws-chunked body is `signature`.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    /// `;`-joined lower-case names.
    pub signed_headers: String,
    /// Lower-case hex.
    pub signature: String,
    pub authorization: String,
}

impl fmt::Debug for Signed {
    // The canonical request can contain a security token (x-amz-security-token is signed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signed_headers", &self.signed_headers)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Adds `x-amz-date`, `x-amz-content-sha256` (service `s3` only), `x-amz-security-token` (if
/// any) and `authorization` to `headers`; `host` is taken from `headers` (HOST) or else the
/// URI authority and signed. `payload_sha256` is the hex SHA-256 of the body or
/// `UNSIGNED-PAYLOAD` (or a `STREAMING-…` constant for aws-chunked bodies).
pub fn sign_headers(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    payload_sha256: &str,
    p: &SigningParams<'_>,
) {
    sign_headers_detailed(method, uri, headers, payload_sha256, p);
}

/// [`sign_headers`], returning the intermediate strings (for the aws-chunked seed signature,
/// for verifiers and for debugging a `SignatureDoesNotMatch`).
pub fn sign_headers_detailed(
    method: &Method,
    uri: &Uri,
    headers: &mut HeaderMap,
    payload_sha256: &str,
    p: &SigningParams<'_>,
) -> Signed {
    let datetime = p.datetime();
    headers.remove(AUTHORIZATION);
    headers.insert(X_AMZ_DATE, header_value(&datetime));
    if p.service == "s3" {
        headers.insert(X_AMZ_CONTENT_SHA256, header_value(payload_sha256));
    }
    match p.session_token {
        Some(token) => {
            headers.insert(X_AMZ_SECURITY_TOKEN, header_value(token));
        }
        None => {
            headers.remove(X_AMZ_SECURITY_TOKEN);
        }
    }
    let host = host_of(uri, headers);
    sign_raw(
        method.as_str(),
        &canonical_uri(uri.path(), p.service),
        uri.query().unwrap_or(""),
        &host,
        headers,
        payload_sha256,
        p,
    )
}

/// The signing core on raw parts, for verifiers that already hold a canonical URI and for
/// paths an [`http::Uri`] cannot carry (raw UTF-8 or spaces in the test suite). Expects the
/// `x-amz-*` headers [`sign_headers`] adds to be in `headers` already; sets `authorization`.
pub fn sign_raw(
    method: &str,
    canonical_uri: &str,
    query: &str,
    host: &str,
    headers: &mut HeaderMap,
    payload_sha256: &str,
    p: &SigningParams<'_>,
) -> Signed {
    headers.remove(AUTHORIZATION);
    let (canonical_headers, signed_headers) = canonical_headers(headers, host);
    let canonical_request = format!(
        "{method}\n{canonical_uri}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_sha256}",
        canonical_query(query),
    );
    let scope = p.scope();
    let string_to_sign = string_to_sign(&p.datetime(), &scope, &canonical_request);
    let signature = hex::encode(hmac(&p.signing_key(), string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
        p.access_key_id
    );
    headers.insert(AUTHORIZATION, header_value(&authorization));
    Signed {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

/// A presigned URL (query authentication) valid for `expires` (clamped to 1 s … 7 days),
/// signing only `host`. The payload line is `UNSIGNED-PAYLOAD` for S3 and the empty-body hash
/// for other services, as the S3 docs and the test suite do.
pub fn presign_url(method: &Method, uri: &Uri, expires: Duration, p: &SigningParams<'_>) -> Uri {
    let datetime = p.datetime();
    let scope = p.scope();
    let expires = expires.clamp(Duration::from_secs(1), MAX_PRESIGN_EXPIRES);
    let mut query = String::from(uri.query().unwrap_or(""));
    let mut add = |name: &str, value: &str| {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.push_str(&uri_encode(value, true));
    };
    add("X-Amz-Algorithm", ALGORITHM);
    add("X-Amz-Credential", &format!("{}/{scope}", p.access_key_id));
    add("X-Amz-Date", &datetime);
    add("X-Amz-Expires", &expires.as_secs().to_string());
    if let Some(token) = p.session_token {
        add("X-Amz-Security-Token", token);
    }
    add("X-Amz-SignedHeaders", "host");
    let host = host_of(uri, &HeaderMap::new());
    let canonical_query = canonical_query(&query);
    let payload = if p.service == "s3" {
        UNSIGNED_PAYLOAD
    } else {
        EMPTY_SHA256
    };
    let canonical_request = format!(
        "{}\n{}\n{}\nhost:{}\n\nhost\n{}",
        method.as_str(),
        canonical_uri(uri.path(), p.service),
        canonical_query,
        host,
        payload
    );
    let sts = string_to_sign(&datetime, &scope, &canonical_request);
    let signature = hex::encode(hmac(&p.signing_key(), sts.as_bytes()));
    let path_and_query = format!(
        "{}?{canonical_query}&X-Amz-Signature={signature}",
        uri.path()
    );
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .expect("canonical query is made of URI-safe characters"),
    );
    Uri::from_parts(parts).expect("same scheme and authority as the input URI")
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
pub fn amz_datetime(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// Inverse of [`amz_datetime`] (verifiers and tests read `x-amz-date` back).
pub fn parse_amz_datetime(s: &str) -> Option<SystemTime> {
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    Some(naive.and_utc().into())
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request").
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// `AWS4-HMAC-SHA256 \n datetime \n scope \n hex(SHA256(canonical_request))`.
pub fn string_to_sign(datetime: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{datetime}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Signature of one aws-chunked chunk; `previous` is the seed (header signature) for the first
/// chunk, then the previous chunk's signature. The final 0-byte chunk is signed the same way.
pub fn chunk_signature(
    signing_key: &[u8; 32],
    datetime: &str,
    scope: &str,
    previous: &str,
    chunk_data: &[u8],
) -> String {
    let sts = format!(
        "{ALGORITHM}-PAYLOAD\n{datetime}\n{scope}\n{previous}\n{EMPTY_SHA256}\n{}",
        sha256_hex(chunk_data)
    );
    hex::encode(hmac(signing_key, sts.as_bytes()))
}

/// Signature of the trailer block of a signed aws-chunked body; `previous` is the signature of
/// the 0-byte chunk and `trailer` the `name:value\n` lines (newline-terminated, no CR).
pub fn trailer_signature(
    signing_key: &[u8; 32],
    datetime: &str,
    scope: &str,
    previous: &str,
    trailer: &[u8],
) -> String {
    let sts = format!(
        "{ALGORITHM}-TRAILER\n{datetime}\n{scope}\n{previous}\n{}",
        sha256_hex(trailer)
    );
    hex::encode(hmac(signing_key, sts.as_bytes()))
}

/// Length on the wire of a signed aws-chunked body carrying `data_len` bytes in chunks of
/// `chunk_size` (the final 0-byte chunk included, no trailer).
pub fn signed_chunked_length(data_len: u64, chunk_size: u64) -> u64 {
    let frame = |size: u64| format!("{size:x}").len() as u64 + 17 + 64 + 2 + size + 2;
    let full = data_len / chunk_size.max(1);
    let rest = data_len % chunk_size.max(1);
    full * frame(chunk_size) + if rest > 0 { frame(rest) } else { 0 } + frame(0)
}

/// The canonical URI: for `s3` the wire path with each segment's encoding made canonical
/// (decoded, then encoded once; no normalisation); for other services the normalised wire path
/// encoded again ("double encoding").
pub fn canonical_uri(path: &str, service: &str) -> String {
    let s3 = service == "s3";
    canonical_uri_with(path, !s3, !s3)
}

/// The two knobs behind [`canonical_uri`], separate because the test suite exercises them
/// separately: `normalize` removes `.`/`..`/empty segments; `double_encode` encodes the wire
/// path as it is (a `%` becomes `%25`), otherwise each segment is decoded and encoded once.
pub fn canonical_uri_with(path: &str, normalize: bool, double_encode: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let path = if normalize {
        normalize_path(path)
    } else {
        path.to_string()
    };
    if double_encode {
        uri_encode(&path, false)
    } else {
        path.split('/')
            .map(|seg| uri_encode(&percent_decode(seg), false))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Removes empty, `.` and `..` segments, keeping the leading and a trailing slash.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = format!("/{}", out.join("/"));
    if path.ends_with('/') && s.len() > 1 {
        s.push('/');
    }
    s
}

/// The canonical query of a raw query string: names and values decoded, re-encoded with
/// [`uri_encode`] (`/` → `%2F`), sorted by name then value, value-less names as `name=`.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                uri_encode(&percent_decode(k), true),
                uri_encode(&percent_decode(v), true),
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        let _ = write!(out, "{k}={v}");
    }
    out
}

/// The canonical header block (each `name:value\n`, sorted; `host` included) and the
/// `;`-joined signed header names. Values are trimmed with inner whitespace runs collapsed;
/// repeated headers are joined with `,`.
pub fn canonical_headers(headers: &HeaderMap, host: &str) -> (String, String) {
    let mut entries: Vec<(String, String)> = Vec::new();
    if !headers.contains_key(HOST) {
        entries.push(("host".into(), collapse(host)));
    }
    for name in headers.keys() {
        let n = name.as_str();
        if UNSIGNED_HEADERS.contains(&n) {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| collapse(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        entries.push((n.to_string(), values.join(",")));
    }
    entries.sort();
    let mut block = String::new();
    for (n, v) in &entries {
        let _ = writeln!(block, "{n}:{v}");
    }
    let signed = entries
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, signed)
}

fn collapse(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Host header value the request will carry: the HOST header if set, else the URI
/// authority without a default port (what hyper sends).
fn host_of(uri: &Uri, headers: &HeaderMap) -> String {
    if let Some(h) = headers.get(HOST).and_then(|v| v.to_str().ok()) {
        return h.to_string();
    }
    let host = uri.host().unwrap_or_default();
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    match uri.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    }
}

/// AWS UriEncode: keeps `A-Z a-z 0-9 - . _ ~` (and `/` unless `encode_slash`), every other
/// byte becomes upper-case `%XX`; space is `%20`, never `+`.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `%XX` decoding only (a `+` stays a plus: S3 keys may contain it and AWS encodes space as
/// `%20`). Invalid escapes are kept literally.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn header_value(s: &str) -> HeaderValue {
    // Every value here is ASCII we built (dates, hex, base64 tokens, credentials); a control
    // character in a token would be a broken credential source, so fail loudly in debug only.
    HeaderValue::from_str(s).unwrap_or_else(|_| {
        debug_assert!(false, "non-header-safe value in a signed header");
        HeaderValue::from_static("")
    })
}

#[cfg(test)]
mod tests;
