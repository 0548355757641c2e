//! The one error type of this crate and its sub-enum for unlock-key text.
//!
//! Messages name the problem and the next step. None of them contains key
//! material, passphrases or plaintext: the only values they carry are sizes,
//! versions, KDF parameters, DEK versions and file paths.

use std::fmt;
use std::path::PathBuf;

use crate::dek::DekVersion;
use crate::shamir::SplitInfo;

/// Everything that can go wrong in `moat-lock`.
///
/// Errors from a file are wrapped in [`LockError::File`] (or are
/// [`LockError::Io`]) so that they always name the file; use
/// [`LockError::root`] to look through the wrapper when classifying.
///
/// Classification for callers (see `docs/formats/sealed-blob.md`):
/// [`WrongKey`](Self::WrongKey) and
/// [`KeyKindMismatch`](Self::KeyKindMismatch) mean "ask for another key";
/// [`HeaderDamaged`](Self::HeaderDamaged), [`Tampered`](Self::Tampered),
/// [`Truncated`](Self::Truncated), [`RecordTampered`](Self::RecordTampered)
/// and the other format errors are fatal for that file: retrying with the
/// same input cannot succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// An unlock key in text form could not be parsed.
    #[error(transparent)]
    KeyFormat(#[from] KeyFormatError),

    /// An unlock-key share in text form could not be parsed.
    #[error(transparent)]
    ShareFormat(#[from] ShareFormatError),

    /// [`split_unlock_key`](crate::split_unlock_key) was asked for a split
    /// outside `2 <= K <= N <= 16` (caller misuse, not bad input).
    #[error(
        "a split needs 2 <= K <= N <= 16, got {threshold}/{total}: at least 2 shares must be needed to unlock, no more than are made, and at most 16 are made"
    )]
    SplitParams {
        /// K, the number of shares asked to be needed.
        threshold: u8,
        /// N, the number of shares asked to be made.
        total: u8,
    },

    /// A share given to a [`ShareSet`](crate::ShareSet) belongs to another
    /// split than the shares already collected (another split id, K or N).
    /// Shares of different splits never combine, even for the same key.
    #[error(
        "this share belongs to another split ({found}) than the shares already given ({expected}): give shares of one split only, or clear the collected shares and start again"
    )]
    ShareFromOtherSplit {
        /// The split being collected.
        expected: SplitInfo,
        /// The split the refused share belongs to.
        found: SplitInfo,
    },

    /// A [`ShareSet`](crate::ShareSet) already holds the share with this
    /// index; the new copy was ignored.
    #[error("share {index} of this split was already given: give a different share")]
    DuplicateShare {
        /// The share's index (1..=N).
        index: u8,
    },

    /// [`ShareSet::combine`](crate::ShareSet::combine) was called with fewer
    /// than K shares.
    #[error("need {need} of {total} shares, have {have}")]
    NotEnoughShares {
        /// K, the number of shares needed.
        need: u8,
        /// N, the number of shares in the split.
        total: u8,
        /// How many distinct shares have been given.
        have: u8,
    },

    /// [`ShareSet::combine`](crate::ShareSet::combine) was called before any
    /// share was given.
    #[error("no unlock-key shares have been given yet")]
    NoShares,

    /// A passphrase was empty (caller or operator input).
    #[error("the passphrase is empty: enter a non-empty passphrase")]
    EmptyPassphrase,

    /// [`KdfParams::new`](crate::KdfParams::new) was given a value outside
    /// the documented bounds (caller misuse, not bad stored data).
    #[error(
        "argon2id parameter {param} = {value} is outside the allowed range {min}..={max}: choose a value in that range"
    )]
    KdfParamsOutOfRange {
        /// Which parameter: `m_cost_kib`, `t_cost` or `p_cost`.
        param: &'static str,
        /// The value given.
        value: u32,
        /// Smallest allowed value.
        min: u32,
        /// Largest allowed value.
        max: u32,
    },

    /// Sealed data is larger than [`MAX_BLOB_LEN`](crate::MAX_BLOB_LEN); it
    /// was rejected before any work was done.
    #[error(
        "sealed data is {len} bytes, more than the {max}-byte limit: this is not a moat sealed file, or it is corrupt"
    )]
    TooLarge {
        /// Size found, in bytes.
        len: u64,
        /// The limit, in bytes.
        max: u64,
    },

    /// Sealed data is shorter than the smallest possible sealed blob.
    #[error(
        "sealed data is truncated ({len} bytes, a sealed blob has at least {min}): restore the file from a backup"
    )]
    Truncated {
        /// Size found, in bytes.
        len: usize,
        /// Smallest valid size, in bytes.
        min: usize,
    },

    /// The data does not start with the `MOATSEAL` magic.
    #[error(
        "this is not moat sealed data (the MOATSEAL marker is missing): check that the right file was given"
    )]
    NotSealed,

    /// The blob was written in a format version this build does not read.
    #[error(
        "sealed data uses format version {found}, this build reads version {supported}: upgrade moat, or restore a file written by this version"
    )]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },

    /// The blob names an encryption algorithm this build does not know.
    #[error(
        "sealed data uses unknown encryption algorithm {found}: upgrade moat, or the file is corrupt"
    )]
    UnsupportedAlgorithm {
        /// Algorithm byte found.
        found: u8,
    },

    /// The blob names a key-derivation method this build does not know.
    #[error(
        "sealed data uses unknown key derivation {found}: upgrade moat, or the file is corrupt"
    )]
    UnsupportedKdf {
        /// KDF byte found.
        found: u8,
    },

    /// The header checksum does not match: the file was damaged (disk error,
    /// partial copy, bit rot) or edited.
    #[error(
        "the header of the sealed data is damaged (checksum mismatch): restore the file from a backup"
    )]
    HeaderDamaged,

    /// The header checksum is right but a field holds an impossible value:
    /// the data was not written by moat.
    #[error(
        "the header of the sealed data is invalid ({reason}): it was not written by moat; restore the file from a backup"
    )]
    InvalidHeader {
        /// Which field is wrong.
        reason: &'static str,
    },

    /// The argon2id parameters stored in a blob exceed this build's maximum.
    /// Checked before the KDF runs, so a hostile file cannot make us
    /// allocate gigabytes or spin for minutes.
    #[error(
        "sealed data asks for argon2id work beyond this build's limits (m = {m_cost_kib} KiB, t = {t_cost}, p = {p_cost}): refusing to run it; the file was not written by moat or was tampered with"
    )]
    ExcessiveWork {
        /// Memory cost claimed by the blob, in KiB.
        m_cost_kib: u32,
        /// Time cost claimed by the blob.
        t_cost: u32,
        /// Parallelism claimed by the blob.
        p_cost: u32,
    },

    /// The blob was sealed with one kind of key and another kind was given.
    #[error(
        "this data was sealed with {sealed_with} but {given} was supplied: supply the {sealed_with}"
    )]
    KeyKindMismatch {
        /// What the blob was sealed with.
        sealed_with: KeyKind,
        /// What the caller supplied.
        given: KeyKind,
    },

    /// The key check value does not match: the unlock key or passphrase is
    /// not the one that sealed the data.
    #[error("wrong unlock key or passphrase: supply the one that sealed this data")]
    WrongKey,

    /// Authenticated decryption failed after the key was confirmed right.
    #[error(
        "sealed data is damaged or was tampered with, or was sealed for another node, cluster or purpose: restore it from a backup, or check that it belongs to this node"
    )]
    Tampered,

    /// The plaintext is too large to seal into a blob that can be read back.
    #[error("cannot seal {len} bytes: the limit is {max} bytes")]
    PlaintextTooLarge {
        /// Plaintext size given.
        len: usize,
        /// The largest plaintext accepted.
        max: usize,
    },

    /// An unwrapped DEK blob did not hold exactly 32 bytes: it was sealed by
    /// something other than [`Dek::wrap`](crate::Dek::wrap).
    #[error(
        "the sealed data holds {len} bytes, not a 32-byte data-encryption key: it was not written by Dek::wrap"
    )]
    NotADek {
        /// Size of the unsealed payload.
        len: usize,
    },

    /// [`DekSet::begin_rotation`](crate::DekSet::begin_rotation) was called
    /// while a rotation is already in progress (caller misuse).
    #[error(
        "a DEK rotation to version {pending} is already in progress: complete it before starting another"
    )]
    RotationInProgress {
        /// The pending version.
        pending: DekVersion,
    },

    /// [`DekSet::complete_rotation`](crate::DekSet::complete_rotation) was
    /// called with no rotation in progress (caller misuse).
    #[error("no DEK rotation is in progress: begin one first")]
    NoRotationPending,

    /// The DEK version counter cannot go higher.
    #[error(
        "the DEK version counter is at its maximum ({current}): no further rotation is possible"
    )]
    DekVersionExhausted {
        /// The current version.
        current: DekVersion,
    },

    /// [`DekSet::with_pending`](crate::DekSet::with_pending) was given a
    /// pending DEK whose version is not the current version + 1.
    #[error(
        "pending DEK version {pending} does not follow current version {current}: pass the DEKs that belong together"
    )]
    PendingVersionMismatch {
        /// The current DEK's version.
        current: DekVersion,
        /// The pending DEK's version.
        pending: DekVersion,
    },

    /// A record names a DEK version that this set does not hold.
    #[error(
        "the record was encrypted with DEK version {version}, which is not loaded: load that DEK or restore the record from a peer"
    )]
    UnknownDekVersion {
        /// Version named by the record.
        version: DekVersion,
    },

    /// A record is shorter than version + nonce + tag.
    #[error(
        "the encrypted record is truncated ({len} bytes, at least {min} expected): restore it from a peer or a backup"
    )]
    RecordTruncated {
        /// Size found.
        len: usize,
        /// Smallest valid size.
        min: usize,
    },

    /// Authenticated decryption of a record failed.
    #[error(
        "the record encrypted with DEK version {version} is damaged or was tampered with, or belongs to another place: restore it from a peer or a backup"
    )]
    RecordTampered {
        /// Version named by the record.
        version: DekVersion,
    },

    /// A DEK reached its sealing limit for random nonces.
    #[error(
        "DEK version {version} has sealed {limit} records, its safe limit: rotate the DEK before sealing more"
    )]
    DekUsageLimit {
        /// The exhausted DEK.
        version: DekVersion,
        /// The limit ([`MAX_RECORDS_PER_DEK`](crate::MAX_RECORDS_PER_DEK)).
        limit: u64,
    },

    /// A leased DEK reached the end of its durable lease (see
    /// [`Dek::resume_leased`](crate::Dek::resume_leased)); nothing was
    /// sealed. The caller makes a longer lease durable and seals again.
    #[error(
        "DEK version {version} has used the {sealed} records of its durable lease: extend the lease before sealing more"
    )]
    DekLeaseEnded {
        /// The DEK.
        version: DekVersion,
        /// Records counted as sealed by it (the lease end).
        sealed: u64,
    },

    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done, e.g. `read`, `rename into place`.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A key file may be read by users other than its owner.
    #[error(
        "{} is readable by group or others (mode {mode:04o}); a key file must be private: run chmod 600 on it",
        path.display()
    )]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The key file at `path` does not hold an unlock key.
    #[error("{} does not hold a valid unlock key", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<LockError>,
    },

    /// The sealed file at `path` was rejected; `source` says why.
    #[error("sealed file {} was rejected", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why it was rejected (never another `File`).
        #[source]
        source: Box<LockError>,
    },

    /// The operating system's random number generator failed.
    #[error(
        "the operating system's random number generator failed: check that getrandom(2) or /dev/urandom works"
    )]
    Random,

    /// A cryptographic primitive reported an error that validated inputs
    /// cannot cause. This is a bug in moat.
    #[error("internal cryptography failure in {what}: this is a bug in moat, please report it")]
    Crypto {
        /// Which operation.
        what: &'static str,
    },
}

impl LockError {
    /// The error itself, or for [`LockError::File`] the error inside it.
    ///
    /// Use this to classify an error without caring whether it came from
    /// memory or from a file.
    pub fn root(&self) -> &LockError {
        match self {
            LockError::File { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn in_file(self, path: &std::path::Path) -> LockError {
        match self {
            // Already names a file.
            e @ (LockError::File { .. } | LockError::Io { .. }) => e,
            e => LockError::File {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }
}

/// The kind of key a blob was sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// A 256-bit [`UnlockKey`](crate::UnlockKey).
    UnlockKey,
    /// A [`Passphrase`](crate::Passphrase) stretched with argon2id.
    Passphrase,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::UnlockKey => "an unlock key",
            KeyKind::Passphrase => "a passphrase",
        })
    }
}

/// Why an unlock key in text form was rejected. Each case is a different
/// mistake the operator can act on. Messages never echo the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// The text does not start with `MOATKEY-`.
    #[error(
        "this is not a moat unlock key (it does not start with MOATKEY-): copy the whole MOATKEY-1-… line"
    )]
    Prefix,
    /// The version field is not one this build reads (or is missing).
    #[error(
        "unlock key format version {} is not supported (this build reads version {supported}): upgrade moat, or check that the key starts with MOATKEY-{supported}-",
        found.map_or_else(|| "(missing or malformed)".to_string(), |v| v.to_string())
    )]
    Version {
        /// The version found, if it is a plausible version number (at most
        /// three digits). Anything else is not echoed: it may be part of the
        /// key.
        found: Option<u32>,
        /// The version this build reads.
        supported: u32,
    },
    /// Too many or too few characters.
    #[error(
        "the unlock key has {found} characters, expected {expected}: it looks truncated or has extra characters; copy the whole line again"
    )]
    Length {
        /// Characters required.
        expected: usize,
        /// Characters found (after trimming surrounding whitespace).
        found: usize,
    },
    /// A character that may not appear at its position.
    #[error(
        "the unlock key has an invalid character at position {position} (only 0-9, a-v and '-' are used): check for a typo"
    )]
    Character {
        /// Zero-based character position in the trimmed text.
        position: usize,
    },
    /// Structure and characters are fine, but the checksum does not match.
    #[error("the unlock key checksum does not match: it was mistyped or altered; copy it again")]
    Checksum,
    /// The text was rejected for a reason this build has no specific
    /// message for.
    #[error("the unlock key is malformed: copy the whole MOATKEY-1-… line again")]
    Malformed,
}

/// Why an unlock-key share in text form was rejected. Each case is a
/// different mistake the operator can act on. Messages never echo the share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShareFormatError {
    /// The text does not start with `MOATSHARE-`.
    #[error(
        "this is not a moat unlock-key share (it does not start with MOATSHARE-): copy the whole MOATSHARE-1-… line"
    )]
    Prefix,
    /// The text is a whole unlock key (`MOATKEY-…`), not a share.
    #[error(
        "this is a whole unlock key (MOATKEY-…), not a share of one: give it as the unlock key instead"
    )]
    WholeKey,
    /// The version field is not one this build reads (or is missing).
    #[error(
        "unlock-key share format version {} is not supported (this build reads version {supported}): upgrade moat, or check that the share starts with MOATSHARE-{supported}-",
        found.map_or_else(|| "(missing or malformed)".to_string(), |v| v.to_string())
    )]
    Version {
        /// The version found, if it is a plausible version number (at most
        /// three digits). Anything else is not echoed.
        found: Option<u32>,
        /// The version this build reads.
        supported: u32,
    },
    /// Too many or too few characters.
    #[error(
        "the share has {found} characters, expected {expected}: it looks truncated or has extra characters; copy the whole line again"
    )]
    Length {
        /// Characters required.
        expected: usize,
        /// Characters found (after trimming surrounding whitespace).
        found: usize,
    },
    /// A character that may not appear at its position.
    #[error(
        "the share has an invalid character at position {position} (only 0-9, a-v and '-' are used): check for a typo"
    )]
    Character {
        /// Zero-based character position in the trimmed text.
        position: usize,
    },
    /// Structure and characters are fine, but the checksum does not match.
    #[error("the share checksum does not match: it was mistyped or altered; copy it again")]
    Checksum,
    /// The checksum matches but K and N are outside `2 <= K <= N <= 16`.
    /// Since the checksum covers them, the share was not made by moat.
    #[error(
        "the share claims a split where {threshold} of {total} shares are needed, outside 2 <= K <= N <= 16: it was not made by moat"
    )]
    Split {
        /// K as written in the share.
        threshold: u8,
        /// N as written in the share.
        total: u8,
    },
    /// The checksum matches but the index is 0 or larger than N.
    #[error(
        "the share claims to be share {index} of {total}, which cannot exist: it was not made by moat"
    )]
    Index {
        /// The index as written in the share.
        index: u8,
        /// N as written in the share.
        total: u8,
    },
    /// The text was rejected for a reason this build has no specific
    /// message for.
    #[error("the share is malformed: copy the whole MOATSHARE-1-… line again")]
    Malformed,
}

impl From<moat_codec::ArmorError> for ShareFormatError {
    fn from(e: moat_codec::ArmorError) -> Self {
        use moat_codec::ArmorError as A;
        match e {
            A::Prefix { .. } => ShareFormatError::Prefix,
            // The codec echoes only a short numeric version, never share text.
            A::Version { found, supported } => ShareFormatError::Version { found, supported },
            A::Length { expected, found } => ShareFormatError::Length { expected, found },
            A::Character { position } => ShareFormatError::Character { position },
            A::Checksum => ShareFormatError::Checksum,
            _ => ShareFormatError::Malformed,
        }
    }
}

impl From<moat_codec::ArmorError> for KeyFormatError {
    fn from(e: moat_codec::ArmorError) -> Self {
        use moat_codec::ArmorError as A;
        match e {
            A::Prefix { .. } => KeyFormatError::Prefix,
            // The codec echoes only a short numeric version, never key text.
            A::Version { found, supported } => KeyFormatError::Version { found, supported },
            A::Length { expected, found } => KeyFormatError::Length { expected, found },
            A::Character { position } => KeyFormatError::Character { position },
            A::Checksum => KeyFormatError::Checksum,
            _ => KeyFormatError::Malformed,
        }
    }
}
