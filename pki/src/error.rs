//! Errors of moat-pki.

/// An identifier's text form was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct IdError {
    pub(crate) what: &'static str,
    pub(crate) reason: moat_codec::DecodeError,
}

/// A role name other than `manager` or `worker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role (expected \"manager\" or \"worker\")")]
pub struct RoleError;
