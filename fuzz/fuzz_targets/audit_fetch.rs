#![no_main]
//! Fuzzes what a manager does with an `audit_records` answer from another
//! manager (issue 19, step 3): moat-node's decoder and shape checks
//! (`decode_request("audit_records answer", …)`), then the store's check
//! of the records against the log it holds
//! (`AuditSegments::fill`, on a log of 20 records missing 6 to 15).
//! Whatever the bytes: no panic, and records are written only if they are
//! exactly the log's (the fuzzer cannot forge SHA-256 links).

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moat_audit::{Action, Actor, Details, Event, MerkleLog, Outcome, Text, Timestamp};
use moat_pki::{ClusterId, NodeId};
use moat_store::RecordCipher;
use moat_store::audit_segments::AuditSegments;

struct Fixture {
    segments: AuditSegments,
    lines: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("moat-fuzz-audit-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cipher = std::sync::Arc::new(RecordCipher::danger_plaintext(
            ClusterId::generate(),
            NodeId::generate(),
        ));
        let mut log = MerkleLog::new();
        let mut lines = Vec::new();
        for i in 0..20 {
            let event = Event {
                node: "0123456789abcdefghijklmn00".parse().unwrap(),
                actor: Actor::local_operator(),
                action: Action::POLICY_UPDATE,
                target: Text::new("target", &format!("t{i}")).unwrap(),
                outcome: Outcome::Success,
                details: Details::new(),
            };
            let line = log
                .seal(Timestamp::from_unix(1_700_000_000 + i).unwrap(), event)
                .to_line();
            log.push_leaf(&line);
            lines.push(String::from_utf8(line).unwrap());
        }
        let segments = AuditSegments::open(&dir, cipher, 1 << 20, false).unwrap();
        segments.append(1, &lines[..5]).unwrap();
        segments.append(16, &lines[15..]).unwrap();
        Fixture { segments, lines }
    })
}

#[derive(serde::Deserialize)]
struct Page {
    first: u64,
    records: Vec<String>,
}

fuzz_target!(|data: &[u8]| {
    // moat-node's decoder and checks of the answer.
    let _ = moat_node::decode_request("audit_records answer", data);
    let Ok(page) = serde_json::from_slice::<Page>(data) else {
        return;
    };
    if page.records.is_empty() || page.records.len() > 4096 {
        return;
    }
    let f = fixture();
    let gaps = f.segments.gaps();
    match f.segments.fill(page.first, &page.records, None) {
        Ok(_) => {
            let from = usize::try_from(page.first - 1).unwrap();
            assert_eq!(
                &f.lines[from..from + page.records.len()],
                &page.records[..],
                "records that are not the log's were written"
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert_eq!(f.segments.gaps(), gaps, "a refused fill changed the gaps");
        }
    }
});
