//! The scheduler and the reconciler, in one pure function: [`reconcile`].
//!
//! From the nodes, the services and their tasks, it decides the
//! [`Change`]s that bring what runs to what is wanted (Docker swarmkit's
//! semantics). Time and new task ids are inputs; the output depends on
//! nothing else, so two managers given the same inputs decide the same.
//!
//! The rules, per service:
//!
//! * **Replicated** services have slots `1..=replicas`, each with at most
//!   one *live* task (desired `Running`). A slot without one gets a new
//!   task, unless it is *finished*: its newest task (latest `created_at`,
//!   then highest version, attempt, id) was made for the current version, has
//!   ended, has desired `Shutdown`, and the restart policy does not want it
//!   restarted (condition `none`; `on-failure` and it completed;
//!   `max_attempts` reached). A version change (`service update`, even
//!   `--force`) revives finished slots. Slots above `replicas` (scale
//!   down, highest first) get desired `Remove`: their tasks are deleted
//!   once they have stopped.
//! * **Global** services have one live task per node that is ready, not
//!   drained, and meets the constraints; a new one is made only on an
//!   active node (a paused node keeps its tasks). Global tasks are made
//!   placed: `node_id` set and state `Assigned`, with no `Assign` change.
//!   A node that is drained or no longer meets the constraints has its
//!   task's desired state set to `Remove`.
//! * **Restarts**: a live task that ended is replaced (desired `Shutdown`
//!   on it, a new task in its slot with `attempt + 1`) when the policy
//!   wants it, once `now >= status.since + restart.delay_ms`; when the
//!   policy does not, it gets desired `Shutdown` and its slot is finished.
//! * **Lost nodes**: a live task on a node that is not ready (or not
//!   listed at all) for `down_grace_ms` since its last status change
//!   becomes `Orphaned` (desired `Shutdown`) and is replaced at once
//!   (replicated), whatever `max_attempts` says; restart condition `none`
//!   replaces nothing. When the node comes back it is told to stop it (see
//!   [`State::assignments_for`]).
//! * **Drain** and constraints that a node no longer meets: its live tasks
//!   of a replicated service are replaced elsewhere in the same slot.
//! * **Scheduling** (replicated): nodes ready, active, meeting every
//!   constraint; by the first `spread_over` label first (the group of
//!   nodes with the fewest tasks of the service; nodes without the label
//!   form a group), then the fewest tasks of the service on the node, then
//!   the fewest tasks overall, then the node id.
//! * **Rolling updates**: live tasks of an older version are replaced in
//!   batches of `update.parallelism` (0: all), stop-first, new tasks with
//!   attempt 0 (restart budgets are per version). A batch starts when
//!   every live task of the current version has been `Running` for
//!   `update.monitor_ms` and `now >= last_batch_at + update.delay_ms` (no
//!   delay before the first batch). A new-version task that fails
//!   (`Failed`, `Rejected`) pauses the update (`Paused`, or
//!   `RollbackPaused` during a rollback) or, with failure action
//!   `rollback` and a previous spec, rolls it back ([`Change::SetSpec`]).
//!   Unplaced tasks of an older version are replaced at once.
//! * **Removed services**: unplaced, ended tasks and tasks on lost nodes
//!   are deleted; the others get desired `Remove` and are deleted when
//!   their node reports them ended.
//! * **History**: per slot (per node for global services) at most
//!   `history_per_slot` ended tasks that are no longer live are kept,
//!   never the slot's newest task (it marks a finished slot), nor an
//!   orphaned task whose node is listed but not ready.
//! * **Cap**: at most `max_changes` changes; a replacement's changes are
//!   never split. What is left comes in the next call.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{
    Constraint, FailureAction, Mode, NodeId, RestartCondition, Service, ServiceId, Task, TaskId,
    TaskState, TaskStatus, UpdatePhase, UpdateStatus,
};
use crate::nodes::{NodeAvailability, NodeView};
use crate::state::{Change, State};

/// Bounds on one [`reconcile`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The most changes in one plan (default 5000).
    pub max_changes: usize,
    /// Ended tasks kept per slot (default 5).
    pub history_per_slot: usize,
    /// How long a task on a node that is not ready keeps its place, from
    /// its last status change (milliseconds; default 0).
    pub down_grace_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_changes: 5000,
            history_per_slot: 5,
            down_grace_ms: 0,
        }
    }
}

/// What [`reconcile`] decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The changes, for one [`crate::Command::Reconcile`].
    pub changes: Vec<Change>,
    /// Per service that got placements (or waits for a node) in this plan,
    /// for the audit log; by service id.
    pub placements: Vec<PlacementSummary>,
}

/// Where one service's tasks went in one plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSummary {
    /// The service.
    pub service_id: ServiceId,
    /// Its name.
    pub service_name: String,
    /// Tasks placed in this plan, by node.
    pub placed: BTreeMap<NodeId, u64>,
    /// Tasks left waiting for a node.
    pub pending: u64,
    /// Why they wait.
    pub reason: Option<String>,
}

/// The changes of a plan, with its cap.
struct Planner<'a> {
    changes: Vec<Change>,
    max: usize,
    full: bool,
    new_id: &'a mut dyn FnMut() -> TaskId,
}

impl Planner<'_> {
    /// Whether `n` more changes fit; once one group does not, nothing more
    /// is added.
    fn room(&mut self, n: usize) -> bool {
        if self.full {
            return false;
        }
        if self.changes.len().saturating_add(n) > self.max {
            self.full = true;
            return false;
        }
        true
    }

    fn push(&mut self, group: Vec<Change>) -> bool {
        if !self.room(group.len()) {
            return false;
        }
        self.changes.extend(group);
        true
    }
}

/// Where a task's node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// Ready; its index in the node list.
    Up(usize),
    /// Not ready (or not listed) for longer than the grace period.
    Lost,
    /// Not ready, within the grace period.
    Waiting,
}

struct Nodes<'a> {
    list: Vec<&'a NodeView>,
    index: BTreeMap<&'a str, usize>,
}

impl<'a> Nodes<'a> {
    fn new(nodes: &'a [NodeView]) -> Self {
        let mut index = BTreeMap::new();
        let mut by_id: BTreeMap<&'a str, &'a NodeView> = BTreeMap::new();
        for n in nodes {
            by_id.entry(n.id.as_str()).or_insert(n);
        }
        let list: Vec<&'a NodeView> = by_id.into_values().collect();
        for (i, n) in list.iter().enumerate() {
            index.insert(n.id.as_str(), i);
        }
        Self { list, index }
    }

    fn health(&self, node: &str, task: &Task, now: i64, grace: i64) -> Health {
        match self.index.get(node) {
            Some(&i) if self.list.get(i).is_some_and(|n| n.ready) => Health::Up(i),
            _ if now.saturating_sub(task.status.since) < grace => Health::Waiting,
            _ => Health::Lost,
        }
    }

    /// Listed but not ready.
    fn listed_down(&self, node: &str) -> bool {
        self.index
            .get(node)
            .and_then(|&i| self.list.get(i))
            .is_some_and(|n| !n.ready)
    }
}

fn is_live(t: &Task) -> bool {
    t.desired_state == TaskState::Running
}

/// Whether the restart policy wants an ended task replaced.
fn restart_wanted(service: &Service, t: &Task) -> bool {
    let policy = &service.spec.restart;
    let lost = t.status.state == TaskState::Orphaned;
    match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure if t.status.state == TaskState::Complete => false,
        _ => lost || policy.max_attempts.is_none_or(|max| t.attempt < max),
    }
}

/// Whether an ended live task gets a replacement: a task of an older
/// version always does (the service moved on), others as the restart
/// policy says. The complement of [`finished`] once it is given up.
fn should_replace(service: &Service, t: &Task) -> bool {
    t.version < service.version || restart_wanted(service, t)
}

/// Whether a slot whose newest task is `newest` is over (see the module
/// documentation).
fn finished(service: &Service, newest: &Task) -> bool {
    newest.version == service.version
        && newest.desired_state == TaskState::Shutdown
        && newest.status.state.is_terminal()
        && !restart_wanted(service, newest)
}

fn newest<'t>(tasks: &[&'t Task]) -> Option<&'t Task> {
    tasks.iter().copied().max_by(|a, b| {
        (a.created_at, a.version, a.attempt, &a.id).cmp(&(
            b.created_at,
            b.version,
            b.attempt,
            &b.id,
        ))
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "node" } else { "nodes" }
}

/// Why no node fits a service (see the module documentation).
fn no_node_reason(nodes: &[&NodeView], constraints: &[Constraint]) -> String {
    let total = nodes.len();
    if total == 0 {
        return "no suitable node (the cluster has no nodes)".into();
    }
    for c in constraints {
        if !nodes.iter().any(|n| c.matches(n)) {
            return format!(
                "no suitable node (constraint {c} matched 0 of {total} {})",
                plural(total)
            );
        }
    }
    let usable = nodes
        .iter()
        .filter(|n| n.ready && n.availability == NodeAvailability::Active)
        .count();
    if usable == 0 {
        return format!(
            "no suitable node (0 of {total} {} ready and active)",
            if total == 1 { "node is" } else { "nodes are" }
        );
    }
    let list: Vec<String> = constraints.iter().map(ToString::to_string).collect();
    format!(
        "no suitable node (constraints {} together matched 0 of {usable} ready and active {})",
        list.join(" and "),
        plural(usable)
    )
}

/// Everything one service's pass collects.
#[derive(Default)]
struct Pass<'s> {
    /// Unplaced live tasks to schedule: id, state, status message.
    to_place: Vec<(TaskId, TaskState, String)>,
    /// Live tasks of an older version, running on healthy nodes.
    outdated: Vec<&'s Task>,
    /// Whether a task was added to this service in this plan.
    added: bool,
    /// Whether every live task of the current version has run for the
    /// monitor period.
    settled: bool,
    /// Whether a live task of the current version exists.
    has_current: bool,
    /// Placed by this plan (global services), by node.
    placed: BTreeMap<NodeId, u64>,
}

struct Ctx<'n, 'p> {
    state: &'p State,
    nodes: Nodes<'n>,
    load: Vec<u64>,
    now: i64,
    limits: &'p Limits,
    planner: Planner<'p>,
    summaries: BTreeMap<ServiceId, PlacementSummary>,
}

impl Ctx<'_, '_> {
    fn new_task(&mut self, service: &Service, slot: u64, node: Option<&str>, attempt: u64) -> Task {
        let placed = node.is_some();
        Task {
            id: (self.planner.new_id)(),
            service_id: service.id.clone(),
            slot,
            node_id: node.map(str::to_string),
            version: service.version,
            spec: service.spec.task.clone(),
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: if placed {
                    TaskState::Assigned
                } else {
                    TaskState::New
                },
                since: self.now,
                message: if placed { "assigned" } else { "created" }.into(),
                error: None,
                runtime_id: None,
                exit_code: None,
            },
            attempt,
            created_at: self.now,
            identity: None,
        }
    }

    /// Pushes `before` followed by a new task in `slot` (on `node` for a
    /// global service), all or nothing. Returns whether it was pushed.
    fn replace(
        &mut self,
        pass: &mut Pass<'_>,
        service: &Service,
        before: Vec<Change>,
        slot: u64,
        node: Option<&str>,
        attempt: u64,
    ) -> bool {
        if !self.planner.room(before.len() + 1) {
            return false;
        }
        let task = self.new_task(service, slot, node, attempt);
        let mut group = before;
        match node {
            None => pass
                .to_place
                .push((task.id.clone(), TaskState::New, String::new())),
            Some(n) => {
                *pass.placed.entry(n.to_string()).or_insert(0) += 1;
                if let Some(&i) = self.nodes.index.get(n)
                    && let Some(l) = self.load.get_mut(i)
                {
                    *l += 1;
                }
            }
        }
        group.push(Change::AddTask(task));
        pass.added = true;
        self.planner.push(group)
    }

    /// A live task stops counting on its node.
    fn unload(&mut self, t: &Task) {
        if let Some(n) = &t.node_id
            && !t.status.state.is_terminal()
            && let Some(&i) = self.nodes.index.get(n.as_str())
            && let Some(l) = self.load.get_mut(i)
        {
            *l = l.saturating_sub(1);
        }
    }

    fn set_desired(&mut self, t: &Task, desired: TaskState) -> bool {
        let ok = self.planner.push(vec![Change::SetDesired {
            task: t.id.clone(),
            desired,
        }]);
        if ok && is_live(t) {
            self.unload(t);
        }
        ok
    }

    fn delete(&mut self, t: &Task) -> bool {
        let ok = self.planner.push(vec![Change::DeleteTask(t.id.clone())]);
        if ok && is_live(t) {
            self.unload(t);
        }
        ok
    }

    /// Notes a kept live task of the current version for the update.
    fn note_current(&self, pass: &mut Pass<'_>, service: &Service, t: &Task) {
        if t.version >= service.version {
            pass.has_current = true;
            let ran = t.status.state == TaskState::Running
                && self.now.saturating_sub(t.status.since)
                    >= i64::try_from(service.spec.update.monitor_ms).unwrap_or(i64::MAX);
            if !ran {
                pass.settled = false;
            }
        }
    }

    /// The ended tasks of one slot beyond the history to keep; `stopping`
    /// are tasks this plan just took out of `Running`, `ending` those it
    /// just marked `Orphaned`, `added` whether it made a new task for the
    /// slot. Counting them now keeps the next plan empty.
    fn trim_history(
        &mut self,
        tasks: &[&Task],
        stopping: &BTreeSet<&str>,
        ending: &BTreeSet<&str>,
        added: bool,
    ) {
        let newest_id = if added {
            None
        } else {
            newest(tasks).map(|t| t.id.as_str())
        };
        let mut old: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| {
                let orphan =
                    t.status.state == TaskState::Orphaned || ending.contains(t.id.as_str());
                (t.status.state.is_terminal() || orphan)
                    && (!is_live(t) || stopping.contains(t.id.as_str()))
                    && Some(t.id.as_str()) != newest_id
                    && !(orphan
                        && t.node_id
                            .as_deref()
                            .is_some_and(|n| self.nodes.listed_down(n)))
            })
            .collect();
        old.sort_by(|a, b| {
            (b.created_at, b.version, b.attempt, &b.id).cmp(&(
                a.created_at,
                a.version,
                a.attempt,
                &a.id,
            ))
        });
        for t in old.into_iter().skip(self.limits.history_per_slot) {
            if !self.delete(t) {
                return;
            }
        }
        // Tasks never placed that are no longer wanted: nothing runs.
        for t in tasks {
            if !is_live(t) && t.node_id.is_none() && !t.status.state.is_terminal() {
                self.delete(t);
            }
        }
    }
}

/// Decides the changes that move the cluster toward what its services ask
/// for (see the module documentation for the rules). `new_id` gives the id
/// of each new task; `now` is the leader's clock (Unix milliseconds).
///
/// Calling it again on the state with the plan applied, with the same
/// nodes and `now`, gives an empty plan unless time must pass.
pub fn reconcile(
    nodes: &[NodeView],
    state: &State,
    now: i64,
    new_id: &mut dyn FnMut() -> TaskId,
    limits: &Limits,
) -> Plan {
    let nodes = Nodes::new(nodes);
    let mut load = vec![0u64; nodes.list.len()];
    let mut by_service: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in state.tasks.values() {
        by_service.entry(t.service_id.as_str()).or_default().push(t);
        if is_live(t)
            && !t.status.state.is_terminal()
            && let Some(n) = &t.node_id
            && let Some(&i) = nodes.index.get(n.as_str())
            && let Some(l) = load.get_mut(i)
        {
            *l += 1;
        }
    }
    let mut ctx = Ctx {
        state,
        nodes,
        load,
        now,
        limits,
        planner: Planner {
            changes: Vec::new(),
            max: limits.max_changes,
            full: false,
            new_id,
        },
        summaries: BTreeMap::new(),
    };

    // Tasks of removed services first: they free their nodes.
    for (service_id, tasks) in &by_service {
        if state.services.contains_key(*service_id) {
            continue;
        }
        for t in tasks {
            let gone = match &t.node_id {
                None => true,
                Some(n) => {
                    t.status.state.is_terminal()
                        || ctx.nodes.health(n, t, now, limits.down_grace_ms) == Health::Lost
                }
            };
            if gone {
                ctx.delete(t);
            } else if t.desired_state != TaskState::Remove {
                ctx.set_desired(t, TaskState::Remove);
            }
        }
    }

    for service in state.services.values() {
        if ctx.planner.full {
            break;
        }
        let tasks: &[&Task] = by_service
            .get(service.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        plan_service(&mut ctx, service, tasks);
    }

    Plan {
        changes: ctx.planner.changes,
        placements: ctx.summaries.into_values().collect(),
    }
}

fn plan_service(ctx: &mut Ctx<'_, '_>, service: &Service, tasks: &[&Task]) {
    let now = ctx.now;
    // Which nodes meet the constraints.
    let fits: Vec<bool> = ctx
        .nodes
        .list
        .iter()
        .map(|n| service.spec.constraints.iter().all(|c| c.matches(n)))
        .collect();
    let fits_at = |i: usize| fits.get(i).copied().unwrap_or(false);

    // A failed new task during an update: pause or roll back.
    let mut paused = service
        .update_status
        .as_ref()
        .is_some_and(|u| matches!(u.phase, UpdatePhase::Paused | UpdatePhase::RollbackPaused));
    if let Some(status) = &service.update_status
        && matches!(
            status.phase,
            UpdatePhase::Updating | UpdatePhase::RollbackStarted
        )
        && let Some(failed) = tasks
            .iter()
            .filter(|t| {
                t.version == service.version
                    && t.created_at >= status.started_at
                    && matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
            })
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
    {
        let rollback = status.phase == UpdatePhase::Updating
            && service.spec.update.failure_action == FailureAction::Rollback;
        // A previous spec whose secret was since removed cannot come
        // back: the update pauses instead.
        let previous = service
            .previous_spec
            .as_ref()
            .and_then(|p| ctx.state.resolve_previous(p).ok());
        match (previous, rollback) {
            (Some(previous), true) => {
                ctx.planner.push(vec![
                    Change::SetSpec {
                        service: service.id.clone(),
                        spec: previous,
                        previous: Some(service.spec.clone()),
                    },
                    Change::SetUpdateStatus {
                        service: service.id.clone(),
                        status: Some(UpdateStatus {
                            phase: UpdatePhase::RollbackStarted,
                            started_at: now,
                            last_batch_at: now,
                            message: format!(
                                "update rolled back due to failure or early termination of task {}",
                                failed.id
                            ),
                        }),
                    },
                ]);
                return;
            }
            _ => {
                let (phase, what) = if status.phase == UpdatePhase::Updating {
                    (UpdatePhase::Paused, "update")
                } else {
                    (UpdatePhase::RollbackPaused, "rollback")
                };
                ctx.planner.push(vec![Change::SetUpdateStatus {
                    service: service.id.clone(),
                    status: Some(UpdateStatus {
                        phase,
                        started_at: status.started_at,
                        last_batch_at: status.last_batch_at,
                        message: format!(
                            "{what} paused due to failure or early termination of task {}",
                            failed.id
                        ),
                    }),
                }]);
                paused = true;
            }
        }
    }

    let mut pass = Pass {
        settled: true,
        ..Pass::default()
    };
    // Tasks of this service counted per node, for the scheduler.
    let mut mine = vec![0u64; ctx.nodes.list.len()];
    match service.spec.mode {
        Mode::Replicated { replicas } => {
            plan_replicated(ctx, service, tasks, replicas, &fits, &mut pass, &mut mine)
        }
        Mode::Global => plan_global(ctx, service, tasks, &fits, &mut pass),
    }

    // The rolling update.
    let updating = service.update_status.as_ref().filter(|u| {
        matches!(
            u.phase,
            UpdatePhase::Updating | UpdatePhase::RollbackStarted
        )
    });
    let global = service.spec.mode == Mode::Global;
    let mut batch_left: Vec<&Task> = Vec::new();
    if !paused && !ctx.planner.full {
        let settled = pass.settled && !pass.added;
        let delay = i64::try_from(service.spec.update.delay_ms).unwrap_or(i64::MAX);
        if !pass.outdated.is_empty() {
            let last = updating.map_or(i64::MIN, |u| u.last_batch_at);
            let delay_ok = !pass.has_current || now >= last.saturating_add(delay);
            if settled && delay_ok {
                let mut outdated = std::mem::take(&mut pass.outdated);
                outdated
                    .sort_by(|a, b| (a.slot, &a.node_id, &a.id).cmp(&(b.slot, &b.node_id, &b.id)));
                let p = match service.spec.update.parallelism {
                    0 => outdated.len(),
                    p => usize::try_from(p).unwrap_or(usize::MAX),
                };
                let rest = outdated.split_off(p.min(outdated.len()));
                let mut go = true;
                if let Some(u) = updating {
                    go = ctx.planner.push(vec![Change::SetUpdateStatus {
                        service: service.id.clone(),
                        status: Some(UpdateStatus {
                            last_batch_at: now,
                            ..u.clone()
                        }),
                    }]);
                }
                for (k, old) in outdated.iter().enumerate() {
                    let node = if global { old.node_id.as_deref() } else { None };
                    let pushed = go
                        && ctx.replace(
                            &mut pass,
                            service,
                            vec![Change::SetDesired {
                                task: old.id.clone(),
                                desired: TaskState::Shutdown,
                            }],
                            old.slot,
                            node,
                            0,
                        );
                    if pushed {
                        ctx.unload(old);
                    } else {
                        batch_left.extend(outdated.get(k..).unwrap_or(&[]).iter().copied());
                        break;
                    }
                }
                batch_left.extend(rest);
            } else {
                batch_left = std::mem::take(&mut pass.outdated);
            }
        } else if let Some(u) = updating
            && settled
        {
            let (phase, message) = if u.phase == UpdatePhase::Updating {
                (UpdatePhase::Completed, "update completed")
            } else {
                (UpdatePhase::RollbackCompleted, "rollback completed")
            };
            ctx.planner.push(vec![Change::SetUpdateStatus {
                service: service.id.clone(),
                status: Some(UpdateStatus {
                    phase,
                    message: message.into(),
                    ..u.clone()
                }),
            }]);
        }
    } else {
        batch_left = std::mem::take(&mut pass.outdated);
    }
    // Old tasks that keep running count for the scheduler.
    for t in batch_left {
        if let Some(n) = &t.node_id
            && let Some(&i) = ctx.nodes.index.get(n.as_str())
            && let Some(m) = mine.get_mut(i)
        {
            *m += 1;
        }
    }

    if global {
        if !pass.placed.is_empty() {
            ctx.summaries.insert(
                service.id.clone(),
                PlacementSummary {
                    service_id: service.id.clone(),
                    service_name: service.spec.name.clone(),
                    placed: pass.placed,
                    pending: 0,
                    reason: None,
                },
            );
        }
        return;
    }
    schedule(ctx, service, &fits_at, pass.to_place, mine);
}

#[allow(clippy::too_many_arguments)]
fn plan_replicated<'s>(
    ctx: &mut Ctx<'_, '_>,
    service: &Service,
    tasks: &[&'s Task],
    replicas: u64,
    fits: &[bool],
    pass: &mut Pass<'s>,
    mine: &mut [u64],
) {
    let now = ctx.now;
    let mut slots: BTreeMap<u64, Vec<&'s Task>> = BTreeMap::new();
    for t in tasks {
        slots.entry(t.slot).or_default().push(t);
    }
    // Scale down: slots above the count (and the stray slot 0), highest
    // first.
    for (&slot, slot_tasks) in slots.iter().rev() {
        if slot >= 1 && slot <= replicas {
            continue;
        }
        for t in slot_tasks {
            let ended = t.status.state.is_terminal();
            if ended
                && t.status.state == TaskState::Orphaned
                && t.node_id
                    .as_deref()
                    .is_some_and(|n| ctx.nodes.listed_down(n))
            {
                continue;
            }
            if ended || t.node_id.is_none() {
                ctx.delete(t);
            } else if t.desired_state != TaskState::Remove {
                ctx.set_desired(t, TaskState::Remove);
            }
        }
        if ctx.planner.full {
            return;
        }
    }
    let restart_delay = i64::try_from(service.spec.restart.delay_ms).unwrap_or(i64::MAX);
    let empty: Vec<&Task> = Vec::new();
    for slot in 1..=replicas {
        if ctx.planner.full {
            return;
        }
        let slot_tasks = slots.get(&slot).unwrap_or(&empty);
        let mut stopping: BTreeSet<&str> = BTreeSet::new();
        let mut ending: BTreeSet<&str> = BTreeSet::new();
        let mut added = false;
        let mut live: Vec<&Task> = slot_tasks.iter().copied().filter(|t| is_live(t)).collect();
        sort_best_first(&mut live);
        // Never two live tasks in one slot: keep the best.
        for extra in live.iter().skip(1) {
            if extra.status.state.is_terminal() || extra.node_id.is_none() {
                ctx.delete(extra);
            } else {
                ctx.set_desired(extra, TaskState::Shutdown);
                stopping.insert(extra.id.as_str());
            }
        }
        let shutdown = |t: &Task| Change::SetDesired {
            task: t.id.clone(),
            desired: TaskState::Shutdown,
        };
        match live.first().copied() {
            Some(t) if !t.status.state.is_terminal() => match t.node_id.as_deref() {
                Some(n) => match ctx.nodes.health(n, t, now, ctx.limits.down_grace_ms) {
                    Health::Lost => {
                        let orphan = Change::SetState {
                            task: t.id.clone(),
                            state: TaskState::Orphaned,
                            message: format!("node {n} is down"),
                        };
                        let group = vec![orphan, shutdown(t)];
                        let keep_gone = service.spec.restart.condition == RestartCondition::None
                            && t.version >= service.version;
                        let pushed = if keep_gone {
                            ctx.planner.push(group)
                        } else {
                            added = ctx.replace(
                                pass,
                                service,
                                group,
                                slot,
                                None,
                                t.attempt.saturating_add(1),
                            );
                            added
                        };
                        if pushed {
                            ctx.unload(t);
                            stopping.insert(t.id.as_str());
                            ending.insert(t.id.as_str());
                        }
                    }
                    Health::Waiting => {
                        if t.version < service.version {
                            pass.settled = false;
                        } else {
                            ctx.note_current(pass, service, t);
                        }
                    }
                    Health::Up(i) => {
                        let drained = ctx
                            .nodes
                            .list
                            .get(i)
                            .is_some_and(|n| n.availability == NodeAvailability::Drain);
                        if drained || !fits.get(i).copied().unwrap_or(false) {
                            added = ctx.replace(
                                pass,
                                service,
                                vec![shutdown(t)],
                                slot,
                                None,
                                t.attempt.saturating_add(1),
                            );
                            if added {
                                ctx.unload(t);
                                stopping.insert(t.id.as_str());
                            }
                        } else if t.version < service.version {
                            pass.outdated.push(t);
                        } else {
                            ctx.note_current(pass, service, t);
                            if let Some(m) = mine.get_mut(i) {
                                *m += 1;
                            }
                        }
                    }
                },
                None => {
                    if t.version < service.version {
                        added = ctx.replace(
                            pass,
                            service,
                            vec![Change::DeleteTask(t.id.clone())],
                            slot,
                            None,
                            0,
                        );
                    } else {
                        ctx.note_current(pass, service, t);
                        pass.to_place.push((
                            t.id.clone(),
                            t.status.state,
                            t.status.message.clone(),
                        ));
                    }
                }
            },
            Some(t) => {
                // Ended while wanted running: restart, or give up.
                let lost = t.status.state == TaskState::Orphaned;
                if !should_replace(service, t) {
                    if ctx.set_desired(t, TaskState::Shutdown) {
                        stopping.insert(t.id.as_str());
                    }
                } else if lost || now >= t.status.since.saturating_add(restart_delay) {
                    let attempt = if t.version < service.version {
                        0
                    } else {
                        t.attempt.saturating_add(1)
                    };
                    added = ctx.replace(pass, service, vec![shutdown(t)], slot, None, attempt);
                    if added {
                        stopping.insert(t.id.as_str());
                    }
                } else {
                    // Waits for its restart delay.
                    pass.settled = false;
                }
            }
            None => {
                let last = newest(slot_tasks);
                if !last.is_some_and(|t| finished(service, t)) {
                    let attempt = last
                        .filter(|t| t.version == service.version)
                        .map_or(0, |t| t.attempt.saturating_add(1));
                    added = ctx.replace(pass, service, Vec::new(), slot, None, attempt);
                }
            }
        }
        if !ctx.planner.full {
            ctx.trim_history(slot_tasks, &stopping, &ending, added);
        }
    }
}

fn plan_global<'s>(
    ctx: &mut Ctx<'_, '_>,
    service: &Service,
    tasks: &[&'s Task],
    fits: &[bool],
    pass: &mut Pass<'s>,
) {
    let now = ctx.now;
    let mut units: BTreeMap<&str, Vec<&'s Task>> = BTreeMap::new();
    for t in tasks {
        match &t.node_id {
            Some(n) => units.entry(n.as_str()).or_default().push(t),
            None => {
                ctx.delete(t);
            }
        }
    }
    let placeable: Vec<&str> = ctx
        .nodes
        .list
        .iter()
        .enumerate()
        .filter(|(i, n)| {
            n.ready
                && n.availability == NodeAvailability::Active
                && fits.get(*i).copied().unwrap_or(false)
        })
        .map(|(_, n)| n.id.as_str())
        .collect();
    let mut keys: BTreeSet<&str> = units.keys().copied().collect();
    keys.extend(placeable.iter().copied());
    let restart_delay = i64::try_from(service.spec.restart.delay_ms).unwrap_or(i64::MAX);
    let empty: Vec<&Task> = Vec::new();
    for node in keys {
        if ctx.planner.full {
            return;
        }
        let unit = units.get(node).unwrap_or(&empty);
        let idx = ctx.nodes.index.get(node).copied();
        let view = idx.and_then(|i| ctx.nodes.list.get(i)).copied();
        let up = view.is_some_and(|n| n.ready);
        let keep = up
            && view.is_some_and(|n| n.availability != NodeAvailability::Drain)
            && idx.is_some_and(|i| fits.get(i).copied().unwrap_or(false));
        let can_place = keep && view.is_some_and(|n| n.availability == NodeAvailability::Active);
        let mut stopping: BTreeSet<&str> = BTreeSet::new();
        let mut ending: BTreeSet<&str> = BTreeSet::new();
        let mut added = false;
        let mut live: Vec<&Task> = unit.iter().copied().filter(|t| is_live(t)).collect();
        sort_best_first(&mut live);
        for extra in live.iter().skip(1) {
            if extra.status.state.is_terminal() {
                ctx.delete(extra);
            } else {
                ctx.set_desired(extra, TaskState::Shutdown);
                stopping.insert(extra.id.as_str());
            }
        }
        let shutdown = |t: &Task| Change::SetDesired {
            task: t.id.clone(),
            desired: TaskState::Shutdown,
        };
        match live.first().copied() {
            Some(t) if !t.status.state.is_terminal() => {
                match ctx.nodes.health(node, t, now, ctx.limits.down_grace_ms) {
                    Health::Lost => {
                        let pushed = ctx.planner.push(vec![
                            Change::SetState {
                                task: t.id.clone(),
                                state: TaskState::Orphaned,
                                message: format!("node {node} is down"),
                            },
                            shutdown(t),
                        ]);
                        if pushed {
                            ctx.unload(t);
                            stopping.insert(t.id.as_str());
                            ending.insert(t.id.as_str());
                        }
                    }
                    Health::Waiting => pass.settled = false,
                    Health::Up(_) => {
                        if !keep {
                            ctx.set_desired(t, TaskState::Remove);
                        } else if t.version < service.version {
                            pass.outdated.push(t);
                        } else {
                            ctx.note_current(pass, service, t);
                        }
                    }
                }
            }
            Some(t) => {
                if (up && !keep) || view.is_none() {
                    // Drained, no longer fitting, or gone: nothing runs.
                    ctx.delete(t);
                } else if can_place {
                    let lost = t.status.state == TaskState::Orphaned;
                    if !should_replace(service, t) {
                        if ctx.set_desired(t, TaskState::Shutdown) {
                            stopping.insert(t.id.as_str());
                        }
                    } else if lost || now >= t.status.since.saturating_add(restart_delay) {
                        let attempt = if t.version < service.version {
                            0
                        } else {
                            t.attempt.saturating_add(1)
                        };
                        added =
                            ctx.replace(pass, service, vec![shutdown(t)], 0, Some(node), attempt);
                        if added {
                            stopping.insert(t.id.as_str());
                        }
                    } else {
                        pass.settled = false;
                    }
                } else {
                    // On a paused or unreachable node: waits.
                    pass.settled = false;
                }
            }
            None => {
                let last = newest(unit);
                if can_place && !last.is_some_and(|t| finished(service, t)) {
                    let attempt = last
                        .filter(|t| t.version == service.version)
                        .map_or(0, |t| t.attempt.saturating_add(1));
                    added = ctx.replace(pass, service, Vec::new(), 0, Some(node), attempt);
                }
            }
        }
        if ctx.planner.full {
            return;
        }
        if view.is_none() {
            // The node left the cluster: its ended tasks go.
            for t in unit {
                if t.status.state.is_terminal() && !is_live(t) {
                    ctx.delete(t);
                }
            }
        } else {
            ctx.trim_history(unit, &stopping, &ending, added);
        }
    }
}

/// Places a replicated service's unplaced tasks, or says why it cannot.
fn schedule(
    ctx: &mut Ctx<'_, '_>,
    service: &Service,
    fits_at: &dyn Fn(usize) -> bool,
    to_place: Vec<(TaskId, TaskState, String)>,
    mine: Vec<u64>,
) {
    if to_place.is_empty() || ctx.planner.full {
        return;
    }
    let eligible: Vec<usize> = ctx
        .nodes
        .list
        .iter()
        .enumerate()
        .filter(|(i, n)| n.ready && n.availability == NodeAvailability::Active && fits_at(*i))
        .map(|(i, _)| i)
        .collect();
    let mut summary = PlacementSummary {
        service_id: service.id.clone(),
        service_name: service.spec.name.clone(),
        placed: BTreeMap::new(),
        pending: 0,
        reason: None,
    };
    let mut changed = false;
    if eligible.is_empty() {
        let reason = no_node_reason(&ctx.nodes.list, &service.spec.constraints);
        for (id, state, message) in &to_place {
            summary.pending += 1;
            if *state == TaskState::Pending && *message == reason {
                continue;
            }
            if !ctx.planner.push(vec![Change::Pending {
                task: id.clone(),
                reason: reason.clone(),
            }]) {
                break;
            }
            changed = true;
        }
        summary.reason = Some(reason);
    } else {
        // Groups by the first spread label; in each, nodes ordered by
        // (tasks of the service, tasks overall, node index = id order).
        let key = service.spec.spread_over.first();
        let mut group_of: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for &i in &eligible {
            let value = key.and_then(|k| {
                ctx.nodes
                    .list
                    .get(i)
                    .and_then(|n| n.labels.get(k))
                    .map(String::as_str)
            });
            let next = group_of.len();
            group_of.entry(value).or_insert(next);
        }
        let mut groups: Vec<BTreeSet<(u64, u64, usize)>> = vec![BTreeSet::new(); group_of.len()];
        let mut group_count = vec![0u64; group_of.len()];
        for &i in &eligible {
            let value = key.and_then(|k| {
                ctx.nodes
                    .list
                    .get(i)
                    .and_then(|n| n.labels.get(k))
                    .map(String::as_str)
            });
            let g = group_of.get(&value).copied().unwrap_or(0);
            let m = mine.get(i).copied().unwrap_or(0);
            let l = ctx.load.get(i).copied().unwrap_or(0);
            if let Some(set) = groups.get_mut(g) {
                set.insert((m, l, i));
            }
            if let Some(c) = group_count.get_mut(g) {
                *c += m;
            }
        }
        // Groups ordered by (tasks of the service, group order).
        let mut group_order: BTreeSet<(u64, usize)> = group_count
            .iter()
            .enumerate()
            .map(|(g, c)| (*c, g))
            .collect();
        for (id, _, _) in &to_place {
            let Some((gc, g)) = group_order.pop_first() else {
                break;
            };
            let Some(set) = groups.get_mut(g) else {
                break;
            };
            let Some((m, l, i)) = set.pop_first() else {
                break;
            };
            let Some(node) = ctx.nodes.list.get(i).map(|n| n.id.clone()) else {
                break;
            };
            if !ctx.planner.push(vec![Change::Assign {
                task: id.clone(),
                node: node.clone(),
            }]) {
                break;
            }
            changed = true;
            set.insert((m + 1, l + 1, i));
            group_order.insert((gc + 1, g));
            if let Some(load) = ctx.load.get_mut(i) {
                *load += 1;
            }
            *summary.placed.entry(node).or_insert(0) += 1;
        }
    }
    if changed {
        ctx.summaries.insert(service.id.clone(), summary);
    }
}

/// Orders a slot's (or node's) live tasks best first: the newest version,
/// then one still running over one that ended, then the newest, then by
/// id, so every leader keeps the same one.
fn sort_best_first(live: &mut [&Task]) {
    live.sort_by(|a, b| {
        let key = |t: &Task| {
            (
                t.version,
                !t.status.state.is_terminal(),
                t.created_at,
                t.id.clone(),
            )
        };
        key(b).cmp(&key(a))
    });
}
