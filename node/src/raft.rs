//! One manager's member of the store's Raft group.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use std::path::Path;
use std::time::Duration;

use moat_lock::{DekVersion, KeySource};
use moat_pki::{NodeId, TlsContext};
use moat_store::{Applied, OpenStore, Raft, RecordCipher, StoreError, StoreIdentity};
use moat_transport::{ClusterHandler, Network, PeerPolicy, RaftHandler, RaftService};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Errors starting or running a manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// openraft refused to start (configuration or storage).
    #[error("starting raft: {0}")]
    Raft(String),
    /// A membership change would lose quorum (or remove the last manager).
    #[error(transparent)]
    Quorum(#[from] moat_store::QuorumError),
    /// The store refused an operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Raft did not reach a state in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// A socket could not be bound or read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Raft timing for managers talking mutual TLS over a LAN: heartbeats every
/// 250 ms, elections after 1.5–3 s of silence (openraft's LAN defaults are
/// tighter than a TLS reconnect), a snapshot every 5,000 entries, keeping
/// 1,000 entries after a snapshot for slow followers.
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "moat".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    }
}

/// A running manager: its Raft handle, its applied state, and the transport
/// server answering its peers.
pub struct RaftManager {
    /// This manager's id.
    pub id: NodeId,
    /// The Raft handle (writes, membership, metrics).
    pub raft: Raft,
    /// The applied cluster state, for reads.
    pub applied: Arc<RwLock<Applied>>,
    /// The address the transport listens on.
    pub addr: SocketAddr,
    identity: StoreIdentity,
    cipher: Arc<RecordCipher>,
    stop_server: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl RaftManager {
    /// Starts Raft over `store` and serves peers on `listener` with `tls`.
    ///
    /// Calls from nodes on the store's removed list are refused by the
    /// transport, whatever their certificate says.
    pub async fn start(
        id: NodeId,
        store: OpenStore,
        tls: Arc<TlsContext>,
        listener: TcpListener,
        config: openraft::Config,
    ) -> Result<Self, ManagerError> {
        Self::start_with(id, store, tls, listener, config, None).await
    }

    /// Like [`RaftManager::start`], also serving the cluster service
    /// (joins, renewals, heartbeats) with `cluster` on the same listener.
    pub async fn start_with(
        id: NodeId,
        store: OpenStore,
        tls: Arc<TlsContext>,
        listener: TcpListener,
        config: openraft::Config,
        cluster: Option<Arc<dyn ClusterHandler>>,
    ) -> Result<Self, ManagerError> {
        let addr = listener.local_addr().map_err(|source| ManagerError::Io {
            what: "reading the listener address".into(),
            source,
        })?;
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| ManagerError::Raft(e.to_string()))?,
        );
        let applied = store.sm.applied();
        let (identity, cipher) = (store.identity, store.cipher.clone());
        let raft = Raft::new(id, config, Network::new(tls.clone()), store.log, store.sm)
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        let policy: Arc<dyn PeerPolicy> = Arc::new(StorePolicy {
            applied: applied.clone(),
            raft: raft.clone(),
        });
        let handler: Arc<dyn RaftHandler> = Arc::new(raft.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let mut service = RaftService::new(tls, handler, policy);
            if let Some(cluster) = cluster {
                service = service.with_cluster(cluster);
            }
            if let Err(e) = service.serve(listener, shutdown).await {
                tracing::error!(error = %e, "raft transport server stopped");
            }
        });
        Ok(Self {
            id,
            raft,
            applied,
            addr,
            identity,
            cipher,
            stop_server: Some(stop),
            server,
        })
    }

    /// The record cipher of this manager's store (its DEKs).
    pub fn cipher(&self) -> Arc<RecordCipher> {
        self.cipher.clone()
    }

    /// The data key in use and, during a rotation, the one being rotated
    /// to; `None` for an unencrypted store.
    pub fn dek_versions(&self) -> Option<(DekVersion, Option<DekVersion>)> {
        self.cipher
            .with_deks(|d| (d.current().version(), d.pending().map(|p| p.version())))
    }

    /// Rotates this manager's store DEK (see `moat_store` rotation docs):
    /// begin (new key durable, new writes use it), wait until everything
    /// written before is applied, snapshot, purge the log up to the
    /// snapshot, then complete (old key file deleted). Resumes a rotation
    /// left unfinished by a restart. `stop_after` ends early after a step,
    /// for tests of crash recovery. Returns the DEK version in use.
    pub async fn rotate_dek(
        &self,
        store_dir: &Path,
        kek: KeySource<'_>,
        stop_after: Option<RotationStep>,
    ) -> Result<DekVersion, ManagerError> {
        let pending = moat_store::begin_dek_rotation(store_dir, &self.identity, kek, &self.cipher)?;
        self.finish_dek_rotation(pending, stop_after, || {
            moat_store::complete_dek_rotation(store_dir, &self.cipher)
        })
        .await
    }

    /// Starts a DEK rotation with `begin` (which returns the new version),
    /// then runs the rest of [`rotate_dek`](Self::rotate_dek), ending with
    /// `complete`: for callers that must hold a lock around the steps that
    /// touch key files.
    pub async fn rotate_dek_with(
        &self,
        begin: impl FnOnce(
            &Path,
            &moat_store::StoreIdentity,
            &moat_store::RecordCipher,
        ) -> Result<DekVersion, moat_store::StoreError>,
        store_dir: &Path,
        complete: impl FnOnce(&moat_store::RecordCipher) -> Result<DekVersion, moat_store::StoreError>,
    ) -> Result<DekVersion, ManagerError> {
        let pending = begin(store_dir, &self.identity, &self.cipher)?;
        self.finish_dek_rotation(pending, None, || complete(&self.cipher))
            .await
    }

    async fn finish_dek_rotation(
        &self,
        pending: DekVersion,
        stop_after: Option<RotationStep>,
        complete: impl FnOnce() -> Result<DekVersion, moat_store::StoreError>,
    ) -> Result<DekVersion, ManagerError> {
        if stop_after == Some(RotationStep::Begun) {
            return Ok(pending);
        }
        let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        self.wait_for("entries written with the old DEK to be applied", |m| {
            m.last_applied.is_some_and(|l| l.index >= last)
        })
        .await?;
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        self.wait_for("a snapshot sealed with the new DEK", |m| {
            m.snapshot.is_some_and(|s| s.index >= last)
        })
        .await?;
        if stop_after == Some(RotationStep::Snapshotted) {
            return Ok(pending);
        }
        let snapshot = self
            .raft
            .metrics()
            .borrow()
            .snapshot
            .ok_or_else(|| ManagerError::Timeout("a snapshot".into()))?;
        self.raft
            .trigger()
            .purge_log(snapshot.index)
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        self.wait_for("the log to be purged up to the snapshot", |m| {
            m.purged.is_some_and(|p| p.index >= snapshot.index)
        })
        .await?;
        if stop_after == Some(RotationStep::Purged) {
            return Ok(pending);
        }
        Ok(complete()?)
    }

    /// Adds a manager to the Raft group: first as a learner, waiting until
    /// it has caught up with the log, then as a voter. One membership
    /// change at a time, through the leader.
    pub async fn add_manager(&self, id: NodeId, addr: SocketAddr) -> Result<(), ManagerError> {
        add_voter(&self.raft, id, addr).await
    }

    /// Removes a manager from the Raft group, unless that would leave the
    /// `reachable` managers without a majority of the remaining ones (see
    /// [`moat_store::can_remove`]); the refusal says why.
    pub async fn remove_manager(
        &self,
        id: NodeId,
        reachable: &std::collections::BTreeSet<NodeId>,
    ) -> Result<(), ManagerError> {
        let voters: std::collections::BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        moat_store::can_remove(&voters, reachable, &id)?;
        self.raft
            .change_membership(
                openraft::ChangeMembers::RemoveVoters(std::collections::BTreeSet::from([id])),
                false,
            )
            .await
            .map_err(|e| ManagerError::Raft(e.to_string()))?;
        Ok(())
    }

    /// The voting managers, as this node's Raft metrics know them.
    pub fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        voters_of(&self.raft)
    }

    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool + Send,
    ) -> Result<(), ManagerError> {
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(done, what)
            .await
            .map(drop)
            .map_err(|_| ManagerError::Timeout(what.to_string()))
    }

    /// Stops Raft and the transport server; the store on disk stays as it
    /// is, ready to be opened again.
    pub async fn shutdown(mut self) {
        let _ = self.raft.shutdown().await;
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
    }

    /// Stops abruptly, as a crash would: the transport server task is
    /// aborted (its listener and connections close at once) and Raft stops
    /// without waiting for anything else. What is on disk is whatever the
    /// store had made durable.
    pub async fn kill(self) {
        self.server.abort();
        let _ = self.server.await;
        let _ = self.raft.shutdown().await;
    }
}

/// The steps of a DEK rotation, for [`RaftManager::rotate_dek`]'s
/// `stop_after` (crash-recovery tests stop after each one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// The new DEK is durable and seals new records.
    Begun,
    /// A snapshot sealed with the new DEK covers every old record.
    Snapshotted,
    /// The log holds no record sealed with the old DEK.
    Purged,
}

/// Adds `id` at `addr` to `raft`'s group: as a learner, blocking until it
/// has caught up with the log, then as a voter. Call on the leader.
pub(crate) async fn add_voter(
    raft: &Raft,
    id: NodeId,
    addr: SocketAddr,
) -> Result<(), ManagerError> {
    raft.add_learner(id, openraft::BasicNode::new(addr.to_string()), true)
        .await
        .map_err(|e| ManagerError::Raft(e.to_string()))?;
    raft.change_membership(
        openraft::ChangeMembers::AddVoterIds(std::collections::BTreeSet::from([id])),
        false,
    )
    .await
    .map_err(|e| ManagerError::Raft(e.to_string()))?;
    Ok(())
}

/// Who may talk Raft, from the applied cluster state and this manager's
/// Raft membership: nodes on the removed list may not; nodes recorded as
/// workers (demoted managers) may not ask for votes; a node that is not a
/// voter of the (possibly joint) membership may not talk Raft at all, nor
/// may a certificate a demotion revoked, unless its node is still a voter
/// holding it (a demoted leader committing its own removal). A manager
/// whose log holds no membership yet (just added, catching up) cannot
/// tell, and takes any manager certificate that is not removed: see
/// docs/security-model.md. A poisoned lock fails closed.
struct StorePolicy {
    applied: Arc<RwLock<Applied>>,
    raft: Raft,
}

impl PeerPolicy for StorePolicy {
    fn is_manager_source(&self, ip: std::net::IpAddr) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter_map(|(_, n)| n.addr.parse::<std::net::SocketAddr>().ok())
            .any(|a| a.ip().to_canonical() == ip)
    }

    fn is_removed(&self, node: &NodeId) -> bool {
        self.applied
            .read()
            .map(|a| a.state.is_removed(node))
            .unwrap_or(true)
    }

    fn may_vote(&self, node: &NodeId) -> bool {
        self.applied
            .read()
            .map(|a| {
                a.state
                    .nodes
                    .get(node)
                    .is_none_or(|n| n.role == moat_pki::Role::Manager)
            })
            .unwrap_or(false)
    }

    fn admit(&self, peer: &moat_pki::Identity) -> Result<(), String> {
        // Read in place on every Raft call: no copy of the voter set.
        let id = peer.node_id;
        let (none, voter) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            let mut voters = membership.voter_ids().peekable();
            (
                voters.peek().is_none(),
                membership.voter_ids().any(|v| v == id),
            )
        };
        if !none && !voter {
            return Err(format!(
                "node {id} is not a voter of this manager's Raft membership: its manager certificate gives it no Raft rights"
            ));
        }
        let applied = self
            .applied
            .read()
            .map_err(|_| "this manager's state is unreadable".to_string())?;
        let state = &applied.state;
        if state.is_revoked(&peer.serial) {
            let current = state
                .nodes
                .get(&id)
                .is_some_and(|n| n.cert_serial == peer.serial);
            if !(voter && current) {
                return Err(format!(
                    "the manager certificate {} of node {id} was revoked when the node was demoted",
                    peer.serial
                ));
            }
        }
        Ok(())
    }
}

/// The voting managers in `raft`'s current membership.
pub(crate) fn voters_of(raft: &Raft) -> std::collections::BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}
