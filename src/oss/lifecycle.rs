//! The lifecycle safety net for forgotten multipart uploads, merged into a bucket's rules.

use super::xml::{LifecycleAction, LifecycleConfiguration, LifecycleRule};
use super::{OssBucket, OssError};

/// ID of the rules ossrelay adds, followed by the prefix they cover.
pub use crate::store::wire::ABORT_RULE_ID_PREFIX as RULE_ID_PREFIX;

/// Adds (to `cfg`) a rule aborting incomplete multipart uploads under `prefix` after `days`.
/// Existing rules are kept as they are. Returns `false` if an enabled rule for that prefix or
/// a shorter one containing it (`""` is the whole bucket) already aborts uploads within `days`
/// (nothing to do).
pub fn merge_abort_rule(cfg: &mut LifecycleConfiguration, prefix: &str, days: u32) -> bool {
    let covered = cfg.rules.iter().any(|r| {
        r.status.eq_ignore_ascii_case("Enabled")
            && prefix.starts_with(r.prefix.as_deref().unwrap_or(""))
            // A Filter or Tag narrows the rule to some objects only; do not rely on it.
            && !r.other.iter().any(|e| e.name == "Filter" || e.name == "Tag")
            && r.abort_multipart_upload
                .as_ref()
                .and_then(|a| a.days)
                .is_some_and(|d| d <= days)
    });
    if covered {
        return false;
    }
    let id = format!("{RULE_ID_PREFIX}{prefix}");
    // Our own earlier rule for this prefix is replaced (days changed); anybody else's stays.
    cfg.rules.retain(|r| r.id.as_deref() != Some(id.as_str()));
    cfg.rules.push(LifecycleRule {
        id: Some(id),
        prefix: Some(prefix.to_string()),
        status: "Enabled".into(),
        abort_multipart_upload: Some(LifecycleAction::after_days(days)),
        ..Default::default()
    });
    true
}

impl OssBucket {
    /// Makes sure incomplete multipart uploads under `prefix` are aborted after `days`, merging
    /// with the bucket's lifecycle rules (never replacing them). Returns whether a rule was
    /// added; with `dry_run`, whether one would be, and nothing is written.
    pub async fn protect_incomplete_uploads(
        &self,
        prefix: &str,
        days: u32,
        dry_run: bool,
    ) -> Result<bool, OssError> {
        let mut cfg = self.get_bucket_lifecycle().await?.unwrap_or_default();
        if !merge_abort_rule(&mut cfg, prefix, days) {
            return Ok(false);
        }
        if !dry_run {
            self.put_bucket_lifecycle(&cfg).await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, prefix: &str) -> LifecycleRule {
        LifecycleRule {
            id: Some(id.into()),
            prefix: Some(prefix.into()),
            status: "Enabled".into(),
            expiration: Some(LifecycleAction::after_days(30)),
            ..Default::default()
        }
    }

    #[test]
    fn merge_keeps_other_rules_and_is_idempotent() {
        let mut cfg = LifecycleConfiguration {
            rules: vec![rule("logs", "logs/")],
        };
        assert!(merge_abort_rule(&mut cfg, "exports/", 3));
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.rules[0], rule("logs", "logs/"));
        assert_eq!(
            cfg.rules[1].abort_multipart_upload.as_ref().unwrap().days,
            Some(3)
        );
        assert!(
            !merge_abort_rule(&mut cfg, "exports/", 3),
            "already covered"
        );
        assert!(
            !merge_abort_rule(&mut cfg, "exports/", 5),
            "a shorter rule covers it"
        );
        assert!(
            merge_abort_rule(&mut cfg, "exports/", 1),
            "tighter replaces ours"
        );
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(
            cfg.rules[1].abort_multipart_upload.as_ref().unwrap().days,
            Some(1)
        );
    }

    #[test]
    fn a_rule_for_a_containing_prefix_covers() {
        let mut whole = rule("all", "");
        whole.abort_multipart_upload = Some(LifecycleAction::after_days(2));
        let mut cfg = LifecycleConfiguration {
            rules: vec![whole.clone()],
        };
        assert!(!merge_abort_rule(&mut cfg, "exports/", 3));
        assert!(!merge_abort_rule(&mut cfg, "", 2));
        assert!(
            merge_abort_rule(&mut cfg, "exports/", 1),
            "longer than asked"
        );
        // A sibling prefix does not cover, nor a filtered rule.
        let mut cfg = LifecycleConfiguration {
            rules: vec![LifecycleRule {
                prefix: Some("exp/".into()),
                ..whole.clone()
            }],
        };
        assert!(merge_abort_rule(&mut cfg, "exports/", 3));
        let mut filtered = whole;
        filtered.other.push(crate::oss::xml::XmlElement {
            name: "Filter".into(),
            text: String::new(),
            children: Vec::new(),
        });
        let mut cfg = LifecycleConfiguration {
            rules: vec![filtered],
        };
        assert!(merge_abort_rule(&mut cfg, "exports/", 3));
    }
}
