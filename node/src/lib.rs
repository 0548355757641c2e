//! The moat daemon: one node's process.
//!
//! moat-node owns running things: the control API on the daemon's unix
//! socket, the node's lifecycle (init, join, leave, unlock, restart), the
//! manager side (Raft store, CA, dispatcher of heartbeats, membership
//! changes with quorum checks), the leader's housekeeping, and what every
//! node does in the background (heartbeats, certificate renewal, taking up
//! a new role). It never parses command-line arguments (that is `cli/`),
//! and it reaches the disk only through moat-store, moat-lock and its
//! state-directory layout (`files`). Time comes from one injected
//! [`Clock`].
//!
//! Where things live (lower rows never import higher ones):
//!
//! | module | owns |
//! |---|---|
//! | `error`, `clock`, `addr`, `faults`, `wire`, `rpc`, `files`, `journal`, `keys`, `keyring`, `liveness`, `refusals`, `raft`, `probe` | leaves: the error and its kinds, time, addresses, fault messages, wire conversions, cluster RPC types, the state directory, the local journal, re-keying, the KEK, who is alive, rate limits, the Raft member, the agent's round-trip histograms |
//! | `member/` | a cluster member ([`member::Member`]) and its manager side: calls, proposals, audit records, keys, certificates |
//! | `ca`, `tokens` | issuing certificates and rotating the root; standing join tokens |
//! | `service/` | the cluster RPCs a manager answers (who may call what) |
//! | `housekeeping` | the leader's loops: Down marking, token expiry, CA-rotation driving, audit heads |
//! | `orchestrate` | the leader's reconciler loop: services and tasks (moat-orchestrator) to placements |
//! | `tasks` | every member's task loop: its executor (moat-executor) in step with the leader |
//! | `logs` | the leader's relay of `service logs` requests to the nodes that run the tasks |
//! | `roles` | taking up and leaving the manager role |
//! | `agent` | every member's loop: heartbeat, renewal, role |
//! | `daemon/` | the node's phases; one file per lifecycle step |
//! | `run` | the process: start, serve, stop |
//! | `inprocess` | a node inside another process (load generators): the daemon without its socket, plus a probe of the agent's round trips |
//! | `control/`, `metrics`, `backup` | the control socket's routes, Prometheus, backups |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod addr;
mod agent;
mod backup;
mod ca;
mod clock;
mod control;
mod daemon;
mod error;
mod faults;
mod files;
mod housekeeping;
mod identity;
mod inprocess;
mod journal;
mod keyring;
mod keys;
mod liveness;
mod logs;
mod member;
mod metrics;
mod orchestrate;
mod probe;
mod raft;
mod refusals;
mod roles;
mod rpc;
mod run;
mod service;
mod tasks;
#[cfg(test)]
mod testing;
mod tokens;
mod wire;

pub use addr::DEFAULT_PORT;
pub use backup::{Restored, restore_backup};
pub use clock::Clock;
pub use daemon::DaemonOptions;
pub use error::{NodeError, Refusal, Trouble};
pub use inprocess::InProcessNode;
pub use liveness::{
    DOWN_AFTER, HEARTBEAT_BUDGET, HEARTBEAT_PERIOD, HEARTBEAT_PERIOD_MAX, LIVENESS_TICK,
    down_after, heartbeat_period,
};
pub use probe::{AgentProbe, LatencyHistogram};
pub use raft::{ManagerError, RaftManager, RotationStep, raft_config};
#[doc(hidden)]
pub use rpc::{DecodedRequest, FUZZ_METHODS, decode_request};
pub use run::run_daemon;
