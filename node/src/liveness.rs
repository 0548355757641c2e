//! Liveness, as the leader sees it: when each node last heartbeated, and
//! which Ready/Down changes follow. Pure: the time is passed in (the
//! manager reads its clock), so the bounds below are tested without
//! waiting. The leader's loop that commits the changes is
//! `housekeeping`.
//!
//! Bounds: a dead node shows Down within [`DOWN_AFTER`] plus one
//! [`LIVENESS_TICK`] plus a Raft commit; after an election every node
//! recorded Ready keeps [`ELECTION_GRACE`] to find the new leader. Memory:
//! one `Instant` per node that heartbeated.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use moat_pki::{NodeId, Role};
use moat_store::model::ClusterState;

use crate::rpc;

/// How often managers heartbeat to the leader, and workers in a cluster
/// of up to [`HEARTBEAT_BUDGET`] nodes (see [`heartbeat_period`]).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// Worker heartbeats per second the leader paces itself for: past this
/// many nodes, workers are told to heartbeat less often (measured in
/// `bench/scale`: docs/benchmarks.md, "Ten thousand workers").
pub const HEARTBEAT_BUDGET: u64 = 2_000;
/// The longest worker heartbeat period the leader asks for.
pub const HEARTBEAT_PERIOD_MAX: Duration = Duration::from_secs(10);
/// A node that has not heartbeated for this long is Down. The documented
/// bound for a dead node to show Down is this plus one liveness tick
/// ([`LIVENESS_TICK`]) plus a Raft commit.
pub const DOWN_AFTER: Duration = Duration::from_secs(5);
/// After an election, how long a node recorded Ready may go without a
/// heartbeat to the new leader before it is marked Down: longer than
/// [`DOWN_AFTER`], because a node may first wait out a call to the old
/// leader (cut off, not crashed: [`rpc::CALL_TIMEOUT`]) before it finds
/// the new one, a heartbeat period later.
pub(crate) const ELECTION_GRACE: Duration = Duration::from_secs(
    DOWN_AFTER.as_secs() + rpc::CALL_TIMEOUT.as_secs() + HEARTBEAT_PERIOD.as_secs(),
);
/// How often the leader compares heartbeats with the recorded status.
pub const LIVENESS_TICK: Duration = Duration::from_millis(500);
/// A manager the leader heard from within this is reachable for quorum
/// checks (managers heartbeat every [`HEARTBEAT_PERIOD`]).
const MANAGER_SEEN_WITHIN: Duration = Duration::from_secs(3);

/// The period the leader gives a node of `role` in a cluster of `nodes`:
/// managers (a handful, and quorum checks depend on them) always
/// [`HEARTBEAT_PERIOD`]; workers the same up to [`HEARTBEAT_BUDGET`]
/// nodes, then `nodes / HEARTBEAT_BUDGET` seconds (5 s at 10,000), at
/// most [`HEARTBEAT_PERIOD_MAX`]. Docker Swarm's workers heartbeat every
/// 5 s at any size.
pub fn heartbeat_period(role: Role, nodes: usize) -> Duration {
    if role == Role::Manager {
        return HEARTBEAT_PERIOD;
    }
    let ms = (nodes as u64).saturating_mul(1000) / HEARTBEAT_BUDGET;
    Duration::from_millis(ms).clamp(HEARTBEAT_PERIOD, HEARTBEAT_PERIOD_MAX)
}

/// How long a node of `role` in a cluster of `nodes` may be silent before
/// it is Down: [`DOWN_AFTER`] while it heartbeats every second, five of
/// its periods when the cluster is larger (25 s at 10,000 nodes).
pub fn down_after(role: Role, nodes: usize) -> Duration {
    let period = heartbeat_period(role, nodes);
    DOWN_AFTER.max(period * 5)
}

/// After an election, how long a node recorded Ready may go without a
/// heartbeat to the new leader: [`ELECTION_GRACE`], plus what its longer
/// period adds in a large cluster.
fn election_grace(role: Role, nodes: usize) -> Duration {
    ELECTION_GRACE + (down_after(role, nodes) - DOWN_AFTER)
}

/// What a manager knows of other nodes' heartbeats.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    last_seen: HashMap<NodeId, Instant>,
    /// Nodes that left: Down at the next tick, whatever their bound,
    /// until they heartbeat again.
    gone: std::collections::HashSet<NodeId>,
    /// The term in which this manager became leader, and when.
    leader_since: Option<(u64, Instant)>,
}

impl Liveness {
    /// A heartbeat from `id` at `now`.
    pub(crate) fn saw(&mut self, id: NodeId, now: Instant) {
        self.last_seen.insert(id, now);
        self.gone.remove(&id);
    }

    /// `id` is gone (it left): Down at the next tick.
    pub(crate) fn forget(&mut self, id: NodeId) {
        self.last_seen.remove(&id);
        self.gone.insert(id);
    }

    /// This manager does not lead: the next leadership starts afresh.
    pub(crate) fn not_leading(&mut self) {
        self.leader_since = None;
    }

    /// The `voters` heard from lately, plus `me`. Just after an election,
    /// when no heartbeat has arrived yet, the committed status stands in.
    pub(crate) fn reachable(
        &self,
        voters: BTreeSet<NodeId>,
        state: &ClusterState,
        me: NodeId,
        now: Instant,
    ) -> BTreeSet<NodeId> {
        let age = |at: Instant| now.saturating_duration_since(at);
        let fresh_leader = self
            .leader_since
            .is_none_or(|(_, at)| age(at) < MANAGER_SEEN_WITHIN);
        voters
            .into_iter()
            .filter(|id| {
                *id == me
                    || match self.last_seen.get(id) {
                        Some(at) => age(*at) < MANAGER_SEEN_WITHIN,
                        None => fresh_leader && state.nodes.get(id).is_some_and(|n| n.ready),
                    }
            })
            .collect()
    }

    /// The Ready/Down changes to commit as the leader (`me`) of `term` at
    /// `now`: ready while the last heartbeat is recent; not heard from
    /// since this leader took over, a node recorded Ready keeps a grace
    /// period from the election and one recorded Down stays Down until it
    /// heartbeats.
    pub(crate) fn changes(
        &mut self,
        state: &ClusterState,
        me: NodeId,
        term: u64,
        now: Instant,
    ) -> Vec<(NodeId, bool)> {
        // A new leader knows no heartbeats yet: give every node the full
        // bound from the start of its leadership.
        let since = match self.leader_since {
            Some((t, at)) if t == term => at,
            _ => {
                self.leader_since = Some((term, now));
                now
            }
        };
        let age = |at: Instant| now.saturating_duration_since(at);
        let size = state.nodes.len();
        state
            .nodes
            .values()
            .filter_map(|n| {
                let ready = n.id == me
                    || !self.gone.contains(&n.id)
                        && match self.last_seen.get(&n.id) {
                            Some(at) if *at >= since => age(*at) < down_after(n.role, size),
                            Some(_) | None => n.ready && age(since) < election_grace(n.role, size),
                        };
                (ready != n.ready).then_some((n.id, ready))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(nodes: &[(NodeId, bool)]) -> ClusterState {
        let mut s = ClusterState::default();
        for (id, ready) in nodes {
            crate::testing::add_worker(&mut s, *id, &id.to_string(), *ready);
        }
        s
    }

    /// Driven by the time passed in: no sleeping.
    #[test]
    fn a_silent_node_is_down_after_the_bound_and_ready_when_it_returns() {
        let (me, w) = (NodeId::generate(), NodeId::generate());
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let s = state(&[(me, true), (w, true)]);
        l.saw(w, t0);
        assert!(l.changes(&s, me, 1, t0).is_empty());
        assert!(
            l.changes(&s, me, 1, t0 + DOWN_AFTER - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(l.changes(&s, me, 1, t0 + DOWN_AFTER), vec![(w, false)]);
        let down = state(&[(me, true), (w, false)]);
        l.saw(w, t0 + DOWN_AFTER * 2);
        assert_eq!(
            l.changes(&down, me, 1, t0 + DOWN_AFTER * 2),
            vec![(w, true)]
        );
        // Leaving: Down at the next tick.
        l.forget(w);
        assert_eq!(l.changes(&s, me, 1, t0 + DOWN_AFTER * 2), vec![(w, false)]);
    }

    #[test]
    fn a_new_leader_gives_every_ready_node_the_election_grace() {
        let (me, w, gone) = (NodeId::generate(), NodeId::generate(), NodeId::generate());
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let s = state(&[(me, true), (w, true), (gone, false)]);
        // Never heard from: Ready stays Ready for the grace, Down stays Down.
        assert!(l.changes(&s, me, 7, t0).is_empty());
        assert!(l.changes(&s, me, 7, t0 + DOWN_AFTER).is_empty());
        assert_eq!(l.changes(&s, me, 7, t0 + ELECTION_GRACE), vec![(w, false)]);
        // A new term starts the grace again.
        l.not_leading();
        assert!(l.changes(&s, me, 8, t0 + ELECTION_GRACE).is_empty());
        assert!(ELECTION_GRACE > DOWN_AFTER);
    }

    #[test]
    fn workers_in_a_large_cluster_are_paced_and_given_longer() {
        assert_eq!(heartbeat_period(Role::Worker, 3), HEARTBEAT_PERIOD);
        assert_eq!(heartbeat_period(Role::Worker, 2_000), HEARTBEAT_PERIOD);
        assert_eq!(
            heartbeat_period(Role::Worker, 10_000),
            Duration::from_secs(5)
        );
        assert_eq!(
            heartbeat_period(Role::Worker, 1_000_000),
            HEARTBEAT_PERIOD_MAX
        );
        // Managers keep the short period: quorum checks count on it.
        assert_eq!(heartbeat_period(Role::Manager, 10_000), HEARTBEAT_PERIOD);
        assert_eq!(down_after(Role::Worker, 100), DOWN_AFTER);
        assert_eq!(down_after(Role::Worker, 10_000), Duration::from_secs(25));
        assert_eq!(down_after(Role::Manager, 10_000), DOWN_AFTER);

        // In a cluster of 10,000 a worker silent for 10 s is still Ready,
        // and Down at 25 s; a manager is Down at 5 s.
        let mut s = ClusterState::default();
        let me = NodeId::generate();
        crate::testing::add_worker(&mut s, me, "me", true);
        let (w, mgr) = (NodeId::generate(), NodeId::generate());
        crate::testing::add_worker(&mut s, w, "w", true);
        crate::testing::add_worker(&mut s, mgr, "m", true);
        if let Some(n) = s.nodes.get_mut(&mgr) {
            n.role = Role::Manager;
        }
        for i in 0..9_997 {
            crate::testing::add_worker(&mut s, NodeId::generate(), &format!("x{i}"), false);
        }
        let mut l = Liveness::default();
        let t0 = Instant::now();
        l.changes(&s, me, 1, t0);
        l.saw(w, t0);
        l.saw(mgr, t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        let flips = |l: &mut Liveness, t| -> Vec<NodeId> {
            l.changes(&s, me, 1, t)
                .into_iter()
                .filter(|(_, ready)| !ready)
                .map(|(id, _)| id)
                .filter(|id| *id == w || *id == mgr)
                .collect()
        };
        assert_eq!(flips(&mut l, at(5)), vec![mgr]);
        assert!(!flips(&mut l, at(24)).contains(&w));
        assert!(flips(&mut l, at(25)).contains(&w));
    }

    #[test]
    fn reachable_voters_are_those_heard_from_lately() {
        let (me, a, b) = (NodeId::generate(), NodeId::generate(), NodeId::generate());
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let s = state(&[(me, true), (a, true), (b, false)]);
        let voters = BTreeSet::from([me, a, b]);
        // Fresh leader, nobody heard yet: the recorded status stands in.
        assert_eq!(
            l.reachable(voters.clone(), &s, me, t0),
            BTreeSet::from([me, a])
        );
        l.leader_since = Some((1, t0));
        l.saw(b, t0);
        let later = t0 + MANAGER_SEEN_WITHIN;
        assert_eq!(
            l.reachable(voters.clone(), &s, me, t0),
            BTreeSet::from([me, a, b])
        );
        assert_eq!(l.reachable(voters, &s, me, later), BTreeSet::from([me]));
    }
}
