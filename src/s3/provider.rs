//! Presets for Amazon S3 and the S3-compatible stores we know: default endpoint, addressing,
//! signing region, limits and which checksums each one reports and verifies.
//!
//! Contract: every value here is backed by `s3-protocol.md` §6/§7/§10; where the reference
//! marks something UNCONFIRMED we choose the conservative side (claim less verification, send
//! fewer headers), because a checksum we wrongly believe is verified is a silent hole in the
//! proof, while one we do not claim only costs a re-read.

use std::fmt;
use std::str::FromStr;

use crate::checksum::Algorithm;
use crate::store::{ChecksumCaps, Limits};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Which S3 implementation sits behind the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Provider {
    /// Amazon S3.
    #[default]
    Aws,
    /// Tencent Cloud COS.
    Cos,
    /// Huawei Cloud OBS.
    Obs,
    /// Google Cloud Storage, XML API with HMAC keys.
    Gcs,
    /// MinIO (and other faithful S3 clones): needs an endpoint.
    Minio,
    /// Cloudflare R2: needs the account endpoint.
    R2,
    /// Alibaba Cloud OSS in S3 mode (prefer the native `oss` dialect).
    Oss,
    /// Anything else speaking S3: needs an endpoint; treated like OBS/OSS (no `x-amz-checksum-*`).
    Other,
}

impl Provider {
    pub const ALL: [Provider; 8] = [
        Self::Aws,
        Self::Cos,
        Self::Obs,
        Self::Gcs,
        Self::Minio,
        Self::R2,
        Self::Oss,
        Self::Other,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Cos => "cos",
            Self::Obs => "obs",
            Self::Gcs => "gcs",
            Self::Minio => "minio",
            Self::R2 => "r2",
            Self::Oss => "oss",
            Self::Other => "other",
        }
    }

    /// The endpoint host for `region` when none is configured, or a one-line error naming the
    /// flag to pass (R2, MinIO and "other" have no public endpoint we could guess).
    pub fn default_host(self, region: &str) -> Result<String, String> {
        let need_region = |what: &str| {
            if region.is_empty() {
                Err(format!(
                    "the {what} endpoint needs a region: pass the region flag"
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Aws => {
                need_region("AWS S3")?;
                // Regional hosts work for us-east-1 too; the legacy global host
                // `s3.amazonaws.com` would only add a redirect for other regions.
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                Ok(format!("s3.{region}.{suffix}"))
            }
            Self::Cos => {
                need_region("COS")?;
                Ok(format!("cos.{region}.myqcloud.com"))
            }
            Self::Obs => {
                need_region("OBS")?;
                Ok(format!("obs.{region}.myhuaweicloud.com"))
            }
            Self::Gcs => Ok("storage.googleapis.com".into()),
            Self::Oss => {
                need_region("OSS")?;
                let r = region.strip_prefix("oss-").unwrap_or(region);
                Ok(format!("s3.oss-{r}.aliyuncs.com"))
            }
            Self::R2 => Err(
                "provider r2 needs an explicit endpoint: pass --endpoint https://<ACCOUNT_ID>.r2.cloudflarestorage.com"
                    .into(),
            ),
            Self::Minio | Self::Other => Err(format!(
                "provider {} needs an explicit endpoint: pass --endpoint http(s)://HOST[:PORT]",
                self.as_str()
            )),
        }
    }

    /// Path-style addressing unless told otherwise: MinIO serves path style by default
    /// (virtual hosts need `MINIO_DOMAIN`); everyone else virtual-hosted.
    pub fn default_path_style(self) -> bool {
        matches!(self, Self::Minio)
    }

    /// The SigV4 scope region: R2 and GCS take `auto` when no region is configured.
    pub fn signing_region(self, region: &str) -> String {
        match self {
            Self::R2 | Self::Gcs if region.is_empty() => "auto".into(),
            Self::Minio | Self::Other if region.is_empty() => "us-east-1".into(),
            _ => region.to_string(),
        }
    }

    /// Part and object limits (§6, §10). R2 additionally requires every part but the last to
    /// have the same size; the planner cuts equal parts anyway, so this is not a field.
    pub fn limits(self) -> Limits {
        let min_part_size = match self {
            Self::Aws | Self::Minio | Self::R2 | Self::Gcs | Self::Other => 5 * MIB,
            Self::Cos => MIB,
            Self::Obs | Self::Oss => 100 * 1024,
        };
        Limits {
            min_part_size,
            max_part_size: 5 * GIB,
            max_parts: 10_000,
            max_single_put: 5 * GIB,
        }
    }

    /// Whether the provider ignores (or mishandles) `x-amz-checksum-*`, so the client must not
    /// send them nor believe their absence means anything.
    pub fn ignores_amz_checksums(self) -> bool {
        matches!(
            self,
            Self::Cos | Self::Obs | Self::Oss | Self::Gcs | Self::Other
        )
    }

    /// What the provider reports and verifies; `quirks` says the endpoint ignores
    /// `x-amz-checksum-*` whatever the provider normally does.
    pub fn checksum_caps(self, quirks: bool) -> ChecksumCaps {
        match self {
            Self::Aws | Self::Minio if !quirks => AWS_CAPS,
            Self::R2 if !quirks => R2_CAPS,
            Self::Cos => COS_CAPS,
            Self::Gcs => GCS_CAPS,
            _ => QUIRKS_CAPS,
        }
    }

    /// Whether part ETags are the hex MD5 of the part's bytes (GCS: they are not).
    pub fn part_etag_is_md5(self) -> bool {
        !matches!(self, Self::Gcs)
    }
}

/// AWS and MinIO: full-object CRC-64/NVME (`x-amz-checksum-crc64nvme`, verified on UploadPart,
/// PutObject and, as FULL_OBJECT, on Complete) and part ETags = MD5 (checked via Content-MD5).
pub const AWS_CAPS: ChecksumCaps = ChecksumCaps {
    reports: &[Algorithm::Crc64Nvme, Algorithm::Md5],
    verifies: &[Algorithm::Crc64Nvme, Algorithm::Md5],
};

/// R2: CRC-64/NVME FULL_OBJECT is its one full-object checksum. Part ETags are MD5 (the
/// multipart ETag is the MD5 of the part MD5s, §10), so they are reported; whether UploadPart
/// checks Content-MD5 is not documented, so MD5 is not claimed as verified.
pub const R2_CAPS: ChecksumCaps = ChecksumCaps {
    reports: &[Algorithm::Crc64Nvme, Algorithm::Md5],
    verifies: &[Algorithm::Crc64Nvme],
};

/// COS: `x-cos-hash-crc64ecma` (decimal CRC-64/XZ, the same CRC as OSS; the reference marks
/// the parameters UNCONFIRMED, a mismatch would fail the copy loudly, never pass silently) and
/// part ETags = MD5; it verifies Content-MD5.
pub const COS_CAPS: ChecksumCaps = ChecksumCaps {
    reports: &[Algorithm::Crc64Xz, Algorithm::Md5],
    verifies: &[Algorithm::Md5],
};

/// OBS, OSS in S3 mode, "other", or any endpoint flagged as ignoring `x-amz-checksum-*`: the
/// part ETag (MD5) and Content-MD5 are all that is left.
pub const QUIRKS_CAPS: ChecksumCaps = ChecksumCaps {
    reports: &[Algorithm::Md5],
    verifies: &[Algorithm::Md5],
};

/// GCS: part and multipart ETags are not MD5 and there is no CRC-64; it stores CRC-32C in
/// `x-goog-hash`, which we do not compute yet. Nothing is reported or verified: the copy is
/// proven by the source side only.
pub const GCS_CAPS: ChecksumCaps = ChecksumCaps {
    reports: &[],
    verifies: &[],
};

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == want)
            .ok_or_else(|| {
                format!(
                    "unknown S3 provider {s:?}: expected one of aws, cos, obs, gcs, minio, r2, oss, other"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_error_lists_values() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), p);
        }
        assert_eq!("AWS".parse::<Provider>().unwrap(), Provider::Aws);
        let e = "s4".parse::<Provider>().unwrap_err();
        assert!(
            e.contains("aws, cos, obs, gcs, minio, r2, oss, other"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn default_hosts() {
        let h = |p: Provider, r: &str| p.default_host(r).unwrap();
        assert_eq!(h(Provider::Aws, "eu-west-1"), "s3.eu-west-1.amazonaws.com");
        assert_eq!(
            h(Provider::Aws, "cn-north-1"),
            "s3.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            h(Provider::Cos, "ap-guangzhou"),
            "cos.ap-guangzhou.myqcloud.com"
        );
        assert_eq!(
            h(Provider::Obs, "cn-north-4"),
            "obs.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(h(Provider::Gcs, ""), "storage.googleapis.com");
        assert_eq!(
            h(Provider::Oss, "cn-hangzhou"),
            "s3.oss-cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            h(Provider::Oss, "oss-cn-hangzhou"),
            "s3.oss-cn-hangzhou.aliyuncs.com"
        );
        for p in [Provider::R2, Provider::Minio, Provider::Other] {
            let e = p.default_host("x").unwrap_err();
            assert!(e.contains("--endpoint"), "{e}");
        }
        assert!(Provider::Aws.default_host("").is_err());
    }

    #[test]
    fn limits_and_caps() {
        assert_eq!(Provider::Aws.limits().min_part_size, 5 * MIB);
        assert_eq!(Provider::Cos.limits().min_part_size, MIB);
        assert_eq!(Provider::Obs.limits().min_part_size, 100 * 1024);
        assert_eq!(Provider::Oss.limits().min_part_size, 100 * 1024);
        assert_eq!(Provider::R2.limits().max_parts, 10_000);
        assert!(Provider::Aws
            .checksum_caps(false)
            .verifies(Algorithm::Crc64Nvme));
        assert!(!Provider::Aws
            .checksum_caps(true)
            .verifies(Algorithm::Crc64Nvme));
        assert!(Provider::Aws.checksum_caps(true).verifies(Algorithm::Md5));
        assert!(Provider::Cos
            .checksum_caps(false)
            .reports(Algorithm::Crc64Xz));
        assert!(!Provider::Obs
            .checksum_caps(false)
            .reports(Algorithm::Crc64Nvme));
        assert!(Provider::Gcs.checksum_caps(false).reports.is_empty());
        assert_eq!(Provider::R2.signing_region(""), "auto");
        assert!(Provider::Minio.default_path_style());
    }
}
