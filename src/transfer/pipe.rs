//! The hot path: one ranged GET streamed into one upload.
//!
//! The upload body pulls straight from the GET body: each time the uploader asks for data, the
//! body takes the next source chunk, checks the byte count, updates the CRC-64, charges it to
//! the memory budget (and the bandwidth bucket) and hands it over, with no copy and no task in
//! between (a feeder task with a channel cost a task hop and two wake-ups per chunk, about a
//! fifth more CPU per byte than the bare GET-into-PUT). A chunk's budget bytes are released
//! when the uploader asks for the next one or drops the body. The part's task only watches
//! the outcome the body records, and, for stores without a transport of their own (test
//! doubles, with `CopyOptions::idle_timeout` set), stalls on either side and the response
//! timeout. HTTP stores are watched by the transport's one stall timer ([`crate::http`]).
//!
//! Bytes are counted as they move, not when a part ends: each source chunk counts as
//! downloaded when it arrives and each piece as uploaded when the uploader takes it, through
//! a [`StreamCounter`] whose metric handle is looked up once per body (two relaxed atomic
//! adds per chunk). Counting at the end of a part made `rate()` a staircase of part sizes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::checksum::{Checksum, Checksums, MultiDigest};
use crate::store::{ByteStream, ErrorClass, StoreError, Uploaded};

use super::budget::{MemoryBudget, TokenBucket};
use super::progress::StreamCounter;
use super::{Location, Progress};

/// What every pipe of a copy shares.
pub(crate) struct PipeCtx {
    pub progress: Arc<Progress>,
    pub budget: Arc<MemoryBudget>,
    pub bandwidth: Option<Arc<TokenBucket>>,
    /// `None`: no engine-side stall timer (the stores' transport has one).
    pub idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub chunk_size: usize,
    /// Consumed bytes a body may keep charged before giving them back in one go.
    pub release_batch: u32,
    /// The checksums every range computes as it streams (always CRC-64/XZ, the relay's own
    /// record; CRC-64/NVME or MD5 when a side speaks them), cloned fresh for each body.
    pub digest: MultiDigest,
    /// Which kinds of proof held, for the summary's `verified_by`.
    pub proofs: Arc<super::proof::ProofLog>,
}

/// Which side of the pipe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// A failed pipe, with the label used for the retry metric.
#[derive(Debug, Clone)]
pub(crate) struct PipeError {
    pub side: Side,
    /// `ErrorClass::as_str()` or a finer reason such as `crc_mismatch` / `truncated`.
    pub reason: &'static str,
    pub err: StoreError,
}

impl PipeError {
    fn src(err: StoreError) -> Self {
        Self {
            side: Side::Source,
            reason: err.class.as_str(),
            err,
        }
    }
    pub(crate) fn dst(err: StoreError) -> Self {
        Self {
            side: Side::Destination,
            reason: err.class.as_str(),
            err,
        }
    }
    pub(crate) fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
    pub fn class(&self) -> ErrorClass {
        self.err.class
    }
}

/// A piped range: its checksums as computed locally and what the destination returned.
#[derive(Debug, Clone)]
pub(crate) struct Piped {
    pub checksums: Checksums,
    pub uploaded: Uploaded,
}

/// A ranged GET issued before the attempt that reads it: the first parts of a new upload are
/// requested while InitiateMultipartUpload is still outstanding, so their first bytes are at
/// hand when the upload id arrives instead of one round trip later (at a 200 ms round trip,
/// 0.2 s of every connection at the start of a copy). Its body is not read until the pipe
/// takes it (unread bytes wait in the socket, not in our buffers). Dropped unused, its task
/// is aborted and the connection closed.
pub(crate) struct EarlyGet {
    /// When the request was issued: the attempt's time to first byte counts from here.
    pub issued: Instant,
    start: u64,
    end: u64,
    task: tokio_util::task::AbortOnDropHandle<Result<ByteStream, StoreError>>,
}

impl EarlyGet {
    /// Issues the GET of `[start, end)` of `src` now, in a task of its own (so it goes out
    /// whether or not anyone polls it yet).
    pub(crate) fn issue(src: &Location, start: u64, end: u64, if_match: Option<&str>) -> Self {
        let store = src.store.clone();
        let key = src.key.clone();
        let if_match = if_match.map(str::to_owned);
        let task =
            tokio::spawn(
                async move { store.get_range(&key, start, end, if_match.as_deref()).await },
            );
        Self {
            issued: Instant::now(),
            start,
            end,
            task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }

    /// The response, if it is for `[start, end)`; `None` (and the request dropped) otherwise.
    async fn open(self, start: u64, end: u64) -> Option<Result<ByteStream, StoreError>> {
        if (self.start, self.end) != (start, end) {
            return None;
        }
        Some(self.task.await.unwrap_or_else(|e| {
            Err(StoreError::transient(format!(
                "the GET issued ahead of its part did not finish: {e}"
            )))
        }))
    }
}

/// Streams source bytes `[start, end)` into `upload`. With `expected` (the source's checksum
/// of the whole range), the last chunk is withheld (and the upload failed) if the range's
/// checksum of that algorithm differs, so a whole-object PUT never commits corrupted bytes.
/// Every checksum the destination echoes for the range must equal ours. `early`: the range's
/// GET issued ahead ([`EarlyGet`]), used instead of a new one when it asked for this range.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pipe<F, Fut>(
    ctx: &PipeCtx,
    src: &Location,
    start: u64,
    end: u64,
    if_match: Option<&str>,
    expected: Option<Checksum>,
    early: Option<EarlyGet>,
    upload: F,
) -> Result<Piped, PipeError>
where
    F: FnOnce(ByteStream) -> Fut,
    Fut: Future<Output = Result<Uploaded, StoreError>>,
{
    let len = end - start;
    // The GET first: the upload only starts once there are bytes to send, so a failing or
    // slow source never leaves an idle UploadPart connection open (OSS would time it out).
    let stream = if len == 0 {
        // Nothing to fetch: an empty range request is invalid on some stores.
        Box::pin(futures::stream::empty()) as ByteStream
    } else {
        let get = async {
            if let Some(e) = early {
                if let Some(r) = e.open(start, end).await {
                    return r;
                }
            }
            src.store.get_range(&src.key, start, end, if_match).await
        };
        match super::within(ctx.request_timeout, get).await {
            None => {
                return Err(PipeError::src(StoreError::transient(format!(
                    "no response from {} within {:?}",
                    src.describe(),
                    ctx.request_timeout.unwrap_or_default()
                )))
                .with_reason("timeout"))
            }
            Some(Err(e)) => return Err(PipeError::src(e)),
            Some(Ok(s)) => s,
        }
    };
    let shared = Arc::new(Shared::default());
    if len == 0 {
        *shared.outcome.lock().expect("pipe outcome") = Some(Ok(ctx.digest.clone().finish()));
    }
    let body: ByteStream = Box::pin(Body {
        src: stream,
        len,
        got: 0,
        digest: Some(ctx.digest.clone()),
        expected,
        max_chunk: (ctx.chunk_size as u64).min(ctx.budget.max_chunk()).max(1) as usize,
        rest: Bytes::new(),
        ready: None,
        bandwidth: ctx.bandwidth.clone(),
        bw_wait: None,
        budget: ctx.budget.clone(),
        budget_wait: None,
        held: 0,
        release_batch: ctx.release_batch,
        shared: shared.clone(),
        downloaded: StreamCounter::download(ctx.progress.clone()),
        uploaded: StreamCounter::upload(ctx.progress.clone()),
        ended: false,
        unyielded: 0,
    });
    let up = upload(body);
    tokio::pin!(up);
    // One timer, only when the engine watches stalls itself (no transport does): while the
    // body moves, it checks every idle period that a chunk was taken (a stall is noticed
    // after one to two periods); once the body is all sent, it bounds the wait for the
    // response.
    let watch = ctx.idle_timeout.is_some();
    let idle_timeout = ctx.idle_timeout.unwrap_or(Duration::MAX);
    let request_timeout = ctx.request_timeout.unwrap_or(idle_timeout);
    let stall = tokio::time::sleep(idle_timeout);
    tokio::pin!(stall);
    let mut sent = false;
    loop {
        tokio::select! {
            biased;
            r = &mut up => {
                let outcome = shared.outcome.lock().expect("pipe outcome").take();
                return match (r, outcome) {
                    // The source failed (the body passed the error on): that is the cause.
                    (_, Some(Err(e))) => Err(e),
                    (Err(e), _) => Err(PipeError::dst(e)),
                    (Ok(_), None) => Err(PipeError::dst(StoreError::transient(
                        "the destination accepted a body that was not fully sent",
                    ))),
                    (Ok(uploaded), Some(Ok(checksums))) => {
                        let echoed = super::proof::compare(&uploaded.checksums, &checksums)
                            .map_err(|(reported, sent)| {
                                PipeError::dst(StoreError::transient(format!(
                                    "the destination reports {} {reported} for bytes {start}-{end}, \
                                     but {sent} was sent",
                                    reported.algorithm().name()
                                )))
                                .with_reason("crc_mismatch")
                            })?;
                        ctx.proofs.parts(echoed);
                        Ok(Piped { checksums, uploaded })
                    }
                };
            }
            _ = shared.done.notified(), if !sent && watch => {
                sent = true;
                stall.as_mut().reset(after(request_timeout));
            }
            _ = &mut stall, if watch => {
                if sent {
                    return Err(PipeError::dst(StoreError::transient(format!(
                        "the destination did not answer within {:?} after the body was sent",
                        request_timeout
                    )))
                    .with_reason("timeout"));
                }
                if !shared.taken.swap(false, Relaxed) {
                    match shared.waiting.load(Relaxed) {
                        WAIT_SOURCE => {
                            return Err(PipeError::src(StoreError::transient(format!(
                                "the source sent nothing for {:?}",
                                idle_timeout
                            )))
                            .with_reason("timeout"))
                        }
                        WAIT_CONSUMER => {
                            return Err(PipeError::dst(StoreError::transient(format!(
                                "the destination took no data for {:?}",
                                idle_timeout
                            )))
                            .with_reason("timeout"))
                        }
                        // Waiting for the shared budget or bandwidth: not a stall of this part.
                        _ => {}
                    }
                }
                stall.as_mut().reset(after(idle_timeout));
            }
        }
    }
}

/// `now + d`, or far in the future when that overflows.
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30))
}

/// Bytes a body hands over in one go before it lets other tasks run (network bodies return
/// `Pending` far more often than this).
const YIELD_AFTER: usize = 1024 * 1024;

/// What the body is waiting for when it is not producing (for the stall diagnosis).
const WAIT_CONSUMER: u8 = 0;
const WAIT_SOURCE: u8 = 1;
const WAIT_BUDGET: u8 = 2;

/// What the body tells the pipe.
#[derive(Default)]
struct Shared {
    /// A chunk was handed to the uploader since the pipe last looked.
    taken: AtomicBool,
    /// One of the `WAIT_*` values.
    waiting: AtomicU8,
    /// Set once, when every byte has been handed over.
    done: Notify,
    /// The range's checksums once all bytes were read (and checked against `expected`), or
    /// the source failure that ended the body.
    outcome: Mutex<Option<Result<Checksums, PipeError>>>,
}

/// The upload body: pulls, checks, hashes and charges source chunks on demand.
struct Body {
    src: ByteStream,
    len: u64,
    /// Source bytes received (including `rest` and `ready`).
    got: u64,
    /// Taken when the last byte is hashed.
    digest: Option<MultiDigest>,
    expected: Option<Checksum>,
    max_chunk: usize,
    /// The part of the current source chunk not yet split off.
    rest: Bytes,
    /// A piece hashed and counted, waiting for bandwidth and budget.
    ready: Option<Bytes>,
    bandwidth: Option<Arc<TokenBucket>>,
    bw_wait: Option<BoxFuture<'static, ()>>,
    budget: Arc<MemoryBudget>,
    budget_wait: Option<BoxFuture<'static, u32>>,
    /// Budget bytes of handed-over chunks not yet given back: released in batches (one
    /// semaphore operation per batch, not per chunk), and always before the body waits.
    held: u32,
    release_batch: u32,
    shared: Arc<Shared>,
    /// Every byte fetched counts (retried ones too: they are billed egress).
    downloaded: StreamCounter,
    /// Every byte handed to the uploader (resent ones too: they crossed the link).
    uploaded: StreamCounter,
    ended: bool,
    /// Bytes handed over since the body last returned `Pending`.
    unyielded: usize,
}

impl Body {
    fn release_held(&mut self) {
        if self.held > 0 {
            self.budget.release(self.held);
            self.held = 0;
        }
    }

    /// Never wait while holding bytes: other parts may be waiting for them.
    fn pending(&mut self, waiting: u8) -> Poll<Option<Result<Bytes, StoreError>>> {
        self.release_held();
        self.unyielded = 0;
        self.shared.waiting.store(waiting, Relaxed);
        Poll::Pending
    }

    /// Ends the body with a source failure, recorded for the pipe.
    fn fail(&mut self, e: PipeError) -> Poll<Option<Result<Bytes, StoreError>>> {
        self.ended = true;
        self.release_held();
        let err = e.err.clone();
        *self.shared.outcome.lock().expect("pipe outcome") = Some(Err(e));
        Poll::Ready(Some(Err(err)))
    }
}

impl Stream for Body {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        // The consumer is back for more: the previous chunks are consumed.
        if this.held >= this.release_batch {
            this.release_held();
        }
        // A source and consumer that are always ready (memory, local files) would otherwise
        // keep the worker for a whole part, and parts would run one after the other.
        if this.unyielded >= YIELD_AFTER {
            cx.waker().wake_by_ref();
            return this.pending(WAIT_CONSUMER);
        }
        loop {
            if this.ready.is_some() {
                if let Some(w) = this.bw_wait.as_mut() {
                    match w.as_mut().poll(cx) {
                        Poll::Pending => return this.pending(WAIT_BUDGET),
                        Poll::Ready(()) => this.bw_wait = None,
                    }
                }
                let n = this.ready.as_ref().map_or(0, |b| b.len() as u64);
                let weight = match this.budget_wait.as_mut() {
                    Some(w) => match w.as_mut().poll(cx) {
                        Poll::Pending => return this.pending(WAIT_BUDGET),
                        Poll::Ready(weight) => {
                            this.budget_wait = None;
                            weight
                        }
                    },
                    None => match this.budget.try_take(n) {
                        Some(weight) => weight,
                        None => {
                            // Give back ours first: the wait may be for them.
                            this.release_held();
                            let b = this.budget.clone();
                            this.budget_wait =
                                Some(Box::pin(async move { b.acquire(n).await.hand_over() }));
                            continue;
                        }
                    },
                };
                this.held = this.held.saturating_add(weight);
                let piece = this.ready.take().expect("checked above");
                this.shared.taken.store(true, Relaxed);
                this.shared.waiting.store(WAIT_CONSUMER, Relaxed);
                if this.got == this.len && this.rest.is_empty() {
                    // A consumer that knows the length may never poll for the end.
                    this.ended = true;
                    this.shared.done.notify_one();
                }
                this.unyielded += piece.len();
                this.uploaded.add(piece.len() as u64);
                return Poll::Ready(Some(Ok(piece)));
            }
            if !this.rest.is_empty() {
                let piece = if this.rest.len() > this.max_chunk {
                    this.rest.split_to(this.max_chunk)
                } else {
                    std::mem::take(&mut this.rest)
                };
                if let Some(d) = this.digest.as_mut() {
                    d.update(&piece);
                }
                if this.got == this.len && this.rest.is_empty() {
                    let sums = this
                        .digest
                        .take()
                        .map(MultiDigest::finish)
                        .unwrap_or_default();
                    if let Some(want) = this.expected {
                        match sums.get(want.algorithm()) {
                            Some(got) if got != want => {
                                return this.fail(
                                    PipeError::src(StoreError::transient(format!(
                                        "the source bytes have {} {got}, but the source reports {want}",
                                        want.algorithm().name()
                                    )))
                                    .with_reason("crc_mismatch"),
                                );
                            }
                            _ => {}
                        }
                    }
                    *this.shared.outcome.lock().expect("pipe outcome") = Some(Ok(sums));
                }
                if let Some(bw) = &this.bandwidth {
                    let (bw, n) = (bw.clone(), piece.len() as u64);
                    this.bw_wait = Some(Box::pin(async move { bw.acquire(n).await }));
                }
                this.ready = Some(piece);
                continue;
            }
            if this.got == this.len {
                this.ended = true;
                this.shared.done.notify_one();
                return Poll::Ready(None);
            }
            match this.src.as_mut().poll_next(cx) {
                Poll::Pending => return this.pending(WAIT_SOURCE),
                Poll::Ready(None) => {
                    let (got, len) = (this.got, this.len);
                    return this.fail(
                        PipeError::src(StoreError::transient(format!(
                            "the source body ended after {got} of {len} bytes"
                        )))
                        .with_reason("truncated"),
                    );
                }
                Poll::Ready(Some(Err(e))) => return this.fail(PipeError::src(e)),
                Poll::Ready(Some(Ok(chunk))) => {
                    if this.got + chunk.len() as u64 > this.len {
                        let len = this.len;
                        return this.fail(PipeError::src(StoreError::transient(format!(
                            "the source sent more than the {len} bytes requested"
                        ))));
                    }
                    this.got += chunk.len() as u64;
                    this.downloaded.add(chunk.len() as u64);
                    this.rest = chunk;
                }
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.release_held();
    }
}
