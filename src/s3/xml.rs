//! S3 XML bodies: readers for the responses we use, the CompleteMultipartUpload writer.
//!
//! Contract: readers ignore unknown elements and namespaces and tolerate leading whitespace
//! (S3 sends keep-alive spaces before a slow Complete's body). The element tree itself is the
//! S3-family parser shared with the OSS dialect ([`crate::store::wire::parse`]); the typed readers
//! here are S3's own because the element sets differ (`ChecksumCRC64NVME`, no CRC-64/XZ).

use base64::Engine as _;

use crate::checksum::{Checksum, Checksums};
use crate::store::wire::{parse, unquote_etag, XmlElement};
use crate::store::{ListedPart, ListedUpload};

/// The S3 namespace written into request bodies.
pub const NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

fn root(body: &[u8], name: &str) -> Result<XmlElement, String> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let r = parse(&body[start..]).map_err(|e| e.to_string())?;
    if r.name != name {
        return Err(format!("expected <{name}>, got <{}>", r.name));
    }
    Ok(r)
}

fn text<'a>(e: &'a XmlElement, name: &str) -> Option<&'a str> {
    e.child_text(name).map(str::trim).filter(|s| !s.is_empty())
}

fn truthy(s: Option<&str>) -> bool {
    s.is_some_and(|s| s.eq_ignore_ascii_case("true"))
}

/// A FULL_OBJECT `x-amz-checksum-crc64nvme` value: base64 of the big-endian 8 bytes.
/// COMPOSITE values (`…-N`) and anything malformed give `None`: they cannot be checked.
pub fn parse_crc64nvme(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.contains('-') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The wire form of a CRC-64/NVME.
pub fn crc64nvme_b64(v: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_be_bytes())
}

/// The MD5 an ETag stands for, when it is 32 hex digits (single-part uploads and parts).
pub fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let e = unquote_etag(etag);
    if e.len() != 32 {
        return None;
    }
    hex::decode(e.to_ascii_lowercase()).ok()?.try_into().ok()
}

/// `UploadId` of an InitiateMultipartUploadResult.
pub fn parse_initiate(body: &[u8]) -> Result<String, String> {
    let r = root(body, "InitiateMultipartUploadResult")?;
    text(&r, "UploadId")
        .map(str::to_string)
        .ok_or_else(|| "InitiateMultipartUploadResult without UploadId".into())
}

/// What a CompleteMultipartUploadResult says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompleteResult {
    pub etag: Option<String>,
    /// FULL_OBJECT CRC-64/NVME, when the result carries one.
    pub crc64nvme: Option<u64>,
}

/// Parses a Complete body; `Ok(None)` when it is an `<Error>` (the caller maps it).
pub fn parse_complete(body: &[u8]) -> Result<Option<CompleteResult>, String> {
    match root(body, "CompleteMultipartUploadResult") {
        Ok(r) => {
            let composite = text(&r, "ChecksumType").is_some_and(|t| t != "FULL_OBJECT");
            Ok(Some(CompleteResult {
                etag: text(&r, "ETag").map(unquote_etag),
                crc64nvme: text(&r, "ChecksumCRC64NVME")
                    .filter(|_| !composite)
                    .and_then(parse_crc64nvme),
            }))
        }
        Err(e) => match root(body, "Error") {
            Ok(_) => Ok(None),
            Err(_) => Err(e),
        },
    }
}

/// The body of CompleteMultipartUpload for these `(part number, etag)` pairs.
pub fn build_complete(parts: &[(u32, String)]) -> String {
    let mut s = String::with_capacity(96 + parts.len() * 96);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"");
    s.push_str(NS);
    s.push_str("\">");
    for (n, etag) in parts {
        s.push_str("<Part><PartNumber>");
        s.push_str(&n.to_string());
        s.push_str("</PartNumber><ETag>&quot;");
        for c in unquote_etag(etag).chars() {
            match c {
                '<' => s.push_str("&lt;"),
                '>' => s.push_str("&gt;"),
                '&' => s.push_str("&amp;"),
                '"' => s.push_str("&quot;"),
                c => s.push(c),
            }
        }
        s.push_str("&quot;</ETag></Part>");
    }
    s.push_str("</CompleteMultipartUpload>");
    s
}

/// One page of ListParts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPartsPage {
    pub parts: Vec<ListedPart>,
    pub is_truncated: bool,
    pub next_part_number_marker: Option<u32>,
}

/// Parses a ListPartsResult page; `etag_is_md5` says whether part ETags stand for MD5s.
pub fn parse_list_parts(body: &[u8], etag_is_md5: bool) -> Result<ListPartsPage, String> {
    let r = root(body, "ListPartsResult")?;
    let mut parts = Vec::new();
    for p in r.children_named("Part") {
        let number = text(p, "PartNumber")
            .and_then(|s| s.parse().ok())
            .ok_or("Part without a valid PartNumber")?;
        let size = text(p, "Size")
            .and_then(|s| s.parse().ok())
            .ok_or("Part without a valid Size")?;
        let etag = text(p, "ETag").map(unquote_etag).unwrap_or_default();
        let mut checksums = Checksums::new();
        // A part's own CRC is a plain CRC of its bytes under either checksum type; COMPOSITE
        // only changes what the whole object's value means.
        if let Some(v) = text(p, "ChecksumCRC64NVME").and_then(parse_crc64nvme) {
            checksums.insert(Checksum::Crc64Nvme(v));
        }
        if etag_is_md5 {
            if let Some(d) = etag_md5(&etag) {
                checksums.insert(Checksum::Md5(d));
            }
        }
        parts.push(ListedPart {
            number,
            size,
            etag,
            checksums,
        });
    }
    Ok(ListPartsPage {
        parts,
        is_truncated: truthy(text(&r, "IsTruncated")),
        next_part_number_marker: text(&r, "NextPartNumberMarker").and_then(|s| s.parse().ok()),
    })
}

/// One page of ListMultipartUploads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUploadsPage {
    pub uploads: Vec<ListedUpload>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// Parses a ListMultipartUploadsResult page (keys URL-decoded when `EncodingType` is `url`).
pub fn parse_list_uploads(body: &[u8]) -> Result<ListUploadsPage, String> {
    let r = root(body, "ListMultipartUploadsResult")?;
    let url = text(&r, "EncodingType").is_some_and(|t| t.eq_ignore_ascii_case("url"));
    let decode = |s: &str| {
        if url {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        } else {
            s.to_string()
        }
    };
    let mut uploads = Vec::new();
    for u in r.children_named("Upload") {
        uploads.push(ListedUpload {
            key: decode(text(u, "Key").ok_or("Upload without Key")?),
            upload_id: text(u, "UploadId")
                .ok_or("Upload without UploadId")?
                .to_string(),
            initiated: text(u, "Initiated").unwrap_or_default().to_string(),
        });
    }
    Ok(ListUploadsPage {
        uploads,
        is_truncated: truthy(text(&r, "IsTruncated")),
        next_key_marker: text(&r, "NextKeyMarker").map(decode),
        next_upload_id_marker: text(&r, "NextUploadIdMarker").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64nvme_wire_form() {
        // s3-protocol.md §7: check("123456789") = 0xAE8B14860A799888 = rosUhgp5mIg=.
        assert_eq!(parse_crc64nvme("rosUhgp5mIg="), Some(0xAE8B14860A799888));
        assert_eq!(crc64nvme_b64(0xAE8B14860A799888), "rosUhgp5mIg=");
        assert_eq!(parse_crc64nvme("rosUhgp5mIg=-3"), None);
        assert_eq!(parse_crc64nvme("AAAA"), None);
    }

    #[test]
    fn etags() {
        assert!(etag_md5("\"d41d8cd98f00b204e9800998ecf8427e\"").is_some());
        assert!(etag_md5("\"d41d8cd98f00b204e9800998ecf8427e-2\"").is_none());
    }

    #[test]
    fn list_parts_page() {
        let body = br#"  <?xml version="1.0"?><ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
          <IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>
          <Part><PartNumber>1</PartNumber><ETag>"d41d8cd98f00b204e9800998ecf8427e"</ETag><Size>5</Size><ChecksumCRC64NVME>rosUhgp5mIg=</ChecksumCRC64NVME></Part>
          <Part><PartNumber>2</PartNumber><ETag>"x"</ETag><Size>7</Size></Part></ListPartsResult>"#;
        let p = parse_list_parts(body, true).unwrap();
        assert!(p.is_truncated);
        assert_eq!(p.next_part_number_marker, Some(2));
        assert_eq!(p.parts[0].checksums.crc64_nvme(), Some(0xAE8B14860A799888));
        assert!(p.parts[0]
            .checksums
            .get(crate::checksum::Algorithm::Md5)
            .is_some());
        assert!(p.parts[1].checksums.is_empty());
    }

    #[test]
    fn complete_bodies() {
        let ok = b"\n   <CompleteMultipartUploadResult><ETag>\"abc-2\"</ETag><ChecksumCRC64NVME>rosUhgp5mIg=</ChecksumCRC64NVME><ChecksumType>FULL_OBJECT</ChecksumType></CompleteMultipartUploadResult>";
        let r = parse_complete(ok).unwrap().unwrap();
        assert_eq!(r.etag.as_deref(), Some("abc-2"));
        assert_eq!(r.crc64nvme, Some(0xAE8B14860A799888));
        assert_eq!(
            parse_complete(b"  <Error><Code>InternalError</Code></Error>").unwrap(),
            None
        );
        assert!(parse_complete(b"garbage").is_err());
        let b = build_complete(&[(1, "\"a\"".into()), (2, "b".into())]);
        assert!(
            b.contains("<Part><PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag></Part>"),
            "{b}"
        );
    }

    #[test]
    fn list_uploads_decodes_keys() {
        let body = b"<ListMultipartUploadsResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated><Upload><Key>a%20b</Key><UploadId>U1</UploadId><Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload></ListMultipartUploadsResult>";
        let p = parse_list_uploads(body).unwrap();
        assert_eq!(p.uploads[0].key, "a b");
        assert!(!p.is_truncated);
    }
}
