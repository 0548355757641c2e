//! End-to-end autolock flows through the public API only, as `node/` and
//! `cli/` will use it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use moat_lock::{
    Aad, Dek, DekSet, DekVersion, KdfParams, KeyKind, KeySource, LockError, Passphrase, UnlockKey,
    inspect, read_sealed_file, seal_to_file, unseal_file, write_sealed_file,
};
use zeroize::Zeroizing;

const DEK_AAD: Aad<'static> = Aad::new("dek", "c0ffee", "node-a");

/// Guards the whole autolock cycle: the operator copies the unlock key, the
/// node restarts, and records written before the restart still open.
#[test]
fn unlock_key_protects_dek_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dek_path = dir.path().join("dek.sealed");

    // First boot: generate, show the key once, wrap the DEK to disk.
    let unlock_key = UnlockKey::generate().unwrap();
    let shown_to_operator = unlock_key.expose_for_operator();
    let dek = Dek::generate(DekVersion(1)).unwrap();
    write_sealed_file(
        &dek_path,
        &dek.wrap(KeySource::Key(&unlock_key), &DEK_AAD).unwrap(),
    )
    .unwrap();
    let record = dek.seal_record(b"log:1", b"raft entry").unwrap();
    drop((dek, unlock_key));

    // Restart: the operator pastes the key back.
    let unlock_key: UnlockKey = shown_to_operator.trim().parse().unwrap();
    let blob = read_sealed_file(&dek_path).unwrap();
    let info = inspect(&blob).unwrap();
    assert_eq!((info.key_id, info.key_kind), (1, KeyKind::UnlockKey));
    let dek = Dek::unwrap(KeySource::Key(&unlock_key), &DEK_AAD, &blob).unwrap();
    let set = DekSet::new(dek);
    assert_eq!(
        set.open_record(b"log:1", &record).unwrap().as_slice(),
        b"raft entry"
    );

    // A different key is told apart from a damaged file.
    let wrong = UnlockKey::generate().unwrap();
    let err = Dek::unwrap(KeySource::Key(&wrong), &DEK_AAD, &blob).unwrap_err();
    assert!(matches!(err, LockError::WrongKey));
}

/// Guards rotation of both the DEK and the unlock key.
#[test]
fn rotate_dek_and_rewrap_under_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dek.sealed");
    let pass = Passphrase::new(Zeroizing::new("operator passphrase".to_string())).unwrap();
    let kek = KeySource::Passphrase(&pass, KdfParams::minimum());

    let mut set = DekSet::new(Dek::generate(DekVersion(1)).unwrap());
    let old = set.current().seal_record(b"k", b"v1").unwrap();
    let next = set.begin_rotation().unwrap();
    write_sealed_file(&path, &next.wrap(kek, &DEK_AAD).unwrap()).unwrap();
    // Re-encrypt under the pending DEK, then retire the old one.
    let plain = set.open_record(b"k", &old).unwrap();
    let new = set.pending().unwrap().seal_record(b"k", &plain).unwrap();
    let retired = set.complete_rotation().unwrap();
    assert_eq!(retired.version(), DekVersion(1));

    let blob = read_sealed_file(&path).unwrap();
    assert_eq!(
        inspect(&blob).unwrap().kdf_params,
        Some(KdfParams::minimum())
    );
    let reloaded = DekSet::new(Dek::unwrap(kek, &DEK_AAD, &blob).unwrap());
    assert_eq!(reloaded.current().version(), DekVersion(2));
    assert_eq!(reloaded.open_record(b"k", &new).unwrap().as_slice(), b"v1");
    assert!(matches!(
        reloaded.open_record(b"k", &old),
        Err(LockError::UnknownDekVersion {
            version: DekVersion(1)
        })
    ));
}

/// Guards that a sealed secret moved to another node's data directory does
/// not open there, and that the error names the file.
#[test]
fn sealed_file_is_bound_to_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.key.sealed");
    let key = UnlockKey::generate().unwrap();
    let here = Aad::new("ca-key", "c0ffee", "node-a");
    // A PEM-looking plaintext, built at run time (no key material is committed).
    let pem = format!("-----BEGIN {} KEY-----", "PRIVATE");
    seal_to_file(&path, KeySource::Key(&key), 7, &here, pem.as_bytes()).unwrap();
    assert!(
        !std::fs::read(&path)
            .unwrap()
            .windows(11)
            .any(|w| w == b"PRIVATE KEY")
    );

    let elsewhere = Aad::new("ca-key", "c0ffee", "node-b");
    let err = unseal_file(&path, KeySource::Key(&key), &elsewhere).unwrap_err();
    assert!(matches!(err.root(), LockError::Tampered));
    assert!(err.to_string().contains("ca.key.sealed"));
    let opened = unseal_file(&path, KeySource::Key(&key), &here).unwrap();
    assert_eq!(opened.key_id, 7);
}
