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
}
