//! AWS STS (Query API, Version 2011-06-15): AssumeRole and GetCallerIdentity (SigV4, service
//! `sts`) and AssumeRoleWithWebIdentity (unsigned; the token is the credential).
//!
//! Issued credentials (`ASIA…` + session token) are registered with the world's key table, so
//! the S3 listener accepts them until `Expiration`. Choices where the reference is silent:
//! every simulated account may assume every configured role (no trust policies); a role
//! configured with an external ID requires exactly that `ExternalId` (else `403 AccessDenied`);
//! a web-identity token is accepted when it is one of the configured opaque tokens, or a JWT
//! (signature not checked: the simulator has no issuer keys) whose `iss` is a configured OIDC
//! provider's issuer, whose `aud` is `sts.amazonaws.com` or one of its client IDs, and whose
//! `exp` lies ahead; `sts_ttl` replaces the requested lifetime (as on the Alibaba side).

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{QueryError, QueryRequest};
use crate::sigv4::Verified;
use crate::world::aws::{new_creds, AwsSession};
use crate::world::iam::role_id;
use crate::world::World;
use crate::xml::{self, el, iso};

const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (acct, role) = rest.split_once(":role/")?;
    let name = role.rsplit('/').next()?;
    (!acct.is_empty() && !name.is_empty()).then_some((acct, name))
}

fn validation(message: impl Into<String>) -> QueryError {
    QueryError::sender(400, "ValidationError", message)
}

fn duration(req: &QueryRequest) -> Result<Duration, QueryError> {
    match req.p("DurationSeconds") {
        None => Ok(Duration::from_secs(3600)),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (900..=43_200).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(validation(format!(
                "1 validation error detected: Value '{v}' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200"
            ))),
        },
    }
}

fn session_name(req: &QueryRequest) -> Result<String, QueryError> {
    let s = req.p("RoleSessionName").unwrap_or_default();
    let ok = (2..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(validation(format!(
            "1 validation error detected: Value '{s}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
        )))
    }
}

/// Issues credentials for `(account, role, session)` and renders the result document body.
fn issue(w: &World, account: &str, role: &str, session: &str, ttl: Duration) -> String {
    let now = w.now();
    let ttl = w.aws.sts_ttl.unwrap_or(ttl);
    let c = new_creds(now, ttl);
    w.oss
        .add_temporary_credentials(&c.access_key_id, &c.secret, &c.token, account, c.expires);
    w.aws.lock().sessions.insert(
        c.access_key_id.clone(),
        AwsSession {
            account: account.to_string(),
            role: role.to_string(),
            session_name: session.to_string(),
        },
    );
    format!(
        "<Credentials>{}{}{}{}</Credentials><AssumedRoleUser>{}{}</AssumedRoleUser>",
        el("AccessKeyId", &c.access_key_id),
        el("SecretAccessKey", &c.secret),
        el("SessionToken", &c.token),
        el("Expiration", &iso(c.expires)),
        el(
            "Arn",
            &format!("arn:aws:sts::{account}:assumed-role/{role}/{session}")
        ),
        el(
            "AssumedRoleId",
            &format!("{}:{session}", role_id(account, role))
        ),
    )
}

fn wrap(action: &str, inner: &str, rid: &str) -> String {
    format!(
        "{}<{action}Response xmlns=\"{NS}\"><{action}Result>{inner}</{action}Result><ResponseMetadata>{}</ResponseMetadata></{action}Response>",
        xml::DECL,
        el("RequestId", rid)
    )
}

fn role_of<'a>(
    w: &'a World,
    req: &QueryRequest,
) -> Result<(String, String, &'a crate::config::SimAwsRole), QueryError> {
    let arn = req.p("RoleArn").unwrap_or_default();
    let Some((acct, name)) = parse_role_arn(arn) else {
        return Err(validation(format!("{arn} is invalid")));
    };
    let role = w.aws.role(acct, name).ok_or_else(|| {
        QueryError::sender(
            403,
            "AccessDenied",
            format!("Not authorized to perform sts:AssumeRole on resource {arn} (no such role)"),
        )
    })?;
    Ok((acct.to_string(), name.to_string(), role))
}

pub(crate) fn assume_role(
    w: &World,
    _auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let (acct, name, role) = role_of(w, req)?;
    let session = session_name(req)?;
    let ttl = duration(req)?;
    if let Some(x) = req.p("ExternalId") {
        if x.len() < 2 {
            return Err(validation("ExternalId must be at least 2 characters"));
        }
    }
    if let Some(want) = &role.external_id {
        if req.p("ExternalId") != Some(want.as_str()) {
            return Err(QueryError::sender(403, "AccessDenied", format!(
                "User is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::{acct}:role/{name} (ExternalId mismatch)"
            )));
        }
    }
    let inner = issue(w, &acct, &name, &session, ttl) + &el("PackedPolicySize", "0");
    Ok(wrap("AssumeRole", &inner, &req.request_id))
}

pub(crate) fn caller_identity(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let s = w.aws.lock().sessions.get(&auth.access_key_id).cloned();
    let inner = match s {
        Some(s) => format!(
            "{}{}{}",
            el(
                "Arn",
                &format!(
                    "arn:aws:sts::{}:assumed-role/{}/{}",
                    s.account, s.role, s.session_name
                )
            ),
            el(
                "UserId",
                &format!("{}:{}", role_id(&s.account, &s.role), s.session_name)
            ),
            el("Account", &s.account)
        ),
        None => format!(
            "{}{}{}",
            el("Arn", &format!("arn:aws:iam::{}:root", auth.account)),
            el("UserId", &auth.account),
            el("Account", &auth.account)
        ),
    };
    Ok(wrap("GetCallerIdentity", &inner, &req.request_id))
}

fn jwt_claims(token: &str) -> Option<Value> {
    let mut it = token.split('.');
    let (_h, p) = (it.next()?, it.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn assume_role_with_web_identity(
    w: &World,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let (acct, name, _role) = role_of(w, req)?;
    let session = session_name(req)?;
    let ttl = duration(req)?;
    let token = req.p("WebIdentityToken").unwrap_or_default();
    let invalid = |m: &str| QueryError::sender(400, "InvalidIdentityToken", m.to_string());
    let (subject, provider, audience) = if w.aws.web_identity_tokens.iter().any(|t| t == token)
        && !token.is_empty()
    {
        (
            "sim-web-identity".to_string(),
            "sim".to_string(),
            "sts.amazonaws.com".to_string(),
        )
    } else {
        let c = jwt_claims(token).ok_or_else(|| {
            invalid("The web identity token is not a JWT and not a configured token.")
        })?;
        let iss = c["iss"].as_str().unwrap_or_default();
        let p = w
            .aws
            .oidc_providers
            .iter()
            .find(|p| p.issuer_url == iss)
            .ok_or_else(|| {
                invalid("No OpenIDConnect provider found in your account for the token's issuer.")
            })?;
        let auds: Vec<String> = match &c["aud"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        let aud = auds
            .iter()
            .find(|a| a.as_str() == "sts.amazonaws.com" || p.client_ids.iter().any(|c| c == *a))
            .ok_or_else(|| invalid("Incorrect token audience"))?;
        let now = w
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if c["exp"].as_u64().is_none_or(|e| e <= now) {
            return Err(QueryError::sender(
                400,
                "ExpiredTokenException",
                "Token is expired",
            ));
        }
        (
            c["sub"].as_str().unwrap_or_default().to_string(),
            iss.to_string(),
            aud.clone(),
        )
    };
    let inner = issue(w, &acct, &name, &session, ttl)
        + &el("SubjectFromWebIdentityToken", &subject)
        + &el("Provider", &provider)
        + &el("Audience", &audience)
        + &el("PackedPolicySize", "0");
    Ok(wrap("AssumeRoleWithWebIdentity", &inner, &req.request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/r1"),
            Some(("123456789012", "r1"))
        );
        assert_eq!(
            parse_role_arn("arn:aws:iam::1:role/path/r2"),
            Some(("1", "r2"))
        );
        assert_eq!(parse_role_arn("acs:ram::1:role/x"), None);
    }
}
