//! The openraft type configuration of the cluster store.

use std::io::Cursor;

use crate::model::{Command, Response};

openraft::declare_raft_types!(
    /// Types the store's Raft group is built from: commands and responses of
    /// the cluster model, moat node ids as Raft ids, and each manager's
    /// cluster address as its Raft node data.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = moat_pki::NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft handle of the cluster store.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id of the cluster store.
pub type LogId = openraft::LogId<moat_pki::NodeId>;
/// A vote of the cluster store.
pub type Vote = openraft::Vote<moat_pki::NodeId>;
/// A log entry of the cluster store.
pub type Entry = openraft::Entry<TypeConfig>;
/// A storage error of the cluster store.
pub type StorageError = openraft::StorageError<moat_pki::NodeId>;
/// The membership of the store's Raft group.
pub type StoredMembership = openraft::StoredMembership<moat_pki::NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<moat_pki::NodeId, openraft::BasicNode>;
