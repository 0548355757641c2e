//! A cluster member: who this node is in its cluster, its live TLS state,
//! its state file and its fault, and — in the submodules — what a member
//! does with them:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Member`]: identity, TLS credentials and trust, `node.json`, the fault |
//! | `manager.rs` | [`Manager`]: the manager side (Raft handle, liveness, rate limits) |
//! | `calls.rs` | calls to other managers: the connection cache, finding the leader |
//! | `propose.rs` | changes through the leader: proposals, linearizable reads, membership |
//! | `audit.rs` | audit records: events, forwarding the journal, exports and proofs |
//! | `keys.rs` | following the cluster's autolock setting; data-key rotation |
//! | `certs.rs` | certificate renewal |
//!
//! It never binds a socket or starts a loop of its own: the daemon, the
//! agent and the housekeeping loops (`housekeeping`) drive it.

mod audit;
mod calls;
mod certs;
mod keys;
mod manager;
mod propose;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use moat_api::ErrorKind;
use moat_lock::UnlockKey;
use moat_pki::{ClusterId, Credentials, NodeId, PrivateKey, Role, TlsContext};
use moat_transport::ClusterClient;

pub(crate) use audit::EventDraft;
pub(crate) use audit::{
    FORWARD_BATCH, audit_hash, audit_key, data_key_created, new_audit_key, operator,
};
pub(crate) use manager::{Manager, even_managers_warning, read_index};

use crate::clock::Clock;
use crate::error::NodeError;
use crate::files::{Layout, NodeFile};
use crate::journal::{Journal, JournalEvent};
use crate::keyring::Keyring;
use crate::rpc::Peer;

/// A cluster member. Its identity (`id`, `cluster`), state directory,
/// TLS context, journal and clock are set once; everything that changes
/// is private to this module and its submodules.
pub(crate) struct Member {
    pub(crate) id: NodeId,
    pub(crate) cluster: ClusterId,
    pub(crate) layout: Layout,
    pub(crate) tls: Arc<TlsContext>,
    /// The local security journal.
    pub(crate) journal: Arc<Journal>,
    pub(crate) clock: Clock,
    /// The key this node's key files are sealed under, and the lock held
    /// while they are written.
    keyring: Keyring,
    file: Mutex<NodeFile>,
    manager: ArcSwapOption<Manager>,
    /// Why this node cannot take part (removed, certificate expired).
    fault: Mutex<Option<NodeError>>,
    clients: Mutex<HashMap<String, ClusterClient>>,
    /// The manager heartbeats go to.
    preferred: Mutex<Option<String>>,
    /// The heartbeat period the leader last set, in milliseconds (it
    /// grows with the cluster: `liveness::heartbeat_period`).
    pace_ms: AtomicU64,
    /// Renew at the next agent round (a certificate the cluster has not
    /// recorded, e.g. self-issued after an outage).
    renew_soon: AtomicBool,
    /// Certificate renewals that failed since the daemon started (the
    /// metric `moat_cert_renewal_failures_total`).
    pub(crate) renewal_failures: AtomicU64,
    /// This node's task executor, once the task loop opened it.
    executor: ArcSwapOption<moat_executor::Executor>,
    /// Where the agent reports round trips (an in-process node of a load
    /// generator); unset in a daemon.
    probe: std::sync::OnceLock<Arc<crate::probe::AgentProbe>>,
    /// The local address calls to managers leave from (an in-process node
    /// of a load generator); unset in a daemon: the system's choice.
    pub(crate) source: std::sync::OnceLock<std::net::IpAddr>,
}

impl Member {
    pub(crate) fn new(
        file: NodeFile,
        layout: Layout,
        tls: Arc<TlsContext>,
        kek: UnlockKey,
        journal: Arc<Journal>,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: file.node_id,
            cluster: file.cluster_id,
            keyring: Keyring::new(layout.clone(), file.cluster_id, file.node_id, kek),
            layout,
            tls,
            journal,
            clock,
            file: Mutex::new(file),
            manager: ArcSwapOption::empty(),
            fault: Mutex::new(None),
            clients: Mutex::new(HashMap::new()),
            preferred: Mutex::new(None),
            pace_ms: AtomicU64::new(
                u64::try_from(crate::liveness::HEARTBEAT_PERIOD.as_millis()).unwrap_or(1_000),
            ),
            renew_soon: AtomicBool::new(false),
            renewal_failures: AtomicU64::new(0),
            executor: ArcSwapOption::empty(),
            probe: std::sync::OnceLock::new(),
            source: std::sync::OnceLock::new(),
        })
    }

    /// The heartbeat period the leader last set: how far apart this
    /// cluster's nodes spread what they all do at once (reconnect after a
    /// leader change).
    pub(crate) fn pace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.pace_ms.load(Ordering::Relaxed))
    }

    /// Records the heartbeat period the leader set.
    pub(crate) fn set_pace(&self, pace: std::time::Duration) {
        let ms = u64::try_from(pace.as_millis()).unwrap_or(u64::MAX);
        self.pace_ms.store(ms, Ordering::Relaxed);
    }

    /// Attaches the probe the agent reports round trips to (once).
    pub(crate) fn set_probe(&self, probe: Arc<crate::probe::AgentProbe>) {
        let _ = self.probe.set(probe);
    }

    /// The probe attached, if any.
    pub(crate) fn probe(&self) -> Option<&crate::probe::AgentProbe> {
        self.probe.get().map(|p| &**p)
    }

    /// This node's task executor, once open.
    pub(crate) fn executor(&self) -> Option<Arc<moat_executor::Executor>> {
        self.executor.load_full()
    }

    /// Records the executor the task loop opened.
    pub(crate) fn set_executor(&self, exec: Arc<moat_executor::Executor>) {
        self.executor.store(Some(exec));
    }

    /// The role in this node's certificate.
    pub(crate) fn role(&self) -> Option<Role> {
        self.tls.identity().map(|i| i.role)
    }

    /// The manager side, while this member is a manager.
    pub(crate) fn manager(&self) -> Option<Arc<Manager>> {
        self.manager.load_full()
    }

    /// Whether this member runs the manager side now.
    pub(crate) fn is_manager(&self) -> bool {
        self.manager.load().is_some()
    }

    /// The key files' sealing key and lock.
    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Asks the agent to renew at its next round.
    pub(crate) fn renew_soon(&self) {
        self.renew_soon.store(true, Ordering::SeqCst);
    }

    /// Whether a renewal was asked for since the last call (and clears it).
    pub(crate) fn take_renew_soon(&self) -> bool {
        self.renew_soon.swap(false, Ordering::SeqCst)
    }

    /// The manager heartbeats went to last.
    pub(crate) fn preferred(&self) -> Option<String> {
        self.preferred.lock().ok().and_then(|p| p.clone())
    }

    pub(crate) fn set_preferred(&self, addr: String) {
        if let Ok(mut p) = self.preferred.lock() {
            *p = Some(addr);
        }
    }

    pub(crate) fn node_file(&self) -> NodeFile {
        self.file
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn update_node_file(&self, f: impl FnOnce(&mut NodeFile)) -> Result<(), NodeError> {
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
    pub(crate) fn journal(&self, event: JournalEvent) {
        self.journal.record_or_log(&self.id.to_string(), event);
    }

    pub(crate) fn fault(&self) -> Option<NodeError> {
        self.fault.lock().ok().and_then(|f| f.clone())
    }

    pub(crate) fn clear_fault(&self) {
        if let Ok(mut f) = self.fault.lock() {
            *f = None;
        }
    }

    pub(crate) fn set_fault(&self, e: NodeError) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(e);
        }
    }

    /// Stops Raft and the listener.
    pub(crate) async fn stop_manager(&self) {
        if let Some(m) = self.manager.swap(None) {
            m.shutdown().await;
        }
    }

    /// Runs `m` as this member's manager side.
    pub(crate) fn set_manager(&self, m: Arc<Manager>) {
        self.manager.store(Some(m));
    }

    pub(crate) fn require_manager(&self) -> Result<Arc<Manager>, NodeError> {
        if let Some(fault) = self.fault() {
            return Err(fault);
        }
        self.manager
            .load_full()
            .ok_or_else(crate::faults::not_a_manager)
    }

    /// Trusts `roots_pem` (the cluster's roots, as the leader says), if it
    /// is not what this node trusts already; saves it with the node's keys.
    pub(crate) fn follow_trust(&self, roots_pem: &str) -> Result<bool, NodeError> {
        if roots_pem.is_empty() || self.tls.roots().to_pem() == roots_pem {
            return Ok(false);
        }
        let roots = moat_pki::TrustRoots::from_pem(roots_pem.as_bytes()).map_err(|e| {
            NodeError::new(
                ErrorKind::Internal,
                format!("the leader sent roots this node cannot use: {e}"),
            )
        })?;
        if roots.cluster_id().ok() != Some(self.cluster) {
            return Err(NodeError::new(
                ErrorKind::Internal,
                "the leader sent roots of another cluster",
            ));
        }
        let (chain, key) = self.tls.signing_identity().ok_or_else(|| {
            NodeError::new(ErrorKind::Internal, "this node has no certificate yet")
        })?;
        let chain_pem: String = chain.iter().map(|c| moat_pki::cert_pem(c)).collect();
        self.keyring.save_tls(&chain_pem, &key, &roots)?;
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
    ) -> Result<moat_pki::Identity, NodeError> {
        let chain = crate::files::chain_from_pem(chain_pem)?;
        let key_copy = PrivateKey::from_pkcs8_der(&key.to_pkcs8_der())
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let identity = self
            .tls
            .set_credentials(Credentials { chain, key }, self.clock.now())
            .map_err(|e| {
                NodeError::new(
                    ErrorKind::Internal,
                    format!("the manager sent a certificate this node cannot use: {e}"),
                )
            })?;
        self.keyring
            .save_tls(chain_pem, &key_copy, &self.tls.roots())?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.clear();
        }
        Ok(identity)
    }

    /// The managers, for nodes' failover lists: every Raft member with its
    /// address.
    pub(crate) fn manager_peers(&self) -> Vec<Peer> {
        let mut peers = self.manager().map(|m| m.members()).unwrap_or_default();
        peers.sort();
        peers
    }
}
