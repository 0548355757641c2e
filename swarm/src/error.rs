//! Errors and notices of the Swarm state-directory reader.
//!
//! Every error names the problem and the next step, and where it is about a
//! file, the file (relative to the state directory, e.g.
//! `raft/wal-v3-encrypted/0000000000000000-0000000000000000.wal`) and the
//! byte offset in it. No error ever carries a key, a key's text or a
//! decrypted record.
//!
//! A [`Notice`] is something found that is not fatal (a torn tail in the
//! last WAL segment, a snapshot skipped because its CRC fails, entries not
//! yet committed, a file ignored): the reader goes on and hands the notices
//! back so the caller can report them.

use std::path::PathBuf;

use serde::Serialize;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, SwarmError>;

/// What went wrong reading a Swarm state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// The path is not a Swarm manager's state directory.
    #[error(
        "{path} is not a Docker Swarm state directory: {missing} is missing; {hint}",
        path = path.display()
    )]
    NotAStateDir {
        /// The path given.
        path: PathBuf,
        /// What was looked for and not found (relative to `path`).
        missing: String,
        /// What to do: "did you mean DIR/swarm?" or where Docker keeps it.
        hint: String,
    },

    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The unlock key text is not a `SWMKEY-1-…` key. The key is never
    /// echoed.
    #[error(
        "the unlock key is not a Docker Swarm unlock key ({reason}); it looks like \
         SWMKEY-1- followed by 43 base64 characters, as `docker swarm unlock-key -q` prints it"
    )]
    UnlockKeyFormat {
        /// Which part is wrong (prefix, base64, length), never the key.
        reason: &'static str,
    },

    /// The unlock key is well formed but is not this node's.
    #[error(
        "wrong unlock key: {check}; use the key printed by `docker swarm unlock-key -q` on a \
         manager of this swarm (a rotated key replaces the old one)"
    )]
    WrongUnlockKey {
        /// Which check failed.
        check: &'static str,
    },

    /// The node is locked (autolock on) and no unlock key was given.
    #[error(
        "{path} is encrypted under the swarm's unlock key (autolock is on): pass \
         --unlock-key-file FILE or --unlock-key - (read from standard input)",
        path = path.display()
    )]
    Locked {
        /// The key file (`certificates/swarm-node.key`).
        path: PathBuf,
    },

    /// The node key file (`swarm-node.key`) is damaged or not as Swarm
    /// writes it.
    #[error("{file}: {problem}; use a fresh copy of the state directory")]
    KeyFile {
        /// The file, relative to the state directory.
        file: String,
        /// What is wrong.
        problem: String,
    },

    /// A CRC-32C check failed.
    #[error(
        "{file} at byte {offset}: CRC-32C mismatch (expected {expected:#010x}, found \
         {found:#010x}): the file is corrupt or was changed; use a fresh copy of the state directory"
    )]
    Crc {
        /// The file, relative to the state directory.
        file: String,
        /// Where the record starts.
        offset: u64,
        /// The CRC the file states.
        expected: u32,
        /// The CRC of the bytes.
        found: u32,
    },

    /// A record is cut short (a torn write), outside the last WAL segment
    /// where that would be an ordinary crash.
    #[error(
        "{file} at byte {offset}: {what}: the file was cut short or was being written when it \
         was copied; stop the Docker daemon (or copy the directory again) and retry"
    )]
    Torn {
        /// The file, relative to the state directory.
        file: String,
        /// Where the record starts.
        offset: u64,
        /// What is cut short.
        what: String,
    },

    /// No candidate data key authenticates a record.
    #[error(
        "{file} at byte {offset}{index}: the record does not authenticate under any data key in \
         swarm-node.key: it was changed, or sealed with a key this node no longer has; use a fresh \
         copy of the state directory",
        index = match index { Some(i) => format!(" (raft index {i})"), None => String::new() }
    )]
    Auth {
        /// The file, relative to the state directory.
        file: String,
        /// Where the record starts.
        offset: u64,
        /// The raft index of the entry, if it is one.
        index: Option<u64>,
    },

    /// A record uses an encryption algorithm this reader does not know.
    #[error(
        "{file} at byte {offset}: unknown record encryption algorithm {algorithm}; this \
         state directory was written by a Swarm version this reader does not support"
    )]
    UnknownAlgorithm {
        /// The file, relative to the state directory.
        file: String,
        /// Where the record starts.
        offset: u64,
        /// The algorithm number.
        algorithm: i32,
    },

    /// Something is larger than this reader accepts; checked before reading
    /// or allocating.
    #[error(
        "{what} is {size} bytes (or iterations), more than the limit of {limit}: refusing to \
         read it; check that this is a Swarm state directory"
    )]
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// Raft log entries or WAL segments are missing.
    #[error(
        "{what}: the raft log has a hole and the store cannot be rebuilt from it; use a complete copy of the state directory"
    )]
    Gap {
        /// What is missing (which indexes or segments).
        what: String,
    },

    /// A structure does not decode.
    #[error(
        "{file} at byte {offset}: {what}: the file is corrupt or not as Swarm writes it; use a fresh copy of the state directory"
    )]
    Malformed {
        /// The file, relative to the state directory.
        file: String,
        /// Where the broken structure starts.
        offset: u64,
        /// What does not decode.
        what: String,
    },

    /// Anything else (kept rare).
    #[error("{0}")]
    Other(String),
}

/// Something found while reading that is reported but not fatal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// What kind of thing.
    pub kind: NoticeKind,
    /// The file it is about, relative to the state directory (empty if none).
    pub file: String,
    /// The byte offset in the file, if any.
    pub offset: Option<u64>,
    /// A sentence for the operator.
    pub message: String,
}

/// The kinds of [`Notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NoticeKind {
    /// The last WAL segment ends in a torn or bad record; reading stopped
    /// there (what a restarting node repairs by truncating).
    TornTail,
    /// A snapshot file was skipped (bad CRC or does not decode); an older
    /// one, or none, was used.
    BrokenSnapshot,
    /// Entries after the commit index (not committed yet).
    Uncommitted,
    /// A file that the reader ignores (`*.tmp` WAL spares, `*.broken`
    /// snapshots, unknown names).
    IgnoredFile,
    /// A leftover temporary file (`certificates/.swarm-node.crt`).
    LeftoverFile,
    /// A legacy unencrypted raft directory (`raft/wal-v3`, `raft/snap`, …).
    LegacyDir,
    /// A WAL record of a type this reader does not know (kept, not used).
    UnknownRecord,
    /// The snapshot and the WAL disagree (no matching snapshot record, or
    /// the snapshot file name and its metadata differ).
    SnapshotMismatch,
    /// An unlock key was given but nothing on this node needs one.
    KeyNotNeeded,
    /// The TLS key was not checked against the certificate (and why).
    TlsKeyNotChecked,
    /// Raft entries missing (e.g. the commit index is past the last entry).
    Gap,
    /// Entries before the snapshot that no current data key opens (sealed
    /// with a retired key; the snapshot holds their effect).
    RetiredKey,
}

impl Notice {
    pub(crate) fn new(
        kind: NoticeKind,
        file: impl Into<String>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Notice {
        Notice {
            kind,
            file: file.into(),
            offset,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.file.is_empty(), self.offset) {
            (true, _) => write!(f, "{}", self.message),
            (false, None) => write!(f, "{}: {}", self.file, self.message),
            (false, Some(o)) => write!(f, "{} at byte {o}: {}", self.file, self.message),
        }
    }
}
