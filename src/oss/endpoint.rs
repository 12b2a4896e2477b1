//! Endpoints and addressing: which host a request goes to and what its path looks like.

use std::net::IpAddr;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::OssError;

/// Where the OSS service is: a region (public or internal endpoint) or an explicit URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// `oss-<region>.aliyuncs.com`, or `oss-<region>-internal.aliyuncs.com` when `internal`.
    Region { region: String, internal: bool },
    /// An explicit endpoint such as `https://oss-cn-hangzhou.aliyuncs.com` or
    /// `http://127.0.0.1:9000`; without a scheme, https is assumed.
    Url(String),
}

/// URL scheme of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (simulators, tests).
    Http,
    /// HTTPS with certificate verification (the default).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL without one reaches (80 or 443).
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A resolved endpoint: scheme, bare host (no bucket), optional port and addressing style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Bare endpoint host, e.g. `oss-cn-hangzhou.aliyuncs.com` or `127.0.0.1`
    /// (IPv6 literals keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    /// `https://host/bucket/key` instead of `https://bucket.host/key`.
    pub path_style: bool,
}

/// Bytes kept literally in an object key in the request path: RFC 3986 unreserved plus `/`.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Bytes kept literally in query names and values: RFC 3986 unreserved only.
pub(crate) const QUERY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes an object key for the request path, keeping `/`.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_SET).to_string()
}

/// Percent-encodes a query name or value (everything but unreserved bytes).
pub fn encode_query_component(s: &str) -> String {
    utf8_percent_encode(s, QUERY_SET).to_string()
}

/// Normalises a region id: accepts `cn-hangzhou` and the OSS form `oss-cn-hangzhou`.
pub fn normalize_region(region: &str) -> Result<String, OssError> {
    let r = region.trim();
    let r = r.strip_prefix("oss-").unwrap_or(r);
    if r.is_empty()
        || !r
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(OssError::config(format!(
            "invalid region {region:?}: expected an id such as cn-hangzhou"
        )));
    }
    Ok(r.to_string())
}

/// The region named by a public or internal endpoint host such as
/// `oss-cn-beijing.aliyuncs.com` (used to turn wrong-region errors into advice).
pub fn region_from_endpoint_host(host: &str) -> Option<String> {
    let h = host.trim().trim_end_matches('.');
    let h = h.split("://").last().unwrap_or(h);
    let h = h.split(['/', ':']).next().unwrap_or(h);
    let rest = h.strip_suffix(".aliyuncs.com")?;
    let rest = rest.strip_prefix("oss-")?;
    let rest = rest.strip_suffix("-internal").unwrap_or(rest);
    if rest.is_empty() || rest.starts_with("accelerate") {
        return None;
    }
    Some(rest.to_string())
}

impl Endpoint {
    /// Resolves a spec; path style is used for IP literals and `localhost`, or when forced.
    pub fn resolve(spec: &EndpointSpec, force_path_style: bool) -> Result<Endpoint, OssError> {
        let (scheme, host, port) = match spec {
            EndpointSpec::Region { region, internal } => {
                let r = normalize_region(region)?;
                let host = if *internal {
                    format!("oss-{r}-internal.aliyuncs.com")
                } else {
                    format!("oss-{r}.aliyuncs.com")
                };
                (Scheme::Https, host, None)
            }
            EndpointSpec::Url(url) => parse_url(url)?,
        };
        let path_style = force_path_style || host_needs_path_style(&host);
        Ok(Endpoint {
            scheme,
            host,
            port,
            path_style,
        })
    }

    /// `host[:port]` of the bare endpoint.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) if p != self.scheme.default_port() => format!("{}:{p}", self.host),
            _ => self.host.clone(),
        }
    }

    /// The `Host` header value for a request on `bucket` (none for service-level calls).
    pub fn host_header(&self, bucket: Option<&str>) -> String {
        match bucket {
            Some(b) if !self.path_style => format!("{b}.{}", self.authority()),
            _ => self.authority(),
        }
    }

    /// The request path (no query) for `bucket` / `key`.
    pub fn path(&self, bucket: Option<&str>, key: Option<&str>) -> String {
        let key = key.map(encode_key).unwrap_or_default();
        match bucket {
            Some(b) if self.path_style => format!("/{b}/{key}"),
            _ => format!("/{key}"),
        }
    }

    /// Path plus encoded query, as it goes on the request line.
    pub fn path_and_query(
        &self,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(String, String)],
    ) -> String {
        let mut s = self.path(bucket, key);
        for (i, (k, v)) in query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(&encode_query_component(k));
            if !v.is_empty() {
                s.push('=');
                s.push_str(&encode_query_component(v));
            }
        }
        s
    }

    /// The full URL of a request.
    pub fn url(
        &self,
        bucket: Option<&str>,
        key: Option<&str>,
        query: &[(String, String)],
    ) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.host_header(bucket),
            self.path_and_query(bucket, key, query)
        )
    }
}

fn host_needs_path_style(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost")
}

fn parse_url(url: &str) -> Result<(Scheme, String, Option<u16>), OssError> {
    let bad = |why: &str| {
        OssError::config(format!(
            "invalid endpoint {url:?}: {why} (expected e.g. https://oss-cn-hangzhou.aliyuncs.com)"
        ))
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) => {
            let scheme = match s.to_ascii_lowercase().as_str() {
                "https" => Scheme::Https,
                "http" => Scheme::Http,
                _ => return Err(bad("scheme must be http or https")),
            };
            (scheme, rest)
        }
        None => (Scheme::Https, url),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad("only scheme, host and port are allowed"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad("bad port"))?),
            None if after.is_empty() => None,
            None => return Err(bad("garbage after IPv6 address")),
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                Some(p.parse::<u16>().map_err(|_| bad("bad port"))?),
            ),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    // Caught here, a typo names the flag; caught by the HTTP stack, it was "invalid uri
    // character" on the first request, after credentials were already resolved.
    let plain = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ok = match plain {
        Some(v6) => v6
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.'),
        None => host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'),
    };
    if !ok {
        return Err(bad(
            "the host may hold only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok((scheme, host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(r: &str, internal: bool) -> Endpoint {
        Endpoint::resolve(
            &EndpointSpec::Region {
                region: r.into(),
                internal,
            },
            false,
        )
        .unwrap()
    }

    #[test]
    fn region_endpoints_are_virtual_hosted_https() {
        let e = region("cn-hangzhou", false);
        assert_eq!(e.host, "oss-cn-hangzhou.aliyuncs.com");
        assert_eq!(e.scheme, Scheme::Https);
        assert!(!e.path_style);
        assert_eq!(
            e.url(Some("examplebucket"), Some("a/b.txt"), &[]),
            "https://examplebucket.oss-cn-hangzhou.aliyuncs.com/a/b.txt"
        );
        let i = region("oss-cn-beijing", true);
        assert_eq!(i.host, "oss-cn-beijing-internal.aliyuncs.com");
        assert_eq!(
            i.host_header(Some("b")),
            "b.oss-cn-beijing-internal.aliyuncs.com"
        );
        assert!(Endpoint::resolve(
            &EndpointSpec::Region {
                region: "CN HZ".into(),
                internal: false
            },
            false
        )
        .is_err());
    }

    #[test]
    fn ip_and_localhost_use_path_style() {
        for url in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
        ] {
            let e = Endpoint::resolve(&EndpointSpec::Url(url.into()), false).unwrap();
            assert!(e.path_style, "{url}");
            assert_eq!(e.scheme, Scheme::Http);
            assert_eq!(e.port, Some(9000));
            assert_eq!(e.path(Some("bkt"), Some("k 1")), "/bkt/k%201");
            assert_eq!(e.path(Some("bkt"), None), "/bkt/");
            assert!(e.host_header(Some("bkt")).ends_with(":9000"));
            assert!(!e.host_header(Some("bkt")).starts_with("bkt."));
        }
        let e = Endpoint::resolve(
            &EndpointSpec::Url("https://oss.example.com:8443/".into()),
            false,
        )
        .unwrap();
        assert!(!e.path_style);
        assert_eq!(e.host_header(Some("bkt")), "bkt.oss.example.com:8443");
        assert_eq!(e.path(Some("bkt"), Some("x")), "/x");
        let forced = Endpoint::resolve(&EndpointSpec::Url("oss.example.com".into()), true).unwrap();
        assert_eq!(forced.scheme, Scheme::Https);
        assert!(forced.path_style);
        assert_eq!(forced.host_header(Some("bkt")), "oss.example.com");
        // default port is not repeated in Host
        let d =
            Endpoint::resolve(&EndpointSpec::Url("https://h.example:443".into()), false).unwrap();
        assert_eq!(d.authority(), "h.example");
    }

    #[test]
    fn bad_urls_are_rejected() {
        for url in [
            "ftp://x",
            "not a url",
            "http://ex ample.com",
            "http://[::1",
            "https://",
            "https://h/path",
            "https://h:99999",
            "https://u@h",
        ] {
            assert!(
                Endpoint::resolve(&EndpointSpec::Url(url.into()), false).is_err(),
                "{url}"
            );
        }
    }

    #[test]
    fn keys_are_percent_encoded_keeping_slash() {
        assert_eq!(
            encode_key("目录/文件 1+2.txt"),
            "%E7%9B%AE%E5%BD%95/%E6%96%87%E4%BB%B6%201%2B2.txt"
        );
        assert_eq!(encode_key("a/b~c_d-e.f"), "a/b~c_d-e.f");
        assert_eq!(encode_key("q?x#y%z"), "q%3Fx%23y%25z");
        let e = region("cn-hangzhou", false);
        assert_eq!(
            e.path_and_query(
                Some("b"),
                Some("big/file.bin"),
                &[
                    ("partNumber".into(), "3".into()),
                    ("uploadId".into(), "ID".into())
                ]
            ),
            "/big/file.bin?partNumber=3&uploadId=ID"
        );
        assert_eq!(
            e.path_and_query(
                Some("b"),
                None,
                &[
                    ("uploads".into(), String::new()),
                    ("prefix".into(), "a/b c".into())
                ]
            ),
            "/?uploads&prefix=a%2Fb%20c"
        );
    }

    #[test]
    fn region_from_hosts() {
        assert_eq!(
            region_from_endpoint_host("oss-cn-beijing.aliyuncs.com").as_deref(),
            Some("cn-beijing")
        );
        assert_eq!(
            region_from_endpoint_host("oss-cn-beijing-internal.aliyuncs.com").as_deref(),
            Some("cn-beijing")
        );
        assert_eq!(
            region_from_endpoint_host("oss-accelerate.aliyuncs.com"),
            None
        );
        assert_eq!(region_from_endpoint_host("example.com"), None);
    }
}
