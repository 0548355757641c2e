//! The one error type of this crate.

/// A policy that could not be used: the bytes given to
/// [`Policy::parse`](crate::Policy::parse) are not a policy.
///
/// All variants are bad input (the operator's policy file); the message
/// names the problem, and for [`Invalid`](Self::Invalid) the key and the
/// line. The caller adds which file it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Larger than [`MAX_POLICY_BYTES`](crate::MAX_POLICY_BYTES); refused
    /// before parsing.
    #[error("the file is {len} bytes, larger than the {max} bytes a policy may have")]
    TooLarge {
        /// The size given.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Not UTF-8 text.
    #[error("the file is not UTF-8 text: {0}")]
    NotText(std::str::Utf8Error),
    /// Not a policy: not TOML, an unknown key, a wrong type or a value out
    /// of range.
    #[error("{message}")]
    Invalid {
        /// What is wrong, and where (key, line and column).
        message: String,
    },
}
