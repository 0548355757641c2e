//! `moat audit report` at the CLI's edge: reads the policy file, renders
//! the inventory and the findings as a terminal table, JSON or one
//! self-contained HTML file, and names the exit code.
//!
//! The policy, the checks and the verdict are `moat-report`'s
//! ([`moat_report::findings`], [`moat_report::fails`]); nothing here decides
//! what is a finding. Rendering is a pure function of the inventory, the
//! findings, the policy and a `now`. Inventory values are data from the
//! cluster (a node picks its own host name): nothing here panics on them,
//! terminal output shows control characters escaped and HTML output
//! escapes every string.
//!
//! Exit status (for the caller): `moat audit report` exits 0 when no
//! finding is at or above the policy's `fail_on` severity (default
//! `high`), and [`EXIT_FINDINGS`] (3) otherwise ([`fails`]); 1 and 2 keep
//! their usual meaning (the command failed, usage error). See
//! `docs/audit-report.md`.

use std::fmt::{self, Write as _};
use std::io;
use std::path::Path;

use anyhow::Context as _;
use moat_api::{CryptoInventory, NodeCrypto, SecretSummary};
use moat_report::{
    CertLife, Finding, MAX_POLICY_BYTES, Policy, PolicyDuration, Severity, Summary, human_duration,
    issued_by_root, percent, short_id, worst,
};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) use moat_report::fails;
pub(crate) use swarm::render_swarm;

mod swarm;

use crate::output::{read_input, write_fields, write_json, write_table};
use crate::render::{exact_duration, node_order, parse_time, relative};

/// Exit code of `moat audit report` when a finding is at or above the
/// policy's `fail_on` severity.
pub(crate) const EXIT_FINDINGS: u8 = 3;

/// Reads the operator's TOML policy file (`-` is standard input) for
/// `moat audit report`; a file over [`MAX_POLICY_BYTES`] is refused before
/// it is read. The error names the file, and for a bad policy the key and
/// line.
pub(crate) fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let bytes = read_input(path, MAX_POLICY_BYTES)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    Policy::parse(&bytes)
        .with_context(|| format!("the policy file {} is not valid", path.display()))
}

/// `inv` as the report shows it: its nodes in `moat node ls`'s order (by
/// host name), which every format and the findings about nodes follow.
fn in_report_order(inv: &CryptoInventory) -> CryptoInventory {
    let mut inv = inv.clone();
    inv.nodes
        .sort_by(|a, b| node_order((&a.hostname, &a.id), (&b.hostname, &b.id)));
    inv
}

/// The findings of checking `inv` against `policy` at `now`
/// ([`moat_report::findings`]), about its nodes in the report's order.
pub(crate) fn findings(
    inv: &CryptoInventory,
    policy: &moat_report::Policy,
    now: OffsetDateTime,
) -> Vec<Finding> {
    moat_report::findings(&in_report_order(inv), policy, now)
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
    policy: &moat_report::Policy,
    format: ReportFormat,
    now: OffsetDateTime,
) -> String {
    render_any(&in_report_order(inv), findings, policy, format, now)
}

fn render_any<I: Subject>(
    inv: &I,
    findings: &[Finding],
    policy: &moat_report::Policy,
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
// Rendering: one model of sections, shown by the table and HTML renderers.

/// What a report is about: a moat cluster's inventory, or a Docker Swarm
/// manager's (`report/swarm.rs`). The layout, findings, policy and
/// formats are shared.
trait Subject: Serialize + Sized {
    /// The report's first line in a terminal.
    fn heading(&self) -> String;
    /// The HTML page's title.
    fn html_title(&self) -> String;
    /// The HTML header's facts: label, value, and whether the value is
    /// shown as code.
    fn html_meta(&self) -> Vec<(&'static str, String, bool)>;
    /// The sections, in order (the findings come separately).
    fn sections(r: &Report<'_, Self>) -> Vec<Section>;
}

impl Subject for CryptoInventory {
    fn heading(&self) -> String {
        format!("moat compliance report for cluster {}", self.cluster_id)
    }

    fn html_title(&self) -> String {
        format!(
            "moat compliance report: cluster {}",
            short_id(&self.cluster_id)
        )
    }

    fn html_meta(&self) -> Vec<(&'static str, String, bool)> {
        vec![
            ("Cluster", self.cluster_id.clone(), true),
            ("answered by", self.answered_by.clone(), true),
            ("inventory taken", self.generated_at.clone(), false),
        ]
    }

    fn sections(r: &Report<'_, Self>) -> Vec<Section> {
        r.sections()
    }
}

struct Report<'a, I> {
    inv: &'a I,
    findings: &'a [Finding],
    policy: &'a moat_report::Policy,
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
    /// Identifiers, fingerprints: monospace, broken anywhere when a
    /// table needs the room.
    Mono,
    /// Names without spaces that can be long (host names, paths, lists of
    /// them): broken anywhere when a table needs the room.
    Long,
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

    fn long(text: impl Into<String>) -> Self {
        Self::new(text, Tone::Long)
    }

    fn flag(ok: bool, yes: &str, no: &str) -> Self {
        if ok {
            Self::new(yes, Tone::Good)
        } else {
            Self::new(no, Tone::Bad)
        }
    }
}

impl<I: Subject> Report<'_, I> {
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

    fn secrets(&self, secrets: &[SecretSummary], empty: &'static str) -> Section {
        let rows = secrets
            .iter()
            .map(|s| {
                vec![
                    Cell::plain(&s.name),
                    Cell::plain(&s.kind),
                    Cell::plain(format!("{} ({} kept)", s.version, s.versions_kept)),
                    Cell::plain(format!("{} bytes", s.size)),
                    self.when(&s.updated_at, false),
                    Cell::plain(s.used_by.join(", ")),
                ]
            })
            .collect();
        Section {
            title: "Secrets and configs",
            body: Body::Table {
                headers: &["NAME", "KIND", "VERSION", "SIZE", "LAST CHANGED", "USED BY"],
                rows,
                empty,
            },
            note: Some(
                "Names, sizes and ages only: the report never holds a secret's data.".into(),
            ),
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
                ("node_cert_max_lifetime", d(p.node_cert_max_lifetime)),
                ("root_ca_min_remaining", d(p.root_ca_min_remaining)),
                ("token_max_age", d(p.token_max_age)),
                (
                    "require_autolock",
                    Cell::mono(p.require_autolock.to_string()),
                ),
                ("dek_max_age", d(p.dek_max_age)),
                ("unlock_key_max_age", d(p.unlock_key_max_age)),
                ("secret_max_age", d(p.secret_max_age)),
                (
                    "allowed_algorithms",
                    Cell::mono(p.allowed_algorithms.join(", ")),
                ),
                (
                    "require_workload_identity",
                    Cell::mono(p.require_workload_identity.to_string()),
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

impl Report<'_, CryptoInventory> {
    fn sections(&self) -> Vec<Section> {
        vec![
            self.cluster(),
            self.root_ca(),
            self.nodes(),
            self.tls(),
            self.tokens(),
            self.keys(),
            self.audit(),
            self.services(),
            self.workload_certs(),
            self.secrets(&self.inv.secrets, "no secrets or configs"),
            self.policy_section(),
        ]
    }

    fn services(&self) -> Section {
        let rows = self
            .inv
            .services
            .iter()
            .map(|s| {
                let on: Vec<String> = s.nodes.iter().map(|(n, k)| format!("{n}: {k}")).collect();
                vec![
                    Cell::plain(&s.name),
                    Cell::plain(&s.mode),
                    Cell::plain(&s.runtime),
                    Cell::long(&s.image),
                    Cell::new(
                        format!("{}/{}", s.running, s.desired),
                        if s.running >= s.desired {
                            Tone::Good
                        } else {
                            Tone::Warn
                        },
                    ),
                    Cell::long(on.join(", ")),
                    match s.identity_ttl_secs {
                        Some(ttl) => Cell::new(
                            format!("certificates for {}", exact_duration(ttl)),
                            Tone::Good,
                        ),
                        None => Cell::new("none", Tone::Warn),
                    },
                ]
            })
            .collect();
        Section {
            title: "Services",
            body: Body::Table {
                headers: &[
                    "NAME", "MODE", "RUNTIME", "IMAGE", "RUNNING", "WHERE", "IDENTITY",
                ],
                rows,
                empty: "no services",
            },
            note: None,
        }
    }

    fn workload_certs(&self) -> Section {
        let rows = self
            .inv
            .workload_certs
            .iter()
            .map(|w| {
                vec![
                    Cell::plain(&w.service),
                    Cell::mono(&w.task),
                    Cell::long(&w.node),
                    Cell::mono(&w.serial),
                    self.when(&w.not_after, true),
                    if w.issuer_fingerprint
                        .eq_ignore_ascii_case(&self.inv.root_ca.fingerprint)
                    {
                        Cell::new("root CA", Tone::Good)
                    } else {
                        Cell::new(format!("other root {}", w.issuer_fingerprint), Tone::Warn)
                    },
                ]
            })
            .collect();
        Section {
            title: "Workload certificates",
            body: Body::Table {
                headers: &["SERVICE", "TASK", "NODE", "SERIAL", "EXPIRES", "ISSUER"],
                rows,
                empty: "no task holds a workload certificate",
            },
            note: Some(
                "One X.509-SVID per running task (spiffe://CLUSTER/service/NAME), its key made \
                 on its node; renewed at half its life."
                    .into(),
            ),
        }
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

    fn nodes(&self) -> Section {
        let inv = self.inv;
        let tls = inv.tls.versions.join(", ");
        let rows = inv
            .nodes
            .iter()
            .map(|n| {
                vec![
                    Cell::mono(short_id(&n.id)),
                    Cell::long(&n.hostname),
                    Cell::plain(n.role.as_str()),
                    Cell::flag(n.ready, "ready", "down"),
                    self.algorithm(&n.algorithm),
                    Cell::mono(&n.serial),
                    Cell::plain(&n.not_after),
                    self.time_left(n),
                    Cell::flag(issued_by_root(inv, n), "yes", "NO"),
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
        let Some(life) = CertLife::of(self.inv, n, self.now) else {
            return Cell::new("unknown", Tone::Bad);
        };
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
                if life.renewal_overdue(self.policy) {
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
}

// ---------------------------------------------------------------------------
// Table

impl<I: Subject> Report<'_, I> {
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
        writeln!(out, "{}", terminal(&self.inv.heading()))?;
        writeln!(out, "Generated {}", self.generated())?;
        writeln!(out, "Findings: {}", self.summary_line())?;
        writeln!(out, "{}", self.verdict())?;
        let findings = self.findings_section();
        for section in I::sections(self).iter().chain([&findings]) {
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

impl<I: Subject> Report<'_, I> {
    fn json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a, I: Serialize> {
            generated_at: String,
            inventory: &'a I,
            policy: &'a moat_report::Policy,
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

/// The report's style: system fonts, no URLs. It fits a 1280 px window
/// (`scripts/check-report-layout`): table cells wrap, and long values
/// without spaces (host names, serials, fingerprints) break anywhere rather
/// than widen their table.
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
td{border-bottom:1px solid var(--line);padding:7px 10px;vertical-align:top;overflow-wrap:break-word}
td code,td .long{overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table.grid td{padding:7px 8px}
table.grid th{padding:6px 8px}
table.findings{table-layout:fixed}
table.findings td{overflow-wrap:anywhere}
col.c-sev{width:112px}col.c-subject{width:22%}col.c-problem{width:33%}
tbody tr:last-child td{border-bottom:none}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:6px 28px;margin:0}
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
.empty{color:var(--muted);font-style:italic;margin:0}
.note{color:var(--muted);font-size:12px;margin:10px 0 0}
footer{margin-top:24px;color:var(--muted);font-size:12px;text-align:center}
@media print{body{background:#fff}main{padding:0}section{break-inside:avoid;border-color:#ccc}
header{background:#fff;color:var(--fg);border:1px solid #ccc}header .meta,.badge .l{color:var(--muted)}}
"#;

impl<I: Subject> Report<'_, I> {
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
        writeln!(out, "<title>{}</title>", Esc(&inv.html_title()))?;
        writeln!(out, "<style>{CSS}</style></head><body><main>")?;
        writeln!(out, "<header><h1>moat compliance report</h1>")?;
        write!(out, "<p class=\"meta\">")?;
        for (i, (label, value, code)) in inv.html_meta().iter().enumerate() {
            if i > 0 {
                write!(out, " · ")?;
            }
            if *code {
                write!(out, "{} <code>{}</code>", Esc(label), Esc(value))?;
            } else {
                write!(out, "{} {}", Esc(label), Esc(value))?;
            }
        }
        writeln!(out, " · report generated {}</p>", Esc(&self.generated()))?;
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
        for section in [&findings].into_iter().chain(I::sections(self).iter()) {
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
        Tone::Long => write!(out, "<span class=\"long\">{text}</span>"),
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

    use moat_report::fixtures::{NOW, healthy, malformed, troubled, wide};

    use super::*;

    fn policy_file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text).unwrap();
        f
    }

    /// `moat audit report --policy FILE`'s error, as printed after `moat: `.
    fn load_error(path: &Path) -> String {
        format!("{:#}", load_policy(path).unwrap_err())
    }

    #[test]
    fn a_policy_file_is_read_and_its_errors_name_it() {
        let f = policy_file(b"fail_on = \"medium\"\n");
        assert_eq!(load_policy(f.path()).unwrap().fail_on, Severity::Medium);
        let f = policy_file(b"token_maxage = \"30d\"\n");
        let e = load_error(f.path());
        assert!(
            e.starts_with(&format!(
                "the policy file {} is not valid: ",
                f.path().display()
            )),
            "{e}"
        );
        assert!(e.contains("unknown field `token_maxage`"), "{e}");
        let e = load_error(Path::new("/nonexistent/policy.toml"));
        assert!(
            e.starts_with("cannot read the policy file /nonexistent/policy.toml: "),
            "{e}"
        );
    }

    /// Guards: a policy file over the limit is refused before it is read.
    #[test]
    fn an_oversize_policy_file_is_refused_before_reading() {
        let mut text = b"# padding\n".repeat(7000);
        text.extend_from_slice(b"fail_on = \"low\"\n");
        assert!(text.len() as u64 > MAX_POLICY_BYTES);
        let f = policy_file(&text);
        let e = load_error(f.path());
        assert!(e.starts_with("cannot read the policy file"), "{e}");
        assert!(e.contains("larger than 65536 bytes"), "{e}");
    }

    /// Guards: inventory text is data; nothing in it may panic a renderer.
    #[test]
    fn malformed_inventory_values_render() {
        let inv = malformed();
        let policy = moat_report::Policy::default();
        let fs = findings(&inv, &policy, NOW);
        for format in [ReportFormat::Table, ReportFormat::Json, ReportFormat::Html] {
            assert!(!render(&inv, &fs, &policy, format, NOW).is_empty());
        }
    }

    fn rendered(inv: &CryptoInventory, format: ReportFormat) -> String {
        let policy = moat_report::Policy::default();
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
        assert_eq!(back, in_report_order(&inv));
        let fs: Vec<Finding> = serde_json::from_value(v["findings"].clone()).unwrap();
        assert_eq!(fs, findings(&inv, &moat_report::Policy::default(), NOW));
        let summary: Summary = serde_json::from_value(v["summary"].clone()).unwrap();
        assert_eq!(summary, Summary::of(&fs));
        assert_eq!(summary.critical, 1);
        assert_eq!(v["worst"], "critical");
        assert_eq!(v["fails"], true);
        let policy: moat_report::Policy = serde_json::from_value(v["policy"].clone()).unwrap();
        assert_eq!(policy, moat_report::Policy::default());
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
        let text = rendered(&healthy(), ReportFormat::Table);
        assert!(text.contains("PASS: no finding at or above high"), "{text}");
        assert!(text.contains("  no findings"));
        let html = rendered(&healthy(), ReportFormat::Html);
        assert!(html.contains("class=\"verdict pass\""));
    }

    /// Guards: the nodes are listed as `moat node ls` lists them, by host
    /// name with numbers in order (`worker-9` before `worker-10`), in
    /// every format; the sample has them in another order.
    #[test]
    fn nodes_are_listed_in_node_ls_order() {
        let inv = wide();
        let want = [
            "db-2",
            "legacy-7",
            "manager-1.control-plane",
            "manager-2.control-plane",
            "worker-3.batch",
            "worker-9.batch",
            "worker-10.batch",
            "worker-15.batch",
        ];
        let in_order = |section: &str, format: &str| {
            let at: Vec<usize> = want
                .iter()
                .map(|h| {
                    section
                        .find(h)
                        .unwrap_or_else(|| panic!("{format}: no {h} in {section}"))
                })
                .collect();
            assert!(at.is_sorted(), "{format}: {want:?} at {at:?} in\n{section}");
        };
        let table = rendered(&inv, ReportFormat::Table);
        let (_, nodes) = table.split_once("\nNodes\n").unwrap();
        in_order(nodes.split_once("\nTLS\n").unwrap().0, "table");
        let html = rendered(&inv, ReportFormat::Html);
        let (_, nodes) = html.split_once("<h2>Nodes</h2>").unwrap();
        in_order(nodes.split_once("<h2>TLS</h2>").unwrap().0, "html");
        let json: serde_json::Value =
            serde_json::from_str(&rendered(&inv, ReportFormat::Json)).unwrap();
        let hostnames: Vec<&str> = json["inventory"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["hostname"].as_str().unwrap())
            .collect();
        assert_eq!(hostnames.len(), inv.nodes.len());
        in_order(&hostnames.join("\n"), "json");
    }

    /// Writes a sample HTML report to `$MOAT_REPORT_SAMPLE` (when set), for
    /// `scripts/render-report-screenshot` and `scripts/check-report-layout`:
    /// the widest sample ([`wide`]: many nodes, long host names, ids,
    /// serials and fingerprints as long as real ones). The table goes
    /// beside it as `.txt`.
    #[test]
    fn sample_report() {
        let Ok(path) = std::env::var("MOAT_REPORT_SAMPLE") else {
            return;
        };
        std::fs::write(&path, rendered(&wide(), ReportFormat::Html)).unwrap();
        std::fs::write(
            format!("{path}.txt"),
            rendered(&wide(), ReportFormat::Table),
        )
        .unwrap();
    }
}
