//! The scheduler: a FIFO queue, at most `max_jobs` running, global memory and bandwidth
//! budgets shared by every running job, pause/resume/cancel, and crash recovery.
//!
//! Pause cancels the job's token and keeps its resume state; resume puts it back in the
//! queue, and the engine continues from the acknowledged parts. On shutdown running jobs are
//! stopped the same way but stay `running` in the database, so the next start resumes them.
//!
//! Commands racing each other keep the user's intent (each is decided under the one lock, and
//! a stopping job's outcome is read from its latest intent when it lands):
//! * cancel is sticky: once accepted, pause and resume are refused (`WrongState`, with the
//!   state) and the job ends `cancelled`, its upload aborted unless kept;
//! * a resume received while a pause is taking effect is honoured once the pause lands: the
//!   job is queued again instead of ending `paused`; a later pause wins over it again;
//! * a command that cannot take effect (the job finished first, or is being cancelled) is
//!   refused with the state the job is in, never answered as if it had worked.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::db::{DbError, JobDb};
use super::jobs::{Job, JobSpec, JobState};
use crate::migrate::Event;
use crate::transfer::budget::{MemoryBudget, TokenBucket};
use crate::transfer::progress::RateMeter;
use crate::transfer::{state, Progress};

mod runner;

/// Daemon-wide limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Root of the daemon's state: `jobs.redb` and one subdirectory per job.
    pub state_dir: PathBuf,
    /// Jobs running at once; the rest wait in FIFO order.
    pub max_jobs: usize,
    /// Buffer bytes shared by all running jobs.
    pub memory: u64,
    /// Bytes per second shared by all running jobs; `None` = unlimited.
    pub bandwidth: Option<u64>,
}

/// Why a job operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A command that cannot take effect in the job's state (reported with that state).
    #[error("{message}")]
    WrongState {
        message: String,
        state: JobState,
        stage: String,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Unavailable(String),
    #[error("the daemon already holds {0} jobs; delete finished jobs before submitting more")]
    TooMany(usize),
}

/// Longest a pause, resume or cancel waits for a running job to stop before it answers (the
/// engine gives in-flight parts a few seconds to finish; the command still takes effect later).
pub const COMMAND_WAIT: Duration = Duration::from_secs(20);

/// Jobs the daemon keeps (any state) before refusing new ones: bounds the database, the
/// job list and the per-job metric series.
pub const MAX_STORED_JOBS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Run,
    Pause,
    /// Paused, then resumed before the pause landed: stop, then queue the job again.
    Restart,
    /// Sticky: no later command replaces it.
    Cancel {
        keep_upload: bool,
    },
}

struct Live {
    progress: Arc<Progress>,
    cancel: CancellationToken,
    intent: Intent,
    started: Instant,
    /// Retries of earlier runs (the engine's counter restarts at 0 each run).
    base_retries: u64,
    /// Stage and current disk of a migrate job (unused by copies).
    migrate: Arc<MigrateLive>,
    /// Throughput smoothed over the last ~10 s of streamed bytes, for the rate and ETA.
    rate: Mutex<RateMeter>,
}

/// What a running migrate job reports: its stage and the progress of the disk in relay.
#[derive(Default)]
struct MigrateLive {
    stage: Mutex<Option<&'static str>>,
    disk: Mutex<Option<Arc<Progress>>>,
}

impl MigrateLive {
    fn on(&self, e: Event<'_>) {
        let lock = |m: &Mutex<Option<&'static str>>, v| {
            *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
        };
        match e {
            Event::Resumed { stage, .. } | Event::Stage(stage) => lock(&self.stage, stage.as_str()),
            Event::DiskStarted { progress, .. } => {
                *self.disk.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress);
            }
            _ => {}
        }
    }
}

struct Entry {
    job: Job,
    live: Option<Live>,
    /// A cancel of this (not running) job is aborting its upload: it is no longer queued, and
    /// pause and resume are refused until it is `cancelled`.
    cancelling: bool,
}

impl Entry {
    /// Refuses `command` with the job's current state.
    fn refuse(&self, command: &str, why: &str) -> JobError {
        let mut job = self.job.clone();
        if let Some(live) = &self.live {
            fill_live(&mut job, live);
        }
        wrong_state(job, command, why)
    }
}

/// `job` cannot be `command`ed because it `why` (e.g. "is being cancelled"); the message ends
/// with what the user can do instead.
fn wrong_state(job: Job, command: &str, why: &str) -> JobError {
    let next = match job.state {
        JobState::Failed => "resume it to retry, or delete it",
        JobState::Succeeded | JobState::Cancelled => "submit a new job to run it again",
        _ => "it will end cancelled; submit a new job once it has",
    };
    JobError::WrongState {
        message: format!("job {} {why}, so it cannot be {command}: {next}", job.id),
        state: job.state,
        stage: job.stage,
    }
}

impl Entry {
    /// Whether a cancel has been accepted and not yet recorded.
    fn being_cancelled(&self) -> bool {
        self.cancelling
            || self
                .live
                .as_ref()
                .is_some_and(|l| matches!(l.intent, Intent::Cancel { .. }))
    }
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, Entry>,
    queue: VecDeque<String>,
    running: usize,
    next_seq: u64,
}

/// The job scheduler; one per daemon.
pub struct Scheduler {
    inner: Mutex<Inner>,
    wake: Notify,
    changed: watch::Sender<u64>,
    db: JobDb,
    cfg: SchedulerConfig,
    memory: Arc<MemoryBudget>,
    bandwidth: Option<Arc<TokenBucket>>,
    budget_progress: Arc<Progress>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Creates `dir` (and parents) with mode 0700 (see [`crate::transfer::state::private_dir`]).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    crate::transfer::state::private_dir(dir)
}

fn remove_stale_locks(jobs_dir: &Path) {
    let Ok(dirs) = std::fs::read_dir(jobs_dir) else {
        return;
    };
    for d in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "lock") {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove a stale lock");
                }
            }
        }
    }
}

/// Acknowledged bytes, object size, acknowledged parts and planned parts recorded in the
/// engine's resume state in `dir`, if there is one.
fn saved_progress(dir: &Path) -> Option<(u64, u64, u64, u64)> {
    let path = std::fs::read_dir(dir).ok()?.find_map(|e| {
        let p = e.ok()?.path();
        let name = p.file_name()?.to_str()?;
        (name.starts_with("copy-") && name.ends_with(".json")).then_some(p)
    })?;
    let st = state::load(&path).ok()??;
    let done: u64 = st.parts.iter().map(|p| p.size).sum();
    let total = st.source_meta.size;
    let parts_total = crate::transfer::plan::parts_count(total, st.part_size, st.tail);
    Some((done, total, st.parts.len() as u64, parts_total))
}

fn fill_live(job: &mut Job, live: &Live) {
    let is_migrate = matches!(job.spec, JobSpec::Migrate(_));
    // A migration relays one disk at a time, each with its own engine progress.
    let disk = live
        .migrate
        .disk
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let s = disk.unwrap_or_else(|| live.progress.clone()).snapshot();
    // Until the engine has planned and reconciled the saved parts, keep the figures of the
    // previous run rather than showing a resumed job at zero.
    if s.total_bytes > 0 {
        job.bytes_total = s.total_bytes;
    }
    if s.parts_total > 0 {
        job.parts_total = s.parts_total;
    }
    if s.acked_bytes > 0 {
        job.bytes_done = s.acked_bytes;
        job.parts_done = s.parts_done;
    }
    job.inflight_parts = s.inflight_parts;
    job.concurrency_limit = s.concurrency_limit;
    job.retries = live.base_retries + s.retries;
    // The rate of bytes as they stream, smoothed (see `RateMeter`): an average since the
    // start kept planning and ramp-up in the ETA for the whole job.
    let mut meter = live.rate.lock().unwrap_or_else(|p| p.into_inner());
    let smoothed = meter.sample(Instant::now(), s.sent_bytes);
    let secs = live.started.elapsed().as_secs_f64();
    let sent = s.acked_bytes.saturating_sub(s.resumed_bytes);
    // Zero over the last interval while parts sit in socket buffers is not "stopped": fall
    // back to the average since the start until the meter sees bytes move.
    job.throughput_bytes_per_sec =
        smoothed
            .filter(|r| *r > 0.0)
            .unwrap_or(if secs > 0.0 { sent as f64 / secs } else { 0.0 });
    job.eta_seconds = (job.throughput_bytes_per_sec > 0.0 && s.total_bytes > 0)
        .then(|| s.total_bytes.saturating_sub(s.acked_bytes) as f64 / job.throughput_bytes_per_sec);
    drop(meter);
    let migrate_stage = *live.migrate.stage.lock().unwrap_or_else(|p| p.into_inner());
    job.stage = match live.intent {
        Intent::Pause => "pausing",
        Intent::Restart => "resuming",
        Intent::Cancel { .. } => "cancelling",
        Intent::Run if is_migrate => migrate_stage.unwrap_or("export"),
        Intent::Run if s.total_bytes == 0 => "planning",
        Intent::Run if s.acked_bytes < s.total_bytes => "transferring",
        Intent::Run => "verifying",
    }
    .to_string();
}

impl Scheduler {
    /// Opens the state directory and job table and recovers jobs from a previous run: those
    /// that were running go to the front of the queue (their engine state resumes them),
    /// queued ones keep their order, finished ones keep their results.
    pub fn open(cfg: SchedulerConfig) -> Result<Arc<Self>, JobError> {
        let io = |what: &str, e: std::io::Error| {
            JobError::Unavailable(format!(
                "cannot create {what} in {}: {e}",
                cfg.state_dir.display()
            ))
        };
        create_private_dir(&cfg.state_dir).map_err(|e| io("the state directory", e))?;
        create_private_dir(&cfg.state_dir.join("jobs")).map_err(|e| io("jobs/", e))?;
        let db = JobDb::open(&cfg.state_dir)?;
        // The database is opened exclusively, so no other daemon uses these job directories:
        // resume-state locks left by a killed process are stale. Removing them matters in
        // containers, where the restarted daemon often gets the dead one's pid back.
        remove_stale_locks(&cfg.state_dir.join("jobs"));
        let budget_progress = Progress::new();
        let memory = MemoryBudget::new(cfg.memory, budget_progress.clone());
        let bandwidth = cfg.bandwidth.map(|b| Arc::new(TokenBucket::new(b)));
        let mut inner = Inner::default();
        let mut resumed = Vec::new();
        let mut queued = Vec::new();
        for mut job in db.load_all()? {
            inner.next_seq = inner.next_seq.max(job.seq + 1);
            match job.state {
                JobState::Running => {
                    // The resume state is written after every acknowledged part; the job
                    // record only every few seconds. Show the more recent figure.
                    let dir = cfg.state_dir.join("jobs").join(&job.id);
                    if let Some((done, total, parts_done, parts_total)) = saved_progress(&dir) {
                        job.bytes_done = done;
                        job.bytes_total = total;
                        job.parts_done = parts_done;
                        job.parts_total = parts_total;
                    }
                    job.state = JobState::Queued;
                    job.stage = "queued".into();
                    job.inflight_parts = 0;
                    db.put(&job)?;
                    resumed.push(job.id.clone());
                }
                JobState::Queued => queued.push(job.id.clone()),
                _ => {}
            }
            inner.jobs.insert(
                job.id.clone(),
                Entry {
                    job,
                    live: None,
                    cancelling: false,
                },
            );
        }
        if !resumed.is_empty() {
            tracing::info!(jobs = resumed.len(), "resuming jobs that were running");
        }
        inner.queue = resumed.into_iter().chain(queued).collect();
        let (changed, _) = watch::channel(0);
        Ok(Arc::new(Self {
            inner: Mutex::new(inner),
            wake: Notify::new(),
            changed,
            db,
            cfg,
            memory,
            bandwidth,
            budget_progress,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("jobs").join(id)
    }

    fn notify_changed(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The configured limits.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Bytes currently charged to the global memory budget.
    pub fn memory_in_use(&self) -> u64 {
        self.memory.in_use()
    }

    /// Highest value the global memory budget reached.
    pub fn memory_peak(&self) -> u64 {
        self.budget_progress.peak_buffered_bytes.load(Relaxed)
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Starts the dispatcher and the progress checkpointer.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        self.tasks.spawn(async move { me.dispatch_loop().await });
        let me = self.clone();
        self.tasks.spawn(async move { me.checkpoint_loop().await });
    }

    async fn dispatch_loop(self: Arc<Self>) {
        loop {
            self.fill_slots();
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Saves live byte counts so a restarted daemon shows where jobs were.
    async fn checkpoint_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let snapshot: Vec<Job> = {
                let mut g = self.lock();
                g.jobs
                    .values_mut()
                    .filter_map(|e| {
                        let live = e.live.as_ref()?;
                        fill_live(&mut e.job, live);
                        Some(e.job.clone())
                    })
                    .collect()
            };
            for j in snapshot {
                if let Err(e) = self.db.put(&j) {
                    tracing::warn!(job = %j.id, error = %e, "cannot checkpoint job progress");
                }
            }
        }
    }

    fn fill_slots(self: &Arc<Self>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let mut g = self.lock();
        while g.running < self.cfg.max_jobs {
            let Some(id) = g.queue.pop_front() else { break };
            let Some(entry) = g.jobs.get_mut(&id) else {
                continue;
            };
            if entry.job.state != JobState::Queued || entry.cancelling {
                continue;
            }
            let progress = Progress::new();
            let cancel = CancellationToken::new();
            entry.job.state = JobState::Running;
            entry.job.stage = "planning".into();
            entry.job.started_at = Some(now());
            entry.job.runs += 1;
            entry.job.last_error = None;
            entry.live = Some(Live {
                progress: progress.clone(),
                cancel: cancel.clone(),
                intent: Intent::Run,
                started: Instant::now(),
                base_retries: entry.job.retries,
                migrate: Arc::new(MigrateLive::default()),
                rate: Mutex::new(RateMeter::default()),
            });
            let mig = entry
                .live
                .as_ref()
                .map(|l| l.migrate.clone())
                .unwrap_or_default();
            let job = entry.job.clone();
            g.running += 1;
            if let Err(e) = self.db.put(&job) {
                tracing::warn!(job = %job.id, error = %e, "cannot record job start");
            }
            let me = self.clone();
            self.tasks
                .spawn(async move { me.run_job(job, progress, cancel, mig).await });
        }
        drop(g);
        self.notify_changed();
    }

    /// Queues a new job.
    pub fn submit(self: &Arc<Self>, spec: JobSpec) -> Result<Job, JobError> {
        self.submit_as(spec, None)
    }

    /// Queues a new job, recording who submitted it (a caller's name, never a token).
    pub fn submit_as(
        self: &Arc<Self>,
        spec: JobSpec,
        submitted_by: Option<String>,
    ) -> Result<Job, JobError> {
        if self.shutdown.is_cancelled() {
            return Err(JobError::Unavailable("the daemon is shutting down".into()));
        }
        let job = {
            let mut g = self.lock();
            if g.jobs.len() >= MAX_STORED_JOBS {
                return Err(JobError::TooMany(g.jobs.len()));
            }
            // Two jobs writing the same object would race two uploads to the same key.
            if let Some(other) = g
                .jobs
                .values()
                .find(|e| !e.job.state.is_finished() && e.job.spec.same_target(&spec))
            {
                return Err(JobError::Conflict(format!(
                    "job {} ({}) already writes this destination: cancel it, or wait until it \
                     has finished",
                    other.job.id,
                    other.job.state.as_str()
                )));
            }
            let seq = g.next_seq;
            g.next_seq += 1;
            let job = Job {
                id: super::jobs::new_id(),
                seq,
                spec,
                state: JobState::Queued,
                stage: "queued".into(),
                created_at: now(),
                submitted_by,
                started_at: None,
                finished_at: None,
                bytes_done: 0,
                bytes_total: 0,
                parts_done: 0,
                parts_total: 0,
                inflight_parts: 0,
                concurrency_limit: 0,
                throughput_bytes_per_sec: 0.0,
                eta_seconds: None,
                retries: 0,
                runs: 0,
                last_error: None,
                result: None,
            };
            self.db.put(&job)?;
            g.jobs.insert(
                job.id.clone(),
                Entry {
                    job: job.clone(),
                    live: None,
                    cancelling: false,
                },
            );
            g.queue.push_back(job.id.clone());
            job
        };
        tracing::info!(job = %job.id, kind = job.spec.kind(), "job queued");
        self.wake.notify_one();
        self.notify_changed();
        Ok(job)
    }

    /// One job with live figures.
    pub fn get(&self, id: &str) -> Option<Job> {
        let mut g = self.lock();
        let e = g.jobs.get_mut(id)?;
        if let Some(live) = &e.live {
            fill_live(&mut e.job, live);
        }
        Some(e.job.clone())
    }

    /// Jobs in submission order, optionally only those in `state`.
    pub fn list(&self, state: Option<JobState>) -> Vec<Job> {
        let mut g = self.lock();
        let mut out: Vec<Job> = g
            .jobs
            .values_mut()
            .filter(|e| state.is_none_or(|s| e.job.state == s))
            .map(|e| {
                if let Some(live) = &e.live {
                    fill_live(&mut e.job, live);
                }
                e.job.clone()
            })
            .collect();
        out.sort_by_key(|j| j.seq);
        out
    }

    /// Waits (up to `limit`) until `done` holds for job `id` (or the job is gone).
    async fn wait_until(&self, id: &str, limit: Duration, done: impl Fn(&Entry) -> bool) {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.lock().jobs.get(id).is_none_or(&done) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Waits (up to [`COMMAND_WAIT`]) until run number `run` of job `id` has stopped: a job
    /// that a resume queued again, and the dispatcher restarted, counts as stopped.
    async fn wait_run_over(&self, id: &str, run: u32) {
        self.wait_until(id, COMMAND_WAIT, |e| e.live.is_none() || e.job.runs != run)
            .await
    }

    fn persist(&self, job: &Job) -> Result<(), JobError> {
        self.db.put(job)?;
        self.notify_changed();
        Ok(())
    }

    /// Cancels a job; its multipart upload is aborted unless `keep_upload`. Returns the job
    /// once it has stopped (or after [`COMMAND_WAIT`]). Cancel is sticky: a pause or resume
    /// received after it is refused. A job that finished before the cancel could stop it is
    /// refused with its state.
    pub async fn cancel(&self, id: &str, keep_upload: bool) -> Result<Job, JobError> {
        enum Then {
            WaitRun(u32),
            WaitCancelled,
            Abort(Box<JobSpec>),
        }
        let then = {
            let mut g = self.lock();
            let e = g
                .jobs
                .get_mut(id)
                .ok_or_else(|| JobError::NotFound(id.into()))?;
            match e.job.state {
                s if s.is_finished() => {
                    return Err(e.refuse("cancelled", &format!("is already {}", s.as_str())))
                }
                _ if e.cancelling => Then::WaitCancelled,
                JobState::Running => {
                    if let Some(live) = &mut e.live {
                        live.intent = Intent::Cancel { keep_upload };
                        live.cancel.cancel();
                    }
                    Then::WaitRun(e.job.runs)
                }
                _ => {
                    e.cancelling = true;
                    e.job.stage = "cancelling".into();
                    let spec = Box::new(e.job.spec.clone());
                    g.queue.retain(|q| q != id);
                    Then::Abort(spec)
                }
            }
        };
        match then {
            Then::WaitRun(run) => self.wait_run_over(id, run).await,
            Then::WaitCancelled => {
                self.wait_until(id, COMMAND_WAIT, |e| e.job.state.is_finished())
                    .await
            }
            Then::Abort(spec) => {
                let abort = if keep_upload {
                    Ok(())
                } else {
                    self.abort_leftover(id, &spec).await
                };
                let job = {
                    let mut g = self.lock();
                    let e = g
                        .jobs
                        .get_mut(id)
                        .ok_or_else(|| JobError::NotFound(id.into()))?;
                    e.cancelling = false;
                    e.job.state = JobState::Cancelled;
                    e.job.stage = "cancelled".into();
                    e.job.finished_at = Some(now());
                    if let Err(a) = &abort {
                        e.job.last_error = Some(format!("cancelled, but {a}"));
                    }
                    e.job.clone()
                };
                if abort.is_ok() {
                    self.remove_dir(id);
                }
                self.persist(&job)?;
            }
        }
        let job = self.get(id).ok_or_else(|| JobError::NotFound(id.into()))?;
        if job.state.is_finished() && job.state != JobState::Cancelled {
            let why = format!("{} before the cancel could stop it", job.state.as_str());
            return Err(wrong_state(job, "cancelled", &why));
        }
        Ok(job)
    }

    /// Pauses a queued or running job, keeping its resume state. Refused (with the state) for
    /// a job being cancelled or finished, including one that finished before it could stop.
    pub async fn pause(&self, id: &str) -> Result<Job, JobError> {
        let run = {
            let mut g = self.lock();
            let e = g
                .jobs
                .get_mut(id)
                .ok_or_else(|| JobError::NotFound(id.into()))?;
            if e.being_cancelled() {
                return Err(e.refuse("paused", "is being cancelled"));
            }
            match e.job.state {
                JobState::Running => match &mut e.live {
                    Some(live) => {
                        // Also replaces a resume still waiting for an earlier pause to land:
                        // the last of pause and resume wins.
                        live.intent = Intent::Pause;
                        live.cancel.cancel();
                        Some(e.job.runs)
                    }
                    None => None,
                },
                JobState::Queued => {
                    e.job.state = JobState::Paused;
                    e.job.stage = "paused".into();
                    let job = e.job.clone();
                    g.queue.retain(|q| q != id);
                    drop(g);
                    self.persist(&job)?;
                    None
                }
                JobState::Paused => None,
                s => return Err(e.refuse("paused", &format!("is {}", s.as_str()))),
            }
        };
        if let Some(run) = run {
            self.wait_run_over(id, run).await;
        }
        let job = self.get(id).ok_or_else(|| JobError::NotFound(id.into()))?;
        if job.state.is_finished() {
            // It succeeded or failed before it could stop, or a cancel overtook the pause.
            let why = format!("{} before the pause took effect", job.state.as_str());
            return Err(wrong_state(job, "paused", &why));
        }
        Ok(job)
    }

    /// Puts a paused (or failed) job back in the queue; it continues from its saved parts.
    /// A job whose pause is still taking effect is queued again once it has stopped (this
    /// waits for that, up to [`COMMAND_WAIT`]; the job is then `running` with stage
    /// `resuming`). Refused, with the state, for a job being cancelled or finished.
    pub async fn resume(&self, id: &str) -> Result<Job, JobError> {
        let run = {
            let mut g = self.lock();
            let e = g
                .jobs
                .get_mut(id)
                .ok_or_else(|| JobError::NotFound(id.into()))?;
            if e.being_cancelled() {
                return Err(e.refuse("resumed", "is being cancelled"));
            }
            match e.job.state {
                JobState::Paused | JobState::Failed => {
                    e.job.state = JobState::Queued;
                    e.job.stage = "queued".into();
                    e.job.finished_at = None;
                    let job = e.job.clone();
                    g.queue.push_back(id.to_string());
                    drop(g);
                    self.persist(&job)?;
                    self.wake.notify_one();
                    return Ok(job);
                }
                JobState::Running => match &mut e.live {
                    Some(live) if matches!(live.intent, Intent::Pause | Intent::Restart) => {
                        live.intent = Intent::Restart;
                        e.job.runs
                    }
                    _ => return Ok(e.job.clone()),
                },
                JobState::Queued => return Ok(e.job.clone()),
                s => return Err(e.refuse("resumed", &format!("is {}", s.as_str()))),
            }
        };
        self.notify_changed();
        self.wait_run_over(id, run).await;
        let job = self.get(id).ok_or_else(|| JobError::NotFound(id.into()))?;
        if job.state.is_finished() {
            // It succeeded or failed while stopping, or a cancel overtook the resume.
            let why = format!("{} while its pause was taking effect", job.state.as_str());
            return Err(wrong_state(job, "resumed", &why));
        }
        Ok(job)
    }

    /// Forgets a finished job. A failed job's leftover upload is aborted first unless
    /// `keep_upload` (then it is left to `ossrelay uploads abort` or a lifecycle rule).
    pub async fn delete(&self, id: &str, keep_upload: bool) -> Result<(), JobError> {
        let spec = {
            let g = self.lock();
            let e = g
                .jobs
                .get(id)
                .ok_or_else(|| JobError::NotFound(id.into()))?;
            if !e.job.state.is_finished() {
                return Err(JobError::Conflict(format!(
                    "job {id} is {}; cancel it before deleting it",
                    e.job.state.as_str()
                )));
            }
            e.job.spec.clone()
        };
        if !keep_upload {
            if let Err(e) = self.abort_leftover(id, &spec).await {
                return Err(JobError::Conflict(format!(
                    "cannot delete job {id} yet: {e} (DELETE with ?keep_upload=true to delete it anyway)"
                )));
            }
        }
        self.db.delete(id)?;
        self.lock().jobs.remove(id);
        self.remove_dir(id);
        self.notify_changed();
        Ok(())
    }

    /// Stops starting jobs, interrupts running ones (their state is saved and they stay
    /// `running` for the next start) and waits for them, at most `limit`.
    pub async fn shutdown(&self, limit: Duration) {
        self.shutdown.cancel();
        {
            let g = self.lock();
            for e in g.jobs.values() {
                if let Some(live) = &e.live {
                    live.cancel.cancel();
                }
            }
        }
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("jobs did not stop in time; their saved state is still consistent");
        }
    }
}
