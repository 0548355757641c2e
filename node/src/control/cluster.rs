//! The node's own lifecycle through the control API: `info`, `init`,
//! `join`, `leave`, and `backup`.

use std::sync::Arc;

use axum::extract::{Json, State};
use axum::response::{IntoResponse, Response};
use moat_api::{
    Empty, Info, InitRequest, InitResponse, JoinRequest, JoinResponse, LeaveRequest, NodeState,
};
use moat_pki::Role;
use moat_store::model::rfc3339;

use super::answer::{Answer, Failure, manager};
use crate::daemon::Daemon;

pub(super) async fn backup(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<moat_api::BackupRequest>,
) -> Result<Response, Failure> {
    let node = manager(&d).await?;
    let bytes = crate::backup::take(&node, req).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

pub(super) async fn info(State(d): State<Arc<Daemon>>) -> Answer<Info> {
    let mut info = Info {
        state: NodeState::Inactive,
        node_id: None,
        hostname: d.hostname.clone(),
        is_manager: false,
        cluster_id: None,
        managers: 0,
        nodes: 0,
        cert_expiry_seconds: 0,
        autolock: false,
        manager_addresses: Vec::new(),
        node_address: None,
        leader: None,
        cert_not_after: None,
        error: None,
        unlock_key_set_at: None,
        unlock_key_generation: 0,
        data_key_version: None,
        root_rotation: None,
    };
    if let Some(file) = d.locked().await {
        info.state = NodeState::Locked;
        info.node_id = Some(file.node_id.to_string());
        info.cluster_id = Some(file.cluster_id.to_string());
        info.node_address = Some(file.advertise_addr.clone());
        info.is_manager = true;
        info.autolock = true;
        info.manager_addresses = file.managers.iter().map(|p| p.addr.clone()).collect();
        info.error = Some(crate::faults::locked_error().message().to_owned());
        return Ok(Json(info));
    }
    let Some(node) = d.node().await else {
        return Ok(Json(info));
    };
    let file = node.node_file();
    info.state = NodeState::Active;
    info.node_id = Some(node.id.to_string());
    info.cluster_id = Some(node.cluster.to_string());
    info.node_address = Some(file.advertise_addr.clone());
    info.cert_expiry_seconds = file.cert_expiry_secs;
    info.manager_addresses = file.managers.iter().map(|p| p.addr.clone()).collect();
    info.cert_not_after = node
        .tls
        .identity()
        .map(|i| rfc3339(i.not_after.unix_timestamp()));
    if let Some(fault) = node.fault() {
        info.state = NodeState::Error;
        info.error = Some(match fault.hint_text() {
            Some(h) => format!("{} ({h})", fault.message()),
            None => fault.message().to_string(),
        });
        return Ok(Json(info));
    }
    if let Some(m) = node.manager() {
        info.is_manager = true;
        info.leader = m.leader().map(|l| l.id.to_string());
        // Info answers from this manager's own view, so it works without
        // quorum too.
        let state = m.local_state()?;
        info.managers = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .count();
        info.nodes = state.nodes.len();
        info.cert_expiry_seconds = state.policy.cert_expiry_secs;
        info.autolock = state.policy.autolock;
        info.unlock_key_generation = state.unlock_key_version;
        info.root_rotation = crate::ca::status(&state)
            .ok()
            .and_then(|c| c.rotation)
            .map(|r| {
                format!(
                    "rotation {} {}: {}/{} nodes on the new root",
                    r.id, r.phase, r.nodes_done, r.nodes_total
                )
            });
        info.unlock_key_set_at = state
            .unlock_key
            .is_some()
            .then(|| rfc3339(state.unlock_key_set_at));
        info.data_key_version = m
            .inner
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.dek_versions())
            .map(|(current, _)| current.0);
        info.manager_addresses = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .map(|n| n.address.clone())
            .collect();
    }
    Ok(Json(info))
}

pub(super) async fn init(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<InitRequest>,
) -> Answer<InitResponse> {
    Ok(Json(d.init(req).await?))
}

pub(super) async fn join(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<JoinRequest>,
) -> Answer<JoinResponse> {
    Ok(Json(d.join(req).await?))
}

pub(super) async fn leave(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<LeaveRequest>,
) -> Answer<Empty> {
    d.leave(req.force).await?;
    Ok(Json(Empty {}))
}
