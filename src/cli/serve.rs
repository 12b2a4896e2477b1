//! `ossrelay serve`: run the relay daemon (see [`crate::daemon`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use super::util::{parse_rate, parse_size};
use super::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::daemon::auth;
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
    /// Also serve GET /metrics on this address, without the API token, so Prometheus needs
    /// no API secret (e.g. 0.0.0.0:9871). /metrics on --listen keeps requiring the token.
    #[arg(long, env = "OSSRELAY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
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
/// read it; a file readable by its group only is fine when that group is one of ours
/// (Kubernetes mounts secrets `0440` with the pod's `fsGroup` as group).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = auth::unreadable_hint(path, &e);
        format!("cannot read the token file {}: {e}{hint}", path.display())
    })?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return Err(format!(
            "the token file {} is empty: write a random token into it (e.g. `openssl rand -hex 32`)",
            path.display()
        ));
    }
    auth::warn_if_too_open(path);
    Ok(token)
}

/// Checks that the state directory can be created and written before the daemon starts, so
/// a root-owned volume fails with one line naming the owner and the fix rather than a redb
/// error.
pub fn check_state_dir(dir: &Path) -> Result<(), String> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(format!(
            "cannot create the state directory {}: {e}; create it writable by this user or pass --state-dir",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => {
            #[cfg(unix)]
            if let Ok(m) = std::fs::metadata(dir) {
                use std::os::unix::fs::MetadataExt;
                return Err(format!(
                    "cannot write the state directory {} (owned by uid {} mode {:o}, this process \
                     runs as uid {}): {e}; chown it to uid {} or pass another --state-dir",
                    dir.display(),
                    m.uid(),
                    m.mode() & 0o7777,
                    auth::unix_ids::uid(),
                    auth::unix_ids::uid()
                ));
            }
            Err(format!(
                "cannot write the state directory {}: {e}; make it writable or pass another --state-dir",
                dir.display()
            ))
        }
    }
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
        metrics_listen: args.metrics_listen,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    if let Err(e) = check_state_dir(&cfg.state_dir) {
        eprintln!("error: {e}");
        return EXIT_FAILED;
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
    let mut ready = serde_json::json!({
        "listen": format!("{}://{}", cfg.scheme(), d.addr),
        "state_dir": cfg.state_dir
    });
    if let Some(m) = d.metrics_addr {
        ready["metrics_listen"] = serde_json::json!(format!("http://{m}"));
    }
    println!("{ready}");
    tracing::info!(listen = %d.addr, state_dir = %cfg.state_dir.display(), "ossrelay daemon ready");
    let every = super::progress::interval();
    if !every.is_zero() {
        // The journal of a systemd unit has no terminal: one progress line per running job
        // every --progress-interval.
        let scheduler = d.scheduler.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                for j in scheduler.list(None) {
                    if j.state == crate::daemon::jobs::JobState::Running {
                        super::progress::Line {
                            bytes: j.bytes_done,
                            total: j.bytes_total,
                            rate: Some(j.throughput_bytes_per_sec),
                            eta: j.eta_seconds,
                            retries: j.retries,
                            inflight_parts: j.inflight_parts,
                        }
                        .emit(&format!("{}: ", j.id));
                    }
                }
            }
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_mode_accepts_owner_only_and_our_groups_read_only() {
        assert_eq!(auth::token_mode_problem(0o100600, 0, &[1000]), None);
        assert_eq!(auth::token_mode_problem(0o100400, 0, &[1000]), None);
        // Kubernetes: defaultMode 0440, group = the pod's fsGroup, which we are in.
        assert_eq!(auth::token_mode_problem(0o100440, 65532, &[65532, 0]), None);
        assert_eq!(
            auth::token_mode_problem(0o100440, 4242, &[65532]),
            Some("readable by a group this process is not in")
        );
        assert_eq!(
            auth::token_mode_problem(0o100660, 65532, &[65532]),
            Some("writable by its group")
        );
        assert_eq!(
            auth::token_mode_problem(0o100644, 65532, &[65532]),
            Some("readable by other users")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_group_readable_token_of_our_group_reads_without_complaint() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o440)).unwrap();
        // The file's group is our effective group (files are created with it).
        use std::os::unix::fs::MetadataExt;
        let gid = std::fs::metadata(&p).unwrap().gid();
        assert!(auth::unix_ids::groups().contains(&gid));
        assert_eq!(read_token(&p).unwrap(), "0123456789abcdef0123");
    }

    #[test]
    fn an_unwritable_state_dir_is_one_line_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: cannot be created, whoever we are.
        let f = dir.path().join("state");
        std::fs::write(&f, b"").unwrap();
        let e = check_state_dir(&f.join("sub")).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("--state-dir"), "{e}");
        check_state_dir(&dir.path().join("fresh")).unwrap();
        assert!(dir.path().join("fresh").is_dir());
        assert_eq!(
            std::fs::read_dir(dir.path().join("fresh")).unwrap().count(),
            0
        );
    }
}
