//! Typed bucket and object operations, and the [`ObjectStore`] implementation.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use md5::{Digest, Md5};

use super::client::{read_limited, OssClient, OssRequest, Payload, MAX_XML_BODY};
use super::error::OssError;
use super::xml::{self, BucketInfo, LifecycleConfiguration};
use crate::checksum::{Algorithm, Checksum, Checksums};
use crate::http::BodyStream;
use crate::store::{
    ByteStream, ChecksumCaps, ErrorClass, Limits, ListedPart, ListedUpload, ObjectMeta,
    ObjectStore, PartSpec, PutOptions, StoreError, Uploaded,
};

/// One bucket through an [`OssClient`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct OssBucket {
    client: OssClient,
    name: Arc<str>,
}

impl OssClient {
    /// Operations on bucket `name`.
    pub fn bucket(&self, name: impl Into<String>) -> OssBucket {
        OssBucket {
            client: self.clone(),
            name: Arc::from(name.into()),
        }
    }
}

/// A GetObject response whose body is still streaming.
pub struct GetObjectOutput {
    /// Exactly `content_length` bytes, or an error item.
    pub body: ByteStream,
    pub content_length: u64,
    /// Size of the whole object (from `Content-Range`, or `Content-Length` without a range).
    pub object_size: u64,
    pub etag: String,
    /// Whole-object checksums as reported (OSS sends the whole object's CRC-64 on ranges too).
    pub object_checksums: Checksums,
}

impl std::fmt::Debug for GetObjectOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetObjectOutput")
            .field("content_length", &self.content_length)
            .field("object_size", &self.object_size)
            .field("etag", &self.etag)
            .finish()
    }
}

fn hdr<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The checksums an OSS response reports: CRC-64/XZ in `x-oss-hash-crc64ecma`.
fn checksums_of(h: &HeaderMap) -> Checksums {
    hdr(h, "x-oss-hash-crc64ecma")
        .and_then(|s| s.parse().ok())
        .map(|c| Checksum::Crc64Xz(c).into())
        .unwrap_or_default()
}

/// What OSS reports and verifies (see [`crate::store::ChecksumCaps`]): it computes CRC-64/XZ
/// for every object and part, and rejects an upload whose `Content-MD5` does not match.
pub const CHECKSUMS: ChecksumCaps = ChecksumCaps {
    reports: &[Algorithm::Crc64Xz],
    verifies: &[Algorithm::Md5],
};

/// OSS limits: 100 KiB – 5 GiB parts, 10,000 parts, 5 GiB PutObject.
pub const LIMITS: Limits = Limits {
    min_part_size: 100 * 1024,
    max_part_size: 5 * 1024 * 1024 * 1024,
    max_parts: 10_000,
    max_single_put: 5 * 1024 * 1024 * 1024,
};

/// `Content-MD5` for an expected MD5, the one upload checksum OSS verifies.
fn expected_md5(expected: &Checksums) -> Option<String> {
    match expected.get(Algorithm::Md5) {
        Some(Checksum::Md5(d)) => Some(base64::engine::general_purpose::STANDARD.encode(d)),
        _ => None,
    }
}

fn protocol_error(op: &str, what: String) -> OssError {
    OssError::with_class(
        ErrorClass::Transient,
        format!("{op}: unexpected response from OSS: {what}"),
    )
}

fn etag_of(op: &str, h: &HeaderMap) -> Result<String, OssError> {
    hdr(h, "etag")
        .map(xml::unquote_etag)
        .ok_or_else(|| protocol_error(op, "no ETag header".into()))
}

fn meta_from_headers(h: &HeaderMap, size: u64) -> ObjectMeta {
    let mut user_meta: Vec<(String, String)> = h
        .iter()
        .filter_map(|(n, v)| {
            let name = n.as_str().strip_prefix("x-oss-meta-")?;
            Some((
                name.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ))
        })
        .collect();
    user_meta.sort();
    ObjectMeta {
        size,
        etag: hdr(h, "etag").map(xml::unquote_etag).unwrap_or_default(),
        last_modified: hdr(h, "last-modified").map(str::to_string),
        checksums: checksums_of(h),
        content_type: hdr(h, "content-type").map(str::to_string),
        user_meta,
    }
}

fn content_length(op: &str, h: &HeaderMap) -> Result<u64, OssError> {
    hdr(h, "content-length")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error(op, "no valid Content-Length".into()))
}

fn content_md5(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(body))
}

fn with_put_options<'a>(
    mut req: OssRequest<'a>,
    opts: &PutOptions,
) -> Result<OssRequest<'a>, OssError> {
    if let Some(ct) = &opts.content_type {
        req = req.header("content-type", ct)?;
    }
    for (k, v) in &opts.user_meta {
        req = req.header(&format!("x-oss-meta-{}", k.to_ascii_lowercase()), v)?;
    }
    Ok(req)
}

/// Parses `bytes <first>-<last>/<total>`.
fn parse_content_range(s: &str) -> Option<(u64, u64, u64)> {
    let rest = s.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

impl OssBucket {
    /// The bucket name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this bucket uses.
    pub fn client(&self) -> &OssClient {
        &self.client
    }

    fn req<'a>(&'a self, op: &'static str, method: Method, key: Option<&'a str>) -> OssRequest<'a> {
        OssRequest::new(op, method, Some(&self.name), key)
    }

    async fn read_xml(
        &self,
        op: &str,
        resp: http::Response<hyper::body::Incoming>,
    ) -> Result<Bytes, OssError> {
        read_limited(
            resp.into_body(),
            MAX_XML_BODY,
            self.client.inner.read_timeout,
            op,
        )
        .await
    }

    async fn head_raw(&self, key: &str) -> Result<(ObjectMeta, HeaderMap), OssError> {
        let resp = self
            .client
            .send(self.req("HeadObject", Method::HEAD, Some(key)))
            .await?;
        let h = resp.headers().clone();
        let size = content_length("HeadObject", &h)?;
        Ok((meta_from_headers(&h, size), h))
    }

    /// HeadObject: size, ETag, CRC-64, content type and user metadata.
    pub async fn head_object(&self, key: &str) -> Result<ObjectMeta, OssError> {
        Ok(self.head_raw(key).await?.0)
    }

    /// GetObject, optionally for `range` (`start..end`, end exclusive). Ranged reads send
    /// `x-oss-range-behavior: standard`, insist on 206 with the exact `Content-Range`, and
    /// the returned body errors if it ends short.
    pub async fn get_object(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<GetObjectOutput, OssError> {
        const OP: &str = "GetObject";
        let mut req = self.req(OP, Method::GET, Some(key));
        if let Some(r) = &range {
            if r.start >= r.end {
                return Err(OssError::config(format!(
                    "{OP}: empty or inverted range {}..{}",
                    r.start, r.end
                )));
            }
            req = req
                .header("range", &format!("bytes={}-{}", r.start, r.end - 1))?
                .header("x-oss-range-behavior", "standard")?;
        }
        if let Some(e) = if_match {
            req = req.header("if-match", &format!("\"{}\"", xml::unquote_etag(e)))?;
        }
        let resp = self.client.send(req).await?;
        let h = resp.headers();
        // A ranged body's length is known from the range; Content-Length (if sent, it may
        // be chunked instead) must agree, and the body stream enforces it either way.
        let len = match &range {
            Some(r) => r.end - r.start,
            None => content_length(OP, h)?,
        };
        let sent_len: Option<u64> = hdr(h, "content-length").and_then(|s| s.parse().ok());
        let object_size = match &range {
            Some(r) => {
                if resp.status() != StatusCode::PARTIAL_CONTENT {
                    return Err(OssError::with_class(
                        ErrorClass::Client,
                        format!(
                            "{OP} on oss://{}/{key}: OSS ignored the Range (HTTP {} instead of 206)",
                            self.name,
                            resp.status().as_u16()
                        ),
                    ));
                }
                let cr = hdr(h, "content-range").and_then(parse_content_range);
                match cr {
                    Some((a, b, total)) if a == r.start && b == r.end - 1 => {
                        if sent_len.is_some_and(|n| n != len) {
                            return Err(protocol_error(
                                OP,
                                format!("Content-Length {:?} for a {len}-byte range", sent_len),
                            ));
                        }
                        total
                    }
                    other => {
                        return Err(OssError::with_class(
                            ErrorClass::Client,
                            format!(
                                "{OP} on oss://{}/{key}: asked for bytes {}-{}, got Content-Range {:?} (object shorter than expected?)",
                                self.name,
                                r.start,
                                r.end - 1,
                                other.map(|(a, b, t)| format!("{a}-{b}/{t}"))
                            ),
                        ));
                    }
                }
            }
            None => len,
        };
        let etag = etag_of(OP, h)?;
        let object_checksums = checksums_of(h);
        let what = format!("{OP} oss://{}/{key}", self.name);
        let body = BodyStream::new(
            resp.into_body(),
            Some(len),
            self.client.inner.read_timeout,
            what,
        );
        Ok(GetObjectOutput {
            body: Box::pin(body),
            content_length: len,
            object_size,
            etag,
            object_checksums,
        })
    }

    /// PutObject from a stream of exactly `len` bytes (single attempt; the caller retries).
    pub async fn put_object(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded, OssError> {
        let req = with_put_options(self.req("PutObject", Method::PUT, Some(key)), opts)?
            .payload(Payload::Stream(body, len));
        let resp = self.client.send(req).await?;
        Ok(Uploaded {
            etag: etag_of("PutObject", resp.headers())?,
            checksums: checksums_of(resp.headers()),
        })
    }

    /// DeleteObject (a missing key is not an error).
    pub async fn delete_object(&self, key: &str) -> Result<(), OssError> {
        self.client
            .send(self.req("DeleteObject", Method::DELETE, Some(key)))
            .await?;
        Ok(())
    }

    /// GetBucketInfo: region, endpoints, owner.
    pub async fn get_bucket_info(&self) -> Result<BucketInfo, OssError> {
        const OP: &str = "GetBucketInfo";
        let resp = self
            .client
            .send(self.req(OP, Method::GET, None).query("bucketInfo", ""))
            .await?;
        let body = self.read_xml(OP, resp).await?;
        xml::parse_bucket_info(&body).map_err(|e| protocol_error(OP, e.to_string()))
    }

    /// InitiateMultipartUpload with the final object's content type and user metadata.
    ///
    /// Retried like other non-streaming calls; if a response is lost, the retry creates a
    /// second upload id and the first is orphaned (swept by ListMultipartUploads + abort, or
    /// by an AbortMultipartUpload lifecycle rule).
    pub async fn initiate_multipart_upload(
        &self,
        key: &str,
        opts: &PutOptions,
    ) -> Result<String, OssError> {
        const OP: &str = "InitiateMultipartUpload";
        let req = with_put_options(
            self.req(OP, Method::POST, Some(key)).query("uploads", ""),
            opts,
        )?;
        let resp = self.client.send(req).await?;
        let body = self.read_xml(OP, resp).await?;
        xml::parse_initiate(&body).map_err(|e| protocol_error(OP, e.to_string()))
    }

    /// UploadPart from a stream of exactly `len` bytes (single attempt). Returns the ETag
    /// and the part's CRC-64 as OSS computed it. With `content_md5` (base64), OSS rejects a
    /// body whose MD5 differs (`InvalidDigest`/`BadDigest`).
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: ByteStream,
        len: u64,
        content_md5: Option<&str>,
    ) -> Result<Uploaded, OssError> {
        const OP: &str = "UploadPart";
        let mut req = self
            .req(OP, Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id);
        if let Some(md5) = content_md5 {
            req = req.header("content-md5", md5)?;
        }
        let req = req.payload(Payload::Stream(body, len));
        let resp = self.client.send(req).await?;
        Ok(Uploaded {
            etag: etag_of(OP, resp.headers())?,
            checksums: checksums_of(resp.headers()),
        })
    }

    /// CompleteMultipartUpload with exactly `parts` (number, ETag), ascending.
    ///
    /// Retried by the transport (the body is in memory). OSS finishes a Complete even if the
    /// client disconnects, so a retry may answer `NoSuchUpload` for an upload that did
    /// complete: that is returned as it is (a [`ErrorClass::NotFound`] error). Deciding
    /// whether the object is the one being completed needs the expected CRC-64, which the
    /// relay's upload session has: lost-Complete recovery lives there, for every dialect.
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<Uploaded, OssError> {
        const OP: &str = "CompleteMultipartUpload";
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(OssError::config(format!(
                "{OP}: part numbers must be strictly ascending"
            )));
        }
        let body = xml::build_complete(parts);
        let md5 = content_md5(body.as_bytes());
        let req = self
            .req(OP, Method::POST, Some(key))
            .query("uploadId", upload_id)
            .header("content-type", "application/xml")?
            .header("content-md5", &md5)?
            .payload(Payload::Bytes(Bytes::from(body)));
        let resp = self.client.send(req).await?;
        let checksums = checksums_of(resp.headers());
        let header_etag = hdr(resp.headers(), "etag").map(xml::unquote_etag);
        let body = self.read_xml(OP, resp).await?;
        let etag = match xml::parse_complete(&body) {
            Ok(Some(e)) => e,
            Ok(None) => header_etag.ok_or_else(|| protocol_error(OP, "no ETag".into()))?,
            Err(parse_err) => {
                let fields = xml::parse_error_fields(&body);
                if let Some(code) = fields.get("Code") {
                    return Err(OssError::with_class(
                        ErrorClass::Transient,
                        format!(
                            "{OP} on oss://{}/{key}: HTTP 200 with error {code}",
                            self.name
                        ),
                    ));
                }
                match header_etag {
                    Some(e) => e,
                    None => return Err(protocol_error(OP, parse_err.to_string())),
                }
            }
        };
        Ok(Uploaded { etag, checksums })
    }

    /// AbortMultipartUpload.
    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), OssError> {
        let req = self
            .req("AbortMultipartUpload", Method::DELETE, Some(key))
            .query("uploadId", upload_id);
        self.client.send(req).await?;
        Ok(())
    }

    /// ListParts, all pages.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<ListedPart>, OssError> {
        const OP: &str = "ListParts";
        let mut out = Vec::new();
        let mut marker: u32 = 0;
        loop {
            let req = self
                .req(OP, Method::GET, Some(key))
                .query("uploadId", upload_id)
                .query("max-parts", "1000")
                .query("part-number-marker", marker.to_string());
            let resp = self.client.send(req).await?;
            let body = self.read_xml(OP, resp).await?;
            let page =
                xml::parse_list_parts(&body).map_err(|e| protocol_error(OP, e.to_string()))?;
            let last = page.parts.last().map(|p| p.number);
            out.extend(page.parts);
            if !page.is_truncated {
                break;
            }
            let next = page.next_part_number_marker.or(last).unwrap_or(0);
            if next <= marker {
                return Err(protocol_error(
                    OP,
                    format!("pagination marker did not advance past {marker}"),
                ));
            }
            marker = next;
        }
        Ok(out)
    }

    /// ListMultipartUploads, all pages, optionally under `prefix`.
    pub async fn list_multipart_uploads(
        &self,
        prefix: Option<&str>,
    ) -> Result<Vec<ListedUpload>, OssError> {
        const OP: &str = "ListMultipartUploads";
        let mut out = Vec::new();
        let mut key_marker = String::new();
        let mut id_marker = String::new();
        loop {
            let mut req = self
                .req(OP, Method::GET, None)
                .query("uploads", "")
                .query("max-uploads", "1000")
                .query("encoding-type", "url");
            if let Some(p) = prefix {
                req = req.query("prefix", p);
            }
            if !key_marker.is_empty() {
                req = req.query("key-marker", key_marker.clone());
                req = req.query("upload-id-marker", id_marker.clone());
            }
            let resp = self.client.send(req).await?;
            let body = self.read_xml(OP, resp).await?;
            let page =
                xml::parse_list_uploads(&body).map_err(|e| protocol_error(OP, e.to_string()))?;
            let last = page
                .uploads
                .last()
                .map(|u| (u.key.clone(), u.upload_id.clone()));
            out.extend(page.uploads);
            if !page.is_truncated {
                break;
            }
            let (nk, ni) = match (page.next_key_marker, page.next_upload_id_marker, last) {
                (Some(k), i, _) => (k, i.unwrap_or_default()),
                (None, _, Some((k, i))) => (k, i),
                (None, _, None) => {
                    return Err(protocol_error(
                        OP,
                        "truncated page without a next marker".into(),
                    ))
                }
            };
            // Upload ids within one key are ordered by initiation, not as strings, so only
            // "the markers moved" can be checked.
            if (nk.as_str(), ni.as_str()) == (key_marker.as_str(), id_marker.as_str()) {
                return Err(protocol_error(
                    OP,
                    "pagination markers did not advance".into(),
                ));
            }
            key_marker = nk;
            id_marker = ni;
        }
        Ok(out)
    }

    /// GetBucketLifecycle; `None` if the bucket has no lifecycle rules.
    pub async fn get_bucket_lifecycle(&self) -> Result<Option<LifecycleConfiguration>, OssError> {
        const OP: &str = "GetBucketLifecycle";
        let resp = match self
            .client
            .send(self.req(OP, Method::GET, None).query("lifecycle", ""))
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_code("NoSuchLifecycle") => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = self.read_xml(OP, resp).await?;
        xml::parse_lifecycle(&body)
            .map(Some)
            .map_err(|e| protocol_error(OP, e.to_string()))
    }

    /// PutBucketLifecycle: replaces the whole configuration (merge with
    /// [`get_bucket_lifecycle`](Self::get_bucket_lifecycle) first to keep existing rules).
    pub async fn put_bucket_lifecycle(&self, cfg: &LifecycleConfiguration) -> Result<(), OssError> {
        const OP: &str = "PutBucketLifecycle";
        let body = xml::build_lifecycle(cfg);
        let req = self
            .req(OP, Method::PUT, None)
            .query("lifecycle", "")
            .header("content-type", "application/xml")?
            .header("content-md5", &content_md5(body.as_bytes()))?
            .payload(Payload::Bytes(Bytes::from(body)));
        self.client.send(req).await?;
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for OssBucket {
    fn describe(&self, key: &str) -> String {
        format!("oss://{}/{key}", self.name)
    }

    fn limits(&self) -> Limits {
        LIMITS
    }

    fn checksums(&self) -> ChecksumCaps {
        CHECKSUMS
    }

    fn retries(&self) -> u64 {
        self.client.retries()
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        Ok(self.head_object(key).await?)
    }

    async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<ByteStream, StoreError> {
        if start == end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        Ok(self.get_object(key, Some(start..end), if_match).await?.body)
    }

    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        Ok(self.put_object(key, body, len, opts).await?)
    }

    async fn create_multipart(
        &self,
        key: &str,
        _total_size: u64,
        opts: &PutOptions,
    ) -> Result<String, StoreError> {
        Ok(self.initiate_multipart_upload(key, opts).await?)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartSpec,
        body: ByteStream,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        let md5 = expected_md5(expected);
        Ok(OssBucket::upload_part(
            self,
            key,
            upload_id,
            part.number,
            body,
            part.len,
            md5.as_deref(),
        )
        .await?)
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, StoreError> {
        Ok(OssBucket::list_parts(self, key, upload_id).await?)
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        // OSS takes neither the size nor a whole-object checksum with Complete: it reports
        // its CRC-64, which the engine compares.
        _size: u64,
        _expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        Ok(self
            .complete_multipart_upload(key, upload_id, parts)
            .await?)
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        Ok(self.abort_multipart_upload(key, upload_id).await?)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Ok(self.delete_object(key).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-9/44"), Some((0, 9, 44)));
        assert_eq!(
            parse_content_range("bytes 500-999/1000"),
            Some((500, 999, 1000))
        );
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn meta_from_head_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "etag",
            HeaderValue::from_static("\"1C787C506EABFB9B45EAAA8DB039F4B2-2\""),
        );
        h.insert(
            "x-oss-hash-crc64ecma",
            HeaderValue::from_static("12066172435287683848"),
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert("x-oss-meta-b", HeaderValue::from_static("2"));
        h.insert("x-oss-meta-a", HeaderValue::from_static("1"));
        h.insert(
            "last-modified",
            HeaderValue::from_static("Sat, 12 Dec 2015 00:35:53 GMT"),
        );
        let m = meta_from_headers(&h, 42);
        assert_eq!(m.size, 42);
        assert_eq!(m.etag, "1C787C506EABFB9B45EAAA8DB039F4B2-2");
        assert_eq!(m.checksums.crc64_xz(), Some(12066172435287683848));
        assert_eq!(
            m.user_meta,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            m.last_modified.as_deref(),
            Some("Sat, 12 Dec 2015 00:35:53 GMT")
        );
    }

    #[test]
    fn md5_header() {
        assert_eq!(content_md5(b"0123456789"), "eB5eJF1ptWaXm4bijSPyxw==");
    }
}
