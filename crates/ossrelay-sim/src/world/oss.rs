//! The OSS side of the world: accounts and their temporary credentials, buckets (local and in
//! other regions), objects with their checksums and content, multipart uploads and their parts.
//!
//! State only: no HTTP, no signatures. Handlers in `crate::oss` read and change it under
//! [`Oss::lock`]; the ECS side reaches it through the narrow hooks at the end (bucket place,
//! object info, blob writer).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use md5::{Digest as _, Md5};

use crate::auth::KeyInfo;
use crate::config::{SimAccount, SimConfig, SimError, StoreKind};
use crate::crc64;
use crate::store::{self, Content, Segment, Sink};
use crate::synthetic::Synthetic;

#[derive(Clone)]
pub(crate) struct Object {
    pub(crate) size: u64,
    pub(crate) crc: u64,
    /// CRC-64/NVME of the content (S3 dialect's FULL_OBJECT checksum); `None` for objects
    /// written through the OSS dialect, which does not compute it.
    pub(crate) nvme: Option<u64>,
    /// Upper-case hex, unquoted (`…-N` for multipart).
    pub(crate) etag: String,
    pub(crate) last_modified: SystemTime,
    pub(crate) object_type: &'static str,
    pub(crate) storage_class: String,
    /// Content-Type, Cache-Control, …, and `x-oss-meta-*` (lower-case names).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content: Content,
}

pub(crate) struct Bucket {
    pub(crate) account: String,
    pub(crate) created: SystemTime,
    pub(crate) discard: bool,
    pub(crate) objects: BTreeMap<String, Object>,
    pub(crate) lifecycle: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Part {
    pub(crate) size: u64,
    pub(crate) crc: u64,
    /// CRC-64/NVME of the part (S3 dialect only).
    pub(crate) nvme: Option<u64>,
    /// S3 dialect: the part's checksum (base64) in the algorithm its upload named, for
    /// comparing with the `<Checksum<ALG>>` CompleteMultipartUpload lists.
    pub(crate) checksum: Option<String>,
    pub(crate) etag: String,
    pub(crate) last_modified: SystemTime,
    pub(crate) data: Option<Segment>,
}

pub(crate) struct Upload {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) initiated: SystemTime,
    pub(crate) seq: u64,
    pub(crate) storage_class: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) parts: BTreeMap<u32, Part>,
    /// S3: `x-amz-checksum-algorithm` / `x-amz-checksum-type` named at CreateMultipartUpload.
    pub(crate) checksum: Option<(String, String)>,
}

pub(crate) struct TempCred {
    pub(crate) secret: String,
    pub(crate) token: String,
    pub(crate) account: String,
    pub(crate) expires: SystemTime,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) buckets: BTreeMap<String, Bucket>,
    pub(crate) uploads: HashMap<String, Upload>,
    pub(crate) seq: u64,
    pub(crate) temp: HashMap<String, TempCred>,
}

pub(crate) fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !b.starts_with('-')
        && !b.ends_with('-')
}

pub(crate) fn secs(t: SystemTime) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(s)
}

pub(crate) fn upper_hex(b: &[u8]) -> String {
    hex::encode_upper(b)
}

pub(crate) fn default_content_type(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt") => "text/plain",
        Some("html" | "htm") => "text/html",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Where a bucket lives, as the ECS side sees it.
pub(crate) enum BucketPlace {
    /// In this region, owned by this account.
    Local(String),
    /// In another region.
    Remote(String),
    Missing,
}

/// What ImportImage needs of an object.
pub(crate) struct ObjectInfo {
    pub(crate) size: u64,
    pub(crate) storage_class: String,
    pub(crate) content: Content,
}

/// A body being written into the store by the simulator itself (ExportImage).
pub(crate) struct BlobWriter {
    sink: Sink,
    crc: crc64::Crc64,
    md5: Md5,
    size: u64,
}

impl BlobWriter {
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.crc.update(&chunk);
        self.md5.update(&chunk);
        self.size += chunk.len() as u64;
        self.sink.write(chunk).await
    }
}

/// Accounts, buckets, objects and uploads of the simulated OSS.
pub(crate) struct Oss {
    pub(crate) accounts: Vec<SimAccount>,
    /// Buckets in other regions: bucket → region.
    pub(crate) remote: HashMap<String, String>,
    /// Directory of the file store (`None`: memory).
    pub(crate) blob_dir: Option<PathBuf>,
    state: Mutex<State>,
}

impl Oss {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        if cfg.accounts.is_empty() {
            return Err(SimError::Config("at least one account is required".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for a in &cfg.accounts {
            if !seen.insert(a.access_key_id.clone()) {
                return Err(SimError::Config(format!(
                    "AccessKey ID {} is used by two accounts",
                    a.access_key_id
                )));
            }
        }
        let first = cfg.accounts[0].name.clone();
        let now = secs(SystemTime::now());
        let mut state = State::default();
        let add_bucket = |name: &str, account: &str, st: &mut State| -> Result<(), SimError> {
            if !valid_bucket_name(name) {
                return Err(SimError::Config(format!(
                    "invalid bucket name {name:?}: 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
                )));
            }
            if !cfg.accounts.iter().any(|a| a.name == account) {
                return Err(SimError::Config(format!(
                    "bucket {name} names unknown account {account}"
                )));
            }
            st.buckets
                .entry(name.to_string())
                .or_insert_with(|| Bucket {
                    account: account.to_string(),
                    created: now,
                    discard: false,
                    objects: BTreeMap::new(),
                    lifecycle: None,
                });
            Ok(())
        };
        for b in &cfg.buckets {
            add_bucket(&b.name, &b.account, &mut state)?;
        }
        for s in &cfg.synthetic {
            add_bucket(&s.bucket, &first, &mut state)?;
        }
        for d in &cfg.discard {
            add_bucket(d, &first, &mut state)?;
            state.buckets.get_mut(d).expect("just added").discard = true;
        }
        for s in &cfg.synthetic {
            if s.key.is_empty() || s.key.len() > 1023 || s.key.starts_with('/') {
                return Err(SimError::Config(format!("invalid object key {:?}", s.key)));
            }
            let syn = Synthetic::new(&s.key, s.size);
            let crc = syn.crc();
            // Shaped like a multipart ETag (`HEX-N`): it is not the MD5 of the content (that
            // would mean hashing terabytes), and clients must not take it for one (rclone sends
            // a single PUT's source ETag as Content-MD5).
            let etag = format!(
                "{}-{}",
                upper_hex(&Md5::digest(
                    format!("synthetic\n{}\n{}\n{crc}", s.key, s.size).as_bytes(),
                )),
                s.size.div_ceil(64 << 20).max(1)
            );
            let obj = Object {
                size: s.size,
                crc,
                nvme: Some(syn.nvme()),
                etag,
                last_modified: now,
                object_type: "Normal",
                storage_class: "Standard".into(),
                headers: vec![("content-type".into(), default_content_type(&s.key).into())],
                content: Content::Synthetic(Arc::new(syn)),
            };
            state
                .buckets
                .get_mut(&s.bucket)
                .expect("added above")
                .objects
                .insert(s.key.clone(), obj);
        }
        let mut remote = HashMap::new();
        for (b, r) in &cfg.remote_buckets {
            if state.buckets.contains_key(b) {
                return Err(SimError::Config(format!(
                    "bucket {b} is both local and remote ({r})"
                )));
            }
            remote.insert(b.clone(), r.clone());
        }
        let blob_dir = match &cfg.store {
            StoreKind::Memory => None,
            StoreKind::Dir(d) => {
                std::fs::create_dir_all(d).map_err(|source| SimError::Store {
                    path: d.clone(),
                    source,
                })?;
                Some(d.clone())
            }
        };
        Ok(Self {
            accounts: cfg.accounts.clone(),
            remote,
            blob_dir,
            state: Mutex::new(state),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("simulator state lock")
    }

    pub(crate) fn object_crc64(&self, bucket: &str, key: &str) -> Option<(u64, u64)> {
        let st = self.lock();
        let o = st.buckets.get(bucket)?.objects.get(key)?;
        Some((o.size, o.crc))
    }

    pub(crate) fn put_object_bytes(&self, bucket: &str, key: &str, data: Bytes, now: SystemTime) {
        let size = data.len() as u64;
        let crc = crc64::checksum(&data);
        let nvme = Some(crc64::nvme::checksum(&data));
        let etag = upper_hex(&Md5::digest(&data));
        let now = secs(now);
        let mut st = self.lock();
        let first = self.accounts[0].name.clone();
        let b = st
            .buckets
            .entry(bucket.to_string())
            .or_insert_with(|| Bucket {
                account: first,
                created: now,
                discard: false,
                objects: BTreeMap::new(),
                lifecycle: None,
            });
        let content = if b.discard {
            Content::Discarded
        } else {
            Content::Stored(vec![Segment::Mem(Arc::new(vec![data]), size)])
        };
        b.objects.insert(
            key.to_string(),
            Object {
                size,
                crc,
                nvme,
                etag,
                last_modified: now,
                object_type: "Normal",
                storage_class: "Standard".into(),
                headers: vec![("content-type".into(), default_content_type(key).into())],
                content,
            },
        );
    }

    /// Stores `content` (already checksummed by the caller) as `bucket/key`: how the EC2 side
    /// writes an export without copying the disk. The ETag is shaped like a multipart ETag
    /// (`HEX-N`), as AWS's own multi-GiB export objects have, and is not an MD5 of the content.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_object_content(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        crc: u64,
        nvme: Option<u64>,
        content: Content,
        now: SystemTime,
    ) -> Result<(), String> {
        let now = secs(now);
        let mut st = self.lock();
        let Some(b) = st.buckets.get_mut(bucket) else {
            return Err(format!("The S3 bucket {bucket} no longer exists."));
        };
        let etag = format!(
            "{}-{}",
            upper_hex(&Md5::digest(
                format!("content\n{key}\n{size}\n{crc}").as_bytes()
            )),
            size.div_ceil(64 << 20).max(1)
        );
        let content = if b.discard {
            Content::Discarded
        } else {
            content
        };
        b.objects.insert(
            key.to_string(),
            Object {
                size,
                crc,
                nvme,
                etag,
                last_modified: now,
                object_type: "Multipart",
                storage_class: "Standard".into(),
                headers: vec![("content-type".into(), default_content_type(key).into())],
                content,
            },
        );
        Ok(())
    }

    /// `(size, crc64, crc64nvme, content)` of an object, for readers inside the simulator.
    pub(crate) fn object_full(
        &self,
        bucket: &str,
        key: &str,
    ) -> Option<(u64, u64, Option<u64>, Content)> {
        let st = self.lock();
        let o = st.buckets.get(bucket)?.objects.get(key)?;
        Some((o.size, o.crc, o.nvme, o.content.clone()))
    }

    pub(crate) fn get_object_bytes(&self, bucket: &str, key: &str) -> Option<Bytes> {
        let st = self.lock();
        let o = st.buckets.get(bucket)?.objects.get(key)?;
        store::content_bytes_sync(&o.content, 0, o.size)
    }

    pub(crate) fn add_temporary_credentials(
        &self,
        ak: &str,
        secret: &str,
        token: &str,
        account: &str,
        expires: SystemTime,
    ) {
        self.lock().temp.insert(
            ak.to_string(),
            TempCred {
                secret: secret.to_string(),
                token: token.to_string(),
                account: account.to_string(),
                expires,
            },
        );
    }

    pub(crate) fn key_info(&self, ak: &str) -> Option<KeyInfo> {
        if let Some(a) = self.accounts.iter().find(|a| a.access_key_id == ak) {
            return Some(KeyInfo {
                secret: a.access_key_secret.clone(),
                account: a.name.clone(),
                token: None,
            });
        }
        let st = self.lock();
        st.temp.get(ak).map(|t| KeyInfo {
            secret: t.secret.clone(),
            account: t.account.clone(),
            token: Some((t.token.clone(), t.expires)),
        })
    }

    pub(crate) fn bucket_place(&self, bucket: &str) -> BucketPlace {
        if let Some(r) = self.remote.get(bucket) {
            return BucketPlace::Remote(r.clone());
        }
        match self.lock().buckets.get(bucket) {
            Some(b) => BucketPlace::Local(b.account.clone()),
            None => BucketPlace::Missing,
        }
    }

    pub(crate) fn object_info(&self, bucket: &str, key: &str) -> Option<ObjectInfo> {
        let st = self.lock();
        let o = st.buckets.get(bucket)?.objects.get(key)?;
        Some(ObjectInfo {
            size: o.size,
            storage_class: o.storage_class.clone(),
            content: o.content.clone(),
        })
    }

    pub(crate) fn is_discard(&self, bucket: &str) -> bool {
        self.lock().buckets.get(bucket).is_some_and(|b| b.discard)
    }

    /// The lifecycle configuration document a bucket stores (either dialect), if any.
    pub(crate) fn lifecycle(&self, bucket: &str) -> Option<String> {
        self.lock()
            .buckets
            .get(bucket)
            .and_then(|b| b.lifecycle.clone())
    }

    /// Multipart uploads in progress (all buckets).
    pub(crate) fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    pub(crate) async fn blob_writer(&self, bucket: &str) -> io::Result<BlobWriter> {
        Ok(BlobWriter {
            sink: Sink::open(self.blob_dir.as_deref(), self.is_discard(bucket)).await?,
            crc: crc64::Crc64::new(),
            md5: Md5::new(),
            size: 0,
        })
    }

    /// Stores what `w` received as `bucket/key` (as a PutObject would).
    pub(crate) async fn commit_blob(
        &self,
        bucket: &str,
        key: &str,
        w: BlobWriter,
        now: SystemTime,
    ) -> io::Result<()> {
        let BlobWriter {
            sink,
            crc,
            md5,
            size,
        } = w;
        let seg = sink.finish().await?;
        let content = match seg {
            Some(s) => Content::Stored(vec![s]),
            None => Content::Discarded,
        };
        let now = secs(now);
        let mut st = self.lock();
        let Some(b) = st.buckets.get_mut(bucket) else {
            return Err(io::Error::other(format!(
                "bucket {bucket} no longer exists"
            )));
        };
        b.objects.insert(
            key.to_string(),
            Object {
                size,
                crc: crc.sum(),
                nvme: None,
                etag: upper_hex(&md5.finalize()),
                last_modified: now,
                object_type: "Normal",
                storage_class: "Standard".into(),
                headers: vec![("content-type".into(), default_content_type(key).into())],
                content,
            },
        );
        Ok(())
    }
}
