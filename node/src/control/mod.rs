//! The control API: HTTP+JSON on the daemon's unix socket (see moat-api
//! for the paths and types). The socket's file mode is the
//! authentication: whoever can connect is the node's operator.
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | binding the socket, the routes, refusing everything but `info` and `unlock` while locked |
//! | `answer.rs` | error answers, and the "must be a manager" check |
//! | `cluster.rs` | `info`, `init`, `join`, `leave`, `backup` |
//! | `nodes.rs` | `node ls/inspect/promote/demote/rm/update` |
//! | `tokens.rs` | `join-token` |
//! | `settings.rs` | `update`, `unlock`, `unlock-key` |
//! | `audit.rs` | `audit`, `ca` |
//! | `services.rs` | `service …`, `node ps` (flags to specs: `specs.rs`) |
//! | `secrets.rs` | `secret …`, `config …` |

mod answer;
mod audit;
mod cluster;
mod nodes;
mod secrets;
mod services;
mod settings;
mod specs;
mod tokens;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use moat_api::path;
use tokio::net::UnixListener;

use crate::daemon::Daemon;
use crate::error::NodeError;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Binds the control socket: a stale socket file from a crashed daemon is
/// replaced (the state directory lock proves no daemon uses it), and the
/// socket is made owner-only.
pub(crate) fn bind(socket: &Path) -> Result<UnixListener, NodeError> {
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
) -> Result<(), NodeError> {
    let app = axum::Router::new()
        .route(path::INFO, get(cluster::info))
        .route(path::INIT, post(cluster::init))
        .route(path::JOIN, post(cluster::join))
        .route(path::LEAVE, post(cluster::leave))
        .route(path::BACKUP, post(cluster::backup))
        .route(path::JOIN_TOKEN, post(tokens::join_token))
        .route(path::JOIN_TOKEN_CREATE, post(tokens::token_create))
        .route(path::JOIN_TOKENS, get(tokens::token_ls))
        .route(path::JOIN_TOKEN_REVOKE, post(tokens::token_revoke))
        .route(path::NODES, get(nodes::node_ls))
        .route(path::NODE_INSPECT, post(nodes::node_inspect))
        .route(path::NODE_ROLE, post(nodes::node_role))
        .route(path::NODE_REMOVE, post(nodes::node_rm))
        .route(path::NODE_UPDATE, post(nodes::node_update))
        .route(path::UPDATE, post(settings::update))
        .route(path::UNLOCK, post(settings::unlock))
        .route(path::UNLOCK_KEY, get(settings::unlock_key))
        .route(path::UNLOCK_KEY_ROTATE, post(settings::unlock_key_rotate))
        .route(path::AUDIT_RECORDS, post(audit::records))
        .route(path::AUDIT_EXPORT, post(audit::export))
        .route(path::AUDIT_PROVE, post(audit::prove))
        .route(moat_api::AUDIT_ARCHIVE_PATH, post(audit::archive))
        .route(path::AUDIT_HASH, post(audit::hash))
        .route(path::AUDIT_REPORT, get(audit::report))
        .route(path::CA, get(audit::ca))
        .route(path::CA_ROTATE, post(audit::ca_rotate))
        .route(path::CA_ROLLBACK, post(audit::ca_rollback))
        .route(path::SERVICES, get(services::service_ls))
        .route(path::SERVICE_CREATE, post(services::service_create))
        .route(path::SERVICE_INSPECT, post(services::service_inspect))
        .route(path::SERVICE_PS, post(services::service_ps))
        .route(path::SERVICE_SCALE, post(services::service_scale))
        .route(path::SERVICE_UPDATE, post(services::service_update))
        .route(path::SERVICE_ROLLBACK, post(services::service_rollback))
        .route(path::SERVICE_REMOVE, post(services::service_rm))
        .route(path::NODE_PS, post(services::node_ps))
        .route(path::SERVICE_LOGS, post(services::service_logs))
        .route(path::SECRETS, post(secrets::secret_ls))
        .route(
            path::SECRET_CREATE,
            post(secrets::secret_create).layer(axum::extract::DefaultBodyLimit::max(
                secrets::MAX_SECRET_BODY_BYTES,
            )),
        )
        .route(
            path::SECRET_UPDATE,
            post(secrets::secret_update).layer(axum::extract::DefaultBodyLimit::max(
                secrets::MAX_SECRET_BODY_BYTES,
            )),
        )
        .route(path::SECRET_INSPECT, post(secrets::secret_inspect))
        .route(path::SECRET_REMOVE, post(secrets::secret_rm))
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
        return answer::Failure::from(crate::faults::locked_error()).into_response();
    }
    next.run(request).await
}
