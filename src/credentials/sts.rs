//! STS AssumeRole: temporary credentials for a RAM role, e.g. in another account.

/// What to assume and how, as written in a profile, INI section or on the command line.
///
/// Fields left `None` take the SDK defaults (session name from `ALIBABA_CLOUD_ROLE_SESSION_NAME`
/// or `ossrelay-<ms>`, 3600 s, the global STS endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumeRoleSpec {
    /// `acs:ram::<account-id>:role/<role-name>`.
    pub role_arn: String,
    pub session_name: Option<String>,
    pub duration_seconds: Option<u64>,
    pub external_id: Option<String>,
    pub policy: Option<String>,
    /// Region of a regional STS endpoint (`sts.<region>.aliyuncs.com`).
    pub sts_region: Option<String>,
    /// Explicit endpoint (host or URL); wins over the region.
    pub sts_endpoint: Option<String>,
    /// Use `sts-vpc.<region>.aliyuncs.com`.
    pub enable_vpc: bool,
}
