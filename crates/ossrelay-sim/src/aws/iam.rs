//! IAM Query API (Version 2010-05-08, SigV4 service `iam`, scope region `us-east-1`): GetRole,
//! CreateRole, PutRolePolicy, GetRolePolicy on the caller's account — what a client needs to
//! set up the `vmimport` service role. Documents come back URL-encoded (RFC 3986), as IAM
//! returns them; errors are `NoSuchEntity` 404, `EntityAlreadyExists` 409,
//! `MalformedPolicyDocument` 400, `ValidationError` 400. A role or policy becomes usable by VM
//! Import/Export only `--role-propagation` seconds after it is written (see `world::iam`).
//!
//! These roles are VM Import/Export's; the roles STS hands out (`--aws-role`) are separate.

use std::collections::BTreeMap;

use super::{QueryError, QueryRequest};
use crate::sigv4::Verified;
use crate::world::iam::{check_policy, role_id, IamRole};
use crate::world::World;
use crate::xml::{self, el, iso, url_encode};

const NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

fn wrap(action: &str, result: Option<&str>, rid: &str) -> String {
    let result = result
        .map(|r| format!("<{action}Result>{r}</{action}Result>"))
        .unwrap_or_default();
    format!(
        "{}<{action}Response xmlns=\"{NS}\">{result}<ResponseMetadata>{}</ResponseMetadata></{action}Response>",
        xml::DECL,
        el("RequestId", rid)
    )
}

fn validation(message: impl Into<String>) -> QueryError {
    QueryError::sender(400, "ValidationError", message)
}

fn no_role(name: &str) -> QueryError {
    QueryError::sender(
        404,
        "NoSuchEntity",
        format!("The role with name {name} cannot be found."),
    )
}

fn malformed(message: String) -> QueryError {
    QueryError::sender(400, "MalformedPolicyDocument", message)
}

/// A required, well-formed name (`[\w+=,.@-]{1,max}`).
fn name<'a>(req: &'a QueryRequest, param: &str, max: usize) -> Result<&'a str, QueryError> {
    let v = req.p(param).unwrap_or_default();
    let ok = (1..=max).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
    if ok {
        Ok(v)
    } else {
        Err(validation(format!(
            "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length between 1 and {max}",
            lower_first(param)
        )))
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn role_xml(account: &str, r: &IamRole) -> String {
    let mut x = el("Path", &r.path);
    x += &el("RoleName", &r.name);
    x += &el("RoleId", &r.role_id);
    x += &el(
        "Arn",
        &format!("arn:aws:iam::{account}:role{}{}", r.path, r.name),
    );
    x += &el("CreateDate", &iso(r.created));
    x += &el("AssumeRolePolicyDocument", &url_encode(&r.trust));
    if !r.description.is_empty() {
        x += &el("Description", &r.description);
    }
    x += &el("MaxSessionDuration", &r.max_session.to_string());
    format!("<Role>{x}</Role>")
}

pub(crate) fn get_role(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let role = name(req, "RoleName", 64)?;
    let st = w.ec2.lock();
    let r = st
        .roles
        .get(&(auth.account.clone(), role.to_string()))
        .ok_or_else(|| no_role(role))?;
    Ok(wrap(
        "GetRole",
        Some(&role_xml(&auth.account, r)),
        &req.request_id,
    ))
}

pub(crate) fn create_role(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let role = name(req, "RoleName", 64)?;
    let trust = req
        .p("AssumeRolePolicyDocument")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            validation("1 validation error detected: Value null at 'assumeRolePolicyDocument' failed to satisfy constraint: Member must not be null")
        })?;
    check_policy(trust, true).map_err(malformed)?;
    let path = req.p("Path").filter(|p| !p.is_empty()).unwrap_or("/");
    if !path.starts_with('/') || !path.ends_with('/') || path.len() > 512 {
        return Err(validation(format!(
            "The specified value for path is invalid: {path:?} must begin and end with '/'"
        )));
    }
    let max_session = match req.p("MaxSessionDuration").filter(|v| !v.is_empty()) {
        None => 3600,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (3600..=43_200).contains(n))
            .ok_or_else(|| {
                validation(format!(
                    "1 validation error detected: Value '{v}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between 3600 and 43200"
                ))
            })?,
    };
    let mut st = w.ec2.lock();
    let key = (auth.account.clone(), role.to_string());
    if st.roles.contains_key(&key) {
        return Err(QueryError::sender(
            409,
            "EntityAlreadyExists",
            format!("Role with name {role} already exists."),
        ));
    }
    let r = IamRole {
        name: role.to_string(),
        path: path.to_string(),
        role_id: role_id(&auth.account, role),
        description: req.p("Description").unwrap_or_default().to_string(),
        max_session,
        created: w.now(),
        trust: trust.to_string(),
        policies: BTreeMap::new(),
    };
    let body = role_xml(&auth.account, &r);
    st.roles.insert(key, r);
    tracing::info!(account = %auth.account, role = %role, "IAM role created");
    Ok(wrap("CreateRole", Some(&body), &req.request_id))
}

pub(crate) fn put_role_policy(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let role = name(req, "RoleName", 64)?;
    let policy = name(req, "PolicyName", 128)?;
    let doc = req
        .p("PolicyDocument")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            validation("1 validation error detected: Value null at 'policyDocument' failed to satisfy constraint: Member must not be null")
        })?;
    let mut st = w.ec2.lock();
    let r = st
        .roles
        .get_mut(&(auth.account.clone(), role.to_string()))
        .ok_or_else(|| no_role(role))?;
    check_policy(doc, false).map_err(malformed)?;
    r.policies
        .insert(policy.to_string(), (doc.to_string(), w.now()));
    tracing::info!(account = %auth.account, role = %role, policy = %policy, "IAM role policy written");
    Ok(wrap("PutRolePolicy", None, &req.request_id))
}

pub(crate) fn get_role_policy(
    w: &World,
    auth: &Verified,
    req: &QueryRequest,
) -> Result<String, QueryError> {
    let role = name(req, "RoleName", 64)?;
    let policy = name(req, "PolicyName", 128)?;
    let st = w.ec2.lock();
    let r = st
        .roles
        .get(&(auth.account.clone(), role.to_string()))
        .ok_or_else(|| no_role(role))?;
    let (doc, _) = r.policies.get(policy).ok_or_else(|| {
        QueryError::sender(
            404,
            "NoSuchEntity",
            format!("The role policy with name {policy} cannot be found."),
        )
    })?;
    let body =
        el("RoleName", role) + &el("PolicyName", policy) + &el("PolicyDocument", &url_encode(doc));
    Ok(wrap("GetRolePolicy", Some(&body), &req.request_id))
}
