//! The daemon's error: what went wrong, and which kind of trouble it is,
//! because the kind decides what happens next.
//!
//! | kind | examples | what the daemon does |
//! |---|---|---|
//! | [`Trouble::Fatal`] | a sealed file that does not open with the right key, a damaged store or commit record, a journal chain broken | stops what it was doing and says which file; **never retried** — retrying cannot mend a file, and would hide tampering |
//! | [`Trouble::Retryable`] | no quorum, no leader yet, a manager unreachable, a timeout | retried (the agent's next round, the leader search's backoff) |
//! | [`Trouble::Refused`] | a wrong token or key, a call not allowed, a node in the wrong state, a name that matches nothing | answered, not retried: the caller must change something |
//! | [`Trouble::Internal`] | anything else (a bug, an unexpected library error) | answered; loops log it and try again at their next round |
//!
//! Inside moat-node every fallible step returns a [`NodeError`]; it
//! becomes the control API's wire error ([`moat_api::ApiError`]) only at
//! the edge, in the control socket's answers, and a cluster RPC error
//! (`rpc::RpcError`) only on the cluster wire.

use std::fmt;
use std::path::{Path, PathBuf};

use moat_api::{ApiError, ErrorKind};

/// An error of the daemon (see the module docs).
#[derive(Debug, Clone)]
pub struct NodeError {
    trouble: Trouble,
    message: String,
    hint: Option<String>,
}

/// Which kind of trouble an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trouble {
    /// Damage or tampering in `file`: stop, never retry.
    Fatal {
        /// The damaged file.
        file: PathBuf,
    },
    /// Passing trouble (no quorum, no leader, a peer down): retry later.
    Retryable,
    /// The request is refused; the caller must change something.
    Refused(Refusal),
    /// Anything else.
    Internal,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The request is malformed.
    Invalid,
    /// The caller may not do this (a wrong key or token too).
    Denied,
    /// The node or cluster is not in a state that allows it.
    Precondition,
    /// It names nothing known.
    NotFound,
}

impl NodeError {
    /// An error of the control API's `kind`, classified by it: unavailable
    /// is retryable, invalid / denied / precondition / not found are
    /// refusals, internal is internal.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let trouble = match kind {
            ErrorKind::Unavailable => Trouble::Retryable,
            ErrorKind::InvalidArgument => Trouble::Refused(Refusal::Invalid),
            ErrorKind::PermissionDenied => Trouble::Refused(Refusal::Denied),
            ErrorKind::FailedPrecondition => Trouble::Refused(Refusal::Precondition),
            ErrorKind::NotFound => Trouble::Refused(Refusal::NotFound),
            ErrorKind::Internal => Trouble::Internal,
        };
        Self {
            trouble,
            message: message.into(),
            hint: None,
        }
    }

    /// Damage or tampering found in `file` (named in the message).
    pub fn fatal(file: &Path, problem: impl fmt::Display) -> Self {
        Self {
            trouble: Trouble::Fatal {
                file: file.to_path_buf(),
            },
            message: format!("{}: {problem}", file.display()),
            hint: None,
        }
    }

    /// Adds what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Which kind of trouble this is.
    pub fn trouble(&self) -> &Trouble {
        &self.trouble
    }

    /// Whether trying again later may succeed. Fatal damage never is.
    pub fn is_retryable(&self) -> bool {
        matches!(self.trouble, Trouble::Retryable)
    }

    /// Whether this is damage that stops the node.
    pub fn is_fatal(&self) -> bool {
        matches!(self.trouble, Trouble::Fatal { .. })
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The control API's kind for this error.
    pub fn api_kind(&self) -> ErrorKind {
        match self.trouble {
            Trouble::Fatal { .. } | Trouble::Internal => ErrorKind::Internal,
            Trouble::Retryable => ErrorKind::Unavailable,
            Trouble::Refused(Refusal::Invalid) => ErrorKind::InvalidArgument,
            Trouble::Refused(Refusal::Denied) => ErrorKind::PermissionDenied,
            Trouble::Refused(Refusal::Precondition) => ErrorKind::FailedPrecondition,
            Trouble::Refused(Refusal::NotFound) => ErrorKind::NotFound,
        }
    }

    /// The control API's error (at the control edge only).
    pub fn into_api(self) -> ApiError {
        let kind = self.api_kind();
        ApiError {
            kind,
            message: self.message,
            hint: self.hint,
        }
    }

    /// What to do next, if the error says.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        e.into_api()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_the_wire() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::FailedPrecondition,
            ErrorKind::NotFound,
            ErrorKind::PermissionDenied,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            let e = NodeError::new(kind, "m").hint("h");
            assert_eq!(e.api_kind(), kind);
            let api = e.into_api();
            assert_eq!((api.kind, api.message.as_str()), (kind, "m"));
            assert_eq!(api.hint.as_deref(), Some("h"));
        }
    }

    /// The rule the agent and the leader search follow: only passing
    /// trouble is tried again; damage never is, and says which file.
    #[test]
    fn fatal_is_never_retryable_and_names_the_file() {
        let e = NodeError::fatal(Path::new("/s/certs/node.sealed"), "authentication failed");
        assert!(e.is_fatal());
        assert!(!e.is_retryable());
        assert!(e.message().contains("/s/certs/node.sealed"));
        assert_eq!(e.api_kind(), ErrorKind::Internal);
        assert!(NodeError::new(ErrorKind::Unavailable, "no quorum").is_retryable());
        for kind in [ErrorKind::PermissionDenied, ErrorKind::Internal] {
            assert!(!NodeError::new(kind, "x").is_retryable());
        }
    }
}
