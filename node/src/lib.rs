//! The moat daemon: one node's process.
//!
//! moat-node owns running things: the control API on the daemon's unix
//! socket, the node's lifecycle (init, join, leave, restart), the manager
//! side (Raft store, CA, dispatcher of heartbeats, membership changes with
//! quorum checks), and what every node does in the background (heartbeats,
//! certificate renewal, taking up a new role). It never parses
//! command-line arguments (that is `cli/`), and it reaches the disk only
//! through moat-store, moat-lock and its state-directory layout
//! (`files`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod agent;
mod audit;
mod backup;
mod ca;
mod control;
mod control_audit;
mod daemon;
mod files;
mod journal;
mod keys;
mod metrics;
mod node;
mod raft;
mod refusals;
mod rpc;
mod service;

pub use backup::{Restored, restore_backup};
pub use daemon::{DEFAULT_PORT, DaemonOptions, run_daemon};
pub use node::{DOWN_AFTER, HEARTBEAT_PERIOD, LIVENESS_TICK};
pub use raft::{NodeError, RaftManager, RotationStep, raft_config};
