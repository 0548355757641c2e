//! Recording security events in the cluster's audit log, and keeping it
//! verifiable.
//!
//! * A change that alters security (a token, a role, the policy, a key) is
//!   proposed with its record in the same raft entry
//!   ([`Node::propose_audited`]): it commits with its record or not at all,
//!   and a cluster that cannot commit answers with an error within the
//!   proposal's bound. That is the fail-closed rule.
//! * Events with no change of their own (a refused join, a certificate
//!   issued) are recorded by [`Node::record`].
//! * Events on a node that cannot reach the log (a failed unlock while
//!   locked, tampering found at start) go to its local journal first;
//!   every manager forwards its journal into the log ([`forward_journal`]).
//! * The leader gives the cluster an audit key and signs tree heads at
//!   least every [`HEAD_EVERY_RECORDS`] records or [`HEAD_EVERY`].

use std::fmt::Display;
use std::time::Duration;

use moat_audit::{
    Action, Actor, AuditKey, Bundle, Event, HeadSigner, InclusionProofFile, Outcome,
    SignedTreeHead, Text, Timestamp,
};
use moat_pki::NodeId;
use moat_store::audit::{AuditTrail, ForwardedEvent, record_text};
use moat_store::model::{CertInfo, ClusterState, Command, Secret, rfc3339};

use crate::node::{ManagerRt, Node};
use crate::rpc::{RpcError, RpcErrorKind};

/// A signed tree head is made once this many records are unsigned…
pub(crate) const HEAD_EVERY_RECORDS: u64 = 256;
/// …or once the newest unsigned record is this old.
pub(crate) const HEAD_EVERY: Duration = Duration::from_secs(30);
/// How often the leader looks at the log, and managers at their journals.
pub(crate) const AUDIT_TICK: Duration = Duration::from_secs(1);
/// Most journal records forwarded in one entry.
pub(crate) const FORWARD_BATCH: usize = 64;

/// An event being built.
pub(crate) struct Ev(Event);

impl Ev {
    pub(crate) fn new(node: NodeId, actor: Actor, action: Action, target: &str) -> Self {
        Self(Event {
            node,
            actor,
            action,
            target: text(target),
            outcome: Outcome::Success,
            details: moat_audit::Details::new(),
        })
    }

    /// Adds a (non-secret) detail; text that does not fit is cleaned up.
    pub(crate) fn detail(mut self, key: &str, value: impl Display) -> Self {
        if let Err(e) = self.0.details.insert(key, &record_text(&value.to_string())) {
            tracing::warn!(error = %e, key, "an audit detail was left out");
        }
        self
    }

    /// Adds the keyed hash of a secret, if the cluster has its audit key.
    pub(crate) fn secret(mut self, key: &str, audit_key: Option<&AuditKey>, value: &[u8]) -> Self {
        if let Some(k) = audit_key
            && let Err(e) = self.0.details.insert_secret(key, k, value)
        {
            tracing::warn!(error = %e, key, "an audit detail was left out");
        }
        self
    }

    pub(crate) fn denied(mut self, reason: &str) -> Self {
        self.0.outcome = Outcome::Denied {
            reason: text(reason),
        };
        self
    }

    pub(crate) fn failed(mut self, reason: &str) -> Self {
        self.0.outcome = Outcome::Failed {
            reason: text(reason),
        };
        self
    }
}

fn text(s: &str) -> Text {
    Text::new("text", &record_text(s)).unwrap_or_default()
}

/// The person at this node's control socket (the socket is the daemon
/// user's alone).
pub(crate) fn operator() -> Actor {
    Actor::local_operator()
}

/// The cluster's audit key, if it has one.
pub(crate) fn audit_key(state: &ClusterState) -> Option<AuditKey> {
    let hex = state.audit.key()?;
    let bytes = zeroize::Zeroizing::new(
        data_encoding::HEXLOWER
            .decode(hex.expose_secret().as_bytes())
            .ok()?,
    );
    AuditKey::from_slice(&bytes).ok()
}

impl Node {
    /// An event recorded by this node.
    pub(crate) fn ev(&self, actor: Actor, action: Action, target: impl Display) -> Ev {
        Ev::new(self.id, actor, action, &target.to_string())
    }

    /// Commits `change` together with its audit record (see the module
    /// docs): either both are in the log, or the caller gets an error.
    pub(crate) async fn propose_audited(&self, change: Command, ev: Ev) -> Result<(), RpcError> {
        self.propose(Command::Audited {
            change: Box::new(change),
            time: crate::control::unix_now(),
            event: ev.0,
        })
        .await
    }

    /// Records an event that changes nothing else. The caller decides
    /// whether a failure matters; most log it and go on (the event itself,
    /// a refusal say, has already happened).
    pub(crate) async fn record(&self, ev: Ev) -> Result<(), RpcError> {
        self.propose(Command::Audit {
            time: crate::control::unix_now(),
            event: ev.0,
        })
        .await
    }

    /// Records the certificate just issued to node `id` (its serial,
    /// expiry, issuer, key algorithm) with its audit record (`action`:
    /// issue or renew).
    pub(crate) async fn record_cert(
        &self,
        id: NodeId,
        role: moat_pki::Role,
        issued: &moat_pki::IssuedCert,
        issuer: String,
        action: Action,
    ) -> Result<(), RpcError> {
        let info = cert_info(issued);
        let ev = self
            .ev(Actor::node(id), action, format!("node:{id}"))
            .detail("serial", &issued.serial)
            .detail("role", role.as_str())
            .detail("not_after", rfc3339(issued.not_after.unix_timestamp()))
            .detail("issuer", &issuer)
            .detail(
                "algorithm",
                info.as_ref().map(|i| i.algorithm.as_str()).unwrap_or(""),
            );
        self.propose_audited(
            Command::RecordCert {
                id,
                serial: issued.serial.clone(),
                not_after: issued.not_after.unix_timestamp(),
                issuer,
                info,
            },
            ev,
        )
        .await
    }

    /// [`Node::record`], logging a failure.
    pub(crate) async fn record_or_log(&self, ev: Ev) {
        let action = ev.0.action.clone();
        if let Err(e) = self.record(ev).await {
            tracing::error!(%action, error = %e.message, "an audit record could not be committed");
        }
    }
}

/// A certificate's key algorithm (as `moat cert inspect` names it) and
/// start of validity.
fn cert_info(issued: &moat_pki::IssuedCert) -> Option<CertInfo> {
    let report = moat_pki::inspect(issued.der.as_ref())
        .ok()?
        .into_iter()
        .next()?;
    Some(CertInfo {
        algorithm: format!("{} {}", report.key_algorithm, report.key_size),
        not_before: issued.not_before.unix_timestamp(),
    })
}

/// A new audit key, in the text form the store keeps.
pub(crate) fn new_audit_key() -> Result<Secret, moat_api::ApiError> {
    let key = AuditKey::generate().map_err(|e| {
        moat_api::ApiError::new(
            moat_api::ErrorKind::Internal,
            format!("generating the audit key: {e}"),
        )
    })?;
    Ok(Secret::new(
        data_encoding::HEXLOWER.encode(key.expose_secret()),
    ))
}

/// Runs on every manager for as long as it is one: forwards the local
/// journal, and on the leader keeps the audit key and the tree heads.
pub(crate) async fn audit_loop(node: std::sync::Weak<Node>, rt: std::sync::Weak<ManagerRt>) {
    let mut tick = tokio::time::interval(AUDIT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(node), Some(m)) = (node.upgrade(), rt.upgrade()) else {
            return;
        };
        let Ok(state) = m.local_state() else {
            continue;
        };
        if state.cluster_id.is_none() {
            continue;
        }
        if let Err(e) = forward_journal(&node, &state).await {
            tracing::debug!(error = %e.message, "journal not forwarded yet");
        }
        record_refusal_summary(&node, &m).await;
        if !m.is_leader(node.id) {
            continue;
        }
        // A cluster made before moat had audit keys gets one now.
        if state.audit.key().is_none() {
            let proposed = match new_audit_key() {
                Ok(key) => node.propose(Command::SetAuditKey(key)).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = proposed {
                tracing::warn!(error = %e.message, "could not commit the audit key");
            }
        }
        if let Err(e) = crate::ca::drive(&node, &state).await {
            tracing::warn!(error = %e.message, "could not finish the root CA rotation yet");
        }
        if head_due(&state.audit, crate::control::unix_now())
            && let Err(e) = sign_and_commit_head(&node, &state.audit).await
        {
            tracing::warn!(error = %e.message, "could not sign an audit tree head");
        }
    }
}

/// Records the refused joins this manager counted but did not record one
/// by one (see `refusals`), once a minute at most.
async fn record_refusal_summary(node: &Node, m: &ManagerRt) {
    let summary = m
        .refusals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_summary(std::time::Instant::now());
    let Some(summary) = summary else {
        return;
    };
    let ev = node
        .ev(
            Actor::node(node.id),
            Action::NODE_JOIN,
            format!("node:{}", node.id),
        )
        .detail("suppressed", summary.total)
        .detail("sources", summary.sources_text())
        .detail("window_s", crate::refusals::SUMMARY_EVERY.as_secs())
        .denied(&format!(
            "{} more refused join(s) were counted, not recorded one by one (rate limit)",
            summary.total
        ));
    if let Err(e) = node.record(ev).await {
        tracing::error!(
            suppressed = summary.total,
            sources = %summary.sources_text(),
            error = %e.message,
            "the summary of refused joins could not be recorded in the audit log"
        );
    }
}

/// Whether the log has records no head covers, and enough of them, or
/// old enough, to sign now.
fn head_due(trail: &AuditTrail, now: i64) -> bool {
    let size = trail.size();
    let (signed, since) = trail
        .last_head()
        .map(|h| (h.size, h.time.unix_seconds()))
        .unwrap_or((0, 0));
    if size <= signed {
        return false;
    }
    if size - signed >= HEAD_EVERY_RECORDS {
        return true;
    }
    // The oldest unsigned record's time.
    let oldest = trail
        .record(signed + 1)
        .and_then(|l| moat_audit::Record::from_line(l.as_bytes()).ok())
        .map(|r| r.time().unix_seconds())
        .unwrap_or(since);
    now.saturating_sub(oldest) >= HEAD_EVERY.as_secs() as i64
}

/// Signs the head of `trail` at its current size with this manager's key.
pub(crate) fn sign_head(node: &Node, trail: &AuditTrail) -> Result<SignedTreeHead, RpcError> {
    let internal = |e: String| RpcError::new(RpcErrorKind::Internal, e);
    let (chain, key) = node
        .tls
        .signing_identity()
        .ok_or_else(|| internal("this manager has no certificate yet".into()))?;
    let now = moat_pki::OffsetDateTime::now_utc();
    let signer = HeadSigner::new(&key, &chain, &node.tls.roots(), now)
        .map_err(|e| internal(format!("this manager cannot sign tree heads: {e}")))?;
    let size = trail.size();
    let root = trail.root(size).map_err(|e| internal(e.to_string()))?;
    let time = Timestamp::from_datetime(now).map_err(|e| internal(e.to_string()))?;
    signer
        .sign(size, root, time)
        .map_err(|e| internal(format!("signing a tree head: {e}")))
}

async fn sign_and_commit_head(node: &Node, trail: &AuditTrail) -> Result<(), RpcError> {
    let head = sign_head(node, trail)?;
    node.propose(Command::AuditHead(head)).await
}

/// Forwards journal records this manager has not forwarded yet.
async fn forward_journal(node: &Node, state: &ClusterState) -> Result<(), RpcError> {
    let done = state.audit.forwarded(&node.id);
    let pending = node.journal.records_after(done, FORWARD_BATCH);
    if pending.is_empty() {
        return Ok(());
    }
    let events = pending
        .iter()
        .map(|r| journal_event(node.id, r))
        .collect::<Vec<_>>();
    node.propose(Command::AuditForward {
        node: node.id,
        events,
    })
    .await
}

/// A worker forwards its journal through a manager: `done` is the last
/// journal record known to be in the log (0 after a start: the manager
/// skips what it already has).
pub(crate) async fn forward_worker_journal(node: &Node, done: &mut u64) -> Result<(), RpcError> {
    let pending = node.journal.records_after(*done, FORWARD_BATCH);
    if pending.is_empty() {
        return Ok(());
    }
    let events = pending
        .iter()
        .map(|r| journal_event(node.id, r))
        .collect::<Vec<_>>();
    let resp: crate::rpc::ForwardResp = node
        .call_leader(
            crate::rpc::method::AUDIT_FORWARD,
            &crate::rpc::ForwardReq { events },
            crate::rpc::CALL_TIMEOUT,
        )
        .await?;
    *done = resp.forwarded.max(*done);
    Ok(())
}

/// A journal record as an audit event.
fn journal_event(me: NodeId, r: &crate::journal::Record) -> ForwardedEvent {
    let action = match r.action.as_str() {
        "tamper-detected" => Action::TAMPER_DETECT,
        "unlock" => Action::NODE_UNLOCK,
        "dek-rotated" => Action::DEK_ROTATE,
        "backup" => Action::BACKUP_CREATE,
        other => format!("node.{}", other.replace('-', "_"))
            .parse()
            .unwrap_or(Action::TAMPER_DETECT),
    };
    let actor = if r.actor.contains("operator") {
        operator()
    } else {
        Actor::node(me)
    };
    let outcome = r.outcome.as_str();
    let mut ev = Ev::new(me, actor, action, &format!("node:{me}"))
        .detail("journal_seq", r.seq)
        .detail("journal_action", &r.action);
    if !r.reason.is_empty() {
        ev = match outcome {
            "failed" => ev.failed(&r.reason),
            "denied" => ev.denied(&r.reason),
            _ => ev.detail("note", &r.reason),
        };
    } else if outcome != "success" {
        ev = ev.failed(outcome);
    }
    let time = r
        .time
        .parse::<Timestamp>()
        .map(Timestamp::unix_seconds)
        .unwrap_or_else(|_| crate::control::unix_now());
    ForwardedEvent {
        journal_seq: r.seq,
        time,
        event: ev.0,
    }
}

/// The one-file export bundle of records `since` on (1 or 0: all), with
/// every head and a fresh head signed here at the last record.
pub(crate) fn export(node: &Node, m: &ManagerRt, since: u64) -> Result<Vec<u8>, RpcError> {
    let state = m.local_state()?;
    let trail = &state.audit;
    let internal = |e: String| RpcError::new(RpcErrorKind::Internal, e);
    let since = since.max(1);
    if since > trail.size() + 1 {
        return Err(RpcError::new(
            RpcErrorKind::Invalid,
            format!(
                "the log has {} records: nothing from record {since} on",
                trail.size()
            ),
        ));
    }
    let base = since - 1;
    let mut heads: Vec<SignedTreeHead> = trail.heads().cloned().collect();
    if trail.size() > 0 && trail.last_head().is_none_or(|h| h.size < trail.size()) {
        heads.push(sign_head(node, trail)?);
    }
    let ca_pem = ca_pem(&state)?;
    let frontier = trail
        .with_tree(|t| t.frontier(base))
        .map_err(|e| internal(e.to_string()))?;
    let mut bundle = Bundle::new(ca_pem, heads).with_base(base, frontier);
    for line in trail.records_from(since) {
        bundle
            .push_record(line.as_bytes())
            .map_err(|e| internal(e.to_string()))?;
    }
    bundle.to_one_file().map_err(|e| internal(e.to_string()))
}

/// An inclusion proof for record `seq` against the newest head that
/// covers it (a fresh one, signed here, if none does yet).
pub(crate) fn prove(node: &Node, m: &ManagerRt, seq: u64) -> Result<String, RpcError> {
    let state = m.local_state()?;
    let trail = &state.audit;
    let line = trail.record(seq).ok_or_else(|| {
        RpcError::new(
            RpcErrorKind::NotFound,
            format!(
                "the audit log has no record {seq} (it has {})",
                trail.size()
            ),
        )
        .hint("`moat audit ls` lists the records")
    })?;
    let record = moat_audit::Record::from_line(line.as_bytes())
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    let head = match trail.last_head() {
        Some(h) if h.size >= seq => h.clone(),
        _ => sign_head(node, trail)?,
    };
    let file = trail
        .with_tree(|t| InclusionProofFile::new(t, record, head))
        .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
    Ok(file.to_json())
}

/// The root CA certificate(s) an export carries, PEM: the current root,
/// any root a rotation under way moves to, and the roots rotations
/// replaced (older heads were signed under them).
pub(crate) fn ca_pem(state: &ClusterState) -> Result<String, RpcError> {
    let current = state.trusted_roots_pem().ok_or_else(|| {
        RpcError::new(RpcErrorKind::Unavailable, "the cluster is not initialized")
    })?;
    Ok(state
        .retired_roots
        .iter()
        .rev()
        .fold(current, |mut all, old| {
            all.push_str(old);
            all
        }))
}

/// `moat audit hash`: the keyed hash of `value`.
pub(crate) fn hash(state: &ClusterState, value: &str) -> Result<String, RpcError> {
    let key = audit_key(state).ok_or_else(|| {
        RpcError::new(
            RpcErrorKind::Unavailable,
            "the cluster has no audit key yet (the leader makes one within a second of starting)",
        )
        .hint("try again in a moment")
    })?;
    Ok(key.hash(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> NodeId {
        "0123456789abcdefghijklmn00".parse().unwrap()
    }

    #[test]
    fn journal_records_become_events() {
        let r = crate::journal::Record {
            seq: 7,
            time: "2026-01-02T03:04:05Z".into(),
            node: String::new(),
            actor: "local operator".into(),
            action: "unlock".into(),
            outcome: "failed".into(),
            reason: "wrong unlock key".into(),
            prev: String::new(),
        };
        let f = journal_event(me(), &r);
        assert_eq!(f.journal_seq, 7);
        assert_eq!(f.event.action, Action::NODE_UNLOCK);
        assert_eq!(f.event.outcome.as_str(), "failed");
        assert_eq!(f.event.outcome.reason(), "wrong unlock key");
        assert_eq!(f.event.actor, operator());
        assert_eq!(f.time, 1_767_323_045);
        let r = crate::journal::Record {
            action: "unlock-key-rotated".into(),
            actor: "this node".into(),
            outcome: "success".into(),
            reason: String::new(),
            ..r
        };
        let f = journal_event(me(), &r);
        assert_eq!(f.event.action.as_str(), "node.unlock_key_rotated");
        assert_eq!(f.event.actor, Actor::node(me()));
    }

    #[test]
    fn heads_are_due_by_count_or_age() {
        let mut trail = AuditTrail::default();
        assert!(!head_due(&trail, 1_700_000_000));
        let mut s = ClusterState::default();
        let ev = Ev::new(me(), operator(), Action::POLICY_UPDATE, "policy").0;
        s.apply(&Command::Audit {
            time: 1_700_000_000,
            event: ev.clone(),
        });
        trail = s.audit.clone();
        assert!(!head_due(&trail, 1_700_000_010));
        assert!(head_due(&trail, 1_700_000_030));
        for i in 0..HEAD_EVERY_RECORDS {
            s.apply(&Command::Audit {
                time: 1_700_000_000 + i as i64,
                event: ev.clone(),
            });
        }
        assert!(head_due(&s.audit, 1_700_000_001));
    }
}
