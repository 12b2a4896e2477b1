//! IAM roles and inline role policies over the Query API (ec2-vm-import-export.md §5.2): the
//! four calls the `vmimport` service role needs ([`super::vmimport`]), behind [`IamApi`] so
//! the role logic is tested against a fake.
//!
//! Guarantees callers can rely on:
//! * IAM is global: one endpoint per partition, signed for `us-east-1` (`cn-north-1` in
//!   China) whatever region the rest of the job uses ([`super::query::iam_endpoint`]).
//! * Policy documents come back URL-encoded (RFC 3986); [`Role::assume_role_policy_document`]
//!   and [`IamApi::get_role_policy`] return them decoded, ready for `serde_json`.
//! * "Does not exist" is `Ok(None)` (`NoSuchEntity`), never an error.

use std::sync::Arc;

use async_trait::async_trait;

use super::query::{self, AwsQueryError, Params, QueryClient, IAM};
use super::xml::Node;
use crate::credentials::CredentialsProvider;

/// A role as GetRole / CreateRole report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    pub role_name: String,
    pub role_id: String,
    pub arn: String,
    pub path: String,
    /// The trust policy, URL-decoded JSON.
    pub assume_role_policy_document: String,
    pub description: String,
}

/// The IAM calls the vmimport role logic uses.
#[async_trait]
pub trait IamApi: Send + Sync {
    /// The role, or `None` when it does not exist.
    async fn get_role(&self, name: &str) -> Result<Option<Role>, AwsQueryError>;
    async fn create_role(
        &self,
        name: &str,
        trust_policy_json: &str,
        description: &str,
    ) -> Result<Role, AwsQueryError>;
    /// The inline policy's document (URL-decoded JSON), or `None` when the role has no inline
    /// policy of that name.
    async fn get_role_policy(
        &self,
        role: &str,
        policy: &str,
    ) -> Result<Option<String>, AwsQueryError>;
    /// Creates or replaces the inline policy.
    async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        json: &str,
    ) -> Result<(), AwsQueryError>;
}

/// GetRole's parameters.
pub fn get_role_params(name: &str) -> Params {
    let mut p = Params::new("GetRole", IAM);
    p.set("RoleName", name);
    p
}

/// CreateRole's parameters.
pub fn create_role_params(name: &str, trust_policy_json: &str, description: &str) -> Params {
    let mut p = Params::new("CreateRole", IAM);
    p.set("RoleName", name)
        .set("AssumeRolePolicyDocument", trust_policy_json)
        .opt("Description", Some(description));
    p
}

/// GetRolePolicy's parameters.
pub fn get_role_policy_params(role: &str, policy: &str) -> Params {
    let mut p = Params::new("GetRolePolicy", IAM);
    p.set("RoleName", role).set("PolicyName", policy);
    p
}

/// PutRolePolicy's parameters.
pub fn put_role_policy_params(role: &str, policy: &str, json: &str) -> Params {
    let mut p = Params::new("PutRolePolicy", IAM);
    p.set("RoleName", role)
        .set("PolicyName", policy)
        .set("PolicyDocument", json);
    p
}

/// Decodes an RFC 3986-encoded policy document (`%7B%22Version…`); a document that is
/// already plain JSON comes through unchanged (its `%` would be followed by non-hex).
pub fn decode_policy(s: &str) -> String {
    percent_encoding::percent_decode_str(s.trim())
        .decode_utf8_lossy()
        .into_owned()
}

/// The `<Role>` element of GetRole / CreateRole.
pub fn parse_role(role: &Node) -> Role {
    Role {
        role_name: role.string_at(&["RoleName"]),
        role_id: role.string_at(&["RoleId"]),
        arn: role.string_at(&["Arn"]),
        path: role.string_at(&["Path"]),
        assume_role_policy_document: decode_policy(&role.string_at(&["AssumeRolePolicyDocument"])),
        description: role.string_at(&["Description"]),
    }
}

/// IAM with one set of credentials; cheap to clone.
#[derive(Debug, Clone)]
pub struct IamClient {
    query: QueryClient,
}

impl IamClient {
    /// IAM of `region`'s partition; `endpoint` `None` means the partition's global endpoint.
    /// An explicit endpoint is signed for the partition's IAM region all the same.
    pub fn new(
        region: &str,
        endpoint: Option<String>,
        creds: Arc<dyn CredentialsProvider>,
    ) -> Self {
        let (default, signing_region) = query::iam_endpoint(region);
        let endpoint = endpoint.filter(|e| !e.trim().is_empty()).unwrap_or(default);
        Self {
            query: QueryClient::new(IAM, endpoint, signing_region, creds),
        }
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: crate::http::RetryPolicy) -> Self {
        self.query = self.query.with_retry(retry);
        self
    }

    pub fn endpoint(&self) -> &str {
        self.query.endpoint()
    }

    fn role_of(&self, root: &Node, result: &str, action: &str) -> Result<Role, AwsQueryError> {
        root.at(&[result, "Role"])
            .map(parse_role)
            .ok_or_else(|| AwsQueryError::InvalidResponse {
                service: "iam",
                action: action.into(),
                endpoint: self.endpoint().to_string(),
                status: 200,
                reason: format!("the answer has no {result}/Role"),
            })
    }
}

#[async_trait]
impl IamApi for IamClient {
    async fn get_role(&self, name: &str) -> Result<Option<Role>, AwsQueryError> {
        match self.query.call(&get_role_params(name)).await {
            Ok(root) => self.role_of(&root, "GetRoleResult", "GetRole").map(Some),
            Err(e) if e.is_code("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_role(
        &self,
        name: &str,
        trust_policy_json: &str,
        description: &str,
    ) -> Result<Role, AwsQueryError> {
        let root = self
            .query
            .call(&create_role_params(name, trust_policy_json, description))
            .await?;
        self.role_of(&root, "CreateRoleResult", "CreateRole")
    }

    async fn get_role_policy(
        &self,
        role: &str,
        policy: &str,
    ) -> Result<Option<String>, AwsQueryError> {
        match self.query.call(&get_role_policy_params(role, policy)).await {
            Ok(root) => Ok(Some(decode_policy(
                &root.string_at(&["GetRolePolicyResult", "PolicyDocument"]),
            ))),
            Err(e) if e.is_code("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        json: &str,
    ) -> Result<(), AwsQueryError> {
        self.query
            .call(&put_role_policy_params(role, policy, json))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::xml;

    #[test]
    fn bodies_are_botocores() {
        assert_eq!(
            get_role_params("vmimport").encode(),
            "Action=GetRole&Version=2010-05-08&RoleName=vmimport"
        );
        assert_eq!(
            get_role_policy_params("vmimport", "vmimport").encode(),
            "Action=GetRolePolicy&Version=2010-05-08&RoleName=vmimport&PolicyName=vmimport"
        );
        let doc = r#"{"Version":"2012-10-17"}"#;
        assert_eq!(
            put_role_policy_params("vmimport", "vmimport", doc).encode(),
            "Action=PutRolePolicy&Version=2010-05-08&RoleName=vmimport&PolicyName=vmimport&PolicyDocument=%7B%22Version%22%3A%222012-10-17%22%7D"
        );
        let p = create_role_params("vmimport", doc, "");
        assert_eq!(p.get("AssumeRolePolicyDocument"), Some(doc));
        assert_eq!(
            p.get("Description"),
            None,
            "an empty description is not sent"
        );
    }

    #[test]
    fn parses_role_and_decodes_documents() {
        let body = r#"<GetRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetRoleResult><Role>
    <Path>/</Path><RoleName>vmimport</RoleName><RoleId>AROA1</RoleId>
    <Arn>arn:aws:iam::123456789012:role/vmimport</Arn>
    <CreateDate>2026-01-01T00:00:00Z</CreateDate>
    <AssumeRolePolicyDocument>%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D</AssumeRolePolicyDocument>
  </Role></GetRoleResult>
  <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
</GetRoleResponse>"#;
        let root = xml::parse(body.as_bytes()).unwrap();
        let r = parse_role(root.at(&["GetRoleResult", "Role"]).unwrap());
        assert_eq!(r.arn, "arn:aws:iam::123456789012:role/vmimport");
        assert_eq!(
            r.assume_role_policy_document,
            r#"{"Version":"2012-10-17","Statement":[]}"#
        );
        assert_eq!(decode_policy(r#" {"a":"b"} "#), r#"{"a":"b"}"#);
    }
}
