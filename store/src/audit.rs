//! The cluster's audit log as the store keeps it: records committed
//! through raft, so every manager holds the same ordered log, and the
//! signed tree heads over it.
//!
//! Records are kept as their canonical JSON lines (the Merkle leaves) in
//! shared chunks: cloning the cluster state (which readers do often)
//! copies a few pointers, not the log. The Merkle tree over the records is
//! a cache beside them, rebuilt from the lines when a snapshot is loaded.
//! See `docs/formats/audit.md` and decision D28.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use moat_audit::{
    Action, Actor, Details, Event, Frontier, Hash, MerkleLog, Outcome, Record, SignedTreeHead,
    Text, Timestamp, leaf_hash,
};
use moat_pki::NodeId;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::audit_segments::{AuditSegments, FillError};
use crate::model::Secret;

/// Why records could not be read from the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditReadError {
    /// This manager does not hold these records (inclusive).
    #[error("this manager lacks audit records {from} to {to}: {why}")]
    Missing {
        /// The first missing record.
        from: u64,
        /// The last missing record.
        to: u64,
        /// Why, and what to do.
        why: &'static str,
    },
    /// A segment could not be read or failed its checks (the message
    /// names the file and offset).
    #[error("{0}")]
    Store(String),
    /// These records were archived off the managers (`moat audit
    /// archive`, decision D48).
    #[error(
        "audit records 1 to {} were archived on {} (archive digest {}); read them from the archive: `moat audit verify --archive DIR`, `moat audit prove SEQ --archive DIR`",
        .mark.below - 1,
        crate::model::rfc3339(.mark.time),
        .mark.digest
    )]
    Archived {
        /// The archival.
        mark: ArchiveMark,
    },
}

/// An archival of the log's oldest records (decision D48): records below
/// `below` were written to an archive, verified, and dropped from every
/// manager's segments. Kept in the cluster state; the archival itself is
/// a record of the log (`audit.archive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMark {
    /// The first record kept: records `1 ..= below - 1` are archived.
    pub below: u64,
    /// When the archive was made (Unix seconds, the proposer's clock).
    pub time: i64,
    /// The archive's digest: `sha256:` and the hex SHA-256 of its
    /// `archive.json` (which names the records' file digest and the signed
    /// tree head at `below - 1`).
    pub digest: String,
}

impl ArchiveMark {
    /// Checks the mark's form.
    pub fn check(&self) -> Result<(), String> {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("an archive digest is `sha256:` and 64 lower-case hex digits".into());
        }
        if self.below < 2 {
            return Err("an archive holds at least record 1".into());
        }
        if moat_audit::Timestamp::from_unix(self.time).is_err() {
            return Err(format!("archive time {} is out of range", self.time));
        }
        Ok(())
    }
}

const MISSING_WHY: &str = "it installed a snapshot or was restored from a backup that starts after them, and has not fetched them from the other managers yet; read them from another manager, or from an earlier export or archive";

/// Checks that `segments` agree with `trail`, whose records up to `base`
/// should be in them (see [`AuditTrail::attach`]).
fn check_against(
    segments: &AuditSegments,
    base: u64,
    trail: &AuditTrail,
) -> Result<(), StoreError> {
    let have = segments.last_seq();
    let size = trail.size;
    if have < base
        && let Some((path, at)) = segments.torn()
    {
        // Records are fsynced before their entry counts as applied, so a
        // write cut short can only be of records the state does not hold.
        return Err(StoreError::corrupt(
            path,
            format!("byte {at} (audit record {})", have + 1),
            format!(
                "the segment ends in a cut-short frame, but the cluster state holds records up to {base} as written: the file was damaged"
            ),
        ));
    }
    if size > 0 && have >= size {
        match segments.leaf(size)? {
            Some(h) if h != trail.last => return Err(mismatch(segments, size)),
            _ => {}
        }
        let root = segments.with_tree(|t| t.and_then(|t| t.root(size).ok()));
        if root.is_some_and(|r| r != trail.frontier.root()) {
            return Err(mismatch(segments, size));
        }
    } else if have > 0 && have >= base && have < size {
        let index = usize::try_from(have - base).unwrap_or(usize::MAX);
        if let Some(line) = trail.pending.get(index) {
            let prev = Record::from_line(line.as_bytes()).map(|r| r.prev()).ok();
            if prev != Some(segments.last_leaf()) {
                return Err(mismatch(segments, have));
            }
        }
    }
    Ok(())
}

fn mismatch(segments: &AuditSegments, seq: u64) -> StoreError {
    let (path, offset) = segments
        .locate(seq)
        .unwrap_or_else(|| (segments.dir().to_path_buf(), 0));
    StoreError::corrupt(
        path,
        format!("byte {offset} (audit record {seq})"),
        "the record does not fit the audit log the cluster state commits to (its Merkle frontier): these segments are not this cluster's log as committed",
    )
}

/// Items per shared chunk.
const CHUNK: usize = 4096;

/// An append-only list in shared chunks: a clone shares every chunk, and
/// a push copies at most the last one (only while a clone holds it).
#[derive(Clone)]
pub struct Chunked<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> Chunked<T> {
    /// Appends `item`.
    pub fn push(&mut self, item: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(item),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(item);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }
}

impl<T> Chunked<T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `index` (from 0).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    /// The last item.
    pub fn last(&self) -> Option<&T> {
        self.chunks.last()?.last()
    }

    /// Items from `start` (from 0) to the end.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        let first = start / CHUNK;
        self.chunks
            .iter()
            .skip(first)
            .flat_map(|c| c.iter())
            .skip(start % CHUNK)
    }

    /// Every item.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.iter_from(0)
    }
}

impl<T: PartialEq> PartialEq for Chunked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for Chunked<T> {}

impl<T: fmt::Debug> fmt::Debug for Chunked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunked")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> Serialize for Chunked<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for Chunked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        let mut out = Self::default();
        for item in items {
            out.push(item);
        }
        Ok(out)
    }
}

/// An event recorded on a node while it could not reach the cluster log
/// (a failed unlock on a locked manager, tamper found at start), forwarded
/// later with its place in that node's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedEvent {
    /// Its sequence number in the node's journal.
    pub journal_seq: u64,
    /// When it happened (Unix seconds).
    pub time: i64,
    /// What happened.
    pub event: Event,
}

/// The audit log in the cluster state: what the log's integrity needs,
/// not its records (decision D45).
///
/// The state keeps the log's size, the last record's leaf hash (the next
/// record's `prev`), the Merkle frontier (one hash per set bit of the
/// size: the current root without the leaves), the roots at the last
/// [`ROOTS_KEPT`] sizes (to check a tree head proposed a little earlier),
/// the newest [`HEADS_KEPT`] signed tree heads, the audit key and the
/// forwarding positions. Its size does not grow with the log.
///
/// The records go to this manager's audit segments
/// ([`crate::audit_segments`]) when the state machine applies the entry
/// that made them: until then (and in a state used without a store, as in
/// tests and offline tools) they wait in `pending`, which is serialized, so
/// a snapshot taken of such a state loses nothing. Readers of a state
/// attached to the segments read records from them.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "TrailWire", into = "TrailWire")]
pub struct AuditTrail {
    size: u64,
    /// Leaf hash of the last record ([`Hash::ZERO`] when empty).
    last: Hash,
    frontier: Frontier,
    /// Roots at sizes `size - roots.len() + 1 ..= size`.
    roots: VecDeque<Hash>,
    /// The newest signed tree heads (at most [`HEADS_KEPT`]).
    heads: Chunked<SignedTreeHead>,
    /// Heads ever kept, those dropped from `heads` included.
    heads_total: u64,
    key: Option<Secret>,
    forwarded: BTreeMap<NodeId, u64>,
    /// Bytes of journal events each node had recorded on the day (Unix
    /// day number) it last forwarded: the cluster-wide daily budget
    /// ([`FORWARD_BYTES_PER_DAY`]), decided in the Raft log.
    forward_budget: BTreeMap<NodeId, DayBudget>,
    /// Records `size - pending.len() + 1 ..= size`, not yet in segments.
    pending: Chunked<String>,
    /// The newest archival: records below its `below` are not on the
    /// managers any more (decision D48).
    archived: Option<ArchiveMark>,
    /// This manager's audit segments, once the state machine attached them.
    segments: Option<Arc<AuditSegments>>,
    /// A Merkle tree over `pending` when it holds the whole log (a state
    /// without segments): clones share it.
    tree: Arc<Mutex<MerkleLog>>,
}

/// Roots kept for checking a proposed tree head: a head signed at most
/// this many records before its entry applies can be kept.
pub const ROOTS_KEPT: usize = 1024;

/// Signed tree heads kept in the state, the newest; older ones are in
/// earlier exports and archives.
pub const HEADS_KEPT: usize = 64;

#[derive(Serialize, Deserialize)]
struct TrailWire {
    /// Records not yet in segments, from `records_base + 1` (snapshots
    /// made before D45: every record, from 1).
    #[serde(default, skip_serializing_if = "Chunked::is_empty")]
    records: Chunked<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    records_base: u64,
    /// The log's size (absent before D45: the records' count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<Hash>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    frontier: Vec<Hash>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roots: Vec<Hash>,
    heads: Chunked<SignedTreeHead>,
    #[serde(default)]
    heads_total: Option<u64>,
    key: Option<Secret>,
    #[serde(default)]
    forwarded: BTreeMap<NodeId, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    forward_budget: BTreeMap<NodeId, DayBudget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archived: Option<ArchiveMark>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What one node's forwarded journal events used of a day's budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayBudget {
    /// The day, as Unix seconds divided by 86 400.
    pub day: i64,
    /// Bytes of records made from the node's events that day.
    pub bytes: u64,
}

impl TryFrom<TrailWire> for AuditTrail {
    type Error = String;

    fn try_from(w: TrailWire) -> Result<Self, String> {
        let mut heads = w.heads;
        let heads_total = w.heads_total.unwrap_or(heads.len() as u64);
        if heads.len() > HEADS_KEPT {
            let keep: Vec<_> = heads.iter_from(heads.len() - HEADS_KEPT).cloned().collect();
            heads = Chunked::default();
            for h in keep {
                heads.push(h);
            }
        }
        let mut t = Self {
            heads,
            heads_total,
            key: w.key,
            forwarded: w.forwarded,
            forward_budget: w.forward_budget,
            archived: w.archived,
            ..Self::default()
        };
        match w.size {
            None => {
                // Before D45 the state held every record: rebuild what it
                // keeps now, and leave the records pending for the
                // segments.
                if w.records_base != 0 {
                    return Err("audit records with a base but no size".into());
                }
                for line in w.records.iter() {
                    t.push_line(line.clone());
                }
            }
            Some(size) => {
                let frontier = Frontier::from_parts(size, w.frontier).ok_or_else(|| {
                    format!("the audit frontier does not fit a log of {size} records")
                })?;
                if w.records_base.checked_add(w.records.len() as u64) != Some(size)
                    && !w.records.is_empty()
                {
                    return Err(format!(
                        "{} pending audit records after record {} do not end at the log's size {size}",
                        w.records.len(),
                        w.records_base
                    ));
                }
                if w.roots.len() > ROOTS_KEPT || w.roots.len() as u64 > size {
                    return Err("too many kept audit roots".into());
                }
                t.size = size;
                t.last = w.last.unwrap_or(Hash::ZERO);
                t.frontier = frontier;
                t.roots = w.roots.into();
                t.pending = w.records;
            }
        }
        Ok(t)
    }
}

impl From<AuditTrail> for TrailWire {
    fn from(t: AuditTrail) -> Self {
        Self {
            records_base: t.size - t.pending.len() as u64,
            records: t.pending,
            size: Some(t.size),
            last: Some(t.last),
            frontier: t.frontier.hashes().to_vec(),
            roots: t.roots.into(),
            heads: t.heads,
            heads_total: Some(t.heads_total),
            key: t.key,
            forwarded: t.forwarded,
            forward_budget: t.forward_budget,
            archived: t.archived,
        }
    }
}

impl fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditTrail")
            .field("records", &self.size)
            .field("pending", &self.pending.len())
            .field("heads", &self.heads_total)
            .field("key", &self.key.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// Records in the log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The Merkle root of the whole log.
    pub fn current_root(&self) -> Hash {
        self.frontier.root()
    }

    /// Record `seq` (from 1), its canonical line; `None` if the log has no
    /// such record or this manager cannot read it (logged; see
    /// [`AuditTrail::try_record`]).
    pub fn record(&self, seq: u64) -> Option<String> {
        match self.try_record(seq) {
            Ok(line) => line,
            // Not an error: the records are in an archive (D48).
            Err(AuditReadError::Archived { .. }) => None,
            Err(e) => {
                tracing::error!(seq, error = %e, "an audit record could not be read");
                None
            }
        }
    }

    /// Record `seq` (from 1): `Ok(None)` if the log has no such record, an
    /// error if this manager lacks it or cannot read it.
    pub fn try_record(&self, seq: u64) -> Result<Option<String>, AuditReadError> {
        let mut out = None;
        if seq == 0 || seq > self.size {
            return Ok(None);
        }
        self.for_each_record(seq, seq, |_, line| {
            out = Some(line);
            Ok(false)
        })?;
        Ok(out)
    }

    /// Records `from` (from 1) to `to` (inclusive, capped at the log's
    /// size), at most `limit`.
    pub fn records(&self, from: u64, limit: usize) -> Result<Vec<String>, AuditReadError> {
        let from = from.max(1);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let to = from.saturating_add(limit as u64 - 1).min(self.size);
        self.for_each_record(from, to, |_, line| {
            out.push(line);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `f` with records `from ..= to` (capped at the log's size), in
    /// order, until it returns `Ok(false)`. Records this manager lacks are
    /// an error naming them, never skipped.
    pub fn for_each_record(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, String) -> Result<bool, AuditReadError>,
    ) -> Result<(), AuditReadError> {
        let from = from.max(1);
        let to = to.min(self.size);
        if from > to {
            return Ok(());
        }
        if let Some(mark) = self.archived.as_ref().filter(|m| from < m.below) {
            return Err(AuditReadError::Archived { mark: mark.clone() });
        }
        let base = self.size - self.pending.len() as u64;
        let mut next = from;
        if from <= base {
            let segments = self.segments.as_ref().ok_or(AuditReadError::Missing {
                from,
                to: base.min(to),
                why: "no audit segments are open here",
            })?;
            let end = to.min(base);
            let mut stopped = false;
            let mut gap = false;
            let mut reader_error = None;
            segments
                .read_range(from, end, |seq, line| {
                    if seq != next {
                        gap = true;
                        return Ok(false);
                    }
                    next += 1;
                    match f(seq, line) {
                        Ok(go) => {
                            stopped = !go;
                            Ok(go)
                        }
                        Err(e) => {
                            reader_error = Some(e);
                            Ok(false)
                        }
                    }
                })
                .map_err(|e| AuditReadError::Store(e.to_string()))?;
            if let Some(e) = reader_error {
                return Err(e);
            }
            if stopped {
                return Ok(());
            }
            if gap || next <= end {
                let (a, b) = segments
                    .gaps()
                    .into_iter()
                    .find(|(a, b)| *a <= next && next <= *b)
                    .unwrap_or((segments.last_seq().max(next - 1) + 1, base));
                return Err(AuditReadError::Missing {
                    from: a,
                    to: b.min(base),
                    why: MISSING_WHY,
                });
            }
        }
        for seq in next..=to {
            let index = usize::try_from(seq - base - 1).unwrap_or(usize::MAX);
            let Some(line) = self.pending.get(index) else {
                break;
            };
            if !f(seq, line.clone())? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The signed tree heads kept, oldest first (the newest
    /// [`HEADS_KEPT`]).
    pub fn heads(&self) -> impl Iterator<Item = &SignedTreeHead> {
        self.heads.iter()
    }

    /// Number of signed tree heads ever kept.
    pub fn head_count(&self) -> usize {
        usize::try_from(self.heads_total).unwrap_or(usize::MAX)
    }

    /// The newest signed tree head.
    pub fn last_head(&self) -> Option<&SignedTreeHead> {
        self.heads.last()
    }

    /// The cluster's audit key (the text form of its 32 bytes, hex).
    pub fn key(&self) -> Option<&Secret> {
        self.key.as_ref()
    }

    /// The last journal record forwarded by `node`.
    pub fn forwarded(&self, node: &NodeId) -> u64 {
        self.forwarded.get(node).copied().unwrap_or(0)
    }

    /// Runs `f` on the Merkle tree of the whole log (it may hold more
    /// records, a newer state's: ask it for sizes up to
    /// [`AuditTrail::size`] only). An error says which records this
    /// manager lacks to build it.
    pub fn with_tree<R>(&self, f: impl FnOnce(&MerkleLog) -> R) -> Result<R, AuditReadError> {
        let base = self.size - self.pending.len() as u64;
        if base == 0 {
            let mut tree = self.tree.lock().unwrap_or_else(|p| p.into_inner());
            let have = usize::try_from(tree.size()).unwrap_or(usize::MAX);
            for line in self.pending.iter_from(have) {
                tree.push_leaf(line.as_bytes());
            }
            return Ok(f(&tree));
        }
        let segments = self.segments.as_ref().ok_or(AuditReadError::Missing {
            from: 1,
            to: base,
            why: "no audit segments are open here",
        })?;
        // (`with_tree` holds the segments' lock: ask for their gaps first.)
        let (from, to) = segments
            .gaps()
            .first()
            .copied()
            .unwrap_or((segments.last_seq() + 1, base));
        segments.with_tree(|tree| {
            let Some(tree) = tree.filter(|t| t.size() >= base) else {
                return Err(AuditReadError::Missing {
                    from,
                    to: to.min(base),
                    why: MISSING_WHY,
                });
            };
            if self.pending.is_empty() {
                return Ok(f(tree));
            }
            let mut tree = tree.clone();
            tree.truncate(base);
            for line in self.pending.iter() {
                tree.push_leaf(line.as_bytes());
            }
            Ok(f(&tree))
        })
    }

    /// The Merkle root over the first `size` records: from the state for
    /// the current size and the last [`ROOTS_KEPT`], else from the tree.
    pub fn root(&self, size: u64) -> Result<Hash, AuditReadError> {
        if let Some(root) = self.kept_root(size) {
            return Ok(root);
        }
        self.with_tree(|t| t.root(size))?
            .map_err(|e| AuditReadError::Store(e.to_string()))
    }

    fn kept_root(&self, size: u64) -> Option<Hash> {
        if size == self.size {
            return Some(self.frontier.root());
        }
        let back = usize::try_from(self.size.checked_sub(size)?).ok()?;
        let index = self.roots.len().checked_sub(back + 1)?;
        self.roots.get(index).copied()
    }

    /// The newest archival, if records were archived (decision D48).
    pub fn archived(&self) -> Option<&ArchiveMark> {
        self.archived.as_ref()
    }

    /// The first record the managers still keep (1 unless records were
    /// archived).
    pub fn first_kept(&self) -> u64 {
        self.archived.as_ref().map_or(1, |m| m.below)
    }

    /// The records (inclusive ranges, oldest first) this manager should
    /// hold and does not: gaps left by an installed snapshot or a restore,
    /// never archived records. Empty without segments.
    pub fn missing(&self) -> Vec<(u64, u64)> {
        let Some(segments) = self.segments.as_ref() else {
            return Vec::new();
        };
        let base = self.size - self.pending.len() as u64;
        let floor = self.first_kept();
        let mut out: Vec<(u64, u64)> = segments
            .gaps()
            .into_iter()
            .filter(|(_, b)| *b >= floor)
            .map(|(a, b)| (a.max(floor), b.min(base)))
            .filter(|(a, b)| a <= b)
            .collect();
        let have = segments.last_seq();
        let from = (have + 1).max(floor);
        if from <= base {
            out.push((from, base));
        }
        out
    }

    /// Writes records fetched from another manager into a range this
    /// manager lacks ([`AuditTrail::missing`]), after checking that they
    /// are the records this state commits to (see
    /// [`AuditSegments::fill`]: SHA-256 links to a record held here or to
    /// the state's last leaf). Once nothing is missing, the Merkle tree
    /// is rebuilt and its root at this state's size must be the state's
    /// root (the frontier). Returns whether nothing is missing now.
    pub fn fill(&self, first: u64, lines: &[String]) -> Result<bool, FillError> {
        let segments = self.segments.as_ref().ok_or_else(|| {
            FillError::Store(StoreError::Invalid(
                "no audit segments are open here".into(),
            ))
        })?;
        let last = first.saturating_add(lines.len() as u64).saturating_sub(1);
        let base = self.size - self.pending.len() as u64;
        if first < self.first_kept() || last > base {
            return Err(FillError::Store(StoreError::Invalid(format!(
                "records {first} to {last} are not records this manager lacks (kept: {} to {base})",
                self.first_kept()
            ))));
        }
        // The link above the range when it ends at the last record written:
        // the state's own (its last leaf, or the first pending record's
        // link).
        let tail = if last == self.size {
            Some(self.last)
        } else if last == base {
            self.pending
                .get(0)
                .and_then(|l| Record::from_line(l.as_bytes()).ok())
                .map(|r| r.prev())
        } else {
            None
        };
        let whole = segments.fill(first, lines, tail)?;
        if whole && self.missing().is_empty() {
            let root = segments.with_tree(|t| t.and_then(|t| t.root(base).ok()));
            let expected = self.root(base).ok();
            if root.is_some() && root != expected {
                return Err(FillError::Store(mismatch(segments, base)));
            }
        }
        Ok(self.missing().is_empty())
    }

    /// Whether this manager holds every kept record but not the leaf
    /// hashes of the archived ones (it joined after an archival), so it
    /// cannot build the Merkle tree: [`AuditTrail::adopt_archived_leaves`]
    /// with hashes from another manager mends it.
    pub fn lacks_archived_leaves(&self) -> bool {
        let Some(segments) = self.segments.as_ref() else {
            return false;
        };
        self.first_kept() > 1
            && self.missing().is_empty()
            && segments.floor() < self.first_kept()
            && segments.with_tree(|t| t.is_none())
    }

    /// Installs the leaf hashes of archived records `1 ..= first_kept - 1`
    /// fetched from another manager, if, followed by the leaf hashes of
    /// the records this manager holds, they reproduce the log's root at
    /// its size (the frontier): otherwise [`FillError::Refused`] and
    /// nothing is written.
    pub fn adopt_archived_leaves(&self, leaves: &[Hash]) -> Result<bool, FillError> {
        let segments = self.segments.as_ref().ok_or_else(|| {
            FillError::Store(StoreError::Invalid(
                "no audit segments are open here".into(),
            ))
        })?;
        let kept = self.first_kept();
        if leaves.len() as u64 + 1 != kept {
            return Err(FillError::Refused(format!(
                "{} leaf hashes sent for the {} archived records",
                leaves.len(),
                kept - 1
            )));
        }
        let base = self.size - self.pending.len() as u64;
        let mut tree = MerkleLog::from_leaf_hashes(leaves.iter().copied());
        let mut broken = false;
        segments
            .read_range(kept, base, |seq, line| {
                if seq != tree.size() + 1 {
                    broken = true;
                    return Ok(false);
                }
                tree.push_leaf(line.as_bytes());
                Ok(true)
            })
            .map_err(FillError::Store)?;
        if broken || tree.size() != base {
            return Err(FillError::Store(StoreError::Invalid(format!(
                "this manager does not hold every record from {kept} to {base} yet"
            ))));
        }
        let root = tree
            .root(base)
            .map_err(|e| FillError::Store(StoreError::Invalid(e.to_string())))?;
        if Some(root) != self.kept_root(base) {
            return Err(FillError::Refused(format!(
                "the leaf hashes sent for records 1 to {} do not reproduce the log's root at size {base}",
                kept - 1
            )));
        }
        Ok(segments.install_leaves(leaves)?)
    }

    /// This manager's audit segments, if attached.
    pub fn segments(&self) -> Option<&Arc<AuditSegments>> {
        self.segments.as_ref()
    }

    /// Records made by applied entries and not yet in the segments: the
    /// sequence number of the first, and the lines.
    pub fn pending(&self) -> (u64, Vec<String>) {
        (
            self.size - self.pending.len() as u64 + 1,
            self.pending.iter().cloned().collect(),
        )
    }

    /// Attaches this manager's segments and checks they agree with the
    /// state (see [`AuditTrail::flush`]); pending records stay pending
    /// until the next flush.
    pub fn attach(&mut self, segments: Arc<AuditSegments>) -> Result<(), StoreError> {
        check_against(&segments, self.size - self.pending.len() as u64, self)?;
        self.segments = Some(segments);
        self.drop_archived()
    }

    /// Drops the segments of archived records (decision D48), if any are
    /// left: see [`AuditSegments::drop_below`].
    fn drop_archived(&self) -> Result<(), StoreError> {
        if let (Some(mark), Some(segments)) = (&self.archived, &self.segments)
            && segments.floor() < mark.below
        {
            let files = segments.drop_below(mark.below)?;
            if files > 0 {
                tracing::info!(files, below = mark.below, "archived audit segments dropped");
            }
        }
        Ok(())
    }

    /// Writes the pending records to the attached segments (fsynced before
    /// this returns) and forgets them. A record the segments already hold
    /// (an entry applied again after a restart) must be the same record:
    /// anything else is corruption, named by file and offset. Records the
    /// segments lack below the first pending one (a snapshot installed, a
    /// backup restored) leave a gap the segments report.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        match self.write_pending()? {
            Some(segments) => segments.sync(),
            None => Ok(()),
        }
    }

    /// [`AuditTrail::flush`] without the fsync: writes the pending records
    /// and returns the segments to [`AuditSegments::sync`] before they
    /// count as durable (`None`: nothing was written). The state machine
    /// calls this under its state's lock and syncs after releasing it, so
    /// readers of the state do not wait on the disk (D49).
    pub fn write_pending(&mut self) -> Result<Option<Arc<AuditSegments>>, StoreError> {
        let Some(segments) = self.segments.clone() else {
            return Ok(None);
        };
        self.drop_archived()?;
        if self.pending.is_empty() {
            return Ok(None);
        }
        let (first, lines) = self.pending();
        let have = segments.last_seq();
        let mut skip = 0usize;
        for (i, line) in lines.iter().enumerate() {
            let seq = first + i as u64;
            if seq > have {
                break;
            }
            let held = segments.leaf(seq)?;
            if let Some(held) = held
                && held != leaf_hash(line.as_bytes())
            {
                return Err(mismatch(&segments, seq));
            }
            skip = i + 1;
        }
        segments.append_unsynced(first + skip as u64, &lines[skip..])?;
        self.pending = Chunked::default();
        Ok(Some(segments))
    }

    /// Appends `event`, which happened at `time` (Unix seconds); returns
    /// its sequence number. Deterministic: every manager builds the same
    /// record.
    pub(crate) fn append(&mut self, time: i64, event: &Event) -> Result<u64, String> {
        let seq = self.size() + 1;
        let time = Timestamp::from_unix(time).map_err(|e| e.to_string())?;
        let record = Record::new(seq, self.last, time, event.clone()).map_err(|e| e.to_string())?;
        let line = String::from_utf8(record.to_line()).map_err(|e| e.to_string())?;
        self.push_line(line);
        Ok(seq)
    }

    fn push_line(&mut self, line: String) {
        self.last = leaf_hash(line.as_bytes());
        self.frontier.push(self.last);
        self.size += 1;
        self.roots.push_back(self.frontier.root());
        while self.roots.len() > ROOTS_KEPT {
            self.roots.pop_front();
        }
        self.pending.push(line);
    }

    /// Keeps a signed tree head, if it is for a size the log has reached
    /// and its root is the log's root at that size. (Its signature was
    /// checked by the manager that proposed it; verifiers check it again.)
    pub(crate) fn add_head(&mut self, head: &SignedTreeHead) -> Result<(), String> {
        if head.size == 0 || head.size > self.size() {
            return Err(format!(
                "a tree head for size {} does not fit a log of {} records",
                head.size,
                self.size()
            ));
        }
        if let Some(last) = self.heads.last()
            && head.size < last.size
        {
            return Err(format!(
                "a tree head for size {} is older than the newest, at size {}",
                head.size, last.size
            ));
        }
        // Decided from the state alone, so every manager decides the same.
        let root = self.kept_root(head.size).ok_or_else(|| {
            format!(
                "a tree head for size {} is more than {ROOTS_KEPT} records behind the log ({}): sign a newer one",
                head.size,
                self.size()
            )
        })?;
        if root != head.root {
            return Err(format!(
                "the tree head for size {} does not match the log's root",
                head.size
            ));
        }
        if self.heads.len() >= HEADS_KEPT {
            let keep: Vec<_> = self.heads.iter_from(1).cloned().collect();
            self.heads = Chunked::default();
            for h in keep {
                self.heads.push(h);
            }
        }
        self.heads.push(head.clone());
        self.heads_total += 1;
        Ok(())
    }

    /// Marks records below `mark.below` as archived (decision D48): they
    /// are read from the archive from now on, and every manager drops
    /// their segments. Refused when it archives nothing new, or records
    /// the log does not have.
    pub(crate) fn archive(&mut self, mark: &ArchiveMark) -> Result<(), String> {
        mark.check()?;
        if mark.below - 1 > self.size {
            return Err(format!(
                "records up to {} cannot be archived: the log has {}",
                mark.below - 1,
                self.size
            ));
        }
        if mark.below <= self.first_kept() {
            return Err(format!(
                "records below {} were archived already",
                self.first_kept()
            ));
        }
        self.archived = Some(mark.clone());
        Ok(())
    }

    /// Sets the audit key, once.
    pub(crate) fn set_key(&mut self, key: &Secret) -> Result<(), String> {
        if self.key.is_some() {
            return Err("the cluster already has an audit key".into());
        }
        self.key = Some(key.clone());
        Ok(())
    }

    /// Appends the events `node` forwards from its journal that were not
    /// forwarded before (so a retried forward records nothing twice).
    ///
    /// A node speaks only for itself: each event is recorded as done by
    /// `node` to `node`, at the proposer's time `now` (the node's claimed
    /// time and actor stay as details), and marked `forwarded=journal`.
    /// An event whose action a journal may not hold
    /// ([`JOURNAL_ACTIONS`]), or that is larger than
    /// [`MAX_FORWARDED_EVENT_BYTES`], is recorded as an
    /// [`Action::AUDIT_FORWARD`] record, denied, naming what was claimed.
    /// Records made from one node's events count against
    /// [`FORWARD_BYTES_PER_DAY`]; past it the rest stays in the node's
    /// journal and goes the next day (an error, changing nothing, if not
    /// one event fits).
    ///
    /// `now` = 0 (entries written before these rules) records the events
    /// as sent, so old logs replay to the same state.
    pub(crate) fn forward(
        &mut self,
        node: NodeId,
        events: &[ForwardedEvent],
        now: i64,
    ) -> Result<(), String> {
        let mut done = self.forwarded(&node);
        let day = now.div_euclid(86_400);
        let mut budget = self
            .forward_budget
            .get(&node)
            .copied()
            .filter(|b| b.day == day)
            .unwrap_or(DayBudget { day, bytes: 0 });
        let mut over = false;
        for e in events {
            if e.journal_seq <= done {
                continue;
            }
            if now == 0 {
                self.append(e.time, &e.event)?;
            } else {
                let event = journal_record(node, e);
                let bytes = serde_json::to_vec(&event).map_or(u64::MAX, |v| v.len() as u64);
                if budget.bytes.saturating_add(bytes) > FORWARD_BYTES_PER_DAY {
                    over = true;
                    break;
                }
                self.append(now, &event)?;
                budget.bytes += bytes;
            }
            done = e.journal_seq;
        }
        if over && done == self.forwarded(&node) {
            // Nothing recorded: the state stays as it was.
            return Err(format!(
                "node {node} has used its budget of {FORWARD_BYTES_PER_DAY} bytes of journal events for today (UTC); the rest stays in its journal and is forwarded tomorrow"
            ));
        }
        self.forwarded.insert(node, done);
        if now != 0 {
            self.forward_budget.insert(node, budget);
        }
        Ok(())
    }
}

/// The actions a node's own journal may hold (what `moat-node`'s journal
/// records map to); anything else a node forwards is recorded as refused.
pub const JOURNAL_ACTIONS: &[&str] = &[
    "node.unlock",
    "node.unlock_share",
    "tamper.detect",
    "node.autolock_enabled",
    "node.unlock_key_rotated",
    "node.autolock_disabled",
    "node.own_key_restored",
    "dek.rotate",
    "backup.create",
    "node.force_new_cluster",
];

/// The largest forwarded event (its JSON) recorded as sent.
pub const MAX_FORWARDED_EVENT_BYTES: usize = 4 * 1024;

/// Bytes of records one node's journal may add to the cluster log per
/// day (UTC), for the whole cluster.
pub const FORWARD_BYTES_PER_DAY: u64 = 1024 * 1024;

/// The record made of a forwarded journal event: by and about `node`,
/// marked as forwarded, with what the node claimed kept as details; or a
/// denied [`Action::AUDIT_FORWARD`] record if the event cannot be taken.
fn journal_record(node: NodeId, e: &ForwardedEvent) -> Event {
    let claimed = &e.event;
    let size = serde_json::to_vec(claimed).map_or(usize::MAX, |v| v.len());
    let why = if size > MAX_FORWARDED_EVENT_BYTES {
        Some(format!(
            "the event is {size} bytes; a journal event may be at most {MAX_FORWARDED_EVENT_BYTES}"
        ))
    } else if !JOURNAL_ACTIONS.contains(&claimed.action.as_str()) {
        Some(format!(
            "a node's journal may not hold the action {}",
            claimed.action.as_str()
        ))
    } else {
        None
    };
    let mut details = Details::new();
    let mut accepted = why.is_none();
    if accepted {
        details = claimed.details.clone();
        // The marks are the manager's: they replace any detail of the
        // same name the node sent.
        for (key, value) in claimed_facts(e) {
            if details.insert(key, &value).is_err() {
                accepted = false;
                details = Details::new();
                break;
            }
        }
    }
    let target = Text::new("target", &format!("node:{node}")).unwrap_or_default();
    if accepted {
        return Event {
            node,
            actor: Actor::node(node),
            action: claimed.action.clone(),
            target,
            outcome: claimed.outcome.clone(),
            details,
        };
    }
    let why = why.unwrap_or_else(|| {
        "the event's details leave no room for the forwarding marks".to_string()
    });
    for (key, value) in claimed_facts(e) {
        let _ = details.insert(key, &value);
    }
    let _ = details.insert("claimed_action", claimed.action.as_str());
    Event {
        node,
        actor: Actor::node(node),
        action: Action::AUDIT_FORWARD,
        target,
        outcome: Outcome::Denied {
            reason: Text::new("reason", &record_text(&why)).unwrap_or_default(),
        },
        details,
    }
}

/// The marks every record made from a journal event carries.
fn claimed_facts(e: &ForwardedEvent) -> [(&'static str, String); 4] {
    let time = Timestamp::from_unix(e.time).map_or_else(|_| e.time.to_string(), |t| t.to_string());
    [
        ("forwarded", "journal".to_string()),
        ("journal_seq", e.journal_seq.to_string()),
        ("claimed_time", time),
        ("claimed_actor", e.event.actor.as_str().to_string()),
    ]
}

/// Makes `reason` fit a record's free text: control and bidirectional
/// characters become spaces, and it is cut to 1000 bytes.
pub fn record_text(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(1000));
    for c in reason.chars() {
        let c = if c.is_control()
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
        {
            ' '
        } else {
            c
        };
        if out.len() + c.len_utf8() > 1000 {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_audit::{Action, Actor, Details, Outcome, Text};

    fn node() -> NodeId {
        "0123456789abcdefghijklmn00".parse().unwrap()
    }

    fn event(target: &str) -> Event {
        Event {
            node: node(),
            actor: Actor::local_operator(),
            action: Action::POLICY_UPDATE,
            target: Text::new("target", target).unwrap(),
            outcome: Outcome::Success,
            details: Details::new(),
        }
    }

    #[test]
    fn appended_records_link_and_parse() {
        let mut t = AuditTrail::default();
        for i in 0..5000 {
            assert_eq!(
                t.append(1_700_000_000 + i, &event(&format!("t{i}"))),
                Ok(i as u64 + 1)
            );
        }
        let mut prev = Hash::ZERO;
        for (i, line) in t.records(1, usize::MAX).unwrap().iter().enumerate() {
            let r = Record::from_line(line.as_bytes()).unwrap();
            assert_eq!(r.seq(), i as u64 + 1);
            assert_eq!(r.prev(), prev);
            prev = r.leaf_hash();
        }
        assert_eq!(t.records(4097, 10_000).unwrap().len(), 904);
        assert!(t.record(4097).unwrap().starts_with("{\"seq\":4097,"));
        assert_eq!(t.record(0), None);
        assert_eq!(t.record(5001), None);
    }

    #[test]
    fn clones_share_chunks_and_diverge_safely() {
        let mut a = AuditTrail::default();
        a.append(1_700_000_000, &event("one")).unwrap();
        let b = a.clone();
        a.append(1_700_000_001, &event("two")).unwrap();
        assert_eq!(a.size(), 2);
        assert_eq!(b.size(), 1);
        // The shared tree is fine for both.
        assert_eq!(a.root(1).unwrap(), b.root(1).unwrap());
        assert_ne!(a.root(2).unwrap(), a.root(1).unwrap());
    }

    #[test]
    fn serde_round_trip_rebuilds_the_link() {
        let mut a = AuditTrail::default();
        a.append(1_700_000_000, &event("one")).unwrap();
        a.set_key(&Secret::new("k")).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        let mut b: AuditTrail = serde_json::from_str(&json).unwrap();
        // No `PartialEq` (the trail holds the audit key): compare the
        // serialized form, key included.
        assert_eq!(serde_json::to_string(&b).unwrap(), json);
        b.append(1_700_000_001, &event("two")).unwrap();
        a.append(1_700_000_001, &event("two")).unwrap();
        assert_eq!(a.record(2), b.record(2));
        assert_eq!(a.root(2).unwrap(), b.root(2).unwrap());
        assert!(!format!("{a:?}").contains('k') || !format!("{a:?}").contains("\"k\""));
    }

    fn journal(seq: u64, time: i64, action: Action, actor: Actor, target: &str) -> ForwardedEvent {
        ForwardedEvent {
            journal_seq: seq,
            time,
            event: Event {
                actor,
                action,
                ..event(target)
            },
        }
    }

    fn last_record(t: &AuditTrail) -> Record {
        Record::from_line(t.record(t.size()).unwrap().as_bytes()).unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_forged_journal_event_is_recorded_as_refused_by_the_node_now() {
        // The review's reproduction: a worker's journal line claiming an
        // operator removed a node, a year back.
        let mut t = AuditTrail::default();
        let forged = journal(
            1,
            NOW - 365 * 86_400,
            Action::NODE_REMOVE,
            Actor::local_operator(),
            "node:someone-else",
        );
        t.forward(node(), &[forged], NOW).unwrap();
        let r = last_record(&t);
        let e = r.event();
        assert_eq!(e.action, Action::AUDIT_FORWARD);
        assert_eq!(e.outcome.as_str(), "denied");
        assert!(
            e.outcome.reason().contains("node.remove"),
            "{:?}",
            e.outcome
        );
        assert_eq!(e.actor, Actor::node(node()));
        assert_eq!(e.target.as_str(), format!("node:{}", node()));
        assert_eq!(r.time().unix_seconds(), NOW);
        assert_eq!(e.details.get("forwarded"), Some("journal"));
        assert_eq!(e.details.get("claimed_action"), Some("node.remove"));
        assert_eq!(e.details.get("claimed_actor"), Some("operator:local"));
        assert_eq!(t.forwarded(&node()), 1);
    }

    #[test]
    fn an_allowed_journal_event_speaks_only_for_its_node() {
        let mut t = AuditTrail::default();
        let claimed = NOW - 86_400;
        let ev = journal(
            7,
            claimed,
            Action::NODE_UNLOCK,
            Actor::local_operator(),
            "node:x",
        );
        t.forward(node(), &[ev], NOW).unwrap();
        let r = last_record(&t);
        let e = r.event();
        assert_eq!(e.action, Action::NODE_UNLOCK);
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.actor, Actor::node(node()));
        assert_eq!(e.target.as_str(), format!("node:{}", node()));
        assert_eq!(
            r.time().unix_seconds(),
            NOW,
            "the manager's clock, not the claim"
        );
        let claimed_text = Timestamp::from_unix(claimed).unwrap().to_string();
        assert_eq!(e.details.get("claimed_time"), Some(claimed_text.as_str()));
        assert_eq!(e.details.get("claimed_actor"), Some("operator:local"));
        assert_eq!(e.details.get("journal_seq"), Some("7"));
        assert_eq!(t.forwarded(&node()), 7);
    }

    #[test]
    fn the_forwarding_marks_replace_what_the_node_claims_under_their_names() {
        let mut t = AuditTrail::default();
        let mut ev = journal(
            3,
            NOW - 10,
            Action::TAMPER_DETECT,
            Actor::node(node()),
            "node:x",
        );
        ev.event.details.insert("journal_seq", "3").unwrap();
        ev.event
            .details
            .insert("claimed_actor", "operator:local")
            .unwrap();
        ev.event.details.insert("file", "journal.jsonl").unwrap();
        t.forward(node(), &[ev], NOW).unwrap();
        let e = last_record(&t).event().clone();
        assert_eq!(e.action, Action::TAMPER_DETECT, "{:?}", e.outcome);
        assert_eq!(e.details.get("journal_seq"), Some("3"));
        assert_eq!(
            e.details.get("claimed_actor"),
            Some(format!("node:{}", node()).as_str())
        );
        assert_eq!(e.details.get("file"), Some("journal.jsonl"));
    }

    #[test]
    fn an_oversized_journal_event_is_refused() {
        let mut t = AuditTrail::default();
        let mut ev = journal(1, NOW, Action::NODE_UNLOCK, Actor::node(node()), "node:x");
        for i in 0..8 {
            ev.event
                .details
                .insert(&format!("pad{i}"), &"x".repeat(1000))
                .unwrap();
        }
        t.forward(node(), &[ev], NOW).unwrap();
        let e = last_record(&t).event().clone();
        assert_eq!(e.action, Action::AUDIT_FORWARD);
        assert!(
            e.outcome.reason().contains("at most 4096"),
            "{:?}",
            e.outcome
        );
        assert_eq!(e.details.get("pad0"), None, "the padding is not recorded");
    }

    #[test]
    fn each_node_has_a_daily_budget() {
        let mut t = AuditTrail::default();
        let big = |seq| {
            let mut ev = journal(seq, NOW, Action::DEK_ROTATE, Actor::node(node()), "node:x");
            ev.event
                .details
                .insert("pad", &"y".repeat(MAX_TEXT))
                .unwrap();
            ev
        };
        const MAX_TEXT: usize = 1000;
        let events: Vec<_> = (1..=2000).map(big).collect();
        // One proposal's worth at a time, as a node sends them.
        let mut refused = None;
        for batch in events.chunks(100) {
            if let Err(e) = t.forward(node(), batch, NOW) {
                refused = Some(e);
                break;
            }
        }
        let refused = refused.expect("the budget ends forwarding within the day");
        assert!(refused.contains("budget"), "{refused}");
        let done = t.forwarded(&node());
        assert!(done > 500 && done < 2000, "{done}");
        // The budget counts events; a record adds its seq, link and time.
        let bytes: usize = t
            .records(1, usize::MAX)
            .unwrap()
            .iter()
            .map(String::len)
            .sum();
        assert!(bytes as u64 <= FORWARD_BYTES_PER_DAY * 5 / 4, "{bytes}");
        // Refused changes nothing; the next day the rest goes.
        let size = t.size();
        assert!(
            t.forward(node(), &events[done as usize..], NOW + 60)
                .is_err()
        );
        assert_eq!(t.size(), size);
        t.forward(node(), &events[done as usize..], NOW + 86_400)
            .unwrap();
        assert!(t.forwarded(&node()) > done);
        // Another node's budget is its own.
        let other = NodeId::generate();
        t.forward(other, &events[..1], NOW).unwrap();
        assert_eq!(t.forwarded(&other), 1);
    }

    #[test]
    fn forwarding_twice_records_once() {
        let mut t = AuditTrail::default();
        let evs: Vec<ForwardedEvent> = (1..=3)
            .map(|s| ForwardedEvent {
                journal_seq: s,
                time: 1_700_000_000,
                event: event("x"),
            })
            .collect();
        t.forward(node(), &evs[..2], 0).unwrap();
        t.forward(node(), &evs, 0).unwrap();
        assert_eq!(t.size(), 3);
        assert_eq!(t.forwarded(&node()), 3);
    }

    #[test]
    fn an_audited_change_commits_with_its_record() {
        use crate::model::{ClusterState, Command, Policy, Response};
        let mut s = ClusterState::default();
        let audited = |change: Command, time: i64| Command::Audited {
            change: Box::new(change),
            time,
            event: event("policy"),
        };
        // A rejected change is recorded as failed, with the reason.
        let r = s.apply(&audited(
            Command::RevokeToken { id: "nope".into() },
            1_700_000_000,
        ));
        assert!(matches!(r, Response::Rejected(_)));
        let rec = Record::from_line(s.audit.record(1).unwrap().as_bytes()).unwrap();
        assert_eq!(rec.event().outcome.as_str(), "failed");
        assert!(rec.event().outcome.reason().contains("no join token nope"));
        // An applied one is recorded as a success, in the same entry.
        let policy = Policy {
            token_ttl_secs: Some(60),
            ..Policy::default()
        };
        let r = s.apply(&audited(Command::SetPolicy(policy.clone()), 1_700_000_001));
        assert_eq!(r, Response::Applied);
        assert_eq!(s.policy, policy);
        let rec = Record::from_line(s.audit.record(2).unwrap().as_bytes()).unwrap();
        assert_eq!(rec.event().outcome, Outcome::Success);
        // A record that cannot be built keeps the change out too.
        let r = s.apply(&audited(Command::SetPolicy(Policy::default()), -5));
        assert!(matches!(r, Response::Rejected(_)));
        assert_eq!(s.policy, policy);
        assert_eq!(s.audit.size(), 2);
    }

    #[test]
    fn a_store_dump_hides_the_audit_key_and_a_rotating_root_key() {
        use crate::model::{CaMaterial, CaRotation, ClusterState};
        let mut s = ClusterState::default();
        s.audit.set_key(&Secret::new("auditkeysecret")).unwrap();
        s.ca_rotation = Some(CaRotation {
            id: 1,
            new_ca: CaMaterial {
                root_cert_pem: "cert".into(),
                root_key_pkcs8: Secret::new("rootkeysecret"),
            },
            cross_signed_pem: "cross".into(),
            started_at: 0,
            force: false,
            external: false,
        });
        let hidden = s.to_dump_json(false).to_string();
        assert!(
            !hidden.contains("auditkeysecret") && !hidden.contains("rootkeysecret"),
            "{hidden}"
        );
        let shown = s.to_dump_json(true).to_string();
        assert!(shown.contains("auditkeysecret") && shown.contains("rootkeysecret"));
    }

    #[test]
    fn a_proposal_sent_twice_is_applied_once() {
        use crate::model::{ClusterState, Command, Response};
        let mut s = ClusterState::default();
        let once = |id: u128, target: &str| Command::Once {
            id,
            command: Box::new(Command::Audit {
                time: 1_700_000_000,
                event: event(target),
            }),
        };
        assert_eq!(s.apply(&once(7, "a")), Response::Applied);
        assert_eq!(s.apply(&once(7, "a")), Response::Applied);
        assert_eq!(s.audit.size(), 1);
        assert_eq!(s.apply(&once(8, "a")), Response::Applied);
        assert_eq!(s.audit.size(), 2);
        // A repeat gets the first answer, a refusal included.
        let bad = Command::Once {
            id: 9,
            command: Box::new(Command::RevokeToken { id: "nope".into() }),
        };
        let first = s.apply(&bad);
        assert!(matches!(first, Response::Rejected(_)));
        assert_eq!(s.apply(&bad), first);
        // Only the newest ids are kept.
        for id in 100..(100 + crate::model::MAX_RECENT_PROPOSALS as u128) {
            s.apply(&once(id, "b"));
        }
        assert_eq!(s.recent_proposals.len(), crate::model::MAX_RECENT_PROPOSALS);
        let size = s.audit.size();
        s.apply(&once(7, "a"));
        assert_eq!(
            s.audit.size(),
            size + 1,
            "an id forgotten long ago applies again"
        );
    }

    #[test]
    fn a_state_from_before_d45_keeps_its_records_pending() {
        let mut a = AuditTrail::default();
        for i in 0..300 {
            a.append(1_700_000_000 + i, &event(&format!("t{i}")))
                .unwrap();
        }
        let lines = a.records(1, usize::MAX).unwrap();
        // The old form: every record, the heads, the key.
        let old = serde_json::json!({ "records": lines, "heads": [], "key": null });
        let b: AuditTrail = serde_json::from_value(old).unwrap();
        assert_eq!(b.size(), 300);
        assert_eq!(b.current_root(), a.current_root());
        assert_eq!(b.pending().1.len(), 300, "waiting for the segments");
        assert_eq!(b.root(250).unwrap(), a.root(250).unwrap());
        // The new form keeps no record once they are in segments, and a
        // frontier that does not fit its size is refused.
        let mut wire = serde_json::to_value(&b).unwrap();
        assert_eq!(wire["size"], 300);
        wire["frontier"] = serde_json::json!([]);
        assert!(serde_json::from_value::<AuditTrail>(wire).is_err());
    }

    #[test]
    fn a_head_is_checked_against_a_kept_root() {
        let mut t = AuditTrail::default();
        for i in 0..(ROOTS_KEPT as i64 + 10) {
            t.append(1_700_000_000 + i, &event("x")).unwrap();
        }
        let head = |size: u64, root: Hash| SignedTreeHead {
            size,
            root,
            time: Timestamp::from_unix(1_700_000_000).unwrap(),
            signer: node(),
            signature: Vec::new(),
            cert_chain_pem: String::new(),
        };
        let old = t.size() - ROOTS_KEPT as u64 - 1;
        let root_old = t.with_tree(|tr| tr.root(old).unwrap()).unwrap();
        let err = t.add_head(&head(old, root_old)).unwrap_err();
        assert!(err.contains("behind"), "{err}");
        let recent = t.size() - 5;
        let root = t.root(recent).unwrap();
        assert_eq!(root, t.with_tree(|tr| tr.root(recent).unwrap()).unwrap());
        t.add_head(&head(recent, root)).unwrap();
        assert!(t.add_head(&head(t.size(), Hash::ZERO)).is_err());
    }

    #[test]
    fn key_is_set_once() {
        let mut t = AuditTrail::default();
        t.set_key(&Secret::new("a")).unwrap();
        assert!(t.set_key(&Secret::new("b")).is_err());
        assert_eq!(t.key().unwrap().expose_secret(), "a");
    }

    #[test]
    fn record_text_strips_controls_and_caps_length() {
        assert_eq!(record_text("a\nb\u{202e}c"), "a b c");
        assert_eq!(record_text(&"é".repeat(800)).len(), 1000);
    }
}
