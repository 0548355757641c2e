//! Encryption of everything the store writes: log records, the vote,
//! metadata and snapshots, each under the DEK with associated data that
//! binds it to its cluster, node, file kind and position.

use std::sync::RwLock;

use moat_lock::{DekSet, LockError};
use moat_pki::{ClusterId, NodeId};
use zeroize::Zeroizing;

use crate::StoreError;
use crate::lease::Leases;

/// Which kind of store file a record belongs to; part of every record's AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    /// A raft log entry; position = index ‖ term ‖ leader.
    Log = 1,
    /// The vote; position empty.
    Vote = 2,
    /// Log metadata (committed / purged ids); position = field name.
    Meta = 3,
    /// A snapshot; position = snapshot id.
    Snapshot = 4,
    /// An audit record in this manager's audit segments; position = the
    /// record's sequence number (8 bytes, big-endian).
    AuditSegment = 5,
}

/// Seals and opens store records with the node's DEKs.
///
/// The AAD of a record is `"moat-store-v1" ‖ kind ‖ cluster id ‖ node id ‖
/// position`, so a record copied from another manager, moved to another
/// index or term, or replayed into another file fails authentication.
///
/// Each DEK's record count is kept durably by the store that opened it
/// (see [`OpenStore::open`](crate::OpenStore::open) and `docs/store.md`):
/// before a record past a DEK's lease is sealed, a longer lease is on
/// disk. A cipher made with [`RecordCipher::new`] counts in this process
/// only.
pub struct RecordCipher {
    cluster: ClusterId,
    node: NodeId,
    keys: Keys,
    /// Where the DEKs' lease ends are made durable; `None`: counts are
    /// kept in this process only.
    leases: Option<Leases>,
}

/// How many times [`RecordCipher::seal`] extends a lease for one record
/// before giving up (each extension makes room for at least one record,
/// so more than one is needed only when other threads take that room).
const LEASE_TRIES: usize = 16;

enum Keys {
    Encrypted(Box<RwLock<DekSet>>),
    /// Benchmark only: no encryption (see [`RecordCipher::danger_plaintext`]).
    Plaintext,
}

const PLAINTEXT_MARK: &[u8; 4] = b"PLN0";

impl RecordCipher {
    /// A cipher for the store of `node` in `cluster` using `deks`: new
    /// records are sealed with the pending DEK during a rotation, else
    /// with the current one; records of either version open. The DEKs'
    /// record counts are kept in this process only (a store's own cipher
    /// keeps them on disk: [`OpenStore::open`](crate::OpenStore::open)).
    pub fn new(cluster: ClusterId, node: NodeId, deks: DekSet) -> Self {
        Self {
            cluster,
            node,
            keys: Keys::Encrypted(Box::new(RwLock::new(deks))),
            leases: None,
        }
    }

    /// A cipher whose DEKs are on leases kept in `leases` (their counts
    /// already resumed from it).
    pub(crate) fn leased(cluster: ClusterId, node: NodeId, deks: DekSet, leases: Leases) -> Self {
        Self {
            leases: Some(leases),
            ..Self::new(cluster, node, deks)
        }
    }

    /// A cipher that does not encrypt. It exists only so the benchmark can
    /// measure what encryption costs; nothing in moat constructs it.
    pub fn danger_plaintext(cluster: ClusterId, node: NodeId) -> Self {
        Self {
            cluster,
            node,
            keys: Keys::Plaintext,
            leases: None,
        }
    }

    /// The cluster records are bound to.
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The node records are bound to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The DEK version new records are sealed with: the pending DEK during
    /// a rotation, else the current one (`None` without encryption).
    pub fn sealing_version(&self) -> Option<moat_lock::DekVersion> {
        match &self.keys {
            Keys::Encrypted(deks) => deks
                .read()
                .ok()
                .map(|d| d.pending().unwrap_or(d.current()).version()),
            Keys::Plaintext => None,
        }
    }

    /// Whether a DEK rotation is in progress (a pending DEK exists).
    pub fn rotation_in_progress(&self) -> bool {
        match &self.keys {
            Keys::Encrypted(deks) => deks.read().map(|d| d.pending().is_some()).unwrap_or(false),
            Keys::Plaintext => false,
        }
    }

    /// Records counted as sealed by the DEK new records are sealed with,
    /// over its whole life (see `docs/store.md`), with its version;
    /// `None` without encryption.
    pub fn records_sealed(&self) -> Option<(moat_lock::DekVersion, u64)> {
        match &self.keys {
            Keys::Encrypted(deks) => deks.read().ok().map(|d| {
                let dek = d.pending().unwrap_or(d.current());
                (dek.version(), dek.records_sealed())
            }),
            Keys::Plaintext => None,
        }
    }

    /// Whether the DEK new records are sealed with has sealed
    /// [`moat_lock::DEK_ROTATE_AT`] records or more (or its count was
    /// lost): time to rotate it, before sealing refuses at
    /// [`moat_lock::MAX_RECORDS_PER_DEK`].
    pub fn rotation_advised(&self) -> bool {
        match &self.keys {
            Keys::Encrypted(deks) => deks
                .read()
                .map(|d| d.pending().unwrap_or(d.current()).rotation_advised())
                .unwrap_or(false),
            Keys::Plaintext => false,
        }
    }

    /// Seals `plaintext` as a record of `kind` at `position`.
    ///
    /// Durability: if the record is past its DEK's lease, a longer lease
    /// is on disk before the record is sealed; if that write fails,
    /// nothing is sealed and the error names the lease file. A DEK at
    /// [`moat_lock::MAX_RECORDS_PER_DEK`] refuses with
    /// [`LockError::DekUsageLimit`]: rotate it.
    pub fn seal(
        &self,
        kind: FileKind,
        position: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        match &self.keys {
            Keys::Encrypted(deks) => {
                let deks = deks.read().map_err(|_| poisoned())?;
                let dek = deks.pending().unwrap_or(deks.current());
                let aad = self.aad(kind, position);
                for _ in 0..LEASE_TRIES {
                    match dek.seal_record(&aad, plaintext) {
                        Err(LockError::DekLeaseEnded { .. }) => match &self.leases {
                            Some(leases) => leases.extend(dek)?,
                            None => {
                                return Err(StoreError::Invalid(
                                    "this store was opened read-only: it seals nothing".into(),
                                ));
                            }
                        },
                        sealed => return Ok(sealed?),
                    }
                }
                Err(StoreError::Invalid(format!(
                    "could not reserve room for a record under DEK version {} after {LEASE_TRIES} lease extensions; try again",
                    dek.version()
                )))
            }
            Keys::Plaintext => {
                let mut out = Vec::with_capacity(plaintext.len() + 4);
                out.extend_from_slice(PLAINTEXT_MARK);
                out.extend_from_slice(plaintext);
                Ok(out)
            }
        }
    }

    /// Opens a record of `kind` at `position`. Any change to the record, or
    /// a record from another cluster, node, kind or position, fails with
    /// [`LockError::RecordTampered`] (or a truncation/unknown-key error).
    pub fn open(
        &self,
        kind: FileKind,
        position: &[u8],
        record: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, LockError> {
        match &self.keys {
            Keys::Encrypted(deks) => {
                let deks = deks.read().map_err(|_| LockError::Crypto {
                    what: "DEK lock poisoned",
                })?;
                deks.open_record(&self.aad(kind, position), record)
            }
            Keys::Plaintext => match record.strip_prefix(PLAINTEXT_MARK) {
                Some(rest) => Ok(Zeroizing::new(rest.to_vec())),
                None => Err(LockError::Crypto {
                    what: "plaintext record marker",
                }),
            },
        }
    }

    /// The lease keeper, for a store opened writable.
    pub(crate) fn leases(&self) -> Option<&Leases> {
        self.leases.as_ref()
    }

    /// Runs `f` with the DEK set (for rotation and for wrapping the keys).
    pub fn with_deks<T>(&self, f: impl FnOnce(&mut DekSet) -> T) -> Option<T> {
        match &self.keys {
            Keys::Encrypted(deks) => deks.write().ok().map(|mut d| f(&mut d)),
            Keys::Plaintext => None,
        }
    }

    fn aad(&self, kind: FileKind, position: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(14 + 1 + 32 + position.len());
        aad.extend_from_slice(b"moat-store-v1");
        aad.push(kind as u8);
        aad.extend_from_slice(self.cluster.as_bytes());
        aad.extend_from_slice(self.node.as_bytes());
        aad.extend_from_slice(position);
        aad
    }
}

fn poisoned() -> StoreError {
    StoreError::Invalid("the DEK lock was poisoned by a panic".into())
}
