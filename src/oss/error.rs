//! OSS errors: the service's error XML (or HEAD's `x-oss-err` header) turned into a
//! classified error with a message a user can act on.

use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use http::HeaderMap;

use super::endpoint::region_from_endpoint_host;
use super::xml;
pub use crate::store::wire::{clock_offset_ms, one_line};
use crate::store::{ErrorClass, StoreError};

/// An OSS request failure. `message` is one actionable line; it never holds secrets,
/// signatures or the server's StringToSign.
#[derive(Debug, Clone, thiserror::Error)]
pub struct OssError {
    pub class: ErrorClass,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Service error code (`NoSuchKey`, `AccessDenied`, ...).
    pub code: Option<String>,
    /// Actionable summary.
    pub message: String,
    /// The service's own `<Message>`.
    pub server_message: Option<String>,
    pub request_id: Option<String>,
    pub host_id: Option<String>,
    /// Detailed error code (`EC`, e.g. `0026-00000001`).
    pub ec: Option<String>,
    /// The endpoint the bucket must be addressed through (wrong-region errors).
    pub endpoint: Option<String>,
    /// Server time from a RequestTimeTooSkewed error (`ServerTime` or the `Date` header).
    pub server_time: Option<SystemTime>,
    /// OSS API name (`UploadPart`, ...), when known.
    pub operation: Option<&'static str>,
    /// Attempts made before giving up (1 when not retried).
    pub attempts: u32,
    /// No HTTP answer at all (refused, no such host, not HTTP) from an endpoint that has not
    /// answered any request yet: most likely a wrong endpoint or region, not a blip.
    pub never_answered: bool,
}

impl fmt::Display for OssError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut extra = Vec::new();
        if let Some(c) = &self.code {
            extra.push(c.clone());
        }
        if let Some(s) = self.status {
            extra.push(format!("HTTP {s}"));
        }
        if let Some(ec) = &self.ec {
            extra.push(format!("EC {ec}"));
        }
        if let Some(r) = &self.request_id {
            extra.push(format!("request id {r}"));
        }
        if !extra.is_empty() {
            write!(f, " ({})", extra.join(", "))?;
        }
        Ok(())
    }
}

/// Longest server-provided field (code, message, request id, ...) we repeat in an error.
const MAX_SERVER_FIELD: usize = 300;

/// Request facts that make error messages specific.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorContext<'a> {
    pub operation: &'static str,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    /// Flag users pass to pick this side's region (e.g. `--src-region`).
    pub region_flag: &'a str,
    /// Region in the V4 signature scope (names the mismatch in signing-region errors).
    pub signing_region: &'a str,
    /// Bare endpoint host the request went to (`oss-cn-hangzhou.aliyuncs.com`, `127.0.0.1`).
    pub endpoint_host: &'a str,
}

impl ErrorContext<'_> {
    fn target(&self) -> String {
        match (self.bucket, self.key) {
            (Some(b), Some(k)) => format!("oss://{b}/{k}"),
            (Some(b), None) => format!("oss://{b}"),
            _ => "the OSS service".to_string(),
        }
    }
}

impl OssError {
    fn bare(class: ErrorClass, message: String) -> Self {
        OssError {
            class,
            status: None,
            code: None,
            message,
            server_message: None,
            request_id: None,
            host_id: None,
            ec: None,
            endpoint: None,
            server_time: None,
            operation: None,
            attempts: 1,
            never_answered: false,
        }
    }

    /// A configuration or usage error (bad endpoint, bad region, ...).
    pub fn config(message: impl Into<String>) -> Self {
        Self::bare(ErrorClass::Client, message.into())
    }

    /// A network failure, timeout or broken body: retryable.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::bare(ErrorClass::Transient, message.into())
    }

    /// A failure with an explicit class and no response.
    pub fn with_class(class: ErrorClass, message: impl Into<String>) -> Self {
        Self::bare(class, message.into())
    }

    /// Builds the error for a non-success response. `body` is the (bounded) response body;
    /// for HEAD it is empty and the XML comes base64-encoded in `x-oss-err`.
    pub fn from_response(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        ctx: &ErrorContext<'_>,
    ) -> Self {
        let hdr = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| one_line(s, MAX_SERVER_FIELD))
                .filter(|s| !s.is_empty())
        };
        let mut xml_bytes: Vec<u8> = body.to_vec();
        if xml_bytes.iter().all(|b| b.is_ascii_whitespace()) {
            // Raw, not through `hdr`: the base64 may be longer than a shown field.
            if let Some(err) = headers
                .get("x-oss-err")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
            {
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(err) {
                    xml_bytes = decoded;
                }
            }
        }
        let fields = xml::parse_error_fields(&xml_bytes);
        // Everything the server says ends up in our one-line error: no newlines, no terminal
        // control or bidi characters, and a bounded length, whatever the server sent.
        let get = |n: &str| {
            fields
                .get(n)
                .map(|s| one_line(s, MAX_SERVER_FIELD))
                .filter(|s| !s.is_empty())
        };

        let code = get("Code");
        let server_message = get("Message");
        let request_id = get("RequestId").or_else(|| hdr("x-oss-request-id"));
        let ec = get("EC").or_else(|| hdr("x-oss-ec"));
        let endpoint = get("Endpoint");
        let server_time = get("ServerTime")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(SystemTime::from)
            .or_else(|| hdr("date").and_then(|d| httpdate::parse_http_date(&d).ok()));

        if code.as_deref() == Some("SignatureDoesNotMatch") {
            // The server's StringToSign holds no secret; it is the key to debugging a
            // mismatch, so it goes to debug logs (never into the user-facing message).
            tracing::debug!(
                server_string_to_sign =
                    fields.get("StringToSign").map(String::as_str).unwrap_or(""),
                server_canonical_request = fields
                    .get("CanonicalRequest")
                    .map(String::as_str)
                    .unwrap_or(""),
                "OSS rejected the signature"
            );
        }
        let class = classify(status, code.as_deref());
        let message =
            if is_signing_region_error(code.as_deref(), ec.as_deref(), server_message.as_deref()) {
                signing_region_message(ctx, get("HostId").as_deref(), server_message.as_deref())
            } else {
                user_message(
                    status,
                    code.as_deref(),
                    server_message.as_deref(),
                    endpoint.as_deref(),
                    ctx,
                )
            };
        OssError {
            class,
            status: Some(status),
            code,
            message,
            server_message,
            request_id,
            host_id: get("HostId"),
            ec,
            endpoint,
            server_time,
            operation: Some(ctx.operation),
            attempts: 1,
            never_answered: false,
        }
    }

    /// Whether this is the given service code.
    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Whether OSS rejected the V4 scope's region (EC 0002-00000226 / 0002-00000228; the code and
/// wording are not documented, so the message is matched too).
fn is_signing_region_error(code: Option<&str>, ec: Option<&str>, server: Option<&str>) -> bool {
    matches!(ec, Some("0002-00000226" | "0002-00000228"))
        || (code == Some("InvalidArgument")
            && server.is_some_and(|m| m.to_ascii_lowercase().contains("signing region")))
}

/// Advice for a request signed for the wrong region: the endpoint's region, found in the
/// endpoint host, the error's HostId (`bucket.oss-<region>.aliyuncs.com`) or OSS's message.
fn signing_region_message(
    ctx: &ErrorContext<'_>,
    host_id: Option<&str>,
    server: Option<&str>,
) -> String {
    let ours = ctx.signing_region;
    let flag = if ctx.region_flag.is_empty() {
        "--region"
    } else {
        ctx.region_flag
    };
    let from_host = |h: &str| {
        region_from_endpoint_host(h).or_else(|| {
            h.split_once('.')
                .and_then(|(_, rest)| region_from_endpoint_host(rest))
        })
    };
    let looks_like_region = |t: &&str| {
        t.contains('-')
            && !t.starts_with('-')
            && !t.ends_with('-')
            && t.starts_with(|c: char| c.is_ascii_lowercase())
            && *t != ours
    };
    let right = from_host(ctx.endpoint_host)
        .or_else(|| host_id.and_then(from_host))
        .filter(|r| r != ours)
        .or_else(|| {
            server.and_then(|m| {
                m.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                    .find(looks_like_region)
                    .map(str::to_string)
            })
        });
    let op = ctx.operation;
    let target = ctx.target();
    match right {
        Some(r) => format!(
            "{op} on {target}: the request was signed for region {ours} but the endpoint serves {r}; use {flag} {r}"
        ),
        None => format!(
            "{op} on {target}: OSS rejected signing region {ours} for this endpoint; set {flag} to the region of the endpoint/bucket"
        ),
    }
}

/// The retry class of an HTTP status and service code.
pub fn classify(status: u16, code: Option<&str>) -> ErrorClass {
    let code = code.unwrap_or("");
    if code == "RequestTimeTooSkewed" {
        return ErrorClass::ClockSkew;
    }
    if status == 429
        || code == "SlowDown"
        || code.ends_with("RateLimitExceeded")
        || code.ends_with("QpsLimitExceeded")
        || code == "ActiveRequestLimitExceeded"
        || (status == 503 && (code.is_empty() || code == "ServiceUnavailable"))
    {
        return ErrorClass::Throttled;
    }
    if status >= 500 || status == 408 || code == "RequestTimeout" {
        return ErrorClass::Transient;
    }
    match status {
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        412 => ErrorClass::Precondition,
        _ => ErrorClass::Client,
    }
}

fn user_message(
    status: u16,
    code: Option<&str>,
    server: Option<&str>,
    endpoint: Option<&str>,
    ctx: &ErrorContext<'_>,
) -> String {
    let op = ctx.operation;
    let target = ctx.target();
    let bucket = ctx.bucket.unwrap_or("?");
    let flag = if ctx.region_flag.is_empty() {
        "--region"
    } else {
        ctx.region_flag
    };
    let server = server.unwrap_or("");
    match code.unwrap_or("") {
        "AccessDenied" if endpoint.is_some() => {
            let ep = endpoint.unwrap_or_default();
            match region_from_endpoint_host(ep) {
                Some(r) => format!(
                    "{op}: bucket {bucket} is in region {r}; use {flag} {r} (OSS says to use endpoint {ep})"
                ),
                None => format!("{op}: bucket {bucket} must be accessed through endpoint {ep}"),
            }
        }
        "SignatureDoesNotMatch" => format!(
            "{op} on {target}: OSS rejected the request signature; check the AccessKey secret"
        ),
        "InvalidAccessKeyId" => format!(
            "{op} on {target}: OSS does not know this AccessKey ID; check the AccessKey ID (and, for STS, that the token is fresh)"
        ),
        "SecurityTokenExpired" | "InvalidSecurityToken" => format!(
            "{op} on {target}: the STS security token was rejected ({server}); refresh the temporary credentials"
        ),
        "RequestTimeTooSkewed" => format!(
            "{op} on {target}: the local clock differs from OSS by more than 15 minutes; the client corrected its offset, fix NTP on this host"
        ),
        "SecondLevelDomainForbidden" => format!(
            "{op} on {target}: OSS refuses path-style addressing; do not force path style against OSS endpoints"
        ),
        "NoSuchBucket" => format!("{op}: bucket {bucket} does not exist (check the bucket name and region)"),
        "NoSuchKey" => format!(
            "{op}: object {} does not exist in bucket {bucket}",
            ctx.key.unwrap_or("?")
        ),
        "NoSuchUpload" => format!(
            "{op} on {target}: the multipart upload does not exist (it was aborted, completed or expired)"
        ),
        "AccessDenied" => format!(
            "{op} on {target}: access denied ({server}); check that the RAM policy allows oss:{op} on this bucket"
        ),
        "PreconditionFailed" => format!(
            "{op} on {target}: the object changed since it was first read (ETag no longer matches)"
        ),
        "InvalidRange" => format!("{op} on {target}: requested range is outside the object"),
        c if !c.is_empty() => {
            if server.is_empty() {
                format!("{op} on {target} failed: {c}")
            } else {
                format!("{op} on {target} failed: {server}")
            }
        }
        _ => match status {
            404 => format!("{op}: {target} not found"),
            412 => format!("{op} on {target}: precondition failed (the object changed)"),
            403 => format!("{op} on {target}: access denied"),
            s => format!("{op} on {target} failed with HTTP {s}"),
        },
    }
}

impl From<OssError> for StoreError {
    fn from(e: OssError) -> Self {
        StoreError {
            class: e.class,
            message: e.message.clone(),
            code: e.code,
            status: e.status,
            request_id: e.request_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    fn ctx<'a>(op: &'static str, bucket: &'a str, key: Option<&'a str>) -> ErrorContext<'a> {
        ErrorContext {
            operation: op,
            bucket: Some(bucket),
            key,
            region_flag: "--src-region",
            signing_region: "cn-beijing",
            endpoint_host: "127.0.0.1",
        }
    }

    #[test]
    fn wrong_signing_region_names_the_endpoint_region() {
        // Real OSS: terse message, the region is in HostId.
        let body = b"<Error><Code>InvalidArgument</Code><Message>Invalid signing region in Authorization header.</Message><HostId>b.oss-cn-hangzhou.aliyuncs.com</HostId><EC>0002-00000226</EC></Error>";
        let e = OssError::from_response(
            400,
            &HeaderMap::new(),
            body,
            &ctx("GetObject", "b", Some("k")),
        );
        assert_eq!(e.class, ErrorClass::Client);
        assert!(
            e.message.contains("signed for region cn-beijing but the endpoint serves cn-hangzhou; use --src-region cn-hangzhou"),
            "{}",
            e.message
        );
        // The region only in the message (simulator behind an IP endpoint).
        let body = b"<Error><Code>InvalidArgument</Code><Message>Invalid signing region in Authorization header: cn-beijing (this endpoint serves eu-central-1).</Message><HostId>127.0.0.1:9000</HostId></Error>";
        let e = OssError::from_response(
            400,
            &HeaderMap::new(),
            body,
            &ctx("GetObject", "b", Some("k")),
        );
        assert!(
            e.message.contains("use --src-region eu-central-1"),
            "{}",
            e.message
        );
        // Nothing to go on: still says which flag to fix.
        let body = b"<Error><Code>InvalidArgument</Code><Message>Invalid signing region.</Message><EC>0002-00000228</EC></Error>";
        let e = OssError::from_response(
            400,
            &HeaderMap::new(),
            body,
            &ctx("GetObject", "b", Some("k")),
        );
        assert!(
            e.message.contains("rejected signing region cn-beijing"),
            "{}",
            e.message
        );
        assert!(e.message.contains("set --src-region"), "{}", e.message);
    }

    #[test]
    fn wrong_region_names_the_region() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>AccessDenied</Code>
  <Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message>
  <RequestId>63E03DBE1B08F731365BE4DE</RequestId>
  <HostId>jeffcott.oss-cn-hangzhou.aliyuncs.com</HostId>
  <Bucket>jeffcott</Bucket>
  <Endpoint>oss-cn-beijing.aliyuncs.com</Endpoint>
</Error>"#;
        let e = OssError::from_response(
            403,
            &HeaderMap::new(),
            body,
            &ctx("HeadObject", "jeffcott", Some("k")),
        );
        assert_eq!(e.class, ErrorClass::Auth);
        assert_eq!(e.endpoint.as_deref(), Some("oss-cn-beijing.aliyuncs.com"));
        assert_eq!(e.request_id.as_deref(), Some("63E03DBE1B08F731365BE4DE"));
        assert_eq!(
            e.host_id.as_deref(),
            Some("jeffcott.oss-cn-hangzhou.aliyuncs.com")
        );
        assert!(
            e.message
                .contains("bucket jeffcott is in region cn-beijing; use --src-region cn-beijing"),
            "{}",
            e.message
        );
        let s: StoreError = e.into();
        assert_eq!(s.class, ErrorClass::Auth);
        assert_eq!(s.code.as_deref(), Some("AccessDenied"));
    }

    #[test]
    fn head_error_from_header() {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<Error>\r\n  <Code>NoSuchKey</Code>\r\n  <Message>The specified key does not exist.</Message>\r\n  <RequestId>6556E3AED11E553933CCDEDF</RequestId>\r\n  <HostId>demo-walker-6961.oss-cn-hangzhou.aliyuncs.com</HostId>\r\n  <Key>walker2asdasdasd.txt</Key>\r\n  <EC>0026-00000001</EC>\r\n</Error>";
        let mut h = HeaderMap::new();
        h.insert(
            "x-oss-err",
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(xml)).unwrap(),
        );
        h.insert("x-oss-ec", HeaderValue::from_static("0026-00000001"));
        h.insert(
            "x-oss-request-id",
            HeaderValue::from_static("6556E3AED11E553933CCDEDF"),
        );
        let e = OssError::from_response(
            404,
            &h,
            b"",
            &ctx("HeadObject", "demo", Some("walker2asdasdasd.txt")),
        );
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("NoSuchKey"));
        assert_eq!(e.ec.as_deref(), Some("0026-00000001"));
        assert_eq!(
            e.server_message.as_deref(),
            Some("The specified key does not exist.")
        );
        assert!(e.message.contains("walker2asdasdasd.txt"), "{}", e.message);
        assert!(e.message.contains("demo"));

        // No x-oss-err at all: fall back to headers and status.
        let mut h = HeaderMap::new();
        h.insert("x-oss-ec", HeaderValue::from_static("0015-00000101"));
        let e = OssError::from_response(404, &h, b"", &ctx("HeadObject", "b", Some("k")));
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.ec.as_deref(), Some("0015-00000101"));
        assert!(e.code.is_none());
    }

    #[test]
    fn signature_mismatch_hides_string_to_sign() {
        let body = b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided. Check your key and signing method.</Message><RequestId>625A73995C8CDB36362D736C</RequestId><HostId>h</HostId><OSSAccessKeyId>LTAI5t</OSSAccessKeyId><SignatureProvided>X5eag9XWCsd/Cq3QzZjWZMOgF0Y=</SignatureProvided><StringToSign>PUT\n\nimage/png\nSat</StringToSign><EC>0002-00000040</EC></Error>";
        let e = OssError::from_response(
            403,
            &HeaderMap::new(),
            body,
            &ctx("PutObject", "b", Some("k")),
        );
        assert_eq!(e.class, ErrorClass::Auth);
        let shown = e.to_string();
        assert!(shown.contains("check the AccessKey secret"), "{shown}");
        assert!(!shown.contains("X5eag9"));
        assert!(!shown.contains("image/png"));
        assert!(!format!("{e:?}").contains("X5eag9"));
        assert!(shown.contains("EC 0002-00000040"));
    }

    #[test]
    fn not_found_messages_name_things() {
        let e = OssError::from_response(
            404,
            &HeaderMap::new(),
            b"<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message><BucketName>test</BucketName></Error>",
            &ctx("GetObject", "test", Some("k")),
        );
        assert!(
            e.message.contains("bucket test does not exist"),
            "{}",
            e.message
        );
        let e = OssError::from_response(
            404,
            &HeaderMap::new(),
            b"<Error><Code>NoSuchKey</Code></Error>",
            &ctx("GetObject", "bk", Some("dir/obj")),
        );
        assert!(e.message.contains("dir/obj") && e.message.contains("bk"));
    }

    #[test]
    fn classes() {
        use ErrorClass::*;
        let cases: &[(u16, Option<&str>, ErrorClass)] = &[
            (503, Some("SlowDown"), Throttled),
            (503, Some("DownloadTrafficRateLimitExceeded"), Throttled),
            (503, Some("TotalQpsLimitExceeded"), Throttled),
            (503, Some("ServiceUnavailable"), Throttled),
            (503, None, Throttled),
            (429, Some("QpsLimitExceeded"), Throttled),
            (500, Some("InternalError"), Transient),
            (502, None, Transient),
            (400, Some("RequestTimeout"), Transient),
            (403, Some("RequestTimeTooSkewed"), ClockSkew),
            (403, Some("InvalidAccessKeyId"), Auth),
            (403, Some("SignatureDoesNotMatch"), Auth),
            (403, Some("AccessDenied"), Auth),
            (401, None, Auth),
            (404, Some("NoSuchKey"), NotFound),
            (404, Some("NoSuchUpload"), NotFound),
            (412, Some("PreconditionFailed"), Precondition),
            (400, Some("InvalidPart"), Client),
            (409, Some("FileAlreadyExists"), Client),
            (416, Some("InvalidRange"), Client),
        ];
        for (status, code, want) in cases {
            assert_eq!(classify(*status, *code), *want, "{status} {code:?}");
        }
    }

    #[test]
    fn skew_server_time_and_offset() {
        let body = b"<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and the current time is too large.</Message><RequestTime>1970-01-01T12:52:35.000Z</RequestTime><ServerTime>2019-03-30T13:18:53.000Z</ServerTime><MaxAllowedSkewMilliseconds>900000</MaxAllowedSkewMilliseconds></Error>";
        let e = OssError::from_response(403, &HeaderMap::new(), body, &ctx("GetObject", "b", None));
        assert_eq!(e.class, ErrorClass::ClockSkew);
        let st = e.server_time.unwrap();
        assert_eq!(
            st.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_553_951_933
        );
        // Date header fallback.
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Sat, 30 Mar 2019 13:18:53 GMT"),
        );
        let e = OssError::from_response(
            403,
            &h,
            b"<Error><Code>RequestTimeTooSkewed</Code></Error>",
            &ctx("GetObject", "b", None),
        );
        assert_eq!(e.server_time, Some(st));

        let local = st - Duration::from_secs(3600);
        assert_eq!(clock_offset_ms(st, local), 3_600_000);
        assert_eq!(clock_offset_ms(local, st), -3_600_000);
    }

    #[test]
    fn garbage_body_still_classified() {
        let e = OssError::from_response(
            500,
            &HeaderMap::new(),
            b"<html>oops",
            &ctx("UploadPart", "b", Some("k")),
        );
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(e.message.contains("HTTP 500"), "{}", e.message);
    }
}
