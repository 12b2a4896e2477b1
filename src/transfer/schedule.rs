//! The part scheduler: the one loop that sends a transfer's parts, whatever their source
//! (ranged GETs of a plain copy, parts cut from an unpack's decoded stream; see
//! [`super::source`]).
//!
//! Guarantees callers can rely on:
//! * Concurrency: parts in flight plus acknowledged parts not yet durably recorded never
//!   exceed the adaptive (AIMD) limit: throttling halves it, successes win it back
//!   ([`Aimd`]); so a kill -9 never loses more than the limit's worth of acknowledged parts.
//!   Memory is bounded by the budget the sources charge their bytes to.
//! * Retry: the one place a part is retried. A failed attempt goes to a retry queue with its
//!   own backoff, holding no slot while it waits, and is re-run with a fresh body from its
//!   source (a new GET, or the same bytes from memory), up to `max_attempts`. The transport
//!   retries requests, not parts; nobody else retries.
//! * Proof: a part is done only when the destination acknowledged it with our CRC-64 (or
//!   echoed none); it is then recorded (state file written in the background) before its
//!   slot is freed.
//! * Cancellation: in-flight parts get `grace` to finish (their acknowledgements are
//!   recorded), then are dropped; the result is [`TransferError::Interrupted`].
//! * Failure: the first error that no retry can mend stops every part and is returned, one
//!   line naming the part and the side that failed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};

use crate::metrics as m;
use crate::store::retry::{should_retry, Backoff};
use crate::store::{ErrorClass, PartSpec};

use super::engine::{source_changed, Ctx};
use super::pipe::{PipeError, Side};
use super::progress::InflightGuard;
use super::retry::Aimd;
use super::session::StateKeeper;
use super::source::{attempt, Next, PartBody, PartSource, Sent};
use super::state::StatePart;
use super::TransferError;

/// What one run of the scheduler works on; the caller keeps it across runs (a plain copy
/// runs again for the parts its proof found damaged, with the same AIMD state).
pub(super) struct Run<'a> {
    pub(super) ctx: &'a Arc<Ctx>,
    /// The plan: part `i` is `specs[i]`.
    pub(super) specs: &'a [PartSpec],
    /// Acknowledged parts, by plan index; filled in as parts are acknowledged or resumed.
    pub(super) done: &'a mut [Option<StatePart>],
    pub(super) keeper: &'a mut StateKeeper,
    pub(super) aimd: &'a mut Aimd,
    pub(super) cancel: &'a CancellationToken,
    pub(super) upload_id: &'a Arc<str>,
}

/// A part between attempts.
struct Job {
    idx: usize,
    attempt: u32,
    /// Not before this time (retry backoff). Waiting jobs hold no concurrency slot, so one
    /// part backing off does not hold up the others.
    ready_at: Option<Instant>,
    backoff: Backoff,
    body: PartBody,
}

type Attempts = JoinSet<(Job, Result<Sent, PipeError>)>;

enum Event {
    Cancel,
    GraceOver,
    Joined(Result<(Job, Result<Sent, PipeError>), tokio::task::JoinError>),
    Wrote(Result<(), TransferError>),
    Input,
    Idle,
}

/// Sends every part `source` hands out, with at most the adaptive limit in flight, each
/// retried on its own (see the module docs).
pub(super) async fn run_parts<S: PartSource>(
    run: Run<'_>,
    source: &mut S,
) -> Result<(), TransferError> {
    let Run {
        ctx,
        specs,
        done,
        keeper,
        aimd,
        cancel,
        upload_id,
    } = run;
    let mut retries: VecDeque<Job> = VecDeque::new();
    let mut set: Attempts = JoinSet::new();
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
            loop {
                let slot = set.len() + keeper.unsaved() < aimd.limit();
                // Retried parts first; the scan stops at the first one ready.
                if slot {
                    if let Some(i) = retries
                        .iter()
                        .position(|j| j.ready_at.is_none_or(|t| t <= now))
                    {
                        let job = retries.remove(i).expect("index from position");
                        spawn(&mut set, ctx, specs[job.idx], job, upload_id);
                        continue;
                    }
                }
                // A resumed part needs no slot, so the source is asked even without one.
                match source.next(slot) {
                    None => break,
                    Some(Next::Send {
                        idx,
                        body,
                        replaces,
                    }) => {
                        if replaces {
                            keeper.forget(&[specs[idx].number]);
                        }
                        let job = Job {
                            idx,
                            attempt: 1,
                            ready_at: None,
                            backoff: ctx.backoff(),
                            body,
                        };
                        spawn(&mut set, ctx, specs[idx], job, upload_id);
                    }
                    Some(Next::Resumed(idx, part)) => {
                        let len = specs[idx].len;
                        done[idx] = Some(part);
                        let p = &ctx.progress;
                        p.acked_bytes.fetch_add(len, Relaxed);
                        p.resumed_bytes.fetch_add(len, Relaxed);
                        p.parts_done.fetch_add(1, Relaxed);
                        metrics::counter!(m::PARTS_TOTAL, "result" => "skipped").increment(1);
                    }
                    Some(Next::Broken) => {
                        failure = Some(source.cause().await);
                        set.abort_all();
                        break;
                    }
                }
            }
            if failure.is_none() && set.len() + keeper.unsaved() < aimd.limit() {
                next_ready = retries.iter().filter_map(|j| j.ready_at).min();
            }
        }
        let finished = retries.is_empty() && source.exhausted();
        if set.is_empty() && (finished || stopping || failure.is_some()) {
            break;
        }
        let want_input = !stopping && failure.is_none() && source.wants_input();
        let ev = tokio::select! {
            biased;
            _ = cancel.cancelled(), if !stopping => Event::Cancel,
            _ = tokio::time::sleep_until(next_ready.unwrap_or_else(Instant::now)), if next_ready.is_some() => Event::Idle,
            _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => Event::GraceOver,
            // Before joins: a finished write must start the next one promptly, or acks pile
            // up unsaved while parts keep completing.
            r = keeper.wait_write(), if keeper.is_writing() => Event::Wrote(r),
            Some(r) = set.join_next() => Event::Joined(r),
            () = source.fill(), if want_input => Event::Input,
            else => Event::Idle,
        };
        match ev {
            Event::Idle | Event::Input => {}
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
            Event::Joined(Ok((job, Ok(sent)))) => {
                let spec = specs[job.idx];
                // The job's body (bytes held in memory) goes back to the budget here.
                drop(job.body);
                let part =
                    StatePart::with_checksums(spec.number, spec.len, sent.checksums, sent.etag);
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
                        let etag = match &job.body {
                            PartBody::Range { etag } => etag.clone(),
                            PartBody::Memory { .. } => Arc::from(""),
                        };
                        failure = Some(source_changed(ctx, &etag).await);
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
                    retries.push_front(job);
                } else {
                    metrics::counter!(m::PARTS_TOTAL, "result" => "failed").increment(1);
                    let side = match e.side {
                        Side::Source => format!("reading {}", ctx.src_desc),
                        Side::Destination => format!("writing {}", ctx.dst_desc),
                    };
                    failure.get_or_insert(TransferError::store(
                        format!(
                            "part {} ({} {}-{}): {side} failed after {} attempt(s)",
                            spec.number,
                            job.body.what(),
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

/// Starts one attempt of `job`'s part; the job (with its body) comes back with the result.
fn spawn(set: &mut Attempts, ctx: &Arc<Ctx>, spec: PartSpec, job: Job, upload_id: &Arc<str>) {
    let ctx = ctx.clone();
    let upload_id = upload_id.clone();
    let span = tracing::debug_span!("part", number = spec.number, attempt = job.attempt);
    set.spawn(
        async move {
            let _inflight = InflightGuard::new(ctx.progress.clone());
            let r = attempt(&ctx, spec, &job.body, &upload_id).await;
            (job, r)
        }
        .instrument(span),
    );
}
