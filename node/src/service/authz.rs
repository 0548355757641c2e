//! Who may make a cluster call: a certificate that verified at the time of
//! the call, a node not on the removed list, and the role the method needs.

use moat_pki::{NodeId, Role};
use moat_transport::Caller;

use moat_store::model::ClusterState;

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

/// Authorizes a caller against `state`, the applied cluster state: a
/// certificate that verified at the time of the call, a node not on the
/// removed list, and the role `need` asks for. A manager call needs more
/// than a manager certificate: the store must know the node as a manager
/// (a demoted manager's certificate, or one for an id the store does not
/// hold, does not count) and the certificate must not have been revoked
/// by a demotion.
fn authorize(
    caller: &Caller,
    state: &ClusterState,
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
    let id = identity.node_id;
    if state.is_removed(&id) {
        return Err(RpcError::new(
            RpcErrorKind::Removed,
            format!("node {id} was removed from the cluster"),
        )
        .hint("run `moat leave --force` on that node to clear its state, then join it again with a new token"));
    }
    if need == Need::Member {
        return Ok((id, identity.role));
    }
    if identity.role != Role::Manager {
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!("node {id} is a worker: only managers may make this call"),
        ));
    }
    // A demoted manager's certificate stays valid until it expires; the
    // store's role, and its list of revoked certificates, are what count.
    match state.nodes.get(&id).map(|n| n.role) {
        // Retryable (a manager that just joined may not be applied here
        // yet), but nothing is done for it.
        None => {
            return Err(RpcError::new(
                RpcErrorKind::Unavailable,
                format!(
                    "this manager's store does not know node {id}: it is not a manager of this cluster, or this manager is still catching up"
                ),
            ));
        }
        Some(Role::Worker) => {
            return Err(RpcError::new(
                RpcErrorKind::Denied,
                format!(
                    "node {id} was demoted to worker: its manager certificate no longer counts"
                ),
            ));
        }
        Some(Role::Manager) => {}
    }
    if state.is_revoked(&identity.serial) {
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!(
                "the manager certificate {} of node {id} was revoked when the node was demoted",
                identity.serial
            ),
        )
        .hint("the node renews its certificate on its own; if this persists, restart its daemon"));
    }
    Ok((id, Role::Manager))
}

/// Runs `f` on the manager's applied state; a poisoned lock fails closed.
fn with_state<T>(
    m: &Manager,
    f: impl FnOnce(&ClusterState) -> Result<T, RpcError>,
) -> Result<T, RpcError> {
    m.with_state(f)
}

/// The caller's node, if it is a member.
pub(crate) fn member(m: &Manager, caller: &Caller) -> Result<(NodeId, Role), RpcError> {
    with_state(m, |state| authorize(caller, state, Need::Member))
}

/// The caller's node, if it is a manager member.
pub(crate) fn manager_member(m: &Manager, caller: &Caller) -> Result<NodeId, RpcError> {
    with_state(m, |state| authorize(caller, state, Need::Manager)).map(|(id, _)| id)
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
    use moat_store::model::Command;

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

    /// A state that knows `id` as `role`, its certificate serial "01".
    fn knowing(id: NodeId, role: Role) -> ClusterState {
        let mut state = ClusterState::default();
        crate::testing::add_worker(&mut state, id, "h", true);
        if let Some(n) = state.nodes.get_mut(&id) {
            n.role = role;
            n.cert_serial = "01".into();
            n.cert_not_after = i64::MAX;
        }
        state
    }

    #[test]
    fn workers_cannot_make_manager_calls() {
        let (c, id) = caller(Some(Role::Worker));
        let state = knowing(id, Role::Worker);
        let e = authorize(&c, &state, Need::Manager).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        assert!(authorize(&c, &state, Need::Member).is_ok());
        let (m, id) = caller(Some(Role::Manager));
        assert_eq!(
            authorize(&m, &knowing(id, Role::Manager), Need::Manager).unwrap(),
            (id, Role::Manager)
        );
    }

    #[test]
    fn a_manager_certificate_for_an_unknown_id_is_refused() {
        let (c, id) = caller(Some(Role::Manager));
        let e = authorize(&c, &ClusterState::default(), Need::Manager).unwrap_err();
        assert!(
            e.message
                .contains(&format!("does not know node {id}: it is not a manager")),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_demoted_manager_certificate_no_longer_counts() {
        let (c, id) = caller(Some(Role::Manager));
        let mut state = knowing(id, Role::Manager);
        assert!(authorize(&c, &state, Need::Manager).is_ok());
        state.apply(&Command::SetRole {
            id,
            role: Role::Worker,
        });
        let e = authorize(&c, &state, Need::Manager).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        assert!(e.message.contains("demoted"), "{}", e.message);
        // Member calls (heartbeat, renew) still work: that is how it learns.
        assert!(authorize(&c, &state, Need::Member).is_ok());
        // Promoted again, the old certificate stays revoked.
        state.apply(&Command::SetRole {
            id,
            role: Role::Manager,
        });
        let e = authorize(&c, &state, Need::Manager).unwrap_err();
        assert!(e.message.contains("was revoked"), "{}", e.message);
    }

    #[test]
    fn removed_nodes_are_refused_whatever_their_certificate() {
        let (c, id) = caller(Some(Role::Manager));
        let mut state = knowing(id, Role::Manager);
        state.removed.insert(id, i64::MAX);
        for need in [Need::Member, Need::Manager] {
            let e = authorize(&c, &state, need).unwrap_err();
            assert_eq!(e.kind, RpcErrorKind::Removed);
            assert!(e.message.contains("removed from the cluster"));
        }
    }

    #[test]
    fn no_or_rejected_certificate_is_refused() {
        let (mut c, _) = caller(None);
        let state = ClusterState::default();
        let e = authorize(&c, &state, Need::Member).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        c.rejected = Some("certificate expired".into());
        let e = authorize(&c, &state, Need::Member).unwrap_err();
        assert!(e.message.contains("certificate expired"), "{}", e.message);
    }
}
