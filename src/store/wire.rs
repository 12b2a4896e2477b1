//! What the S3-family dialects (OSS, S3) share on the wire and nothing else: the XML element
//! tree their bodies parse into, ETag unquoting, the one-line rule for server-provided text,
//! the clock offset learned from a server's `Date`, and the ID prefix of the lifecycle rules
//! ossrelay adds. Both `crate::oss` and `crate::s3` import it; neither imports the other.
//!
//! Guarantees: the parser ignores namespaces and attributes, never pre-allocates from counts
//! a server claims, and caps nesting depth; [`one_line`] output has no control or bidi
//! characters and a bounded length.

use std::time::SystemTime;

use quick_xml::events::Event;
use quick_xml::Reader;

/// ID of the lifecycle rules `uploads protect` adds, followed by the prefix they cover (one
/// convention for OSS and S3, so a user finds the same name in either console).
pub const ABORT_RULE_ID_PREFIX: &str = "ossrelay-abort-incomplete-";

const MAX_DEPTH: usize = 64;

/// A parsed XML element: local name, text content and child elements (attributes dropped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmlElement {
    pub name: String,
    /// Text directly inside this element (unescaped, untrimmed).
    pub text: String,
    pub children: Vec<XmlElement>,
}

/// A malformed XML response.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed XML: {0}")]
pub struct XmlError(pub String);

impl XmlElement {
    /// An element with only text.
    pub fn leaf(name: &str, text: impl Into<String>) -> Self {
        XmlElement {
            name: name.to_string(),
            text: text.into(),
            children: Vec::new(),
        }
    }

    /// The first child with this name.
    pub fn child(&self, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Children with this name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a XmlElement> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Text of the first child with this name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Trimmed text of the first child with this name; `None` when absent or blank.
    pub fn child_trimmed(&self, name: &str) -> Option<&str> {
        self.child_text(name)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// Serialises this element (no XML declaration).
    pub fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        out.push('>');
        if self.children.is_empty() {
            escape_into(&self.text, out);
        } else {
            for c in &self.children {
                c.write(out);
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Appends `s` with the five XML special characters escaped.
pub fn escape_into(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

fn local_name(raw: &[u8]) -> String {
    let n = match raw.iter().rposition(|&b| b == b':') {
        Some(i) => &raw[i + 1..],
        None => raw,
    };
    String::from_utf8_lossy(n).into_owned()
}

/// Parses a document into its root element.
pub fn parse(xml: &[u8]) -> Result<XmlElement, XmlError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<XmlElement> = Vec::new();
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| XmlError(format!("at byte {}: {e}", reader.buffer_position())))?;
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError("nesting too deep".into()));
                }
                stack.push(XmlElement {
                    name: local_name(e.name().as_ref()),
                    ..Default::default()
                });
            }
            Event::Empty(e) => {
                let el = XmlElement {
                    name: local_name(e.name().as_ref()),
                    ..Default::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t
                        .unescape()
                        .map_err(|e| XmlError(format!("bad text: {e}")))?;
                    top.text.push_str(&s);
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&c.into_inner()));
                }
            }
            Event::Eof => {
                return Err(XmlError(
                    "document ended before the root element closed".into(),
                ))
            }
            _ => {}
        }
    }
}

/// Strips the quotes around an ETag.
pub fn unquote_etag(s: &str) -> String {
    s.trim().trim_matches('"').to_string()
}

/// Makes server-provided text safe for a one-line error: control characters (newlines
/// included) and bidi overrides become spaces, runs of them collapse, and the result is cut at
/// `max` characters (with `…`).
pub fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 4));
    let mut space = false;
    for (n, c) in s.trim().chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        let bad = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
        if bad || c == ' ' {
            if !space {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    out.trim_end().to_string()
}

/// The offset (milliseconds, server minus local) to add to the local clock.
pub fn clock_offset_ms(server_time: SystemTime, local_time: SystemTime) -> i64 {
    match server_time.duration_since(local_time) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_becomes_one_safe_line() {
        assert_eq!(
            one_line("  a\r\n\tb\u{202e}c \u{1b}[31m ", 100),
            "a b c [31m"
        );
        assert_eq!(one_line(&"x".repeat(10), 4), "xxxx…");
        assert_eq!(one_line("", 4), "");
    }

    #[test]
    fn parses_a_tree_and_refuses_deep_nesting() {
        let root = parse(b"<a xmlns=\"x\"><b> t </b><c/></a>").unwrap();
        assert_eq!(root.child_text("b"), Some(" t "));
        assert_eq!(root.child_trimmed("b"), Some("t"));
        assert!(root.child("c").is_some());
        let deep = "<a>".repeat(100);
        assert!(parse(deep.as_bytes()).is_err());
        assert_eq!(unquote_etag(" \"AB\" "), "AB");
    }
}
