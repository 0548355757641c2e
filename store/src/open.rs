//! Opening a store directory: identity file, wrapped DEKs, log and state
//! machine.
//!
//! Layout of a store directory:
//!
//! ```text
//! DIR/store.json              cluster id, node id, format version (not secret)
//! DIR/keys/dek-<v>.sealed     DEK version v, sealed under the KEK (moat-lock
//!                             sealed blob, purpose "store-dek"); two files
//!                             while a rotation is in progress
//! DIR/keys/dek-<v>.uses       how many records DEK v may have sealed so far,
//!                             over its whole life (its lease; see `lease`)
//! DIR/log/                    the encrypted raft log (see `log`)
//! DIR/snapshots/              encrypted snapshots (see `sm`)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moat_lock::{Aad, Dek, DekSet, DekVersion, KeySource};
use moat_pki::{ClusterId, NodeId};
use serde::{Deserialize, Serialize};

use crate::lease::{self, DEK_USE_LEASE, Leases};
use crate::{LogStore, LogStoreOptions, RecordCipher, StateMachineStore, StoreError};

const IDENTITY_FILE: &str = "store.json";
const DEK_PURPOSE: &str = "store-dek";

/// The plaintext identity of a store directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// Format version of the directory layout.
    pub format: u32,
    /// The cluster the store belongs to.
    pub cluster_id: ClusterId,
    /// The manager that owns it.
    pub node_id: NodeId,
}

/// An opened store: its log, its state machine, and the cipher both use.
pub struct OpenStore {
    /// Who the store belongs to.
    pub identity: StoreIdentity,
    /// The raft log.
    pub log: LogStore,
    /// The state machine.
    pub sm: StateMachineStore,
    /// Record encryption shared by both.
    pub cipher: Arc<RecordCipher>,
}

impl OpenStore {
    /// Creates a store in an empty (or missing) `dir` for `node` of
    /// `cluster`, with a fresh DEK sealed under `kek`.
    pub fn create(
        dir: &Path,
        kek: KeySource<'_>,
        cluster: ClusterId,
        node: NodeId,
    ) -> Result<Self, StoreError> {
        let path = dir.join(IDENTITY_FILE);
        if path.exists() {
            return Err(StoreError::Invalid(format!(
                "{} already holds a store; open it instead of creating one",
                dir.display()
            )));
        }
        crate::fsutil::create_dir(&dir.join("keys"))?;
        let identity = StoreIdentity {
            format: 1,
            cluster_id: cluster,
            node_id: node,
        };
        let dek = Dek::generate(DekVersion(1))?;
        // The count first: a sealed DEK file without one means a count
        // that was lost (see `lease`).
        lease::write_lease(&dir.join("keys"), dek.version(), 0)?;
        write_dek(dir, &identity, kek, &dek)?;
        let json = serde_json::to_vec_pretty(&identity).map_err(|e| StoreError::Encoding {
            what: "store identity",
            reason: e.to_string(),
        })?;
        crate::fsutil::write_atomic(&path, &json)?;
        Self::open(dir, kek)
    }

    /// Opens the store in `dir`, unwrapping its DEKs with `kek` and
    /// authenticating every log record and snapshot. Each DEK's record
    /// count resumes from its lease file (`keys/dek-<v>.uses`), which is
    /// extended by [`DEK_USE_LEASE`] records at a time, durably, before a
    /// record past it is sealed. A damaged lease file is refused
    /// ([`StoreError::Lease`]); a missing one counts the DEK as due for
    /// rotation ([`moat_lock::DEK_ROTATE_AT`]).
    pub fn open(dir: &Path, kek: KeySource<'_>) -> Result<Self, StoreError> {
        Self::open_with_lease(dir, kek, DEK_USE_LEASE)
    }

    /// [`open`](Self::open) with leases of `lease` records (at least 1)
    /// instead of [`DEK_USE_LEASE`]: smaller leases write the lease file
    /// more often and lose less of a DEK's budget to a crash. For tests.
    pub fn open_with_lease(dir: &Path, kek: KeySource<'_>, lease: u64) -> Result<Self, StoreError> {
        let (identity, cipher) = unlock(dir, kek, Some(lease))?;
        Self::open_with(dir, identity, cipher)
    }

    /// Opens the store without changing any file (offline verification of
    /// a stopped manager or a backup): repairs a running store would make,
    /// such as cutting a torn log tail, are skipped, and writes are refused.
    pub fn open_read_only(dir: &Path, kek: KeySource<'_>) -> Result<Self, StoreError> {
        let (identity, cipher) = unlock(dir, kek, None)?;
        let log = LogStore::open_with(
            &dir.join("log"),
            cipher.clone(),
            LogStoreOptions::new().read_only(),
        )?;
        let snapshots = dir.join("snapshots");
        if !snapshots.is_dir() {
            return Err(StoreError::Invalid(format!(
                "{} is missing: the store is incomplete",
                snapshots.display()
            )));
        }
        let sm = StateMachineStore::open(&snapshots, cipher.clone())?;
        Ok(Self {
            identity,
            log,
            sm,
            cipher,
        })
    }

    /// Opens the store with an existing cipher (the benchmark uses a
    /// plaintext one to measure the cost of encryption).
    pub fn open_with(
        dir: &Path,
        identity: StoreIdentity,
        cipher: Arc<RecordCipher>,
    ) -> Result<Self, StoreError> {
        let log = LogStore::open(&dir.join("log"), cipher.clone())?;
        let sm = StateMachineStore::open(&dir.join("snapshots"), cipher.clone())?;
        Ok(Self {
            identity,
            log,
            sm,
            cipher,
        })
    }
}

/// Reads the store's identity and unwraps its DEKs into a record cipher,
/// their counts resumed from their lease files. With `lease` (records per
/// extension) the cipher extends the leases; without (read-only), it
/// refuses to seal.
fn unlock(
    dir: &Path,
    kek: KeySource<'_>,
    lease: Option<u64>,
) -> Result<(StoreIdentity, Arc<RecordCipher>), StoreError> {
    let identity = read_identity(dir)?;
    let deks = read_deks(dir, &identity, kek)?;
    let keys_dir = dir.join("keys");
    for dek in std::iter::once(deks.current()).chain(deks.pending()) {
        lease::resume(&keys_dir, dek)?;
    }
    let (cluster, node) = (identity.cluster_id, identity.node_id);
    let cipher = match lease {
        Some(step) => RecordCipher::leased(cluster, node, deks, Leases::new(keys_dir, step)),
        None => RecordCipher::new(cluster, node, deks),
    };
    Ok((identity, Arc::new(cipher)))
}

/// Reads `DIR/store.json`.
pub fn read_identity(dir: &Path) -> Result<StoreIdentity, StoreError> {
    let path = dir.join(IDENTITY_FILE);
    let bytes = crate::fsutil::read_limited(&path, 4096)?;
    let identity: StoreIdentity =
        serde_json::from_slice(&bytes).map_err(|e| StoreError::corrupt(&path, "content", e))?;
    if identity.format != 1 {
        return Err(StoreError::corrupt(
            &path,
            "format",
            format!("unknown store format {}", identity.format),
        ));
    }
    Ok(identity)
}

fn dek_path(dir: &Path, version: DekVersion) -> PathBuf {
    dir.join("keys").join(format!("dek-{}.sealed", version.0))
}

fn dek_aad(identity: &StoreIdentity) -> (String, String) {
    (
        identity.cluster_id.to_string(),
        identity.node_id.to_string(),
    )
}

/// Seals `dek` under `kek` into `DIR/keys/dek-<v>.sealed` (atomic, 0600).
pub fn write_dek(
    dir: &Path,
    identity: &StoreIdentity,
    kek: KeySource<'_>,
    dek: &Dek,
) -> Result<(), StoreError> {
    let (cluster, node) = dek_aad(identity);
    let blob = dek.wrap(kek, &Aad::new(DEK_PURPOSE, &cluster, &node))?;
    moat_lock::write_sealed_file(dek_path(dir, dek.version()), &blob)?;
    Ok(())
}

/// Re-seals every DEK file of the store from `old` to `new` without
/// writing anything: returns each file's path and its new content, for the
/// caller to put in place together (the node does it through a commit
/// journal, so a crash leaves all files under one key or the other).
pub fn rewrap_deks(
    dir: &Path,
    old: KeySource<'_>,
    new: KeySource<'_>,
) -> Result<Vec<(PathBuf, Vec<u8>)>, StoreError> {
    let identity = read_identity(dir)?;
    let deks = read_deks(dir, &identity, old)?;
    let (cluster, node) = dek_aad(&identity);
    let aad = Aad::new(DEK_PURPOSE, &cluster, &node);
    let mut out = Vec::new();
    for dek in std::iter::once(deks.current()).chain(deks.pending()) {
        out.push((dek_path(dir, dek.version()), dek.wrap(new, &aad)?));
    }
    Ok(out)
}

/// Loads the DEKs: one file is the current key; two mean a rotation is in
/// progress (the higher version is pending).
pub fn read_deks(
    dir: &Path,
    identity: &StoreIdentity,
    kek: KeySource<'_>,
) -> Result<DekSet, StoreError> {
    let keys_dir = dir.join("keys");
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&keys_dir).map_err(StoreError::io("list", &keys_dir))? {
        let entry = entry.map_err(StoreError::io("list", &keys_dir))?;
        let name = entry.file_name();
        let Some(v) = name
            .to_str()
            .and_then(|n| n.strip_prefix("dek-"))
            .and_then(|n| n.strip_suffix(".sealed"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        versions.push(DekVersion(v));
    }
    versions.sort();
    let (cluster, node) = dek_aad(identity);
    let aad = Aad::new(DEK_PURPOSE, &cluster, &node);
    let load = |v: DekVersion| -> Result<Dek, StoreError> {
        let path = dek_path(dir, v);
        let blob = moat_lock::read_sealed_file(&path)?;
        let dek = Dek::unwrap(kek, &aad, &blob).map_err(|source| StoreError::Key {
            path: path.clone(),
            node: node.clone(),
            cluster: cluster.clone(),
            source,
        })?;
        if dek.version() != v {
            return Err(StoreError::corrupt(
                &path,
                "key id",
                "DEK version does not match its file name",
            ));
        }
        Ok(dek)
    };
    match versions.as_slice() {
        [] => Err(StoreError::Invalid(format!(
            "{} holds no data encryption key; the store cannot be read",
            keys_dir.display()
        ))),
        [only] => Ok(DekSet::new(load(*only)?)),
        [current, pending] => Ok(DekSet::with_pending(load(*current)?, load(*pending)?)?),
        _ => Err(StoreError::corrupt(
            &keys_dir,
            "keys",
            format!("{} DEK files; at most two may exist", versions.len()),
        )),
    }
}
