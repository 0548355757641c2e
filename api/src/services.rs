//! Services and tasks on the control wire (`moat service …`, `moat node
//! ps`). Specs travel as the operator wrote them (constraints as Docker's
//! text, durations in milliseconds); the daemon parses and checks them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The parts of a service spec `create` sets and `update` may change;
/// `None` keeps the default (create) or the current value (update).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSettings {
    /// `--replicas N`.
    #[serde(default)]
    pub replicas: Option<u64>,
    /// `--constraint EXPR`, as Docker writes them.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// `--placement-pref spread=node.labels.KEY`.
    #[serde(default)]
    pub placement_prefs: Vec<String>,
    /// `--restart-condition any|on-failure|none`.
    #[serde(default)]
    pub restart_condition: Option<String>,
    /// `--restart-delay`, milliseconds.
    #[serde(default)]
    pub restart_delay_ms: Option<u64>,
    /// `--restart-max-attempts N`.
    #[serde(default)]
    pub restart_max_attempts: Option<u64>,
    /// `--update-parallelism N`.
    #[serde(default)]
    pub update_parallelism: Option<u64>,
    /// `--update-delay`, milliseconds.
    #[serde(default)]
    pub update_delay_ms: Option<u64>,
    /// `--update-failure-action pause|rollback`.
    #[serde(default)]
    pub update_failure_action: Option<String>,
    /// `--update-monitor`, milliseconds.
    #[serde(default)]
    pub update_monitor_ms: Option<u64>,
    /// `--stop-grace-period`, milliseconds.
    #[serde(default)]
    pub stop_grace_ms: Option<u64>,
    /// `Some(false)`: `--no-identity`; `Some(true)` keeps or turns on the
    /// default identity (the CLI turns it back on with `--identity-ttl`);
    /// a new service has one unless told.
    #[serde(default)]
    pub identity: Option<bool>,
    /// `--identity-ttl`, seconds (5 minutes to 24 hours).
    #[serde(default)]
    pub identity_ttl_secs: Option<u64>,
}

/// `POST /v1/services/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreateRequest {
    /// `--name`; the daemon picks one if absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `--mode replicated|global`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `--runtime process|docker`.
    #[serde(default)]
    pub runtime: Option<String>,
    /// The image (docker) or program (process).
    pub image: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// `--env K=V`.
    #[serde(default)]
    pub env: Vec<String>,
    /// `--label K=V`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--secret NAME[@VERSION][,target=FILE][,mode=0400]` (or
    /// `source=NAME,…`), as typed.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `--config NAME[@VERSION][,target=FILE][,mode=0444]`, as typed.
    #[serde(default)]
    pub configs: Vec<String>,
    /// Everything else.
    #[serde(default)]
    pub settings: ServiceSettings,
}

/// The answer to `create`, `update`, `rollback`: the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChanged {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version after the change.
    pub version: u64,
    /// Whether anything changed (an update to the same spec without
    /// `--force` changes nothing).
    pub changed: bool,
}

/// `POST /v1/services/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUpdateRequest {
    /// The service (id, name or id prefix).
    pub service: String,
    /// `--image`.
    #[serde(default)]
    pub image: Option<String>,
    /// `--args "…"`, split by the CLI.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// `--env-add K=V`.
    #[serde(default)]
    pub env_add: Vec<String>,
    /// `--env-rm K`.
    #[serde(default)]
    pub env_rm: Vec<String>,
    /// `--constraint-add EXPR`.
    #[serde(default)]
    pub constraint_add: Vec<String>,
    /// `--constraint-rm EXPR`.
    #[serde(default)]
    pub constraint_rm: Vec<String>,
    /// `--secret-add SPEC`, as typed.
    #[serde(default)]
    pub secret_add: Vec<String>,
    /// `--secret-rm NAME` (or target).
    #[serde(default)]
    pub secret_rm: Vec<String>,
    /// `--config-add SPEC`, as typed.
    #[serde(default)]
    pub config_add: Vec<String>,
    /// `--config-rm NAME` (or target).
    #[serde(default)]
    pub config_rm: Vec<String>,
    /// `--force`: replace every task even if nothing changed.
    #[serde(default)]
    pub force: bool,
    /// Replicas, restart and update settings (`constraints` and
    /// `placement_prefs` here replace the current lists when non-empty).
    #[serde(default)]
    pub settings: ServiceSettings,
}

/// Names a service: an id, a name or a unique id prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    /// The name.
    pub service: String,
}

/// `POST /v1/services/scale`: `SERVICE=N` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceScaleRequest {
    /// Service and replica count, in the order given.
    pub scales: Vec<(String, u64)>,
}

/// `POST /v1/services/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRemoveRequest {
    /// The services.
    pub services: Vec<String>,
}

/// The answer to `rm`: what was removed (ids), in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRemoveResponse {
    /// Removed services, by the name the operator gave.
    pub removed: Vec<String>,
}

/// A rolling update's state, as `service inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatusInfo {
    /// `updating`, `paused`, `completed`, `rollback_started`,
    /// `rollback_paused`, `rollback_completed`.
    pub state: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// What happened.
    pub message: String,
}

/// One service, as `service ls` and `service inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// Desired tasks (replicated: the replica count; global: the nodes
    /// that pass the filters).
    pub desired: u64,
    /// Tasks running now.
    pub running: u64,
    /// `process` or `docker`.
    pub runtime: String,
    /// Image or program.
    pub image: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variable names (values are not shown: they may be
    /// secret).
    pub env: Vec<String>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Placement constraints, as Docker writes them.
    pub constraints: Vec<String>,
    /// Placement preferences (`spread=node.labels.KEY`).
    pub placement_prefs: Vec<String>,
    /// `any`, `on-failure`, `none`.
    pub restart_condition: String,
    /// Milliseconds.
    pub restart_delay_ms: u64,
    /// `None`: unlimited.
    pub restart_max_attempts: Option<u64>,
    /// Tasks replaced at once (0: all).
    pub update_parallelism: u64,
    /// Milliseconds between batches.
    pub update_delay_ms: u64,
    /// `pause` or `rollback`.
    pub update_failure_action: String,
    /// Milliseconds a new task must run.
    pub update_monitor_ms: u64,
    /// Milliseconds between SIGTERM and SIGKILL.
    pub stop_grace_ms: u64,
    /// The spec's version.
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The rolling update under way or last done.
    pub update_status: Option<UpdateStatusInfo>,
    /// Whether `service rollback` has a previous spec to go back to.
    pub has_previous_spec: bool,
    /// Its secrets and configs (names, versions, targets; never data).
    #[serde(default)]
    pub secrets: Vec<crate::SecretUse>,
    /// Its tasks' workload identity, if they get one.
    #[serde(default)]
    pub identity: Option<IdentityInfo>,
}

/// A service's workload identity, as `service inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    /// `spiffe://<cluster>/service/<name>`.
    pub spiffe_id: String,
    /// Lifetime of each certificate, seconds.
    pub ttl_secs: u64,
}

/// One task, as `service ps` and `node ps` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its id.
    pub id: String,
    /// `service.slot` (global: `service.node-id`).
    pub name: String,
    /// Its service's id.
    pub service_id: String,
    /// Its service's name.
    pub service: String,
    /// Its slot (0 for global services).
    pub slot: u64,
    /// Its node, once placed.
    pub node_id: Option<String>,
    /// That node's host name.
    pub node: Option<String>,
    /// Image or program.
    pub image: String,
    /// `running`, `shutdown` or `remove`.
    pub desired_state: String,
    /// Docker's task states: `new` … `running`, `complete`, `failed`, …
    pub state: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Since when (Unix milliseconds), for ages.
    pub since_unix_ms: i64,
    /// A short account.
    pub message: String,
    /// What went wrong.
    pub error: Option<String>,
    /// The process id (runtime `process`).
    pub pid: Option<u32>,
    /// The container id (runtime `docker`).
    pub container_id: Option<String>,
    /// Exit status, once ended on its own.
    pub exit_code: Option<i32>,
    /// The service version it runs.
    pub version: u64,
    /// Restarts of its slot before it.
    pub attempt: u64,
}

/// `POST /v1/services/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogsRequest {
    /// The service.
    pub service: String,
    /// Only the last bytes of each task's output.
    #[serde(default)]
    pub tail_bytes: Option<u64>,
}

/// One task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLog {
    /// The task (`service.slot`).
    pub name: String,
    /// Its id.
    pub task_id: String,
    /// Its node.
    pub node_id: String,
    /// That node's host name.
    #[serde(default)]
    pub node: Option<String>,
    /// Its output (lossy UTF-8).
    pub output: String,
    /// Why there is none (node unreachable, …).
    pub error: Option<String>,
}
