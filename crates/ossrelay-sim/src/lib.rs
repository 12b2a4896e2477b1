//! The simulated cloud: an OSS server faithful enough that a client bug real OSS would reject
//! fails here too.
//!
//! This crate is the other side of the wire from `ossrelay`: it does not depend on the client
//! crate and shares no code with it. Signatures, CRC-64 ([`crc64`]: its own tables and combine),
//! MD5 ETags and XML are computed and verified here with the simulator's own code, written from
//! the protocol text, so a client bug cannot agree with itself.
//!
//! It verifies V1 and V4 signatures with its own verifier ([`auth`]), keeps multipart state per
//! upload ID, streams bodies in and out (memory or directory store), serves huge deterministic
//! *synthetic* objects without storing them, can *discard* uploads of benchmark buckets after
//! checking their CRC-64, injects faults from a seeded RNG, and models a WAN link (per-connection
//! bandwidth cap and first-byte latency). `GET /-/stats` (no auth) reports counters as JSON.
//!
//! With [`Dialect::S3`] the listener speaks the S3 REST API instead (SigV4 header, presigned and
//! aws-chunked bodies verified by [`sigv4`] / [`chunked`]; FULL_OBJECT CRC-64/NVME per object,
//! folded from the parts with [`crc64::nvme::combine`]) plus IMDSv2 with AWS's shapes, and a
//! second (control) listener serves the AWS Query API (STS), whose temporary keys S3 accepts.
//!
//! The same listener also serves the ECS, RAM and STS RPC APIs (requests on `/` carrying
//! `Action` + `Version`; protocol in [`rpc`]) and an ECS instance metadata service (paths under
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
//!
//! # Layering
//!
//! State first, handlers on top of it, one router on top of those. A module imports only
//! modules of a lower layer (or, within layer 0, other leaves without a cycle); nothing imports
//! a module above it, and there is no import circle among the files:
//!
//! | layer | modules | role |
//! |---|---|---|
//! | 5 | `lib.rs` | public API: [`start`], [`SimServer`], [`failed_requests`]; re-exports `config` |
//! | 4 | `router` | accept loop, connections through the WAN model, per request: `/-/stats`, IMDS, RPC or OSS |
//! | 3 | `oss` (mod.rs); `acs` (mod.rs) → `acs::ecs` (mod.rs); `aws` (mod.rs) | per-API routers: context, auth, faults, dispatch by operation / action (RPC: by product, then ECS action; AWS Query: by action, per service's signing and error format) |
//! | 2 | `oss::{object, multipart, bucket}`, `acs::{ram, sts}`, `acs::ecs::{export, import}`, `aws::{sts, iam}`, `aws::ec2::{export, import}`, `imds` | handlers, one file per group of operations |
//! | 1½ | `oss::body` → `oss::common`; `acs::ecs::common`; `aws::ec2` (mod.rs) | what the handlers of one API share (errors, context, body intake and copy source, JSON / XML views, EC2 list and filter parsing) |
//! | 1 | `world` (mod.rs) → `world::{oss, cloud, aws, ec2}` → `world::{roles, iam}` | the world state: accounts, buckets, objects, uploads, images, AMIs, tasks, roles, sessions, IMDS credentials; clock, fault table, stats |
//! | 0 | `faults` → `config`; `wan`; `diskfmt` → `store` → `synthetic` → `crc64`; `rpc` → `auth`, `reply`, `xml`; `range` | faults and pacing (WAN model), blob store, disk formats, protocol verifiers, checksums, parsers (leaves) |
//!
//! When adding code: a `use crate::…` or `super::…` must name a module of a lower row (or, within
//! a row, one its arrow points to); state goes into `world`, never into a handler.

mod acs;
pub mod auth;
mod aws;
pub mod chunked;
mod config;
pub mod crc64;
mod diskfmt;
mod faults;
mod imds;
mod oss;
pub mod range;
mod reply;
mod router;
pub mod rpc;
mod s3;
pub mod sigv4;
mod store;
pub mod synthetic;
mod wan;
mod world;
pub mod xml;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use world::World;

pub use config::*;

/// A running simulator.
pub struct SimServer {
    world: Arc<World>,
    addr: SocketAddr,
    /// The S3 dialect's AWS Query API listener.
    control: Option<SocketAddr>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    accept: tokio::task::JoinHandle<()>,
}

/// Starts the simulator; it serves until [`SimServer::shutdown`].
pub async fn start(cfg: SimConfig) -> Result<SimServer, SimError> {
    let world = Arc::new(World::new(&cfg)?);
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
    let mut control = None;
    if cfg.dialect == Dialect::S3 {
        let at = SocketAddr::new(cfg.listen.ip(), 0);
        let l = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|source| SimError::Bind { addr: at, source })?;
        control = Some(
            l.local_addr()
                .map_err(|source| SimError::Bind { addr: at, source })?,
        );
        tracker.spawn(router::accept_loop(
            l,
            world.clone(),
            cancel.clone(),
            tracker.clone(),
            router::Role::Control,
        ));
    }
    let accept = tokio::spawn(router::accept_loop(
        listener,
        world.clone(),
        cancel.clone(),
        tracker.clone(),
        router::Role::Main,
    ));
    tracing::info!(%addr, region = %cfg.region, dialect = cfg.dialect.as_str(), "simulator listening");
    Ok(SimServer {
        world,
        addr,
        control,
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

    /// The S3 dialect's AWS Query API endpoint (EC2, IAM, STS), `None` for OSS.
    pub fn ec2_endpoint(&self) -> Option<String> {
        self.control.map(|a| format!("http://{a}"))
    }

    /// The dialect the main listener speaks.
    pub fn dialect(&self) -> Dialect {
        self.world.dialect
    }

    /// `(size, crc64nvme)` of an object, if it exists and has one (S3 dialect).
    pub fn object_crc64nvme(&self, bucket: &str, key: &str) -> Option<(u64, u64)> {
        let st = self.world.oss.lock();
        let o = st.buckets.get(bucket)?.objects.get(key)?;
        Some((o.size, o.nvme?))
    }

    /// `(size, crc64)` of an available image's system disk: an ECS image (`Available`) or an
    /// EC2 AMI (`ami-…`, `available`); the same answer as `GET /-/images/<ID>`.
    pub fn image_crc64(&self, image_id: &str) -> Option<(u64, u64)> {
        self.world.image_crc64(image_id)
    }

    /// An image as DescribeImages shows it (any status), plus `FailureCode` /
    /// `FailureMessage` when its import failed.
    pub fn image(&self, image_id: &str) -> Option<serde_json::Value> {
        acs::ecs::image_view(&self.world.cloud, image_id)
    }

    /// Scripts an RPC error for the next `count` calls of an action (see [`RpcFault`]).
    pub fn add_rpc_fault(&self, fault: RpcFault) {
        self.world.cloud.add_rpc_fault(fault);
    }

    /// The WAN model's per-connection caps drawn so far, in accept order (bytes/s); empty
    /// without a per-connection cap. A bench divides by what the connections could carry.
    pub fn connection_caps(&self) -> Vec<u64> {
        self.world
            .conn_rate
            .as_ref()
            .map_or_else(Vec::new, |d| d.drawn())
    }

    /// Open connections that moved body bytes within `within`: sampled, how many connections
    /// carry bytes at once, as the far side sees it (a client's kernel buffers included).
    pub fn moving_connections(&self, within: Duration) -> usize {
        self.world.link.activity.moving(within)
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn region(&self) -> &str {
        &self.world.region
    }

    /// The same JSON as `GET /-/stats`.
    pub fn stats(&self) -> serde_json::Value {
        self.world.stats_json()
    }

    /// Replaces the fault table at runtime (the RNG keeps its sequence).
    pub fn set_faults(&self, faults: Vec<(FaultKind, f64)>) {
        self.world.set_faults(faults);
    }

    /// Switches a full outage on or off: while on, every connection is reset (new ones at
    /// once, open ones at their next read or write), like a region whose front end is down.
    pub fn set_outage(&self, on: bool) {
        self.world.set_outage(on);
    }

    /// Makes every connection a slow loris (`Some(bytes per second)`, each direction) or
    /// restores normal speed (`None`): requests are accepted but neither fail nor finish.
    pub fn set_slow_loris(&self, rate: Option<u64>) {
        self.world.set_slow_loris(rate);
    }

    /// Restricts faults to the given operations (`None` = all).
    pub fn set_fault_ops(&self, ops: Option<Vec<String>>) {
        self.world.set_fault_ops(ops);
    }

    /// Changes the server clock's offset at runtime (seconds, like [`SimConfig::clock_skew`]).
    pub fn set_clock_skew(&self, secs: i64) {
        self.world.set_clock_skew(secs);
    }

    /// `(size, crc64)` of an object, if it exists.
    pub fn object_crc64(&self, bucket: &str, key: &str) -> Option<(u64, u64)> {
        self.world.oss.object_crc64(bucket, key)
    }

    /// The keys of `bucket`, sorted (test inspection: what a run left behind).
    pub fn list_keys(&self, bucket: &str) -> Vec<String> {
        self.world
            .oss
            .lock()
            .buckets
            .get(bucket)
            .map(|b| b.objects.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores an object directly (test seeding), as if by PutObject.
    pub fn put_object_bytes(&self, bucket: &str, key: &str, data: Bytes) {
        self.world
            .oss
            .put_object_bytes(bucket, key, data, self.world.now());
    }

    /// An object's bytes (memory store and synthetic objects; `None` otherwise or if missing).
    pub fn get_object_bytes(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.world.oss.get_object_bytes(bucket, key)
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
        self.world.oss.add_temporary_credentials(
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
