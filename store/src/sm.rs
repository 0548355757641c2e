//! The state machine: the cluster model in memory, persisted as encrypted
//! snapshots.
//!
//! `apply` changes only memory; durability comes from the log (entries
//! after the snapshot are re-applied at start) and from snapshots, which
//! are written atomically and sealed with the DEK.
//!
//! Snapshot file `DIR/snapshot-<id>.snap`:
//!
//! ```text
//! "MOATSNP1" (8) | id length u16 BE | snapshot id (UTF-8) | sealed record
//! ```
//!
//! The sealed record (`FileKind::Snapshot`, position = the snapshot id) holds
//! the JSON of [`SnapshotFile`]: the snapshot metadata (last log id,
//! membership, id) and the cluster state. The id inside must equal the id
//! in the header and in the file name. At most one snapshot file exists
//! after a snapshot completes; a newer one is written to a temporary file,
//! fsynced, renamed into place, the directory fsynced, and only then are
//! older ones removed. At start the newest valid snapshot wins; any file
//! that fails authentication stops the store with an error naming it.
//!
//! Snapshot data sent to other managers is the plaintext JSON inside the
//! mutual-TLS connection; each manager seals it with its own DEK and AAD.
//!
//! The audit log's records are not in the state (decision D45): applying
//! an entry that makes records leaves them pending in the state, and
//! [`RaftStateMachine::apply`] writes them to this manager's audit
//! segments (`DIR/audit/`, see [`crate::audit_segments`]) and fsyncs them
//! before it returns. At open the segments are checked against the
//! state's frontier; records beyond the snapshot's size are kept and must
//! match when the Raft log's entries are applied again (a record that does
//! not is corruption, named by file and offset), and a torn tail is cut
//! off before the next write.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::EntryPayload;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use serde::{Deserialize, Serialize};

use crate::audit_segments::{AUDIT_DIR, AuditSegments, DEFAULT_AUDIT_SEGMENT_BYTES};
use crate::model::{ClusterState, Response};
use crate::{
    Entry, FileKind, LogId, RecordCipher, SnapshotMeta, StorageError, StoreError, StoredMembership,
    TypeConfig,
};

const MAGIC: &[u8; 8] = b"MOATSNP1";
/// Largest snapshot file read, checked before reading it.
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

/// What a snapshot file holds once opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// openraft's metadata: last log id, membership, snapshot id.
    pub meta: SnapshotMeta,
    /// The cluster state at `meta.last_log_id`.
    pub state: ClusterState,
}

/// The applied state, shared between the state machine and readers.
#[derive(Debug, Default)]
pub struct Applied {
    /// Last log id applied.
    pub last_applied: Option<LogId>,
    /// Last membership applied.
    pub membership: StoredMembership,
    /// The cluster model.
    pub state: ClusterState,
    /// Bytes of this manager's newest snapshot file (0 before the first):
    /// watched against [`MAX_SNAPSHOT_BYTES`] (the audit log's records are
    /// no longer in it: decision D45).
    pub snapshot_bytes: u64,
}

/// The state machine of the cluster store (implements openraft's
/// `RaftStateMachine`).
#[derive(Clone)]
pub struct StateMachineStore {
    dir: PathBuf,
    cipher: Arc<RecordCipher>,
    applied: Arc<RwLock<Applied>>,
    audit: Arc<AuditSegments>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, loading and authenticating the
    /// newest snapshot if there is one.
    ///
    /// The audit segments in `DIR/audit/` are opened and checked against
    /// the snapshot's audit frontier (nothing is written until the next
    /// apply).
    pub fn open(dir: &Path, cipher: Arc<RecordCipher>) -> Result<Self, StoreError> {
        Self::open_with_audit_segment_bytes(dir, cipher, DEFAULT_AUDIT_SEGMENT_BYTES)
    }

    /// [`StateMachineStore::open`], starting a new audit segment every
    /// `bytes` (tests use small segments).
    pub fn open_with_audit_segment_bytes(
        dir: &Path,
        cipher: Arc<RecordCipher>,
        bytes: u64,
    ) -> Result<Self, StoreError> {
        crate::fsutil::create_dir(dir)?;
        let audit = Arc::new(AuditSegments::open(
            &dir.join(AUDIT_DIR),
            cipher.clone(),
            bytes,
            false,
        )?);
        let mut applied = Applied::default();
        if let Some((path, file)) = newest_snapshot(dir, &cipher)? {
            applied = Applied {
                last_applied: file.meta.last_log_id,
                membership: file.meta.last_membership.clone(),
                state: file.state,
                snapshot_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            };
        }
        applied.state.audit.attach(audit.clone())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cipher,
            applied: Arc::new(RwLock::new(applied)),
            audit,
        })
    }

    /// This manager's audit segments.
    pub fn audit_segments(&self) -> Arc<AuditSegments> {
        self.audit.clone()
    }

    /// A shared handle to the applied state, for readers.
    pub fn applied(&self) -> Arc<RwLock<Applied>> {
        self.applied.clone()
    }

    /// Writes `file` as the current snapshot (atomically) and removes
    /// older ones.
    /// Returns its size in bytes.
    pub(crate) fn write_snapshot(&self, file: &SnapshotFile) -> Result<u64, StoreError> {
        let (name, bytes) = seal_snapshot(&self.cipher, file)?;
        let size = bytes.len() as u64;
        if size > MAX_SNAPSHOT_BYTES / 2 {
            tracing::warn!(
                bytes = size,
                limit = MAX_SNAPSHOT_BYTES,
                "the store's snapshot is over half its size limit: see docs/runbooks/audit-the-cluster.md (the log's size)"
            );
        }
        let path = self.dir.join(name);
        crate::fsutil::write_atomic(&path, &bytes)?;
        // Only now that the new snapshot is durable do older ones go.
        for (old, _) in list_snapshots(&self.dir)? {
            if old != path {
                std::fs::remove_file(&old).map_err(StoreError::io("remove", &old))?;
            }
        }
        crate::fsutil::sync_dir(&self.dir)?;
        Ok(size)
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
        let Some((_, file)) = newest_snapshot(&self.dir, &self.cipher)? else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&file.state).map_err(|e| StoreError::Encoding {
            what: "snapshot",
            reason: e.to_string(),
        })?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, state) = {
            let applied = self.applied.read().map_err(|_| poisoned())?;
            let id = match &applied.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => "0-none-0".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: format!("{id}-{}", unique_suffix()),
            };
            (meta, applied.state.clone())
        };
        // Every record the copied state counts was written under the lock;
        // an apply may not have fsynced it yet (it does so after releasing
        // the lock).
        self.audit.sync()?;
        // A DEK rotation snapshots before the old DEK goes: the audit
        // segments must not need it either.
        if self.cipher.rotation_in_progress() {
            let files = self.audit.reseal()?;
            tracing::info!(files, "audit segments sealed again with the new data key");
        }
        let file = SnapshotFile { meta, state };
        let size = self.write_snapshot(&file)?;
        if let Ok(mut applied) = self.applied.write() {
            applied.snapshot_bytes = size;
        }
        let data = serde_json::to_vec(&file.state).map_err(|e| StoreError::Encoding {
            what: "snapshot",
            reason: e.to_string(),
        })?;
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read().map_err(|_| poisoned())?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.write().map_err(|_| poisoned())?;
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Applied,
                EntryPayload::Normal(ref command) => applied.state.apply(command),
                EntryPayload::Membership(ref m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Response::Applied
                }
            };
            responses.push(response);
        }
        // The records these entries made are on disk before they count as
        // applied: written under the state's lock, fsynced after it is
        // released, so heartbeats and listings reading the state do not
        // wait on the disk (D49). A snapshot fsyncs them itself before it
        // is written (`build_snapshot`), so every record a snapshot counts
        // is on disk.
        let written = applied.state.audit.write_pending()?;
        drop(applied);
        if let Some(segments) = written {
            segments.sync()?;
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let state: ClusterState =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| StoreError::Encoding {
                what: "received snapshot",
                reason: e.to_string(),
            })?;
        let mut file = SnapshotFile {
            meta: meta.clone(),
            state,
        };
        // The segments must agree with the snapshot's frontier up to what
        // they hold; records below the snapshot's size that they lack are a
        // gap their readers report.
        file.state.audit.attach(self.audit.clone())?;
        file.state.audit.flush()?;
        let snapshot_bytes = self.write_snapshot(&file)?;
        let mut applied = self.applied.write().map_err(|_| poisoned())?;
        *applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: file.state,
            snapshot_bytes,
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.current_snapshot()?)
    }
}

/// Opens and authenticates one snapshot file.
/// Seals `file` in the snapshot file format (see the module docs) with
/// `cipher`; returns the file name it must have and its bytes. Used for
/// the node's own snapshots and for backups.
pub fn seal_snapshot(
    cipher: &RecordCipher,
    file: &SnapshotFile,
) -> Result<(String, Vec<u8>), StoreError> {
    let id = &file.meta.snapshot_id;
    let json =
        zeroize::Zeroizing::new(serde_json::to_vec(file).map_err(|e| StoreError::Encoding {
            what: "snapshot",
            reason: e.to_string(),
        })?);
    let sealed = cipher.seal(FileKind::Snapshot, id.as_bytes(), &json)?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + 2 + id.len() + sealed.len());
    bytes.extend_from_slice(MAGIC);
    let id_len =
        u16::try_from(id.len()).map_err(|_| StoreError::Invalid("snapshot id too long".into()))?;
    bytes.extend_from_slice(&id_len.to_be_bytes());
    bytes.extend_from_slice(id.as_bytes());
    bytes.extend_from_slice(&sealed);
    Ok((snapshot_file_name(id), bytes))
}

/// Reads and authenticates one snapshot file.
pub fn read_snapshot(path: &Path, cipher: &RecordCipher) -> Result<SnapshotFile, StoreError> {
    let bytes = crate::fsutil::read_limited(path, MAX_SNAPSHOT_BYTES)?;
    let corrupt = |at: usize, reason: &str| StoreError::corrupt(path, format!("byte {at}"), reason);
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt(0, "not a moat snapshot (bad magic)"))?;
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or_else(|| corrupt(8, "truncated header"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (id, sealed) = rest
        .split_at_checked(len)
        .ok_or_else(|| corrupt(10, "truncated snapshot id"))?;
    let id = std::str::from_utf8(id).map_err(|_| corrupt(10, "snapshot id is not UTF-8"))?;
    let json = cipher
        .open(FileKind::Snapshot, id.as_bytes(), sealed)
        .map_err(|e| corrupt(10 + len, &format!("authentication failed ({e})")))?;
    let file: SnapshotFile = serde_json::from_slice(&json)
        .map_err(|e| corrupt(10 + len, &format!("undecodable content ({e})")))?;
    let expected_name = snapshot_file_name(&file.meta.snapshot_id);
    if file.meta.snapshot_id != id
        || path.file_name().and_then(|n| n.to_str()) != Some(expected_name.as_str())
    {
        return Err(corrupt(10, "snapshot id does not match the file"));
    }
    Ok(file)
}

fn newest_snapshot(
    dir: &Path,
    cipher: &RecordCipher,
) -> Result<Option<(PathBuf, SnapshotFile)>, StoreError> {
    let mut newest: Option<(PathBuf, SnapshotFile)> = None;
    for (path, _) in list_snapshots(dir)? {
        let file = read_snapshot(&path, cipher)?;
        if newest
            .as_ref()
            .is_none_or(|(_, n)| file.meta.last_log_id > n.meta.last_log_id)
        {
            newest = Some((path, file));
        }
    }
    Ok(newest)
}

/// Snapshot files in `dir`, with their ids.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<(PathBuf, String)>, StoreError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(StoreError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_prefix("snapshot-")
            .and_then(|n| n.strip_suffix(".snap"))
        {
            out.push((entry.path(), id.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

fn snapshot_file_name(id: &str) -> String {
    format!("snapshot-{id}.snap")
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

fn poisoned() -> StorageError {
    StoreError::Invalid("the state machine lock was poisoned by a panic".into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, Secret};
    use moat_lock::{Dek, DekSet, DekVersion};
    use moat_pki::{ClusterId, NodeId};
    use openraft::{CommittedLeaderId, Entry as RaftEntry};

    fn cipher(cluster: ClusterId, node: NodeId) -> Arc<RecordCipher> {
        Arc::new(RecordCipher::new(
            cluster,
            node,
            DekSet::new(Dek::generate(DekVersion(1)).unwrap()),
        ))
    }

    fn entry(index: u64, command: Command) -> Entry {
        RaftEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, NodeId::default()), index),
            payload: EntryPayload::Normal(command),
        }
    }

    async fn with_snapshot(dir: &Path, cipher: Arc<RecordCipher>) -> StateMachineStore {
        let mut sm = StateMachineStore::open(dir, cipher).unwrap();
        sm.apply(vec![
            entry(
                1,
                Command::SetUnlockKey(Some(Secret::new("SNAPSHOT-MARKER-SECRET"))),
            ),
            entry(2, Command::PruneRemoved { now: 1 }),
        ])
        .await
        .unwrap();
        sm.build_snapshot().await.unwrap();
        sm
    }

    fn snapshot_path(dir: &Path) -> PathBuf {
        let files = list_snapshots(dir).unwrap();
        assert_eq!(files.len(), 1, "exactly one snapshot file");
        files[0].0.clone()
    }

    #[tokio::test]
    async fn snapshot_survives_restart_and_keeps_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = cipher(ClusterId::generate(), NodeId::generate());
        let mut sm = with_snapshot(dir.path(), c.clone()).await;
        sm.build_snapshot().await.unwrap();
        let size = std::fs::metadata(snapshot_path(dir.path())).unwrap().len();
        assert!(size > 0);
        assert_eq!(sm.applied().read().unwrap().snapshot_bytes, size);
        let mut again = StateMachineStore::open(dir.path(), c).unwrap();
        assert_eq!(
            again.applied().read().unwrap().snapshot_bytes,
            size,
            "after a restart"
        );
        let (last, _) = again.applied_state().await.unwrap();
        assert_eq!(last.map(|l| l.index), Some(2));
        let snap = again.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
        let state: ClusterState = serde_json::from_slice(snap.snapshot.get_ref()).unwrap();
        assert_eq!(
            state.unlock_key.unwrap().expose_secret(),
            "SNAPSHOT-MARKER-SECRET"
        );
    }

    #[tokio::test]
    async fn snapshot_file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        with_snapshot(
            dir.path(),
            cipher(ClusterId::generate(), NodeId::generate()),
        )
        .await;
        let bytes = std::fs::read(snapshot_path(dir.path())).unwrap();
        let needle = b"SNAPSHOT-MARKER";
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }

    #[tokio::test]
    async fn tampered_or_foreign_snapshot_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let c = cipher(ClusterId::generate(), NodeId::generate());
        with_snapshot(dir.path(), c.clone()).await;
        let path = snapshot_path(dir.path());
        let good = std::fs::read(&path).unwrap();
        for pos in [0, 9, 12, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            match StateMachineStore::open(dir.path(), c.clone()) {
                Err(StoreError::Corrupt { path: p, .. }) => assert_eq!(p, path),
                Err(other) => panic!("flip at {pos}: {other}"),
                Ok(_) => panic!("flip at {pos} accepted"),
            }
        }
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(matches!(
            StateMachineStore::open(dir.path(), c.clone()),
            Err(StoreError::Corrupt { .. })
        ));

        // The same file under another node's keys (same DEK, other node id).
        std::fs::write(&path, &good).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        std::fs::copy(&path, other_dir.path().join(path.file_name().unwrap())).unwrap();
        let err =
            StateMachineStore::open(other_dir.path(), cipher(c.cluster(), NodeId::generate()))
                .err()
                .expect("foreign snapshot must be refused");
        assert!(err.to_string().contains("authentication failed"), "{err}");
    }

    fn audit_event(i: u64) -> moat_audit::Event {
        moat_audit::Event {
            node: "0123456789abcdefghijklmn00".parse().unwrap(),
            actor: moat_audit::Actor::local_operator(),
            action: moat_audit::Action::POLICY_UPDATE,
            target: moat_audit::Text::new("target", &format!("t{i}")).unwrap(),
            outcome: moat_audit::Outcome::Success,
            details: moat_audit::Details::new(),
        }
    }

    fn audit_entries(from: u64, to: u64, salt: &str) -> Vec<Entry> {
        (from..=to)
            .map(|i| {
                let mut event = audit_event(i);
                event.target = moat_audit::Text::new("target", &format!("{salt}{i}")).unwrap();
                entry(
                    i,
                    Command::Audit {
                        time: 1_700_000_000 + i as i64,
                        event,
                    },
                )
            })
            .collect()
    }

    fn root_of(sm: &StateMachineStore) -> moat_audit::Hash {
        sm.applied().read().unwrap().state.audit.current_root()
    }

    #[tokio::test]
    async fn audit_records_go_to_segments_and_the_snapshot_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let c = cipher(ClusterId::generate(), NodeId::generate());
        let mut sm =
            StateMachineStore::open_with_audit_segment_bytes(dir.path(), c.clone(), 64 << 10)
                .unwrap();
        for batch in 0..20u64 {
            sm.apply(audit_entries(batch * 100 + 1, batch * 100 + 100, "t"))
                .await
                .unwrap();
        }
        {
            let applied = sm.applied();
            let a = applied.read().unwrap();
            assert_eq!(a.state.audit.size(), 2000);
            assert!(a.state.audit.pending().1.is_empty(), "all written");
        }
        sm.build_snapshot().await.unwrap();
        let bytes = sm.applied().read().unwrap().snapshot_bytes;
        // The kept roots (1,024 of 64 hex digits) are most of it: a fixed
        // cost, whatever the log's size.
        assert!(
            bytes < 100 * 1024,
            "snapshot of 2,000 records: {bytes} bytes"
        );
        let root = root_of(&sm);
        drop(sm);
        let sm = StateMachineStore::open_with_audit_segment_bytes(dir.path(), c, 64 << 10).unwrap();
        assert_eq!(root_of(&sm), root);
        let applied = sm.applied();
        let a = applied.read().unwrap();
        let lines = a.state.audit.records(1990, 100).unwrap();
        assert_eq!(lines.len(), 11);
        assert!(lines[0].starts_with("{\"seq\":1990,"), "{}", lines[0]);
        let tree_root = a.state.audit.with_tree(|t| t.root(2000).unwrap()).unwrap();
        assert_eq!(tree_root, root);
        assert!(a.state.audit.segments().unwrap().files().len() > 1);
    }

    #[tokio::test]
    async fn entries_applied_again_after_a_restart_must_match_the_segments() {
        let dir = tempfile::tempdir().unwrap();
        let c = cipher(ClusterId::generate(), NodeId::generate());
        let mut sm = StateMachineStore::open(dir.path(), c.clone()).unwrap();
        sm.apply(audit_entries(1, 50, "t")).await.unwrap();
        sm.build_snapshot().await.unwrap();
        sm.apply(audit_entries(51, 100, "t")).await.unwrap();
        let root = root_of(&sm);
        // A crash: the snapshot holds 50 records, the segments 100.
        drop(sm);
        let mut sm = StateMachineStore::open(dir.path(), c.clone()).unwrap();
        assert_eq!(sm.applied().read().unwrap().state.audit.size(), 50);
        assert_eq!(sm.audit_segments().last_seq(), 100);
        // The Raft log's entries apply again: the same records, not twice.
        sm.apply(audit_entries(51, 100, "t")).await.unwrap();
        assert_eq!(root_of(&sm), root);
        assert_eq!(sm.audit_segments().last_seq(), 100);
        sm.apply(audit_entries(101, 101, "t")).await.unwrap();
        assert_eq!(sm.audit_segments().last_seq(), 101);
        drop(sm);

        // Other records where the segments hold committed ones: named.
        let mut sm = StateMachineStore::open(dir.path(), c).unwrap();
        let err = sm
            .apply(audit_entries(51, 60, "other"))
            .await
            .expect_err("a record that does not match is corruption");
        let text = err.to_string();
        assert!(text.contains("audit-00000000000000000001.seg"), "{text}");
        assert!(text.contains("audit record 51"), "{text}");
    }

    #[tokio::test]
    async fn a_flipped_byte_in_an_audit_segment_stops_the_store_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = cipher(ClusterId::generate(), NodeId::generate());
        let mut sm = StateMachineStore::open(dir.path(), c.clone()).unwrap();
        sm.apply(audit_entries(1, 30, "t")).await.unwrap();
        sm.build_snapshot().await.unwrap();
        let (path, _, _) = sm.audit_segments().files().pop().unwrap();
        drop(sm);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 3;
        bytes[at] ^= 0x08;
        std::fs::write(&path, &bytes).unwrap();
        match StateMachineStore::open(dir.path(), c) {
            Err(StoreError::Corrupt { path: p, at, .. }) => {
                assert_eq!(p, path);
                assert!(at.starts_with("byte "), "{at}");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a flipped byte was accepted"),
        }
    }

    #[tokio::test]
    async fn an_installed_snapshot_past_the_segments_reports_the_gap() {
        let source = tempfile::tempdir().unwrap();
        let cluster = ClusterId::generate();
        let mut leader =
            StateMachineStore::open(source.path(), cipher(cluster, NodeId::generate())).unwrap();
        leader.apply(audit_entries(1, 40, "t")).await.unwrap();
        let snap = leader.build_snapshot().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut sm =
            StateMachineStore::open(dir.path(), cipher(cluster, NodeId::generate())).unwrap();
        sm.apply(audit_entries(1, 10, "t")).await.unwrap();
        sm.install_snapshot(&snap.meta, snap.snapshot)
            .await
            .unwrap();
        let mut next = audit_entries(41, 45, "t");
        for e in &mut next {
            e.log_id.index += 0;
        }
        sm.apply(next).await.unwrap();
        assert_eq!(root_of(&sm), {
            leader.apply(audit_entries(41, 45, "t")).await.unwrap();
            root_of(&leader)
        });
        let applied = sm.applied();
        let a = applied.read().unwrap();
        assert_eq!(a.state.audit.segments().unwrap().gaps(), vec![(11, 40)]);
        assert!(a.state.audit.try_record(5).unwrap().is_some());
        assert!(a.state.audit.try_record(43).unwrap().is_some());
        let err = a.state.audit.try_record(20).unwrap_err();
        assert!(
            err.to_string().contains("lacks audit records 11 to 40"),
            "{err}"
        );
        assert!(a.state.audit.with_tree(|_| ()).is_err());
    }

    #[tokio::test]
    async fn a_dek_rotation_seals_the_audit_segments_again() {
        let dir = tempfile::tempdir().unwrap();
        let c = cipher(ClusterId::generate(), NodeId::generate());
        let mut sm = StateMachineStore::open(dir.path(), c.clone()).unwrap();
        sm.apply(audit_entries(1, 20, "t")).await.unwrap();
        c.with_deks(|d| d.begin_rotation().map(|p| p.version()))
            .unwrap()
            .unwrap();
        sm.apply(audit_entries(21, 30, "t")).await.unwrap();
        sm.build_snapshot().await.unwrap();
        c.with_deks(|d| d.complete_rotation().map(drop))
            .unwrap()
            .unwrap();
        let root = root_of(&sm);
        drop(sm);
        // Only the new DEK is loaded now.
        let sm = StateMachineStore::open(dir.path(), c).unwrap();
        assert_eq!(root_of(&sm), root);
        let applied = sm.applied();
        let a = applied.read().unwrap();
        assert_eq!(a.state.audit.records(1, 100).unwrap().len(), 30);
    }
}
