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
    Ok(load(dir, kek).await?.report)
}

/// Like [`verify`], then rebuilds the cluster state for printing.
pub async fn dump(
    dir: &Path,
    kek: KeySource<'_>,
    show_secrets: bool,
) -> Result<DumpReport, StoreError> {
    let loaded = load(dir, kek).await?;
    Ok(DumpReport {
        verify: loaded.report,
        state: loaded.state.to_dump_json(show_secrets),
        uncommitted_entries: loaded.uncommitted,
    })
}

/// Like [`verify`], then rebuilds the committed cluster state: for a
/// manager that must read its own store before it can start (renewing its
/// expired certificate from the CA key the store holds).
pub async fn read_state(dir: &Path, kek: KeySource<'_>) -> Result<ClusterState, StoreError> {
    Ok(load(dir, kek).await?.state)
}

/// What a stopped store holds once read.
struct Loaded {
    report: VerifyReport,
    state: ClusterState,
    uncommitted: u64,
    /// The log id of the last entry reflected in `state`.
    applied: Option<crate::LogId>,
}

/// What [`force_single_voter`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ForcedCluster {
    /// The log index the new cluster starts from.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// Log entries that were not known to be committed and were dropped.
    pub dropped_entries: u64,
}

/// Rewrites a stopped manager's store so that `node`, reachable at `addr`,
/// is the only voter of its cluster (`moat init --force-new-cluster`):
/// every committed change is kept (the snapshot plus the committed log
/// entries become one new snapshot whose membership is `{node}`), entries
/// not known to be committed are dropped, and the log starts empty with a
/// vote at least as new as anything in it, so the node elects itself.
///
/// The new snapshot is durable before the old log is removed; if
/// interrupted, running it again finishes the job.
pub async fn force_single_voter(
    dir: &Path,
    kek: KeySource<'_>,
    node: moat_pki::NodeId,
    addr: &str,
) -> Result<ForcedCluster, StoreError> {
    let loaded = load(dir, kek).await?;
    let last = loaded.applied.ok_or_else(|| {
        StoreError::Invalid("the store holds no committed state to start a cluster from".into())
    })?;
    let term = loaded
        .report
        .vote_term
        .unwrap_or(0)
        .max(last.leader_id.term);
    let store = OpenStore::open(dir, kek)?;
    let membership = openraft::Membership::new(
        vec![std::collections::BTreeSet::from([node])],
        std::collections::BTreeMap::from([(node, openraft::BasicNode::new(addr))]),
    );
    let id = format!(
        "{}-{}-force-new-cluster",
        last.index,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    let file = crate::SnapshotFile {
        meta: crate::SnapshotMeta {
            last_log_id: Some(last),
            last_membership: crate::StoredMembership::new(Some(last), membership),
            snapshot_id: id,
        },
        state: loaded.state,
    };
    store.sm.write_snapshot(&file)?;
    drop(store);
    // The old log goes: its entries are in the snapshot or were never
    // committed, and its membership entries would override the new one.
    let log = dir.join("log");
    let old = dir.join("log.replaced");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(StoreError::io("remove", &old))?;
    }
    if log.exists() {
        std::fs::rename(&log, &old).map_err(StoreError::io("rename", &log))?;
        crate::fsutil::sync_dir(dir)?;
    }
    let mut store = OpenStore::open(dir, kek)?;
    let vote = crate::Vote::new(term, node);
    store.log.save_vote(&vote).await.map_err(storage)?;
    drop(store);
    std::fs::remove_dir_all(&old).map_err(StoreError::io("remove", &old))?;
    crate::fsutil::sync_dir(dir)?;
    Ok(ForcedCluster {
        index: last.index,
        term: last.leader_id.term,
        dropped_entries: loaded.uncommitted,
    })
}

async fn load(dir: &Path, kek: KeySource<'_>) -> Result<Loaded, StoreError> {
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
        let mut applied = snapshot.as_ref().and_then(|s| s.meta.last_log_id);
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
            applied = Some(entry.log_id);
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
        Ok(Loaded {
            report,
            state,
            uncommitted,
            applied,
        })
    }
}

fn storage(e: openraft::StorageError<moat_pki::NodeId>) -> StoreError {
    StoreError::Invalid(e.to_string())
}
