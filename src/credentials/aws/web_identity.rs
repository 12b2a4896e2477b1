//! Web identity: temporary credentials for an IAM role from an OIDC token in a file
//! (STS AssumeRoleWithWebIdentity), what EKS (IRSA), GitHub Actions and GKE workloads use.
//!
//! Guarantees callers can rely on:
//! * From the environment when `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` are set
//!   (`AWS_ROLE_SESSION_NAME` optional), or from a profile's `web_identity_token_file` +
//!   `role_arn`. The token file without a role ARN is an error, not a silent fall-through to
//!   the node's instance role.
//! * The token file is re-read on every call: the platform rotates it (EKS about hourly), and a
//!   token read once would be expired by the time the credentials need refreshing.
//! * The call is unsigned (the token is the proof); the token travels in the form body only and
//!   never reaches a log line, an error or `Debug`.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use super::files::WebIdentitySpec;
use super::sts::{session_name, StsCall, StsClient, STS_VERSION};
use crate::credentials::cache::RefreshingProvider;
use crate::credentials::{Credentials, CredentialsError, CredentialsProvider, EnvLookup};

/// Path of the OIDC token file.
pub const ENV_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
/// The role to assume with it.
pub const ENV_ROLE_ARN: &str = "AWS_ROLE_ARN";
/// Optional RoleSessionName.
pub const ENV_ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";

/// The web identity settings of the environment: `Ok(None)` when the token file variable is
/// not set; an error when it is set without `AWS_ROLE_ARN`.
pub fn spec_from_env(env: &EnvLookup) -> Result<Option<WebIdentitySpec>, CredentialsError> {
    let Some(file) = env.get(ENV_WEB_IDENTITY_TOKEN_FILE) else {
        return Ok(None);
    };
    let role_arn = env.get(ENV_ROLE_ARN).ok_or_else(|| CredentialsError::Invalid {
        source_name: "environment".into(),
        reason: format!(
            "{ENV_WEB_IDENTITY_TOKEN_FILE} is set but {ENV_ROLE_ARN} is not; set the role to assume with the token, or unset {ENV_WEB_IDENTITY_TOKEN_FILE}"
        ),
    })?;
    Ok(Some(WebIdentitySpec {
        role_arn: role_arn.trim().to_string(),
        token_file: PathBuf::from(file.trim()),
        session_name: env.get(ENV_ROLE_SESSION_NAME),
        duration_seconds: None,
        region: None,
        origin: "environment".into(),
    }))
}

/// Calls AssumeRoleWithWebIdentity on every call; wrap it in [`RefreshingProvider`]
/// ([`WebIdentityProvider::cached`]).
pub struct WebIdentityProvider {
    spec: WebIdentitySpec,
    session_name: String,
    client: StsClient,
}

impl fmt::Debug for WebIdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebIdentityProvider")
            .field("spec", &self.spec)
            .field("session_name", &self.session_name)
            .field("client", &self.client)
            .finish()
    }
}

impl WebIdentityProvider {
    /// Validates the session name (default `ossrelay-<ms>`).
    pub fn new(spec: WebIdentitySpec, client: StsClient) -> Result<Self, CredentialsError> {
        let session_name = session_name(spec.session_name.as_deref()).map_err(|reason| {
            CredentialsError::Invalid {
                source_name: format!("web identity ({})", spec.origin),
                reason,
            }
        })?;
        Ok(Self {
            spec,
            session_name,
            client,
        })
    }

    pub fn spec(&self) -> &WebIdentitySpec {
        &self.spec
    }

    /// Cached and refreshed before expiry; every refresh re-reads the token file.
    pub fn cached(self) -> RefreshingProvider<Self> {
        RefreshingProvider::new(self)
    }

    fn read_token(&self) -> Result<String, CredentialsError> {
        let path = &self.spec.token_file;
        let token = std::fs::read_to_string(path).map_err(|e| CredentialsError::Invalid {
            source_name: format!("web identity token file {}", path.display()),
            reason: format!(
                "cannot read it ({e}); check {ENV_WEB_IDENTITY_TOKEN_FILE} or the profile's web_identity_token_file"
            ),
        })?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(CredentialsError::Invalid {
                source_name: format!("web identity token file {}", path.display()),
                reason: "the file is empty".into(),
            });
        }
        Ok(token)
    }
}

#[async_trait]
impl CredentialsProvider for WebIdentityProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let token = self.read_token()?;
        let mut fields = vec![
            ("Action", "AssumeRoleWithWebIdentity".to_string()),
            ("Version", STS_VERSION.to_string()),
            ("RoleArn", self.spec.role_arn.clone()),
            ("RoleSessionName", self.session_name.clone()),
            ("WebIdentityToken", token.clone()),
        ];
        if let Some(d) = self.spec.duration_seconds {
            fields.push(("DurationSeconds", d.to_string()));
        }
        let token_file = self.spec.token_file.display().to_string();
        let out = self
            .client
            .call_unsigned("AssumeRoleWithWebIdentity", &fields, &token)
            .await
            .map_err(|e| {
                e.into_credentials_error(
                    StsCall::WebIdentity {
                        role_arn: &self.spec.role_arn,
                        token_file: &token_file,
                    },
                    self.client.region(),
                )
            })?;
        tracing::info!(role_arn = %self.spec.role_arn, origin = %self.spec.origin, assumed = ?out.assumed_role_arn, access_key_id = %out.credentials.access_key_id, expiration = ?out.credentials.expiration, "assumed AWS role with web identity");
        Ok(out.credentials)
    }

    fn name(&self) -> String {
        format!("aws-web-identity:{}", self.spec.role_arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_from_environment() {
        let none = EnvLookup::from_map(Vec::<(String, String)>::new());
        assert_eq!(spec_from_env(&none).unwrap(), None);
        // AWS_ROLE_ARN alone is not web identity.
        let env = EnvLookup::from_map([(ENV_ROLE_ARN, "arn:aws:iam::1:role/r")]);
        assert_eq!(spec_from_env(&env).unwrap(), None);
        let env = EnvLookup::from_map([(ENV_WEB_IDENTITY_TOKEN_FILE, "/t")]);
        let err = spec_from_env(&env).unwrap_err().to_string();
        assert!(err.contains("AWS_ROLE_ARN is not"), "{err}");
        let env = EnvLookup::from_map([
            (ENV_WEB_IDENTITY_TOKEN_FILE, "/var/run/token"),
            (ENV_ROLE_ARN, "arn:aws:iam::1:role/r"),
            (ENV_ROLE_SESSION_NAME, "pod-1"),
        ]);
        let s = spec_from_env(&env).unwrap().unwrap();
        assert_eq!(s.role_arn, "arn:aws:iam::1:role/r");
        assert_eq!(s.token_file, PathBuf::from("/var/run/token"));
        assert_eq!(s.session_name.as_deref(), Some("pod-1"));
    }

    #[tokio::test]
    async fn unreadable_or_empty_token_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WebIdentitySpec {
            role_arn: "arn:aws:iam::1:role/r".into(),
            token_file: dir.path().join("missing"),
            origin: "environment".into(),
            ..Default::default()
        };
        let client = StsClient::new("http://127.0.0.1:9", "us-east-1");
        let p = WebIdentityProvider::new(spec.clone(), client.clone()).unwrap();
        let err = p.credentials().await.unwrap_err().to_string();
        assert!(
            err.contains("missing") && err.contains("cannot read"),
            "{err}"
        );
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let p = WebIdentityProvider::new(
            WebIdentitySpec {
                token_file: dir.path().join("empty"),
                ..spec.clone()
            },
            client.clone(),
        )
        .unwrap();
        let err = p.credentials().await.unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let bad = WebIdentitySpec {
            session_name: Some("no spaces allowed".into()),
            ..spec
        };
        assert!(WebIdentityProvider::new(bad, client).is_err());
    }
}
