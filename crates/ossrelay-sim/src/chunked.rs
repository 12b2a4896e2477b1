//! Incremental decoder of `Content-Encoding: aws-chunked` bodies (s3-protocol.md §3): signed
//! chunks (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`), unsigned chunks with a trailer
//! (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, boto3's default), and the trailer lines.
//!
//! Guarantees: [`ChunkDecoder::feed`] returns the decoded data as zero-copy slices of its input
//! and fails as soon as a chunk's signature does not match (each chunk is verified when its last
//! byte arrives, so a bad chunk is never stored); [`ChunkDecoder::finish`] fails unless the body
//! ended with the zero-size chunk, and verifies the trailer signature when the mode signs it.
//! The decoder knows nothing of checksums: the caller checks trailer values against the data.

use bytes::{Buf, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::sigv4::{self, sign};

/// Longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;

/// What signs the chunks: the request's signing key, date and scope, and the signature that
/// precedes the next chunk (the request's own signature for the first).
#[derive(Clone)]
pub struct ChunkSigning {
    pub key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub prev: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Framing broken (bad size line, missing CRLF, body ended early).
    Malformed(String),
    /// A chunk or trailer signature did not match.
    Signature(String),
}

enum State {
    Header,
    Data { left: u64, sig: Option<String> },
    DataEnd { sig: Option<String> },
    Trailer,
    Done,
}

pub struct ChunkDecoder {
    buf: BytesMut,
    state: State,
    signing: Option<ChunkSigning>,
    hasher: Sha256,
    trailers: Vec<(String, String)>,
    trailer_sig: Option<String>,
    decoded: u64,
}

impl ChunkDecoder {
    /// `signing`: `Some` for the signed modes (chunk signatures required and checked).
    pub fn new(signing: Option<ChunkSigning>) -> Self {
        Self {
            buf: BytesMut::new(),
            state: State::Header,
            signing,
            hasher: Sha256::new(),
            trailers: Vec::new(),
            trailer_sig: None,
            decoded: 0,
        }
    }

    /// Decoded bytes so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    fn line(&mut self) -> Result<Option<String>, ChunkError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let l = self.buf.split_to(i);
                self.buf.advance(2);
                String::from_utf8(l.to_vec())
                    .map(Some)
                    .map_err(|_| ChunkError::Malformed("chunk header is not UTF-8".into()))
            }
            None if self.buf.len() > MAX_LINE => {
                Err(ChunkError::Malformed("chunk header line too long".into()))
            }
            None => Ok(None),
        }
    }

    fn check_chunk(&mut self, sig: Option<String>) -> Result<(), ChunkError> {
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let Some(s) = self.signing.as_mut() else {
            return Ok(());
        };
        let sts = sigv4::chunk_string_to_sign(&s.amz_date, &s.scope, &s.prev, &digest);
        let want = sign(&s.key, &sts);
        match sig {
            Some(got) if got == want => {
                s.prev = want;
                Ok(())
            }
            _ => Err(ChunkError::Signature(
                "The chunk signature we calculated does not match the signature you provided."
                    .into(),
            )),
        }
    }

    /// Feeds raw body bytes; returns the decoded data they completed.
    pub fn feed(&mut self, input: Bytes) -> Result<Vec<Bytes>, ChunkError> {
        let mut out = Vec::new();
        // Data passes through without copying when the buffer is empty.
        let mut input = input;
        loop {
            if let State::Data { left, .. } = &mut self.state {
                if self.buf.is_empty() && !input.is_empty() {
                    let n = (*left).min(input.len() as u64) as usize;
                    let d = input.split_to(n);
                    *left -= n as u64;
                    self.hasher.update(&d);
                    self.decoded += n as u64;
                    out.push(d);
                } else if !self.buf.is_empty() {
                    let n = (*left).min(self.buf.len() as u64) as usize;
                    let d = self.buf.split_to(n).freeze();
                    *left -= n as u64;
                    self.hasher.update(&d);
                    self.decoded += n as u64;
                    out.push(d);
                }
                if let State::Data { left: 0, sig } = &mut self.state {
                    let sig = sig.take();
                    self.state = State::DataEnd { sig };
                    continue;
                }
                if input.is_empty() {
                    return Ok(out);
                }
                continue;
            }
            if !input.is_empty() {
                self.buf.extend_from_slice(&input);
                input = Bytes::new();
            }
            match &mut self.state {
                State::Header => {
                    let Some(l) = self.line()? else {
                        return Ok(out);
                    };
                    let (size, ext) = match l.split_once(';') {
                        Some((s, e)) => (s, Some(e)),
                        None => (l.as_str(), None),
                    };
                    let size = u64::from_str_radix(size.trim(), 16)
                        .map_err(|_| ChunkError::Malformed(format!("bad chunk size line {l:?}")))?;
                    let sig = ext
                        .and_then(|e| e.trim().strip_prefix("chunk-signature="))
                        .map(|s| s.to_ascii_lowercase());
                    if self.signing.is_some() && sig.is_none() {
                        return Err(ChunkError::Signature(
                            "a signed aws-chunked body needs chunk-signature on every chunk".into(),
                        ));
                    }
                    if size == 0 {
                        self.check_chunk(sig)?;
                        self.state = State::Trailer;
                    } else {
                        self.state = State::Data { left: size, sig };
                    }
                }
                State::DataEnd { sig } => {
                    if self.buf.len() < 2 {
                        return Ok(out);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed(
                            "chunk data is not followed by CRLF (size line wrong?)".into(),
                        ));
                    }
                    self.buf.advance(2);
                    let sig = sig.take();
                    self.check_chunk(sig)?;
                    self.state = State::Header;
                }
                State::Trailer => {
                    let Some(l) = self.line()? else {
                        return Ok(out);
                    };
                    if l.is_empty() {
                        self.state = State::Done;
                        continue;
                    }
                    let (n, v) = l
                        .split_once(':')
                        .ok_or_else(|| ChunkError::Malformed(format!("bad trailer line {l:?}")))?;
                    let n = n.trim().to_ascii_lowercase();
                    if n == "x-amz-trailer-signature" {
                        self.trailer_sig = Some(v.trim().to_ascii_lowercase());
                    } else {
                        self.trailers.push((n, v.trim().to_string()));
                    }
                }
                State::Done => {
                    if self.buf.iter().any(|b| !b.is_ascii_whitespace()) {
                        return Err(ChunkError::Malformed(
                            "bytes after the end of the aws-chunked body".into(),
                        ));
                    }
                    self.buf.clear();
                    return Ok(out);
                }
                State::Data { .. } => unreachable!("handled above"),
            }
        }
    }

    /// Ends the body: returns the trailers (`name` lower case) after checking their signature
    /// when `signed_trailer`.
    pub fn finish(mut self, signed_trailer: bool) -> Result<Vec<(String, String)>, ChunkError> {
        // A last trailer line without its CRLF, and a missing final CRLF, are tolerated.
        if matches!(self.state, State::Trailer) && !self.buf.is_empty() {
            self.buf.extend_from_slice(b"\r\n");
            self.feed(Bytes::new())?;
        }
        if !matches!(self.state, State::Trailer | State::Done) {
            return Err(ChunkError::Malformed(
                "the aws-chunked body ended before its zero-size chunk".into(),
            ));
        }
        if signed_trailer {
            let s = self.signing.as_ref().ok_or_else(|| {
                ChunkError::Signature("signed trailer without a signing context".into())
            })?;
            let text: String = self
                .trailers
                .iter()
                .map(|(n, v)| format!("{n}:{v}\n"))
                .collect();
            let want = sign(
                &s.key,
                &sigv4::trailer_string_to_sign(&s.amz_date, &s.scope, &s.prev, &text),
            );
            if self.trailer_sig.as_deref() != Some(want.as_str()) {
                return Err(ChunkError::Signature(
                    "The trailer signature we calculated does not match the signature you provided."
                        .into(),
                ));
            }
        }
        Ok(self.trailers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn signing(seed: &str) -> ChunkSigning {
        ChunkSigning {
            key: sigv4::signing_key(SECRET, "20130524", "us-east-1", "s3"),
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            prev: seed.into(),
        }
    }

    fn body(sigs: [&str; 3], trailer: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(format!("10000;chunk-signature={}\r\n", sigs[0]).as_bytes());
        b.extend(std::iter::repeat_n(b'a', 65_536));
        b.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", sigs[1]).as_bytes());
        b.extend(std::iter::repeat_n(b'a', 1024));
        b.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n", sigs[2]).as_bytes());
        if let Some((t, s)) = trailer {
            b.extend_from_slice(format!("{t}\r\nx-amz-trailer-signature:{s}\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b
    }

    fn decode_in_pieces(
        d: &mut ChunkDecoder,
        b: &[u8],
        step: usize,
    ) -> Result<Vec<u8>, ChunkError> {
        let mut out = Vec::new();
        for piece in b.chunks(step) {
            for x in d.feed(Bytes::copy_from_slice(piece))? {
                out.extend_from_slice(&x);
            }
        }
        Ok(out)
    }

    #[test]
    fn doc_vector_signed_chunks() {
        let b = body(
            [
                "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
            ],
            None,
        );
        assert_eq!(b.len(), 66_824);
        for step in [1, 7, 1000, 70_000] {
            let mut d = ChunkDecoder::new(Some(signing(
                "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            )));
            let out = decode_in_pieces(&mut d, &b, step).unwrap();
            assert_eq!(out.len(), 66_560);
            assert!(out.iter().all(|&c| c == b'a'));
            assert!(d.finish(false).unwrap().is_empty());
        }
        // One flipped data byte: the first chunk's signature fails.
        let mut bad = b.clone();
        bad[100] = b'b';
        let mut d = ChunkDecoder::new(Some(signing(
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
        )));
        assert!(matches!(
            decode_in_pieces(&mut d, &bad, 4096),
            Err(ChunkError::Signature(_))
        ));
    }

    #[test]
    fn doc_vector_signed_trailer() {
        let b = body(
            [
                "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
                "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
                "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
            ],
            Some((
                "x-amz-checksum-crc32c:sOO8/Q==",
                "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435",
            )),
        );
        let mut d = ChunkDecoder::new(Some(signing(
            "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        )));
        let out = decode_in_pieces(&mut d, &b, 333).unwrap();
        assert_eq!(out.len(), 66_560);
        assert_eq!(
            d.finish(true).unwrap(),
            vec![("x-amz-checksum-crc32c".to_string(), "sOO8/Q==".to_string())]
        );
        assert_eq!(
            sigv4::sha256_hex(b"x-amz-checksum-crc32c:sOO8/Q==\n"),
            "1e376db7e1a34a8ef1c4bcee131a2d60a1cb62503747488624e10995f448d774"
        );
        // Without the final CRLF it still decodes.
        let mut d = ChunkDecoder::new(Some(signing(
            "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
        )));
        decode_in_pieces(&mut d, &b[..b.len() - 2], 65_000).unwrap();
        assert_eq!(d.finish(true).unwrap().len(), 1);
    }

    #[test]
    fn unsigned_trailer_and_truncation() {
        let b = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc64nvme:AAAAAAAAAAA=\r\n\r\n";
        let mut d = ChunkDecoder::new(None);
        let out = decode_in_pieces(&mut d, b, 3).unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(d.decoded(), 11);
        assert_eq!(d.finish(false).unwrap()[0].0, "x-amz-checksum-crc64nvme");
        let mut d = ChunkDecoder::new(None);
        decode_in_pieces(&mut d, &b[..12], 5).unwrap();
        assert!(d.finish(false).is_err());
        let mut d = ChunkDecoder::new(None);
        assert!(d.feed(Bytes::from_static(b"zz\r\n")).is_err());
    }
}
