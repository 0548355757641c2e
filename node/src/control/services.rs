//! `moat service …` and `moat node ps`: services are created, changed and
//! removed through the Raft log, each change with its audit record; reads
//! are linearizable (what the leader has committed).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Json, State};
use moat_api::{
    ErrorKind, NodeRef, ServiceChanged, ServiceCreateRequest, ServiceInfo, ServiceRef,
    ServiceRemoveRequest, ServiceRemoveResponse, ServiceScaleRequest, ServiceUpdateRequest,
    TaskInfo, UpdateStatusInfo,
};
use moat_audit::Action;
use moat_orchestrator::{Command as Orch, Mode, Runtime, Service, Task, TaskState};
use moat_store::model::{ClusterState, Command, NodeRecord, rfc3339};

use super::answer::{Answer, manager};
use super::specs::{create_spec, failure_action_name, restart_condition_name, updated_spec};
use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::member::{Member, operator};

pub(super) async fn service_create(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceCreateRequest>,
) -> Answer<ServiceChanged> {
    let node = manager(&d).await?;
    let id = moat_pki::NodeId::generate().to_string();
    let state = node.read_state().await?;
    let spec = create_spec(&req, &id, &state.orchestrator)?;
    if state
        .orchestrator
        .services
        .values()
        .any(|s| s.spec.name == spec.name)
    {
        return Err(NodeError::new(
            ErrorKind::FailedPrecondition,
            format!("a service named {} already exists", spec.name),
        )
        .hint("choose another --name, or change the service with `moat service update`")
        .into());
    }
    let now = node.clock.unix_ms();
    let ev = node
        .ev(
            operator(),
            Action::SERVICE_CREATE,
            format!("service:{}", spec.name),
        )
        .detail("id", &id)
        .detail("mode", mode_name(spec.mode))
        .detail("replicas", replicas_text(spec.mode))
        .detail("runtime", spec.task.runtime)
        .detail("image", &spec.task.image);
    let ev = secrets_detail(ev, &spec.task.secrets);
    let name = spec.name.clone();
    node.propose_audited(
        Command::orchestrate(Orch::CreateService(Service {
            id: id.clone(),
            spec,
            previous_spec: None,
            version: 1,
            created_at: now,
            updated_at: now,
            update_status: None,
        })),
        ev,
    )
    .await?;
    tracing::info!(service = %name, %id, "service created");
    Ok(Json(ServiceChanged {
        id,
        name,
        version: 1,
        changed: true,
    }))
}

pub(super) async fn service_ls(State(d): State<Arc<Daemon>>) -> Answer<Vec<ServiceInfo>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    Ok(Json(
        state
            .orchestrator
            .services
            .values()
            .map(|s| service_info(&state, s))
            .collect(),
    ))
}

pub(super) async fn service_inspect(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceRef>,
) -> Answer<ServiceInfo> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let service = resolve(&state, &req.service)?;
    Ok(Json(service_info(&state, service)))
}

pub(super) async fn service_ps(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceRef>,
) -> Answer<Vec<TaskInfo>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let service = resolve(&state, &req.service)?;
    let tasks: Vec<&Task> = state.orchestrator.tasks_of(&service.id).collect();
    Ok(Json(task_infos(&state, tasks)))
}

pub(super) async fn node_ps(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NodeRef>,
) -> Answer<Vec<TaskInfo>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let id = super::nodes::resolve(&state, &req.node, node.id)?
        .id
        .to_string();
    let tasks: Vec<&Task> = state.orchestrator.tasks_on(&id).collect();
    Ok(Json(task_infos(&state, tasks)))
}

pub(super) async fn service_scale(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceScaleRequest>,
) -> Answer<Vec<ServiceChanged>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    // Every name is checked before anything changes.
    let mut plan = Vec::new();
    for (name, replicas) in &req.scales {
        let service = resolve(&state, name)?;
        if service.spec.mode == Mode::Global {
            return Err(NodeError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "scale can only be used with replicated mode; {} is global",
                    service.spec.name
                ),
            )
            .into());
        }
        let mut spec = service.spec.clone();
        spec.mode = Mode::Replicated {
            replicas: *replicas,
        };
        spec.validate()
            .map_err(|e| NodeError::new(ErrorKind::InvalidArgument, e))?;
        plan.push((service.id.clone(), spec));
    }
    let mut out = Vec::new();
    for (id, spec) in plan {
        let name = spec.name.clone();
        let ev = node
            .ev(operator(), Action::SERVICE_SCALE, format!("service:{name}"))
            .detail("replicas", replicas_text(spec.mode));
        out.push(update(&node, &id, spec, false, ev).await?);
    }
    Ok(Json(out))
}

pub(super) async fn service_update(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceUpdateRequest>,
) -> Answer<ServiceChanged> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let service = resolve(&state, &req.service)?;
    let spec = updated_spec(&service.spec, &req, &state.orchestrator)?;
    let mut ev = node.ev(
        operator(),
        Action::SERVICE_UPDATE,
        format!("service:{}", service.spec.name),
    );
    if req.force {
        ev = ev.detail("force", "true");
    }
    if spec.task.image != service.spec.task.image {
        ev = ev.detail("image", &spec.task.image);
    }
    if spec.task.env != service.spec.task.env {
        // Names only: values may be secret.
        let names: Vec<&str> = spec.task.env.keys().map(String::as_str).collect();
        ev = ev.detail("env", names.join(","));
    }
    if spec.constraints != service.spec.constraints {
        let c: Vec<String> = spec.constraints.iter().map(ToString::to_string).collect();
        ev = ev.detail("constraints", c.join(","));
    }
    if spec.mode != service.spec.mode {
        ev = ev.detail("replicas", replicas_text(spec.mode));
    }
    if spec.task.secrets != service.spec.task.secrets {
        ev = secrets_detail(ev, &spec.task.secrets);
    }
    let id = service.id.clone();
    Ok(Json(update(&node, &id, spec, req.force, ev).await?))
}

/// Commits a new spec for service `id`; answers with its version.
async fn update(
    node: &Member,
    id: &str,
    spec: moat_orchestrator::ServiceSpec,
    force: bool,
    ev: crate::member::EventDraft,
) -> Result<ServiceChanged, NodeError> {
    let before = node.read_state().await?;
    let old = before.orchestrator.services.get(id).map(|s| s.version);
    let name = spec.name.clone();
    node.propose_audited(
        Command::orchestrate(Orch::UpdateService {
            id: id.to_owned(),
            spec,
            force,
            now: node.clock.unix_ms(),
        }),
        ev,
    )
    .await?;
    let after = node.read_state().await?;
    let version = after
        .orchestrator
        .services
        .get(id)
        .map(|s| s.version)
        .unwrap_or_default();
    tracing::info!(service = %name, version, "service updated");
    Ok(ServiceChanged {
        id: id.to_owned(),
        name,
        version,
        changed: old != Some(version) || force,
    })
}

pub(super) async fn service_rollback(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceRef>,
) -> Answer<ServiceChanged> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let service = resolve(&state, &req.service)?;
    if service.previous_spec.is_none() {
        return Err(NodeError::new(
            ErrorKind::FailedPrecondition,
            format!(
                "service {} has no previous spec to roll back to",
                service.spec.name
            ),
        )
        .into());
    }
    let (id, name) = (service.id.clone(), service.spec.name.clone());
    node.propose_audited(
        Command::orchestrate(Orch::RollbackService {
            id: id.clone(),
            now: node.clock.unix_ms(),
        }),
        node.ev(
            operator(),
            Action::SERVICE_ROLLBACK,
            format!("service:{name}"),
        ),
    )
    .await?;
    let after = node.read_state().await?;
    let version = after
        .orchestrator
        .services
        .get(&id)
        .map(|s| s.version)
        .unwrap_or_default();
    Ok(Json(ServiceChanged {
        id,
        name,
        version,
        changed: true,
    }))
}

pub(super) async fn service_rm(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ServiceRemoveRequest>,
) -> Answer<ServiceRemoveResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let mut targets = Vec::new();
    for name in &req.services {
        let s = resolve(&state, name)?;
        targets.push((name.clone(), s.id.clone(), s.spec.name.clone()));
    }
    let mut removed = Vec::new();
    for (given, id, name) in targets {
        node.propose_audited(
            Command::orchestrate(Orch::RemoveService { id: id.clone() }),
            node.ev(
                operator(),
                Action::SERVICE_REMOVE,
                format!("service:{name}"),
            )
            .detail("id", &id),
        )
        .await?;
        tracing::info!(service = %name, "service removed");
        removed.push(given);
    }
    Ok(Json(ServiceRemoveResponse { removed }))
}

pub(super) async fn service_logs(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<moat_api::ServiceLogsRequest>,
) -> Answer<Vec<moat_api::TaskLog>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let service = resolve(&state, &req.service)?;
    let mut tasks: Vec<&Task> = state
        .orchestrator
        .tasks_of(&service.id)
        // Tasks that started (their node keeps the output of ended ones
        // while they are in the history).
        .filter(|t| t.node_id.is_some() && t.status.state >= TaskState::Starting)
        .collect();
    tasks.sort_by_key(|t| (t.slot, t.node_id.clone(), t.created_at));
    tasks.truncate(crate::service::tasks::MAX_GATHER);
    let ask = crate::rpc::GatherLogsReq {
        tasks: tasks
            .iter()
            .map(|t| crate::rpc::GatherTask {
                task_id: t.id.clone(),
                node_id: t.node_id.clone().unwrap_or_default(),
            })
            .collect(),
        tail_bytes: req.tail_bytes,
    };
    let gathered = match node.manager().filter(|m| m.is_leader(node.id)) {
        Some(m) => crate::service::tasks::gather(&m, ask).await,
        None => {
            node.call_leader(
                crate::rpc::method::GATHER_LOGS,
                &ask,
                crate::logs::WAIT + crate::rpc::CALL_TIMEOUT,
            )
            .await?
        }
    };
    let infos = task_infos(&state, tasks.clone());
    Ok(Json(
        tasks
            .iter()
            .zip(gathered.outputs)
            .map(|(t, out)| {
                let info = infos.iter().find(|i| i.id == t.id);
                let name = info.map(|i| i.name.clone()).unwrap_or_default();
                let host = info.and_then(|i| i.node.clone());
                let (output, error) = match out {
                    Ok(o) => (o, None),
                    Err(e) => (String::new(), Some(e)),
                };
                moat_api::TaskLog {
                    name,
                    task_id: t.id.clone(),
                    node_id: t.node_id.clone().unwrap_or_default(),
                    node: host,
                    output,
                    error,
                }
            })
            .collect(),
    ))
}

/// The service `name` names: an id, a name, or a unique id prefix.
/// Names and versions of a spec's secrets and configs, for its audit
/// record.
fn secrets_detail(
    ev: crate::member::EventDraft,
    refs: &[moat_orchestrator::SecretRef],
) -> crate::member::EventDraft {
    if refs.is_empty() {
        return ev;
    }
    let list: Vec<String> = refs.iter().map(|r| format!("{}:{r}", r.kind)).collect();
    ev.detail("secrets", list.join(","))
}

fn resolve<'a>(state: &'a ClusterState, name: &str) -> Result<&'a Service, NodeError> {
    state.orchestrator.service(name).ok_or_else(|| {
        NodeError::new(ErrorKind::NotFound, format!("no such service: {name}"))
            .hint("list services with `moat service ls`")
    })
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Replicated { .. } => "replicated",
        Mode::Global => "global",
    }
}

fn replicas_text(mode: Mode) -> String {
    match mode {
        Mode::Replicated { replicas } => replicas.to_string(),
        Mode::Global => "global".into(),
    }
}

/// How `service ls` and `inspect` show a service.
fn service_info(state: &ClusterState, s: &Service) -> ServiceInfo {
    let live: Vec<&Task> = state
        .orchestrator
        .tasks_of(&s.id)
        .filter(|t| t.desired_state == TaskState::Running)
        .collect();
    let running = live
        .iter()
        .filter(|t| t.status.state == TaskState::Running)
        .count() as u64;
    let desired = match s.spec.mode {
        Mode::Replicated { replicas } => replicas,
        Mode::Global => live.len() as u64,
    };
    let spec = &s.spec;
    ServiceInfo {
        id: s.id.clone(),
        name: spec.name.clone(),
        mode: mode_name(spec.mode).into(),
        desired,
        running,
        runtime: spec.task.runtime.as_str().into(),
        image: spec.task.image.clone(),
        args: spec.task.args.clone(),
        env: spec.task.env.keys().cloned().collect(),
        labels: spec.labels.clone(),
        constraints: spec.constraints.iter().map(ToString::to_string).collect(),
        placement_prefs: spec
            .spread_over
            .iter()
            .map(|k| format!("spread=node.labels.{k}"))
            .collect(),
        restart_condition: restart_condition_name(spec.restart.condition).into(),
        restart_delay_ms: spec.restart.delay_ms,
        restart_max_attempts: spec.restart.max_attempts,
        update_parallelism: spec.update.parallelism,
        update_delay_ms: spec.update.delay_ms,
        update_failure_action: failure_action_name(spec.update.failure_action).into(),
        update_monitor_ms: spec.update.monitor_ms,
        stop_grace_ms: spec.task.stop_grace_ms,
        version: s.version,
        created_at: rfc3339(s.created_at / 1000),
        updated_at: rfc3339(s.updated_at / 1000),
        update_status: s.update_status.as_ref().map(|u| UpdateStatusInfo {
            state: u.phase.as_str().into(),
            started_at: rfc3339(u.started_at / 1000),
            message: u.message.clone(),
        }),
        has_previous_spec: s.previous_spec.is_some(),
        secrets: super::secrets::uses(&spec.task.secrets),
        identity: spec.task.identity.map(|i| moat_api::IdentityInfo {
            spiffe_id: state
                .cluster_id
                .and_then(|c| moat_pki::spiffe_id(&c, &spec.name).ok())
                .unwrap_or_default(),
            ttl_secs: i.ttl_secs,
        }),
    }
}

/// What runs where, for `moat audit report`.
pub(super) fn placements(state: &ClusterState) -> Vec<moat_api::ServicePlacement> {
    let hosts: HashMap<String, &str> = state
        .nodes
        .values()
        .map(|r| (r.id.to_string(), r.hostname.as_str()))
        .collect();
    state
        .orchestrator
        .services
        .values()
        .map(|s| {
            let info = service_info(state, s);
            let mut nodes = std::collections::BTreeMap::new();
            for t in state.orchestrator.tasks_of(&s.id) {
                if t.desired_state != TaskState::Running || t.status.state != TaskState::Running {
                    continue;
                }
                let host = t.node_id.as_deref().map_or_else(String::new, |n| {
                    hosts
                        .get(n)
                        .map_or_else(|| n.to_owned(), |h| (*h).to_owned())
                });
                *nodes.entry(host).or_insert(0u64) += 1;
            }
            moat_api::ServicePlacement {
                id: info.id,
                name: info.name,
                mode: info.mode,
                runtime: info.runtime,
                image: info.image,
                desired: info.desired,
                running: info.running,
                nodes,
                identity_ttl_secs: info.identity.map(|i| i.ttl_secs),
            }
        })
        .collect()
}

/// The workload certificates of the tasks that are to run, for `moat
/// audit report`.
pub(super) fn workload_certs(state: &ClusterState) -> Vec<moat_api::WorkloadCert> {
    let hosts: HashMap<String, &str> = state
        .nodes
        .values()
        .map(|r| (r.id.to_string(), r.hostname.as_str()))
        .collect();
    let o = &state.orchestrator;
    o.tasks
        .values()
        .filter(|t| t.desired_state == TaskState::Running && !t.status.state.is_terminal())
        .filter_map(|t| {
            let id = t.identity.as_ref()?;
            let service = o.services.get(&t.service_id)?;
            let node = t.node_id.as_deref().unwrap_or_default();
            Some(moat_api::WorkloadCert {
                service: service.spec.name.clone(),
                task: t.id.clone(),
                node: hosts
                    .get(node)
                    .map_or_else(|| node.to_owned(), |h| (*h).to_owned()),
                spiffe_id: state
                    .cluster_id
                    .and_then(|c| moat_pki::spiffe_id(&c, &service.spec.name).ok())
                    .unwrap_or_default(),
                serial: id.serial.clone(),
                not_after: rfc3339(id.not_after),
                issuer_fingerprint: id.issuer.clone(),
            })
        })
        .collect()
}

/// `tasks` as `ps` shows them: by service name, then slot (or node), the
/// newest task of a slot first.
fn task_infos(state: &ClusterState, mut tasks: Vec<&Task>) -> Vec<TaskInfo> {
    let hosts: HashMap<String, &NodeRecord> = state
        .nodes
        .values()
        .map(|r| (r.id.to_string(), r))
        .collect();
    let name_of = |t: &Task| {
        state
            .orchestrator
            .services
            .get(&t.service_id)
            .map(|s| s.spec.name.clone())
            .unwrap_or_else(|| "(removed)".into())
    };
    tasks.sort_by(|a, b| {
        (
            name_of(a),
            a.slot,
            &a.node_id,
            std::cmp::Reverse(a.created_at),
            &a.id,
        )
            .cmp(&(
                name_of(b),
                b.slot,
                &b.node_id,
                std::cmp::Reverse(b.created_at),
                &b.id,
            ))
    });
    tasks
        .into_iter()
        .map(|t| {
            let service = name_of(t);
            let name = if t.slot == 0 {
                format!("{service}.{}", t.node_id.as_deref().unwrap_or("-"))
            } else {
                format!("{service}.{}", t.slot)
            };
            let (pid, container_id) = match (t.spec.runtime, &t.status.runtime_id) {
                (Runtime::Process, Some(id)) => (id.parse().ok(), None),
                (Runtime::Docker, Some(id)) => (None, Some(id.clone())),
                _ => (None, None),
            };
            TaskInfo {
                id: t.id.clone(),
                name,
                service_id: t.service_id.clone(),
                service,
                slot: t.slot,
                node_id: t.node_id.clone(),
                node: t
                    .node_id
                    .as_ref()
                    .and_then(|n| hosts.get(n))
                    .map(|r| r.hostname.clone()),
                image: t.spec.image.clone(),
                desired_state: t.desired_state.as_str().into(),
                state: t.status.state.as_str().into(),
                since: rfc3339(t.status.since / 1000),
                since_unix_ms: t.status.since,
                message: t.status.message.clone(),
                error: t.status.error.clone(),
                pid,
                container_id,
                exit_code: t.status.exit_code,
                version: t.version,
                attempt: t.attempt,
            }
        })
        .collect()
}
