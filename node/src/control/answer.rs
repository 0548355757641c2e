//! Answers of the control API: an error is an [`ApiError`] with its HTTP
//! status — the one place where the daemon's errors ([`NodeError`]) meet
//! the control wire.

use std::sync::Arc;

use axum::extract::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moat_api::ApiError;

use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::member::Member;
use crate::rpc::RpcError;

/// An error answer.
pub(crate) struct Failure(ApiError);

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Self {
        if e.is_fatal() {
            tracing::error!(error = %e, "answering with damage found in the state directory");
        }
        Self(e.into_api())
    }
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        Self::from(e.into_node())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

/// A handler's answer.
pub(crate) type Answer<T> = Result<Json<T>, Failure>;

/// The member node, which must be a manager.
pub(crate) async fn manager(d: &Daemon) -> Result<Arc<Member>, Failure> {
    let node = d.member().await?;
    node.require_manager()?;
    Ok(node)
}
