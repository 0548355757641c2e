//! Runtime `process`, with real processes.

#![allow(clippy::print_stderr)] // the skip and timing notes

mod common;

use std::time::{Duration, Instant};

use common::*;
use moat_executor::{ExecError, Executor};
use moat_orchestrator::{Runtime, TaskState};

fn log_text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn wait_log(exec: &Executor, task_id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = log_text(exec.logs(task_id, None).await.expect("logs"));
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log of {task_id} never held {needle:?}: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_logs_and_stops_the_whole_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    let a = sh("t1", "echo hi; sleep 30 & echo grandchild=$!; wait");
    exec.apply(std::slice::from_ref(&a)).await;
    let running = wait_state(&exec, "t1", TaskState::Running, 10).await;
    let pid: i32 = running
        .runtime_id
        .as_deref()
        .expect("pid")
        .parse()
        .expect("decimal pid");
    assert!(process_runs(pid));
    let text = wait_log(&exec, "t1", "grandchild=").await;
    assert!(text.contains("hi\n"), "{text:?}");
    let grandchild: i32 = text
        .split("grandchild=")
        .nth(1)
        .and_then(|s| s.lines().next())
        .and_then(|s| s.trim().parse().ok())
        .expect("grandchild pid");
    assert!(process_runs(grandchild));
    // The record was written before Running was reported, without env.
    let record = std::fs::read_to_string(dir.path().join("tasks/t1.json")).expect("record");
    assert!(record.contains(&format!("\"pid\": {pid}")), "{record}");
    let tail = exec.logs("t1", Some(3)).await.expect("tail");
    assert_eq!(tail.len(), 3);

    let mut stop = a.clone();
    stop.desired_state = TaskState::Shutdown;
    exec.apply(&[stop.clone()]).await;
    let ended = wait_ended(&exec, "t1", 10).await;
    assert_eq!(ended.state, TaskState::Shutdown, "{ended:?}");
    assert!(eventually(5, || !process_runs(pid) && !process_runs(grandchild)).await);

    // Not listed any more: forgotten, files gone.
    exec.apply(&[]).await;
    assert!(eventually(5, || report(&exec, "t1").is_none()).await);
    let tasks = dir.path().join("tasks");
    assert!(
        eventually(5, || !tasks.join("t1.json").exists()
            && !tasks.join("t1.log").exists())
        .await
    );
    assert!(matches!(
        exec.logs("t1", None).await,
        Err(ExecError::UnknownTask { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_reaches_the_task_and_the_daemons_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    let mut a = sh(
        "t2",
        "echo foo=$FOO; echo id=$MOAT_TASK_ID name=$MOAT_SERVICE_NAME slot=$MOAT_TASK_SLOT; echo home=$HOME; echo path=$PATH; echo leak=$CARGO_MANIFEST_DIR; pwd",
    );
    a.spec.env.insert("FOO".into(), "s3cret value".into());
    exec.apply(std::slice::from_ref(&a)).await;
    let done = wait_ended(&exec, "t2", 10).await;
    assert_eq!(done.state, TaskState::Complete, "{done:?}");
    assert_eq!(done.exit_code, Some(0));
    let text = log_text(exec.logs("t2", None).await.expect("logs"));
    assert!(text.contains("foo=s3cret value\n"), "{text}");
    assert!(text.contains("id=t2 name=web slot=1\n"), "{text}");
    assert!(text.contains("leak=\n"), "{text}");
    assert!(text.contains("path=/"), "{text}");
    let work = dir.path().join("tasks/t2.d");
    assert!(
        text.contains(&format!("home={}\n", work.display())),
        "{text}"
    );
    assert!(text.contains(&format!("{}\n", work.display())), "{text}");
    let record = std::fs::read_to_string(dir.path().join("tasks/t2.json")).expect("record");
    assert!(!record.contains("s3cret"), "env value persisted: {record}");
    assert!(record.contains("FOO"), "{record}");
    // Exactly these variables, nothing of the daemon's environment.
    let mut env_only = assignment("t2env", Runtime::Process, "env", &[]);
    env_only.spec.env.insert("FOO".into(), "bar".into());
    exec.apply(&[a, env_only]).await;
    let done = wait_ended(&exec, "t2env", 10).await;
    assert_eq!(done.state, TaskState::Complete, "{done:?}");
    let text = log_text(exec.logs("t2env", None).await.expect("logs"));
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "FOO",
            "HOME",
            "MOAT_SERVICE_NAME",
            "MOAT_TASK_ID",
            "MOAT_TASK_SLOT",
            "PATH"
        ],
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("tasks"), 0o700);
    assert_eq!(mode("tasks/t2.json"), 0o600);
    assert_eq!(mode("tasks/t2.log"), 0o600);
    assert_eq!(mode("tasks/t2.d"), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_give_complete_and_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    exec.apply(&[
        sh("ok", "exit 0"),
        sh("bad", "exit 3"),
        sh("sig", "kill -KILL $$"),
    ])
    .await;
    let ok = wait_ended(&exec, "ok", 10).await;
    assert_eq!((ok.state, ok.exit_code), (TaskState::Complete, Some(0)));
    let bad = wait_ended(&exec, "bad", 10).await;
    assert_eq!((bad.state, bad.exit_code), (TaskState::Failed, Some(3)));
    assert_eq!(bad.error.as_deref(), Some("exit status 3"));
    let sig = wait_ended(&exec, "sig", 10).await;
    assert_eq!(sig.state, TaskState::Failed);
    assert_eq!(sig.error.as_deref(), Some("killed by signal SIGKILL"));
    assert_eq!(sig.exit_code, Some(137));
    // Ended tasks stay ended: listing them again starts nothing.
    exec.apply(&[sh("ok", "exit 0"), sh("bad", "exit 3"), sh("sig", "true")])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(report(&exec, "bad").expect("held").state, TaskState::Failed);
    // Reopened, they keep their final states (from the records).
    drop(exec);
    let exec = open(dir.path(), "n1").await;
    let reports = exec.reports();
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert_eq!(reports[0].task_id, "bad");
    assert_eq!(reports[0].state, TaskState::Failed);
    assert_eq!(reports[0].exit_code, Some(3));
    assert_eq!(reports[1].state, TaskState::Complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    exec.apply(&[assignment("t4", Runtime::Process, "/bin/nope", &[])])
        .await;
    let r = wait_ended(&exec, "t4", 10).await;
    assert_eq!(r.state, TaskState::Rejected, "{r:?}");
    let error = r.error.expect("error");
    assert!(error.contains("/bin/nope"), "{error}");
    assert!(error.to_lowercase().contains("no such file"), "{error}");
    assert_eq!(r.runtime_id, None);
    // A bad task id is rejected without touching the disk.
    exec.apply(&[
        assignment("t4", Runtime::Process, "/bin/nope", &[]),
        sh("../evil", "true"),
    ])
    .await;
    let r = wait_ended(&exec, "../evil", 10).await;
    assert_eq!(r.state, TaskState::Rejected, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    let a = sh("t5", "echo started; sleep 30");
    exec.apply(std::slice::from_ref(&a)).await;
    exec.apply(std::slice::from_ref(&a)).await;
    let r = wait_state(&exec, "t5", TaskState::Running, 10).await;
    exec.apply(&[a.clone(), a.clone()]).await;
    wait_log(&exec, "t5", "started").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = log_text(exec.logs("t5", None).await.expect("logs"));
    assert_eq!(text.matches("started").count(), 1, "{text}");
    assert_eq!(report(&exec, "t5").expect("held").runtime_id, r.runtime_id);
    assert_eq!(exec.reports().len(), 1);
    exec.stop_all().await;
    assert_eq!(
        report(&exec, "t5").expect("held").state,
        TaskState::Shutdown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ignoring_sigterm_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    let mut a = sh("t6", "trap '' TERM; echo trapped; sleep 30");
    a.spec.stop_grace_ms = 300;
    exec.apply(std::slice::from_ref(&a)).await;
    let r = wait_state(&exec, "t6", TaskState::Running, 10).await;
    let pid: i32 = r.runtime_id.expect("pid").parse().expect("pid");
    wait_log(&exec, "t6", "trapped").await;
    let started = Instant::now();
    exec.apply(&[]).await;
    let r = wait_ended(&exec, "t6", 10).await;
    assert_eq!(r.state, TaskState::Shutdown, "{r:?}");
    assert_eq!(r.exit_code, Some(137), "{r:?}");
    assert!(!process_runs(pid));
    eprintln!("stopped in {:?} with a grace of 300 ms", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_adopted_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    let a = sh("t7", "sleep 30 & wait");
    let b = sh("t7b", "sleep 30");
    exec.apply(&[a.clone(), b.clone()]).await;
    let r = wait_state(&exec, "t7", TaskState::Running, 10).await;
    let pid: i32 = r.runtime_id.clone().expect("pid").parse().expect("pid");
    let rb = wait_state(&exec, "t7b", TaskState::Running, 10).await;
    let pid_b: i32 = rb.runtime_id.clone().expect("pid").parse().expect("pid");
    drop(exec);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process_runs(pid), "the task must outlive the executor");

    let exec = open(dir.path(), "n1").await;
    let adopted = report(&exec, "t7").expect("adopted");
    assert_eq!(adopted.state, TaskState::Running, "{adopted:?}");
    assert_eq!(adopted.runtime_id, r.runtime_id);
    // An adopted process that ends: its status is unknown.
    assert_eq!(
        report(&exec, "t7b").expect("adopted").runtime_id,
        rb.runtime_id
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid_b),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let ended = wait_ended(&exec, "t7b", 10).await;
    assert_eq!(ended.state, TaskState::Failed, "{ended:?}");
    assert!(
        ended
            .error
            .as_deref()
            .is_some_and(|e| e.contains("status unknown")),
        "{ended:?}"
    );
    // Listed again: nothing new starts.
    exec.apply(&[a.clone(), b.clone()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(report(&exec, "t7").expect("held").runtime_id, r.runtime_id);
    // Not listed: stopped.
    exec.apply(&[]).await;
    let ended = wait_ended(&exec, "t7", 10).await;
    assert_eq!(ended.state, TaskState::Shutdown, "{ended:?}");
    assert!(eventually(5, || !process_runs(pid)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_ended_while_no_daemon_ran_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    exec.apply(&[sh("t8", "sleep 30")]).await;
    let r = wait_state(&exec, "t8", TaskState::Running, 10).await;
    let pid: i32 = r.runtime_id.clone().expect("pid").parse().expect("pid");
    drop(exec);
    tokio::time::sleep(Duration::from_millis(100)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    assert!(eventually(5, || !process_runs(pid)).await);

    let exec = open(dir.path(), "n1").await;
    let r = report(&exec, "t8").expect("held");
    assert_eq!(r.state, TaskState::Failed, "{r:?}");
    assert_eq!(
        r.error.as_deref(),
        Some("exited while the daemon was down; status unknown")
    );
    // And so it stays, on disk too.
    drop(exec);
    let exec = open(dir.path(), "n1").await;
    assert_eq!(report(&exec, "t8").expect("held").state, TaskState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_fails_open_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tasks = dir.path().join("tasks");
    std::fs::create_dir_all(&tasks).expect("mkdir");
    std::fs::write(tasks.join("good.json.tmp"), b"half").expect("write");
    for garbage in [
        &b"{not json"[..],
        b"",
        b"{\"format\":1}",
        &[0xff, 0xfe, 0x00][..],
    ] {
        std::fs::write(tasks.join("broken.json"), garbage).expect("write");
        let err = Executor::open(config(dir.path(), "n1"))
            .await
            .expect_err("a damaged record must fail open");
        let text = err.to_string();
        assert!(text.contains("broken.json"), "{text}");
        assert!(matches!(err, ExecError::DamagedRecord { .. }), "{err:?}");
    }
    // A record whose task id is not its file's.
    let exec = open(&dir.path().join("other"), "n1").await;
    exec.apply(&[sh("real", "exit 0")]).await;
    wait_ended(&exec, "real", 10).await;
    drop(exec);
    let record = std::fs::read(dir.path().join("other/tasks/real.json")).expect("record");
    std::fs::remove_file(tasks.join("broken.json")).expect("rm");
    std::fs::write(tasks.join("renamed.json"), record).expect("write");
    let err = Executor::open(config(dir.path(), "n1"))
        .await
        .expect_err("a record under another name must fail open");
    assert!(err.to_string().contains("renamed.json"), "{err}");
    std::fs::remove_file(tasks.join("renamed.json")).expect("rm");
    let exec = open(dir.path(), "n1").await;
    assert!(exec.reports().is_empty());
    assert!(!tasks.join("good.json.tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_docker_engine_fails_neither_open_nor_process_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || moat_executor::ExecutorConfig {
        docker_host: Some("unix:///nonexistent/docker.sock".to_owned()),
        ..common::config(dir.path(), "n1")
    };
    let exec = Executor::open(config()).await.expect("open");
    exec.apply(&[
        assignment("c1", Runtime::Docker, "busybox:latest", &[]),
        sh("p1", "exit 0"),
    ])
    .await;
    let r = wait_ended(&exec, "c1", 10).await;
    assert_eq!(r.state, TaskState::Rejected, "{r:?}");
    let error = r.error.expect("error");
    assert!(error.contains("unix:///nonexistent/docker.sock"), "{error}");
    let r = wait_ended(&exec, "p1", 10).await;
    assert_eq!(r.state, TaskState::Complete, "{r:?}");
    drop(exec);
    // A container task recorded as running, the engine gone: adopted as it
    // was (watched until the engine answers), and open succeeds.
    let record = std::fs::read_to_string(dir.path().join("tasks/p1.json")).expect("record");
    let record = record
        .replace("\"p1\"", "\"c2\"")
        .replace("\"process\"", "\"docker\"")
        .replace("\"complete\"", "\"running\"")
        .replace("\"container_id\": null", "\"container_id\": \"0123abcd\"")
        .replace("\"pid\": ", "\"was_pid\": ");
    std::fs::write(dir.path().join("tasks/c2.json"), record).expect("write");
    let exec = Executor::open(config()).await.expect("open");
    let r = report(&exec, "c2").expect("held");
    assert_eq!(r.state, TaskState::Running, "{r:?}");
    assert_eq!(r.runtime_id.as_deref(), Some("0123abcd"));
    assert_eq!(
        report(&exec, "p1").expect("held").state,
        TaskState::Complete
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_started_but_never_recorded_is_found_and_killed() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let exec = open(dir.path(), "n1").await;
    exec.apply(&[sh("t9", "exit 0")]).await;
    wait_ended(&exec, "t9", 10).await;
    drop(exec);
    // As if the daemon stopped after spawning t9 and before recording its pid.
    let path = dir.path().join("tasks/t9.json");
    let record = std::fs::read_to_string(&path).expect("record");
    let pid_line = record
        .lines()
        .find(|l| l.contains("\"pid\":"))
        .expect("pid line")
        .to_owned();
    let record = record
        .replace("\"complete\"", "\"starting\"")
        .replace(&pid_line, "  \"pid\": null,");
    std::fs::write(&path, record).expect("write");
    let mut orphan = std::process::Command::new("sleep")
        .arg("30")
        .env("MOAT_TASK_ID", "t9")
        .process_group(0)
        .spawn()
        .expect("spawn");
    let pid = i32::try_from(orphan.id()).expect("pid");
    assert!(process_runs(pid));
    // As a task that ran: its environment names it. (Under load the child
    // can still be on its way to exec when spawn returns.)
    assert!(
        eventually(5, || std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env
                .split(|b| *b == 0)
                .any(|v| v == b"MOAT_TASK_ID=t9")))
        .await,
        "the orphan's environment never named its task"
    );

    let exec = open(dir.path(), "n1").await;
    let r = report(&exec, "t9").expect("held");
    assert_eq!(r.state, TaskState::Failed, "{r:?}");
    assert!(
        eventually(5, || !process_runs(pid)).await,
        "the unrecorded process must be killed"
    );
    let _ = orphan.wait();
}
