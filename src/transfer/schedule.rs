//! The part scheduler: the one loop that sends a transfer's parts, whatever their source
//! (ranged GETs of a plain copy, parts cut from an unpack's decoded stream; see
//! [`super::source`]).
//!
//! Guarantees callers can rely on:
//! * Concurrency: parts moving bytes plus acknowledged parts not yet durably recorded never
//!   exceed the adaptive (AIMD) limit: throttling halves it, successes win it back
//!   ([`Aimd`]). A part whose body was all sent waits for its UploadPart response without a
//!   slot (the wire is the scarce thing: at a 200 ms round trip a slot otherwise idles a
//!   round trip per part). Bound: attempts under way plus acknowledged parts not yet saved
//!   stay below `2 × limit` (checked at every start; nothing else adds to it), so at most
//!   that many parts await acknowledgement (`ossrelay_parts_awaiting_ack`; in steady state
//!   about `limit × round trip ÷ part time`), and a kill -9 loses at most that many
//!   acknowledgements not yet recorded: those parts are sent again, recorded parts never
//!   are. Memory is bounded by the budget the sources
//!   charge their bytes to: a ranged part awaiting its response holds no buffer (a failed
//!   ack re-fetches it), a part cut from memory keeps its bytes until acknowledged (the
//!   decoder cannot be rewound), charged to the RAW budget, which then holds the cutter back.
//! * Early start: once a part's remaining bytes will be through within one smoothed
//!   time-to-first-byte (measured on every attempt), it lends its slot to the next part, so
//!   the next GET's first byte arrives about when the previous body ends. At most one lend
//!   per part, at most `limit / 4` lent parts still moving, judged by the rate of the last
//!   quarter second (not the average since the first byte, which counts the socket buffers'
//!   first fill as speed): the extra connections overlap only a body's last round trip.
//! * Hedging: when nothing is left to start and slots are free, a part running well below
//!   the median rate ([`STRAGGLER`]) and projected to finish later than a fresh attempt is
//!   sent a second time (new GET, same part number); the first acknowledged wins, the other
//!   is cancelled. At most `max_hedges` per run, only ranged parts (an unpack's part is one
//!   buffer, its slowness is the destination's). The second attempt takes another
//!   connection from the transport's pool (the straggler's own is busy): near the end that
//!   is one that already finished its parts, i.e. not one of the slow ones still busy, or
//!   a new one. Stores keep the last body uploaded for a part number: when the loser
//!   may reach the store too (its body was all sent), it is not cancelled but answered, the
//!   part number goes to `relist`, and the caller takes the ETag from ListParts before
//!   Complete, so the state and the Complete list name what the store holds. Both bodies
//!   are the same bytes, so the CRC-64 proven is the same either way.
//! * Retry: the one place a part is retried. A failed attempt goes to a retry queue with its
//!   own backoff, holding no slot while it waits, and is re-run with a fresh body from its
//!   source (a new GET, or the same bytes from memory), up to `max_attempts`. The transport
//!   retries requests, not parts; nobody else retries.
//! * Proof: a part is done only when the destination acknowledged it with our CRC-64 (or
//!   echoed none); it is then recorded (state file written in the background) before its
//!   bytes are released and its slot counted free.
//! * Cancellation: in-flight parts get `grace` to finish (their acknowledgements are
//!   recorded), then are dropped; the result is [`TransferError::Interrupted`].
//! * Failure: the first error that no retry can mend stops every part and is returned, one
//!   line naming the part and the side that failed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::metrics as m;
use crate::store::retry::{should_retry, Backoff};
use crate::store::{ErrorClass, PartSpec};

use super::engine::{source_changed, Ctx};
use super::pipe::{PipeError, Side};
use super::progress::InflightGuard;
use super::retry::Aimd;
use super::session::StateKeeper;
use super::source::{attempt, Next, PartBody, PartSource, Sent, Signal, Watch};
use super::state::StatePart;
use super::TransferError;

/// A part is a straggler below this fraction of the median body rate. Not lower: real
/// connection speeds spread by ±50 % and a 0.5× connection doubles a part's time, which is
/// the tail a hedge exists to cut; not higher, or ordinary jitter costs egress.
pub(super) const STRAGGLER: f64 = 0.7;

/// Body rates kept for the median (the most recent ones): bounded memory.
const RATE_SAMPLES: usize = 64;

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
    /// Part numbers of hedged parts whose other attempt may also have reached the store:
    /// their ETag must be taken from ListParts before Complete (see the module docs).
    pub(super) relist: &'a mut Vec<u32>,
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

type Attempts = JoinSet<(u64, Job, Result<Sent, PipeError>)>;

/// An attempt under way, as the scheduler tracks it.
struct Live {
    idx: usize,
    watch: Arc<Watch>,
    /// Its body was all sent: only the response is pending, and it holds no slot.
    sent: bool,
    /// It lent its slot to the next part (it ends within a round trip).
    lent: bool,
    /// Part of a hedged pair (the straggler or its second attempt): never hedged again.
    hedged: bool,
    /// The source's ETag for a ranged part (a hedge re-reads it); `None` for memory.
    range: Option<Arc<str>>,
    abort: AbortHandle,
    /// Bytes sent by the time of the last rate mark, and the rate over the window since the
    /// one before (see [`Flight::mark_rates`]).
    mark: (Instant, u64),
    recent: Option<f64>,
}

impl Live {
    /// The body's current rate: over the last window once there is one, else since its first
    /// byte. The average since the first byte lags a rate that changed (a link that other
    /// connections now share) and counts the socket buffers' first fill as speed: judged by
    /// it, a part looks nearer its end than it is and lends its slot too early.
    fn rate(&self, now: Instant) -> Option<f64> {
        self.recent.or_else(|| self.watch.rate(now))
    }
}

/// The window of [`Live::recent`]: long enough to smooth pacing and chunking, short enough
/// to follow a part's last seconds.
const RATE_WINDOW: Duration = Duration::from_millis(250);

/// The attempts under way and what was measured of them.
struct Flight {
    live: HashMap<u64, Live>,
    next_id: u64,
    tx: mpsc::UnboundedSender<(u64, Signal)>,
    rx: mpsc::UnboundedReceiver<(u64, Signal)>,
    /// Smoothed time from an attempt's start to its first body byte (GET round trip and
    /// first byte): how early the next part must start.
    ttfb: Option<Duration>,
    /// Recent body rates (bytes/s, first to last byte).
    rates: VecDeque<f64>,
    hedges: u32,
}

impl Flight {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            live: HashMap::new(),
            next_id: 0,
            tx,
            rx,
            ttfb: None,
            rates: VecDeque::new(),
            hedges: 0,
        }
    }

    /// Attempts holding a slot: moving bytes (or about to) and not lent.
    fn moving(&self) -> usize {
        self.live.values().filter(|l| !l.sent && !l.lent).count()
    }

    /// Attempts moving body bytes: first byte taken, body not all sent.
    fn sending(&self) -> usize {
        self.live
            .values()
            .filter(|l| !l.sent && l.watch.first_byte().is_some())
            .count()
    }

    fn awaiting(&self) -> usize {
        self.live.values().filter(|l| l.sent).count()
    }

    /// Takes a rate mark of every part still sending whose window is over.
    fn mark_rates(&mut self, now: Instant) {
        for l in self.live.values_mut().filter(|l| !l.sent) {
            let Some(first) = l.watch.first_byte() else {
                continue;
            };
            let since = l.mark.0.max(first);
            let dt = now.saturating_duration_since(since);
            if dt >= RATE_WINDOW {
                let sent = l.watch.sent.load(Relaxed);
                l.recent = Some(sent.saturating_sub(l.mark.1) as f64 / dt.as_secs_f64());
                l.mark = (now, sent);
            }
        }
    }

    fn on_signal(&mut self, id: u64, sig: Signal) {
        let Some(l) = self.live.get_mut(&id) else {
            return;
        };
        match sig {
            Signal::FirstByte => {
                if let Some(first) = l.watch.first_byte() {
                    let sample = first.saturating_duration_since(l.watch.started);
                    // An EWMA (1/4 weight): follows a changing link within a few parts.
                    self.ttfb = Some(match self.ttfb {
                        None => sample,
                        Some(t) => (t * 3 + sample) / 4,
                    });
                }
            }
            Signal::BodySent => {
                l.sent = true;
                if let Some(r) = l.watch.rate(Instant::now()) {
                    if self.rates.len() == RATE_SAMPLES {
                        self.rates.pop_front();
                    }
                    self.rates.push_back(r);
                }
            }
        }
    }

    /// Lends the slot of one moving part whose remaining bytes will be through within one
    /// smoothed time-to-first-byte; whether one was found. At most a quarter of the limit (at
    /// least one) of lent parts still move bytes, so a misjudged round trip (a first byte that
    /// waited for the bandwidth cap, say) cannot chain early starts past `--concurrency`.
    fn lend(&mut self, now: Instant, limit: usize) -> bool {
        let Some(ttfb) = self.ttfb else {
            return false;
        };
        let lent = self.live.values().filter(|l| l.lent && !l.sent).count();
        if lent >= (limit / 4).max(1) {
            return false;
        }
        for l in self.live.values_mut().filter(|l| !l.sent && !l.lent) {
            let Some(rate) = l.rate(now).filter(|r| *r > 0.0) else {
                continue;
            };
            let left = l.watch.len.saturating_sub(l.watch.sent.load(Relaxed)) as f64;
            if left / rate <= ttfb.as_secs_f64() {
                l.lent = true;
                debug!(
                    attempt = l.watch.id,
                    left, "part ends within a round trip: starting the next one"
                );
                return true;
            }
        }
        false
    }

    /// The worst straggler worth hedging, if any (see [`STRAGGLER`]).
    fn straggler(&self, now: Instant) -> Option<u64> {
        let ttfb = self.ttfb?;
        let mut rates: Vec<f64> = self.rates.iter().copied().collect();
        rates.extend(
            self.live
                .values()
                .filter(|l| !l.sent)
                .filter_map(|l| l.rate(now)),
        );
        if rates.len() < 3 {
            return None;
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        if median <= 0.0 {
            return None;
        }
        let mut worst: Option<(u64, f64)> = None;
        for l in self.live.values() {
            if l.sent || l.hedged || l.range.is_none() {
                continue;
            }
            let w = &l.watch;
            // Give every attempt a few round trips before judging it.
            let age = now.saturating_duration_since(w.started);
            if age < (ttfb * 4).max(Duration::from_millis(200)) {
                continue;
            }
            let rate = l.rate(now).unwrap_or(0.0);
            if rate >= STRAGGLER * median {
                continue;
            }
            let left = w.len.saturating_sub(w.sent.load(Relaxed)) as f64;
            let fresh = ttfb.as_secs_f64() + w.len as f64 / median;
            let finish = if rate > 0.0 {
                left / rate
            } else {
                f64::INFINITY
            };
            // Only when a fresh attempt at the median rate would clearly finish first.
            if finish > 1.25 * fresh && worst.is_none_or(|(_, f)| finish > f) {
                worst = Some((w.id, finish));
            }
        }
        worst.map(|(id, _)| id)
    }

    /// The other attempt of part `idx`, if any, once this one won: cancelled while it still
    /// moves bytes (the store cannot have its body, so it cannot keep it); left to finish
    /// when its body was all sent (cancelling saves no bytes then, and only an answered
    /// request leaves the store's choice of body settled before ListParts). Whether the
    /// store may keep the other attempt's body.
    fn settle_sibling(&mut self, idx: usize) -> bool {
        let Some(id) = self
            .live
            .iter()
            .find(|(_, l)| l.idx == idx)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if self.live[&id].sent {
            return true;
        }
        let l = self.live.remove(&id).expect("found above");
        l.abort.abort();
        false
    }
}

enum Event {
    Cancel,
    GraceOver,
    Joined(Result<(u64, Job, Result<Sent, PipeError>), tokio::task::JoinError>),
    Wrote(Result<(), TransferError>),
    Signal(u64, Signal),
    Input,
    Idle,
}

/// Sends every part `source` hands out, with at most the adaptive limit moving bytes, each
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
        relist,
    } = run;
    let mut retries: VecDeque<Job> = VecDeque::new();
    let mut set: Attempts = JoinSet::new();
    let mut fl = Flight::new();
    let mut stopping = false;
    let mut grace: Option<Instant> = None;
    let mut failure: Option<TransferError> = None;
    loop {
        if !stopping && cancel.is_cancelled() {
            stopping = true;
            grace = Some(Instant::now() + ctx.opts.grace);
        }
        let mut next_ready: Option<Instant> = None;
        let mut watching = false;
        if !stopping && failure.is_none() {
            let now = Instant::now();
            fl.mark_rates(now);
            loop {
                let limit = aimd.limit();
                let unsaved = keeper.unsaved();
                // Everything not yet durably recorded stays under twice the limit: at most
                // `limit` of it moving bytes, the rest lent (about to finish), awaiting its
                // acknowledgement or acknowledged and being saved.
                let room = fl.live.len() + unsaved < 2 * limit;
                let mut slot = room && fl.moving() + unsaved < limit;
                let pending = !retries.is_empty() || !source.exhausted();
                if room && !slot && pending && fl.lend(now, limit) {
                    slot = fl.moving() + unsaved < limit;
                }
                // Retried parts first; the scan stops at the first one ready.
                if slot {
                    if let Some(i) = retries
                        .iter()
                        .position(|j| j.ready_at.is_none_or(|t| t <= now))
                    {
                        let job = retries.remove(i).expect("index from position");
                        spawn(
                            &mut set,
                            &mut fl,
                            ctx,
                            specs[job.idx],
                            job,
                            upload_id,
                            false,
                        );
                        continue;
                    }
                }
                // A resumed part needs no slot, so the source is asked even without one.
                match source.next(slot) {
                    None => {}
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
                        spawn(&mut set, &mut fl, ctx, specs[idx], job, upload_id, false);
                        continue;
                    }
                    Some(Next::Resumed(idx, part)) => {
                        let len = specs[idx].len;
                        done[idx] = Some(part);
                        let p = &ctx.progress;
                        p.acked_bytes.fetch_add(len, Relaxed);
                        p.resumed_bytes.fetch_add(len, Relaxed);
                        p.parts_done.fetch_add(1, Relaxed);
                        metrics::counter!(m::PARTS_TOTAL, "result" => "skipped").increment(1);
                        continue;
                    }
                    Some(Next::Broken) => {
                        failure = Some(source.cause().await);
                        set.abort_all();
                        break;
                    }
                }
                // Nothing left to start: hedge a straggler on a free slot.
                if slot
                    && retries.is_empty()
                    && source.exhausted()
                    && fl.hedges < ctx.opts.max_hedges
                {
                    if let Some(id) = fl.straggler(now) {
                        let l = fl.live.get_mut(&id).expect("a live attempt");
                        l.hedged = true;
                        let (idx, etag) = (l.idx, l.range.clone().expect("ranged"));
                        let rate = l.rate(now).unwrap_or(0.0);
                        fl.hedges += 1;
                        ctx.progress.hedged_parts.fetch_add(1, Relaxed);
                        metrics::counter!(m::HEDGED_PARTS_TOTAL).increment(1);
                        info!(
                            part = specs[idx].number,
                            rate_bytes_per_sec = rate as u64,
                            "straggling part: sending it again on another connection"
                        );
                        let job = Job {
                            idx,
                            attempt: 1,
                            ready_at: None,
                            backoff: ctx.backoff(),
                            body: PartBody::range(etag),
                        };
                        spawn(&mut set, &mut fl, ctx, specs[idx], job, upload_id, true);
                        continue;
                    }
                }
                break;
            }
            let limit = aimd.limit();
            if failure.is_none()
                && fl.moving() + keeper.unsaved() < limit
                && fl.live.len() + keeper.unsaved() < 2 * limit
            {
                next_ready = retries.iter().filter_map(|j| j.ready_at).min();
            }
            // Early starts and hedges depend on how far bodies are: look again soon while
            // either could happen.
            let pending = !retries.is_empty() || !source.exhausted();
            let could_hedge = !pending && fl.hedges < ctx.opts.max_hedges;
            watching =
                failure.is_none() && fl.live.values().any(|l| !l.sent) && (pending || could_hedge);
        }
        ctx.progress
            .awaiting_ack_parts
            .store(fl.awaiting() as u64, Relaxed);
        ctx.progress
            .sending_parts
            .store(fl.sending() as u64, Relaxed);
        let finished = retries.is_empty() && source.exhausted();
        if set.is_empty() && (finished || stopping || failure.is_some()) {
            break;
        }
        if watching {
            let period = fl
                .ttfb
                .map_or(Duration::from_millis(100), |t| t / 4)
                .clamp(Duration::from_millis(10), Duration::from_millis(250));
            let look = Instant::now() + period;
            next_ready = Some(next_ready.map_or(look, |t| t.min(look)));
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
            Some((id, sig)) = fl.rx.recv() => Event::Signal(id, sig),
            Some(r) = set.join_next() => Event::Joined(r),
            () = source.fill(), if want_input => Event::Input,
            else => Event::Idle,
        };
        match ev {
            Event::Idle | Event::Input => {}
            Event::Signal(id, sig) => fl.on_signal(id, sig),
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
            Event::Joined(Ok((id, job, Ok(sent)))) => {
                fl.live.remove(&id);
                let spec = specs[job.idx];
                // The job's body (bytes held in memory) goes back to the budget here.
                drop(job.body);
                if let Some(kept) = &done[job.idx] {
                    // Both attempts of a hedged part were acknowledged: one record (the
                    // winner's); the store keeps the last body, so the part is re-listed.
                    if kept.crc64() != sent.checksums.crc64_xz().unwrap_or_default() {
                        warn!(
                            part = spec.number,
                            "two attempts of one part were acknowledged with different CRC-64s"
                        );
                    }
                    relist.push(spec.number);
                    continue;
                }
                // The first acknowledged attempt wins; the other is cancelled, or, if its body
                // was all sent, answered and re-listed (the store may keep its body instead).
                if fl.settle_sibling(job.idx) {
                    relist.push(spec.number);
                }
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
            Event::Joined(Ok((id, mut job, Err(e)))) => {
                fl.live.remove(&id);
                let spec = specs[job.idx];
                if done[job.idx].is_some() || fl.live.values().any(|l| l.idx == job.idx) {
                    // One attempt of a hedged pair failed: the other carries the part, in
                    // effect its retry, and counted as one (every failure is mended or fatal).
                    debug!(part = spec.number, error = %e.err, "a hedged attempt failed; the other goes on");
                    ctx.note_retry(e.reason);
                    continue;
                }
                if e.side == Side::Source && e.class() == ErrorClass::Precondition {
                    if failure.is_none() {
                        let etag = match &job.body {
                            PartBody::Range { etag, .. } => etag.clone(),
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
    ctx.progress.awaiting_ack_parts.store(0, Relaxed);
    ctx.progress.sending_parts.store(0, Relaxed);
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
fn spawn(
    set: &mut Attempts,
    fl: &mut Flight,
    ctx: &Arc<Ctx>,
    spec: PartSpec,
    mut job: Job,
    upload_id: &Arc<str>,
    hedge: bool,
) {
    let id = fl.next_id;
    fl.next_id += 1;
    // A GET issued ahead started this attempt: its time to first byte is the round trip.
    let early = job.body.take_early();
    let started = early.as_ref().map_or_else(Instant::now, |e| e.issued);
    let watch = Arc::new(Watch::new(id, spec.len, started, fl.tx.clone()));
    let range = match &job.body {
        PartBody::Range { etag, .. } => Some(etag.clone()),
        PartBody::Memory { .. } => None,
    };
    let idx = job.idx;
    let ctx = ctx.clone();
    let upload_id = upload_id.clone();
    let span = tracing::debug_span!("part", number = spec.number, attempt = job.attempt, hedge);
    let w = watch.clone();
    let abort = set.spawn(
        async move {
            let _inflight = InflightGuard::new(ctx.progress.clone());
            let r = attempt(&ctx, spec, &job.body, early, &upload_id, &w).await;
            (id, job, r)
        }
        .instrument(span),
    );
    fl.live.insert(
        id,
        Live {
            idx,
            watch,
            sent: false,
            lent: false,
            hedged: hedge,
            range,
            abort,
            mark: (Instant::now(), 0),
            recent: None,
        },
    );
}
