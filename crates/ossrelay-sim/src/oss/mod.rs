//! The OSS router: request context (addressing, operation name), the checks every operation
//! passes (pre-parse errors, injected faults, region, bucket existence, signature, ownership,
//! key rules), then dispatch to the handlers by operation.

mod body;
pub(crate) mod bucket;
pub(crate) mod common;
pub(crate) mod multipart;
pub(crate) mod object;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Method, Response};
use hyper::body::Incoming;

use crate::auth::{self, AuthError, AuthRequest, Principal};
use crate::config::FaultKind;
use crate::faults::FaultPlan;
use crate::reply::{response, xml_response, Body, ConnDrop};
use crate::world::oss::upper_hex;
use crate::world::World;
use crate::xml::{self, el, iso};
use body::drain;
use bucket::{bucket_info, get_lifecycle, list_buckets, list_objects, put_lifecycle};
use common::{decode_query, empty, invalid_argument, no_such_upload, Ctx, Fail, OssError, Res};
use multipart::{complete, initiate, list_parts, list_uploads, upload_part, upload_part_copy};
use object::{copy_object, get_object, put_object};

pub(crate) fn new_request_id() -> String {
    let r: [u8; 12] = rand::random();
    upper_hex(&r)
}

pub(crate) fn classify(
    method: &Method,
    bucket: bool,
    key: &str,
    q: &[(String, String)],
    copy: bool,
) -> &'static str {
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
            Method::GET if has("bucketInfo") => "GetBucketInfo",
            Method::GET if has("lifecycle") => "GetBucketLifecycle",
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET if q.iter().any(|(k, v)| k == "list-type" && v == "2") => "ListObjectsV2",
            Method::GET => "ListObjects",
            Method::PUT if has("lifecycle") => "PutBucketLifecycle",
            Method::DELETE if has("lifecycle") => "DeleteBucketLifecycle",
            _ => "Unsupported",
        };
    }
    match *method {
        Method::PUT if has("uploadId") && copy => "UploadPartCopy",
        Method::PUT if has("uploadId") => "UploadPart",
        Method::PUT if copy => "CopyObject",
        Method::PUT => "PutObject",
        Method::GET if has("uploadId") => "ListParts",
        Method::GET => "GetObject",
        Method::HEAD if has("objectMeta") => "GetObjectMeta",
        Method::HEAD => "HeadObject",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        Method::POST if has("uploads") => "InitiateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        _ => "Unsupported",
    }
}

/// Serves one OSS request (`host` without port, lower case; `bare` when it names no bucket).
pub(crate) async fn serve(
    w: &World,
    parts: http::request::Parts,
    body: Incoming,
    host: &str,
    bare: bool,
    reset: &Arc<AtomicBool>,
) -> Result<Response<Body>, ConnDrop> {
    let ctx = parse_ctx(w, &parts, host, bare);
    let plan = w.pick_fault(ctx.op);
    if let Some(p) = plan {
        tracing::debug!(op = ctx.op, fault = %p.kind, "injecting fault");
    }
    let result = run(w, &ctx, body, plan, reset).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(Fail::Oss(e)) => e.render(&ctx),
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
        "x-oss-request-id",
        HeaderValue::from_str(&ctx.request_id).expect("hex"),
    );
    h.insert(
        http::header::DATE,
        HeaderValue::from_str(&httpdate::fmt_http_date(w.now())).expect("date"),
    );
    h.insert(http::header::SERVER, HeaderValue::from_static("AliyunOSS"));
    w.stats.record(ctx.op, resp.status().as_str());
    tracing::debug!(
        op = ctx.op,
        bucket = ctx.bucket(),
        status = resp.status().as_u16(),
        request_id = %ctx.request_id,
        "request"
    );
    if !w.latency.is_zero() {
        tokio::time::sleep(w.latency).await;
    }
    Ok(resp)
}

pub(crate) fn parse_ctx(w: &World, parts: &http::request::Parts, host: &str, bare: bool) -> Ctx {
    let query = decode_query(parts.uri.query().unwrap_or(""));
    let path = parts.uri.path();
    let mut pre_error = None;
    let (bucket_raw, key_raw) = if bare {
        let p = path.strip_prefix('/').unwrap_or(path);
        match p.split_once('/') {
            Some((b, k)) => (Some(b.to_string()), k.to_string()),
            None => (Some(p.to_string()), String::new()),
        }
    } else {
        let b = host.split('.').next().unwrap_or_default().to_string();
        (Some(b), path.strip_prefix('/').unwrap_or(path).to_string())
    };
    let bucket = bucket_raw.filter(|b| !b.is_empty()).map(|b| {
        percent_encoding::percent_decode_str(&b)
            .decode_utf8_lossy()
            .into_owned()
    });
    let key = match percent_encoding::percent_decode_str(&key_raw).decode_utf8() {
        Ok(k) => k.into_owned(),
        Err(_) => {
            pre_error = Some(
                OssError::new(
                    400,
                    "InvalidObjectName",
                    "The object key is not valid UTF-8.",
                )
                .ec("0016-00000005"),
            );
            String::new()
        }
    };
    if bare && bucket.is_some() && w.reject_path_style {
        pre_error = Some(
            OssError::new(
                403,
                "SecondLevelDomainForbidden",
                "Please use virtual hosted style to access.",
            )
            .ec("0003-00000405"),
        );
    }
    let copy = parts.headers.contains_key("x-oss-copy-source");
    let op = classify(&parts.method, bucket.is_some(), &key, &query, copy);
    Ctx {
        request_id: new_request_id(),
        host_id: host.to_string(),
        method: parts.method.clone(),
        bucket,
        key,
        query,
        headers: parts.headers.clone(),
        op,
        now: w.now(),
        pre_error,
    }
}

pub(crate) fn authorize(w: &World, ctx: &Ctx) -> Result<Principal, OssError> {
    let req = AuthRequest {
        method: ctx.method.as_str(),
        bucket: ctx.bucket.as_deref(),
        key: &ctx.key,
        query: &ctx.query,
        headers: &ctx.headers,
    };
    auth::verify(&req, &w.region, ctx.now, &|ak| w.oss.key_info(ak)).map_err(|e| auth_error(e, ctx))
}

pub(crate) fn auth_error(e: AuthError, ctx: &Ctx) -> OssError {
    match e {
        AuthError::Anonymous => OssError::new(
            403,
            "AccessDenied",
            "You have no right to access this object because of bucket acl.",
        )
        .ec("0003-00000001"),
        AuthError::MissingDate => OssError::new(
            403,
            "AccessDenied",
            "OSS authentication requires a valid Date (or x-oss-date) header.",
        ),
        AuthError::InvalidAccessKeyId { ak } => OssError::new(
            403,
            "InvalidAccessKeyId",
            "The OSS Access Key Id you provided does not exist in our records.",
        )
        .with("OSSAccessKeyId", ak)
        .ec("0002-00000902"),
        AuthError::SecurityTokenExpired { ak } => OssError::new(
            403,
            "SecurityTokenExpired",
            "The security token you provided has expired.",
        )
        .with("OSSAccessKeyId", ak),
        AuthError::InvalidSecurityToken { ak } => OssError::new(
            403,
            "InvalidSecurityToken",
            "The security token you provided is invalid.",
        )
        .with("OSSAccessKeyId", ak),
        AuthError::SignatureDoesNotMatch {
            ak,
            provided,
            string_to_sign,
            canonical_request,
        } => {
            let bytes = string_to_sign
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(" ");
            let mut err = OssError::new(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            )
            .with("OSSAccessKeyId", ak)
            .with("SignatureProvided", provided)
            .with("StringToSign", string_to_sign)
            .with("StringToSignBytes", bytes);
            if let Some(c) = canonical_request {
                err = err.with("CanonicalRequest", c);
            }
            err.ec("0002-00000040")
        }
        AuthError::RequestTimeTooSkewed { request_time } => OssError::new(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )
        .with("RequestTime", iso(request_time))
        .with("ServerTime", iso(ctx.now))
        .with("MaxAllowedSkewMilliseconds", "900000")
        .ec("0002-00000504"),
        AuthError::PresignExpired { expires } => {
            OssError::new(403, "AccessDenied", "Request has expired.")
                .with("Expires", iso(expires))
                .with("ServerTime", iso(ctx.now))
                .ec("0002-00000069")
        }
        AuthError::InvalidArgument { message, ec } => invalid_argument(message).ec(ec),
    }
}

/// Region, existence, signature and ownership checks for a bucket request.
pub(crate) fn bucket_access(w: &World, ctx: &Ctx) -> Result<Principal, OssError> {
    let b = ctx.bucket();
    if let Some(region) = w.oss.remote.get(b) {
        return Err(OssError::new(
            403,
            "AccessDenied",
            "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
        )
        .with("Bucket", b)
        .with("Endpoint", format!("oss-{region}.aliyuncs.com"))
        .ec("0003-00001403"));
    }
    let owner = w.oss.lock().buckets.get(b).map(|bk| bk.account.clone());
    let Some(owner) = owner else {
        return Err(
            OssError::new(404, "NoSuchBucket", "The specified bucket does not exist.")
                .with("BucketName", b)
                .ec("0015-00000101"),
        );
    };
    let p = authorize(w, ctx)?;
    if p.account != owner {
        return Err(OssError::new(
            403,
            "AccessDenied",
            "You have no right to access this object because of bucket acl.",
        )
        .ec("0003-00000001"));
    }
    Ok(p)
}

pub(crate) async fn run(
    w: &World,
    ctx: &Ctx,
    body: Incoming,
    plan: Option<FaultPlan>,
    reset: &Arc<AtomicBool>,
) -> Res {
    if let Some(e) = ctx.pre_error.clone() {
        drain(w, body).await;
        return Err(e.into());
    }
    match plan.map(|p| p.kind) {
        Some(FaultKind::Error500) => {
            drain(w, body).await;
            return Err(OssError::new(
                500,
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
            .into());
        }
        Some(FaultKind::Slowdown) => {
            drain(w, body).await;
            return Err(
                OssError::new(503, "SlowDown", "Please reduce your request rate.")
                    .ec("0006-00000001")
                    .into(),
            );
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
    let principal = if ctx.bucket.is_some() {
        bucket_access(w, ctx)
    } else {
        authorize(w, ctx)
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            drain(w, body).await;
            return Err(e.into());
        }
    };
    if !ctx.key.is_empty() && (ctx.key.len() > 1023 || ctx.key.starts_with(['/', '\\'])) {
        drain(w, body).await;
        return Err(OssError::new(
            400,
            "InvalidObjectName",
            "The specified object is not valid: keys are 1-1023 bytes and must not start with '/' or '\\'.",
        )
        .ec("0016-00000005")
        .into());
    }
    match ctx.op {
        "ListBuckets" => list_buckets(w, ctx, &principal),
        "GetBucketLocation" => Ok(xml_response(format!(
            "{}{}",
            xml::DECL,
            el("LocationConstraint", &format!("oss-{}", w.region))
        ))),
        "GetBucketInfo" => bucket_info(w, ctx),
        "GetBucketLifecycle" => get_lifecycle(w, ctx),
        "PutBucketLifecycle" => put_lifecycle(w, ctx, body).await,
        "DeleteBucketLifecycle" => {
            if let Some(b) = w.oss.lock().buckets.get_mut(ctx.bucket()) {
                b.lifecycle = None;
            }
            Ok(response(204).body(empty()).expect("valid"))
        }
        "ListMultipartUploads" => list_uploads(w, ctx),
        "ListObjectsV2" | "ListObjects" => list_objects(w, ctx),
        "PutObject" => put_object(w, ctx, body, plan).await,
        "GetObject" | "HeadObject" | "GetObjectMeta" => get_object(w, ctx, plan, reset),
        "DeleteObject" => {
            if let Some(b) = w.oss.lock().buckets.get_mut(ctx.bucket()) {
                b.objects.remove(&ctx.key);
            }
            Ok(response(204).body(empty()).expect("valid"))
        }
        "InitiateMultipartUpload" => initiate(w, ctx),
        "UploadPart" => upload_part(w, ctx, body, plan).await,
        "CompleteMultipartUpload" => {
            // A reset here models a lost Complete response: the upload is completed, then
            // the connection drops before the client hears about it.
            let r = complete(w, ctx, body).await;
            match (r, plan.map(|p| p.kind)) {
                (Ok(_), Some(FaultKind::Reset)) => Err(Fail::Reset),
                (r, _) => r,
            }
        }
        "UploadPartCopy" => upload_part_copy(w, ctx, &principal).await,
        "CopyObject" => copy_object(w, ctx, &principal).await,
        "AbortMultipartUpload" => {
            let id = ctx.q("uploadId").unwrap_or_default();
            let mut st = w.oss.lock();
            match st.uploads.get(id) {
                Some(u) if u.bucket == ctx.bucket() && u.key == ctx.key => {
                    st.uploads.remove(id);
                    Ok(response(204).body(empty()).expect("valid"))
                }
                _ => Err(no_such_upload().into()),
            }
        }
        "ListParts" => list_parts(w, ctx),
        _ => {
            drain(w, body).await;
            Err(OssError::new(
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
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names() {
        let q = |s: &str| decode_query(s);
        assert_eq!(
            classify(
                &Method::PUT,
                true,
                "k",
                &q("partNumber=1&uploadId=X"),
                false
            ),
            "UploadPart"
        );
        assert_eq!(
            classify(&Method::POST, true, "k", &q("uploads"), false),
            "InitiateMultipartUpload"
        );
        assert_eq!(
            classify(&Method::POST, true, "k", &q("uploadId=X"), false),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            classify(&Method::DELETE, true, "k", &q("uploadId=X"), false),
            "AbortMultipartUpload"
        );
        assert_eq!(
            classify(&Method::GET, true, "k", &q("uploadId=X"), false),
            "ListParts"
        );
        assert_eq!(
            classify(&Method::GET, true, "", &q("uploads"), false),
            "ListMultipartUploads"
        );
        assert_eq!(
            classify(&Method::GET, true, "", &q("list-type=2"), false),
            "ListObjectsV2"
        );
        assert_eq!(
            classify(&Method::PUT, true, "", &q("lifecycle"), false),
            "PutBucketLifecycle"
        );
        assert_eq!(
            classify(&Method::GET, false, "", &q(""), false),
            "ListBuckets"
        );
        assert_eq!(
            classify(&Method::HEAD, true, "k", &q(""), false),
            "HeadObject"
        );
    }
}
