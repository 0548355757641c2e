//! `moat init --force-new-cluster`: a manager restored from a backup, or
//! the survivor of a lost quorum, becomes the only voter of its cluster,
//! keeping every committed object; the other managers are evicted. Only
//! for a quorum that is gone: a cluster that can still commit is refused.

use std::net::SocketAddr;
use std::time::Duration;

use moat_api::{ErrorKind, InitRequest, InitResponse, SecretString};
use moat_pki::Role;
use moat_store::model::Command;

use super::{Daemon, Phase, resume_dek_rotation};
use crate::addr::{advertise_addr, normalize_listen};
use crate::error::NodeError;
use crate::faults::{locked_error, not_in_cluster, restored_fault};
use crate::journal::{JournalAction, JournalActor, JournalEvent};
use crate::member::operator;
use crate::rpc::{self};

/// How long `init --force-new-cluster` tries to reach a quorum before it
/// concludes that the quorum is lost.
const FORCE_QUORUM_PROBE: Duration = Duration::from_secs(3);

impl Daemon {
    /// `moat init --force-new-cluster`: this manager (restored from a
    /// backup, or the survivor of a lost quorum) becomes the only voter of
    /// its cluster, keeping every committed object, at the addresses
    /// given (default: its own).
    pub(super) async fn force_new_cluster(
        &self,
        req: InitRequest,
    ) -> Result<InitResponse, NodeError> {
        if self.locked().await.is_some() {
            return Err(locked_error());
        }
        let node = self.node().await.ok_or_else(|| {
            not_in_cluster().hint("to recover a cluster from a backup, lay it out first with `moat restore FILE --state-dir DIR`, start `moat daemon --state-dir DIR`, then run this again")
        })?;
        if !node.layout.store_dir().join("store.json").exists() {
            return Err(NodeError::new(
                ErrorKind::FailedPrecondition,
                "only a manager can force a new cluster; this node is a worker",
            )
            .hint("run it on a manager, or on a manager restored with `moat restore`"));
        }
        if req.autolock || req.cert_expiry_seconds.is_some() {
            return Err(NodeError::new(
                ErrorKind::InvalidArgument,
                "--autolock and --cert-expiry cannot be combined with --force-new-cluster: the cluster keeps its settings",
            )
            .hint("change them afterwards with `moat update`"));
        }
        // Only for a quorum that is gone: a cluster that can still commit
        // is changed with demote and rm, never by forking it.
        if node.fault().is_none()
            && node.manager().is_some()
            && let Ok(Ok(_)) = tokio::time::timeout(FORCE_QUORUM_PROBE, node.read_state()).await
        {
            return Err(NodeError::new(
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
                    NodeError::new(ErrorKind::InvalidArgument, format!("{listen}: {e}"))
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
        let now = self.clock.now();
        if node.tls.identity().is_none_or(|i| i.not_after <= now) {
            let identity = node.self_renew().await?;
            tracing::warn!(not_after = %identity.not_after, "this manager's certificate had expired; issued itself a new one from the cluster CA");
        }
        // Until the rewrite below is complete, a restart waits for this
        // command to be run again instead of starting half-rewritten.
        node.update_node_file(|f| f.restored = true)?;
        node.set_fault(restored_fault());
        let was_restored = file.restored;
        let forced = {
            let kek = node.keyring().hold().kek();
            moat_store::offline::force_single_voter(
                &node.layout.store_dir(),
                moat_lock::KeySource::Key(&kek),
                node.id,
                &advertise,
            )
            .await
            .map_err(|e| {
                NodeError::new(
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
        crate::roles::start_manager(&node, &listen).await?;
        let m = node.require_manager()?;
        m.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(node.id, "this manager to lead the forced new cluster")
            .await
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let state = node.read_state().await.map_err(NodeError::from)?;
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
            node.ev(operator(), action, format!("node:{}", node.id))
                .detail("from_index", forced.index)
                .detail("from_term", forced.term)
                .detail("dropped_entries", forced.dropped_entries)
                .detail("managers_evicted", evicted)
                .detail("address", &advertise),
        )
        .await
        .map_err(NodeError::from)?;
        if let Some(record) = state.nodes.get(&node.id) {
            let mut record = record.clone();
            record.address = advertise.clone();
            record.hostname = self.hostname.clone();
            record.ready = true;
            node.propose(Command::PutNode(record))
                .await
                .map_err(NodeError::from)?;
        }
        resume_dek_rotation(&node);
        self.run_agent(node.clone()).await;
        node.journal(
            JournalEvent::new(JournalActor::LocalOperator, JournalAction::ForceNewCluster).note(
                format!(
                    "from log index {} (term {}); {} uncommitted entries dropped",
                    forced.index, forced.term, forced.dropped_entries
                ),
            ),
        );
        tracing::warn!(index = forced.index, addr = %advertise, dropped = forced.dropped_entries, "forced a new cluster with this manager as its only voter");
        let worker_token = state
            .join_tokens
            .as_ref()
            .map(|t| SecretString::new(t.worker.expose_secret().to_string()))
            .unwrap_or_default();
        Ok(InitResponse {
            node_id: node.id.to_string(),
            cluster_id: node.cluster.to_string(),
            advertise_addr: advertise,
            worker_token,
            unlock_key: None,
        })
    }
}
