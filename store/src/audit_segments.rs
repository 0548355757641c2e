//! The audit log's records on this manager's disk: append-only, encrypted
//! segment files written as the records commit (decision D45).
//!
//! The cluster state keeps only what the log's integrity needs (its size,
//! Merkle frontier and last leaf, see [`crate::audit`]); the records
//! themselves live here, one directory per manager, sealed with the
//! manager's DEK exactly as the Raft log is. Every manager applies the same
//! entries, so every manager writes the same records, each under its own
//! key.
//!
//! # Files (`<store>/snapshots/audit/`, mode 0700, files 0600)
//!
//! `audit-<first sequence number, 20 digits>.seg`, each:
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0 | 8 | magic `MOATAUD1` |
//! | 8 | 8 | sequence number of the first record (big-endian), = the name |
//! | 16 | … | frames |
//!
//! A frame, all integers big-endian:
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0  | 4 | `len`: bytes that follow this field (`12 + n`), at most [`MAX_AUDIT_FRAME_LEN`] |
//! | 4  | 4 | CRC-32 (IEEE) over bytes `8 .. 4 + len` |
//! | 8  | 8 | the record's sequence number |
//! | 16 | n | sealed payload |
//!
//! The payload is the record's canonical JSON line (the Merkle leaf),
//! sealed by [`RecordCipher::seal`] with [`FileKind::AuditSegment`] and
//! position = the sequence number (bytes 8..16 of the frame): a record
//! moved to another place, or copied from another manager (its node id is
//! in the AAD), fails authentication. Inside, the line must parse as a
//! record with that sequence number, and its `prev` link must be the leaf
//! hash of the record before it.
//!
//! Records within a segment are consecutive; the next segment starts at
//! the next sequence number, except after a gap this manager knows it has
//! (records it never received: a snapshot installed or a backup restored,
//! see [`AuditSegments::gaps`]). A new segment starts when the current one
//! holds [`DEFAULT_AUDIT_SEGMENT_BYTES`] or more.
//!
//! # Durability and crash safety
//!
//! [`AuditSegments::append`] writes every frame of a call, then
//! `fdatasync`s the segment before it returns; a new segment is created
//! only after the previous one is fsynced, and the directory is fsynced
//! after it. At open, a bad frame at the end of the **last** segment is a
//! torn write (the file ends inside it, its CRC fails and it ends exactly
//! at the end of the file, or every byte after its start is zero): it is
//! cut off with a warning. Anything else — a CRC failure elsewhere, any
//! authentication failure, a sequence number out of place, a broken link —
//! is [`StoreError::Corrupt`] naming the file and byte offset. Whether the
//! records that remain agree with the cluster state (the frontier) is
//! checked by the state machine when it opens (see `sm.rs`).
//!
//! # Memory
//!
//! For every record present this keeps its byte offset (8 bytes) and its
//! Merkle leaf hash (32 bytes, plus about 0.25 bytes of cached subtree
//! hashes): about 40 bytes per record, 400 MB for 10 million. Record text
//! is read from disk (and decrypted) on demand.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use moat_audit::{Hash, MerkleLog, Record, leaf_hash};

use crate::fsutil::{create_dir, read_limited, sync_dir};
use crate::{FileKind, RecordCipher, StoreError};

/// The directory of the audit segments, inside the state machine's
/// (snapshot) directory.
pub const AUDIT_DIR: &str = "audit";

/// The largest frame (its `len` field) written or read: 1 MiB, far above a
/// sealed record ([`moat_audit::MAX_RECORD_BYTES`] is 64 KiB). A frame
/// claiming more is corrupt, found before anything is allocated for it.
pub const MAX_AUDIT_FRAME_LEN: u32 = 1 << 20;

/// The size after which a new segment starts: 16 MiB (about 40,000
/// records). Archiving drops whole segments.
pub const DEFAULT_AUDIT_SEGMENT_BYTES: u64 = 16 << 20;

/// The largest segment file read at open (a segment is at most
/// [`DEFAULT_AUDIT_SEGMENT_BYTES`] plus one frame; anything far larger was
/// not written by moat).
const MAX_SEGMENT_FILE: u64 = 1 << 30;

const MAGIC: &[u8; 8] = b"MOATAUD1";
const HEADER_LEN: u64 = 16;
const FRAME_HEAD: usize = 16;

/// One record found by [`scan_segment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The byte offset of its frame in the file.
    pub offset: u64,
    /// Its Merkle leaf hash.
    pub leaf: Hash,
}

/// What [`scan_segment`] found in a segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The sequence number the header names (the first record's).
    pub first: u64,
    /// The records, in order.
    pub records: Vec<ScannedRecord>,
    /// Where a torn last frame starts, if the bytes end in one (see the
    /// module docs); the caller may cut it off only in the last segment.
    pub torn_at: Option<u64>,
}

/// Where and why a segment's bytes are not a valid segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset in the file.
    pub at: u64,
    /// What is wrong.
    pub reason: String,
}

/// Reads a segment's bytes: checks the header, every frame's CRC, sequence
/// number, authentication and record (see the module docs). `prev`: the
/// leaf hash of the record before the first one, when known (`None` at
/// the start of the log or after a gap). Never panics, whatever the bytes.
pub fn scan_segment(
    bytes: &[u8],
    cipher: &RecordCipher,
    prev: Option<Hash>,
) -> Result<Scan, Damage> {
    let damage = |at: usize, reason: String| Damage {
        at: at as u64,
        reason,
    };
    if bytes.len() < HEADER_LEN as usize {
        if MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Ok(Scan {
                first: 0,
                records: Vec::new(),
                torn_at: Some(0),
            });
        }
        return Err(damage(0, "not an audit segment (bad magic)".into()));
    }
    if &bytes[..8] != MAGIC {
        return Err(damage(0, "not an audit segment (bad magic)".into()));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[8..16]);
    let first = u64::from_be_bytes(first);
    if first == 0 {
        return Err(damage(8, "the first sequence number is 0".into()));
    }
    let mut prev = prev;
    let mut records = Vec::new();
    let mut pos = HEADER_LEN as usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let torn = || Scan {
            first,
            records: Vec::new(),
            torn_at: Some(pos as u64),
        };
        let zero_tail = rest.iter().all(|b| *b == 0);
        if rest.len() < 4 || zero_tail {
            let mut scan = torn();
            scan.records = records;
            return Ok(scan);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if !(12..=MAX_AUDIT_FRAME_LEN).contains(&len) {
            return Err(damage(
                pos,
                format!("frame length {len} is outside 12..={MAX_AUDIT_FRAME_LEN}"),
            ));
        }
        let end = 4 + len as usize;
        if rest.len() < end {
            // The file ends inside the frame.
            let mut scan = torn();
            scan.records = records;
            return Ok(scan);
        }
        let frame = &rest[..end];
        let crc = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if crc32fast::hash(&frame[8..]) != crc {
            if rest.len() == end {
                let mut scan = torn();
                scan.records = records;
                return Ok(scan);
            }
            return Err(damage(pos, "CRC mismatch".into()));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&frame[8..16]);
        let seq = u64::from_be_bytes(seq);
        let expected = first.checked_add(records.len() as u64);
        if Some(seq) != expected {
            return Err(damage(
                pos,
                format!(
                    "record {seq} where record {} was expected",
                    expected.map_or_else(|| "past 2^64".into(), |e| e.to_string())
                ),
            ));
        }
        let line = cipher
            .open(FileKind::AuditSegment, &frame[8..16], &frame[FRAME_HEAD..])
            .map_err(|e| damage(pos, format!("record {seq} failed authentication ({e})")))?;
        let record = Record::from_line(&line)
            .map_err(|e| damage(pos, format!("record {seq} does not parse ({e})")))?;
        if record.seq() != seq {
            return Err(damage(
                pos,
                format!("the frame of record {seq} holds record {}", record.seq()),
            ));
        }
        if let Some(p) = prev
            && record.prev() != p
        {
            return Err(damage(
                pos,
                format!("record {seq} does not link to the record before it"),
            ));
        }
        let leaf = leaf_hash(&line);
        prev = Some(leaf);
        records.push(ScannedRecord {
            seq,
            offset: pos as u64,
            leaf,
        });
        pos += end;
    }
    Ok(Scan {
        first,
        records,
        torn_at: None,
    })
}

/// The audit segments of one manager (see the module docs). Shared by the
/// state machine (which appends) and readers; methods take `&self`.
pub struct AuditSegments {
    dir: PathBuf,
    cipher: Arc<RecordCipher>,
    segment_bytes: u64,
    read_only: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    segments: Vec<Segment>,
    /// Leaf hashes of records `1..=tree.size()`, when the segments hold
    /// every record from 1 with no gap; `None` otherwise.
    tree: Option<MerkleLog>,
    /// Leaf hash of the last record present.
    last_leaf: Hash,
    /// The open last segment, for appending.
    writer: Option<File>,
    /// A torn tail found at open, cut off before the next write.
    cut: Option<(PathBuf, u64)>,
    /// A segment holding no record found at open, removed before the next
    /// write.
    remove: Option<PathBuf>,
    /// Records below this one were archived and their segments dropped
    /// (decision D48): the leaf hashes file holds `floor - 1` leaves, or
    /// (without one) this manager held none of them. 1: nothing dropped.
    floor: u64,
}

struct Segment {
    first: u64,
    path: PathBuf,
    /// Byte offset of each record's frame.
    offsets: Vec<u64>,
    /// Bytes in the file.
    len: u64,
}

impl Segment {
    fn last(&self) -> u64 {
        self.first + self.offsets.len() as u64 - 1
    }
}

impl std::fmt::Debug for AuditSegments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSegments")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl AuditSegments {
    /// Opens the segments in `dir` (none if it is missing), reading and
    /// checking every frame; writes nothing. A torn tail of the last
    /// segment is left out (and cut off before the next write); anything
    /// else wrong is [`StoreError::Corrupt`] naming the file and offset.
    /// `read_only`: refuse to write.
    pub fn open(
        dir: &Path,
        cipher: Arc<RecordCipher>,
        segment_bytes: u64,
        read_only: bool,
    ) -> Result<Self, StoreError> {
        let mut files = Vec::new();
        if dir.is_dir() {
            let entries = std::fs::read_dir(dir).map_err(StoreError::io("list", dir))?;
            for entry in entries {
                let entry = entry.map_err(StoreError::io("list", dir))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(first) = parse_name(name) {
                    files.push((first, entry.path()));
                }
            }
        }
        files.sort();
        let mut inner = Inner {
            tree: Some(MerkleLog::new()),
            floor: 1,
            ..Inner::default()
        };
        let leaves_path = dir.join(LEAVES_FILE);
        if leaves_path.is_file() {
            let leaves = read_leaves(&leaves_path, &cipher)?;
            inner.floor = leaves.len() as u64 + 1;
            inner.tree = Some(MerkleLog::from_leaf_hashes(leaves));
        }
        let count = files.len();
        for (i, (first, path)) in files.into_iter().enumerate() {
            let last_file = i + 1 == count;
            let bytes = read_limited(&path, MAX_SEGMENT_FILE)?;
            let end = inner.segments.last().map_or(0, Segment::last);
            if first <= end {
                return Err(StoreError::corrupt(
                    &path,
                    "byte 8",
                    format!(
                        "it starts at record {first}, but record {end} is in an earlier segment"
                    ),
                ));
            }
            let prev = if end > 0 && first == end + 1 {
                Some(inner.last_leaf)
            } else if first >= 2 {
                // After archived records: their leaf hashes.
                inner.tree.as_ref().and_then(|t| t.leaf_hash(first - 2))
            } else {
                None
            };
            let scan = scan_segment(&bytes, &cipher, prev)
                .map_err(|d| StoreError::corrupt(&path, format!("byte {}", d.at), d.reason))?;
            if scan.first != 0 && scan.first != first {
                return Err(StoreError::corrupt(
                    &path,
                    "byte 8",
                    format!(
                        "the header names record {}, the file name {first}",
                        scan.first
                    ),
                ));
            }
            let mut len = bytes.len() as u64;
            if let Some(at) = scan.torn_at {
                if !last_file {
                    return Err(StoreError::corrupt(
                        &path,
                        format!("byte {at}"),
                        "a frame is cut short in a segment that is not the last",
                    ));
                }
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    "a torn write ends the audit log (a crash during a write): it is cut off before the next write"
                );
                inner.cut = Some((path.clone(), at));
                len = at;
            }
            if scan.records.is_empty() {
                // A header alone (or a torn one): a segment created just
                // before a crash; removed before the next write.
                if !last_file {
                    return Err(StoreError::corrupt(
                        &path,
                        "byte 16",
                        "an audit segment without records that is not the last",
                    ));
                }
                inner.cut = None;
                inner.remove = Some(path);
                continue;
            }
            extend_tree(&mut inner.tree, &scan.records, &path)?;
            inner.last_leaf = scan.records.last().map_or(inner.last_leaf, |r| r.leaf);
            inner.segments.push(Segment {
                first,
                path,
                offsets: scan.records.iter().map(|r| r.offset).collect(),
                len,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            cipher,
            segment_bytes: segment_bytes.max(HEADER_LEN + 1),
            read_only,
            inner: Mutex::new(inner),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence number of the last record present (0: none).
    pub fn last_seq(&self) -> u64 {
        self.lock().segments.last().map_or(0, Segment::last)
    }

    /// Leaf hash of the last record present ([`Hash::ZERO`]: none).
    pub fn last_leaf(&self) -> Hash {
        self.lock().last_leaf
    }

    /// The ranges of records (inclusive) below the last one that this
    /// manager does not hold, oldest first.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut next = inner.floor;
        for s in &inner.segments {
            if s.last() < next {
                continue;
            }
            if s.first > next {
                out.push((next, s.first - 1));
            }
            next = s.last() + 1;
        }
        out
    }

    /// The segment files, oldest first, with the first and last record
    /// each holds.
    pub fn files(&self) -> Vec<(PathBuf, u64, u64)> {
        self.lock()
            .segments
            .iter()
            .map(|s| (s.path.clone(), s.first, s.last()))
            .collect()
    }

    /// The torn tail found at open and not cut off yet: the file and the
    /// offset where it starts.
    pub fn torn(&self) -> Option<(PathBuf, u64)> {
        self.lock().cut.clone()
    }

    /// The file and frame offset of record `seq`, if held.
    pub fn locate(&self, seq: u64) -> Option<(PathBuf, u64)> {
        let inner = self.lock();
        let seg = inner
            .segments
            .iter()
            .find(|s| s.first <= seq && seq <= s.last())?;
        let offset = *seg.offsets.get(usize::try_from(seq - seg.first).ok()?)?;
        Some((seg.path.clone(), offset))
    }

    /// The leaf hash of record `seq`, if held (from memory when the tree is
    /// whole, else read from disk).
    pub fn leaf(&self, seq: u64) -> Result<Option<Hash>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        if let Some(h) = self.with_tree(|t| t.and_then(|t| t.leaf_hash(seq - 1))) {
            return Ok(Some(h));
        }
        Ok(self.read(seq)?.map(|l| leaf_hash(l.as_bytes())))
    }

    /// Runs `f` on the Merkle tree of records `1..=last_seq()`, or on
    /// `None` when records are missing (see [`AuditSegments::gaps`]).
    pub fn with_tree<R>(&self, f: impl FnOnce(Option<&MerkleLog>) -> R) -> R {
        f(self.lock().tree.as_ref())
    }

    /// Appends `lines` as records `first`, `first + 1`, … and fsyncs them
    /// before returning. `first` must be `last_seq() + 1`, or beyond it
    /// when the caller knows the records in between are missing (a new
    /// segment then starts at `first`, and the gap is reported by
    /// [`AuditSegments::gaps`]).
    pub fn append<S: AsRef<str>>(&self, first: u64, lines: &[S]) -> Result<(), StoreError> {
        self.append_unsynced(first, lines)?;
        self.sync()
    }

    /// Makes what [`AuditSegments::append_unsynced`] wrote durable: fsyncs
    /// the segment being written (a segment is fsynced when the next one
    /// starts). Waits on the disk without holding the segments' lock.
    pub fn sync(&self) -> Result<(), StoreError> {
        let current = {
            let inner = self.lock();
            match (inner.segments.last(), inner.writer.as_ref()) {
                (Some(seg), Some(file)) => Some((
                    seg.path.clone(),
                    file.try_clone()
                        .map_err(StoreError::io("open", &seg.path))?,
                )),
                _ => None,
            }
        };
        if let Some((path, file)) = current {
            file.sync_data().map_err(StoreError::io("fsync", &path))?;
        }
        Ok(())
    }

    /// [`AuditSegments::append`] without the final fsync: the records are
    /// written (readable at once) and durable after the next
    /// [`AuditSegments::sync`]. The state machine writes under its state's
    /// lock and fsyncs after releasing it (D49).
    pub fn append_unsynced<S: AsRef<str>>(
        &self,
        first: u64,
        lines: &[S],
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        if self.read_only {
            return Err(StoreError::Invalid(
                "the audit segments were opened read-only".into(),
            ));
        }
        let mut inner = self.lock();
        self.repair(&mut inner)?;
        let last = inner.segments.last().map_or(0, Segment::last);
        if first <= last {
            return Err(StoreError::Invalid(format!(
                "audit record {first} appended after record {last}"
            )));
        }
        let gap = first != last + 1;
        if gap {
            inner.tree = None;
            self.start_segment(&mut inner, first)?;
        }
        for (i, line) in lines.iter().enumerate() {
            let seq = first + i as u64;
            let roll = inner
                .segments
                .last()
                .is_none_or(|s| s.len >= self.segment_bytes);
            if roll || inner.writer.is_none() {
                if roll {
                    self.start_segment(&mut inner, seq)?;
                } else {
                    let path = inner.segments.last().map(|s| s.path.clone());
                    if let Some(path) = path {
                        inner.writer = Some(open_append(&path)?);
                    }
                }
            }
            let frame = self.frame(seq, line.as_ref().as_bytes())?;
            let leaf = leaf_hash(line.as_ref().as_bytes());
            let Inner {
                segments,
                writer,
                tree,
                last_leaf,
                ..
            } = &mut *inner;
            let (Some(seg), Some(file)) = (segments.last_mut(), writer.as_mut()) else {
                return Err(StoreError::Invalid("no audit segment to write to".into()));
            };
            file.write_all(&frame)
                .map_err(StoreError::io("write", &seg.path))?;
            seg.offsets.push(seg.len);
            seg.len += frame.len() as u64;
            if let Some(tree) = tree.as_mut() {
                tree.push_leaf_hash(leaf);
            }
            *last_leaf = leaf;
        }
        Ok(())
    }

    /// Drops every record after `size`: later segments are removed (last
    /// first, the directory fsynced after each) and the segment holding the
    /// cut is shortened and fsynced, so a crash leaves a prefix.
    pub fn truncate_after(&self, size: u64) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Invalid(
                "the audit segments were opened read-only".into(),
            ));
        }
        let mut inner = self.lock();
        self.repair(&mut inner)?;
        inner.writer = None;
        while let Some(seg) = inner.segments.last() {
            if seg.last() <= size {
                break;
            }
            if seg.first > size {
                let path = seg.path.clone();
                std::fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
                sync_dir(&self.dir)?;
                inner.segments.pop();
                continue;
            }
            let keep = (size - seg.first + 1) as usize;
            let cut = seg.offsets[keep];
            let path = seg.path.clone();
            truncate_file(&path, cut)?;
            if let Some(seg) = inner.segments.last_mut() {
                seg.offsets.truncate(keep);
                seg.len = cut;
            }
            break;
        }
        if let Some(tree) = inner.tree.as_mut() {
            tree.truncate(size);
        }
        let last = inner.segments.last().map_or(0, Segment::last);
        inner.last_leaf = match last {
            0 => Hash::ZERO,
            n => match inner.tree.as_ref().and_then(|t| t.leaf_hash(n - 1)) {
                Some(h) => h,
                None => {
                    drop(inner);
                    let line = self.read(n)?.unwrap_or_default();
                    let h = leaf_hash(line.as_bytes());
                    self.lock().last_leaf = h;
                    return Ok(());
                }
            },
        };
        Ok(())
    }

    /// Record `seq`'s canonical line, read from disk and authenticated;
    /// `None` if this manager does not hold it.
    pub fn read(&self, seq: u64) -> Result<Option<String>, StoreError> {
        let mut out = None;
        self.read_range(seq, seq, |_, line| {
            out = Some(line);
            Ok(false)
        })?;
        Ok(out)
    }

    /// Calls `f` with each record held from `from` to `to` (inclusive), in
    /// order, until it returns `Ok(false)`. Records in a gap are skipped.
    pub fn read_range(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, String) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let plan: Vec<(PathBuf, u64, Vec<u64>)> = {
            let inner = self.lock();
            inner
                .segments
                .iter()
                .filter(|s| s.last() >= from && s.first <= to)
                .map(|s| {
                    let lo = from.max(s.first);
                    let hi = to.min(s.last());
                    let offsets =
                        s.offsets[(lo - s.first) as usize..=(hi - s.first) as usize].to_vec();
                    (s.path.clone(), lo, offsets)
                })
                .collect()
        };
        for (path, lo, offsets) in plan {
            let mut file = File::open(&path).map_err(StoreError::io("open", &path))?;
            let mut at = None;
            for (i, offset) in offsets.into_iter().enumerate() {
                let seq = lo + i as u64;
                if at != Some(offset) {
                    file.seek(SeekFrom::Start(offset))
                        .map_err(StoreError::io("seek", &path))?;
                }
                let (line, len) = self.read_frame(&mut file, &path, offset, seq)?;
                at = Some(offset + len);
                if !f(seq, line)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn read_frame(
        &self,
        file: &mut File,
        path: &Path,
        offset: u64,
        seq: u64,
    ) -> Result<(String, u64), StoreError> {
        let corrupt = |reason: String| StoreError::corrupt(path, format!("byte {offset}"), reason);
        let mut head = [0u8; 4];
        file.read_exact(&mut head)
            .map_err(|e| corrupt(format!("cannot read record {seq}'s frame ({e})")))?;
        let len = u32::from_be_bytes(head);
        if !(12..=MAX_AUDIT_FRAME_LEN).contains(&len) {
            return Err(corrupt(format!("frame length {len} is out of range")));
        }
        let mut frame = vec![0u8; len as usize];
        file.read_exact(&mut frame)
            .map_err(|e| corrupt(format!("cannot read record {seq}'s frame ({e})")))?;
        let crc = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if crc32fast::hash(&frame[4..]) != crc {
            return Err(corrupt(format!("record {seq}: CRC mismatch")));
        }
        if frame[4..12] != seq.to_be_bytes() {
            return Err(corrupt(format!("the frame of record {seq} names another")));
        }
        let line = self
            .cipher
            .open(FileKind::AuditSegment, &frame[4..12], &frame[12..])
            .map_err(|e| corrupt(format!("record {seq} failed authentication ({e})")))?;
        let line = String::from_utf8(line.to_vec())
            .map_err(|_| corrupt(format!("record {seq} is not UTF-8")))?;
        Ok((line, 4 + u64::from(len)))
    }

    fn frame(&self, seq: u64, line: &[u8]) -> Result<Vec<u8>, StoreError> {
        let position = seq.to_be_bytes();
        let sealed = self.cipher.seal(FileKind::AuditSegment, &position, line)?;
        let len = u32::try_from(12 + sealed.len())
            .ok()
            .filter(|l| *l <= MAX_AUDIT_FRAME_LEN)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "audit record {seq} seals to {} bytes, over the frame limit",
                    sealed.len()
                ))
            })?;
        let mut frame = Vec::with_capacity(4 + len as usize);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&position);
        frame.extend_from_slice(&sealed);
        let crc = crc32fast::hash(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_be_bytes());
        Ok(frame)
    }

    /// Seals again, with the DEK new records are sealed with, every segment
    /// holding a record sealed with another (during a DEK rotation, before
    /// the old DEK goes: the state machine does it when it takes the
    /// rotation's snapshot). Each such file is replaced atomically (temp
    /// file, fsync, rename, fsync of the directory), so a crash leaves each
    /// file under one DEK or the other, both still loaded. Returns the
    /// number of files rewritten.
    pub fn reseal(&self) -> Result<usize, StoreError> {
        let Some(target) = self.cipher.sealing_version() else {
            return Ok(0);
        };
        let mut inner = self.lock();
        self.repair(&mut inner)?;
        inner.writer = None;
        let mut rewritten = 0;
        for seg in inner.segments.iter_mut() {
            let bytes = read_limited(&seg.path, MAX_SEGMENT_FILE)?;
            let corrupt =
                |at: u64, why: &str| StoreError::corrupt(&seg.path, format!("byte {at}"), why);
            let mut frames = Vec::with_capacity(seg.offsets.len());
            let mut stale = false;
            for (k, &off) in seg.offsets.iter().enumerate() {
                let at = usize::try_from(off).unwrap_or(usize::MAX);
                let len = bytes
                    .get(at..at.saturating_add(4))
                    .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
                    .ok_or_else(|| corrupt(off, "the segment changed since it was read"))?;
                let sealed = bytes
                    .get(at + FRAME_HEAD..at + 4 + len)
                    .ok_or_else(|| corrupt(off, "the segment changed since it was read"))?;
                stale |= moat_lock::record_version(sealed) != Some(target);
                frames.push((seg.first + k as u64, off, sealed));
            }
            if !stale {
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len());
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&seg.first.to_be_bytes());
            let mut offsets = Vec::with_capacity(frames.len());
            for (seq, off, sealed) in frames {
                let line = self
                    .cipher
                    .open(FileKind::AuditSegment, &seq.to_be_bytes(), sealed)
                    .map_err(|e| {
                        corrupt(off, &format!("record {seq} failed authentication ({e})"))
                    })?;
                offsets.push(out.len() as u64);
                out.extend_from_slice(&self.frame(seq, &line)?);
            }
            crate::fsutil::write_atomic(&seg.path, &out)?;
            seg.offsets = offsets;
            seg.len = out.len() as u64;
            rewritten += 1;
        }
        let leaves = self.dir.join(LEAVES_FILE);
        if leaves.is_file() {
            let bytes = read_limited(&leaves, MAX_SEGMENT_FILE)?;
            if bytes.get(16..).and_then(moat_lock::record_version) != Some(target) {
                let hashes = parse_leaves(&bytes, &self.cipher)
                    .map_err(|(at, why)| StoreError::corrupt(&leaves, format!("byte {at}"), why))?;
                write_leaves(&leaves, &self.cipher, &hashes)?;
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }

    /// The first record not archived off this manager (1: none was).
    pub fn floor(&self) -> u64 {
        self.lock().floor
    }

    /// Fills part of a gap with records fetched from another manager
    /// (issue 19, step 3): `lines` are records `first`, `first + 1`, …,
    /// and they are written only if they fit what this manager already
    /// trusts:
    ///
    /// * each parses as a canonical record with its sequence number and
    ///   links (`prev`) to the one before it;
    /// * the last one's leaf hash is the link of the record after it, read
    ///   from these segments; or, when that record is not held, `tail`
    ///   (the cluster state's `last`, when the range ends at the log's
    ///   size);
    /// * the first one links to the record before it when it is held (or
    ///   to 64 zeros for record 1).
    ///
    /// So every record is tied by SHA-256 links to a record this manager
    /// wrote itself from committed entries. The records go to one new
    /// segment file, sealed with this manager's DEK like any other (same
    /// AAD), written atomically (temp file, fsync, rename, fsync of the
    /// directory): a crash leaves the whole file or none of it. Returns
    /// whether the log is now whole from [`AuditSegments::floor`] on (the
    /// Merkle tree is then rebuilt: every record is read once).
    pub fn fill<S: AsRef<str>>(
        &self,
        first: u64,
        lines: &[S],
        tail: Option<Hash>,
    ) -> Result<bool, FillError> {
        if lines.is_empty() {
            return Ok(self.gaps().is_empty());
        }
        if self.read_only {
            return Err(FillError::Store(StoreError::Invalid(
                "the audit segments were opened read-only".into(),
            )));
        }
        let refuse = |why: String| Err(FillError::Refused(why));
        let Some(last) = first
            .checked_add(lines.len() as u64 - 1)
            .filter(|_| first > 0)
        else {
            return refuse(format!("records from {first} do not fit a log"));
        };
        // Each record on its own, and linked to the one before it.
        let mut leaves = Vec::with_capacity(lines.len());
        let mut first_prev = Hash::ZERO;
        for (i, line) in lines.iter().enumerate() {
            let seq = first + i as u64;
            let bytes = line.as_ref().as_bytes();
            let record = match Record::from_line(bytes) {
                Ok(r) => r,
                Err(e) => return refuse(format!("record {seq} is not a valid record ({e})")),
            };
            if record.seq() != seq {
                return refuse(format!(
                    "record {} was sent in the place of record {seq}",
                    record.seq()
                ));
            }
            match leaves.last() {
                None => first_prev = record.prev(),
                Some(prev) if record.prev() != *prev => {
                    return refuse(format!(
                        "record {seq} does not link to record {} sent with it",
                        seq - 1
                    ));
                }
                Some(_) => {}
            }
            leaves.push(leaf_hash(bytes));
        }
        let top = leaves.last().copied().unwrap_or(Hash::ZERO);
        // Tied above: to the record after the range, or to the state.
        let above = match self.read(last + 1)? {
            Some(line) => match Record::from_line(line.as_bytes()) {
                Ok(r) => Some(r.prev()),
                Err(e) => {
                    return Err(FillError::Store(StoreError::Invalid(format!(
                        "audit record {} held here does not parse ({e})",
                        last + 1
                    ))));
                }
            },
            None => tail,
        };
        match above {
            Some(h) if h == top => {}
            Some(_) => {
                return refuse(format!(
                    "record {last} does not hash to the link this manager holds for it (in record {} or the cluster state): it is not the record the cluster committed",
                    last + 1
                ));
            }
            None => {
                return Err(FillError::Store(StoreError::Invalid(format!(
                    "records up to {last} cannot be checked: record {} is not held here",
                    last + 1
                ))));
            }
        }
        // Tied below, when the record before is held.
        let below = if first == 1 {
            Some(Hash::ZERO)
        } else {
            self.leaf(first - 1)?
        };
        if below.is_some_and(|h| h != first_prev) {
            return refuse(format!(
                "record {first} does not link to record {} held here",
                first - 1
            ));
        }
        // Written into the gap, atomically; sealed under the lock, so a DEK
        // rotation's reseal (which holds it) sees this file too.
        {
            let mut inner = self.lock();
            self.repair(&mut inner)?;
            if first < inner.floor {
                return Err(FillError::Store(StoreError::Invalid(format!(
                    "record {first} was archived: it is not fetched again"
                ))));
            }
            if let Some(s) = inner
                .segments
                .iter()
                .find(|s| s.first <= last && s.last() >= first)
            {
                return Err(FillError::Store(StoreError::Invalid(format!(
                    "records {first} to {last} overlap records {} to {} held here",
                    s.first,
                    s.last()
                ))));
            }
            let mut bytes = Vec::new();
            bytes.extend_from_slice(MAGIC);
            bytes.extend_from_slice(&first.to_be_bytes());
            let mut offsets = Vec::with_capacity(lines.len());
            for (i, line) in lines.iter().enumerate() {
                offsets.push(bytes.len() as u64);
                bytes.extend_from_slice(&self.frame(first + i as u64, line.as_ref().as_bytes())?);
            }
            create_dir(&self.dir)?;
            let path = self.dir.join(segment_name(first));
            crate::fsutil::write_atomic(&path, &bytes)?;
            let at = inner.segments.partition_point(|s| s.first < first);
            if at == inner.segments.len() {
                // The new last segment: appends go on in it.
                inner.writer = None;
                inner.last_leaf = top;
            }
            // The tree goes on only if these records continue it (a log
            // whole up to `first - 1`); otherwise it is rebuilt once the
            // log is whole again.
            let at_end = at == inner.segments.len();
            match inner.tree.as_mut() {
                Some(tree) if at_end && tree.size() + 1 == first => {
                    for leaf in &leaves {
                        tree.push_leaf_hash(*leaf);
                    }
                }
                _ => inner.tree = None,
            }
            inner.segments.insert(
                at,
                Segment {
                    first,
                    path,
                    offsets,
                    len: bytes.len() as u64,
                },
            );
        }
        if self.gaps().is_empty() {
            return Ok(self.rebuild_tree()?);
        }
        Ok(false)
    }

    /// Rebuilds the Merkle tree once the segments hold every record from
    /// the floor on (after [`AuditSegments::fill`] closed the last gap):
    /// the leaf hashes of archived records, then every record read once.
    /// Returns whether there is a tree.
    pub fn rebuild_tree(&self) -> Result<bool, StoreError> {
        let (floor, first) = {
            let inner = self.lock();
            if inner.tree.is_some() {
                return Ok(true);
            }
            (inner.floor, inner.segments.first().map(|s| s.first))
        };
        let mut tree = if floor > 1 {
            let path = self.dir.join(LEAVES_FILE);
            if !path.is_file() {
                return Ok(false);
            }
            MerkleLog::from_leaf_hashes(read_leaves(&path, &self.cipher)?)
        } else {
            MerkleLog::new()
        };
        if first.is_some_and(|f| f > tree.size() + 1) || !self.gaps().is_empty() {
            return Ok(false);
        }
        loop {
            let from = tree.size() + 1;
            let to = self.last_seq();
            let mut broken = false;
            self.read_range(from, to, |seq, line| {
                if seq != tree.size() + 1 {
                    broken = true;
                    return Ok(false);
                }
                tree.push_leaf(line.as_bytes());
                Ok(true)
            })?;
            if broken {
                return Ok(false);
            }
            let mut inner = self.lock();
            if inner.segments.last().map_or(0, Segment::last) == tree.size() {
                inner.tree = Some(tree);
                return Ok(true);
            }
        }
    }

    /// Installs the leaf hashes of archived records `1 ..= leaves.len()`
    /// fetched from another manager (a manager that joined after an
    /// archival holds none): writes the leaf hashes file (atomically),
    /// moves the floor up to the record after them and rebuilds the tree.
    /// The caller has checked them against the log's root
    /// ([`crate::audit::AuditTrail::adopt_archived_leaves`]). Returns
    /// whether there is a tree now.
    pub fn install_leaves(&self, leaves: &[Hash]) -> Result<bool, StoreError> {
        if self.read_only {
            return Err(StoreError::Invalid(
                "the audit segments were opened read-only".into(),
            ));
        }
        {
            let mut inner = self.lock();
            self.repair(&mut inner)?;
            create_dir(&self.dir)?;
            write_leaves(&self.dir.join(LEAVES_FILE), &self.cipher, leaves)?;
            inner.floor = inner.floor.max(leaves.len() as u64 + 1);
            inner.tree = None;
        }
        self.rebuild_tree()
    }

    /// Drops the segments that hold only records below `below` (archived,
    /// decision D48), oldest first, except the last segment (it is being
    /// written). First the leaf hashes of every dropped record are kept in
    /// the leaf hashes file (written atomically), so proofs over the whole
    /// log can still be made here; then each file is removed and the
    /// directory fsynced. A crash in between leaves segments whose records
    /// the leaf hashes file also holds: they must match at open and are
    /// dropped again. Returns the number of files removed; 0 on a
    /// read-only store.
    pub fn drop_below(&self, below: u64) -> Result<usize, StoreError> {
        if self.read_only {
            return Ok(0);
        }
        let mut inner = self.lock();
        let count = inner.segments.len();
        let victims = inner
            .segments
            .iter()
            .take(count.saturating_sub(1))
            .take_while(|s| s.last() < below)
            .count();
        if victims == 0 {
            return Ok(0);
        }
        self.repair(&mut inner)?;
        let through = inner.segments[victims - 1].last();
        if through >= inner.floor {
            if let Some(tree) = inner.tree.as_ref().filter(|t| t.size() >= through) {
                let mut leaves = Vec::with_capacity(usize::try_from(through).unwrap_or(0));
                for i in 0..through {
                    leaves.push(tree.leaf_hash(i).unwrap_or(Hash::ZERO));
                }
                write_leaves(&self.dir.join(LEAVES_FILE), &self.cipher, &leaves)?;
            } else {
                tracing::warn!(
                    through,
                    "audit records archived here are dropped without their leaf hashes (this manager lacked records below them): it cannot prove archived records; another manager can"
                );
            }
        }
        for seg in inner.segments.drain(..victims) {
            std::fs::remove_file(&seg.path).map_err(StoreError::io("remove", &seg.path))?;
        }
        sync_dir(&self.dir)?;
        inner.floor = inner.floor.max(through + 1);
        Ok(victims)
    }

    /// Cuts off a torn tail and removes an empty segment found at open.
    fn repair(&self, inner: &mut Inner) -> Result<(), StoreError> {
        if let Some((path, at)) = inner.cut.take() {
            truncate_file(&path, at)?;
        }
        if let Some(path) = inner.remove.take() {
            std::fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Starts segment `first`: fsyncs the current one, creates the file
    /// with its header, fsyncs it and the directory.
    fn start_segment(&self, inner: &mut Inner, first: u64) -> Result<(), StoreError> {
        if let (Some(seg), Some(file)) = (inner.segments.last(), inner.writer.as_ref()) {
            file.sync_data()
                .map_err(StoreError::io("fsync", &seg.path))?;
        }
        inner.writer = None;
        create_dir(&self.dir)?;
        let path = self.dir.join(segment_name(first));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io("create", &path))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&first.to_be_bytes());
        file.write_all(&header)
            .map_err(StoreError::io("write", &path))?;
        file.sync_data().map_err(StoreError::io("fsync", &path))?;
        sync_dir(&self.dir)?;
        inner.segments.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: HEADER_LEN,
        });
        inner.writer = Some(file);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A segment's file name.
pub fn segment_name(first: u64) -> String {
    format!("audit-{first:020}.seg")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

fn open_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(StoreError::io("open", path))
}

fn truncate_file(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StoreError::io("open", path))?;
    file.set_len(len)
        .map_err(StoreError::io("truncate", path))?;
    file.sync_all().map_err(StoreError::io("fsync", path))
}

/// Adds records read at open to the tree: those the leaf hashes file
/// already holds must match it; one past a gap ends the tree.
fn extend_tree(
    tree: &mut Option<MerkleLog>,
    records: &[ScannedRecord],
    path: &Path,
) -> Result<(), StoreError> {
    let Some(t) = tree.as_mut() else {
        return Ok(());
    };
    for r in records {
        let size = t.size();
        if r.seq <= size {
            if t.leaf_hash(r.seq - 1) != Some(r.leaf) {
                return Err(StoreError::corrupt(
                    path,
                    format!("byte {}", r.offset),
                    format!(
                        "record {} does not match the leaf hash kept for it when it was archived",
                        r.seq
                    ),
                ));
            }
        } else if r.seq == size + 1 {
            t.push_leaf_hash(r.leaf);
        } else {
            *tree = None;
            return Ok(());
        }
    }
    Ok(())
}

/// The file of the leaf hashes of archived records (decision D48), in the
/// segments' directory. Its name matches `audit-*.seg`, so backups carry
/// it with the segments; it is not a segment (no sequence number).
pub const LEAVES_FILE: &str = "audit-leaves.seg";

const LEAVES_MAGIC: &[u8; 8] = b"MOATAUDL";

/// Why [`AuditSegments::fill`] wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FillError {
    /// The records do not fit the log this manager holds: whoever sent
    /// them sent something else than the committed records.
    #[error("{0}")]
    Refused(String),
    /// This manager's own files or state (named).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes the leaf hashes file: magic `MOATAUDL`, the count (8 bytes,
/// big-endian), then the hashes sealed as one record with
/// [`FileKind::AuditSegment`] at position 0 (no record has sequence
/// number 0). Atomic.
fn write_leaves(path: &Path, cipher: &RecordCipher, leaves: &[Hash]) -> Result<(), StoreError> {
    let mut plain = Vec::with_capacity(leaves.len() * 32);
    for l in leaves {
        plain.extend_from_slice(l.as_bytes());
    }
    let sealed = cipher.seal(FileKind::AuditSegment, &0u64.to_be_bytes(), &plain)?;
    let mut out = Vec::with_capacity(16 + sealed.len());
    out.extend_from_slice(LEAVES_MAGIC);
    out.extend_from_slice(&(leaves.len() as u64).to_be_bytes());
    out.extend_from_slice(&sealed);
    crate::fsutil::write_atomic(path, &out)
}

/// Reads the leaf hashes file (see [`write_leaves`]); anything wrong is
/// corruption naming it.
fn read_leaves(path: &Path, cipher: &RecordCipher) -> Result<Vec<Hash>, StoreError> {
    let bytes = read_limited(path, MAX_SEGMENT_FILE)?;
    parse_leaves(&bytes, cipher)
        .map_err(|(at, why)| StoreError::corrupt(path, format!("byte {at}"), why))
}

/// Parses the bytes of a leaf hashes file. Never panics.
pub fn parse_leaves(bytes: &[u8], cipher: &RecordCipher) -> Result<Vec<Hash>, (u64, String)> {
    if bytes.len() < 16 || &bytes[..8] != LEAVES_MAGIC {
        return Err((0, "not an audit leaf hashes file (bad magic)".into()));
    }
    let mut count = [0u8; 8];
    count.copy_from_slice(&bytes[8..16]);
    let count = u64::from_be_bytes(count);
    if count.checked_mul(32).is_none_or(|n| n > bytes.len() as u64) {
        return Err((8, format!("{count} leaf hashes do not fit the file")));
    }
    let plain = cipher
        .open(FileKind::AuditSegment, &0u64.to_be_bytes(), &bytes[16..])
        .map_err(|e| (16, format!("the leaf hashes failed authentication ({e})")))?;
    if plain.len() as u64 != count * 32 {
        return Err((
            16,
            format!("{} bytes do not hold {count} leaf hashes", plain.len()),
        ));
    }
    Ok(plain
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            Hash(h)
        })
        .collect())
}

#[cfg(test)]
mod tests;
