//! etcd snapshot files as SwarmKit keeps them in `raft/snap-v3-encrypted`.
//!
//! Files are named `%016x-%016x.snap` (term, index); the newest by name is
//! used, `*.broken` files (etcd's name for ones it could not load) are
//! skipped, and one whose CRC fails is reported and the next older one is
//! tried ([`crate::raftlog`] does that). A file is:
//!
//! ```text
//! snappb.Snapshot (proto2): 1 crc uint32 = CRC-32C(0, data), 2 data = raftpb.Snapshot
//! raftpb.Snapshot: 1 data = MaybeEncryptedRecord (the api.Snapshot, sealed),
//!                  2 metadata {1 conf_state {1 nodes u64*, 2 learners u64*}, 2 index, 3 term}
//! ```
//!
//! The metadata is in the clear. [`parse_snapshot`] is a pure function over
//! the file's bytes (fuzzed by `swarm_snapshot`); the caller caps the file
//! at [`MAX_SNAPSHOT`] bytes before reading it.

use crate::error::{Result, SwarmError};
use crate::record::wire;

/// The largest snapshot file read.
pub const MAX_SNAPSHOT: u64 = 1024 * 1024 * 1024;

/// A snapshot file, decoded (its data still sealed).
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The CRC stated in the file (checked).
    pub crc: u32,
    /// The raft index the snapshot covers.
    pub index: u64,
    /// The raft term of that index.
    pub term: u64,
    /// The voters (`conf_state.nodes`).
    pub conf_nodes: Vec<u64>,
    /// The learners (`conf_state.learners`).
    pub conf_learners: Vec<u64>,
    /// The `MaybeEncryptedRecord` holding the `api.Snapshot`.
    pub data: Vec<u8>,
    /// Where `data` starts in the file.
    pub data_offset: u64,
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("crc", &self.crc)
            .field("index", &self.index)
            .field("term", &self.term)
            .field("conf_nodes", &self.conf_nodes)
            .field("conf_learners", &self.conf_learners)
            .field("data", &format_args!("<{} bytes>", self.data.len()))
            .finish()
    }
}

/// A snapshot file name's (term, index), if it is `%016x-%016x.snap`.
pub fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (term, index) = stem.split_once('-')?;
    let hex = |s: &str| {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(term)?, hex(index)?))
}

/// Parses and CRC-checks a snapshot file's bytes; `file` names it in errors.
pub fn parse_snapshot(file: &str, bytes: &[u8]) -> Result<SnapshotFile> {
    let malformed = |offset: u64, what: &str| SwarmError::Malformed {
        file: file.to_owned(),
        offset,
        what: what.to_owned(),
    };
    let mut crc: Option<u32> = None;
    let mut outer: Option<(&[u8], usize)> = None;
    let mut r = wire::Reader::new(bytes);
    while let Some((field, value)) = r
        .next()
        .map_err(|e| malformed(r.pos() as u64, &format!("snapshot file: {e}")))?
    {
        match (field, value) {
            (1, wire::Value::Varint(v)) => crc = Some(wire::as_u32(v)),
            (2, wire::Value::Bytes(b)) => outer = Some((b, r.pos() - b.len())),
            (1..=2, _) => {
                return Err(malformed(
                    0,
                    "snapshot file: a field has the wrong wire type",
                ));
            }
            _ => {}
        }
    }
    let (Some(crc), Some((data, data_at))) = (crc, outer) else {
        return Err(malformed(0, "empty snapshot (no CRC or no data)"));
    };
    if data.is_empty() || crc == 0 {
        return Err(malformed(0, "empty snapshot (no CRC or no data)"));
    }
    let found = crc32c::crc32c(data);
    if found != crc {
        return Err(SwarmError::Crc {
            file: file.to_owned(),
            offset: data_at as u64,
            expected: crc,
            found,
        });
    }

    let mut snap = SnapshotFile {
        crc,
        index: 0,
        term: 0,
        conf_nodes: Vec::new(),
        conf_learners: Vec::new(),
        data: Vec::new(),
        data_offset: data_at as u64,
    };
    let at = |rel: usize| (data_at + rel) as u64;
    let mut r = wire::Reader::new(data);
    while let Some((field, value)) = r
        .next()
        .map_err(|e| malformed(at(r.pos()), &format!("raft snapshot: {e}")))?
    {
        match (field, value) {
            (1, wire::Value::Bytes(b)) => {
                snap.data_offset = at(r.pos() - b.len());
                snap.data = b.to_vec();
            }
            (2, wire::Value::Bytes(meta)) => {
                let meta_at = r.pos() - meta.len();
                read_metadata(meta, &mut snap)
                    .map_err(|e| malformed(at(meta_at), &format!("snapshot metadata: {e}")))?;
            }
            (1..=2, _) => {
                return Err(malformed(
                    at(0),
                    "raft snapshot: a field has the wrong wire type",
                ));
            }
            _ => {}
        }
    }
    Ok(snap)
}

fn read_metadata(meta: &[u8], snap: &mut SnapshotFile) -> std::result::Result<(), &'static str> {
    let mut r = wire::Reader::new(meta);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, wire::Value::Bytes(conf)) => {
                let mut c = wire::Reader::new(conf);
                while let Some((f, v)) = c.next()? {
                    match f {
                        1 => wire::push_u64s(v, &mut snap.conf_nodes)?,
                        2 => wire::push_u64s(v, &mut snap.conf_learners)?,
                        _ => {}
                    }
                }
            }
            (2, wire::Value::Varint(v)) => snap.index = v,
            (3, wire::Value::Varint(v)) => snap.term = v,
            (1..=3, _) => return Err("a field has the wrong wire type"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(nodes_packed: bool) -> Vec<u8> {
        // raftpb.Snapshot { data: [0x12, 0x01, 0x41], metadata { conf_state { nodes 5, 6 }, index 9, term 2 } }
        let conf: Vec<u8> = if nodes_packed {
            vec![0x0a, 0x02, 0x05, 0x06]
        } else {
            vec![0x08, 0x05, 0x08, 0x06]
        };
        let mut meta = vec![0x0a, u8::try_from(conf.len()).expect("small")];
        meta.extend(conf);
        meta.extend([0x10, 0x09, 0x18, 0x02]);
        let mut raft = vec![
            0x0a,
            0x03,
            0x12,
            0x01,
            0x41,
            0x12,
            u8::try_from(meta.len()).expect("small"),
        ];
        raft.extend(meta);
        let crc = crc32c::crc32c(&raft);
        let mut out = vec![0x08];
        let mut v = u64::from(crc);
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.push(0x12);
        out.push(u8::try_from(raft.len()).expect("small"));
        out.extend(raft);
        out
    }

    #[test]
    fn packed_and_unpacked_nodes() {
        for packed in [true, false] {
            let s = parse_snapshot("x.snap", &build(packed)).expect("parses");
            assert_eq!(s.conf_nodes, vec![5, 6]);
            assert_eq!((s.index, s.term), (9, 2));
            assert_eq!(s.data, vec![0x12, 0x01, 0x41]);
        }
    }

    #[test]
    fn crc_flip_is_caught() {
        let mut b = build(true);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            parse_snapshot("x.snap", &b),
            Err(SwarmError::Crc { .. })
        ));
        assert!(parse_snapshot("x.snap", &[]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_snapshot_name("0000000000000002-0000000000000326.snap"),
            Some((2, 0x326))
        );
        assert_eq!(
            parse_snapshot_name("0000000000000002-0000000000000326.snap.broken"),
            None
        );
    }
}
