//! The migration state file: which stage a migration reached and what it learned on the way
//! (task ids, exported objects, relayed disks, the new image id). JSON, written atomically
//! with mode 0600, never containing credentials.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::mapping::{Cloud, ImageAttrs};
use super::MigrateError;
use crate::acs::ecs::Image;
use crate::transfer::state::write_atomic;

/// Bumped when the layout changes incompatibly.
pub const STATE_VERSION: u32 = 1;

/// Where a migration is. Stages run in this order; each is re-entrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Look up the source image and start ExportImage.
    Export,
    /// Poll the export task until it finished.
    WaitExport,
    /// Relay each exported disk object to the destination bucket.
    Relay,
    /// Start ImportImage (or find one already running).
    Import,
    /// Poll the new image until it is Available.
    WaitImport,
    /// Delete intermediate objects (unless kept).
    Cleanup,
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::WaitExport => "wait-export",
            Self::Relay => "relay",
            Self::Import => "import",
            Self::WaitImport => "wait-import",
            Self::Cleanup => "cleanup",
            Self::Done => "done",
        }
    }
}

/// What identifies a migration: rerunning with the same values resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationKey {
    pub src_region: String,
    pub image_id: String,
    pub dst_region: String,
    pub dst_bucket: String,
    /// Cloud of the source image (absent in files of same-cloud migrations: `aliyun`).
    #[serde(default, skip_serializing_if = "Cloud::is_aliyun")]
    pub src_cloud: Cloud,
    /// Cloud of the new image.
    #[serde(default, skip_serializing_if = "Cloud::is_aliyun")]
    pub dst_cloud: Cloud,
}

/// One disk: the exported object, where it goes, and whether it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskState {
    /// `system` or `data`.
    pub role: String,
    pub source_bucket: String,
    pub source_key: String,
    pub destination_key: String,
    /// Disk size in GiB from the source image (ImportImage's DiskImageSize).
    pub size_gib: Option<u64>,
    pub copied: bool,
    pub bytes: u64,
    /// CRC-64 of the destination object, as a decimal string.
    #[serde(with = "opt_u64_string", default)]
    pub crc64: Option<u64>,
    /// The proofs that held for the relay (the copy's `verified_by`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified_by: Vec<String>,
    /// `--disk-format auto`: the zero share measured before the relay (see
    /// [`super::zeros`]); absent when nothing was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_share: Option<f64>,
    /// A disk converted on the way: the guest RAW's size and CRC-64 (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_bytes: Option<u64>,
    #[serde(
        with = "opt_u64_string",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub raw_crc64: Option<u64>,
}

pub(crate) mod opt_u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

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

/// Everything a rerun needs to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateState {
    pub version: u32,
    pub key: MigrationKey,
    pub src_bucket: String,
    pub stage: Stage,
    /// The source image as ECS DescribeImages reported it before the export.
    pub source_image: Option<Image>,
    /// The source image in both clouds' terms (cross-cloud migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_attrs: Option<ImageAttrs>,
    /// Set just before ExportImage is called, so a rerun after a crash looks for the task.
    #[serde(default)]
    pub export_requested: bool,
    pub export_task_id: Option<String>,
    pub disks: Vec<DiskState>,
    /// The name chosen for the new image (fixed at the first import attempt).
    pub image_name: Option<String>,
    pub import_task_id: Option<String>,
    pub new_image_id: Option<String>,
    /// Failed imports so far; part of ImportImage's ClientToken so a retry is a new request.
    #[serde(default)]
    pub import_attempt: u32,
    /// Failed exports so far (EC2: part of ExportImage's ClientToken, as for imports).
    #[serde(default)]
    pub export_attempt: u32,
    /// RFC 3339, for humans reading the file.
    pub updated_at: String,
}

impl MigrateState {
    pub fn new(key: MigrationKey, src_bucket: String) -> Self {
        Self {
            version: STATE_VERSION,
            key,
            src_bucket,
            stage: Stage::Export,
            source_image: None,
            source_attrs: None,
            export_requested: false,
            export_task_id: None,
            disks: Vec::new(),
            image_name: None,
            import_task_id: None,
            new_image_id: None,
            import_attempt: 0,
            export_attempt: 0,
            updated_at: String::new(),
        }
    }
}

/// `<dir>/migrate-<hash of the key>.json`.
pub fn state_path(dir: &Path, key: &MigrationKey) -> PathBuf {
    let mut h = Sha256::new();
    for part in [
        &key.src_region,
        &key.image_id,
        &key.dst_region,
        &key.dst_bucket,
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    // Same-cloud keys hash as they always did, so older state files are found again.
    for cloud in [key.src_cloud, key.dst_cloud] {
        if !cloud.is_aliyun() {
            h.update(cloud.as_str().as_bytes());
            h.update(b"\n");
        }
    }
    dir.join(format!("migrate-{}.json", &hex::encode(h.finalize())[..32]))
}

/// Reads the state; `Ok(None)` when there is none. A file of another version or for another
/// key is an error rather than silently ignored: it records cloud resources (tasks, images)
/// that a fresh start would duplicate.
pub fn load(path: &Path, key: &MigrationKey) -> Result<Option<MigrateState>, MigrateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(MigrateError::State(format!(
                "cannot read {}: {e}; check its permissions",
                path.display()
            )))
        }
    };
    let state: MigrateState = serde_json::from_slice(&bytes).map_err(|e| {
        MigrateError::State(format!(
            "{} is not a migration state file ({e}); move it away to start over",
            path.display()
        ))
    })?;
    if state.version != STATE_VERSION {
        return Err(MigrateError::State(format!(
            "{} has version {} (this ossrelay writes {STATE_VERSION}); finish it with the ossrelay that wrote it or move it away",
            path.display(),
            state.version
        )));
    }
    if &state.key != key {
        return Err(MigrateError::State(format!(
            "{} belongs to another migration ({:?}); move it away",
            path.display(),
            state.key
        )));
    }
    Ok(Some(state))
}

/// Writes the state atomically (temp file 0600, fsync, rename).
pub fn save(path: &Path, state: &mut MigrateState) -> Result<(), MigrateError> {
    state.updated_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(path, &json).map_err(|e| {
        MigrateError::State(format!(
            "cannot write {}: {e}; choose a writable --state-dir",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MigrationKey {
        MigrationKey {
            src_region: "cn-hangzhou".into(),
            image_id: "m-1".into(),
            dst_region: "eu-central-1".into(),
            dst_bucket: "dst".into(),
            src_cloud: Cloud::Aliyun,
            dst_cloud: Cloud::Aliyun,
        }
    }

    #[test]
    fn round_trip_mode_and_key_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path(), &key());
        assert!(load(&path, &key()).unwrap().is_none());
        let mut s = MigrateState::new(key(), "src".into());
        s.stage = Stage::Relay;
        s.disks.push(DiskState {
            role: "system".into(),
            source_bucket: "src".into(),
            source_key: "p_m-1_system.raw.tar.gz".into(),
            destination_key: "p_m-1_system.raw".into(),
            size_gib: Some(40),
            copied: true,
            bytes: 42,
            crc64: Some(u64::MAX),
            verified_by: vec!["part_crc64ecma".into()],
            zero_share: None,
            raw_bytes: None,
            raw_crc64: None,
        });
        save(&path, &mut s).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"stage\": \"relay\""), "{text}");
        assert!(text.contains("\"18446744073709551615\""), "{text}");
        let back = load(&path, &key()).unwrap().unwrap();
        assert_eq!(back, s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600);
        }
        let mut other = key();
        other.dst_bucket = "elsewhere".into();
        assert!(matches!(load(&path, &other), Err(MigrateError::State(_))));
        assert_ne!(state_path(dir.path(), &other), path);
        // A cross-cloud migration of the same ids is another migration, with another file;
        // a same-cloud key serialises without cloud fields (older files still load).
        let mut aws = key();
        aws.src_cloud = Cloud::Aws;
        assert_ne!(state_path(dir.path(), &aws), path);
        assert!(!text.contains("src_cloud"), "{text}");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(load(&path, &key()), Err(MigrateError::State(_))));
    }
}
