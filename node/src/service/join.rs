//! Admitting a node: a join token (checked by the leader's state, then for
//! good by the Raft log), or for a rejoin the node's latest certificate
//! and proof that it holds its key. Refusals are audited within the rate
//! limits of `refusals`.

use std::net::SocketAddr;
use std::str::FromStr;

use moat_api::SecretString;
use moat_pki::{NodeId, Role};
use moat_store::model::{ClusterState, Command, NodeRecord, refusal, rfc3339};
use moat_tokens::JoinToken;
use moat_transport::Caller;

use crate::member::{Manager, Member};
use crate::rpc::{self, RpcError, RpcErrorKind, method};

pub(crate) async fn join(
    node: &Member,
    m: &Manager,
    caller: &Caller,
    data: &[u8],
) -> Result<rpc::CertResp, RpcError> {
    let req: rpc::JoinReq = rpc::decode(method::JOIN, data)?;
    let remote = caller
        .remote
        .map(|r| r.to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut recorded = false;
    let result = admit(node, m, &req, &remote, &mut recorded).await;
    let verdict = match &result {
        Err(_) if !recorded => Some(
            m.refusals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(caller.remote.map(|r| r.ip()), node.clock.instant()),
        ),
        _ => None,
    };
    if let (Err(e), Some(crate::refusals::Verdict::Record { suppressed_before })) =
        (&result, verdict)
    {
        // Refused before anything was proposed: recorded here, within the
        // rate limit (the rest go into a summary: see `refusals`). A join
        // the raft log refused is recorded with its proposal, as failed.
        let fingerprint = JoinToken::from_str(req.token.expose_secret())
            .map(|t| t.fingerprint().to_string())
            .unwrap_or_else(|_| "malformed".into());
        let state = m.local_state().ok();
        let key = state.as_ref().and_then(crate::member::audit_key);
        let ev = node
            .ev(
                moat_audit::Actor::node(node.id),
                moat_audit::Action::NODE_JOIN,
                host_target(&req.hostname),
            )
            .detail("token", fingerprint)
            .secret(
                "token_hmac",
                key.as_ref(),
                req.token.expose_secret().as_bytes(),
            )
            .detail("source", &remote)
            .detail("rejoin", req.rejoin.is_some());
        let ev = if suppressed_before > 0 {
            ev.detail("suppressed_before", suppressed_before)
        } else {
            ev
        }
        .denied(&e.message);
        node.record_or_log(ev).await;
    }
    match &result {
        Ok(resp) => tracing::info!(
            remote = %remote,
            node = %resp.node_id,
            role = resp.role.as_str(),
            token = %JoinToken::from_str(req.token.expose_secret()).map(|t| t.fingerprint().to_string()).unwrap_or_default(),
            "join accepted"
        ),
        Err(e) => tracing::warn!(
            remote = %remote,
            token = %JoinToken::from_str(req.token.expose_secret()).map(|t| t.fingerprint().to_string()).unwrap_or_else(|_| "malformed".into()),
            reason = %e.message,
            "join refused"
        ),
    }
    result
}

async fn admit(
    node: &Member,
    m: &Manager,
    req: &rpc::JoinReq,
    remote: &str,
    recorded: &mut bool,
) -> Result<rpc::CertResp, RpcError> {
    let token = JoinToken::from_str(req.token.expose_secret())
        .map_err(|e| RpcError::new(RpcErrorKind::BadToken, format!("invalid join token: {e}")))?;
    check_fields(req)?;
    let now = node.clock.unix();
    // Read under the lock, not from a copy of the state: a copy per join
    // made joining 10,000 nodes quadratic (bench/scale).
    let Prepared {
        id,
        role,
        record,
        ev,
        issued,
        leaf_pem,
        issuer,
        answer,
    } = m.with_state(|state| prepare(node, state, req, &token, remote, now))?;
    node.propose_audited(
        Command::AdmitNode {
            record,
            token,
            rejoin: req.rejoin.is_some(),
            now,
        },
        ev,
    )
    .await
    .map_err(|e| {
        // Rejected by the log: the entry, and with it the failed record,
        // was committed.
        *recorded = e.kind == RpcErrorKind::FailedPrecondition;
        let refused = [refusal::INVALID, refusal::USED_UP, refusal::EXPIRED]
            .iter()
            .any(|p| e.message.starts_with(p));
        if refused { token_refusal(e.message) } else { e }
    })?;
    m.saw(id);
    if let Err(e) = node
        .record_cert(id, role, &issued, issuer, moat_audit::Action::CERT_ISSUE)
        .await
    {
        // The node is admitted; only its certificate's details wait for
        // its first renewal.
        tracing::error!(node = %id, error = %e.message, "could not record the certificate issued");
    }
    Ok(rpc::CertResp {
        node_id: id,
        role,
        chain_pem: leaf_pem,
        managers: node.manager_peers(),
        warning: answer.warning,
        unlock_key: answer.unlock_key,
        key_generation: answer.key_generation,
    })
}

/// What a join takes from the state, read under its lock.
struct Prepared {
    id: NodeId,
    role: Role,
    record: NodeRecord,
    ev: crate::member::EventDraft,
    issued: moat_pki::IssuedCert,
    leaf_pem: String,
    issuer: String,
    answer: Answer,
}

/// The parts of the join's answer that come from the state.
struct Answer {
    warning: Option<String>,
    unlock_key: Option<SecretString>,
    key_generation: u32,
}

/// Checks the token and the rejoin proof against `state`, issues the
/// certificate and drafts the node's record and audit event.
fn prepare(
    node: &Member,
    state: &ClusterState,
    req: &rpc::JoinReq,
    token: &JoinToken,
    remote: &str,
    now: i64,
) -> Result<Prepared, RpcError> {
    // A fast refusal here; the Raft log decides for good (AdmitNode).
    let role = state.check_token(token, now).map_err(token_refusal)?.role();
    let id = match &req.rejoin {
        None => NodeId::generate(),
        Some(proof) => {
            let id = prove_rejoin(state, proof, &req.csr_pem)?;
            // A rejoin keeps the node's role: a manager needs the manager
            // token, so a worker token cannot take over a manager's identity.
            if state
                .nodes
                .get(&id)
                .is_some_and(|n| n.role == Role::Manager)
                && role != Role::Manager
            {
                return Err(RpcError::new(
                    RpcErrorKind::BadToken,
                    format!("node {id} is a manager: it rejoins with the manager join token"),
                )
                .hint("get it with `moat join-token manager` on a manager"));
            }
            id
        }
    };
    if state.is_removed(&id) {
        return Err(RpcError::new(
            RpcErrorKind::Removed,
            format!(
                "node {id} was removed from the cluster and cannot rejoin with its old identity"
            ),
        )
        .hint("run `moat leave --force` on the node, then join without --rejoin"));
    }
    let (issued, leaf_pem, issuer) =
        crate::ca::issue(state, &req.csr_pem, id, role, node.clock.now())?;
    let previous = state.nodes.get(&id);
    let record = NodeRecord {
        id,
        hostname: req.hostname.clone(),
        role,
        address: req.advertise_addr.clone(),
        labels: previous.map(|p| p.labels.clone()).unwrap_or_default(),
        cert_serial: issued.serial.clone(),
        cert_not_after: issued.not_after.unix_timestamp(),
        cert_issuer: issuer.clone(),
        availability: previous.map(|p| p.availability).unwrap_or_default(),
        ready: true,
    };
    let ev = node
        .ev(
            moat_audit::Actor::node(node.id),
            moat_audit::Action::NODE_JOIN,
            format!("node:{id}"),
        )
        .detail("hostname", &req.hostname)
        .detail("role", role.as_str())
        .detail("token", token.fingerprint())
        .secret(
            "token_hmac",
            crate::member::audit_key(state).as_ref(),
            req.token.expose_secret().as_bytes(),
        )
        .detail("source", remote)
        .detail("address", &req.advertise_addr)
        .detail("rejoin", req.rejoin.is_some())
        .detail("serial", &issued.serial)
        .detail("not_after", rfc3339(issued.not_after.unix_timestamp()));
    let answer = Answer {
        warning: if role == Role::Manager {
            let before = state
                .nodes
                .values()
                .filter(|n| n.role == Role::Manager && n.id != id)
                .count();
            crate::member::even_managers_warning(before + 1)
        } else {
            None
        },
        unlock_key: match (role, state.policy.autolock, &state.unlock_key) {
            (Role::Manager, true, Some(key)) => {
                Some(SecretString::new(key.expose_secret().to_string()))
            }
            _ => None,
        },
        key_generation: state.unlock_key_version,
    };
    Ok(Prepared {
        id,
        role,
        record,
        ev,
        issued,
        leaf_pem,
        issuer,
        answer,
    })
}

/// The joiner's own words about itself, checked before they reach the
/// store, every member's `moat node ls` and the audit log: a host name
/// by RFC 1123 (no terminal escape gets in) and an IP address and port.
fn check_fields(req: &rpc::JoinReq) -> Result<(), RpcError> {
    moat_api::validate_hostname(&req.hostname).map_err(|e| {
        RpcError::new(RpcErrorKind::Invalid, format!("invalid host name: {e}")).hint(
            "start the joining node's daemon with --hostname NAME (ASCII letters, digits, \
             hyphens and dots), then join again",
        )
    })?;
    if req.advertise_addr.len() > 64 || req.advertise_addr.parse::<SocketAddr>().is_err() {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            "invalid advertise address: it must be an IP address and port",
        )
        .hint("give the joining node --advertise-addr IP:PORT"));
    }
    Ok(())
}

/// How a refused join names the host it came from in the audit log: the
/// host name, or for an invalid one its first characters with anything
/// but letters, digits, hyphens and dots escaped.
fn host_target(hostname: &str) -> String {
    if moat_api::validate_hostname(hostname).is_ok() {
        return format!("host:{hostname}");
    }
    let mut shown = String::new();
    for c in hostname.chars().take(64) {
        if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
            shown.push(c);
        } else {
            shown.extend(c.escape_unicode());
        }
    }
    format!("host-invalid:{shown}")
}

/// A refused token, with the next step for the operator.
fn token_refusal(why: String) -> RpcError {
    let hint = if why.starts_with(refusal::USED_UP) || why.starts_with(refusal::EXPIRED) {
        "ask a manager's operator for a new token (`moat join-token create` or `moat join-token worker`)"
    } else {
        "get the current token with `moat join-token worker` (or `manager`) on a manager"
    };
    RpcError::new(RpcErrorKind::BadToken, why).hint(hint)
}

/// Checks a rejoin proof against the cluster's root: the old certificate
/// was issued by it, and the caller holds its key. Returns the node id.
fn prove_rejoin(
    state: &moat_store::model::ClusterState,
    proof: &rpc::RejoinProof,
    csr_pem: &str,
) -> Result<NodeId, RpcError> {
    let denied = |why: String| {
        RpcError::new(
            RpcErrorKind::Denied,
            format!("cannot rejoin with the old identity: {why}"),
        )
    };
    let ca = state.ca.as_ref().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let roots = moat_pki::TrustRoots::from_pem(ca.root_cert_pem.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let cluster = state.cluster_id.ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    let chain = crate::files::chain_from_pem(&proof.chain_pem)
        .map_err(|e| denied(e.message().to_string()))?;
    let signature = data_encoding::BASE64
        .decode(proof.signature_b64.as_bytes())
        .map_err(|e| denied(format!("signature: {e}")))?;
    let identity = moat_pki::verify_possession(
        &chain,
        &roots,
        &cluster,
        &rpc::rejoin_message(csr_pem),
        &signature,
    )
    .map_err(|e| denied(e.to_string()))?;
    // Only the node's latest certificate, the one the store records, can
    // vouch for it: not an older one from a backup or a superseded key.
    let recorded = state.nodes.get(&identity.node_id).ok_or_else(|| {
        denied(format!(
            "node {} is not a member of this cluster",
            identity.node_id
        ))
    })?;
    if recorded.cert_serial != identity.serial {
        return Err(denied(format!(
            "the certificate presented (serial {}) is not node {}'s latest one",
            identity.serial, identity.node_id
        ))
        .hint("remove the node with `moat node rm` on a manager, then join it as a new node"));
    }
    Ok(identity.node_id)
}

#[cfg(test)]
mod rejoin_tests {
    use super::*;
    use moat_pki::{
        CertExpiry, ClusterId, KeyAlgorithm, OffsetDateTime, PrivateKey, RootCa, RootOptions,
    };
    use moat_store::model::{CaMaterial, ClusterState, Secret};

    fn cluster() -> (ClusterState, RootCa) {
        let cluster = ClusterId::generate();
        let root =
            RootCa::generate(cluster, &RootOptions::default(), OffsetDateTime::now_utc()).unwrap();
        let state = ClusterState {
            cluster_id: Some(cluster),
            ca: Some(CaMaterial {
                root_cert_pem: root.certificate_pem(),
                root_key_pkcs8: Secret::new(
                    data_encoding::BASE64.encode(&root.key().to_pkcs8_der()),
                ),
            }),
            ..Default::default()
        };
        (state, root)
    }

    /// A certificate for `id` issued at `at`, its key, and a record of it.
    fn issue(root: &RootCa, id: NodeId, at: OffsetDateTime) -> (String, PrivateKey, String) {
        let key = PrivateKey::generate(KeyAlgorithm::default()).unwrap();
        let csr = moat_pki::VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
        let issued = root
            .issue(&csr, id, Role::Worker, CertExpiry::DEFAULT, at)
            .unwrap();
        (moat_pki::cert_pem(&issued.der), key, issued.serial)
    }

    fn proof(chain_pem: &str, key: &PrivateKey, csr_pem: &str) -> rpc::RejoinProof {
        rpc::RejoinProof {
            chain_pem: chain_pem.to_string(),
            signature_b64: data_encoding::BASE64
                .encode(&key.sign(&rpc::rejoin_message(csr_pem)).unwrap()),
        }
    }

    fn record(id: NodeId, serial: &str) -> NodeRecord {
        NodeRecord {
            id,
            hostname: "w".into(),
            role: Role::Worker,
            address: String::new(),
            labels: Default::default(),
            cert_serial: serial.to_string(),
            cert_not_after: 0,
            cert_issuer: String::new(),
            availability: Default::default(),
            ready: false,
        }
    }

    #[test]
    fn only_the_latest_expired_certificate_proves_a_rejoin() {
        let (mut state, root) = cluster();
        let id = NodeId::generate();
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(10);
        let (old_pem, old_key, _) = issue(&root, id, long_ago);
        let (last_pem, last_key, last_serial) =
            issue(&root, id, long_ago + time::Duration::days(1));
        state.nodes.insert(id, record(id, &last_serial));
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nnew\n-----END CERTIFICATE REQUEST-----\n";

        // The latest (expired) certificate and its key: the node keeps its id.
        assert_eq!(
            prove_rejoin(&state, &proof(&last_pem, &last_key, csr), csr).unwrap(),
            id
        );
        // An older certificate of the same node (from a backup): refused.
        let e = prove_rejoin(&state, &proof(&old_pem, &old_key, csr), csr).unwrap_err();
        assert!(e.message.contains("latest"), "{}", e.message);
        // The right certificate with another key: refused.
        let e = prove_rejoin(&state, &proof(&last_pem, &old_key, csr), csr).unwrap_err();
        assert_eq!(e.kind, RpcErrorKind::Denied);
        // A signature over another CSR: refused (no replay).
        let other = proof(&last_pem, &last_key, "another csr");
        assert!(prove_rejoin(&state, &other, csr).is_err());
        // A node the cluster does not know: refused.
        state.nodes.clear();
        assert!(prove_rejoin(&state, &proof(&last_pem, &last_key, csr), csr).is_err());
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    fn req(hostname: &str, advertise_addr: &str) -> rpc::JoinReq {
        rpc::JoinReq {
            token: SecretString::new("MOATTKN-1-x".into()),
            csr_pem: String::new(),
            hostname: hostname.into(),
            advertise_addr: advertise_addr.into(),
            rejoin: None,
        }
    }

    /// Guards issue 16, finding 5: a joiner (an old or modified `moat`)
    /// that sends a host name with a terminal escape is refused by the
    /// manager before its name reaches the store, with an error that does
    /// not echo the escape.
    #[test]
    fn a_join_with_a_hostile_host_name_or_address_is_refused() {
        assert!(check_fields(&req("worker-1", "10.0.0.21:4377")).is_ok());
        assert!(check_fields(&req("w.example.com", "[::1]:4377")).is_ok());
        for bad in ["\u{1b}]0;pwned\u{7}", "", "a..b", "-w", &"a".repeat(254)] {
            let e = check_fields(&req(bad, "10.0.0.21:4377")).unwrap_err();
            assert_eq!(e.kind, RpcErrorKind::Invalid, "{bad:?}");
            assert!(
                e.message.starts_with("invalid host name: "),
                "{}",
                e.message
            );
            assert!(!e.message.contains('\u{1b}'), "{}", e.message);
        }
        for bad in ["", "10.0.0.21", "\u{1b}[2J:4377", "host.example:4377"] {
            let e = check_fields(&req("worker-1", bad)).unwrap_err();
            assert_eq!(e.kind, RpcErrorKind::Invalid, "{bad:?}");
        }
    }

    /// A refused join's audit target never holds the escape itself.
    #[test]
    fn a_refused_join_names_its_host_escaped() {
        assert_eq!(host_target("worker-1"), "host:worker-1");
        assert_eq!(
            host_target("\u{1b}]0;pwned\u{7}"),
            "host-invalid:\\u{1b}\\u{5d}0\\u{3b}pwned\\u{7}"
        );
        assert!(host_target(&"\u{1b}".repeat(10_000)).len() < 64 * 10 + 20);
    }
}
