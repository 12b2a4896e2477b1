//! Object operations of the S3 dialect: PutObject, GetObject / HeadObject (ranges,
//! conditionals, `x-amz-checksum-mode`), DeleteObject.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hyper::body::Incoming;

use super::body::receive;
use super::common::{
    discard_etag, empty, etag_q, internal, kept_headers, no_such_key, nvme_b64, parse_content_md5,
    Ctx, Res, S3Error, MAX_PUT,
};
use crate::faults::{body_fault, faulty, FaultPlan};

use crate::range::{self, RangeOutcome};
use crate::reply::{response, stream_body};
use crate::sigv4::Verified;
use crate::store::{self, Content};
use crate::world::oss::{secs, upper_hex, Object};
use crate::world::World;

pub(crate) async fn put_object(
    w: &World,
    ctx: &Ctx,
    auth: &Verified,
    body: Incoming,
    plan: Option<FaultPlan>,
) -> Res {
    let len = ctx
        .h("x-amz-decoded-content-length")
        .or(ctx.h("content-length"))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if len > MAX_PUT {
        super::body::drain(w, body).await;
        return Err(S3Error::new(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed size",
        )
        .with("ProposedSize", len.to_string())
        .with("MaxSizeAllowed", MAX_PUT.to_string())
        .into());
    }
    let expected = match parse_content_md5(ctx) {
        Ok(m) => m,
        Err(e) => {
            super::body::drain(w, body).await;
            return Err(e.into());
        }
    };
    let discard = w.oss.is_discard(ctx.bucket());
    let rcv = receive(w, ctx, auth, body, discard, expected, body_fault(plan, len)).await?;
    let etag = match rcv.md5 {
        Some(m) => upper_hex(&m),
        None => discard_etag(rcv.crc, rcv.size),
    };
    let content = match rcv.segment {
        Some(s) => Content::Stored(vec![s]),
        None => Content::Discarded,
    };
    let obj = Object {
        size: rcv.size,
        crc: rcv.crc,
        nvme: rcv.nvme,
        etag: etag.clone(),
        last_modified: secs(ctx.now),
        object_type: "Normal",
        storage_class: ctx
            .h("x-amz-storage-class")
            .unwrap_or("STANDARD")
            .to_string(),
        headers: kept_headers(&ctx.headers),
        content,
    };
    {
        let mut st = w.oss.lock();
        let b = st
            .buckets
            .get_mut(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?;
        b.objects.insert(ctx.key.clone(), obj);
    }
    let mut r = response(200).header("etag", etag_q(&etag));
    for (alg, v) in &rcv.checksums {
        r = r.header(format!("x-amz-checksum-{alg}"), v.as_str());
    }
    if !rcv.checksums.is_empty() {
        r = r.header("x-amz-checksum-type", "FULL_OBJECT");
    }
    if ctx.cos {
        r = r.header("x-cos-hash-crc64ecma", rcv.crc.to_string());
    }
    Ok(r.body(empty()).expect("valid"))
}

pub(crate) fn get_object(
    w: &World,
    ctx: &Ctx,
    plan: Option<FaultPlan>,
    reset: &Arc<AtomicBool>,
) -> Res {
    let (obj, discard) = {
        let st = w.oss.lock();
        let b = st
            .buckets
            .get(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?;
        match b.objects.get(&ctx.key) {
            Some(o) => (o.clone(), b.discard),
            None => return Err(no_such_key(&ctx.key).into()),
        }
    };
    let etag = etag_q(&obj.etag);
    let lm = httpdate::fmt_http_date(obj.last_modified);
    let etag_eq = |v: &str| {
        v.split(',')
            .any(|e| e.trim() == "*" || e.trim().trim_matches('"').eq_ignore_ascii_case(&obj.etag))
    };
    let date = |name: &str| ctx.h(name).and_then(|v| httpdate::parse_http_date(v).ok());
    if ctx.h("if-match").is_some_and(|v| !etag_eq(v))
        || date("if-unmodified-since").is_some_and(|d| obj.last_modified > d)
    {
        return Err(S3Error::new(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
        .with(
            "Condition",
            if ctx.h("if-match").is_some() {
                "If-Match"
            } else {
                "If-Unmodified-Since"
            },
        )
        .into());
    }
    if ctx.h("if-none-match").is_some_and(etag_eq)
        || date("if-modified-since").is_some_and(|d| obj.last_modified <= d)
    {
        return Ok(response(304)
            .header("etag", etag)
            .header("last-modified", lm)
            .body(empty())
            .expect("valid"));
    }
    if discard && ctx.op == "GetObject" {
        return Err(S3Error::new(
            403,
            "AccessDenied",
            "discard bucket: content not kept (the simulator only records size and checksums for this bucket).",
        )
        .into());
    }
    let (status, start, end) = match range::resolve(ctx.h("range"), true, obj.size) {
        RangeOutcome::Full => (200, 0, obj.size),
        RangeOutcome::Partial { first, last } => (206, first, last + 1),
        RangeOutcome::Unsatisfiable => {
            return Err(S3Error::new(
                416,
                "InvalidRange",
                "The requested range is not satisfiable",
            )
            .with(
                "RangeRequested",
                ctx.h("range").unwrap_or_default().to_string(),
            )
            .with("ActualObjectSize", obj.size.to_string())
            .header("content-range", format!("bytes */{}", obj.size))
            .into())
        }
    };
    let mut r = response(status)
        .header("content-length", end - start)
        .header("accept-ranges", "bytes")
        .header("etag", etag)
        .header("last-modified", lm);
    if obj.storage_class != "STANDARD" && obj.storage_class != "Standard" {
        r = r.header("x-amz-storage-class", obj.storage_class.as_str());
    }
    if status == 206 {
        r = r.header(
            "content-range",
            format!("bytes {}-{}/{}", start, end - 1, obj.size),
        );
    }
    // Ranged reads carry no whole-object checksum (s3-protocol.md §7).
    if ctx.wants_checksums() && status == 200 {
        if let Some(n) = obj.nvme {
            r = r
                .header("x-amz-checksum-crc64nvme", nvme_b64(n))
                .header("x-amz-checksum-type", "FULL_OBJECT");
        }
    }
    // COS reports the whole object's CRC-64/XZ on every read, ranged or not.
    if ctx.cos {
        r = r.header("x-cos-hash-crc64ecma", obj.crc.to_string());
    }
    for (name, value) in &obj.headers {
        let over = match name.as_str() {
            "content-type" => ctx.q("response-content-type"),
            "cache-control" => ctx.q("response-cache-control"),
            "content-disposition" => ctx.q("response-content-disposition"),
            "content-language" => ctx.q("response-content-language"),
            "expires" => ctx.q("response-expires"),
            _ => None,
        };
        r = r.header(name.as_str(), over.unwrap_or(value));
    }
    if ctx.op == "HeadObject" {
        return Ok(r.body(empty()).expect("valid"));
    }
    let stream = store::content_stream(obj.content.clone(), start, end);
    let stream = faulty(stream, plan, end - start, reset.clone());
    let out = w.stats.bytes_out.clone();
    let stream = futures::StreamExt::boxed(futures::StreamExt::inspect(stream, move |c| {
        if let Ok(b) = c {
            out.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }));
    Ok(r.body(stream_body(stream)).expect("valid"))
}

pub(crate) fn delete_object(w: &World, ctx: &Ctx) -> Res {
    if let Some(b) = w.oss.lock().buckets.get_mut(ctx.bucket()) {
        b.objects.remove(&ctx.key);
    }
    Ok(response(204).body(empty()).expect("valid"))
}
