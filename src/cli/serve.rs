//! `ossrelay serve`: run the relay daemon (see [`crate::daemon`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::util::{parse_rate, parse_size};
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::daemon::tls::TlsFiles;
use crate::daemon::{self, Daemon, DaemonConfig, DaemonError, Reloader};

/// Flags of `ossrelay serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API and /metrics. A non-loopback address requires --token-file, and
    /// --tls-cert/--tls-key (or --insecure-http behind a TLS-terminating proxy).
    #[arg(long, env = "OSSRELAY_LISTEN", default_value = "127.0.0.1:9870")]
    pub listen: SocketAddr,
    /// Job database and per-job resume state (default: $STATE_DIRECTORY as set by systemd,
    /// else $XDG_STATE_HOME/ossrelay/daemon or ~/.local/state/ossrelay/daemon).
    #[arg(long, env = "OSSRELAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Jobs running at once; the others wait in FIFO order.
    #[arg(long, env = "OSSRELAY_MAX_JOBS", default_value_t = 2)]
    pub max_jobs: usize,
    /// Buffer budget shared by all running jobs.
    #[arg(long, env = "OSSRELAY_MEMORY", value_parser = parse_size, default_value = "512MiB")]
    pub memory: u64,
    /// Cap on bytes per second shared by all running jobs, e.g. 500MiB/s (default: unlimited).
    #[arg(long, env = "OSSRELAY_BANDWIDTH", value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// File of API bearer tokens, one per line: TOKEN [name=N] [profiles=a,b] [read-only]
    /// [admin]; requests then need "Authorization: Bearer <token>". Re-read on SIGHUP.
    #[arg(long, env = "OSSRELAY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain (server certificate first) for serving the API over HTTPS;
    /// re-read on SIGHUP.
    #[arg(long, env = "OSSRELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; re-read on SIGHUP.
    #[arg(long, env = "OSSRELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback --listen (only behind a proxy that terminates TLS:
    /// otherwise the bearer token travels in clear).
    #[arg(long, env = "OSSRELAY_INSECURE_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_http: bool,
    /// A credential profile jobs may name (repeatable; default: any). Jobs naming another
    /// profile are refused with 403.
    #[arg(
        long = "allow-profile",
        value_name = "NAME",
        env = "OSSRELAY_ALLOW_PROFILE",
        value_delimiter = ','
    )]
    pub allow_profiles: Vec<String>,
    /// With --allow-profile (or tokens with profiles=), still let jobs that name no profile use
    /// this machine's default credential chain.
    #[arg(long, env = "OSSRELAY_ALLOW_DEFAULT_CREDENTIALS", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_default_credentials: bool,
    /// Let jobs name any src_endpoint/dst_endpoint (default: only https://….aliyuncs.com and
    /// this machine, so API clients cannot send signed requests elsewhere).
    #[arg(long, env = "OSSRELAY_ALLOW_ANY_ENDPOINT")]
    pub allow_any_endpoint: bool,
}

fn default_state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
        // systemd may list several directories separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        return Some(PathBuf::from(first));
    }
    super::copy::default_state_dir().map(|d| d.join("daemon"))
}

/// Reads a client's token file: the first word of the first line that is not blank or a
/// `#` comment (so a line of the daemon's scoped format works too). Warns when others may
/// read it.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the token file is readable by other users; chmod 600 it");
            }
        }
    }
    Ok(token)
}

/// Runs the daemon until SIGTERM/SIGINT (SIGHUP re-reads tokens and certificate); returns
/// the exit code.
pub async fn run(args: ServeArgs) -> i32 {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            eprintln!("error: --tls-cert and --tls-key go together: pass both (PEM certificate chain and its key)");
            return EXIT_USAGE;
        }
    };
    let Some(state_dir) = args.state_dir.clone().or_else(default_state_dir) else {
        eprintln!("error: no state directory: pass --state-dir DIR (HOME is not set)");
        return EXIT_USAGE;
    };
    let cfg = DaemonConfig {
        listen: args.listen,
        state_dir,
        max_jobs: args.max_jobs,
        memory: args.memory,
        bandwidth: args.bandwidth,
        token: None,
        token_file: args.token_file.clone(),
        allow_any_endpoint: args.allow_any_endpoint,
        tls,
        insecure_http: args.insecure_http,
        allow_profiles: args.allow_profiles.clone(),
        allow_default_credentials: args.allow_default_credentials,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    let prometheus = daemon::install_metrics();
    let d = match Daemon::start(cfg.clone(), prometheus).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                DaemonError::TokenRequired(_)
                | DaemonError::PlainHttp(_)
                | DaemonError::Tokens(_)
                | DaemonError::Tls(_)
                | DaemonError::Config(_) => EXIT_USAGE,
                _ => EXIT_FAILED,
            };
        }
    };
    // Before the ready line: from then on a SIGHUP must reload, not kill (its default).
    if let Err(e) = reload_on_sighup(d.reloader()) {
        eprintln!("error: cannot install the SIGHUP handler: {e}");
        d.shutdown().await;
        return EXIT_FAILED;
    }
    // One machine-readable line, so supervisors and tests learn the bound port.
    println!(
        "{}",
        serde_json::json!({"listen": format!("{}://{}", cfg.scheme(), d.addr), "state_dir": cfg.state_dir})
    );
    tracing::info!(listen = %d.addr, state_dir = %cfg.state_dir.display(), "ossrelay daemon ready");
    if wait_for_signal().await.is_err() {
        eprintln!("error: cannot install signal handlers");
        d.shutdown().await;
        return EXIT_FAILED;
    }
    eprintln!("shutting down: saving job state (running jobs resume on the next start)");
    // A second signal exits at once; resume state on disk is consistent at every moment.
    tokio::spawn(async {
        if wait_for_signal().await.is_ok() {
            eprintln!("interrupted again: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
    });
    d.shutdown().await;
    EXIT_OK
}

/// Re-reads the token file and certificate on every SIGHUP; a failed reload is logged and
/// keeps what was in force.
fn reload_on_sighup(reloader: Reloader) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // ApiState::reload logs the outcome.
                let _ = reloader.reload();
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reloader;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
