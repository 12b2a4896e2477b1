//! The AWS shared files, `~/.aws/config` and `~/.aws/credentials`, read the way the AWS CLI,
//! botocore and aws-config read them.
//!
//! Guarantees callers can rely on:
//! * Paths come from `AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/config` /
//!   `~/.aws/credentials`; a missing file is simply absent, an unreadable or malformed one is an
//!   error naming the file and line.
//! * Config sections are `[default]` and `[profile NAME]`; other sections (`[sso-session x]`,
//!   `[services x]`, a bare `[x]`) are not profiles. Credentials sections are `[NAME]`. A profile
//!   exists when either file has it; per key, the credentials file wins (as in both SDKs).
//! * Keys are case-insensitive; indented sub-properties (`s3 =` followed by indented lines) are
//!   kept as `s3.key` so they never leak into the profile itself.
//! * [`AwsProfiles::plan`] turns a profile into a [`CredentialPlan`] without any network access,
//!   so every configuration error surfaces before the first request: unknown profiles list the
//!   available ones, `source_profile` cycles show the loop, and features ossrelay does not
//!   implement (`mfa_serial`, `credential_process`, `sso_*`) are named with what to use instead
//!   rather than silently ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::credentials::ini::IniFile;
use crate::credentials::{Credentials, CredentialsError, EnvLookup};

/// Overrides the path of `~/.aws/config`.
pub const ENV_CONFIG_FILE: &str = "AWS_CONFIG_FILE";
/// Overrides the path of `~/.aws/credentials`.
pub const ENV_SHARED_CREDENTIALS_FILE: &str = "AWS_SHARED_CREDENTIALS_FILE";
/// The profile to use when none is given.
pub const ENV_PROFILE: &str = "AWS_PROFILE";
/// Older name of [`ENV_PROFILE`], still honoured by the AWS CLI.
pub const ENV_DEFAULT_PROFILE: &str = "AWS_DEFAULT_PROFILE";

/// STS accepts 900 s up to 12 h (and at most the role's maximum session duration).
pub const DURATION_RANGE: std::ops::RangeInclusive<u32> = 900..=43200;

/// One profile's properties, merged from both files. `Debug` redacts secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AwsProfile {
    pub name: String,
    props: BTreeMap<String, String>,
}

impl AwsProfile {
    /// The value of `key` (lower case), if set and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.props.keys().map(String::as_str)
    }
}

impl fmt::Debug for AwsProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.props {
            if k.contains("secret") || (k.contains("token") && !k.ends_with("_file")) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// Both files, merged into profiles.
#[derive(Debug, Clone, Default)]
pub struct AwsProfiles {
    profiles: BTreeMap<String, AwsProfile>,
    /// Each file looked at, with `(missing)` when it did not exist (for error messages).
    searched: Vec<String>,
}

/// How one profile gets its credentials. Building it touches no network; [`super::chain`]
/// turns it into live providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialPlan {
    /// Keys written in the profile.
    Static {
        profile: String,
        credentials: Credentials,
    },
    /// `credential_source = Environment`: the `AWS_ACCESS_KEY_ID` family.
    Environment,
    /// `credential_source = Ec2InstanceMetadata`: the instance role.
    InstanceMetadata,
    /// `role_arn` + `web_identity_token_file`.
    WebIdentity(WebIdentitySpec),
    /// `role_arn` with `source_profile` or `credential_source`.
    AssumeRole {
        base: Box<CredentialPlan>,
        role: RoleSpec,
    },
}

/// What to assume with AssumeRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleSpec {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub session_name: Option<String>,
    pub duration_seconds: Option<u32>,
    /// The profile's `region`, a fallback for the STS endpoint region.
    pub region: Option<String>,
    /// Where it was configured (`profile NAME`), for messages.
    pub origin: String,
}

/// What to assume with AssumeRoleWithWebIdentity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebIdentitySpec {
    pub role_arn: String,
    /// Re-read on every call: the platform (EKS, GKE, GitHub Actions) rotates it.
    pub token_file: PathBuf,
    pub session_name: Option<String>,
    pub duration_seconds: Option<u32>,
    pub region: Option<String>,
    /// `environment` or `profile NAME`, for messages.
    pub origin: String,
}

/// `~/.aws/config`, or `AWS_CONFIG_FILE`.
pub fn config_path(env: &EnvLookup) -> Option<PathBuf> {
    env.get(ENV_CONFIG_FILE)
        .map(PathBuf::from)
        .or_else(|| env.home_dir().map(|h| h.join(".aws").join("config")))
}

/// `~/.aws/credentials`, or `AWS_SHARED_CREDENTIALS_FILE`.
pub fn credentials_path(env: &EnvLookup) -> Option<PathBuf> {
    env.get(ENV_SHARED_CREDENTIALS_FILE)
        .map(PathBuf::from)
        .or_else(|| env.home_dir().map(|h| h.join(".aws").join("credentials")))
}

/// The profile to use: `explicit` (`--src-profile`), else `AWS_PROFILE`, else
/// `AWS_DEFAULT_PROFILE`, else `default`. The flag says whether it was chosen by the user
/// (then it must exist) rather than defaulted.
pub fn profile_name(explicit: Option<&str>, env: &EnvLookup) -> (String, bool) {
    explicit
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| env.get(ENV_PROFILE))
        .or_else(|| env.get(ENV_DEFAULT_PROFILE))
        .map_or_else(|| ("default".to_string(), false), |n| (n, true))
}

impl AwsProfiles {
    /// Reads both files (either may be missing).
    pub fn load(env: &EnvLookup) -> Result<Self, CredentialsError> {
        let read = |p: Option<PathBuf>| -> Result<Option<(String, PathBuf)>, CredentialsError> {
            let Some(p) = p else { return Ok(None) };
            match std::fs::read_to_string(&p) {
                Ok(t) => Ok(Some((t, p))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CredentialsError::Invalid {
                    source_name: p.display().to_string(),
                    reason: format!("cannot read the file: {e}"),
                }),
            }
        };
        let (cp, kp) = (config_path(env), credentials_path(env));
        let config = read(cp.clone())?;
        let creds = read(kp.clone())?;
        let mut me = Self::parse(
            config.as_ref().map(|(t, p)| (t.as_str(), p.as_path())),
            creds.as_ref().map(|(t, p)| (t.as_str(), p.as_path())),
        )?;
        me.searched = [(cp, config.is_some()), (kp, creds.is_some())]
            .into_iter()
            .map(|(p, found)| match p {
                Some(p) if found => p.display().to_string(),
                Some(p) => format!("{} (missing)", p.display()),
                None => "(no home directory)".into(),
            })
            .collect();
        Ok(me)
    }

    /// Parses the texts of the config and credentials files.
    pub fn parse(
        config: Option<(&str, &Path)>,
        credentials: Option<(&str, &Path)>,
    ) -> Result<Self, CredentialsError> {
        let mut profiles: BTreeMap<String, AwsProfile> = BTreeMap::new();
        let mut searched = Vec::new();
        if let Some((text, path)) = config {
            searched.push(path.display().to_string());
            let ini = IniFile::parse(&fold_sub_properties(text), path)?;
            // `[profile default]` is applied after `[default]`, so it wins when both exist.
            let mut sections: Vec<(bool, String, &crate::credentials::ini::IniSection)> =
                Vec::new();
            for s in &ini.sections {
                let mut words = s.name.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("default"), None, _) => sections.push((false, "default".into(), s)),
                    (Some("profile"), Some(n), None) => sections.push((true, n.to_string(), s)),
                    _ => {
                        tracing::debug!(path = %path.display(), section = %s.name, "config section is not a profile; ignored")
                    }
                }
            }
            sections.sort_by_key(|(prefixed, _, _)| *prefixed);
            for (_, name, s) in sections {
                merge(&mut profiles, &name, s);
            }
        }
        if let Some((text, path)) = credentials {
            searched.push(path.display().to_string());
            let ini = IniFile::parse(&fold_sub_properties(text), path)?;
            for s in &ini.sections {
                merge(&mut profiles, s.name.trim(), s);
            }
        }
        Ok(Self { profiles, searched })
    }

    /// Profile names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    /// The profile called `name`, if either file has it.
    pub fn get(&self, name: &str) -> Option<&AwsProfile> {
        self.profiles.get(name)
    }

    /// The profile called `name`, or an error listing the profiles that exist.
    pub fn profile(&self, name: &str) -> Result<&AwsProfile, CredentialsError> {
        self.get(name)
            .ok_or_else(|| CredentialsError::UnknownProfile {
                profile: name.to_string(),
                path: self.searched(),
                available: if self.profiles.is_empty() {
                    "none; create one with `aws configure --profile NAME`".into()
                } else {
                    self.names().join(", ")
                },
            })
    }

    /// The files looked at, for messages.
    pub fn searched(&self) -> String {
        if self.searched.is_empty() {
            "the AWS config and credentials files".into()
        } else {
            self.searched.join(" and ")
        }
    }

    /// How profile `name` gets its credentials; `Ok(None)` when the profile exists but
    /// configures none (e.g. only `region`, common on EC2 where the instance role supplies them).
    pub fn plan(&self, name: &str) -> Result<Option<CredentialPlan>, CredentialsError> {
        self.plan_inner(name, &mut Vec::new())
    }

    fn plan_inner(
        &self,
        name: &str,
        chain: &mut Vec<String>,
    ) -> Result<Option<CredentialPlan>, CredentialsError> {
        let p = self.profile(name)?;
        chain.push(name.to_string());
        let invalid = |reason: String| CredentialsError::Invalid {
            source_name: format!("profile {name:?} ({})", self.searched()),
            reason,
        };
        if let Some(k) = p
            .keys()
            .find(|k| k.starts_with("sso_") && p.get(k).is_some())
        {
            return Err(invalid(format!(
                "{k} (IAM Identity Center / SSO) is not supported by ossrelay; run `aws sso login --profile {name}` and `aws configure export-credentials --profile {name} --format env`, then use the AWS_* variables it prints"
            )));
        }
        let region = p.get("region").map(str::to_string);
        let duration = match p.get("duration_seconds") {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|d| DURATION_RANGE.contains(d))
                    .ok_or_else(|| {
                        invalid(format!(
                            "duration_seconds must be 900 to 43200 seconds, got {v:?}"
                        ))
                    })?,
            ),
        };
        let static_keys = || static_credentials(p, &invalid);

        if let Some(role_arn) = p.get("role_arn") {
            let role_arn = role_arn.to_string();
            if p.get("mfa_serial").is_some() {
                return Err(invalid(format!(
                    "mfa_serial (an MFA code per AssumeRole) is not supported by ossrelay, which runs unattended for hours; run `aws configure export-credentials --profile {name} --format env` and use the AWS_* variables, or use a role that does not require MFA"
                )));
            }
            if let Some(file) = p.get("web_identity_token_file") {
                return Ok(Some(CredentialPlan::WebIdentity(WebIdentitySpec {
                    role_arn,
                    token_file: PathBuf::from(file),
                    session_name: p.get("role_session_name").map(str::to_string),
                    duration_seconds: duration,
                    region,
                    origin: format!("profile {name}"),
                })));
            }
            let base = match (p.get("source_profile"), p.get("credential_source")) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "both source_profile and credential_source are set; keep one".into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "role_arn needs source_profile (a profile with keys) or credential_source (Environment or Ec2InstanceMetadata)".into(),
                    ))
                }
                (Some(src), None) if src == name => static_keys()?.ok_or_else(|| {
                    invalid("source_profile names the profile itself, which has no aws_access_key_id / aws_secret_access_key".into())
                })?,
                (Some(src), None) => {
                    if chain.iter().any(|c| c == src) {
                        return Err(invalid(format!(
                            "source_profile loop: {} -> {src}",
                            chain.join(" -> ")
                        )));
                    }
                    if self.get(src).is_none() {
                        return Err(invalid(format!(
                            "source_profile {src:?} does not exist (available: {})",
                            self.names().join(", ")
                        )));
                    }
                    self.plan_inner(src, chain)?.ok_or_else(|| {
                        invalid(format!(
                            "source_profile {src:?} has no credentials (no keys, role_arn or web_identity_token_file)"
                        ))
                    })?
                }
                (None, Some(cs)) => match cs {
                    "Environment" => CredentialPlan::Environment,
                    "Ec2InstanceMetadata" => CredentialPlan::InstanceMetadata,
                    "EcsContainer" => return Err(invalid(
                        "credential_source EcsContainer is not supported by ossrelay; use Environment or Ec2InstanceMetadata, or a source_profile".into(),
                    )),
                    other => return Err(invalid(format!(
                        "credential_source {other:?} is unknown; use Environment or Ec2InstanceMetadata"
                    ))),
                },
            };
            return Ok(Some(CredentialPlan::AssumeRole {
                base: Box::new(base),
                role: RoleSpec {
                    role_arn,
                    external_id: p.get("external_id").map(str::to_string),
                    session_name: p.get("role_session_name").map(str::to_string),
                    duration_seconds: duration,
                    region,
                    origin: format!("profile {name}"),
                },
            }));
        }
        if p.get("web_identity_token_file").is_some() {
            return Err(invalid(
                "web_identity_token_file needs role_arn (the role to assume with the token)".into(),
            ));
        }
        if let Some(c) = static_keys()? {
            return Ok(Some(c));
        }
        if p.get("credential_process").is_some() {
            return Err(invalid(format!(
                "credential_process is not supported by ossrelay; run `aws configure export-credentials --profile {name} --format env` and use the AWS_* variables it prints, or add aws_access_key_id / aws_secret_access_key to the profile"
            )));
        }
        Ok(None)
    }
}

/// The profile's own keys: both or neither (a half-set pair is an error naming the gap).
fn static_credentials(
    p: &AwsProfile,
    invalid: &dyn Fn(String) -> CredentialsError,
) -> Result<Option<CredentialPlan>, CredentialsError> {
    match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(CredentialPlan::Static {
            profile: p.name.clone(),
            credentials: Credentials {
                access_key_id: id.to_string(),
                access_key_secret: secret.to_string(),
                security_token: p.get("aws_session_token").map(str::to_string),
                expiration: None,
            },
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "aws_access_key_id is set but aws_secret_access_key is not; set both (`aws configure`)"
                .into(),
        )),
        (None, Some(_)) => Err(invalid(
            "aws_secret_access_key is set but aws_access_key_id is not; set both (`aws configure`)"
                .into(),
        )),
    }
}

fn merge(
    profiles: &mut BTreeMap<String, AwsProfile>,
    name: &str,
    s: &crate::credentials::ini::IniSection,
) {
    let p = profiles
        .entry(name.to_string())
        .or_insert_with(|| AwsProfile {
            name: name.to_string(),
            props: BTreeMap::new(),
        });
    for (k, v) in &s.entries {
        p.props.insert(k.trim().to_ascii_lowercase(), v.clone());
    }
}

/// Rewrites AWS sub-properties for the plain INI parser: an indented `key = value` line after
/// a property with an empty value (`s3 =`) becomes `s3.key = value`, so `s3`'s settings never
/// shadow the profile's own keys. Other indented lines are continuation lines and are dropped
/// (no credential key uses them). Line numbers are kept for error messages.
fn fold_sub_properties(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut parent: Option<String> = None;
    let mut in_property = false;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            out.push_str(line);
        } else if indented && in_property {
            if let (Some(p), Some((k, v))) = (&parent, t.split_once('=')) {
                out.push_str(&format!("{p}.{} = {}", k.trim(), v.trim()));
            }
        } else {
            in_property = !t.starts_with('[');
            parent = match t.split_once('=') {
                Some((k, v)) if in_property && v.trim().is_empty() => Some(k.trim().to_string()),
                _ => None,
            };
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
[default]
region = eu-west-1
s3 =
  max_concurrent_requests = 20
  region = nowhere

[profile dev]
region = us-west-2
AWS_ACCESS_KEY_ID = AKIACONFIGDEV
aws_secret_access_key = config-secret-dev

[profile admin]
role_arn = arn:aws:iam::123456789012:role/admin
source_profile = dev
external_id = ext-123
role_session_name = relay
duration_seconds = 1800
region = eu-central-1

[profile chained]
role_arn = arn:aws:iam::210987654321:role/second
source_profile = admin

[profile envrole]
role_arn = arn:aws:iam::123456789012:role/from-env
credential_source = Environment

[profile ec2role]
role_arn = arn:aws:iam::123456789012:role/from-imds
credential_source = Ec2InstanceMetadata

[profile web]
role_arn = arn:aws:iam::123456789012:role/web
web_identity_token_file = /var/run/secrets/token
role_session_name = pod

[profile self]
role_arn = arn:aws:iam::123456789012:role/self
source_profile = self
aws_access_key_id = AKIASELF
aws_secret_access_key = self-secret

[profile loop-a]
role_arn = arn:aws:iam::1:role/a
source_profile = loop-b

[profile loop-b]
role_arn = arn:aws:iam::1:role/b
source_profile = loop-a

[profile mfa]
role_arn = arn:aws:iam::1:role/m
source_profile = dev
mfa_serial = arn:aws:iam::1:mfa/me

[profile sso]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1

[profile process]
credential_process = /usr/bin/get-creds

[profile regiononly]
region = ap-south-1

[profile bothsrc]
role_arn = arn:aws:iam::1:role/x
source_profile = dev
credential_source = Environment

[profile nosrc]
role_arn = arn:aws:iam::1:role/x

[profile badsrc]
role_arn = arn:aws:iam::1:role/x
credential_source = EcsContainer

[profile baddur]
role_arn = arn:aws:iam::1:role/x
source_profile = dev
duration_seconds = 60

[profile missingsrc]
role_arn = arn:aws:iam::1:role/x
source_profile = ghost

[profile emptysrc]
role_arn = arn:aws:iam::1:role/x
source_profile = regiononly

[sso-session corp]
sso_start_url = https://example.awsapps.com/start

[notaprofile]
aws_access_key_id = AKIANOTAPROFILE
aws_secret_access_key = nope
";

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = default-secret

[dev]
aws_access_key_id = AKIACREDSDEV
aws_secret_access_key = creds-secret-dev
aws_session_token = dev-token

[profile weird]
aws_access_key_id = AKIAWEIRD
aws_secret_access_key = weird-secret

[half]
aws_access_key_id = AKIAHALF
";

    fn profiles() -> AwsProfiles {
        AwsProfiles::parse(
            Some((CONFIG, Path::new("/h/.aws/config"))),
            Some((CREDENTIALS, Path::new("/h/.aws/credentials"))),
        )
        .unwrap()
    }

    fn stat(profile: &str, id: &str, secret: &str, token: Option<&str>) -> CredentialPlan {
        CredentialPlan::Static {
            profile: profile.into(),
            credentials: Credentials {
                security_token: token.map(str::to_string),
                ..Credentials::new(id, secret)
            },
        }
    }

    #[test]
    fn sections_profile_prefix_in_config_plain_in_credentials() {
        let p = profiles();
        // `[notaprofile]` and `[sso-session corp]` in config are not profiles; `[profile weird]`
        // in the credentials file is a profile literally called "profile weird".
        assert!(p.get("notaprofile").is_none());
        assert!(p.get("corp").is_none());
        assert!(p.get("sso-session corp").is_none());
        assert!(p.get("profile weird").is_some());
        assert!(p.get("weird").is_none());
        assert_eq!(
            p.get("regiononly").unwrap().get("region"),
            Some("ap-south-1")
        );
        // Sub-properties do not shadow the profile's region.
        let d = p.get("default").unwrap();
        assert_eq!(d.get("region"), Some("eu-west-1"));
        assert_eq!(d.get("s3.max_concurrent_requests"), Some("20"));
    }

    #[test]
    fn credentials_file_wins_per_key_and_keys_are_case_insensitive() {
        let p = profiles();
        assert_eq!(
            p.plan("dev").unwrap(),
            Some(stat(
                "dev",
                "AKIACREDSDEV",
                "creds-secret-dev",
                Some("dev-token")
            ))
        );
        // The config file's region survives the merge.
        assert_eq!(p.get("dev").unwrap().get("region"), Some("us-west-2"));
        assert_eq!(
            p.plan("default").unwrap(),
            Some(stat("default", "AKIADEFAULT", "default-secret", None))
        );
    }

    #[test]
    fn role_profiles() {
        let p = profiles();
        let admin_role = RoleSpec {
            role_arn: "arn:aws:iam::123456789012:role/admin".into(),
            external_id: Some("ext-123".into()),
            session_name: Some("relay".into()),
            duration_seconds: Some(1800),
            region: Some("eu-central-1".into()),
            origin: "profile admin".into(),
        };
        let dev = stat("dev", "AKIACREDSDEV", "creds-secret-dev", Some("dev-token"));
        let admin = CredentialPlan::AssumeRole {
            base: Box::new(dev),
            role: admin_role,
        };
        assert_eq!(p.plan("admin").unwrap(), Some(admin.clone()));
        match p.plan("chained").unwrap().unwrap() {
            CredentialPlan::AssumeRole { base, role } => {
                assert_eq!(*base, admin);
                assert_eq!(role.role_arn, "arn:aws:iam::210987654321:role/second");
                assert_eq!(role.duration_seconds, None);
            }
            other => panic!("{other:?}"),
        }
        match p.plan("envrole").unwrap().unwrap() {
            CredentialPlan::AssumeRole { base, .. } => {
                assert_eq!(*base, CredentialPlan::Environment)
            }
            other => panic!("{other:?}"),
        }
        match p.plan("ec2role").unwrap().unwrap() {
            CredentialPlan::AssumeRole { base, .. } => {
                assert_eq!(*base, CredentialPlan::InstanceMetadata)
            }
            other => panic!("{other:?}"),
        }
        match p.plan("self").unwrap().unwrap() {
            CredentialPlan::AssumeRole { base, role } => {
                assert_eq!(*base, stat("self", "AKIASELF", "self-secret", None));
                assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/self");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.plan("web").unwrap(),
            Some(CredentialPlan::WebIdentity(WebIdentitySpec {
                role_arn: "arn:aws:iam::123456789012:role/web".into(),
                token_file: "/var/run/secrets/token".into(),
                session_name: Some("pod".into()),
                duration_seconds: None,
                region: None,
                origin: "profile web".into(),
            }))
        );
        assert_eq!(p.plan("regiononly").unwrap(), None);
    }

    #[test]
    fn errors_are_one_line_and_actionable() {
        let p = profiles();
        let cases = [
            ("loop-a", "source_profile loop: loop-a -> loop-b -> loop-a"),
            ("mfa", "mfa_serial"),
            (
                "sso",
                "sso_region (IAM Identity Center / SSO) is not supported",
            ),
            ("process", "credential_process is not supported"),
            ("bothsrc", "both source_profile and credential_source"),
            ("nosrc", "role_arn needs source_profile"),
            ("badsrc", "EcsContainer is not supported"),
            ("baddur", "duration_seconds must be 900 to 43200"),
            ("missingsrc", "source_profile \"ghost\" does not exist"),
            (
                "emptysrc",
                "source_profile \"regiononly\" has no credentials",
            ),
            (
                "half",
                "aws_access_key_id is set but aws_secret_access_key is not",
            ),
        ];
        for (name, want) in cases {
            let err = p.plan(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(!err.contains('\n'), "{err}");
            assert!(!err.contains("secret-dev"), "{err}");
        }
        assert!(p
            .plan("mfa")
            .unwrap_err()
            .to_string()
            .contains("aws configure export-credentials --profile mfa"));
    }

    #[test]
    fn unknown_profile_lists_available() {
        let err = profiles().plan("nope").unwrap_err();
        assert!(matches!(err, CredentialsError::UnknownProfile { .. }));
        let msg = err.to_string();
        assert!(msg.contains("\"nope\""), "{msg}");
        assert!(
            msg.contains("admin, baddur, badsrc, bothsrc, chained, default, dev"),
            "{msg}"
        );
        assert!(
            msg.contains("/h/.aws/config and /h/.aws/credentials"),
            "{msg}"
        );
        let empty = AwsProfiles::parse(None, None).unwrap();
        assert!(empty
            .plan("x")
            .unwrap_err()
            .to_string()
            .contains("aws configure"));
    }

    #[test]
    fn profile_selection() {
        let none = EnvLookup::from_map(Vec::<(String, String)>::new());
        assert_eq!(profile_name(None, &none), ("default".into(), false));
        assert_eq!(profile_name(Some("x"), &none), ("x".into(), true));
        let env = EnvLookup::from_map([(ENV_DEFAULT_PROFILE, "old"), (ENV_PROFILE, "new")]);
        assert_eq!(profile_name(None, &env), ("new".into(), true));
        assert_eq!(profile_name(Some("cli"), &env), ("cli".into(), true));
        let env = EnvLookup::from_map([(ENV_DEFAULT_PROFILE, "old")]);
        assert_eq!(profile_name(None, &env), ("old".into(), true));
    }

    #[test]
    fn load_reads_paths_from_env_and_tolerates_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        let env = EnvLookup::from_map([("HOME", home)]);
        let p = AwsProfiles::load(&env).unwrap();
        assert!(p.names().is_empty());
        assert!(p.searched().contains("(missing)"), "{}", p.searched());
        std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
        std::fs::write(dir.path().join(".aws/credentials"), CREDENTIALS).unwrap();
        let alt = dir.path().join("alt-config");
        std::fs::write(&alt, CONFIG).unwrap();
        let env = EnvLookup::from_map([("HOME", home), (ENV_CONFIG_FILE, alt.to_str().unwrap())]);
        let p = AwsProfiles::load(&env).unwrap();
        assert!(p.get("admin").is_some());
        assert!(p.get("half").is_some());
        // A malformed file names itself and the line.
        std::fs::write(&alt, "[profile x]\nno equals sign\n").unwrap();
        let err = AwsProfiles::load(&env).unwrap_err().to_string();
        assert!(
            err.contains("alt-config") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let dbg = format!("{:?}", profiles());
        assert!(dbg.contains("AKIACREDSDEV"));
        assert!(dbg.contains("/var/run/secrets/token"));
        assert!(!dbg.contains("creds-secret"), "{dbg}");
        assert!(!dbg.contains("dev-token"), "{dbg}");
        let plan = format!("{:?}", profiles().plan("admin").unwrap());
        assert!(
            !plan.contains("creds-secret") && !plan.contains("dev-token"),
            "{plan}"
        );
    }
}
