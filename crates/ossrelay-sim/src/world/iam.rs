//! IAM roles of the S3 dialect's accounts, as VM Import/Export sees them: a role's trust
//! policy, its inline policies, when each was written, and the evaluation EC2 runs before it
//! starts an export or import task.
//!
//! Guarantees: a document is stored exactly as received (GetRole / GetRolePolicy return it,
//! URL-encoded by the handler); [`check_policy`] refuses what IAM refuses as
//! `MalformedPolicyDocument`; [`vmie_can`] grants only when the role trusts
//! `vmie.amazonaws.com` with `sts:Externalid = vmimport` and an inline policy allows every
//! needed `(action, resource)` with no `Deny` matching, each document older than the
//! propagation delay (IAM is eventually consistent: a fresh role is refused for a while, which
//! clients must retry, as terraform does for two minutes).
//!
//! Policy evaluation is deliberately small: `Effect`, `Action`/`NotAction`, `Resource` with `*`
//! and `?` wildcards; conditions of inline policies are ignored; the trust condition is read
//! only for the external ID.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// The trust policy of the `vmimport` service role (VM Import/Export user guide).
pub(crate) const VMIE_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:Externalid":"vmimport"}}}]}"#;

/// The inline policy preloaded roles get: the guide's import and export actions on every bucket.
pub(crate) const VMIE_POLICY_ALL_BUCKETS: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetBucketLocation","s3:GetObject","s3:ListBucket","s3:PutObject","s3:GetBucketAcl"],"Resource":["arn:aws:s3:::*","arn:aws:s3:::*/*"]},{"Effect":"Allow","Action":["ec2:ModifySnapshotAttribute","ec2:CopySnapshot","ec2:RegisterImage","ec2:Describe*"],"Resource":"*"}]}"#;

/// One IAM role.
pub(crate) struct IamRole {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) role_id: String,
    pub(crate) description: String,
    pub(crate) max_session: u32,
    pub(crate) created: SystemTime,
    /// The trust policy as sent.
    pub(crate) trust: String,
    /// Inline policies: name → (document as sent, when written).
    pub(crate) policies: BTreeMap<String, (String, SystemTime)>,
}

/// `AROA` + 17 upper-case characters derived from `(account, role)`: stable, like the IDs STS
/// reports for the same role.
pub(crate) fn role_id(account: &str, role: &str) -> String {
    let h = crate::sigv4::sha256_hex(format!("{account}/{role}").as_bytes());
    format!("AROA{}", h[..17].to_ascii_uppercase())
}

/// Why a policy document is refused (IAM's `MalformedPolicyDocument` message).
pub(crate) fn check_policy(doc: &str, trust: bool) -> Result<(), String> {
    let v: Value = serde_json::from_str(doc).map_err(|_| "Syntax errors in policy.".to_string())?;
    let Some(obj) = v.as_object() else {
        return Err("Syntax errors in policy.".into());
    };
    if let Some(ver) = obj.get("Version") {
        if !matches!(ver.as_str(), Some("2012-10-17" | "2008-10-17")) {
            return Err("The policy must contain a valid version string".into());
        }
    }
    let statements = statements(&v);
    if statements.is_empty() {
        return Err("Syntax errors in policy.".into());
    }
    for s in statements {
        if !matches!(
            s.get("Effect").and_then(Value::as_str),
            Some("Allow" | "Deny")
        ) {
            return Err("Syntax errors in policy.".into());
        }
        if s.get("Action").is_none() && s.get("NotAction").is_none() {
            return Err("Policy statement must contain actions.".into());
        }
        let has_resource = s.get("Resource").is_some() || s.get("NotResource").is_some();
        let has_principal = s.get("Principal").is_some() || s.get("NotPrincipal").is_some();
        if trust {
            if has_resource {
                return Err("Has prohibited field Resource".into());
            }
            if !has_principal {
                return Err(
                    "AssumeRolepolicy contained an invalid principal: missing Principal.".into(),
                );
            }
        } else {
            if has_principal {
                return Err("Policy document should not specify a principal.".into());
            }
            if !has_resource {
                return Err("Policy statement must contain resources.".into());
            }
        }
    }
    Ok(())
}

fn statements(v: &Value) -> Vec<&serde_json::Map<String, Value>> {
    match v.get("Statement") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(o)) => vec![o],
        _ => Vec::new(),
    }
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// `*` (any run) and `?` (one character) matching.
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Does `trust` let VM Import/Export assume the role (`vmie.amazonaws.com`, and if the
/// statement has a StringEquals on the external ID, it is `vmimport`)?
fn trusts_vmie(trust: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(trust) else {
        return false;
    };
    statements(&v).into_iter().any(|s| {
        let allow = s.get("Effect").and_then(Value::as_str) == Some("Allow");
        let service = s
            .get("Principal")
            .and_then(|p| p.get("Service"))
            .map(|p| strings(Some(p)).contains(&"vmie.amazonaws.com"))
            .unwrap_or(false);
        let action = strings(s.get("Action"))
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), "sts:assumerole"));
        let external = s
            .get("Condition")
            .and_then(|c| c.get("StringEquals"))
            .and_then(Value::as_object)
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("sts:externalid"))
            })
            .map(|(_, v)| strings(Some(v)).contains(&"vmimport"))
            .unwrap_or(false);
        allow && service && action && external
    })
}

/// How one statement judges `(action, resource)`: `Some(true)` allows, `Some(false)` denies.
fn judge(s: &serde_json::Map<String, Value>, action: &str, resource: &str) -> Option<bool> {
    let action = action.to_ascii_lowercase();
    let act = |v: Option<&Value>| {
        strings(v)
            .iter()
            .any(|p| glob(&p.to_ascii_lowercase(), &action))
    };
    let action_ok = if s.contains_key("NotAction") {
        !act(s.get("NotAction"))
    } else {
        act(s.get("Action"))
    };
    let res = |v: Option<&Value>| strings(v).iter().any(|p| glob(p, resource));
    let resource_ok = if s.contains_key("NotResource") {
        !res(s.get("NotResource"))
    } else {
        res(s.get("Resource"))
    };
    (action_ok && resource_ok).then(|| s.get("Effect").and_then(Value::as_str) == Some("Allow"))
}

/// Whether VM Import/Export may act through `role` on every `(action, resource)` of `needs`
/// at `now`, counting only documents written at least `propagation` ago.
pub(crate) fn vmie_can(
    role: &IamRole,
    needs: &[(&str, String)],
    now: SystemTime,
    propagation: Duration,
) -> bool {
    let settled = |t: SystemTime| t + propagation <= now;
    if !settled(role.created) || !trusts_vmie(&role.trust) {
        return false;
    }
    let docs: Vec<Value> = role
        .policies
        .values()
        .filter(|(_, at)| settled(*at))
        .filter_map(|(d, _)| serde_json::from_str(d).ok())
        .collect();
    needs.iter().all(|(action, resource)| {
        let verdicts: Vec<bool> = docs
            .iter()
            .flat_map(statements)
            .filter_map(|s| judge(s, action, resource))
            .collect();
        verdicts.contains(&true) && !verdicts.contains(&false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(trust: &str, policy: &str, at: SystemTime) -> IamRole {
        IamRole {
            name: "vmimport".into(),
            path: "/".into(),
            role_id: role_id("1", "vmimport"),
            description: String::new(),
            max_session: 3600,
            created: at,
            trust: trust.into(),
            policies: [("vmimport".to_string(), (policy.to_string(), at))].into(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob("arn:aws:s3:::*", "arn:aws:s3:::b/k"));
        assert!(glob("s3:get*", "s3:getobject"));
        assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
        assert!(!glob("arn:aws:s3:::b", "arn:aws:s3:::b/k"));
        assert!(glob("*", ""));
    }

    #[test]
    fn documents_checked() {
        assert!(check_policy(VMIE_TRUST, true).is_ok());
        assert!(check_policy(VMIE_POLICY_ALL_BUCKETS, false).is_ok());
        assert!(
            check_policy(VMIE_TRUST, false).is_err(),
            "principal in a policy"
        );
        assert!(
            check_policy(VMIE_POLICY_ALL_BUCKETS, true).is_err(),
            "resource in a trust"
        );
        assert!(check_policy("{not json", false).is_err());
        assert!(check_policy(r#"{"Version":"2099-01-01","Statement":[]}"#, false).is_err());
        assert!(check_policy(
            r#"{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#,
            false
        )
        .is_err());
    }

    #[test]
    fn vmie_evaluation() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let later = t0 + Duration::from_secs(60);
        let need = [
            ("s3:GetBucketLocation", "arn:aws:s3:::b".to_string()),
            (
                "s3:PutObject",
                "arn:aws:s3:::b/x/export-ami-1.raw".to_string(),
            ),
        ];
        let r = role(VMIE_TRUST, VMIE_POLICY_ALL_BUCKETS, t0);
        assert!(vmie_can(&r, &need, later, Duration::ZERO));
        assert!(
            !vmie_can(&r, &need, later, Duration::from_secs(120)),
            "not propagated yet"
        );
        let only_b2 = r#"{"Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::b2","arn:aws:s3:::b2/*"]}]}"#;
        assert!(!vmie_can(
            &role(VMIE_TRUST, only_b2, t0),
            &need,
            later,
            Duration::ZERO
        ));
        let deny = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"s3:PutObject","Resource":"*"}]}"#;
        assert!(!vmie_can(
            &role(VMIE_TRUST, deny, t0),
            &need,
            later,
            Duration::ZERO
        ));
        let wrong_external = VMIE_TRUST.replace("\"vmimport\"", "\"other\"");
        assert!(!vmie_can(
            &role(&wrong_external, VMIE_POLICY_ALL_BUCKETS, t0),
            &need,
            later,
            Duration::ZERO
        ));
        let ec2_trust = VMIE_TRUST.replace("vmie.amazonaws.com", "ec2.amazonaws.com");
        assert!(!vmie_can(
            &role(&ec2_trust, VMIE_POLICY_ALL_BUCKETS, t0),
            &need,
            later,
            Duration::ZERO
        ));
    }
}
