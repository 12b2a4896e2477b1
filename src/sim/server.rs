//! The HTTP side: accept loop, addressing, authorization, fault injection, and the OSS
//! operations themselves.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use md5::{Digest as _, Md5};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{self, AuthError, AuthRequest, KeyInfo, Principal};
use super::range::{self, RangeOutcome};
use super::store::{self, Content, Segment, Sink};
use super::synthetic::Synthetic;
use super::wan::{ConnIo, Link};
use super::xml::{self, el, esc, iso};
use super::{FaultKind, SimAccount, SimConfig, SimError, StoreKind};
use crate::crc64;

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

const MAX_PUT: u64 = 5 << 30;
const MIN_PART: u64 = 102_400;
const MAX_DRAIN: u64 = 64 << 20;
const STALL: Duration = Duration::from_secs(30);
/// A request body that sends nothing for this long is answered 400 RequestTimeout.
const BODY_IDLE: Duration = Duration::from_secs(120);

/// Paces a body to `x-oss-traffic-limit` (bytes/s here).
struct Pace {
    rate: f64,
    start: tokio::time::Instant,
    done: u64,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate as f64,
            start: tokio::time::Instant::now(),
            done: 0,
        }
    }

    async fn after(&mut self, n: u64) {
        self.done += n;
        let due = self.start + Duration::from_secs_f64(self.done as f64 / self.rate);
        tokio::time::sleep_until(due).await;
    }
}

fn paced(
    inner: BoxStream<'static, io::Result<Bytes>>,
    rate: Option<u64>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let Some(rate) = rate else {
        return inner;
    };
    stream::unfold(
        (inner, Pace::new(rate)),
        |(mut inner, mut pace)| async move {
            let item = inner.next().await?;
            if let Ok(b) = &item {
                pace.after(b.len() as u64).await;
            }
            Some((item, (inner, pace)))
        },
    )
    .boxed()
}

/// `x-oss-traffic-limit` (header or query, in bit/s) as bytes/s.
fn traffic_limit(ctx: &Ctx) -> Result<Option<u64>, OssError> {
    let (h, q) = (ctx.h("x-oss-traffic-limit"), ctx.q("x-oss-traffic-limit"));
    let v = match (h, q) {
        (Some(_), Some(_)) => {
            return Err(invalid_argument(
                "x-oss-traffic-limit may be given as a header or a query parameter, not both.",
            )
            .ec("0004-00000501"))
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    match v.trim().parse::<u64>() {
        Ok(bits) if (245_760..=838_860_800).contains(&bits) => Ok(Some(bits / 8)),
        _ => Err(invalid_argument(
            "x-oss-traffic-limit must be between 245760 and 838860800 bit/s.",
        )
        .with("ArgumentName", "x-oss-traffic-limit")
        .with("ArgumentValue", v)),
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

fn stream_body(s: BoxStream<'static, io::Result<Bytes>>) -> Body {
    StreamBody::new(s.map(|r| r.map(Frame::data))).boxed_unsync()
}

/// Returned to hyper to drop the connection (reset fault, or the client went away).
#[derive(Debug)]
pub(crate) struct ConnDrop;

impl std::fmt::Display for ConnDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the simulator")
    }
}

impl std::error::Error for ConnDrop {}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Clone)]
pub(crate) struct OssError {
    status: u16,
    code: &'static str,
    message: String,
    ec: Option<&'static str>,
    extra: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
}

impl OssError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            ec: None,
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }
    fn ec(mut self, ec: &'static str) -> Self {
        self.ec = Some(ec);
        self
    }
    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn xml(&self, ctx: &Ctx) -> String {
        let mut s = String::from(xml::DECL);
        s.push_str("<Error>\n");
        s.push_str(&format!("  {}\n", el("Code", self.code)));
        s.push_str(&format!("  {}\n", el("Message", &self.message)));
        s.push_str(&format!("  {}\n", el("RequestId", &ctx.request_id)));
        s.push_str(&format!("  {}\n", el("HostId", &ctx.host_id)));
        for (k, v) in &self.extra {
            s.push_str(&format!("  {}\n", el(k, v)));
        }
        if let Some(ec) = self.ec {
            s.push_str(&format!("  {}\n", el("EC", ec)));
            s.push_str(&format!(
                "  {}\n",
                el(
                    "RecommendDoc",
                    &format!("https://api.aliyun.com/troubleshoot?q={ec}")
                )
            ));
        }
        s.push_str("</Error>\n");
        s
    }

    fn render(&self, ctx: &Ctx) -> Response<Body> {
        let body = self.xml(ctx);
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/xml");
        if let Some(ec) = self.ec {
            b = b.header("x-oss-ec", ec);
        }
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        let resp = if ctx.method == Method::HEAD {
            b.header(
                "x-oss-err",
                base64::engine::general_purpose::STANDARD.encode(body.as_bytes()),
            )
            .body(empty())
        } else {
            b.body(full(body))
        };
        resp.expect("static response parts are valid")
    }
}

fn internal(e: impl std::fmt::Display) -> OssError {
    tracing::error!(error = %e, "simulator internal error");
    OssError::new(
        500,
        "InternalError",
        "We encountered an internal error. Please try again.",
    )
}

fn no_such_upload() -> OssError {
    OssError::new(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    )
    .ec("0042-00000002")
}

fn invalid_argument(message: impl Into<String>) -> OssError {
    OssError::new(400, "InvalidArgument", message)
}

fn malformed_xml() -> OssError {
    OssError::new(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema.",
    )
    .ec("0042-00000205")
}

enum Fail {
    Oss(OssError),
    /// Drop the connection with an RST (reset fault).
    Reset,
    /// The client broke the connection; nothing to answer.
    ClientGone,
}

impl From<OssError> for Fail {
    fn from(e: OssError) -> Self {
        Fail::Oss(e)
    }
}

type Res = Result<Response<Body>, Fail>;

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone)]
struct Object {
    size: u64,
    crc: u64,
    /// Upper-case hex, unquoted (`…-N` for multipart).
    etag: String,
    last_modified: SystemTime,
    object_type: &'static str,
    storage_class: String,
    /// Content-Type, Cache-Control, …, and `x-oss-meta-*` (lower-case names).
    headers: Vec<(String, String)>,
    content: Content,
}

struct Bucket {
    account: String,
    created: SystemTime,
    discard: bool,
    objects: BTreeMap<String, Object>,
    lifecycle: Option<String>,
}

#[derive(Clone)]
struct Part {
    size: u64,
    crc: u64,
    etag: String,
    last_modified: SystemTime,
    data: Option<Segment>,
}

struct Upload {
    bucket: String,
    key: String,
    initiated: SystemTime,
    seq: u64,
    storage_class: String,
    headers: Vec<(String, String)>,
    parts: BTreeMap<u32, Part>,
}

struct TempCred {
    secret: String,
    token: String,
    account: String,
    expires: SystemTime,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    uploads: HashMap<String, Upload>,
    seq: u64,
    temp: HashMap<String, TempCred>,
}

struct Faults {
    list: Vec<(FaultKind, f64)>,
    ops: Option<Vec<String>>,
    rng: StdRng,
}

/// A fault chosen for one request, with where in the body it strikes (fraction of the length).
#[derive(Clone, Copy, Debug)]
struct FaultPlan {
    kind: FaultKind,
    at: f64,
    bit: u8,
}

#[derive(Default)]
struct Stats {
    requests: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    bytes_in: AtomicU64,
    bytes_out: Arc<AtomicU64>,
}

impl Stats {
    fn record(&self, op: &str, status: &str) {
        let mut m = self.requests.lock().expect("stats lock");
        *m.entry(op.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}

pub(crate) struct Shared {
    pub(crate) region: String,
    accounts: Vec<SimAccount>,
    remote: HashMap<String, String>,
    blob_dir: Option<PathBuf>,
    conn_rate: Option<u64>,
    latency: Duration,
    reject_path_style: bool,
    clock_skew: AtomicI64,
    /// Runtime outage and slow-loris switches shared with every connection.
    link: Arc<Link>,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    stats: Stats,
    /// ECS / RAM / STS / IMDS state (see `super::ecs`).
    pub(crate) cloud: super::ecs::Cloud,
}

fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !b.starts_with('-')
        && !b.ends_with('-')
}

fn owner_id(account: &str) -> String {
    let h = account.bytes().fold(1_469_598_103_934_665_603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1_099_511_628_211)
    });
    format!("{}", 1_000_000_000_000_000 + h % 1_000_000_000_000_000)
}

fn secs(t: SystemTime) -> SystemTime {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(s)
}

fn upper_hex(b: &[u8]) -> String {
    hex::encode_upper(b)
}

fn discard_etag(crc: u64, size: u64) -> String {
    format!("{crc:016X}{size:016X}")
}

fn default_content_type(key: &str) -> &'static str {
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

const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
];

fn kept_headers(h: &HeaderMap, key: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in h {
        let n = name.as_str();
        if KEPT_HEADERS.contains(&n) || n.starts_with("x-oss-meta-") {
            if let Ok(v) = value.to_str() {
                out.push((n.to_string(), v.to_string()));
            }
        }
    }
    if !out.iter().any(|(n, _)| n == "content-type") {
        out.push(("content-type".into(), default_content_type(key).into()));
    }
    out
}

fn storage_class(h: &HeaderMap) -> Result<String, OssError> {
    match h.get("x-oss-storage-class").and_then(|v| v.to_str().ok()) {
        None => Ok("Standard".into()),
        Some(c @ ("Standard" | "IA" | "Archive" | "ColdArchive" | "DeepColdArchive")) => {
            Ok(c.to_string())
        }
        Some(other) => Err(invalid_argument(format!("Invalid storage class {other}."))
            .with("ArgumentName", "x-oss-storage-class")
            .with("ArgumentValue", other)),
    }
}

impl Shared {
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
            let etag = upper_hex(&Md5::digest(
                format!("synthetic\n{}\n{}\n{crc}", s.key, s.size).as_bytes(),
            ));
            let obj = Object {
                size: s.size,
                crc,
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
        for (k, p) in &cfg.faults {
            if !(0.0..=1.0).contains(p) {
                return Err(SimError::Config(format!(
                    "fault {k} probability {p} is outside 0..1"
                )));
            }
        }
        Ok(Self {
            region: cfg.region.clone(),
            accounts: cfg.accounts.clone(),
            remote,
            blob_dir,
            conn_rate: cfg.conn_rate,
            latency: cfg.latency,
            reject_path_style: cfg.reject_path_style,
            clock_skew: AtomicI64::new(cfg.clock_skew),
            link: Arc::new(Link::default()),
            state: Mutex::new(state),
            faults: Mutex::new(Faults {
                list: cfg.faults.clone(),
                ops: cfg.fault_ops.clone(),
                rng: StdRng::seed_from_u64(cfg.fault_seed),
            }),
            stats: Stats::default(),
            cloud: super::ecs::Cloud::new(cfg)?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("simulator state lock")
    }

    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let skew = self.clock_skew.load(Ordering::Relaxed);
        if skew >= 0 {
            now + Duration::from_secs(skew as u64)
        } else {
            now - Duration::from_secs(skew.unsigned_abs())
        }
    }

    pub(crate) fn stats_json(&self) -> serde_json::Value {
        let mut requests = self.stats.requests.lock().expect("stats lock").clone();
        let resets = self.link.outage_resets.load(Ordering::Relaxed);
        if resets > 0 {
            requests
                .entry("Connection".into())
                .or_default()
                .insert("outage".into(), resets);
        }
        let open = self.lock().uploads.len();
        serde_json::json!({
            "requests": requests,
            "bytes_in": self.stats.bytes_in.load(Ordering::Relaxed),
            "bytes_out": self.stats.bytes_out.load(Ordering::Relaxed),
            "open_uploads": open,
        })
    }

    pub(crate) fn set_faults(&self, faults: Vec<(FaultKind, f64)>) {
        self.faults.lock().expect("fault lock").list = faults;
    }

    pub(crate) fn set_clock_skew(&self, secs: i64) {
        self.clock_skew.store(secs, Ordering::Relaxed);
    }

    pub(crate) fn set_outage(&self, on: bool) {
        self.link.outage.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_slow_loris(&self, rate: Option<u64>) {
        self.link
            .loris
            .store(rate.map_or(0, |r| r.max(1)), Ordering::Relaxed);
    }

    pub(crate) fn set_fault_ops(&self, ops: Option<Vec<String>>) {
        self.faults.lock().expect("fault lock").ops = ops;
    }

    pub(crate) fn object_crc64(&self, bucket: &str, key: &str) -> Option<(u64, u64)> {
        let st = self.lock();
        let o = st.buckets.get(bucket)?.objects.get(key)?;
        Some((o.size, o.crc))
    }

    pub(crate) fn put_object_bytes(&self, bucket: &str, key: &str, data: Bytes) {
        let size = data.len() as u64;
        let crc = crc64::checksum(&data);
        let etag = upper_hex(&Md5::digest(&data));
        let now = secs(self.now());
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
                etag,
                last_modified: now,
                object_type: "Normal",
                storage_class: "Standard".into(),
                headers: vec![("content-type".into(), default_content_type(key).into())],
                content,
            },
        );
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

    fn key_info(&self, ak: &str) -> Option<KeyInfo> {
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

    fn pick_fault(&self, op: &str) -> Option<FaultPlan> {
        let mut f = self.faults.lock().expect("fault lock");
        if f.list.is_empty() {
            return None;
        }
        if let Some(ops) = &f.ops {
            if !ops.iter().any(|o| o == op) {
                return None;
            }
        }
        // Uploads get body faults only when named in `fault_ops`, so a fault table written
        // for downloads keeps meaning what it did.
        let body_faults =
            op == "GetObject" || (matches!(op, "UploadPart" | "PutObject") && f.ops.is_some());
        let list = f.list.clone();
        for (kind, p) in list {
            let applies = match kind {
                FaultKind::Error500 | FaultKind::Slowdown | FaultKind::Reset => true,
                FaultKind::Truncate | FaultKind::Corrupt | FaultKind::Stall => body_faults,
            };
            if applies && f.rng.gen_bool(p.clamp(0.0, 1.0)) {
                let at = f.rng.gen::<f64>();
                let bit = f.rng.gen_range(0..8u8);
                return Some(FaultPlan { kind, at, bit });
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Accept loop

pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if shared.link.outage.load(Ordering::Relaxed) {
            // Down: the connection is reset before a byte is read.
            shared.link.outage_resets.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let shared = shared.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let io = ConnIo::new(stream, shared.conn_rate, reset.clone(), shared.link.clone());
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let reset = reset.clone();
                async move { shared.handle(req, reset).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(3), conn.as_mut()).await;
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Request context

struct Ctx {
    request_id: String,
    host_id: String,
    method: Method,
    bucket: Option<String>,
    key: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    op: &'static str,
    now: SystemTime,
    pre_error: Option<OssError>,
}

impl Ctx {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn bucket(&self) -> &str {
        self.bucket.as_deref().unwrap_or_default()
    }
    fn url_encoding(&self) -> bool {
        self.q("encoding-type") == Some("url")
    }
    fn enc(&self, s: &str) -> String {
        if self.url_encoding() {
            xml::url_encode(s)
        } else {
            s.to_string()
        }
    }
}

fn new_request_id() -> String {
    let r: [u8; 12] = rand::random();
    upper_hex(&r)
}

fn decode_query(raw: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// True when Host names no bucket: an IP, localhost, or a bare OSS endpoint.
fn is_bare_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    host.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || host.is_empty()
        || (host.ends_with(".aliyuncs.com") && labels.len() == 3)
        || (host.ends_with(".oss.aliyuncs.com") && labels.len() == 4)
}

fn classify(
    method: &Method,
    bucket: bool,
    key: &str,
    q: &[(String, String)],
    copy: bool,
) -> &'static str {
    let has = |n: &str| q.iter().any(|(k, _)| k == n);
    if !bucket {
        return if *method == Method::GET {
            "ListBuckets"
        } else {
            "Unsupported"
        };
    }
    if key.is_empty() {
        return match *method {
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("bucketInfo") => "GetBucketInfo",
            Method::GET if has("lifecycle") => "GetBucketLifecycle",
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET if q.iter().any(|(k, v)| k == "list-type" && v == "2") => "ListObjectsV2",
            Method::GET => "ListObjects",
            Method::PUT if has("lifecycle") => "PutBucketLifecycle",
            Method::DELETE if has("lifecycle") => "DeleteBucketLifecycle",
            _ => "Unsupported",
        };
    }
    match *method {
        Method::PUT if has("uploadId") && copy => "UploadPartCopy",
        Method::PUT if has("uploadId") => "UploadPart",
        Method::PUT if copy => "CopyObject",
        Method::PUT => "PutObject",
        Method::GET if has("uploadId") => "ListParts",
        Method::GET => "GetObject",
        Method::HEAD if has("objectMeta") => "GetObjectMeta",
        Method::HEAD => "HeadObject",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        Method::POST if has("uploads") => "InitiateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        _ => "Unsupported",
    }
}

fn response(status: u16) -> http::response::Builder {
    Response::builder().status(status)
}

fn xml_response(body: String) -> Response<Body> {
    response(200)
        .header("content-type", "application/xml")
        .body(full(body))
        .expect("valid response")
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn crc_header(crc: u64) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static("x-oss-hash-crc64ecma"),
        HeaderValue::from_str(&crc.to_string()).expect("digits"),
    )
}

// ---------------------------------------------------------------------------------------------
// Body helpers

struct Received {
    size: u64,
    crc: u64,
    md5: Option<[u8; 16]>,
    segment: Option<Segment>,
}

fn parse_content_md5(ctx: &Ctx) -> Result<Option<[u8; 16]>, OssError> {
    let Some(v) = ctx.h("content-md5") else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Some)
        .ok_or_else(|| {
            OssError::new(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified was invalid",
            )
            .ec("0017-00000502")
        })
}

impl Shared {
    async fn drain(&self, mut body: Incoming) {
        let mut n = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                n += d.len() as u64;
                self.stats
                    .bytes_in
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                if n > MAX_DRAIN {
                    return;
                }
            }
        }
    }

    async fn read_small(&self, mut body: Incoming, limit: usize) -> Result<Bytes, Fail> {
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Fail::ClientGone)?;
            if let Ok(d) = frame.into_data() {
                self.stats
                    .bytes_in
                    .fetch_add(d.len() as u64, Ordering::Relaxed);
                if out.len() + d.len() > limit {
                    return Err(invalid_argument("Request body is too large.").into());
                }
                out.extend_from_slice(&d);
            }
        }
        Ok(out.freeze())
    }

    /// Streams a request body into the store, hashing as it goes.
    async fn receive(
        &self,
        mut body: Incoming,
        discard: bool,
        want_md5: bool,
        fault: Option<BodyFault>,
        limit: Option<u64>,
    ) -> Result<Received, Fail> {
        let reset_at = fault.filter(|f| f.kind == FaultKind::Reset).map(|f| f.at);
        let mut other = fault.filter(|f| f.kind != FaultKind::Reset);
        let mut truncated = false;
        let mut pace = limit.map(Pace::new);
        let mut sink = Sink::open(self.blob_dir.as_deref(), discard)
            .await
            .map_err(internal)?;
        let mut crc = crc64::Crc64::new();
        let mut md5 = want_md5.then(Md5::new);
        let mut n = 0u64;
        loop {
            let frame = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                Ok(Some(f)) => f.map_err(|_| Fail::ClientGone)?,
                Ok(None) => break,
                Err(_) => {
                    return Err(OssError::new(
                        400,
                        "RequestTimeout",
                        "Your socket connection to the server was not read from or written to within the timeout period.",
                    )
                    .into())
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = data.len() as u64;
            if let Some(p) = pace.as_mut() {
                p.after(len).await;
            }
            if let Some(r) = reset_at {
                if n + len > r {
                    self.stats
                        .bytes_in
                        .fetch_add(r.saturating_sub(n), Ordering::Relaxed);
                    return Err(Fail::Reset);
                }
            }
            let mut data = data;
            if let Some(f) = other.filter(|f| n + len > f.at) {
                other = None;
                let cut = (f.at - n) as usize;
                match f.kind {
                    // Bytes lost on the way: the server counts only what arrived.
                    FaultKind::Truncate => truncated = true,
                    FaultKind::Corrupt => {
                        let mut m = BytesMut::from(&data[..]);
                        m[cut] ^= 1 << f.bit;
                        data = m.freeze();
                    }
                    FaultKind::Stall => tokio::time::sleep(STALL).await,
                    _ => {}
                }
            }
            n += len;
            self.stats.bytes_in.fetch_add(len, Ordering::Relaxed);
            if truncated {
                continue;
            }
            crc.update(&data);
            if let Some(m) = md5.as_mut() {
                m.update(&data);
            }
            sink.write(data).await.map_err(internal)?;
        }
        if reset_at.is_some() {
            return Err(Fail::Reset);
        }
        if truncated {
            // OSS waits for the missing bytes, then gives up with RequestTimeout.
            return Err(OssError::new(
                400,
                "RequestTimeout",
                "Your socket connection to the server was not read from or written to within the timeout period.",
            )
            .into());
        }
        let segment = sink.finish().await.map_err(internal)?;
        Ok(Received {
            size: n,
            crc: crc.sum(),
            md5: md5.map(|m| m.finalize().into()),
            segment,
        })
    }
}

/// A fault striking a request body (uploads), at byte `at` of it.
#[derive(Clone, Copy)]
struct BodyFault {
    kind: FaultKind,
    at: u64,
    bit: u8,
}

/// Where in an upload's body a planned fault strikes. A reset comes within the first half
/// (so some bytes always went unread); the body kinds anywhere.
fn body_fault(plan: Option<FaultPlan>, ctx: &Ctx) -> Option<BodyFault> {
    let p = plan.filter(|p| {
        matches!(
            p.kind,
            FaultKind::Reset | FaultKind::Truncate | FaultKind::Corrupt | FaultKind::Stall
        )
    })?;
    let len = ctx
        .h("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let at = match p.kind {
        FaultKind::Reset => (p.at * len as f64 / 2.0) as u64,
        _ => ((p.at * len as f64) as u64).min(len.saturating_sub(1)),
    };
    Some(BodyFault {
        kind: p.kind,
        at,
        bit: p.bit,
    })
}

enum Step {
    Data(Bytes),
    Sleep(Duration),
    Reset,
    End,
}

/// Applies a body fault (truncate, reset, corrupt, stall) to a response stream of `len` bytes.
fn faulty(
    inner: BoxStream<'static, io::Result<Bytes>>,
    plan: Option<FaultPlan>,
    len: u64,
    reset: Arc<AtomicBool>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let Some(plan) = plan.filter(|p| {
        len > 0
            && matches!(
                p.kind,
                FaultKind::Truncate | FaultKind::Corrupt | FaultKind::Stall | FaultKind::Reset
            )
    }) else {
        return inner;
    };
    let at = ((plan.at * len as f64) as u64).min(len - 1);
    struct St {
        inner: BoxStream<'static, io::Result<Bytes>>,
        pos: u64,
        fired: bool,
        pending: std::collections::VecDeque<Step>,
        reset: Arc<AtomicBool>,
    }
    let st = St {
        inner,
        pos: 0,
        fired: false,
        pending: Default::default(),
        reset,
    };
    stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(step) = st.pending.pop_front() {
                match step {
                    Step::Data(b) => return Some((Ok(b), st)),
                    Step::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Step::Reset => {
                        st.reset.store(true, Ordering::Relaxed);
                        st.pending.push_back(Step::End);
                        return Some((
                            Err(io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                "injected reset fault",
                            )),
                            st,
                        ));
                    }
                    Step::End => return None,
                }
            }
            let chunk = match st.inner.next().await? {
                Ok(c) => c,
                Err(e) => return Some((Err(e), st)),
            };
            let (start, end) = (st.pos, st.pos + chunk.len() as u64);
            st.pos = end;
            if st.fired || at >= end || at < start {
                return Some((Ok(chunk), st));
            }
            st.fired = true;
            let cut = (at - start) as usize;
            let head = chunk.slice(..cut);
            let tail = chunk.slice(cut..);
            match plan.kind {
                FaultKind::Truncate => {
                    st.pending.push_back(Step::Data(head));
                    st.pending.push_back(Step::End);
                }
                FaultKind::Reset => {
                    st.pending.push_back(Step::Data(head));
                    st.pending.push_back(Step::Reset);
                }
                FaultKind::Corrupt => {
                    let mut m = BytesMut::from(&chunk[..]);
                    m[cut] ^= 1 << plan.bit;
                    st.pending.push_back(Step::Data(m.freeze()));
                }
                FaultKind::Stall => {
                    st.pending.push_back(Step::Data(head));
                    st.pending.push_back(Step::Sleep(STALL));
                    st.pending.push_back(Step::Data(tail));
                }
                _ => st.pending.push_back(Step::Data(chunk)),
            }
        }
    })
    .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())))
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Dispatch

impl Shared {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        reset: Arc<AtomicBool>,
    ) -> Result<Response<Body>, ConnDrop> {
        let (parts, body) = req.into_parts();
        let host_full = parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let host = strip_port(&host_full).to_ascii_lowercase();
        let bare = is_bare_host(&host);
        if bare && parts.uri.path() == "/-/stats" && parts.method == Method::GET {
            let body = serde_json::to_vec(&self.stats_json()).unwrap_or_default();
            return Ok(response(200)
                .header("content-type", "application/json")
                .body(full(body))
                .expect("valid response"));
        }
        // ECS / RAM / STS (RPC on `/` with Action + Version) and the metadata service share
        // this listener; everything else is OSS.
        if bare && super::imds::is_imds(&parts) {
            let resp = super::imds::serve(&self, &parts);
            self.stats.record("Metadata", resp.status().as_str());
            return Ok(resp);
        }
        if super::rpc::is_rpc(&parts) {
            return Ok(super::rpc::serve(self.clone(), parts, body, host).await);
        }
        let ctx = self.parse_ctx(&parts, &host, bare);
        let plan = self.pick_fault(ctx.op);
        if let Some(p) = plan {
            tracing::debug!(op = ctx.op, fault = %p.kind, "injecting fault");
        }
        let result = self.run(&ctx, body, plan, &reset).await;
        let mut resp = match result {
            Ok(r) => r,
            Err(Fail::Oss(e)) => e.render(&ctx),
            Err(Fail::Reset) => {
                self.stats.record(ctx.op, "reset");
                reset.store(true, Ordering::Relaxed);
                return Err(ConnDrop);
            }
            Err(Fail::ClientGone) => {
                self.stats.record(ctx.op, "client_closed");
                return Err(ConnDrop);
            }
        };
        let h = resp.headers_mut();
        h.insert(
            "x-oss-request-id",
            HeaderValue::from_str(&ctx.request_id).expect("hex"),
        );
        h.insert(
            http::header::DATE,
            HeaderValue::from_str(&httpdate::fmt_http_date(self.now())).expect("date"),
        );
        h.insert(http::header::SERVER, HeaderValue::from_static("AliyunOSS"));
        self.stats.record(ctx.op, resp.status().as_str());
        tracing::debug!(
            op = ctx.op,
            bucket = ctx.bucket(),
            status = resp.status().as_u16(),
            request_id = %ctx.request_id,
            "request"
        );
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(resp)
    }

    fn parse_ctx(&self, parts: &http::request::Parts, host: &str, bare: bool) -> Ctx {
        let query = decode_query(parts.uri.query().unwrap_or(""));
        let path = parts.uri.path();
        let mut pre_error = None;
        let (bucket_raw, key_raw) = if bare {
            let p = path.strip_prefix('/').unwrap_or(path);
            match p.split_once('/') {
                Some((b, k)) => (Some(b.to_string()), k.to_string()),
                None => (Some(p.to_string()), String::new()),
            }
        } else {
            let b = host.split('.').next().unwrap_or_default().to_string();
            (Some(b), path.strip_prefix('/').unwrap_or(path).to_string())
        };
        let bucket = bucket_raw.filter(|b| !b.is_empty()).map(|b| {
            percent_encoding::percent_decode_str(&b)
                .decode_utf8_lossy()
                .into_owned()
        });
        let key = match percent_encoding::percent_decode_str(&key_raw).decode_utf8() {
            Ok(k) => k.into_owned(),
            Err(_) => {
                pre_error = Some(
                    OssError::new(
                        400,
                        "InvalidObjectName",
                        "The object key is not valid UTF-8.",
                    )
                    .ec("0016-00000005"),
                );
                String::new()
            }
        };
        if bare && bucket.is_some() && self.reject_path_style {
            pre_error = Some(
                OssError::new(
                    403,
                    "SecondLevelDomainForbidden",
                    "Please use virtual hosted style to access.",
                )
                .ec("0003-00000405"),
            );
        }
        let copy = parts.headers.contains_key("x-oss-copy-source");
        let op = classify(&parts.method, bucket.is_some(), &key, &query, copy);
        Ctx {
            request_id: new_request_id(),
            host_id: host.to_string(),
            method: parts.method.clone(),
            bucket,
            key,
            query,
            headers: parts.headers.clone(),
            op,
            now: self.now(),
            pre_error,
        }
    }

    fn authorize(&self, ctx: &Ctx) -> Result<Principal, OssError> {
        let req = AuthRequest {
            method: ctx.method.as_str(),
            bucket: ctx.bucket.as_deref(),
            key: &ctx.key,
            query: &ctx.query,
            headers: &ctx.headers,
        };
        auth::verify(&req, &self.region, ctx.now, &|ak| self.key_info(ak))
            .map_err(|e| self.auth_error(e, ctx))
    }

    fn auth_error(&self, e: AuthError, ctx: &Ctx) -> OssError {
        match e {
            AuthError::Anonymous => OssError::new(
                403,
                "AccessDenied",
                "You have no right to access this object because of bucket acl.",
            )
            .ec("0003-00000001"),
            AuthError::MissingDate => OssError::new(
                403,
                "AccessDenied",
                "OSS authentication requires a valid Date (or x-oss-date) header.",
            ),
            AuthError::InvalidAccessKeyId { ak } => OssError::new(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
            )
            .with("OSSAccessKeyId", ak)
            .ec("0002-00000902"),
            AuthError::SecurityTokenExpired { ak } => OssError::new(
                403,
                "SecurityTokenExpired",
                "The security token you provided has expired.",
            )
            .with("OSSAccessKeyId", ak),
            AuthError::InvalidSecurityToken { ak } => OssError::new(
                403,
                "InvalidSecurityToken",
                "The security token you provided is invalid.",
            )
            .with("OSSAccessKeyId", ak),
            AuthError::SignatureDoesNotMatch {
                ak,
                provided,
                string_to_sign,
                canonical_request,
            } => {
                let bytes = string_to_sign
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut err = OssError::new(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
                )
                .with("OSSAccessKeyId", ak)
                .with("SignatureProvided", provided)
                .with("StringToSign", string_to_sign)
                .with("StringToSignBytes", bytes);
                if let Some(c) = canonical_request {
                    err = err.with("CanonicalRequest", c);
                }
                err.ec("0002-00000040")
            }
            AuthError::RequestTimeTooSkewed { request_time } => OssError::new(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            )
            .with("RequestTime", iso(request_time))
            .with("ServerTime", iso(ctx.now))
            .with("MaxAllowedSkewMilliseconds", "900000")
            .ec("0002-00000504"),
            AuthError::PresignExpired { expires } => {
                OssError::new(403, "AccessDenied", "Request has expired.")
                    .with("Expires", iso(expires))
                    .with("ServerTime", iso(ctx.now))
                    .ec("0002-00000069")
            }
            AuthError::InvalidArgument { message, ec } => invalid_argument(message).ec(ec),
        }
    }

    /// Region, existence, signature and ownership checks for a bucket request.
    fn bucket_access(&self, ctx: &Ctx) -> Result<Principal, OssError> {
        let b = ctx.bucket();
        if let Some(region) = self.remote.get(b) {
            return Err(OssError::new(
                403,
                "AccessDenied",
                "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
            )
            .with("Bucket", b)
            .with("Endpoint", format!("oss-{region}.aliyuncs.com"))
            .ec("0003-00001403"));
        }
        let owner = self.lock().buckets.get(b).map(|bk| bk.account.clone());
        let Some(owner) = owner else {
            return Err(
                OssError::new(404, "NoSuchBucket", "The specified bucket does not exist.")
                    .with("BucketName", b)
                    .ec("0015-00000101"),
            );
        };
        let p = self.authorize(ctx)?;
        if p.account != owner {
            return Err(OssError::new(
                403,
                "AccessDenied",
                "You have no right to access this object because of bucket acl.",
            )
            .ec("0003-00000001"));
        }
        Ok(p)
    }

    async fn run(
        &self,
        ctx: &Ctx,
        body: Incoming,
        plan: Option<FaultPlan>,
        reset: &Arc<AtomicBool>,
    ) -> Res {
        if let Some(e) = ctx.pre_error.clone() {
            self.drain(body).await;
            return Err(e.into());
        }
        match plan.map(|p| p.kind) {
            Some(FaultKind::Error500) => {
                self.drain(body).await;
                return Err(OssError::new(
                    500,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
                .into());
            }
            Some(FaultKind::Slowdown) => {
                self.drain(body).await;
                return Err(
                    OssError::new(503, "SlowDown", "Please reduce your request rate.")
                        .ec("0006-00000001")
                        .into(),
                );
            }
            Some(FaultKind::Reset)
                if !matches!(
                    ctx.op,
                    "GetObject" | "PutObject" | "UploadPart" | "CompleteMultipartUpload"
                ) =>
            {
                return Err(Fail::Reset);
            }
            _ => {}
        }
        let principal = if ctx.bucket.is_some() {
            self.bucket_access(ctx)
        } else {
            self.authorize(ctx)
        };
        let principal = match principal {
            Ok(p) => p,
            Err(e) => {
                self.drain(body).await;
                return Err(e.into());
            }
        };
        if !ctx.key.is_empty() && (ctx.key.len() > 1023 || ctx.key.starts_with(['/', '\\'])) {
            self.drain(body).await;
            return Err(OssError::new(
                400,
                "InvalidObjectName",
                "The specified object is not valid: keys are 1-1023 bytes and must not start with '/' or '\\'.",
            )
            .ec("0016-00000005")
            .into());
        }
        match ctx.op {
            "ListBuckets" => self.list_buckets(ctx, &principal),
            "GetBucketLocation" => Ok(xml_response(format!(
                "{}{}",
                xml::DECL,
                el("LocationConstraint", &format!("oss-{}", self.region))
            ))),
            "GetBucketInfo" => self.bucket_info(ctx),
            "GetBucketLifecycle" => self.get_lifecycle(ctx),
            "PutBucketLifecycle" => self.put_lifecycle(ctx, body).await,
            "DeleteBucketLifecycle" => {
                if let Some(b) = self.lock().buckets.get_mut(ctx.bucket()) {
                    b.lifecycle = None;
                }
                Ok(response(204).body(empty()).expect("valid"))
            }
            "ListMultipartUploads" => self.list_uploads(ctx),
            "ListObjectsV2" | "ListObjects" => self.list_objects(ctx),
            "PutObject" => self.put_object(ctx, body, plan).await,
            "GetObject" | "HeadObject" | "GetObjectMeta" => self.get_object(ctx, plan, reset),
            "DeleteObject" => {
                if let Some(b) = self.lock().buckets.get_mut(ctx.bucket()) {
                    b.objects.remove(&ctx.key);
                }
                Ok(response(204).body(empty()).expect("valid"))
            }
            "InitiateMultipartUpload" => self.initiate(ctx),
            "UploadPart" => self.upload_part(ctx, body, plan).await,
            "CompleteMultipartUpload" => {
                // A reset here models a lost Complete response: the upload is completed, then
                // the connection drops before the client hears about it.
                let r = self.complete(ctx, body).await;
                match (r, plan.map(|p| p.kind)) {
                    (Ok(_), Some(FaultKind::Reset)) => Err(Fail::Reset),
                    (r, _) => r,
                }
            }
            "UploadPartCopy" => self.upload_part_copy(ctx, &principal).await,
            "CopyObject" => self.copy_object(ctx, &principal).await,
            "AbortMultipartUpload" => {
                let id = ctx.q("uploadId").unwrap_or_default();
                let mut st = self.lock();
                match st.uploads.get(id) {
                    Some(u) if u.bucket == ctx.bucket() && u.key == ctx.key => {
                        st.uploads.remove(id);
                        Ok(response(204).body(empty()).expect("valid"))
                    }
                    _ => Err(no_such_upload().into()),
                }
            }
            "ListParts" => self.list_parts(ctx),
            _ => {
                self.drain(body).await;
                Err(OssError::new(
                    501,
                    "NotImplemented",
                    format!(
                        "The simulator does not implement this operation ({} with query {:?}).",
                        ctx.method,
                        ctx.query
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                    ),
                )
                .into())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

/// Why a CompleteMultipartUpload part list was refused, in the order OSS checks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CompleteError {
    Order,
    Part(u32),
    TooSmall(u32),
}

/// Checks a part list against the uploaded parts: order, then existence/ETag, then sizes.
pub(crate) fn validate_complete(
    listed: &[(u32, String)],
    uploaded: &BTreeMap<u32, (u64, String)>,
) -> Result<(), CompleteError> {
    let mut prev = 0u32;
    for (n, _) in listed {
        if *n <= prev || *n > 10_000 {
            return Err(CompleteError::Order);
        }
        prev = *n;
    }
    for (n, etag) in listed {
        match uploaded.get(n) {
            Some((_, e)) if e.eq_ignore_ascii_case(etag.trim_matches('"')) => {}
            _ => return Err(CompleteError::Part(*n)),
        }
    }
    for (n, _) in listed.iter().take(listed.len().saturating_sub(1)) {
        if uploaded[n].0 < MIN_PART {
            return Err(CompleteError::TooSmall(*n));
        }
    }
    Ok(())
}

fn multipart_etag(part_etags: &[&str]) -> String {
    let mut m = Md5::new();
    for e in part_etags {
        match hex::decode(e) {
            Ok(b) => m.update(&b),
            Err(_) => m.update(e.as_bytes()),
        }
    }
    format!("{}-{}", upper_hex(&m.finalize()), part_etags.len())
}

fn max_param(ctx: &Ctx, name: &'static str, default: usize, max: usize) -> Result<usize, OssError> {
    match ctx.q(name) {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(invalid_argument(format!("Argument {name} is invalid."))
                .with("ArgumentName", name)
                .with("ArgumentValue", v)),
        },
    }
}

impl Shared {
    fn list_buckets(&self, _ctx: &Ctx, p: &Principal) -> Res {
        let st = self.lock();
        let mut s = format!(
            "{}<ListAllMyBucketsResult><Owner><ID>{}</ID><DisplayName>{}</DisplayName></Owner><Buckets>",
            xml::DECL,
            owner_id(&p.account),
            esc(&p.account)
        );
        for (name, b) in st.buckets.iter().filter(|(_, b)| b.account == p.account) {
            s.push_str(&format!(
                "<Bucket><CreationDate>{}</CreationDate><ExtranetEndpoint>oss-{r}.aliyuncs.com</ExtranetEndpoint><IntranetEndpoint>oss-{r}-internal.aliyuncs.com</IntranetEndpoint><Location>oss-{r}</Location><Name>{}</Name><Region>{r}</Region><StorageClass>Standard</StorageClass></Bucket>",
                iso(b.created),
                esc(name),
                r = self.region
            ));
        }
        s.push_str("</Buckets></ListAllMyBucketsResult>");
        Ok(xml_response(s))
    }

    fn bucket_info(&self, ctx: &Ctx) -> Res {
        let st = self.lock();
        let b = st
            .buckets
            .get(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?;
        let r = &self.region;
        Ok(xml_response(format!(
            "{}<BucketInfo><Bucket><AccessMonitor>Disabled</AccessMonitor><CreationDate>{}</CreationDate><ExtranetEndpoint>oss-{r}.aliyuncs.com</ExtranetEndpoint><IntranetEndpoint>oss-{r}-internal.aliyuncs.com</IntranetEndpoint><Location>oss-{r}</Location><StorageClass>Standard</StorageClass><DataRedundancyType>LRS</DataRedundancyType><TransferAcceleration>Disabled</TransferAcceleration><CrossRegionReplication>Disabled</CrossRegionReplication><Name>{}</Name><ResourceGroupId>rg-sim</ResourceGroupId><Owner><DisplayName>{}</DisplayName><ID>{}</ID></Owner><AccessControlList><Grant>private</Grant></AccessControlList><ServerSideEncryptionRule><SSEAlgorithm>None</SSEAlgorithm></ServerSideEncryptionRule><Versioning>Disabled</Versioning></Bucket></BucketInfo>",
            xml::DECL,
            iso(b.created),
            esc(ctx.bucket()),
            esc(&b.account),
            owner_id(&b.account),
        )))
    }

    fn get_lifecycle(&self, ctx: &Ctx) -> Res {
        let st = self.lock();
        match st
            .buckets
            .get(ctx.bucket())
            .and_then(|b| b.lifecycle.clone())
        {
            Some(x) => Ok(xml_response(x)),
            None => Err(
                OssError::new(404, "NoSuchLifecycle", "No Row found in Lifecycle Table.")
                    .with("BucketName", ctx.bucket())
                    .ec("0034-00000001")
                    .into(),
            ),
        }
    }

    async fn put_lifecycle(&self, ctx: &Ctx, body: Incoming) -> Res {
        let expected = parse_content_md5(ctx);
        let data = self.read_small(body, 1 << 20).await?;
        let Some(expected) = expected? else {
            return Err(OssError::new(
                400,
                "MissingContentMd5",
                "Missing required header for this request: Content-MD5.",
            )
            .into());
        };
        if <[u8; 16]>::from(Md5::digest(&data)) != expected {
            return Err(OssError::new(
                400,
                "InvalidDigest",
                "The Content-MD5 you specified did not match what we received.",
            )
            .ec("0017-00000503")
            .into());
        }
        let Some(stored) = xml::check_lifecycle(&data) else {
            return Err(OssError::new(
                400,
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema.",
            )
            .ec("0016-00000608")
            .into());
        };
        if let Some(b) = self.lock().buckets.get_mut(ctx.bucket()) {
            b.lifecycle = Some(stored);
        }
        Ok(response(200).body(empty()).expect("valid"))
    }

    fn list_objects(&self, ctx: &Ctx) -> Res {
        let v2 = ctx.op == "ListObjectsV2";
        let max = max_param(ctx, "max-keys", 100, 1000)?;
        let prefix = ctx.q("prefix").unwrap_or_default();
        let delimiter = ctx.q("delimiter").unwrap_or_default();
        let token = ctx.q("continuation-token").filter(|t| !t.is_empty());
        let after: String = if v2 {
            match token {
                Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        invalid_argument("The continuation token provided is incorrect.")
                            .with("ArgumentName", "continuation-token")
                    })?,
                None => ctx.q("start-after").unwrap_or_default().to_string(),
            }
        } else {
            ctx.q("marker").unwrap_or_default().to_string()
        };
        let st = self.lock();
        let b = st
            .buckets
            .get(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?;
        let mut contents = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last = String::new();
        let range = b.objects.range::<str, _>((
            std::ops::Bound::Excluded(after.as_str()),
            std::ops::Bound::Unbounded,
        ));
        for (k, o) in range {
            if !k.starts_with(prefix) {
                if k.as_str() > prefix {
                    break;
                }
                continue;
            }
            if contents.len() + prefixes.len() >= max {
                truncated = true;
                break;
            }
            if !delimiter.is_empty() {
                if let Some(i) = k[prefix.len()..].find(delimiter) {
                    let cp = &k[..prefix.len() + i + delimiter.len()];
                    if prefixes.last().map(String::as_str) != Some(cp) {
                        prefixes.push(cp.to_string());
                    }
                    last = k.clone();
                    continue;
                }
            }
            contents.push((k, o));
            last = k.clone();
        }
        let mut s = format!(
            "{}<ListBucketResult>{}{}{}{}",
            xml::DECL,
            el("Name", ctx.bucket()),
            el("Prefix", &ctx.enc(prefix)),
            el("MaxKeys", &max.to_string()),
            el("Delimiter", &ctx.enc(delimiter)),
        );
        if ctx.url_encoding() {
            s.push_str(&el("EncodingType", "url"));
        }
        s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
        if v2 {
            if let Some(sa) = ctx.q("start-after") {
                s.push_str(&el("StartAfter", &ctx.enc(sa)));
            }
            if let Some(t) = token {
                s.push_str(&el("ContinuationToken", t));
            }
            if truncated {
                s.push_str(&el(
                    "NextContinuationToken",
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes()),
                ));
            }
        } else {
            s.push_str(&el("Marker", &ctx.enc(&after)));
            if truncated {
                s.push_str(&el("NextMarker", &ctx.enc(&last)));
            }
        }
        let fetch_owner = !v2 || ctx.q("fetch-owner") == Some("true");
        for (k, o) in &contents {
            s.push_str(&format!(
                "<Contents>{}{}{}{}{}{}",
                el("Key", &ctx.enc(k)),
                el("LastModified", &iso(o.last_modified)),
                el("ETag", &quoted(&o.etag)),
                el("Type", o.object_type),
                el("Size", &o.size.to_string()),
                el("StorageClass", &o.storage_class),
            ));
            if fetch_owner {
                s.push_str(&format!(
                    "<Owner><ID>{}</ID><DisplayName>{}</DisplayName></Owner>",
                    owner_id(&b.account),
                    esc(&b.account)
                ));
            }
            s.push_str("</Contents>");
        }
        for p in &prefixes {
            s.push_str(&format!(
                "<CommonPrefixes>{}</CommonPrefixes>",
                el("Prefix", &ctx.enc(p))
            ));
        }
        if v2 {
            s.push_str(&el(
                "KeyCount",
                &(contents.len() + prefixes.len()).to_string(),
            ));
        }
        s.push_str("</ListBucketResult>");
        Ok(xml_response(s))
    }

    async fn put_object(&self, ctx: &Ctx, body: Incoming, plan: Option<FaultPlan>) -> Res {
        let declared = ctx.h("content-length").and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_PUT) {
            return Err(OssError::new(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed object size (5 GiB); use multipart upload.",
            )
            .ec("0026-00000006")
            .into());
        }
        let pre = (|| -> Result<_, OssError> {
            missing_length(ctx)?;
            let sc = storage_class(&ctx.headers)?;
            let md5 = parse_content_md5(ctx)?;
            self.check_forbid_overwrite(ctx, "0026-00000201")?;
            Ok((sc, md5, traffic_limit(ctx)?))
        })();
        let (sc, expected_md5, limit) = match pre {
            Ok(x) => x,
            Err(e) => {
                self.drain(body).await;
                return Err(e.into());
            }
        };
        let discard = self.is_discard(ctx.bucket());
        let rcv = self
            .receive(
                body,
                discard,
                !discard || expected_md5.is_some(),
                body_fault(plan, ctx),
                limit,
            )
            .await?;
        check_md5(expected_md5, rcv.md5)?;
        let etag = match rcv.md5 {
            Some(m) => upper_hex(&m),
            None => discard_etag(rcv.crc, rcv.size),
        };
        let obj = Object {
            size: rcv.size,
            crc: rcv.crc,
            etag: etag.clone(),
            last_modified: secs(ctx.now),
            object_type: "Normal",
            storage_class: sc,
            headers: kept_headers(&ctx.headers, &ctx.key),
            content: match rcv.segment {
                Some(s) => Content::Stored(vec![s]),
                None => Content::Discarded,
            },
        };
        {
            let mut st = self.lock();
            let b = st
                .buckets
                .get_mut(ctx.bucket())
                .ok_or_else(|| internal("bucket vanished"))?;
            if ctx.h("x-oss-forbid-overwrite") == Some("true") && b.objects.contains_key(&ctx.key) {
                return Err(file_exists("0026-00000201").into());
            }
            b.objects.insert(ctx.key.clone(), obj);
        }
        let mut r = response(200).header("etag", quoted(&etag));
        if let Some(m) = rcv.md5 {
            r = r.header(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(m),
            );
        }
        let (k, v) = crc_header(rcv.crc);
        Ok(r.header(k, v).body(empty()).expect("valid"))
    }

    fn is_discard(&self, bucket: &str) -> bool {
        self.lock().buckets.get(bucket).is_some_and(|b| b.discard)
    }

    fn check_forbid_overwrite(&self, ctx: &Ctx, ec: &'static str) -> Result<(), OssError> {
        if ctx.h("x-oss-forbid-overwrite") != Some("true") {
            return Ok(());
        }
        let st = self.lock();
        if st
            .buckets
            .get(ctx.bucket())
            .is_some_and(|b| b.objects.contains_key(&ctx.key))
        {
            return Err(file_exists(ec));
        }
        Ok(())
    }

    fn get_object(&self, ctx: &Ctx, plan: Option<FaultPlan>, reset: &Arc<AtomicBool>) -> Res {
        let (obj, discard) = {
            let st = self.lock();
            let b = st
                .buckets
                .get(ctx.bucket())
                .ok_or_else(|| internal("bucket vanished"))?;
            match b.objects.get(&ctx.key) {
                Some(o) => (o.clone(), b.discard),
                None => {
                    return Err(OssError::new(
                        404,
                        "NoSuchKey",
                        "The specified key does not exist.",
                    )
                    .with("Key", ctx.key.clone())
                    .ec("0026-00000001")
                    .into())
                }
            }
        };
        let etag_q = quoted(&obj.etag);
        let lm = httpdate::fmt_http_date(obj.last_modified);
        if ctx.op == "GetObjectMeta" {
            let (k, v) = crc_header(obj.crc);
            return Ok(response(200)
                .header("content-length", obj.size)
                .header("etag", etag_q)
                .header("last-modified", lm)
                .header(k, v)
                .body(empty())
                .expect("valid"));
        }
        // Conditionals: 412 first, then 304.
        let etag_eq = |v: &str| {
            v.split(',').any(|e| {
                e.trim() == "*" || e.trim().trim_matches('"').eq_ignore_ascii_case(&obj.etag)
            })
        };
        let date = |name: &str| ctx.h(name).and_then(|v| httpdate::parse_http_date(v).ok());
        let failed = ctx.h("if-match").is_some_and(|v| !etag_eq(v))
            || date("if-unmodified-since").is_some_and(|d| obj.last_modified > d);
        if failed {
            return Err(OssError::new(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
            .ec("0017-00001001")
            .into());
        }
        let not_modified = ctx.h("if-none-match").is_some_and(etag_eq)
            || date("if-modified-since").is_some_and(|d| obj.last_modified <= d);
        if not_modified {
            return Ok(response(304)
                .header("etag", etag_q)
                .header("last-modified", lm)
                .body(empty())
                .expect("valid"));
        }
        if discard && ctx.op == "GetObject" {
            return Err(OssError::new(
                403,
                "AccessDenied",
                "discard bucket: content not kept (the simulator only records size and CRC-64 for this bucket).",
            )
            .into());
        }
        let standard = ctx
            .h("x-oss-range-behavior")
            .is_some_and(|v| v.eq_ignore_ascii_case("standard"));
        let outcome = range::resolve(ctx.h("range"), standard, obj.size);
        let limit = traffic_limit(ctx)?;
        let (status, start, end) = match outcome {
            RangeOutcome::Full => (200, 0, obj.size),
            RangeOutcome::Partial { first, last } => (206, first, last + 1),
            RangeOutcome::Unsatisfiable => {
                return Err(OssError::new(
                    416,
                    "InvalidRange",
                    "The requested range cannot be satisfied",
                )
                .with(
                    "RangeRequested",
                    ctx.h("range").unwrap_or_default().to_string(),
                )
                .with("ActualObjectSize", obj.size.to_string())
                .header("content-range", format!("bytes */{}", obj.size))
                .ec("0017-00000301")
                .into())
            }
        };
        let mut r = response(status)
            .header("content-length", end - start)
            .header("accept-ranges", "bytes")
            .header("etag", etag_q)
            .header("last-modified", lm)
            .header("x-oss-object-type", obj.object_type)
            .header("x-oss-storage-class", obj.storage_class.as_str());
        let (k, v) = crc_header(obj.crc);
        r = r.header(k, v);
        if status == 206 {
            r = r.header(
                "content-range",
                format!("bytes {}-{}/{}", start, end - 1, obj.size),
            );
        }
        for (name, value) in &obj.headers {
            let over = match name.as_str() {
                "content-type" => ctx.q("response-content-type"),
                "cache-control" => ctx.q("response-cache-control"),
                "content-disposition" => ctx.q("response-content-disposition"),
                "content-encoding" => ctx.q("response-content-encoding"),
                "content-language" => ctx.q("response-content-language"),
                "expires" => ctx.q("response-expires"),
                _ => None,
            };
            r = r.header(name.as_str(), over.unwrap_or(value));
        }
        for (q, h) in [
            ("response-content-type", "content-type"),
            ("response-cache-control", "cache-control"),
            ("response-content-disposition", "content-disposition"),
            ("response-content-encoding", "content-encoding"),
            ("response-content-language", "content-language"),
            ("response-expires", "expires"),
        ] {
            if let Some(v) = ctx.q(q) {
                if !obj.headers.iter().any(|(n, _)| n == h) {
                    r = r.header(h, v);
                }
            }
        }
        if ctx.method == Method::HEAD {
            return Ok(r.body(empty()).expect("valid"));
        }
        let len = end - start;
        let inner = store::content_stream(obj.content, start, end);
        let faulted = paced(faulty(inner, plan, len, reset.clone()), limit);
        let counter = self.stats.bytes_out.clone();
        let counted = faulted
            .inspect(move |r| {
                if let Ok(b) = r {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            })
            .boxed();
        Ok(r.body(stream_body(counted)).expect("valid"))
    }

    fn initiate(&self, ctx: &Ctx) -> Res {
        let sc = storage_class(&ctx.headers)?;
        self.check_forbid_overwrite(ctx, "0042-00000214")?;
        let id = {
            let r: [u8; 16] = rand::random();
            upper_hex(&r)
        };
        {
            let mut st = self.lock();
            st.seq += 1;
            let seq = st.seq;
            st.uploads.insert(
                id.clone(),
                Upload {
                    bucket: ctx.bucket().to_string(),
                    key: ctx.key.clone(),
                    initiated: secs(ctx.now),
                    seq,
                    storage_class: sc,
                    headers: kept_headers(&ctx.headers, &ctx.key),
                    parts: BTreeMap::new(),
                },
            );
        }
        let mut s = format!("{}<InitiateMultipartUploadResult>", xml::DECL);
        if ctx.url_encoding() {
            s.push_str(&el("EncodingType", "url"));
        }
        s.push_str(&el("Bucket", ctx.bucket()));
        s.push_str(&el("Key", &ctx.enc(&ctx.key)));
        s.push_str(&el("UploadId", &id));
        s.push_str("</InitiateMultipartUploadResult>");
        Ok(xml_response(s))
    }

    fn upload_matches(&self, ctx: &Ctx) -> Result<String, OssError> {
        let id = ctx.q("uploadId").unwrap_or_default().to_string();
        let st = self.lock();
        match st.uploads.get(&id) {
            Some(u) if u.bucket == ctx.bucket() && u.key == ctx.key => Ok(id),
            _ => Err(no_such_upload()),
        }
    }

    /// Resolves `x-oss-copy-source` (+ range and conditionals) to the source object and span.
    fn copy_source(
        &self,
        ctx: &Ctx,
        p: &Principal,
        with_range: bool,
    ) -> Result<(Object, u64, u64), OssError> {
        let raw = ctx.h("x-oss-copy-source").unwrap_or_default();
        let raw = raw.split('?').next().unwrap_or_default().replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&raw)
            .decode_utf8_lossy()
            .into_owned();
        let path = decoded.strip_prefix('/').unwrap_or(&decoded);
        let Some((sb, sk)) = path
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return Err(
                invalid_argument("x-oss-copy-source must be /<bucket>/<key>.")
                    .with("ArgumentName", "x-oss-copy-source")
                    .with("ArgumentValue", raw.clone()),
            );
        };
        if let Some(region) = self.remote.get(sb) {
            return Err(OssError::new(
                403,
                "AccessDenied",
                format!(
                    "Cross-region copy is not supported: source bucket {sb} is in {region}, this endpoint serves {}.",
                    self.region
                ),
            ));
        }
        let (obj, discard) = {
            let st = self.lock();
            let Some(b) = st.buckets.get(sb) else {
                return Err(OssError::new(
                    404,
                    "NoSuchBucket",
                    "The specified bucket does not exist.",
                )
                .with("BucketName", sb)
                .ec("0015-00000101"));
            };
            if b.account != p.account {
                return Err(OssError::new(
                    403,
                    "AccessDenied",
                    "You have no right to access the copy source because of bucket acl.",
                ));
            }
            match b.objects.get(sk) {
                Some(o) => (o.clone(), b.discard),
                None => {
                    return Err(OssError::new(
                        404,
                        "NoSuchKey",
                        "The specified key does not exist.",
                    )
                    .with("Key", sk)
                    .ec("0026-00000001"))
                }
            }
        };
        if discard {
            return Err(OssError::new(
                403,
                "AccessDenied",
                "discard bucket: content not kept, it cannot be a copy source.",
            ));
        }
        let etag_eq = |v: &str| {
            v.split(',').any(|e| {
                e.trim() == "*" || e.trim().trim_matches('"').eq_ignore_ascii_case(&obj.etag)
            })
        };
        let date = |name: &str| ctx.h(name).and_then(|v| httpdate::parse_http_date(v).ok());
        // Unlike GetObject, a copy cannot answer 304; every failed condition is a 412.
        if ctx
            .h("x-oss-copy-source-if-match")
            .is_some_and(|v| !etag_eq(v))
            || ctx
                .h("x-oss-copy-source-if-none-match")
                .is_some_and(etag_eq)
            || date("x-oss-copy-source-if-unmodified-since").is_some_and(|d| obj.last_modified > d)
            || date("x-oss-copy-source-if-modified-since").is_some_and(|d| obj.last_modified <= d)
        {
            return Err(OssError::new(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            )
            .ec("0017-00001001"));
        }
        let (start, end) = match ctx.h("x-oss-copy-source-range").filter(|_| with_range) {
            None => (0, obj.size),
            Some(r) => match range::resolve(Some(r), false, obj.size) {
                RangeOutcome::Partial { first, last } => (first, last + 1),
                _ => {
                    return Err(invalid_argument(format!(
                        "x-oss-copy-source-range {r:?} is not bytes=<first>-<last> within the {}-byte source.",
                        obj.size
                    ))
                    .with("ArgumentName", "x-oss-copy-source-range")
                    .with("ArgumentValue", r))
                }
            },
        };
        Ok((obj, start, end))
    }

    /// Copies `[start, end)` of `content` into a new stored segment, hashing on the way.
    async fn copy_bytes(
        &self,
        content: Content,
        start: u64,
        end: u64,
        discard: bool,
    ) -> Result<Received, Fail> {
        let mut sink = Sink::open(self.blob_dir.as_deref(), discard)
            .await
            .map_err(internal)?;
        let mut crc = crc64::Crc64::new();
        let mut md5 = (!discard).then(Md5::new);
        let mut src = store::content_stream(content, start, end);
        while let Some(chunk) = src.next().await {
            let chunk = chunk.map_err(internal)?;
            crc.update(&chunk);
            if let Some(m) = md5.as_mut() {
                m.update(&chunk);
            }
            sink.write(chunk).await.map_err(internal)?;
        }
        let segment = sink.finish().await.map_err(internal)?;
        Ok(Received {
            size: crc.len(),
            crc: crc.sum(),
            md5: md5.map(|m| m.finalize().into()),
            segment,
        })
    }

    async fn upload_part_copy(&self, ctx: &Ctx, p: &Principal) -> Res {
        let number = part_number(ctx)?;
        let id = self
            .upload_matches(ctx)
            .map_err(|e| e.ec("0042-00000311"))?;
        let (src, start, end) = self.copy_source(ctx, p, true)?;
        if end - start > MAX_PUT {
            return Err(
                OssError::new(400, "EntityTooLarge", "A part may not exceed 5 GiB.").into(),
            );
        }
        let discard = self.is_discard(ctx.bucket());
        let rcv = self.copy_bytes(src.content, start, end, discard).await?;
        let etag = match rcv.md5 {
            Some(m) => upper_hex(&m),
            None => discard_etag(rcv.crc, rcv.size),
        };
        let now = secs(ctx.now);
        {
            let mut st = self.lock();
            let u = st
                .uploads
                .get_mut(&id)
                .ok_or_else(|| no_such_upload().ec("0042-00000311"))?;
            u.parts.insert(
                number,
                Part {
                    size: rcv.size,
                    crc: rcv.crc,
                    etag: etag.clone(),
                    last_modified: now,
                    data: rcv.segment,
                },
            );
        }
        let body = format!(
            "{}<CopyPartResult>{}{}</CopyPartResult>",
            xml::DECL,
            el("LastModified", &iso(now)),
            el("ETag", &quoted(&etag))
        );
        let (k, v) = crc_header(rcv.crc);
        Ok(response(200)
            .header("content-type", "application/xml")
            .header("etag", quoted(&etag))
            .header(k, v)
            .body(full(body))
            .expect("valid"))
    }

    async fn copy_object(&self, ctx: &Ctx, p: &Principal) -> Res {
        let (src, start, end) = self.copy_source(ctx, p, false)?;
        if end - start > MAX_PUT {
            return Err(OssError::new(
                400,
                "EntityTooLarge",
                "The copy source exceeds 5 GiB; use multipart upload with UploadPartCopy.",
            )
            .into());
        }
        self.check_forbid_overwrite(ctx, "0026-00000201")?;
        let replace = ctx
            .h("x-oss-metadata-directive")
            .is_some_and(|v| v.eq_ignore_ascii_case("REPLACE"));
        let headers = if replace {
            kept_headers(&ctx.headers, &ctx.key)
        } else {
            src.headers.clone()
        };
        let sc = match ctx.h("x-oss-storage-class") {
            Some(_) => storage_class(&ctx.headers)?,
            None => src.storage_class.clone(),
        };
        let discard = self.is_discard(ctx.bucket());
        let rcv = self.copy_bytes(src.content, start, end, discard).await?;
        let etag = match rcv.md5 {
            Some(m) => upper_hex(&m),
            None => discard_etag(rcv.crc, rcv.size),
        };
        let now = secs(ctx.now);
        let obj = Object {
            size: rcv.size,
            crc: rcv.crc,
            etag: etag.clone(),
            last_modified: now,
            object_type: "Normal",
            storage_class: sc,
            headers,
            content: match rcv.segment {
                Some(s) => Content::Stored(vec![s]),
                None => Content::Discarded,
            },
        };
        self.lock()
            .buckets
            .get_mut(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?
            .objects
            .insert(ctx.key.clone(), obj);
        let body = format!(
            "{}<CopyObjectResult>{}{}</CopyObjectResult>",
            xml::DECL,
            el("ETag", &quoted(&etag)),
            el("LastModified", &iso(now))
        );
        let (k, v) = crc_header(rcv.crc);
        Ok(response(200)
            .header("content-type", "application/xml")
            .header("etag", quoted(&etag))
            .header(k, v)
            .body(full(body))
            .expect("valid"))
    }

    async fn upload_part(&self, ctx: &Ctx, body: Incoming, plan: Option<FaultPlan>) -> Res {
        let pre = (|| -> Result<_, OssError> {
            missing_length(ctx)?;
            let number = part_number(ctx)?;
            if ctx
                .h("content-length")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > MAX_PUT)
            {
                return Err(OssError::new(
                    400,
                    "EntityTooLarge",
                    "A part may not exceed 5 GiB.",
                ));
            }
            let id = self
                .upload_matches(ctx)
                .map_err(|e| e.ec("0042-00000104"))?;
            Ok((number, id, parse_content_md5(ctx)?, traffic_limit(ctx)?))
        })();
        let (number, id, expected_md5, limit) = match pre {
            Ok(x) => x,
            Err(e) => {
                self.drain(body).await;
                return Err(e.into());
            }
        };
        let discard = self.is_discard(ctx.bucket());
        let rcv = self
            .receive(
                body,
                discard,
                !discard || expected_md5.is_some(),
                body_fault(plan, ctx),
                limit,
            )
            .await?;
        check_md5(expected_md5, rcv.md5)?;
        let etag = match rcv.md5 {
            Some(m) => upper_hex(&m),
            None => discard_etag(rcv.crc, rcv.size),
        };
        {
            let mut st = self.lock();
            let u = st
                .uploads
                .get_mut(&id)
                .ok_or_else(|| no_such_upload().ec("0042-00000104"))?;
            u.parts.insert(
                number,
                Part {
                    size: rcv.size,
                    crc: rcv.crc,
                    etag: etag.clone(),
                    last_modified: secs(ctx.now),
                    data: rcv.segment,
                },
            );
        }
        let mut r = response(200).header("etag", quoted(&etag));
        if let Some(m) = rcv.md5 {
            r = r.header(
                "content-md5",
                base64::engine::general_purpose::STANDARD.encode(m),
            );
        }
        let (k, v) = crc_header(rcv.crc);
        Ok(r.header(k, v).body(empty()).expect("valid"))
    }

    async fn complete(&self, ctx: &Ctx, body: Incoming) -> Res {
        let data = self.read_small(body, 8 << 20).await?;
        let all = ctx
            .h("x-oss-complete-all")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        if all && !data.is_empty() {
            return Err(invalid_argument(
                "Should not speficy both complete all header and http body.",
            )
            .ec("0042-00000216")
            .into());
        }
        let id = self.upload_matches(ctx)?;
        let listed: Vec<(u32, String)> = if all {
            let st = self.lock();
            let u = st.uploads.get(&id).ok_or_else(no_such_upload)?;
            u.parts.iter().map(|(n, p)| (*n, p.etag.clone())).collect()
        } else {
            match xml::parse_complete(&data) {
                Some(p) if !p.is_empty() => p.into_iter().map(|p| (p.number, p.etag)).collect(),
                _ => return Err(malformed_xml().into()),
            }
        };
        self.check_forbid_overwrite(ctx, "0042-00000214")?;
        let obj = {
            let mut st = self.lock();
            let u = st.uploads.get(&id).ok_or_else(no_such_upload)?;
            let uploaded: BTreeMap<u32, (u64, String)> = u
                .parts
                .iter()
                .map(|(n, p)| (*n, (p.size, p.etag.clone())))
                .collect();
            if listed.is_empty() {
                return Err(malformed_xml().into());
            }
            match validate_complete(&listed, &uploaded) {
                Ok(()) => {}
                Err(CompleteError::Order) => {
                    return Err(OssError::new(
                        400,
                        "InvalidPartOrder",
                        "The list of parts was not in ascending order. Parts must be ordered by part number.",
                    )
                    .ec("0042-00000209")
                    .into())
                }
                Err(CompleteError::Part(n)) => {
                    return Err(OssError::new(
                        400,
                        "InvalidPart",
                        "One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag",
                    )
                    .with("PartNumber", n.to_string())
                    .ec("0042-00000210")
                    .into())
                }
                Err(CompleteError::TooSmall(n)) => {
                    return Err(OssError::new(
                        400,
                        "EntityTooSmall",
                        "Your proposed upload is smaller than the minimum allowed size: every part except the last must be at least 100 KiB.",
                    )
                    .with("PartNumber", n.to_string())
                    .with("MinSizeAllowed", MIN_PART.to_string())
                    .ec("0042-00000213")
                    .into())
                }
            }
            let parts: Vec<Part> = listed.iter().map(|(n, _)| u.parts[n].clone()).collect();
            let size = parts.iter().map(|p| p.size).sum();
            let crc = crc64::combine_all(parts.iter().map(|p| (p.crc, p.size)));
            let etags: Vec<&str> = parts.iter().map(|p| p.etag.as_str()).collect();
            let etag = multipart_etag(&etags);
            let content = if parts.iter().all(|p| p.data.is_some()) {
                Content::Stored(parts.iter().filter_map(|p| p.data.clone()).collect())
            } else {
                Content::Discarded
            };
            let obj = Object {
                size,
                crc,
                etag,
                last_modified: secs(ctx.now),
                object_type: "Multipart",
                storage_class: u.storage_class.clone(),
                headers: u.headers.clone(),
                content,
            };
            let b = st
                .buckets
                .get_mut(ctx.bucket())
                .ok_or_else(|| internal("bucket vanished"))?;
            b.objects.insert(ctx.key.clone(), obj.clone());
            st.uploads.remove(&id);
            obj
        };
        let mut s = format!("{}<CompleteMultipartUploadResult>", xml::DECL);
        if ctx.url_encoding() {
            s.push_str(&el("EncodingType", "url"));
        }
        s.push_str(&el(
            "Location",
            &format!(
                "http://{}.oss-{}.aliyuncs.com/{}",
                ctx.bucket(),
                self.region,
                ctx.enc(&ctx.key)
            ),
        ));
        s.push_str(&el("Bucket", ctx.bucket()));
        s.push_str(&el("Key", &ctx.enc(&ctx.key)));
        s.push_str(&el("ETag", &quoted(&obj.etag)));
        s.push_str("</CompleteMultipartUploadResult>");
        let (k, v) = crc_header(obj.crc);
        Ok(response(200)
            .header("content-type", "application/xml")
            .header("etag", quoted(&obj.etag))
            .header(k, v)
            .body(full(s))
            .expect("valid"))
    }

    fn list_parts(&self, ctx: &Ctx) -> Res {
        let max = max_param(ctx, "max-parts", 1000, 1000)?;
        let marker: u32 = match ctx.q("part-number-marker") {
            None | Some("") => 0,
            Some(v) => v.parse().map_err(|_| {
                invalid_argument("part-number-marker must be an integer.")
                    .with("ArgumentName", "part-number-marker")
                    .with("ArgumentValue", v)
            })?,
        };
        let id = self.upload_matches(ctx)?;
        let st = self.lock();
        let u = st.uploads.get(&id).ok_or_else(no_such_upload)?;
        let selected: Vec<(&u32, &Part)> = u
            .parts
            .range((
                std::ops::Bound::Excluded(marker),
                std::ops::Bound::Unbounded,
            ))
            .take(max + 1)
            .collect();
        let truncated = selected.len() > max;
        let page = &selected[..selected.len().min(max)];
        let next = page.last().map(|(n, _)| **n).unwrap_or(marker);
        let mut s = format!("{}<ListPartsResult>", xml::DECL);
        if ctx.url_encoding() {
            s.push_str(&el("EncodingType", "url"));
        }
        s.push_str(&el("Bucket", ctx.bucket()));
        s.push_str(&el("Key", &ctx.enc(&ctx.key)));
        s.push_str(&el("UploadId", &id));
        s.push_str(&el("StorageClass", &u.storage_class));
        s.push_str(&el("PartNumberMarker", &marker.to_string()));
        s.push_str(&el("NextPartNumberMarker", &next.to_string()));
        s.push_str(&el("MaxParts", &max.to_string()));
        s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
        for (n, p) in page {
            s.push_str(&format!(
                "<Part>{}{}{}{}{}</Part>",
                el("PartNumber", &n.to_string()),
                el("LastModified", &iso(p.last_modified)),
                el("ETag", &quoted(&p.etag)),
                el("HashCrc64ecma", &p.crc.to_string()),
                el("Size", &p.size.to_string()),
            ));
        }
        s.push_str("</ListPartsResult>");
        Ok(xml_response(s))
    }

    fn list_uploads(&self, ctx: &Ctx) -> Res {
        let max = max_param(ctx, "max-uploads", 1000, 1000)?;
        let prefix = ctx.q("prefix").unwrap_or_default();
        let delimiter = ctx.q("delimiter").unwrap_or_default();
        let key_marker = ctx.q("key-marker").unwrap_or_default();
        let id_marker = ctx.q("upload-id-marker").unwrap_or_default();
        let st = self.lock();
        let mut all: Vec<(&String, &Upload)> = st
            .uploads
            .iter()
            .filter(|(_, u)| u.bucket == ctx.bucket() && u.key.starts_with(prefix))
            .collect();
        all.sort_by(|a, b| a.1.key.cmp(&b.1.key).then(a.1.seq.cmp(&b.1.seq)));
        let marker_seq = (!key_marker.is_empty() && !id_marker.is_empty())
            .then(|| st.uploads.get(id_marker).filter(|u| u.key == key_marker))
            .flatten()
            .map(|u| u.seq);
        let after = |u: &Upload, id: &str| -> bool {
            if key_marker.is_empty() {
                return true;
            }
            match (u.key.as_str().cmp(key_marker), marker_seq) {
                (std::cmp::Ordering::Greater, _) => true,
                (std::cmp::Ordering::Equal, Some(seq)) => u.seq > seq,
                (std::cmp::Ordering::Equal, None) => !id_marker.is_empty() && id > id_marker,
                _ => false,
            }
        };
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, String)> = None;
        for (id, u) in all.into_iter().filter(|(id, u)| after(u, id)) {
            if uploads.len() + prefixes.len() >= max {
                truncated = true;
                break;
            }
            if !delimiter.is_empty() {
                if let Some(i) = u.key[prefix.len()..].find(delimiter) {
                    let cp = u.key[..prefix.len() + i + delimiter.len()].to_string();
                    if prefixes.last() != Some(&cp) {
                        prefixes.push(cp);
                    }
                    last = Some((u.key.clone(), id.clone()));
                    continue;
                }
            }
            uploads.push((id, u));
            last = Some((u.key.clone(), id.clone()));
        }
        let (next_key, next_id) = last.unwrap_or_default();
        let mut s = format!("{}<ListMultipartUploadsResult>", xml::DECL);
        if ctx.url_encoding() {
            s.push_str(&el("EncodingType", "url"));
        }
        s.push_str(&el("Bucket", ctx.bucket()));
        s.push_str(&el("KeyMarker", &ctx.enc(key_marker)));
        s.push_str(&el("UploadIdMarker", id_marker));
        s.push_str(&el("NextKeyMarker", &ctx.enc(&next_key)));
        s.push_str(&el("NextUploadIdMarker", &next_id));
        s.push_str(&el("Delimiter", &ctx.enc(delimiter)));
        s.push_str(&el("Prefix", &ctx.enc(prefix)));
        s.push_str(&el("MaxUploads", &max.to_string()));
        s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
        for (id, u) in &uploads {
            s.push_str(&format!(
                "<Upload>{}{}{}{}</Upload>",
                el("Key", &ctx.enc(&u.key)),
                el("UploadId", id),
                el("StorageClass", &u.storage_class),
                el("Initiated", &iso(u.initiated)),
            ));
        }
        for p in &prefixes {
            s.push_str(&format!(
                "<CommonPrefixes>{}</CommonPrefixes>",
                el("Prefix", &ctx.enc(p))
            ));
        }
        s.push_str("</ListMultipartUploadsResult>");
        Ok(xml_response(s))
    }
}

fn part_number(ctx: &Ctx) -> Result<u32, OssError> {
    match ctx.q("partNumber") {
        None => Err(invalid_argument("Unexpected query string parameter")
            .with("ArgumentName", "partNumber")),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive.",
            )
            .with("ArgumentName", "PartNumber")
            .with("ArgumentValue", v)
            .ec("0042-00000207")),
        },
    }
}

fn missing_length(ctx: &Ctx) -> Result<(), OssError> {
    if ctx.h("content-length").is_none()
        && !ctx
            .h("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Err(OssError::new(
            411,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        )
        .ec("0016-00000115"));
    }
    Ok(())
}

fn file_exists(ec: &'static str) -> OssError {
    OssError::new(
        409,
        "FileAlreadyExists",
        "The object you specified already exists and can not be overwritten.",
    )
    .ec(ec)
}

fn check_md5(expected: Option<[u8; 16]>, got: Option<[u8; 16]>) -> Result<(), OssError> {
    match (expected, got) {
        (Some(e), Some(g)) if e != g => Err(OssError::new(
            400,
            "InvalidDigest",
            "The Content-MD5 you specified did not match what we received.",
        )
        .ec("0017-00000503")),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks for the ECS / RAM / STS / metadata simulation (super::{rpc, ecs, ram, sts, imds})

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

impl Shared {
    pub(crate) fn sim_now(&self) -> SystemTime {
        self.now()
    }

    pub(crate) fn key_lookup(&self, ak: &str) -> Option<KeyInfo> {
        self.key_info(ak)
    }

    pub(crate) fn rpc_record(&self, op: &str, status: u16) {
        self.stats.record(op, &status.to_string());
    }

    /// An injected fault for an RPC action: error500 → 500 InternalError, slowdown →
    /// 400 Throttling.User, reset → 503 ServiceUnavailable.
    pub(crate) fn rpc_fault(&self, op: &str) -> Option<super::rpc::RpcError> {
        use super::rpc::RpcError;
        Some(match self.pick_fault(op)?.kind {
            FaultKind::Error500 => RpcError::new(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            ),
            FaultKind::Slowdown => RpcError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ),
            _ => RpcError::new(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            ),
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
        let now = secs(self.now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded(parts: &[(u32, u64, &str)]) -> BTreeMap<u32, (u64, String)> {
        parts
            .iter()
            .map(|(n, s, e)| (*n, (*s, e.to_string())))
            .collect()
    }

    fn l(parts: &[(u32, &str)]) -> Vec<(u32, String)> {
        parts.iter().map(|(n, e)| (*n, e.to_string())).collect()
    }

    #[test]
    fn complete_validation_order() {
        let up = uploaded(&[(1, 10, "A"), (2, 200_000, "B"), (3, 5, "C")]);
        // Order is checked before existence and size: part 1 is too small and 9 is missing.
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (9, "X"), (3, "C"), (2, "B")]), &up),
            Err(CompleteError::Order)
        );
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (1, "A")]), &up),
            Err(CompleteError::Order)
        );
        assert_eq!(
            validate_complete(&l(&[(10_001, "A")]), &up),
            Err(CompleteError::Order)
        );
        // Existence/ETag before size.
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (2, "WRONG")]), &up),
            Err(CompleteError::Part(2))
        );
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (4, "D")]), &up),
            Err(CompleteError::Part(4))
        );
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (2, "B")]), &up),
            Err(CompleteError::TooSmall(1))
        );
        // Last listed part may be small; gaps are allowed; quotes and case are ignored.
        assert_eq!(
            validate_complete(&l(&[(2, "\"b\""), (3, "C")]), &up),
            Ok(())
        );
        assert_eq!(validate_complete(&l(&[(1, "A")]), &up), Ok(()));
    }

    #[test]
    fn multipart_etag_form() {
        let e = multipart_etag(&[
            "D41D8CD98F00B204E9800998ECF8427E",
            "D41D8CD98F00B204E9800998ECF8427E",
        ]);
        assert!(e.ends_with("-2"));
        assert_eq!(e.len(), 34);
        assert!(e[..32]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }

    #[test]
    fn addressing_rules() {
        assert!(is_bare_host("127.0.0.1"));
        assert!(is_bare_host("localhost"));
        assert!(is_bare_host("::1"));
        assert!(is_bare_host("oss-cn-hangzhou.aliyuncs.com"));
        assert!(is_bare_host("cn-hangzhou.oss.aliyuncs.com"));
        assert!(!is_bare_host("bucket.oss-cn-hangzhou.aliyuncs.com"));
        assert!(!is_bare_host("bucket.localhost"));
        assert_eq!(strip_port("bucket.localhost:9000"), "bucket.localhost");
        assert_eq!(strip_port("[::1]:9000"), "::1");
        assert_eq!(
            decode_query("uploads&partNumber=3&prefix=a%2Fb+c"),
            vec![
                ("uploads".to_string(), String::new()),
                ("partNumber".to_string(), "3".to_string()),
                ("prefix".to_string(), "a/b c".to_string()),
            ]
        );
    }

    #[test]
    fn operation_names() {
        let q = |s: &str| decode_query(s);
        assert_eq!(
            classify(
                &Method::PUT,
                true,
                "k",
                &q("partNumber=1&uploadId=X"),
                false
            ),
            "UploadPart"
        );
        assert_eq!(
            classify(&Method::POST, true, "k", &q("uploads"), false),
            "InitiateMultipartUpload"
        );
        assert_eq!(
            classify(&Method::POST, true, "k", &q("uploadId=X"), false),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            classify(&Method::DELETE, true, "k", &q("uploadId=X"), false),
            "AbortMultipartUpload"
        );
        assert_eq!(
            classify(&Method::GET, true, "k", &q("uploadId=X"), false),
            "ListParts"
        );
        assert_eq!(
            classify(&Method::GET, true, "", &q("uploads"), false),
            "ListMultipartUploads"
        );
        assert_eq!(
            classify(&Method::GET, true, "", &q("list-type=2"), false),
            "ListObjectsV2"
        );
        assert_eq!(
            classify(&Method::PUT, true, "", &q("lifecycle"), false),
            "PutBucketLifecycle"
        );
        assert_eq!(
            classify(&Method::GET, false, "", &q(""), false),
            "ListBuckets"
        );
        assert_eq!(
            classify(&Method::HEAD, true, "k", &q(""), false),
            "HeadObject"
        );
    }

    #[test]
    fn stats_json_has_exact_keys() {
        let shared = Shared::new(&SimConfig::default()).unwrap();
        shared.stats.record("GetObject", "200");
        let v = shared.stats_json();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["bytes_in", "bytes_out", "open_uploads", "requests"]);
        assert_eq!(v["requests"]["GetObject"]["200"], 1);
    }
}
