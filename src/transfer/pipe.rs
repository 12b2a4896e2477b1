//! The hot path: one ranged GET streamed into one upload through a small bounded buffer.
//!
//! A feeder reads the GET body, checks the byte count, updates the CRC-64, charges each chunk
//! to the memory budget (and the bandwidth bucket) and hands it, with its permit, to a bounded
//! channel. The upload body drains the channel; a chunk's permit is released when the uploader
//! asks for the next chunk or drops the body. Both halves run in the part's task, so nothing is
//! spawned per part and a failed upload simply drops the GET.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use crate::crc64::Crc64;
use crate::store::{ByteStream, ErrorClass, StoreError, Uploaded};

use super::budget::{MemoryBudget, TokenBucket};
use super::{Location, Progress};

/// Bytes one part may queue between its GET and its upload (the channel depth is derived from
/// it). Kept small: a queued chunk pins its whole HTTP read buffer whatever its length, so the
/// number of slots, not bytes, bounds RSS; hyper's write queue and the sockets buffer more.
const PER_PART_BUFFER: usize = 1024 * 1024;

/// What every pipe of a copy shares.
pub(crate) struct PipeCtx {
    pub progress: Arc<Progress>,
    pub budget: Arc<MemoryBudget>,
    pub bandwidth: Option<Arc<TokenBucket>>,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub chunk_size: usize,
    /// Consumed bytes a body may keep charged before giving them back in one go.
    pub release_batch: u32,
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
    fn dst(err: StoreError) -> Self {
        Self {
            side: Side::Destination,
            reason: err.class.as_str(),
            err,
        }
    }
    fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
    pub fn class(&self) -> ErrorClass {
        self.err.class
    }
}

/// A piped range: its CRC-64 as computed locally and what the destination returned.
#[derive(Debug, Clone)]
pub(crate) struct Piped {
    pub crc64: u64,
    pub uploaded: Uploaded,
}

/// A chunk and the budget bytes it carries (released by whoever ends up holding it).
type Item = Result<(Bytes, u32), StoreError>;

/// Streams source bytes `[start, end)` into `upload`. With `expected_crc`, the last chunk is
/// withheld (and the upload failed) if the range's CRC-64 differs, so a whole-object PUT never
/// commits corrupted bytes.
pub(crate) async fn pipe<F, Fut>(
    ctx: &PipeCtx,
    src: &Location,
    start: u64,
    end: u64,
    if_match: Option<&str>,
    expected_crc: Option<u64>,
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
        match tokio::time::timeout(
            ctx.request_timeout,
            src.store.get_range(&src.key, start, end, if_match),
        )
        .await
        {
            Err(_) => {
                return Err(PipeError::src(StoreError::transient(format!(
                    "no response from {} within {:?}",
                    src.describe(),
                    ctx.request_timeout
                )))
                .with_reason("timeout"))
            }
            Ok(Err(e)) => return Err(PipeError::src(e)),
            Ok(Ok(s)) => s,
        }
    };
    let (tx, rx) = mpsc::channel::<Item>(channel_depth(ctx.chunk_size));
    let signals = Arc::new(BodySignals::default());
    let body: ByteStream = Box::pin(Body {
        rx,
        held: 0,
        release_batch: ctx.release_batch,
        budget: ctx.budget.clone(),
        signals: signals.clone(),
        remaining: len,
    });
    let feeding = feed(ctx, stream, len, expected_crc, tx);
    let up = async {
        let fut = upload(body);
        tokio::select! {
            r = fut => r.map_err(PipeError::dst),
            _ = async { signals.done.notified().await; tokio::time::sleep(ctx.request_timeout).await } => {
                Err(PipeError::dst(StoreError::transient(format!(
                    "the destination did not answer within {:?} after the body was sent",
                    ctx.request_timeout
                ))).with_reason("timeout"))
            }
        }
    };
    tokio::pin!(feeding, up);
    let mut fed: Option<u64> = None;
    // Once everything is queued, the feeder no longer notices a consumer that stopped
    // reading (a short part fits in the buffer): watch the body instead.
    let stall = tokio::time::sleep(ctx.idle_timeout);
    tokio::pin!(stall);
    loop {
        tokio::select! {
            biased;
            _ = &mut stall, if fed.is_some() && !signals.finished.load(Relaxed) => {
                if !signals.taken.swap(false, Relaxed) {
                    return Err(PipeError::dst(StoreError::transient(format!(
                        "the destination took no data for {:?}",
                        ctx.idle_timeout
                    )))
                    .with_reason("timeout"));
                }
                stall.as_mut().reset(Instant::now() + ctx.idle_timeout);
            },
            r = &mut feeding, if fed.is_none() => match r {
                Ok(crc) => {
                    fed = Some(crc);
                    signals.taken.store(false, Relaxed);
                    stall.as_mut().reset(Instant::now() + ctx.idle_timeout);
                }
                // The source failed (the error was also sent into the body): that is the cause.
                Err(FeedError::Pipe(e)) => return Err(e),
                // The uploader dropped the body: its own result says why.
                Err(FeedError::Gone) => {
                    return Err(up.await.err().unwrap_or_else(|| {
                        PipeError::dst(StoreError::transient(
                            "the destination accepted a body that was not fully sent",
                        ))
                    }))
                }
            },
            r = &mut up => {
                let uploaded = r?;
                let crc64 = match fed {
                    Some(c) => c,
                    None => match feeding.await {
                        Ok(c) => c,
                        Err(FeedError::Pipe(e)) => return Err(e),
                        Err(FeedError::Gone) => {
                            return Err(PipeError::dst(StoreError::transient(
                                "the destination stopped reading the body early",
                            )))
                        }
                    },
                };
                if let Some(reported) = uploaded.crc64 {
                    if reported != crc64 {
                        return Err(PipeError::dst(StoreError::transient(format!(
                            "the destination reports CRC-64 {reported} for bytes {start}-{end}, \
                             but {crc64} was sent"
                        )))
                        .with_reason("crc_mismatch"));
                    }
                }
                return Ok(Piped { crc64, uploaded });
            }
        }
    }
}

fn channel_depth(chunk_size: usize) -> usize {
    (PER_PART_BUFFER / chunk_size.max(1)).clamp(2, 64)
}

enum FeedError {
    Pipe(PipeError),
    Gone,
}

impl From<PipeError> for FeedError {
    fn from(e: PipeError) -> Self {
        Self::Pipe(e)
    }
}

async fn feed(
    ctx: &PipeCtx,
    mut stream: ByteStream,
    len: u64,
    expected_crc: Option<u64>,
    tx: mpsc::Sender<Item>,
) -> Result<u64, FeedError> {
    let max_chunk = (ctx.chunk_size as u64).min(ctx.budget.max_chunk()).max(1) as usize;
    let mut crc = Crc64::new();
    // Every byte fetched counts (retried ones too: they are billed egress), once per attempt.
    let mut counted = DownloadCount {
        bytes: 0,
        progress: &ctx.progress,
    };
    let got = &mut counted.bytes;
    // One timer for the whole stream, and no clock read per chunk: chunks only set `active`;
    // when the timer fires it is re-armed if anything moved during the last period, so a
    // stall is detected after between one and two idle periods.
    let idle = tokio::time::sleep(ctx.idle_timeout);
    tokio::pin!(idle);
    let mut active = false;
    // Sends an error into the body so the upload fails too, then reports it.
    macro_rules! fail {
        ($e:expr) => {{
            let e: PipeError = $e;
            let _ = tx.try_send(Err(e.err.clone()));
            return Err(FeedError::Pipe(e));
        }};
    }
    loop {
        let next = loop {
            tokio::select! {
                biased;
                n = stream.next() => break n,
                _ = &mut idle => {
                    if !std::mem::take(&mut active) {
                        fail!(PipeError::src(StoreError::transient(format!(
                            "the source sent nothing for {:?}", ctx.idle_timeout
                        ))).with_reason("timeout"));
                    }
                    idle.as_mut().reset(Instant::now() + ctx.idle_timeout);
                }
            }
        };
        active = true;
        let mut chunk = match next {
            None => break,
            Some(Ok(b)) => b,
            Some(Err(e)) => fail!(PipeError::src(e)),
        };
        if *got + chunk.len() as u64 > len {
            fail!(PipeError::src(StoreError::transient(format!(
                "the source sent more than the {len} bytes requested"
            ))));
        }
        while !chunk.is_empty() {
            let piece = if chunk.len() > max_chunk {
                chunk.split_to(max_chunk)
            } else {
                std::mem::take(&mut chunk)
            };
            crc.update(&piece);
            *got += piece.len() as u64;
            if *got == len {
                if let Some(want) = expected_crc {
                    if crc.sum() != want {
                        fail!(PipeError::src(StoreError::transient(format!(
                            "the source bytes have CRC-64 {}, but the source reports {want}",
                            crc.sum()
                        )))
                        .with_reason("crc_mismatch"));
                    }
                }
            }
            if let Some(bw) = &ctx.bandwidth {
                bw.acquire(piece.len() as u64).await;
            }
            // Held by this guard until the channel owns the chunk (a failed or dropped send
            // gives it back); from then on the body releases it.
            let permit = ctx.budget.acquire(piece.len() as u64).await;
            let weight = permit.bytes();
            // Common case first: room in the buffer, no timer needed.
            let piece = match tx.try_send(Ok((piece, weight))) {
                Ok(()) => {
                    permit.hand_over();
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(FeedError::Gone),
                Err(mpsc::error::TrySendError::Full(item)) => item,
            };
            let send = tx.send(piece);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    biased;
                    r = &mut send => match r {
                        Ok(()) => break,
                        Err(_) => return Err(FeedError::Gone),
                    },
                    _ = &mut idle => {
                        if !std::mem::take(&mut active) {
                            fail!(PipeError::dst(StoreError::transient(format!(
                                "the destination took no data for {:?}", ctx.idle_timeout
                            ))).with_reason("timeout"));
                        }
                        idle.as_mut().reset(Instant::now() + ctx.idle_timeout);
                    }
                }
            }
            permit.hand_over();
            active = true;
        }
    }
    if *got != len {
        fail!(PipeError::src(StoreError::transient(format!(
            "the source body ended after {} of {len} bytes",
            *got
        )))
        .with_reason("truncated"));
    }
    Ok(crc.sum())
}

/// Adds a range's fetched bytes to the download counters when the feed ends, however it ends.
struct DownloadCount<'a> {
    bytes: u64,
    progress: &'a Progress,
}

impl Drop for DownloadCount<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.progress
                .downloaded_bytes
                .fetch_add(self.bytes, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(crate::metrics::BYTES_TOTAL, "direction" => "download")
                .increment(self.bytes);
        }
    }
}

/// The upload body: yields the channel's chunks and keeps each chunk's budget bytes until the
/// consumer comes back for more; on drop it gives back everything still queued.
struct Body {
    rx: mpsc::Receiver<Item>,
    /// Budget bytes of consumed chunks not yet given back: released in batches (one
    /// semaphore lock per batch, not per chunk), and always before the body waits.
    held: u32,
    release_batch: u32,
    budget: Arc<MemoryBudget>,
    signals: Arc<BodySignals>,
    /// Bytes not yet yielded: a consumer that knows the length may never poll for the end.
    remaining: u64,
}

/// What the body tells the pipe about its consumer.
#[derive(Default)]
struct BodySignals {
    /// A chunk was taken since the pipe last looked.
    taken: AtomicBool,
    /// The consumer read the end of the body.
    finished: AtomicBool,
    done: Notify,
}

impl BodySignals {
    fn finish(&self) {
        if !self.finished.swap(true, Relaxed) {
            self.done.notify_one();
        }
    }
}

impl Body {
    fn release_held(&mut self) {
        if self.held > 0 {
            self.budget.release(self.held);
            self.held = 0;
        }
    }
}

impl Stream for Body {
    type Item = Result<Bytes, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The consumer is back for more: the previous chunk is consumed.
        if self.held >= self.release_batch {
            self.release_held();
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok((b, weight)))) => {
                self.held = self.held.saturating_add(weight);
                self.signals.taken.store(true, Relaxed);
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                if self.remaining == 0 {
                    self.signals.finish();
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.release_held();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.release_held();
                self.signals.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Never wait while holding bytes: the feeder may be waiting for them.
                self.release_held();
                Poll::Pending
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.release_held();
        // No new chunks after close; queued ones still carry budget bytes.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok((_, weight)) = item {
                self.budget.release(weight);
            }
        }
    }
}
