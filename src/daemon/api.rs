//! The HTTP API (JSON under `/v1`, described in `docs/openapi.yaml`), `/metrics`, `/healthz`
//! and `/readyz`, on one hyper 1 listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};

use super::jobs::{self, JobState};
use super::scheduler::{JobError, Scheduler};

/// Largest request body accepted (a job is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// Longest wait for a whole request body once the headers are in. Without it a client that
/// announces a body and never sends it holds a connection and a task forever. As long as the
/// header timeout: [`MAX_BODY`] arrives within it even at 8 KiB/s.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What request handlers share.
pub struct ApiState {
    pub scheduler: Arc<Scheduler>,
    /// Bearer token every request except `/healthz` and `/readyz` must carry; `None` = open
    /// (only allowed on loopback addresses).
    pub token: Option<String>,
    pub prometheus: Option<PrometheusHandle>,
    /// Accept any `src_endpoint`/`dst_endpoint` (see [`jobs::check_policy`]).
    pub allow_any_endpoint: bool,
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
        JobError::Store(e) => {
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

/// Compares without an early exit, so response timing does not reveal a token prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(st: &ApiState, req: &Request<Incoming>) -> bool {
    let Some(token) = &st.token else { return true };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()))
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

/// Handles one request; never fails (errors become JSON responses).
pub async fn handle(st: Arc<ApiState>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = route(&st, req, &method, &path).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed = ?started.elapsed(), "request");
    Ok(resp)
}

async fn route(st: &ApiState, req: Request<Incoming>, method: &Method, path: &str) -> Resp {
    match (method, path) {
        (&Method::GET, "/healthz") => {
            return json_response(StatusCode::OK, &json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => {
            return if st.scheduler.shutting_down() {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "shutting down"}),
                )
            } else {
                json_response(StatusCode::OK, &json!({"status": "ready"}))
            }
        }
        _ => {}
    }
    if !authorized(st, &req) {
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
        return r;
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
        (&Method::POST, []) => submit(st, req).await,
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

async fn submit(st: &ApiState, req: Request<Incoming>) -> Resp {
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
    match st.scheduler.submit(spec) {
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

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    st: Arc<ApiState>,
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
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
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
        });
    }
}
