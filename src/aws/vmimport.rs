//! The VM Import/Export service role (`vmimport`, ec2-vm-import-export.md §5.1): what it must
//! say, [`check`] whether it says it, and [`fix`] it.
//!
//! Guarantees callers can rely on:
//! * [`check`] reads the role's trust policy and its inline policy named like the role
//!   (the documented setup, `PutRolePolicy --policy-name vmimport`) with `serde_json`, and
//!   counts a grant made through wildcards (`s3:*`, `s3:Get*`, `*`, `arn:aws:s3:::*`) as a
//!   grant. A matching `Deny` statement cancels it. Managed policies attached to the role are
//!   not read (VM Import/Export's own docs use the inline policy); a role that works only
//!   through one reads as "missing the bucket" and `--fix` then adds the inline grant.
//! * [`fix`] never drops or rewrites a user's statements: it creates the role when missing,
//!   then appends to the existing inline policy only the statements for buckets (and the EC2
//!   actions) that are not granted yet, and writes the policy only if it added something. A
//!   trust policy that does not trust `vmie.amazonaws.com` is reported, not rewritten (the
//!   role may serve other principals).
//! * ARNs follow the partition of the region (`arn:aws-cn:` in China).

use serde_json::{json, Value};

use super::iam::IamApi;
use super::query::AwsQueryError;

/// The role name VM Import/Export uses unless `RoleName` says otherwise.
pub const ROLE_NAME: &str = "vmimport";
/// The service principal that assumes the role.
pub const VMIE_PRINCIPAL: &str = "vmie.amazonaws.com";
/// The external id VM Import/Export presents (the documented trust policy requires it).
pub const EXTERNAL_ID: &str = "vmimport";

/// Bucket-level actions the role needs on `arn:…:s3:::bucket` (import reads, export writes).
pub const BUCKET_ACTIONS: &[&str] = &["s3:GetBucketLocation", "s3:ListBucket", "s3:GetBucketAcl"];
/// Object-level actions the role needs on `arn:…:s3:::bucket/*`.
pub const OBJECT_ACTIONS: &[&str] = &["s3:GetObject", "s3:PutObject"];
/// EC2 actions the role needs on `*`.
pub const EC2_ACTIONS: &[&str] = &[
    "ec2:ModifySnapshotAttribute",
    "ec2:CopySnapshot",
    "ec2:RegisterImage",
    "ec2:Describe*",
];

/// `aws`, or `aws-cn` for China regions.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else {
        "aws"
    }
}

/// The documented trust policy: vmie.amazonaws.com may assume the role with external id
/// `vmimport`.
pub fn trust_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": VMIE_PRINCIPAL},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:Externalid": EXTERNAL_ID}}
        }]
    })
    .to_string()
}

/// The statement granting the role one bucket, for both import (read) and export (write).
pub fn bucket_statement(partition: &str, bucket: &str) -> Value {
    json!({
        "Effect": "Allow",
        "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:GetBucketAcl"],
        "Resource": [format!("arn:{partition}:s3:::{bucket}"), format!("arn:{partition}:s3:::{bucket}/*")]
    })
}

/// The statement granting the EC2 actions.
pub fn ec2_statement() -> Value {
    json!({"Effect": "Allow", "Action": EC2_ACTIONS, "Resource": "*"})
}

/// The documented role policy for `buckets`.
pub fn role_policy(partition: &str, buckets: &[String]) -> String {
    let mut statements: Vec<Value> = buckets
        .iter()
        .map(|b| bucket_statement(partition, b))
        .collect();
    statements.push(ec2_statement());
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// IAM glob: `*` any run, `?` one character.
fn glob(pattern: &str, s: &str) -> bool {
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

/// A JSON string or array of strings as a list.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// A policy's statements (`Statement` may be one object or an array).
fn statements(doc: &Value) -> Vec<&Value> {
    match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => Vec::new(),
    }
}

/// Whether `st` covers `action` on `resource` (actions case-insensitive; `NotAction` /
/// `NotResource` statements are not interpreted and never count).
fn covers(st: &Value, action: &str, resource: &str) -> bool {
    let action = action.to_ascii_lowercase();
    strings(st.get("Action"))
        .iter()
        .any(|a| glob(&a.to_ascii_lowercase(), &action))
        && strings(st.get("Resource"))
            .iter()
            .any(|r| glob(r, resource))
}

/// Allowed by some `Allow` statement and denied by no `Deny` statement of `doc`.
fn allows(doc: &Value, action: &str, resource: &str) -> bool {
    let effect = |st: &Value, e: &str| st.get("Effect").and_then(Value::as_str) == Some(e);
    let sts = statements(doc);
    sts.iter()
        .any(|st| effect(st, "Allow") && covers(st, action, resource))
        && !sts
            .iter()
            .any(|st| effect(st, "Deny") && covers(st, action, resource))
}

/// Whether the inline policy grants everything one bucket needs.
pub fn grants_bucket(doc: &Value, partition: &str, bucket: &str) -> bool {
    let b = format!("arn:{partition}:s3:::{bucket}");
    let o = format!("{b}/*");
    BUCKET_ACTIONS.iter().all(|a| allows(doc, a, &b))
        && OBJECT_ACTIONS.iter().all(|a| allows(doc, a, &o))
}

/// Whether the inline policy grants the EC2 actions VM Import/Export performs.
pub fn grants_ec2(doc: &Value) -> bool {
    [
        "ec2:ModifySnapshotAttribute",
        "ec2:CopySnapshot",
        "ec2:RegisterImage",
        "ec2:DescribeImages",
    ]
    .iter()
    .all(|a| allows(doc, a, "*"))
}

/// Whether a trust policy lets vmie.amazonaws.com assume the role: an `Allow` of
/// `sts:AssumeRole` to that service principal whose external-id condition, if any, admits
/// `vmimport`.
pub fn trusts_vmie(doc: &Value) -> bool {
    statements(doc).iter().any(|st| {
        let allow = st.get("Effect").and_then(Value::as_str) == Some("Allow");
        let principal = st.get("Principal").is_some_and(|p| {
            p.as_str() == Some("*")
                || strings(p.get("Service"))
                    .iter()
                    .any(|s| s == VMIE_PRINCIPAL)
        });
        let action = strings(st.get("Action"))
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), "sts:assumerole"));
        let external_ok = match st.get("Condition").and_then(Value::as_object) {
            None => true,
            Some(cond) => cond.iter().all(|(op, kv)| {
                let Some(kv) = kv.as_object() else {
                    return true;
                };
                kv.iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("sts:ExternalId"))
                    .all(|(_, v)| {
                        let vals = strings(Some(v));
                        match op.as_str() {
                            "StringEquals" => vals.iter().any(|x| x == EXTERNAL_ID),
                            "StringEqualsIgnoreCase" => {
                                vals.iter().any(|x| x.eq_ignore_ascii_case(EXTERNAL_ID))
                            }
                            "StringLike" => vals.iter().any(|x| glob(x, EXTERNAL_ID)),
                            _ => false,
                        }
                    })
            }),
        };
        allow && principal && action && external_ok
    })
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmimportCheck {
    pub role_name: String,
    pub exists: bool,
    pub trusts_vmie: bool,
    /// Buckets the role's inline policy does not grant (in the order asked).
    pub buckets_missing: Vec<String>,
    /// The inline policy grants the EC2 actions (snapshot copy, RegisterImage, Describe*).
    pub ec2_granted: bool,
}

impl VmimportCheck {
    /// Everything VM Import/Export needs is in place.
    pub fn ok(&self) -> bool {
        self.exists && self.trusts_vmie && self.buckets_missing.is_empty() && self.ec2_granted
    }
}

/// Why the role could not be checked or fixed.
#[derive(Debug, thiserror::Error)]
pub enum VmimportError {
    #[error(transparent)]
    Iam(#[from] AwsQueryError),
    #[error("the inline policy {policy} of role {role} is not valid JSON ({reason}); fix it by hand, ossrelay will not overwrite it")]
    BadPolicy {
        role: String,
        policy: String,
        reason: String,
    },
}

fn parse_doc(role: &str, json: &str) -> Result<Value, VmimportError> {
    serde_json::from_str(json).map_err(|e| VmimportError::BadPolicy {
        role: role.into(),
        policy: role.into(),
        reason: e.to_string(),
    })
}

/// Looks at role `role_name` and its inline policy of the same name for `buckets`.
pub async fn check(
    iam: &dyn IamApi,
    role_name: &str,
    partition: &str,
    buckets: &[String],
) -> Result<VmimportCheck, VmimportError> {
    let mut out = VmimportCheck {
        role_name: role_name.into(),
        ..Default::default()
    };
    let Some(role) = iam.get_role(role_name).await? else {
        out.buckets_missing = buckets.to_vec();
        return Ok(out);
    };
    out.exists = true;
    out.trusts_vmie = serde_json::from_str(&role.assume_role_policy_document)
        .map(|d| trusts_vmie(&d))
        .unwrap_or(false);
    let doc = match iam.get_role_policy(role_name, role_name).await? {
        Some(json) => parse_doc(role_name, &json)?,
        None => Value::Null,
    };
    out.buckets_missing = buckets
        .iter()
        .filter(|b| !grants_bucket(&doc, partition, b))
        .cloned()
        .collect();
    out.ec2_granted = grants_ec2(&doc);
    Ok(out)
}

/// What [`fix`] changed, and the state after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmimportFix {
    pub created_role: bool,
    pub added_buckets: Vec<String>,
    pub added_ec2: bool,
    /// The role as it is now.
    pub after: VmimportCheck,
}

impl VmimportFix {
    pub fn changed(&self) -> bool {
        self.created_role || !self.added_buckets.is_empty() || self.added_ec2
    }
}

/// GetRole → CreateRole if missing → GetRolePolicy → append the missing grants to the inline
/// policy (keeping every existing statement) → PutRolePolicy if anything was added.
pub async fn fix(
    iam: &dyn IamApi,
    role_name: &str,
    partition: &str,
    buckets: &[String],
) -> Result<VmimportFix, VmimportError> {
    let mut out = VmimportFix::default();
    let before = check(iam, role_name, partition, buckets).await?;
    if !before.exists {
        iam.create_role(
            role_name,
            &trust_policy(),
            "VM Import/Export reads and writes disk images in S3 with this role (created by ossrelay)",
        )
        .await?;
        out.created_role = true;
        tracing::info!(
            role = role_name,
            "created the VM Import/Export service role"
        );
    }
    let existing = if before.exists {
        iam.get_role_policy(role_name, role_name).await?
    } else {
        None
    };
    let mut doc = match existing {
        Some(json) => parse_doc(role_name, &json)?,
        None => json!({"Version": "2012-10-17", "Statement": []}),
    };
    let missing: Vec<String> = buckets
        .iter()
        .filter(|b| !grants_bucket(&doc, partition, b))
        .cloned()
        .collect();
    let add_ec2 = !grants_ec2(&doc);
    if !missing.is_empty() || add_ec2 {
        let obj = doc
            .as_object_mut()
            .ok_or_else(|| VmimportError::BadPolicy {
                role: role_name.into(),
                policy: role_name.into(),
                reason: "the document is not a JSON object".into(),
            })?;
        obj.entry("Version").or_insert_with(|| json!("2012-10-17"));
        let st = obj.entry("Statement").or_insert_with(|| json!([]));
        if st.is_object() {
            *st = Value::Array(vec![st.take()]);
        }
        let list = st.as_array_mut().ok_or_else(|| VmimportError::BadPolicy {
            role: role_name.into(),
            policy: role_name.into(),
            reason: "Statement is neither an object nor a list".into(),
        })?;
        list.extend(missing.iter().map(|b| bucket_statement(partition, b)));
        if add_ec2 {
            list.push(ec2_statement());
        }
        iam.put_role_policy(role_name, role_name, &doc.to_string())
            .await?;
        tracing::info!(role = role_name, buckets = ?missing, ec2 = add_ec2, "updated the VM Import/Export role policy");
        out.added_buckets = missing;
        out.added_ec2 = add_ec2;
    }
    out.after = VmimportCheck {
        role_name: role_name.into(),
        exists: true,
        trusts_vmie: before.trusts_vmie || out.created_role,
        buckets_missing: Vec::new(),
        ec2_granted: true,
    };
    Ok(out)
}

#[cfg(test)]
#[path = "vmimport/tests.rs"]
mod tests;
