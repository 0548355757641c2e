//! `moat daemon`: one node's process. Serves the control socket, restores
//! the node from its state directory, and runs init, join and leave.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_api::{
    ApiError, ErrorKind, InitRequest, InitResponse, JoinRequest, JoinResponse, UnlockRequest,
    UnlockResponse,
};
use moat_lock::UnlockKey;
use moat_pki::{
    CertError, ClusterId, Credentials, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role,
    RootCa, RootOptions, TlsContext, TrustRoots,
};
use moat_store::model::{CaMaterial, Command, JoinTokens, NodeRecord, Policy, Secret};
use moat_tokens::JoinToken;
use moat_transport::{ClusterClient, ServerTrust};
use tokio::sync::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::files::{self, Layout, NodeFile};
use crate::journal::Journal;
use crate::keys;
use crate::node::{Node, fingerprint};
use crate::rpc::{self, RpcError, method};
use crate::{NodeError, agent};

/// How a daemon is started.
#[derive(Debug)]
pub struct DaemonOptions {
    /// The node's state directory.
    pub state_dir: PathBuf,
    /// The control socket; default `state_dir/moat.sock`.
    pub control_socket: Option<PathBuf>,
    /// The host name to report; default the machine's.
    pub hostname: Option<String>,
    /// Unlock key for unattended start of a locked manager (read from
    /// `--unlock-key-file` or `--unlock-key-fd`); tried once at start.
    pub unlock_key: Option<UnlockKey>,
    /// Serve Prometheus metrics on this address (`--metrics-addr`); off
    /// when `None`.
    pub metrics_addr: Option<String>,
}

/// How long `leave --force` waits for the cluster to confirm.
const FORCED_LEAVE_WAIT: Duration = Duration::from_secs(10);

/// How long `init --force-new-cluster` tries to reach a quorum before it
/// concludes that the quorum is lost.
const FORCE_QUORUM_PROBE: Duration = Duration::from_secs(3);

/// Default cluster port (Docker's is 2377).
pub const DEFAULT_PORT: u16 = 4377;

pub(crate) enum Phase {
    Inactive,
    /// A manager with autolock on, restarted: nothing is decrypted until
    /// someone gives the unlock key.
    Locked(Box<Locked>),
    Member {
        node: Arc<Node>,
        agent: Option<JoinHandle<()>>,
    },
}

/// What a locked node holds: no key, only who it is and its unlock
/// attempts.
pub(crate) struct Locked {
    pub(crate) file: NodeFile,
    throttle: keys::Throttle,
    shares: moat_lock::ShareSet,
}

/// The message every command but `info` and `unlock` gives on a locked node.
pub(crate) fn locked_error() -> ApiError {
    ApiError::new(
        ErrorKind::FailedPrecondition,
        "This node is locked. Run \"moat unlock\" and provide the unlock key.",
    )
    .hint("autolock is on and this manager restarted; see docs/runbooks/unlock-a-manager.md")
}

/// The running daemon.
pub(crate) struct Daemon {
    pub(crate) layout: Layout,
    pub(crate) journal: Arc<Journal>,
    pub(crate) hostname: String,
    pub(crate) phase: RwLock<Phase>,
    /// Serializes init, join, leave and role changes of this node.
    lifecycle: Mutex<()>,
    /// Failed unlock attempts since start (a metric).
    pub(crate) failed_unlocks: std::sync::atomic::AtomicU64,
}

/// Runs a daemon until SIGTERM or SIGINT.
pub async fn run_daemon(opts: DaemonOptions) -> Result<(), NodeError> {
    let layout = Layout::new(&opts.state_dir);
    let _lock = layout.lock().map_err(NodeError::Control)?;
    let hostname = opts.hostname.clone().unwrap_or_else(machine_hostname);
    let (journal, broken) = Journal::open(layout.dir());
    if let Some(b) = &broken {
        tracing::error!(line = b.line, problem = %b.problem, "the local security journal {} was altered or damaged", layout.dir().join("journal.jsonl").display());
        let _ = journal.record(
            "",
            "this node",
            "tamper-detected",
            "failed",
            &format!("journal.jsonl line {}: {}", b.line, b.problem),
        );
    }
    let daemon = Arc::new(Daemon {
        layout: layout.clone(),
        journal: Arc::new(journal),
        hostname,
        phase: RwLock::new(Phase::Inactive),
        lifecycle: Mutex::new(()),
        failed_unlocks: std::sync::atomic::AtomicU64::new(0),
    });
    let metrics = match &opts.metrics_addr {
        Some(addr) => Some(
            crate::metrics::bind(addr)
                .await
                .map_err(NodeError::Control)?,
        ),
        None => None,
    };
    // The first TLS handshake of a process seeds aws-lc's random generator
    // from CPU jitter (tens of ms): do it before the socket answers, not
    // during the first join.
    let mut seed = [0u8; 32];
    let _ = moat_pki::provider().secure_random.fill(&mut seed);
    daemon
        .restore(opts.unlock_key)
        .await
        .map_err(NodeError::Control)?;

    let socket = opts.control_socket.unwrap_or_else(|| layout.socket());
    let listener = crate::control::bind(&socket).map_err(NodeError::Control)?;
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        }
        tokio::spawn(crate::metrics::serve(listener, daemon.clone()));
    }
    tracing::info!(socket = %socket.display(), state_dir = %layout.dir().display(), "moat daemon ready");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    let served = crate::control::serve(listener, daemon.clone(), shutdown).await;
    daemon.stop().await;
    let _ = std::fs::remove_file(&socket);
    served.map_err(NodeError::Control)
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Daemon {
    /// The member node, if any.
    pub(crate) async fn node(&self) -> Option<Arc<Node>> {
        match &*self.phase.read().await {
            Phase::Inactive | Phase::Locked(_) => None,
            Phase::Member { node, .. } => Some(node.clone()),
        }
    }

    /// Who this node is while it is locked.
    pub(crate) async fn locked(&self) -> Option<NodeFile> {
        match &*self.phase.read().await {
            Phase::Locked(l) => Some(l.file.clone()),
            _ => None,
        }
    }

    /// The member node, or the error every cluster command gives on an
    /// inactive, locked or faulted node.
    pub(crate) async fn member(&self) -> Result<Arc<Node>, ApiError> {
        if self.locked().await.is_some() {
            return Err(locked_error());
        }
        let node = self.node().await.ok_or_else(not_in_cluster)?;
        if let Some(fault) = node.fault() {
            return Err(fault);
        }
        Ok(node)
    }

    async fn stop(&self) {
        let mut phase = self.phase.write().await;
        if let Phase::Member { node, agent } = &mut *phase {
            if let Some(agent) = agent.take() {
                agent.abort();
            }
            node.stop_manager().await;
        }
    }

    /// Brings back the node described by the state directory, or discards
    /// what an interrupted init or join left behind.
    async fn restore(&self, unlock_key: Option<UnlockKey>) -> Result<(), ApiError> {
        if !self.layout.has_node_file() {
            // No node.json: not in a cluster. Anything else is the residue of
            // an init or join that did not finish; it is set aside, never
            // deleted, in case node.json was lost some other way.
            if let Some(aside) = self.layout.set_aside_leftovers()? {
                tracing::warn!(
                    moved_to = %aside.display(),
                    "found keys or a store without node.json (an interrupted init or join?); set them aside and started as a node outside any cluster"
                );
            }
            return Ok(());
        }
        // A key change interrupted by a crash is finished (or undone) first.
        if keys::finish_rekey(&self.layout)? {
            tracing::warn!("finished re-sealing this node's keys, interrupted by the last stop");
        }
        let file = NodeFile::load(&self.layout)?;
        if !self.layout.kek_file().exists() {
            tracing::warn!(node = %file.node_id, "this manager is locked (autolock is on): run `moat unlock` and provide the unlock key");
            *self.phase.write().await = Phase::Locked(Box::new(Locked {
                file,
                throttle: keys::Throttle::default(),
                shares: moat_lock::ShareSet::new(),
            }));
            if let Some(key) = unlock_key {
                match self.unlock_with(key, "unattended start").await {
                    Ok(_) => tracing::info!("unlocked with the key given at start"),
                    Err(e) => {
                        tracing::error!(error = %e.message, "the unlock key given at start did not unlock this node; it stays locked")
                    }
                }
            }
            return Ok(());
        }
        let kek = moat_lock::read_unlock_key_file(self.layout.kek_file())
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        self.bring_up(file, kek).await
    }

    /// Starts the member this node's files describe, with their key.
    async fn bring_up(&self, file: NodeFile, kek: UnlockKey) -> Result<(), ApiError> {
        let (chain, key, roots) =
            files::load_tls(&self.layout, &kek, &file.cluster_id, &file.node_id)?;
        let tls = TlsContext::new(file.cluster_id, roots);
        let node = Node::new(
            file.clone(),
            self.layout.clone(),
            tls.clone(),
            kek,
            self.journal.clone(),
        );
        match tls.set_credentials(Credentials { chain, key }, OffsetDateTime::now_utc()) {
            Ok(identity) => {
                tracing::info!(node = %identity.node_id, role = identity.role.as_str(), "restoring cluster membership");
                self.run_member(node, identity.role).await?;
            }
            Err(moat_pki::Error::Cert(CertError::Expired { not_after, .. }))
                if self.layout.store_dir().join("store.json").exists() =>
            {
                // A manager holds the CA key in its store: it renews its own
                // certificate rather than stay locked out (all managers may
                // have been down for longer than a certificate lives).
                match self_renew(&node, &file).await {
                    Ok(identity) => {
                        tracing::warn!(
                            expired = %not_after,
                            not_after = %identity.not_after,
                            "this manager's certificate expired while it was down; issued itself a new one from the cluster CA"
                        );
                        self.run_member(node, Role::Manager).await?;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "renewing this manager's expired certificate from its store failed");
                        node.set_fault(agent::expired_fault(not_after));
                        *self.phase.write().await = Phase::Member { node, agent: None };
                    }
                }
            }
            Err(moat_pki::Error::Cert(CertError::Expired { not_after, .. })) => {
                let fault = agent::expired_fault(not_after);
                tracing::error!("{}", fault.message);
                node.set_fault(fault);
                *self.phase.write().await = Phase::Member { node, agent: None };
            }
            Err(e) => {
                return Err(ApiError::new(
                    ErrorKind::Internal,
                    format!("this node's certificate cannot be used: {e}"),
                )
                .hint(crate::files::START_OVER_HINT));
            }
        }
        Ok(())
    }

    /// Runs a member whose keys are loaded: a manager's store and
    /// listener, and the agent. A manager restored from a backup waits
    /// for `moat init --force-new-cluster` instead.
    async fn run_member(&self, node: Arc<Node>, role: Role) -> Result<(), ApiError> {
        if node.node_file().restored {
            tracing::warn!(
                "this manager was restored from a backup: run `moat init --force-new-cluster` to start the restored cluster"
            );
            node.set_fault(restored_fault());
            *self.phase.write().await = Phase::Member { node, agent: None };
            return Ok(());
        }
        if role == Role::Manager {
            node.start_manager(&node.node_file().listen_addr).await?;
            resume_dek_rotation(&node);
        }
        let agent = tokio::spawn(agent::run(node.clone()));
        *self.phase.write().await = Phase::Member {
            node,
            agent: Some(agent),
        };
        Ok(())
    }

    async fn ensure_inactive(&self) -> Result<(), ApiError> {
        if self.locked().await.is_some() {
            return Err(locked_error());
        }
        if self.node().await.is_some() {
            return Err(ApiError::new(
                ErrorKind::FailedPrecondition,
                "This node is already part of a cluster.",
            )
            .hint("use `moat leave` to leave this cluster and join another one"));
        }
        Ok(())
    }

    /// `moat init`.
    pub(crate) async fn init(&self, req: InitRequest) -> Result<InitResponse, ApiError> {
        let _guard = self.lifecycle.lock().await;
        if req.force_new_cluster {
            return self.force_new_cluster(req).await;
        }
        self.ensure_inactive().await?;
        let expiry = cert_expiry(req.cert_expiry_seconds)?;
        let result = self.init_inner(req, expiry).await;
        if result.is_err() {
            self.abandon().await;
        }
        result
    }

    async fn init_inner(
        &self,
        req: InitRequest,
        expiry: Duration,
    ) -> Result<InitResponse, ApiError> {
        let now = OffsetDateTime::now_utc();
        let cluster = ClusterId::generate();
        let id = NodeId::generate();
        let internal =
            |e: &dyn std::fmt::Display| ApiError::new(ErrorKind::Internal, e.to_string());
        let root =
            RootCa::generate(cluster, &RootOptions::default(), now).map_err(|e| internal(&e))?;
        let roots = TrustRoots::new(vec![root.certificate().clone()]).map_err(|e| internal(&e))?;
        let bundle = roots.to_pem();
        let key = PrivateKey::generate(KeyAlgorithm::default()).map_err(|e| internal(&e))?;
        let csr = moat_pki::VerifiedCsr::from_der(key.csr().map_err(|e| internal(&e))?.as_ref())
            .map_err(|e| internal(&e))?;
        let cert_expiry = moat_pki::CertExpiry::new(expiry).map_err(|e| internal(&e))?;
        let issued = root
            .issue(&csr, id, Role::Manager, cert_expiry, now)
            .map_err(|e| internal(&e))?;
        let tokens = JoinTokens {
            worker: JoinToken::generate(bundle.as_bytes()).map_err(|e| internal(&e))?,
            manager: JoinToken::generate(bundle.as_bytes()).map_err(|e| internal(&e))?,
            worker_issued_at: now.unix_timestamp(),
            manager_issued_at: now.unix_timestamp(),
        };
        let worker_token = tokens.worker.expose_secret().to_string();
        let ca = CaMaterial {
            root_cert_pem: bundle.clone(),
            root_key_pkcs8: Secret::new(data_encoding::BASE64.encode(&root.key().to_pkcs8_der())),
        };

        // With autolock the cluster's unlock key seals everything from the
        // start and is never written to disk.
        let kek = if req.autolock {
            UnlockKey::generate().map_err(|e| internal(&e))?
        } else {
            files::load_or_create_kek(&self.layout)?
        };
        let unlock_key = req.autolock.then(|| kek.expose_for_operator());
        let tls = TlsContext::new(cluster, roots.clone());
        let listen = normalize_listen(&req.listen_addr)?;
        let file = NodeFile::new(
            id,
            cluster,
            listen.clone(),
            String::new(),
            Vec::new(),
            expiry.as_secs(),
        );
        let node = Node::new(file, self.layout.clone(), tls, kek, self.journal.clone());
        node.install_credentials(&crate::node::der_to_pem(&issued.der), key)?;
        let bound = node.start_manager(&listen).await?;
        let advertise = advertise_addr(req.advertise_addr.as_deref(), bound)?;
        // The phase is set before Raft runs so a failure below is cleaned up.
        *self.phase.write().await = Phase::Member {
            node: node.clone(),
            agent: None,
        };
        let m = node.require_manager()?;
        m.raft
            .initialize(std::collections::BTreeMap::from([(
                id,
                openraft::BasicNode::new(advertise.clone()),
            )]))
            .await
            .map_err(|e| internal(&e))?;
        m.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(id, "this manager to lead its new cluster")
            .await
            .map_err(|e| internal(&e))?;
        let root_fingerprint = fingerprint(root.certificate());
        node.propose_audited(
            Command::Init {
                cluster_id: cluster,
                policy: Policy {
                    cert_expiry_secs: expiry.as_secs(),
                    autolock: false,
                    token_ttl_secs: None,
                },
                ca,
                join_tokens: tokens,
            },
            node.ev(
                crate::audit::operator(),
                moat_audit::Action::CLUSTER_INIT,
                format!("cluster:{cluster}"),
            )
            .detail("root_ca", &root_fingerprint)
            .detail("cert_expiry_seconds", expiry.as_secs())
            .detail("autolock", unlock_key.is_some())
            .detail("address", &advertise),
        )
        .await
        .map_err(RpcError::into_api)?;
        node.propose(Command::SetAuditKey(crate::audit::new_audit_key()?))
            .await
            .map_err(RpcError::into_api)?;
        if let Some(text) = &unlock_key {
            node.propose_audited(
                Command::SetAutolock {
                    key: Some(Secret::new(text.as_str())),
                    now: now.unix_timestamp(),
                },
                node.ev(
                    crate::audit::operator(),
                    moat_audit::Action::AUTOLOCK_ENABLE,
                    "cluster",
                ),
            )
            .await
            .map_err(RpcError::into_api)?;
        }
        node.propose(Command::PutNode(NodeRecord {
            id,
            hostname: self.hostname.clone(),
            role: Role::Manager,
            address: advertise.clone(),
            labels: Default::default(),
            cert_serial: issued.serial.clone(),
            cert_not_after: issued.not_after.unix_timestamp(),
            cert_issuer: root_fingerprint.clone(),
            availability: Default::default(),
            ready: true,
        }))
        .await
        .map_err(RpcError::into_api)?;
        node.record_cert(
            id,
            Role::Manager,
            &issued,
            root_fingerprint.clone(),
            moat_audit::Action::CERT_ISSUE,
        )
        .await
        .map_err(RpcError::into_api)?;
        // node.json last: from here on a restart brings the cluster back.
        let listen_file = if listen.ends_with(":0") {
            bound.to_string()
        } else {
            listen
        };
        node.update_node_file(|f| {
            f.listen_addr = listen_file;
            f.advertise_addr = advertise.clone();
            f.managers = vec![rpc::Peer {
                id,
                addr: advertise.clone(),
            }];
            f.key_generation = u32::from(unlock_key.is_some());
        })?;
        let agent = tokio::spawn(agent::run(node.clone()));
        *self.phase.write().await = Phase::Member {
            node,
            agent: Some(agent),
        };
        tracing::info!(node = %id, cluster = %cluster, addr = %advertise, "cluster initialized");
        Ok(InitResponse {
            node_id: id.to_string(),
            cluster_id: cluster.to_string(),
            advertise_addr: advertise,
            worker_token,
            unlock_key: unlock_key.map(|k| k.to_string()),
        })
    }

    /// `moat init --force-new-cluster`: this manager (restored from a
    /// backup, or the survivor of a lost quorum) becomes the only voter of
    /// its cluster, keeping every committed object, at the addresses
    /// given (default: its own).
    async fn force_new_cluster(&self, req: InitRequest) -> Result<InitResponse, ApiError> {
        if self.locked().await.is_some() {
            return Err(locked_error());
        }
        let node = self.node().await.ok_or_else(|| {
            not_in_cluster().hint("to recover a cluster from a backup, lay it out first with `moat restore FILE --state-dir DIR`, start `moat daemon --state-dir DIR`, then run this again")
        })?;
        if !node.layout.store_dir().join("store.json").exists() {
            return Err(ApiError::new(
                ErrorKind::FailedPrecondition,
                "only a manager can force a new cluster; this node is a worker",
            )
            .hint("run it on a manager, or on a manager restored with `moat restore`"));
        }
        if req.autolock || req.cert_expiry_seconds.is_some() {
            return Err(ApiError::new(
                ErrorKind::InvalidArgument,
                "--autolock and --cert-expiry cannot be combined with --force-new-cluster: the cluster keeps its settings",
            )
            .hint("change them afterwards with `moat update`"));
        }
        // Only for a quorum that is gone: a cluster that can still commit
        // is changed with demote and rm, never by forking it.
        if node.fault().is_none()
            && node.manager.load_full().is_some()
            && let Ok(Ok(_)) = tokio::time::timeout(FORCE_QUORUM_PROBE, node.read_state()).await
        {
            return Err(ApiError::new(
                ErrorKind::FailedPrecondition,
                "this manager's cluster has a quorum: there is nothing to recover",
            )
            .hint("--force-new-cluster is for a majority of managers lost for good; to shrink a healthy cluster, use `moat node demote` and `moat node rm`"));
        }
        let file = node.node_file();
        let listen = if req.listen_addr.is_empty() {
            file.listen_addr.clone()
        } else {
            normalize_listen(&req.listen_addr)?
        };
        let advertise = match (&req.advertise_addr, req.listen_addr.is_empty()) {
            (Some(a), _) => normalize_listen(a)?,
            (None, true) => file.advertise_addr.clone(),
            (None, false) => {
                let bound: SocketAddr = listen.parse().map_err(|e| {
                    ApiError::new(ErrorKind::InvalidArgument, format!("{listen}: {e}"))
                })?;
                advertise_addr(None, bound)?
            }
        };
        {
            let mut phase = self.phase.write().await;
            if let Phase::Member { agent, .. } = &mut *phase
                && let Some(agent) = agent.take()
            {
                agent.abort();
            }
        }
        node.stop_manager().await;
        // A backup may be older than a certificate lives: a manager holds
        // the CA, so it issues itself a new one before it starts.
        let now = OffsetDateTime::now_utc();
        if node.tls.identity().is_none_or(|i| i.not_after <= now) {
            let identity = self_renew(&node, &file).await?;
            tracing::warn!(not_after = %identity.not_after, "this manager's certificate had expired; issued itself a new one from the cluster CA");
        }
        // Until the rewrite below is complete, a restart waits for this
        // command to be run again instead of starting half-rewritten.
        node.update_node_file(|f| f.restored = true)?;
        node.set_fault(restored_fault());
        let was_restored = file.restored;
        let forced = {
            let kek = node.kek.load_full();
            moat_store::offline::force_single_voter(
                &node.layout.store_dir(),
                moat_lock::KeySource::Key(&kek),
                node.id,
                &advertise,
            )
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorKind::Internal,
                    format!("rewriting the store for a new cluster: {e}"),
                )
                .hint("nothing was lost: the store keeps its committed state; fix the cause and run the command again")
            })?
        };
        node.update_node_file(|f| {
            f.listen_addr = listen.clone();
            f.advertise_addr = advertise.clone();
            f.managers = vec![rpc::Peer {
                id: node.id,
                addr: advertise.clone(),
            }];
            f.restored = false;
        })?;
        node.clear_fault();
        node.start_manager(&listen).await?;
        let m = node.require_manager()?;
        m.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(node.id, "this manager to lead the forced new cluster")
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        let state = node.read_state().await.map_err(RpcError::into_api)?;
        // The other managers are out: refused should one come back.
        let until = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager && n.id != node.id)
            .map(|n| n.cert_not_after)
            .max()
            .unwrap_or_default()
            .max(now.unix_timestamp())
            + 60;
        let action = if was_restored {
            moat_audit::Action::BACKUP_RESTORE
        } else {
            "cluster.force_new"
                .parse()
                .unwrap_or(moat_audit::Action::BACKUP_RESTORE)
        };
        let evicted = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager && n.id != node.id)
            .count();
        node.propose_audited(
            Command::EvictManagers {
                keep: node.id,
                until,
            },
            node.ev(
                crate::audit::operator(),
                action,
                format!("node:{}", node.id),
            )
            .detail("from_index", forced.index)
            .detail("from_term", forced.term)
            .detail("dropped_entries", forced.dropped_entries)
            .detail("managers_evicted", evicted)
            .detail("address", &advertise),
        )
        .await
        .map_err(RpcError::into_api)?;
        if let Some(record) = state.nodes.get(&node.id) {
            let mut record = record.clone();
            record.address = advertise.clone();
            record.hostname = self.hostname.clone();
            record.ready = true;
            node.propose(Command::PutNode(record))
                .await
                .map_err(RpcError::into_api)?;
        }
        resume_dek_rotation(&node);
        let agent = tokio::spawn(agent::run(node.clone()));
        *self.phase.write().await = Phase::Member {
            node: node.clone(),
            agent: Some(agent),
        };
        node.journal(
            "force-new-cluster",
            "success",
            &format!(
                "from log index {} (term {}); {} uncommitted entries dropped",
                forced.index, forced.term, forced.dropped_entries
            ),
        );
        tracing::warn!(index = forced.index, addr = %advertise, dropped = forced.dropped_entries, "forced a new cluster with this manager as its only voter");
        let worker_token = state
            .join_tokens
            .as_ref()
            .map(|t| t.worker.expose_secret().to_string())
            .unwrap_or_default();
        Ok(InitResponse {
            node_id: node.id.to_string(),
            cluster_id: node.cluster.to_string(),
            advertise_addr: advertise,
            worker_token,
            unlock_key: None,
        })
    }

    /// Stops whatever a failed init or join started and removes its files.
    async fn abandon(&self) {
        // Only ever called before node.json exists.
        let mut phase = self.phase.write().await;
        if let Phase::Member { node, agent } = &mut *phase {
            if let Some(agent) = agent.take() {
                agent.abort();
            }
            node.stop_manager().await;
        }
        *phase = Phase::Inactive;
        if let Err(e) = self.layout.wipe() {
            tracing::error!(error = %e, "cleaning up after a failed init or join");
        }
    }

    /// `moat join`.
    pub(crate) async fn join(&self, req: JoinRequest) -> Result<JoinResponse, ApiError> {
        let _guard = self.lifecycle.lock().await;
        let token = JoinToken::from_str(&req.token).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidArgument,
                format!("invalid join token: {e}"),
            )
            .hint("get a current token with `moat join-token worker` (or `manager`) on a manager")
        })?;
        let rejoin = if req.rejoin {
            let node = self.node().await.ok_or_else(|| {
                ApiError::new(
                    ErrorKind::FailedPrecondition,
                    "--rejoin needs a node that was in a cluster; this one never was",
                )
                .hint("join without --rejoin")
            })?;
            Some(node)
        } else {
            self.ensure_inactive().await?;
            None
        };
        let result = self.join_inner(&req, token, rejoin.clone()).await;
        // Before node.json exists nothing of the join is kept; after, the
        // node is a member and stays one.
        if result.is_err() && rejoin.is_none() && !self.layout.has_node_file() {
            self.abandon().await;
        }
        result
    }

    async fn join_inner(
        &self,
        req: &JoinRequest,
        token: JoinToken,
        rejoin: Option<Arc<Node>>,
    ) -> Result<JoinResponse, ApiError> {
        let remote = req.remote_addr.as_str();
        // 1. The root bundle, from a manager not yet trusted.
        let bootstrap = ClusterClient::connect(remote, ServerTrust::Bootstrap, rpc::CALL_TIMEOUT)
            .await
            .map_err(|e| {
                ApiError::new(ErrorKind::Unavailable, format!("cannot reach a manager at {remote}: {e}"))
                    .hint("check the address and that the manager's cluster port is reachable from this node")
            })?;
        let bundle: rpc::CaBundle = rpc::call(
            &bootstrap,
            method::CA_BUNDLE,
            &rpc::Nothing {},
            rpc::CALL_TIMEOUT,
        )
        .await
        .map_err(RpcError::into_api)?;
        // 2. Pinned by the token: a mismatch ends here, before the token's
        // secret is sent anywhere.
        token.verify_ca(bundle.roots_pem.as_bytes()).map_err(|_| {
            ApiError::new(
                ErrorKind::PermissionDenied,
                format!("the manager at {remote} is not part of the cluster this join token belongs to: its root CA does not match the CA digest in the token"),
            )
            .hint("check the manager address, or get a fresh token from a manager of the cluster you mean to join (`moat join-token worker`)")
        })?;
        let roots = TrustRoots::from_pem(bundle.roots_pem.as_bytes())
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("root CA bundle: {e}")))?;
        let cluster = roots
            .cluster_id()
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("root CA bundle: {e}")))?;
        // 3. Verified from now on.
        let tls = TlsContext::new(cluster, roots.clone());
        let client = ClusterClient::connect(
            remote,
            ServerTrust::Verified(tls.clone()),
            rpc::CALL_TIMEOUT,
        )
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorKind::Unavailable,
                format!("connecting to {remote}: {e}"),
            )
        })?;
        let key = PrivateKey::generate(KeyAlgorithm::default())
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        let csr = key
            .csr()
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        let listen = normalize_listen(&req.listen_addr)?;
        let (listen, provisional) = reserve_port(&listen, req.advertise_addr.as_deref()).await?;
        let csr_pem = agent::csr_pem(csr.as_ref());
        let proof = match &rejoin {
            Some(old) => Some(self.rejoin_proof(old, &csr_pem)?),
            None => None,
        };
        let join = rpc::JoinReq {
            token: token.expose_secret().to_string(),
            csr_pem,
            hostname: self.hostname.clone(),
            advertise_addr: provisional.clone(),
            rejoin: proof,
        };
        let resp: rpc::CertResp = rpc::call(&client, method::JOIN, &join, rpc::SLOW_CALL_TIMEOUT)
            .await
            .map_err(RpcError::into_api)?;
        // 4. Keep it.
        let kek = match (&rejoin, &resp.unlock_key) {
            (Some(node), _) => keys::clone_key(&node.kek.load())?,
            // A manager joining a cluster with autolock on seals under the
            // unlock key from the start: no key file, ever.
            (None, Some(key)) => key.expose_secret().parse::<UnlockKey>().map_err(|e| {
                ApiError::new(
                    ErrorKind::Internal,
                    format!("the manager sent a malformed unlock key: {e}"),
                )
            })?,
            (None, None) => files::load_or_create_kek(&self.layout)?,
        };
        if let Some(old) = &rejoin {
            let mut phase = self.phase.write().await;
            if let Phase::Member {
                agent: Some(agent), ..
            } = &mut *phase
            {
                agent.abort();
            }
            old.stop_manager().await;
        }
        let mut file = NodeFile::new(
            resp.node_id,
            cluster,
            listen.clone(),
            provisional.clone(),
            resp.managers.clone(),
            0,
        );
        if rejoin.is_none() && resp.unlock_key.is_some() {
            file.key_generation = resp.key_generation;
        }
        let node = Node::new(
            file,
            self.layout.clone(),
            TlsContext::new(cluster, roots),
            kek,
            self.journal.clone(),
        );
        node.install_credentials(&resp.chain_pem, key)?;
        // The cluster has admitted this node: from here on a restart must
        // bring it back, so node.json is written now, before the manager
        // side starts (the agent finishes that if this is interrupted).
        NodeFile::save(&node.node_file(), &self.layout)?;
        *self.phase.write().await = Phase::Member {
            node: node.clone(),
            agent: None,
        };
        if resp.role == Role::Manager {
            let started = match node.start_manager(&listen).await {
                Ok(_) => node.become_voter(&provisional).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                let agent = tokio::spawn(agent::run(node.clone()));
                *self.phase.write().await = Phase::Member {
                    node,
                    agent: Some(agent),
                };
                return Err(ApiError::new(
                    e.kind,
                    format!(
                        "this node joined the cluster, but is not yet a voting manager: {}",
                        e.message
                    ),
                )
                .hint(
                    "it keeps trying in the background; check with `moat node ls` on a manager",
                ));
            }
        }
        let agent = tokio::spawn(agent::run(node.clone()));
        *self.phase.write().await = Phase::Member {
            node,
            agent: Some(agent),
        };
        tracing::info!(node = %resp.node_id, role = resp.role.as_str(), "joined the cluster");
        Ok(JoinResponse {
            node_id: resp.node_id.to_string(),
            role: api_role(resp.role),
            warning: resp.warning,
        })
    }

    /// Signs the new CSR with the key of the node's old (expired)
    /// certificate.
    fn rejoin_proof(&self, old: &Node, csr_pem: &str) -> Result<rpc::RejoinProof, ApiError> {
        let (chain, key, _) =
            files::load_tls(&self.layout, &old.kek.load(), &old.cluster, &old.id)?;
        let signature = key
            .sign(&rpc::rejoin_message(csr_pem))
            .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
        Ok(rpc::RejoinProof {
            chain_pem: chain.iter().map(|c| crate::node::der_to_pem(c)).collect(),
            signature_b64: data_encoding::BASE64.encode(&signature),
        })
    }

    /// `moat leave`.
    pub(crate) async fn leave(&self, force: bool) -> Result<(), ApiError> {
        let _guard = self.lifecycle.lock().await;
        let node = self.node().await.ok_or_else(not_in_cluster)?;
        let faulted = node.fault().is_some();
        if !faulted {
            if let Some(m) = node.manager.load_full() {
                let voters = m.voters();
                if voters.len() <= 1 && !force {
                    return Err(ApiError::new(
                        ErrorKind::FailedPrecondition,
                        "You are attempting to leave the cluster on a node that is the last manager. Removing the last manager erases all current state of the cluster.",
                    )
                    .hint("use --force to ignore this message"));
                }
                if voters.len() > 1 {
                    let request = node.admin(
                        rpc::AdminReq::Leave { id: node.id, force },
                        crate::audit::operator(),
                    );
                    // With --force the node leaves even when the others cannot
                    // agree (no quorum): wait a bounded time, then go.
                    let leave = if force {
                        tokio::time::timeout(FORCED_LEAVE_WAIT, request)
                            .await
                            .unwrap_or_else(|_| {
                                Err(RpcError::new(
                                    rpc::RpcErrorKind::Unavailable,
                                    "the other managers did not confirm the departure in time",
                                ))
                            })
                    } else {
                        request.await
                    };
                    if let Err(e) = leave {
                        if !force {
                            return Err(e.into_api().hint(
                                "without a Raft quorum the cluster is inaccessible until the missing managers come back; bring them back first, or use --force to leave anyway",
                            ));
                        }
                        tracing::warn!(error = %e, "leaving without the cluster's agreement (--force)");
                    }
                }
            } else if let Err(e) = node
                .call_leader::<_, rpc::Nothing>(
                    method::ADMIN,
                    &rpc::Admin {
                        req: rpc::AdminReq::Leave { id: node.id, force },
                        by: rpc::RequestedBy {
                            node: node.id,
                            actor: crate::audit::operator().to_string(),
                        },
                    },
                    rpc::CALL_TIMEOUT,
                )
                .await
            {
                tracing::warn!(error = %e, "could not tell the managers that this node is leaving");
            }
        }
        {
            let mut phase = self.phase.write().await;
            if let Phase::Member { agent, .. } = &mut *phase
                && let Some(agent) = agent.take()
            {
                agent.abort();
            }
            node.stop_manager().await;
            *phase = Phase::Inactive;
        }
        self.layout.wipe()?;
        tracing::info!(node = %node.id, "left the cluster");
        Ok(())
    }
}

impl Daemon {
    /// `moat unlock`: the whole key, or one share of it.
    pub(crate) async fn unlock(&self, req: UnlockRequest) -> Result<UnlockResponse, ApiError> {
        let _guard = self.lifecycle.lock().await;
        let key = {
            let mut phase = self.phase.write().await;
            let Phase::Locked(locked) = &mut *phase else {
                return Err(ApiError::new(
                    ErrorKind::FailedPrecondition,
                    "This node is not locked.",
                ));
            };
            let node = locked.file.node_id.to_string();
            if let Err(wait) = locked.throttle.check(Instant::now()) {
                let secs = wait.as_secs_f64().ceil() as u64;
                self.record(
                    &node,
                    "unlock",
                    "denied",
                    "throttled after repeated failures",
                );
                return Err(ApiError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "too many failed unlock attempts ({} in a row): try again in {secs} s",
                        locked.throttle.failures()
                    ),
                )
                .hint(
                    "each further failure doubles the wait, up to 5 minutes; a success resets it",
                ));
            }
            // The texts are zeroized when dropped, whatever the outcome.
            let (key, share) = (
                req.key.map(zeroize::Zeroizing::new),
                req.share.map(zeroize::Zeroizing::new),
            );
            match (key, share) {
                (Some(text), None) => match text.trim().parse::<UnlockKey>() {
                    Ok(key) => key,
                    Err(e) => {
                        locked.throttle.failed(Instant::now());
                        self.record(&node, "unlock", "denied", "malformed unlock key");
                        return Err(ApiError::new(
                            ErrorKind::PermissionDenied,
                            format!("invalid unlock key: {e}"),
                        )
                        .hint(UNLOCK_HINT));
                    }
                },
                (None, Some(text)) => {
                    // Every refused share counts as a failed attempt and is
                    // journaled, like a wrong key.
                    let mut refuse = |message: String, hint: &str| {
                        locked.throttle.failed(Instant::now());
                        self.record(&node, "unlock-share", "denied", &message);
                        ApiError::new(ErrorKind::InvalidArgument, message).hint(hint)
                    };
                    let share = match text.trim().parse::<moat_lock::UnlockShare>() {
                        Ok(share) => share,
                        Err(e) => {
                            return Err(refuse(
                                format!("invalid share: {e}"),
                                "copy the share exactly as `moat unlock-key --split` printed it",
                            ));
                        }
                    };
                    let mut note = None;
                    let progress = match locked.shares.add(share) {
                        Ok(p) => p,
                        Err(moat_lock::LockError::ShareFromOtherSplit { found, .. }) => {
                            // A holder of a share of another (older or newer)
                            // split came first: start over rather than
                            // block every later share until a restart.
                            let dropped = locked.shares.progress().map_or(0, |p| p.have());
                            locked.shares.clear();
                            let share = text
                                .trim()
                                .parse::<moat_lock::UnlockShare>()
                                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
                            let p = locked
                                .shares
                                .add(share)
                                .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
                            let message = format!(
                                "this share belongs to another split ({found}) than the {dropped} share(s) given before; those were set aside and collecting started over with this one"
                            );
                            self.record(&node, "unlock-share", "denied", &message);
                            note = Some(message);
                            p
                        }
                        Err(e) => {
                            return Err(refuse(
                                e.to_string(),
                                "give a share of the current split that was not given yet",
                            ));
                        }
                    };
                    self.record(
                        &node,
                        "unlock-share",
                        "success",
                        &format!(
                            "share accepted: {} of {} needed",
                            progress.have(),
                            progress.need()
                        ),
                    );
                    if progress.have() < progress.need() {
                        return Ok(UnlockResponse {
                            unlocked: false,
                            shares_have: progress.have(),
                            shares_need: progress.need(),
                            shares_total: progress.total(),
                            note,
                        });
                    }
                    let combined = locked.shares.combine();
                    locked.shares.clear();
                    combined
                        .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, e.to_string()))?
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidArgument,
                        "give either the unlock key or one share of it",
                    ));
                }
            }
        };
        self.unlock_with(key, "local operator").await?;
        Ok(UnlockResponse {
            unlocked: true,
            shares_have: 0,
            shares_need: 0,
            shares_total: 0,
            note: None,
        })
    }

    /// Tries `key` on a locked node; on success the node comes up.
    async fn unlock_with(&self, key: UnlockKey, actor: &str) -> Result<(), ApiError> {
        let file = self.locked().await.ok_or_else(|| {
            ApiError::new(ErrorKind::FailedPrecondition, "This node is not locked.")
        })?;
        let node = file.node_id.to_string();
        if !files::tls_key_opens(&self.layout, &key, &file.cluster_id, &file.node_id)? {
            if let Phase::Locked(l) = &mut *self.phase.write().await {
                l.throttle.failed(Instant::now());
            }
            self.failed_unlocks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.record_as(&node, actor, "unlock", "denied", "invalid unlock key");
            return Err(
                ApiError::new(ErrorKind::PermissionDenied, "invalid unlock key").hint(UNLOCK_HINT),
            );
        }
        if let Err(e) = self.bring_up(file, key).await {
            self.record_as(&node, actor, "unlock", "failed", &e.message);
            return Err(e);
        }
        self.record_as(&node, actor, "unlock", "success", "");
        tracing::info!(node = %node, "unlocked");
        Ok(())
    }

    fn record(&self, node: &str, action: &str, outcome: &str, reason: &str) {
        self.record_as(node, "local operator", action, outcome, reason);
    }

    fn record_as(&self, node: &str, actor: &str, action: &str, outcome: &str, reason: &str) {
        if let Err(e) = self.journal.record(node, actor, action, outcome, reason) {
            tracing::error!(error = %e, action, "could not write the local security journal");
        }
    }
}

const UNLOCK_HINT: &str = "give the unlock key that was current when this manager last ran: the one printed when autolock was turned on or the key last rotated (`moat unlock-key` on an unlocked manager shows the current one; a manager that was down during a rotation, or while autolock was turned off, needs the key from before)";

/// Finishes a data-key rotation a restart interrupted (or one that was
/// due and never began).
fn resume_dek_rotation(node: &Arc<Node>) {
    let node = node.clone();
    tokio::spawn(async move {
        let Some(m) = node.manager.load_full() else {
            return;
        };
        let pending = m
            .inner
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.dek_versions())
            .is_some_and(|(_, pending)| pending.is_some());
        if pending || node.node_file().dek_rotation_due {
            tracing::info!("resuming the store data key rotation interrupted by the last stop");
            if let Err(e) = node.rotate_dek().await {
                tracing::error!(error = %e, "resuming the data key rotation failed");
            }
        }
    });
}

/// Issues a manager a new certificate from the CA in its own store, with
/// the role the store records for it.
async fn self_renew(node: &Node, file: &NodeFile) -> Result<moat_pki::Identity, ApiError> {
    let state = moat_store::offline::read_state(
        &node.layout.store_dir(),
        moat_lock::KeySource::Key(&node.kek.load()),
    )
    .await
    .map_err(|e| ApiError::new(ErrorKind::Internal, format!("reading the store: {e}")))?;
    // Only a manager the store still records as one, and not removed.
    if state.is_removed(&file.node_id) {
        return Err(agent::removed_fault());
    }
    let role = state.nodes.get(&file.node_id).map(|n| n.role);
    if role != Some(Role::Manager) {
        return Err(ApiError::new(
            ErrorKind::FailedPrecondition,
            "the store does not record this node as a manager",
        ));
    }
    let role = Role::Manager;
    let key = PrivateKey::generate(KeyAlgorithm::default())
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let csr = key
        .csr()
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let (_, leaf_pem, _) = Node::issue(&state, &agent::csr_pem(csr.as_ref()), file.node_id, role)
        .map_err(RpcError::into_api)?;
    let identity = node.install_credentials(&leaf_pem, key)?;
    // The cluster has no record of this certificate: renew through the
    // leader (which records it) at the agent's first round.
    node.renew_soon
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(identity)
}

pub(crate) fn api_role(role: Role) -> moat_api::Role {
    match role {
        Role::Manager => moat_api::Role::Manager,
        Role::Worker => moat_api::Role::Worker,
    }
}

/// The state of a manager restored from a backup, until it is made the
/// first manager of the restored cluster.
fn restored_fault() -> ApiError {
    ApiError::new(
        ErrorKind::FailedPrecondition,
        "This manager was restored from a backup and is not running yet.",
    )
    .hint("run `moat init --force-new-cluster [--advertise-addr ADDR:PORT]` to make it the only manager of the restored cluster, then join the other nodes again")
}

pub(crate) fn not_in_cluster() -> ApiError {
    ApiError::new(
        ErrorKind::FailedPrecondition,
        "This node is not part of a cluster.",
    )
    .hint("run `moat init` to create a cluster, or `moat join --token TOKEN MANAGER:PORT` to join one")
}

/// Checks a certificate lifetime request against the allowed range.
pub(crate) fn cert_expiry(secs: Option<u64>) -> Result<Duration, ApiError> {
    let d = secs
        .map(Duration::from_secs)
        .unwrap_or_else(|| moat_pki::CertExpiry::DEFAULT.duration());
    moat_pki::CertExpiry::new(d)
        .map(|e| e.duration())
        .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, format!("--cert-expiry: {e}")))
}

pub(crate) fn normalize_listen(addr: &str) -> Result<String, ApiError> {
    let with_port = if addr.parse::<SocketAddr>().is_ok()
        || addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    };
    with_port
        .parse::<SocketAddr>()
        .map(|a| a.to_string())
        .map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidArgument,
                format!("--listen-addr {addr:?}: {e}"),
            )
            .hint("give an IP address and port, e.g. 0.0.0.0:4377")
        })
}

/// The address to advertise: the one given, or the bound one when it is
/// a specific address.
fn advertise_addr(given: Option<&str>, bound: SocketAddr) -> Result<String, ApiError> {
    if let Some(a) = given {
        return normalize_listen(a);
    }
    if bound.ip().is_unspecified() {
        let fib = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        let found = local_addresses(&fib);
        return match found.as_slice() {
            [one] => Ok(SocketAddr::new(*one, bound.port()).to_string()),
            [] => Err(ApiError::new(
                ErrorKind::InvalidArgument,
                format!("could not choose an address to advertise: the listener is on {bound} and this system has no address other than loopback"),
            )
            .hint("give --advertise-addr IP:PORT (or listen on a specific address)")),
            many => Err(ApiError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "could not choose an address to advertise since this system has multiple addresses ({})",
                    many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                ),
            )
            .hint("give --advertise-addr IP:PORT")),
        };
    }
    Ok(bound.to_string())
}

/// The host's own non-loopback IPv4 addresses, from the kernel's FIB
/// (`/proc/net/fib_trie`: an address line `|-- A.B.C.D` followed by
/// `/32 host LOCAL`).
fn local_addresses(fib: &str) -> Vec<std::net::IpAddr> {
    let mut found = std::collections::BTreeSet::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in fib.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line == "/32 host LOCAL"
            && let Some(addr) = last.take()
            && !addr.is_loopback()
        {
            found.insert(addr);
        }
    }
    found.into_iter().map(std::net::IpAddr::V4).collect()
}

/// For a listen address with port 0, picks a free port now so the node
/// can advertise it; returns the listen address and the advertise address.
async fn reserve_port(listen: &str, advertise: Option<&str>) -> Result<(String, String), ApiError> {
    let mut listen = listen.to_string();
    if listen.ends_with(":0") {
        let probe = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
            ApiError::new(
                ErrorKind::FailedPrecondition,
                format!("cannot listen on {listen}: {e}"),
            )
        })?;
        listen = probe
            .local_addr()
            .map_err(|e| files::io_error("reading the listener address", e))?
            .to_string();
    }
    let bound: SocketAddr = listen
        .parse()
        .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, format!("{listen}: {e}")))?;
    let advertise = advertise_addr(advertise, bound)?;
    Ok((listen, advertise))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
           |-- 192.0.2.2
              /32 host LOCAL
";

    #[test]
    fn advertise_address_is_the_one_local_address() {
        assert_eq!(
            local_addresses(FIB),
            vec!["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]
        );
        let two = format!("{FIB}           |-- 172.17.0.1\n              /32 host LOCAL\n");
        assert_eq!(local_addresses(&two).len(), 2);
        let bound: SocketAddr = "127.0.0.1:4377".parse().unwrap();
        assert_eq!(advertise_addr(None, bound).unwrap(), "127.0.0.1:4377");
        assert_eq!(
            advertise_addr(Some("10.0.0.1"), bound).unwrap(),
            "10.0.0.1:4377"
        );
    }

    #[test]
    fn listen_addresses_get_the_default_port() {
        assert_eq!(normalize_listen("0.0.0.0").unwrap(), "0.0.0.0:4377");
        assert_eq!(normalize_listen("127.0.0.1:0").unwrap(), "127.0.0.1:0");
        assert!(normalize_listen("not an address").is_err());
    }
}
