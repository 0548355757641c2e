//! The cluster's CA: issuing certificates under the cluster's policy
//! ([`issue`]), and root CA rotation: start (a new root, or the operator's own, cross-signed
//! by the old one), progress, force, rollback, and the leader's step that
//! finishes a rotation once every node holds a certificate from the new
//! root. The phases live in the store (`ClusterState::ca_rotation`), so a
//! leader change or a crash resumes where the cluster was; nodes follow
//! through their heartbeats (`agent`: trust both roots, renew, then trust
//! the new one alone). See docs/runbooks/rotate-the-ca.md.

use std::time::Duration;

use moat_api::{CaInfo, CaRotateRequest, CaRotationInfo, RootCaInfo, WaitingNode};
use moat_audit::Action;
use moat_pki::{
    CertExpiry, CertificateDer, NodeId, OffsetDateTime, PrivateKey, Role, RootCa, RootOptions,
    cert_pem, fingerprint,
};
use moat_store::model::{
    CaMaterial, CaRotation, ClusterState, Command, JoinTokens, Secret, rfc3339,
};
use moat_tokens::JoinToken;

use crate::member::{Member, operator};
use crate::rpc::{RpcError, RpcErrorKind};

/// An operator's root must stay valid at least this long…
const MIN_EXTERNAL_ROOT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// …and at least this many node certificate lifetimes.
const MIN_EXTERNAL_ROOT_CERT_LIFETIMES: u64 = 4;
/// Largest PEM accepted for an operator's root certificate or key.
const MAX_PEM_BYTES: usize = 64 * 1024;

fn invalid(message: impl Into<String>, hint: &str) -> RpcError {
    RpcError::new(RpcErrorKind::Invalid, message).hint(hint)
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::new(RpcErrorKind::Internal, e.to_string())
}

/// Issues a certificate for `csr_pem` to `node` in `role`, under the
/// cluster's policy, from the root that issues now (the new one during a
/// root rotation), valid from `now`. Returns the certificate, its chain in
/// PEM (with the cross-signed new root during a rotation) and the issuing
/// root's fingerprint.
pub(crate) fn issue(
    state: &ClusterState,
    csr_pem: &str,
    node: NodeId,
    role: Role,
    now: OffsetDateTime,
) -> Result<(moat_pki::IssuedCert, String, String), RpcError> {
    let (ca, intermediate) = state.issuing_ca().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let root = root_ca(ca)?;
    let csr = moat_pki::VerifiedCsr::from_pem(csr_pem.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Invalid, format!("certificate request: {e}")))?;
    let expiry =
        CertExpiry::new(Duration::from_secs(state.policy.cert_expiry_secs)).map_err(internal)?;
    let issued = root
        .issue(&csr, node, role, expiry, now)
        .map_err(internal)?;
    let mut chain_pem = cert_pem(&issued.der);
    if let Some(cross) = intermediate {
        chain_pem.push_str(cross);
    }
    let issuer = fingerprint(root.certificate());
    Ok((issued, chain_pem, issuer))
}

/// The leader's part: an X.509-SVID for task `task_id` of `service`, for
/// the key of `csr_pem`, from the root that issues now, valid `spec`'s
/// lifetime from `now`. Returns the answer and the issuing root's
/// fingerprint.
pub(crate) fn issue_workload(
    state: &ClusterState,
    task_id: &str,
    service: &str,
    spec: moat_orchestrator::IdentitySpec,
    csr_pem: &str,
    now: OffsetDateTime,
) -> Result<(crate::rpc::TaskIdentityResp, String), RpcError> {
    let (ca, cross_signed) = state.issuing_ca().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let root = root_ca(ca)?;
    let csr = moat_pki::VerifiedCsr::from_pem(csr_pem.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Invalid, format!("certificate request: {e}")))?;
    let ttl = moat_pki::WorkloadTtl::new(Duration::from_secs(spec.ttl_secs)).map_err(internal)?;
    let issued = root
        .issue_workload(&csr, task_id, service, ttl, now)
        .map_err(|e| RpcError::new(RpcErrorKind::Invalid, e.to_string()))?;
    let mut chain_pem = moat_pki::cert_pem(&issued.der);
    if let Some(cross) = cross_signed {
        chain_pem.push_str(cross);
    }
    let bundle_pem = state.trusted_roots_pem().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let spiffe_id = moat_pki::spiffe_id(&root.cluster_id(), service).map_err(internal)?;
    Ok((
        crate::rpc::TaskIdentityResp {
            spiffe_id,
            chain_pem,
            bundle_pem,
            serial: issued.serial,
            not_after: issued.not_after.unix_timestamp(),
        },
        fingerprint(root.certificate()),
    ))
}

/// Fingerprint of the root that issues certificates now.
pub(crate) fn issuer_fingerprint(state: &ClusterState) -> Option<String> {
    use moat_pki::pem::PemObject;
    // From the certificate alone, without loading the key: every
    // heartbeat answer carries it (loading the CA for it was an eighth of
    // the leader's CPU at 10,000 nodes, bench/scale).
    let (ca, _) = state.issuing_ca()?;
    let cert = moat_pki::CertificateDer::from_pem_slice(ca.root_cert_pem.as_bytes()).ok()?;
    Some(fingerprint(&cert))
}

pub(crate) fn root_ca(ca: &CaMaterial) -> Result<RootCa, RpcError> {
    use moat_pki::pem::PemObject;
    let internal =
        |what: &str, e: String| RpcError::new(RpcErrorKind::Internal, format!("{what}: {e}"));
    let cert = moat_pki::CertificateDer::from_pem_slice(ca.root_cert_pem.as_bytes())
        .map_err(|e| internal("root certificate", format!("{e:?}")))?;
    let der = zeroize::Zeroizing::new(
        data_encoding::BASE64
            .decode(ca.root_key_pkcs8.expose_secret().as_bytes())
            .map_err(|e| internal("root key", e.to_string()))?,
    );
    let key = PrivateKey::from_pkcs8_der(&der).map_err(|e| internal("root key", e.to_string()))?;
    RootCa::from_parts(cert, key).map_err(|e| internal("root CA", e.to_string()))
}

/// What a root certificate (PEM) is, for people.
pub(crate) fn root_info(pem: &str) -> Result<RootCaInfo, RpcError> {
    let report = moat_pki::inspect(pem.as_bytes())
        .map_err(internal)?
        .into_iter()
        .next()
        .ok_or_else(|| internal("the root CA certificate is empty"))?;
    let der = moat_pki::TrustRoots::from_pem(pem.as_bytes())
        .map_err(internal)?
        .certs()
        .first()
        .map(|c| fingerprint(c.as_ref()))
        .unwrap_or_default();
    Ok(RootCaInfo {
        subject: report.subject,
        algorithm: format!("{} {}", report.key_algorithm, report.key_size),
        signature_algorithm: report.signature_algorithm,
        fingerprint: der,
        serial: report.serial,
        not_before: report.not_before,
        not_after: report.not_after,
    })
}

/// The nodes that do not yet hold a certificate from the new root.
fn waiting(state: &ClusterState, new_fingerprint: &str) -> Vec<WaitingNode> {
    state
        .nodes
        .values()
        .filter(|n| n.cert_issuer != new_fingerprint)
        .map(|n| WaitingNode {
            id: n.id.to_string(),
            hostname: n.hostname.clone(),
            ready: n.ready,
        })
        .collect()
}

/// `moat ca`: the root and any rotation.
pub(crate) fn status(state: &ClusterState) -> Result<CaInfo, RpcError> {
    let ca = state.ca.as_ref().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let rotation = match &state.ca_rotation {
        None => None,
        Some(r) => {
            let new_root = root_info(&r.new_ca.root_cert_pem)?;
            let waiting = waiting(state, &new_root.fingerprint);
            Some(CaRotationInfo {
                id: r.id,
                phase: if waiting.is_empty() || r.force {
                    "finishing".into()
                } else {
                    "reissuing".into()
                },
                started_at: rfc3339(r.started_at),
                new_root,
                external: r.external,
                force: r.force,
                nodes_total: state.nodes.len() as u64,
                nodes_done: (state.nodes.len() - waiting.len()) as u64,
                waiting,
            })
        }
    };
    Ok(CaInfo {
        root: root_info(&ca.root_cert_pem)?,
        root_pem: ca.root_cert_pem.clone(),
        generation: state.ca_generation,
        rotation,
    })
}

/// `moat ca --rotate`: starts a rotation (or forces the one under way).
pub(crate) async fn rotate(node: &Member, mut req: CaRotateRequest) -> Result<CaInfo, RpcError> {
    // An operator's root key is wiped from this request whatever happens.
    let key_pem = req.ca_key_pem.take();
    let state = node.read_state().await?;
    if let Some(r) = &state.ca_rotation {
        if !req.force {
            return Err(RpcError::new(
                RpcErrorKind::FailedPrecondition,
                format!("root CA rotation {} is already under way", r.id),
            )
            .hint("`moat ca` shows its progress; `moat ca --rotate --force` finishes it without the nodes that have not renewed, `moat ca --rollback` abandons it"));
        }
        node.propose_audited(
            Command::ForceCaRotation { id: r.id },
            node.ev(operator(), Action::CA_ROTATE, format!("ca:{}", r.id))
                .detail("phase", "force")
                .detail("waiting", waiting_list(&state, r)),
        )
        .await?;
        return status(&node.read_state().await?);
    }
    let old_ca = state.ca.as_ref().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let old = root_ca(old_ca)?;
    let now = node.clock.now();
    if let Some(secs) = req.cert_expiry_seconds {
        let mut policy = state.policy.clone();
        policy.cert_expiry_secs = crate::wire::cert_expiry(Some(secs))
            .map_err(RpcError::from)?
            .as_secs();
        if policy != state.policy {
            node.propose_audited(
                Command::SetPolicy(policy.clone()),
                node.ev(operator(), Action::POLICY_UPDATE, "cluster")
                    .detail("cert_expiry_seconds", policy.cert_expiry_secs),
            )
            .await?;
        }
    }
    let id = state.ca_generation + 1;
    let external = req.ca_cert_pem.is_some() || key_pem.is_some();
    let new = match (&req.ca_cert_pem, key_pem.as_ref()) {
        (Some(cert), Some(key)) => external_root(&state, &old, cert, key.expose_secret(), now)?,
        (None, None) => RootCa::generate(
            old.cluster_id(),
            &RootOptions {
                generation: u32::try_from(id + 1).unwrap_or(u32::MAX),
                ..RootOptions::default()
            },
            now,
        )
        .map_err(internal)?,
        _ => {
            return Err(invalid(
                "--ca-cert and --ca-key go together",
                "give both the root certificate and its private key, or neither",
            ));
        }
    };
    let cross = old.cross_sign(&new, now).map_err(|e| {
        invalid(
            format!("the new root cannot be cross-signed by the current one: {e}"),
            "use a root certificate whose subject names this cluster (O=<cluster id>) and differs from the current root's",
        )
    })?;
    let new_pem = new.certificate_pem();
    let new_fingerprint = fingerprint(new.certificate());
    let rotation = CaRotation {
        id,
        new_ca: CaMaterial {
            root_cert_pem: new_pem,
            root_key_pkcs8: Secret::new(data_encoding::BASE64.encode(&new.key().to_pkcs8_der())),
        },
        cross_signed_pem: cert_pem(&cross),
        started_at: now.unix_timestamp(),
        force: req.force,
        external,
    };
    node.propose_audited(
        Command::StartCaRotation(rotation),
        node.ev(operator(), Action::CA_ROTATE, format!("ca:{id}"))
            .detail("phase", "start")
            .detail("old_root", fingerprint(old.certificate()))
            .detail("new_root", &new_fingerprint)
            .detail("external", external)
            .detail("force", req.force)
            .detail("nodes", state.nodes.len()),
    )
    .await?;
    tracing::info!(rotation = id, new_root = %new_fingerprint, external, "root CA rotation started");
    // This manager renews at once rather than at its next heartbeat (the
    // others follow at theirs); a one-node cluster is then done.
    if let Err(e) = node.renew().await {
        tracing::warn!(error = %e, "renewing from the new root failed; the next heartbeat retries");
    }
    finish_if_done(node).await;
    status(&node.read_state().await?)
}

/// Checks an operator's root: a CA certificate for this cluster, with the
/// key given, valid now and for long enough, named apart from the current
/// root.
fn external_root(
    state: &ClusterState,
    old: &RootCa,
    cert_pem: &str,
    key_pem: &str,
    now: OffsetDateTime,
) -> Result<RootCa, RpcError> {
    const HINT: &str = "see docs/runbooks/rotate-the-ca.md for what an external root must be";
    if cert_pem.len() > MAX_PEM_BYTES || key_pem.len() > MAX_PEM_BYTES {
        return Err(invalid(
            "the root certificate or key file is too large",
            HINT,
        ));
    }
    let certs = moat_pki::TrustRoots::from_pem(cert_pem.as_bytes())
        .map(|r| r.certs().to_vec())
        .or_else(|_| {
            // Not a root bundle moat can trust: tell why below, from its parts.
            pem_certs(cert_pem)
        })
        .map_err(|e| invalid(format!("--ca-cert is not a PEM certificate: {e}"), HINT))?;
    let [cert] = certs.as_slice() else {
        return Err(invalid(
            format!(
                "--ca-cert holds {} certificates; give exactly one, the root",
                certs.len()
            ),
            HINT,
        ));
    };
    let key = private_key_from_pem(key_pem)
        .map_err(|e| invalid(format!("--ca-key is not a PKCS#8 private key: {e}"), HINT))?;
    let root = RootCa::from_parts(cert.clone(), key).map_err(|e| {
        invalid(
            format!("--ca-cert and --ca-key cannot be this cluster's root: {e}"),
            HINT,
        )
    })?;
    if root.cluster_id() != old.cluster_id() {
        return Err(invalid(
            format!(
                "the root names cluster {} in its subject, not this cluster ({})",
                root.cluster_id(),
                old.cluster_id()
            ),
            "issue it with O=<this cluster's id> in its subject (`moat info` shows the id)",
        ));
    }
    let info = root_info(&root.certificate_pem())?;
    let parse = |t: &str| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(internal)
    };
    let (not_before, not_after) = (parse(&info.not_before)?, parse(&info.not_after)?);
    if not_after <= now {
        return Err(invalid(
            format!("the root certificate expired at {}", info.not_after),
            HINT,
        ));
    }
    if not_before > now + Duration::from_secs(300) {
        return Err(invalid(
            format!(
                "the root certificate is not valid before {}",
                info.not_before
            ),
            "check this manager's clock, or issue the root with an earlier start",
        ));
    }
    let cert_lifetime = Duration::from_secs(
        state
            .policy
            .cert_expiry_secs
            .saturating_mul(MIN_EXTERNAL_ROOT_CERT_LIFETIMES),
    );
    let needed = MIN_EXTERNAL_ROOT_LIFETIME.max(cert_lifetime);
    if not_after < now + needed {
        return Err(invalid(
            format!(
                "the root certificate expires at {}, too soon: it must stay valid for at least {} days",
                info.not_after,
                needed.as_secs() / 86_400
            ),
            HINT,
        ));
    }
    let current = root_info(&old.certificate_pem())?;
    if info.subject == current.subject {
        return Err(invalid(
            format!(
                "the new root has the same subject as the current one ({})",
                info.subject
            ),
            "give the new root a different CN, e.g. CN=<your name> root 2",
        ));
    }
    Ok(root)
}

fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use moat_pki::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn private_key_from_pem(pem: &str) -> Result<PrivateKey, String> {
    PrivateKey::from_pkcs8_pem(pem.as_bytes()).map_err(|e| e.to_string())
}

fn waiting_list(state: &ClusterState, r: &CaRotation) -> String {
    let fp = root_ca(&r.new_ca)
        .map(|c| fingerprint(c.certificate()))
        .unwrap_or_default();
    let names: Vec<String> = waiting(state, &fp)
        .into_iter()
        .map(|w| format!("{} ({})", w.hostname, w.id))
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// `moat ca --rollback`.
pub(crate) async fn rollback(node: &Member) -> Result<CaInfo, RpcError> {
    let state = node.read_state().await?;
    let Some(r) = &state.ca_rotation else {
        return Err(RpcError::new(
            RpcErrorKind::FailedPrecondition,
            "no root CA rotation is under way",
        )
        .hint("a finished rotation cannot be undone; rotate again to change the root"));
    };
    node.propose_audited(
        Command::RollbackCaRotation { id: r.id },
        node.ev(operator(), Action::CA_ROTATE, format!("ca:{}", r.id))
            .detail("phase", "rollback"),
    )
    .await?;
    tracing::warn!(rotation = r.id, "root CA rotation rolled back");
    status(&node.read_state().await?)
}

/// Finishes the rotation now if nothing is left to wait for (after a
/// renewal); the leader's loop would within a second.
pub(crate) async fn finish_if_done(node: &Member) {
    let Some(state) = node.manager().and_then(|m| m.local_state().ok()) else {
        return;
    };
    if let Err(e) = drive(node, &state).await {
        // The leader's loop may have finished it first.
        tracing::debug!(error = %e.message, "root CA rotation not finished here");
    }
}

/// The leader's step: finishes the rotation once every node holds a
/// certificate from the new root, or at once when forced.
pub(crate) async fn drive(node: &Member, state: &ClusterState) -> Result<(), RpcError> {
    let Some(r) = &state.ca_rotation else {
        return Ok(());
    };
    let new = root_ca(&r.new_ca)?;
    let new_fingerprint = fingerprint(new.certificate());
    let left = waiting(state, &new_fingerprint);
    if !left.is_empty() && !r.force {
        return Ok(());
    }
    let bundle = new.certificate_pem();
    let now = node.clock.unix();
    let token = || JoinToken::generate(bundle.as_bytes()).map_err(internal);
    let join_tokens = JoinTokens {
        worker: token()?,
        manager: token()?,
        worker_issued_at: now,
        manager_issued_at: now,
    };
    let left_behind: Vec<String> = left
        .iter()
        .map(|w| format!("{} ({})", w.hostname, w.id))
        .collect();
    let mut ev = node
        .ev(
            moat_audit::Actor::node(node.id),
            Action::CA_ROTATE,
            format!("ca:{}", r.id),
        )
        .detail("phase", "finish")
        .detail("new_root", &new_fingerprint)
        .detail("scoped_tokens_dropped", state.scoped_tokens.len());
    if !left_behind.is_empty() {
        ev = ev.detail("left_behind", left_behind.join(", "));
    }
    node.propose_audited(
        Command::FinishCaRotation {
            id: r.id,
            join_tokens,
        },
        ev,
    )
    .await?;
    tracing::info!(rotation = r.id, new_root = %new_fingerprint, left_behind = left_behind.len(), "root CA rotation finished; join tokens replaced");
    // This manager switches now; the others at their next heartbeat.
    match node.follow_trust(&r.new_ca.root_cert_pem) {
        Ok(_) => node.renew_soon(),
        Err(e) => {
            tracing::warn!(error = %e, "switching trust to the new root failed; the next heartbeat retries")
        }
    }
    Ok(())
}

/// A node that could not follow a rotation (down while it finished) sees
/// its TLS handshakes fail; this is what it tells the operator.
pub(crate) fn left_behind_hint() -> &'static str {
    "if the cluster's root CA was rotated while this node was away, it no longer trusts the managers nor they it: on a manager run `moat join-token worker` (or `manager`), then on this node `moat leave --force` and `MOAT_JOIN_TOKEN=TOKEN moat join MANAGER:PORT`"
}
