//! `ossrelay sim` as a process: one JSON ready line, `/-/stats`, prompt exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossrelay::credentials::{Credentials, StaticProvider};
use ossrelay::oss::{EndpointSpec, OssClient, OssConfig};
use ossrelay::store::ErrorClass;

/// GET `path` over plain HTTP/1.1; returns (status line, body).
fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn ready_line_stats_and_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ossrelay"))
        .args(["sim", "--listen", "127.0.0.1:0", "--bucket", "cli-bucket"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "{line:?}");
    let v: serde_json::Value = serde_json::from_str(line.trim_end()).expect("JSON ready line");
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["ecs_endpoint", "endpoint", "region"]);
    assert!(
        line.starts_with("{\"endpoint\":"),
        "the contract's keys come first: {line}"
    );
    assert_eq!(v["region"], "cn-hangzhou");
    let endpoint = v["endpoint"].as_str().unwrap().to_string();
    let addr = endpoint
        .strip_prefix("http://127.0.0.1:")
        .map(|p| format!("127.0.0.1:{p}"))
        .unwrap_or_else(|| panic!("{endpoint}"));
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);

    // A signed request through the real client, with the simulator's default key.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt.block_on(async {
        let c = OssClient::new(OssConfig::new(
            EndpointSpec::Url(endpoint.clone()),
            "cn-hangzhou",
            Arc::new(StaticProvider(Credentials::new("simak", "simsecret"))),
        ))
        .unwrap();
        c.bucket("cli-bucket")
            .head_object("nothing")
            .await
            .unwrap_err()
    });
    assert_eq!(e.code.as_deref(), Some("NoSuchKey"));
    assert_eq!(e.class, ErrorClass::NotFound);

    let (status, body) = http_get(&addr, "/-/stats");
    assert!(status.contains(" 200 "), "{status}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    let mut keys: Vec<&str> = stats
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["bytes_in", "bytes_out", "open_uploads", "requests"]);
    assert_eq!(stats["requests"]["HeadObject"]["404"], 1, "{stats}");
    assert_eq!(stats["open_uploads"], 0);

    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("the simulator did not exit within 5 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Nothing else was printed on stdout: the ready line is the only one.
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "stdout after the ready line");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening after exit"
    );
}
