//! Turning what a user typed (`oss://bucket/key` or a path, plus region/endpoint/profile)
//! into a [`transfer::Location`] the engine can use. Shared by the CLI and the daemon.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::credentials::{self, CredentialsError};
use crate::oss::{EndpointSpec, OssBucket, OssClient, OssConfig};
use crate::store::local::LocalFile;
use crate::transfer::Location;

/// Region used when neither a flag nor the profile names one.
pub const DEFAULT_REGION: &str = "cn-hangzhou";

/// A source or destination as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectUrl {
    /// `oss://BUCKET/KEY`; `key` may be empty or end in `/` (a "directory" destination).
    Oss { bucket: String, key: String },
    /// A local file path.
    Local(PathBuf),
}

/// Why a location could not be understood or reached.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot set up the OSS client for {what}: {reason}")]
    Client { what: String, reason: String },
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Oss { bucket, key } => write!(f, "oss://{bucket}/{key}"),
            Self::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Checks OSS bucket naming rules: 3–63 characters of `a-z`, `0-9` and `-`, not starting or
/// ending with `-`.
pub fn validate_bucket_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(3..=63).contains(&name.len()) || !ok_chars || name.starts_with('-') || name.ends_with('-')
    {
        return Err(format!(
            "invalid bucket name {name:?}: OSS bucket names have 3-63 characters of a-z, 0-9 and '-', and do not start or end with '-'"
        ));
    }
    Ok(())
}

impl FromStr for ObjectUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("empty location: give oss://BUCKET/KEY or a file path".into());
        }
        if let Some(rest) = s.strip_prefix("oss://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket_name(bucket)?;
            if key.starts_with('/') || key.starts_with('\\') {
                return Err(format!(
                    "invalid object key in {s:?}: OSS keys must not start with '/' or '\\'"
                ));
            }
            if key.len() > 1023 {
                return Err(format!(
                    "object key in {s:?} is {} bytes long; OSS allows at most 1023",
                    key.len()
                ));
            }
            return Ok(Self::Oss {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "unsupported scheme {scheme:?} in {s:?}: use oss://BUCKET/KEY or a local file path"
            ));
        }
        Ok(Self::Local(PathBuf::from(s)))
    }
}

/// How to reach one side of a transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SideOptions {
    /// Region id such as `cn-hangzhou` (default: the profile's `region_id`, else cn-hangzhou).
    pub region: Option<String>,
    /// Explicit endpoint URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Use the region's `-internal` endpoint.
    pub internal: bool,
    /// aliyun CLI profile name (default: the credential chain).
    pub profile: Option<String>,
    /// The flag that sets `region`, named in wrong-region hints (`--src-region`, ...).
    #[serde(skip)]
    pub region_flag: Option<&'static str>,
    /// Longest wait for response headers and longest silence inside a body (default 60 s).
    #[serde(skip)]
    pub read_timeout: Option<std::time::Duration>,
}

/// Builds an OSS client for one side: credentials from the profile or chain, region from the
/// flag, else the profile, else the default.
pub fn oss_client(side: &SideOptions) -> Result<OssClient, LocateError> {
    let (creds, profile_region) = credentials::resolve(side.profile.as_deref())?;
    oss_client_with(side, creds, profile_region)
}

/// [`oss_client`] with credentials the caller already resolved (so one provider, and one
/// credential cache, serves OSS and the RPC products of the same side).
pub fn oss_client_with(
    side: &SideOptions,
    creds: Arc<dyn credentials::CredentialsProvider>,
    profile_region: Option<String>,
) -> Result<OssClient, LocateError> {
    let region = side
        .region
        .clone()
        .or(profile_region)
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let endpoint = match &side.endpoint {
        Some(url) => EndpointSpec::Url(url.clone()),
        None => EndpointSpec::Region {
            region: region.clone(),
            internal: side.internal,
        },
    };
    let mut cfg = OssConfig::new(endpoint, region, creds);
    if let Some(flag) = side.region_flag {
        cfg.region_flag = flag.to_string();
    }
    if let Some(t) = side.read_timeout {
        cfg.read_timeout = t;
    }
    OssClient::new(cfg).map_err(|e| LocateError::Client {
        what: "OSS".into(),
        reason: e.to_string(),
    })
}

/// The OSS bucket a URL names.
pub fn oss_bucket(bucket: &str, side: &SideOptions) -> Result<OssBucket, LocateError> {
    Ok(oss_client(side)?.bucket(bucket))
}

/// Resolves a URL into an engine location. `dst_name_from` fills in a destination key that
/// ends in `/` (or is empty) with that file name, the way `cp src dir/` does.
pub fn resolve(
    url: &ObjectUrl,
    side: &SideOptions,
    dst_name_from: Option<&str>,
) -> Result<Location, LocateError> {
    match url {
        ObjectUrl::Oss { bucket, key } => {
            let mut key = key.clone();
            if key.is_empty() || key.ends_with('/') {
                match dst_name_from {
                    Some(name) if !name.is_empty() => key.push_str(name),
                    _ => {
                        return Err(LocateError::Invalid(format!(
                            "{url} does not name an object: give oss://BUCKET/KEY"
                        )))
                    }
                }
            }
            let store = oss_bucket(bucket, side)?;
            Ok(Location {
                store: Arc::new(store),
                key,
            })
        }
        ObjectUrl::Local(path) => {
            let mut path = path.clone();
            if let Some(name) = dst_name_from {
                if path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/') {
                    path.push(name);
                }
            }
            let key = path.display().to_string();
            Ok(Location {
                store: Arc::new(LocalFile::new(path)),
                key,
            })
        }
    }
}

/// The last path segment of a location (for naming a destination after its source).
pub fn base_name(url: &ObjectUrl) -> Option<String> {
    match url {
        ObjectUrl::Oss { key, .. } => key
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        ObjectUrl::Local(p) => p.file_name().map(|s| s.to_string_lossy().into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oss_urls_and_paths() {
        assert_eq!(
            "oss://my-bucket/dir/disk.raw".parse::<ObjectUrl>().unwrap(),
            ObjectUrl::Oss {
                bucket: "my-bucket".into(),
                key: "dir/disk.raw".into()
            }
        );
        assert_eq!(
            "oss://my-bucket".parse::<ObjectUrl>().unwrap(),
            ObjectUrl::Oss {
                bucket: "my-bucket".into(),
                key: "".into()
            }
        );
        assert_eq!(
            "./disk.raw".parse::<ObjectUrl>().unwrap(),
            ObjectUrl::Local("./disk.raw".into())
        );
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (input, needle) in [
            ("s3://b/k", "unsupported scheme"),
            ("oss://Bad_Bucket/k", "invalid bucket name"),
            ("oss://ab/k", "invalid bucket name"),
            ("oss://-abc/k", "invalid bucket name"),
            ("oss://abc//k", "must not start with '/'"),
            ("", "empty location"),
        ] {
            let err = input.parse::<ObjectUrl>().unwrap_err();
            assert!(err.contains(needle), "{input}: {err}");
        }
        let long = format!("oss://abc/{}", "k".repeat(1024));
        assert!(long.parse::<ObjectUrl>().unwrap_err().contains("1023"));
    }

    #[test]
    fn base_names() {
        let u: ObjectUrl = "oss://abc/x/y.raw.tar.gz".parse().unwrap();
        assert_eq!(base_name(&u).as_deref(), Some("y.raw.tar.gz"));
        let u: ObjectUrl = "oss://abc/x/".parse().unwrap();
        assert_eq!(base_name(&u), None);
    }
}
