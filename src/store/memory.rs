//! An in-memory [`ObjectStore`] with faithful multipart semantics, fault injection and
//! counters, for engine tests.
//!
//! Semantics follow OSS (oss-protocol.md §6.7–§6.11): parts are replaceable, Complete checks
//! strictly ascending part numbers, ETags and the 100 KiB minimum for all but the last part,
//! and returns the whole-object CRC-64 folded from the part CRCs with `crc64::combine`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::checksum::{crc64, Algorithm, Checksum, Checksums};

use super::{
    ByteStream, ChecksumCaps, ErrorClass, Limits, ListedPart, ObjectMeta, ObjectStore, PartSpec,
    PutOptions, StoreError, Uploaded,
};

/// The operation a [`FaultRule`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Head,
    Get,
    Put,
    CreateMultipart,
    UploadPart,
    ListParts,
    Complete,
    Abort,
    Delete,
}

/// What goes wrong. Offsets are relative to the start of the request's body.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The request fails with this class.
    Error(ErrorClass),
    /// GET: the body ends cleanly after `after` bytes (a silently short body).
    Truncate { after: u64 },
    /// GET: the body breaks with a transient error after `after` bytes.
    Break { after: u64 },
    /// GET: after `after` bytes the body stalls forever.
    Stall { after: u64 },
    /// GET: the byte at `at` is flipped. UploadPart / Put: the byte at `at` is flipped as
    /// stored (the reported CRC-64 is the stored bytes').
    Corrupt { at: u64 },
    /// UploadPart / Put / Complete: the data is stored intact but a wrong CRC-64 is reported.
    WrongCrc,
    /// GET: before serving, the object is replaced by these bytes (new ETag).
    Replace(Bytes),
    /// Any op: wait this long before answering.
    Delay(Duration),
    /// Any op: never answer (and never read the request body).
    Hang,
    /// UploadPart: the body is read in full, then the part is stored and answered only after
    /// this delay; a client that gives up meanwhile does not stop the store (a server that
    /// got the whole request finishes it), so the part may land after a later upload of the
    /// same number.
    AckDelay(Duration),
    /// Complete: the object is completed, but the answer is `NoSuchUpload` (what a retry
    /// gets after the first answer was lost).
    AppliedThenNotFound,
}

/// When a [`Fault`] fires.
#[derive(Debug, Clone)]
pub struct FaultRule {
    op: Op,
    fault: Fault,
    nth: Option<u64>,
    remaining: Option<u32>,
    probability: f64,
    part: Option<u32>,
}

impl FaultRule {
    /// Fires on every call of `op` (narrow it with the builder methods).
    pub fn new(op: Op, fault: Fault) -> Self {
        Self {
            op,
            fault,
            nth: None,
            remaining: None,
            probability: 1.0,
            part: None,
        }
    }

    /// Only on the n-th call (1-based) of the op.
    pub fn nth(mut self, n: u64) -> Self {
        self.nth = Some(n);
        self
    }

    /// At most `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }

    /// With this probability per matching call.
    pub fn probability(mut self, p: f64) -> Self {
        self.probability = p;
        self
    }

    /// Only for this part number (UploadPart) — for GET, the part whose range starts at
    /// `(n - 1) × part_size` cannot be known here, so GET rules ignore it.
    pub fn part(mut self, n: u32) -> Self {
        self.part = Some(n);
        self
    }
}

/// Counters the tests assert on.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_uploaded: AtomicU64,
    pub get_requests: AtomicU64,
    pub part_uploads: AtomicU64,
    pub puts: AtomicU64,
    pub completes: AtomicU64,
    pub aborts: AtomicU64,
    pub deletes: AtomicU64,
    pub inflight_uploads: AtomicUsize,
    pub max_inflight_uploads: AtomicUsize,
}

#[derive(Debug, Clone)]
struct Obj {
    data: Bytes,
    etag: String,
    last_modified: String,
    crc64: u64,
    content_type: Option<String>,
    user_meta: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct StoredPart {
    data: Bytes,
    etag: String,
    crc64: u64,
}

#[derive(Debug)]
struct Upload {
    key: String,
    opts: PutOptions,
    parts: BTreeMap<u32, StoredPart>,
}

#[derive(Debug, Default)]
struct Inner {
    objects: HashMap<String, Obj>,
    uploads: HashMap<String, Upload>,
    next_id: u64,
    generation: u64,
    calls: HashMap<Op, u64>,
    uploads_per_part: HashMap<u32, u32>,
}

/// The in-memory store. Create with [`MemoryStore::new`]; share as `Arc<dyn ObjectStore>`.
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    inner: Mutex<Inner>,
    faults: Mutex<Vec<FaultRule>>,
    report_crc: AtomicBool,
    /// Each part upload gets its own ETag, even for the same bytes (stores whose ETag is not
    /// the MD5, e.g. with SSE-KMS).
    unique_etags: AtomicBool,
    uploads_seen: AtomicU64,
    chunk: AtomicUsize,
    limits: Mutex<Limits>,
    /// Counters for assertions.
    pub counters: Counters,
}

fn err(class: ErrorClass, code: &str, status: u16, message: &str) -> StoreError {
    StoreError {
        class,
        code: Some(code.to_string()),
        status: Some(status),
        request_id: None,
        message: message.to_string(),
    }
}

fn no_such_upload() -> StoreError {
    err(
        ErrorClass::NotFound,
        "NoSuchUpload",
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
}

fn injected(class: ErrorClass) -> StoreError {
    let (code, status) = match class {
        ErrorClass::Throttled => ("SlowDown", 503),
        ErrorClass::Transient => ("InternalError", 500),
        ErrorClass::ClockSkew => ("RequestTimeTooSkewed", 403),
        ErrorClass::Auth => ("AccessDenied", 403),
        ErrorClass::NotFound => ("NoSuchKey", 404),
        ErrorClass::Precondition => ("PreconditionFailed", 412),
        ErrorClass::Client => ("InvalidArgument", 400),
    };
    err(class, code, status, "injected fault")
}

impl MemoryStore {
    /// An empty store named `name` (used in descriptions: `mem://name/key`).
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            inner: Mutex::new(Inner::default()),
            faults: Mutex::new(Vec::new()),
            report_crc: AtomicBool::new(true),
            unique_etags: AtomicBool::new(false),
            uploads_seen: AtomicU64::new(0),
            chunk: AtomicUsize::new(64 * 1024),
            // The plan a local file gets (OSS's numbers), without reaching up into a dialect.
            limits: Mutex::new(super::local::LIMITS),
            counters: Counters::default(),
        })
    }

    /// Stores an object (replacing any), with a fresh ETag.
    pub fn insert(&self, key: &str, data: impl Into<Bytes>) {
        self.insert_with_meta(key, data, None, Vec::new());
    }

    /// Stores an object with a Content-Type and user metadata.
    pub fn insert_with_meta(
        &self,
        key: &str,
        data: impl Into<Bytes>,
        content_type: Option<&str>,
        user_meta: Vec<(String, String)>,
    ) {
        let data = data.into();
        let crc = crc64::checksum(&data);
        let mut g = self.inner.lock().unwrap();
        let obj = new_obj(
            &mut g,
            data,
            crc,
            content_type.map(str::to_string),
            user_meta,
        );
        g.objects.insert(key.to_string(), obj);
    }

    /// The bytes of an object, if present.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.inner
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|o| o.data.clone())
    }

    /// Adds a fault rule (rules are checked in the order added; the first match fires).
    pub fn inject(&self, rule: FaultRule) {
        self.faults.lock().unwrap().push(rule);
    }

    /// Removes all fault rules.
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// Whether CRC-64s are reported (off = a store without CRC support).
    pub fn set_report_crc(&self, on: bool) {
        self.report_crc.store(on, Relaxed);
    }

    /// Size of the chunks GET bodies are cut into.
    /// Give every part upload its own ETag (see `unique_etags`).
    pub fn set_unique_etags(&self, on: bool) {
        self.unique_etags.store(on, Relaxed);
    }

    /// The parts of upload `upload_id` as stored: (number, ETag).
    pub fn stored_parts(&self, upload_id: &str) -> Vec<(u32, String)> {
        let g = self.inner.lock().unwrap();
        g.uploads.get(upload_id).map_or_else(Vec::new, |u| {
            u.parts.iter().map(|(n, p)| (*n, p.etag.clone())).collect()
        })
    }

    pub fn set_chunk_size(&self, n: usize) {
        self.chunk.store(n.max(1), Relaxed);
    }

    pub fn set_limits(&self, l: Limits) {
        *self.limits.lock().unwrap() = l;
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.inner.lock().unwrap().uploads.len()
    }

    /// How many times part `n` was uploaded (successfully stored).
    pub fn part_uploads(&self, n: u32) -> u32 {
        self.inner
            .lock()
            .unwrap()
            .uploads_per_part
            .get(&n)
            .copied()
            .unwrap_or(0)
    }

    /// Resets the per-part upload counts (e.g. between a crash and a resume).
    pub fn reset_part_uploads(&self) {
        self.inner.lock().unwrap().uploads_per_part.clear();
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.inner
            .lock()
            .unwrap()
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    fn crc_out(&self, c: u64) -> Checksums {
        if self.report_crc.load(Relaxed) {
            Checksum::Crc64Xz(c).into()
        } else {
            Checksums::new()
        }
    }

    /// Counts the call and returns the fault that fires for it, if any.
    fn fault(&self, op: Op, part: Option<u32>) -> Option<Fault> {
        let n = {
            let mut g = self.inner.lock().unwrap();
            let c = g.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        let mut rules = self.faults.lock().unwrap();
        for r in rules.iter_mut() {
            if r.op != op
                || r.nth.is_some_and(|k| k != n)
                || r.remaining == Some(0)
                || (r.part.is_some() && part.is_some() && r.part != part)
            {
                continue;
            }
            if r.probability < 1.0 && rand::random::<f64>() >= r.probability {
                continue;
            }
            if let Some(k) = r.remaining.as_mut() {
                *k -= 1;
            }
            return Some(r.fault.clone());
        }
        None
    }

    async fn pre(&self, op: Op, part: Option<u32>) -> Result<Option<Fault>, StoreError> {
        match self.fault(op, part) {
            Some(Fault::Error(c)) => Err(injected(c)),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::Hang) => futures::future::pending().await,
            other => Ok(other),
        }
    }
}

fn new_obj(
    g: &mut Inner,
    data: Bytes,
    crc: u64,
    content_type: Option<String>,
    user_meta: Vec<(String, String)>,
) -> Obj {
    g.generation += 1;
    Obj {
        etag: format!("{crc:016X}{:08X}", g.generation),
        last_modified: httpdate::fmt_http_date(std::time::SystemTime::now()),
        data,
        crc64: crc,
        content_type,
        user_meta,
    }
}

/// Reads a whole request body, checking its length.
async fn read_body(mut body: ByteStream, len: u64) -> Result<BytesMut, StoreError> {
    let mut buf = BytesMut::with_capacity(len.min(1 << 30) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| StoreError::transient(format!("request body broke off: {}", e.message)))?;
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > len {
            return Err(err(
                ErrorClass::Client,
                "InvalidArgument",
                400,
                "request body longer than Content-Length",
            ));
        }
    }
    if buf.len() as u64 != len {
        return Err(err(
            ErrorClass::Transient,
            "IncompleteBody",
            400,
            "request body shorter than Content-Length",
        ));
    }
    Ok(buf)
}

/// Decrements the in-flight upload count when an upload ends.
/// A part upload whose body was read: stored by [`Landing::land`], or when dropped (the
/// client gave up while the store still had to answer: it stores the part all the same).
struct Landing<'a> {
    store: &'a MemoryStore,
    upload_id: &'a str,
    number: u32,
    part: Option<StoredPart>,
}

impl Landing<'_> {
    fn land(&mut self) -> Result<(), StoreError> {
        let Some(p) = self.part.take() else {
            return Ok(());
        };
        let len = p.data.len() as u64;
        let mut g = self.store.inner.lock().unwrap();
        let Some(u) = g.uploads.get_mut(self.upload_id) else {
            return Err(no_such_upload());
        };
        u.parts.insert(self.number, p);
        *g.uploads_per_part.entry(self.number).or_insert(0) += 1;
        let c = &self.store.counters;
        c.part_uploads.fetch_add(1, Relaxed);
        c.bytes_uploaded.fetch_add(len, Relaxed);
        Ok(())
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let _ = self.land();
    }
}

struct Inflight<'a>(&'a Counters);

impl<'a> Inflight<'a> {
    fn new(c: &'a Counters) -> Self {
        let now = c.inflight_uploads.fetch_add(1, Relaxed) + 1;
        c.max_inflight_uploads.fetch_max(now, Relaxed);
        Self(c)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight_uploads.fetch_sub(1, Relaxed);
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self, key: &str) -> String {
        format!("mem://{}/{key}", self.name)
    }

    fn limits(&self) -> Limits {
        *self.limits.lock().unwrap()
    }

    fn checksums(&self) -> ChecksumCaps {
        ChecksumCaps {
            reports: if self.report_crc.load(Relaxed) {
                &[Algorithm::Crc64Xz]
            } else {
                &[]
            },
            verifies: &[],
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.pre(Op::Head, None).await?;
        let g = self.inner.lock().unwrap();
        let o = g.objects.get(key).ok_or_else(|| {
            err(
                ErrorClass::NotFound,
                "NoSuchKey",
                404,
                "The specified key does not exist.",
            )
        })?;
        Ok(ObjectMeta {
            size: o.data.len() as u64,
            etag: o.etag.clone(),
            last_modified: Some(o.last_modified.clone()),
            checksums: self.crc_out(o.crc64),
            content_type: o.content_type.clone(),
            user_meta: o.user_meta.clone(),
        })
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        self.counters.get_requests.fetch_add(1, Relaxed);
        let fault = self.pre(Op::Get, None).await?;
        let mut g = self.inner.lock().unwrap();
        if let Some(Fault::Replace(data)) = &fault {
            let crc = crc64::checksum(data);
            let old = g.objects.get(key).cloned();
            let obj = new_obj(
                &mut g,
                data.clone(),
                crc,
                old.as_ref().and_then(|o| o.content_type.clone()),
                old.map(|o| o.user_meta).unwrap_or_default(),
            );
            g.objects.insert(key.to_string(), obj);
        }
        let o = g.objects.get(key).ok_or_else(|| {
            err(
                ErrorClass::NotFound,
                "NoSuchKey",
                404,
                "The specified key does not exist.",
            )
        })?;
        if let Some(want) = if_match {
            if want != o.etag {
                return Err(err(
                    ErrorClass::Precondition,
                    "PreconditionFailed",
                    412,
                    "At least one of the pre-conditions you specified did not hold",
                ));
            }
        }
        let size = o.data.len() as u64;
        if start > end || end > size {
            return Err(err(
                ErrorClass::Client,
                "InvalidRange",
                416,
                "The requested range cannot be satisfied",
            ));
        }
        let mut data = o.data.slice(start as usize..end as usize);
        drop(g);
        enum Tail {
            End,
            Break,
            Stall,
        }
        let mut tail = Tail::End;
        match fault {
            Some(Fault::Truncate { after }) => {
                data = data.slice(..(after as usize).min(data.len()));
            }
            Some(Fault::Break { after }) => {
                data = data.slice(..(after as usize).min(data.len()));
                tail = Tail::Break;
            }
            Some(Fault::Stall { after }) => {
                data = data.slice(..(after as usize).min(data.len()));
                tail = Tail::Stall;
            }
            Some(Fault::Corrupt { at }) if (at as usize) < data.len() => {
                let mut v = data.to_vec();
                v[at as usize] ^= 0xFF;
                data = Bytes::from(v);
            }
            _ => {}
        }
        let chunk = self.chunk.load(Relaxed);
        let n = data.len().div_ceil(chunk);
        let body = futures::stream::iter(
            (0..n).map(move |i| Ok(data.slice(i * chunk..((i + 1) * chunk).min(data.len())))),
        );
        let tail: ByteStream = match tail {
            Tail::End => Box::pin(futures::stream::empty()),
            Tail::Break => Box::pin(futures::stream::once(async {
                Err(StoreError::transient("connection reset by peer (injected)"))
            })),
            Tail::Stall => Box::pin(futures::stream::pending()),
        };
        Ok(Box::pin(body.chain(tail)))
    }

    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        let fault = self.pre(Op::Put, None).await?;
        let _inflight = Inflight::new(&self.counters);
        let mut buf = read_body(body, len).await?;
        if let Some(Fault::Corrupt { at }) = fault {
            if (at as usize) < buf.len() {
                buf[at as usize] ^= 0xFF;
            }
        }
        let data = buf.freeze();
        let crc = crc64::checksum(&data);
        self.counters.puts.fetch_add(1, Relaxed);
        self.counters.bytes_uploaded.fetch_add(len, Relaxed);
        let mut g = self.inner.lock().unwrap();
        let obj = new_obj(
            &mut g,
            data,
            crc,
            opts.content_type.clone(),
            opts.user_meta.clone(),
        );
        let etag = obj.etag.clone();
        g.objects.insert(key.to_string(), obj);
        let reported = if matches!(fault, Some(Fault::WrongCrc)) {
            crc ^ 0xBAD
        } else {
            crc
        };
        Ok(Uploaded {
            etag,
            checksums: self.crc_out(reported),
        })
    }

    async fn create_multipart(
        &self,
        key: &str,
        _total_size: u64,
        opts: &PutOptions,
    ) -> Result<String, StoreError> {
        self.pre(Op::CreateMultipart, None).await?;
        let mut g = self.inner.lock().unwrap();
        g.next_id += 1;
        let id = format!("{:032X}", g.next_id);
        g.uploads.insert(
            id.clone(),
            Upload {
                key: key.to_string(),
                opts: opts.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartSpec,
        body: ByteStream,
        _expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        let fault = self.pre(Op::UploadPart, Some(part.number)).await?;
        if !(1..=10_000).contains(&part.number) {
            return Err(err(
                ErrorClass::Client,
                "InvalidArgument",
                400,
                "Part number must be an integer between 1 and 10000, inclusive.",
            ));
        }
        {
            let g = self.inner.lock().unwrap();
            match g.uploads.get(upload_id) {
                Some(u) if u.key == key => {}
                _ => return Err(no_such_upload()),
            }
        }
        let _inflight = Inflight::new(&self.counters);
        let mut buf = read_body(body, part.len).await?;
        if let Some(Fault::Corrupt { at }) = fault {
            if (at as usize) < buf.len() {
                buf[at as usize] ^= 0xFF;
            }
        }
        let data = buf.freeze();
        let crc = crc64::checksum(&data);
        let mut etag = format!("{crc:016X}{:016X}", data.len());
        if self.unique_etags.load(Relaxed) {
            let n = self.uploads_seen.fetch_add(1, Relaxed);
            etag.push_str(&format!("-{n}"));
        }
        let mut landing = Landing {
            store: self,
            upload_id,
            number: part.number,
            part: Some(StoredPart {
                data,
                etag: etag.clone(),
                crc64: crc,
            }),
        };
        if let Some(Fault::AckDelay(d)) = fault {
            tokio::time::sleep(d).await;
        }
        landing.land()?;
        let reported = if matches!(fault, Some(Fault::WrongCrc)) {
            crc ^ 0xBAD
        } else {
            crc
        };
        Ok(Uploaded {
            etag,
            checksums: self.crc_out(reported),
        })
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, StoreError> {
        self.pre(Op::ListParts, None).await?;
        let g = self.inner.lock().unwrap();
        let u = match g.uploads.get(upload_id) {
            Some(u) if u.key == key => u,
            _ => return Err(no_such_upload()),
        };
        Ok(u.parts
            .iter()
            .map(|(&number, p)| ListedPart {
                number,
                size: p.data.len() as u64,
                etag: p.etag.clone(),
                checksums: self.crc_out(p.crc64),
            })
            .collect())
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        _size: u64,
        _expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        let fault = self.pre(Op::Complete, None).await?;
        let mut g = self.inner.lock().unwrap();
        match g.uploads.get(upload_id) {
            Some(u) if u.key == key => {}
            _ => return Err(no_such_upload()),
        }
        let min = self.limits.lock().unwrap().min_part_size;
        let u = &g.uploads[upload_id];
        // The checks run in the order OSS documents: order, then existence/ETag, then size.
        let mut prev = 0u32;
        for (n, _) in parts {
            if *n <= prev || *n > 10_000 {
                return Err(err(
                    ErrorClass::Client,
                    "InvalidPartOrder",
                    400,
                    "The list of parts was not in ascending order.",
                ));
            }
            prev = *n;
        }
        if parts
            .iter()
            .any(|(n, etag)| u.parts.get(n).is_none_or(|p| &p.etag != etag))
        {
            return Err(err(
                ErrorClass::Client,
                "InvalidPart",
                400,
                "One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag",
            ));
        }
        let last = parts.len().saturating_sub(1);
        if parts[..last]
            .iter()
            .any(|(n, _)| (u.parts[n].data.len() as u64) < min)
        {
            return Err(err(
                ErrorClass::Client,
                "EntityTooSmall",
                400,
                "Your proposed upload is smaller than the minimum allowed size.",
            ));
        }
        if parts.is_empty() {
            return Err(err(ErrorClass::Client, "MalformedXML", 400, "no parts"));
        }
        let u = g.uploads.remove(upload_id).expect("checked above");
        let total: usize = parts.iter().map(|(n, _)| u.parts[n].data.len()).sum();
        let mut data = BytesMut::with_capacity(total);
        let mut crc = 0u64;
        for (n, _) in parts {
            let p = &u.parts[n];
            data.extend_from_slice(&p.data);
            crc = crc64::combine(crc, p.crc64, p.data.len() as u64);
        }
        let mut obj = new_obj(
            &mut g,
            data.freeze(),
            crc,
            u.opts.content_type,
            u.opts.user_meta,
        );
        obj.etag = format!("{crc:016X}-{}", parts.len());
        let etag = obj.etag.clone();
        g.objects.insert(key.to_string(), obj);
        self.counters.completes.fetch_add(1, Relaxed);
        if matches!(fault, Some(Fault::AppliedThenNotFound)) {
            return Err(no_such_upload());
        }
        let reported = if matches!(fault, Some(Fault::WrongCrc)) {
            crc ^ 0xBAD
        } else {
            crc
        };
        Ok(Uploaded {
            etag,
            checksums: self.crc_out(reported),
        })
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.pre(Op::Abort, None).await?;
        let mut g = self.inner.lock().unwrap();
        match g.uploads.get(upload_id) {
            Some(u) if u.key == key => {
                g.uploads.remove(upload_id);
                self.counters.aborts.fetch_add(1, Relaxed);
                Ok(())
            }
            _ => Err(no_such_upload()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.pre(Op::Delete, None).await?;
        self.counters.deletes.fetch_add(1, Relaxed);
        self.inner.lock().unwrap().objects.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    async fn read(s: ByteStream) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn multipart_semantics() {
        let s = MemoryStore::new("t");
        let id = s
            .create_multipart("k", 0, &PutOptions::default())
            .await
            .unwrap();
        let big = vec![7u8; 102_400];
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        let spec = |n, len| PartSpec {
            number: n,
            offset: 0,
            len,
        };
        let p1 = s
            .upload_part(
                "k",
                &id,
                spec(1, 3),
                body(vec![b"abc"]),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        // A part smaller than 100 KiB may not precede another.
        let p2 = s
            .upload_part(
                "k",
                &id,
                spec(2, 2),
                body(vec![b"de"]),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        let e = s
            .complete(
                "k",
                &id,
                &[(1, p1.etag.clone()), (2, p2.etag.clone())],
                0,
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("EntityTooSmall"));
        // Replace part 1 with a big one; order and ETags are checked.
        let p1 = s
            .upload_part(
                "k",
                &id,
                spec(1, 102_400),
                body(vec![big]),
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        let e = s
            .complete(
                "k",
                &id,
                &[(2, p2.etag.clone()), (1, p1.etag.clone())],
                0,
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("InvalidPartOrder"));
        let e = s
            .complete(
                "k",
                &id,
                &[(1, "x".into())],
                0,
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code.as_deref(), Some("InvalidPart"));
        let listed = s.list_parts("k", &id).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].size, 102_400);
        let u = s
            .complete(
                "k",
                &id,
                &[(1, p1.etag), (2, p2.etag)],
                0,
                &crate::checksum::Checksums::new(),
            )
            .await
            .unwrap();
        let mut all = big.to_vec();
        all.extend_from_slice(b"de");
        assert_eq!(u.checksums.crc64_xz(), Some(crc64::checksum(&all)));
        assert_eq!(s.object("k").unwrap(), Bytes::from(all));
        assert_eq!(s.open_uploads(), 0);
        assert_eq!(s.part_uploads(1), 2);
        let e = s.abort("k", &id).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
    }

    #[tokio::test]
    async fn get_faults() {
        let s = MemoryStore::new("t");
        s.set_chunk_size(4);
        s.insert("k", &b"0123456789"[..]);
        let etag = s.head("k").await.unwrap().etag;
        assert_eq!(
            read(s.get_range("k", 2, 9, Some(&etag)).await.unwrap())
                .await
                .unwrap(),
            b"2345678"
        );
        s.inject(FaultRule::new(Op::Get, Fault::Truncate { after: 3 }).times(1));
        assert_eq!(
            read(s.get_range("k", 0, 10, None).await.unwrap())
                .await
                .unwrap(),
            b"012"
        );
        s.inject(FaultRule::new(Op::Get, Fault::Corrupt { at: 1 }).times(1));
        let c = read(s.get_range("k", 0, 3, None).await.unwrap())
            .await
            .unwrap();
        assert_eq!(c, [b'0', b'1' ^ 0xFF, b'2']);
        s.inject(FaultRule::new(Op::Get, Fault::Break { after: 5 }).times(1));
        assert!(read(s.get_range("k", 0, 10, None).await.unwrap())
            .await
            .is_err());
        s.inject(FaultRule::new(Op::Get, Fault::Error(ErrorClass::Throttled)).nth(5));
        assert_eq!(
            s.get_range("k", 0, 1, None).await.err().unwrap().class,
            ErrorClass::Throttled
        );
        s.inject(FaultRule::new(Op::Get, Fault::Replace(Bytes::from_static(b"new"))).times(1));
        let e = s.get_range("k", 0, 1, Some(&etag)).await.err().unwrap();
        assert_eq!(e.class, ErrorClass::Precondition);
        assert_eq!(s.object("k").unwrap(), &b"new"[..]);
    }
}
