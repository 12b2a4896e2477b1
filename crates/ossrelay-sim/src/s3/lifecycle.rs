//! Bucket lifecycle configuration of the S3 dialect: Get/Put/DeleteBucketLifecycleConfiguration
//! (`/?lifecycle`), stored per bucket, and the lazy expiry of incomplete multipart uploads that
//! an `AbortIncompleteMultipartUpload` rule asks for.
//!
//! What PUT checks, from the S3 API reference (PutBucketLifecycleConfiguration) and the errors
//! S3 is known to return: an integrity header is required (`Content-MD5`, or an
//! `x-amz-checksum-<alg>` header outside quirks mode), else `400 InvalidRequest` "Missing
//! required header for this request: Content-MD5"; a digest that does not match the body is
//! `400 BadDigest`; a body that is not a `LifecycleConfiguration` of 1–1000 `Rule`s, each with
//! `Status` Enabled|Disabled and not both `Filter` and a rule-level `Prefix`, is
//! `400 MalformedXML`; a rule without an action is `400 InvalidRequest`; duplicate or over-long
//! IDs and a non-positive `DaysAfterInitiation` are `400 InvalidArgument`; an abort rule
//! filtered by tags is `400 InvalidRequest` (S3 cannot tag an upload that is not an object yet).
//!
//! Expiry (a simulator choice): S3 runs lifecycle asynchronously, about once a day. The
//! simulator aborts, when ListMultipartUploads is asked, every upload under an enabled rule's
//! prefix initiated at least `DaysAfterInitiation` × 24 h ago on the simulator's clock.

use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use md5::{Digest as _, Md5};
use quick_xml::events::Event;

use super::body::{checksum_b64, read_small, ALGS};
use super::common::{
    bad_digest, empty, invalid_argument, invalid_request, malformed_xml, parse_content_md5, Ctx,
    Res, S3Error,
};
use crate::reply::{response, xml_response};
use crate::world::oss::State;
use crate::world::World;

const MAX_BODY: usize = 1 << 20;
const MAX_RULES: usize = 1000;
const MAX_DEPTH: usize = 16;
const ACTIONS: &[&str] = &[
    "Expiration",
    "Transition",
    "NoncurrentVersionExpiration",
    "NoncurrentVersionTransition",
    "AbortIncompleteMultipartUpload",
];

/// A parsed element: local name, trimmed text, children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// The element tree of `body`; `None` when it is not well-formed XML.
fn tree(body: &[u8]) -> Option<Node> {
    let text = std::str::from_utf8(body).ok()?;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH || root.is_some() {
                    return None;
                }
                stack.push(Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                let n = Node {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Node::default()
                };
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None if root.is_none() => root = Some(n),
                    None => return None,
                }
            }
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.unescape().ok()?);
                }
            }
            Event::End(_) => {
                let n = stack.pop()?;
                match stack.last_mut() {
                    Some(p) => p.children.push(n),
                    None => root = Some(n),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.is_empty() {
        root
    } else {
        None
    }
}

/// One enabled rule that aborts incomplete uploads: `(prefix, days)`; rules filtered by
/// anything but a prefix are refused at PUT, so the prefix is the whole selection.
fn abort_rule(rule: &Node) -> Option<(String, u32)> {
    if rule.child("Status")?.text != "Enabled" {
        return None;
    }
    let days = rule
        .child("AbortIncompleteMultipartUpload")?
        .child("DaysAfterInitiation")?
        .text
        .parse()
        .ok()?;
    let prefix = match (rule.child("Filter"), rule.child("Prefix")) {
        (Some(f), _) => f
            .child("Prefix")
            .map(|p| p.text.clone())
            .or_else(|| f.children.is_empty().then(String::new))?,
        (None, Some(p)) => p.text.clone(),
        (None, None) => String::new(),
    };
    Some((prefix, days))
}

/// Checks a configuration; `Ok` holds its abort rules.
fn validate(body: &[u8]) -> Result<Vec<(String, u32)>, S3Error> {
    let root = tree(body).ok_or_else(malformed_xml)?;
    if root.name != "LifecycleConfiguration" {
        return Err(malformed_xml());
    }
    let rules: Vec<&Node> = root.children.iter().filter(|c| c.name == "Rule").collect();
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(malformed_xml());
    }
    let mut ids: Vec<&str> = Vec::new();
    for r in &rules {
        let status = r.child("Status").map(|s| s.text.as_str());
        if !matches!(status, Some("Enabled" | "Disabled")) {
            return Err(malformed_xml());
        }
        if r.child("Filter").is_some() && r.child("Prefix").is_some() {
            return Err(malformed_xml());
        }
        if let Some(id) = r.child("ID").map(|i| i.text.as_str()) {
            if id.len() > 255 {
                return Err(invalid_argument(
                    "ID length should not exceed allowed limit of 255",
                ));
            }
            if ids.contains(&id) {
                return Err(invalid_argument(
                    "Rule ID must be unique. Found same ID for more than one rule",
                ));
            }
            ids.push(id);
        }
        if !ACTIONS.iter().any(|a| r.child(a).is_some()) {
            return Err(invalid_request(
                "At least one action needs to be specified in a rule",
            ));
        }
        if let Some(a) = r.child("AbortIncompleteMultipartUpload") {
            let days = a
                .child("DaysAfterInitiation")
                .and_then(|d| d.text.parse::<u32>().ok());
            if days.is_none_or(|d| d == 0) {
                return Err(invalid_argument(
                    "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer",
                ));
            }
            let filter = r.child("Filter");
            let tagged = filter.is_some_and(|f| {
                f.child("Tag").is_some() || f.child("And").is_some_and(|a| a.child("Tag").is_some())
            });
            if tagged {
                return Err(invalid_request(
                    "AbortIncompleteMultipartUpload cannot be specified with Tags.",
                ));
            }
        }
    }
    Ok(rules.into_iter().filter_map(abort_rule).collect())
}

/// The `x-amz-checksum-<alg>` header S3 accepts in place of Content-MD5, verified.
fn check_integrity(ctx: &Ctx, data: &[u8]) -> Result<(), S3Error> {
    if let Some(want) = parse_content_md5(ctx)? {
        if <[u8; 16]>::from(Md5::digest(data)) != want {
            return Err(bad_digest(
                "The Content-MD5 you specified did not match what we received.",
            ));
        }
        return Ok(());
    }
    if !ctx.quirks {
        for alg in ALGS {
            if let Some(v) = ctx.h(&format!("x-amz-checksum-{alg}")) {
                if checksum_b64(alg, data).as_deref() != Some(v.trim()) {
                    return Err(bad_digest(format!(
                        "The {} you specified did not match the calculated checksum.",
                        alg.to_ascii_uppercase()
                    )));
                }
                return Ok(());
            }
        }
    }
    Err(invalid_request(
        "Missing required header for this request: Content-MD5",
    ))
}

pub(crate) fn get(w: &World, ctx: &Ctx) -> Res {
    match w.oss.lifecycle(ctx.bucket()) {
        Some(x) => Ok(xml_response(x)),
        None => Err(S3Error::new(
            404,
            "NoSuchLifecycleConfiguration",
            "The lifecycle configuration does not exist",
        )
        .with("BucketName", ctx.bucket())
        .into()),
    }
}

pub(crate) async fn put(w: &World, ctx: &Ctx, body: Incoming) -> Res {
    let data = read_small(w, body, MAX_BODY).await?;
    check_integrity(ctx, &data)?;
    validate(&data)?;
    let text = String::from_utf8_lossy(&data);
    let trimmed = text.trim_start();
    let stored = if trimmed.starts_with("<?xml") {
        trimmed.to_string()
    } else {
        format!("{}{trimmed}", crate::xml::DECL)
    };
    if let Some(b) = w.oss.lock().buckets.get_mut(ctx.bucket()) {
        b.lifecycle = Some(stored);
    }
    Ok(response(200).body(empty()).expect("valid"))
}

pub(crate) fn delete(w: &World, ctx: &Ctx) -> Res {
    if let Some(b) = w.oss.lock().buckets.get_mut(ctx.bucket()) {
        b.lifecycle = None;
    }
    Ok(response(204).body(empty()).expect("valid"))
}

/// Whether an upload of `key` initiated at `initiated` has outlived one of `rules` at `now`.
fn expired(rules: &[(String, u32)], key: &str, initiated: SystemTime, now: SystemTime) -> bool {
    rules.iter().any(|(prefix, days)| {
        key.starts_with(prefix.as_str())
            && initiated + Duration::from_secs(u64::from(*days) * 86_400) <= now
    })
}

/// Aborts the uploads of `bucket` that its lifecycle rules have expired by `now`.
pub(crate) fn expire_uploads(st: &mut State, bucket: &str, now: SystemTime) {
    let Some(cfg) = st.buckets.get(bucket).and_then(|b| b.lifecycle.as_deref()) else {
        return;
    };
    let Ok(rules) = validate(cfg.as_bytes()) else {
        return;
    };
    if rules.is_empty() {
        return;
    }
    st.uploads
        .retain(|_, u| u.bucket != bucket || !expired(&rules, &u.key, u.initiated, now));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        match validate(body.as_bytes()) {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    const ABORT: &str = "<AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload>";

    #[test]
    fn put_validation_follows_s3() {
        let doc = |rules: &str| {
            format!("<LifecycleConfiguration xmlns=\"x\">{rules}</LifecycleConfiguration>")
        };
        let ok = doc(&format!("<Rule><ID>a</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status>{ABORT}</Rule>"));
        assert_eq!(
            validate(ok.as_bytes()).unwrap(),
            vec![("p/".to_string(), 2)]
        );
        assert_eq!(code("not xml <"), "MalformedXML");
        assert_eq!(code("<Other><Rule/></Other>"), "MalformedXML");
        assert_eq!(code(&doc("")), "MalformedXML");
        assert_eq!(
            code(&doc(&format!("<Rule><Status>On</Status>{ABORT}</Rule>"))),
            "MalformedXML"
        );
        assert_eq!(
            code(&doc(&format!(
                "<Rule><Prefix/><Filter/><Status>Enabled</Status>{ABORT}</Rule>"
            ))),
            "MalformedXML"
        );
        assert_eq!(
            code(&doc("<Rule><Filter/><Status>Enabled</Status></Rule>")),
            "InvalidRequest"
        );
        let twice = format!("<Rule><ID>a</ID><Filter/><Status>Enabled</Status>{ABORT}</Rule>");
        assert_eq!(code(&doc(&format!("{twice}{twice}"))), "InvalidArgument");
        assert_eq!(
            code(&doc("<Rule><Filter/><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>0</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>")),
            "InvalidArgument"
        );
        assert_eq!(
            code(&doc(&format!("<Rule><Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status>{ABORT}</Rule>"))),
            "InvalidRequest"
        );
        // A disabled abort rule and an expiration-only rule abort nothing.
        let quiet = doc(&format!("<Rule><Prefix>x</Prefix><Status>Disabled</Status>{ABORT}</Rule><Rule><Filter/><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule>"));
        assert_eq!(validate(quiet.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn expiry_counts_days_after_initiation() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let rules = vec![("exports/".to_string(), 2)];
        let day = Duration::from_secs(86_400);
        assert!(!expired(&rules, "exports/a", t0, t0 + day));
        assert!(expired(&rules, "exports/a", t0, t0 + 2 * day));
        assert!(!expired(&rules, "other/a", t0, t0 + 9 * day));
        assert!(expired(&[(String::new(), 1)], "any", t0, t0 + day));
    }
}
