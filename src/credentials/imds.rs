//! ECS instance RAM role credentials from the instance metadata service.
//!
//! Flow: `PUT /latest/api/token` (IMDSv2 token) → role name from
//! `GET /latest/meta-data/ram/security-credentials/` (unless configured) → credentials JSON from
//! `GET /latest/meta-data/ram/security-credentials/<role>`, the token in
//! `X-aliyun-ecs-metadata-token`. If the token call gets an HTTP error answer, the v1 flow
//! (no token) is used unless `ALIBABA_CLOUD_IMDSV1_DISABLED=true`. If the metadata host cannot
//! be reached at all, the provider fails at once: a v1 request would not reach it either, and
//! the default chain must not stall on machines outside ECS.
//!
//! Never proxied: this client's transport is built with [`ProxyConfig::none`], so it connects
//! directly and ignores `HTTPS_PROXY` / `HTTP_PROXY`. The metadata service is a link-local
//! address answering only the instance itself; through a proxy the request would either fail
//! or, worse, fetch the *proxy host's* role credentials.
//!
//! One attempt per request (see [`crate::http`]): the service answers at once on an instance,
//! and the credentials cache retries a failed refresh on its own schedule.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde::Deserialize;

use super::cache::RefreshingProvider;
use super::{parse_expiration, Credentials, CredentialsError, CredentialsProvider, EnvLookup};
use crate::http::proxy::ProxyConfig;
use crate::http::{ReqBody, Timeouts, Transport, TransportConfig};

/// The metadata service address on every ECS instance.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://100.100.100.200";
/// Overrides the metadata endpoint (tests, proxies).
pub const ENV_IMDS_ENDPOINT: &str = "OSSRELAY_IMDS_ENDPOINT";
/// The instance RAM role name (skips discovery).
pub const ENV_ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
/// `true` removes the metadata provider from the default chain.
pub const ENV_ECS_METADATA_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";
/// `true` forbids the v1 (tokenless) fallback.
pub const ENV_IMDSV1_DISABLED: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";
/// Header carrying the requested token lifetime.
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// Header carrying the token on metadata reads.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";

const CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
const MAX_BODY: usize = 64 << 10;

/// Fetches instance RAM role credentials on every call; wrap it in [`RefreshingProvider`]
/// (see [`EcsRamRoleProvider::cached`]).
pub struct EcsRamRoleProvider {
    endpoint: String,
    role_name: Option<String>,
    discovered: tokio::sync::Mutex<Option<String>>,
    imdsv1_disabled: bool,
    token_ttl_seconds: u32,
    read_timeout: Duration,
    transport: Transport,
}

impl fmt::Debug for EcsRamRoleProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsRamRoleProvider")
            .field("endpoint", &self.endpoint)
            .field("role_name", &self.role_name)
            .field("imdsv1_disabled", &self.imdsv1_disabled)
            .finish_non_exhaustive()
    }
}

enum Failure {
    /// No connection or no answer in time.
    Unreachable(String),
    /// An answer, but not the expected one.
    Status(StatusCode),
}

impl EcsRamRoleProvider {
    /// `role_name` (else `ALIBABA_CLOUD_ECS_METADATA`, else discovered); endpoint from
    /// `OSSRELAY_IMDS_ENDPOINT` or the default; 1 s connect and read timeouts as in the SDKs.
    pub fn new(role_name: Option<String>, env: &EnvLookup) -> Self {
        let endpoint = env
            .get(ENV_IMDS_ENDPOINT)
            .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_string());
        let mut p = Self {
            endpoint: String::new(),
            role_name: role_name
                .filter(|r| !r.trim().is_empty())
                .or_else(|| env.get(ENV_ECS_METADATA)),
            discovered: tokio::sync::Mutex::new(None),
            imdsv1_disabled: env.flag(ENV_IMDSV1_DISABLED),
            token_ttl_seconds: 21600,
            read_timeout: Duration::from_secs(1),
            transport: build_transport(Duration::from_secs(1)),
        };
        p.endpoint = endpoint.trim().trim_end_matches('/').to_string();
        p
    }

    /// Uses another metadata endpoint (e.g. a local test double).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// Changes the connect and read timeouts (default 1 s each).
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.transport = build_transport(connect);
        self.read_timeout = read;
        self
    }

    /// Forbids (or allows) the v1 fallback.
    pub fn with_imdsv1_disabled(mut self, disabled: bool) -> Self {
        self.imdsv1_disabled = disabled;
        self
    }

    /// The metadata endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Wraps the provider in a cache that refreshes before expiry.
    pub fn cached(self) -> RefreshingProvider<Self> {
        RefreshingProvider::new(self)
    }

    fn err(&self, reason: String) -> CredentialsError {
        CredentialsError::Refresh {
            provider: format!("instance metadata ({})", self.endpoint),
            reason,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Bytes, Failure> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let req = b
            .body(ReqBody::Empty)
            .map_err(|e| Failure::Unreachable(format!("bad request: {e}")))?;
        let timeouts = Timeouts {
            stall: self.read_timeout,
            attempt: Some(self.read_timeout),
        };
        match self.transport.fetch(req, timeouts, MAX_BODY, None).await {
            Ok((StatusCode::OK, _, body)) => Ok(body),
            Ok((status, _, _)) => Err(Failure::Status(status)),
            Err(e) if e.timed_out().is_some() => Err(Failure::Unreachable(format!(
                "no answer within {:?}",
                self.read_timeout
            ))),
            Err(e) => Err(Failure::Unreachable(e.to_string())),
        }
    }

    /// `Some(token)`, or `None` to continue with v1.
    async fn token(&self) -> Result<Option<String>, CredentialsError> {
        let ttl = [(TOKEN_TTL_HEADER, self.token_ttl_seconds.to_string())];
        match self.send(Method::PUT, "/latest/api/token", &ttl).await {
            Ok(body) => {
                let token = String::from_utf8_lossy(&body).trim().to_string();
                if token.is_empty() {
                    return self.fallback("the token answer was empty".into());
                }
                Ok(Some(token))
            }
            Err(Failure::Status(s)) => self.fallback(format!("the token call answered HTTP {s}")),
            Err(Failure::Unreachable(e)) => Err(self.err(format!(
                "the metadata service is unreachable ({e}); is this an ECS instance?"
            ))),
        }
    }

    fn fallback(&self, why: String) -> Result<Option<String>, CredentialsError> {
        if self.imdsv1_disabled {
            Err(self.err(format!(
                "{why}, and {ENV_IMDSV1_DISABLED}=true forbids the v1 fallback"
            )))
        } else {
            tracing::debug!(endpoint = %self.endpoint, reason = %why, "IMDSv2 token unavailable; using metadata v1");
            Ok(None)
        }
    }

    async fn role(&self, headers: &[(&str, String)]) -> Result<String, CredentialsError> {
        if let Some(r) = &self.role_name {
            return Ok(r.clone());
        }
        let mut cached = self.discovered.lock().await;
        if let Some(r) = cached.as_ref() {
            return Ok(r.clone());
        }
        let body = self
            .send(Method::GET, CREDENTIALS_PATH, headers)
            .await
            .map_err(|f| match f {
                Failure::Status(StatusCode::NOT_FOUND) => {
                    self.err("no RAM role is attached to this instance".into())
                }
                Failure::Status(s) => self.err(format!("role discovery answered HTTP {s}")),
                Failure::Unreachable(e) => self.err(format!("role discovery failed: {e}")),
            })?;
        let text = String::from_utf8_lossy(&body);
        let role = text.lines().next().unwrap_or("").trim().to_string();
        if role.is_empty() {
            return Err(self.err("no RAM role is attached to this instance".into()));
        }
        *cached = Some(role.clone());
        Ok(role)
    }
}

/// A transport that never uses a proxy (see the module doc).
fn build_transport(connect_timeout: Duration) -> Transport {
    Transport::new(&TransportConfig {
        proxy: ProxyConfig::none(),
        ..TransportConfig::new(connect_timeout)
    })
    .expect("the ring provider supports the default TLS versions")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataCredentials {
    #[serde(default)]
    code: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: String,
    #[serde(default)]
    security_token: String,
    #[serde(default)]
    expiration: String,
}

#[async_trait]
impl CredentialsProvider for EcsRamRoleProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let token = self.token().await?;
        let headers: Vec<(&str, String)> = token.map(|t| (TOKEN_HEADER, t)).into_iter().collect();
        let role = self.role(&headers).await?;
        let body = self
            .send(Method::GET, &format!("{CREDENTIALS_PATH}{role}"), &headers)
            .await
            .map_err(|f| match f {
                Failure::Status(StatusCode::NOT_FOUND) => {
                    self.err(format!("role {role:?} is not attached to this instance"))
                }
                Failure::Status(s) => self.err(format!("credentials call answered HTTP {s}")),
                Failure::Unreachable(e) => self.err(format!("credentials call failed: {e}")),
            })?;
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
                m.code
            )));
        }
        if m.access_key_id.is_empty()
            || m.access_key_secret.is_empty()
            || m.security_token.is_empty()
        {
            return Err(
                self.err("the answer lacks AccessKeyId, AccessKeySecret or SecurityToken".into())
            );
        }
        let expiration = parse_expiration(&m.expiration)
            .ok_or_else(|| self.err(format!("cannot parse Expiration {:?}", m.expiration)))?;
        tracing::info!(role = %role, access_key_id = %m.access_key_id, expiration = %m.expiration, "instance RAM role credentials fetched");
        Ok(Credentials {
            access_key_id: m.access_key_id,
            access_key_secret: m.access_key_secret,
            security_token: Some(m.security_token),
            expiration: Some(expiration),
        })
    }

    fn name(&self) -> String {
        "imds".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_env() {
        let env = EnvLookup::from_map([
            (ENV_IMDS_ENDPOINT, "http://127.0.0.1:1234/"),
            (ENV_ECS_METADATA, "EnvRole"),
            (ENV_IMDSV1_DISABLED, "true"),
        ]);
        let p = EcsRamRoleProvider::new(None, &env);
        assert_eq!(p.endpoint(), "http://127.0.0.1:1234");
        assert_eq!(p.role_name.as_deref(), Some("EnvRole"));
        assert!(p.imdsv1_disabled);
        let p = EcsRamRoleProvider::new(Some("Explicit".into()), &env);
        assert_eq!(p.role_name.as_deref(), Some("Explicit"));

        let p = EcsRamRoleProvider::new(None, &EnvLookup::from_map(Vec::<(String, String)>::new()));
        assert_eq!(p.endpoint(), DEFAULT_IMDS_ENDPOINT);
        assert_eq!(p.role_name, None);
        assert!(!p.imdsv1_disabled);
        assert_eq!(p.name(), "imds");
    }

    #[tokio::test]
    async fn unreachable_host_fails_fast() {
        // A port nobody listens on: connection refused at once, and no v1 retry.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let p = EcsRamRoleProvider::new(None, &EnvLookup::from_map(Vec::<(String, String)>::new()))
            .with_endpoint(format!("http://{addr}"));
        let started = std::time::Instant::now();
        let err = p.credentials().await.unwrap_err().to_string();
        assert!(err.contains("unreachable"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
