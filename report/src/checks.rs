//! The checks: one pass over the inventory, one finding per thing the
//! policy does not accept.

use moat_api::{CryptoInventory, NodeCrypto, RootCaInfo, TokenCrypto};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::{
    Finding, Policy, PolicyDuration, Severity, TlsVersion, human_duration, percent, short_id,
};

/// The findings of checking `inv` against `policy` at `now`, worst first
/// (in inventory order within a severity).
pub fn findings(inv: &CryptoInventory, policy: &Policy, now: OffsetDateTime) -> Vec<Finding> {
    let mut c = Checks {
        policy,
        now,
        out: Vec::new(),
    };
    c.root_ca(inv);
    c.cert_lifetime(
        inv.cert_expiry_seconds,
        &format!(
            "`moat update --cert-expiry {}` ({CERT_RUNBOOK})",
            policy.node_cert_max_lifetime
        ),
    );
    for n in &inv.nodes {
        c.node(inv, n);
    }
    c.tls(inv);
    for t in &inv.join_tokens {
        c.token(t);
    }
    c.keys(inv);
    c.audit(inv);
    for s in inv.secrets.iter().filter(|s| s.kind == "secret") {
        c.age(
            &format!("secret {} (version {})", s.name, s.version),
            "last changed",
            Some(&s.updated_at),
            policy.secret_max_age,
            &format!(
                "give it a new value with `moat secret update {} FILE`; the services that use it \
                 roll onto it ({SECRET_RUNBOOK})",
                s.name
            ),
        );
    }
    c.workloads(inv);
    let mut out = c.out;
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// A node certificate's time left, and the part of its lifetime that is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CertLife {
    /// Until the end of its validity; negative once it has expired.
    pub left: Duration,
    /// `left` as a part of the certificate's lifetime: `not_after -
    /// not_before`, or the cluster's certificate lifetime when the start is
    /// not recorded or not usable; `None` when neither is known.
    pub fraction: Option<f64>,
}

impl CertLife {
    /// `n`'s certificate at `now`, or `None` when its `not_after` is not an
    /// RFC 3339 time (which [`findings`] reports).
    pub fn of(inv: &CryptoInventory, n: &NodeCrypto, now: OffsetDateTime) -> Option<CertLife> {
        parse_time(&n.not_after).map(|not_after| CertLife::until(inv, n, not_after, now))
    }

    /// Whether less of the lifetime is left than the policy's
    /// `cert_renew_fraction`: nodes renew earlier, so renewal is failing.
    pub fn renewal_overdue(&self, policy: &Policy) -> bool {
        self.fraction
            .is_some_and(|f| f < policy.cert_renew_fraction.get())
    }

    fn until(
        inv: &CryptoInventory,
        n: &NodeCrypto,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> CertLife {
        let left = not_after - now;
        let from_start = n
            .not_before
            .as_deref()
            .and_then(parse_time)
            .map(|nb| not_after - nb)
            .filter(|d| d.is_positive());
        let lifetime = from_start.or_else(|| {
            i64::try_from(inv.cert_expiry_seconds)
                .ok()
                .map(Duration::seconds)
                .filter(|d| d.is_positive())
        });
        CertLife {
            left,
            fraction: lifetime.map(|l| left.as_seconds_f64() / l.as_seconds_f64()),
        }
    }
}

/// Whether `n`'s certificate was issued by the cluster's root CA (its
/// issuer fingerprint is the root's, ignoring case).
pub fn issued_by_root(inv: &CryptoInventory, n: &NodeCrypto) -> bool {
    n.issuer_fingerprint
        .trim()
        .eq_ignore_ascii_case(inv.root_ca.fingerprint.trim())
}

/// Runbooks the fixes point to.
const CERT_RUNBOOK: &str = "docs/runbooks/certificates.md";
const CA_RUNBOOK: &str = "docs/runbooks/rotate-the-ca.md";
const TOKEN_RUNBOOK: &str = "docs/runbooks/rotate-join-tokens.md";
const UNLOCK_KEY_RUNBOOK: &str = "docs/runbooks/rotate-the-unlock-key.md";
const AUTOLOCK_RUNBOOK: &str = "docs/runbooks/unlock-a-manager.md";
const SECRET_RUNBOOK: &str = "docs/runbooks/secrets.md";
const IDENTITY_DOC: &str = "docs/secrets.md#workload-identity";

pub(crate) struct Checks<'a> {
    pub(crate) policy: &'a Policy,
    pub(crate) now: OffsetDateTime,
    pub(crate) out: Vec<Finding>,
}

impl Checks<'_> {
    pub(crate) fn push(
        &mut self,
        severity: Severity,
        subject: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.out.push(Finding {
            severity,
            subject: subject.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    /// Parses a time field; one that does not parse is a finding of
    /// `severity` (the check it feeds cannot be made).
    pub(crate) fn time(
        &mut self,
        severity: Severity,
        subject: &str,
        field: &str,
        value: &str,
        fix: &str,
    ) -> Option<OffsetDateTime> {
        let t = parse_time(value);
        if t.is_none() {
            self.push(
                severity,
                subject,
                format!("its {field} `{value}` is not an RFC 3339 time, so it cannot be checked"),
                format!("{fix}; the answering manager sent a malformed inventory: report it as a moat bug"),
            );
        }
        t
    }

    /// Services without a workload identity (if the policy wants one),
    /// and task certificates that expired: their node stopped renewing.
    fn workloads(&mut self, inv: &CryptoInventory) {
        if self.policy.require_workload_identity {
            for s in inv
                .services
                .iter()
                .filter(|s| s.identity_ttl_secs.is_none())
            {
                self.push(
                    Severity::Medium,
                    &format!("service {}", s.name),
                    "its tasks have no workload identity, so the services it talks to cannot \
                     tell it from any other process that reaches them",
                    format!(
                        "`moat service update --identity-ttl 1h {}` (a rolling update), and have \
                         its peers check its spiffe:// id ({IDENTITY_DOC})",
                        s.name
                    ),
                );
            }
        }
        for w in &inv.workload_certs {
            let subject = format!("workload certificate of task {} ({})", w.task, w.service);
            let fix = format!(
                "the node {} renews it at half its life: look at that node's daemon log \
                 (`moat node ps {}`) ({IDENTITY_DOC})",
                w.node, w.node
            );
            let Some(not_after) = self.time(Severity::Low, &subject, "expiry", &w.not_after, &fix)
            else {
                continue;
            };
            if not_after <= self.now {
                self.push(
                    Severity::High,
                    &subject,
                    format!(
                        "expired at {}, yet the task is to run: its node did not renew it",
                        w.not_after
                    ),
                    fix,
                );
            }
        }
    }

    /// An optional creation time checked against a maximum age.
    pub(crate) fn age(
        &mut self,
        subject: &str,
        what: &str,
        at: Option<&str>,
        max: PolicyDuration,
        fix: &str,
    ) {
        let Some(at) = at else {
            self.push(
                Severity::Info,
                subject,
                format!("the time it was {what} is not recorded, so its age is unknown"),
                fix,
            );
            return;
        };
        let Some(t) = self.time(
            Severity::Low,
            subject,
            &format!("time it was {what}"),
            at,
            fix,
        ) else {
            return;
        };
        let age = self.now - t;
        if age > max.signed() {
            self.push(
                Severity::Medium,
                subject,
                format!(
                    "{} old ({what} {at}); the policy allows at most {max}",
                    human_duration(age.unsigned_abs())
                ),
                fix,
            );
        }
    }

    pub(crate) fn algorithm(
        &mut self,
        subject: &str,
        algorithm: &str,
        severity: Severity,
        fix: &str,
    ) {
        let algorithm = algorithm.trim();
        if algorithm.is_empty() {
            self.push(
                Severity::Low,
                subject,
                "its key algorithm is not recorded (issued before moat recorded it)",
                fix,
            );
        } else if !self.policy.allows(algorithm) {
            self.push(
                severity,
                subject,
                format!(
                    "its key algorithm {algorithm} is not allowed (allowed: {})",
                    self.policy.allowed_algorithms.join(", ")
                ),
                fix,
            );
        }
    }

    fn root_ca(&mut self, inv: &CryptoInventory) {
        let rotate = format!(
            "rotate the root CA with `moat ca --rotate` on a manager: a new root, cross-signed \
             by this one, that every node renews from without dropping a connection \
             ({CA_RUNBOOK})"
        );
        let inspect = "on a manager, `moat cert inspect /var/lib/moat/certs/ca.crt`";
        self.root(&inv.root_ca, &rotate, inspect);
    }

    /// A root CA's algorithm and its time left, against the policy.
    pub(crate) fn root(&mut self, root: &RootCaInfo, rotate: &str, inspect: &str) {
        let subject = "root CA";
        self.algorithm(subject, &root.algorithm, Severity::High, rotate);
        let Some(not_after) = self.time(
            Severity::Medium,
            subject,
            "end of validity",
            &root.not_after,
            inspect,
        ) else {
            return;
        };
        let left = not_after - self.now;
        let min = self.policy.root_ca_min_remaining.signed();
        if left.is_negative() {
            self.push(
                Severity::Critical,
                subject,
                format!(
                    "expired {} ago ({}): no node can renew or join",
                    human_duration(left.unsigned_abs()),
                    root.not_after
                ),
                rotate,
            );
        } else if left < min {
            // A quarter of the notice the policy asks for is too little
            // time to roll a new root to every node.
            let severity = if left < min / 4 {
                Severity::High
            } else {
                Severity::Medium
            };
            self.push(
                severity,
                subject,
                format!(
                    "expires in {} ({}); the policy asks for at least {} left",
                    human_duration(left.unsigned_abs()),
                    root.not_after,
                    self.policy.root_ca_min_remaining
                ),
                rotate,
            );
        }
    }

    fn node(&mut self, inv: &CryptoInventory, n: &NodeCrypto) {
        let subject = node_subject(n);
        let id = short_id(&n.id);
        let inspect = format!("`moat node inspect {id}`");
        let renew = if n.ready {
            format!(
                "{inspect}, and look for `certificate renewal failed` in the node's log; \
                 see {CERT_RUNBOOK}#renewal"
            )
        } else {
            format!(
                "the node is down and cannot renew: start it (or remove it with `moat node rm {id}`); \
                 {inspect}; see {CERT_RUNBOOK}#renewal"
            )
        };
        self.algorithm(
            &subject,
            &n.algorithm,
            Severity::Medium,
            &format!(
                "its next renewal makes a new key and records it: check it is up ({inspect}); \
                 see {CERT_RUNBOOK}"
            ),
        );
        if !issued_by_root(inv, n) {
            self.push(
                Severity::High,
                &subject,
                format!(
                    "its certificate was issued by another root ({}), not this cluster's root CA ({})",
                    n.issuer_fingerprint, inv.root_ca.fingerprint
                ),
                format!(
                    "{inspect}; a member renews onto the current root ({CERT_RUNBOOK}); a node that \
                     does not belong here: `moat node rm {id}`"
                ),
            );
        }
        let Some(not_after) = self.time(
            Severity::Medium,
            &subject,
            "certificate end",
            &n.not_after,
            &inspect,
        ) else {
            return;
        };
        if let Some(nb) = &n.not_before {
            // Without a start, the lifetime falls back to the cluster's.
            self.time(Severity::Low, &subject, "certificate start", nb, &inspect);
        }
        let life = CertLife::until(inv, n, not_after, self.now);
        if life.left.is_negative() {
            self.push(
                Severity::Critical,
                &subject,
                format!(
                    "its certificate expired {} ago ({}): the node is out of the cluster",
                    human_duration(life.left.unsigned_abs()),
                    n.not_after
                ),
                format!("{inspect}; see {CERT_RUNBOOK}#a-node-whose-certificate-expired"),
            );
        } else if life.renewal_overdue(self.policy)
            && let Some(fraction) = life.fraction
        {
            self.push(
                Severity::High,
                &subject,
                format!(
                    "its certificate has {} of its lifetime left (expires in {}); nodes renew with \
                     20-50 % left, so renewal is failing",
                    percent(fraction),
                    human_duration(life.left.unsigned_abs())
                ),
                renew,
            );
        }
    }

    fn tls(&mut self, inv: &CryptoInventory) {
        let subject = "TLS between nodes";
        let upgrade = "moat accepts only TLS 1.3 with mutual authentication: upgrade moat on \
                       every node (docs/security-model.md)";
        self.tls_versions(subject, &inv.tls.versions, upgrade);
        if !inv.tls.mutual {
            self.push(
                Severity::High,
                subject,
                "TLS is not mutual: nodes do not all present certificates",
                upgrade,
            );
        }
    }

    /// The lifetime the cluster gives node certificates, against the
    /// policy's maximum.
    pub(crate) fn cert_lifetime(&mut self, seconds: u64, fix: &str) {
        let max = self.policy.node_cert_max_lifetime;
        if seconds > max.as_secs() {
            self.push(
                Severity::Medium,
                "node certificate lifetime",
                format!(
                    "node certificates are made to live {}; the policy allows at most {max}: a \
                     stolen node key and certificate stay good that long",
                    human_duration(std::time::Duration::from_secs(seconds))
                ),
                fix,
            );
        }
    }

    /// TLS versions accepted, against the policy's minimum.
    pub(crate) fn tls_versions(&mut self, subject: &str, versions: &[String], fix: &str) {
        let min = self.policy.min_tls_version;
        for v in versions {
            match v.parse::<TlsVersion>() {
                Ok(version) if version < min => self.push(
                    Severity::High,
                    subject,
                    format!("accepts {v}, below the policy's minimum {}", min.as_str()),
                    fix,
                ),
                Ok(_) => {}
                Err(_) => self.push(
                    Severity::Low,
                    subject,
                    format!("accepts `{v}`, a protocol version this report does not know"),
                    fix,
                ),
            }
        }
    }

    fn token(&mut self, t: &TokenCrypto) {
        let subject = format!("join token {} ({} {})", t.id, t.kind, t.role);
        if t.expires_at
            .as_deref()
            .and_then(parse_time)
            .is_some_and(|end| end <= self.now)
        {
            return; // it no longer works, however old it is
        }
        let fix = if t.kind == "standing" {
            format!(
                "`moat join-token --rotate {}`, and let the cluster rotate it: `moat update \
                 --token-ttl {}` ({TOKEN_RUNBOOK})",
                t.role, self.policy.token_max_age
            )
        } else {
            format!(
                "`moat join-token revoke {}`; make one-off tokens with `moat join-token create \
                 --role {} --ttl 1h --uses 1` ({TOKEN_RUNBOOK})",
                t.id, t.role
            )
        };
        self.age(
            &subject,
            "created",
            t.created_at.as_deref(),
            self.policy.token_max_age,
            &fix,
        );
    }

    fn keys(&mut self, inv: &CryptoInventory) {
        if !inv.autolock {
            if self.policy.require_autolock {
                self.push(
                    Severity::High,
                    "autolock",
                    "autolock is off: each manager keeps the key to its CA key and data keys in \
                     `unlock.key` on its own disk, so a copy of that disk opens everything",
                    format!(
                        "`moat update --autolock=true`, then store the unlock key it prints \
                         ({AUTOLOCK_RUNBOOK})"
                    ),
                );
            }
        } else {
            match &inv.unlock_key {
                None => self.push(
                    Severity::Low,
                    "unlock key",
                    "autolock is on but the inventory names no unlock key",
                    format!("`moat unlock-key` on a manager shows it ({UNLOCK_KEY_RUNBOOK})"),
                ),
                Some(key) => self.age(
                    &format!("unlock key (generation {})", key.version),
                    "set",
                    key.set_at.as_deref(),
                    self.policy.unlock_key_max_age,
                    &format!(
                        "`moat unlock-key --rotate`, store the new key and keep the old one as \
                         the runbook says ({UNLOCK_KEY_RUNBOOK})"
                    ),
                ),
            }
        }
        let dek = &inv.data_key;
        let subject = format!("data key v{} on {}", dek.version, inv.answered_by);
        self.age(
            &subject,
            "created",
            dek.created_at.as_deref(),
            self.policy.dek_max_age,
            &format!(
                "moat has no data-key rotation command yet: a manager rotates its data key when \
                 autolock is turned on (`moat update --autolock=true`, {AUTOLOCK_RUNBOOK}); \
                 `moat unlock-key --rotate` re-wraps the key but does not replace it \
                 ({UNLOCK_KEY_RUNBOOK})"
            ),
        );
        if let Some(v) = dek.rotating_to {
            self.push(
                Severity::Info,
                &subject,
                format!("a rotation to version {v} is under way"),
                "nothing to do: it finishes on its own; `moat info` shows the version in use",
            );
        }
    }

    fn audit(&mut self, inv: &CryptoInventory) {
        let a = &inv.audit;
        let subject = "audit log";
        let fix = "managers sign a tree head at intervals: if the count keeps growing, check the \
                   managers are up (`moat node ls`) and their logs; `moat audit export` then \
                   `moat audit verify` checks the signed part (docs/formats/audit.md)";
        let unsigned = a.records.saturating_sub(a.last_head_size.unwrap_or(0));
        if unsigned > 0 {
            self.push(
                Severity::Low,
                subject,
                format!(
                    "{unsigned} record{} not yet covered by a signed tree head",
                    if unsigned == 1 { " is" } else { "s are" }
                ),
                fix,
            );
        }
        if let Some(at) = &a.last_head_at {
            self.time(Severity::Low, subject, "newest head time", at, fix);
        }
        if let (Some(bytes), Some(limit)) = (a.snapshot_bytes, a.snapshot_limit_bytes)
            && limit > 0
        {
            let share = bytes as f64 / limit as f64;
            let severity = if share >= 0.8 {
                Some(Severity::High)
            } else if share >= 0.5 {
                Some(Severity::Medium)
            } else {
                None
            };
            if let Some(severity) = severity {
                self.push(
                    severity,
                    subject,
                    format!(
                        "the store's snapshot is {} MiB, {:.0} % of its {} MiB limit, and the audit log ({} records) only grows: past the limit managers can no longer load or send it",
                        bytes >> 20,
                        share * 100.0,
                        limit >> 20,
                        a.records
                    ),
                    "find what writes so many records (`moat audit ls --format json`, counted by action and node), stop its cause, and keep exports of the log; archiving old records is not supported yet (docs/runbooks/audit-the-cluster.md#the-logs-size)",
                );
            }
        }
    }
}

pub(crate) fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

fn node_subject(n: &NodeCrypto) -> String {
    format!("node {} ({})", n.hostname, short_id(&n.id))
}

#[cfg(test)]
mod tests;
