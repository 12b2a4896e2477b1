//! Resume state: one JSON file per (source, destination) pair, written atomically.
//!
//! It holds the upload id, the plan, a fingerprint of the source and every part the
//! destination acknowledged (number, size, CRC-64, ETag). No credentials, no signatures.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::store::ObjectMeta;

use super::TransferError;

/// Format version; a file with another version is ignored (and replaced).
pub const STATE_VERSION: u32 = 1;

/// What identifies the source content: if any of it changed, recorded parts are worthless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<String>,
    #[serde(with = "opt_u64_string")]
    pub crc64: Option<u64>,
}

impl From<&ObjectMeta> for SourceFingerprint {
    fn from(m: &ObjectMeta) -> Self {
        Self {
            size: m.size,
            etag: m.etag.clone(),
            last_modified: m.last_modified.clone(),
            crc64: m.crc64,
        }
    }
}

/// One part the destination acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePart {
    pub number: u32,
    pub size: u64,
    #[serde(serialize_with = "ser_u64_string", deserialize_with = "de_u64_string")]
    pub crc64: u64,
    pub etag: String,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    pub version: u32,
    pub source: String,
    pub destination: String,
    pub upload_id: String,
    pub part_size: u64,
    pub source_meta: SourceFingerprint,
    /// Ascending by number.
    pub parts: Vec<StatePart>,
}

impl CopyState {
    /// Records (or replaces) an acknowledged part, keeping the list sorted.
    pub fn record(&mut self, part: StatePart) {
        match self.parts.binary_search_by_key(&part.number, |p| p.number) {
            Ok(i) => self.parts[i] = part,
            Err(i) => self.parts.insert(i, part),
        }
    }
}

/// The state file for a pair of described locations inside `dir`.
pub fn state_path(dir: &Path, source: &str, destination: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(b"\n");
    h.update(destination.as_bytes());
    let hex = hex::encode(h.finalize());
    dir.join(format!("copy-{}.json", &hex[..32]))
}

/// Reads a state file; `Ok(None)` if absent, unreadable as JSON, or of another version (a
/// damaged file must not block a new copy; the engine then starts over).
pub fn load(path: &Path) -> Result<Option<CopyState>, TransferError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TransferError::State(format!(
                "cannot read {}: {e}; check its permissions or remove it",
                path.display()
            )))
        }
    };
    match serde_json::from_slice::<CopyState>(&bytes) {
        Ok(s) if s.version == STATE_VERSION => Ok(Some(s)),
        Ok(s) => {
            tracing::warn!(path = %path.display(), version = s.version, "ignoring resume state of another version");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable resume state");
            Ok(None)
        }
    }
}

/// Writes `bytes` to `path` atomically: temp file (mode 0600) + fsync + rename + fsync of the
/// directory (created with mode 0700).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700. An existing directory that group or others can
/// read is tightened to 0700 only when it is plainly a state directory of ours (owned by us,
/// not sticky, holding nothing but ossrelay's files): `--state-dir /var/lib` run as root must
/// not lock everyone else out of `/var/lib`. Anything else gets a warning instead.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(dir)?;
        if m.is_dir() && m.mode() & 0o077 != 0 {
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            let sticky = m.mode() & 0o1000 != 0;
            if m.uid() == me && !sticky && holds_only_state(dir) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            } else {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format_args!("{:o}", m.mode() & 0o7777),
                    "the state directory is readable by other users; its files are private \
                     (0600) but their names and count are not: use a directory of its own, or \
                     chmod 700 it"
                );
            }
        }
    }
    Ok(())
}

/// Whether every entry of `dir` is one ossrelay writes into a state directory.
#[cfg(unix)]
fn holds_only_state(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.into_iter().all(|e| {
        let Ok(e) = e else { return false };
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.starts_with("copy-")
            || name.starts_with("migrate-")
            || name.starts_with("jobs")
            || name.ends_with(".lock")
    })
}

/// Saves `state` at `path`.
pub fn save(path: &Path, state: &CopyState) -> Result<(), TransferError> {
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(path, &json).map_err(|e| {
        TransferError::State(format!(
            "cannot write {}: {e}; choose a writable state directory",
            path.display()
        ))
    })
}

/// Removes a state file; a missing file is fine.
pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "could not remove resume state");
        }
    }
}

/// Exclusive use of one state file by one copy, across processes (a lock file holding the
/// pid, taken over when that process is gone) and within a process (the daemon may be asked
/// to run the same pair twice). Released on drop.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    key: PathBuf,
}

fn held_in_process() -> &'static std::sync::Mutex<std::collections::HashSet<PathBuf>> {
    static HELD: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Takes the lock for the state file `state`; fails if another live copy holds it.
pub fn lock(state: &Path) -> Result<StateLock, TransferError> {
    let busy = || {
        TransferError::State(format!(
            "another copy of the same source and destination is running (lock {}); wait for it \
             to finish or stop it",
            state.with_extension("lock").display()
        ))
    };
    let key = state.to_path_buf();
    if !held_in_process()
        .lock()
        .expect("lock set")
        .insert(key.clone())
    {
        return Err(busy());
    }
    let path = state.with_extension("lock");
    let release_key = || {
        held_in_process().lock().expect("lock set").remove(&key);
    };
    let me = std::process::id();
    for _ in 0..2 {
        if let Some(dir) = path.parent() {
            if let Err(e) = private_dir(dir) {
                release_key();
                return Err(TransferError::State(format!(
                    "cannot create {}: {e}; choose a writable state directory",
                    dir.display()
                )));
            }
        }
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        match o.open(&path) {
            Ok(mut f) => {
                let _ = writeln!(f, "{me}");
                return Ok(StateLock {
                    path,
                    key: key.clone(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                match owner {
                    // Our own pid is stale here: the in-process set said nobody holds it.
                    Some(pid) if pid != me && pid_alive(pid) => {
                        release_key();
                        return Err(busy());
                    }
                    _ => {
                        tracing::debug!(path = %path.display(), "taking over a stale lock");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(e) => {
                release_key();
                return Err(TransferError::State(format!(
                    "cannot create {}: {e}; choose a writable state directory",
                    path.display()
                )));
            }
        }
    }
    release_key();
    Err(busy())
}

impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        held_in_process()
            .lock()
            .expect("lock set")
            .remove(&self.key);
    }
}

/// Serialises a u64 as a decimal string (CRC-64 values exceed JSON's safe integers).
pub fn ser_u64_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

fn de_u64_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

mod opt_u64_string {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CopyState {
        CopyState {
            version: STATE_VERSION,
            source: "oss://a/k".into(),
            destination: "oss://b/k".into(),
            upload_id: "U1".into(),
            part_size: 1 << 20,
            source_meta: SourceFingerprint {
                size: 5 << 20,
                etag: "E".into(),
                last_modified: None,
                crc64: Some(u64::MAX - 1),
            },
            parts: vec![],
        }
    }

    #[test]
    fn round_trip_keeps_u64_exact_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir.path().join("st"), "oss://a/k", "oss://b/k");
        let mut s = sample();
        s.record(StatePart {
            number: 2,
            size: 7,
            crc64: 18446744073709551557,
            etag: "X".into(),
        });
        s.record(StatePart {
            number: 1,
            size: 7,
            crc64: 1,
            etag: "Y".into(),
        });
        save(&path, &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"18446744073709551557\""), "{text}");
        assert_eq!(load(&path).unwrap().unwrap(), s);
        assert_eq!(s.parts[0].number, 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600);
            let d = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(d & 0o777, 0o700);
        }
        remove(&path);
        assert!(load(&path).unwrap().is_none());
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s").join("copy-x.json");
        let l = lock(&state).unwrap();
        assert!(matches!(lock(&state), Err(TransferError::State(_))));
        drop(l);
        let l = lock(&state).unwrap();
        drop(l);
        // A lock file left by a dead process is taken over.
        std::fs::write(state.with_extension("lock"), "4000000000\n").unwrap();
        let _l = lock(&state).unwrap();
    }

    #[test]
    fn damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap().is_none());
        assert_ne!(
            state_path(dir.path(), "a", "b"),
            state_path(dir.path(), "b", "a")
        );
    }

    #[cfg(unix)]
    #[test]
    fn only_plain_state_dirs_are_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let root = tempfile::tempdir().unwrap();

        let fresh = root.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        let ours = root.path().join("ours");
        std::fs::create_dir(&ours).unwrap();
        std::fs::write(ours.join("copy-0123.json"), b"{}").unwrap();
        std::fs::write(ours.join("copy-0123.lock"), b"1").unwrap();
        set(&ours, 0o755);
        private_dir(&ours).unwrap();
        assert_eq!(mode(&ours), 0o700, "a state dir of ours is tightened");

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::write(shared.join("someone-elses.conf"), b"x").unwrap();
        set(&shared, 0o755);
        private_dir(&shared).unwrap();
        assert_eq!(
            mode(&shared),
            0o755,
            "a directory holding other files is left alone"
        );

        let sticky = root.path().join("tmp");
        std::fs::create_dir(&sticky).unwrap();
        set(&sticky, 0o1777);
        private_dir(&sticky).unwrap();
        assert_eq!(
            mode(&sticky),
            0o1777,
            "a sticky (/tmp-like) directory is left alone"
        );
    }
}
