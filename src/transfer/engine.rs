//! `copy`: plan, (resume or) start the upload, schedule parts, prove, complete.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};

use crate::checksum::{crc64, Checksum, Checksums};
use crate::metrics as m;
use crate::store::{
    ErrorClass, ListedPart, ObjectMeta, PartSpec, PutOptions, StoreError, Uploaded,
};

use super::budget::{MemoryBudget, TokenBucket};
use super::pipe::{pipe, PipeCtx, PipeError, Side};
use super::progress::InflightGuard;
use super::retry::Aimd;
use super::state::{self, CopyState, SourceFingerprint, StatePart, STATE_VERSION};
use super::{plan, verify, CopyOptions, CopySummary, Location, Progress, TransferError};
use crate::http::{should_retry, Backoff};

/// A control request (HEAD, Initiate, ListParts, Abort…): one attempt, the engine does not
/// retry it. The store's transport retries it (a replayable request, see [`crate::http`]);
/// an engine retry on top multiplied the attempts (4 × 10). The timeout applies only when
/// `CopyOptions::request_timeout` is set (stores without a transport of their own).
///
/// A macro rather than a function taking a closure: closures returning futures that borrow
/// make rustc lose the `Send` proof of `copy`'s future (higher-ranked lifetimes), and the
/// daemon must be able to spawn it.
macro_rules! control {
    ($ctx:expr, $what:expr, $timeout:expr, $call:expr) => {{
        let _ctx: &Ctx = $ctx;
        let what: &str = $what;
        let timeout: Option<Duration> = $timeout;
        match super::within(timeout, $call).await {
            Some(r) => r,
            None => Err(StoreError::transient(format!(
                "{what}: no response within {:?}",
                timeout.unwrap_or_default()
            ))),
        }
    }};
}
pub(super) use control;

/// Rounds of "re-read the source, find the corrupted parts, send them again" before giving up.
const REPAIR_ROUNDS: u32 = 2;

/// Copies `src` to `dst`: a single streamed PUT for objects smaller than one part, otherwise a
/// resumable multipart upload of parallel ranged GETs, CRC-64-proven end to end.
///
/// `progress` is updated live; `cancel` stops the copy (in-flight parts get `opts.grace` to
/// finish), saves state and returns [`TransferError::Interrupted`].
pub async fn copy(
    src: Location,
    dst: Location,
    opts: CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CopySummary, TransferError> {
    let span = tracing::info_span!("copy", source = %src.describe(), destination = %dst.describe());
    run(src, dst, opts, progress, cancel).instrument(span).await
}

pub(super) struct Ctx {
    pub(super) src: Location,
    pub(super) dst: Location,
    pub(super) src_desc: String,
    pub(super) dst_desc: String,
    pub(super) opts: CopyOptions,
    pub(super) progress: Arc<Progress>,
    pub(super) pipe: PipeCtx,
}

impl Ctx {
    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.opts.retry_base, self.opts.retry_cap)
    }

    pub(super) fn note_retry(&self, reason: &'static str) {
        self.progress.retries.fetch_add(1, Relaxed);
        metrics::counter!(m::RETRIES_TOTAL, "reason" => reason).increment(1);
        if reason == "crc_mismatch" {
            self.note_crc_mismatch();
        }
    }

    pub(super) fn note_crc_mismatch(&self) {
        self.progress.crc_mismatches.fetch_add(1, Relaxed);
        metrics::counter!(m::CRC_MISMATCHES_TOTAL).increment(1);
    }
}

struct Outcome {
    crc64: u64,
    parts: u32,
    part_size: u64,
    resumed_bytes: u64,
}

pub(super) fn validate(opts: &CopyOptions) -> Result<(), TransferError> {
    if opts.concurrency == 0 {
        return Err(TransferError::Plan("concurrency must be at least 1".into()));
    }
    let memory = opts
        .shared_memory
        .as_ref()
        .map_or(opts.memory, |b| b.limit());
    if memory < 64 * 1024 {
        return Err(TransferError::Plan(format!(
            "memory budget {memory} bytes is too small: allow at least 64 KiB"
        )));
    }
    if opts.max_attempts == 0 {
        return Err(TransferError::Plan(
            "max attempts must be at least 1".into(),
        ));
    }
    if opts.chunk_size == 0 {
        return Err(TransferError::Plan(
            "chunk size must be at least 1 byte".into(),
        ));
    }
    Ok(())
}

async fn run(
    src: Location,
    dst: Location,
    opts: CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CopySummary, TransferError> {
    validate(&opts)?;
    let started = std::time::Instant::now();
    // The stores retry some requests themselves; the summary counts those too.
    let store_retries = |src: &Location, dst: &Location| src.store.retries() + dst.store.retries();
    let retries_before = store_retries(&src, &dst);
    progress
        .lowest_concurrency_limit
        .store(opts.concurrency as u64, Relaxed);
    progress.set_limit(opts.concurrency);
    let budget = opts
        .shared_memory
        .clone()
        .unwrap_or_else(|| MemoryBudget::new(opts.memory, progress.clone()));
    let pipe = PipeCtx {
        progress: progress.clone(),
        // Small against the budget, so withheld bytes never starve other parts for long.
        release_batch: (budget.limit() / (4 * opts.concurrency as u64)).clamp(1, 256 * 1024) as u32,
        budget,
        bandwidth: opts
            .shared_bandwidth
            .clone()
            .or_else(|| opts.bandwidth.map(|b| Arc::new(TokenBucket::new(b)))),
        idle_timeout: opts.idle_timeout,
        request_timeout: opts.request_timeout,
        chunk_size: opts.chunk_size,
    };
    let ctx = Arc::new(Ctx {
        src_desc: src.describe(),
        dst_desc: dst.describe(),
        src,
        dst,
        opts,
        progress: progress.clone(),
        pipe,
    });
    let _gauges = AbortOnDropHandle::new(tokio::spawn(publish_gauges(
        progress.clone(),
        ctx.pipe.budget.clone(),
    )));

    let meta = head_source(&ctx, &cancel).await?;
    progress.total_bytes.store(meta.size, Relaxed);
    let part_size = plan::plan_part_size(meta.size, ctx.opts.part_size, ctx.dst.store.limits())?;

    // One run per pair at a time, whichever path it takes: two would share (and wreck) one
    // upload, and a single PUT would discard the state of a multipart run still going. Taken
    // after the HEAD and the plan, which touch no state, so that a bad source or flag is
    // reported as such even while another run of the pair is going.
    let _lock = match &ctx.opts.state_dir {
        Some(d) => Some(state::lock(&state::state_path(
            d,
            &ctx.src_desc,
            &ctx.dst_desc,
        ))?),
        None => None,
    };
    let put_opts = PutOptions {
        content_type: meta.content_type.clone(),
        user_meta: meta.user_meta.clone(),
    };
    info!(
        size = meta.size,
        part_size,
        parts = meta.size.div_ceil(part_size),
        concurrency = ctx.opts.concurrency,
        "planned copy"
    );

    let single = meta.size < part_size && meta.size <= ctx.dst.store.limits().max_single_put;
    let out = if single {
        discard_stale_state(&ctx).await?;
        single_put(&ctx, &meta, &put_opts, &cancel).await
    } else {
        multipart(&ctx, &meta, part_size, &put_opts, &cancel).await
    };
    publish_now(&progress, &ctx.pipe.budget);
    let out = out?;
    let seconds = started.elapsed().as_secs_f64();
    let moved = meta.size - out.resumed_bytes;
    let summary = CopySummary {
        source: ctx.src_desc.clone(),
        destination: ctx.dst_desc.clone(),
        bytes: meta.size,
        seconds,
        throughput_bytes_per_sec: if seconds > 0.0 {
            moved as f64 / seconds
        } else {
            0.0
        },
        crc64: out.crc64,
        checksums: Checksum::Crc64Xz(out.crc64).into(),
        parts: out.parts,
        part_size: out.part_size,
        retries: progress.retries.load(Relaxed)
            + store_retries(&ctx.src, &ctx.dst).saturating_sub(retries_before),
        resumed_bytes: out.resumed_bytes,
        source_crc64_known: meta.checksums.crc64_xz().is_some(),
    };
    info!(
        bytes = summary.bytes,
        seconds = summary.seconds,
        crc64 = summary.crc64,
        retries = summary.retries,
        "copy complete and verified"
    );
    Ok(summary)
}

/// Gauges are sampled, not updated per chunk, to keep the hot path free of metric calls.
pub(super) async fn publish_gauges(progress: Arc<Progress>, budget: Arc<MemoryBudget>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        publish_now(&progress, &budget);
    }
}

pub(super) fn publish_now(p: &Progress, budget: &MemoryBudget) {
    p.buffered_bytes.store(budget.in_use(), Relaxed);
    metrics::gauge!(m::INFLIGHT_PARTS).set(p.inflight_parts.load(Relaxed) as f64);
    metrics::gauge!(m::BUFFERED_BYTES).set(p.buffered_bytes.load(Relaxed) as f64);
    metrics::gauge!(m::CONCURRENCY_LIMIT).set(p.concurrency_limit.load(Relaxed) as f64);
}

pub(super) fn if_match(etag: &str) -> Option<&str> {
    (!etag.is_empty()).then_some(etag)
}

pub(super) async fn source_changed(ctx: &Ctx, old_etag: &str) -> TransferError {
    let new_etag =
        match super::within(ctx.opts.request_timeout, ctx.src.store.head(&ctx.src.key)).await {
            Some(Ok(m)) => m.etag,
            Some(Err(e)) if e.class == ErrorClass::NotFound => "(deleted)".to_string(),
            _ => "(unknown)".to_string(),
        };
    TransferError::SourceChanged {
        source_desc: ctx.src_desc.clone(),
        old_etag: old_etag.to_string(),
        new_etag,
    }
}

/// AbortMultipartUpload (retried by the store's transport); an upload already gone is fine.
async fn abort_upload(ctx: &Ctx, upload_id: &str) -> Result<(), StoreError> {
    let r: Result<(), StoreError> = control!(
        ctx,
        "AbortMultipartUpload",
        ctx.opts.request_timeout,
        ctx.dst.store.abort(&ctx.dst.key, upload_id)
    );
    match r {
        Err(e) if e.class == ErrorClass::NotFound => Ok(()),
        r => r,
    }
}

pub(super) async fn abort_quietly(ctx: &Ctx, upload_id: &str) {
    match abort_upload(ctx, upload_id).await {
        Ok(()) => debug!(upload_id, "aborted the multipart upload"),
        Err(e) => warn!(
            upload_id,
            error = %e,
            "could not abort the multipart upload of {}; it keeps its parts (and costs) until \
             aborted — remove it with a lifecycle rule or an abort",
            ctx.dst_desc
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Single PUT

/// A state file left by an earlier multipart run of this pair is useless to a single PUT (the
/// source shrank, or a larger part size was asked for): abort its upload so it does not
/// linger, billed, and drop the file. The caller holds the pair's lock, so that run is over.
async fn discard_stale_state(ctx: &Ctx) -> Result<(), TransferError> {
    let Some(dir) = &ctx.opts.state_dir else {
        return Ok(());
    };
    let path = state::state_path(dir, &ctx.src_desc, &ctx.dst_desc);
    match state::load_checked(&path)? {
        state::Loaded::Absent => {}
        state::Loaded::State(old) => {
            info!(upload_id = %old.upload_id, "the object now fits one PUT: discarding the earlier multipart upload");
            abort_quietly(ctx, &old.upload_id).await;
            state::remove(&path);
        }
        state::Loaded::Damaged { upload_id, why } => {
            discard_damaged(ctx, &path, upload_id.as_deref(), &why).await?;
        }
    }
    Ok(())
}

async fn single_put(
    ctx: &Arc<Ctx>,
    meta: &ObjectMeta,
    put_opts: &PutOptions,
    cancel: &CancellationToken,
) -> Result<Outcome, TransferError> {
    let size = meta.size;
    let mut backoff = ctx.backoff();
    let mut attempt = 1;
    loop {
        let fut = pipe(
            &ctx.pipe,
            &ctx.src,
            0,
            size,
            if_match(&meta.etag),
            meta.checksums.crc64_xz(),
            {
                let dst = ctx.dst.clone();
                let po = put_opts.clone();
                move |body| async move { dst.store.put(&dst.key, body, size, &po).await }
            },
        );
        let _guard = InflightGuard::new(ctx.progress.clone());
        let r = tokio::select! {
            r = fut => r,
            _ = cancel.cancelled() => return Err(TransferError::Interrupted { state_file: None }),
        };
        match r {
            Ok(p) => {
                ctx.progress.acked_bytes.fetch_add(size, Relaxed);
                metrics::counter!(m::ACKNOWLEDGED_BYTES_TOTAL).increment(size);
                return Ok(Outcome {
                    crc64: p.crc64,
                    parts: 0,
                    part_size: size,
                    resumed_bytes: 0,
                });
            }
            Err(e) if e.side == Side::Source && e.class() == ErrorClass::Precondition => {
                return Err(source_changed(ctx, &meta.etag).await);
            }
            Err(e) if should_retry(e.class(), attempt, ctx.opts.max_attempts) => {
                debug!(attempt, error = %e.err, "retrying the PUT");
                ctx.note_retry(e.reason);
                let delay = backoff.next(e.class());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err(TransferError::Interrupted { state_file: None }),
                }
                attempt += 1;
            }
            Err(e) => {
                if e.reason == "crc_mismatch" {
                    ctx.note_crc_mismatch();
                    if e.side == Side::Destination {
                        // The destination holds bytes it did not receive from us: remove them.
                        let _ = ctx.dst.store.delete(&ctx.dst.key).await;
                    }
                }
                return Err(TransferError::store(
                    format!(
                        "copying {} to {} failed after {attempt} attempt(s)",
                        ctx.src_desc, ctx.dst_desc
                    ),
                    e.err,
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Multipart

/// The resume state in memory, written to disk in the background as parts complete; writes
/// coalesce. A recorded part keeps its concurrency slot until a write holding it landed
/// ([`StateKeeper::unsaved`]), so a kill -9 never re-sends more than `concurrency` parts.
pub(super) struct StateKeeper {
    pub(super) path: Option<PathBuf>,
    pub(super) state: CopyState,
    pub(super) dirty: bool,
    pub(super) writing: Option<JoinHandle<Result<(), TransferError>>>,
    /// Parts recorded since the last write started.
    recorded_since_write: usize,
    /// Parts recorded in the write in flight.
    in_write: usize,
}

impl StateKeeper {
    pub(super) fn new(path: Option<PathBuf>, state: CopyState) -> Self {
        Self {
            path,
            state,
            dirty: true,
            writing: None,
            recorded_since_write: 0,
            in_write: 0,
        }
    }

    pub(super) fn record(&mut self, part: StatePart) {
        self.state.record(part);
        if self.path.is_some() {
            self.recorded_since_write += 1;
        }
        self.mark();
    }

    /// Acknowledged parts not yet durably saved: they still count as in flight.
    pub(super) fn unsaved(&self) -> usize {
        self.recorded_since_write + self.in_write
    }

    pub(super) fn forget(&mut self, numbers: &[u32]) {
        self.state.parts.retain(|p| !numbers.contains(&p.number));
        self.mark();
    }

    fn mark(&mut self) {
        if self.path.is_some() {
            self.dirty = true;
            self.kick();
        }
    }

    fn kick(&mut self) {
        if self.writing.is_some() || !self.dirty {
            return;
        }
        let Some(path) = self.path.clone() else {
            return;
        };
        let snapshot = self.state.clone();
        self.dirty = false;
        self.in_write = std::mem::take(&mut self.recorded_since_write);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            state::save(&path, &snapshot)
        }));
    }

    pub(super) fn is_writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Waits for the write in progress (cancel-safe: the handle stays until it finished).
    pub(super) async fn wait_write(&mut self) -> Result<(), TransferError> {
        if let Some(h) = self.writing.as_mut() {
            let r = h.await;
            self.writing = None;
            self.in_write = 0;
            r.map_err(|e| TransferError::StateWrite {
                state_file: self.path.clone().unwrap_or_default(),
                reason: format!("the state writer failed: {e}"),
            })??;
        }
        self.kick();
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), TransferError> {
        while self.is_writing() || (self.dirty && self.path.is_some()) {
            self.kick();
            self.wait_write().await?;
        }
        Ok(())
    }

    /// Records, durably, what the object must hold once CompleteMultipartUpload runs (see
    /// [`state::CopyState::completing`]).
    pub(super) async fn completing(
        &mut self,
        crc64: u64,
        source_crc64: Option<u64>,
    ) -> Result<(), TransferError> {
        self.state.completing = Some(state::Completing::new(crc64, source_crc64));
        self.mark();
        self.flush().await
    }

    /// Deletes the state file, after any write in flight landed (else it would resurrect it).
    pub(super) async fn remove(&mut self) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        self.dirty = false;
        if let Some(p) = &self.path {
            state::remove(p);
        }
    }
}

/// HEADs the source with the control-request retries; cancellable.
pub(super) async fn head_source(
    ctx: &Arc<Ctx>,
    cancel: &CancellationToken,
) -> Result<ObjectMeta, TransferError> {
    let head = async {
        let r: Result<ObjectMeta, StoreError> = control!(
            ctx,
            "HeadObject",
            ctx.opts.request_timeout,
            ctx.src.store.head(&ctx.src.key)
        );
        r
    };
    let meta = tokio::select! {
        r = head => r,
        _ = cancel.cancelled() => return Err(TransferError::Interrupted { state_file: None }),
    };
    meta.map_err(|e| TransferError::store(format!("cannot read {}", ctx.src_desc), e))
}

/// What [`open_upload`] resumes or starts.
pub(super) struct Upload<'a> {
    /// The source as recorded in the state file.
    pub source: String,
    /// Bytes the destination object will have.
    pub size: u64,
    pub fingerprint: SourceFingerprint,
    pub planned_part_size: u64,
    pub put_opts: &'a PutOptions,
    pub state_path: Option<&'a std::path::Path>,
    /// Whether a recorded part size above `size` (one short part) is a valid plan.
    pub single_part_ok: bool,
    /// The CRC-64 the whole destination object must have, when known before any byte moves
    /// (a plain copy: the source's).
    pub object_crc64: Option<u64>,
}

/// What [`open_upload`] found.
pub(super) enum Opened {
    /// An upload to send parts to: resumed (with the destination's part list) or new.
    Upload(Box<CopyState>, Option<Vec<ListedPart>>),
    /// A previous run completed the upload but was stopped before it could say so: the
    /// destination already holds the object, proven by size and CRC-64.
    Finished(Finished),
}

/// Progress of a copy that found its object already complete: everything is resumed.
pub(super) fn finished_progress(p: &Progress, size: u64, parts: u32) {
    p.parts_total.store(parts as u64, Relaxed);
    p.parts_done.store(parts as u64, Relaxed);
    p.resumed_bytes.store(size, Relaxed);
    p.acked_bytes.store(size, Relaxed);
}

/// See [`Opened::Finished`].
pub(super) struct Finished {
    pub crc64: u64,
    pub parts: u32,
    pub part_size: u64,
    /// From the state's completion record, when the run that completed wrote one.
    pub source_crc64: Option<u64>,
}

/// Finds the interrupted upload recorded in the state file and lists its parts, or (when
/// there is none, or it no longer matches the source, the destination or the limits) aborts
/// it and starts a new upload, saved to the state file before any part is sent. The caller
/// holds the pair's [`state::lock`].
pub(super) async fn open_upload(ctx: &Arc<Ctx>, up: Upload<'_>) -> Result<Opened, TransferError> {
    let limits = ctx.dst.store.limits();
    let fp = up.fingerprint.clone();
    if let Some(path) = up.state_path {
        match state::load_checked(path)? {
            state::Loaded::Absent => {}
            state::Loaded::Damaged { upload_id, why } => {
                discard_damaged(ctx, path, upload_id.as_deref(), &why).await?;
            }
            state::Loaded::State(old) => {
                let plan_ok = old.part_size >= limits.min_part_size
                    && old.part_size <= limits.max_part_size
                    && up.size.div_ceil(old.part_size) <= limits.max_parts as u64
                    && (up.single_part_ok || up.size >= old.part_size);
                if !ctx.opts.resume {
                    info!(upload_id = %old.upload_id, "not resuming (--no-resume): aborting the previous upload");
                    abort_quietly(ctx, &old.upload_id).await;
                    state::remove(path);
                } else if old.source_meta != fp
                    || old.source != up.source
                    || old.destination != ctx.dst_desc
                {
                    warn!(
                        "{} changed since the interrupted copy (ETag {} → {}, size {} → {}); \
                         starting over",
                        ctx.src_desc, old.source_meta.etag, fp.etag, old.source_meta.size, fp.size
                    );
                    abort_quietly(ctx, &old.upload_id).await;
                    state::remove(path);
                } else if !plan_ok {
                    warn!(
                        part_size = old.part_size,
                        "the interrupted copy's part size does not fit the destination's limits; \
                         starting over"
                    );
                    abort_quietly(ctx, &old.upload_id).await;
                    state::remove(path);
                } else {
                    let listed: Result<Vec<ListedPart>, StoreError> = control!(
                        ctx,
                        "ListParts",
                        ctx.opts.request_timeout,
                        ctx.dst.store.list_parts(&ctx.dst.key, &old.upload_id)
                    );
                    match listed {
                        Ok(l) => {
                            if let Some(asked) = ctx.opts.part_size.filter(|&p| p != old.part_size)
                            {
                                warn!(
                                    "resuming with the interrupted copy's part size of {} \
                                     bytes; --part-size {asked} applies only to a new upload \
                                     (pass --no-resume to start over with it)",
                                    old.part_size
                                );
                            }
                            info!(upload_id = %old.upload_id, recorded = old.parts.len(), "resuming");
                            return Ok(Opened::Upload(Box::new(old), Some(l)));
                        }
                        Err(e) if e.class == ErrorClass::NotFound => {
                            if let Some(done) = finished_earlier(ctx, &old, &up).await {
                                state::remove(path);
                                return Ok(Opened::Finished(done));
                            }
                            warn!(upload_id = %old.upload_id, "the interrupted upload no longer exists; starting over");
                            state::remove(path);
                        }
                        Err(e) => {
                            return Err(TransferError::Resumable {
                                source: Box::new(TransferError::store(
                                    format!(
                                        "cannot list the parts already uploaded to {}",
                                        ctx.dst_desc
                                    ),
                                    e,
                                )),
                                state_file: path.to_path_buf(),
                            })
                        }
                    }
                }
            }
        }
    }
    let created: Result<String, StoreError> = control!(
        ctx,
        "InitiateMultipartUpload",
        ctx.opts.request_timeout,
        ctx.dst
            .store
            .create_multipart(&ctx.dst.key, up.size, up.put_opts)
    );
    let upload_id = created.map_err(|e| {
        TransferError::store(format!("cannot start an upload to {}", ctx.dst_desc), e)
    })?;
    let st = CopyState {
        version: STATE_VERSION,
        source: up.source,
        destination: ctx.dst_desc.clone(),
        upload_id,
        part_size: up.planned_part_size,
        source_meta: fp,
        parts: Vec::new(),
        completing: None,
    };
    if let Some(path) = up.state_path {
        if let Err(e) = state::save(path, &st) {
            // Nothing durable names this upload yet: it must not outlive the run.
            abort_quietly(ctx, &st.upload_id).await;
            return Err(e);
        }
    }
    Ok(Opened::Upload(Box::new(st), None))
}

/// A state file that cannot be resumed still names an upload that would otherwise stay open
/// (and billed) with nobody pointing at it: abort that upload, then drop the file. When no
/// upload id can be read, say how to find and abort it by hand.
async fn discard_damaged(
    ctx: &Ctx,
    path: &Path,
    upload_id: Option<&str>,
    why: &str,
) -> Result<(), TransferError> {
    match upload_id {
        Some(id) => {
            warn!("ignoring {why}; aborting the upload {id} it names and starting over");
            if let Err(e) = abort_upload(ctx, id).await {
                // Keep the file: it is the only record of that upload.
                return Err(TransferError::State(format!(
                    "{why} names the upload {id}, which could not be aborted ({e}); abort \
                         it with `ossrelay uploads abort {}` (or move {} away to leave it), then \
                         rerun",
                    ctx.dst_desc,
                    path.display()
                )));
            }
        }
        None => warn!(
            "ignoring {why}; it names no readable upload id, so an upload it started may remain \
             open: find it with `ossrelay uploads list {}` and abort it with `ossrelay uploads \
             abort {}`; starting over",
            ctx.dst_desc, ctx.dst_desc
        ),
    }
    state::remove(path);
    Ok(())
}

/// Whether the destination already holds what the recorded upload was completing: its size
/// and CRC-64 equal the expected object's. The expectation comes from the state's completion
/// record, else the source's CRC-64 (a plain copy), else the fold of recorded parts that
/// cover the whole object. Without one, or without a CRC-64 from the destination, `None`.
async fn finished_earlier(ctx: &Ctx, old: &CopyState, up: &Upload<'_>) -> Option<Finished> {
    let specs = plan::parts(up.size, old.part_size);
    let folded = (old.parts.len() == specs.len()
        && old
            .parts
            .iter()
            .zip(&specs)
            .all(|(p, s)| p.number == s.number && p.size == s.len))
    .then(|| crc64::combine_all(old.parts.iter().map(|p| (p.crc64(), p.size))));
    let want = old
        .completing
        .as_ref()
        .and_then(|c| c.crc64())
        .or(up.object_crc64)
        .or(folded)?;
    let head: Result<ObjectMeta, StoreError> = control!(
        ctx,
        "HeadObject",
        ctx.opts.request_timeout,
        ctx.dst.store.head(&ctx.dst.key)
    );
    let head = head.ok()?;
    if head.size != up.size || head.checksums.crc64_xz() != Some(want) {
        return None;
    }
    info!(
        upload_id = %old.upload_id,
        crc64 = want,
        "the interrupted run had completed the upload: {} already holds the object",
        ctx.dst_desc
    );
    Some(Finished {
        crc64: want,
        parts: specs.len() as u32,
        part_size: old.part_size,
        source_crc64: old.completing.as_ref().and_then(|c| c.source_crc64()),
    })
}

async fn multipart(
    ctx: &Arc<Ctx>,
    meta: &ObjectMeta,
    planned_part_size: u64,
    put_opts: &PutOptions,
    cancel: &CancellationToken,
) -> Result<Outcome, TransferError> {
    let fp = SourceFingerprint::from(meta);
    let state_path = ctx
        .opts
        .state_dir
        .as_ref()
        .map(|d| state::state_path(d, &ctx.src_desc, &ctx.dst_desc));

    // 1 + 2. Resume a previous run (reconciled below with what the destination really
    // holds) or start a new upload.
    let opened = open_upload(
        ctx,
        Upload {
            source: ctx.src_desc.clone(),
            size: meta.size,
            fingerprint: fp,
            planned_part_size,
            put_opts,
            state_path: state_path.as_deref(),
            single_part_ok: false,
            object_crc64: meta.checksums.crc64_xz(),
        },
    )
    .await?;
    let (mut st, listed) = match opened {
        Opened::Upload(st, listed) => (*st, listed),
        Opened::Finished(f) => {
            finished_progress(&ctx.progress, meta.size, f.parts);
            return Ok(Outcome {
                crc64: f.crc64,
                parts: f.parts,
                part_size: f.part_size,
                resumed_bytes: meta.size,
            });
        }
    };
    let part_size = st.part_size;
    let specs: Arc<Vec<PartSpec>> = Arc::new(plan::parts(meta.size, part_size));
    let mut done: Vec<Option<StatePart>> = vec![None; specs.len()];
    let mut resumed_bytes = 0;
    if let Some(listed) = listed {
        let by_number: HashMap<u32, _> = listed.iter().map(|p| (p.number, p)).collect();
        let mut kept = Vec::new();
        for rec in &st.parts {
            let Some(spec) = specs.get(rec.number as usize - 1) else {
                continue;
            };
            let Some(l) = by_number.get(&rec.number) else {
                continue;
            };
            let confirmed = match l.checksums.crc64_xz() {
                Some(c) => c == rec.crc64(),
                None => l.etag == rec.etag,
            };
            if rec.size == spec.len && l.size == spec.len && confirmed {
                let part = StatePart {
                    etag: l.etag.clone(),
                    ..rec.clone()
                };
                done[rec.number as usize - 1] = Some(part.clone());
                resumed_bytes += spec.len;
                kept.push(part);
            } else {
                debug!(
                    part = rec.number,
                    "recorded part not confirmed by the destination; sending it again"
                );
            }
        }
        info!(
            kept = kept.len(),
            resumed_bytes, "reconciled with the destination's part list"
        );
        metrics::counter!(m::PARTS_TOTAL, "result" => "skipped").increment(kept.len() as u64);
        st.parts = kept;
    }
    let upload_id: Arc<str> = Arc::from(st.upload_id.as_str());
    let p = &ctx.progress;
    p.parts_total.store(specs.len() as u64, Relaxed);
    p.parts_done
        .store(done.iter().filter(|d| d.is_some()).count() as u64, Relaxed);
    p.resumed_bytes.store(resumed_bytes, Relaxed);
    p.acked_bytes.store(resumed_bytes, Relaxed);

    let mut keeper = StateKeeper::new(state_path.clone(), st);
    let result = transfer_and_prove(
        ctx,
        meta,
        &specs,
        &mut done,
        &mut keeper,
        &upload_id,
        cancel,
    )
    .await;
    let combined = match result {
        Ok(c) => c,
        Err(e) => return Err(fail(ctx, e, &upload_id, &mut keeper).await),
    };

    // 3. Complete and check the destination's own CRC-64 of the whole object.
    let list: Vec<(u32, String)> = done
        .iter()
        .map(|d| {
            let d = d.as_ref().expect("all parts done");
            (d.number, d.etag.clone())
        })
        .collect();
    if let Err(e) = keeper.completing(combined, None).await {
        return Err(fail(ctx, e, &upload_id, &mut keeper).await);
    }
    let uploaded = match complete(ctx, &upload_id, &list, meta.size, combined).await {
        Ok(u) => u,
        Err(e) => return Err(fail(ctx, e, &upload_id, &mut keeper).await),
    };
    keeper.remove().await;
    if let Some(c) = uploaded.checksums.crc64_xz() {
        if c != combined {
            ctx.note_crc_mismatch();
            let _ = ctx.dst.store.delete(&ctx.dst.key).await;
            return Err(TransferError::crc64_mismatch(
                format!("{} after CompleteMultipartUpload", ctx.dst_desc),
                combined,
                c,
            ));
        }
    }
    Ok(Outcome {
        crc64: combined,
        parts: specs.len() as u32,
        part_size,
        resumed_bytes,
    })
}

/// Sends every missing part, then proves the parts against the source CRC-64 (repairing
/// parts whose source bytes were corrupted in transit). Returns the combined CRC-64.
async fn transfer_and_prove(
    ctx: &Arc<Ctx>,
    meta: &ObjectMeta,
    specs: &Arc<Vec<PartSpec>>,
    done: &mut [Option<StatePart>],
    keeper: &mut StateKeeper,
    upload_id: &Arc<str>,
    cancel: &CancellationToken,
) -> Result<u64, TransferError> {
    let etag: Arc<str> = Arc::from(meta.etag.as_str());
    let mut aimd = Aimd::new(ctx.opts.concurrency);
    let mut round = 0;
    loop {
        let todo: Vec<usize> = (0..specs.len()).filter(|&i| done[i].is_none()).collect();
        if !todo.is_empty() {
            run_parts(
                ctx, specs, todo, done, keeper, &mut aimd, cancel, upload_id, &etag,
            )
            .await?;
        }
        let combined = crc64::combine_all(
            done.iter()
                .zip(specs.iter())
                .map(|(d, s)| (d.as_ref().expect("part done").crc64(), s.len)),
        );
        let Some(want) = meta.checksums.crc64_xz() else {
            return Ok(combined);
        };
        if want == combined {
            return Ok(combined);
        }
        ctx.note_crc_mismatch();
        if round >= REPAIR_ROUNDS {
            return Err(TransferError::crc64_mismatch(
                format!(
                    "the parts sent to {} against {}",
                    ctx.dst_desc, ctx.src_desc
                ),
                want,
                combined,
            ));
        }
        round += 1;
        warn!(
            expected = want,
            actual = combined,
            "the parts' CRC-64 does not match the source: re-reading the source to find corrupted parts"
        );
        let recorded: Vec<u64> = done
            .iter()
            .map(|d| d.as_ref().expect("done").crc64())
            .collect();
        let find = verify::find_bad_parts(
            ctx.src.clone(),
            specs.to_vec(),
            recorded,
            meta.etag.clone(),
            ctx.opts.concurrency,
            ctx.opts.max_attempts,
            ctx.backoff(),
            ctx.opts.idle_timeout,
            ctx.opts.request_timeout,
            ctx.progress.clone(),
        );
        let bad = tokio::select! {
            r = find => r,
            _ = cancel.cancelled() => return Err(TransferError::Interrupted { state_file: None }),
        };
        let bad = match bad {
            Ok(b) => b,
            Err(e) if e.class == ErrorClass::Precondition => {
                return Err(source_changed(ctx, &meta.etag).await)
            }
            Err(e) => {
                return Err(TransferError::store(
                    format!("cannot re-read {} to locate corrupted parts", ctx.src_desc),
                    e,
                ))
            }
        };
        if bad.is_empty() {
            return Err(TransferError::crc64_mismatch(
                format!(
                    "{} (its bytes do not match the CRC-64 it reports)",
                    ctx.src_desc
                ),
                want,
                combined,
            ));
        }
        warn!(parts = ?bad.iter().map(|&i| specs[i].number).collect::<Vec<_>>(), "sending corrupted parts again");
        let numbers: Vec<u32> = bad.iter().map(|&i| specs[i].number).collect();
        for &i in &bad {
            done[i] = None;
            ctx.progress.acked_bytes.fetch_sub(specs[i].len, Relaxed);
            ctx.progress.parts_done.fetch_sub(1, Relaxed);
            ctx.note_retry("crc_mismatch");
        }
        keeper.forget(&numbers);
    }
}

struct Job {
    idx: usize,
    attempt: u32,
    /// Not before this time (retry backoff). Waiting jobs hold no concurrency slot, so one
    /// part backing off does not hold up the others.
    ready_at: Option<Instant>,
    backoff: Backoff,
}

enum Event {
    Cancel,
    GraceOver,
    Joined(Result<(Job, Result<super::pipe::Piped, PipeError>), tokio::task::JoinError>),
    Wrote(Result<(), TransferError>),
    Idle,
}

/// Runs parts `todo` with at most the adaptive limit in flight, retrying each on its own.
#[allow(clippy::too_many_arguments)]
async fn run_parts(
    ctx: &Arc<Ctx>,
    specs: &Arc<Vec<PartSpec>>,
    todo: Vec<usize>,
    done: &mut [Option<StatePart>],
    keeper: &mut StateKeeper,
    aimd: &mut Aimd,
    cancel: &CancellationToken,
    upload_id: &Arc<str>,
    etag: &Arc<str>,
) -> Result<(), TransferError> {
    let mut queue: VecDeque<Job> = todo
        .into_iter()
        .map(|idx| Job {
            idx,
            attempt: 1,
            ready_at: None,
            backoff: ctx.backoff(),
        })
        .collect();
    let mut set = JoinSet::new();
    let mut stopping = false;
    let mut grace: Option<Instant> = None;
    let mut failure: Option<TransferError> = None;
    loop {
        if !stopping && cancel.is_cancelled() {
            stopping = true;
            grace = Some(Instant::now() + ctx.opts.grace);
        }
        let mut next_ready: Option<Instant> = None;
        if !stopping && failure.is_none() {
            let now = Instant::now();
            while set.len() + keeper.unsaved() < aimd.limit() {
                // Retried jobs sit at the front; the scan stops at the first ready job.
                let Some(i) = queue
                    .iter()
                    .position(|j| j.ready_at.is_none_or(|t| t <= now))
                else {
                    break;
                };
                let job = queue.remove(i).expect("index from position");
                spawn_part(&mut set, ctx, specs, job, upload_id, etag);
            }
            if set.len() + keeper.unsaved() < aimd.limit() {
                next_ready = queue.iter().filter_map(|j| j.ready_at).min();
            }
        }
        if set.is_empty() && (queue.is_empty() || stopping || failure.is_some()) {
            break;
        }
        let ev = tokio::select! {
            biased;
            _ = cancel.cancelled(), if !stopping => Event::Cancel,
            _ = tokio::time::sleep_until(next_ready.unwrap_or_else(Instant::now)), if next_ready.is_some() => Event::Idle,
            _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => Event::GraceOver,
            // Before joins: a finished write must start the next one promptly, or acks pile
            // up unsaved while parts keep completing.
            r = keeper.wait_write(), if keeper.is_writing() => Event::Wrote(r),
            Some(r) = set.join_next() => Event::Joined(r),
            else => Event::Idle,
        };
        match ev {
            Event::Idle => {}
            Event::Cancel => {
                info!(
                    inflight = set.len(),
                    "interrupted: letting in-flight parts finish"
                );
                stopping = true;
                grace = Some(Instant::now() + ctx.opts.grace);
            }
            Event::GraceOver => {
                grace = None;
                set.abort_all();
            }
            Event::Wrote(r) => {
                if let Err(e) = r {
                    failure.get_or_insert(e);
                    set.abort_all();
                }
            }
            Event::Joined(Err(e)) => {
                if e.is_panic() {
                    failure.get_or_insert(TransferError::Plan(format!(
                        "internal error: a part task panicked: {e}"
                    )));
                    set.abort_all();
                }
            }
            Event::Joined(Ok((job, Ok(piped)))) => {
                let spec = specs[job.idx];
                let part = StatePart::new(spec.number, spec.len, piped.crc64, piped.uploaded.etag);
                done[job.idx] = Some(part.clone());
                keeper.record(part);
                let p = &ctx.progress;
                p.acked_bytes.fetch_add(spec.len, Relaxed);
                p.parts_done.fetch_add(1, Relaxed);
                metrics::counter!(m::ACKNOWLEDGED_BYTES_TOTAL).increment(spec.len);
                metrics::counter!(m::PARTS_TOTAL, "result" => "ok").increment(1);
                aimd.on_success();
                p.set_limit(aimd.limit());
            }
            Event::Joined(Ok((mut job, Err(e)))) => {
                let spec = specs[job.idx];
                if e.side == Side::Source && e.class() == ErrorClass::Precondition {
                    if failure.is_none() {
                        failure = Some(source_changed(ctx, etag).await);
                    }
                    set.abort_all();
                } else if should_retry(e.class(), job.attempt, ctx.opts.max_attempts) {
                    if stopping || failure.is_some() {
                        continue; // sent again on resume
                    }
                    debug!(part = spec.number, attempt = job.attempt, reason = e.reason, error = %e.err, "part failed; retrying");
                    ctx.note_retry(e.reason);
                    metrics::counter!(m::PARTS_TOTAL, "result" => "retried").increment(1);
                    if e.class() == ErrorClass::Throttled {
                        aimd.on_throttle();
                        ctx.progress.set_limit(aimd.limit());
                    }
                    job.ready_at = Some(Instant::now() + job.backoff.next(e.class()));
                    job.attempt += 1;
                    queue.push_front(job);
                } else {
                    metrics::counter!(m::PARTS_TOTAL, "result" => "failed").increment(1);
                    let side = match e.side {
                        Side::Source => format!("reading {}", ctx.src_desc),
                        Side::Destination => format!("writing {}", ctx.dst_desc),
                    };
                    failure.get_or_insert(TransferError::store(
                        format!(
                            "part {} (bytes {}-{}): {side} failed after {} attempt(s)",
                            spec.number,
                            spec.offset,
                            spec.offset + spec.len,
                            job.attempt
                        ),
                        e.err,
                    ));
                    set.abort_all();
                }
            }
        }
    }
    let flushed = keeper.flush().await;
    if let Some(f) = failure {
        return Err(f);
    }
    flushed?;
    if stopping {
        return Err(TransferError::Interrupted { state_file: None });
    }
    Ok(())
}

fn spawn_part(
    set: &mut JoinSet<(Job, Result<super::pipe::Piped, PipeError>)>,
    ctx: &Arc<Ctx>,
    specs: &Arc<Vec<PartSpec>>,
    job: Job,
    upload_id: &Arc<str>,
    etag: &Arc<str>,
) {
    let ctx = ctx.clone();
    let spec = specs[job.idx];
    let upload_id = upload_id.clone();
    let etag = etag.clone();
    set.spawn(async move {
        let _inflight = InflightGuard::new(ctx.progress.clone());
        let dst = ctx.dst.clone();
        let span = tracing::debug_span!("part", number = spec.number, attempt = job.attempt);
        let r = pipe(
            &ctx.pipe,
            &ctx.src,
            spec.offset,
            spec.offset + spec.len,
            if_match(&etag),
            None,
            move |body| async move {
                dst.store
                    // Streamed: the part's checksums are known only once it has been sent.
                    .upload_part(&dst.key, &upload_id, spec, body, &Checksums::new())
                    .await
            },
        )
        .instrument(span)
        .await;
        (job, r)
    });
}

/// CompleteMultipartUpload with retries. OSS finishes a completion even if the client lost the
/// response, so a `NoSuchUpload` after a failed attempt is checked with HEAD.
pub(super) async fn complete(
    ctx: &Ctx,
    upload_id: &str,
    parts: &[(u32, String)],
    size: u64,
    expected_crc: u64,
) -> Result<Uploaded, TransferError> {
    let mut backoff = ctx.backoff();
    let mut attempt = 1;
    let timeout = ctx.opts.request_timeout.map(|t| t * 5);
    let expected: Checksums = Checksum::Crc64Xz(expected_crc).into();
    loop {
        let r = match super::within(
            timeout,
            ctx.dst
                .store
                .complete(&ctx.dst.key, upload_id, parts, &expected),
        )
        .await
        {
            Some(r) => r,
            None => Err(StoreError::transient(format!(
                "CompleteMultipartUpload: no response within {:?}",
                timeout.unwrap_or_default()
            ))),
        };
        match r {
            Ok(u) => return Ok(u),
            Err(e) if should_retry(e.class, attempt, ctx.opts.max_attempts) => {
                ctx.note_retry(e.class.as_str());
                tokio::time::sleep(backoff.next(e.class)).await;
                attempt += 1;
            }
            Err(e) if e.class == ErrorClass::NotFound && attempt > 1 => {
                if let Ok(head) = ctx.dst.store.head(&ctx.dst.key).await {
                    if head.size == size
                        && head.checksums.crc64_xz().is_none_or(|c| c == expected_crc)
                    {
                        info!("an earlier CompleteMultipartUpload succeeded although its response was lost");
                        return Ok(Uploaded {
                            etag: head.etag,
                            checksums: head.checksums,
                        });
                    }
                }
                return Err(TransferError::store(
                    format!("cannot complete the upload to {}", ctx.dst_desc),
                    e,
                ));
            }
            Err(e) => {
                return Err(TransferError::store(
                    format!("cannot complete the upload to {}", ctx.dst_desc),
                    e,
                ))
            }
        }
    }
}

/// Decides what happens to the upload and the state after a failure.
pub(super) async fn fail(
    ctx: &Ctx,
    err: TransferError,
    upload_id: &str,
    keeper: &mut StateKeeper,
) -> TransferError {
    let path: Option<&Path> = keeper.path.as_deref();
    match err {
        TransferError::SourceChanged { .. } | TransferError::CrcMismatch { .. } => {
            abort_quietly(ctx, upload_id).await;
            keeper.remove().await;
            err
        }
        TransferError::Interrupted { .. } => match path {
            Some(p) => {
                let p = p.to_path_buf();
                if let Err(e) = keeper.flush().await {
                    return e;
                }
                TransferError::Interrupted {
                    state_file: Some(p),
                }
            }
            None => {
                abort_quietly(ctx, upload_id).await;
                TransferError::Interrupted { state_file: None }
            }
        },
        // The state directory failed, not the upload: like an interruption, keep the upload
        // that the last state file written names, so that the rerun resumes from it.
        TransferError::StateWrite { .. } => err,
        other => match path {
            Some(p) => {
                let p = p.to_path_buf();
                let _ = keeper.flush().await;
                TransferError::Resumable {
                    source: Box::new(other),
                    state_file: p,
                }
            }
            None => {
                abort_quietly(ctx, upload_id).await;
                other
            }
        },
    }
}
