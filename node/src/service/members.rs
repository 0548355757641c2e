//! The calls members make to a manager once admitted: renew, heartbeat,
//! propose, read index, add voter, admin and forwarded journal events.

use moat_pki::Role;
use moat_store::model::Command;
use moat_transport::Caller;

use super::authz::{manager_member, member, require_leader, unknown_node};
use crate::member::{Manager, Member, read_index};
use crate::rpc::{self, RpcError, RpcErrorKind, method};

pub(crate) async fn renew(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::CertResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::RenewReq = rpc::decode(method::RENEW, data)?;
    // Read under the lock, never a copy of the whole state (O(nodes)).
    let (role, situation, lifetime) = m.with_state(|state| {
        let record = state.nodes.get(&id).ok_or_else(|| unknown_node(id))?;
        let situation = crate::refusals::Situation {
            role: record.role,
            ca_generation: state.ca_generation,
            rotation: state.ca_rotation.as_ref().map(|r| r.id),
        };
        let lifetime = std::time::Duration::from_secs(state.policy.cert_expiry_secs);
        Ok((record.role, situation, lifetime))
    })?;
    let allowed = m.renewals.lock().unwrap_or_else(|p| p.into_inner()).check(
        id,
        situation,
        lifetime,
        node.clock.instant(),
    );
    if let Err(wait) = allowed {
        // Not audited: the limit is what keeps renewals from flooding the
        // log. The daemon log and `moat_renewals_refused_total` count it.
        tracing::warn!(node = %id, retry_in_s = wait.as_secs() + 1, "renewal refused: too many renewals from this node");
        return Err(RpcError::new(
            RpcErrorKind::FailedPrecondition,
            format!(
                "too many certificate renewals from node {id}: the current certificate is recent; try again in {} s",
                wait.as_secs() + 1
            ),
        )
        .hint("the node renews by itself well before its certificate ends; nothing needs doing unless this repeats, which points at a misbehaving node"));
    }
    let renewed = async {
        let (issued, leaf_pem, issuer) = m.with_state(|state| {
            crate::ca::issue(state, &req.csr_pem, id, role, node.clock.now())
        })?;
        node.record_cert(id, role, &issued, issuer, moat_audit::Action::CERT_RENEW)
            .await?;
        Ok::<_, RpcError>((issued, leaf_pem))
    }
    .await;
    let (issued, leaf_pem) = match renewed {
        Ok(done) => done,
        Err(e) => {
            m.renewals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refund(id);
            return Err(e);
        }
    };
    if m.with_state(|state| Ok(state.ca_rotation.is_some()))? {
        crate::ca::finish_if_done(node).await;
    }
    tracing::info!(node = %id, serial = %issued.serial, role = role.as_str(), not_after = %issued.not_after, "certificate renewed");
    Ok(rpc::CertResp {
        node_id: id,
        role,
        chain_pem: leaf_pem,
        managers: node.manager_peers(),
        warning: None,
        unlock_key: None,
        key_generation: 0,
    })
}

pub(crate) fn heartbeat(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::HeartbeatResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let _req: rpc::HeartbeatReq = rpc::decode(method::HEARTBEAT, data)?;
    require_leader(node, m)?;
    // Every node, every period: read under the lock, never copy the state
    // (a copy of 10,000 nodes' records per heartbeat was the leader's
    // whole CPU in bench/scale).
    let answer = m.with_state(|state| {
        let record = state.nodes.get(&id).ok_or_else(|| unknown_node(id))?;
        Ok(heartbeat_answer(node, state, record.role))
    })?;
    m.saw(id);
    Ok(answer)
}

/// What the leader tells a node at each heartbeat.
pub(crate) fn heartbeat_answer(
    node: &Member,
    state: &moat_store::model::ClusterState,
    role: Role,
) -> rpc::HeartbeatResp {
    rpc::HeartbeatResp {
        managers: node.manager_peers(),
        role,
        period_ms: crate::liveness::heartbeat_period(role, state.nodes.len()).as_millis() as u64,
        cert_expiry_secs: state.policy.cert_expiry_secs,
        roots_pem: state.trusted_roots_pem().unwrap_or_default(),
        issuer: crate::ca::issuer_fingerprint(state).unwrap_or_default(),
        rotating: state.ca_rotation.is_some(),
    }
}

pub(crate) async fn propose(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::Nothing, RpcError> {
    manager_member(m, caller)?;
    let req: rpc::ProposeReq = rpc::decode(method::PROPOSE, data)?;
    require_leader(node, m)?;
    node.propose(req.command).await?;
    Ok(rpc::Nothing {})
}

pub(crate) async fn read_index_call(
    node: &Member,
    m: &Manager,
    caller: &Caller,
) -> Result<rpc::ReadIndex, RpcError> {
    manager_member(m, caller)?;
    require_leader(node, m)?;
    Ok(rpc::ReadIndex {
        index: read_index(m).await?,
    })
}

pub(crate) async fn add_voter(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::Nothing, RpcError> {
    let id = manager_member(m, caller)?;
    let req: rpc::AddVoterReq = rpc::decode(method::ADD_VOTER, data)?;
    require_leader(node, m)?;
    let state = m.local_state()?;
    if state.nodes.get(&id).map(|n| n.role) != Some(Role::Manager) {
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!("node {id} is not a manager in the cluster state"),
        ));
    }
    let addr = req.addr.parse().map_err(|e| {
        RpcError::new(
            RpcErrorKind::Invalid,
            format!("address {:?}: {e}", req.addr),
        )
    })?;
    if !m.voters().contains(&id) {
        crate::raft::add_voter(&m.raft, id, addr)
            .await
            .map_err(|e| {
                RpcError::new(
                    RpcErrorKind::Unavailable,
                    format!("adding {id} to the raft group: {e}"),
                )
            })?;
        tracing::info!(node = %id, addr = %addr, "manager joined the raft group");
    }
    Ok(rpc::Nothing {})
}

pub(crate) async fn admin(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::Nothing, RpcError> {
    let caller_id = match member(m, caller) {
        Ok((id, _)) => id,
        Err(e) => return Err(e),
    };
    let mut admin: rpc::Admin = rpc::decode(method::ADMIN, data)?;
    // A worker may only ask to leave, for itself; everything else needs a
    // manager.
    match &admin.req {
        rpc::AdminReq::Leave { id, .. } if *id == caller_id => {
            // A worker speaks for itself: its word on who asked is not
            // taken.
            if manager_member(m, caller).is_err() {
                admin.by = rpc::RequestedBy {
                    node: caller_id,
                    actor: moat_audit::Actor::node(caller_id).to_string(),
                };
            }
        }
        _ => {
            manager_member(m, caller)?;
        }
    }
    require_leader(node, m)?;
    node.run_admin(m, admin).await?;
    Ok(rpc::Nothing {})
}

/// A node's journal events, into the cluster log under its own id (an
/// event naming another node is refused).
pub(crate) async fn audit_forward(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::ForwardResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::ForwardReq = rpc::decode(method::AUDIT_FORWARD, data)?;
    if req.events.len() > crate::member::FORWARD_BATCH {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            format!("at most {} events at a time", crate::member::FORWARD_BATCH),
        ));
    }
    if let Some(e) = req.events.iter().find(|e| e.event.node != id) {
        return Err(RpcError::new(
            RpcErrorKind::Denied,
            format!(
                "node {id} may only forward its own events, not node {}'s",
                e.event.node
            ),
        ));
    }
    // What the cluster log already holds (a node restarted sends its
    // journal from the start) costs nothing and skips ahead.
    let done = m.with_state(|s| Ok(s.audit.forwarded(&id)))?;
    let mut events = req.events;
    events.retain(|e| e.journal_seq > done);
    if events.is_empty() {
        return Ok(rpc::ForwardResp { forwarded: done });
    }
    let allowed = m.forwards.lock().unwrap_or_else(|p| p.into_inner()).allow(
        id,
        events.len(),
        node.clock.instant(),
    );
    if allowed == 0 {
        return Err(RpcError::new(
            RpcErrorKind::FailedPrecondition,
            format!(
                "node {id} forwards journal events faster than a manager records them; they stay in its journal and go later"
            ),
        ));
    }
    events.truncate(allowed);
    let Some(last) = events.last().map(|e| e.journal_seq) else {
        return Ok(rpc::ForwardResp { forwarded: 0 });
    };
    node.propose(Command::AuditForward {
        node: id,
        events,
        now: node.clock.unix(),
    })
    .await?;
    // Past the day's budget only a part is recorded: report what was.
    let forwarded = m.with_state(|s| Ok(s.audit.forwarded(&id)))?.min(last);
    Ok(rpc::ForwardResp { forwarded })
}
