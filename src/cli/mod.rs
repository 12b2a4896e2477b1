//! The command line: clap definitions and dispatch. Each subcommand lives in its own file and
//! turns flags into library calls; nothing here speaks HTTP or XML.

pub mod cloud;
mod copy;
mod demo;
mod demo_migrate;
pub mod export;
pub mod import;
mod jobs;
pub mod migrate;
pub mod preflight;
mod progress;
pub mod serve;
mod shard;
pub mod sim;
mod uploads;
mod util;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit code: copied and verified / command succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: the command failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the command line was wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: interrupted; rerunning the same command resumes.
pub const EXIT_INTERRUPTED: i32 = 130;

/// `--version`: the crate version, the commit and the target it was built for (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OSSRELAY_BUILD_COMMIT"),
    ", ",
    env!("OSSRELAY_BUILD_TARGET"),
    ")"
);

/// Printed after `--help`: what scripts can rely on.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success (a copy finished and was verified)
  1    the command failed; the error line says what to do next
  2    the command line was wrong, or a confirmation was needed (--yes)
  130  interrupted; rerunning the same command resumes

Proxies: HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (or lower case) apply to OSS and
ECS/RAM/STS requests; instance metadata (100.100.100.200) and loopback are never proxied.";

/// Relay very large VM disk images between Alibaba Cloud OSS regions and accounts.
#[derive(Parser)]
#[command(name = "ossrelay", version = VERSION, about, long_about = None, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Log filter for stderr (e.g. `info`, `debug`, `ossrelay=debug`); also `OSSRELAY_LOG`.
    #[arg(long, global = true, env = "OSSRELAY_LOG", default_value = "warn")]
    log: String,

    /// Log lines as plain text or as JSON objects, one per line (for log pipelines).
    #[arg(long, global = true, env = "OSSRELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Without a terminal, log a progress line (bytes, percent, rate, ETA, retries) every
    /// this many seconds; 0 = never.
    #[arg(
        long,
        global = true,
        env = "OSSRELAY_PROGRESS_INTERVAL",
        value_name = "SECS",
        default_value_t = 10
    )]
    progress_interval: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy an object between OSS buckets (any regions/accounts) or to/from a local file.
    Copy(Box<copy::CopyArgs>),
    /// Find, abort and guard against orphaned multipart uploads.
    Uploads(uploads::UploadsArgs),
    /// Run the OSS simulator (a local stand-in for OSS, for tests and dry runs).
    Sim(Box<sim::SimArgs>),
    /// Relay a synthetic image between two in-process simulated regions, end to end.
    Demo(demo::DemoArgs),
    /// Check credentials, buckets and the ECS image service roles of a region (--fix creates roles).
    Preflight(preflight::PreflightArgs),
    /// Export a custom image into an OSS bucket of its region.
    Export(export::ExportArgs),
    /// Import disk objects from an OSS bucket as a custom image.
    Import(Box<import::ImportArgs>),
    /// Migrate an image to another region/account: export, relay, import (resumable).
    Migrate(Box<migrate::MigrateArgs>),
    /// Run the relay daemon: an HTTP API with a persistent job queue and /metrics.
    Serve(Box<serve::ServeArgs>),
    /// Submit and follow jobs on a running daemon (`ossrelay serve`).
    Jobs(Box<jobs::JobsArgs>),
    /// Print a shell completion script, e.g. `ossrelay completions bash > /etc/bash_completion.d/ossrelay`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `ossrelay man | man -l -`; --out-dir writes one page
    /// per subcommand.
    Man {
        /// Write ossrelay.1 and ossrelay-SUBCOMMAND.1 into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// The clap definition of the whole command line (completions, man pages).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Writes the completion script for `shell` to stdout.
fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(shell, &mut command(), "ossrelay", &mut std::io::stdout());
    EXIT_OK
}

/// Prints ossrelay(1), or writes every page into `out_dir`.
fn man(out_dir: Option<std::path::PathBuf>) -> i32 {
    let result = match &out_dir {
        Some(dir) => clap_mangen::generate_to(command(), dir),
        None => clap_mangen::Man::new(command()).render(&mut std::io::stdout()),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let to = out_dir.map_or_else(|| "stdout".into(), |d| d.display().to_string());
            eprintln!("error: cannot write the manual page to {to}: {e}; check the directory exists and is writable");
            EXIT_FAILED
        }
    }
}

/// Entry point used by `main.rs`; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        // The daemon's audit trail is on whatever the level, unless the filter names it.
        Command::Serve(_) if !cli.log.contains(crate::daemon::audit::TARGET) => init_tracing(
            &format!("{},{}=info", cli.log, crate::daemon::audit::TARGET),
            cli.log_format,
        ),
        _ => init_tracing(&cli.log, cli.log_format),
    }
    progress::set_interval(std::time::Duration::from_secs(cli.progress_interval));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            Command::Copy(args) => copy::run(*args).await,
            Command::Uploads(args) => uploads::run(args).await,
            Command::Sim(args) => match sim::run(*args).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_FAILED
                }
            },
            Command::Demo(args) => demo::run(args).await,
            Command::Preflight(args) => preflight::run(args).await,
            Command::Export(args) => export::run(args).await,
            Command::Import(args) => import::run(*args).await,
            Command::Migrate(args) => migrate::run(*args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Jobs(args) => jobs::run(*args).await,
            Command::Completions { shell } => completions(shell),
            Command::Man { out_dir } => man(out_dir),
        }
    });
    // In-flight requests may hold the runtime; do not wait for them on exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    // Progress lines are what a log without a terminal is for: on unless --progress-interval 0
    // (a more specific `--log ossrelay::progress=off` still wins).
    let filter = match format!("{}={}", progress::TARGET, "info").parse() {
        Ok(d) if !filter.to_string().contains(progress::TARGET) => filter.add_directive(d),
        _ => filter,
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        // Colour codes only for a terminal; logs piped to files or CI stay plain text.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => fmt.json().with_ansi(false).try_init(),
    };
}
