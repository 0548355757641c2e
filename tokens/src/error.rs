//! The one error type of this crate.

use moat_codec::ArmorError;

use crate::CaDigest;

/// Everything that can go wrong with a join token, a CA digest or a token
/// fingerprint.
///
/// No message ever contains token text or secret bytes: parse errors name a
/// position or a count, never the characters found there. The only values
/// printed are CA digests and version numbers, which are public.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The text is a Docker Swarm join token (`SWMTKN-…`), not a moat token.
    #[error(
        "this is a Docker Swarm join token (SWMTKN-…), not a moat join token: \
         ask an operator for the moat token with `moat join-token worker` (or `manager`)"
    )]
    DockerToken,

    /// The text does not start with `MOATTKN-`.
    #[error(
        "not a moat join token: it must start with MOATTKN- (in capitals); \
         check that you copied the join token and not another value"
    )]
    WrongPrefix,

    /// The format version is not the one this build reads.
    #[error(
        "join token format version {} is not supported (this build reads version {supported}): \
         upgrade moat on this node, or ask an operator for a current token with \
         `moat join-token worker` (or `manager`)",
        match .found { Some(v) => v.to_string(), None => "(unreadable)".to_owned() }
    )]
    UnsupportedVersion {
        /// The version number written in the token, if it is a plain number.
        found: Option<u32>,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// The text has the wrong number of characters.
    #[error(
        "join token has {found} characters but must have {expected}: \
         check that the token was copied completely, without extra characters"
    )]
    WrongLength {
        /// Characters a token has.
        expected: usize,
        /// Characters found (after trimming surrounding whitespace).
        found: usize,
    },

    /// A character that may not appear at its position: outside `0-9a-v`
    /// (upper case included), a missing `-`, or a last field character that
    /// is not a canonical encoding.
    #[error(
        "join token has an invalid character at position {} (counting from 1): \
         fields use only 0-9 and a-v in lower case; check that the token was copied exactly",
        .position + 1
    )]
    InvalidCharacter {
        /// Zero-based position in the trimmed text.
        position: usize,
    },

    /// The structure is right but the checksum does not match the rest.
    #[error(
        "join token checksum does not match: the token was mistyped or altered; \
         copy it again, or ask an operator for the current token with \
         `moat join-token worker` (or `manager`)"
    )]
    BadChecksum,

    /// The codec rejected the text for a reason this crate does not know
    /// (a newer `moat-codec` error kind).
    #[error("join token is malformed ({0}): check that the token was copied completely")]
    Malformed(#[source] ArmorError),

    /// The CA bundle served by a manager does not hash to the digest pinned
    /// in the token.
    #[error(
        "the manager's CA bundle ({found}) does not match the CA pinned in the join token \
         ({expected}): this manager is not part of the cluster this token belongs to. \
         Nothing secret was sent. Check the manager address, or ask an operator for a \
         current token with `moat join-token worker` (or `manager`) if the CA was rotated"
    )]
    CaMismatch {
        /// The digest pinned in the token.
        expected: CaDigest,
        /// The digest of the bundle the manager served.
        found: CaDigest,
    },

    /// Text that should be a CA digest is not `sha256:` and 64 lower-case hex
    /// characters.
    #[error("not a CA digest: expected `sha256:` followed by 64 lower-case hex characters")]
    InvalidCaDigest,

    /// Text that should be a token fingerprint is not 16 lower-case hex
    /// characters.
    #[error("not a token fingerprint: expected 16 lower-case hex characters")]
    InvalidFingerprint,

    /// The operating system's random number generator failed, so no token
    /// was created.
    #[error(
        "the system random number generator failed, so no join token was created: \
         check the host's entropy source and retry"
    )]
    Randomness,
}

impl From<ArmorError> for TokenError {
    fn from(e: ArmorError) -> Self {
        match e {
            ArmorError::Prefix { .. } => TokenError::WrongPrefix,
            ArmorError::Version { found, supported } => TokenError::UnsupportedVersion {
                found: found.filter(|&v| v != supported),
                supported,
            },
            ArmorError::Length { expected, found } => TokenError::WrongLength { expected, found },
            ArmorError::Character { position } => TokenError::InvalidCharacter { position },
            ArmorError::Checksum => TokenError::BadChecksum,
            other => TokenError::Malformed(other),
        }
    }
}
