//! EC2 instance role credentials from the instance metadata service (IMDSv2).
//!
//! Flow: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 21600` → a session
//! token, kept until shortly before its TTL ends; then
//! `GET /latest/meta-data/iam/security-credentials/` (the role name, asked every time since an
//! instance profile can be swapped) and `…/<role>` (the credentials JSON), both with
//! `X-aws-ec2-metadata-token`. A 401 means the token expired or was revoked: a new one is
//! fetched and the read repeated once.
//!
//! Guarantees callers can rely on:
//! * Endpoint `http://169.254.169.254` (or `http://[fd00:ec2::254]` with
//!   `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6`), overridden by
//!   `AWS_EC2_METADATA_SERVICE_ENDPOINT`; never through a proxy (the service answers the
//!   instance itself only; through a proxy it would hand out the proxy host's role).
//! * Timeouts from `AWS_METADATA_SERVICE_TIMEOUT` (default 1 s, connect and whole attempt) and
//!   attempts from `AWS_METADATA_SERVICE_NUM_ATTEMPTS` (default 1), through the transport's
//!   retry rule, so the chain does not stall off EC2.
//! * IMDSv1 (no token) is used only when the token call is refused (403/404/405) or times out
//!   after connecting (the PUT answer's hop limit of 1 drops it inside containers), and never
//!   when `AWS_EC2_METADATA_V1_DISABLED=true`. An unreachable service fails at once.
//! * The answer is accepted only with `Code == "Success"`, the three secrets and a parseable
//!   `Expiration`; tokens and secrets never reach logs, errors or `Debug`.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
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

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
pub const DEFAULT_ENDPOINT_IPV6: &str = "http://[fd00:ec2::254]";
/// `true` skips the instance metadata service.
pub const ENV_EC2_METADATA_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";
/// Overrides the endpoint (tests, simulators).
pub const ENV_EC2_METADATA_SERVICE_ENDPOINT: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// `IPv6` selects [`DEFAULT_ENDPOINT_IPV6`].
pub const ENV_EC2_METADATA_SERVICE_ENDPOINT_MODE: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
/// `true` forbids the tokenless IMDSv1 fallback.
pub const ENV_EC2_METADATA_V1_DISABLED: &str = "AWS_EC2_METADATA_V1_DISABLED";
/// Seconds per attempt (default 1).
pub const ENV_METADATA_SERVICE_TIMEOUT: &str = "AWS_METADATA_SERVICE_TIMEOUT";
/// Attempts per request (default 1).
pub const ENV_METADATA_SERVICE_NUM_ATTEMPTS: &str = "AWS_METADATA_SERVICE_NUM_ATTEMPTS";
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Requested token lifetime: 6 h, the maximum and the SDKs' default.
pub const TOKEN_TTL: Duration = Duration::from_secs(21600);

const TOKEN_PATH: &str = "/latest/api/token";
const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const MAX_BODY: usize = 64 << 10;
/// A token is replaced this long before its TTL ends, so it never expires mid-request.
const TOKEN_MARGIN: Duration = Duration::from_secs(120);

/// Fetches the instance role's credentials on every call; wrap it in [`RefreshingProvider`]
/// ([`ImdsProvider::cached`]).
pub struct ImdsProvider {
    endpoint: String,
    v1_disabled: bool,
    timeout: Duration,
    retry: RetryPolicy,
    token_ttl: Duration,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    transport: Transport,
}

impl fmt::Debug for ImdsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsProvider")
            .field("endpoint", &self.endpoint)
            .field("v1_disabled", &self.v1_disabled)
            .field("timeout", &self.timeout)
            .field("attempts", &self.retry.max_attempts)
            .finish_non_exhaustive()
    }
}

/// One failed metadata request.
#[derive(Debug)]
enum Failure {
    Status(StatusCode),
    Net {
        reason: String,
        /// Nothing answered (connection refused, connect timeout): not on EC2.
        no_server: bool,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::Net { reason, .. } => f.write_str(reason),
        }
    }
}

impl Retryable for Failure {
    fn class(&self) -> ErrorClass {
        match self {
            Failure::Status(s) if *s == StatusCode::TOO_MANY_REQUESTS => ErrorClass::Throttled,
            Failure::Status(s) if s.is_server_error() => ErrorClass::Transient,
            Failure::Status(_) => ErrorClass::Client,
            Failure::Net { .. } => ErrorClass::Transient,
        }
    }
}

impl ImdsProvider {
    /// Settings from `env` (see the module doc).
    pub fn new(env: &EnvLookup) -> Self {
        let endpoint = env
            .get(ENV_EC2_METADATA_SERVICE_ENDPOINT)
            .unwrap_or_else(|| {
                match env.get(ENV_EC2_METADATA_SERVICE_ENDPOINT_MODE) {
                    Some(m) if m.trim().eq_ignore_ascii_case("ipv6") => DEFAULT_ENDPOINT_IPV6,
                    _ => DEFAULT_ENDPOINT,
                }
                .to_string()
            });
        let timeout = env
            .get(ENV_METADATA_SERVICE_TIMEOUT)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(1), |s| {
                Duration::from_secs_f64(s.min(300.0))
            });
        let attempts = env
            .get(ENV_METADATA_SERVICE_NUM_ATTEMPTS)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(1)
            .clamp(1, 10);
        let transport = Transport::new(&TransportConfig {
            proxy: ProxyConfig::none(),
            ..TransportConfig::new(timeout)
        })
        .expect("the ring provider supports the default TLS versions");
        Self {
            endpoint: endpoint.trim().trim_end_matches('/').to_string(),
            v1_disabled: env.flag(ENV_EC2_METADATA_V1_DISABLED),
            timeout,
            retry: RetryPolicy {
                max_attempts: attempts,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(1),
            },
            token_ttl: TOKEN_TTL,
            token: tokio::sync::Mutex::new(None),
            transport,
        }
    }

    /// Whether `AWS_EC2_METADATA_DISABLED=true`.
    pub fn disabled(env: &EnvLookup) -> bool {
        env.flag(ENV_EC2_METADATA_DISABLED)
    }

    /// Requests tokens of this lifetime (tests use short ones to see them renewed).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Cached and refreshed before expiry.
    pub fn cached(self) -> RefreshingProvider<Self> {
        RefreshingProvider::new(self)
    }

    fn err(&self, reason: String) -> CredentialsError {
        CredentialsError::Refresh {
            provider: format!("EC2 instance metadata ({})", self.endpoint),
            reason,
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        header: Option<(&'static str, String)>,
    ) -> Result<Bytes, Failure> {
        let op = if method == Method::PUT {
            "imds-token"
        } else {
            "imds-get"
        };
        crate::http::retry(&self.retry, Replay::Replayable, op, |_| {
            let (method, header) = (method.clone(), header.clone());
            async move {
                let mut b = Request::builder()
                    .method(method)
                    .uri(format!("{}{path}", self.endpoint));
                if let Some((k, v)) = header {
                    b = b.header(k, v);
                }
                let req = b.body(ReqBody::Empty).map_err(|e| Failure::Net {
                    reason: format!("bad request: {e}"),
                    no_server: true,
                })?;
                let t = Timeouts {
                    stall: self.timeout,
                    attempt: Some(self.timeout),
                };
                let meter = Metered {
                    service: "imds",
                    operation: op,
                };
                match self.transport.fetch(req, t, MAX_BODY, Some(meter)).await {
                    Ok((StatusCode::OK, _, body)) => Ok(body),
                    Ok((status, _, _)) => Err(Failure::Status(status)),
                    Err(e) => Err(Failure::Net {
                        no_server: e.no_server(),
                        reason: match e.timed_out() {
                            Some(t) => format!("no answer within {t:?}"),
                            None => e.to_string(),
                        },
                    }),
                }
            }
        })
        .await
    }

    /// The session token (cached), `None` for IMDSv1; `fresh` discards the cached one.
    async fn token(&self, fresh: bool) -> Result<Option<String>, CredentialsError> {
        let mut cached = self.token.lock().await;
        if fresh {
            *cached = None;
        }
        if let Some((t, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(Some(t.clone()));
            }
        }
        let ttl = (TOKEN_TTL_HEADER, self.token_ttl.as_secs().to_string());
        let why = match self.request(Method::PUT, TOKEN_PATH, Some(ttl)).await {
            Ok(body) => {
                let t = String::from_utf8_lossy(&body).trim().to_string();
                if !t.is_empty() {
                    let keep = self.token_ttl.saturating_sub(TOKEN_MARGIN.min(self.token_ttl / 4));
                    *cached = Some((t.clone(), Instant::now() + keep));
                    return Ok(Some(t));
                }
                "the token answer was empty".to_string()
            }
            Err(Failure::Status(StatusCode::BAD_REQUEST)) => {
                return Err(self.err("the token request was rejected (HTTP 400)".into()))
            }
            Err(Failure::Net {
                reason,
                no_server: true,
            }) => {
                return Err(self.err(format!(
                    "the metadata service is unreachable ({reason}); is this an EC2 instance? Set {ENV_EC2_METADATA_DISABLED}=true to skip it"
                )))
            }
            Err(f) => format!("the token request failed ({f})"),
        };
        if self.v1_disabled {
            return Err(self.err(format!(
                "{why}, and {ENV_EC2_METADATA_V1_DISABLED}=true forbids the IMDSv1 fallback"
            )));
        }
        tracing::debug!(endpoint = %self.endpoint, reason = %why, "IMDSv2 token unavailable; using IMDSv1");
        Ok(None)
    }

    /// A GET with `token` (`None`: IMDSv1); on 401 a new token is fetched (and kept in
    /// `token` for the next read) and the GET repeated once. `what` names the read in errors.
    async fn get(
        &self,
        path: &str,
        what: &str,
        token: &mut Option<String>,
    ) -> Result<Bytes, CredentialsError> {
        let mut renewed = false;
        loop {
            let header = token.clone().map(|t| (TOKEN_HEADER, t));
            match self.request(Method::GET, path, header).await {
                Ok(body) => return Ok(body),
                Err(Failure::Status(StatusCode::UNAUTHORIZED)) if !renewed => {
                    tracing::debug!(endpoint = %self.endpoint, "IMDS answered 401; fetching a new token");
                    renewed = true;
                    *token = self.token(true).await?;
                }
                Err(Failure::Status(StatusCode::NOT_FOUND)) => {
                    return Err(self.err(format!(
                        "{what}: no IAM role is attached to this instance (HTTP 404); attach an instance profile with the role"
                    )))
                }
                Err(f) => return Err(self.err(format!("{what} failed: {f}"))),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataCredentials {
    #[serde(default)]
    code: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    secret_access_key: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    expiration: String,
}

#[async_trait]
impl CredentialsProvider for ImdsProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        // One token decision per refresh: both reads use it (or both go without, IMDSv1).
        let mut token = self.token(false).await?;
        let list = self
            .get(CREDENTIALS_PATH, "role discovery", &mut token)
            .await?;
        let role = String::from_utf8_lossy(&list)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if role.is_empty() {
            return Err(self.err(
                "no IAM role is attached to this instance; attach an instance profile with the role"
                    .into(),
            ));
        }
        let body = self
            .get(
                &format!("{CREDENTIALS_PATH}{role}"),
                &format!("credentials of role {role:?}"),
                &mut token,
            )
            .await?;
        let m: MetadataCredentials = serde_json::from_slice(&body).map_err(|e| {
            self.err(format!(
                "the credentials answer is not the expected JSON (line {} column {})",
                e.line(),
                e.column()
            ))
        })?;
        if m.code != "Success" {
            return Err(self.err(format!(
                "the credentials answer has Code {:?}, not \"Success\"",
                crate::store::wire::one_line(&m.code, 100)
            )));
        }
        if m.access_key_id.is_empty() || m.secret_access_key.is_empty() || m.token.is_empty() {
            return Err(self.err("the answer lacks AccessKeyId, SecretAccessKey or Token".into()));
        }
        let expiration = parse_expiration(&m.expiration)
            .ok_or_else(|| self.err(format!("cannot parse Expiration {:?}", m.expiration)))?;
        tracing::info!(role = %role, access_key_id = %m.access_key_id, expiration = %m.expiration, "EC2 instance role credentials fetched");
        Ok(Credentials {
            access_key_id: m.access_key_id,
            access_key_secret: m.secret_access_key,
            security_token: Some(m.token),
            expiration: Some(expiration),
        })
    }

    fn name(&self) -> String {
        "aws-imds".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_env() {
        let none = EnvLookup::from_map(Vec::<(String, String)>::new());
        let p = ImdsProvider::new(&none);
        assert_eq!(p.endpoint(), DEFAULT_ENDPOINT);
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!(p.retry.max_attempts, 1);
        assert!(!p.v1_disabled);
        assert!(!ImdsProvider::disabled(&none));
        let env = EnvLookup::from_map([
            (ENV_EC2_METADATA_SERVICE_ENDPOINT_MODE, "IPv6"),
            (ENV_METADATA_SERVICE_TIMEOUT, "2.5"),
            (ENV_METADATA_SERVICE_NUM_ATTEMPTS, "3"),
            (ENV_EC2_METADATA_V1_DISABLED, "true"),
            (ENV_EC2_METADATA_DISABLED, "TRUE"),
        ]);
        let p = ImdsProvider::new(&env);
        assert_eq!(p.endpoint(), DEFAULT_ENDPOINT_IPV6);
        assert_eq!(p.timeout, Duration::from_millis(2500));
        assert_eq!(p.retry.max_attempts, 3);
        assert!(p.v1_disabled);
        assert!(ImdsProvider::disabled(&env));
        let env = EnvLookup::from_map([
            (ENV_EC2_METADATA_SERVICE_ENDPOINT, "http://127.0.0.1:1234/"),
            (ENV_EC2_METADATA_SERVICE_ENDPOINT_MODE, "IPv6"),
        ]);
        assert_eq!(ImdsProvider::new(&env).endpoint(), "http://127.0.0.1:1234");
    }

    #[tokio::test]
    async fn unreachable_service_fails_fast() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let env =
            EnvLookup::from_map([(ENV_EC2_METADATA_SERVICE_ENDPOINT, format!("http://{addr}"))]);
        let started = Instant::now();
        let err = ImdsProvider::new(&env)
            .credentials()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unreachable"), "{err}");
        assert!(err.contains(ENV_EC2_METADATA_DISABLED), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
