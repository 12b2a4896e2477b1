//! Object operations: PutObject, GetObject / HeadObject / GetObjectMeta (conditionals, ranges,
//! response overrides, traffic limit, body faults) and CopyObject.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use futures::stream::StreamExt;
use http::Method;
use hyper::body::Incoming;

use super::body::{copy_bytes, copy_source, drain, receive};
use super::common::{
    check_forbid_overwrite, check_md5, crc_header, declared_length, discard_etag, empty,
    file_exists, full, internal, kept_headers, missing_length, parse_content_md5, quoted,
    storage_class, traffic_limit, Ctx, OssError, Res, MAX_PUT,
};
use crate::auth::Principal;
use crate::faults::{body_fault, faulty, FaultPlan};
use crate::range::{self, RangeOutcome};
use crate::reply::{response, stream_body};
use crate::store::{self, Content};
use crate::wan::paced;
use crate::world::oss::{secs, upper_hex, Object};
use crate::world::World;
use crate::xml::{self, el, iso};

pub(crate) async fn put_object(
    w: &World,
    ctx: &Ctx,
    body: Incoming,
    plan: Option<FaultPlan>,
) -> Res {
    let declared = ctx.h("content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUT) {
        return Err(OssError::new(
            400,
            "EntityTooLarge",
            "Your proposed upload exceeds the maximum allowed object size (5 GiB); use multipart upload.",
        )
        .ec("0026-00000006")
        .into());
    }
    let pre = (|| -> Result<_, OssError> {
        missing_length(ctx)?;
        let sc = storage_class(&ctx.headers)?;
        let md5 = parse_content_md5(ctx)?;
        check_forbid_overwrite(w, ctx, "0026-00000201")?;
        Ok((sc, md5, traffic_limit(ctx)?))
    })();
    let (sc, expected_md5, limit) = match pre {
        Ok(x) => x,
        Err(e) => {
            drain(w, body).await;
            return Err(e.into());
        }
    };
    let discard = w.oss.is_discard(ctx.bucket());
    let rcv = receive(
        w,
        body,
        discard,
        !discard || expected_md5.is_some(),
        body_fault(plan, declared_length(ctx)),
        limit,
    )
    .await?;
    check_md5(expected_md5, rcv.md5)?;
    let etag = match rcv.md5 {
        Some(m) => upper_hex(&m),
        None => discard_etag(rcv.crc, rcv.size),
    };
    let obj = Object {
        size: rcv.size,
        crc: rcv.crc,
        nvme: None,
        etag: etag.clone(),
        last_modified: secs(ctx.now),
        object_type: "Normal",
        storage_class: sc,
        headers: kept_headers(&ctx.headers, &ctx.key),
        content: match rcv.segment {
            Some(s) => Content::Stored(vec![s]),
            None => Content::Discarded,
        },
    };
    {
        let mut st = w.oss.lock();
        let b = st
            .buckets
            .get_mut(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?;
        if ctx.h("x-oss-forbid-overwrite") == Some("true") && b.objects.contains_key(&ctx.key) {
            return Err(file_exists("0026-00000201").into());
        }
        b.objects.insert(ctx.key.clone(), obj);
    }
    let mut r = response(200).header("etag", quoted(&etag));
    if let Some(m) = rcv.md5 {
        r = r.header(
            "content-md5",
            base64::engine::general_purpose::STANDARD.encode(m),
        );
    }
    let (k, v) = crc_header(rcv.crc);
    Ok(r.header(k, v).body(empty()).expect("valid"))
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
            None => {
                return Err(
                    OssError::new(404, "NoSuchKey", "The specified key does not exist.")
                        .with("Key", ctx.key.clone())
                        .ec("0026-00000001")
                        .into(),
                )
            }
        }
    };
    let etag_q = quoted(&obj.etag);
    let lm = httpdate::fmt_http_date(obj.last_modified);
    if ctx.op == "GetObjectMeta" {
        let (k, v) = crc_header(obj.crc);
        return Ok(response(200)
            .header("content-length", obj.size)
            .header("etag", etag_q)
            .header("last-modified", lm)
            .header(k, v)
            .body(empty())
            .expect("valid"));
    }
    // Conditionals: 412 first, then 304.
    let etag_eq = |v: &str| {
        v.split(',')
            .any(|e| e.trim() == "*" || e.trim().trim_matches('"').eq_ignore_ascii_case(&obj.etag))
    };
    let date = |name: &str| ctx.h(name).and_then(|v| httpdate::parse_http_date(v).ok());
    let failed = ctx.h("if-match").is_some_and(|v| !etag_eq(v))
        || date("if-unmodified-since").is_some_and(|d| obj.last_modified > d);
    if failed {
        return Err(OssError::new(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
        .ec("0017-00001001")
        .into());
    }
    let not_modified = ctx.h("if-none-match").is_some_and(etag_eq)
        || date("if-modified-since").is_some_and(|d| obj.last_modified <= d);
    if not_modified {
        return Ok(response(304)
            .header("etag", etag_q)
            .header("last-modified", lm)
            .body(empty())
            .expect("valid"));
    }
    if discard && ctx.op == "GetObject" {
        return Err(OssError::new(
            403,
            "AccessDenied",
            "discard bucket: content not kept (the simulator only records size and CRC-64 for this bucket).",
        )
        .into());
    }
    let standard = ctx
        .h("x-oss-range-behavior")
        .is_some_and(|v| v.eq_ignore_ascii_case("standard"));
    let outcome = range::resolve(ctx.h("range"), standard, obj.size);
    let limit = traffic_limit(ctx)?;
    let (status, start, end) = match outcome {
        RangeOutcome::Full => (200, 0, obj.size),
        RangeOutcome::Partial { first, last } => (206, first, last + 1),
        RangeOutcome::Unsatisfiable => {
            return Err(OssError::new(
                416,
                "InvalidRange",
                "The requested range cannot be satisfied",
            )
            .with(
                "RangeRequested",
                ctx.h("range").unwrap_or_default().to_string(),
            )
            .with("ActualObjectSize", obj.size.to_string())
            .header("content-range", format!("bytes */{}", obj.size))
            .ec("0017-00000301")
            .into())
        }
    };
    let mut r = response(status)
        .header("content-length", end - start)
        .header("accept-ranges", "bytes")
        .header("etag", etag_q)
        .header("last-modified", lm)
        .header("x-oss-object-type", obj.object_type)
        .header("x-oss-storage-class", obj.storage_class.as_str());
    let (k, v) = crc_header(obj.crc);
    r = r.header(k, v);
    if status == 206 {
        r = r.header(
            "content-range",
            format!("bytes {}-{}/{}", start, end - 1, obj.size),
        );
    }
    for (name, value) in &obj.headers {
        let over = match name.as_str() {
            "content-type" => ctx.q("response-content-type"),
            "cache-control" => ctx.q("response-cache-control"),
            "content-disposition" => ctx.q("response-content-disposition"),
            "content-encoding" => ctx.q("response-content-encoding"),
            "content-language" => ctx.q("response-content-language"),
            "expires" => ctx.q("response-expires"),
            _ => None,
        };
        r = r.header(name.as_str(), over.unwrap_or(value));
    }
    for (q, h) in [
        ("response-content-type", "content-type"),
        ("response-cache-control", "cache-control"),
        ("response-content-disposition", "content-disposition"),
        ("response-content-encoding", "content-encoding"),
        ("response-content-language", "content-language"),
        ("response-expires", "expires"),
    ] {
        if let Some(v) = ctx.q(q) {
            if !obj.headers.iter().any(|(n, _)| n == h) {
                r = r.header(h, v);
            }
        }
    }
    if ctx.method == Method::HEAD {
        return Ok(r.body(empty()).expect("valid"));
    }
    let len = end - start;
    let inner = store::content_stream(obj.content, start, end);
    let faulted = paced(faulty(inner, plan, len, reset.clone()), limit);
    let counter = w.stats.bytes_out.clone();
    let counted = faulted
        .inspect(move |r| {
            if let Ok(b) = r {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        })
        .boxed();
    Ok(r.body(stream_body(counted)).expect("valid"))
}

pub(crate) async fn copy_object(w: &World, ctx: &Ctx, p: &Principal) -> Res {
    let (src, start, end) = copy_source(w, ctx, p, false)?;
    if end - start > MAX_PUT {
        return Err(OssError::new(
            400,
            "EntityTooLarge",
            "The copy source exceeds 5 GiB; use multipart upload with UploadPartCopy.",
        )
        .into());
    }
    check_forbid_overwrite(w, ctx, "0026-00000201")?;
    let replace = ctx
        .h("x-oss-metadata-directive")
        .is_some_and(|v| v.eq_ignore_ascii_case("REPLACE"));
    let headers = if replace {
        kept_headers(&ctx.headers, &ctx.key)
    } else {
        src.headers.clone()
    };
    let sc = match ctx.h("x-oss-storage-class") {
        Some(_) => storage_class(&ctx.headers)?,
        None => src.storage_class.clone(),
    };
    let discard = w.oss.is_discard(ctx.bucket());
    let rcv = copy_bytes(w, src.content, start, end, discard).await?;
    let etag = match rcv.md5 {
        Some(m) => upper_hex(&m),
        None => discard_etag(rcv.crc, rcv.size),
    };
    let now = secs(ctx.now);
    let obj = Object {
        size: rcv.size,
        crc: rcv.crc,
        nvme: None,
        etag: etag.clone(),
        last_modified: now,
        object_type: "Normal",
        storage_class: sc,
        headers,
        content: match rcv.segment {
            Some(s) => Content::Stored(vec![s]),
            None => Content::Discarded,
        },
    };
    w.oss
        .lock()
        .buckets
        .get_mut(ctx.bucket())
        .ok_or_else(|| internal("bucket vanished"))?
        .objects
        .insert(ctx.key.clone(), obj);
    let body = format!(
        "{}<CopyObjectResult>{}{}</CopyObjectResult>",
        xml::DECL,
        el("ETag", &quoted(&etag)),
        el("LastModified", &iso(now))
    );
    let (k, v) = crc_header(rcv.crc);
    Ok(response(200)
        .header("content-type", "application/xml")
        .header("etag", quoted(&etag))
        .header(k, v)
        .body(full(body))
        .expect("valid"))
}
