//! Test-side helpers for talking raw HTTP to the simulator: a tiny V1 signer (deliberately
//! separate from src/oss) and a request function that reports body errors instead of panicking.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const AK: &str = "simak";
pub const SK: &str = "simsecret";

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Err = the body broke off (reset, truncation) or timed out.
    pub body: Result<Bytes, String>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref().expect("body")).into_owned()
    }
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn crc(&self) -> u64 {
        self.h("x-oss-hash-crc64ecma").unwrap().parse().unwrap()
    }
    pub fn code(&self) -> String {
        xml_value(&self.text(), "Code").unwrap_or_default()
    }
}

pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let s = xml.find(&open)? + open.len();
    let e = xml[s..].find(&close)? + s;
    Some(xml[s..e].to_string())
}

pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let after = &rest[s + open.len()..];
        let e = after.find(&close).unwrap();
        out.push(after[..e].to_string());
        rest = &after[e + close.len()..];
    }
    out
}

const SUBRESOURCES: &[&str] = &[
    "acl",
    "bucketInfo",
    "lifecycle",
    "location",
    "objectMeta",
    "partNumber",
    "uploadId",
    "uploads",
    "continuation-token",
];

fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builder for one signed request.
pub struct Req<'a> {
    pub endpoint: &'a str,
    pub method: Method,
    pub bucket: Option<&'a str>,
    pub key: &'a str,
    /// (name, value) pairs, unencoded.
    pub query: Vec<(&'a str, &'a str)>,
    pub headers: Vec<(&'a str, String)>,
    pub body: Bytes,
    pub creds: Option<(&'a str, &'a str)>,
    pub date: Option<SystemTime>,
    pub timeout: Duration,
    /// Sign with V4 (region) instead of V1.
    pub v4: Option<&'a str>,
    /// Send `Host: <bucket>.<this>` and a path without the bucket (virtual-hosted style).
    pub virtual_host: Option<&'a str>,
}

impl<'a> Req<'a> {
    pub fn new(endpoint: &'a str, method: Method, bucket: &'a str, key: &'a str) -> Self {
        Self {
            endpoint,
            method,
            bucket: Some(bucket),
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            creds: Some((AK, SK)),
            date: None,
            timeout: Duration::from_secs(20),
            v4: None,
            virtual_host: None,
        }
    }
    pub fn v4(mut self, region: &'a str) -> Self {
        self.v4 = Some(region);
        self
    }
    pub fn virtual_host(mut self, domain: &'a str) -> Self {
        self.virtual_host = Some(domain);
        self
    }
    pub fn q(mut self, k: &'a str, v: &'a str) -> Self {
        self.query.push((k, v));
        self
    }
    pub fn h(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    pub fn body(mut self, b: impl Into<Bytes>) -> Self {
        self.body = b.into();
        self
    }
    pub fn creds(mut self, c: Option<(&'a str, &'a str)>) -> Self {
        self.creds = c;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub async fn send(self) -> Resp {
        let date = httpdate::fmt_http_date(self.date.unwrap_or_else(SystemTime::now));
        let mut path = String::from("/");
        if let Some(b) = self.bucket {
            if self.virtual_host.is_none() {
                path.push_str(b);
                path.push('/');
            }
            path.push_str(&encode_key(self.key));
        }
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let qs: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    enc(k)
                } else {
                    format!("{}={}", enc(k), enc(v))
                }
            })
            .collect();
        let uri = if qs.is_empty() {
            format!("{}{}", self.endpoint, path)
        } else {
            format!("{}{}?{}", self.endpoint, path, qs.join("&"))
        };
        let mut rb = Request::builder().method(self.method.clone()).uri(uri);
        rb = rb.header("date", &date);
        let mut headers = self.headers.clone();
        if let (Some(domain), Some(b)) = (self.virtual_host, self.bucket) {
            headers.push(("host", format!("{b}.{domain}")));
        }
        let v4_time =
            chrono::DateTime::<chrono::Utc>::from(self.date.unwrap_or_else(SystemTime::now))
                .format("%Y%m%dT%H%M%SZ")
                .to_string();
        if self.v4.is_some() {
            headers.push(("x-oss-date", v4_time.clone()));
            headers.push(("x-oss-content-sha256", "UNSIGNED-PAYLOAD".into()));
        }
        for (k, v) in &headers {
            rb = rb.header(*k, v.as_str());
        }
        if let (Some((ak, sk)), Some(region)) = (self.creds, self.v4) {
            rb = rb.header(
                "authorization",
                sign_v4(&self, &headers, ak, sk, region, &v4_time),
            );
        } else if let Some((ak, sk)) = self.creds {
            let get = |n: &str| {
                self.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let mut oss: Vec<(String, String)> = self
                .headers
                .iter()
                .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-oss-"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            oss.sort();
            let mut resource = match self.bucket {
                Some(b) => format!("/{b}/{}", self.key),
                None => "/".to_string(),
            };
            let mut sub: Vec<&(&str, &str)> = self
                .query
                .iter()
                .filter(|(k, _)| SUBRESOURCES.contains(k))
                .collect();
            sub.sort();
            for (i, (k, v)) in sub.iter().enumerate() {
                resource.push(if i == 0 { '?' } else { '&' });
                resource.push_str(k);
                if !v.is_empty() {
                    resource.push('=');
                    resource.push_str(v);
                }
            }
            let mut sts = format!(
                "{}\n{}\n{}\n{}\n",
                self.method,
                get("content-md5"),
                get("content-type"),
                date
            );
            for (k, v) in oss {
                sts.push_str(&format!("{k}:{v}\n"));
            }
            sts.push_str(&resource);
            let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(sk.as_bytes()).unwrap();
            mac.update(sts.as_bytes());
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            rb = rb.header("authorization", format!("OSS {ak}:{sig}"));
        }
        let req = rb.body(Full::new(self.body.clone())).unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let resp = match tokio::time::timeout(self.timeout, client.request(req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Resp {
                    status: StatusCode::from_u16(599).unwrap(),
                    headers: HeaderMap::new(),
                    body: Err(format!("request failed: {e:?}")),
                }
            }
            Err(_) => {
                return Resp {
                    status: StatusCode::from_u16(598).unwrap(),
                    headers: HeaderMap::new(),
                    body: Err("timeout waiting for headers".into()),
                }
            }
        };
        let (parts, body) = resp.into_parts();
        let body = match tokio::time::timeout(self.timeout, body.collect()).await {
            Ok(Ok(c)) => Ok(c.to_bytes()),
            Ok(Err(e)) => Err(format!("body error: {e:?}")),
            Err(_) => Err("body timeout".into()),
        };
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

fn v4_enc(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac256(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Minimal V4 header signer (additional headers: none).
fn sign_v4(
    req: &Req<'_>,
    headers: &[(&str, String)],
    ak: &str,
    sk: &str,
    region: &str,
    time: &str,
) -> String {
    use sha2::Digest;
    let uri = match req.bucket {
        Some(b) => v4_enc(&format!("/{b}/{}", req.key), true),
        None => "/".into(),
    };
    let mut q: Vec<(String, String)> = req
        .query
        .iter()
        .map(|(k, v)| (v4_enc(k, false), v4_enc(v, false)))
        .collect();
    q.sort();
    let query = q
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .filter(|(k, _)| k.starts_with("x-oss-") || k == "content-type" || k == "content-md5")
        .collect();
    hs.sort();
    let canon_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{uri}\n{query}\n{canon_headers}\n\nUNSIGNED-PAYLOAD",
        req.method
    );
    let date = &time[..8];
    let scope = format!("{date}/{region}/oss/aliyun_v4_request");
    let sts = format!(
        "OSS4-HMAC-SHA256\n{time}\n{scope}\n{}",
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac256(format!("aliyun_v4{sk}").as_bytes(), date);
    let k = hmac256(&k, region);
    let k = hmac256(&k, "oss");
    let k = hmac256(&k, "aliyun_v4_request");
    format!(
        "OSS4-HMAC-SHA256 Credential={ak}/{scope}, Signature={}",
        hex::encode(hmac256(&k, &sts))
    )
}

pub fn md5_b64(data: &[u8]) -> String {
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(data))
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode_upper(md5::Md5::digest(data))
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed as usize * 7 + i / 251) % 256) as u8)
        .collect()
}
