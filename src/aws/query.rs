//! The AWS Query protocol client shared by EC2 ([`super::ec2`]), IAM ([`super::iam`]) and STS.
//!
//! Guarantees callers can rely on:
//! * Wire form (ec2-vm-import-export.md §1): `POST /` with the parameters as a form body
//!   (`Action=…&Version=…&…`, `Content-Type: application/x-www-form-urlencoded;
//!   charset=utf-8`), each key and value percent-encoded per RFC 3986. botocore encodes a space
//!   as `+`; we send `%20`, which every form decoder reads as the same space, and every other
//!   byte exactly as botocore does (the reference's bodies are unit tests below).
//! * Signing: SigV4 with the service's signing name (`ec2`, `iam`, `sts`) and scope region
//!   (the endpoint's region; IAM signs for `us-east-1`, or `cn-north-1` in the `aws-cn`
//!   partition), over `content-type;host;x-amz-date` (+ `x-amz-security-token` for temporary
//!   credentials). Every attempt asks the credentials provider again and signs at send time,
//!   so a refreshed or rotated key is picked up and `x-amz-date` is always fresh.
//! * Failure: attempts go through the crate's one retry rule ([`crate::http::retry`]); an
//!   answer is retried only when it is throttling (`RequestLimitExceeded`, `Throttling`,
//!   `ThrottlingException`), a 5xx, or a connection-level failure, with the shared jittered
//!   [`crate::http::Backoff`]. An expired-credentials answer (`ExpiredToken`,
//!   `RequestExpired`, …) gets exactly one more call with credentials asked anew. Everything
//!   else is final and returned as [`AwsQueryError`].
//! * Both error shapes become one [`AwsQueryError::Service`] carrying code, message, request
//!   id and HTTP status: EC2's `<Response><Errors><Error>…</Errors><RequestID/>` and
//!   IAM/STS's `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>`.
//! * Bounded: answers larger than [`MAX_BODY`] are refused; one attempt is cut after the
//!   client's timeout (30 s by default; connect 10 s).
//! * No access key secret or session token reaches a log line, an error or `Debug`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};

use super::xml::{self, Node};
use crate::acs::rpc::percent_encode;
use crate::credentials::{Credentials, CredentialsError, CredentialsProvider};
use crate::http::proxy::ProxyConfig;
use crate::http::{
    Metered, Replay, ReqBody, RetryPolicy, Retryable, Timeouts, Transport, TransportConfig,
};
use crate::oss::error::one_line;
use crate::store::ErrorClass;

/// Query answers are small documents; a DescribeImages page of 1000 images stays far below.
pub const MAX_BODY: usize = 8 << 20;

/// One Query API: its signing name, API version and metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryService {
    /// SigV4 signing name and metrics `service` label.
    pub signing_name: &'static str,
    pub version: &'static str,
}

/// EC2, API version 2016-11-15.
pub const EC2: QueryService = QueryService {
    signing_name: "ec2",
    version: "2016-11-15",
};
/// IAM, API version 2010-05-08 (global).
pub const IAM: QueryService = QueryService {
    signing_name: "iam",
    version: "2010-05-08",
};
/// STS, API version 2011-06-15.
pub const STS: QueryService = QueryService {
    signing_name: "sts",
    version: "2011-06-15",
};

fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// `https://ec2.<region>.amazonaws.com` (`.com.cn` for China regions).
pub fn ec2_endpoint(region: &str) -> String {
    format!("https://ec2.{region}.{}", dns_suffix(region))
}

/// IAM's global endpoint and SigV4 scope region for the partition `region` belongs to:
/// `https://iam.amazonaws.com` signed for `us-east-1`, or in China
/// `https://iam.cn-north-1.amazonaws.com.cn` signed for `cn-north-1` (botocore's endpoint
/// rules; ec2-vm-import-export.md §5.2).
pub fn iam_endpoint(region: &str) -> (String, &'static str) {
    if region.starts_with("cn-") {
        (
            "https://iam.cn-north-1.amazonaws.com.cn".to_string(),
            "cn-north-1",
        )
    } else {
        ("https://iam.amazonaws.com".to_string(), "us-east-1")
    }
}

/// The form parameters of one call, in the order sent. Builders for the Query conventions:
/// dotted structures, 1-based `.N` lists, `true`/`false` booleans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// `Action=<action>&Version=<version>`.
    pub fn new(action: &str, service: QueryService) -> Self {
        Params(vec![
            ("Action".into(), action.into()),
            ("Version".into(), service.version.into()),
        ])
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// Sets `key` when `value` is present and not empty.
    pub fn opt(&mut self, key: impl Into<String>, value: Option<&str>) -> &mut Self {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.0.push((key.into(), v.to_string()));
        }
        self
    }

    pub fn bool(&mut self, key: impl Into<String>, value: bool) -> &mut Self {
        self.set(key, if value { "true" } else { "false" })
    }

    /// `<prefix>.1=v1&<prefix>.2=v2…`.
    pub fn list(&mut self, prefix: &str, values: &[String]) -> &mut Self {
        for (i, v) in values.iter().enumerate() {
            self.set(format!("{prefix}.{}", i + 1), v.clone());
        }
        self
    }

    /// `<prefix>.N.Name=…&<prefix>.N.Value.M=…` (EC2 filters: `Filter` for most calls,
    /// `Filters` for DescribeImportImageTasks).
    pub fn filters(&mut self, prefix: &str, filters: &[(&str, Vec<String>)]) -> &mut Self {
        for (i, (name, values)) in filters.iter().enumerate() {
            let n = i + 1;
            self.set(format!("{prefix}.{n}.Name"), *name);
            self.list(&format!("{prefix}.{n}.Value"), values);
        }
        self
    }

    /// `TagSpecification.1.ResourceType=<rt>&TagSpecification.1.Tag.N.Key/Value`; nothing when
    /// `tags` is empty.
    pub fn tag_specification(
        &mut self,
        resource_type: &str,
        tags: &[(String, String)],
    ) -> &mut Self {
        if tags.is_empty() {
            return self;
        }
        self.set("TagSpecification.1.ResourceType", resource_type);
        for (i, (k, v)) in tags.iter().enumerate() {
            let n = i + 1;
            self.set(format!("TagSpecification.1.Tag.{n}.Key"), k.clone());
            self.set(format!("TagSpecification.1.Tag.{n}.Value"), v.clone());
        }
        self
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The value of `key`, if set (tests, logs).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The action name.
    pub fn action(&self) -> &str {
        self.get("Action").unwrap_or("")
    }

    /// The form body.
    pub fn encode(&self) -> String {
        form_encode(&self.0)
    }
}

/// `k=v&…`, each part percent-encoded (RFC 3986).
pub fn form_encode<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k.as_ref()),
                percent_encode(v.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// An error document's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDoc {
    pub code: String,
    pub message: String,
    pub request_id: String,
}

/// Reads either Query error shape (EC2's `<Response><Errors><Error>` with `RequestID`, or
/// IAM/STS's `<ErrorResponse><Error>` with `RequestId`); `None` when the body is neither or
/// names no code. Fields are cut to one line.
pub fn parse_error(body: &[u8]) -> Option<ErrorDoc> {
    let root = xml::parse(body).ok()?;
    let error = match root.name.as_str() {
        "Response" => root.at(&["Errors", "Error"])?,
        "ErrorResponse" => root.child("Error")?,
        _ => return None,
    };
    let one = |s: String| one_line(s.trim(), 400);
    let code = one(error.string_at(&["Code"]));
    if code.is_empty() {
        return None;
    }
    let request_id = root
        .text_at(&["RequestID"])
        .or_else(|| root.text_at(&["RequestId"]))
        .or_else(|| root.text_at(&["ResponseMetadata", "RequestId"]))
        .unwrap_or_default();
    Some(ErrorDoc {
        code,
        message: one(strip_signing_echo(
            &error
                .string_at(&["Message"])
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        )
        .to_string()),
        request_id: one(request_id),
    })
}

/// A `SignatureDoesNotMatch` message echoes the canonical request and string to sign; the
/// canonical request carries the signed `x-amz-security-token`, so that part is cut off.
fn strip_signing_echo(message: &str) -> &str {
    [
        "The Canonical String",
        "The String-to-Sign",
        "The String to Sign",
    ]
    .iter()
    .filter_map(|m| message.find(m))
    .min()
    .map_or(message, |i| message[..i].trim_end())
}

/// Codes that mean "slow down": retried with the throttling backoff.
pub const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
];

/// Codes that mean the credentials or the signature's date are stale: one more call with
/// credentials asked anew can succeed.
pub const EXPIRED_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "TokenRefreshRequired",
];

/// Codes that mean the caller is not who it claims or may not do this.
pub const AUTH_CODES: &[&str] = &[
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "OptInRequired",
];

/// Why a Query call failed. Every variant names the service and action; none carries a
/// secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsQueryError {
    /// The service answered with an error document.
    #[error("{service} {action}: {code}: {message} (HTTP {status}, request id {request_id}){}", hint(.code))]
    Service {
        service: &'static str,
        action: String,
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    #[error("{service} {action}: cannot reach {endpoint}: {reason} (check the endpoint and network access)")]
    Network {
        service: &'static str,
        action: String,
        endpoint: String,
        reason: String,
        class: ErrorClass,
    },
    /// An answer that is not the protocol's (a proxy's HTML page, a truncated document).
    #[error("{service} {action}: unexpected answer from {endpoint} (HTTP {status}): {reason}")]
    InvalidResponse {
        service: &'static str,
        action: String,
        endpoint: String,
        status: u16,
        reason: String,
    },
    /// The credentials to sign with could not be had.
    #[error("{service} {action}: {source}")]
    Credentials {
        service: &'static str,
        action: String,
        source: CredentialsError,
    },
}

/// What to do about a code, when it is worth saying.
fn hint(code: &str) -> &'static str {
    match code {
        "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch" => {
            "; check the AWS access key, secret and session token (--profile, AWS_ACCESS_KEY_ID)"
        }
        "UnauthorizedOperation" | "AccessDenied" => {
            "; grant the caller this action in IAM or use another --profile"
        }
        "ExpiredToken" | "ExpiredTokenException" => {
            "; the session token has expired: refresh the credentials"
        }
        "RequestExpired" => "; the local clock is off: sync it (e.g. chrony) and retry",
        "RequestLimitExceeded" | "Throttling" => "; AWS throttled the calls: retry later",
        "OptInRequired" => "; the account is not subscribed to this service in this region",
        _ => "",
    }
}

impl AwsQueryError {
    /// The service's error code, when the service answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Service { message, .. } => Some(message),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Service { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Service { status, .. } | Self::InvalidResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_code(&self, code: &str) -> bool {
        self.code() == Some(code)
    }

    /// Throttled by the service.
    pub fn is_throttled(&self) -> bool {
        self.code().is_some_and(|c| THROTTLING_CODES.contains(&c))
    }

    /// Expired credentials or a stale signature date (the call is repeated once).
    pub fn is_expired(&self) -> bool {
        self.code().is_some_and(|c| EXPIRED_CODES.contains(&c))
    }

    /// Bad, expired or insufficient credentials (including a failed credentials lookup).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Credentials { .. })
            || self.is_expired()
            || self.code().is_some_and(|c| AUTH_CODES.contains(&c))
    }

    /// The thing asked about does not exist (`NoSuchEntity`, `*.NotFound`).
    pub fn is_not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c == "NoSuchEntity" || c.ends_with(".NotFound") || c == "NotFound")
    }

    /// Worth trying again later (throttling, 5xx, network): the waiters tolerate these.
    pub fn is_retryable(&self) -> bool {
        self.class().is_retryable()
    }
}

impl Retryable for AwsQueryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Service { .. } if self.is_throttled() => ErrorClass::Throttled,
            Self::Service { status, .. } if *status >= 500 => ErrorClass::Transient,
            Self::Service { .. } if self.is_auth() => ErrorClass::Auth,
            Self::Service { status: 404, .. } => ErrorClass::NotFound,
            Self::Service { .. } => ErrorClass::Client,
            Self::Network { class, .. } => *class,
            Self::InvalidResponse { status, .. } if *status >= 500 => ErrorClass::Transient,
            Self::InvalidResponse { .. } => ErrorClass::Client,
            Self::Credentials { .. } => ErrorClass::Auth,
        }
    }
}

/// One Query API at one endpoint with one set of credentials; cheap to clone.
#[derive(Clone)]
pub struct QueryClient {
    service: QueryService,
    endpoint: String,
    signing_region: String,
    creds: Arc<dyn CredentialsProvider>,
    transport: Transport,
    retry: RetryPolicy,
    timeout: Duration,
}

impl fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryClient")
            .field("service", &self.service.signing_name)
            .field("endpoint", &self.endpoint)
            .field("signing_region", &self.signing_region)
            .field("creds", &self.creds.name())
            .finish_non_exhaustive()
    }
}

impl QueryClient {
    /// A client for `service` at `endpoint` (`http(s)://host[:port]`, a trailing `/` is
    /// dropped), signing for `signing_region`. Proxies from the environment, 10 s connect,
    /// 30 s per attempt, the RPC retry policy (5 attempts).
    pub fn new(
        service: QueryService,
        endpoint: impl Into<String>,
        signing_region: impl Into<String>,
        creds: Arc<dyn CredentialsProvider>,
    ) -> Self {
        let transport = Transport::new(&TransportConfig {
            proxy: ProxyConfig::from_env(),
            ..TransportConfig::new(Duration::from_secs(10))
        })
        .expect("the ring provider supports the default TLS versions");
        let endpoint = endpoint.into();
        let endpoint = endpoint.trim().trim_end_matches('/');
        let endpoint = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("https://{endpoint}")
        };
        Self {
            service,
            endpoint,
            signing_region: signing_region.into(),
            creds,
            transport,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Replaces the per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn signing_region(&self) -> &str {
        &self.signing_region
    }

    pub fn service(&self) -> QueryService {
        self.service
    }

    /// Sends `params` and returns the answer's root element (`<ActionResponse>`), retrying
    /// as the module doc says.
    pub async fn call(&self, params: &Params) -> Result<Node, AwsQueryError> {
        let action = params.action().to_string();
        let body = Bytes::from(params.encode());
        match self.call_retrying(&action, &body).await {
            Err(e) if e.is_expired() => {
                tracing::info!(service = self.service.signing_name, action = %action, code = e.code().unwrap_or(""), "credentials or signature expired; asking for credentials again and repeating the call once");
                self.call_retrying(&action, &body).await
            }
            r => r,
        }
    }

    async fn call_retrying(&self, action: &str, body: &Bytes) -> Result<Node, AwsQueryError> {
        crate::http::retry(&self.retry, Replay::Replayable, action, |_| async move {
            let creds =
                self.creds
                    .credentials()
                    .await
                    .map_err(|source| AwsQueryError::Credentials {
                        service: self.service.signing_name,
                        action: action.to_string(),
                        source,
                    })?;
            self.attempt(action, body.clone(), &creds).await
        })
        .await
    }

    async fn attempt(
        &self,
        action: &str,
        body: Bytes,
        creds: &Credentials,
    ) -> Result<Node, AwsQueryError> {
        let service = self.service.signing_name;
        let invalid = |status: u16, reason: String| AwsQueryError::InvalidResponse {
            service,
            action: action.to_string(),
            endpoint: self.endpoint.clone(),
            status,
            reason,
        };
        let uri: Uri = format!("{}/", self.endpoint)
            .parse()
            .map_err(|e| invalid(0, format!("invalid endpoint: {e}")))?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| invalid(0, "the endpoint has no host".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HOST,
            HeaderValue::from_str(&host).map_err(|e| invalid(0, e.to_string()))?,
        );
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        {
            use crate::aws::sigv4::{sha256_hex, sign_headers, SigningParams};
            sign_headers(
                &Method::POST,
                &uri,
                &mut headers,
                &sha256_hex(&body),
                &SigningParams {
                    access_key_id: &creds.access_key_id,
                    secret_access_key: &creds.access_key_secret,
                    session_token: creds.security_token.as_deref(),
                    region: &self.signing_region,
                    service,
                    time: SystemTime::now(),
                },
            );
        }
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("ossrelay/", env!("CARGO_PKG_VERSION"))),
        );
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(ReqBody::full(body))
            .map_err(|e| invalid(0, e.to_string()))?;
        *req.headers_mut() = headers;
        let timeouts = Timeouts {
            stall: self.timeout,
            attempt: Some(self.timeout),
        };
        let meter = Metered {
            service,
            operation: action,
        };
        let (status, _, bytes) = self
            .transport
            .fetch(req, timeouts, MAX_BODY, Some(meter))
            .await
            .map_err(|e| AwsQueryError::Network {
                service,
                action: action.to_string(),
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
                class: e.class(),
            })?;
        tracing::debug!(service, action, endpoint = %self.endpoint, status = status.as_u16(), "AWS Query response");
        let snippet = || one_line(&String::from_utf8_lossy(&bytes), 200);
        if status.is_success() {
            let root = xml::parse(&bytes).map_err(|r| invalid(status.as_u16(), r))?;
            if root.name == "Response" || root.name == "ErrorResponse" {
                if let Some(e) = parse_error(&bytes) {
                    return Err(service_error(service, action, status.as_u16(), e));
                }
            }
            return Ok(root);
        }
        match parse_error(&bytes) {
            Some(e) => Err(service_error(service, action, status.as_u16(), e)),
            None => Err(invalid(
                status.as_u16(),
                format!("not a Query error document: {}", snippet()),
            )),
        }
    }
}

fn service_error(service: &'static str, action: &str, status: u16, e: ErrorDoc) -> AwsQueryError {
    AwsQueryError::Service {
        service,
        action: action.to_string(),
        status,
        code: e.code,
        message: e.message,
        request_id: if e.request_id.is_empty() {
            "-".into()
        } else {
            e.request_id
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_matches_botocore_bytes() {
        let mut p = Params::new("ExportImage", EC2);
        p.set("S3ExportLocation.S3Prefix", "exports/")
            .set("DiskContainer.2.Url", "s3://b/k.vhd")
            .set("AssumeRolePolicyDocument", r#"{"a":["*"]}"#)
            .set("Description", "a~b-c_d.e");
        assert_eq!(
            p.encode(),
            "Action=ExportImage&Version=2016-11-15&S3ExportLocation.S3Prefix=exports%2F&DiskContainer.2.Url=s3%3A%2F%2Fb%2Fk.vhd&AssumeRolePolicyDocument=%7B%22a%22%3A%5B%22%2A%22%5D%7D&Description=a~b-c_d.e"
        );
        assert_eq!(p.action(), "ExportImage");
    }

    #[test]
    fn list_filter_and_tag_builders() {
        let mut p = Params::new("X", EC2);
        p.list("ImageId", &["a".into(), "b".into()])
            .filters("Filter", &[("state", vec!["available".into()])])
            .tag_specification("export-image-task", &[("k".into(), "v".into())])
            .tag_specification("ignored", &[])
            .opt("Empty", Some(""))
            .opt("None", None)
            .bool("DryRun", false);
        let keys: Vec<&str> = p.pairs().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "Action",
                "Version",
                "ImageId.1",
                "ImageId.2",
                "Filter.1.Name",
                "Filter.1.Value.1",
                "TagSpecification.1.ResourceType",
                "TagSpecification.1.Tag.1.Key",
                "TagSpecification.1.Tag.1.Value",
                "DryRun"
            ]
        );
        assert_eq!(p.get("DryRun"), Some("false"));
    }

    #[test]
    fn parses_both_error_shapes() {
        let ec2 = br#"<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-1]' does not exist</Message></Error></Errors><RequestID>ea966190-f9aa-478e-9ede-example</RequestID></Response>"#;
        let e = parse_error(ec2).unwrap();
        assert_eq!(e.code, "InvalidAMIID.NotFound");
        assert_eq!(e.message, "The image id '[ami-1]' does not exist");
        assert_eq!(e.request_id, "ea966190-f9aa-478e-9ede-example");

        let iam = br#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <Error><Type>Sender</Type><Code>NoSuchEntity</Code>
    <Message>The role with name vmimport cannot be found.</Message></Error>
  <RequestId>4a5b-iam</RequestId></ErrorResponse>"#;
        let e = parse_error(iam).unwrap();
        assert_eq!(e.code, "NoSuchEntity");
        assert_eq!(e.message, "The role with name vmimport cannot be found.");
        assert_eq!(e.request_id, "4a5b-iam");

        assert!(parse_error(b"<html><body>502</body></html>").is_none());
        assert!(parse_error(
            b"<Response><Errors><Error><Message>x</Message></Error></Errors></Response>"
        )
        .is_none());
        assert!(parse_error(b"not xml").is_none());

        let echo = br#"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match. Check your AWS Secret Access Key. The Canonical String for this request should have been 'POST / x-amz-security-token:TOKEN-do-not-leak' The String-to-Sign should have been 'x'</Message></Error><RequestId>r</RequestId></ErrorResponse>"#;
        let e = parse_error(echo).unwrap();
        assert_eq!(
            e.message,
            "The request signature we calculated does not match. Check your AWS Secret Access Key."
        );
    }

    fn svc(status: u16, code: &str) -> AwsQueryError {
        AwsQueryError::Service {
            service: "ec2",
            action: "DescribeImages".into(),
            status,
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            svc(503, "RequestLimitExceeded").class(),
            ErrorClass::Throttled
        );
        assert!(svc(400, "Throttling").is_throttled());
        assert_eq!(svc(500, "InternalError").class(), ErrorClass::Transient);
        assert_eq!(svc(503, "Unavailable").class(), ErrorClass::Transient);
        assert_eq!(svc(401, "AuthFailure").class(), ErrorClass::Auth);
        assert!(!svc(401, "AuthFailure").is_retryable());
        assert!(svc(400, "RequestExpired").is_expired());
        assert!(svc(403, "ExpiredToken").is_auth());
        assert!(!svc(400, "InvalidParameter").is_retryable());
        assert!(svc(400, "InvalidAMIID.NotFound").is_not_found());
        assert!(svc(404, "NoSuchEntity").is_not_found());
        assert!(!svc(409, "EntityAlreadyExists").is_not_found());
        let msg = svc(401, "AuthFailure").to_string();
        assert!(
            msg.starts_with("ec2 DescribeImages: AuthFailure: m (HTTP 401, request id r)"),
            "{msg}"
        );
        assert!(msg.contains("check the AWS access key"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn endpoints_per_partition() {
        assert_eq!(
            ec2_endpoint("eu-west-1"),
            "https://ec2.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            ec2_endpoint("cn-northwest-1"),
            "https://ec2.cn-northwest-1.amazonaws.com.cn"
        );
        assert_eq!(
            iam_endpoint("ap-south-1"),
            ("https://iam.amazonaws.com".into(), "us-east-1")
        );
        assert_eq!(
            iam_endpoint("cn-north-1"),
            (
                "https://iam.cn-north-1.amazonaws.com.cn".into(),
                "cn-north-1"
            )
        );
    }
}
