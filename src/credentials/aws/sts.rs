//! AWS STS over the Query protocol (version 2011-06-15): `AssumeRole` (SigV4-signed, service
//! `sts`) and `AssumeRoleWithWebIdentity` (unsigned), and the AssumeRole credentials provider.
//!
//! Guarantees callers can rely on:
//! * One POST of a form body to the endpoint's `/`, through the crate's one transport and its
//!   retry rule ([`crate::http::retry`]): throttling, 5xx, `IDPCommunicationError` and network
//!   failures are retried with the shared backoff; every other answer is final. Each attempt
//!   asks the base provider for credentials again and signs anew (fresh `x-amz-date`).
//! * Endpoint: the explicit one (`--src-sts-endpoint` / `--dst-sts-endpoint`), else
//!   `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL` (both ignored when
//!   `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`), else the regional
//!   `https://sts.<region>.amazonaws.com` (`.com.cn` in China), the SDKs' default since the
//!   global endpoint was deprecated.
//! * `<ErrorResponse>` answers become one-line [`CredentialsError`]s naming the role and what
//!   to check (trust policy, token file, region activation); retryable failures are
//!   [`CredentialsError::Refresh`], final ones [`CredentialsError::Invalid`].
//! * No secret, session token or web identity token reaches a log line, an error or `Debug`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use serde::Deserialize;

use crate::credentials::cache::RefreshingProvider;
use crate::credentials::{
    parse_expiration, Credentials, CredentialsError, CredentialsProvider, EnvLookup,
};
use crate::http::proxy::ProxyConfig;
use crate::http::{
    Metered, Replay, ReqBody, RetryPolicy, Retryable, Timeouts, Transport, TransportConfig,
};
use crate::store::ErrorClass;

/// The STS Query API version.
pub const STS_VERSION: &str = "2011-06-15";
/// Endpoint for STS only.
pub const ENV_ENDPOINT_URL_STS: &str = "AWS_ENDPOINT_URL_STS";
/// Endpoint for every AWS service (used for STS when the STS-specific one is not set).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// `true` ignores the two endpoint variables above.
pub const ENV_IGNORE_CONFIGURED_ENDPOINT_URLS: &str = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS";
/// Region of the STS endpoint when nothing else names one (as the SDKs do).
pub const DEFAULT_REGION: &str = "us-east-1";

/// STS answers are small XML documents.
const MAX_BODY: usize = 1 << 20;

/// The STS endpoint URL (without a trailing `/`); see the module doc for the order.
pub fn sts_endpoint(explicit: Option<&str>, region: &str, env: &EnvLookup) -> String {
    let configured = explicit
        .map(str::to_string)
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            if env.flag(ENV_IGNORE_CONFIGURED_ENDPOINT_URLS) {
                None
            } else {
                env.get(ENV_ENDPOINT_URL_STS)
                    .or_else(|| env.get(ENV_ENDPOINT_URL))
            }
        });
    match configured {
        Some(e) => {
            let e = e.trim().trim_end_matches('/');
            if e.contains("://") {
                e.to_string()
            } else {
                format!("https://{e}")
            }
        }
        None => {
            let suffix = if region.starts_with("cn-") {
                "amazonaws.com.cn"
            } else {
                "amazonaws.com"
            };
            format!("https://sts.{region}.{suffix}")
        }
    }
}

/// The RoleSessionName: given, else `ossrelay-<ms>`; checked against STS's rule (2-64
/// characters of `A-Z a-z 0-9 + = , . @ _ -`).
pub fn session_name(given: Option<&str>) -> Result<String, String> {
    let name = given.map(str::to_string).unwrap_or_else(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("ossrelay-{ms}")
    });
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if !(2..=64).contains(&name.len()) || !name.chars().all(ok) {
        return Err(format!(
            "role session name {name:?} must be 2-64 characters of A-Z a-z 0-9 + = , . @ _ -"
        ));
    }
    Ok(name)
}

/// The parameters of one AssumeRole call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleInput {
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration_seconds: Option<u32>,
}

/// The form fields of AssumeRole, in the order sent.
pub fn assume_role_form(i: &AssumeRoleInput) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Action", "AssumeRole".to_string()),
        ("Version", STS_VERSION.to_string()),
        ("RoleArn", i.role_arn.clone()),
        ("RoleSessionName", i.session_name.clone()),
    ];
    if let Some(e) = &i.external_id {
        f.push(("ExternalId", e.clone()));
    }
    if let Some(d) = i.duration_seconds {
        f.push(("DurationSeconds", d.to_string()));
    }
    f
}

/// `k=v&…`, each part percent-encoded (RFC 3986, as the SDKs encode Query forms); the one
/// Query form encoder is [`crate::aws::query::form_encode`].
pub fn form_encode(fields: &[(&str, String)]) -> String {
    crate::aws::query::form_encode(fields)
}

/// Who a set of credentials belongs to (GetCallerIdentity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// Parses a `GetCallerIdentityResponse`; `Account` and `Arn` must be present.
pub fn parse_caller_identity(body: &[u8]) -> Result<CallerIdentity, String> {
    let root = crate::aws::xml::parse(body)?;
    let r = root
        .child("GetCallerIdentityResult")
        .ok_or("the answer has no GetCallerIdentityResult")?;
    let id = CallerIdentity {
        account: r.string_at(&["Account"]),
        arn: r.string_at(&["Arn"]),
        user_id: r.string_at(&["UserId"]),
    };
    if id.account.is_empty() || id.arn.is_empty() {
        return Err("the answer lacks Account or Arn".into());
    }
    Ok(id)
}

/// Temporary credentials as STS returned them.
#[derive(Clone, PartialEq, Eq)]
pub struct StsCredentials {
    pub credentials: Credentials,
    /// `AssumedRoleUser/Arn`, for logs.
    pub assumed_role_arn: Option<String>,
}

impl fmt::Debug for StsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsCredentials")
            .field("credentials", &self.credentials)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish()
    }
}

#[derive(Deserialize)]
struct ResponseXml {
    #[serde(rename = "AssumeRoleResult", alias = "AssumeRoleWithWebIdentityResult")]
    result: ResultXml,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResultXml {
    credentials: CredentialsXml,
    #[serde(default)]
    assumed_role_user: Option<UserXml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsXml {
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    secret_access_key: String,
    #[serde(default)]
    session_token: String,
    #[serde(default)]
    expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserXml {
    #[serde(default)]
    arn: String,
}

/// Parses an `AssumeRoleResponse` / `AssumeRoleWithWebIdentityResponse`: all three secrets
/// present and an `Expiration` that parses, else a reason.
pub fn parse_credentials_response(body: &[u8]) -> Result<StsCredentials, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_string())?;
    let doc: ResponseXml = quick_xml::de::from_str(text)
        .map_err(|e| format!("the answer is not the expected XML ({e})"))?;
    let c = doc.result.credentials;
    if c.access_key_id.is_empty() || c.secret_access_key.is_empty() || c.session_token.is_empty() {
        return Err("the answer lacks AccessKeyId, SecretAccessKey or SessionToken".into());
    }
    let expiration = parse_expiration(&c.expiration)
        .ok_or_else(|| format!("cannot parse Expiration {:?}", c.expiration))?;
    Ok(StsCredentials {
        credentials: Credentials {
            access_key_id: c.access_key_id.trim().to_string(),
            access_key_secret: c.secret_access_key.trim().to_string(),
            security_token: Some(c.session_token.trim().to_string()),
            expiration: Some(expiration),
        },
        assumed_role_arn: doc
            .result
            .assumed_role_user
            .map(|u| u.arn)
            .filter(|a| !a.is_empty()),
    })
}

/// `(code, message, request id)` of a Query error document, if the body is one (read by
/// [`crate::aws::query::parse_error`], which knows both shapes).
pub fn parse_error_response(body: &[u8]) -> Option<(String, String, String)> {
    crate::aws::query::parse_error(body).map(|e| (e.code, e.message, e.request_id))
}

/// Why an STS call failed. Messages never contain secrets or tokens.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StsError {
    /// STS answered with an `<ErrorResponse>`.
    #[error("{code}: {message} (HTTP {status}, RequestId {request_id})")]
    Service {
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    #[error("cannot reach {endpoint}: {reason}")]
    Network {
        endpoint: String,
        reason: String,
        class: ErrorClass,
    },
    #[error("unexpected answer from {endpoint} (HTTP {status}): {reason}")]
    InvalidResponse {
        endpoint: String,
        status: u16,
        reason: String,
    },
    /// The base credentials of AssumeRole could not be had.
    #[error(transparent)]
    Credentials(CredentialsError),
}

impl Retryable for StsError {
    fn class(&self) -> ErrorClass {
        match self {
            StsError::Service { status, code, .. } => match code.as_str() {
                "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                    ErrorClass::Throttled
                }
                // The identity provider did not answer STS in time: botocore retries it.
                "IDPCommunicationError" | "InternalFailure" | "ServiceUnavailable" => {
                    ErrorClass::Transient
                }
                _ if *status >= 500 => ErrorClass::Transient,
                _ if *status == 401 || *status == 403 => ErrorClass::Auth,
                _ => ErrorClass::Client,
            },
            StsError::Network { class, .. } => *class,
            StsError::InvalidResponse { status, .. } if *status >= 500 => ErrorClass::Transient,
            StsError::InvalidResponse { .. } => ErrorClass::Client,
            StsError::Credentials(_) => ErrorClass::Auth,
        }
    }
}

/// Which call failed, for [`StsError::into_credentials_error`]'s advice.
pub enum StsCall<'a> {
    AssumeRole {
        role_arn: &'a str,
    },
    WebIdentity {
        role_arn: &'a str,
        token_file: &'a str,
    },
}

impl StsError {
    /// A one-line error naming the role and the next step. Retryable failures become
    /// `Refresh` (the cache tries again later), final ones `Invalid`.
    pub fn into_credentials_error(self, call: StsCall<'_>, region: &str) -> CredentialsError {
        let (action, role) = match &call {
            StsCall::AssumeRole { role_arn } => ("AssumeRole", *role_arn),
            StsCall::WebIdentity { role_arn, .. } => ("AssumeRoleWithWebIdentity", *role_arn),
        };
        let provider = format!("STS {action} into {role}");
        if let StsError::Credentials(e) = self {
            return e;
        }
        if self.class().is_retryable() {
            return CredentialsError::Refresh {
                provider,
                reason: self.to_string(),
            };
        }
        let hint = match (&self, &call) {
            (StsError::Service { code, .. }, _) => match (code.as_str(), &call) {
                ("AccessDenied", StsCall::AssumeRole { .. }) => "check that the role's trust policy allows the source credentials' principal (and the ExternalId, if it requires one) and that they may call sts:AssumeRole on it".to_string(),
                ("AccessDenied", StsCall::WebIdentity { .. }) => "check that the role's trust policy allows sts:AssumeRoleWithWebIdentity for this identity provider, subject and audience".to_string(),
                ("InvalidIdentityToken", StsCall::WebIdentity { token_file, .. }) => format!("the token in {token_file} was rejected; check that an IAM OIDC provider exists for its issuer, that its audience is sts.amazonaws.com, and that the role trusts that provider"),
                ("ExpiredTokenException" | "ExpiredToken", StsCall::WebIdentity { token_file, .. }) => format!("the token in {token_file} has expired; the platform must keep rotating that file (on EKS the pod identity webhook does)"),
                ("ExpiredTokenException" | "ExpiredToken", StsCall::AssumeRole { .. }) => "the source credentials' session token has expired; refresh them (export a new AWS_SESSION_TOKEN or fix the source profile)".to_string(),
                ("RegionDisabledException", _) => format!("STS is not activated in region {region}; activate it under IAM > Account settings, or choose another region (AWS_REGION) or STS endpoint (--src-sts-endpoint/--dst-sts-endpoint, AWS_ENDPOINT_URL_STS)"),
                ("InvalidClientTokenId" | "SignatureDoesNotMatch" | "IncompleteSignature", _) => "the source credentials are not valid for STS; check the access key, secret and session token".to_string(),
                ("ValidationError", _) => "check the role ARN (arn:aws:iam::<account>:role/<name>), session name and duration_seconds".to_string(),
                _ => String::new(),
            },
            (StsError::Network { .. }, _) => "check the STS endpoint and network access".into(),
            _ => String::new(),
        };
        CredentialsError::Invalid {
            source_name: provider,
            reason: if hint.is_empty() {
                self.to_string()
            } else {
                format!("{self}; {hint}")
            },
        }
    }
}

/// Calls STS over the shared transport.
#[derive(Clone)]
pub struct StsClient {
    endpoint: String,
    region: String,
    transport: Transport,
    retry: RetryPolicy,
    timeout: Duration,
}

impl fmt::Debug for StsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsClient")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl StsClient {
    /// `endpoint` as from [`sts_endpoint`]; `region` is the SigV4 signing region. Proxies from
    /// the environment, 10 s connect, 30 s per attempt, the RPC retry policy (5 attempts).
    pub fn new(endpoint: impl Into<String>, region: impl Into<String>) -> Self {
        let transport = Transport::new(&TransportConfig {
            proxy: ProxyConfig::from_env(),
            ..TransportConfig::new(Duration::from_secs(10))
        })
        .expect("the ring provider supports the default TLS versions");
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            region: region.into(),
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

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// AssumeRole, signed with `base`'s credentials (asked again for every attempt).
    pub async fn assume_role(
        &self,
        base: &dyn CredentialsProvider,
        input: &AssumeRoleInput,
    ) -> Result<StsCredentials, StsError> {
        let body = form_encode(&assume_role_form(input));
        crate::http::retry(&self.retry, Replay::Replayable, "AssumeRole", |_| {
            let body = body.clone();
            async move {
                let creds = base.credentials().await.map_err(StsError::Credentials)?;
                self.attempt("AssumeRole", body, Some(&creds), None).await
            }
        })
        .await
    }

    /// An unsigned call (AssumeRoleWithWebIdentity): `secret` (the token) is redacted from
    /// anything the service echoes.
    pub async fn call_unsigned(
        &self,
        action: &'static str,
        fields: &[(&str, String)],
        secret: &str,
    ) -> Result<StsCredentials, StsError> {
        let body = form_encode(fields);
        crate::http::retry(&self.retry, Replay::Replayable, action, |_| {
            let body = body.clone();
            async move { self.attempt(action, body, None, Some(secret)).await }
        })
        .await
    }

    /// GetCallerIdentity, signed with `base`'s credentials: who the credentials belong to.
    /// Retried like AssumeRole; the answer carries no secret.
    pub async fn get_caller_identity(
        &self,
        base: &dyn CredentialsProvider,
    ) -> Result<CallerIdentity, StsError> {
        let body = form_encode(&[
            ("Action", "GetCallerIdentity".to_string()),
            ("Version", STS_VERSION.to_string()),
        ]);
        crate::http::retry(&self.retry, Replay::Replayable, "GetCallerIdentity", |_| {
            let body = body.clone();
            async move {
                let creds = base.credentials().await.map_err(StsError::Credentials)?;
                self.attempt_with(
                    "GetCallerIdentity",
                    body,
                    Some(&creds),
                    None,
                    parse_caller_identity,
                )
                .await
            }
        })
        .await
    }

    async fn attempt(
        &self,
        action: &'static str,
        body: String,
        creds: Option<&Credentials>,
        secret: Option<&str>,
    ) -> Result<StsCredentials, StsError> {
        self.attempt_with(action, body, creds, secret, parse_credentials_response)
            .await
    }

    async fn attempt_with<T>(
        &self,
        action: &'static str,
        body: String,
        creds: Option<&Credentials>,
        secret: Option<&str>,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, StsError> {
        let invalid = |status: u16, reason: String| StsError::InvalidResponse {
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
        if let Some(c) = creds {
            sign(&uri, &mut headers, body.as_bytes(), c, &self.region);
        }
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("ossrelay/", env!("CARGO_PKG_VERSION"))),
        );
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(ReqBody::full(Bytes::from(body)))
            .map_err(|e| invalid(0, e.to_string()))?;
        *req.headers_mut() = headers;
        let timeouts = Timeouts {
            stall: self.timeout,
            attempt: Some(self.timeout),
        };
        let meter = Metered {
            service: "sts",
            operation: action,
        };
        let (status, _, bytes) = self
            .transport
            .fetch(req, timeouts, MAX_BODY, Some(meter))
            .await
            .map_err(|e| StsError::Network {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
                class: e.class(),
            })?;
        tracing::debug!(action, endpoint = %self.endpoint, status = status.as_u16(), "STS response");
        let redact = |s: String| match secret {
            Some(t) if t.len() >= 8 => s.replace(t, "<redacted>"),
            _ => s,
        };
        if status.is_success() {
            return parse(&bytes).map_err(|r| invalid(status.as_u16(), r));
        }
        match parse_error_response(&bytes) {
            Some((code, message, request_id)) => Err(StsError::Service {
                status: status.as_u16(),
                code,
                message: redact(message),
                request_id: if request_id.is_empty() {
                    "-".into()
                } else {
                    request_id
                },
            }),
            None => Err(invalid(
                status.as_u16(),
                redact(format!(
                    "not an STS error document: {}",
                    crate::store::wire::one_line(&String::from_utf8_lossy(&bytes), 200)
                )),
            )),
        }
    }
}

/// Signs an STS request with SigV4 (service `sts`), at send time.
fn sign(uri: &Uri, headers: &mut HeaderMap, body: &[u8], c: &Credentials, region: &str) {
    use crate::aws::sigv4::{sha256_hex, sign_headers, SigningParams};
    sign_headers(
        &Method::POST,
        uri,
        headers,
        &sha256_hex(body),
        &SigningParams {
            access_key_id: &c.access_key_id,
            secret_access_key: &c.access_key_secret,
            session_token: c.security_token.as_deref(),
            region,
            service: "sts",
            time: SystemTime::now(),
        },
    );
}

/// Assumes a role with AssumeRole on every call; wrap it in [`RefreshingProvider`]
/// ([`AssumeRoleProvider::cached`]) so the role is assumed again only near expiry.
pub struct AssumeRoleProvider {
    base: Arc<dyn CredentialsProvider>,
    input: AssumeRoleInput,
    client: StsClient,
}

impl fmt::Debug for AssumeRoleProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleProvider")
            .field("base", &self.base.name())
            .field("input", &self.input)
            .field("client", &self.client)
            .finish()
    }
}

impl AssumeRoleProvider {
    pub fn new(
        base: Arc<dyn CredentialsProvider>,
        input: AssumeRoleInput,
        client: StsClient,
    ) -> Self {
        Self {
            base,
            input,
            client,
        }
    }

    pub fn input(&self) -> &AssumeRoleInput {
        &self.input
    }

    pub fn client(&self) -> &StsClient {
        &self.client
    }

    /// Cached and refreshed before expiry (see [`crate::credentials::cache`]).
    pub fn cached(self) -> RefreshingProvider<Self> {
        RefreshingProvider::new(self)
    }
}

#[async_trait]
impl CredentialsProvider for AssumeRoleProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let out = self
            .client
            .assume_role(self.base.as_ref(), &self.input)
            .await
            .map_err(|e| {
                e.into_credentials_error(
                    StsCall::AssumeRole {
                        role_arn: &self.input.role_arn,
                    },
                    self.client.region(),
                )
            })?;
        tracing::info!(role_arn = %self.input.role_arn, assumed = ?out.assumed_role_arn, access_key_id = %out.credentials.access_key_id, expiration = ?out.credentials.expiration, "assumed AWS role");
        Ok(out.credentials)
    }

    fn name(&self) -> String {
        format!("aws-assume-role:{}", self.input.role_arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>DevUser123</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/John</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:John</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764</SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn parses_assume_role_and_web_identity_answers() {
        let c = parse_credentials_response(OK.as_bytes()).unwrap();
        assert_eq!(c.credentials.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.credentials.security_token.as_deref(),
            Some("AQoDYXdzEPT//////////wEXAMPLEtc764")
        );
        assert_eq!(
            c.credentials.expiration,
            parse_expiration("2019-11-09T13:34:41Z")
        );
        assert_eq!(
            c.assumed_role_arn.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/demo/John")
        );
        let web = OK
            .replace("AssumeRoleResponse", "AssumeRoleWithWebIdentityResponse")
            .replace("AssumeRoleResult", "AssumeRoleWithWebIdentityResult")
            .replace("2019-11-09T13:34:41Z", "2019-11-09T13:34:41.123Z");
        let c = parse_credentials_response(web.as_bytes()).unwrap();
        assert_eq!(c.credentials.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert!(c.credentials.expiration.is_some());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("wJalr") && !dbg.contains("AQoD"), "{dbg}");
    }

    #[test]
    fn rejects_incomplete_answers() {
        let no_token = OK.replace(
            "<SessionToken>AQoDYXdzEPT//////////wEXAMPLEtc764</SessionToken>",
            "",
        );
        assert!(parse_credentials_response(no_token.as_bytes())
            .unwrap_err()
            .contains("SessionToken"));
        let bad_exp = OK.replace("2019-11-09T13:34:41Z", "soon");
        assert!(parse_credentials_response(bad_exp.as_bytes())
            .unwrap_err()
            .contains("Expiration"));
        assert!(parse_credentials_response(b"<html/>").is_err());
    }

    #[test]
    fn parses_error_documents() {
        let body = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>AccessDenied</Code>
  <Message>User: arn:aws:iam::1:user/x is not authorized to perform: sts:AssumeRole</Message></Error>
  <RequestId>abc-123</RequestId></ErrorResponse>"#;
        let (code, msg, rid) = parse_error_response(body.as_bytes()).unwrap();
        assert_eq!(code, "AccessDenied");
        assert!(msg.starts_with("User: arn:aws:iam::1:user/x"));
        assert_eq!(rid, "abc-123");
        assert!(parse_error_response(b"<other/>").is_none());
        assert!(parse_error_response(b"plain text").is_none());
    }

    #[test]
    fn error_mapping_names_role_and_next_step() {
        let svc = |status, code: &str| StsError::Service {
            status,
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
        };
        let ar = || StsCall::AssumeRole {
            role_arn: "arn:aws:iam::1:role/r",
        };
        let web = || StsCall::WebIdentity {
            role_arn: "arn:aws:iam::1:role/w",
            token_file: "/t/token",
        };
        let cases: Vec<(StsError, StsCall, &str)> = vec![
            (svc(403, "AccessDenied"), ar(), "trust policy"),
            (
                svc(400, "InvalidIdentityToken"),
                web(),
                "/t/token was rejected",
            ),
            (svc(400, "ExpiredTokenException"), web(), "has expired"),
            (svc(400, "ExpiredToken"), ar(), "AWS_SESSION_TOKEN"),
            (
                svc(403, "RegionDisabledException"),
                ar(),
                "not activated in region eu-south-2",
            ),
        ];
        for (e, call, want) in cases {
            let msg = e.into_credentials_error(call, "eu-south-2");
            assert!(matches!(msg, CredentialsError::Invalid { .. }), "{msg}");
            let msg = msg.to_string();
            assert!(msg.contains(want), "{msg}");
            assert!(msg.contains("arn:aws:iam::1:role/"), "{msg}");
        }
        for code in ["Throttling", "IDPCommunicationError"] {
            let e = svc(400, code).into_credentials_error(ar(), "us-east-1");
            assert!(matches!(e, CredentialsError::Refresh { .. }), "{e}");
        }
        assert_eq!(svc(503, "Whatever").class(), ErrorClass::Transient);
        assert_eq!(svc(400, "Throttling").class(), ErrorClass::Throttled);
        assert_eq!(svc(403, "AccessDenied").class(), ErrorClass::Auth);
    }

    #[test]
    fn parses_caller_identity() {
        let body = br#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::123456789012:user/Alice</Arn><UserId>AIDA1</UserId><Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        let id = parse_caller_identity(body).unwrap();
        assert_eq!(id.account, "123456789012");
        assert_eq!(id.arn, "arn:aws:iam::123456789012:user/Alice");
        assert_eq!(id.user_id, "AIDA1");
        assert!(parse_caller_identity(b"<GetCallerIdentityResponse/>").is_err());
        assert!(parse_caller_identity(OK.as_bytes()).is_err());
    }

    #[test]
    fn endpoint_selection() {
        let none = EnvLookup::from_map(Vec::<(String, String)>::new());
        assert_eq!(
            sts_endpoint(None, "eu-west-1", &none),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint(None, "cn-north-1", &none),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        let env = EnvLookup::from_map([
            (ENV_ENDPOINT_URL, "http://127.0.0.1:1/"),
            (ENV_ENDPOINT_URL_STS, "sts.internal:8443"),
        ]);
        assert_eq!(sts_endpoint(None, "x", &env), "https://sts.internal:8443");
        assert_eq!(
            sts_endpoint(Some("http://sim:9000/"), "x", &env),
            "http://sim:9000"
        );
        let env = EnvLookup::from_map([(ENV_ENDPOINT_URL, "http://127.0.0.1:1/")]);
        assert_eq!(sts_endpoint(None, "x", &env), "http://127.0.0.1:1");
        let env = EnvLookup::from_map([
            (ENV_ENDPOINT_URL, "http://127.0.0.1:1/"),
            (ENV_IGNORE_CONFIGURED_ENDPOINT_URLS, "true"),
        ]);
        assert_eq!(
            sts_endpoint(None, "us-east-1", &env),
            "https://sts.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn form_and_session_name() {
        let i = AssumeRoleInput {
            role_arn: "arn:aws:iam::123456789012:role/a b".into(),
            session_name: "relay".into(),
            external_id: Some("x/y=z".into()),
            duration_seconds: Some(900),
        };
        assert_eq!(
            form_encode(&assume_role_form(&i)),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fa%20b&RoleSessionName=relay&ExternalId=x%2Fy%3Dz&DurationSeconds=900"
        );
        assert!(session_name(None).unwrap().starts_with("ossrelay-"));
        assert_eq!(
            session_name(Some("a+b=c,d.e@f_g-h")).unwrap(),
            "a+b=c,d.e@f_g-h"
        );
        assert!(session_name(Some("x")).is_err());
        assert!(session_name(Some("has space")).is_err());
    }
}
