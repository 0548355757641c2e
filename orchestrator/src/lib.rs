//! The orchestrator: services, tasks and where they run.
//!
//! moat-orchestrator owns:
//!
//! * the model: [`ServiceSpec`], [`Service`], [`Task`], [`TaskState`], and
//!   what a worker sees of a task ([`Assignment`]) and says back
//!   ([`TaskReport`]);
//! * the replicated part of it: [`State`] and the [`Command`]s that change
//!   it, applied deterministically by the store's state machine;
//! * placement constraints as Docker writes them ([`Constraint`]);
//! * secrets and configs ([`Secret`]), versioned, and the check of which
//!   node may receive which ([`State::task_files`]);
//! * the scheduler and the reconciler: from the nodes, the services and
//!   their tasks, the [`Change`]s that bring what runs to what is wanted.
//!
//! It does no I/O and reads no clock: time (Unix milliseconds) and new
//! identifiers are inputs, so the same inputs always give the same
//! decisions. The store wraps its commands; the leader runs the reconciler;
//! the executor (moat-executor) runs tasks.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod constraint;
mod model;
mod nodes;
mod reconcile;
mod secret;
mod state;
mod validate;

pub use constraint::*;
pub use model::*;
pub use nodes::*;
pub use reconcile::*;
pub use secret::*;
pub use state::*;
pub use validate::*;
