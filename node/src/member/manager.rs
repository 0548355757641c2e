//! The manager side of a member: its Raft handle and applied state, what
//! the leader knows of other nodes' liveness, and the rate limits on what
//! callers may make it record (see `refusals`).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use moat_pki::NodeId;
use moat_store::Applied;
use moat_store::model::ClusterState;

use crate::clock::Clock;
use crate::liveness::Liveness;
use crate::raft::RaftManager;
use crate::refusals::{Denials, Forwards, Refusals, Renewals};
use crate::rpc::{Peer, RpcError, RpcErrorKind};

/// Longest a membership change may take before the operator is told.
const MEMBERSHIP_CHANGE_WAIT: Duration = Duration::from_secs(10);

/// The manager side of a member.
pub(crate) struct Manager {
    pub(crate) raft: moat_store::Raft,
    pub(crate) applied: Arc<RwLock<Applied>>,
    pub(crate) inner: tokio::sync::Mutex<Option<RaftManager>>,
    clock: Clock,
    liveness: Mutex<Liveness>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Which refused joins are recorded one by one (see `refusals`).
    pub(crate) refusals: Mutex<Refusals>,
    /// How often each node may renew (see `refusals`).
    pub(crate) renewals: Mutex<Renewals>,
    /// How fast each worker may forward journal events (see `refusals`).
    pub(crate) forwards: Mutex<Forwards>,
    /// Which refused secret requests are recorded (see `refusals`).
    pub(crate) denials: Mutex<Denials>,
    /// Requests for tasks' output waiting for their nodes (`service logs`).
    pub(crate) logs: crate::logs::LogRelay,
    /// Grows when the orchestrator's state or the leader changes: what
    /// task syncs wait on (see [`Manager::orchestration_changes`]).
    orchestration: std::sync::OnceLock<tokio::sync::watch::Receiver<u64>>,
    /// Commits the proposals waiting together in one entry (D47); made
    /// at the first proposal, stopped with the manager.
    proposer: std::sync::OnceLock<moat_store::Proposer>,
}

impl Manager {
    /// The manager side around a started Raft member.
    pub(crate) fn new(raft: RaftManager, clock: Clock) -> Self {
        let now = clock.instant();
        Self {
            raft: raft.raft.clone(),
            applied: raft.applied.clone(),
            inner: tokio::sync::Mutex::new(Some(raft)),
            clock,
            liveness: Mutex::new(Liveness::default()),
            tasks: Mutex::new(Vec::new()),
            refusals: Mutex::new(Refusals::new(now)),
            renewals: Mutex::new(Renewals::default()),
            forwards: Mutex::new(Forwards::default()),
            denials: Mutex::new(Denials::default()),
            logs: crate::logs::LogRelay::default(),
            orchestration: std::sync::OnceLock::new(),
            proposer: std::sync::OnceLock::new(),
        }
    }

    /// The proposer every write of this manager goes through (see
    /// `moat_store::Proposer`); call it on a tokio runtime.
    pub(crate) fn proposer(&self) -> &moat_store::Proposer {
        self.proposer
            .get_or_init(|| moat_store::Proposer::new(self.raft.clone()))
    }

    /// A receiver that sees a change whenever the orchestrator's applied
    /// state or the leader changes. One task compares the state after each
    /// applied entry, so that the nodes' long polls (one per node) wake
    /// only for what can change their answer, not for every entry: with
    /// 10,000 nodes and a renewal committed every few milliseconds, waking
    /// every poll on every entry was millions of wake-ups a second.
    /// Closed when Raft stops.
    pub(crate) fn orchestration_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.orchestration
            .get_or_init(|| {
                let (tx, rx) = tokio::sync::watch::channel(0u64);
                let applied = self.applied.clone();
                let mut metrics = self.raft.metrics();
                let task = tokio::spawn(async move {
                    let mut seen: Option<(Option<u64>, Option<NodeId>)> = None;
                    let mut last: Option<moat_orchestrator::State> = None;
                    loop {
                        let (index, leader) = {
                            let m = metrics.borrow_and_update();
                            (m.last_applied.map(|l| l.index), m.current_leader)
                        };
                        if seen != Some((index, leader)) {
                            let leader_changed = seen.is_none_or(|(_, l)| l != leader);
                            seen = Some((index, leader));
                            let Ok(a) = applied.read() else { return };
                            let state_changed = last.as_ref() != Some(&a.state.orchestrator);
                            if state_changed {
                                last = Some(a.state.orchestrator.clone());
                            }
                            drop(a);
                            if state_changed || leader_changed {
                                tx.send_modify(|v| *v += 1);
                            }
                        }
                        if metrics.changed().await.is_err() {
                            return;
                        }
                    }
                });
                self.keep_task(task);
                rx
            })
            .clone()
    }

    /// Keeps `task` (a housekeeping loop) to stop it with the manager.
    pub(crate) fn keep_task(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut t) = self.tasks.lock() {
            t.push(task);
        }
    }

    /// Runs `f` on the applied state under its read lock, without a copy
    /// (the reconciler and the task sync look at it several times a
    /// second; keep `f` short, the state machine waits for it).
    pub(crate) fn with_state<T>(
        &self,
        f: impl FnOnce(&ClusterState) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        match self.applied.read() {
            Ok(applied) => f(&applied.state),
            Err(_) => Err(RpcError::new(
                RpcErrorKind::Internal,
                "this manager's state is unreadable after a crash of one of its tasks; restart its daemon",
            )),
        }
    }

    /// The applied state (not linearizable: see [`Node::read_state`]).
    pub(crate) fn local_state(&self) -> Result<ClusterState, RpcError> {
        self.applied
            .read()
            .map(|a| a.state.clone())
            .map_err(|_| RpcError::new(RpcErrorKind::Internal, "state lock poisoned"))
    }

    pub(crate) fn is_leader(&self, me: NodeId) -> bool {
        self.raft.metrics().borrow().current_leader == Some(me)
    }

    /// The leader, as this manager knows it.
    pub(crate) fn leader(&self) -> Option<Peer> {
        let metrics = self.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&id)?;
        Some(Peer {
            id,
            addr: node.addr.clone(),
        })
    }

    pub(crate) fn voters(&self) -> BTreeSet<NodeId> {
        crate::raft::voters_of(&self.raft)
    }

    /// Every member (voter or learner) with its address.
    pub(crate) fn members(&self) -> Vec<Peer> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| Peer {
                id: *id,
                addr: node.addr.clone(),
            })
            .collect()
    }

    /// The voters this leader has heard from lately (managers heartbeat
    /// every second), plus itself. Just after an election, when no
    /// heartbeat has arrived yet, the committed status stands in.
    pub(crate) fn reachable_voters(&self, state: &ClusterState, me: NodeId) -> BTreeSet<NodeId> {
        let voters = self.voters();
        match self.liveness.lock() {
            Ok(l) => l.reachable(voters, state, me, self.clock.instant()),
            Err(_) => BTreeSet::from([me]),
        }
    }

    /// Marks `id` as gone now, so the liveness loop reports it Down at its
    /// next tick instead of waiting out the heartbeat bound.
    pub(crate) fn forget(&self, id: NodeId) {
        if let Ok(mut l) = self.liveness.lock() {
            l.forget(id);
        }
    }

    /// Records a heartbeat from `id`.
    pub(crate) fn saw(&self, id: NodeId) {
        if let Ok(mut l) = self.liveness.lock() {
            l.saw(id, self.clock.instant());
        }
    }

    /// This manager does not lead (any more): the next leadership starts
    /// its liveness bounds afresh.
    pub(crate) fn not_leading(&self) {
        if let Ok(mut l) = self.liveness.lock() {
            l.not_leading();
        }
    }

    /// The Ready/Down changes to commit, as the leader of `term` (`me`)
    /// sees its nodes now (see [`Liveness::changes`]).
    pub(crate) fn liveness_changes(
        &self,
        state: &ClusterState,
        me: NodeId,
        term: u64,
    ) -> Vec<(NodeId, bool)> {
        match self.liveness.lock() {
            Ok(mut l) => l.changes(state, me, term, self.clock.instant()),
            Err(_) => Vec::new(),
        }
    }

    pub(crate) async fn shutdown(&self) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            task.abort();
        }
        if let Some(raft) = self.inner.lock().await.take() {
            raft.shutdown().await;
        }
    }

    /// Takes `id` out of the Raft voters, waiting at most
    /// [`MEMBERSHIP_CHANGE_WAIT`].
    pub(crate) async fn remove_voter(&self, id: NodeId) -> Result<(), RpcError> {
        let change = self.raft.change_membership(
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            false,
        );
        match tokio::time::timeout(MEMBERSHIP_CHANGE_WAIT, change).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(RpcError::new(
                RpcErrorKind::Unavailable,
                format!("removing {id} from the raft group: {e}"),
            )),
            Err(_) => Err(RpcError::new(
                RpcErrorKind::Unavailable,
                format!(
                    "removing {id} from the raft group did not commit within {} s",
                    MEMBERSHIP_CHANGE_WAIT.as_secs()
                ),
            )
            .hint("a majority of managers must be reachable; the change completes on its own once they are")),
        }
    }
}

pub(crate) async fn read_index(m: &Manager) -> Result<u64, RpcError> {
    let log_id = m.raft.ensure_linearizable().await.map_err(|e| {
        use openraft::error::{CheckIsLeaderError, RaftError};
        let message = match &e {
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
                let voters = m.voters().len();
                format!(
                    "no quorum: the leader reaches {} of {voters} managers and a majority ({}) is needed to make or confirm any change",
                    q.got.len(),
                    voters / 2 + 1
                )
            }
            other => format!("no quorum: the leader cannot confirm it still leads a majority ({other})"),
        };
        RpcError::new(RpcErrorKind::Unavailable, message).hint(
            "bring the missing managers back (`moat node ls` on another manager shows which are down); if a majority is lost for good, see docs/runbooks/recover-a-lost-quorum.md (`moat init --force-new-cluster` on a survivor)",
        )
    })?;
    Ok(log_id.map(|l| l.index).unwrap_or(0))
}

/// The warning for an even number of managers, which tolerates no more
/// failures than one manager fewer.
pub(crate) fn even_managers_warning(managers: usize) -> Option<String> {
    (managers > 0 && managers.is_multiple_of(2)).then(|| {
        format!(
            "the cluster now has {managers} managers. An even number tolerates no more failures than one manager fewer ({managers} managers tolerate {} failure(s), as do {}); keep an odd number of managers",
            (managers - 1) / 2,
            managers - 1
        )
    })
}
