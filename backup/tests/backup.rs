//! Integration tests for `moat-backup`, through the public API only.
//!
//! Keys are generated at run time. Passphrase tests with a low scrypt work
//! factor live in `src/tests.rs` (the public API always uses age's
//! default); here one passphrase round trip runs at the default.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use age::secrecy::ExposeSecret;
use moat_backup::{
    Backup, BackupError, BackupFile, Damage, Encryption, InputError, Kind, Limit, Manifest, Origin,
    OriginError, PathProblem, Protection, Section, Signer, Trust, Unprotect, detect,
    parse_identity_file, read_backup, restore_into, write_backup,
};
use moat_pki::{
    CertExpiry, CertificateDer, ClusterId, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role,
    RootCa, RootOptions, TrustRoots,
};
use proptest::prelude::*;
use zeroize::Zeroizing;

/// A cluster made at run time: its root, and one manager's key and
/// certificate, issued now.
struct Cluster {
    id: ClusterId,
    node: NodeId,
    now: OffsetDateTime,
    roots: TrustRoots,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKey>,
}

impl Cluster {
    fn new(role: Role) -> Self {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let id = ClusterId::generate();
        let ca = RootCa::generate(id, &RootOptions::default(), now).unwrap();
        let node = NodeId::generate();
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let csr = moat_pki::VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
        let cert = ca
            .issue(
                &csr,
                node,
                role,
                CertExpiry::from_secs_or_default(None).unwrap(),
                now,
            )
            .unwrap();
        Cluster {
            id,
            node,
            now,
            roots: TrustRoots::new(vec![ca.certificate().clone()]).unwrap(),
            chain: vec![cert.der],
            key: Arc::new(key),
        }
    }

    fn signer(&self) -> Signer {
        Signer::new(self.key.clone(), self.chain.clone(), self.roots.clone())
    }

    /// The manifest of a backup taken now from this cluster's manager.
    fn manifest(&self) -> Manifest {
        Manifest {
            cluster_id: self.id.to_string(),
            node_id: self.node.to_string(),
            created_at: self.now.unix_timestamp(),
            ..manifest()
        }
    }

    fn root_fingerprint(&self) -> String {
        moat_pki::fingerprint(self.roots.certs()[0].as_ref())
    }
}

/// The cluster every test's backups come from.
fn ours() -> &'static Cluster {
    static OURS: OnceLock<Cluster> = OnceLock::new();
    OURS.get_or_init(|| Cluster::new(Role::Manager))
}

fn signer() -> Signer {
    ours().signer()
}

fn manifest() -> Manifest {
    let c = ours();
    Manifest {
        format: moat_backup::FORMAT_VERSION,
        moat_version: "0.1.0".into(),
        cluster_id: c.id.to_string(),
        node_id: c.node.to_string(),
        created_at: c.now.unix_timestamp(),
        raft_index: 42,
        raft_term: 3,
        nodes: 5,
        managers: 3,
        autolock: false,
        files: Vec::new(),
    }
}

fn files() -> Vec<BackupFile> {
    vec![
        BackupFile::new(
            "node.json",
            0o600,
            Zeroizing::new(br#"{"id":"n-abcd"}"#.to_vec()),
        ),
        BackupFile::new(
            "unlock.key",
            0o600,
            Zeroizing::new(b"MOATKEY-1-secret".to_vec()),
        ),
        BackupFile::new(
            "certs/ca.crt",
            0o644,
            Zeroizing::new(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
        ),
        BackupFile::new("certs/node.sealed", 0o600, Zeroizing::new(vec![0xa5; 300])),
        BackupFile::new(
            "store/snapshot.sealed",
            0o600,
            Zeroizing::new((0..5000u32).map(|i| (i * 7) as u8).collect()),
        ),
        BackupFile::new("empty", 0o640, Zeroizing::new(Vec::new())),
    ]
}

struct Key {
    identity_file: Zeroizing<String>,
    recipient: String,
}

fn key() -> Key {
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    Key {
        identity_file: Zeroizing::new(format!(
            "# created: by the test\n# public key: {recipient}\n{}\n",
            id.to_string().expose_secret()
        )),
        recipient,
    }
}

fn encrypted(key: &Key) -> Vec<u8> {
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::Recipients(vec![key.recipient.clone()]),
        &signer(),
    )
    .unwrap();
    out
}

fn plaintext() -> Vec<u8> {
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap();
    out
}

fn ids(key: &Key) -> Unprotect {
    Unprotect::Identities(vec![key.identity_file.clone()])
}

fn assert_same_files(backup: &Backup) {
    let want = files();
    assert_eq!(backup.files.len(), want.len());
    for (got, want) in backup.files.iter().zip(&want) {
        assert_eq!(got.path, want.path);
        assert_eq!(got.mode, want.mode);
        assert_eq!(&got.data[..], &want.data[..]);
    }
}

/// Offset of the first payload byte of a binary age file: after the header
/// (ending with the `--- MAC` line) and the 16-byte nonce.
fn age_payload_start(file: &[u8]) -> usize {
    let mac_line = file.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    let end = mac_line + file[mac_line..].iter().position(|&b| b == b'\n').unwrap() + 1;
    end + 16
}

// ---- round trips ----------------------------------------------------------

#[test]
fn recipient_round_trip_fills_manifest_and_verifies() {
    let k1 = key();
    let k2 = key();
    let mut out = Vec::new();
    let written = write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::Recipients(vec![k1.recipient.clone(), k2.recipient.clone()]),
        &signer(),
    )
    .unwrap();
    assert_eq!(written.files.len(), files().len());
    assert_eq!(written.files[5].len, 0);
    assert_eq!(
        written.files[5].sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(written.files[2].path, "certs/ca.crt");
    assert_eq!(written.files[2].mode, 0o644);
    assert_eq!(detect(&out), Some(Kind::Encrypted));
    assert!(out.starts_with(b"age-encryption.org/v1\n"));

    // Either identity opens it; several identity files may be given.
    for unprotect in [
        ids(&k2),
        Unprotect::Identities(vec![key().identity_file, k1.identity_file.clone()]),
    ] {
        let backup = read_backup(&out[..], &unprotect).unwrap();
        assert_eq!(backup.manifest, written);
        assert_eq!(backup.encryption, Encryption::Recipients);
        assert_same_files(&backup);
    }
}

#[test]
fn plaintext_round_trip_and_identity_is_ignored() {
    let out = plaintext();
    assert_eq!(detect(&out), Some(Kind::Plaintext));
    assert!(out.starts_with(b"MOATBACKUP2\n"));
    for unprotect in [Unprotect::None, ids(&key())] {
        let backup = read_backup(&out[..], &unprotect).unwrap();
        assert_eq!(backup.encryption, Encryption::Plaintext);
        assert_eq!(backup.manifest.raft_index, 42);
        assert_same_files(&backup);
    }
}

#[test]
fn passphrase_round_trip_at_default_work_factor() {
    let mut out = Vec::new();
    let pass = Zeroizing::new("correct horse battery staple".to_owned());
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::Passphrase(pass.clone()),
        &signer(),
    )
    .unwrap();
    let backup = read_backup(&out[..], &Unprotect::Passphrase(pass)).unwrap();
    assert_eq!(backup.encryption, Encryption::Passphrase);
    assert_same_files(&backup);
}

#[test]
fn empty_backup_round_trips() {
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &[],
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap();
    let backup = read_backup(&out[..], &Unprotect::None).unwrap();
    assert!(backup.files.is_empty());
}

#[test]
fn file_larger_than_one_age_chunk_round_trips() {
    let k = key();
    let big = vec![BackupFile::new(
        "store/snapshot.sealed",
        0o600,
        Zeroizing::new((0..300_000u32).map(|i| (i % 251) as u8).collect()),
    )];
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &big,
        Protection::Recipients(vec![k.recipient.clone()]),
        &signer(),
    )
    .unwrap();
    let backup = read_backup(&out[..], &ids(&k)).unwrap();
    assert_eq!(&backup.files[0].data[..], &big[0].data[..]);
}

// ---- write-side refusals ----------------------------------------------------

#[test]
fn no_recipients_is_refused() {
    let e = write_backup(
        Vec::new(),
        manifest(),
        &files(),
        Protection::Recipients(vec![]),
        &signer(),
    )
    .unwrap_err();
    assert!(matches!(e, BackupError::NoRecipients), "{e:?}");
}

#[test]
fn bad_recipient_is_named_and_nothing_is_written() {
    let k = key();
    let mut out = Vec::new();
    let e = write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::Recipients(vec![k.recipient.clone(), "age1notakey".into()]),
        &signer(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, BackupError::InvalidRecipient { recipient, .. } if recipient == "age1notakey"),
        "{e:?}"
    );
    assert!(e.to_string().contains("age1notakey"), "{e}");
    assert!(out.is_empty());
}

#[test]
fn empty_passphrase_is_refused() {
    let e = write_backup(
        Vec::new(),
        manifest(),
        &files(),
        Protection::Passphrase(Zeroizing::new(String::new())),
        &signer(),
    )
    .unwrap_err();
    assert!(matches!(e, BackupError::EmptyPassphrase), "{e:?}");
}

#[test]
fn caller_input_is_checked_before_writing() {
    let mut bad_format = manifest();
    bad_format.format = 3;
    let e = write_backup(
        Vec::new(),
        bad_format,
        &files(),
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::InvalidInput(InputError::FormatVersion { found: 3, .. })
        ),
        "{e:?}"
    );

    for (path, reason) in [
        ("../escape", PathProblem::ParentComponent),
        ("/etc/shadow", PathProblem::Absolute),
        ("a//b", PathProblem::EmptyComponent),
        ("a\0b", PathProblem::Nul),
    ] {
        let f = [BackupFile::new(path, 0o600, Zeroizing::new(vec![1]))];
        let mut out = Vec::new();
        let e = write_backup(
            &mut out,
            manifest(),
            &f,
            Protection::InsecurePlaintext,
            &signer(),
        )
        .unwrap_err();
        assert!(
            matches!(&e, BackupError::InvalidInput(InputError::UnsafePath { reason: r, .. }) if *r == reason),
            "{path:?}: {e:?}"
        );
        assert!(out.is_empty());
    }

    let f = [BackupFile::new("x", 0o4755, Zeroizing::new(vec![1]))];
    let e = write_backup(
        Vec::new(),
        manifest(),
        &f,
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap_err();
    assert!(
        matches!(e, BackupError::InvalidInput(InputError::UnsafeMode { .. })),
        "{e:?}"
    );
}

// ---- read-side key errors ------------------------------------------------------

#[test]
fn wrong_identity_is_reported_as_such() {
    let out = encrypted(&key());
    let e = read_backup(&out[..], &ids(&key())).unwrap_err();
    assert!(matches!(e, BackupError::WrongIdentity), "{e:?}");
    assert!(e.to_string().contains("not encrypted to any identity"));
}

#[test]
fn encrypted_backup_without_identity_asks_for_one() {
    let out = encrypted(&key());
    for unprotect in [
        Unprotect::None,
        Unprotect::Identities(vec![]),
        Unprotect::Passphrase(Zeroizing::new("pw".into())),
    ] {
        let e = read_backup(&out[..], &unprotect).unwrap_err();
        assert!(matches!(e, BackupError::NeedsIdentity), "{e:?}");
    }
}

#[test]
fn bad_identity_file_is_reported_by_line_without_echo() {
    let out = encrypted(&key());
    let text = Zeroizing::new("# comment\nAGE-SECRET-KEY-1GARBAGEGARBAGE\n".to_owned());
    let e = read_backup(&out[..], &Unprotect::Identities(vec![text])).unwrap_err();
    assert!(
        matches!(e, BackupError::InvalidIdentity { line: 2, .. }),
        "{e:?}"
    );
    assert!(!e.to_string().contains("GARBAGE"));
    let e = read_backup(
        &out[..],
        &Unprotect::Identities(vec![Zeroizing::new("# only comments\n".into())]),
    )
    .unwrap_err();
    assert!(matches!(e, BackupError::NoIdentity), "{e:?}");
}

#[test]
fn parse_identity_file_returns_matching_recipient() {
    let k = key();
    let ids = parse_identity_file(&k.identity_file).unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].recipient(), k.recipient);
    assert!(!format!("{ids:?}").contains("AGE-SECRET-KEY"));
}

// ---- tampering: encrypted ------------------------------------------------------

#[test]
fn age_truncation_is_truncated_in_header_and_damaged_inside_a_chunk() {
    let k = key();
    let out = encrypted(&k);
    let payload = age_payload_start(&out);
    assert!(out.len() < payload + 64 * 1024, "one chunk expected");
    for cut in 0..out.len() {
        let e = read_backup(&out[..cut], &ids(&k)).unwrap_err();
        if cut < moat_backup::DETECT_LEN {
            assert!(
                matches!(e, BackupError::Truncated { at: Section::Start }),
                "cut {cut}: {e:?}"
            );
        } else if cut < payload {
            // In the header or the nonce.
            assert!(
                matches!(
                    e,
                    BackupError::Truncated {
                        at: Section::AgeHeader
                    }
                ),
                "cut {cut}: {e:?}"
            );
        } else if cut == payload {
            // Right after the nonce: no chunk at all, so the payload's
            // first bytes are missing.
            assert!(
                matches!(e, BackupError::Truncated { at: Section::Start }),
                "cut {cut}: {e:?}"
            );
        } else {
            // Inside the only (last) chunk: age cannot tell cut from modified.
            assert!(
                matches!(
                    e,
                    BackupError::Damaged {
                        reason: Damage::Encryption
                    }
                ),
                "cut {cut}: {e:?}"
            );
        }
    }
}

#[test]
fn age_truncation_at_a_chunk_boundary_is_truncated() {
    let k = key();
    let big = [BackupFile::new(
        "store/snapshot.sealed",
        0o600,
        Zeroizing::new(vec![7u8; 200_000]),
    )];
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &big,
        Protection::Recipients(vec![k.recipient.clone()]),
        &signer(),
    )
    .unwrap();
    let payload = age_payload_start(&out);
    let chunk = 64 * 1024 + 16;
    for chunks in 1..=3 {
        let cut = payload + chunks * chunk;
        assert!(cut < out.len());
        let e = read_backup(&out[..cut], &ids(&k)).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::Truncated {
                    at: Section::FileData
                }
            ),
            "{chunks} chunks: {e:?}"
        );
    }
}

#[test]
fn age_ciphertext_bit_flip_is_damaged() {
    let k = key();
    let out = encrypted(&k);
    let payload = age_payload_start(&out);
    for i in (payload..out.len()).step_by(7).chain([out.len() - 1]) {
        let mut bad = out.clone();
        bad[i] ^= 0x01;
        let e = read_backup(&bad[..], &ids(&k)).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::Damaged {
                    reason: Damage::Encryption
                }
            ),
            "byte {i}: {e:?}"
        );
    }
}

#[test]
fn age_nonce_or_header_mac_flip_is_damaged() {
    let k = key();
    let out = encrypted(&k);
    let payload = age_payload_start(&out);
    // Nonce: the payload key changes, so the first chunk fails.
    let mut bad = out.clone();
    bad[payload - 3] ^= 0x80;
    let e = read_backup(&bad[..], &ids(&k)).unwrap_err();
    assert!(matches!(e, BackupError::Damaged { .. }), "{e:?}");
    // MAC: a different valid base64 character.
    let mut bad = out.clone();
    let mac = payload - 16 - 2;
    bad[mac] = if bad[mac] == b'A' { b'B' } else { b'A' };
    let e = read_backup(&bad[..], &ids(&k)).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::Damaged {
                reason: Damage::AgeHeader
            }
        ),
        "{e:?}"
    );
}

/// Any single bit flipped anywhere in the age header — including ones
/// that make it unparseable, such as a base64 character of the MAC turned
/// into a non-base64 one — is damage, never "another age version".
#[test]
fn every_header_bit_flip_is_damage_not_an_unknown_version() {
    let k = key();
    let out = encrypted(&k);
    let header_end = age_payload_start(&out) - 16;
    let intro = b"age-encryption.org/v1\n".len();
    for at in intro..header_end {
        for mask in [0x01u8, 0x20, 0x80] {
            let mut bad = out.clone();
            bad[at] ^= mask;
            let e = read_backup(&bad[..], &ids(&k)).unwrap_err();
            assert!(
                !matches!(e, BackupError::UnsupportedAgeFormat),
                "flip {mask:#x} at {at}: {e:?}"
            );
        }
    }
    // A file that is not age v1 still says so.
    let mut v2 = out.clone();
    v2[20] = b'2';
    assert!(matches!(
        read_backup(&v2[..], &ids(&k)).unwrap_err(),
        BackupError::UnsupportedAgeFormat
    ));
}

#[test]
fn data_appended_to_an_age_file_is_damaged() {
    let k = key();
    let mut out = encrypted(&k);
    out.extend_from_slice(b"extra");
    let e = read_backup(&out[..], &ids(&k)).unwrap_err();
    assert!(matches!(e, BackupError::Damaged { .. }), "{e:?}");
}

// ---- tampering: plaintext ------------------------------------------------------

#[test]
fn plaintext_truncated_anywhere_is_truncated() {
    let out = plaintext();
    for cut in 0..out.len() {
        let e = read_backup(&out[..cut], &Unprotect::None).unwrap_err();
        assert!(
            matches!(e, BackupError::Truncated { .. }),
            "cut {cut}: {e:?}"
        );
    }
}

#[test]
fn plaintext_byte_flip_is_never_accepted_and_in_data_is_damaged() {
    let out = plaintext();
    for i in 0..out.len() {
        let mut bad = out.clone();
        bad[i] ^= 0x20;
        let e = read_backup(&bad[..], &Unprotect::None).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::Damaged { .. }
                    | BackupError::Truncated { .. }
                    | BackupError::TooLarge { .. }
                    | BackupError::NotABackup
                    | BackupError::UnsupportedVersion { .. }
                    | BackupError::Read { .. }
            ),
            "byte {i}: {e:?}"
        );
    }
    // A byte inside the snapshot's data, and in the trailer.
    let snapshot = &files()[4].data;
    let data_at = out
        .windows(64)
        .position(|w| w == &snapshot[100..164])
        .unwrap();
    for i in [data_at, out.len() - 1] {
        let mut bad = out.clone();
        bad[i] ^= 0x01;
        let e = read_backup(&bad[..], &Unprotect::None).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::Damaged {
                    reason: Damage::Trailer
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn plaintext_with_trailing_data_is_damaged() {
    let mut out = plaintext();
    out.push(0);
    let e = read_backup(&out[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::Damaged {
                reason: Damage::TrailingData
            }
        ),
        "{e:?}"
    );
}

/// Builds a plaintext payload by hand, with a correct trailer, so that
/// checks after the trailer can be reached with hostile content.
fn craft(manifest_json: &[u8], records: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let mut v = b"MOATBACKUP1\n".to_vec();
    v.extend_from_slice(&(manifest_json.len() as u32).to_be_bytes());
    v.extend_from_slice(manifest_json);
    v.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for (path, mode, data) in records {
        v.extend_from_slice(&(path.len() as u16).to_be_bytes());
        v.extend_from_slice(path);
        v.extend_from_slice(&mode.to_be_bytes());
        v.extend_from_slice(&(data.len() as u64).to_be_bytes());
        v.extend_from_slice(data);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &v);
    v.extend_from_slice(digest.as_ref());
    v
}

/// A format-1 (unsigned) manifest for [`craft`].
fn manifest_for(records: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let mut m = manifest();
    m.format = 1;
    m.files = records
        .iter()
        .map(|(p, mode, d)| moat_backup::FileEntry {
            path: String::from_utf8_lossy(p).into_owned(),
            len: d.len() as u64,
            sha256: data_encoding::HEXLOWER
                .encode(ring::digest::digest(&ring::digest::SHA256, d).as_ref()),
            mode: *mode,
        })
        .collect();
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn crafted_backup_round_trips_when_honest() {
    let records: &[(&[u8], u32, &[u8])] = &[(b"a/b", 0o600, b"hello")];
    let backup = read_backup(
        &craft(&manifest_for(records), records)[..],
        &Unprotect::None,
    )
    .unwrap();
    assert_eq!(&backup.file("a/b").unwrap().data[..], b"hello");
}

#[test]
fn unsafe_paths_in_a_backup_are_refused() {
    for (path, reason) in [
        (&b"../../etc/cron.d/x"[..], PathProblem::ParentComponent),
        (b"/etc/passwd", PathProblem::Absolute),
        (b"", PathProblem::Empty),
        (b"a//b", PathProblem::EmptyComponent),
        (b"./a", PathProblem::DotComponent),
        (b"a\0b", PathProblem::Nul),
        (b"\xff\xfe", PathProblem::NotUtf8),
    ] {
        let records: &[(&[u8], u32, &[u8])] = &[(path, 0o600, b"x")];
        let e = read_backup(
            &craft(&manifest_for(records), records)[..],
            &Unprotect::None,
        )
        .unwrap_err();
        assert!(
            matches!(&e, BackupError::UnsafePath { reason: r, .. } if *r == reason),
            "{path:?}: {e:?}"
        );
    }
    let records: &[(&[u8], u32, &[u8])] = &[(b"a", 0o600, b"x"), (b"a", 0o600, b"y")];
    let e = read_backup(
        &craft(&manifest_for(records), records)[..],
        &Unprotect::None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::UnsafePath {
                reason: PathProblem::Duplicate,
                ..
            }
        ),
        "{e:?}"
    );
    let records: &[(&[u8], u32, &[u8])] = &[(b"x", 0o6755, b"x")];
    let e = read_backup(
        &craft(&manifest_for(records), records)[..],
        &Unprotect::None,
    )
    .unwrap_err();
    assert!(matches!(e, BackupError::UnsafeMode { .. }), "{e:?}");
}

#[test]
fn manifest_must_match_the_files() {
    let records: &[(&[u8], u32, &[u8])] = &[(b"a", 0o600, b"hello")];
    let other: &[(&[u8], u32, &[u8])] = &[(b"a", 0o600, b"HELLO")];
    let e = read_backup(&craft(&manifest_for(other), records)[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            &e,
            BackupError::Damaged {
                reason: Damage::ManifestMismatch {
                    field: "sha256",
                    ..
                }
            }
        ),
        "{e:?}"
    );
    let e = read_backup(&craft(&manifest_for(&[]), records)[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            &e,
            BackupError::Damaged {
                reason: Damage::ManifestMismatch { field: "count", .. }
            }
        ),
        "{e:?}"
    );
    let e = read_backup(&craft(b"{not json", records)[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            &e,
            BackupError::Damaged {
                reason: Damage::Manifest(_)
            }
        ),
        "{e:?}"
    );
}

#[test]
fn newer_manifest_format_is_unsupported() {
    let e = read_backup(
        &craft(br#"{"format":3,"whatever":true}"#, &[])[..],
        &Unprotect::None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        ),
        "{e:?}"
    );
}

#[test]
fn huge_declared_lengths_are_too_large() {
    // Manifest length 2^32 - 1.
    let mut v = b"MOATBACKUP1\n".to_vec();
    v.extend_from_slice(&u32::MAX.to_be_bytes());
    let e = read_backup(&v[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::TooLarge {
                what: Limit::ManifestSize,
                ..
            }
        ),
        "{e:?}"
    );
    // A file of 2^64 - 1 bytes.
    let json = manifest_for(&[]);
    let mut v = b"MOATBACKUP1\n".to_vec();
    v.extend_from_slice(&(json.len() as u32).to_be_bytes());
    v.extend_from_slice(&json);
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.push(b'a');
    v.extend_from_slice(&0o600u32.to_be_bytes());
    v.extend_from_slice(&u64::MAX.to_be_bytes());
    let e = read_backup(&v[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::TooLarge {
                what: Limit::FileSize,
                found: u64::MAX,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn not_a_backup_and_empty_input() {
    for input in [
        &b"hello, this is not a backup at all"[..],
        b"{\"format\":1}",
        b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ] {
        let e = read_backup(input, &Unprotect::None).unwrap_err();
        assert!(matches!(e, BackupError::NotABackup), "{e:?}");
    }
    for input in [&b""[..], b"MOATBA", b"age-encr"] {
        let e = read_backup(input, &Unprotect::None).unwrap_err();
        assert!(
            matches!(e, BackupError::Truncated { at: Section::Start }),
            "{e:?}"
        );
    }
    // Armored age is not accepted.
    let e = read_backup(
        &b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n"[..],
        &Unprotect::None,
    )
    .unwrap_err();
    assert!(matches!(e, BackupError::NotABackup), "{e:?}");
    assert_eq!(detect(b"hello"), None);
}

#[test]
fn debug_output_shows_no_secrets() {
    let f = &files()[1];
    let dbg = format!("{f:?}");
    assert!(
        dbg.contains("unlock.key") && !dbg.contains("secret"),
        "{dbg}"
    );
    let p = Protection::Passphrase(Zeroizing::new("hunter2".into()));
    assert!(!format!("{p:?}").contains("hunter2"));
    let u = Unprotect::Passphrase(Zeroizing::new("hunter2".into()));
    assert!(!format!("{u:?}").contains("hunter2"));
    let k = key();
    let u = ids(&k);
    assert!(!format!("{u:?}").contains("AGE-SECRET"));
    let backup = read_backup(&plaintext()[..], &Unprotect::None).unwrap();
    assert!(!format!("{backup:?}").contains("MOATKEY"));
}

// ---- restore --------------------------------------------------------------------

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn leftovers(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".restoring-"))
        .collect()
}

#[test]
fn restore_lays_out_files_with_modes() {
    let k = key();
    let backup = read_backup(&encrypted(&k)[..], &ids(&k)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    restore_into(&backup, &dir).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("certs")), 0o700);
    assert_eq!(mode_of(&dir.join("store")), 0o700);
    for f in files() {
        let p = dir.join(&f.path);
        assert_eq!(fs::read(&p).unwrap(), &f.data[..], "{}", f.path);
        assert_eq!(mode_of(&p), f.mode, "{}", f.path);
    }
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["certs", "empty", "node.json", "store", "unlock.key"]
    );
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn restore_into_existing_empty_directory() {
    let backup = read_backup(&plaintext()[..], &Unprotect::None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    restore_into(&backup, &dir).unwrap();
    assert!(dir.join("certs/ca.crt").is_file());
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn restore_refuses_non_empty_directory_and_leaves_it_alone() {
    let backup = read_backup(&plaintext()[..], &Unprotect::None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("keep.me"), b"precious").unwrap();
    let e = restore_into(&backup, &dir).unwrap_err();
    assert!(
        matches!(&e, BackupError::TargetNotEmpty { path } if path == &dir),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .ends_with("is not empty; restore into a new or empty directory"),
        "{e}"
    );
    let names: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(fs::read(dir.join("keep.me")).unwrap(), b"precious");
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn restore_refuses_a_file_or_symlink_target() {
    let backup = read_backup(&plaintext()[..], &Unprotect::None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("state");
    fs::write(&file, b"x").unwrap();
    let e = restore_into(&backup, &file).unwrap_err();
    assert!(matches!(e, BackupError::InvalidTarget { .. }), "{e:?}");
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let e = restore_into(&backup, &link).unwrap_err();
    assert!(matches!(e, BackupError::InvalidTarget { .. }), "{e:?}");
    assert!(fs::read_dir(&empty).unwrap().next().is_none());
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn restore_rechecks_paths_of_a_hand_made_backup() {
    let mut backup = read_backup(&plaintext()[..], &Unprotect::None).unwrap();
    backup.files[0].path = "../escaped".into();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let e = restore_into(&backup, &dir).unwrap_err();
    assert!(matches!(e, BackupError::UnsafePath { .. }), "{e:?}");
    assert!(!dir.exists());
    assert!(!tmp.path().join("escaped").exists());
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn restore_without_parent_fails_cleanly() {
    let backup = read_backup(&plaintext()[..], &Unprotect::None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("missing/state");
    let e = restore_into(&backup, &dir).unwrap_err();
    assert!(matches!(e, BackupError::InvalidTarget { .. }), "{e:?}");
    assert!(!dir.exists());
}

// ---- garbage never panics ------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(read_backup(&data[..], &Unprotect::None).is_err());
    }

    #[test]
    fn random_bytes_after_plaintext_magic_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut v = b"MOATBACKUP1\n".to_vec();
        v.extend_from_slice(&data);
        prop_assert!(read_backup(&v[..], &Unprotect::None).is_err());
    }

    #[test]
    fn random_bytes_after_age_magic_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut v = b"age-encryption.org/v1\n".to_vec();
        v.extend_from_slice(&data);
        let _ = read_backup(&v[..], &Unprotect::None);
        let _ = read_backup(&v[..], &Unprotect::Passphrase(Zeroizing::new("pw".into())));
    }

    #[test]
    fn mutated_plaintext_backup_is_rejected(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut v = plaintext();
        for (at, xor) in &edits {
            let i = at.index(v.len());
            v[i] ^= xor;
        }
        // Two edits can cancel out; only a changed input must fail.
        if v != plaintext() {
            prop_assert!(read_backup(&v[..], &Unprotect::None).is_err());
        }
    }
}

// ---- origin: the manager's signature and the operator's pin ----------------

/// A plaintext format-2 payload taken apart: manifest JSON, origin JSON,
/// and the file records (count included), without the trailer.
struct Parts {
    manifest: Vec<u8>,
    origin: serde_json::Value,
    records: Vec<u8>,
}

fn split(payload: &[u8]) -> Parts {
    assert!(payload.starts_with(b"MOATBACKUP2\n"));
    let u32_at = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap()) as usize;
    let m_len = u32_at(12);
    let manifest = payload[16..16 + m_len].to_vec();
    let o_at = 16 + m_len;
    let o_len = u32_at(o_at);
    let origin = serde_json::from_slice(&payload[o_at + 4..o_at + 4 + o_len]).unwrap();
    let records = payload[o_at + 4 + o_len..payload.len() - 32].to_vec();
    Parts {
        manifest,
        origin,
        records,
    }
}

/// Frames `parts` again with a correct trailer: only the signature can
/// tell that something changed.
fn join(parts: &Parts) -> Vec<u8> {
    let origin = serde_json::to_vec(&parts.origin).unwrap();
    let mut v = b"MOATBACKUP2\n".to_vec();
    v.extend_from_slice(&(parts.manifest.len() as u32).to_be_bytes());
    v.extend_from_slice(&parts.manifest);
    v.extend_from_slice(&(origin.len() as u32).to_be_bytes());
    v.extend_from_slice(&origin);
    v.extend_from_slice(&parts.records);
    let digest = ring::digest::digest(&ring::digest::SHA256, &v);
    v.extend_from_slice(digest.as_ref());
    v
}

fn ours_trusted() -> Trust {
    Trust::Cluster {
        id: ours().id,
        root: Some(ours().root_fingerprint()),
    }
}

fn origin_err(e: BackupError) -> OriginError {
    match e {
        BackupError::Origin(o) => o,
        other => panic!("expected an origin error, got {other:?}"),
    }
}

#[test]
fn signed_backup_names_its_cluster_signer_and_root() {
    let k = key();
    let backup = read_backup(&encrypted(&k)[..], &ids(&k)).unwrap();
    let Origin::Signed(signed) = &backup.origin else {
        panic!("not signed: {:?}", backup.origin);
    };
    assert_eq!(signed.cluster_id, ours().id);
    assert_eq!(signed.signer.node_id, ours().node);
    assert_eq!(signed.signer.role, Role::Manager);
    assert_eq!(signed.roots, vec![ours().root_fingerprint()]);
    backup.check_trust(&ours_trusted()).unwrap();
    backup
        .check_trust(&Trust::Cluster {
            id: ours().id,
            root: None,
        })
        .unwrap();
    backup.check_trust(&Trust::AnyCluster).unwrap();
}

/// Regression (issue 16, finding 4): anyone who knows the age recipient
/// could write a backup of their own cluster, and restore trusted it.
#[test]
fn backup_of_another_cluster_is_refused_when_ours_is_expected() {
    let k = key();
    let theirs = Cluster::new(Role::Manager);
    let mut out = Vec::new();
    write_backup(
        &mut out,
        theirs.manifest(),
        &files(),
        Protection::Recipients(vec![k.recipient.clone()]),
        &theirs.signer(),
    )
    .unwrap();
    let backup = read_backup(&out[..], &ids(&k)).unwrap();
    let e = origin_err(backup.check_trust(&ours_trusted()).unwrap_err());
    assert_eq!(
        e,
        OriginError::WrongCluster {
            expected: ours().id.to_string(),
            found: theirs.id.to_string(),
        }
    );
    let text = e.to_string();
    assert!(
        text.contains(&ours().id.to_string()) && text.contains(&theirs.id.to_string()),
        "{text}"
    );
    // The forger relabels their backup with our cluster id: the roots they
    // carry are their cluster's, so the signature check refuses it.
    let mut parts = split(&{
        let mut v = Vec::new();
        write_backup(
            &mut v,
            theirs.manifest(),
            &files(),
            Protection::InsecurePlaintext,
            &theirs.signer(),
        )
        .unwrap();
        v
    });
    let relabelled = String::from_utf8(parts.manifest.clone())
        .unwrap()
        .replace(&theirs.id.to_string(), &ours().id.to_string());
    parts.manifest = relabelled.into_bytes();
    let e = read_backup(&join(&parts)[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(origin_err(e), OriginError::ClusterMismatch { .. }),
        "relabelled"
    );
}

/// A forger who mints a root naming our cluster id gets past the cluster
/// id alone, never past the root fingerprint.
#[test]
fn a_root_minted_with_our_cluster_id_fails_the_root_pin() {
    let now = ours().now;
    let fake_ca = RootCa::generate(ours().id, &RootOptions::default(), now).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = moat_pki::VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
    let cert = fake_ca
        .issue(
            &csr,
            ours().node,
            Role::Manager,
            CertExpiry::from_secs_or_default(None).unwrap(),
            now,
        )
        .unwrap();
    // Our real root in the bundle as well: it must not lend its name.
    let roots = TrustRoots::new(vec![
        fake_ca.certificate().clone(),
        ours().roots.certs()[0].clone(),
    ])
    .unwrap();
    let forger = Signer::new(Arc::new(key), vec![cert.der], roots);
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::InsecurePlaintext,
        &forger,
    )
    .unwrap();
    let backup = read_backup(&out[..], &Unprotect::None).unwrap();
    let Origin::Signed(signed) = &backup.origin else {
        panic!("not signed");
    };
    assert_eq!(
        signed.roots,
        vec![moat_pki::fingerprint(fake_ca.certificate().as_ref())]
    );
    let e = origin_err(backup.check_trust(&ours_trusted()).unwrap_err());
    assert!(matches!(e, OriginError::WrongRoot { .. }), "{e:?}");
}

#[test]
fn tampered_signature_or_manifest_is_refused() {
    let mut out = Vec::new();
    write_backup(
        &mut out,
        manifest(),
        &files(),
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap();
    read_backup(&out[..], &Unprotect::None).unwrap();

    // A bit of the signature flipped.
    let mut parts = split(&out);
    let sig = parts.origin["signature"].as_str().unwrap();
    let mut raw = data_encoding::BASE64.decode(sig.as_bytes()).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    parts.origin["signature"] = data_encoding::BASE64.encode(&raw).into();
    let e = read_backup(&join(&parts)[..], &Unprotect::None).unwrap_err();
    assert_eq!(origin_err(e), OriginError::BadSignature);

    // The manifest changed after signing (same length, trailer fixed).
    let mut parts = split(&out);
    let text = String::from_utf8(parts.manifest.clone()).unwrap();
    parts.manifest = text
        .replace("\"raft_index\":42", "\"raft_index\":43")
        .into_bytes();
    assert_ne!(parts.manifest, text.as_bytes());
    let e = read_backup(&join(&parts)[..], &Unprotect::None).unwrap_err();
    assert_eq!(origin_err(e), OriginError::BadSignature);

    // The signature block taken away: not a valid signature block.
    let mut parts = split(&out);
    parts.origin = serde_json::json!({});
    let e = read_backup(&join(&parts)[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(origin_err(e), OriginError::Malformed { .. }),
        "empty block"
    );
}

#[test]
fn only_a_manager_of_the_named_node_and_cluster_can_sign() {
    let worker = Cluster::new(Role::Worker);
    let e = write_backup(
        Vec::new(),
        worker.manifest(),
        &files(),
        Protection::InsecurePlaintext,
        &worker.signer(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::InvalidInput(InputError::Signer(OriginError::NotAManager { .. }))
        ),
        "{e:?}"
    );
    let mut other_node = manifest();
    other_node.node_id = NodeId::generate().to_string();
    let e = write_backup(
        Vec::new(),
        other_node,
        &files(),
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::InvalidInput(InputError::Signer(OriginError::WrongSigner { .. }))
        ),
        "{e:?}"
    );
    // Taken long after the certificate expired.
    let mut late = manifest();
    late.created_at += 400 * 24 * 3600;
    let e = write_backup(
        Vec::new(),
        late,
        &files(),
        Protection::InsecurePlaintext,
        &signer(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::InvalidInput(InputError::Signer(OriginError::Certificate(_)))
        ),
        "{e:?}"
    );
}

#[test]
fn unsigned_format_1_backup_is_accepted_only_when_any_cluster_is_trusted() {
    let records: &[(&[u8], u32, &[u8])] = &[(b"node.json", 0o600, b"{}")];
    let backup = read_backup(
        &craft(&manifest_for(records), records)[..],
        &Unprotect::None,
    )
    .unwrap();
    assert_eq!(backup.origin, Origin::Unsigned);
    let e = origin_err(backup.check_trust(&ours_trusted()).unwrap_err());
    assert!(matches!(e, OriginError::Unsigned { .. }), "{e:?}");
    assert!(e.to_string().contains("--trust-any-cluster"), "{e}");
    backup.check_trust(&Trust::AnyCluster).unwrap();
}

#[test]
fn oversized_signature_block_is_too_large_before_reading_it() {
    let mut v = b"MOATBACKUP2\n".to_vec();
    v.extend_from_slice(&2u32.to_be_bytes());
    v.extend_from_slice(b"{}");
    v.extend_from_slice(&u32::MAX.to_be_bytes());
    let e = read_backup(&v[..], &Unprotect::None).unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::TooLarge {
                what: Limit::OriginSize,
                ..
            }
        ),
        "{e:?}"
    );
}
