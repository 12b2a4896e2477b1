//! The lifecycle safety net for forgotten multipart uploads on an S3 bucket, merged into the
//! bucket's rules (`ossrelay uploads protect s3://…`).
//!
//! Contract: every existing rule is written back exactly as read (as an element tree, so
//! actions and filters this module does not model survive); only ossrelay's own rule for the
//! same prefix (by ID) is replaced; nothing is written when an enabled rule for that prefix, or
//! a shorter prefix containing it, already aborts uploads as soon; PutBucketLifecycleConfiguration
//! carries `Content-MD5`, which S3 requires on that call.
//!
//! S3 and OSS spell the same rule differently (`<Filter><Prefix>` and
//! `<AbortIncompleteMultipartUpload><DaysAfterInitiation>` here, `<Prefix>` and
//! `<AbortMultipartUpload><Days>` there), so the merge is this dialect's own; the rule IDs
//! follow one convention ([`ABORT_RULE_ID_PREFIX`] + prefix) so a user sees
//! the same name in both consoles. S3 requires IDs to be unique and at most 255 characters:
//! the prefix is in the ID so that protecting two prefixes gives two rules, and a prefix too
//! long to fit is replaced by a digest of it.

use base64::Engine as _;
use bytes::Bytes;
use http::Method;
use md5::{Digest as _, Md5};

use super::client::{Payload, S3Request};
use super::error::S3Error;
use super::xml::NS;
use super::S3Bucket;
use crate::store::wire::{parse, XmlElement, ABORT_RULE_ID_PREFIX};

/// The longest rule ID S3 accepts.
const MAX_RULE_ID: usize = 255;

/// What `protect` found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtectOutcome {
    /// A rule was added (or, with `dry_run`, would have been).
    Added,
    /// An existing rule already aborts uploads under the prefix within the days asked.
    AlreadyCovered,
}

/// A bucket's lifecycle rules as the element trees S3 returned (`<Rule>` elements).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Lifecycle {
    pub rules: Vec<XmlElement>,
}

/// The ID of ossrelay's rule for `prefix`.
pub fn rule_id(prefix: &str) -> String {
    let id = format!("{}{prefix}", ABORT_RULE_ID_PREFIX);
    if id.len() <= MAX_RULE_ID {
        return id;
    }
    let digest = crate::aws::sigv4::sha256_hex(prefix.as_bytes());
    format!("{}sha256-{digest}", ABORT_RULE_ID_PREFIX)
}

fn text<'a>(e: &'a XmlElement, name: &str) -> Option<&'a str> {
    e.child_text(name).map(str::trim)
}

/// The prefix a rule applies to, when it selects objects by prefix alone: the legacy
/// rule-level `<Prefix>`, `<Filter><Prefix>`, or an empty `<Filter/>` (the whole bucket).
/// `None` for rules narrowed by tags, object sizes or `<And>`: they do not cover every upload.
fn plain_prefix(rule: &XmlElement) -> Option<&str> {
    match (rule.child("Filter"), rule.child("Prefix")) {
        (None, Some(p)) => Some(p.text.as_str()),
        (Some(f), None) => match f.children.as_slice() {
            [] => Some(""),
            [p] if p.name == "Prefix" => Some(p.text.as_str()),
            _ => None,
        },
        // Neither: S3 reads it as the whole bucket; both is invalid and covers nothing sure.
        (None, None) => Some(""),
        (Some(_), Some(_)) => None,
    }
}

/// Whether `rule` already aborts incomplete uploads under `prefix` within `days`.
fn covers(rule: &XmlElement, prefix: &str, days: u32) -> bool {
    text(rule, "Status").is_some_and(|s| s.eq_ignore_ascii_case("Enabled"))
        && plain_prefix(rule).is_some_and(|p| prefix.starts_with(p))
        && rule
            .child("AbortIncompleteMultipartUpload")
            .and_then(|a| text(a, "DaysAfterInitiation"))
            .and_then(|d| d.parse::<u32>().ok())
            .is_some_and(|d| d <= days)
}

/// ossrelay's rule: abort uploads under `prefix` `days` after initiation, nothing else.
fn abort_rule(prefix: &str, days: u32) -> XmlElement {
    let node = |name: &str, children: Vec<XmlElement>| XmlElement {
        name: name.into(),
        text: String::new(),
        children,
    };
    node(
        "Rule",
        vec![
            XmlElement::leaf("ID", rule_id(prefix)),
            node("Filter", vec![XmlElement::leaf("Prefix", prefix)]),
            XmlElement::leaf("Status", "Enabled"),
            node(
                "AbortIncompleteMultipartUpload",
                vec![XmlElement::leaf("DaysAfterInitiation", days.to_string())],
            ),
        ],
    )
}

impl S3Lifecycle {
    /// Parses a GetBucketLifecycleConfiguration body (leading keep-alive spaces tolerated).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let start = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(body.len());
        let root = parse(&body[start..]).map_err(|e| e.to_string())?;
        if root.name != "LifecycleConfiguration" {
            return Err(format!(
                "expected <LifecycleConfiguration>, got <{}>",
                root.name
            ));
        }
        Ok(S3Lifecycle {
            rules: root
                .children
                .into_iter()
                .filter(|c| c.name == "Rule")
                .collect(),
        })
    }

    /// The PutBucketLifecycleConfiguration body.
    pub fn to_xml(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LifecycleConfiguration xmlns=\"{NS}\">"
        );
        for r in &self.rules {
            r.write(&mut out);
        }
        out.push_str("</LifecycleConfiguration>");
        out
    }

    /// Adds a rule aborting incomplete multipart uploads under `prefix` after `days`, unless an
    /// enabled rule already does (see the module doc). Returns whether the rules changed.
    pub fn merge_abort_rule(&mut self, prefix: &str, days: u32) -> bool {
        if self.rules.iter().any(|r| covers(r, prefix, days)) {
            return false;
        }
        let id = rule_id(prefix);
        // Our own earlier rule for this prefix is replaced (days changed); anybody else's stays.
        self.rules.retain(|r| text(r, "ID") != Some(id.as_str()));
        self.rules.push(abort_rule(prefix, days));
        true
    }
}

impl S3Bucket {
    /// GetBucketLifecycleConfiguration; `None` when the bucket has none.
    pub async fn get_lifecycle(&self) -> Result<Option<S3Lifecycle>, S3Error> {
        const OP: &str = "GetBucketLifecycleConfiguration";
        let req = S3Request::new(OP, Method::GET, Some(self.name()), None).query("lifecycle", "");
        let resp = match self.client().send(req.buffered()).await {
            Ok(r) => r,
            Err(e) if e.is_code("NoSuchLifecycleConfiguration") => return Ok(None),
            Err(e) => return Err(e),
        };
        S3Lifecycle::parse(&resp.body)
            .map(Some)
            .map_err(|e| S3Error::protocol(OP, e))
    }

    /// PutBucketLifecycleConfiguration: replaces the whole configuration (merge with
    /// [`get_lifecycle`](Self::get_lifecycle) first to keep existing rules).
    pub async fn put_lifecycle(&self, cfg: &S3Lifecycle) -> Result<(), S3Error> {
        const OP: &str = "PutBucketLifecycleConfiguration";
        let body = cfg.to_xml();
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let req = S3Request::new(OP, Method::PUT, Some(self.name()), None)
            .query("lifecycle", "")
            .header("content-type", "application/xml")?
            .header("content-md5", &md5)?
            .payload(Payload::Bytes(Bytes::from(body)));
        self.client().send(req.buffered()).await?;
        Ok(())
    }

    /// Makes sure incomplete multipart uploads under `prefix` are aborted after `days`, merging
    /// with the bucket's lifecycle rules (never replacing them). With `dry_run` nothing is
    /// written; the outcome says what would have happened.
    pub async fn protect_incomplete_uploads(
        &self,
        prefix: &str,
        days: u32,
        dry_run: bool,
    ) -> Result<ProtectOutcome, S3Error> {
        let mut cfg = self.get_lifecycle().await?.unwrap_or_default();
        if !cfg.merge_abort_rule(prefix, days) {
            return Ok(ProtectOutcome::AlreadyCovered);
        }
        if !dry_run {
            self.put_lifecycle(&cfg).await?;
        }
        Ok(ProtectOutcome::Added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREIGN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>expire-logs</ID><Filter><And><Prefix>logs/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></And></Filter><Status>Enabled</Status><Expiration><Days>30</Days></Expiration><AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
</LifecycleConfiguration>"#;

    #[test]
    fn merge_keeps_foreign_rules_and_is_idempotent() {
        let mut cfg = S3Lifecycle::parse(FOREIGN.as_bytes()).unwrap();
        let foreign = cfg.rules[0].clone();
        // A tag-filtered rule does not cover every upload, even with a shorter abort.
        assert!(cfg.merge_abort_rule("", 3));
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.rules[0], foreign, "kept as read");
        let xml = cfg.to_xml();
        assert!(
            xml.contains("<Rule><ID>ossrelay-abort-incomplete-</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>3</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>"),
            "{xml}"
        );
        // Round trip through the wire form: still covered, nothing to do.
        let mut again = S3Lifecycle::parse(xml.as_bytes()).unwrap();
        assert_eq!(again, cfg);
        assert!(!again.merge_abort_rule("", 3));
        assert!(
            !again.merge_abort_rule("exports/", 5),
            "the bucket rule covers"
        );
        assert!(
            again.merge_abort_rule("exports/", 1),
            "sooner is a new rule"
        );
        assert!(
            again.merge_abort_rule("", 1),
            "ours is replaced, not doubled"
        );
        let ids: Vec<_> = again
            .rules
            .iter()
            .map(|r| r.child_text("ID").unwrap().to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "expire-logs",
                "ossrelay-abort-incomplete-exports/",
                "ossrelay-abort-incomplete-"
            ]
        );
    }

    #[test]
    fn which_rules_cover() {
        let rule = |xml: &str| S3Lifecycle::parse(xml.as_bytes()).unwrap().rules.remove(0);
        let abort = "<AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload>";
        let legacy = rule(&format!("<LifecycleConfiguration><Rule><Prefix>ex</Prefix><Status>Enabled</Status>{abort}</Rule></LifecycleConfiguration>"));
        assert!(covers(&legacy, "exports/", 2));
        assert!(!covers(&legacy, "exports/", 1), "aborts later than asked");
        assert!(!covers(&legacy, "other/", 7), "another prefix");
        let empty_filter = rule(&format!("<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status>{abort}</Rule></LifecycleConfiguration>"));
        assert!(covers(&empty_filter, "anything/", 3));
        let disabled = rule(&format!("<LifecycleConfiguration><Rule><Filter><Prefix></Prefix></Filter><Status>Disabled</Status>{abort}</Rule></LifecycleConfiguration>"));
        assert!(!covers(&disabled, "x/", 3));
        let sized = rule(&format!("<LifecycleConfiguration><Rule><Filter><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan></Filter><Status>Enabled</Status>{abort}</Rule></LifecycleConfiguration>"));
        assert!(!covers(&sized, "x/", 3));
        assert!(S3Lifecycle::parse(b"<Error/>").is_err());
    }

    #[test]
    fn long_prefixes_get_a_digest_id() {
        assert_eq!(rule_id("a/"), "ossrelay-abort-incomplete-a/");
        let long = "p".repeat(400);
        let id = rule_id(&long);
        assert!(id.len() <= MAX_RULE_ID, "{id}");
        assert_ne!(id, rule_id(&"q".repeat(400)));
    }
}
