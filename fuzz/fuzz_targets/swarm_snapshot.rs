#![no_main]
//! Fuzzes `moat_swarm::snap::parse_snapshot`, etcd's snapshot file as a
//! Docker Swarm manager writes it, and opening its sealed data.
//!
//! Each input is read twice: as a whole snapshot file, and as the inner
//! `raftpb.Snapshot` wrapped in a `snappb.Snapshot` with a correct CRC-32C
//! (a CRC stops a mutator cold), which must then never fail on its CRC.

use libfuzzer_sys::fuzz_target;
use moat_swarm::error::SwarmError;
use moat_swarm::key::{DataKeys, Dek};
use moat_swarm::snap::parse_snapshot;

fuzz_target!(|data: &[u8]| {
    let _ = check(data);
    let wrapped = wrap(data);
    if let Err(SwarmError::Crc { .. }) = check(&wrapped) {
        panic!("a snapshot with a correct CRC failed its CRC check");
    }
});

fn check(file: &[u8]) -> Result<(), SwarmError> {
    let snap = parse_snapshot("fuzz.snap", file)?;
    assert!(snap.data_offset <= file.len() as u64);
    assert!(snap.data.len() <= file.len());
    let _ = format!("{snap:?}");
    // Opening with a fixed fake key must not panic; NONE opens to its data.
    let keys = DataKeys::new(
        Some(Dek::from_bytes([0x42; 32])),
        Some(Dek::from_bytes([0x24; 32])),
    );
    if let Ok(opened) = moat_swarm::record::open(&snap.data, &keys) {
        assert!(opened.plaintext.len() <= snap.data.len());
        let _ = format!("{opened:?}");
    }
    // Deterministic.
    assert!(parse_snapshot("fuzz.snap", file).ok() == Some(snap));
    Ok(())
}

/// `snappb.Snapshot { 1: crc32c(inner), 2: inner }`.
fn wrap(inner: &[u8]) -> Vec<u8> {
    let mut out = vec![0x08];
    varint(u64::from(crc32c(inner)), &mut out);
    out.push(0x12);
    varint(inner.len() as u64, &mut out);
    out.extend_from_slice(inner);
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

/// CRC-32C (Castagnoli) from 0; bitwise, as the fuzz crate does not depend
/// on a CRC crate.
fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
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
