//! Changes through the leader: proposals (forwarded, with an id so a
//! retry never applies twice), linearizable reads, and the membership
//! operations the leader runs (demote, remove, leave).

use std::sync::Arc;

use moat_pki::{NodeId, Role};
use moat_store::model::{ClusterState, Command, Response};

use super::{Manager, Member, read_index};
use crate::faults::not_a_manager;
use crate::rpc::{self, RpcError, RpcErrorKind, method};

/// Longest a change may wait to be committed before the operator is told
/// the cluster has no quorum (fail closed, bounded: a security change and
/// its audit record commit together or the command fails).
pub(crate) const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Member {
    /// Commits `command`, through the leader. On the leader it goes
    /// through the manager's proposer, which commits the proposals waiting
    /// together in one entry (decision D47): the answer, and any error,
    /// are this command's own.
    pub(crate) async fn propose(&self, command: Command) -> Result<(), RpcError> {
        if holds_batch(&command) {
            return Err(RpcError::new(
                RpcErrorKind::Invalid,
                "a batch of commands is made only by the leader's proposer, not proposed",
            ));
        }
        let m = self
            .manager
            .load_full()
            .ok_or_else(|| RpcError::from(not_a_manager()))?;
        if m.is_leader(self.id) {
            let write = tokio::time::timeout(COMMIT_WAIT, m.proposer().write(command.clone()));
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
        self.linearized().await?.local_state()
    }

    /// This manager, once it has applied up to the leader's commit point
    /// (confirmed with the leader): what it then reads under its state's
    /// lock (`Manager::with_state`) is linearizable, without the copy of
    /// the whole state `read_state` makes (10,000 node records for
    /// `node ls`).
    pub(crate) async fn linearized(&self) -> Result<Arc<Manager>, RpcError> {
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
        Ok(m)
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

    pub(crate) async fn run_admin(&self, m: &Manager, admin: rpc::Admin) -> Result<(), RpcError> {
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
                let until = record
                    .cert_not_after
                    .max(self.clock.unix().saturating_add(lifetime));
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
        m: &Manager,
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
            m.remove_voter(id).await?;
        }
        Ok(())
    }
}

fn applied(resp: Response) -> Result<(), RpcError> {
    match resp {
        Response::Applied => Ok(()),
        Response::Rejected(why) => Err(RpcError::new(RpcErrorKind::FailedPrecondition, why)),
        // Only a batch answers a batch, and none is proposed here.
        Response::Batch(_) => Err(RpcError::new(
            RpcErrorKind::Internal,
            "a single command was answered as a batch",
        )),
    }
}

/// Whether `command` is or wraps a batch, which only the leader's proposer
/// makes.
fn holds_batch(command: &Command) -> bool {
    match command {
        Command::Batch(_) => true,
        Command::Once { command, .. } => holds_batch(command),
        Command::Audited { change, .. } => holds_batch(change),
        _ => false,
    }
}
