//! Runtime `docker`, with the real Docker Engine. Skipped (with a line on
//! stderr) only when `/var/run/docker.sock` is absent, or when
//! `/bin/busybox` (Debian package `busybox-static`) is, since the test
//! image is made from it.

#![allow(clippy::print_stderr)] // the skip and timing notes

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use moat_executor::Executor;
use moat_orchestrator::{Assignment, Runtime, TaskState};
use moat_testkit::docker::{Containers, TestImage, labelled, test_image};

/// The test image, or `None` (with the reason on stderr) to skip.
fn image() -> Option<Arc<TestImage>> {
    if let Some(why) = moat_testkit::docker::unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    test_image()
}

/// `docker inspect -f <format> <id>`, `None` if there is no such container.
fn inspect(id: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--type", "container", "-f", format, id])
        .output()
        .expect("docker inspect");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn container(image: &TestImage, task_id: &str, script: &str) -> Assignment {
    assignment(task_id, Runtime::Docker, &image.tag, &["sh", "-c", script])
}

async fn wait_log(exec: &Executor, task_id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = exec.logs(task_id, None).await.expect("logs");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log of {task_id} never held {needle:?}: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_logs_and_stops() {
    let Some(image) = image() else { return };
    let node = unique("node");
    let _containers = Containers { node: node.clone() };
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), &node).await;
    let mut a = container(&image, "d1", "echo hello $FOO; sleep 30");
    a.spec.env.insert("FOO".into(), "world".into());
    exec.apply(std::slice::from_ref(&a)).await;
    let r = wait_state(&exec, "d1", TaskState::Running, 60).await;
    let id = r.runtime_id.expect("container id");
    assert_eq!(
        inspect(&id, "{{.State.Running}} {{.Name}}").as_deref(),
        Some("true /moat-web.1.d1")
    );
    let labels = inspect(
        &id,
        "{{index .Config.Labels \"moat.node\"}} {{index .Config.Labels \"moat.task.id\"}} {{index .Config.Labels \"moat.service.id\"}} {{index .Config.Labels \"moat.service.name\"}} {{index .Config.Labels \"moat.slot\"}}",
    );
    assert_eq!(labels, Some(format!("{node} d1 svc1 web 1")));
    let restart = inspect(&id, "{{.HostConfig.RestartPolicy.Name}}").expect("inspect");
    assert!(restart.is_empty() || restart == "no", "{restart}");
    wait_log(&exec, "d1", "hello world").await;
    let record = std::fs::read_to_string(dir.path().join("tasks/d1.json")).expect("record");
    assert!(record.contains(&id), "{record}");
    assert!(!record.contains("world"), "env value persisted: {record}");

    let mut stop = a.clone();
    stop.desired_state = TaskState::Shutdown;
    exec.apply(&[stop]).await;
    let r = wait_ended(&exec, "d1", 60).await;
    assert_eq!(r.state, TaskState::Shutdown, "{r:?}");
    assert_eq!(
        inspect(&id, "{{.Id}}"),
        None,
        "the container must be removed"
    );
    // Its logs were kept.
    wait_log(&exec, "d1", "hello world").await;
    exec.apply(&[]).await;
    assert!(eventually(10, || report(&exec, "d1").is_none()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_exit_code_fails_the_task() {
    let Some(image) = image() else { return };
    let node = unique("node");
    let _containers = Containers { node: node.clone() };
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), &node).await;
    let bad = container(&image, "d2", "echo bye; exit 3");
    let good = container(&image, "d3", "exit 0");
    exec.apply(&[bad, good]).await;
    let r = wait_ended(&exec, "d2", 60).await;
    assert_eq!(
        (r.state, r.exit_code),
        (TaskState::Failed, Some(3)),
        "{r:?}"
    );
    assert_eq!(r.error.as_deref(), Some("exit status 3"));
    let id = r.runtime_id.expect("container id");
    let r = wait_ended(&exec, "d3", 60).await;
    assert_eq!(
        (r.state, r.exit_code),
        (TaskState::Complete, Some(0)),
        "{r:?}"
    );
    // Kept until forgotten, for its logs.
    assert!(inspect(&id, "{{.Id}}").is_some());
    wait_log(&exec, "d2", "bye").await;
    // stop_all removes the containers of ended tasks too, keeping the logs.
    exec.stop_all().await;
    assert!(labelled(&node).is_empty());
    wait_log(&exec, "d2", "bye").await;
    assert_eq!(report(&exec, "d2").expect("held").state, TaskState::Failed);
    exec.apply(&[]).await;
    assert!(eventually(20, || exec.reports().is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_rejected() {
    let Some(_image) = image() else { return };
    let node = unique("node");
    let _containers = Containers { node: node.clone() };
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), &node).await;
    exec.apply(&[assignment(
        "d4",
        Runtime::Docker,
        "moat-nonexistent:latest",
        &[],
    )])
    .await;
    let r = wait_ended(&exec, "d4", 150).await;
    assert_eq!(r.state, TaskState::Rejected, "{r:?}");
    let error = r.error.expect("error");
    eprintln!("rejected: {error}");
    assert!(
        error.contains(
            "image moat-nonexistent:latest is not present on this node and could not be pulled"
        ),
        "{error}"
    );
    assert!(labelled(&node).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_is_adopted_after_a_restart() {
    let Some(image) = image() else { return };
    let node = unique("node");
    let _containers = Containers { node: node.clone() };
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), &node).await;
    let a = container(&image, "d5", "sleep 30");
    let b = container(&image, "d6", "sleep 1; exit 5");
    exec.apply(&[a.clone(), b.clone()]).await;
    let r = wait_state(&exec, "d5", TaskState::Running, 60).await;
    let id = r.runtime_id.clone().expect("container id");
    let r6 = wait_state(&exec, "d6", TaskState::Running, 60).await;
    drop(exec);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inspect(&id, "{{.State.Running}}").as_deref(), Some("true"));
    // d6 ends while no executor runs.
    let id6 = r6.runtime_id.expect("container id");
    let waited = Command::new("docker")
        .args(["wait", &id6])
        .output()
        .expect("docker wait");
    assert_eq!(String::from_utf8_lossy(&waited.stdout).trim(), "5");

    let exec = open(dir.path(), &node).await;
    let adopted = report(&exec, "d5").expect("adopted");
    assert_eq!(adopted.state, TaskState::Running, "{adopted:?}");
    assert_eq!(adopted.runtime_id, r.runtime_id);
    let ended = report(&exec, "d6").expect("held");
    assert_eq!(
        (ended.state, ended.exit_code),
        (TaskState::Failed, Some(5)),
        "{ended:?}"
    );
    exec.apply(std::slice::from_ref(&a)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        labelled(&node),
        vec![id.clone()],
        "nothing new starts; d6 is forgotten"
    );
    exec.apply(&[]).await;
    let r = wait_ended(&exec, "d5", 60).await;
    assert_eq!(r.state, TaskState::Shutdown, "{r:?}");
    assert_eq!(inspect(&id, "{{.Id}}"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_removes_leftover_containers() {
    let Some(image) = image() else { return };
    let node = unique("node");
    let _containers = Containers { node: node.clone() };
    let out = Command::new("docker")
        .args(["run", "-d", "--label"])
        .arg(format!("moat.node={node}"))
        .args([&image.tag, "sleep", "30"])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(labelled(&node), vec![id.clone()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), &node).await;
    assert!(
        labelled(&node).is_empty(),
        "the leftover container must be gone"
    );
    assert!(exec.reports().is_empty());
}
