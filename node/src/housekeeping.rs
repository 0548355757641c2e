//! The leader's housekeeping, run on every manager and acting while it
//! leads:
//!
//! * **liveness** ([`LIVENESS_TICK`]): nodes whose heartbeats stop are
//!   marked Down after [`DOWN_AFTER`] (with [`ELECTION_GRACE`] after an
//!   election), and Ready again when they return;
//! * **reconciliation**: demoted managers leave the Raft voters, standing
//!   join tokens past the policy's lifetime are replaced, expired entries
//!   of the removed list are pruned;
//! * **the audit log** ([`AUDIT_TICK`]): the journal is forwarded (on
//!   every manager), refused joins counted but not recorded are summarised,
//!   the cluster gets an audit key, tree heads are signed every
//!   [`HEAD_EVERY_RECORDS`] records or [`HEAD_EVERY`];
//! * **CA rotation**: finished once every node holds a certificate from
//!   the new root (`ca::drive`).
//!
//! The loops hold weak references: they end with the manager side.

use futures_util::StreamExt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use moat_audit::{Action, Actor};
use moat_pki::Role;
use moat_store::audit::AuditTrail;
use moat_store::model::Command;

use crate::liveness::{DOWN_AFTER, LIVENESS_TICK};
use crate::member::{Manager, Member, new_audit_key};
use crate::rpc::RpcError;

/// A signed tree head is made once this many records are unsigned…
pub(crate) const HEAD_EVERY_RECORDS: u64 = 256;
/// …or once the newest unsigned record is this old.
pub(crate) const HEAD_EVERY: Duration = Duration::from_secs(30);
/// How often the leader looks at the log, and managers at their journals.
pub(crate) const AUDIT_TICK: Duration = Duration::from_secs(1);

/// Starts the housekeeping loops of `m`, the manager side of `node`; they
/// stop with it.
pub(crate) fn start(node: &Arc<Member>, m: &Arc<Manager>) {
    m.keep_task(tokio::spawn(liveness_loop(
        Arc::downgrade(node),
        Arc::downgrade(m),
    )));
    m.keep_task(tokio::spawn(audit_loop(
        Arc::downgrade(node),
        Arc::downgrade(m),
    )));
    node.start_audit_fetch(m);
}

/// The leader's liveness loop (Down marking): compares each node's last heartbeat with its
/// recorded status and commits changes. Runs on every manager, acts only
/// while it leads.
async fn liveness_loop(node: Weak<Member>, rt: Weak<Manager>) {
    let mut tick = tokio::time::interval(LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(node), Some(m)) = (node.upgrade(), rt.upgrade()) else {
            return;
        };
        let metrics = m.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(node.id) {
            m.not_leading();
            continue;
        }
        // Under the read lock, without a copy of the state (10,000 nodes).
        let Ok(changes) = m.with_state(|state| {
            Ok(m.liveness_changes(state, node.id, metrics.current_term)
                .into_iter()
                .map(|(id, ready)| {
                    let bound = state.nodes.get(&id).map_or(DOWN_AFTER, |n| {
                        crate::liveness::down_after(n.role, state.nodes.len())
                    });
                    (id, ready, bound)
                })
                .collect::<Vec<_>>())
        }) else {
            continue;
        };
        reconcile(&node, &m).await;
        // Proposed together, so that Raft appends them in a few batches
        // (one fsync each), not one entry after another: after an
        // election or a wave of joins thousands of nodes change at once.
        let proposals = changes.into_iter().map(|(id, ready, bound)| {
            let node = node.clone();
            async move {
                if let Err(e) = node.propose(Command::SetNodeStatus { id, ready }).await {
                    tracing::debug!(node = %id, error = %e, "recording node status failed");
                } else if ready {
                    tracing::info!(node = %id, "node is ready");
                } else {
                    tracing::warn!(node = %id, "node is down: no heartbeat for {} s", bound.as_secs());
                }
            }
        });
        futures_util::stream::iter(proposals)
            .buffer_unordered(STATUS_PROPOSALS_IN_FLIGHT)
            .collect::<()>()
            .await;
    }
}

/// Node status changes proposed at once by the liveness loop.
const STATUS_PROPOSALS_IN_FLIGHT: usize = 256;

/// The leader's housekeeping: voters the store says are workers leave the
/// Raft group (a demotion that was interrupted), and removed-list entries
/// whose certificates have expired are dropped.
async fn reconcile(node: &Member, m: &Manager) {
    let now = node.clock.unix();
    let voters = m.voters();
    // Decided under the state's lock, acted on after: a copy of the state
    // every tick was an eighth of the leader's CPU at 10,000 nodes.
    let Ok((removable, expired, prune)) = m.with_state(|state| {
        // Only a voter the store records as a worker: a voter with no
        // record may be a manager this (catching-up) leader has not seen.
        let mut removable = Vec::new();
        for id in &voters {
            let demoted = state.nodes.get(id).is_some_and(|n| n.role != Role::Manager);
            if *id != node.id && demoted {
                let reachable = m.reachable_voters(state, node.id);
                if moat_store::can_remove(&voters, &reachable, id).is_ok() {
                    removable.push(*id);
                }
            }
        }
        // Standing tokens past the policy's lifetime are replaced.
        let mut expired = Vec::new();
        if let (Some(ttl), Some(tokens)) = (state.policy.token_ttl_secs, &state.join_tokens) {
            let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
            for role in [Role::Worker, Role::Manager] {
                let (_, issued_at) = tokens.standing(role);
                if issued_at.saturating_add(ttl) <= now {
                    expired.push(role);
                }
            }
        }
        Ok((
            removable,
            expired,
            state.removed.values().any(|until| *until <= now),
        ))
    }) else {
        return;
    };
    for id in removable {
        match m.remove_voter(id).await {
            Ok(()) => {
                tracing::info!(node = %id, "finished removing a demoted manager from the raft group")
            }
            Err(e) => tracing::debug!(node = %id, error = %e, "removing a demoted manager"),
        }
    }
    for role in expired {
        if let Err(e) =
            crate::tokens::rotate_standing_token(node, role, moat_audit::Actor::node(node.id)).await
        {
            tracing::debug!(error = %e, "rotating an expired standing join token");
        }
    }
    if prune {
        let _ = node.propose(Command::PruneRemoved { now }).await;
    }
}

/// Runs on every manager for as long as it is one: forwards the local
/// journal, and on the leader keeps the audit key and the tree heads.
async fn audit_loop(node: Weak<Member>, rt: Weak<Manager>) {
    let mut tick = tokio::time::interval(AUDIT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(node), Some(m)) = (node.upgrade(), rt.upgrade()) else {
            return;
        };
        // The audit trail (a frontier, not the records: D45) and a few
        // flags, read under the lock; the whole state is copied only
        // while a root rotation needs it (a copy of 10,000 nodes' records
        // every second was a cost of its own in bench/scale).
        let Ok(Some((trail, rotating, still_manager))) = m.with_state(|s| {
            Ok(s.cluster_id.is_some().then(|| {
                (
                    s.audit.clone(),
                    s.ca_rotation.is_some(),
                    s.nodes
                        .get(&node.id)
                        .is_some_and(|n| n.role == moat_pki::Role::Manager),
                )
            }))
        }) else {
            continue;
        };
        if let Err(e) = forward_journal(&node, &trail).await {
            tracing::debug!(error = %e.message, "journal not forwarded yet");
        }
        record_refusal_summary(&node, &m).await;
        if !m.is_leader(node.id) {
            continue;
        }
        // A cluster made before moat had audit keys gets one now.
        if trail.key().is_none() {
            let proposed = match new_audit_key() {
                Ok(key) => node.propose(Command::SetAuditKey(key)).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = proposed {
                tracing::warn!(error = %e.message, "could not commit the audit key");
            }
        }
        // CA rotation: finish once every node holds a new certificate.
        if rotating
            && let Ok(state) = m.local_state()
            && let Err(e) = crate::ca::drive(&node, &state).await
        {
            tracing::warn!(error = %e.message, "could not finish the root CA rotation yet");
        }
        // A leader being demoted (or removed) no longer vouches for the
        // log: verifiers refuse heads signed after that record.
        if still_manager
            && head_due(&trail, node.clock.unix())
            && let Err(e) = sign_and_commit_head(&node, &trail).await
        {
            tracing::warn!(error = %e.message, "could not sign an audit tree head");
        }
    }
}

/// Records the refused joins this manager counted but did not record one
/// by one (see `refusals`), once a minute at most.
async fn record_refusal_summary(node: &Member, m: &Manager) {
    let summary = m
        .refusals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_summary(node.clock.instant());
    let Some(summary) = summary else {
        return;
    };
    let ev = node
        .ev(
            Actor::node(node.id),
            Action::NODE_JOIN,
            format!("node:{}", node.id),
        )
        .detail("suppressed", summary.total)
        .detail("sources", summary.sources_text())
        .detail("window_s", crate::refusals::SUMMARY_EVERY.as_secs())
        .denied(&format!(
            "{} more refused join(s) were counted, not recorded one by one (rate limit)",
            summary.total
        ));
    if let Err(e) = node.record(ev).await {
        tracing::error!(
            suppressed = summary.total,
            sources = %summary.sources_text(),
            error = %e.message,
            "the summary of refused joins could not be recorded in the audit log"
        );
    }
}

/// Forwards journal records this manager has not forwarded yet.
async fn forward_journal(node: &Member, trail: &AuditTrail) -> Result<(), RpcError> {
    let events = node.pending_journal_events(trail.forwarded(&node.id));
    if events.is_empty() {
        return Ok(());
    }
    node.propose(Command::AuditForward {
        node: node.id,
        events,
        now: node.clock.unix(),
    })
    .await
}

/// Whether the log has records no head covers, and enough of them, or
/// old enough, to sign now.
fn head_due(trail: &AuditTrail, now: i64) -> bool {
    let size = trail.size();
    let (signed, since) = trail
        .last_head()
        .map(|h| (h.size, h.time.unix_seconds()))
        .unwrap_or((0, 0));
    if size <= signed {
        return false;
    }
    if size - signed >= HEAD_EVERY_RECORDS {
        return true;
    }
    // The oldest unsigned record's time.
    let oldest = trail
        .record(signed + 1)
        .and_then(|l| moat_audit::Record::from_line(l.as_bytes()).ok())
        .map(|r| r.time().unix_seconds())
        .unwrap_or(since);
    now.saturating_sub(oldest) >= HEAD_EVERY.as_secs() as i64
}

async fn sign_and_commit_head(node: &Member, trail: &AuditTrail) -> Result<(), RpcError> {
    let head = node.sign_head(trail)?;
    node.propose(Command::AuditHead(head)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{EventDraft, operator};
    use moat_pki::NodeId;
    use moat_store::model::ClusterState;

    fn me() -> NodeId {
        "0123456789abcdefghijklmn00".parse().unwrap()
    }

    #[test]
    fn heads_are_due_by_count_or_age() {
        let mut trail = AuditTrail::default();
        assert!(!head_due(&trail, 1_700_000_000));
        let mut s = ClusterState::default();
        let ev = EventDraft::new(me(), operator(), Action::POLICY_UPDATE, "policy").into_event();
        s.apply(&Command::Audit {
            time: 1_700_000_000,
            event: ev.clone(),
        });
        trail = s.audit.clone();
        assert!(!head_due(&trail, 1_700_000_010));
        assert!(head_due(&trail, 1_700_000_030));
        for i in 0..HEAD_EVERY_RECORDS {
            s.apply(&Command::Audit {
                time: 1_700_000_000 + i as i64,
                event: ev.clone(),
            });
        }
        assert!(head_due(&s.audit, 1_700_000_001));
    }
}
