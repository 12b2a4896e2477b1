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

/// Which S3-compatible store the S3 dialect imitates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum S3Flavour {
    /// Amazon S3 itself (with `quirks`: a store that ignores `x-amz-checksum-*`).
    #[default]
    Aws,
    /// Tencent COS: quirks mode (no `x-amz-checksum-*`, no aws-chunked) plus
    /// `x-cos-hash-crc64ecma`, the decimal CRC-64/XZ of the body, on PutObject and UploadPart
    /// responses and of the whole object on GET/HEAD (s3-protocol.md §10).
    Cos,
}

impl FromStr for S3Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "aws" => Ok(Self::Aws),
            "cos" => Ok(Self::Cos),
            other => Err(format!("unknown S3 flavour {other:?}; expected aws or cos")),
        }
    }
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

/// An AMI of the simulated EC2 whose one EBS volume holds a synthetic disk (content and CRC-64
/// known without storing it, as for ECS images).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEc2Image {
    /// `ami-` followed by 8 or 17 lower-case hex digits.
    pub id: String,
    /// Disk size in bytes (a positive multiple of 512).
    pub size: u64,
    /// Owner account (its name is its account ID).
    pub account: String,
    /// Image name (empty: `img-<id>`).
    pub name: String,
    /// `x86_64`, `arm64` or `i386`.
    pub architecture: String,
    /// `legacy-bios` or `uefi`.
    pub boot_mode: String,
    /// `linux` or `windows`.
    pub platform: String,
}

impl SimEc2Image {
    /// Parses `ami-ID:SIZE[:arch=..,boot=..,platform=..,name=..,account=..]` (the
    /// `--ec2-image` flag); the boot mode defaults to what EC2 assumes for the architecture
    /// (UEFI on arm64, legacy BIOS otherwise).
    pub fn parse(s: &str, default_account: &str) -> Result<Self, String> {
        let bad = || {
            format!("--ec2-image expects ami-ID:SIZE[:arch=..,boot=..,platform=..,name=..,account=..], got {s:?}")
        };
        let mut it = s.splitn(3, ':');
        let (id, size) = match (it.next(), it.next()) {
            (Some(id), Some(size)) if valid_ami_id(id) => (id, size),
            _ => return Err(bad()),
        };
        let size = parse_bytes(size).ok_or_else(bad)?;
        if size == 0 || !size.is_multiple_of(512) {
            return Err(format!(
                "--ec2-image {id}: size {size} must be a positive multiple of 512 bytes"
            ));
        }
        let mut img = Self {
            id: id.into(),
            size,
            account: default_account.into(),
            name: String::new(),
            architecture: "x86_64".into(),
            boot_mode: String::new(),
            platform: "linux".into(),
        };
        for kv in it
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|o| !o.is_empty())
        {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            let one_of = |allowed: &[&str]| {
                if allowed.contains(&v) {
                    Ok(v.to_string())
                } else {
                    Err(format!(
                        "--ec2-image {id}: {k} must be one of {allowed:?}, got {v:?}"
                    ))
                }
            };
            match k {
                "arch" => img.architecture = one_of(&["x86_64", "arm64", "i386"])?,
                "boot" => img.boot_mode = one_of(&["legacy-bios", "uefi"])?,
                "platform" => img.platform = one_of(&["linux", "windows"])?,
                "name" => img.name = v.into(),
                "account" => img.account = v.into(),
                _ => {
                    return Err(format!(
                        "--ec2-image: unknown option {k:?} (arch, boot, platform, name, account)"
                    ))
                }
            }
        }
        if img.boot_mode.is_empty() {
            img.boot_mode = if img.architecture == "arm64" {
                "uefi"
            } else {
                "legacy-bios"
            }
            .into();
        }
        Ok(img)
    }
}

/// `ami-` + 8 or 17 lower-case hex digits, as EC2 issues them.
pub fn valid_ami_id(id: &str) -> bool {
    id.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `123`, `64KiB`, `64MiB`, `2GiB`, `1TiB` (also `K`/`M`/`G`/`T`, `KB`… as powers of 1024).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Which EC2 task kind `--ec2-task-fail` breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ec2TaskKind {
    Export,
    Import,
}

/// EC2 tasks of `kind` end `deleted` half-way with StatusMessage `ClientError: <message>`,
/// leaving nothing behind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEc2TaskFail {
    pub kind: Ec2TaskKind,
    pub message: String,
}

impl FromStr for SimEc2TaskFail {
    type Err = String;
    /// `export|import[:MESSAGE]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, message) = s.split_once(':').unwrap_or((s, ""));
        let kind = match kind {
            "export" => Ec2TaskKind::Export,
            "import" => Ec2TaskKind::Import,
            _ => {
                return Err(format!(
                    "--ec2-task-fail expects export|import[:MESSAGE], got {s:?}"
                ))
            }
        };
        let message = if message.is_empty() {
            "Simulated failure (--ec2-task-fail)".to_string()
        } else {
            message.to_string()
        };
        Ok(Self { kind, message })
    }
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
    /// Bytes/s in each direction shared by all connections (the WAN model's link total:
    /// a path or a NIC), on top of each connection's own cap.
    pub link_rate: Option<u64>,
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
    /// S3 dialect: behave like the S3-compatible stores (OSS's S3 mode, COS, OBS): ignore every
    /// `x-amz-checksum-*` header (no verification, none returned, no FULL_OBJECT CRC) and
    /// refuse aws-chunked bodies (`501 NotImplemented`), which they reject.
    pub quirks: bool,
    /// S3 dialect: which store the S3 listener imitates beyond the S3 API itself.
    pub s3_flavour: S3Flavour,
    /// S3 dialect: IAM roles AWS STS can hand out.
    pub aws_roles: Vec<SimAwsRole>,
    /// S3 dialect: opaque tokens AssumeRoleWithWebIdentity accepts besides provider JWTs.
    pub web_identity_tokens: Vec<String>,
    /// S3 dialect: AMIs served by the EC2 API.
    pub ec2_images: Vec<SimEc2Image>,
    /// S3 dialect: accounts that start with a correct `vmimport` service role (trust of
    /// `vmie.amazonaws.com` + an inline policy on every bucket); others have none, as a fresh
    /// AWS account.
    pub vmimport_roles: Vec<String>,
    /// S3 dialect: EC2 export (and, separately, import) tasks an account may have active.
    pub ec2_task_limit: usize,
    /// S3 dialect: EC2 tasks of these kinds fail half-way.
    pub ec2_task_fail: Vec<SimEc2TaskFail>,
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
            link_rate: None,
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
            s3_flavour: S3Flavour::Aws,
            aws_roles: Vec::new(),
            web_identity_tokens: Vec::new(),
            ec2_images: Vec::new(),
            vmimport_roles: Vec::new(),
            ec2_task_limit: 5,
            ec2_task_fail: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_image_flag() {
        let i = SimEc2Image::parse("ami-0123456789abcdef0:64MiB", "111").unwrap();
        assert_eq!(
            (
                i.size,
                i.account.as_str(),
                i.boot_mode.as_str(),
                i.platform.as_str()
            ),
            (64 << 20, "111", "legacy-bios", "linux")
        );
        let i = SimEc2Image::parse(
            "ami-12345678:2GiB:arch=arm64,platform=windows,name=web server,account=222",
            "111",
        )
        .unwrap();
        assert_eq!(i.architecture, "arm64");
        assert_eq!(i.boot_mode, "uefi", "arm64 defaults to UEFI");
        assert_eq!((i.name.as_str(), i.account.as_str()), ("web server", "222"));
        assert_eq!(i.size, 2 << 30);
        let i = SimEc2Image::parse("ami-12345678:1024:boot=uefi", "a").unwrap();
        assert_eq!((i.size, i.boot_mode.as_str()), (1024, "uefi"));
        for bad in [
            "m-123:1GiB",
            "ami-123:1GiB",
            "ami-0123456789ABCDEF0:1GiB",
            "ami-12345678",
            "ami-12345678:1000",
            "ami-12345678:0",
            "ami-12345678:1GiB:arch=sparc",
            "ami-12345678:1GiB:boot=bios",
            "ami-12345678:1GiB:color=red",
            "ami-12345678:1GiB:arch",
            "ami-12345678:lots",
        ] {
            assert!(SimEc2Image::parse(bad, "a").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ec2_task_fail_flag() {
        let f: SimEc2TaskFail = "import:Unsupported kernel".parse().unwrap();
        assert_eq!(f.kind, Ec2TaskKind::Import);
        assert_eq!(f.message, "Unsupported kernel");
        let f: SimEc2TaskFail = "export".parse().unwrap();
        assert_eq!(f.kind, Ec2TaskKind::Export);
        assert!(!f.message.is_empty());
        assert!("both".parse::<SimEc2TaskFail>().is_err());
    }
}
