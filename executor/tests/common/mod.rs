//! Helpers shared by the executor's integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use moat_executor::{Executor, ExecutorConfig};
use moat_orchestrator::{Assignment, Runtime, TaskReport, TaskSpec, TaskState};

/// An executor on `dir` for node `node`.
pub(crate) async fn open(dir: &Path, node: &str) -> Executor {
    Executor::open(config(dir, node)).await.expect("open")
}

pub(crate) fn config(dir: &Path, node: &str) -> ExecutorConfig {
    ExecutorConfig {
        dir: dir.join("tasks"),
        node_id: node.to_owned(),
        docker_host: None,
        secrets_dir: Some(secrets_dir(dir)),
    }
}

/// A test's own secrets directory on /dev/shm (named after its temporary
/// directory, so tests running at once never share one).
pub(crate) fn secrets_dir(dir: &Path) -> std::path::PathBuf {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    Path::new("/dev/shm").join(format!("moat-executor-test-{name}"))
}

/// An assignment to run `image` with `args`.
pub(crate) fn assignment(
    task_id: &str,
    runtime: Runtime,
    image: &str,
    args: &[&str],
) -> Assignment {
    Assignment {
        task_id: task_id.to_owned(),
        service_id: "svc1".to_owned(),
        service_name: "web".to_owned(),
        slot: 1,
        spec: TaskSpec {
            runtime,
            image: image.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            stop_grace_ms: 1_000,
            secrets: Vec::new(),
            identity: None,
        },
        desired_state: TaskState::Running,
    }
}

/// A process task running `sh -c script`.
pub(crate) fn sh(task_id: &str, script: &str) -> Assignment {
    assignment(task_id, Runtime::Process, "/bin/sh", &["-c", script])
}

/// The task's report, if held.
pub(crate) fn report(exec: &Executor, task_id: &str) -> Option<TaskReport> {
    exec.reports().into_iter().find(|r| r.task_id == task_id)
}

/// Waits until the task's report passes `pred` (panics after `secs`).
pub(crate) async fn wait_for(
    exec: &Executor,
    task_id: &str,
    secs: u64,
    pred: impl Fn(&TaskReport) -> bool,
) -> TaskReport {
    let mut changes = exec.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(r) = report(exec, task_id)
            && pred(&r)
        {
            return r;
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            panic!(
                "task {task_id} did not get there within {secs} s: {:?}",
                exec.reports()
            );
        }
    }
}

/// Waits until the task is in `state`.
pub(crate) async fn wait_state(
    exec: &Executor,
    task_id: &str,
    state: TaskState,
    secs: u64,
) -> TaskReport {
    wait_for(exec, task_id, secs, |r| r.state == state).await
}

/// Waits until the task has ended.
pub(crate) async fn wait_ended(exec: &Executor, task_id: &str, secs: u64) -> TaskReport {
    wait_for(exec, task_id, secs, |r| r.state.is_terminal()).await
}

/// Polls `cond` every 50 ms for up to `secs`.
pub(crate) async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether process `pid` runs (exists and is not a zombie).
pub(crate) fn process_runs(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z') | Some('X')),
            None => false,
        },
        Err(_) => false,
    }
}

#[allow(unused_imports)] // not every test binary names tasks
pub(crate) use moat_testkit::unique;
