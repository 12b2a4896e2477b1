//! Fault injection, /-/stats counters and the WAN model, observed from a raw HTTP client.

mod sim_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ossrelay::crc64;
use ossrelay_sim::{self as sim, FaultKind, SimBucket, SimConfig};
use sim_support::*;

fn config() -> SimConfig {
    SimConfig {
        buckets: vec![SimBucket {
            name: "bkt".into(),
            account: "sim".into(),
        }],
        fault_seed: 7,
        ..SimConfig::default()
    }
}

async fn seeded(cfg: SimConfig) -> (sim::SimServer, Vec<u8>) {
    let s = sim::start(cfg).await.unwrap();
    let data = pattern(2 << 20, 11);
    s.put_object_bytes("bkt", "obj", Bytes::from(data.clone()));
    (s, data)
}

#[tokio::test]
async fn each_fault_kind_is_observable() {
    let (s, data) = seeded(config()).await;
    let ep = s.endpoint();
    let get = || {
        Req::new(&ep, Method::GET, "bkt", "obj")
            .timeout(Duration::from_secs(3))
            .send()
    };

    s.set_faults(vec![(FaultKind::Error500, 1.0)]);
    let r = get().await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (500, "InternalError")
    );

    s.set_faults(vec![(FaultKind::Slowdown, 1.0)]);
    let r = get().await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (503, "SlowDown"));

    s.set_faults(vec![(FaultKind::Reset, 1.0)]);
    let r = get().await;
    assert!(
        r.body.is_err() || r.status.as_u16() == 599,
        "reset must break the body"
    );

    s.set_faults(vec![(FaultKind::Truncate, 1.0)]);
    let r = get().await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.is_err(),
        "truncated body must be detected by the client"
    );

    s.set_faults(vec![(FaultKind::Corrupt, 1.0)]);
    let r = get().await;
    assert_eq!(r.status, 200);
    let body = r.body.as_ref().unwrap();
    assert_eq!(body.len(), data.len());
    assert_ne!(&body[..], &data[..]);
    let flipped: u32 = body
        .iter()
        .zip(&data)
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    assert_eq!(flipped, 1, "exactly one bit flipped");
    assert_ne!(
        crc64::checksum(body),
        r.crc(),
        "the CRC header exposes the corruption"
    );

    s.set_faults(vec![(FaultKind::Stall, 1.0)]);
    let t = Instant::now();
    let r = Req::new(&ep, Method::GET, "bkt", "obj")
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref().unwrap_err(), "body timeout");
    assert!(t.elapsed() < Duration::from_secs(5));

    // Uploads: reset while reading the request body; error500 / slowdown answer after draining.
    s.set_faults(vec![(FaultKind::Reset, 1.0)]);
    let r = Req::new(&ep, Method::PUT, "bkt", "up")
        .body(pattern(4 << 20, 1))
        .send()
        .await;
    assert!(
        r.status.as_u16() == 599 || r.body.is_err(),
        "{:?}",
        r.status
    );
    assert_eq!(s.object_crc64("bkt", "up"), None);
    s.set_faults(vec![(FaultKind::Error500, 1.0)]);
    let r = Req::new(&ep, Method::PUT, "bkt", "up")
        .body(pattern(1000, 1))
        .send()
        .await;
    assert_eq!(r.status, 500);
    assert_eq!(s.object_crc64("bkt", "up"), None);

    // Body faults never hit uploads; with none left the request succeeds.
    s.set_faults(vec![(FaultKind::Corrupt, 1.0), (FaultKind::Stall, 1.0)]);
    let r = Req::new(&ep, Method::PUT, "bkt", "up")
        .body(pattern(1000, 1))
        .send()
        .await;
    assert_eq!(r.status, 200);

    // /-/stats is never faulted.
    s.set_faults(vec![(FaultKind::Error500, 1.0), (FaultKind::Reset, 1.0)]);
    let stats = raw_get(&format!("{ep}/-/stats")).await;
    assert!(stats.contains("\"requests\""));
    let v = s.stats();
    assert_eq!(v["requests"]["GetObject"]["500"], 1);
    assert_eq!(v["requests"]["GetObject"]["503"], 1);
    // A GET reset mid-body was already answered 200; only request-side resets count as "reset".
    assert_eq!(v["requests"]["PutObject"]["reset"], 1);
    s.shutdown().await;
}

async fn raw_get(url: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let r = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn fault_ops_and_probability() {
    let (s, _) = seeded(SimConfig {
        faults: vec![(FaultKind::Error500, 0.5)],
        fault_ops: Some(vec!["HeadObject".into()]),
        ..config()
    })
    .await;
    let ep = s.endpoint();
    for _ in 0..5 {
        let r = Req::new(&ep, Method::GET, "bkt", "obj").send().await;
        assert_eq!(r.status, 200, "GetObject is not in --fault-ops");
    }
    let mut errors = 0;
    for _ in 0..200 {
        if Req::new(&ep, Method::HEAD, "bkt", "obj")
            .send()
            .await
            .status
            == 500
        {
            errors += 1;
        }
    }
    assert!((60..140).contains(&errors), "p=0.5 gave {errors}/200");
    s.shutdown().await;
}

#[tokio::test]
async fn same_seed_same_faults() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (s, _) = seeded(SimConfig {
            faults: vec![(FaultKind::Slowdown, 0.3)],
            fault_seed: 42,
            ..config()
        })
        .await;
        let ep = s.endpoint();
        let mut seq = Vec::new();
        for _ in 0..30 {
            seq.push(
                Req::new(&ep, Method::HEAD, "bkt", "obj")
                    .send()
                    .await
                    .status
                    .as_u16(),
            );
        }
        runs.push(seq);
        s.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&503) && runs[0].contains(&200));
}

#[tokio::test]
async fn stats_counters() {
    let (s, data) = seeded(config()).await;
    let ep = s.endpoint();
    let up = pattern(123_456, 2);
    Req::new(&ep, Method::PUT, "bkt", "x")
        .body(up.clone())
        .send()
        .await;
    Req::new(&ep, Method::GET, "bkt", "obj").send().await;
    Req::new(&ep, Method::GET, "bkt", "obj")
        .h("range", "bytes=0-99")
        .send()
        .await;
    Req::new(&ep, Method::GET, "bkt", "missing").send().await;
    let r = Req::new(&ep, Method::POST, "bkt", "m")
        .q("uploads", "")
        .send()
        .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value =
        serde_json::from_str(&raw_get(&format!("{ep}/-/stats")).await).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["bytes_in", "bytes_out", "open_uploads", "requests"]);
    assert_eq!(v["requests"]["PutObject"]["200"], 1);
    assert_eq!(v["requests"]["GetObject"]["200"], 1);
    assert_eq!(v["requests"]["GetObject"]["206"], 1);
    assert_eq!(v["requests"]["GetObject"]["404"], 1);
    assert_eq!(v["requests"]["InitiateMultipartUpload"]["200"], 1);
    assert_eq!(v["bytes_in"], up.len() as u64);
    assert_eq!(v["bytes_out"], data.len() as u64 + 100);
    assert_eq!(v["open_uploads"], 1);
    assert_eq!(v, s.stats());
    s.shutdown().await;
}

#[tokio::test]
async fn wan_model_rate_and_latency() {
    let (s, data) = seeded(SimConfig {
        conn_rate: Some(4 << 20),
        latency: Duration::from_millis(150),
        ..config()
    })
    .await;
    let ep = s.endpoint();
    let t = Instant::now();
    let r = Req::new(&ep, Method::HEAD, "bkt", "obj").send().await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "latency {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = Req::new(&ep, Method::GET, "bkt", "obj").send().await;
    assert_eq!(r.body.unwrap().len(), data.len());
    // 2 MiB at 4 MiB/s ≈ 0.5 s + 150 ms latency.
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(550), "{el:?}");
    assert!(el < Duration::from_secs(4), "{el:?}");
    // Uploads are paced too.
    let t = Instant::now();
    let r = Req::new(&ep, Method::PUT, "bkt", "u")
        .body(pattern(2 << 20, 3))
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn lost_complete_response_still_completes() {
    let (s, _) = seeded(config()).await;
    let ep = s.endpoint();
    let r = Req::new(&ep, Method::POST, "bkt", "m")
        .q("uploads", "")
        .send()
        .await;
    let id = xml_value(&r.text(), "UploadId").unwrap();
    let part = pattern(1000, 4);
    let p = Req::new(&ep, Method::PUT, "bkt", "m")
        .q("partNumber", "1")
        .q("uploadId", &id)
        .body(part.clone())
        .send()
        .await;
    let etag = p.h("etag").unwrap().to_string();
    s.set_faults(vec![(FaultKind::Reset, 1.0)]);
    s.set_fault_ops(Some(vec!["CompleteMultipartUpload".into()]));
    let body = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let r = Req::new(&ep, Method::POST, "bkt", "m")
        .q("uploadId", &id)
        .body(body)
        .send()
        .await;
    assert_eq!(r.status.as_u16(), 599, "the client never hears the answer");
    assert_eq!(
        s.object_crc64("bkt", "m"),
        Some((1000, crc64::checksum(&part)))
    );
    assert_eq!(s.stats()["open_uploads"], 0);
    s.shutdown().await;
}

#[tokio::test]
async fn traffic_limit_paces_and_validates() {
    let s = sim::start(config()).await.unwrap();
    let ep = s.endpoint();
    let data = pattern(512 << 10, 5);
    s.put_object_bytes("bkt", "o", Bytes::from(data.clone()));
    let t = Instant::now();
    // 8 Mbit/s = 1 MiB/s → 512 KiB takes about half a second.
    let r = Req::new(&ep, Method::GET, "bkt", "o")
        .h("x-oss-traffic-limit", "8388608")
        .send()
        .await;
    assert_eq!(r.body.unwrap().len(), data.len());
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let r = Req::new(&ep, Method::PUT, "bkt", "p")
        .h("x-oss-traffic-limit", "8388608")
        .body(data.clone())
        .send()
        .await;
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
    let r = Req::new(&ep, Method::GET, "bkt", "o")
        .h("x-oss-traffic-limit", "1000")
        .send()
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "InvalidArgument")
    );
    s.shutdown().await;
}
