#![no_main]
//! Fuzzes `moat_pki::inspect` on DER and PEM input: reports must be consistent and serializable.

use libfuzzer_sys::fuzz_target;
use moat_pki::{CertReport, MAX_CHAIN_LEN, inspect};

fuzz_target!(|data: &[u8]| {
    let Ok(reports) = inspect(data) else {
        return;
    };
    let is_pem = data.trim_ascii_start().starts_with(b"-----BEGIN");
    if is_pem {
        assert!(!reports.is_empty() && reports.len() <= MAX_CHAIN_LEN + 1);
    } else {
        // A DER certificate with trailing bytes is rejected, so the
        // fingerprint covers exactly the input.
        assert_eq!(reports.len(), 1);
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        assert_eq!(reports[0].sha256_fingerprint, colon_hex(digest.as_ref()));
    }
    for report in &reports {
        check(report);
    }
    // `moat cert inspect --json` must always be able to print the result.
    serde_json::to_string(&reports).unwrap_or_else(|e| panic!("report does not serialize: {e}"));
    // Inspection is deterministic.
    assert_eq!(inspect(data).ok().as_ref(), Some(&reports));
});

fn check(report: &CertReport) {
    let fp = &report.sha256_fingerprint;
    assert_eq!(fp.len(), 32 * 3 - 1, "fingerprint {fp:?}");
    assert!(
        fp.split(':').all(|pair| pair.len() == 2
            && pair
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())),
        "fingerprint {fp:?}"
    );
    assert!(
        report
            .serial
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "serial {:?}",
        report.serial
    );
    if let Some(id) = &report.moat_node {
        // The identity is read from the same certificate as the report.
        assert_eq!(id.serial, report.serial);
        let node = id.node_id.to_string();
        assert!(
            report.subject.contains(&node),
            "node id {node} not in subject {:?}",
            report.subject
        );
    }
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
