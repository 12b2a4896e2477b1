//! The shared credentials INI file of the official SDKs (`~/.alibabacloud/credentials`).
//!
//! INI is simple enough that a small parser beats a dependency: `[section]` headers,
//! `key = value` lines, `#`/`;` comments.

use std::fmt;
use std::path::{Path, PathBuf};

use super::profile::{env_profile_name, join_names, ProfileCredentials};
use super::sts::AssumeRoleSpec;
use super::{Credentials, CredentialsError, EnvLookup};

/// Overrides the path of the INI file.
pub const ENV_CREDENTIALS_FILE: &str = "ALIBABA_CLOUD_CREDENTIALS_FILE";

/// One `[section]`. `Debug` redacts values of keys that hold secrets.
#[derive(Clone, Default)]
pub struct IniSection {
    pub name: String,
    pub entries: Vec<(String, String)>,
}

impl IniSection {
    /// The last value of `key` (keys are case-sensitive, as in the SDKs), if non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for IniSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.entries {
            if k.contains("secret") || k.contains("token") {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// A parsed INI file.
#[derive(Debug, Clone)]
pub struct IniFile {
    pub path: PathBuf,
    pub sections: Vec<IniSection>,
}

impl IniFile {
    /// `ALIBABA_CLOUD_CREDENTIALS_FILE`, else `~/.alibabacloud/credentials`.
    pub fn default_path(env: &EnvLookup) -> Option<PathBuf> {
        env.get(ENV_CREDENTIALS_FILE)
            .map(PathBuf::from)
            .or_else(|| {
                env.home_dir()
                    .map(|h| h.join(".alibabacloud").join("credentials"))
            })
    }

    /// Reads and parses `path`; a missing file is an `Invalid` error saying so.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|e| CredentialsError::Invalid {
            source_name: path.display().to_string(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                format!("file not found; create it or set {ENV_CREDENTIALS_FILE}")
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

    /// Parses INI text; errors name the line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CredentialsError> {
        let err = |line: usize, reason: &str| CredentialsError::Invalid {
            source_name: path.display().to_string(),
            reason: format!("line {line}: {reason}"),
        };
        let mut sections: Vec<IniSection> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err(n, "section header is missing its closing `]`"))?
                    .trim();
                if name.is_empty() {
                    return Err(err(n, "empty section name"));
                }
                sections.push(IniSection {
                    name: name.to_string(),
                    entries: Vec::new(),
                });
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err(n, "expected `key = value` or `[section]`"))?;
            let key = k.trim();
            if key.is_empty() {
                return Err(err(n, "empty key before `=`"));
            }
            let section = sections
                .last_mut()
                .ok_or_else(|| err(n, "`key = value` before any `[section]`"))?;
            section
                .entries
                .push((key.to_string(), unquote(v.trim()).to_string()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            sections,
        })
    }

    /// The section called `name` (the last one if repeated), or `UnknownProfile`.
    pub fn section(&self, name: &str) -> Result<&IniSection, CredentialsError> {
        self.sections
            .iter()
            .rev()
            .find(|s| s.name == name)
            .ok_or_else(|| CredentialsError::UnknownProfile {
                profile: name.to_string(),
                path: self.path.display().to_string(),
                available: join_names(self.sections.iter().map(|s| s.name.as_str())),
            })
    }

    /// Validates the section's `type` and fields.
    pub fn credentials_for(&self, name: &str) -> Result<ProfileCredentials, CredentialsError> {
        section_credentials(self.section(name)?, &self.path)
    }
}

/// The section to use: `explicit`, else `ALIBABA_CLOUD_PROFILE`, else `default`.
pub fn select_section(explicit: Option<&str>, env: &EnvLookup) -> String {
    explicit
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| env_profile_name(env))
        .unwrap_or_else(|| "default".into())
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Validates one section against the needs of its `type`.
pub fn section_credentials(
    s: &IniSection,
    path: &Path,
) -> Result<ProfileCredentials, CredentialsError> {
    let invalid = |reason: String| CredentialsError::Invalid {
        source_name: format!("section [{}] of {}", s.name, path.display()),
        reason,
    };
    let require = |ty: &str, keys: &[&str]| -> Result<(), CredentialsError> {
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| s.get(k).is_none())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(invalid(format!(
                "type {ty} requires {}; missing: {}",
                keys.join(", "),
                missing.join(", ")
            )))
        }
    };
    let get = |k: &str| s.get(k).map(|v| v.to_string());
    let ak = || {
        Credentials::new(
            s.get("access_key_id").unwrap_or_default(),
            s.get("access_key_secret").unwrap_or_default(),
        )
    };
    match s.get("type") {
        Some("access_key") => {
            require("access_key", &["access_key_id", "access_key_secret"])?;
            Ok(ProfileCredentials::Static(ak()))
        }
        Some("ecs_ram_role") => Ok(ProfileCredentials::EcsRamRole {
            role_name: get("role_name"),
        }),
        Some("ram_role_arn") => {
            require(
                "ram_role_arn",
                &["access_key_id", "access_key_secret", "role_arn"],
            )?;
            let duration = match s.get("role_session_expiration") {
                None => None,
                Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "role_session_expiration must be seconds, got {v:?}"
                    ))
                })?),
            };
            Ok(ProfileCredentials::RamRoleArn {
                base: ak(),
                role: AssumeRoleSpec {
                    role_arn: get("role_arn").unwrap_or_default(),
                    session_name: get("role_session_name"),
                    duration_seconds: duration,
                    external_id: get("external_id"),
                    policy: get("policy"),
                    sts_region: get("sts_region"),
                    sts_endpoint: get("sts_endpoint"),
                    enable_vpc: s
                        .get("enable_vpc")
                        .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                },
            })
        }
        Some(other) => Err(invalid(format!(
            "type {other:?} is not supported; use access_key, ecs_ram_role or ram_role_arn"
        ))),
        None => Err(invalid(
            "no `type` key; set type = access_key, ecs_ram_role or ram_role_arn".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# shared credentials
[default]
enable = true
type = access_key
access_key_id = LTAIdefault
access_key_secret = \"ini-secret-default\"

; instance role
[client1]
type = ecs_ram_role
role_name = EcsRamRoleTest

[discover]
type = ecs_ram_role

[client2]
type = ram_role_arn
access_key_id = LTAIrole
access_key_secret = ini-secret-role
role_arn = acs:ram::1234:role/migrator
role_session_name = session=name
policy = {\"Version\":\"1\"}
role_session_expiration = 1800

[bad-type]
type = rsa_key_pair

[no-type]
access_key_id = x

[ak-missing]
type = access_key
access_key_id = LTAIx

[rra-missing]
type = ram_role_arn

[bad-duration]
type = ram_role_arn
access_key_id = a
access_key_secret = b
role_arn = r
role_session_expiration = soon
";

    fn file() -> IniFile {
        IniFile::parse(SAMPLE, Path::new("/home/u/.alibabacloud/credentials")).unwrap()
    }

    #[test]
    fn parses_types() {
        let f = file();
        assert_eq!(
            f.credentials_for("default").unwrap(),
            ProfileCredentials::Static(Credentials::new("LTAIdefault", "ini-secret-default"))
        );
        assert_eq!(
            f.credentials_for("client1").unwrap(),
            ProfileCredentials::EcsRamRole {
                role_name: Some("EcsRamRoleTest".into())
            }
        );
        assert_eq!(
            f.credentials_for("discover").unwrap(),
            ProfileCredentials::EcsRamRole { role_name: None }
        );
        match f.credentials_for("client2").unwrap() {
            ProfileCredentials::RamRoleArn { base, role } => {
                assert_eq!(base, Credentials::new("LTAIrole", "ini-secret-role"));
                assert_eq!(role.role_arn, "acs:ram::1234:role/migrator");
                assert_eq!(role.session_name.as_deref(), Some("session=name"));
                assert_eq!(role.policy.as_deref(), Some("{\"Version\":\"1\"}"));
                assert_eq!(role.duration_seconds, Some(1800));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn section_errors_are_clear() {
        let f = file();
        let cases = [
            ("bad-type", "type \"rsa_key_pair\" is not supported"),
            ("no-type", "no `type` key"),
            ("ak-missing", "missing: access_key_secret"),
            (
                "rra-missing",
                "missing: access_key_id, access_key_secret, role_arn",
            ),
            ("bad-duration", "role_session_expiration must be seconds"),
        ];
        for (name, want) in cases {
            let err = f.credentials_for(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(err.contains(&format!("[{name}]")), "{err}");
        }
        let err = f.credentials_for("nope").unwrap_err();
        assert!(matches!(err, CredentialsError::UnknownProfile { .. }));
        assert!(err
            .to_string()
            .contains("default, client1, discover, client2"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases = [
            ("[default\ntype = access_key", "line 1: section header"),
            ("[]", "line 1: empty section name"),
            ("[a]\n\njust words", "line 3: expected `key = value`"),
            ("key = v\n[a]", "line 1: `key = value` before any"),
            ("[a]\n = v", "line 2: empty key"),
        ];
        for (text, want) in cases {
            let err = IniFile::parse(text, Path::new("creds.ini"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.contains("creds.ini"), "{err}");
        }
    }

    #[test]
    fn selection_and_default_path() {
        let none = EnvLookup::from_map(Vec::<(String, String)>::new());
        assert_eq!(select_section(None, &none), "default");
        assert_eq!(select_section(Some("x"), &none), "x");
        let env = EnvLookup::from_map([("ALIBABA_CLOUD_PROFILE", "client1")]);
        assert_eq!(select_section(None, &env), "client1");

        let dir = tempfile::tempdir().unwrap();
        let env = EnvLookup::from_map([("HOME", dir.path().to_str().unwrap())]);
        assert!(IniFile::load_default(&env).unwrap().is_none());
        std::fs::create_dir_all(dir.path().join(".alibabacloud")).unwrap();
        std::fs::write(dir.path().join(".alibabacloud/credentials"), SAMPLE).unwrap();
        let f = IniFile::load_default(&env).unwrap().unwrap();
        assert_eq!(f.sections.len(), 9);
        let err = IniFile::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("file not found"), "{err}");
    }

    #[test]
    fn debug_redacts_secrets() {
        let dbg = format!("{:?}", file());
        assert!(dbg.contains("LTAIdefault"));
        assert!(!dbg.contains("ini-secret"), "{dbg}");
    }
}
