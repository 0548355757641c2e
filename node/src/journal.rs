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

/// Lines longer than this are not read back (they cannot be ours).
const MAX_LINE: usize = 64 * 1024;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) time: String,
    pub(crate) node: String,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) reason: String,
    pub(crate) prev: String,
}

/// An open journal.
pub(crate) struct Journal {
    path: PathBuf,
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
    pub(crate) fn open(dir: &Path) -> (Self, Option<Break>) {
        let path = dir.join("journal.jsonl");
        let (seq, prev, broken) = match File::open(&path) {
            Ok(f) => check(BufReader::new(f)),
            Err(_) => (0, GENESIS.to_string(), None),
        };
        (
            Self {
                path,
                tail: Mutex::new((seq, prev)),
            },
            broken,
        )
    }

    /// Appends a record and fsyncs it.
    pub(crate) fn record(
        &self,
        node: &str,
        actor: &str,
        action: &str,
        outcome: &str,
        reason: &str,
    ) -> std::io::Result<u64> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let record = Record {
            seq: tail.0 + 1,
            time: moat_store::model::rfc3339(crate::control::unix_now()),
            node: node.to_string(),
            actor: actor.to_string(),
            action: action.to_string(),
            outcome: outcome.to_string(),
            reason: reason.to_string(),
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

    /// Every record, for people (`moat` reads it offline too).
    /// Up to `max` records after `seq`, in order (for forwarding into the
    /// cluster log). Lines that do not parse are skipped here: the chain
    /// check at start reports them.
    pub(crate) fn records_after(&self, seq: u64, max: usize) -> Vec<Record> {
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
        let (j, broken) = Journal::open(dir.path());
        assert_eq!(broken, None);
        for i in 0..4 {
            j.record(
                "n1",
                "local operator",
                "unlock",
                "denied",
                &format!("try {i}"),
            )
            .unwrap();
        }
        let (j2, broken) = Journal::open(dir.path());
        assert_eq!(broken, None);
        assert_eq!(j2.record("n1", "op", "unlock", "success", "").unwrap(), 5);
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
            let (_, broken) = Journal::open(d.path());
            assert_eq!(broken.map(|b| b.line), Some(at));
        }
    }
}
