use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::aws::iam::Role;

/// IAM in memory: roles with trust documents, inline policies, and a log of writes.
#[derive(Default)]
struct FakeIam {
    roles: Mutex<HashMap<String, Role>>,
    policies: Mutex<HashMap<(String, String), String>>,
    writes: Mutex<Vec<String>>,
}

impl FakeIam {
    fn with_role(trust: &str, policy: Option<&str>) -> Self {
        let f = FakeIam::default();
        f.roles.lock().unwrap().insert(
            "vmimport".into(),
            Role {
                role_name: "vmimport".into(),
                assume_role_policy_document: trust.into(),
                ..Default::default()
            },
        );
        if let Some(p) = policy {
            f.policies
                .lock()
                .unwrap()
                .insert(("vmimport".into(), "vmimport".into()), p.into());
        }
        f
    }

    fn policy(&self) -> Value {
        let p = self.policies.lock().unwrap();
        serde_json::from_str(&p[&("vmimport".to_string(), "vmimport".to_string())]).unwrap()
    }
}

#[async_trait]
impl IamApi for FakeIam {
    async fn get_role(&self, name: &str) -> Result<Option<Role>, AwsQueryError> {
        Ok(self.roles.lock().unwrap().get(name).cloned())
    }
    async fn create_role(&self, name: &str, trust: &str, _d: &str) -> Result<Role, AwsQueryError> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("CreateRole {name}"));
        let r = Role {
            role_name: name.into(),
            assume_role_policy_document: trust.into(),
            ..Default::default()
        };
        self.roles.lock().unwrap().insert(name.into(), r.clone());
        Ok(r)
    }
    async fn get_role_policy(
        &self,
        role: &str,
        policy: &str,
    ) -> Result<Option<String>, AwsQueryError> {
        Ok(self
            .policies
            .lock()
            .unwrap()
            .get(&(role.to_string(), policy.to_string()))
            .cloned())
    }
    async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        json: &str,
    ) -> Result<(), AwsQueryError> {
        self.writes
            .lock()
            .unwrap()
            .push(format!("PutRolePolicy {role}/{policy}"));
        self.policies
            .lock()
            .unwrap()
            .insert((role.into(), policy.into()), json.into());
        Ok(())
    }
}

fn b(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn documented_policies_pass_their_own_checks() {
    let trust: Value = serde_json::from_str(&trust_policy()).unwrap();
    assert!(trusts_vmie(&trust));
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"]["sts:Externalid"],
        "vmimport"
    );
    let policy: Value = serde_json::from_str(&role_policy("aws", &b(&["in", "out"]))).unwrap();
    assert!(grants_bucket(&policy, "aws", "in"));
    assert!(grants_bucket(&policy, "aws", "out"));
    assert!(!grants_bucket(&policy, "aws", "other"));
    assert!(
        !grants_bucket(&policy, "aws-cn", "in"),
        "ARNs are per partition"
    );
    assert!(grants_ec2(&policy));
    assert_eq!(partition("cn-northwest-1"), "aws-cn");
    assert_eq!(partition("eu-west-1"), "aws");
}

#[test]
fn wildcards_grant_and_deny_cancels() {
    let all: Value = serde_json::from_str(
        r#"{"Statement":{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::img-*"}}"#,
    )
    .unwrap();
    assert!(grants_bucket(&all, "aws", "img-1"));
    assert!(!grants_bucket(&all, "aws", "other"));
    let gets_only: Value = serde_json::from_str(
        r#"{"Statement":[{"Effect":"Allow","Action":["S3:Get*","s3:List*"],"Resource":"*"}]}"#,
    )
    .unwrap();
    assert!(!grants_bucket(&gets_only, "aws", "x"), "no PutObject");
    let star: Value =
        serde_json::from_str(r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
            .unwrap();
    assert!(grants_bucket(&star, "aws", "x") && grants_ec2(&star));
    let denied: Value = serde_json::from_str(
        r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},
           {"Effect":"Deny","Action":"s3:PutObject","Resource":"arn:aws:s3:::x/*"}]}"#,
    )
    .unwrap();
    assert!(!grants_bucket(&denied, "aws", "x"));
    assert!(grants_bucket(&denied, "aws", "y"));
}

#[test]
fn trust_checks_principal_action_and_external_id() {
    let t = |s: &str| trusts_vmie(&serde_json::from_str(s).unwrap());
    assert!(t(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","vmie.amazonaws.com"]},"Action":["sts:AssumeRole"]}]}"#
    ));
    assert!(!t(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#
    ));
    assert!(!t(
        r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"sts:ExternalId":"other"}}}]}"#
    ));
    assert!(!t(
        r#"{"Statement":[{"Effect":"Deny","Principal":{"Service":"vmie.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#
    ));
    assert!(!t("{}"));
}

#[tokio::test]
async fn fix_creates_a_missing_role_then_check_is_ok() {
    let iam = FakeIam::default();
    let c = check(&iam, "vmimport", "aws", &b(&["bkt"])).await.unwrap();
    assert!(!c.exists && !c.ok());
    assert_eq!(c.buckets_missing, ["bkt"]);
    let f = fix(&iam, "vmimport", "aws", &b(&["bkt"])).await.unwrap();
    assert!(f.created_role && f.added_ec2);
    assert_eq!(f.added_buckets, ["bkt"]);
    assert!(f.after.ok());
    let c = check(&iam, "vmimport", "aws", &b(&["bkt"])).await.unwrap();
    assert!(c.ok(), "{c:?}");
    // A second fix changes nothing.
    let writes = iam.writes.lock().unwrap().len();
    let f = fix(&iam, "vmimport", "aws", &b(&["bkt"])).await.unwrap();
    assert!(!f.changed());
    assert_eq!(iam.writes.lock().unwrap().len(), writes);
}

#[tokio::test]
async fn fix_keeps_the_users_statements_and_adds_only_what_is_missing() {
    let user = r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"Mine","Effect":"Allow","Action":"kms:Decrypt","Resource":"arn:aws:kms:eu-west-1:1:key/k"},
        {"Effect":"Allow","Action":"s3:*","Resource":["arn:aws:s3:::old","arn:aws:s3:::old/*"]},
        {"Effect":"Allow","Action":["ec2:*"],"Resource":"*"}]}"#;
    let iam = FakeIam::with_role(&trust_policy(), Some(user));
    let c = check(&iam, "vmimport", "aws", &b(&["old", "new"]))
        .await
        .unwrap();
    assert!(c.exists && c.trusts_vmie && c.ec2_granted);
    assert_eq!(
        c.buckets_missing,
        ["new"],
        "the wildcard grant on old counts"
    );
    let f = fix(&iam, "vmimport", "aws", &b(&["old", "new"]))
        .await
        .unwrap();
    assert!(!f.created_role && !f.added_ec2);
    assert_eq!(f.added_buckets, ["new"]);
    let doc = iam.policy();
    let st = doc["Statement"].as_array().unwrap();
    assert_eq!(st.len(), 4, "three of the user's plus one: {doc}");
    assert_eq!(st[0]["Sid"], "Mine");
    assert_eq!(st[0]["Action"], "kms:Decrypt");
    assert_eq!(st[3]["Resource"][0], "arn:aws:s3:::new");
    assert!(check(&iam, "vmimport", "aws", &b(&["old", "new"]))
        .await
        .unwrap()
        .ok());
    assert_eq!(
        *iam.writes.lock().unwrap(),
        ["PutRolePolicy vmimport/vmimport"]
    );
}

#[tokio::test]
async fn untrusting_role_is_reported_not_rewritten_and_bad_json_is_left_alone() {
    let other = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let iam = FakeIam::with_role(other, None);
    let f = fix(&iam, "vmimport", "aws", &b(&["x"])).await.unwrap();
    assert!(!f.created_role);
    assert!(!f.after.trusts_vmie && !f.after.ok());
    assert_eq!(
        iam.roles.lock().unwrap()["vmimport"].assume_role_policy_document,
        other
    );

    let iam = FakeIam::with_role(&trust_policy(), Some("{not json"));
    let e = fix(&iam, "vmimport", "aws", &b(&["x"])).await.unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert!(iam.writes.lock().unwrap().is_empty());
}
