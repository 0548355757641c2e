//! Issue 19, steps 3 and 5, on real `moat daemon` processes: a manager
//! that installed a snapshot fetches the audit records it lacks from the
//! other managers and then serves the whole log; `moat audit archive`
//! writes, verifies and drops the oldest records, which are then read,
//! verified and proven from the archive.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use moat_testkit::Harness;
use serde_json::Value;

const PROPAGATION: Duration = Duration::from_secs(60);

fn records(h: &Harness, node: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "ls", "--format", "json"];
    args.extend_from_slice(extra);
    h.moat(node, &args)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ca(h: &Harness, node: &str) -> String {
    h.daemon(node)
        .state_dir
        .join("certs/ca.crt")
        .display()
        .to_string()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Manager m3 is down while the others take a snapshot and purge their
/// Raft logs (turning autolock on rotates each manager's data key, which
/// does both); back, it is sent a snapshot, so it lacks the records made
/// before it. Its fetch loop gets them from m1 or m2, checks them against
/// the snapshot's frontier and writes them: m3 then exports the whole log,
/// which verifies, with nothing missing.
#[test]
fn a_manager_that_installed_a_snapshot_fetches_the_records_it_lacks() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1", "m2", "m3"], &[]);
    assert_eq!(h.stop("m3"), Some(0));
    for _ in 0..5 {
        h.moat("m1", &["join-token", "--rotate", "-q", "worker"])
            .ok();
    }
    let out = h.moat("m1", &["update", "--autolock=true"]);
    assert!(out.ok().contains("Cluster updated."), "{}", out.stdout);
    // Each running manager rotates its data key: snapshot, log purged.
    h.wait_until("m1 and m2 to rotate their data keys", PROPAGATION, || {
        records(&h, "m1", &["--action", "dek.rotate"]).len() >= 2
    });
    h.moat("m1", &["join-token", "--rotate", "-q", "worker"])
        .ok();
    h.restart("m3");
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("m3.bundle");
    let mut last = String::new();
    h.wait_until("m3 to export the whole log", PROPAGATION, || {
        let run = h.moat("m3", &["audit", "export", "-o", path(&export)]);
        last = format!("{}{}", run.stdout, run.stderr);
        run.code == 0
    });
    let log = h.daemon("m3").log();
    assert!(
        log.contains("fetched audit records"),
        "m3 never fetched records (last export: {last}); its log:\n{log}"
    );
    assert!(!last.contains("lacks"), "{last}");
    h.moat(
        "m3",
        &["audit", "verify", path(&export), "--ca", &ca(&h, "m1")],
    )
    .ok();
    // The same records as a manager that never lacked any.
    let size = records(&h, "m1", &[]).len();
    let on_m3 = records(&h, "m3", &[]);
    assert!(on_m3.len() >= size.min(on_m3.len()) && on_m3.len() > 10);
    assert_eq!(on_m3[0]["seq"], 1);
    assert_eq!(on_m3[0]["action"], "cluster.init");
    let first = records(&h, "m1", &[]);
    for (a, b) in first.iter().zip(on_m3.iter()) {
        assert_eq!(a, b);
    }
    // Proofs work on m3 over fetched records.
    let proof = dir.path().join("proof.json");
    h.moat("m3", &["audit", "prove", "3", "-o", path(&proof)])
        .ok();
    h.moat(
        "m3",
        &["audit", "verify-proof", path(&proof), "--ca", &ca(&h, "m1")],
    )
    .ok();
}

/// `moat audit archive --before DATE -o DIR`: the archive is written,
/// verified, and only then are the records dropped; reads below it name
/// the archive; the archive verifies alone and with a later export; a
/// record in it is proven against the cluster's current head; a
/// non-empty DIR is refused; workers cannot fetch records.
#[test]
fn old_records_are_archived_verified_and_proven_from_the_archive() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1", "m2"], &[]);
    for _ in 0..3 {
        h.moat("m1", &["join-token", "--rotate", "-q", "worker"])
            .ok();
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    // A non-empty directory is never written over.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), "x").unwrap();
    h.moat(
        "m1",
        &[
            "audit",
            "archive",
            "--before",
            "2999-01-01",
            "-o",
            path(&busy),
        ],
    )
    .fails_with("not an empty directory");
    let before = records(&h, "m1", &[]);
    let last = before.last().unwrap()["seq"].as_u64().unwrap();
    let out = h.moat(
        "m1",
        &[
            "audit",
            "archive",
            "--before",
            "2999-01-01T00:00:00Z",
            "-o",
            path(&archive),
            "--ca",
            &ca(&h, "m1"),
        ],
    );
    let text = out.ok().to_string();
    assert!(text.contains("verified, digest sha256:"), "{text}");
    assert!(text.contains("The managers dropped records 1 to"), "{text}");
    for f in ["archive.json", "heads.json", "ca.pem", "records.jsonl"] {
        assert!(archive.join(f).is_file(), "{f}");
    }
    // The archival is a record of its own, on every manager.
    h.wait_until("m2 to see the archival", PROPAGATION, || {
        h.moat("m2", &["audit", "ls", "--action", "audit.archive"])
            .stdout
            .contains("audit.archive")
    });
    let kept = records(&h, "m2", &[]);
    assert!(kept[0]["seq"].as_u64().unwrap() > last - 1, "{kept:?}");
    let archival = kept
        .iter()
        .find(|r| r["action"] == "audit.archive")
        .unwrap();
    let digest = archival["details"]["digest"].as_str().unwrap().to_string();
    assert!(text.contains(&digest), "{text} / {digest}");
    // Reads below the mark say where the records went.
    h.moat("m2", &["audit", "ls", "--since", "1"])
        .fails_with("were archived on");
    h.moat("m2", &["audit", "prove", "2"])
        .fails_with("--archive DIR");
    // The archive verifies alone, and a later export continues it.
    let verify = h.moat(
        "m1",
        &[
            "audit",
            "verify",
            "--archive",
            path(&archive),
            "--ca",
            &ca(&h, "m1"),
        ],
    );
    assert!(verify.ok().contains(&digest), "{}", verify.stdout);
    let export = dir.path().join("rest.bundle");
    h.moat("m2", &["audit", "export", "-o", path(&export)]).ok();
    h.moat(
        "m1",
        &[
            "audit",
            "verify",
            "--archive",
            path(&archive),
            path(&export),
            "--ca",
            &ca(&h, "m1"),
        ],
    )
    .ok();
    // An archived record, proven against the cluster's current head.
    let proof = dir.path().join("proof.json");
    let proved = h.moat(
        "m2",
        &[
            "audit",
            "prove",
            "2",
            "--archive",
            path(&archive),
            "-o",
            path(&proof),
        ],
    );
    proved.ok();
    assert!(
        proved.stderr.contains("current signed tree head"),
        "{}",
        proved.stderr
    );
    h.moat(
        "m1",
        &["audit", "verify-proof", path(&proof), "--ca", &ca(&h, "m1")],
    )
    .ok();
    // A manager that joins after the archival, from a snapshot (turning
    // autolock on makes m1 and m2 snapshot and purge their Raft logs):
    // it fetches the kept records and the archived records' leaf hashes,
    // then proves archived records against the current head too.
    let out = h.moat("m1", &["update", "--autolock=true"]);
    assert!(out.ok().contains("Cluster updated."), "{}", out.stdout);
    h.wait_until("m1 and m2 to rotate their data keys", PROPAGATION, || {
        records(&h, "m1", &["--action", "dek.rotate"]).len() >= 2
    });
    let manager_token = h
        .moat("m1", &["join-token", "-q", "manager"])
        .ok()
        .trim()
        .to_string();
    let addr = h.nodes("m1")["m1"]["address"].as_str().unwrap().to_string();
    h.start("m3");
    h.join("m3", &manager_token, &addr).ok();
    let proof3 = dir.path().join("proof-m3.json");
    let mut last = String::new();
    h.wait_until("m3 to prove an archived record", PROPAGATION, || {
        let _ = std::fs::remove_file(&proof3);
        let run = h.moat(
            "m3",
            &[
                "audit",
                "prove",
                "2",
                "--archive",
                path(&archive),
                "-o",
                path(&proof3),
            ],
        );
        last = format!("{}{}", run.stdout, run.stderr);
        run.code == 0 && run.stderr.contains("current signed tree head")
    });
    let log = h.daemon("m3").log();
    assert!(
        log.contains("fetched and checked the leaf hashes of archived audit records"),
        "{last}\n{log}"
    );
    h.moat(
        "m1",
        &[
            "audit",
            "verify-proof",
            path(&proof3),
            "--ca",
            &ca(&h, "m1"),
        ],
    )
    .ok();
    let export3 = dir.path().join("m3.bundle");
    h.moat("m3", &["audit", "export", "-o", path(&export3)])
        .ok();
    h.moat(
        "m1",
        &[
            "audit",
            "verify",
            "--archive",
            path(&archive),
            path(&export3),
            "--ca",
            &ca(&h, "m1"),
        ],
    )
    .ok();

    // A changed archive no longer verifies.
    let records_file = archive.join("records.jsonl");
    let text = std::fs::read_to_string(&records_file).unwrap();
    std::fs::write(
        &records_file,
        text.replacen("cluster.init", "cluster.xnit", 1),
    )
    .unwrap();
    h.moat("m1", &["audit", "verify", "--archive", path(&archive)])
        .fails_with("does not match the digest");
}
