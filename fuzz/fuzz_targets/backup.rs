#![no_main]
//! Fuzzes `moat backup inspect` / `moat restore` input: `moat_backup::read_backup` with the fixture age identity; what it accepts is consistent with its manifest, within the limits, safe to restore, and its `Debug` shows no file contents.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moat_backup::{
    Backup, MAX_FILE_LEN, MAX_FILES, MAX_PATH_LEN, MAX_TOTAL_LEN, Unprotect, detect, read_backup,
};
use moat_fuzz::{FIXTURE_AGE_IDENTITY, repair_backup_trailer};
use zeroize::Zeroizing;

fn unprotect() -> &'static Unprotect {
    static U: OnceLock<Unprotect> = OnceLock::new();
    U.get_or_init(|| Unprotect::Identities(vec![Zeroizing::new(FIXTURE_AGE_IDENTITY.to_owned())]))
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Also with the plaintext trailer (a SHA-256 of everything before it)
    // made right, so the manifest, origin and file checks behind it see
    // mutated payloads.
    if let Some(repaired) = repair_backup_trailer(data) {
        check(&repaired);
    }
});

fn check(data: &[u8]) {
    let backup = match read_backup(data, unprotect()) {
        Ok(backup) => backup,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(
        detect(data).is_some(),
        "accepted input that is not a backup"
    );

    // The manifest lists exactly the files, each with its length, mode
    // and SHA-256.
    let m = &backup.manifest;
    assert_eq!(m.files.len(), backup.files.len());
    assert!(backup.files.len() as u64 <= MAX_FILES);
    let mut total = 0u64;
    for (entry, file) in m.files.iter().zip(&backup.files) {
        assert_eq!(entry.path, file.path);
        assert_eq!(entry.mode, file.mode);
        assert_eq!(entry.len, file.data.len() as u64);
        let digest = ring::digest::digest(&ring::digest::SHA256, &file.data);
        assert_eq!(entry.sha256, hex(digest.as_ref()), "{}", file.path);
        assert!(entry.len <= MAX_FILE_LEN);
        total += entry.len;

        // Restorable inside its directory: relative, no `.`/`..`/empty
        // component, no NUL, permission bits only.
        let p = &file.path;
        assert!(!p.is_empty() && p.len() as u64 <= MAX_PATH_LEN, "{p:?}");
        assert!(!p.contains('\0') && !p.starts_with('/'), "{p:?}");
        assert!(
            p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "unsafe path accepted: {p:?}"
        );
        assert!(file.mode <= 0o777, "mode {:o} accepted", file.mode);
    }
    assert!(total <= MAX_TOTAL_LEN);
    let mut seen: Vec<&str> = backup.files.iter().map(|f| f.path.as_str()).collect();
    seen.sort_unstable();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "a path twice in one backup");

    // `Debug` (what a log or an error shows) never depends on the files'
    // contents.
    let mut wiped: Backup = backup.clone();
    for f in &mut wiped.files {
        f.data.iter_mut().for_each(|b| *b = !*b);
    }
    assert_eq!(
        format!("{backup:?}"),
        format!("{wiped:?}"),
        "Debug of a backup shows file contents"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
