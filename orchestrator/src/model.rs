//! The service and task model: what people ask for ([`ServiceSpec`]), what
//! the cluster makes of it ([`Service`], [`Task`]), and what a worker is
//! told ([`Assignment`]) and says back ([`TaskReport`]).
//!
//! Every type here is stored in the Raft log and snapshots as JSON; new
//! fields get `#[serde(default)]` so older entries still read.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A service's id: 26 base32 characters, chosen by the proposer.
pub type ServiceId = String;
/// A task's id: 26 base32 characters, chosen by the proposer.
pub type TaskId = String;
/// A node's id, in its text form (as in its certificate's CN).
pub type NodeId = String;

/// How a task's program runs on its node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// A child process of the node's daemon, in its own process group.
    #[default]
    Process,
    /// A container through the node's local Docker Engine.
    Docker,
}

impl Runtime {
    /// The name on the command line and in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Docker => "docker",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Runtime::Process),
            "docker" => Ok(Runtime::Docker),
            other => Err(format!(
                "unknown runtime {other:?}: use \"process\" or \"docker\""
            )),
        }
    }
}

/// What one task runs: the same for every task of a service version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskSpec {
    /// How it runs.
    pub runtime: Runtime,
    /// The image (runtime `docker`) or the program (runtime `process`: a
    /// path, or a name looked up in the daemon's `PATH`).
    pub image: String,
    /// Arguments (the container's command, or the program's arguments).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables, by name.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long a stopping task gets between SIGTERM and SIGKILL
    /// (milliseconds).
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// The secrets and configs its tasks receive (references; the data
    /// stays in the store until the task's node asks for it).
    #[serde(default)]
    pub secrets: Vec<crate::SecretRef>,
    /// The workload identity its tasks get (an X.509-SVID from the
    /// cluster CA, `spiffe://<cluster>/service/<name>`); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySpec>,
}

/// A service's workload identity settings (`--identity-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentitySpec {
    /// Lifetime of each certificate, in seconds (the CA checks the
    /// bounds: 5 minutes to 24 hours); renewed at half of it.
    pub ttl_secs: u64,
}

/// The default certificate lifetime of a task's identity: 1 hour.
pub const DEFAULT_IDENTITY_TTL_SECS: u64 = 3600;

impl Default for IdentitySpec {
    fn default() -> Self {
        IdentitySpec {
            ttl_secs: DEFAULT_IDENTITY_TTL_SECS,
        }
    }
}

/// Docker's default stop grace period: 10 s.
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

fn default_stop_grace_ms() -> u64 {
    DEFAULT_STOP_GRACE_MS
}

/// Replicated (a number of slots) or global (one task per eligible node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `replicas` tasks, in slots 1..=replicas.
    Replicated {
        /// How many.
        replicas: u64,
    },
    /// One task on every node that passes the filters.
    Global,
}

impl Default for Mode {
    fn default() -> Self {
        Mode::Replicated { replicas: 1 }
    }
}

/// When a task that ended is replaced (Docker's `--restart-condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartCondition {
    /// Whenever it ends (the default).
    #[default]
    Any,
    /// Only when it failed (non-zero exit, rejected, lost node).
    OnFailure,
    /// Never.
    None,
}

/// The restart policy of a service's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When.
    pub condition: RestartCondition,
    /// How long after a task ended its replacement starts (milliseconds;
    /// Docker's default is 5 s).
    pub delay_ms: u64,
    /// How many times one slot is restarted at most (`None`: no limit).
    pub max_attempts: Option<u64>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: None,
        }
    }
}

/// What a rolling update does when a new task fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Stop updating; `service update` again or `service rollback`.
    #[default]
    Pause,
    /// Go back to the previous spec.
    Rollback,
}

/// How a service's tasks are replaced when its spec changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once (0: all at once). Docker's default is 1.
    pub parallelism: u64,
    /// Wait between batches (milliseconds).
    pub delay_ms: u64,
    /// On a failed new task.
    pub failure_action: FailureAction,
    /// How long a new task must run before its batch counts as done
    /// (milliseconds; Docker's default is 5 s).
    pub monitor_ms: u64,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
        }
    }
}

/// The comparison in a [`Constraint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// What a [`Constraint`] looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintKey {
    /// `node.id`
    NodeId,
    /// `node.hostname`
    Hostname,
    /// `node.role` (`manager` or `worker`)
    Role,
    /// `node.labels.KEY`
    Label(String),
}

/// One placement constraint, as Docker writes it: `node.labels.zone==a`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// What it looks at.
    pub key: ConstraintKey,
    /// The comparison.
    pub op: ConstraintOp,
    /// The value compared with.
    pub value: String,
}

/// Everything a person says about a service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique in the cluster.
    pub name: String,
    /// Operator labels of the service.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What each task runs.
    pub task: TaskSpec,
    /// Replicated or global.
    pub mode: Mode,
    /// Placement constraints, all of which a node must meet.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// `--placement-pref spread=node.labels.KEY`: the label keys to spread
    /// over, in order.
    #[serde(default)]
    pub spread_over: Vec<String>,
    /// When tasks are replaced after they end.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How spec changes roll out.
    #[serde(default)]
    pub update: UpdateConfig,
}

/// The phase of a rolling update (Docker's `UpdateStatus.State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    /// Replacing tasks.
    Updating,
    /// Stopped after a failure (failure action `pause`).
    Paused,
    /// Every task runs the new spec.
    Completed,
    /// Going back to the previous spec.
    RollbackStarted,
    /// Stopped while going back.
    RollbackPaused,
    /// Every task runs the previous spec again.
    RollbackCompleted,
}

impl UpdatePhase {
    /// Docker's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePhase::Updating => "updating",
            UpdatePhase::Paused => "paused",
            UpdatePhase::Completed => "completed",
            UpdatePhase::RollbackStarted => "rollback_started",
            UpdatePhase::RollbackPaused => "rollback_paused",
            UpdatePhase::RollbackCompleted => "rollback_completed",
        }
    }
}

/// Where a rolling update is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Its phase.
    pub phase: UpdatePhase,
    /// When it started (Unix milliseconds).
    pub started_at: i64,
    /// When the last batch was started (Unix milliseconds): the next one
    /// waits `update.delay_ms` after the previous one is done.
    #[serde(default)]
    pub last_batch_at: i64,
    /// Why it paused, or what it did.
    #[serde(default)]
    pub message: String,
}

/// A service as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its id.
    pub id: ServiceId,
    /// What it should be now.
    pub spec: ServiceSpec,
    /// What it was before the last update (for `service rollback`).
    #[serde(default)]
    pub previous_spec: Option<ServiceSpec>,
    /// Grows by one with every change of `spec` (or `--force`): a task
    /// of an older version is replaced by the rolling update. Tasks whose
    /// task spec the change keeps (scaling, labels, restart or update
    /// settings, the old tasks on a rollback) are relabelled with the new
    /// version when it is applied, so only tasks that must change are
    /// replaced.
    pub version: u64,
    /// When it was created (Unix milliseconds).
    pub created_at: i64,
    /// When its spec last changed (Unix milliseconds).
    pub updated_at: i64,
    /// The rolling update under way or last done.
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

/// A task's state, Docker's list in order: a task only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Made, not yet looked at by the scheduler.
    New,
    /// Waiting for a node (the status message says why).
    Pending,
    /// Placed on a node, which has not yet seen it.
    Assigned,
    /// The node has it.
    Accepted,
    /// The node prepares it (pulls the image).
    Preparing,
    /// The node starts it.
    Starting,
    /// It runs.
    Running,
    /// It ended with status 0.
    Complete,
    /// It was stopped as asked.
    Shutdown,
    /// It ended with an error or a non-zero status.
    Failed,
    /// The node could not start it.
    Rejected,
    /// Being removed with its service.
    Remove,
    /// Its node was lost; a replacement runs elsewhere.
    Orphaned,
}

impl TaskState {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// Whether the task has ended (nothing of it runs any more).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task is, as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The state.
    pub state: TaskState,
    /// Since when (Unix milliseconds).
    pub since: i64,
    /// A short account ("started", "no suitable node (…)").
    #[serde(default)]
    pub message: String,
    /// What went wrong, for failed and rejected tasks.
    #[serde(default)]
    pub error: Option<String>,
    /// The process id (runtime `process`) or container id (runtime
    /// `docker`) the task runs as.
    #[serde(default)]
    pub runtime_id: Option<String>,
    /// The exit status, once it ended on its own.
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// One slot of a service, placed once and never moved: a replacement is a
/// new task in the same slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its service.
    pub service_id: ServiceId,
    /// Its slot (1-based) in a replicated service; 0 in a global one.
    pub slot: u64,
    /// Its node, once placed (a global service's tasks are made for one).
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// The service version it was made from, or a later one whose task
    /// spec is the same (see [`Service::version`]).
    pub version: u64,
    /// What it runs.
    pub spec: TaskSpec,
    /// Where it should be: `Running`, `Shutdown` or `Remove`.
    pub desired_state: TaskState,
    /// Where it is.
    pub status: TaskStatus,
    /// How many tasks of this slot were made before it (restarts).
    #[serde(default)]
    pub attempt: u64,
    /// When it was made (Unix milliseconds).
    pub created_at: i64,
    /// Its workload certificate, the last one the CA issued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<TaskIdentity>,
}

/// A task's workload certificate, as recorded when the CA issued it (the
/// certificate itself stays on the task's node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskIdentity {
    /// Its serial number (hex).
    pub serial: String,
    /// Its `NotAfter` (Unix seconds).
    pub not_after: i64,
    /// The fingerprint of the root that issued it.
    pub issuer: String,
}

/// What a node is told about one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// Its service.
    pub service_id: ServiceId,
    /// The service's name, for container names and logs.
    pub service_name: String,
    /// Its slot.
    pub slot: u64,
    /// What it runs.
    pub spec: TaskSpec,
    /// `Running` to run it; `Shutdown` or `Remove` to stop it.
    pub desired_state: TaskState,
}

/// What a node says about one of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub task_id: TaskId,
    /// Its state on the node (at least `Accepted`).
    pub state: TaskState,
    /// Since when, by the node's clock (Unix milliseconds).
    pub since: i64,
    /// A short account.
    #[serde(default)]
    pub message: String,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
    /// Process id or container id.
    #[serde(default)]
    pub runtime_id: Option<String>,
    /// Exit status.
    #[serde(default)]
    pub exit_code: Option<i32>,
}
