#![no_main]
//! Fuzzes the reader of a manager's audit segment files
//! (`moat_store::audit_segments::scan_segment`, run at every start on
//! every segment): whatever the bytes, it returns records in order or a
//! damage report inside the file, and never panics. The cipher is the
//! benchmark's plaintext one, so inputs reach the record parser.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moat_pki::{ClusterId, NodeId};
use moat_store::RecordCipher;
use moat_store::audit_segments::scan_segment;

fn cipher() -> &'static RecordCipher {
    static C: OnceLock<RecordCipher> = OnceLock::new();
    C.get_or_init(|| RecordCipher::danger_plaintext(ClusterId::generate(), NodeId::generate()))
}

fuzz_target!(|data: &[u8]| {
    match scan_segment(data, cipher(), None) {
        Ok(scan) => {
            let mut next = scan.first;
            let mut offset = 0;
            for r in &scan.records {
                assert_eq!(r.seq, next, "records out of order");
                assert!(r.offset >= 16 && r.offset >= offset, "offsets go back");
                assert!((r.offset as usize) < data.len());
                next += 1;
                offset = r.offset + 1;
            }
            if let Some(at) = scan.torn_at {
                assert!(at as usize <= data.len());
            }
            // Deterministic: scanning again gives the same.
            let again = scan_segment(data, cipher(), None);
            assert_eq!(again.as_ref().ok(), Some(&scan));
        }
        Err(damage) => {
            assert!(damage.at as usize <= data.len(), "damage outside the file");
            assert!(!damage.reason.is_empty());
        }
    }
});
