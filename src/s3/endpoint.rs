//! Where an S3 request goes: scheme, host, port and virtual-hosted vs path-style addressing.
//!
//! Contract: [`S3Endpoint::locate`] gives the `Host` header and the path for a bucket and key;
//! the signer signs exactly these (S3's canonical URI is the path as sent, bucket included for
//! path style). Path style is used when forced, for IP and `localhost` endpoints (no DNS for
//! `bucket.127.0.0.1`), for bucket names with dots over HTTPS (they break the `*.s3…` TLS
//! wildcard) and by providers that default to it (MinIO); virtual-hosted otherwise.

use std::net::IpAddr;

use super::provider::Provider;
use crate::aws::sigv4::uri_encode;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// A resolved endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    pub scheme: Scheme,
    /// Host without port, e.g. `s3.eu-west-1.amazonaws.com`.
    pub host: String,
    pub port: Option<u16>,
    /// `Some` when forced by configuration.
    pub path_style: Option<bool>,
    pub provider: Provider,
}

/// Where one request for a bucket (and key) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The Host header (with a non-default port).
    pub host: String,
    /// Percent-encoded path, starting with `/`.
    pub path: String,
}

impl S3Endpoint {
    /// From an explicit `http(s)://host[:port]` (a bare host means HTTPS), or else the
    /// provider's default for `region`.
    pub fn resolve(
        endpoint: Option<&str>,
        region: &str,
        provider: Provider,
        path_style: Option<bool>,
    ) -> Result<S3Endpoint, String> {
        let (scheme, hostport) = match endpoint.map(str::trim).filter(|e| !e.is_empty()) {
            None => (Scheme::Https, provider.default_host(region)?),
            Some(e) => {
                let (scheme, rest) = if let Some(r) = e.strip_prefix("https://") {
                    (Scheme::Https, r)
                } else if let Some(r) = e.strip_prefix("http://") {
                    (Scheme::Http, r)
                } else if e.contains("://") {
                    return Err(format!(
                        "endpoint {e:?}: only http:// and https:// are supported"
                    ));
                } else {
                    (Scheme::Https, e)
                };
                let rest = rest.trim_end_matches('/');
                if rest.contains('/') || rest.contains('?') {
                    return Err(format!(
                        "endpoint {e:?}: give only scheme, host and port (no path); the bucket is a separate argument"
                    ));
                }
                (scheme, rest.to_string())
            }
        };
        let (host, port) = split_host_port(&hostport)
            .ok_or_else(|| format!("endpoint {hostport:?}: not a valid host[:port]"))?;
        if host.is_empty() {
            return Err("endpoint has an empty host".into());
        }
        if provider == Provider::Oss && path_style == Some(true) {
            return Err(
                "OSS in S3 mode accepts virtual-hosted addressing only: do not force path style"
                    .into(),
            );
        }
        Ok(S3Endpoint {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path_style,
            provider,
        })
    }

    /// Whether requests for `bucket` use path style (see the module doc).
    pub fn path_style_for(&self, bucket: &str) -> bool {
        if let Some(forced) = self.path_style {
            return forced;
        }
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok()
            || bare == "localhost"
            || (self.scheme == Scheme::Https && bucket.contains('.'))
            || self.provider.default_path_style()
    }

    /// `host[:port]` without a default port.
    pub fn authority(&self, host: &str) -> String {
        let default = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        match self.port {
            Some(p) if p != default => format!("{host}:{p}"),
            _ => host.to_string(),
        }
    }

    /// Host header and path for `bucket` (none: the service) and `key`.
    pub fn locate(&self, bucket: Option<&str>, key: Option<&str>) -> Located {
        let key_path = key.map(|k| uri_encode(k, false)).unwrap_or_default();
        match bucket {
            None => Located {
                host: self.authority(&self.host),
                path: "/".into(),
            },
            Some(b) if self.path_style_for(b) => Located {
                host: self.authority(&self.host),
                path: match key {
                    Some(_) => format!("/{b}/{key_path}"),
                    None => format!("/{b}"),
                },
            },
            Some(b) => Located {
                host: self.authority(&format!("{b}.{}", self.host)),
                path: format!("/{key_path}"),
            },
        }
    }
}

fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{h}]"), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((s.to_string(), None)),
    }
}

/// Checks a bucket name against the S3 rules that matter for addressing: 3–63 characters of
/// lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit. GCS
/// also allows `_` and, with dots, up to 222 characters; those buckets go path style over
/// HTTPS anyway (see [`S3Endpoint::path_style_for`]).
pub fn check_bucket_name(b: &str, provider: Provider) -> Result<(), String> {
    let gcs = provider == Provider::Gcs;
    let max = if gcs && b.contains('.') { 222 } else { 63 };
    let ok = (3..=max).contains(&b.len())
        && b.bytes().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == b'-'
                || c == b'.'
                || (gcs && c == b'_')
        })
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid bucket name {b:?}: 3-63 lower-case letters, digits, '-' and '.'{}, starting and ending with a letter or digit",
            if gcs { " (and '_' on GCS)" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(e: Option<&str>, region: &str, p: Provider, ps: Option<bool>) -> S3Endpoint {
        S3Endpoint::resolve(e, region, p, ps).unwrap()
    }

    #[test]
    fn aws_virtual_hosted_by_default() {
        let e = ep(None, "eu-west-1", Provider::Aws, None);
        let l = e.locate(Some("bkt"), Some("dir/disk 1.raw"));
        assert_eq!(l.host, "bkt.s3.eu-west-1.amazonaws.com");
        assert_eq!(l.path, "/dir/disk%201.raw");
        assert_eq!(e.scheme, Scheme::Https);
    }

    #[test]
    fn dotted_bucket_over_https_is_path_style() {
        let e = ep(None, "us-east-1", Provider::Aws, None);
        let l = e.locate(Some("my.bucket"), Some("k"));
        assert_eq!(l.host, "s3.us-east-1.amazonaws.com");
        assert_eq!(l.path, "/my.bucket/k");
        // Over plain HTTP the wildcard certificate does not matter.
        let e = ep(Some("http://s3.local:9000"), "x", Provider::Other, None);
        assert_eq!(
            e.locate(Some("my.bucket"), None).host,
            "my.bucket.s3.local:9000"
        );
    }

    #[test]
    fn ip_and_localhost_are_path_style() {
        for url in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            let e = ep(Some(url), "us-east-1", Provider::Other, None);
            let l = e.locate(Some("bkt"), Some("k"));
            assert_eq!(l.path, "/bkt/k", "{url}");
            assert!(l.host.ends_with(":9000"), "{url}");
        }
    }

    #[test]
    fn forced_styles_and_minio_default() {
        let e = ep(None, "eu-west-1", Provider::Aws, Some(true));
        assert_eq!(e.locate(Some("bkt"), Some("k")).path, "/bkt/k");
        let e = ep(Some("https://minio.example:443"), "", Provider::Minio, None);
        let l = e.locate(Some("bkt"), Some("k"));
        assert_eq!(
            (l.host.as_str(), l.path.as_str()),
            ("minio.example", "/bkt/k")
        );
        let e = ep(
            Some("https://minio.example"),
            "",
            Provider::Minio,
            Some(false),
        );
        assert_eq!(e.locate(Some("bkt"), None).host, "bkt.minio.example");
        assert!(S3Endpoint::resolve(None, "cn-hangzhou", Provider::Oss, Some(true)).is_err());
    }

    #[test]
    fn bad_endpoints() {
        for bad in ["ftp://x", "https://x/bucket", "https://x:port"] {
            assert!(
                S3Endpoint::resolve(Some(bad), "r", Provider::Other, None).is_err(),
                "{bad}"
            );
        }
        let e = ep(Some("s3.example.com"), "r", Provider::Other, None);
        assert_eq!(e.scheme, Scheme::Https);
    }

    #[test]
    fn bucket_names() {
        assert!(check_bucket_name("my.bucket-1", Provider::Aws).is_ok());
        for bad in ["ab", "Upper", "-x", "x-", "a_b", "a/b"] {
            assert!(check_bucket_name(bad, Provider::Aws).is_err(), "{bad}");
        }
        assert!(check_bucket_name("a_b", Provider::Gcs).is_ok());
        assert!(check_bucket_name("a/b", Provider::Gcs).is_err());
    }
}
