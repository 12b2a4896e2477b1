//! The HTTP API (JSON under `/v1`, described in `docs/openapi.yaml`), `/metrics`, `/healthz`
//! and `/readyz`, on one hyper 1 listener, over TLS when the daemon has a certificate.
//!
//! Guarantees callers can rely on:
//! * Every request but `/healthz` and `/readyz` is authenticated first (see [`super::auth`]);
//!   nothing about a request is validated or acted on before that.
//! * A read-only caller gets `403` for anything but GET/HEAD; a job naming a credential profile
//!   outside the caller's scope gets `403` naming the allowed set; `POST /v1/admin/reload`
//!   needs an `admin` caller.
//! * Every state-changing request leaves one audit line (see [`super::audit`]), and a job
//!   records its submitter's name in `submitted_by`.
//! * On a TLS listener a plain-HTTP request gets a plain `400` saying to use `https://`, and
//!   the connection is closed; nothing else is read from it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};

use super::audit;
use super::auth::{self, Caller, Keyring, ProfilePolicy};
use super::jobs::{self, JobState};
use super::scheduler::{JobError, Scheduler};
use super::tls::CertStore;

/// Largest request body accepted (a job is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// Longest wait for a whole request body once the headers are in. Without it a client that
/// announces a body and never sends it holds a connection and a task forever. As long as the
/// header timeout: [`MAX_BODY`] arrives within it even at 8 KiB/s.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What request handlers share.
pub struct ApiState {
    pub scheduler: Arc<Scheduler>,
    /// Bearer tokens, one of which every request except `/healthz` and `/readyz` must carry;
    /// `None` = open (only allowed on loopback addresses).
    pub keyring: Option<Arc<Keyring>>,
    pub prometheus: Option<PrometheusHandle>,
    /// Accept any `src_endpoint`/`dst_endpoint` (see [`jobs::check_policy`]).
    pub allow_any_endpoint: bool,
    /// Which credential profiles jobs may name (see [`auth::check_profiles`]).
    pub profiles: ProfilePolicy,
    /// The listener's certificate, when it speaks TLS (reloaded with the tokens).
    pub tls: Option<Arc<CertStore>>,
}

/// What a reload re-read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Tokens now in force (`None`: the daemon has no tokens).
    pub tokens: Option<usize>,
    /// Whether a certificate was re-read.
    pub certificate: bool,
}

impl ApiState {
    /// Re-reads the token file and the certificate (SIGHUP, `POST /v1/admin/reload`). Each part
    /// is swapped whole or not at all; requests already accepted finish as they started.
    /// The error is one line naming what failed and what stayed in force.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let mut errors = Vec::new();
        let mut out = Reloaded {
            tokens: None,
            certificate: false,
        };
        if let Some(k) = &self.keyring {
            match k.reload() {
                Ok(n) => out.tokens = Some(n),
                Err(e) => errors.push(format!("{e} (the previous tokens stay in force)")),
            }
        }
        if let Some(t) = &self.tls {
            match t.reload() {
                Ok(()) => out.certificate = true,
                Err(e) => errors.push(format!("{e} (the previous certificate stays in use)")),
            }
        }
        if errors.is_empty() {
            tracing::info!(tokens = ?out.tokens, certificate = out.certificate, "reloaded tokens and certificate");
            Ok(out)
        } else {
            let msg = errors.join("; ");
            tracing::error!(error = %msg, "reload failed");
            Err(msg)
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, v: &Value) -> Resp {
    let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, code: &str, message: impl Into<String>, field: Option<&str>) -> Resp {
    let mut e = json!({"code": code, "message": message.into()});
    if let Some(f) = field {
        e["field"] = json!(f);
    }
    json_response(status, &json!({ "error": e }))
}

fn job_error(e: JobError) -> Resp {
    match e {
        JobError::NotFound(id) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {id}"),
            None,
        ),
        JobError::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m, None),
        JobError::WrongState {
            message,
            state,
            stage,
        } => json_response(
            StatusCode::CONFLICT,
            &json!({"error": {"code": "conflict", "message": message,
                "state": state.as_str(), "stage": stage}}),
        ),
        e @ JobError::TooMany(_) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_jobs",
            e.to_string(),
            None,
        ),
        JobError::Unavailable(m) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m, None),
        JobError::Db(e) => {
            tracing::error!(error = %e, "job database error");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the job database failed; see the daemon's log",
                None,
            )
        }
    }
}

/// The caller presenting this request's bearer token; `None` if it carries none or a wrong one.
fn authenticate(st: &ApiState, req: &Request<Incoming>) -> Option<Arc<Caller>> {
    let Some(keyring) = &st.keyring else {
        return Some(Arc::new(Caller::anonymous()));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?;
    keyring.check(presented.trim().as_bytes())
}

fn unauthorized() -> Resp {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token (send \"Authorization: Bearer <token>\")",
        None,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r
}

fn forbidden(message: impl Into<String>, field: Option<&str>) -> Resp {
    error(StatusCode::FORBIDDEN, "forbidden", message, field)
}

enum BodyError {
    TooLarge,
    Unreadable,
    TimedOut,
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
    }
}

fn body_error(e: BodyError) -> Resp {
    match e {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
            None,
        ),
        BodyError::Unreadable => error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the request body could not be read",
            None,
        ),
        BodyError::TimedOut => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}s: send the whole body with the headers",
                    BODY_READ_TIMEOUT.as_secs()
                ),
                None,
            );
            // The rest of the body may still come: this connection cannot carry another request.
            r.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            r
        }
    }
}

// A response is the natural error of a request step; they are built once per request.
#[allow(clippy::result_large_err)]
fn parse_json(bytes: &[u8]) -> Result<Value, Resp> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
            Some("body"),
        )
    })
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn job_json(job: &jobs::Job) -> Value {
    serde_json::to_value(job).unwrap_or_else(|_| json!({}))
}

/// Handles one request from `peer`; never fails (errors become JSON responses).
pub async fn handle(
    st: Arc<ApiState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let audited = audit::action(&method, &path);
    let (resp, caller) = match public(&st, &method, &path) {
        Some(r) => (r, None),
        None => match authenticate(&st, &req) {
            None => (unauthorized(), None),
            Some(c) => (route(&st, &c, req, &method, &path).await, Some(c)),
        },
    };
    let status = resp.status().as_u16();
    if let Some((action, job)) = audited {
        // A new job's id is in its Location header.
        let job = job.or_else(|| {
            resp.headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.strip_prefix("/v1/jobs/"))
                .filter(|id| jobs::valid_id(id))
                .map(str::to_string)
        });
        let name = caller.as_ref().map_or("-", |c| c.name.as_str());
        audit::record(peer, name, action, job.as_deref(), status);
    }
    tracing::debug!(%method, %path, status, elapsed = ?started.elapsed(), "request");
    Ok(resp)
}

/// The answers that need no token: health and readiness probes.
fn public(st: &ApiState, method: &Method, path: &str) -> Option<Resp> {
    match (method, path) {
        (&Method::GET, "/healthz") => Some(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        (&Method::GET, "/readyz") => Some(if st.scheduler.shutting_down() {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "shutting down"}),
            )
        } else {
            json_response(StatusCode::OK, &json!({"status": "ready"}))
        }),
        _ => None,
    }
}

async fn route(
    st: &ApiState,
    caller: &Caller,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Resp {
    if caller.read_only && !matches!(*method, Method::GET | Method::HEAD) {
        return forbidden(
            format!(
                "caller {:?} is read-only: it may list and show jobs and read /metrics; use a token without read-only to change anything",
                caller.name
            ),
            None,
        );
    }
    if path == "/v1/admin/reload" {
        if method != Method::POST {
            return method_not_allowed();
        }
        if !caller.admin {
            return forbidden(
                format!(
                    "caller {:?} may not reload: give its token line the admin attribute, or send SIGHUP to the daemon",
                    caller.name
                ),
                None,
            );
        }
        return match st.reload() {
            Ok(r) => json_response(
                StatusCode::OK,
                &json!({"tokens": r.tokens, "certificate": r.certificate}),
            ),
            Err(m) => error(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", m, None),
        };
    }
    if path == "/metrics" {
        if method != Method::GET {
            return method_not_allowed();
        }
        let text = super::metrics::render(&st.scheduler, st.prometheus.as_ref());
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(text)))
            .expect("static response parts are valid");
    }
    let Some(rest) = path.strip_prefix("/v1/jobs") else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
            None,
        );
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if rest.contains("//") || (rest.ends_with('/') && !segments.is_empty()) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
            None,
        );
    }
    match (method, segments.as_slice()) {
        (&Method::POST, []) => submit(st, caller, req).await,
        (&Method::GET, []) => {
            let filter = match query_param(req.uri().query(), "state") {
                None | Some("") => None,
                Some(s) => match JobState::parse(s) {
                    Some(s) => Some(s),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "invalid_field",
                            format!("unknown state {s:?}; one of queued, running, paused, succeeded, failed, cancelled"),
                            Some("state"),
                        )
                    }
                },
            };
            let list: Vec<Value> = st.scheduler.list(filter).iter().map(job_json).collect();
            json_response(StatusCode::OK, &json!({ "jobs": list }))
        }
        (_, []) => method_not_allowed(),
        (_, [id, ..]) if !jobs::valid_id(id) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such job (job ids look like j-0123456789abcdef)",
            None,
        ),
        (&Method::GET, [id]) => match st.scheduler.get(id) {
            Some(j) => json_response(StatusCode::OK, &job_json(&j)),
            None => job_error(JobError::NotFound(id.to_string())),
        },
        (&Method::DELETE, [id]) => match st
            .scheduler
            .delete(
                id,
                matches!(
                    query_param(req.uri().query(), "keep_upload"),
                    Some("true" | "1")
                ),
            )
            .await
        {
            Ok(()) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .expect("static response parts are valid"),
            Err(e) => job_error(e),
        },
        (&Method::POST, [id, "cancel"]) => {
            let id = id.to_string();
            let keep = match cancel_options(req).await {
                Ok(k) => k,
                Err(r) => return r,
            };
            match st.scheduler.cancel(&id, keep).await {
                Ok(j) => json_response(StatusCode::OK, &job_json(&j)),
                Err(e) => job_error(e),
            }
        }
        (&Method::POST, [id, "pause"]) => match st.scheduler.pause(id).await {
            Ok(j) => json_response(StatusCode::OK, &job_json(&j)),
            Err(e) => job_error(e),
        },
        (&Method::POST, [id, "resume"]) => match st.scheduler.resume(id).await {
            // Still stopping from a pause: the resume is recorded and happens once it lands.
            Ok(j) if j.stage == "resuming" => json_response(StatusCode::ACCEPTED, &job_json(&j)),
            Ok(j) => json_response(StatusCode::OK, &job_json(&j)),
            Err(e) => job_error(e),
        },
        (_, [_]) | (_, [_, "cancel" | "pause" | "resume"]) => method_not_allowed(),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
            None,
        ),
    }
}

fn method_not_allowed() -> Resp {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
        None,
    )
}

/// `{"keep_upload": true}` (optional body) or `?keep_upload=true`.
#[allow(clippy::result_large_err)]
async fn cancel_options(req: Request<Incoming>) -> Result<bool, Resp> {
    let mut keep = matches!(
        query_param(req.uri().query(), "keep_upload"),
        Some("true" | "1")
    );
    let body = read_body(req).await.map_err(body_error)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(keep);
    }
    let Value::Object(mut obj) = parse_json(&body)? else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            "must be a JSON object",
            Some("body"),
        ));
    };
    match obj.remove("keep_upload") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => keep = b,
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                "keep_upload: must be true or false",
                Some("keep_upload"),
            ))
        }
    }
    if let Some(k) = obj.keys().next() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            format!("{k}: unknown field"),
            Some(k),
        ));
    }
    Ok(keep)
}

async fn submit(st: &ApiState, caller: &Caller, req: Request<Incoming>) -> Resp {
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let spec = match jobs::parse_spec(v).and_then(|s| {
        jobs::check_policy(&s, st.allow_any_endpoint)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_field",
                e.to_string(),
                Some(&e.field),
            )
        }
    };
    if let Err(e) = auth::check_profiles(&spec, &st.profiles, caller) {
        return forbidden(e.to_string(), Some(e.field));
    }
    match st.scheduler.submit_as(spec, Some(caller.name.clone())) {
        Ok(j) => {
            let mut r = json_response(StatusCode::CREATED, &job_json(&j));
            if let Ok(loc) = http::HeaderValue::from_str(&format!("/v1/jobs/{}", j.id)) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        }
        Err(e) => job_error(e),
    }
}

/// How long a client gets to send its first byte and finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` is cancelled; over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    st: Arc<ApiState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let st = st.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(stream, peer, st, shutdown).await;
            };
            match starts_with_tls(&stream).await {
                Some(true) => {}
                Some(false) => return refuse_plain_http(stream, peer).await,
                None => return,
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => serve_connection(s, peer, st, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Whether the client's first byte opens a TLS handshake record (0x16); anything else (an HTTP
/// method's first letter) is someone speaking plain HTTP to the TLS port. `None`: the client
/// closed or sent nothing in time.
async fn starts_with_tls(stream: &tokio::net::TcpStream) -> Option<bool> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => Some(first[0] == 0x16),
        _ => None,
    }
}

/// Answers a plain-HTTP request on the TLS port with a `400` that says what to do, then closes.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tracing::debug!(%peer, "plain HTTP on the TLS listener");
    // Drain what the client sent (up to the end of its headers) so closing does not reset the
    // connection before it reads the answer; its content is never looked at.
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while seen < buf.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[seen..])).await {
            Ok(Ok(n)) if n > 0 => {
                seen += n;
                if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    let body = json!({"error": {"code": "tls_required", "message":
        "this daemon speaks HTTPS only: use an https:// URL (the bearer token must not travel in clear)"}})
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    st: Arc<ApiState>,
    shutdown: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_http1(
        stream,
        peer,
        move |req| handle(st.clone(), peer, req),
        shutdown,
    )
    .await;
}

/// Serves one HTTP/1.1 connection with `svc` until it ends, or until `shutdown` (then 2 s to
/// finish): the API and the metrics listener share the header timeout and the shutdown.
pub(super) async fn serve_http1<S, F, Fut>(
    stream: S,
    peer: SocketAddr,
    svc: F,
    shutdown: tokio_util::sync::CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Resp, Infallible>> + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper::service::service_fn(svc),
        );
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
