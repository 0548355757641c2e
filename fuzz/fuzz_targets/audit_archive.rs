#![no_main]
//! Fuzzes the readers of the files D48 adds: an archive's manifest
//! (`moat_audit::parse_archive_manifest`, read by `moat audit verify
//! --archive` and `prove --archive` from a directory an auditor was
//! handed) and a manager's leaf hashes file of archived records
//! (`moat_store::audit_segments::parse_leaves`, read at every start).
//! The first byte picks which. No panic, sizes checked before use, and a
//! manifest that parses says a range its head covers.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moat_pki::{ClusterId, NodeId};
use moat_store::RecordCipher;
use moat_store::audit_segments::parse_leaves;

fn cipher() -> &'static RecordCipher {
    static C: OnceLock<RecordCipher> = OnceLock::new();
    C.get_or_init(|| RecordCipher::danger_plaintext(ClusterId::generate(), NodeId::generate()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(m) = moat_audit::parse_archive_manifest(body) {
            assert!(m.first >= 1 && m.first <= m.last);
            assert_eq!(m.head.size, m.last);
            assert_eq!(m.records_sha256.len(), 64);
        }
    } else {
        match parse_leaves(body, cipher()) {
            Ok(leaves) => assert!(leaves.len() * 32 <= body.len()),
            Err((at, why)) => {
                assert!(at as usize <= body.len());
                assert!(!why.is_empty());
            }
        }
    }
});
