//! Recording security events in the cluster's audit log (the member's
//! half; the leader's loop that keeps the log signed is in
//! `housekeeping`).
//!
//! * A change that alters security (a token, a role, the policy, a key) is
//!   proposed with its record in the same raft entry
//!   ([`Member::propose_audited`]): it commits with its record or not at
//!   all, and a cluster that cannot commit answers with an error within the
//!   proposal's bound. That is the fail-closed rule.
//! * Events with no change of their own (a refused join, a certificate
//!   issued) are recorded by [`Member::record`].
//! * Events on a node that cannot reach the log (a failed unlock while
//!   locked, tampering found at start) go to its local journal first, as
//!   typed [`crate::journal::JournalEvent`]s; they are forwarded into the
//!   log by the manager's housekeeping or, on a worker, by
//!   [`Member::forward_worker_journal`].
//! * Exports and inclusion proofs are signed here, on request.

use std::fmt::Display;

use moat_audit::{
    Action, Actor, AuditKey, Bundle, Event, HeadSigner, InclusionProofFile, Outcome,
    SignedTreeHead, Text, Timestamp,
};
use moat_pki::NodeId;
use moat_store::audit::{AuditReadError, AuditTrail, ForwardedEvent, record_text};
use moat_store::model::{CertInfo, ClusterState, Command, Secret, rfc3339};

use super::{Manager, Member};
use crate::error::NodeError;
use crate::journal::{JournalAction, JournalActor, JournalOutcome, Record};
use crate::rpc::{RpcError, RpcErrorKind};

/// Most journal records forwarded in one entry.
pub(crate) const FORWARD_BATCH: usize = 64;

/// An audit event being built: who did what to which target, how it
/// ended, and its (non-secret or keyed-hash) details.
pub(crate) struct EventDraft(Event);

impl EventDraft {
    /// The finished event.
    #[cfg(test)]
    pub(crate) fn into_event(self) -> Event {
        self.0
    }

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

impl Member {
    /// An event recorded by this node.
    pub(crate) fn ev(&self, actor: Actor, action: Action, target: impl Display) -> EventDraft {
        EventDraft::new(self.id, actor, action, &target.to_string())
    }

    /// Commits `change` together with its audit record (see the module
    /// docs): either both are in the log, or the caller gets an error.
    pub(crate) async fn propose_audited(
        &self,
        change: Command,
        ev: EventDraft,
    ) -> Result<(), RpcError> {
        self.propose(Command::Audited {
            change: Box::new(change),
            time: self.clock.unix(),
            event: ev.0,
        })
        .await
    }

    /// Records an event that changes nothing else. The caller decides
    /// whether a failure matters; most log it and go on (the event itself,
    /// a refusal say, has already happened).
    pub(crate) async fn record(&self, ev: EventDraft) -> Result<(), RpcError> {
        self.propose(Command::Audit {
            time: self.clock.unix(),
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

    /// [`Member::record`], logging a failure.
    pub(crate) async fn record_or_log(&self, ev: EventDraft) {
        let action = ev.0.action.clone();
        if let Err(e) = self.record(ev).await {
            tracing::error!(%action, error = %e.message, "an audit record could not be committed");
        }
    }

    /// A worker forwards its journal through a manager: `done` is the last
    /// journal record known to be in the log (0 after a start: the manager
    /// skips what it already has).
    pub(crate) async fn forward_worker_journal(&self, done: &mut u64) -> Result<(), RpcError> {
        let events = self.pending_journal_events(*done);
        if events.is_empty() {
            return Ok(());
        }
        let resp: crate::rpc::ForwardResp = self
            .call_leader(
                crate::rpc::method::AUDIT_FORWARD,
                &crate::rpc::ForwardReq { events },
                crate::rpc::CALL_TIMEOUT,
            )
            .await?;
        *done = resp.forwarded.max(*done);
        Ok(())
    }

    /// Journal records this member has not forwarded yet (after `done`),
    /// as audit events.
    pub(crate) fn pending_journal_events(&self, done: u64) -> Vec<ForwardedEvent> {
        self.journal
            .records_after(done, FORWARD_BATCH)
            .iter()
            .map(|r| journal_event(self.id, r, self.clock.unix()))
            .collect()
    }

    /// Signs the head of `trail` at its current size with this manager's key.
    pub(crate) fn sign_head(&self, trail: &AuditTrail) -> Result<SignedTreeHead, RpcError> {
        self.sign_head_at(trail, trail.size())
    }

    /// Signs the head of `trail` at `size` (at most its size) with this
    /// manager's key.
    pub(crate) fn sign_head_at(
        &self,
        trail: &AuditTrail,
        size: u64,
    ) -> Result<SignedTreeHead, RpcError> {
        let internal = |e: String| RpcError::new(RpcErrorKind::Internal, e);
        let (chain, key) = self
            .tls
            .signing_identity()
            .ok_or_else(|| internal("this manager has no certificate yet".into()))?;
        let now = self.clock.now();
        let signer = HeadSigner::new(&key, &chain, &self.tls.roots(), now)
            .map_err(|e| internal(format!("this manager cannot sign tree heads: {e}")))?;
        let root = trail.root(size).map_err(unreadable)?;
        let time = Timestamp::from_datetime(now).map_err(|e| internal(e.to_string()))?;
        signer
            .sign(size, root, time)
            .map_err(|e| internal(format!("signing a tree head: {e}")))
    }

    /// The one-file export bundle of records `since` on (1 or 0: all), with
    /// every head and a fresh head signed here at the last record.
    ///
    /// `since` 0 starts at the first record the managers keep (after an
    /// archival); `until` (0: the log's last record) ends the bundle
    /// earlier, with a fresh head signed at `until` (`moat audit archive`).
    pub(crate) fn export(&self, m: &Manager, since: u64, until: u64) -> Result<Vec<u8>, RpcError> {
        let state = m.local_state()?;
        let trail = &state.audit;
        let internal = |e: String| RpcError::new(RpcErrorKind::Internal, e);
        let since = if since == 0 {
            trail.first_kept()
        } else {
            since
        };
        let until = match until {
            0 => trail.size(),
            n => n,
        };
        if since > trail.size() + 1 || until > trail.size() || until + 1 < since {
            return Err(RpcError::new(
                RpcErrorKind::Invalid,
                format!(
                    "the log has {} records: nothing from record {since} to {until}",
                    trail.size()
                ),
            ));
        }
        let base = since - 1;
        let mut heads: Vec<SignedTreeHead> =
            trail.heads().filter(|h| h.size <= until).cloned().collect();
        if until > 0 && !heads.iter().any(|h| h.size == until) {
            heads.push(self.sign_head_at(trail, until)?);
        }
        let ca_pem = ca_pem(&state)?;
        let frontier = trail
            .with_tree(|t| t.frontier(base))
            .map_err(unreadable)?
            .map_err(|e| internal(e.to_string()))?;
        let mut bundle = Bundle::new(ca_pem, heads).with_base(base, frontier);
        let mut pushed = Ok(());
        trail
            .for_each_record(since, until, |_, line| {
                pushed = bundle.push_record(line.as_bytes());
                Ok(pushed.is_ok())
            })
            .map_err(unreadable)?;
        pushed.map_err(|e| internal(e.to_string()))?;
        bundle.to_one_file().map_err(|e| internal(e.to_string()))
    }

    /// An inclusion proof for record `seq` against the newest head that
    /// covers it (a fresh one, signed here, if none does yet).
    ///
    /// `archived`: for a record below the first one kept, its line from
    /// the archive; proven only if its leaf hash is the one kept here for
    /// record `seq` (decision D48).
    pub(crate) fn prove(
        &self,
        m: &Manager,
        seq: u64,
        archived: Option<String>,
    ) -> Result<String, RpcError> {
        let state = m.local_state()?;
        let trail = &state.audit;
        let line = match archived {
            Some(line) if seq < trail.first_kept() => {
                let given = moat_audit::leaf_hash(line.as_bytes());
                let kept = trail.with_tree(|t| t.leaf_hash(seq - 1)).map_err(|e| {
                    RpcError::new(
                        RpcErrorKind::Unavailable,
                        format!("this manager cannot prove archived records: {e}"),
                    )
                })?;
                if kept != Some(given) {
                    return Err(RpcError::new(
                        RpcErrorKind::Invalid,
                        format!(
                            "the record given is not record {seq} of this cluster's log (its leaf hash differs from the one kept here)"
                        ),
                    )
                    .hint("check the archive with `moat audit verify --archive DIR`"));
                }
                Some(line)
            }
            _ => trail.try_record(seq).map_err(unreadable)?,
        };
        let line = line.ok_or_else(|| {
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
            _ => self.sign_head(trail)?,
        };
        let file = trail
            .with_tree(|t| InclusionProofFile::new(t, record, head))
            .map_err(unreadable)?
            .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
        Ok(file.to_json())
    }
}

/// How often a manager looks for audit records it lacks (after an
/// installed snapshot or a restore), when it lacked none or just fetched
/// some.
const FETCH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest wait between rounds when no manager could give the records.
const FETCH_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes of records fetched from one manager, checked and written as one
/// segment file: the memory a fetch holds at most (plus one page).
const FETCH_CHUNK_BYTES: usize = 8 << 20;
/// How long one `audit_records` call may take (a page is up to 4 MiB).
const FETCH_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs on every manager for as long as it is one: fetches the audit
/// records this manager lacks from the other managers (issue 19, step 3;
/// decision D48), newest first, one chunk of at most [`FETCH_CHUNK_BYTES`]
/// at a time. Each chunk comes from one manager, is checked by the store
/// against what this manager already trusts ([`AuditTrail::fill`]: SHA-256
/// links to a record written here, or to the state's last leaf) and is
/// written as one segment file, atomically; records that do not fit are
/// refused and the manager that sent them is named in the log. A round
/// that gets nothing waits twice as long as the last (5 s to 60 s).
pub(crate) async fn audit_fetch_loop(node: std::sync::Weak<Member>, rt: std::sync::Weak<Manager>) {
    let mut delay = FETCH_EVERY;
    let mut round = 0usize;
    loop {
        tokio::time::sleep(delay).await;
        let (Some(node), Some(m)) = (node.upgrade(), rt.upgrade()) else {
            return;
        };
        round = round.wrapping_add(1);
        delay = match node.fetch_missing_audit(&m, round).await {
            Ok(true) => std::time::Duration::ZERO,
            Ok(false) => FETCH_EVERY,
            Err(e) => {
                tracing::warn!(error = %e.message, retry_in_s = delay.as_secs().max(1) * 2, "could not fetch the audit records this manager lacks");
                (delay.max(FETCH_EVERY) * 2).min(FETCH_BACKOFF_MAX)
            }
        };
    }
}

/// Why one manager could not give a chunk of records.
enum FetchFailure {
    /// It did not answer, or lacks them too: try another.
    Unavailable(String),
    /// It sent records that do not fit the log: named, and not trusted.
    Refused(String),
    /// This manager's own store failed.
    Local(String),
}

impl Member {
    /// Starts [`audit_fetch_loop`] for manager side `m`; it stops with it.
    pub(crate) fn start_audit_fetch(self: &std::sync::Arc<Self>, m: &std::sync::Arc<Manager>) {
        m.keep_task(tokio::spawn(audit_fetch_loop(
            std::sync::Arc::downgrade(self),
            std::sync::Arc::downgrade(m),
        )));
    }

    /// One round of [`audit_fetch_loop`]: fetches the newest chunk of the
    /// newest range this manager lacks. `Ok(true)`: records were written
    /// (go on at once); `Ok(false)`: nothing is missing.
    async fn fetch_missing_audit(&self, m: &Manager, round: usize) -> Result<bool, RpcError> {
        // Under the lock, without a copy of the trail (it holds a map of
        // every node's forwarding position): the common case is nothing.
        let (nothing_missing, lacks_leaves) = m.with_state(|s| {
            Ok((
                s.audit.missing().is_empty(),
                s.audit.lacks_archived_leaves(),
            ))
        })?;
        if nothing_missing && !lacks_leaves {
            return Ok(false);
        }
        if nothing_missing {
            return self.fetch_archived_leaves(m, round).await;
        }
        let trail = m.with_state(|s| Ok(s.audit.clone()))?;
        let Some(&(from, to)) = trail.missing().last() else {
            return Ok(false);
        };
        let mut peers = self.other_managers(m);
        if peers.is_empty() {
            return Err(RpcError::new(
                RpcErrorKind::Unavailable,
                format!(
                    "this manager lacks audit records {from} to {to} and there is no other manager to fetch them from"
                ),
            ));
        }
        let start = round % peers.len();
        peers.rotate_left(start);
        tracing::info!(
            from,
            to,
            "this manager lacks audit records: fetching them from the other managers"
        );
        let mut failures = Vec::new();
        for peer in &peers {
            match self.fetch_chunk(&trail, peer, from, to).await {
                Ok((lo, hi, whole)) => {
                    tracing::info!(
                        manager = %peer.id,
                        addr = %peer.addr,
                        from = lo,
                        to = hi,
                        "fetched audit records, checked them against the log and wrote them"
                    );
                    if whole {
                        tracing::info!(
                            "this manager holds every audit record the cluster keeps again"
                        );
                    }
                    return Ok(true);
                }
                Err(FetchFailure::Refused(why)) => {
                    tracing::error!(manager = %peer.id, addr = %peer.addr, "{why}");
                    failures.push(why);
                }
                Err(FetchFailure::Unavailable(why)) => {
                    tracing::warn!(manager = %peer.id, addr = %peer.addr, error = %why, "could not fetch audit records from this manager");
                    failures.push(why);
                }
                Err(FetchFailure::Local(why)) => {
                    return Err(RpcError::new(RpcErrorKind::Internal, why));
                }
            }
        }
        Err(RpcError::new(
            RpcErrorKind::Unavailable,
            format!(
                "no manager gave audit records {from} to {to}: {}",
                failures.join("; ")
            ),
        ))
    }

    /// The managers other than this one, to fetch audit records from.
    fn other_managers(&self, m: &Manager) -> Vec<crate::rpc::Peer> {
        m.members()
            .into_iter()
            .filter(|p| p.id != self.id)
            .collect()
    }

    /// Fetches the leaf hashes of the archived records from another
    /// manager (this one joined after an archival): all of them from one
    /// manager, then the store checks that with the records held here they
    /// reproduce the log's root before it keeps them.
    async fn fetch_archived_leaves(&self, m: &Manager, round: usize) -> Result<bool, RpcError> {
        use crate::rpc::{AuditRecordsReq, AuditRecordsResp, method};
        let trail = m.with_state(|s| Ok(s.audit.clone()))?;
        let last = trail.first_kept() - 1;
        let mut peers = self.other_managers(m);
        if peers.is_empty() {
            return Err(RpcError::new(
                RpcErrorKind::Unavailable,
                "there is no other manager to fetch the leaf hashes of archived audit records from",
            ));
        }
        let start = round % peers.len();
        peers.rotate_left(start);
        let mut failures = Vec::new();
        'peers: for peer in &peers {
            let mut leaves = Vec::new();
            while (leaves.len() as u64) < last {
                let req = AuditRecordsReq {
                    from: leaves.len() as u64 + 1,
                    to: (leaves.len() as u64 + crate::rpc::MAX_AUDIT_FETCH_LEAVES as u64).min(last),
                    leaves: true,
                };
                let resp: AuditRecordsResp = match self
                    .call(&peer.addr, method::AUDIT_RECORDS, &req, FETCH_CALL_TIMEOUT)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(manager = %peer.id, addr = %peer.addr, error = %e.message, "could not fetch leaf hashes of archived audit records from this manager");
                        failures.push(e.message);
                        continue 'peers;
                    }
                };
                if let Err(e) = resp.check(&req).and_then(|()| {
                    (resp.first == req.from)
                        .then_some(())
                        .ok_or_else(|| "the page does not start where asked".to_string())
                }) {
                    let why = format!(
                        "manager {} at {} sent a malformed page of leaf hashes: {e}",
                        peer.id, peer.addr
                    );
                    tracing::error!("{why}");
                    failures.push(why);
                    continue 'peers;
                }
                leaves.extend(resp.leaves);
            }
            let t = trail.clone();
            let adopted = tokio::task::spawn_blocking(move || t.adopt_archived_leaves(&leaves))
                .await
                .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
            match adopted {
                Ok(_) => {
                    tracing::info!(manager = %peer.id, records = last, "fetched and checked the leaf hashes of archived audit records: proofs over the whole log can be made here again");
                    return Ok(true);
                }
                Err(moat_store::audit_segments::FillError::Refused(why)) => {
                    let why = format!(
                        "leaf hashes of archived audit records sent by manager {} at {} were refused: {why}",
                        peer.id, peer.addr
                    );
                    tracing::error!("{why}");
                    failures.push(why);
                }
                Err(e) => return Err(RpcError::new(RpcErrorKind::Internal, e.to_string())),
            }
        }
        Err(RpcError::new(
            RpcErrorKind::Unavailable,
            format!(
                "no manager gave the leaf hashes of archived audit records: {}",
                failures.join("; ")
            ),
        ))
    }

    /// Fetches records `.. ..= to` (not below `from`) from `peer`, page by
    /// page downwards until [`FETCH_CHUNK_BYTES`], then has the store check
    /// and write them. Returns the range written and whether nothing is
    /// missing any more.
    async fn fetch_chunk(
        &self,
        trail: &AuditTrail,
        peer: &crate::rpc::Peer,
        from: u64,
        to: u64,
    ) -> Result<(u64, u64, bool), FetchFailure> {
        use crate::rpc::{AuditRecordsReq, AuditRecordsResp, method};
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut bytes = 0usize;
        let mut hi = to;
        let lo = loop {
            let req = AuditRecordsReq {
                from,
                to: hi,
                leaves: false,
            };
            let resp: AuditRecordsResp = self
                .call(&peer.addr, method::AUDIT_RECORDS, &req, FETCH_CALL_TIMEOUT)
                .await
                .map_err(|e| FetchFailure::Unavailable(e.message))?;
            resp.check(&req).map_err(|e| {
                FetchFailure::Refused(format!(
                    "manager {} at {} sent a malformed page of audit records: {e}",
                    peer.id, peer.addr
                ))
            })?;
            bytes += resp.records.iter().map(String::len).sum::<usize>();
            let first = resp.first;
            pages.push(resp.records);
            if first == from || bytes >= FETCH_CHUNK_BYTES {
                break first;
            }
            hi = first - 1;
        };
        let lines: Vec<String> = pages.into_iter().rev().flatten().collect();
        let trail = trail.clone();
        let filled = tokio::task::spawn_blocking(move || trail.fill(lo, &lines))
            .await
            .map_err(|e| FetchFailure::Local(format!("writing fetched audit records: {e}")))?;
        match filled {
            Ok(whole) => Ok((lo, to, whole)),
            Err(moat_store::audit_segments::FillError::Refused(why)) => {
                Err(FetchFailure::Refused(format!(
                    "audit records {lo} to {to} sent by manager {} at {} were refused: {why}",
                    peer.id, peer.addr
                )))
            }
            Err(e) => Err(FetchFailure::Local(format!(
                "writing audit records {lo} to {to} fetched from manager {}: {e}",
                peer.id
            ))),
        }
    }

    /// Serves `audit_records` to manager `peer`: the newest records of
    /// `req` that fit one page ([`crate::rpc::MAX_AUDIT_FETCH_RECORDS`],
    /// [`crate::rpc::MAX_AUDIT_FETCH_BYTES`]), read from this manager's
    /// segments (authenticated there). Records it lacks or that were
    /// archived are an error, never a shorter page.
    pub(crate) fn serve_audit_records(
        &self,
        m: &Manager,
        peer: NodeId,
        req: crate::rpc::AuditRecordsReq,
    ) -> Result<crate::rpc::AuditRecordsResp, RpcError> {
        use crate::rpc::{MAX_AUDIT_FETCH_BYTES, MAX_AUDIT_FETCH_LEAVES, MAX_AUDIT_FETCH_RECORDS};
        let trail = m.with_state(|s| Ok(s.audit.clone()))?;
        if req.from == 0 || req.to < req.from || req.to > trail.size() {
            return Err(RpcError::new(
                RpcErrorKind::Invalid,
                format!(
                    "audit records {} to {} are not in a log of {} records",
                    req.from,
                    req.to,
                    trail.size()
                ),
            ));
        }
        if req.leaves {
            let lo = req
                .from
                .max(req.to.saturating_sub(MAX_AUDIT_FETCH_LEAVES as u64 - 1));
            let leaves = trail
                .with_tree(|t| {
                    (lo..=req.to)
                        .map(|seq| t.leaf_hash(seq - 1))
                        .collect::<Option<Vec<_>>>()
                })
                .map_err(unreadable)?
                .ok_or_else(|| {
                    RpcError::new(
                        RpcErrorKind::Internal,
                        "this manager's Merkle tree is shorter than its log",
                    )
                })?;
            tracing::debug!(manager = %peer, first = lo, to = req.to, "served audit leaf hashes");
            return Ok(crate::rpc::AuditRecordsResp {
                first: lo,
                records: Vec::new(),
                leaves,
            });
        }
        let lo = req
            .from
            .max(req.to.saturating_sub(MAX_AUDIT_FETCH_RECORDS as u64 - 1));
        let mut page = std::collections::VecDeque::new();
        let mut bytes = 0usize;
        trail
            .for_each_record(lo, req.to, |_, line| {
                bytes += line.len();
                page.push_back(line);
                while bytes > MAX_AUDIT_FETCH_BYTES {
                    let Some(old) = page.pop_front() else { break };
                    bytes -= old.len();
                }
                Ok(true)
            })
            .map_err(unreadable)?;
        if page.is_empty() {
            return Err(RpcError::new(
                RpcErrorKind::Internal,
                format!("audit record {} does not fit one page", req.to),
            ));
        }
        let first = req.to + 1 - page.len() as u64;
        tracing::debug!(manager = %peer, first, to = req.to, "served audit records");
        Ok(crate::rpc::AuditRecordsResp {
            first,
            records: page.into(),
            leaves: Vec::new(),
        })
    }

    /// `moat audit archive`, once the archive is written and verified:
    /// checks the archive's root against the log's at `below - 1`, then
    /// commits the mark with its `audit.archive` record (one entry, D29).
    /// Every manager then drops the archived segments (decision D48).
    pub(crate) async fn archive_audit(
        &self,
        m: &Manager,
        req: moat_api::AuditArchiveRequest,
    ) -> Result<moat_api::AuditArchiveResponse, RpcError> {
        let invalid = |why: String| RpcError::new(RpcErrorKind::Invalid, why);
        let trail = m.with_state(|s| Ok(s.audit.clone()))?;
        let below = req.below;
        if below < 2 || below - 1 > trail.size() {
            return Err(invalid(format!(
                "records up to {} cannot be archived: the log has {}",
                below.saturating_sub(1),
                trail.size()
            )));
        }
        let first = trail.first_kept();
        if below <= first {
            return Err(RpcError::new(
                RpcErrorKind::FailedPrecondition,
                format!("records below {first} were archived already"),
            ));
        }
        let root = trail.root(below - 1).map_err(unreadable)?;
        if root.to_hex() != req.root {
            return Err(invalid(format!(
                "the archive's head does not have the log's root at size {}: it is not an archive of this cluster's log",
                below - 1
            )));
        }
        let mark = moat_store::audit::ArchiveMark {
            below,
            time: self.clock.unix(),
            digest: req.digest.clone(),
        };
        mark.check().map_err(invalid)?;
        let ev = self
            .ev(
                operator(),
                Action::AUDIT_ARCHIVE,
                format!("audit:{first}-{}", below - 1),
            )
            .detail("first", first)
            .detail("last", below - 1)
            .detail("digest", &req.digest)
            .detail("root", &req.root)
            .detail("before", &req.before);
        self.propose_audited(Command::AuditArchive(mark), ev)
            .await?;
        let size = m.with_state(|s| Ok(s.audit.size()))?;
        Ok(moat_api::AuditArchiveResponse { below, size })
    }
}

/// An audit read this manager cannot answer: records it lacks (say which,
/// and where else to read them) or a damaged segment (named).
pub(crate) fn unreadable(e: AuditReadError) -> RpcError {
    match e {
        AuditReadError::Missing { .. } => RpcError::new(RpcErrorKind::Unavailable, e.to_string())
            .hint("ask another manager (`moat --socket …` on its node), or read an earlier export or archive"),
        AuditReadError::Archived { ref mark } => {
            let below = mark.below;
            RpcError::new(RpcErrorKind::FailedPrecondition, e.to_string()).hint(format!(
                "records from {below} on are still on the managers: `moat audit export --since {below}`"
            ))
        }
        _ => RpcError::new(RpcErrorKind::Internal, e.to_string()),
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
pub(crate) fn new_audit_key() -> Result<Secret, NodeError> {
    let key = AuditKey::generate().map_err(|e| {
        NodeError::new(
            moat_api::ErrorKind::Internal,
            format!("generating the audit key: {e}"),
        )
    })?;
    Ok(Secret::new(
        data_encoding::HEXLOWER.encode(key.expose_secret()),
    ))
}

/// A journal record as an audit event (`now`: the time given to a record
/// whose own time does not parse).
fn journal_event(me: NodeId, r: &Record, now: i64) -> ForwardedEvent {
    let action = match &r.action {
        JournalAction::TamperDetected => Action::TAMPER_DETECT,
        JournalAction::Unlock => Action::NODE_UNLOCK,
        JournalAction::DekRotated => Action::DEK_ROTATE,
        JournalAction::Backup => Action::BACKUP_CREATE,
        // The rest keep the journal's name, under `node.` (as records
        // made before the journal was typed do).
        other => format!("node.{}", other.as_str().replace('-', "_"))
            .parse()
            .unwrap_or(Action::TAMPER_DETECT),
    };
    let actor = match r.actor {
        JournalActor::LocalOperator | JournalActor::UnattendedStart => operator(),
        JournalActor::ThisNode | JournalActor::Other(_) => Actor::node(me),
    };
    let mut ev = EventDraft::new(me, actor, action, &format!("node:{me}"))
        .detail("journal_seq", r.seq)
        .detail("journal_action", r.action.as_str());
    ev = match (r.outcome, r.reason.is_empty()) {
        (JournalOutcome::Success, true) => ev,
        (JournalOutcome::Success, false) => ev.detail("note", &r.reason),
        (JournalOutcome::Denied, false) => ev.denied(&r.reason),
        (JournalOutcome::Denied, true) => ev.denied("denied"),
        (JournalOutcome::Failed, false) => ev.failed(&r.reason),
        (JournalOutcome::Failed, true) => ev.failed("failed"),
    };
    let time = r
        .time
        .parse::<Timestamp>()
        .map(Timestamp::unix_seconds)
        .unwrap_or(now);
    ForwardedEvent {
        journal_seq: r.seq,
        time,
        event: ev.0,
    }
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

/// The note of a `dek-rotated` journal record, and so of the
/// [`Action::DEK_ROTATE`] audit record it is forwarded as: the version the
/// rotation put in use.
pub(crate) fn dek_rotated_note(version: moat_lock::DekVersion) -> String {
    format!("now version {}", version.0)
}

/// When data key `version` of `node`'s store was made (Unix seconds), by
/// the audit log, never by a file's time (re-wrapping the key under a new
/// unlock key rewrites its file): the newest record about that store is
///
/// * the [`Action::DEK_ROTATE`] `node` forwarded when a rotation put
///   `version` in use: the earlier of its time and the time the node's
///   journal gave it (a forward can be late; a key is never made younger
///   than it is);
/// * or, for version 1, the record of the store's making: the cluster's
///   [`Action::CLUSTER_INIT`] by `node`, `node` joining as a manager (not a
///   rejoin, which keeps the store), or `node` promoted (a demotion
///   deletes the store).
///
/// `None` when the newest such record is not about `version` (a rotation
/// whose record is not forwarded yet, a log that starts after the store
/// was made): unknown, which the report says, rather than a wrong age.
/// Reads the log in order and keeps the newest deciding record, parsing
/// only records that name `node`.
pub(crate) fn data_key_created(
    trail: &AuditTrail,
    node: NodeId,
    version: moat_lock::DekVersion,
) -> Option<i64> {
    let id = node.to_string();
    let target = format!("node:{id}");
    let by_node = Actor::node(node);
    // Oldest to newest, keeping the newest answer (the segments are read
    // in order; a manager missing records answers from those it holds).
    // Archived records (D48) are not read: a key whose record was archived
    // has no known age here.
    let mut found = None;
    let scan = trail.for_each_record(trail.first_kept(), trail.size(), |_, line| {
        if let Some(answer) = about_data_key(&line, &id, &target, &by_node, node, version) {
            found = Some(answer);
        }
        Ok(true)
    });
    if let Err(e) = scan {
        tracing::warn!(error = %e, "reading the audit log for the data key's age");
    }
    found.flatten()
}

/// What record `line` says of data key `version` of `node`'s store:
/// `Some(answer)` if it is the kind of record that decides it.
fn about_data_key(
    line: &str,
    id: &str,
    target: &str,
    by_node: &Actor,
    node: NodeId,
    version: moat_lock::DekVersion,
) -> Option<Option<i64>> {
    if !line.contains(id) {
        return None;
    }
    let record = moat_audit::Record::from_line(line.as_bytes()).ok()?;
    let e = record.event();
    if !matches!(e.outcome, Outcome::Success) {
        return None;
    }
    let time = record.time().unix_seconds();
    let about_me = e.target.as_str() == target;
    let made = (e.action == Action::CLUSTER_INIT && e.node == node)
        || (e.action == Action::NODE_PROMOTE && about_me)
        || (e.action == Action::NODE_JOIN
            && about_me
            && e.details.get("role") == Some("manager")
            && e.details.get("rejoin") != Some("true"));
    if made {
        return Some((version.0 == 1).then_some(time));
    }
    if e.action == Action::DEK_ROTATE && &e.actor == by_node {
        if e.details.get("note") != Some(dek_rotated_note(version).as_str()) {
            return Some(None);
        }
        let claimed = e
            .details
            .get("claimed_time")
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(Timestamp::unix_seconds);
        return Some(Some(claimed.map_or(time, |c| c.min(time))));
    }
    None
}

/// `moat audit hash`: the keyed hash of `value`.
pub(crate) fn audit_hash(state: &ClusterState, value: &str) -> Result<String, RpcError> {
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
        let r = Record {
            seq: 7,
            time: "2026-01-02T03:04:05Z".into(),
            node: String::new(),
            actor: JournalActor::LocalOperator,
            action: JournalAction::Unlock,
            outcome: JournalOutcome::Failed,
            reason: "wrong unlock key".into(),
            prev: String::new(),
        };
        let f = journal_event(me(), &r, 0);
        assert_eq!(f.journal_seq, 7);
        assert_eq!(f.event.action, Action::NODE_UNLOCK);
        assert_eq!(f.event.outcome.as_str(), "failed");
        assert_eq!(f.event.outcome.reason(), "wrong unlock key");
        assert_eq!(f.event.actor, operator());
        assert_eq!(f.time, 1_767_323_045);
        let r = Record {
            action: JournalAction::UnlockKeyRotated,
            actor: JournalActor::ThisNode,
            outcome: JournalOutcome::Success,
            reason: String::new(),
            time: "not a time".into(),
            ..r
        };
        let f = journal_event(me(), &r, 42);
        assert_eq!(f.event.action.as_str(), "node.unlock_key_rotated");
        assert_eq!(f.event.actor, Actor::node(me()));
        assert_eq!(f.time, 42);
    }

    /// Guards the report's "Data key created": it comes from the records
    /// of the store's making and of its rotations, never from a re-wrap.
    #[test]
    fn a_data_keys_creation_comes_from_the_audit_log() {
        use moat_lock::DekVersion;
        use moat_store::model::Response;

        let other: NodeId = "0123456789abcdefghijklmn10".parse().unwrap();
        let mut state = ClusterState::default();
        let record = |state: &mut ClusterState, time: i64, ev: EventDraft| {
            let applied = state.apply(&Command::Audit {
                time,
                event: ev.into_event(),
            });
            assert!(matches!(applied, Response::Applied), "{applied:?}");
        };
        let forward = |state: &mut ClusterState, node: NodeId, seq, time: &str, note: &str, now| {
            let r = Record {
                seq,
                time: time.into(),
                node: String::new(),
                actor: JournalActor::ThisNode,
                action: JournalAction::DekRotated,
                outcome: JournalOutcome::Success,
                reason: note.into(),
                prev: String::new(),
            };
            let applied = state.apply(&Command::AuditForward {
                node,
                events: vec![journal_event(node, &r, now)],
                now,
            });
            assert!(matches!(applied, Response::Applied), "{applied:?}");
        };
        let created = |state: &ClusterState, v| data_key_created(&state.audit, me(), DekVersion(v));
        let v2 = dek_rotated_note(DekVersion(2));
        assert_eq!(v2, "now version 2");
        assert_eq!(created(&state, 1), None, "an empty log knows nothing");

        let ev = |node, action, target: &str| EventDraft::new(node, operator(), action, target);
        record(
            &mut state,
            1_000,
            ev(me(), Action::CLUSTER_INIT, "cluster:c"),
        );
        assert_eq!(created(&state, 1), Some(1_000));
        assert_eq!(created(&state, 2), None, "v2 is not made by init");
        // Another manager's making and rotation are not this store's.
        let join = ev(other, Action::NODE_JOIN, &format!("node:{other}")).detail("role", "manager");
        record(&mut state, 1_100, join);
        forward(&mut state, other, 1, "1970-01-01T00:20:00Z", &v2, 1_200);
        assert_eq!(created(&state, 1), Some(1_000));

        // A rotation: the journal's time, though forwarded later…
        forward(&mut state, me(), 1, "1970-01-01T00:33:20Z", &v2, 2_100);
        assert_eq!(created(&state, 2), Some(2_000));
        assert_eq!(created(&state, 1), None, "v1 was replaced");
        // …but never younger than its record.
        let v3 = dek_rotated_note(DekVersion(3));
        forward(&mut state, me(), 2, "2100-01-01T00:00:00Z", &v3, 2_200);
        assert_eq!(created(&state, 3), Some(2_200));
        assert_eq!(created(&state, 2), None);
        // Re-wrapping under a new unlock key, a refused or failed event,
        // a rejoin: no new data key.
        record(
            &mut state,
            3_000,
            ev(me(), Action::UNLOCK_KEY_ROTATE, "cluster"),
        );
        let rejoin = ev(me(), Action::NODE_JOIN, &format!("node:{}", me()))
            .detail("role", "manager")
            .detail("rejoin", true);
        record(&mut state, 3_100, rejoin);
        let refused = ev(me(), Action::NODE_PROMOTE, &format!("node:{}", me())).denied("no");
        record(&mut state, 3_200, refused);
        assert_eq!(created(&state, 3), Some(2_200));
        // Demoted then promoted: a new store, v1 again.
        record(
            &mut state,
            4_000,
            ev(other, Action::NODE_PROMOTE, &format!("node:{}", me())),
        );
        assert_eq!(created(&state, 1), Some(4_000));
        assert_eq!(created(&state, 2), None);
    }
}
