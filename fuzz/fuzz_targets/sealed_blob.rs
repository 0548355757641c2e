#![no_main]
//! Fuzzes sealed blobs: `inspect` and `unseal` with the fixture unlock key must agree and fail closed.

use libfuzzer_sys::fuzz_target;
use moat_fuzz::{FIXTURE_AAD, OTHER_AAD, fixture_key, repair_seal_checksum};
use moat_lock::{KeyKind, KeySource, LockError, MIN_BLOB_LEN, inspect, seal, unseal};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Also with the header checksum made right, so the checks behind it
    // (KDF id and bounds, key kind, key-check value, AEAD) see mutated
    // headers. No argon2id runs: the fixture key is not a passphrase.
    if let Some(repaired) = repair_seal_checksum(data) {
        check(&repaired);
    }
});

fn check(data: &[u8]) {
    let key = KeySource::Key(fixture_key());
    let info = inspect(data);
    let opened = unseal(key, &FIXTURE_AAD, data);

    let info = match info {
        Ok(info) => info,
        Err(inspect_err) => {
            // `unseal` runs the same header checks first, so it fails the
            // same way.
            let unseal_err = opened.expect_err("unseal opened a blob whose header inspect rejects");
            assert_eq!(format!("{unseal_err:?}"), format!("{inspect_err:?}"));
            return;
        }
    };

    let unsealed = match opened {
        Ok(unsealed) => unsealed,
        Err(e) => {
            // A well-formed header leaves only key and authentication
            // failures; anything else (e.g. `Crypto`) is a bug.
            match info.key_kind {
                KeyKind::UnlockKey => assert!(
                    matches!(e, LockError::WrongKey | LockError::Tampered),
                    "unexpected unseal error for a valid unlock-key header: {e:?}"
                ),
                _ => assert!(
                    matches!(e, LockError::KeyKindMismatch { .. }),
                    "unexpected unseal error for a passphrase header: {e:?}"
                ),
            }
            return;
        }
    };

    // It opened, so it must be a genuine blob sealed with the fixture key
    // for this context (in practice: a seed, unchanged).
    assert_eq!(info.key_kind, KeyKind::UnlockKey);
    assert!(info.kdf_params.is_none() && unsealed.kdf_params.is_none());
    assert_eq!(info.key_id, unsealed.key_id);
    assert_eq!(unsealed.plaintext.len() + MIN_BLOB_LEN, data.len());

    // The AAD is bound: the same bytes do not open for another node.
    assert!(
        matches!(unseal(key, &OTHER_AAD, data), Err(LockError::Tampered)),
        "blob opened under a different AAD"
    );

    // Re-sealing round-trips, with a fresh salt and nonce.
    let resealed = seal(key, unsealed.key_id, &FIXTURE_AAD, &unsealed.plaintext)
        .unwrap_or_else(|e| panic!("re-seal failed: {e}"));
    assert_eq!(resealed.len(), data.len());
    assert_ne!(resealed.as_slice(), data, "seal reused salt and nonce");
    let again = unseal(key, &FIXTURE_AAD, &resealed)
        .unwrap_or_else(|e| panic!("re-sealed blob does not open: {e}"));
    assert_eq!(again.key_id, unsealed.key_id);
    assert_eq!(again.plaintext.as_slice(), unsealed.plaintext.as_slice());
}
