//! `moat join-token …`: show and rotate the standing tokens, create,
//! list and revoke scoped ones.

use std::sync::Arc;

use axum::extract::{Json, State};
use moat_api::{
    CreateTokenRequest, CreateTokenResponse, ErrorKind, JoinTokenRequest, JoinTokenResponse,
    SecretString, TokenRef, TokenSummary,
};
use moat_audit::Action;
use moat_store::model::{self, Command, rfc3339};
use moat_tokens::JoinToken;

use super::answer::{Answer, Failure, manager};
use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::member::operator;
use crate::tokens::token_summaries;
use crate::wire::check_labels;

/// Longest lifetime and most uses a scoped token may have (one year as
/// `1y` means: 365.25 days).
pub(super) const MAX_TOKEN_TTL_SECS: u64 = 31_557_600;
const MAX_TOKEN_USES: u32 = 1_000_000;

pub(super) async fn join_token(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<JoinTokenRequest>,
) -> Answer<JoinTokenResponse> {
    let node = manager(&d).await?;
    let role = crate::wire::role(req.role);
    if req.rotate {
        crate::tokens::rotate_standing_token(&node, role, operator()).await?;
    }
    let state = node.read_state().await?;
    let tokens = state
        .join_tokens
        .as_ref()
        .ok_or_else(|| NodeError::new(ErrorKind::Unavailable, "the cluster is not initialized"))?;
    let (token, _) = tokens.standing(role);
    Ok(Json(JoinTokenResponse {
        role: req.role,
        token: SecretString::new(token.expose_secret().to_string()),
        addr: node.node_file().advertise_addr,
        rotated: req.rotate,
    }))
}

pub(super) async fn token_create(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<CreateTokenRequest>,
) -> Answer<CreateTokenResponse> {
    let node = manager(&d).await?;
    let invalid = |m: String| Failure::from(NodeError::new(ErrorKind::InvalidArgument, m));
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
    let role = crate::wire::role(req.role);
    let bundle = node
        .read_state()
        .await?
        .ca
        .map(|c| c.root_cert_pem)
        .ok_or_else(|| NodeError::new(ErrorKind::Unavailable, "the cluster is not initialized"))?;
    let token = JoinToken::generate(bundle.as_bytes())
        .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
    let id = token.fingerprint().to_string();
    let now = node.clock.unix();
    let expires_at = req
        .ttl_seconds
        .map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)));
    let secret = SecretString::new(token.expose_secret().to_string());
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

pub(super) async fn token_ls(State(d): State<Arc<Daemon>>) -> Answer<Vec<TokenSummary>> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    Ok(Json(token_summaries(&state)))
}

pub(super) async fn token_revoke(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<TokenRef>,
) -> Answer<TokenRef> {
    let node = manager(&d).await?;
    if req.id.is_empty() {
        return Err(NodeError::new(
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
            let e = NodeError::new(
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
            return Err(NodeError::new(
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
