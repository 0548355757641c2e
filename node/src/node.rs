//! A node that is a member of a cluster: its identity and TLS state, its
//! manager side (Raft, CA, dispatcher) when it is a manager, and the calls
//! it makes to other managers.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use moat_api::{ApiError, ErrorKind};
use moat_lock::{KeySource, UnlockKey};
use moat_pki::{
    CertExpiry, ClusterId, Credentials, NodeId, OffsetDateTime, PrivateKey, Role, RootCa,
    TlsContext,
};
use moat_store::model::{ClusterState, Command, NodeRecord, Response};
use moat_store::{Applied, OpenStore};
use moat_transport::{ClusterClient, ServerTrust};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::files::{Layout, NodeFile};
use crate::journal::Journal;
use crate::raft::{RaftManager, raft_config};
use crate::rpc::{self, Peer, RpcError, RpcErrorKind, method};

/// How often nodes heartbeat to the leader.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
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
/// Longest a membership change may take before the operator is told.
const MEMBERSHIP_CHANGE_WAIT: Duration = Duration::from_secs(10);
/// Longest a change may wait to be committed before the operator is told
/// the cluster has no quorum (fail closed, bounded: a security change and
/// its audit record commit together or the command fails).
pub(crate) const COMMIT_WAIT: Duration = Duration::from_secs(10);
/// How long a manager waits for a leader to be elected before giving up on
/// a request.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// The manager side of a node.
pub(crate) struct ManagerRt {
    pub(crate) raft: moat_store::Raft,
    pub(crate) applied: Arc<RwLock<Applied>>,
    pub(crate) inner: tokio::sync::Mutex<Option<RaftManager>>,
    liveness: Mutex<Liveness>,
    monitor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    auditor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Which refused joins are recorded one by one (see `refusals`).
    pub(crate) refusals: Mutex<crate::refusals::Refusals>,
    /// How often each node may renew (see `refusals`).
    pub(crate) renewals: Mutex<crate::refusals::Renewals>,
    /// How fast each worker may forward journal events (see `refusals`).
    pub(crate) forwards: Mutex<crate::refusals::Forwards>,
}

#[derive(Default)]
struct Liveness {
    last_seen: HashMap<NodeId, Instant>,
    /// The term in which this manager became leader, and when.
    leader_since: Option<(u64, Instant)>,
}

impl ManagerRt {
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
        let Ok(l) = self.liveness.lock() else {
            return BTreeSet::from([me]);
        };
        let fresh_leader = l
            .leader_since
            .is_none_or(|(_, at)| at.elapsed() < MANAGER_SEEN_WITHIN);
        voters
            .into_iter()
            .filter(|id| {
                *id == me
                    || match l.last_seen.get(id) {
                        Some(at) => at.elapsed() < MANAGER_SEEN_WITHIN,
                        None => fresh_leader && state.nodes.get(id).is_some_and(|n| n.ready),
                    }
            })
            .collect()
    }

    /// Marks `id` as gone now, so the liveness loop reports it Down at its
    /// next tick instead of waiting out [`DOWN_AFTER`].
    pub(crate) fn forget(&self, id: NodeId) {
        if let Ok(mut l) = self.liveness.lock()
            && let Some(long_ago) = Instant::now().checked_sub(DOWN_AFTER)
        {
            l.last_seen.insert(id, long_ago);
        }
    }

    fn saw(&self, id: NodeId) {
        if let Ok(mut l) = self.liveness.lock() {
            l.last_seen.insert(id, Instant::now());
        }
    }

    pub(crate) async fn shutdown(&self) {
        for task in [&self.monitor, &self.auditor] {
            if let Some(task) = task.lock().ok().and_then(|mut m| m.take()) {
                task.abort();
            }
        }
        if let Some(raft) = self.inner.lock().await.take() {
            raft.shutdown().await;
        }
    }
}

/// A cluster member.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) cluster: ClusterId,
    pub(crate) layout: Layout,
    pub(crate) tls: Arc<TlsContext>,
    /// The key this node's key files are sealed under (see `keys`).
    pub(crate) kek: ArcSwap<UnlockKey>,
    /// Held while key files are written (TLS key, data keys, rekeys), so
    /// a rekey never races a renewal or a DEK rotation.
    pub(crate) keys: Mutex<()>,
    /// The local security journal.
    pub(crate) journal: Arc<Journal>,
    pub(crate) file: Mutex<NodeFile>,
    pub(crate) manager: ArcSwapOption<ManagerRt>,
    /// Why this node cannot take part (removed, certificate expired).
    pub(crate) fault: Mutex<Option<ApiError>>,
    clients: Mutex<HashMap<String, ClusterClient>>,
    /// The manager heartbeats go to.
    pub(crate) preferred: Mutex<Option<String>>,
    /// Renew at the next agent round (a certificate the cluster has not
    /// recorded, e.g. self-issued after an outage).
    pub(crate) renew_soon: std::sync::atomic::AtomicBool,
}

impl Node {
    pub(crate) fn new(
        file: NodeFile,
        layout: Layout,
        tls: Arc<TlsContext>,
        kek: UnlockKey,
        journal: Arc<Journal>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: file.node_id,
            cluster: file.cluster_id,
            layout,
            tls,
            kek: ArcSwap::from_pointee(kek),
            keys: Mutex::new(()),
            journal,
            file: Mutex::new(file),
            manager: ArcSwapOption::empty(),
            fault: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
            preferred: Mutex::new(None),
            renew_soon: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The role in this node's certificate.
    pub(crate) fn role(&self) -> Option<Role> {
        self.tls.identity().map(|i| i.role)
    }

    pub(crate) fn node_file(&self) -> NodeFile {
        self.file
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn update_node_file(&self, f: impl FnOnce(&mut NodeFile)) -> Result<(), ApiError> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = guard.clone();
        f(&mut next);
        if next != *guard {
            next.save(&self.layout)?;
            *guard = next;
        }
        Ok(())
    }

    /// Records a local security event (see `journal`); a failure to
    /// record is logged.
    pub(crate) fn journal(&self, action: &str, outcome: &str, reason: &str) {
        if let Err(e) =
            self.journal
                .record(&self.id.to_string(), "this node", action, outcome, reason)
        {
            tracing::error!(error = %e, action, "could not write the local security journal");
        }
    }

    pub(crate) fn fault(&self) -> Option<ApiError> {
        self.fault.lock().ok().and_then(|f| f.clone())
    }

    pub(crate) fn clear_fault(&self) {
        if let Ok(mut f) = self.fault.lock() {
            *f = None;
        }
    }

    pub(crate) fn set_fault(&self, e: ApiError) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(e);
        }
    }

    /// Trusts `roots_pem` (the cluster's roots, as the leader says), if it
    /// is not what this node trusts already; saves it with the node's keys.
    pub(crate) fn follow_trust(&self, roots_pem: &str) -> Result<bool, ApiError> {
        if roots_pem.is_empty() || self.tls.roots().to_pem() == roots_pem {
            return Ok(false);
        }
        let roots = moat_pki::TrustRoots::from_pem(roots_pem.as_bytes()).map_err(|e| {
            ApiError::new(
                ErrorKind::Internal,
                format!("the leader sent roots this node cannot use: {e}"),
            )
        })?;
        if roots.cluster_id().ok() != Some(self.cluster) {
            return Err(ApiError::new(
                ErrorKind::Internal,
                "the leader sent roots of another cluster",
            ));
        }
        let (chain, key) = self.tls.signing_identity().ok_or_else(|| {
            ApiError::new(ErrorKind::Internal, "this node has no certificate yet")
        })?;
        let chain_pem: String = chain.iter().map(|c| der_to_pem(c)).collect();
        let _keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        crate::files::save_tls(
            &self.layout,
            &self.kek.load(),
            &self.cluster,
            &self.id,
            &chain_pem,
            &key,
            &roots,
        )?;
        self.tls.set_roots(roots);
        Ok(true)
    }

    /// Installs a new chain and key after checking them, saves them, and
    /// drops cached connections so the next calls present the new
    /// certificate.
    pub(crate) fn install_credentials(
        &self,
        chain_pem: &str,
        key: PrivateKey,
    ) -> Result<moat_pki::Identity, ApiError> {
        let chain = crate::files::chain_from_pem(chain_pem)?;
        let key_copy = PrivateKey::from_pkcs8_der(&key.to_pkcs8_der())
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        let identity = self
            .tls
            .set_credentials(Credentials { chain, key }, OffsetDateTime::now_utc())
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Internal,
                    format!("the manager sent a certificate this node cannot use: {e}"),
                )
            })?;
        let _keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        crate::files::save_tls(
            &self.layout,
            &self.kek.load(),
            &self.cluster,
            &self.id,
            chain_pem,
            &key_copy,
            &self.tls.roots(),
        )?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.clear();
        }
        Ok(identity)
    }

    // ---------------------------------------------------------------------
    // Calls to other managers

    async fn client(&self, addr: &str) -> Result<ClusterClient, RpcError> {
        if let Some(c) = self.clients.lock().ok().and_then(|c| c.get(addr).cloned()) {
            return Ok(c);
        }
        let client = ClusterClient::connect(
            addr,
            ServerTrust::Verified(self.tls.clone()),
            rpc::CONNECT_TIMEOUT,
        )
        .await
        .map_err(|e| {
            RpcError::new(
                RpcErrorKind::Unavailable,
                format!("cannot reach the manager at {addr}: {e}"),
            )
        })?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(addr.to_string(), client.clone());
        }
        Ok(client)
    }

    /// Calls `method` on the manager at `addr`; a connection that failed is
    /// dropped from the cache.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let client = self.client(addr).await?;
        let result = rpc::call(&client, method, req, timeout).await;
        if matches!(&result, Err(e) if e.kind == RpcErrorKind::Unavailable)
            && let Ok(mut clients) = self.clients.lock()
        {
            clients.remove(addr);
        }
        result
    }

    /// Calls `method` on the leader, following "not leader" answers and
    /// waiting out an election (up to [`LEADER_WAIT`]).
    pub(crate) async fn call_leader<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut hint: Option<Peer> = None;
        let mut rotation = 0usize;
        let mut answered = false;
        loop {
            let target = match hint.take() {
                Some(peer) => peer.addr,
                None => match self.manager.load_full().and_then(|m| m.leader()) {
                    Some(leader) => leader.addr,
                    None => {
                        let managers = self.node_file().managers;
                        if managers.is_empty() {
                            return Err(RpcError::new(
                                RpcErrorKind::Unavailable,
                                "this node knows no manager",
                            ));
                        }
                        rotation += 1;
                        managers[rotation % managers.len()].addr.clone()
                    }
                },
            };
            let last = match self.call(&target, method, req, timeout).await {
                Err(e) if e.kind == RpcErrorKind::NotLeader => {
                    answered = true;
                    hint = e.leader.clone();
                    e
                }
                // The leader answered that it has no majority: that is the
                // answer, not a reason to look elsewhere.
                Err(e)
                    if e.kind == RpcErrorKind::Unavailable
                        && e.message.starts_with("no quorum") =>
                {
                    return Err(e);
                }
                Err(e) if e.kind == RpcErrorKind::Unavailable => e,
                other => return other,
            };
            if Instant::now() >= deadline {
                if !answered && self.manager.load().is_some() {
                    // A manager that reaches neither the leader nor any
                    // manager that could name one is on the losing side of
                    // a partition (or alone): no majority to commit with.
                    return Err(RpcError::new(
                        RpcErrorKind::Unavailable,
                        format!(
                            "no quorum: this manager reaches neither the leader nor another manager ({})",
                            last.message
                        ),
                    )
                    .hint("bring the other managers back or restore the network between them (`moat node ls` on another manager shows which are down); if a majority is lost for good, see docs/runbooks/recover-a-lost-quorum.md"));
                }
                if !answered {
                    return Err(RpcError::new(
                        RpcErrorKind::Unavailable,
                        format!("no manager could be reached ({})", last.message),
                    )
                    .hint("check that the managers are running and that their cluster port is reachable from this node"));
                }
                return Err(no_leader(last));
            }
            tokio::time::sleep(Duration::from_millis(if hint.is_some() { 20 } else { 250 })).await;
        }
    }

    // ---------------------------------------------------------------------
    // Manager operations (run on any manager; forwarded to the leader)

    pub(crate) fn require_manager(&self) -> Result<Arc<ManagerRt>, ApiError> {
        if let Some(fault) = self.fault() {
            return Err(fault);
        }
        self.manager.load_full().ok_or_else(not_a_manager)
    }

    /// Commits `command`, through the leader.
    pub(crate) async fn propose(&self, command: Command) -> Result<(), RpcError> {
        let m = self
            .manager
            .load_full()
            .ok_or_else(|| RpcError::from(not_a_manager()))?;
        if m.is_leader(self.id) {
            let write = tokio::time::timeout(COMMIT_WAIT, m.raft.client_write(command.clone()));
            let Ok(written) = write.await else {
                return Err(RpcError::new(
                    RpcErrorKind::Unavailable,
                    format!(
                        "no quorum: the change was not committed within {} s, so a majority of managers is not reachable (it may still be committed, with its audit record, if they come back)",
                        COMMIT_WAIT.as_secs()
                    ),
                )
                .hint("bring the missing managers back (`moat node ls` shows which are down), then check with `moat audit tail`; if a majority is lost for good, see docs/runbooks/recover-a-lost-quorum.md"));
            };
            match written {
                Ok(resp) => return applied(resp.data),
                Err(e) => {
                    if e.forward_to_leader().is_none() {
                        return Err(RpcError::new(
                            RpcErrorKind::Unavailable,
                            format!("the cluster could not commit the change: {e}"),
                        )
                        .hint("check that a majority of managers is up (`moat node ls`)"));
                    }
                }
            }
        }
        // Forwarded to the leader, and sent again after a timeout while a
        // leader is looked for: the `Once` id makes a repeat of a proposal
        // that did reach the log answer instead of applying twice.
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let req = rpc::ProposeReq {
            command: Command::Once {
                id: u128::from_le_bytes(id),
                command: Box::new(command),
            },
        };
        let answer: Result<rpc::Nothing, RpcError> = self
            .call_leader(method::PROPOSE, &req, rpc::CALL_TIMEOUT)
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(e) if e.kind == RpcErrorKind::Unavailable && !e.message.contains("quorum") => {
                Err(RpcError::new(
                    RpcErrorKind::Unavailable,
                    format!(
                        "no quorum: the leader did not confirm the change ({}); it may still be committed, with its audit record",
                        e.message
                    ),
                )
                .hint("check that the leader and a majority of managers are up (`moat node ls`), then check with `moat audit tail`"))
            }
            Err(e) => Err(e),
        }
    }

    /// The cluster state, linearizable: confirmed with the leader, and
    /// applied here up to the leader's commit point.
    pub(crate) async fn read_state(&self) -> Result<ClusterState, RpcError> {
        let m = self
            .manager
            .load_full()
            .ok_or_else(|| RpcError::from(not_a_manager()))?;
        let index = if m.is_leader(self.id) {
            read_index(&m).await?
        } else {
            let r: rpc::ReadIndex = self
                .call_leader(method::READ_INDEX, &rpc::Nothing {}, rpc::CALL_TIMEOUT)
                .await?;
            r.index
        };
        m.raft
            .wait(Some(rpc::CALL_TIMEOUT))
            .applied_index_at_least(Some(index), "the leader's commit point")
            .await
            .map_err(|e| {
                RpcError::new(
                    RpcErrorKind::Unavailable,
                    format!("this manager is behind the leader: {e}"),
                )
            })?;
        m.local_state()
    }

    /// Runs a membership operation on the leader.
    pub(crate) async fn admin(
        &self,
        req: rpc::AdminReq,
        actor: moat_audit::Actor,
    ) -> Result<(), RpcError> {
        let m = self
            .manager
            .load_full()
            .ok_or_else(|| RpcError::from(not_a_manager()))?;
        let req = rpc::Admin {
            req,
            by: rpc::RequestedBy {
                node: self.id,
                actor: actor.to_string(),
            },
        };
        if m.is_leader(self.id) {
            return self.run_admin(&m, req).await;
        }
        let _: rpc::Nothing = self
            .call_leader(method::ADMIN, &req, rpc::SLOW_CALL_TIMEOUT)
            .await?;
        Ok(())
    }

    pub(crate) async fn run_admin(&self, m: &ManagerRt, admin: rpc::Admin) -> Result<(), RpcError> {
        let by = admin.by;
        match admin.req {
            rpc::AdminReq::Demote { id } => self.demote_on_leader(m, id, true, &by).await,
            rpc::AdminReq::Remove { id, force } => {
                let state = m.local_state()?;
                let record = state.nodes.get(&id).cloned().ok_or_else(|| {
                    RpcError::new(RpcErrorKind::NotFound, format!("No such node: {id}"))
                })?;
                if record.role == Role::Manager {
                    if !force {
                        return Err(RpcError::new(
                            RpcErrorKind::FailedPrecondition,
                            format!("node {id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"),
                        )
                        .hint(format!("run `moat node demote {id}` first, or use --force")));
                    }
                    self.demote_on_leader(m, id, true, &by).await?;
                } else if record.ready && !force {
                    return Err(RpcError::new(
                        RpcErrorKind::FailedPrecondition,
                        format!("node {id} is not down and can't be removed"),
                    )
                    .hint("stop it first (`moat leave` on the node), or use --force"));
                }
                // Remembered until every certificate the node may hold has
                // expired: its recorded one, and any issued up to now (no
                // certificate lives longer than the policy says).
                let lifetime = i64::try_from(state.policy.cert_expiry_secs).unwrap_or(i64::MAX);
                let until = record.cert_not_after.max(
                    OffsetDateTime::now_utc()
                        .unix_timestamp()
                        .saturating_add(lifetime),
                );
                self.propose_audited(
                    Command::RemoveNode { id, until },
                    self.ev(
                        by.actor(),
                        moat_audit::Action::NODE_REMOVE,
                        format!("node:{id}"),
                    )
                    .detail("hostname", &record.hostname)
                    .detail("role", record.role.as_str())
                    .detail("forced", force)
                    .detail("requested_on", by.node),
                )
                .await
            }
            rpc::AdminReq::Leave { id, force } => {
                let state = m.local_state()?;
                if m.voters().contains(&id) {
                    self.demote_on_leader(m, id, !force, &by).await?;
                } else if !state.nodes.contains_key(&id) {
                    return Ok(());
                }
                m.forget(id);
                self.propose_audited(
                    Command::SetNodeStatus { id, ready: false },
                    self.ev(
                        by.actor(),
                        moat_audit::Action::NODE_LEAVE,
                        format!("node:{id}"),
                    )
                    .detail("forced", force)
                    .detail("requested_on", by.node),
                )
                .await
            }
        }
    }

    /// Makes `id` a worker: checks (if `check`) that the managers left
    /// keep quorum, records the worker role (so the node cannot be re-added
    /// as a voter), then takes it out of the Raft voters. If that last step
    /// fails, the leader's reconciliation finishes it.
    async fn demote_on_leader(
        &self,
        m: &ManagerRt,
        id: NodeId,
        check: bool,
        by: &rpc::RequestedBy,
    ) -> Result<(), RpcError> {
        let state = m.local_state()?;
        let record = state
            .nodes
            .get(&id)
            .ok_or_else(|| RpcError::new(RpcErrorKind::NotFound, format!("No such node: {id}")))?;
        let voters = m.voters();
        if voters.contains(&id) {
            if check {
                let reachable = m.reachable_voters(&state, self.id);
                moat_store::can_remove(&voters, &reachable, &id).map_err(|e| {
                    RpcError::new(RpcErrorKind::FailedPrecondition, e.to_string()).hint(
                        "without a Raft quorum the cluster is inaccessible; bring the unreachable managers back first",
                    )
                })?;
            } else if voters.len() == 1 {
                return Err(RpcError::new(
                    RpcErrorKind::FailedPrecondition,
                    "this is the last manager of the cluster",
                ));
            }
        }
        if record.role == Role::Manager {
            self.propose_audited(
                Command::SetRole {
                    id,
                    role: Role::Worker,
                },
                self.ev(
                    by.actor(),
                    moat_audit::Action::NODE_DEMOTE,
                    format!("node:{id}"),
                )
                .detail("requested_on", by.node),
            )
            .await?;
        }
        if voters.contains(&id) {
            remove_voter(m, id).await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------
    // Becoming and stopping being a manager

    /// Opens (or creates) the store and starts Raft and the cluster
    /// listener on `listen`; returns the bound address.
    pub(crate) async fn start_manager(
        self: &Arc<Self>,
        listen: &str,
    ) -> Result<SocketAddr, ApiError> {
        let store_dir = self.layout.store_dir();
        let kek = self.kek.load_full();
        let kek = KeySource::Key(&kek);
        let store = if store_dir.join("store.json").exists() {
            OpenStore::open(&store_dir, kek)
        } else {
            OpenStore::create(&store_dir, kek, self.cluster, self.id)
        }
        .map_err(|e| {
            ApiError::new(ErrorKind::Internal, format!("opening the store: {e}"))
                .hint("run `moat store verify --state-dir DIR` on the stopped node to find the damage; restore from a backup if it is damaged")
        })?;
        let listener = TcpListener::bind(listen).await.map_err(|e| {
            ApiError::new(
                ErrorKind::FailedPrecondition,
                format!("cannot listen on {listen}: {e}"),
            )
            .hint("pick a free address with --listen-addr")
        })?;
        let service = Arc::new(crate::service::Service(Arc::downgrade(self)));
        let raft = RaftManager::start_with(
            self.id,
            store,
            self.tls.clone(),
            listener,
            raft_config(),
            Some(service),
        )
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        let addr = raft.addr;
        let rt = Arc::new(ManagerRt {
            raft: raft.raft.clone(),
            applied: raft.applied.clone(),
            inner: tokio::sync::Mutex::new(Some(raft)),
            liveness: Mutex::new(Liveness::default()),
            monitor: Mutex::new(None),
            auditor: Mutex::new(None),
            refusals: Mutex::new(crate::refusals::Refusals::new(Instant::now())),
            renewals: Mutex::new(crate::refusals::Renewals::default()),
            forwards: Mutex::new(crate::refusals::Forwards::default()),
        });
        let monitor = tokio::spawn(liveness_monitor(Arc::downgrade(self), Arc::downgrade(&rt)));
        let auditor = tokio::spawn(crate::audit::audit_loop(
            Arc::downgrade(self),
            Arc::downgrade(&rt),
        ));
        if let Ok(mut a) = rt.auditor.lock() {
            *a = Some(auditor);
        }
        if let Ok(mut m) = rt.monitor.lock() {
            *m = Some(monitor);
        }
        self.manager.store(Some(rt));
        Ok(addr)
    }

    /// Stops Raft and the listener.
    pub(crate) async fn stop_manager(&self) {
        if let Some(m) = self.manager.swap(None) {
            m.shutdown().await;
        }
    }

    /// Asks the leader to make this manager a voter, and waits until this
    /// node's Raft sees itself in the membership.
    pub(crate) async fn become_voter(&self, advertise: &str) -> Result<(), ApiError> {
        let req = rpc::AddVoterReq {
            addr: advertise.to_string(),
        };
        let _: rpc::Nothing = self
            .call_leader(method::ADD_VOTER, &req, rpc::SLOW_CALL_TIMEOUT)
            .await
            .map_err(RpcError::into_api)?;
        Ok(())
    }

    // ---------------------------------------------------------------------
    // The CA

    /// Issues a certificate for `csr_pem` to `node` in `role`, under the
    /// cluster's policy, from the root that issues now (the new one during
    /// a root rotation). Returns the certificate, its chain in PEM (with
    /// the cross-signed new root during a rotation) and the issuing root's
    /// fingerprint.
    pub(crate) fn issue(
        state: &ClusterState,
        csr_pem: &str,
        node: NodeId,
        role: Role,
    ) -> Result<(moat_pki::IssuedCert, String, String), RpcError> {
        let (ca, intermediate) = state.issuing_ca().ok_or_else(|| {
            RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
        })?;
        let root = root_ca(ca)?;
        let csr = moat_pki::VerifiedCsr::from_pem(csr_pem.as_bytes()).map_err(|e| {
            RpcError::new(RpcErrorKind::Invalid, format!("certificate request: {e}"))
        })?;
        let expiry = CertExpiry::new(Duration::from_secs(state.policy.cert_expiry_secs))
            .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
        let issued = root
            .issue(&csr, node, role, expiry, OffsetDateTime::now_utc())
            .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
        let mut chain_pem = der_to_pem(&issued.der);
        if let Some(cross) = intermediate {
            chain_pem.push_str(cross);
        }
        let issuer = fingerprint(root.certificate());
        Ok((issued, chain_pem, issuer))
    }

    /// The managers, for nodes' failover lists: every Raft member with its
    /// address.
    pub(crate) fn manager_peers(&self) -> Vec<Peer> {
        let mut peers = self
            .manager
            .load_full()
            .map(|m| m.members())
            .unwrap_or_default();
        peers.sort();
        peers
    }

    pub(crate) fn record_heartbeat(&self, m: &ManagerRt, from: NodeId) {
        m.saw(from);
    }
}

/// Replaces the standing join token for `role` (pinning the current root
/// bundle) and commits it.
pub(crate) async fn rotate_standing_token(
    node: &Node,
    role: Role,
    actor: moat_audit::Actor,
) -> Result<(), RpcError> {
    // Tokens pin the CA's root (not this node's trust, which holds two
    // roots during a rotation).
    let bundle = node
        .read_state()
        .await?
        .ca
        .map(|c| c.root_cert_pem)
        .ok_or_else(|| {
            RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
        })?;
    let token = moat_tokens::JoinToken::generate(bundle.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let fingerprint = token.fingerprint();
    let ev = node
        .ev(
            actor,
            moat_audit::Action::TOKEN_ROTATE,
            format!("token:{}", role.as_str()),
        )
        .detail("role", role.as_str())
        .detail("new_token", fingerprint.to_string());
    node.propose_audited(
        Command::RotateJoinToken {
            role,
            token,
            issued_at: OffsetDateTime::now_utc().unix_timestamp(),
        },
        ev,
    )
    .await?;
    tracing::info!(role = role.as_str(), token = %fingerprint, "join token rotated");
    Ok(())
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

pub(crate) async fn read_index(m: &ManagerRt) -> Result<u64, RpcError> {
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

fn applied(resp: Response) -> Result<(), RpcError> {
    match resp {
        Response::Applied => Ok(()),
        Response::Rejected(why) => Err(RpcError::new(RpcErrorKind::FailedPrecondition, why)),
    }
}

fn no_leader(last: RpcError) -> RpcError {
    RpcError::new(
        RpcErrorKind::Unavailable,
        format!(
            "no quorum: the cluster has no leader, and a majority of managers must be reachable to make changes ({})",
            last.message
        ),
    )
    .hint("bring the missing managers back; if a majority is lost for good, see docs/runbooks/recover-a-lost-quorum.md (`moat init --force-new-cluster` on a survivor)")
}

pub(crate) fn not_a_manager() -> ApiError {
    ApiError::new(
        ErrorKind::FailedPrecondition,
        "This node is not a cluster manager. Worker nodes can't be used to view or modify cluster state.",
    )
    .hint("run this command on a manager node, or promote the current node to a manager")
}

pub(crate) fn root_ca(ca: &moat_store::model::CaMaterial) -> Result<RootCa, RpcError> {
    use moat_pki::pem::PemObject;
    let internal =
        |what: &str, e: String| RpcError::new(RpcErrorKind::Internal, format!("{what}: {e}"));
    let cert = moat_pki::CertificateDer::from_pem_slice(ca.root_cert_pem.as_bytes())
        .map_err(|e| internal("root certificate", format!("{e:?}")))?;
    let der = zeroize::Zeroizing::new(
        data_encoding::BASE64
            .decode(ca.root_key_pkcs8.expose_secret().as_bytes())
            .map_err(|e| internal("root key", e.to_string()))?,
    );
    let key = PrivateKey::from_pkcs8_der(&der).map_err(|e| internal("root key", e.to_string()))?;
    RootCa::from_parts(cert, key).map_err(|e| internal("root CA", e.to_string()))
}

pub(crate) fn der_to_pem(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// PEM armor of `der` under `label`.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// `sha256:<hex>` of a DER certificate.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!("sha256:{}", data_encoding::HEXLOWER.encode(digest.as_ref()))
}

/// The leader's housekeeping: voters the store says are workers leave the
/// Raft group (a demotion that was interrupted), and removed-list entries
/// whose certificates have expired are dropped.
async fn reconcile(node: &Node, m: &ManagerRt) {
    let Ok(state) = m.local_state() else {
        return;
    };
    for id in m.voters() {
        // Only a voter the store records as a worker: a voter with no
        // record may be a manager this (catching-up) leader has not seen.
        let demoted = state
            .nodes
            .get(&id)
            .is_some_and(|n| n.role != Role::Manager);
        if id != node.id && demoted {
            let reachable = m.reachable_voters(&state, node.id);
            if moat_store::can_remove(&m.voters(), &reachable, &id).is_ok() {
                match remove_voter(m, id).await {
                    Ok(()) => {
                        tracing::info!(node = %id, "finished removing a demoted manager from the raft group")
                    }
                    Err(e) => tracing::debug!(node = %id, error = %e, "removing a demoted manager"),
                }
            }
        }
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // Standing tokens past the policy's lifetime are replaced.
    if let (Some(ttl), Some(tokens)) = (state.policy.token_ttl_secs, &state.join_tokens) {
        let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
        for role in [Role::Worker, Role::Manager] {
            let (_, issued_at) = tokens.standing(role);
            if issued_at.saturating_add(ttl) <= now
                && let Err(e) =
                    rotate_standing_token(node, role, moat_audit::Actor::node(node.id)).await
            {
                tracing::debug!(error = %e, "rotating an expired standing join token");
            }
        }
    }
    if state.removed.values().any(|until| *until <= now) {
        let _ = node.propose(Command::PruneRemoved { now }).await;
    }
}

/// Takes `id` out of the Raft voters, waiting at most
/// [`MEMBERSHIP_CHANGE_WAIT`].
async fn remove_voter(m: &ManagerRt, id: NodeId) -> Result<(), RpcError> {
    let change = m.raft.change_membership(
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

/// The leader's liveness loop: compares each node's last heartbeat with its
/// recorded status and commits changes. Runs on every manager, acts only
/// while it leads.
async fn liveness_monitor(node: std::sync::Weak<Node>, rt: std::sync::Weak<ManagerRt>) {
    let mut tick = tokio::time::interval(LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(node), Some(m)) = (node.upgrade(), rt.upgrade()) else {
            return;
        };
        let metrics = m.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(node.id) {
            if let Ok(mut l) = m.liveness.lock() {
                l.leader_since = None;
            }
            continue;
        }
        let term = metrics.current_term;
        let changes: Vec<(NodeId, bool)> = {
            let Ok(state) = m.applied.read().map(|a| a.state.clone()) else {
                continue;
            };
            let Ok(mut l) = m.liveness.lock() else {
                continue;
            };
            // A new leader knows no heartbeats yet: give every node the full
            // bound from the start of its leadership.
            let since = match l.leader_since {
                Some((t, at)) if t == term => at,
                _ => {
                    let now = Instant::now();
                    l.leader_since = Some((term, now));
                    now
                }
            };
            state
                .nodes
                .values()
                .filter_map(|n: &NodeRecord| {
                    // Heard from: ready while the last heartbeat is recent.
                    // Not heard from since this leader took over: a node
                    // recorded Ready keeps a grace period from the election;
                    // a node recorded Down stays Down until it heartbeats.
                    let ready = n.id == node.id
                        || match l.last_seen.get(&n.id) {
                            Some(at) if *at >= since => at.elapsed() < DOWN_AFTER,
                            Some(_) | None => n.ready && since.elapsed() < ELECTION_GRACE,
                        };
                    (ready != n.ready).then_some((n.id, ready))
                })
                .collect()
        };
        reconcile(&node, &m).await;
        for (id, ready) in changes {
            if let Err(e) = node.propose(Command::SetNodeStatus { id, ready }).await {
                tracing::debug!(node = %id, error = %e, "recording node status failed");
            } else if ready {
                tracing::info!(node = %id, "node is ready");
            } else {
                tracing::warn!(node = %id, "node is down: no heartbeat for {} s", DOWN_AFTER.as_secs());
            }
        }
    }
}
