//! Errors of moat-audit.

use std::path::PathBuf;

/// Every error moat-audit returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record or one of its fields was rejected.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A Merkle proof does not verify, or was asked for outside the log.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A signed tree head could not be made or does not verify.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// A bundle or proof file could not be read or written.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// An audit key could not be made or loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A hash's text form was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    /// Not 64 characters.
    #[error("a hash is 64 hex digits, found {found} characters")]
    Length {
        /// Characters found.
        found: usize,
    },
    /// A character other than `0-9a-f`.
    #[error("a hash is 64 lower-case hex digits")]
    NotHex,
}

/// A record, or one of its fields, was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A field's value is not allowed.
    #[error("invalid audit record field {field}: {reason}")]
    InvalidField {
        /// The field (`actor`, `details`, …).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A serialized record is larger than [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES).
    #[error("audit record of {bytes} bytes is larger than the {max} byte limit")]
    TooLarge {
        /// Size found.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a JSON audit record.
    #[error("not an audit record: {reason}")]
    Malformed {
        /// What the parser reported.
        reason: String,
    },
    /// The record parses but is not in canonical form (field order,
    /// spacing, escapes or key order differ), so its hash would not be the
    /// one moat signs.
    #[error("audit record {seq} is not in canonical form")]
    NotCanonical {
        /// Its sequence number.
        seq: u64,
    },
    /// Caller misuse: a record appended out of order.
    #[error("audit record {found} cannot be appended: the log expects record {expected}")]
    OutOfSequence {
        /// The sequence number the log expects.
        expected: u64,
        /// The one given.
        found: u64,
    },
    /// Caller misuse: a record whose `prev` link is not the hash of the
    /// log's last record.
    #[error("audit record {seq} does not link to the log's last record")]
    BrokenLink {
        /// Its sequence number.
        seq: u64,
    },
}

impl RecordError {
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        RecordError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// A Merkle proof was asked for outside the log, or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Caller misuse: a tree size larger than the log.
    #[error("tree size {size} is larger than the log ({log_size} records)")]
    SizeBeyondLog {
        /// Size asked for.
        size: u64,
        /// Records in the log.
        log_size: u64,
    },
    /// A leaf index not below the tree size.
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// An old tree size larger than the new one.
    #[error("tree size {old_size} cannot precede tree size {new_size}")]
    SizesOutOfOrder {
        /// The old size.
        old_size: u64,
        /// The new size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for the sizes.
    #[error("the proof has the wrong number of hashes for these tree sizes")]
    WrongLength,
    /// The proof leads to another root.
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
    /// The record in a proof file is not the leaf the proof is for.
    #[error("the proof is for leaf {index}, but the record is number {seq}")]
    LeafMismatch {
        /// The record's sequence number.
        seq: u64,
        /// The leaf index of the proof.
        index: u64,
    },
    /// The proof is for another tree than the signed tree head.
    #[error(
        "the proof is for a tree of {proof_size} records, the signed tree head for {head_size}"
    )]
    HeadMismatch {
        /// Size in the proof.
        proof_size: u64,
        /// Size in the head.
        head_size: u64,
    },
}

/// A signed tree head could not be made, or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The signer's certificate chain was rejected by the cluster CA.
    #[error("the signer's certificate was rejected: {0}")]
    Certificate(#[from] moat_pki::CertError),
    /// The signer's certificate is not a manager certificate.
    #[error("the signer {node} holds a {role} certificate; only managers sign tree heads")]
    NotAManager {
        /// The signer.
        node: String,
        /// Its role.
        role: moat_pki::Role,
    },
    /// The head names another signer than its certificate.
    #[error("the head names signer {named}, but its certificate is for node {certified}")]
    WrongSigner {
        /// The `signer` field.
        named: String,
        /// The certificate's `CN`.
        certified: String,
    },
    /// The signature does not verify with the certificate's key.
    #[error("the signature does not verify with the signer's certificate")]
    BadSignature,
    /// The certificate's key is of a kind moat does not sign heads with.
    #[error("unsupported key algorithm in the signer's certificate: {algorithm}")]
    UnsupportedKey {
        /// What was found.
        algorithm: String,
    },
    /// A field is malformed (PEM, base64, size).
    #[error("malformed signed tree head: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// Caller misuse: the private key does not belong to the certificate.
    #[error("the signing key does not match the certificate's public key")]
    KeyMismatch,
    /// The private key refused to sign.
    #[error("signing the tree head failed: {reason}")]
    Signing {
        /// The key's reason.
        reason: String,
    },
}

/// A bundle or proof file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A part is larger than its limit (checked before it is read).
    #[error("{what} of {bytes} bytes is larger than the {max} byte limit")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Too many signed tree heads.
    #[error("{found} signed tree heads is more than the limit of {max}")]
    TooManyHeads {
        /// Heads found.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// A part is not what the format says.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A format version this build does not read.
    #[error("unsupported {what} format {found:?} (this build reads {expected:?})")]
    UnsupportedFormat {
        /// Which file.
        what: &'static str,
        /// The `format` field found.
        found: String,
        /// The one supported.
        expected: &'static str,
    },
    /// Caller misuse: the output already exists.
    #[error("{} already exists; choose a new path", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
}

impl BundleError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BundleError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl std::fmt::Display) -> Self {
        BundleError::Malformed {
            what,
            reason: reason.to_string(),
        }
    }
}

/// An audit key could not be made or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Key material of the wrong length.
    #[error("an audit key is 32 bytes, found {found}")]
    WrongLength {
        /// Bytes found.
        found: usize,
    },
}
