//! Shared setup for the in-process manager tests: certificates, stores,
//! managers on loopback, and bulk writes.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moat_lock::{KeySource, UnlockKey};
use moat_node::{RaftManager, raft_config};
use moat_pki::{
    CertExpiry, ClusterId, Credentials, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role,
    RootCa, RootOptions, TlsContext, TrustRoots,
};
use moat_store::OpenStore;
use moat_store::model::{ClusterState, Command, NodeRecord};
use tokio::net::TcpListener;

pub(crate) struct Member {
    pub(crate) id: NodeId,
    pub(crate) dir: PathBuf,
    pub(crate) key: UnlockKey,
    pub(crate) tls: Arc<TlsContext>,
}

/// Snapshots often and keeps no log behind them, so a manager that was
/// away must catch up by installing a snapshot.
pub(crate) fn config() -> openraft::Config {
    openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..raft_config()
    }
}

pub(crate) fn members(n: usize, root: &tempfile::TempDir) -> (ClusterId, Vec<Member>) {
    let cluster = ClusterId::generate();
    let now = OffsetDateTime::now_utc();
    let ca = RootCa::generate(cluster, &RootOptions::default(), now).unwrap();
    let roots = TrustRoots::new(vec![ca.certificate().clone()]).unwrap();
    let members = (0..n)
        .map(|i| {
            let id = NodeId::generate();
            let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
            let cert = ca
                .sign_csr(
                    key.csr().unwrap().as_ref(),
                    id,
                    Role::Manager,
                    CertExpiry::DEFAULT,
                    now,
                )
                .unwrap();
            let tls = TlsContext::new(cluster, roots.clone());
            tls.set_credentials(
                Credentials {
                    chain: vec![cert.der],
                    key,
                },
                now,
            )
            .unwrap();
            let dir = root.path().join(format!("manager-{i}"));
            let unlock = UnlockKey::generate().unwrap();
            OpenStore::create(&dir, KeySource::Key(&unlock), cluster, id).unwrap();
            Member {
                id,
                dir,
                key: unlock,
                tls,
            }
        })
        .collect();
    (cluster, members)
}

pub(crate) async fn start(m: &Member, listener: TcpListener) -> RaftManager {
    let store = OpenStore::open(&m.dir, KeySource::Key(&m.key)).unwrap();
    RaftManager::start(m.id, store, m.tls.clone(), listener, config())
        .await
        .unwrap()
}

pub(crate) fn record(i: u32) -> NodeRecord {
    NodeRecord {
        id: NodeId::generate(),
        hostname: format!("host-{i}"),
        role: Role::Worker,
        address: String::new(),
        labels: BTreeMap::from([("seq".to_string(), i.to_string())]),
        cert_serial: format!("{i:x}"),
        cert_not_after: 0,
        cert_issuer: String::new(),
        availability: Default::default(),
        ready: false,
    }
}

/// Writes `count` commands through `leader` with 64 writers in flight and
/// returns the ids of the nodes whose write was acknowledged.
pub(crate) async fn write(leader: &RaftManager, from: u32, count: u32) -> Vec<NodeId> {
    let next = Arc::new(std::sync::atomic::AtomicU32::new(from));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let raft = leader.raft.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= from + count {
                    return acked;
                }
                let r = record(i);
                let id = r.id;
                let resp = raft.client_write(Command::PutNode(r)).await.unwrap();
                assert_eq!(resp.data, moat_store::model::Response::Applied);
                acked.push(id);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

pub(crate) async fn leader_among(managers: &[&RaftManager], not: Option<NodeId>) -> NodeId {
    for _ in 0..200 {
        for m in managers {
            let metrics = m.raft.metrics().borrow().clone();
            if let Some(l) = metrics.current_leader
                && Some(l) != not
                && managers.iter().any(|x| x.id == l)
            {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader elected within 20 s");
}

pub(crate) async fn wait_applied(m: &RaftManager, index: u64) {
    m.raft
        .wait(Some(Duration::from_secs(60)))
        .applied_index_at_least(Some(index), "catch up")
        .await
        .unwrap_or_else(|e| panic!("{} did not reach index {index}: {e}", m.id));
}

pub(crate) fn state(m: &RaftManager) -> ClusterState {
    m.applied.read().unwrap().state.clone()
}
