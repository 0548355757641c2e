//! Taking up and leaving the manager role: opening the store, starting
//! Raft, the cluster listener and the housekeeping loops, and becoming a
//! voter; or stopping them and removing the store of a demoted manager.

use std::net::SocketAddr;
use std::sync::Arc;

use moat_api::ErrorKind;
use moat_pki::Role;
use moat_store::OpenStore;
use tokio::net::TcpListener;

use crate::error::NodeError;
use crate::member::{Manager, Member};
use crate::raft::{RaftManager, raft_config};

/// Opens (or creates) the store and starts Raft, the cluster listener on
/// `listen` and the housekeeping loops; returns the bound address.
pub(crate) async fn start_manager(
    node: &Arc<Member>,
    listen: &str,
) -> Result<SocketAddr, NodeError> {
    let store_dir = node.layout.store_dir();
    let store = node.keyring().with_source(|kek| {
        if store_dir.join("store.json").exists() {
            OpenStore::open(&store_dir, kek)
        } else {
            OpenStore::create(&store_dir, kek, node.cluster, node.id)
        }
    })
    .map_err(|e| {
        NodeError::new(ErrorKind::Internal, format!("opening the store: {e}"))
            .hint("run `moat store verify --state-dir DIR` on the stopped node to find the damage; restore from a backup if it is damaged")
    })?;
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        NodeError::new(
            ErrorKind::FailedPrecondition,
            format!("cannot listen on {listen}: {e}"),
        )
        .hint("pick a free address with --listen-addr")
    })?;
    let service = Arc::new(crate::service::Service(Arc::downgrade(node)));
    let raft = RaftManager::start_with(
        node.id,
        store,
        node.tls.clone(),
        listener,
        raft_config(),
        Some(service),
    )
    .await
    .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
    let addr = raft.addr;
    let m = Arc::new(Manager::new(raft, node.clock.clone()));
    crate::housekeeping::start(node, &m);
    crate::orchestrate::start(node, &m);
    node.set_manager(m);
    Ok(addr)
}

/// Starts or stops the manager side to match the certificate's role, and
/// makes sure a manager is a Raft voter.
pub(crate) async fn take_up_role(node: &Arc<Member>) -> Result<(), NodeError> {
    match (node.role(), node.manager()) {
        (Some(Role::Manager), None) => {
            let file = node.node_file();
            start_manager(node, &file.listen_addr).await?;
            node.become_voter(&file.advertise_addr).await?;
            tracing::info!("this node is now a manager");
        }
        // A manager that is not in its own membership either has not caught
        // up yet or never became a voter (a crash after it was admitted):
        // ask the leader, which does nothing if it already is.
        (Some(Role::Manager), Some(m)) if !m.voters().contains(&node.id) => {
            node.become_voter(&node.node_file().advertise_addr).await?;
        }
        (Some(Role::Worker), Some(_)) => {
            node.stop_manager().await;
            let dir = node.layout.store_dir();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "removing the store of a demoted manager failed");
            }
            tracing::info!("this node is now a worker");
        }
        _ => {}
    }
    Ok(())
}
