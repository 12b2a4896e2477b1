//! Multipart operations of the S3 dialect: CreateMultipartUpload, UploadPart, ListParts,
//! CompleteMultipartUpload (validation in the order of s3-protocol.md §5, `-N` ETag, the
//! FULL_OBJECT CRC-64/NVME folded from the parts' and checked against the client's),
//! AbortMultipartUpload and ListMultipartUploads (which first aborts the uploads the bucket's
//! lifecycle rules have expired, see `lifecycle`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use hyper::body::Incoming;
use md5::{Digest as _, Md5};

use super::body::{drain, read_small, receive};
use super::common::{
    bad_digest, discard_etag, empty, etag_q, full, internal, invalid_request, kept_headers,
    malformed_xml, max_param, no_such_upload, nvme_b64, owner_id, parse_content_md5, part_number,
    xml_doc, Ctx, Fail, Res, S3Error, MAX_PUT, MIN_PART,
};
use crate::config::FaultKind;
use crate::crc64;
use crate::faults::{body_fault, FaultPlan};

use crate::reply::{response, stream_body, xml_response};
use crate::sigv4::Verified;
use crate::store::Content;
use crate::world::oss::{secs, upper_hex, Object, Part, Upload};
use crate::world::World;
use crate::xml::{self, el, iso};

/// Why a part list was refused, in the order S3 checks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CompleteError {
    Order,
    Part(u32),
    TooSmall(u32, u64),
}

/// Order, then existence / ETag, then sizes (every part but the last ≥ 5 MiB).
pub(crate) fn validate(
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
            return Err(CompleteError::TooSmall(*n, uploaded[n].0));
        }
    }
    Ok(())
}

/// MD5 of the binary part MD5s, `-N`.
pub(crate) fn multipart_etag(part_etags: &[&str]) -> String {
    let mut m = Md5::new();
    for e in part_etags {
        match hex::decode(e) {
            Ok(b) => m.update(&b),
            Err(_) => m.update(e.as_bytes()),
        }
    }
    format!("{}-{}", upper_hex(&m.finalize()), part_etags.len())
}

fn upload_of(w: &World, ctx: &Ctx) -> Result<String, S3Error> {
    let id = ctx.q("uploadId").unwrap_or_default().to_string();
    let st = w.oss.lock();
    match st.uploads.get(&id) {
        Some(u) if u.bucket == ctx.bucket() && u.key == ctx.key => Ok(id),
        _ => Err(no_such_upload(&id)),
    }
}

pub(crate) fn create(w: &World, ctx: &Ctx) -> Res {
    let checksum = if ctx.quirks {
        None
    } else {
        let alg = ctx
            .h("x-amz-checksum-algorithm")
            .map(str::to_ascii_uppercase);
        let ty = ctx.h("x-amz-checksum-type").map(str::to_ascii_uppercase);
        match (alg, ty) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid_request(
                    "x-amz-checksum-type requires x-amz-checksum-algorithm.",
                )
                .into())
            }
            (Some(a), t) => {
                let t = t.unwrap_or_else(|| {
                    if a == "CRC64NVME" {
                        "FULL_OBJECT"
                    } else {
                        "COMPOSITE"
                    }
                    .to_string()
                });
                let ok = match a.as_str() {
                    "CRC64NVME" => t == "FULL_OBJECT",
                    "CRC32" | "CRC32C" => t == "FULL_OBJECT" || t == "COMPOSITE",
                    "SHA1" | "SHA256" => t == "COMPOSITE",
                    _ => false,
                };
                if !ok {
                    return Err(invalid_request(format!(
                        "The {t} checksum type cannot be used with the {a} checksum algorithm."
                    ))
                    .into());
                }
                Some((a, t))
            }
        }
    };
    let id = {
        let r: [u8; 24] = rand::random();
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, r)
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
                storage_class: ctx
                    .h("x-amz-storage-class")
                    .unwrap_or("STANDARD")
                    .to_string(),
                headers: kept_headers(&ctx.headers),
                parts: BTreeMap::new(),
                checksum: checksum.clone(),
            },
        );
    }
    let body = xml_doc(
        "InitiateMultipartUploadResult",
        &format!(
            "{}{}{}",
            el("Bucket", ctx.bucket()),
            el("Key", &ctx.key),
            el("UploadId", &id)
        ),
    );
    let mut r = response(200).header("content-type", "application/xml");
    if let Some((a, t)) = &checksum {
        r = r
            .header("x-amz-checksum-algorithm", a.as_str())
            .header("x-amz-checksum-type", t.as_str());
    }
    Ok(r.body(full(body)).expect("valid"))
}

pub(crate) async fn upload_part(
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
    let pre = (|| -> Result<_, S3Error> {
        let n = part_number(ctx)?;
        if len > MAX_PUT {
            return Err(S3Error::new(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
            ));
        }
        let id = upload_of(w, ctx)?;
        Ok((n, id, parse_content_md5(ctx)?))
    })();
    let (number, id, expected) = match pre {
        Ok(x) => x,
        Err(e) => {
            drain(w, body).await;
            return Err(e.into());
        }
    };
    let discard = w.oss.is_discard(ctx.bucket());
    let rcv = receive(w, ctx, auth, body, discard, expected, body_fault(plan, len)).await?;
    let etag = match rcv.md5 {
        Some(m) => upper_hex(&m),
        None => discard_etag(rcv.crc, rcv.size),
    };
    let alg = {
        let mut st = w.oss.lock();
        let u = st.uploads.get_mut(&id).ok_or_else(|| no_such_upload(&id))?;
        let alg = u.checksum.as_ref().map(|(a, _)| a.to_ascii_lowercase());
        let checksum = alg.as_deref().and_then(|a| {
            rcv.checksums
                .iter()
                .find(|(x, _)| x == a)
                .map(|(_, v)| v.clone())
                .or_else(|| (a == "crc64nvme").then(|| rcv.nvme.map(nvme_b64)).flatten())
        });
        u.parts.insert(
            number,
            Part {
                size: rcv.size,
                crc: rcv.crc,
                nvme: rcv.nvme,
                checksum,
                etag: etag.clone(),
                last_modified: secs(ctx.now),
                data: rcv.segment,
            },
        );
        alg
    };
    let mut r = response(200).header("etag", etag_q(&etag));
    for (a, v) in &rcv.checksums {
        r = r.header(format!("x-amz-checksum-{a}"), v.as_str());
    }
    if alg.as_deref() == Some("crc64nvme") && !rcv.checksums.iter().any(|(a, _)| a == "crc64nvme") {
        if let Some(n) = rcv.nvme {
            r = r.header("x-amz-checksum-crc64nvme", nvme_b64(n));
        }
    }
    if ctx.cos {
        r = r.header("x-cos-hash-crc64ecma", rcv.crc.to_string());
    }
    Ok(r.body(empty()).expect("valid"))
}

pub(crate) fn list_parts(w: &World, ctx: &Ctx) -> Res {
    let max = max_param(ctx, "max-parts", 1000)?;
    let marker: u32 = match ctx.q("part-number-marker") {
        None | Some("") => 0,
        Some(v) => v.parse().map_err(|_| {
            S3Error::new(
                400,
                "InvalidArgument",
                "part-number-marker must be an integer.",
            )
        })?,
    };
    let id = upload_of(w, ctx)?;
    let st = w.oss.lock();
    let u = st.uploads.get(&id).ok_or_else(|| no_such_upload(&id))?;
    let nvme = u.checksum.as_ref().is_some_and(|(a, _)| a == "CRC64NVME");
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
    let owner = format!(
        "<Owner><ID>{}</ID><DisplayName>{}</DisplayName></Owner>",
        owner_id(
            &st.buckets
                .get(ctx.bucket())
                .map(|b| b.account.clone())
                .unwrap_or_default()
        ),
        "sim"
    );
    let mut s = String::new();
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("Key", &ctx.key));
    s.push_str(&el("UploadId", &id));
    s.push_str(&owner.replace("Owner>", "Initiator>"));
    s.push_str(&owner);
    s.push_str(&el("StorageClass", &u.storage_class));
    s.push_str(&el("PartNumberMarker", &marker.to_string()));
    s.push_str(&el("NextPartNumberMarker", &next.to_string()));
    s.push_str(&el("MaxParts", &max.to_string()));
    s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
    if let Some((a, t)) = &u.checksum {
        s.push_str(&el("ChecksumAlgorithm", a));
        s.push_str(&el("ChecksumType", t));
    }
    for (n, p) in page {
        s.push_str("<Part>");
        s.push_str(&el("PartNumber", &n.to_string()));
        s.push_str(&el("LastModified", &iso(p.last_modified)));
        s.push_str(&el("ETag", &etag_q(&p.etag)));
        s.push_str(&el("Size", &p.size.to_string()));
        if let (true, Some(c)) = (nvme, p.nvme) {
            s.push_str(&el("ChecksumCRC64NVME", &nvme_b64(c)));
        }
        s.push_str("</Part>");
    }
    Ok(xml_response(xml_doc("ListPartsResult", &s)))
}

pub(crate) async fn complete(w: &World, ctx: &Ctx, body: Incoming, plan: Option<FaultPlan>) -> Res {
    let data = read_small(w, body, 8 << 20).await?;
    let id = upload_of(w, ctx)?;
    let parsed = match xml::parse_complete(&data) {
        Some(p) if !p.is_empty() => p,
        _ => return Err(malformed_xml().into()),
    };
    let listed: Vec<(u32, String)> = parsed.iter().map(|p| (p.number, p.etag.clone())).collect();

    let kind = plan.map(|p| p.kind);
    if kind == Some(FaultKind::CompleteError) {
        // 200 with an embedded error, upload left open: the client must parse and retry.
        let err = super::common::internal_error().xml(ctx);
        return Ok(response(200)
            .header("content-type", "application/xml")
            .body(full(err))
            .expect("valid"));
    }
    let obj = {
        let mut st = w.oss.lock();
        let u = st.uploads.get(&id).ok_or_else(|| no_such_upload(&id))?;
        let uploaded: BTreeMap<u32, (u64, String)> = u
            .parts
            .iter()
            .map(|(n, p)| (*n, (p.size, p.etag.clone())))
            .collect();
        match validate(&listed, &uploaded) {
            Ok(()) => {}
            Err(CompleteError::Order) => {
                return Err(S3Error::new(400, "InvalidPartOrder", "The list of parts was not in ascending order. Parts must be ordered by part number.")
                    .with("UploadId", id.clone())
                    .into())
            }
            Err(CompleteError::Part(n)) => {
                let sent = listed.iter().find(|(x, _)| *x == n).map(|(_, e)| e.clone()).unwrap_or_default();
                return Err(S3Error::new(400, "InvalidPart", "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
                    .with("UploadId", id.clone())
                    .with("PartNumber", n.to_string())
                    .with("ETag", sent)
                    .into())
            }
            Err(CompleteError::TooSmall(n, size)) => {
                return Err(S3Error::new(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
                    .with("ProposedSize", size.to_string())
                    .with("MinSizeAllowed", MIN_PART.to_string())
                    .with("PartNumber", n.to_string())
                    .into())
            }
        }
        if !ctx.quirks {
            check_part_checksums(&id, u, &parsed)?;
        }
        let parts: Vec<Part> = listed.iter().map(|(n, _)| u.parts[n].clone()).collect();
        let size: u64 = parts.iter().map(|p| p.size).sum();
        if let Some(v) = ctx.h("x-amz-mp-object-size") {
            if v.trim().parse::<u64>().ok() != Some(size) {
                return Err(invalid_request(format!(
                    "The provided 'x-amz-mp-object-size' header value {v} does not match what was computed: {size}"
                ))
                .into());
            }
        }
        let nvme = if parts.iter().all(|p| p.nvme.is_some()) && !ctx.quirks {
            Some(crc64::nvme::combine_all(
                parts.iter().map(|p| (p.nvme.unwrap_or(0), p.size)),
            ))
        } else {
            None
        };
        if !ctx.quirks {
            if let Some(t) = ctx.h("x-amz-checksum-type") {
                let want = u.checksum.as_ref().map(|(_, t)| t.as_str()).unwrap_or("");
                if !t.eq_ignore_ascii_case(want) {
                    return Err(bad_digest(format!(
                        "The x-amz-checksum-type {t} does not match the upload's ({want})."
                    ))
                    .into());
                }
            }
            if let Some(v) = ctx.h("x-amz-checksum-crc64nvme") {
                if nvme.map(nvme_b64).as_deref() != Some(v.trim()) {
                    return Err(bad_digest(
                        "The CRC64NVME you specified did not match the calculated checksum.",
                    )
                    .into());
                }
            }
        }
        let etags: Vec<&str> = parts.iter().map(|p| p.etag.as_str()).collect();
        let content = if parts.iter().all(|p| p.data.is_some()) {
            Content::Stored(parts.iter().filter_map(|p| p.data.clone()).collect())
        } else {
            Content::Discarded
        };
        let obj = Object {
            size,
            crc: crc64::combine_all(parts.iter().map(|p| (p.crc, p.size))),
            nvme,
            etag: multipart_etag(&etags),
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
    let mut s = String::new();
    s.push_str(&el(
        "Location",
        &format!(
            "http://{}.s3.{}.amazonaws.com/{}",
            ctx.bucket(),
            w.bucket_region(ctx.bucket()),
            xml::url_encode(&ctx.key)
        ),
    ));
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("Key", &ctx.key));
    s.push_str(&el("ETag", &etag_q(&obj.etag)));
    if let Some(n) = obj.nvme {
        s.push_str(&el("ChecksumCRC64NVME", &nvme_b64(n)));
        s.push_str(&el("ChecksumType", "FULL_OBJECT"));
    }
    let doc = xml_doc("CompleteMultipartUploadResult", &s);
    if kind == Some(FaultKind::KeepAlive) {
        // 200 at once, whitespace while "working", then the document (as S3 does).
        let pre = stream::iter(0..3).then(|_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b" "))
        });
        let decl = stream::once(async {
            Ok(Bytes::from_static(
                b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            ))
        });
        let rest =
            stream::once(
                async move { Ok(Bytes::from(doc.trim_start_matches(xml::DECL).to_string())) },
            );
        let body = decl.chain(pre).chain(rest).boxed();
        return Ok(response(200)
            .header("content-type", "application/xml")
            .body(stream_body(body))
            .expect("valid"));
    }
    if kind == Some(FaultKind::Reset) {
        // The lost Complete response: completed, then the connection drops.
        return Err(Fail::Reset);
    }
    Ok(xml_response(doc))
}

/// The `<Checksum<ALG>>` values a Complete body lists, against the parts' stored checksums
/// (after the ETags matched). S3, as measured by public conformance suites: a value that
/// differs, or names another algorithm than the upload's, is `400 InvalidPart`; a COMPOSITE
/// upload needs every part's value (`400 InvalidRequest`), a FULL_OBJECT one does not (its
/// whole-object checksum is checked instead), and an upload that named no algorithm takes
/// none.
fn check_part_checksums(id: &str, u: &Upload, listed: &[xml::ListedPart]) -> Result<(), S3Error> {
    let invalid_part = |n: u32, etag: &str| {
        S3Error::new(400, "InvalidPart", "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.")
            .with("UploadId", id)
            .with("PartNumber", n.to_string())
            .with("ETag", etag)
    };
    let upload_alg = u
        .checksum
        .as_ref()
        .map(|(a, t)| (a.to_ascii_lowercase(), t.as_str()));
    for xml::ListedPart {
        number: n,
        etag,
        checksums: given,
    } in listed
    {
        let stored = u.parts.get(n).and_then(|p| p.checksum.as_deref());
        match &upload_alg {
            None if !given.is_empty() => return Err(invalid_part(*n, etag)),
            None => {}
            Some((alg, ty)) => {
                if given.is_empty() && *ty == "COMPOSITE" {
                    return Err(invalid_request(format!(
                        "The upload was created using a {alg} checksum. The complete request must include the checksum for each part. It was missing for part {n} in the request."
                    )));
                }
                for (a, v) in given {
                    if a != alg || stored != Some(v.as_str()) {
                        return Err(invalid_part(*n, etag));
                    }
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn abort(w: &World, ctx: &Ctx) -> Res {
    let id = upload_of(w, ctx)?;
    w.oss.lock().uploads.remove(&id);
    Ok(response(204).body(empty()).expect("valid"))
}

pub(crate) fn list_uploads(w: &World, ctx: &Ctx) -> Res {
    let max = max_param(ctx, "max-uploads", 1000)?;
    let prefix = ctx.q("prefix").unwrap_or_default();
    let key_marker = ctx.q("key-marker").unwrap_or_default();
    let id_marker = ctx.q("upload-id-marker").unwrap_or_default();
    let mut st = w.oss.lock();
    super::lifecycle::expire_uploads(&mut st, ctx.bucket(), ctx.now);
    let mut all: Vec<(&String, &Upload)> = st
        .uploads
        .iter()
        .filter(|(_, u)| u.bucket == ctx.bucket() && u.key.starts_with(prefix))
        .collect();
    all.sort_by(|a, b| a.1.key.cmp(&b.1.key).then(a.1.seq.cmp(&b.1.seq)));
    let marker_seq = st
        .uploads
        .get(id_marker)
        .filter(|u| u.key == key_marker)
        .map(|u| u.seq);
    let after = |u: &Upload| -> bool {
        if key_marker.is_empty() {
            return true;
        }
        match (u.key.as_str().cmp(key_marker), marker_seq) {
            (std::cmp::Ordering::Greater, _) => true,
            (std::cmp::Ordering::Equal, Some(seq)) => !id_marker.is_empty() && u.seq > seq,
            _ => false,
        }
    };
    let rest: Vec<&(&String, &Upload)> = all.iter().filter(|(_, u)| after(u)).collect();
    let truncated = rest.len() > max;
    let page = &rest[..rest.len().min(max)];
    let mut s = String::new();
    s.push_str(&el("Bucket", ctx.bucket()));
    s.push_str(&el("KeyMarker", key_marker));
    s.push_str(&el("UploadIdMarker", id_marker));
    if let Some((id, u)) = page.last() {
        s.push_str(&el("NextKeyMarker", &u.key));
        s.push_str(&el("NextUploadIdMarker", id));
    }
    s.push_str(&el("Prefix", prefix));
    s.push_str(&el("MaxUploads", &max.to_string()));
    s.push_str(&el("IsTruncated", if truncated { "true" } else { "false" }));
    for (id, u) in page {
        s.push_str("<Upload>");
        s.push_str(&el("Key", &u.key));
        s.push_str(&el("UploadId", id));
        s.push_str(&el("StorageClass", &u.storage_class));
        s.push_str(&el("Initiated", &iso(u.initiated)));
        if let Some((a, t)) = &u.checksum {
            s.push_str(&el("ChecksumAlgorithm", a));
            s.push_str(&el("ChecksumType", t));
        }
        s.push_str("</Upload>");
    }
    Ok(xml_response(xml_doc("ListMultipartUploadsResult", &s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_order_and_s3_minimum() {
        let mib = 1 << 20;
        let up: BTreeMap<u32, (u64, String)> = [
            (1, (5 * mib, "A".to_string())),
            (2, (mib, "B".to_string())),
            (3, (10, "C".to_string())),
        ]
        .into_iter()
        .collect();
        let l = |v: &[(u32, &str)]| {
            v.iter()
                .map(|(n, e)| (*n, e.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            validate(&l(&[(2, "B"), (1, "A")]), &up),
            Err(CompleteError::Order)
        );
        assert_eq!(
            validate(&l(&[(1, "A"), (4, "D")]), &up),
            Err(CompleteError::Part(4))
        );
        assert_eq!(
            validate(&l(&[(1, "A"), (2, "X")]), &up),
            Err(CompleteError::Part(2))
        );
        assert_eq!(
            validate(&l(&[(1, "A"), (2, "B"), (3, "C")]), &up),
            Err(CompleteError::TooSmall(2, mib))
        );
        assert_eq!(validate(&l(&[(1, "\"a\""), (3, "C")]), &up), Ok(()));
    }

    #[test]
    fn multipart_etag_is_md5_of_binary_md5s() {
        let a = "D41D8CD98F00B204E9800998ECF8427E";
        let mut m = Md5::new();
        m.update(hex::decode(a).unwrap());
        m.update(hex::decode(a).unwrap());
        assert_eq!(
            multipart_etag(&[a, a]),
            format!("{}-2", upper_hex(&m.finalize()))
        );
    }
}
