//! AWS Signature Version 4 as the S3 and STS simulators verify it (header and presigned query
//! forms; the chunk and trailer signatures of aws-chunked bodies are checked by [`crate::chunked`]
//! with the helpers here).
//!
//! Guarantees: a request passes [`verify`] only if its signature equals the one computed here
//! from the protocol text (s3-protocol.md §2) with the secret of its AccessKey ID, its scope
//! names the expected service (and region, when one is expected), its `x-amz-date` lies within
//! 15 minutes of the server clock (or, presigned, `X-Amz-Expires` has not run out), and a
//! temporary key carries its own, unexpired token. Written from the protocol text, not from the
//! client's signer, so that the two cannot share a mistake.
//!
//! S3 specifics: the canonical URI is the path as sent, each segment decoded and re-encoded
//! once, never normalised (`//a//` stays); other services (`normalize`) drop empty segments.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth::{v4_encode, KeyInfo, MAX_SKEW};

/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Longest lifetime of a presigned URL (7 days).
pub const MAX_EXPIRES: u64 = 604_800;

pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `kSigning` for (secret, YYYYMMDD, region, service).
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// String to sign of one aws-chunked chunk (`data_sha256` = hex SHA-256 of its data).
pub fn chunk_string_to_sign(amz_date: &str, scope: &str, prev: &str, data_sha256: &str) -> String {
    format!("AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{EMPTY_SHA256}\n{data_sha256}")
}

/// String to sign of the trailer (`trailer` = the `name:value\n` lines).
pub fn trailer_string_to_sign(amz_date: &str, scope: &str, prev: &str, trailer: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{prev}\n{}",
        sha256_hex(trailer.as_bytes())
    )
}

pub fn sign(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(key, string_to_sign.as_bytes()))
}

fn decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

fn encode_bytes(b: &[u8], keep_slash: bool) -> String {
    v4_encode(&String::from_utf8_lossy(b), keep_slash)
}

/// Canonical URI of a path as sent (percent-encoded on the wire).
pub fn canonical_uri(raw_path: &str, normalize: bool) -> String {
    let path = if raw_path.is_empty() { "/" } else { raw_path };
    let segs: Vec<String> = path
        .split('/')
        .map(|s| encode_bytes(&decode(s), false))
        .collect();
    if !normalize {
        return segs.join("/");
    }
    let kept: Vec<&String> = segs.iter().filter(|s| !s.is_empty()).collect();
    let mut out = String::from("/");
    out.push_str(
        &kept
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("/"),
    );
    if path.ends_with('/') && !kept.is_empty() {
        out.push('/');
    }
    out
}

/// `(name, value)` pairs of a raw query string, decoded (`+` is kept as `+`: signers encode a
/// space as `%20`).
pub fn raw_query_pairs(raw: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), Vec::new()),
        })
        .collect()
}

/// Canonical query string (`skip`: parameter left out, i.e. `X-Amz-Signature`).
pub fn canonical_query(raw: &str, skip: Option<&str>) -> String {
    let mut q: Vec<(String, String)> = raw_query_pairs(raw)
        .into_iter()
        .filter(|(k, _)| skip.is_none_or(|s| k != s.as_bytes()))
        .map(|(k, v)| (encode_bytes(&k, false), encode_bytes(&v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's values as signed: joined with `,`, trimmed, inner space runs collapsed.
fn header_value(headers: &http::HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The canonical request.
#[allow(clippy::too_many_arguments)]
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    presigned: bool,
    headers: &http::HeaderMap,
    signed: &[String],
    payload: &str,
    normalize: bool,
) -> String {
    let mut s = format!(
        "{method}\n{}\n{}\n",
        canonical_uri(raw_path, normalize),
        canonical_query(raw_query, presigned.then_some("X-Amz-Signature"))
    );
    for n in signed {
        s.push_str(n);
        s.push(':');
        s.push_str(&header_value(headers, n));
        s.push('\n');
    }
    s.push('\n');
    s.push_str(&signed.join(";"));
    s.push('\n');
    s.push_str(payload);
    s
}

/// A request as the verifier sees it.
pub struct SigRequest<'a> {
    pub method: &'a str,
    /// Path as sent (percent-encoded).
    pub raw_path: &'a str,
    /// Query as sent (without `?`).
    pub raw_query: &'a str,
    pub headers: &'a http::HeaderMap,
}

impl SigRequest<'_> {
    fn h(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }
    fn q(&self, n: &str) -> Option<String> {
        raw_query_pairs(self.raw_query)
            .into_iter()
            .find(|(k, _)| k == n.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
    }
    /// True when the request carries any SigV4 credentials (header or query).
    pub fn is_signed(&self) -> bool {
        self.h("authorization").is_some() || self.q("X-Amz-Algorithm").is_some()
    }
}

/// A request whose signature held.
#[derive(Clone)]
pub struct Verified {
    pub access_key_id: String,
    pub account: String,
    pub amz_date: String,
    /// `<date>/<region>/<service>/aws4_request`.
    pub scope: String,
    pub key: [u8; 32],
    /// The request's signature (the seed of an aws-chunked body).
    pub signature: String,
    pub presigned: bool,
    /// The token of temporary credentials, if any.
    pub token: Option<String>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("access_key_id", &self.access_key_id)
            .field("account", &self.account)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused (mapped to S3 or STS error documents by the callers).
#[derive(Debug, Clone)]
pub enum SigError {
    /// No credentials at all.
    Anonymous,
    /// Authorization header or query malformed.
    Malformed(String),
    /// Scope names another region; `.0` = the region the request was signed for.
    WrongRegion(String),
    /// Scope names another service (each AWS service words this differently).
    WrongService {
        signed: String,
        expected: String,
    },
    InvalidAccessKeyId(String),
    /// Token missing or wrong for a temporary key.
    InvalidToken,
    ExpiredToken,
    SignatureDoesNotMatch {
        ak: String,
        provided: String,
        string_to_sign: String,
        canonical_request: String,
    },
    TooSkewed {
        request_time: SystemTime,
    },
    /// Presigned URL past `X-Amz-Date + X-Amz-Expires`.
    Expired {
        expires: SystemTime,
        seconds: u64,
    },
}

fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok()?;
    let secs = t.and_utc().timestamp();
    (secs >= 0).then(|| UNIX_EPOCH + Duration::from_secs(secs as u64))
}

struct Parts {
    ak: String,
    date: String,
    region: String,
    service: String,
    signed: Vec<String>,
    signature: String,
}

fn parse_credential(cred: &str) -> Result<(String, String, String, String), SigError> {
    let p: Vec<&str> = cred.split('/').collect();
    match p.as_slice() {
        [ak, date, region, service, "aws4_request"] if !ak.is_empty() && date.len() == 8 => Ok((
            ak.to_string(),
            date.to_string(),
            region.to_string(),
            service.to_string(),
        )),
        _ => Err(SigError::Malformed(format!(
            "The authorization header is malformed; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\". ({cred})"
        ))),
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` (`,` or `, `).
fn parse_authorization(v: &str) -> Result<Parts, SigError> {
    let rest = v
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| SigError::Malformed("Unsupported Authorization Type".into()))?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some(("Credential", c)) => cred = Some(c),
            Some(("SignedHeaders", s)) => signed = Some(s),
            Some(("Signature", s)) => sig = Some(s),
            _ => {
                return Err(SigError::Malformed(format!(
                    "The authorization header is malformed; unexpected element {item:?}."
                )))
            }
        }
    }
    let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
        return Err(SigError::Malformed(
            "The authorization header is malformed; Credential, SignedHeaders and Signature are required.".into(),
        ));
    };
    let (ak, date, region, service) = parse_credential(cred)?;
    Ok(Parts {
        ak,
        date,
        region,
        service,
        signed: signed.split(';').map(str::to_ascii_lowercase).collect(),
        signature: sig.to_ascii_lowercase(),
    })
}

/// What the caller expects of a request.
pub struct Expect<'a> {
    pub service: &'a str,
    /// `None`: any region (checked by the caller, e.g. against the bucket's).
    pub region: Option<&'a str>,
    /// The payload line for header auth (S3: the `x-amz-content-sha256` value; others: the
    /// body hash). Presigned S3 requests use `UNSIGNED-PAYLOAD`.
    pub payload: &'a str,
    pub normalize: bool,
}

/// The region a request was signed for, if it is signed at all (read before verification so
/// the S3 router can answer a wrong region the way S3 does).
pub fn scope_region(req: &SigRequest<'_>) -> Option<String> {
    if let Some(v) = req.h("authorization") {
        return parse_authorization(v).ok().map(|p| p.region);
    }
    req.q("X-Amz-Credential")
        .and_then(|c| parse_credential(&c).ok())
        .map(|(_, _, r, _)| r)
}

/// Verifies a request's SigV4 signature (header or presigned form).
pub fn verify(
    req: &SigRequest<'_>,
    exp: &Expect<'_>,
    now: SystemTime,
    lookup: &dyn Fn(&str) -> Option<KeyInfo>,
) -> Result<Verified, SigError> {
    let presigned = req.h("authorization").is_none();
    let (parts, amz_date, token, payload) = if let Some(v) = req.h("authorization") {
        let p = parse_authorization(v)?;
        let amz_date = req.h("x-amz-date").map(str::to_string).ok_or_else(|| {
            SigError::Malformed(
                "AWS authentication requires a valid Date or x-amz-date header".into(),
            )
        })?;
        (
            p,
            amz_date,
            req.h("x-amz-security-token").map(str::to_string),
            exp.payload.to_string(),
        )
    } else {
        let Some(alg) = req.q("X-Amz-Algorithm") else {
            return Err(SigError::Anonymous);
        };
        if alg != "AWS4-HMAC-SHA256" {
            return Err(SigError::Malformed(format!(
                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\", got {alg:?}"
            )));
        }
        let need = |n: &str| {
            req.q(n).ok_or_else(|| {
                SigError::Malformed(format!(
                    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters ({n} missing)."
                ))
            })
        };
        let (ak, date, region, service) = parse_credential(&need("X-Amz-Credential")?)?;
        let parts = Parts {
            ak,
            date,
            region,
            service,
            signed: need("X-Amz-SignedHeaders")?
                .split(';')
                .map(str::to_ascii_lowercase)
                .collect(),
            signature: need("X-Amz-Signature")?.to_ascii_lowercase(),
        };
        let payload = if exp.service == "s3" {
            "UNSIGNED-PAYLOAD".to_string()
        } else {
            exp.payload.to_string()
        };
        (
            parts,
            need("X-Amz-Date")?,
            req.q("X-Amz-Security-Token"),
            payload,
        )
    };
    if parts.service != exp.service {
        return Err(SigError::WrongService {
            signed: parts.service,
            expected: exp.service.to_string(),
        });
    }
    if let Some(r) = exp.region {
        if parts.region != r {
            return Err(SigError::WrongRegion(parts.region));
        }
    }
    if !parts.signed.iter().any(|h| h == "host") {
        return Err(SigError::Malformed(
            "The host header must be signed (SignedHeaders lacks host).".into(),
        ));
    }
    let t = parse_amz_date(&amz_date).ok_or_else(|| {
        SigError::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !amz_date.starts_with(&parts.date) {
        return Err(SigError::Malformed(format!(
            "The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date: \"{}\".",
            parts.date
        )));
    }
    let Some(info) = lookup(&parts.ak) else {
        return Err(SigError::InvalidAccessKeyId(parts.ak));
    };
    let scope = format!(
        "{}/{}/{}/aws4_request",
        parts.date, parts.region, parts.service
    );
    let cr = canonical_request(
        req.method,
        req.raw_path,
        req.raw_query,
        presigned,
        req.headers,
        &parts.signed,
        &payload,
        exp.normalize,
    );
    let sts = string_to_sign(&amz_date, &scope, &cr);
    let key = signing_key(&info.secret, &parts.date, &parts.region, &parts.service);
    let expected = sign(&key, &sts);
    if expected != parts.signature {
        return Err(SigError::SignatureDoesNotMatch {
            ak: parts.ak,
            provided: parts.signature,
            string_to_sign: sts,
            canonical_request: cr,
        });
    }
    if presigned {
        let secs: u64 = req
            .q("X-Amz-Expires")
            .and_then(|v| v.parse().ok())
            .filter(|s| (1..=MAX_EXPIRES).contains(s))
            .ok_or_else(|| {
                SigError::Malformed(
                    "X-Amz-Expires must be a number of seconds between 1 and 604800.".into(),
                )
            })?;
        let expires = t + Duration::from_secs(secs);
        if now > expires {
            return Err(SigError::Expired {
                expires,
                seconds: secs,
            });
        }
    } else {
        let skew = now.duration_since(t).unwrap_or_else(|e| e.duration());
        if skew > MAX_SKEW {
            return Err(SigError::TooSkewed { request_time: t });
        }
    }
    if let Some((want, until)) = &info.token {
        if token.as_deref() != Some(want.as_str()) {
            return Err(SigError::InvalidToken);
        }
        if now >= *until {
            return Err(SigError::ExpiredToken);
        }
    }
    Ok(Verified {
        access_key_id: parts.ak,
        account: info.account,
        amz_date,
        scope,
        key,
        signature: parts.signature,
        presigned,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn headers(h: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn at(s: &str) -> SystemTime {
        parse_amz_date(s).unwrap()
    }

    fn lookup_doc(ak: &str) -> Option<KeyInfo> {
        (ak == AK).then(|| KeyInfo {
            secret: SECRET.into(),
            account: "doc".into(),
            token: None,
        })
    }

    #[test]
    fn signing_key_check_value() {
        assert_eq!(
            hex::encode(signing_key(SECRET, "20130524", "us-east-1", "s3")),
            "dbb893acc010964918f1fd433add87c70e8b0db6be30c1fbeafefa5ec6ba8378"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn s3_header_case(
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        payload: &str,
        signed: &str,
        cr_hash: &str,
        signature: &str,
    ) {
        let mut h = vec![("host", "examplebucket.s3.amazonaws.com")];
        h.extend_from_slice(extra);
        h.push(("x-amz-content-sha256", payload));
        h.push(("x-amz-date", "20130524T000000Z"));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={signature}"
        );
        h.push(("authorization", &auth));
        let hm = headers(&h);
        let req = SigRequest {
            method,
            raw_path: path,
            raw_query: query,
            headers: &hm,
        };
        let signed_v: Vec<String> = signed.split(';').map(String::from).collect();
        let cr = canonical_request(method, path, query, false, &hm, &signed_v, payload, false);
        assert_eq!(sha256_hex(cr.as_bytes()), cr_hash, "{cr}");
        let exp = Expect {
            service: "s3",
            region: Some("us-east-1"),
            payload,
            normalize: false,
        };
        let v = verify(&req, &exp, at("20130524T000100Z"), &lookup_doc).unwrap();
        assert_eq!(v.account, "doc");
        // The same with ", " separators (botocore's form) also passes.
        let mut hm2 = hm.clone();
        hm2.insert("authorization", auth.replace(",S", ", S").parse().unwrap());
        let req2 = SigRequest {
            headers: &hm2,
            ..req
        };
        verify(&req2, &exp, at("20130524T000100Z"), &lookup_doc).unwrap();
    }

    #[test]
    fn doc_vector_get_object() {
        s3_header_case(
            "GET",
            "/test.txt",
            "",
            &[("range", "bytes=0-9")],
            EMPTY_SHA256,
            "host;range;x-amz-content-sha256;x-amz-date",
            "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        );
    }

    #[test]
    fn doc_vector_put_object() {
        s3_header_case(
            "PUT",
            "/test$file.text",
            "",
            &[
                ("date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
            "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
            "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        );
        assert_eq!(
            sha256_hex(b"Welcome to Amazon S3."),
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        );
    }

    #[test]
    fn doc_vectors_lifecycle_and_list() {
        s3_header_case(
            "GET",
            "/",
            "lifecycle",
            &[],
            EMPTY_SHA256,
            "host;x-amz-content-sha256;x-amz-date",
            "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        );
        s3_header_case(
            "GET",
            "/",
            "max-keys=2&prefix=J",
            &[],
            EMPTY_SHA256,
            "host;x-amz-content-sha256;x-amz-date",
            "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        );
    }

    #[test]
    fn doc_vector_presigned() {
        let hm = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let req = SigRequest {
            method: "GET",
            raw_path: "/test.txt",
            raw_query: q,
            headers: &hm,
        };
        let cr = canonical_request(
            "GET",
            "/test.txt",
            q,
            true,
            &hm,
            &["host".into()],
            "UNSIGNED-PAYLOAD",
            false,
        );
        assert_eq!(
            sha256_hex(cr.as_bytes()),
            "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
        );
        let exp = Expect {
            service: "s3",
            region: None,
            payload: "",
            normalize: false,
        };
        // Valid for a day, whatever the skew; expired after.
        verify(&req, &exp, at("20130524T230000Z"), &lookup_doc).unwrap();
        match verify(&req, &exp, at("20130525T000001Z"), &lookup_doc) {
            Err(SigError::Expired { seconds, .. }) => assert_eq!(seconds, 86_400),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_secret_unknown_key_skew_and_region() {
        let hm = headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
        ]);
        let req = SigRequest {
            method: "GET",
            raw_path: "/test.txt",
            raw_query: "",
            headers: &hm,
        };
        let exp = Expect {
            service: "s3",
            region: Some("us-east-1"),
            payload: EMPTY_SHA256,
            normalize: false,
        };
        let wrong = |_: &str| {
            Some(KeyInfo {
                secret: "nope".into(),
                account: "x".into(),
                token: None,
            })
        };
        match verify(&req, &exp, at("20130524T000000Z"), &wrong) {
            Err(SigError::SignatureDoesNotMatch {
                string_to_sign,
                canonical_request,
                ..
            }) => {
                assert!(string_to_sign.starts_with("AWS4-HMAC-SHA256\n20130524T000000Z\n"));
                assert!(canonical_request.starts_with("GET\n/test.txt\n"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify(&req, &exp, at("20130524T000000Z"), &|_| None),
            Err(SigError::InvalidAccessKeyId(_))
        ));
        assert!(matches!(
            verify(&req, &exp, at("20130524T001600Z"), &lookup_doc),
            Err(SigError::TooSkewed { .. })
        ));
        let eu = Expect {
            region: Some("eu-west-1"),
            ..exp
        };
        assert!(matches!(
            verify(&req, &eu, at("20130524T000000Z"), &lookup_doc),
            Err(SigError::WrongRegion(r)) if r == "us-east-1"
        ));
    }

    /// aws-sig-v4-test-suite (service `service`, empty payload hashed into the last line).
    fn suite(path: &str, query: &str, extra: &[(&str, &str)], normalize: bool, sig: &str) {
        let mut h = vec![
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ];
        h.extend_from_slice(extra);
        let mut signed: Vec<&str> = h.iter().map(|(k, _)| *k).collect();
        signed.sort();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={}, Signature={sig}",
            signed.join(";")
        );
        h.push(("authorization", &auth));
        let hm = headers(&h);
        let req = SigRequest {
            method: "GET",
            raw_path: path,
            raw_query: query,
            headers: &hm,
        };
        let exp = Expect {
            service: "service",
            region: Some("us-east-1"),
            payload: EMPTY_SHA256,
            normalize,
        };
        let token = extra
            .iter()
            .find(|(k, _)| *k == "x-amz-security-token")
            .map(|(_, v)| (v.to_string(), at("20990101T000000Z")));
        let lookup = move |ak: &str| {
            (ak == "AKIDEXAMPLE").then(|| KeyInfo {
                secret: SUITE_SECRET.into(),
                account: "suite".into(),
                token: token.clone(),
            })
        };
        verify(&req, &exp, at("20150830T123600Z"), &lookup)
            .unwrap_or_else(|e| panic!("{path}?{query}: {e:?}"));
    }

    #[test]
    fn test_suite_vectors() {
        suite(
            "/",
            "",
            &[],
            false,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        );
        suite(
            "/",
            "Param2=value2&Param1=value1",
            &[],
            false,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        );
        suite(
            "/%E1%88%B4",
            "",
            &[],
            false,
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        );
        suite(
            "/example%20space/",
            "",
            &[],
            false,
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        );
        suite(
            "//example//",
            "",
            &[],
            false,
            "87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5",
        );
        suite(
            "//example//",
            "",
            &[],
            true,
            "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        );
        suite(
            "/",
            "",
            &[(
                "x-amz-security-token",
                "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
            )],
            false,
            "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        );
        let hm = headers(&[("host", "example.amazonaws.com")]);
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d";
        let req = SigRequest {
            method: "GET",
            raw_path: "/",
            raw_query: q,
            headers: &hm,
        };
        let exp = Expect {
            service: "service",
            region: Some("us-east-1"),
            payload: EMPTY_SHA256,
            normalize: true,
        };
        let lookup = |ak: &str| {
            (ak == "AKIDEXAMPLE").then(|| KeyInfo {
                secret: SUITE_SECRET.into(),
                account: "suite".into(),
                token: None,
            })
        };
        verify(&req, &exp, at("20150830T123600Z"), &lookup).unwrap();
    }

    #[test]
    fn temporary_credentials_need_their_token() {
        let hm = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ]);
        let req = SigRequest {
            method: "GET",
            raw_path: "/",
            raw_query: "",
            headers: &hm,
        };
        let exp = Expect {
            service: "service",
            region: None,
            payload: EMPTY_SHA256,
            normalize: false,
        };
        let lookup = |_: &str| {
            Some(KeyInfo {
                secret: SUITE_SECRET.into(),
                account: "suite".into(),
                token: Some(("tok".into(), at("20990101T000000Z"))),
            })
        };
        assert!(matches!(
            verify(&req, &exp, at("20150830T123600Z"), &lookup),
            Err(SigError::InvalidToken)
        ));
    }
}
