//! RAM: the ECS image export / import service roles (ecs-api.md §8).
//!
//! [`check_service_role`] looks a role up and, when asked to fix, creates it with the ECS trust
//! policy and attaches its system policy. [`retry_missing_role`] wraps ExportImage /
//! ImportImage so a freshly created role gets time to propagate (5 s × 12, as packer does).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::ecs::{EXPORT_ROLE, IMPORT_ROLE};
use super::rpc::{RpcClient, RpcError, RpcRequest, RAM_VERSION};
use crate::credentials::CredentialsProvider;

/// The global RAM endpoint.
pub const DEFAULT_RAM_ENDPOINT: &str = "https://ram.aliyuncs.com";

/// Trust policy letting ECS assume a service role.
pub const ECS_TRUST_POLICY: &str = r#"{"Statement":[{"Action":"sts:AssumeRole","Effect":"Allow","Principal":{"Service":["ecs.aliyuncs.com"]}}],"Version":"1"}"#;

/// Codes ECS returns when its service role is missing or not yet usable (both spellings).
pub const MISSING_ROLE_CODES: &[&str] = &[
    "NoSetRoletoECSServiceAcount",
    "NoSetRoletoECSServiceAccount",
    "InvalidOSS.NotAuthorized",
];

/// Whether an ECS error means "the service role is missing or not authorised".
pub fn is_missing_role(err: &RpcError) -> bool {
    err.code().is_some_and(|c| MISSING_ROLE_CODES.contains(&c))
}

/// One of the two service roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceRole {
    Export,
    Import,
}

impl ServiceRole {
    pub fn role_name(self) -> &'static str {
        match self {
            Self::Export => EXPORT_ROLE,
            Self::Import => IMPORT_ROLE,
        }
    }

    /// The system policy the role needs.
    pub fn policy_name(self) -> &'static str {
        match self {
            Self::Export => "AliyunECSImageExportRolePolicy",
            Self::Import => "AliyunECSImageImportRolePolicy",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Export => "ECS image export writes to OSS with this role (created by ossrelay)",
            Self::Import => "ECS image import reads from OSS with this role (created by ossrelay)",
        }
    }
}

/// A role as GetRole / CreateRole report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Role {
    pub role_id: String,
    pub role_name: String,
    pub arn: String,
    pub description: String,
    pub assume_role_policy_document: String,
    pub create_date: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RoleAnswer {
    role: Role,
}

/// A policy attached to a role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AttachedPolicy {
    pub policy_name: String,
    pub policy_type: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PolicyWrapper {
    policy: Vec<AttachedPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PoliciesAnswer {
    policies: PolicyWrapper,
}

/// The RAM operations the role check needs (a trait so the algorithm is testable).
#[async_trait]
pub trait RamApi: Send + Sync {
    /// `Ok(None)` when the role does not exist (`EntityNotExist.Role`).
    async fn get_role(&self, name: &str) -> Result<Option<Role>, RpcError>;
    async fn create_role(
        &self,
        name: &str,
        trust_policy: &str,
        description: &str,
    ) -> Result<Role, RpcError>;
    /// Attaching an already attached policy counts as success.
    async fn attach_system_policy(&self, role: &str, policy: &str) -> Result<(), RpcError>;
    async fn list_policies_for_role(&self, role: &str) -> Result<Vec<AttachedPolicy>, RpcError>;
}

/// RAM with one set of credentials.
#[derive(Clone)]
pub struct RamClient {
    rpc: RpcClient,
    endpoint: String,
    creds: Arc<dyn CredentialsProvider>,
}

impl std::fmt::Debug for RamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamClient")
            .field("endpoint", &self.endpoint)
            .field("creds", &self.creds.name())
            .finish()
    }
}

impl RamClient {
    /// `endpoint` `None` means [`DEFAULT_RAM_ENDPOINT`].
    pub fn new(endpoint: Option<String>, creds: Arc<dyn CredentialsProvider>) -> Self {
        Self {
            rpc: RpcClient::new(),
            endpoint: endpoint.unwrap_or_else(|| DEFAULT_RAM_ENDPOINT.to_string()),
            creds,
        }
    }

    pub fn with_rpc(mut self, rpc: RpcClient) -> Self {
        self.rpc = rpc;
        self
    }

    fn req(&self, action: &str) -> RpcRequest {
        RpcRequest::new(&self.endpoint, RAM_VERSION, action)
    }

    async fn call<T: DeserializeOwned>(&self, req: &RpcRequest) -> Result<T, RpcError> {
        self.rpc.call_json(self.creds.as_ref(), req).await
    }
}

#[async_trait]
impl RamApi for RamClient {
    async fn get_role(&self, name: &str) -> Result<Option<Role>, RpcError> {
        match self
            .call::<RoleAnswer>(&self.req("GetRole").param("RoleName", name))
            .await
        {
            Ok(a) => Ok(Some(a.role)),
            Err(e) if e.code() == Some("EntityNotExist.Role") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_role(
        &self,
        name: &str,
        trust_policy: &str,
        description: &str,
    ) -> Result<Role, RpcError> {
        let req = self
            .req("CreateRole")
            .param("RoleName", name)
            .param("AssumeRolePolicyDocument", trust_policy)
            .param("Description", description);
        Ok(self.call::<RoleAnswer>(&req).await?.role)
    }

    async fn attach_system_policy(&self, role: &str, policy: &str) -> Result<(), RpcError> {
        let req = self
            .req("AttachPolicyToRole")
            .param("PolicyType", "System")
            .param("PolicyName", policy)
            .param("RoleName", role);
        match self.call::<serde_json::Value>(&req).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("EntityAlreadyExists.Role.Policy") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list_policies_for_role(&self, role: &str) -> Result<Vec<AttachedPolicy>, RpcError> {
        let req = self.req("ListPoliciesForRole").param("RoleName", role);
        Ok(self.call::<PoliciesAnswer>(&req).await?.policies.policy)
    }
}

/// What [`check_service_role`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCheck {
    pub role: ServiceRole,
    /// The role exists now.
    pub exists: bool,
    /// Its system policy is attached now.
    pub policy_attached: bool,
    /// The role was created in this call.
    pub created: bool,
    /// The policy was attached in this call.
    pub attached: bool,
}

impl RoleCheck {
    pub fn ok(&self) -> bool {
        self.exists && self.policy_attached
    }

    /// Whether this call changed anything (so propagation must be awaited).
    pub fn changed(&self) -> bool {
        self.created || self.attached
    }
}

/// Checks the service role; with `fix`, creates it and/or attaches its system policy
/// (packer's `prepareImportRole`, generalised to both roles).
pub async fn check_service_role(
    ram: &dyn RamApi,
    role: ServiceRole,
    fix: bool,
) -> Result<RoleCheck, RpcError> {
    let name = role.role_name();
    let policy = role.policy_name();
    let mut check = RoleCheck {
        role,
        exists: false,
        policy_attached: false,
        created: false,
        attached: false,
    };
    match ram.get_role(name).await? {
        Some(_) => {
            check.exists = true;
            let policies = ram.list_policies_for_role(name).await?;
            check.policy_attached = policies.iter().any(|p| p.policy_name == policy);
        }
        None if fix => {
            match ram
                .create_role(name, ECS_TRUST_POLICY, role.description())
                .await
            {
                Ok(_) => check.created = true,
                // Someone else created it between our GetRole and CreateRole.
                Err(e) if e.code() == Some("EntityAlreadyExists.Role") => {}
                Err(e) => return Err(e),
            }
            check.exists = true;
        }
        None => return Ok(check),
    }
    if !check.policy_attached && fix {
        ram.attach_system_policy(name, policy).await?;
        check.policy_attached = true;
        check.attached = true;
    }
    Ok(check)
}

/// How often to retry an ECS call that fails because its service role is not usable yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRetry {
    pub interval: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
}

impl Default for RoleRetry {
    /// packer's `WaitForExpected` defaults: every 5 s, 12 times.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            retries: 12,
        }
    }
}

/// Runs `call`, retrying on the missing-role codes per `schedule`. The last error is returned
/// when the role never becomes usable.
pub async fn retry_missing_role<T, F, Fut>(schedule: RoleRetry, mut call: F) -> Result<T, RpcError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RpcError>>,
{
    let mut tries = 0;
    loop {
        match call().await {
            Err(e) if is_missing_role(&e) && tries < schedule.retries => {
                tries += 1;
                tracing::info!(error = %e, tries, "service role not usable yet; retrying");
                tokio::time::sleep(schedule.interval).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::rpc::ApiError;
    use std::sync::Mutex;

    fn api_err(code: &str, status: u16) -> RpcError {
        RpcError::Api(Box::new(ApiError {
            action: "X".into(),
            status,
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
            host_id: None,
            recommend: None,
            retry_after: None,
        }))
    }

    #[derive(Default)]
    struct FakeRam {
        roles: Mutex<Vec<String>>,
        attached: Mutex<Vec<(String, String)>>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl RamApi for FakeRam {
        async fn get_role(&self, name: &str) -> Result<Option<Role>, RpcError> {
            self.calls.lock().unwrap().push(format!("GetRole {name}"));
            Ok(self
                .roles
                .lock()
                .unwrap()
                .contains(&name.to_string())
                .then(|| Role {
                    role_name: name.into(),
                    ..Role::default()
                }))
        }
        async fn create_role(&self, name: &str, trust: &str, _: &str) -> Result<Role, RpcError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("CreateRole {name}"));
            assert!(trust.contains("ecs.aliyuncs.com"));
            self.roles.lock().unwrap().push(name.into());
            Ok(Role::default())
        }
        async fn attach_system_policy(&self, role: &str, policy: &str) -> Result<(), RpcError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("Attach {role} {policy}"));
            self.attached
                .lock()
                .unwrap()
                .push((role.into(), policy.into()));
            Ok(())
        }
        async fn list_policies_for_role(
            &self,
            role: &str,
        ) -> Result<Vec<AttachedPolicy>, RpcError> {
            self.calls.lock().unwrap().push(format!("List {role}"));
            Ok(self
                .attached
                .lock()
                .unwrap()
                .iter()
                .filter(|(r, _)| r == role)
                .map(|(_, p)| AttachedPolicy {
                    policy_name: p.clone(),
                    policy_type: "System".into(),
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn missing_role_reported_without_fix() {
        let ram = FakeRam::default();
        let c = check_service_role(&ram, ServiceRole::Export, false)
            .await
            .unwrap();
        assert!(!c.ok() && !c.exists && !c.changed());
        assert_eq!(
            *ram.calls.lock().unwrap(),
            ["GetRole AliyunECSImageExportDefaultRole"]
        );
    }

    #[tokio::test]
    async fn fix_creates_and_attaches_then_is_idempotent() {
        let ram = FakeRam::default();
        let c = check_service_role(&ram, ServiceRole::Import, true)
            .await
            .unwrap();
        assert!(c.ok() && c.created && c.attached);
        assert_eq!(
            *ram.attached.lock().unwrap(),
            [(
                "AliyunECSImageImportDefaultRole".to_string(),
                "AliyunECSImageImportRolePolicy".to_string()
            )]
        );
        let again = check_service_role(&ram, ServiceRole::Import, true)
            .await
            .unwrap();
        assert!(again.ok() && !again.changed());
    }

    #[tokio::test]
    async fn existing_role_without_policy_gets_it() {
        let ram = FakeRam::default();
        ram.roles.lock().unwrap().push(EXPORT_ROLE.into());
        let c = check_service_role(&ram, ServiceRole::Export, false)
            .await
            .unwrap();
        assert!(c.exists && !c.policy_attached);
        let c = check_service_role(&ram, ServiceRole::Export, true)
            .await
            .unwrap();
        assert!(c.ok() && !c.created && c.attached);
    }

    #[tokio::test]
    async fn retry_schedule_for_missing_role() {
        let schedule = RoleRetry {
            interval: Duration::from_millis(1),
            retries: 3,
        };
        let n = Mutex::new(0);
        let r: Result<u32, _> = retry_missing_role(schedule, || {
            let mut g = n.lock().unwrap();
            *g += 1;
            let v = *g;
            async move {
                if v < 3 {
                    Err(api_err("NoSetRoletoECSServiceAcount", 403))
                } else {
                    Ok(v)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);

        let n = Mutex::new(0);
        let r: Result<(), _> = retry_missing_role(schedule, || {
            *n.lock().unwrap() += 1;
            async { Err(api_err("NoSetRoletoECSServiceAccount", 403)) }
        })
        .await;
        assert!(is_missing_role(&r.unwrap_err()));
        assert_eq!(*n.lock().unwrap(), 4, "first attempt + 3 retries");

        // Other errors are not retried.
        let n = Mutex::new(0);
        let r: Result<(), _> = retry_missing_role(schedule, || {
            *n.lock().unwrap() += 1;
            async { Err(api_err("InvalidImageId.NotFound", 404)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(*n.lock().unwrap(), 1);
        assert_eq!(RoleRetry::default().retries, 12);
    }

    #[test]
    fn role_answers_parse() {
        let a: RoleAnswer = serde_json::from_str(r#"{"RequestId":"r","Role":{"RoleId":"1","RoleName":"AliyunECSImageExportDefaultRole","Arn":"acs:ram::123:role/aliyunecsimageexportdefaultrole","Description":"","AssumeRolePolicyDocument":"{}","CreateDate":"2024-05-01T08:30:00Z","MaxSessionDuration":3600}}"#).unwrap();
        assert_eq!(
            a.role.arn,
            "acs:ram::123:role/aliyunecsimageexportdefaultrole"
        );
        let p: PoliciesAnswer = serde_json::from_str(r#"{"RequestId":"r","Policies":{"Policy":[{"PolicyName":"AliyunECSImageExportRolePolicy","PolicyType":"System","Description":"","DefaultVersion":"v1","AttachDate":"x"}]}}"#).unwrap();
        assert_eq!(
            p.policies.policy[0].policy_name,
            "AliyunECSImageExportRolePolicy"
        );
    }
}
