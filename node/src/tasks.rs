//! Every member's task loop: its executor (moat-executor) runs what the
//! cluster assigns to this node, and the loop keeps the two in step over
//! the node's mutual-TLS session with the leader (`task_sync`).
//!
//! A node that reaches no manager keeps its tasks running, as Docker's
//! workers do; it stops or starts nothing until the leader answers again.
//! A daemon that restarts finds the tasks it started before (they outlive
//! it in their own process groups or containers) and reports them on its
//! first call; the answer says which to keep.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moat_executor::{Executor, ExecutorConfig, TaskMaterial};
use moat_orchestrator::{Assignment, TaskState};
use tokio::sync::watch;

use crate::member::Member;
use crate::rpc::{self, RpcError, method};

/// How long a sync waits at the leader for new assignments.
const LONG_POLL: Duration = Duration::from_secs(15);
/// Reports that change within this of each other go in one call.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Backoff after a failed call: from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How this node runs tasks (`moat daemon` options).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `--docker-host`.
    pub(crate) docker_host: Option<String>,
    /// `--secrets-dir`.
    pub(crate) secrets_dir: Option<PathBuf>,
}

/// Opens this node's executor and keeps it in step with the cluster until
/// the node is faulted or the task is aborted (its tasks keep running).
pub(crate) async fn run(node: Arc<Member>, settings: Settings) {
    let config = ExecutorConfig {
        dir: node.layout.tasks_dir(),
        node_id: node.id.to_string(),
        docker_host: settings.docker_host,
        secrets_dir: settings.secrets_dir,
    };
    let exec = match Executor::open(config).await {
        Ok(exec) => exec,
        Err(e) => {
            tracing::error!(error = %e, "the task executor could not start: this node runs no tasks until its daemon is restarted");
            return;
        }
    };
    let exec = Arc::new(exec);
    node.set_executor(exec.clone());
    let (assigned, assignments) = watch::channel(Vec::new());
    tokio::spawn(crate::identity::run(
        node.clone(),
        exec.clone(),
        assignments,
    ));
    let mut changes = exec.subscribe();
    let mut known: Option<String> = None;
    let mut retry = RETRY_FIRST;
    loop {
        if node.fault().is_some() {
            return;
        }
        changes.borrow_and_update();
        let req = rpc::TaskSyncReq {
            reports: exec.reports(),
            known: known.clone(),
            wait_ms: u64::try_from(LONG_POLL.as_millis()).unwrap_or(u64::MAX),
        };
        let asked = tokio::time::Instant::now();
        tokio::select! {
            answer = sync(&node, req) => match answer {
                Ok(resp) => {
                    // Back early with nothing new for this node: the
                    // manager answering stopped leading, and every node's
                    // poll came back at the same moment. Spread the
                    // reconnections to the new leader over a heartbeat
                    // period (10,000 nodes at once made a new leader miss
                    // its own Raft heartbeats, D46).
                    let early = asked.elapsed() + EARLY_SLACK < LONG_POLL;
                    if early && resp.log_requests.is_empty() && known.as_deref() == Some(resp.digest.as_str()) {
                        spread(&mut changes, node.pace()).await;
                    }
                    let material = fetch_material(&node, &exec, &resp.assignments).await;
                    exec.apply_with(&resp.assignments, material).await;
                    assigned.send_replace(resp.assignments.clone());
                    known = Some(resp.digest);
                    retry = RETRY_FIRST;
                    if !resp.log_requests.is_empty() {
                        tokio::spawn(send_logs(node.clone(), exec.clone(), resp.log_requests));
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "task sync failed; tasks keep running as they are");
                    tokio::time::sleep(retry / 2 + jitter(retry / 2)).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            },
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // A task changed state: report it now (with whatever else
                // changes in the next few milliseconds).
                tokio::time::sleep(DEBOUNCE).await;
            }
        }
    }
}

/// A poll that came back sooner than this before its deadline was cut
/// short (a leader change, or a change for this node).
const EARLY_SLACK: Duration = Duration::from_secs(1);

/// A random wait in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand_core::RngCore::next_u64(&mut rand_core::OsRng) % ms)
}

/// Waits a random part of `pace`, or until a local task changes state
/// (its report is not held back).
async fn spread(changes: &mut watch::Receiver<u64>, pace: Duration) {
    tokio::select! {
        () = tokio::time::sleep(jitter(pace)) => {}
        _ = changes.changed() => {}
    }
}

/// What the tasks about to start need (those to run that the executor
/// does not hold yet and whose spec names secrets or configs or has an
/// identity), from the leader, or why it could not be had: the secrets
/// are held in memory until the executor writes them to its tmpfs; the
/// identity's key is made here. Asked for all tasks at once.
async fn fetch_material(
    node: &Member,
    exec: &Executor,
    assignments: &[Assignment],
) -> BTreeMap<String, Result<TaskMaterial, String>> {
    let wanted = assignments.iter().filter(|a| {
        a.desired_state == TaskState::Running
            && (!a.spec.secrets.is_empty() || a.spec.identity.is_some())
            && !exec.holds(&a.task_id)
    });
    let fetches = wanted.map(|a| async move {
        let files = if a.spec.secrets.is_empty() {
            Ok(Vec::new())
        } else {
            fetch_one(node, &a.task_id)
                .await
                .map(|resp| resp.files)
                .map_err(|e| e.message)
        };
        let material = match files {
            Err(e) => Err(e),
            Ok(files) => match a.spec.identity {
                None => Ok(TaskMaterial {
                    files,
                    identity: None,
                }),
                Some(_) => crate::identity::fetch(node, &a.task_id)
                    .await
                    .map(|identity| TaskMaterial {
                        files,
                        identity: Some(identity),
                    })
                    .map_err(|e| format!("its workload certificate: {}", e.message)),
            },
        };
        (a.task_id.clone(), material)
    });
    futures_util::future::join_all(fetches)
        .await
        .into_iter()
        .collect()
}

async fn fetch_one(node: &Member, task_id: &str) -> Result<rpc::TaskSecretsResp, RpcError> {
    if let Some(m) = node.manager()
        && m.is_leader(node.id)
    {
        return crate::service::tasks::secrets(node, &m, node.id, task_id).await;
    }
    let req = rpc::TaskSecretsReq {
        task_id: task_id.to_owned(),
    };
    node.call_leader(method::TASK_SECRETS, &req, rpc::CALL_TIMEOUT)
        .await
}

/// Answers the leader's requests for task output, each with `task_logs`.
async fn send_logs(node: Arc<Member>, exec: Arc<Executor>, requests: Vec<crate::logs::LogRequest>) {
    for r in requests {
        let output = exec
            .logs(&r.task_id, Some(r.tail_bytes))
            .await
            .map(|bytes| crate::logs::tail_text(&bytes, r.tail_bytes))
            .map_err(|e| e.to_string());
        let req = rpc::TaskLogsReq { id: r.id, output };
        if let Some(m) = node.manager()
            && m.is_leader(node.id)
        {
            crate::service::tasks::answer_logs(&m, node.id, req);
            continue;
        }
        let sent: Result<rpc::Nothing, RpcError> = node
            .call_leader(method::TASK_LOGS, &req, rpc::CALL_TIMEOUT)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, task = %r.task_id, "sending a task's output to the leader failed");
        }
    }
}

/// One sync with the leader: in process when this node leads.
async fn sync(node: &Member, req: rpc::TaskSyncReq) -> Result<rpc::TaskSyncResp, RpcError> {
    if let Some(m) = node.manager()
        && m.is_leader(node.id)
    {
        return crate::service::tasks::sync(node, &m, node.id, req).await;
    }
    node.call_leader(method::TASK_SYNC, &req, LONG_POLL + rpc::CALL_TIMEOUT)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_below_its_bound_and_varies() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        let bound = Duration::from_millis(1_000);
        let waits: std::collections::BTreeSet<Duration> = (0..64).map(|_| jitter(bound)).collect();
        assert!(waits.iter().all(|w| *w < bound), "{waits:?}");
        // 64 draws from 1,000 values: a constant would be one value.
        assert!(waits.len() > 32, "{waits:?}");
    }
}
