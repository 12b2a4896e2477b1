//! Part sources: where the part scheduler ([`super::schedule`]) gets the parts to send and,
//! for every attempt of a part, its bytes.
//!
//! Guarantees callers can rely on:
//! * Every attempt of a part gets a fresh body with the same bytes ([`PartBody`]): a ranged
//!   GET is issued again (with `If-Match`, so a changed source is noticed, not mixed in); bytes
//!   cut from a decoded stream are held in memory until the part is acknowledged and sent
//!   again as the same `Bytes` (the decoder cannot be rewound).
//! * An attempt makes one request pair (GET + UploadPart, or one UploadPart) and does not
//!   retry: the scheduler decides, by the error's class, whether and when the part is tried
//!   again. The part's CRC-64 is computed as it streams (or known before it is sent) and must
//!   equal the one the destination echoes.
//! * A source hands out each part once ([`PartSource::next`]); parts an earlier run already
//!   holds may be handed back as [`Next::Resumed`] without being sent.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::checksum::{Checksum, Checksums};
use crate::store::{ByteStream, PartSpec, StoreError};

use super::decode::Charged;
use super::engine::{if_match, Ctx};
use super::pipe::{pipe, PipeError};
use super::state::StatePart;
use super::TransferError;

/// How one part's bytes are obtained, again for each attempt.
pub(super) enum PartBody {
    /// A ranged GET of the part's bytes piped into the UploadPart (`pipe.rs`): a retry is a
    /// new GET. `etag` is the source's, sent as `If-Match` (empty: none).
    Range { etag: Arc<str> },
    /// Bytes cut from the decoded stream, charged to the RAW budget until the part is
    /// acknowledged (or given up): a retry re-sends the same `Bytes`. `crc64` is known before
    /// the first byte is sent, so a store that checks it rejects damage on the way in.
    Memory { chunks: Vec<Charged>, crc64: u64 },
}

impl PartBody {
    /// How error messages name the part's bytes.
    pub(super) fn what(&self) -> &'static str {
        match self {
            Self::Range { .. } => "bytes",
            Self::Memory { .. } => "RAW bytes",
        }
    }
}

/// What a source hands the scheduler.
pub(super) enum Next {
    /// Part `idx` is to be sent. `replaces`: an earlier run recorded the part with other
    /// bytes; its record is dropped before the new bytes are sent.
    Send {
        idx: usize,
        body: PartBody,
        replaces: bool,
    },
    /// Part `idx` is already at the destination with these bytes (checked by the source): it
    /// is counted done without being sent and without a slot.
    Resumed(usize, StatePart),
    /// The source can give no more parts: [`PartSource::cause`] says why.
    Broken,
}

/// A supply of parts for the scheduler.
///
/// The scheduler calls [`next`](Self::next) whenever it could take a part and, while
/// [`wants_input`](Self::wants_input), awaits [`fill`](Self::fill) among its other events.
pub(super) trait PartSource {
    /// The next part, if one can be had without waiting. `slot`: whether the scheduler can
    /// send a part now; without one, only [`Next::Resumed`] or [`Next::Broken`] may come
    /// (a part that must be sent stays with the source until a slot is free).
    fn next(&mut self, slot: bool) -> Option<Next>;

    /// Every part has been handed out.
    fn exhausted(&self) -> bool;

    /// Whether the source needs input before it can hand out more parts.
    fn wants_input(&self) -> bool;

    /// Waits for input and keeps it (cancel-safe: nothing is lost if the future is dropped).
    fn fill(&mut self) -> impl Future<Output = ()> + Send + '_;

    /// Why the source broke (after [`Next::Broken`]).
    fn cause(&mut self) -> impl Future<Output = TransferError> + Send + '_;
}

/// The parts of a plain copy: every missing part is known up front and read by a ranged GET.
pub(super) struct Ranges {
    todo: VecDeque<usize>,
    etag: Arc<str>,
}

impl Ranges {
    /// Parts `todo` (indices into the plan) of a source whose ETag is `etag`.
    pub(super) fn new(todo: Vec<usize>, etag: Arc<str>) -> Self {
        Self {
            todo: todo.into(),
            etag,
        }
    }
}

impl PartSource for Ranges {
    fn next(&mut self, slot: bool) -> Option<Next> {
        if !slot {
            return None;
        }
        let idx = self.todo.pop_front()?;
        Some(Next::Send {
            idx,
            body: PartBody::Range {
                etag: self.etag.clone(),
            },
            replaces: false,
        })
    }

    fn exhausted(&self) -> bool {
        self.todo.is_empty()
    }

    fn wants_input(&self) -> bool {
        false
    }

    fn fill(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::pending()
    }

    fn cause(&mut self) -> impl Future<Output = TransferError> + Send + '_ {
        std::future::ready(TransferError::Plan(
            "internal error: a list of ranges cannot break".into(),
        ))
    }
}

/// A part acknowledged by the destination: its checksums (ours, CRC-64/XZ among them; each
/// equal to the store's echo of that algorithm, if it sent one) and its ETag.
pub(super) struct Sent {
    pub(super) checksums: Checksums,
    pub(super) etag: String,
}

/// One attempt of part `spec` from `body` into upload `upload_id`; no retry here.
pub(super) async fn attempt(
    ctx: &Ctx,
    spec: PartSpec,
    body: &PartBody,
    upload_id: &str,
) -> Result<Sent, PipeError> {
    match body {
        PartBody::Range { etag } => {
            let dst = &ctx.dst;
            let piped = pipe(
                &ctx.pipe,
                &ctx.src,
                spec.offset,
                spec.offset + spec.len,
                if_match(etag),
                None,
                move |body| async move {
                    // Streamed: the part's checksums are known only once it has been sent.
                    dst.store
                        .upload_part(&dst.key, upload_id, spec, body, &Checksums::new())
                        .await
                },
            )
            .await?;
            Ok(Sent {
                checksums: piped.checksums,
                etag: piped.uploaded.etag,
            })
        }
        PartBody::Memory { chunks, crc64 } => {
            from_memory(ctx, spec, chunks, *crc64, upload_id).await
        }
    }
}

/// One UploadPart of bytes held in memory; the destination's CRC-64, if it echoes one, must
/// equal `crc`.
async fn from_memory(
    ctx: &Ctx,
    spec: PartSpec,
    chunks: &[Charged],
    crc: u64,
    upload_id: &str,
) -> Result<Sent, PipeError> {
    // Generous: the whole part must cross the link, at ≥ 256 KiB/s.
    let timeout = ctx
        .opts
        .request_timeout
        .map(|t| t + Duration::from_secs(spec.len / (256 * 1024)));
    // The cutter knows the part's CRC-64/XZ; what else a side speaks (CRC-64/NVME for S3, MD5
    // for stores proving parts by ETag) is hashed here, once per attempt, over the same bytes.
    let mut expected: Checksums = Checksum::Crc64Xz(crc).into();
    let extra: Vec<_> = ctx
        .pipe
        .digest
        .algorithms()
        .into_iter()
        .filter(|a| *a != crate::checksum::Algorithm::Crc64Xz)
        .collect();
    if !extra.is_empty() {
        let mut d = crate::checksum::MultiDigest::new(extra);
        for c in chunks {
            d.update(&c.data);
        }
        for c in d.finish().iter() {
            expected.insert(c);
        }
    }
    let body: ByteStream = Box::pin(futures::stream::iter(
        chunks
            .iter()
            .map(|c| Ok(c.data.clone()))
            .collect::<Vec<Result<Bytes, StoreError>>>(),
    ));
    // Counted as the uploader pulls it, like the pipe's body (ossrelay_bytes_total).
    let body = super::progress::StreamCounter::upload(ctx.progress.clone()).counted(body);
    let r = super::within(
        timeout,
        ctx.dst
            .store
            .upload_part(&ctx.dst.key, upload_id, spec, body, &expected),
    )
    .await
    .unwrap_or_else(|| {
        Err(StoreError::transient(format!(
            "UploadPart: no response within {:?}",
            timeout.unwrap_or_default()
        )))
    });
    let u = r.map_err(PipeError::dst)?;
    match super::proof::compare(&u.checksums, &expected) {
        Err((reported, sent)) => Err(PipeError::dst(StoreError::transient(format!(
            "the destination reports {} {reported} for part {}, but {sent} was sent",
            reported.algorithm().name(),
            spec.number
        )))
        .with_reason("crc_mismatch")),
        Ok(matched) => {
            ctx.pipe.proofs.parts(matched);
            Ok(Sent {
                checksums: expected,
                etag: u.etag,
            })
        }
    }
}
