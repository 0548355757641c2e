//! Workload identity: every task of a service with an identity gets an
//! X.509-SVID (`spiffe://<cluster>/service/<name>`) from the cluster CA.
//!
//! * The task's node makes an ECDSA P-256 key (it never leaves the node)
//!   and sends a CSR with `task_identity` over its mutual-TLS session; the
//!   leader checks that the task is assigned to that node, is to run and
//!   has not ended ([`moat_orchestrator::State::task_identity`]), issues
//!   (`ca::issue_workload`), and records the certificate on the task
//!   (`service::tasks::identity`); the node checks what it gets
//!   (`rpc::TaskIdentityResp::check`, `moat_pki::verify_workload`).
//! * The node hands the certificate, key and bundle to its executor, which
//!   writes them into the task's secrets directory and serves them on the
//!   task's Workload API socket (moat-workload).
//! * [`run`] renews each certificate at half its life, and at once when
//!   the roots this node trusts change (a CA rotation), or when a task
//!   adopted after a restart has no identity served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moat_executor::{Executor, WorkloadIdentity};
use moat_orchestrator::{Assignment, TaskState};
use moat_pki::{KeyAlgorithm, PrivateKey};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::member::Member;
use crate::rpc::{self, RpcError, RpcErrorKind, method};

/// How often the renewal loop looks at the tasks' identities.
const TICK: Duration = Duration::from_secs(1);
/// After a failed renewal, the next try of that task waits this long.
const RETRY: Duration = Duration::from_secs(5);

fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(RpcErrorKind::Internal, e.to_string())
}

/// The node's part: a new key for task `task_id`, certified by the
/// leader; renewal due at half its life from `now`.
pub(crate) async fn fetch(node: &Member, task_id: &str) -> Result<WorkloadIdentity, RpcError> {
    let node_roots_pem = node.tls.roots().to_pem();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).map_err(internal)?;
    let csr = key.csr().map_err(internal)?;
    let req = rpc::TaskIdentityReq {
        task_id: task_id.to_owned(),
        csr_pem: moat_pki::csr_pem(csr.as_ref()),
    };
    let resp = if let Some(m) = node.manager()
        && m.is_leader(node.id)
    {
        crate::service::tasks::identity(node, &m, node.id, req).await?
    } else {
        node.call_leader(method::TASK_IDENTITY, &req, rpc::CALL_TIMEOUT)
            .await?
    };
    let (chain, roots) = resp.check()?;
    if roots.cluster_id().ok() != Some(node.cluster)
        || !resp
            .spiffe_id
            .starts_with(&format!("spiffe://{}/service/", node.cluster))
    {
        return Err(RpcError::new(
            RpcErrorKind::Internal,
            "the leader sent an identity of another cluster",
        ));
    }
    moat_pki::verify_workload(
        &chain,
        &roots,
        &key,
        task_id,
        &resp.spiffe_id,
        node.clock.now(),
    )
    .map_err(|e| {
        RpcError::new(
            RpcErrorKind::Internal,
            format!("the leader sent a workload certificate this node refuses: {e}"),
        )
    })?;
    let key_der = key.to_pkcs8_der();
    let key_pem = Zeroizing::new(moat_pki::pem_encode("PRIVATE KEY", &key_der));
    let svid = moat_workload::Svid::new(
        resp.spiffe_id.clone(),
        chain.iter().map(|c| c.to_vec()).collect(),
        key_der,
        roots.certs().iter().map(|c| c.to_vec()).collect(),
    )
    .map_err(internal)?;
    let now = node.clock.unix();
    Ok(WorkloadIdentity {
        serial: resp.serial,
        not_after: resp.not_after,
        renew_at: now + (resp.not_after - now).max(0) / 2,
        cert_pem: resp.chain_pem,
        key_pem,
        bundle_pem: roots.to_pem(),
        svid,
        node_roots_pem,
    })
}

/// Keeps the identities of this node's live tasks current: renews each
/// at half its life, when the roots this node trusts are no longer those
/// it was issued with, and when a task has none served (adopted after a
/// restart). `assignments` is the node's latest list. Runs until the
/// node is faulted.
pub(crate) async fn run(
    node: Arc<Member>,
    exec: Arc<Executor>,
    mut assignments: watch::Receiver<Vec<Assignment>>,
) {
    let mut retry_at: BTreeMap<String, i64> = BTreeMap::new();
    loop {
        if node.fault().is_some() {
            return;
        }
        let due: Vec<String> = {
            let now = node.clock.unix();
            let roots = node.tls.roots().to_pem();
            let list = assignments.borrow_and_update();
            list.iter()
                .filter(|a| a.desired_state == TaskState::Running && a.spec.identity.is_some())
                .filter(|a| retry_at.get(&a.task_id).is_none_or(|t| now >= *t))
                .filter(|a| match exec.identity_status(&a.task_id) {
                    // None served: a task adopted after a restart (one
                    // still starting gets its first from its start).
                    None => exec.state_of(&a.task_id) == Some(TaskState::Running),
                    Some(s) => {
                        exec.is_live(&a.task_id) && (now >= s.renew_at || s.node_roots_pem != roots)
                    }
                })
                .map(|a| a.task_id.clone())
                .collect()
        };
        retry_at.retain(|task, _| due.contains(task) || exec.is_live(task));
        for task in due {
            let renewed = match fetch(&node, &task).await {
                Ok(identity) => {
                    let serial = identity.serial.clone();
                    exec.renew_identity(&task, identity)
                        .await
                        .map(|()| serial)
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match renewed {
                Ok(serial) => {
                    tracing::info!(task = %task, serial = %serial, "workload certificate renewed");
                    retry_at.remove(&task);
                }
                Err(error) => {
                    tracing::warn!(task = %task, %error, "renewing a task's workload certificate failed; it keeps the one it has and tries again");
                    let secs = i64::try_from(RETRY.as_secs()).unwrap_or(5);
                    retry_at.insert(task, node.clock.unix() + secs);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            changed = assignments.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
