//! The errors a node reports about its own state: locked, not in a
//! cluster, removed, expired, restored and waiting, not a manager. Each
//! says what to do next.

use moat_api::ErrorKind;

use crate::error::NodeError;
use moat_pki::OffsetDateTime;

/// The message every command but `info` and `unlock` gives on a locked node.
pub(crate) fn locked_error() -> NodeError {
    NodeError::new(
        ErrorKind::FailedPrecondition,
        "This node is locked. Run `moat unlock` and provide the unlock key.",
    )
    .hint("autolock is on and this manager restarted; see docs/runbooks/unlock-a-manager.md")
}

pub(crate) fn not_in_cluster() -> NodeError {
    NodeError::new(
        ErrorKind::FailedPrecondition,
        "This node is not part of a cluster.",
    )
    .hint("run `moat init` to create a cluster, or `MOAT_JOIN_TOKEN=TOKEN moat join MANAGER:PORT` to join one")
}

/// The state of a manager restored from a backup, until it is made the
/// first manager of the restored cluster.
pub(crate) fn restored_fault() -> NodeError {
    NodeError::new(
        ErrorKind::FailedPrecondition,
        "This manager was restored from a backup and is not running yet.",
    )
    .hint("run `moat init --force-new-cluster [--advertise-addr ADDR:PORT]` to make it the only manager of the restored cluster, then join the other nodes again")
}

pub(crate) fn not_a_manager() -> NodeError {
    NodeError::new(
        ErrorKind::FailedPrecondition,
        "This node is not a cluster manager. Worker nodes can't be used to view or modify cluster state.",
    )
    .hint("run this command on a manager node, or promote the current node to a manager")
}

/// The error a removed node reports.
pub(crate) fn removed_fault() -> NodeError {
    NodeError::new(
        ErrorKind::PermissionDenied,
        "this node was removed from the cluster",
    )
    .hint("run `moat leave --force` to clear its state, then join again with a fresh token (`moat join-token worker` on a manager)")
}

/// The error a node whose certificate expired reports.
pub(crate) fn expired_fault(at: OffsetDateTime) -> NodeError {
    let at = moat_store::model::rfc3339(at.unix_timestamp());
    NodeError::new(
        ErrorKind::FailedPrecondition,
        format!("this node's certificate expired at {at} while the node could not renew it"),
    )
    .hint("on a manager run `moat join-token worker` (or `manager`), then on this node `MOAT_JOIN_TOKEN=TOKEN moat join --rejoin MANAGER:PORT`; the node keeps its id and labels")
}
