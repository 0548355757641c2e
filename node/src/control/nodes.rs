//! `moat node …`: list, inspect, promote and demote, remove, update
//! labels and availability; and how a node is named (Docker's rules).

use std::sync::Arc;

use axum::extract::{Json, State};
use moat_api::{
    ErrorKind, ManagerStatus, NodeInfo, NodeRef, NodeRemoveRequest, NodeRemoveResponse, NodeStatus,
    NodeUpdateRequest, RoleChangeRequest, RoleChangeResponse,
};
use moat_audit::Action;
use moat_pki::{NodeId, Role};
use moat_store::model::{ClusterState, Command, NodeRecord, rfc3339};

use super::answer::{Answer, manager};
use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::member::{Member, operator};
use crate::rpc::AdminReq;
use crate::wire::{api_role, check_labels};

pub(super) async fn node_ls(State(d): State<Arc<Daemon>>) -> Answer<Vec<NodeInfo>> {
    let node = manager(&d).await?;
    let m = node.linearized().await?;
    // Who leads is asked once, not once per node (a copy of the Raft
    // metrics each time); the rows are made under the state's lock, not
    // from a copy of the whole state.
    let leader = leader_of(&node);
    let nodes = m.with_state(|state| {
        Ok(state
            .nodes
            .values()
            .map(|r| node_info(r, node.id, leader))
            .collect())
    })?;
    Ok(Json(nodes))
}

pub(super) async fn node_inspect(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NodeRef>,
) -> Answer<NodeInfo> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let record = resolve(&state, &req.node, node.id)?;
    Ok(Json(node_info(record, node.id, leader_of(&node))))
}

pub(super) async fn node_role(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<RoleChangeRequest>,
) -> Answer<RoleChangeResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let record = resolve(&state, &req.node, node.id)?.clone();
    let id = record.id;
    let want = crate::wire::role(req.role);
    if record.role == want {
        return Ok(Json(RoleChangeResponse {
            id: id.to_string(),
            unchanged: true,
            warning: None,
        }));
    }
    let mut warning = None;
    match want {
        Role::Manager => {
            node.propose_audited(
                Command::SetRole { id, role: want },
                node.ev(operator(), Action::NODE_PROMOTE, format!("node:{id}")),
            )
            .await?;
            let managers = state
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager)
                .count()
                + 1;
            warning = crate::member::even_managers_warning(managers);
            tracing::info!(node = %id, "node promoted to manager");
        }
        Role::Worker => {
            node.admin(AdminReq::Demote { id }, operator()).await?;
            tracing::info!(node = %id, "manager demoted");
        }
    }
    Ok(Json(RoleChangeResponse {
        id: id.to_string(),
        unchanged: false,
        warning,
    }))
}

pub(super) async fn node_rm(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NodeRemoveRequest>,
) -> Answer<NodeRemoveResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let record = resolve(&state, &req.node, node.id)?;
    let (id, was_manager) = (record.id, record.role == moat_pki::Role::Manager);
    if id == node.id {
        return Err(NodeError::new(
            ErrorKind::FailedPrecondition,
            "cannot remove the node this command runs on",
        )
        .hint("run `moat leave` on it, or `moat node rm` on another manager")
        .into());
    }
    node.admin(
        AdminReq::Remove {
            id,
            force: req.force,
        },
        operator(),
    )
    .await?;
    tracing::info!(node = %id, "node removed from the cluster");
    Ok(Json(NodeRemoveResponse {
        id: id.to_string(),
        was_manager,
    }))
}

pub(super) async fn node_update(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NodeUpdateRequest>,
) -> Answer<NodeInfo> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let id = resolve(&state, &req.node, node.id)?.id;
    check_labels(req.label_add.keys().chain(req.label_rm.iter()))?;
    let mut ev = node.ev(operator(), Action::NODE_LABEL, format!("node:{id}"));
    if !req.label_add.is_empty() {
        let added: Vec<String> = req
            .label_add
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        ev = ev.detail("labels_added", added.join(","));
    }
    if !req.label_rm.is_empty() {
        ev = ev.detail("labels_removed", req.label_rm.join(","));
    }
    if let Some(a) = req.availability {
        ev = ev.detail("availability", format!("{a:?}").to_lowercase());
    }
    node.propose_audited(
        Command::UpdateNode {
            id,
            labels_add: req.label_add,
            labels_rm: req.label_rm,
            availability: req.availability.map(crate::wire::availability),
        },
        ev,
    )
    .await?;
    let state = node.read_state().await?;
    let record = state
        .nodes
        .get(&id)
        .ok_or_else(|| NodeError::new(ErrorKind::NotFound, format!("No such node: {id}")))?;
    Ok(Json(node_info(record, node.id, leader_of(&node))))
}

/// Finds the node `name` names: `self` (the node answering), an id, a
/// unique host name, or a unique id prefix, in that order.
pub(super) fn resolve<'a>(
    state: &'a ClusterState,
    name: &str,
    me: NodeId,
) -> Result<&'a NodeRecord, NodeError> {
    if name == "self"
        && let Some(r) = state.nodes.get(&me)
    {
        return Ok(r);
    }
    if let Ok(id) = name.parse::<NodeId>()
        && let Some(r) = state.nodes.get(&id)
    {
        return Ok(r);
    }
    // As Docker: a full id, else an exact host name, else an id prefix.
    // A host name wins over a prefix, so `m3` is the node named m3 even
    // when another node's random id starts with "m3".
    let by_host: Vec<_> = state
        .nodes
        .values()
        .filter(|r| r.hostname == name)
        .collect();
    let matches = if by_host.is_empty() {
        state
            .nodes
            .values()
            .filter(|r| !name.is_empty() && r.id.to_string().starts_with(name))
            .collect()
    } else {
        by_host
    };
    match matches.as_slice() {
        [record] => Ok(record),
        [] => Err(
            NodeError::new(ErrorKind::NotFound, format!("No such node: {name}"))
                .hint("list nodes with `moat node ls`"),
        ),
        many => Err(NodeError::new(
            ErrorKind::InvalidArgument,
            format!("node {name} is ambiguous ({} matches)", many.len()),
        )
        .hint("use the full node id")),
    }
}

/// How `node` (a manager) presents record `r`.
/// The leader, as `node` knows it.
fn leader_of(node: &Member) -> Option<NodeId> {
    node.manager().and_then(|m| m.leader()).map(|l| l.id)
}

/// `r` as `node ls` shows it, to `me`, with `leader` leading.
fn node_info(r: &NodeRecord, me: NodeId, leader: Option<NodeId>) -> NodeInfo {
    let manager_status = (r.role == Role::Manager).then(|| {
        if Some(r.id) == leader {
            ManagerStatus::Leader
        } else if r.ready {
            ManagerStatus::Reachable
        } else {
            ManagerStatus::Unreachable
        }
    });
    NodeInfo {
        id: r.id.to_string(),
        hostname: r.hostname.clone(),
        role: api_role(r.role),
        status: if r.ready {
            NodeStatus::Ready
        } else {
            NodeStatus::Down
        },
        availability: crate::wire::api_availability(r.availability),
        manager_status,
        labels: r.labels.clone(),
        cert_not_after: rfc3339(r.cert_not_after),
        is_self: r.id == me,
        address: r.address.clone(),
        cert_serial: r.cert_serial.clone(),
        cert_issuer_fingerprint: r.cert_issuer.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_starting(prefix: &str) -> NodeId {
        let s = NodeId::generate().to_string();
        format!("{prefix}{}", &s[prefix.len()..]).parse().unwrap()
    }

    fn add(state: &mut ClusterState, id: NodeId, hostname: &str) {
        crate::testing::add_worker(state, id, hostname, true);
    }

    /// Found by the chaos suite: node `m5`'s random id began with "m3", and
    /// `moat node update … m3` answered "ambiguous".
    #[test]
    fn a_host_name_wins_over_an_id_prefix() {
        let mut state = ClusterState::default();
        let (m3, m5, web) = (id_starting("aa"), id_starting("m3aa"), id_starting("m3vv"));
        add(&mut state, m3, "m3");
        add(&mut state, m5, "m5");
        add(&mut state, web, "web");
        let me = m5;
        assert_eq!(resolve(&state, "m3", me).unwrap().id, m3);
        assert_eq!(resolve(&state, &m5.to_string(), me).unwrap().id, m5);
        assert_eq!(resolve(&state, "m3a", me).unwrap().id, m5);
        assert_eq!(resolve(&state, "m3v", me).unwrap().id, web);
        assert_eq!(resolve(&state, "self", me).unwrap().id, m5);
        assert_eq!(resolve(&state, "m5", me).unwrap().id, m5);
        assert!(
            resolve(&state, "nope", me)
                .unwrap_err()
                .message()
                .contains("No such node: nope")
        );
        assert!(resolve(&state, "", me).is_err());
        // Without a node named m3, the prefix matches two: ambiguous.
        state.nodes.remove(&m3);
        let e = resolve(&state, "m3", me).unwrap_err();
        assert!(
            e.message().contains("node m3 is ambiguous (2 matches)"),
            "{e:?}"
        );
        // Two nodes with one host name: ambiguous too.
        add(&mut state, id_starting("bb"), "web");
        let e = resolve(&state, "web", me).unwrap_err();
        assert!(e.message().contains("ambiguous (2 matches)"), "{e:?}");
    }
}
