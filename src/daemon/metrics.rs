//! `/metrics`: the engine's metrics (from the process's Prometheus recorder) followed by the
//! daemon's per-job series, rendered from the job table at scrape time. Rendering job series
//! here rather than through the recorder makes a deleted job's labels vanish at once, so label
//! sets stay bounded by the jobs that exist.
//!
//! Per-job series carry `job_id`, never `job`: Prometheus owns `job` (the scrape job) and
//! would rename ours to `exported_job`, so every rule would need a relabelling first.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::jobs::JobState;
use super::scheduler::Scheduler;

/// Build information, value 1, labels `version` and `commit`.
pub const BUILD_INFO: &str = crate::metrics::BUILD_INFO;
/// Jobs by state, label `state`.
pub const JOBS: &str = "ossrelay_jobs";
/// 1 for a job's current state, labels `job_id`, `state`.
pub const JOB_STATE: &str = "ossrelay_job_state";
/// 1 for a job's current stage, labels `job_id`, `stage`.
pub const JOB_STAGE: &str = "ossrelay_job_stage";
/// Bytes of a job acknowledged by the destination (resumed bytes included), label `job_id`.
pub const JOB_BYTES_TOTAL: &str = "ossrelay_job_bytes_total";
/// Size of a job's object, label `job_id`.
pub const JOB_SIZE_BYTES: &str = "ossrelay_job_size_bytes";
/// Retries of a job over all its runs, label `job_id`.
pub const JOB_RETRIES_TOTAL: &str = "ossrelay_job_retries_total";
/// Parts of a job in flight, label `job_id`.
pub const JOB_INFLIGHT_PARTS: &str = "ossrelay_job_inflight_parts";
/// The engine's adaptive limit on parts in flight of a running job, label `job_id`.
pub const JOB_CONCURRENCY_LIMIT: &str = "ossrelay_job_concurrency_limit";
/// Estimated seconds until a running job completes, label `job_id` (absent when unknown).
pub const JOB_ETA_SECONDS: &str = "ossrelay_job_eta_seconds";
/// Jobs allowed to run at once.
pub const MAX_JOBS: &str = "ossrelay_daemon_max_jobs";
/// The global memory budget.
pub const MEMORY_BUDGET_BYTES: &str = "ossrelay_daemon_memory_budget_bytes";
/// Bytes charged to the global memory budget now.
pub const MEMORY_IN_USE_BYTES: &str = "ossrelay_daemon_memory_in_use_bytes";

/// Highest value the global memory budget reached since the daemon started.
pub const MEMORY_PEAK_BYTES: &str = "ossrelay_daemon_memory_peak_bytes";

/// Every metric name the daemon itself exports (the engine's are in [`crate::metrics`]).
pub const DAEMON_METRICS: &[&str] = &[
    BUILD_INFO,
    JOBS,
    JOB_STATE,
    JOB_STAGE,
    JOB_BYTES_TOTAL,
    JOB_SIZE_BYTES,
    JOB_RETRIES_TOTAL,
    JOB_INFLIGHT_PARTS,
    JOB_CONCURRENCY_LIMIT,
    JOB_ETA_SECONDS,
    MAX_JOBS,
    MEMORY_BUDGET_BYTES,
    MEMORY_IN_USE_BYTES,
    MEMORY_PEAK_BYTES,
];

/// The `/metrics` response: the exposition text, or 404/405 for anything else.
fn respond(method: &Method, path: &str, text: impl FnOnce() -> String) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (method, path) {
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", text()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics is served here; the API is on --listen\n".into(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// `serve --metrics-listen`: `GET /metrics` on its own listener, without the API token, so a
/// scraper needs no API secret (the exposition holds job ids, states and byte counts, never
/// a credential or an object name). Nothing else is served there.
pub async fn serve_metrics_only(
    listener: tokio::net::TcpListener,
    scheduler: Arc<Scheduler>,
    engine: Option<PrometheusHandle>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let (scheduler, engine, stop) = (scheduler.clone(), engine.clone(), stop.clone());
        tokio::spawn(super::api::serve_http1(
            stream,
            peer,
            move |req: Request<hyper::body::Incoming>| {
                let r = respond(req.method(), req.uri().path(), || {
                    render(&scheduler, engine.as_ref())
                });
                async move { Ok::<_, Infallible>(r) }
            },
            stop,
        ));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The full `/metrics` text.
pub fn render(s: &Scheduler, engine: Option<&PrometheusHandle>) -> String {
    crate::metrics::collect_process();
    let mut out = engine.map(|h| h.render()).unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let jobs = s.list(None);
    header(
        &mut out,
        BUILD_INFO,
        "gauge",
        "Build information of the running daemon.",
    );
    let _ = writeln!(
        out,
        "{BUILD_INFO}{{version=\"{}\",commit=\"{}\"}} 1",
        crate::metrics::VERSION,
        crate::metrics::COMMIT
    );
    header(&mut out, MAX_JOBS, "gauge", "Jobs allowed to run at once.");
    let _ = writeln!(out, "{MAX_JOBS} {}", s.config().max_jobs);
    header(
        &mut out,
        MEMORY_BUDGET_BYTES,
        "gauge",
        "Buffer bytes shared by all running jobs.",
    );
    let _ = writeln!(out, "{MEMORY_BUDGET_BYTES} {}", s.config().memory);
    header(
        &mut out,
        MEMORY_IN_USE_BYTES,
        "gauge",
        "Bytes charged to the global memory budget now.",
    );
    let _ = writeln!(out, "{MEMORY_IN_USE_BYTES} {}", s.memory_in_use());
    header(
        &mut out,
        MEMORY_PEAK_BYTES,
        "gauge",
        "Highest value the global memory budget reached since the daemon started.",
    );
    let _ = writeln!(out, "{MEMORY_PEAK_BYTES} {}", s.memory_peak());
    header(&mut out, JOBS, "gauge", "Jobs by state.");
    for st in JobState::ALL {
        let n = jobs.iter().filter(|j| j.state == st).count();
        let _ = writeln!(out, "{JOBS}{{state=\"{}\"}} {n}", st.as_str());
    }
    header(
        &mut out,
        JOB_STATE,
        "gauge",
        "1 for the job's current state.",
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "{JOB_STATE}{{job_id=\"{}\",state=\"{}\"}} 1",
            j.id,
            j.state.as_str()
        );
    }
    header(
        &mut out,
        JOB_STAGE,
        "gauge",
        "1 for the job's current stage.",
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "{JOB_STAGE}{{job_id=\"{}\",stage=\"{}\"}} 1",
            j.id, j.stage
        );
    }
    header(
        &mut out,
        JOB_BYTES_TOTAL,
        "counter",
        "Bytes of the job acknowledged by the destination, resumed bytes included.",
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "{JOB_BYTES_TOTAL}{{job_id=\"{}\"}} {}",
            j.id, j.bytes_done
        );
    }
    header(
        &mut out,
        JOB_SIZE_BYTES,
        "gauge",
        "Size of the job's object (0 until planned).",
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "{JOB_SIZE_BYTES}{{job_id=\"{}\"}} {}",
            j.id, j.bytes_total
        );
    }
    header(
        &mut out,
        JOB_RETRIES_TOTAL,
        "counter",
        "Retries of the job over all its runs.",
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "{JOB_RETRIES_TOTAL}{{job_id=\"{}\"}} {}",
            j.id, j.retries
        );
    }
    header(
        &mut out,
        JOB_INFLIGHT_PARTS,
        "gauge",
        "Parts of the job under way: moving bytes or awaiting their acknowledgement (at most 2 x concurrency).",
    );
    for j in &jobs {
        let _ = writeln!(
            out,
            "{JOB_INFLIGHT_PARTS}{{job_id=\"{}\"}} {}",
            j.id, j.inflight_parts
        );
    }
    header(
        &mut out,
        JOB_CONCURRENCY_LIMIT,
        "gauge",
        "The engine's adaptive limit on parts in flight of the running job.",
    );
    for j in jobs.iter().filter(|j| j.state == JobState::Running) {
        let _ = writeln!(
            out,
            "{JOB_CONCURRENCY_LIMIT}{{job_id=\"{}\"}} {}",
            j.id, j.concurrency_limit
        );
    }
    header(
        &mut out,
        JOB_ETA_SECONDS,
        "gauge",
        "Estimated seconds until the running job completes.",
    );
    for j in &jobs {
        if let (JobState::Running, Some(eta)) = (j.state, j.eta_seconds) {
            let _ = writeln!(out, "{JOB_ETA_SECONDS}{{job_id=\"{}\"}} {eta:.1}", j.id);
        }
    }
    out
}
