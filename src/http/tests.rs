//! The retry rule, the backoff behind it and the stall timer, against raw TCP peers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::store::{ByteStream, StoreError};

const ALL: [ErrorClass; 7] = [
    ErrorClass::Throttled,
    ErrorClass::Transient,
    ErrorClass::ClockSkew,
    ErrorClass::Auth,
    ErrorClass::NotFound,
    ErrorClass::Precondition,
    ErrorClass::Client,
];

#[test]
fn retry_decision_by_class_and_attempt() {
    for class in ALL {
        let retryable = matches!(
            class,
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::ClockSkew
        );
        for max in 1..=5 {
            for attempt in 1..=6 {
                assert_eq!(
                    should_retry(class, attempt, max),
                    retryable && attempt < max,
                    "{class:?} attempt {attempt} of {max}"
                );
            }
        }
    }
    // The documented bounds.
    assert_eq!(OSS_MAX_ATTEMPTS, 4);
    assert_eq!(RPC_MAX_ATTEMPTS, 5);
    assert_eq!(RetryPolicy::default().max_attempts, RPC_MAX_ATTEMPTS);
    assert_eq!(RetryPolicy::oss(OSS_MAX_ATTEMPTS).max_attempts, 4);
    assert_eq!(RetryPolicy::oss(0).max_attempts, 1, "at least one attempt");
    assert_eq!(RetryPolicy::once().max_attempts, 1);
}

/// From the RPC client's former copy of the backoff (moved here with the code).
#[test]
fn backoff_grows_with_jitter_and_honours_retry_after() {
    let r = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    for _ in 0..50 {
        let d1 = r.delay(1, None);
        assert!(
            d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(100),
            "{d1:?}"
        );
        let d3 = r.delay(3, None);
        assert!(
            d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(400),
            "{d3:?}"
        );
        let d9 = r.delay(9, None);
        assert!(d9 <= Duration::from_secs(1), "{d9:?}");
    }
    assert!(r.delay(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
}

#[derive(Debug)]
struct Failed(ErrorClass, Option<Duration>);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Retryable for Failed {
    fn class(&self) -> ErrorClass {
        self.0
    }
    fn retry_after(&self) -> Option<Duration> {
        self.1
    }
}

fn quick(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(4),
    }
}

async fn attempts_until_given_up(policy: RetryPolicy, replay: Replay, class: ErrorClass) -> usize {
    let n = AtomicUsize::new(0);
    let r: Result<(), Failed> = retry(&policy, replay, "test", |_| async {
        n.fetch_add(1, Ordering::Relaxed);
        Err(Failed(class, None))
    })
    .await;
    assert_eq!(r.unwrap_err().0, class);
    n.into_inner()
}

#[tokio::test]
async fn the_retry_loop_is_bounded_and_follows_the_decision() {
    for class in ALL {
        let want = if class.is_retryable() { 4 } else { 1 };
        assert_eq!(
            attempts_until_given_up(quick(4), Replay::Replayable, class).await,
            want,
            "{class:?}"
        );
        // A streaming body is sent once, whatever the class.
        assert_eq!(
            attempts_until_given_up(quick(4), Replay::Once, class).await,
            1,
            "{class:?}"
        );
    }
    assert_eq!(
        attempts_until_given_up(quick(0), Replay::Replayable, ErrorClass::Transient).await,
        1
    );
    // Success on the third attempt stops the loop; attempt numbers count from 1.
    let seen = std::sync::Mutex::new(Vec::new());
    let r: Result<u32, Failed> = retry(&quick(10), Replay::Replayable, "test", |n| {
        seen.lock().unwrap().push(n);
        async move {
            if n < 3 {
                Err(Failed(ErrorClass::Throttled, None))
            } else {
                Ok(n)
            }
        }
    })
    .await;
    assert_eq!(r.unwrap(), 3);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
}

#[tokio::test]
async fn the_retry_loop_waits_for_retry_after() {
    let started = Instant::now();
    let n = AtomicUsize::new(0);
    let r: Result<(), Failed> = retry(&quick(2), Replay::Replayable, "test", |_| async {
        n.fetch_add(1, Ordering::Relaxed);
        Err(Failed(
            ErrorClass::Throttled,
            Some(Duration::from_millis(300)),
        ))
    })
    .await;
    assert!(r.is_err());
    assert_eq!(n.into_inner(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// A peer that reads each request (head and `Content-Length` body) and answers with what
/// `answer(n)` gives for the `n`-th request (from 0); `None` holds the connection silent.
async fn peer(
    answer: impl Fn(usize) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let (answer, c) = (answer.clone(), c.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = vec![0u8; 64 * 1024];
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + len {
                        match sock.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    match answer(n) {
                        Some(a) => {
                            if sock.write_all(&a).await.is_err() {
                                return;
                            }
                        }
                        None => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, count)
}

fn transport() -> Transport {
    Transport::new(&TransportConfig {
        proxy: proxy::ProxyConfig::none(),
        ..TransportConfig::new(Duration::from_secs(2))
    })
    .unwrap()
}

fn get(addr: SocketAddr) -> http::Request<ReqBody> {
    http::Request::get(format!("http://{addr}/obj"))
        .body(ReqBody::Empty)
        .unwrap()
}

const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";

/// A status error as a dialect would map it: 5xx is transient.
#[derive(Debug)]
struct Status(Option<u16>, ErrorClass);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Retryable for Status {
    fn class(&self) -> ErrorClass {
        self.1
    }
}

async fn send_through(
    t: &Transport,
    req: http::Request<ReqBody>,
) -> Result<http::Response<hyper::body::Incoming>, Status> {
    match t.send(req, Duration::from_secs(5), None).await {
        Ok(r) if r.status().is_success() => Ok(r),
        Ok(r) => Err(Status(Some(r.status().as_u16()), ErrorClass::Transient)),
        Err(e) => Err(Status(None, e.class())),
    }
}

#[tokio::test]
async fn a_replayable_request_is_retried_up_to_the_bound_on_the_wire() {
    let (addr, count) = peer(|_| Some(UNAVAILABLE.to_vec())).await;
    let t = transport();
    let err = retry(&quick(4), Replay::Replayable, "GET", |_| {
        send_through(&t, get(addr))
    })
    .await
    .unwrap_err();
    assert_eq!(err.0, Some(503));
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "4 attempts, then the error"
    );
}

#[tokio::test]
async fn a_non_replayable_request_is_not_retried() {
    let (addr, count) = peer(|_| Some(UNAVAILABLE.to_vec())).await;
    let t = transport();
    let mut body: Option<ByteStream> = Some(Box::pin(futures::stream::iter(vec![
        Ok::<_, StoreError>(Bytes::from_static(b"hello ")),
        Ok(Bytes::from_static(b"world")),
    ])));
    let err = retry(&quick(4), Replay::Once, "PUT", |_| {
        let req = http::Request::put(format!("http://{addr}/obj"))
            .body(ReqBody::stream(body.take().expect("one attempt only"), 11))
            .unwrap();
        send_through(&t, req)
    })
    .await
    .unwrap_err();
    assert_eq!(err.0, Some(503));
    // Give a (wrong) second attempt time to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count.load(Ordering::SeqCst), 1, "one attempt on the wire");
}

/// The peer sends the response head and 10 of 100 body bytes, then nothing: the stall timer
/// (`--stall-timeout` → `OssConfig::read_timeout` → here) ends the body after that long.
#[tokio::test]
async fn a_body_stalled_after_the_head_is_cut_by_the_stall_timer() {
    let (addr, _) =
        peer(|_| Some(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec())).await;
    let stall = Duration::from_millis(400);
    let resp = transport().send(get(addr), stall, None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let started = Instant::now();
    let mut body = BodyStream::new(resp.into_body(), Some(100), stall, "GetObject".into());
    assert_eq!(&body.next().await.unwrap().unwrap()[..], b"0123456789");
    let err = body.next().await.unwrap().unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(err.message.contains("stalled body"), "{err}");
    assert!(waited >= stall, "cut before the stall timeout: {waited:?}");
    assert!(waited < stall * 4, "cut late: {waited:?}");
}

/// The peer reads the request and never answers: the same timer cuts the wait for the head.
#[tokio::test]
async fn a_silent_peer_is_cut_by_the_stall_timer() {
    let (addr, _) = peer(|_| None).await;
    let stall = Duration::from_millis(400);
    let started = Instant::now();
    let err = transport().send(get(addr), stall, None).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.timed_out(), Some(stall), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(waited >= stall && waited < stall * 4, "{waited:?}");
}

/// A streamed request body that keeps moving is not cut, however long the upload takes:
/// the stall timer counts from the last chunk taken.
#[tokio::test]
async fn a_slow_but_moving_upload_is_not_cut() {
    let (addr, _) = peer(|_| Some(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec())).await;
    let stall = Duration::from_millis(300);
    let chunks = futures::stream::iter(0..8).then(|_| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, StoreError>(Bytes::from_static(b"x"))
    });
    let req = http::Request::put(format!("http://{addr}/obj"))
        .body(ReqBody::stream(Box::pin(chunks), 8))
        .unwrap();
    let started = Instant::now();
    let resp = transport().send(req, stall, None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() > stall * 2,
        "the upload outlasted the timer"
    );
}

#[tokio::test]
async fn fetch_bounds_the_attempt_and_the_body_size() {
    let (addr, _) = peer(|_| {
        Some(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789".to_vec())
    })
    .await;
    let t = transport();
    let timeouts = Timeouts {
        stall: Duration::from_secs(5),
        attempt: Some(Duration::from_secs(5)),
    };
    let (status, _, body) = t.fetch(get(addr), timeouts, 20, None).await.unwrap();
    assert_eq!((status.as_u16(), body.len()), (200, 20));
    let err = t.fetch(get(addr), timeouts, 19, None).await.unwrap_err();
    assert!(err.to_string().contains("larger than 19 bytes"), "{err}");
    let (silent, _) = peer(|_| None).await;
    let limit = Duration::from_millis(300);
    let err = t
        .fetch(
            get(silent),
            Timeouts {
                stall: Duration::from_secs(60),
                attempt: Some(limit),
            },
            20,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.timed_out(), Some(limit), "{err}");
}

#[tokio::test]
async fn refused_connections_mean_no_server() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let err = transport()
        .send(get(addr), Duration::from_secs(2), None)
        .await
        .unwrap_err();
    assert!(err.no_server(), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.timed_out(), None);
}
