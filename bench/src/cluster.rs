//! A real moat Raft cluster inside a benchmark's process, shared by the
//! `store` and `orchestrator` benchmarks: managers with their own store
//! directories (real fsync) and mutual-TLS transports (ECDSA P-256
//! certificates from a cluster CA, TLS 1.3) on 127.0.0.1 ports, with
//! production's Raft settings.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use moat_lock::{KeySource, UnlockKey};
use moat_node::{RaftManager, raft_config};
use moat_pki::{
    CertExpiry, ClusterId, Credentials, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role,
    RootCa, RootOptions, TlsContext, TrustRoots,
};
use moat_store::model::{Command, NodeRecord, Response};
use moat_store::{OpenStore, Raft, RecordCipher, read_identity};
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;

/// A cluster CA and managers' TLS identities, shared by every run (each
/// run has fresh stores).
pub(crate) struct Pki {
    /// The cluster's id.
    pub(crate) cluster: ClusterId,
    /// Each manager's id and TLS context.
    pub(crate) members: Vec<(NodeId, Arc<TlsContext>)>,
}

impl Pki {
    /// A new cluster CA and `n` manager identities signed by it.
    pub(crate) fn generate(n: usize) -> Result<Self> {
        let cluster = ClusterId::generate();
        let now = OffsetDateTime::now_utc();
        let ca = RootCa::generate(cluster, &RootOptions::default(), now).context("root CA")?;
        let roots = TrustRoots::new(vec![ca.certificate().clone()]).context("trust roots")?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let id = NodeId::generate();
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).context("manager key")?;
            let csr = key.csr().context("manager CSR")?;
            let cert = ca
                .sign_csr(csr.as_ref(), id, Role::Manager, CertExpiry::DEFAULT, now)
                .context("manager certificate")?;
            let tls = TlsContext::new(cluster, roots.clone());
            tls.set_credentials(
                Credentials {
                    chain: vec![cert.der],
                    key,
                },
                now,
            )
            .context("manager TLS credentials")?;
            members.push((id, tls));
        }
        Ok(Self { cluster, members })
    }
}

/// Creates a fresh store for `id` in `dir`, encrypted or not.
pub(crate) fn fresh_store(
    dir: &Path,
    cluster: ClusterId,
    id: NodeId,
    encrypted: bool,
) -> Result<OpenStore> {
    let kek = UnlockKey::generate().context("unlock key")?;
    let store = OpenStore::create(dir, KeySource::Key(&kek), cluster, id)
        .with_context(|| format!("creating a store in {}", dir.display()))?;
    if encrypted {
        return Ok(store);
    }
    // Same directory layout, reopened with the benchmark-only cipher.
    drop(store);
    let identity = read_identity(dir).context("reading store.json")?;
    let cipher = Arc::new(RecordCipher::danger_plaintext(cluster, id));
    OpenStore::open_with(dir, identity, cipher)
        .with_context(|| format!("reopening {} without encryption", dir.display()))
}

/// Starts the first `size` managers of `pki` on fresh stores under `root`
/// (`manager-<i>`), pushing each onto `managers` as it starts (so the
/// caller shuts down whatever started, also when this fails), initializes
/// the cluster with all of them as voters and returns the leader's
/// position in `managers`.
pub(crate) async fn start(
    pki: &Pki,
    root: &Path,
    size: usize,
    encrypted: bool,
    managers: &mut Vec<RaftManager>,
) -> Result<usize> {
    for (i, (id, tls)) in pki.members.iter().take(size).enumerate() {
        let store = fresh_store(
            &root.join(format!("manager-{i}")),
            pki.cluster,
            *id,
            encrypted,
        )?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port")?;
        managers.push(
            RaftManager::start(*id, store, tls.clone(), listener, raft_config())
                .await
                .context("starting a manager")?,
        );
    }
    let membership: BTreeMap<NodeId, BasicNode> = managers
        .iter()
        .map(|m| (m.id, BasicNode::new(m.addr.to_string())))
        .collect();
    managers[0]
        .raft
        .initialize(membership)
        .await
        .map_err(|e| anyhow!("initializing the cluster: {e}"))?;
    leader(managers).await
}

/// Waits until one manager is leader and returns its position.
pub(crate) async fn leader(managers: &[RaftManager]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, m) in managers.iter().enumerate() {
            let metrics = m.raft.metrics().borrow().clone();
            if metrics.state == ServerState::Leader && metrics.current_leader == Some(m.id) {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("no leader elected within 30 s")
}

/// Distinct worker records with a label (`seq`), built before timing;
/// `ready` as the leader marks a heartbeating node.
pub(crate) fn node_records(count: u32, ready: bool) -> Vec<NodeRecord> {
    (0..count)
        .map(|i| NodeRecord {
            id: NodeId::generate(),
            hostname: format!("host-{i}"),
            role: Role::Worker,
            address: String::new(),
            labels: BTreeMap::from([("seq".to_string(), i.to_string())]),
            cert_serial: format!("{i:x}"),
            cert_not_after: 1_900_000_000,
            cert_issuer: String::new(),
            availability: Default::default(),
            ready,
        })
        .collect()
}

/// The multi-threaded tokio runtime a benchmark runs its cluster on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Writes `cmd` through `raft` (the leader's handle) and fails unless it
/// was committed and applied.
pub(crate) async fn write(raft: &Raft, cmd: Command) -> Result<()> {
    let resp = raft
        .client_write(cmd)
        .await
        .map_err(|e| anyhow!("client_write: {e}"))?;
    ensure!(
        resp.data == Response::Applied,
        "write refused: {:?}",
        resp.data
    );
    Ok(())
}

/// Shuts down `managers` and removes their stores' directory `root`.
pub(crate) async fn stop(managers: Vec<RaftManager>, root: tempfile::TempDir) -> Result<()> {
    for m in managers {
        m.shutdown().await;
    }
    root.close().context("removing the run's store directories")
}
