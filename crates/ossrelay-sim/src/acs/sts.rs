//! Simulated STS: AssumeRole into roles of simulated accounts (temporary credentials the OSS
//! side accepts for the role's account), AssumeRoleWithOIDC (RRSA) and GetCallerIdentity.
//!
//! AssumeRoleWithOIDC is served without a signature, as on the real service: the request
//! carries `RoleArn`, `OIDCProviderArn` and `OIDCToken`, and each is checked: the role must
//! exist; the provider must exist (`404 EntityNotExist.OIDCProvider`); the token must be a JWT
//! whose `iss` is the provider's issuer URL, whose `aud` names one of the provider's client IDs
//! and whose `exp` lies in the future (`nbf`, when present, in the past); and the role's trust
//! policy must name the provider as `Principal.Federated` with its `oidc:*` conditions met
//! (else `403 NoPermission`). The JWT signature is not verified: the simulator has no issuer
//! keys (JWKS) to fetch; a real cluster's tokens are RS256-signed. The error codes for token
//! problems (`InvalidParameter.OIDCToken`, `AuthenticationFail.OIDCToken.*`) are UNCONFIRMED.
//!
//! Choices where the reference is silent or UNCONFIRMED: a role is assumable when its trust
//! policy names the caller's account (`acs:ram::<uid>:root`, any identity of the account, or the
//! bare ID); otherwise `403 NoPermission`. A configured `sts_ttl` replaces the requested
//! lifetime (the reported `Expiration` stays truthful), so tests can watch credentials expire.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::rpc::{ts, Caller, RpcError, RpcRequest};
use crate::world::cloud::{new_triple, Session};
use crate::world::roles::Role;
use crate::world::World;

/// STS actions served.
pub const ACTIONS: &[&str] = &["AssumeRole", "AssumeRoleWithOIDC", "GetCallerIdentity"];

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
    world: &Arc<World>,
    caller: &Caller,
    req: &RpcRequest,
    action: &str,
) -> Result<Value, RpcError> {
    match action {
        "AssumeRole" => assume_role(world, caller, req),
        "GetCallerIdentity" => {
            let st = world.cloud.lock();
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

fn assume_role(world: &Arc<World>, caller: &Caller, req: &RpcRequest) -> Result<Value, RpcError> {
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
    let duration = duration_param(req)?;
    issue(world, arn, acct, name, session, duration, |role| {
        role.trusts_account(&caller.account)
    })
}

fn duration_param(req: &RpcRequest) -> Result<u64, RpcError> {
    Ok(match req.get("DurationSeconds").filter(|v| !v.is_empty()) {
        None => 3600,
        Some(v) => v.parse::<u64>().map_err(|_| {
            RpcError::new(
                400,
                "InvalidParameter.DurationSeconds",
                "The parameter DurationSeconds must be an integer.",
            )
        })?,
    })
}

/// Issues temporary credentials for role `name` of `acct` when `trusted(role)` holds.
fn issue(
    world: &Arc<World>,
    arn: &str,
    acct: &str,
    name: &str,
    session: &str,
    duration: u64,
    trusted: impl FnOnce(&Role) -> bool,
) -> Result<Value, RpcError> {
    let now = world.now();
    let (ak, secret, token) = new_triple();
    let (role_name, role_id, expires) = {
        let mut st = world.cloud.lock();
        let Some(role) = st.roles.get(acct, name) else {
            return Err(RpcError::new(
                404,
                "EntityNotExist.Role",
                format!("The role not exists: {arn}."),
            ));
        };
        if !trusted(role) {
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
        let life = world.cloud.sts_ttl.unwrap_or(Duration::from_secs(duration));
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
    world
        .oss
        .add_temporary_credentials(&ak, &secret, &token, acct, expires);
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

/// The claims of a JWT (header.payload.signature, base64url); `None` when it is not one.
fn jwt_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let decode = |p: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(Value::is_object)
    };
    decode(parts[0])?;
    decode(parts[1])
}

fn token_error(code: &str, message: impl Into<String>) -> RpcError {
    RpcError::new(400, code, message)
}

/// AssumeRoleWithOIDC: unsigned; the OIDC token is checked against the provider and the role.
pub(crate) fn assume_role_with_oidc(
    world: &Arc<World>,
    req: &RpcRequest,
) -> Result<Value, RpcError> {
    let arn = req.required("RoleArn")?;
    let provider_arn = req.required("OIDCProviderArn")?;
    let token = req.required("OIDCToken")?;
    let session = req
        .get("RoleSessionName")
        .filter(|s| !s.is_empty())
        .unwrap_or("oidc-session");
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
    let Some(provider) = world
        .cloud
        .oidc_providers
        .iter()
        .find(|p| p.arn() == provider_arn)
    else {
        return Err(RpcError::new(
            404,
            "EntityNotExist.OIDCProvider",
            format!("The OIDC provider does not exist: {provider_arn}."),
        ));
    };
    let Some(claims) = jwt_claims(token) else {
        return Err(token_error(
            "InvalidParameter.OIDCToken",
            "The parameter OIDCToken is not a well-formed JWT.",
        ));
    };
    if claims["iss"].as_str() != Some(provider.issuer_url.as_str()) {
        return Err(token_error(
            "AuthenticationFail.OIDCToken.Invalid",
            "The issuer (iss) of the OIDC token does not match the issuer URL of the OIDC provider.",
        ));
    }
    let aud: Vec<&str> = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !aud
        .iter()
        .any(|a| provider.client_ids.iter().any(|c| c == a))
    {
        return Err(token_error(
            "AuthenticationFail.OIDCToken.Invalid",
            "The audience (aud) of the OIDC token is not a client ID of the OIDC provider.",
        ));
    }
    let now = world
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let Some(exp) = claims["exp"].as_u64() else {
        return Err(token_error(
            "InvalidParameter.OIDCToken",
            "The OIDC token has no expiration (exp).",
        ));
    };
    if exp <= now {
        return Err(token_error(
            "AuthenticationFail.OIDCToken.Expired",
            "The OIDC token has expired.",
        ));
    }
    if claims["nbf"].as_u64().is_some_and(|nbf| nbf > now) {
        return Err(token_error(
            "AuthenticationFail.OIDCToken.Invalid",
            "The OIDC token is not valid yet (nbf).",
        ));
    }
    let duration = duration_param(req)?;
    issue(world, arn, acct, name, session, duration, |role| {
        role.trusts_oidc(provider_arn, &claims)
    })
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

    #[test]
    fn jwts_are_recognised() {
        use base64::Engine as _;
        let b = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.{}",
            b(r#"{"alg":"RS256"}"#),
            b(r#"{"iss":"https://i","aud":"sts.aliyuncs.com","exp":9999999999}"#),
            b("sig")
        );
        assert_eq!(jwt_claims(&jwt).unwrap()["iss"], "https://i");
        assert!(jwt_claims("not-a-jwt").is_none());
        assert!(jwt_claims("a.b").is_none());
        assert!(jwt_claims(&format!("{}..{}", b("{}"), b("x"))).is_none());
        assert!(jwt_claims(&format!("{}.{}.x", b("{}"), b("[1]"))).is_none());
    }
}
