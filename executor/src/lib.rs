//! The worker side of the orchestrator: runs the tasks assigned to this
//! node and reports their states.
//!
//! An [`Executor`] is given the full list of the node's
//! [`Assignment`]s again and again ([`Executor::apply`]) and brings what
//! runs to it: it starts the tasks that should run and it does not hold yet,
//! stops the ones that should not run, and forgets ended tasks the cluster
//! no longer lists. Each task runs as
//!
//! * runtime `process`: a child process in its own process group, with its
//!   output appended to `<dir>/<task_id>.log` and `<dir>/<task_id>.d` as its
//!   working directory; or
//! * runtime `docker`: a container of the local Docker Engine named
//!   `moat-<service>.<slot>.<task_id>` and labelled `moat.node=<node id>`.
//!
//! Every task has a record, `<dir>/<task_id>.json`, written atomically
//! before it is reported running and at every final state, so a daemon
//! that starts again ([`Executor::open`]) adopts the tasks still running
//! and gives the others a final state: nothing runs unaccounted for.
//!
//! # Environment of process tasks
//!
//! A process task does not inherit the daemon's environment (which may
//! hold the daemon's own settings and credentials). It gets:
//!
//! * `PATH`: the daemon's (or `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`
//!   if the daemon has none);
//! * `HOME`: its working directory `<dir>/<task_id>.d`;
//! * the spec's variables (which may replace the two above);
//! * `MOAT_TASK_ID`, `MOAT_SERVICE_NAME` and `MOAT_TASK_SLOT` (which no
//!   spec variable replaces);
//! * `MOAT_SECRETS_DIR` and `MOAT_CONFIGS_DIR` when it has secrets or
//!   configs: its directories on a tmpfs (see below).
//!
//! # Secrets and configs
//!
//! A task whose spec names secrets or configs starts only with their data
//! ([`Executor::apply_with`]; the node fetched it from the leader). They are
//! written under [`ExecutorConfig::secrets_root`], which must be on a tmpfs,
//! never to `dir`; a container gets its secrets at `/run/secrets` and each
//! config at `/<target>`, read-only. They are removed when the task ends,
//! and at [`Executor::open`] every task directory there that belongs to no
//! task still running is removed.
//!
//! Environment values are never written to disk nor logged: a record keeps
//! only the variables' names.
//!
//! # Record format
//!
//! JSON, `format: 1`: the task's id, service id and name, slot, runtime,
//! image or program, arguments, names of its environment variables, stop
//! grace; the pid and its start time (field 22 of `/proc/<pid>/stat`, to
//! tell it from a later process with the same pid) or the container id;
//! the last state with its time, message, error and exit code. A record
//! that does not read is an error of [`Executor::open`] naming the file.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod docker;
mod error;
mod files;
mod identity;
mod process;
mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use moat_orchestrator::{Assignment, Runtime, TaskReport, TaskState};
use tokio::sync::watch;

pub use crate::error::ExecError;
pub use crate::files::TaskFile;
pub use crate::identity::{IDENTITY_DIR, WorkloadIdentity};
use crate::record::Record;

/// Where an executor keeps its tasks and how it reaches Docker.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The task directory (`<state>/tasks`): created 0700 if missing; holds
    /// the task records, the logs and the working directories of process
    /// tasks.
    pub dir: PathBuf,
    /// This node's id: containers are labelled `moat.node=<node_id>`.
    pub node_id: String,
    /// The Docker Engine's socket, as `unix:///var/run/docker.sock` or a
    /// path; `None`: `DOCKER_HOST` if it is a `unix://` address, else
    /// `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// A directory on a tmpfs (default `/dev/shm`) in which the executor
    /// keeps tasks' secrets and configs, in its own subdirectory
    /// `moat-<node_id>` (created 0700). Nothing else there is touched.
    pub secrets_dir: Option<PathBuf>,
}

impl ExecutorConfig {
    /// The directory of this node's tasks' secrets and configs:
    /// `<secrets_dir>/moat-<node_id>`.
    pub fn secrets_root(&self) -> PathBuf {
        self.secrets_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/shm"))
            .join(format!("moat-{}", self.node_id))
    }
}

/// What a task needs from the cluster before it starts: its secrets and
/// configs, and its workload identity.
#[derive(Debug, Clone, Default)]
pub struct TaskMaterial {
    /// Its secrets and configs.
    pub files: Vec<TaskFile>,
    /// Its workload certificate and key, if its service has an identity.
    pub identity: Option<WorkloadIdentity>,
}

/// Where a running task's identity stands, for its node's renewals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityStatus {
    /// When it is to be renewed (Unix seconds).
    pub renew_at: i64,
    /// The roots its node trusted when it asked for it (PEM).
    pub node_roots_pem: String,
}

/// A task's identity being served.
struct Held {
    endpoint: moat_workload::Endpoint,
    status: IdentityStatus,
}

/// Runs this node's tasks. A cheap handle: clones share the same tasks.
///
/// When the last clone is dropped the executor lets go of its tasks
/// without stopping them (a daemon that exits leaves its tasks running,
/// and the next [`Executor::open`] adopts them); [`Executor::stop_all`]
/// stops them.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
    _life: Arc<Life>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("dir", &self.inner.config.dir)
            .field("node_id", &self.inner.config.node_id)
            .finish_non_exhaustive()
    }
}

/// Tells the task supervisors, when the last [`Executor`] handle goes,
/// that they are to let go without touching anything.
struct Life(watch::Sender<bool>);

impl Drop for Life {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// What the handles and the task supervisors share.
pub(crate) struct Inner {
    pub(crate) config: ExecutorConfig,
    tasks: Mutex<BTreeMap<String, Entry>>,
    /// The Workload API of each task with an identity.
    identities: Mutex<BTreeMap<String, Held>>,
    changes: watch::Sender<u64>,
    pub(crate) docker: docker::Connection,
    closed: watch::Receiver<bool>,
}

/// One task held.
struct Entry {
    rec: Record,
    /// Set to `true` to have the task's supervisor stop it.
    stop: watch::Sender<bool>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Holds `rec` as a new task; the receiver tells its supervisor to stop.
    fn insert(&self, rec: Record) -> watch::Receiver<bool> {
        let (stop, stop_rx) = watch::channel(false);
        self.lock().insert(rec.task_id.clone(), Entry { rec, stop });
        self.bump();
        stop_rx
    }

    /// Whether the executor was dropped: supervisors then let go.
    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// A receiver that resolves when the executor is dropped.
    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Shows `rec` in the reports (not on disk).
    pub(crate) fn show(&self, rec: &Record) {
        if self.is_closed() {
            return;
        }
        let changed = match self.lock().get_mut(&rec.task_id) {
            Some(entry) if entry.rec != *rec => {
                entry.rec = rec.clone();
                true
            }
            _ => false,
        };
        if changed {
            self.bump();
        }
    }

    /// Writes `rec` to its file, then shows it in the reports.
    pub(crate) async fn commit(&self, rec: &Record) -> Result<(), ExecError> {
        if self.is_closed() {
            return Ok(());
        }
        if rec.state.is_terminal() {
            self.remove_files(&rec.task_id).await;
        }
        persist(&self.config.dir, rec).await?;
        self.show(rec);
        Ok(())
    }
}

impl Inner {
    /// Writes a task's secrets, configs and identity (on the blocking
    /// pool), and serves its identity on its Workload API socket.
    pub(crate) async fn write_files(
        &self,
        task_id: &str,
        material: TaskMaterial,
    ) -> Result<(), String> {
        if material.files.is_empty() && material.identity.is_none() {
            return Ok(());
        }
        let root = self.config.secrets_root();
        let id = task_id.to_owned();
        let material = tokio::task::spawn_blocking(move || {
            files::write(&root, &id, &material).map(|()| material)
        })
        .await
        .map_err(|e| format!("writing the task's secrets: {e}"))??;
        if let Some(identity) = &material.identity {
            self.serve_identity(task_id, identity)?;
        }
        Ok(())
    }

    /// Serves `identity` on the task's socket (bound now if it is not yet).
    fn serve_identity(&self, task_id: &str, identity: &WorkloadIdentity) -> Result<(), String> {
        let mut held = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        let socket = identity::socket_path(&self.config.secrets_root(), task_id);
        let endpoint =
            identity::serve(held.remove(task_id).map(|h| h.endpoint), &socket, identity)?;
        held.insert(
            task_id.to_owned(),
            Held {
                endpoint,
                status: IdentityStatus {
                    renew_at: identity.renew_at,
                    node_roots_pem: identity.node_roots_pem.clone(),
                },
            },
        );
        Ok(())
    }

    /// Where the task's socket is, if it has one.
    pub(crate) fn identity_socket(&self, task_id: &str) -> PathBuf {
        identity::socket_path(&self.config.secrets_root(), task_id)
    }

    /// Removes a task's secrets and configs, if it has any.
    pub(crate) async fn remove_files(&self, task_id: &str) {
        // Its Workload API stops first: nothing is served from a
        // directory that is going.
        self.identities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task_id);
        let dir = files::task_dir(&self.config.secrets_root(), task_id);
        if !dir.exists() {
            return;
        }
        let root = self.config.secrets_root();
        let task_id = task_id.to_owned();
        let _ = tokio::task::spawn_blocking(move || files::remove_task(&root, &task_id)).await;
    }

    /// Where a task's files of `kind` are, if it has any.
    pub(crate) fn files_dir(&self, task_id: &str, kind: moat_orchestrator::SecretKind) -> PathBuf {
        files::kind_dir(&self.config.secrets_root(), task_id, kind)
    }
}

/// Writes a record on the blocking pool.
pub(crate) async fn persist(dir: &std::path::Path, rec: &Record) -> Result<(), ExecError> {
    let dir = dir.to_owned();
    let rec = rec.clone();
    let path = record::record_path(&dir, &rec.task_id);
    tokio::task::spawn_blocking(move || record::write(&dir, &rec))
        .await
        .map_err(|e| ExecError::WriteRecord {
            path,
            source: std::io::Error::other(e),
        })?
}

/// Resolves when `stop` says so; never if its sender is gone.
pub(crate) async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves when the executor is dropped.
pub(crate) async fn closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

impl Executor {
    /// Opens the task directory (made 0700 if missing) and takes over the
    /// tasks its records describe: a task still running (same pid and
    /// process start time, or a running container) is adopted and watched;
    /// one that ended gets its final state (a process that ended while no
    /// daemon ran is `Failed`, "exited while the daemon was down; status
    /// unknown": there is no exit status for a process that is not our
    /// child). Containers labelled for this node that no record accounts
    /// for are stopped and removed.
    ///
    /// The Docker Engine is contacted only if a record is of a container or
    /// its socket exists; an engine that does not answer makes no error
    /// (container tasks are then watched until it answers).
    ///
    /// Fails, starting nothing, if the directory cannot be made or read or
    /// a record is damaged (the error names the file).
    pub async fn open(config: ExecutorConfig) -> Result<Executor, ExecError> {
        let dir = config.dir.clone();
        let records = tokio::task::spawn_blocking(move || load(&dir))
            .await
            .map_err(|e| ExecError::ReadDir {
                path: config.dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let (life, closed) = watch::channel(false);
        let (changes, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            docker: docker::Connection::new(config.docker_host.clone()),
            config,
            tasks: Mutex::new(BTreeMap::new()),
            identities: Mutex::new(BTreeMap::new()),
            changes,
            closed,
        });
        let mut containers = Vec::new();
        for rec in records {
            if rec.state.is_terminal() {
                inner.insert(rec);
                continue;
            }
            match rec.runtime {
                Runtime::Process => process::adopt(&inner, rec).await?,
                Runtime::Docker => containers.push(rec),
            }
        }
        docker::adopt(&inner, containers).await?;
        // Secrets of tasks that no longer run (the daemon stopped while
        // they ended, or they ended since): gone now.
        let live: BTreeSet<String> = inner
            .lock()
            .values()
            .filter(|entry| !entry.rec.state.is_terminal())
            .map(|entry| entry.rec.task_id.clone())
            .collect();
        let root = inner.config.secrets_root();
        // A task id as moat makes them: 26 characters.
        let socket = identity::socket_path(&root, &"t".repeat(26));
        if socket.as_os_str().len() > identity::MAX_SOCKET_PATH {
            tracing::warn!(
                secrets_dir = %root.display(),
                "tasks with a workload identity will not start: their Workload API socket path \
                 would be longer than a unix socket may be; restart the daemon with a shorter \
                 --secrets-dir (at most 30 bytes)"
            );
        }
        let _ = tokio::task::spawn_blocking(move || files::wipe_except(&root, &live)).await;
        Ok(Executor {
            inner,
            _life: Arc::new(Life(life)),
        })
    }

    /// Brings the tasks to `assignments`, the full list of this node's
    /// tasks: starts every task whose desired state is `Running` and that
    /// it does not hold yet (once per task id: a task that ended stays
    /// ended), stops the held tasks whose desired state is another
    /// (`Shutdown`, `Remove`) or that the list no longer has, and forgets
    /// (deletes the record, log and container of) the ended tasks the list
    /// no longer has.
    ///
    /// Returns at once: starting and stopping go on in spawned tasks; watch
    /// [`Executor::subscribe`] and [`Executor::reports`]. A task that cannot
    /// start is reported `Rejected` with the reason.
    pub async fn apply(&self, assignments: &[Assignment]) {
        self.apply_with(assignments, BTreeMap::new()).await;
    }

    /// Whether the executor holds task `task_id` (running or ended): it is
    /// never started again, so its secrets need not be fetched.
    pub fn holds(&self, task_id: &str) -> bool {
        self.inner.lock().contains_key(task_id)
    }

    /// [`Executor::apply`], with the secrets and configs of the tasks to
    /// start, by task id (or why they could not be had). A task to start
    /// whose spec names secrets or configs and that has none here is
    /// rejected.
    pub async fn apply_with(
        &self,
        assignments: &[Assignment],
        mut files: BTreeMap<String, Result<TaskMaterial, String>>,
    ) {
        let inner = &self.inner;
        let mut forgotten = Vec::new();
        let mut starts = Vec::new();
        {
            let mut tasks = inner.lock();
            let mut listed = BTreeSet::new();
            for a in assignments {
                listed.insert(a.task_id.as_str());
                let run = a.desired_state == TaskState::Running;
                match tasks.get(&a.task_id) {
                    Some(entry) if !run && !entry.rec.state.is_terminal() => {
                        entry.stop.send_replace(true);
                    }
                    Some(_) => {}
                    None if run => {
                        let mut rec = Record::new(a);
                        let (stop, stop_rx) = watch::channel(false);
                        if !record::valid_task_id(&a.task_id) {
                            rec.fail(
                                TaskState::Rejected,
                                "the task id is not 1 to 128 letters, digits, '-' or '_'",
                            );
                        } else {
                            let got = if a.spec.secrets.is_empty() && a.spec.identity.is_none() {
                                Ok(TaskMaterial::default())
                            } else {
                                files.remove(&a.task_id).unwrap_or_else(|| {
                                    Err("they were not delivered to this node".into())
                                })
                            };
                            match got {
                                Ok(got) => {
                                    starts.push((rec.clone(), a.spec.clone(), stop_rx, got));
                                }
                                Err(e) => rec.fail(
                                    TaskState::Rejected,
                                    format!("cannot get its secrets and configs: {e}"),
                                ),
                            }
                        }
                        tasks.insert(a.task_id.clone(), Entry { rec, stop });
                    }
                    None => {}
                }
            }
            let unlisted: Vec<String> = tasks
                .keys()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            for id in unlisted {
                let terminal = tasks
                    .get(&id)
                    .is_some_and(|entry| entry.rec.state.is_terminal());
                if terminal {
                    if let Some(entry) = tasks.remove(&id) {
                        forgotten.push(entry.rec);
                    }
                } else if let Some(entry) = tasks.get(&id) {
                    entry.stop.send_replace(true);
                }
            }
        }
        if !starts.is_empty() || !forgotten.is_empty() {
            inner.bump();
        }
        for (rec, spec, stop, files) in starts {
            tracing::info!(task = %rec.task_id, service = %rec.service_name, runtime = %rec.runtime, "starting task");
            match rec.runtime {
                Runtime::Process => {
                    tokio::spawn(process::run(inner.clone(), rec, spec, stop, files));
                }
                Runtime::Docker => {
                    tokio::spawn(docker::run(inner.clone(), rec, spec, stop, files));
                }
            }
        }
        for rec in forgotten {
            tracing::info!(task = %rec.task_id, state = %rec.state, "forgetting ended task");
            tokio::spawn(forget(inner.clone(), rec));
        }
    }

    /// Where the identity of task `task_id` stands: `None` if it is not
    /// served (not issued yet, or the daemon restarted since).
    pub fn identity_status(&self, task_id: &str) -> Option<IdentityStatus> {
        self.inner
            .identities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task_id)
            .map(|h| h.status.clone())
    }

    /// The state of task `task_id`, if it is held.
    pub fn state_of(&self, task_id: &str) -> Option<TaskState> {
        self.inner.lock().get(task_id).map(|entry| entry.rec.state)
    }

    /// Whether task `task_id` is held and has not ended (it is starting
    /// or running).
    pub fn is_live(&self, task_id: &str) -> bool {
        self.inner
            .lock()
            .get(task_id)
            .is_some_and(|entry| !entry.rec.state.is_terminal())
    }

    /// Replaces a live task's identity (a renewal, new roots, or the first
    /// one served after a restart): its files are swapped atomically and
    /// its Workload API streams send the new SVID. Refused for a task that
    /// is not live (its files are gone or going).
    pub async fn renew_identity(
        &self,
        task_id: &str,
        identity: WorkloadIdentity,
    ) -> Result<(), String> {
        if !self.is_live(task_id) {
            return Err(format!("task {task_id} is not running on this node"));
        }
        let root = self.inner.config.secrets_root();
        let id = task_id.to_owned();
        let identity = tokio::task::spawn_blocking(move || {
            identity::write(
                &files::kind_dir(&root, &id, moat_orchestrator::SecretKind::Secret),
                &identity::spiffe_dir(&root, &id),
                &identity,
            )
            .map(|()| identity)
        })
        .await
        .map_err(|e| format!("writing the task's identity: {e}"))??;
        self.inner.serve_identity(task_id, &identity)?;
        if !self.is_live(task_id) {
            // It ended meanwhile, and its files went with it: so does the
            // socket just served.
            self.inner.remove_files(task_id).await;
            return Err(format!(
                "task {task_id} ended while its identity was renewed"
            ));
        }
        Ok(())
    }

    /// The current state of every task held, sorted by task id.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.inner
            .lock()
            .values()
            .map(|entry| entry.rec.report())
            .collect()
    }

    /// A receiver whose value grows whenever a report changes (or a task is
    /// added or forgotten).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// A task's output (stdout and stderr), at most its last `tail_bytes`
    /// bytes: a process task's log file; a container's logs from the
    /// Docker Engine (or, once the container is removed, the copy taken
    /// when it was stopped).
    pub async fn logs(&self, task_id: &str, tail_bytes: Option<u64>) -> Result<Vec<u8>, ExecError> {
        let rec = self
            .inner
            .lock()
            .get(task_id)
            .map(|entry| entry.rec.clone())
            .ok_or_else(|| ExecError::UnknownTask {
                task_id: task_id.to_owned(),
            })?;
        if rec.runtime == Runtime::Docker
            && let Some(id) = &rec.container_id
        {
            match docker::logs(&self.inner, task_id, id, tail_bytes).await {
                Ok(Some(bytes)) => return Ok(bytes),
                Ok(None) => {}
                Err(e) => {
                    if !record::log_path(&self.inner.config.dir, task_id).exists() {
                        return Err(e);
                    }
                }
            }
        }
        let path = record::log_path(&self.inner.config.dir, task_id);
        let task_id = task_id.to_owned();
        let read_path = path.clone();
        tokio::task::spawn_blocking(move || read_tail(&read_path, tail_bytes))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })
            .map_err(|source| ExecError::ReadLog {
                task_id,
                path,
                source,
            })
    }

    /// Stops every task (processes: SIGTERM to the group, the grace, then
    /// SIGKILL; containers: `docker stop`), then removes the containers of
    /// all tasks held (their logs are copied to the log files first).
    /// Returns when all have ended, or after the longest grace plus 30 s.
    pub async fn stop_all(&self) {
        let mut changes = self.inner.changes.subscribe();
        let mut grace = 0;
        for entry in self.inner.lock().values() {
            if !entry.rec.state.is_terminal() {
                grace = grace.max(entry.rec.stop_grace_ms);
                entry.stop.send_replace(true);
            }
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(grace) + Duration::from_secs(30);
        loop {
            let running = self
                .inner
                .lock()
                .values()
                .filter(|entry| !entry.rec.state.is_terminal())
                .count();
            if running == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                tracing::warn!(running, "tasks still running after stop_all's deadline");
                break;
            }
        }
        let containers: Vec<(String, String)> = self
            .inner
            .lock()
            .values()
            .filter_map(|entry| {
                entry
                    .rec
                    .container_id
                    .clone()
                    .map(|id| (entry.rec.task_id.clone(), id))
            })
            .collect();
        for (task_id, id) in containers {
            docker::discard(&self.inner, &task_id, &id, true).await;
        }
    }
}

/// Deletes what is left of a forgotten task.
async fn forget(inner: Arc<Inner>, rec: Record) {
    if let Some(id) = &rec.container_id {
        docker::discard(&inner, &rec.task_id, id, false).await;
    }
    let dir = inner.config.dir.clone();
    let task_id = rec.task_id.clone();
    let done = tokio::task::spawn_blocking(move || {
        for path in [
            record::record_path(&dir, &task_id),
            record::log_path(&dir, &task_id),
        ] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a forgotten task's file");
            }
        }
        let work = record::work_path(&dir, &task_id);
        if let Err(e) = std::fs::remove_dir_all(&work)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %work.display(), error = %e, "cannot delete a forgotten task's working directory");
        }
        if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot sync the task directory");
        }
    })
    .await;
    if let Err(e) = done {
        tracing::warn!(task = %rec.task_id, error = %e, "forgetting a task failed");
    }
}

/// Makes the task directory and reads every record in it.
fn load(dir: &std::path::Path) -> Result<Vec<Record>, ExecError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let create = |source| ExecError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(create)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
    let read = |source| ExecError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.ends_with(".json.tmp") {
            // A write that did not finish: the record before it stands.
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete an unfinished record");
            }
        } else if name.ends_with(".json") {
            records.push(record::read(&path)?);
        }
    }
    records.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    Ok(records)
}

/// The last `tail` bytes of a file (all of it if `None`).
fn read_tail(path: &std::path::Path, tail: Option<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if let Some(tail) = tail
        && tail < len
    {
        file.seek(SeekFrom::Start(len - tail))?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Keeps the last `tail` bytes of `bytes`.
pub(crate) fn keep_tail(bytes: &mut Vec<u8>, tail: Option<u64>) {
    if let Some(tail) = tail {
        let tail = usize::try_from(tail).unwrap_or(usize::MAX);
        if bytes.len() > tail {
            bytes.drain(..bytes.len() - tail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Executor>();
    }

    #[test]
    fn tails_keep_the_last_bytes() {
        let mut bytes = b"hello".to_vec();
        keep_tail(&mut bytes, Some(3));
        assert_eq!(bytes, b"llo");
        keep_tail(&mut bytes, Some(10));
        assert_eq!(bytes, b"llo");
        keep_tail(&mut bytes, None);
        assert_eq!(bytes, b"llo");
        keep_tail(&mut bytes, Some(0));
        assert!(bytes.is_empty());
    }
}
