#![no_main]
//! Fuzzes `moat_swarm::wal::parse_segment`, etcd's WAL framing and records
//! as a Docker Swarm manager writes them.
//!
//! The first byte picks the mode. Even: the rest is a segment as is (the
//! CRC chain rejects almost every mutation, so this mostly fuzzes the
//! framing). Odd: the rest is cut into `(type, data)` records that are
//! framed with a correct CRC chain, so the record decoders behind the CRC
//! get fuzzed too; such a segment must read to the end with one record per
//! input record, in order.

use libfuzzer_sys::fuzz_target;
use moat_swarm::wal::{SegmentEnd, WalRecordKind, parse_segment};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check(rest, parse_segment("fuzz.wal", rest, 0));
        return;
    }
    let records = split_records(rest);
    let segment = frame(&records);
    check(&segment, parse_segment("fuzz.wal", &segment, 0));
    let read = parse_segment("fuzz.wal", &segment, 0);
    match &read.end {
        // A record whose data does not decode as its type may stop it.
        SegmentEnd::Bad { .. } => {}
        SegmentEnd::Clean => {
            assert_eq!(
                read.records.len(),
                records.len(),
                "a framed record was lost"
            );
            assert_eq!(read.end_offset, segment.len() as u64);
            for (got, (t, d)) in read.records.iter().zip(&records) {
                assert_eq!(got.offset % 8, 0, "etcd frames are 8-byte aligned");
                match (&got.kind, *t) {
                    (WalRecordKind::Crc(_), 4)
                    | (WalRecordKind::Metadata(_), 1)
                    | (WalRecordKind::Entry(_), 2)
                    | (WalRecordKind::State(_), 3)
                    | (WalRecordKind::Snapshot { .. }, 5) => {}
                    (WalRecordKind::Unknown { record_type, len }, t) => {
                        assert_eq!(*record_type, i64::from(t));
                        assert_eq!(*len, d.len());
                    }
                    (kind, t) => panic!("type {t} read as {kind:?}"),
                }
            }
        }
        SegmentEnd::Torn(e) => panic!("a well-framed segment read as torn: {e}"),
    }
});

/// What holds for any input.
fn check(input: &[u8], read: moat_swarm::wal::SegmentRead) {
    assert!(read.end_offset <= input.len() as u64);
    let mut last = None;
    for r in &read.records {
        assert!(r.offset < read.end_offset);
        if let Some(l) = last {
            assert!(r.offset > l);
        }
        last = Some(r.offset);
        let _ = format!("{r:?}");
    }
    let _ = format!("{:?}", read.end);
    // Deterministic.
    let again = parse_segment(
        "fuzz.wal",
        &input[..usize::try_from(read.end_offset).unwrap_or(0)],
        0,
    );
    assert_eq!(
        again.records, read.records,
        "re-reading the good prefix differs"
    );
}

/// Cuts input into records: a type byte (1..=5 mostly, anything possible),
/// a length byte, then that many data bytes.
fn split_records(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let [t, len, rest @ ..] = b {
        let n = usize::from(*len).min(rest.len());
        let t = if *t & 0x80 == 0 { *t % 6 } else { *t };
        // A crc record carries no data of its own.
        let data = if t == 4 {
            Vec::new()
        } else {
            rest[..n].to_vec()
        };
        out.push((t, data));
        b = &rest[n..];
    }
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Frames records as etcd does, with a correct CRC-32C chain.
fn frame(records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut crc = 0u32;
    let mut out = Vec::new();
    for (t, data) in records {
        if *t != 4 {
            crc = crc32c_append(crc, data);
        }
        let mut rec = vec![0x08];
        varint(u64::from(*t), &mut rec);
        rec.push(0x10);
        varint(u64::from(crc), &mut rec);
        rec.push(0x1a);
        varint(data.len() as u64, &mut rec);
        rec.extend_from_slice(data);
        let pad = (8 - rec.len() % 8) % 8;
        let mut len_field = rec.len() as u64;
        if pad != 0 {
            len_field |= (0x80 | pad as u64) << 56;
        }
        out.extend_from_slice(&len_field.to_le_bytes());
        out.extend_from_slice(&rec);
        out.resize(out.len() + pad, 0);
    }
    out
}

/// CRC-32C (Castagnoli), Go `crc32.Update` semantics; bitwise, as the fuzz
/// crate does not depend on a CRC crate.
fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
    }
    !c
}
