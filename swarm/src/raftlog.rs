//! The raft log of a state directory: the newest valid snapshot and the WAL
//! entries, decrypted where a data key is available.
//!
//! [`read_log`] rebuilds the log as a restarting node would:
//!
//! 1. Load the newest snapshot whose CRC holds (older ones are fallbacks; a
//!    skipped one is a notice). S = its index, or 0.
//! 2. Read every WAL segment in name order, checking the CRC-32C chain. An
//!    entry with index i replaces every held entry with index ≥ i (raft
//!    log truncation).
//! 3. Decrypt only the entries with index > S: older ones may be sealed
//!    with a data key that has since been retired; they are kept, marked
//!    `before_snapshot`, without plaintext.
//! 4. Mark entries past `HardState.commit` as not committed (a notice).
//!
//! A torn or bad record at the very end of the last segment is what a crash
//! leaves: reading stops there with a notice. The same anywhere else is an
//! error naming the file and offset. A hole in the indexes after S is a
//! [`SwarmError::Gap`].
//!
//! [`verify`] reads everything and checks every CRC (the WAL chain and every
//! snapshot file, not only the newest) and, with keys, every record's
//! authentication, stopping at the first bad thing. Entries at or before
//! the snapshot index that no current key opens are counted as *sealed
//! with a retired key*, not failed: after a data-key rotation SwarmKit
//! forces a snapshot and drops the old key, so the WAL may still hold
//! entries only the old key opens, and their effect is in the snapshot.
//!
//! Plaintexts stay in zeroizing buffers; nothing here logs them.

use std::collections::BTreeSet;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::dir::StateDir;
use crate::error::{Notice, NoticeKind, Result, SwarmError};
use crate::key::DataKeys;
use crate::record::{MaybeEncryptedRecord, RecordAlgorithm, RecordError, open_decoded};
use crate::snap::{MAX_SNAPSHOT, SnapshotFile, parse_snapshot, parse_snapshot_name};
use crate::wal::{
    HardState, RaftMember, SegmentEnd, WalRecordKind, parse_segment, parse_segment_name,
    read_segment_file,
};

/// The raft log read from a state directory.
#[derive(Debug, Default)]
pub struct RaftLog {
    /// The snapshot used, if any.
    pub snapshot: Option<LoadedSnapshot>,
    /// The entries in index order (after truncations).
    pub entries: Vec<LogEntry>,
    /// The last `HardState` in the WAL.
    pub hard_state: HardState,
    /// The node's `RaftMember` records from the WAL metadata (distinct).
    pub members: Vec<RaftMember>,
    /// The record algorithms seen (snapshot and entries).
    pub algorithms_seen: BTreeSet<RecordAlgorithm>,
    /// Things reported but not fatal.
    pub notices: Vec<Notice>,
}

/// The snapshot a [`RaftLog`] starts from.
pub struct LoadedSnapshot {
    /// The file, relative to the state directory.
    pub file: String,
    /// The raft index it covers.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// The voters at that index.
    pub conf_nodes: Vec<u64>,
    /// How its data is sealed.
    pub algorithm: RecordAlgorithm,
    /// The `api.Snapshot` bytes, if a key opened it (or it is NONE).
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for LoadedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedSnapshot")
            .field("file", &self.file)
            .field("index", &self.index)
            .field("term", &self.term)
            .field("conf_nodes", &self.conf_nodes)
            .field("algorithm", &self.algorithm)
            .field(
                "plaintext",
                &self
                    .plaintext
                    .as_ref()
                    .map(|p| format!("<{} bytes>", p.len())),
            )
            .finish()
    }
}

/// The type of a raft entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// 0: an `api.InternalRaftRequest` (or empty: the leader's no-op).
    Normal,
    /// 1: a `raftpb.ConfChange`.
    ConfChange,
    /// Anything else.
    Unknown(i64),
}

/// One raft entry.
pub struct LogEntry {
    /// The raft index.
    pub index: u64,
    /// The raft term.
    pub term: u64,
    /// The entry type.
    pub kind: EntryKind,
    /// Index ≤ `HardState.commit`.
    pub committed: bool,
    /// Index ≤ the snapshot's: not decrypted (the snapshot holds its effect).
    pub before_snapshot: bool,
    /// How its data is sealed.
    pub algorithm: RecordAlgorithm,
    /// The plaintext, if opened (empty for the leader's no-op).
    pub plaintext: Option<Zeroizing<Vec<u8>>>,
    /// The WAL segment holding it, relative to the state directory.
    pub file: String,
    /// The offset of its frame in that segment.
    pub offset: u64,
}

impl std::fmt::Debug for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEntry")
            .field("index", &self.index)
            .field("term", &self.term)
            .field("kind", &self.kind)
            .field("committed", &self.committed)
            .field("before_snapshot", &self.before_snapshot)
            .field("algorithm", &self.algorithm)
            .field(
                "plaintext",
                &self
                    .plaintext
                    .as_ref()
                    .map(|p| format!("<{} bytes>", p.len())),
            )
            .field("file", &self.file)
            .field("offset", &self.offset)
            .finish()
    }
}

/// What [`verify`] checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// WAL segments read.
    pub segments: usize,
    /// WAL records read (all types), each CRC-checked.
    pub records: usize,
    /// Entries in the log after truncations.
    pub entries: usize,
    /// Entry records that later ones replaced (raft log truncation).
    pub entries_replaced: usize,
    /// Bytes of WAL data read (up to the end of each segment's data).
    pub wal_bytes: u64,
    /// Snapshot files CRC-checked.
    pub snapshots_checked: usize,
    /// The index of the newest snapshot (0 if none).
    pub snapshot_index: u64,
    /// Whether the newest snapshot's data authenticated under a data key
    /// (false when there is none or no key was available).
    pub snapshot_authenticated: bool,
    /// Entries whose data authenticated (or is NONE).
    pub entries_authenticated: usize,
    /// Entries at or before the snapshot index that no current data key
    /// opens: sealed with a retired key.
    pub entries_retired_key: usize,
    /// Entries not checked for authentication (no key available).
    pub entries_not_authenticated: usize,
    /// Entries past the commit index.
    pub uncommitted: usize,
    /// The last hard state.
    pub hard_state: HardState,
    /// The record algorithms seen.
    pub algorithms_seen: BTreeSet<RecordAlgorithm>,
    /// Things reported but not fatal.
    pub notices: Vec<Notice>,
}

/// Reads the snapshot and the WAL, decrypting with `keys` where given (NONE
/// records are read without keys).
pub fn read_log(dir: &StateDir, keys: Option<&DataKeys>) -> Result<RaftLog> {
    let no_keys = DataKeys::default();
    let keys = keys.unwrap_or(&no_keys);
    let mut notices: Vec<Notice> = dir.notices().to_vec();
    let mut algorithms_seen = BTreeSet::new();

    // 1. The newest snapshot that checks.
    let (snaps, snap_notices) = dir.snapshot_files()?;
    notices.extend(snap_notices);
    let mut snapshot = None;
    for file in &snaps {
        match load_snapshot(dir, file) {
            Ok(s) => {
                snapshot = Some((file.clone(), s));
                break;
            }
            Err(e @ (SwarmError::Crc { .. } | SwarmError::Malformed { .. })) => {
                notices.push(Notice::new(
                    NoticeKind::BrokenSnapshot,
                    file.clone(),
                    None,
                    format!("skipped, an older snapshot (or none) is used instead: {e}"),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let loaded = match snapshot {
        None => None,
        Some((file, s)) => {
            check_snapshot_name(&file, &s, &mut notices);
            let rec = MaybeEncryptedRecord::decode(&s.data)
                .map_err(|e| e.at(&file, s.data_offset, None))?;
            algorithms_seen.insert(rec.algorithm);
            let plaintext = match open_decoded(&rec, keys) {
                Ok(o) => Some(o.plaintext),
                Err(RecordError::NoKey) => None,
                Err(e) => return Err(e.at(&file, s.data_offset, None)),
            };
            Some(LoadedSnapshot {
                file,
                index: s.index,
                term: s.term,
                conf_nodes: s.conf_nodes,
                algorithm: rec.algorithm,
                plaintext,
            })
        }
    };
    let snap_index = loaded.as_ref().map_or(0, |s| s.index);

    // 2. The WAL.
    let scan = scan_wal(dir, false)?;
    notices.extend(scan.notices);
    if let Some(s) = &loaded {
        check_snapshot_in_wal(s.index, s.term, &s.file, &scan.snapshot_marks, &mut notices);
    }
    check_gaps(&scan.entries, snap_index, &scan.hard_state, &mut notices)?;

    // 3. Decrypt after the snapshot: the entries are cut into one run per
    // core and opened in parallel (decryption is most of the work); the
    // first error in index order wins, as if they were opened in turn.
    let commit = scan.hard_state.commit;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    let chunk = scan
        .entries
        .len()
        .div_ceil(threads)
        .max(MIN_ENTRIES_PER_THREAD);
    let opened: Vec<Result<OpenedRun>> = std::thread::scope(|scope| {
        let runs: Vec<_> = scan
            .entries
            .chunks(chunk)
            .map(|run| scope.spawn(move || open_run(run, keys, snap_index, commit)))
            .collect();
        runs.into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SwarmError::Other(
                        "a decryption thread stopped unexpectedly".into(),
                    ))
                })
            })
            .collect()
    });
    let mut entries = Vec::with_capacity(scan.entries.len());
    let mut uncommitted = 0usize;
    for run in opened {
        let run = run?;
        entries.extend(run.entries);
        algorithms_seen.extend(run.algorithms);
        uncommitted += run.uncommitted;
    }
    if uncommitted > 0 {
        notices.push(Notice::new(
            NoticeKind::Uncommitted,
            "",
            None,
            format!(
                "{uncommitted} entr{} after the commit index {} (not committed yet)",
                if uncommitted == 1 { "y is" } else { "ies are" },
                scan.hard_state.commit
            ),
        ));
    }
    Ok(RaftLog {
        snapshot: loaded,
        entries,
        hard_state: scan.hard_state,
        members: scan.members,
        algorithms_seen,
        notices,
    })
}

/// Checks every CRC and, with keys, every record's authentication; stops
/// at the first bad thing with an error naming the file and offset. See the
/// module documentation for entries sealed with a retired key.
pub fn verify(dir: &StateDir, keys: Option<&DataKeys>) -> Result<VerifyReport> {
    let no_keys = DataKeys::default();
    let keys = keys.unwrap_or(&no_keys);
    let mut report = VerifyReport {
        notices: dir.notices().to_vec(),
        ..VerifyReport::default()
    };

    let (snaps, snap_notices) = dir.snapshot_files()?;
    report.notices.extend(snap_notices);
    let mut newest: Option<(String, SnapshotFile)> = None;
    for file in &snaps {
        let s = load_snapshot(dir, file)?;
        report.snapshots_checked += 1;
        let rec =
            MaybeEncryptedRecord::decode(&s.data).map_err(|e| e.at(file, s.data_offset, None))?;
        report.algorithms_seen.insert(rec.algorithm);
        if newest.is_none() {
            check_snapshot_name(file, &s, &mut report.notices);
            match open_decoded(&rec, keys) {
                Ok(_) => report.snapshot_authenticated = true,
                Err(RecordError::NoKey) => {}
                Err(e) => return Err(e.at(file, s.data_offset, None)),
            }
            newest = Some((file.clone(), s));
        }
    }
    report.snapshot_index = newest.as_ref().map_or(0, |(_, s)| s.index);

    let scan = scan_wal(dir, true)?;
    report.notices.extend(scan.notices);
    if let Some((file, s)) = &newest {
        check_snapshot_in_wal(
            s.index,
            s.term,
            file,
            &scan.snapshot_marks,
            &mut report.notices,
        );
    }
    check_gaps(
        &scan.entries,
        report.snapshot_index,
        &scan.hard_state,
        &mut report.notices,
    )?;
    report.segments = scan.segments;
    report.records = scan.records;
    report.wal_bytes = scan.bytes;
    report.entries = scan.entries.len();
    report.entries_replaced = scan.replaced;
    report.hard_state = scan.hard_state;

    let mut retired_first: Option<(String, u64, u64)> = None;
    for raw in &scan.entries {
        let rec = MaybeEncryptedRecord::decode(&raw.data)
            .map_err(|e| e.at(&raw.file, raw.offset, Some(raw.index)))?;
        report.algorithms_seen.insert(rec.algorithm);
        if raw.index > scan.hard_state.commit {
            report.uncommitted += 1;
        }
        match open_decoded(&rec, keys) {
            Ok(_) => report.entries_authenticated += 1,
            Err(RecordError::NoKey) => report.entries_not_authenticated += 1,
            Err(RecordError::Auth) if raw.index <= report.snapshot_index => {
                report.entries_retired_key += 1;
                if retired_first.is_none() {
                    retired_first = Some((raw.file.clone(), raw.offset, raw.index));
                }
            }
            Err(e) => return Err(e.at(&raw.file, raw.offset, Some(raw.index))),
        }
    }
    if let Some((file, offset, index)) = retired_first {
        report.notices.push(Notice::new(
            NoticeKind::RetiredKey,
            file,
            Some(offset),
            format!(
                "{} entr{} at or before the snapshot index {} (the first is index {index}) open with no \
                 current data key: sealed with a retired key; the snapshot holds their effect",
                report.entries_retired_key,
                if report.entries_retired_key == 1 { "y" } else { "ies" },
                report.snapshot_index
            ),
        ));
    }
    if report.uncommitted > 0 {
        report.notices.push(Notice::new(
            NoticeKind::Uncommitted,
            "",
            None,
            format!(
                "{} entries after the commit index {} (not committed yet)",
                report.uncommitted, report.hard_state.commit
            ),
        ));
    }
    Ok(report)
}

/// An entry as read from the WAL, still sealed.
/// Most threads that decrypt entries at once.
const MAX_THREADS: usize = 8;

/// Fewer entries than this are not worth a thread of their own.
const MIN_ENTRIES_PER_THREAD: usize = 1024;

/// A run of entries, decrypted.
struct OpenedRun {
    entries: Vec<LogEntry>,
    algorithms: BTreeSet<RecordAlgorithm>,
    uncommitted: usize,
}

/// Decrypts the entries of `run` that come after the snapshot; stops at
/// the first that does not open.
fn open_run(run: &[RawEntry], keys: &DataKeys, snap_index: u64, commit: u64) -> Result<OpenedRun> {
    let mut out = OpenedRun {
        entries: Vec::with_capacity(run.len()),
        algorithms: BTreeSet::new(),
        uncommitted: 0,
    };
    for raw in run {
        let rec = MaybeEncryptedRecord::decode(&raw.data)
            .map_err(|e| e.at(&raw.file, raw.offset, Some(raw.index)))?;
        out.algorithms.insert(rec.algorithm);
        let before_snapshot = raw.index <= snap_index;
        let plaintext = if before_snapshot {
            None
        } else {
            match open_decoded(&rec, keys) {
                Ok(o) => Some(o.plaintext),
                Err(RecordError::NoKey) => None,
                Err(e) => return Err(e.at(&raw.file, raw.offset, Some(raw.index))),
            }
        };
        let committed = raw.index <= commit;
        if !committed {
            out.uncommitted += 1;
        }
        out.entries.push(LogEntry {
            index: raw.index,
            term: raw.term,
            kind: match raw.entry_type {
                0 => EntryKind::Normal,
                1 => EntryKind::ConfChange,
                other => EntryKind::Unknown(other),
            },
            committed,
            before_snapshot,
            algorithm: rec.algorithm,
            plaintext,
            file: raw.file.clone(),
            offset: raw.offset,
        });
    }
    Ok(out)
}

struct RawEntry {
    index: u64,
    term: u64,
    entry_type: i64,
    data: Vec<u8>,
    file: String,
    offset: u64,
}

#[derive(Default)]
struct WalScan {
    entries: Vec<RawEntry>,
    hard_state: HardState,
    members: Vec<RaftMember>,
    snapshot_marks: Vec<(u64, u64)>,
    notices: Vec<Notice>,
    segments: usize,
    records: usize,
    replaced: usize,
    bytes: u64,
}

/// Reads every segment. In the last segment a torn record is a notice, and
/// so is a bad one with nothing after it unless `strict`; anything else bad
/// is an error.
fn scan_wal(dir: &StateDir, strict: bool) -> Result<WalScan> {
    let (segments, ignored) = dir.wal_segments()?;
    let mut scan = WalScan {
        notices: ignored,
        ..WalScan::default()
    };
    if segments.is_empty() {
        return Err(SwarmError::NotAStateDir {
            path: dir.path(crate::dir::WAL_DIR),
            missing: "a WAL segment (*.wal)".into(),
            hint: "a manager always has one; copy the whole state directory".into(),
        });
    }
    let mut crc = 0u32;
    let mut prev_seq: Option<u64> = None;
    let last = segments.len() - 1;
    for (i, file) in segments.iter().enumerate() {
        let name = file.rsplit('/').next().unwrap_or(file);
        if let Some((seq, _)) = parse_segment_name(name) {
            if let Some(p) = prev_seq
                && p.checked_add(1) != Some(seq)
            {
                return Err(SwarmError::Gap {
                    what: format!(
                        "WAL segment sequence numbers jump from {p} to {seq} at {file}: a segment is missing"
                    ),
                });
            }
            prev_seq = Some(seq);
        }
        let bytes = read_segment_file(&dir.path(file), file)?;
        let read = parse_segment(file, &bytes, crc);
        drop(bytes);
        scan.segments += 1;
        scan.bytes += read.end_offset;
        crc = read.crc;
        for rec in read.records {
            scan.records += 1;
            match rec.kind {
                WalRecordKind::Metadata(m) => {
                    if !scan.members.contains(&m) {
                        scan.members.push(m);
                    }
                }
                WalRecordKind::State(h) => scan.hard_state = h,
                WalRecordKind::Snapshot { index, term } => scan.snapshot_marks.push((index, term)),
                WalRecordKind::Crc(_) => {}
                WalRecordKind::Entry(e) => {
                    let keep = scan.entries.partition_point(|x| x.index < e.index);
                    scan.replaced += scan.entries.len() - keep;
                    scan.entries.truncate(keep);
                    scan.entries.push(RawEntry {
                        index: e.index,
                        term: e.term,
                        entry_type: e.entry_type,
                        data: e.data,
                        file: file.clone(),
                        offset: rec.offset,
                    });
                }
                WalRecordKind::Unknown { record_type, len } => scan.notices.push(Notice::new(
                    NoticeKind::UnknownRecord,
                    file.clone(),
                    Some(rec.offset),
                    format!(
                        "a WAL record of unknown type {record_type} ({len} bytes); kept, not used"
                    ),
                )),
            }
        }
        match read.end {
            SegmentEnd::Clean => {}
            SegmentEnd::Torn(e) if i == last => {
                scan.notices.push(tail_notice(file, read.end_offset, &e))
            }
            SegmentEnd::Bad {
                error,
                at_tail: true,
            } if i == last && !strict => {
                scan.notices
                    .push(tail_notice(file, read.end_offset, &error))
            }
            SegmentEnd::Torn(e) | SegmentEnd::Bad { error: e, .. } => return Err(e),
        }
    }
    Ok(scan)
}

fn tail_notice(file: &str, offset: u64, e: &SwarmError) -> Notice {
    Notice::new(
        NoticeKind::TornTail,
        file,
        Some(offset),
        format!(
            "the last WAL segment ends in a record that does not check ({e}); reading stopped there, \
             as a restarting node would truncate it"
        ),
    )
}

fn load_snapshot(dir: &StateDir, file: &str) -> Result<SnapshotFile> {
    let bytes = dir.read_bounded(file, MAX_SNAPSHOT)?;
    parse_snapshot(file, &bytes)
}

fn check_snapshot_name(file: &str, s: &SnapshotFile, notices: &mut Vec<Notice>) {
    let name = file.rsplit('/').next().unwrap_or(file);
    if parse_snapshot_name(name) != Some((s.term, s.index)) {
        notices.push(Notice::new(
            NoticeKind::SnapshotMismatch,
            file,
            None,
            format!(
                "the file name does not match the snapshot's metadata (term {}, index {})",
                s.term, s.index
            ),
        ));
    }
}

fn check_snapshot_in_wal(
    index: u64,
    term: u64,
    file: &str,
    marks: &[(u64, u64)],
    notices: &mut Vec<Notice>,
) {
    if !marks.contains(&(index, term)) {
        notices.push(Notice::new(
            NoticeKind::SnapshotMismatch,
            file,
            None,
            format!(
                "the WAL has no snapshot record for index {index}, term {term}: the WAL and the snapshot \
                 may come from different copies (a node would refuse to start)"
            ),
        ));
    }
}

/// Entries after the snapshot must run from S+1 without holes.
fn check_gaps(
    entries: &[RawEntry],
    snap_index: u64,
    hs: &HardState,
    notices: &mut Vec<Notice>,
) -> Result<()> {
    let mut expected = snap_index.saturating_add(1);
    for e in entries.iter().filter(|e| e.index > snap_index) {
        if e.index != expected {
            let (a, b) = (expected, e.index.saturating_sub(1));
            return Err(SwarmError::Gap {
                what: format!(
                    "raft entries {a}..={b} are missing (snapshot index {snap_index}; the WAL continues at \
                     index {} in {} at byte {})",
                    e.index, e.file, e.offset
                ),
            });
        }
        expected = e.index.saturating_add(1);
    }
    let last = expected.saturating_sub(1);
    if hs.commit > last {
        notices.push(Notice::new(
            NoticeKind::Gap,
            "",
            None,
            format!(
                "the hard state's commit index {} is past the last entry held ({last}): committed entries \
                 are missing at the end of the WAL",
                hs.commit
            ),
        ));
    }
    Ok(())
}
