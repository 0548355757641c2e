#![no_main]
//! Fuzzes `moat audit verify`'s input: `read_bundle` on a one-file bundle, then `verify_bundle` against the bundle's own CA; the report must be consistent, and the bundle written out again must verify the same.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moat_audit::{
    Bundle, MAX_CA_PEM_BYTES, MAX_HEADS, MAX_PROBLEMS, Report, read_bundle, verify_bundle,
};

/// The scratch file each input is written to (`read_bundle` reads a path,
/// as `moat audit verify` does); one per process.
fn scratch(which: &str) -> &'static Path {
    static A: OnceLock<PathBuf> = OnceLock::new();
    static B: OnceLock<PathBuf> = OnceLock::new();
    let cell = if which == "a" { &A } else { &B };
    cell.get_or_init(|| {
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!(
            "moat-fuzz-audit-{}-{which}.bundle",
            std::process::id()
        ))
    })
}

fn read(which: &str, data: &[u8]) -> Option<Bundle> {
    let path = scratch(which);
    std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    read_bundle(path).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(bundle) = read("a", data) else {
        return;
    };
    assert!(bundle.ca_pem.len() as u64 <= MAX_CA_PEM_BYTES);
    assert!(bundle.heads.len() <= MAX_HEADS);

    let report = verify_bundle(&bundle, bundle.ca_pem.as_bytes(), None);
    check(&bundle, &report);

    // `moat audit verify --json` prints the report.
    serde_json::to_string(&report).unwrap_or_else(|e| panic!("report does not serialize: {e}"));
    assert!(!report.to_string().is_empty());

    // The bundle as the exporter would write it (records as stored, the
    // header re-encoded) reads back and verifies exactly the same.
    let written = bundle
        .to_one_file()
        .unwrap_or_else(|e| panic!("a bundle that was read does not write out: {e}"));
    if written == data {
        // Already in the exporter's own form (every mutation of a record
        // line): the second pass would read the same bytes.
        return;
    }
    let again = read("b", &written).unwrap_or_else(|| {
        panic!(
            "a bundle written out does not read back: {:?}",
            read_bundle(scratch("b")).err()
        )
    });
    assert_eq!(again.base_size, bundle.base_size);
    assert_eq!(again.base_frontier, bundle.base_frontier);
    assert_eq!(again.ca_pem, bundle.ca_pem);
    assert_eq!(again.heads.len(), bundle.heads.len());
    let report_again = verify_bundle(&again, again.ca_pem.as_bytes(), None);
    assert_eq!(
        report, report_again,
        "the same bundle written out verifies differently"
    );
});

/// What every report must satisfy, whatever the bundle.
fn check(bundle: &Bundle, report: &Report) {
    assert_eq!(report.base_size, bundle.base_size);
    assert_eq!(report.heads, bundle.heads.len());
    assert!(report.heads_verified <= report.heads);
    assert!(report.problems.len() <= MAX_PROBLEMS);
    assert!(report.more_problems == 0 || report.problems.len() == MAX_PROBLEMS);
    assert!(
        report.ca_matches_bundle,
        "the bundle's own CA differs from itself"
    );
    assert_eq!(report.trusted_head_held, None);

    let mut lines = 0u64;
    let mut bytes = 0u64;
    let listed = bundle.for_each_record(|line| {
        lines += 1;
        bytes += line.len() as u64;
    });
    if let Err(e) = listed {
        assert!(
            !report.ok(),
            "verified, yet its records cannot be listed: {e}"
        );
    }
    if report.ok() {
        // Everything holds: every record is covered by a verified head and
        // the largest proven size is the end of the bundle.
        assert_eq!(report.records, lines);
        assert_eq!(report.bytes, bytes);
        assert!(
            report.heads_verified > 0,
            "a bundle verified without a head"
        );
        assert_eq!(report.verified_size, bundle.base_size + lines);
    } else {
        assert!(!report.problems.is_empty());
    }
    assert!(report.verified_size <= bundle.base_size.saturating_add(report.records));
}
