//! The encrypted, durable Raft log: [`LogStore`] implements openraft's
//! [`RaftLogStorage`] and [`RaftLogReader`].
//!
//! Every entry is kept decrypted in memory (for readers) and sealed on disk
//! (for durability). Nothing is acknowledged to openraft before it is
//! fsynced, and nothing read back from disk is trusted before it has passed
//! a CRC and the AEAD: a record that fails either is reported as
//! [`StoreError::Corrupt`] naming the file and byte offset, never skipped.
//! The one exception is a torn write at the very end of the log after a
//! crash (see *Torn tail* below).
//!
//! # Files in the log directory (mode 0700)
//!
//! | file | content |
//! |------|---------|
//! | `log-<first index, 20 digits>.seg` | a log segment: frames, append-only |
//! | `vote` | the vote, one sealed record ([`FileKind::Vote`], position empty) |
//! | `meta` | last purged and committed log ids, one sealed record ([`FileKind::Meta`], position `log-meta`) |
//! | `.vote.tmp-*`, `.meta.tmp-*` | leftovers of an interrupted atomic write; removed at open |
//!
//! Other files are ignored. All files are created with mode 0600.
//!
//! # Segment frame, byte by byte
//!
//! All integers are big-endian.
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0  | 4  | `len`: bytes that follow this field (`36 + n`), at most [`MAX_FRAME_LEN`] |
//! | 4  | 4  | CRC-32 (IEEE) over bytes `8 .. 4 + len` |
//! | 8  | 8  | log index |
//! | 16 | 8  | term of the leader that created the entry |
//! | 24 | 16 | node id of that leader |
//! | 40 | n  | sealed payload |
//!
//! The sealed payload is the JSON of the openraft `Entry` sealed by
//! [`RecordCipher::seal`] with [`FileKind::Log`] and position = bytes 8..40
//! of the frame (index ‖ term ‖ leader). The record cipher binds it to the
//! cluster and to this node, so a record moved to another index or term, or
//! copied from another manager, fails authentication. The JSON inside must
//! carry the same log id as the header.
//!
//! A segment's file name is the index of its first frame. Frames are
//! contiguous: each index is the previous one plus one, within a segment
//! and across segments. A new segment starts when the current one has
//! reached [`LogStoreOptions::with_segment_bytes`] (64 MiB by default).
//!
//! # Sealed small files (`vote`, `meta`)
//!
//! The file is exactly one record of [`RecordCipher::seal`] over the JSON
//! of the value: for `meta`, `{"last_purged": LogId|null, "committed":
//! LogId|null}`. They are replaced atomically: write a temporary file
//! `.NAME.tmp-<random>` (0600), fsync it, rename it over `NAME`, fsync the
//! directory.
//!
//! # Durability
//!
//! All writes are made by the log's writer thread (`moat-raft-log`, one
//! per open log), never on the async runtime's worker threads. It runs
//! the jobs in the order they were queued:
//!
//! * [`append`](RaftLogStorage::append) seals the entries on the caller's
//!   thread, makes them visible to readers, queues them and returns; it
//!   does not wait for the disk. The writer takes every job queued at that
//!   moment and writes the leading run of appends — from one call or from
//!   many — as one batch: all frames, then **one** `fdatasync` of the
//!   segment (group commit). Only after that fsync does it call each
//!   append's callback ([`LogFlushed`], how openraft learns the entries
//!   are flushed), in order. So nothing is reported flushed before it is
//!   on disk, and every append reported flushed survives a crash. When a
//!   batch starts a new segment, the previous segment is fsynced before
//!   the new file is created, and the directory is fsynced before any
//!   append of the batch is reported. If the batch fails, every append in
//!   it gets the error and the log refuses later writes.
//!   [`append_entries`](LogStore::append_entries) is the same, waiting for
//!   the flush.
//! * [`save_vote`](RaftLogStorage::save_vote) returns after the appends
//!   queued before it are written and the vote file is replaced
//!   atomically (above), directory fsync included.
//! * [`save_committed`](RaftLogStorage::save_committed) keeps the
//!   committed id in memory and makes it durable (atomic replacement of
//!   `meta`) only when it is first set, when it moved back, and once it
//!   is [`COMMITTED_PERSIST_EVERY`] entries ahead of the durable one;
//!   also with every purge and when the store is dropped. After a crash it
//!   can lag the real commit point by up to that many entries, never lead
//!   it: openraft allows this (the committed id is optional for it), and
//!   the manager re-applies those entries once the leader confirms them.
//! * [`truncate`](RaftLogStorage::truncate) runs after the queued appends:
//!   it deletes later segments from the last one backwards (fsyncing the
//!   directory after each), then shortens the segment holding the cut and
//!   fsyncs it, so a crash leaves a prefix of the old log, never a hole.
//! * [`purge`](RaftLogStorage::purge) runs after the queued appends: it
//!   first makes `last_purged` durable in `meta`, then deletes whole
//!   segments whose entries are all purged, from the first one forwards
//!   (fsyncing the directory after each). Purged entries left in a kept
//!   segment are verified at open and then skipped. An interrupted purge
//!   is finished at the next open.
//!
//! Dropping the store lets the writer finish every queued job before it
//! stops. With openraft 0.9, which waits for each append's flush before
//! its next log write, a batch holds one openraft append (a leader's is
//! one client write); the batching pays when appends are queued faster
//! than one fsync, as `store/tests/log.rs` shows.
//!
//! # Torn tail
//!
//! At open, a bad frame in the **last** segment is a torn write from a
//! crash, and is cut off (the file is truncated to the frame's start and
//! fsynced, with a warning) when the frame is the final one of the file —
//! the file ends inside it, or its CRC fails and it ends exactly at the end
//! of the file — or when every byte after it is zero (a zero-filled tail
//! left by the file system). Anything else is [`StoreError::Corrupt`]: a
//! CRC failure elsewhere, any AEAD failure even in the final frame (a frame
//! with a valid CRC that does not authenticate was tampered with), a gap or
//! a swap of indexes, a segment named for another index than its first
//! record, or a log that does not start at the last purged index plus one
//! (or at 0 when nothing was purged).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, mpsc};

use openraft::OptionalSend;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{self, create_dir, sync_dir};
use crate::{Entry, FileKind, LogId, RecordCipher, StorageError, StoreError, TypeConfig, Vote};

/// The largest frame (the value of its `len` field) the log writes or reads:
/// 64 MiB. An entry that would seal to more is refused; a frame claiming
/// more is reported as corrupt before anything is allocated for it.
pub const MAX_FRAME_LEN: u32 = 64 << 20;

/// The size after which the log starts a new segment by default: 64 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// How a [`LogStore`] lays out its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStoreOptions {
    segment_bytes: u64,
    read_only: bool,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            read_only: false,
        }
    }
}

impl LogStoreOptions {
    /// The defaults: 64 MiB segments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new segment once the current one holds at least `bytes`
    /// (a segment always takes at least one frame, so it may end larger).
    pub fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Opens without changing any file, for offline verification of a
    /// stopped manager or a backup: a torn tail, an empty last segment or
    /// an interrupted purge is left on disk (and skipped in memory), and
    /// every write is refused.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
}

/// The encrypted, durable Raft log of one manager. The file format, the
/// durability of each write and the torn-tail rule are documented byte by
/// byte at the top of `store/src/log.rs`.
///
/// Calls go through `&mut self` and are serialized. Appends are sealed by
/// the caller and handed to the log's writer thread, which writes and
/// fsyncs them (group commit, see the module documentation); every other
/// write waits for the appends queued before it. Readers obtained with
/// [`get_log_reader`](RaftLogStorage::get_log_reader) share the in-memory
/// entries. After a failed write the on-disk state is unknown, so the
/// store refuses every later write until it is reopened (openraft treats
/// storage errors as fatal and stops the node anyway).
pub struct LogStore {
    dir: PathBuf,
    cipher: Arc<RecordCipher>,
    options: LogStoreOptions,
    entries: Arc<RwLock<BTreeMap<u64, Entry>>>,
    vote: Option<Vote>,
    meta: LogMeta,
    /// The committed index last made durable in `meta`.
    committed_on_disk: Option<u64>,
    /// The last index the segments hold once every queued append is
    /// written (what the order check of a new append compares against).
    last_index: Option<u64>,
    /// The writer thread (`None` when opened read-only).
    writer: Option<Writer>,
    /// Set once by the first failed write; shared with the writer thread.
    failed: Arc<OnceLock<String>>,
    counters: Arc<Counters>,
    /// Held for the store's life: an exclusive lock on `DIR/LOCK`, so two
    /// processes never write one log (`None` when opened read-only).
    _lock: Option<File>,
}

/// A reader of a [`LogStore`]'s entries, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogStoreReader {
    entries: Arc<RwLock<BTreeMap<u64, Entry>>>,
}

impl LogStore {
    /// Opens the log in `dir` with the default [`LogStoreOptions`],
    /// creating the directory (mode 0700) if it is missing.
    ///
    /// Every frame, the vote and the metadata are read, checked and
    /// decrypted; any damage is [`StoreError::Corrupt`] naming the file and
    /// the byte offset. A torn write at the end of the last segment is cut
    /// off (see the module documentation).
    pub fn open(dir: &Path, cipher: Arc<RecordCipher>) -> Result<LogStore, StoreError> {
        Self::open_with(dir, cipher, LogStoreOptions::default())
    }

    /// Like [`open`](Self::open), with explicit options.
    pub fn open_with(
        dir: &Path,
        cipher: Arc<RecordCipher>,
        options: LogStoreOptions,
    ) -> Result<LogStore, StoreError> {
        if options.read_only {
            // A missing log reads as an empty one: a store laid out from a
            // backup has only a snapshot until its manager first runs.
            if dir.exists() && !dir.is_dir() {
                return Err(StoreError::Invalid(format!(
                    "{} is not a raft log directory",
                    dir.display()
                )));
            }
        } else {
            create_dir(dir)?;
        }
        let lock = if options.read_only {
            None
        } else {
            Some(lock_dir(dir)?)
        };
        let vote: Option<Vote> = read_sealed(dir, VOTE_FILE, FileKind::Vote, b"", &cipher)?;
        let meta: LogMeta = read_sealed(dir, META_FILE, FileKind::Meta, META_POSITION, &cipher)?
            .unwrap_or_default();
        let purged = meta.last_purged.map(|p| p.index);

        let names = list_segments(dir)?;
        let count = names.len();
        let mut scans = Vec::with_capacity(count);
        for (i, (first, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            scans.push(scan_segment(&cipher, path, first, is_last)?);
        }

        // Check the whole log before repairing anything.
        let mut prev_last: Option<u64> = None;
        for (i, scan) in scans.iter().enumerate() {
            let seg = &scan.segment;
            let Some(first) = seg.first_index() else {
                if i + 1 == count {
                    continue; // an empty last segment: removed below
                }
                return Err(StoreError::corrupt(
                    &seg.path,
                    "byte 0",
                    "empty segment in the middle of the log",
                ));
            };
            let expected = prev_last.map(|last| last.saturating_add(1));
            match expected {
                Some(expected) if first != expected => {
                    return Err(StoreError::corrupt(
                        &seg.path,
                        "byte 0",
                        format!(
                            "the log continues at index {first} but the previous segment ends at index {}: records are missing or out of order",
                            expected - 1
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    let start = purged.map_or(0, |p| p.saturating_add(1));
                    if first > start {
                        return Err(StoreError::corrupt(
                            &seg.path,
                            "byte 0",
                            format!(
                                "the log starts at index {first} but must start at or before index {start} ({}): records are missing",
                                match purged {
                                    Some(p) => format!("entries up to {p} were purged"),
                                    None => "nothing was purged".to_owned(),
                                }
                            ),
                        ));
                    }
                }
            }
            prev_last = seg.last_index();
        }

        // Repairs: torn tail, empty last segment, interrupted purge.
        let mut segments = Vec::with_capacity(count);
        let mut entries = BTreeMap::new();
        for scan in scans {
            let Scan {
                segment,
                entries: seg_entries,
                torn,
            } = scan;
            if let Some(torn) = torn {
                tracing::warn!(
                    path = %segment.path.display(),
                    offset = torn.at,
                    dropped_bytes = torn.file_len - torn.at,
                    reason = %torn.reason,
                    "torn write at the end of the raft log (a crash during an unacknowledged append): truncating"
                );
                if segment.frames.is_empty() {
                    if !options.read_only {
                        remove_file_durably(&segment.path, dir)?;
                    }
                    continue;
                }
                if !options.read_only {
                    truncate_file(&segment.path, torn.at)?;
                }
            }
            let Some(last) = segment.last_index() else {
                tracing::warn!(path = %segment.path.display(), "removing an empty last log segment left by a crash");
                if !options.read_only {
                    remove_file_durably(&segment.path, dir)?;
                }
                continue;
            };
            if purged.is_some_and(|p| last <= p) {
                // A purge that was recorded in `meta` but interrupted.
                if !options.read_only {
                    remove_file_durably(&segment.path, dir)?;
                }
                continue;
            }
            for entry in seg_entries {
                if purged.is_none_or(|p| entry.log_id.index > p) {
                    entries.insert(entry.log_id.index, entry);
                }
            }
            segments.push(segment);
        }
        if !options.read_only {
            remove_stale_temporaries(dir)?;
        }

        let entries = Arc::new(RwLock::new(entries));
        let failed = Arc::new(OnceLock::new());
        let counters = Arc::new(Counters::default());
        let disk = Disk {
            dir: dir.to_path_buf(),
            cipher: cipher.clone(),
            segment_bytes: options.segment_bytes,
            segments,
            entries: Arc::clone(&entries),
            failed: Arc::clone(&failed),
            counters: Arc::clone(&counters),
        };
        let last_index = disk.last_index_on_disk();
        let writer = if options.read_only {
            None
        } else {
            Some(Writer::start(disk)?)
        };
        Ok(LogStore {
            dir: dir.to_path_buf(),
            cipher,
            options,
            entries,
            vote,
            meta,
            committed_on_disk: meta.committed.map(|c| c.index),
            last_index,
            writer,
            failed,
            counters,
            _lock: lock,
        })
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `entries` and returns once they are on disk (written and
    /// fsynced by the writer thread, see the module documentation). When
    /// this returns `Ok`, readers see the entries.
    ///
    /// Entries must have increasing indexes above every index already in
    /// the log ([`StoreError::Invalid`] otherwise: truncate first; nothing
    /// is written). openraft appends each entry right after the log (or
    /// after the last purged index); an entry that does not (openraft's own
    /// conformance suite writes such logs) is written with a warning, but
    /// the next [`open`](Self::open) reports the gap as
    /// [`StoreError::Corrupt`].
    pub fn append_entries(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.append_then(entries, move |result| {
            let _ = tx.send(result);
        })?;
        rx.recv().unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Queues `entries` for the writer thread and returns without waiting
    /// for the disk: readers see the entries when this returns, and
    /// `on_flushed` is called once they are fsynced — or with the error if
    /// the write failed. Appends queued while the writer is busy are
    /// written together and share one fsync (group commit).
    ///
    /// `on_flushed` is called exactly once: on the writer thread (it must
    /// not block: it holds up every later write), or on the caller's thread
    /// with a copy of the error when this returns `Err` (nothing was
    /// queued). The order rules are those of
    /// [`append_entries`](Self::append_entries).
    pub fn append_then(
        &mut self,
        entries: impl IntoIterator<Item = Entry>,
        on_flushed: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let frames = match self.prepare_append(entries.into_iter().collect()) {
            Ok(Some(frames)) => frames,
            Ok(None) => {
                on_flushed(Ok(()));
                return Ok(());
            }
            Err(e) => {
                on_flushed(Err(duplicate(&e)));
                return Err(e);
            }
        };
        let job = Job::Append {
            frames,
            done: Box::new(on_flushed),
        };
        let sent = match &self.writer {
            Some(writer) => writer.send(job),
            None => Err(job),
        };
        if let Err(Job::Append { done, .. }) = sent {
            done(Err(writer_gone()));
            return Err(writer_gone());
        }
        Ok(())
    }

    /// How many appends were queued since the log was opened, and how many
    /// times the writer fsynced segment data for them: with concurrent
    /// appends the second is smaller.
    pub fn append_counts(&self) -> (u64, u64) {
        (
            self.counters.appends.load(Ordering::Relaxed),
            self.counters.data_syncs.load(Ordering::Relaxed),
        )
    }

    /// Checks and seals one append and makes it visible to readers; `None`
    /// for no entries.
    fn prepare_append(&mut self, entries: Vec<Entry>) -> Result<Option<Vec<Frame>>, StoreError> {
        self.check_usable()?;
        let Some(last) = entries.last().map(|e| e.log_id.index) else {
            return Ok(None);
        };
        let frames = self.encode_frames(&entries)?;
        {
            let mut map = self.entries.write().map_err(|_| poisoned())?;
            for entry in entries {
                map.insert(entry.log_id.index, entry);
            }
        }
        self.last_index = Some(last);
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        Ok(Some(frames))
    }

    /// Checks the order of `entries` and seals them; no I/O.
    fn encode_frames(&self, entries: &[Entry]) -> Result<Vec<Frame>, StoreError> {
        let mut prev = self.last_index;
        let purged = self.purged_index();
        let mut frames = Vec::with_capacity(entries.len());
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(p) = prev.filter(|p| index <= *p) {
                return Err(StoreError::Invalid(format!(
                    "cannot append log index {index} after index {p}: truncate the log first"
                )));
            }
            let next = prev.or(purged).map(|p| p.saturating_add(1));
            if next.is_some_and(|next| next != index) {
                tracing::warn!(
                    after = ?prev.or(purged),
                    index,
                    "appending a log entry that does not follow the log: it will not reopen"
                );
            }
            prev = Some(index);
            frames.push(Frame {
                index,
                bytes: encode_frame(&self.cipher, entry)?,
            });
        }
        Ok(frames)
    }

    /// Runs `op` on the writer thread after every append queued before it,
    /// and waits for it without blocking the async runtime.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Disk) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.check_usable()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send_run(move |disk| {
            let _ = tx.send(disk.guarded(op));
        })?;
        rx.await.unwrap_or_else(|_| Err(writer_gone()))
    }

    /// Like [`run`](Self::run), blocking the calling thread (for `Drop`).
    fn run_blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Disk) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.check_usable()?;
        let (tx, rx) = mpsc::channel();
        self.send_run(move |disk| {
            let _ = tx.send(disk.guarded(op));
        })?;
        rx.recv().unwrap_or_else(|_| Err(writer_gone()))
    }

    fn send_run(&self, op: impl FnOnce(&mut Disk) + Send + 'static) -> Result<(), StoreError> {
        self.writer
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Job::Run(Box::new(op)))
            .map_err(|_| writer_gone())
    }

    async fn write_meta(&self, meta: LogMeta) -> Result<(), StoreError> {
        self.run(move |disk| disk.write_meta(&meta)).await
    }

    fn purged_index(&self) -> Option<u64> {
        self.meta.last_purged.map(|p| p.index)
    }

    /// Refuses to write once a write has failed.
    fn check_usable(&self) -> Result<(), StoreError> {
        if self.options.read_only {
            return Err(StoreError::Invalid(format!(
                "the raft log in {} was opened read-only",
                self.dir.display()
            )));
        }
        match self.failed.get() {
            Some(earlier) => Err(refused(&self.dir, earlier)),
            None => Ok(()),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range)?)
    }
}

impl RaftLogReader<TypeConfig> for LogStoreReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStoreReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.meta.last_purged;
        let last = {
            let map = self.entries.read().map_err(|_| poisoned())?;
            map.last_key_value().map(|(_, e)| e.log_id)
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogStoreReader {
        LogStoreReader {
            entries: Arc::clone(&self.entries),
        }
    }

    /// The vote is on disk (file and directory fsynced, after every append
    /// queued before it) before this returns.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.run(move |disk| disk.write_vote(&vote)).await?;
        self.vote = Some(vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    /// Records the committed log id. It is made durable when first set and
    /// then at most every [`COMMITTED_PERSIST_EVERY`] entries (and with
    /// every purge, and at a clean shutdown), not on each commit: a durable
    /// rewrite per commit cost more than the appends themselves. openraft
    /// allows a stale committed id: after a crash the manager re-applies
    /// the missing entries once the leader confirms them again.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if self.meta.committed == committed {
            return Ok(());
        }
        let meta = LogMeta {
            committed,
            ..self.meta
        };
        let due = match (self.committed_on_disk, committed) {
            (Some(d), Some(c)) => c.index < d || c.index - d >= COMMITTED_PERSIST_EVERY,
            _ => true,
        };
        if due {
            self.write_meta(meta).await?;
            self.committed_on_disk = committed.map(|c| c.index);
        }
        self.meta = meta;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta.committed)
    }

    /// Queues the entries for the writer thread and returns; `callback`
    /// is called once they are fsynced, in the writer's next batch: the
    /// entries are on disk before openraft hears they are flushed.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.append_then(entries, move |result| {
            callback.log_io_completed(result.map_err(|e| io::Error::other(e.to_string())));
        })?;
        Ok(())
    }

    /// Removes entries from `log_id.index` on, after every queued append;
    /// durable when this returns.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        self.last_index = self.run(move |disk| disk.truncate(index)).await?;
        Ok(())
    }

    /// Records `log_id` as purged (durably, before anything is deleted),
    /// then deletes segments that hold only purged entries.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if self
            .meta
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        let meta = LogMeta {
            last_purged: Some(log_id),
            ..self.meta
        };
        // During a DEK rotation the vote may still be sealed with the key
        // being retired: re-seal it with the new one (a purge is the step
        // that retires old records).
        let vote = self.vote.filter(|_| self.cipher.rotation_in_progress());
        self.last_index = self.run(move |disk| disk.purge(meta, vote)).await?;
        self.meta = meta;
        self.committed_on_disk = meta.committed.map(|c| c.index);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The writer thread.

/// A sealed frame and its log index.
struct Frame {
    index: u64,
    bytes: Vec<u8>,
}

/// Called once an append is on disk, or failed.
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Work for the writer thread, done in the order it was queued.
enum Job {
    /// Frames to write; `done` is called after the fsync that covers them.
    Append { frames: Vec<Frame>, done: Done },
    /// Anything else (vote, meta, truncate, purge), run alone.
    Run(Box<dyn FnOnce(&mut Disk) + Send>),
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    data_syncs: AtomicU64,
}

/// The handle of a log's writer thread. Dropping it lets the thread
/// finish the queued jobs and waits for it.
struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(disk: Disk) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel();
        let dir = disk.dir.clone();
        let thread = std::thread::Builder::new()
            .name("moat-raft-log".into())
            .spawn(move || writer_loop(disk, &rx))
            .map_err(StoreError::io("start the writer thread of", dir))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `job`; gives it back if the thread is gone.
    fn send(&self, job: Job) -> Result<(), Job> {
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the raft log's writer thread panicked");
        }
    }
}

/// Takes every job queued at the time, writes the leading run of appends
/// with one fsync, runs the next other job alone, and repeats until the
/// store is dropped.
fn writer_loop(mut disk: Disk, rx: &mpsc::Receiver<Job>) {
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
        }
        queue.extend(rx.try_iter());
        let mut frames = Vec::new();
        let mut dones = Vec::new();
        while let Some(Job::Append { .. }) = queue.front() {
            if let Some(Job::Append { frames: f, done }) = queue.pop_front() {
                frames.extend(f);
                dones.push(done);
            }
        }
        if !dones.is_empty() {
            disk.append_batch(&frames, dones);
        } else if let Some(Job::Run(op)) = queue.pop_front() {
            op(&mut disk);
        }
    }
}

/// The log's files, owned by the writer thread.
struct Disk {
    dir: PathBuf,
    cipher: Arc<RecordCipher>,
    segment_bytes: u64,
    segments: Vec<Segment>,
    entries: Arc<RwLock<BTreeMap<u64, Entry>>>,
    failed: Arc<OnceLock<String>>,
    counters: Arc<Counters>,
}

impl Disk {
    /// Writes one batch of appends with one fsync, then reports to each.
    fn append_batch(&mut self, frames: &[Frame], dones: Vec<Done>) {
        let result = match self.failed.get() {
            Some(earlier) => Err(refused(&self.dir, earlier)),
            None => self.guarded(|disk| disk.write_frames(frames)),
        };
        match result {
            Ok(()) => dones.into_iter().for_each(|done| done(Ok(()))),
            Err(e) => {
                let mut dones = dones.into_iter();
                let first = dones.next();
                dones.for_each(|done| done(Err(duplicate(&e))));
                if let Some(done) = first {
                    done(Err(e));
                }
            }
        }
    }

    fn write_frames(&mut self, frames: &[Frame]) -> Result<(), StoreError> {
        // `file` is always a handle to the last segment.
        let mut file: Option<File> = None;
        let mut created_segment = false;
        let sealing = self.cipher.sealing_version().map(|v| v.0);
        if let Some(seg) = self.segments.last_mut()
            && seg.dek.is_none()
        {
            seg.dek = Some(first_record_version(&seg.path)?);
        }
        // Frames that go to the same file are written with one call.
        let mut pending: Vec<u8> = Vec::new();
        for frame in frames {
            let roll = self.segments.last().is_none_or(|seg| {
                seg.len >= self.segment_bytes
                    || (sealing.is_some() && seg.len > 0 && seg.dek.is_some_and(|v| v != sealing))
            });
            if roll {
                // The previous segment must be complete on disk before the
                // next one exists: only the last segment may have a torn tail.
                if let (Some(mut f), Some(seg)) = (file.take(), self.segments.last()) {
                    f.write_all(&pending)
                        .map_err(StoreError::io("write", &seg.path))?;
                    pending.clear();
                    f.sync_data().map_err(StoreError::io("fsync", &seg.path))?;
                    self.counters.data_syncs.fetch_add(1, Ordering::Relaxed);
                }
                let path = self.dir.join(segment_name(frame.index));
                let f = OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(StoreError::io("create", &path))?;
                self.segments.push(Segment {
                    path,
                    dek: Some(sealing),
                    len: 0,
                    frames: Vec::new(),
                });
                created_segment = true;
                file = Some(f);
            }
            let Some(seg) = self.segments.last_mut() else {
                return Err(StoreError::Invalid("no log segment to append to".into()));
            };
            if file.is_none() {
                file = Some(
                    OpenOptions::new()
                        .append(true)
                        .open(&seg.path)
                        .map_err(StoreError::io("open", &seg.path))?,
                );
            }
            pending.extend_from_slice(&frame.bytes);
            seg.frames.push((frame.index, seg.len));
            seg.len += frame.bytes.len() as u64;
        }
        if let (Some(mut f), Some(seg)) = (file, self.segments.last()) {
            f.write_all(&pending)
                .map_err(StoreError::io("write", &seg.path))?;
            f.sync_data().map_err(StoreError::io("fsync", &seg.path))?;
            self.counters.data_syncs.fetch_add(1, Ordering::Relaxed);
        }
        if created_segment {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Cuts the log before `index`; returns the new last index on disk.
    fn truncate(&mut self, index: u64) -> Result<Option<u64>, StoreError> {
        while let Some(seg) = self.segments.last_mut() {
            if seg.first_index().is_none_or(|first| first >= index) {
                let path = seg.path.clone();
                remove_file_durably(&path, &self.dir)?;
                self.segments.pop();
                continue;
            }
            let cut = seg.frames.partition_point(|(i, _)| *i < index);
            if let Some(&(_, offset)) = seg.frames.get(cut) {
                truncate_file(&seg.path, offset)?;
                seg.frames.truncate(cut);
                seg.len = offset;
            }
            break;
        }
        let mut map = self.entries.write().map_err(|_| poisoned())?;
        map.split_off(&index);
        Ok(self.last_index_on_disk())
    }

    /// Makes `meta` (with the new last purged id) durable, re-seals `vote`
    /// if given, then drops purged entries and deletes purged segments;
    /// returns the new last index on disk.
    fn purge(&mut self, meta: LogMeta, vote: Option<Vote>) -> Result<Option<u64>, StoreError> {
        let Some(log_id) = meta.last_purged else {
            return Ok(self.last_index_on_disk());
        };
        self.write_meta(&meta)?;
        if let Some(vote) = vote {
            self.write_vote(&vote)?;
        }
        {
            let mut map = self.entries.write().map_err(|_| poisoned())?;
            let kept = map.split_off(&(log_id.index.saturating_add(1)));
            *map = kept;
        }
        while let Some(seg) = self.segments.first() {
            if seg.last_index().is_some_and(|last| last > log_id.index) {
                break;
            }
            let path = seg.path.clone();
            remove_file_durably(&path, &self.dir)?;
            self.segments.remove(0);
        }
        Ok(self.last_index_on_disk())
    }

    fn write_meta(&self, meta: &LogMeta) -> Result<(), StoreError> {
        write_sealed(
            &self.dir,
            META_FILE,
            FileKind::Meta,
            META_POSITION,
            &self.cipher,
            meta,
        )
    }

    fn write_vote(&self, vote: &Vote) -> Result<(), StoreError> {
        write_sealed(
            &self.dir,
            VOTE_FILE,
            FileKind::Vote,
            b"",
            &self.cipher,
            vote,
        )
    }

    fn last_index_on_disk(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last_index)
    }

    /// Runs a write; after a failure, refuses every later write.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(earlier) = self.failed.get() {
            return Err(refused(&self.dir, earlier));
        }
        let result = f(self);
        if let Err(e) = &result {
            let _ = self.failed.set(e.to_string());
        }
        result
    }
}

/// The error for a write after an earlier one failed.
fn refused(dir: &Path, earlier: &str) -> StoreError {
    StoreError::Invalid(format!(
        "the raft log in {} refuses writes after an earlier write failed ({earlier}); restart the node",
        dir.display()
    ))
}

fn writer_gone() -> StoreError {
    StoreError::Invalid("the raft log's writer thread has stopped".into())
}

/// A copy of `e` for the other appends of a failed batch.
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io {
            action,
            path,
            source,
        } => StoreError::Io {
            action,
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::Invalid(other.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Helpers.

const VOTE_FILE: &str = "vote";
const META_FILE: &str = "meta";
const META_POSITION: &[u8] = b"log-meta";
const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".seg";
/// Digits of the index in a segment name: enough for `u64::MAX`.
const SEGMENT_DIGITS: usize = 20;

const LEN_LEN: usize = 4;
const CRC_LEN: usize = 4;
/// index ‖ term ‖ leader node id: the frame header after the CRC, and the
/// record's AEAD position.
const POSITION_LEN: usize = 8 + 8 + 16;
/// The smallest valid `len`: CRC and position, empty payload.
const MIN_FRAME_LEN: u32 = (CRC_LEN + POSITION_LEN) as u32;
/// `vote` and `meta` are a few hundred bytes; refuse to read more than this.
const MAX_SMALL_FILE: u64 = 1 << 20;

/// The log metadata kept in `meta`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LogMeta {
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

/// One segment file: its frames' indexes and byte offsets.
struct Segment {
    path: PathBuf,
    /// DEK version of the segment's records, once known: a segment never
    /// mixes two DEK versions, so retiring a DEK can delete whole files.
    dek: Option<Option<u32>>,
    /// Bytes of valid frames (the file length once open has repaired it).
    len: u64,
    /// (log index, byte offset of the frame), in file order.
    frames: Vec<(u64, u64)>,
}

impl Segment {
    fn first_index(&self) -> Option<u64> {
        self.frames.first().map(|f| f.0)
    }

    fn last_index(&self) -> Option<u64> {
        self.frames.last().map(|f| f.0)
    }
}

/// A segment as read at open.
struct Scan {
    segment: Segment,
    entries: Vec<Entry>,
    torn: Option<Torn>,
}

/// A torn write found at the end of the last segment.
struct Torn {
    at: u64,
    file_len: u64,
    reason: String,
}

fn segment_name(first: u64) -> String {
    format!("{SEGMENT_PREFIX}{first:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

fn position(log_id: &LogId) -> [u8; POSITION_LEN] {
    let mut p = [0u8; POSITION_LEN];
    p[..8].copy_from_slice(&log_id.index.to_be_bytes());
    p[8..16].copy_from_slice(&log_id.leader_id.term.to_be_bytes());
    p[16..].copy_from_slice(log_id.leader_id.node_id.as_bytes());
    p
}

impl Drop for LogStore {
    /// Lets the writer thread finish every queued append, then, best
    /// effort, makes the committed id durable if it ran ahead of the disk
    /// (a crash leaves it up to [`COMMITTED_PERSIST_EVERY`] entries behind,
    /// which is safe).
    fn drop(&mut self) {
        let behind = self.meta.committed.map(|c| c.index) != self.committed_on_disk;
        if behind && self.writer.is_some() && self.failed.get().is_none() {
            let meta = self.meta;
            if let Err(e) = self.run_blocking(move |disk| disk.write_meta(&meta)) {
                tracing::warn!(error = %e, "could not record the committed log id at shutdown");
            }
        }
        // Joins the thread after the jobs queued so far.
        drop(self.writer.take());
    }
}

/// How many entries the durable committed id may lag behind the one in
/// memory (see `save_committed`).
pub const COMMITTED_PERSIST_EVERY: u64 = 1024;

/// Takes the exclusive lock on `DIR/LOCK` (released when the file closes,
/// including when the process dies).
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(StoreError::io("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Invalid(format!(
            "{} is in use by another moat process: stop that process first (two processes must never write one store)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path)(e)),
    }
}

/// Bytes before a frame's sealed payload: length, CRC, index, term, leader.
const SEALED_OFFSET: u64 = 40;

/// The DEK version of the first record of a segment (`None`: no record, or
/// an unencrypted benchmark log).
fn first_record_version(path: &Path) -> Result<Option<u32>, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).map_err(StoreError::io("open", path))?;
    let mut version = [0u8; 4];
    f.seek(SeekFrom::Start(SEALED_OFFSET))
        .map_err(StoreError::io("seek", path))?;
    match f.read_exact(&mut version) {
        Ok(()) => Ok(Some(u32::from_be_bytes(version))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(StoreError::io("read", path)(e)),
    }
}

fn encode_frame(cipher: &RecordCipher, entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let position = position(&entry.log_id);
    let plaintext = to_json_zeroizing(entry, "log entry")?;
    let sealed = cipher.seal(FileKind::Log, &position, &plaintext)?;
    let body_len = CRC_LEN + POSITION_LEN + sealed.len();
    let len = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= MAX_FRAME_LEN)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "log entry {} seals to {body_len} bytes, more than the {MAX_FRAME_LEN}-byte frame limit",
                entry.log_id
            ))
        })?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&position);
    crc.update(&sealed);
    let mut frame = Vec::with_capacity(LEN_LEN + body_len);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&crc.finalize().to_be_bytes());
    frame.extend_from_slice(&position);
    frame.extend_from_slice(&sealed);
    Ok(frame)
}

/// How a frame that does not parse relates to the end of the file.
enum Bad {
    /// The file ends inside the frame, or the frame ends exactly at EOF.
    Final,
    /// The frame is followed by more bytes (reader positioned after it, or
    /// after its length field if the length is unusable).
    Followed,
}

/// Reads, checks and decrypts every frame of one segment.
fn scan_segment(
    cipher: &RecordCipher,
    path: PathBuf,
    named_first: u64,
    is_last: bool,
) -> Result<Scan, StoreError> {
    let file = File::open(&path).map_err(StoreError::io("open", &path))?;
    let file_len = file
        .metadata()
        .map_err(StoreError::io("stat", &path))?
        .len();
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut frames: Vec<(u64, u64)> = Vec::new();
    let mut entries = Vec::new();
    let mut off = 0u64;
    let mut torn = None;

    while off < file_len {
        let remaining = file_len - off;
        let bad = |kind: Bad, reason: String, reader: &mut BufReader<File>| {
            tail_or_corrupt(is_last, kind, reason, reader, &path, off, file_len)
        };

        if remaining < LEN_LEN as u64 {
            torn = Some(bad(
                Bad::Final,
                format!("the file ends inside a frame's length field ({remaining} bytes left)"),
                &mut reader,
            )?);
            break;
        }
        let mut len_bytes = [0u8; LEN_LEN];
        reader
            .read_exact(&mut len_bytes)
            .map_err(StoreError::io("read", &path))?;
        let len = u32::from_be_bytes(len_bytes);
        let end = off + LEN_LEN as u64 + u64::from(len);
        let expected = match frames.last() {
            Some(&(prev, _)) => prev.checked_add(1),
            None => Some(named_first),
        };
        if end > file_len {
            // A torn frame is the last thing in the file. If a valid frame
            // of the next index follows, this length was damaged instead.
            let next = expected.and_then(|e| e.checked_add(1)).filter(|_| is_last);
            if let Some(next) = next
                && let Some(at) = find_frame(&mut reader, &path, off + LEN_LEN as u64, next)?
            {
                return Err(StoreError::corrupt(
                    &path,
                    format!("byte {off}"),
                    format!(
                        "the frame length {len} runs past the end of the file, but a valid record of log index {next} follows at byte {at}: the length was damaged"
                    ),
                ));
            }
            torn = Some(bad(
                Bad::Final,
                format!(
                    "a frame of {len} bytes runs past the end of the file ({} bytes left)",
                    remaining - LEN_LEN as u64
                ),
                &mut reader,
            )?);
            break;
        }
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len) {
            torn = Some(bad(
                Bad::Followed,
                format!("frame length {len} is outside {MIN_FRAME_LEN}..={MAX_FRAME_LEN}"),
                &mut reader,
            )?);
            break;
        }
        // `len` is bounded by MAX_FRAME_LEN and by the file size.
        let mut body = vec![0u8; len as usize];
        reader
            .read_exact(&mut body)
            .map_err(StoreError::io("read", &path))?;
        let (crc_bytes, rest) = body.split_at(CRC_LEN);
        let stored_crc = u32::from_be_bytes(crc_bytes.try_into().map_err(|_| layout(&path, off))?);
        if crc32fast::hash(rest) != stored_crc {
            let kind = if end == file_len {
                Bad::Final
            } else {
                Bad::Followed
            };
            torn = Some(bad(kind, "checksum mismatch".to_owned(), &mut reader)?);
            break;
        }

        // The CRC holds: from here on, any failure is damage or tampering.
        let (pos, sealed) = rest.split_at(POSITION_LEN);
        let (index, term, leader) = parse_position(pos).ok_or_else(|| layout(&path, off))?;
        let at = || format!("byte {off}");
        let plaintext = cipher.open(FileKind::Log, pos, sealed).map_err(|e| {
            StoreError::corrupt(
                &path,
                at(),
                format!(
                    "the record of log index {index} does not authenticate ({e}): it was tampered with, moved, or written by another node, cluster or key"
                ),
            )
        })?;
        let entry: Entry = serde_json::from_slice(&plaintext).map_err(|e| {
            StoreError::corrupt(
                &path,
                at(),
                format!("the record of log index {index} does not decode: {e}"),
            )
        })?;
        if entry.log_id.index != index
            || entry.log_id.leader_id.term != term
            || entry.log_id.leader_id.node_id.as_bytes() != &leader
        {
            return Err(StoreError::corrupt(
                &path,
                at(),
                format!(
                    "the record's header says index {index} term {term} but its entry is {}",
                    entry.log_id
                ),
            ));
        }
        if expected != Some(index) {
            let reason = match frames.last() {
                Some(&(prev, _)) => format!(
                    "expected log index {}, found {index}: a record is missing, duplicated or out of order",
                    prev.saturating_add(1)
                ),
                None => format!(
                    "the segment is named for log index {named_first} but its first record has index {index}"
                ),
            };
            return Err(StoreError::corrupt(&path, at(), reason));
        }
        frames.push((index, off));
        entries.push(entry);
        off = end;
    }

    Ok(Scan {
        segment: Segment {
            dek: None,
            path,
            len: off,
            frames,
        },
        entries,
        torn,
    })
}

/// Decides whether a bad frame at `off` is a torn tail (only in the last
/// segment: the frame is the final one, or only zeros follow it) or damage.
fn tail_or_corrupt(
    is_last: bool,
    kind: Bad,
    reason: String,
    reader: &mut BufReader<File>,
    path: &Path,
    off: u64,
    file_len: u64,
) -> Result<Torn, StoreError> {
    let is_torn = is_last
        && match kind {
            Bad::Final => true,
            Bad::Followed => rest_is_zero(reader, path)?,
        };
    if is_torn {
        Ok(Torn {
            at: off,
            file_len,
            reason,
        })
    } else {
        Err(StoreError::corrupt(path, format!("byte {off}"), reason))
    }
}

/// Searches the rest of `reader` (which starts at byte `start` of the file)
/// for a frame with a valid CRC and log index `index`; returns its offset.
/// Only called when a frame length runs past the end of the last segment.
fn find_frame(
    reader: &mut BufReader<File>,
    path: &Path,
    start: u64,
    index: u64,
) -> Result<Option<u64>, StoreError> {
    let mut rest = Vec::new();
    reader
        .read_to_end(&mut rest)
        .map_err(StoreError::io("read", path))?;
    let pattern = index.to_be_bytes();
    // A frame at `r` has its index at `r + 8`.
    let found = rest
        .windows(pattern.len())
        .enumerate()
        .skip(LEN_LEN + CRC_LEN)
        .filter(|(_, w)| *w == pattern)
        .map(|(i, _)| i - LEN_LEN - CRC_LEN)
        .find(|&r| {
            let frame = &rest[r..];
            let Some((len, frame)) = frame.split_first_chunk::<LEN_LEN>() else {
                return false;
            };
            let len = u32::from_be_bytes(*len);
            let Some((crc, body)) = frame.split_first_chunk::<CRC_LEN>() else {
                return false;
            };
            (MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len)
                && body
                    .get(..len as usize - CRC_LEN)
                    .is_some_and(|body| crc32fast::hash(body) == u32::from_be_bytes(*crc))
        });
    Ok(found.map(|r| start + r as u64))
}

/// Whether every byte left in `reader` is zero.
fn rest_is_zero(reader: &mut BufReader<File>, path: &Path) -> Result<bool, StoreError> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("read", path)(e)),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

fn parse_position(pos: &[u8]) -> Option<(u64, u64, [u8; 16])> {
    let (index, rest) = pos.split_first_chunk::<8>()?;
    let (term, rest) = rest.split_first_chunk::<8>()?;
    let leader: [u8; 16] = rest.try_into().ok()?;
    Some((
        u64::from_be_bytes(*index),
        u64::from_be_bytes(*term),
        leader,
    ))
}

fn layout(path: &Path, off: u64) -> StoreError {
    StoreError::corrupt(path, format!("byte {off}"), "frame layout")
}

/// The segments in `dir`, ordered by first index. A file that looks like a
/// segment but whose name does not parse is corrupt.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io("list", dir)(e)),
    };
    for dirent in entries {
        let dirent = dirent.map_err(StoreError::io("list", dir))?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(digits) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
        else {
            continue;
        };
        let path = dirent.path();
        let first = (digits.len() == SEGMENT_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                StoreError::corrupt(&path, "file name", "not a valid log segment name")
            })?;
        let file_type = dirent.file_type().map_err(StoreError::io("stat", &path))?;
        if !file_type.is_file() {
            return Err(StoreError::corrupt(
                &path,
                "file name",
                "not a regular file",
            ));
        }
        out.push((first, path));
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

fn read_range(
    entries: &RwLock<BTreeMap<u64, Entry>>,
    range: impl RangeBounds<u64>,
) -> Result<Vec<Entry>, StoreError> {
    let map = entries.read().map_err(|_| poisoned())?;
    Ok(map.range(range).map(|(_, e)| e.clone()).collect())
}

/// Removes `.vote.tmp-*` and `.meta.tmp-*`, left by an atomic write that a
/// crash interrupted (they are never the live copy).
fn remove_stale_temporaries(dir: &Path) -> Result<(), StoreError> {
    for dirent in fs::read_dir(dir).map_err(StoreError::io("list", dir))? {
        let dirent = dirent.map_err(StoreError::io("list", dir))?;
        let name = dirent.file_name();
        let stale = name.to_str().is_some_and(|n| {
            [VOTE_FILE, META_FILE].iter().any(|f| {
                n.strip_prefix('.')
                    .and_then(|n| n.strip_prefix(f))
                    .is_some_and(|n| n.starts_with(".tmp-"))
            })
        });
        if stale {
            let path = dirent.path();
            fs::remove_file(&path).map_err(StoreError::io("remove", &path))?;
        }
    }
    Ok(())
}

/// Reads and opens a sealed small file; `None` if it does not exist.
fn read_sealed<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    name: &str,
    kind: FileKind,
    position: &[u8],
    cipher: &RecordCipher,
) -> Result<Option<T>, StoreError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("open", &path)(e)),
    };
    let mut record = Vec::new();
    file.take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut record)
        .map_err(StoreError::io("read", &path))?;
    if record.len() as u64 > MAX_SMALL_FILE {
        return Err(StoreError::corrupt(
            &path,
            format!("byte {MAX_SMALL_FILE}"),
            format!("larger than the {MAX_SMALL_FILE}-byte limit"),
        ));
    }
    let plaintext = cipher.open(kind, position, &record).map_err(|e| {
        StoreError::corrupt(
            &path,
            "byte 0",
            format!(
                "the record does not authenticate ({e}): it was damaged, tampered with, or written by another node, cluster or key"
            ),
        )
    })?;
    serde_json::from_slice(&plaintext).map(Some).map_err(|e| {
        StoreError::corrupt(&path, "byte 0", format!("the record does not decode: {e}"))
    })
}

/// Seals `value` and replaces `dir/name` atomically and durably
/// ([`fsutil::write_atomic`]: temporary file, fsync, rename, fsync `dir`).
fn write_sealed(
    dir: &Path,
    name: &'static str,
    kind: FileKind,
    position: &[u8],
    cipher: &RecordCipher,
    value: &impl Serialize,
) -> Result<(), StoreError> {
    let plaintext = to_json_zeroizing(value, name)?;
    let record = cipher.seal(kind, position, &plaintext)?;
    fsutil::write_atomic(&dir.join(name), &record)
}

/// Shortens `path` to `len` bytes and fsyncs it.
fn truncate_file(path: &Path, len: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StoreError::io("open", path))?;
    file.set_len(len)
        .map_err(StoreError::io("truncate", path))?;
    file.sync_all().map_err(StoreError::io("fsync", path))
}

/// Deletes `path` and fsyncs `dir`.
fn remove_file_durably(path: &Path, dir: &Path) -> Result<(), StoreError> {
    fs::remove_file(path).map_err(StoreError::io("remove", path))?;
    sync_dir(dir)
}

/// Serializes `value` to JSON in a buffer that is zeroized on drop and
/// allocated once at its final size (so no unzeroized copy is left behind
/// by reallocation).
fn to_json_zeroizing(
    value: &impl Serialize,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let encoding = |e: serde_json::Error| StoreError::Encoding {
        what,
        reason: e.to_string(),
    };
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_err(encoding)?;
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    serde_json::to_writer(&mut *out, value).map_err(encoding)?;
    Ok(out)
}

fn poisoned() -> StoreError {
    StoreError::Invalid("the raft log's entry lock was poisoned by a panic".into())
}
