//! A minimal STS client: AssumeRole, AssumeRoleWithOIDC and GetCallerIdentity.

use std::fmt;

use serde::Deserialize;

use super::rpc::{RpcClient, RpcError, RpcRequest, STS_VERSION};
use crate::credentials::CredentialsProvider;

/// Parameters of one AssumeRole call (already validated by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleInput {
    pub role_arn: String,
    pub role_session_name: String,
    pub duration_seconds: u64,
    pub policy: Option<String>,
    pub external_id: Option<String>,
}

/// Parameters of one AssumeRoleWithOIDC call. `Debug` never prints the OIDC token.
#[derive(Clone, PartialEq, Eq)]
pub struct AssumeRoleWithOidcInput {
    pub role_arn: String,
    /// `acs:ram::<account-id>:oidc-provider/<name>`.
    pub oidc_provider_arn: String,
    /// The JWT read from the token file (a bearer credential: never logged).
    pub oidc_token: String,
    pub role_session_name: String,
    pub duration_seconds: u64,
    pub policy: Option<String>,
}

impl fmt::Debug for AssumeRoleWithOidcInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleWithOidcInput")
            .field("role_arn", &self.role_arn)
            .field("oidc_provider_arn", &self.oidc_provider_arn)
            .field("oidc_token", &"<redacted>")
            .field("role_session_name", &self.role_session_name)
            .field("duration_seconds", &self.duration_seconds)
            .finish_non_exhaustive()
    }
}

/// The temporary credentials in an AssumeRole answer. `Debug` redacts the secret and token.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StsCredentials {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub security_token: String,
    /// UTC, `yyyy-MM-ddTHH:mm:ssZ`.
    pub expiration: String,
}

impl fmt::Debug for StsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field("security_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Who the assumed session is (opaque strings).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AssumedRoleUser {
    pub arn: String,
    pub assumed_role_id: String,
}

/// An AssumeRole answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleOutput {
    #[serde(default)]
    pub request_id: String,
    pub credentials: StsCredentials,
    #[serde(default)]
    pub assumed_role_user: AssumedRoleUser,
}

/// A GetCallerIdentity answer: handy to learn both sides' account IDs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CallerIdentity {
    pub account_id: String,
    pub arn: String,
    pub identity_type: String,
    pub principal_id: String,
    pub user_id: String,
    pub role_id: String,
    pub request_id: String,
}

/// STS at one endpoint.
#[derive(Debug, Clone)]
pub struct StsClient {
    rpc: RpcClient,
    endpoint: String,
}

impl StsClient {
    /// A client for `endpoint` (URL or bare host; HTTPS assumed) with a default [`RpcClient`].
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            rpc: RpcClient::new(),
            endpoint: endpoint.into(),
        }
    }

    /// Uses `rpc` (retry policy, timeouts).
    pub fn with_rpc(mut self, rpc: RpcClient) -> Self {
        self.rpc = rpc;
        self
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The AssumeRole request: common parameters in the query, the role parameters in a form
    /// body (as credentials-go sends them).
    pub fn assume_role_request(&self, input: &AssumeRoleInput) -> RpcRequest {
        let mut req = RpcRequest::new(&self.endpoint, STS_VERSION, "AssumeRole")
            .form_param("RoleArn", &input.role_arn)
            .form_param("RoleSessionName", &input.role_session_name)
            .form_param("DurationSeconds", input.duration_seconds.to_string());
        if let Some(p) = &input.policy {
            req = req.form_param("Policy", p);
        }
        if let Some(e) = &input.external_id {
            req = req.form_param("ExternalId", e);
        }
        req
    }

    /// Calls AssumeRole signed with `creds`.
    pub async fn assume_role(
        &self,
        creds: &dyn CredentialsProvider,
        input: &AssumeRoleInput,
    ) -> Result<AssumeRoleOutput, RpcError> {
        self.rpc
            .call_json(creds, &self.assume_role_request(input))
            .await
    }

    /// The AssumeRoleWithOIDC request: every role parameter, the token included, in the form
    /// body, so the token never appears in a URL (URLs end up in logs and proxies).
    pub fn assume_role_with_oidc_request(&self, input: &AssumeRoleWithOidcInput) -> RpcRequest {
        let mut req = RpcRequest::new(&self.endpoint, STS_VERSION, "AssumeRoleWithOIDC")
            .form_param("RoleArn", &input.role_arn)
            .form_param("OIDCProviderArn", &input.oidc_provider_arn)
            .form_param("OIDCToken", &input.oidc_token)
            .form_param("RoleSessionName", &input.role_session_name)
            .form_param("DurationSeconds", input.duration_seconds.to_string());
        if let Some(p) = &input.policy {
            req = req.form_param("Policy", p);
        }
        req
    }

    /// Calls AssumeRoleWithOIDC. The call is not signed: the OIDC token is the credential.
    pub async fn assume_role_with_oidc(
        &self,
        input: &AssumeRoleWithOidcInput,
    ) -> Result<AssumeRoleOutput, RpcError> {
        self.rpc
            .call_unsigned_json(
                &self.assume_role_with_oidc_request(input),
                &input.oidc_token,
            )
            .await
    }

    /// Calls GetCallerIdentity signed with `creds`.
    pub async fn get_caller_identity(
        &self,
        creds: &dyn CredentialsProvider,
    ) -> Result<CallerIdentity, RpcError> {
        let req = RpcRequest::new(&self.endpoint, STS_VERSION, "GetCallerIdentity");
        self.rpc.call_json(creds, &req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reference_answer_and_redacts() {
        let body = r#"{
          "RequestId": "R1",
          "AssumedRoleUser": {"Arn": "acs:ram::1234567890123456:role/image-migrator/ecs-image-migrate", "AssumedRoleId": "34458433936495****:ecs-image-migrate"},
          "Credentials": {"AccessKeyId": "STS.abc", "AccessKeySecret": "sec-xyz", "SecurityToken": "tok-xyz", "Expiration": "2024-05-01T09:40:00Z"},
          "SourceIdentity": ""
        }"#;
        let out: AssumeRoleOutput = serde_json::from_str(body).unwrap();
        assert_eq!(out.request_id, "R1");
        assert_eq!(out.credentials.access_key_id, "STS.abc");
        assert_eq!(out.credentials.expiration, "2024-05-01T09:40:00Z");
        assert_eq!(
            out.assumed_role_user.assumed_role_id,
            "34458433936495****:ecs-image-migrate"
        );
        let dbg = format!("{out:?}");
        assert!(
            !dbg.contains("sec-xyz") && !dbg.contains("tok-xyz"),
            "{dbg}"
        );

        let id: CallerIdentity = serde_json::from_str(
            r#"{"AccountId":"123","Arn":"acs:ram::123:user/x","IdentityType":"RAMUser","PrincipalId":"p","UserId":"u","RequestId":"R"}"#,
        )
        .unwrap();
        assert_eq!(id.account_id, "123");
        assert_eq!(id.identity_type, "RAMUser");
        assert_eq!(id.role_id, "");
    }

    #[test]
    fn request_layout() {
        let c = StsClient::new("sts.aliyuncs.com");
        let req = c.assume_role_request(&AssumeRoleInput {
            role_arn: "acs:ram::1:role/r".into(),
            role_session_name: "s1".into(),
            duration_seconds: 900,
            policy: Some("{}".into()),
            external_id: Some("e".into()),
        });
        assert_eq!(req.action, "AssumeRole");
        assert!(req.query.is_empty());
        let names: Vec<&str> = req.form.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "RoleArn",
                "RoleSessionName",
                "DurationSeconds",
                "Policy",
                "ExternalId"
            ]
        );
    }
}
