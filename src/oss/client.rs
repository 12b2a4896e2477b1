//! The OSS side of a request: endpoint addressing, signing at send time, error answers and
//! the clock offset. Connections, TLS, proxies, timeouts, retries and request metrics are the
//! shared transport's ([`crate::http`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use super::endpoint::{Endpoint, EndpointSpec};
use super::error::{clock_offset_ms, ErrorContext, OssError};
use super::sign::{sign_request, SignContext, SignVersion};
use crate::credentials::{CredentialsError, CredentialsProvider};
use crate::http::proxy::ProxyConfig;
use crate::http::{
    Metered, NetError, Replay, ReqBody, RetryPolicy, Retryable, Transport, TransportConfig,
};
use crate::store::{ByteStream, ErrorClass};

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
    /// The stall timer ([`crate::http`]): longest wait for response headers after the last
    /// request-body byte, and longest silence between response-body chunks.
    pub read_timeout: Duration,
    /// Attempts for requests without a streaming body, the first included (streaming ones
    /// are single-shot); default [`crate::http::OSS_MAX_ATTEMPTS`].
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
            max_attempts: crate::http::OSS_MAX_ATTEMPTS,
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
    retry: RetryPolicy,
    connect_to: Option<SocketAddr>,
    pub(crate) region_flag: String,
    transport: Transport,
    /// Server clock minus local clock, learned from RequestTimeTooSkewed.
    clock_offset_ms: AtomicI64,
    /// Requests retried by the transport for this client (streaming bodies are retried by
    /// the engine, as new parts).
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
        let transport = Transport::new(&TransportConfig {
            proxy: cfg.proxy,
            pool_idle_timeout: Duration::from_secs(50),
            pool_max_idle_per_host: 256,
            // Small connection buffers: a body chunk keeps its whole read buffer alive until
            // it is uploaded, however few bytes the read returned, and hyper queues chunks up
            // to this size per upload connection. With hyper's default (~400 KiB, reads up to
            // that size) the queued and pinned buffers made RSS depend on how long a copy ran.
            max_buf_size: Some(CONN_BUF_SIZE),
            tcp_keepalive: Some(Duration::from_secs(30)),
            ..TransportConfig::new(cfg.connect_timeout)
        })
        .map_err(OssError::config)?;
        Ok(OssClient {
            inner: Arc::new(Inner {
                endpoint,
                region,
                credentials: cfg.credentials,
                sign_version: cfg.sign_version,
                read_timeout: cfg.read_timeout,
                retry: RetryPolicy::oss(cfg.max_attempts),
                connect_to: cfg.connect_to,
                region_flag: cfg.region_flag,
                transport,
                clock_offset_ms: AtomicI64::new(0),
                retries: AtomicU64::new(0),
                answered: AtomicBool::new(false),
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

    /// Sends a request; the transport retries it ([`crate::http::retry`]) when its body can
    /// be replayed, a streaming body gets exactly one attempt. Returns only 2xx responses.
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
        let parts = &Parts {
            ctx,
            method: &method,
            query: &query,
        };
        let (replay, bytes, mut stream) = match payload {
            Payload::Empty => (Replay::Replayable, None, None),
            Payload::Bytes(b) => (Replay::Replayable, Some(b), None),
            Payload::Stream(s, len) => (Replay::Once, None, Some((s, len))),
        };
        let headers = &headers;
        let bytes = &bytes;
        let result = crate::http::retry(&self.inner.retry, replay, op, |attempt| {
            let (body, len) = match (bytes, replay) {
                (Some(b), _) => (ReqBody::full(b.clone()), Some(b.len() as u64)),
                (None, Replay::Replayable) => (ReqBody::Empty, None),
                (None, Replay::Once) => {
                    // `Replay::Once` makes this the only attempt.
                    let (s, len) = stream.take().expect("a streaming body is sent once");
                    (ReqBody::stream(s, len), Some(len))
                }
            };
            let headers = headers.clone();
            async move {
                if attempt > 1 {
                    self.inner.retries.fetch_add(1, Ordering::Relaxed);
                }
                self.attempt(parts, headers, body, len, attempt)
                    .await
                    .map_err(|mut e| {
                        e.attempts = attempt;
                        e
                    })
            }
        })
        .await;
        result.map_err(|mut e| {
            if replay == Replay::Replayable && e.never_answered && e.class.is_retryable() {
                // Callers retry transient errors again, for minutes: an endpoint that never
                // answered is a configuration problem until proven otherwise, so say so now.
                e.class = ErrorClass::Client;
                e.message.push_str(
                    "; the endpoint has not answered any request: check the endpoint, region and network",
                );
            }
            e
        })
    }

    /// Requests this client retried on its own so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    async fn attempt(
        &self,
        p: &Parts<'_>,
        mut headers: HeaderMap,
        body: ReqBody,
        len: Option<u64>,
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
        let started = std::time::Instant::now();
        let meter = Metered {
            service: "oss",
            operation: ctx.operation,
        };
        let result = self
            .inner
            .transport
            .send(request, self.inner.read_timeout, Some(meter))
            .instrument(span.clone())
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let mut err = network_error(ctx, &host, &e);
                err.never_answered = !self.inner.answered.load(Ordering::Relaxed) && e.no_server();
                span.in_scope(|| tracing::debug!(error = %err, "OSS request failed"));
                return Err(err);
            }
        };
        self.inner.answered.store(true, Ordering::Relaxed);
        let status = resp.status().as_u16();
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
}

struct Parts<'a> {
    ctx: ErrorContext<'a>,
    method: &'a Method,
    query: &'a [(String, String)],
}

impl Retryable for OssError {
    fn class(&self) -> ErrorClass {
        self.class
    }
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
fn network_error(ctx: &ErrorContext<'_>, host: &str, e: &NetError) -> OssError {
    if let Some(se) = e.store_error() {
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
    if let Some(timeout) = e.timed_out() {
        return OssError::transient(format!(
            "{} on {}: no response from {host} within {timeout:?}",
            ctx.operation,
            target(ctx)
        ));
    }
    if let Some(tls) = e.tls_rejected() {
        return OssError::with_class(
            ErrorClass::Client,
            format!(
                "{}: TLS certificate of {host} could not be verified ({tls}); check the endpoint (verification cannot be disabled)",
                ctx.operation
            ),
        );
    }
    OssError::transient(format!(
        "{} on {}: network error talking to {host}: {e}",
        ctx.operation,
        target(ctx)
    ))
}

fn target(ctx: &ErrorContext<'_>) -> String {
    match (ctx.bucket, ctx.key) {
        (Some(b), Some(k)) => format!("oss://{b}/{k}"),
        (Some(b), None) => format!("oss://{b}"),
        _ => "OSS".into(),
    }
}

/// Reads a whole (small) body, at most `limit` bytes, under the stall timer.
pub(crate) async fn read_limited(
    body: Incoming,
    limit: usize,
    idle: Duration,
    op: &str,
) -> Result<Bytes, OssError> {
    crate::http::read_limited(body, limit, idle, op)
        .await
        .map_err(|e| OssError::with_class(e.class, e.message))
}

#[cfg(test)]
mod tests {
    use super::*;

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
