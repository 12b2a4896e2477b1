//! Turning what a user typed (`oss://bucket/key`, `s3://bucket/key` or a path, plus
//! region/endpoint/profile/provider) into a [`transfer::Location`] the engine can use.
//! Shared by the CLI and the daemon.
//!
//! An `s3://` side follows AWS's conventions throughout: credentials and region from
//! [`credentials::aws`] (env, `~/.aws` files, roles, instance role), the profile flag looked
//! up in the AWS files; an `oss://` side follows the aliyun CLI's.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::credentials::{self, CredentialsError};
use crate::oss::endpoint::{normalize_region, region_from_endpoint_host};
use crate::oss::{Endpoint, EndpointSpec, OssBucket, OssClient, OssConfig};
use crate::s3::{Provider, S3Bucket, S3Client, S3Config};
use crate::store::local::LocalFile;
use crate::transfer::Location;

/// Region used when neither a flag nor the profile names one.
pub const DEFAULT_REGION: &str = "cn-hangzhou";

/// Region of an `s3://` side on AWS when neither a flag, `AWS_REGION`, `AWS_DEFAULT_REGION`
/// nor the profile names one (the AWS CLI's default).
pub const DEFAULT_AWS_REGION: &str = "us-east-1";

/// A source or destination as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectUrl {
    /// `oss://BUCKET/KEY`; `key` may be empty or end in `/` (a "directory" destination).
    Oss { bucket: String, key: String },
    /// `s3://BUCKET/KEY` on AWS S3 or an S3-compatible store (see [`SideOptions::provider`]).
    S3 { bucket: String, key: String },
    /// A local file path.
    Local(PathBuf),
}

impl ObjectUrl {
    /// The limits of the store this URL names through `side`, known before any request
    /// (part-size flags are checked against the destination's).
    pub fn limits(&self, side: &SideOptions) -> Result<crate::store::Limits, String> {
        Ok(match self {
            Self::Oss { .. } => crate::oss::LIMITS,
            Self::S3 { .. } => provider(side)?.limits(),
            Self::Local(_) => crate::store::local::LIMITS,
        })
    }

    /// The object key (`""` for a local path, whose path is its name).
    pub fn key(&self) -> &str {
        match self {
            Self::Oss { key, .. } | Self::S3 { key, .. } => key,
            Self::Local(_) => "",
        }
    }

    /// The same bucket with another key; a local path becomes `key` as a path.
    pub fn with_key(&self, key: &str) -> Self {
        match self {
            Self::Oss { bucket, .. } => Self::Oss {
                bucket: bucket.clone(),
                key: key.to_string(),
            },
            Self::S3 { bucket, .. } => Self::S3 {
                bucket: bucket.clone(),
                key: key.to_string(),
            },
            Self::Local(_) => Self::Local(PathBuf::from(key)),
        }
    }

    /// The key, or the path of a local file: the name an archive's extension is read from.
    pub fn name(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            other => other.key().to_string(),
        }
    }
}

/// The S3 provider a side names (`aws` when none).
pub fn provider(side: &SideOptions) -> Result<Provider, String> {
    side.provider
        .as_deref()
        .map_or(Ok(Provider::Aws), str::parse)
}

/// Why a location could not be understood or reached.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("cannot set up the {what} client: {reason}")]
    Client { what: String, reason: String },
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Oss { bucket, key } => write!(f, "oss://{bucket}/{key}"),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
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
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            // The most permissive provider's rules here; the side's own when it is resolved.
            crate::s3::endpoint::check_bucket_name(bucket, Provider::Gcs)?;
            if key.len() > 1024 {
                return Err(format!(
                    "object key in {s:?} is {} bytes long; S3 allows at most 1024",
                    key.len()
                ));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "unsupported scheme {scheme:?} in {s:?}: use oss://BUCKET/KEY, s3://BUCKET/KEY or a local file path"
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
    /// aliyun CLI profile name for oss://, AWS profile name for s3:// (default: the
    /// credential chain).
    pub profile: Option<String>,
    /// S3 provider preset for s3:// (`aws`, `cos`, ...; default `aws`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Force path-style addressing for s3://.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub path_style: bool,
    /// AWS STS endpoint for role credentials of an s3:// side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
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

/// The region an `s3://` side signs for: the flag, `AWS_REGION`, `AWS_DEFAULT_REGION`, the
/// AWS profile's `region`, else us-east-1 on AWS (other providers: empty, their default).
fn s3_region(side: &SideOptions, provider: Provider, env: &credentials::EnvLookup) -> String {
    credentials::aws::region(side.region.as_deref(), side.profile.as_deref(), env).unwrap_or_else(
        || match provider {
            Provider::Aws => DEFAULT_AWS_REGION.to_string(),
            _ => String::new(),
        },
    )
}

/// Builds an S3 client for one `s3://` side: AWS credentials (the profile flag looked up in
/// `~/.aws`), the provider's endpoint for the region unless one is given.
pub fn s3_client(side: &SideOptions) -> Result<S3Client, LocateError> {
    let env = credentials::EnvLookup::process();
    let provider = provider(side).map_err(LocateError::Invalid)?;
    let region = s3_region(side, provider, &env);
    let creds = credentials::aws::resolve(
        side.profile.as_deref(),
        &credentials::aws::AwsCredentialOptions {
            sts_endpoint: side.sts_endpoint.clone(),
            region: Some(region.clone()).filter(|r| !r.is_empty()),
            ..Default::default()
        },
        &env,
    )?;
    let mut cfg = S3Config::new(provider, region, side.endpoint.clone(), creds);
    if side.path_style {
        cfg.path_style = Some(true);
    }
    if let Some(flag) = side.region_flag {
        cfg.region_flag = flag.to_string();
    }
    if let Some(t) = side.read_timeout {
        cfg.read_timeout = t;
    }
    S3Client::new(cfg).map_err(|e| {
        // The provider's hint names a generic `--endpoint`; say this side's own setting
        // (`--src-endpoint`, `dst_endpoint` in a daemon job, `--endpoint` for `uploads`).
        let mut reason = e.to_string();
        if let Some(flag) = side.region_flag {
            reason = reason.replace(
                "pass --endpoint",
                &format!("pass {}", flag.replace("region", "endpoint")),
            );
        }
        LocateError::Client {
            what: "S3".into(),
            reason,
        }
    })
}

/// The S3 bucket a URL names.
pub fn s3_bucket(bucket: &str, side: &SideOptions) -> Result<S3Bucket, LocateError> {
    Ok(s3_client(side)?.bucket(bucket))
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
    let object_key = |key: &str, scheme: &str| -> Result<String, LocateError> {
        let mut key = key.to_string();
        if key.is_empty() || key.ends_with('/') {
            match dst_name_from {
                Some(name) if !name.is_empty() => key.push_str(name),
                _ => {
                    return Err(LocateError::Invalid(format!(
                        "{url} does not name an object: give {scheme}://BUCKET/KEY"
                    )))
                }
            }
        }
        Ok(key)
    };
    match url {
        ObjectUrl::Oss { bucket, key } => {
            let key = object_key(key, "oss")?;
            let store = oss_bucket(bucket, side)?;
            Ok(Location {
                store: Arc::new(store),
                key,
            })
        }
        ObjectUrl::S3 { bucket, key } => {
            let key = object_key(key, "s3")?;
            let provider = provider(side).map_err(LocateError::Invalid)?;
            crate::s3::endpoint::check_bucket_name(bucket, provider)
                .map_err(LocateError::Invalid)?;
            let store = s3_bucket(bucket, side)?;
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

/// The storage service one side of a transfer reaches, reduced to what decides which objects
/// it holds: two sides with equal `Service`s see the same buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Service {
    /// An Alibaba Cloud OSS region: its public and `-internal` endpoints, over HTTP or HTTPS,
    /// on any port, serve the same buckets.
    Alibaba { region: String },
    /// Any other endpoint (a simulator, a proxy, a private deployment): scheme, host, port
    /// (the scheme's default when the URL has none) and the region requests are signed for.
    Other {
        scheme: &'static str,
        /// Lowercase, without a trailing `.`; every name of this machine's loopback
        /// interface (`localhost`, `127.0.0.1`, `[::1]`, ...) is spelled `loopback`.
        host: String,
        port: u16,
        region: String,
    },
}

/// Which object a resolved URL names, in a form where two spellings of one object compare
/// equal (see [`same_object`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectId {
    Oss {
        service: Service,
        bucket: String,
        key: String,
    },
    /// An S3 object: the endpoint (scheme, host, port) as resolved for the provider and
    /// region, the bucket and the key.
    S3 {
        endpoint: String,
        bucket: String,
        key: String,
    },
    /// A local file: its canonical path when it exists, else the path as given.
    Local(PathBuf),
}

/// The region a side signs for: the flag, else the profile's `region_id`, else the default,
/// exactly as [`oss_client`] picks it; normalised (`oss-` prefix and case dropped).
fn effective_region(
    side: &SideOptions,
    env: &credentials::EnvLookup,
) -> Result<String, LocateError> {
    let region = side
        .region
        .clone()
        .or_else(|| credentials::profile::profile_region(side.profile.as_deref(), env))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    normalize_region(&region.to_ascii_lowercase()).map_err(|e| LocateError::Invalid(e.to_string()))
}

/// The service a side reaches (no credentials are resolved, nothing is sent).
pub fn service(side: &SideOptions) -> Result<Service, LocateError> {
    service_in(side, &credentials::EnvLookup::process())
}

/// [`service`] with an explicit environment (where the profile file is found).
fn service_in(side: &SideOptions, env: &credentials::EnvLookup) -> Result<Service, LocateError> {
    let region = effective_region(side, env)?;
    let spec = match &side.endpoint {
        Some(url) => EndpointSpec::Url(url.clone()),
        None => EndpointSpec::Region {
            region: region.clone(),
            internal: side.internal,
        },
    };
    let ep = Endpoint::resolve(&spec, false).map_err(|e| LocateError::Invalid(e.to_string()))?;
    let host = ep.host.trim_end_matches('.').to_ascii_lowercase();
    if let Some(region) = region_from_endpoint_host(&host) {
        return Ok(Service::Alibaba { region });
    }
    Ok(Service::Other {
        scheme: ep.scheme.as_str(),
        host: canonical_host(host),
        port: ep.port.unwrap_or_else(|| ep.scheme.default_port()),
        region,
    })
}

/// A host lowercased, every name of this machine's loopback interface spelled `loopback`.
fn canonical_host(host: String) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost"
        || match bare.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => v4.is_loopback(),
            Ok(std::net::IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        };
    if loopback {
        "loopback".into()
    } else {
        host
    }
}

/// The identity of the object `url` names through `side`. `url` must name an object (a
/// destination ending in `/` gets its file name filled in by the caller first).
pub fn object_id(url: &ObjectUrl, side: &SideOptions) -> Result<ObjectId, LocateError> {
    match url {
        ObjectUrl::Oss { bucket, key } => Ok(ObjectId::Oss {
            service: service(side)?,
            bucket: bucket.clone(),
            key: key.clone(),
        }),
        ObjectUrl::S3 { bucket, key } => {
            let env = credentials::EnvLookup::process();
            let provider = provider(side).map_err(LocateError::Invalid)?;
            let region = s3_region(side, provider, &env);
            let ep = crate::s3::endpoint::S3Endpoint::resolve(
                side.endpoint.as_deref(),
                &region,
                provider,
                side.path_style.then_some(true),
            )
            .map_err(LocateError::Invalid)?;
            Ok(ObjectId::S3 {
                endpoint: format!(
                    "{}://{}",
                    ep.scheme.as_str(),
                    ep.authority(&canonical_host(ep.host.clone()))
                ),
                bucket: bucket.clone(),
                key: key.clone(),
            })
        }
        ObjectUrl::Local(p) => Ok(ObjectId::Local(
            std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        )),
    }
}

/// Whether `a` (reached through `a_side`) and `b` (through `b_side`) are the same object,
/// however their endpoints are spelled: a trailing `/`, the case of scheme and host, an
/// explicit default port, `localhost` for `127.0.0.1`, an explicit region equal to the
/// profile's or the default one, the internal endpoint for the public one. The CLI's
/// same-object guard and the daemon's conflict check both ask this, so they cannot disagree.
///
/// Loopback names count as one host even though a server may listen on only one of them: a
/// false match is a refusal the user can read, a missed one let two writers overwrite each
/// other's object. A side that cannot be resolved reaches no object, so it matches nothing.
pub fn same_object(
    a: &ObjectUrl,
    a_side: &SideOptions,
    b: &ObjectUrl,
    b_side: &SideOptions,
) -> bool {
    match (object_id(a, a_side), object_id(b, b_side)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The last path segment of a location (for naming a destination after its source).
pub fn base_name(url: &ObjectUrl) -> Option<String> {
    match url {
        ObjectUrl::Oss { key, .. } | ObjectUrl::S3 { key, .. } => key
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
            ("gs://b/k", "unsupported scheme"),
            ("s3://b/k", "invalid bucket name"),
            ("s3://Bad.Bucket/k", "invalid bucket name"),
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
        let long = format!("s3://abc/{}", "k".repeat(1025));
        assert!(long.parse::<ObjectUrl>().unwrap_err().contains("1024"));
    }

    #[test]
    fn parses_s3_urls() {
        let u: ObjectUrl = "s3://my.bucket-1/dir/disk.raw".parse().unwrap();
        assert_eq!(
            u,
            ObjectUrl::S3 {
                bucket: "my.bucket-1".into(),
                key: "dir/disk.raw".into()
            }
        );
        assert_eq!(u.to_string(), "s3://my.bucket-1/dir/disk.raw");
        assert_eq!(base_name(&u).as_deref(), Some("disk.raw"));
        assert_eq!(
            u.with_key("x"),
            ObjectUrl::S3 {
                bucket: "my.bucket-1".into(),
                key: "x".into()
            }
        );
        let side = SideOptions {
            provider: Some("cos".into()),
            ..SideOptions::default()
        };
        assert_eq!(u.limits(&side).unwrap().min_part_size, 1024 * 1024);
        assert_eq!(
            u.limits(&SideOptions::default()).unwrap().min_part_size,
            5 * 1024 * 1024
        );
        let bad = SideOptions {
            provider: Some("azure".into()),
            ..SideOptions::default()
        };
        assert!(u.limits(&bad).unwrap_err().contains("aws"));
    }

    #[test]
    fn the_same_s3_object_through_two_spellings_of_its_endpoint() {
        let a: ObjectUrl = "s3://bkt/k".parse().unwrap();
        let side = |ep: &str| SideOptions {
            endpoint: Some(ep.into()),
            region: Some("us-east-1".into()),
            ..SideOptions::default()
        };
        assert!(same_object(
            &a,
            &side("http://127.0.0.1:9000"),
            &a,
            &side("http://localhost:9000/")
        ));
        assert!(!same_object(
            &a,
            &side("http://127.0.0.1:9000"),
            &a,
            &side("http://127.0.0.1:9001")
        ));
        // An oss:// and an s3:// URL never name the same object.
        let o: ObjectUrl = "oss://bkt/k".parse().unwrap();
        assert!(!same_object(
            &a,
            &side("http://127.0.0.1:9000"),
            &o,
            &side("http://127.0.0.1:9000")
        ));
    }

    #[test]
    fn base_names() {
        let u: ObjectUrl = "oss://abc/x/y.raw.tar.gz".parse().unwrap();
        assert_eq!(base_name(&u).as_deref(), Some("y.raw.tar.gz"));
        let u: ObjectUrl = "oss://abc/x/".parse().unwrap();
        assert_eq!(base_name(&u), None);
    }

    fn side(endpoint: Option<&str>, region: Option<&str>) -> SideOptions {
        SideOptions {
            endpoint: endpoint.map(str::to_string),
            region: region.map(str::to_string),
            ..SideOptions::default()
        }
    }

    fn no_profiles() -> credentials::EnvLookup {
        credentials::EnvLookup::from_map([("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")])
    }

    #[test]
    fn spellings_of_one_endpoint_are_one_service() {
        let env = no_profiles();
        let key = |e: Option<&str>, r: Option<&str>| service_in(&side(e, r), &env).unwrap();
        let sim = key(Some("http://127.0.0.1:40123"), Some("eu-central-1"));
        for same in [
            "http://127.0.0.1:40123/",
            "http://localhost:40123",
            "HTTP://LOCALHOST:40123/",
            "http://[::1]:40123",
            "http://localhost.:40123",
        ] {
            assert_eq!(key(Some(same), Some("eu-central-1")), sim, "{same}");
        }
        assert_eq!(
            key(Some("http://127.0.0.1:40123"), Some("OSS-EU-CENTRAL-1")),
            sim
        );
        for other in [
            "http://127.0.0.1:40124",
            "https://127.0.0.1:40123",
            "http://10.0.0.1:40123",
        ] {
            assert_ne!(key(Some(other), Some("eu-central-1")), sim, "{other}");
        }
        assert_ne!(
            key(Some("http://127.0.0.1:40123"), Some("cn-hangzhou")),
            sim
        );
        // The scheme's default port.
        assert_eq!(
            key(Some("http://127.0.0.1"), None),
            key(Some("http://localhost:80/"), None)
        );
        assert_eq!(
            key(Some("https://oss.example.com"), None),
            key(Some("https://OSS.example.com:443"), None)
        );
        // An explicit default region is the default region.
        assert_eq!(
            key(Some("http://127.0.0.1:9"), None),
            key(Some("http://127.0.0.1:9"), Some(DEFAULT_REGION))
        );
        // Alibaba Cloud: a region's public and internal endpoints, however reached.
        let hz = key(None, Some("cn-hangzhou"));
        assert_eq!(
            hz,
            Service::Alibaba {
                region: "cn-hangzhou".into()
            }
        );
        assert_eq!(key(None, None), hz);
        for same in [
            "https://oss-cn-hangzhou.aliyuncs.com/",
            "oss-cn-hangzhou.aliyuncs.com",
            "http://OSS-CN-HANGZHOU.aliyuncs.com:80",
            "https://oss-cn-hangzhou-internal.aliyuncs.com",
        ] {
            assert_eq!(key(Some(same), None), hz, "{same}");
        }
        let internal = SideOptions {
            internal: true,
            ..side(None, Some("oss-cn-hangzhou"))
        };
        assert_eq!(service_in(&internal, &env).unwrap(), hz);
        assert_ne!(key(None, Some("cn-beijing")), hz);
        assert!(service_in(&side(Some("ftp://x"), None), &env).is_err());
    }

    #[test]
    fn the_profiles_region_counts_when_no_region_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"current":"a","profiles":[{"name":"a","mode":"AK","access_key_id":"x",
               "access_key_secret":"y","region_id":"eu-central-1"}]}"#,
        )
        .unwrap();
        let env = credentials::EnvLookup::from_map([(
            "ALIBABA_CLOUD_CONFIG_FILE",
            path.to_str().unwrap(),
        )]);
        let ep = Some("http://127.0.0.1:9");
        let by_profile = SideOptions {
            profile: Some("a".into()),
            ..side(ep, None)
        };
        assert_eq!(
            service_in(&by_profile, &env).unwrap(),
            service_in(&side(ep, Some("eu-central-1")), &env).unwrap()
        );
        assert_eq!(
            service_in(&side(ep, None), &env).unwrap(),
            service_in(&side(ep, Some("eu-central-1")), &env).unwrap(),
            "the current profile's region"
        );
    }

    #[test]
    fn same_object_needs_the_same_bucket_and_key() {
        let u = |s: &str| s.parse::<ObjectUrl>().unwrap();
        let a = side(Some("http://127.0.0.1:9"), Some("cn-hangzhou"));
        let b = side(Some("http://localhost:9/"), Some("cn-hangzhou"));
        assert!(same_object(
            &u("oss://bkt/x.raw"),
            &a,
            &u("oss://bkt/x.raw"),
            &b
        ));
        assert!(!same_object(
            &u("oss://bkt/x.raw"),
            &a,
            &u("oss://bkt/X.raw"),
            &b
        ));
        assert!(!same_object(
            &u("oss://bkt/x.raw"),
            &a,
            &u("oss://other/x.raw"),
            &b
        ));
        let bad = side(Some("ftp://x"), None);
        assert!(!same_object(
            &u("oss://bkt/x.raw"),
            &bad,
            &u("oss://bkt/x.raw"),
            &bad
        ));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.raw");
        std::fs::write(&f, b"x").unwrap();
        let dotted = ObjectUrl::Local(dir.path().join(".").join("f.raw"));
        let none = SideOptions::default();
        assert!(same_object(
            &ObjectUrl::Local(f.clone()),
            &none,
            &dotted,
            &none
        ));
    }
}
