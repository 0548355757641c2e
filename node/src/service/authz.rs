//! Who may make a cluster call: a certificate that verified at the time of
//! the call, a node not on the removed list, and the role the method needs.

use moat_pki::{NodeId, Role};
use moat_transport::Caller;

use crate::member::{Manager, Member};
use crate::rpc::{RpcError, RpcErrorKind};

/// Which callers a method accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any node of the cluster not on the removed list.
    Member,
    /// A manager not on the removed list.
    Manager,
}

/// Authorizes a caller: a certificate that verified at the time of the
/// call, a node not on the removed list, and the role `need` asks for.
fn authorize(
    caller: &Caller,
    is_removed: impl Fn(&NodeId) -> bool,
    recorded_role: impl Fn(&NodeId) -> Option<Role>,
    need: Need,
) -> Result<(NodeId, Role), RpcError> {
    let Some(identity) = &caller.identity else {
        let why = caller
            .rejected
            .clone()
            .unwrap_or_else(|| "no client certificate was presented".into());
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!("this call needs a node certificate of the cluster: {why}"),
        ));
    };
    if is_removed(&identity.node_id) {
        return Err(RpcError::new(
            RpcErrorKind::Removed,
            format!("node {} was removed from the cluster", identity.node_id),
        )
        .hint("run `moat leave --force` on that node to clear its state, then join it again with a new token"));
    }
    if need == Need::Manager && identity.role != Role::Manager {
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!(
                "node {} is a worker: only managers may make this call",
                identity.node_id
            ),
        ));
    }
    // A demoted manager's certificate stays valid until it expires; the
    // store's role is what counts.
    if need == Need::Manager && recorded_role(&identity.node_id) == Some(Role::Worker) {
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!(
                "node {} was demoted to worker: its manager certificate no longer counts",
                identity.node_id
            ),
        ));
    }
    Ok((identity.node_id, identity.role))
}

fn removed_in(m: &Manager) -> impl Fn(&NodeId) -> bool + '_ {
    // A poisoned lock fails closed: everyone counts as removed.
    |id| {
        m.applied
            .read()
            .map(|a| a.state.is_removed(id))
            .unwrap_or(true)
    }
}

fn role_in(m: &Manager) -> impl Fn(&NodeId) -> Option<Role> + '_ {
    |id| {
        m.applied
            .read()
            .ok()
            .and_then(|a| a.state.nodes.get(id).map(|n| n.role))
    }
}

/// The caller's node, if it is a member.
pub(crate) fn member(m: &Manager, caller: &Caller) -> Result<(NodeId, Role), RpcError> {
    authorize(caller, removed_in(m), role_in(m), Need::Member)
}

/// The caller's node, if it is a manager member.
pub(crate) fn manager_member(m: &Manager, caller: &Caller) -> Result<NodeId, RpcError> {
    authorize(caller, removed_in(m), role_in(m), Need::Manager).map(|(id, _)| id)
}

/// A caller with a valid certificate whose node this manager's state does
/// not hold: it is behind (restarting, catching up). Only the removed list
/// says a node was removed.
pub(crate) fn unknown_node(id: NodeId) -> RpcError {
    RpcError::new(
        RpcErrorKind::Unavailable,
        format!("this manager does not know node {id} yet: it is still catching up"),
    )
}

pub(crate) fn require_leader(node: &Member, m: &Manager) -> Result<(), RpcError> {
    if m.is_leader(node.id) {
        Ok(())
    } else {
        Err(RpcError::not_leader(m.leader()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_pki::{ClusterId, Identity, OffsetDateTime};

    fn caller(role: Option<Role>) -> (Caller, NodeId) {
        let id = NodeId::generate();
        let identity = role.map(|role| Identity {
            node_id: id,
            role,
            cluster_id: ClusterId::generate(),
            serial: "01".into(),
            not_before: OffsetDateTime::now_utc(),
            not_after: OffsetDateTime::now_utc(),
        });
        (
            Caller {
                remote: None,
                identity,
                rejected: None,
            },
            id,
        )
    }

    #[test]
    fn workers_cannot_make_manager_calls() {
        let (c, _) = caller(Some(Role::Worker));
        let e = authorize(&c, |_| false, |_| None, Need::Manager).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        assert!(authorize(&c, |_| false, |_| None, Need::Member).is_ok());
        let (m, id) = caller(Some(Role::Manager));
        assert_eq!(
            authorize(&m, |_| false, |_| None, Need::Manager).unwrap(),
            (id, Role::Manager)
        );
    }

    #[test]
    fn a_demoted_manager_certificate_no_longer_counts() {
        let (c, id) = caller(Some(Role::Manager));
        let e = authorize(
            &c,
            |_| false,
            |n| (*n == id).then_some(Role::Worker),
            Need::Manager,
        )
        .unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        assert!(e.message.contains("demoted"), "{}", e.message);
        // Member calls (heartbeat, renew) still work: that is how it learns.
        assert!(authorize(&c, |_| false, |_| Some(Role::Worker), Need::Member).is_ok());
    }

    #[test]
    fn removed_nodes_are_refused_whatever_their_certificate() {
        let (c, id) = caller(Some(Role::Manager));
        for need in [Need::Member, Need::Manager] {
            let e = authorize(&c, |n| *n == id, |_| None, need).unwrap_err();
            assert_eq!(e.kind, RpcErrorKind::Removed);
            assert!(e.message.contains("removed from the cluster"));
        }
    }

    #[test]
    fn no_or_rejected_certificate_is_refused() {
        let (mut c, _) = caller(None);
        let e = authorize(&c, |_| false, |_| None, Need::Member).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        c.rejected = Some("certificate expired".into());
        let e = authorize(&c, |_| false, |_| None, Need::Member).unwrap_err();
        assert!(e.message.contains("certificate expired"), "{}", e.message);
    }
}
