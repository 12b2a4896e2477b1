//! The aliyun CLI configuration file (`~/.aliyun/config.json`) and its profiles.
//!
//! Operators already have profiles there from `aliyun configure`; reading the same file lets
//! ossrelay reuse them (and their `region_id`) without a second configuration.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::sts::AssumeRoleSpec;
use super::{Credentials, CredentialsError, EnvLookup};

/// Overrides the path of the CLI config file.
pub const ENV_CONFIG_FILE: &str = "ALIBABA_CLOUD_CONFIG_FILE";
/// Profile name (CLI config and INI section).
pub const ENV_PROFILE: &str = "ALIBABA_CLOUD_PROFILE";
/// Profile name honoured by the aliyun CLI.
pub const ENV_PROFILE_CLI: &str = "ALIBABACLOUD_PROFILE";
/// Older profile name variable honoured by the aliyun CLI.
pub const ENV_PROFILE_LEGACY: &str = "ALICLOUD_PROFILE";
/// `true` skips the CLI config in the default chain.
pub const ENV_CLI_PROFILE_DISABLED: &str = "ALIBABA_CLOUD_CLI_PROFILE_DISABLED";
/// `TRUE` makes the aliyun CLI ignore its profiles; the default chain does the same.
pub const ENV_IGNORE_PROFILE: &str = "ALIBABA_CLOUD_IGNORE_PROFILE";

/// Whether the default chain should skip the CLI config (either switch set).
pub fn cli_profile_disabled(env: &EnvLookup) -> bool {
    env.flag(ENV_CLI_PROFILE_DISABLED) || env.flag(ENV_IGNORE_PROFILE)
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub current: String,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub meta_path: String,
}

/// One profile, with every field the CLI and credentials-go read. `Debug` redacts secrets.
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct Profile {
    pub name: String,
    pub mode: String,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub sts_token: String,
    pub sts_region: String,
    pub sts_endpoint: String,
    pub ram_role_name: String,
    pub ram_role_arn: String,
    pub ram_session_name: String,
    pub external_id: String,
    pub source_profile: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub expired_seconds: u64,
    pub region_id: String,
    pub output_format: String,
    pub language: String,
    pub site: String,
    #[serde(deserialize_with = "lenient_u64")]
    pub read_timeout: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub connect_timeout: u64,
    #[serde(deserialize_with = "lenient_u64")]
    pub retry_count: u64,
    pub endpoint_type: String,
    pub policy: String,
    #[serde(deserialize_with = "lenient_bool")]
    pub enable_vpc: bool,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &String| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &redact(&self.access_key_secret))
            .field("sts_token", &redact(&self.sts_token))
            .field("ram_role_arn", &self.ram_role_arn)
            .field("ram_role_name", &self.ram_role_name)
            .field("source_profile", &self.source_profile)
            .field("region_id", &self.region_id)
            .finish_non_exhaustive()
    }
}

/// The CLI writes numbers, but hand-edited files sometimes quote them; accept both.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(0),
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| {
            serde::de::Error::custom(format!("expected a non-negative integer, got {n}"))
        }),
        serde_json::Value::String(s) if s.trim().is_empty() => Ok(0),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got {s:?}"))),
        other => Err(serde::de::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(false),
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::String(s) => Ok(s.trim().eq_ignore_ascii_case("true")),
        other => Err(serde::de::Error::custom(format!(
            "expected true or false, got {other}"
        ))),
    }
}

/// What a profile's mode asks for, validated. Building live providers from it is
/// [`crate::credentials::chain`]'s job, since some modes need network providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileCredentials {
    /// `AK` and `StsToken`: usable as they are.
    Static(Credentials),
    /// `RamRoleArn`: AssumeRole with an AccessKey pair.
    RamRoleArn {
        base: Credentials,
        role: AssumeRoleSpec,
    },
    /// `EcsRamRole`: the instance metadata service; `None` = discover the role name.
    EcsRamRole { role_name: Option<String> },
    /// `ChainableRamRoleArn`: AssumeRole with the credentials of another profile.
    ChainableRamRoleArn {
        source_profile: String,
        role: AssumeRoleSpec,
    },
}

/// A loaded config file and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct ProfileFile {
    pub path: PathBuf,
    pub config: ConfigFile,
}

impl ProfileFile {
    /// `ALIBABA_CLOUD_CONFIG_FILE`, else `~/.aliyun/config.json`.
    pub fn default_path(env: &EnvLookup) -> Option<PathBuf> {
        env.get(ENV_CONFIG_FILE).map(PathBuf::from).or_else(|| {
            env.home_dir()
                .map(|h| h.join(".aliyun").join("config.json"))
        })
    }

    /// Reads and parses `path`. A missing file is an `Invalid` error saying so.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|e| CredentialsError::Invalid {
            source_name: path.display().to_string(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("file not found; run `aliyun configure` or set {ENV_CONFIG_FILE}")
            } else {
                format!("cannot read the file: {e}")
            },
        })?;
        Self::parse(&text, path)
    }

    /// Loads the default file; `Ok(None)` when it does not exist.
    pub fn load_default(env: &EnvLookup) -> Result<Option<Self>, CredentialsError> {
        match Self::default_path(env) {
            Some(p) if p.exists() => Self::load(&p).map(Some),
            _ => Ok(None),
        }
    }

    /// Parses the JSON text; errors carry the line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CredentialsError> {
        let config: ConfigFile =
            serde_json::from_str(text).map_err(|e| CredentialsError::Invalid {
                source_name: path.display().to_string(),
                reason: format!(
                    "malformed JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e.to_string())
                ),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// The profile to use: `explicit`, else `ALIBABA_CLOUD_PROFILE` (or the CLI's
    /// `ALIBABACLOUD_PROFILE` / `ALICLOUD_PROFILE`), else the file's `current`, else `default`.
    pub fn select_name(&self, explicit: Option<&str>, env: &EnvLookup) -> String {
        explicit
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| env_profile_name(env))
            .or_else(|| Some(self.config.current.clone()).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "default".to_string())
    }

    /// Names of all profiles, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.config
            .profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The profile called `name`, or `UnknownProfile` listing the available names.
    pub fn profile(&self, name: &str) -> Result<&Profile, CredentialsError> {
        self.config
            .profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| CredentialsError::UnknownProfile {
                profile: name.to_string(),
                path: self.path.display().to_string(),
                available: join_names(self.names()),
            })
    }

    /// Validates the profile's mode and fields.
    pub fn credentials_for(&self, name: &str) -> Result<ProfileCredentials, CredentialsError> {
        let profile = self.profile(name)?;
        profile_credentials(profile, &self.path)
    }
}

/// The profile name from the environment, if any.
pub(crate) fn env_profile_name(env: &EnvLookup) -> Option<String> {
    env.get(ENV_PROFILE)
        .or_else(|| env.get(ENV_PROFILE_CLI))
        .or_else(|| env.get(ENV_PROFILE_LEGACY))
}

pub(crate) fn join_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.into_iter().collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// serde_json appends " at line X column Y"; we already say where, so drop the duplicate.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

/// The region of the selected profile (the CLI's default region), if the file and field exist.
///
/// `profile` = an explicit name; `None` follows the same selection as the default chain
/// (and returns `None` when `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true` or
/// `ALIBABA_CLOUD_IGNORE_PROFILE=TRUE`).
pub fn profile_region(profile: Option<&str>, env: &EnvLookup) -> Option<String> {
    if profile.is_none() && cli_profile_disabled(env) {
        return None;
    }
    let file = ProfileFile::load_default(env).ok()??;
    let name = file.select_name(profile, env);
    let region = file.profile(&name).ok()?.region_id.trim().to_string();
    Some(region).filter(|r| !r.is_empty())
}

/// Validates one profile against the needs of its mode.
pub fn profile_credentials(
    profile: &Profile,
    path: &Path,
) -> Result<ProfileCredentials, CredentialsError> {
    let invalid = |reason: String| CredentialsError::Invalid {
        source_name: format!("profile {:?} in {}", profile.name, path.display()),
        reason,
    };
    let require = |mode: &str, fields: &[(&str, &str)]| -> Result<(), CredentialsError> {
        let missing: Vec<&str> = fields
            .iter()
            .filter(|(_, v)| v.trim().is_empty())
            .map(|(k, _)| *k)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!(
                "mode {mode} requires {}; missing: {}",
                fields
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", "),
                missing.join(", ")
            )))
        }
    };
    let ak = || {
        Credentials::new(
            profile.access_key_id.trim(),
            profile.access_key_secret.trim(),
        )
    };
    let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let role = || AssumeRoleSpec {
        role_arn: profile.ram_role_arn.trim().to_string(),
        session_name: opt(&profile.ram_session_name),
        duration_seconds: Some(profile.expired_seconds).filter(|s| *s > 0),
        external_id: opt(&profile.external_id),
        policy: opt(&profile.policy),
        sts_region: opt(&profile.sts_region),
        sts_endpoint: opt(&profile.sts_endpoint),
        enable_vpc: profile.enable_vpc || profile.endpoint_type.eq_ignore_ascii_case("vpc"),
    };
    let key_id = ("access_key_id", profile.access_key_id.as_str());
    let key_secret = ("access_key_secret", profile.access_key_secret.as_str());
    let mode = profile.mode.trim();
    match mode.to_ascii_lowercase().as_str() {
        "ak" => {
            require("AK", &[key_id, key_secret])?;
            Ok(ProfileCredentials::Static(ak()))
        }
        "ststoken" => {
            require(
                "StsToken",
                &[key_id, key_secret, ("sts_token", profile.sts_token.as_str())],
            )?;
            let mut c = ak();
            c.security_token = Some(profile.sts_token.trim().to_string());
            Ok(ProfileCredentials::Static(c))
        }
        "ramrolearn" => {
            require(
                "RamRoleArn",
                &[key_id, key_secret, ("ram_role_arn", profile.ram_role_arn.as_str())],
            )?;
            Ok(ProfileCredentials::RamRoleArn {
                base: ak(),
                role: role(),
            })
        }
        "ecsramrole" => Ok(ProfileCredentials::EcsRamRole {
            role_name: opt(&profile.ram_role_name),
        }),
        "chainablerolearn" | "chainableramrolearn" => {
            require(
                "ChainableRamRoleArn",
                &[
                    ("source_profile", profile.source_profile.as_str()),
                    ("ram_role_arn", profile.ram_role_arn.as_str()),
                ],
            )?;
            Ok(ProfileCredentials::ChainableRamRoleArn {
                source_profile: profile.source_profile.trim().to_string(),
                role: role(),
            })
        }
        "" => Err(invalid(
            "no mode set; run `aliyun configure --profile NAME` or set \"mode\" (AK, StsToken, RamRoleArn, EcsRamRole or ChainableRamRoleArn)".into(),
        )),
        _ => Err(invalid(format!(
            "mode {mode} is not supported by ossrelay; use AK, StsToken, RamRoleArn, EcsRamRole or ChainableRamRoleArn"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "current": "default",
      "profiles": [
        {"name": "default", "mode": "AK", "access_key_id": "LTAIdefault", "access_key_secret": "secret-default", "region_id": "cn-hangzhou", "output_format": "json", "language": "en"},
        {"name": "sts", "mode": "StsToken", "access_key_id": "STS.tmp", "access_key_secret": "secret-sts", "sts_token": "token-sts", "region_id": "cn-shanghai"},
        {"name": "dest", "mode": "RamRoleArn", "access_key_id": "LTAIdest", "access_key_secret": "secret-dest", "ram_role_arn": "acs:ram::1234567890123456:role/image-migrator", "ram_session_name": "migrate", "expired_seconds": 1800, "sts_region": "cn-hangzhou", "external_id": "ext-1", "region_id": "eu-central-1", "policy": "{}", "enable_vpc": true},
        {"name": "ecs", "mode": "EcsRamRole", "ram_role_name": "MyInstanceRole", "region_id": "cn-hangzhou"},
        {"name": "ecs-discover", "mode": "ecsramrole"},
        {"name": "chain", "mode": "ChainableRamRoleArn", "source_profile": "default", "ram_role_arn": "acs:ram::999:role/x", "ram_session_name": "x", "expired_seconds": "900", "sts_endpoint": "sts.example.test"},
        {"name": "quoted", "mode": "ak", "access_key_id": "LTAIq", "access_key_secret": "sq", "read_timeout": "10", "connect_timeout": 5, "retry_count": null, "enable_vpc": "false"},
        {"name": "oidc", "mode": "OIDC"},
        {"name": "nomode", "access_key_id": "a", "access_key_secret": "b"},
        {"name": "ak-missing", "mode": "AK", "access_key_id": "LTAIx"},
        {"name": "sts-missing", "mode": "StsToken", "access_key_id": "STS.x", "access_key_secret": "y"},
        {"name": "rra-missing", "mode": "RamRoleArn"},
        {"name": "chain-missing", "mode": "ChainableRamRoleArn", "ram_role_arn": "acs:ram::1:role/r"}
      ],
      "meta_path": ""
    }"#;

    fn file() -> ProfileFile {
        ProfileFile::parse(SAMPLE, Path::new("/cfg/config.json")).unwrap()
    }

    fn no_env() -> EnvLookup {
        EnvLookup::from_map(Vec::<(String, String)>::new())
    }

    #[test]
    fn parses_all_fields() {
        let f = file();
        assert_eq!(f.config.current, "default");
        assert_eq!(f.config.profiles.len(), 13);
        let d = f.profile("dest").unwrap();
        assert_eq!(d.expired_seconds, 1800);
        assert!(d.enable_vpc);
        assert_eq!(d.region_id, "eu-central-1");
        let q = f.profile("quoted").unwrap();
        assert_eq!(
            (q.read_timeout, q.connect_timeout, q.retry_count),
            (10, 5, 0)
        );
        assert!(!q.enable_vpc);
        let c = f.profile("chain").unwrap();
        assert_eq!(c.expired_seconds, 900);
    }

    #[test]
    fn ak_and_sts_token_modes_give_credentials() {
        let f = file();
        assert_eq!(
            f.credentials_for("default").unwrap(),
            ProfileCredentials::Static(Credentials::new("LTAIdefault", "secret-default"))
        );
        let ProfileCredentials::Static(c) = f.credentials_for("sts").unwrap() else {
            panic!("static expected")
        };
        assert_eq!(c.access_key_id, "STS.tmp");
        assert_eq!(c.security_token.as_deref(), Some("token-sts"));
        // Mode matching is case-insensitive, as in the CLI.
        assert!(matches!(
            f.credentials_for("quoted").unwrap(),
            ProfileCredentials::Static(_)
        ));
    }

    #[test]
    fn role_modes_are_described() {
        let f = file();
        match f.credentials_for("dest").unwrap() {
            ProfileCredentials::RamRoleArn { base, role } => {
                assert_eq!(base.access_key_id, "LTAIdest");
                assert_eq!(
                    role.role_arn,
                    "acs:ram::1234567890123456:role/image-migrator"
                );
                assert_eq!(role.session_name.as_deref(), Some("migrate"));
                assert_eq!(role.duration_seconds, Some(1800));
                assert_eq!(role.external_id.as_deref(), Some("ext-1"));
                assert_eq!(role.sts_region.as_deref(), Some("cn-hangzhou"));
                assert_eq!(role.policy.as_deref(), Some("{}"));
                assert!(role.enable_vpc);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            f.credentials_for("ecs").unwrap(),
            ProfileCredentials::EcsRamRole {
                role_name: Some("MyInstanceRole".into())
            }
        );
        assert_eq!(
            f.credentials_for("ecs-discover").unwrap(),
            ProfileCredentials::EcsRamRole { role_name: None }
        );
        match f.credentials_for("chain").unwrap() {
            ProfileCredentials::ChainableRamRoleArn {
                source_profile,
                role,
            } => {
                assert_eq!(source_profile, "default");
                assert_eq!(role.duration_seconds, Some(900));
                assert_eq!(role.sts_endpoint.as_deref(), Some("sts.example.test"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let f = file();
        let cases = [
            ("ak-missing", "missing: access_key_secret"),
            ("sts-missing", "missing: sts_token"),
            (
                "rra-missing",
                "missing: access_key_id, access_key_secret, ram_role_arn",
            ),
            ("chain-missing", "missing: source_profile"),
            ("nomode", "no mode set"),
            ("oidc", "mode OIDC is not supported"),
        ];
        for (name, want) in cases {
            let err = f.credentials_for(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(err.contains(&format!("profile {name:?}")), "{err}");
            assert!(err.contains("/cfg/config.json"), "{err}");
        }
    }

    #[test]
    fn unknown_profile_lists_available_names() {
        let err = file().profile("nope").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CredentialsError::UnknownProfile { .. }));
        assert!(msg.contains("\"nope\""), "{msg}");
        assert!(msg.contains("default, sts, dest, ecs"), "{msg}");

        let empty = ProfileFile::parse("{}", Path::new("x.json")).unwrap();
        assert!(empty
            .profile("a")
            .unwrap_err()
            .to_string()
            .contains("available: none"));
    }

    #[test]
    fn malformed_json_says_where() {
        let text = "{\n  \"current\": \"default\",\n  \"profiles\": [ {\"name\": } ]\n}";
        let err = ProfileFile::parse(text, Path::new("/x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/x/config.json"), "{err}");
        assert!(err.contains("malformed JSON at line 3 column"), "{err}");

        let err = ProfileFile::parse(
            r#"{"profiles":[{"name":"a","expired_seconds":"soon"}]}"#,
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("expected an integer"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let err = ProfileFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("file not found"), "{err}");
        assert!(err.contains("aliyun configure"), "{err}");
        let env = EnvLookup::from_map([(ENV_CONFIG_FILE, path.to_str().unwrap())]);
        assert!(ProfileFile::load_default(&env).unwrap().is_none());
    }

    #[test]
    fn selection_order() {
        let f = file();
        assert_eq!(f.select_name(None, &no_env()), "default");
        assert_eq!(f.select_name(Some("sts"), &no_env()), "sts");
        let env = EnvLookup::from_map([(ENV_PROFILE_LEGACY, "ecs"), (ENV_PROFILE_CLI, "dest")]);
        assert_eq!(f.select_name(None, &env), "dest");
        assert_eq!(f.select_name(Some("sts"), &env), "sts");
        let env = EnvLookup::from_map([(ENV_PROFILE, "chain"), (ENV_PROFILE_CLI, "dest")]);
        assert_eq!(f.select_name(None, &env), "chain");
        let nocurrent = ProfileFile::parse(r#"{"profiles":[]}"#, Path::new("c")).unwrap();
        assert_eq!(nocurrent.select_name(None, &no_env()), "default");
    }

    #[test]
    fn region_from_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, SAMPLE).unwrap();
        let p = path.to_str().unwrap();
        let env = EnvLookup::from_map([(ENV_CONFIG_FILE, p)]);
        assert_eq!(profile_region(None, &env).as_deref(), Some("cn-hangzhou"));
        assert_eq!(
            profile_region(Some("dest"), &env).as_deref(),
            Some("eu-central-1")
        );
        assert_eq!(profile_region(Some("chain"), &env), None);
        assert_eq!(profile_region(Some("nope"), &env), None);
        let env = EnvLookup::from_map([(ENV_CONFIG_FILE, p), (ENV_PROFILE, "sts")]);
        assert_eq!(profile_region(None, &env).as_deref(), Some("cn-shanghai"));
        let env = EnvLookup::from_map([(ENV_CONFIG_FILE, p), (ENV_CLI_PROFILE_DISABLED, "TRUE")]);
        assert_eq!(profile_region(None, &env), None);
        let env2 = EnvLookup::from_map([(ENV_CONFIG_FILE, p), (ENV_IGNORE_PROFILE, "TRUE")]);
        assert_eq!(profile_region(None, &env2), None);
        assert_eq!(
            profile_region(Some("dest"), &env).as_deref(),
            Some("eu-central-1")
        );

        // Default path: $HOME/.aliyun/config.json
        std::fs::create_dir_all(dir.path().join(".aliyun")).unwrap();
        std::fs::write(dir.path().join(".aliyun/config.json"), SAMPLE).unwrap();
        let env = EnvLookup::from_map([("HOME", dir.path().to_str().unwrap())]);
        assert_eq!(
            profile_region(Some("sts"), &env).as_deref(),
            Some("cn-shanghai")
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let f = file();
        let dbg = format!("{:?} {:?}", f, f.credentials_for("dest").unwrap());
        assert!(dbg.contains("LTAIdefault"));
        for secret in ["secret-default", "secret-sts", "token-sts", "secret-dest"] {
            assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
        }
    }
}
