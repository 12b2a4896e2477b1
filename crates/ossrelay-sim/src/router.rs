//! The top of the simulator: one listener, one HTTP/1 connection per client (through the WAN
//! model), and per request the choice of service: `GET /-/stats`, `GET /-/images/<ID>`, the
//! instance metadata service (`/latest/…`), the RPC APIs (ECS / RAM / STS), the AWS Query API
//! (control listener) or the object store.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Dialect;
use crate::reply::{full, response, Body, ConnDrop};
use crate::wan::ConnIo;
use crate::world::World;
use crate::{acs, aws, imds, oss, rpc, s3};

/// Which service a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The object store of the configured dialect (plus, for OSS, the RPC APIs).
    Main,
    /// The S3 dialect's AWS Query API listener (`ec2_endpoint`).
    Control,
}

pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    world: Arc<World>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    role: Role,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if world.link.outage.load(Ordering::Relaxed) {
            // Down: the connection is reset before a byte is read.
            world.link.outage_resets.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_zero_linger();
            drop(stream);
            continue;
        }
        let world = world.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let rate = world.conn_rate.as_ref().map(|d| d.next());
            let io = ConnIo::new(stream, rate, reset.clone(), world.link.clone());
            let svc = hyper::service::service_fn(move |req| {
                let world = world.clone();
                let reset = reset.clone();
                async move { handle(world, req, reset, role).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(3), conn.as_mut()).await;
                }
            }
        });
    }
}

/// Serves one request on the shared listener.
async fn handle(
    world: Arc<World>,
    req: Request<Incoming>,
    reset: Arc<AtomicBool>,
    role: Role,
) -> Result<Response<Body>, ConnDrop> {
    let (parts, body) = req.into_parts();
    let host_full = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = strip_port(&host_full).to_ascii_lowercase();
    let bare = is_bare_host(&host);
    if bare && parts.uri.path() == "/-/stats" && parts.method == Method::GET {
        let body = serde_json::to_vec(&world.stats_json()).unwrap_or_default();
        return Ok(response(200)
            .header("content-type", "application/json")
            .body(full(body))
            .expect("valid response"));
    }
    if bare && parts.method == Method::GET {
        if let Some(id) = parts.uri.path().strip_prefix("/-/images/") {
            return Ok(image_check(&world, id));
        }
    }
    if role == Role::Control {
        return Ok(aws::serve(&world, parts, body).await);
    }
    if world.dialect == Dialect::S3 {
        // IMDSv2 with AWS's shapes shares the S3 listener (it answers only `/latest/…`).
        if aws::imds::is_imds(&parts) {
            let resp = aws::imds::serve(&world, &parts);
            world.stats.record("Metadata", resp.status().as_str());
            return Ok(resp);
        }
        return s3::serve(&world, parts, body, &host, &reset).await;
    }
    // ECS / RAM / STS (RPC on `/` with Action + Version) and the metadata service share
    // this listener; everything else is OSS.
    if bare && imds::is_imds(&parts) {
        let resp = imds::serve(&world, &parts);
        world.stats.record("Metadata", resp.status().as_str());
        return Ok(resp);
    }
    if rpc::is_rpc(&parts) {
        return Ok(acs::serve(&world, parts, body, host).await);
    }
    oss::serve(&world, parts, body, &host, bare, &reset).await
}

/// `GET /-/images/<ID>` (simulator only, no auth): `{"image_id", "size", "crc64"}` of an
/// available ECS image or AMI's (root) disk, CRC-64/XZ as 16 hex digits; 404 when unknown or
/// not yet available. Lets tests in other processes compare disks.
fn image_check(world: &World, id: &str) -> Response<Body> {
    let (status, body) = match world.image_crc64(id) {
        Some((size, crc)) => (
            200,
            serde_json::json!({"image_id": id, "size": size, "crc64": format!("{crc:016x}")}),
        ),
        None => (
            404,
            serde_json::json!({"error": format!("no available image {id}")}),
        ),
    };
    world.stats.record("ImageCheck", &status.to_string());
    response(status)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(&body).unwrap_or_default()))
        .expect("valid response")
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// True when Host names no bucket: an IP, localhost, or a bare OSS endpoint.
fn is_bare_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    host.parse::<IpAddr>().is_ok()
        || host == "localhost"
        || host.is_empty()
        || (host.ends_with(".aliyuncs.com") && labels.len() == 3)
        || (host.ends_with(".oss.aliyuncs.com") && labels.len() == 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addressing_rules() {
        assert!(is_bare_host("127.0.0.1"));
        assert!(is_bare_host("localhost"));
        assert!(is_bare_host("::1"));
        assert!(is_bare_host("oss-cn-hangzhou.aliyuncs.com"));
        assert!(is_bare_host("cn-hangzhou.oss.aliyuncs.com"));
        assert!(!is_bare_host("bucket.oss-cn-hangzhou.aliyuncs.com"));
        assert!(!is_bare_host("bucket.localhost"));
        assert_eq!(strip_port("bucket.localhost:9000"), "bucket.localhost");
        assert_eq!(strip_port("[::1]:9000"), "::1");
    }
}
