//! Sharded copy: one object relayed by many processes or machines (a Kubernetes Indexed Job),
//! all uploading parts of one multipart upload, which any machine may do.
//!
//! Three steps, each idempotent and safe to repeat:
//! * [`plan`] (the coordinator): HEADs the source, fixes the part size ([`super::plan`]) and
//!   the part → shard assignment (contiguous ranges, so each worker streams sequentially),
//!   opens the multipart upload, or finds the one an earlier plan of the same source and
//!   shape opened, and writes the [`Manifest`] (by default `DST.ossrelay/manifest.json`).
//! * [`work`] (shard `I`): relays only its parts through the part scheduler of a plain copy
//!   (same `If-Match` on the source, per-part CRC checks, memory budget, AIMD, retries,
//!   hedging) and records each acknowledged part as a small object under the manifest's
//!   prefix before its slot is freed; once all are done, one record of the whole shard.
//! * [`complete`] (the coordinator, or the last worker): pages ListParts, requires every
//!   planned part listed with its recorded CRC-64, folds the CRCs, proves them against the
//!   source's, completes, proves the Complete's answer, marks the manifest complete and
//!   deletes the records.
//!
//! Guarantees callers can rely on:
//! * Nothing is trusted that was not proven: a part counts as done only when it has a record
//!   of this plan (the CRC computed over the bytes read from the source) and the destination
//!   lists it with the same size and checksum (ETag when it lists none).
//! * A worker whose parts are all recorded and listed returns at once; a rerun sends only the
//!   parts that are not. Two workers of the same shard at once send the same bytes for the
//!   same part numbers and write the same records: either may win, the result is the same.
//! * A source that changed since the plan (size or ETag; mid-way: `If-Match`) fails every
//!   worker and the Complete with [`ShardError::SourceChanged`] ("changed"); the Complete then
//!   aborts the upload, whose parts can never make a valid object.
//! * A manifest edited after the plan, read from another place, or naming an upload that is
//!   not one of its destination's is refused ([`ShardError::BadManifest`]).
//! * Missing parts at Complete: [`ShardError::Incomplete`] names the shards to rerun.

pub mod manifest;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use crate::checksum::{Algorithm, Checksums};
use crate::store::{ErrorClass, ListedPart, ObjectMeta, PartSpec, PutOptions, StoreError};

use super::engine::{self, control, Ctx};
use super::retry::Aimd;
use super::schedule::{run_parts, Run};
use super::session::{self, RecordSink, StateKeeper};
use super::source::Ranges;
use super::state::{CopyState, SourceFingerprint, StatePart, STATE_VERSION};
use super::{plan as planner, CopyOptions, Location, Progress, TransferError};

pub use manifest::{default_manifest_key, Completed, Manifest, Records, ShardRange};

/// Why a step of a sharded copy failed. One line each, ending with what to do.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("no manifest at {at}: run `ossrelay copy SRC DST --shards N --plan` first (it writes the manifest and prints its URL), or pass the URL it printed to --manifest")]
    NoManifest { at: String },
    #[error("the manifest {at} cannot be used: {why}; plan again with `ossrelay copy SRC DST --shards N --plan`")]
    BadManifest { at: String, why: String },
    #[error("shard {index} is not in the plan {at}, which has {shards} shard(s) (0 to {}); check --shard or JOB_COMPLETION_INDEX against the Job's completions", .shards.saturating_sub(1))]
    NoSuchShard { at: String, index: u32, shards: u32 },
    #[error("source {what} changed since the plan (ETag {old_etag} → {new_etag}, size {old_size} → {new_size}){}; plan again with `ossrelay copy SRC DST --shards N --plan`, then rerun every shard", aborted_note(.aborted))]
    SourceChanged {
        what: String,
        old_etag: String,
        new_etag: String,
        old_size: u64,
        new_size: String,
        aborted: bool,
    },
    #[error("{missing} of {parts} part(s) are not uploaded and recorded yet: rerun shard(s) {} (`ossrelay copy --manifest {at} --shard I`), then complete again", list(.shards))]
    Incomplete {
        at: String,
        missing: usize,
        parts: u32,
        shards: Vec<u32>,
    },
    #[error("the upload {upload_id} named by {at} is gone (aborted, or completed by hand) and the manifest does not say it was completed; plan again with `ossrelay copy SRC DST --shards N --plan`")]
    UploadGone { at: String, upload_id: String },
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: StoreError,
    },
    /// A worker's relay failed; its recorded parts stay, so a rerun resumes.
    #[error("{source}; rerun shard {index} to resume (its recorded parts are kept)")]
    Worker {
        index: u32,
        #[source]
        source: TransferError,
    },
    #[error("{0}")]
    Transfer(#[from] TransferError),
}

fn aborted_note(aborted: &bool) -> &'static str {
    if *aborted {
        ", its upload was aborted"
    } else {
        ""
    }
}

fn list(shards: &[u32]) -> String {
    shards
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ShardError {
    /// Whether the step was interrupted (Ctrl-C, SIGTERM): exit 130, rerun to resume.
    pub fn interrupted(&self) -> bool {
        matches!(
            self,
            Self::Worker { source, .. } | Self::Transfer(source)
                if matches!(source.root(), TransferError::Interrupted { .. })
        )
    }

    fn store(context: impl Into<String>, source: StoreError) -> Self {
        Self::Store {
            context: context.into(),
            source,
        }
    }
}

/// What [`plan`] did; printed by `copy --plan` (JSON with `--json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanSummary {
    /// Where the manifest is: what workers and Complete are given (`--manifest`).
    pub manifest: String,
    pub source: String,
    pub destination: String,
    pub bytes: u64,
    pub part_size: u64,
    pub parts: u32,
    pub shards: u32,
    pub upload_id: String,
    /// An earlier plan of the same source and shape was found and kept (its upload and
    /// records stand).
    pub reused: bool,
    /// That plan was already completed: the destination holds the object.
    pub complete: bool,
    pub assignment: Vec<ShardRange>,
}

/// What one worker did; printed by `copy --manifest URL --shard I`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShardSummary {
    pub manifest: String,
    pub shard: u32,
    pub source: String,
    pub destination: String,
    /// Parts of this shard, and their bytes.
    pub parts: u32,
    pub bytes: u64,
    /// Bytes of parts found recorded and listed, not sent again.
    pub resumed_bytes: u64,
    pub seconds: f64,
    pub throughput_bytes_per_sec: f64,
    pub retries: u64,
    pub hedged_parts: u64,
    /// CRC-64/XZ of this shard's bytes (decimal string).
    #[serde(serialize_with = "super::state::ser_u64_string")]
    pub crc64: u64,
    /// The parts' own proofs (e.g. `part_crc64ecma`) that held for parts sent by this run.
    pub verified_by: Vec<String>,
    /// The plan was already completed: nothing to do.
    pub already_complete: bool,
}

/// What [`complete`] did; printed by `copy --manifest URL --complete`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CompleteSummary {
    pub manifest: String,
    pub source: String,
    pub destination: String,
    pub bytes: u64,
    pub seconds: f64,
    /// Whole-object CRC-64/XZ (decimal string).
    #[serde(serialize_with = "super::state::ser_u64_string")]
    pub crc64: u64,
    pub checksums: Checksums,
    pub parts: u32,
    pub part_size: u64,
    pub shards: u32,
    /// Which proofs held, named as in `copy --json` (`source_crc64ecma`, `part_crc64ecma`,
    /// `destination_crc64ecma`, ...).
    pub verified_by: Vec<String>,
    /// Whether a checksum of the destination's own matched ours.
    pub end_to_end: bool,
    /// An earlier Complete had done it: nothing was done now.
    pub already_complete: bool,
    /// Records that could not be deleted (a few bytes each; harmless).
    pub records_left: u64,
}

/// Reads and checks the manifest at `at`.
pub async fn read_manifest(at: &Location, opts: &CopyOptions) -> Result<Manifest, ShardError> {
    let bytes = manifest::get_small(&*at.store, &at.key, opts.request_timeout)
        .await
        .map_err(|e| match e.class {
            ErrorClass::NotFound => ShardError::NoManifest { at: at.describe() },
            _ => ShardError::store(format!("cannot read the manifest {}", at.describe()), e),
        })?
        .ok_or_else(|| ShardError::NoManifest { at: at.describe() })?;
    Manifest::parse(at, &bytes).map_err(|why| ShardError::BadManifest {
        at: at.describe(),
        why,
    })
}

async fn write_manifest(at: &Location, m: &Manifest, opts: &CopyOptions) -> Result<(), ShardError> {
    manifest::put_small(
        &*at.store,
        &at.key,
        m.to_bytes(),
        opts.request_timeout,
        opts.max_attempts,
        crate::store::retry::Backoff::new(opts.retry_base, opts.retry_cap),
    )
    .await
    .map_err(|e| ShardError::store(format!("cannot write the manifest {}", at.describe()), e))
}

fn records(at: &Location, m: &Manifest, opts: &CopyOptions) -> Records {
    Records {
        store: at.store.clone(),
        prefix: m.records.clone(),
        upload_id: m.upload_id.clone(),
        timeout: opts.request_timeout,
        attempts: opts.max_attempts,
        backoff: crate::store::retry::Backoff::new(opts.retry_base, opts.retry_cap),
    }
}

/// The manifest must describe the copy between these two locations.
fn bind(at: &Location, m: &Manifest, src: &Location, dst: &Location) -> Result<(), ShardError> {
    for (what, want, got) in [
        ("source", &m.source, src.describe()),
        ("destination", &m.destination, dst.describe()),
    ] {
        if *want != got {
            return Err(ShardError::BadManifest {
                at: at.describe(),
                why: format!("its {what} is {want}, not {got}"),
            });
        }
    }
    Ok(())
}

/// Reads records with this many requests at once.
const RECORD_READS: usize = 32;

fn source_changed(m: &Manifest, now: Option<&ObjectMeta>, aborted: bool) -> ShardError {
    ShardError::SourceChanged {
        what: m.source.clone(),
        old_etag: m.source_meta.etag.clone(),
        new_etag: now.map_or("(deleted)".into(), |h| h.etag.clone()),
        old_size: m.source_meta.size,
        new_size: now.map_or("(deleted)".into(), |h| h.size.to_string()),
        aborted,
    }
}

/// Whether the source still is what the plan saw: same size and ETag, and the same value
/// for every checksum both report.
fn same_source(fp: &SourceFingerprint, now: &ObjectMeta) -> bool {
    fp.size == now.size
        && fp.etag == now.etag
        && super::proof::compare(&now.checksums, &fp.checksums).is_ok()
}

/// HEAD of the source, `None` when it is gone.
async fn head_source(
    ctx: &Arc<Ctx>,
    cancel: &CancellationToken,
) -> Result<Option<ObjectMeta>, ShardError> {
    match engine::head_source(ctx, cancel).await {
        Ok(m) => Ok(Some(m)),
        Err(TransferError::Store { source, .. }) if source.class == ErrorClass::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

async fn list_parts(ctx: &Ctx, upload_id: &str) -> Result<Vec<ListedPart>, StoreError> {
    control!(
        ctx,
        "ListParts",
        ctx.opts.request_timeout,
        ctx.dst.store.list_parts(&ctx.dst.key, upload_id)
    )
}

/// Plans a sharded copy of `src` to `dst` in `shards` shards, its manifest at `at` (see the
/// module docs). An existing manifest at `at` of the same source, destination, shard count
/// and part size whose upload is still open (or completed) is kept as it is; any other one
/// is replaced, and its upload aborted.
pub async fn plan(
    src: Location,
    dst: Location,
    at: Location,
    shards: u32,
    opts: CopyOptions,
    cancel: CancellationToken,
) -> Result<PlanSummary, ShardError> {
    engine::validate(&opts)?;
    if shards == 0 {
        return Err(TransferError::Plan("--shards must be at least 1".into()).into());
    }
    let ctx = engine::context(src, dst, opts, Progress::new());
    let meta = head_source(&ctx, &cancel)
        .await?
        .ok_or_else(|| ShardError::store(format!("cannot read {}", ctx.src_desc), not_found()))?;
    if meta.size == 0 {
        return Err(TransferError::Plan(format!(
            "{} is empty: there is nothing to shard; copy it without --shards",
            ctx.src_desc
        ))
        .into());
    }
    let limits = ctx.dst.store.limits();
    let part_size = planner::plan_part_size(meta.size, ctx.opts.part_size, limits)?;
    let parts = meta.size.div_ceil(part_size) as u32;
    let fp = SourceFingerprint::from(&meta);

    let summary = |m: &Manifest, reused: bool| PlanSummary {
        manifest: m.manifest.clone(),
        source: m.source.clone(),
        destination: m.destination.clone(),
        bytes: m.size(),
        part_size: m.part_size,
        parts: m.parts,
        shards: m.shards.len() as u32,
        upload_id: m.upload_id.clone(),
        reused,
        complete: m.completed.is_some(),
        assignment: m.shards.clone(),
    };

    // An earlier plan: kept when it is this one, else its upload is aborted.
    match read_manifest(&at, &ctx.opts).await {
        Ok(old) if old.destination == ctx.dst_desc => {
            let same = old.source == ctx.src_desc
                && same_source(&old.source_meta, &meta)
                && old.shards.len() == shards as usize
                && ctx.opts.part_size.is_none_or(|p| p == old.part_size);
            if same && old.completed.is_some() {
                info!(manifest = %old.manifest, "this plan was already completed");
                return Ok(summary(&old, true));
            }
            if same {
                match list_parts(&ctx, &old.upload_id).await {
                    Ok(_) => {
                        info!(manifest = %old.manifest, upload_id = %old.upload_id, "keeping the plan already made");
                        return Ok(summary(&old, true));
                    }
                    Err(e) if e.class == ErrorClass::NotFound => {
                        warn!(upload_id = %old.upload_id, "the planned upload is gone; planning again");
                    }
                    Err(e) => {
                        return Err(ShardError::store(
                            format!(
                                "cannot list the parts of the planned upload to {}",
                                ctx.dst_desc
                            ),
                            e,
                        ))
                    }
                }
            } else if old.completed.is_none() {
                info!(upload_id = %old.upload_id, "replacing an earlier plan: aborting its upload");
                session::abort_quietly(&ctx, &old.upload_id).await;
            }
        }
        Ok(other) => {
            return Err(TransferError::Plan(format!(
                "{} holds the plan of another copy ({} → {}): give another --manifest, or \
                 complete or remove that plan first",
                other.manifest, other.source, other.destination
            ))
            .into())
        }
        Err(ShardError::NoManifest { .. }) | Err(ShardError::BadManifest { .. }) => {}
        Err(e) => return Err(e),
    }

    let put_opts = PutOptions {
        content_type: meta.content_type.clone(),
        user_meta: meta.user_meta.clone(),
    };
    let created: Result<String, StoreError> = control!(
        &ctx,
        "InitiateMultipartUpload",
        ctx.opts.request_timeout,
        ctx.dst
            .store
            .create_multipart(&ctx.dst.key, meta.size, &put_opts)
    );
    let upload_id = created
        .map_err(|e| ShardError::store(format!("cannot start an upload to {}", ctx.dst_desc), e))?;
    let m = Manifest::new(
        &at,
        ctx.src_desc.clone(),
        ctx.dst_desc.clone(),
        fp,
        upload_id,
        part_size,
        parts,
        shards,
    );
    if let Err(e) = write_manifest(&at, &m, &ctx.opts).await {
        // Nothing names the upload: it must not outlive the plan.
        session::abort_quietly(&ctx, &m.upload_id).await;
        return Err(e);
    }
    info!(manifest = %m.manifest, upload_id = %m.upload_id, parts, shards, part_size, "planned a sharded copy");
    Ok(summary(&m, false))
}

fn not_found() -> StoreError {
    StoreError::new(ErrorClass::NotFound, "the object does not exist")
}

/// Numbers of the parts of `range` the destination lists.
fn listed_in(listed: &[ListedPart], range: &ShardRange) -> Vec<u32> {
    listed
        .iter()
        .map(|l| l.number)
        .filter(|&n| range.holds(n))
        .collect()
}

/// The parts of `range` that are recorded with this plan and listed by the destination
/// (same sizes, same CRC-64 or ETag), by index into the plan.
fn confirmed(
    recorded: &[StatePart],
    listed: &[ListedPart],
    specs: &[PartSpec],
    range: &ShardRange,
) -> Vec<StatePart> {
    let mine: Vec<StatePart> = recorded
        .iter()
        .filter(|p| range.holds(p.number))
        .cloned()
        .collect();
    session::confirmed_parts(&mine, listed, specs)
}

/// Runs shard `index` of the plan `m` read from `at` (see the module docs): relays its parts
/// from `src` to `dst` (the manifest's source and destination) and records them.
#[allow(clippy::too_many_arguments)]
pub async fn work(
    at: &Location,
    m: &Manifest,
    src: Location,
    dst: Location,
    index: u32,
    opts: CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<ShardSummary, ShardError> {
    engine::validate(&opts)?;
    bind(at, m, &src, &dst)?;
    let started = Instant::now();
    let range = m.shard(index).ok_or_else(|| ShardError::NoSuchShard {
        at: at.describe(),
        index,
        shards: m.shards.len() as u32,
    })?;
    let specs: Arc<Vec<PartSpec>> = Arc::new(planner::parts(m.size(), m.part_size));
    let mine: Vec<usize> = range.numbers().map(|n| n as usize - 1).collect();
    let shard_bytes: u64 = mine.iter().map(|&i| specs[i].len).sum();
    let crc_of = |parts: &[StatePart]| {
        super::proof::fold(parts.iter().map(|p| (&p.checksums, p.size)))
            .crc64_xz()
            .unwrap_or(0)
    };
    let mut summary = ShardSummary {
        manifest: m.manifest.clone(),
        shard: index,
        source: m.source.clone(),
        destination: m.destination.clone(),
        parts: range.parts,
        bytes: shard_bytes,
        resumed_bytes: 0,
        seconds: 0.0,
        throughput_bytes_per_sec: 0.0,
        retries: 0,
        hedged_parts: 0,
        crc64: 0,
        verified_by: Vec::new(),
        already_complete: false,
    };
    if m.completed.is_some() {
        info!(
            shard = index,
            "the plan was already completed: nothing to do"
        );
        summary.already_complete = true;
        summary.resumed_bytes = shard_bytes;
        return Ok(summary);
    }
    progress
        .lowest_concurrency_limit
        .store(opts.concurrency as u64, Relaxed);
    progress.set_limit(opts.concurrency);
    progress.total_bytes.store(shard_bytes, Relaxed);
    progress.parts_total.store(range.parts as u64, Relaxed);
    let store_retries = |c: &Ctx| c.src.store.retries() + c.dst.store.retries();
    let ctx = engine::context(src, dst, opts, progress.clone());
    let retries_before = store_retries(&ctx);
    let _gauges = AbortOnDropHandle::new(tokio::spawn(engine::publish_gauges(
        progress.clone(),
        ctx.pipe.budget.clone(),
    )));

    let now = head_source(&ctx, &cancel).await?;
    match &now {
        Some(h) if same_source(&m.source_meta, h) => {}
        _ => return Err(source_changed(m, now.as_ref(), false)),
    }
    let listed = match list_parts(&ctx, &m.upload_id).await {
        Ok(l) => l,
        Err(e) if e.class == ErrorClass::NotFound => {
            if finished_elsewhere(&ctx, at, m).await.is_some() {
                summary.already_complete = true;
                summary.resumed_bytes = shard_bytes;
                return Ok(summary);
            }
            return Err(ShardError::BadManifest {
                at: at.describe(),
                why: format!(
                    "its upload {} is not an open upload of {} (aborted, completed, or \
                     another object's)",
                    m.upload_id, ctx.dst_desc
                ),
            });
        }
        Err(e) => {
            return Err(ShardError::store(
                format!("cannot list the parts of the upload to {}", ctx.dst_desc),
                e,
            ))
        }
    };
    let recs = records(at, m, &ctx.opts);
    let read_err = |e: StoreError| {
        ShardError::store(format!("cannot read the records {}", recs.describe()), e)
    };

    // Done before? One record of the whole shard, confirmed by the listing: return at once.
    let mut kept = Vec::new();
    if let Some(parts) = recs.shard(index).await.map_err(read_err)? {
        kept = confirmed(&parts, &listed, &specs, &range);
    }
    if kept.len() < range.parts as usize {
        // Only a listed part can be confirmed: a first run reads no record at all.
        let parts = recs
            .parts(listed_in(&listed, &range), RECORD_READS)
            .await
            .map_err(read_err)?;
        kept = confirmed(&parts, &listed, &specs, &range);
    }
    let mut done: Vec<Option<StatePart>> = vec![None; specs.len()];
    let mut resumed = 0;
    for p in &kept {
        let i = p.number as usize - 1;
        resumed += specs[i].len;
        done[i] = Some(p.clone());
    }
    summary.resumed_bytes = resumed;
    progress.resumed_bytes.store(resumed, Relaxed);
    progress.acked_bytes.store(resumed, Relaxed);
    progress.parts_done.store(kept.len() as u64, Relaxed);
    info!(
        shard = index,
        parts = range.parts,
        recorded = kept.len(),
        "shard planned"
    );

    if kept.len() < range.parts as usize {
        let sink_recs = recs.clone();
        let sink: RecordSink = Arc::new(move |parts: Vec<StatePart>| {
            let r = sink_recs.clone();
            async move {
                let puts = parts.iter().map(|p| r.put_part(p));
                let results = futures::future::join_all(puts).await;
                for (p, res) in parts.iter().zip(results) {
                    res.map_err(|e| {
                        TransferError::store(
                            format!("cannot record part {} in {}", p.number, r.describe()),
                            e,
                        )
                    })?;
                }
                Ok(())
            }
            .boxed()
        });
        let state = CopyState {
            version: STATE_VERSION,
            source: m.source.clone(),
            destination: m.destination.clone(),
            upload_id: m.upload_id.clone(),
            part_size: m.part_size,
            // A shard's parts come from the manifest's flat plan.
            tail: None,
            source_meta: m.source_meta.clone(),
            parts: kept.clone(),
            completing: None,
        };
        let mut keeper = StateKeeper::with_sink(state, sink);
        let upload_id: Arc<str> = Arc::from(m.upload_id.as_str());
        let etag: Arc<str> = Arc::from(m.source_meta.etag.as_str());
        let mut aimd = Aimd::new(ctx.opts.concurrency);
        let worker = |e: TransferError| match e {
            TransferError::SourceChanged { new_etag, .. } => ShardError::SourceChanged {
                what: m.source.clone(),
                old_etag: m.source_meta.etag.clone(),
                new_etag,
                old_size: m.source_meta.size,
                new_size: "(unknown)".into(),
                aborted: false,
            },
            e => ShardError::Worker { index, source: e },
        };
        loop {
            let todo: Vec<usize> = mine
                .iter()
                .copied()
                .filter(|&i| done[i].is_none())
                .collect();
            if todo.is_empty() {
                break;
            }
            let mut relist = Vec::new();
            let ran = run_parts(
                Run {
                    ctx: &ctx,
                    specs: &specs,
                    done: &mut done,
                    keeper: &mut keeper,
                    aimd: &mut aimd,
                    cancel: &cancel,
                    upload_id: &upload_id,
                    relist: &mut relist,
                },
                &mut Ranges::new(todo, etag.clone()),
            )
            .await;
            let relisted =
                engine::relist_hedged(&ctx, &specs, &mut done, &mut keeper, &upload_id, relist)
                    .await;
            let flushed = keeper.flush().await;
            ran.map_err(worker)?;
            relisted.map_err(worker)?;
            flushed.map_err(worker)?;
        }
    }
    let parts: Vec<StatePart> = mine
        .iter()
        .map(|&i| done[i].clone().expect("every part of the shard is done"))
        .collect();
    summary.crc64 = crc_of(&parts);
    recs.put_shard(index, parts).await.map_err(|e| {
        ShardError::store(
            format!("cannot record shard {index} in {}", recs.describe()),
            e,
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    summary.seconds = seconds;
    summary.throughput_bytes_per_sec = if seconds > 0.0 {
        (shard_bytes - resumed) as f64 / seconds
    } else {
        0.0
    };
    summary.retries =
        progress.retries.load(Relaxed) + store_retries(&ctx).saturating_sub(retries_before);
    summary.hedged_parts = progress.hedged_parts.load(Relaxed);
    summary.verified_by = ctx.pipe.proofs.list();
    engine::publish_now(&progress, &ctx.pipe.budget);
    info!(
        shard = index,
        bytes = shard_bytes,
        seconds,
        "shard relayed and recorded"
    );
    Ok(summary)
}

/// Plans `shards` shards, runs them all at once in this process and completes: a daemon's
/// copy job with `shards` (several workers' connection sets on one node, under the budgets
/// in `opts`). `progress` shows the sum of the workers'. Each step is the one above, so a
/// rerun after a failure or restart keeps the plan and the recorded parts.
pub async fn run_local(
    src: Location,
    dst: Location,
    at: Location,
    shards: u32,
    opts: CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<CompleteSummary, ShardError> {
    plan(
        src.clone(),
        dst.clone(),
        at.clone(),
        shards,
        opts.clone(),
        cancel.clone(),
    )
    .await?;
    let m = read_manifest(&at, &opts).await?;
    progress.total_bytes.store(m.size(), Relaxed);
    progress.parts_total.store(m.parts as u64, Relaxed);
    progress.set_limit(opts.concurrency * m.shards.len());
    let each: Vec<Arc<Progress>> = m.shards.iter().map(|_| Progress::new()).collect();
    let tally = {
        let (each, progress) = (each.clone(), progress.clone());
        move || add_up(&progress, &each)
    };
    let ticker = {
        let tally = tally.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tick.tick().await;
                tally();
            }
        }))
    };
    let workers = m.shards.iter().map(|s| {
        work(
            &at,
            &m,
            src.clone(),
            dst.clone(),
            s.index,
            opts.clone(),
            each[s.index as usize].clone(),
            cancel.clone(),
        )
    });
    let results = futures::future::join_all(workers).await;
    drop(ticker);
    tally();
    for r in results {
        r?;
    }
    complete(&at, &m, src, dst, opts, cancel).await
}

/// Abandons the plan at `at` (a cancelled daemon job): aborts its upload and deletes its
/// records and manifest, unless it was completed. Returns the aborted upload's id. The
/// caller makes sure no worker of the plan still runs.
pub async fn abandon(
    at: &Location,
    dst: &Location,
    opts: &CopyOptions,
) -> Result<Option<String>, ShardError> {
    let m = match read_manifest(at, opts).await {
        Ok(m) => m,
        Err(ShardError::NoManifest { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if m.completed.is_some() || m.destination != dst.describe() {
        return Ok(None);
    }
    match super::within(
        opts.request_timeout,
        dst.store.abort(&dst.key, &m.upload_id),
    )
    .await
    {
        Some(Ok(())) => {}
        Some(Err(e)) if e.class == ErrorClass::NotFound => {}
        Some(Err(e)) => {
            return Err(ShardError::store(
                format!(
                    "cannot abort the upload {} to {}",
                    m.upload_id, m.destination
                ),
                e,
            ))
        }
        None => {
            return Err(ShardError::store(
                format!(
                    "cannot abort the upload {} to {}",
                    m.upload_id, m.destination
                ),
                StoreError::transient("no response"),
            ))
        }
    }
    records(at, &m, opts)
        .delete_all(m.parts, m.shards.len() as u32, RECORD_READS)
        .await;
    let _ = super::within(opts.request_timeout, at.store.delete(&at.key)).await;
    Ok(Some(m.upload_id))
}

/// The workers' figures summed into one.
fn add_up(into: &Progress, from: &[Arc<Progress>]) {
    let sum = |f: fn(&Progress) -> &std::sync::atomic::AtomicU64| {
        from.iter().map(|p| f(p).load(Relaxed)).sum::<u64>()
    };
    into.acked_bytes.store(sum(|p| &p.acked_bytes), Relaxed);
    into.resumed_bytes.store(sum(|p| &p.resumed_bytes), Relaxed);
    into.downloaded_bytes
        .store(sum(|p| &p.downloaded_bytes), Relaxed);
    into.sent_bytes.store(sum(|p| &p.sent_bytes), Relaxed);
    into.parts_done.store(sum(|p| &p.parts_done), Relaxed);
    into.inflight_parts
        .store(sum(|p| &p.inflight_parts), Relaxed);
    into.awaiting_ack_parts
        .store(sum(|p| &p.awaiting_ack_parts), Relaxed);
    into.sending_parts.store(sum(|p| &p.sending_parts), Relaxed);
    into.hedged_parts.store(sum(|p| &p.hedged_parts), Relaxed);
    into.retries.store(sum(|p| &p.retries), Relaxed);
    into.crc_mismatches
        .store(sum(|p| &p.crc_mismatches), Relaxed);
}

/// Whether every shard of `m` has recorded itself done (what `--complete-when-done` waits
/// for before it completes).
pub async fn all_shards_done(
    at: &Location,
    m: &Manifest,
    opts: &CopyOptions,
) -> Result<bool, ShardError> {
    let recs = records(at, m, opts);
    let reads: Vec<_> = m
        .shards
        .iter()
        .map(|s| {
            let recs = &recs;
            async move {
                recs.shard(s.index)
                    .await
                    .map(|r| r.is_some() || s.parts == 0)
            }
        })
        .collect();
    let mut stream = futures::stream::iter(reads).buffer_unordered(RECORD_READS);
    while let Some(r) = stream.next().await {
        if !r.map_err(|e| {
            ShardError::store(format!("cannot read the records {}", recs.describe()), e)
        })? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Completes the plan `m` read from `at` (see the module docs).
pub async fn complete(
    at: &Location,
    m: &Manifest,
    src: Location,
    dst: Location,
    opts: CopyOptions,
    cancel: CancellationToken,
) -> Result<CompleteSummary, ShardError> {
    engine::validate(&opts)?;
    bind(at, m, &src, &dst)?;
    let started = Instant::now();
    let ctx = engine::context(src, dst, opts, Progress::new());
    let mut out = CompleteSummary {
        manifest: m.manifest.clone(),
        source: m.source.clone(),
        destination: m.destination.clone(),
        bytes: m.size(),
        seconds: 0.0,
        crc64: 0,
        checksums: Checksums::new(),
        parts: m.parts,
        part_size: m.part_size,
        shards: m.shards.len() as u32,
        verified_by: Vec::new(),
        end_to_end: false,
        already_complete: false,
        records_left: 0,
    };
    if let Some(c) = &m.completed {
        return already_completed(&ctx, at, c, out).await;
    }

    let now = head_source(&ctx, &cancel).await?;
    match &now {
        Some(h) if same_source(&m.source_meta, h) => {}
        _ => {
            // The parts can never make a valid object: do not leave them billed.
            session::abort_quietly(&ctx, &m.upload_id).await;
            return Err(source_changed(m, now.as_ref(), true));
        }
    }
    let listed = match list_parts(&ctx, &m.upload_id).await {
        Ok(l) => l,
        Err(e) if e.class == ErrorClass::NotFound => {
            if let Some(c) = finished_elsewhere(&ctx, at, m).await {
                return already_completed(&ctx, at, &c, out).await;
            }
            return Err(ShardError::UploadGone {
                at: at.describe(),
                upload_id: m.upload_id.clone(),
            });
        }
        Err(e) => {
            return Err(ShardError::store(
                format!("cannot list the parts of the upload to {}", ctx.dst_desc),
                e,
            ))
        }
    };
    let specs = planner::parts(m.size(), m.part_size);
    let recs = records(at, m, &ctx.opts);
    let read_err = |e: StoreError| {
        ShardError::store(format!("cannot read the records {}", recs.describe()), e)
    };

    // Every shard's record, else its parts' records; a few shards at a time. (Collected
    // first: iterator closures over references held across an await cost the future its
    // `Send` proof, which the daemon needs to spawn it.)
    let reads: Vec<_> = m
        .shards
        .iter()
        .filter(|s| s.parts > 0)
        .map(|s| {
            let (recs, listed, specs) = (&recs, &listed, &specs);
            async move {
                if let Some(parts) = recs.shard(s.index).await? {
                    let c = confirmed(&parts, listed, specs, s);
                    if c.len() == s.parts as usize {
                        return Ok(c);
                    }
                }
                let parts = recs.parts(listed_in(listed, s), RECORD_READS).await?;
                Ok::<_, StoreError>(confirmed(&parts, listed, specs, s))
            }
        })
        .collect();
    let mut reads = futures::stream::iter(reads).buffer_unordered(4);
    let mut found: Vec<StatePart> = Vec::with_capacity(specs.len());
    while let Some(r) = reads.next().await {
        found.extend(r.map_err(read_err)?);
    }
    drop(reads);
    found.sort_by_key(|p| p.number);
    found.dedup_by_key(|p| p.number);
    if found.len() != specs.len() {
        if let Some(c) = finished_elsewhere(&ctx, at, m).await {
            return already_completed(&ctx, at, &c, out).await;
        }
        let have: BTreeSet<u32> = found.iter().map(|p| p.number).collect();
        let shards: BTreeSet<u32> = specs
            .iter()
            .filter(|s| !have.contains(&s.number))
            .filter_map(|s| m.shard_of(s.number))
            .collect();
        return Err(ShardError::Incomplete {
            at: at.describe(),
            missing: specs.len() - found.len(),
            parts: m.parts,
            shards: shards.into_iter().collect(),
        });
    }

    // The parts as the destination lists them prove what it holds, part by part.
    let mut part_proofs: Option<BTreeSet<Algorithm>> = None;
    let by_number: std::collections::HashMap<u32, &ListedPart> =
        listed.iter().map(|l| (l.number, l)).collect();
    for p in &found {
        let matched: BTreeSet<Algorithm> = by_number
            .get(&p.number)
            .and_then(|l| super::proof::compare(&l.checksums, &p.checksums).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        part_proofs = Some(match part_proofs {
            None => matched,
            Some(acc) => acc.intersection(&matched).copied().collect(),
        });
    }
    ctx.pipe
        .proofs
        .parts(part_proofs.unwrap_or_default().into_iter().collect());

    let combined = super::proof::fold(found.iter().map(|p| (&p.checksums, p.size)));
    if let Some(want) = super::proof::source_claim(&m.source_meta.checksums, &combined) {
        let got = combined.get(want.algorithm()).expect("claimed");
        if want != got {
            ctx.note_crc_mismatch();
            return Err(TransferError::CrcMismatch {
                what: format!(
                    "the recorded parts of {} against {} (nothing was completed)",
                    ctx.dst_desc, ctx.src_desc
                ),
                expected: want,
                actual: got,
            }
            .into());
        }
        ctx.pipe.proofs.source(want.algorithm());
    }
    let list: Vec<(u32, String)> = found.iter().map(|p| (p.number, p.etag.clone())).collect();
    let uploaded = session::complete(&ctx, &m.upload_id, &list, m.size(), &combined).await?;
    session::check_completed(&ctx, &uploaded, &combined).await?;

    let mut done = m.clone();
    done.completed = Some(Completed {
        etag: uploaded.etag.clone(),
        checksums: combined.clone(),
    });
    done.seal();
    write_manifest(at, &done, &ctx.opts).await?;
    out.records_left = recs
        .delete_all(m.parts, m.shards.len() as u32, RECORD_READS)
        .await;
    out.crc64 = combined.crc64_xz().expect("CRC-64/XZ is always computed");
    out.checksums = combined;
    out.verified_by = ctx.pipe.proofs.list();
    out.end_to_end = ctx.pipe.proofs.end_to_end();
    out.seconds = started.elapsed().as_secs_f64();
    info!(manifest = %m.manifest, crc64 = out.crc64, "sharded copy complete and verified");
    Ok(out)
}

/// Whether another caller completed the plan meanwhile (two last workers at once, or a
/// worker of a plan completed since it read the manifest): the manifest now says so, or
/// (that caller between its Complete and its manifest update) the destination has the
/// object's size and one of the source's checksums.
async fn finished_elsewhere(ctx: &Ctx, at: &Location, m: &Manifest) -> Option<Completed> {
    if let Ok(again) = read_manifest(at, &ctx.opts).await {
        if again.upload_id == m.upload_id && again.completed.is_some() {
            return again.completed;
        }
    }
    let head: Result<ObjectMeta, StoreError> = control!(
        ctx,
        "HeadObject",
        ctx.opts.request_timeout,
        ctx.dst.store.head(&ctx.dst.key)
    );
    let head = head.ok()?;
    let same = matches!(
        super::proof::compare(&head.checksums, &m.source_meta.checksums),
        Ok(v) if !v.is_empty()
    );
    (head.size == m.size() && same).then(|| Completed {
        etag: head.etag,
        checksums: m.source_meta.checksums.clone(),
    })
}

/// The manifest says an earlier Complete finished: the destination must still hold that
/// object (size and checksum), else the manifest is stale.
async fn already_completed(
    ctx: &Arc<Ctx>,
    at: &Location,
    c: &Completed,
    mut out: CompleteSummary,
) -> Result<CompleteSummary, ShardError> {
    let head: Result<ObjectMeta, StoreError> = control!(
        ctx,
        "HeadObject",
        ctx.opts.request_timeout,
        ctx.dst.store.head(&ctx.dst.key)
    );
    let head = head.map_err(|e| ShardError::store(format!("cannot read {}", ctx.dst_desc), e))?;
    let holds = head.size == out.bytes
        && matches!(super::proof::compare(&head.checksums, &c.checksums), Ok(m) if !m.is_empty() || head.etag == c.etag);
    if !holds {
        return Err(ShardError::BadManifest {
            at: at.describe(),
            why: format!(
                "it says the copy was completed, but {} no longer holds that object",
                ctx.dst_desc
            ),
        });
    }
    for a in super::proof::compare(&head.checksums, &c.checksums).unwrap_or_default() {
        ctx.pipe.proofs.destination(a);
    }
    out.already_complete = true;
    out.crc64 = c.checksums.crc64_xz().unwrap_or(0);
    out.checksums = c.checksums.clone();
    out.verified_by = ctx.pipe.proofs.list();
    out.end_to_end = ctx.pipe.proofs.end_to_end();
    Ok(out)
}
