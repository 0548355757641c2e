//! The control API: HTTP+JSON on the daemon's unix socket (see moat-api
//! for the paths and types).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use moat_api::{
    ApiError, Availability, CreateTokenRequest, CreateTokenResponse, Empty, ErrorKind, Info,
    InitRequest, InitResponse, JoinRequest, JoinResponse, JoinTokenRequest, JoinTokenResponse,
    LeaveRequest, ManagerStatus, NodeInfo, NodeRef, NodeRemoveRequest, NodeRemoveResponse,
    NodeState, NodeStatus, NodeUpdateRequest, RoleChangeRequest, RoleChangeResponse, TokenRef,
    TokenSummary, UnlockKeyResponse, UnlockRequest, UnlockResponse, UpdateRequest, UpdateResponse,
    path,
};
use moat_audit::Action;
use moat_pki::{NodeId, Role};
use moat_store::model::{self, ClusterState, Command, NodeRecord};
use moat_tokens::JoinToken;
use tokio::net::UnixListener;

use crate::audit::operator;
use crate::daemon::{Daemon, api_role, cert_expiry};
use crate::node::Node;
use crate::rpc::{AdminReq, RpcError};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answer.
pub(crate) struct Failure(ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        Self(e.into_api())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

pub(crate) type Answer<T> = Result<Json<T>, Failure>;

/// Binds the control socket: a stale socket file from a crashed daemon is
/// replaced (the state directory lock proves no daemon uses it), and the
/// socket is made owner-only.
pub(crate) fn bind(socket: &Path) -> Result<UnixListener, ApiError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(crate::files::io_error(
                &format!("removing the stale socket {}", socket.display()),
                e,
            ));
        }
    }
    let listener = UnixListener::bind(socket).map_err(|e| {
        crate::files::io_error(
            &format!("binding the control socket {}", socket.display()),
            e,
        )
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| crate::files::io_error(&format!("restricting {}", socket.display()), e))?;
    Ok(listener)
}

/// Serves the control API until `shutdown`, then lets requests in flight
/// finish.
pub(crate) async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let app = axum::Router::new()
        .route(path::INFO, get(info))
        .route(path::INIT, post(init))
        .route(path::JOIN, post(join))
        .route(path::LEAVE, post(leave))
        .route(path::JOIN_TOKEN, post(join_token))
        .route(path::JOIN_TOKEN_CREATE, post(token_create))
        .route(path::JOIN_TOKENS, get(token_ls))
        .route(path::JOIN_TOKEN_REVOKE, post(token_revoke))
        .route(path::NODES, get(node_ls))
        .route(path::NODE_INSPECT, post(node_inspect))
        .route(path::NODE_ROLE, post(node_role))
        .route(path::NODE_REMOVE, post(node_rm))
        .route(path::NODE_UPDATE, post(node_update))
        .route(path::UPDATE, post(update))
        .route(path::UNLOCK, post(unlock))
        .route(path::UNLOCK_KEY, get(unlock_key))
        .route(path::UNLOCK_KEY_ROTATE, post(unlock_key_rotate))
        .route(path::BACKUP, post(backup))
        .route(path::AUDIT_RECORDS, post(crate::control_audit::records))
        .route(path::AUDIT_EXPORT, post(crate::control_audit::export))
        .route(path::AUDIT_PROVE, post(crate::control_audit::prove))
        .route(path::AUDIT_HASH, post(crate::control_audit::hash))
        .route(path::AUDIT_REPORT, get(crate::control_audit::report))
        .route(path::CA, get(crate::control_audit::ca))
        .route(path::CA_ROTATE, post(crate::control_audit::ca_rotate))
        .route(path::CA_ROLLBACK, post(crate::control_audit::ca_rollback))
        .layer(axum::middleware::from_fn_with_state(
            daemon.clone(),
            refuse_while_locked,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(daemon);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| crate::files::io_error("serving the control socket", e))
}

/// A locked node answers `info` and `unlock` only.
async fn refuse_while_locked(
    State(d): State<Arc<Daemon>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let open = [path::INFO, path::UNLOCK].contains(&request.uri().path());
    if !open && d.locked().await.is_some() {
        return Failure(crate::daemon::locked_error()).into_response();
    }
    next.run(request).await
}

async fn backup(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<moat_api::BackupRequest>,
) -> Result<Response, Failure> {
    let node = manager(&d).await?;
    let bytes = crate::backup::take(&node, req).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

async fn unlock(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<UnlockRequest>,
) -> Answer<UnlockResponse> {
    Ok(Json(d.unlock(req).await?))
}

/// The cluster's autolock setting, read linearizably.
async fn current_unlock_key(node: &Node) -> Result<UnlockKeyResponse, Failure> {
    let state = node.read_state().await?;
    match (&state.unlock_key, state.policy.autolock) {
        (Some(key), true) => Ok(UnlockKeyResponse {
            key: key.expose_secret().to_string(),
            generation: state.unlock_key_version,
            set_at: rfc3339(state.unlock_key_set_at),
        }),
        _ => Err(
            ApiError::new(ErrorKind::FailedPrecondition, "no unlock key is set")
                .hint("autolock is off; turn it on with `moat update --autolock=true`")
                .into(),
        ),
    }
}

async fn unlock_key(State(d): State<Arc<Daemon>>) -> Answer<UnlockKeyResponse> {
    let node = manager(&d).await?;
    Ok(Json(current_unlock_key(&node).await?))
}

async fn unlock_key_rotate(State(d): State<Arc<Daemon>>) -> Answer<UnlockKeyResponse> {
    let node = manager(&d).await?;
    let key = moat_lock::UnlockKey::generate()
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let generation = current_unlock_key(&node).await?.generation;
    node.propose_audited(
        Command::RotateUnlockKey {
            key: model::Secret::new(key.expose_for_operator().as_str()),
            now: unix_now(),
        },
        node.ev(operator(), Action::UNLOCK_KEY_ROTATE, "cluster")
            .detail("from_generation", generation),
    )
    .await?;
    tracing::info!("unlock key rotated");
    rekey_here(&node).await;
    Ok(Json(current_unlock_key(&node).await?))
}

/// After an autolock change is committed, waits until this manager has
/// applied it and re-seals its own keys, so that the answer means "this
/// manager already uses the new setting" (the others follow within a
/// heartbeat).
async fn rekey_here(node: &Arc<Node>) {
    let wanted = match node.read_state().await {
        Ok(s) => s.unlock_key_version,
        Err(_) => return,
    };
    let applied = async {
        loop {
            let done = node
                .manager
                .load_full()
                .and_then(|m| m.local_state().ok())
                .is_some_and(|s| s.unlock_key_version >= wanted);
            if done {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), applied)
        .await
        .is_err()
    {
        tracing::warn!(
            "this manager has not applied the autolock change yet; it re-seals its keys when it does"
        );
        return;
    }
    if let Err(e) = node.reconcile_keys().await {
        tracing::error!(error = %e, "re-sealing this manager's keys failed; retried every heartbeat");
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

async fn info(State(d): State<Arc<Daemon>>) -> Answer<Info> {
    let mut info = Info {
        state: NodeState::Inactive,
        node_id: None,
        hostname: d.hostname.clone(),
        is_manager: false,
        cluster_id: None,
        managers: 0,
        nodes: 0,
        cert_expiry_seconds: 0,
        autolock: false,
        manager_addresses: Vec::new(),
        node_address: None,
        leader: None,
        cert_not_after: None,
        error: None,
        unlock_key_set_at: None,
        unlock_key_generation: 0,
        data_key_version: None,
        root_rotation: None,
    };
    if let Some(file) = d.locked().await {
        info.state = NodeState::Locked;
        info.node_id = Some(file.node_id.to_string());
        info.cluster_id = Some(file.cluster_id.to_string());
        info.node_address = Some(file.advertise_addr.clone());
        info.is_manager = true;
        info.autolock = true;
        info.manager_addresses = file.managers.iter().map(|p| p.addr.clone()).collect();
        info.error =
            Some("This node is locked. Run \"moat unlock\" and provide the unlock key.".into());
        return Ok(Json(info));
    }
    let Some(node) = d.node().await else {
        return Ok(Json(info));
    };
    let file = node.node_file();
    info.state = NodeState::Active;
    info.node_id = Some(node.id.to_string());
    info.cluster_id = Some(node.cluster.to_string());
    info.node_address = Some(file.advertise_addr.clone());
    info.cert_expiry_seconds = file.cert_expiry_secs;
    info.manager_addresses = file.managers.iter().map(|p| p.addr.clone()).collect();
    info.cert_not_after = node
        .tls
        .identity()
        .map(|i| rfc3339(i.not_after.unix_timestamp()));
    if let Some(fault) = node.fault() {
        info.state = NodeState::Error;
        info.error = Some(match fault.hint {
            Some(h) => format!("{} ({h})", fault.message),
            None => fault.message,
        });
        return Ok(Json(info));
    }
    if let Some(m) = node.manager.load_full() {
        info.is_manager = true;
        info.leader = m.leader().map(|l| l.id.to_string());
        // Info answers from this manager's own view, so it works without
        // quorum too.
        let state = m.local_state()?;
        info.managers = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .count();
        info.nodes = state.nodes.len();
        info.cert_expiry_seconds = state.policy.cert_expiry_secs;
        info.autolock = state.policy.autolock;
        info.unlock_key_generation = state.unlock_key_version;
        info.root_rotation = crate::ca::status(&state)
            .ok()
            .and_then(|c| c.rotation)
            .map(|r| {
                format!(
                    "rotation {} {}: {}/{} nodes on the new root",
                    r.id, r.phase, r.nodes_done, r.nodes_total
                )
            });
        info.unlock_key_set_at = state
            .unlock_key
            .is_some()
            .then(|| rfc3339(state.unlock_key_set_at));
        info.data_key_version = m
            .inner
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.dek_versions())
            .map(|(current, _)| current.0);
        info.manager_addresses = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .map(|n| n.address.clone())
            .collect();
    }
    Ok(Json(info))
}

async fn init(State(d): State<Arc<Daemon>>, Json(req): Json<InitRequest>) -> Answer<InitResponse> {
    Ok(Json(d.init(req).await?))
}

async fn join(State(d): State<Arc<Daemon>>, Json(req): Json<JoinRequest>) -> Answer<JoinResponse> {
    Ok(Json(d.join(req).await?))
}

async fn leave(State(d): State<Arc<Daemon>>, Json(req): Json<LeaveRequest>) -> Answer<Empty> {
    d.leave(req.force).await?;
    Ok(Json(Empty {}))
}

/// The member node, which must be a manager.
pub(crate) async fn manager(d: &Daemon) -> Result<Arc<Node>, Failure> {
    let node = d.member().await?;
    node.require_manager()?;
    Ok(node)
}

async fn join_token(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<JoinTokenRequest>,
) -> Answer<JoinTokenResponse> {
    let node = manager(&d).await?;
    let role = match req.role {
        moat_api::Role::Manager => Role::Manager,
        moat_api::Role::Worker => Role::Worker,
    };
    if req.rotate {
        crate::node::rotate_standing_token(&node, role, operator()).await?;
    }
    let state = node.read_state().await?;
    let tokens = state
        .join_tokens
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "the cluster is not initialized"))?;
    let token = match role {
        Role::Manager => &tokens.manager,
        Role::Worker => &tokens.worker,
    };
    Ok(Json(JoinTokenResponse {
        role: req.role,
        token: token.expose_secret().to_string(),
        addr: node.node_file().advertise_addr,
        rotated: req.rotate,
    }))
}

/// Longest lifetime and most uses a scoped token may have (one year as
/// `1y` means: 365.25 days).
const MAX_TOKEN_TTL_SECS: u64 = 31_557_600;
const MAX_TOKEN_USES: u32 = 1_000_000;

async fn token_create(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<CreateTokenRequest>,
) -> Answer<CreateTokenResponse> {
    let node = manager(&d).await?;
    let invalid = |m: String| Failure(ApiError::new(ErrorKind::InvalidArgument, m));
    if let Some(ttl) = req.ttl_seconds
        && !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl)
    {
        return Err(invalid(format!(
            "--ttl must be between 1 second and 365 days, not {ttl} s"
        )));
    }
    if let Some(uses) = req.uses
        && !(1..=MAX_TOKEN_USES).contains(&uses)
    {
        return Err(invalid(format!(
            "--uses must be between 1 and {MAX_TOKEN_USES}, not {uses}"
        )));
    }
    check_labels(req.labels.keys())?;
    if req.description.chars().count() > 256 {
        return Err(invalid("--description is limited to 256 characters".into()));
    }
    let role = match req.role {
        moat_api::Role::Manager => Role::Manager,
        moat_api::Role::Worker => Role::Worker,
    };
    let bundle = node
        .read_state()
        .await?
        .ca
        .map(|c| c.root_cert_pem)
        .ok_or_else(|| ApiError::new(ErrorKind::Unavailable, "the cluster is not initialized"))?;
    let token = JoinToken::generate(bundle.as_bytes())
        .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?;
    let id = token.fingerprint().to_string();
    let now = moat_pki::OffsetDateTime::now_utc().unix_timestamp();
    let expires_at = req
        .ttl_seconds
        .map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)));
    let secret = token.expose_secret().to_string();
    let mut ev = node
        .ev(operator(), Action::TOKEN_CREATE, format!("token:{id}"))
        .detail("role", role.as_str());
    if let Some(t) = req.ttl_seconds {
        ev = ev.detail("ttl_seconds", t);
    }
    if let Some(u) = req.uses {
        ev = ev.detail("uses", u);
    }
    node.propose_audited(
        Command::CreateToken(model::ScopedToken {
            token,
            role,
            created_at: now,
            created_by: format!("local operator on {} ({})", d.hostname, node.id),
            expires_at,
            uses_left: req.uses,
            labels: req.labels,
            description: req.description,
        }),
        ev,
    )
    .await?;
    let expires = expires_at.map(rfc3339);
    tracing::info!(token = %id, role = role.as_str(), expires_at = ?expires, uses = ?req.uses, "join token created");
    Ok(Json(CreateTokenResponse {
        id,
        token: secret,
        addr: node.node_file().advertise_addr,
        expires_at: expires,
        uses: req.uses,
    }))
}

async fn token_ls(State(d): State<Arc<Daemon>>) -> Answer<Vec<TokenSummary>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    Ok(Json(token_summaries(&state)))
}

/// Every join token, never its secret.
pub(crate) fn token_summaries(state: &ClusterState) -> Vec<TokenSummary> {
    let mut out = Vec::new();
    if let Some(tokens) = &state.join_tokens {
        for role in [Role::Worker, Role::Manager] {
            let (token, issued_at) = tokens.standing(role);
            let expires_at = state
                .policy
                .token_ttl_secs
                .filter(|_| issued_at > 0)
                .map(|ttl| issued_at.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)));
            out.push(TokenSummary {
                id: token.fingerprint().to_string(),
                kind: "standing".into(),
                role: api_role(role),
                created_at: (issued_at > 0).then(|| rfc3339(issued_at)),
                created_by: "cluster".into(),
                expires_at: expires_at.map(rfc3339),
                uses_left: None,
                description: format!("standing {} token", role.as_str()),
                labels: Default::default(),
            });
        }
    }
    for (id, t) in &state.scoped_tokens {
        out.push(TokenSummary {
            id: id.clone(),
            kind: "scoped".into(),
            role: api_role(t.role),
            created_at: Some(rfc3339(t.created_at)),
            created_by: t.created_by.clone(),
            expires_at: t.expires_at.map(rfc3339),
            uses_left: t.uses_left,
            description: t.description.clone(),
            labels: t.labels.clone(),
        });
    }
    out
}

async fn token_revoke(State(d): State<Arc<Daemon>>, Json(req): Json<TokenRef>) -> Answer<TokenRef> {
    let node = manager(&d).await?;
    if req.id.is_empty() {
        return Err(ApiError::new(
            ErrorKind::InvalidArgument,
            "give the id of the token to revoke",
        )
        .hint("list tokens with `moat join-token ls`")
        .into());
    }
    let state = node.read_state().await?;
    let matches: Vec<&String> = state
        .scoped_tokens
        .keys()
        .filter(|id| !req.id.is_empty() && id.starts_with(&req.id))
        .collect();
    let id = match matches.as_slice() {
        [one] => (*one).clone(),
        [] => {
            let standing = state.join_tokens.as_ref().is_some_and(|t| {
                [&t.worker, &t.manager]
                    .iter()
                    .any(|t| t.fingerprint().to_string().starts_with(&req.id))
            });
            let e = ApiError::new(
                ErrorKind::NotFound,
                format!("no scoped join token {}", req.id),
            );
            return Err(if standing {
                e.hint("the standing tokens cannot be revoked: rotate them with `moat join-token --rotate worker|manager`")
            } else {
                e.hint("list tokens with `moat join-token ls`")
            }
            .into());
        }
        many => {
            return Err(ApiError::new(
                ErrorKind::InvalidArgument,
                format!("token id {} is ambiguous ({} matches)", req.id, many.len()),
            )
            .into());
        }
    };
    node.propose_audited(
        Command::RevokeToken { id: id.clone() },
        node.ev(operator(), Action::TOKEN_REVOKE, format!("token:{id}")),
    )
    .await?;
    tracing::info!(token = %id, "join token revoked");
    Ok(Json(TokenRef { id }))
}

/// Label keys: 1 to 128 characters.
fn check_labels<'a>(keys: impl Iterator<Item = &'a String>) -> Result<(), ApiError> {
    for key in keys {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(ApiError::new(
                ErrorKind::InvalidArgument,
                format!("label key {key:?} must be 1 to 128 characters"),
            ));
        }
    }
    Ok(())
}

async fn node_ls(State(d): State<Arc<Daemon>>) -> Answer<Vec<NodeInfo>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    Ok(Json(
        state.nodes.values().map(|r| node_info(r, &node)).collect(),
    ))
}

async fn node_inspect(State(d): State<Arc<Daemon>>, Json(req): Json<NodeRef>) -> Answer<NodeInfo> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let record = resolve(&state, &req.node, node.id)?;
    Ok(Json(node_info(record, &node)))
}

async fn node_role(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<RoleChangeRequest>,
) -> Answer<RoleChangeResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let record = resolve(&state, &req.node, node.id)?.clone();
    let id = record.id;
    let want = match req.role {
        moat_api::Role::Manager => Role::Manager,
        moat_api::Role::Worker => Role::Worker,
    };
    if record.role == want {
        return Ok(Json(RoleChangeResponse {
            id: id.to_string(),
            unchanged: true,
            warning: None,
        }));
    }
    let mut warning = None;
    match want {
        Role::Manager => {
            node.propose_audited(
                Command::SetRole { id, role: want },
                node.ev(operator(), Action::NODE_PROMOTE, format!("node:{id}")),
            )
            .await?;
            let managers = state
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager)
                .count()
                + 1;
            warning = crate::node::even_managers_warning(managers);
            tracing::info!(node = %id, "node promoted to manager");
        }
        Role::Worker => {
            node.admin(AdminReq::Demote { id }, operator()).await?;
            tracing::info!(node = %id, "manager demoted");
        }
    }
    Ok(Json(RoleChangeResponse {
        id: id.to_string(),
        unchanged: false,
        warning,
    }))
}

async fn node_rm(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NodeRemoveRequest>,
) -> Answer<NodeRemoveResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let id = resolve(&state, &req.node, node.id)?.id;
    if id == node.id {
        return Err(ApiError::new(
            ErrorKind::FailedPrecondition,
            "cannot remove the node this command runs on",
        )
        .hint("run `moat leave` on it, or `moat node rm` on another manager")
        .into());
    }
    node.admin(
        AdminReq::Remove {
            id,
            force: req.force,
        },
        operator(),
    )
    .await?;
    tracing::info!(node = %id, "node removed from the cluster");
    Ok(Json(NodeRemoveResponse { id: id.to_string() }))
}

async fn node_update(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NodeUpdateRequest>,
) -> Answer<NodeInfo> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let id = resolve(&state, &req.node, node.id)?.id;
    check_labels(req.label_add.keys().chain(req.label_rm.iter()))?;
    let mut ev = node.ev(operator(), Action::NODE_LABEL, format!("node:{id}"));
    if !req.label_add.is_empty() {
        let added: Vec<String> = req
            .label_add
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        ev = ev.detail("labels_added", added.join(","));
    }
    if !req.label_rm.is_empty() {
        ev = ev.detail("labels_removed", req.label_rm.join(","));
    }
    if let Some(a) = req.availability {
        ev = ev.detail("availability", format!("{a:?}").to_lowercase());
    }
    node.propose_audited(
        Command::UpdateNode {
            id,
            labels_add: req.label_add,
            labels_rm: req.label_rm,
            availability: req.availability.map(|a| match a {
                Availability::Active => model::Availability::Active,
                Availability::Pause => model::Availability::Pause,
                Availability::Drain => model::Availability::Drain,
            }),
        },
        ev,
    )
    .await?;
    let state = node.read_state().await?;
    let record = state
        .nodes
        .get(&id)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("No such node: {id}")))?;
    Ok(Json(node_info(record, &node)))
}

async fn update(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<UpdateRequest>,
) -> Answer<UpdateResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let mut policy = state.policy.clone();
    if let Some(secs) = req.cert_expiry_seconds {
        policy.cert_expiry_secs = cert_expiry(Some(secs))?.as_secs();
    }
    if let Some(secs) = req.token_ttl_seconds {
        if secs > MAX_TOKEN_TTL_SECS {
            return Err(ApiError::new(
                ErrorKind::InvalidArgument,
                format!("--token-ttl is limited to one year, not {secs} s"),
            )
            .into());
        }
        policy.token_ttl_secs = (secs > 0).then_some(secs);
    }
    // Autolock is changed by its own command (policy and key together).
    policy.autolock = state.policy.autolock;
    if policy != state.policy {
        let mut ev = node.ev(operator(), Action::POLICY_UPDATE, "cluster");
        if policy.cert_expiry_secs != state.policy.cert_expiry_secs {
            ev = ev.detail("cert_expiry_seconds", policy.cert_expiry_secs);
        }
        if policy.token_ttl_secs != state.policy.token_ttl_secs {
            ev = ev.detail("token_ttl_seconds", policy.token_ttl_secs.unwrap_or(0));
        }
        node.propose_audited(Command::SetPolicy(policy.clone()), ev)
            .await?;
        tracing::info!(
            cert_expiry_secs = policy.cert_expiry_secs,
            "cluster policy updated"
        );
    }
    let mut unlock_key = None;
    if let Some(on) = req.autolock
        && on != state.policy.autolock
    {
        let key = if on {
            Some(
                moat_lock::UnlockKey::generate()
                    .map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))?
                    .expose_for_operator(),
            )
        } else {
            None
        };
        let action = if on {
            Action::AUTOLOCK_ENABLE
        } else {
            Action::AUTOLOCK_DISABLE
        };
        node.propose_audited(
            Command::SetAutolock {
                key: key.as_ref().map(|k| model::Secret::new(k.as_str())),
                now: unix_now(),
            },
            node.ev(operator(), action, "cluster"),
        )
        .await?;
        tracing::info!(autolock = on, "autolock changed");
        rekey_here(&node).await;
        unlock_key = key.map(|k| k.to_string());
    }
    let Json(info) = info(State(d)).await?;
    Ok(Json(UpdateResponse { info, unlock_key }))
}

/// Finds the node `name` names: `self` (the node answering), an id, a
/// unique host name, or a unique id prefix, in that order.
fn resolve<'a>(
    state: &'a ClusterState,
    name: &str,
    me: NodeId,
) -> Result<&'a NodeRecord, ApiError> {
    if name == "self"
        && let Some(r) = state.nodes.get(&me)
    {
        return Ok(r);
    }
    if let Ok(id) = name.parse::<NodeId>()
        && let Some(r) = state.nodes.get(&id)
    {
        return Ok(r);
    }
    // As Docker: a full id, else an exact host name, else an id prefix.
    // A host name wins over a prefix, so `m3` is the node named m3 even
    // when another node's random id starts with "m3".
    let by_host: Vec<_> = state
        .nodes
        .values()
        .filter(|r| r.hostname == name)
        .collect();
    let matches = if by_host.is_empty() {
        state
            .nodes
            .values()
            .filter(|r| !name.is_empty() && r.id.to_string().starts_with(name))
            .collect()
    } else {
        by_host
    };
    match matches.as_slice() {
        [record] => Ok(record),
        [] => Err(
            ApiError::new(ErrorKind::NotFound, format!("No such node: {name}"))
                .hint("list nodes with `moat node ls`"),
        ),
        many => Err(ApiError::new(
            ErrorKind::InvalidArgument,
            format!("node {name} is ambiguous ({} matches)", many.len()),
        )
        .hint("use the full node id")),
    }
}

/// How `node` (a manager) presents record `r`.
fn node_info(r: &NodeRecord, node: &Node) -> NodeInfo {
    let me = node.id;
    let leader = node
        .manager
        .load_full()
        .and_then(|m| m.leader())
        .map(|l| l.id);
    let manager_status = (r.role == Role::Manager).then(|| {
        if Some(r.id) == leader {
            ManagerStatus::Leader
        } else if r.ready {
            ManagerStatus::Reachable
        } else {
            ManagerStatus::Unreachable
        }
    });
    NodeInfo {
        id: r.id.to_string(),
        hostname: r.hostname.clone(),
        role: api_role(r.role),
        status: if r.ready {
            NodeStatus::Ready
        } else {
            NodeStatus::Down
        },
        availability: match r.availability {
            model::Availability::Active => Availability::Active,
            model::Availability::Pause => Availability::Pause,
            model::Availability::Drain => Availability::Drain,
        },
        manager_status,
        labels: r.labels.clone(),
        cert_not_after: rfc3339(r.cert_not_after),
        is_self: r.id == me,
        address: r.address.clone(),
        cert_serial: r.cert_serial.clone(),
        cert_issuer_fingerprint: r.cert_issuer.clone(),
    }
}

use moat_store::model::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use moat_store::model::NodeRecord;

    fn id_starting(prefix: &str) -> NodeId {
        let s = NodeId::generate().to_string();
        format!("{prefix}{}", &s[prefix.len()..]).parse().unwrap()
    }

    fn add(state: &mut ClusterState, id: NodeId, hostname: &str) {
        state.nodes.insert(
            id,
            NodeRecord {
                id,
                hostname: hostname.into(),
                role: Role::Worker,
                address: String::new(),
                labels: Default::default(),
                cert_serial: String::new(),
                cert_not_after: 0,
                cert_issuer: String::new(),
                availability: Default::default(),
                ready: true,
            },
        );
    }

    /// Found by the chaos suite: node `m5`'s random id began with "m3", and
    /// `moat node update … m3` answered "ambiguous".
    #[test]
    fn a_host_name_wins_over_an_id_prefix() {
        let mut state = ClusterState::default();
        let (m3, m5, web) = (id_starting("aa"), id_starting("m3aa"), id_starting("m3vv"));
        add(&mut state, m3, "m3");
        add(&mut state, m5, "m5");
        add(&mut state, web, "web");
        let me = m5;
        assert_eq!(resolve(&state, "m3", me).unwrap().id, m3);
        assert_eq!(resolve(&state, &m5.to_string(), me).unwrap().id, m5);
        assert_eq!(resolve(&state, "m3a", me).unwrap().id, m5);
        assert_eq!(resolve(&state, "m3v", me).unwrap().id, web);
        assert_eq!(resolve(&state, "self", me).unwrap().id, m5);
        assert_eq!(resolve(&state, "m5", me).unwrap().id, m5);
        assert!(
            resolve(&state, "nope", me)
                .unwrap_err()
                .message
                .contains("No such node: nope")
        );
        assert!(resolve(&state, "", me).is_err());
        // Without a node named m3, the prefix matches two: ambiguous.
        state.nodes.remove(&m3);
        let e = resolve(&state, "m3", me).unwrap_err();
        assert!(
            e.message.contains("node m3 is ambiguous (2 matches)"),
            "{e:?}"
        );
        // Two nodes with one host name: ambiguous too.
        add(&mut state, id_starting("bb"), "web");
        let e = resolve(&state, "web", me).unwrap_err();
        assert!(e.message.contains("ambiguous (2 matches)"), "{e:?}");
    }
}
