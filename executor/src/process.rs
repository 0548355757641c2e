//! Runtime `process`: a child process in its own process group.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use moat_orchestrator::{SecretKind, TaskSpec, TaskState};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::record::{self, Record};
use crate::{ExecError, Inner, closed, persist, stop_requested};

/// The `PATH` of a task when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often an adopted process (not our child) is looked at.
const POLL: Duration = Duration::from_millis(250);

/// How long a process group gets to vanish after SIGKILL before the stop
/// is reported anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The start time (field 22 of `/proc/<pid>/stat`, in clock ticks since
/// boot) and state (field 3) of a process, or `None` if there is none.
pub(crate) fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything,
    // spaces and parentheses too: the fields after it follow the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4 to 21 are 18 fields; field 22 is next.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

/// Whether the process `pid` that started at `start` still runs (a zombie
/// does not).
pub(crate) fn alive(pid: i32, start: Option<u64>) -> bool {
    match (proc_stat(pid), start) {
        (Some((now, state)), Some(start)) => now == start && state != 'Z' && state != 'X',
        _ => false,
    }
}

/// The process group leader whose environment names task `task_id`
/// (`MOAT_TASK_ID=<task_id>`), if any.
fn find_by_task_id(task_id: &str) -> Option<i32> {
    let needle = format!("MOAT_TASK_ID={task_id}");
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            continue;
        }
        // Only a group leader: the task's own process, not a descendant
        // that moved elsewhere.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(2))
            .and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(pid) {
            return Some(pid);
        }
    }
    None
}

/// Sends `signal` to the process group `pgid`, ignoring a group that is gone.
fn signal_group(pgid: i32, signal: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pgid), signal)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pgid, signal = %signal, error = %e, "cannot signal a task's process group");
    }
}

/// Describes how a child ended: (state, error, exit code). Killed by a
/// signal, the exit code is 128 + the signal's number, as Docker reports.
fn outcome(status: &ExitStatus) -> (TaskState, Option<String>, Option<i32>) {
    if let Some(code) = status.code() {
        if code == 0 {
            (TaskState::Complete, None, Some(0))
        } else {
            (
                TaskState::Failed,
                Some(format!("exit status {code}")),
                Some(code),
            )
        }
    } else if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| format!("signal {sig}"));
        (
            TaskState::Failed,
            Some(format!("killed by signal {name}")),
            Some(128 + sig),
        )
    } else {
        (TaskState::Failed, Some(format!("ended: {status}")), None)
    }
}

/// Makes the working directory, opens the log and spawns the program.
fn spawn(inner: &Inner, rec: &Record, spec: &TaskSpec) -> Result<Child, String> {
    let dir = &inner.config.dir;
    let work = record::work_path(dir, &rec.task_id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists && work.is_dir() {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| {
            format!(
                "cannot create the working directory {}: {e}",
                work.display()
            )
        })?;
    let log_path = record::log_path(dir, &rec.task_id);
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("cannot open the log file {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot open the log file {}: {e}", log_path.display()))?;
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut cmd = Command::new(&spec.image);
    cmd.args(&spec.args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &work)
        .envs(&spec.env)
        .env("MOAT_TASK_ID", &rec.task_id)
        .env("MOAT_SERVICE_NAME", &rec.service_name)
        .env("MOAT_TASK_SLOT", rec.slot.to_string());
    for (kind, var) in [
        (SecretKind::Secret, "MOAT_SECRETS_DIR"),
        (SecretKind::Config, "MOAT_CONFIGS_DIR"),
    ] {
        let identity = kind == SecretKind::Secret && spec.identity.is_some();
        if identity || spec.secrets.iter().any(|r| r.kind == kind) {
            cmd.env(var, inner.files_dir(&rec.task_id, kind));
        } else {
            cmd.env_remove(var);
        }
    }
    if spec.identity.is_some() {
        cmd.env(
            moat_workload::ENDPOINT_SOCKET_ENV,
            moat_workload::address(&inner.identity_socket(&rec.task_id)),
        );
    } else {
        cmd.env_remove(moat_workload::ENDPOINT_SOCKET_ENV);
    }
    cmd.current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .process_group(0);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.image))
}

/// Starts a task and watches it to its end.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut rec: Record,
    spec: TaskSpec,
    stop: watch::Receiver<bool>,
    material: crate::TaskMaterial,
) {
    if *stop.borrow() {
        rec.set(TaskState::Shutdown, "stopped before it started");
        finish(&inner, &rec).await;
        return;
    }
    rec.set(TaskState::Starting, "starting");
    // Recorded before the process exists: a daemon that stops now does
    // not start the task again, and the next open looks for the process.
    if let Err(e) = inner.commit(&rec).await {
        rec.fail(TaskState::Rejected, e.to_string());
        inner.show(&rec);
        return;
    }
    if let Err(error) = inner.write_files(&rec.task_id, material).await {
        tracing::warn!(task = %rec.task_id, %error, "task rejected");
        rec.fail(TaskState::Rejected, error);
        finish(&inner, &rec).await;
        return;
    }
    let mut child = match spawn(&inner, &rec, &spec) {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(task = %rec.task_id, %error, "task rejected");
            rec.fail(TaskState::Rejected, error);
            finish(&inner, &rec).await;
            return;
        }
    };
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        // Reaped already: it cannot have been watched; wait gives its status.
        let status = child.wait().await;
        rec.fail(
            TaskState::Failed,
            format!("ended at once ({status:?}) before it could be recorded"),
        );
        finish(&inner, &rec).await;
        return;
    };
    rec.pid = Some(pid);
    rec.pid_start_time = proc_stat(pid).map(|(start, _)| start);
    rec.set(TaskState::Running, "started");
    if let Err(e) = inner.commit(&rec).await {
        // Not recorded: it must not run unaccounted for.
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
        rec.fail(TaskState::Rejected, e.to_string());
        inner.show(&rec);
        return;
    }
    tracing::info!(task = %rec.task_id, pid, "task running");
    watch_child(inner, rec, child, pid, stop).await;
}

/// Watches our child `pid` (its process group's leader) until it ends or is
/// stopped.
async fn watch_child(
    inner: Arc<Inner>,
    mut rec: Record,
    mut child: Child,
    pid: i32,
    mut stop: watch::Receiver<bool>,
) {
    let mut life = inner.closed();
    tokio::select! {
        status = child.wait() => {
            // Whatever it left behind in its group goes too.
            signal_group(pid, Signal::SIGKILL);
            match status {
                Ok(status) => {
                    let (state, error, code) = outcome(&status);
                    match error {
                        Some(error) => rec.fail(state, error),
                        None => rec.set(state, "finished"),
                    }
                    rec.exit_code = code;
                }
                Err(e) => rec.fail(TaskState::Failed, format!("cannot wait for process {pid}: {e}")),
            }
        }
        () = stop_requested(&mut stop) => {
            signal_group(pid, Signal::SIGTERM);
            let grace = Duration::from_millis(rec.stop_grace_ms);
            let status = match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pid, Signal::SIGKILL);
                    child.wait().await
                }
            };
            signal_group(pid, Signal::SIGKILL);
            rec.set(TaskState::Shutdown, "stopped");
            rec.exit_code = status.ok().and_then(|s| outcome(&s).2);
        }
        () = closed(&mut life) => return,
    }
    tracing::info!(task = %rec.task_id, state = %rec.state, exit_code = ?rec.exit_code, "task ended");
    finish(&inner, &rec).await;
}

/// Records a final state and shows it (shown even if the record cannot be
/// written: the cluster must hear of it).
async fn finish(inner: &Inner, rec: &Record) {
    if let Err(e) = inner.commit(rec).await {
        tracing::error!(task = %rec.task_id, error = %e, "cannot record a task's final state");
        inner.show(rec);
    }
}

/// Takes over a process task from a record at open: watched if its process
/// still runs, else given its final state.
pub(crate) async fn adopt(inner: &Arc<Inner>, mut rec: Record) -> Result<(), ExecError> {
    match rec.pid {
        Some(pid) if alive(pid, rec.pid_start_time) => {
            tracing::info!(task = %rec.task_id, pid, "adopting a running task");
            rec.message = "running; adopted after a daemon restart".to_owned();
            let stop = inner.insert(rec.clone());
            tokio::spawn(watch_adopted(inner.clone(), rec, pid, stop));
            return Ok(());
        }
        Some(pid) => {
            tracing::info!(task = %rec.task_id, pid, "task ended while the daemon was down");
            rec.fail(
                TaskState::Failed,
                "exited while the daemon was down; status unknown",
            );
        }
        None => {
            // Stopped between spawning it and recording its pid: find it by
            // its environment, and end it.
            let task_id = rec.task_id.clone();
            let found = tokio::task::spawn_blocking(move || find_by_task_id(&task_id))
                .await
                .ok()
                .flatten();
            if let Some(pid) = found {
                tracing::warn!(task = %rec.task_id, pid, "killing a task process that was never recorded");
                signal_group(pid, Signal::SIGKILL);
            }
            rec.fail(
                TaskState::Failed,
                "the daemon stopped while starting it; status unknown",
            );
        }
    }
    persist(&inner.config.dir, &rec).await?;
    inner.insert(rec);
    Ok(())
}

/// Watches a process that is not our child (adopted): polls `/proc`.
async fn watch_adopted(
    inner: Arc<Inner>,
    mut rec: Record,
    pid: i32,
    mut stop: watch::Receiver<bool>,
) {
    let start = rec.pid_start_time;
    let mut life = inner.closed();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {
                if !alive(pid, start) {
                    // What is left of its group goes too.
                    signal_group(pid, Signal::SIGKILL);
                    rec.fail(
                        TaskState::Failed,
                        "exited; status unknown (adopted after a daemon restart, not a child of this daemon)",
                    );
                    break;
                }
            }
            () = stop_requested(&mut stop) => {
                // Only a group whose leader is still the task's.
                if alive(pid, start) {
                    signal_group(pid, Signal::SIGTERM);
                }
                let grace = tokio::time::Instant::now() + Duration::from_millis(rec.stop_grace_ms);
                while alive(pid, start) && tokio::time::Instant::now() < grace {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if alive(pid, start) {
                    signal_group(pid, Signal::SIGKILL);
                }
                let deadline = tokio::time::Instant::now() + KILL_WAIT;
                while alive(pid, start) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                rec.set(TaskState::Shutdown, "stopped");
                break;
            }
            () = closed(&mut life) => return,
        }
    }
    tracing::info!(task = %rec.task_id, state = %rec.state, "adopted task ended");
    finish(&inner, &rec).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_reads_as_alive() {
        let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let (start, state) = proc_stat(pid).expect("own stat");
        assert!(state != 'Z');
        assert!(alive(pid, Some(start)));
        assert!(!alive(pid, Some(start + 1)));
        assert!(!alive(pid, None));
        assert!(proc_stat(i32::MAX).is_none());
    }

    #[test]
    fn exit_statuses_map_to_states() {
        let (state, error, code) = outcome(&ExitStatus::from_raw(0));
        assert_eq!((state, error, code), (TaskState::Complete, None, Some(0)));
        let (state, error, code) = outcome(&ExitStatus::from_raw(3 << 8));
        assert_eq!(
            (state, error.as_deref(), code),
            (TaskState::Failed, Some("exit status 3"), Some(3))
        );
        let (state, error, code) = outcome(&ExitStatus::from_raw(9));
        assert_eq!(
            (state, error.as_deref(), code),
            (
                TaskState::Failed,
                Some("killed by signal SIGKILL"),
                Some(137)
            )
        );
    }
}
