//! RRSA / OIDC: temporary credentials for a RAM role from a Kubernetes service-account token
//! (STS AssumeRoleWithOIDC), the second step of the default chain.
//!
//! Guarantees callers can rely on:
//! * Used only when `ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN` and
//!   `ALIBABA_CLOUD_OIDC_TOKEN_FILE` are all set (what ACK's RRSA webhook injects into a pod).
//!   `ALIBABA_CLOUD_ROLE_ARN` alone is only the default for AssumeRole and is ignored here; one
//!   of the two OIDC variables without the others is an error naming the missing ones, because
//!   falling through to another identity (the node's instance role) would be worse.
//! * The token file is re-read for every AssumeRoleWithOIDC call: the kubelet rotates the
//!   projected token, and a token read once would expire after about an hour.
//! * The call is unsigned (no AccessKey exists yet; the token is the proof), and the token
//!   travels in the form body, never in a URL, a log line, an error or `Debug` output.
//! * Wrapped in [`RefreshingProvider`], credentials are renewed before they expire (see
//!   [`super::cache`]); session name and duration follow the AssumeRole defaults
//!   (`ALIBABA_CLOUD_ROLE_SESSION_NAME`, 3600 s) and the STS endpoint the same selection
//!   ([`super::sts::sts_endpoint`]: `ALIBABA_CLOUD_STS_ENDPOINT`, `ALIBABA_CLOUD_STS_REGION`,
//!   `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`).

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;

use super::cache::RefreshingProvider;
use super::sts::{
    duration, session_name, sts_endpoint, temporary_credentials, AssumeRoleSpec, ENV_ROLE_ARN,
};
use super::{Credentials, CredentialsError, CredentialsProvider, EnvLookup};
use crate::acs::rpc::RpcClient;
use crate::acs::sts::{AssumeRoleWithOidcInput, StsClient};

/// ARN of the RAM OIDC identity provider (`acs:ram::<account-id>:oidc-provider/<name>`).
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
/// Path of the file holding the OIDC token (the projected service-account token).
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";

/// Assumes a role with the OIDC token of a file on every call; wrap it with
/// [`OidcProvider::cached`] to reuse the credentials until near expiry.
pub struct OidcProvider {
    role_arn: String,
    provider_arn: String,
    token_file: PathBuf,
    session_name: String,
    duration_seconds: u64,
    client: StsClient,
}

impl fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProvider")
            .field("role_arn", &self.role_arn)
            .field("provider_arn", &self.provider_arn)
            .field("token_file", &self.token_file)
            .field("session_name", &self.session_name)
            .field("endpoint", &self.client.endpoint())
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// `Ok(None)` unless the OIDC variables are set; an error when they are half set or invalid.
    pub fn from_env(env: &EnvLookup) -> Result<Option<Self>, CredentialsError> {
        let role = env.get(ENV_ROLE_ARN);
        let provider = env.get(ENV_OIDC_PROVIDER_ARN);
        let file = env.get(ENV_OIDC_TOKEN_FILE);
        if provider.is_none() && file.is_none() {
            return Ok(None);
        }
        let invalid = |reason: String| CredentialsError::Invalid {
            source_name: "OIDC settings".into(),
            reason,
        };
        let (Some(role_arn), Some(provider_arn), Some(token_file)) = (role, provider, file) else {
            let missing: Vec<&str> = [
                (ENV_ROLE_ARN, env.get(ENV_ROLE_ARN).is_none()),
                (
                    ENV_OIDC_PROVIDER_ARN,
                    env.get(ENV_OIDC_PROVIDER_ARN).is_none(),
                ),
                (ENV_OIDC_TOKEN_FILE, env.get(ENV_OIDC_TOKEN_FILE).is_none()),
            ]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
            return Err(invalid(format!(
                "{} not set; set all of {ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN} and {ENV_OIDC_TOKEN_FILE}, or none",
                missing.join(" and ")
            )));
        };
        let role_arn = role_arn.trim().to_string();
        let provider_arn = provider_arn.trim().to_string();
        if !role_arn.starts_with("acs:ram::") || !role_arn.contains(":role/") {
            return Err(invalid(format!(
                "{ENV_ROLE_ARN} {role_arn:?} does not look like acs:ram::<account-id>:role/<name>"
            )));
        }
        if !provider_arn.starts_with("acs:ram::") || !provider_arn.contains(":oidc-provider/") {
            return Err(invalid(format!(
                "{ENV_OIDC_PROVIDER_ARN} {provider_arn:?} does not look like acs:ram::<account-id>:oidc-provider/<name>"
            )));
        }
        let spec = AssumeRoleSpec {
            role_arn: role_arn.clone(),
            ..AssumeRoleSpec::default()
        };
        Ok(Some(Self {
            role_arn,
            provider_arn,
            token_file: PathBuf::from(token_file.trim()),
            session_name: session_name(None, env).map_err(invalid)?,
            duration_seconds: duration(None).map_err(invalid)?,
            client: StsClient::new(sts_endpoint(&spec, env)),
        }))
    }

    /// Uses `client` (retry policy, timeouts) for the STS calls.
    pub fn with_client(mut self, client: RpcClient) -> Self {
        self.client = self.client.with_rpc(client);
        self
    }

    /// The role being assumed.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The STS endpoint URL in use.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// Wraps the provider in a cache that refreshes before expiry.
    pub fn cached(self) -> RefreshingProvider<Self> {
        RefreshingProvider::new(self)
    }

    fn read_token(&self) -> Result<String, CredentialsError> {
        let fail = |reason: String| CredentialsError::Invalid {
            source_name: format!("OIDC token file {}", self.token_file.display()),
            reason,
        };
        let text = std::fs::read_to_string(&self.token_file).map_err(|e| {
            fail(format!(
                "{e}; check {ENV_OIDC_TOKEN_FILE} and that the service-account token volume is mounted"
            ))
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(fail(format!(
                "the file is empty; check {ENV_OIDC_TOKEN_FILE} points at the projected service-account token"
            )));
        }
        Ok(token.to_string())
    }
}

#[async_trait]
impl CredentialsProvider for OidcProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let refresh_err = |reason: String| CredentialsError::Refresh {
            provider: format!("AssumeRoleWithOIDC {}", self.role_arn),
            reason,
        };
        let input = AssumeRoleWithOidcInput {
            role_arn: self.role_arn.clone(),
            oidc_provider_arn: self.provider_arn.clone(),
            oidc_token: self.read_token()?,
            role_session_name: self.session_name.clone(),
            duration_seconds: self.duration_seconds,
            policy: None,
        };
        let resp = self
            .client
            .assume_role_with_oidc(&input)
            .await
            .map_err(|e| {
                refresh_err(format!(
                    "{e}; check {ENV_OIDC_PROVIDER_ARN}, {ENV_ROLE_ARN} and that the role's trust policy names the OIDC provider"
                ))
            })?;
        let c = resp.credentials;
        tracing::info!(role_arn = %self.role_arn, access_key_id = %c.access_key_id, expiration = %c.expiration, "assumed role with OIDC token");
        temporary_credentials(c, refresh_err)
    }

    fn name(&self) -> String {
        "oidc".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "acs:ram::1234567890123456:role/app";
    const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa";

    fn env(vars: &[(&str, &str)]) -> EnvLookup {
        EnvLookup::from_map(vars.iter().copied())
    }

    fn err(vars: &[(&str, &str)]) -> String {
        OidcProvider::from_env(&env(vars))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unset_or_role_arn_alone_is_not_oidc() {
        assert!(OidcProvider::from_env(&env(&[])).unwrap().is_none());
        // ALIBABA_CLOUD_ROLE_ARN is also AssumeRole's default: alone it does not mean OIDC.
        assert!(OidcProvider::from_env(&env(&[(ENV_ROLE_ARN, ROLE)]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn half_set_names_what_is_missing() {
        let e = err(&[(ENV_OIDC_TOKEN_FILE, "/var/run/token")]);
        assert!(
            e.contains("ALIBABA_CLOUD_ROLE_ARN and ALIBABA_CLOUD_OIDC_PROVIDER_ARN not set"),
            "{e}"
        );
        let e = err(&[(ENV_ROLE_ARN, ROLE), (ENV_OIDC_PROVIDER_ARN, PROVIDER)]);
        assert!(e.contains("ALIBABA_CLOUD_OIDC_TOKEN_FILE not set"), "{e}");
        let e = err(&[
            (ENV_ROLE_ARN, ROLE),
            (ENV_OIDC_PROVIDER_ARN, "acs:ram::1:role/not-a-provider"),
            (ENV_OIDC_TOKEN_FILE, "/t"),
        ]);
        assert!(e.contains("oidc-provider/<name>"), "{e}");
    }

    #[test]
    fn endpoint_and_defaults_follow_assume_role() {
        let p = OidcProvider::from_env(&env(&[
            (ENV_ROLE_ARN, ROLE),
            (ENV_OIDC_PROVIDER_ARN, PROVIDER),
            (ENV_OIDC_TOKEN_FILE, "/t"),
            ("ALIBABA_CLOUD_STS_REGION", "cn-shanghai"),
            ("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "true"),
            ("ALIBABA_CLOUD_ROLE_SESSION_NAME", "pod-a"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.endpoint(), "https://sts-vpc.cn-shanghai.aliyuncs.com");
        assert_eq!(p.session_name, "pod-a");
        assert_eq!(p.duration_seconds, 3600);
        assert_eq!(p.name(), "oidc");
    }

    #[tokio::test]
    async fn unreadable_or_empty_token_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let path_s = path.to_str().unwrap().to_string();
        let p = OidcProvider::from_env(&env(&[
            (ENV_ROLE_ARN, ROLE),
            (ENV_OIDC_PROVIDER_ARN, PROVIDER),
            (ENV_OIDC_TOKEN_FILE, path_s.as_str()),
            // Never reached: the token is read first.
            ("ALIBABA_CLOUD_STS_ENDPOINT", "http://127.0.0.1:9"),
        ]))
        .unwrap()
        .unwrap();
        let e = p.credentials().await.unwrap_err().to_string();
        assert!(e.contains(&path_s) && e.contains("token volume"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        let e = p.credentials().await.unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn request_carries_the_token_in_the_form_only() {
        let input = AssumeRoleWithOidcInput {
            role_arn: ROLE.into(),
            oidc_provider_arn: PROVIDER.into(),
            oidc_token: "eyJ.secret-jwt.sig".into(),
            role_session_name: "pod-a".into(),
            duration_seconds: 900,
            policy: None,
        };
        let req = StsClient::new("http://127.0.0.1:1").assume_role_with_oidc_request(&input);
        assert_eq!(req.action, "AssumeRoleWithOIDC");
        assert!(req.query.is_empty());
        assert!(req
            .form
            .iter()
            .any(|(k, v)| k == "OIDCToken" && v == "eyJ.secret-jwt.sig"));
        let (uri, body) = crate::acs::rpc::unsigned_parts(&req, "2026-01-01T00:00:00Z");
        assert!(!uri.contains("secret-jwt"), "{uri}");
        assert!(
            !uri.contains("Signature") && !uri.contains("AccessKeyId"),
            "{uri}"
        );
        assert!(body.unwrap().contains("OIDCToken=eyJ.secret-jwt.sig"));
        assert!(!format!("{input:?}").contains("secret-jwt"));
    }
}
