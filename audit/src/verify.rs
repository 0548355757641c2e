//! Offline verification of an export bundle, with a report that locates
//! every altered, removed, reordered or inserted record.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use moat_pki::TrustRoots;

use crate::bundle::Bundle;
use crate::hash::{Hash, leaf_hash};
use crate::head::{HeadVerifier, SignedTreeHead};
use crate::merkle::Frontier;

/// Most problems a report lists; the rest are only counted.
pub const MAX_PROBLEMS: usize = 1000;

/// What [`verify_bundle`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Records before the bundle's first one.
    pub base_size: u64,
    /// Record lines in the bundle.
    pub records: u64,
    /// Bytes of records hashed.
    pub bytes: u64,
    /// Signed tree heads in the bundle.
    pub heads: usize,
    /// Heads whose signature verified and whose root matched the records.
    pub heads_verified: usize,
    /// The largest tree size proven: a head at this size verified and its
    /// root matched the records (0 if none).
    pub verified_size: u64,
    /// Whether the CA certificate given to the verifier is the one in the
    /// bundle.
    pub ca_matches_bundle: bool,
    /// Whether an auditor's trusted head was given and it held.
    pub trusted_head_held: Option<bool>,
    /// Everything that does not hold, in log order where it has a place.
    pub problems: Vec<Problem>,
    /// Problems not listed because of [`MAX_PROBLEMS`].
    pub more_problems: u64,
    /// Facts that do not make the bundle fail.
    pub notes: Vec<String>,
}

impl Report {
    /// True only if everything holds: every head verifies and matches, the
    /// records are exactly the signed ones, every record is covered by a
    /// signed head, and the trusted head (if any) is consistent.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.more_problems == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            write!(
                f,
                "verified: {} records ({} bytes), {} of {} signed tree heads, up to size {}",
                self.records, self.bytes, self.heads_verified, self.heads, self.verified_size
            )?;
        } else {
            write!(
                f,
                "NOT verified: {} problem(s)",
                self.problems.len() as u64 + self.more_problems
            )?;
            for p in &self.problems {
                write!(f, "\n  {p}")?;
            }
            if self.more_problems > 0 {
                write!(f, "\n  … and {} more", self.more_problems)?;
            }
        }
        for n in &self.notes {
            write!(f, "\nnote: {n}")?;
        }
        Ok(())
    }
}

/// One thing that does not hold. `Display` gives the sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// The CA certificate given cannot be used: no head can be checked.
    BadCa {
        /// Why.
        reason: String,
    },
    /// The bundle's base hashes are unusable.
    BadBase {
        /// Why.
        reason: String,
    },
    /// A signed tree head does not verify.
    BadHead {
        /// Its size.
        size: u64,
        /// Its signer.
        signer: String,
        /// Why.
        reason: String,
    },
    /// Two verified heads for one size have different roots.
    Fork {
        /// The size.
        size: u64,
    },
    /// A line is not a well-formed record.
    Malformed {
        /// Line number in the records, from 1.
        line: u64,
        /// The record that belongs there, judging by its neighbours.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record's content differs from what was signed.
    Altered {
        /// The record.
        seq: u64,
        /// What shows it.
        evidence: String,
    },
    /// Records are missing from the middle or the start.
    Removed {
        /// First missing.
        first: u64,
        /// Last missing.
        last: u64,
        /// The record before the gap, if any.
        after: Option<u64>,
        /// The record after the gap.
        before: u64,
    },
    /// A record is out of order.
    Reordered {
        /// The record.
        seq: u64,
        /// The larger record it follows.
        after: u64,
    },
    /// A sequence number occurs more than once.
    Duplicate {
        /// The record.
        seq: u64,
        /// How often it occurs.
        count: u64,
    },
    /// A record that the log never held was inserted.
    Inserted {
        /// The genuine record it follows, if known.
        after: Option<u64>,
        /// The sequence number it claims, if readable.
        claims: Option<u64>,
    },
    /// A record with a sequence number outside the bundle's range.
    OutOfRange {
        /// Its sequence number.
        seq: u64,
        /// Its line.
        line: u64,
    },
    /// The records do not match a verified head.
    HeadMismatch {
        /// The head's size.
        size: u64,
        /// The largest size at which a head did match, if any.
        matched_up_to: Option<u64>,
    },
    /// Further verified heads do not match either.
    LaterHeadsMismatch {
        /// How many.
        count: u64,
        /// Smallest size.
        first_size: u64,
        /// Largest size.
        last_size: u64,
    },
    /// A verified head covers more records than the bundle holds.
    MissingTail {
        /// The head's size.
        head_size: u64,
        /// Records up to which the bundle reaches.
        bundle_size: u64,
    },
    /// The auditor's trusted head covers more records than the bundle.
    Truncated {
        /// Its size.
        trusted: u64,
        /// The bundle's.
        bundle: u64,
    },
    /// The records do not match the auditor's trusted head.
    TrustedHeadMismatch {
        /// Its size.
        size: u64,
    },
    /// The auditor's trusted head does not verify.
    TrustedHeadInvalid {
        /// Why.
        reason: String,
    },
    /// The bundle starts after the auditor's trusted head.
    TrustedHeadBeforeBundle {
        /// Its size.
        size: u64,
        /// Records before the bundle's first.
        base_size: u64,
    },
    /// Records after the last verified head: nothing vouches for them.
    Unsigned {
        /// First such record.
        first: u64,
        /// Last.
        last: u64,
    },
    /// The records could not be read to the end.
    Unreadable {
        /// Why.
        reason: String,
    },
}

impl Problem {
    /// The sequence number the problem is about, if it is about a record.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Problem::Malformed { seq, .. }
            | Problem::Altered { seq, .. }
            | Problem::Reordered { seq, .. }
            | Problem::Duplicate { seq, .. }
            | Problem::OutOfRange { seq, .. } => Some(*seq),
            Problem::Removed { first, .. } | Problem::Unsigned { first, .. } => Some(*first),
            Problem::Inserted { claims, after } => after.map(|a| a + 1).or(*claims),
            Problem::MissingTail { bundle_size, .. } => Some(bundle_size + 1),
            Problem::Truncated { bundle, .. } => Some(bundle + 1),
            _ => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadCa { reason } => write!(f, "the CA certificate cannot be used: {reason}"),
            Problem::BadBase { reason } => {
                write!(f, "the bundle's base hashes cannot be used: {reason}")
            }
            Problem::BadHead {
                size,
                signer,
                reason,
            } => write!(
                f,
                "the signed tree head at size {size} (signer {signer}) does not verify: {reason}"
            ),
            Problem::Fork { size } => write!(
                f,
                "two valid signed tree heads for size {size} have different roots: the log was forked"
            ),
            Problem::Malformed { line, seq, reason } => write!(
                f,
                "record {seq} (line {line}) was altered: it is not a well-formed audit record ({reason})"
            ),
            Problem::Altered { seq, evidence } => write!(f, "record {seq} was altered: {evidence}"),
            Problem::Removed {
                first,
                last,
                after,
                before,
            } => {
                let what = if first == last {
                    format!("record {first} removed")
                } else {
                    format!("records {first} to {last} removed")
                };
                match after {
                    Some(a) => write!(f, "sequence gap: {before} follows {a} ({what})"),
                    None => write!(
                        f,
                        "the bundle starts at record {before}, not {first} ({what})"
                    ),
                }
            }
            Problem::Reordered { seq, after } => {
                write!(f, "record {seq} appears after record {after} (reordered)")
            }
            Problem::Duplicate { seq, count } => {
                write!(
                    f,
                    "record {seq} appears {count} times (a copy was inserted)"
                )
            }
            Problem::Inserted { after, claims } => {
                let at = match after {
                    Some(a) => format!("after record {a}"),
                    None => "at the start".to_owned(),
                };
                match claims {
                    Some(c) => write!(f, "a record was inserted {at} (it claims to be record {c})"),
                    None => write!(f, "a record was inserted {at}"),
                }
            }
            Problem::OutOfRange { seq, line } => write!(
                f,
                "record {seq} (line {line}) does not belong in this bundle: it was inserted"
            ),
            Problem::HeadMismatch {
                size,
                matched_up_to: Some(m),
            } => write!(
                f,
                "the records do not match the signed tree head at size {size} (they match the one at size {m})"
            ),
            Problem::HeadMismatch {
                size,
                matched_up_to: None,
            } => write!(
                f,
                "the records do not match the signed tree head at size {size}"
            ),
            Problem::LaterHeadsMismatch {
                count: 1,
                first_size,
                ..
            } => write!(
                f,
                "the later signed tree head at size {first_size} does not match either"
            ),
            Problem::LaterHeadsMismatch {
                count,
                first_size,
                last_size,
            } => write!(
                f,
                "{count} later signed tree heads, sizes {first_size} to {last_size}, do not match either"
            ),
            Problem::MissingTail {
                head_size,
                bundle_size,
            } => write!(
                f,
                "the signed tree head at size {head_size} covers records the bundle does not hold: it ends at size {bundle_size} (records {} to {head_size} removed)",
                bundle_size + 1
            ),
            Problem::Truncated { trusted, bundle } => write!(
                f,
                "the log was truncated: the auditor's head has size {trusted}, the bundle only {bundle}"
            ),
            Problem::TrustedHeadMismatch { size } => write!(
                f,
                "the log was rewritten: its first {size} records do not match the auditor's trusted head"
            ),
            Problem::TrustedHeadInvalid { reason } => {
                write!(f, "the auditor's trusted head does not verify: {reason}")
            }
            Problem::TrustedHeadBeforeBundle { size, base_size } => write!(
                f,
                "the auditor's head (size {size}) cannot be checked: the bundle starts at record {}; export from record {} or earlier",
                base_size + 1,
                size + 1
            ),
            Problem::Unsigned { first, last } if first == last => write!(
                f,
                "record {first} is not covered by any valid signed tree head, so nothing vouches for it"
            ),
            Problem::Unsigned { first, last } => write!(
                f,
                "records {first} to {last} are not covered by any valid signed tree head, so nothing vouches for them"
            ),
            Problem::Unreadable { reason } => write!(f, "the records could not be read: {reason}"),
        }
    }
}

/// Verifies `bundle` offline against the cluster CA certificate(s)
/// `ca_pem` (the auditor's own copy: `--ca`; otherwise the bundle's) and,
/// optionally, a head the auditor kept from earlier.
///
/// It streams the records once, hashing each line as stored, and checks:
/// every head's signature (a manager of the CA's cluster, valid at the
/// head's time); the recomputed root at every head's size; the sequence
/// numbers `base + 1 ..= base + n` in order; each record's `prev` link;
/// that every record is covered by a verified head; and that the trusted
/// head's root equals the recomputed root at its size, so the log only
/// grew since the auditor saw it. See `docs/formats/audit.md`.
pub fn verify_bundle(
    bundle: &Bundle,
    ca_pem: &[u8],
    trusted_head: Option<&SignedTreeHead>,
) -> Report {
    let mut report = Report {
        base_size: bundle.base_size,
        records: 0,
        bytes: 0,
        heads: bundle.heads.len(),
        heads_verified: 0,
        verified_size: 0,
        ca_matches_bundle: normalize_pem(ca_pem) == normalize_pem(bundle.ca_pem.as_bytes()),
        trusted_head_held: None,
        problems: Vec::new(),
        more_problems: 0,
        notes: Vec::new(),
    };
    let mut sink = Sink::default();
    if !report.ca_matches_bundle {
        report
            .notes
            .push("the CA certificate given differs from the one in the bundle".into());
    }

    // 1. Signatures.
    let roots = TrustRoots::from_pem(ca_pem);
    let mut verifier = match &roots {
        Ok(roots) => match HeadVerifier::new(roots) {
            Ok(v) => Some(v),
            Err(e) => {
                sink.push(Problem::BadCa {
                    reason: e.to_string(),
                });
                None
            }
        },
        Err(e) => {
            sink.push(Problem::BadCa {
                reason: e.to_string(),
            });
            None
        }
    };
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let roles = RoleChanges::read(bundle);
    for head in &bundle.heads {
        let Some(v) = verifier.as_mut() else { break };
        match v
            .verify(head)
            .map_err(|e| e.to_string())
            .and_then(|_| roles.check(head))
        {
            Ok(()) => checkpoints.push(Checkpoint {
                size: head.size,
                root: head.root,
                source: Source::Head,
                matched: None,
            }),
            Err(reason) => sink.push(Problem::BadHead {
                size: head.size,
                signer: head.signer.to_string(),
                reason,
            }),
        }
    }
    if let Some(t) = trusted_head {
        match verifier.as_mut().map(|v| v.verify(t)) {
            Some(Ok(_)) => checkpoints.push(Checkpoint {
                size: t.size,
                root: t.root,
                source: Source::Trusted,
                matched: None,
            }),
            Some(Err(e)) => {
                report.trusted_head_held = Some(false);
                sink.push(Problem::TrustedHeadInvalid {
                    reason: e.to_string(),
                });
            }
            None => report.trusted_head_held = Some(false),
        }
    }
    checkpoints.sort_by_key(|c| (c.size, matches!(c.source, Source::Trusted)));
    for pair in checkpoints.windows(2) {
        if pair[0].size == pair[1].size
            && pair[0].root != pair[1].root
            && !matches!(pair[1].source, Source::Trusted)
        {
            sink.push(Problem::Fork { size: pair[0].size });
        }
    }

    // 2. Hash the records.
    let base = bundle.base_size;
    let frontier = match Frontier::from_parts(base, bundle.base_frontier.clone()) {
        Some(f) => f,
        None => {
            sink.push(Problem::BadBase {
                reason: format!(
                    "{} hashes for a tree of {base} records",
                    bundle.base_frontier.len()
                ),
            });
            // No root can be recomputed; the records are still read for
            // what their sequence numbers and links show.
            checkpoints.clear();
            Frontier::default()
        }
    };
    let mut scan = Scan::new(base, frontier, checkpoints);
    scan.reach_checkpoints();
    if let Err(e) = bundle.scan_records(&mut |line| {
        scan.line(line);
        true
    }) {
        sink.push(Problem::Unreadable {
            reason: e.to_string(),
        });
    }
    report.records = scan.lines;
    report.bytes = scan.bytes;

    // 3. Explain what the scan saw, record by record.
    let total = base + scan.lines;
    let mut located = scan.analyse();
    located.sort_by_key(|(line, _)| *line);
    for (_, p) in located {
        sink.push(p);
    }

    // 4. What lies beyond the records.
    let mut largest_valid = 0;
    let mut missing_tail: Option<u64> = None;
    let mut predating: Vec<u64> = Vec::new();
    for c in &scan.checkpoints {
        if c.size < base {
            match c.source {
                Source::Trusted => sink.push(Problem::TrustedHeadBeforeBundle {
                    size: c.size,
                    base_size: base,
                }),
                Source::Head => predating.push(c.size),
            }
            continue;
        }
        if c.size > total {
            match c.source {
                Source::Trusted => sink.push(Problem::Truncated {
                    trusted: c.size,
                    bundle: total,
                }),
                Source::Head => missing_tail = Some(c.size),
            }
        }
        if let Source::Head = c.source {
            largest_valid = largest_valid.max(c.size);
        }
        if let (Source::Trusted, Some(held)) = (c.source, c.matched) {
            report.trusted_head_held = Some(held);
        }
    }
    match predating.as_slice() {
        [] => {}
        [size] => report.notes.push(format!(
            "the signed tree head at size {size} predates the bundle's first record and was not checked"
        )),
        [first, .., last] => report.notes.push(format!(
            "{} signed tree heads (sizes {first} to {last}) predate the bundle's first record and were not checked",
            predating.len()
        )),
    }
    if let Some(head_size) = missing_tail {
        // Removals in the middle already explain a short bundle.
        if head_size - total > scan.removed_count {
            sink.push(Problem::MissingTail {
                head_size,
                bundle_size: total,
            });
        }
    }
    let covered = largest_valid.max(base);
    // Lines found to be extra (inserted, copied) already explain a bundle
    // longer than its last head.
    if total > covered && total - covered > scan.extra_lines {
        let first_line = covered - base;
        let (first, last) = if scan.seqs.is_some() {
            (scan.seq_at(first_line), scan.seq_at(scan.lines - 1))
        } else {
            (covered + 1, total)
        };
        sink.push(Problem::Unsigned {
            first: first.max(covered + 1),
            last: last.max(first).max(covered + 1),
        });
    }
    report.heads_verified = scan
        .checkpoints
        .iter()
        .filter(|c| matches!(c.source, Source::Head) && c.matched == Some(true))
        .count();
    report.verified_size = scan
        .checkpoints
        .iter()
        .filter(|c| matches!(c.source, Source::Head) && c.matched == Some(true))
        .map(|c| c.size)
        .max()
        .unwrap_or(0);
    if trusted_head.is_some() && report.trusted_head_held.is_none() {
        report.trusted_head_held = Some(false);
    }
    report.problems = sink.problems;
    report.more_problems = sink.more;
    report
}

/// Who lost the manager role, and when, by the bundle's records: a head
/// signed after its signer was removed or demoted (and not promoted
/// again) is not taken, whatever its certificate says.
#[derive(Default)]
struct RoleChanges {
    /// Per node: (seq, time, the action) of each successful
    /// `node.remove`, `node.demote` and `node.promote` record, in log order.
    by_node: HashMap<String, Vec<(u64, crate::Timestamp, &'static str)>>,
}

impl RoleChanges {
    /// Reads the role changes from `bundle`'s records. Only lines naming
    /// one of the three actions are parsed; unreadable lines are left to
    /// the main scan to report.
    fn read(bundle: &Bundle) -> Self {
        const ACTIONS: [&str; 3] = ["node.remove", "node.demote", "node.promote"];
        // Every such action starts `"action":"node.`; few lines match.
        let finder = memchr::memmem::Finder::new(b"\"action\":\"node.");
        let mut out = Self::default();
        let _ = bundle.scan_records(&mut |line| {
            let named = finder.find(line).is_some();
            if !named {
                return true;
            }
            let Ok(record) = crate::Record::from_line(line) else {
                return true;
            };
            let event = record.event();
            let Some(action) = ACTIONS.iter().find(|a| event.action.as_str() == **a) else {
                return true;
            };
            if event.outcome != crate::Outcome::Success {
                return true;
            }
            if let Some(node) = event.target.as_str().strip_prefix("node:") {
                out.by_node.entry(node.to_string()).or_default().push((
                    record.seq(),
                    record.time(),
                    action,
                ));
            }
            true
        });
        out
    }

    /// `Err` if `head`'s signer had been removed or demoted, by a record
    /// the head covers, before the head's time.
    fn check(&self, head: &SignedTreeHead) -> Result<(), String> {
        let Some(changes) = self.by_node.get(&head.signer.to_string()) else {
            return Ok(());
        };
        let last = changes
            .iter()
            .filter(|(seq, time, _)| *seq <= head.size && *time < head.time)
            .max_by_key(|(seq, _, _)| *seq);
        match last {
            Some((seq, time, action)) if *action != "node.promote" => Err(format!(
                "its signer, node {}, was {} by record {seq} at {time}, before the head's time {}; a node that is no longer a manager cannot vouch for the log",
                head.signer,
                if *action == "node.remove" {
                    "removed"
                } else {
                    "demoted"
                },
                head.time
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Default)]
struct Sink {
    problems: Vec<Problem>,
    more: u64,
}

impl Sink {
    fn push(&mut self, p: Problem) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.more += 1;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Head,
    Trusted,
}

#[derive(Debug, Clone)]
struct Checkpoint {
    size: u64,
    root: Hash,
    source: Source,
    matched: Option<bool>,
}

/// A link that does not match: line `line`'s `prev` is not the hash of
/// line `line - 1`. `skip` if it is the hash of line `line - 2`.
#[derive(Debug, Clone, Copy)]
struct Break {
    line: u64,
    skip: bool,
    /// The line is byte for byte the line before it.
    same_as_prev: bool,
    /// The link differs from the expected hash in a few hex digits only:
    /// the link itself was edited (a changed record would change its
    /// hash in about 60 of 64 digits).
    near: bool,
}

/// State of one pass over the records.
struct Scan {
    base: u64,
    lines: u64,
    bytes: u64,
    frontier: Frontier,
    prev1: Option<Hash>,
    prev2: Option<Hash>,
    /// Sequence numbers per line (0 if unreadable); `None` while they are
    /// exactly `base + 1, base + 2, …`, so the common case stores nothing.
    seqs: Option<Vec<u64>>,
    breaks: Vec<Break>,
    malformed: Vec<(u64, String)>,
    checkpoints: Vec<Checkpoint>,
    next_checkpoint: usize,
    /// Records found missing by the sequence analysis.
    removed_count: u64,
    /// Lines found to be extra: inserted, duplicated or foreign.
    extra_lines: u64,
    /// Lines whose link was edited (see [`Break::near`]).
    breaks_near: HashSet<u64>,
}

/// Most per-line findings kept while scanning (a bundle of garbage must
/// not exhaust memory).
const MAX_FINDINGS: usize = 100_000;

impl Scan {
    fn new(base: u64, frontier: Frontier, checkpoints: Vec<Checkpoint>) -> Self {
        Self {
            base,
            lines: 0,
            bytes: 0,
            frontier,
            prev1: None,
            prev2: None,
            seqs: None,
            breaks: Vec::new(),
            malformed: Vec::new(),
            checkpoints,
            next_checkpoint: 0,
            removed_count: 0,
            extra_lines: 0,
            breaks_near: HashSet::new(),
        }
    }

    /// The hot path: one record line.
    fn line(&mut self, line: &[u8]) {
        let i = self.lines;
        let h = leaf_hash(line);
        self.bytes += line.len() as u64;
        let parsed = parse_prefix(line);
        let seq = match parsed {
            Some((seq, _)) => seq,
            None => {
                if self.malformed.len() < MAX_FINDINGS {
                    self.malformed.push((i, malformed_reason(line)));
                }
                0
            }
        };
        let expected = self.base + i + 1;
        if self.seqs.is_none() && seq != expected {
            let mut v = Vec::with_capacity(i as usize + 1024);
            v.extend(self.base + 1..expected);
            self.seqs = Some(v);
        }
        if let Some(v) = &mut self.seqs {
            v.push(seq);
        }
        if let Some((_, prev)) = parsed {
            let want = match (i, self.base) {
                (0, 0) => Some(Hash::ZERO),
                (0, _) => None,
                _ => self.prev1,
            };
            if let Some(want) = want
                && prev != want
                && self.breaks.len() < MAX_FINDINGS
            {
                self.breaks.push(Break {
                    line: i,
                    skip: i >= 1 && self.prev2 == Some(prev),
                    same_as_prev: self.prev1 == Some(h),
                    near: differing_digits(&prev, &want) <= 16,
                });
            }
        }
        self.prev2 = self.prev1;
        self.prev1 = Some(h);
        self.frontier.push(h);
        self.lines += 1;
        self.reach_checkpoints();
    }

    /// Compares the roots of checkpoints at the current size.
    fn reach_checkpoints(&mut self) {
        let size = self.frontier.size();
        while let Some(c) = self.checkpoints.get(self.next_checkpoint) {
            if c.size > size {
                break;
            }
            if c.size == size {
                let root = self.frontier.root();
                self.checkpoints[self.next_checkpoint].matched = Some(root == c.root);
            }
            self.next_checkpoint += 1;
        }
    }

    fn seq_at(&self, line: u64) -> u64 {
        match &self.seqs {
            Some(v) => v.get(line as usize).copied().unwrap_or(0),
            None => self.base + line + 1,
        }
    }

    /// Turns what the scan saw into located problems, `(line, problem)`.
    fn analyse(&mut self) -> Vec<(u64, Problem)> {
        let base = self.base;
        let n = self.lines;
        let mut out: Vec<(u64, Problem)> = Vec::new();
        let is_break: HashSet<u64> = self.breaks.iter().map(|b| b.line).collect();
        self.breaks_near = self
            .breaks
            .iter()
            .filter(|b| b.near)
            .map(|b| b.line)
            .collect();
        // Lines whose problem is already told, so link breaks next to them
        // need no telling of their own.
        let mut explained: HashSet<u64> = Default::default();
        // Altered records by line, with the evidence for each.
        let mut blamed: BTreeMap<u64, Vec<String>> = BTreeMap::new();

        // Unreadable lines: name the record that belongs there.
        for (line, reason) in std::mem::take(&mut self.malformed) {
            let seq = if line == 0 {
                base + 1
            } else {
                match self.seq_at(line - 1) {
                    0 => base + line + 1,
                    s => s + 1,
                }
            };
            if let Some(v) = &mut self.seqs {
                v[line as usize] = seq;
            }
            explained.insert(line);
            explained.insert(line + 1);
            out.push((
                line,
                Problem::Malformed {
                    line: line + 1,
                    seq,
                    reason,
                },
            ));
        }

        let mut counts: HashMap<u64, u32> = Default::default();
        for s in self.seqs.iter().flatten() {
            *counts.entry(*s).or_default() += 1;
        }
        let upper = self.upper();

        // Inserted lines: the next line links past them, and the number
        // they claim is taken or foreign. (A swap of two neighbours also
        // links past a line, but claims nothing twice; an exact copy is a
        // duplicate, told below.)
        let mut inserted: HashSet<u64> = Default::default();
        if self.seqs.is_some() {
            for b in &self.breaks {
                if !b.skip || b.same_as_prev || b.line == 0 || inserted.contains(&(b.line - 1)) {
                    continue;
                }
                let l = b.line - 1;
                let claim = self.seq_at(l);
                let taken_or_foreign = claim == 0
                    || claim <= base
                    || claim > upper
                    || counts.get(&claim).copied().unwrap_or(0) > 1;
                if !taken_or_foreign {
                    continue;
                }
                inserted.insert(l);
                self.extra_lines += 1;
                explained.extend([l, b.line]);
                let after = (l >= 1).then(|| self.seq_at(l - 1)).filter(|s| *s != 0);
                let claims = Some(claim).filter(|s| *s != 0);
                out.push((l, Problem::Inserted { after, claims }));
            }
        }

        if self.seqs.is_some() {
            // A record whose sequence number alone was changed: it links
            // to its predecessor, and its successor carries the number it
            // should have plus one.
            for l in 0..n {
                if inserted.contains(&l) || explained.contains(&l) {
                    continue;
                }
                let want = if l == 0 {
                    base + 1
                } else {
                    self.seq_at(l - 1) + 1
                };
                let found = self.seq_at(l);
                if found != want
                    && found != 0
                    && !is_break.contains(&l)
                    && (l + 1 == n || self.seq_at(l + 1) == want + 1)
                    && (l > 0 || base == 0)
                    && !counts.contains_key(&want)
                {
                    if let Some(v) = &mut self.seqs {
                        v[l as usize] = want;
                    }
                    blamed
                        .entry(l)
                        .or_default()
                        .push(format!("its sequence number was changed to {found}"));
                }
            }
            self.analyse_sequence(&inserted, &mut out, &mut explained);
        }

        // Link breaks nobody explained: each is caused by the line before
        // (its content changed) or the line itself (its link changed).
        // Blame as few records as explain them all.
        let unexplained: Vec<u64> = self
            .breaks
            .iter()
            .map(|b| b.line)
            .filter(|l| !(explained.contains(l) || (*l >= 1 && inserted.contains(&(l - 1)))))
            .collect();
        let mut k = 0;
        while k < unexplained.len() {
            let j = unexplained[k];
            let next = self.describe(j + 1);
            if k + 1 < unexplained.len() && unexplained[k + 1] == j + 1 {
                let e = blamed.entry(j).or_default();
                if j == 0 {
                    e.push("its link is not the all-zero hash that starts the log".into());
                } else {
                    e.push(format!("its link does not match {}", self.describe(j - 1)));
                }
                e.push(format!("its hash does not match the link in {next}"));
                k += 2;
            } else if self.breaks_near.contains(&j) && j > 0 {
                blamed
                    .entry(j)
                    .or_default()
                    .push(format!("its link to {} was changed", self.describe(j - 1)));
                k += 1;
            } else if j == 0 {
                blamed
                    .entry(0)
                    .or_default()
                    .push("its link is not the all-zero hash that starts the log".into());
                k += 1;
            } else {
                blamed.entry(j - 1).or_default().push(format!(
                    "its hash does not match the link in {}",
                    self.describe(j)
                ));
                k += 1;
            }
        }

        // Heads: name the first mismatch, and blame a record for it if
        // nothing above did.
        let mut matched_up_to = base;
        let mut first_mismatch_seen = false;
        let mut later: Vec<u64> = Vec::new();
        let checkpoints = self.checkpoints.clone();
        for c in checkpoints.iter().filter(|c| c.matched.is_some()) {
            if c.matched == Some(true) {
                matched_up_to = matched_up_to.max(c.size);
                continue;
            }
            let (lo, hi) = (matched_up_to - base, c.size - base); // lines lo..hi
            let what = match c.source {
                Source::Head => format!("the signed tree head at size {}", c.size),
                Source::Trusted => format!("the auditor's trusted head at size {}", c.size),
            };
            let has_told = out.iter().any(|(l, _)| (lo..hi).contains(l))
                || blamed.range(lo..hi).next().is_some();
            if let Some((_, e)) = blamed.range_mut(lo..hi).next() {
                if !e
                    .iter()
                    .any(|s| s.contains("signed tree head") || s.contains("trusted head"))
                {
                    e.push(format!("{what} does not match"));
                }
            } else if !has_told && hi > lo {
                let mut e = format!("its hash does not match {what}");
                if matched_up_to == base && base > 0 {
                    e.push_str(" (or the bundle's base hashes were altered)");
                }
                blamed.entry(hi - 1).or_default().push(e);
            }
            match c.source {
                Source::Trusted => out.push((hi, Problem::TrustedHeadMismatch { size: c.size })),
                Source::Head => {
                    if !first_mismatch_seen {
                        first_mismatch_seen = true;
                        out.push((
                            hi,
                            Problem::HeadMismatch {
                                size: c.size,
                                matched_up_to: (matched_up_to > base
                                    || checkpoints
                                        .iter()
                                        .any(|m| m.size == base && m.matched == Some(true)))
                                .then_some(matched_up_to),
                            },
                        ));
                    } else {
                        later.push(c.size);
                    }
                }
            }
        }
        if let (Some(&first_size), Some(&last_size)) = (later.first(), later.last()) {
            out.push((
                u64::MAX,
                Problem::LaterHeadsMismatch {
                    count: later.len() as u64,
                    first_size,
                    last_size,
                },
            ));
        }
        for (line, evidence) in blamed {
            out.push((
                line,
                Problem::Altered {
                    seq: self.seq_at(line).max(1),
                    evidence: evidence.join("; "),
                },
            ));
        }
        out
    }

    /// Gaps, duplicates, reordering and strangers in the sequence numbers.
    fn analyse_sequence(
        &mut self,
        inserted: &HashSet<u64>,
        out: &mut Vec<(u64, Problem)>,
        explained: &mut HashSet<u64>,
    ) {
        let base = self.base;
        let n = self.lines;
        let upper = self.upper();
        let Some(seqs) = &self.seqs else { return };
        // Lines whose number is not their predecessor's plus one: any link
        // break there is explained by what is said below.
        for l in 0..n {
            let want = if l == 0 {
                base + 1
            } else {
                seqs[l as usize - 1] + 1
            };
            if seqs[l as usize] != want {
                explained.insert(l);
            }
        }
        let mut present: Vec<(u64, u64)> = Vec::new(); // (seq, line)
        let mut last: Option<u64> = None;
        for l in 0..n {
            if inserted.contains(&l) {
                continue;
            }
            let s = seqs[l as usize];
            if s == 0 {
                continue;
            }
            if s <= base || s > upper {
                self.extra_lines += 1;
                out.push((
                    l,
                    Problem::OutOfRange {
                        seq: s,
                        line: l + 1,
                    },
                ));
                continue;
            }
            if let Some(prev) = last
                && s < prev
            {
                out.push((
                    l,
                    Problem::Reordered {
                        seq: s,
                        after: prev,
                    },
                ));
            }
            last = Some(s);
            present.push((s, l));
        }
        present.sort_unstable();
        let mut i = 0;
        let mut expect = base + 1;
        while i < present.len() {
            let (s, line) = present[i];
            let mut count = 1;
            while i + count < present.len() && present[i + count].0 == s {
                count += 1;
            }
            if count > 1 {
                self.extra_lines += count as u64 - 1;
                out.push((
                    present[i + 1].1,
                    Problem::Duplicate {
                        seq: s,
                        count: count as u64,
                    },
                ));
            }
            if s > expect {
                self.removed_count += s - expect;
                out.push((
                    line,
                    Problem::Removed {
                        first: expect,
                        last: s - 1,
                        after: (expect > base + 1).then_some(expect - 1),
                        before: s,
                    },
                ));
            }
            expect = s + 1;
            i += count;
        }
    }

    /// The largest sequence number that can belong in the bundle.
    fn upper(&self) -> u64 {
        let heads = self.checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        (self.base + self.lines).max(heads)
    }

    fn describe(&self, line: u64) -> String {
        match self.seq_at(line) {
            0 => format!("line {}", line + 1),
            s => format!("record {s}"),
        }
    }
}

/// Reads `{"seq":N,"prev":"<64 hex>",` from the start of a canonical
/// record, without allocating.
fn parse_prefix(line: &[u8]) -> Option<(u64, Hash)> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || rest[0] == b'0' {
        return None;
    }
    let mut seq: u64 = 0;
    for &d in &rest[..digits] {
        seq = seq.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let rest = rest[digits..].strip_prefix(b",\"prev\":\"")?;
    let prev = Hash::from_hex(rest.get(..64)?).ok()?;
    if !rest[64..].starts_with(b"\",") || line.last() != Some(&b'}') {
        return None;
    }
    Some((seq, prev))
}

/// Hex digits in which two hashes differ.
fn differing_digits(a: &Hash, b: &Hash) -> u32 {
    a.0.iter()
        .zip(b.0.iter())
        .map(|(x, y)| {
            let d = x ^ y;
            u32::from(d & 0xf0 != 0) + u32::from(d & 0x0f != 0)
        })
        .sum()
}

fn malformed_reason(line: &[u8]) -> String {
    if line.is_empty() {
        "an empty line".into()
    } else {
        "it does not start with {\"seq\":N,\"prev\":\"<hash>\", or does not end with }".into()
    }
}

fn normalize_pem(pem: &[u8]) -> Vec<u8> {
    pem.iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parser_is_strict() {
        let h = "ab".repeat(32);
        let ok = format!("{{\"seq\":17,\"prev\":\"{h}\",\"time\":\"x\"}}");
        assert_eq!(parse_prefix(ok.as_bytes()).unwrap().0, 17);
        for bad in [
            format!("{{\"seq\":017,\"prev\":\"{h}\",\"time\":\"x\"}}"),
            format!(
                "{{\"seq\":17,\"prev\":\"{}\",\"time\":\"x\"}}",
                "AB".repeat(32)
            ),
            format!("{{\"seq\":17,\"prev\":\"{h}\"}}"),
            format!("{{\"seq\":99999999999999999999,\"prev\":\"{h}\",\"t\":1}}"),
            format!("{{ \"seq\":17,\"prev\":\"{h}\",\"time\":\"x\"}}"),
            format!("{{\"seq\":17,\"prev\":\"{h}\",\"time\":\"x\""),
            String::new(),
        ] {
            assert!(parse_prefix(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}
