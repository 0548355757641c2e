//! The replicated part of the orchestrator: [`State`] and the [`Command`]s
//! that change it.
//!
//! [`State::apply`] is deterministic: the same commands in the same order
//! give the same state on every manager. A command that cannot apply is
//! refused whole and leaves the state as it was; the changes of a
//! [`Command::Reconcile`] are applied one by one, each only if it still
//! fits (the log may interleave them with other commands).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Assignment, NodeId, Service, ServiceId, ServiceSpec, Task, TaskId, TaskReport, TaskState,
    UpdatePhase, UpdateStatus,
};

/// The longest message or error kept from a task report (bytes).
pub const MAX_REPORT_MESSAGE: usize = 1024;
/// The longest runtime id kept from a task report (bytes).
pub const MAX_RUNTIME_ID: usize = 128;
/// The longest service id accepted (bytes).
pub const MAX_SERVICE_ID_LEN: usize = 64;

/// The services and their tasks, as replicated by the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Every service, by id.
    pub services: BTreeMap<ServiceId, Service>,
    /// Every task, by id.
    pub tasks: BTreeMap<TaskId, Task>,
}

/// A change to the [`State`], as it goes through the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a service. Refused when its id or its name is taken or its
    /// spec is invalid.
    CreateService(Service),
    /// Changes a service's spec (`service update`, `service scale`).
    UpdateService {
        /// The service (exact id).
        id: ServiceId,
        /// Its new spec (same name).
        spec: ServiceSpec,
        /// Replace the tasks even if nothing changed (`--force`).
        force: bool,
        /// The proposer's clock (Unix milliseconds).
        now: i64,
    },
    /// Goes back to the previous spec (`service rollback`).
    RollbackService {
        /// The service (exact id).
        id: ServiceId,
        /// The proposer's clock (Unix milliseconds).
        now: i64,
    },
    /// Removes a service; its tasks are stopped and then deleted.
    RemoveService {
        /// The service (exact id).
        id: ServiceId,
    },
    /// The leader's reconciler's changes.
    Reconcile {
        /// The changes, applied in order, each only if it still fits.
        changes: Vec<Change>,
        /// The proposer's clock (Unix milliseconds).
        now: i64,
    },
    /// What a worker says about its tasks, forwarded by the leader.
    ReportTasks {
        /// The worker (as authenticated by the leader).
        node: NodeId,
        /// Its reports.
        reports: Vec<TaskReport>,
        /// The proposer's clock (Unix milliseconds).
        now: i64,
    },
}

/// One change decided by the reconciler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A new task (skipped if its id exists, its service does not, or its
    /// slot — its node for a global service — already has a task whose
    /// desired state is `Running`).
    AddTask(Task),
    /// Places a task (`New` or `Pending`, desired `Running`) on a node.
    Assign {
        /// The task.
        task: TaskId,
        /// The node.
        node: NodeId,
    },
    /// Marks a task (`New` or `Pending`) as waiting for a node.
    Pending {
        /// The task.
        task: TaskId,
        /// Why ("no suitable node (…)").
        reason: String,
    },
    /// Changes where a task should be (only forward: `Running`, then
    /// `Shutdown`, then `Remove`).
    SetDesired {
        /// The task.
        task: TaskId,
        /// `Shutdown` or `Remove`.
        desired: TaskState,
    },
    /// Moves a task's state forward (e.g. `Orphaned` for a task of a node
    /// that is down).
    SetState {
        /// The task.
        task: TaskId,
        /// The new state.
        state: TaskState,
        /// The status message.
        message: String,
    },
    /// Deletes a task that is over: ended, never placed, or of a service
    /// that is gone.
    DeleteTask(TaskId),
    /// Sets a service's rolling-update status.
    SetUpdateStatus {
        /// The service.
        service: ServiceId,
        /// The status.
        status: Option<UpdateStatus>,
    },
    /// Replaces a service's spec (automatic rollback): applied only when
    /// `previous` is the service's spec at that point (or `None`); bumps
    /// the version, `updated_at` is the command's `now`.
    SetSpec {
        /// The service.
        service: ServiceId,
        /// The spec it gets.
        spec: ServiceSpec,
        /// The spec it had (becomes `previous_spec`).
        previous: Option<ServiceSpec>,
    },
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Whether a node report may carry `state`.
fn reportable(state: TaskState) -> bool {
    state >= TaskState::Accepted && state != TaskState::Remove && state != TaskState::Orphaned
}

impl State {
    /// The service `id_or_name` names: an exact id, an exact name, or a
    /// prefix of exactly one id.
    pub fn service(&self, id_or_name: &str) -> Option<&Service> {
        if id_or_name.is_empty() {
            return None;
        }
        if let Some(s) = self.services.get(id_or_name) {
            return Some(s);
        }
        if let Some(s) = self.services.values().find(|s| s.spec.name == id_or_name) {
            return Some(s);
        }
        let mut matches = self
            .services
            .range::<str, _>((
                std::ops::Bound::Included(id_or_name),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(id, _)| id.starts_with(id_or_name));
        let first = matches.next()?;
        if matches.next().is_some() {
            return None;
        }
        Some(first.1)
    }

    /// The tasks of the service with id `service`, by task id.
    pub fn tasks_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.values().filter(move |t| t.service_id == service)
    }

    /// The tasks placed on the node `node`, by task id.
    pub fn tasks_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks
            .values()
            .filter(move |t| t.node_id.as_deref() == Some(node))
    }

    /// What the node `node` must act on, by task id: its tasks that have
    /// not ended (to run them if desired `Running`, or to stop them if
    /// desired `Shutdown` or `Remove`), and its `Orphaned` tasks (it was
    /// thought down: whatever of them still runs must stop).
    pub fn assignments_for(&self, node: &str) -> Vec<Assignment> {
        self.tasks_on(node)
            .filter(|t| {
                !t.status.state.is_terminal()
                    || (t.status.state == TaskState::Orphaned
                        && t.desired_state != TaskState::Running)
            })
            .map(|t| Assignment {
                task_id: t.id.clone(),
                service_id: t.service_id.clone(),
                service_name: self
                    .services
                    .get(&t.service_id)
                    .map(|s| s.spec.name.clone())
                    .unwrap_or_default(),
                slot: t.slot,
                spec: t.spec.clone(),
                desired_state: t.desired_state,
            })
            .collect()
    }

    /// Applies one command. Deterministic; on `Err` the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), String> {
        match cmd {
            Command::CreateService(service) => self.create_service(service),
            Command::UpdateService {
                id,
                spec,
                force,
                now,
            } => self.update_service(id, spec, *force, *now),
            Command::RollbackService { id, now } => self.rollback_service(id, *now),
            Command::RemoveService { id } => self.remove_service(id),
            Command::Reconcile { changes, now } => {
                self.apply_changes(changes, *now);
                Ok(())
            }
            Command::ReportTasks { node, reports, now } => {
                self.report_tasks(node, reports, *now);
                Ok(())
            }
        }
    }

    fn create_service(&mut self, service: &Service) -> Result<(), String> {
        if service.id.is_empty() || service.id.len() > MAX_SERVICE_ID_LEN {
            return Err(format!(
                "a service id must have 1 to {MAX_SERVICE_ID_LEN} bytes"
            ));
        }
        if self.services.contains_key(&service.id) {
            return Err(format!("service id {} is already taken", service.id));
        }
        if self
            .services
            .values()
            .any(|s| s.spec.name == service.spec.name)
        {
            return Err(format!(
                "a service named {} already exists",
                service.spec.name
            ));
        }
        service.spec.validate()?;
        self.services.insert(service.id.clone(), service.clone());
        Ok(())
    }

    fn update_service(
        &mut self,
        id: &str,
        spec: &ServiceSpec,
        force: bool,
        now: i64,
    ) -> Result<(), String> {
        let Some(service) = self.services.get(id) else {
            return Err(format!("no such service: {id}"));
        };
        if spec.name != service.spec.name {
            return Err(format!(
                "service {} cannot be renamed (to {}): create a new service instead",
                service.spec.name, spec.name
            ));
        }
        if std::mem::discriminant(&spec.mode) != std::mem::discriminant(&service.spec.mode) {
            return Err(format!(
                "the mode of service {} (replicated or global) cannot change",
                service.spec.name
            ));
        }
        spec.validate()?;
        if !force && *spec == service.spec {
            return Ok(());
        }
        let previous = service.spec.clone();
        self.set_spec(
            id,
            spec.clone(),
            Some(previous),
            force,
            false,
            now,
            UpdatePhase::Updating,
        );
        Ok(())
    }

    fn rollback_service(&mut self, id: &str, now: i64) -> Result<(), String> {
        let Some(service) = self.services.get(id) else {
            return Err(format!("no such service: {id}"));
        };
        let Some(previous) = service.previous_spec.clone() else {
            return Err(format!(
                "service {} has no previous spec to roll back to",
                service.spec.name
            ));
        };
        let current = service.spec.clone();
        // A rollback always shows as one, even when only settings that
        // keep the tasks change back.
        self.set_spec(
            id,
            previous,
            Some(current),
            false,
            true,
            now,
            UpdatePhase::RollbackStarted,
        );
        Ok(())
    }

    /// Gives service `id` the spec `spec`: version + 1, `updated_at` =
    /// `now`. Unless `force`, the tasks that already run the new task spec
    /// (all of them when only replicas, labels, placement, restart or
    /// update settings change; the old tasks on a rollback) are relabelled
    /// with the new version: they fit it, and only the others are replaced
    /// by the rolling update. A rolling update status (`phase`) is set when
    /// the task spec changes, on `force`, or when `always_status`.
    #[allow(clippy::too_many_arguments)]
    fn set_spec(
        &mut self,
        id: &str,
        spec: ServiceSpec,
        previous: Option<ServiceSpec>,
        force: bool,
        always_status: bool,
        now: i64,
        phase: UpdatePhase,
    ) {
        let Some(service) = self.services.get_mut(id) else {
            return;
        };
        let new_tasks = force || service.spec.task != spec.task;
        service.spec = spec;
        service.previous_spec = previous;
        service.version = service.version.saturating_add(1);
        service.updated_at = now;
        if new_tasks || always_status {
            service.update_status = Some(UpdateStatus {
                phase,
                started_at: now,
                last_batch_at: now,
                message: String::new(),
            });
        }
        if !force {
            let new_version = service.version;
            let task_spec = &service.spec.task;
            for task in self.tasks.values_mut() {
                if task.service_id == id && task.spec == *task_spec {
                    task.version = new_version;
                }
            }
        }
    }

    fn remove_service(&mut self, id: &str) -> Result<(), String> {
        if self.services.remove(id).is_none() {
            return Err(format!("no such service: {id}"));
        }
        for task in self.tasks.values_mut() {
            if task.service_id == id {
                task.desired_state = TaskState::Remove;
            }
        }
        Ok(())
    }

    fn apply_changes(&mut self, changes: &[Change], now: i64) {
        // Slots (replicated) and nodes (global) that have a task desired
        // Running: an AddTask never puts a second one there.
        let mut occupied: BTreeSet<(String, u64, Option<String>)> = BTreeSet::new();
        let unit = |t: &Task| {
            if t.slot == 0 {
                (t.service_id.clone(), 0, t.node_id.clone())
            } else {
                (t.service_id.clone(), t.slot, None)
            }
        };
        for t in self.tasks.values() {
            if t.desired_state == TaskState::Running {
                occupied.insert(unit(t));
            }
        }
        for change in changes {
            match change {
                Change::AddTask(task) => {
                    if self.tasks.contains_key(&task.id)
                        || !self.services.contains_key(&task.service_id)
                        || task.id.is_empty()
                    {
                        continue;
                    }
                    if task.desired_state == TaskState::Running && !occupied.insert(unit(task)) {
                        continue;
                    }
                    self.tasks.insert(task.id.clone(), task.clone());
                }
                Change::Assign { task, node } => {
                    if let Some(t) = self.tasks.get_mut(task)
                        && matches!(t.status.state, TaskState::New | TaskState::Pending)
                        && t.desired_state == TaskState::Running
                        && t.node_id.is_none()
                    {
                        t.node_id = Some(node.clone());
                        t.status.state = TaskState::Assigned;
                        t.status.since = now;
                        t.status.message = "assigned".into();
                    }
                }
                Change::Pending { task, reason } => {
                    if let Some(t) = self.tasks.get_mut(task)
                        && matches!(t.status.state, TaskState::New | TaskState::Pending)
                        && t.node_id.is_none()
                    {
                        if t.status.state != TaskState::Pending {
                            t.status.state = TaskState::Pending;
                            t.status.since = now;
                        }
                        t.status.message = truncate(reason, MAX_REPORT_MESSAGE);
                    }
                }
                Change::SetDesired { task, desired } => {
                    if let Some(t) = self.tasks.get_mut(task)
                        && *desired > t.desired_state
                    {
                        if t.desired_state == TaskState::Running {
                            occupied.remove(&unit(t));
                        }
                        t.desired_state = *desired;
                    }
                }
                Change::SetState {
                    task,
                    state,
                    message,
                } => {
                    if let Some(t) = self.tasks.get_mut(task)
                        && !t.status.state.is_terminal()
                        && *state > t.status.state
                    {
                        t.status.state = *state;
                        t.status.since = now;
                        t.status.message = truncate(message, MAX_REPORT_MESSAGE);
                    }
                }
                Change::DeleteTask(id) => {
                    let deletable = self.tasks.get(id).is_some_and(|t| {
                        t.status.state.is_terminal()
                            || t.node_id.is_none()
                            || !self.services.contains_key(&t.service_id)
                    });
                    if deletable
                        && let Some(t) = self.tasks.remove(id)
                        && t.desired_state == TaskState::Running
                    {
                        occupied.remove(&unit(&t));
                    }
                }
                Change::SetUpdateStatus { service, status } => {
                    if let Some(s) = self.services.get_mut(service) {
                        s.update_status = status.clone();
                    }
                }
                Change::SetSpec {
                    service,
                    spec,
                    previous,
                } => {
                    let Some(s) = self.services.get(service) else {
                        continue;
                    };
                    let fits = previous.as_ref().is_none_or(|p| *p == s.spec)
                        && spec.name == s.spec.name
                        && std::mem::discriminant(&spec.mode)
                            == std::mem::discriminant(&s.spec.mode)
                        && spec.validate().is_ok();
                    if fits {
                        // The reconciler sets the update status next.
                        self.set_spec(
                            service,
                            spec.clone(),
                            previous.clone(),
                            false,
                            false,
                            now,
                            UpdatePhase::RollbackStarted,
                        );
                    }
                }
            }
        }
    }

    fn report_tasks(&mut self, node: &str, reports: &[TaskReport], now: i64) {
        for report in reports {
            if !reportable(report.state) {
                continue;
            }
            let Some(task) = self.tasks.get_mut(&report.task_id) else {
                continue;
            };
            if task.node_id.as_deref() != Some(node) {
                continue;
            }
            let current = task.status.state;
            // Forward only, nothing out of a terminal state; but an
            // orphaned task (its node was thought down) takes the end its
            // node reports.
            let forward = !current.is_terminal() && report.state > current;
            let orphan_ended = current == TaskState::Orphaned && report.state.is_terminal();
            if !forward && !orphan_ended {
                continue;
            }
            task.status.state = report.state;
            task.status.since = now;
            task.status.message = truncate(&report.message, MAX_REPORT_MESSAGE);
            task.status.error = report
                .error
                .as_deref()
                .map(|e| truncate(e, MAX_REPORT_MESSAGE));
            task.status.runtime_id = report
                .runtime_id
                .as_deref()
                .map(|r| truncate(r, MAX_RUNTIME_ID));
            task.status.exit_code = report.exit_code;
            if report.state.is_terminal() && task.desired_state == TaskState::Remove {
                let id = task.id.clone();
                self.tasks.remove(&id);
            }
        }
    }
}
