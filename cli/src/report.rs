//! `moat audit report`: checks a cluster's crypto inventory
//! ([`CryptoInventory`], `GET /v1/audit/report`) against a [`Policy`] and
//! renders the inventory and the [`Finding`]s as a terminal table, JSON or
//! one self-contained HTML file.
//!
//! Everything here is a pure function of the inventory, the policy and a
//! `now`: no I/O but [`Policy::load`]. Inventory values are data from the
//! cluster (a node picks its own host name): nothing here panics on them,
//! a time that does not parse is itself a finding, terminal output shows
//! control characters escaped and HTML output escapes every string.
//!
//! Exit status (for the caller): `moat audit report` exits 0 when no
//! finding is at or above the policy's `fail_on` severity (default
//! `high`), and [`EXIT_FINDINGS`] (3) otherwise ([`fails`]); 1 and 2 keep
//! their usual meaning (the command failed, usage error). See
//! `docs/audit-report.md`.

use std::fmt::{self, Write as _};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use moat_api::{CryptoInventory, NodeCrypto, TokenCrypto};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::output::{read_input, write_fields, write_json, write_table};
use crate::render::{exact_duration, human_duration, relative};

/// Largest policy file read; larger ones are refused before reading.
pub(crate) const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// Exit code of `moat audit report` when a finding is at or above the
/// policy's `fail_on` severity.
pub(crate) const EXIT_FINDINGS: u8 = 3;

/// How bad a finding is, from `info` to `critical` (ordered that way).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    /// Worth knowing; nothing to do.
    Info,
    /// Tidy up when convenient.
    Low,
    /// Fix within the policy's cycle.
    Medium,
    /// Fix now: security or availability is at risk.
    High,
    /// Broken or exposed already.
    Critical,
}

impl Severity {
    /// Every severity, worst first.
    pub(crate) const WORST_FIRST: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// `critical`, `high`, `medium`, `low` or `info`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the report checks the inventory against. Every key is optional in
/// the policy file; [`Policy::default`] holds the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Policy {
    /// A node certificate with less than this part of its lifetime left is
    /// a finding (high; expired: critical).
    pub(crate) cert_renew_fraction: Fraction,
    /// The root CA expiring sooner than this is a finding.
    pub(crate) root_ca_min_remaining: PolicyDuration,
    /// A join token older than this is a finding.
    pub(crate) token_max_age: PolicyDuration,
    /// Autolock off is a finding.
    pub(crate) require_autolock: bool,
    /// A data encryption key older than this is a finding.
    pub(crate) dek_max_age: PolicyDuration,
    /// An unlock key older than this is a finding.
    pub(crate) unlock_key_max_age: PolicyDuration,
    /// Key algorithms accepted for the root CA and node certificates
    /// (compared ignoring case).
    pub(crate) allowed_algorithms: Vec<String>,
    /// TLS versions below this one are findings.
    pub(crate) min_tls_version: TlsVersion,
    /// Findings at or above this severity make the report fail.
    pub(crate) fail_on: Severity,
}

impl Default for Policy {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            cert_renew_fraction: Fraction(0.25),
            root_ca_min_remaining: PolicyDuration(StdDuration::from_secs(365 * DAY)),
            token_max_age: PolicyDuration(StdDuration::from_secs(30 * DAY)),
            require_autolock: true,
            dek_max_age: PolicyDuration(StdDuration::from_secs(90 * DAY)),
            unlock_key_max_age: PolicyDuration(StdDuration::from_secs(180 * DAY)),
            allowed_algorithms: ["ECDSA P-256", "ECDSA P-384", "Ed25519"]
                .map(String::from)
                .to_vec(),
            min_tls_version: TlsVersion::Tls13,
            fail_on: Severity::High,
        }
    }
}

impl Policy {
    /// Reads a TOML policy file (`-` is standard input). Keys left out keep
    /// their defaults; an unknown key, a wrong type or a bad value is an
    /// error naming it, and a file over [`MAX_POLICY_BYTES`] is refused
    /// before it is read.
    pub(crate) fn load(path: &Path) -> Result<Policy, PolicyError> {
        let bytes = read_input(path, MAX_POLICY_BYTES).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| invalid(format!("the file is not UTF-8 text: {e}")))?;
        Policy::from_toml(text).map_err(invalid)
    }

    /// Parses a policy from TOML text; the error says what is wrong and
    /// where.
    pub(crate) fn from_toml(text: &str) -> Result<Policy, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Whether `algorithm` is one of `allowed_algorithms` (ignoring case
    /// and surrounding spaces).
    pub(crate) fn allows(&self, algorithm: &str) -> bool {
        self.allowed_algorithms
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case(algorithm.trim()))
    }

    /// Whether `severity` is at or above `fail_on`.
    pub(crate) fn fails_on(&self, severity: Severity) -> bool {
        severity >= self.fail_on
    }
}

/// A policy file that could not be used.
#[derive(Debug)]
pub(crate) enum PolicyError {
    /// It could not be read, or is larger than [`MAX_POLICY_BYTES`].
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// It is not a policy: not UTF-8 TOML, an unknown key, a wrong type or
    /// a value out of range.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Read { path, .. } => {
                write!(f, "cannot read the policy file {}", path.display())
            }
            PolicyError::Invalid { path, message } => {
                write!(
                    f,
                    "the policy file {} is not valid: {message}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PolicyError::Read { source, .. } => Some(source),
            PolicyError::Invalid { .. } => None,
        }
    }
}

/// A part of a whole, from 0 to 1 (`0.25`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub(crate) struct Fraction(f64);

impl Fraction {
    /// The value, from 0 to 1.
    pub(crate) fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Fraction {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Fraction(v))
        } else {
            Err(format!(
                "{v} is not a fraction between 0 and 1 (0.25 is a quarter)"
            ))
        }
    }
}

impl From<Fraction> for f64 {
    fn from(f: Fraction) -> f64 {
        f.0
    }
}

/// A duration written as humantime text: `365d`, `30days`, `12h`, `90m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct PolicyDuration(StdDuration);

impl PolicyDuration {
    /// As a signed `time` duration (saturating).
    fn signed(self) -> Duration {
        Duration::try_from(self.0).unwrap_or(Duration::MAX)
    }
}

impl TryFrom<String> for PolicyDuration {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(PolicyDuration)
            .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30d`, `12h` or `90m`"))
    }
}

impl From<PolicyDuration> for String {
    fn from(d: PolicyDuration) -> String {
        d.to_string()
    }
}

impl fmt::Display for PolicyDuration {
    /// The largest whole unit: `365d`, `36h`, `90m`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() != 0 || secs == 0 {
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if secs.is_multiple_of(n) {
                return write!(f, "{}{unit}", secs / n);
            }
        }
        write!(f, "{secs}s")
    }
}

/// A TLS (or SSL) protocol version, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) enum TlsVersion {
    /// SSL 2.0.
    Ssl2,
    /// SSL 3.0.
    Ssl3,
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// `TLSv1.3` and the like.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Ssl2 => "SSLv2",
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls10 => "TLSv1.0",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    /// Accepts `TLSv1.3`, `TLSv1_3` (rustls), `TLS 1.3`, `tls1.3`, and
    /// `TLSv1` for 1.0.
    fn from_str(s: &str) -> Result<Self, String> {
        let norm: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != 'v' && *c != 'V')
            .map(|c| {
                if c == '_' {
                    '.'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        Ok(match norm.as_str() {
            "ssl2" | "ssl2.0" => TlsVersion::Ssl2,
            "ssl3" | "ssl3.0" => TlsVersion::Ssl3,
            "tls1" | "tls1.0" => TlsVersion::Tls10,
            "tls1.1" => TlsVersion::Tls11,
            "tls1.2" => TlsVersion::Tls12,
            "tls1.3" => TlsVersion::Tls13,
            _ => {
                return Err(format!(
                    "`{s}` is not a TLS version (TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3)"
                ));
            }
        })
    }
}

impl TryFrom<String> for TlsVersion {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TlsVersion> for String {
    fn from(v: TlsVersion) -> String {
        v.as_str().to_owned()
    }
}

/// Something in the inventory that the policy does not accept, and what
/// to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Finding {
    /// How bad it is.
    pub(crate) severity: Severity,
    /// What it is about: `node web-1 (0123456789ab)`, `root CA`,
    /// `join token 3f9k2d0a…`.
    pub(crate) subject: String,
    /// What is wrong.
    pub(crate) problem: String,
    /// A moat command or runbook that fixes it.
    pub(crate) fix: String,
}

/// The findings of checking `inv` against `policy` at `now`, worst first
/// (in inventory order within a severity).
pub(crate) fn findings(
    inv: &CryptoInventory,
    policy: &Policy,
    now: OffsetDateTime,
) -> Vec<Finding> {
    let mut c = Checks {
        policy,
        now,
        out: Vec::new(),
    };
    c.root_ca(inv);
    for n in &inv.nodes {
        c.node(inv, n);
    }
    c.tls(inv);
    for t in &inv.join_tokens {
        c.token(t);
    }
    c.keys(inv);
    c.audit(inv);
    let mut out = c.out;
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

/// The worst severity among `findings`, if any.
pub(crate) fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

/// Whether `moat audit report` exits [`EXIT_FINDINGS`]: some finding is
/// at or above `policy.fail_on`.
pub(crate) fn fails(findings: &[Finding], policy: &Policy) -> bool {
    worst(findings).is_some_and(|s| policy.fails_on(s))
}

/// How many findings there are of each severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Critical findings.
    pub(crate) critical: usize,
    /// High findings.
    pub(crate) high: usize,
    /// Medium findings.
    pub(crate) medium: usize,
    /// Low findings.
    pub(crate) low: usize,
    /// Informational findings.
    pub(crate) info: usize,
}

impl Summary {
    /// Counts `findings`.
    pub(crate) fn of(findings: &[Finding]) -> Self {
        let mut s = Summary::default();
        for f in findings {
            *s.count_mut(f.severity) += 1;
        }
        s
    }

    /// The count for `severity`.
    pub(crate) fn count(&self, severity: Severity) -> usize {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Info => self.info,
        }
    }

    fn count_mut(&mut self, severity: Severity) -> &mut usize {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Info => &mut self.info,
        }
    }
}

/// How `moat audit report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    /// Plain text for a terminal.
    Table,
    /// `{"inventory", "policy", "findings", "summary"}`, pretty-printed.
    Json,
    /// One self-contained HTML file (inline style, no scripts, no URLs).
    Html,
}

/// The report in `format`.
pub(crate) fn render(
    inv: &CryptoInventory,
    findings: &[Finding],
    policy: &Policy,
    format: ReportFormat,
    now: OffsetDateTime,
) -> String {
    let report = Report {
        inv,
        findings,
        policy,
        now,
    };
    match format {
        ReportFormat::Table => report.table(),
        ReportFormat::Json => report.json(),
        ReportFormat::Html => report.html(),
    }
}

// ---------------------------------------------------------------------------
// Checks

/// Runbooks the fixes point to.
const CERT_RUNBOOK: &str = "docs/runbooks/certificates.md";
const TOKEN_RUNBOOK: &str = "docs/runbooks/rotate-join-tokens.md";
const UNLOCK_KEY_RUNBOOK: &str = "docs/runbooks/rotate-the-unlock-key.md";
const AUTOLOCK_RUNBOOK: &str = "docs/runbooks/unlock-a-manager.md";

struct Checks<'a> {
    policy: &'a Policy,
    now: OffsetDateTime,
    out: Vec<Finding>,
}

impl Checks<'_> {
    fn push(
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
    fn time(
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

    /// An optional creation time checked against a maximum age.
    fn age(&mut self, subject: &str, what: &str, at: Option<&str>, max: PolicyDuration, fix: &str) {
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

    fn algorithm(&mut self, subject: &str, algorithm: &str, severity: Severity, fix: &str) {
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
        let root = &inv.root_ca;
        let subject = "root CA";
        let rotate = format!(
            "rotate the root CA with `moat ca --rotate` (CA rotation, coming); until it lands, \
             plan the rotation: every node certificate chains to this root ({CERT_RUNBOOK})"
        );
        self.algorithm(subject, &root.algorithm, Severity::High, &rotate);
        let inspect = "on a manager, `moat cert inspect /var/lib/moat/certs/ca.crt`";
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
        let id = short(&n.id, 12);
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
        if !same_fingerprint(&n.issuer_fingerprint, &inv.root_ca.fingerprint) {
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
        let life = cert_life(inv, n, not_after, self.now);
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
        } else if let Some(fraction) = life.fraction
            && fraction < self.policy.cert_renew_fraction.get()
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
        let min = self.policy.min_tls_version;
        for v in &inv.tls.versions {
            match v.parse::<TlsVersion>() {
                Ok(version) if version < min => self.push(
                    Severity::High,
                    subject,
                    format!("accepts {v}, below the policy's minimum {}", min.as_str()),
                    upgrade,
                ),
                Ok(_) => {}
                Err(_) => self.push(
                    Severity::Low,
                    subject,
                    format!("accepts `{v}`, a protocol version this report does not know"),
                    upgrade,
                ),
            }
        }
        if !inv.tls.mutual {
            self.push(
                Severity::High,
                subject,
                "TLS is not mutual: nodes do not all present certificates",
                upgrade,
            );
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

/// A node certificate's time left, and the part of its lifetime that is.
struct CertLife {
    left: Duration,
    /// `None` when the lifetime is unknown (no usable start and no
    /// cluster lifetime).
    fraction: Option<f64>,
}

fn cert_life(
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

fn parse_time(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

fn same_fingerprint(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn node_subject(n: &NodeCrypto) -> String {
    format!("node {} ({})", n.hostname, short(&n.id, 12))
}

/// The first `n` characters of `s`.
fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn percent(fraction: f64) -> String {
    format!("{:.0} %", (fraction * 100.0).clamp(0.0, 100.0))
}

// ---------------------------------------------------------------------------
// Rendering: one model of sections, shown by the table and HTML renderers.

struct Report<'a> {
    inv: &'a CryptoInventory,
    findings: &'a [Finding],
    policy: &'a Policy,
    now: OffsetDateTime,
}

/// A part of the report.
struct Section {
    title: &'static str,
    body: Body,
    /// A line under the body.
    note: Option<String>,
}

enum Body {
    /// `Key: value` lines.
    Fields(Vec<(&'static str, Cell)>),
    /// A table, or `empty` when it has no rows.
    Table {
        headers: &'static [&'static str],
        rows: Vec<Vec<Cell>>,
        empty: &'static str,
    },
}

/// A value, and how HTML shows it (the terminal shows only the text).
struct Cell {
    text: String,
    tone: Tone,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tone {
    Plain,
    /// Identifiers, fingerprints: monospace.
    Mono,
    Good,
    Warn,
    Bad,
    Severity(Severity),
}

impl Cell {
    fn new(text: impl Into<String>, tone: Tone) -> Self {
        Self {
            text: text.into(),
            tone,
        }
    }

    fn plain(text: impl Into<String>) -> Self {
        Self::new(text, Tone::Plain)
    }

    fn mono(text: impl Into<String>) -> Self {
        Self::new(text, Tone::Mono)
    }

    fn flag(ok: bool, yes: &str, no: &str) -> Self {
        if ok {
            Self::new(yes, Tone::Good)
        } else {
            Self::new(no, Tone::Bad)
        }
    }
}

impl Report<'_> {
    fn generated(&self) -> String {
        self.now
            .format(&Rfc3339)
            .unwrap_or_else(|_| self.now.to_string())
    }

    fn verdict(&self) -> String {
        let at_or_above = self
            .findings
            .iter()
            .filter(|f| self.policy.fails_on(f.severity))
            .count();
        if at_or_above == 0 {
            format!("PASS: no finding at or above {}", self.policy.fail_on)
        } else {
            format!(
                "FAIL: {at_or_above} finding{} at or above {}",
                if at_or_above == 1 { "" } else { "s" },
                self.policy.fail_on
            )
        }
    }

    /// A time with how far it is from now: `… (in 3 months)`, `… (2 days
    /// ago)`; `expiry` says `expired … ago` for a past one.
    fn when(&self, t: &str, expiry: bool) -> Cell {
        match parse_time(t) {
            None => Cell::new(format!("{t} (not a time)"), Tone::Bad),
            Some(at) if expiry => Cell::new(
                format!("{t} ({})", relative(at, self.now)),
                if at < self.now {
                    Tone::Bad
                } else {
                    Tone::Plain
                },
            ),
            Some(at) => {
                let d = self.now - at;
                let span = human_duration(d.unsigned_abs());
                Cell::plain(if d.is_negative() {
                    format!("{t} (in {span})")
                } else {
                    format!("{t} ({span} ago)")
                })
            }
        }
    }

    fn when_opt(&self, t: Option<&str>, unknown: &str) -> Cell {
        t.map_or_else(|| Cell::plain(unknown), |t| self.when(t, false))
    }

    fn sections(&self) -> Vec<Section> {
        vec![
            self.cluster(),
            self.root_ca(),
            self.nodes(),
            self.tls(),
            self.tokens(),
            self.keys(),
            self.audit(),
            self.policy_section(),
        ]
    }

    fn cluster(&self) -> Section {
        let inv = self.inv;
        let managers = inv
            .nodes
            .iter()
            .filter(|n| n.role == moat_api::Role::Manager)
            .count();
        Section {
            title: "Cluster",
            body: Body::Fields(vec![
                ("Cluster ID", Cell::mono(&inv.cluster_id)),
                ("Answered by", Cell::mono(&inv.answered_by)),
                ("Inventory taken", self.when(&inv.generated_at, false)),
                ("Report generated", Cell::plain(self.generated())),
                (
                    "Nodes",
                    Cell::plain(format!(
                        "{} ({managers} manager{})",
                        inv.nodes.len(),
                        if managers == 1 { "" } else { "s" }
                    )),
                ),
                (
                    "Certificate lifetime",
                    Cell::plain(exact_duration(inv.cert_expiry_seconds)),
                ),
            ]),
            note: None,
        }
    }

    fn root_ca(&self) -> Section {
        let r = &self.inv.root_ca;
        Section {
            title: "Root CA",
            body: Body::Fields(vec![
                ("Subject", Cell::plain(&r.subject)),
                ("Algorithm", self.algorithm(&r.algorithm)),
                ("Signature", Cell::plain(&r.signature_algorithm)),
                ("Fingerprint", Cell::mono(&r.fingerprint)),
                ("Serial", Cell::mono(&r.serial)),
                ("Not before", self.when(&r.not_before, false)),
                ("Not after", self.when(&r.not_after, true)),
            ]),
            note: None,
        }
    }

    fn algorithm(&self, a: &str) -> Cell {
        if a.trim().is_empty() {
            Cell::new("not recorded", Tone::Warn)
        } else if self.policy.allows(a) {
            Cell::plain(a)
        } else {
            Cell::new(a, Tone::Bad)
        }
    }

    fn nodes(&self) -> Section {
        let inv = self.inv;
        let tls = inv.tls.versions.join(", ");
        let rows = inv
            .nodes
            .iter()
            .map(|n| {
                vec![
                    Cell::mono(short(&n.id, 12)),
                    Cell::plain(&n.hostname),
                    Cell::plain(n.role.as_str()),
                    Cell::flag(n.ready, "ready", "down"),
                    self.algorithm(&n.algorithm),
                    Cell::mono(&n.serial),
                    Cell::plain(&n.not_after),
                    self.time_left(n),
                    Cell::flag(
                        same_fingerprint(&n.issuer_fingerprint, &inv.root_ca.fingerprint),
                        "yes",
                        "NO",
                    ),
                    Cell::plain(&tls),
                ]
            })
            .collect();
        Section {
            title: "Nodes",
            body: Body::Table {
                headers: &[
                    "ID",
                    "HOSTNAME",
                    "ROLE",
                    "STATUS",
                    "ALGORITHM",
                    "SERIAL",
                    "NOT AFTER",
                    "TIME LEFT",
                    "ISSUER OK",
                    "TLS",
                ],
                rows,
                empty: "no nodes",
            },
            note: None,
        }
    }

    fn time_left(&self, n: &NodeCrypto) -> Cell {
        let Some(not_after) = parse_time(&n.not_after) else {
            return Cell::new("unknown", Tone::Bad);
        };
        let life = cert_life(self.inv, n, not_after, self.now);
        if life.left.is_negative() {
            return Cell::new(
                format!("expired {} ago", human_duration(life.left.unsigned_abs())),
                Tone::Bad,
            );
        }
        let span = human_duration(life.left.unsigned_abs());
        match life.fraction {
            Some(f) => Cell::new(
                format!("{span} ({})", percent(f)),
                if f < self.policy.cert_renew_fraction.get() {
                    Tone::Warn
                } else {
                    Tone::Good
                },
            ),
            None => Cell::plain(span),
        }
    }

    fn tls(&self) -> Section {
        let t = &self.inv.tls;
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        Section {
            title: "TLS",
            body: Body::Fields(vec![
                ("Versions", Cell::plain(list(&t.versions))),
                ("Cipher suites", Cell::plain(list(&t.cipher_suites))),
                ("Key exchange", Cell::plain(list(&t.key_exchange_groups))),
                ("Mutual", Cell::flag(t.mutual, "yes", "no")),
            ]),
            note: None,
        }
    }

    fn tokens(&self) -> Section {
        let rows = self
            .inv
            .join_tokens
            .iter()
            .map(|t| {
                vec![
                    Cell::mono(&t.id),
                    Cell::plain(&t.kind),
                    Cell::plain(t.role.as_str()),
                    self.when_opt(t.created_at.as_deref(), "unknown"),
                    t.expires_at
                        .as_deref()
                        .map_or_else(|| Cell::plain("never"), |e| self.when(e, true)),
                    Cell::plain(
                        t.uses_left
                            .map_or_else(|| "unlimited".into(), |u| u.to_string()),
                    ),
                ]
            })
            .collect();
        let ttl = self
            .inv
            .token_ttl_seconds
            .map_or_else(|| "none".into(), exact_duration);
        Section {
            title: "Join tokens",
            body: Body::Table {
                headers: &["ID", "KIND", "ROLE", "CREATED", "EXPIRES", "USES LEFT"],
                rows,
                empty: "no join tokens",
            },
            note: Some(format!("Standing token lifetime: {ttl}")),
        }
    }

    fn keys(&self) -> Section {
        let inv = self.inv;
        let autolock = match (inv.autolock, self.policy.require_autolock) {
            (true, _) => Cell::new("on", Tone::Good),
            (false, true) => Cell::new("off", Tone::Bad),
            (false, false) => Cell::new("off", Tone::Warn),
        };
        let mut fields = vec![("Autolock", autolock)];
        if let Some(k) = &inv.unlock_key {
            fields.push((
                "Unlock key",
                Cell::plain(format!("generation {}", k.version)),
            ));
            fields.push((
                "Unlock key set",
                self.when_opt(k.set_at.as_deref(), "unknown"),
            ));
        }
        let d = &inv.data_key;
        fields.push((
            "Data key",
            Cell::plain(format!(
                "{} version {}{}, wrapped by {}",
                d.algorithm,
                d.version,
                d.rotating_to
                    .map_or_else(String::new, |v| format!(" (rotating to {v})")),
                d.wrapped_by
            )),
        ));
        fields.push((
            "Data key created",
            self.when_opt(d.created_at.as_deref(), "unknown"),
        ));
        Section {
            title: "Keys",
            body: Body::Fields(fields),
            note: None,
        }
    }

    fn audit(&self) -> Section {
        let a = &self.inv.audit;
        let signed = a.last_head_size.unwrap_or(0);
        let unsigned = a.records.saturating_sub(signed);
        let mut fields = vec![
            ("Records", Cell::plain(a.records.to_string())),
            ("Signed tree heads", Cell::plain(a.heads.to_string())),
            (
                "Newest head",
                match (&a.last_head_size, &a.last_head_at) {
                    (Some(size), Some(at)) => {
                        let mut c = self.when(at, false);
                        c.text = format!("size {size}, {}", c.text);
                        c
                    }
                    (Some(size), None) => Cell::plain(format!("size {size}")),
                    (None, _) => Cell::new("none", Tone::Warn),
                },
            ),
        ];
        fields.push((
            "Unsigned records",
            Cell::new(
                unsigned.to_string(),
                if unsigned == 0 {
                    Tone::Good
                } else {
                    Tone::Warn
                },
            ),
        ));
        Section {
            title: "Audit log",
            body: Body::Fields(fields),
            note: None,
        }
    }

    fn policy_section(&self) -> Section {
        let p = self.policy;
        let d = |d: PolicyDuration| Cell::mono(d.to_string());
        Section {
            title: "Policy",
            body: Body::Fields(vec![
                (
                    "cert_renew_fraction",
                    Cell::mono(p.cert_renew_fraction.get().to_string()),
                ),
                ("root_ca_min_remaining", d(p.root_ca_min_remaining)),
                ("token_max_age", d(p.token_max_age)),
                (
                    "require_autolock",
                    Cell::mono(p.require_autolock.to_string()),
                ),
                ("dek_max_age", d(p.dek_max_age)),
                ("unlock_key_max_age", d(p.unlock_key_max_age)),
                (
                    "allowed_algorithms",
                    Cell::mono(p.allowed_algorithms.join(", ")),
                ),
                ("min_tls_version", Cell::mono(p.min_tls_version.as_str())),
                ("fail_on", Cell::mono(p.fail_on.as_str())),
            ]),
            note: None,
        }
    }

    fn findings_section(&self) -> Section {
        let rows = self
            .findings
            .iter()
            .map(|f| {
                vec![
                    Cell::new(f.severity.as_str(), Tone::Severity(f.severity)),
                    Cell::plain(&f.subject),
                    Cell::plain(&f.problem),
                    Cell::plain(&f.fix),
                ]
            })
            .collect();
        Section {
            title: "Findings",
            body: Body::Table {
                headers: &["SEVERITY", "SUBJECT", "PROBLEM", "FIX"],
                rows,
                empty: "no findings",
            },
            note: None,
        }
    }

    fn summary_line(&self) -> String {
        let s = Summary::of(self.findings);
        Severity::WORST_FIRST
            .iter()
            .map(|&sev| format!("{} {sev}", s.count(sev)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------
// Table

impl Report<'_> {
    fn table(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = self.write_table(&mut out) {
            // Writing to memory does not fail; say so if it ever does.
            return format!("moat: cannot render the report: {e}\n");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn write_table(&self, out: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Write as _;
        writeln!(
            out,
            "moat compliance report for cluster {}",
            terminal(&self.inv.cluster_id)
        )?;
        writeln!(out, "Generated {}", self.generated())?;
        writeln!(out, "Findings: {}", self.summary_line())?;
        writeln!(out, "{}", self.verdict())?;
        let findings = self.findings_section();
        for section in self.sections().iter().chain([&findings]) {
            writeln!(out)?;
            writeln!(out, "{}", section.title)?;
            let mut body = Vec::new();
            match &section.body {
                Body::Fields(fields) => {
                    let fields: Vec<(&str, String)> = fields
                        .iter()
                        .map(|(k, c)| (*k, terminal(&c.text)))
                        .collect();
                    write_fields(&mut body, &fields)?;
                }
                Body::Table { rows, empty, .. } if rows.is_empty() => {
                    writeln!(body, "{empty}")?;
                }
                Body::Table { headers, rows, .. } => {
                    let rows: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            r.iter()
                                .map(|c| match c.tone {
                                    Tone::Severity(s) => s.as_str().to_uppercase(),
                                    _ => terminal(&c.text),
                                })
                                .collect()
                        })
                        .collect();
                    write_table(&mut body, headers, &rows)?;
                }
            }
            if let Some(note) = &section.note {
                writeln!(body, "{}", terminal(note))?;
            }
            for line in String::from_utf8_lossy(&body).lines() {
                writeln!(out, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// `s` with control characters (escape sequences, new lines) shown
/// escaped, so inventory text cannot drive the terminal or break a table.
fn terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// JSON

impl Report<'_> {
    fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            generated_at: String,
            inventory: &'a CryptoInventory,
            policy: &'a Policy,
            findings: &'a [Finding],
            summary: Summary,
            worst: Option<Severity>,
            fails: bool,
        }
        let value = Json {
            generated_at: self.generated(),
            inventory: self.inv,
            policy: self.policy,
            findings: self.findings,
            summary: Summary::of(self.findings),
            worst: worst(self.findings),
            fails: fails(self.findings, self.policy),
        };
        let mut out = Vec::new();
        match write_json(&mut out, &value) {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => format!("{{\"error\": \"cannot render the report: {e}\"}}\n"),
        }
    }
}

// ---------------------------------------------------------------------------
// HTML

/// Text escaped for HTML content and quoted attribute values.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Text escaped for HTML, with `quoted` spans (commands, in fixes) shown
/// as code when the backticks pair up.
struct Ticks<'a>(&'a str);

impl fmt::Display for Ticks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.matches('`').count().is_multiple_of(2) {
            return write!(f, "{}", Esc(self.0));
        }
        for (i, part) in self.0.split('`').enumerate() {
            if i.is_multiple_of(2) {
                write!(f, "{}", Esc(part))?;
            } else {
                write!(f, "<code>{}</code>", Esc(part))?;
            }
        }
        Ok(())
    }
}

/// The report's style: system fonts, no URLs.
const CSS: &str = r#"
:root{--fg:#1f2933;--muted:#5f6b7a;--line:#e3e7ec;--bg:#f3f5f8;--card:#fff;
--critical:#b42318;--high:#c4320a;--medium:#b54708;--low:#175cd3;--info:#475467;--ok:#067647;
--critical-bg:#fef3f2;--high-bg:#fff6ed;--medium-bg:#fffaeb;--low-bg:#eff8ff;--info-bg:#f8f9fb}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:32px 28px 48px}
header{background:#101828;color:#fff;border-radius:10px;padding:24px 28px}
header h1{margin:0;font-size:24px;font-weight:650;letter-spacing:-.01em}
header .meta{margin:6px 0 0;color:#cfd6e0;font-size:13px}
header code{color:#fff;background:rgba(255,255,255,.1)}
.verdict{display:inline-block;margin-top:16px;padding:4px 12px;border-radius:6px;font-weight:650;font-size:13px;letter-spacing:.02em}
.verdict.pass{background:var(--ok)}
.verdict.fail{background:var(--critical)}
.badges{display:flex;flex-wrap:wrap;gap:12px;list-style:none;padding:0;margin:18px 0 0}
.badge{min-width:120px;padding:10px 16px;border-radius:8px;background:rgba(255,255,255,.08);border-top:4px solid}
.badge .n{display:block;font-size:28px;font-weight:700;line-height:1.1}
.badge .l{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:#cfd6e0}
.badge.zero .n{color:#8a94a6}
.badge.critical{border-color:var(--critical)}.badge.high{border-color:var(--high)}
.badge.medium{border-color:var(--medium)}.badge.low{border-color:var(--low)}.badge.info{border-color:var(--info)}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin-top:20px}
h2{margin:0 0 14px;font-size:13px;font-weight:700;text-transform:uppercase;letter-spacing:.08em;color:var(--muted)}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);
border-bottom:2px solid var(--line);padding:6px 10px;white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:7px 10px;vertical-align:top}
.scroll{overflow-x:auto}
table.grid td{white-space:nowrap;padding:7px 8px}
table.grid th{padding:6px 8px}
table.findings{table-layout:fixed}
table.findings td{overflow-wrap:anywhere}
col.c-sev{width:112px}col.c-subject{width:22%}col.c-problem{width:33%}
tbody tr:last-child td{border-bottom:none}
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 28px;margin:0}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:12px;
background:#f2f4f7;border-radius:4px;padding:1px 5px}
.good{color:var(--ok);font-weight:600}
.warn{color:var(--medium);font-weight:600}
.bad{color:var(--critical);font-weight:700}
.pill{display:inline-block;white-space:nowrap;min-width:76px;text-align:center;padding:2px 8px;border-radius:999px;color:#fff;
font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.06em}
.pill.critical{background:var(--critical)}.pill.high{background:var(--high)}.pill.medium{background:var(--medium)}
.pill.low{background:var(--low)}.pill.info{background:var(--info)}
tr.sev td:first-child{border-left:4px solid}
tr.critical td{background:var(--critical-bg)}tr.critical td:first-child{border-left-color:var(--critical)}
tr.high td{background:var(--high-bg)}tr.high td:first-child{border-left-color:var(--high)}
tr.medium td{background:var(--medium-bg)}tr.medium td:first-child{border-left-color:var(--medium)}
tr.low td{background:var(--low-bg)}tr.low td:first-child{border-left-color:var(--low)}
tr.info td{background:var(--info-bg)}tr.info td:first-child{border-left-color:var(--info)}
table.findings td:nth-child(2){font-weight:600}
table.findings td:nth-child(4){color:#344054}
td code{white-space:nowrap}
table.findings td code{white-space:normal}
.empty{color:var(--muted);font-style:italic;margin:0}
.note{color:var(--muted);font-size:12px;margin:10px 0 0}
footer{margin-top:24px;color:var(--muted);font-size:12px;text-align:center}
@media print{body{background:#fff}main{padding:0}section{break-inside:avoid;border-color:#ccc}
header{background:#fff;color:var(--fg);border:1px solid #ccc}header .meta,.badge .l{color:var(--muted)}}
"#;

impl Report<'_> {
    fn html(&self) -> String {
        let mut out = String::new();
        if let Err(e) = self.write_html(&mut out) {
            return format!("<!DOCTYPE html><p>cannot render the report: {e}</p>\n");
        }
        out
    }

    fn write_html(&self, out: &mut String) -> fmt::Result {
        let inv = self.inv;
        let summary = Summary::of(self.findings);
        let failing = fails(self.findings, self.policy);
        writeln!(out, "<!DOCTYPE html>")?;
        writeln!(out, "<html lang=\"en\"><head><meta charset=\"utf-8\">")?;
        writeln!(
            out,
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        )?;
        writeln!(
            out,
            "<title>moat compliance report: cluster {}</title>",
            Esc(&short(&inv.cluster_id, 12))
        )?;
        writeln!(out, "<style>{CSS}</style></head><body><main>")?;
        writeln!(out, "<header><h1>moat compliance report</h1>")?;
        writeln!(
            out,
            "<p class=\"meta\">Cluster <code>{}</code> · answered by <code>{}</code> · inventory \
             taken {} · report generated {}</p>",
            Esc(&inv.cluster_id),
            Esc(&inv.answered_by),
            Esc(&inv.generated_at),
            Esc(&self.generated())
        )?;
        writeln!(
            out,
            "<div class=\"verdict {}\">{}</div>",
            if failing { "fail" } else { "pass" },
            Esc(&self.verdict())
        )?;
        writeln!(out, "<ul class=\"badges\">")?;
        for sev in Severity::WORST_FIRST {
            let n = summary.count(sev);
            writeln!(
                out,
                "<li class=\"badge {sev}{}\"><span class=\"n\">{n}</span><span class=\"l\">{sev}</span></li>",
                if n == 0 { " zero" } else { "" }
            )?;
        }
        writeln!(out, "</ul></header>")?;
        // Findings first: they are what a reader of the file came for.
        let findings = self.findings_section();
        for section in [&findings].into_iter().chain(self.sections().iter()) {
            write_html_section(out, section)?;
        }
        writeln!(
            out,
            "<footer>moat audit report · exits {EXIT_FINDINGS} when a finding is at or above \
             <code>fail_on</code> ({}) · see docs/audit-report.md</footer>",
            self.policy.fail_on
        )?;
        writeln!(out, "</main></body></html>")
    }
}

fn write_html_section(out: &mut String, section: &Section) -> fmt::Result {
    let findings = section.title == "Findings";
    writeln!(out, "<section><h2>{}</h2>", Esc(section.title))?;
    match &section.body {
        Body::Fields(fields) => {
            writeln!(out, "<dl>")?;
            for (k, c) in fields {
                write!(out, "<dt>{}</dt><dd>", Esc(k))?;
                write_html_cell(out, c)?;
                writeln!(out, "</dd>")?;
            }
            writeln!(out, "</dl>")?;
        }
        Body::Table { rows, empty, .. } if rows.is_empty() => {
            writeln!(out, "<p class=\"empty\">{}</p>", Esc(empty))?;
        }
        Body::Table { headers, rows, .. } => {
            if findings {
                // Fixed columns, so long fixes wrap instead of squeezing
                // the rest.
                write!(
                    out,
                    "<table class=\"findings\"><colgroup><col class=\"c-sev\"><col \
                     class=\"c-subject\"><col class=\"c-problem\"><col \
                     class=\"c-fix\"></colgroup><thead><tr>"
                )?;
            } else {
                write!(
                    out,
                    "<div class=\"scroll\"><table class=\"grid\"><thead><tr>"
                )?;
            }
            for h in *headers {
                write!(out, "<th>{}</th>", Esc(h))?;
            }
            writeln!(out, "</tr></thead><tbody>")?;
            for row in rows {
                match row.first().map(|c| c.tone) {
                    Some(Tone::Severity(s)) => write!(out, "<tr class=\"sev {s}\">")?,
                    _ => write!(out, "<tr>")?,
                }
                for c in row {
                    write!(out, "<td>")?;
                    write_html_cell(out, c)?;
                    write!(out, "</td>")?;
                }
                writeln!(out, "</tr>")?;
            }
            writeln!(
                out,
                "</tbody></table>{}",
                if findings { "" } else { "</div>" }
            )?;
        }
    }
    if let Some(note) = &section.note {
        writeln!(out, "<p class=\"note\">{}</p>", Esc(note))?;
    }
    writeln!(out, "</section>")
}

fn write_html_cell(out: &mut String, c: &Cell) -> fmt::Result {
    let text = Esc(&c.text);
    match c.tone {
        Tone::Plain => write!(out, "{}", Ticks(&c.text)),
        Tone::Mono => write!(out, "<code>{text}</code>"),
        Tone::Good => write!(out, "<span class=\"good\">{text}</span>"),
        Tone::Warn => write!(out, "<span class=\"warn\">{text}</span>"),
        Tone::Bad => write!(out, "<span class=\"bad\">{text}</span>"),
        Tone::Severity(s) => write!(out, "<span class=\"pill {s}\">{text}</span>"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use std::io::Write as _;

    use moat_api::{
        AuditSummary, DataKeyInfo, KeyAge, NodeCrypto, Role, RootCaInfo, TlsInfo, TokenCrypto,
    };
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-27 18:00:00 UTC);
    const ROOT_FP: &str = "sha256:5f1c0e8a3d2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f506";

    /// `NOW` moved by `d`, as the inventory writes times.
    fn at(d: Duration) -> String {
        (NOW + d).format(&Rfc3339).unwrap()
    }

    fn node(id: &str, hostname: &str, role: Role) -> NodeCrypto {
        NodeCrypto {
            id: id.into(),
            hostname: hostname.into(),
            role,
            ready: true,
            algorithm: "ECDSA P-256".into(),
            serial: "4f2a9c01d3".into(),
            issuer_fingerprint: ROOT_FP.into(),
            // 24 h certificates at half their life.
            not_before: Some(at(Duration::hours(-12))),
            not_after: at(Duration::hours(12)),
        }
    }

    /// A cluster the default policy has nothing to say about at `NOW`.
    fn inventory() -> CryptoInventory {
        CryptoInventory {
            generated_at: at(Duration::seconds(-2)),
            cluster_id: "9f1c3b7d2e4a6c8b0d1f3e5a7c9b1d3f".into(),
            answered_by: "k3q0h7m2p9r4t6v8".into(),
            cert_expiry_seconds: 86_400,
            root_ca: RootCaInfo {
                subject: "CN=moat root CA,O=9f1c3b7d2e4a6c8b0d1f3e5a7c9b1d3f".into(),
                algorithm: "ECDSA P-256".into(),
                signature_algorithm: "ecdsa-with-SHA256".into(),
                fingerprint: ROOT_FP.into(),
                serial: "01".into(),
                not_before: at(Duration::days(-365)),
                not_after: at(Duration::days(365 * 9)),
            },
            nodes: vec![
                node("k3q0h7m2p9r4t6v8", "manager-1", Role::Manager),
                node("a8c2e4g6j8l0n2q4", "web-1", Role::Worker),
            ],
            tls: TlsInfo {
                versions: vec!["TLSv1.3".into()],
                cipher_suites: vec![
                    "TLS13_AES_256_GCM_SHA384".into(),
                    "TLS13_CHACHA20_POLY1305_SHA256".into(),
                ],
                key_exchange_groups: vec!["X25519MLKEM768".into(), "X25519".into()],
                mutual: true,
            },
            join_tokens: vec![
                TokenCrypto {
                    id: "3f9k2d0a7u1c5e9b".into(),
                    kind: "standing".into(),
                    role: Role::Worker,
                    created_at: Some(at(Duration::days(-1))),
                    expires_at: None,
                    uses_left: None,
                },
                TokenCrypto {
                    id: "7u1c5e9b3f9k2d0a".into(),
                    kind: "scoped".into(),
                    role: Role::Manager,
                    created_at: Some(at(Duration::days(-1))),
                    expires_at: Some(at(Duration::hours(1))),
                    uses_left: Some(1),
                },
            ],
            token_ttl_seconds: Some(7 * 86_400),
            autolock: true,
            unlock_key: Some(KeyAge {
                version: 2,
                set_at: Some(at(Duration::days(-10))),
            }),
            data_key: DataKeyInfo {
                algorithm: "AES-256-GCM".into(),
                version: 3,
                created_at: Some(at(Duration::days(-10))),
                rotating_to: None,
                wrapped_by: "unlock key".into(),
            },
            audit: AuditSummary {
                records: 120,
                heads: 12,
                last_head_size: Some(120),
                last_head_at: Some(at(Duration::minutes(-5))),
                snapshot_bytes: Some(2 << 20),
                snapshot_limit_bytes: Some(256 << 20),
            },
        }
    }

    fn check(inv: &CryptoInventory) -> Vec<Finding> {
        findings(inv, &Policy::default(), NOW)
    }

    /// The findings about subjects containing `subject`.
    fn about<'a>(fs: &'a [Finding], subject: &str) -> Vec<&'a Finding> {
        fs.iter().filter(|f| f.subject.contains(subject)).collect()
    }

    /// The one finding about `subject`, of `severity`, whose problem says
    /// `problem`.
    fn assert_one(fs: &[Finding], subject: &str, severity: Severity, problem: &str) {
        let found = about(fs, subject);
        assert_eq!(found.len(), 1, "one finding about {subject}: {fs:#?}");
        assert_eq!(found[0].severity, severity, "{:#?}", found[0]);
        assert!(found[0].problem.contains(problem), "{:#?}", found[0]);
        assert!(
            found[0].fix.contains("moat ") || found[0].fix.contains("docs/"),
            "a fix names a command or runbook: {:#?}",
            found[0]
        );
    }

    #[test]
    fn a_healthy_cluster_has_no_findings() {
        assert_eq!(check(&inventory()), vec![]);
    }

    #[test]
    fn cert_with_20_percent_left_is_high_and_50_percent_is_not() {
        let mut inv = inventory();
        inv.nodes[1].not_before = Some(at(Duration::hours(-20)));
        inv.nodes[1].not_after = at(Duration::hours(5)); // 5 of 25 h: 20 %
        let fs = check(&inv);
        assert_one(
            &fs,
            "node web-1",
            Severity::High,
            "20 % of its lifetime left",
        );
        assert!(fs[0].fix.contains("moat node inspect a8c2e4g6j8l0"));
        assert!(fs[0].fix.contains("docs/runbooks/certificates.md"));
        // 50 % left (the healthy inventory) is no finding.
        assert_eq!(about(&check(&inventory()), "node"), Vec::<&Finding>::new());
    }

    #[test]
    fn a_down_node_is_told_to_come_back_up() {
        let mut inv = inventory();
        inv.nodes[1].ready = false;
        inv.nodes[1].not_before = Some(at(Duration::hours(-22)));
        inv.nodes[1].not_after = at(Duration::hours(2));
        let fs = check(&inv);
        assert_one(&fs, "node web-1", Severity::High, "lifetime left");
        assert!(fs[0].fix.contains("the node is down"), "{}", fs[0].fix);
    }

    #[test]
    fn without_a_start_the_lifetime_is_the_clusters() {
        let mut inv = inventory();
        inv.nodes[1].not_before = None;
        inv.nodes[1].not_after = at(Duration::hours(4)); // 4 of 24 h
        assert_one(&check(&inv), "web-1", Severity::High, "17 %");
        inv.nodes[1].not_after = at(Duration::hours(12));
        assert_eq!(check(&inv), vec![]);
        // No start and no cluster lifetime: only expiry can be checked.
        inv.cert_expiry_seconds = 0;
        inv.nodes[1].not_after = at(Duration::minutes(1));
        assert_eq!(check(&inv), vec![]);
    }

    #[test]
    fn an_expired_cert_is_critical() {
        let mut inv = inventory();
        inv.nodes[0].not_before = Some(at(Duration::hours(-30)));
        inv.nodes[0].not_after = at(Duration::hours(-6));
        let fs = check(&inv);
        assert_one(
            &fs,
            "node manager-1",
            Severity::Critical,
            "expired 6 hours ago",
        );
        assert!(fs[0].fix.contains("#a-node-whose-certificate-expired"));
    }

    #[test]
    fn root_expiring_in_100_days_is_a_finding_and_in_2_years_is_not() {
        let mut inv = inventory();
        inv.root_ca.not_after = at(Duration::days(100));
        let fs = check(&inv);
        assert_one(&fs, "root CA", Severity::Medium, "expires in 3 months");
        assert!(fs[0].fix.contains("moat ca --rotate"));
        inv.root_ca.not_after = at(Duration::days(30));
        assert_one(&check(&inv), "root CA", Severity::High, "expires in");
        inv.root_ca.not_after = at(Duration::days(-1));
        assert_one(&check(&inv), "root CA", Severity::Critical, "expired");
        inv.root_ca.not_after = at(Duration::days(730));
        assert_eq!(check(&inv), vec![]);
    }

    #[test]
    fn a_token_40_days_old_is_a_finding_and_1_day_is_not() {
        let mut inv = inventory();
        inv.join_tokens[0].created_at = Some(at(Duration::days(-40)));
        let fs = check(&inv);
        assert_one(
            &fs,
            "join token 3f9k2d0a7u1c5e9b",
            Severity::Medium,
            "5 weeks old",
        );
        assert!(
            fs[0].fix.contains("moat join-token --rotate worker"),
            "{}",
            fs[0].fix
        );
        assert!(fs[0].fix.contains("--token-ttl 30d"), "{}", fs[0].fix);

        let mut inv = inventory();
        inv.join_tokens[1].created_at = Some(at(Duration::days(-40)));
        let fs = check(&inv);
        assert_one(&fs, "join token 7u1c5e9b3f9k2d0a", Severity::Medium, "old");
        assert!(
            fs[0]
                .fix
                .contains("moat join-token revoke 7u1c5e9b3f9k2d0a")
        );

        // An old token that already stopped working is no risk.
        inv.join_tokens[1].expires_at = Some(at(Duration::days(-30)));
        assert_eq!(check(&inv), vec![]);
        // One day old (the healthy inventory) is no finding.
        assert_eq!(check(&inventory()), vec![]);
    }

    #[test]
    fn a_token_of_unknown_age_is_info() {
        let mut inv = inventory();
        inv.join_tokens[0].created_at = None;
        assert_one(&check(&inv), "join token", Severity::Info, "not recorded");
    }

    #[test]
    fn autolock_off_is_high_unless_the_policy_allows_it() {
        let mut inv = inventory();
        inv.autolock = false;
        inv.unlock_key = None;
        let fs = check(&inv);
        assert_one(&fs, "autolock", Severity::High, "autolock is off");
        assert!(fs[0].fix.contains("moat update --autolock=true"));
        assert!(fs[0].fix.contains("docs/runbooks/unlock-a-manager.md"));
        let lax = Policy {
            require_autolock: false,
            ..Policy::default()
        };
        assert_eq!(findings(&inv, &lax, NOW), vec![]);
        assert_eq!(
            about(&check(&inventory()), "autolock"),
            Vec::<&Finding>::new()
        );
    }

    #[test]
    fn a_dek_100_days_old_is_a_finding_and_10_days_is_not() {
        let mut inv = inventory();
        inv.data_key.created_at = Some(at(Duration::days(-100)));
        let fs = check(&inv);
        assert_one(&fs, "data key v3", Severity::Medium, "3 months old");
        assert!(fs[0].fix.contains("docs/runbooks/rotate-the-unlock-key.md"));
        assert_eq!(
            about(&check(&inventory()), "data key"),
            Vec::<&Finding>::new()
        );
    }

    #[test]
    fn an_unlock_key_200_days_old_is_a_finding_and_10_days_is_not() {
        let mut inv = inventory();
        inv.unlock_key = Some(KeyAge {
            version: 4,
            set_at: Some(at(Duration::days(-200))),
        });
        let fs = check(&inv);
        assert_one(&fs, "unlock key (generation 4)", Severity::Medium, "old");
        assert!(fs[0].fix.contains("moat unlock-key --rotate"));
        assert_eq!(
            about(&check(&inventory()), "unlock key"),
            Vec::<&Finding>::new()
        );
    }

    #[test]
    fn a_node_on_another_root_is_high() {
        let mut inv = inventory();
        inv.nodes[1].issuer_fingerprint = "sha256:0000".into();
        assert_one(&check(&inv), "node web-1", Severity::High, "another root");
        // Case does not matter.
        let mut inv = inventory();
        inv.nodes[1].issuer_fingerprint = ROOT_FP.to_uppercase();
        assert_eq!(check(&inv), vec![]);
    }

    #[test]
    fn an_algorithm_outside_the_policy_is_a_finding_and_an_unrecorded_one_low() {
        let mut inv = inventory();
        inv.nodes[1].algorithm = "RSA 2048".into();
        assert_one(
            &check(&inv),
            "web-1",
            Severity::Medium,
            "RSA 2048 is not allowed",
        );
        inv.nodes[1].algorithm = String::new();
        assert_one(&check(&inv), "web-1", Severity::Low, "not recorded");
        let mut inv = inventory();
        inv.root_ca.algorithm = "RSA 1024".into();
        assert_one(&check(&inv), "root CA", Severity::High, "not allowed");
        inv.root_ca.algorithm = "ed25519".into(); // case does not matter
        assert_eq!(check(&inv), vec![]);
    }

    #[test]
    fn tls_below_the_minimum_is_high() {
        let mut inv = inventory();
        inv.tls.versions = vec!["TLSv1.2".into(), "TLSv1.3".into()];
        assert_one(&check(&inv), "TLS", Severity::High, "accepts TLSv1.2");
        inv.tls.versions = vec!["TLSv1_3".into(), "QUICv9".into()];
        assert_one(&check(&inv), "TLS", Severity::Low, "does not know");
        let lax = Policy {
            min_tls_version: TlsVersion::Tls12,
            ..Policy::default()
        };
        let mut inv = inventory();
        inv.tls.versions = vec!["TLSv1.2".into(), "TLSv1.3".into()];
        assert_eq!(findings(&inv, &lax, NOW), vec![]);
    }

    #[test]
    fn unsigned_audit_records_are_low() {
        let mut inv = inventory();
        inv.audit.records = 127;
        assert_one(
            &check(&inv),
            "audit log",
            Severity::Low,
            "7 records are not yet covered by a signed tree head",
        );
        inv.audit.last_head_size = None;
        inv.audit.last_head_at = None;
        assert_one(&check(&inv), "audit log", Severity::Low, "127 records");
        inv.audit.records = 0;
        assert_eq!(check(&inv), vec![]);
    }

    #[test]
    fn a_snapshot_near_its_limit_is_a_finding() {
        let mut inv = inventory();
        inv.audit.snapshot_bytes = Some(127 << 20);
        assert_eq!(check(&inv), vec![]);
        inv.audit.snapshot_bytes = Some(128 << 20);
        assert_one(
            &check(&inv),
            "audit log",
            Severity::Medium,
            "the store's snapshot is 128 MiB, 50 % of its 256 MiB limit, and the audit log (120 records)",
        );
        inv.audit.snapshot_bytes = Some(210 << 20);
        assert_one(
            &check(&inv),
            "audit log",
            Severity::High,
            "82 % of its 256 MiB",
        );
        // An older manager says nothing about it; a zero limit is no limit.
        inv.audit.snapshot_limit_bytes = Some(0);
        assert_eq!(check(&inv), vec![]);
        inv.audit.snapshot_limit_bytes = None;
        assert_eq!(check(&inv), vec![]);
    }

    /// Guards: inventory text is data; nothing in it may panic a check or
    /// a renderer.
    #[test]
    fn malformed_inventory_values_are_findings_not_panics() {
        let mut inv = inventory();
        inv.root_ca.not_after = "next tuesday".into();
        inv.nodes[0].not_after = String::new();
        inv.nodes[1].not_before = Some("\u{1b}[31m".into());
        inv.nodes[1].id = "é".repeat(40);
        inv.join_tokens[0].created_at = Some("9999-99-99".into());
        inv.unlock_key = Some(KeyAge {
            version: u32::MAX,
            set_at: Some("-".into()),
        });
        inv.data_key.created_at = Some("+999999-01-01T00:00:00Z".into());
        inv.cert_expiry_seconds = u64::MAX;
        inv.audit.last_head_size = Some(u64::MAX);
        inv.audit.last_head_at = Some("yesterday".into());
        let fs = check(&inv);
        assert_one(&fs, "root CA", Severity::Medium, "not an RFC 3339 time");
        assert_one(&fs, "manager-1", Severity::Medium, "not an RFC 3339 time");
        assert_one(&fs, "web-1", Severity::Low, "certificate start");
        assert_one(&fs, "join token", Severity::Low, "not an RFC 3339 time");
        assert_one(&fs, "unlock key", Severity::Low, "not an RFC 3339 time");
        assert_one(&fs, "data key", Severity::Low, "not an RFC 3339 time");
        assert_one(&fs, "audit log", Severity::Low, "newest head time");
        for format in [ReportFormat::Table, ReportFormat::Json, ReportFormat::Html] {
            assert!(!render(&inv, &fs, &Policy::default(), format, NOW).is_empty());
        }
    }

    #[test]
    fn findings_come_worst_first() {
        let mut inv = inventory();
        inv.audit.records = 121; // low
        inv.autolock = false; // high
        inv.nodes[0].not_after = at(Duration::hours(-1)); // critical
        inv.join_tokens[0].created_at = Some(at(Duration::days(-60))); // medium
        let fs = check(&inv);
        let severities: Vec<Severity> = fs.iter().map(|f| f.severity).collect();
        assert_eq!(
            severities,
            [
                Severity::Critical,
                Severity::High,
                Severity::Medium,
                Severity::Low
            ]
        );
        assert_eq!(worst(&fs), Some(Severity::Critical));
        assert!(fails(&fs, &Policy::default()));
        assert_eq!(worst(&[]), None);
        assert!(!fails(&[], &Policy::default()));
        // Only medium and low left: passes at `fail_on = "high"`, not at
        // `"medium"`.
        let rest = &fs[2..];
        assert!(!fails(rest, &Policy::default()));
        let strict = Policy {
            fail_on: Severity::Medium,
            ..Policy::default()
        };
        assert!(fails(rest, &strict));
    }

    #[test]
    fn severities_are_ordered_and_serialize_lower_case() {
        assert!(Severity::Info < Severity::Low);
        assert!(Severity::High < Severity::Critical);
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
    }

    // -- the policy file --------------------------------------------------

    fn policy_file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text).unwrap();
        f
    }

    #[test]
    fn an_empty_policy_file_is_the_defaults() {
        let f = policy_file(b"# nothing\n");
        let p = Policy::load(f.path()).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.cert_renew_fraction.get(), 0.25);
        assert_eq!(p.root_ca_min_remaining.to_string(), "365d");
        assert_eq!(p.token_max_age.to_string(), "30d");
        assert!(p.require_autolock);
        assert_eq!(p.dek_max_age.to_string(), "90d");
        assert_eq!(p.unlock_key_max_age.to_string(), "180d");
        assert_eq!(
            p.allowed_algorithms,
            ["ECDSA P-256", "ECDSA P-384", "Ed25519"]
        );
        assert_eq!(p.min_tls_version, TlsVersion::Tls13);
        assert_eq!(p.fail_on, Severity::High);
    }

    #[test]
    fn a_policy_file_overrides_what_it_names() {
        let f = policy_file(
            br#"
cert_renew_fraction = 0.4
root_ca_min_remaining = "2y"
token_max_age = "7days"
require_autolock = false
dek_max_age = "30d"
unlock_key_max_age = "12h"
allowed_algorithms = ["ECDSA P-384"]
min_tls_version = "TLSv1.2"
fail_on = "medium"
"#,
        );
        let p = Policy::load(f.path()).unwrap();
        assert_eq!(p.cert_renew_fraction.get(), 0.4);
        assert_eq!(p.token_max_age.to_string(), "7d");
        assert!(!p.require_autolock);
        assert_eq!(p.unlock_key_max_age.to_string(), "12h");
        assert_eq!(p.allowed_algorithms, ["ECDSA P-384"]);
        assert_eq!(p.min_tls_version, TlsVersion::Tls12);
        assert_eq!(p.fail_on, Severity::Medium);
        // A policy's JSON reads back as the same policy.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
        // And a key left out keeps its default.
        let p = Policy::from_toml("token_max_age = \"1d\"").unwrap();
        assert_eq!(p.dek_max_age, Policy::default().dek_max_age);
    }

    fn invalid(text: &str) -> String {
        let f = policy_file(text.as_bytes());
        let e = Policy::load(f.path()).unwrap_err();
        assert!(matches!(e, PolicyError::Invalid { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn an_unknown_policy_key_is_rejected_by_name() {
        let e = invalid("token_max_age = \"30d\"\ntoken_maxage = \"30d\"\n");
        assert!(e.contains("unknown field `token_maxage`"), "{e}");
        assert!(e.contains("is not valid"), "{e}");
    }

    #[test]
    fn bad_policy_values_are_rejected() {
        let e = invalid("dek_max_age = \"90 fortnights\"");
        assert!(e.contains("`90 fortnights` is not a duration"), "{e}");
        let e = invalid("dek_max_age = 90");
        assert!(e.contains("dek_max_age") || e.contains("string"), "{e}");
        let e = invalid("cert_renew_fraction = 1.5");
        assert!(e.contains("not a fraction between 0 and 1"), "{e}");
        let e = invalid("min_tls_version = \"TLSv1.4\"");
        assert!(e.contains("is not a TLS version"), "{e}");
        let e = invalid("fail_on = \"severe\"");
        assert!(e.contains("severe"), "{e}");
        let e = invalid("this is not toml");
        assert!(e.contains("line 1"), "{e}");
        let f = policy_file(b"fail_on = \"\xff\"");
        assert!(matches!(
            Policy::load(f.path()),
            Err(PolicyError::Invalid { .. })
        ));
    }

    #[test]
    fn an_oversize_policy_file_is_refused_before_reading() {
        let mut text = b"# padding\n".repeat(7000);
        text.extend_from_slice(b"fail_on = \"low\"\n");
        assert!(text.len() as u64 > MAX_POLICY_BYTES);
        let f = policy_file(&text);
        let e = Policy::load(f.path()).unwrap_err();
        assert!(matches!(e, PolicyError::Read { .. }), "{e:?}");
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.contains("larger than 65536 bytes"), "{cause}");
        let missing = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(missing.to_string().contains("cannot read the policy file"));
    }

    // -- rendering ----------------------------------------------------------

    /// An inventory with something wrong in every section, and a host name
    /// that tries to run a script.
    fn troubled() -> CryptoInventory {
        let mut inv = inventory();
        inv.nodes[1].hostname = "<script>alert(1)</script>".into();
        inv.nodes[1].not_after = at(Duration::hours(-3));
        inv.nodes.push(NodeCrypto {
            ready: false,
            not_before: Some(at(Duration::hours(-21))),
            not_after: at(Duration::hours(3)),
            ..node("m5p7r9t1v3x5z7b9", "db-2", Role::Worker)
        });
        inv.nodes.push(NodeCrypto {
            algorithm: String::new(),
            issuer_fingerprint: "sha256:1d0e99c2a4b6".into(),
            ..node("q2s4u6w8y0a2c4e6", "legacy-7", Role::Worker)
        });
        inv.root_ca.not_after = at(Duration::days(200));
        inv.join_tokens[0].created_at = Some(at(Duration::days(-45)));
        inv.data_key.created_at = Some(at(Duration::days(-120)));
        inv.audit.records = 131;
        inv
    }

    fn rendered(inv: &CryptoInventory, format: ReportFormat) -> String {
        let policy = Policy::default();
        render(inv, &findings(inv, &policy, NOW), &policy, format, NOW)
    }

    #[test]
    fn html_escapes_every_inventory_string() {
        assert_eq!(
            Esc(r#"<a href="x">Tom & 'Jerry'</a>"#).to_string(),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        // Commands in fixes show as code, still escaped; an unpaired
        // backtick stays text.
        assert_eq!(
            Ticks("run `a<b` now").to_string(),
            "run <code>a&lt;b</code> now"
        );
        assert_eq!(Ticks("a`<b").to_string(), "a`&lt;b");
        let html = rendered(&troubled(), ReportFormat::Html);
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn html_is_one_file_that_fetches_nothing() {
        let html = rendered(&troubled(), ReportFormat::Html);
        for banned in [
            "http://", "https://", "<link", "<script", "@import", "url(", "<img",
        ] {
            assert!(!html.contains(banned), "the HTML contains {banned}");
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<style>"));
        for section in [
            "Findings",
            "Cluster",
            "Root CA",
            "Nodes",
            "TLS",
            "Join tokens",
            "Keys",
            "Audit log",
            "Policy",
        ] {
            assert!(html.contains(&format!("<h2>{section}</h2>")), "{section}");
        }
        assert!(html.contains("<tr class=\"sev critical\">"));
        assert!(html.contains("FAIL: "));
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn json_reads_back_with_the_findings() {
        let inv = troubled();
        let json = rendered(&inv, ReportFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let back: CryptoInventory = serde_json::from_value(v["inventory"].clone()).unwrap();
        assert_eq!(back, inv);
        let fs: Vec<Finding> = serde_json::from_value(v["findings"].clone()).unwrap();
        assert_eq!(fs, check(&inv));
        let summary: Summary = serde_json::from_value(v["summary"].clone()).unwrap();
        assert_eq!(summary, Summary::of(&fs));
        assert_eq!(summary.critical, 1);
        assert_eq!(v["worst"], "critical");
        assert_eq!(v["fails"], true);
        let policy: Policy = serde_json::from_value(v["policy"].clone()).unwrap();
        assert_eq!(policy, Policy::default());
        assert_eq!(v["policy"]["dek_max_age"], "90d");
    }

    #[test]
    fn the_table_has_every_section_and_no_raw_control_characters() {
        let mut inv = troubled();
        inv.nodes[0].hostname = "evil\u{1b}[2J\nhost".into();
        let text = rendered(&inv, ReportFormat::Table);
        for section in [
            "\nCluster\n",
            "\nRoot CA\n",
            "\nNodes\n",
            "\nTLS\n",
            "\nJoin tokens\n",
            "\nKeys\n",
            "\nAudit log\n",
            "\nPolicy\n",
            "\nFindings\n",
        ] {
            assert!(text.contains(section), "{section:?} in\n{text}");
        }
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains("evil\\u{1b}[2J\\nhost"));
        assert!(
            text.contains(
                "  ID             HOSTNAME                    ROLE      STATUS   ALGORITHM"
            ),
            "{text}"
        );
        assert!(text.contains("  SEVERITY   SUBJECT"));
        assert!(text.contains("  CRITICAL   node <script>"));
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn a_clean_report_passes() {
        let text = rendered(&inventory(), ReportFormat::Table);
        assert!(text.contains("PASS: no finding at or above high"), "{text}");
        assert!(text.contains("  no findings"));
        let html = rendered(&inventory(), ReportFormat::Html);
        assert!(html.contains("class=\"verdict pass\""));
    }

    /// Writes a sample HTML report to `$MOAT_REPORT_SAMPLE` (when set), for
    /// `scripts/render-report-screenshot`; the table goes beside it as
    /// `.txt`.
    #[test]
    fn sample_report() {
        let Ok(path) = std::env::var("MOAT_REPORT_SAMPLE") else {
            return;
        };
        std::fs::write(&path, rendered(&troubled(), ReportFormat::Html)).unwrap();
        std::fs::write(
            format!("{path}.txt"),
            rendered(&troubled(), ReportFormat::Table),
        )
        .unwrap();
    }
}
