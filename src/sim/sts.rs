//! Simulated STS: AssumeRole into roles of simulated accounts (temporary credentials the OSS
//! side accepts for the role's account) and GetCallerIdentity.
//!
//! Choices where the reference is silent or UNCONFIRMED: a role is assumable when its trust
//! policy names the caller's account (`acs:ram::<uid>:root`, any identity of the account, or the
//! bare ID); otherwise `403 NoPermission`. A configured `sts_ttl` replaces the requested
//! lifetime (the reported `Expiration` stays truthful), so tests can watch credentials expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};

use super::rpc::{Caller, RpcError, RpcRequest};
use super::server::Shared;

/// STS actions served.
pub const ACTIONS: &[&str] = &["AssumeRole", "GetCallerIdentity"];

/// Who a temporary AccessKey stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: String,
    pub role_name: String,
    pub role_id: String,
    pub session_name: String,
}

fn random(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A fresh temporary triple `(AccessKeyId, secret, token)`.
pub fn new_triple() -> (String, String, String) {
    (
        format!("STS.N{}", random(24)),
        random(44),
        format!("CAIS{}", random(300)),
    )
}

/// UTC `yyyy-MM-ddTHH:mm:ssZ`.
pub fn ts(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn parse_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (acct, role) = rest.split_once(":role/")?;
    (!acct.is_empty() && !role.is_empty() && !role.contains('/')).then_some((acct, role))
}

fn valid_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'_' | b'-'))
}

/// Serves one STS action.
pub(crate) fn handle(
    shared: &Arc<Shared>,
    caller: &Caller,
    req: &RpcRequest,
    action: &str,
) -> Result<Value, RpcError> {
    match action {
        "AssumeRole" => assume_role(shared, caller, req),
        "GetCallerIdentity" => {
            let st = shared.cloud.state.lock().expect("cloud lock");
            Ok(match st.sessions.get(&caller.access_key_id) {
                Some(s) => {
                    let acct = &s.account;
                    json!({
                        "AccountId": acct,
                        "Arn": format!("acs:ram::{acct}:assumed-role/{}/{}", s.role_name, s.session_name),
                        "IdentityType": "AssumedRole",
                        "PrincipalId": format!("{}:{}", s.role_id, s.session_name),
                        "UserId": format!("{}:{}", s.role_id, s.session_name),
                        "RoleId": s.role_id,
                    })
                }
                None => {
                    let acct = &caller.account;
                    json!({
                        "AccountId": acct,
                        "Arn": format!("acs:ram::{acct}:root"),
                        "IdentityType": "Account",
                        "PrincipalId": acct,
                        "UserId": acct,
                        "RoleId": "",
                    })
                }
            })
        }
        _ => Err(RpcError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

fn assume_role(shared: &Arc<Shared>, caller: &Caller, req: &RpcRequest) -> Result<Value, RpcError> {
    let arn = req.required("RoleArn")?;
    let session = req.required("RoleSessionName")?;
    if !valid_session_name(session) {
        return Err(RpcError::new(
            400,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed: 2-64 characters of [A-Za-z0-9.@_-].",
        ));
    }
    let Some((acct, name)) = parse_arn(arn) else {
        return Err(RpcError::new(
            400,
            "InvalidParameter.RoleArn",
            "The parameter RoleArn is wrongly formed; expected acs:ram::<account-id>:role/<role-name>.",
        ));
    };
    let duration = match req.get("DurationSeconds").filter(|v| !v.is_empty()) {
        None => 3600,
        Some(v) => v.parse::<u64>().map_err(|_| {
            RpcError::new(
                400,
                "InvalidParameter.DurationSeconds",
                "The parameter DurationSeconds must be an integer.",
            )
        })?,
    };
    let now = shared.sim_now();
    let (ak, secret, token) = new_triple();
    let (role_name, role_id, expires) = {
        let mut st = shared.cloud.state.lock().expect("cloud lock");
        let Some(role) = st.roles.get(acct, name) else {
            return Err(RpcError::new(
                404,
                "EntityNotExist.Role",
                format!("The role not exists: {arn}."),
            ));
        };
        if !role.trusts_account(&caller.account) {
            return Err(RpcError::new(
                403,
                "NoPermission",
                format!("You are not authorized to do this action. You should be authorized by RAM. Resource: {arn}"),
            ));
        }
        if duration < 900 || duration > role.max_session {
            return Err(RpcError::new(
                400,
                "InvalidParameter.DurationSeconds",
                format!(
                    "The DurationSeconds is invalid: it must be between 900 and the role's MaxSessionDuration ({}).",
                    role.max_session
                ),
            ));
        }
        let life = shared
            .cloud
            .sts_ttl
            .unwrap_or(Duration::from_secs(duration));
        let out = (role.name.clone(), role.id.clone(), now + life);
        st.sessions.insert(
            ak.clone(),
            Session {
                account: acct.to_string(),
                role_name: out.0.clone(),
                role_id: out.1.clone(),
                session_name: session.to_string(),
            },
        );
        out
    };
    shared.add_temporary_credentials(&ak, &secret, &token, acct, expires);
    Ok(json!({
        "AssumedRoleUser": {
            "Arn": format!("acs:ram::{acct}:role/{}/{session}", role_name.to_ascii_lowercase()),
            "AssumedRoleId": format!("{role_id}:{session}"),
        },
        "Credentials": {
            "AccessKeyId": ak,
            "AccessKeySecret": secret,
            "SecurityToken": token,
            "Expiration": ts(expires),
        },
        "SourceIdentity": "",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_and_names() {
        assert_eq!(
            parse_arn("acs:ram::1234567890123456:role/image-migrator"),
            Some(("1234567890123456", "image-migrator"))
        );
        assert_eq!(parse_arn("acs:ram::1:user/x"), None);
        assert_eq!(parse_arn("acs:ram:::role/x"), None);
        assert!(valid_session_name("ecs-image-migrate"));
        assert!(!valid_session_name("a"));
        assert!(!valid_session_name("has space"));
        let (ak, s, t) = new_triple();
        assert!(ak.starts_with("STS.") && s.len() == 44 && t.starts_with("CAIS"));
    }
}
