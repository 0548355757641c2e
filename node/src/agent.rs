//! What every member does in the background: heartbeat to the leader,
//! follow the manager list, renew its certificate before it expires, and
//! take up the role the cluster gives it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use moat_pki::{OffsetDateTime, Role};
use rand_core::OsRng;

use crate::error::NodeError;
use crate::faults::{expired_fault, removed_fault};
use crate::liveness::HEARTBEAT_PERIOD;
use crate::member::Member;
use crate::roles::take_up_role;
use crate::rpc::{self, RpcError, RpcErrorKind, method};

/// Runs until the node is faulted (removed, expired) or the task is
/// aborted.
pub(crate) async fn run(node: Arc<Member>) {
    let mut renew_at = renewal_deadline(&node);
    let mut period = HEARTBEAT_PERIOD;
    let mut journal_forwarded = 0u64;
    let mut last_trust_warning: Option<std::time::Instant> = None;
    let clock = node.clock.clone();
    loop {
        if node.fault().is_some() {
            return;
        }
        let mut renew_now = false;
        let started = clock.instant();
        let beat = heartbeat(&node).await;
        if let Some(probe) = node.probe() {
            match &beat {
                Ok(_) => probe.heartbeats.record(clock.since(started)),
                Err(_) => {
                    probe.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        match beat {
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
                node.set_pace(period);
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
                        .find(|r| moat_pki::fingerprint(r.as_ref()) == resp.issuer)
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
                if last_trust_warning.is_none_or(|t| clock.since(t) >= Duration::from_secs(60)) {
                    tracing::error!(error = %e, hint = crate::ca::left_behind_hint(), "the managers' certificates are from a root this node does not trust");
                    last_trust_warning = Some(clock.instant());
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
        // A manager forwards its journal itself (the audit loop); a worker
        // through a manager.
        if !node.is_manager()
            && let Err(e) = node.forward_worker_journal(&mut journal_forwarded).await
        {
            tracing::debug!(error = %e, "journal not forwarded yet");
        }
        // Follow the cluster's autolock setting (re-seal this node's keys).
        if let Err(e) = node.reconcile_keys().await {
            if stop_on_damage(&node, &e).await {
                return;
            }
            tracing::warn!(error = %e, "re-sealing this node's keys failed; retrying next round");
        }
        // A store data key near its record limit is rotated (issue 16).
        if let Err(e) = node.rotate_worn_dek() {
            tracing::warn!(error = %e, "starting the rotation of a worn data key failed; retrying next round");
        }
        if node.take_renew_soon() {
            renew_now = true;
        }
        if renew_now || clock.now() >= renew_at {
            let started = clock.instant();
            let renewed = node.renew().await;
            if let Some(probe) = node.probe() {
                match &renewed {
                    Ok(()) => probe.renewals.record(clock.since(started)),
                    Err(_) => {
                        probe.renewal_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            match renewed {
                Ok(()) => renew_at = renewal_deadline(&node),
                Err(e) if e.kind == RpcErrorKind::Removed => {
                    node.set_fault(removed_fault());
                    node.stop_manager().await;
                    return;
                }
                Err(e) => {
                    node.renewal_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "certificate renewal failed; retrying");
                    if renew_now {
                        node.renew_soon();
                    }
                }
            }
        }
        // Every round, so that a role change that failed half-way (or a
        // manager that crashed before becoming a voter) is completed.
        if let Err(e) = take_up_role(&node).await {
            if stop_on_damage(&node, &e).await {
                return;
            }
            tracing::warn!(error = %e, "taking up this node's role failed; retrying");
        }
        if let Some(identity) = node.tls.identity()
            && identity.not_after <= clock.now()
        {
            node.set_fault(expired_fault(identity.not_after));
            node.stop_manager().await;
            return;
        }
        tokio::time::sleep(period).await;
    }
}

/// Fatal damage (a file that does not open, a damaged record) is never
/// retried: the node reports it as its fault, naming the file, and the
/// agent stops. Returns whether it did.
async fn stop_on_damage(node: &Member, e: &NodeError) -> bool {
    if !e.is_fatal() {
        return false;
    }
    tracing::error!(error = %e, "stopping this node's background work: damage is not retried");
    node.set_fault(e.clone());
    node.stop_manager().await;
    true
}

/// One heartbeat: to the node's preferred manager, following a "not
/// leader" answer once, then to every other manager in turn.
async fn heartbeat(node: &Member) -> Result<rpc::HeartbeatResp, RpcError> {
    if let Some(m) = node.manager()
        && m.is_leader(node.id)
    {
        // Under the state's lock, not from a copy of it (D46).
        return m.with_state(|state| {
            let role = state
                .nodes
                .get(&node.id)
                .map(|n| n.role)
                .unwrap_or(Role::Manager);
            Ok(crate::service::heartbeat_answer(node, state, role))
        });
    }
    let req = rpc::HeartbeatReq {
        address: node.node_file().advertise_addr,
    };
    let mut targets: Vec<String> = Vec::new();
    if let Some(p) = node.preferred() {
        targets.push(p);
    }
    if let Some(leader) = node.manager().and_then(|m| m.leader()) {
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
                node.set_preferred(addr);
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

/// When to renew next: a random point between 50 % and 80 % of the
/// current certificate's lifetime.
fn renewal_deadline(node: &Member) -> OffsetDateTime {
    let Some(identity) = node.tls.identity() else {
        return node.clock.now();
    };
    moat_pki::renewal_time(identity.not_before, identity.not_after, &mut OsRng)
}
