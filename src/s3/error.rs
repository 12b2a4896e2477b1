//! S3 errors: the REST error XML (or, for HEAD, the status and headers alone) turned into a
//! classified error with one actionable line.
//!
//! Contract: every failure of the S3 dialect is an [`S3Error`] whose `class` is one of
//! [`ErrorClass`] (never widened) and whose `message` is one line ending with what to do next.
//! Messages never contain secrets, signatures or the server's StringToSign/CanonicalRequest.

use std::fmt;
use std::time::SystemTime;

use http::HeaderMap;

use crate::store::wire::{self as xml, one_line};
use crate::store::{ErrorClass, StoreError};

/// Longest server-provided field we repeat.
const MAX_SERVER_FIELD: usize = 300;

/// An S3 request failure.
#[derive(Debug, Clone, thiserror::Error)]
pub struct S3Error {
    pub class: ErrorClass,
    pub status: Option<u16>,
    /// Service error code (`NoSuchKey`, `SlowDown`, …).
    pub code: Option<String>,
    /// Actionable summary.
    pub message: String,
    pub request_id: Option<String>,
    /// The bucket's real region, from `x-amz-bucket-region` or `<Region>` (wrong-region errors).
    pub bucket_region: Option<String>,
    /// The server's clock (`Date` header), for RequestTimeTooSkewed.
    pub server_time: Option<SystemTime>,
    /// Attempts made before giving up.
    pub attempts: u32,
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut extra = Vec::new();
        if let Some(c) = &self.code {
            extra.push(c.clone());
        }
        if let Some(s) = self.status {
            extra.push(format!("HTTP {s}"));
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

impl From<S3Error> for StoreError {
    fn from(e: S3Error) -> Self {
        StoreError {
            class: e.class,
            code: e.code,
            status: e.status,
            request_id: e.request_id,
            message: e.message,
        }
    }
}

/// Request facts that make error messages specific.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorContext<'a> {
    pub operation: &'static str,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The flag that sets this side's region (`--src-region`/`--dst-region`); empty: name both.
    pub region_flag: &'a str,
    /// Region in the signature scope.
    pub signing_region: &'a str,
}

impl ErrorContext<'_> {
    pub fn target(&self) -> String {
        match (self.bucket, self.key) {
            (Some(b), Some(k)) => format!("s3://{b}/{k}"),
            (Some(b), None) => format!("s3://{b}"),
            _ => "the S3 service".to_string(),
        }
    }
}

impl S3Error {
    pub fn with_class(class: ErrorClass, message: impl Into<String>) -> Self {
        S3Error {
            class,
            status: None,
            code: None,
            message: message.into(),
            request_id: None,
            bucket_region: None,
            server_time: None,
            attempts: 1,
        }
    }

    /// A configuration or usage error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::with_class(ErrorClass::Client, message)
    }

    /// A response we could not make sense of (retryable: a proxy or a truncated body).
    pub fn protocol(op: &str, what: impl fmt::Display) -> Self {
        Self::with_class(
            ErrorClass::Transient,
            format!("{op}: unexpected response from S3: {what}"),
        )
    }

    pub fn is_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// From a non-2xx response, or a 2xx whose body is an `<Error>` (Complete).
    pub fn from_response(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        ctx: &ErrorContext<'_>,
    ) -> Self {
        let fields = error_fields(body);
        let field = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| one_line(v, MAX_SERVER_FIELD))
                .filter(|v| !v.is_empty())
        };
        let hdr = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| one_line(s, MAX_SERVER_FIELD))
                .filter(|s| !s.is_empty())
        };
        let code = field("Code");
        let bucket_region = hdr("x-amz-bucket-region")
            .or_else(|| field("Region"))
            .or_else(|| field("Message").as_deref().and_then(expected_region));
        let server_time = hdr("date").and_then(|d| httpdate::parse_http_date(&d).ok());
        let request_id = field("RequestId").or_else(|| hdr("x-amz-request-id"));
        let server_message = field("Message");
        let wrong_region = is_wrong_region(status, code.as_deref())
            && bucket_region
                .as_deref()
                .is_some_and(|r| r != ctx.signing_region);
        let class = if wrong_region {
            ErrorClass::Client
        } else {
            classify(status, code.as_deref())
        };
        let message = if wrong_region {
            region_message(ctx, bucket_region.as_deref().unwrap_or_default())
        } else {
            user_message(ctx, status, code.as_deref(), server_message.as_deref())
        };
        S3Error {
            class,
            status: Some(status),
            code,
            message,
            request_id,
            bucket_region,
            server_time,
            attempts: 1,
        }
    }
}

/// Top-level fields of an `<Error>` document (leading whitespace keep-alives tolerated).
pub fn error_fields(body: &[u8]) -> Vec<(String, String)> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    match xml::parse(&body[start..]) {
        Ok(root) if root.name == "Error" => root
            .children
            .into_iter()
            .map(|c| (c.name, c.text.trim().to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

/// "…the region 'us-east-1' is wrong; expecting 'eu-west-1'" → `eu-west-1`.
fn expected_region(msg: &str) -> Option<String> {
    let rest = msg.split("expecting '").nth(1)?;
    let r = rest.split('\'').next()?;
    (!r.is_empty()).then(|| r.to_string())
}

fn is_wrong_region(status: u16, code: Option<&str>) -> bool {
    matches!(
        code,
        Some("PermanentRedirect")
            | Some("AuthorizationHeaderMalformed")
            | Some("IllegalLocationConstraintException")
            | Some("TemporaryRedirect")
    ) || (code.is_none() && matches!(status, 301 | 307 | 400))
}

fn region_message(ctx: &ErrorContext<'_>, region: &str) -> String {
    let bucket = ctx.bucket.unwrap_or("?");
    let advice = if ctx.region_flag.is_empty() {
        format!("pass --src-region {region} (or --dst-region {region} for a destination bucket)")
    } else {
        format!("pass {} {region}", ctx.region_flag)
    };
    format!(
        "{}: bucket {bucket} is in region {region}, not {}; {advice}",
        ctx.operation, ctx.signing_region
    )
}

/// The retry class of an HTTP status and S3 error code.
pub fn classify(status: u16, code: Option<&str>) -> ErrorClass {
    match code {
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests",
        ) => ErrorClass::Throttled,
        Some(
            "InternalError" | "ServiceUnavailable" | "RequestTimeout" | "BadDigest"
            | "OperationAborted",
        ) => {
            if status == 503 {
                ErrorClass::Throttled
            } else {
                ErrorClass::Transient
            }
        }
        Some("RequestTimeTooSkewed") => ErrorClass::ClockSkew,
        Some(
            "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "AccountProblem"
            | "AllAccessDisabled",
        ) => ErrorClass::Auth,
        Some("NoSuchBucket" | "NoSuchKey" | "NoSuchUpload") => ErrorClass::NotFound,
        Some("PreconditionFailed") => ErrorClass::Precondition,
        _ => match status {
            412 => ErrorClass::Precondition,
            429 | 503 => ErrorClass::Throttled,
            s if s >= 500 => ErrorClass::Transient,
            401 | 403 => ErrorClass::Auth,
            404 => ErrorClass::NotFound,
            _ => ErrorClass::Client,
        },
    }
}

/// Whether the error says the session token expired (the client re-fetches credentials once).
pub fn is_expired_token(code: Option<&str>) -> bool {
    matches!(code, Some("ExpiredToken" | "TokenRefreshRequired"))
}

fn user_message(
    ctx: &ErrorContext<'_>,
    status: u16,
    code: Option<&str>,
    server: Option<&str>,
) -> String {
    let op = ctx.operation;
    let target = ctx.target();
    let bucket = ctx.bucket.unwrap_or("?");
    let server = server.unwrap_or("");
    match code.unwrap_or("") {
        "SlowDown" => format!("{op} on {target}: S3 asks to slow down; the copy lowers its concurrency and retries"),
        "InternalError" => format!("{op} on {target}: S3 internal error; retried, try again later if it persists"),
        "RequestTimeout" => format!("{op} on {target}: S3 timed out waiting for the request body; check the network"),
        "RequestTimeTooSkewed" => format!(
            "{op} on {target}: the local clock differs from S3 by more than 15 minutes; the client corrected its offset, fix NTP on this host"
        ),
        "ExpiredToken" | "TokenRefreshRequired" => format!(
            "{op} on {target}: the session token has expired; refresh the temporary credentials (AWS_SESSION_TOKEN, profile or role)"
        ),
        "InvalidToken" => format!("{op} on {target}: the session token is malformed or invalid; check AWS_SESSION_TOKEN"),
        "InvalidAccessKeyId" => format!(
            "{op} on {target}: S3 does not know this access key ID; check the access key (and, for temporary keys, the session token)"
        ),
        "SignatureDoesNotMatch" => format!(
            "{op} on {target}: S3 rejected the request signature; check the secret access key (and the region for S3-compatible stores)"
        ),
        "AccessDenied" => format!(
            "{op} on {target}: access denied ({server}); check that the IAM policy allows this operation on the bucket"
        ),
        "NoSuchBucket" => format!("{op}: bucket {bucket} does not exist (check the bucket name, region and endpoint)"),
        "NoSuchKey" => format!("{op}: object {} does not exist in bucket {bucket}", ctx.key.unwrap_or("?")),
        "NoSuchUpload" => format!(
            "{op} on {target}: the multipart upload does not exist (it was aborted, completed or expired)"
        ),
        "PreconditionFailed" => format!("{op} on {target}: the object changed since it was first read (ETag no longer matches)"),
        "EntityTooSmall" => format!("{op} on {target}: a part is smaller than the store's minimum; use a larger --part-size"),
        "InvalidPart" | "InvalidPartOrder" => format!("{op} on {target}: the store rejected the part list ({server}); restart the copy without resume"),
        "BadDigest" => format!("{op} on {target}: the store computed a different checksum than sent; the data was corrupted in transit"),
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
            403 => format!("{op} on {target}: access denied; check the credentials, policy and region"),
            503 => format!("{op} on {target}: S3 is throttling (HTTP 503); the copy slows down and retries"),
            s => format!("{op} on {target} failed with HTTP {s}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext<'static> {
        ErrorContext {
            operation: "HeadObject",
            bucket: Some("bkt"),
            key: Some("k"),
            region_flag: "--src-region",
            signing_region: "us-east-1",
        }
    }

    fn err(status: u16, code: &str) -> S3Error {
        let body = format!(
            "<Error><Code>{code}</Code><Message>m</Message><RequestId>R</RequestId></Error>"
        );
        S3Error::from_response(status, &HeaderMap::new(), body.as_bytes(), &ctx())
    }

    #[test]
    fn classes() {
        for (status, code, want) in [
            (503, "SlowDown", ErrorClass::Throttled),
            (500, "InternalError", ErrorClass::Transient),
            (400, "RequestTimeout", ErrorClass::Transient),
            (403, "RequestTimeTooSkewed", ErrorClass::ClockSkew),
            (400, "ExpiredToken", ErrorClass::Auth),
            (403, "InvalidAccessKeyId", ErrorClass::Auth),
            (403, "SignatureDoesNotMatch", ErrorClass::Auth),
            (403, "AccessDenied", ErrorClass::Auth),
            (404, "NoSuchBucket", ErrorClass::NotFound),
            (404, "NoSuchKey", ErrorClass::NotFound),
            (404, "NoSuchUpload", ErrorClass::NotFound),
            (412, "PreconditionFailed", ErrorClass::Precondition),
            (400, "InvalidPart", ErrorClass::Client),
        ] {
            let e = err(status, code);
            assert_eq!(e.class, want, "{code}");
            assert!(!e.message.contains('\n'));
            assert_eq!(e.request_id.as_deref(), Some("R"));
        }
        assert_eq!(classify(503, None), ErrorClass::Throttled);
        assert_eq!(classify(502, None), ErrorClass::Transient);
        assert_eq!(classify(412, None), ErrorClass::Precondition);
    }

    #[test]
    fn wrong_region_from_body_and_header() {
        let body = b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>";
        let e = S3Error::from_response(400, &HeaderMap::new(), body, &ctx());
        assert_eq!(e.class, ErrorClass::Client);
        assert_eq!(e.bucket_region.as_deref(), Some("eu-west-1"));
        assert!(e.message.contains("--src-region eu-west-1"), "{e}");

        let mut h = HeaderMap::new();
        h.insert("x-amz-bucket-region", "ap-south-1".parse().unwrap());
        let e = S3Error::from_response(301, &h, b"", &ctx());
        assert_eq!(e.class, ErrorClass::Client);
        assert!(e.message.contains("region ap-south-1"), "{e}");
    }

    #[test]
    fn keepalive_whitespace_before_error() {
        let f = error_fields(b"   \n  <Error><Code>InternalError</Code></Error>");
        assert_eq!(f[0], ("Code".to_string(), "InternalError".to_string()));
    }

    #[test]
    fn signature_mismatch_hides_string_to_sign() {
        let body = b"<Error><Code>SignatureDoesNotMatch</Code><StringToSign>AWS4-HMAC-SHA256 secret-ish</StringToSign></Error>";
        let e = S3Error::from_response(403, &HeaderMap::new(), body, &ctx());
        assert!(!e.to_string().contains("AWS4-HMAC"), "{e}");
    }
}
