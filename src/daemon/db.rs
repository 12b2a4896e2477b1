//! The daemon's persistent job table: an embedded redb database in the state directory.
//!
//! Each job is one JSON document keyed by its id. Per-part progress is not here: it lives in
//! the engine's resume state file in the job's own subdirectory, written after every
//! acknowledged part, so a `kill -9` loses at most the parts that were in flight.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::jobs::Job;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// Why the job table could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("job database {}: {message}", .path.display())]
pub struct DbError {
    pub path: PathBuf,
    pub message: String,
}

/// The job table.
pub struct JobDb {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for JobDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobDb").field("path", &self.path).finish()
    }
}

impl JobDb {
    /// Opens (or creates) `jobs.redb` in `dir`, with mode 0600.
    pub fn open(dir: &Path) -> Result<Self, DbError> {
        let path = dir.join("jobs.redb");
        let err = |message: String| DbError {
            path: path.clone(),
            message,
        };
        if !path.exists() {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            // The file must exist with the right mode before redb writes anything to it.
            if let Err(e) = o.open(&path) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    return Err(err(format!("cannot create it: {e}")));
                }
            }
        }
        let db = Database::create(&path).map_err(|e| {
            err(format!(
                "cannot open it: {e} (is another `ossrelay serve` using this --state-dir?)"
            ))
        })?;
        let s = Self { db, path };
        // Create the table up front so readers never see "table does not exist".
        let tx = s.db.begin_write().map_err(|e| s.err(e))?;
        tx.open_table(JOBS).map_err(|e| s.err(e))?;
        tx.commit().map_err(|e| s.err(e))?;
        Ok(s)
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Inserts or replaces a job (durably committed when this returns).
    pub fn put(&self, job: &Job) -> Result<(), DbError> {
        let json = serde_json::to_vec(job).map_err(|e| self.err(e))?;
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(JOBS).map_err(|e| self.err(e))?;
            t.insert(job.id.as_str(), json.as_slice())
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Removes a job; a missing one is fine.
    pub fn delete(&self, id: &str) -> Result<(), DbError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(JOBS).map_err(|e| self.err(e))?;
            t.remove(id).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every stored job. A record that cannot be read (written by a newer version, say) is
    /// skipped with a warning rather than keeping the daemon from starting.
    pub fn load_all(&self) -> Result<Vec<Job>, DbError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(JOBS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            match serde_json::from_slice::<Job>(v.value()) {
                Ok(j) => out.push(j),
                Err(e) => {
                    tracing::warn!(job = k.value(), error = %e, "skipping unreadable job record")
                }
            }
        }
        out.sort_by_key(|j| j.seq);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::jobs::{CopySpec, JobSpec, JobState};

    fn job(id: &str, seq: u64) -> Job {
        Job {
            id: id.into(),
            seq,
            spec: JobSpec::Copy(CopySpec {
                source: "oss://abc/k".into(),
                destination: "oss://abd/k".into(),
                ..CopySpec::default()
            }),
            state: JobState::Queued,
            stage: "queued".into(),
            created_at: "t".into(),
            submitted_by: None,
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
        }
    }

    #[test]
    fn jobs_survive_reopening_in_submission_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = JobDb::open(dir.path()).unwrap();
            s.put(&job("j-b", 2)).unwrap();
            s.put(&job("j-a", 1)).unwrap();
            let mut j = job("j-c", 3);
            s.put(&j).unwrap();
            j.state = JobState::Running;
            s.put(&j).unwrap();
            s.delete("j-b").unwrap();
        }
        let s = JobDb::open(dir.path()).unwrap();
        let all = s.load_all().unwrap();
        let ids: Vec<_> = all.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["j-a", "j-c"]);
        assert_eq!(all[1].state, JobState::Running);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("jobs.redb"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
