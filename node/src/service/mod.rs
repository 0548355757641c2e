//! The manager side of the cluster RPCs: who may call what, and what each
//! call does.
//!
//! | method      | caller                        | where   |
//! |-------------|-------------------------------|---------|
//! | ca_bundle   | anyone                        | any     |
//! | join        | anyone with a join token      | any     |
//! | renew       | any member                    | any     |
//! | heartbeat   | any member                    | leader  |
//! | propose     | managers                      | leader  |
//! | read_index  | managers                      | leader  |
//! | add_voter   | a manager (for itself)        | leader  |
//! | admin       | managers; any member to leave | leader  |
//! | task_sync   | any member, for itself        | leader  |
//! | task_logs   | any member, for itself        | leader  |
//! | gather_logs | managers                      | leader  |
//! | audit_records | managers                    | any     |
//!
//! "Member" means: the certificate verifies now against the cluster roots
//! and its node is not on the removed list. A removed node's calls are
//! refused on its next call, whatever its certificate says.

//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the dispatch of a call to its handler |
//! | `authz.rs` | who may call: certificate, removed list, role |
//! | `join.rs` | admitting a node with a join token (or a rejoin proof) |
//! | `members.rs` | the calls of members: renew, heartbeat, propose, read index, add voter, admin, forwarded journal events |
//! | `tasks.rs` | task states in, assignments out (`task_sync`) |

mod authz;
mod join;
mod members;
pub(crate) mod tasks;

use std::sync::Weak;

use moat_transport::{Caller, ClusterHandler, Status};

pub(crate) use members::heartbeat_answer;

use crate::member::Member;
use crate::rpc::{self, encode_answer, method};

/// The cluster service of one manager.
pub(crate) struct Service(pub(crate) Weak<Member>);

#[async_trait::async_trait]
impl ClusterHandler for Service {
    async fn call(&self, caller: Caller, method: &str, data: Vec<u8>) -> Result<Vec<u8>, Status> {
        let Some(node) = self.0.upgrade() else {
            return Err(Status::unavailable("this manager is shutting down"));
        };
        let Some(m) = node.manager() else {
            return Err(Status::unavailable("this node is no longer a manager"));
        };
        Ok(match method {
            // The CA's root, which join tokens pin (during a rotation this
            // node also trusts the new root; a joiner learns it later).
            // Read under the lock: anyone may ask, before every join.
            method::CA_BUNDLE => encode_answer(&m.with_state(|s| {
                let retired = s.retired_roots.len();
                Ok(rpc::CaBundle {
                    retired_roots_pem: s.retired_roots
                        [retired.saturating_sub(rpc::MAX_RETIRED_ROOTS_SERVED)..]
                        .to_vec(),
                    roots_pem: s
                        .ca
                        .as_ref()
                        .map(|c| c.root_cert_pem.clone())
                        .unwrap_or_else(|| node.tls.roots().to_pem()),
                })
            })),
            method::JOIN => encode_answer(&join::join(&node, &m, &caller, &data).await),
            method::RENEW => encode_answer(&members::renew(&node, &m, &caller, &data).await),
            method::HEARTBEAT => encode_answer(&members::heartbeat(&node, &m, &caller, &data)),
            method::PROPOSE => encode_answer(&members::propose(&node, &m, &caller, &data).await),
            method::READ_INDEX => {
                encode_answer(&members::read_index_call(&node, &m, &caller).await)
            }
            method::ADD_VOTER => {
                encode_answer(&members::add_voter(&node, &m, &caller, &data).await)
            }
            method::ADMIN => encode_answer(&members::admin(&node, &m, &caller, &data).await),
            method::AUDIT_FORWARD => {
                encode_answer(&members::audit_forward(&node, &m, &caller, &data).await)
            }
            method::TASK_SYNC => encode_answer(&tasks::task_sync(&node, &m, &caller, &data).await),
            method::TASK_LOGS => encode_answer(&tasks::task_logs(&node, &m, &caller, &data)),
            method::GATHER_LOGS => {
                encode_answer(&tasks::gather_logs(&node, &m, &caller, &data).await)
            }
            method::TASK_SECRETS => {
                encode_answer(&tasks::task_secrets(&node, &m, &caller, &data).await)
            }
            method::TASK_IDENTITY => {
                encode_answer(&tasks::task_identity(&node, &m, &caller, &data).await)
            }
            method::AUDIT_RECORDS => encode_answer(&audit_records(&node, &m, &caller, &data)),
            other => {
                return Err(Status::unimplemented(format!(
                    "unknown cluster method {other:?}"
                )));
            }
        })
    }
}

/// `audit_records`: a page of audit records for a manager filling a gap.
/// Managers only: workers never hold the log's records.
fn audit_records(
    node: &Member,
    m: &crate::member::Manager,
    caller: &moat_transport::Caller,
    data: &[u8],
) -> Result<rpc::AuditRecordsResp, rpc::RpcError> {
    let peer = authz::manager_member(m, caller)?;
    let req = rpc::decode(method::AUDIT_RECORDS, data)?;
    node.serve_audit_records(m, peer, req)
}
