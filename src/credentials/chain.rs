//! The default credentials chain and explicit `--profile` selection.
//!
//! Order (as in the official SDKs, credentials-go and credentials-python): environment → OIDC
//! (RRSA, all three `ALIBABA_CLOUD_ROLE_ARN` / `_OIDC_PROVIDER_ARN` / `_OIDC_TOKEN_FILE` set) →
//! aliyun CLI config profile → shared INI file → ECS instance RAM role. OIDC sits before the
//! files and the instance role as in the SDKs: in a pod on an ECS node, the pod's own role must
//! win over the node's instance role. The first source that yields credentials wins and is reused for the
//! life of the provider. A source that is simply absent (no variables, no file, no such profile,
//! no metadata service) is skipped and reported in the final `NotFound`; a source that is present
//! but broken (malformed file, half-set variables, a failing AssumeRole) stops the chain with its
//! own error, because silently falling through to another identity would be worse.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::env::EnvProvider;
use super::imds::{EcsRamRoleProvider, ENV_ECS_METADATA_DISABLED};
use super::ini::{select_section, IniFile};
use super::oidc::OidcProvider;
use super::profile::{
    cli_profile_disabled, join_names, profile_region, ProfileCredentials, ProfileFile,
    ENV_CLI_PROFILE_DISABLED,
};
use super::sts::{AssumeRoleProvider, AssumeRoleSpec};
use super::{Credentials, CredentialsError, CredentialsProvider, EnvLookup};

/// The SDKs' credentials-URI variable; not supported by ossrelay (reported when set).
pub const ENV_CREDENTIALS_URI: &str = "ALIBABA_CLOUD_CREDENTIALS_URI";

/// Fixed credentials from a named source, so logs and metrics say where they came from.
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

fn labeled(label: String, creds: Credentials) -> Arc<dyn CredentialsProvider> {
    Arc::new(Labeled { label, creds })
}

type ProviderResult = Result<Arc<dyn CredentialsProvider>, CredentialsError>;

/// Builds a live provider for a validated profile or INI section.
///
/// `source` resolves `ChainableRamRoleArn`'s `source_profile` (CLI config only).
fn build(
    label: &str,
    pc: ProfileCredentials,
    env: &EnvLookup,
    source: &mut dyn FnMut(&str) -> ProviderResult,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    Ok(match pc {
        ProfileCredentials::Static(c) => labeled(label.to_string(), c),
        ProfileCredentials::RamRoleArn { base, role } => {
            let base = labeled(format!("{label}/base"), base);
            Arc::new(AssumeRoleProvider::new(base, &role, env)?.cached())
        }
        ProfileCredentials::EcsRamRole { role_name } => {
            Arc::new(EcsRamRoleProvider::new(role_name, env).cached())
        }
        ProfileCredentials::ChainableRamRoleArn {
            source_profile,
            role,
        } => {
            let base = source(&source_profile)?;
            Arc::new(AssumeRoleProvider::new(base, &role, env)?.cached())
        }
    })
}

/// A provider for profile `name` of the CLI config, following `source_profile` links.
pub fn config_profile_provider(
    file: &ProfileFile,
    name: &str,
    env: &EnvLookup,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    fn go(
        file: &ProfileFile,
        name: &str,
        env: &EnvLookup,
        seen: &mut Vec<String>,
    ) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
        if seen.iter().any(|s| s == name) {
            seen.push(name.to_string());
            return Err(CredentialsError::Invalid {
                source_name: file.path.display().to_string(),
                reason: format!("source_profile loop: {}", seen.join(" -> ")),
            });
        }
        seen.push(name.to_string());
        let pc = file.credentials_for(name)?;
        build(&format!("profile:{name}"), pc, env, &mut |src| {
            go(file, src, env, seen)
        })
    }
    go(file, name, env, &mut Vec::new())
}

/// A provider for section `name` of the shared INI file.
pub fn ini_section_provider(
    file: &IniFile,
    name: &str,
    env: &EnvLookup,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    let pc = file.credentials_for(name)?;
    build(&format!("ini:{name}"), pc, env, &mut |src| {
        Err(CredentialsError::Invalid {
            source_name: file.path.display().to_string(),
            reason: format!("source_profile {src:?} is only supported in the aliyun CLI config"),
        })
    })
}

/// The default chain, reading the process environment.
pub fn default_chain() -> Arc<dyn CredentialsProvider> {
    default_chain_with(EnvLookup::process())
}

/// The default chain with an explicit environment (tests).
pub fn default_chain_with(env: EnvLookup) -> Arc<dyn CredentialsProvider> {
    Arc::new(ChainProvider {
        env,
        winner: tokio::sync::OnceCell::new(),
    })
}

/// Resolves lazily on first use, then sticks with the winner.
pub struct ChainProvider {
    env: EnvLookup,
    winner: tokio::sync::OnceCell<Arc<dyn CredentialsProvider>>,
}

impl fmt::Debug for ChainProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainProvider")
            .field("winner", &self.winner.get().map(|w| w.name()))
            .finish()
    }
}

impl ChainProvider {
    async fn resolve(&self) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
        let env = &self.env;
        let mut tried: Vec<String> = Vec::new();

        // 1. Environment.
        let env_provider = EnvProvider::with_lookup(env.clone());
        if env_provider.lookup()?.is_some() {
            return Ok(Arc::new(env_provider));
        }
        tried.push("env: ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET not set".into());

        // 2. OIDC (RRSA). A failing AssumeRoleWithOIDC stops the chain (see the module doc).
        match OidcProvider::from_env(env)? {
            Some(p) => {
                let p: Arc<dyn CredentialsProvider> = Arc::new(p.cached());
                p.credentials().await?;
                return Ok(p);
            }
            None => {
                tried.push("oidc: ALIBABA_CLOUD_OIDC_PROVIDER_ARN/_OIDC_TOKEN_FILE not set".into())
            }
        }

        // 3. aliyun CLI config.
        if cli_profile_disabled(env) {
            tried.push(format!(
                "cli profile: disabled by {ENV_CLI_PROFILE_DISABLED} or ALIBABA_CLOUD_IGNORE_PROFILE"
            ));
        } else {
            match ProfileFile::load_default(env)? {
                None => tried.push(format!(
                    "cli profile: {} not found",
                    path_or_unknown(ProfileFile::default_path(env))
                )),
                Some(file) => {
                    let name = file.select_name(None, env);
                    if file.profile(&name).is_ok() {
                        let p = config_profile_provider(&file, &name, env)?;
                        p.credentials().await?;
                        return Ok(p);
                    }
                    tried.push(format!(
                        "cli profile: no profile {name:?} in {} (available: {})",
                        file.path.display(),
                        join_names(file.names())
                    ));
                }
            }
        }

        // 4. Shared INI file.
        match IniFile::load_default(env)? {
            None => tried.push(format!(
                "ini: {} not found",
                path_or_unknown(IniFile::default_path(env))
            )),
            Some(file) => {
                let name = select_section(None, env);
                if file.section(&name).is_ok() {
                    let p = ini_section_provider(&file, &name, env)?;
                    p.credentials().await?;
                    return Ok(p);
                }
                tried.push(format!(
                    "ini: no section [{name}] in {}",
                    file.path.display()
                ));
            }
        }

        // 5. Instance metadata (fast failure off ECS: 1 s timeouts, no v1 retry when unreachable).
        if env.flag(ENV_ECS_METADATA_DISABLED) {
            tried.push(format!("imds: disabled by {ENV_ECS_METADATA_DISABLED}"));
        } else {
            let p = Arc::new(EcsRamRoleProvider::new(None, env).cached());
            match p.credentials().await {
                Ok(_) => return Ok(p),
                Err(e) => tried.push(format!("imds: {e}")),
            }
        }

        if env.get(ENV_CREDENTIALS_URI).is_some() {
            tried.push(format!(
                "{ENV_CREDENTIALS_URI} is set but not supported by ossrelay"
            ));
        }
        Err(CredentialsError::NotFound {
            tried: tried.join("; "),
        })
    }
}

fn path_or_unknown(p: Option<std::path::PathBuf>) -> String {
    p.map_or_else(|| "(no home directory)".into(), |p| p.display().to_string())
}

#[async_trait]
impl CredentialsProvider for ChainProvider {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let winner = self
            .winner
            .get_or_try_init(|| async {
                let w = self.resolve().await?;
                tracing::info!(provider = %w.name(), "credentials source selected");
                Ok::<_, CredentialsError>(w)
            })
            .await?;
        winner.credentials().await
    }

    fn name(&self) -> String {
        self.winner
            .get()
            .map_or_else(|| "default-chain".into(), |w| w.name())
    }
}

/// AssumeRole on top of `base` (e.g. `--role-arn` for the destination side of a cross-account
/// relay), cached and refreshed before expiry; STS settings from the process environment.
pub fn assume_role(
    base: Arc<dyn CredentialsProvider>,
    spec: &AssumeRoleSpec,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    assume_role_with(base, spec, &EnvLookup::process())
}

/// [`assume_role`] with an explicit environment (tests).
pub fn assume_role_with(
    base: Arc<dyn CredentialsProvider>,
    spec: &AssumeRoleSpec,
    env: &EnvLookup,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    Ok(Arc::new(AssumeRoleProvider::new(base, spec, env)?.cached()))
}

/// The provider for an explicit `--profile NAME` (process environment).
pub fn from_profile(name: &str) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    from_profile_with(name, &EnvLookup::process())
}

/// The provider for profile `name`: the CLI config's profile of that name, else the INI
/// section of that name. Validates eagerly; network sources are contacted on first use.
pub fn from_profile_with(
    name: &str,
    env: &EnvLookup,
) -> Result<Arc<dyn CredentialsProvider>, CredentialsError> {
    let config = ProfileFile::load_default(env)?;
    if let Some(file) = &config {
        if file.profile(name).is_ok() {
            return config_profile_provider(file, name, env);
        }
    }
    let ini = IniFile::load_default(env)?;
    if let Some(file) = &ini {
        if file.section(name).is_ok() {
            return ini_section_provider(file, name, env);
        }
    }
    let mut paths = Vec::new();
    let mut available = Vec::new();
    match &config {
        Some(f) => {
            paths.push(f.path.display().to_string());
            available.extend(f.names().into_iter().map(str::to_string));
        }
        None => paths.push(format!(
            "{} (missing)",
            path_or_unknown(ProfileFile::default_path(env))
        )),
    }
    match &ini {
        Some(f) => {
            paths.push(f.path.display().to_string());
            available.extend(f.sections.iter().map(|s| format!("[{}]", s.name)));
        }
        None => paths.push(format!(
            "{} (missing)",
            path_or_unknown(IniFile::default_path(env))
        )),
    }
    Err(CredentialsError::UnknownProfile {
        profile: name.to_string(),
        path: paths.join(" or "),
        available: join_names(available.iter().map(String::as_str)),
    })
}

/// What the CLI needs: the credentials provider (explicit profile or the default chain) and
/// the default region from the selected CLI profile, if any.
pub fn resolve(
    profile: Option<&str>,
) -> Result<(Arc<dyn CredentialsProvider>, Option<String>), CredentialsError> {
    resolve_with(profile, EnvLookup::process())
}

/// [`resolve`] with an explicit environment (tests).
pub fn resolve_with(
    profile: Option<&str>,
    env: EnvLookup,
) -> Result<(Arc<dyn CredentialsProvider>, Option<String>), CredentialsError> {
    let region = profile_region(profile, &env);
    let provider = match profile {
        Some(name) => from_profile_with(name, &env)?,
        None => default_chain_with(env),
    };
    Ok((provider, region))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"{
      "current": "main",
      "profiles": [
        {"name": "main", "mode": "AK", "access_key_id": "LTAImain", "access_key_secret": "s-main", "region_id": "cn-hangzhou"},
        {"name": "tok", "mode": "StsToken", "access_key_id": "STS.tok", "access_key_secret": "s-tok", "sts_token": "t-tok", "region_id": "eu-central-1"},
        {"name": "loop-a", "mode": "ChainableRamRoleArn", "source_profile": "loop-b", "ram_role_arn": "acs:ram::1:role/a"},
        {"name": "loop-b", "mode": "ChainableRamRoleArn", "source_profile": "loop-a", "ram_role_arn": "acs:ram::1:role/b"},
        {"name": "chained", "mode": "ChainableRamRoleArn", "source_profile": "main", "ram_role_arn": "acs:ram::1:role/c"},
        {"name": "broken", "mode": "AK", "access_key_id": "x"}
      ]
    }"#;

    const INI: &str = "[default]\ntype = access_key\naccess_key_id = LTAIini\naccess_key_secret = s-ini\n\n[other]\ntype = access_key\naccess_key_id = LTAIother\naccess_key_secret = s-other\n";

    struct Setup {
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new(config: Option<&str>, ini: Option<&str>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            if let Some(c) = config {
                std::fs::write(dir.path().join("config.json"), c).unwrap();
            }
            if let Some(i) = ini {
                std::fs::write(dir.path().join("credentials"), i).unwrap();
            }
            Self { dir }
        }

        fn path(&self, f: &str) -> String {
            self.dir.path().join(f).to_str().unwrap().to_string()
        }

        /// Files point into the temp dir; metadata disabled unless `extra` says otherwise.
        fn env(&self, extra: &[(&str, &str)]) -> EnvLookup {
            let mut vars: Vec<(String, String)> = vec![
                ("ALIBABA_CLOUD_CONFIG_FILE".into(), self.path("config.json")),
                (
                    "ALIBABA_CLOUD_CREDENTIALS_FILE".into(),
                    self.path("credentials"),
                ),
                (ENV_ECS_METADATA_DISABLED.into(), "true".into()),
            ];
            for (k, v) in extra {
                vars.retain(|(kk, _)| kk != k);
                vars.push((k.to_string(), v.to_string()));
            }
            EnvLookup::from_map(vars)
        }
    }

    async fn key_of(p: &Arc<dyn CredentialsProvider>) -> String {
        p.credentials().await.unwrap().access_key_id
    }

    #[tokio::test]
    async fn env_wins_over_files() {
        let s = Setup::new(Some(CONFIG), Some(INI));
        let chain = default_chain_with(s.env(&[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s-env"),
        ]));
        assert_eq!(chain.name(), "default-chain");
        assert_eq!(key_of(&chain).await, "LTAIenv");
        assert_eq!(chain.name(), "env");
    }

    #[tokio::test]
    async fn cli_profile_then_ini() {
        let s = Setup::new(Some(CONFIG), Some(INI));
        let chain = default_chain_with(s.env(&[]));
        assert_eq!(key_of(&chain).await, "LTAImain");
        assert_eq!(chain.name(), "profile:main");

        let chain = default_chain_with(s.env(&[("ALIBABA_CLOUD_PROFILE", "tok")]));
        let c = chain.credentials().await.unwrap();
        assert_eq!(c.security_token.as_deref(), Some("t-tok"));

        // A profile name that only the INI file knows: the CLI config is skipped.
        let chain = default_chain_with(s.env(&[("ALIBABA_CLOUD_PROFILE", "other")]));
        assert_eq!(key_of(&chain).await, "LTAIother");
        assert_eq!(chain.name(), "ini:other");

        let chain = default_chain_with(s.env(&[(ENV_CLI_PROFILE_DISABLED, "true")]));
        assert_eq!(key_of(&chain).await, "LTAIini");
        let chain = default_chain_with(s.env(&[("ALIBABA_CLOUD_IGNORE_PROFILE", "TRUE")]));
        assert_eq!(key_of(&chain).await, "LTAIini");

        let s = Setup::new(None, Some(INI));
        let chain = default_chain_with(s.env(&[]));
        assert_eq!(key_of(&chain).await, "LTAIini");
    }

    #[tokio::test]
    async fn nothing_found_lists_what_was_tried() {
        let s = Setup::new(None, None);
        let chain = default_chain_with(s.env(&[(ENV_CREDENTIALS_URI, "http://x")]));
        let err = chain.credentials().await.unwrap_err();
        assert!(matches!(err, CredentialsError::NotFound { .. }), "{err}");
        let msg = err.to_string();
        for want in [
            "env:",
            "oidc:",
            "cli profile:",
            "config.json not found",
            "ini:",
            "imds: disabled",
            "ALIBABA_CLOUD_CREDENTIALS_URI is set but not supported",
        ] {
            assert!(msg.contains(want), "{want}: {msg}");
        }
    }

    #[tokio::test]
    async fn unreachable_metadata_is_skipped_quickly() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let s = Setup::new(None, None);
        let url = format!("http://{addr}");
        let chain = default_chain_with(s.env(&[
            (ENV_ECS_METADATA_DISABLED, "false"),
            ("OSSRELAY_IMDS_ENDPOINT", url.as_str()),
        ]));
        let started = std::time::Instant::now();
        let msg = chain.credentials().await.unwrap_err().to_string();
        assert!(
            msg.contains("imds:") && msg.contains("unreachable"),
            "{msg}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }

    #[tokio::test]
    async fn broken_sources_stop_the_chain() {
        let s = Setup::new(Some(CONFIG), Some(INI));
        let chain = default_chain_with(s.env(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIhalf")]));
        let msg = chain.credentials().await.unwrap_err().to_string();
        assert!(
            msg.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"),
            "{msg}"
        );

        let chain = default_chain_with(s.env(&[("ALIBABA_CLOUD_PROFILE", "broken")]));
        let msg = chain.credentials().await.unwrap_err().to_string();
        assert!(msg.contains("missing: access_key_secret"), "{msg}");

        let s = Setup::new(Some("{ not json"), Some(INI));
        let msg = default_chain_with(s.env(&[]))
            .credentials()
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("malformed JSON at line 1"), "{msg}");
    }

    #[tokio::test]
    async fn half_set_oidc_stops_the_chain_before_the_files() {
        // A profile exists, but a half-configured pod must not silently run as someone else.
        let s = Setup::new(Some(CONFIG), Some(INI));
        let chain = default_chain_with(s.env(&[(
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            "/var/run/secrets/tokens/oidc-token",
        )]));
        let msg = chain.credentials().await.unwrap_err().to_string();
        assert!(msg.contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"), "{msg}");
        // The environment pair still wins over OIDC, as in the SDKs.
        let chain = default_chain_with(s.env(&[
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "/nonexistent"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIenv"),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s-env"),
        ]));
        assert_eq!(key_of(&chain).await, "LTAIenv");
        // ALIBABA_CLOUD_ROLE_ARN alone (AssumeRole's default) does not mean OIDC.
        let chain = default_chain_with(s.env(&[("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/x")]));
        assert_eq!(key_of(&chain).await, "LTAImain");
    }

    #[tokio::test]
    async fn explicit_profile() {
        let s = Setup::new(Some(CONFIG), Some(INI));
        let env = s.env(&[]);
        assert_eq!(
            key_of(&from_profile_with("tok", &env).unwrap()).await,
            "STS.tok"
        );
        assert_eq!(
            key_of(&from_profile_with("other", &env).unwrap()).await,
            "LTAIother"
        );
        // Role chaining builds without network access; its base is the source profile.
        let chained = from_profile_with("chained", &env).unwrap();
        assert_eq!(chained.name(), "sts");

        let err = from_profile_with("nope", &env).unwrap_err();
        assert!(matches!(err, CredentialsError::UnknownProfile { .. }));
        let msg = err.to_string();
        assert!(msg.contains("main, tok"), "{msg}");
        assert!(msg.contains("[default], [other]"), "{msg}");

        let msg = from_profile_with("loop-a", &env).unwrap_err().to_string();
        assert!(
            msg.contains("source_profile loop: loop-a -> loop-b -> loop-a"),
            "{msg}"
        );

        let empty = Setup::new(None, None);
        let msg = from_profile_with("x", &empty.env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("(missing)") && msg.contains("available: none"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn resolve_gives_provider_and_region() {
        let s = Setup::new(Some(CONFIG), Some(INI));
        let (p, region) = resolve_with(Some("tok"), s.env(&[])).unwrap();
        assert_eq!(key_of(&p).await, "STS.tok");
        assert_eq!(region.as_deref(), Some("eu-central-1"));
        let (p, region) = resolve_with(None, s.env(&[])).unwrap();
        assert_eq!(key_of(&p).await, "LTAImain");
        assert_eq!(region.as_deref(), Some("cn-hangzhou"));
        let (_, region) = resolve_with(Some("other"), s.env(&[])).unwrap();
        assert_eq!(region, None);
        assert!(resolve_with(Some("nope"), s.env(&[])).is_err());
        assert!(Path::new(&s.path("config.json")).exists());
    }
}
