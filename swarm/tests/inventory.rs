//! The crypto inventory (`moat_swarm::inventory::build`) of the real
//! Docker 20.10.24 fixtures in `tests/fixtures/` (see `formats.rs` for
//! what each one is): what the report shows comes from here.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use moat_api::SwarmInventory;
use moat_swarm::key::UnlockKey;
use time::OffsetDateTime;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn inventory(name: &str, with_key: bool) -> SwarmInventory {
    let dir = fixture(name);
    let key: Option<UnlockKey> = with_key.then(|| {
        std::fs::read_to_string(dir.join("unlock-key"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    });
    let opened = moat_swarm::open(&dir, key.as_ref()).unwrap();
    moat_swarm::inventory::build(&opened, None, OffsetDateTime::now_utc())
}

#[test]
fn autolock_with_its_key_shows_the_store() {
    let inv = inventory("autolock", true);
    assert!(inv.store_read);
    assert!(inv.not_checked.is_empty());
    assert_eq!(inv.node_role, "manager");
    assert_eq!(inv.node_cert.sans[0], "swarm-manager");
    assert!(inv.node_cert.issued_by_root);
    assert_eq!(inv.root_ca_matches_store, Some(true));
    assert_eq!(inv.root_ca_key_in_store, Some(true));
    assert_eq!(inv.root_ca_key_format.as_deref(), Some("EC PRIVATE KEY"));
    let a = &inv.autolock;
    assert!(a.on && a.consistent && a.key_file_encrypted && a.data_key_wrapped);
    assert_eq!(a.given_key_is_current, Some(true));
    assert!(!a.data_key_readable_without_key);
    assert_eq!(inv.key_protection.matches_cert, Some(true));
    // The WAL was cut before `--cert-expiry 720h`: Swarm's default.
    assert_eq!(inv.cert_expiry_seconds, Some(90 * 86_400));
    assert_eq!(inv.raft.snapshot_index, None);
    assert_eq!(inv.raft.algorithms, ["secretbox (XSalsa20-Poly1305)"]);
    // The join tokens: their CA digest is SHA-256 of the root's PEM in
    // base 36, and the log shows them made with the cluster.
    assert_eq!(inv.join_tokens.len(), 2);
    for t in &inv.join_tokens {
        assert!(t.ca_digest_matches, "{t:?}");
        assert_eq!(t.format, "SWMTKN-1");
        assert!(t.changed_at.is_some(), "created in the log kept: {t:?}");
        assert!(t.fingerprint.starts_with("sha256:") && t.fingerprint.len() == 23);
    }
    let s1 = inv.secrets.iter().find(|s| s.name == "s1").unwrap();
    assert_eq!(s1.size, "hunter2".len() as u64);
    assert_eq!(s1.used_by, ["web"]);
    let web = inv.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.secrets, ["s1"]);
    assert_eq!(web.env_vars, 1);
    assert_eq!(inv.nodes.len(), 1);
    assert_eq!(
        inv.nodes[0].cert_source, "file",
        "the first manager has none in the store"
    );
    assert!(inv.files.iter().all(|f| !f.path.ends_with(".tmp")));
}

#[test]
fn autolock_without_its_key_says_what_it_could_not_check() {
    let inv = inventory("autolock", false);
    assert!(!inv.store_read);
    assert_eq!(inv.not_checked.len(), 1);
    assert!(inv.nodes.is_empty() && inv.join_tokens.is_empty() && inv.secrets.is_empty());
    assert_eq!(inv.cert_expiry_seconds, None);
    assert_eq!(inv.root_ca_key_in_store, None);
    assert!(inv.autolock.on, "both places the files show say so");
    assert_eq!(inv.autolock.cluster_setting, None);
    assert!(
        inv.key_protection
            .scheme
            .contains("PBKDF2-HMAC-SHA1, 2048 iterations")
    );
    assert_eq!(inv.key_protection.matches_cert, None);
    // The certificates are read all the same.
    assert!(inv.node_cert.lifetime_seconds > 90 * 86_400);
    assert!(!inv.root_ca.fingerprint.is_empty());
}

#[test]
fn rotated_reads_the_snapshot_and_bounds_the_token_age() {
    let inv = inventory("rotated", true);
    assert_eq!(inv.raft.snapshot_index, Some(0x326));
    assert_eq!(inv.raft.snapshot_interval, Some(5));
    assert_eq!(inv.cert_expiry_seconds, Some(720 * 3600));
    assert_eq!(inv.autolock.given_key_is_current, Some(true));
    let names: Vec<&str> = inv.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["c1", "s1", "s2"],
        "configs first, then secrets, by name"
    );
    // The worker token was rotated before the snapshot: the log kept does
    // not show when, so only a bound is known.
    for t in &inv.join_tokens {
        assert!(t.ca_digest_matches);
        assert_eq!(t.changed_at, None);
        assert!(t.made_at_or_after.is_some());
    }
}

#[test]
fn unlocked_needs_no_key_and_says_the_data_key_is_in_clear() {
    let inv = inventory("unlocked", false);
    assert!(inv.store_read);
    let a = &inv.autolock;
    assert!(!a.on && a.consistent);
    assert!(a.data_key_readable_without_key);
    assert_eq!(a.cluster_setting, Some(false));
    assert_eq!(a.unlock_key_in_store, Some(false));
    assert_eq!(a.given_key_is_current, None);
    assert_eq!(inv.key_protection.pem_type, "PRIVATE KEY");
    assert_eq!(inv.key_protection.scheme, "none");
    // Given a key anyway: nothing to compare it with, so no verdict.
    let inv = inventory("unlocked", true);
    assert_eq!(inv.autolock.given_key_is_current, None);
}

#[test]
fn a_probed_certificate_is_checked_against_the_root_by_signature() {
    let dir = fixture("rotated");
    let key: UnlockKey = std::fs::read_to_string(dir.join("unlock-key"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let opened = moat_swarm::open(&dir, Some(&key)).unwrap();
    let probe_with = |pem: String| moat_api::TlsProbe {
        address: "127.0.0.1:2377".into(),
        peer: "127.0.0.1:2377".into(),
        probed_at: "2026-12-07T00:00:00Z".into(),
        versions: vec!["TLSv1.3".into()],
        cipher_suites: vec![],
        key_exchange_groups: vec![],
        post_quantum: false,
        client_cert_requested: true,
        chain: vec![moat_api::ProbeCert {
            subject: "CN=swarm-manager".into(),
            issuer: "CN=swarm-ca".into(),
            key_algorithm: "ECDSA P-256".into(),
            signature_algorithm: "ecdsa-with-SHA256".into(),
            not_before: String::new(),
            not_after: String::new(),
            sha256: String::new(),
            subject_alt_names: vec![],
            is_ca: false,
            pem,
        }],
        negotiated: None,
        notes: vec![],
    };
    // This manager's own certificate: signed by the root.
    let own = std::fs::read_to_string(dir.join("certificates/swarm-node.crt")).unwrap();
    let inv =
        moat_swarm::inventory::build(&opened, Some(probe_with(own)), OffsetDateTime::now_utc());
    assert_eq!(inv.probe_chain_from_root, Some(true));
    // One with the same names from another root: refused.
    let mut params = rcgen::CertificateParams::new(vec!["swarm-manager".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "swarm-ca");
    let other = params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    let inv =
        moat_swarm::inventory::build(&opened, Some(probe_with(other)), OffsetDateTime::now_utc());
    assert_eq!(inv.probe_chain_from_root, Some(false));
}
