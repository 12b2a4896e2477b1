use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::aws::ec2::{ExportImageInput, ImportImageInput};

type Answer<T> = Result<Vec<T>, AwsQueryError>;

/// An `Ec2Api` that plays scripted answers; the last one repeats.
#[derive(Default)]
struct Scripted {
    exports: Mutex<VecDeque<Answer<ExportImageTask>>>,
    imports: Mutex<VecDeque<Answer<ImportImageTask>>>,
    images: Mutex<VecDeque<Answer<Ec2Image>>>,
    polls: Mutex<u32>,
}

fn next<T: Clone>(q: &Mutex<VecDeque<Answer<T>>>) -> Answer<T> {
    let mut q = q.lock().unwrap();
    if q.len() > 1 {
        q.pop_front().unwrap()
    } else {
        q.front().cloned().expect("a scripted answer")
    }
}

#[async_trait]
impl Ec2Api for Scripted {
    fn region(&self) -> &str {
        "eu-west-1"
    }
    async fn describe_images(&self, _ids: &[String]) -> Result<Vec<Ec2Image>, AwsQueryError> {
        *self.polls.lock().unwrap() += 1;
        next(&self.images)
    }
    async fn export_image(&self, _i: &ExportImageInput) -> Result<ExportImageTask, AwsQueryError> {
        unreachable!()
    }
    async fn describe_export_image_tasks(
        &self,
        ids: &[String],
    ) -> Result<Vec<ExportImageTask>, AwsQueryError> {
        assert_eq!(ids.len(), 1, "the waiter asks for its one task");
        *self.polls.lock().unwrap() += 1;
        next(&self.exports)
    }
    async fn cancel_export_task(&self, _t: &str) -> Result<(), AwsQueryError> {
        unreachable!()
    }
    async fn import_image(&self, _i: &ImportImageInput) -> Result<ImportImageTask, AwsQueryError> {
        unreachable!()
    }
    async fn describe_import_image_tasks(
        &self,
        _ids: &[String],
    ) -> Result<Vec<ImportImageTask>, AwsQueryError> {
        *self.polls.lock().unwrap() += 1;
        next(&self.imports)
    }
    async fn cancel_import_task(&self, _t: &str, _r: &str) -> Result<(), AwsQueryError> {
        unreachable!()
    }
}

fn fast() -> PollSchedule {
    PollSchedule {
        initial: Duration::from_millis(1),
        factor: 1.0,
        max: Duration::from_millis(1),
        timeout: Duration::from_secs(10),
        max_consecutive_errors: 3,
    }
}

fn export(status: &str, msg: Option<&str>, progress: Option<u32>) -> Answer<ExportImageTask> {
    Ok(vec![ExportImageTask {
        task_id: "export-ami-1".into(),
        status: status.into(),
        status_message: msg.map(str::to_string),
        progress,
        ..Default::default()
    }])
}

fn import(status: &str, msg: Option<&str>, image: Option<&str>) -> Answer<ImportImageTask> {
    Ok(vec![ImportImageTask {
        task_id: "import-ami-1".into(),
        status: status.into(),
        status_message: msg.map(str::to_string),
        image_id: image.map(str::to_string),
        ..Default::default()
    }])
}

fn err(status: u16, code: &str) -> AwsQueryError {
    AwsQueryError::Service {
        service: "ec2",
        action: "Describe".into(),
        status,
        code: code.into(),
        message: "m".into(),
        request_id: "r".into(),
    }
}

#[tokio::test]
async fn export_completes_through_progress_and_throttling() {
    let f = Scripted::default();
    f.exports.lock().unwrap().extend([
        export("active", Some("validating"), Some(0)),
        Err(err(503, "RequestLimitExceeded")),
        export("active", Some("converting"), Some(40)),
        export("completed", None, None),
    ]);
    let mut seen = Vec::new();
    let t = wait_export_task(
        &f,
        "export-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |t| seen.push(t.progress),
    )
    .await
    .unwrap();
    assert_eq!(t.status, "completed");
    assert_eq!(seen, [Some(0), Some(40), None]);
}

#[tokio::test]
async fn export_deleted_reports_the_status_message() {
    let f = Scripted::default();
    f.exports.lock().unwrap().extend([
        export("active", Some("validating"), Some(0)),
        export("deleted", Some("ClientError: The service role vmimport provided does not exist or does not have sufficient permissions"), None),
    ]);
    let e = wait_export_task(
        &f,
        "export-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("export task export-ami-1 failed: ClientError: The service role vmimport"),
        "{msg}"
    );
    assert!(msg.contains("--fix"), "{msg}");
    let f = Scripted::default();
    f.exports
        .lock()
        .unwrap()
        .push_back(export("deleting", None, None));
    let msg = wait_export_task(
        &f,
        "export-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(msg.contains("ended deleting"), "{msg}");
}

#[tokio::test]
async fn import_waits_past_preparing_ami_for_an_image_id() {
    let f = Scripted::default();
    f.imports.lock().unwrap().extend([
        import("active", Some("pending"), None),
        import("active", Some("preparing ami"), None),
        // Completed but no ImageId yet: still not done.
        import("completed", None, None),
        import("completed", None, Some("ami-0abc")),
    ]);
    let id = wait_import_task(
        &f,
        "import-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(id, "ami-0abc");
    assert_eq!(*f.polls.lock().unwrap(), 4);
}

#[tokio::test]
async fn import_failure_and_final_errors() {
    let f = Scripted::default();
    f.imports.lock().unwrap().push_back(import(
        "deleted",
        Some("ClientError: Footers not identical"),
        None,
    ));
    let msg = wait_import_task(
        &f,
        "import-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        msg.starts_with("import task import-ami-1 failed: ClientError: Footers not identical"),
        "{msg}"
    );

    // A final error (not throttling, not 5xx) ends the wait at once.
    let f = Scripted::default();
    f.imports
        .lock()
        .unwrap()
        .push_back(Err(err(401, "AuthFailure")));
    let e = wait_import_task(
        &f,
        "import-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Ec2WaitError::Query(ref q) if q.is_code("AuthFailure")),
        "{e}"
    );
    assert_eq!(*f.polls.lock().unwrap(), 1);

    // Retryable errors are tolerated only max_consecutive_errors times in a row.
    let f = Scripted::default();
    f.imports
        .lock()
        .unwrap()
        .push_back(Err(err(500, "InternalError")));
    let e = wait_import_task(
        &f,
        "import-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Ec2WaitError::Query(_)), "{e}");
    assert_eq!(*f.polls.lock().unwrap(), 4);
}

#[tokio::test]
async fn missing_task_and_image_end_as_gone() {
    let f = Scripted::default();
    f.exports.lock().unwrap().push_back(Ok(vec![]));
    let e = wait_export_task(
        &f,
        "export-ami-1",
        &fast(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("not in region eu-west-1"), "{e}");
    assert_eq!(*f.polls.lock().unwrap(), 4);

    let f = Scripted::default();
    f.images.lock().unwrap().extend([
        Ok(vec![]),
        Ok(vec![Ec2Image {
            image_id: "ami-1".into(),
            state: "pending".into(),
            ..Default::default()
        }]),
        Ok(vec![Ec2Image {
            image_id: "ami-1".into(),
            state: "available".into(),
            ..Default::default()
        }]),
    ]);
    let img = wait_image_available(&f, "ami-1", &fast(), &CancellationToken::new(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(img.state, "available");

    let f = Scripted::default();
    f.images.lock().unwrap().push_back(Ok(vec![Ec2Image {
        image_id: "ami-1".into(),
        state: "failed".into(),
        ..Default::default()
    }]));
    let e = wait_image_available(&f, "ami-1", &fast(), &CancellationToken::new(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, Ec2WaitError::ImageFailed { .. }), "{e}");
}

#[tokio::test]
async fn cancellation_and_timeout() {
    let f = Scripted::default();
    f.exports
        .lock()
        .unwrap()
        .push_back(export("active", Some("converting"), Some(5)));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let e = wait_export_task(&f, "export-ami-1", &fast(), &cancel, &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, Ec2WaitError::Interrupted { .. }), "{e}");

    let schedule = PollSchedule {
        timeout: Duration::from_millis(30),
        ..fast()
    };
    let e = wait_export_task(
        &f,
        "export-ami-1",
        &schedule,
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Ec2WaitError::Timeout { .. }), "{e}");
}
