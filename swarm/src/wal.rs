//! etcd's write-ahead log as SwarmKit keeps it in `raft/wal-v3-encrypted`.
//!
//! Segments are named `%016x-%016x.wal` (sequence, first index) and read in
//! name order; `*.tmp` spares are ignored. Each segment is a run of frames:
//!
//! ```text
//! u64 LE lenField   n = lenField & 0x00FF_FFFF_FFFF_FFFF; if bit 63: pad = (lenField >> 56) & 7
//! n bytes           walpb.Record (proto2): 1 type int64, 2 crc uint32, 3 data bytes
//! pad zero bytes
//! ```
//!
//! `lenField == 0` is the preallocated zero tail: the segment's data ends
//! there (a segment shorter than its 64,000,000 preallocated bytes is
//! accepted too). The CRC is CRC-32C chained over the data of every record
//! across all segments; a type-4 (crc) record carries the running value and
//! resets it (checked when the running value is not 0, as etcd does).
//!
//! [`parse_segment`] is a pure function over a segment's bytes (fuzzed by
//! `swarm_wal`); it never panics and checks each record's length against
//! the bytes left and [`MAX_RECORD`] before touching it. What to do with a
//! bad record is the caller's choice ([`crate::raftlog`]): in the last
//! segment a torn tail is what a crash leaves; anywhere else it is damage.

use std::io::Read as _;

use crate::error::{Result, SwarmError};
use crate::record::wire;

/// The largest WAL segment file read.
pub const MAX_SEGMENT: u64 = 256 * 1024 * 1024;

/// The largest single WAL record accepted.
pub const MAX_RECORD: u64 = 128 * 1024 * 1024;

/// etcd's torn-write unit: a record holding an all-zero 512-byte sector
/// (counted from the start of the file) was not fully written.
const SECTOR: usize = 512;

/// walpb record types.
const METADATA: i64 = 1;
const ENTRY: i64 = 2;
const STATE: i64 = 3;
const CRC: i64 = 4;
const SNAPSHOT: i64 = 5;

/// One WAL record, with the offset of its frame in the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Byte offset of the frame (its length field) in the segment.
    pub offset: u64,
    /// What the record holds.
    pub kind: WalRecordKind,
}

/// The decoded content of a [`WalRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalRecordKind {
    /// Type 1: the node's `api.RaftMember`.
    Metadata(RaftMember),
    /// Type 2: a raft entry.
    Entry(WalEntry),
    /// Type 3: the raft `HardState`.
    State(HardState),
    /// Type 4: the running CRC at a segment start.
    Crc(u32),
    /// Type 5: a snapshot was saved at this index and term.
    Snapshot {
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
    },
    /// Any other type: kept, not used.
    Unknown {
        /// The record type.
        record_type: i64,
        /// The data length.
        len: usize,
    },
}

/// `api.RaftMember`, the WAL metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RaftMember {
    /// The raft id.
    pub raft_id: u64,
    /// The Swarm node id.
    pub node_id: String,
    /// The raft address.
    pub addr: String,
}

/// raftpb `HardState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HardState {
    /// The current term.
    pub term: u64,
    /// Who this node voted for.
    pub vote: u64,
    /// The commit index.
    pub commit: u64,
}

/// A raftpb `Entry` as stored (its data still sealed).
#[derive(Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// The entry type (0 normal, 1 conf change).
    pub entry_type: i64,
    /// The term.
    pub term: u64,
    /// The index.
    pub index: u64,
    /// The data: a `MaybeEncryptedRecord`.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for WalEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalEntry")
            .field("entry_type", &self.entry_type)
            .field("term", &self.term)
            .field("index", &self.index)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// How reading a segment ended.
#[derive(Debug)]
pub enum SegmentEnd {
    /// At the zero tail or at the end of the bytes, on a frame boundary.
    Clean,
    /// A record cut short (the bytes end inside it, or it holds an
    /// all-zero sector and does not check): a torn write.
    Torn(SwarmError),
    /// A record that is damaged (bad CRC, does not decode, too large).
    Bad {
        /// What is wrong.
        error: SwarmError,
        /// Nothing follows the bad record (the zero tail or the end of the
        /// bytes comes next): it is the segment's last record.
        at_tail: bool,
    },
}

/// What [`parse_segment`] read.
#[derive(Debug)]
pub struct SegmentRead {
    /// The good records, in order.
    pub records: Vec<WalRecord>,
    /// The offset just past the last good frame.
    pub end_offset: u64,
    /// The running CRC after the last good record.
    pub crc: u32,
    /// How it ended.
    pub end: SegmentEnd,
}

/// A segment file name's two numbers, if it is `%016x-%016x.wal`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, index) = stem.split_once('-')?;
    if seq.len() != 16 || index.len() != 16 {
        return None;
    }
    let hex = |s: &str| {
        if s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(seq)?, hex(index)?))
}

/// Parses one segment's bytes. `file` names it in errors; `prev_crc` is the
/// running CRC at the end of the previous segment (0 for the first).
pub fn parse_segment(file: &str, bytes: &[u8], prev_crc: u32) -> SegmentRead {
    let mut records = Vec::new();
    let mut crc = prev_crc;
    let mut pos: usize = 0;
    let total = bytes.len();
    let end = loop {
        if pos == total {
            break SegmentEnd::Clean;
        }
        let offset = pos as u64;
        let Some(len_bytes) = bytes.get(pos..pos.saturating_add(8)) else {
            if bytes[pos..].iter().all(|b| *b == 0) {
                break SegmentEnd::Clean;
            }
            break SegmentEnd::Torn(torn(
                file,
                offset,
                "the last frame's length field is cut short",
            ));
        };
        let mut lf = [0u8; 8];
        lf.copy_from_slice(len_bytes);
        let len_field = u64::from_le_bytes(lf);
        if len_field == 0 {
            break SegmentEnd::Clean;
        }
        let (n, pad) = frame_size(len_field);
        let body_start = pos + 8;
        let left = (total - body_start) as u64;
        if n > MAX_RECORD {
            break SegmentEnd::Bad {
                error: SwarmError::TooLarge {
                    what: format!("the WAL record at byte {offset} of {file}"),
                    size: n,
                    limit: MAX_RECORD,
                },
                at_tail: false,
            };
        }
        let frame_len = n + pad;
        if frame_len > left {
            break SegmentEnd::Torn(torn(
                file,
                offset,
                &format!("the record needs {frame_len} bytes and only {left} are left"),
            ));
        }
        // Both fit in usize: frame_len <= left, which came from a usize.
        let n = n as usize;
        let frame_end = body_start + frame_len as usize;
        let data = &bytes[body_start..body_start + n];
        let at_tail =
            frame_end + 8 > total || bytes[frame_end..frame_end + 8].iter().all(|b| *b == 0);
        let is_torn = has_zero_sector(bytes, body_start, frame_end);
        let rec = match decode_record(data) {
            Ok(r) => r,
            Err(what) => {
                let error = SwarmError::Malformed {
                    file: file.to_owned(),
                    offset,
                    what: format!("WAL record: {what}"),
                };
                break if is_torn {
                    SegmentEnd::Torn(error)
                } else {
                    SegmentEnd::Bad { error, at_tail }
                };
            }
        };
        if rec.record_type == CRC {
            if crc != 0 && rec.crc != crc {
                break SegmentEnd::Bad {
                    error: SwarmError::Crc {
                        file: file.to_owned(),
                        offset,
                        expected: rec.crc,
                        found: crc,
                    },
                    at_tail,
                };
            }
            crc = rec.crc;
        } else {
            let next = crc32c::crc32c_append(crc, rec.data);
            if next != rec.crc {
                let error = SwarmError::Crc {
                    file: file.to_owned(),
                    offset,
                    expected: rec.crc,
                    found: next,
                };
                break if is_torn {
                    SegmentEnd::Torn(error)
                } else {
                    SegmentEnd::Bad { error, at_tail }
                };
            }
            crc = next;
        }
        let kind = match interpret(&rec) {
            Ok(k) => k,
            Err(what) => {
                break SegmentEnd::Bad {
                    error: SwarmError::Malformed {
                        file: file.to_owned(),
                        offset,
                        what: format!("WAL record of type {}: {what}", rec.record_type),
                    },
                    at_tail,
                };
            }
        };
        records.push(WalRecord { offset, kind });
        pos = frame_end;
    };
    SegmentRead {
        records,
        end_offset: pos as u64,
        crc,
        end,
    }
}

/// Reads a segment file's bytes up to the end of its data (the zero
/// length field that starts the preallocated tail, or end of file), in
/// 1 MiB steps, so the zero tail is never loaded. The file must be at
/// most [`MAX_SEGMENT`] bytes.
pub fn read_segment_file(path: &std::path::Path, rel: &str) -> Result<Vec<u8>> {
    let io = |source| SwarmError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_SEGMENT {
        return Err(SwarmError::TooLarge {
            what: rel.to_owned(),
            size,
            limit: MAX_SEGMENT,
        });
    }
    let mut reader = file.take(MAX_SEGMENT);
    let mut buf: Vec<u8> = Vec::new();
    let mut frame: usize = 0; // offset of the next frame not yet skipped over
    const STEP: usize = 1024 * 1024;
    loop {
        // Skip the complete frames we have.
        while let Some(b) = buf.get(frame..frame.saturating_add(8)) {
            let mut lf = [0u8; 8];
            lf.copy_from_slice(b);
            let len_field = u64::from_le_bytes(lf);
            if len_field == 0 {
                buf.truncate(frame + 8);
                return Ok(buf);
            }
            let (n, pad) = frame_size(len_field);
            let next = (frame as u64)
                .saturating_add(8)
                .saturating_add(n)
                .saturating_add(pad);
            if n > MAX_RECORD || next > size {
                // parse_segment reports it; no need for the rest.
                reader.read_to_end(&mut buf).map_err(io)?;
                return Ok(buf);
            }
            frame = next as usize;
        }
        let before = buf.len();
        let want = STEP.min(
            usize::try_from(size)
                .unwrap_or(usize::MAX)
                .saturating_sub(before),
        );
        if want == 0 {
            return Ok(buf);
        }
        buf.resize(before + want, 0);
        let mut filled = before;
        while filled < buf.len() {
            let got = reader.read(&mut buf[filled..]).map_err(io)?;
            if got == 0 {
                break;
            }
            filled += got;
        }
        buf.truncate(filled);
        if filled == before {
            return Ok(buf);
        }
    }
}

fn frame_size(len_field: u64) -> (u64, u64) {
    let n = len_field & 0x00FF_FFFF_FFFF_FFFF;
    let pad = if len_field & (1 << 63) != 0 {
        (len_field >> 56) & 7
    } else {
        0
    };
    (n, pad)
}

fn torn(file: &str, offset: u64, what: &str) -> SwarmError {
    SwarmError::Torn {
        file: file.to_owned(),
        offset,
        what: what.to_owned(),
    }
}

/// Whether bytes[start..end] contains a whole 512-byte sector, aligned to
/// the file start, that is all zeros (etcd's `isTornEntry`).
fn has_zero_sector(bytes: &[u8], start: usize, end: usize) -> bool {
    let mut s = start.div_ceil(SECTOR) * SECTOR;
    while s + SECTOR <= end {
        if bytes[s..s + SECTOR].iter().all(|b| *b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

struct RawRecord<'a> {
    record_type: i64,
    crc: u32,
    data: &'a [u8],
}

fn decode_record(bytes: &[u8]) -> std::result::Result<RawRecord<'_>, &'static str> {
    let mut r = wire::Reader::new(bytes);
    let mut rec = RawRecord {
        record_type: 0,
        crc: 0,
        data: &[],
    };
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, wire::Value::Varint(v)) => rec.record_type = wire::as_i64(v),
            (2, wire::Value::Varint(v)) => rec.crc = wire::as_u32(v),
            (3, wire::Value::Bytes(b)) => rec.data = b,
            (1..=3, _) => return Err("a field has the wrong wire type"),
            _ => {}
        }
    }
    Ok(rec)
}

fn interpret(rec: &RawRecord<'_>) -> std::result::Result<WalRecordKind, &'static str> {
    Ok(match rec.record_type {
        METADATA => {
            let mut m = RaftMember::default();
            let mut r = wire::Reader::new(rec.data);
            while let Some((field, value)) = r.next()? {
                match (field, value) {
                    (1, wire::Value::Varint(v)) => m.raft_id = v,
                    (2, wire::Value::Bytes(b)) => {
                        m.node_id = String::from_utf8_lossy(b).into_owned()
                    }
                    (3, wire::Value::Bytes(b)) => m.addr = String::from_utf8_lossy(b).into_owned(),
                    _ => {}
                }
            }
            WalRecordKind::Metadata(m)
        }
        ENTRY => {
            let mut e = WalEntry {
                entry_type: 0,
                term: 0,
                index: 0,
                data: Vec::new(),
            };
            let mut r = wire::Reader::new(rec.data);
            while let Some((field, value)) = r.next()? {
                match (field, value) {
                    (1, wire::Value::Varint(v)) => e.entry_type = wire::as_i64(v),
                    (2, wire::Value::Varint(v)) => e.term = v,
                    (3, wire::Value::Varint(v)) => e.index = v,
                    (4, wire::Value::Bytes(b)) => e.data = b.to_vec(),
                    (1..=4, _) => return Err("an entry field has the wrong wire type"),
                    _ => {}
                }
            }
            WalRecordKind::Entry(e)
        }
        STATE => {
            let mut h = HardState::default();
            let mut r = wire::Reader::new(rec.data);
            while let Some((field, value)) = r.next()? {
                match (field, value) {
                    (1, wire::Value::Varint(v)) => h.term = v,
                    (2, wire::Value::Varint(v)) => h.vote = v,
                    (3, wire::Value::Varint(v)) => h.commit = v,
                    (1..=3, _) => return Err("a hard-state field has the wrong wire type"),
                    _ => {}
                }
            }
            WalRecordKind::State(h)
        }
        CRC => WalRecordKind::Crc(rec.crc),
        SNAPSHOT => {
            let (mut index, mut term) = (0, 0);
            let mut r = wire::Reader::new(rec.data);
            while let Some((field, value)) = r.next()? {
                match (field, value) {
                    (1, wire::Value::Varint(v)) => index = v,
                    (2, wire::Value::Varint(v)) => term = v,
                    (1..=2, _) => return Err("a snapshot field has the wrong wire type"),
                    _ => {}
                }
            }
            WalRecordKind::Snapshot { index, term }
        }
        other => WalRecordKind::Unknown {
            record_type: other,
            len: rec.data.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a frame for a record of `record_type` with `data`, chaining `crc`.
    pub(crate) fn frame(record_type: u8, data: &[u8], crc: &mut u32) -> Vec<u8> {
        let c = if record_type == 4 {
            *crc
        } else {
            *crc = crc32c::crc32c_append(*crc, data);
            *crc
        };
        let mut rec = vec![0x08, record_type, 0x10];
        let mut v = u64::from(c);
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                rec.push(b);
                break;
            }
            rec.push(b | 0x80);
        }
        rec.push(0x1a);
        rec.push(u8::try_from(data.len()).expect("short"));
        rec.extend_from_slice(data);
        let pad = (8 - rec.len() % 8) % 8;
        let mut lf = rec.len() as u64;
        if pad > 0 {
            lf |= (0x80 | pad as u64) << 56;
        }
        let mut out = lf.to_le_bytes().to_vec();
        out.extend_from_slice(&rec);
        out.resize(out.len() + pad, 0);
        out
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_segment_name("0000000000000001-00000000000000ff.wal"),
            Some((1, 255))
        );
        assert_eq!(parse_segment_name("0.tmp"), None);
        assert_eq!(
            parse_segment_name("000000000000001-00000000000000ff.wal"),
            None
        );
        assert_eq!(
            parse_segment_name("+000000000000001-00000000000000ff.wal"),
            None
        );
    }

    #[test]
    fn unknown_type_is_kept_and_chain_checks() {
        let mut crc = 0;
        let mut seg = frame(4, &[], &mut crc);
        seg.extend(frame(9, b"odd", &mut crc));
        seg.extend(frame(3, &[0x08, 0x01, 0x10, 0x00, 0x18, 0x05], &mut crc));
        seg.extend([0u8; 64]);
        let r = parse_segment("s.wal", &seg, 0);
        assert!(matches!(r.end, SegmentEnd::Clean), "{:?}", r.end);
        assert_eq!(r.records.len(), 3);
        assert_eq!(
            r.records[1].kind,
            WalRecordKind::Unknown {
                record_type: 9,
                len: 3
            }
        );
        assert_eq!(r.crc, crc);
        // A wrong previous CRC breaks the chain at the first hashed record.
        let r = parse_segment("s.wal", &seg, 0).crc;
        assert_eq!(r, crc);
    }

    #[test]
    fn crc_record_mismatch_is_reported() {
        let mut crc = 0x1234;
        let seg = frame(4, &[], &mut crc);
        let r = parse_segment("s.wal", &seg, 0x9999);
        assert!(matches!(
            r.end,
            SegmentEnd::Bad {
                error: SwarmError::Crc { .. },
                ..
            }
        ));
    }

    #[test]
    fn huge_lengths_do_not_allocate_or_panic() {
        for lf in [u64::MAX, 0x00FF_FFFF_FFFF_FFFF, 1 << 40, 7] {
            let mut seg = lf.to_le_bytes().to_vec();
            seg.extend([1u8; 16]);
            let r = parse_segment("s.wal", &seg, 0);
            assert!(r.records.is_empty());
            assert!(!matches!(r.end, SegmentEnd::Clean));
        }
        let r = parse_segment("s.wal", &[1, 2, 3], 0);
        assert!(matches!(r.end, SegmentEnd::Torn(_)));
    }
}
