//! Durable record counts for the DEKs: a lease per DEK version, so that
//! [`MAX_RECORDS_PER_DEK`] holds over the whole life of a DEK, across
//! restarts, and not only within one process.
//!
//! Beside `keys/dek-<v>.sealed` the store keeps `keys/dek-<v>.uses`, the
//! *lease end*: how many records DEK `v` may have sealed so far, in all
//! processes. At open, the DEK's counter starts at the lease end (every
//! leased record counts as used); before the counter passes it, the
//! cipher writes a lease end [`DEK_USE_LEASE`] further on, durably (temp
//! file, fsync, rename, fsync of `keys/`), and only then seals. A crash
//! therefore loses at most the unused rest of one lease, and the count
//! never restarts lower. Worst case: one file write per [`DEK_USE_LEASE`]
//! records, and 2^30 / 2^16 = 16 384 restarts with writes before a DEK is
//! worn out by leases alone (it is rotated long before: [`DEK_ROTATE_AT`]).
//!
//! A missing file means a DEK sealed by a moat older than the lease (or a
//! store laid out by `moat restore`, whose backup carries no count because
//! the original may have sealed more since): its count is unknown, so it
//! is taken as [`DEK_ROTATE_AT`], which asks the manager for a rotation at
//! once. A file that does not parse, names another DEK or claims more than
//! the limit is refused: the store does not open.
//!
//! The file is not secret and not authenticated: someone who can write
//! the store directory can put an older copy back, as they could any
//! file there. The lease guards against restarts, not against that.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use moat_lock::{DEK_ROTATE_AT, Dek, DekVersion, MAX_RECORDS_PER_DEK};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Records per lease extension: one durable write of `keys/dek-<v>.uses`
/// per 2^16 records sealed, and at most 2^16 records of budget lost per
/// restart.
pub const DEK_USE_LEASE: u64 = 1 << 16;

/// What `keys/dek-<v>.uses` holds (JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    /// Format of this file: 1.
    format: u32,
    /// The DEK version; must match the file name.
    dek: u32,
    /// Records the DEK may have sealed so far, in all processes.
    leased: u64,
}

/// The path of DEK `version`'s lease file in the store's `keys/`.
pub(crate) fn lease_path(keys_dir: &Path, version: DekVersion) -> PathBuf {
    keys_dir.join(format!("dek-{}.uses", version.0))
}

/// Reads DEK `version`'s lease end: `None` if the file is missing, an
/// error naming the file if it is damaged.
pub(crate) fn read_lease(keys_dir: &Path, version: DekVersion) -> Result<Option<u64>, StoreError> {
    let path = lease_path(keys_dir, version);
    if !path.try_exists().map_err(StoreError::io("stat", &path))? {
        return Ok(None);
    }
    let bytes = crate::fsutil::read_limited(&path, 4096)?;
    let refuse = |reason: String| StoreError::Lease {
        path: path.clone(),
        version,
        reason,
    };
    let file: LeaseFile =
        serde_json::from_slice(&bytes).map_err(|e| refuse(format!("it does not parse ({e})")))?;
    if file.format != 1 {
        return Err(refuse(format!("unknown format {}", file.format)));
    }
    if file.dek != version.0 {
        return Err(refuse(format!("it belongs to DEK version {}", file.dek)));
    }
    if file.leased > MAX_RECORDS_PER_DEK {
        return Err(refuse(format!(
            "it claims {} records, over the limit of {MAX_RECORDS_PER_DEK}",
            file.leased
        )));
    }
    Ok(Some(file.leased))
}

/// Writes DEK `version`'s lease end durably: temp file, fsync, rename,
/// fsync of `keys/`. When this returns, the new end survives a crash.
pub(crate) fn write_lease(
    keys_dir: &Path,
    version: DekVersion,
    leased: u64,
) -> Result<(), StoreError> {
    let file = LeaseFile {
        format: 1,
        dek: version.0,
        leased,
    };
    let mut json = serde_json::to_vec(&file).map_err(|e| StoreError::Encoding {
        what: "DEK lease",
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    crate::fsutil::write_atomic(&lease_path(keys_dir, version), &json)
}

/// Carries `dek`'s count over from its lease file and puts it on a lease
/// (see the module doc; a missing file counts as [`DEK_ROTATE_AT`]).
pub(crate) fn resume(keys_dir: &Path, dek: &Dek) -> Result<(), StoreError> {
    let leased = match read_lease(keys_dir, dek.version())? {
        Some(n) => n,
        None => {
            tracing::warn!(
                file = %lease_path(keys_dir, dek.version()).display(),
                dek = dek.version().0,
                "this data key has no record count (a store from before moat kept one, or a restored one): counting it as due for rotation"
            );
            DEK_ROTATE_AT
        }
    };
    dek.resume_leased(leased);
    Ok(())
}

/// The lease keeper of a writable store: extends a DEK's lease durably
/// before a record past it is sealed.
pub(crate) struct Leases {
    keys_dir: PathBuf,
    step: u64,
    /// Serializes lease writes, so that lease ends on disk only grow.
    write: Mutex<()>,
}

impl Leases {
    /// Leases of `step` records (at least 1) in the store's `keys_dir`.
    pub(crate) fn new(keys_dir: PathBuf, step: u64) -> Self {
        Self {
            keys_dir,
            step: step.max(1),
            write: Mutex::new(()),
        }
    }

    /// Starts the lease of a DEK nothing has sealed with (a new store or
    /// a rotation): its lease file says 0, durably, and the DEK is put on
    /// a lease. Call before the DEK's sealed file is written, so that a
    /// sealed file without a lease file always means an unknown count.
    pub(crate) fn start(&self, dek: &Dek) -> Result<(), StoreError> {
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        write_lease(&self.keys_dir, dek.version(), 0)?;
        dek.resume_leased(0);
        Ok(())
    }

    /// Makes a lease end [`step`](Self::new) past `dek`'s count durable,
    /// then grants it to `dek`. Does nothing if another thread already
    /// did, or if the count is at the limit (sealing then refuses with
    /// [`moat_lock::LockError::DekUsageLimit`]).
    pub(crate) fn extend(&self, dek: &Dek) -> Result<(), StoreError> {
        let _guard = self.write.lock().map_err(|_| poisoned())?;
        let sealed = dek.records_sealed();
        if dek.lease_end() > sealed || sealed >= MAX_RECORDS_PER_DEK {
            return Ok(());
        }
        let end = sealed.saturating_add(self.step).min(MAX_RECORDS_PER_DEK);
        write_lease(&self.keys_dir, dek.version(), end)?;
        dek.extend_lease(end);
        Ok(())
    }
}

fn poisoned() -> StoreError {
    StoreError::Invalid("the DEK lease lock was poisoned by a panic".into())
}
