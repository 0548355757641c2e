//! Runtime `docker`: a container of the local Docker Engine.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::StreamExt;
use moat_orchestrator::{TaskSpec, TaskState};
use tokio::sync::watch;

use crate::record::{self, Record};
use crate::{ExecError, Inner, closed, keep_tail, persist, stop_requested};

/// The engine's socket when neither the configuration nor `DOCKER_HOST`
/// names one.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Seconds a request may take to get its response's head.
const REQUEST_TIMEOUT_S: u64 = 120;

/// How long connecting (and negotiating the API version) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait between two tries to reach an engine that does not
/// answer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A lazily made, shared connection to the Docker Engine.
pub(crate) struct Connection {
    host: Option<String>,
    client: tokio::sync::Mutex<Option<Docker>>,
}

impl Connection {
    pub(crate) fn new(host: Option<String>) -> Connection {
        Connection {
            host,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// The socket's address, `unix://` form.
    fn address(&self) -> String {
        let host = match &self.host {
            Some(host) => host.clone(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| h.starts_with("unix://"))
                .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}")),
        };
        if host.starts_with('/') {
            format!("unix://{host}")
        } else {
            host
        }
    }

    /// Whether the socket exists (the engine may be worth asking).
    fn socket_exists(&self) -> bool {
        self.address()
            .strip_prefix("unix://")
            .is_some_and(|p| std::path::Path::new(p).exists())
    }

    /// The client, connecting (and negotiating the API version) first if
    /// need be. A failure is not kept: the next call tries again.
    pub(crate) async fn get(&self) -> Result<Docker, String> {
        let mut client = self.client.lock().await;
        if let Some(docker) = &*client {
            return Ok(docker.clone());
        }
        let address = self.address();
        if !address.starts_with("unix://") {
            return Err(format!(
                "the Docker Engine address {address} is not supported: give a unix:// socket"
            ));
        }
        let docker = Docker::connect_with_unix(&address, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION)
            .map_err(|e| format!("cannot reach the Docker Engine at {address}: {e}"))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| {
                format!(
                    "the Docker Engine at {address} did not answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("cannot reach the Docker Engine at {address}: {e}"))?;
        *client = Some(docker.clone());
        Ok(docker)
    }
}

/// The HTTP status of an engine's error answer.
fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's message in an error, else the error's text.
fn message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `moat-<service>.<slot>.<task>`, with what Docker does not allow in a
/// name replaced by `_`.
fn container_name(rec: &Record) -> String {
    let service: String = rec
        .service_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("moat-{service}.{}.{}", rec.slot, rec.task_id)
}

/// `image` split for a pull: the name and the tag (`latest` if none is
/// given; none for a digest).
fn split_image(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rfind(':') {
        Some(i) => {
            let at = image.len() - last.len() + i;
            (&image[..at], Some(&image[at + 1..]))
        }
        None => (image, Some("latest")),
    }
}

/// Makes sure `image` is on this node, pulling it if not.
async fn ensure_image(docker: &Docker, image: &str) -> Result<(), String> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => return Err(format!("cannot look up image {image}: {}", message(&e))),
    }
    let cannot = |why: String| {
        format!("image {image} is not present on this node and could not be pulled: {why}")
    };
    tracing::info!(image, "pulling image");
    let (name, tag) = split_image(image);
    let mut options = CreateImageOptionsBuilder::default().from_image(name);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let mut pull = docker.create_image(Some(options.build()), None, None);
    while let Some(progress) = pull.next().await {
        let progress = progress.map_err(|e| cannot(message(&e)))?;
        if let Some(detail) = progress.error_detail {
            return Err(cannot(
                detail.message.unwrap_or_else(|| "no reason given".into()),
            ));
        }
    }
    docker
        .inspect_image(image)
        .await
        .map(|_| ())
        .map_err(|e| cannot(message(&e)))
}

/// Starts a container task and watches it to its end.
pub(crate) async fn run(
    inner: Arc<Inner>,
    mut rec: Record,
    spec: TaskSpec,
    stop: watch::Receiver<bool>,
    material: crate::TaskMaterial,
) {
    rec.set(TaskState::Preparing, "preparing");
    inner.show(&rec);
    let docker = match inner.docker.get().await {
        Ok(docker) => docker,
        Err(error) => return reject(&inner, rec, error).await,
    };
    if *stop.borrow() {
        rec.set(TaskState::Shutdown, "stopped before it started");
        return finish(&inner, &rec).await;
    }
    rec.set(TaskState::Starting, "starting");
    // Recorded before the container exists: a daemon that stops now does
    // not start the task again, and the next open removes the container.
    if let Err(e) = inner.commit(&rec).await {
        return reject(&inner, rec, e.to_string()).await;
    }
    let binds = binds(&inner, &rec.task_id, &material);
    if let Err(error) = inner.write_files(&rec.task_id, material).await {
        return reject(&inner, rec, error).await;
    }
    let name = container_name(&rec);
    let labels = HashMap::from([
        ("moat.node".to_owned(), inner.config.node_id.clone()),
        ("moat.service.id".to_owned(), rec.service_id.clone()),
        ("moat.service.name".to_owned(), rec.service_name.clone()),
        ("moat.task.id".to_owned(), rec.task_id.clone()),
        ("moat.slot".to_owned(), rec.slot.to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(spec.identity.map(|_| {
                    format!(
                        "{}={}",
                        moat_workload::ENDPOINT_SOCKET_ENV,
                        crate::identity::container_address()
                    )
                }))
                .collect(),
        ),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            ..HostConfig::default()
        }),
        ..Default::default()
    };
    let id = match create(&docker, &name, &spec.image, body).await {
        Ok(id) => id,
        Err(error) => return reject(&inner, rec, error).await,
    };
    rec.container_id = Some(id.clone());
    if let Err(e) = inner.commit(&rec).await {
        remove(&docker, &id).await;
        rec.container_id = None;
        return reject(&inner, rec, e.to_string()).await;
    }
    if let Err(e) = docker.start_container(&id, None).await {
        remove(&docker, &id).await;
        let error = format!("cannot start container {name}: {}", message(&e));
        return reject(&inner, rec, error).await;
    }
    rec.set(TaskState::Running, "started");
    if let Err(e) = inner.commit(&rec).await {
        remove(&docker, &id).await;
        return reject(&inner, rec, e.to_string()).await;
    }
    tracing::info!(task = %rec.task_id, container = %id, "task running");
    watch_container(inner, rec, id, stop).await;
}

/// Creates the task's container named `name`; returns its id. As `docker
/// run` does, the image is looked for only when the engine says it is
/// missing (one request less per start): then it is pulled if the engine
/// can, and the create tried again. A container of the same name is one
/// left by a daemon that stopped while starting this very task (it never
/// ran as the task): it is removed, and the create tried again.
async fn create(
    docker: &Docker,
    name: &str,
    image: &str,
    body: ContainerCreateBody,
) -> Result<String, String> {
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let mut pulled = false;
    let mut replaced = false;
    loop {
        let error = match docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(created) => return Ok(created.id),
            Err(e) => e,
        };
        match status(&error) {
            Some(404) if !pulled => {
                ensure_image(docker, image).await?;
                pulled = true;
            }
            Some(409) if !replaced => {
                tracing::warn!(container = %name, "removing a leftover container of the task");
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(name, Some(options)).await;
                replaced = true;
            }
            _ => {
                return Err(format!(
                    "cannot create container {name}: {}",
                    message(&error)
                ));
            }
        }
    }
}

/// The bind mounts of a task's secrets and identity (its directory at
/// `/run/secrets`), configs (each file at `/<target>`) and Workload API
/// socket (its directory at `/run/spiffe`), read-only.
fn binds(inner: &Inner, task_id: &str, material: &crate::TaskMaterial) -> Vec<String> {
    use moat_orchestrator::SecretKind;
    let files = &material.files;
    let mut binds = Vec::new();
    if material.identity.is_some() || files.iter().any(|f| f.kind == SecretKind::Secret) {
        let dir = inner.files_dir(task_id, SecretKind::Secret);
        binds.push(format!("{}:/run/secrets:ro", dir.display()));
    }
    if material.identity.is_some() {
        let dir = inner
            .identity_socket(task_id)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        binds.push(format!(
            "{}:{}:ro",
            dir.display(),
            crate::identity::CONTAINER_SPIFFE_DIR
        ));
    }
    for f in files.iter().filter(|f| f.kind == SecretKind::Config) {
        let path = inner.files_dir(task_id, SecretKind::Config).join(&f.target);
        binds.push(format!("{}:/{}:ro", path.display(), f.target));
    }
    binds
}

/// Ends a task that could not start.
async fn reject(inner: &Inner, mut rec: Record, error: String) {
    tracing::warn!(task = %rec.task_id, %error, "task rejected");
    rec.fail(TaskState::Rejected, error);
    finish(inner, &rec).await;
}

/// Records a final state and shows it (shown even if the record cannot be
/// written: the cluster must hear of it).
async fn finish(inner: &Inner, rec: &Record) {
    if let Err(e) = inner.commit(rec).await {
        tracing::error!(task = %rec.task_id, error = %e, "cannot record a task's final state");
        inner.show(rec);
    }
}

/// Removes a container, ignoring one that is gone.
async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_container(id, Some(options)).await
        && status(&e) != Some(404)
    {
        tracing::warn!(container = id, error = %e, "cannot remove a container");
    }
}

/// Whether an inspected container still runs.
fn running(info: &ContainerInspectResponse) -> bool {
    info.state
        .as_ref()
        .is_some_and(|s| s.running.unwrap_or(false) || s.restarting.unwrap_or(false))
}

/// Gives `rec` the final state of an inspected container that ended.
fn ended(rec: &mut Record, info: &ContainerInspectResponse) {
    let state = info.state.clone().unwrap_or_default();
    if state.status == Some(ContainerStateStatusEnum::CREATED) {
        // Made, never started: the daemon stopped while starting it.
        rec.exit_code = None;
        rec.fail(
            TaskState::Failed,
            "the daemon stopped while starting it; it never ran",
        );
        return;
    }
    let code = state
        .exit_code
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX));
    rec.exit_code = code;
    match code {
        Some(0) => rec.set(TaskState::Complete, "finished"),
        _ => {
            let mut error = match code {
                Some(code) => format!("exit status {code}"),
                None => "ended; exit status unknown".to_owned(),
            };
            if state.oom_killed == Some(true) {
                error.push_str(" (killed: out of memory)");
            }
            if let Some(why) = state.error.filter(|e| !e.is_empty()) {
                error.push_str(": ");
                error.push_str(&why);
            }
            rec.fail(TaskState::Failed, error);
        }
    }
}

/// Stops a container (`docker stop` with the task's grace), copies its logs
/// to the task's log file and removes it. Returns its exit code.
async fn stop_and_remove(
    inner: &Inner,
    docker: &Docker,
    rec: &Record,
    id: &str,
) -> Result<Option<i32>, String> {
    let grace_s = rec.stop_grace_ms.div_ceil(1000).max(1);
    let options = StopContainerOptionsBuilder::default()
        .t(i32::try_from(grace_s).unwrap_or(i32::MAX))
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => {}
        Err(e) if matches!(status(&e), Some(304) | Some(404)) => {}
        // The request outlived its timeout: the grace is over anyway, and
        // the forced removal kills it.
        Err(DockerError::RequestTimeoutError) => {}
        Err(e) => return Err(format!("cannot stop container {id}: {}", message(&e))),
    }
    let code = match docker.inspect_container(id, None).await {
        Ok(info) => info
            .state
            .and_then(|s| s.exit_code)
            .map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
        Err(_) => None,
    };
    copy_logs(inner, docker, &rec.task_id, id).await;
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(code),
        Err(e) if status(&e) == Some(404) => Ok(code),
        Err(e) => Err(format!("cannot remove container {id}: {}", message(&e))),
    }
}

/// Logs why a container cannot be watched; the wait before the next try.
fn pause(task_id: &str, id: &str, why: String, backoff: &mut Duration) -> Duration {
    tracing::warn!(task = task_id, container = id, error = %why, "cannot watch a container; trying again");
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    wait
}

/// Watches a container until it ends or is stopped; retries while the
/// engine does not answer.
async fn watch_container(
    inner: Arc<Inner>,
    mut rec: Record,
    id: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut life = inner.closed();
    let mut backoff = Duration::from_millis(500);
    loop {
        let docker = match inner.docker.get().await {
            Ok(docker) => docker,
            Err(e) => {
                let wait = pause(&rec.task_id, &id, e, &mut backoff);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = closed(&mut life) => return,
                }
            }
        };
        tokio::select! {
            _ = async { docker.wait_container(&id, None).next().await } => {}
            () = stop_requested(&mut stop) => {
                match stop_and_remove(&inner, &docker, &rec, &id).await {
                    Ok(code) => {
                        rec.set(TaskState::Shutdown, "stopped");
                        rec.exit_code = code;
                        break;
                    }
                    Err(e) => {
                        let wait = pause(&rec.task_id, &id, e, &mut backoff);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => continue,
                            () = closed(&mut life) => return,
                        }
                    }
                }
            }
            () = closed(&mut life) => return,
        }
        // The wait ended (or failed): see what the container is.
        match docker.inspect_container(&id, None).await {
            Ok(info) if running(&info) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = closed(&mut life) => return,
                }
            }
            Ok(info) => {
                ended(&mut rec, &info);
                break;
            }
            Err(e) if status(&e) == Some(404) => {
                rec.fail(
                    TaskState::Failed,
                    format!("container {id} was removed by something other than moat"),
                );
                break;
            }
            Err(e) => {
                let wait = pause(&rec.task_id, &id, message(&e), &mut backoff);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = closed(&mut life) => return,
                }
            }
        }
    }
    tracing::info!(task = %rec.task_id, state = %rec.state, exit_code = ?rec.exit_code, "task ended");
    finish(&inner, &rec).await;
}

/// Takes over the container tasks of records at open, and removes the
/// containers labelled for this node that no record accounts for.
pub(crate) async fn adopt(inner: &Arc<Inner>, recs: Vec<Record>) -> Result<(), ExecError> {
    if recs.is_empty() && !inner.docker.socket_exists() {
        return Ok(());
    }
    let docker = match inner.docker.get().await {
        Ok(docker) => docker,
        Err(error) => {
            if !recs.is_empty() {
                tracing::warn!(%error, tasks = recs.len(), "the Docker Engine does not answer: its tasks are watched once it does");
            } else {
                tracing::debug!(%error, "the Docker Engine does not answer");
            }
            for rec in recs {
                adopt_unseen(inner, rec).await?;
            }
            return Ok(());
        }
    };
    for mut rec in recs {
        let Some(id) = rec.container_id.clone() else {
            adopt_unseen(inner, rec).await?;
            continue;
        };
        match docker.inspect_container(&id, None).await {
            Ok(info) if running(&info) => {
                tracing::info!(task = %rec.task_id, container = %id, "adopting a running task");
                rec.message = "running; adopted after a daemon restart".to_owned();
                let stop = inner.insert(rec.clone());
                tokio::spawn(watch_container(inner.clone(), rec, id, stop));
            }
            Ok(info) => {
                ended(&mut rec, &info);
                persist(&inner.config.dir, &rec).await?;
                inner.insert(rec);
            }
            Err(e) if status(&e) == Some(404) => {
                rec.fail(
                    TaskState::Failed,
                    format!("container {id} no longer exists; status unknown"),
                );
                persist(&inner.config.dir, &rec).await?;
                inner.insert(rec);
            }
            Err(e) => {
                tracing::warn!(task = %rec.task_id, container = %id, error = %e, "cannot inspect a task's container; watching it");
                let stop = inner.insert(rec.clone());
                tokio::spawn(watch_container(inner.clone(), rec, id, stop));
            }
        }
    }
    remove_leftovers(inner, &docker).await;
    Ok(())
}

/// A container task whose container could not be looked at at open.
async fn adopt_unseen(inner: &Arc<Inner>, mut rec: Record) -> Result<(), ExecError> {
    match rec.container_id.clone() {
        Some(id) => {
            let stop = inner.insert(rec.clone());
            tokio::spawn(watch_container(inner.clone(), rec, id, stop));
        }
        None => {
            rec.fail(
                TaskState::Failed,
                "the daemon stopped while starting it; whether it ran is unknown",
            );
            persist(&inner.config.dir, &rec).await?;
            inner.insert(rec);
        }
    }
    Ok(())
}

/// Stops and removes the containers labelled `moat.node=<this node>` that
/// no task held accounts for.
async fn remove_leftovers(inner: &Inner, docker: &Docker) {
    let known: BTreeSet<String> = inner
        .lock()
        .values()
        .filter_map(|entry| entry.rec.container_id.clone())
        .collect();
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("moat.node={}", inner.config.node_id)],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = match docker.list_containers(Some(options)).await {
        Ok(containers) => containers,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this node's containers to remove leftovers");
            return;
        }
    };
    for container in containers {
        let Some(id) = container.id else { continue };
        if known.contains(&id) {
            continue;
        }
        let names = container.names.unwrap_or_default().join(",");
        tracing::warn!(container = %id, names = %names, "removing a container labelled for this node that no task record accounts for");
        let options = StopContainerOptionsBuilder::default().t(1).build();
        if let Err(e) = docker.stop_container(&id, Some(options)).await
            && !matches!(status(&e), Some(304) | Some(404))
        {
            tracing::warn!(container = %id, error = %e, "cannot stop a leftover container");
        }
        remove(docker, &id).await;
    }
}

/// Removes a task's container (copying its logs to the log file first if
/// `keep_logs`), for a forgotten task or `stop_all`.
pub(crate) async fn discard(inner: &Inner, task_id: &str, id: &str, keep_logs: bool) {
    let docker = match inner.docker.get().await {
        Ok(docker) => docker,
        Err(error) => {
            tracing::warn!(container = id, %error, "cannot remove a task's container; the next start removes it");
            return;
        }
    };
    if keep_logs {
        copy_logs(inner, &docker, task_id, id).await;
    }
    remove(&docker, id).await;
}

/// A container's output; `None` if the container is gone.
pub(crate) async fn logs(
    inner: &Inner,
    task_id: &str,
    id: &str,
    tail: Option<u64>,
) -> Result<Option<Vec<u8>>, ExecError> {
    let docker = inner
        .docker
        .get()
        .await
        .map_err(|message| ExecError::DockerLogs {
            task_id: task_id.to_owned(),
            message,
        })?;
    match fetch_logs(&docker, id, tail).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if status(&e) == Some(404) => Ok(None),
        Err(e) => Err(ExecError::DockerLogs {
            task_id: task_id.to_owned(),
            message: message(&e),
        }),
    }
}

async fn fetch_logs(docker: &Docker, id: &str, tail: Option<u64>) -> Result<Vec<u8>, DockerError> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail("all")
        .build();
    let mut stream = docker.logs(id, Some(options));
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?.into_bytes());
        if let Some(t) = tail
            && bytes.len() as u64 > t.saturating_mul(2).max(1 << 16)
        {
            keep_tail(&mut bytes, tail);
        }
    }
    keep_tail(&mut bytes, tail);
    Ok(bytes)
}

/// Writes a container's logs to the task's log file (0600), so they outlive
/// the container. Best effort.
async fn copy_logs(inner: &Inner, docker: &Docker, task_id: &str, id: &str) {
    let bytes = match fetch_logs(docker, id, None).await {
        Ok(bytes) => bytes,
        Err(e) => {
            if status(&e) != Some(404) {
                tracing::warn!(container = id, error = %e, "cannot copy a container's logs");
            }
            return;
        }
    };
    let path: PathBuf = record::log_path(&inner.config.dir, task_id);
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    if let Err(e) = written {
        tracing::warn!(task = task_id, error = %e, "cannot write a container's logs to its log file");
    }
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn image_names_split_for_pulls() {
        assert_eq!(split_image("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_image("busybox:1.36"), ("busybox", Some("1.36")));
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_image("registry:5000/team/app:v2"),
            ("registry:5000/team/app", Some("v2"))
        );
        assert_eq!(split_image("app@sha256:abcd"), ("app@sha256:abcd", None));
    }
}
