//! Secret hygiene: copy, migrate and the daemon run at debug log level with distinctive
//! secrets, security tokens and forced failures; no secret, token or request signature may
//! appear in stdout, stderr, /metrics, API responses or any file of the state dir, and state
//! files are private (0600 files, 0700 dirs). TLS verification cannot be skipped.

mod common;
mod daemon_support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ossrelay_sim::{FaultKind, SimConfig, SimImage, SimRole};

use common::*;
use daemon_support::{raw, Daemon};

const STS_SECRET: &str = "sts-SECRET-zq9x";
const STS_TOKEN: &str = "TOKEN-zq9x-sekrit";
const OLD_TOKEN: &str = "TOKEN-zq9x-old";
/// Daemon API bearer tokens (audit test).
const API_OPS: &str = "api-OPS-zq9x-0123456789abcdef";
const API_DASH: &str = "api-DASH-zq9x-0123456789abcdef";
const API_WRONG: &str = "api-WRONG-zq9x-0123456789abcdef";

/// Substrings that must never be shown: secrets, tokens and what a signature looks like.
fn leaks(text: &str) -> Vec<String> {
    let mut found: Vec<String> = [
        "SECRET-do-not-leak",
        "not-the-secret",
        STS_SECRET,
        STS_TOKEN,
        OLD_TOKEN,
        API_OPS,
        API_DASH,
        API_WRONG,
        "zq9x-0123456789abcdef",
        "Signature=",
        "OSS4-HMAC-SHA256 Credential",
        "x-oss-security-token:",
        "OSS LTAI",
        "OSS STS.",
    ]
    .iter()
    .filter(|n| text.contains(*n))
    .map(|n| n.to_string())
    .collect();
    // A V4 signature is 64 lowercase hex digits. The one other such run we print is the hash of
    // the canonical request inside the server's StringToSign (a debug aid for
    // SignatureDoesNotMatch, public by design): blank that field out first.
    let mut text = text.to_string();
    while let Some(i) = text.find("server_string_to_sign=\"") {
        let start = i + "server_string_to_sign=\"".len();
        let end = text[start..].find('"').map_or(text.len(), |e| start + e);
        text.replace_range(i..end, "");
    }
    let mut run = 0;
    for (i, c) in text.char_indices() {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run += 1;
            if run == 64 {
                found.push(format!("64-hex run ending at {i}: {:?}", &text[i - 63..=i]));
            }
        } else {
            run = 0;
        }
    }
    found
}

fn assert_clean(what: &str, text: &str) {
    let l = leaks(text);
    assert!(l.is_empty(), "{what} leaks {l:?}:\n{text}");
}

/// Every file under `dir`: no secret inside, mode 0600; every directory: mode 0700.
fn assert_private_tree(dir: &Path) {
    let m = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(m, 0o700, "{} has mode {m:o}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert_private_tree(&p);
            continue;
        }
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{} has mode {m:o}", p.display());
        let bytes = std::fs::read(&p).unwrap();
        assert_clean(&p.display().to_string(), &String::from_utf8_lossy(&bytes));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(raw(addr, req.as_bytes()).await.1)
}

/// Adds StsToken profiles (`sts`, `sts-expired`) to the world's config and registers the
/// matching temporary credentials with the source simulator.
fn add_sts_profiles(w: &World) {
    let acct = src_account().name;
    w.src.add_temporary_credentials(
        "STS.hygieneLive",
        STS_SECRET,
        STS_TOKEN,
        &acct,
        SystemTime::now() + Duration::from_secs(3600),
    );
    w.src.add_temporary_credentials(
        "STS.hygieneOld",
        STS_SECRET,
        OLD_TOKEN,
        &acct,
        SystemTime::now() - Duration::from_secs(60),
    );
    w.add_profiles(
        [
            ("sts", "STS.hygieneLive", STS_TOKEN),
            ("sts-expired", "STS.hygieneOld", OLD_TOKEN),
        ]
        .map(|(name, ak, token)| {
            serde_json::json!({"name": name, "mode": "StsToken", "access_key_id": ak,
                "access_key_secret": STS_SECRET, "sts_token": token, "region_id": SRC_REGION})
        }),
    );
}

fn set(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_at_debug_level_with_failures_shows_no_secret() {
    let w = World::with_disk(6 << 20, |c: &mut SimConfig| {
        c.faults = vec![(FaultKind::Error500, 0.05)];
    })
    .await;
    add_sts_profiles(&w);
    // The state dir exists already with the umask's 0755: the copy must tighten it.
    std::fs::set_permissions(w.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let base = w.copy_args("disk.raw", DST_BUCKET, "disk.raw");
    let args = set(base.clone(), "--src-profile", "sts");
    let args = [
        args,
        [
            "--part-size",
            "1MiB",
            "--log",
            "debug",
            "--bandwidth",
            "2MiB/s",
        ]
        .map(String::from)
        .to_vec(),
        vec!["--metrics-listen".into(), metrics.clone()],
    ]
    .concat();

    // 1. Interrupted half-way: the state file exists, private and clean.
    let child = w.command(&args).spawn().unwrap();
    w.wait_for_parts(2).await;
    let scraped = http_get(&metrics, "/metrics")
        .await
        .expect("metrics served");
    assert!(scraped.contains("ossrelay_"), "{scraped}");
    assert_clean("/metrics", &scraped);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "debug logs are on");
    assert_clean("stdout", &stdout(&out));
    assert_clean("stderr", &stderr(&out));
    assert!(
        std::fs::read_dir(w.state_dir()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".json")),
        "a state file was saved"
    );
    assert_private_tree(&w.state_dir());

    // 2. Resumed to the end, with retries of injected 500s logged at debug level.
    let out = w
        .run(set(
            args.clone(),
            "--metrics-listen",
            &format!("127.0.0.1:{}", free_port()),
        ))
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_clean("stdout", &stdout(&out));
    assert_clean("stderr", &stderr(&out));
    assert_private_tree(&w.state_dir());

    // 3. Forced failures: a wrong secret, an expired token, an unknown key.
    for (flag, profile) in [("--dst-profile", "wrong"), ("--src-profile", "sts-expired")] {
        let a = [
            set(base.clone(), flag, profile),
            ["--log", "debug", "--no-resume"].map(String::from).to_vec(),
        ]
        .concat();
        let out = w.run(a).await;
        assert_eq!(out.status.code(), Some(1), "{profile}: {}", stderr(&out));
        assert_clean(profile, &stderr(&out));
        assert_clean(profile, &stdout(&out));
    }
    assert_private_tree(&w.state_dir());
}

const IMAGE: &str = "m-hyg0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_at_debug_level_shows_no_secret() {
    let w = World::new(
        |c| {
            c.images
                .push(SimImage::new(IMAGE, (2 << 20) + 512, &src_account().name));
            c.roles.push(SimRole {
                account: src_account().name,
                name: "AliyunECSImageExportDefaultRole".into(),
                trusted: "ecs".into(),
            });
            c.task_duration = Duration::from_millis(200);
        },
        |c| {
            c.roles.push(SimRole {
                account: dst_account().name,
                name: "AliyunECSImageImportDefaultRole".into(),
                trusted: "ecs".into(),
            });
            c.task_duration = Duration::from_millis(200);
            c.faults = vec![(FaultKind::Error500, 0.05)];
        },
    )
    .await;
    std::fs::set_permissions(w.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = |dst_profile: &str| -> Vec<String> {
        let mut a = w.migrate_args(IMAGE, dst_profile);
        a.extend(["--log".into(), "debug".into()]);
        a
    };
    // A wrong destination secret first: the failure and its state must be clean too.
    let out = w.run(args("wrong")).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_clean("migrate stderr (wrong secret)", &stderr(&out));
    assert_clean("migrate stdout (wrong secret)", &stdout(&out));
    assert_private_tree(&w.state_dir());
    let out = w.run(args("dst")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("DEBUG"), "debug logs are on");
    assert_clean("migrate stderr", &stderr(&out));
    assert_clean("migrate stdout", &stdout(&out));
    assert_private_tree(&w.state_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_at_debug_level_shows_no_secret() {
    let w = World::new(
        |c| {
            c.synthetic
                .push(daemon_support::synthetic("disk.raw", 3 << 20));
        },
        |c: &mut SimConfig| c.faults = vec![(FaultKind::Error500, 0.05)],
    )
    .await;
    add_sts_profiles(&w);
    w.src
        .put_object_bytes(SRC_BUCKET, "small", Bytes::from(bytes(1000, 1)));
    std::fs::set_permissions(w.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = w.dir.path().join("daemon.log");
    let state = w.state_dir().display().to_string();
    let mut child = command_in(
        w.dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            &state,
            "--log",
            "debug",
        ]
        .map(String::from),
    )
    .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
    .spawn()
    .unwrap();
    let mut ready = String::new();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    r.read_line(&mut ready).unwrap();
    let v: serde_json::Value = serde_json::from_str(ready.trim()).expect("ready line");
    assert_clean("ready line", &ready);
    let addr = v["listen"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let d = Daemon {
        child,
        addr,
        token: None,
        metrics_addr: None,
    };
    let job = |src_key: &str, dst_key: &str, src_profile: &str, dst_profile: &str| {
        let mut j = daemon_support::copy_job(&w, src_key, DST_BUCKET, dst_key);
        j["src_profile"] = src_profile.into();
        j["dst_profile"] = dst_profile.into();
        j["part_size"] = "1MiB".into();
        j.to_string()
    };
    let mut responses = Vec::new();
    let mut ids = Vec::new();
    for body in [
        job("disk.raw", "ok.raw", "sts", "dst"),
        job("small", "wrong.raw", "src", "wrong"),
        job("small", "expired.raw", "sts-expired", "dst"),
        // A secret smuggled into a job is refused, and not echoed back.
        {
            let mut j: serde_json::Value =
                serde_json::from_str(&job("small", "smuggled.raw", "src", "dst")).unwrap();
            j["access_key_secret"] = "SECRET-do-not-leak-smuggled".into();
            j.to_string()
        },
    ] {
        let (s, v) = d.call("POST", "/v1/jobs", Some(&body)).await;
        responses.push(v.to_string());
        if s == 201 {
            ids.push(v["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(ids.len(), 3, "{responses:?}");
    let t0 = std::time::Instant::now();
    loop {
        let (_, list) = d.call("GET", "/v1/jobs", None).await;
        let states: Vec<String> = list["jobs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|j| j["state"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if states.len() == 3 && states.iter().all(|s| s == "succeeded" || s == "failed") {
            responses.push(list.to_string());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "jobs did not finish: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        let (_, v) = d.call("GET", &format!("/v1/jobs/{id}"), None).await;
        responses.push(v.to_string());
    }
    let (s, metrics) = d.call_raw("GET", "/metrics", "", None).await;
    assert_eq!(s, 200);
    assert!(metrics.contains("ossrelay_"), "{metrics}");
    responses.push(metrics);
    for r in &responses {
        assert_clean("daemon API response", r);
    }
    let all = responses.join("\n");
    assert!(all.contains("succeeded") && all.contains("failed"), "{all}");
    drop(d);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("DEBUG"), "debug logs are on");
    assert_clean("daemon log", &log);
    assert_private_tree(&w.state_dir());
}

/// The audit trail: every state-changing request (submit, pause, resume, cancel, delete,
/// reload; refused and unauthenticated ones too) leaves exactly one INFO line with fixed
/// fields naming the caller, never its token; jobs record who submitted them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_audit_lines_name_callers_and_never_tokens() {
    let w = World::new(
        |c| {
            c.synthetic
                .push(daemon_support::synthetic("disk.raw", 16 << 20));
        },
        |_| {},
    )
    .await;
    let tokens = w.dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{API_OPS} name=ops admin\n{API_DASH} name=dash read-only\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = w.dir.path().join("daemon.log");
    let state = w.state_dir().display().to_string();
    // The default --log (warn): the audit trail is on regardless.
    let mut child = command_in(
        w.dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            &state,
            "--token-file",
            &tokens.display().to_string(),
            "--bandwidth",
            "2MiB/s",
        ]
        .map(String::from),
    )
    .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
    .spawn()
    .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(ready.trim()).expect("ready line");
    let addr = v["listen"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let d = Daemon {
        child,
        addr,
        token: Some(API_OPS.into()),
        metrics_addr: None,
    };
    let as_ = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let mut body = daemon_support::copy_job(&w, "disk.raw", DISCARD_BUCKET, "disk.raw");
    body["part_size"] = "1MiB".into();
    // The job must outlive pause + resume: a pause lets the parts in flight finish, so with
    // every part in flight at once (8 MiB, --concurrency 16) the pause itself ran the job to
    // its end about half the time. Two at a time: ~7 s of parts left after the pause.
    body["concurrency"] = 2.into();
    let body = body.to_string();
    let mut responses = Vec::new();
    let (s, v) = d.call("POST", "/v1/jobs", Some(&body)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["submitted_by"], "ops", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    responses.push(v.to_string());
    d.wait_state(&id, "running", Duration::from_secs(20)).await;
    let mut expected = vec![("submit", "ops", 201, Some(id.clone()))];
    for (action, method, path, token, status) in [
        ("submit", "POST", "/v1/jobs".to_string(), API_DASH, 403),
        ("submit", "POST", "/v1/jobs".to_string(), API_WRONG, 401),
        (
            "pause",
            "POST",
            format!("/v1/jobs/{id}/pause"),
            API_OPS,
            200,
        ),
        (
            "resume",
            "POST",
            format!("/v1/jobs/{id}/resume"),
            API_OPS,
            200,
        ),
        (
            "cancel",
            "POST",
            format!("/v1/jobs/{id}/cancel"),
            API_DASH,
            403,
        ),
        (
            "cancel",
            "POST",
            format!("/v1/jobs/{id}/cancel"),
            API_OPS,
            200,
        ),
        ("delete", "DELETE", format!("/v1/jobs/{id}"), API_OPS, 204),
        (
            "reload",
            "POST",
            "/v1/admin/reload".to_string(),
            API_OPS,
            200,
        ),
    ] {
        let b = (path == "/v1/jobs").then_some(body.as_str());
        let (s, text) = d.call_raw(method, &path, &as_(token), b).await;
        assert_eq!(s, status, "{method} {path}: {text}");
        responses.push(text);
        let caller = match token {
            API_OPS => "ops",
            API_DASH => "dash",
            _ => "-",
        };
        let job = path
            .strip_prefix("/v1/jobs/")
            .map(|r| r.split('/').next().unwrap().to_string());
        expected.push((action, caller, status, job));
    }
    // Reads are not audited.
    let (s, _) = d.call("GET", "/v1/jobs", None).await;
    assert_eq!(s, 200);
    for r in &responses {
        assert_clean("daemon API response", r);
    }
    drop(d);
    let log = std::fs::read_to_string(&log).unwrap();
    assert_clean("daemon log", &log);
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains(" audit "))
        .collect();
    assert_eq!(audit.len(), expected.len(), "one line per change:\n{log}");
    for (line, (action, caller, status, job)) in audit.iter().zip(&expected) {
        let field = |name: &str| {
            let start = line
                .find(&format!(" {name}="))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                + name.len()
                + 2;
            let rest = &line[start..];
            rest.split(' ')
                .next()
                .unwrap()
                .trim_matches('"')
                .to_string()
        };
        assert_eq!(field("action"), *action, "{line}");
        assert_eq!(field("caller"), *caller, "{line}");
        assert_eq!(field("status"), status.to_string(), "{line}");
        assert_eq!(field("job"), job.clone().unwrap_or("-".into()), "{line}");
        let result = match status {
            200..=299 => "ok",
            _ => "refused",
        };
        assert_eq!(field("result"), result, "{line}");
        assert!(field("remote").starts_with("127.0.0.1:"), "{line}");
        assert!(
            field("time").ends_with('Z') && field("time").contains('T'),
            "{line}"
        );
    }
    assert_private_tree(&w.state_dir());
}

/// An HTTPS endpoint with a self-signed certificate: the handshake must fail with an error that
/// says "certificate", and no flag or environment variable the test sets may switch that off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_https_endpoint_is_refused() {
    let w = World::new(|_| {}, |_| {}).await;
    let cert = rustls::pki_types::CertificateDer::from(
        include_bytes!("fixtures/selfsigned-cert.der").to_vec(),
    );
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
        include_bytes!("fixtures/selfsigned-key.der")
            .to_vec()
            .into(),
    );
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let cfg = std::sync::Arc::new(cfg);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let hs = handshakes.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let cfg = cfg.clone();
            let hs = hs.clone();
            std::thread::spawn(move || {
                let mut conn = rustls::ServerConnection::new(cfg).unwrap();
                hs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // The client aborts the handshake; a successful one would serve garbage.
                while conn.is_handshaking() {
                    if conn.complete_io(&mut s).is_err() {
                        return;
                    }
                }
                let _ = std::io::Write::write_all(
                    &mut rustls::Stream::new(&mut conn, &mut s),
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n",
                );
            });
        }
    });
    w.src
        .put_object_bytes(SRC_BUCKET, "obj", Bytes::from(bytes(1000, 1)));
    for host in ["127.0.0.1", "localhost"] {
        let args = set(
            w.copy_args("obj", DST_BUCKET, "x"),
            "--src-endpoint",
            &format!("https://{host}:{port}"),
        );
        let mut cmd = w.command(&args);
        // Names other tools use to turn verification off must do nothing here.
        for (k, v) in [
            ("SSL_CERT_FILE", "/dev/null"),
            ("OSSRELAY_INSECURE", "1"),
            ("OSS_INSECURE_SKIP_VERIFY", "true"),
            ("NODE_TLS_REJECT_UNAUTHORIZED", "0"),
            ("CURL_CA_BUNDLE", ""),
        ] {
            cmd.env(k, v);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert_clean_failure(&out, 1, "certificate");
    }
    assert!(handshakes.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // And the CLI has no flag that disables verification.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args(["copy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_lowercase();
    for word in ["insecure", "no-verify", "skip-verify", "danger"] {
        assert!(!help.contains(word), "copy --help mentions {word}");
    }
}

/// The signature segment of the OIDC token: distinctive, so any echo of the token shows.
const OIDC_SIG: &str = "OIDCsig-zq9x-sekrit";
const PROXY_PASSWORD: &str = "proxyPW-zq9x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_and_proxy_at_debug_level_show_no_secret() {
    use base64::Engine as _;
    let acct = src_account();
    let s = ossrelay_sim::start(SimConfig {
        accounts: vec![acct.clone()],
        buckets: vec![ossrelay_sim::SimBucket {
            name: SRC_BUCKET.into(),
            account: acct.name.clone(),
        }],
        oidc_providers: vec![ossrelay_sim::SimOidcProvider {
            account: acct.name.clone(),
            name: "cluster".into(),
            issuer_url: "https://oidc.hygiene.invalid".into(),
            client_ids: vec!["sts.aliyuncs.com".into()],
        }],
        roles: vec![SimRole {
            account: acct.name.clone(),
            name: "pod".into(),
            trusted: "oidc:cluster".into(),
        }],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let exp = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let dir = tempfile::tempdir().unwrap();
    for (aud, want_code) in [("sts.aliyuncs.com", 0), ("wrong-audience", 1)] {
        let claims = serde_json::json!({"iss": "https://oidc.hygiene.invalid", "aud": aud, "sub": "sa", "exp": exp});
        let payload = b(&claims.to_string());
        let token = format!("{}.{payload}.{OIDC_SIG}", b(r#"{"alg":"RS256"}"#));
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).unwrap();
        let args: Vec<String> = [
            "uploads",
            "list",
            &format!("oss://{SRC_BUCKET}/"),
            "--endpoint",
            &s.endpoint(),
            "--region",
            s.region(),
            "--log",
            "debug",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let mut cmd = command_in(dir.path(), &args);
        cmd.env(
            "ALIBABA_CLOUD_ROLE_ARN",
            format!("acs:ram::{}:role/pod", acct.name),
        )
        .env(
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            format!("acs:ram::{}:oidc-provider/cluster", acct.name),
        )
        .env("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &token_file)
        .env("ALIBABA_CLOUD_STS_ENDPOINT", s.endpoint())
        // Loopback is never proxied, so this proxy is parsed (and must stay hidden) but unused.
        .env(
            "HTTPS_PROXY",
            format!("http://user:{PROXY_PASSWORD}@127.0.0.1:9"),
        )
        .env(
            "HTTP_PROXY",
            format!("http://user:{PROXY_PASSWORD}@127.0.0.1:9"),
        );
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(want_code), "{all}");
        assert_clean("uploads list with OIDC", &all);
        for secret in [OIDC_SIG, payload.as_str(), PROXY_PASSWORD] {
            assert!(!all.contains(secret), "{secret} shown:\n{all}");
        }
        if want_code == 0 {
            assert!(all.contains("assumed role with OIDC token"), "{all}");
        } else {
            assert!(all.contains("audience (aud)"), "{all}");
        }
    }
    s.shutdown().await;
}
