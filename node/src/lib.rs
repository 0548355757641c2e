//! The moat daemon's core: runs a manager's Raft group member — its
//! encrypted store, its transport server and client — and, as later issues
//! land, the CA service, dispatcher, control API and renewal loop.
//!
//! moat-node owns running things: tasks, listeners, shutdown. It never
//! parses command-line arguments (that is `cli/`), and it reaches the disk
//! only through moat-store and moat-lock.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod raft;

pub use raft::{NodeError, RaftManager, RotationStep, raft_config};
