//! Credential providers: where an AccessKey comes from, and keeping temporary ones fresh.
//!
//! Signers ask a [`CredentialsProvider`] for credentials at send time, so a provider that
//! refreshes (STS, instance RAM role) keeps hours-long transfers signed with valid keys.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;

/// An AccessKey pair, plus a security token and expiry for temporary (STS) credentials.
///
/// `Debug` never prints the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub security_token: Option<String>,
    pub expiration: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .finish()
    }
}

impl Credentials {
    /// Long-term credentials that never expire.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key_id: id.into(),
            access_key_secret: secret.into(),
            security_token: None,
            expiration: None,
        }
    }
}

/// Why credentials could not be had. Messages never contain secrets.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    #[error("no credentials found: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure a profile with `aliyun configure` (tried: {tried})")]
    NotFound { tried: String },
    #[error("profile {profile:?} not found in {path}")]
    UnknownProfile { profile: String, path: String },
    #[error("cannot read credentials from {source_name}: {reason}")]
    Invalid { source_name: String, reason: String },
    #[error("credential refresh via {provider} failed: {reason}")]
    Refresh { provider: String, reason: String },
}

/// A source of credentials, asked before every signature.
#[async_trait]
pub trait CredentialsProvider: Send + Sync + 'static {
    /// Valid credentials now; refreshes them first if they are close to expiry.
    async fn credentials(&self) -> Result<Credentials, CredentialsError>;

    /// Short name for logs and metrics (`env`, `profile:NAME`, `static`, ...).
    fn name(&self) -> String;
}

/// Fixed credentials (tests, the in-process demo).
#[derive(Debug, Clone)]
pub struct StaticProvider(pub Credentials);

#[async_trait]
impl CredentialsProvider for StaticProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.0.clone())
    }

    fn name(&self) -> String {
        "static".into()
    }
}
