//! Credential providers: where an AccessKey comes from, and keeping temporary ones fresh.
//!
//! Signers ask a [`CredentialsProvider`] for credentials at send time, so a provider that
//! refreshes (STS, instance RAM role) keeps hours-long transfers signed with valid keys.
//!
//! Sources: [`env`](mod@env) (variables), [`oidc`] (RRSA: AssumeRoleWithOIDC with a Kubernetes
//! service-account token), [`profile`] (aliyun CLI `config.json`), [`ini`] (shared credentials
//! file), [`imds`] (ECS instance RAM role), [`sts`] (AssumeRole); [`cache`] keeps temporary
//! credentials fresh; [`chain`] puts them in the SDKs' order (the CLI calls [`chain::resolve`]).
//!
//! [`aws`] does the same for AWS by AWS's conventions (`~/.aws/*`, `AWS_*`, STS, IMDSv2),
//! reusing the trait, the cache and the INI parser; the CLI calls [`aws::resolve`].

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

pub mod aws;
pub mod cache;
pub mod chain;
pub mod env;
pub mod imds;
pub mod ini;
pub mod oidc;
pub mod profile;
pub mod sts;

pub use chain::{default_chain, from_profile, resolve};

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
    /// The AWS chain found no source; `tried` names each one and why it was skipped.
    #[error("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `aws configure` to write ~/.aws/credentials, set AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or attach an instance role on EC2 (tried: {tried})")]
    AwsNotFound { tried: String },
    #[error("profile {profile:?} not found in {path} (available: {available})")]
    UnknownProfile {
        profile: String,
        path: String,
        /// Comma-separated names that do exist, or `none`.
        available: String,
    },
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

/// Shows only the provider's name, so `Arc<dyn CredentialsProvider>` can sit in `Debug` types.
impl fmt::Debug for dyn CredentialsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialsProvider({})", self.name())
    }
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

/// Where providers read environment variables from.
///
/// Production code uses [`EnvLookup::process`]; tests pass a map so they never mutate the
/// process environment (which is shared by all test threads). Empty values count as unset.
#[derive(Clone)]
pub struct EnvLookup(Arc<LookupFn>);

type LookupFn = dyn Fn(&str) -> Option<String> + Send + Sync;

impl EnvLookup {
    /// The real process environment.
    pub fn process() -> Self {
        Self(Arc::new(|k| std::env::var(k).ok()))
    }

    /// A fixed set of variables (tests).
    pub fn from_map<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(Arc::new(move |k| map.get(k).cloned()))
    }

    /// Any lookup function.
    pub fn from_fn(f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The variable's value, or `None` when unset or empty.
    pub fn get(&self, key: &str) -> Option<String> {
        (self.0)(key).filter(|v| !v.is_empty())
    }

    /// Whether the variable is set to `true` (case-insensitive).
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The user's home directory (`HOME`, else `USERPROFILE`).
    pub fn home_dir(&self) -> Option<PathBuf> {
        self.get("HOME")
            .or_else(|| self.get("USERPROFILE"))
            .map(PathBuf::from)
    }
}

impl fmt::Debug for EnvLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvLookup")
    }
}

impl Default for EnvLookup {
    fn default() -> Self {
        Self::process()
    }
}

/// Parses an `Expiration` such as `2017-11-01T05:20:01Z` (RFC 3339, UTC).
pub(crate) fn parse_expiration(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(SystemTime::from)
}
