//! AWS credentials from environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN` (or the legacy `AWS_SECURITY_TOKEN`), `AWS_CREDENTIAL_EXPIRATION`.
//!
//! Guarantees: both keys or neither (a half-set pair is an error naming the missing variable,
//! because falling through to another identity would be worse); an expiry in the past is an
//! error saying to refresh the variables, not a request that fails with `ExpiredToken` later.
//! The variables are read on every call.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::credentials::{
    parse_expiration, Credentials, CredentialsError, CredentialsProvider, EnvLookup,
};

pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Older name of [`ENV_SESSION_TOKEN`] (boto 2 era), still read by botocore.
pub const ENV_SECURITY_TOKEN: &str = "AWS_SECURITY_TOKEN";
/// RFC 3339 expiry of temporary credentials in the environment.
pub const ENV_CREDENTIAL_EXPIRATION: &str = "AWS_CREDENTIAL_EXPIRATION";

/// Reads the `AWS_*` key variables.
#[derive(Debug, Clone, Default)]
pub struct AwsEnvProvider {
    env: EnvLookup,
}

impl AwsEnvProvider {
    pub fn new(env: EnvLookup) -> Self {
        Self { env }
    }

    /// `Ok(None)` when neither key variable is set.
    pub fn lookup(&self) -> Result<Option<Credentials>, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            source_name: "environment".into(),
            reason,
        };
        let (id, secret) = match (
            self.env.get(ENV_ACCESS_KEY_ID),
            self.env.get(ENV_SECRET_ACCESS_KEY),
        ) {
            (Some(i), Some(s)) => (i, s),
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(invalid(format!(
                    "{ENV_ACCESS_KEY_ID} is set but {ENV_SECRET_ACCESS_KEY} is not; set both or neither"
                )))
            }
            (None, Some(_)) => {
                return Err(invalid(format!(
                    "{ENV_SECRET_ACCESS_KEY} is set but {ENV_ACCESS_KEY_ID} is not; set both or neither"
                )))
            }
        };
        let expiration = match self.env.get(ENV_CREDENTIAL_EXPIRATION) {
            None => None,
            Some(v) => Some(parse_expiration(&v).ok_or_else(|| {
                invalid(format!(
                    "{ENV_CREDENTIAL_EXPIRATION}={v:?} is not an RFC 3339 time like 2026-01-01T00:00:00Z"
                ))
            })?),
        };
        Ok(Some(Credentials {
            access_key_id: id.trim().to_string(),
            access_key_secret: secret.trim().to_string(),
            security_token: self
                .env
                .get(ENV_SESSION_TOKEN)
                .or_else(|| self.env.get(ENV_SECURITY_TOKEN))
                .map(|t| t.trim().to_string()),
            expiration,
        }))
    }
}

#[async_trait]
impl CredentialsProvider for AwsEnvProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let c = self
            .lookup()?
            .ok_or_else(|| CredentialsError::AwsNotFound {
                tried: format!("env: {ENV_ACCESS_KEY_ID}/{ENV_SECRET_ACCESS_KEY} not set"),
            })?;
        if c.expiration.is_some_and(|e| e <= SystemTime::now()) {
            return Err(CredentialsError::Invalid {
                source_name: "environment".into(),
                reason: format!(
                    "the credentials expired at {}; export fresh AWS_* variables",
                    self.env.get(ENV_CREDENTIAL_EXPIRATION).unwrap_or_default()
                ),
            });
        }
        Ok(c)
    }

    fn name(&self) -> String {
        "aws-env".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(vars: &[(&str, &str)]) -> AwsEnvProvider {
        AwsEnvProvider::new(EnvLookup::from_map(vars.iter().copied()))
    }

    #[tokio::test]
    async fn reads_keys_token_and_expiration() {
        let c = p(&[
            (ENV_ACCESS_KEY_ID, "ASIAENV"),
            (ENV_SECRET_ACCESS_KEY, "env-secret"),
            (ENV_SESSION_TOKEN, "env-token"),
            (ENV_SECURITY_TOKEN, "legacy-token"),
            (ENV_CREDENTIAL_EXPIRATION, "2099-01-01T00:00:00Z"),
        ])
        .credentials()
        .await
        .unwrap();
        assert_eq!(c.access_key_id, "ASIAENV");
        assert_eq!(c.access_key_secret, "env-secret");
        assert_eq!(c.security_token.as_deref(), Some("env-token"));
        assert!(c.expiration.is_some());
    }

    #[test]
    fn legacy_security_token_and_absence() {
        let c = p(&[
            (ENV_ACCESS_KEY_ID, "ASIAENV"),
            (ENV_SECRET_ACCESS_KEY, "env-secret"),
            (ENV_SECURITY_TOKEN, "legacy-token"),
        ])
        .lookup()
        .unwrap()
        .unwrap();
        assert_eq!(c.security_token.as_deref(), Some("legacy-token"));
        assert_eq!(c.expiration, None);
        assert_eq!(p(&[]).lookup().unwrap(), None);
        assert_eq!(p(&[(ENV_ACCESS_KEY_ID, "")]).lookup().unwrap(), None);
    }

    #[tokio::test]
    async fn errors_name_the_variable() {
        let err = p(&[(ENV_ACCESS_KEY_ID, "AKIA")]).lookup().unwrap_err();
        assert!(
            err.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
            "{err}"
        );
        let err = p(&[(ENV_SECRET_ACCESS_KEY, "s3cr3t-value")])
            .lookup()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AWS_ACCESS_KEY_ID is not") && !err.contains("s3cr3t"),
            "{err}"
        );
        let base = [(ENV_ACCESS_KEY_ID, "AKIA"), (ENV_SECRET_ACCESS_KEY, "s")];
        let bad = [&base[..], &[(ENV_CREDENTIAL_EXPIRATION, "tomorrow")]].concat();
        assert!(p(&bad)
            .lookup()
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
        let old = [
            &base[..],
            &[(ENV_CREDENTIAL_EXPIRATION, "2001-01-01T00:00:00Z")],
        ]
        .concat();
        let err = p(&old).credentials().await.unwrap_err().to_string();
        assert!(err.contains("expired"), "{err}");
        let err = p(&[]).credentials().await.unwrap_err();
        assert!(matches!(err, CredentialsError::AwsNotFound { .. }));
    }
}
