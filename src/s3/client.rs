//! The S3 side of a request: addressing, SigV4 at send time, error answers, the clock offset
//! and the one credential re-fetch on `ExpiredToken`. Connections, TLS, proxies, timeouts,
//! retries and request metrics are the shared transport's ([`crate::http`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, Request};
use hyper::body::Incoming;
use tracing::Instrument;

use super::endpoint::{check_bucket_name, S3Endpoint};
use super::error::{is_expired_token, ErrorContext, S3Error};
use super::provider::Provider;
use crate::aws::sigv4::{self, SigningParams, EMPTY_SHA256, UNSIGNED_PAYLOAD};
use crate::credentials::{CredentialsError, CredentialsProvider};
use crate::http::proxy::ProxyConfig;
use crate::http::{
    Metered, NetError, Replay, ReqBody, RetryPolicy, Retryable, Transport, TransportConfig,
};
use crate::store::wire::clock_offset_ms;
use crate::store::{ByteStream, ErrorClass};

/// Largest XML response body we read into memory (ListParts pages are ~300 KiB).
pub(crate) const MAX_XML_BODY: usize = 16 * 1024 * 1024;
const MAX_ERROR_BODY: usize = 64 * 1024;
/// S3 allows 15 minutes of skew; beyond 14 a bodiless 403 (HEAD) is taken as skew.
const SKEW_SUSPECT_MS: u64 = 14 * 60 * 1000;
/// Same connection buffer bound as the OSS client, for the same RSS reason.
const CONN_BUF_SIZE: usize = 64 * 1024;

/// Client settings. Build with [`S3Config::new`] and adjust fields.
#[derive(Clone)]
pub struct S3Config {
    /// `http(s)://host[:port]`; `None`: the provider's endpoint for `region`.
    pub endpoint: Option<String>,
    /// The bucket's region (SigV4 scope); empty means the provider's default (`auto` for R2).
    pub region: String,
    pub provider: Provider,
    /// `Some(true)` forces path style, `Some(false)` virtual-hosted; `None` decides per bucket.
    pub path_style: Option<bool>,
    /// The endpoint ignores `x-amz-checksum-*` (OBS/OSS-like quirks) even if the provider
    /// normally honours them: send none, trust none.
    pub ignore_checksum_headers: bool,
    pub credentials: Arc<dyn CredentialsProvider>,
    pub connect_timeout: Duration,
    /// The stall timer of [`crate::http`].
    pub read_timeout: Duration,
    /// Attempts for replayable requests, the first included.
    pub max_attempts: u32,
    /// Connect here instead of resolving the host; `Host` still names the real host.
    pub connect_to: Option<SocketAddr>,
    /// The CLI flag that sets this side's region, named in wrong-region advice.
    pub region_flag: String,
    pub proxy: ProxyConfig,
}

impl S3Config {
    /// Provider defaults, 10 s connect / 60 s stall timeouts, 4 attempts.
    pub fn new(
        provider: Provider,
        region: impl Into<String>,
        endpoint: Option<String>,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> Self {
        S3Config {
            endpoint,
            region: region.into(),
            provider,
            path_style: None,
            ignore_checksum_headers: false,
            credentials,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_attempts: crate::http::OSS_MAX_ATTEMPTS,
            connect_to: None,
            region_flag: String::new(),
            proxy: ProxyConfig::from_env(),
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("provider", &self.provider)
            .field("path_style", &self.path_style)
            .field("ignore_checksum_headers", &self.ignore_checksum_headers)
            .field("credentials", &self.credentials.name())
            .field("read_timeout", &self.read_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("connect_to", &self.connect_to)
            .finish_non_exhaustive()
    }
}

/// An S3 client: cheap to clone, one connection pool shared by all clones.
#[derive(Clone)]
pub struct S3Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) endpoint: S3Endpoint,
    pub(crate) region: String,
    pub(crate) provider: Provider,
    pub(crate) quirks: bool,
    credentials: Arc<dyn CredentialsProvider>,
    pub(crate) read_timeout: Duration,
    retry: RetryPolicy,
    connect_to: Option<SocketAddr>,
    region_flag: String,
    transport: Transport,
    /// Server clock minus local clock, learned from RequestTimeTooSkewed.
    clock_offset_ms: AtomicI64,
    retries: AtomicU64,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
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

/// One S3 request before signing.
pub(crate) struct S3Request<'a> {
    pub op: &'static str,
    pub method: Method,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    /// Raw (unencoded) name/value pairs; an empty value is sent as a bare name (`?uploads`).
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub payload: Payload,
    /// Read the whole (XML) body inside the attempt, so a failed read or an `<Error>` embedded
    /// in a 200 (CompleteMultipartUpload) is retried by the transport like any error answer.
    pub buffer: bool,
}

impl<'a> S3Request<'a> {
    pub fn new(
        op: &'static str,
        method: Method,
        bucket: Option<&'a str>,
        key: Option<&'a str>,
    ) -> Self {
        S3Request {
            op,
            method,
            bucket,
            key,
            query: Vec::new(),
            headers: HeaderMap::new(),
            payload: Payload::Empty,
            buffer: false,
        }
    }

    pub fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }

    /// Adds a header; invalid names or values are a usage error.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, S3Error> {
        let op = self.op;
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| S3Error::config(format!("{op}: invalid header name {name:?}")))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| S3Error::config(format!("{op}: invalid value for header {name}")))?;
        self.headers.append(n, v);
        Ok(self)
    }

    pub fn payload(mut self, p: Payload) -> Self {
        self.payload = p;
        self
    }

    pub fn buffered(mut self) -> Self {
        self.buffer = true;
        self
    }
}

/// A 2xx response: head, and either the buffered body or the still-streaming one.
pub(crate) struct S3Response {
    pub head: http::response::Parts,
    pub body: Bytes,
    pub stream: Option<Incoming>,
}

impl S3Client {
    /// Builds a client: resolves the endpoint and sets up TLS (webpki roots, verification
    /// always on) and the connection pool.
    pub fn new(cfg: S3Config) -> Result<S3Client, S3Error> {
        let endpoint = S3Endpoint::resolve(
            cfg.endpoint.as_deref(),
            &cfg.region,
            cfg.provider,
            cfg.path_style,
        )
        .map_err(S3Error::config)?;
        let region = cfg.provider.signing_region(cfg.region.trim());
        if region.is_empty() {
            return Err(S3Error::config(
                "S3 needs the bucket's region for signing: pass the region flag",
            ));
        }
        let transport = Transport::new(&TransportConfig {
            proxy: cfg.proxy,
            pool_idle_timeout: Duration::from_secs(50),
            pool_max_idle_per_host: 256,
            max_buf_size: Some(CONN_BUF_SIZE),
            tcp_keepalive: Some(Duration::from_secs(30)),
            ..TransportConfig::new(cfg.connect_timeout)
        })
        .map_err(S3Error::config)?;
        Ok(S3Client {
            inner: Arc::new(Inner {
                endpoint,
                region,
                provider: cfg.provider,
                quirks: cfg.ignore_checksum_headers,
                credentials: cfg.credentials,
                read_timeout: cfg.read_timeout,
                retry: RetryPolicy::oss(cfg.max_attempts),
                connect_to: cfg.connect_to,
                region_flag: cfg.region_flag,
                transport,
                clock_offset_ms: AtomicI64::new(0),
                retries: AtomicU64::new(0),
            }),
        })
    }

    pub fn endpoint(&self) -> &S3Endpoint {
        &self.inner.endpoint
    }

    /// The SigV4 scope region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    pub fn provider(&self) -> Provider {
        self.inner.provider
    }

    /// The clock correction applied when signing (server minus local).
    pub fn clock_offset(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(self.inner.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Requests this client retried on its own so far.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    fn now(&self) -> SystemTime {
        let off = self.inner.clock_offset_ms.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if off >= 0 {
            now + Duration::from_millis(off as u64)
        } else {
            now - Duration::from_millis(off.unsigned_abs())
        }
    }

    /// Sends a request; the transport retries it when its body can be replayed, a streaming
    /// body gets exactly one attempt. Returns only 2xx responses.
    pub(crate) async fn send(&self, req: S3Request<'_>) -> Result<S3Response, S3Error> {
        let S3Request {
            op,
            method,
            bucket,
            key,
            query,
            headers,
            payload,
            buffer,
        } = req;
        if let Some(b) = bucket {
            check_bucket_name(b, self.inner.provider).map_err(S3Error::config)?;
        }
        let ctx = ErrorContext {
            operation: op,
            bucket,
            key,
            region_flag: &self.inner.region_flag,
            signing_region: &self.inner.region,
        };
        let (replay, bytes, mut stream) = match payload {
            Payload::Empty => (Replay::Replayable, None, None),
            Payload::Bytes(b) => (Replay::Replayable, Some(b), None),
            Payload::Stream(s, len) => (Replay::Once, None, Some((s, len))),
        };
        let parts = &Parts {
            ctx,
            method: &method,
            query: &query,
            buffer,
        };
        let headers = &headers;
        let bytes = &bytes;
        crate::http::retry(&self.inner.retry, replay, op, |attempt| {
            let streaming = if replay == Replay::Once {
                // `Replay::Once` makes this the only attempt.
                stream.take()
            } else {
                None
            };
            async move {
                if attempt > 1 {
                    self.inner.retries.fetch_add(1, Ordering::Relaxed);
                }
                let body = || match bytes {
                    Some(b) => (ReqBody::full(b.clone()), Some(b.len() as u64)),
                    None => (ReqBody::Empty, None),
                };
                let result = match streaming {
                    Some((s, len)) => {
                        let r = self
                            .attempt(
                                parts,
                                headers.clone(),
                                ReqBody::stream(s, len),
                                Some(len),
                                UNSIGNED_PAYLOAD,
                            )
                            .await;
                        // A part upload cannot be resent here; an expired token is worth a new
                        // part attempt by the scheduler (credentials are fetched again).
                        r.map_err(|mut e| {
                            if is_expired_token(e.code.as_deref()) {
                                e.class = ErrorClass::Transient;
                            }
                            e
                        })
                    }
                    None => {
                        let hash = bytes
                            .as_ref()
                            .map_or(EMPTY_SHA256.to_string(), |b| sigv4::sha256_hex(b));
                        let (b, len) = body();
                        match self.attempt(parts, headers.clone(), b, len, &hash).await {
                            Err(e) if is_expired_token(e.code.as_deref()) => {
                                // Temporary keys expired under us: the provider refreshes on
                                // the next ask; one immediate re-signed attempt, no more.
                                tracing::info!(
                                    op = parts.ctx.operation,
                                    "S3 says the session token expired; fetching credentials again"
                                );
                                let (b, len) = body();
                                self.attempt(parts, headers.clone(), b, len, &hash).await
                            }
                            r => r,
                        }
                    }
                };
                result.map_err(|mut e| {
                    e.attempts = attempt;
                    e
                })
            }
        })
        .await
    }

    async fn attempt(
        &self,
        p: &Parts<'_>,
        mut headers: HeaderMap,
        body: ReqBody,
        len: Option<u64>,
        payload_hash: &str,
    ) -> Result<S3Response, S3Error> {
        let ctx = &p.ctx;
        let creds = self
            .inner
            .credentials
            .credentials()
            .await
            .map_err(|e| credentials_error(ctx.operation, e))?;
        let loc = self.inner.endpoint.locate(ctx.bucket, ctx.key);
        headers.insert(
            HOST,
            HeaderValue::from_str(&loc.host)
                .map_err(|_| S3Error::config(format!("invalid host {:?}", loc.host)))?,
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
        let query = encode_query(p.query);
        let authority = match self.inner.connect_to {
            Some(addr) => addr.to_string(),
            None => loc.host.clone(),
        };
        let uri_s = if query.is_empty() {
            format!(
                "{}://{authority}{}",
                self.inner.endpoint.scheme.as_str(),
                loc.path
            )
        } else {
            format!(
                "{}://{authority}{}?{query}",
                self.inner.endpoint.scheme.as_str(),
                loc.path
            )
        };
        let uri: http::Uri = uri_s
            .parse()
            .map_err(|e| S3Error::config(format!("{}: invalid request URI: {e}", ctx.operation)))?;
        sigv4::sign_headers(
            p.method,
            &uri,
            &mut headers,
            payload_hash,
            &SigningParams {
                access_key_id: &creds.access_key_id,
                secret_access_key: &creds.access_key_secret,
                session_token: creds.security_token.as_deref(),
                region: &self.inner.region,
                service: "s3",
                time: self.now(),
            },
        );
        let mut builder = Request::builder().method(p.method.clone()).uri(uri);
        if let Some(h) = builder.headers_mut() {
            *h = headers;
        }
        let request = builder.body(body).map_err(|e| {
            S3Error::config(format!("{}: cannot build request: {e}", ctx.operation))
        })?;

        let span = tracing::debug_span!(
            "s3_request",
            op = ctx.operation,
            method = %p.method,
            bucket = ctx.bucket.unwrap_or(""),
            key = ctx.key.unwrap_or(""),
            status = tracing::field::Empty,
            request_id = tracing::field::Empty,
        );
        let meter = Metered {
            service: "s3",
            operation: ctx.operation,
        };
        let resp = self
            .inner
            .transport
            .send(request, self.inner.read_timeout, Some(meter))
            .instrument(span.clone())
            .await
            .map_err(|e| network_error(ctx, &loc.host, &e))?;
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-amz-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        span.record("status", status);
        span.record("request_id", request_id.as_str());
        let (head, incoming) = resp.into_parts();
        if head.status.is_success() {
            if !p.buffer {
                return Ok(S3Response {
                    head,
                    body: Bytes::new(),
                    stream: Some(incoming),
                });
            }
            let body = crate::http::read_limited(
                incoming,
                MAX_XML_BODY,
                self.inner.read_timeout,
                ctx.operation,
            )
            .await
            .map_err(|e| S3Error::with_class(e.class, e.message))?;
            if super::error::error_fields(&body).is_empty() {
                return Ok(S3Response {
                    head,
                    body,
                    stream: None,
                });
            }
            // 200 with an <Error> inside (a slow CompleteMultipartUpload): a failure like any
            // other, classified by its code (InternalError/SlowDown retry).
            let mut err = S3Error::from_response(status, &head.headers, &body, ctx);
            err.message.push_str(" (reported inside an HTTP 200 body)");
            span.in_scope(|| tracing::debug!(error = %err, "S3 error inside a 200"));
            return Err(err);
        }
        let body = crate::http::read_limited(
            incoming,
            MAX_ERROR_BODY,
            self.inner.read_timeout,
            ctx.operation,
        )
        .await
        .unwrap_or_default();
        let mut err = S3Error::from_response(status, &head.headers, &body, ctx);
        if status == 403 && err.code.is_none() {
            // HEAD errors have no body: a Date far from ours is the only clue to skew.
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
            if let Some(server) = err.server_time {
                let off = clock_offset_ms(server, SystemTime::now());
                self.inner.clock_offset_ms.store(off, Ordering::Relaxed);
                tracing::warn!(
                    offset_ms = off,
                    "S3 reports clock skew; signing with a corrected clock (fix NTP on this host)"
                );
            }
        }
        span.in_scope(|| tracing::debug!(error = %err, "S3 error response"));
        Err(err)
    }
}

struct Parts<'a> {
    ctx: ErrorContext<'a>,
    method: &'a Method,
    query: &'a [(String, String)],
    buffer: bool,
}

impl Retryable for S3Error {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

/// `name=value&…` with AWS encoding; empty values as bare names (`uploads`).
fn encode_query(q: &[(String, String)]) -> String {
    q.iter()
        .map(|(k, v)| {
            if v.is_empty() {
                sigv4::uri_encode(k, true)
            } else {
                format!(
                    "{}={}",
                    sigv4::uri_encode(k, true),
                    sigv4::uri_encode(v, true)
                )
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn credentials_error(op: &str, e: CredentialsError) -> S3Error {
    // A failed refresh (IMDS/STS blip) may pass; a missing or malformed source will not.
    let class = match e {
        CredentialsError::Refresh { .. } => ErrorClass::Transient,
        _ => ErrorClass::Auth,
    };
    S3Error::with_class(class, format!("{op}: cannot get credentials: {e}"))
}

/// Classifies a transport failure; the original error of a streamed body wins.
fn network_error(ctx: &ErrorContext<'_>, host: &str, e: &NetError) -> S3Error {
    let target = ctx.target();
    let op = ctx.operation;
    if let Some(se) = e.store_error() {
        return S3Error::with_class(
            se.class,
            format!("{op} on {target}: request body failed: {}", se.message),
        );
    }
    if let Some(timeout) = e.timed_out() {
        return S3Error::with_class(
            ErrorClass::Transient,
            format!("{op} on {target}: no response from {host} within {timeout:?}"),
        );
    }
    if let Some(tls) = e.tls_rejected() {
        return S3Error::config(format!(
            "{op}: TLS certificate of {host} could not be verified ({tls}); check the endpoint (verification cannot be disabled)"
        ));
    }
    S3Error::with_class(
        e.class(),
        format!("{op} on {target}: network error talking to {host}: {e}"),
    )
}

/// Reads a whole (small) streaming body.
pub(crate) async fn read_all(
    client: &S3Client,
    resp: S3Response,
    op: &str,
) -> Result<Bytes, S3Error> {
    match resp.stream {
        None => Ok(resp.body),
        Some(b) => crate::http::read_limited(b, MAX_XML_BODY, client.inner.read_timeout, op)
            .await
            .map_err(|e| S3Error::with_class(e.class, e.message)),
    }
}
