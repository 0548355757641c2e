//! The node's local security journal: events that happen where the
//! cluster log cannot record them (an unlock attempt on a locked manager,
//! a key change of this node's own files).
//!
//! `DIR/journal.jsonl`, one JSON record per line, appended and fsynced
//! before the operation it records answers. Each record carries the
//! SHA-256 of the previous line (`prev`, hex; 64 zeros for the first), so
//! a removed, changed or reordered line breaks the chain. The chain is
//! checked when the daemon starts; a break is logged as an error and
//! recorded as a `tamper-detected` event, never passed over in silence.
//! The journal holds no secret: outcomes and reasons only.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// Lines longer than this are not read back (they cannot be ours).
const MAX_LINE: usize = 64 * 1024;

/// What a journal record is about. Written as the kebab-case names below;
/// a name this build does not know (a newer daemon's, read after a
/// downgrade) is kept as it is rather than taken for damage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub(crate) enum JournalAction {
    /// An unlock attempt with the whole key.
    Unlock,
    /// A share of the unlock key given.
    UnlockShare,
    /// The journal's chain was found broken at start.
    TamperDetected,
    /// This node's keys moved to the cluster's unlock key.
    AutolockEnabled,
    /// This node's keys moved to a rotated unlock key.
    UnlockKeyRotated,
    /// This node's keys moved to a key of its own (autolock off).
    AutolockDisabled,
    /// A demoted manager's keys moved back to a key of its own.
    OwnKeyRestored,
    /// The store's data key was rotated.
    DekRotated,
    /// A backup was taken on this node.
    Backup,
    /// `moat init --force-new-cluster` ran here.
    ForceNewCluster,
    /// An action this build does not know.
    Other(String),
}

impl JournalAction {
    /// The name written to the journal.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Unlock => "unlock",
            Self::UnlockShare => "unlock-share",
            Self::TamperDetected => "tamper-detected",
            Self::AutolockEnabled => "autolock-enabled",
            Self::UnlockKeyRotated => "unlock-key-rotated",
            Self::AutolockDisabled => "autolock-disabled",
            Self::OwnKeyRestored => "own-key-restored",
            Self::DekRotated => "dek-rotated",
            Self::Backup => "backup",
            Self::ForceNewCluster => "force-new-cluster",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for JournalAction {
    fn from(s: String) -> Self {
        [
            Self::Unlock,
            Self::UnlockShare,
            Self::TamperDetected,
            Self::AutolockEnabled,
            Self::UnlockKeyRotated,
            Self::AutolockDisabled,
            Self::OwnKeyRestored,
            Self::DekRotated,
            Self::Backup,
            Self::ForceNewCluster,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .unwrap_or(Self::Other(s))
    }
}

impl From<JournalAction> for String {
    fn from(a: JournalAction) -> Self {
        a.as_str().to_string()
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub(crate) enum JournalActor {
    /// Whoever holds the control socket.
    LocalOperator,
    /// The daemon, on its own.
    ThisNode,
    /// The key given to the daemon at start (`--unlock-key-file`).
    UnattendedStart,
    /// An actor this build does not know.
    Other(String),
}

impl JournalActor {
    /// The name written to the journal.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::LocalOperator => "local operator",
            Self::ThisNode => "this node",
            Self::UnattendedStart => "unattended start",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for JournalActor {
    fn from(s: String) -> Self {
        [Self::LocalOperator, Self::ThisNode, Self::UnattendedStart]
            .into_iter()
            .find(|a| a.as_str() == s)
            .unwrap_or(Self::Other(s))
    }
}

impl From<JournalActor> for String {
    fn from(a: JournalActor) -> Self {
        a.as_str().to_string()
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JournalOutcome {
    /// It was done.
    Success,
    /// It was refused (a wrong key, a throttled attempt).
    Denied,
    /// It was tried and did not work.
    Failed,
}

/// One event to journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalEvent {
    pub(crate) actor: JournalActor,
    pub(crate) action: JournalAction,
    pub(crate) outcome: JournalOutcome,
    /// Why (never a secret).
    pub(crate) reason: String,
}

impl JournalEvent {
    /// `action` done by `actor`, successfully.
    pub(crate) fn new(actor: JournalActor, action: JournalAction) -> Self {
        Self {
            actor,
            action,
            outcome: JournalOutcome::Success,
            reason: String::new(),
        }
    }

    /// Refused, because of `reason`.
    pub(crate) fn denied(mut self, reason: impl Into<String>) -> Self {
        self.outcome = JournalOutcome::Denied;
        self.reason = reason.into();
        self
    }

    /// Failed, because of `reason`.
    pub(crate) fn failed(mut self, reason: impl Into<String>) -> Self {
        self.outcome = JournalOutcome::Failed;
        self.reason = reason.into();
        self
    }

    /// A note on a success.
    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.reason = note.into();
        self
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) time: String,
    pub(crate) node: String,
    pub(crate) actor: JournalActor,
    pub(crate) action: JournalAction,
    pub(crate) outcome: JournalOutcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) reason: String,
    pub(crate) prev: String,
}

/// An open journal.
pub(crate) struct Journal {
    path: PathBuf,
    clock: Clock,
    tail: Mutex<(u64, String)>,
}

/// A break found in the chain: the line number and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Break {
    pub(crate) line: u64,
    pub(crate) problem: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Journal {
    /// Opens (or starts) the journal in `dir`, checking its chain.
    pub(crate) fn open(dir: &Path, clock: Clock) -> (Self, Option<Break>) {
        let path = dir.join("journal.jsonl");
        let (seq, prev, broken) = match File::open(&path) {
            Ok(f) => check(BufReader::new(f)),
            Err(_) => (0, GENESIS.to_string(), None),
        };
        (
            Self {
                path,
                clock,
                tail: Mutex::new((seq, prev)),
            },
            broken,
        )
    }

    /// Appends `event` about `node` (empty: not known yet) and fsyncs it.
    pub(crate) fn record(&self, node: &str, event: JournalEvent) -> std::io::Result<u64> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let record = Record {
            seq: tail.0 + 1,
            time: moat_store::model::rfc3339(self.clock.unix()),
            node: node.to_string(),
            actor: event.actor,
            action: event.action,
            outcome: event.outcome,
            reason: event.reason,
            prev: tail.1.clone(),
        };
        let line = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?
        };
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()?;
        *tail = (record.seq, sha256_hex(line.as_bytes()));
        Ok(record.seq)
    }

    /// Appends `event`, logging (not returning) a failure: the event has
    /// happened whether or not it could be written down.
    pub(crate) fn record_or_log(&self, node: &str, event: JournalEvent) {
        let action = event.action.as_str().to_string();
        if let Err(e) = self.record(node, event) {
            tracing::error!(error = %e, action, "could not write the local security journal");
        }
    }

    /// Up to `max` records after `seq`, in order (for forwarding into the
    /// cluster log). Lines that do not parse are skipped here: the chain
    /// check at start reports them.
    pub(crate) fn records_after(&self, seq: u64, max: usize) -> Vec<Record> {
        // Nothing written after `seq`: no read (the agent asks every
        // heartbeat; thousands of nodes in one process ask together).
        if self.tail.lock().unwrap_or_else(|p| p.into_inner()).0 <= seq {
            return Vec::new();
        }
        let Ok(f) = File::open(&self.path) else {
            return Vec::new();
        };
        BufReader::new(f)
            .split(b'\n')
            .map_while(Result::ok)
            .filter(|l| l.len() <= MAX_LINE)
            .filter_map(|l| serde_json::from_slice::<Record>(&l).ok())
            .filter(|r| r.seq > seq)
            .take(max)
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn records(&self) -> Vec<Record> {
        let Ok(f) = File::open(&self.path) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }
}

/// Walks the chain; returns the last sequence number and hash, and the
/// first break if any (the journal then continues from its last line).
fn check(reader: impl BufRead) -> (u64, String, Option<Break>) {
    let mut seq = 0u64;
    let mut prev = GENESIS.to_string();
    let mut broken = None;
    for (n, line) in reader.split(b'\n').enumerate() {
        let line_no = n as u64 + 1;
        let Ok(line) = line else {
            broken.get_or_insert(Break {
                line: line_no,
                problem: "unreadable".into(),
            });
            break;
        };
        if line.is_empty() {
            continue;
        }
        let problem = if line.len() > MAX_LINE {
            Some("line too long".to_string())
        } else {
            match serde_json::from_slice::<Record>(&line) {
                Err(e) => Some(format!("not a journal record: {e}")),
                Ok(r) if r.prev != prev => Some(format!(
                    "record {} does not follow the line before it (a line was removed, changed or reordered)",
                    r.seq
                )),
                Ok(r) if r.seq != seq + 1 => Some(format!(
                    "record {} follows record {seq} (sequence gap)",
                    r.seq
                )),
                Ok(r) => {
                    seq = r.seq;
                    None
                }
            }
        };
        if let Some(problem) = problem {
            broken.get_or_insert(Break {
                line: line_no,
                problem,
            });
            // Continue the sequence past what is there.
            if let Ok(r) = serde_json::from_slice::<Record>(&line) {
                seq = seq.max(r.seq);
            }
        }
        prev = sha256_hex(&line);
    }
    (seq, prev, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_removed_changed_and_reordered_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (j, broken) = Journal::open(dir.path(), Clock::system());
        assert_eq!(broken, None);
        for i in 0..4 {
            let ev = JournalEvent::new(JournalActor::LocalOperator, JournalAction::Unlock)
                .denied(format!("try {i}"));
            j.record("n1", ev).unwrap();
        }
        let (j2, broken) = Journal::open(dir.path(), Clock::system());
        assert_eq!(broken, None);
        let ev = JournalEvent::new(JournalActor::ThisNode, JournalAction::Unlock);
        assert_eq!(j2.record("n1", ev).unwrap(), 5);
        assert_eq!(j2.records().len(), 5);

        let text = std::fs::read_to_string(dir.path().join("journal.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cases: Vec<(Vec<&str>, u64)> = vec![
            // removed
            ([&lines[..2], &lines[3..]].concat(), 3),
            // reordered
            (vec![lines[0], lines[2], lines[1], lines[3], lines[4]], 2),
            // changed
            (
                {
                    let mut v = lines.clone();
                    v[3] = Box::leak(lines[3].replace("try 3", "try 9").into_boxed_str());
                    v
                },
                5,
            ),
        ];
        for (lines, at) in cases {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join("journal.jsonl"), lines.join("\n") + "\n").unwrap();
            let (_, broken) = Journal::open(d.path(), Clock::system());
            assert_eq!(broken.map(|b| b.line), Some(at));
        }
    }

    /// The journal's on-disk form is unchanged by typing it: lines written
    /// by earlier builds (and names this build does not know) read back.
    #[test]
    fn journal_lines_of_earlier_builds_read_back() {
        let line = r#"{"seq":3,"time":"2026-01-02T03:04:05Z","node":"n1","actor":"unattended start","action":"unlock-share","outcome":"denied","reason":"wrong share","prev":"00"}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert_eq!(r.actor, JournalActor::UnattendedStart);
        assert_eq!(r.action, JournalAction::UnlockShare);
        assert_eq!(r.outcome, JournalOutcome::Denied);
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
        let newer = line.replace("unlock-share", "some-later-action");
        let r: Record = serde_json::from_str(&newer).unwrap();
        assert_eq!(r.action, JournalAction::Other("some-later-action".into()));
        assert_eq!(serde_json::to_string(&r).unwrap(), newer);
    }
}
