//! The upload session: everything about one multipart upload of a relay, whatever feeds its
//! parts (ranged GETs of a plain copy, decoded chunks of an unpack).
//!
//! Guarantees callers can rely on:
//! * Open: an upload recorded in the state file is resumed only if the source, the
//!   destination and the plan still match it and the destination still lists it; otherwise
//!   it is aborted (never orphaned) and a new one is started and saved before any part is sent.
//! * Record: acknowledged parts are saved in the background ([`StateKeeper`]); a recorded part
//!   holds its concurrency slot until a write holding it landed.
//! * Complete: the completion record is saved before CompleteMultipartUpload; a Complete whose
//!   answer was lost is recognised here (and only here) by the destination's size and CRC-64.
//! * Fail: [`fail`] alone decides what survives a failure (the upload and state for a rerun,
//!   or nothing when the bytes cannot be trusted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::checksum::{Checksum, Checksums};
use crate::store::{
    ErrorClass, ListedPart, ObjectMeta, PartSpec, PutOptions, StoreError, Uploaded,
};

use super::engine::{control, Ctx};
use super::state::{self, CopyState, SourceFingerprint, StatePart, STATE_VERSION};
use super::{plan, Progress, TransferError};

/// AbortMultipartUpload (retried by the store's transport); an upload already gone is fine.
pub(super) async fn abort_upload(ctx: &Ctx, upload_id: &str) -> Result<(), StoreError> {
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

/// A state file left by an earlier multipart run of this pair is useless to a single PUT (the
/// source shrank, or a larger part size was asked for): abort its upload so it does not
/// linger, billed, and drop the file. The caller holds the pair's lock, so that run is over.
pub(super) async fn discard_stale_state(ctx: &Ctx) -> Result<(), TransferError> {
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

/// Writes acknowledged parts somewhere other than a state file: a worker of a sharded copy
/// records each part as a small object next to its manifest (see [`super::shard`]). Called
/// with the parts recorded since the last call; done when all of them are durable.
pub(super) type RecordSink = Arc<
    dyn Fn(Vec<StatePart>) -> futures::future::BoxFuture<'static, Result<(), TransferError>>
        + Send
        + Sync,
>;

/// The resume state in memory, written to disk in the background as parts complete; writes
/// coalesce. A recorded part keeps its concurrency slot until a write holding it landed
/// ([`StateKeeper::unsaved`]), so a kill -9 never re-sends more than `concurrency` parts.
/// With a [`RecordSink`] instead of a file, the same holds for the parts it records.
pub(super) struct StateKeeper {
    pub(super) path: Option<PathBuf>,
    pub(super) state: CopyState,
    pub(super) dirty: bool,
    pub(super) writing: Option<JoinHandle<Result<(), TransferError>>>,
    /// Parts recorded since the last write started.
    recorded_since_write: usize,
    /// Parts recorded in the write in flight.
    in_write: usize,
    /// Where parts go instead of a state file, and those not yet handed to it.
    sink: Option<(RecordSink, Vec<StatePart>)>,
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
            sink: None,
        }
    }

    /// A keeper whose parts are recorded by `sink` (no state file).
    pub(super) fn with_sink(state: CopyState, sink: RecordSink) -> Self {
        Self {
            dirty: false,
            sink: Some((sink, Vec::new())),
            ..Self::new(None, state)
        }
    }

    /// Whether recorded parts are written anywhere.
    fn durable(&self) -> bool {
        self.path.is_some() || self.sink.is_some()
    }

    pub(super) fn record(&mut self, part: StatePart) {
        if let Some((_, pending)) = &mut self.sink {
            pending.push(part.clone());
        }
        self.state.record(part);
        if self.durable() {
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
        if self.durable() {
            self.dirty = true;
            self.kick();
        }
    }

    fn kick(&mut self) {
        if self.writing.is_some() || !self.dirty {
            return;
        }
        if let Some((sink, pending)) = &mut self.sink {
            let parts = std::mem::take(pending);
            self.dirty = false;
            self.in_write = std::mem::take(&mut self.recorded_since_write);
            if !parts.is_empty() {
                self.writing = Some(tokio::spawn((**sink)(parts)));
            }
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
        while self.is_writing() || (self.dirty && self.durable()) {
            self.kick();
            self.wait_write().await?;
        }
        Ok(())
    }

    /// Records, durably, what the object must hold once CompleteMultipartUpload runs (see
    /// [`state::CopyState::completing`]).
    pub(super) async fn completing(
        &mut self,
        checksums: &Checksums,
        source_crc64: Option<u64>,
    ) -> Result<(), TransferError> {
        self.state.completing = Some(state::Completing::with(checksums.clone(), source_crc64));
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

/// What [`open_upload`] resumes or starts.
pub(super) struct Upload<'a> {
    /// The source as recorded in the state file.
    pub source: String,
    /// Bytes the destination object will have.
    pub size: u64,
    pub fingerprint: SourceFingerprint,
    pub planned_part_size: u64,
    /// The smaller parts a new upload ends with (see [`plan::Tail`]).
    pub planned_tail: Option<plan::Tail>,
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
    /// What the destination object holds, as recorded and confirmed by its HEAD.
    pub checksums: Checksums,
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
                    && plan::tail_fits(up.size, old.part_size, old.tail, limits)
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
                            return Ok(Opened::Upload(old, Some(l)));
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
        tail: up.planned_tail,
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
    let specs = plan::parts_with_tail(up.size, old.part_size, old.tail);
    let folded = (old.parts.len() == specs.len()
        && old
            .parts
            .iter()
            .zip(&specs)
            .all(|(p, s)| p.number == s.number && p.size == s.len))
    .then(|| super::proof::fold(old.parts.iter().map(|p| (&p.checksums, p.size))));
    let want: Checksums = old
        .completing
        .as_ref()
        .map(|c| c.checksums.clone())
        .or(up.object_crc64.map(|c| Checksum::Crc64Xz(c).into()))
        .or(folded)?;
    let head: Result<ObjectMeta, StoreError> = control!(
        ctx,
        "HeadObject",
        ctx.opts.request_timeout,
        ctx.dst.store.head(&ctx.dst.key)
    );
    let head = head.ok()?;
    if head.size != up.size || !holds(&head, &want) {
        return None;
    }
    info!(
        upload_id = %old.upload_id,
        checksums = ?want,
        "the interrupted run had completed the upload: {} already holds the object",
        ctx.dst_desc
    );
    Some(Finished {
        checksums: want,
        parts: specs.len() as u32,
        part_size: old.part_size,
        source_crc64: old.completing.as_ref().and_then(|c| c.source_crc64()),
    })
}

/// CompleteMultipartUpload, sent once by the engine: the request is replayable, so the store's
/// transport retries it (bounded, see [`crate::http`]); a retry here would multiply those
/// attempts.
///
/// Lost-Complete recovery lives here and nowhere else. Object stores finish a Complete even
/// when the client never hears the answer, so a retried Complete (the transport's, or a later
/// run's) can find the upload gone (`NoSuchUpload`). The object is then accepted only if the
/// destination holds exactly what this Complete was to produce: the expected size and a
/// CRC-64 equal to the parts' fold. Anything else, or a destination that reports no CRC-64,
/// is an error; a rerun resumes or starts over.
pub(super) async fn complete(
    ctx: &Ctx,
    upload_id: &str,
    parts: &[(u32, String)],
    size: u64,
    expected: &Checksums,
) -> Result<Uploaded, TransferError> {
    let timeout = ctx.opts.request_timeout.map(|t| t * 5);
    let r = match super::within(
        timeout,
        ctx.dst
            .store
            .complete(&ctx.dst.key, upload_id, parts, size, expected),
    )
    .await
    {
        Some(r) => r,
        None => Err(StoreError::transient(format!(
            "CompleteMultipartUpload: no response within {:?}",
            timeout.unwrap_or_default()
        ))),
    };
    let e = match r {
        Ok(u) => return Ok(u),
        Err(e) => e,
    };
    if e.class == ErrorClass::NotFound {
        let head: Result<ObjectMeta, StoreError> = control!(
            ctx,
            "HeadObject",
            ctx.opts.request_timeout,
            ctx.dst.store.head(&ctx.dst.key)
        );
        if let Ok(head) = head {
            if head.size == size && holds(&head, expected) {
                info!(
                    upload_id,
                    "the upload was already completed (a Complete whose answer was lost): \
                     {} holds the expected size and checksum",
                    ctx.dst_desc
                );
                return Ok(Uploaded {
                    etag: head.etag,
                    checksums: head.checksums,
                });
            }
        }
    }
    Err(TransferError::store(
        format!("cannot complete the upload to {}", ctx.dst_desc),
        e,
    ))
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

/// The recorded parts the destination's part list confirms: same number, both sizes equal the
/// plan's, and the listed CRC-64 equal to the recorded one (the ETag when the destination
/// lists no CRC-64). Each keeps the destination's ETag. The one rule for trusting a part of
/// an earlier run; the caller decides what else a part must pass (an unpack regenerates its
/// bytes and compares).
pub(super) fn confirmed_parts(
    recorded: &[StatePart],
    listed: &[ListedPart],
    specs: &[PartSpec],
) -> Vec<StatePart> {
    let by_number: HashMap<u32, &ListedPart> = listed.iter().map(|p| (p.number, p)).collect();
    let mut out = Vec::new();
    for rec in recorded {
        let (Some(spec), Some(l)) = (
            specs.get((rec.number as usize).wrapping_sub(1)),
            by_number.get(&rec.number),
        ) else {
            continue;
        };
        let confirmed = match super::proof::compare(&l.checksums, &rec.checksums) {
            Ok(matched) if !matched.is_empty() => true,
            Ok(_) => l.etag == rec.etag,
            Err(_) => false,
        };
        if rec.size == spec.len && l.size == spec.len && confirmed {
            out.push(StatePart {
                etag: l.etag.clone(),
                ..rec.clone()
            });
        } else {
            debug!(
                part = rec.number,
                "recorded part not confirmed by the destination; sending it again"
            );
        }
    }
    out
}

/// Whether a destination's HEAD shows the object `want` describes: at least one checksum in
/// common, and every common one equal.
fn holds(head: &ObjectMeta, want: &Checksums) -> bool {
    matches!(super::proof::compare(&head.checksums, want), Ok(m) if !m.is_empty())
}

/// The destination's answer to CompleteMultipartUpload must carry the checksums folded from
/// the parts (those it reports); otherwise the object is deleted and the copy fails. Only a
/// checksum the answer echoes proves the object: a Complete that succeeded says nothing when
/// the store silently ignored the FULL_OBJECT CRC-64/NVME we sent (S3 echoes it in
/// `ChecksumCRC64NVME`; stores that ignore `x-amz-checksum-*` do not).
pub(super) async fn check_completed(
    ctx: &Ctx,
    uploaded: &Uploaded,
    combined: &Checksums,
) -> Result<(), TransferError> {
    check_destination(
        ctx,
        &uploaded.checksums,
        combined,
        "CompleteMultipartUpload",
    )
    .await
}

/// The one check of what a destination reports for the whole object (`reported`, from a
/// Complete's answer or a HEAD after `step`) against ours: matches are recorded as proofs, a
/// difference deletes the object and fails the copy.
pub(super) async fn check_destination(
    ctx: &Ctx,
    reported: &Checksums,
    combined: &Checksums,
    step: &str,
) -> Result<(), TransferError> {
    match super::proof::compare(reported, combined) {
        Ok(matched) => {
            for a in matched {
                ctx.pipe.proofs.destination(a);
            }
            Ok(())
        }
        Err((reported, ours)) => {
            ctx.note_crc_mismatch();
            let _ = ctx.dst.store.delete(&ctx.dst.key).await;
            Err(TransferError::CrcMismatch {
                what: format!("{} after {step}", ctx.dst_desc),
                expected: ours,
                actual: reported,
            })
        }
    }
}
