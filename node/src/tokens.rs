//! Join tokens on the manager side: replacing a standing token, and what
//! may be shown of every token (never its secret).

use moat_api::TokenSummary;
use moat_pki::Role;
use moat_store::model::{ClusterState, Command, rfc3339};

use crate::member::Member;
use crate::rpc::{RpcError, RpcErrorKind};
use crate::wire::api_role;

/// Replaces the standing join token for `role` (pinning the current root
/// bundle) and commits it.
pub(crate) async fn rotate_standing_token(
    node: &Member,
    role: Role,
    actor: moat_audit::Actor,
) -> Result<(), RpcError> {
    // Tokens pin the CA's root (not this node's trust, which holds two
    // roots during a rotation).
    let bundle = node
        .read_state()
        .await?
        .ca
        .map(|c| c.root_cert_pem)
        .ok_or_else(|| {
            RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
        })?;
    let token = moat_tokens::JoinToken::generate(bundle.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let fingerprint = token.fingerprint();
    let ev = node
        .ev(
            actor,
            moat_audit::Action::TOKEN_ROTATE,
            format!("token:{}", role.as_str()),
        )
        .detail("role", role.as_str())
        .detail("new_token", fingerprint.to_string());
    node.propose_audited(
        Command::RotateJoinToken {
            role,
            token,
            issued_at: node.clock.unix(),
        },
        ev,
    )
    .await?;
    tracing::info!(role = role.as_str(), token = %fingerprint, "join token rotated");
    Ok(())
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
