//! `moat leave`: tells the cluster (a manager is demoted first, within
//! quorum rules), stops the node and wipes its state directory (the local
//! journal stays).

use std::time::Duration;

use moat_api::ErrorKind;

use super::{Daemon, Phase};
use crate::error::NodeError;
use crate::faults::not_in_cluster;
use crate::member::operator;
use crate::rpc::{self, RpcError, method};

/// How long `leave --force` waits for the cluster to confirm.
const FORCED_LEAVE_WAIT: Duration = Duration::from_secs(10);

impl Daemon {
    /// `moat leave`.
    pub(crate) async fn leave(&self, force: bool) -> Result<(), NodeError> {
        let _guard = self.lifecycle.lock().await;
        let node = self.node().await.ok_or_else(not_in_cluster)?;
        let faulted = node.fault().is_some();
        if !faulted {
            if let Some(m) = node.manager() {
                let voters = m.voters();
                if voters.len() <= 1 && !force {
                    return Err(NodeError::new(
                        ErrorKind::FailedPrecondition,
                        "You are attempting to leave the cluster on a node that is the last manager. Removing the last manager erases all current state of the cluster.",
                    )
                    .hint("use --force to ignore this message"));
                }
                if voters.len() > 1 {
                    let request =
                        node.admin(rpc::AdminReq::Leave { id: node.id, force }, operator());
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
                            return Err(NodeError::from(e).hint(
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
                            actor: operator().to_string(),
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
        // A node that left runs nothing for the cluster: its tasks stop
        // (the cluster replaces them elsewhere) before their records go.
        if let Some(exec) = node.executor() {
            exec.stop_all().await;
        }
        self.layout.wipe()?;
        tracing::info!(node = %node.id, "left the cluster");
        Ok(())
    }
}
