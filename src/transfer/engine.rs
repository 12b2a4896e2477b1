//! `copy`: plan, (resume or) start the upload, schedule parts, prove, complete.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};

use crate::checksum::Checksums;
use crate::metrics as m;
use crate::store::{ErrorClass, ObjectMeta, PartSpec, PutOptions, StoreError};

use super::budget::{MemoryBudget, TokenBucket};
use super::pipe::{pipe, EarlyGet, PipeCtx, Side};
use super::progress::InflightGuard;
use super::retry::Aimd;
use super::schedule::{run_parts, Run};
use super::session::{
    check_completed, complete, confirmed_parts, discard_stale_state, fail, finished_progress,
    open_upload, Opened, StateKeeper, Upload,
};
use super::source::Ranges;
use super::state::{self, SourceFingerprint, StatePart};
use super::{plan, verify, CopyOptions, CopySummary, Location, Progress, TransferError};
use crate::store::retry::{should_retry, Backoff};

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
        let timeout: Option<std::time::Duration> = $timeout;
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
    checksums: Checksums,
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

/// The context of one transfer: its stores and options, and the pipe's memory budget,
/// bandwidth bucket and digest (shared by a plain copy and the shards of a sharded one).
pub(super) fn context(
    src: Location,
    dst: Location,
    opts: CopyOptions,
    progress: Arc<Progress>,
) -> Arc<Ctx> {
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
        digest: super::proof::digest_for(&*src.store, &*dst.store),
        proofs: Default::default(),
    };
    Arc::new(Ctx {
        src_desc: src.describe(),
        dst_desc: dst.describe(),
        src,
        dst,
        opts,
        progress,
        pipe,
    })
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
    let ctx = context(src, dst, opts, progress.clone());
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
        parts = plan::parts_count(
            meta.size,
            part_size,
            plan::tail(meta.size, part_size, ctx.dst.store.limits())
        ),
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
        crc64: out
            .checksums
            .crc64_xz()
            .expect("CRC-64/XZ is always computed"),
        checksums: out.checksums,
        parts: out.parts,
        part_size: out.part_size,
        retries: progress.retries.load(Relaxed)
            + store_retries(&ctx.src, &ctx.dst).saturating_sub(retries_before),
        resumed_bytes: out.resumed_bytes,
        source_crc64_known: meta.checksums.crc64_xz().is_some(),
        verified_by: ctx.pipe.proofs.list(),
        end_to_end: ctx.pipe.proofs.end_to_end(),
        hedged_parts: progress.hedged_parts.load(Relaxed),
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
    metrics::gauge!(m::AWAITING_ACK_PARTS).set(p.awaiting_ack_parts.load(Relaxed) as f64);
    metrics::gauge!(m::SENDING_PARTS).set(p.sending_parts.load(Relaxed) as f64);
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

// ---------------------------------------------------------------------------------------------
// Single PUT

/// After a PUT whose response echoed no checksum we computed: HEAD the destination when it
/// reports one we computed, record the proof if it matches and fail if it differs.
async fn verify_put_by_head(ctx: &Arc<Ctx>, ours: &Checksums) -> Result<(), TransferError> {
    let caps = ctx.dst.store.checksums();
    if !ours.iter().any(|c| caps.reports(c.algorithm())) {
        return Ok(());
    }
    // A failed HEAD only leaves the copy unproven (reported as such), never fails it.
    let Ok(head) = ctx.dst.store.head(&ctx.dst.key).await else {
        return Ok(());
    };
    super::session::check_destination(ctx, &head.checksums, ours, "PutObject").await
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
    let claim = super::proof::source_claim(&meta.checksums, &ctx.pipe.digest.clone().finish());
    loop {
        let fut = pipe(
            &ctx.pipe,
            &ctx.src,
            0,
            size,
            if_match(&meta.etag),
            claim,
            None,
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
                if let Some(c) = claim {
                    ctx.pipe.proofs.source(c.algorithm());
                }
                // The whole object's checksums the PUT echoed were compared by the pipe.
                let echoed =
                    super::proof::compare(&p.uploaded.checksums, &p.checksums).unwrap_or_default();
                let proven = !echoed.is_empty();
                for a in echoed {
                    ctx.pipe.proofs.destination(a);
                }
                // S3 echoes a PutObject's checksum only when the request carried one, which a
                // streamed body cannot; it still stores a FULL_OBJECT CRC-64/NVME for every
                // object, so ask for it rather than leave a small object unproven.
                if !proven {
                    verify_put_by_head(ctx, &p.checksums).await?;
                }
                return Ok(Outcome {
                    checksums: p.checksums,
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

    // A new upload (no state to resume): the first parts' GETs go out now, with the
    // Initiate, rather than one round trip after it. With a state file, which parts are
    // missing is known only after ListParts.
    let planned_tail = plan::tail(meta.size, planned_part_size, ctx.dst.store.limits());
    let early: Vec<(usize, EarlyGet)> = if state_path.as_deref().is_none_or(|p| !p.exists()) {
        let planned = plan::parts_with_tail(meta.size, planned_part_size, planned_tail);
        let all = (0..planned.len()).collect();
        // The parts the scheduler starts first (see transfer_and_prove).
        plan::stagger(&planned, all, planned_tail, ctx.opts.concurrency)
            .into_iter()
            .take(ctx.opts.concurrency)
            .map(|i| {
                let s = planned[i];
                let get =
                    EarlyGet::issue(&ctx.src, s.offset, s.offset + s.len, if_match(&meta.etag));
                (i, get)
            })
            .collect()
    } else {
        Vec::new()
    };

    // 1 + 2. Resume a previous run (reconciled below with what the destination really
    // holds) or start a new upload.
    let opened = open_upload(
        ctx,
        Upload {
            source: ctx.src_desc.clone(),
            size: meta.size,
            fingerprint: fp,
            planned_part_size,
            planned_tail,
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
                checksums: f.checksums,
                parts: f.parts,
                part_size: f.part_size,
                resumed_bytes: meta.size,
            });
        }
    };
    let part_size = st.part_size;
    let specs: Arc<Vec<PartSpec>> = Arc::new(plan::parts_with_tail(meta.size, part_size, st.tail));
    let mut done: Vec<Option<StatePart>> = vec![None; specs.len()];
    let mut resumed_bytes = 0;
    if let Some(listed) = listed {
        let kept = confirmed_parts(&st.parts, &listed, &specs);
        for part in &kept {
            let i = part.number as usize - 1;
            done[i] = Some(part.clone());
            resumed_bytes += specs[i].len;
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

    let st_tail = st.tail;
    let mut keeper = StateKeeper::new(state_path.clone(), st);
    let result = transfer_and_prove(
        ctx,
        meta,
        &specs,
        &mut done,
        &mut keeper,
        &upload_id,
        st_tail,
        early,
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
    if let Err(e) = keeper.completing(&combined, None).await {
        return Err(fail(ctx, e, &upload_id, &mut keeper).await);
    }
    let uploaded = match complete(ctx, &upload_id, &list, meta.size, &combined).await {
        Ok(u) => u,
        Err(e) => return Err(fail(ctx, e, &upload_id, &mut keeper).await),
    };
    keeper.remove().await;
    check_completed(ctx, &uploaded, &combined).await?;
    Ok(Outcome {
        checksums: combined,
        parts: specs.len() as u32,
        part_size,
        resumed_bytes,
    })
}

/// Hedged parts whose two attempts may both have reached the store (see
/// [`super::schedule`]): the store keeps the last body uploaded for a part number, so the
/// ETag Complete must name is the listed one. Both bodies are the same bytes: a listed part
/// is kept when it passes the rule every resumed part passes ([`confirmed_parts`]: sizes and
/// CRC-64, or ETag) and takes the listed ETag; one that does not is forgotten and sent again.
pub(super) async fn relist_hedged(
    ctx: &Arc<Ctx>,
    specs: &[PartSpec],
    done: &mut [Option<StatePart>],
    keeper: &mut StateKeeper,
    upload_id: &str,
    mut numbers: Vec<u32>,
) -> Result<(), TransferError> {
    numbers.sort_unstable();
    numbers.dedup();
    let recorded: Vec<StatePart> = numbers
        .iter()
        .filter_map(|&n| done[n as usize - 1].clone())
        .collect();
    if recorded.is_empty() {
        return Ok(());
    }
    let listed: Result<Vec<crate::store::ListedPart>, StoreError> = control!(
        ctx,
        "ListParts",
        ctx.opts.request_timeout,
        ctx.dst.store.list_parts(&ctx.dst.key, upload_id)
    );
    let listed = listed.map_err(|e| {
        TransferError::store(
            format!(
                "cannot list the parts of the upload to {} (to confirm hedged parts)",
                ctx.dst_desc
            ),
            e,
        )
    })?;
    let kept = confirmed_parts(&recorded, &listed, specs);
    for rec in &recorded {
        let i = rec.number as usize - 1;
        match kept.iter().find(|k| k.number == rec.number) {
            Some(k) => {
                if k.etag != rec.etag {
                    debug!(
                        part = k.number,
                        "hedged part: the store lists the other attempt's ETag"
                    );
                }
                done[i] = Some(k.clone());
                keeper.record(k.clone());
            }
            None => {
                warn!(
                    part = rec.number,
                    "hedged part not confirmed by the destination's part list; sending it again"
                );
                done[i] = None;
                ctx.progress.acked_bytes.fetch_sub(specs[i].len, Relaxed);
                ctx.progress.parts_done.fetch_sub(1, Relaxed);
                keeper.forget(&[rec.number]);
            }
        }
    }
    Ok(())
}

/// Sends every missing part, then proves the parts against the source's checksum (repairing
/// parts whose source bytes were corrupted in transit). Returns the parts' checksums folded
/// into the whole object's. Parts go in [`plan::stagger`]'s order for the plan's `tail`;
/// `early`: the GETs issued ahead for the first ones (a new upload only).
#[allow(clippy::too_many_arguments)]
async fn transfer_and_prove(
    ctx: &Arc<Ctx>,
    meta: &ObjectMeta,
    specs: &Arc<Vec<PartSpec>>,
    done: &mut [Option<StatePart>],
    keeper: &mut StateKeeper,
    upload_id: &Arc<str>,
    tail: Option<plan::Tail>,
    mut early: Vec<(usize, EarlyGet)>,
    cancel: &CancellationToken,
) -> Result<Checksums, TransferError> {
    let etag: Arc<str> = Arc::from(meta.etag.as_str());
    let mut aimd = Aimd::new(ctx.opts.concurrency);
    let mut round = 0;
    loop {
        let todo: Vec<usize> = (0..specs.len()).filter(|&i| done[i].is_none()).collect();
        if !todo.is_empty() {
            let mut relist = Vec::new();
            let ran = run_parts(
                Run {
                    ctx,
                    specs,
                    done,
                    keeper,
                    aimd: &mut aimd,
                    cancel,
                    upload_id,
                    relist: &mut relist,
                },
                &mut Ranges::new(
                    plan::stagger(specs, todo, tail, ctx.opts.concurrency),
                    etag.clone(),
                )
                // Only the first round's parts can use the GETs issued ahead.
                .with_early(std::mem::take(&mut early)),
            )
            .await;
            // Even after a failure: the state must name what the store holds.
            relist_hedged(ctx, specs, done, keeper, upload_id, relist).await?;
            ran?;
            if done.iter().any(Option::is_none) {
                // A hedged part the store lists otherwise than acknowledged: send it again.
                continue;
            }
        }
        let combined = super::proof::fold(
            done.iter()
                .zip(specs.iter())
                .map(|(d, s)| (&d.as_ref().expect("part done").checksums, s.len)),
        );
        let Some(want) = super::proof::source_claim(&meta.checksums, &combined) else {
            return Ok(combined);
        };
        let got = combined.get(want.algorithm()).expect("claimed");
        if want == got {
            ctx.pipe.proofs.source(want.algorithm());
            return Ok(combined);
        }
        ctx.note_crc_mismatch();
        if round >= REPAIR_ROUNDS {
            return Err(TransferError::CrcMismatch {
                what: format!(
                    "the parts sent to {} against {}",
                    ctx.dst_desc, ctx.src_desc
                ),
                expected: want,
                actual: got,
            });
        }
        round += 1;
        warn!(
            expected = %want,
            actual = %got,
            algorithm = %want.algorithm(),
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
            return Err(TransferError::CrcMismatch {
                what: format!(
                    "{} (its bytes do not match the {} it reports)",
                    ctx.src_desc,
                    want.algorithm()
                ),
                expected: want,
                actual: got,
            });
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
