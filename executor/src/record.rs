//! Task records: one JSON file per task in the executor's directory,
//! written atomically, read back when the daemon starts again.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use moat_orchestrator::{Assignment, Runtime, TaskReport, TaskState};
use serde::{Deserialize, Serialize};

use crate::ExecError;

/// The record format written by this version.
pub(crate) const FORMAT: u32 = 1;

/// A record larger than this is damaged: records are a few hundred bytes.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// What the executor remembers of one task across restarts. The task's
/// environment is not kept (it will carry secrets; adoption needs none),
/// only the names of its variables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// [`FORMAT`].
    pub(crate) format: u32,
    pub(crate) task_id: String,
    pub(crate) service_id: String,
    pub(crate) service_name: String,
    pub(crate) slot: u64,
    pub(crate) runtime: Runtime,
    /// Program (process) or image (docker).
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) args: Vec<String>,
    /// The names of the environment variables given (never the values).
    #[serde(default)]
    pub(crate) env_names: Vec<String>,
    pub(crate) stop_grace_ms: u64,
    /// The process (and process group) id, runtime `process`.
    #[serde(default)]
    pub(crate) pid: Option<i32>,
    /// Field 22 of `/proc/<pid>/stat` when it started: tells the task's
    /// process from a later one with the same pid.
    #[serde(default)]
    pub(crate) pid_start_time: Option<u64>,
    /// The container id, runtime `docker`.
    #[serde(default)]
    pub(crate) container_id: Option<String>,
    pub(crate) state: TaskState,
    /// Since when (Unix milliseconds).
    pub(crate) since: i64,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) exit_code: Option<i32>,
    /// When the executor first saw the task (Unix milliseconds).
    pub(crate) created_at: i64,
}

impl Record {
    /// A new record for an assignment, in state `Accepted`.
    pub(crate) fn new(a: &Assignment) -> Record {
        let now = now_ms();
        Record {
            format: FORMAT,
            task_id: a.task_id.clone(),
            service_id: a.service_id.clone(),
            service_name: a.service_name.clone(),
            slot: a.slot,
            runtime: a.spec.runtime,
            image: a.spec.image.clone(),
            args: a.spec.args.clone(),
            env_names: a.spec.env.keys().cloned().collect(),
            stop_grace_ms: a.spec.stop_grace_ms,
            pid: None,
            pid_start_time: None,
            container_id: None,
            state: TaskState::Accepted,
            since: now,
            message: "accepted".to_owned(),
            error: None,
            exit_code: None,
            created_at: now,
        }
    }

    /// Moves to `state` now.
    pub(crate) fn set(&mut self, state: TaskState, message: impl Into<String>) {
        self.state = state;
        self.since = now_ms();
        self.message = message.into();
    }

    /// Moves to a final state with an error.
    pub(crate) fn fail(&mut self, state: TaskState, error: impl Into<String>) {
        let error = error.into();
        self.set(state, error.clone());
        self.error = Some(error);
    }

    /// What the cluster is told.
    pub(crate) fn report(&self) -> TaskReport {
        TaskReport {
            task_id: self.task_id.clone(),
            state: self.state,
            since: self.since,
            message: self.message.clone(),
            error: self.error.clone(),
            runtime_id: match (self.pid, &self.container_id) {
                (Some(pid), _) => Some(pid.to_string()),
                (None, Some(id)) => Some(id.clone()),
                (None, None) => None,
            },
            exit_code: self.exit_code,
        }
    }
}

/// The clock, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `id` can name files in the task directory (and containers):
/// 1 to 128 ASCII letters, digits, `-` and `_`.
pub(crate) fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `<dir>/<task_id>.json`
pub(crate) fn record_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.json"))
}

/// `<dir>/<task_id>.log`
pub(crate) fn log_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.log"))
}

/// `<dir>/<task_id>.d`, the working directory of a process task.
pub(crate) fn work_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.d"))
}

/// Writes `rec` to its file atomically: a 0600 temporary file, fsync,
/// rename, fsync of the directory.
pub(crate) fn write(dir: &Path, rec: &Record) -> Result<(), ExecError> {
    let path = record_path(dir, &rec.task_id);
    let tmp = dir.join(format!("{}.json.tmp", rec.task_id));
    let err = |source: std::io::Error| ExecError::WriteRecord {
        path: path.clone(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(rec).map_err(|e| err(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, &path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Reads and checks one record file.
pub(crate) fn read(path: &Path) -> Result<Record, ExecError> {
    let damaged = |reason: String| ExecError::DamagedRecord {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|source| ExecError::ReadRecord {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ExecError::ReadRecord {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(damaged(format!("larger than {MAX_RECORD_BYTES} bytes")));
    }
    let rec: Record = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if rec.format != FORMAT {
        return Err(damaged(format!(
            "record format {} is not {FORMAT}, the one this version reads",
            rec.format
        )));
    }
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .unwrap_or_default();
    if !valid_task_id(&rec.task_id) || rec.task_id != stem {
        return Err(damaged(format!(
            "it names task {:?}, not the one of its file name",
            rec.task_id
        )));
    }
    if rec.pid.is_some_and(|p| p <= 1) {
        return Err(damaged("its pid is not a task's".to_owned()));
    }
    if rec.state < TaskState::Accepted {
        return Err(damaged(format!(
            "state {} is not one of a node's task",
            rec.state
        )));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_must_be_file_names() {
        assert!(valid_task_id("abcDEF0123456789_-"));
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a.json", "é"] {
            assert!(!valid_task_id(bad), "{bad:?}");
        }
        assert!(!valid_task_id(&"a".repeat(129)));
    }

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Assignment {
            task_id: "t1".into(),
            service_id: "s".into(),
            service_name: "web".into(),
            slot: 2,
            spec: moat_orchestrator::TaskSpec {
                env: [("K".to_owned(), "secret".to_owned())].into(),
                ..Default::default()
            },
            desired_state: TaskState::Running,
        };
        let rec = Record::new(&a);
        write(dir.path(), &rec).expect("write");
        let path = record_path(dir.path(), "t1");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("secret"));
        assert_eq!(read(&path).expect("read back"), rec);
        for bad in [
            text.replace("\"format\": 1", "\"format\": 2"),
            text.replace("\"task_id\": \"t1\"", "\"task_id\": \"t2\""),
            text.replace("\"state\": \"accepted\"", "\"state\": \"new\""),
            text.replace("\"pid\": null", "\"pid\": 1"),
            text[..text.len() / 2].to_owned(),
        ] {
            assert_ne!(bad, text);
            std::fs::write(&path, &bad).expect("write");
            let err = read(&path).expect_err("damaged");
            assert!(err.to_string().contains("t1.json"), "{err}");
        }
    }
}
