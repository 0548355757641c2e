//! What every member does in the background: heartbeat to the leader,
//! follow the manager list, renew its certificate before it expires, and
//! take up the role the cluster gives it.

use std::sync::Arc;
use std::time::Duration;

use moat_api::{ApiError, ErrorKind};
use moat_pki::{KeyAlgorithm, OffsetDateTime, PrivateKey, Role};
use rand_core::OsRng;

use crate::node::{HEARTBEAT_PERIOD, Node};
use crate::rpc::{self, RpcError, RpcErrorKind, method};

/// Runs until the node is faulted (removed, expired) or the task is
/// aborted.
pub(crate) async fn run(node: Arc<Node>) {
    let mut renew_at = renewal_deadline(&node);
    let mut period = HEARTBEAT_PERIOD;
    let mut journal_forwarded = 0u64;
    let mut last_trust_warning: Option<std::time::Instant> = None;
    loop {
        if node.fault().is_some() {
            return;
        }
        let mut renew_now = false;
        match heartbeat(&node).await {
            Ok(resp) => {
                let managers = resp.managers.clone();
                if let Err(e) = node.update_node_file(|f| {
                    if !managers.is_empty() {
                        f.managers = managers;
                    }
                    f.cert_expiry_secs = resp.cert_expiry_secs;
                }) {
                    tracing::warn!(error = %e, "saving the manager list failed");
                }
                // The leader sets the pace, within sane bounds.
                period = Duration::from_millis(resp.period_ms.clamp(100, 10_000));
                // Root rotation: trust what the cluster trusts, and hold a
                // certificate from the root that issues now (without the
                // cross-signed root once the rotation is over).
                match node.follow_trust(&resp.roots_pem) {
                    Ok(true) => tracing::info!("now trusting the cluster's current root CA set"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not follow the cluster's root CAs"),
                }
                if let Some((chain, _)) = node.tls.signing_identity() {
                    let issuing_root = node
                        .tls
                        .roots()
                        .certs()
                        .iter()
                        .find(|r| crate::node::fingerprint(r.as_ref()) == resp.issuer)
                        .cloned();
                    let wrong_root = match (chain.first(), issuing_root) {
                        (Some(leaf), Some(root)) => {
                            !moat_pki::issued_by(leaf.as_ref(), root.as_ref())
                        }
                        _ => false,
                    };
                    if wrong_root || (!resp.rotating && chain.len() > 1) {
                        renew_now = true;
                    }
                }
                if Some(resp.role) != node.role() {
                    tracing::info!(
                        role = resp.role.as_str(),
                        "the cluster changed this node's role; renewing its certificate"
                    );
                    renew_now = true;
                }
            }
            Err(e) if e.kind == RpcErrorKind::Removed => {
                tracing::error!("{}", e.message);
                node.set_fault(removed_fault());
                node.stop_manager().await;
                return;
            }
            Err(e) if e.message.contains("UnknownIssuer") => {
                // Not transient: this node and the managers no longer
                // share a root (a rotation finished while it was away).
                if last_trust_warning
                    .is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(60))
                {
                    tracing::error!(error = %e, hint = crate::ca::left_behind_hint(), "the managers' certificates are from a root this node does not trust");
                    last_trust_warning = Some(std::time::Instant::now());
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
        // A manager forwards its journal itself (the audit loop); a worker
        // through a manager.
        if node.manager.load().is_none()
            && let Err(e) =
                crate::audit::forward_worker_journal(&node, &mut journal_forwarded).await
        {
            tracing::debug!(error = %e, "journal not forwarded yet");
        }
        // Follow the cluster's autolock setting (re-seal this node's keys).
        if let Err(e) = node.reconcile_keys().await {
            tracing::warn!(error = %e, "re-sealing this node's keys failed; retrying next round");
        }
        if node
            .renew_soon
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            renew_now = true;
        }
        if renew_now || OffsetDateTime::now_utc() >= renew_at {
            match renew(&node).await {
                Ok(()) => renew_at = renewal_deadline(&node),
                Err(e) if e.kind == RpcErrorKind::Removed => {
                    node.set_fault(removed_fault());
                    node.stop_manager().await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "certificate renewal failed; retrying");
                    if renew_now {
                        node.renew_soon
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }
        // Every round, so that a role change that failed half-way (or a
        // manager that crashed before becoming a voter) is completed.
        if let Err(e) = take_up_role(&node).await {
            tracing::warn!(error = %e, "taking up this node's role failed; retrying");
        }
        if let Some(identity) = node.tls.identity()
            && identity.not_after <= OffsetDateTime::now_utc()
        {
            node.set_fault(expired_fault(identity.not_after));
            node.stop_manager().await;
            return;
        }
        tokio::time::sleep(period).await;
    }
}

/// The error a removed node reports.
pub(crate) fn removed_fault() -> ApiError {
    ApiError::new(
        ErrorKind::PermissionDenied,
        "this node was removed from the cluster",
    )
    .hint("run `moat leave --force` to clear its state, then join again with a fresh token (`moat join-token worker` on a manager)")
}

/// The error a node whose certificate expired reports.
pub(crate) fn expired_fault(at: OffsetDateTime) -> ApiError {
    let at = moat_store::model::rfc3339(at.unix_timestamp());
    ApiError::new(
        ErrorKind::FailedPrecondition,
        format!("this node's certificate expired at {at} while the node could not renew it"),
    )
    .hint("on a manager run `moat join-token worker` (or `manager`), then on this node `moat join --rejoin --token TOKEN MANAGER:PORT`; the node keeps its id and labels")
}

/// One heartbeat: to the node's preferred manager, following a "not
/// leader" answer once, then to every other manager in turn.
async fn heartbeat(node: &Node) -> Result<rpc::HeartbeatResp, RpcError> {
    if let Some(m) = node.manager.load_full()
        && m.is_leader(node.id)
    {
        let state = m.local_state()?;
        let role = state
            .nodes
            .get(&node.id)
            .map(|n| n.role)
            .unwrap_or(Role::Manager);
        return Ok(crate::service::heartbeat_answer(node, &state, role));
    }
    let req = rpc::HeartbeatReq {
        address: node.node_file().advertise_addr,
    };
    let mut targets: Vec<String> = Vec::new();
    if let Some(p) = node.preferred.lock().ok().and_then(|p| p.clone()) {
        targets.push(p);
    }
    if let Some(leader) = node.manager.load_full().and_then(|m| m.leader()) {
        targets.push(leader.addr);
    }
    targets.extend(node.node_file().managers.into_iter().map(|p| p.addr));
    targets.dedup();
    let mut last = RpcError::new(RpcErrorKind::Unavailable, "this node knows no manager");
    let mut tried = std::collections::HashSet::new();
    let mut i = 0;
    while i < targets.len() {
        let addr = targets[i].clone();
        i += 1;
        if !tried.insert(addr.clone()) {
            continue;
        }
        match node
            .call::<_, rpc::HeartbeatResp>(&addr, method::HEARTBEAT, &req, rpc::CALL_TIMEOUT)
            .await
        {
            Ok(resp) => {
                if let Ok(mut p) = node.preferred.lock() {
                    *p = Some(addr);
                }
                return Ok(resp);
            }
            Err(e) if e.kind == RpcErrorKind::NotLeader => {
                if let Some(leader) = &e.leader {
                    targets.insert(i, leader.addr.clone());
                }
                last = e;
            }
            Err(e) if e.kind == RpcErrorKind::Removed => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Gets a certificate for the role the cluster has recorded, with a new
/// key, and swaps it into live TLS.
pub(crate) async fn renew(node: &Node) -> Result<(), RpcError> {
    let key = PrivateKey::generate(KeyAlgorithm::default())
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let csr = key
        .csr()
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let req = rpc::RenewReq {
        csr_pem: csr_pem(csr.as_ref()),
    };
    let resp: rpc::CertResp = node
        .call_leader(method::RENEW, &req, rpc::CALL_TIMEOUT)
        .await?;
    let identity = node
        .install_credentials(&resp.chain_pem, key)
        .map_err(RpcError::from)?;
    tracing::info!(serial = %identity.serial, role = identity.role.as_str(), not_after = %identity.not_after, "certificate renewed");
    Ok(())
}

/// Starts or stops the manager side to match the certificate's role, and
/// makes sure a manager is a Raft voter.
async fn take_up_role(node: &Arc<Node>) -> Result<(), ApiError> {
    match (node.role(), node.manager.load_full()) {
        (Some(Role::Manager), None) => {
            let file = node.node_file();
            node.start_manager(&file.listen_addr).await?;
            node.become_voter(&file.advertise_addr).await?;
            tracing::info!("this node is now a manager");
        }
        // A manager that is not in its own membership either has not caught
        // up yet or never became a voter (a crash after it was admitted):
        // ask the leader, which does nothing if it already is.
        (Some(Role::Manager), Some(m)) if !m.voters().contains(&node.id) => {
            node.become_voter(&node.node_file().advertise_addr).await?;
        }
        (Some(Role::Worker), Some(_)) => {
            node.stop_manager().await;
            let dir = node.layout.store_dir();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "removing the store of a demoted manager failed");
            }
            tracing::info!("this node is now a worker");
        }
        _ => {}
    }
    Ok(())
}

/// When to renew next: a random point between 50 % and 80 % of the
/// current certificate's lifetime.
fn renewal_deadline(node: &Node) -> OffsetDateTime {
    let Some(identity) = node.tls.identity() else {
        return OffsetDateTime::now_utc();
    };
    moat_pki::renewal_time(identity.not_before, identity.not_after, &mut OsRng)
}

/// PEM of a DER certificate request.
pub(crate) fn csr_pem(der: &[u8]) -> String {
    crate::node::pem("CERTIFICATE REQUEST", der)
}
