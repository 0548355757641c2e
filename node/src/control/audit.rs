//! The control API's audit routes: records, export, proofs, keyed hashes
//! and the crypto inventory behind `moat audit report`.

use std::sync::Arc;

use axum::extract::{Json, State};
use axum::response::{IntoResponse, Response};
use moat_api::{
    AuditExportRequest, AuditHashRequest, AuditHashResponse, AuditProveRequest,
    AuditRecordsRequest, AuditRecordsResponse, AuditSummary, CaInfo, CaRotateRequest,
    CryptoInventory, DataKeyInfo, KeyAge, MAX_AUDIT_PAGE, NodeCrypto, TlsInfo, TokenCrypto,
};
use moat_store::model::rfc3339;

use super::answer::{Answer, Failure, manager};
use crate::daemon::Daemon;
use crate::tokens::token_summaries;
use crate::wire::api_role;

pub(super) async fn records(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<AuditRecordsRequest>,
) -> Answer<AuditRecordsResponse> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let limit = match req.limit {
        0 => MAX_AUDIT_PAGE,
        n => n.min(MAX_AUDIT_PAGE),
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let records = state
        .audit
        .records(
            match req.since {
                0 => state.audit.first_kept(),
                n => n,
            },
            limit,
        )
        .map_err(unreadable)?;
    Ok(Json(AuditRecordsResponse {
        records,
        size: state.audit.size(),
        first: state.audit.first_kept(),
    }))
}

/// Records this manager lacks (it says which), archived (where to read
/// them) or cannot read (named).
fn unreadable(e: moat_store::audit::AuditReadError) -> crate::rpc::RpcError {
    use crate::rpc::{RpcError, RpcErrorKind};
    use moat_store::audit::AuditReadError;
    match e {
        AuditReadError::Missing { .. } => RpcError::new(RpcErrorKind::Unavailable, e.to_string())
            .hint("read them from another manager, or from an earlier export or archive"),
        AuditReadError::Archived { ref mark } => {
            let below = mark.below;
            RpcError::new(RpcErrorKind::FailedPrecondition, e.to_string()).hint(format!(
                "records from {below} on are still on the managers: `moat audit ls --since {below}`"
            ))
        }
        _ => RpcError::new(RpcErrorKind::Internal, e.to_string()),
    }
}

pub(super) async fn export(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<AuditExportRequest>,
) -> Result<Response, Failure> {
    let node = manager(&d).await?;
    // Linearizable: the export holds everything committed before it.
    node.read_state().await?;
    let m = node.require_manager()?;
    let bytes = node.export(&m, req.since, req.until)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

pub(super) async fn prove(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<AuditProveRequest>,
) -> Result<Response, Failure> {
    let node = manager(&d).await?;
    node.read_state().await?;
    let m = node.require_manager()?;
    let json = node.prove(&m, req.seq, req.record)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response())
}

/// `moat audit archive`: marks records as archived once the CLI wrote and
/// verified the archive (decision D48).
pub(super) async fn archive(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<moat_api::AuditArchiveRequest>,
) -> Answer<moat_api::AuditArchiveResponse> {
    let node = manager(&d).await?;
    node.read_state().await?;
    let m = node.require_manager()?;
    Ok(Json(node.archive_audit(&m, req).await?))
}

pub(super) async fn hash(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<AuditHashRequest>,
) -> Answer<AuditHashResponse> {
    // The value is a secret (a token, a key): wiped once hashed.
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    Ok(Json(AuditHashResponse {
        hash: crate::member::audit_hash(&state, req.value.expose_secret())?,
    }))
}

pub(super) async fn ca(State(d): State<Arc<Daemon>>) -> Answer<CaInfo> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    Ok(Json(crate::ca::status(&state)?))
}

pub(super) async fn ca_rotate(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<CaRotateRequest>,
) -> Answer<CaInfo> {
    let node = manager(&d).await?;
    Ok(Json(crate::ca::rotate(&node, req).await?))
}

pub(super) async fn ca_rollback(
    State(d): State<Arc<Daemon>>,
    Json(_): Json<moat_api::Empty>,
) -> Answer<CaInfo> {
    let node = manager(&d).await?;
    Ok(Json(crate::ca::rollback(&node).await?))
}

pub(super) async fn report(State(d): State<Arc<Daemon>>) -> Answer<CryptoInventory> {
    let node = manager(&d).await?;
    let state = node.read_state().await?;
    let root_ca = crate::ca::status(&state)?.root;
    let nodes = state
        .nodes
        .values()
        .map(|n| (n, state.certs.get(&n.id)))
        .map(|(n, info)| NodeCrypto {
            id: n.id.to_string(),
            hostname: n.hostname.clone(),
            role: api_role(n.role),
            ready: n.ready,
            algorithm: info.map(|i| i.algorithm.clone()).unwrap_or_default(),
            serial: n.cert_serial.clone(),
            issuer_fingerprint: n.cert_issuer.clone(),
            not_before: info.map(|i| rfc3339(i.not_before)),
            not_after: rfc3339(n.cert_not_after),
        })
        .collect();
    let tls = moat_pki::tls_summary();
    let m = node.require_manager()?;
    let deks = m.inner.lock().await.as_ref().and_then(|r| r.dek_versions());
    let data_key = DataKeyInfo {
        algorithm: "AES-256-GCM".into(),
        version: deks.as_ref().map(|(v, _)| v.0).unwrap_or(0),
        // From the audit log, never the key file's time: re-wrapping the
        // key under a new unlock key rewrites its file.
        created_at: deks
            .as_ref()
            .and_then(|(v, _)| crate::member::data_key_created(&state.audit, node.id, *v))
            .map(rfc3339),
        rotating_to: deks.and_then(|(_, next)| next.map(|v| v.0)),
        wrapped_by: if state.policy.autolock {
            "unlock key (autolock)".into()
        } else {
            "key file beside the store (autolock off)".into()
        },
    };
    let trail = &state.audit;
    Ok(Json(CryptoInventory {
        generated_at: rfc3339(node.clock.unix()),
        cluster_id: state.cluster_id.map(|c| c.to_string()).unwrap_or_default(),
        answered_by: node.id.to_string(),
        cert_expiry_seconds: state.policy.cert_expiry_secs,
        root_ca,
        nodes,
        tls: TlsInfo {
            versions: tls.versions,
            cipher_suites: tls.cipher_suites,
            key_exchange_groups: tls.key_exchange_groups,
            mutual: true,
        },
        join_tokens: token_summaries(&state)
            .into_iter()
            .map(|t| TokenCrypto {
                id: t.id,
                kind: t.kind,
                role: t.role,
                created_at: t.created_at,
                expires_at: t.expires_at,
                uses_left: t.uses_left,
            })
            .collect(),
        token_ttl_seconds: state.policy.token_ttl_secs,
        autolock: state.policy.autolock,
        unlock_key: state.unlock_key.as_ref().map(|_| KeyAge {
            version: state.unlock_key_version,
            set_at: (state.unlock_key_set_at > 0).then(|| rfc3339(state.unlock_key_set_at)),
        }),
        data_key,
        audit: AuditSummary {
            records: trail.size(),
            heads: trail.head_count() as u64,
            last_head_size: trail.last_head().map(|h| h.size),
            last_head_at: trail.last_head().map(|h| h.time.to_string()),
            snapshot_bytes: node
                .manager()
                .and_then(|m| m.applied.read().ok().map(|a| a.snapshot_bytes))
                .filter(|b| *b > 0),
            snapshot_limit_bytes: Some(moat_store::MAX_SNAPSHOT_BYTES),
        },
        services: super::services::placements(&state),
        secrets: super::secrets::summaries(&state),
        workload_certs: super::services::workload_certs(&state),
    }))
}
