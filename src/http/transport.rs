//! The connection pool, TLS, proxies, the stall timer, error classification and request
//! metrics: everything between a built `http::Request` and its response.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::body::{error_chain, read_limited, ReqBody};
use super::proxy::{ProxyConfig, ProxyConnector};
use crate::metrics::{REQUESTS_TOTAL, REQUEST_DURATION_SECONDS};
use crate::store::{ErrorClass, StoreError};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Which certificate authorities a TLS peer must chain to. Verification is always on.
#[derive(Debug, Clone)]
pub enum Roots {
    /// The public web roots (webpki-roots): OSS, the cloud APIs.
    Webpki,
    /// A private CA only (`ossrelay jobs --cacert`, a daemon with its own certificate).
    Custom(rustls::RootCertStore),
}

/// How connections are made and pooled.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// DNS + TCP connect (+ proxy CONNECT) limit.
    pub connect_timeout: Duration,
    pub roots: Roots,
    /// Outbound proxy; [`ProxyConfig::none`] for a client that must never use one (the
    /// metadata service).
    pub proxy: ProxyConfig,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Largest read from a connection, and most request-body bytes queued for writing on one
    /// connection (`None`: hyper's default).
    pub max_buf_size: Option<usize>,
    pub tcp_keepalive: Option<Duration>,
}

impl TransportConfig {
    /// Proxies from the environment, 30 s idle connections, no special buffer size.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            roots: Roots::Webpki,
            proxy: ProxyConfig::from_env(),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: usize::MAX,
            max_buf_size: None,
            tcp_keepalive: None,
        }
    }
}

/// The limits of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The stall timer: longest silence while waiting for the response head (counted from
    /// the last request-body byte taken) or between response-body chunks.
    pub stall: Duration,
    /// Longest whole attempt (connect, send, head and body), for small-answer APIs.
    pub attempt: Option<Duration>,
}

/// Labels for `ossrelay_requests_total` and `ossrelay_request_duration_seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Metered<'a> {
    pub service: &'static str,
    pub operation: &'a str,
}

/// The last moment a request made progress (a body chunk taken by the connection).
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }
}

/// Why an exchange produced no response.
#[derive(Debug)]
pub enum NetError {
    /// Nothing moved for the stall timeout.
    Stalled(Duration),
    /// The attempt took longer than [`Timeouts::attempt`].
    Deadline(Duration),
    /// Connecting, sending or receiving failed; the source chain says why.
    Failed(BoxError),
    /// The response head arrived, reading its body failed.
    Body(StoreError),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Stalled(t) => write!(f, "no response within {t:?}"),
            NetError::Deadline(t) => write!(f, "no complete response within {t:?}"),
            NetError::Failed(e) => f.write_str(&error_chain(&**e)),
            NetError::Body(e) => write!(f, "reading the response body failed: {}", e.message),
        }
    }
}

impl StdError for NetError {}

impl NetError {
    /// How a retry should treat it: a failed request body keeps its own class, a rejected
    /// certificate is [`ErrorClass::Client`] (retrying cannot help), anything else is
    /// [`ErrorClass::Transient`].
    pub fn class(&self) -> ErrorClass {
        if let Some(se) = self.store_error() {
            return se.class;
        }
        if self.tls_rejected().is_some() {
            return ErrorClass::Client;
        }
        ErrorClass::Transient
    }

    /// The timeout that ran out, if that is what happened.
    pub fn timed_out(&self) -> Option<Duration> {
        match self {
            NetError::Stalled(t) | NetError::Deadline(t) => Some(*t),
            _ => None,
        }
    }

    /// The error a streamed request body failed with (it names the real cause).
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            NetError::Body(e) => Some(e),
            NetError::Failed(e) => sources(&**e).find_map(|err| err.downcast_ref::<StoreError>()),
            _ => None,
        }
    }

    /// The certificate error when the peer's certificate could not be verified.
    pub fn tls_rejected(&self) -> Option<&rustls::Error> {
        let NetError::Failed(e) = self else {
            return None;
        };
        sources(&**e)
            .filter_map(|err| err.downcast_ref::<std::io::Error>())
            .filter_map(rustls_error_in)
            .find(|tls| {
                matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
                )
            })
    }

    /// Whether nobody speaking HTTP is there: the connection (DNS, TCP, TLS handshake) failed,
    /// or the peer's answer is not HTTP. A reset or timeout after connecting is not.
    pub fn no_server(&self) -> bool {
        let NetError::Failed(e) = self else {
            return false;
        };
        sources(&**e).any(|err| {
            err.downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some_and(|le| le.is_connect())
                || err
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(|he| he.is_parse() || he.is_parse_status())
        })
    }
}

fn sources<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&err| err.source())
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

/// One connection pool with TLS (webpki roots, verification always on) and proxy support:
/// cheap to clone, all clones share the pool.
#[derive(Clone)]
pub struct Transport {
    client: Client<HttpsConnector<ProxyConnector>, ReqBody>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transport")
    }
}

impl Transport {
    /// Builds the pool; fails only if TLS cannot be set up.
    pub fn new(cfg: &TransportConfig) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        // Without TCP_NODELAY a request written right after the client's last handshake
        // message waits for the peer's delayed ACK: a whole `ossrelay jobs list` over HTTPS on
        // loopback took a median 51.7 ms with it off and 3.5 ms with it on (30 runs each).
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(cfg.tcp_keepalive);
        let provider = rustls::crypto::ring::default_provider();
        let builder = match &cfg.roots {
            Roots::Webpki => HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| format!("TLS setup failed: {e}"))?,
            Roots::Custom(roots) => {
                let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS setup failed: {e}"))?
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(tls)
            }
        };
        let https = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(ProxyConnector::new(http, cfg.proxy.clone()));
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host);
        if let Some(n) = cfg.max_buf_size {
            b.http1_max_buf_size(n);
        }
        Ok(Self {
            client: b.build(https),
        })
    }

    /// Sends `req` once and waits for the response head under the stall timer: it must come
    /// within `stall` of the last request-body chunk the connection took (so a slow large
    /// upload is not cut off, and a peer that stops reading is). With `meter`, the request is
    /// counted by status and timed.
    pub async fn send(
        &self,
        mut req: Request<ReqBody>,
        stall: Duration,
        meter: Option<Metered<'_>>,
    ) -> Result<Response<Incoming>, NetError> {
        let activity = Activity::new();
        req.body_mut().track(&activity);
        let started = Instant::now();
        let result = self.exchange(req, &activity, stall).await;
        if let Some(m) = meter {
            record(m, started, result.as_ref().ok().map(|r| r.status()));
        }
        result
    }

    async fn exchange(
        &self,
        req: Request<ReqBody>,
        activity: &Activity,
        stall: Duration,
    ) -> Result<Response<Incoming>, NetError> {
        let fut = self.client.request(req);
        tokio::pin!(fut);
        loop {
            let last = activity.last();
            let deadline = activity.epoch + Duration::from_millis(last) + stall;
            tokio::select! {
                r = &mut fut => return r.map_err(|e| NetError::Failed(Box::new(e))),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if activity.last() == last {
                        return Err(NetError::Stalled(stall));
                    }
                }
            }
        }
    }

    /// Sends `req` once and reads its whole body (at most `limit` bytes), for APIs with small
    /// answers: the stall timer applies to the head and the body, `timeouts.attempt` to all
    /// of it.
    pub async fn fetch(
        &self,
        req: Request<ReqBody>,
        timeouts: Timeouts,
        limit: usize,
        meter: Option<Metered<'_>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), NetError> {
        let started = Instant::now();
        let exchange = async {
            let resp = self.send(req, timeouts.stall, None).await?;
            let (parts, body) = resp.into_parts();
            let bytes = read_limited(body, limit, timeouts.stall, "response")
                .await
                .map_err(NetError::Body)?;
            Ok((parts.status, parts.headers, bytes))
        };
        let result = match timeouts.attempt {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .unwrap_or(Err(NetError::Deadline(t))),
            None => exchange.await,
        };
        if let Some(m) = meter {
            record(m, started, result.as_ref().ok().map(|r| r.0));
        }
        result
    }
}

fn record(m: Metered<'_>, started: Instant, status: Option<StatusCode>) {
    let op = m.operation.to_string();
    metrics::histogram!(REQUEST_DURATION_SECONDS, "operation" => op.clone())
        .record(started.elapsed().as_secs_f64());
    let status = status.map_or_else(|| "error".to_string(), |s| s.as_u16().to_string());
    metrics::counter!(REQUESTS_TOTAL, "service" => m.service, "operation" => op, "status" => status)
        .increment(1);
}
