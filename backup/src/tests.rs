//! Unit tests that need crate internals: a low scrypt work factor for
//! passphrase tests, small limits, and fault injection during restore.

use std::fs;
use std::io;

use zeroize::Zeroizing;

use crate::check::Limits;
use crate::*;

/// A manager of a cluster made at run time, and when its certificate was
/// issued.
struct Fixture {
    signer: (
        std::sync::Arc<moat_pki::PrivateKey>,
        Vec<moat_pki::CertificateDer<'static>>,
        moat_pki::TrustRoots,
    ),
    cluster: moat_pki::ClusterId,
    node: moat_pki::NodeId,
    now: i64,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        use moat_pki::*;
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let cluster = ClusterId::generate();
        let ca = RootCa::generate(cluster, &RootOptions::default(), now).unwrap();
        let node = NodeId::generate();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
        let expiry = CertExpiry::from_secs_or_default(None).unwrap();
        let cert = ca.issue(&csr, node, Role::Manager, expiry, now).unwrap();
        let roots = TrustRoots::new(vec![ca.certificate().clone()]).unwrap();
        Fixture {
            signer: (std::sync::Arc::new(key), vec![cert.der], roots),
            cluster,
            node,
            now: now.unix_timestamp(),
        }
    })
}

fn signer() -> Signer {
    let (key, chain, roots) = &fixture().signer;
    Signer::new(key.clone(), chain.clone(), roots.clone())
}

fn manifest() -> Manifest {
    let f = fixture();
    Manifest {
        format: FORMAT_VERSION,
        moat_version: "0.1.0".into(),
        cluster_id: f.cluster.to_string(),
        node_id: f.node.to_string(),
        created_at: f.now,
        raft_index: 1,
        raft_term: 1,
        nodes: 1,
        managers: 1,
        autolock: true,
        files: Vec::new(),
    }
}

fn files() -> Vec<BackupFile> {
    vec![
        BackupFile::new("keys/a.sealed", 0o600, Zeroizing::new(vec![1; 100])),
        BackupFile::new("keys/b.sealed", 0o600, Zeroizing::new(vec![2; 100])),
        BackupFile::new("node.json", 0o644, Zeroizing::new(b"{}".to_vec())),
        BackupFile::new("store/snap", 0o600, Zeroizing::new(vec![3; 100])),
    ]
}

fn pass(s: &str) -> Zeroizing<String> {
    Zeroizing::new(s.to_owned())
}

/// A passphrase backup with scrypt work factor 2^`log_n`.
fn with_passphrase(p: &str, log_n: u8) -> Vec<u8> {
    let mut out = Vec::new();
    write_with(
        &mut out,
        manifest(),
        &files(),
        &Protection::Passphrase(pass(p)),
        &signer(),
        &Limits::DEFAULT,
        Some(log_n),
    )
    .unwrap();
    out
}

#[test]
fn passphrase_round_trip() {
    let out = with_passphrase("pw", 10);
    let backup = read_backup(&out[..], &Unprotect::Passphrase(pass("pw"))).unwrap();
    assert_eq!(backup.encryption, Encryption::Passphrase);
    assert_eq!(backup.files.len(), 4);
    assert_eq!(&backup.file("node.json").unwrap().data[..], b"{}");
}

#[test]
fn wrong_passphrase_is_reported_as_such() {
    let out = with_passphrase("pw", 10);
    let e = read_backup(&out[..], &Unprotect::Passphrase(pass("PW"))).unwrap_err();
    assert!(matches!(e, BackupError::WrongPassphrase), "{e:?}");
    let e = read_backup(&out[..], &Unprotect::Passphrase(pass(""))).unwrap_err();
    assert!(matches!(e, BackupError::EmptyPassphrase), "{e:?}");
}

#[test]
fn passphrase_backup_without_passphrase_asks_for_one() {
    let out = with_passphrase("pw", 10);
    let id = age::x25519::Identity::generate();
    let text = {
        use age::secrecy::ExposeSecret;
        Zeroizing::new(id.to_string().expose_secret().to_owned())
    };
    for unprotect in [Unprotect::None, Unprotect::Identities(vec![text])] {
        let e = read_backup(&out[..], &unprotect).unwrap_err();
        assert!(matches!(e, BackupError::NeedsPassphrase), "{e:?}");
    }
}

#[test]
fn excessive_scrypt_work_is_refused_before_running_it() {
    let out = with_passphrase("pw", 10);
    // The stanza line is `-> scrypt <salt> 10`; raise the factor in place.
    // The header MAC covers it, but the work bound is checked first.
    let at = out
        .windows(4)
        .position(|w| w == b" 10\n")
        .expect("scrypt stanza");
    let mut bad = out.clone();
    bad[at + 1..at + 3].copy_from_slice(b"40");
    let e = read_backup(&bad[..], &Unprotect::Passphrase(pass("pw"))).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::ExcessiveWork {
                found: 40,
                max: MAX_SCRYPT_WORK_FACTOR
            }
        ),
        "{e:?}"
    );
    bad[at + 1..at + 3].copy_from_slice(b"23");
    let e = read_backup(&bad[..], &Unprotect::Passphrase(pass("pw"))).unwrap_err();
    assert!(
        matches!(e, BackupError::ExcessiveWork { found: 23, .. }),
        "{e:?}"
    );
}

#[test]
fn age_header_size_is_bounded() {
    // A header of many stanzas, read with a small header limit.
    let recipients: Vec<String> = (0..20)
        .map(|_| age::x25519::Identity::generate().to_public().to_string())
        .collect();
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::Recipients(recipients),
        &signer(),
    )
    .unwrap();
    let limits = Limits {
        age_header: 512,
        ..Limits::DEFAULT
    };
    let e = read_with(&out[..], &Unprotect::None, &limits).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::TooLarge {
                what: Limit::AgeHeader,
                max: 512,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn writer_respects_the_limits_a_reader_enforces() {
    let limits = Limits {
        files: 3,
        ..Limits::DEFAULT
    };
    let e = write_with(
        Vec::new(),
        manifest(),
        &files(),
        &Protection::InsecurePlaintext,
        &signer(),
        &limits,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::InvalidInput(InputError::TooLarge {
                what: Limit::FileCount,
                found: 4,
                max: 3
            })
        ),
        "{e:?}"
    );
    let limits = Limits {
        total: 250,
        ..Limits::DEFAULT
    };
    let e = write_with(
        Vec::new(),
        manifest(),
        &files(),
        &Protection::InsecurePlaintext,
        &signer(),
        &limits,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::InvalidInput(InputError::TooLarge {
                what: Limit::TotalSize,
                ..
            })
        ),
        "{e:?}"
    );
}

fn plaintext_backup() -> Backup {
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap();
    read_backup(&out[..], &Unprotect::None).unwrap()
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failed_restore_leaves_nothing_behind() {
    let backup = plaintext_backup();
    for fail_at in 0..backup.files.len() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let e = restore::restore(&backup, &dir, &mut |i| {
            if i == fail_at {
                Err(io::Error::other("injected failure"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(matches!(e, BackupError::Io { .. }), "{e:?}");
        assert!(!dir.exists(), "target created after failure at {fail_at}");
        assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    }
}

#[test]
fn failed_restore_into_empty_directory_keeps_it_empty() {
    let backup = plaintext_backup();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    let e = restore::restore(&backup, &dir, &mut |i| {
        if i == 3 {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(matches!(e, BackupError::Io { .. }), "{e:?}");
    assert!(dir.is_dir());
    assert!(entries(&dir).is_empty());
    assert_eq!(entries(tmp.path()), ["state"]);
}
