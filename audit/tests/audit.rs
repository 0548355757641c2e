//! Integration tests of moat-audit through its public API: a real cluster
//! CA and manager key, signed tree heads, bundles on disk, tampering of
//! every kind, inclusion proof files.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use moat_audit::*;
use moat_pki::{
    CertExpiry, CertificateDer, ClusterId, KeyAlgorithm, NodeId, PrivateKey, Role, RootCa,
    RootOptions, TrustRoots,
};
use time::{Duration, OffsetDateTime};

/// A cluster CA and one manager able to sign heads.
struct Cluster {
    ca: RootCa,
    roots: TrustRoots,
    manager: NodeId,
    key: PrivateKey,
    chain: Vec<CertificateDer<'static>>,
    now: OffsetDateTime,
}

impl Cluster {
    fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        let ca = RootCa::generate(ClusterId::generate(), &RootOptions::default(), now).unwrap();
        let roots = TrustRoots::new(vec![ca.certificate().clone()]).unwrap();
        let (manager, key, chain) = member(&ca, Role::Manager, now);
        Self {
            ca,
            roots,
            manager,
            key,
            chain,
            now,
        }
    }

    fn signer(&self) -> HeadSigner<'_> {
        HeadSigner::new(&self.key, &self.chain, &self.roots, self.now).unwrap()
    }

    fn ca_pem(&self) -> String {
        self.ca.certificate_pem()
    }

    fn time(&self) -> Timestamp {
        Timestamp::from_datetime(self.now).unwrap()
    }
}

fn member(
    ca: &RootCa,
    role: Role,
    at: OffsetDateTime,
) -> (NodeId, PrivateKey, Vec<CertificateDer<'static>>) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let id = NodeId::generate();
    let issued = ca
        .sign_csr(
            key.csr().unwrap().as_ref(),
            id,
            role,
            CertExpiry::DEFAULT,
            at,
        )
        .unwrap();
    (id, key, vec![issued.der])
}

fn event(c: &Cluster, i: u64) -> Event {
    let mut details = Details::new();
    details.insert("serial", &format!("{i:08x}")).unwrap();
    Event {
        node: c.manager,
        actor: Actor::node(c.manager),
        action: Action::CERT_RENEW,
        target: Text::new("target", &format!("node:worker-{i}")).unwrap(),
        outcome: if i.is_multiple_of(7) {
            Outcome::denied("token expired").unwrap()
        } else {
            Outcome::Success
        },
        details,
    }
}

/// A log of `n` records with a head every `every` records and one at `n`.
struct Exported {
    log: MerkleLog,
    records: Vec<Record>,
    lines: Vec<Vec<u8>>,
    heads: Vec<SignedTreeHead>,
}

fn export(c: &Cluster, n: u64, every: u64) -> Exported {
    let signer = c.signer();
    let mut log = MerkleLog::new();
    let mut records = Vec::new();
    let mut heads = Vec::new();
    for i in 1..=n {
        let r = log.seal(c.time(), event(c, i));
        log.append_record(&r).unwrap();
        if i.is_multiple_of(every) || i == n {
            heads.push(signer.sign(i, log.current_root(), c.time()).unwrap());
        }
        records.push(r);
    }
    let lines = records.iter().map(Record::to_line).collect();
    Exported {
        log,
        records,
        lines,
        heads,
    }
}

fn bundle_of(c: &Cluster, lines: &[Vec<u8>], heads: &[SignedTreeHead]) -> Bundle {
    let mut b = Bundle::new(c.ca_pem(), heads.to_vec());
    for l in lines {
        b.push_record(l).unwrap();
    }
    b
}

fn verify(c: &Cluster, lines: &[Vec<u8>], heads: &[SignedTreeHead]) -> Report {
    verify_bundle(&bundle_of(c, lines, heads), c.ca_pem().as_bytes(), None)
}

/// The report's sentences, for assertions and failure messages.
fn said(report: &Report) -> Vec<String> {
    report.problems.iter().map(ToString::to_string).collect()
}

fn assert_says(report: &Report, needle: &str) {
    let all = said(report);
    assert!(
        all.iter().any(|s| s.contains(needle)),
        "expected a problem containing {needle:?}, got {all:#?}"
    );
    assert!(!report.ok());
}

fn assert_located(report: &Report, seq: u64) {
    assert!(
        report.problems.iter().any(|p| p.seq() == Some(seq)),
        "no problem located at record {seq}: {:#?}",
        said(report)
    );
}

#[test]
fn an_untouched_bundle_verifies_in_both_layouts() {
    let c = Cluster::new();
    let e = export(&c, 45, 10);
    let dir = tempfile::tempdir().unwrap();
    for (name, layout) in [("one.jsonl", Layout::File), ("dir", Layout::Directory)] {
        let path = dir.path().join(name);
        write_bundle(&path, &bundle_of(&c, &e.lines, &e.heads), layout).unwrap();
        let read = read_bundle(&path).unwrap();
        assert_eq!(read.heads, e.heads);
        assert_eq!(read.ca_pem, c.ca_pem());
        let report = verify_bundle(&read, c.ca_pem().as_bytes(), None);
        assert!(report.ok(), "{report}");
        assert_eq!(report.records, 45);
        assert_eq!(report.heads, 5);
        assert_eq!(report.heads_verified, 5);
        assert_eq!(report.verified_size, 45);
        assert!(report.ca_matches_bundle);
        let mut seen = Vec::new();
        read.for_each_record(|l| seen.push(l.to_vec())).unwrap();
        assert_eq!(seen, e.lines);
        for l in &seen {
            Record::from_line(l).unwrap();
        }
        // Writing again onto the same path is refused.
        assert!(matches!(
            write_bundle(&path, &bundle_of(&c, &e.lines, &e.heads), layout),
            Err(BundleError::Exists { .. })
        ));
    }
    // No temporary files are left behind.
    let leftovers: Vec<PathBuf> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

/// Applies `tamper` to the record lines of the bundle file at `path`.
fn tamper_file(path: &Path, layout: Layout, tamper: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let file = match layout {
        Layout::File => path.to_path_buf(),
        Layout::Directory => path.join(RECORDS_FILE),
    };
    let text = std::fs::read(&file).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(lines.pop(), Some(Vec::new()), "files end in a newline");
    let header = match layout {
        Layout::File => Some(lines.remove(0)),
        Layout::Directory => None,
    };
    tamper(&mut lines);
    let mut out = Vec::new();
    for l in header.iter().chain(lines.iter()) {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(&file, out).unwrap();
}

/// Exports 40 records with heads every 10, tampers with the file on disk,
/// and verifies it, in both layouts; returns both reports.
fn tampered(c: &Cluster, tamper: impl Fn(&mut Vec<Vec<u8>>)) -> Vec<Report> {
    let e = export(c, 40, 10);
    let dir = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for (name, layout) in [("b.jsonl", Layout::File), ("b", Layout::Directory)] {
        let path = dir.path().join(name);
        write_bundle(&path, &bundle_of(c, &e.lines, &e.heads), layout).unwrap();
        tamper_file(&path, layout, &tamper);
        let b = read_bundle(&path).unwrap();
        reports.push(verify_bundle(&b, c.ca_pem().as_bytes(), None));
    }
    assert_eq!(reports[0], reports[1], "layouts disagree");
    reports
}

#[test]
fn a_deleted_record_is_named() {
    let c = Cluster::new();
    for r in tampered(&c, |lines| {
        lines.remove(14);
    }) {
        assert_says(&r, "sequence gap: 16 follows 14 (record 15 removed)");
        assert_located(&r, 15);
        assert_says(&r, "signed tree head at size 20");
    }
}

#[test]
fn a_deleted_first_record_is_named() {
    let c = Cluster::new();
    for r in tampered(&c, |lines| {
        lines.remove(0);
    }) {
        assert_says(
            &r,
            "the bundle starts at record 2, not 1 (record 1 removed)",
        );
    }
}

#[test]
fn one_changed_byte_is_located() {
    let c = Cluster::new();
    // A byte of the content of record 17 (in its target).
    for r in tampered(&c, |lines| flip_in(&mut lines[16], b"worker-17", 7)) {
        assert_says(
            &r,
            "record 17 was altered: its hash does not match the link in record 18",
        );
        assert_says(&r, "the signed tree head at size 20 does not match");
        assert_located(&r, 17);
        assert_eq!(r.verified_size, 10);
    }
}

#[test]
fn a_changed_byte_in_the_last_record_before_a_head_is_located() {
    let c = Cluster::new();
    // Record 40 has no successor to link to it: only the head shows it.
    for r in tampered(&c, |lines| flip_in(&mut lines[39], b"worker-40", 7)) {
        assert_says(
            &r,
            "record 40 was altered: its hash does not match the signed tree head at size 40",
        );
    }
}

#[test]
fn a_changed_link_or_sequence_number_is_located() {
    let c = Cluster::new();
    // The prev link of record 23.
    for r in tampered(&c, |lines| flip_in(&mut lines[22], b"\"prev\":\"", 20)) {
        assert_says(
            &r,
            "record 23 was altered: its link does not match record 22",
        );
        assert!(
            r.problems
                .iter()
                .filter(|p| matches!(p, Problem::Altered { .. }))
                .all(|p| p.seq() == Some(23)),
            "{:#?}",
            said(&r)
        );
    }
    // The sequence number of record 31 now reads 38.
    for r in tampered(&c, |lines| {
        let l = String::from_utf8(lines[30].clone()).unwrap();
        lines[30] = l.replacen("\"seq\":31,", "\"seq\":38,", 1).into_bytes();
    }) {
        assert_says(
            &r,
            "record 31 was altered: its sequence number was changed to 38",
        );
        assert_located(&r, 31);
    }
    // A byte that breaks the record's syntax.
    for r in tampered(&c, |lines| lines[11][0] = b'[') {
        assert_says(
            &r,
            "record 12 (line 12) was altered: it is not a well-formed",
        );
    }
}

/// Changes the byte `offset` bytes into the first `marker` in `line`.
fn flip_in(line: &mut [u8], marker: &[u8], offset: usize) {
    let at = line
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap()
        + offset;
    line[at] = if line[at] == b'a' { b'b' } else { b'a' };
}

#[test]
fn two_swapped_records_are_named() {
    let c = Cluster::new();
    for r in tampered(&c, |lines| lines.swap(8, 9)) {
        assert_says(&r, "record 9 appears after record 10 (reordered)");
        assert_located(&r, 9);
        assert_says(&r, "signed tree head at size 10");
    }
}

#[test]
fn an_inserted_record_is_named() {
    let c = Cluster::new();
    let e = export(&c, 40, 10);
    // A forged record claiming to be 11, linked correctly to record 10.
    let forged = Record::new(11, e.records[9].leaf_hash(), c.time(), event(&c, 999))
        .unwrap()
        .to_line();
    for r in tampered(&c, |lines| lines.insert(10, forged.clone())) {
        assert_says(
            &r,
            "a record was inserted after record 10 (it claims to be record 11)",
        );
        assert_located(&r, 11);
    }
    // A copy of record 5 right after it.
    for r in tampered(&c, |lines| {
        let copy = lines[4].clone();
        lines.insert(5, copy);
    }) {
        assert_says(&r, "record 5 appears 2 times");
    }
    // A record from far outside the log.
    let stranger = Record::new(5000, e.records[9].leaf_hash(), c.time(), event(&c, 5000))
        .unwrap()
        .to_line();
    for r in tampered(&c, |lines| lines.insert(25, stranger.clone())) {
        assert_says(
            &r,
            "a record was inserted after record 25 (it claims to be record 5000)",
        );
    }
}

#[test]
fn a_truncated_tail_is_caught_by_the_auditors_head() {
    let c = Cluster::new();
    let e = export(&c, 40, 10);
    let kept = e.heads.last().unwrap().clone();
    assert_eq!(kept.size, 40);
    // The exporter drops records 26..40 and the heads that covered them.
    let report = verify_bundle(
        &bundle_of(&c, &e.lines[..25], &e.heads[..2]),
        c.ca_pem().as_bytes(),
        Some(&kept),
    );
    assert_says(
        &report,
        "the log was truncated: the auditor's head has size 40, the bundle only 25",
    );
    assert_located(&report, 26);
    assert_eq!(report.trusted_head_held, Some(false));
    // Keeping the heads but dropping the records is caught without help.
    let report = verify(&c, &e.lines[..25], &e.heads);
    assert_says(
        &report,
        "the signed tree head at size 40 covers records the bundle does not hold: it ends at size 25 (records 26 to 40 removed)",
    );
}

#[test]
fn the_auditors_older_head_proves_the_log_only_grew() {
    let c = Cluster::new();
    let e = export(&c, 40, 10);
    let kept = e.heads[1].clone(); // size 20
    let report = verify_bundle(
        &bundle_of(&c, &e.lines, &e.heads),
        c.ca_pem().as_bytes(),
        Some(&kept),
    );
    assert!(report.ok(), "{report}");
    assert_eq!(report.trusted_head_held, Some(true));
    // The same check by proof, as a node would serve it.
    let proof = e.log.consistency_proof(20, 40).unwrap();
    verify_consistency(20, 40, &kept.root, &e.heads[3].root, &proof).unwrap();

    // A log rewritten from record 12 on, and re-signed: the rewritten
    // bundle is self-consistent, only the auditor's head shows it.
    let signer = c.signer();
    let mut log = MerkleLog::new();
    let mut lines = Vec::new();
    let mut heads = Vec::new();
    for i in 1..=40 {
        let ev = if i == 12 {
            event(&c, 1200)
        } else {
            event(&c, i)
        };
        let r = log.seal(c.time(), ev);
        log.append_record(&r).unwrap();
        lines.push(r.to_line());
        if i.is_multiple_of(10) {
            heads.push(signer.sign(i, log.current_root(), c.time()).unwrap());
        }
    }
    assert!(verify(&c, &lines, &heads).ok());
    let report = verify_bundle(
        &bundle_of(&c, &lines, &heads),
        c.ca_pem().as_bytes(),
        Some(&kept),
    );
    assert_says(
        &report,
        "the log was rewritten: its first 20 records do not match the auditor's trusted head",
    );
    assert_eq!(report.trusted_head_held, Some(false));
    // Two valid heads for one size with different roots: a fork.
    let mut both = e.heads.clone();
    both.push(heads[1].clone());
    assert_says(&verify(&c, &e.lines, &both), "the log was forked");
}

#[test]
fn records_after_the_last_head_are_not_verified() {
    let c = Cluster::new();
    let e = export(&c, 35, 10);
    // The head at 35 is left out.
    let report = verify(&c, &e.lines, &e.heads[..3]);
    assert_says(
        &report,
        "records 31 to 35 are not covered by any valid signed tree head",
    );
    let report = verify(&c, &e.lines, &[]);
    assert_says(&report, "records 1 to 35 are not covered");
    // An empty log with no heads holds nothing to doubt.
    assert!(verify(&c, &[], &[]).ok());
}

#[test]
fn heads_must_be_signed_by_a_manager_of_this_cluster() {
    let c = Cluster::new();
    let e = export(&c, 10, 10);
    let head = e.heads[0].clone();
    assert_eq!(head.verify(&c.roots).unwrap().node_id, c.manager);

    // Another cluster's CA: the head does not verify, nothing is proven.
    let other = Cluster::new();
    let report = verify_bundle(
        &bundle_of(&c, &e.lines, &e.heads),
        other.ca_pem().as_bytes(),
        None,
    );
    assert_says(&report, "the signed tree head at size 10");
    assert_says(&report, "records 1 to 10 are not covered");
    assert!(!report.ca_matches_bundle);

    // A changed field breaks the signature.
    let mut bad = head.clone();
    bad.size = 9;
    assert!(matches!(bad.verify(&c.roots), Err(HeadError::BadSignature)));
    let mut bad = head.clone();
    bad.root = leaf_hash(b"other");
    assert!(matches!(bad.verify(&c.roots), Err(HeadError::BadSignature)));
    let mut bad = head.clone();
    bad.time = Timestamp::from_unix(bad.time.unix_seconds() + 1).unwrap();
    assert!(matches!(bad.verify(&c.roots), Err(HeadError::BadSignature)));
    let mut bad = head.clone();
    bad.signer = NodeId::generate();
    assert!(matches!(
        bad.verify(&c.roots),
        Err(HeadError::WrongSigner { .. })
    ));
    let mut bad = head.clone();
    bad.signature[10] ^= 1;
    assert!(matches!(bad.verify(&c.roots), Err(HeadError::BadSignature)));

    // A worker cannot sign heads.
    let (_, wkey, wchain) = member(&c.ca, Role::Worker, c.now);
    assert!(matches!(
        HeadSigner::new(&wkey, &wchain, &c.roots, c.now),
        Err(HeadError::NotAManager { .. })
    ));
    // Nor can a key with someone else's certificate.
    assert!(matches!(
        HeadSigner::new(&wkey, &c.chain, &c.roots, c.now),
        Err(HeadError::KeyMismatch)
    ));

    // A head dated outside the signer's certificate does not verify, one
    // dated inside it does, long after the certificate expired.
    let signer = c.signer();
    let later = Timestamp::from_datetime(c.now + Duration::days(3)).unwrap();
    assert!(matches!(
        signer.sign(10, head.root, later),
        Err(HeadError::Certificate(moat_pki::CertError::Expired { .. }))
    ));
    let mut late = head.clone();
    late.time = later;
    late.signature = c.key.sign(&late.signing_input()).unwrap();
    assert!(matches!(
        late.verify(&c.roots),
        Err(HeadError::Certificate(moat_pki::CertError::Expired { .. }))
    ));
    assert!(head.verify(&c.roots).is_ok());

    // JSON round trip.
    let json = head.to_json();
    assert_eq!(SignedTreeHead::from_json(json.as_bytes()).unwrap(), head);
    assert!(SignedTreeHead::from_json(&vec![b' '; 64 * 1024]).is_err());
}

#[test]
fn ed25519_managers_sign_heads_too() {
    let now = OffsetDateTime::now_utc();
    let ca = RootCa::generate(ClusterId::generate(), &RootOptions::default(), now).unwrap();
    let roots = TrustRoots::new(vec![ca.certificate().clone()]).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let id = NodeId::generate();
    let issued = ca
        .sign_csr(
            key.csr().unwrap().as_ref(),
            id,
            Role::Manager,
            CertExpiry::DEFAULT,
            now,
        )
        .unwrap();
    let signer = HeadSigner::new(&key, &[issued.der], &roots, now).unwrap();
    let head = signer
        .sign(0, empty_root(), Timestamp::from_datetime(now).unwrap())
        .unwrap();
    assert_eq!(head.verify(&roots).unwrap().node_id, id);
}

#[test]
fn a_partial_export_verifies_from_its_base() {
    let c = Cluster::new();
    let e = export(&c, 40, 10);
    let base = 13;
    let bundle = bundle_of(&c, &e.lines[base as usize..], &e.heads)
        .with_base(base, e.log.frontier(base).unwrap());
    let report = verify_bundle(&bundle, c.ca_pem().as_bytes(), None);
    assert!(report.ok(), "{report}");
    assert_eq!(report.records, 27);
    assert_eq!(report.verified_size, 40);
    assert!(report.notes.iter().any(|n| n.contains("size 10 predates")));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("since14.jsonl");
    bundle.write(&path, Layout::File).unwrap();
    let read = read_bundle(&path).unwrap();
    assert_eq!(read.base_size, 13);
    assert!(verify_bundle(&read, c.ca_pem().as_bytes(), None).ok());

    // Tampering is still located.
    let mut lines = e.lines[base as usize..].to_vec();
    flip_in(&mut lines[20 - 14], b"worker-20", 7);
    let b = bundle_of(&c, &lines, &e.heads).with_base(base, e.log.frontier(base).unwrap());
    let report = verify_bundle(&b, c.ca_pem().as_bytes(), None);
    assert_says(&report, "record 20 was altered");
    // A trusted head before the base cannot be checked.
    let report = verify_bundle(&bundle, c.ca_pem().as_bytes(), Some(&e.heads[0]));
    assert_says(&report, "the auditor's head (size 10) cannot be checked");
    // Altered base hashes are caught by the first head.
    let mut frontier = e.log.frontier(base).unwrap();
    frontier[0] = leaf_hash(b"x");
    let b = bundle_of(&c, &e.lines[base as usize..], &e.heads).with_base(base, frontier);
    let report = verify_bundle(&b, c.ca_pem().as_bytes(), None);
    assert_says(&report, "or the bundle's base hashes were altered");
}

#[test]
fn inclusion_proof_files_verify_alone() {
    let c = Cluster::new();
    let e = export(&c, 40, 10);
    let head = e.heads[2].clone(); // size 30
    let file = InclusionProofFile::new(&e.log, e.records[16].clone(), head.clone()).unwrap();
    let json = file.to_json();
    let parsed = InclusionProofFile::from_json(json.as_bytes()).unwrap();
    assert_eq!(parsed, file);
    let ok = verify_inclusion_file(&parsed, c.ca_pem().as_bytes()).unwrap();
    assert_eq!((ok.seq, ok.head_size), (17, 30));
    assert_eq!(ok.signer.node_id, c.manager);

    // An altered record fails.
    let altered = json.replacen("node:worker-17", "node:worker-71", 1);
    let f = InclusionProofFile::from_json(altered.as_bytes()).unwrap();
    assert!(matches!(
        verify_inclusion_file(&f, c.ca_pem().as_bytes()),
        Err(Error::Proof(ProofError::RootMismatch))
    ));
    // Another cluster's CA fails.
    assert!(matches!(
        verify_inclusion_file(&file, Cluster::new().ca_pem().as_bytes()),
        Err(Error::Head(_))
    ));
    // The wrong record for the index fails.
    let mut f = file.clone();
    f.record = e.records[15].clone();
    assert!(verify_inclusion_file(&f, c.ca_pem().as_bytes()).is_err());
    // A record past the head cannot be proven against it.
    assert!(InclusionProofFile::new(&e.log, e.records[35].clone(), head.clone()).is_err());
    // A record not in the log cannot be proven.
    let forged = Record::new(17, e.records[15].leaf_hash(), c.time(), event(&c, 99)).unwrap();
    assert!(InclusionProofFile::new(&e.log, forged, head).is_err());
    // Oversized and foreign files are refused before use.
    assert!(matches!(
        InclusionProofFile::from_json(&vec![b' '; MAX_PROOF_FILE_BYTES + 1]),
        Err(BundleError::TooLarge { .. })
    ));
    let other = json.replacen(PROOF_FORMAT, "moat-audit-proof-v9", 1);
    assert!(matches!(
        InclusionProofFile::from_json(other.as_bytes()),
        Err(BundleError::UnsupportedFormat { .. })
    ));
}

#[test]
fn bundle_limits_are_checked_before_reading() {
    let c = Cluster::new();
    let e = export(&c, 5, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b");
    write_bundle(&path, &bundle_of(&c, &e.lines, &e.heads), Layout::Directory).unwrap();

    // A CA file larger than the limit.
    let ca = path.join(CA_FILE);
    let original = std::fs::read(&ca).unwrap();
    std::fs::write(&ca, vec![b'x'; MAX_CA_PEM_BYTES as usize + 1]).unwrap();
    assert!(matches!(
        read_bundle(&path),
        Err(BundleError::TooLarge {
            what: "CA certificate",
            ..
        })
    ));
    std::fs::write(&ca, original).unwrap();

    // A record line larger than the limit stops the scan.
    let records = path.join(RECORDS_FILE);
    let mut text = std::fs::read(&records).unwrap();
    text.extend(vec![b'x'; MAX_RECORD_BYTES + 10]);
    text.push(b'\n');
    std::fs::write(&records, text).unwrap();
    let report = verify_bundle(&read_bundle(&path).unwrap(), c.ca_pem().as_bytes(), None);
    assert_says(&report, "the records could not be read");

    // Another format version, and a base that does not fit its size.
    let heads = path.join(HEADS_FILE);
    let h = std::fs::read_to_string(&heads).unwrap();
    std::fs::write(&heads, h.replacen(BUNDLE_FORMAT, "moat-audit-bundle-v2", 1)).unwrap();
    assert!(matches!(
        read_bundle(&path),
        Err(BundleError::UnsupportedFormat { .. })
    ));
    std::fs::write(&heads, h.replacen("\"base_size\":0", "\"base_size\":3", 1)).unwrap();
    assert!(matches!(
        read_bundle(&path),
        Err(BundleError::Malformed { .. })
    ));

    // A one-file bundle whose header line never ends.
    let one = dir.path().join("one.jsonl");
    std::fs::write(&one, b"{\"format\":").unwrap();
    assert!(read_bundle(&one).is_err());
}

#[test]
fn garbage_is_reported_not_panicked_on() {
    let c = Cluster::new();
    let e = export(&c, 12, 4);
    let mut lines: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| format!("garbage {i}").into_bytes())
        .collect();
    lines.extend(e.lines.iter().cloned());
    let report = verify(&c, &lines, &e.heads);
    assert!(!report.ok());
    assert_eq!(report.problems.len(), MAX_PROBLEMS);
    assert!(report.more_problems > 0);
}

#[test]
fn a_foreign_or_forged_trusted_head_is_refused() {
    let c = Cluster::new();
    let e = export(&c, 20, 10);
    let other = Cluster::new();
    let foreign = export(&other, 20, 10).heads[1].clone();
    let report = verify_bundle(
        &bundle_of(&c, &e.lines, &e.heads),
        c.ca_pem().as_bytes(),
        Some(&foreign),
    );
    assert_says(&report, "the auditor's trusted head does not verify");
    assert_eq!(report.trusted_head_held, Some(false));
    // An unusable CA proves nothing.
    let report = verify_bundle(&bundle_of(&c, &e.lines, &e.heads), b"not a pem", None);
    assert_says(&report, "the CA certificate cannot be used");
    // Heads with unknown fields are not read.
    let json = e.heads[0].to_json().replacen("{", "{\"extra\":1,", 1);
    assert!(SignedTreeHead::from_json(json.as_bytes()).is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One cluster and one export for all cases: signing is the slow part.
    fn fixture() -> &'static (Cluster, Exported) {
        static F: OnceLock<(Cluster, Exported)> = OnceLock::new();
        F.get_or_init(|| {
            let c = Cluster::new();
            let e = export(&c, 37, 8);
            (c, e)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any one changed byte anywhere in any record is detected, and a
        /// problem names that record.
        #[test]
        fn any_changed_byte_is_detected_and_located(
            k in 0usize..37,
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let (c, e) = fixture();
            let mut lines = e.lines.clone();
            let i = at.index(lines[k].len());
            let to = if to == b'\n' { b'x' } else { to };
            prop_assume!(lines[k][i] != to);
            lines[k][i] = to;
            let report = verify(c, &lines, &e.heads);
            prop_assert!(!report.ok());
            prop_assert!(
                report.problems.iter().any(|p| p.seq() == Some(k as u64 + 1)),
                "record {} not named: {:#?}", k + 1, said(&report)
            );
        }

        /// Any one record removed, or two swapped, is detected and named.
        #[test]
        fn any_removal_or_swap_is_detected_and_located(
            k in 0usize..37,
            other in 0usize..37,
        ) {
            let (c, e) = fixture();
            let mut lines = e.lines.clone();
            lines.remove(k);
            let report = verify(c, &lines, &e.heads);
            prop_assert!(!report.ok());
            prop_assert!(
                report.problems.iter().any(|p| p.seq() == Some(k as u64 + 1)),
                "removed record {} not named: {:#?}", k + 1, said(&report)
            );
            prop_assume!(k != other);
            let mut lines = e.lines.clone();
            lines.swap(k, other);
            let report = verify(c, &lines, &e.heads);
            let (lo, hi) = (k.min(other) as u64 + 1, k.max(other) as u64 + 1);
            prop_assert!(!report.ok());
            prop_assert!(
                report.problems.iter().any(|p| matches!(p.seq(), Some(s) if s == lo || s == hi)),
                "swap of {lo} and {hi} not named: {:#?}", said(&report)
            );
        }
    }
}

/// Review finding 7: a head signed after its signer lost the manager role
/// (by a record the head covers) is refused; one signed before, or after
/// a promotion back, is taken.
#[test]
fn heads_signed_after_the_signer_was_demoted_or_removed_are_refused() {
    let c = Cluster::new();
    let role_change = |action: Action| Event {
        node: c.manager,
        actor: Actor::local_operator(),
        action,
        target: Text::new("target", &format!("node:{}", c.manager)).unwrap(),
        outcome: Outcome::Success,
        details: Details::new(),
    };
    for (action, word) in [
        (Action::NODE_DEMOTE, "demoted"),
        (Action::NODE_REMOVE, "removed"),
    ] {
        let signer = c.signer();
        let t = |secs: i64| Timestamp::from_datetime(c.now + Duration::seconds(secs)).unwrap();
        let mut log = MerkleLog::new();
        let mut lines = Vec::new();
        let push = |log: &mut MerkleLog, lines: &mut Vec<Vec<u8>>, at: i64, ev: Event| {
            let r = log.seal(t(at), ev);
            log.append_record(&r).unwrap();
            lines.push(r.to_line());
        };
        push(&mut log, &mut lines, 0, event(&c, 1));
        let before = signer.sign(1, log.current_root(), t(1)).unwrap();
        push(&mut log, &mut lines, 2, role_change(action.clone()));
        push(&mut log, &mut lines, 3, event(&c, 3));
        let after = signer.sign(3, log.current_root(), t(10)).unwrap();
        let report = verify(&c, &lines, &[before.clone(), after.clone()]);
        assert!(!report.ok(), "{:?}", said(&report));
        assert_says(&report, &format!("was {word} by record 2"));
        assert_eq!(report.verified_size, 1, "only the head from before counts");

        // Promoted again (record 4), its later heads count again.
        if action == Action::NODE_DEMOTE {
            push(&mut log, &mut lines, 11, role_change(Action::NODE_PROMOTE));
            let back = signer.sign(4, log.current_root(), t(12)).unwrap();
            let report = verify(&c, &lines, &[before, back]);
            assert!(report.ok(), "{:?}", said(&report));
        }
    }
}
