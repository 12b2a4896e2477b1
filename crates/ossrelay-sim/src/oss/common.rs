//! What every OSS handler shares: the request context, the OSS error document and the
//! failure kinds, header helpers (storage class, kept headers, Content-MD5, CRC header) and
//! the parameter checks common to several operations.

use std::time::SystemTime;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::reply::Body;
pub(crate) use crate::reply::{empty, full};
use crate::store::Segment;
use crate::world::oss::default_content_type;
use crate::world::World;
use crate::xml::{self, el};

/// Largest PutObject body, part and copy source: 5 GiB.
pub(crate) const MAX_PUT: u64 = 5 << 30;
/// Smallest part size except the last (CompleteMultipartUpload).
pub(crate) const MIN_PART: u64 = 102_400;

/// `x-oss-traffic-limit` (header or query, in bit/s) as bytes/s.
pub(crate) fn traffic_limit(ctx: &Ctx) -> Result<Option<u64>, OssError> {
    let (h, q) = (ctx.h("x-oss-traffic-limit"), ctx.q("x-oss-traffic-limit"));
    let v = match (h, q) {
        (Some(_), Some(_)) => {
            return Err(invalid_argument(
                "x-oss-traffic-limit may be given as a header or a query parameter, not both.",
            )
            .ec("0004-00000501"))
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    match v.trim().parse::<u64>() {
        Ok(bits) if (245_760..=838_860_800).contains(&bits) => Ok(Some(bits / 8)),
        _ => Err(invalid_argument(
            "x-oss-traffic-limit must be between 245760 and 838860800 bit/s.",
        )
        .with("ArgumentName", "x-oss-traffic-limit")
        .with("ArgumentValue", v)),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Clone)]
pub(crate) struct OssError {
    status: u16,
    code: &'static str,
    message: String,
    ec: Option<&'static str>,
    extra: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
}

impl OssError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            ec: None,
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }
    pub(crate) fn ec(mut self, ec: &'static str) -> Self {
        self.ec = Some(ec);
        self
    }
    pub(crate) fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn xml(&self, ctx: &Ctx) -> String {
        let mut s = String::from(xml::DECL);
        s.push_str("<Error>\n");
        s.push_str(&format!("  {}\n", el("Code", self.code)));
        s.push_str(&format!("  {}\n", el("Message", &self.message)));
        s.push_str(&format!("  {}\n", el("RequestId", &ctx.request_id)));
        s.push_str(&format!("  {}\n", el("HostId", &ctx.host_id)));
        for (k, v) in &self.extra {
            s.push_str(&format!("  {}\n", el(k, v)));
        }
        if let Some(ec) = self.ec {
            s.push_str(&format!("  {}\n", el("EC", ec)));
            s.push_str(&format!(
                "  {}\n",
                el(
                    "RecommendDoc",
                    &format!("https://api.aliyun.com/troubleshoot?q={ec}")
                )
            ));
        }
        s.push_str("</Error>\n");
        s
    }

    pub(crate) fn render(&self, ctx: &Ctx) -> Response<Body> {
        let body = self.xml(ctx);
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/xml");
        if let Some(ec) = self.ec {
            b = b.header("x-oss-ec", ec);
        }
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        let resp = if ctx.method == Method::HEAD {
            b.header(
                "x-oss-err",
                base64::engine::general_purpose::STANDARD.encode(body.as_bytes()),
            )
            .body(empty())
        } else {
            b.body(full(body))
        };
        resp.expect("static response parts are valid")
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> OssError {
    tracing::error!(error = %e, "simulator internal error");
    OssError::new(
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    )
}

pub(crate) fn no_such_upload() -> OssError {
    OssError::new(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .ec("0042-00000002")
}

pub(crate) fn invalid_argument(message: impl Into<String>) -> OssError {
    OssError::new(400, "InvalidArgument", message)
}

pub(crate) fn malformed_xml() -> OssError {
    OssError::new(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
    .ec("0042-00000205")
}

pub(crate) enum Fail {
    Oss(OssError),
    /// Drop the connection with an RST (reset fault).
    Reset,
    /// The client broke the connection; nothing to answer.
    ClientGone,
}

impl From<OssError> for Fail {
    fn from(e: OssError) -> Self {
        Fail::Oss(e)
    }
}

pub(crate) type Res = Result<Response<Body>, Fail>;

pub(crate) fn owner_id(account: &str) -> String {
    let h = account.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1_099_511_628_211)
    });
    format!("{}", 1_000_000_000_000_000 + h % 1_000_000_000_000_000)
}

pub(crate) fn discard_etag(crc: u64, size: u64) -> String {
    format!("{crc:016X}{size:016X}")
}

pub(crate) const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

pub(crate) fn kept_headers(h: &HeaderMap, key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in h {
        let n = name.as_str();
        if KEPT_HEADERS.contains(&n) || n.starts_with("x-oss-meta-") {
            if let Ok(v) = value.to_str() {
                out.push((n.to_string(), v.to_string()));
            }
        }
    }
    if !out.iter().any(|(n, _)| n == "content-type") {
        out.push(("content-type".into(), default_content_type(key).into()));
    }
    out
}

pub(crate) fn storage_class(h: &HeaderMap) -> Result<String, OssError> {
    match h.get("x-oss-storage-class").and_then(|v| v.to_str().ok()) {
        None => Ok("Standard".into()),
        Some(c @ ("Standard" | "IA" | "Archive" | "ColdArchive" | "DeepColdArchive")) => {
            Ok(c.to_string())
        }
        Some(other) => Err(invalid_argument(format!("Invalid storage class {other}."))
            .with("ArgumentName", "x-oss-storage-class")
            .with("ArgumentValue", other)),
    }
}

pub(crate) struct Ctx {
    pub(crate) request_id: String,
    pub(crate) host_id: String,
    pub(crate) method: Method,
    pub(crate) bucket: Option<String>,
    pub(crate) key: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) op: &'static str,
    pub(crate) now: SystemTime,
    pub(crate) pre_error: Option<OssError>,
}

impl Ctx {
    pub(crate) fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub(crate) fn bucket(&self) -> &str {
        self.bucket.as_deref().unwrap_or_default()
    }
    pub(crate) fn url_encoding(&self) -> bool {
        self.q("encoding-type") == Some("url")
    }
    pub(crate) fn enc(&self, s: &str) -> String {
        if self.url_encoding() {
            xml::url_encode(s)
        } else {
            s.to_string()
        }
    }
}

pub(crate) fn decode_query(raw: &str) -> Vec<(String, String)> {
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

pub(crate) fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

pub(crate) fn crc_header(crc: u64) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-oss-hash-crc64ecma"),
        HeaderValue::from_str(&crc.to_string()).expect("digits"),
    )
}

pub(crate) struct Received {
    pub(crate) size: u64,
    pub(crate) crc: u64,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) segment: Option<Segment>,
}

pub(crate) fn parse_content_md5(ctx: &Ctx) -> Result<Option<[u8; 16]>, OssError> {
    let Some(v) = ctx.h("content-md5") else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or_else(|| {
            OssError::new(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid",
            )
            .ec("0017-00000502")
        })
}

pub(crate) fn max_param(
    ctx: &Ctx,
    name: &'static str,
    default: usize,
    max: usize,
) -> Result<usize, OssError> {
    match ctx.q(name) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(invalid_argument(format!("Argument {name} is invalid."))
                .with("ArgumentName", name)
                .with("ArgumentValue", v)),
        },
    }
}

pub(crate) fn part_number(ctx: &Ctx) -> Result<u32, OssError> {
    match ctx.q("partNumber") {
        None => Err(invalid_argument("Unexpected query string parameter")
            .with("ArgumentName", "partNumber")),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive.",
            )
            .with("ArgumentName", "PartNumber")
            .with("ArgumentValue", v)
            .ec("0042-00000207")),
        },
    }
}

pub(crate) fn missing_length(ctx: &Ctx) -> Result<(), OssError> {
    if ctx.h("content-length").is_none()
        && !ctx
            .h("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Err(OssError::new(
            411,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        )
        .ec("0016-00000115"));
    }
    Ok(())
}

pub(crate) fn file_exists(ec: &'static str) -> OssError {
    OssError::new(
        409,
        "FileAlreadyExists",
        "The object you specified already exists and can not be overwritten.",
    )
    .ec(ec)
}

pub(crate) fn check_md5(expected: Option<[u8; 16]>, got: Option<[u8; 16]>) -> Result<(), OssError> {
    match (expected, got) {
        (Some(e), Some(g)) if e != g => Err(OssError::new(
            400,
            "InvalidDigest",
            "The Content-MD5 you specified did not match what we received.",
        )
        .ec("0017-00000503")),
        _ => Ok(()),
    }
}

/// 409 FileAlreadyExists when `x-oss-forbid-overwrite: true` and the object exists.
pub(crate) fn check_forbid_overwrite(
    w: &World,
    ctx: &Ctx,
    ec: &'static str,
) -> Result<(), OssError> {
    if ctx.h("x-oss-forbid-overwrite") != Some("true") {
        return Ok(());
    }
    let st = w.oss.lock();
    if st
        .buckets
        .get(ctx.bucket())
        .is_some_and(|b| b.objects.contains_key(&ctx.key))
    {
        return Err(file_exists(ec));
    }
    Ok(())
}

/// The upload ID of the request, if that upload exists for this bucket and key.
pub(crate) fn upload_matches(w: &World, ctx: &Ctx) -> Result<String, OssError> {
    let id = ctx.q("uploadId").unwrap_or_default().to_string();
    let st = w.oss.lock();
    match st.uploads.get(&id) {
        Some(u) if u.bucket == ctx.bucket() && u.key == ctx.key => Ok(id),
        _ => Err(no_such_upload()),
    }
}

/// The declared `Content-Length` (0 when absent or unreadable).
pub(crate) fn declared_length(ctx: &Ctx) -> u64 {
    ctx.h("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            decode_query("uploads&partNumber=3&prefix=a%2Fb+c"),
            vec![
                ("uploads".to_string(), String::new()),
                ("partNumber".to_string(), "3".to_string()),
                ("prefix".to_string(), "a/b c".to_string()),
            ]
        );
    }
}
