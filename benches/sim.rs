//! Simulator serving rates on one loopback connection: synthetic GET, discard PUT, memory PUT.
//! Run with `cargo bench --bench sim`; prints MB/s.

use std::time::{Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use futures::stream;
use hmac::{Hmac, Mac};
use http::Request;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use ossrelay_sim::{self as sim, SimBucket, SimConfig, SyntheticObject};

fn sign(method: &str, resource: &str, date: &str) -> String {
    let sts = format!("{method}\n\n\n{date}\n{resource}");
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(b"simsecret").unwrap();
    mac.update(sts.as_bytes());
    format!(
        "OSS simak:{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn mbps(bytes: u64, t: Instant) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64() / 1e6
}

async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<
    http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>,
> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get_rate(addr: std::net::SocketAddr, bucket: &str, key: &str, len: u64) -> f64 {
    let mut send = connect(addr).await;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let req = Request::get(format!("http://{addr}/{bucket}/{key}"))
        .header("date", &date)
        .header("range", format!("bytes=0-{}", len - 1))
        .header(
            "authorization",
            sign("GET", &format!("/{bucket}/{key}"), &date),
        )
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
        .unwrap();
    let t = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 206);
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            n += d.len() as u64;
        }
    }
    assert_eq!(n, len);
    mbps(n, t)
}

async fn put_rate(addr: std::net::SocketAddr, bucket: &str, key: &str, len: u64) -> f64 {
    let mut send = connect(addr).await;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let chunk = Bytes::from(vec![0x5au8; 1 << 20]);
    let n = len / chunk.len() as u64;
    let frames =
        stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone()))));
    let req = Request::put(format!("http://{addr}/{bucket}/{key}"))
        .header("date", &date)
        .header("content-length", n << 20)
        .header(
            "authorization",
            sign("PUT", &format!("/{bucket}/{key}"), &date),
        )
        .body(StreamBody::new(frames).boxed_unsync())
        .unwrap();
    let t = Instant::now();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    mbps(n << 20, t)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = sim::start(SimConfig {
            buckets: vec![SimBucket {
                name: "mem".into(),
                account: "sim".into(),
            }],
            synthetic: vec![SyntheticObject {
                bucket: "src".into(),
                key: "disk.raw".into(),
                size: 1 << 40,
            }],
            discard: vec!["sink".into()],
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let addr = s.local_addr();
        let g = get_rate(addr, "src", "disk.raw", 4 << 30).await;
        println!("synthetic GET, 1 connection, 4 GiB : {g:8.0} MB/s");
        let p = put_rate(addr, "sink", "blob", 4 << 30).await;
        println!("discard PUT,   1 connection, 4 GiB : {p:8.0} MB/s");
        let m = put_rate(addr, "mem", "blob", 512 << 20).await;
        println!("memory PUT (MD5+CRC), 1 conn, 512 MiB: {m:8.0} MB/s");
        let mg = get_rate(addr, "mem", "blob", 512 << 20).await;
        println!("memory GET,    1 connection, 512 MiB: {mg:8.0} MB/s");
        s.shutdown().await;
    });
}
