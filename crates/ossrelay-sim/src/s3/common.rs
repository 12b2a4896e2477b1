//! What every S3 handler shares: the request context, the S3 error document and failure kinds,
//! checksum header helpers and the parameter checks of several operations.

use std::time::SystemTime;

use base64::Engine as _;
use http::{HeaderMap, Method, Response, StatusCode};

use crate::reply::Body;
pub(crate) use crate::reply::{empty, full};
use crate::xml::{self, el};

/// Largest PutObject body and part: 5 GiB.
pub(crate) const MAX_PUT: u64 = 5 << 30;
/// Smallest part except the last (S3: 5 MiB).
pub(crate) const MIN_PART: u64 = 5 << 20;
/// XML namespace of S3 documents.
pub(crate) const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `x-amz-checksum-crc64nvme` form of a CRC-64/NVME.
pub(crate) fn nvme_b64(crc: u64) -> String {
    b64(&crc.to_be_bytes())
}

/// An S3 error: status, code, message, extra elements and headers.
#[derive(Debug, Clone)]
pub(crate) struct S3Error {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    message: String,
    extra: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
}

impl S3Error {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }
    pub(crate) fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// `<Error><Code/><Message/>[extra]<RequestId/><HostId/></Error>`.
    pub(crate) fn xml(&self, ctx: &Ctx) -> String {
        let mut s = String::from(xml::DECL);
        s.push_str("<Error>");
        s.push_str(&el("Code", self.code));
        s.push_str(&el("Message", &self.message));
        for (k, v) in &self.extra {
            s.push_str(&el(k, v));
        }
        s.push_str(&el("RequestId", &ctx.request_id));
        s.push_str(&el("HostId", &ctx.host_id));
        s.push_str("</Error>");
        s
    }

    /// The response; HEAD gets the status and headers only (botocore derives the code).
    pub(crate) fn render(&self, ctx: &Ctx) -> Response<Body> {
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        let resp = if ctx.method == Method::HEAD {
            b.body(empty())
        } else {
            b.header("content-type", "application/xml")
                .body(full(self.xml(ctx)))
        };
        resp.expect("static response parts are valid")
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "simulator internal error");
    internal_error()
}

pub(crate) fn internal_error() -> S3Error {
    S3Error::new(
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    )
}

pub(crate) fn invalid_request(message: impl Into<String>) -> S3Error {
    S3Error::new(400, "InvalidRequest", message)
}

pub(crate) fn invalid_argument(message: impl Into<String>) -> S3Error {
    S3Error::new(400, "InvalidArgument", message)
}

pub(crate) fn no_such_upload(id: &str) -> S3Error {
    S3Error::new(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .with("UploadId", id)
}

pub(crate) fn no_such_key(key: &str) -> S3Error {
    S3Error::new(404, "NoSuchKey", "The specified key does not exist.").with("Key", key)
}

pub(crate) fn bad_digest(message: impl Into<String>) -> S3Error {
    S3Error::new(400, "BadDigest", message)
}

pub(crate) fn request_timeout() -> S3Error {
    S3Error::new(
        400,
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
    )
}

pub(crate) fn malformed_xml() -> S3Error {
    S3Error::new(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
}

pub(crate) enum Fail {
    S3(S3Error),
    /// Drop the connection with an RST (reset fault).
    Reset,
    /// The client broke the connection; nothing to answer.
    ClientGone,
}

impl From<S3Error> for Fail {
    fn from(e: S3Error) -> Self {
        Fail::S3(e)
    }
}

pub(crate) type Res = Result<Response<Body>, Fail>;

/// One S3 request's context.
pub(crate) struct Ctx {
    pub(crate) request_id: String,
    /// `x-amz-id-2`.
    pub(crate) host_id: String,
    pub(crate) method: Method,
    pub(crate) bucket: Option<String>,
    pub(crate) key: String,
    /// Path and query as sent (for the signature).
    pub(crate) raw_path: String,
    pub(crate) raw_query: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) op: &'static str,
    pub(crate) now: SystemTime,
    /// Region named by a regional Host (`…s3.<region>.amazonaws.com`), if any.
    pub(crate) host_region: Option<String>,
    /// Ignore `x-amz-checksum-*` and refuse aws-chunked (quirks mode).
    pub(crate) quirks: bool,
    /// Send `x-cos-hash-crc64ecma` (COS flavour).
    pub(crate) cos: bool,
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
    /// `x-amz-checksum-mode: ENABLED` (and not in quirks mode).
    pub(crate) fn wants_checksums(&self) -> bool {
        !self.quirks
            && self
                .h("x-amz-checksum-mode")
                .is_some_and(|v| v.eq_ignore_ascii_case("enabled"))
    }
}

/// Lower-case quoted ETag as S3 shows it, from the stored upper-case hex.
pub(crate) fn etag_q(stored: &str) -> String {
    format!("\"{}\"", stored.to_ascii_lowercase())
}

pub(crate) fn parse_content_md5(ctx: &Ctx) -> Result<Option<[u8; 16]>, S3Error> {
    let Some(v) = ctx.h("content-md5") else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or_else(|| {
            S3Error::new(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid.",
            )
        })
}

pub(crate) fn max_param(ctx: &Ctx, name: &'static str, default: usize) -> Result<usize, S3Error> {
    match ctx.q(name) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) => Ok(n.min(1000)),
            _ => Err(invalid_argument(format!(
                "Provided {name} not an integer or within integer range"
            ))
            .with("ArgumentName", name)
            .with("ArgumentValue", v)),
        },
    }
}

pub(crate) fn part_number(ctx: &Ctx) -> Result<u32, S3Error> {
    let v = ctx.q("partNumber").unwrap_or_default();
    match v.parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(
            invalid_argument("Part number must be an integer between 1 and 10000, inclusive")
                .with("ArgumentName", "partNumber")
                .with("ArgumentValue", v),
        ),
    }
}

/// The stored headers an object keeps (content headers and `x-amz-meta-*`).
pub(crate) fn kept_headers(h: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in h {
        let n = name.as_str();
        if matches!(
            n,
            "content-type"
                | "cache-control"
                | "content-disposition"
                | "content-language"
                | "expires"
        ) || n.starts_with("x-amz-meta-")
        {
            if let Ok(v) = value.to_str() {
                out.push((n.to_string(), v.to_string()));
            }
        }
    }
    if !out.iter().any(|(n, _)| n == "content-type") {
        out.push(("content-type".into(), "binary/octet-stream".into()));
    }
    out
}

pub(crate) fn xml_doc(root: &str, inner: &str) -> String {
    format!("{}<{root} xmlns=\"{NS}\">{inner}</{root}>", xml::DECL)
}

/// ETag of a part or object in a discard bucket whose MD5 was not computed (as the OSS
/// dialect: CRC-64 and size, 32 hex digits like an MD5).
pub(crate) fn discard_etag(crc: u64, size: u64) -> String {
    format!("{crc:016X}{size:016X}")
}

/// A stable canonical-user-ID-like owner ID for an account (64 hex digits).
pub(crate) fn owner_id(account: &str) -> String {
    crate::sigv4::sha256_hex(format!("owner:{account}").as_bytes())
}
