//! Bytes into the store for S3: the payload modes of `x-amz-content-sha256` (hex SHA-256,
//! `UNSIGNED-PAYLOAD`, signed aws-chunked with or without a signed trailer, unsigned aws-chunked
//! with a trailer), every digest the request names checked against what arrived, and the
//! faults that strike upload bodies.
//!
//! Guarantees: [`receive`] stores a body only after its chunk signatures, its SHA-256 (when
//! signed), its `Content-MD5` and every `x-amz-checksum-*` header or trailer held (unless
//! quirks mode, which ignores the `x-amz-checksum-*` family as S3-compatible stores do); a
//! mismatch is `400 BadDigest` (`XAmzContentSHA256Mismatch` for the payload hash), a bad chunk
//! signature `403 SignatureDoesNotMatch`.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::Sha256;

use super::common::{
    b64, bad_digest, internal, invalid_request, nvme_b64, request_timeout, Ctx, Fail, S3Error,
};
use crate::chunked::{ChunkDecoder, ChunkError, ChunkSigning};
use crate::config::FaultKind;
use crate::crc64;
use crate::faults::{BodyFault, STALL};
use crate::sigv4::Verified;
use crate::store::{Segment, Sink};
use crate::world::World;

const MAX_DRAIN: u64 = 64 << 20;
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// Checksum algorithms S3 accepts as `x-amz-checksum-<alg>` that the simulator verifies.
pub(crate) const ALGS: &[&str] = &["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

pub(crate) async fn drain(w: &World, mut body: Incoming) {
    let mut n = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(d) = frame.into_data() {
            n += d.len() as u64;
            w.stats
                .bytes_in
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            if n > MAX_DRAIN {
                return;
            }
        }
    }
}

/// A small body (XML, forms), decoded when aws-chunked.
pub(crate) async fn read_small(w: &World, mut body: Incoming, limit: usize) -> Result<Bytes, Fail> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Fail::ClientGone)?;
        if let Ok(d) = frame.into_data() {
            w.stats
                .bytes_in
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            if out.len() + d.len() > limit {
                return Err(invalid_request("Request body is too large.").into());
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}

/// One running digest of an `x-amz-checksum-*` algorithm.
enum Dig {
    Crc32(crc_fast::Digest),
    Crc32c(crc_fast::Digest),
    Nvme(crc64::nvme::Nvme),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Dig {
    fn new(alg: &str) -> Option<Self> {
        use crc_fast::CrcAlgorithm as A;
        Some(match alg {
            "crc32" => Dig::Crc32(crc_fast::Digest::new(A::Crc32IsoHdlc)),
            "crc32c" => Dig::Crc32c(crc_fast::Digest::new(A::Crc32Iscsi)),
            "crc64nvme" => Dig::Nvme(crc64::nvme::Nvme::new()),
            "sha1" => Dig::Sha1(Sha1::new()),
            "sha256" => Dig::Sha256(Sha256::new()),
            _ => return None,
        })
    }
    fn update(&mut self, d: &[u8]) {
        match self {
            Dig::Crc32(x) | Dig::Crc32c(x) => x.update(d),
            Dig::Nvme(x) => x.update(d),
            Dig::Sha1(x) => x.update(d),
            Dig::Sha256(x) => x.update(d),
        }
    }
    fn b64(self) -> String {
        match self {
            Dig::Crc32(x) | Dig::Crc32c(x) => b64(&(x.finalize() as u32).to_be_bytes()),
            Dig::Nvme(x) => nvme_b64(x.sum()),
            Dig::Sha1(x) => b64(&x.finalize()),
            Dig::Sha256(x) => b64(&x.finalize()),
        }
    }
}

/// The `x-amz-checksum-<alg>` value of `data` (base64), for small bodies read whole;
/// `None` for an algorithm the simulator does not compute.
pub(crate) fn checksum_b64(alg: &str, data: &[u8]) -> Option<String> {
    let mut d = Dig::new(alg)?;
    d.update(data);
    Some(d.b64())
}

/// What arrived.
pub(crate) struct Received {
    pub(crate) size: u64,
    pub(crate) crc: u64,
    pub(crate) nvme: Option<u64>,
    pub(crate) md5: Option<[u8; 16]>,
    pub(crate) segment: Option<Segment>,
    /// Verified `(algorithm, base64 value)` pairs the client sent (header or trailer).
    pub(crate) checksums: Vec<(String, String)>,
}

/// The payload mode named by `x-amz-content-sha256`.
enum Mode {
    Plain(Option<String>),
    Chunked { signed: bool, trailer: bool },
}

fn mode(ctx: &Ctx, auth: &Verified) -> Result<Mode, S3Error> {
    if auth.presigned {
        return Ok(Mode::Plain(None));
    }
    let v = ctx.h("x-amz-content-sha256").unwrap_or_default();
    Ok(match v {
        "UNSIGNED-PAYLOAD" => Mode::Plain(None),
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Mode::Chunked {
            signed: true,
            trailer: false,
        },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Mode::Chunked {
            signed: true,
            trailer: true,
        },
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Mode::Chunked {
            signed: false,
            trailer: true,
        },
        h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Mode::Plain(Some(h.to_ascii_lowercase()))
        }
        other => {
            return Err(invalid_argument_hdr(other));
        }
    })
}

fn invalid_argument_hdr(v: &str) -> S3Error {
    S3Error::new(
        400,
        "InvalidArgument",
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-… or a valid sha256 value.",
    )
    .with("ArgumentName", "x-amz-content-sha256")
    .with("ArgumentValue", v)
}

fn chunk_error(e: ChunkError) -> S3Error {
    match e {
        ChunkError::Malformed(m) => S3Error::new(400, "IncompleteBody", m),
        ChunkError::Signature(m) => S3Error::new(403, "SignatureDoesNotMatch", m),
    }
}

/// Streams a request body into the store. `extra_alg`: an algorithm the upload requires
/// (CreateMultipartUpload's `x-amz-checksum-algorithm`), computed even when not sent.
pub(crate) async fn receive(
    w: &World,
    ctx: &Ctx,
    auth: &Verified,
    mut body: Incoming,
    discard: bool,
    expected_md5: Option<[u8; 16]>,
    fault: Option<BodyFault>,
) -> Result<Received, Fail> {
    let mode = match mode(ctx, auth) {
        Ok(m) => m,
        Err(e) => {
            drain(w, body).await;
            return Err(e.into());
        }
    };
    let mut decoder = match mode {
        Mode::Chunked { signed, .. } => Some(ChunkDecoder::new(signed.then(|| ChunkSigning {
            key: auth.key,
            amz_date: auth.amz_date.clone(),
            scope: auth.scope.clone(),
            prev: auth.signature.clone(),
        }))),
        Mode::Plain(_) => None,
    };
    // Algorithms to compute: headers sent, trailers announced, and always NVME (FULL_OBJECT).
    let mut header_sums: Vec<(String, String)> = Vec::new();
    let mut trailer_algs: Vec<String> = Vec::new();
    if !ctx.quirks {
        for alg in ALGS {
            if let Some(v) = ctx.h(&format!("x-amz-checksum-{alg}")) {
                header_sums.push((alg.to_string(), v.trim().to_string()));
            }
        }
        if let Some(t) = ctx.h("x-amz-trailer") {
            for name in t.split(',') {
                if let Some(alg) = name
                    .trim()
                    .to_ascii_lowercase()
                    .strip_prefix("x-amz-checksum-")
                {
                    trailer_algs.push(alg.to_string());
                }
            }
        }
    }
    let mut digs: Vec<(String, Dig)> = header_sums
        .iter()
        .map(|(a, _)| a.clone())
        .chain(trailer_algs.iter().cloned())
        .filter(|a| a != "crc64nvme")
        .filter_map(|a| Dig::new(&a).map(|d| (a, d)))
        .collect();
    let mut nvme = (!ctx.quirks).then(crc64::nvme::Nvme::new);
    let mut sha = matches!(mode, Mode::Plain(Some(_))).then(Sha256::new);
    let mut crc = crc64::Crc64::new();
    let mut md5 = (!discard || expected_md5.is_some()).then(Md5::new);
    let mut sink = Sink::open(w.oss.blob_dir.as_deref(), discard)
        .await
        .map_err(internal)?;
    let reset_at = fault.filter(|f| f.kind == FaultKind::Reset).map(|f| f.at);
    let mut other = fault.filter(|f| f.kind != FaultKind::Reset);
    let mut truncated = false;
    let mut raw = 0u64;
    loop {
        let frame = match tokio::time::timeout(BODY_IDLE, body.frame()).await {
            Ok(Some(f)) => f.map_err(|_| Fail::ClientGone)?,
            Ok(None) => break,
            Err(_) => return Err(request_timeout().into()),
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let len = data.len() as u64;
        if let Some(r) = reset_at {
            if raw + len > r {
                w.stats
                    .bytes_in
                    .fetch_add(r.saturating_sub(raw), Ordering::Relaxed);
                return Err(Fail::Reset);
            }
        }
        if let Some(f) = other.filter(|f| raw + len > f.at) {
            other = None;
            let cut = (f.at - raw) as usize;
            match f.kind {
                FaultKind::Truncate => truncated = true,
                FaultKind::Corrupt => {
                    let mut m = BytesMut::from(&data[..]);
                    m[cut] ^= 1 << f.bit;
                    data = m.freeze();
                }
                FaultKind::Stall => tokio::time::sleep(STALL).await,
                _ => {}
            }
        }
        raw += len;
        w.stats.bytes_in.fetch_add(len, Ordering::Relaxed);
        if truncated {
            continue;
        }
        let pieces = match decoder.as_mut() {
            Some(d) => d.feed(data).map_err(chunk_error)?,
            None => vec![data],
        };
        for p in pieces {
            crc.update(&p);
            if let Some(n) = nvme.as_mut() {
                n.update(&p);
            }
            if let Some(m) = md5.as_mut() {
                m.update(&p);
            }
            if let Some(s) = sha.as_mut() {
                s.update(&p);
            }
            for (_, d) in digs.iter_mut() {
                d.update(&p);
            }
            sink.write(p).await.map_err(internal)?;
        }
    }
    if truncated {
        return Err(request_timeout().into());
    }
    let size = crc.len();
    let mut trailers = Vec::new();
    if let Some(d) = decoder {
        let signed_trailer = matches!(
            mode,
            Mode::Chunked {
                signed: true,
                trailer: true
            }
        );
        trailers = d.finish(signed_trailer).map_err(chunk_error)?;
        if let Some(n) = ctx
            .h("x-amz-decoded-content-length")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if n != size {
                return Err(S3Error::new(
                    400,
                    "IncompleteBody",
                    format!("The request body decoded to {size} bytes, x-amz-decoded-content-length says {n}."),
                )
                .into());
            }
        }
    } else if let Some(n) = ctx.h("content-length").and_then(|v| v.parse::<u64>().ok()) {
        if n != size {
            return Err(S3Error::new(400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header.").into());
        }
    }
    if let (Mode::Plain(Some(want)), Some(s)) = (&mode, sha) {
        let got = hex::encode(s.finalize());
        if &got != want {
            return Err(S3Error::new(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )
            .with("ClientComputedContentSHA256", want.clone())
            .with("S3ComputedContentSHA256", got)
            .into());
        }
    }
    let md5 = md5.map(|m| -> [u8; 16] { m.finalize().into() });
    if let (Some(e), Some(g)) = (expected_md5, md5) {
        if e != g {
            return Err(bad_digest(
                "The Content-MD5 you specified did not match what we received.",
            )
            .with("ExpectedDigest", hex::encode(e))
            .with(
                "CalculatedDigest",
                base64::engine::general_purpose::STANDARD.encode(g),
            )
            .into());
        }
    }
    let nvme = nvme.map(|n| n.sum());
    let mut computed: Vec<(String, String)> = digs.into_iter().map(|(a, d)| (a, d.b64())).collect();
    if let Some(n) = nvme {
        computed.push(("crc64nvme".into(), nvme_b64(n)));
    }
    let mut sent = header_sums;
    for (name, v) in &trailers {
        if let Some(alg) = name.strip_prefix("x-amz-checksum-") {
            if trailer_algs.iter().any(|a| a == alg) {
                sent.push((alg.to_string(), v.clone()));
            }
        }
    }
    for alg in &trailer_algs {
        if !sent.iter().any(|(a, _)| a == alg) {
            return Err(invalid_request(format!(
                "The trailer x-amz-checksum-{alg} announced in x-amz-trailer was not sent."
            ))
            .into());
        }
    }
    for (alg, v) in &sent {
        let got = computed
            .iter()
            .find(|(a, _)| a == alg)
            .map(|(_, g)| g.as_str());
        if got != Some(v.as_str()) {
            return Err(bad_digest(format!(
                "The {} you specified did not match the calculated checksum.",
                alg.to_ascii_uppercase()
            ))
            .into());
        }
    }
    let segment = sink.finish().await.map_err(internal)?;
    Ok(Received {
        size,
        crc: crc.sum(),
        nvme,
        md5,
        segment,
        checksums: sent,
    })
}
