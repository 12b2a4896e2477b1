//! What the simulator can be told: accounts, buckets, objects, images, roles, faults, link
//! model. Plain data (leaf module); [`crate::start`] validates it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// An account with a long-term AccessKey pair.
#[derive(Clone)]
pub struct SimAccount {
    pub name: String,
    pub access_key_id: String,
    pub access_key_secret: String,
}

impl std::fmt::Debug for SimAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAccount")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .finish()
    }
}

/// A bucket in this region owned by `account`.
#[derive(Clone, Debug)]
pub struct SimBucket {
    pub name: String,
    pub account: String,
}

/// A read-only generated object (see [`synthetic`]).
#[derive(Clone, Debug)]
pub struct SyntheticObject {
    pub bucket: String,
    pub key: String,
    pub size: u64,
}

/// Where real objects live.
#[derive(Clone, Debug, Default)]
pub enum StoreKind {
    #[default]
    Memory,
    /// Files under this directory (created if missing).
    Dir(PathBuf),
}

/// An injectable fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// 500 InternalError.
    Error500,
    /// 503 SlowDown.
    Slowdown,
    /// Connection dropped (RST) mid-body (request body for uploads, response body for GET).
    Reset,
    /// GET body shorter than its Content-Length; on an upload (see below), bytes lost on the
    /// way, answered with `400 RequestTimeout`.
    Truncate,
    /// One bit flipped in a GET body, or (see below) in what an upload stores.
    Corrupt,
    /// GET body pauses for 30 s; (see below) the server stops reading an upload for 30 s.
    Stall,
    /// S3 CompleteMultipartUpload answers 200 whose body is an `<Error>` (InternalError),
    /// without completing, as S3 documents it may (other operations and OSS: no effect).
    CompleteError,
    /// S3 CompleteMultipartUpload sends 200 at once and whitespace keep-alives for a while
    /// before the result document, as S3 does for long completions (OSS: no effect).
    KeepAlive,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Error500 => "error500",
            FaultKind::Slowdown => "slowdown",
            FaultKind::Reset => "reset",
            FaultKind::Truncate => "truncate",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Stall => "stall",
            FaultKind::CompleteError => "complete-error",
            FaultKind::KeepAlive => "keepalive",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "error500" => FaultKind::Error500,
            "slowdown" => FaultKind::Slowdown,
            "reset" => FaultKind::Reset,
            "truncate" => FaultKind::Truncate,
            "corrupt" => FaultKind::Corrupt,
            "stall" => FaultKind::Stall,
            "complete-error" => FaultKind::CompleteError,
            "keepalive" => FaultKind::KeepAlive,
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}; expected error500, slowdown, reset, truncate, corrupt, stall, complete-error or keepalive"
                ))
            }
        })
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A preloaded custom image whose system disk is synthetic (mostly zeros, scattered data).
#[derive(Clone, Debug)]
pub struct SimImage {
    /// Image ID, e.g. `m-src0001`.
    pub id: String,
    /// Disk size in bytes (a multiple of 512).
    pub size: u64,
    /// Owner account name.
    pub account: String,
    /// Image name (empty: `img-<id>`).
    pub name: String,
    pub os_type: String,
    pub architecture: String,
    pub platform: String,
    pub boot_mode: String,
    /// `Features.NvmeSupport`: `supported` / `unsupported`.
    pub nvme: String,
}

impl SimImage {
    /// A Linux x86_64 BIOS image of `size` bytes owned by `account`.
    pub fn new(id: &str, size: u64, account: &str) -> Self {
        Self {
            id: id.into(),
            size,
            account: account.into(),
            name: String::new(),
            os_type: "linux".into(),
            architecture: "x86_64".into(),
            platform: "Others Linux".into(),
            boot_mode: "BIOS".into(),
            nvme: "unsupported".into(),
        }
    }
}

/// A preloaded RAM role `acs:ram::<account>:role/<name>`.
#[derive(Clone, Debug)]
pub struct SimRole {
    pub account: String,
    pub name: String,
    /// Comma-separated accounts that may assume it; empty or `ecs` = the ECS service (the
    /// default export / import service roles then get their system policy attached).
    pub trusted: String,
}

/// A RAM OIDC identity provider `acs:ram::<account>:oidc-provider/<name>` (what ACK's RRSA
/// registers per cluster), for AssumeRoleWithOIDC.
#[derive(Clone, Debug)]
pub struct SimOidcProvider {
    pub account: String,
    pub name: String,
    /// The `iss` its tokens must carry.
    pub issuer_url: String,
    /// Accepted `aud` values (RRSA uses `sts.aliyuncs.com`).
    pub client_ids: Vec<String>,
}

impl SimOidcProvider {
    /// `acs:ram::<account>:oidc-provider/<name>`.
    pub fn arn(&self) -> String {
        format!("acs:ram::{}:oidc-provider/{}", self.account, self.name)
    }
}

/// How the metadata service treats IMDSv2 tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImdsTokens {
    /// Tokens are issued; requests without one (v1) are served too.
    #[default]
    Optional,
    /// Requests without a token get `401` (hardened mode).
    Required,
    /// No v2: `PUT /latest/api/token` answers `404` and token headers are ignored.
    Unsupported,
}

impl FromStr for ImdsTokens {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            "unsupported" => Ok(Self::Unsupported),
            other => Err(format!(
                "unknown token mode {other:?}; expected optional, required or unsupported"
            )),
        }
    }
}

/// A scripted RPC error: the next `count` calls of `action` (`*` = any) are answered with
/// `code` and HTTP `status` (200 reproduces gateways that send an error `Code` with 200).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcFault {
    pub action: String,
    pub code: String,
    pub status: u16,
    pub count: u32,
}

/// Which object-storage API the main listener speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// Alibaba Cloud OSS (+ ECS / RAM / STS RPC and ECS metadata on the same listener).
    #[default]
    Oss,
    /// Amazon S3 REST (+ IMDSv2 on the same listener, AWS Query API STS on a control listener).
    S3,
}

impl FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "oss" => Ok(Self::Oss),
            "s3" => Ok(Self::S3),
            other => Err(format!("unknown dialect {other:?}; expected oss or s3")),
        }
    }
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Oss => "oss",
            Dialect::S3 => "s3",
        }
    }
}

/// An IAM role `arn:aws:iam::<account>:role/<name>` that any simulated account may assume
/// through AWS STS (with `external_id` when set), and web identities too.
#[derive(Clone, Debug)]
pub struct SimAwsRole {
    pub account: String,
    pub name: String,
    pub external_id: Option<String>,
}

/// Everything the simulator can be told at start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// Region ID (V4 scope), e.g. `cn-hangzhou`.
    pub region: String,
    pub accounts: Vec<SimAccount>,
    pub buckets: Vec<SimBucket>,
    /// Buckets that exist in another region: requests get the wrong-endpoint 403.
    pub remote_buckets: Vec<(String, String)>,
    pub synthetic: Vec<SyntheticObject>,
    /// Buckets whose uploads are verified and counted, bytes dropped.
    pub discard: Vec<String>,
    pub store: StoreKind,
    /// Fault kinds with their per-request probability.
    pub faults: Vec<(FaultKind, f64)>,
    pub fault_seed: u64,
    /// Restrict faults to these operation names (e.g. `GetObject`). Naming `UploadPart` or
    /// `PutObject` here also lets truncate, corrupt and stall strike upload bodies.
    pub fault_ops: Option<Vec<String>>,
    /// Bytes/s per connection and direction.
    pub conn_rate: Option<u64>,
    /// Real links differ: each connection's cap is drawn uniformly from
    /// `[conn_rate × (1 − spread), conn_rate × (1 + spread)]` (0 = every connection alike;
    /// must lie in `0..1`). Draws are seeded by `wan_seed`, in accept order.
    pub conn_rate_spread: f64,
    /// Seed of the per-connection rate draws (same seed, same accept order → same caps).
    pub wan_seed: u64,
    /// Delay before the first byte of every response.
    pub latency: Duration,
    /// Answer path-style requests with 403 SecondLevelDomainForbidden.
    pub reject_path_style: bool,
    /// Seconds added to the server clock (tests of skew handling).
    pub clock_skew: i64,
    /// Custom images served by the ECS API.
    pub images: Vec<SimImage>,
    /// RAM roles present at start.
    pub roles: Vec<SimRole>,
    /// RAM OIDC identity providers present at start (a role trusts one with the `TRUSTED`
    /// entry `oidc:<provider name>`).
    pub oidc_providers: Vec<SimOidcProvider>,
    /// How long an ExportImage / ImportImage task takes (at least).
    pub task_duration: Duration,
    /// Lifetime of AssumeRole credentials, replacing the requested DurationSeconds.
    pub sts_ttl: Option<Duration>,
    /// `(account, role name)` whose credentials the metadata service hands out.
    pub imds_role: Option<(String, String)>,
    /// How often the metadata service issues new credentials (each set lives two periods).
    pub imds_rotation: Duration,
    /// Delay before a policy attached through RAM lets ExportImage / ImportImage use the role.
    pub role_propagation: Duration,
    /// Scripted ECS / RAM / STS errors (after signature verification).
    pub rpc_faults: Vec<RpcFault>,
    /// IMDSv2 token handling of the metadata service.
    pub imds_tokens: ImdsTokens,
    /// OSS or S3 on the main listener.
    pub dialect: Dialect,
    /// S3 dialect: ignore every `x-amz-checksum-*` header (no verification, none returned, no
    /// FULL_OBJECT CRC), as S3-compatible stores such as OSS's S3 mode, COS and OBS do.
    pub quirks: bool,
    /// S3 dialect: IAM roles AWS STS can hand out.
    pub aws_roles: Vec<SimAwsRole>,
    /// S3 dialect: opaque tokens AssumeRoleWithWebIdentity accepts besides provider JWTs.
    pub web_identity_tokens: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "cn-hangzhou".into(),
            accounts: vec![SimAccount {
                name: "sim".into(),
                access_key_id: "simak".into(),
                access_key_secret: "simsecret".into(),
            }],
            buckets: Vec::new(),
            remote_buckets: Vec::new(),
            synthetic: Vec::new(),
            discard: Vec::new(),
            store: StoreKind::Memory,
            faults: Vec::new(),
            fault_seed: 0,
            fault_ops: None,
            conn_rate: None,
            conn_rate_spread: 0.0,
            wan_seed: 0,
            latency: Duration::ZERO,
            reject_path_style: false,
            clock_skew: 0,
            images: Vec::new(),
            roles: Vec::new(),
            oidc_providers: Vec::new(),
            task_duration: Duration::from_secs(5),
            sts_ttl: None,
            imds_role: None,
            imds_rotation: Duration::from_secs(3600),
            role_propagation: Duration::ZERO,
            rpc_faults: Vec::new(),
            imds_tokens: ImdsTokens::Optional,
            dialect: Dialect::Oss,
            quirks: false,
            aws_roles: Vec::new(),
            web_identity_tokens: Vec::new(),
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}; pick another --listen address or port 0")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    #[error("cannot use store directory {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
}
