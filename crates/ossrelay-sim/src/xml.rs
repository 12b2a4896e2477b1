//! XML helpers: escaping, OSS dates, `encoding-type=url`, and the few request bodies the
//! simulator parses (CompleteMultipartUpload, lifecycle configuration).

use std::time::SystemTime;

use quick_xml::events::Event;

pub const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// Escapes text for element content (quotes stay literal, as in OSS's `<ETag>"…"</ETag>`).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `<name>escaped value</name>`.
pub fn el(name: &str, value: &str) -> String {
    format!("<{name}>{}</{name}>", esc(value))
}

/// ISO-8601 UTC with milliseconds, as OSS writes dates in XML.
pub fn iso(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.format("%Y-%m-%dT%H:%M:%S.000Z").to_string()
}

/// `encoding-type=url`: every byte outside `[A-Za-z0-9-_.~]` becomes `%XX`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One `<Part>` of a CompleteMultipartUpload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub number: u32,
    /// ETag as sent, quotes stripped.
    pub etag: String,
    /// `<Checksum<ALG>>` elements as `(alg in lower case, value)`, e.g. `("crc64nvme", "…")`.
    pub checksums: Vec<(String, String)>,
}

/// Parses a CompleteMultipartUpload body; `None` means MalformedXML.
pub fn parse_complete(body: &[u8]) -> Option<Vec<ListedPart>> {
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut parts = Vec::new();
    let mut number: Option<u32> = None;
    let mut etag: Option<String> = None;
    let mut checksums: Vec<(String, String)> = Vec::new();
    let mut saw_root = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                if path.is_empty() {
                    if name != "CompleteMultipartUpload" {
                        return None;
                    }
                    saw_root = true;
                }
                if name == "Part" {
                    number = None;
                    etag = None;
                    checksums.clear();
                }
                path.push(name);
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                if path.is_empty() {
                    return (name == "CompleteMultipartUpload").then(Vec::new);
                }
                if name == "ETag" && path.last().map(String::as_str) == Some("Part") {
                    etag = Some(String::new());
                }
            }
            Event::Text(t) => {
                let text = t.unescape().ok()?.to_string();
                match path.last().map(String::as_str) {
                    Some("PartNumber") => number = Some(text.trim().parse().ok()?),
                    Some("ETag") => etag = Some(text.trim().trim_matches('"').to_string()),
                    Some(n) if n.starts_with("Checksum") && path.len() >= 2 => checksums.push((
                        n["Checksum".len()..].to_ascii_lowercase(),
                        text.trim().to_string(),
                    )),
                    _ => {}
                }
            }
            Event::End(_) => {
                let name = path.pop()?;
                if name == "Part" {
                    parts.push(ListedPart {
                        number: number.take()?,
                        etag: etag.take()?,
                        checksums: std::mem::take(&mut checksums),
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (saw_root && path.is_empty()).then_some(parts)
}

/// Checks that a lifecycle configuration is well-formed XML with the right root and at least
/// one `<Rule>`; returns the body to store (with an XML declaration).
pub fn check_lifecycle(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut root_ok = false;
    let mut rules = 0usize;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let name = e.local_name();
                if depth == 0 {
                    root_ok = name.as_ref() == b"LifecycleConfiguration";
                } else if depth == 1 && name.as_ref() == b"Rule" {
                    rules += 1;
                }
                depth += 1;
            }
            Event::End(_) => depth = depth.checked_sub(1)?,
            Event::Eof => break,
            _ => {}
        }
    }
    if !root_ok || depth != 0 || rules == 0 {
        return None;
    }
    let trimmed = text.trim_start();
    Some(if trimmed.starts_with("<?xml") {
        trimmed.to_string()
    } else {
        format!("{DECL}{trimmed}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_body_forms() {
        let one_line = br#"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"AB"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>CD</ETag></Part></CompleteMultipartUpload>"#;
        assert_eq!(
            parse_complete(one_line).unwrap(),
            vec![
                ListedPart {
                    number: 1,
                    etag: "AB".into(),
                    checksums: vec![]
                },
                ListedPart {
                    number: 2,
                    etag: "CD".into(),
                    checksums: vec![]
                }
            ]
        );
        let pretty = b"<?xml version=\"1.0\"?>\n<CompleteMultipartUpload xmlns=\"x\">\n  <Part>\n    <PartNumber>3</PartNumber>\n    <ETag>&quot;EF&quot;</ETag>\n  </Part>\n</CompleteMultipartUpload>";
        assert_eq!(parse_complete(pretty).unwrap()[0].etag, "EF");
        let summed = b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag><ChecksumCRC64NVME>rosUhgp5mIg=</ChecksumCRC64NVME></Part><Part><PartNumber>2</PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>";
        let p = parse_complete(summed).unwrap();
        assert_eq!(
            p[0].checksums,
            vec![("crc64nvme".to_string(), "rosUhgp5mIg=".to_string())]
        );
        assert!(p[1].checksums.is_empty());
        assert!(parse_complete(b"<Complete><Part/></Complete>").is_none());
        assert!(parse_complete(b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>").is_none());
        assert!(parse_complete(
            b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>"
        )
        .is_none());
        assert!(parse_complete(b"not xml").is_none());
        assert!(parse_complete(b"<CompleteMultipartUpload><Part>").is_none());
    }

    #[test]
    fn lifecycle_check() {
        let ok = b"<LifecycleConfiguration><Rule><ID>r</ID><Prefix>a/</Prefix><Status>Enabled</Status><AbortMultipartUpload><Days>7</Days></AbortMultipartUpload></Rule></LifecycleConfiguration>";
        let stored = check_lifecycle(ok).unwrap();
        assert!(stored.starts_with("<?xml"));
        assert!(stored.contains("<AbortMultipartUpload><Days>7</Days>"));
        assert!(check_lifecycle(b"<LifecycleConfiguration></LifecycleConfiguration>").is_none());
        assert!(check_lifecycle(b"<Other><Rule/></Other>").is_none());
        assert!(check_lifecycle(b"<LifecycleConfiguration><Rule>").is_none());
    }

    #[test]
    fn url_encoding_rule() {
        assert_eq!(url_encode("demo/gp-\x0c\n\x0b"), "demo%2Fgp-%0C%0A%0B");
        assert_eq!(url_encode("a b+c~"), "a%20b%2Bc~");
    }
}
