//! Credentials from environment variables (first step of the default chain).

use async_trait::async_trait;

use super::{Credentials, CredentialsError, CredentialsProvider, EnvLookup};

/// AccessKey ID variable used by the official SDKs and the aliyun CLI.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// AccessKey secret variable used by the official SDKs and the aliyun CLI.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// Optional STS security token.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
/// Fallback AccessKey ID (also read by other OSS tools).
pub const ENV_OSS_ACCESS_KEY_ID: &str = "OSS_ACCESS_KEY_ID";
/// Fallback AccessKey secret (also read by other OSS tools).
pub const ENV_OSS_ACCESS_KEY_SECRET: &str = "OSS_ACCESS_KEY_SECRET";
/// STS token that goes with the `OSS_ACCESS_KEY_*` pair (ossutil 2 and the OSS SDK v2 names).
pub const ENV_OSS_SESSION_TOKEN: &str = "OSS_SESSION_TOKEN";

/// Reads `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` (+ optional `ALIBABA_CLOUD_SECURITY_TOKEN`),
/// falling back to `OSS_ACCESS_KEY_ID` / `OSS_ACCESS_KEY_SECRET` (+ optional
/// `OSS_SESSION_TOKEN`, else `ALIBABA_CLOUD_SECURITY_TOKEN`).
///
/// A token is only taken from its own family for the `ALIBABA_CLOUD_*` pair: an
/// `OSS_SESSION_TOKEN` left over from another shell would not match that AccessKey and every
/// request would fail with a token mismatch.
///
/// The variables are read on every call, so a token rotated into the environment of a
/// long-running process by a wrapper is not picked up; that is a static source by design.
#[derive(Debug, Clone, Default)]
pub struct EnvProvider {
    env: EnvLookup,
}

impl EnvProvider {
    /// Reads the process environment.
    pub fn new() -> Self {
        Self {
            env: EnvLookup::process(),
        }
    }

    /// Reads from `env` instead of the process environment.
    pub fn with_lookup(env: EnvLookup) -> Self {
        Self { env }
    }

    /// `Ok(None)` when neither variable pair is set; an error when a pair is half set.
    pub fn lookup(&self) -> Result<Option<Credentials>, CredentialsError> {
        let (pair, token) = match pair(&self.env, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET)? {
            Some(p) => (Some(p), self.env.get(ENV_SECURITY_TOKEN)),
            None => (
                pair(&self.env, ENV_OSS_ACCESS_KEY_ID, ENV_OSS_ACCESS_KEY_SECRET)?,
                self.env
                    .get(ENV_OSS_SESSION_TOKEN)
                    .or_else(|| self.env.get(ENV_SECURITY_TOKEN)),
            ),
        };
        Ok(pair.map(|(id, secret)| Credentials {
            access_key_id: id,
            access_key_secret: secret,
            security_token: token.map(|t| t.trim().to_string()),
            expiration: None,
        }))
    }
}

fn pair(
    env: &EnvLookup,
    id_var: &str,
    secret_var: &str,
) -> Result<Option<(String, String)>, CredentialsError> {
    match (env.get(id_var), env.get(secret_var)) {
        (Some(id), Some(secret)) => Ok(Some((id.trim().to_string(), secret.trim().to_string()))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(half_set(id_var, secret_var)),
        (None, Some(_)) => Err(half_set(secret_var, id_var)),
    }
}

fn half_set(set: &str, missing: &str) -> CredentialsError {
    CredentialsError::Invalid {
        source_name: "environment".into(),
        reason: format!("{set} is set but {missing} is not; set both or neither"),
    }
}

#[async_trait]
impl CredentialsProvider for EnvProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        self.lookup()?.ok_or_else(|| CredentialsError::NotFound {
            tried: format!(
                "env ({ENV_ACCESS_KEY_ID}/{ENV_ACCESS_KEY_SECRET} or {ENV_OSS_ACCESS_KEY_ID}/{ENV_OSS_ACCESS_KEY_SECRET} not set)"
            ),
        })
    }

    fn name(&self) -> String {
        "env".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(vars: &[(&str, &str)]) -> EnvProvider {
        EnvProvider::with_lookup(EnvLookup::from_map(vars.iter().copied()))
    }

    #[tokio::test]
    async fn reads_alibaba_pair_and_token() {
        let p = provider(&[
            (ENV_ACCESS_KEY_ID, "LTAIid"),
            (ENV_ACCESS_KEY_SECRET, "sekrit"),
            (ENV_SECURITY_TOKEN, "tok"),
            (ENV_OSS_ACCESS_KEY_ID, "other"),
            (ENV_OSS_ACCESS_KEY_SECRET, "other-secret"),
        ]);
        let c = p.credentials().await.unwrap();
        assert_eq!(c.access_key_id, "LTAIid");
        assert_eq!(c.access_key_secret, "sekrit");
        assert_eq!(c.security_token.as_deref(), Some("tok"));
        assert_eq!(c.expiration, None);
        assert_eq!(p.name(), "env");
    }

    #[tokio::test]
    async fn falls_back_to_oss_pair() {
        let p = provider(&[
            (ENV_OSS_ACCESS_KEY_ID, "ossid"),
            (ENV_OSS_ACCESS_KEY_SECRET, "osssecret"),
        ]);
        let c = p.credentials().await.unwrap();
        assert_eq!(c.access_key_id, "ossid");
        assert_eq!(c.access_key_secret, "osssecret");
        assert_eq!(c.security_token, None);
    }

    #[tokio::test]
    async fn oss_pair_takes_oss_session_token() {
        let p = provider(&[
            (ENV_OSS_ACCESS_KEY_ID, "STS.ossid"),
            (ENV_OSS_ACCESS_KEY_SECRET, "osssecret"),
            (ENV_OSS_SESSION_TOKEN, "oss-tok"),
            (ENV_SECURITY_TOKEN, "alibaba-tok"),
        ]);
        let c = p.credentials().await.unwrap();
        assert_eq!(c.security_token.as_deref(), Some("oss-tok"));

        // Without OSS_SESSION_TOKEN the ALIBABA_CLOUD_ name still serves the OSS pair.
        let p = provider(&[
            (ENV_OSS_ACCESS_KEY_ID, "STS.ossid"),
            (ENV_OSS_ACCESS_KEY_SECRET, "osssecret"),
            (ENV_SECURITY_TOKEN, "alibaba-tok"),
        ]);
        let c = p.credentials().await.unwrap();
        assert_eq!(c.security_token.as_deref(), Some("alibaba-tok"));

        // The ALIBABA_CLOUD_ pair never borrows the OSS family's token.
        let p = provider(&[
            (ENV_ACCESS_KEY_ID, "LTAIid"),
            (ENV_ACCESS_KEY_SECRET, "sekrit"),
            (ENV_OSS_SESSION_TOKEN, "oss-tok"),
        ]);
        assert_eq!(p.credentials().await.unwrap().security_token, None);
    }

    #[tokio::test]
    async fn nothing_set_is_not_found() {
        let p = provider(&[]);
        assert_eq!(p.lookup().unwrap(), None);
        let err = p.credentials().await.unwrap_err();
        assert!(matches!(err, CredentialsError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains(ENV_ACCESS_KEY_ID));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let p = provider(&[(ENV_ACCESS_KEY_ID, ""), (ENV_ACCESS_KEY_SECRET, "")]);
        assert_eq!(p.lookup().unwrap(), None);
    }

    #[test]
    fn half_set_pair_is_an_error_naming_the_missing_variable() {
        let p = provider(&[(ENV_ACCESS_KEY_ID, "LTAIid")]);
        let err = p.lookup().unwrap_err().to_string();
        assert!(
            err.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"),
            "{err}"
        );

        let p = provider(&[(ENV_OSS_ACCESS_KEY_SECRET, "s3cr3t-value")]);
        let err = p.lookup().unwrap_err().to_string();
        assert!(err.contains("OSS_ACCESS_KEY_ID is not"), "{err}");
        assert!(!err.contains("s3cr3t-value"));
    }

    #[tokio::test]
    async fn debug_never_shows_secret() {
        let p = provider(&[
            (ENV_ACCESS_KEY_ID, "LTAIid"),
            (ENV_ACCESS_KEY_SECRET, "very-secret-value"),
            (ENV_SECURITY_TOKEN, "very-secret-token"),
        ]);
        let c = p.credentials().await.unwrap();
        let dbg = format!("{c:?} {p:?}");
        assert!(dbg.contains("LTAIid"));
        assert!(!dbg.contains("very-secret"), "{dbg}");
    }
}
