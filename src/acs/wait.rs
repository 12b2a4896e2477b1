//! Waiting for ECS tasks and images: a polling schedule that backs off to ~15 s with jitter,
//! an overall timeout (real exports of TB images take hours), cancellation, and failure
//! reports that carry the task's error code plus a hint about what to do.

use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::ecs::{DescribeImagesInput, EcsApi, Image, TaskAttribute, TaskStatus};
use super::rpc::RpcError;

/// When to poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Polls that may fail in a row with retryable errors before the wait fails.
    pub max_consecutive_errors: u32,
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(3),
            factor: 1.5,
            max: Duration::from_secs(15),
            timeout: Duration::from_secs(12 * 3600),
            max_consecutive_errors: 20,
        }
    }
}

impl PollSchedule {
    /// The delay after `current`, grown by `factor`, capped at `max`.
    pub fn next(&self, current: Duration) -> Duration {
        current.mul_f64(self.factor).min(self.max)
    }

    /// `d` ±10 %, so many waiters do not poll in lockstep.
    pub fn jitter(d: Duration) -> Duration {
        d.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
    }
}

/// Why a wait ended without success.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("task {task_id} ended {status}{}{}", fmt_code(.code, .message), fmt_hint(.code))]
    TaskFailed {
        task_id: String,
        status: String,
        code: String,
        message: String,
    },
    #[error("image {image_id} ended {status}; the import failed (check the disk objects' format and size, then retry)")]
    ImageFailed { image_id: String, status: String },
    #[error("image {image_id} is not in region {region} (not found with any status)")]
    ImageGone { image_id: String, region: String },
    #[error("gave up waiting for {what} after {after:?} (raise --timeout; the task keeps running and a rerun picks it up)")]
    Timeout { what: String, after: Duration },
    #[error("interrupted while waiting for {what}")]
    Interrupted { what: String },
}

fn fmt_code(code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(": {code}"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(": {code}: {message}"),
    }
}

fn fmt_hint(code: &str) -> String {
    hint_for(code)
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default()
}

/// What a user can do about an ECS / RAM error code, when we know.
/// `" (hint: …)"` for an error code with a known remedy, else an empty string: the suffix every
/// user-facing ECS error message carries.
pub fn hint_suffix(code: Option<&str>) -> String {
    code.and_then(hint_for)
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default()
}

pub fn hint_for(code: &str) -> Option<&'static str> {
    Some(match code {
        "NoSetRoletoECSServiceAcount" | "NoSetRoletoECSServiceAccount" | "InvalidOSS.NotAuthorized" => {
            "the ECS service role is missing or lacks its policy: run `ossrelay preflight --fix`"
        }
        "ImageIsExporting" => "an export of this image is already running; wait for it or cancel its task",
        "ImageIsImporting" => "an import with this image is already running",
        "InvalidOSSBucket.NotFound" | "InvalidOSSBucket.NotMatched" => {
            "the bucket must exist in the same region as the image (check with `ossrelay preflight --bucket`)"
        }
        "InvalidOSSObject.NotFound" => "the disk object is not in the bucket of this region",
        "InvalidImageName.Duplicated" => "an image with this name exists; pass another --image-name",
        "UnsupportedSuffix.OSSObject" => "import the unpacked .raw object, not the exported .raw.tar.gz",
        "InvalidImageFormat.RegionNotSupported" => "this region exports RAW only; omit --format",
        "QuotaExceed.Image" => "the custom image quota of the region is used up; delete unused images",
        "IncorrectImageStatus" => "the image must be Available",
        "InvalidImageId.NotFound" => "the image id is not in this region or account (check --region and the profile)",
        "Forbidden.RAM" | "NoPermission" | "Forbidden" => {
            "the caller lacks a RAM permission for this action; grant it or use another profile"
        }
        "InvalidImage.DiskAmountOrSize" => {
            "export supports at most 4 data disks of 500 GiB each; use CopyImage + sharing instead"
        }
        "ImageNotSupported" => "marketplace-derived or encrypted images cannot be exported",
        "InvalidOSSObject.Size" => "the disk object is empty",
        _ => return None,
    })
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = cancel.cancelled() => false,
    }
}

/// Fetches until `check` says the value is final (`Ok(true)`) or fails. Retryable RPC errors
/// are tolerated (up to `max_consecutive_errors` in a row) because a wait spans hours.
async fn poll_until<T, F, Fut, C>(
    what: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    mut fetch: F,
    mut check: C,
) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RpcError>>,
    C: FnMut(&T) -> Result<bool, WaitError>,
{
    let started = Instant::now();
    let mut delay = schedule.initial;
    let mut errors = 0u32;
    loop {
        if cancel.is_cancelled() {
            return Err(WaitError::Interrupted { what: what.into() });
        }
        let fetched = tokio::select! {
            r = fetch() => r,
            _ = cancel.cancelled() => return Err(WaitError::Interrupted { what: what.into() }),
        };
        match fetched {
            Ok(v) => {
                errors = 0;
                if check(&v)? {
                    return Ok(v);
                }
            }
            Err(e) if e.is_retryable() && errors < schedule.max_consecutive_errors => {
                errors += 1;
                tracing::warn!(error = %e, errors, "polling {what} failed; will poll again");
            }
            Err(e) => return Err(e.into()),
        }
        if started.elapsed() >= schedule.timeout {
            return Err(WaitError::Timeout {
                what: what.into(),
                after: schedule.timeout,
            });
        }
        let left = schedule.timeout.saturating_sub(started.elapsed());
        if !sleep_or_cancel(PollSchedule::jitter(delay).min(left), cancel).await {
            return Err(WaitError::Interrupted { what: what.into() });
        }
        delay = schedule.next(delay);
    }
}

/// Waits for a task to finish; `on_progress` sees every answer. `Failed` or any unknown
/// terminal state is an error carrying the operation's error code and message.
pub async fn wait_task(
    ecs: &dyn EcsApi,
    task_id: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(&TaskAttribute) + Send),
) -> Result<TaskAttribute, WaitError> {
    poll_until(
        &format!("task {task_id}"),
        schedule,
        cancel,
        || ecs.describe_task_attribute(task_id),
        |t: &TaskAttribute| {
            on_progress(t);
            match &t.task_status {
                TaskStatus::Finished => Ok(true),
                TaskStatus::Waiting | TaskStatus::Processing => Ok(false),
                other => {
                    let (code, message) = t.failure().unwrap_or_default();
                    Err(WaitError::TaskFailed {
                        task_id: task_id.to_string(),
                        status: other.as_str().to_string(),
                        code,
                        message,
                    })
                }
            }
        },
    )
    .await
}

/// Waits for an imported image to become `Available` (DescribeImages with every status, since
/// the default filter hides images that are still being created).
pub async fn wait_image(
    ecs: &dyn EcsApi,
    image_id: &str,
    schedule: &PollSchedule,
    cancel: &CancellationToken,
    on_progress: &mut (dyn FnMut(&Image) + Send),
) -> Result<Image, WaitError> {
    let query = DescribeImagesInput::by_id(image_id);
    let region = ecs.region().to_string();
    // A just-created image may not be listed yet: only repeated absence means it is gone.
    let mut missing = 0u32;
    let list = poll_until(
        &format!("image {image_id}"),
        schedule,
        cancel,
        || ecs.describe_images(&query),
        |list| {
            let Some(img) = list.images.iter().find(|i| i.image_id == image_id) else {
                missing += 1;
                if missing <= schedule.max_consecutive_errors {
                    return Ok(false);
                }
                return Err(WaitError::ImageGone {
                    image_id: image_id.to_string(),
                    region: region.clone(),
                });
            };
            missing = 0;
            on_progress(img);
            match img.status.as_str() {
                "Available" => Ok(true),
                "Creating" | "Waiting" => Ok(false),
                other => Err(WaitError::ImageFailed {
                    image_id: image_id.to_string(),
                    status: other.to_string(),
                }),
            }
        },
    )
    .await?;
    Ok(list
        .images
        .into_iter()
        .find(|i| i.image_id == image_id)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::ecs::{
        DescribeTasksInput, ExportImageInput, ImageList, ImportImageInput, OperationProgress,
        TaskList, TaskStarted,
    };
    use crate::acs::rpc::ApiError;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Answers DescribeTaskAttribute / DescribeImages from a script, one entry per poll.
    struct Scripted {
        tasks: Mutex<Vec<Result<TaskAttribute, RpcError>>>,
        images: Mutex<Vec<ImageList>>,
    }

    fn err(code: &str, status: u16) -> RpcError {
        RpcError::Api(Box::new(ApiError {
            action: "DescribeTaskAttribute".into(),
            status,
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
            host_id: None,
            recommend: None,
            retry_after: None,
        }))
    }

    fn task(status: TaskStatus, pct: &str) -> TaskAttribute {
        TaskAttribute {
            task_id: "t-1".into(),
            task_status: status,
            task_process: pct.into(),
            ..TaskAttribute::default()
        }
    }

    #[async_trait]
    impl EcsApi for Scripted {
        fn region(&self) -> &str {
            "r1"
        }
        async fn export_image(&self, _: &ExportImageInput) -> Result<TaskStarted, RpcError> {
            unreachable!("not polled")
        }
        async fn describe_task_attribute(&self, _: &str) -> Result<TaskAttribute, RpcError> {
            let mut g = self.tasks.lock().unwrap();
            if g.len() > 1 {
                g.remove(0)
            } else {
                g[0].clone()
            }
        }
        async fn describe_tasks(&self, _: &DescribeTasksInput) -> Result<TaskList, RpcError> {
            unreachable!("not polled")
        }
        async fn cancel_task(&self, _: &str) -> Result<(), RpcError> {
            unreachable!("not polled")
        }
        async fn import_image(&self, _: &ImportImageInput) -> Result<TaskStarted, RpcError> {
            unreachable!("not polled")
        }
        async fn describe_images(&self, q: &DescribeImagesInput) -> Result<ImageList, RpcError> {
            // Without every status an importing image would be invisible.
            assert_eq!(
                q.status.as_deref(),
                Some(crate::acs::ecs::ALL_IMAGE_STATUSES)
            );
            let mut g = self.images.lock().unwrap();
            Ok(if g.len() > 1 {
                g.remove(0)
            } else {
                g[0].clone()
            })
        }
    }

    fn fast() -> PollSchedule {
        PollSchedule {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            timeout: Duration::from_secs(5),
            max_consecutive_errors: 2,
            ..PollSchedule::default()
        }
    }

    #[test]
    fn schedule_backs_off_to_the_cap() {
        let s = PollSchedule::default();
        let mut d = s.initial;
        let mut seen = vec![d];
        for _ in 0..10 {
            d = s.next(d);
            seen.push(d);
        }
        assert!(seen.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(15));
        for _ in 0..20 {
            let j = PollSchedule::jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(9) && j <= Duration::from_secs(11));
        }
    }

    #[tokio::test]
    async fn task_progress_transient_errors_and_finish() {
        let ecs = Scripted {
            tasks: Mutex::new(vec![
                Ok(task(TaskStatus::Waiting, "")),
                Err(err("Throttling.User", 400)),
                Ok(task(TaskStatus::Processing, "40%")),
                Err(err("ServiceUnavailable", 503)),
                Ok(task(TaskStatus::Finished, "100%")),
            ]),
            images: Mutex::new(vec![]),
        };
        let mut seen = Vec::new();
        let mut cb = |t: &TaskAttribute| seen.push(t.percent());
        let t = wait_task(&ecs, "t-1", &fast(), &CancellationToken::new(), &mut cb)
            .await
            .unwrap();
        assert_eq!(t.task_status, TaskStatus::Finished);
        assert_eq!(seen, [None, Some(40.0), Some(100.0)]);
    }

    #[tokio::test]
    async fn failed_task_carries_code_and_hint() {
        let mut failed = task(TaskStatus::Failed, "10%");
        failed.operation_progress_set = vec![OperationProgress {
            operation_status: "Failed".into(),
            error_code: "InvalidOSSBucket.NotFound".into(),
            error_msg: "The bucket does not exist in this region.".into(),
            ..OperationProgress::default()
        }];
        let ecs = Scripted {
            tasks: Mutex::new(vec![Ok(failed)]),
            images: Mutex::new(vec![]),
        };
        let e = wait_task(&ecs, "t-1", &fast(), &CancellationToken::new(), &mut |_| {})
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(
                "task t-1 ended Failed: InvalidOSSBucket.NotFound: The bucket does not exist"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("hint: the bucket must exist in the same region"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn persistent_errors_timeout_and_cancel_end_the_wait() {
        let ecs = Scripted {
            tasks: Mutex::new(vec![Err(err("InternalError", 500))]),
            images: Mutex::new(vec![]),
        };
        let e = wait_task(&ecs, "t-1", &fast(), &CancellationToken::new(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::Rpc(_)), "{e}");
        let ecs = Scripted {
            tasks: Mutex::new(vec![Err(err("InvalidTaskId.NotFound", 400))]),
            images: Mutex::new(vec![]),
        };
        let e = wait_task(&ecs, "t-1", &fast(), &CancellationToken::new(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::Rpc(_)), "not retried: {e}");

        let ecs = Scripted {
            tasks: Mutex::new(vec![Ok(task(TaskStatus::Processing, "1%"))]),
            images: Mutex::new(vec![]),
        };
        let mut s = fast();
        s.timeout = Duration::from_millis(30);
        let e = wait_task(&ecs, "t-1", &s, &CancellationToken::new(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("--timeout"));

        let cancel = CancellationToken::new();
        cancel.cancel();
        let e = wait_task(&ecs, "t-1", &fast(), &cancel, &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::Interrupted { .. }), "{e}");
    }

    fn images(status: &str) -> ImageList {
        ImageList {
            images: vec![Image {
                image_id: "m-1".into(),
                status: status.into(),
                progress: "50%".into(),
                ..Image::default()
            }],
            ..ImageList::default()
        }
    }

    #[tokio::test]
    async fn image_wait_outcomes() {
        let ecs = Scripted {
            tasks: Mutex::new(vec![]),
            images: Mutex::new(vec![
                images("Waiting"),
                images("Creating"),
                images("Available"),
            ]),
        };
        let mut n = 0;
        let img = wait_image(&ecs, "m-1", &fast(), &CancellationToken::new(), &mut |_| {
            n += 1
        })
        .await
        .unwrap();
        assert_eq!(img.status, "Available");
        assert_eq!(n, 3);

        let ecs = Scripted {
            tasks: Mutex::new(vec![]),
            images: Mutex::new(vec![images("CreateFailed")]),
        };
        let e = wait_image(&ecs, "m-1", &fast(), &CancellationToken::new(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::ImageFailed { .. }), "{e}");

        let ecs = Scripted {
            tasks: Mutex::new(vec![]),
            images: Mutex::new(vec![ImageList::default()]),
        };
        let e = wait_image(&ecs, "m-1", &fast(), &CancellationToken::new(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::ImageGone { .. }), "{e}");
    }
}
