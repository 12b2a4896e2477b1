//! The world: everything the simulated clouds know, below every handler.
//!
//! [`World`] owns the OSS state ([`oss`]), the ECS / RAM / STS / metadata state ([`cloud`],
//! [`roles`]), and the runtime controls shared by all of them: the server clock (with its
//! configurable skew), the fault table, the WAN link switches (outage, slow loris) and the
//! request counters behind `GET /-/stats`. Handlers receive a `&World`; nothing here knows
//! about HTTP requests, XML or JSON answers.

pub(crate) mod aws;
pub(crate) mod cloud;
pub(crate) mod ec2;
pub(crate) mod iam;
pub(crate) mod oss;
pub(crate) mod roles;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::auth::KeyInfo;
use crate::config::{Dialect, FaultKind, SimBucket, SimConfig, SimError};
use crate::faults::{FaultPlan, Faults};
use crate::rpc::RpcError;
use crate::wan::Link;

/// Request counters (`GET /-/stats`).
#[derive(Default)]
pub(crate) struct Stats {
    requests: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: Arc<AtomicU64>,
}

impl Stats {
    /// Counts one answer of operation `op` with `status` (an HTTP status or `reset`, …).
    pub(crate) fn record(&self, op: &str, status: &str) {
        let mut m = self.requests.lock().expect("stats lock");
        *m.entry(op.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += 1;
    }
}

/// One simulator's world.
pub(crate) struct World {
    pub(crate) region: String,
    /// Accounts, buckets, objects, uploads.
    pub(crate) oss: oss::Oss,
    /// ECS / RAM / STS / IMDS state.
    pub(crate) cloud: cloud::Cloud,
    /// AWS roles, bucket regions, IMDSv2 state (S3 dialect).
    pub(crate) aws: aws::Aws,
    /// EC2 AMIs, VM Import/Export tasks, IAM roles (S3 dialect).
    pub(crate) ec2: ec2::Ec2,
    pub(crate) dialect: Dialect,
    /// S3 dialect: ignore `x-amz-checksum-*` and refuse aws-chunked, like S3-compatible stores.
    pub(crate) quirks: bool,
    /// S3 dialect: answer `x-cos-hash-crc64ecma` like Tencent COS.
    pub(crate) cos: bool,
    /// Bytes/s per connection and direction (WAN model), drawn per connection.
    pub(crate) conn_rate: Option<crate::wan::RateDraw>,
    /// Delay before the first byte of every OSS response (WAN model).
    pub(crate) latency: Duration,
    pub(crate) reject_path_style: bool,
    clock_skew: AtomicI64,
    /// Runtime outage and slow-loris switches shared with every connection.
    pub(crate) link: Arc<Link>,
    faults: Mutex<Faults>,
    pub(crate) stats: Stats,
}

impl World {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        // S3 has one global bucket namespace: a bucket "in another region" exists and is served
        // here, it only answers requests for the wrong region with redirects.
        let aws = aws::Aws::new(cfg);
        let mut s3_cfg;
        let cfg = if cfg.dialect == Dialect::S3 {
            s3_cfg = cfg.clone();
            let first = s3_cfg
                .accounts
                .first()
                .map(|a| a.name.clone())
                .unwrap_or_default();
            for (b, _) in std::mem::take(&mut s3_cfg.remote_buckets) {
                if !s3_cfg.buckets.iter().any(|x| x.name == b) {
                    s3_cfg.buckets.push(SimBucket {
                        name: b,
                        account: first.clone(),
                    });
                }
            }
            &s3_cfg
        } else {
            cfg
        };
        // Same order of checks as ever: accounts and buckets, store, faults, then the cloud.
        let oss = oss::Oss::new(cfg)?;
        for (k, p) in &cfg.faults {
            if !(0.0..=1.0).contains(p) {
                return Err(SimError::Config(format!(
                    "fault {k} probability {p} is outside 0..1"
                )));
            }
        }
        let ec2_asked = !cfg.ec2_images.is_empty()
            || !cfg.vmimport_roles.is_empty()
            || !cfg.ec2_task_fail.is_empty();
        if ec2_asked && cfg.dialect != Dialect::S3 {
            return Err(SimError::Config(
                "EC2 images, vmimport roles and EC2 task failures need the s3 dialect".into(),
            ));
        }
        if !(0.0..1.0).contains(&cfg.conn_rate_spread) {
            return Err(SimError::Config(format!(
                "connection rate spread {} is outside 0..1 (0 = every connection alike)",
                cfg.conn_rate_spread
            )));
        }
        Ok(Self {
            region: cfg.region.clone(),
            ec2: ec2::Ec2::new(cfg)?,
            oss,
            cloud: cloud::Cloud::new(cfg)?,
            aws,
            dialect: cfg.dialect,
            quirks: cfg.quirks || cfg.s3_flavour == crate::config::S3Flavour::Cos,
            cos: cfg.s3_flavour == crate::config::S3Flavour::Cos,
            conn_rate: cfg
                .conn_rate
                .map(|r| crate::wan::RateDraw::new(r, cfg.conn_rate_spread, cfg.wan_seed)),
            latency: cfg.latency,
            reject_path_style: cfg.reject_path_style,
            clock_skew: AtomicI64::new(cfg.clock_skew),
            link: Arc::new(Link::new(cfg.link_rate)),
            faults: Mutex::new(Faults::new(
                cfg.faults.clone(),
                cfg.fault_ops.clone(),
                cfg.fault_seed,
            )),
            stats: Stats::default(),
        })
    }

    /// The server clock: real time plus the configured skew.
    pub(crate) fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        let skew = self.clock_skew.load(Ordering::Relaxed);
        if skew >= 0 {
            now + Duration::from_secs(skew as u64)
        } else {
            now - Duration::from_secs(skew.unsigned_abs())
        }
    }

    pub(crate) fn stats_json(&self) -> serde_json::Value {
        let mut requests = self.stats.requests.lock().expect("stats lock").clone();
        let resets = self.link.outage_resets.load(Ordering::Relaxed);
        if resets > 0 {
            requests
                .entry("Connection".into())
                .or_default()
                .insert("outage".into(), resets);
        }
        let open = self.oss.open_uploads();
        serde_json::json!({
            "requests": requests,
            "bytes_in": self.stats.bytes_in.load(Ordering::Relaxed),
            "bytes_out": self.stats.bytes_out.load(Ordering::Relaxed),
            "open_uploads": open,
        })
    }

    pub(crate) fn set_faults(&self, faults: Vec<(FaultKind, f64)>) {
        self.faults.lock().expect("fault lock").list = faults;
    }

    pub(crate) fn set_clock_skew(&self, secs: i64) {
        self.clock_skew.store(secs, Ordering::Relaxed);
    }

    pub(crate) fn set_outage(&self, on: bool) {
        self.link.outage.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_slow_loris(&self, rate: Option<u64>) {
        self.link
            .loris
            .store(rate.map_or(0, |r| r.max(1)), Ordering::Relaxed);
    }

    pub(crate) fn set_fault_ops(&self, ops: Option<Vec<String>>) {
        self.faults.lock().expect("fault lock").ops = ops;
    }

    /// Draws the injected fault (if any) for one request of operation `op`.
    pub(crate) fn pick_fault(&self, op: &str) -> Option<FaultPlan> {
        self.faults.lock().expect("fault lock").pick(op)
    }

    /// The region a bucket lives in (S3 dialect).
    pub(crate) fn bucket_region(&self, bucket: &str) -> &str {
        self.aws
            .bucket_regions
            .get(bucket)
            .map(String::as_str)
            .unwrap_or(&self.region)
    }

    /// `(size, crc64)` of an available image's (root) disk: an ECS image `m-…` or an AMI.
    pub(crate) fn image_crc64(&self, id: &str) -> Option<(u64, u64)> {
        if id.starts_with("ami-") {
            self.ec2.image_crc64(&self.oss, id)
        } else {
            self.cloud.image_crc64(id)
        }
    }

    /// Who an AccessKey ID belongs to (long-term or temporary).
    pub(crate) fn key_lookup(&self, ak: &str) -> Option<KeyInfo> {
        self.oss.key_info(ak)
    }

    pub(crate) fn rpc_record(&self, op: &str, status: u16) {
        self.stats.record(op, &status.to_string());
    }

    /// An injected fault for an RPC action: error500 → 500 InternalError, slowdown →
    /// 400 Throttling.User, reset → 503 ServiceUnavailable.
    pub(crate) fn rpc_fault(&self, op: &str) -> Option<RpcError> {
        Some(match self.pick_fault(op)?.kind {
            FaultKind::Error500 => RpcError::new(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            ),
            FaultKind::Slowdown => RpcError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ),
            _ => RpcError::new(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_has_exact_keys() {
        let world = World::new(&SimConfig::default()).unwrap();
        world.stats.record("GetObject", "200");
        let v = world.stats_json();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["bytes_in", "bytes_out", "open_uploads", "requests"]);
        assert_eq!(v["requests"]["GetObject"]["200"], 1);
    }
}
