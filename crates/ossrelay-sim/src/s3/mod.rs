//! The S3 router: addressing (virtual-hosted and path style, s3-protocol.md §1), operation
//! names, then the checks every operation passes (injected faults, bucket existence, regional
//! endpoint and signing region, SigV4, ownership), then dispatch to the handlers.
//!
//! Choices where S3 is undocumented or the reference is UNCONFIRMED: a Host that is neither
//! an IP, `localhost`, nor an S3 endpoint names the bucket by its first label (`bkt.localhost`)
//! unless the whole Host is a bucket (CNAME); the legacy global endpoint `s3.amazonaws.com`
//! serves buckets of every region (no redirect); SigV4 format errors are
//! `400 AuthorizationHeaderMalformed`; error elements follow s3-protocol.md §8.

mod body;
mod bucket;
pub(crate) mod common;
mod lifecycle;
mod multipart;
mod object;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Method, Response};
use hyper::body::Incoming;

use crate::config::FaultKind;
use crate::faults::FaultPlan;
use crate::reply::{Body, ConnDrop};
use crate::sigv4::{self, Expect, SigError, SigRequest, Verified};
use crate::world::World;
use crate::xml::iso;
use body::drain;
use common::{Ctx, Fail, Res, S3Error};

fn classify(method: &Method, bucket: bool, key: &str, q: &[(String, String)]) -> &'static str {
    let has = |n: &str| q.iter().any(|(k, _)| k == n);
    if !bucket {
        return if *method == Method::GET {
            "ListBuckets"
        } else {
            "Unsupported"
        };
    }
    if key.is_empty() {
        return match *method {
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("lifecycle") => "GetBucketLifecycleConfiguration",
            Method::PUT if has("lifecycle") => "PutBucketLifecycleConfiguration",
            Method::DELETE if has("lifecycle") => "DeleteBucketLifecycle",
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET => "ListObjectsV2",
            Method::HEAD => "HeadBucket",
            _ => "Unsupported",
        };
    }
    match *method {
        Method::PUT if has("uploadId") => "UploadPart",
        Method::PUT => "PutObject",
        Method::GET if has("uploadId") => "ListParts",
        Method::GET => "GetObject",
        Method::HEAD => "HeadObject",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        Method::POST if has("uploads") => "CreateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        _ => "Unsupported",
    }
}

/// `(bucket from Host, region named by Host)`; bucket `None` = path style.
fn addressing(w: &World, host: &str) -> (Option<String>, Option<String>) {
    if host.is_empty() || host == "localhost" || host.parse::<IpAddr>().is_ok() {
        return (None, None);
    }
    if host == "s3.amazonaws.com" {
        return (None, None);
    }
    if let Some(r) = host
        .strip_prefix("s3.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
    {
        return (None, Some(r.to_string()));
    }
    if let Some(b) = host.strip_suffix(".s3.amazonaws.com") {
        return (Some(b.to_string()), None);
    }
    if let Some((b, rest)) = host.split_once(".s3.") {
        if let Some(r) = rest.strip_suffix(".amazonaws.com") {
            return (Some(b.to_string()), Some(r.to_string()));
        }
    }
    if w.oss.lock().buckets.contains_key(host) {
        return (Some(host.to_string()), None);
    }
    (host.split('.').next().map(str::to_string), None)
}

fn new_id(n: usize) -> String {
    crate::world::aws::random_upper(n)
}

fn parse_ctx(w: &World, parts: &http::request::Parts, host: &str) -> Ctx {
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let query: Vec<(String, String)> = sigv4::raw_query_pairs(&raw_query)
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let (host_bucket, host_region) = addressing(w, host);
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (bucket, key) = match host_bucket {
        Some(b) => (
            Some(b),
            decode(raw_path.strip_prefix('/').unwrap_or(&raw_path)),
        ),
        None => {
            let p = raw_path.strip_prefix('/').unwrap_or(&raw_path);
            match p.split_once('/') {
                Some((b, k)) => (Some(decode(b)), decode(k)),
                None => (Some(decode(p)).filter(|b| !b.is_empty()), String::new()),
            }
        }
    };
    let op = classify(&parts.method, bucket.is_some(), &key, &query);
    Ctx {
        request_id: new_id(16),
        host_id: crate::sigv4::sha256_hex(new_id(16).as_bytes()),
        method: parts.method.clone(),
        bucket,
        key,
        raw_path,
        raw_query,
        query,
        headers: parts.headers.clone(),
        op,
        now: w.now(),
        host_region,
        quirks: w.quirks,
        cos: w.cos,
    }
}

/// Serves one S3 request (`host` without port, lower case).
pub(crate) async fn serve(
    w: &World,
    parts: http::request::Parts,
    body: Incoming,
    host: &str,
    reset: &Arc<AtomicBool>,
) -> Result<Response<Body>, ConnDrop> {
    let ctx = parse_ctx(w, &parts, host);
    let plan = w.pick_fault(ctx.op);
    let mut resp = match run(w, &ctx, body, plan, reset).await {
        Ok(r) => r,
        Err(Fail::S3(e)) => e.render(&ctx),
        Err(Fail::Reset) => {
            w.stats.record(ctx.op, "reset");
            reset.store(true, Ordering::Relaxed);
            return Err(ConnDrop);
        }
        Err(Fail::ClientGone) => {
            w.stats.record(ctx.op, "client_closed");
            return Err(ConnDrop);
        }
    };
    let h = resp.headers_mut();
    h.insert(
        "x-amz-request-id",
        HeaderValue::from_str(&ctx.request_id).expect("alnum"),
    );
    h.insert(
        "x-amz-id-2",
        HeaderValue::from_str(&ctx.host_id).expect("hex"),
    );
    h.insert(
        http::header::DATE,
        HeaderValue::from_str(&httpdate::fmt_http_date(w.now())).expect("date"),
    );
    h.insert(http::header::SERVER, HeaderValue::from_static("AmazonS3"));
    w.stats.record(ctx.op, resp.status().as_str());
    tracing::debug!(
        op = ctx.op,
        bucket = ctx.bucket(),
        status = resp.status().as_u16(),
        "s3 request"
    );
    if !w.latency.is_zero() {
        tokio::time::sleep(w.latency).await;
    }
    Ok(resp)
}

/// S3's answer to a refused signature.
fn sig_error(e: SigError, ctx: &Ctx) -> S3Error {
    let spaced = |s: &str| {
        s.as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match e {
        SigError::Anonymous => S3Error::new(403, "AccessDenied", "Access Denied"),
        SigError::Malformed(m) => S3Error::new(400, "AuthorizationHeaderMalformed", m),
        SigError::WrongService { signed, expected } => S3Error::new(
            400,
            "AuthorizationHeaderMalformed",
            format!("The authorization header is malformed; incorrect service \"{signed}\". This endpoint belongs to \"{expected}\"."),
        ),
        SigError::WrongRegion(r) => S3Error::new(
            400,
            "AuthorizationHeaderMalformed",
            format!("The authorization header is malformed; the region '{r}' is wrong."),
        ),
        SigError::InvalidAccessKeyId(ak) => S3Error::new(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
        .with("AWSAccessKeyId", ak),
        SigError::InvalidToken => S3Error::new(
            400,
            "InvalidToken",
            "The provided token is malformed or otherwise invalid.",
        ),
        SigError::ExpiredToken => {
            S3Error::new(400, "ExpiredToken", "The provided token has expired.")
        }
        SigError::SignatureDoesNotMatch {
            ak,
            provided,
            string_to_sign,
            canonical_request,
        } => S3Error::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        )
        .with("AWSAccessKeyId", ak)
        .with("StringToSign", string_to_sign.clone())
        .with("SignatureProvided", provided)
        .with("StringToSignBytes", spaced(&string_to_sign))
        .with("CanonicalRequest", canonical_request.clone())
        .with("CanonicalRequestBytes", spaced(&canonical_request)),
        SigError::TooSkewed { request_time } => S3Error::new(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
        .with("RequestTime", iso(request_time))
        .with("ServerTime", iso(ctx.now))
        .with("MaxAllowedSkewMilliseconds", "900000"),
        SigError::Expired { expires, seconds } => {
            S3Error::new(403, "AccessDenied", "Request has expired")
                .with("X-Amz-Expires", seconds.to_string())
                .with("Expires", iso(expires))
                .with("ServerTime", iso(ctx.now))
        }
    }
}

/// Region checks, then the signature.
fn authenticate(w: &World, ctx: &Ctx) -> Result<Verified, S3Error> {
    let req = SigRequest {
        method: ctx.method.as_str(),
        raw_path: &ctx.raw_path,
        raw_query: &ctx.raw_query,
        headers: &ctx.headers,
    };
    if ctx.bucket.is_some() {
        let region = w.bucket_region(ctx.bucket());
        if let Some(hr) = &ctx.host_region {
            if hr != region {
                return Err(S3Error::new(
                    301,
                    "PermanentRedirect",
                    "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
                )
                .with("Endpoint", format!("{}.s3.{region}.amazonaws.com", ctx.bucket()))
                .with("Bucket", ctx.bucket())
                .header("x-amz-bucket-region", region));
            }
        }
        if let Some(sr) = sigv4::scope_region(&req) {
            if sr != region {
                return Err(S3Error::new(
                    400,
                    "AuthorizationHeaderMalformed",
                    format!("The authorization header is malformed; the region '{sr}' is wrong; expecting '{region}'"),
                )
                .with("Region", region)
                .header("x-amz-bucket-region", region));
            }
        }
    }
    let payload = match (ctx.h("authorization"), ctx.h("x-amz-content-sha256")) {
        (Some(_), None) => {
            return Err(S3Error::new(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            ))
        }
        (_, p) => p.unwrap_or("UNSIGNED-PAYLOAD"),
    };
    let exp = Expect {
        service: "s3",
        region: None,
        payload,
        normalize: false,
    };
    sigv4::verify(&req, &exp, ctx.now, &|ak| w.key_lookup(ak)).map_err(|e| sig_error(e, ctx))
}

async fn run(
    w: &World,
    ctx: &Ctx,
    body: Incoming,
    plan: Option<FaultPlan>,
    reset: &Arc<AtomicBool>,
) -> Res {
    match plan.map(|p| p.kind) {
        Some(FaultKind::Error500) => {
            drain(w, body).await;
            return Err(common::internal_error().into());
        }
        Some(FaultKind::Slowdown) => {
            drain(w, body).await;
            return Err(S3Error::new(503, "SlowDown", "Please reduce your request rate.").into());
        }
        Some(FaultKind::Reset)
            if !matches!(
                ctx.op,
                "GetObject" | "PutObject" | "UploadPart" | "CompleteMultipartUpload"
            ) =>
        {
            return Err(Fail::Reset);
        }
        _ => {}
    }
    if ctx.bucket.is_some() {
        let owner = w
            .oss
            .lock()
            .buckets
            .get(ctx.bucket())
            .map(|b| b.account.clone());
        let Some(owner) = owner else {
            drain(w, body).await;
            return Err(
                S3Error::new(404, "NoSuchBucket", "The specified bucket does not exist")
                    .with("BucketName", ctx.bucket())
                    .into(),
            );
        };
        let auth = match authenticate(w, ctx) {
            Ok(a) => a,
            Err(e) => {
                drain(w, body).await;
                return Err(e.into());
            }
        };
        if auth.account != owner {
            drain(w, body).await;
            return Err(S3Error::new(403, "AccessDenied", "Access Denied").into());
        }
        return dispatch(w, ctx, &auth, body, plan, reset).await;
    }
    let auth = match authenticate(w, ctx) {
        Ok(a) => a,
        Err(e) => {
            drain(w, body).await;
            return Err(e.into());
        }
    };
    match ctx.op {
        "ListBuckets" => bucket::list_buckets(w, &auth),
        _ => {
            drain(w, body).await;
            Err(not_implemented(ctx).into())
        }
    }
}

/// Quirks mode refuses aws-chunked bodies, as OSS's S3 mode, OBS and COS do (s3-protocol.md
/// §10: "aws-chunked encoding is not supported"). The code is S3's own for a header naming
/// functionality a server lacks (`501 NotImplemented`, with `<Header>`); the stores' own codes
/// differ and are UNCONFIRMED, and a client that never sends aws-chunked meets none of them.
/// Default S3 mode accepts these bodies (current AWS SDKs send them).
fn refused_encoding(ctx: &Ctx) -> Option<S3Error> {
    if !ctx.quirks {
        return None;
    }
    let chunked = ctx.h("content-encoding").is_some_and(|v| {
        v.split(',')
            .any(|e| e.trim().eq_ignore_ascii_case("aws-chunked"))
    });
    let streaming = ctx
        .h("x-amz-content-sha256")
        .is_some_and(|v| v.starts_with("STREAMING-"));
    let header = match (chunked, streaming) {
        (true, _) => "Content-Encoding",
        (false, true) => "x-amz-content-sha256",
        (false, false) => return None,
    };
    Some(
        S3Error::new(
            501,
            "NotImplemented",
            "A header you provided implies functionality that is not implemented: aws-chunked encoding is not supported.",
        )
        .with("Header", header),
    )
}

fn not_implemented(ctx: &Ctx) -> S3Error {
    S3Error::new(
        501,
        "NotImplemented",
        format!(
            "The simulator does not implement this operation ({} with query {:?}).",
            ctx.method,
            ctx.query
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
        ),
    )
}

async fn dispatch(
    w: &World,
    ctx: &Ctx,
    auth: &Verified,
    body: Incoming,
    plan: Option<FaultPlan>,
    reset: &Arc<AtomicBool>,
) -> Res {
    if !ctx.key.is_empty() && ctx.key.len() > 1024 {
        drain(w, body).await;
        return Err(S3Error::new(400, "KeyTooLongError", "Your key is too long").into());
    }
    if let Some(e) = refused_encoding(ctx) {
        drain(w, body).await;
        return Err(e.into());
    }
    match ctx.op {
        "GetBucketLocation" => bucket::location(w, ctx),
        "HeadBucket" => bucket::head_bucket(w, ctx),
        "ListObjectsV2" => bucket::list_objects_v2(w, ctx),
        "ListMultipartUploads" => multipart::list_uploads(w, ctx),
        "GetBucketLifecycleConfiguration" => lifecycle::get(w, ctx),
        "PutBucketLifecycleConfiguration" => lifecycle::put(w, ctx, body).await,
        "DeleteBucketLifecycle" => lifecycle::delete(w, ctx),
        "PutObject" => object::put_object(w, ctx, auth, body, plan).await,
        "GetObject" | "HeadObject" => object::get_object(w, ctx, plan, reset),
        "DeleteObject" => object::delete_object(w, ctx),
        "CreateMultipartUpload" => multipart::create(w, ctx),
        "UploadPart" => multipart::upload_part(w, ctx, auth, body, plan).await,
        "CompleteMultipartUpload" => multipart::complete(w, ctx, body, plan).await,
        "AbortMultipartUpload" => multipart::abort(w, ctx),
        "ListParts" => multipart::list_parts(w, ctx),
        _ => {
            drain(w, body).await;
            Err(not_implemented(ctx).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    #[test]
    fn operation_names_and_addressing() {
        let q = |s: &str| {
            sigv4::raw_query_pairs(s)
                .into_iter()
                .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            classify(&Method::POST, true, "k", &q("uploads")),
            "CreateMultipartUpload"
        );
        assert_eq!(
            classify(&Method::PUT, true, "k", &q("partNumber=1&uploadId=x")),
            "UploadPart"
        );
        assert_eq!(
            classify(&Method::GET, true, "", &q("uploads")),
            "ListMultipartUploads"
        );
        assert_eq!(classify(&Method::HEAD, true, "", &q("")), "HeadBucket");
        assert_eq!(
            classify(&Method::PUT, true, "", &q("lifecycle")),
            "PutBucketLifecycleConfiguration"
        );
        assert_eq!(
            classify(&Method::GET, true, "", &q("lifecycle=")),
            "GetBucketLifecycleConfiguration"
        );
        let w = World::new(&SimConfig::default()).unwrap();
        assert_eq!(addressing(&w, "127.0.0.1"), (None, None));
        assert_eq!(addressing(&w, "localhost"), (None, None));
        assert_eq!(
            addressing(&w, "s3.eu-west-1.amazonaws.com"),
            (None, Some("eu-west-1".into()))
        );
        assert_eq!(
            addressing(&w, "bkt.s3.eu-west-1.amazonaws.com"),
            (Some("bkt".into()), Some("eu-west-1".into()))
        );
        assert_eq!(
            addressing(&w, "bkt.s3.amazonaws.com"),
            (Some("bkt".into()), None)
        );
        assert_eq!(addressing(&w, "bkt.localhost"), (Some("bkt".into()), None));
    }
}
