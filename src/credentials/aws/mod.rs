//! AWS credentials, found the way the AWS CLI and SDKs find them, for the `s3://` sides.
//!
//! Guarantees callers can rely on:
//! * [`resolve`] gives one side's provider: an explicit profile, else the chain env keys → web
//!   identity → `AWS_PROFILE`/`default` profile → EC2 instance role (see [`chain`]). Everything
//!   but the instance role is decided from variables and files, so configuration errors surface
//!   before any transfer starts; [`region`] gives the side's region by the same conventions.
//! * Temporary credentials (AssumeRole, web identity, instance role) are cached in
//!   [`RefreshingProvider`](crate::credentials::cache::RefreshingProvider) and refreshed with
//!   less than 15 minutes left; signers ask the provider before every attempt.
//! * Secrets, session tokens and web identity tokens never appear in `Debug`, logs or errors.
//! * Unsupported AWS features (`mfa_serial`, `credential_process`, `sso_*`, the ECS container
//!   endpoint) are reported with what to use instead, never silently ignored.
//!
//! Sources: [`env`](mod@env) (variables), [`files`] (`~/.aws/config` and `~/.aws/credentials`),
//! [`sts`] (AssumeRole, STS client), [`web_identity`] (AssumeRoleWithWebIdentity), [`imds`]
//! (IMDSv2). Designs learned from botocore and aws-config (reference `s3-protocol.md` §9).

pub mod chain;
pub mod env;
pub mod files;
pub mod imds;
pub mod sts;
pub mod web_identity;

pub use chain::{region, resolve, AwsCredentialOptions, ENV_DEFAULT_REGION, ENV_REGION};
