//! Waiting for EC2 export/import tasks and images, on the same [`PollSchedule`] as the ECS
//! waiters ([`crate::acs::wait`]): delays growing to ~15 s with ±10 % jitter, an overall
//! timeout, cancellation, and retryable errors tolerated for a while (a wait spans hours).
//!
//! Guarantees callers can rely on:
//! * [`wait_export_task`] returns on `completed`; `deleting`/`deleted` (cancelled or failed) is
//!   [`Ec2WaitError::TaskFailed`] carrying the task's `StatusMessage` ("export task
//!   export-ami-… failed: ClientError: …").
//! * [`wait_import_task`] returns the new AMI id only when the task is `completed` **and** has
//!   an `ImageId`; `preparing ami` is not success (§3.1).
//! * [`wait_image_available`] returns on `available`; `failed`/`error`/`invalid`/
//!   `deregistered` fail; an image absent for more polls than
//!   `max_consecutive_errors` is gone.
//! * `on_progress` sees every answer, so a caller can show progress and keep what it needs.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::ec2::{Ec2Api, Ec2Image, ExportImageTask, ImportImageTask};
use super::query::AwsQueryError;
pub use crate::acs::wait::PollSchedule;

/// Why a wait ended without success.
#[derive(Debug, thiserror::Error)]
pub enum Ec2WaitError {
    #[error(transparent)]
    Query(#[from] AwsQueryError),
    /// The task ended `deleting`/`deleted`: cancelled, or failed with `message`.
    #[error("{kind} task {task_id} failed: {message}{}", task_hint(.message))]
    TaskFailed {
        /// `export` or `import`.
        kind: &'static str,
        task_id: String,
        status: String,
        message: String,
    },
    /// The task is not listed (any more).
    #[error("{kind} task {task_id} is not in region {region} (not listed by EC2)")]
    TaskGone {
        kind: &'static str,
        task_id: String,
        region: String,
    },
    #[error("image {image_id} ended {state}; the import failed (check the disk's format and that it boots, then retry)")]
    ImageFailed { image_id: String, state: String },
    #[error("image {image_id} is not in region {region} (not found)")]
    ImageGone { image_id: String, region: String },
    #[error("gave up waiting for {what} after {after:?} (raise --timeout; the task keeps running and a rerun picks it up)")]
    Timeout { what: String, after: Duration },
    #[error("interrupted while waiting for {what}")]
    Interrupted { what: String },
}

/// What to do about a task's failure text, when we know.
fn task_hint(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("service role") || m.contains("sufficient permissions") {
        " (hint: the vmimport role is missing or lacks the bucket: run `ossrelay preflight --cloud aws --region R --bucket B --fix`)"
    } else if m.contains("not local to the region")
        || (m.contains("bucket") && m.contains("region"))
    {
        " (hint: the bucket must be in the task's region)"
    } else if m.contains("footers not identical") || m.contains("invalid length") {
        " (hint: the disk file is truncated or not in the stated format)"
    } else {
        ""
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

/// Fetches until `check` says the value is final (`Ok(Some(_))`) or fails.
async fn poll_until<T, R, F, Fut, C>(
    what: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    mut fetch: F,
    mut check: C,
) -> Result<R, Ec2WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsQueryError>>,
    C: FnMut(T) -> Result<Option<R>, Ec2WaitError>,
{
    let interrupted = || Ec2WaitError::Interrupted { what: what.into() };
    let started = Instant::now();
    let mut delay = schedule.initial;
    let mut errors = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(interrupted());
        }
        let fetched = tokio::select! {
            r = fetch() => r,
            _ = cancel.cancelled() => return Err(interrupted()),
        };
        match fetched {
            Ok(v) => {
                errors = 0;
                if let Some(done) = check(v)? {
                    return Ok(done);
                }
            }
            Err(e) if e.is_retryable() && errors < schedule.max_consecutive_errors => {
                errors += 1;
                tracing::warn!(error = %e, errors, "polling {what} failed; will poll again");
            }
            Err(e) => return Err(e.into()),
        }
        if started.elapsed() >= schedule.timeout {
            return Err(Ec2WaitError::Timeout {
                what: what.into(),
                after: schedule.timeout,
            });
        }
        let left = schedule.timeout.saturating_sub(started.elapsed());
        if !sleep_or_cancel(PollSchedule::jitter(delay).min(left), cancel).await {
            return Err(interrupted());
        }
        delay = schedule.next(delay);
    }
}

/// Counts polls in a row where a task or image was not listed; fails past the schedule's
/// tolerance (a just-created task or image may not be listed at once).
struct Absence {
    missing: u32,
    limit: u32,
}

impl Absence {
    fn new(schedule: &PollSchedule) -> Self {
        Self {
            missing: 0,
            limit: schedule.max_consecutive_errors,
        }
    }

    /// `true` while absence is still tolerated.
    fn tolerate(&mut self) -> bool {
        self.missing += 1;
        self.missing <= self.limit
    }
}

/// Waits for an export-image task to complete; returns its last description.
pub async fn wait_export_task(
    ec2: &dyn Ec2Api,
    task_id: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(&ExportImageTask) + Send),
) -> Result<ExportImageTask, Ec2WaitError> {
    let ids = [task_id.to_string()];
    let mut absent = Absence::new(schedule);
    let region = ec2.region().to_string();
    poll_until(
        &format!("export task {task_id}"),
        schedule,
        cancel,
        || ec2.describe_export_image_tasks(&ids),
        |tasks: Vec<ExportImageTask>| {
            let Some(t) = tasks.into_iter().find(|t| t.task_id == task_id) else {
                return if absent.tolerate() {
                    Ok(None)
                } else {
                    Err(Ec2WaitError::TaskGone {
                        kind: "export",
                        task_id: task_id.into(),
                        region: region.clone(),
                    })
                };
            };
            absent.missing = 0;
            on_progress(&t);
            match t.status.as_str() {
                "completed" => Ok(Some(t)),
                "deleting" | "deleted" => Err(failed(
                    "export",
                    task_id,
                    &t.status,
                    t.status_message.as_deref(),
                )),
                _ => Ok(None),
            }
        },
    )
    .await
}

fn failed(kind: &'static str, task_id: &str, status: &str, message: Option<&str>) -> Ec2WaitError {
    Ec2WaitError::TaskFailed {
        kind,
        task_id: task_id.to_string(),
        status: status.to_string(),
        message: message
            .filter(|m| !m.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!("it ended {status} (cancelled, or failed without a reason)")
            }),
    }
}

/// Waits for an import-image task to complete with an AMI; returns the AMI id.
pub async fn wait_import_task(
    ec2: &dyn Ec2Api,
    task_id: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(&ImportImageTask) + Send),
) -> Result<String, Ec2WaitError> {
    let ids = [task_id.to_string()];
    let mut absent = Absence::new(schedule);
    let region = ec2.region().to_string();
    poll_until(
        &format!("import task {task_id}"),
        schedule,
        cancel,
        || ec2.describe_import_image_tasks(&ids),
        |tasks: Vec<ImportImageTask>| {
            let Some(t) = tasks.into_iter().find(|t| t.task_id == task_id) else {
                return if absent.tolerate() {
                    Ok(None)
                } else {
                    Err(Ec2WaitError::TaskGone {
                        kind: "import",
                        task_id: task_id.into(),
                        region: region.clone(),
                    })
                };
            };
            absent.missing = 0;
            on_progress(&t);
            match (t.status.as_str(), t.image_id.as_deref()) {
                ("completed", Some(id)) if !id.is_empty() => Ok(Some(id.to_string())),
                ("deleting" | "deleted", _) => Err(failed(
                    "import",
                    task_id,
                    &t.status,
                    t.status_message.as_deref(),
                )),
                _ => Ok(None),
            }
        },
    )
    .await
}

/// Waits for an AMI to become `available`.
pub async fn wait_image_available(
    ec2: &dyn Ec2Api,
    image_id: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(&Ec2Image) + Send),
) -> Result<Ec2Image, Ec2WaitError> {
    let ids = [image_id.to_string()];
    let mut absent = Absence::new(schedule);
    let region = ec2.region().to_string();
    poll_until(
        &format!("image {image_id}"),
        schedule,
        cancel,
        || ec2.describe_images(&ids),
        |images: Vec<Ec2Image>| {
            let Some(img) = images.into_iter().find(|i| i.image_id == image_id) else {
                return if absent.tolerate() {
                    Ok(None)
                } else {
                    Err(Ec2WaitError::ImageGone {
                        image_id: image_id.into(),
                        region: region.clone(),
                    })
                };
            };
            absent.missing = 0;
            on_progress(&img);
            match img.state.as_str() {
                "available" => Ok(Some(img)),
                "failed" | "error" | "invalid" | "deregistered" => Err(Ec2WaitError::ImageFailed {
                    image_id: image_id.into(),
                    state: img.state.clone(),
                }),
                _ => Ok(None),
            }
        },
    )
    .await
}

#[cfg(test)]
#[path = "wait/tests.rs"]
mod tests;
