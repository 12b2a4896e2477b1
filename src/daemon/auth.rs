//! Who may call the daemon's API, and what each caller may do.
//!
//! Guarantees callers can rely on:
//! * A token file holds one token per line: `TOKEN [name=N] [profiles=a,b] [read-only] [admin]`.
//!   Blank lines and lines starting with `#` are ignored. A line that is a bare token (the
//!   original single-token format) keeps its old meaning: that caller may do everything,
//!   `POST /v1/admin/reload` included. With attributes, `admin` must be given explicitly.
//! * Presented tokens are compared in constant time with every configured token: the loop
//!   never stops at a match, so timing reveals neither which token matched nor a prefix.
//! * Tokens never appear in errors, logs, `Debug` output or job records; a caller is known
//!   by its `name` (default `token-N`, N its position in the file).
//! * [`Keyring::reload`] swaps the whole set at once: a token gone from the file fails the
//!   next request; a file that does not parse leaves the previous set in service.
//! * [`check_profiles`] is the one place that decides which credential profiles a job may
//!   name: the daemon's `--allow-profile` set intersected with the caller's `profiles=`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::jobs::JobSpec;

/// Shortest token accepted (`openssl rand -hex 32` gives 64 characters).
pub const MIN_TOKEN_LEN: usize = 16;

/// What one caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Shown in audit lines and in `submitted_by`; never the token.
    pub name: String,
    /// Profiles this caller's jobs may name (`None` = whatever the daemon allows).
    pub profiles: Option<BTreeSet<String>>,
    /// May only read: list and show jobs, `/metrics`.
    pub read_only: bool,
    /// May call `POST /v1/admin/reload`.
    pub admin: bool,
}

impl Caller {
    /// The caller of a daemon without tokens (only possible on loopback): everything allowed.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            profiles: None,
            read_only: false,
            admin: true,
        }
    }

    fn full(name: String) -> Self {
        Self {
            name,
            profiles: None,
            read_only: false,
            admin: true,
        }
    }
}

struct Entry {
    token: Vec<u8>,
    caller: Arc<Caller>,
}

/// A set of tokens; `Debug` shows only the callers' names.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| &e.caller.name))
            .finish()
    }
}

/// Why a token file cannot be used (never quotes a token).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {}: {source}{}", .path.display(), read_hint(.path, .source))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} holds no token: put one token per line (e.g. from `openssl rand -hex 32`)")]
    Empty(PathBuf),
    #[error("the token file {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// What to do about an unreadable token file: who owns it, or else check the path.
fn read_hint(path: &Path, e: &std::io::Error) -> String {
    let hint = unreadable_hint(path, e);
    if hint.is_empty() {
        "; check the path and its permissions".to_string()
    } else {
        hint
    }
}

/// Why a token file with this mode and group is too open, if it is: readable or writable by
/// others, writable by its group, or readable by a group this process is not in.
pub fn token_mode_problem(mode: u32, gid: u32, our_groups: &[u32]) -> Option<&'static str> {
    if mode & 0o007 != 0 {
        return Some("readable by other users");
    }
    if mode & 0o020 != 0 {
        return Some("writable by its group");
    }
    if mode & 0o040 != 0 && !our_groups.contains(&gid) {
        return Some("readable by a group this process is not in");
    }
    None
}

/// The next step when a token file cannot be read: in a container the file usually belongs
/// to the host's user while the daemon runs as another.
pub fn unreadable_hint(path: &Path, e: &std::io::Error) -> String {
    #[cfg(unix)]
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(path) {
            return format!(
                " (owned by uid {} gid {} mode {:o}, and this process runs as uid {}): make it \
                 readable by uid {} (e.g. `chown {} FILE`) or run as its owner",
                m.uid(),
                m.gid(),
                m.mode() & 0o777,
                unix_ids::uid(),
                unix_ids::uid(),
                unix_ids::uid()
            );
        }
    }
    let _ = (path, e);
    String::new()
}

#[cfg(unix)]
pub mod unix_ids {
    pub fn uid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// The effective group and the supplementary groups.
    pub fn groups() -> Vec<u32> {
        // SAFETY: getegid has no preconditions and cannot fail.
        let mut out = vec![unsafe { libc::getegid() }];
        // SAFETY: with size 0, getgroups only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n > 0 {
            let mut g = vec![0 as libc::gid_t; n as usize];
            // SAFETY: `g` has room for `n` entries.
            let got = unsafe { libc::getgroups(n, g.as_mut_ptr()) };
            if got > 0 {
                out.extend(g.into_iter().take(got as usize));
            }
        }
        out
    }
}

#[cfg(not(unix))]
pub mod unix_ids {
    pub fn uid() -> u32 {
        0
    }
}

/// Warns when a token file is more open than it should be (see [`token_mode_problem`]).
pub fn warn_if_too_open(path: &Path) {
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        if let Some(why) = token_mode_problem(m.mode(), m.gid(), &unix_ids::groups()) {
            tracing::warn!(path = %path.display(), "the token file is {why}; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Whether a profile name is acceptable in a token file or `--allow-profile`.
pub fn valid_profile_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !n.starts_with('.')
}

fn valid_caller_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl Tokens {
    /// One all-powerful token (the library's `DaemonConfig::token`).
    pub fn single(token: &str) -> Self {
        Self {
            entries: vec![Entry {
                token: token.as_bytes().to_vec(),
                caller: Arc::new(Caller::full("token-1".into())),
            }],
        }
    }

    /// Parses a token file's text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokenFileError> {
        let err = |line: usize, reason: String| TokenFileError::Line {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut words = l.split_whitespace();
            let token = words.next().unwrap_or_default();
            if token.len() < MIN_TOKEN_LEN {
                return Err(err(
                    line,
                    format!("the token is too short: use at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"),
                ));
            }
            let mut caller = Caller {
                name: format!("token-{}", entries.len() + 1),
                profiles: None,
                read_only: false,
                admin: false,
            };
            let mut bare = true;
            for w in words {
                bare = false;
                if let Some(n) = w.strip_prefix("name=") {
                    if !valid_caller_name(n) {
                        return Err(err(
                            line,
                            "name=: use 1-64 letters, digits, '-', '_', '.' or '@'".into(),
                        ));
                    }
                    caller.name = n.to_string();
                } else if let Some(p) = w.strip_prefix("profiles=") {
                    let set: BTreeSet<String> = p
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    if let Some(bad) = set.iter().find(|n| !valid_profile_name(n)) {
                        return Err(err(
                            line,
                            format!("profiles=: {bad:?} is not a profile name"),
                        ));
                    }
                    caller.profiles = Some(set);
                } else if w == "read-only" {
                    caller.read_only = true;
                } else if w == "admin" {
                    caller.admin = true;
                } else {
                    // Never echo the word: it may be a second token pasted on the same line.
                    return Err(err(
                        line,
                        "an unknown word after the token; attributes are name=N, profiles=a,b, read-only and admin".into(),
                    ));
                }
            }
            if bare {
                caller.admin = true;
            }
            if caller.read_only && caller.admin {
                return Err(err(
                    line,
                    "a token cannot be both read-only and admin; drop one".into(),
                ));
            }
            if entries.iter().any(|e| e.token == token.as_bytes()) {
                return Err(err(
                    line,
                    "this token is also on an earlier line; give every caller its own token".into(),
                ));
            }
            if entries.iter().any(|e| e.caller.name == caller.name) {
                return Err(err(
                    line,
                    format!(
                        "the name {:?} is used twice; names identify callers in the audit log",
                        caller.name
                    ),
                ));
            }
            entries.push(Entry {
                token: token.as_bytes().to_vec(),
                caller: Arc::new(caller),
            });
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty(path.to_path_buf()));
        }
        Ok(Self { entries })
    }

    /// Reads and parses a token file (settings checks; [`Tokens::load`] also warns).
    pub fn read(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Reads and parses a token file. Warns when it is more open than it should be.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let tokens = Self::read(path)?;
        warn_if_too_open(path);
        Ok(tokens)
    }

    /// The caller whose token this is. Every entry is compared, matched or not.
    pub fn check(&self, presented: &[u8]) -> Option<Arc<Caller>> {
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(presented, &e.token) {
                found = Some(e.caller.clone());
            }
        }
        found
    }

    /// How many tokens the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Compares without an early exit, so response timing does not reveal a token prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The daemon's tokens, re-read from their file on reload.
pub struct Keyring {
    file: Option<PathBuf>,
    current: RwLock<Arc<Tokens>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("file", &self.file)
            .field("tokens", &*self.tokens())
            .finish()
    }
}

impl Keyring {
    /// Tokens from a file (reloadable).
    pub fn from_file(path: PathBuf) -> Result<Self, TokenFileError> {
        let tokens = Tokens::load(&path)?;
        Ok(Self {
            file: Some(path),
            current: RwLock::new(Arc::new(tokens)),
        })
    }

    /// A fixed set (nothing to reload).
    pub fn fixed(tokens: Tokens) -> Self {
        Self {
            file: None,
            current: RwLock::new(Arc::new(tokens)),
        }
    }

    fn tokens(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The caller presenting `token`, by the set in force now.
    pub fn check(&self, token: &[u8]) -> Option<Arc<Caller>> {
        self.tokens().check(token)
    }

    /// Re-reads the file and swaps the set; returns how many tokens are now in force. A file
    /// that fails to parse changes nothing.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let Some(path) = &self.file else {
            return Ok(self.tokens().len());
        };
        let tokens = Tokens::load(path)?;
        let n = tokens.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        Ok(n)
    }
}

/// The daemon's `--allow-profile` / `--allow-default-credentials` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePolicy {
    /// Profiles jobs may name (`None` = any).
    pub allowed: Option<BTreeSet<String>>,
    /// Jobs that name no profile may use the machine's default credential chain even when
    /// profiles are restricted.
    pub allow_default_credentials: bool,
}

/// The credential profile fields of a job, with their values (`None` = the default chain).
/// A new kind of job (or a new cloud's profile field) must be listed here.
pub fn job_profiles(spec: &JobSpec) -> Vec<(&'static str, Option<&str>)> {
    match spec {
        JobSpec::Copy(c) => vec![
            ("src_profile", c.src_profile.as_deref()),
            ("dst_profile", c.dst_profile.as_deref()),
        ],
        JobSpec::Migrate(m) => vec![
            ("src_profile", m.src_profile.as_deref()),
            ("dst_profile", m.dst_profile.as_deref()),
        ],
    }
}

/// A job this caller may not submit; the message names the allowed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Forbidden {
    pub field: &'static str,
    pub message: String,
}

/// Checks every profile a job names against the daemon's policy and the caller's scope.
pub fn check_profiles(
    spec: &JobSpec,
    policy: &ProfilePolicy,
    caller: &Caller,
) -> Result<(), Forbidden> {
    let allowed: Option<BTreeSet<String>> = match (&policy.allowed, &caller.profiles) {
        (None, None) => return Ok(()),
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (Some(a), Some(b)) => Some(a.intersection(b).cloned().collect()),
    };
    let allowed = allowed.unwrap_or_default();
    let list = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    for (field, p) in job_profiles(spec) {
        match p {
            Some(p) if allowed.contains(p) => {}
            Some(p) => {
                return Err(Forbidden {
                    field,
                    message: format!(
                        "profile {p:?} is not allowed for caller {:?}; allowed profiles: {list}",
                        caller.name
                    ),
                })
            }
            None if policy.allow_default_credentials => {}
            None => {
                return Err(Forbidden {
                    field,
                    message: format!(
                        "no profile named, so the daemon's default credentials would be used, which \
                         only --allow-default-credentials permits; name one of the allowed profiles: {list}"
                    ),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::CopySpec;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    fn parse(text: &str) -> Result<Tokens, TokenFileError> {
        Tokens::parse(text, Path::new("/t"))
    }

    #[test]
    fn a_bare_single_token_keeps_full_rights() {
        let t = parse(&format!("{A}\n")).unwrap();
        let c = t.check(A.as_bytes()).unwrap();
        assert_eq!(*c, Caller::full("token-1".into()));
        assert!(t.check(B.as_bytes()).is_none());
        assert!(t.check(&A.as_bytes()[..19]).is_none());
    }

    #[test]
    fn scoped_lines_parse_and_match_their_own_token() {
        let t = parse(&format!(
            "# callers\n\n{A} name=ci profiles=src,dst\n  {B} name=dash read-only\n"
        ))
        .unwrap();
        let a = t.check(A.as_bytes()).unwrap();
        assert_eq!(a.name, "ci");
        assert_eq!(
            a.profiles,
            Some(["dst".to_string(), "src".to_string()].into())
        );
        assert!(
            !a.read_only && !a.admin,
            "attributes given: admin is explicit"
        );
        let b = t.check(B.as_bytes()).unwrap();
        assert!(b.read_only);
        assert_eq!(b.name, "dash");
        assert_eq!(format!("{t:?}"), "[\"ci\", \"dash\"]");
    }

    #[test]
    fn bad_lines_are_refused_without_quoting_tokens() {
        for (text, needle) in [
            (String::new(), "holds no token"),
            ("# only a comment\n".to_string(), "holds no token"),
            ("short\n".to_string(), "too short"),
            (format!("{A} {B}\n"), "unknown word"),
            (format!("{A}\n{A}\n"), "earlier line"),
            (format!("{A} name=x\n{B} name=x\n"), "used twice"),
            (format!("{A} read-only admin\n"), "both"),
            (format!("{A} profiles=../x\n"), "not a profile name"),
            (format!("{A} name=a\\nb\n"), "name="),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains(A) && !e.contains(B), "{e}");
        }
    }

    fn copy(src: Option<&str>, dst: Option<&str>) -> JobSpec {
        JobSpec::Copy(CopySpec {
            source: "oss://a/k".into(),
            destination: "oss://b/k".into(),
            src_profile: src.map(str::to_string),
            dst_profile: dst.map(str::to_string),
            ..CopySpec::default()
        })
    }

    fn caller(profiles: Option<&[&str]>) -> Caller {
        Caller {
            name: "c".into(),
            profiles: profiles.map(|p| p.iter().map(|s| s.to_string()).collect()),
            read_only: false,
            admin: false,
        }
    }

    #[test]
    fn profiles_are_the_intersection_of_daemon_and_caller_scopes() {
        let open = ProfilePolicy::default();
        assert!(check_profiles(&copy(None, None), &open, &caller(None)).is_ok());
        let daemon = ProfilePolicy {
            allowed: Some(["src".to_string(), "dst".to_string()].into()),
            allow_default_credentials: false,
        };
        assert!(check_profiles(&copy(Some("src"), Some("dst")), &daemon, &caller(None)).is_ok());
        let e = check_profiles(
            &copy(Some("src"), Some("dst")),
            &daemon,
            &caller(Some(&["src"])),
        )
        .unwrap_err();
        assert_eq!(e.field, "dst_profile");
        assert!(e.message.contains("allowed profiles: src"), "{e}");
        let e = check_profiles(&copy(Some("x"), Some("dst")), &daemon, &caller(None)).unwrap_err();
        assert!(e.message.contains("allowed profiles: dst, src"), "{e}");
        // A caller scope alone restricts too.
        let e =
            check_profiles(&copy(Some("dst"), None), &open, &caller(Some(&["src"]))).unwrap_err();
        assert_eq!(e.field, "src_profile");
        // No common profile: nothing is allowed.
        let e = check_profiles(&copy(Some("src"), None), &daemon, &caller(Some(&["other"])))
            .unwrap_err();
        assert!(e.message.contains("allowed profiles: none"), "{e}");
    }

    #[test]
    fn the_default_chain_needs_its_own_permission_once_profiles_are_restricted() {
        let mut daemon = ProfilePolicy {
            allowed: Some(["src".to_string()].into()),
            allow_default_credentials: false,
        };
        let e = check_profiles(&copy(Some("src"), None), &daemon, &caller(None)).unwrap_err();
        assert_eq!(e.field, "dst_profile");
        assert!(e.message.contains("--allow-default-credentials"), "{e}");
        daemon.allow_default_credentials = true;
        assert!(check_profiles(&copy(Some("src"), None), &daemon, &caller(None)).is_ok());
    }

    #[test]
    fn reload_swaps_the_set_and_keeps_it_when_the_file_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, format!("{A}\n")).unwrap();
        let k = Keyring::from_file(p.clone()).unwrap();
        assert!(k.check(A.as_bytes()).is_some());
        std::fs::write(&p, format!("{B} name=new\n")).unwrap();
        assert_eq!(k.reload().unwrap(), 1);
        assert!(
            k.check(A.as_bytes()).is_none(),
            "the old token stops at once"
        );
        assert_eq!(k.check(B.as_bytes()).unwrap().name, "new");
        std::fs::write(&p, "short\n").unwrap();
        assert!(k.reload().is_err());
        assert!(
            k.check(B.as_bytes()).is_some(),
            "a bad file keeps the set in force"
        );
        assert!(!format!("{k:?}").contains(B));
    }
}
