//! `ossrelay jobs …`: a client of the daemon's HTTP API (`ossrelay serve`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::http::proxy::ProxyConfig;
use crate::http::{NetError, ReqBody, Roots, Transport, TransportConfig};

use super::util::human_bytes;
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// Cap on a daemon answer read by `ossrelay jobs`.
const MAX_ANSWER: usize = 64 << 20;

/// Flags of `ossrelay jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The daemon's URL.
    #[arg(
        long,
        env = "OSSRELAY_SERVER",
        default_value = "http://127.0.0.1:9870",
        global = true
    )]
    pub server: String,
    /// File holding the daemon's bearer token.
    #[arg(long, env = "OSSRELAY_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) that signed an https:// daemon's certificate (a
    /// private CA); replaces the built-in public roots.
    #[arg(long, env = "OSSRELAY_CACERT", value_name = "FILE", global = true)]
    pub cacert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// `ossrelay jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job; prints its id.
    #[command(subcommand)]
    Submit(SubmitCommand),
    /// List jobs (optionally only those in one state).
    List {
        /// queued, running, paused, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job as JSON.
    Show { id: String },
    /// Cancel a job; its multipart upload is aborted unless --keep-upload.
    Cancel {
        id: String,
        #[arg(long)]
        keep_upload: bool,
    },
    /// Pause a job, keeping its acknowledged parts.
    Pause { id: String },
    /// Queue a paused (or failed) job again; it continues from its acknowledged parts.
    Resume { id: String },
    /// Forget a finished job (a failed job's upload is aborted unless --keep-upload).
    Delete {
        id: String,
        #[arg(long)]
        keep_upload: bool,
    },
    /// Follow a job's progress until it finishes (exit 0 only if it succeeded).
    Watch { id: String },
}

/// What to submit.
#[derive(Debug, Subcommand)]
pub enum SubmitCommand {
    /// A copy job, with the options of `ossrelay copy`.
    Copy(Box<SubmitCopy>),
    /// A migrate job; options are passed as KEY=VALUE pairs.
    Migrate {
        /// An option of the migrate job, e.g. --set src_region=cn-hangzhou (the `ossrelay migrate` option names with `_`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// `jobs submit copy` flags (the daemon-side subset of `ossrelay copy`).
#[derive(Debug, Args)]
pub struct SubmitCopy {
    /// Source: oss://BUCKET/KEY.
    pub src: String,
    /// Destination: oss://BUCKET/KEY (a key ending in `/` takes the source's name).
    pub dst: String,
    /// Source region (default: the profile's region_id, else cn-hangzhou).
    #[arg(long)]
    pub src_region: Option<String>,
    /// Destination region (default: the profile's region_id, else cn-hangzhou).
    #[arg(long)]
    pub dst_region: Option<String>,
    /// Source endpoint URL override.
    #[arg(long)]
    pub src_endpoint: Option<String>,
    /// Destination endpoint URL override.
    #[arg(long)]
    pub dst_endpoint: Option<String>,
    /// Use the source region's -internal endpoint.
    #[arg(long)]
    pub src_internal: bool,
    /// Use the destination region's -internal endpoint.
    #[arg(long)]
    pub dst_internal: bool,
    /// aliyun CLI profile for the source, as known to the daemon (default: its credential chain).
    #[arg(long)]
    pub src_profile: Option<String>,
    /// aliyun CLI profile for the destination, as known to the daemon (default: its credential chain).
    #[arg(long)]
    pub dst_profile: Option<String>,
    /// Parts in flight for this job.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Part size, e.g. 64MiB.
    #[arg(long)]
    pub part_size: Option<String>,
    /// Disk format to write, as `ossrelay copy --format` (default raw).
    #[arg(long, value_enum)]
    pub format: Option<crate::transfer::DiskFormat>,
    /// Disk format of the source, as `ossrelay copy --input-format` (default auto).
    #[arg(long, value_enum)]
    pub input_format: Option<crate::transfer::InputFormat>,
}

struct Api {
    base: String,
    token: Option<String>,
    client: ApiClient,
}

/// An error with its causes, so a TLS failure says "certificate …" rather than "Connect".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Whether a daemon URL's host is this machine (plain HTTP is acceptable there).
fn loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The daemon's answer must start within this long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTPS client: certificates verified against `cacert` when given (a private CA), else
/// the public web roots. There is deliberately no way to skip verification. Never through a
/// proxy (as before the shared transport: the daemon is usually on this machine or network).
fn client(cacert: Option<&std::path::Path>) -> Result<ApiClient, CallError> {
    let roots = match cacert {
        None => Roots::Webpki,
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let bad = |what: String| {
                CallError(
                    EXIT_USAGE,
                    format!("--cacert {}: {what}; give the PEM certificate of the CA that signed the daemon's certificate", path.display()),
                )
            };
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not valid PEM ({e})")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate ({e})")))?;
            }
            if roots.is_empty() {
                return Err(bad("it holds no certificate".into()));
            }
            Roots::Custom(roots)
        }
    };
    Transport::new(&TransportConfig {
        roots,
        proxy: ProxyConfig::none(),
        ..TransportConfig::new(ANSWER_TIMEOUT)
    })
    .map_err(|e| CallError(EXIT_FAILED, format!("cannot set up TLS: {e}")))
}

type ApiClient = Transport;

/// A failed API call: the exit code and a one-line message.
struct CallError(i32, String);

/// How messages about a daemon that does not accept connections begin (`watch` waits for a
/// restarting daemon rather than giving up).
const UNREACHABLE: &str = "cannot reach the daemon";

impl Api {
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), CallError> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match &body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let body = if bytes.is_empty() {
            ReqBody::Empty
        } else {
            ReqBody::full(bytes)
        };
        let req = req
            .body(body)
            .map_err(|e| CallError(EXIT_USAGE, format!("invalid server URL {url:?}: {e}")))?;
        let resp = self
            .client
            .send(req, ANSWER_TIMEOUT, None)
            .await
            .map_err(|e| match e {
                NetError::Stalled(t) | NetError::Deadline(t) => CallError(
                    EXIT_FAILED,
                    format!("{} did not answer within {}s", self.base, t.as_secs()),
                ),
                e => CallError(
                    EXIT_FAILED,
                    format!(
                        "{UNREACHABLE} at {}: {} (is `ossrelay serve` running? see --server{})",
                        self.base,
                        with_causes(&e),
                        if self.base.starts_with("https://") {
                            "; a private CA needs --cacert"
                        } else {
                            ""
                        }
                    ),
                ),
            })?;
        let status = resp.status().as_u16();
        // --server may point at anything; a hostile or mistaken endpoint must not make us
        // buffer an unbounded answer (the daemon's largest, a full job list, is far smaller).
        let body = crate::http::read_limited(resp.into_body(), MAX_ANSWER, ANSWER_TIMEOUT, "answer")
            .await
            .map_err(|e| {
                CallError(
                    EXIT_FAILED,
                    format!(
                        "reading the answer of {}: {} (limit {MAX_ANSWER} bytes; is --server an `ossrelay serve`?)",
                        self.base, e.message
                    ),
                )
            })?;
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        if status >= 400 {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let code = if status == 400 {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            };
            return Err(CallError(code, format!("{msg} (HTTP {status})")));
        }
        Ok((status, v))
    }
}

fn job_line(j: &Value) -> String {
    let done = j["bytes_done"].as_u64().unwrap_or(0);
    let total = j["bytes_total"].as_u64().unwrap_or(0);
    let pct = if total > 0 {
        done as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    format!(
        "{:<18} {:<6} {:<9} {:<12} {:>5.1}% {:>11} {} -> {}",
        j["id"].as_str().unwrap_or("?"),
        j["kind"].as_str().unwrap_or("?"),
        j["state"].as_str().unwrap_or("?"),
        j["stage"].as_str().unwrap_or("?"),
        pct,
        human_bytes(total as f64),
        endpoint_label(j, "source", "src_region", "image_id"),
        endpoint_label(j, "destination", "dst_region", "dst_bucket"),
    )
}

/// A copy's URL, or for a migrate job `REGION/IMAGE` and `REGION/BUCKET`.
fn endpoint_label(j: &Value, url: &str, region: &str, name: &str) -> String {
    match j[url].as_str() {
        Some(u) => u.to_string(),
        None => format!(
            "{}/{}",
            j[region].as_str().unwrap_or(""),
            j[name].as_str().unwrap_or("")
        ),
    }
}

fn copy_body(c: &SubmitCopy) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!("copy"));
    m.insert("source".into(), json!(c.src));
    m.insert("destination".into(), json!(c.dst));
    let opt = [
        ("src_region", &c.src_region),
        ("dst_region", &c.dst_region),
        ("src_endpoint", &c.src_endpoint),
        ("dst_endpoint", &c.dst_endpoint),
        ("src_profile", &c.src_profile),
        ("dst_profile", &c.dst_profile),
        ("part_size", &c.part_size),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    if c.src_internal {
        m.insert("src_internal".into(), json!(true));
    }
    if c.dst_internal {
        m.insert("dst_internal".into(), json!(true));
    }
    if let Some(n) = c.concurrency {
        m.insert("concurrency".into(), json!(n));
    }
    if let Some(f) = c.format {
        m.insert("format".into(), json!(f.name()));
    }
    if let Some(f) = c.input_format {
        m.insert("input_format".into(), json!(f.name()));
    }
    Value::Object(m)
}

fn migrate_body(set: &[String]) -> Result<Value, CallError> {
    let mut m = Map::new();
    m.insert("kind".into(), json!("migrate"));
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| CallError(EXIT_USAGE, format!("--set {kv:?}: use KEY=VALUE")))?;
        // Numbers and booleans go as JSON values; anything else as a string.
        let val = serde_json::from_str::<Value>(v)
            .ok()
            .filter(|x| x.is_number() || x.is_boolean())
            .unwrap_or_else(|| json!(v));
        m.insert(k.to_string(), val);
    }
    Ok(Value::Object(m))
}

/// Runs the command; returns the exit code.
pub async fn run(args: JobsArgs) -> i32 {
    match run_inner(args).await {
        Ok(code) => code,
        Err(CallError(code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

async fn run_inner(args: JobsArgs) -> Result<i32, CallError> {
    let base = args.server.trim_end_matches('/').to_string();
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(CallError(
            EXIT_USAGE,
            format!(
                "--server {base:?}: give an https:// URL (or http:// for a daemon on this machine)"
            ),
        ));
    }
    if base.starts_with("http://") && !loopback_url(&base) {
        eprintln!(
            "warning: --server {base} is plain HTTP to another machine: the bearer token travels in clear; serve with --tls-cert/--tls-key and use https://"
        );
    }
    let token = match &args.token_file {
        Some(p) => Some(super::serve::read_token(p).map_err(|e| CallError(EXIT_USAGE, e))?),
        None => None,
    };
    let api = Api {
        base,
        token,
        client: client(args.cacert.as_deref())?,
    };
    use http::Method;
    match args.command {
        JobsCommand::Submit(s) => {
            let body = match &s {
                SubmitCommand::Copy(c) => copy_body(c),
                SubmitCommand::Migrate { set } => migrate_body(set)?,
            };
            let (_, j) = api.call(Method::POST, "/v1/jobs", Some(body)).await?;
            println!("{}", j["id"].as_str().unwrap_or(""));
        }
        JobsCommand::List { state, json } => {
            let path = match &state {
                Some(s) => format!("/v1/jobs?state={s}"),
                None => "/v1/jobs".into(),
            };
            let (_, v) = api.call(Method::GET, &path, None).await?;
            if json {
                println!("{v}");
            } else {
                for j in v["jobs"].as_array().into_iter().flatten() {
                    println!("{}", job_line(j));
                }
            }
        }
        JobsCommand::Show { id } => {
            let (_, v) = api
                .call(Method::GET, &format!("/v1/jobs/{}", enc(&id)), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        JobsCommand::Cancel { id, keep_upload } => {
            let body = json!({ "keep_upload": keep_upload });
            let (_, v) = api
                .call(
                    Method::POST,
                    &format!("/v1/jobs/{}/cancel", enc(&id)),
                    Some(body),
                )
                .await?;
            println!("{}", job_line(&v));
        }
        JobsCommand::Pause { id } => {
            let (_, v) = api
                .call(Method::POST, &format!("/v1/jobs/{}/pause", enc(&id)), None)
                .await?;
            println!("{}", job_line(&v));
        }
        JobsCommand::Resume { id } => {
            let (_, v) = api
                .call(Method::POST, &format!("/v1/jobs/{}/resume", enc(&id)), None)
                .await?;
            println!("{}", job_line(&v));
        }
        JobsCommand::Delete { id, keep_upload } => {
            let q = if keep_upload { "?keep_upload=true" } else { "" };
            api.call(Method::DELETE, &format!("/v1/jobs/{}{q}", enc(&id)), None)
                .await?;
        }
        JobsCommand::Watch { id } => return watch(&api, &id).await,
    }
    Ok(EXIT_OK)
}

/// Ids go into the path as one segment whatever a user typed (`/` and `.` stay escaped).
fn enc(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

async fn watch(api: &Api, id: &str) -> Result<i32, CallError> {
    let path = format!("/v1/jobs/{}", enc(id));
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr_with_hz(5),
        );
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut last_state = String::new();
    let mut down_since: Option<std::time::Instant> = None;
    let mut next_line = std::time::Instant::now() + super::progress::interval();
    loop {
        let j = match api.call(http::Method::GET, &path, None).await {
            Ok((_, j)) => {
                down_since = None;
                j
            }
            Err(e) if e.1.starts_with(UNREACHABLE) => {
                let since = *down_since.get_or_insert_with(|| {
                    eprintln!("{id}: the daemon is not answering; waiting up to 60s for it");
                    std::time::Instant::now()
                });
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let state = j["state"].as_str().unwrap_or("").to_string();
        let done = j["bytes_done"].as_u64().unwrap_or(0);
        let total = j["bytes_total"].as_u64().unwrap_or(0);
        let rate = j["throughput_bytes_per_sec"].as_f64().unwrap_or(0.0);
        let eta = j["eta_seconds"]
            .as_f64()
            .map(|s| format!("ETA {:.0}s", s))
            .unwrap_or_default();
        let msg = format!(
            "{} {}/s {} {} parts in flight, {} retries",
            j["stage"].as_str().unwrap_or(""),
            human_bytes(rate),
            eta,
            j["inflight_parts"].as_u64().unwrap_or(0),
            j["retries"].as_u64().unwrap_or(0)
        );
        match &bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
                b.set_message(msg);
            }
            None => {
                if state != last_state {
                    eprintln!("{id}: {state}");
                }
                // Without a terminal: the copy's progress line, every --progress-interval.
                let every = super::progress::interval();
                if state == "running" && !every.is_zero() && std::time::Instant::now() >= next_line
                {
                    next_line = std::time::Instant::now() + every;
                    super::progress::Line {
                        bytes: done,
                        total,
                        rate: j["throughput_bytes_per_sec"].as_f64(),
                        eta: j["eta_seconds"].as_f64(),
                        retries: j["retries"].as_u64().unwrap_or(0),
                        inflight_parts: j["inflight_parts"].as_u64().unwrap_or(0),
                    }
                    .emit(&format!("{id}: "));
                }
            }
        }
        last_state = state.clone();
        if matches!(
            state.as_str(),
            "succeeded" | "failed" | "cancelled" | "paused"
        ) {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            return Ok(match state.as_str() {
                "succeeded" => {
                    let r = &j["result"];
                    println!(
                        "{id} succeeded: {} -> {}, {} in {:.1}s, CRC-64 {}",
                        r["source"].as_str().unwrap_or(""),
                        r["destination"].as_str().unwrap_or(""),
                        human_bytes(r["bytes"].as_f64().unwrap_or(0.0)),
                        r["seconds"].as_f64().unwrap_or(0.0),
                        r["crc64"].as_str().unwrap_or("?")
                    );
                    EXIT_OK
                }
                other => {
                    eprintln!(
                        "{id} {other}{}",
                        j["last_error"]
                            .as_str()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    );
                    EXIT_FAILED
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_counts_as_loopback_for_plain_http() {
        for url in [
            "http://127.0.0.1:9870",
            "http://localhost:9870",
            "http://[::1]:9870",
            "http://127.8.9.10",
        ] {
            assert!(loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:9870",
            "http://relay.example.com:9870",
            "http://localhost.example.com",
            "http://[::]:9870",
            "not a url",
        ] {
            assert!(!loopback_url(url), "{url}");
        }
    }

    #[test]
    fn submit_copy_sends_the_disk_formats_as_the_api_names_them() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            copy: SubmitCopy,
        }
        let cli = Cli::parse_from([
            "x",
            "oss://src-b/d.raw",
            "oss://dst-b/",
            "--format",
            "vhd-dynamic",
            "--input-format",
            "vmdk",
        ]);
        let body = copy_body(&cli.copy);
        assert_eq!(body["format"], "vhd-dynamic");
        assert_eq!(body["input_format"], "vmdk");
        // What the daemon accepts.
        let spec = crate::daemon::jobs::parse_spec(body).unwrap();
        let crate::daemon::jobs::JobSpec::Copy(c) = spec else {
            panic!("not a copy")
        };
        assert_eq!(c.format, Some(crate::transfer::DiskFormat::VhdDynamic));
        let plain = copy_body(&Cli::parse_from(["x", "oss://src-b/d.raw", "oss://dst-b/"]).copy);
        assert!(plain.get("format").is_none() && plain.get("input_format").is_none());
    }

    #[test]
    fn read_token_takes_the_first_word_of_the_first_token_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(
            &p,
            "# mine\n\n  tok-0123456789abcdef name=ci read-only\nother\n",
        )
        .unwrap();
        assert_eq!(
            super::super::serve::read_token(&p).unwrap(),
            "tok-0123456789abcdef"
        );
    }
}
