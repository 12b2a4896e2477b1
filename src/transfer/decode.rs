//! The compressed side of an unpack: ranged GETs of the archive fetched in a window and
//! consumed in order, and the blocking decoder thread (gunzip → tar → RAW chunks) that hands
//! the member's bytes to the part cutter ([`super::unpack`]).
//!
//! Guarantees callers can rely on: every compressed byte is CRC-64'd as it arrives (the
//! stream's CRC is proven against the source's at the end), gzip's CRC-32 and length trailer
//! are checked, the archive holds exactly one regular member followed only by the
//! end-of-archive zeros, and every buffer on both sides is charged to its budget for as long
//! as it lives (see the module docs of `unpack` for the memory split).

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

use crate::checksum::crc64::{self, Crc64};
use crate::metrics as m;
use crate::store::retry::should_retry;
use crate::store::{ErrorClass, ObjectMeta, StoreError};

use super::budget::{MemoryBudget, TokenBucket};
use super::engine::{self, Ctx};
use super::tar::{self, MemberHeader};
use super::unpack::Plan;
use super::TransferError;

// ---------------------------------------------------------------------------------------------
// Budget-carrying buffers

/// Bytes charged to a budget; given back when dropped, wherever that happens.
pub(super) struct Charged {
    pub(super) data: Bytes,
    pub(super) budget: Arc<MemoryBudget>,
}

impl Charged {
    /// Splits off the first `n` bytes, each half carrying its own charge.
    pub(super) fn split_to(&mut self, n: usize) -> Charged {
        Charged {
            data: self.data.split_to(n),
            budget: self.budget.clone(),
        }
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        if !self.data.is_empty() {
            self.budget.release(self.data.len() as u32);
        }
    }
}

/// Charges `n` bytes (at most the budget's largest chunk) to `budget`; the caller must
/// give them back (usually by wrapping the bytes in [`Charged`]).
pub(super) async fn charge(budget: &MemoryBudget, n: u64) -> u32 {
    budget.acquire(n).await.hand_over()
}

/// Wraps bytes already charged to `budget` so that dropping them gives the charge back.
pub(super) fn charged(data: Bytes, budget: &Arc<MemoryBudget>) -> Charged {
    Charged {
        data,
        budget: budget.clone(),
    }
}

/// Recycled RAW chunk buffers: the decoder thread is the relay's bottleneck, and a fresh
/// buffer costs it a zeroing pass and page faults that a returned one does not. Every
/// buffer's bytes are charged to the RAW budget while in use, so the buffers alive at once
/// (in use or pooled) never exceed the budget.
pub(super) struct BufPool {
    pub(super) free: std::sync::Mutex<Vec<Vec<u8>>>,
    pub(super) size: usize,
}

/// A pooled buffer lent to a [`Bytes`]; goes back to the pool when the last view drops.
pub(super) struct Pooled {
    pub(super) buf: Vec<u8>,
    pub(super) pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if let Ok(mut free) = self.pool.free.lock() {
            free.push(buf);
        }
    }
}

impl BufPool {
    pub(super) fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            free: std::sync::Mutex::new(Vec::new()),
            size,
        })
    }

    /// A buffer of `size` initialised bytes (contents unspecified).
    pub(super) fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| vec![0u8; self.size])
    }

    /// Lends the first `len` bytes of `buf` out as [`Bytes`].
    pub(super) fn lend(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
        .slice(..len)
    }
}

// ---------------------------------------------------------------------------------------------
// Fetching the compressed object

/// One fetched range of the compressed object with a CRC-64 computed as it arrived, so the
/// decoder thread does not have to: of the range itself out of `fetch_range`, of the whole
/// stream up to the range's end once `fetch_all` has passed it on.
pub(super) struct Range {
    pub(super) chunks: Vec<Charged>,
    pub(super) crc: u64,
    pub(super) len: u64,
}

/// Fetches one range with retries; the bytes are charged to `budget` for their whole stay.
pub(super) async fn fetch_range(
    ctx: Arc<Ctx>,
    fetch_budget: Arc<MemoryBudget>,
    bandwidth: Option<Arc<TokenBucket>>,
    etag: Arc<str>,
    start: u64,
    end: u64,
) -> Result<Range, TransferError> {
    let len = end - start;
    let mut backoff = ctx.backoff();
    let mut attempt = 1;
    loop {
        let r = fetch_once(&ctx, &fetch_budget, bandwidth.as_deref(), &etag, start, end).await;
        match r {
            Ok(range) => return Ok(range),
            Err(e) if e.class == ErrorClass::Precondition => {
                return Err(engine::source_changed(&ctx, &etag).await)
            }
            Err(e) if should_retry(e.class, attempt, ctx.opts.max_attempts) => {
                debug!(start, len, attempt, error = %e, "range failed; retrying");
                ctx.note_retry(e.class.as_str());
                tokio::time::sleep(backoff.next(e.class)).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(TransferError::store(
                    format!(
                        "reading bytes {start}-{end} of {} failed after {attempt} attempt(s)",
                        ctx.src_desc
                    ),
                    e,
                ))
            }
        }
    }
}

pub(super) async fn fetch_once(
    ctx: &Ctx,
    budget: &Arc<MemoryBudget>,
    bandwidth: Option<&TokenBucket>,
    etag: &str,
    start: u64,
    end: u64,
) -> Result<Range, StoreError> {
    let len = end - start;
    let mut stream = match super::within(
        ctx.opts.request_timeout,
        ctx.src
            .store
            .get_range(&ctx.src.key, start, end, engine::if_match(etag)),
    )
    .await
    {
        Some(r) => r?,
        None => {
            return Err(StoreError::transient(format!(
                "no response from {} within {:?}",
                ctx.src_desc,
                ctx.opts.request_timeout.unwrap_or_default()
            )))
        }
    };
    let mut got = 0u64;
    let mut chunks = Vec::new();
    let mut crc = Crc64::new();
    loop {
        let next = match super::within(ctx.opts.idle_timeout, stream.next()).await {
            Some(n) => n,
            None => {
                return Err(StoreError::transient(format!(
                    "the source sent nothing for {:?}",
                    ctx.opts.idle_timeout.unwrap_or_default()
                )))
            }
        };
        let Some(chunk) = next else { break };
        let mut chunk = chunk?;
        if got + chunk.len() as u64 > len {
            return Err(StoreError::transient(format!(
                "the source sent more than the {len} bytes requested"
            )));
        }
        got += chunk.len() as u64;
        crc.update(&chunk);
        ctx.progress
            .downloaded_bytes
            .fetch_add(chunk.len() as u64, Relaxed);
        metrics::counter!(m::BYTES_TOTAL, "direction" => "download").increment(chunk.len() as u64);
        if let Some(bw) = bandwidth {
            bw.acquire(chunk.len() as u64).await;
        }
        let max = budget.max_chunk().max(1) as usize;
        while !chunk.is_empty() {
            let piece = chunk.split_to(chunk.len().min(max));
            charge(budget, piece.len() as u64).await;
            chunks.push(charged(piece, budget));
        }
    }
    if got != len {
        return Err(StoreError::transient(format!(
            "the source body ended after {got} of {len} bytes"
        )));
    }
    Ok(Range {
        chunks,
        crc: crc.sum(),
        len: got,
    })
}

/// The ranges to fetch: full `range`s, except that the first few ramp up from 1/8 of it so
/// the decoder (which cannot start before the first range is whole) starts sooner.
pub(super) fn range_bounds(size: u64, range: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut start = 0u64;
    let mut next = (range / 8).max(64 * 1024).min(range);
    std::iter::from_fn(move || {
        if start >= size {
            return None;
        }
        let end = (start + next).min(size);
        let r = (start, end);
        start = end;
        next = (next * 2).min(range);
        Some(r)
    })
}

/// Feeds the ranges, in order, to the decoder; up to `window` are fetched at once.
pub(super) async fn fetch_all(
    ctx: Arc<Ctx>,
    fetch_budget: Arc<MemoryBudget>,
    bandwidth: Option<Arc<TokenBucket>>,
    meta: ObjectMeta,
    plan: Plan,
    tx: mpsc::Sender<Range>,
    failed: Arc<AtomicBool>,
) -> Result<(), TransferError> {
    let etag: Arc<str> = Arc::from(meta.etag.as_str());
    let size = meta.size;
    let mut ranges = futures::stream::iter(range_bounds(size, plan.range))
        .map(|(start, end)| {
            fetch_range(
                ctx.clone(),
                fetch_budget.clone(),
                bandwidth.clone(),
                etag.clone(),
                start,
                end,
            )
        })
        .buffered(plan.window);
    // The running CRC-64 of the compressed stream, folded here rather than on the decoder's
    // thread.
    let (mut crc, mut len) = (0u64, 0u64);
    while let Some(r) = ranges.next().await {
        let mut r = match r {
            Ok(r) => r,
            Err(e) => {
                // Before `tx` is dropped: the decoder must know its input ended on a failure.
                failed.store(true, Relaxed);
                return Err(e);
            }
        };
        crc = crc64::combine(crc, r.crc, r.len);
        len += r.len;
        (r.crc, r.len) = (crc, len);
        if tx.send(r).await.is_err() {
            break; // the decoder stopped; it says why
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The decoder thread

/// The compressed bytes as a `BufRead`, in order, with their CRC-64; each piece's charge is
/// given back once the decoder consumed it.
pub(super) struct CompressedReader {
    pub(super) rx: mpsc::Receiver<Range>,
    pub(super) queue: VecDeque<Charged>,
    pub(super) current: Option<Charged>,
    pub(super) pos: usize,
    /// CRC-64 and length of the stream up to the end of the last range received.
    pub(super) crc: u64,
    pub(super) len: u64,
    pub(super) ended: bool,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) stop: CancellationToken,
    /// Time spent waiting for the fetcher (the network is behind the decoder).
    pub(super) waited: Duration,
}

impl CompressedReader {
    /// Whether bytes are at hand without waiting for the fetcher.
    pub(super) fn has_buffered(&self) -> bool {
        !self.queue.is_empty()
            || self
                .current
                .as_ref()
                .is_some_and(|c| self.pos < c.data.len())
    }

    pub(super) fn advance(&mut self) -> bool {
        loop {
            if let Some(c) = self.queue.pop_front() {
                self.current = Some(c);
                self.pos = 0;
                return true;
            }
            if self.ended {
                return false;
            }
            let t = Instant::now();
            let next = self.handle.block_on(async {
                tokio::select! {
                    v = self.rx.recv() => v,
                    _ = self.stop.cancelled() => None,
                }
            });
            self.waited += t.elapsed();
            match next {
                Some(r) => {
                    (self.crc, self.len) = (r.crc, r.len);
                    self.queue.extend(r.chunks);
                }
                None => {
                    self.ended = true;
                    return false;
                }
            }
        }
    }
}

impl Read for CompressedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for CompressedReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let exhausted = self
            .current
            .as_ref()
            .is_none_or(|c| self.pos >= c.data.len());
        if exhausted {
            self.current = None; // gives its charge back
            if !self.advance() {
                return Ok(&[]);
            }
        }
        let c = self.current.as_ref().expect("current chunk");
        Ok(&c.data[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

/// What the decoder tells the part cutter.
pub(super) enum Decoded {
    Header(MemberHeader),
    /// The member's next bytes, in order.
    Chunks(Vec<Chunk>),
    /// The next `n` bytes are zeros that take no memory and carry no charge: a hole of a disk
    /// image being read back (only a container reader's long runs, see `convert.rs`). A
    /// 2 TiB empty disk is then one message, not eight million charged views of a zero
    /// buffer, and a sparse packer skips its all-zero units by length alone. Sent only
    /// after the chunks before it; a consumer takes no further input until the run is used.
    Zeros(u64),
}

/// A piece of the member's bytes.
pub(super) struct Chunk {
    pub(super) data: Charged,
    /// Every byte is zero (checked by the decoder).
    pub(super) zero: bool,
}

/// Chunks handed to the cutter at once: each hand-over may wake the cutter's thread, which
/// then competes with the decoder for a core; a batch per few milliseconds of decoding keeps
/// those wake-ups rare.
pub(super) const BATCH_CHUNKS: usize = 64;

/// Whether every byte is zero; stops at the first 4 KiB block that is not (an OR-fold per
/// block vectorises, a byte-wise `all` does not).
pub(super) fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// What the decoder proved by the end of the stream.
#[derive(Debug)]
pub(super) struct DecodeEnd {
    pub(super) compressed_bytes: u64,
    pub(super) compressed_crc: u64,
    pub(super) raw_bytes: u64,
    pub(super) gzip: GzipCheck,
}

/// gzip's CRC-32 and length trailer, and the CRC-32s of the decompressed bytes the decoder
/// handled itself (the tar blocks before and after the member's data). The data's CRC-32 is
/// computed where the data is cut into parts, off the decoder's thread (it cost the decoder,
/// the relay's bottleneck, about 6 % of its time).
#[derive(Debug, Default)]
pub(super) struct GzipCheck {
    pub(super) before: flate2::Crc,
    pub(super) after: flate2::Crc,
    pub(super) crc32: u32,
    pub(super) isize: u32,
}

impl GzipCheck {
    /// Checks the trailer against the whole decompressed stream, given the CRC-32 of the
    /// member's data.
    pub(super) fn verify(&self, data: &flate2::Crc) -> Result<(), String> {
        let mut all = flate2::Crc::new();
        all.combine(&self.before);
        all.combine(data);
        all.combine(&self.after);
        if all.sum() != self.crc32 || all.amount() != self.isize {
            return Err(format!(
                "the gzip trailer does not match the decompressed contents (CRC-32 {:08x}, \
                 length mod 2^32 {}; computed {:08x}, {})",
                self.crc32,
                self.isize,
                all.sum(),
                all.amount()
            ));
        }
        Ok(())
    }
}

/// RFC 1952 around a raw deflate decoder. The header is parsed here, the trailer is left for
/// [`GzipCheck`]; bytes read through `Read` are counted into `crc`, the member's data is read
/// from `inflate` directly and counted by the part cutter.
pub(super) struct Gunzip {
    pub(super) inflate: flate2::bufread::DeflateDecoder<CompressedReader>,
    pub(super) crc: flate2::Crc,
}

impl Read for Gunzip {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inflate.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a gzip member header (RFC 1952 §2.3) up to the compressed data.
pub(super) fn read_gzip_header(r: &mut impl BufRead) -> Result<(), DecodeError> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let mut fixed = [0u8; 10];
    r.read_exact(&mut fixed).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DecodeError::Archive("the archive is not a valid gzip stream: it is too short".into())
        } else {
            archive_io(e)
        }
    })?;
    if fixed[0] != 0x1f || fixed[1] != 0x8b {
        return Err(DecodeError::Archive(
            "the archive is not a valid gzip stream (no gzip magic bytes); copy it with --unpack never"
                .into(),
        ));
    }
    if fixed[2] != 8 {
        return Err(DecodeError::Archive(format!(
            "the archive is not a valid gzip stream: compression method {} is not deflate",
            fixed[2]
        )));
    }
    let flags = fixed[3];
    if flags & 0xe0 != 0 {
        return Err(DecodeError::Archive(format!(
            "the archive is not a valid gzip stream: reserved header flags {flags:#04x} are set"
        )));
    }
    if flags & FEXTRA != 0 {
        let mut len = [0u8; 2];
        r.read_exact(&mut len).map_err(archive_io)?;
        let mut left = u16::from_le_bytes(len) as u64;
        let skipped = std::io::copy(&mut r.take(left), &mut std::io::sink()).map_err(archive_io)?;
        left -= skipped;
        if left > 0 {
            return Err(archive_io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            // Zero-terminated Latin-1; at most 64 KiB, so junk cannot make us scan forever.
            let mut field = Vec::new();
            r.take(64 * 1024)
                .read_until(0, &mut field)
                .map_err(archive_io)?;
            if field.last() != Some(&0) {
                return Err(DecodeError::Archive(
                    "the archive is not a valid gzip stream: the header's file name or comment is not terminated".into(),
                ));
            }
        }
    }
    if flags & FHCRC != 0 {
        let mut crc16 = [0u8; 2];
        r.read_exact(&mut crc16).map_err(archive_io)?;
    }
    Ok(())
}

/// Why the decoder stopped.
pub(super) enum DecodeError {
    /// The archive itself is unusable (corrupt, truncated, several members...).
    Archive(String),
    /// Decoding failed, and the compressed bytes read do not have the source's CRC-64: they
    /// were damaged on the way (worth another attempt).
    Transit {
        msg: String,
        expected: u64,
        actual: u64,
    },
    /// The input ended early because fetching failed, or the consumer went away.
    Stopped,
}

pub(super) fn archive_io(e: std::io::Error) -> DecodeError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        DecodeError::Archive(
            "the archive is truncated: the gzip stream ends before the tar archive does".into(),
        )
    } else {
        DecodeError::Archive(format!("the archive is not a valid gzip stream: {e}"))
    }
}

pub(super) fn tar_err(e: tar::TarError) -> DecodeError {
    match e {
        tar::TarError::Format(s) => DecodeError::Archive(s),
        tar::TarError::Io(io) => archive_io(io),
    }
}

pub(super) struct DecoderIo {
    pub(super) cpu: super::DecoderCpu,
    pub(super) raw_budget: Arc<MemoryBudget>,
    pub(super) stop: CancellationToken,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) out: mpsc::Sender<Decoded>,
    pub(super) chunk: usize,
}

/// Where the decoder thread's time went: what it waited for tells which side limits the relay.
#[derive(Debug, Default)]
pub(super) struct Stalls {
    /// Waiting for RAW memory (uploads are behind).
    pub(super) budget: Duration,
    /// Waiting for the part cutter to take a chunk.
    pub(super) output: Duration,
}

/// CPU time of the calling thread: with the wall time it tells waiting from being descheduled.
pub(super) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The source as HEAD described it: what the compressed stream must add up to.
#[derive(Debug, Clone, Copy)]
pub(super) struct SourceSum {
    pub(super) size: u64,
    pub(super) crc64: Option<u64>,
}

pub(super) fn decode(
    reader: CompressedReader,
    io: DecoderIo,
    fetch_failed: Arc<AtomicBool>,
    source: SourceSum,
) -> Result<DecodeEnd, DecodeError> {
    let started = Instant::now();
    let cpu_start = thread_cpu();
    let mut gz = Gunzip {
        inflate: flate2::bufread::DeflateDecoder::new(reader),
        crc: flate2::Crc::new(),
    };
    let mut stalls = Stalls::default();
    let r = decode_inner(&mut gz, &io, &mut stalls);
    let wall = started.elapsed();
    let input = gz.inflate.get_ref().waited;
    let cpu = thread_cpu().saturating_sub(cpu_start);
    debug!(
        wall_ms = wall.as_millis() as u64,
        cpu_ms = cpu.as_millis() as u64,
        input_wait_ms = input.as_millis() as u64,
        budget_wait_ms = stalls.budget.as_millis() as u64,
        output_wait_ms = stalls.output.as_millis() as u64,
        working_ms = wall
            .saturating_sub(input + stalls.budget + stalls.output)
            .as_millis() as u64,
        "decoder finished"
    );
    // An input cut short by a failed fetch looks like truncation: say "stopped" instead, the
    // fetch error is the real cause.
    let stopped = |io: &DecoderIo| fetch_failed.load(Relaxed) || io.stop.is_cancelled();
    let msg = match r {
        Err(DecodeError::Archive(_)) if stopped(&io) => return Err(DecodeError::Stopped),
        Err(DecodeError::Archive(msg)) => msg,
        other => return other,
    };
    // The archive, or the bytes on their way? Read the rest and compare with the source's
    // CRC-64 (costs the rest of the download, but tells a broken export from a bad network).
    let reader = gz.inflate.get_mut();
    loop {
        let n = reader.fill_buf().map(|b| b.len()).unwrap_or(0);
        if n == 0 {
            break;
        }
        reader.consume(n);
    }
    if stopped(&io) {
        return Err(DecodeError::Stopped);
    }
    let complete = reader.ended && reader.len == source.size;
    match source.crc64 {
        Some(want) if complete && reader.crc != want => Err(DecodeError::Transit {
            msg,
            expected: want,
            actual: reader.crc,
        }),
        Some(_) if complete => Err(DecodeError::Archive(format!(
            "{msg} (the bytes read have the CRC-64 the source reports: the archive itself is \
             damaged)"
        ))),
        _ => Err(DecodeError::Archive(msg)),
    }
}

pub(super) fn decode_inner(
    gz: &mut Gunzip,
    io: &DecoderIo,
    stalls: &mut Stalls,
) -> Result<DecodeEnd, DecodeError> {
    read_gzip_header(gz.inflate.get_mut())?;
    let member = match tar::next_header(gz).map_err(tar_err)? {
        Some(h) => h,
        None => {
            return Err(DecodeError::Archive(
                "the archive holds no file: expected one disk image (.raw)".into(),
            ))
        }
    };
    if !member.is_regular() {
        return Err(DecodeError::Archive(format!(
            "the archive's first member {:?} is a {}: an image export holds exactly one regular \
             file (the .raw disk); unpack it by hand or copy with --unpack never",
            member.name,
            member.kind_name()
        )));
    }
    let size = member.size;
    let padding = member.padding();
    let name = member.name.clone();
    io.out
        .blocking_send(Decoded::Header(member))
        .map_err(|_| DecodeError::Stopped)?;

    let before = std::mem::take(&mut gz.crc);
    let mut left = size;
    let max = (io.chunk as u64).min(io.raw_budget.max_chunk()).max(1);
    let pool = BufPool::new(max as usize);
    // Inflate writes into this cache-resident buffer; one bulk copy then moves each chunk to
    // the (never cached) buffer it waits in for its upload. Inflating straight into those
    // cost inflate ~18 % (bench: 1 vs 768 cycling 256 KiB output buffers, 1098 vs 905 MB/s).
    let mut scratch = vec![0u8; max as usize];
    // Disks are mostly zeros: an all-zero chunk is sent as a view of one shared zero buffer
    // (never written, so its pages stay the kernel's zero page), which saves the copy here
    // and lets the cutter derive its CRCs instead of reading it.
    let zeros = Bytes::from(vec![0u8; max as usize]);
    let mut batch: Vec<Chunk> = Vec::with_capacity(BATCH_CHUNKS);
    // Dropped when the decoder returns: its thread goes back to the blocking pool unpinned.
    let mut cpu = super::affinity::CpuHold::new(io.cpu);
    while left > 0 {
        let n = left.min(max);
        if io.raw_budget.try_take(n).is_none() {
            // The cutter may need the batched bytes to finish a part and free memory.
            hand_over(io, &mut batch, stalls)?;
            let t = Instant::now();
            let acquired = io.handle.block_on(async {
                tokio::select! {
                    w = charge(&io.raw_budget, n) => Some(w),
                    _ = io.stop.cancelled() => None,
                }
            });
            stalls.budget += t.elapsed();
            if acquired.is_none() {
                return Err(DecodeError::Stopped);
            }
        }
        let mut filled = 0;
        while filled < n as usize {
            match gz.inflate.read(&mut scratch[filled..n as usize]) {
                Ok(0) => {
                    io.raw_budget.release(n as u32);
                    return Err(DecodeError::Archive(format!(
                        "the archive is truncated: member {name:?} should have {size} bytes, \
                         the stream ends after {}",
                        size - left + filled as u64
                    )));
                }
                Ok(k) => filled += k,
                Err(e) => {
                    io.raw_budget.release(n as u32);
                    return Err(archive_io(e));
                }
            }
        }
        let out = &scratch[..n as usize];
        let zero = is_zero(out);
        let data = if zero {
            zeros.slice(..n as usize)
        } else {
            let mut buf = pool.take();
            buf[..n as usize].copy_from_slice(out);
            pool.lend(buf, n as usize)
        };
        batch.push(Chunk {
            data: charged(data, &io.raw_budget),
            zero,
        });
        left -= n;
        if batch.len() >= BATCH_CHUNKS {
            hand_over(io, &mut batch, stalls)?;
        }
        let waited = gz.inflate.get_ref().waited + stalls.budget + stalls.output;
        cpu.update(waited);
    }
    hand_over(io, &mut batch, stalls)?;
    let mut pad = [0u8; tar::BLOCK];
    gz.read_exact(&mut pad[..padding as usize])
        .map_err(archive_io)?;
    if let Some(next) = tar::next_header(gz).map_err(tar_err)? {
        return Err(DecodeError::Archive(format!(
            "the archive holds more than one member ({name:?}, then the {} {:?}): an image \
             export holds exactly one disk image; unpack it by hand or copy with --unpack never",
            next.kind_name(),
            next.name
        )));
    }
    // The rest is the end-of-archive zeros (and record padding), up to the end of the
    // deflate stream.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = gz.read(&mut buf).map_err(archive_io)?;
        if k == 0 {
            break;
        }
        if buf[..k].iter().any(|&b| b != 0) {
            return Err(DecodeError::Archive(
                "unexpected data after the end of the tar archive".into(),
            ));
        }
    }
    let mut trailer = [0u8; 8];
    gz.inflate
        .get_mut()
        .read_exact(&mut trailer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => DecodeError::Archive(
                "the archive is truncated: the gzip stream ends without its trailer".into(),
            ),
            _ => archive_io(e),
        })?;
    let gzip = GzipCheck {
        before,
        after: std::mem::take(&mut gz.crc),
        crc32: u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes")),
        isize: u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes")),
    };
    let reader = gz.inflate.get_mut();
    if !reader.fill_buf().map_err(archive_io)?.is_empty() {
        return Err(DecodeError::Archive(
            "unexpected data after the gzip stream: an image export is a single gzip member".into(),
        ));
    }
    if !reader.ended {
        return Err(DecodeError::Stopped);
    }
    Ok(DecodeEnd {
        compressed_bytes: reader.len,
        compressed_crc: reader.crc,
        raw_bytes: size,
        gzip,
    })
}

/// Sends the batched chunks (if any) to the cutter.
pub(super) fn hand_over(
    io: &DecoderIo,
    batch: &mut Vec<Chunk>,
    stalls: &mut Stalls,
) -> Result<(), DecodeError> {
    if batch.is_empty() {
        return Ok(());
    }
    let chunks = std::mem::replace(batch, Vec::with_capacity(BATCH_CHUNKS));
    let t = Instant::now();
    io.out
        .blocking_send(Decoded::Chunks(chunks))
        .map_err(|_| DecodeError::Stopped)?;
    stalls.output += t.elapsed();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Orchestration

/// The fetcher and the decoder of one unpack; both stop when this is dropped.
pub(super) struct Pipeline {
    pub(super) src_desc: String,
    pub(super) stop: CancellationToken,
    pub(super) fetcher: Option<FetchHandle>,
    pub(super) fetch_failed: Arc<AtomicBool>,
    pub(super) decoder: Option<DecodeHandle>,
    pub(super) out: mpsc::Receiver<Decoded>,
}

pub(super) type FetchHandle = AbortOnDropHandle<Result<(), TransferError>>;
pub(super) type DecodeHandle = tokio::task::JoinHandle<Result<DecodeEnd, DecodeError>>;

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Pipeline {
    /// Stops both halves and returns the real cause of the stop: a broken archive, a failed
    /// fetch, or else an interruption.
    pub(super) async fn cause(&mut self) -> TransferError {
        self.stop.cancel();
        self.out.close();
        while self.out.try_recv().is_ok() {}
        let dec = match self.decoder.take() {
            Some(d) => Some(d.await),
            None => None,
        };
        match &dec {
            Some(Ok(Err(DecodeError::Archive(msg)))) => return TransferError::Archive(msg.clone()),
            Some(Ok(Err(DecodeError::Transit {
                msg,
                expected,
                actual,
            }))) => return self.transit(msg, *expected, *actual),
            _ => {}
        }
        if self.fetch_failed.load(Relaxed) {
            if let Some(f) = self.fetcher.take() {
                if let Ok(Err(e)) = f.await {
                    return e;
                }
            }
        }
        match dec {
            Some(Err(e)) if e.is_panic() => {
                TransferError::Plan(format!("internal error: the decoder panicked: {e}"))
            }
            _ => TransferError::Interrupted { state_file: None },
        }
    }

    pub(super) fn transit(&self, msg: &str, expected: u64, actual: u64) -> TransferError {
        TransferError::crc64_mismatch(
            format!(
                "the compressed bytes read from {} (decoding failed: {msg})",
                self.src_desc
            ),
            expected,
            actual,
        )
    }

    /// Waits for the decoder's end of stream (all RAW bytes were handed out already).
    pub(super) async fn finish(&mut self) -> Result<DecodeEnd, TransferError> {
        let r = match self.decoder.take() {
            Some(d) => d.await,
            None => return Err(self.cause().await),
        };
        match r {
            Ok(Ok(end)) => Ok(end),
            Ok(Err(DecodeError::Archive(msg))) => Err(TransferError::Archive(msg)),
            Ok(Err(DecodeError::Transit {
                msg,
                expected,
                actual,
            })) => Err(self.transit(&msg, expected, actual)),
            _ => Err(self.cause().await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn header_error(bytes: &[u8]) -> String {
        match read_gzip_header(&mut &bytes[..]) {
            Err(DecodeError::Archive(m)) => m,
            Err(_) => panic!("not an archive error"),
            Ok(()) => panic!("{bytes:?} accepted"),
        }
    }

    #[test]
    fn gzip_header_fields_are_skipped_and_junk_refused() {
        let mut h: &[u8] = &[0x1f, 0x8b, 8, 8 | 2, 0, 0, 0, 0, 0, 3, b'n', 0, 1, 2, 0xAA];
        assert!(read_gzip_header(&mut h).is_ok());
        assert_eq!(h, &[0xAA], "stops at the compressed data");
        assert!(header_error(&[0x1f, 0x8b, 8]).contains("too short"));
        assert!(header_error(b"PK\x03\x04xxxxxxxx").contains("no gzip magic"));
        assert!(header_error(&[0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3]).contains("method 7"));
        assert!(header_error(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 3]).contains("reserved"));
        assert!(
            header_error(&[0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3, b'a', b'b'])
                .contains("not terminated")
        );
        assert!(header_error(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 3, 9, 0, 1]).contains("truncated"));
        // A name field is bounded: 1 MiB of non-zero bytes is refused, not scanned to the end.
        let mut long = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        long.resize(long.len() + MIB as usize, b'x');
        assert!(header_error(&long).contains("not terminated"));
    }

    #[test]
    fn the_decoder_cpu_is_taken_when_busy_and_given_back_when_waiting() {
        assert_eq!(
            super::super::affinity::cpu_hold_change(false, 0.02),
            Some(true)
        );
        assert_eq!(super::super::affinity::cpu_hold_change(false, 0.2), None);
        assert_eq!(
            super::super::affinity::cpu_hold_change(true, 0.2),
            None,
            "no flapping in between"
        );
        assert_eq!(
            super::super::affinity::cpu_hold_change(true, 0.5),
            Some(false)
        );
        assert_eq!(super::super::affinity::cpu_hold_change(true, 0.02), None);
    }

    #[test]
    fn gzip_check_combines_the_three_pieces() {
        let whole = b"header-bytes|the member's data|end zeros";
        let mut all = flate2::Crc::new();
        all.update(whole);
        let mut check = GzipCheck {
            crc32: all.sum(),
            isize: whole.len() as u32,
            ..Default::default()
        };
        check.before.update(&whole[..13]);
        check.after.update(&whole[31..]);
        let mut data = flate2::Crc::new();
        data.update(&whole[13..31]);
        check.verify(&data).unwrap();
        let mut other = flate2::Crc::new();
        other.update(b"the member's dat4");
        assert!(check.verify(&other).is_err());
        check.isize += 1;
        assert!(check.verify(&data).unwrap_err().contains("length"));
    }

    #[test]
    fn ranges_ramp_up_then_cover_the_object_exactly() {
        let m = MIB;
        let r: Vec<_> = range_bounds(40 * m, 8 * m).collect();
        assert_eq!(
            r,
            vec![
                (0, m),
                (m, 3 * m),
                (3 * m, 7 * m),
                (7 * m, 15 * m),
                (15 * m, 23 * m),
                (23 * m, 31 * m),
                (31 * m, 39 * m),
                (39 * m, 40 * m)
            ]
        );
        assert_eq!(range_bounds(0, 8 * m).count(), 0);
        assert_eq!(range_bounds(10, 8 * m).collect::<Vec<_>>(), vec![(0, 10)]);
        // Small ranges never shrink below 64 KiB nor exceed the planned range.
        let r: Vec<_> = range_bounds(300 * 1024, 64 * 1024).collect();
        assert!(r.iter().all(|(a, b)| b - a <= 64 * 1024));
        assert_eq!(r.last().unwrap().1, 300 * 1024);
        for w in r.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
    }

    #[test]
    fn pooled_buffers_come_back_only_when_every_view_is_gone() {
        let pool = BufPool::new(8);
        let mut buf = pool.take();
        buf[..5].copy_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let mut whole = pool.lend(buf, 5);
        assert_eq!(&whole[..], b"hello");
        let head = whole.split_to(2);
        drop(whole);
        assert!(
            pool.free.lock().unwrap().is_empty(),
            "a view is still alive"
        );
        assert_eq!(&head[..], b"he");
        drop(head);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the returned buffer is reused");
        assert_eq!(again.len(), 8);
        assert_eq!(pool.take().len(), 8, "an empty pool allocates");
    }
}
