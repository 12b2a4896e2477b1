//! STS AssumeRole: temporary credentials for a RAM role, e.g. in another account.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::cache::RefreshingProvider;
use super::{parse_expiration, Credentials, CredentialsError, CredentialsProvider, EnvLookup};
use crate::acs::rpc::RpcClient;
use crate::acs::sts::{AssumeRoleInput, StsClient};

/// What to assume and how, as written in a profile, INI section or on the command line.
///
/// Fields left `None` take the SDK defaults (session name from `ALIBABA_CLOUD_ROLE_SESSION_NAME`
/// or `ossrelay-<ms>`, 3600 s, the global STS endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumeRoleSpec {
    /// `acs:ram::<account-id>:role/<role-name>`.
    pub role_arn: String,
    pub session_name: Option<String>,
    pub duration_seconds: Option<u64>,
    pub external_id: Option<String>,
    pub policy: Option<String>,
    /// Region of a regional STS endpoint (`sts.<region>.aliyuncs.com`).
    pub sts_region: Option<String>,
    /// Explicit endpoint (host or URL); wins over the region.
    pub sts_endpoint: Option<String>,
    /// Use `sts-vpc.<region>.aliyuncs.com`.
    pub enable_vpc: bool,
}

/// Overrides the STS endpoint (host or URL), e.g. a local test double.
pub const ENV_STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
/// Region of the regional STS endpoint.
pub const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
/// `true` selects `sts-vpc.<region>.aliyuncs.com`.
pub const ENV_VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
/// Default RoleSessionName.
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
/// Default RoleArn.
pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
/// The global STS endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";
/// Default AssumeRole duration.
pub const DEFAULT_DURATION_SECONDS: u64 = 3600;

/// Picks the STS endpoint: the spec's explicit endpoint, else `ALIBABA_CLOUD_STS_ENDPOINT`,
/// else a regional endpoint (`sts[-vpc].<region>.aliyuncs.com`, region from the spec or
/// `ALIBABA_CLOUD_STS_REGION`), else `https://sts.aliyuncs.com`.
pub fn sts_endpoint(spec: &AssumeRoleSpec, env: &EnvLookup) -> String {
    let with_scheme = |e: String| {
        if e.contains("://") {
            e
        } else {
            format!("https://{e}")
        }
    };
    if let Some(e) = spec
        .sts_endpoint
        .clone()
        .or_else(|| env.get(ENV_STS_ENDPOINT))
    {
        return with_scheme(e.trim().to_string());
    }
    let region = spec.sts_region.clone().or_else(|| env.get(ENV_STS_REGION));
    match region {
        Some(r) => {
            let vpc = spec.enable_vpc || env.flag(ENV_VPC_ENDPOINT_ENABLED);
            let prefix = if vpc { "sts-vpc" } else { "sts" };
            format!("https://{prefix}.{}.aliyuncs.com", r.trim())
        }
        None => DEFAULT_STS_ENDPOINT.to_string(),
    }
}

/// The RoleSessionName: given, else `ALIBABA_CLOUD_ROLE_SESSION_NAME`, else `ossrelay-<ms>`;
/// checked against STS's rule (2-64 characters of `[A-Za-z0-9.@_-]`).
pub(crate) fn session_name(given: Option<String>, env: &EnvLookup) -> Result<String, String> {
    let name = given
        .or_else(|| env.get(ENV_ROLE_SESSION_NAME))
        .unwrap_or_else(|| {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            format!("ossrelay-{ms}")
        });
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '_' | '-');
    if !(2..=64).contains(&name.len()) || !name.chars().all(valid_char) {
        return Err(format!(
            "role session name {name:?} must be 2-64 characters of A-Z a-z 0-9 . @ _ -"
        ));
    }
    Ok(name)
}

/// DurationSeconds (default 3600), within what STS accepts.
pub(crate) fn duration(given: Option<u64>) -> Result<u64, String> {
    let d = given.unwrap_or(DEFAULT_DURATION_SECONDS);
    if !(900..=43200).contains(&d) {
        return Err(format!(
            "duration {d} s is out of range; STS accepts 900 to 43200 seconds (and at most the role's MaxSessionDuration)"
        ));
    }
    Ok(d)
}

/// Fetches new credentials with STS AssumeRole on every call; wrap it in
/// [`RefreshingProvider`] (see [`AssumeRoleProvider::cached`]) to reuse them until near expiry.
pub struct AssumeRoleProvider {
    base: Arc<dyn CredentialsProvider>,
    input: AssumeRoleInput,
    client: StsClient,
}

impl fmt::Debug for AssumeRoleProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleProvider")
            .field("base", &self.base.name())
            .field("role_arn", &self.input.role_arn)
            .field("session_name", &self.input.role_session_name)
            .field("duration_seconds", &self.input.duration_seconds)
            .field("endpoint", &self.client.endpoint())
            .finish_non_exhaustive()
    }
}

impl AssumeRoleProvider {
    /// Validates `spec` (filling defaults from `env`) and assumes the role with `base`.
    pub fn new(
        base: Arc<dyn CredentialsProvider>,
        spec: &AssumeRoleSpec,
        env: &EnvLookup,
    ) -> Result<Self, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            source_name: "AssumeRole settings".into(),
            reason,
        };
        let role_arn = Some(spec.role_arn.trim().to_string())
            .filter(|r| !r.is_empty())
            .or_else(|| env.get(ENV_ROLE_ARN))
            .ok_or_else(|| {
                invalid(format!(
                    "no role ARN; give acs:ram::<account-id>:role/<name> or set {ENV_ROLE_ARN}"
                ))
            })?;
        if !role_arn.starts_with("acs:ram::") || !role_arn.contains(":role/") {
            return Err(invalid(format!(
                "role ARN {role_arn:?} does not look like acs:ram::<account-id>:role/<name>"
            )));
        }
        let session_name = session_name(spec.session_name.clone(), env).map_err(invalid)?;
        let duration_seconds = duration(spec.duration_seconds).map_err(invalid)?;
        Ok(Self {
            base,
            input: AssumeRoleInput {
                role_arn,
                role_session_name: session_name,
                duration_seconds,
                policy: spec.policy.clone(),
                external_id: spec.external_id.clone(),
            },
            client: StsClient::new(sts_endpoint(spec, env)),
        })
    }

    /// Uses `client` (retry policy, timeouts) for the STS calls.
    pub fn with_client(mut self, client: RpcClient) -> Self {
        self.client = self.client.with_rpc(client);
        self
    }

    /// The STS endpoint URL in use.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The role being assumed.
    pub fn role_arn(&self) -> &str {
        &self.input.role_arn
    }

    /// Wraps the provider in a cache that refreshes before expiry.
    pub fn cached(self) -> RefreshingProvider<Self> {
        RefreshingProvider::new(self)
    }
}

/// STS's temporary credentials (of AssumeRole or AssumeRoleWithOIDC) as [`Credentials`]:
/// all three parts present and an expiry that parses, else `refresh_err`.
pub(super) fn temporary_credentials(
    c: crate::acs::sts::StsCredentials,
    refresh_err: impl Fn(String) -> CredentialsError,
) -> Result<Credentials, CredentialsError> {
    let expiration = parse_expiration(&c.expiration)
        .ok_or_else(|| refresh_err(format!("cannot parse Expiration {:?}", c.expiration)))?;
    if c.access_key_id.is_empty() || c.access_key_secret.is_empty() || c.security_token.is_empty() {
        return Err(refresh_err(
            "the answer lacks AccessKeyId, AccessKeySecret or SecurityToken".into(),
        ));
    }
    Ok(Credentials {
        access_key_id: c.access_key_id,
        access_key_secret: c.access_key_secret,
        security_token: Some(c.security_token),
        expiration: Some(expiration),
    })
}

#[async_trait]
impl CredentialsProvider for AssumeRoleProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let refresh_err = |reason: String| CredentialsError::Refresh {
            provider: format!("AssumeRole {}", self.input.role_arn),
            reason,
        };
        let resp = self
            .client
            .assume_role(self.base.as_ref(), &self.input)
            .await
            .map_err(|e| match e {
                crate::acs::RpcError::Credentials(c) => c,
                other => refresh_err(other.to_string()),
            })?;
        let c = resp.credentials;
        tracing::info!(role_arn = %self.input.role_arn, access_key_id = %c.access_key_id, expiration = %c.expiration, "assumed role");
        temporary_credentials(c, refresh_err)
    }

    fn name(&self) -> String {
        "sts".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::StaticProvider;

    fn env(vars: &[(&str, &str)]) -> EnvLookup {
        EnvLookup::from_map(vars.iter().copied())
    }

    fn base() -> Arc<dyn CredentialsProvider> {
        Arc::new(StaticProvider(Credentials::new("LTAIbase", "base-secret")))
    }

    fn spec(arn: &str) -> AssumeRoleSpec {
        AssumeRoleSpec {
            role_arn: arn.into(),
            ..Default::default()
        }
    }

    const ARN: &str = "acs:ram::1234567890123456:role/image-migrator";

    #[test]
    fn endpoint_selection() {
        let e = env(&[]);
        assert_eq!(sts_endpoint(&spec(ARN), &e), "https://sts.aliyuncs.com");
        let regional = AssumeRoleSpec {
            sts_region: Some("cn-hangzhou".into()),
            ..spec(ARN)
        };
        assert_eq!(
            sts_endpoint(&regional, &e),
            "https://sts.cn-hangzhou.aliyuncs.com"
        );
        let vpc = AssumeRoleSpec {
            enable_vpc: true,
            ..regional.clone()
        };
        assert_eq!(
            sts_endpoint(&vpc, &e),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com"
        );
        let e2 = env(&[
            (ENV_STS_REGION, "eu-central-1"),
            (ENV_VPC_ENDPOINT_ENABLED, "true"),
        ]);
        assert_eq!(
            sts_endpoint(&spec(ARN), &e2),
            "https://sts-vpc.eu-central-1.aliyuncs.com"
        );
        let e3 = env(&[(ENV_STS_ENDPOINT, "http://127.0.0.1:9000")]);
        assert_eq!(sts_endpoint(&regional, &e3), "http://127.0.0.1:9000");
        let explicit = AssumeRoleSpec {
            sts_endpoint: Some("sts.example.test".into()),
            ..regional
        };
        assert_eq!(sts_endpoint(&explicit, &e3), "https://sts.example.test");
    }

    #[test]
    fn defaults_and_validation() {
        let p = AssumeRoleProvider::new(base(), &spec(ARN), &env(&[])).unwrap();
        assert_eq!(p.input.duration_seconds, 3600);
        assert!(
            p.input.role_session_name.starts_with("ossrelay-"),
            "{}",
            p.input.role_session_name
        );
        let p = AssumeRoleProvider::new(
            base(),
            &spec(""),
            &env(&[(ENV_ROLE_ARN, ARN), (ENV_ROLE_SESSION_NAME, "from-env")]),
        )
        .unwrap();
        assert_eq!(p.role_arn(), ARN);
        assert_eq!(p.input.role_session_name, "from-env");

        let bad = |s: AssumeRoleSpec, want: &str| {
            let err = AssumeRoleProvider::new(base(), &s, &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        };
        bad(spec(""), "no role ARN");
        bad(spec("arn:aws:iam::1:role/x"), "does not look like");
        bad(
            AssumeRoleSpec {
                duration_seconds: Some(600),
                ..spec(ARN)
            },
            "900 to 43200",
        );
        bad(
            AssumeRoleSpec {
                duration_seconds: Some(50000),
                ..spec(ARN)
            },
            "900 to 43200",
        );
        bad(
            AssumeRoleSpec {
                session_name: Some("a".into()),
                ..spec(ARN)
            },
            "2-64 characters",
        );
        bad(
            AssumeRoleSpec {
                session_name: Some("has space".into()),
                ..spec(ARN)
            },
            "2-64 characters",
        );
    }

    #[test]
    fn request_carries_role_parameters_in_the_form() {
        let s = AssumeRoleSpec {
            session_name: Some("migrate".into()),
            duration_seconds: Some(900),
            external_id: Some("ext-id".into()),
            policy: Some("{\"Version\":\"1\"}".into()),
            ..spec(ARN)
        };
        let p = AssumeRoleProvider::new(base(), &s, &env(&[])).unwrap();
        let req = p.client.assume_role_request(&p.input);
        assert_eq!(req.action, "AssumeRole");
        assert_eq!(req.version, "2015-04-01");
        assert!(req.query.is_empty());
        let form: Vec<(&str, &str)> = req
            .form
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            form,
            vec![
                ("RoleArn", ARN),
                ("RoleSessionName", "migrate"),
                ("DurationSeconds", "900"),
                ("Policy", "{\"Version\":\"1\"}"),
                ("ExternalId", "ext-id"),
            ]
        );
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("base-secret"), "{dbg}");
    }
}
