//! The simulated cloud: an OSS server faithful enough that a client bug real OSS would reject
//! fails here too.
//!
//! It verifies V1 and V4 signatures with its own verifier ([`auth`]), keeps multipart state per
//! upload ID, streams bodies in and out (memory or directory store), serves huge deterministic
//! *synthetic* objects without storing them, can *discard* uploads of benchmark buckets after
//! checking their CRC-64, injects faults from a seeded RNG, and models a WAN link (per-connection
//! bandwidth cap and first-byte latency). `GET /-/stats` (no auth) reports counters as JSON.
//!
//! The same listener also serves the ECS, RAM and STS RPC APIs (requests on `/` carrying
//! `Action` + `Version`; see [`rpc`]) and an ECS instance metadata service (paths under
//! `/latest/`), so one URL is the endpoint of every simulated product: custom images with
//! synthetic disks, ExportImage / ImportImage tasks that progress over simulated time and
//! read / write the simulated OSS, RAM roles, AssumeRole across simulated accounts (an
//! account's name is its account ID), and rotating instance-role credentials.
//!
//! Choices where OSS is undocumented or the reference marks behaviour UNCONFIRMED:
//! * discard buckets: ETag = upper hex of `crc64 (16 hex) ‖ size (16 hex)` unless the client sent
//!   `Content-MD5` (then the real MD5 is computed and checked), because MD5 would cap the
//!   receive rate; GET answers `403 AccessDenied` "discard bucket: content not kept";
//! * multipart ETag = MD5 of the concatenated binary part ETags, `-N`;
//! * 206 responses carry the whole-object CRC-64; `bytes=-N` with N > size under
//!   `x-oss-range-behavior: standard` serves the whole object as 206;
//! * V4 format errors (bad Authorization elements, wrong scope region, missing
//!   `x-oss-content-sha256`) are `400 InvalidArgument` with the documented EC;
//! * temporary credentials: wrong/missing token → `403 InvalidSecurityToken`, expired →
//!   `403 SecurityTokenExpired`; long-term keys ignore a token;
//! * PutBucketLifecycle without `Content-MD5` → `400 MissingContentMd5`;
//! * copy conditionals (`x-oss-copy-source-if-*`) all fail with 412 (a copy cannot answer 304);
//!   CopyObject is limited to 5 GiB sources;
//! * a reset fault on CompleteMultipartUpload completes the upload, then drops the connection
//!   (the "lost Complete response" case); on other non-upload operations it drops the
//!   connection before answering. A dropped connection is counted in `/-/stats` under status
//!   `"reset"`, a client that went away under `"client_closed"`;
//! * an outage ([`SimServer::set_outage`]) resets connections rather than refusing them (the
//!   listener stays bound so the port cannot be taken); connections it reset (on accept or
//!   mid-request) are counted under `Connection` / `"outage"`.

pub mod auth;
mod ecs;
mod imds;
mod ram;
pub mod range;
pub mod rpc;
mod server;
mod store;
mod sts;
pub mod synthetic;
mod wan;
pub mod xml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}; expected error500, slowdown, reset, truncate, corrupt or stall"
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

/// A running simulator.
pub struct SimServer {
    shared: Arc<server::Shared>,
    addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
}

/// Starts the simulator; it serves until [`SimServer::shutdown`].
pub async fn start(cfg: SimConfig) -> Result<SimServer, SimError> {
    let shared = Arc::new(server::Shared::new(&cfg)?);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let accept = tokio::spawn(server::accept_loop(
        listener,
        shared.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    tracing::info!(%addr, region = %cfg.region, "OSS simulator listening");
    Ok(SimServer {
        shared,
        addr,
        cancel,
        tracker,
        accept,
    })
}

impl SimServer {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The ECS, RAM, STS and metadata endpoint: the same listener as OSS.
    pub fn ecs_endpoint(&self) -> String {
        self.endpoint()
    }

    /// `(size, crc64)` of an `Available` image's system disk.
    pub fn image_crc64(&self, image_id: &str) -> Option<(u64, u64)> {
        self.shared.cloud.image_crc64(image_id)
    }

    /// An image as DescribeImages shows it (any status), plus `FailureCode` /
    /// `FailureMessage` when its import failed.
    pub fn image(&self, image_id: &str) -> Option<serde_json::Value> {
        self.shared.cloud.image(image_id)
    }

    /// Scripts an RPC error for the next `count` calls of an action (see [`RpcFault`]).
    pub fn add_rpc_fault(&self, fault: RpcFault) {
        self.shared.cloud.add_rpc_fault(fault);
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn region(&self) -> &str {
        &self.shared.region
    }

    /// The same JSON as `GET /-/stats`.
    pub fn stats(&self) -> serde_json::Value {
        self.shared.stats_json()
    }

    /// Replaces the fault table at runtime (the RNG keeps its sequence).
    pub fn set_faults(&self, faults: Vec<(FaultKind, f64)>) {
        self.shared.set_faults(faults);
    }

    /// Switches a full outage on or off: while on, every connection is reset (new ones at
    /// once, open ones at their next read or write), like a region whose front end is down.
    pub fn set_outage(&self, on: bool) {
        self.shared.set_outage(on);
    }

    /// Makes every connection a slow loris (`Some(bytes per second)`, each direction) or
    /// restores normal speed (`None`): requests are accepted but neither fail nor finish.
    pub fn set_slow_loris(&self, rate: Option<u64>) {
        self.shared.set_slow_loris(rate);
    }

    /// Restricts faults to the given operations (`None` = all).
    pub fn set_fault_ops(&self, ops: Option<Vec<String>>) {
        self.shared.set_fault_ops(ops);
    }

    /// Changes the server clock's offset at runtime (seconds, like [`SimConfig::clock_skew`]).
    pub fn set_clock_skew(&self, secs: i64) {
        self.shared.set_clock_skew(secs);
    }

    /// `(size, crc64)` of an object, if it exists.
    pub fn object_crc64(&self, bucket: &str, key: &str) -> Option<(u64, u64)> {
        self.shared.object_crc64(bucket, key)
    }

    /// Stores an object directly (test seeding), as if by PutObject.
    pub fn put_object_bytes(&self, bucket: &str, key: &str, data: Bytes) {
        self.shared.put_object_bytes(bucket, key, data);
    }

    /// An object's bytes (memory store and synthetic objects; `None` otherwise or if missing).
    pub fn get_object_bytes(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.shared.get_object_bytes(bucket, key)
    }

    /// Registers temporary (STS) credentials acting for `account` until `expires_at`.
    pub fn add_temporary_credentials(
        &self,
        access_key_id: &str,
        access_key_secret: &str,
        security_token: &str,
        account: &str,
        expires_at: SystemTime,
    ) {
        self.shared.add_temporary_credentials(
            access_key_id,
            access_key_secret,
            security_token,
            account,
            expires_at,
        );
    }

    /// Stops accepting, lets in-flight requests finish (up to a few seconds), then returns.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = (&mut self.accept).await;
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

impl Drop for SimServer {
    /// A server dropped without [`SimServer::shutdown`] still stops listening and closes its
    /// connections (without waiting for them).
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Requests a simulator answered with other than success (failed, faulted or dropped), over
/// all operations of its `GET /-/stats` JSON: what a client had to retry.
pub fn failed_requests(stats: &serde_json::Value) -> u64 {
    stats["requests"]
        .as_object()
        .map(|ops| {
            ops.values()
                .filter_map(|m| m.as_object())
                .flat_map(|m| m.iter())
                .filter(|(status, _)| !status.starts_with('2'))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0)
}
