//! Reads a Docker Swarm manager's state directory offline, and looks at a
//! live manager's port: what `moat audit report --docker-swarm` and
//! `moat store dump|verify --docker-swarm` are built on.
//!
//! The formats are in `shared/DOCKER-SWARM-FORMAT.md` (the map this crate
//! was built from; where the bytes disagreed, the bytes won and the code
//! says so). This crate **only reads**: every file is opened read-only, and
//! nothing in the directory is ever created, renamed or written.
//!
//! Everything read is untrusted input (a copy of a state directory may come
//! from anywhere): no input panics, sizes are checked before allocating,
//! and key material and decrypted records live in zeroizing buffers.
//!
//! # Modules
//!
//! * `dir`: the layout of a state directory, its files and their modes.
//! * `key`: the unlock key (`SWMKEY-1-…`, the KEK), the node key file
//!   (`swarm-node.key`: PKCS#8 protection and the raft data-key headers).
//! * `record`: `MaybeEncryptedRecord` and its algorithms.
//! * `wal`, `snap`: etcd's WAL framing with its CRC-32C chain, and
//!   snapshot files.
//! * `raftlog`: the snapshot and the WAL entries after it, decrypted.
//! * `proto`, `store`, `dump`: SwarmKit's stored objects, the store rebuilt
//!   from the log, and its redacted JSON dump.
//! * `inventory`: the crypto inventory the compliance report checks.
//! * `probe`: a live TLS look at a manager's port.
#![forbid(unsafe_code)]

mod certs;
pub mod dir;
pub mod dump;
pub mod error;
pub mod inventory;
pub mod key;
pub mod probe;
pub mod proto;
pub mod raftlog;
pub mod record;
pub mod snap;
pub mod store;
pub mod wal;

use std::path::Path;

use crate::dir::{FileInfo, StateDir};
use crate::error::Notice;
use crate::key::{NodeKeyFile, UnlockKey};
use crate::raftlog::{RaftLog, VerifyReport};
use crate::store::{Rebuilt, StoreError};

pub use crate::error::{Result, SwarmError};

/// A state directory read: its files, its node key, its raft log, and the
/// store rebuilt from it when a data key was at hand (the unlock key
/// given, or the data key stored in clear with autolock off).
pub struct Opened {
    /// The directory.
    pub dir: StateDir,
    /// `certificates/swarm-node.key`, parsed.
    pub node_key: NodeKeyFile,
    /// `certificates/swarm-node.crt`.
    pub node_cert_pem: Vec<u8>,
    /// `certificates/swarm-root-ca.crt`.
    pub root_ca_pem: Vec<u8>,
    /// The files and their modes.
    pub files: Vec<FileInfo>,
    /// Whether an unlock key was given.
    pub key_given: bool,
    /// Whether the unlock key given is the store's `swarm-manager` key
    /// (compared in constant time; `None`: no key or no store).
    pub given_key_is_current: Option<bool>,
    /// Whether the TLS key matches the certificate (`None`: not checked).
    pub tls_key_matches_cert: Option<bool>,
    /// WAL segment files read.
    pub wal_segments: usize,
    /// The raft log (decrypted where a key was at hand).
    pub log: RaftLog,
    /// The store, if it could be read.
    pub store: Option<Rebuilt>,
    /// When the log shows each role's join token set (see
    /// `inventory::token_changes`).
    token_changes: std::collections::BTreeMap<String, String>,
    /// Notices from opening the keys.
    key_notices: Vec<Notice>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("dir", &self.dir)
            .field("key_given", &self.key_given)
            .field("store_read", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// Every notice: the directory's, the keys', the log's.
    pub fn notices(&self) -> impl Iterator<Item = &Notice> {
        self.key_notices.iter().chain(self.log.notices.iter())
    }
}

/// Reads the state directory at `path` with the unlock key, if given.
///
/// Without a key, an autolocked manager's files are still read (its
/// certificates, how its keys are protected) and the store is left
/// unread; with autolock off the data key is in clear and the store is
/// read anyway. A wrong key is an error ([`SwarmError::WrongUnlockKey`]),
/// as is a damaged file; nothing in the directory is ever written.
pub fn open(path: &Path, key: Option<&UnlockKey>) -> Result<Opened> {
    let dir = StateDir::open(path)?;
    let node_key = dir.node_key()?;
    let node_cert_pem = dir.read_small(dir::NODE_CERT_FILE)?;
    let root_ca_pem = dir.read_small(dir::ROOT_CA_FILE)?;
    let files = dir.files()?;
    // The key file and certificate already read are opened here, not
    // read again (`StateDir::open_keys` is for callers without them).
    let (keys, tls_key_matches_cert, key_notices) = match node_key.open(key, Some(&node_cert_pem)) {
        Ok(opened) => (
            Some(opened.keys),
            opened.tls_key_matches_cert,
            opened.notices,
        ),
        Err(SwarmError::Locked { .. }) if key.is_none() => (None, None, Vec::new()),
        Err(e) => return Err(e),
    };
    let wal_segments = dir.wal_segments()?.0.len();
    let log = raftlog::read_log(&dir, keys.as_ref())?;
    let (store, token_changes) = match &keys {
        Some(_) => {
            let rebuilt = store::Store::rebuild(&log).map_err(store_error)?;
            // The rebuild has decoded the snapshot already; only its
            // cluster is wanted here, so only that is decoded again.
            let snapshot_cluster = log
                .snapshot
                .as_ref()
                .and_then(|s| s.plaintext.as_ref())
                .and_then(|plain| inventory::snapshot_cluster(plain));
            let changes = inventory::token_changes(&log, snapshot_cluster.as_ref());
            (Some(rebuilt), changes)
        }
        None => (None, Default::default()),
    };
    let given_key_is_current = match (key, &store) {
        (Some(kek), Some(rebuilt)) => {
            let cluster = rebuilt.store.cluster().map_err(store_error)?;
            // No key in the store (autolock off): nothing to compare with.
            cluster.and_then(|c| {
                let held: Vec<_> = c
                    .unlock_keys
                    .iter()
                    .filter(|k| k.subsystem == "swarm-manager")
                    .collect();
                (!held.is_empty()).then(|| held.iter().any(|k| kek.ct_eq(&k.key)))
            })
        }
        _ => None,
    };
    Ok(Opened {
        dir,
        node_key,
        node_cert_pem,
        root_ca_pem,
        files,
        key_given: key.is_some(),
        given_key_is_current,
        tls_key_matches_cert,
        wal_segments,
        log,
        store,
        token_changes,
        key_notices,
    })
}

/// Checks every CRC of the WAL and snapshots, and authenticates every
/// record a key is at hand for (see [`raftlog::verify`]).
pub fn verify(path: &Path, key: Option<&UnlockKey>) -> Result<VerifyReport> {
    let dir = StateDir::open(path)?;
    let keys = match dir.open_keys(key) {
        Ok(opened) => Some(opened.keys),
        Err(SwarmError::Locked { .. }) if key.is_none() => None,
        Err(e) => return Err(e),
    };
    raftlog::verify(&dir, keys.as_ref())
}

/// The store as redacted JSON (`show_secrets` prints everything); an error
/// if the store could not be read (autolock on and no unlock key).
pub fn dump_store(opened: &Opened, show_secrets: bool) -> Result<serde_json::Value> {
    let Some(rebuilt) = &opened.store else {
        return Err(SwarmError::Locked {
            path: opened.dir.path(key::NODE_KEY_FILE),
        });
    };
    let mut value = dump::dump_rebuilt(rebuilt, dump::DumpOptions { show_secrets });
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "notices".into(),
            opened.notices().map(|n| n.to_string()).collect(),
        );
    }
    Ok(value)
}

/// `Key: value` lines about what was read, for a terminal.
pub fn summary(opened: &Opened) -> Vec<(&'static str, String)> {
    let log = &opened.log;
    let mut out = vec![
        ("State directory", opened.dir.root().display().to_string()),
        (
            "Snapshot",
            log.snapshot.as_ref().map_or_else(
                || "none".into(),
                |s| format!("{} (index {})", s.file, s.index),
            ),
        ),
        (
            "Log",
            format!(
                "{} entries in {} WAL segment(s), commit index {}",
                log.entries.len(),
                opened.wal_segments,
                log.hard_state.commit
            ),
        ),
    ];
    if let Some(r) = &opened.store {
        out.push((
            "Applied",
            format!(
                "{} entries after the snapshot, through index {}{}",
                r.applied_entries,
                r.last_applied_index,
                if r.uncommitted_entries > 0 {
                    format!(
                        "; {} uncommitted entries not applied",
                        r.uncommitted_entries
                    )
                } else {
                    String::new()
                }
            ),
        ));
    }
    for n in opened.notices() {
        out.push(("Notice", n.to_string()));
    }
    out
}

/// `Key: value` lines of a verification, for a terminal.
pub fn verify_summary(r: &VerifyReport) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            "WAL",
            format!(
                "{} segment(s), {} records, {} entries, {} bytes; every CRC-32C matched",
                r.segments, r.records, r.entries, r.wal_bytes
            ),
        ),
        (
            "Snapshots",
            format!(
                "{} checked{}",
                r.snapshots_checked,
                if r.snapshot_index > 0 {
                    format!(", newest through index {}", r.snapshot_index)
                } else {
                    String::new()
                }
            ),
        ),
        (
            "Authenticated",
            format!(
                "{} entries{}{}",
                r.entries_authenticated,
                if r.snapshot_authenticated {
                    " and the snapshot"
                } else {
                    ""
                },
                if r.entries_retired_key > 0 {
                    format!(
                        "; {} older entries sealed with a retired data key (before the snapshot)",
                        r.entries_retired_key
                    )
                } else {
                    String::new()
                }
            ),
        ),
    ];
    if r.entries_not_authenticated > 0 {
        out.push((
            "Not authenticated",
            format!(
                "{} entries (no data key at hand: give the unlock key)",
                r.entries_not_authenticated
            ),
        ));
    }
    for n in &r.notices {
        out.push(("Notice", n.to_string()));
    }
    out
}

/// The last line of `moat store verify --docker-swarm`.
pub fn verify_verdict(r: &VerifyReport) -> &'static str {
    if r.entries_not_authenticated > 0 {
        "Every CRC matched; records were not authenticated (no unlock key)."
    } else {
        "Every CRC matched and every record a key was at hand for authenticated."
    }
}

fn store_error(e: StoreError) -> SwarmError {
    SwarmError::Other(e.to_string())
}
