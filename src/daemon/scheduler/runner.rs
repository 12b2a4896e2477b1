//! Running one job: a copy through [`crate::transfer::relay`] or a migration through
//! [`crate::migrate`], under the daemon's shared budgets; recording its outcome as the user's
//! latest intent decides (see the parent module); aborting what a stopped copy left behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{create_private_dir, fill_live, now, Intent, MigrateLive, Scheduler};
use crate::daemon::jobs::{CopySpec, Job, JobResult, JobSpec, JobState, MigrateSpec};
use crate::migrate::{self, setup::SetupError, Event};
use crate::transfer::{self, state, Progress, TransferError};

/// A copy job with `shards`: plan, every shard at once in this process, complete (the
/// manifest next to the destination, so a resumed job keeps the plan and recorded parts).
async fn run_sharded(
    src: transfer::Location,
    dst: transfer::Target,
    shards: u32,
    opts: transfer::CopyOptions,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<JobResult, TransferError> {
    let transfer::Target::Fixed(dst) = dst else {
        return Err(TransferError::Plan(
            "shards: an unpack is one sequential stream and cannot be sharded; submit the job \
             without shards"
                .into(),
        ));
    };
    let started = Instant::now();
    let at = transfer::Location::new(
        dst.store.clone(),
        transfer::shard::default_manifest_key(&dst.key),
    );
    let p = progress.clone();
    let c = transfer::shard::run_local(src, dst, at, shards, opts, progress, cancel)
        .await
        .map_err(|e| match e {
            transfer::shard::ShardError::Transfer(t) => t,
            transfer::shard::ShardError::Worker { source, .. }
                if matches!(source.root(), TransferError::Interrupted { .. }) =>
            {
                source
            }
            other => TransferError::Plan(other.to_string()),
        })?;
    Ok(JobResult {
        crc64: c.crc64.to_string(),
        bytes: c.bytes,
        parts: c.parts,
        part_size: c.part_size,
        seconds: started.elapsed().as_secs_f64(),
        throughput_bytes_per_sec: c.bytes as f64 / started.elapsed().as_secs_f64().max(1e-9),
        retries: p.retries.load(std::sync::atomic::Ordering::Relaxed),
        resumed_bytes: p.resumed_bytes.load(std::sync::atomic::Ordering::Relaxed),
        hedged_parts: p.hedged_parts.load(std::sync::atomic::Ordering::Relaxed),
        source: c.source,
        destination: c.destination,
        image_id: None,
        region: None,
        cloud: None,
        disks: Vec::new(),
        member: None,
        format: None,
        raw_bytes: None,
        raw_crc64: None,
    })
}

impl Scheduler {
    pub(super) async fn run_job(
        self: Arc<Self>,
        job: Job,
        progress: Arc<Progress>,
        cancel: CancellationToken,
        mig: Arc<MigrateLive>,
    ) {
        let dir = self.job_dir(&job.id);
        tracing::info!(job = %job.id, kind = job.spec.kind(), "job started");
        let run = async {
            match &job.spec {
                JobSpec::Copy(spec) => self.run_copy(spec, &dir, progress, cancel).await,
                JobSpec::Migrate(spec) => self.run_migrate(spec, &dir, cancel, &mig).await,
            }
        };
        // A bug in one job must not leave its slot taken forever: record it as a failure.
        let outcome = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(TransferError::Plan(
                "internal error while running the job (see the daemon's log); resume it to retry"
                    .into(),
            )),
        };
        self.finish(&job.id, outcome).await;
    }

    pub(super) async fn run_copy(
        &self,
        spec: &CopySpec,
        dir: &Path,
        progress: Arc<Progress>,
        cancel: CancellationToken,
    ) -> Result<JobResult, TransferError> {
        create_private_dir(dir)
            .map_err(|e| TransferError::State(format!("cannot create {}: {e}", dir.display())))?;
        let (src, dst) = spec.locations().map_err(TransferError::Plan)?;
        let mut opts = spec.copy_options(dir);
        opts.shared_memory = Some(self.memory.clone());
        opts.shared_bandwidth = self.bandwidth.clone();
        // The shared budget replaces the per-copy one; keep validation consistent with it.
        opts.memory = self.memory.limit();
        if let Some(n) = spec.shards.filter(|&n| n > 1) {
            return run_sharded(src, dst, n, opts, progress, cancel).await;
        }
        let relayed = transfer::relay(src, dst, spec.transform(), opts, progress, cancel).await?;
        Ok(JobResult::from(&relayed))
    }

    /// Runs (or resumes, from the state file in the job's directory) a migration.
    pub(super) async fn run_migrate(
        &self,
        spec: &MigrateSpec,
        dir: &Path,
        cancel: CancellationToken,
        mig: &MigrateLive,
    ) -> Result<JobResult, TransferError> {
        create_private_dir(dir)
            .map_err(|e| TransferError::State(format!("cannot create {}: {e}", dir.display())))?;
        let started = Instant::now();
        let mut params = spec.params(dir);
        params.copy.shared_memory = Some(self.memory.clone());
        params.copy.shared_bandwidth = self.bandwidth.clone();
        params.copy.memory = self.memory.limit();
        let (cfg, backends) = params.prepare().await.map_err(|e| match e {
            SetupError::Usage(m) | SetupError::Failed(m) => TransferError::Plan(m),
        })?;
        let sink = |e: Event<'_>| mig.on(e);
        let out = migrate::migrate(&cfg, &backends, &cancel, &sink)
            .await
            .map_err(|e| TransferError::Plan(e.to_string()))?;
        let bytes = out.disks.iter().map(|d| d.bytes).sum();
        let seconds = started.elapsed().as_secs_f64();
        Ok(JobResult {
            crc64: out
                .disks
                .first()
                .map(|d| d.crc64.to_string())
                .unwrap_or_default(),
            bytes,
            parts: 0,
            part_size: spec.part_size.unwrap_or(0),
            seconds,
            throughput_bytes_per_sec: if seconds > 0.0 {
                bytes as f64 / seconds
            } else {
                0.0
            },
            retries: 0,
            resumed_bytes: 0,
            hedged_parts: 0,
            source: format!("{}/{}", spec.src_region, spec.image_id),
            destination: format!("{}/{}", out.region, out.image_id),
            image_id: Some(out.image_id),
            region: Some(out.region),
            cloud: Some(out.cloud.to_string()),
            disks: out.disks,
            member: None,
            format: None,
            raw_bytes: None,
            raw_crc64: None,
        })
    }

    pub(super) async fn finish(&self, id: &str, outcome: Result<JobResult, TransferError>) {
        let shutting_down = self.shutdown.is_cancelled();
        // The outcome follows the intent at the moment the job is recorded as stopped, under
        // the same lock as the record: a resume or cancel received while the job was stopping
        // is not lost. Only a cancel needs work first (aborting the upload, without the lock).
        let mut abort: Option<Result<(), String>> = None;
        let mut g = loop {
            let (intent, spec) = {
                let mut g = self.lock();
                let Some(e) = g.jobs.get_mut(id) else { return };
                let intent = e.live.as_ref().map_or(Intent::Run, |l| l.intent);
                if let Some(live) = &e.live {
                    fill_live(&mut e.job, live);
                }
                let must_abort = outcome.is_err()
                    && abort.is_none()
                    && intent == Intent::Cancel { keep_upload: false };
                if !must_abort {
                    break g;
                }
                (intent, e.job.spec.clone())
            };
            debug_assert!(matches!(intent, Intent::Cancel { .. }));
            abort = Some(self.abort_leftover(id, &spec).await);
        };
        let intent = g
            .jobs
            .get(id)
            .and_then(|e| e.live.as_ref())
            .map_or(Intent::Run, |l| l.intent);
        let abort_error = abort.and_then(Result::err);
        let new_state = match (&outcome, intent) {
            (Ok(_), _) => JobState::Succeeded,
            (Err(_), Intent::Pause) => JobState::Paused,
            (Err(_), Intent::Restart) => JobState::Queued,
            (Err(_), Intent::Cancel { .. }) => JobState::Cancelled,
            // Stays `running` in the database: the next start resumes it.
            (Err(_), Intent::Run) if shutting_down => JobState::Running,
            (Err(_), Intent::Run) => JobState::Failed,
        };
        let job = {
            g.running = g.running.saturating_sub(1);
            let Some(e) = g.jobs.get_mut(id) else { return };
            e.live = None;
            let j = &mut e.job;
            j.state = new_state;
            j.inflight_parts = 0;
            j.concurrency_limit = 0;
            j.throughput_bytes_per_sec = if new_state == JobState::Running {
                j.throughput_bytes_per_sec
            } else {
                0.0
            };
            if new_state != JobState::Running {
                j.eta_seconds = None;
            }
            match &outcome {
                Ok(r) => {
                    j.bytes_done = r.bytes;
                    j.bytes_total = r.bytes;
                    j.parts_done = r.parts as u64;
                    j.parts_total = r.parts as u64;
                    j.result = Some(r.clone());
                    j.stage = "done".into();
                }
                Err(e) => {
                    j.stage = match new_state {
                        JobState::Paused => "paused",
                        JobState::Queued => "queued",
                        JobState::Cancelled => "cancelled",
                        JobState::Running => "interrupted",
                        _ => "failed",
                    }
                    .into();
                    if new_state == JobState::Failed {
                        j.last_error = Some(e.root().to_string());
                    }
                    if let Some(a) = &abort_error {
                        j.last_error = Some(format!("cancelled, but {a}"));
                    }
                }
            }
            if new_state.is_finished() {
                j.finished_at = Some(now());
            }
            let j = j.clone();
            if new_state == JobState::Queued {
                g.queue.push_back(id.to_string());
            }
            drop(g);
            j
        };
        tracing::info!(job = %id, state = job.state.as_str(), error = ?job.last_error, "job stopped");
        if matches!(job.state, JobState::Succeeded)
            || (job.state == JobState::Cancelled && abort_error.is_none())
        {
            self.remove_dir(id);
        }
        if let Err(e) = self.db.put(&job) {
            tracing::warn!(job = %id, error = %e, "cannot record job result");
        }
        self.wake.notify_one();
        self.notify_changed();
    }

    pub(super) fn remove_dir(&self, id: &str) {
        let dir = self.job_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove job state");
            }
        }
    }

    /// Aborts the multipart upload a stopped copy left behind (found through its resume state).
    pub(super) async fn abort_leftover(&self, id: &str, spec: &JobSpec) -> Result<(), String> {
        // A cancelled migration is abandoned: its running cloud task cancelled, its relay
        // upload aborted, its intermediate objects deleted (unless kept).
        let spec = match spec {
            JobSpec::Copy(spec) => spec,
            JobSpec::Migrate(m) => {
                let (cfg, backends) =
                    m.params(&self.job_dir(id))
                        .prepare()
                        .await
                        .map_err(|e| match e {
                            SetupError::Usage(m) | SetupError::Failed(m) => m,
                        })?;
                let done = migrate::abandon(&cfg, &backends)
                    .await
                    .map_err(|e| e.to_string())?;
                for line in done {
                    tracing::info!(job = %id, "{line}");
                }
                return Ok(());
            }
        };
        if spec.shards.is_some_and(|n| n > 1) {
            // Its run has stopped: the plan next to the destination names the upload.
            let (_, dst) = spec.locations()?;
            if let transfer::Target::Fixed(dst) = dst {
                let at = transfer::Location::new(
                    dst.store.clone(),
                    transfer::shard::default_manifest_key(&dst.key),
                );
                let opts = spec.copy_options(&self.job_dir(id));
                if let Some(upload) = transfer::shard::abandon(&at, &dst, &opts)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    tracing::info!(job = %id, upload_id = %upload, "aborted the sharded upload");
                }
            }
            return Ok(());
        }
        let dir = self.job_dir(id);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("copy-") && n.ends_with(".json"))
            })
            .collect();
        for path in files {
            // The job's run has stopped, but its lock says so for certain: never abort an
            // upload a run is still sending to.
            let _lock = state::lock(&path).map_err(|e| e.to_string())?;
            let (upload_id, recorded) =
                match state::load_checked(&path).map_err(|e| e.to_string())? {
                    state::Loaded::State(st) => (st.upload_id, Some(st.destination)),
                    // A damaged file still names the upload to abort, when it can be read.
                    state::Loaded::Damaged {
                        upload_id: Some(id),
                        ..
                    } => (id, None),
                    state::Loaded::Absent | state::Loaded::Damaged { .. } => continue,
                };
            let cannot = |e: String| format!("cannot abort upload {upload_id}: {e}");
            // The state names the object the upload is for (an unpack's is named after the
            // archive's member, which the job's spec alone does not tell).
            let dst = match recorded.and_then(|d| d.parse::<crate::locate::ObjectUrl>().ok()) {
                Some(url) => crate::locate::resolve(&url, &spec.dst_side(), None)
                    .map_err(|e| cannot(e.to_string()))?,
                None => match spec.locations().map_err(cannot)?.1 {
                    transfer::Target::Fixed(l) => l,
                    transfer::Target::Named(_) => {
                        return Err(cannot(format!(
                            "its state file {} is damaged and does not name the object; find \
                             it with `ossrelay uploads list {}`",
                            path.display(),
                            spec.destination
                        )))
                    }
                },
            };
            match dst.store.abort(&dst.key, &upload_id).await {
                Ok(()) => {}
                Err(e) if e.class == crate::store::ErrorClass::NotFound => {}
                Err(e) => {
                    return Err(format!(
                        "aborting upload {upload_id} of {} failed: {e}",
                        dst.describe()
                    ))
                }
            }
            state::remove(&path);
        }
        Ok(())
    }
}
