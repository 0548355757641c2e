//! `moat audit verify` and `moat audit verify-proof` on bundles and proof
//! files built with moat-audit and a real cluster CA and manager key,
//! untouched and tampered with.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moat_audit::{
    Action, Actor, Bundle, Details, Event, InclusionProofFile, Layout, MerkleLog, Outcome, Record,
    SignedTreeHead, Text, Timestamp, write_bundle,
};
use moat_pki::{
    CertExpiry, CertificateDer, ClusterId, KeyAlgorithm, NodeId, PrivateKey, Role, RootCa,
    RootOptions, TrustRoots,
};
use time::OffsetDateTime;

/// A cluster CA, one manager's key and certificate, and a log of `n`
/// records with a signed tree head every 10 records and one at `n`.
struct Log {
    ca: RootCa,
    manager: NodeId,
    merkle: MerkleLog,
    records: Vec<Record>,
    heads: Vec<SignedTreeHead>,
}

impl Log {
    fn new(n: u64) -> Self {
        let now = OffsetDateTime::now_utc();
        let ca = RootCa::generate(ClusterId::generate(), &RootOptions::default(), now).unwrap();
        let roots = TrustRoots::new(vec![ca.certificate().clone()]).unwrap();
        let (manager, key, chain) = manager_of(&ca, now);
        let signer = moat_audit::HeadSigner::new(&key, &chain, &roots, now).unwrap();
        let time = Timestamp::from_datetime(now).unwrap();
        let mut merkle = MerkleLog::new();
        let mut records = Vec::new();
        let mut heads = Vec::new();
        for i in 1..=n {
            let r = merkle.seal(time, event(manager, i));
            merkle.append_record(&r).unwrap();
            if i.is_multiple_of(10) || i == n {
                heads.push(signer.sign(i, merkle.current_root(), time).unwrap());
            }
            records.push(r);
        }
        Self {
            ca,
            manager,
            merkle,
            records,
            heads,
        }
    }

    fn ca_pem(&self) -> String {
        self.ca.certificate_pem()
    }

    /// Writes records `1..=upto` and the heads up to that size to `path`.
    fn write(&self, path: &Path, layout: Layout, upto: u64) {
        let heads = self.heads.iter().filter(|h| h.size <= upto).cloned();
        let mut bundle = Bundle::new(self.ca_pem(), heads.collect());
        for r in &self.records[..upto as usize] {
            bundle.push_record(&r.to_line()).unwrap();
        }
        write_bundle(path, &bundle, layout).unwrap();
    }

    fn head(&self, size: u64) -> SignedTreeHead {
        self.heads.iter().find(|h| h.size == size).unwrap().clone()
    }
}

fn manager_of(
    ca: &RootCa,
    at: OffsetDateTime,
) -> (NodeId, PrivateKey, Vec<CertificateDer<'static>>) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let id = NodeId::generate();
    let issued = ca
        .sign_csr(
            key.csr().unwrap().as_ref(),
            id,
            Role::Manager,
            CertExpiry::DEFAULT,
            at,
        )
        .unwrap();
    (id, key, vec![issued.der])
}

fn event(node: NodeId, i: u64) -> Event {
    let mut details = Details::new();
    details.insert("serial", &format!("{i:08x}")).unwrap();
    Event {
        node,
        actor: Actor::node(node),
        action: Action::CERT_RENEW,
        target: Text::new("target", &format!("node:worker-{i}")).unwrap(),
        outcome: Outcome::Success,
        details,
    }
}

fn moat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `moat args…`, checks the exit code, returns stdout + stderr.
fn run(args: &[&str], code: i32) -> String {
    let out = moat(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "moat {args:?}:\n{text}");
    text
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A temporary directory with the log's CA written to `ca.crt`.
fn workdir(log: &Log) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, log.ca_pem()).unwrap();
    (dir, ca)
}

/// Rewrites the records file of a directory bundle line by line.
fn edit_records(bundle: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let path = bundle.join(moat_audit::RECORDS_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(&path, out).unwrap();
}

#[test]
fn an_untouched_bundle_verifies_in_both_layouts() {
    let log = Log::new(30);
    let (dir, ca) = workdir(&log);
    for (name, layout) in [("one.jsonl", Layout::File), ("dir", Layout::Directory)] {
        let bundle = dir.path().join(name);
        log.write(&bundle, layout, 30);

        let text = run(
            &["audit", "verify", path_str(&bundle), "--ca", path_str(&ca)],
            0,
        );
        assert!(
            text.starts_with("OK: 30 records, 3 signed tree heads verified\n"),
            "{text}"
        );
        assert!(
            !text.contains("trusting the CA certificate inside"),
            "{text}"
        );

        // Without --ca the bundle's own CA is used, and the output says so.
        let text = run(&["audit", "verify", path_str(&bundle)], 0);
        assert!(
            text.contains(
                "trusting the CA certificate inside the bundle; pass --ca ROOT.crt to check \
                 against one you obtained independently"
            ),
            "{text}"
        );
        assert!(text.contains("OK: 30 records"), "{text}");
    }

    // JSON: the report, for programs.
    let bundle = dir.path().join("dir");
    let out = moat(&[
        "audit",
        "verify",
        path_str(&bundle),
        "--ca",
        path_str(&ca),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["records"], 30);
    assert_eq!(report["heads_verified"], 3);
    assert_eq!(report["verified_size"], 30);
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn one_changed_byte_is_located_at_its_record() {
    let log = Log::new(30);
    let (dir, ca) = workdir(&log);
    let bundle = dir.path().join("b");
    log.write(&bundle, Layout::Directory, 30);
    edit_records(&bundle, |lines| {
        let line = &mut lines[16];
        let at = line.find("worker-17").unwrap() + "worker-".len();
        line.replace_range(at..at + 1, "9");
    });
    let text = run(
        &["audit", "verify", path_str(&bundle), "--ca", path_str(&ca)],
        1,
    );
    assert!(text.contains("record 17 was altered"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("17 ") && l.contains("record 17 was altered")),
        "the problem's line starts with its sequence number:\n{text}"
    );
    assert!(text.contains("does NOT verify"), "{text}");
    assert!(!text.contains("OK:"), "{text}");
}

#[test]
fn a_deleted_record_is_reported_as_a_gap() {
    let log = Log::new(30);
    let (dir, ca) = workdir(&log);
    let bundle = dir.path().join("b");
    log.write(&bundle, Layout::Directory, 30);
    edit_records(&bundle, |lines| {
        lines.remove(14);
    });
    let text = run(
        &["audit", "verify", path_str(&bundle), "--ca", path_str(&ca)],
        1,
    );
    assert!(
        text.contains("sequence gap: 16 follows 14 (record 15 removed)"),
        "{text}"
    );
}

#[test]
fn a_trusted_head_larger_than_the_bundle_shows_truncation() {
    let log = Log::new(40);
    let (dir, ca) = workdir(&log);
    let bundle = dir.path().join("b.jsonl");
    log.write(&bundle, Layout::File, 30);
    let head = dir.path().join("head.json");

    // The auditor kept the head at 20: the log only grew since.
    std::fs::write(&head, log.head(20).to_json()).unwrap();
    let text = run(
        &[
            "audit",
            "verify",
            path_str(&bundle),
            "--ca",
            path_str(&ca),
            "--trusted-head",
            path_str(&head),
        ],
        0,
    );
    assert!(
        text.contains(
            "OK: 30 records, 3 signed tree heads verified, log consistent with the trusted head"
        ),
        "{text}"
    );

    // The auditor kept the head at 40: the bundle lost its tail.
    std::fs::write(&head, log.head(40).to_json()).unwrap();
    let text = run(
        &[
            "audit",
            "verify",
            path_str(&bundle),
            "--ca",
            path_str(&ca),
            "--trusted-head",
            path_str(&head),
        ],
        1,
    );
    assert!(
        text.contains("the log was truncated: the auditor's head has size 40, the bundle only 30"),
        "{text}"
    );
}

#[test]
fn another_clusters_ca_is_refused() {
    let log = Log::new(12);
    let other = Log::new(1);
    let (dir, _) = workdir(&log);
    let (_other_dir, other_ca) = workdir(&other);
    let bundle = dir.path().join("b");
    log.write(&bundle, Layout::Directory, 12);
    let text = run(
        &[
            "audit",
            "verify",
            path_str(&bundle),
            "--ca",
            path_str(&other_ca),
        ],
        1,
    );
    assert!(text.contains("does not verify"), "{text}");
    assert!(
        text.contains("the CA certificate given differs from the one in the bundle"),
        "{text}"
    );
}

#[test]
fn a_proof_file_verifies_and_a_tampered_one_fails() {
    let log = Log::new(30);
    let (dir, ca) = workdir(&log);
    let head = log.head(30);
    let time = head.time.to_string();
    let file = InclusionProofFile::new(&log.merkle, log.records[16].clone(), head).unwrap();
    let proof = dir.path().join("proof.json");
    std::fs::write(&proof, file.to_json()).unwrap();

    let text = run(
        &[
            "audit",
            "verify-proof",
            path_str(&proof),
            "--ca",
            path_str(&ca),
        ],
        0,
    );
    assert_eq!(
        text,
        format!(
            "record 17 is included in the log of size 30 signed by {} at {time}\n",
            log.manager
        )
    );

    // Another cluster's CA does not vouch for the head.
    let other = Log::new(1);
    let (_other_dir, other_ca) = workdir(&other);
    let text = run(
        &[
            "audit",
            "verify-proof",
            path_str(&proof),
            "--ca",
            path_str(&other_ca),
        ],
        1,
    );
    assert!(text.contains("does NOT prove that record 17"), "{text}");

    // The record changed after the proof was made.
    let tampered = dir.path().join("tampered.json");
    let json = file.to_json().replace("worker-17", "worker-99");
    assert_ne!(json, file.to_json());
    std::fs::write(&tampered, json).unwrap();
    let text = run(
        &[
            "audit",
            "verify-proof",
            path_str(&tampered),
            "--ca",
            path_str(&ca),
        ],
        1,
    );
    assert!(text.contains("does NOT prove that record 17"), "{text}");
}
