//! The part scheduler of a plain copy: at most the adaptive (AIMD) limit of parts in flight,
//! each one ranged GET piped into one UploadPart; a failed part goes back to a retry queue
//! with its own backoff (it holds no slot while it waits); an acknowledged part keeps its slot
//! until the state write recording it landed. This is the one place a plain copy's part is
//! retried (the transport retries requests, not parts).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use crate::checksum::Checksums;
use crate::metrics as m;
use crate::store::retry::{should_retry, Backoff};
use crate::store::{ErrorClass, PartSpec};

use super::engine::{if_match, source_changed, Ctx};
use super::pipe::{pipe, PipeError, Side};
use super::progress::InflightGuard;
use super::retry::Aimd;
use super::session::StateKeeper;
use super::state::StatePart;
use super::TransferError;

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
pub(super) async fn run_parts(
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
                let part = StatePart::with_checksums(
                    spec.number,
                    spec.len,
                    piped.checksums,
                    piped.uploaded.etag,
                );
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
