//! Cluster settings: `moat update` (certificate lifetime, standing token
//! lifetime, autolock), `moat unlock`, and `moat unlock-key` (show,
//! rotate).

use std::sync::Arc;

use axum::extract::{Json, State};
use moat_api::{
    ErrorKind, SecretString, UnlockKeyResponse, UnlockRequest, UnlockResponse, UpdateRequest,
    UpdateResponse,
};
use moat_audit::Action;
use moat_store::model::{self, Command, rfc3339};

use super::answer::{Answer, Failure, manager};
use super::tokens::MAX_TOKEN_TTL_SECS;
use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::member::{Member, operator};
use crate::wire::cert_expiry;

pub(super) async fn unlock(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<UnlockRequest>,
) -> Answer<UnlockResponse> {
    Ok(Json(d.unlock(req).await?))
}

/// The cluster's autolock setting, read linearizably.
async fn current_unlock_key(node: &Member) -> Result<UnlockKeyResponse, Failure> {
    let state = node.read_state().await?;
    match (&state.unlock_key, state.policy.autolock) {
        (Some(key), true) => Ok(UnlockKeyResponse {
            key: SecretString::new(key.expose_secret().to_string()),
            generation: state.unlock_key_version,
            set_at: rfc3339(state.unlock_key_set_at),
        }),
        _ => Err(
            NodeError::new(ErrorKind::FailedPrecondition, "no unlock key is set")
                .hint("autolock is off; turn it on with `moat update --autolock=true`")
                .into(),
        ),
    }
}

pub(super) async fn unlock_key(State(d): State<Arc<Daemon>>) -> Answer<UnlockKeyResponse> {
    let node = manager(&d).await?;
    Ok(Json(current_unlock_key(&node).await?))
}

pub(super) async fn unlock_key_rotate(State(d): State<Arc<Daemon>>) -> Answer<UnlockKeyResponse> {
    let node = manager(&d).await?;
    let key = moat_lock::UnlockKey::generate()
        .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
    let generation = current_unlock_key(&node).await?.generation;
    node.propose_audited(
        Command::RotateUnlockKey {
            key: model::Secret::new(key.expose_for_operator().as_str()),
            now: node.clock.unix(),
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
async fn rekey_here(node: &Arc<Member>) {
    let wanted = match node.read_state().await {
        Ok(s) => s.unlock_key_version,
        Err(_) => return,
    };
    let applied = async {
        loop {
            let done = node
                .manager()
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

pub(super) async fn update(
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
            return Err(NodeError::new(
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
                    .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?
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
                now: node.clock.unix(),
            },
            node.ev(operator(), action, "cluster"),
        )
        .await?;
        tracing::info!(autolock = on, "autolock changed");
        rekey_here(&node).await;
        unlock_key = key.map(|k| SecretString::new(k.to_string()));
    }
    let Json(info) = super::cluster::info(State(d)).await?;
    Ok(Json(UpdateResponse { info, unlock_key }))
}
