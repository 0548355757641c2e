//! The transport's error type.

use std::time::Duration;

use moat_pki::NodeId;

/// Why a transport operation failed.
///
/// On the client side these are carried inside openraft's
/// [`Unreachable`](openraft::error::Unreachable) or
/// [`NetworkError`](openraft::error::NetworkError); the server returns them
/// from [`serve`](crate::serve).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The node's TLS context could not produce a configuration.
    #[error("cannot build the TLS configuration: {0}")]
    TlsConfig(#[source] moat_pki::Error),
    /// A socket operation failed (listening, connecting, the TLS
    /// handshake).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the peer address.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server or channel failed.
    #[error("{what}: {reason}")]
    Grpc {
        /// What was being done.
        what: String,
        /// The error and its causes.
        reason: String,
    },
    /// A peer's address (its openraft `BasicNode::addr`) is not `host:port`.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as configured.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// The manager reached at an address is not the node it was dialled
    /// for (a stale or wrong address in the membership).
    #[error("{addr} is manager {found}, expected manager {expected}")]
    WrongPeer {
        /// The address dialled.
        addr: String,
        /// The node id the membership names.
        expected: NodeId,
        /// The node id in the certificate presented.
        found: NodeId,
    },
    /// The peer's certificate could not be read after the handshake.
    #[error("the certificate of {addr} is unusable: {reason}")]
    PeerCertificate {
        /// The address dialled.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The call ended with a gRPC error: the peer's answer (for example
    /// `PermissionDenied` for a worker or removed node) or the
    /// connection's failure.
    #[error("{rpc} failed: {code:?}: {message}")]
    Refused {
        /// The RPC.
        rpc: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The peer's message.
        message: String,
    },
    /// A message was over its size limit; nothing was sent or allocated.
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A payload could not be encoded, or a received one could not be
    /// decoded.
    #[error("malformed {what}: {reason}")]
    Codec {
        /// Which payload.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit that passed.
        after: Duration,
    },
    /// Calls to this peer are paused after failures; the next attempt is
    /// allowed after the backoff delay.
    #[error("not retrying {addr} for another {remaining:?} after {failures} failure(s)")]
    BackingOff {
        /// The peer's address.
        addr: String,
        /// Consecutive failures so far.
        failures: u32,
        /// Time left before the next attempt.
        remaining: Duration,
    },
}

/// Formats an error with its whole cause chain, for messages that cross a
/// boundary where the chain would otherwise be lost.
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
