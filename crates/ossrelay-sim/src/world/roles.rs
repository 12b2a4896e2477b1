//! RAM roles per account: trust documents (accounts, OIDC providers), attached system
//! policies and when ECS starts seeing them. State only; the RAM API is `crate::acs::ram`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::rpc::ts;

/// The export service role.
pub const EXPORT_ROLE: &str = "AliyunECSImageExportDefaultRole";
/// Its system policy.
pub const EXPORT_POLICY: &str = "AliyunECSImageExportRolePolicy";
/// The import service role.
pub const IMPORT_ROLE: &str = "AliyunECSImageImportDefaultRole";
/// Its system policy.
pub const IMPORT_POLICY: &str = "AliyunECSImageImportRolePolicy";

/// The trust document of the ECS service roles.
pub const ECS_SERVICE_TRUST: &str = r#"{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":["ecs.aliyuncs.com"]}}],"Version":"1"}"#;

/// A policy attached to a role.
#[derive(Debug, Clone)]
pub struct Attached {
    pub name: String,
    pub policy_type: String,
    pub attached: SystemTime,
    /// When ECS starts seeing it (RAM propagation delay).
    pub effective: SystemTime,
}

/// A RAM role.
#[derive(Debug, Clone)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub account: String,
    pub description: String,
    pub trust: String,
    pub max_session: u64,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub policies: Vec<Attached>,
}

impl Role {
    /// `acs:ram::<account>:role/<name>`.
    pub fn arn(&self) -> String {
        format!("acs:ram::{}:role/{}", self.account, self.name)
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "RoleId": self.id,
            "RoleName": self.name,
            "Arn": self.arn(),
            "Description": self.description,
            "AssumeRolePolicyDocument": self.trust,
            "CreateDate": ts(self.created),
            "UpdateDate": ts(self.updated),
            "MaxSessionDuration": self.max_session,
            "RolePrincipalName": format!("{}@role.{}.onaliyunservice.com", self.name.to_ascii_lowercase(), self.account),
            "IsServiceLinkedRole": false,
        })
    }

    /// Whether the trust policy lets `account` (its root or any of its identities) assume it.
    pub fn trusts_account(&self, account: &str) -> bool {
        principals(&self.trust, "RAM").iter().any(|p| {
            p == account
                || p.strip_prefix("acs:ram::")
                    .and_then(|r| r.split_once(':'))
                    .is_some_and(|(uid, _)| uid == account)
        })
    }

    /// Whether the trust policy lets tokens of the OIDC provider `provider_arn` with `claims`
    /// assume it: a `Principal.Federated` naming the provider, and every `StringEquals`
    /// condition on `oidc:iss`, `oidc:aud` or `oidc:sub` met by the token's claims.
    pub fn trusts_oidc(&self, provider_arn: &str, claims: &Value) -> bool {
        let Ok(doc) = serde_json::from_str::<Value>(&self.trust) else {
            return false;
        };
        doc["Statement"].as_array().into_iter().flatten().any(|st| {
            let allow = st["Effect"].as_str() == Some("Allow");
            let assume = as_list(&st["Action"]).iter().any(|a| a == "sts:AssumeRole");
            let names = as_list(&st["Principal"]["Federated"])
                .iter()
                .any(|p| p == provider_arn);
            let conditions = st["Condition"]["StringEquals"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, want)| {
                    let Some(claim) = k.strip_prefix("oidc:") else {
                        return true;
                    };
                    let have = as_list(&claims[claim]);
                    as_list(want).iter().any(|w| have.contains(w))
                });
            allow && assume && names && conditions
        })
    }

    /// Whether the system policy `name` is attached.
    pub fn has_policy(&self, name: &str) -> bool {
        self.policies.iter().any(|p| p.name == name)
    }

    /// Whether the policy is attached and has propagated by `now`.
    pub fn policy_effective(&self, name: &str, now: SystemTime) -> bool {
        self.policies
            .iter()
            .any(|p| p.name == name && now >= p.effective)
    }
}

/// A JSON string or array of strings as a list (anything else: empty).
fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The `Principal.<kind>` values of the Allow + `sts:AssumeRole` statements of a trust document.
fn principals(doc: &str, kind: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(doc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for st in v["Statement"].as_array().into_iter().flatten() {
        let allow = st["Effect"].as_str() == Some("Allow");
        let assume = as_list(&st["Action"]).iter().any(|a| a == "sts:AssumeRole");
        if allow && assume {
            out.extend(as_list(&st["Principal"][kind]));
        }
    }
    out
}

/// A trust document for account roots and OIDC providers (ARNs); an OIDC statement requires
/// `oidc:aud` = `sts.aliyuncs.com`, as the trust policies RRSA generates do.
pub fn trust(accounts: &[&str], oidc_providers: &[String]) -> String {
    let mut statements = Vec::new();
    if !accounts.is_empty() {
        let ram: Vec<String> = accounts
            .iter()
            .map(|a| format!("acs:ram::{a}:root"))
            .collect();
        statements
            .push(json!({"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"RAM":ram}}));
    }
    if !oidc_providers.is_empty() {
        statements.push(json!({
            "Action": "sts:AssumeRole",
            "Effect": "Allow",
            "Principal": {"Federated": oidc_providers},
            "Condition": {"StringEquals": {"oidc:aud": "sts.aliyuncs.com"}},
        }));
    }
    json!({"Statement": statements, "Version": "1"}).to_string()
}

/// All roles, keyed by (account, lower-case name).
#[derive(Default)]
pub struct Roles {
    map: BTreeMap<(String, String), Role>,
}

fn role_id() -> String {
    format!("3{:018}", rand::random::<u64>() % 1_000_000_000_000_000_000)
}

impl Roles {
    /// The role `name` of `account`.
    pub fn get(&self, account: &str, name: &str) -> Option<&Role> {
        self.map
            .get(&(account.to_string(), name.to_ascii_lowercase()))
    }

    pub(crate) fn get_mut(&mut self, account: &str, name: &str) -> Option<&mut Role> {
        self.map
            .get_mut(&(account.to_string(), name.to_ascii_lowercase()))
    }

    /// Creates a role (no validation: config preload and CreateRole both end here).
    pub fn insert(
        &mut self,
        account: &str,
        name: &str,
        trust: &str,
        description: &str,
        now: SystemTime,
    ) -> &Role {
        let role = Role {
            id: role_id(),
            name: name.to_string(),
            account: account.to_string(),
            description: description.to_string(),
            trust: trust.to_string(),
            max_session: 3600,
            created: now,
            updated: now,
            policies: Vec::new(),
        };
        let key = (account.to_string(), name.to_ascii_lowercase());
        self.map.insert(key.clone(), role);
        &self.map[&key]
    }

    /// Attaches a system policy (idempotent), visible to ECS from `effective`.
    pub fn attach(
        &mut self,
        account: &str,
        name: &str,
        policy: &str,
        now: SystemTime,
        effective: SystemTime,
    ) {
        if let Some(r) = self.get_mut(account, name) {
            if !r.has_policy(policy) {
                r.policies.push(Attached {
                    name: policy.to_string(),
                    policy_type: "System".into(),
                    attached: now,
                    effective,
                });
            }
        }
    }

    /// Preloads `--role ACCOUNT:ROLE:TRUSTED` (TRUSTED empty or `ecs` = the ECS service; else
    /// a comma list of account IDs and `oidc:<provider name>` entries, the provider being one
    /// of `account`'s).
    pub fn preload(&mut self, account: &str, name: &str, trusted: &str, now: SystemTime) {
        let trust = if trusted.is_empty() || trusted.eq_ignore_ascii_case("ecs") {
            ECS_SERVICE_TRUST.to_string()
        } else {
            let (oidc, accounts): (Vec<&str>, Vec<&str>) =
                trusted.split(',').partition(|t| t.starts_with("oidc:"));
            let providers: Vec<String> = oidc
                .iter()
                .map(|p| format!("acs:ram::{account}:oidc-provider/{}", &p[5..]))
                .collect();
            trust(&accounts, &providers)
        };
        self.insert(account, name, &trust, "", now);
        for (role, policy) in [(EXPORT_ROLE, EXPORT_POLICY), (IMPORT_ROLE, IMPORT_POLICY)] {
            if name.eq_ignore_ascii_case(role) {
                self.attach(account, name, policy, now, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_documents() {
        let now = SystemTime::now();
        let mut r = Roles::default();
        r.preload("111", "migrator", "222,333", now);
        r.preload("111", EXPORT_ROLE, "", now);
        let m = r.get("111", "MIGRATOR").unwrap();
        assert_eq!(m.arn(), "acs:ram::111:role/migrator");
        assert!(m.trusts_account("222") && m.trusts_account("333"));
        assert!(!m.trusts_account("111") && !m.trusts_account("22"));
        let e = r.get("111", EXPORT_ROLE).unwrap();
        assert!(e.has_policy(EXPORT_POLICY));
        assert!(!e.trusts_account("111"));
        assert_eq!(principals(&e.trust, "Service"), vec!["ecs.aliyuncs.com"]);
        assert!(r.get("222", "migrator").is_none());
    }
}
