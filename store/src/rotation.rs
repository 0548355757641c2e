//! DEK rotation, store side.
//!
//! A rotation moves every record of the store from the current DEK to a
//! new one without stopping the manager:
//!
//! 1. **begin** — a new DEK (version + 1) is sealed under the KEK and made
//!    durable as `keys/dek-<v+1>.sealed`, after its record count
//!    `keys/dek-<v+1>.uses` (0); from then on every new record is
//!    sealed with it, and the log starts a new segment so no segment mixes
//!    versions.
//! 2. **snapshot** — once every entry written before step 1 is applied, a
//!    snapshot is taken: it is sealed with the new DEK and replaces the old
//!    snapshot file.
//! 3. **purge** — the log is purged up to that snapshot: whole segments of
//!    old records are deleted, and the log metadata and the vote are
//!    re-sealed with the new DEK.
//! 4. **complete** — when [`files_sealed_with`] finds no file that still
//!    uses the old DEK, the new DEK becomes current and the old key file
//!    and its record count are deleted (directory fsynced).
//!
//! A restart at any point resumes: two key files mean a rotation is in
//! progress (the higher version is the new key); both keys open records
//! until step 4 has run. Steps 2–3 are driven through openraft by the node.

use std::path::{Path, PathBuf};

use moat_lock::{DekVersion, KeySource};

use crate::{RecordCipher, StoreError, StoreIdentity};

/// Starts a rotation (step 1), or returns the pending version if one is
/// already in progress. The new key file is durable before any record is
/// sealed with the new key.
pub fn begin_dek_rotation(
    dir: &Path,
    identity: &StoreIdentity,
    kek: KeySource<'_>,
    cipher: &RecordCipher,
) -> Result<DekVersion, StoreError> {
    cipher
        .with_deks(|deks| {
            if let Some(pending) = deks.pending() {
                return Ok(pending.version());
            }
            let pending = deks.begin_rotation()?;
            let version = pending.version();
            // Still under the DEK write lock: no record can be sealed with
            // the new key before its files are on disk, its record count
            // (0) first. If writing fails, the rotation is abandoned in
            // memory too.
            let counted = match cipher.leases() {
                Some(leases) => leases.start(pending),
                None => Ok(()),
            };
            if let Err(e) = counted.and_then(|()| crate::write_dek(dir, identity, kek, pending)) {
                deks.abandon_rotation();
                return Err(e);
            }
            Ok(version)
        })
        .unwrap_or_else(|| Err(StoreError::Invalid("this store is not encrypted".into())))
}

/// Finishes a rotation (step 4): refuses while any file still holds a
/// record sealed with the old DEK; otherwise makes the new DEK current and
/// deletes the old key file. Returns the version now current.
pub fn complete_dek_rotation(dir: &Path, cipher: &RecordCipher) -> Result<DekVersion, StoreError> {
    let Some((old, new)) = cipher
        .with_deks(|d| d.pending().map(|p| (d.current().version(), p.version())))
        .flatten()
    else {
        return Err(StoreError::Invalid("no DEK rotation is in progress".into()));
    };
    let users = files_sealed_with(dir, old)?;
    if !users.is_empty() {
        return Err(StoreError::Invalid(format!(
            "DEK v{} still seals {} file(s), e.g. {}: snapshot and purge the log first",
            old.0,
            users.len(),
            users[0].display()
        )));
    }
    cipher
        .with_deks(|d| d.complete_rotation().map(drop))
        .transpose()?;
    let keys_dir = dir.join("keys");
    let old_file = keys_dir.join(format!("dek-{}.sealed", old.0));
    std::fs::remove_file(&old_file).map_err(StoreError::io("remove", &old_file))?;
    // Its record count goes with it (a crash in between leaves a count
    // without a key, which nothing reads).
    let old_count = crate::lease::lease_path(&keys_dir, old);
    match std::fs::remove_file(&old_count) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("remove", &old_count)(e)),
    }
    crate::fsutil::sync_dir(&keys_dir)?;
    Ok(new)
}

/// Every file of the store that holds at least one record sealed with DEK
/// `version`: log segments (each frame), the vote, the log metadata and
/// snapshots. Reads headers only; decrypts nothing.
pub fn files_sealed_with(dir: &Path, version: DekVersion) -> Result<Vec<PathBuf>, StoreError> {
    let mut found = Vec::new();
    let log = dir.join("log");
    for path in list(&log)? {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let bytes = crate::fsutil::read_limited(&path, 1 << 30)?;
        let uses = if name.ends_with(".seg") {
            segment_versions(&bytes).any(|v| v == version)
        } else if name == "vote" || name == "meta" {
            moat_lock::record_version(&bytes) == Some(version)
        } else {
            false
        };
        if uses {
            found.push(path);
        }
    }
    for path in list(&dir.join("snapshots"))? {
        if path.extension().is_some_and(|e| e == "snap") {
            let bytes = crate::fsutil::read_limited(&path, crate::MAX_SNAPSHOT_BYTES)?;
            let sealed_at = bytes
                .get(8..10)
                .map(|l| 10 + usize::from(u16::from_be_bytes([l[0], l[1]])));
            let v = sealed_at
                .and_then(|at| bytes.get(at..))
                .and_then(moat_lock::record_version);
            if v == Some(version) {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// The DEK version of each frame of a log segment (frame = length u32,
/// then 36 bytes of CRC/index/term/leader, then the sealed record).
fn segment_versions(bytes: &[u8]) -> impl Iterator<Item = DekVersion> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = bytes.get(at..at + 4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let frame = bytes.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        moat_lock::record_version(frame.get(36..)?)
    })
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()).map_err(StoreError::io("list", dir)))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io("list", dir)(e)),
    }
}
