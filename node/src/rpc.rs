//! The cluster RPCs a node makes to a manager: method names, JSON bodies
//! and the error every answer may carry.
//!
//! Carried by moat-transport's generic `Cluster.Call`. Who may call what is
//! decided in [`crate::service`].

use std::time::Duration;

use moat_api::ErrorKind;
use moat_api::SecretString;
use moat_pki::{NodeId, Role};
use moat_store::model::Command;
use moat_transport::{ClusterClient, Code, ServerTrust, Status};
use serde::de::DeserializeOwned;

use crate::error::NodeError;
use serde::{Deserialize, Serialize};

/// How long one cluster call may take, unless the method says otherwise.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A manager that does not accept a TLS connection within this is taken as
/// unreachable, so a caller moves on to another manager (a dead host drops
/// packets instead of refusing them).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Joins and voter additions wait for Raft (and a manager's catch-up).
pub(crate) const SLOW_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The method names.
pub(crate) mod method {
    /// Unauthenticated: the root CA bundle.
    pub(crate) const CA_BUNDLE: &str = "ca_bundle";
    /// Unauthenticated (the token is the credential): a first certificate.
    pub(crate) const JOIN: &str = "join";
    /// Any node: a fresh certificate for its current role.
    pub(crate) const RENEW: &str = "renew";
    /// Any node, on the leader: liveness and the manager list.
    pub(crate) const HEARTBEAT: &str = "heartbeat";
    /// Managers, on the leader: commit a command.
    pub(crate) const PROPOSE: &str = "propose";
    /// Managers, on the leader: a linearizable read point.
    pub(crate) const READ_INDEX: &str = "read_index";
    /// The calling manager, on the leader: make me a voter.
    pub(crate) const ADD_VOTER: &str = "add_voter";
    /// Managers (and a node leaving, for itself), on the leader:
    /// operations that change Raft membership.
    pub(crate) const ADMIN: &str = "admin";
    /// Any node, for itself: record events from its local journal in the
    /// cluster's audit log.
    pub(crate) const AUDIT_FORWARD: &str = "audit_forward";
    /// Any node, for itself, on the leader: report its tasks' states and
    /// learn its assignments (a long poll).
    pub(crate) const TASK_SYNC: &str = "task_sync";
    /// Any node, for itself, on the leader: the output of one of its
    /// tasks, as a `task_sync` answer asked.
    pub(crate) const TASK_LOGS: &str = "task_logs";
    /// Managers, on the leader: the output of tasks, gathered from their
    /// nodes (`service logs`).
    pub(crate) const GATHER_LOGS: &str = "gather_logs";
    /// Any node, for itself, on the leader: the secrets and configs of one
    /// of its tasks (only while the task is assigned to it and is to run).
    pub(crate) const TASK_SECRETS: &str = "task_secrets";
    /// Any node, for itself, on the leader: a workload certificate for one
    /// of its tasks (only while the task is assigned to it and is to run).
    pub(crate) const TASK_IDENTITY: &str = "task_identity";
    /// Managers, on any manager: a page of audit records, to fill a gap
    /// left by an installed snapshot (issue 19, step 3; decision D48).
    pub(crate) const AUDIT_RECORDS: &str = "audit_records";
}

/// `audit_records` request: records `from ..= to` are wanted; the answer
/// holds the newest of them that fit one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRecordsReq {
    pub(crate) from: u64,
    pub(crate) to: u64,
    /// The Merkle leaf hashes of the records instead of the records (for
    /// archived records, which a manager that joined after the archival
    /// needs to build the tree).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) leaves: bool,
}

/// Most records in one `audit_records` answer.
pub(crate) const MAX_AUDIT_FETCH_RECORDS: usize = 4096;
/// Most bytes of record text in one `audit_records` answer (the JSON
/// encoding at most doubles it: under the transport's 16 MiB).
pub(crate) const MAX_AUDIT_FETCH_BYTES: usize = 4 << 20;
/// Most leaf hashes in one `audit_records` answer (64 hex digits each:
/// about 4.5 MiB of JSON).
pub(crate) const MAX_AUDIT_FETCH_LEAVES: usize = 65_536;

/// `audit_records` answer: records `first ..= to` of the request, as
/// canonical lines (plaintext: the channel is mutual TLS between
/// managers), `first >= from`, at least one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRecordsResp {
    pub(crate) first: u64,
    #[serde(default)]
    pub(crate) records: Vec<String>,
    /// For a `leaves` request: the leaf hashes of records `first ..= to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) leaves: Vec<moat_audit::Hash>,
}

impl AuditRecordsResp {
    /// Checks the answer's shape against `req` (its records are checked
    /// against the log by the store before anything is written).
    pub(crate) fn check(&self, req: &AuditRecordsReq) -> Result<(), String> {
        let n = if req.leaves {
            let n = self.leaves.len();
            if !self.records.is_empty() || n == 0 || n > MAX_AUDIT_FETCH_LEAVES {
                return Err(format!(
                    "{n} leaf hashes and {} records in one answer (1 to {MAX_AUDIT_FETCH_LEAVES} leaf hashes expected)",
                    self.records.len()
                ));
            }
            n
        } else {
            let n = self.records.len();
            if !self.leaves.is_empty() || n == 0 || n > MAX_AUDIT_FETCH_RECORDS {
                return Err(format!(
                    "{n} records in one answer (1 to {MAX_AUDIT_FETCH_RECORDS} expected)"
                ));
            }
            n
        };
        let bytes: usize = self.records.iter().map(String::len).sum();
        if bytes > MAX_AUDIT_FETCH_BYTES {
            return Err(format!(
                "{bytes} bytes of records in one answer (at most {MAX_AUDIT_FETCH_BYTES})"
            ));
        }
        if self.first < req.from || self.first.checked_add(n as u64 - 1) != Some(req.to) {
            return Err(format!(
                "records from {} ({n}) do not end at record {} asked for",
                self.first, req.to
            ));
        }
        Ok(())
    }
}

/// `task_secrets` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskSecretsReq {
    pub(crate) task_id: String,
}

/// `task_secrets` answer: the task's files (their data never prints:
/// `SecretData`'s `Debug` shows the length).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskSecretsResp {
    pub(crate) files: Vec<moat_executor::TaskFile>,
}

/// `task_identity` request: a CSR for the key the node made for the task
/// (the key never leaves the node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskIdentityReq {
    pub(crate) task_id: String,
    pub(crate) csr_pem: String,
}

/// `task_identity` answer: the task's X.509-SVID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskIdentityResp {
    /// `spiffe://<cluster>/service/<name>`.
    pub(crate) spiffe_id: String,
    /// The certificate, then the cross-signed new root during a CA
    /// rotation (PEM).
    pub(crate) chain_pem: String,
    /// The roots a peer should trust (PEM): the CA's, and the new one
    /// during a rotation.
    pub(crate) bundle_pem: String,
    /// Its serial (hex).
    pub(crate) serial: String,
    /// Its `NotAfter` (Unix seconds).
    pub(crate) not_after: i64,
}

impl TaskIdentityResp {
    /// What a node checks of a `task_identity` answer before it uses it: a
    /// SPIFFE ID, a chain and a bundle that parse (within the chain limit),
    /// and a hex serial. Returns the chain and the bundle.
    pub(crate) fn check(
        &self,
    ) -> Result<(Vec<moat_pki::CertificateDer<'static>>, moat_pki::TrustRoots), RpcError> {
        use moat_pki::pem::PemObject;
        let resp = self;
        let bad =
            |what: String| RpcError::new(RpcErrorKind::Internal, format!("the leader sent {what}"));
        if !resp.spiffe_id.starts_with("spiffe://") || resp.spiffe_id.len() > 2048 {
            return Err(bad("a SPIFFE ID that is not one".into()));
        }
        if resp.serial.is_empty()
            || resp.serial.len() > 64
            || !resp.serial.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad("a serial that is not hex".into()));
        }
        let chain = moat_pki::CertificateDer::pem_slice_iter(resp.chain_pem.as_bytes())
            .take(moat_pki::MAX_CHAIN_LEN + 1)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("a certificate that does not read: {e:?}")))?;
        if chain.is_empty() || chain.len() > moat_pki::MAX_CHAIN_LEN {
            return Err(bad(format!("a chain of {} certificates", chain.len())));
        }
        let roots = moat_pki::TrustRoots::from_pem(resp.bundle_pem.as_bytes())
            .map_err(|e| bad(format!("roots that do not read: {e}")))?;
        Ok((chain, roots))
    }
}

/// `task_sync` request: the state of every task the node holds, and the
/// digest of the assignments it last got (the call waits up to `wait_ms`
/// for them to change).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskSyncReq {
    pub(crate) reports: Vec<moat_orchestrator::TaskReport>,
    #[serde(default)]
    pub(crate) known: Option<String>,
    #[serde(default)]
    pub(crate) wait_ms: u64,
}

/// `task_sync` answer: every task the node must run or stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskSyncResp {
    pub(crate) assignments: Vec<moat_orchestrator::Assignment>,
    pub(crate) digest: String,
    /// Requests for the output of this node's tasks (`service logs`),
    /// answered with `task_logs`.
    #[serde(default)]
    pub(crate) log_requests: Vec<crate::logs::LogRequest>,
}

/// `task_logs` request: a node's answer to one log request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskLogsReq {
    pub(crate) id: u64,
    /// The output (lossy UTF-8, at most the tail asked for), or why not.
    pub(crate) output: Result<String, String>,
}

/// `gather_logs` request: the tasks whose output a manager wants, with
/// the nodes they run on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GatherLogsReq {
    pub(crate) tasks: Vec<GatherTask>,
    #[serde(default)]
    pub(crate) tail_bytes: Option<u64>,
}

/// One task of a [`GatherLogsReq`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GatherTask {
    pub(crate) task_id: String,
    pub(crate) node_id: String,
}

/// `gather_logs` answer: per task, in the order asked, the output or why
/// there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GatherLogsResp {
    pub(crate) outputs: Vec<Result<String, String>>,
}

/// `audit_forward` request: journal events, in journal order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForwardReq {
    pub(crate) events: Vec<moat_store::audit::ForwardedEvent>,
}

/// `audit_forward` answer: the last journal record now in the log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ForwardResp {
    pub(crate) forwarded: u64,
}

/// A manager as nodes know it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
}

/// The error half of every answer.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RpcError {
    pub(crate) kind: RpcErrorKind,
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) hint: Option<String>,
    /// For [`RpcErrorKind::NotLeader`]: where the leader is, if known.
    #[serde(default)]
    pub(crate) leader: Option<Peer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RpcErrorKind {
    /// Ask the leader (see `leader`).
    NotLeader,
    /// The caller may not do this.
    Denied,
    /// The caller's node was removed from the cluster.
    Removed,
    /// A wrong, rotated or foreign token.
    BadToken,
    /// The request is malformed.
    Invalid,
    /// Not now: no quorum, no leader.
    Unavailable,
    /// The state does not allow it (quorum rules, last manager).
    FailedPrecondition,
    /// Names nothing known.
    NotFound,
    /// Anything else.
    Internal,
}

impl RpcError {
    pub(crate) fn new(kind: RpcErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            leader: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(crate) fn not_leader(leader: Option<Peer>) -> Self {
        Self {
            kind: RpcErrorKind::NotLeader,
            message: "this manager is not the leader".into(),
            hint: None,
            leader,
        }
    }

    /// The daemon's error for this answer (its kind kept).
    pub(crate) fn into_node(self) -> NodeError {
        let kind = match self.kind {
            RpcErrorKind::Denied | RpcErrorKind::Removed | RpcErrorKind::BadToken => {
                ErrorKind::PermissionDenied
            }
            RpcErrorKind::Invalid => ErrorKind::InvalidArgument,
            RpcErrorKind::NotLeader | RpcErrorKind::Unavailable => ErrorKind::Unavailable,
            RpcErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
            RpcErrorKind::NotFound => ErrorKind::NotFound,
            RpcErrorKind::Internal => ErrorKind::Internal,
        };
        let e = NodeError::new(kind, self.message);
        match self.hint {
            Some(h) => e.hint(h),
            None => e,
        }
    }
}

impl From<RpcError> for NodeError {
    fn from(e: RpcError) -> Self {
        e.into_node()
    }
}

/// A daemon error on the cluster wire, under the closest kind: damage
/// found in this manager's files is an internal error to the caller (it
/// is not theirs to retry or mend), with its message.
impl From<NodeError> for RpcError {
    fn from(e: NodeError) -> Self {
        let kind = match e.api_kind() {
            ErrorKind::InvalidArgument => RpcErrorKind::Invalid,
            ErrorKind::FailedPrecondition => RpcErrorKind::FailedPrecondition,
            ErrorKind::NotFound => RpcErrorKind::NotFound,
            ErrorKind::PermissionDenied => RpcErrorKind::Denied,
            ErrorKind::Unavailable => RpcErrorKind::Unavailable,
            ErrorKind::Internal => RpcErrorKind::Internal,
        };
        let api = e.into_api();
        Self {
            kind,
            message: api.message,
            hint: api.hint,
            leader: None,
        }
    }
}

/// `ca_bundle` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CaBundle {
    pub(crate) roots_pem: String,
    /// The last [`MAX_RETIRED_ROOTS_SERVED`] roots that root CA rotations
    /// replaced, oldest first (public certificates, as audit exports carry
    /// them): a joining node whose token pins one of them is told that the
    /// cluster's root was rotated since its token was made. It only picks
    /// that message; the join is refused all the same. Empty from managers
    /// that predate it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) retired_roots_pem: Vec<String>,
}

/// Most retired roots a `ca_bundle` answer carries.
pub(crate) const MAX_RETIRED_ROOTS_SERVED: usize = 8;

/// `join` request (the token is a [`SecretString`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JoinReq {
    /// The join token, as text (the secret travels only over TLS to a
    /// manager verified against the pinned root).
    pub(crate) token: SecretString,
    pub(crate) csr_pem: String,
    pub(crate) hostname: String,
    pub(crate) advertise_addr: String,
    /// Keep the identity of an expired certificate: proof that the caller
    /// holds its key.
    pub(crate) rejoin: Option<RejoinProof>,
}

/// A rejoining node's old certificate chain and a signature, made with
/// that certificate's key, over [`rejoin_message`] of the new CSR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RejoinProof {
    pub(crate) chain_pem: String,
    pub(crate) signature_b64: String,
}

/// What a rejoin proof signs: a fixed context and the new CSR, so the
/// signature cannot be replayed for another request.
pub(crate) fn rejoin_message(csr_pem: &str) -> Vec<u8> {
    let mut m = b"moat-rejoin-v1\0".to_vec();
    m.extend_from_slice(csr_pem.as_bytes());
    m
}

/// `join` and `renew` answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CertResp {
    pub(crate) node_id: NodeId,
    pub(crate) role: Role,
    /// Leaf first.
    pub(crate) chain_pem: String,
    pub(crate) managers: Vec<Peer>,
    /// For the operator: the cluster now has an even number of managers.
    #[serde(default)]
    pub(crate) warning: Option<String>,
    /// A manager joining while autolock is on: the unlock key, so that it
    /// seals its keys under it from the start and never keeps a key file
    /// (it receives the key with the store anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) unlock_key: Option<SecretString>,
    /// The autolock generation that key belongs to.
    #[serde(default)]
    pub(crate) key_generation: u32,
}

/// `renew` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RenewReq {
    pub(crate) csr_pem: String,
}

/// `heartbeat` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeartbeatReq {
    pub(crate) address: String,
}

/// `heartbeat` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeartbeatResp {
    pub(crate) managers: Vec<Peer>,
    /// The role the cluster wants this node to have.
    pub(crate) role: Role,
    /// Send the next heartbeat after this long.
    pub(crate) period_ms: u64,
    /// The cluster's certificate lifetime, seconds.
    pub(crate) cert_expiry_secs: u64,
    /// The roots every node should trust (PEM): two during a root
    /// rotation.
    #[serde(default)]
    pub(crate) roots_pem: String,
    /// Fingerprint of the root that issues certificates now: a node whose
    /// certificate came from another renews.
    #[serde(default)]
    pub(crate) issuer: String,
    /// A root rotation is under way (certificates carry the cross-signed
    /// root until it ends).
    #[serde(default)]
    pub(crate) rotating: bool,
}

/// `read_index` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReadIndex {
    pub(crate) index: u64,
}

/// `add_voter` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AddVoterReq {
    pub(crate) addr: String,
}

/// `admin` request: changes that need the leader's Raft handle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum AdminReq {
    /// Quorum check, record the worker role, then remove from Raft.
    Demote { id: NodeId },
    /// Demote if needed, then put on the removed list.
    Remove { id: NodeId, force: bool },
    /// The caller leaves: remove it from Raft (quorum-checked unless
    /// `force`) and mark it down.
    Leave { id: NodeId, force: bool },
}

/// A membership operation with who asked for it (for its audit record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Admin {
    pub(crate) req: AdminReq,
    pub(crate) by: RequestedBy,
}

/// Who asked for an operation run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestedBy {
    /// The node the request came in on.
    pub(crate) node: NodeId,
    /// Its actor text (`operator:local`, `node:<id>`).
    pub(crate) actor: String,
}

impl RequestedBy {
    /// The actor; text that does not parse (from an older manager) is
    /// attributed to the node the request came in on.
    pub(crate) fn actor(&self) -> moat_audit::Actor {
        self.actor
            .parse()
            .unwrap_or_else(|_| moat_audit::Actor::node(self.node))
    }
}

/// `propose` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ProposeReq {
    pub(crate) command: Command,
}

/// An empty body.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Nothing {}

/// Encodes an answer.
pub(crate) fn encode_answer<T: Serialize>(answer: &Result<T, RpcError>) -> Vec<u8> {
    serde_json::to_vec(answer).unwrap_or_else(|e| {
        let fallback: Result<(), RpcError> = Err(RpcError::new(
            RpcErrorKind::Internal,
            format!("encoding the answer: {e}"),
        ));
        serde_json::to_vec(&fallback).unwrap_or_default()
    })
}

/// Calls `method` on `client` and decodes its answer.
pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
    client: &ClusterClient,
    method: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RpcError> {
    let data = serde_json::to_vec(req)
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, format!("encoding {method}: {e}")))?;
    let bytes = client
        .call(method, data, timeout)
        .await
        .map_err(|s| status_error(client.addr(), &s))?;
    let answer: Result<Resp, RpcError> = serde_json::from_slice(&bytes).map_err(|e| {
        RpcError::new(
            RpcErrorKind::Internal,
            format!(
                "the manager at {} sent an unreadable answer to {method}: {e}",
                client.addr()
            ),
        )
    })?;
    answer
}

/// How long a node without a certificate (joining) keeps trying a
/// manager that refuses or closes its connection before answering: a
/// manager caps connections without a certificate per source address
/// (`moat_transport::MAX_UNAUTHENTICATED_PER_SOURCE`), so a burst of joins
/// from one address (a script, a NAT) is spread out rather than failed.
pub(crate) const UNAUTHENTICATED_RETRY_FOR: Duration = Duration::from_secs(30);

/// Calls `method` on a fresh connection to `addr`, the way a node without
/// a certificate must (one call per connection). A connection that fails
/// or is closed before any answer (`cancelled`, `unavailable`) is tried
/// again on a new one, with backoff and jitter, for up to
/// [`UNAUTHENTICATED_RETRY_FOR`]; an answer, even an error answer, is
/// returned as it is. A call the manager received but whose answer was
/// lost may so run twice: `join` is then refused the second time (the
/// node exists, or a single-use token is used up), never admitted twice
/// under one id.
pub(crate) async fn call_fresh<Req: Serialize, Resp: DeserializeOwned>(
    addr: &str,
    trust: &ServerTrust,
    method: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, RpcError> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let failure = match ClusterClient::connect(addr, trust.clone(), CALL_TIMEOUT).await {
            // Accepted, then closed in the handshake: a manager at its
            // limit. Anything else (refused, unreachable, a bad
            // certificate) will not change by trying again.
            Err(e)
                if e.to_string().contains("TLS handshake")
                    && !e.to_string().contains("certificate") =>
            {
                RpcError::new(
                    RpcErrorKind::Unavailable,
                    format!("cannot reach a manager at {addr}: {e}"),
                )
            }
            Err(e) => {
                return Err(RpcError::new(
                    RpcErrorKind::Unavailable,
                    format!("cannot reach a manager at {addr}: {e}"),
                )
                .hint("check the address and that the manager's cluster port is reachable from this node"));
            }
            Ok(client) => match call(&client, method, req, timeout).await {
                Err(e)
                    if e.kind == RpcErrorKind::Unavailable
                        && e.message.contains("did not answer") =>
                {
                    e
                }
                other => return other,
            },
        };
        if start.elapsed() + delay > UNAUTHENTICATED_RETRY_FOR {
            return Err(failure.hint(format!(
                "tried for {} s; the manager may be limiting connections from this address (many joins at once, or a flood): try again later, or from another address",
                UNAUTHENTICATED_RETRY_FOR.as_secs()
            )));
        }
        let jitter = Duration::from_millis(u64::from(
            rand_core::RngCore::next_u32(&mut rand_core::OsRng) % 100,
        ));
        tokio::time::sleep(delay + jitter).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// A failed call (not an error answer): the manager could not be reached
/// or the transport refused.
pub(crate) fn status_error(addr: &str, status: &Status) -> RpcError {
    let kind = match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => RpcErrorKind::Denied,
        Code::InvalidArgument => RpcErrorKind::Invalid,
        _ => RpcErrorKind::Unavailable,
    };
    RpcError::new(
        kind,
        format!("the manager at {addr} did not answer: {}", status.message()),
    )
}

/// Decodes a request body, refusing anything malformed.
pub(crate) fn decode<T: DeserializeOwned>(method: &str, data: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(data).map_err(|e| {
        RpcError::new(
            RpcErrorKind::Invalid,
            format!("malformed {method} request: {e}"),
        )
    })
}

/// A cluster request decoded by [`decode_request`].
#[doc(hidden)]
#[derive(Debug)]
pub struct DecodedRequest {
    /// The request encoded again, as a manager's own answer code would.
    pub json: Vec<u8>,
    /// Its `Debug` text (what a log line would show).
    pub debug: String,
    /// The secrets it holds (a join token), which `debug` must not show.
    pub secrets: Vec<String>,
}

/// The names [`decode_request`] knows: every method whose request a
/// manager decodes (`ca_bundle` and `read_index` read none), and
/// `ca_bundle answer`, the answer a joiner reads from a manager it has not
/// verified yet.
#[doc(hidden)]
pub const FUZZ_METHODS: &[&str] = &[
    method::JOIN,
    "ca_bundle answer",
    method::RENEW,
    method::HEARTBEAT,
    method::PROPOSE,
    method::ADD_VOTER,
    method::ADMIN,
    method::AUDIT_FORWARD,
    method::TASK_SYNC,
    "task_sync answer",
    method::TASK_LOGS,
    method::GATHER_LOGS,
    method::TASK_SECRETS,
    "task_secrets answer",
    method::TASK_IDENTITY,
    "task_identity answer",
    method::AUDIT_RECORDS,
    "audit_records answer",
];

/// Decodes `data` as the body of `method` with the decoder a manager runs
/// on it (for `join`, before it knows who is calling), for the
/// `cluster_rpc` fuzz target of `fuzz/`. Not part of the API.
#[doc(hidden)]
pub fn decode_request(method: &str, data: &[u8]) -> Result<DecodedRequest, String> {
    fn done<T: Serialize + std::fmt::Debug>(
        value: T,
        secrets: Vec<String>,
    ) -> Result<DecodedRequest, String> {
        let json = serde_json::to_vec(&value).map_err(|e| format!("re-encoding: {e}"))?;
        Ok(DecodedRequest {
            json,
            debug: format!("{value:?}"),
            secrets,
        })
    }
    let m = |e: RpcError| e.message;
    match method {
        method::JOIN => {
            let req: JoinReq = decode(method, data).map_err(m)?;
            let secret = req.token.expose_secret().to_string();
            done(req, vec![secret])
        }
        "ca_bundle answer" => {
            let answer: Result<CaBundle, RpcError> =
                serde_json::from_slice(data).map_err(|e| e.to_string())?;
            done(answer, Vec::new())
        }
        method::RENEW => done(decode::<RenewReq>(method, data).map_err(m)?, Vec::new()),
        method::HEARTBEAT => done(decode::<HeartbeatReq>(method, data).map_err(m)?, Vec::new()),
        method::PROPOSE => done(decode::<ProposeReq>(method, data).map_err(m)?, Vec::new()),
        method::ADD_VOTER => done(decode::<AddVoterReq>(method, data).map_err(m)?, Vec::new()),
        method::ADMIN => done(decode::<Admin>(method, data).map_err(m)?, Vec::new()),
        method::AUDIT_FORWARD => done(decode::<ForwardReq>(method, data).map_err(m)?, Vec::new()),
        method::TASK_SYNC => done(decode::<TaskSyncReq>(method, data).map_err(m)?, Vec::new()),
        method::TASK_LOGS => done(decode::<TaskLogsReq>(method, data).map_err(m)?, Vec::new()),
        method::GATHER_LOGS => done(
            decode::<GatherLogsReq>(method, data).map_err(m)?,
            Vec::new(),
        ),
        method::TASK_SECRETS => done(
            decode::<TaskSecretsReq>(method, data).map_err(m)?,
            Vec::new(),
        ),
        method::TASK_IDENTITY => done(
            decode::<TaskIdentityReq>(method, data).map_err(m)?,
            Vec::new(),
        ),
        method::AUDIT_RECORDS => done(
            decode::<AuditRecordsReq>(method, data).map_err(m)?,
            Vec::new(),
        ),
        // What a manager with a gap reads from another (then checked
        // against the log by the store, see `member::audit`).
        "audit_records answer" => {
            let answer: Result<AuditRecordsResp, RpcError> =
                serde_json::from_slice(data).map_err(|e| e.to_string())?;
            if let Ok(resp) = &answer {
                let leaves = !resp.leaves.is_empty();
                let n = resp.records.len().max(resp.leaves.len());
                let to = resp.first.saturating_add(n as u64).saturating_sub(1);
                resp.check(&AuditRecordsReq {
                    from: 1,
                    to,
                    leaves,
                })?;
            }
            done(answer, Vec::new())
        }
        // What a worker reads from the leader and checks before it writes
        // it beside the task's key.
        "task_identity answer" => {
            let answer: Result<TaskIdentityResp, RpcError> =
                serde_json::from_slice(data).map_err(|e| e.to_string())?;
            if let Ok(resp) = &answer {
                resp.check().map_err(|e| e.message)?;
            }
            done(answer, Vec::new())
        }
        // What a worker reads from the leader and writes to its tmpfs; the
        // data must not show in `Debug`.
        "task_secrets answer" => {
            let answer: Result<TaskSecretsResp, RpcError> =
                serde_json::from_slice(data).map_err(|e| e.to_string())?;
            let secrets = match &answer {
                Ok(resp) => resp
                    .files
                    .iter()
                    .filter(|f| f.data.len() >= 8)
                    .map(|f| String::from_utf8_lossy(f.data.expose_secret()).into_owned())
                    .collect(),
                Err(_) => Vec::new(),
            };
            done(answer, secrets)
        }
        // What a worker reads from the leader and hands to its executor.
        "task_sync answer" => {
            let answer: Result<TaskSyncResp, RpcError> =
                serde_json::from_slice(data).map_err(|e| e.to_string())?;
            done(answer, Vec::new())
        }
        other => Err(format!("unknown cluster method {other:?}")),
    }
}
