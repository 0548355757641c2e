//! The manager side of the cluster RPCs: who may call what, and what each
//! call does.
//!
//! | method      | caller                        | where   |
//! |-------------|-------------------------------|---------|
//! | ca_bundle   | anyone                        | any     |
//! | join        | anyone with a join token      | any     |
//! | renew       | any member                    | any     |
//! | heartbeat   | any member                    | leader  |
//! | propose     | managers                      | leader  |
//! | read_index  | managers                      | leader  |
//! | add_voter   | a manager (for itself)        | leader  |
//! | admin       | managers; any member to leave | leader  |
//!
//! "Member" means: the certificate verifies now against the cluster roots
//! and its node is not on the removed list. A removed node's calls are
//! refused on its next call, whatever its certificate says.

use std::str::FromStr;
use std::sync::Weak;

use moat_pki::{NodeId, Role};
use moat_store::model::{Command, NodeRecord, refusal, rfc3339};
use moat_tokens::JoinToken;
use moat_transport::{Caller, ClusterHandler, Status};

use crate::node::{ManagerRt, Node, read_index};
use crate::rpc::{self, RpcError, RpcErrorKind, encode_answer, method};

/// The cluster service of one manager.
pub(crate) struct Service(pub(crate) Weak<Node>);

#[async_trait::async_trait]
impl ClusterHandler for Service {
    async fn call(&self, caller: Caller, method: &str, data: Vec<u8>) -> Result<Vec<u8>, Status> {
        let Some(node) = self.0.upgrade() else {
            return Err(Status::unavailable("this manager is shutting down"));
        };
        let Some(m) = node.manager.load_full() else {
            return Err(Status::unavailable("this node is no longer a manager"));
        };
        Ok(match method {
            // The CA's root, which join tokens pin (during a rotation this
            // node also trusts the new root; a joiner learns it later).
            method::CA_BUNDLE => encode_answer(&m.local_state().map(|s| {
                rpc::CaBundle {
                    roots_pem: s
                        .ca
                        .map(|c| c.root_cert_pem)
                        .unwrap_or_else(|| node.tls.roots().to_pem()),
                }
            })),
            method::JOIN => encode_answer(&join(&node, &m, &caller, &data).await),
            method::RENEW => encode_answer(&renew(&node, &m, &caller, &data).await),
            method::HEARTBEAT => encode_answer(&heartbeat(&node, &m, &caller, &data)),
            method::PROPOSE => encode_answer(&propose(&node, &m, &caller, &data).await),
            method::READ_INDEX => encode_answer(&read_index_call(&node, &m, &caller).await),
            method::ADD_VOTER => encode_answer(&add_voter(&node, &m, &caller, &data).await),
            method::ADMIN => encode_answer(&admin(&node, &m, &caller, &data).await),
            method::AUDIT_FORWARD => encode_answer(&audit_forward(&node, &m, &caller, &data).await),
            other => {
                return Err(Status::unimplemented(format!(
                    "unknown cluster method {other:?}"
                )));
            }
        })
    }
}

/// Which callers a method accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
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

fn removed_in(m: &ManagerRt) -> impl Fn(&NodeId) -> bool + '_ {
    // A poisoned lock fails closed: everyone counts as removed.
    |id| {
        m.applied
            .read()
            .map(|a| a.state.is_removed(id))
            .unwrap_or(true)
    }
}

fn role_in(m: &ManagerRt) -> impl Fn(&NodeId) -> Option<Role> + '_ {
    |id| {
        m.applied
            .read()
            .ok()
            .and_then(|a| a.state.nodes.get(id).map(|n| n.role))
    }
}

/// The caller's node, if it is a member.
fn member(m: &ManagerRt, caller: &Caller) -> Result<(NodeId, Role), RpcError> {
    authorize(caller, removed_in(m), role_in(m), Need::Member)
}

/// The caller's node, if it is a manager member.
fn manager_member(m: &ManagerRt, caller: &Caller) -> Result<NodeId, RpcError> {
    authorize(caller, removed_in(m), role_in(m), Need::Manager).map(|(id, _)| id)
}

/// A caller with a valid certificate whose node this manager's state does
/// not hold: it is behind (restarting, catching up). Only the removed list
/// says a node was removed.
fn unknown_node(id: NodeId) -> RpcError {
    RpcError::new(
        RpcErrorKind::Unavailable,
        format!("this manager does not know node {id} yet: it is still catching up"),
    )
}

fn require_leader(node: &Node, m: &ManagerRt) -> Result<(), RpcError> {
    if m.is_leader(node.id) {
        Ok(())
    } else {
        Err(RpcError::not_leader(m.leader()))
    }
}

async fn join(
    node: &Node,
    m: &ManagerRt,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::CertResp, RpcError> {
    let req: rpc::JoinReq = rpc::decode(method::JOIN, data)?;
    let remote = caller
        .remote
        .map(|r| r.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut recorded = false;
    let result = admit(node, m, &req, &remote, &mut recorded).await;
    let verdict = match &result {
        Err(_) if !recorded => Some(
            m.refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(caller.remote.map(|r| r.ip()), std::time::Instant::now()),
        ),
        _ => None,
    };
    if let (Err(e), Some(crate::refusals::Verdict::Record { suppressed_before })) =
        (&result, verdict)
    {
        // Refused before anything was proposed: recorded here, within the
        // rate limit (the rest go into a summary: see `refusals`). A join
        // the raft log refused is recorded with its proposal, as failed.
        let fingerprint = JoinToken::from_str(&req.token)
            .map(|t| t.fingerprint().to_string())
            .unwrap_or_else(|_| "malformed".into());
        let state = m.local_state().ok();
        let key = state.as_ref().and_then(crate::audit::audit_key);
        let ev = node
            .ev(
                moat_audit::Actor::node(node.id),
                moat_audit::Action::NODE_JOIN,
                format!("host:{}", req.hostname),
            )
            .detail("token", fingerprint)
            .secret("token_hmac", key.as_ref(), req.token.as_bytes())
            .detail("source", &remote)
            .detail("rejoin", req.rejoin.is_some());
        let ev = if suppressed_before > 0 {
            ev.detail("suppressed_before", suppressed_before)
        } else {
            ev
        }
        .denied(&e.message);
        node.record_or_log(ev).await;
    }
    match &result {
        Ok(resp) => tracing::info!(
            remote = %remote,
            node = %resp.node_id,
            role = resp.role.as_str(),
            token = %JoinToken::from_str(&req.token).map(|t| t.fingerprint().to_string()).unwrap_or_default(),
            "join accepted"
        ),
        Err(e) => tracing::warn!(
            remote = %remote,
            token = %JoinToken::from_str(&req.token).map(|t| t.fingerprint().to_string()).unwrap_or_else(|_| "malformed".into()),
            reason = %e.message,
            "join refused"
        ),
    }
    result
}

async fn admit(
    node: &Node,
    m: &ManagerRt,
    req: &rpc::JoinReq,
    remote: &str,
    recorded: &mut bool,
) -> Result<rpc::CertResp, RpcError> {
    let token = JoinToken::from_str(&req.token)
        .map_err(|e| RpcError::new(RpcErrorKind::BadToken, format!("invalid join token: {e}")))?;
    if req.hostname.len() > 253 || req.advertise_addr.len() > 261 {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            "hostname or address too long",
        ));
    }
    let state = m.local_state()?;
    let now = moat_pki::OffsetDateTime::now_utc().unix_timestamp();
    // A fast refusal here; the Raft log decides for good (AdmitNode).
    let role = state
        .check_token(&token, now)
        .map_err(token_refusal)?
        .role();
    let id = match &req.rejoin {
        None => NodeId::generate(),
        Some(proof) => {
            let id = prove_rejoin(&state, proof, &req.csr_pem)?;
            // A rejoin keeps the node's role: a manager needs the manager
            // token, so a worker token cannot take over a manager's identity.
            if state
                .nodes
                .get(&id)
                .is_some_and(|n| n.role == Role::Manager)
                && role != Role::Manager
            {
                return Err(RpcError::new(
                    RpcErrorKind::BadToken,
                    format!("node {id} is a manager: it rejoins with the manager join token"),
                )
                .hint("get it with `moat join-token manager` on a manager"));
            }
            id
        }
    };
    if state.is_removed(&id) {
        return Err(RpcError::new(
            RpcErrorKind::Removed,
            format!(
                "node {id} was removed from the cluster and cannot rejoin with its old identity"
            ),
        )
        .hint("run `moat leave --force` on the node, then join without --rejoin"));
    }
    let (issued, leaf_pem, issuer) = Node::issue(&state, &req.csr_pem, id, role)?;
    let previous = state.nodes.get(&id);
    let record = NodeRecord {
        id,
        hostname: req.hostname.clone(),
        role,
        address: req.advertise_addr.clone(),
        labels: previous.map(|p| p.labels.clone()).unwrap_or_default(),
        cert_serial: issued.serial.clone(),
        cert_not_after: issued.not_after.unix_timestamp(),
        cert_issuer: issuer.clone(),
        availability: previous.map(|p| p.availability).unwrap_or_default(),
        ready: true,
    };
    let ev = node
        .ev(
            moat_audit::Actor::node(node.id),
            moat_audit::Action::NODE_JOIN,
            format!("node:{id}"),
        )
        .detail("hostname", &req.hostname)
        .detail("role", role.as_str())
        .detail("token", token.fingerprint())
        .secret(
            "token_hmac",
            crate::audit::audit_key(&state).as_ref(),
            req.token.as_bytes(),
        )
        .detail("source", remote)
        .detail("address", &req.advertise_addr)
        .detail("rejoin", req.rejoin.is_some())
        .detail("serial", &issued.serial)
        .detail("not_after", rfc3339(issued.not_after.unix_timestamp()));
    node.propose_audited(
        Command::AdmitNode {
            record,
            token,
            rejoin: req.rejoin.is_some(),
            now,
        },
        ev,
    )
    .await
    .map_err(|e| {
        // Rejected by the log: the entry, and with it the failed record,
        // was committed.
        *recorded = e.kind == RpcErrorKind::FailedPrecondition;
        let refused = [refusal::INVALID, refusal::USED_UP, refusal::EXPIRED]
            .iter()
            .any(|p| e.message.starts_with(p));
        if refused { token_refusal(e.message) } else { e }
    })?;
    node.record_heartbeat(m, id);
    if let Err(e) = node
        .record_cert(id, role, &issued, issuer, moat_audit::Action::CERT_ISSUE)
        .await
    {
        // The node is admitted; only its certificate's details wait for
        // its first renewal.
        tracing::error!(node = %id, error = %e.message, "could not record the certificate issued");
    }
    Ok(rpc::CertResp {
        node_id: id,
        role,
        chain_pem: leaf_pem,
        managers: node.manager_peers(),
        warning: if role == Role::Manager {
            let before = state
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager && n.id != id)
                .count();
            crate::node::even_managers_warning(before + 1)
        } else {
            None
        },
        unlock_key: match (role, state.policy.autolock) {
            (Role::Manager, true) => state.unlock_key.clone(),
            _ => None,
        },
        key_generation: state.unlock_key_version,
    })
}

/// A refused token, with the next step for the operator.
fn token_refusal(why: String) -> RpcError {
    let hint = if why.starts_with(refusal::USED_UP) || why.starts_with(refusal::EXPIRED) {
        "ask a manager's operator for a new token (`moat join-token create` or `moat join-token worker`)"
    } else {
        "get the current token with `moat join-token worker` (or `manager`) on a manager"
    };
    RpcError::new(RpcErrorKind::BadToken, why).hint(hint)
}

/// Checks a rejoin proof against the cluster's root: the old certificate
/// was issued by it, and the caller holds its key. Returns the node id.
fn prove_rejoin(
    state: &moat_store::model::ClusterState,
    proof: &rpc::RejoinProof,
    csr_pem: &str,
) -> Result<NodeId, RpcError> {
    let denied = |why: String| {
        RpcError::new(
            RpcErrorKind::Denied,
            format!("cannot rejoin with the old identity: {why}"),
        )
    };
    let ca = state.ca.as_ref().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let roots = moat_pki::TrustRoots::from_pem(ca.root_cert_pem.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let cluster = state.cluster_id.ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let chain = crate::files::chain_from_pem(&proof.chain_pem).map_err(|e| denied(e.message))?;
    let signature = data_encoding::BASE64
        .decode(proof.signature_b64.as_bytes())
        .map_err(|e| denied(format!("signature: {e}")))?;
    let identity = moat_pki::verify_possession(
        &chain,
        &roots,
        &cluster,
        &rpc::rejoin_message(csr_pem),
        &signature,
    )
    .map_err(|e| denied(e.to_string()))?;
    // Only the node's latest certificate, the one the store records, can
    // vouch for it: not an older one from a backup or a superseded key.
    let recorded = state.nodes.get(&identity.node_id).ok_or_else(|| {
        denied(format!(
            "node {} is not a member of this cluster",
            identity.node_id
        ))
    })?;
    if recorded.cert_serial != identity.serial {
        return Err(denied(format!(
            "the certificate presented (serial {}) is not node {}'s latest one",
            identity.serial, identity.node_id
        ))
        .hint("remove the node with `moat node rm` on a manager, then join it as a new node"));
    }
    Ok(identity.node_id)
}

async fn renew(
    node: &Node,
    m: &ManagerRt,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::CertResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::RenewReq = rpc::decode(method::RENEW, data)?;
    let state = m.local_state()?;
    let record = state.nodes.get(&id).ok_or_else(|| unknown_node(id))?;
    let situation = crate::refusals::Situation {
        role: record.role,
        ca_generation: state.ca_generation,
        rotation: state.ca_rotation.as_ref().map(|r| r.id),
    };
    let lifetime = std::time::Duration::from_secs(state.policy.cert_expiry_secs);
    let allowed = m.renewals.lock().unwrap_or_else(|p| p.into_inner()).check(
        id,
        situation,
        lifetime,
        std::time::Instant::now(),
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
        let (issued, leaf_pem, issuer) = Node::issue(&state, &req.csr_pem, id, record.role)?;
        node.record_cert(
            id,
            record.role,
            &issued,
            issuer,
            moat_audit::Action::CERT_RENEW,
        )
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
    if state.ca_rotation.is_some() {
        crate::ca::finish_if_done(node).await;
    }
    tracing::info!(node = %id, serial = %issued.serial, role = record.role.as_str(), not_after = %issued.not_after, "certificate renewed");
    Ok(rpc::CertResp {
        node_id: id,
        role: record.role,
        chain_pem: leaf_pem,
        managers: node.manager_peers(),
        warning: None,
        unlock_key: None,
        key_generation: 0,
    })
}

fn heartbeat(
    node: &Node,
    m: &ManagerRt,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::HeartbeatResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let _req: rpc::HeartbeatReq = rpc::decode(method::HEARTBEAT, data)?;
    require_leader(node, m)?;
    let state = m.local_state()?;
    let record = state.nodes.get(&id).ok_or_else(|| unknown_node(id))?;
    node.record_heartbeat(m, id);
    Ok(heartbeat_answer(node, &state, record.role))
}

/// What the leader tells a node at each heartbeat.
pub(crate) fn heartbeat_answer(
    node: &Node,
    state: &moat_store::model::ClusterState,
    role: Role,
) -> rpc::HeartbeatResp {
    rpc::HeartbeatResp {
        managers: node.manager_peers(),
        role,
        period_ms: crate::node::HEARTBEAT_PERIOD.as_millis() as u64,
        cert_expiry_secs: state.policy.cert_expiry_secs,
        roots_pem: state.trusted_roots_pem().unwrap_or_default(),
        issuer: issuer_fingerprint(state).unwrap_or_default(),
        rotating: state.ca_rotation.is_some(),
    }
}

/// Fingerprint of the root that issues certificates now.
pub(crate) fn issuer_fingerprint(state: &moat_store::model::ClusterState) -> Option<String> {
    state
        .issuing_ca()
        .and_then(|(ca, _)| crate::node::root_ca(ca).ok())
        .map(|r| crate::node::fingerprint(r.certificate()))
}

async fn propose(
    node: &Node,
    m: &ManagerRt,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::Nothing, RpcError> {
    manager_member(m, caller)?;
    let req: rpc::ProposeReq = rpc::decode(method::PROPOSE, data)?;
    require_leader(node, m)?;
    node.propose(req.command).await?;
    Ok(rpc::Nothing {})
}

async fn read_index_call(
    node: &Node,
    m: &ManagerRt,
    caller: &Caller,
) -> Result<rpc::ReadIndex, RpcError> {
    manager_member(m, caller)?;
    require_leader(node, m)?;
    Ok(rpc::ReadIndex {
        index: read_index(m).await?,
    })
}

async fn add_voter(
    node: &Node,
    m: &ManagerRt,
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

async fn admin(
    node: &Node,
    m: &ManagerRt,
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
async fn audit_forward(
    node: &Node,
    m: &ManagerRt,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::ForwardResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::ForwardReq = rpc::decode(method::AUDIT_FORWARD, data)?;
    if req.events.len() > crate::audit::FORWARD_BATCH {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            format!("at most {} events at a time", crate::audit::FORWARD_BATCH),
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
    let done = m.local_state()?.audit.forwarded(&id);
    let mut events = req.events;
    events.retain(|e| e.journal_seq > done);
    if events.is_empty() {
        return Ok(rpc::ForwardResp { forwarded: done });
    }
    let allowed = m.forwards.lock().unwrap_or_else(|p| p.into_inner()).allow(
        id,
        events.len(),
        std::time::Instant::now(),
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
    node.propose(Command::AuditForward { node: id, events })
        .await?;
    Ok(rpc::ForwardResp { forwarded: last })
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

#[cfg(test)]
mod rejoin_tests {
    use super::*;
    use moat_pki::{
        CertExpiry, ClusterId, KeyAlgorithm, OffsetDateTime, PrivateKey, RootCa, RootOptions,
    };
    use moat_store::model::{CaMaterial, ClusterState, Secret};

    fn cluster() -> (ClusterState, RootCa) {
        let cluster = ClusterId::generate();
        let root =
            RootCa::generate(cluster, &RootOptions::default(), OffsetDateTime::now_utc()).unwrap();
        let state = ClusterState {
            cluster_id: Some(cluster),
            ca: Some(CaMaterial {
                root_cert_pem: root.certificate_pem(),
                root_key_pkcs8: Secret::new(
                    data_encoding::BASE64.encode(&root.key().to_pkcs8_der()),
                ),
            }),
            ..Default::default()
        };
        (state, root)
    }

    /// A certificate for `id` issued at `at`, its key, and a record of it.
    fn issue(root: &RootCa, id: NodeId, at: OffsetDateTime) -> (String, PrivateKey, String) {
        let key = PrivateKey::generate(KeyAlgorithm::default()).unwrap();
        let csr = moat_pki::VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
        let issued = root
            .issue(&csr, id, Role::Worker, CertExpiry::DEFAULT, at)
            .unwrap();
        (crate::node::der_to_pem(&issued.der), key, issued.serial)
    }

    fn proof(chain_pem: &str, key: &PrivateKey, csr_pem: &str) -> rpc::RejoinProof {
        rpc::RejoinProof {
            chain_pem: chain_pem.to_string(),
            signature_b64: data_encoding::BASE64
                .encode(&key.sign(&rpc::rejoin_message(csr_pem)).unwrap()),
        }
    }

    fn record(id: NodeId, serial: &str) -> NodeRecord {
        NodeRecord {
            id,
            hostname: "w".into(),
            role: Role::Worker,
            address: String::new(),
            labels: Default::default(),
            cert_serial: serial.to_string(),
            cert_not_after: 0,
            cert_issuer: String::new(),
            availability: Default::default(),
            ready: false,
        }
    }

    #[test]
    fn only_the_latest_expired_certificate_proves_a_rejoin() {
        let (mut state, root) = cluster();
        let id = NodeId::generate();
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(10);
        let (old_pem, old_key, _) = issue(&root, id, long_ago);
        let (last_pem, last_key, last_serial) =
            issue(&root, id, long_ago + time::Duration::days(1));
        state.nodes.insert(id, record(id, &last_serial));
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nnew\n-----END CERTIFICATE REQUEST-----\n";

        // The latest (expired) certificate and its key: the node keeps its id.
        assert_eq!(
            prove_rejoin(&state, &proof(&last_pem, &last_key, csr), csr).unwrap(),
            id
        );
        // An older certificate of the same node (from a backup): refused.
        let e = prove_rejoin(&state, &proof(&old_pem, &old_key, csr), csr).unwrap_err();
        assert!(e.message.contains("latest"), "{}", e.message);
        // The right certificate with another key: refused.
        let e = prove_rejoin(&state, &proof(&last_pem, &old_key, csr), csr).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        // A signature over another CSR: refused (no replay).
        let other = proof(&last_pem, &last_key, "another csr");
        assert!(prove_rejoin(&state, &other, csr).is_err());
        // A node the cluster does not know: refused.
        state.nodes.clear();
        assert!(prove_rejoin(&state, &proof(&last_pem, &last_key, csr), csr).is_err());
    }
}
