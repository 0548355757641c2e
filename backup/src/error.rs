//! The one error type of this crate and its sub-enums.
//!
//! Messages name the problem and the next step. None of them contains key
//! material, passphrases, identity text or file contents: the only values
//! they carry are sizes, versions, work factors, paths inside the archive,
//! recipient strings (public keys) and paths on disk.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong in `moat-backup`.
///
/// Classification for callers (see `docs/formats/backup.md`):
///
/// * bad input file, fatal for that file: [`NotABackup`](Self::NotABackup),
///   [`Truncated`](Self::Truncated), [`Damaged`](Self::Damaged),
///   [`TooLarge`](Self::TooLarge), [`UnsafePath`](Self::UnsafePath),
///   [`UnsafeMode`](Self::UnsafeMode),
///   [`UnsupportedVersion`](Self::UnsupportedVersion),
///   [`UnsupportedAgeFormat`](Self::UnsupportedAgeFormat),
///   [`ExcessiveWork`](Self::ExcessiveWork);
/// * ask the operator for another key: [`WrongIdentity`](Self::WrongIdentity),
///   [`WrongPassphrase`](Self::WrongPassphrase),
///   [`NeedsIdentity`](Self::NeedsIdentity),
///   [`NeedsPassphrase`](Self::NeedsPassphrase),
///   [`EmptyPassphrase`](Self::EmptyPassphrase),
///   [`InvalidIdentity`](Self::InvalidIdentity),
///   [`NoIdentity`](Self::NoIdentity);
/// * origin (format 2 signature, and the operator's pin):
///   [`Origin`](Self::Origin);
/// * operator input when writing: [`NoRecipients`](Self::NoRecipients),
///   [`InvalidRecipient`](Self::InvalidRecipient);
/// * caller misuse of [`write_backup`](crate::write_backup):
///   [`InvalidInput`](Self::InvalidInput);
/// * restore target: [`TargetNotEmpty`](Self::TargetNotEmpty),
///   [`InvalidTarget`](Self::InvalidTarget);
/// * the environment: [`Io`](Self::Io), [`Read`](Self::Read),
///   [`Write`](Self::Write), [`SyncAfterRestore`](Self::SyncAfterRestore),
///   [`Random`](Self::Random), [`Internal`](Self::Internal).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The input starts neither with the moat backup marker nor with an age
    /// header.
    #[error(
        "this is not a moat backup (it starts neither with the MOATBACKUP marker nor with a binary age header): check that the right file was given"
    )]
    NotABackup,

    /// The input ends before the backup does: an incomplete copy.
    ///
    /// For an encrypted backup this is reported when the file ends inside
    /// the age header, or exactly at the boundary of an encrypted chunk, or
    /// when the decrypted payload ends early. A file cut *inside* an
    /// encrypted chunk cannot be told apart from a modified one and is
    /// reported as [`Damaged`](Self::Damaged) with
    /// [`Damage::Encryption`].
    #[error(
        "the backup is truncated: it ends inside the {at}; the copy is incomplete (interrupted transfer or full disk): use a complete copy of the backup"
    )]
    Truncated {
        /// Where the data ran out.
        at: Section,
    },

    /// The backup fails an integrity check.
    #[error(
        "the backup is damaged or was modified ({reason}): do not restore from it; use another copy of the backup"
    )]
    Damaged {
        /// Which check failed.
        reason: Damage,
    },

    /// None of the given identities can decrypt this backup (age
    /// `NoMatchingKeys`).
    #[error(
        "this backup is not encrypted to any identity in the given identity file(s): pass the identity file whose public key (age1…) was given to `moat backup --recipient`"
    )]
    WrongIdentity,

    /// The backup is encrypted with a passphrase but none was given.
    #[error(
        "this backup is encrypted with a passphrase, not to an identity: supply the passphrase it was written with"
    )]
    NeedsPassphrase,

    /// The backup is encrypted to age recipients but no identity was given.
    #[error(
        "this backup is encrypted to age recipients: supply an identity file (--identity) holding the secret key of one of them"
    )]
    NeedsIdentity,

    /// The passphrase does not decrypt this backup.
    #[error(
        "wrong passphrase for this backup: supply the passphrase given to `moat backup --passphrase`"
    )]
    WrongPassphrase,

    /// An empty passphrase was given.
    #[error("the passphrase is empty: enter a non-empty passphrase")]
    EmptyPassphrase,

    /// The passphrase stanza asks for more scrypt work than
    /// [`MAX_SCRYPT_WORK_FACTOR`](crate::MAX_SCRYPT_WORK_FACTOR) allows.
    /// Checked before scrypt runs.
    #[error(
        "the backup's passphrase asks for scrypt work factor {found}, above this build's limit of {max}: refusing to run it (it would take minutes and gigabytes of memory); the backup was not written by moat or was tampered with"
    )]
    ExcessiveWork {
        /// The work factor (log2 N) in the file.
        found: u8,
        /// The largest accepted.
        max: u8,
    },

    /// A size or count in the backup is above this build's limit. Checked
    /// before anything of that size is allocated.
    #[error(
        "the backup's {what} is {found}, above this build's limit of {max}: refusing to read it; the backup was not written by moat or is damaged"
    )]
    TooLarge {
        /// Which limit.
        what: Limit,
        /// The value found (a size in bytes or a count). For
        /// [`Limit::AgeHeader`], the limit plus one: reading stops there.
        found: u64,
        /// The limit.
        max: u64,
    },

    /// A path in the archive could escape the restore directory or clash
    /// with another entry.
    #[error(
        "the backup holds an unsafe path {path:?} ({reason}): refusing to use it; the backup was not written by moat or was tampered with"
    )]
    UnsafePath {
        /// The path as stored (lossily decoded if it is not UTF-8).
        path: String,
        /// What is wrong with it.
        reason: PathProblem,
    },

    /// A file in the archive has mode bits other than the permission bits
    /// (setuid, setgid, sticky or a file type).
    #[error(
        "the backup gives {path:?} the mode {mode:o}, which has bits beyond rwxrwxrwx: refusing to restore it; the backup was not written by moat or was tampered with"
    )]
    UnsafeMode {
        /// The path in the archive.
        path: String,
        /// The mode found.
        mode: u32,
    },

    /// The backup's origin does not verify, or is not the cluster the
    /// operator expects.
    #[error("{0}")]
    Origin(#[from] OriginError),

    /// The backup was written in a format version this build does not read.
    #[error(
        "the backup uses format version {found}; this build reads versions 1 to {supported}: use the moat release that wrote it, or a newer one"
    )]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// The backup is an age file of a version this build of age does not
    /// read.
    #[error(
        "the backup is an age file of an unknown version: use the moat release that wrote it, or a newer one"
    )]
    UnsupportedAgeFormat,

    /// [`Protection::Recipients`](crate::Protection::Recipients) was given
    /// an empty list.
    #[error("no recipients were given: pass at least one age recipient (age1…) or a passphrase")]
    NoRecipients,

    /// A recipient string is not an age X25519 recipient.
    #[error(
        "{recipient:?} is not an age X25519 recipient ({reason}): pass a public key of the form age1…, as printed by `age-keygen -y IDENTITY_FILE`"
    )]
    InvalidRecipient {
        /// The string given, shortened to 100 characters, or a placeholder
        /// when it looked like a secret key (never echoed).
        recipient: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A line of an identity file is not an age X25519 identity. The line is
    /// not echoed: it may be a secret key.
    #[error(
        "line {line} of the identity file is not an age X25519 identity ({reason}): the file must hold AGE-SECRET-KEY-1… lines, with '#' comments and blank lines allowed"
    )]
    InvalidIdentity {
        /// One-based line number.
        line: usize,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// An identity file holds no identity at all.
    #[error(
        "the identity file holds no identity: pass a file with an AGE-SECRET-KEY-1… line, as written by age-keygen"
    )]
    NoIdentity,

    /// [`write_backup`](crate::write_backup) was given a manifest or files it
    /// cannot archive: a bug in the caller, not bad operator input.
    #[error("cannot write the backup: {0}")]
    InvalidInput(#[from] InputError),

    /// The restore target exists and is not empty.
    #[error("{} is not empty; restore into a new or empty directory", path.display())]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },

    /// The restore target cannot be used.
    #[error("cannot restore into {}: it {reason}; give a new or empty directory", path.display())]
    InvalidTarget {
        /// The target path.
        path: PathBuf,
        /// Why, e.g. `exists and is not a directory`.
        reason: &'static str,
    },

    /// A file-system operation failed during restore.
    #[error("could not {action} {}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done, e.g. `write`, `create the directory`.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The restored files were moved into place but syncing the parent
    /// directory failed: they may not survive a crash.
    #[error(
        "the restored files are in place in {}, but syncing its parent directory failed, so they may not survive a crash: run `sync` before relying on them",
        path.display()
    )]
    SyncAfterRestore {
        /// The restored directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Reading the backup failed for a reason other than its content.
    #[error("could not read the backup")]
    Read {
        /// The error from the reader.
        #[source]
        source: std::io::Error,
    },

    /// Writing the backup failed. The output is incomplete and must be
    /// discarded.
    #[error("could not write the backup; the output is incomplete and must be discarded")]
    Write {
        /// The error from the writer.
        #[source]
        source: std::io::Error,
    },

    /// The operating system's random number generator failed.
    #[error(
        "the operating system's random number generator failed: check that getrandom(2) or /dev/urandom works"
    )]
    Random,

    /// A library reported an error that validated inputs cannot cause. This
    /// is a bug in moat.
    #[error("internal failure in {what}: this is a bug in moat, please report it")]
    Internal {
        /// Which operation.
        what: &'static str,
    },
}

/// Where a truncated backup ran out of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Section {
    /// The first bytes (marker or age header line).
    Start,
    /// The age header or the nonce after it.
    AgeHeader,
    /// The encrypted payload (at a chunk boundary).
    Payload,
    /// The manifest or its length.
    Manifest,
    /// The origin block (format 2) or its length.
    Origin,
    /// A file record: count, path, mode or length.
    FileRecord,
    /// The contents of a file.
    FileData,
    /// The trailer checksum.
    Trailer,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Start => "first bytes",
            Section::AgeHeader => "age header",
            Section::Payload => "encrypted payload",
            Section::Manifest => "manifest",
            Section::Origin => "signature block",
            Section::FileRecord => "file records",
            Section::FileData => "file contents",
            Section::Trailer => "trailer checksum",
        })
    }
}

/// Which integrity check a damaged backup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// age could not authenticate an encrypted chunk: it was modified, or
    /// the file was cut inside a chunk.
    Encryption,
    /// The age header is malformed or its MAC does not match.
    AgeHeader,
    /// The SHA-256 trailer does not match the payload.
    Trailer,
    /// There are bytes after the trailer.
    TrailingData,
    /// The manifest is not valid JSON of the expected shape. The text is the
    /// JSON parser's message (positions and field names, never content of
    /// the state files).
    Manifest(String),
    /// The manifest's file list does not match the files in the archive.
    ManifestMismatch {
        /// The path in question (empty when the counts differ).
        path: String,
        /// Which field differs: `count`, `path`, `mode`, `length`, `sha256`.
        field: &'static str,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Encryption => f.write_str(
                "age authentication failed: an encrypted chunk was modified, or the file was cut inside one",
            ),
            Damage::AgeHeader => f.write_str("the age header is malformed or its MAC does not match"),
            Damage::Trailer => f.write_str("the SHA-256 trailer does not match the contents"),
            Damage::TrailingData => f.write_str("there is data after the end of the backup"),
            Damage::Manifest(detail) => write!(f, "the manifest is invalid: {detail}"),
            Damage::ManifestMismatch { path, field } if path.is_empty() => {
                write!(f, "the manifest's {field} does not match the archive")
            }
            Damage::ManifestMismatch { path, field } => {
                write!(f, "the {field} of {path:?} does not match the manifest")
            }
        }
    }
}

/// A limit that a backup can exceed (see the `MAX_*` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Manifest size in bytes ([`MAX_MANIFEST_LEN`](crate::MAX_MANIFEST_LEN)).
    ManifestSize,
    /// Number of files ([`MAX_FILES`](crate::MAX_FILES)).
    FileCount,
    /// Size of one file in bytes ([`MAX_FILE_LEN`](crate::MAX_FILE_LEN)).
    FileSize,
    /// Size of all files together in bytes
    /// ([`MAX_TOTAL_LEN`](crate::MAX_TOTAL_LEN)).
    TotalSize,
    /// Length of one path in bytes ([`MAX_PATH_LEN`](crate::MAX_PATH_LEN)).
    PathLength,
    /// Size of the age header in bytes
    /// ([`MAX_AGE_HEADER_LEN`](crate::MAX_AGE_HEADER_LEN)).
    AgeHeader,
    /// Size of the origin block in bytes
    /// ([`MAX_ORIGIN_LEN`](crate::MAX_ORIGIN_LEN)).
    OriginSize,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::ManifestSize => "manifest size in bytes",
            Limit::FileCount => "number of files",
            Limit::FileSize => "size of one file in bytes",
            Limit::TotalSize => "total size of the files in bytes",
            Limit::PathLength => "length of one path in bytes",
            Limit::AgeHeader => "age header size in bytes",
            Limit::OriginSize => "signature block size in bytes",
        })
    }
}

/// What is wrong with a path in the archive. Paths are relative,
/// `/`-separated, UTF-8, and name files below the restore directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathProblem {
    /// The path is empty.
    Empty,
    /// The path starts with `/`.
    Absolute,
    /// The path has an empty component (`a//b`, trailing `/`).
    EmptyComponent,
    /// The path has a `.` component.
    DotComponent,
    /// The path has a `..` component.
    ParentComponent,
    /// The path contains a NUL byte.
    Nul,
    /// The path is not valid UTF-8.
    NotUtf8,
    /// Two files have the same path.
    Duplicate,
    /// The path is a file and also a directory of another file's path
    /// (`a` and `a/b`).
    FileIsDirectory,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "it is empty",
            PathProblem::Absolute => "it is absolute",
            PathProblem::EmptyComponent => "it has an empty component",
            PathProblem::DotComponent => "it has a '.' component",
            PathProblem::ParentComponent => "it has a '..' component",
            PathProblem::Nul => "it contains a NUL byte",
            PathProblem::NotUtf8 => "it is not valid UTF-8",
            PathProblem::Duplicate => "it appears twice",
            PathProblem::FileIsDirectory => "it is a file and also the directory of another file",
        })
    }
}

/// Why [`write_backup`](crate::write_backup) refused its input. These are
/// bugs in the caller (the daemon gathered something it must not archive),
/// so they are separate from the same problems found in a backup file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The manifest's `format` is not the version this build writes.
    #[error("the manifest says format {found}, this build writes format {supported}")]
    FormatVersion {
        /// The value in the manifest.
        found: u32,
        /// [`FORMAT_VERSION`](crate::FORMAT_VERSION).
        supported: u32,
    },
    /// The signer would make a backup that a reader refuses (its
    /// certificate is not a valid manager certificate of the manifest's
    /// cluster and node at `created_at`, or its key is not the
    /// certificate's).
    #[error("this manager cannot sign the backup: {0}")]
    Signer(OriginError),
    /// A file path is unsafe or clashes with another.
    #[error("the file path {path:?} is not allowed ({reason})")]
    UnsafePath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: PathProblem,
    },
    /// A file mode has bits beyond `0o777`.
    #[error("the mode {mode:o} of {path:?} has bits beyond rwxrwxrwx")]
    UnsafeMode {
        /// The path given.
        path: String,
        /// The mode given.
        mode: u32,
    },
    /// A size or count is above the limit a reader accepts.
    #[error("the {what} is {found}, above the limit of {max} that readers accept")]
    TooLarge {
        /// Which limit.
        what: Limit,
        /// The value.
        found: u64,
        /// The limit.
        max: u64,
    },
}

/// Why a backup's origin was refused: its signature (format 2) does not
/// verify, or it is not from the cluster the operator expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// The root bundle in the backup is not a moat root bundle.
    #[error(
        "the backup's root CA bundle is unusable ({0}): the backup was not written by moat or was tampered with"
    )]
    Roots(moat_pki::CertError),
    /// The roots serve another cluster than the manifest names.
    #[error(
        "the backup says it is of cluster {manifest} but carries the roots of cluster {roots}: it was tampered with"
    )]
    ClusterMismatch {
        /// The manifest's `cluster_id`.
        manifest: String,
        /// The roots' cluster.
        roots: String,
    },
    /// The signer's chain does not lead to the roots, is not valid when the
    /// backup was taken, or names another cluster.
    #[error(
        "the backup's signer certificate was rejected ({0}): the backup was not made by a manager of the cluster it names; do not restore from it"
    )]
    Certificate(moat_pki::CertError),
    /// The signer holds a worker certificate.
    #[error(
        "the backup was signed by {node}, which holds a {role} certificate; only managers make backups: do not restore from it"
    )]
    NotAManager {
        /// The signer.
        node: String,
        /// Its role.
        role: moat_pki::Role,
    },
    /// The manifest names another node than the signer's certificate.
    #[error(
        "the backup says it was taken from {named}, but it was signed by {certified}: it was tampered with; do not restore from it"
    )]
    WrongSigner {
        /// The manifest's `node_id`.
        named: String,
        /// The certificate's node id.
        certified: String,
    },
    /// The signature does not verify: the manifest, the roots or the
    /// signature were changed.
    #[error(
        "the backup's signature does not verify: it was modified after the manager signed it; do not restore from it, use another copy"
    )]
    BadSignature,
    /// The origin block is malformed.
    #[error("the backup's signature block is malformed ({reason}): do not restore from it")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The operator expects a cluster, but the backup (format 1) is not
    /// signed.
    #[error(
        "this backup is unsigned (format 1, written before moat signed backups), so nothing proves it comes from cluster {expected}: if you know where this file came from, pass --trust-any-cluster instead of --expect-cluster"
    )]
    Unsigned {
        /// The expected cluster.
        expected: String,
    },
    /// The backup is from another cluster than the one expected.
    #[error(
        "this backup is of cluster {found}, not of cluster {expected}: refusing to restore another cluster's backup; check that the right file was given (pass --expect-cluster {found} only if you mean to restore that cluster)"
    )]
    WrongCluster {
        /// The expected cluster.
        expected: String,
        /// The backup's cluster.
        found: String,
    },
    /// The backup's chain does not lead to the pinned root.
    #[error(
        "this backup was signed under root {found}, not under the expected root {expected}: it was not made by your cluster's CA; do not restore from it"
    )]
    WrongRoot {
        /// The pinned fingerprint.
        expected: String,
        /// The roots the signer's chain leads to.
        found: String,
    },
}
