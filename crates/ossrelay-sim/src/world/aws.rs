//! The AWS side of the world (S3 dialect): IAM roles STS may hand out, the web-identity tokens
//! it accepts, the regions of buckets, and the IMDSv2 session tokens and instance-role
//! credentials of the simulated EC2 instance.
//!
//! State only. Temporary credentials themselves are registered with the OSS-side key table
//! ([`super::oss::Oss::add_temporary_credentials`]) so one lookup serves every verifier.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::config::{SimAwsRole, SimConfig, SimOidcProvider};

/// A set of temporary credentials.
#[derive(Clone)]
pub(crate) struct AwsCreds {
    pub(crate) access_key_id: String,
    pub(crate) secret: String,
    pub(crate) token: String,
    pub(crate) issued: SystemTime,
    pub(crate) expires: SystemTime,
}

/// Who an issued temporary key acts as (GetCallerIdentity).
#[derive(Clone)]
pub(crate) struct AwsSession {
    pub(crate) account: String,
    pub(crate) role: String,
    pub(crate) session_name: String,
}

#[derive(Default)]
pub(crate) struct AwsState {
    /// IMDSv2 session token → expiry.
    pub(crate) imds_tokens: HashMap<String, SystemTime>,
    /// Current instance-role credentials.
    pub(crate) imds_creds: Option<AwsCreds>,
    /// Temporary AccessKey ID → session.
    pub(crate) sessions: HashMap<String, AwsSession>,
}

pub(crate) struct Aws {
    pub(crate) roles: Vec<SimAwsRole>,
    pub(crate) web_identity_tokens: Vec<String>,
    pub(crate) oidc_providers: Vec<SimOidcProvider>,
    /// Bucket → region, for buckets outside the default region.
    pub(crate) bucket_regions: HashMap<String, String>,
    pub(crate) imds_role: Option<(String, String)>,
    pub(crate) imds_rotation: Duration,
    pub(crate) sts_ttl: Option<Duration>,
    state: Mutex<AwsState>,
}

/// `n` random characters of `[A-Z0-9]`.
pub(crate) fn random_upper(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .map(|c| (c as char).to_ascii_uppercase())
        .take(n)
        .collect()
}

/// New temporary credentials (`ASIA…` key ID, as AWS STS issues) valid `ttl` from `now`.
pub(crate) fn new_creds(now: SystemTime, ttl: Duration) -> AwsCreds {
    let secret: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let token: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(180)
        .map(char::from)
        .collect();
    AwsCreds {
        access_key_id: format!("ASIA{}", random_upper(16)),
        secret,
        token: format!("IQoJb3JpZ2luX2VjE{token}"),
        issued: now,
        expires: now + ttl,
    }
}

impl Aws {
    pub(crate) fn new(cfg: &SimConfig) -> Self {
        Self {
            roles: cfg.aws_roles.clone(),
            web_identity_tokens: cfg.web_identity_tokens.clone(),
            oidc_providers: cfg.oidc_providers.clone(),
            bucket_regions: cfg.remote_buckets.iter().cloned().collect(),
            imds_role: cfg.imds_role.clone(),
            imds_rotation: cfg.imds_rotation,
            sts_ttl: cfg.sts_ttl,
            state: Mutex::new(AwsState::default()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, AwsState> {
        self.state.lock().expect("aws state lock")
    }

    pub(crate) fn role(&self, account: &str, name: &str) -> Option<&SimAwsRole> {
        self.roles
            .iter()
            .find(|r| r.account == account && r.name == name)
    }
}
