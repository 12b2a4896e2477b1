//! Resume state: one JSON file per (source, destination) pair, written atomically.
//!
//! It holds the upload id, the plan, a fingerprint of the source and every part the
//! destination acknowledged (number, size, CRC-64, ETag). No credentials, no signatures.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::checksum::{Checksum, Checksums};
use crate::store::ObjectMeta;

use super::TransferError;

/// Format version this release writes. Version 1 (the release before typed checksums) is
/// read and upgraded in memory ([`v1`]); the next save writes version 2.
pub const STATE_VERSION: u32 = 2;

/// What identifies the source content: if any of it changed, recorded parts are worthless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<String>,
    #[serde(default)]
    pub checksums: Checksums,
}

impl From<&ObjectMeta> for SourceFingerprint {
    fn from(m: &ObjectMeta) -> Self {
        Self {
            size: m.size,
            etag: m.etag.clone(),
            last_modified: m.last_modified.clone(),
            checksums: m.checksums.clone(),
        }
    }
}

/// One part the destination acknowledged, with the checksums this run computed over the bytes
/// it sent (always CRC-64/XZ: [`load_checked`] refuses a file with a part without one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePart {
    pub number: u32,
    pub size: u64,
    pub checksums: Checksums,
    pub etag: String,
}

impl StatePart {
    /// A part whose bytes have CRC-64/XZ `crc64`.
    pub fn new(number: u32, size: u64, crc64: u64, etag: String) -> Self {
        Self {
            number,
            size,
            checksums: Checksum::Crc64Xz(crc64).into(),
            etag,
        }
    }

    /// A part whose bytes have `checksums` (CRC-64/XZ among them).
    pub fn with_checksums(number: u32, size: u64, checksums: Checksums, etag: String) -> Self {
        debug_assert!(checksums.crc64_xz().is_some());
        Self {
            number,
            size,
            checksums,
            etag,
        }
    }

    /// The part's CRC-64/XZ, which the relay folds into the object's.
    pub fn crc64(&self) -> u64 {
        self.checksums
            .crc64_xz()
            .expect("recorded parts carry a CRC-64 (checked when loaded)")
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    pub version: u32,
    pub source: String,
    pub destination: String,
    pub upload_id: String,
    pub part_size: u64,
    /// Smaller parts at the end of the plan (see [`super::plan::Tail`]); absent in files
    /// written before tails existed, whose plans are all full parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<super::plan::Tail>,
    pub source_meta: SourceFingerprint,
    /// Ascending by number.
    pub parts: Vec<StatePart>,
    /// Written just before CompleteMultipartUpload: what the finished object must hold. A
    /// rerun that finds the upload gone compares the destination with it, so a crash between
    /// Complete and the removal of this file does not send the whole object again. Absent in
    /// files written before the field existed (then the recorded parts stand in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completing: Option<Completing>,
}

/// See [`CopyState::completing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completing {
    /// Checksums of the whole destination object (the CRC-64/XZ folded from the parts).
    pub checksums: Checksums,
    /// Checksums of what was read from the source, when it differs from the object (an
    /// unpacked archive) and was computed by this run.
    #[serde(default, skip_serializing_if = "Checksums::is_empty")]
    pub source_checksums: Checksums,
}

impl Completing {
    pub fn new(crc64: u64, source_crc64: Option<u64>) -> Self {
        Self::with(Checksum::Crc64Xz(crc64).into(), source_crc64)
    }

    /// The object's checksums (CRC-64/XZ among them, see [`CopyState::defect`]).
    pub fn with(checksums: Checksums, source_crc64: Option<u64>) -> Self {
        Self {
            checksums,
            source_checksums: source_crc64
                .map(|c| Checksum::Crc64Xz(c).into())
                .unwrap_or_default(),
        }
    }

    /// CRC-64/XZ of the whole object.
    pub fn crc64(&self) -> Option<u64> {
        self.checksums.crc64_xz()
    }

    /// CRC-64/XZ of the source bytes read, when recorded.
    pub fn source_crc64(&self) -> Option<u64> {
        self.source_checksums.crc64_xz()
    }
}

impl CopyState {
    /// Records (or replaces) an acknowledged part, keeping the list sorted.
    pub fn record(&mut self, part: StatePart) {
        match self.parts.binary_search_by_key(&part.number, |p| p.number) {
            Ok(i) => self.parts[i] = part,
            Err(i) => self.parts.insert(i, part),
        }
    }

    /// Why this (parsed) state cannot be resumed by this release, if it cannot.
    fn defect(&self) -> Option<String> {
        if let Some(p) = self.parts.iter().find(|p| p.checksums.crc64_xz().is_none()) {
            return Some(format!("part {} has no CRC-64", p.number));
        }
        if self
            .completing
            .as_ref()
            .is_some_and(|c| c.crc64().is_none())
        {
            return Some("its completion record has no CRC-64".into());
        }
        None
    }
}

/// The version 1 format (CRC-64/XZ in bare `crc64` fields), read so that an upload left by
/// the release before typed checksums resumes.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub(super) struct State {
        source: String,
        destination: String,
        upload_id: String,
        part_size: u64,
        source_meta: Fingerprint,
        parts: Vec<Part>,
        #[serde(default)]
        completing: Option<Completing>,
    }

    #[derive(Deserialize)]
    struct Fingerprint {
        size: u64,
        etag: String,
        last_modified: Option<String>,
        #[serde(deserialize_with = "opt_u64_string::deserialize")]
        crc64: Option<u64>,
    }

    #[derive(Deserialize)]
    struct Part {
        number: u32,
        size: u64,
        #[serde(deserialize_with = "de_u64_string")]
        crc64: u64,
        etag: String,
    }

    #[derive(Deserialize)]
    struct Completing {
        #[serde(deserialize_with = "de_u64_string")]
        crc64: u64,
        #[serde(default, deserialize_with = "opt_u64_string::deserialize")]
        source_crc64: Option<u64>,
    }

    impl From<State> for CopyState {
        fn from(s: State) -> Self {
            let crc = |c: Option<u64>| c.map(|c| Checksum::Crc64Xz(c).into()).unwrap_or_default();
            CopyState {
                version: STATE_VERSION,
                source: s.source,
                destination: s.destination,
                upload_id: s.upload_id,
                part_size: s.part_size,
                tail: None,
                source_meta: SourceFingerprint {
                    size: s.source_meta.size,
                    etag: s.source_meta.etag,
                    last_modified: s.source_meta.last_modified,
                    checksums: crc(s.source_meta.crc64),
                },
                parts: s
                    .parts
                    .into_iter()
                    .map(|p| StatePart::new(p.number, p.size, p.crc64, p.etag))
                    .collect(),
                completing: s
                    .completing
                    .map(|c| super::Completing::new(c.crc64, c.source_crc64)),
            }
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

/// What a state file holds.
#[derive(Debug)]
pub enum Loaded {
    Absent,
    /// Boxed: a state is much larger than the other variants.
    State(Box<CopyState>),
    /// Not a state file this release can resume (damaged, or of another version). Its upload
    /// id, when one can still be read, lets the caller abort that upload rather than orphan it.
    Damaged {
        upload_id: Option<String>,
        /// "unreadable resume state PATH (…)" or "resume state PATH of another version (…)".
        why: String,
    },
}

/// Reads a state file; `Ok(None)` if absent, damaged or of another version (for readers that
/// only want progress; a run that will write the pair uses [`load_checked`]).
pub fn load(path: &Path) -> Result<Option<CopyState>, TransferError> {
    Ok(match load_checked(path)? {
        Loaded::State(s) => Some(*s),
        Loaded::Absent | Loaded::Damaged { .. } => None,
    })
}

/// Reads a state file, telling a damaged one apart from none.
pub fn load_checked(path: &Path) -> Result<Loaded, TransferError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Absent),
        Err(e) => {
            return Err(TransferError::State(format!(
                "cannot read {}: {e}; check its permissions or remove it",
                path.display()
            )))
        }
    };
    let unreadable = |e: &dyn std::fmt::Display| Loaded::Damaged {
        upload_id: salvage_upload_id(&bytes),
        why: format!("unreadable resume state {} ({e})", path.display()),
    };
    #[derive(Deserialize)]
    struct Header {
        version: u32,
        upload_id: String,
    }
    let header = match serde_json::from_slice::<Header>(&bytes) {
        Ok(h) => h,
        Err(e) => return Ok(unreadable(&e)),
    };
    let parsed = match header.version {
        1 => serde_json::from_slice::<v1::State>(&bytes).map(CopyState::from),
        STATE_VERSION => serde_json::from_slice::<CopyState>(&bytes),
        other => {
            return Ok(Loaded::Damaged {
                upload_id: Some(header.upload_id),
                why: format!(
                    "resume state {} of another version ({other}; this release reads 1 and \
                     {STATE_VERSION})",
                    path.display()
                ),
            })
        }
    };
    Ok(match parsed {
        Ok(s) => match s.defect() {
            None => Loaded::State(Box::new(s)),
            Some(d) => Loaded::Damaged {
                upload_id: Some(s.upload_id),
                why: format!("resume state {} ({d})", path.display()),
            },
        },
        Err(e) => unreadable(&e),
    })
}

/// The `"upload_id": "..."` of a state file that no longer parses (truncated, partly
/// overwritten): it sits near the top, so it usually survives the damage.
fn salvage_upload_id(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let at = text.find("\"upload_id\"")? + "\"upload_id\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    // Upload ids are printable tokens; anything else is debris, not an id.
    (!id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'"'))
    .then(|| id.to_string())
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
    let written = o.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        // A full or read-only directory must not collect half-written temp files: the last
        // complete state file is what a rerun resumes from.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
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

/// Saves `state` at `path`. A failure leaves the previous file as it was (see
/// [`write_atomic`]) and is a [`TransferError::StateWrite`]: the caller keeps the upload that
/// file names, so a rerun resumes from it once the directory is fixed.
pub fn save(path: &Path, state: &CopyState) -> Result<(), TransferError> {
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(path, &json).map_err(|e| TransferError::StateWrite {
        state_file: path.to_path_buf(),
        reason: e.to_string(),
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

/// Exclusive use of one state file by one run, across processes and within one (the daemon
/// may be asked to run the same pair twice).
///
/// A kernel lock (`flock` through [`std::fs::File::try_lock`]) on `<state>.lock`: it is taken
/// and released atomically and dies with its process, so there is no "stale lock" to guess
/// about (the pid-file scheme it replaces let two runs in when a reader saw the file before
/// its pid was written, or when a dead pid was reused). The holder's pid is written into the
/// file only so that the loser can name it. Two opens in one process conflict too: `flock`
/// locks belong to the open file, not to the process.
///
/// Released on drop: the file is unlinked while still locked, and a locker that opened the
/// old file checks, once it holds the lock, that the path still names what it locked.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    file: std::fs::File,
}

/// Why [`lock_file`] did not take the lock.
#[derive(Debug)]
pub enum LockError {
    /// Another live run holds it; its pid when it could be read.
    Busy { pid: Option<u32>, lock: PathBuf },
    /// The directory or the lock file cannot be created or opened.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl LockError {
    /// "pid N" or "pid unknown", for messages.
    pub fn holder(pid: Option<u32>) -> String {
        pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"))
    }
}

/// Takes the lock for the state file `state` (any kind: copy or migration).
pub fn lock_file(state: &Path) -> Result<StateLock, LockError> {
    use std::fs::TryLockError;
    let path = state.with_extension("lock");
    if let Some(dir) = path.parent() {
        private_dir(dir).map_err(|error| LockError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    // A few rounds: each one lost only to a holder that unlinked the file as we opened it.
    for _ in 0..16 {
        // Locked through a read-only descriptor, so that holding the lock keeps no file of
        // the directory open for writing (an operator can still remount it read-only).
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create(true).truncate(false);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    o.mode(0o600);
                }
                o.open(&path).map_err(|error| LockError::Io {
                    path: path.clone(),
                    error,
                })?;
                continue;
            }
            Err(error) => return Err(LockError::Io { path, error }),
        };
        let mut locked = file.try_lock();
        let file = match locked {
            // NFS emulates flock with byte-range locks, which want a writable descriptor.
            Err(TryLockError::Error(ref e)) if e.raw_os_error() == Some(libc::EBADF) => {
                let rw = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|error| LockError::Io {
                        path: path.clone(),
                        error,
                    })?;
                locked = rw.try_lock();
                rw
            }
            _ => file,
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Busy {
                    pid: read_holder(&path),
                    lock: path,
                })
            }
            Err(TryLockError::Error(error)) => return Err(LockError::Io { path, error }),
        }
        if !same_file(&file, &path) {
            // The previous holder unlinked it between our open and our lock: try the new one.
            continue;
        }
        // A second, short-lived descriptor: closing it does not release a `flock`, which
        // belongs to the open file the first one holds.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()));
        if let Err(e) = written {
            // The lock holds without the pid; only the loser's message is poorer.
            tracing::debug!(path = %path.display(), error = %e, "could not record the pid in the lock file");
        }
        return Ok(StateLock { path, file });
    }
    Err(LockError::Busy {
        pid: read_holder(&path),
        lock: path,
    })
}

/// Takes the lock of a copy's state file; the error says which run holds it.
pub fn lock(state: &Path) -> Result<StateLock, TransferError> {
    lock_file(state).map_err(|e| match e {
        LockError::Busy { pid, lock } => TransferError::State(format!(
            "another copy of the same source and destination is running ({}, lock {}); wait \
             for it to finish or stop it",
            LockError::holder(pid),
            lock.display()
        )),
        LockError::Io { path, error } => TransferError::State(format!(
            "cannot create {}: {error}; choose a writable state directory",
            path.display()
        )),
    })
}

/// The pid a holder wrote; it may be writing it right now, so look twice.
fn read_holder(path: &Path) -> Option<u32> {
    for _ in 0..3 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            return Some(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

/// Whether `path` still names the open `file` (same device and inode).
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Unlink first, unlock (close) second: see the type's docs.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Serialises a u64 as a decimal string (CRC-64 values exceed JSON's safe integers).
pub fn ser_u64_string<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// Reads what [`ser_u64_string`] wrote.
pub fn de_u64_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

mod opt_u64_string {
    use super::*;

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
            tail: None,
            source_meta: SourceFingerprint {
                size: 5 << 20,
                etag: "E".into(),
                last_modified: None,
                checksums: Checksum::Crc64Xz(u64::MAX - 1).into(),
            },
            parts: vec![],
            completing: None,
        }
    }

    #[test]
    fn round_trip_keeps_u64_exact_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir.path().join("st"), "oss://a/k", "oss://b/k");
        let mut s = sample();
        s.record(StatePart::new(2, 7, 18446744073709551557, "X".into()));
        s.record(StatePart::new(1, 7, 1, "Y".into()));
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

    /// A state file exactly as the release before typed checksums (format 1) wrote it.
    const V1_FILE: &str = r#"{
  "version": 1,
  "source": "oss://src-bkt/disk.raw",
  "destination": "oss://dst-bkt/disk.raw",
  "upload_id": "0004B9894A22E5B1888A1E29F8236E2D",
  "part_size": 1048576,
  "source_meta": {
    "size": 3145728,
    "etag": "5B3C1A2E053D763E1B002CC607C5A0FE-3",
    "last_modified": "Sat, 12 Dec 2015 00:35:53 GMT",
    "crc64": "18446744073709551557"
  },
  "parts": [
    { "number": 1, "size": 1048576, "crc64": "12066172435287683848", "etag": "E1" },
    { "number": 3, "size": 1048576, "crc64": "7", "etag": "E3" }
  ],
  "completing": { "crc64": "99", "source_crc64": "100" }
}"#;

    #[test]
    fn a_version_1_file_is_read_and_saved_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy-v1.json");
        std::fs::write(&path, V1_FILE).unwrap();
        let Loaded::State(s) = load_checked(&path).unwrap() else {
            panic!("a version 1 file must load");
        };
        assert_eq!(s.version, STATE_VERSION);
        assert_eq!(s.upload_id, "0004B9894A22E5B1888A1E29F8236E2D");
        assert_eq!(
            s.source_meta.checksums.crc64_xz(),
            Some(18446744073709551557)
        );
        assert_eq!(
            s.source_meta.last_modified.as_deref(),
            Some("Sat, 12 Dec 2015 00:35:53 GMT")
        );
        assert_eq!(
            s.parts,
            vec![
                StatePart::new(1, 1 << 20, 12066172435287683848, "E1".into()),
                StatePart::new(3, 1 << 20, 7, "E3".into()),
            ]
        );
        assert_eq!(s.completing, Some(Completing::new(99, Some(100))));
        // The fingerprint a HEAD of the unchanged source gives matches the upgraded one.
        let meta = ObjectMeta {
            size: 3 << 20,
            etag: "5B3C1A2E053D763E1B002CC607C5A0FE-3".into(),
            last_modified: Some("Sat, 12 Dec 2015 00:35:53 GMT".into()),
            checksums: Checksum::Crc64Xz(18446744073709551557).into(),
            ..ObjectMeta::default()
        };
        assert_eq!(SourceFingerprint::from(&meta), s.source_meta);
        save(&path, &s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
        assert!(
            text.contains("\"crc64-xz\": \"12066172435287683848\""),
            "{text}"
        );
        assert_eq!(load(&path).unwrap().unwrap(), *s);
    }

    #[test]
    fn a_part_without_a_crc64_is_not_resumed_but_its_upload_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy-x.json");
        let mut s = sample();
        s.record(StatePart {
            number: 1,
            size: 7,
            checksums: Checksum::Md5([0; 16]).into(),
            etag: "E".into(),
        });
        std::fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
        match load_checked(&path).unwrap() {
            Loaded::Damaged { upload_id, why } => {
                assert_eq!(upload_id.as_deref(), Some("U1"));
                assert!(why.contains("part 1 has no CRC-64"), "{why}");
            }
            other => panic!("{other:?}"),
        }
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

    /// Rounds of [`the_lock_admits_one_process_at_a_time`], each racing `LOCKERS` processes
    /// that take and drop the lock for `LOCK_RACE_MS`. The pid-file lock this replaced let two
    /// holders in within the first 5 rounds in each of 3 runs (rounds 0, 0 and 4).
    const LOCK_RACE_ROUNDS: usize = 10;
    const LOCKERS: usize = 4;
    const LOCK_RACE_MS: u64 = 300;

    /// The child side of [`the_lock_admits_one_process_at_a_time`]; does nothing unless run as
    /// such a child. Takes and drops the lock as often as it can; while holding it, it owns a
    /// marker file created exclusively, so a second holder at the same time cannot go unseen.
    #[test]
    fn lock_race_child() {
        let Some(state) = std::env::var_os("OSSRELAY_LOCK_RACE_STATE") else {
            return;
        };
        let state = PathBuf::from(state);
        let marker = state.with_extension("holder");
        let end = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_RACE_MS);
        let mut held = 0u32;
        while std::time::Instant::now() < end {
            let Ok(l) = lock(&state) else {
                continue;
            };
            let two = || -> ! {
                eprintln!("TWO HOLDERS");
                std::process::exit(3)
            };
            if std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
                .is_err()
            {
                two();
            }
            held += 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
            // Gone already: another holder took it over (and removed it) meanwhile.
            if std::fs::remove_file(&marker).is_err() {
                two();
            }
            drop(l);
        }
        println!("HELD {held}");
    }

    #[test]
    fn the_lock_admits_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("copy-race.json");
        let exe = std::env::current_exe().unwrap();
        let mut total = 0u64;
        for round in 0..LOCK_RACE_ROUNDS {
            let children: Vec<_> = (0..LOCKERS)
                .map(|_| {
                    std::process::Command::new(&exe)
                        .args([
                            "--exact",
                            "transfer::state::tests::lock_race_child",
                            "--nocapture",
                            "--test-threads=1",
                        ])
                        .env("OSSRELAY_LOCK_RACE_STATE", &state)
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            for c in children {
                let out = c.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "round {round}: two processes held the lock at once: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                total += text
                    .split("HELD ")
                    .nth(1)
                    .and_then(|n| n.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("round {round}: no count in {text:?}"));
            }
        }
        // The race needs contention: many hand-overs per round, not one per process.
        let floor = 2 * (LOCK_RACE_ROUNDS * LOCKERS) as u64;
        assert!(total >= floor, "only {total} acquisitions");
        eprintln!("{total} acquisitions in {LOCK_RACE_ROUNDS} rounds of {LOCKERS} processes");
        assert!(
            !state.with_extension("lock").exists(),
            "lock file left behind"
        );
    }

    #[test]
    fn a_busy_lock_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("copy-x.json");
        let _held = lock(&state).unwrap();
        let err = lock(&state).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn damaged_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap().is_none());
        assert!(matches!(
            load_checked(&path).unwrap(),
            Loaded::Damaged {
                upload_id: None,
                ..
            }
        ));
        assert_ne!(
            state_path(dir.path(), "a", "b"),
            state_path(dir.path(), "b", "a")
        );
    }

    #[test]
    fn a_truncated_file_still_names_its_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy-x.json");
        let mut s = sample();
        s.upload_id = "0004B9894A22E5B1888A1E29F8236E2D".into();
        for n in 1..=40 {
            s.record(StatePart::new(n, 1 << 20, n as u64, format!("E{n}")));
        }
        save(&path, &s).unwrap();
        let full = std::fs::read(&path).unwrap();
        for cut in [full.len() / 2, 200, full.len() - 1] {
            std::fs::write(&path, &full[..cut]).unwrap();
            match load_checked(&path).unwrap() {
                Loaded::Damaged { upload_id, .. } => assert_eq!(
                    upload_id.as_deref(),
                    Some("0004B9894A22E5B1888A1E29F8236E2D"),
                    "cut at {cut}"
                ),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // Cut inside the id: nothing is salvaged rather than a wrong id.
        let at = String::from_utf8_lossy(&full).find("0004B98").unwrap() + 4;
        std::fs::write(&path, &full[..at]).unwrap();
        assert!(matches!(
            load_checked(&path).unwrap(),
            Loaded::Damaged {
                upload_id: None,
                ..
            }
        ));
        // Another version is not resumed, but its upload is named.
        s.version = STATE_VERSION + 1;
        std::fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
        assert!(matches!(
            load_checked(&path).unwrap(),
            Loaded::Damaged {
                upload_id: Some(_),
                ..
            }
        ));
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
