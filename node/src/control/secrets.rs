//! `moat secret …` and `moat config …`: created, versioned and removed
//! through the Raft log, each change with its audit record, which names
//! the data by its keyed digest only. A secret's data never leaves the
//! daemon through this API; a config's comes back on `inspect`.

use std::sync::Arc;

use axum::extract::{Json, State};
use moat_api::{
    ErrorKind, SecretChanged, SecretCreateRequest, SecretInfo, SecretRefRequest,
    SecretRemoveRequest, SecretRemoveResponse, SecretUpdateRequest, SecretUse, SecretVersionInfo,
};
use moat_audit::Action;
use moat_orchestrator::{
    Command as Orch, MAX_SECRET_BYTES, Secret, SecretData, SecretKind, SecretRef, SecretVersion,
    validate_secret_name,
};
use moat_store::model::{ClusterState, Command, rfc3339};
use zeroize::Zeroizing;

use super::answer::{Answer, manager};
use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::member::{Member, audit_key, operator};

/// The largest create or update body: the base64 of the largest secret,
/// and room for the name and labels.
pub(super) const MAX_SECRET_BODY_BYTES: usize = MAX_SECRET_BYTES.div_ceil(3) * 4 + 64 * 1024;

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorKind::InvalidArgument, message)
}

/// `secret` or `config`.
pub(super) fn kind(text: &str) -> Result<SecretKind, NodeError> {
    match text {
        "secret" => Ok(SecretKind::Secret),
        "config" => Ok(SecretKind::Config),
        other => Err(invalid(format!(
            "unknown kind {other:?}: \"secret\" or \"config\""
        ))),
    }
}

/// The decoded data: the size is checked on the base64 text, before
/// anything is decoded.
fn decode(kind: SecretKind, base64: &str) -> Result<SecretData, NodeError> {
    if base64.len() > MAX_SECRET_BYTES.div_ceil(3) * 4 {
        return Err(too_large(kind, base64.len() / 4 * 3));
    }
    let bytes = Zeroizing::new(
        data_encoding::BASE64
            .decode(base64.as_bytes())
            .map_err(|_| invalid(format!("the {kind}'s data is not valid base64")))?,
    );
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(too_large(kind, bytes.len()));
    }
    Ok(SecretData::new(bytes.to_vec()))
}

fn too_large(kind: SecretKind, size: usize) -> NodeError {
    invalid(format!(
        "the {kind} is {size} bytes; at most {MAX_SECRET_BYTES} (500 KiB) are allowed"
    ))
    .hint("store a larger file elsewhere and keep only its key or password here")
}

/// The keyed digest of `data`, as audit records and `inspect` show it;
/// none before the cluster has its audit key (the first seconds after
/// `init`).
fn digest(state: &ClusterState, data: &SecretData) -> Result<String, NodeError> {
    audit_key(state)
        .map(|k| k.hash(data.expose_secret()))
        .ok_or_else(|| {
            NodeError::new(
                ErrorKind::Unavailable,
                "the cluster has no audit key yet, under which secrets are named",
            )
            .hint("try again in a few seconds")
        })
}

fn actions(kind: SecretKind) -> (Action, Action, Action) {
    match kind {
        SecretKind::Secret => (
            Action::SECRET_CREATE,
            Action::SECRET_UPDATE,
            Action::SECRET_REMOVE,
        ),
        SecretKind::Config => (
            Action::CONFIG_CREATE,
            Action::CONFIG_UPDATE,
            Action::CONFIG_REMOVE,
        ),
    }
}

pub(super) async fn secret_create(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SecretCreateRequest>,
) -> Answer<SecretChanged> {
    let node = manager(&d).await?;
    let kind = kind(&req.kind)?;
    validate_secret_name(kind, &req.name).map_err(invalid)?;
    let data = decode(kind, req.data_base64.expose_secret())?;
    let state = node.read_state().await?;
    if state
        .orchestrator
        .secret(kind, &req.name)
        .is_some_and(|s| s.name == req.name)
    {
        return Err(NodeError::new(
            ErrorKind::FailedPrecondition,
            format!("a {kind} named {} already exists", req.name),
        )
        .hint(format!(
            "give it a new version with `moat {kind} update {} FILE`, or choose another name",
            req.name
        ))
        .into());
    }
    let id = moat_pki::NodeId::generate().to_string();
    let now = node.clock.unix_ms();
    let digest = digest(&state, &data)?;
    let size = data.len();
    let ev = node
        .ev(operator(), actions(kind).0, format!("{kind}:{}", req.name))
        .detail("id", &id)
        .detail("version", 1)
        .detail("size", size)
        .detail("digest", &digest);
    node.propose_audited(
        Command::orchestrate(Orch::CreateSecret(Secret {
            id: id.clone(),
            kind,
            name: req.name.clone(),
            labels: req.labels.clone(),
            created_at: now,
            updated_at: now,
            versions: vec![SecretVersion {
                version: 1,
                data,
                digest,
                created_at: now,
            }],
        })),
        ev,
    )
    .await?;
    tracing::info!(%kind, name = %req.name, %id, size, "created");
    Ok(Json(SecretChanged {
        id,
        name: req.name,
        version: 1,
        services_updated: Vec::new(),
    }))
}

pub(super) async fn secret_update(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SecretUpdateRequest>,
) -> Answer<SecretChanged> {
    let node = manager(&d).await?;
    let kind = kind(&req.kind)?;
    let data = decode(kind, req.data_base64.expose_secret())?;
    let state = node.read_state().await?;
    let secret = resolve(&state, kind, &req.secret)?;
    let next = secret.latest().map_or(1, |v| v.version + 1);
    let followers: Vec<String> = state
        .orchestrator
        .secret_followers(&secret.id)
        .map(|s| s.spec.name.clone())
        .collect();
    let digest = digest(&state, &data)?;
    let size = data.len();
    let (id, name) = (secret.id.clone(), secret.name.clone());
    let mut ev = node
        .ev(operator(), actions(kind).1, format!("{kind}:{name}"))
        .detail("id", &id)
        .detail("version", next)
        .detail("size", size)
        .detail("digest", &digest);
    if !followers.is_empty() {
        ev = ev.detail("services", followers.join(","));
    }
    let now = node.clock.unix_ms();
    node.propose_audited(
        Command::orchestrate(Orch::UpdateSecret {
            id: id.clone(),
            version: SecretVersion {
                version: next,
                data,
                digest,
                created_at: now,
            },
            now,
        }),
        ev,
    )
    .await?;
    tracing::info!(%kind, %name, version = next, services = followers.len(), "new version");
    Ok(Json(SecretChanged {
        id,
        name,
        version: next,
        services_updated: followers,
    }))
}

pub(super) async fn secret_ls(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SecretRefRequest>,
) -> Answer<Vec<SecretInfo>> {
    let node = manager(&d).await?;
    let kind = kind(&req.kind)?;
    let state = node.read_state().await?;
    let mut list: Vec<SecretInfo> = state
        .orchestrator
        .secrets
        .values()
        .filter(|s| s.kind == kind)
        .map(|s| secret_info(&state, s, false))
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(list))
}

pub(super) async fn secret_inspect(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SecretRefRequest>,
) -> Answer<SecretInfo> {
    let node = manager(&d).await?;
    let kind = kind(&req.kind)?;
    let state = node.read_state().await?;
    let secret = resolve(&state, kind, &req.secret)?;
    Ok(Json(secret_info(&state, secret, true)))
}

pub(super) async fn secret_rm(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SecretRemoveRequest>,
) -> Answer<SecretRemoveResponse> {
    let node = manager(&d).await?;
    let kind = kind(&req.kind)?;
    let state = node.read_state().await?;
    // Every name is checked before anything is removed.
    let mut targets = Vec::new();
    for given in &req.secrets {
        let s = resolve(&state, kind, given)?;
        let users = state.orchestrator.secret_users(&s.id);
        if !users.is_empty() {
            return Err(NodeError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "{kind} {} is in use by service{} {}",
                    s.name,
                    if users.len() == 1 { "" } else { "s" },
                    users.join(", ")
                ),
            )
            .hint(format!(
                "remove it from them first: `moat service update --{kind}-rm {} SERVICE`",
                s.name
            ))
            .into());
        }
        targets.push((given.clone(), s.id.clone(), s.name.clone()));
    }
    let mut removed = Vec::new();
    for (given, id, name) in targets {
        remove(&node, kind, &id, &name).await?;
        removed.push(given);
    }
    Ok(Json(SecretRemoveResponse { removed }))
}

async fn remove(node: &Member, kind: SecretKind, id: &str, name: &str) -> Result<(), NodeError> {
    node.propose_audited(
        Command::orchestrate(Orch::RemoveSecret { id: id.to_owned() }),
        node.ev(operator(), actions(kind).2, format!("{kind}:{name}"))
            .detail("id", id),
    )
    .await?;
    tracing::info!(%kind, %name, "removed");
    Ok(())
}

fn resolve<'a>(
    state: &'a ClusterState,
    kind: SecretKind,
    name: &str,
) -> Result<&'a Secret, NodeError> {
    state.orchestrator.secret(kind, name).ok_or_else(|| {
        NodeError::new(ErrorKind::NotFound, format!("no such {kind}: {name}"))
            .hint(format!("list them with `moat {kind} ls`"))
    })
}

/// How `ls` and `inspect` show a secret or config; a config's data only
/// with `with_data`.
fn secret_info(state: &ClusterState, s: &Secret, with_data: bool) -> SecretInfo {
    let versions = s
        .versions
        .iter()
        .map(|v| SecretVersionInfo {
            version: v.version,
            size: v.data.len() as u64,
            digest: v.digest.clone(),
            created_at: rfc3339(v.created_at / 1000),
            tasks: state
                .orchestrator
                .tasks
                .values()
                .filter(|t| {
                    !t.status.state.is_terminal()
                        && t.spec
                            .secrets
                            .iter()
                            .any(|r| r.secret_id == s.id && r.version == v.version)
                })
                .map(|t| t.id.clone())
                .collect(),
        })
        .collect();
    let data_base64 = (with_data && s.kind == SecretKind::Config)
        .then(|| {
            s.latest()
                .map(|v| data_encoding::BASE64.encode(v.data.expose_secret()))
        })
        .flatten();
    SecretInfo {
        id: s.id.clone(),
        kind: s.kind.as_str().into(),
        name: s.name.clone(),
        labels: s.labels.clone(),
        created_at: rfc3339(s.created_at / 1000),
        updated_at: rfc3339(s.updated_at / 1000),
        version: s.latest().map_or(0, |v| v.version),
        versions,
        used_by: state
            .orchestrator
            .secret_users(&s.id)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        data_base64,
    }
}

/// The secrets and configs for `moat audit report`, by kind and name.
pub(super) fn summaries(state: &ClusterState) -> Vec<moat_api::SecretSummary> {
    let mut list: Vec<moat_api::SecretSummary> = state
        .orchestrator
        .secrets
        .values()
        .map(|s| moat_api::SecretSummary {
            kind: s.kind.as_str().into(),
            name: s.name.clone(),
            version: s.latest().map_or(0, |v| v.version),
            versions_kept: s.versions.len() as u64,
            size: s.latest().map_or(0, |v| v.data.len() as u64),
            created_at: rfc3339(s.created_at / 1000),
            updated_at: rfc3339(s.updated_at / 1000),
            used_by: state
                .orchestrator
                .secret_users(&s.id)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
        .collect();
    list.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    list
}

/// How `service inspect` shows a service's secrets and configs.
pub(super) fn uses(refs: &[SecretRef]) -> Vec<SecretUse> {
    refs.iter()
        .map(|r| SecretUse {
            kind: r.kind.as_str().into(),
            name: r.name.clone(),
            version: r.version,
            pinned: r.pinned,
            target: r.target.clone(),
            mode: format!("{:04o}", r.mode),
        })
        .collect()
}
