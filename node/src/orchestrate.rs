//! The leader's reconciler loop: compares the services with their tasks
//! and the nodes (moat-orchestrator's pure `reconcile`), and commits what
//! must change (new tasks, placements, restarts, replacements for a Down
//! or drained node, rolling-update batches) in one Raft entry per round,
//! with an audit record summarizing the placements.
//!
//! Runs on every manager and acts only while it leads; everything it
//! decides is in the store, so a new leader continues where the old one
//! stopped (a rolling update, a half-placed service).

use std::sync::{Arc, Weak};
use std::time::Duration;

use moat_audit::{Action, Actor};
use moat_orchestrator::{Limits, NodeAvailability, NodeRole, NodeView, PlacementSummary, Plan};
use moat_pki::Role;
use moat_store::model::{Availability, ClusterState, Command};

use crate::member::{Manager, Member};

/// Longest the loop sleeps without a state change: restart delays,
/// update delays and monitor windows end on time, not on the next commit.
const TICK: Duration = Duration::from_millis(250);
/// How often a manager that does not lead checks whether it does now.
const IDLE: Duration = Duration::from_millis(200);

/// Starts the reconciler loop of `m`; it stops with the manager.
pub(crate) fn start(node: &Arc<Member>, m: &Arc<Manager>) {
    m.keep_task(tokio::spawn(reconcile_loop(
        Arc::downgrade(node),
        Arc::downgrade(m),
    )));
}

async fn reconcile_loop(node: Weak<Member>, m: Weak<Manager>) {
    let limits = Limits::default();
    loop {
        let (Some(node), Some(m)) = (node.upgrade(), m.upgrade()) else {
            return;
        };
        if !m.is_leader(node.id) {
            drop((node, m));
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let mut metrics = m.raft.metrics();
        let applied = metrics.borrow_and_update().last_applied;
        let now = node.clock.unix_ms();
        let plan = m.with_state(|s| Ok(plan(s, now, &limits)));
        match plan {
            Ok(plan) if !plan.changes.is_empty() => {
                let placed = plan.placements.len();
                if let Err(e) = commit(&node, plan, now).await {
                    tracing::warn!(error = %e, "committing the reconciler's changes failed; trying again");
                    tokio::time::sleep(TICK).await;
                } else if placed > 0 {
                    tracing::debug!(services = placed, "tasks placed");
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the state for the reconciler failed"),
        }
        drop(node);
        drop(m);
        // Until the next commit (a new service, a task report, a node
        // going Down), or the tick.
        let deadline = tokio::time::Instant::now() + TICK;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) if metrics.borrow_and_update().last_applied != applied => break,
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    }
}

/// The reconciler's plan for `state` at `now` (Unix milliseconds).
fn plan(state: &ClusterState, now: i64, limits: &Limits) -> Plan {
    // Nothing to place or keep: no view of every node (the loop runs at
    // every commit, and 10,000 nodes' views at every renewal was the
    // leader's largest cost after heartbeats in bench/scale).
    if state.orchestrator.services.is_empty() && state.orchestrator.tasks.is_empty() {
        return Plan::default();
    }
    let nodes: Vec<NodeView> = state.nodes.values().map(node_view).collect();
    let mut new_id = || moat_pki::NodeId::generate().to_string();
    moat_orchestrator::reconcile(&nodes, &state.orchestrator, now, &mut new_id, limits)
}

/// How the scheduler sees a node record.
pub(crate) fn node_view(r: &moat_store::model::NodeRecord) -> NodeView {
    NodeView {
        id: r.id.to_string(),
        hostname: r.hostname.clone(),
        role: match r.role {
            Role::Manager => NodeRole::Manager,
            Role::Worker => NodeRole::Worker,
        },
        labels: r.labels.clone(),
        availability: match r.availability {
            Availability::Active => NodeAvailability::Active,
            Availability::Pause => NodeAvailability::Pause,
            Availability::Drain => NodeAvailability::Drain,
        },
        ready: r.ready,
    }
}

/// Commits `plan`, with one audit record of its placements if it has any.
async fn commit(node: &Member, plan: Plan, now: i64) -> Result<(), crate::rpc::RpcError> {
    let change = Command::orchestrate(moat_orchestrator::Command::Reconcile {
        changes: plan.changes,
        now,
    });
    if plan.placements.is_empty() {
        return node.propose(change).await;
    }
    node.propose_audited(change, placement_event(node, &plan.placements))
        .await
}

/// Most services named one by one in a placement record.
const MAX_SERVICES_PER_RECORD: usize = 24;

/// The audit record of one round's placements: per service, the tasks
/// placed on each node and those left pending, with the reason.
fn placement_event(node: &Member, placements: &[PlacementSummary]) -> crate::member::EventDraft {
    let target = match placements {
        [one] => format!("service:{}", one.service_name),
        many => format!("services:{}", many.len()),
    };
    let mut ev = node.ev(Actor::node(node.id), Action::TASK_PLACE, target);
    for (i, p) in placements.iter().take(MAX_SERVICES_PER_RECORD).enumerate() {
        let placed: u64 = p.placed.values().sum();
        let mut text = format!("{}: placed {placed}", p.service_name);
        if !p.placed.is_empty() {
            let on: Vec<String> = p
                .placed
                .iter()
                .take(16)
                .map(|(n, k)| format!("{}:{k}", short(n)))
                .collect();
            text.push_str(&format!(" ({})", on.join(",")));
        }
        if p.pending > 0 {
            text.push_str(&format!(", pending {}", p.pending));
            if let Some(reason) = &p.reason {
                text.push_str(&format!(": {reason}"));
            }
        }
        // Detail keys are fixed words; the service name is in the value.
        ev = ev.detail(&format!("service_{}", i + 1), text);
    }
    if placements.len() > MAX_SERVICES_PER_RECORD {
        ev = ev.detail("more_services", placements.len() - MAX_SERVICES_PER_RECORD);
    }
    ev
}

/// A node id's first 12 characters, as `node ls` shows ids.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut for a state without services or tasks plans what the
    /// planner itself would: nothing.
    #[test]
    fn no_services_no_plan_as_the_planner_says() {
        let mut s = ClusterState::default();
        for i in 0..50 {
            crate::testing::add_worker(
                &mut s,
                moat_pki::NodeId::generate(),
                &format!("w{i}"),
                true,
            );
        }
        let limits = Limits::default();
        let nodes: Vec<NodeView> = s.nodes.values().map(node_view).collect();
        let mut new_id = || moat_pki::NodeId::generate().to_string();
        let full =
            moat_orchestrator::reconcile(&nodes, &s.orchestrator, 1_000, &mut new_id, &limits);
        assert_eq!(plan(&s, 1_000, &limits), full);
        assert!(full.changes.is_empty());
    }
}
