//! The cluster store: openraft with an encrypted, durable log and
//! encrypted snapshots.
//!
//! moat-store owns the openraft type configuration ([`TypeConfig`]), the
//! cluster model and its commands ([`model`]), the encrypted log store
//! ([`LogStore`]), the state machine with encrypted snapshots
//! ([`StateMachineStore`]), the record encryption both use
//! ([`RecordCipher`]), and the proposer that batches a leader's
//! concurrent writes into one entry ([`Proposer`]). Every byte it writes
//! is sealed with the DEK and bound to its cluster, node, file kind and
//! position.
//!
//! It never talks to the network (the raft network adapter lives in the
//! transport) and knows nothing of the CLI or HTTP. It calls moat-lock for
//! keys and sealing, and moat-pki/moat-tokens only for their types.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod audit_segments;
mod batch;
mod crypto;
mod error;
mod fsutil;
mod lease;
mod log;
pub mod model;
pub mod offline;
mod open;
mod quorum;
mod rotation;
mod sm;
mod types;

pub use batch::{BatchLimits, Proposer, WriteError, Written};
pub use crypto::{FileKind, RecordCipher};
pub use error::StoreError;
pub use lease::DEK_USE_LEASE;
pub use log::{
    COMMITTED_PERSIST_EVERY, DEFAULT_SEGMENT_BYTES, LogStore, LogStoreOptions, LogStoreReader,
    MAX_FRAME_LEN,
};
pub use open::{OpenStore, StoreIdentity, read_deks, read_identity, rewrap_deks, write_dek};
pub use quorum::{QuorumError, can_remove};
pub use rotation::{begin_dek_rotation, complete_dek_rotation, files_sealed_with};
pub use sm::{
    Applied, MAX_SNAPSHOT_BYTES, SnapshotFile, StateMachineStore, read_snapshot, seal_snapshot,
};
pub use types::*;

/// Reads the applied cluster state after confirming with a quorum that this
/// node is the leader and has applied everything committed before the
/// call (openraft's read index): the result is linearizable.
pub async fn read_linearizable<T>(
    raft: &Raft,
    applied: &std::sync::RwLock<Applied>,
    read: impl FnOnce(&model::ClusterState) -> T,
) -> Result<T, ReadError> {
    raft.ensure_linearizable()
        .await
        .map_err(|e| ReadError::Raft(Box::new(e)))?;
    let applied = applied.read().map_err(|_| ReadError::Poisoned)?;
    Ok(read(&applied.state))
}

/// Why a linearizable read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// This node is not the leader (the error names the leader if known),
    /// or quorum could not be confirmed.
    #[error(transparent)]
    Raft(Box<LeaderCheckError>),
    /// The state lock was poisoned by a panic.
    #[error("the state machine lock was poisoned by a panic")]
    Poisoned,
}

/// openraft's error when a leader cannot confirm its leadership.
pub type LeaderCheckError = openraft::error::RaftError<
    moat_pki::NodeId,
    openraft::error::CheckIsLeaderError<moat_pki::NodeId, openraft::BasicNode>,
>;
