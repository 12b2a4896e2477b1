//! The HTTP side: connection pool, TLS, signing at send time, timeouts, retries, metrics.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tracing::Instrument;

use super::endpoint::{Endpoint, EndpointSpec};
use super::error::{clock_offset_ms, ErrorContext, OssError};
use super::sign::{sign_request, SignContext, SignVersion};
use crate::credentials::{CredentialsError, CredentialsProvider};
use crate::proxy::{ProxyConfig, ProxyConnector};
use crate::store::{ByteStream, ErrorClass, StoreError};

/// Backoff base and cap for in-client retries (decorrelated jitter).
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Largest error or XML response body we read into memory.
pub(crate) const MAX_XML_BODY: usize = 16 * 1024 * 1024;
const MAX_ERROR_BODY: usize = 64 * 1024;
/// OSS allows 15 minutes of skew; beyond 14 a bodiless 403 is taken as RequestTimeTooSkewed.
const SKEW_SUSPECT_MS: u64 = 14 * 60 * 1000;
/// Largest read from a connection (so largest response body chunk), and most request body
/// bytes queued for writing on one connection.
const CONN_BUF_SIZE: usize = 64 * 1024;

/// Client settings. Build with [`OssConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct OssConfig {
    pub endpoint: EndpointSpec,
    /// V4 signing region, e.g. `cn-hangzhou` (an `oss-` prefix is stripped).
    pub region: String,
    pub credentials: Arc<dyn CredentialsProvider>,
    pub sign_version: SignVersion,
    pub force_path_style: bool,
    pub connect_timeout: Duration,
    /// Longest wait for response headers, and longest silence between body chunks.
    pub read_timeout: Duration,
    /// Attempts for requests without a streaming body (streaming ones are single-shot).
    pub max_attempts: u32,
    /// Connect to this address instead of resolving the endpoint host; `Host` still names
    /// the bucket host (tests, or pinning an endpoint's address).
    pub connect_to: Option<SocketAddr>,
    /// The CLI flag that selects this side's region, named in wrong-region advice.
    pub region_flag: String,
    /// Outbound proxy (default: `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` from the
    /// environment, see [`crate::proxy`]); a `connect_to` address is loopback or explicit and
    /// goes direct when it is loopback.
    pub proxy: ProxyConfig,
}

impl OssConfig {
    /// V4 signing, virtual-hosted addressing, 10 s connect / 60 s read timeouts, 4 attempts.
    pub fn new(
        endpoint: EndpointSpec,
        region: impl Into<String>,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> Self {
        OssConfig {
            endpoint,
            region: region.into(),
            credentials,
            sign_version: SignVersion::V4,
            force_path_style: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_attempts: 4,
            connect_to: None,
            region_flag: "--region".into(),
            proxy: ProxyConfig::from_env(),
        }
    }
}

impl fmt::Debug for OssConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OssConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials.name())
            .field("sign_version", &self.sign_version)
            .field("force_path_style", &self.force_path_style)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("connect_to", &self.connect_to)
            .field("proxy", &self.proxy)
            .finish()
    }
}

type HttpClient = Client<HttpsConnector<ProxyConnector>, ReqBody>;

/// An OSS client: cheap to clone, one connection pool shared by all clones.
#[derive(Clone)]
pub struct OssClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) endpoint: Endpoint,
    pub(crate) region: String,
    credentials: Arc<dyn CredentialsProvider>,
    sign_version: SignVersion,
    pub(crate) read_timeout: Duration,
    max_attempts: u32,
    connect_to: Option<SocketAddr>,
    pub(crate) region_flag: String,
    http: HttpClient,
    /// Server clock minus local clock, learned from RequestTimeTooSkewed.
    clock_offset_ms: AtomicI64,
    epoch: Instant,
    /// Requests retried inside [`OssClient`] (streaming bodies are retried by the engine).
    retries: AtomicU64,
    /// Whether the endpoint has sent any HTTP response yet (see [`OssError::never_answered`]).
    answered: AtomicBool,
}

impl fmt::Debug for OssClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OssClient")
            .field("endpoint", &self.inner.endpoint)
            .field("region", &self.inner.region)
            .finish()
    }
}

/// A request body: nothing, bytes that can be resent, or a one-shot stream of known length.
pub(crate) enum Payload {
    Empty,
    Bytes(Bytes),
    Stream(ByteStream, u64),
}

/// One OSS request before signing.
pub(crate) struct OssRequest<'a> {
    pub op: &'static str,
    pub method: Method,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub payload: Payload,
}

impl<'a> OssRequest<'a> {
    pub fn new(
        op: &'static str,
        method: Method,
        bucket: Option<&'a str>,
        key: Option<&'a str>,
    ) -> Self {
        OssRequest {
            op,
            method,
            bucket,
            key,
            query: Vec::new(),
            headers: HeaderMap::new(),
            payload: Payload::Empty,
        }
    }

    pub fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }

    /// Adds a header; invalid names or values are a usage error.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, OssError> {
        let op = self.op;
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| OssError::config(format!("{op}: invalid header name {name:?}")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| OssError::config(format!("{op}: invalid value for header {name}")))?;
        self.headers.append(n, v);
        Ok(self)
    }

    pub fn payload(mut self, p: Payload) -> Self {
        self.payload = p;
        self
    }
}

impl OssClient {
    /// Builds a client: resolves the endpoint and sets up the TLS (webpki roots,
    /// verification always on) and connection pool.
    pub fn new(cfg: OssConfig) -> Result<OssClient, OssError> {
        let endpoint = Endpoint::resolve(&cfg.endpoint, cfg.force_path_style)?;
        let region = super::endpoint::normalize_region(&cfg.region)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| OssError::config(format!("TLS setup failed: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(ProxyConnector::new(http, cfg.proxy.clone()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_max_idle_per_host(256)
            // Small connection buffers: a body chunk keeps its whole read buffer alive until
            // it is uploaded, however few bytes the read returned, and hyper queues chunks up
            // to this size per upload connection. With hyper's default (~400 KiB, reads up to
            // that size) the queued and pinned buffers made RSS depend on how long a copy ran.
            .http1_max_buf_size(CONN_BUF_SIZE)
            .build(https);
        Ok(OssClient {
            inner: Arc::new(Inner {
                endpoint,
                region,
                credentials: cfg.credentials,
                sign_version: cfg.sign_version,
                read_timeout: cfg.read_timeout,
                max_attempts: cfg.max_attempts.max(1),
                connect_to: cfg.connect_to,
                region_flag: cfg.region_flag,
                http: client,
                clock_offset_ms: AtomicI64::new(0),
                retries: AtomicU64::new(0),
                answered: AtomicBool::new(false),
                epoch: Instant::now(),
            }),
        })
    }

    /// The resolved endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The V4 signing region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The clock correction currently applied when signing (server minus local).
    pub fn clock_offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.inner.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Local time corrected by the learned clock offset.
    pub(crate) fn now(&self) -> SystemTime {
        let off = self.inner.clock_offset_ms.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if off >= 0 {
            now + Duration::from_millis(off as u64)
        } else {
            now - Duration::from_millis(off.unsigned_abs())
        }
    }

    fn learn_clock(&self, err: &OssError) {
        if let Some(server) = err.server_time {
            let off = clock_offset_ms(server, SystemTime::now());
            self.inner.clock_offset_ms.store(off, Ordering::Relaxed);
            tracing::warn!(
                offset_ms = off,
                "OSS reports clock skew; signing with a corrected clock (fix NTP on this host)"
            );
        }
    }

    /// Sends a request, retrying retryable failures with backoff when the body can be
    /// replayed; a streaming body gets exactly one attempt. Returns only 2xx responses.
    pub(crate) async fn send(&self, req: OssRequest<'_>) -> Result<Response<Incoming>, OssError> {
        let OssRequest {
            op,
            method,
            bucket,
            key,
            query,
            headers,
            payload,
        } = req;
        let ctx = ErrorContext {
            operation: op,
            bucket,
            key,
            region_flag: &self.inner.region_flag,
            signing_region: &self.inner.region,
            endpoint_host: &self.inner.endpoint.host,
        };
        let parts = Parts {
            ctx,
            method: &method,
            query: &query,
        };
        match payload {
            Payload::Stream(stream, len) => {
                let activity = Arc::new(AtomicU64::new(self.elapsed_ms()));
                let body = ReqBody::Stream {
                    stream,
                    remaining: len,
                    activity: Some((self.inner.epoch, activity.clone())),
                };
                self.attempt(&parts, headers, body, Some(len), activity, 1)
                    .await
            }
            payload => {
                let bytes = match payload {
                    Payload::Bytes(b) => Some(b),
                    _ => None,
                };
                let mut sleep = BACKOFF_BASE;
                let mut attempt = 1;
                loop {
                    let body = match &bytes {
                        Some(b) => ReqBody::Full(Some(b.clone())),
                        None => ReqBody::Empty,
                    };
                    let len = bytes.as_ref().map(|b| b.len() as u64);
                    let activity = Arc::new(AtomicU64::new(self.elapsed_ms()));
                    match self
                        .attempt(&parts, headers.clone(), body, len, activity, attempt)
                        .await
                    {
                        Ok(r) => return Ok(r),
                        Err(mut e) => {
                            e.attempts = attempt;
                            if !e.class.is_retryable() || attempt >= self.inner.max_attempts {
                                if e.never_answered && e.class.is_retryable() {
                                    // Callers retry transient errors again, for minutes: an
                                    // endpoint that never answered is a configuration problem
                                    // until proven otherwise, so say so now.
                                    e.class = ErrorClass::Client;
                                    e.message.push_str(
                                        "; the endpoint has not answered any request: check the endpoint, region and network",
                                    );
                                }
                                return Err(e);
                            }
                            metrics::counter!(crate::metrics::RETRIES_TOTAL, "reason" => e.class.as_str())
                                .increment(1);
                            self.inner.retries.fetch_add(1, Ordering::Relaxed);
                            if e.class != ErrorClass::ClockSkew {
                                sleep = next_backoff(sleep);
                                tracing::debug!(op, attempt, error = %e, delay_ms = sleep.as_millis() as u64, "retrying OSS request");
                                tokio::time::sleep(sleep).await;
                            }
                            attempt += 1;
                        }
                    }
                }
            }
        }
    }

    /// Requests this client retried on its own so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    async fn attempt(
        &self,
        p: &Parts<'_>,
        mut headers: HeaderMap,
        body: ReqBody,
        len: Option<u64>,
        activity: Arc<AtomicU64>,
        attempt: u32,
    ) -> Result<Response<Incoming>, OssError> {
        let ctx = &p.ctx;
        if let Some(b) = ctx.bucket {
            check_bucket_name(b)?;
        }
        let creds = self
            .inner
            .credentials
            .credentials()
            .await
            .map_err(|e| credentials_error(ctx.operation, e))?;
        let ep = &self.inner.endpoint;
        let host = ep.host_header(ctx.bucket);
        headers.insert(
            HOST,
            HeaderValue::from_str(&host)
                .map_err(|_| OssError::config(format!("invalid host {host:?}")))?,
        );
        match len {
            Some(n) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            }
            None if *p.method == Method::PUT || *p.method == Method::POST => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
            }
            None => {}
        }
        let auth = sign_request(
            p.method.as_str(),
            ctx.bucket,
            ctx.key,
            p.query,
            &mut headers,
            &SignContext {
                version: self.inner.sign_version,
                region: &self.inner.region,
                time: self.now(),
                credentials: &creds,
            },
        );
        headers.insert(http::header::AUTHORIZATION, auth);
        let path = ep.path_and_query(ctx.bucket, ctx.key, p.query);
        let authority = match self.inner.connect_to {
            Some(addr) => addr.to_string(),
            None => host.clone(),
        };
        let uri = format!("{}://{}{}", ep.scheme.as_str(), authority, path);
        let mut builder = Request::builder().method(p.method.clone()).uri(&uri);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let request = builder.body(body).map_err(|e| {
            OssError::config(format!("{}: cannot build request: {e}", ctx.operation))
        })?;

        let span = tracing::debug_span!(
            "oss_request",
            op = ctx.operation,
            method = %p.method,
            bucket = ctx.bucket.unwrap_or(""),
            key = ctx.key.unwrap_or(""),
            attempt,
            status = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .exchange(request, &activity)
            .instrument(span.clone())
            .await;
        metrics::histogram!(crate::metrics::REQUEST_DURATION_SECONDS, "operation" => ctx.operation)
            .record(started.elapsed().as_secs_f64());
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!(crate::metrics::REQUESTS_TOTAL, "service" => "oss", "operation" => ctx.operation, "status" => "error").increment(1);
                let mut err = network_error(ctx, &host, &*e, self.inner.read_timeout);
                err.never_answered = !self.inner.answered.load(Ordering::Relaxed) && no_server(&*e);
                span.in_scope(|| tracing::debug!(error = %err, "OSS request failed"));
                return Err(err);
            }
        };
        self.inner.answered.store(true, Ordering::Relaxed);
        let status = resp.status().as_u16();
        metrics::counter!(crate::metrics::REQUESTS_TOTAL, "service" => "oss", "operation" => ctx.operation, "status" => status.to_string()).increment(1);
        let request_id = resp
            .headers()
            .get("x-oss-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        span.record("status", status);
        span.record("request_id", request_id.as_str());
        span.in_scope(|| {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "OSS response"
            )
        });
        if resp.status().is_success() {
            return Ok(resp);
        }
        let (parts, incoming) = resp.into_parts();
        let body = read_limited(
            incoming,
            MAX_ERROR_BODY,
            self.inner.read_timeout,
            ctx.operation,
        )
        .await
        .unwrap_or_default();
        let mut err = OssError::from_response(status, &parts.headers, &body, ctx);
        if status == 403 && err.code.is_none() {
            // A HEAD error has no body; without `x-oss-err` the only clue to a skewed
            // clock is the server's Date differing from ours by more than OSS allows.
            if let Some(server) = err.server_time {
                let skew = clock_offset_ms(server, self.now()).unsigned_abs();
                if skew > SKEW_SUSPECT_MS {
                    err.class = ErrorClass::ClockSkew;
                    err.message = format!(
                        "{}: access denied and the local clock is {} s off the server's; the client corrected its offset, fix NTP on this host",
                        ctx.operation,
                        skew / 1000
                    );
                }
            }
        }
        if err.class == ErrorClass::ClockSkew {
            self.learn_clock(&err);
        }
        span.in_scope(|| tracing::debug!(error = %err, "OSS error response"));
        Err(err)
    }

    /// Sends and waits for response headers. The header timeout counts from the last
    /// byte of request body sent, so a slow large upload is not cut off.
    async fn exchange(
        &self,
        request: Request<ReqBody>,
        activity: &AtomicU64,
    ) -> Result<Response<Incoming>, Box<dyn StdError + Send + Sync>> {
        let fut = self.inner.http.request(request);
        tokio::pin!(fut);
        let timeout = self.inner.read_timeout;
        loop {
            let last = activity.load(Ordering::Relaxed);
            let deadline = self.inner.epoch + Duration::from_millis(last) + timeout;
            tokio::select! {
                r = &mut fut => return r.map_err(|e| Box::new(e) as Box<dyn StdError + Send + Sync>),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if activity.load(Ordering::Relaxed) == last {
                        return Err(Box::new(TimeoutError(timeout)));
                    }
                }
            }
        }
    }
}

struct Parts<'a> {
    ctx: ErrorContext<'a>,
    method: &'a Method,
    query: &'a [(String, String)],
}

#[derive(Debug)]
struct TimeoutError(Duration);

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no response within {:?}", self.0)
    }
}
impl StdError for TimeoutError {}

fn next_backoff(prev: Duration) -> Duration {
    let hi = (prev * 3).clamp(BACKOFF_BASE, BACKOFF_CAP);
    let ms = rand::thread_rng().gen_range(BACKOFF_BASE.as_millis() as u64..=hi.as_millis() as u64);
    Duration::from_millis(ms)
}

fn check_bucket_name(b: &str) -> Result<(), OssError> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !b.starts_with('-')
        && !b.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(OssError::config(format!(
            "invalid bucket name {b:?}: 3-63 lower-case letters, digits and '-', not starting or ending with '-'"
        )))
    }
}

fn credentials_error(op: &str, e: CredentialsError) -> OssError {
    // A failed refresh (IMDS/STS blip) may pass; a missing or malformed source will not.
    let class = match e {
        CredentialsError::Refresh { .. } => ErrorClass::Transient,
        _ => ErrorClass::Auth,
    };
    OssError::with_class(class, format!("{op}: cannot get credentials: {e}"))
}

/// Classifies a transport failure; the original `StoreError` from a streamed body wins.
fn network_error(
    ctx: &ErrorContext<'_>,
    host: &str,
    e: &(dyn StdError + 'static),
    timeout: Duration,
) -> OssError {
    let mut chain: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(se) = err.downcast_ref::<StoreError>() {
            return OssError::with_class(
                se.class,
                format!(
                    "{} on {}: request body failed: {}",
                    ctx.operation,
                    target(ctx),
                    se.message
                ),
            );
        }
        if err.downcast_ref::<TimeoutError>().is_some() {
            return OssError::transient(format!(
                "{} on {}: no response from {host} within {timeout:?}",
                ctx.operation,
                target(ctx)
            ));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(tls) = rustls_error_in(io) {
                if matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                ) {
                    return OssError::with_class(
                        ErrorClass::Client,
                        format!(
                            "{}: TLS certificate of {host} could not be verified ({tls}); check the endpoint (verification cannot be disabled)",
                            ctx.operation
                        ),
                    );
                }
            }
        }
        let s = err.to_string();
        if chain.last() != Some(&s) {
            chain.push(s);
        }
        cur = err.source();
    }
    OssError::transient(format!(
        "{} on {}: network error talking to {host}: {}",
        ctx.operation,
        target(ctx),
        chain.join(": ")
    ))
}

/// Whether `e` means nobody speaking HTTP is there: the connection (DNS, TCP, TLS handshake)
/// failed, or the peer's answer is not HTTP. A reset or timeout after connecting is not.
fn no_server(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(le) = err.downcast_ref::<hyper_util::client::legacy::Error>() {
            if le.is_connect() {
                return true;
            }
        }
        if let Some(he) = err.downcast_ref::<hyper::Error>() {
            if he.is_parse() || he.is_parse_status() {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The rustls error inside (possibly nested) `io::Error` wrappers, which hide it from
/// `source()` chains.
fn rustls_error_in(io: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner = io.get_ref()?;
    loop {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        inner = inner.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

fn target(ctx: &ErrorContext<'_>) -> String {
    match (ctx.bucket, ctx.key) {
        (Some(b), Some(k)) => format!("oss://{b}/{k}"),
        (Some(b), None) => format!("oss://{b}"),
        _ => "OSS".into(),
    }
}

/// Reads a whole (small) body, at most `limit` bytes, with the idle timeout.
pub(crate) async fn read_limited(
    body: Incoming,
    limit: usize,
    idle: Duration,
    op: &str,
) -> Result<Bytes, OssError> {
    let mut s = BodyStream::new(body, None, idle, op.to_string());
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| OssError::with_class(e.class, e.message))?;
        if buf.len() + chunk.len() > limit {
            return Err(OssError::transient(format!(
                "{op}: response body larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Request body handed to hyper. Stream chunks pass through untouched (no copies).
pub(crate) enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Stream {
        stream: ByteStream,
        remaining: u64,
        activity: Option<(Instant, Arc<AtomicU64>)>,
    },
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = StoreError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StoreError>>> {
        match &mut *self {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream {
                stream,
                remaining,
                activity,
            } => loop {
                match ready!(stream.as_mut().poll_next(cx)) {
                    Some(Ok(chunk)) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        let n = chunk.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(StoreError::new(
                                ErrorClass::Client,
                                format!("request body is longer than its declared length ({} extra bytes)", n - *remaining),
                            ))));
                        }
                        *remaining -= n;
                        if let Some((epoch, a)) = activity {
                            a.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None if *remaining > 0 => {
                        return Poll::Ready(Some(Err(StoreError::transient(format!(
                            "request body ended {} bytes short of its declared length",
                            remaining
                        )))))
                    }
                    None => return Poll::Ready(None),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

/// A response body as a [`ByteStream`] source: hyper errors, silence longer than the idle
/// timeout, and a body shorter or longer than expected all end it with an error.
pub(crate) struct BodyStream {
    body: Incoming,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    last_data: Instant,
    expected: Option<u64>,
    received: u64,
    what: String,
    done: bool,
}

impl BodyStream {
    pub(crate) fn new(
        body: Incoming,
        expected: Option<u64>,
        idle_timeout: Duration,
        what: String,
    ) -> Self {
        BodyStream {
            body,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            last_data: Instant::now(),
            expected,
            received: 0,
            what,
            done: false,
        }
    }

    fn fail(&mut self, msg: String) -> Poll<Option<Result<Bytes, StoreError>>> {
        self.done = true;
        Poll::Ready(Some(Err(StoreError::transient(msg))))
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    this.received += data.len() as u64;
                    if let Some(exp) = this.expected {
                        if this.received > exp {
                            let msg = format!(
                                "{}: response body longer than the expected {exp} bytes",
                                this.what
                            );
                            return this.fail(msg);
                        }
                    }
                    // Resetting the timer per chunk is costly at GB/s; remember the time
                    // and push the deadline out only when it fires.
                    this.last_data = Instant::now();
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!(
                        "{}: response body broke off after {} bytes: {}",
                        this.what,
                        this.received,
                        error_chain(&e)
                    );
                    return this.fail(msg);
                }
                Poll::Ready(None) => {
                    if let Some(exp) = this.expected {
                        if this.received < exp {
                            let msg = format!(
                                "{}: response body truncated: got {} of {exp} bytes",
                                this.what, this.received
                            );
                            return this.fail(msg);
                        }
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => loop {
                    if this.idle.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let deadline = this.last_data + this.idle_timeout;
                    if Instant::now() >= deadline {
                        let msg = format!(
                            "{}: no data for {:?} after {} bytes (stalled body)",
                            this.what, this.idle_timeout, this.received
                        );
                        return this.fail(msg);
                    }
                    this.idle.as_mut().reset(deadline.into());
                },
            }
        }
    }
}

fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if parts.last() != Some(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let mut d = BACKOFF_BASE;
        for _ in 0..50 {
            d = next_backoff(d);
            assert!(d >= BACKOFF_BASE && d <= BACKOFF_CAP, "{d:?}");
        }
        let samples: std::collections::HashSet<u128> = (0..50)
            .map(|_| next_backoff(Duration::from_secs(2)).as_millis())
            .collect();
        assert!(samples.len() > 10, "no jitter: {samples:?}");
    }

    fn client_for(addr: SocketAddr) -> OssClient {
        use crate::credentials::{Credentials, StaticProvider};
        let mut cfg = OssConfig::new(
            super::super::endpoint::EndpointSpec::Url(format!("http://{addr}")),
            "cn-hangzhou",
            Arc::new(StaticProvider(Credentials::new("LTAIexample", "secret"))),
        );
        cfg.force_path_style = true;
        OssClient::new(cfg).unwrap()
    }

    /// An endpoint that never answered fails after the client's own attempts with a
    /// non-retryable error (callers would otherwise retry it again for minutes); once it
    /// has answered, the same refusal is a transient outage.
    #[tokio::test]
    async fn refusal_is_final_only_before_the_first_answer() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = client_for(addr)
            .bucket("bkt")
            .head_object("k")
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Client, "{e}");
        assert!(e.never_answered);
        assert_eq!(e.attempts, 4, "the client still retried: {e}");
        assert!(e.message.contains("has not answered any request"), "{e}");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            c.write_all(b"HTTP/1.1 404 Not Found\r\nx-oss-request-id: R1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            // The listener is dropped here: later connections are refused.
        });
        let b = client_for(addr).bucket("bkt");
        let e = b.head_object("k").await.unwrap_err();
        assert_eq!(e.status, Some(404), "{e}");
        server.await.unwrap();
        let e = b.head_object("k").await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient, "{e}");
        assert!(!e.never_answered);
        assert!(!e.message.contains("has not answered"), "{e}");
    }

    #[test]
    fn bucket_names() {
        assert!(check_bucket_name("examplebucket").is_ok());
        assert!(check_bucket_name("a-1-b").is_ok());
        for bad in ["ab", "Upper", "-x-y", "x/y", "a_b", "xyz-"] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }
}
