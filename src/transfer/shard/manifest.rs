//! The manifest of a sharded copy and the records its workers leave: small JSON objects in
//! the manifest's store, so that no worker needs a disk another can see.
//!
//! Guarantees callers can rely on:
//! * A manifest read back is the one a plan wrote, where it wrote it: its `check` (SHA-256 of
//!   everything else) and its own location must hold, or it is refused ([`Manifest::parse`]).
//! * Records are keyed by the plan (`records/<plan id>/`, the plan id derived from the
//!   destination and the upload id): a record of another plan is never read as this one's,
//!   and every record names its upload id, checked when read.
//! * A record is one object per acknowledged part, written whole by a single PUT: two workers
//!   recording the same part write the same bytes (same part, same CRC), whichever lands last.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checksum::Checksums;
use crate::store::retry::{should_retry, Backoff};
use crate::store::{ErrorClass, ObjectStore, PutOptions, StoreError};
use crate::transfer::state::{SourceFingerprint, StatePart};
use crate::transfer::Location;

/// The `format` a manifest of this release carries.
pub const MANIFEST_FORMAT: &str = "ossrelay-shards/1";

/// Where a plan writes its manifest when no `--manifest` is given: next to the destination.
pub fn default_manifest_key(dst_key: &str) -> String {
    format!("{dst_key}.ossrelay/manifest.json")
}

/// Largest manifest or record read back (a manifest of 10,000 shards is about 600 KiB).
const MAX_SMALL_OBJECT: u64 = 16 * 1024 * 1024;

/// The parts one shard relays: `parts` contiguous part numbers from `first_part` (none when
/// `parts` is 0, a plan with more shards than parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    pub index: u32,
    pub first_part: u32,
    pub parts: u32,
}

impl ShardRange {
    /// Part numbers of this shard.
    pub fn numbers(&self) -> std::ops::Range<u32> {
        self.first_part..self.first_part + self.parts
    }

    /// Whether part `number` is this shard's.
    pub fn holds(&self, number: u32) -> bool {
        self.numbers().contains(&number)
    }
}

/// Contiguous, balanced ranges of `parts` parts over `shards` shards (each streams its part
/// of the source sequentially; sizes differ by at most one part).
pub fn assign(parts: u32, shards: u32) -> Vec<ShardRange> {
    let (p, n) = (parts as u64, shards as u64);
    (0..n)
        .map(|i| {
            let a = i * p / n;
            let b = (i + 1) * p / n;
            ShardRange {
                index: i as u32,
                first_part: a as u32 + 1,
                parts: (b - a) as u32,
            }
        })
        .collect()
}

/// What the Complete step established, written back into the manifest: a worker or a
/// complete run after it has nothing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// The destination object's ETag as Complete returned it.
    pub etag: String,
    /// The whole object's checksums, folded from the parts and proven.
    pub checksums: Checksums,
}

/// The plan of one sharded copy (see the module docs of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Where the manifest lives, as its store describes it: a copy elsewhere is refused.
    pub manifest: String,
    pub source: String,
    pub destination: String,
    /// The source as the plan found it: size, ETag (sent as `If-Match`), CRCs.
    pub source_meta: SourceFingerprint,
    pub upload_id: String,
    pub part_size: u64,
    /// Parts of the whole object.
    pub parts: u32,
    pub shards: Vec<ShardRange>,
    /// Key prefix, in the manifest's store, of the parts' records.
    pub records: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Completed>,
    /// SHA-256 (hex) of the manifest with this field empty.
    #[serde(default)]
    pub check: String,
}

impl Manifest {
    /// A new manifest at `at` (sealed: its check is set).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        at: &Location,
        source: String,
        destination: String,
        source_meta: SourceFingerprint,
        upload_id: String,
        part_size: u64,
        parts: u32,
        shards: u32,
    ) -> Self {
        let records = format!(
            "{}records/{}/",
            key_dir(&at.key),
            plan_id(&destination, &upload_id)
        );
        let mut m = Self {
            format: MANIFEST_FORMAT.to_string(),
            manifest: at.describe(),
            source,
            destination,
            source_meta,
            upload_id,
            part_size,
            parts,
            shards: assign(parts, shards),
            records,
            completed: None,
            check: String::new(),
        };
        m.seal();
        m
    }

    fn digest(&self) -> String {
        let mut c = self.clone();
        c.check = String::new();
        let json = serde_json::to_vec(&c).expect("a manifest serialises");
        hex::encode(Sha256::digest(&json))
    }

    /// Sets the check after a change.
    pub fn seal(&mut self) {
        self.check = self.digest();
    }

    /// Bytes of the object.
    pub fn size(&self) -> u64 {
        self.source_meta.size
    }

    /// Parses and checks a manifest read from `at` (see the module docs); the error says why
    /// it cannot be used.
    pub fn parse(at: &Location, bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("it is not a manifest of this release ({e})"))?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!(
                "its format is {:?}, this release reads {MANIFEST_FORMAT:?}",
                m.format
            ));
        }
        if m.check != m.digest() {
            return Err("it was changed after the plan wrote it (its check does not match)".into());
        }
        if m.manifest != at.describe() {
            return Err(format!(
                "it was written for {}, not for where it was read",
                m.manifest
            ));
        }
        let want = format!(
            "{}records/{}/",
            key_dir(&at.key),
            plan_id(&m.destination, &m.upload_id)
        );
        if m.records != want {
            return Err("its records prefix does not belong to its upload".into());
        }
        let planned = crate::transfer::plan::parts(m.size(), m.part_size.max(1)).len();
        let covered: u64 = m.shards.iter().map(|s| s.parts as u64).sum();
        if m.part_size == 0 || planned != m.parts as usize || covered != m.parts as u64 {
            return Err("its parts do not cover the object".into());
        }
        let mut next = 1;
        for (i, s) in m.shards.iter().enumerate() {
            if s.index as usize != i || (s.parts > 0 && s.first_part != next) {
                return Err("its shards are not contiguous ranges of parts".into());
            }
            next += s.parts;
        }
        Ok(m)
    }

    /// The shard of index `i`, if the plan has it.
    pub fn shard(&self, i: u32) -> Option<ShardRange> {
        self.shards.get(i as usize).copied()
    }

    /// The shard relaying part `number`.
    pub fn shard_of(&self, number: u32) -> Option<u32> {
        self.shards
            .iter()
            .find(|s| s.holds(number))
            .map(|s| s.index)
    }

    /// The manifest as JSON (what is stored).
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(self).expect("a manifest serialises"))
    }
}

/// The "directory" of a key: everything up to and including its last `/`.
fn key_dir(key: &str) -> &str {
    match key.rfind('/') {
        Some(i) => &key[..=i],
        None => "",
    }
}

/// A short name of one plan: 16 hex digits of SHA-256 over the destination and upload id.
pub(crate) fn plan_id(destination: &str, upload_id: &str) -> String {
    let d = Sha256::digest(format!("{destination}\n{upload_id}").as_bytes());
    hex::encode(&d[..8])
}

/// One acknowledged part as a worker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartRecord {
    upload_id: String,
    part: StatePart,
}

/// All parts of a shard, written once the shard is done (one read instead of one per part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShardRecord {
    upload_id: String,
    shard: u32,
    parts: Vec<StatePart>,
}

/// The records of one plan in the manifest's store.
#[derive(Clone)]
pub struct Records {
    pub store: std::sync::Arc<dyn ObjectStore>,
    pub prefix: String,
    pub upload_id: String,
    /// Limit on one request's response ([`crate::transfer::CopyOptions::request_timeout`]).
    pub timeout: Option<Duration>,
    /// Attempts and backoff of a record's PUT (see [`put_small`]).
    pub attempts: u32,
    pub backoff: Backoff,
}

impl Records {
    fn part_key(&self, number: u32) -> String {
        format!("{}part-{number:05}.json", self.prefix)
    }

    fn shard_key(&self, index: u32) -> String {
        format!("{}shard-{index:05}.json", self.prefix)
    }

    /// Where a record lives, for messages.
    pub fn describe(&self) -> String {
        self.store.describe(&self.prefix)
    }

    pub async fn put_part(&self, part: &StatePart) -> Result<(), StoreError> {
        let rec = PartRecord {
            upload_id: self.upload_id.clone(),
            part: part.clone(),
        };
        let body = Bytes::from(serde_json::to_vec(&rec).expect("a record serialises"));
        self.put(&self.part_key(part.number), body).await
    }

    pub async fn put_shard(&self, index: u32, parts: Vec<StatePart>) -> Result<(), StoreError> {
        let rec = ShardRecord {
            upload_id: self.upload_id.clone(),
            shard: index,
            parts,
        };
        let body = Bytes::from(serde_json::to_vec(&rec).expect("a record serialises"));
        self.put(&self.shard_key(index), body).await
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        put_small(
            &*self.store,
            key,
            body,
            self.timeout,
            self.attempts,
            self.backoff.clone(),
        )
        .await
    }

    /// The record of part `number`, if there is one of this upload.
    pub async fn part(&self, number: u32) -> Result<Option<StatePart>, StoreError> {
        let Some(b) = get_small(&*self.store, &self.part_key(number), self.timeout).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<PartRecord>(&b) {
            Ok(r) if r.upload_id == self.upload_id && r.part.number == number => {
                Ok(Some(r.part).filter(|p| p.checksums.crc64_xz().is_some()))
            }
            // A damaged or foreign record proves nothing: the part is sent again.
            _ => Ok(None),
        }
    }

    /// The parts of shard `index` recorded once it was done, if it was.
    pub async fn shard(&self, index: u32) -> Result<Option<Vec<StatePart>>, StoreError> {
        let Some(b) = get_small(&*self.store, &self.shard_key(index), self.timeout).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<ShardRecord>(&b) {
            Ok(r) if r.upload_id == self.upload_id && r.shard == index => Ok(Some(
                r.parts
                    .into_iter()
                    .filter(|p| p.checksums.crc64_xz().is_some())
                    .collect(),
            )),
            _ => Ok(None),
        }
    }

    /// The records of `numbers` (absent ones left out), `concurrency` reads at a time.
    pub async fn parts(
        &self,
        numbers: Vec<u32>,
        concurrency: usize,
    ) -> Result<Vec<StatePart>, StoreError> {
        let reads: Vec<_> = numbers
            .into_iter()
            .map(|n| async move { self.part(n).await })
            .collect();
        let mut s = futures::stream::iter(reads).buffer_unordered(concurrency.max(1));
        let mut out = Vec::new();
        while let Some(r) = s.next().await {
            if let Some(p) = r? {
                out.push(p);
            }
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// Deletes every record of the plan's `parts` parts and `shards` shards; how many
    /// deletes failed (best effort: a record left behind costs a few bytes, never a wrong
    /// result, since the plan id keys it).
    pub async fn delete_all(&self, parts: u32, shards: u32, concurrency: usize) -> u64 {
        let keys = (1..=parts)
            .map(|n| self.part_key(n))
            .chain((0..shards).map(|i| self.shard_key(i)));
        let dels = keys.map(|k| async move {
            match crate::transfer::within(self.timeout, self.store.delete(&k)).await {
                Some(Ok(())) => 0u64,
                Some(Err(e)) if e.class == ErrorClass::NotFound => 0,
                _ => 1,
            }
        });
        futures::stream::iter(dels)
            .buffer_unordered(concurrency.max(1))
            .fold(0, |a, b| async move { a + b })
            .await
    }
}

/// Reads a small object whole: `None` when there is none.
pub async fn get_small(
    store: &dyn ObjectStore,
    key: &str,
    timeout: Option<Duration>,
) -> Result<Option<Bytes>, StoreError> {
    let late = || StoreError::transient(format!("no response from {}", store.describe(key)));
    let head = match crate::transfer::within(timeout, store.head(key))
        .await
        .ok_or_else(late)?
    {
        Ok(h) => h,
        Err(e) if e.class == ErrorClass::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if head.size > MAX_SMALL_OBJECT {
        return Err(StoreError::new(
            ErrorClass::Client,
            format!(
                "{} is {} bytes, too large for a manifest or record",
                store.describe(key),
                head.size
            ),
        ));
    }
    if head.size == 0 {
        return Ok(Some(Bytes::new()));
    }
    let etag = (!head.etag.is_empty()).then_some(head.etag.as_str());
    let mut body = match crate::transfer::within(timeout, store.get_range(key, 0, head.size, etag))
        .await
        .ok_or_else(late)?
    {
        Ok(b) => b,
        // Deleted or replaced between the HEAD and the GET: as good as absent or unread.
        Err(e) if e.class == ErrorClass::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(head.size as usize);
    while let Some(chunk) = crate::transfer::within(timeout, body.next())
        .await
        .ok_or_else(late)?
    {
        out.extend_from_slice(&chunk?);
    }
    if out.len() as u64 != head.size {
        return Err(StoreError::transient(format!(
            "{} ended after {} of {} bytes",
            store.describe(key),
            out.len(),
            head.size
        )));
    }
    Ok(Some(Bytes::from(out)))
}

/// Writes a small object whole. The store's PUT takes a one-shot body, which its transport
/// cannot replay; the bytes are in memory here, so this is the one place such a PUT is tried
/// again (a record is to a worker what a part is to the scheduler: it retries it, nobody
/// else), up to `attempts` times on retryable errors.
pub async fn put_small(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    timeout: Option<Duration>,
    attempts: u32,
    mut backoff: Backoff,
) -> Result<(), StoreError> {
    let opts = PutOptions {
        content_type: Some("application/json".into()),
        user_meta: Vec::new(),
    };
    let mut attempt = 1;
    loop {
        let len = body.len() as u64;
        let stream: crate::store::ByteStream =
            Box::pin(futures::stream::once(std::future::ready(Ok::<
                Bytes,
                StoreError,
            >(
                body.clone()
            ))));
        let r = crate::transfer::within(timeout, store.put(key, stream, len, &opts))
            .await
            .unwrap_or_else(|| {
                Err(StoreError::transient(format!(
                    "no response from {}",
                    store.describe(key)
                )))
            });
        match r {
            Ok(_) => return Ok(()),
            Err(e) if should_retry(e.class, attempt, attempts) => {
                tokio::time::sleep(backoff.next(e.class)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_contiguous_and_balanced() {
        let a = assign(10, 4);
        assert_eq!(
            a.iter()
                .map(|s| (s.first_part, s.parts))
                .collect::<Vec<_>>(),
            [(1, 2), (3, 3), (6, 2), (8, 3)]
        );
        let a = assign(2, 4);
        assert_eq!(a.iter().map(|s| s.parts).sum::<u32>(), 2);
        assert_eq!(a.len(), 4);
        let a = assign(10_000, 3);
        assert_eq!(a[2].first_part + a[2].parts, 10_001);
        assert!(a.iter().all(|s| (3333..=3334).contains(&s.parts)));
    }

    #[test]
    fn key_dir_and_default_location() {
        assert_eq!(
            default_manifest_key("a/b.raw"),
            "a/b.raw.ossrelay/manifest.json"
        );
        assert_eq!(
            key_dir("a/b.raw.ossrelay/manifest.json"),
            "a/b.raw.ossrelay/"
        );
        assert_eq!(key_dir("m.json"), "");
        assert_ne!(plan_id("oss://b/k", "u1"), plan_id("oss://b/k", "u2"));
    }
}
