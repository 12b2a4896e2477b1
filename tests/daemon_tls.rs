//! The daemon on a network: HTTPS with a private CA (certificates made here with rcgen), plain
//! HTTP refused on the TLS port and on non-loopback addresses, scoped tokens (profiles,
//! read-only, admin), and rotation of tokens and certificate by SIGHUP and by
//! `POST /v1/admin/reload` while a job is in flight. Only loopback traffic: the non-loopback
//! cases bind `0.0.0.0:0` / `[::]:0` and never connect there.

mod common;
mod daemon_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;
use daemon_support::*;

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`: (certificate PEM, key PEM).
    fn leaf(&self, cn: &str) -> (String, String) {
        let mut p =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Files of one TLS set-up in `dir`: ca.pem, cert.pem, key.pem.
struct Pki {
    ca: Ca,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    /// The DER of the certificate currently in cert.pem.
    cert_der: Vec<u8>,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let ca = Ca::new("ossrelay test CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let mut p = Pki {
            ca,
            ca_file,
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            cert_der: Vec::new(),
        };
        p.rotate("daemon 0");
        p
    }

    /// Writes a new certificate and key (same CA) over the files.
    fn rotate(&mut self, cn: &str) {
        let (cert, key) = self.ca.leaf(cn);
        std::fs::write(&self.cert_file, &cert).unwrap();
        std::fs::write(&self.key_file, &key).unwrap();
        self.cert_der = CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .to_vec();
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_file.display().to_string(),
            "--tls-key".into(),
            self.key_file.display().to_string(),
        ]
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        connector_for(&self.ca.pem)
    }
}

fn connector_for(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the daemon, verified against the test CA as `localhost`.
async fn connect(c: &tokio_rustls::TlsConnector, addr: &str) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    c.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The certificate the server presented on this connection.
fn peer_cert(s: &Tls) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One request on an open (keep-alive) connection; returns (status, body as JSON or string).
async fn request(
    s: &mut Tls,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Headers, then exactly Content-Length bytes: the connection stays usable.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut byte))
            .await
            .expect("answer within 30s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed mid-headers: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, v)
}

/// One request on a new TLS connection.
async fn call(
    c: &tokio_rustls::TlsConnector,
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut s = connect(c, addr).await.expect("TLS handshake");
    request(&mut s, method, path, token, body).await
}

fn token_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const OPS: &str = "ops-token-0123456789abcdef";
const SRC_ONLY: &str = "src-token-0123456789abcdef";
const DASH: &str = "dash-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_the_jobs_client() {
    let w = World::new(|_| {}, |_| {}).await;
    let pki = Pki::new(w.dir.path());
    let tf = token_file(w.dir.path(), "tokens", &format!("{OPS}\n"));
    let tfs = tf.display().to_string();
    let mut extra = pki.flags();
    extra.extend(strings(&["--token-file", &tfs]));
    let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (d, url) = start_daemon_url(w.dir.path(), &w.state_dir(), &extra_ref).await;
    assert!(url.starts_with("https://127.0.0.1:"), "ready line: {url}");

    // A client trusting the test CA completes the handshake and is served.
    let (s, v) = call(
        &pki.connector(),
        &d.addr,
        "GET",
        "/v1/jobs",
        Some(OPS),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // A client trusting another CA refuses the daemon's certificate.
    let other = connector_for(&Ca::new("another CA").pem);
    let Err(e) = connect(&other, &d.addr).await else {
        panic!("a client trusting another CA completed the handshake");
    };
    assert!(e.to_string().contains("certificate"), "{e}");

    let server = format!("https://localhost:{}", d.addr.rsplit(':').next().unwrap());
    let ca = pki.ca_file.display().to_string();
    let jobs = |extra: &[&str]| {
        let mut a = strings(&["jobs", "--server", &server, "--token-file", &tfs]);
        a.extend(strings(extra));
        a.push("list".into());
        a
    };
    let out = w.run(jobs(&["--cacert", &ca])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut cmd = w.command(&jobs(&[]));
    cmd.env("OSSRELAY_CACERT", &ca);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "OSSRELAY_CACERT: {}",
        stderr(&out)
    );
    // Without the CA the public roots do not know the daemon: a clean certificate error.
    let out = w.run(jobs(&[])).await;
    assert_clean_failure(&out, 1, "certificate");
    assert!(stderr(&out).contains("--cacert"), "{}", stderr(&out));
    // A CA file that holds no certificate is a usage error.
    let out = w.run(jobs(&["--cacert", &tfs])).await;
    assert_clean_failure(&out, 2, "--cacert");
    // Verified TLS, wrong token: still 401.
    let bad = token_file(w.dir.path(), "bad-token", "wrong-token-0123456789abcdef\n");
    let out = w
        .run(strings(&[
            "jobs",
            "--server",
            &server,
            "--cacert",
            &ca,
            "--token-file",
            &bad.display().to_string(),
            "list",
        ]))
        .await;
    assert_clean_failure(&out, 1, "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_listener_fails_cleanly() {
    let w = World::new(|_| {}, |_| {}).await;
    let pki = Pki::new(w.dir.path());
    let extra = pki.flags();
    let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
    let d = start_daemon(w.dir.path(), &w.state_dir(), &extra_ref).await;
    // Raw plain HTTP: a plain 400 saying to use https://, then the connection closes.
    let (s, body) = d.call_raw("GET", "/v1/jobs", "", None).await;
    assert_eq!(s, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "tls_required", "{v}");
    assert!(body.contains("https://"), "{body}");
    // The jobs client pointed at http:// gets the same advice as one error line.
    let out = w
        .run(strings(&[
            "jobs",
            "--server",
            &format!("http://{}", d.addr),
            "list",
        ]))
        .await;
    assert_clean_failure(&out, 2, "https://");
    // A connection that sends nothing at all, and one that sends a broken TLS record, do not
    // disturb the listener.
    let idle = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
    let mut junk = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x02, 0xff, 0xff])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), junk.read_to_end(&mut sink)).await;
    let (s, v) = call(&pki.connector(), &d.addr, "GET", "/v1/jobs", None, None).await;
    assert_eq!(s, 200, "{v}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_listener_needs_tls_or_an_explicit_insecure_http() {
    let w = World::new(|_| {}, |_| {}).await;
    let pki = Pki::new(w.dir.path());
    let tf = token_file(w.dir.path(), "tokens", &format!("{OPS}\n"));
    let tfs = tf.display().to_string();
    let state = w.state_dir().display().to_string();
    let serve = |listen: &str, extra: &[String]| {
        let mut a = strings(&[
            "serve",
            "--listen",
            listen,
            "--state-dir",
            &state,
            "--token-file",
            &tfs,
        ]);
        a.extend(extra.iter().cloned());
        a
    };
    // Binding only: these refusals happen before the listener exists; nothing connects.
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = w.run(serve(listen, &[])).await;
        assert_clean_failure(&out, 2, "--tls-cert");
        assert!(stderr(&out).contains("--insecure-http"), "{}", stderr(&out));
        assert!(!stderr(&out).contains(OPS), "{}", stderr(&out));
    }
    let cert = pki.cert_file.display().to_string();
    let key = pki.key_file.display().to_string();
    let out = w
        .run(serve("0.0.0.0:0", &strings(&["--tls-cert", &cert])))
        .await;
    assert_clean_failure(&out, 2, "--tls-key");
    // A key that is not the certificate's, and a certificate file that is no certificate.
    let other_key = w.dir.path().join("other-key.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let out = w
        .run(serve(
            "127.0.0.1:0",
            &strings(&[
                "--tls-cert",
                &cert,
                "--tls-key",
                &other_key.display().to_string(),
            ]),
        ))
        .await;
    assert_clean_failure(&out, 2, "belongs to the certificate");
    let out = w
        .run(serve(
            "127.0.0.1:0",
            &strings(&["--tls-cert", &key, "--tls-key", &key]),
        ))
        .await;
    assert_clean_failure(&out, 2, "no PEM certificate");
    let out = w
        .run(serve(
            "127.0.0.1:0",
            &strings(&["--allow-profile", "../etc"]),
        ))
        .await;
    assert_clean_failure(&out, 2, "--allow-profile");

    // The explicit opt-out starts (plain HTTP), as does TLS; neither is connected to here.
    let d = start_daemon_url(
        w.dir.path(),
        &w.state_dir(),
        &[
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            &tfs,
            "--insecure-http",
        ],
    )
    .await;
    assert!(d.1.starts_with("http://0.0.0.0:"), "{}", d.1);
    drop(d);
    let mut cmd = w.command(&serve("0.0.0.0:0", &[]));
    cmd.env("OSSRELAY_TLS_CERT", &cert)
        .env("OSSRELAY_TLS_KEY", &key);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut l).unwrap();
        l
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert!(
        v["listen"]
            .as_str()
            .unwrap()
            .starts_with("https://0.0.0.0:"),
        "TLS from the environment: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_limit_profiles_writes_and_reloads() {
    let w = World::new(|c| c.synthetic.push(synthetic("disk.raw", 2 * MIB)), |_| {}).await;
    let tf = token_file(
        w.dir.path(),
        "tokens",
        &format!(
            "# callers of this relay\n{OPS} name=ops admin\n{SRC_ONLY} name=src-only profiles=src\n{DASH} name=dash read-only\n"
        ),
    );
    let tfs = tf.display().to_string();
    let d = start_daemon(
        w.dir.path(),
        &w.state_dir(),
        &[
            "--token-file",
            &tfs,
            "--allow-profile",
            "src",
            "--allow-profile",
            "dst",
        ],
    )
    .await;
    let call = |token: &'static str, method: &'static str, path: String, body: Option<Value>| {
        let d = &d;
        async move {
            let auth = format!("Authorization: Bearer {token}\r\n");
            let (s, text) = d
                .call_raw(method, &path, &auth, body.map(|b| b.to_string()).as_deref())
                .await;
            let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (s, v)
        }
    };
    let job = |src: Option<&str>, dst: Option<&str>, key: &str| {
        let mut j = copy_job(&w, "disk.raw", DISCARD_BUCKET, key);
        j["part_size"] = json!("1MiB");
        for (field, p) in [("src_profile", src), ("dst_profile", dst)] {
            match p {
                Some(p) => j[field] = json!(p),
                None => {
                    j.as_object_mut().unwrap().remove(field);
                }
            }
        }
        j
    };
    let jobs = "/v1/jobs".to_string();
    // A token scoped to `src` cannot name `dst`: 403 naming the allowed set.
    let (s, v) = call(
        SRC_ONLY,
        "POST",
        jobs.clone(),
        Some(job(Some("src"), Some("dst"), "a")),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["field"], "dst_profile", "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("allowed profiles: src") && m.contains("src-only"),
        "{m}"
    );
    // The daemon's --allow-profile bounds every token, the unscoped one too.
    let (s, v) = call(
        OPS,
        "POST",
        jobs.clone(),
        Some(job(Some("wrong"), Some("dst"), "b")),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed profiles: dst, src"),
        "{v}"
    );
    // No profile = the machine's default chain, which needs --allow-default-credentials.
    let (s, v) = call(OPS, "POST", jobs.clone(), Some(job(Some("src"), None, "c"))).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allow-default-credentials"),
        "{v}"
    );
    // Within scope: accepted, and the job records who submitted it.
    let (s, v) = call(
        OPS,
        "POST",
        jobs.clone(),
        Some(job(Some("src"), Some("dst"), "ok")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["submitted_by"], "ops", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = call(
        SRC_ONLY,
        "POST",
        jobs.clone(),
        Some(job(Some("src"), Some("src"), "s")),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["submitted_by"], "src-only", "{v}");

    // A read-only token reads jobs and metrics, and changes nothing.
    let (s, v) = call(DASH, "GET", jobs.clone(), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = call(DASH, "GET", format!("/v1/jobs/{id}"), None).await;
    assert_eq!((s, v["submitted_by"].as_str()), (200, Some("ops")), "{v}");
    let (s, _) = d
        .call_raw(
            "GET",
            "/metrics",
            &format!("Authorization: Bearer {DASH}\r\n"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    for (method, path, body) in [
        (
            "POST",
            jobs.clone(),
            Some(job(Some("src"), Some("dst"), "r")),
        ),
        ("POST", format!("/v1/jobs/{id}/cancel"), None),
        ("POST", format!("/v1/jobs/{id}/pause"), None),
        ("DELETE", format!("/v1/jobs/{id}"), None),
        ("POST", "/v1/admin/reload".to_string(), None),
    ] {
        let (s, v) = call(DASH, method, path.clone(), body).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("read-only"),
            "{v}"
        );
    }
    let out = w
        .run(strings(&[
            "jobs",
            "--server",
            &format!("http://{}", d.addr),
            "--token-file",
            &token_file(w.dir.path(), "dash-token", &format!("{DASH}\n"))
                .display()
                .to_string(),
            "submit",
            "copy",
            "oss://src-bucket/disk.raw",
            "oss://dst-discard/x",
        ]))
        .await;
    assert_clean_failure(&out, 1, "read-only");
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));

    // Reload needs admin; a wrong token is 401 before anything else.
    let reload = "/v1/admin/reload".to_string();
    let (s, v) = call(SRC_ONLY, "POST", reload.clone(), None).await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = call("wrong-token-0123456789abcdef", "POST", reload.clone(), None).await;
    assert_eq!(s, 401);
    // Rotation through the API: src-only gets a new token; its old one stops at once.
    let new_src = "src-token-NEW-0123456789abcdef";
    std::fs::write(
        &tf,
        format!("{OPS} name=ops admin\n{new_src} name=src-only profiles=src\n{DASH} name=dash read-only\n"),
    )
    .unwrap();
    let (s, v) = call(OPS, "POST", reload.clone(), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"tokens": 3, "certificate": false}));
    let (s, _) = call(SRC_ONLY, "GET", jobs.clone(), None).await;
    assert_eq!(s, 401, "the rotated token is refused");
    let (s, _) = call(new_src, "GET", jobs.clone(), None).await;
    assert_eq!(s, 200);
    // A broken file is refused and the tokens in force stay.
    std::fs::write(&tf, format!("{OPS} name=ops admin bogus\n")).unwrap();
    let (s, v) = call(OPS, "POST", reload.clone(), None).await;
    assert_eq!(s, 500, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 1"),
        "{v}"
    );
    assert!(!v.to_string().contains(OPS), "{v}");
    let (s, _) = call(new_src, "GET", jobs.clone(), None).await;
    assert_eq!(s, 200, "a failed reload keeps the previous tokens");
    drop(d);

    // --allow-default-credentials lets profile-less sides use the machine's chain.
    let state2 = w.dir.path().join("state2");
    std::fs::create_dir_all(&state2).unwrap();
    std::fs::write(&tf, format!("{OPS}\n")).unwrap();
    let d = start_daemon(
        w.dir.path(),
        &state2,
        &[
            "--token-file",
            &tfs,
            "--allow-profile",
            "src",
            "--allow-default-credentials",
        ],
    )
    .await;
    let mut j = job(Some("src"), None, "d");
    j["source"] = json!("oss://src-bucket/none");
    let (s, v) = d.call("POST", "/v1/jobs", Some(&j.to_string())).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["submitted_by"], "token-1", "{v}");
}

/// SIGHUP while a paced copy job runs: five rounds, each writing a new token file and a new
/// certificate. Each round, the new token works and the old one is 401 at once, new
/// connections get the new certificate, a keep-alive connection opened before the first
/// rotation keeps its original certificate and goes on being served, and the job keeps
/// running; at the end it succeeds in its first run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_tokens_and_certificate_while_jobs_run() {
    const ROUNDS: usize = 5;
    let size = 24 * MIB;
    let w = World::new(|c| c.synthetic.push(synthetic("disk.raw", size)), |_| {}).await;
    let mut pki = Pki::new(w.dir.path());
    let token = |r: usize| format!("rotating-token-{r}-0123456789abcdef");
    let tf = token_file(w.dir.path(), "tokens", &format!("{} name=ops\n", token(0)));
    let tfs = tf.display().to_string();
    let mut extra = pki.flags();
    extra.extend(strings(&["--token-file", &tfs, "--bandwidth", "3MiB/s"]));
    let extra_ref: Vec<&str> = extra.iter().map(String::as_str).collect();
    let d = start_daemon(w.dir.path(), &w.state_dir(), &extra_ref).await;
    let tls = pki.connector();
    let first_cert = pki.cert_der.clone();

    let mut body = copy_job(&w, "disk.raw", DISCARD_BUCKET, "disk.raw");
    body["part_size"] = json!("1MiB");
    let (s, v) = call(
        &tls,
        &d.addr,
        "POST",
        "/v1/jobs",
        Some(&token(0)),
        Some(&body),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{id}");
    // A keep-alive connection from before any rotation.
    let mut kept = connect(&tls, &d.addr).await.unwrap();
    assert_eq!(peer_cert(&kept), first_cert);
    let t0 = Instant::now();
    loop {
        let (_, j) = request(&mut kept, "GET", &path, Some(&token(0)), None).await;
        if j["bytes_done"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(j["state"], "running", "{j}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "job never started: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut last_done = 0;
    for r in 1..=ROUNDS {
        pki.rotate(&format!("daemon {r}"));
        std::fs::write(&tf, format!("{} name=ops\n", token(r))).unwrap();
        let rc = unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
        assert_eq!(rc, 0);
        // The reload is asynchronous to the signal: wait for the new token (bounded).
        let t0 = Instant::now();
        loop {
            let (s, _) = call(&tls, &d.addr, "GET", &path, Some(&token(r)), None).await;
            if s == 200 {
                break;
            }
            assert_eq!(s, 401);
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "round {r}: SIGHUP did not reload"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The previous token stops at once, on new and on kept connections alike.
        let (s, _) = call(&tls, &d.addr, "GET", &path, Some(&token(r - 1)), None).await;
        assert_eq!(s, 401, "round {r}: the old token still works");
        let (s, _) = request(&mut kept, "GET", &path, Some(&token(r - 1)), None).await;
        assert_eq!(
            s, 401,
            "round {r}: the old token still works on a kept connection"
        );
        // New connections see the new certificate; the kept one keeps its own and is served.
        let fresh = connect(&tls, &d.addr).await.unwrap();
        assert_eq!(
            peer_cert(&fresh),
            pki.cert_der,
            "round {r}: new handshake, old certificate"
        );
        assert_eq!(peer_cert(&kept), first_cert);
        let (s, j) = request(&mut kept, "GET", &path, Some(&token(r)), None).await;
        assert_eq!(s, 200, "{j}");
        // The job in flight is untouched: same run, still moving forward.
        assert_eq!(j["runs"], 1, "round {r}: {j}");
        assert!(
            j["state"] == "running" || j["state"] == "succeeded",
            "round {r}: {j}"
        );
        let done = j["bytes_done"].as_u64().unwrap();
        assert!(done >= last_done, "round {r}: progress went back: {j}");
        last_done = done;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        last_done < size,
        "the job finished before the rotations ended; slow it down so they overlap"
    );
    let t0 = Instant::now();
    let j = loop {
        let (s, j) = request(&mut kept, "GET", &path, Some(&token(ROUNDS)), None).await;
        assert_eq!(s, 200, "{j}");
        if j["state"] != "running" && j["state"] != "queued" {
            break j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job did not finish: {j}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["runs"], 1, "{j}");
    assert_eq!(j["result"]["bytes"], size, "{j}");
}

/// `jobs` warns before it sends a token over plain HTTP to another machine. The token file
/// here does not exist, so the client stops before connecting: nothing leaves loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_warns_before_sending_a_token_in_clear_to_another_machine() {
    let w = World::new(|_| {}, |_| {}).await;
    let missing = w.dir.path().join("no-such-token").display().to_string();
    let run = |server: &str| {
        w.run(strings(&[
            "jobs",
            "--server",
            server,
            "--token-file",
            &missing,
            "list",
        ]))
    };
    let out = run("http://192.0.2.10:9870").await;
    assert_clean_failure(&out, 2, "token file");
    assert!(
        stderr(&out).contains("warning:") && stderr(&out).contains("in clear"),
        "{}",
        stderr(&out)
    );
    for quiet in [
        "https://192.0.2.10:9870",
        "http://127.0.0.1:9870",
        "http://localhost:9870",
    ] {
        let out = run(quiet).await;
        assert_clean_failure(&out, 2, "token file");
        assert!(
            !stderr(&out).contains("warning:"),
            "{quiet}: {}",
            stderr(&out)
        );
    }
}
