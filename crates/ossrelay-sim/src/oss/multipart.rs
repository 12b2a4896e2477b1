//! Multipart operations: InitiateMultipartUpload, UploadPart, UploadPartCopy,
//! CompleteMultipartUpload (part list validation, multipart ETag, whole-object CRC-64 folded
//! from the parts'), ListParts and ListMultipartUploads. (AbortMultipartUpload is in the router.)

use std::collections::BTreeMap;

use base64::Engine as _;
use hyper::body::Incoming;
use md5::{Digest as _, Md5};

use super::body::{copy_bytes, copy_source, drain, read_small, receive};
use super::common::{
    check_forbid_overwrite, check_md5, crc_header, declared_length, discard_etag, full, internal,
    invalid_argument, kept_headers, malformed_xml, max_param, missing_length, no_such_upload,
    parse_content_md5, part_number, quoted, storage_class, traffic_limit, upload_matches, Ctx,
    OssError, Res, MAX_PUT, MIN_PART,
};
use crate::auth::Principal;
use crate::crc64;
use crate::faults::{body_fault, FaultPlan};
use crate::reply::{empty, response, xml_response};
use crate::store::Content;
use crate::world::oss::{secs, upper_hex, Object, Part, Upload};
use crate::world::World;
use crate::xml::{self, el, iso};

/// Why a CompleteMultipartUpload part list was refused, in the order OSS checks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CompleteError {
    Order,
    Part(u32),
    TooSmall(u32),
}

/// Checks a part list against the uploaded parts: order, then existence/ETag, then sizes.
pub(crate) fn validate_complete(
    listed: &[(u32, String)],
    uploaded: &BTreeMap<u32, (u64, String)>,
) -> Result<(), CompleteError> {
    let mut prev = 0u32;
    for (n, _) in listed {
        if *n <= prev || *n > 10_000 {
            return Err(CompleteError::Order);
        }
        prev = *n;
    }
    for (n, etag) in listed {
        match uploaded.get(n) {
            Some((_, e)) if e.eq_ignore_ascii_case(etag.trim_matches('"')) => {}
            _ => return Err(CompleteError::Part(*n)),
        }
    }
    for (n, _) in listed.iter().take(listed.len().saturating_sub(1)) {
        if uploaded[n].0 < MIN_PART {
            return Err(CompleteError::TooSmall(*n));
        }
    }
    Ok(())
}

fn multipart_etag(part_etags: &[&str]) -> String {
    let mut m = Md5::new();
    for e in part_etags {
        match hex::decode(e) {
            Ok(b) => m.update(&b),
            Err(_) => m.update(e.as_bytes()),
        }
    }
    format!("{}-{}", upper_hex(&m.finalize()), part_etags.len())
}

pub(crate) fn initiate(w: &World, ctx: &Ctx) -> Res {
    let sc = storage_class(&ctx.headers)?;
    check_forbid_overwrite(w, ctx, "0042-00000214")?;
    let id = {
        let r: [u8; 16] = rand::random();
        upper_hex(&r)
    };
    {
        let mut st = w.oss.lock();
        st.seq += 1;
        let seq = st.seq;
        st.uploads.insert(
            id.clone(),
            Upload {
                bucket: ctx.bucket().to_string(),
                key: ctx.key.clone(),
                initiated: secs(ctx.now),
                seq,
                storage_class: sc,
                headers: kept_headers(&ctx.headers, &ctx.key),
                parts: BTreeMap::new(),
                checksum: None,
            },
        );
    }
    let mut s = format!("{}<InitiateMultipartUploadResult>", xml::DECL);
    if ctx.url_encoding() {
        s.push_str(&el("EncodingType", "url"));
    }
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("Key", &ctx.enc(&ctx.key)));
    s.push_str(&el("UploadId", &id));
    s.push_str("</InitiateMultipartUploadResult>");
    Ok(xml_response(s))
}

pub(crate) async fn upload_part_copy(w: &World, ctx: &Ctx, p: &Principal) -> Res {
    let number = part_number(ctx)?;
    let id = upload_matches(w, ctx).map_err(|e| e.ec("0042-00000311"))?;
    let (src, start, end) = copy_source(w, ctx, p, true)?;
    if end - start > MAX_PUT {
        return Err(OssError::new(400, "EntityTooLarge", "A part may not exceed 5 GiB.").into());
    }
    let discard = w.oss.is_discard(ctx.bucket());
    let rcv = copy_bytes(w, src.content, start, end, discard).await?;
    let etag = match rcv.md5 {
        Some(m) => upper_hex(&m),
        None => discard_etag(rcv.crc, rcv.size),
    };
    let now = secs(ctx.now);
    {
        let mut st = w.oss.lock();
        let u = st
            .uploads
            .get_mut(&id)
            .ok_or_else(|| no_such_upload().ec("0042-00000311"))?;
        u.parts.insert(
            number,
            Part {
                size: rcv.size,
                crc: rcv.crc,
                nvme: None,
                checksum: None,
                etag: etag.clone(),
                last_modified: now,
                data: rcv.segment,
            },
        );
    }
    let body = format!(
        "{}<CopyPartResult>{}{}</CopyPartResult>",
        xml::DECL,
        el("LastModified", &iso(now)),
        el("ETag", &quoted(&etag))
    );
    let (k, v) = crc_header(rcv.crc);
    Ok(response(200)
        .header("content-type", "application/xml")
        .header("etag", quoted(&etag))
        .header(k, v)
        .body(full(body))
        .expect("valid"))
}

pub(crate) async fn upload_part(
    w: &World,
    ctx: &Ctx,
    body: Incoming,
    plan: Option<FaultPlan>,
) -> Res {
    let pre = (|| -> Result<_, OssError> {
        missing_length(ctx)?;
        let number = part_number(ctx)?;
        if ctx
            .h("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_PUT)
        {
            return Err(OssError::new(
                400,
                "EntityTooLarge",
                "A part may not exceed 5 GiB.",
            ));
        }
        let id = upload_matches(w, ctx).map_err(|e| e.ec("0042-00000104"))?;
        Ok((number, id, parse_content_md5(ctx)?, traffic_limit(ctx)?))
    })();
    let (number, id, expected_md5, limit) = match pre {
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
    {
        let mut st = w.oss.lock();
        let u = st
            .uploads
            .get_mut(&id)
            .ok_or_else(|| no_such_upload().ec("0042-00000104"))?;
        u.parts.insert(
            number,
            Part {
                size: rcv.size,
                crc: rcv.crc,
                nvme: None,
                checksum: None,
                etag: etag.clone(),
                last_modified: secs(ctx.now),
                data: rcv.segment,
            },
        );
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

pub(crate) async fn complete(w: &World, ctx: &Ctx, body: Incoming) -> Res {
    let data = read_small(w, body, 8 << 20).await?;
    let all = ctx
        .h("x-oss-complete-all")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    if all && !data.is_empty() {
        return Err(
            invalid_argument("Should not speficy both complete all header and http body.")
                .ec("0042-00000216")
                .into(),
        );
    }
    let id = upload_matches(w, ctx)?;
    let listed: Vec<(u32, String)> = if all {
        let st = w.oss.lock();
        let u = st.uploads.get(&id).ok_or_else(no_such_upload)?;
        u.parts.iter().map(|(n, p)| (*n, p.etag.clone())).collect()
    } else {
        match xml::parse_complete(&data) {
            Some(p) if !p.is_empty() => p.into_iter().map(|p| (p.number, p.etag)).collect(),
            _ => return Err(malformed_xml().into()),
        }
    };
    check_forbid_overwrite(w, ctx, "0042-00000214")?;
    let obj = {
        let mut st = w.oss.lock();
        let u = st.uploads.get(&id).ok_or_else(no_such_upload)?;
        let uploaded: BTreeMap<u32, (u64, String)> = u
            .parts
            .iter()
            .map(|(n, p)| (*n, (p.size, p.etag.clone())))
            .collect();
        if listed.is_empty() {
            return Err(malformed_xml().into());
        }
        match validate_complete(&listed, &uploaded) {
            Ok(()) => {}
            Err(CompleteError::Order) => {
                return Err(OssError::new(
                    400,
                    "InvalidPartOrder",
                    "The list of parts was not in ascending order. Parts must be ordered by part number.",
                )
                .ec("0042-00000209")
                .into())
            }
            Err(CompleteError::Part(n)) => {
                return Err(OssError::new(
                    400,
                    "InvalidPart",
                    "One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag",
                )
                .with("PartNumber", n.to_string())
                .ec("0042-00000210")
                .into())
            }
            Err(CompleteError::TooSmall(n)) => {
                return Err(OssError::new(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size: every part except the last must be at least 100 KiB.",
                )
                .with("PartNumber", n.to_string())
                .with("MinSizeAllowed", MIN_PART.to_string())
                .ec("0042-00000213")
                .into())
            }
        }
        let parts: Vec<Part> = listed.iter().map(|(n, _)| u.parts[n].clone()).collect();
        let size = parts.iter().map(|p| p.size).sum();
        let crc = crc64::combine_all(parts.iter().map(|p| (p.crc, p.size)));
        let etags: Vec<&str> = parts.iter().map(|p| p.etag.as_str()).collect();
        let etag = multipart_etag(&etags);
        let content = if parts.iter().all(|p| p.data.is_some()) {
            Content::Stored(parts.iter().filter_map(|p| p.data.clone()).collect())
        } else {
            Content::Discarded
        };
        let obj = Object {
            size,
            crc,
            nvme: None,
            etag,
            last_modified: secs(ctx.now),
            object_type: "Multipart",
            storage_class: u.storage_class.clone(),
            headers: u.headers.clone(),
            content,
        };
        let b = st
            .buckets
            .get_mut(ctx.bucket())
            .ok_or_else(|| internal("bucket vanished"))?;
        b.objects.insert(ctx.key.clone(), obj.clone());
        st.uploads.remove(&id);
        obj
    };
    let mut s = format!("{}<CompleteMultipartUploadResult>", xml::DECL);
    if ctx.url_encoding() {
        s.push_str(&el("EncodingType", "url"));
    }
    s.push_str(&el(
        "Location",
        &format!(
            "http://{}.oss-{}.aliyuncs.com/{}",
            ctx.bucket(),
            w.region,
            ctx.enc(&ctx.key)
        ),
    ));
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("Key", &ctx.enc(&ctx.key)));
    s.push_str(&el("ETag", &quoted(&obj.etag)));
    s.push_str("</CompleteMultipartUploadResult>");
    let (k, v) = crc_header(obj.crc);
    Ok(response(200)
        .header("content-type", "application/xml")
        .header("etag", quoted(&obj.etag))
        .header(k, v)
        .body(full(s))
        .expect("valid"))
}

pub(crate) fn list_parts(w: &World, ctx: &Ctx) -> Res {
    let max = max_param(ctx, "max-parts", 1000, 1000)?;
    let marker: u32 = match ctx.q("part-number-marker") {
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| {
            invalid_argument("part-number-marker must be an integer.")
                .with("ArgumentName", "part-number-marker")
                .with("ArgumentValue", v)
        })?,
    };
    let id = upload_matches(w, ctx)?;
    let st = w.oss.lock();
    let u = st.uploads.get(&id).ok_or_else(no_such_upload)?;
    let selected: Vec<(&u32, &Part)> = u
        .parts
        .range((
            std::ops::Bound::Excluded(marker),
            std::ops::Bound::Unbounded,
        ))
        .take(max + 1)
        .collect();
    let truncated = selected.len() > max;
    let page = &selected[..selected.len().min(max)];
    let next = page.last().map(|(n, _)| **n).unwrap_or(marker);
    let mut s = format!("{}<ListPartsResult>", xml::DECL);
    if ctx.url_encoding() {
        s.push_str(&el("EncodingType", "url"));
    }
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("Key", &ctx.enc(&ctx.key)));
    s.push_str(&el("UploadId", &id));
    s.push_str(&el("StorageClass", &u.storage_class));
    s.push_str(&el("PartNumberMarker", &marker.to_string()));
    s.push_str(&el("NextPartNumberMarker", &next.to_string()));
    s.push_str(&el("MaxParts", &max.to_string()));
    s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
    for (n, p) in page {
        s.push_str(&format!(
            "<Part>{}{}{}{}{}</Part>",
            el("PartNumber", &n.to_string()),
            el("LastModified", &iso(p.last_modified)),
            el("ETag", &quoted(&p.etag)),
            el("HashCrc64ecma", &p.crc.to_string()),
            el("Size", &p.size.to_string()),
        ));
    }
    s.push_str("</ListPartsResult>");
    Ok(xml_response(s))
}

pub(crate) fn list_uploads(w: &World, ctx: &Ctx) -> Res {
    let max = max_param(ctx, "max-uploads", 1000, 1000)?;
    let prefix = ctx.q("prefix").unwrap_or_default();
    let delimiter = ctx.q("delimiter").unwrap_or_default();
    let key_marker = ctx.q("key-marker").unwrap_or_default();
    let id_marker = ctx.q("upload-id-marker").unwrap_or_default();
    let st = w.oss.lock();
    let mut all: Vec<(&String, &Upload)> = st
        .uploads
        .iter()
        .filter(|(_, u)| u.bucket == ctx.bucket() && u.key.starts_with(prefix))
        .collect();
    all.sort_by(|a, b| a.1.key.cmp(&b.1.key).then(a.1.seq.cmp(&b.1.seq)));
    let marker_seq = (!key_marker.is_empty() && !id_marker.is_empty())
        .then(|| st.uploads.get(id_marker).filter(|u| u.key == key_marker))
        .flatten()
        .map(|u| u.seq);
    let after = |u: &Upload, id: &str| -> bool {
        if key_marker.is_empty() {
            return true;
        }
        match (u.key.as_str().cmp(key_marker), marker_seq) {
            (std::cmp::Ordering::Greater, _) => true,
            (std::cmp::Ordering::Equal, Some(seq)) => u.seq > seq,
            (std::cmp::Ordering::Equal, None) => !id_marker.is_empty() && id > id_marker,
            _ => false,
        }
    };
    let mut uploads = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut last: Option<(String, String)> = None;
    for (id, u) in all.into_iter().filter(|(id, u)| after(u, id)) {
        if uploads.len() + prefixes.len() >= max {
            truncated = true;
            break;
        }
        if !delimiter.is_empty() {
            if let Some(i) = u.key[prefix.len()..].find(delimiter) {
                let cp = u.key[..prefix.len() + i + delimiter.len()].to_string();
                if prefixes.last() != Some(&cp) {
                    prefixes.push(cp);
                }
                last = Some((u.key.clone(), id.clone()));
                continue;
            }
        }
        uploads.push((id, u));
        last = Some((u.key.clone(), id.clone()));
    }
    let (next_key, next_id) = last.unwrap_or_default();
    let mut s = format!("{}<ListMultipartUploadsResult>", xml::DECL);
    if ctx.url_encoding() {
        s.push_str(&el("EncodingType", "url"));
    }
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("KeyMarker", &ctx.enc(key_marker)));
    s.push_str(&el("UploadIdMarker", id_marker));
    s.push_str(&el("NextKeyMarker", &ctx.enc(&next_key)));
    s.push_str(&el("NextUploadIdMarker", &next_id));
    s.push_str(&el("Delimiter", &ctx.enc(delimiter)));
    s.push_str(&el("Prefix", &ctx.enc(prefix)));
    s.push_str(&el("MaxUploads", &max.to_string()));
    s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
    for (id, u) in &uploads {
        s.push_str(&format!(
            "<Upload>{}{}{}{}</Upload>",
            el("Key", &ctx.enc(&u.key)),
            el("UploadId", id),
            el("StorageClass", &u.storage_class),
            el("Initiated", &iso(u.initiated)),
        ));
    }
    for p in &prefixes {
        s.push_str(&format!(
            "<CommonPrefixes>{}</CommonPrefixes>",
            el("Prefix", &ctx.enc(p))
        ));
    }
    s.push_str("</ListMultipartUploadsResult>");
    Ok(xml_response(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uploaded(parts: &[(u32, u64, &str)]) -> BTreeMap<u32, (u64, String)> {
        parts
            .iter()
            .map(|(n, s, e)| (*n, (*s, e.to_string())))
            .collect()
    }

    fn l(parts: &[(u32, &str)]) -> Vec<(u32, String)> {
        parts.iter().map(|(n, e)| (*n, e.to_string())).collect()
    }

    #[test]
    fn complete_validation_order() {
        let up = uploaded(&[(1, 10, "A"), (2, 200_000, "B"), (3, 5, "C")]);
        // Order is checked before existence and size: part 1 is too small and 9 is missing.
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (9, "X"), (3, "C"), (2, "B")]), &up),
            Err(CompleteError::Order)
        );
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (1, "A")]), &up),
            Err(CompleteError::Order)
        );
        assert_eq!(
            validate_complete(&l(&[(10_001, "A")]), &up),
            Err(CompleteError::Order)
        );
        // Existence/ETag before size.
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (2, "WRONG")]), &up),
            Err(CompleteError::Part(2))
        );
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (4, "D")]), &up),
            Err(CompleteError::Part(4))
        );
        assert_eq!(
            validate_complete(&l(&[(1, "A"), (2, "B")]), &up),
            Err(CompleteError::TooSmall(1))
        );
        // Last listed part may be small; gaps are allowed; quotes and case are ignored.
        assert_eq!(
            validate_complete(&l(&[(2, "\"b\""), (3, "C")]), &up),
            Ok(())
        );
        assert_eq!(validate_complete(&l(&[(1, "A")]), &up), Ok(()));
    }

    #[test]
    fn multipart_etag_form() {
        let e = multipart_etag(&[
            "D41D8CD98F00B204E9800998ECF8427E",
            "D41D8CD98F00B204E9800998ECF8427E",
        ]);
        assert!(e.ends_with("-2"));
        assert_eq!(e.len(), 34);
        assert!(e[..32]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
    }
}
