//! The AWS credential chain and region resolution for one `s3://` side.
//!
//! Order (aws-config's, which botocore's matches for the sources ossrelay supports):
//! 1. an explicit profile (`--src-profile` / `--dst-profile`): that profile only, or an error;
//! 2. `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (+ session token);
//! 3. web identity from `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`;
//! 4. the profile named by `AWS_PROFILE` (`AWS_DEFAULT_PROFILE`), else `default`, in
//!    `~/.aws/credentials` and `~/.aws/config`: keys, `role_arn` with `source_profile` /
//!    `credential_source`, or `web_identity_token_file`;
//! 5. the EC2 instance role (IMDSv2), unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Everything up to step 4 is decided from variables and files, with no network access, so a
//! misconfiguration fails at start-up rather than an hour into a copy. A source that is absent
//! is skipped and listed in the final [`CredentialsError::AwsNotFound`]; one that is present but
//! broken (half-set variables, a malformed profile, `AWS_PROFILE` naming a missing profile)
//! stops the chain with its own error: silently using another identity would be worse. The
//! instance role is the last resort, tried on first use; if it fails before ever succeeding, the
//! error lists every source tried.
//!
//! Every temporary source (AssumeRole, web identity, instance role) is wrapped in
//! [`RefreshingProvider`](crate::credentials::cache::RefreshingProvider), so signers asking
//! before each attempt get keys with more than the refresh margin left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::env::AwsEnvProvider;
use super::files::{profile_name, AwsProfiles, CredentialPlan};
use super::imds::{ImdsProvider, ENV_EC2_METADATA_DISABLED};
use super::sts::{
    session_name, sts_endpoint, AssumeRoleInput, AssumeRoleProvider, StsClient, DEFAULT_REGION,
};
use super::web_identity::{spec_from_env, WebIdentityProvider};
use crate::credentials::cache::RefreshingProvider;
use crate::credentials::{Credentials, CredentialsError, CredentialsProvider, EnvLookup};
use crate::http::RetryPolicy;

/// The region variable the Rust SDK reads first.
pub const ENV_REGION: &str = "AWS_REGION";
/// The region variable the AWS CLI / botocore read.
pub const ENV_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";

/// Settings from the command line that the files and variables do not carry.
#[derive(Debug, Clone, Default)]
pub struct AwsCredentialOptions {
    /// STS endpoint URL (`--src-sts-endpoint` / `--dst-sts-endpoint`); wins over
    /// `AWS_ENDPOINT_URL_STS` and `AWS_ENDPOINT_URL`.
    pub sts_endpoint: Option<String>,
    /// The side's region flag; the STS region when given (else the region chain, else
    /// us-east-1).
    pub region: Option<String>,
    /// Retry policy of STS calls (default: the RPC policy, 5 attempts).
    pub sts_retry: Option<RetryPolicy>,
}

/// The region for one side: `flag` > `AWS_REGION` > `AWS_DEFAULT_REGION` > the profile's
/// `region` (profile = `profile`, else `AWS_PROFILE`, else `default`) > `None`; the caller
/// defaults to us-east-1 for AWS. Unreadable files count as no region (the credentials
/// resolution reports them).
pub fn region(flag: Option<&str>, profile: Option<&str>, env: &EnvLookup) -> Option<String> {
    flag.map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| env.get(ENV_REGION))
        .or_else(|| env.get(ENV_DEFAULT_REGION))
        .or_else(|| {
            let (name, _) = profile_name(profile, env);
            let files = AwsProfiles::load(env)
                .map_err(|e| tracing::debug!(error = %e, "AWS files unreadable; no profile region"))
                .ok()?;
            files.get(&name)?.get("region").map(str::to_string)
        })
        .map(|r| r.trim().to_string())
}

/// The credentials provider for one side (see the module doc for the order). `profile` is the
/// side's `--*-profile` flag.
pub fn resolve(
    profile: Option<&str>,
    opts: &AwsCredentialOptions,
    env: &EnvLookup,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    let ctx = Ctx { opts, env };
    if let Some(name) = profile.map(str::trim).filter(|p| !p.is_empty()) {
        let files = AwsProfiles::load(env)?;
        let plan = files.plan(name)?.ok_or_else(|| CredentialsError::Invalid {
            source_name: format!("profile {name:?} ({})", files.searched()),
            reason: format!(
                "it configures no credentials (no aws_access_key_id, role_arn or web_identity_token_file); run `aws configure --profile {name}`"
            ),
        })?;
        return ctx.build(&plan);
    }
    let mut tried: Vec<String> = Vec::new();

    let env_provider = AwsEnvProvider::new(env.clone());
    if env_provider.lookup()?.is_some() {
        tracing::info!("AWS credentials from the environment");
        return Ok(Arc::new(env_provider));
    }
    tried.push("env: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY not set".into());

    if let Some(spec) = spec_from_env(env)? {
        return ctx.build(&CredentialPlan::WebIdentity(spec));
    }
    tried.push("web identity: AWS_WEB_IDENTITY_TOKEN_FILE not set".into());

    let files = AwsProfiles::load(env)?;
    let (name, chosen) = profile_name(None, env);
    if chosen || files.get(&name).is_some() {
        // AWS_PROFILE naming a missing profile is an error (plan says which exist).
        match files.plan(&name)? {
            Some(plan) => return ctx.build(&plan),
            None => tried.push(format!("profile {name:?}: configures no credentials")),
        }
    } else {
        tried.push(format!("profile \"default\": not in {}", files.searched()));
    }

    if ImdsProvider::disabled(env) {
        tried.push(format!("imds: disabled by {ENV_EC2_METADATA_DISABLED}"));
        return Err(CredentialsError::AwsNotFound {
            tried: tried.join("; "),
        });
    }
    Ok(Arc::new(LastResort {
        inner: ImdsProvider::new(env).cached(),
        tried,
        worked: AtomicBool::new(false),
    }))
}

struct Ctx<'a> {
    opts: &'a AwsCredentialOptions,
    env: &'a EnvLookup,
}

impl Ctx<'_> {
    /// The STS region: the side's flag, `AWS_REGION`, `AWS_DEFAULT_REGION`, the role
    /// profile's `region`, else us-east-1.
    fn sts_client(&self, profile_region: Option<&str>) -> StsClient {
        let region = self
            .opts
            .region
            .clone()
            .filter(|r| !r.trim().is_empty())
            .or_else(|| self.env.get(ENV_REGION))
            .or_else(|| self.env.get(ENV_DEFAULT_REGION))
            .or_else(|| profile_region.map(str::to_string))
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let endpoint = sts_endpoint(self.opts.sts_endpoint.as_deref(), &region, self.env);
        let client = StsClient::new(endpoint, region);
        match self.opts.sts_retry {
            Some(r) => client.with_retry(r),
            None => client,
        }
    }

    fn build(
        &self,
        plan: &CredentialPlan,
    ) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
        Ok(match plan {
            CredentialPlan::Static {
                profile,
                credentials,
            } => {
                tracing::info!(profile = %profile, "AWS credentials from the shared files");
                Arc::new(Labeled {
                    label: format!("aws-profile:{profile}"),
                    creds: credentials.clone(),
                })
            }
            CredentialPlan::Environment => {
                let p = AwsEnvProvider::new(self.env.clone());
                if p.lookup()?.is_none() {
                    return Err(CredentialsError::Invalid {
                        source_name: "credential_source = Environment".into(),
                        reason: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into(),
                    });
                }
                Arc::new(p)
            }
            CredentialPlan::InstanceMetadata => {
                if ImdsProvider::disabled(self.env) {
                    return Err(CredentialsError::Invalid {
                        source_name: "credential_source = Ec2InstanceMetadata".into(),
                        reason: format!("{ENV_EC2_METADATA_DISABLED}=true turns the instance metadata service off; unset it or use another credential_source"),
                    });
                }
                Arc::new(ImdsProvider::new(self.env).cached())
            }
            CredentialPlan::WebIdentity(spec) => {
                check_role_arn(&spec.role_arn, &spec.origin)?;
                let client = self.sts_client(spec.region.as_deref());
                Arc::new(WebIdentityProvider::new(spec.clone(), client)?.cached())
            }
            CredentialPlan::AssumeRole { base, role } => {
                check_role_arn(&role.role_arn, &role.origin)?;
                let base = self.build(base)?;
                let invalid = |reason: String| CredentialsError::Invalid {
                    source_name: role.origin.clone(),
                    reason,
                };
                let input = AssumeRoleInput {
                    role_arn: role.role_arn.clone(),
                    session_name: session_name(role.session_name.as_deref()).map_err(invalid)?,
                    external_id: role.external_id.clone(),
                    duration_seconds: role.duration_seconds,
                };
                if input.external_id.as_ref().is_some_and(|e| e.len() < 2) {
                    return Err(invalid("external_id must be at least 2 characters".into()));
                }
                let client = self.sts_client(role.region.as_deref());
                Arc::new(AssumeRoleProvider::new(base, input, client).cached())
            }
        })
    }
}

/// Catches Alibaba ARNs and typos before STS does (`arn:aws:iam::<account>:role/<name>`,
/// any partition).
fn check_role_arn(arn: &str, origin: &str) -> Result<(), CredentialsError> {
    if arn.starts_with("arn:") && arn.contains(":iam::") && arn.contains(":role/") {
        Ok(())
    } else {
        Err(CredentialsError::Invalid {
            source_name: origin.to_string(),
            reason: format!(
                "role ARN {arn:?} does not look like arn:aws:iam::<account-id>:role/<name>"
            ),
        })
    }
}

/// Fixed credentials from a named profile, so logs and metrics say where they came from.
struct Labeled {
    label: String,
    creds: Credentials,
}

#[async_trait]
impl CredentialsProvider for Labeled {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Ok(self.creds.clone())
    }

    fn name(&self) -> String {
        self.label.clone()
    }
}

/// The instance role at the end of the chain: until it has worked once, its failure is
/// reported as "nothing found", listing every source tried.
struct LastResort {
    inner: RefreshingProvider<ImdsProvider>,
    tried: Vec<String>,
    worked: AtomicBool,
}

#[async_trait]
impl CredentialsProvider for LastResort {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        match self.inner.credentials().await {
            Ok(c) => {
                if !self.worked.swap(true, Ordering::Relaxed) {
                    tracing::info!("AWS credentials from the EC2 instance role");
                }
                Ok(c)
            }
            Err(e) if !self.worked.load(Ordering::Relaxed) => {
                let mut tried = self.tried.clone();
                tried.push(format!("imds: {e}"));
                Err(CredentialsError::AwsNotFound {
                    tried: tried.join("; "),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn name(&self) -> String {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::aws::files::{
        ENV_CONFIG_FILE, ENV_PROFILE, ENV_SHARED_CREDENTIALS_FILE,
    };

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile dev]
region = us-west-2

[profile admin]
role_arn = arn:aws:iam::123456789012:role/admin
source_profile = dev

[profile alibaba]
role_arn = acs:ram::123:role/x
source_profile = dev

[profile envrole]
role_arn = arn:aws:iam::123456789012:role/e
credential_source = Environment
";

    const CREDENTIALS: &str = "\
[dev]
aws_access_key_id = AKIADEV
aws_secret_access_key = dev-secret

[other]
aws_access_key_id = AKIAOTHER
aws_secret_access_key = other-secret
";

    struct Files(tempfile::TempDir);

    impl Files {
        fn new(config: &str, creds: &str) -> Self {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("config"), config).unwrap();
            std::fs::write(d.path().join("credentials"), creds).unwrap();
            Self(d)
        }

        fn env(&self, extra: &[(&str, &str)]) -> EnvLookup {
            let p = |f: &str| self.0.path().join(f).to_str().unwrap().to_string();
            let mut v: Vec<(String, String)> = vec![
                (ENV_CONFIG_FILE.into(), p("config")),
                (ENV_SHARED_CREDENTIALS_FILE.into(), p("credentials")),
                (ENV_EC2_METADATA_DISABLED.into(), "true".into()),
            ];
            for (k, val) in extra {
                v.retain(|(kk, _)| kk != k);
                v.push((k.to_string(), val.to_string()));
            }
            EnvLookup::from_map(v)
        }
    }

    fn opts() -> AwsCredentialOptions {
        AwsCredentialOptions::default()
    }

    #[tokio::test]
    async fn precedence_explicit_env_profile() {
        let f = Files::new(CONFIG, "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = o\n");
        let envkeys = [
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ];
        // Env keys beat the default profile.
        let p = resolve(None, &opts(), &f.env(&envkeys)).unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIAENV");
        assert_eq!(p.name(), "aws-env");
        // An explicit profile beats env keys.
        let p = resolve(Some("other"), &opts(), &f.env(&envkeys)).unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIAOTHER");
        assert_eq!(p.name(), "aws-profile:other");
        // No env keys: AWS_PROFILE, else default.
        let p = resolve(None, &opts(), &f.env(&[(ENV_PROFILE, "other")])).unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIAOTHER");
        let p = resolve(None, &opts(), &f.env(&[])).unwrap();
        assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIADEFAULT");
    }

    #[tokio::test]
    async fn web_identity_env_beats_profiles() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let env = f.env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/pod"),
            (ENV_PROFILE, "dev"),
        ]);
        let p = resolve(None, &opts(), &env).unwrap();
        assert_eq!(p.name(), "aws-web-identity:arn:aws:iam::1:role/pod");
    }

    #[test]
    fn configuration_errors_surface_at_resolve() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let err = |profile: Option<&str>, extra: &[(&str, &str)]| {
            resolve(profile, &opts(), &f.env(extra))
                .expect_err("an error")
                .to_string()
        };
        let e = err(Some("nope"), &[]);
        assert!(
            e.contains("\"nope\"") && e.contains("admin, alibaba, default, dev"),
            "{e}"
        );
        let e = err(None, &[(ENV_PROFILE, "ghost")]);
        assert!(e.contains("\"ghost\" not found"), "{e}");
        let e = err(Some("alibaba"), &[]);
        assert!(e.contains("does not look like arn:aws:iam"), "{e}");
        let e = err(Some("default"), &[]);
        assert!(e.contains("configures no credentials"), "{e}");
        let e = err(Some("envrole"), &[]);
        assert!(
            e.contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"),
            "{e}"
        );
        let e = err(None, &[("AWS_ACCESS_KEY_ID", "AKIA")]);
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is not"), "{e}");
        let e = err(None, &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")]);
        assert!(e.contains("AWS_ROLE_ARN is not"), "{e}");
    }

    #[test]
    fn nothing_found_names_every_source() {
        let f = Files::new("[default]\nregion = eu-west-1\n", "");
        let e = resolve(None, &opts(), &f.env(&[])).unwrap_err();
        assert!(matches!(e, CredentialsError::AwsNotFound { .. }));
        let msg = e.to_string();
        for want in [
            "aws configure",
            "AWS_ACCESS_KEY_ID",
            "env:",
            "web identity:",
            "profile \"default\": configures no credentials",
            "imds: disabled by AWS_EC2_METADATA_DISABLED",
        ] {
            assert!(msg.contains(want), "{want}: {msg}");
        }
        let empty = tempfile::tempdir().unwrap();
        let env = EnvLookup::from_map([
            ("HOME", empty.path().to_str().unwrap()),
            (ENV_EC2_METADATA_DISABLED, "true"),
        ]);
        let msg = resolve(None, &opts(), &env).unwrap_err().to_string();
        assert!(msg.contains("(missing)"), "{msg}");
    }

    #[tokio::test]
    async fn instance_role_failure_lists_sources() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let f = Files::new("", "");
        let env = f.env(&[(ENV_EC2_METADATA_DISABLED, "false")]);
        let env = EnvLookup::from_fn(move |k| {
            if k == "AWS_EC2_METADATA_SERVICE_ENDPOINT" {
                Some(format!("http://{addr}"))
            } else {
                env.get(k)
            }
        });
        let p = resolve(None, &opts(), &env).unwrap();
        let e = p.credentials().await.unwrap_err();
        assert!(matches!(e, CredentialsError::AwsNotFound { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("env:") && msg.contains("imds:") && msg.contains("unreachable"),
            "{msg}"
        );
    }

    #[test]
    fn region_precedence() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let e = f.env(&[]);
        assert_eq!(region(None, None, &e).as_deref(), Some("eu-west-1"));
        assert_eq!(region(None, Some("dev"), &e).as_deref(), Some("us-west-2"));
        assert_eq!(region(None, Some("admin"), &e), None);
        let e = f.env(&[(ENV_PROFILE, "dev")]);
        assert_eq!(region(None, None, &e).as_deref(), Some("us-west-2"));
        let e = f.env(&[(ENV_DEFAULT_REGION, "ap-east-1")]);
        assert_eq!(region(None, None, &e).as_deref(), Some("ap-east-1"));
        let e = f.env(&[(ENV_DEFAULT_REGION, "ap-east-1"), (ENV_REGION, "sa-east-1")]);
        assert_eq!(region(None, None, &e).as_deref(), Some("sa-east-1"));
        assert_eq!(
            region(Some("me-south-1"), None, &e).as_deref(),
            Some("me-south-1")
        );
        let none = EnvLookup::from_map([("HOME", "/nonexistent")]);
        assert_eq!(region(None, None, &none), None);
    }

    #[test]
    fn sts_client_region_and_endpoint() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let env = f.env(&[]);
        let o = opts();
        let ctx = Ctx {
            opts: &o,
            env: &env,
        };
        let c = ctx.sts_client(Some("eu-central-1"));
        assert_eq!(c.region(), "eu-central-1");
        assert_eq!(c.endpoint(), "https://sts.eu-central-1.amazonaws.com");
        assert_eq!(ctx.sts_client(None).region(), "us-east-1");
        let o = AwsCredentialOptions {
            sts_endpoint: Some("http://127.0.0.1:5000".into()),
            region: Some("ca-central-1".into()),
            ..Default::default()
        };
        let env = f.env(&[(ENV_REGION, "sa-east-1")]);
        let ctx = Ctx {
            opts: &o,
            env: &env,
        };
        let c = ctx.sts_client(Some("eu-central-1"));
        assert_eq!(c.region(), "ca-central-1");
        assert_eq!(c.endpoint(), "http://127.0.0.1:5000");
    }
}
