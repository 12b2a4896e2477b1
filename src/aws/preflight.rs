//! The AWS checks of `ossrelay preflight --cloud aws`: who the credentials are, whether EC2
//! answers in the region, and whether the `vmimport` service role exists, trusts VM
//! Import/Export and grants the buckets — each as one [`Line`] a user can act on.
//!
//! Guarantees callers can rely on:
//! * A failing line says what is missing and the command that fixes it
//!   ([`fix_command`]); no line carries a secret (only the account, the ARN and the key id's
//!   owner as STS reports them).
//! * With `fix`, the role is created or completed by [`vmimport::fix`] and each line says what
//!   changed; the user's own policy statements are kept.
//!
//! The S3 bucket checks live with the S3 client (the CLI runs them); this module only speaks
//! the Query APIs.

use super::ec2::Ec2Api;
use super::iam::IamApi;
use super::vmimport::{self, VmimportCheck, VmimportError, EXTERNAL_ID, VMIE_PRINCIPAL};
use crate::credentials::aws::sts::StsClient;
use crate::credentials::CredentialsProvider;

/// One check's outcome, printed as `ok  ` / `FAIL` and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    pub text: String,
}

impl Line {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            text: text.into(),
        }
    }

    pub fn fail(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: text.into(),
        }
    }
}

/// `ossrelay preflight --cloud aws --region R --bucket B … --fix`.
pub fn fix_command(region: &str, buckets: &[String]) -> String {
    let mut c = format!("ossrelay preflight --cloud aws --region {region}");
    for b in buckets {
        c.push_str(&format!(" --bucket {b}"));
    }
    c.push_str(" --fix");
    c
}

/// GetCallerIdentity: account and ARN.
pub async fn check_identity(sts: &StsClient, creds: &dyn CredentialsProvider) -> Line {
    match sts.get_caller_identity(creds).await {
        Ok(id) => Line::ok(format!("caller {} (account {})", id.arn, id.account)),
        Err(e) => Line::fail(format!("AWS credentials ({}): {e}", creds.name())),
    }
}

/// EC2 answers in the region (and the caller may list export tasks).
pub async fn check_ec2(ec2: &dyn Ec2Api) -> Line {
    match ec2.describe_export_image_tasks(&[]).await {
        Ok(tasks) => {
            let active = tasks.iter().filter(|t| t.status == "active").count();
            Line::ok(format!(
                "EC2 answers in {} ({active} export task(s) active)",
                ec2.region()
            ))
        }
        Err(e) => Line::fail(format!("EC2 in {}: {e}", ec2.region())),
    }
}

fn check_lines(c: &VmimportCheck, region: &str, buckets: &[String]) -> Vec<Line> {
    let role = &c.role_name;
    let fix = fix_command(region, buckets);
    if !c.exists {
        return vec![Line::fail(format!(
            "role {role} does not exist (VM Import/Export needs it); run `{fix}`"
        ))];
    }
    let mut out = vec![if c.trusts_vmie {
        Line::ok(format!(
            "role {role} trusts {VMIE_PRINCIPAL} (external id {EXTERNAL_ID})"
        ))
    } else {
        Line::fail(format!(
            "role {role} does not let {VMIE_PRINCIPAL} assume it with external id {EXTERNAL_ID}; add that statement to its trust policy (`aws iam update-assume-role-policy --role-name {role}`), ossrelay does not rewrite an existing trust policy"
        ))
    }];
    for b in buckets {
        out.push(if c.buckets_missing.contains(b) {
            Line::fail(format!(
                "role {role} does not grant bucket {b} (s3:GetBucketLocation, GetObject, ListBucket, PutObject, GetBucketAcl); run `{fix}`"
            ))
        } else {
            Line::ok(format!("role {role} grants bucket {b}"))
        });
    }
    out.push(if c.ec2_granted {
        Line::ok(format!("role {role} grants the EC2 snapshot and image actions"))
    } else {
        Line::fail(format!(
            "role {role} does not grant ec2:ModifySnapshotAttribute, CopySnapshot, RegisterImage, Describe*; run `{fix}`"
        ))
    });
    out
}

/// Checks (and with `fix` repairs) the service role; returns its lines and whether anything
/// changed (so the caller can wait for IAM to propagate).
pub async fn check_role(
    iam: &dyn IamApi,
    role_name: &str,
    region: &str,
    buckets: &[String],
    fix: bool,
) -> (Vec<Line>, bool) {
    let partition = vmimport::partition(region);
    let failed = |e: VmimportError| {
        let hint = match &e {
            VmimportError::Iam(q) if q.is_auth() => {
                " (the caller needs iam:GetRole, iam:GetRolePolicy, and for --fix iam:CreateRole and iam:PutRolePolicy)"
            }
            _ => "",
        };
        vec![Line::fail(format!("role {role_name}: {e}{hint}"))]
    };
    if !fix {
        return match vmimport::check(iam, role_name, partition, buckets).await {
            Ok(c) => (check_lines(&c, region, buckets), false),
            Err(e) => (failed(e), false),
        };
    }
    match vmimport::fix(iam, role_name, partition, buckets).await {
        Ok(f) => {
            let mut lines = Vec::new();
            if f.created_role {
                lines.push(Line::ok(format!(
                    "role {role_name}: created, trusting {VMIE_PRINCIPAL} with external id {EXTERNAL_ID}"
                )));
            }
            for b in &f.added_buckets {
                lines.push(Line::ok(format!(
                    "role {role_name}: granted bucket {b} in its inline policy {role_name}"
                )));
            }
            if f.added_ec2 {
                lines.push(Line::ok(format!(
                    "role {role_name}: granted the EC2 snapshot and image actions"
                )));
            }
            // The state after, minus the ok lines that repeat a change just reported.
            let mut after = check_lines(&f.after, region, buckets);
            after.retain(|l| {
                let repeats = (f.created_role && l.text.contains(" trusts "))
                    || (f.added_ec2 && l.text.contains("grants the EC2"))
                    || f.added_buckets
                        .iter()
                        .any(|b| l.text.ends_with(&format!("grants bucket {b}")));
                !(l.ok && repeats)
            });
            let changed = f.changed();
            lines.extend(after);
            (lines, changed)
        }
        Err(e) => (failed(e), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_command_names_every_bucket() {
        assert_eq!(
            fix_command("eu-west-1", &["a".into(), "b".into()]),
            "ossrelay preflight --cloud aws --region eu-west-1 --bucket a --bucket b --fix"
        );
    }

    #[test]
    fn lines_for_a_partial_role() {
        let c = VmimportCheck {
            role_name: "vmimport".into(),
            exists: true,
            trusts_vmie: true,
            buckets_missing: vec!["b2".into()],
            ec2_granted: true,
        };
        let lines = check_lines(&c, "us-east-1", &["b1".into(), "b2".into()]);
        let fails: Vec<_> = lines.iter().filter(|l| !l.ok).collect();
        assert_eq!(fails.len(), 1);
        assert!(
            fails[0].text.contains("does not grant bucket b2"),
            "{}",
            fails[0].text
        );
        assert!(fails[0].text.ends_with(
            "run `ossrelay preflight --cloud aws --region us-east-1 --bucket b1 --bucket b2 --fix`"
        ));
        let missing = VmimportCheck { exists: false, ..c };
        let lines = check_lines(&missing, "us-east-1", &["b1".into()]);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].ok && lines[0].text.contains("does not exist"));
    }
}
