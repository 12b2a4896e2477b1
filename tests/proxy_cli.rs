//! `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` as a user behind a corporate proxy sets them: the
//! real binary, a small proxy written here that counts what it served, and the simulator.
//!
//! Destination names end in `.invalid` (RFC 2606): only the proxy can "resolve" them (it sends
//! every connection to the simulator or to a TLS sniffer), so a request that reached its
//! destination went through the proxy. The NO_PROXY test uses `0.0.0.0`, which Linux connects
//! to this machine without being a loopback address (loopback is never proxied).

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ossrelay_sim::{
    self as sim, SimAccount, SimBucket, SimConfig, SimOidcProvider, SimRole, SimServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ACCOUNT: &str = "1000000000000001";
const AK: &str = "LTAIproxyAccessKey";
const SK: &str = "proxy-SECRET-never-printed";
const BUCKET: &str = "images-fra";
const ISSUER: &str = "https://oidc.proxy-test.invalid/c1";

/// What the test proxy saw.
#[derive(Default)]
struct Seen {
    /// Authorities of the CONNECT tunnels it opened.
    tunnels: Vec<String>,
    /// Request lines of the plain-http requests it forwarded (absolute form).
    forwarded: Vec<String>,
}

/// A minimal forward proxy: `CONNECT host:port` opens a tunnel to `upstream`, any other request
/// is passed (first request line recorded) to `upstream` on a new connection.
struct TestProxy {
    addr: String,
    seen: Arc<Mutex<Seen>>,
}

impl TestProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let seen = s2.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, seen).await;
                });
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnels(&self) -> Vec<String> {
        self.seen.lock().unwrap().tunnels.clone()
    }

    fn forwarded(&self) -> Vec<String> {
        self.seen.lock().unwrap().forwarded.clone()
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: std::net::SocketAddr,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or("").to_string();
    let mut server = TcpStream::connect(upstream).await?;
    if let Some(rest) = line.strip_prefix("CONNECT ") {
        let authority = rest.split_whitespace().next().unwrap_or("").to_string();
        seen.lock().unwrap().tunnels.push(authority);
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        seen.lock().unwrap().forwarded.push(line);
        server.write_all(&head).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Accepts connections and keeps the first bytes each sends (a TLS ClientHello, expected).
async fn tls_sniffer() -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let h2 = hellos.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let hellos = h2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if let Ok(n) = conn.read(&mut buf).await {
                    hellos.lock().unwrap().push(buf[..n].to_vec());
                }
            });
        }
    });
    (addr, hellos)
}

async fn start_sim() -> SimServer {
    sim::start(SimConfig {
        accounts: vec![SimAccount {
            name: ACCOUNT.into(),
            access_key_id: AK.into(),
            access_key_secret: SK.into(),
        }],
        buckets: vec![SimBucket {
            name: BUCKET.into(),
            account: ACCOUNT.into(),
        }],
        oidc_providers: vec![SimOidcProvider {
            account: ACCOUNT.into(),
            name: "cluster".into(),
            issuer_url: ISSUER.into(),
            client_ids: vec!["sts.aliyuncs.com".into()],
        }],
        roles: vec![SimRole {
            account: ACCOUNT.into(),
            name: "pod".into(),
            trusted: "oidc:cluster".into(),
        }],
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn jwt() -> String {
    let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims =
        serde_json::json!({"iss": ISSUER, "aud": "sts.aliyuncs.com", "sub": "sa", "exp": exp});
    format!(
        "{}.{}.{}",
        b(r#"{"alg":"RS256"}"#),
        b(&claims.to_string()),
        b("sig")
    )
}

/// Credentials for a run: an AccessKey pair, or the pod's OIDC variables.
enum Creds<'a> {
    AccessKey,
    Oidc { sts_endpoint: &'a str },
}

/// `ossrelay uploads list oss://BUCKET/ --endpoint ENDPOINT` with exactly `vars` as the
/// proxy environment.
async fn list(endpoint: &str, creds: Creds<'_>, vars: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ossrelay"));
    cmd.args(["uploads", "list", &format!("oss://{BUCKET}/")])
        .args(["--endpoint", endpoint, "--region", "cn-hangzhou"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match creds {
        Creds::AccessKey => {
            cmd.env("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
                .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SK);
        }
        Creds::Oidc { sts_endpoint } => {
            let token = home.path().join("token");
            std::fs::write(&token, jwt()).unwrap();
            cmd.env(
                "ALIBABA_CLOUD_ROLE_ARN",
                format!("acs:ram::{ACCOUNT}:role/pod"),
            )
            .env(
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                format!("acs:ram::{ACCOUNT}:oidc-provider/cluster"),
            )
            .env("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &token)
            .env("ALIBABA_CLOUD_STS_ENDPOINT", sts_endpoint);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ossrelay"))
        .await
        .unwrap();
    drop(home);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(SK) && !all.contains("panicked"), "{all}");
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_carries_sts_and_oss_requests_in_absolute_form() {
    let s = start_sim().await;
    let proxy = TestProxy::start(s.local_addr()).await;
    let port = s.local_addr().port();
    let oss = format!("http://oss-cn-hangzhou.proxy-test.invalid:{port}");
    let sts = format!("http://sts.proxy-test.invalid:{port}");
    let out = list(
        &oss,
        Creds::Oidc { sts_endpoint: &sts },
        &[("HTTP_PROXY", &proxy.url())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = proxy.forwarded();
    assert!(
        seen.iter().any(|l| l.starts_with(&format!(
            "POST http://sts.proxy-test.invalid:{port}/?Action=AssumeRoleWithOIDC"
        ))),
        "the RPC client did not use the proxy: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with(&format!(
            "GET http://{BUCKET}.oss-cn-hangzhou.proxy-test.invalid:{port}/?"
        )) && l.contains("uploads")),
        "the OSS client did not use the proxy: {seen:?}"
    );
    assert!(proxy.tunnels().is_empty(), "plain http needs no tunnel");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_goes_through_a_connect_tunnel_with_tls_inside() {
    let (sniffer, hellos) = tls_sniffer().await;
    let proxy = TestProxy::start(sniffer).await;
    // OSS: the answer is no TLS server, so the command fails, after the tunnel was used.
    let out = list(
        "https://oss-cn-hangzhou.proxy-test.invalid",
        Creds::AccessKey,
        &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "example.com")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let host = format!("{BUCKET}.oss-cn-hangzhou.proxy-test.invalid");
    let tunnels = proxy.tunnels();
    assert!(!tunnels.is_empty(), "no CONNECT: {}", stderr(&out));
    assert!(
        tunnels.iter().any(|t| *t == format!("{host}:443")),
        "{tunnels:?}"
    );
    assert!(proxy.forwarded().is_empty());
    // TLS started inside the tunnel, for the real host name (SNI), not for the proxy.
    let first = hellos
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("bytes through the tunnel");
    assert_eq!(first.first(), Some(&0x16), "a TLS handshake record");
    assert!(
        first.windows(host.len()).any(|w| w == host.as_bytes()),
        "SNI names the bucket host"
    );

    // The STS client (RPC) tunnels too.
    let before = proxy.tunnels().len();
    let out = list(
        "https://oss-cn-hangzhou.proxy-test.invalid",
        Creds::Oidc {
            sts_endpoint: "https://sts.proxy-test.invalid",
        },
        &[("https_proxy", &proxy.url())],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let tunnels = proxy.tunnels();
    assert!(
        tunnels[before..]
            .iter()
            .any(|t| t == "sts.proxy-test.invalid:443"),
        "{tunnels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_and_loopback_bypass_the_proxy() {
    let s = start_sim().await;
    let proxy = TestProxy::start(s.local_addr()).await;
    let port = s.local_addr().port();
    let direct = format!("http://0.0.0.0:{port}");

    // Control: without NO_PROXY the same endpoint goes through the proxy.
    let out = list(&direct, Creds::AccessKey, &[("HTTP_PROXY", &proxy.url())]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let through = proxy.forwarded().len();
    assert!(through > 0, "control run did not use the proxy");

    for no_proxy in ["0.0.0.0", "0.0.0.0/8", "*"] {
        let out = list(
            &direct,
            Creds::AccessKey,
            &[("HTTP_PROXY", &proxy.url()), ("NO_PROXY", no_proxy)],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            proxy.forwarded().len(),
            through,
            "NO_PROXY={no_proxy} ignored"
        );
    }
    // Lower-case no_proxy works as well.
    let out = list(
        &direct,
        Creds::AccessKey,
        &[("http_proxy", &proxy.url()), ("no_proxy", "0.0.0.0")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(proxy.forwarded().len(), through);

    // Loopback is never proxied, NO_PROXY or not.
    let out = list(
        &s.endpoint(),
        Creds::AccessKey,
        &[("HTTP_PROXY", &proxy.url()), ("ALL_PROXY", &proxy.url())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(proxy.forwarded().len(), through);
    assert!(proxy.tunnels().is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_proxy_scheme_is_a_one_line_error() {
    let out = list(
        "https://oss-cn-hangzhou.proxy-test.invalid",
        Creds::AccessKey,
        &[("HTTPS_PROXY", "socks5://user:pw-SECRET@127.0.0.1:1")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("only http:// proxies"), "{err}");
    assert!(!err.contains("pw-SECRET"), "proxy password shown: {err}");
}
