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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::checksum::{Checksum, Checksums};
use crate::store::{ByteStream, PartSpec, StoreError};

use super::decode::Charged;
use super::engine::{if_match, Ctx};
use super::pipe::{pipe, EarlyGet, PipeError};
use super::state::StatePart;
use super::TransferError;

/// How one part's bytes are obtained, again for each attempt.
pub(super) enum PartBody {
    /// A ranged GET of the part's bytes piped into the UploadPart (`pipe.rs`): a retry is a
    /// new GET. `etag` is the source's, sent as `If-Match` (empty: none). `early`: the GET
    /// already issued for the first attempt (see [`EarlyGet`]), taken by it.
    Range {
        etag: Arc<str>,
        early: Option<EarlyGet>,
    },
    /// Bytes cut from the decoded stream, charged to the RAW budget until the part is
    /// acknowledged (or given up): a retry re-sends the same `Bytes`. `crc64` is known before
    /// the first byte is sent, so a store that checks it rejects damage on the way in.
    Memory { chunks: Vec<Charged>, crc64: u64 },
}

impl PartBody {
    /// A ranged part without a GET issued ahead.
    pub(super) fn range(etag: Arc<str>) -> Self {
        Self::Range { etag, early: None }
    }

    /// The GET issued ahead for this part, if one is left: the next attempt's.
    pub(super) fn take_early(&mut self) -> Option<EarlyGet> {
        match self {
            Self::Range { early, .. } => early.take(),
            Self::Memory { .. } => None,
        }
    }

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
    /// GETs issued ahead, by plan index (see [`EarlyGet`]); those never handed out are
    /// aborted when the source is dropped.
    early: HashMap<usize, EarlyGet>,
}

impl Ranges {
    /// Parts `todo` (indices into the plan) of a source whose ETag is `etag`.
    pub(super) fn new(todo: Vec<usize>, etag: Arc<str>) -> Self {
        Self {
            todo: todo.into(),
            etag,
            early: HashMap::new(),
        }
    }

    /// With GETs already issued for some of the parts (plan index, GET).
    pub(super) fn with_early(mut self, early: impl IntoIterator<Item = (usize, EarlyGet)>) -> Self {
        self.early.extend(early);
        self
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
                early: self.early.remove(&idx),
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

/// What an attempt tells the scheduler while its UploadPart body streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// The uploader took the body's first bytes (the GET's first byte has arrived).
    FirstByte,
    /// The uploader took the body's last byte: only the response is pending now.
    BodySent,
}

/// One attempt's progress as the uploader pulls its body, shared with the scheduler: how
/// far it is (for the early start of the next part and for hedging) and, by message, when it
/// got its first byte and when its body was all sent. Two atomics and at most two messages
/// per attempt: nothing per chunk beyond one relaxed add.
pub(super) struct Watch {
    pub(super) id: u64,
    pub(super) started: Instant,
    pub(super) len: u64,
    /// Bytes the uploader took.
    pub(super) sent: AtomicU64,
    /// Microseconds from `started` to the first byte taken, plus one (0: none yet).
    first_byte: AtomicU64,
    tx: UnboundedSender<(u64, Signal)>,
}

impl Watch {
    /// An attempt started at `started`: now, or when its GET was issued ahead.
    pub(super) fn new(
        id: u64,
        len: u64,
        started: Instant,
        tx: UnboundedSender<(u64, Signal)>,
    ) -> Self {
        Self {
            id,
            started,
            len,
            sent: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            tx,
        }
    }

    /// When the first byte was taken.
    pub(super) fn first_byte(&self) -> Option<Instant> {
        match self.first_byte.load(Relaxed) {
            0 => None,
            us => Some(self.started + Duration::from_micros(us - 1)),
        }
    }

    /// The body's rate since its first byte, bytes/s (`None` before it, or too soon to say).
    pub(super) fn rate(&self, now: Instant) -> Option<f64> {
        let t = now
            .saturating_duration_since(self.first_byte()?)
            .as_secs_f64();
        (t > 0.0).then(|| self.sent.load(Relaxed) as f64 / t)
    }

    /// Wraps an UploadPart body so the uploader's pulls are counted here.
    fn wrap(self: &Arc<Self>, inner: ByteStream) -> ByteStream {
        Box::pin(Watched {
            inner,
            watch: self.clone(),
            done: false,
        })
    }

    fn took(&self, n: u64) {
        if self.first_byte.load(Relaxed) == 0 {
            let us = self.started.elapsed().as_micros() as u64 + 1;
            self.first_byte.store(us, Relaxed);
            let _ = self.tx.send((self.id, Signal::FirstByte));
        }
        self.sent.fetch_add(n, Relaxed);
    }

    fn all_sent(&self) {
        // A closed channel: the scheduler is gone and nobody is counting.
        let _ = self.tx.send((self.id, Signal::BodySent));
    }
}

/// An UploadPart body reporting to its [`Watch`].
struct Watched {
    inner: ByteStream,
    watch: Arc<Watch>,
    done: bool,
}

impl Stream for Watched {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = self.inner.as_mut().poll_next(cx);
        match &r {
            Poll::Ready(Some(Ok(b))) if !b.is_empty() => {
                self.watch.took(b.len() as u64);
                // The last byte taken: an uploader that knows the length may never poll
                // for the end, so do not wait for `None`.
                if !self.done && self.watch.sent.load(Relaxed) >= self.watch.len {
                    self.done = true;
                    self.watch.all_sent();
                }
            }
            Poll::Ready(None) if !self.done && self.watch.sent.load(Relaxed) >= self.watch.len => {
                self.done = true;
                self.watch.all_sent();
            }
            _ => {}
        }
        r
    }
}

/// One attempt of part `spec` from `body` into upload `upload_id`; no retry here. `watch`
/// sees the UploadPart body stream (see [`Watch`]); `early`: the GET issued ahead for it.
pub(super) async fn attempt(
    ctx: &Ctx,
    spec: PartSpec,
    body: &PartBody,
    early: Option<EarlyGet>,
    upload_id: &str,
    watch: &Arc<Watch>,
) -> Result<Sent, PipeError> {
    match body {
        PartBody::Range { etag, .. } => {
            let dst = &ctx.dst;
            let piped = pipe(
                &ctx.pipe,
                &ctx.src,
                spec.offset,
                spec.offset + spec.len,
                if_match(etag),
                None,
                early,
                move |body| async move {
                    // Streamed: the part's checksums are known only once it has been sent.
                    let body = watch.wrap(body);
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
            from_memory(ctx, spec, chunks, *crc64, upload_id, watch).await
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
    watch: &Arc<Watch>,
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
    let body = watch.wrap(body);
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
