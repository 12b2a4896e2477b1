//! Outbound HTTP proxies taken from the environment, for the OSS and ECS/RAM/STS clients.
//!
//! Guarantees callers can rely on:
//! * `https://` destinations go through `https_proxy` / `HTTPS_PROXY` (else `all_proxy` /
//!   `ALL_PROXY`) as an HTTP `CONNECT` tunnel (hyper-util's `Tunnel`); TLS runs end to end
//!   through it, so the proxy sees neither requests nor signatures, and certificates are still
//!   verified against the real host name.
//! * `http://` destinations (the simulator, test doubles) go through `http_proxy` /
//!   `HTTP_PROXY` (else `ALL_PROXY`) with the request in absolute form (`GET http://host/…`).
//! * `no_proxy` / `NO_PROXY` (hyper-util's matcher, curl's rules): a comma list of host names
//!   (each also matching its subdomains; a leading dot is allowed), IP addresses, CIDR blocks,
//!   or `*` for everything. Lower-case names win over upper-case ones, as in curl; under CGI
//!   (`REQUEST_METHOD` set) `HTTP_PROXY` is ignored, since a request header can set it
//!   ("httpoxy").
//! * Loopback destinations (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`) are never proxied,
//!   whatever the variables say. curl would proxy them unless `NO_PROXY` lists them; we follow
//!   Go's net/http and most package managers instead: a proxy on another machine cannot reach
//!   this machine's loopback, and ossrelay's own simulator and daemon live there, so an
//!   exported corporate `HTTPS_PROXY` must not break `ossrelay sim` / `demo` / tests.
//! * Instance metadata (`100.100.100.200`) is never proxied: its client
//!   ([`crate::credentials::imds`]) builds its transport with [`ProxyConfig::none`] (see there).
//! * Only `http://` proxies are supported; a `socks5://` or `https://` proxy makes every
//!   connection fail with a one-line error naming the variable's value (without any password).
//!   Credentials in the proxy URL (`http://user:pass@proxy:3128`) are sent as
//!   `Proxy-Authorization: Basic` on `CONNECT`; plain-http requests through an authenticating
//!   proxy are not supported (OSS and the cloud APIs are https).
//! * With no proxy variable set, connections are made exactly as without this module.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Which proxy, if any, serves which destination.
#[derive(Clone)]
pub struct ProxyConfig {
    /// `None` when no proxy variable is set, or `NO_PROXY=*`.
    matcher: Option<Arc<Matcher>>,
    /// The proxy settings as given, passwords removed (for `Debug` and errors).
    shown: String,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self::from_env()
    }
}

/// `scheme://host:port` of a proxy URL without user or password.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
            format!("{scheme}://{rest}")
        }
        None => url.rsplit_once('@').map_or(url, |(_, hp)| hp).to_string(),
    }
}

impl ProxyConfig {
    /// No proxy at all.
    pub fn none() -> Self {
        Self {
            matcher: None,
            shown: "no proxy".into(),
        }
    }

    /// From the process environment (see the module doc for the variables).
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map, never touching the process environment).
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| lookup(n))
                .map(|v| v.trim().to_string())
                .find(|v| !v.is_empty())
        };
        let cgi = lookup("REQUEST_METHOD").is_some();
        let http = if cgi {
            get(&["http_proxy"])
        } else {
            get(&["http_proxy", "HTTP_PROXY"])
        };
        let https = get(&["https_proxy", "HTTPS_PROXY"]);
        let all = get(&["all_proxy", "ALL_PROXY"]);
        let no = get(&["no_proxy", "NO_PROXY"]);
        // curl's `*` bypasses everything; hyper-util's matcher applies it to names only, not to
        // IP addresses.
        let bypass_all = no
            .as_deref()
            .is_some_and(|n| n.split(',').any(|e| e.trim() == "*"));
        if (http.is_none() && https.is_none() && all.is_none()) || bypass_all {
            return Self::none();
        }
        let shown = format!(
            "https: {}, http: {}, no_proxy: {}",
            https
                .as_deref()
                .or(all.as_deref())
                .map_or("direct".into(), without_userinfo),
            http.as_deref()
                .or(all.as_deref())
                .map_or("direct".into(), without_userinfo),
            no.as_deref().unwrap_or("-"),
        );
        let mut b = Matcher::builder();
        if let Some(v) = all {
            b = b.all(v);
        }
        if let Some(v) = http {
            b = b.http(v);
        }
        if let Some(v) = https {
            b = b.https(v);
        }
        if let Some(v) = no {
            b = b.no(v);
        }
        Self {
            matcher: Some(Arc::new(b.build())),
            shown,
        }
    }

    /// The proxy for `dst`, or `None` to connect directly.
    pub fn proxy_for(&self, dst: &Uri) -> Option<Intercept> {
        let matcher = self.matcher.as_ref()?;
        if dst.host().is_some_and(is_loopback) {
            return None;
        }
        matcher.intercept(dst)
    }
}

/// `localhost`, `*.localhost`, or a loopback IP (v6 possibly in brackets).
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    let lower = h.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A TCP connection, direct or through a proxy; tells hyper when requests must be sent in
/// absolute form (plain http through a proxy).
pub struct ProxyStream {
    io: TokioIo<TcpStream>,
    absolute_form: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.absolute_form)
    }
}

impl hyper::rt::Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// Why a connection through a proxy failed: names the proxy (never its password).
#[derive(Debug, thiserror::Error)]
#[error("via proxy {proxy}: {source}; check HTTPS_PROXY / HTTP_PROXY / NO_PROXY")]
pub struct ProxyError {
    proxy: String,
    #[source]
    source: BoxError,
}

/// Wraps [`HttpConnector`]: connects directly or through the proxy [`ProxyConfig`] picks.
#[derive(Clone)]
pub struct ProxyConnector {
    http: HttpConnector,
    proxy: ProxyConfig,
}

impl ProxyConnector {
    /// `http` makes the TCP connections (to the destination, or to the proxy).
    pub fn new(http: HttpConnector, proxy: ProxyConfig) -> Self {
        Self { http, proxy }
    }
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self.proxy.proxy_for(&dst);
        let mut http = self.http.clone();
        Box::pin(async move {
            let Some(proxy) = intercept else {
                let io = http.call(dst).await?;
                return Ok(ProxyStream {
                    io,
                    absolute_form: false,
                });
            };
            let shown = without_userinfo(&proxy.uri().to_string());
            let fail = |source: BoxError| -> BoxError {
                Box::new(ProxyError {
                    proxy: shown.clone(),
                    source,
                })
            };
            if proxy.uri().scheme_str() != Some("http") {
                return Err(fail(
                    "only http:// proxies are supported (not socks or https proxies)".into(),
                ));
            }
            if dst.scheme_str() == Some("https") {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                tracing::debug!(proxy = %shown, host = dst.host().unwrap_or(""), "CONNECT tunnel");
                let io = tunnel.call(dst).await.map_err(|e| fail(Box::new(e)))?;
                Ok(ProxyStream {
                    io,
                    absolute_form: false,
                })
            } else {
                let io = http
                    .call(proxy.uri().clone())
                    .await
                    .map_err(|e| fail(Box::new(e)))?;
                Ok(ProxyStream {
                    io,
                    absolute_form: true,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> ProxyConfig {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(move |k| m.get(k).cloned())
    }

    fn via(c: &ProxyConfig, url: &str) -> Option<String> {
        c.proxy_for(&url.parse().unwrap())
            .map(|i| i.uri().authority().unwrap().to_string())
    }

    #[test]
    fn nothing_set_means_direct() {
        let c = cfg(&[]);
        assert!(c.matcher.is_none());
        assert_eq!(via(&c, "https://oss-cn-hangzhou.aliyuncs.com/"), None);
        assert_eq!(format!("{c:?}"), "no proxy");
    }

    #[test]
    fn scheme_selects_the_variable() {
        let c = cfg(&[
            ("HTTPS_PROXY", "http://secure:3128"),
            ("http_proxy", "http://plain:8080"),
        ]);
        assert_eq!(
            via(&c, "https://b.oss-cn-hangzhou.aliyuncs.com/k").as_deref(),
            Some("secure:3128")
        );
        assert_eq!(
            via(&c, "http://sim.example:9000/").as_deref(),
            Some("plain:8080")
        );
        let all = cfg(&[("ALL_PROXY", "http://every:1")]);
        assert_eq!(via(&all, "https://x.example/").as_deref(), Some("every:1"));
        // Lower case wins, as in curl.
        let both = cfg(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:2"),
        ]);
        assert_eq!(via(&both, "https://x.example/").as_deref(), Some("lower:1"));
    }

    #[test]
    fn no_proxy_and_loopback_bypass() {
        let c = cfg(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("HTTP_PROXY", "http://p:3128"),
            ("NO_PROXY", ".internal.example, 10.0.0.0/8,sts.aliyuncs.com"),
        ]);
        assert_eq!(via(&c, "https://oss.internal.example/"), None);
        assert_eq!(via(&c, "https://internal.example/"), None);
        assert_eq!(via(&c, "http://10.1.2.3:80/"), None);
        assert_eq!(via(&c, "https://sts.aliyuncs.com/"), None);
        assert!(via(&c, "https://ecs.aliyuncs.com/").is_some());
        assert!(via(&c, "https://notinternal.example/").is_some());
        for local in [
            "http://127.0.0.1:9000/",
            "http://127.8.9.1/",
            "http://[::1]:9000/",
            "http://localhost:9000/",
            "https://LOCALHOST/",
            "http://sim.localhost:1/",
        ] {
            assert_eq!(via(&c, local), None, "{local}");
        }
        let star = cfg(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "a.example, *")]);
        assert_eq!(via(&star, "https://x.example/"), None);
        assert_eq!(via(&star, "https://192.0.2.1/"), None);
    }

    #[test]
    fn cgi_ignores_upper_case_http_proxy() {
        let c = cfg(&[("HTTP_PROXY", "http://evil:1"), ("REQUEST_METHOD", "GET")]);
        assert_eq!(via(&c, "http://x.example/"), None);
    }

    #[test]
    fn passwords_never_shown() {
        let c = cfg(&[("HTTPS_PROXY", "http://user:pa55word@p:3128")]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("http://p:3128"), "{shown}");
        let i = c.proxy_for(&"https://x.example/".parse().unwrap()).unwrap();
        assert!(i.basic_auth().is_some());
        assert!(!i.uri().to_string().contains("pa55word"));
    }
}
