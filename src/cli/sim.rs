//! `ossrelay sim`: run the OSS simulator until SIGINT/SIGTERM.
//!
//! When ready it prints exactly one JSON line on stdout, e.g.
//! `{"endpoint":"http://127.0.0.1:40123","region":"cn-hangzhou","ecs_endpoint":"http://127.0.0.1:40123"}`;
//! logs go to stderr. `ecs_endpoint` serves ECS, RAM, STS and the instance metadata service;
//! it is the same listener as `endpoint`, so no separate `sts_endpoint` / `ram_endpoint` /
//! `imds_endpoint` keys are printed.
//!
//! With `--dialect s3` the main listener speaks the S3 REST API (and IMDSv2 with AWS's shapes
//! under `/latest/`), and a second listener serves the AWS Query API (EC2 VM Import/Export and
//! DescribeImages, IAM roles, STS); the ready line then
//! reads `{"endpoint":…,"region":…,"ecs_endpoint":…,"dialect":"s3","ec2_endpoint":…}` (the OSS
//! line is unchanged).

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ossrelay_sim::{
    Dialect, FaultKind, RpcFault, SimAccount, SimAwsRole, SimBucket, SimConfig, SimImage,
    SimOidcProvider, SimRole, StoreKind, SyntheticObject,
};

/// Flags of `ossrelay sim`.
#[derive(clap::Args, Clone)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Region ID this simulated endpoint serves (V4 scope, GetBucketLocation); default
    /// `cn-hangzhou` for the oss dialect, `us-east-1` for s3.
    #[arg(long)]
    pub region: Option<String>,
    /// API of the main listener: `oss` (OSS + ECS/RAM/STS RPC) or `s3` (S3 REST + IMDSv2;
    /// AWS EC2, IAM and STS on a second listener printed as `ec2_endpoint`).
    #[arg(long, default_value = "oss", value_name = "oss|s3")]
    pub dialect: String,
    /// s3 dialect: behave like S3-compatible stores (OSS S3 mode, COS, OBS): ignore every
    /// `x-amz-checksum-*` header (no verification, none returned, no FULL_OBJECT CRC) and
    /// refuse aws-chunked bodies (`Content-Encoding: aws-chunked`, `x-amz-content-sha256:
    /// STREAMING-*`) with 501 NotImplemented; Content-MD5 and MD5 ETags still work. Without
    /// it, aws-chunked bodies are accepted as S3 does.
    #[arg(long)]
    pub quirks: bool,
    /// s3 dialect: the store to imitate: `aws` (S3), or `cos` (Tencent COS: --quirks plus
    /// `x-cos-hash-crc64ecma`, the decimal CRC-64/XZ, on PutObject, UploadPart, GET and HEAD).
    #[arg(long, default_value = "aws", value_name = "aws|cos")]
    pub s3_flavour: String,
    /// s3 dialect: IAM role `arn:aws:iam::ACCOUNT:role/ROLE_NAME` that STS AssumeRole and
    /// AssumeRoleWithWebIdentity hand out (repeatable); `external_id=X` makes AssumeRole
    /// require that ExternalId.
    #[arg(long = "aws-role", value_name = "ACCOUNT:ROLE_NAME[:external_id=X]")]
    pub aws_roles: Vec<String>,
    /// s3 dialect: an opaque token AssumeRoleWithWebIdentity accepts (repeatable), besides
    /// JWTs of `--oidc-provider` issuers.
    #[arg(long = "web-identity-token", value_name = "TOKEN")]
    pub web_identity_tokens: Vec<String>,
    /// Account with a long-term key pair (repeatable); default `sim:simak:simsecret`.
    #[arg(long = "account", value_name = "NAME:ACCESS_KEY_ID:ACCESS_KEY_SECRET")]
    pub accounts: Vec<String>,
    /// Bucket owned by ACCOUNT (default: the first account); repeatable.
    #[arg(long = "bucket", value_name = "BUCKET[:ACCOUNT]")]
    pub buckets: Vec<String>,
    /// Deterministic read-only object that is generated, never stored, e.g. `src/disk.raw=1TiB`.
    #[arg(long = "synthetic", value_name = "BUCKET/KEY=SIZE")]
    pub synthetic: Vec<String>,
    /// Bucket whose uploads are verified and counted but whose bytes are dropped.
    #[arg(long = "discard", value_name = "BUCKET")]
    pub discard: Vec<String>,
    /// Where real objects live: `memory` or a directory.
    #[arg(long, default_value = "memory", value_name = "memory|DIR")]
    pub store: String,
    /// Inject a fault with a per-request probability (repeatable):
    /// error500, slowdown, reset, truncate, corrupt, stall.
    #[arg(long = "fault", value_name = "KIND=PROBABILITY")]
    pub faults: Vec<String>,
    /// Seed of the fault RNG (same seed, same request sequence → same faults).
    #[arg(long, default_value_t = 0)]
    pub fault_seed: u64,
    /// Only inject faults into these operations, e.g. `GetObject,UploadPart`.
    #[arg(long, value_delimiter = ',', value_name = "OP,...")]
    pub fault_ops: Vec<String>,
    /// Per-connection bandwidth cap in each direction, e.g. `16MiB/s`.
    #[arg(long, value_name = "RATE")]
    pub conn_rate: Option<String>,
    /// With --conn-rate: each connection's cap is drawn uniformly from
    /// [RATE×(1−F), RATE×(1+F)] (real connections differ in speed; 0 = all alike; F < 1).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub conn_rate_spread: f64,
    /// Seed of the --conn-rate-spread draws (same seed and accept order → same caps).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The link's total in each direction, shared by every connection on top of its own
    /// --conn-rate, e.g. `256MiB/s` (a path or a VM's NIC: more connections cannot beat it).
    #[arg(long, value_name = "RATE")]
    pub link_rate: Option<String>,
    /// Delay before the first byte of every response (each request's response, not once
    /// per connection), in milliseconds: a round trip of the WAN model.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency: u64,
    /// A bucket that lives in another region (requests get OSS's wrong-endpoint 403).
    #[arg(long = "remote-bucket", value_name = "BUCKET:REGION")]
    pub remote_buckets: Vec<String>,
    /// Refuse path-style requests with 403 SecondLevelDomainForbidden, like public OSS.
    #[arg(long)]
    pub reject_path_style: bool,
    /// Seconds added to the server clock (to exercise RequestTimeTooSkewed handling).
    #[arg(
        long,
        default_value_t = 0,
        allow_hyphen_values = true,
        value_name = "SECS"
    )]
    pub clock_skew: i64,
    /// Custom image with a synthetic disk (repeatable), e.g.
    /// `m-src001:64MiB:os=linux,arch=x86_64,platform=Ubuntu,boot=BIOS`; other options:
    /// `account=NAME` (default: the first account), `name=IMAGE_NAME`, `nvme=supported`.
    #[arg(long = "image", value_name = "ID:SIZE[:OPTIONS]")]
    pub images: Vec<String>,
    /// RAM role that TRUSTED_ACCOUNT (comma list) may assume, ARN
    /// `acs:ram::<ACCOUNT>:role/<ROLE_NAME>`; TRUSTED `ecs` or empty = the ECS service
    /// (e.g. `a:AliyunECSImageExportDefaultRole:ecs`, which also gets its system policy).
    /// TRUSTED may also name an OIDC provider of ACCOUNT as `oidc:PROVIDER_NAME`
    /// (RRSA: AssumeRoleWithOIDC), e.g. `111:pod-app:oidc:my-cluster`.
    #[arg(long = "role", value_name = "ACCOUNT:ROLE_NAME:TRUSTED_ACCOUNT")]
    pub roles: Vec<String>,
    /// RAM OIDC identity provider `acs:ram::<ACCOUNT>:oidc-provider/<NAME>` whose tokens
    /// (`iss` = ISSUER_URL, `aud` = `sts.aliyuncs.com`) AssumeRoleWithOIDC accepts.
    #[arg(long = "oidc-provider", value_name = "ACCOUNT:NAME=ISSUER_URL")]
    pub oidc_providers: Vec<String>,
    /// Duration of an ExportImage / ImportImage task in (fractional) seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub task_seconds: f64,
    /// Lifetime of AssumeRole credentials in seconds (default: the requested DurationSeconds).
    #[arg(long, value_name = "SECS")]
    pub sts_ttl: Option<f64>,
    /// Instance RAM role served by the metadata service (`/latest/...`):
    /// `[ACCOUNT:]ROLE_NAME` (default account: the first).
    #[arg(long, value_name = "[ACCOUNT:]NAME")]
    pub imds_role: Option<String>,
    /// How often the metadata service issues new credentials, in seconds.
    #[arg(long, default_value_t = 3600.0, value_name = "SECS")]
    pub imds_rotation: f64,
    /// Seconds before a policy attached through RAM lets ExportImage / ImportImage use the
    /// role (RAM's propagation delay).
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub role_propagation: f64,
    /// Answer the next COUNT (default 1) calls of ACTION (`*` = any) with error CODE and HTTP
    /// STATUS (default 400; 200 = an error Code on HTTP 200), e.g.
    /// `ImportImage:Throttling.User:400:2`; repeatable. Applies to the s3 dialect's EC2, IAM
    /// and STS actions too (e.g. `DescribeExportImageTasks:RequestLimitExceeded:503`), in
    /// that service's error XML.
    #[arg(long = "rpc-fault", value_name = "ACTION:CODE[:STATUS[:COUNT]]")]
    pub rpc_faults: Vec<String>,
    /// IMDSv2 tokens of the metadata service: `optional` (v1 also served), `required`
    /// (tokenless requests get 401) or `unsupported` (the token call is 404).
    #[arg(long, default_value = "optional", value_name = "MODE")]
    pub imds_tokens: String,
    /// s3 dialect: an AMI served by the EC2 API on `ec2_endpoint` (repeatable), whose root
    /// volume holds a synthetic disk of SIZE bytes, e.g.
    /// `ami-0123456789abcdef0:8GiB:arch=x86_64,boot=uefi,platform=linux,name=web`; `account=ID`
    /// (default: the first account) owns it. ExportImage writes it (RAW only; VHD/VMDK are
    /// refused) to `<S3Prefix><ExportImageTaskId>.raw` after `--task-seconds`. `GET
    /// /-/images/<ID>` on either listener answers `{"image_id","size","crc64"}` (16 hex) for an
    /// available AMI or ECS image, 404 otherwise, so other processes can compare disks.
    #[arg(long = "ec2-image", value_name = "ami-ID:SIZE[:OPTIONS]")]
    pub ec2_images: Vec<String>,
    /// s3 dialect: ACCOUNT starts with a correct `vmimport` IAM role (trusts
    /// vmie.amazonaws.com, inline policy on every bucket); repeatable. Without it the role is
    /// absent, as on a fresh AWS account (create it with IAM CreateRole + PutRolePolicy;
    /// `--role-propagation` delays its use).
    #[arg(long = "vmimport-role", value_name = "ACCOUNT")]
    pub vmimport_roles: Vec<String>,
    /// s3 dialect: EC2 export (and, separately, import) tasks one account may have active.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub ec2_task_limit: usize,
    /// s3 dialect: every EC2 export or import task fails half-way, ending `deleted` with
    /// StatusMessage `ClientError: MESSAGE` and leaving nothing behind; repeatable.
    #[arg(long = "ec2-task-fail", value_name = "export|import[:MESSAGE]")]
    pub ec2_task_fail: Vec<String>,
}

fn seconds(flag: &str, v: f64) -> Result<Duration, String> {
    if (0.0..1e9).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!(
            "--{flag} must be a non-negative number of seconds, got {v}"
        ))
    }
}

fn parse_image(s: &str, default_account: &str) -> Result<SimImage, String> {
    let bad = || format!("--image expects ID:SIZE[:os=..,arch=..,platform=..,boot=..], got {s:?}");
    let mut it = s.splitn(3, ':');
    let (id, size) = match (it.next(), it.next()) {
        (Some(id), Some(size)) if !id.is_empty() => (id, size),
        _ => return Err(bad()),
    };
    let mut img = SimImage::new(id, parse_size(size)?, default_account);
    if let Some(opts) = it.next() {
        for kv in opts.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            match k {
                "os" => img.os_type = v.into(),
                "arch" => img.architecture = v.into(),
                "platform" => img.platform = v.into(),
                "boot" => img.boot_mode = v.into(),
                "account" => img.account = v.into(),
                "name" => img.name = v.into(),
                "nvme" => img.nvme = v.into(),
                _ => {
                    return Err(format!(
                    "--image: unknown option {k:?} (os, arch, platform, boot, account, name, nvme)"
                ))
                }
            }
        }
    }
    Ok(img)
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s.trim()).map_err(|e| format!("invalid size {s:?}: {e}"))
}

impl SimArgs {
    /// Turns the flags into a simulator configuration.
    pub fn config(&self) -> Result<SimConfig, String> {
        let dialect: Dialect = self.dialect.parse()?;
        let default_region = match dialect {
            Dialect::Oss => "cn-hangzhou",
            Dialect::S3 => "us-east-1",
        };
        let mut cfg = SimConfig {
            listen: self.listen,
            region: self.region.clone().unwrap_or_else(|| default_region.into()),
            dialect,
            quirks: self.quirks,
            s3_flavour: self.s3_flavour.parse()?,
            web_identity_tokens: self.web_identity_tokens.clone(),
            ..SimConfig::default()
        };
        for r in &self.aws_roles {
            let mut it = r.splitn(3, ':');
            let (account, name, opt) = match (it.next(), it.next(), it.next()) {
                (Some(a), Some(n), o) if !a.is_empty() && !n.is_empty() => (a, n, o),
                _ => {
                    return Err(format!(
                        "--aws-role expects ACCOUNT:ROLE_NAME[:external_id=X], got {r:?}"
                    ))
                }
            };
            let external_id = match opt {
                None => None,
                Some(o) => Some(
                    o.strip_prefix("external_id=")
                        .filter(|x| !x.is_empty())
                        .ok_or_else(|| format!("--aws-role: unknown option {o:?} (external_id=X)"))?
                        .to_string(),
                ),
            };
            cfg.aws_roles.push(SimAwsRole {
                account: account.into(),
                name: name.into(),
                external_id,
            });
        }
        if !self.accounts.is_empty() {
            cfg.accounts = self
                .accounts
                .iter()
                .map(|a| {
                    let mut it = a.splitn(3, ':');
                    match (it.next(), it.next(), it.next()) {
                        (Some(n), Some(k), Some(s))
                            if !n.is_empty() && !k.is_empty() && !s.is_empty() =>
                        {
                            Ok(SimAccount {
                                name: n.into(),
                                access_key_id: k.into(),
                                access_key_secret: s.into(),
                            })
                        }
                        _ => Err(format!(
                            "--account expects NAME:ACCESS_KEY_ID:ACCESS_KEY_SECRET, got {:?}",
                            a.split(':').next().unwrap_or_default()
                        )),
                    }
                })
                .collect::<Result<_, _>>()?;
        }
        let first = cfg.accounts[0].name.clone();
        for b in &self.buckets {
            let (name, account) = match b.split_once(':') {
                Some((n, a)) => (n, a.to_string()),
                None => (b.as_str(), first.clone()),
            };
            cfg.buckets.push(SimBucket {
                name: name.into(),
                account,
            });
        }
        for s in &self.synthetic {
            let (path, size) = s
                .rsplit_once('=')
                .ok_or_else(|| format!("--synthetic expects BUCKET/KEY=SIZE, got {s:?}"))?;
            let (bucket, key) = path
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| format!("--synthetic expects BUCKET/KEY=SIZE, got {s:?}"))?;
            cfg.synthetic.push(SyntheticObject {
                bucket: bucket.into(),
                key: key.into(),
                size: parse_size(size)?,
            });
        }
        cfg.discard = self.discard.clone();
        cfg.store = if self.store == "memory" {
            StoreKind::Memory
        } else {
            StoreKind::Dir(PathBuf::from(&self.store))
        };
        for f in &self.faults {
            let (kind, p) = f
                .split_once('=')
                .ok_or_else(|| format!("--fault expects KIND=PROBABILITY, got {f:?}"))?;
            let kind: FaultKind = kind.parse()?;
            let p: f64 = p
                .parse()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("fault probability must be within 0..1, got {p:?}"))?;
            cfg.faults.push((kind, p));
        }
        cfg.fault_seed = self.fault_seed;
        if !self.fault_ops.is_empty() {
            cfg.fault_ops = Some(self.fault_ops.clone());
        }
        let rate = |flag: &str, r: &str| -> Result<u64, String> {
            let raw = r.trim();
            let raw = raw
                .strip_suffix("/s")
                .or_else(|| raw.strip_suffix("ps"))
                .unwrap_or(raw);
            match parse_size(raw)? {
                0 => Err(format!("{flag} must be positive")),
                n => Ok(n),
            }
        };
        if let Some(r) = &self.conn_rate {
            cfg.conn_rate = Some(rate("--conn-rate", r)?);
        }
        if let Some(r) = &self.link_rate {
            cfg.link_rate = Some(rate("--link-rate", r)?);
        }
        if !(0.0..1.0).contains(&self.conn_rate_spread) {
            return Err(format!(
                "--conn-rate-spread must be within 0..1, got {}",
                self.conn_rate_spread
            ));
        }
        if self.conn_rate_spread > 0.0 && cfg.conn_rate.is_none() {
            return Err("--conn-rate-spread needs --conn-rate (the rate it spreads)".into());
        }
        cfg.conn_rate_spread = self.conn_rate_spread;
        cfg.wan_seed = self.seed;
        cfg.latency = Duration::from_millis(self.latency);
        for rb in &self.remote_buckets {
            let (b, r) = rb
                .split_once(':')
                .ok_or_else(|| format!("--remote-bucket expects BUCKET:REGION, got {rb:?}"))?;
            cfg.remote_buckets.push((b.into(), r.into()));
        }
        cfg.reject_path_style = self.reject_path_style;
        cfg.clock_skew = self.clock_skew;
        for i in &self.images {
            cfg.images.push(parse_image(i, &first)?);
        }
        for r in &self.roles {
            let mut it = r.splitn(3, ':');
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(n), t) if !a.is_empty() && !n.is_empty() => {
                    cfg.roles.push(SimRole {
                        account: a.into(),
                        name: n.into(),
                        trusted: t.unwrap_or_default().into(),
                    })
                }
                _ => {
                    return Err(format!(
                        "--role expects ACCOUNT:ROLE_NAME:TRUSTED_ACCOUNT, got {r:?}"
                    ))
                }
            }
        }
        for p in &self.oidc_providers {
            let parsed = p
                .split_once('=')
                .and_then(|(an, issuer)| an.split_once(':').map(|(a, n)| (a, n, issuer)));
            match parsed {
                Some((a, n, issuer)) if !a.is_empty() && !n.is_empty() && !issuer.is_empty() => {
                    cfg.oidc_providers.push(SimOidcProvider {
                        account: a.into(),
                        name: n.into(),
                        issuer_url: issuer.into(),
                        client_ids: vec![match dialect {
                            Dialect::Oss => "sts.aliyuncs.com".into(),
                            Dialect::S3 => "sts.amazonaws.com".into(),
                        }],
                    })
                }
                _ => {
                    return Err(format!(
                        "--oidc-provider expects ACCOUNT:NAME=ISSUER_URL, got {p:?}"
                    ))
                }
            }
        }
        cfg.task_duration = seconds("task-seconds", self.task_seconds)?;
        cfg.sts_ttl = self.sts_ttl.map(|t| seconds("sts-ttl", t)).transpose()?;
        cfg.imds_role = self.imds_role.as_ref().map(|r| match r.split_once(':') {
            Some((a, n)) => (a.to_string(), n.to_string()),
            None => (first.clone(), r.clone()),
        });
        cfg.imds_rotation = seconds("imds-rotation", self.imds_rotation)?;
        cfg.role_propagation = seconds("role-propagation", self.role_propagation)?;
        cfg.imds_tokens = self.imds_tokens.parse()?;
        for f in &self.rpc_faults {
            let bad = || format!("--rpc-fault expects ACTION:CODE[:STATUS[:COUNT]], got {f:?}");
            let parts: Vec<&str> = f.split(':').collect();
            if parts.len() < 2 || parts.len() > 4 || parts[0].is_empty() || parts[1].is_empty() {
                return Err(bad());
            }
            let status = match parts.get(2) {
                None => 400,
                Some(s) => s
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .ok_or_else(bad)?,
            };
            let count = match parts.get(3) {
                None => 1,
                Some(c) => c.parse::<u32>().map_err(|_| bad())?,
            };
            cfg.rpc_faults.push(RpcFault {
                action: parts[0].into(),
                code: parts[1].into(),
                status,
                count,
            });
        }
        for i in &self.ec2_images {
            cfg.ec2_images
                .push(ossrelay_sim::SimEc2Image::parse(i, &first)?);
        }
        cfg.vmimport_roles = self.vmimport_roles.clone();
        if self.ec2_task_limit == 0 {
            return Err("--ec2-task-limit must be at least 1".into());
        }
        cfg.ec2_task_limit = self.ec2_task_limit;
        for f in &self.ec2_task_fail {
            cfg.ec2_task_fail.push(f.parse()?);
        }
        if cfg.imds_rotation.is_zero() {
            return Err("--imds-rotation must be positive".into());
        }
        Ok(cfg)
    }
}

/// Starts the simulator, writes the ready line to `out`, serves until `stop` resolves.
pub async fn run_until(
    args: SimArgs,
    out: &mut dyn Write,
    stop: impl Future<Output = ()>,
) -> Result<i32, String> {
    let cfg = args.config()?;
    let server = ossrelay_sim::start(cfg).await.map_err(|e| e.to_string())?;
    // A struct, not json!(): the contract's keys come first, in the documented order.
    // The s3 dialect appends its keys; the oss line stays exactly what it always was.
    #[derive(serde::Serialize)]
    struct Ready<'a> {
        endpoint: String,
        region: &'a str,
        ecs_endpoint: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        dialect: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ec2_endpoint: Option<String>,
    }
    let s3 = server.dialect() == Dialect::S3;
    let line = serde_json::to_string(&Ready {
        endpoint: server.endpoint(),
        region: server.region(),
        ecs_endpoint: server.ecs_endpoint(),
        dialect: s3.then_some("s3"),
        ec2_endpoint: server.ec2_endpoint(),
    })
    .map_err(|e| format!("cannot encode the ready line: {e}"))?;
    writeln!(out, "{line}").map_err(|e| format!("cannot write the ready line: {e}"))?;
    out.flush()
        .map_err(|e| format!("cannot write the ready line: {e}"))?;
    stop.await;
    tracing::info!("shutting down the simulator");
    server.shutdown().await;
    Ok(0)
}

async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `ossrelay sim`: returns the process exit code, or a message for stderr.
pub async fn run(args: SimArgs) -> Result<i32, String> {
    let mut stdout = std::io::stdout();
    run_until(args, &mut stdout, termination()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn args(v: &[&str]) -> SimArgs {
        let mut all = vec!["sim"];
        all.extend_from_slice(v);
        Cli::try_parse_from(all).unwrap().sim
    }

    #[test]
    fn flags_to_config() {
        let a = args(&[
            "--listen",
            "127.0.0.1:0",
            "--account",
            "a:ak1:s1",
            "--account",
            "b:ak2:s:with:colons",
            "--bucket",
            "dst:b",
            "--bucket",
            "other",
            "--synthetic",
            "src/disk.raw=1TiB",
            "--discard",
            "sink",
            "--fault",
            "reset=0.25",
            "--fault-ops",
            "GetObject,UploadPart",
            "--conn-rate",
            "16MiB/s",
            "--conn-rate-spread",
            "0.5",
            "--seed",
            "9",
            "--latency",
            "20",
            "--link-rate",
            "256MiB/s",
            "--remote-bucket",
            "far:us-west-1",
            "--clock-skew",
            "-1200",
        ]);
        let c = a.config().unwrap();
        assert_eq!(c.accounts[1].access_key_secret, "s:with:colons");
        assert_eq!(c.buckets[0].account, "b");
        assert_eq!(c.buckets[1].account, "a");
        assert_eq!(c.synthetic[0].size, 1 << 40);
        assert_eq!(c.synthetic[0].key, "disk.raw");
        assert_eq!(c.faults, vec![(FaultKind::Reset, 0.25)]);
        assert_eq!(
            c.fault_ops,
            Some(vec!["GetObject".to_string(), "UploadPart".to_string()])
        );
        assert_eq!(c.conn_rate, Some(16 << 20));
        assert_eq!(c.latency, Duration::from_millis(20));
        assert_eq!(c.conn_rate_spread, 0.5);
        assert_eq!(c.wan_seed, 9);
        assert_eq!(c.link_rate, Some(256 << 20));
        assert!(args(&["--link-rate", "0"]).config().is_err());
        assert!(args(&["--conn-rate", "1MiB/s", "--conn-rate-spread", "1"])
            .config()
            .is_err());
        assert!(args(&["--conn-rate-spread", "0.5"]).config().is_err());
        assert_eq!(c.remote_buckets, vec![("far".into(), "us-west-1".into())]);
        assert_eq!(c.clock_skew, -1200);
        assert!(args(&["--fault", "boom=1"]).config().is_err());
        assert!(args(&["--fault", "stall=2"]).config().is_err());
        assert!(args(&["--account", "x:y"]).config().is_err());
    }

    #[test]
    fn ec2_flags_to_config() {
        let c = args(&[
            "--dialect",
            "s3",
            "--account",
            "111122223333:ak1:s1",
            "--ec2-image",
            "ami-0123456789abcdef0:8GiB:arch=arm64,name=web",
            "--vmimport-role",
            "111122223333",
            "--ec2-task-limit",
            "2",
            "--ec2-task-fail",
            "import:Unsupported kernel",
        ])
        .config()
        .unwrap();
        let i = &c.ec2_images[0];
        assert_eq!(
            (i.size, i.account.as_str(), i.boot_mode.as_str()),
            (8 << 30, "111122223333", "uefi")
        );
        assert_eq!(c.vmimport_roles, ["111122223333"]);
        assert_eq!(c.ec2_task_limit, 2);
        assert_eq!(c.ec2_task_fail[0].message, "Unsupported kernel");
        assert!(args(&["--ec2-image", "ami-1:1GiB"]).config().is_err());
        assert!(args(&["--ec2-task-limit", "0"]).config().is_err());
        assert!(args(&["--ec2-task-fail", "both"]).config().is_err());
    }

    #[test]
    fn cloud_flags_to_config() {
        let c = args(&[
            "--account",
            "111:ak1:s1",
            "--account",
            "222:ak2:s2",
            "--image",
            "m-a:8MiB",
            "--image",
            "m-b:1GiB:os=linux,arch=arm64,platform=Ubuntu,boot=UEFI,account=222",
            "--role",
            "222:migrator:111",
            "--role",
            "111:AliyunECSImageExportDefaultRole:ecs",
            "--role",
            "111:pod-app:oidc:cluster-1",
            "--oidc-provider",
            "111:cluster-1=https://oidc.example.test/c1",
            "--task-seconds",
            "0.5",
            "--sts-ttl",
            "2",
            "--imds-role",
            "222:relay-vm",
            "--imds-rotation",
            "1.5",
            "--role-propagation",
            "2",
            "--rpc-fault",
            "ImportImage:Throttling.User:400:2",
            "--rpc-fault",
            "*:ServiceUnavailable:200",
        ])
        .config()
        .unwrap();
        assert_eq!(c.images[0].size, 8 << 20);
        assert_eq!(c.images[0].account, "111");
        assert_eq!(
            (
                c.images[1].architecture.as_str(),
                c.images[1].boot_mode.as_str()
            ),
            ("arm64", "UEFI")
        );
        assert_eq!(c.images[1].account, "222");
        assert_eq!(c.roles[0].trusted, "111");
        assert_eq!(c.roles[2].trusted, "oidc:cluster-1");
        assert_eq!(
            c.oidc_providers[0].arn(),
            "acs:ram::111:oidc-provider/cluster-1"
        );
        assert_eq!(
            c.oidc_providers[0].issuer_url,
            "https://oidc.example.test/c1"
        );
        assert_eq!(c.oidc_providers[0].client_ids, ["sts.aliyuncs.com"]);
        assert!(args(&["--oidc-provider", "111:no-issuer"])
            .config()
            .is_err());
        assert_eq!(c.task_duration, Duration::from_millis(500));
        assert_eq!(c.sts_ttl, Some(Duration::from_secs(2)));
        assert_eq!(c.imds_role, Some(("222".into(), "relay-vm".into())));
        assert_eq!(c.imds_rotation, Duration::from_millis(1500));
        assert_eq!(c.role_propagation, Duration::from_secs(2));
        assert_eq!(
            c.rpc_faults,
            vec![
                RpcFault {
                    action: "ImportImage".into(),
                    code: "Throttling.User".into(),
                    status: 400,
                    count: 2
                },
                RpcFault {
                    action: "*".into(),
                    code: "ServiceUnavailable".into(),
                    status: 200,
                    count: 1
                },
            ]
        );
        assert!(args(&["--rpc-fault", "ImportImage"]).config().is_err());
        assert!(args(&["--imds-tokens", "sometimes"]).config().is_err());
        assert_eq!(
            args(&["--imds-tokens", "required"])
                .config()
                .unwrap()
                .imds_tokens,
            ossrelay_sim::ImdsTokens::Required
        );
        assert!(args(&["--rpc-fault", "A:B:99"]).config().is_err());
        assert!(args(&["--image", "m-x"]).config().is_err());
        assert!(args(&["--image", "m-x:1MiB:colour=red"]).config().is_err());
        assert!(args(&["--role", "a"]).config().is_err());
        assert!(args(&["--task-seconds", "inf"]).config().is_err());
        let d = args(&["--imds-role", "vm"]).config().unwrap();
        assert_eq!(d.imds_role, Some(("sim".into(), "vm".into())));
    }

    #[tokio::test]
    async fn ready_line_is_exact_json() {
        let a = args(&["--listen", "127.0.0.1:0", "--region", "us-west-1"]);
        let mut out = Vec::new();
        let code = run_until(a, &mut out, async {}).await.unwrap();
        assert_eq!(code, 0);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let ep = v["endpoint"].as_str().unwrap();
        assert!(
            ep.starts_with("http://127.0.0.1:") && !ep.ends_with(":0"),
            "{ep}"
        );
        assert_eq!(
            text.trim_end(),
            format!("{{\"endpoint\":\"{ep}\",\"region\":\"us-west-1\",\"ecs_endpoint\":\"{ep}\"}}")
        );
    }

    #[tokio::test]
    async fn s3_ready_line_appends_dialect_and_ec2_endpoint() {
        let a = args(&[
            "--listen",
            "127.0.0.1:0",
            "--dialect",
            "s3",
            "--aws-role",
            "111:r:external_id=xyz",
        ]);
        let cfg = a.config().unwrap();
        assert_eq!(cfg.region, "us-east-1");
        assert_eq!(cfg.aws_roles[0].external_id.as_deref(), Some("xyz"));
        let mut out = Vec::new();
        run_until(a, &mut out, async {}).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        let ep = v["endpoint"].as_str().unwrap();
        let ec2 = v["ec2_endpoint"].as_str().unwrap();
        assert_eq!(
            text.trim_end(),
            format!("{{\"endpoint\":\"{ep}\",\"region\":\"us-east-1\",\"ecs_endpoint\":\"{ep}\",\"dialect\":\"s3\",\"ec2_endpoint\":\"{ec2}\"}}")
        );
        assert_eq!(v["dialect"], "s3");
        assert_ne!(v["ec2_endpoint"], v["endpoint"]);
        assert!(args(&["--dialect", "gcs"]).config().is_err());
        assert!(args(&["--aws-role", "1:r:nope"]).config().is_err());
    }
}
