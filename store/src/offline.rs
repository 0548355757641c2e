//! Offline tools over a stopped manager's store directory: authenticate
//! everything (`moat store verify`) and decrypt it for forensics
//! (`moat store dump`).

use std::path::Path;

use moat_lock::{DekVersion, KeySource};
use openraft::EntryPayload;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use serde::Serialize;

use crate::model::ClusterState;
use crate::{OpenStore, StoreError, StoreIdentity};

/// What `moat store verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Whose store it is.
    pub identity: StoreIdentity,
    /// DEK versions present: the current one, then the pending one if a
    /// rotation is in progress.
    pub dek_versions: Vec<u32>,
    /// Id and last index of the snapshot, if any.
    pub snapshot: Option<SnapshotSummary>,
    /// First and last log index held (after the snapshot/purge point).
    pub log_first: Option<u64>,
    /// Last log index held.
    pub log_last: Option<u64>,
    /// Number of log records authenticated.
    pub log_records: u64,
    /// The committed index recorded by the log.
    pub committed: Option<u64>,
    /// The vote's term.
    pub vote_term: Option<u64>,
}

/// A snapshot, briefly.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub id: String,
    /// Last log index it covers.
    pub last_index: Option<u64>,
}

/// What `moat store dump` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    /// The verification summary.
    pub verify: VerifyReport,
    /// The cluster state: the snapshot plus every committed log entry after
    /// it (secrets redacted unless asked).
    pub state: serde_json::Value,
    /// Entries after the committed index, not applied to `state`.
    pub uncommitted_entries: u64,
}

/// Opens the store in `dir` with `kek`, authenticating every DEK, log
/// record, vote, metadata file and snapshot; the first failure is returned
/// and names its file and position. Read-only: nothing in `dir` changes,
/// not even the repair of a torn log tail.
pub async fn verify(dir: &Path, kek: KeySource<'_>) -> Result<VerifyReport, StoreError> {
    Ok(load(dir, kek).await?.0)
}

/// Like [`verify`], then rebuilds the cluster state for printing.
pub async fn dump(
    dir: &Path,
    kek: KeySource<'_>,
    show_secrets: bool,
) -> Result<DumpReport, StoreError> {
    let (verify, state, uncommitted) = load(dir, kek).await?;
    Ok(DumpReport {
        verify,
        state: state.to_dump_json(show_secrets),
        uncommitted_entries: uncommitted,
    })
}

/// Like [`verify`], then rebuilds the committed cluster state: for a
/// manager that must read its own store before it can start (renewing its
/// expired certificate from the CA key the store holds).
pub async fn read_state(dir: &Path, kek: KeySource<'_>) -> Result<ClusterState, StoreError> {
    Ok(load(dir, kek).await?.1)
}

async fn load(
    dir: &Path,
    kek: KeySource<'_>,
) -> Result<(VerifyReport, ClusterState, u64), StoreError> {
    let mut store = OpenStore::open_read_only(dir, kek)?;
    {
        let dek_versions = store
            .cipher
            .with_deks(|d| {
                let mut v = vec![d.current().version()];
                v.extend(d.pending().map(|p| p.version()));
                v.into_iter().map(|DekVersion(n)| n).collect()
            })
            .unwrap_or_default();
        let snapshot = store.sm.get_current_snapshot().await.map_err(storage)?;
        let snapshot_summary = snapshot.as_ref().map(|s| SnapshotSummary {
            id: s.meta.snapshot_id.clone(),
            last_index: s.meta.last_log_id.map(|l| l.index),
        });
        let mut state: ClusterState = match &snapshot {
            Some(s) => {
                serde_json::from_slice(s.snapshot.get_ref()).map_err(|e| StoreError::Encoding {
                    what: "snapshot",
                    reason: e.to_string(),
                })?
            }
            None => ClusterState::default(),
        };
        let applied_to = snapshot
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
            .map(|l| l.index);
        let log_state = store.log.get_log_state().await.map_err(storage)?;
        let committed = store
            .log
            .read_committed()
            .await
            .map_err(storage)?
            .map(|l| l.index);
        let vote_term = store
            .log
            .read_vote()
            .await
            .map_err(storage)?
            .map(|v| v.leader_id().term);
        let first = log_state
            .last_purged_log_id
            .map(|l| l.index + 1)
            .unwrap_or(0);
        let last = log_state.last_log_id.map(|l| l.index);
        let entries = match last {
            Some(last) if last >= first => store
                .log
                .try_get_log_entries(first..=last)
                .await
                .map_err(storage)?,
            _ => Vec::new(),
        };
        let mut uncommitted = 0;
        for entry in &entries {
            let index = entry.log_id.index;
            if applied_to.is_some_and(|a| index <= a) {
                continue;
            }
            if committed.is_none_or(|c| index > c) {
                uncommitted += 1;
                continue;
            }
            if let EntryPayload::Normal(command) = &entry.payload {
                state.apply(command);
            }
        }
        let report = VerifyReport {
            identity: store.identity,
            dek_versions,
            snapshot: snapshot_summary,
            log_first: entries.first().map(|e| e.log_id.index),
            log_last: last,
            log_records: entries.len() as u64,
            committed,
            vote_term,
        };
        Ok((report, state, uncommitted))
    }
}

fn storage(e: openraft::StorageError<moat_pki::NodeId>) -> StoreError {
    StoreError::Invalid(e.to_string())
}
