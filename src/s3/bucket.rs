//! Typed bucket and object operations, and the [`ObjectStore`] implementation.
//!
//! Contract: bodies are plain (`UNSIGNED-PAYLOAD` with `Content-Length`, never aws-chunked:
//! most S3-compatible stores reject it, §10); checksum headers are sent only when the caller
//! knows the value *and* the provider verifies it ([`S3Bucket::checksums`]); what a response
//! reports is returned typed (`x-amz-checksum-crc64nvme` FULL_OBJECT values, part ETags as MD5
//! where they are MD5, COS's `x-cos-hash-crc64ecma`), and COMPOSITE values are dropped.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use super::client::{read_all, Payload, S3Client, S3Request, S3Response};
use super::error::S3Error;
use super::xml::{self, crc64nvme_b64, etag_md5, parse_crc64nvme};
use crate::checksum::{Algorithm, Checksum, Checksums};
use crate::http::BodyStream;
use crate::store::wire::unquote_etag;
use crate::store::{
    ByteStream, ChecksumCaps, ErrorClass, Limits, ListedPart, ListedUpload, ObjectMeta,
    ObjectStore, PartSpec, PutOptions, StoreError, Uploaded,
};

/// One bucket through an [`S3Client`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: S3Client,
    name: Arc<str>,
}

impl S3Client {
    /// Operations on bucket `name`.
    pub fn bucket(&self, name: impl Into<String>) -> S3Bucket {
        S3Bucket {
            client: self.clone(),
            name: Arc::from(name.into()),
        }
    }
}

fn hdr<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
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

/// SSE-KMS and SSE-C objects have ETags that are not the MD5 of the data.
fn etag_not_md5(h: &HeaderMap) -> bool {
    hdr(h, "x-amz-server-side-encryption").is_some_and(|v| v.starts_with("aws:kms"))
        || hdr(h, "x-amz-server-side-encryption-customer-algorithm").is_some()
}

impl S3Bucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &S3Client {
        &self.client
    }

    /// Whether this endpoint honours `x-amz-checksum-*` (CRC-64/NVME).
    fn honours_crc64nvme(&self) -> bool {
        self.checksums().verifies(Algorithm::Crc64Nvme)
    }

    fn req<'a>(&'a self, op: &'static str, method: Method, key: Option<&'a str>) -> S3Request<'a> {
        S3Request::new(op, method, Some(&self.name), key)
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }

    /// The checksums a response reports: FULL_OBJECT CRC-64/NVME, COS's CRC-64/XZ, and the
    /// ETag as MD5 when `etag_is_md5` and the provider's ETags are MD5s.
    fn reported(&self, h: &HeaderMap, etag_is_md5: bool) -> Checksums {
        let caps = self.checksums();
        let mut c = Checksums::new();
        let composite = hdr(h, "x-amz-checksum-type").is_some_and(|t| t != "FULL_OBJECT");
        if caps.reports(Algorithm::Crc64Nvme) && !composite {
            if let Some(v) = hdr(h, "x-amz-checksum-crc64nvme").and_then(parse_crc64nvme) {
                c.insert(Checksum::Crc64Nvme(v));
            }
        }
        if caps.reports(Algorithm::Crc64Xz) {
            if let Some(v) = hdr(h, "x-cos-hash-crc64ecma").and_then(|s| s.parse().ok()) {
                c.insert(Checksum::Crc64Xz(v));
            }
        }
        if etag_is_md5 && caps.reports(Algorithm::Md5) && !etag_not_md5(h) {
            if let Some(d) = hdr(h, "etag").and_then(etag_md5) {
                c.insert(Checksum::Md5(d));
            }
        }
        c
    }

    /// Adds the checksum headers for `expected` that this provider verifies.
    fn with_expected<'a>(
        &self,
        mut req: S3Request<'a>,
        expected: &Checksums,
    ) -> Result<S3Request<'a>, S3Error> {
        let caps = self.checksums();
        if caps.verifies(Algorithm::Crc64Nvme) {
            if let Some(v) = expected.crc64_nvme() {
                req = req.header("x-amz-checksum-crc64nvme", &crc64nvme_b64(v))?;
            }
        }
        if caps.verifies(Algorithm::Md5) {
            if let Some(Checksum::Md5(d)) = expected.get(Algorithm::Md5) {
                req = req.header(
                    "content-md5",
                    &base64::engine::general_purpose::STANDARD.encode(d),
                )?;
            }
        }
        Ok(req)
    }

    fn etag_of(op: &str, h: &HeaderMap) -> Result<String, S3Error> {
        hdr(h, "etag")
            .map(unquote_etag)
            .ok_or_else(|| S3Error::protocol(op, "no ETag header"))
    }

    /// HeadBucket: the region S3 says the bucket is in (`x-amz-bucket-region`), also when it
    /// answers that the request was signed for another region (S3 names the right one in
    /// that error). `Ok(None)`: the bucket exists but the store names no region (non-AWS
    /// providers). A missing bucket or a refusal is the error.
    pub async fn bucket_region(&self) -> Result<Option<String>, S3Error> {
        match self
            .client
            .send(self.req("HeadBucket", Method::HEAD, None))
            .await
        {
            Ok(resp) => Ok(hdr(&resp.head.headers, "x-amz-bucket-region").map(str::to_string)),
            Err(e) if e.bucket_region.is_some() && e.status != Some(404) => Ok(e.bucket_region),
            Err(e) => Err(e),
        }
    }

    /// HeadObject with `x-amz-checksum-mode: ENABLED`, so S3 returns the stored checksum.
    pub async fn head_object(&self, key: &str) -> Result<ObjectMeta, S3Error> {
        const OP: &str = "HeadObject";
        let mut req = self.req(OP, Method::HEAD, Some(key));
        if self.honours_crc64nvme() {
            req = req.header("x-amz-checksum-mode", "ENABLED")?;
        }
        let resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(e)
                if matches!(e.status, Some(400 | 403))
                    && e.code.is_none()
                    && e.bucket_region.is_none()
                    && e.class != ErrorClass::ClockSkew =>
            {
                return Err(self.explain_denied_head(key, e).await)
            }
            Err(e) => return Err(e),
        };
        let h = &resp.head.headers;
        let size = hdr(h, "content-length")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| S3Error::protocol(OP, "no valid Content-Length"))?;
        let mut user_meta: Vec<(String, String)> = h
            .iter()
            .filter_map(|(n, v)| {
                let name = n.as_str().strip_prefix("x-amz-meta-")?;
                Some((
                    name.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ))
            })
            .collect();
        user_meta.sort();
        // The whole object's ETag is an MD5 only for single-part uploads, and not even then
        // under SSE-KMS; never report it as one here.
        Ok(ObjectMeta {
            size,
            etag: hdr(h, "etag").map(unquote_etag).unwrap_or_default(),
            last_modified: hdr(h, "last-modified").map(str::to_string),
            checksums: self.reported(h, false),
            content_type: hdr(h, "content-type").map(str::to_string),
            user_meta,
        })
    }

    /// A HEAD answered 403 or 400 carries no error body, so wrong secret, unknown key and a
    /// policy denial all read "access denied", and a bad session token "HTTP 400". A one-byte
    /// GET of the same object gets the error XML that names the cause
    /// (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, `InvalidToken`, ...); its error
    /// replaces `head_err` when it has a code, else `head_err` stands. (Wrong-region 400/301s
    /// carry `x-amz-bucket-region` and skew is told by `Date`; those need no probe.)
    async fn explain_denied_head(&self, key: &str, head_err: S3Error) -> S3Error {
        let probe = self
            .req("GetObject", Method::GET, Some(key))
            .header("range", "bytes=0-0");
        let Ok(probe) = probe else {
            return head_err;
        };
        match self.client.send(probe.buffered()).await {
            Err(e) if e.code.is_some() => e,
            _ => head_err,
        }
    }

    /// GetObject for `[start, end)` with `If-Match`; insists on 206 and the exact
    /// `Content-Range`, and the body errors if it ends short.
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: u64,
        if_match: Option<&str>,
    ) -> Result<ByteStream, S3Error> {
        const OP: &str = "GetObject";
        if start >= end {
            return Err(S3Error::config(format!(
                "{OP}: empty or inverted range {start}..{end}"
            )));
        }
        let mut req = self
            .req(OP, Method::GET, Some(key))
            .header("range", &format!("bytes={start}-{}", end - 1))?;
        if let Some(e) = if_match {
            req = req.header("if-match", &format!("\"{}\"", unquote_etag(e)))?;
        }
        let resp = self.client.send(req).await?;
        let h = &resp.head.headers;
        let len = end - start;
        if resp.head.status != StatusCode::PARTIAL_CONTENT {
            return Err(S3Error::config(format!(
                "{OP} on {}: the store ignored the Range (HTTP {} instead of 206)",
                self.target(key),
                resp.head.status.as_u16()
            )));
        }
        match hdr(h, "content-range").and_then(parse_content_range) {
            Some((a, b, _)) if a == start && b == end - 1 => {}
            other => {
                return Err(S3Error::config(format!(
                    "{OP} on {}: asked for bytes {start}-{}, got Content-Range {:?} (object shorter than expected?)",
                    self.target(key),
                    end - 1,
                    other.map(|(a, b, t)| format!("{a}-{b}/{t}"))
                )))
            }
        }
        if hdr(h, "content-length")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n != len)
        {
            return Err(S3Error::protocol(
                OP,
                format!("Content-Length for a {len}-byte range"),
            ));
        }
        let body = resp.stream.expect("unbuffered request");
        Ok(Box::pin(BodyStream::new(
            body,
            Some(len),
            self.client.inner.read_timeout,
            format!("{OP} {}", self.target(key)),
        )))
    }

    /// PutObject from a stream of exactly `len` bytes (one attempt; the caller retries).
    pub async fn put_object(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
        expected: &Checksums,
    ) -> Result<Uploaded, S3Error> {
        const OP: &str = "PutObject";
        let req = with_put_options(self.req(OP, Method::PUT, Some(key)), opts)?;
        let req = self
            .with_expected(req, expected)?
            .payload(Payload::Stream(body, len));
        let resp = self.client.send(req).await?;
        Ok(Uploaded {
            etag: Self::etag_of(OP, &resp.head.headers)?,
            checksums: self.reported(&resp.head.headers, true),
        })
    }

    pub async fn create_multipart_upload(
        &self,
        key: &str,
        opts: &PutOptions,
    ) -> Result<String, S3Error> {
        const OP: &str = "CreateMultipartUpload";
        let mut req = with_put_options(
            self.req(OP, Method::POST, Some(key)).query("uploads", ""),
            opts,
        )?;
        if self.honours_crc64nvme() {
            req = req
                .header("x-amz-checksum-algorithm", "CRC64NVME")?
                .header("x-amz-checksum-type", "FULL_OBJECT")?;
        }
        let resp = self.client.send(req.buffered()).await?;
        xml::parse_initiate(&resp.body).map_err(|e| S3Error::protocol(OP, e))
    }

    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: ByteStream,
        len: u64,
        expected: &Checksums,
    ) -> Result<Uploaded, S3Error> {
        const OP: &str = "UploadPart";
        let req = self
            .req(OP, Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id);
        let req = self
            .with_expected(req, expected)?
            .payload(Payload::Stream(body, len));
        let resp = self.client.send(req).await?;
        Ok(Uploaded {
            etag: Self::etag_of(OP, &resp.head.headers)?,
            checksums: self.reported(
                &resp.head.headers,
                self.client.provider().part_etag_is_md5(),
            ),
        })
    }

    /// CompleteMultipartUpload. With CRC-64/NVME honoured, sends the whole object's value as
    /// FULL_OBJECT plus `x-amz-mp-object-size`, so S3 itself rejects a wrong assembly.
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        size: u64,
        expected: &Checksums,
    ) -> Result<Uploaded, S3Error> {
        const OP: &str = "CompleteMultipartUpload";
        if parts.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(S3Error::config(format!(
                "{OP}: part numbers must be strictly ascending"
            )));
        }
        let body = xml::build_complete(parts);
        let mut req = self
            .req(OP, Method::POST, Some(key))
            .query("uploadId", upload_id)
            .header("content-type", "application/xml")?;
        if self.honours_crc64nvme() {
            if let Some(v) = expected.crc64_nvme() {
                req = req
                    .header("x-amz-checksum-crc64nvme", &crc64nvme_b64(v))?
                    .header("x-amz-checksum-type", "FULL_OBJECT")?;
            }
            req = req.header("x-amz-mp-object-size", &size.to_string())?;
        }
        let resp = self
            .client
            .send(req.payload(Payload::Bytes(Bytes::from(body))).buffered())
            .await?;
        let result = xml::parse_complete(&resp.body)
            .map_err(|e| S3Error::protocol(OP, e))?
            .ok_or_else(|| S3Error::protocol(OP, "error document in a 200"))?;
        let mut checksums = self.reported(&resp.head.headers, false);
        if self.checksums().reports(Algorithm::Crc64Nvme) {
            if let Some(v) = result.crc64nvme {
                checksums.insert(Checksum::Crc64Nvme(v));
            }
        }
        let etag = match result.etag {
            Some(e) => e,
            None => Self::etag_of(OP, &resp.head.headers)?,
        };
        Ok(Uploaded { etag, checksums })
    }

    /// AbortMultipartUpload (also used by `uploads abort`).
    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let req = self
            .req("AbortMultipartUpload", Method::DELETE, Some(key))
            .query("uploadId", upload_id);
        self.client.send(req.buffered()).await?;
        Ok(())
    }

    /// Every part of an upload (pages of 1000).
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, S3Error> {
        const OP: &str = "ListParts";
        let md5 =
            self.client.provider().part_etag_is_md5() && self.checksums().reports(Algorithm::Md5);
        let nvme = self.checksums().reports(Algorithm::Crc64Nvme);
        let mut out = Vec::new();
        let mut marker: u32 = 0;
        loop {
            let mut req = self
                .req(OP, Method::GET, Some(key))
                .query("uploadId", upload_id)
                .query("max-parts", "1000");
            if marker > 0 {
                req = req.query("part-number-marker", marker.to_string());
            }
            let resp = self.client.send(req.buffered()).await?;
            let mut page =
                xml::parse_list_parts(&resp.body, md5).map_err(|e| S3Error::protocol(OP, e))?;
            if !nvme {
                for p in &mut page.parts {
                    p.checksums = p
                        .checksums
                        .iter()
                        .filter(|c| c.algorithm() != Algorithm::Crc64Nvme)
                        .fold(Checksums::new(), |acc, c| acc.with(c));
                }
            }
            let last = page.parts.last().map(|p| p.number);
            out.extend(page.parts);
            if !page.is_truncated {
                break;
            }
            let next = page.next_part_number_marker.or(last).unwrap_or(0);
            if next <= marker {
                return Err(S3Error::protocol(
                    OP,
                    format!("pagination marker did not advance past {marker}"),
                ));
            }
            marker = next;
        }
        Ok(out)
    }

    /// In-progress multipart uploads under `prefix` (all pages), for `uploads list`.
    pub async fn list_multipart_uploads(
        &self,
        prefix: Option<&str>,
    ) -> Result<Vec<ListedUpload>, S3Error> {
        const OP: &str = "ListMultipartUploads";
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut req = S3Request::new(OP, Method::GET, Some(&self.name), None)
                .query("uploads", "")
                .query("max-uploads", "1000")
                .query("encoding-type", "url");
            if let Some(p) = prefix {
                req = req.query("prefix", p);
            }
            if !key_marker.is_empty() {
                req = req
                    .query("key-marker", key_marker.clone())
                    .query("upload-id-marker", id_marker.clone());
            }
            let resp = self.client.send(req.buffered()).await?;
            let page = xml::parse_list_uploads(&resp.body).map_err(|e| S3Error::protocol(OP, e))?;
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
                    return Err(S3Error::protocol(
                        OP,
                        "truncated page without a next marker",
                    ))
                }
            };
            if (nk.as_str(), ni.as_str()) == (key_marker.as_str(), id_marker.as_str()) {
                return Err(S3Error::protocol(OP, "pagination markers did not advance"));
            }
            key_marker = nk;
            id_marker = ni;
        }
        Ok(out)
    }

    /// DeleteObject (a missing key is not an error on S3).
    pub async fn delete_object(&self, key: &str) -> Result<(), S3Error> {
        let resp = self
            .client
            .send(self.req("DeleteObject", Method::DELETE, Some(key)))
            .await?;
        drain(&self.client, resp).await;
        Ok(())
    }
}

async fn drain(client: &S3Client, resp: S3Response) {
    let _ = read_all(client, resp, "drain").await;
}

fn with_put_options<'a>(
    mut req: S3Request<'a>,
    opts: &PutOptions,
) -> Result<S3Request<'a>, S3Error> {
    if let Some(ct) = &opts.content_type {
        req = req.header("content-type", ct)?;
    }
    for (k, v) in &opts.user_meta {
        req = req.header(&format!("x-amz-meta-{}", k.to_ascii_lowercase()), v)?;
    }
    Ok(req)
}

#[async_trait]
impl ObjectStore for S3Bucket {
    fn describe(&self, key: &str) -> String {
        self.target(key)
    }

    fn limits(&self) -> Limits {
        self.client.provider().limits()
    }

    fn checksums(&self) -> ChecksumCaps {
        self.client
            .provider()
            .checksum_caps(self.client.inner.quirks)
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
        Ok(S3Bucket::get_range(self, key, start, end, if_match).await?)
    }

    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        len: u64,
        opts: &PutOptions,
    ) -> Result<Uploaded, StoreError> {
        Ok(self
            .put_object(key, body, len, opts, &Checksums::new())
            .await?)
    }

    async fn create_multipart(
        &self,
        key: &str,
        _total_size: u64,
        opts: &PutOptions,
    ) -> Result<String, StoreError> {
        Ok(self.create_multipart_upload(key, opts).await?)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartSpec,
        body: ByteStream,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        Ok(
            S3Bucket::upload_part(self, key, upload_id, part.number, body, part.len, expected)
                .await?,
        )
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, StoreError> {
        Ok(S3Bucket::list_parts(self, key, upload_id).await?)
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        size: u64,
        expected: &Checksums,
    ) -> Result<Uploaded, StoreError> {
        Ok(self
            .complete_multipart_upload(key, upload_id, parts, size, expected)
            .await?)
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        Ok(self.abort_multipart_upload(key, upload_id).await?)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Ok(self.delete_object(key).await?)
    }
}
