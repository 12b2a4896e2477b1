//! A small element tree for AWS Query answers (EC2, IAM, STS).
//!
//! Guarantees callers can rely on:
//! * Names are local names: namespaces and prefixes are dropped, because EC2 sends
//!   `xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"` while its model spells the namespace
//!   without the trailing slash, and IAM/STS use yet another one; nothing here depends on them.
//! * Element text is unescaped and trimmed; attributes are ignored (Query answers carry none
//!   that matter).
//! * Bounded: the caller limits the body size ([`crate::http::Transport::fetch`]), and nesting
//!   deeper than [`MAX_DEPTH`] is refused, so a hostile answer cannot exhaust the stack.
//!
//! Why a tree and not serde: EC2's answers are lowerCamel with `<xxxSet><item>` lists, IAM's
//! PascalCase with `<member>` lists, fields come and go between API versions, and a missing
//! field must read as "absent", not fail the whole answer. Looking fields up by name on a tree
//! is the lenient reading botocore's parsers do.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deeper nesting than any Query answer has.
pub const MAX_DEPTH: usize = 64;

/// One element: its local name, its trimmed text, its child elements in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at `path` (child names from here), if every step exists.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |n, name| n.child(name))
    }

    /// Text of the element at `path`; `None` when absent or empty.
    pub fn text_at(&self, path: &[&str]) -> Option<String> {
        self.at(path)
            .map(|n| n.text.clone())
            .filter(|t| !t.is_empty())
    }

    /// Text of the element at `path`, empty when absent.
    pub fn string_at(&self, path: &[&str]) -> String {
        self.text_at(path).unwrap_or_default()
    }

    /// The `<item>` (EC2) or `<member>` (IAM/STS) elements of the list at `path`; empty when
    /// the list is absent.
    pub fn items_at<'a>(&'a self, path: &[&str]) -> Vec<&'a Node> {
        self.at(path)
            .map(|l| {
                l.children
                    .iter()
                    .filter(|c| c.name == "item" || c.name == "member")
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Parses a document into its root element, or says why it is not XML.
pub fn parse(body: &[u8]) -> Result<Node, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_string())?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                stack.push(Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Node::default()
                });
            }
            Ok(Event::Empty(e)) => {
                let node = Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Node::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None if root.is_none() => root = Some(node),
                    None => return Err("content after the root element".into()),
                }
            }
            Ok(Event::End(_)) => {
                let mut node = stack.pop().ok_or("unbalanced end tag")?;
                node.text = node.text.trim().to_string();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(top) = stack.last_mut() {
                    let s = t.unescape().map_err(|e| format!("bad text: {e}"))?;
                    top.text.push_str(&s);
                }
            }
            Ok(Event::CData(t)) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("not well-formed XML: {e}")),
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "no XML element in the answer".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_namespaces_and_reads_lists() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r-1</requestId>
  <imagesSet>
    <item><imageId>ami-1</imageId><name>a &amp; b</name></item>
    <item><imageId>ami-2</imageId><description/></item>
  </imagesSet>
</DescribeImagesResponse>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "DescribeImagesResponse");
        assert_eq!(root.text_at(&["requestId"]).as_deref(), Some("r-1"));
        let items = root.items_at(&["imagesSet"]);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].string_at(&["name"]), "a & b");
        assert_eq!(items[1].text_at(&["description"]), None);
        assert!(root.items_at(&["nothing"]).is_empty());

        let prefixed = parse(b"<a:Root xmlns:a=\"urn:x\"><a:Child>v</a:Child></a:Root>").unwrap();
        assert_eq!(prefixed.string_at(&["Child"]), "v");
    }

    #[test]
    fn refuses_broken_and_hostile_documents() {
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a>").is_err());
        assert!(parse(b"plain text").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
        let deep = "<x>".repeat(MAX_DEPTH + 1) + &"</x>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
    }
}
