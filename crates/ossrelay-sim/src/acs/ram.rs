//! Simulated RAM: roles per account, their trust policies and attached system policies.
//!
//! Choices where the reference is silent: every caller may manage the roles of its own account
//! (no RAM permission model); role names compare case-insensitively; system policies are any
//! name starting with `Aliyun` (others → `EntityNotExist.Policy`); a preloaded role named
//! `AliyunECSImageExportDefaultRole` / `AliyunECSImageImportDefaultRole` gets its system policy
//! attached, as the console's one-click authorization does. A policy attached through the API
//! becomes visible to ECS only after the configured propagation delay (real RAM is eventually
//! consistent; packer sleeps and retries `NoSetRoletoECSServiceAcount` for this reason).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::rpc::{ts, Caller, RpcError, RpcRequest};
use crate::world::World;

/// RAM actions served.
pub const ACTIONS: &[&str] = &[
    "GetRole",
    "CreateRole",
    "UpdateRole",
    "AttachPolicyToRole",
    "ListPoliciesForRole",
];

fn not_exist(name: &str) -> RpcError {
    RpcError::new(
        404,
        "EntityNotExist.Role",
        format!("The role not exists: {name}."),
    )
}

fn valid_role_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn valid_trust(doc: &str) -> bool {
    serde_json::from_str::<Value>(doc).is_ok_and(|v| v["Statement"].is_array())
}

/// Serves one RAM action for `caller`'s account.
pub(crate) fn handle(
    world: &Arc<World>,
    caller: &Caller,
    req: &RpcRequest,
    action: &str,
) -> Result<Value, RpcError> {
    let now = world.now();
    let acct = caller.account.as_str();
    let mut st = world.cloud.lock();
    let roles = &mut st.roles;
    match action {
        "GetRole" => {
            let name = req.required("RoleName")?;
            let r = roles.get(acct, name).ok_or_else(|| not_exist(name))?;
            Ok(json!({"Role": r.json()}))
        }
        "CreateRole" => {
            let name = req.required("RoleName")?;
            if !valid_role_name(name) {
                return Err(RpcError::new(
                    400,
                    "InvalidParameter.RoleName.InvalidChars",
                    "The parameter \"RoleName\" contains invalid chars or is longer than 64 characters.",
                ));
            }
            let doc = req.required("AssumeRolePolicyDocument")?;
            if !valid_trust(doc) {
                return Err(RpcError::new(
                    400,
                    "MalformedPolicyDocument",
                    "The policy document is malformed.",
                ));
            }
            let max = match req.get("MaxSessionDuration").filter(|v| !v.is_empty()) {
                None => 3600,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|m| (3600..=43200).contains(m))
                    .ok_or_else(|| {
                        RpcError::new(
                            400,
                            "InvalidParameter.MaxSessionDuration",
                            "The parameter \"MaxSessionDuration\" must be between 3600 and 43200.",
                        )
                    })?,
            };
            if roles.get(acct, name).is_some() {
                return Err(RpcError::new(
                    409,
                    "EntityAlreadyExists.Role",
                    format!("The role already exists: {name}."),
                ));
            }
            let desc = req.get("Description").unwrap_or_default();
            roles.insert(acct, name, doc, desc, now);
            let r = roles.get_mut(acct, name).expect("just inserted");
            r.max_session = max;
            Ok(json!({"Role": r.json()}))
        }
        "UpdateRole" => {
            let name = req.required("RoleName")?;
            let r = roles.get_mut(acct, name).ok_or_else(|| not_exist(name))?;
            if let Some(doc) = req
                .get("NewAssumeRolePolicyDocument")
                .filter(|d| !d.is_empty())
            {
                if !valid_trust(doc) {
                    return Err(RpcError::new(
                        400,
                        "MalformedPolicyDocument",
                        "The policy document is malformed.",
                    ));
                }
                r.trust = doc.to_string();
            }
            if let Some(d) = req.get("NewDescription") {
                r.description = d.to_string();
            }
            r.updated = now;
            Ok(json!({"Role": r.json()}))
        }
        "AttachPolicyToRole" => {
            let ptype = req.required("PolicyType")?;
            let policy = req.required("PolicyName")?;
            let name = req.required("RoleName")?;
            if ptype != "System" && ptype != "Custom" {
                return Err(RpcError::invalid("PolicyType", ptype));
            }
            if ptype != "System" || !policy.starts_with("Aliyun") {
                return Err(RpcError::new(
                    404,
                    "EntityNotExist.Policy",
                    format!("The policy not exists: {policy}."),
                ));
            }
            let r = roles.get(acct, name).ok_or_else(|| not_exist(name))?;
            if r.has_policy(policy) {
                return Err(RpcError::new(
                    409,
                    "EntityAlreadyExists.Role.Policy",
                    format!("The policy already attached to the role: {policy}."),
                ));
            }
            let effective = now + world.cloud.role_propagation;
            roles.attach(acct, name, policy, now, effective);
            Ok(json!({}))
        }
        "ListPoliciesForRole" => {
            let name = req.required("RoleName")?;
            let r = roles.get(acct, name).ok_or_else(|| not_exist(name))?;
            let list: Vec<Value> = r
                .policies
                .iter()
                .map(|p| {
                    json!({
                        "PolicyName": p.name,
                        "PolicyType": p.policy_type,
                        "Description": "",
                        "DefaultVersion": "v1",
                        "AttachDate": ts(p.attached),
                    })
                })
                .collect();
            Ok(json!({"Policies": {"Policy": list}}))
        }
        _ => Err(RpcError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}
