//! XML bodies of the OSS dialect: typed readers for the responses we use and writers for the
//! request bodies we send, on the S3-family element tree of [`crate::store::wire`] (its
//! parser, element and error are re-exported here).
//!
//! Parsers ignore unknown elements and namespaces, never pre-allocate from counts the
//! server claims, and cap nesting depth.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

use crate::checksum::Checksum;
use crate::store::wire::escape_into;
pub use crate::store::wire::{parse, unquote_etag, XmlElement, XmlError};
use crate::store::{ListedPart, ListedUpload};

fn expect_root(xml: &[u8], name: &str) -> Result<XmlElement, XmlError> {
    let root = parse(xml)?;
    if root.name != name {
        return Err(XmlError(format!("expected <{name}>, got <{}>", root.name)));
    }
    Ok(root)
}

/// Top-level fields of an `<Error>` document (empty map if it is not one).
pub fn parse_error_fields(xml: &[u8]) -> HashMap<String, String> {
    match parse(xml) {
        Ok(root) if root.name == "Error" => root
            .children
            .into_iter()
            .map(|c| (c.name, c.text.trim().to_string()))
            .collect(),
        _ => HashMap::new(),
    }
}

fn parse_bool(s: Option<&str>) -> bool {
    matches!(s.map(str::trim), Some("true") | Some("True") | Some("TRUE"))
}

fn url_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `UploadId` of an InitiateMultipartUploadResult.
pub fn parse_initiate(xml: &[u8]) -> Result<String, XmlError> {
    let root = expect_root(xml, "InitiateMultipartUploadResult")?;
    root.child_trimmed("UploadId")
        .map(str::to_string)
        .ok_or_else(|| XmlError("InitiateMultipartUploadResult without UploadId".into()))
}

/// `ETag` (unquoted) of a CompleteMultipartUploadResult, if present.
pub fn parse_complete(xml: &[u8]) -> Result<Option<String>, XmlError> {
    let root = expect_root(xml, "CompleteMultipartUploadResult")?;
    Ok(root.child_trimmed("ETag").map(unquote_etag))
}

/// The body of CompleteMultipartUpload for these `(part number, etag)` pairs.
pub fn build_complete(parts: &[(u32, String)]) -> String {
    let mut s = String::with_capacity(64 + parts.len() * 96);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload>");
    for (n, etag) in parts {
        s.push_str("<Part><PartNumber>");
        s.push_str(&n.to_string());
        s.push_str("</PartNumber><ETag>\"");
        escape_into(&unquote_etag(etag), &mut s);
        s.push_str("\"</ETag></Part>");
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

/// Parses a ListPartsResult page.
pub fn parse_list_parts(xml: &[u8]) -> Result<ListPartsPage, XmlError> {
    let root = expect_root(xml, "ListPartsResult")?;
    let mut page = ListPartsPage {
        is_truncated: parse_bool(root.child_text("IsTruncated")),
        next_part_number_marker: root
            .child_trimmed("NextPartNumberMarker")
            .and_then(|s| s.parse().ok()),
        parts: Vec::new(),
    };
    for p in root.children_named("Part") {
        let number = p
            .child_trimmed("PartNumber")
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| XmlError("Part without a valid PartNumber".into()))?;
        let size = p
            .child_trimmed("Size")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| XmlError(format!("part {number} without a valid Size")))?;
        page.parts.push(ListedPart {
            number,
            size,
            etag: p.child_text("ETag").map(unquote_etag).unwrap_or_default(),
            checksums: p
                .child_trimmed("HashCrc64ecma")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|c| Checksum::Crc64Xz(c).into())
                .unwrap_or_default(),
        });
    }
    Ok(page)
}

/// One page of ListMultipartUploads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUploadsPage {
    pub uploads: Vec<ListedUpload>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// Parses a ListMultipartUploadsResult page (decoding keys if `EncodingType` is `url`).
pub fn parse_list_uploads(xml: &[u8]) -> Result<ListUploadsPage, XmlError> {
    let root = expect_root(xml, "ListMultipartUploadsResult")?;
    let url = root.child_trimmed("EncodingType") == Some("url");
    let dec = |s: &str| if url { url_decode(s) } else { s.to_string() };
    let mut page = ListUploadsPage {
        is_truncated: parse_bool(root.child_text("IsTruncated")),
        next_key_marker: root
            .child_text("NextKeyMarker")
            .filter(|s| !s.is_empty())
            .map(dec),
        next_upload_id_marker: root.child_trimmed("NextUploadIdMarker").map(str::to_string),
        uploads: Vec::new(),
    };
    for u in root.children_named("Upload") {
        let (Some(key), Some(id)) = (u.child_text("Key"), u.child_trimmed("UploadId")) else {
            return Err(XmlError("Upload without Key or UploadId".into()));
        };
        page.uploads.push(ListedUpload {
            key: dec(key),
            upload_id: id.to_string(),
            initiated: u.child_trimmed("Initiated").unwrap_or_default().to_string(),
        });
    }
    Ok(page)
}

/// What GetBucketInfo reports that the relay cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    /// OSS region id as reported, e.g. `oss-cn-hangzhou`.
    pub location: String,
    /// Region id without the `oss-` prefix, e.g. `cn-hangzhou`.
    pub region: String,
    pub extranet_endpoint: Option<String>,
    pub intranet_endpoint: Option<String>,
    pub storage_class: Option<String>,
    pub creation_date: Option<String>,
    pub owner_id: Option<String>,
    pub owner_display_name: Option<String>,
    pub versioning: Option<String>,
}

/// Parses a BucketInfo document.
pub fn parse_bucket_info(xml: &[u8]) -> Result<BucketInfo, XmlError> {
    let root = expect_root(xml, "BucketInfo")?;
    let b = root
        .child("Bucket")
        .ok_or_else(|| XmlError("BucketInfo without Bucket".into()))?;
    let s = |n: &str| b.child_trimmed(n).map(str::to_string);
    let location = s("Location").unwrap_or_default();
    let owner = b.child("Owner");
    Ok(BucketInfo {
        name: s("Name").unwrap_or_default(),
        region: location
            .strip_prefix("oss-")
            .unwrap_or(&location)
            .to_string(),
        location,
        extranet_endpoint: s("ExtranetEndpoint"),
        intranet_endpoint: s("IntranetEndpoint"),
        storage_class: s("StorageClass"),
        creation_date: s("CreationDate"),
        owner_id: owner
            .and_then(|o| o.child_trimmed("ID"))
            .map(str::to_string),
        owner_display_name: owner
            .and_then(|o| o.child_trimmed("DisplayName"))
            .map(str::to_string),
        versioning: s("Versioning"),
    })
}

/// A bucket's lifecycle configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleConfiguration {
    pub rules: Vec<LifecycleRule>,
}

/// One lifecycle rule. Elements this model does not know (Transition, Tag, Filter, ...)
/// are kept in `other` and written back, so merging a rule never loses another's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleRule {
    pub id: Option<String>,
    pub prefix: Option<String>,
    /// `Enabled` or `Disabled`.
    pub status: String,
    pub expiration: Option<LifecycleAction>,
    pub abort_multipart_upload: Option<LifecycleAction>,
    pub other: Vec<XmlElement>,
}

/// An Expiration or AbortMultipartUpload action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleAction {
    pub days: Option<u32>,
    pub created_before_date: Option<String>,
    /// Other children (`Date`, `ExpiredObjectDeleteMarker`, ...), preserved.
    pub other: Vec<XmlElement>,
}

impl LifecycleAction {
    /// An action that fires `days` after creation/initiation.
    pub fn after_days(days: u32) -> Self {
        LifecycleAction {
            days: Some(days),
            ..Default::default()
        }
    }

    fn from_xml(el: &XmlElement) -> Result<Self, XmlError> {
        let mut a = LifecycleAction::default();
        for c in &el.children {
            match c.name.as_str() {
                "Days" => {
                    a.days =
                        Some(c.text.trim().parse().map_err(|_| {
                            XmlError(format!("bad Days {:?} in {}", c.text, el.name))
                        })?)
                }
                "CreatedBeforeDate" => a.created_before_date = Some(c.text.trim().to_string()),
                _ => a.other.push(c.clone()),
            }
        }
        Ok(a)
    }

    fn to_xml(&self, name: &str) -> XmlElement {
        let mut el = XmlElement {
            name: name.to_string(),
            ..Default::default()
        };
        if let Some(d) = self.days {
            el.children.push(XmlElement::leaf("Days", d.to_string()));
        }
        if let Some(d) = &self.created_before_date {
            el.children
                .push(XmlElement::leaf("CreatedBeforeDate", d.clone()));
        }
        el.children.extend(self.other.iter().cloned());
        el
    }
}

/// Parses a LifecycleConfiguration document.
pub fn parse_lifecycle(xml: &[u8]) -> Result<LifecycleConfiguration, XmlError> {
    let root = expect_root(xml, "LifecycleConfiguration")?;
    let mut cfg = LifecycleConfiguration::default();
    for r in root.children_named("Rule") {
        let mut rule = LifecycleRule::default();
        for c in &r.children {
            match c.name.as_str() {
                "ID" => rule.id = Some(c.text.clone()),
                "Prefix" => rule.prefix = Some(c.text.clone()),
                "Status" => rule.status = c.text.trim().to_string(),
                "Expiration" => rule.expiration = Some(LifecycleAction::from_xml(c)?),
                "AbortMultipartUpload" => {
                    rule.abort_multipart_upload = Some(LifecycleAction::from_xml(c)?)
                }
                _ => rule.other.push(c.clone()),
            }
        }
        cfg.rules.push(rule);
    }
    Ok(cfg)
}

/// Serialises a lifecycle configuration for PutBucketLifecycle.
pub fn build_lifecycle(cfg: &LifecycleConfiguration) -> String {
    let mut root = XmlElement {
        name: "LifecycleConfiguration".into(),
        ..Default::default()
    };
    for r in &cfg.rules {
        let mut el = XmlElement {
            name: "Rule".into(),
            ..Default::default()
        };
        if let Some(id) = &r.id {
            el.children.push(XmlElement::leaf("ID", id.clone()));
        }
        // OSS requires Prefix (possibly empty) unless a Filter carries it.
        let has_filter = r.other.iter().any(|o| o.name == "Filter");
        match &r.prefix {
            Some(p) => el.children.push(XmlElement::leaf("Prefix", p.clone())),
            None if !has_filter => el.children.push(XmlElement::leaf("Prefix", "")),
            None => {}
        }
        el.children
            .push(XmlElement::leaf("Status", r.status.clone()));
        if let Some(e) = &r.expiration {
            el.children.push(e.to_xml("Expiration"));
        }
        el.children.extend(r.other.iter().cloned());
        if let Some(a) = &r.abort_multipart_upload {
            el.children.push(a.to_xml("AbortMultipartUpload"));
        }
        root.children.push(el);
    }
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    root.write(&mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Checksums;

    #[test]
    fn list_parts_page() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <EncodingType>url</EncodingType>
  <Bucket>bucket</Bucket>
  <Key>demo%2Fgp-%0C%0A%0B</Key>
  <UploadId>D4E111D4EA834F3ABCE4877B2779****</UploadId>
  <StorageClass>Standard</StorageClass>
  <PartNumberMarker>0</PartNumberMarker>
  <NextPartNumberMarker>2</NextPartNumberMarker>
  <MaxParts>4294967295</MaxParts>
  <IsTruncated>true</IsTruncated>
  <Unknown><Deep>x</Deep></Unknown>
  <Part>
    <PartNumber>1</PartNumber>
    <LastModified>2023-11-22T05:42:34.000Z</LastModified>
    <ETag>"CF3F46D505093571E916FCDD4967****"</ETag>
    <HashCrc64ecma>12066172435287683848</HashCrc64ecma>
    <Size>96316</Size>
  </Part>
  <Part><PartNumber>2</PartNumber><ETag>&quot;AB&quot;</ETag><Size>5</Size></Part>
</ListPartsResult>"#;
        let page = parse_list_parts(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_part_number_marker, Some(2));
        assert_eq!(
            page.parts,
            vec![
                ListedPart {
                    number: 1,
                    size: 96316,
                    etag: "CF3F46D505093571E916FCDD4967****".into(),
                    checksums: Checksum::Crc64Xz(12066172435287683848).into()
                },
                ListedPart {
                    number: 2,
                    size: 5,
                    etag: "AB".into(),
                    checksums: Checksums::new()
                }
            ]
        );
        assert!(parse_list_parts(
            b"<ListPartsResult><Part><Size>1</Size></Part></ListPartsResult>"
        )
        .is_err());
        assert!(parse_list_parts(b"<Other/>").is_err());
        assert!(parse_list_parts(b"<ListPartsResult><Part>").is_err());
    }

    #[test]
    fn list_uploads_page() {
        let xml = br#"<ListMultipartUploadsResult>
  <Bucket>oss-example</Bucket>
  <KeyMarker></KeyMarker>
  <NextKeyMarker>oss.avi</NextKeyMarker>
  <NextUploadIdMarker>0004B99B8E707874FC2D692FA5D77D3F</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads>
  <IsTruncated>false</IsTruncated>
  <Upload><Key>multipart.data</Key><UploadId>0004B999EF518A1FE585B0C9360DC4C8</UploadId><Initiated>2012-02-23T04:18:23.000Z</Initiated></Upload>
  <Upload><Key>oss.avi</Key><UploadId>0004B99B8E707874FC2D692FA5D7****</UploadId><Initiated>2012-02-23T06:14:27.000Z</Initiated></Upload>
  <CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes>
</ListMultipartUploadsResult>"#;
        let page = parse_list_uploads(xml).unwrap();
        assert!(!page.is_truncated);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "oss.avi");
        assert_eq!(page.uploads[0].initiated, "2012-02-23T04:18:23.000Z");
        assert_eq!(page.next_key_marker.as_deref(), Some("oss.avi"));

        let enc = br#"<ListMultipartUploadsResult><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><NextKeyMarker>a%2Fb%20c</NextKeyMarker><NextUploadIdMarker>X</NextUploadIdMarker><Upload><Key>a%2Fb%20c</Key><UploadId>X</UploadId></Upload></ListMultipartUploadsResult>"#;
        let page = parse_list_uploads(enc).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.uploads[0].key, "a/b c");
        assert_eq!(page.next_key_marker.as_deref(), Some("a/b c"));
    }

    #[test]
    fn initiate_complete_and_body() {
        let init = br#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>97BD544A65DB46F9A8735C93917A960F</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(
            parse_initiate(init).unwrap(),
            "97BD544A65DB46F9A8735C93917A960F"
        );
        assert!(parse_initiate(b"<InitiateMultipartUploadResult/>").is_err());
        let done = br#"<CompleteMultipartUploadResult><Location>http://x</Location><Bucket>b</Bucket><Key>k</Key><ETag>"1C787C506EABFB9B45EAAA8DB039F4B2-2"</ETag></CompleteMultipartUploadResult>"#;
        assert_eq!(
            parse_complete(done).unwrap().as_deref(),
            Some("1C787C506EABFB9B45EAAA8DB039F4B2-2")
        );
        let body = build_complete(&[(1, "\"AA\"".into()), (2, "BB".into())]);
        assert!(body.contains("<Part><PartNumber>1</PartNumber><ETag>\"AA\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"BB\"</ETag></Part>"), "{body}");
        let root = parse(body.as_bytes()).unwrap();
        assert_eq!(root.children_named("Part").count(), 2);
    }

    #[test]
    fn bucket_info() {
        let xml = br#"<BucketInfo><Bucket><AccessMonitor>Enabled</AccessMonitor><CreationDate>2013-07-31T10:56:21.000Z</CreationDate><ExtranetEndpoint>oss-cn-hangzhou.aliyuncs.com</ExtranetEndpoint><IntranetEndpoint>oss-cn-hangzhou-internal.aliyuncs.com</IntranetEndpoint><Location>oss-cn-hangzhou</Location><StorageClass>Standard</StorageClass><Name>oss-example</Name><Owner><DisplayName>username</DisplayName><ID>27183473914****</ID></Owner><AccessControlList><Grant>private</Grant></AccessControlList></Bucket></BucketInfo>"#;
        let info = parse_bucket_info(xml).unwrap();
        assert_eq!(info.region, "cn-hangzhou");
        assert_eq!(info.location, "oss-cn-hangzhou");
        assert_eq!(info.name, "oss-example");
        assert_eq!(info.owner_id.as_deref(), Some("27183473914****"));
        assert_eq!(info.owner_display_name.as_deref(), Some("username"));
        assert_eq!(info.storage_class.as_deref(), Some("Standard"));
    }

    #[test]
    fn lifecycle_round_trip_keeps_unknown_elements() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration>
  <Rule>
    <ID>logs</ID>
    <Prefix>logs/</Prefix>
    <Status>Enabled</Status>
    <Expiration><Days>30</Days></Expiration>
    <Transition><Days>7</Days><StorageClass>IA</StorageClass></Transition>
    <Tag><Key>k</Key><Value>a&amp;b</Value></Tag>
  </Rule>
  <Rule>
    <ID>mpu</ID>
    <Prefix></Prefix>
    <Status>Disabled</Status>
    <Expiration><CreatedBeforeDate>2020-01-01T00:00:00.000Z</CreatedBeforeDate><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>
    <AbortMultipartUpload><Days>3</Days></AbortMultipartUpload>
  </Rule>
</LifecycleConfiguration>"#;
        let cfg = parse_lifecycle(xml).unwrap();
        assert_eq!(cfg.rules.len(), 2);
        let r0 = &cfg.rules[0];
        assert_eq!(r0.id.as_deref(), Some("logs"));
        assert_eq!(r0.prefix.as_deref(), Some("logs/"));
        assert_eq!(r0.status, "Enabled");
        assert_eq!(r0.expiration.as_ref().unwrap().days, Some(30));
        assert_eq!(r0.other.len(), 2);
        let r1 = &cfg.rules[1];
        assert_eq!(r1.abort_multipart_upload.as_ref().unwrap().days, Some(3));
        assert_eq!(r1.prefix.as_deref(), Some(""));
        let exp = r1.expiration.as_ref().unwrap();
        assert_eq!(
            exp.created_before_date.as_deref(),
            Some("2020-01-01T00:00:00.000Z")
        );
        assert_eq!(exp.other[0].name, "ExpiredObjectDeleteMarker");

        let out = build_lifecycle(&cfg);
        assert!(out.contains("<Value>a&amp;b</Value>"), "{out}");
        assert!(
            out.contains("<Transition><Days>7</Days><StorageClass>IA</StorageClass></Transition>")
        );
        let again = parse_lifecycle(out.as_bytes()).unwrap();
        assert_eq!(again, cfg);

        // A new rule merged in keeps the old ones.
        let mut merged = cfg.clone();
        merged.rules.push(LifecycleRule {
            id: Some("ossrelay-abort-incomplete".into()),
            prefix: Some("images/".into()),
            status: "Enabled".into(),
            abort_multipart_upload: Some(LifecycleAction::after_days(7)),
            ..Default::default()
        });
        let back = parse_lifecycle(build_lifecycle(&merged).as_bytes()).unwrap();
        assert_eq!(back.rules.len(), 3);
        assert_eq!(back.rules[..2], cfg.rules[..]);
        assert_eq!(
            back.rules[2].abort_multipart_upload.as_ref().unwrap().days,
            Some(7)
        );
    }

    #[test]
    fn error_fields_and_garbage() {
        let f = parse_error_fields(b"<Error><Code>X</Code><Message> m </Message></Error>");
        assert_eq!(f["Code"], "X");
        assert_eq!(f["Message"], "m");
        assert!(parse_error_fields(b"not xml at all").is_empty());
        assert!(parse_error_fields(b"<Other><Code>X</Code></Other>").is_empty());
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
