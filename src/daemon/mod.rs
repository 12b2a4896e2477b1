//! `ossrelay serve`: a long-running relay daemon with a JSON HTTP API, a persistent job queue,
//! global memory and bandwidth budgets, Prometheus metrics and crash-safe resume.
//!
//! * [`jobs`] — the job model and request validation (`kind` selects what a job does).
//! * [`store`] — the redb job table in the state directory.
//! * [`scheduler`] — queue, `max_jobs`, shared budgets, pause/resume/cancel, recovery.
//! * [`api`] — the hyper 1 HTTP server.
//! * [`auth`] — tokens, callers and their scopes (profiles, read-only, admin).
//! * [`tls`] — the listener's certificate, reloadable.
//! * [`audit`] — one log line per state-changing request.
//! * [`metrics`] — `/metrics` rendering, including per-job series.
//!
//! State directory layout: `jobs.redb` (jobs, options, results; no secrets) and
//! `jobs/<id>/` (the engine's resume state for that job: upload id and acknowledged parts).

pub mod api;
pub mod audit;
pub mod auth;
pub mod db;
pub mod jobs;
pub mod metrics;
pub mod scheduler;
pub mod tls;

use std::collections::BTreeSet;
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
    /// A single bearer token with every right (library use); `token_file` wins if both are
    /// set. A token or a token file is required unless `listen` is a loopback address.
    pub token: Option<String>,
    /// Token file (`TOKEN [name=N] [profiles=a,b] [read-only] [admin]` per line), re-read on
    /// reload.
    pub token_file: Option<PathBuf>,
    /// Accept endpoint overrides other than Alibaba Cloud HTTPS endpoints and this machine.
    pub allow_any_endpoint: bool,
    /// Serve the API over TLS with this certificate chain and key (re-read on reload).
    pub tls: Option<tls::TlsFiles>,
    /// Allow plain HTTP on a non-loopback address (a TLS-terminating proxy in front).
    pub insecure_http: bool,
    /// Credential profiles jobs may name (empty = any).
    pub allow_profiles: Vec<String>,
    /// With `allow_profiles`, still let jobs that name no profile use the default chain.
    pub allow_default_credentials: bool,
    /// A second listener serving only `GET /metrics`, without the token (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("refusing to listen on {0} without a token: pass --token-file FILE (or listen on 127.0.0.1)")]
    TokenRequired(SocketAddr),
    #[error("refusing to serve {0} over plain HTTP, where the bearer token travels in clear: pass --tls-cert FILE --tls-key FILE, or --insecure-http if a TLS proxy in front of the daemon terminates TLS")]
    PlainHttp(SocketAddr),
    #[error(transparent)]
    Tokens(#[from] auth::TokenFileError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
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
        if !self.listen.ip().is_loopback() && self.token.is_none() && self.token_file.is_none() {
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
        if matches!(&self.token, Some(t) if t.len() < auth::MIN_TOKEN_LEN) {
            return Err(DaemonError::Config(
                "the token is too short: use at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        }
        if let Some(f) = &self.token_file {
            auth::Tokens::read(f)?;
        }
        if !self.listen.ip().is_loopback() && self.tls.is_none() && !self.insecure_http {
            return Err(DaemonError::PlainHttp(self.listen));
        }
        if let Some(files) = &self.tls {
            tls::load_certified_key(files)?;
        }
        if let Some(bad) = self
            .allow_profiles
            .iter()
            .find(|p| !auth::valid_profile_name(p))
        {
            return Err(DaemonError::Config(format!(
                "--allow-profile {bad:?} is not a profile name: use letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(())
    }

    /// Whether the API is served over TLS.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn keyring(&self) -> Result<Option<Arc<auth::Keyring>>, DaemonError> {
        Ok(match (&self.token_file, &self.token) {
            (Some(f), _) => Some(Arc::new(auth::Keyring::from_file(f.clone())?)),
            (None, Some(t)) => Some(Arc::new(auth::Keyring::fixed(auth::Tokens::single(t)))),
            (None, None) => None,
        })
    }

    fn profile_policy(&self) -> auth::ProfilePolicy {
        auth::ProfilePolicy {
            allowed: (!self.allow_profiles.is_empty())
                .then(|| self.allow_profiles.iter().cloned().collect::<BTreeSet<_>>()),
            allow_default_credentials: self.allow_default_credentials,
        }
    }
}

/// Installs the process's Prometheus recorder (engine metrics) and returns the handle that
/// renders it; `None` if a recorder was already installed (then only daemon series are shown).
pub fn install_metrics() -> Option<PrometheusHandle> {
    match crate::metrics::builder().install_recorder() {
        Ok(h) => {
            // The daemon renders `ossrelay_build_info` itself, with its own series.
            crate::metrics::after_install(false);
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
    /// Where `/metrics` is served without a token, with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    pub scheduler: Arc<Scheduler>,
    api: Arc<api::ApiState>,
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
        let keyring = cfg.keyring()?;
        let certs = cfg.tls.clone().map(tls::CertStore::load).transpose()?;
        let acceptor = certs.as_ref().map(|c| c.acceptor()).transpose()?;
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
        let metrics_listener = match cfg.metrics_listen {
            None => None,
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|source| DaemonError::Bind { addr: a, source })?;
                let bound = l
                    .local_addr()
                    .map_err(|source| DaemonError::Bind { addr: a, source })?;
                Some((l, bound))
            }
        };
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
        let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
        if let Some((l, _)) = metrics_listener {
            tokio::spawn(metrics::serve_metrics_only(
                l,
                scheduler.clone(),
                prometheus.clone(),
                stop.clone(),
            ));
        }
        let state = Arc::new(api::ApiState {
            scheduler: scheduler.clone(),
            keyring,
            prometheus,
            allow_any_endpoint: cfg.allow_any_endpoint,
            profiles: cfg.profile_policy(),
            tls: certs,
        });
        let server = tokio::spawn(api::serve(listener, state.clone(), acceptor, stop.clone()));
        Ok(Self {
            addr,
            metrics_addr,
            scheduler,
            api: state,
            stop,
            server,
        })
    }

    /// A handle that re-reads the token file and certificate (for SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader(self.api.clone())
    }

    /// Stops accepting work, saves running jobs' state (they resume on the next start) and
    /// stops the listener; returns within about [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
        self.scheduler.shutdown(SHUTDOWN_GRACE).await;
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.server).await;
    }
}

/// Re-reads the daemon's token file and certificate; see [`api::ApiState::reload`].
#[derive(Clone)]
pub struct Reloader(Arc<api::ApiState>);

impl Reloader {
    /// Swaps in the files' current contents; the error says what failed and what stayed.
    pub fn reload(&self) -> Result<api::Reloaded, String> {
        self.0.reload()
    }
}
