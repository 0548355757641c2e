//! The executor's errors.

use std::path::PathBuf;

/// What can go wrong in [`Executor::open`](crate::Executor::open) and
/// [`Executor::logs`](crate::Executor::logs). Task failures are not errors
/// here: they are task states in the reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The task directory could not be made.
    #[error(
        "cannot create the task directory {}: {source}; check that the daemon may write to its parent",
        path.display()
    )]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The task directory could not be listed.
    #[error("cannot read the task directory {}: {source}; check its permissions", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A task record could not be read.
    #[error("cannot read the task record {}: {source}; check its permissions", path.display())]
    ReadRecord {
        /// The record file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A task record is not one this executor wrote.
    #[error(
        "the task record {} is damaged: {reason}; move it out of the task directory (the task it describes may still run: look for its process or container) and start again",
        path.display()
    )]
    DamagedRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A task record could not be written.
    #[error(
        "cannot write the task record {}: {source}; check the free space and permissions of the task directory",
        path.display()
    )]
    WriteRecord {
        /// The record file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The executor holds no task with this id.
    #[error("no task {task_id} on this node: it was never assigned here or is already forgotten")]
    UnknownTask {
        /// The task asked for.
        task_id: String,
    },
    /// A process task's log could not be read.
    #[error("cannot read the log of task {task_id} ({}): {source}", path.display())]
    ReadLog {
        /// The task.
        task_id: String,
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The Docker Engine did not give a container task's logs.
    #[error(
        "cannot read the logs of task {task_id} from the Docker Engine: {message}; check that the engine runs (`docker info`)"
    )]
    DockerLogs {
        /// The task.
        task_id: String,
        /// What the engine (or the connection to it) said.
        message: String,
    },
}
