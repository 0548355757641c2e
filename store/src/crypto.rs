//! Encryption of everything the store writes: log records, the vote,
//! metadata and snapshots, each under the DEK with associated data that
//! binds it to its cluster, node, file kind and position.

use std::sync::RwLock;

use moat_lock::{DekSet, LockError};
use moat_pki::{ClusterId, NodeId};
use zeroize::Zeroizing;

use crate::StoreError;

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
}

/// Seals and opens store records with the node's DEKs.
///
/// The AAD of a record is `"moat-store-v1" ‖ kind ‖ cluster id ‖ node id ‖
/// position`, so a record copied from another manager, moved to another
/// index or term, or replayed into another file fails authentication.
pub struct RecordCipher {
    cluster: ClusterId,
    node: NodeId,
    keys: Keys,
}

enum Keys {
    Encrypted(Box<RwLock<DekSet>>),
    /// Benchmark only: no encryption (see [`RecordCipher::danger_plaintext`]).
    Plaintext,
}

const PLAINTEXT_MARK: &[u8; 4] = b"PLN0";

impl RecordCipher {
    /// A cipher for the store of `node` in `cluster` using `deks`: new
    /// records are sealed with the pending DEK during a rotation, else
    /// with the current one; records of either version open.
    pub fn new(cluster: ClusterId, node: NodeId, deks: DekSet) -> Self {
        Self {
            cluster,
            node,
            keys: Keys::Encrypted(Box::new(RwLock::new(deks))),
        }
    }

    /// A cipher that does not encrypt. It exists only so the benchmark can
    /// measure what encryption costs; nothing in moat constructs it.
    pub fn danger_plaintext(cluster: ClusterId, node: NodeId) -> Self {
        Self {
            cluster,
            node,
            keys: Keys::Plaintext,
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

    /// Seals `plaintext` as a record of `kind` at `position`.
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
                Ok(dek.seal_record(&self.aad(kind, position), plaintext)?)
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
