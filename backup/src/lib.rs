//! moat backup files: a manager's state files plus a manifest, signed by
//! that manager, framed with a checksum, encrypted with age, and restored
//! all-or-nothing.
//!
//! This crate owns the backup file format and nothing else: the daemon
//! gathers the files (already-sealed key files, the sealed store snapshot,
//! `node.json`, PEM certificates and, only when autolock is off, the
//! plaintext `unlock.key`) and the CLI handles flags, prompts and output
//! files. It **never writes a backup unencrypted unless asked to by name**
//! ([`Protection::InsecurePlaintext`]), never restores a file outside the
//! target directory, never leaves a partial restore behind, never reads an
//! unbounded length from a file before checking it, and never puts secret
//! bytes (file contents, identities, passphrases) in an error or a `Debug`
//! output, and never returns a signed backup whose signature it has not
//! verified. It writes no cryptography of its own: encryption is age 0.12
//! (X25519 recipients or scrypt passphrases, binary format), SHA-256 and
//! randomness come from `ring`, signatures and certificate checks from
//! `moat-pki`, the only moat crate it may call.
//!
//! # API
//!
//! * [`write_backup`]`(out, manifest, &files, protection, &signer) -> Result<Manifest>`
//!   signs the manifest with the manager's key ([`Signer`]), streams a
//!   backup to `out` and returns the manifest with [`Manifest::files`]
//!   filled in.
//! * [`read_backup`]`(input, &unprotect) -> Result<Backup>` reads and
//!   verifies everything (age authentication, trailer, manifest, per-file
//!   length and SHA-256, paths, modes, limits, the signature) before
//!   returning; [`Backup::origin`] says who signed, and
//!   [`Backup::check_trust`] checks that against what the operator
//!   expects ([`Trust`]). `read_backup(&bytes[..], &Unprotect::None)` is
//!   the fuzzing entry point: it never panics.
//! * [`restore_into`]`(&backup, dir)` writes the files into a new or empty
//!   directory, atomically.
//! * [`parse_identity_file`] parses an age identity file; [`detect`] tells an
//!   encrypted backup from a plaintext one by its first bytes.
//!
//! # Format, version 2
//!
//! The **payload** is this crate's own framing. Integers are big-endian.
//!
//! | field | size | notes |
//! |-------|-----:|-------|
//! | magic line | 12 | ASCII `MOATBACKUP2\n`; the digit is the format version |
//! | manifest length *m* | 4 | u32, at most [`MAX_MANIFEST_LEN`] |
//! | manifest | *m* | UTF-8 JSON [`Manifest`], `format` = 2 |
//! | origin length *o* | 4 | u32, at most [`MAX_ORIGIN_LEN`] |
//! | origin | *o* | UTF-8 JSON: roots, signer chain, signature (see `origin.rs`) |
//! | file count *n* | 4 | u32, at most [`MAX_FILES`]; equals the manifest's file count |
//! | *n* file records: | | in manifest order |
//! | · path length *p* | 2 | u16, at most [`MAX_PATH_LEN`] |
//! | · path | *p* | UTF-8, relative, `/`-separated, no empty, `.` or `..` component, no NUL |
//! | · mode | 4 | u32, permission bits only (at most `0o777`) |
//! | · data length *d* | 8 | u64, at most [`MAX_FILE_LEN`]; all files together at most [`MAX_TOTAL_LEN`] |
//! | · data | *d* | the file's bytes |
//! | trailer | 32 | SHA-256 over every byte above, from the magic on |
//!
//! Nothing may follow the trailer. The manifest repeats each file's path,
//! mode, length and lower-case hex SHA-256, so `moat backup inspect` can
//! list the contents and the reader can check each file twice; the
//! origin's signature covers the manifest, hence every file. Format 1 is
//! the same without the origin fields: still read, as [`Origin::Unsigned`].
//!
//! An **encrypted backup** is the payload inside a binary (not armored) age
//! v1 file, to one or more X25519 recipients (`age1…`) or to one scrypt
//! passphrase. age authenticates the header with a MAC and the payload in
//! 64 KiB chunks (STREAM), the last chunk flagged, so reordering, cutting
//! and modification are all detected; the inner checks are kept anyway. A
//! **plaintext backup** (`--insecure-plaintext`) is the payload alone: its
//! trailer and manifest still detect truncation and accidental damage, but
//! not a deliberate edit (anyone can recompute a SHA-256).
//!
//! # Reading: order of checks and what each failure means
//!
//! 1. The first [`DETECT_LEN`] bytes: `age-encryption.org/` (encrypted) or
//!    `MOATBACKUP` (plaintext); a short prefix of either is
//!    [`BackupError::Truncated`], anything else
//!    [`BackupError::NotABackup`].
//! 2. Encrypted: the age header, at most [`MAX_AGE_HEADER_LEN`] bytes
//!    ([`BackupError::TooLarge`]); then the key: a passphrase file needs
//!    [`Unprotect::Passphrase`] ([`BackupError::NeedsPassphrase`]), a
//!    recipient file needs [`Unprotect::Identities`]
//!    ([`BackupError::NeedsIdentity`]); scrypt work above
//!    [`MAX_SCRYPT_WORK_FACTOR`] is [`BackupError::ExcessiveWork`] before
//!    scrypt runs; no matching identity is [`BackupError::WrongIdentity`]; a
//!    wrong passphrase is [`BackupError::WrongPassphrase`]; a bad header MAC
//!    is [`BackupError::Damaged`] ([`Damage::AgeHeader`]). Plaintext
//!    backups ignore `unprotect`.
//! 3. The payload, streamed: every length is checked against its limit
//!    before use ([`BackupError::TooLarge`]) and buffers grow only as data
//!    arrives, so a forged length costs nothing.
//! 4. The trailer ([`Damage::Trailer`]), then end of input
//!    ([`Damage::TrailingData`]).
//! 5. The manifest: its `format` ([`BackupError::UnsupportedVersion`]), its
//!    shape ([`Damage::Manifest`]); every path and mode
//!    ([`BackupError::UnsafePath`], [`BackupError::UnsafeMode`]); every file
//!    against its manifest entry ([`Damage::ManifestMismatch`]).
//! 6. The origin (format 2): roots, signer chain at `created_at`, manager
//!    role, node and cluster, signature ([`BackupError::Origin`]).
//!
//! Truncation, precisely: a file that ends inside the age header or nonce,
//! exactly at an encrypted-chunk boundary, or (plaintext) anywhere before
//! the end of the trailer is [`BackupError::Truncated`]. A file cut
//! *inside* an encrypted chunk is indistinguishable, for age, from a
//! modified last chunk and is [`BackupError::Damaged`] with
//! [`Damage::Encryption`]. A modified length field in a plaintext backup can
//! also surface as `Truncated` or `TooLarge` instead of `Damaged`; either
//! way the backup is rejected. A modified recipient stanza in the age
//! header makes the key unusable and surfaces as
//! [`BackupError::WrongIdentity`].
//!
//! # Restore
//!
//! [`restore_into`] writes every file into a sibling temporary directory
//! `.NAME.restoring-<random>` (files with their recorded mode, directories
//! 0700, each fsynced), renames it onto the target and fsyncs the parent.
//! The target must not exist or be an empty directory. On failure the
//! temporary directory is removed and the target is untouched. The
//! restored directory is 0700 whatever mode an empty target had.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod check;
mod crypt;
mod error;
mod frame;
mod origin;
mod restore;
#[cfg(test)]
mod tests;

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::check::{Limits, check_files};
use crate::frame::Source;

pub use crate::crypt::AgeIdentity;
pub use crate::error::{BackupError, Damage, InputError, Limit, OriginError, PathProblem, Section};
pub use crate::origin::{MAX_ORIGIN_LEN, ORIGIN_SIGNING_CONTEXT, Origin, SignedBy, Signer, Trust};

/// The format version this build writes, in the magic line and in
/// [`Manifest::format`]. It reads 1 (unsigned) and 2 (signed).
pub const FORMAT_VERSION: u32 = 2;
/// Largest manifest accepted, in bytes (4 MiB: room for [`MAX_FILES`]
/// entries with paths of a few hundred bytes).
pub const MAX_MANIFEST_LEN: u64 = 4 << 20;
/// Most files in one backup.
pub const MAX_FILES: u64 = 10_000;
/// Largest single file, in bytes (512 MiB).
pub const MAX_FILE_LEN: u64 = 512 << 20;
/// Largest total of all files, in bytes (2 GiB).
pub const MAX_TOTAL_LEN: u64 = 2 << 30;
/// Longest path inside the archive, in bytes.
pub const MAX_PATH_LEN: u64 = 1024;
/// Largest age header accepted, in bytes (several hundred recipients).
pub const MAX_AGE_HEADER_LEN: u64 = 64 << 10;
/// Largest scrypt work factor (log2 N) accepted when decrypting a
/// passphrase backup: 2^22 iterations take about 4 GiB of memory and a few
/// seconds. age's default when encrypting targets about one second on the
/// writing machine, typically 18 to 20.
pub const MAX_SCRYPT_WORK_FACTOR: u8 = 22;
/// How many leading bytes [`detect`] needs to decide.
pub const DETECT_LEN: usize = AGE_MAGIC.len();

const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// What a backup holds besides the files. Stored as JSON inside the
/// archive; not secret (in an encrypted backup it is encrypted too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, [`FORMAT_VERSION`].
    pub format: u32,
    /// The moat version that wrote the backup.
    pub moat_version: String,
    /// The cluster.
    pub cluster_id: String,
    /// The manager the backup was taken from.
    pub node_id: String,
    /// When it was taken, Unix seconds.
    pub created_at: i64,
    /// Last applied Raft log index captured.
    pub raft_index: u64,
    /// Term of that entry.
    pub raft_term: u64,
    /// Nodes in the cluster at the time.
    pub nodes: u32,
    /// Managers in the cluster at the time.
    pub managers: u32,
    /// Whether autolock was on (if off, the backup holds `unlock.key`).
    pub autolock: bool,
    /// The files, in archive order. Filled in by [`write_backup`]; whatever
    /// the caller put here is replaced.
    pub files: Vec<FileEntry>,
}

/// One file as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative `/`-separated path.
    pub path: String,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the contents, lower-case hex.
    pub sha256: String,
    /// Permission bits (at most `0o777`).
    pub mode: u32,
}

/// One file to archive, or one read back. `Debug` shows the path, mode and
/// length, never the data.
#[derive(Clone)]
pub struct BackupFile {
    /// Relative `/`-separated path: no empty, `.` or `..` component, no NUL,
    /// at most [`MAX_PATH_LEN`] bytes.
    pub path: String,
    /// Permission bits, at most `0o777` (use 0600 for secrets).
    pub mode: u32,
    /// The contents, wiped on drop.
    pub data: Zeroizing<Vec<u8>>,
}

impl BackupFile {
    /// A file entry.
    pub fn new(path: impl Into<String>, mode: u32, data: Zeroizing<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            mode,
            data,
        }
    }
}

impl std::fmt::Debug for BackupFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("len", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// How [`write_backup`] protects the backup.
#[non_exhaustive]
pub enum Protection {
    /// Encrypt to these age X25519 recipients (`age1…`); at least one.
    Recipients(Vec<String>),
    /// Encrypt with this passphrase (age scrypt, age's default work
    /// factor). Must not be empty.
    Passphrase(Zeroizing<String>),
    /// Write the payload unencrypted: anyone who can read the file gets the
    /// node's secrets. Only for `--insecure-plaintext`.
    InsecurePlaintext,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Protection::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            Protection::Passphrase(_) => f.write_str("Passphrase(…)"),
            Protection::InsecurePlaintext => f.write_str("InsecurePlaintext"),
        }
    }
}

/// What [`read_backup`] may use to decrypt.
#[non_exhaustive]
pub enum Unprotect {
    /// The contents of age identity files (see [`parse_identity_file`]).
    Identities(Vec<Zeroizing<String>>),
    /// The passphrase.
    Passphrase(Zeroizing<String>),
    /// No key: only a plaintext backup can be read.
    None,
}

impl std::fmt::Debug for Unprotect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unprotect::Identities(v) => write!(f, "Identities({} file(s), …)", v.len()),
            Unprotect::Passphrase(_) => f.write_str("Passphrase(…)"),
            Unprotect::None => f.write_str("None"),
        }
    }
}

/// How a backup that was read had been protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encryption {
    /// age, to X25519 recipients.
    Recipients,
    /// age, with a scrypt passphrase.
    Passphrase,
    /// Not encrypted (`--insecure-plaintext`).
    Plaintext,
}

/// A backup read and fully verified by [`read_backup`].
#[derive(Debug, Clone)]
pub struct Backup {
    /// The manifest; its file list matches [`Backup::files`] entry by entry.
    pub manifest: Manifest,
    /// The files, in archive order.
    pub files: Vec<BackupFile>,
    /// How the backup was protected.
    pub encryption: Encryption,
    /// Who made it: a verified manager signature (format 2), or nothing
    /// (format 1). Check it against what the operator expects with
    /// [`Backup::check_trust`] before restoring.
    pub origin: Origin,
}

impl Backup {
    /// Checks the backup's origin against what the operator trusts: with
    /// [`Trust::Cluster`], a signed backup of that cluster (and root, if
    /// pinned), never an unsigned one; with [`Trust::AnyCluster`],
    /// anything that [`read_backup`] accepted.
    pub fn check_trust(&self, trust: &Trust) -> Result<(), BackupError> {
        origin::check_trust(&self.origin, trust).map_err(BackupError::Origin)
    }

    /// The file at `path`, if the backup holds one.
    pub fn file(&self, path: &str) -> Option<&BackupFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A binary age file (an encrypted backup, or some other age file).
    Encrypted,
    /// A plaintext moat backup.
    Plaintext,
}

/// Tells an encrypted backup from a plaintext one by its first bytes (pass
/// at least [`DETECT_LEN`]). `None`: not a moat backup, or too few bytes.
pub fn detect(prefix: &[u8]) -> Option<Kind> {
    if prefix.starts_with(AGE_MAGIC) {
        Some(Kind::Encrypted)
    } else if prefix.starts_with(frame::MAGIC) {
        Some(Kind::Plaintext)
    } else {
        None
    }
}

/// Writes a backup of `files` described by `manifest` to `out`, protected
/// as `protection` says, and returns the manifest with its file list
/// filled in.
///
/// The output is streamed: only age's 64 KiB chunk and a 64 KiB write
/// buffer are held besides `files`. Everything is checked before the first
/// byte is written: the manifest's `format` must be [`FORMAT_VERSION`],
/// files must satisfy the limits, paths and modes a reader enforces
/// ([`BackupError::InvalidInput`]), recipients must parse
/// ([`BackupError::NoRecipients`], [`BackupError::InvalidRecipient`]), a
/// passphrase must not be empty. age's `finish()` is always called and `out`
/// is flushed; durability is the caller's: write to a temporary file,
/// fsync it, rename it. After an error the output is incomplete and must
/// be discarded.
pub fn write_backup<W: Write>(
    out: W,
    manifest: Manifest,
    files: &[BackupFile],
    protection: Protection,
    signer: &Signer,
) -> Result<Manifest, BackupError> {
    write_with(
        out,
        manifest,
        files,
        &protection,
        signer,
        &Limits::DEFAULT,
        None,
    )
}

/// Reads a backup from `input` and verifies all of it (see the crate docs
/// for the order of checks), including its origin signature (format 2);
/// which cluster it is from is the caller's to check, with
/// [`Backup::check_trust`]. Memory use is bounded by the `MAX_*` limits.
///
/// Never panics, whatever the input: this is the entry point for fuzzing
/// (`read_backup(&bytes[..], &Unprotect::None)`).
pub fn read_backup<R: Read>(input: R, unprotect: &Unprotect) -> Result<Backup, BackupError> {
    read_with(input, unprotect, &Limits::DEFAULT)
}

/// Restores `backup` into `dir`, all or nothing.
///
/// `dir` must not exist or be an empty directory (else
/// [`BackupError::TargetNotEmpty`] or [`BackupError::InvalidTarget`]); its
/// parent must exist. The files are written into a temporary sibling
/// directory, fsynced, and renamed onto `dir`; on any error before that
/// rename the temporary directory is removed and `dir` is left as it was.
/// If only the final fsync of the parent fails, the files are in place and
/// the error is [`BackupError::SyncAfterRestore`]. Paths and modes are
/// checked again, since [`Backup`]'s fields are public.
pub fn restore_into(backup: &Backup, dir: &Path) -> Result<(), BackupError> {
    restore::restore(backup, dir, &mut |_| Ok(()))
}

/// Parses the text of an age identity file: `AGE-SECRET-KEY-1…` lines,
/// blank lines and `#` comments. Errors name the line, never its text;
/// a file with no identity is [`BackupError::NoIdentity`].
pub fn parse_identity_file(text: &str) -> Result<Vec<AgeIdentity>, BackupError> {
    crypt::parse_identity_file(text)
}

pub(crate) fn write_with<W: Write>(
    out: W,
    mut manifest: Manifest,
    files: &[BackupFile],
    protection: &Protection,
    signer: &Signer,
    limits: &Limits,
    scrypt_work_factor: Option<u8>,
) -> Result<Manifest, BackupError> {
    if manifest.format != FORMAT_VERSION {
        return Err(InputError::FormatVersion {
            found: manifest.format,
            supported: FORMAT_VERSION,
        }
        .into());
    }
    check_files(
        files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.data.len() as u64)),
        limits,
    )
    .map_err(|e| e.in_input())?;
    manifest.files = files.iter().map(frame::entry_for).collect();
    let json = serde_json::to_vec(&manifest).map_err(|_| BackupError::Internal {
        what: "manifest serialization",
    })?;
    Limits::check(Limit::ManifestSize, json.len() as u64, limits.manifest)
        .map_err(|e| e.in_input())?;
    let origin_json = origin::sign(signer, &json, &manifest).map_err(InputError::Signer)?;

    let encryptor = match protection {
        Protection::Recipients(list) => Some(crypt::encryptor_for_recipients(list)?),
        Protection::Passphrase(p) => Some(crypt::encryptor_for_passphrase(p, scrypt_work_factor)?),
        Protection::InsecurePlaintext => None,
    };

    let werr = |source| BackupError::Write { source };
    let out = BufWriter::with_capacity(64 * 1024, out);
    let out = match encryptor {
        Some(encryptor) => {
            let stream = encryptor.wrap_output(out).map_err(werr)?;
            frame::write_payload(stream, &json, &origin_json, files)
                .map_err(werr)?
                .finish()
                .map_err(werr)?
        }
        None => frame::write_payload(out, &json, &origin_json, files).map_err(werr)?,
    };
    let mut out = out.into_inner().map_err(|e| werr(e.into_error()))?;
    out.flush().map_err(werr)?;
    Ok(manifest)
}

pub(crate) fn read_with<R: Read>(
    input: R,
    unprotect: &Unprotect,
    limits: &Limits,
) -> Result<Backup, BackupError> {
    let mut input = BufReader::new(input);
    let mut prefix = [0u8; DETECT_LEN];
    let n = read_up_to(&mut input, &mut prefix).map_err(|source| BackupError::Read { source })?;
    let prefix = &prefix[..n];
    let kind = match detect(prefix) {
        Some(kind) => kind,
        None if n < DETECT_LEN
            && (AGE_MAGIC.starts_with(prefix) || frame::MAGIC.starts_with(prefix)) =>
        {
            return Err(BackupError::Truncated { at: Section::Start });
        }
        None => return Err(BackupError::NotABackup),
    };
    let input = prefix.chain(input);
    let (payload, encryption) = match kind {
        Kind::Plaintext => (
            frame::read_payload(input, Source::Plain, limits)?,
            Encryption::Plaintext,
        ),
        Kind::Encrypted => {
            let (stream, encryption) = crypt::open(input, unprotect, limits.age_header)?;
            (
                frame::read_payload(stream, Source::Age, limits)?,
                encryption,
            )
        }
    };
    let origin = match &payload.origin_json {
        Some(block) => Origin::Signed(origin::verify(
            block,
            &payload.manifest_json,
            &payload.manifest,
        )?),
        None => Origin::Unsigned,
    };
    Ok(Backup {
        manifest: payload.manifest,
        files: payload.files,
        encryption,
        origin,
    })
}

/// Reads until `buf` is full or the input ends; returns the count.
fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
