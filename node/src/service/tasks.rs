//! `task_sync`: a node reports the states of the tasks it holds and learns
//! what it must run or stop. Level-triggered: each call carries every
//! task's current state, so a lost call costs nothing but time, and a
//! node back from a partition converges on its first call.
//!
//! The leader proposes only what changes the store (one entry per call,
//! whatever the number of tasks in it), then answers with the node's
//! assignments; if they are the ones the node already has (`known`), it
//! waits up to `wait_ms` for the store to change them (a long poll, so a
//! placement reaches its node within one Raft commit, without polling).

use std::time::Duration;

use moat_orchestrator::Assignment;
use moat_pki::NodeId;
use moat_store::model::Command;
use moat_transport::Caller;

use super::authz::{member, require_leader};
use crate::member::{Manager, Member};
use crate::rpc::{self, RpcError, RpcErrorKind, method};

/// Most task reports one call may carry.
pub(crate) const MAX_REPORTS: usize = 10_000;
/// Longest a call waits for its assignments to change.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(15);

/// The RPC: a member, for itself, on the leader.
pub(crate) async fn task_sync(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::TaskSyncResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::TaskSyncReq = rpc::decode(method::TASK_SYNC, data)?;
    require_leader(node, m)?;
    sync(node, m, id, req).await
}

/// The leader's side of a sync, for node `id` (a remote caller, or the
/// leader's own executor).
pub(crate) async fn sync(
    node: &Member,
    m: &Manager,
    id: NodeId,
    req: rpc::TaskSyncReq,
) -> Result<rpc::TaskSyncResp, RpcError> {
    if req.reports.len() > MAX_REPORTS {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            format!(
                "{} task reports in one call; at most {MAX_REPORTS}",
                req.reports.len()
            ),
        ));
    }
    let me = id.to_string();
    let changed = m.with_state(|s| Ok(s.orchestrator.reports_to_propose(&me, req.reports)))?;
    if !changed.is_empty() {
        node.propose(Command::orchestrate(
            moat_orchestrator::Command::ReportTasks {
                node: me.clone(),
                reports: changed,
                now: node.clock.unix_ms(),
            },
        ))
        .await?;
    }
    let wait = Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = m.orchestration_changes();
    let mut first = true;
    let answer = |log_requests| -> Result<rpc::TaskSyncResp, RpcError> {
        let assignments = m.with_state(|s| Ok(s.orchestrator.assignments_for(&me)))?;
        Ok(rpc::TaskSyncResp {
            digest: digest(&assignments),
            assignments,
            log_requests,
        })
    };
    loop {
        // Registered before looking, so a request queued in between
        // still wakes this call.
        let queued = m.logs.queued();
        tokio::pin!(queued);
        queued.as_mut().enable();
        let log_requests = m.logs.take_for(&me);
        if !log_requests.is_empty() {
            return answer(log_requests);
        }
        if first || changes.has_changed().unwrap_or(true) {
            first = false;
            changes.borrow_and_update();
            let resp = answer(Vec::new())?;
            if req.known.as_deref() != Some(resp.digest.as_str())
                || tokio::time::Instant::now() >= deadline
                || !m.is_leader(node.id)
            {
                return Ok(resp);
            }
        }
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                if !matches!(changed, Ok(Ok(()))) {
                    // The deadline, or Raft stopping: answer with what
                    // is known.
                    return answer(m.logs.take_for(&me));
                }
            }
            () = &mut queued => {}
        }
    }
}

/// `task_secrets`: a node asks for the secrets and configs of one of its
/// tasks.
pub(crate) async fn task_secrets(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::TaskSecretsResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::TaskSecretsReq = rpc::decode(method::TASK_SECRETS, data)?;
    require_leader(node, m)?;
    secrets(node, m, id, &req.task_id).await
}

/// The leader's side of `task_secrets`, for node `id` (a remote caller,
/// or the leader's own executor): the files of task `task_id`, only while
/// it is assigned to `id`, is to run and has not ended. A refusal is
/// audited (`secret.deny`: node, task, the secrets it uses, why), within a
/// per-node rate limit (see `refusals`).
pub(crate) async fn secrets(
    node: &Member,
    m: &Manager,
    id: NodeId,
    task_id: &str,
) -> Result<rpc::TaskSecretsResp, RpcError> {
    check_task_id(task_id)?;
    let me = id.to_string();
    let found = m.with_state(|s| {
        let o = &s.orchestrator;
        Ok(match o.task_files(task_id, &me) {
            Ok(files) => Ok(files
                .into_iter()
                .map(|(r, v)| moat_executor::TaskFile {
                    kind: r.kind,
                    target: r.target.clone(),
                    mode: r.mode,
                    data: v.data.clone(),
                })
                .collect::<Vec<_>>()),
            Err(reason) => {
                let names: Vec<String> = o
                    .tasks
                    .get(task_id)
                    .map(|t| {
                        t.spec
                            .secrets
                            .iter()
                            .map(|r| format!("{}:{}", r.kind, r.name))
                            .collect()
                    })
                    .unwrap_or_default();
                Err((reason, names))
            }
        })
    })?;
    match found {
        Ok(files) => {
            tracing::debug!(node = %id, task = task_id, files = files.len(), "secrets handed to the task's node");
            Ok(rpc::TaskSecretsResp { files })
        }
        Err((reason, names)) => {
            tracing::warn!(node = %id, task = task_id, %reason, "a request for a task's secrets was refused");
            Err(refuse(
                node,
                m,
                id,
                moat_audit::Action::SECRET_DENY,
                task_id,
                ("secrets", names.join(",")),
                reason,
            )
            .await)
        }
    }
}

/// A task id as a request may name one: 1 to 128 bytes (checked before
/// the store is read).
fn check_task_id(task_id: &str) -> Result<(), RpcError> {
    if task_id.is_empty() || task_id.len() > 128 {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            "a task id has 1 to 128 bytes",
        ));
    }
    Ok(())
}

/// A refused request of node `id` about task `task_id`, audited as
/// `action` (with `detail`) within the per-node rate limit (see
/// `refusals`).
async fn refuse(
    node: &Member,
    m: &Manager,
    id: NodeId,
    action: moat_audit::Action,
    task_id: &str,
    detail: (&str, String),
    reason: String,
) -> RpcError {
    let verdict = m
        .denials
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(id, node.clock.instant());
    if let Some(suppressed_before) = verdict {
        let mut ev = node
            .ev(
                moat_audit::Actor::node(id),
                action,
                format!("task:{task_id}"),
            )
            .detail("node", id)
            .detail(detail.0, detail.1);
        if suppressed_before > 0 {
            ev = ev.detail("suppressed_before", suppressed_before);
        }
        node.record_or_log(ev.denied(&reason)).await;
    }
    RpcError::new(RpcErrorKind::Denied, reason)
}

/// `task_identity`: a node asks for a workload certificate for one of its
/// tasks.
pub(crate) async fn task_identity(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::TaskIdentityResp, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::TaskIdentityReq = rpc::decode(method::TASK_IDENTITY, data)?;
    require_leader(node, m)?;
    identity(node, m, id, req).await
}

/// The leader's side of `task_identity`, for node `id` (a remote caller,
/// or the leader's own executor): an X.509-SVID for the key in the
/// request, only while task `task_id` is assigned to `id`, is to run, has
/// not ended and its service has an identity. The certificate is recorded
/// on the task (serial, expiry, issuer); a task's first certificate, and
/// its first from a new root, also get an audit record (`identity.issue`);
/// a refusal is audited (`identity.deny`) as `task_secrets`' are.
pub(crate) async fn identity(
    node: &Member,
    m: &Manager,
    id: NodeId,
    req: rpc::TaskIdentityReq,
) -> Result<rpc::TaskIdentityResp, RpcError> {
    let task_id = req.task_id.as_str();
    check_task_id(task_id)?;
    if req.csr_pem.len() > moat_pki::MAX_CSR_BYTES * 2 {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            format!(
                "the certificate request is {} bytes; at most {} are read",
                req.csr_pem.len(),
                moat_pki::MAX_CSR_BYTES * 2
            ),
        ));
    }
    let me = id.to_string();
    let now = node.clock.now();
    let issued = m.with_state(|s| {
        let (service, spec) = match s.orchestrator.task_identity(task_id, &me) {
            Ok(found) => found,
            Err(reason) => return Ok(Err(reason)),
        };
        let before = s
            .orchestrator
            .tasks
            .get(task_id)
            .and_then(|t| t.identity.as_ref())
            .map(|i| i.issuer.clone());
        Ok(Ok((
            crate::ca::issue_workload(s, task_id, service, spec, &req.csr_pem, now),
            before,
        )))
    })?;
    let ((resp, issuer), before) = match issued {
        Ok((done, before)) => (done?, before),
        Err(reason) => {
            tracing::warn!(node = %id, task = task_id, %reason, "a request for a task's identity was refused");
            return Err(refuse(
                node,
                m,
                id,
                moat_audit::Action::IDENTITY_DENY,
                task_id,
                ("reason", reason.clone()),
                reason,
            )
            .await);
        }
    };
    // A task's first certificate, and the first from a new root, are
    // audited; a renewal under the same root is only recorded on the task
    // (the audit log grows with tasks started, not with time).
    let audited = before.as_deref() != Some(issuer.as_str());
    let ev = node
        .ev(
            moat_audit::Actor::node(id),
            moat_audit::Action::IDENTITY_ISSUE,
            format!("task:{task_id}"),
        )
        .detail("node", id)
        .detail("spiffe_id", &resp.spiffe_id)
        .detail("serial", &resp.serial)
        .detail("not_after", moat_store::model::rfc3339(resp.not_after))
        .detail("issuer", &issuer);
    let record = Command::orchestrate(moat_orchestrator::Command::RecordIdentity {
        task: task_id.to_owned(),
        node: me,
        identity: moat_orchestrator::TaskIdentity {
            serial: resp.serial.clone(),
            not_after: resp.not_after,
            issuer,
        },
    });
    if audited {
        node.propose_audited(record, ev).await?;
    } else {
        node.propose(record).await?;
    }
    tracing::debug!(node = %id, task = task_id, serial = %resp.serial, "workload certificate issued");
    Ok(resp)
}

/// `task_logs`: a node's answer to a log request made of it.
pub(crate) fn task_logs(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::Nothing, RpcError> {
    let (id, _) = member(m, caller)?;
    let req: rpc::TaskLogsReq = rpc::decode(method::TASK_LOGS, data)?;
    require_leader(node, m)?;
    answer_logs(m, id, req);
    Ok(rpc::Nothing {})
}

/// Hands node `id`'s answer to the request it answers (if that request
/// was made of it), cut to the relay's limit.
pub(crate) fn answer_logs(m: &Manager, id: NodeId, req: rpc::TaskLogsReq) {
    let output = req
        .output
        .map(|o| crate::logs::tail_text(o.as_bytes(), crate::logs::MAX_LOG_BYTES))
        .map_err(|e| crate::logs::tail_text(e.as_bytes(), 1024));
    if !m.logs.answer(&id.to_string(), req.id, output) {
        tracing::debug!(node = %id, request = req.id, "a log answer nobody waits for (late, or not this node's)");
    }
}

/// `gather_logs`: a manager asks the leader for tasks' output.
pub(crate) async fn gather_logs(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::GatherLogsResp, RpcError> {
    super::authz::manager_member(m, caller)?;
    let req: rpc::GatherLogsReq = rpc::decode(method::GATHER_LOGS, data)?;
    require_leader(node, m)?;
    Ok(gather(m, req).await)
}

/// Most tasks one `service logs` gathers.
pub(crate) const MAX_GATHER: usize = 1000;

/// The leader gathers: asks every task's node at once, waits for each up
/// to [`crate::logs::WAIT`].
pub(crate) async fn gather(m: &Manager, req: rpc::GatherLogsReq) -> rpc::GatherLogsResp {
    let waits: Vec<_> = req
        .tasks
        .iter()
        .take(MAX_GATHER)
        .map(|t| {
            (
                t.node_id.clone(),
                m.logs.request(&t.node_id, &t.task_id, req.tail_bytes),
            )
        })
        .collect();
    let mut outputs = Vec::with_capacity(waits.len());
    for (node, wait) in waits {
        outputs.push(match wait {
            Err(e) => Err(e),
            Ok(rx) => match tokio::time::timeout(crate::logs::WAIT, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(format!("node {node} did not answer")),
                Err(_) => Err(format!(
                    "node {node} did not send the output within {} s (is it up? `moat node ls`)",
                    crate::logs::WAIT.as_secs()
                )),
            },
        });
    }
    rpc::GatherLogsResp { outputs }
}

/// A digest of a node's assignments (SHA-256 of their JSON, hex).
pub(crate) fn digest(assignments: &[Assignment]) -> String {
    let json = serde_json::to_vec(assignments).unwrap_or_default();
    let d = ring::digest::digest(&ring::digest::SHA256, &json);
    data_encoding::HEXLOWER.encode(d.as_ref())
}
