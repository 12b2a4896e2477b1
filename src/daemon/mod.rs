//! `ossrelay serve`: a long-running relay daemon with a JSON HTTP API, a persistent job queue,
//! global memory and bandwidth budgets, Prometheus metrics and crash-safe resume.
//!
//! * [`jobs`] — the job model and request validation (`kind` selects what a job does).
//! * [`store`] — the redb job table in the state directory.
//! * [`scheduler`] — queue, `max_jobs`, shared budgets, pause/resume/cancel, recovery.
//! * [`api`] — the hyper 1 HTTP server.
//! * [`metrics`] — `/metrics` rendering, including per-job series.
//!
//! State directory layout: `jobs.redb` (jobs, options, results; no secrets) and
//! `jobs/<id>/` (the engine's resume state for that job: upload id and acknowledged parts).

pub mod api;
pub mod jobs;
pub mod metrics;
pub mod scheduler;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

pub use scheduler::{Scheduler, SchedulerConfig};

/// How long running jobs get to save their state on shutdown (systemd waits 90 s by default;
/// the daemon promises 30 s).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Settings of one daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub max_jobs: usize,
    pub memory: u64,
    pub bandwidth: Option<u64>,
    /// Bearer token; required unless `listen` is a loopback address.
    pub token: Option<String>,
    /// Accept endpoint overrides other than Alibaba Cloud HTTPS endpoints and this machine.
    pub allow_any_endpoint: bool,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("refusing to listen on {0} without a token: pass --token-file FILE (or listen on 127.0.0.1)")]
    TokenRequired(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Jobs(#[from] scheduler::JobError),
}

impl DaemonConfig {
    /// Checks the settings before anything is opened.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(DaemonError::TokenRequired(self.listen));
        }
        if self.max_jobs == 0 || self.max_jobs > 256 {
            return Err(DaemonError::Config(
                "--max-jobs must be from 1 to 256".into(),
            ));
        }
        if self.memory < 1024 * 1024 {
            return Err(DaemonError::Config(format!(
                "--memory {} is too small: allow at least 1MiB",
                self.memory
            )));
        }
        if self.memory > 1 << 40 {
            return Err(DaemonError::Config(format!(
                "--memory {} is absurd: the budget bounds buffers, 256MiB-4GiB is plenty",
                self.memory
            )));
        }
        if self.bandwidth == Some(0) {
            return Err(DaemonError::Config(
                "--bandwidth must be greater than zero".into(),
            ));
        }
        if matches!(&self.token, Some(t) if t.len() < 16) {
            return Err(DaemonError::Config(
                "the token is too short: use at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Installs the process's Prometheus recorder (engine metrics) and returns the handle that
/// renders it; `None` if a recorder was already installed (then only daemon series are shown).
pub fn install_metrics() -> Option<PrometheusHandle> {
    crate::metrics::describe_all();
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                crate::metrics::REQUEST_DURATION_SECONDS.to_string(),
            ),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )
        .and_then(|b| b.install_recorder());
    match handle {
        Ok(h) => {
            crate::metrics::register_zeroes();
            Some(h)
        }
        Err(e) => {
            tracing::warn!(error = %e, "engine metrics unavailable");
            None
        }
    }
}

/// A started daemon: the bound address, and a handle to stop it.
pub struct Daemon {
    pub addr: SocketAddr,
    pub scheduler: Arc<Scheduler>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Opens the state directory, recovers jobs, binds the listener and starts serving.
    pub async fn start(
        cfg: DaemonConfig,
        prometheus: Option<PrometheusHandle>,
    ) -> Result<Self, DaemonError> {
        cfg.validate()?;
        let scheduler = Scheduler::open(SchedulerConfig {
            state_dir: cfg.state_dir.clone(),
            max_jobs: cfg.max_jobs,
            memory: cfg.memory,
            bandwidth: cfg.bandwidth,
        })?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: cfg.listen,
            source,
        })?;
        scheduler.start();
        let stop = CancellationToken::new();
        if let Some(h) = prometheus.clone() {
            // Histograms are drained by upkeep; without an exporter task nobody else runs it.
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = tick.tick() => h.run_upkeep(),
                        _ = stop.cancelled() => return,
                    }
                }
            });
        }
        let state = Arc::new(api::ApiState {
            scheduler: scheduler.clone(),
            token: cfg.token.clone(),
            prometheus,
            allow_any_endpoint: cfg.allow_any_endpoint,
        });
        let server = tokio::spawn(api::serve(listener, state, stop.clone()));
        Ok(Self {
            addr,
            scheduler,
            stop,
            server,
        })
    }

    /// Stops accepting work, saves running jobs' state (they resume on the next start) and
    /// stops the listener; returns within about [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        self.scheduler.shutdown(SHUTDOWN_GRACE).await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.server).await;
    }
}
