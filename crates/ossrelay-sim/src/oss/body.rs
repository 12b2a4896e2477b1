//! Bytes into the store: request bodies streamed in with their CRC-64 (and MD5 when wanted),
//! faults striking upload bodies, and the copy source of CopyObject / UploadPartCopy.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures::stream::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use md5::{Digest as _, Md5};

use super::common::{internal, invalid_argument, Ctx, Fail, OssError, Received};
use crate::auth::Principal;
use crate::config::FaultKind;
use crate::crc64;
use crate::faults::{BodyFault, STALL};
use crate::range::{self, RangeOutcome};
use crate::store::{self, Content, Sink};
use crate::wan::Pace;
use crate::world::oss::Object;
use crate::world::World;

/// Most bytes read (and dropped) from a body that is refused before it is stored.
const MAX_DRAIN: u64 = 64 << 20;
/// A request body that sends nothing for this long is answered 400 RequestTimeout.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

pub(crate) async fn drain(w: &World, mut body: Incoming) {
    let mut n = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(d) = frame.into_data() {
            n += d.len() as u64;
            w.stats
                .bytes_in
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            if n > MAX_DRAIN {
                return;
            }
        }
    }
}

pub(crate) async fn read_small(w: &World, mut body: Incoming, limit: usize) -> Result<Bytes, Fail> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Fail::ClientGone)?;
        if let Ok(d) = frame.into_data() {
            w.stats
                .bytes_in
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            if out.len() + d.len() > limit {
                return Err(invalid_argument("Request body is too large.").into());
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}

/// Streams a request body into the store, hashing as it goes.
pub(crate) async fn receive(
    w: &World,
    mut body: Incoming,
    discard: bool,
    want_md5: bool,
    fault: Option<BodyFault>,
    limit: Option<u64>,
) -> Result<Received, Fail> {
    let reset_at = fault.filter(|f| f.kind == FaultKind::Reset).map(|f| f.at);
    let mut other = fault.filter(|f| f.kind != FaultKind::Reset);
    let mut truncated = false;
    let mut pace = limit.map(Pace::new);
    let mut sink = Sink::open(w.oss.blob_dir.as_deref(), discard)
        .await
        .map_err(internal)?;
    let mut crc = crc64::Crc64::new();
    let mut md5 = want_md5.then(Md5::new);
    let mut n = 0u64;
    loop {
        let frame = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
            Ok(Some(f)) => f.map_err(|_| Fail::ClientGone)?,
            Ok(None) => break,
            Err(_) => {
                return Err(OssError::new(
                    400,
                    "RequestTimeout",
                    "Your socket connection to the server was not read from or written to within the timeout period.",
                )
                .into())
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = data.len() as u64;
        if let Some(p) = pace.as_mut() {
            p.after(len).await;
        }
        if let Some(r) = reset_at {
            if n + len > r {
                w.stats
                    .bytes_in
                    .fetch_add(r.saturating_sub(n), Ordering::Relaxed);
                return Err(Fail::Reset);
            }
        }
        let mut data = data;
        if let Some(f) = other.filter(|f| n + len > f.at) {
            other = None;
            let cut = (f.at - n) as usize;
            match f.kind {
                // Bytes lost on the way: the server counts only what arrived.
                FaultKind::Truncate => truncated = true,
                FaultKind::Corrupt => {
                    let mut m = BytesMut::from(&data[..]);
                    m[cut] ^= 1 << f.bit;
                    data = m.freeze();
                }
                FaultKind::Stall => tokio::time::sleep(STALL).await,
                _ => {}
            }
        }
        n += len;
        w.stats.bytes_in.fetch_add(len, Ordering::Relaxed);
        if truncated {
            continue;
        }
        crc.update(&data);
        if let Some(m) = md5.as_mut() {
            m.update(&data);
        }
        sink.write(data).await.map_err(internal)?;
    }
    if reset_at.is_some() {
        return Err(Fail::Reset);
    }
    if truncated {
        // OSS waits for the missing bytes, then gives up with RequestTimeout.
        return Err(OssError::new(
            400,
            "RequestTimeout",
            "Your socket connection to the server was not read from or written to within the timeout period.",
        )
        .into());
    }
    let segment = sink.finish().await.map_err(internal)?;
    Ok(Received {
        size: n,
        crc: crc.sum(),
        md5: md5.map(|m| m.finalize().into()),
        segment,
    })
}

/// Resolves `x-oss-copy-source` (+ range and conditionals) to the source object and span.
pub(crate) fn copy_source(
    w: &World,
    ctx: &Ctx,
    p: &Principal,
    with_range: bool,
) -> Result<(Object, u64, u64), OssError> {
    let raw = ctx.h("x-oss-copy-source").unwrap_or_default();
    let raw = raw.split('?').next().unwrap_or_default().replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&raw)
        .decode_utf8_lossy()
        .into_owned();
    let path = decoded.strip_prefix('/').unwrap_or(&decoded);
    let Some((sb, sk)) = path
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
    else {
        return Err(
            invalid_argument("x-oss-copy-source must be /<bucket>/<key>.")
                .with("ArgumentName", "x-oss-copy-source")
                .with("ArgumentValue", raw.clone()),
        );
    };
    if let Some(region) = w.oss.remote.get(sb) {
        return Err(OssError::new(
            403,
            "AccessDenied",
            format!(
                "Cross-region copy is not supported: source bucket {sb} is in {region}, this endpoint serves {}.",
                w.region
            ),
        ));
    }
    let (obj, discard) = {
        let st = w.oss.lock();
        let Some(b) = st.buckets.get(sb) else {
            return Err(
                OssError::new(404, "NoSuchBucket", "The specified bucket does not exist.")
                    .with("BucketName", sb)
                    .ec("0015-00000101"),
            );
        };
        if b.account != p.account {
            return Err(OssError::new(
                403,
                "AccessDenied",
                "You have no right to access the copy source because of bucket acl.",
            ));
        }
        match b.objects.get(sk) {
            Some(o) => (o.clone(), b.discard),
            None => {
                return Err(
                    OssError::new(404, "NoSuchKey", "The specified key does not exist.")
                        .with("Key", sk)
                        .ec("0026-00000001"),
                )
            }
        }
    };
    if discard {
        return Err(OssError::new(
            403,
            "AccessDenied",
            "discard bucket: content not kept, it cannot be a copy source.",
        ));
    }
    let etag_eq = |v: &str| {
        v.split(',')
            .any(|e| e.trim() == "*" || e.trim().trim_matches('"').eq_ignore_ascii_case(&obj.etag))
    };
    let date = |name: &str| ctx.h(name).and_then(|v| httpdate::parse_http_date(v).ok());
    // Unlike GetObject, a copy cannot answer 304; every failed condition is a 412.
    if ctx
        .h("x-oss-copy-source-if-match")
        .is_some_and(|v| !etag_eq(v))
        || ctx
            .h("x-oss-copy-source-if-none-match")
            .is_some_and(etag_eq)
        || date("x-oss-copy-source-if-unmodified-since").is_some_and(|d| obj.last_modified > d)
        || date("x-oss-copy-source-if-modified-since").is_some_and(|d| obj.last_modified <= d)
    {
        return Err(OssError::new(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
        .ec("0017-00001001"));
    }
    let (start, end) = match ctx.h("x-oss-copy-source-range").filter(|_| with_range) {
        None => (0, obj.size),
        Some(r) => match range::resolve(Some(r), false, obj.size) {
            RangeOutcome::Partial { first, last } => (first, last + 1),
            _ => {
                return Err(invalid_argument(format!(
                    "x-oss-copy-source-range {r:?} is not bytes=<first>-<last> within the {}-byte source.",
                    obj.size
                ))
                .with("ArgumentName", "x-oss-copy-source-range")
                .with("ArgumentValue", r))
            }
        },
    };
    Ok((obj, start, end))
}

/// Copies `[start, end)` of `content` into a new stored segment, hashing on the way.
pub(crate) async fn copy_bytes(
    w: &World,
    content: Content,
    start: u64,
    end: u64,
    discard: bool,
) -> Result<Received, Fail> {
    let mut sink = Sink::open(w.oss.blob_dir.as_deref(), discard)
        .await
        .map_err(internal)?;
    let mut crc = crc64::Crc64::new();
    let mut md5 = (!discard).then(Md5::new);
    let mut src = store::content_stream(content, start, end);
    while let Some(chunk) = src.next().await {
        let chunk = chunk.map_err(internal)?;
        crc.update(&chunk);
        if let Some(m) = md5.as_mut() {
            m.update(&chunk);
        }
        sink.write(chunk).await.map_err(internal)?;
    }
    let segment = sink.finish().await.map_err(internal)?;
    Ok(Received {
        size: crc.len(),
        crc: crc.sum(),
        md5: md5.map(|m| m.finalize().into()),
        segment,
    })
}
