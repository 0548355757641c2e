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
    /// Every secret and config, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<crate::SecretId, crate::Secret>,
}

/// A change to the [`State`], as it goes through the Raft log.
// Variants hold the model types by value (no Box) so callers build and
// match them directly; commands are short-lived.
#[allow(clippy::large_enum_variant)]
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
    /// Creates a secret or config (with its version 1). Refused when its
    /// id or its name (within its kind) is taken, or it is invalid.
    CreateSecret(crate::Secret),
    /// Adds a version to a secret or config; the services that follow it
    /// roll onto the new version.
    UpdateSecret {
        /// The secret (exact id).
        id: crate::SecretId,
        /// The new version (the latest + 1).
        version: crate::SecretVersion,
        /// The proposer's clock (Unix milliseconds).
        now: i64,
    },
    /// Removes a secret or config; refused while a service uses it.
    RemoveSecret {
        /// The secret (exact id).
        id: crate::SecretId,
    },
    /// Records the workload certificate the leader issued a task (skipped
    /// unless the task is on `node`, is to run and has not ended).
    RecordIdentity {
        /// The task.
        task: TaskId,
        /// The node it was issued through (as authenticated by the leader).
        node: NodeId,
        /// The certificate.
        identity: crate::TaskIdentity,
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
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// A new task (skipped if its id exists, its service does not, its
    /// desired state is not `Running`, `Shutdown` or `Remove`, or its slot
    /// — its node for a global service — already has a task whose desired
    /// state is `Running`).
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
/// `report` with its texts cut to what the store keeps.
fn clamp_report(mut report: TaskReport) -> TaskReport {
    report.message = truncate(&report.message, MAX_REPORT_MESSAGE);
    report.error = report
        .error
        .as_deref()
        .map(|e| truncate(e, MAX_REPORT_MESSAGE));
    report.runtime_id = report
        .runtime_id
        .as_deref()
        .map(|r| truncate(r, MAX_RUNTIME_ID));
    report
}

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

    /// Every task of the node `node`, by task id: those that have not
    /// ended, to run (desired `Running`) or to stop (`Shutdown`,
    /// `Remove`); and those that ended, as `Shutdown` (or `Remove`)
    /// whatever is wanted of them, so that the node keeps their records
    /// and output (`service logs`) while the store keeps them in the
    /// history, never runs one again, and stops what still runs of an
    /// `Orphaned` one (it was thought down).
    pub fn assignments_for(&self, node: &str) -> Vec<Assignment> {
        self.tasks_on(node)
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
                desired_state: if t.status.state.is_terminal()
                    && t.desired_state == TaskState::Running
                {
                    TaskState::Shutdown
                } else {
                    t.desired_state
                },
            })
            .collect()
    }

    /// Applies one command. Deterministic; on `Err` the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), String> {
        self.apply_command(cmd)?;
        self.prune_secret_versions();
        Ok(())
    }

    fn apply_command(&mut self, cmd: &Command) -> Result<(), String> {
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
            Command::RecordIdentity {
                task,
                node,
                identity,
            } => {
                if self.task_to_run(task, node).is_ok()
                    && let Some(t) = self.tasks.get_mut(task)
                {
                    t.identity = Some(identity.clone());
                }
                Ok(())
            }
            Command::CreateSecret(secret) => self.create_secret(secret),
            Command::UpdateSecret { id, version, now } => self.update_secret(id, version, *now),
            Command::RemoveSecret { id } => self.remove_secret(id),
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
        self.check_refs(&service.spec.task)?;
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
        self.check_refs(&spec.task)?;
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
        let Some(previous) = service.previous_spec.as_ref() else {
            return Err(format!(
                "service {} has no previous spec to roll back to",
                service.spec.name
            ));
        };
        let previous = self
            .resolve_previous(previous)
            .map_err(|e| format!("cannot roll back service {}: {e}", service.spec.name))?;
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
    pub(crate) fn set_spec(
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
                    let desired_ok = matches!(
                        task.desired_state,
                        TaskState::Running | TaskState::Shutdown | TaskState::Remove
                    );
                    if self.tasks.contains_key(&task.id)
                        || !self.services.contains_key(&task.service_id)
                        || task.id.is_empty()
                        || !desired_ok
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
                        && matches!(desired, TaskState::Shutdown | TaskState::Remove)
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
                        && spec.validate().is_ok()
                        && self.check_refs(&spec.task).is_ok();
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

    /// Whether `ReportTasks` from `node` would take `report`: a state a
    /// node may report, about a task of that node, moving it forward
    /// (nothing leaves an end state, but an orphaned task, whose node was
    /// thought down, takes the end its node reports).
    pub fn takes_report(&self, node: &str, report: &TaskReport) -> bool {
        if !reportable(report.state) {
            return false;
        }
        let Some(task) = self.tasks.get(&report.task_id) else {
            return false;
        };
        if task.node_id.as_deref() != Some(node) {
            return false;
        }
        let current = task.status.state;
        let forward = !current.is_terminal() && report.state > current;
        let orphan_ended = current == TaskState::Orphaned && report.state.is_terminal();
        forward || orphan_ended
    }

    /// What of `reports` a leader should propose for `node`: only the
    /// reports [`takes_report`](Self::takes_report) accepts, one per task
    /// (the furthest state; the later one of equals), with their texts cut
    /// to what the store keeps. A node that repeats itself, lies about
    /// other nodes' tasks or pads its reports costs no Raft write and no
    /// log space beyond what the state would hold.
    pub fn reports_to_propose(&self, node: &str, reports: Vec<TaskReport>) -> Vec<TaskReport> {
        let mut by_task: BTreeMap<TaskId, TaskReport> = BTreeMap::new();
        for report in reports {
            if !self.takes_report(node, &report) {
                continue;
            }
            if by_task
                .get(&report.task_id)
                .is_some_and(|kept| kept.state > report.state)
            {
                continue;
            }
            by_task.insert(report.task_id.clone(), clamp_report(report));
        }
        by_task.into_values().collect()
    }

    fn report_tasks(&mut self, node: &str, reports: &[TaskReport], now: i64) {
        for report in reports {
            if !self.takes_report(node, report) {
                continue;
            }
            let Some(task) = self.tasks.get_mut(&report.task_id) else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, TaskSpec, TaskStatus};

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            task: TaskSpec {
                image: "app:1".into(),
                ..TaskSpec::default()
            },
            mode: Mode::Replicated { replicas: 1 },
            ..ServiceSpec::default()
        }
    }

    fn service(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            spec: spec(name),
            previous_spec: None,
            version: 1,
            created_at: 0,
            updated_at: 0,
            update_status: None,
        }
    }

    fn task(id: &str, service: &str, node: Option<&str>, state: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            slot: 1,
            node_id: node.map(str::to_string),
            version: 1,
            spec: spec("x").task,
            desired_state: TaskState::Running,
            status: TaskStatus {
                state,
                since: 0,
                message: String::new(),
                error: None,
                runtime_id: None,
                exit_code: None,
            },
            attempt: 0,
            created_at: 0,
            identity: None,
        }
    }

    fn report(id: &str, state: TaskState) -> TaskReport {
        TaskReport {
            task_id: id.into(),
            state,
            since: 999,
            message: "m".into(),
            error: None,
            runtime_id: None,
            exit_code: None,
        }
    }

    fn with_task(t: Task) -> State {
        let mut s = State::default();
        s.apply(&Command::CreateService(service("S1", "web")))
            .unwrap();
        s.tasks.insert(t.id.clone(), t);
        s
    }

    #[test]
    fn create_refuses_duplicates_and_bad_specs() {
        let mut s = State::default();
        s.apply(&Command::CreateService(service("S1", "web")))
            .unwrap();
        let before = s.clone();
        assert!(
            s.apply(&Command::CreateService(service("S1", "other")))
                .unwrap_err()
                .contains("already taken")
        );
        assert!(
            s.apply(&Command::CreateService(service("S2", "web")))
                .unwrap_err()
                .contains("already exists")
        );
        let mut bad = service("S3", "bad name");
        bad.spec.name = "-x".into();
        assert!(s.apply(&Command::CreateService(bad)).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn lookup_by_id_name_or_unique_prefix() {
        let mut s = State::default();
        s.apply(&Command::CreateService(service("ABC1", "web")))
            .unwrap();
        s.apply(&Command::CreateService(service("ABD2", "db")))
            .unwrap();
        assert_eq!(s.service("ABC1").unwrap().spec.name, "web");
        assert_eq!(s.service("db").unwrap().id, "ABD2");
        assert_eq!(s.service("ABC").unwrap().id, "ABC1");
        assert!(s.service("AB").is_none(), "ambiguous");
        assert!(s.service("").is_none());
        assert!(s.service("Z").is_none());
    }

    #[test]
    fn update_rules() {
        let mut s = State::default();
        s.apply(&Command::CreateService(service("S1", "web")))
            .unwrap();
        // No change, no force: accepted, nothing happens.
        s.apply(&Command::UpdateService {
            id: "S1".into(),
            spec: spec("web"),
            force: false,
            now: 5,
        })
        .unwrap();
        assert_eq!(s.services["S1"].version, 1);
        assert_eq!(s.services["S1"].update_status, None);
        let mut renamed = spec("web2");
        renamed.task.image = "app:2".into();
        assert!(
            s.apply(&Command::UpdateService {
                id: "S1".into(),
                spec: renamed,
                force: false,
                now: 5,
            })
            .unwrap_err()
            .contains("cannot be renamed")
        );
        let mut global = spec("web");
        global.mode = Mode::Global;
        assert!(
            s.apply(&Command::UpdateService {
                id: "S1".into(),
                spec: global,
                force: false,
                now: 5,
            })
            .is_err()
        );
        let mut v2 = spec("web");
        v2.task.image = "app:2".into();
        s.apply(&Command::UpdateService {
            id: "S1".into(),
            spec: v2.clone(),
            force: false,
            now: 7,
        })
        .unwrap();
        let svc = &s.services["S1"];
        assert_eq!(svc.version, 2);
        assert_eq!(svc.updated_at, 7);
        assert_eq!(svc.previous_spec.as_ref().unwrap().task.image, "app:1");
        let status = svc.update_status.clone().unwrap();
        assert_eq!(
            (status.phase, status.started_at),
            (UpdatePhase::Updating, 7)
        );
        // Forced without change: new version, update started.
        s.apply(&Command::UpdateService {
            id: "S1".into(),
            spec: v2,
            force: true,
            now: 9,
        })
        .unwrap();
        assert_eq!(s.services["S1"].version, 3);
        assert_eq!(
            s.services["S1"].update_status.as_ref().unwrap().started_at,
            9
        );
    }

    #[test]
    fn rollback_swaps_specs() {
        let mut s = State::default();
        s.apply(&Command::CreateService(service("S1", "web")))
            .unwrap();
        assert_eq!(
            s.apply(&Command::RollbackService {
                id: "S1".into(),
                now: 1
            })
            .unwrap_err(),
            "service web has no previous spec to roll back to"
        );
        let mut v2 = spec("web");
        v2.task.image = "app:2".into();
        s.apply(&Command::UpdateService {
            id: "S1".into(),
            spec: v2,
            force: false,
            now: 2,
        })
        .unwrap();
        s.apply(&Command::RollbackService {
            id: "S1".into(),
            now: 3,
        })
        .unwrap();
        let svc = &s.services["S1"];
        assert_eq!(svc.spec.task.image, "app:1");
        assert_eq!(svc.previous_spec.as_ref().unwrap().task.image, "app:2");
        assert_eq!(svc.version, 3);
        assert_eq!(
            svc.update_status.as_ref().unwrap().phase,
            UpdatePhase::RollbackStarted
        );
    }

    #[test]
    fn remove_marks_tasks() {
        let mut s = with_task(task("T1", "S1", Some("n1"), TaskState::Running));
        s.apply(&Command::RemoveService { id: "S1".into() })
            .unwrap();
        assert!(s.services.is_empty());
        assert_eq!(s.tasks["T1"].desired_state, TaskState::Remove);
        assert!(
            s.apply(&Command::RemoveService { id: "S1".into() })
                .is_err()
        );
        // Its node stops it: it is deleted.
        s.apply(&Command::ReportTasks {
            node: "n1".into(),
            reports: vec![report("T1", TaskState::Shutdown)],
            now: 10,
        })
        .unwrap();
        assert!(s.tasks.is_empty());
    }

    #[test]
    fn reports_move_forward_only_from_the_tasks_node() {
        let mut s = with_task(task("T1", "S1", Some("n1"), TaskState::Assigned));
        let rep = |s: &mut State, node: &str, state| {
            s.apply(&Command::ReportTasks {
                node: node.into(),
                reports: vec![report("T1", state)],
                now: 50,
            })
            .unwrap();
        };
        rep(&mut s, "n2", TaskState::Running);
        assert_eq!(
            s.tasks["T1"].status.state,
            TaskState::Assigned,
            "wrong node"
        );
        rep(&mut s, "n1", TaskState::Orphaned);
        rep(&mut s, "n1", TaskState::Pending);
        assert_eq!(s.tasks["T1"].status.state, TaskState::Assigned);
        rep(&mut s, "n1", TaskState::Running);
        assert_eq!(s.tasks["T1"].status.state, TaskState::Running);
        assert_eq!(s.tasks["T1"].status.since, 50, "the proposer's clock");
        rep(&mut s, "n1", TaskState::Starting);
        assert_eq!(s.tasks["T1"].status.state, TaskState::Running);
        rep(&mut s, "n1", TaskState::Failed);
        rep(&mut s, "n1", TaskState::Running);
        assert_eq!(s.tasks["T1"].status.state, TaskState::Failed);
        rep(&mut s, "n1", TaskState::Rejected);
        assert_eq!(s.tasks["T1"].status.state, TaskState::Failed);
    }

    /// An ended task is listed to its node as `Shutdown`, whatever is
    /// wanted of it: never run again (even by a node that lost its
    /// record), and its output kept while it is in the history.
    #[test]
    fn ended_tasks_are_listed_never_to_run() {
        let mut s = with_task(task("T1", "S1", Some("n1"), TaskState::Running));
        s.apply(&Command::ReportTasks {
            node: "n1".into(),
            reports: vec![report("T1", TaskState::Failed)],
            now: 3,
        })
        .unwrap();
        assert_eq!(s.tasks["T1"].desired_state, TaskState::Running);
        let a = s.assignments_for("n1");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].desired_state, TaskState::Shutdown);
    }

    /// What a leader proposes is exactly what apply would take: one
    /// report per task (the furthest), clamped, nothing about other
    /// nodes' tasks, nothing backward or leader-only, and an orphan's end.
    #[test]
    fn only_reports_that_change_the_state_are_proposed() {
        let mut s = with_task(task("T1", "S1", Some("n1"), TaskState::Starting));
        s.tasks.insert(
            "T2".into(),
            task("T2", "S1", Some("n2"), TaskState::Running),
        );
        s.tasks.insert(
            "T3".into(),
            task("T3", "S1", Some("n1"), TaskState::Orphaned),
        );
        let mut padded = report("T1", TaskState::Running);
        padded.error = Some("x".repeat(5000));
        let reports = vec![
            report("T1", TaskState::Accepted),
            padded.clone(),
            padded.clone(),
            report("T1", TaskState::Preparing),
            report("T2", TaskState::Failed),
            report("T3", TaskState::Orphaned),
            report("T3", TaskState::Shutdown),
            report("T9", TaskState::Running),
        ];
        let proposed = s.reports_to_propose("n1", reports.clone());
        let ids: Vec<(&str, TaskState)> = proposed
            .iter()
            .map(|r| (r.task_id.as_str(), r.state))
            .collect();
        assert_eq!(
            ids,
            [("T1", TaskState::Running), ("T3", TaskState::Shutdown)]
        );
        assert_eq!(proposed[0].error.as_ref().unwrap().len(), 1024);
        // Applying what was proposed gives the state applying everything
        // would have given.
        let mut all = s.clone();
        all.apply(&Command::ReportTasks {
            node: "n1".into(),
            reports,
            now: 7,
        })
        .unwrap();
        s.apply(&Command::ReportTasks {
            node: "n1".into(),
            reports: proposed,
            now: 7,
        })
        .unwrap();
        assert_eq!(s, all);
        // Once applied, the same reports propose nothing.
        assert!(s.reports_to_propose("n1", vec![padded]).is_empty());
    }

    #[test]
    fn reports_are_truncated() {
        let mut s = with_task(task("T1", "S1", Some("n1"), TaskState::Assigned));
        let mut r = report("T1", TaskState::Failed);
        r.message = "é".repeat(1000);
        r.error = Some("x".repeat(5000));
        r.runtime_id = Some("r".repeat(500));
        r.exit_code = Some(3);
        s.apply(&Command::ReportTasks {
            node: "n1".into(),
            reports: vec![r],
            now: 1,
        })
        .unwrap();
        let st = &s.tasks["T1"].status;
        assert_eq!(st.message.len(), 1024);
        assert_eq!(st.error.as_ref().unwrap().len(), 1024);
        assert_eq!(st.runtime_id.as_ref().unwrap().len(), 128);
        assert_eq!(st.exit_code, Some(3));
    }

    #[test]
    fn stale_changes_are_skipped() {
        let mut s = with_task(task("T1", "S1", None, TaskState::New));
        let before = s.clone();
        s.apply(&Command::Reconcile {
            changes: vec![
                Change::Assign {
                    task: "nope".into(),
                    node: "n1".into(),
                },
                Change::SetDesired {
                    task: "nope".into(),
                    desired: TaskState::Shutdown,
                },
                Change::DeleteTask("nope".into()),
                Change::SetUpdateStatus {
                    service: "nope".into(),
                    status: None,
                },
                Change::AddTask(task("T9", "gone", None, TaskState::New)),
                // A second live task in slot 1 is refused.
                Change::AddTask(task("T2", "S1", None, TaskState::New)),
                // An existing id is not replaced.
                Change::AddTask(task("T1", "S1", Some("n3"), TaskState::Running)),
            ],
            now: 5,
        })
        .unwrap();
        assert_eq!(s, before);
        s.apply(&Command::Reconcile {
            changes: vec![
                Change::Assign {
                    task: "T1".into(),
                    node: "n1".into(),
                },
                Change::Assign {
                    task: "T1".into(),
                    node: "n2".into(),
                },
                Change::Pending {
                    task: "T1".into(),
                    reason: "late".into(),
                },
                Change::SetState {
                    task: "T1".into(),
                    state: TaskState::New,
                    message: "back".into(),
                },
            ],
            now: 6,
        })
        .unwrap();
        let t = &s.tasks["T1"];
        assert_eq!(t.node_id.as_deref(), Some("n1"));
        assert_eq!(t.status.state, TaskState::Assigned);
        // Desired only moves forward; a shut down slot takes a new task.
        s.apply(&Command::Reconcile {
            changes: vec![
                Change::SetDesired {
                    task: "T1".into(),
                    desired: TaskState::Shutdown,
                },
                Change::SetDesired {
                    task: "T1".into(),
                    desired: TaskState::Running,
                },
                Change::AddTask(task("T2", "S1", None, TaskState::New)),
                // Not deletable: placed and not ended.
                Change::DeleteTask("T1".into()),
                Change::SetState {
                    task: "T1".into(),
                    state: TaskState::Orphaned,
                    message: "node n1 is down".into(),
                },
                Change::SetState {
                    task: "T1".into(),
                    state: TaskState::Running,
                    message: "no".into(),
                },
            ],
            now: 7,
        })
        .unwrap();
        assert_eq!(s.tasks["T1"].desired_state, TaskState::Shutdown);
        assert_eq!(s.tasks["T1"].status.state, TaskState::Orphaned);
        assert!(s.tasks.contains_key("T2"));
        // The orphan's node tells it ended: it leaves Orphaned.
        let a = s.assignments_for("n1");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].desired_state, TaskState::Shutdown);
        s.apply(&Command::ReportTasks {
            node: "n1".into(),
            reports: vec![report("T1", TaskState::Shutdown)],
            now: 8,
        })
        .unwrap();
        assert_eq!(s.tasks["T1"].status.state, TaskState::Shutdown);
        // Still listed, to stop (never to run), while it is history: its
        // node keeps its output.
        let a = s.assignments_for("n1");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].desired_state, TaskState::Shutdown);
        s.apply(&Command::Reconcile {
            changes: vec![Change::DeleteTask("T1".into())],
            now: 9,
        })
        .unwrap();
        assert!(!s.tasks.contains_key("T1"));
        assert!(s.assignments_for("n1").is_empty(), "forgotten with it");
    }

    #[test]
    fn set_spec_needs_the_expected_previous() {
        let mut s = State::default();
        s.apply(&Command::CreateService(service("S1", "web")))
            .unwrap();
        let mut v2 = spec("web");
        v2.task.image = "app:2".into();
        let wrong = Change::SetSpec {
            service: "S1".into(),
            spec: v2.clone(),
            previous: Some(v2.clone()),
        };
        s.apply(&Command::Reconcile {
            changes: vec![wrong],
            now: 3,
        })
        .unwrap();
        assert_eq!(s.services["S1"].version, 1);
        let right = Change::SetSpec {
            service: "S1".into(),
            spec: v2,
            previous: Some(spec("web")),
        };
        s.apply(&Command::Reconcile {
            changes: vec![right.clone(), right],
            now: 4,
        })
        .unwrap();
        assert_eq!(s.services["S1"].version, 2, "applied once");
        assert_eq!(s.services["S1"].updated_at, 4);
    }

    #[test]
    fn state_round_trips_as_json() {
        let s = with_task(task("T1", "S1", Some("n1"), TaskState::Running));
        let text = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let cmd = Command::Reconcile {
            changes: vec![Change::Pending {
                task: "T1".into(),
                reason: "r".into(),
            }],
            now: 1,
        };
        let back: Command = serde_json::from_str(&serde_json::to_string(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
    }
}
