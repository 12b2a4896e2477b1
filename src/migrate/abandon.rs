//! Ending a migration for good (`ossrelay migrate … --abandon`, a daemon cancel): what a
//! stopped run leaves behind is undone, so nothing keeps running or costing that nobody will
//! resume.
//!
//! Ctrl-C only *interrupts*: the state is kept and the next run resumes, so the export or
//! import task keeps running in the cloud meanwhile. Abandoning is the other choice: the
//! running export or import task is cancelled with the cloud's own call (ECS `CancelTask`,
//! EC2 `CancelExportTask` / `CancelImportTask`), a half-sent relay upload is aborted, the
//! intermediate objects are deleted (unless `--keep-objects`), and the state file goes. A
//! finished image is never deleted: that is the user's to keep or deregister.

use std::path::Path;

use super::*;

/// What [`abandon`] did, in words for the user (one line each).
pub type AbandonReport = Vec<String>;

/// Ends the migration `cfg.key` for good; see the module docs. Takes the state file's lock, so
/// it never undoes the work of a run that is still going.
pub async fn abandon(cfg: &MigrateConfig, b: &Backends) -> Result<AbandonReport, MigrateError> {
    let path = state::state_path(&cfg.state_dir, &cfg.key);
    let _lock = lock_path(&path)?;
    let Some(st) = state::load(&path, &cfg.key)? else {
        return Ok(vec![format!(
            "no state for this migration in {}: nothing to undo",
            cfg.state_dir.display()
        )]);
    };
    let mut done = Vec::new();
    if matches!(st.stage, Stage::Export | Stage::WaitExport) {
        if let Some(task) = &st.export_task_id {
            cancel_task(&b.src, TaskKind::Export, task, &mut done).await?;
        }
    }
    if matches!(st.stage, Stage::Import | Stage::WaitImport) {
        if let Some(task) = &st.import_task_id {
            cancel_task(&b.dst, TaskKind::Import, task, &mut done).await?;
        }
    }
    for d in &st.disks {
        abort_relay_upload(&cfg.copy.state_dir, b, d, &mut done).await?;
    }
    if !cfg.keep_objects {
        for d in &st.disks {
            for (store, key) in [
                (&b.src_store, &d.source_key),
                (&b.dst_store, &d.destination_key),
            ] {
                match store.delete(key).await {
                    Ok(()) => done.push(format!("deleted {}", store.describe(key))),
                    Err(e) if e.class == ErrorClass::NotFound => {}
                    Err(source) => {
                        return Err(MigrateError::Store {
                            object: store.describe(key),
                            source,
                        })
                    }
                }
            }
        }
    }
    if let Some(img) = &st.new_image_id {
        if st.stage == Stage::Cleanup || st.stage == Stage::Done {
            done.push(format!(
                "kept the new image {img} (it was already imported)"
            ));
        }
    }
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(MigrateError::State(format!(
                "cannot remove {}: {e}",
                path.display()
            )));
        }
    }
    done.push(format!("removed the state {}", path.display()));
    Ok(done)
}

/// Which task [`cancel_task`] stops.
#[derive(Clone, Copy)]
enum TaskKind {
    Export,
    Import,
}

/// Cancels an export or import task with the cloud's own call; one already over is not an
/// error (there is nothing to stop).
async fn cancel_task(
    api: &ImageApi,
    kind: TaskKind,
    task: &str,
    done: &mut AbandonReport,
) -> Result<(), MigrateError> {
    let what = match kind {
        TaskKind::Export => "export",
        TaskKind::Import => "import",
    };
    match api {
        ImageApi::Aliyun(ecs) => match ecs.cancel_task(task).await {
            Ok(()) => done.push(format!("cancelled the ECS {what} task {task}")),
            Err(e) if finished_task_code(e.code()) => {}
            Err(source) => {
                return Err(MigrateError::Api {
                    step: "CancelTask",
                    source,
                })
            }
        },
        ImageApi::Aws(ec2) => {
            let (step, result) = match kind {
                TaskKind::Export => ("CancelExportTask", ec2.cancel_export_task(task).await),
                TaskKind::Import => (
                    "CancelImportTask",
                    ec2.cancel_import_task(task, "ossrelay migrate --abandon")
                        .await,
                ),
            };
            match result {
                Ok(()) => done.push(format!("cancelled the EC2 {what} task {task}")),
                Err(e) if finished_aws_task(&e) => {}
                Err(source) => {
                    return Err(MigrateError::Aws {
                        step,
                        source: Box::new(source),
                    })
                }
            }
        }
    }
    Ok(())
}

/// ECS codes for a task that is no longer running.
fn finished_task_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("InvalidTaskId.NotFound" | "InvalidTaskId.IncorrectTaskStatus")
    )
}

/// EC2 answers for a task that is no longer running (completed, deleted, unknown).
fn finished_aws_task(e: &crate::aws::query::AwsQueryError) -> bool {
    matches!(
        e.code(),
        Some(
            "InvalidExportTaskID.NotFound" | "InvalidConversionTaskId.NotFound" | "IncorrectState"
        )
    )
}

/// Aborts the multipart upload a half-relayed disk left, found through the relay's own state
/// file in `dir` (the one whose destination is this disk's object).
async fn abort_relay_upload(
    dir: &Option<std::path::PathBuf>,
    b: &Backends,
    d: &DiskState,
    done: &mut AbandonReport,
) -> Result<(), MigrateError> {
    let Some(dir) = dir.as_deref() else {
        return Ok(());
    };
    let want = b.dst_store.describe(&d.destination_key);
    for path in copy_states(dir) {
        let Ok(Some(st)) = crate::transfer::state::load(&path) else {
            continue;
        };
        if st.destination != want {
            continue;
        }
        // A run still sending to it holds this lock: never abort under it.
        let _lock =
            crate::transfer::state::lock(&path).map_err(|e| MigrateError::State(e.to_string()))?;
        match b.dst_store.abort(&d.destination_key, &st.upload_id).await {
            Ok(()) => done.push(format!("aborted the upload {} to {want}", st.upload_id)),
            Err(e) if e.class == ErrorClass::NotFound => {}
            Err(source) => {
                return Err(MigrateError::Store {
                    object: want,
                    source,
                })
            }
        }
        crate::transfer::state::remove(&path);
    }
    Ok(())
}

fn copy_states(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("copy-") && n.ends_with(".json"))
        })
        .collect()
}
