//! Tests of the encrypted, durable raft log ([`LogStore`]): openraft's
//! conformance suite against the real on-disk store, restart recovery, the
//! torn-tail rule, and detection of every kind of damage or tampering.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use moat_lock::{Aad, Dek, DekSet, DekVersion, KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId};
use moat_store::model::{Command, Secret};
use moat_store::{Entry, LogId, LogStore, LogStoreOptions, RecordCipher, StoreError, Vote};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{CommittedLeaderId, EntryPayload};

// ---------------------------------------------------------------------------
// openraft's conformance suite.

/// openraft's storage suite builds node ids from `u64`, which moat's
/// `NodeId` (128 random bits) deliberately cannot do. The suite therefore
/// runs on a type configuration whose node id wraps a moat `NodeId` and
/// serializes exactly like it; thin adapters convert every value through
/// serde (an identity on the JSON) and hand it to the real, encrypted,
/// on-disk [`LogStore`] and [`StateMachineStore`].
mod suite {
    use std::fmt;
    use std::io::Cursor;
    use std::ops::RangeBounds;

    use moat_pki::NodeId;
    use moat_store::model::{Command, Response};
    use moat_store::{LogStore, LogStoreOptions, LogStoreReader, StateMachineStore, TypeConfig};
    use openraft::storage::{
        LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftStateMachine, Snapshot,
    };
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{
        AnyError, BasicNode, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder,
        SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    };
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};
    use tempfile::TempDir;

    /// A moat node id that can also be made from a `u64`, for the suite.
    #[derive(
        Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize,
    )]
    #[serde(transparent)]
    pub(crate) struct SuiteId(NodeId);

    impl fmt::Display for SuiteId {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fmt(f)
        }
    }

    impl From<u64> for SuiteId {
        fn from(n: u64) -> Self {
            let mut bytes = [0u8; 16];
            bytes[8..].copy_from_slice(&n.to_be_bytes());
            SuiteId(moat_codec::base32::encode(&bytes).parse().unwrap())
        }
    }

    openraft::declare_raft_types!(
        pub(crate) SuiteConfig:
            D = Command,
            R = Response,
            NodeId = SuiteId,
            Node = BasicNode,
            Entry = openraft::Entry<SuiteConfig>,
            SnapshotData = Cursor<Vec<u8>>,
            AsyncRuntime = openraft::TokioRuntime,
    );

    type SuiteError = StorageError<SuiteId>;
    type SuiteEntry = openraft::Entry<SuiteConfig>;

    /// Converts between the two configurations' types through serde.
    fn conv<A: Serialize, B: DeserializeOwned>(a: &A) -> B {
        serde_json::from_value(serde_json::to_value(a).unwrap()).unwrap()
    }

    fn err(e: impl Into<StorageError<NodeId>>) -> SuiteError {
        let e: StorageError<NodeId> = e.into();
        StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, AnyError::new(&e)).into()
    }

    pub(crate) struct Log(LogStore);
    pub(crate) struct Reader(LogStoreReader);
    #[derive(Clone)]
    pub(crate) struct Sm(StateMachineStore);

    impl RaftLogReader<SuiteConfig> for Log {
        async fn try_get_log_entries<RB>(
            &mut self,
            range: RB,
        ) -> Result<Vec<SuiteEntry>, SuiteError>
        where
            RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend,
        {
            let entries = self.0.try_get_log_entries(range).await.map_err(err)?;
            Ok(entries.iter().map(conv).collect())
        }
    }

    impl RaftLogReader<SuiteConfig> for Reader {
        async fn try_get_log_entries<RB>(
            &mut self,
            range: RB,
        ) -> Result<Vec<SuiteEntry>, SuiteError>
        where
            RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend,
        {
            let entries = self.0.try_get_log_entries(range).await.map_err(err)?;
            Ok(entries.iter().map(conv).collect())
        }
    }

    impl RaftLogStorage<SuiteConfig> for Log {
        type LogReader = Reader;

        async fn get_log_state(&mut self) -> Result<LogState<SuiteConfig>, SuiteError> {
            let st = self.0.get_log_state().await.map_err(err)?;
            Ok(LogState {
                last_purged_log_id: conv(&st.last_purged_log_id),
                last_log_id: conv(&st.last_log_id),
            })
        }

        async fn get_log_reader(&mut self) -> Reader {
            Reader(self.0.get_log_reader().await)
        }

        async fn save_vote(&mut self, vote: &openraft::Vote<SuiteId>) -> Result<(), SuiteError> {
            self.0.save_vote(&conv(vote)).await.map_err(err)
        }

        async fn read_vote(&mut self) -> Result<Option<openraft::Vote<SuiteId>>, SuiteError> {
            Ok(conv(&self.0.read_vote().await.map_err(err)?))
        }

        async fn save_committed(
            &mut self,
            committed: Option<openraft::LogId<SuiteId>>,
        ) -> Result<(), SuiteError> {
            self.0.save_committed(conv(&committed)).await.map_err(err)
        }

        async fn read_committed(&mut self) -> Result<Option<openraft::LogId<SuiteId>>, SuiteError> {
            Ok(conv(&self.0.read_committed().await.map_err(err)?))
        }

        async fn append<I>(
            &mut self,
            entries: I,
            callback: LogFlushed<SuiteConfig>,
        ) -> Result<(), SuiteError>
        where
            I: IntoIterator<Item = SuiteEntry> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            // The queued append that `LogStore::append` wraps: the suite's
            // callback hears of the flush from the writer thread.
            let entries: Vec<moat_store::Entry> = entries.into_iter().map(|e| conv(&e)).collect();
            self.0
                .append_then(entries, move |result| {
                    callback.log_io_completed(result.map_err(std::io::Error::other));
                })
                .map_err(err)
        }

        async fn truncate(&mut self, log_id: openraft::LogId<SuiteId>) -> Result<(), SuiteError> {
            self.0.truncate(conv(&log_id)).await.map_err(err)
        }

        async fn purge(&mut self, log_id: openraft::LogId<SuiteId>) -> Result<(), SuiteError> {
            self.0.purge(conv(&log_id)).await.map_err(err)
        }
    }

    impl RaftSnapshotBuilder<SuiteConfig> for Sm {
        async fn build_snapshot(&mut self) -> Result<Snapshot<SuiteConfig>, SuiteError> {
            let snap = RaftSnapshotBuilder::<TypeConfig>::build_snapshot(&mut self.0)
                .await
                .map_err(err)?;
            Ok(Snapshot {
                meta: conv(&snap.meta),
                snapshot: snap.snapshot,
            })
        }
    }

    impl RaftStateMachine<SuiteConfig> for Sm {
        type SnapshotBuilder = Sm;

        async fn applied_state(
            &mut self,
        ) -> Result<
            (
                Option<openraft::LogId<SuiteId>>,
                StoredMembership<SuiteId, BasicNode>,
            ),
            SuiteError,
        > {
            let (applied, membership) = self.0.applied_state().await.map_err(err)?;
            Ok((conv(&applied), conv(&membership)))
        }

        async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, SuiteError>
        where
            I: IntoIterator<Item = SuiteEntry> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            let entries: Vec<moat_store::Entry> = entries.into_iter().map(|e| conv(&e)).collect();
            self.0.apply(entries).await.map_err(err)
        }

        async fn get_snapshot_builder(&mut self) -> Sm {
            Sm(self.0.get_snapshot_builder().await)
        }

        async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SuiteError> {
            self.0.begin_receiving_snapshot().await.map_err(err)
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMeta<SuiteId, BasicNode>,
            snapshot: Box<Cursor<Vec<u8>>>,
        ) -> Result<(), SuiteError> {
            self.0
                .install_snapshot(&conv(meta), snapshot)
                .await
                .map_err(err)
        }

        async fn get_current_snapshot(
            &mut self,
        ) -> Result<Option<Snapshot<SuiteConfig>>, SuiteError> {
            let snap = self.0.get_current_snapshot().await.map_err(err)?;
            Ok(snap.map(|s| Snapshot {
                meta: conv(&s.meta),
                snapshot: s.snapshot,
            }))
        }
    }

    /// Builds a fresh log and state machine in a temporary directory.
    pub(crate) struct Builder {
        pub(crate) options: LogStoreOptions,
    }

    impl StoreBuilder<SuiteConfig, Log, Sm, TempDir> for Builder {
        async fn build(&self) -> Result<(TempDir, Log, Sm), SuiteError> {
            let dir = tempfile::tempdir().unwrap();
            let cipher = super::cipher();
            let log = LogStore::open_with(&dir.path().join("log"), cipher.clone(), self.options)
                .map_err(err)?;
            let sm = StateMachineStore::open(&dir.path().join("sm"), cipher).map_err(err)?;
            Ok((dir, Log(log), Sm(sm)))
        }
    }

    /// Runs the whole suite; panics on the first failure.
    pub(crate) fn run(options: LogStoreOptions) {
        Suite::test_all(Builder { options }).unwrap();
    }
}

#[test]
fn openraft_conformance_suite_on_disk() {
    suite::run(LogStoreOptions::new());
}

/// Tiny segments: every purge and truncate in the suite crosses segment
/// boundaries and deletes files.
#[test]
fn openraft_conformance_suite_with_tiny_segments() {
    suite::run(LogStoreOptions::new().with_segment_bytes(1));
}

// ---------------------------------------------------------------------------
// Helpers.

fn cipher() -> Arc<RecordCipher> {
    Arc::new(RecordCipher::new(
        ClusterId::generate(),
        NodeId::generate(),
        DekSet::new(Dek::generate(DekVersion(1)).unwrap()),
    ))
}

fn leader() -> NodeId {
    moat_codec::base32::encode(&[7u8; 16]).parse().unwrap()
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, leader()), index)
}

fn marker(index: u64) -> String {
    format!("MARKER-plaintext-{index:04}")
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::SetUnlockKey(Some(Secret::new(marker(index))))),
    }
}

fn entries(term: u64, indexes: impl IntoIterator<Item = u64>) -> Vec<Entry> {
    indexes.into_iter().map(|i| entry(term, i)).collect()
}

fn open(dir: &Path, cipher: &Arc<RecordCipher>) -> Result<LogStore, StoreError> {
    LogStore::open(dir, cipher.clone())
}

fn open_small(dir: &Path, cipher: &Arc<RecordCipher>) -> Result<LogStore, StoreError> {
    LogStore::open_with(
        dir,
        cipher.clone(),
        LogStoreOptions::new().with_segment_bytes(600),
    )
}

/// A log in `dir` with entries 0..n (term 1), one append each.
fn filled(dir: &Path, cipher: &Arc<RecordCipher>, n: u64) -> LogStore {
    let mut store = open(dir, cipher).unwrap();
    for i in 0..n {
        store.append_entries([entry(1, i)]).unwrap();
    }
    store
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

/// The (offset, total length) of each frame of a segment.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let len = u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        out.push((off, 4 + len));
        off += 4 + len;
    }
    out
}

/// Recomputes the CRC of the frame at `off` in `bytes`.
fn fix_crc(bytes: &mut [u8], off: usize) {
    let len = u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&bytes[off + 8..off + 4 + len]);
    bytes[off + 4..off + 8].copy_from_slice(&crc.to_be_bytes());
}

async fn all(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.unwrap()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn unlock_marker(e: &Entry) -> String {
    match &e.payload {
        EntryPayload::Normal(Command::SetUnlockKey(Some(s))) => s.expose_secret().to_owned(),
        other => panic!("unexpected payload {other:?}"),
    }
}

/// Asserts `result` is `Corrupt` naming the file `file` and `at`.
#[track_caller]
fn assert_corrupt<T>(result: Result<T, StoreError>, file: &Path, at: &str) -> String {
    match result {
        Err(StoreError::Corrupt {
            path,
            at: got_at,
            reason,
        }) => {
            assert_eq!(path, file, "wrong file; reason: {reason}");
            assert_eq!(got_at, at, "wrong place; reason: {reason}");
            let message = StoreError::Corrupt {
                path,
                at: got_at,
                reason: reason.clone(),
            }
            .to_string();
            assert!(message.contains(&file.display().to_string()), "{message}");
            reason
        }
        Err(e) => panic!("expected Corrupt for {}, got {e:?}", file.display()),
        Ok(_) => panic!("expected Corrupt for {}, the store opened", file.display()),
    }
}

// ---------------------------------------------------------------------------
// Durability and recovery.

#[tokio::test]
async fn restart_recovers_entries_vote_committed_and_purged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let c = cipher();
    let vote = Vote::new(7, leader());
    {
        let mut store = open_small(&dir, &c).unwrap();
        store.append_entries(entries(1, 0..8)).unwrap();
        for i in 8..20 {
            store.append_entries([entry(2, i)]).unwrap();
        }
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(2, 15))).await.unwrap();
        store.purge(log_id(1, 4)).await.unwrap();
        store.truncate(log_id(2, 18)).await.unwrap();
        assert!(segments(&dir).len() > 3, "the test needs several segments");
    }

    let mut store = open_small(&dir, &c).unwrap();
    let got = all(&mut store).await;
    assert_eq!(indexes(&got), (5..18).collect::<Vec<_>>());
    for e in &got {
        let term = if e.log_id.index < 8 { 1 } else { 2 };
        assert_eq!(e.log_id, log_id(term, e.log_id.index));
        assert_eq!(unlock_marker(e), marker(e.log_id.index));
    }
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 15)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(2, 17)));
    // Segments that held only purged entries are gone.
    let first = segments(&dir)[0].clone();
    assert_ne!(
        first.file_name().unwrap(),
        "log-00000000000000000000.seg",
        "a fully purged segment was kept"
    );

    // The reopened log appends where it left off, and reopens again.
    store.append_entries([entry(3, 18)]).unwrap();
    drop(store);
    let mut store = open_small(&dir, &c).unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(3, 18))
    );
}

/// Guards the group commit: appends queued while the writer thread is busy
/// share one fsync, readers see them at once, each is acknowledged only
/// after that fsync, in order, and a copy of the directory taken right
/// after the acknowledgements (what a crash leaves) reopens with every
/// acknowledged entry.
#[tokio::test]
async fn queued_appends_share_one_fsync_and_survive_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let c = cipher();
    let mut store = open(&dir, &c).unwrap();
    // Hold the writer thread inside the first append's acknowledgement.
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    store
        .append_then([entry(1, 0)], move |result| {
            result.unwrap();
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
        .unwrap();
    entered.recv().unwrap();
    assert_eq!(store.append_counts(), (1, 1));

    let (acked_tx, acked) = mpsc::channel();
    for i in 1..=64 {
        let acked_tx = acked_tx.clone();
        store
            .append_then([entry(1, i)], move |result| {
                acked_tx.send((i, result)).unwrap();
            })
            .unwrap();
    }
    assert!(acked.try_recv().is_err(), "acknowledged before the fsync");
    assert_eq!(
        indexes(&all(&mut store).await),
        (0..=64).collect::<Vec<_>>()
    );
    release.send(()).unwrap();
    let order: Vec<u64> = (1..=64)
        .map(|_| {
            let (i, result) = acked.recv().unwrap();
            result.unwrap();
            i
        })
        .collect();
    assert_eq!(order, (1..=64).collect::<Vec<_>>());
    assert_eq!(
        store.append_counts(),
        (65, 2),
        "64 queued appends must share one fsync"
    );

    // A crash right after the acknowledgements: the files as they are now.
    let crashed = tmp.path().join("crashed");
    fs::create_dir(&crashed).unwrap();
    for file in fs::read_dir(&dir).unwrap() {
        let file = file.unwrap();
        fs::copy(file.path(), crashed.join(file.file_name())).unwrap();
    }
    drop(store);
    let mut reopened = open(&crashed, &c).unwrap();
    let got = all(&mut reopened).await;
    assert_eq!(indexes(&got), (0..=64).collect::<Vec<_>>());
    assert!(
        got.iter()
            .all(|e| unlock_marker(e) == marker(e.log_id.index))
    );
}

/// Guards the order of the writer thread: a truncate called while appends
/// are still queued runs after them, so it cuts what they wrote.
#[tokio::test]
async fn truncate_waits_for_queued_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = open(tmp.path(), &c).unwrap();
    for i in 0..10 {
        store.append_then([entry(1, i)], |r| r.unwrap()).unwrap();
    }
    store.truncate(log_id(1, 5)).await.unwrap();
    store.append_entries([entry(2, 5)]).unwrap();
    drop(store);
    let mut store = open(tmp.path(), &c).unwrap();
    let got = all(&mut store).await;
    assert_eq!(indexes(&got), (0..=5).collect::<Vec<_>>());
    assert_eq!(got[5].log_id, log_id(2, 5));
}

#[tokio::test]
async fn purge_past_the_end_then_append_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = filled(tmp.path(), &c, 3);
    // A snapshot installed beyond the log: every entry goes.
    store.purge(log_id(4, 10)).await.unwrap();
    assert!(segments(tmp.path()).is_empty());
    store.append_entries(entries(4, 11..13)).unwrap();
    drop(store);
    let mut store = open(tmp.path(), &c).unwrap();
    assert_eq!(indexes(&all(&mut store).await), vec![11, 12]);
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(log_id(4, 10))
    );
}

#[tokio::test]
async fn append_refuses_indexes_already_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = filled(tmp.path(), &c, 3);
    assert!(matches!(
        store.append_entries([entry(1, 2)]),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.append_entries([entry(1, 4), entry(1, 3)]),
        Err(StoreError::Invalid(_))
    ));
    // Refusing a bad call does not poison the store.
    store.append_entries([entry(1, 3)]).unwrap();
    assert_eq!(indexes(&all(&mut store).await), vec![0, 1, 2, 3]);
}

#[test]
fn empty_last_segment_from_a_crash_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 2));
    let empty = tmp.path().join("log-00000000000000000002.seg");
    fs::write(&empty, b"").unwrap();
    let mut store = open(tmp.path(), &c).unwrap();
    assert!(!empty.exists());
    store.append_entries([entry(1, 2)]).unwrap();
}

#[test]
fn stale_temporary_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 1));
    let stale = tmp.path().join(".vote.tmp-abcdefgh");
    fs::write(&stale, b"half a vote").unwrap();
    open(tmp.path(), &c).unwrap();
    assert!(!stale.exists());
}

#[cfg(unix)]
#[test]
fn directory_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new").join("log");
    let c = cipher();
    let mut store = open(&dir, &c).unwrap();
    store.append_entries([entry(1, 0)]).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&segments(&dir)[0]), 0o600);
}

// ---------------------------------------------------------------------------
// Torn tail.

#[tokio::test]
async fn torn_tail_cut_mid_frame_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 5));
    let seg = segments(tmp.path())[0].clone();
    let (last_off, last_len) = *frames(&seg).last().unwrap();
    for cut in [last_off + 2, last_off + 10, last_off + last_len - 1] {
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        let mut store = open(tmp.path(), &c).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![0, 1, 2, 3]);
        assert_eq!(fs::metadata(&seg).unwrap().len(), last_off as u64);
        // The lost entry was never acknowledged; it can be written again.
        store.append_entries([entry(1, 4)]).unwrap();
        drop(store);
        let mut store = open(tmp.path(), &c).unwrap();
        assert_eq!(indexes(&all(&mut store).await), vec![0, 1, 2, 3, 4]);
    }
}

#[tokio::test]
async fn torn_tail_garbage_is_truncated() {
    let c = cipher();
    let garbage: [&[u8]; 4] = [
        b"\x00\x00",                     // ends inside a length field
        b"\x00\x00\x10\x00half a frame", // ends inside a frame
        &[0u8; 4096],                    // zero-filled tail
        // A whole frame whose CRC fails, ending exactly at the end of file.
        &[
            0, 0, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
            22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
            44,
        ][..44],
    ];
    for g in garbage {
        let tmp = tempfile::tempdir().unwrap();
        drop(filled(tmp.path(), &c, 3));
        let seg = segments(tmp.path())[0].clone();
        let good_len = fs::metadata(&seg).unwrap().len();
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(g);
        fs::write(&seg, &bytes).unwrap();

        let mut store = open(tmp.path(), &c).unwrap();
        assert_eq!(
            indexes(&all(&mut store).await),
            vec![0, 1, 2],
            "garbage {g:?}"
        );
        assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
    }
}

#[tokio::test]
async fn whole_torn_last_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = open_small(tmp.path(), &c).unwrap();
    for i in 0..8 {
        store.append_entries([entry(1, i)]).unwrap();
    }
    drop(store);
    let segs = segments(tmp.path());
    let last = segs.last().unwrap();
    let first_index: u64 = last.to_str().unwrap()[last.to_str().unwrap().len() - 24..][..20]
        .parse()
        .unwrap();
    let f = fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(5).unwrap();
    drop(f);
    let mut store = open_small(tmp.path(), &c).unwrap();
    assert!(!last.exists());
    assert_eq!(
        indexes(&all(&mut store).await),
        (0..first_index).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Damage and tampering: never skipped, always named.

#[test]
fn flipped_byte_in_middle_record_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 5));
    let seg = segments(tmp.path())[0].clone();
    let (off, len) = frames(&seg)[2];
    let before = fs::read(&seg).unwrap();
    for pos in [
        off + 1,
        off + 5,
        off + 9,
        off + 30,
        off + len / 2,
        off + len - 1,
    ] {
        let mut bytes = before.clone();
        bytes[pos] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();
        assert_corrupt(open(tmp.path(), &c), &seg, &format!("byte {off}"));
        assert_eq!(
            fs::read(&seg).unwrap(),
            bytes,
            "a failed open changed the file"
        );
    }
}

#[test]
fn flipped_byte_in_last_record_with_fixed_crc_is_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 4));
    let seg = segments(tmp.path())[0].clone();
    let (off, len) = *frames(&seg).last().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[off + len - 20] ^= 1;
    fix_crc(&mut bytes, off);
    fs::write(&seg, &bytes).unwrap();
    let reason = assert_corrupt(open(tmp.path(), &c), &seg, &format!("byte {off}"));
    assert!(reason.contains("authenticate"), "{reason}");
    assert_eq!(
        fs::read(&seg).unwrap(),
        bytes,
        "tampered tail was truncated"
    );
}

#[test]
fn damaged_length_in_last_segment_is_corrupt_not_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 5));
    let seg = segments(tmp.path())[0].clone();
    let (off, _) = frames(&seg)[1];
    let mut bytes = fs::read(&seg).unwrap();
    bytes[off] ^= 0x80; // the frame now claims 2 GiB
    fs::write(&seg, &bytes).unwrap();
    let reason = assert_corrupt(open(tmp.path(), &c), &seg, &format!("byte {off}"));
    assert!(reason.contains("index 2"), "{reason}");
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn swapped_records_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 5));
    let seg = segments(tmp.path())[0].clone();
    let f = frames(&seg);
    let bytes = fs::read(&seg).unwrap();
    let ((o1, l1), (o2, l2)) = (f[1], f[2]);
    let mut swapped = bytes[..o1].to_vec();
    swapped.extend_from_slice(&bytes[o2..o2 + l2]);
    swapped.extend_from_slice(&bytes[o1..o1 + l1]);
    swapped.extend_from_slice(&bytes[o2 + l2..]);
    fs::write(&seg, &swapped).unwrap();
    let reason = assert_corrupt(open(tmp.path(), &c), &seg, &format!("byte {o1}"));
    assert!(reason.contains("expected log index 1, found 2"), "{reason}");
}

#[test]
fn record_moved_to_another_term_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 3));
    let seg = segments(tmp.path())[0].clone();
    let (off, _) = frames(&seg)[1];
    let mut bytes = fs::read(&seg).unwrap();
    bytes[off + 16..off + 24].copy_from_slice(&9u64.to_be_bytes()); // term 1 → 9
    fix_crc(&mut bytes, off);
    fs::write(&seg, &bytes).unwrap();
    let reason = assert_corrupt(open(tmp.path(), &c), &seg, &format!("byte {off}"));
    assert!(reason.contains("authenticate"), "{reason}");
}

#[test]
fn missing_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = open_small(tmp.path(), &c).unwrap();
    for i in 0..10 {
        store.append_entries([entry(1, i)]).unwrap();
    }
    drop(store);
    let segs = segments(tmp.path());
    assert!(segs.len() >= 3);

    // A segment missing in the middle.
    let saved = fs::read(&segs[1]).unwrap();
    fs::remove_file(&segs[1]).unwrap();
    let reason = assert_corrupt(open_small(tmp.path(), &c), &segs[2], "byte 0");
    assert!(reason.contains("missing"), "{reason}");
    fs::write(&segs[1], saved).unwrap();

    // The first segment missing although nothing was purged.
    fs::remove_file(&segs[0]).unwrap();
    let reason = assert_corrupt(open_small(tmp.path(), &c), &segs[1], "byte 0");
    assert!(reason.contains("nothing was purged"), "{reason}");
}

#[test]
fn renamed_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    drop(filled(tmp.path(), &c, 2));
    let seg = segments(tmp.path())[0].clone();
    let renamed = tmp.path().join("log-00000000000000000001.seg");
    fs::rename(&seg, &renamed).unwrap();
    assert_corrupt(open(tmp.path(), &c), &renamed, "byte 0");
}

#[test]
fn segment_from_another_node_is_corrupt() {
    // Same cluster, same DEK, different node: only the node binding differs.
    let cluster = ClusterId::generate();
    let kek = UnlockKey::generate().unwrap();
    let aad = Aad::new("test-dek", "cluster", "node");
    let blob = Dek::generate(DekVersion(1))
        .unwrap()
        .wrap(KeySource::Key(&kek), &aad)
        .unwrap();
    let node_cipher = || {
        let dek = Dek::unwrap(KeySource::Key(&kek), &aad, &blob).unwrap();
        Arc::new(RecordCipher::new(
            cluster,
            NodeId::generate(),
            DekSet::new(dek),
        ))
    };
    let (a, b) = (node_cipher(), node_cipher());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    drop(filled(dir_a.path(), &a, 3));
    drop(filled(dir_b.path(), &b, 3));
    let seg_a = segments(dir_a.path())[0].clone();
    let seg_b = segments(dir_b.path())[0].clone();
    assert_eq!(seg_a.file_name(), seg_b.file_name());
    fs::copy(&seg_b, &seg_a).unwrap();
    let reason = assert_corrupt(open(dir_a.path(), &a), &seg_a, "byte 0");
    assert!(reason.contains("another node"), "{reason}");
}

#[tokio::test]
async fn damaged_vote_and_meta_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = filled(tmp.path(), &c, 3);
    store.save_vote(&Vote::new(3, leader())).await.unwrap();
    store.save_committed(Some(log_id(1, 2))).await.unwrap();
    drop(store);

    let vote = tmp.path().join("vote");
    let full = fs::read(&vote).unwrap();
    fs::write(&vote, &full[..full.len() / 2]).unwrap();
    assert_corrupt(open(tmp.path(), &c), &vote, "byte 0");
    fs::write(&vote, &full).unwrap();

    let meta = tmp.path().join("meta");
    let mut bytes = fs::read(&meta).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&meta, &bytes).unwrap();
    assert_corrupt(open(tmp.path(), &c), &meta, "byte 0");

    // The vote of another file kind is refused too (kind is in the AAD).
    fs::write(&meta, &full).unwrap();
    assert_corrupt(open(tmp.path(), &c), &meta, "byte 0");
}

#[tokio::test]
async fn plaintext_never_reaches_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cipher();
    let mut store = open_small(tmp.path(), &c).unwrap();
    store.append_entries(entries(1, 0..10)).unwrap();
    store.save_vote(&Vote::new(1, leader())).await.unwrap();
    store.save_committed(Some(log_id(1, 5))).await.unwrap();
    store.purge(log_id(1, 2)).await.unwrap();
    store.truncate(log_id(1, 8)).await.unwrap();
    // The entries are really there…
    let got = all(&mut store).await;
    assert_eq!(unlock_marker(&got[0]), marker(3));
    drop(store);

    // …but no file holds their plaintext, nor the JSON around it.
    let mut files = 0;
    for dirent in fs::read_dir(tmp.path()).unwrap() {
        let path = dirent.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        for needle in [&b"MARKER-plaintext"[..], b"SetUnlockKey", b"log_id"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
        files += 1;
    }
    assert!(files >= 3, "expected segments, vote and meta");
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any bytes after valid frames, in any store file, give Ok or an
        /// error: never a panic, never a huge allocation.
        #[test]
        fn arbitrary_file_content(tail in proptest::collection::vec(any::<u8>(), 0..300),
                                  which in 0usize..3) {
            let tmp = tempfile::tempdir().unwrap();
            let c = cipher();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut store = filled(tmp.path(), &c, 2);
            rt.block_on(store.save_vote(&Vote::new(1, leader()))).unwrap();
            rt.block_on(store.save_committed(Some(log_id(1, 1)))).unwrap();
            drop(store);
            let path = match which {
                0 => segments(tmp.path())[0].clone(),
                1 => tmp.path().join("vote"),
                _ => tmp.path().join("meta"),
            };
            let mut bytes = if which == 0 { fs::read(&path).unwrap() } else { Vec::new() };
            bytes.extend_from_slice(&tail);
            fs::write(&path, &bytes).unwrap();
            let _ = open(tmp.path(), &c);
        }
    }
}
