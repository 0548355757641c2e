//! Calls a member makes to managers: the cache of verified connections,
//! and finding the leader (following "not leader" answers, waiting out an
//! election, telling "no quorum" from "no manager reachable").

use std::time::Duration;

use moat_transport::{ClusterClient, ServerTrust};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Member;
use crate::error::NodeError;
use crate::rpc::{self, Peer, RpcError, RpcErrorKind, method};

/// How long a manager waits for a leader to be elected before giving up on
/// a request.
const LEADER_WAIT: Duration = Duration::from_secs(10);

impl Member {
    async fn client(&self, addr: &str) -> Result<ClusterClient, RpcError> {
        if let Some(c) = self.clients.lock().ok().and_then(|c| c.get(addr).cloned()) {
            return Ok(c);
        }
        let client = ClusterClient::connect_from(
            addr,
            ServerTrust::Verified(self.tls.clone()),
            rpc::CONNECT_TIMEOUT,
            self.source.get().copied(),
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
        let deadline = self.clock.instant() + LEADER_WAIT;
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
            if self.clock.instant() >= deadline {
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

    /// Asks the leader to make this manager a voter, and waits until this
    /// node's Raft sees itself in the membership.
    pub(crate) async fn become_voter(&self, advertise: &str) -> Result<(), NodeError> {
        let req = rpc::AddVoterReq {
            addr: advertise.to_string(),
        };
        let _: rpc::Nothing = self
            .call_leader(method::ADD_VOTER, &req, rpc::SLOW_CALL_TIMEOUT)
            .await
            .map_err(NodeError::from)?;
        Ok(())
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
