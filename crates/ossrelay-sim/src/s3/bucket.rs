//! Bucket and service operations of the S3 dialect: ListBuckets, HeadBucket,
//! GetBucketLocation, ListObjectsV2 (enough for SDK clients and the relay's probes).

use super::common::{etag_q, max_param, owner_id, xml_doc, Ctx, Res};
use crate::reply::{empty, response, xml_response};
use crate::sigv4::Verified;
use crate::world::World;
use crate::xml::{el, iso};

pub(crate) fn list_buckets(w: &World, auth: &Verified) -> Res {
    let st = w.oss.lock();
    let mut s = String::from("<Buckets>");
    for (name, b) in st.buckets.iter().filter(|(_, b)| b.account == auth.account) {
        s.push_str(&format!(
            "<Bucket>{}{}{}</Bucket>",
            el("Name", name),
            el("CreationDate", &iso(b.created)),
            el("BucketRegion", w.bucket_region(name))
        ));
    }
    s.push_str("</Buckets>");
    s.push_str(&format!(
        "<Owner>{}{}</Owner>",
        el("ID", &owner_id(&auth.account)),
        el("DisplayName", &auth.account)
    ));
    Ok(xml_response(xml_doc("ListAllMyBucketsResult", &s)))
}

pub(crate) fn head_bucket(w: &World, ctx: &Ctx) -> Res {
    Ok(response(200)
        .header("x-amz-bucket-region", w.bucket_region(ctx.bucket()))
        .body(empty())
        .expect("valid"))
}

/// `us-east-1` is an empty LocationConstraint, as S3 answers it.
pub(crate) fn location(w: &World, ctx: &Ctx) -> Res {
    let r = w.bucket_region(ctx.bucket());
    let r = if r == "us-east-1" { "" } else { r };
    Ok(xml_response(format!(
        "{}<LocationConstraint xmlns=\"{}\">{}</LocationConstraint>",
        crate::xml::DECL,
        super::common::NS,
        crate::xml::esc(r)
    )))
}

pub(crate) fn list_objects_v2(w: &World, ctx: &Ctx) -> Res {
    let max = max_param(ctx, "max-keys", 1000)?;
    let prefix = ctx.q("prefix").unwrap_or_default();
    let after = ctx
        .q("continuation-token")
        .or(ctx.q("start-after"))
        .unwrap_or_default()
        .to_string();
    let st = w.oss.lock();
    let Some(b) = st.buckets.get(ctx.bucket()) else {
        return Ok(response(404).body(empty()).expect("valid"));
    };
    let keys: Vec<_> = b
        .objects
        .range::<String, _>((
            std::ops::Bound::Excluded(after.clone()),
            std::ops::Bound::Unbounded,
        ))
        .filter(|(k, _)| k.starts_with(prefix))
        .take(max + 1)
        .collect();
    let truncated = keys.len() > max;
    let page = &keys[..keys.len().min(max)];
    let mut s = String::new();
    s.push_str(&el("Name", ctx.bucket()));
    s.push_str(&el("Prefix", prefix));
    s.push_str(&el("KeyCount", &page.len().to_string()));
    s.push_str(&el("MaxKeys", &max.to_string()));
    s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
    if let Some(t) = ctx.q("continuation-token") {
        s.push_str(&el("ContinuationToken", t));
    }
    if truncated {
        if let Some((k, _)) = page.last() {
            s.push_str(&el("NextContinuationToken", k));
        }
    }
    for (k, o) in page {
        s.push_str(&format!(
            "<Contents>{}{}{}{}{}</Contents>",
            el("Key", k),
            el("LastModified", &iso(o.last_modified)),
            el("ETag", &etag_q(&o.etag)),
            el("Size", &o.size.to_string()),
            el("StorageClass", &o.storage_class.to_ascii_uppercase()),
        ));
    }
    Ok(xml_response(xml_doc("ListBucketResult", &s)))
}
