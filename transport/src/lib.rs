//! Node-to-node transport: openraft RPCs between managers, and the cluster
//! service every node calls on a manager, over gRPC on mutual TLS 1.3.
//!
//! moat-transport owns:
//!
//! * the wire protocol, `proto/raft.proto` (`moat.raft.v1.Raft`: one
//!   opaque [`Payload`](pb::Payload) per request and response);
//! * the server side: [`RaftService`] / [`serve`] accept TCP, run the TLS
//!   handshake with [`TlsContext::server_config`](moat_pki::TlsContext::server_config),
//!   keep connections in bounded pools (members with a verified
//!   certificate apart from callers without one, who get one small call
//!   per connection; see `limits.rs` and `anonymous.rs`),
//!   and authorize **every call** from the peer's certificate chain: it must
//!   verify against the cluster roots now, carry the manager role, not belong
//!   to a removed node ([`PeerPolicy`]), and name the same node as the Raft
//!   vote it carries. Only then is the [`RaftHandler`] (normally
//!   [`openraft::Raft`]) called;
//! * the client side: [`Network`], openraft's
//!   [`RaftNetworkFactory`](openraft::network::RaftNetworkFactory), whose
//!   per-peer [`PeerClient`] connects lazily, checks that the manager it
//!   reached is the node it meant to reach, and maps failures onto the
//!   openraft errors that make openraft retry or back off.
//!
//! # Encoding
//!
//! Requests are openraft's own serde types as JSON; responses are
//! `Result<Response, RaftError>` as JSON, so openraft errors (a higher vote,
//! a fatal error, a snapshot mismatch) travel back to the caller as remote
//! errors. JSON is what openraft's serde derives are tested with (untagged
//! and internally tagged enums work), it is self-describing, so a version
//! skew fails loudly instead of misreading bytes. The one bulky field, the
//! bytes of a snapshot chunk, travels outside the JSON as a protobuf
//! `bytes` field. Every message is capped at [`MAX_MESSAGE_BYTES`] both
//! ways; snapshot chunks are split to at most [`SNAPSHOT_CHUNK_BYTES`].
//!
//! It never logs payloads (they carry the CA key and unlock material),
//! never weakens the TLS configuration it is given, and never reads or
//! writes the disk. It calls moat-pki for TLS and identities and
//! moat-store only for the openraft type configuration.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod anonymous;
mod client;
mod cluster;
mod codec;
mod error;
mod limits;
mod server;

use std::time::Duration;

pub use client::{Backoff, Network, PeerClient};
pub use cluster::{Caller, ClusterClient, ClusterHandler, ServerTrust};
pub use error::TransportError;
pub use moat_pki::{Clock, SystemClock};
pub use server::{PeerPolicy, RaftHandler, RaftService, serve};

/// The generated protobuf and gRPC code of `proto/raft.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("moat.raft.v1");
}

/// The generated protobuf and gRPC code of `proto/cluster.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb_cluster {
    tonic::include_proto!("moat.cluster.v1");
}

pub use tonic::{Code, Status};

/// Largest encoded gRPC message accepted or sent, either way (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest snapshot chunk sent in one InstallSnapshot call (4 MiB): a
/// bigger chunk from openraft is split, so any `snapshot_max_chunk_size`
/// works.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Largest snapshot a server accepts: a chunk that would write past this
/// offset is refused before any allocation (256 MiB, the store's limit).
pub const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

/// How long a TCP connect plus TLS handshake to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the server waits for a client to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest any one call may run on the server (clients usually ask for
/// less with openraft's per-RPC deadline, sent as `grpc-timeout`).
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Most connections from workers (clients whose certificate verified
/// against the cluster roots in the handshake, with the worker role) a
/// server holds at once; more are closed. A worker keeps one to the
/// leader, so this bounds the workers a leader serves: 16,384, about
/// 1.6 times the 10,000 measured in `bench/scale` (each costs a file
/// descriptor and about 30 KiB there). Connections without a certificate
/// and managers' connections never take one of these slots.
pub const MAX_MEMBER_CONNECTIONS: usize = 16_384;

/// Most connections from managers (a verified certificate with the
/// manager role) a server holds at once: Raft, forwarded proposals and
/// their heartbeats. A pool of their own, so that workers filling theirs
/// never cut the managers off from each other (with one pool of 256 for
/// both, 400 workers starved Raft of connections and the cluster lost its
/// quorum; found by `bench/scale`).
pub const MAX_MANAGER_CONNECTIONS: usize = 256;

/// Most member connections one node (the node id of a verified
/// certificate) holds at once: one stolen or removed node's certificate
/// cannot take the member pool. A node keeps one or two connections to
/// each manager.
pub const MAX_CONNECTIONS_PER_NODE: usize = 16;

/// Most TLS handshakes a server runs at once; more connections are closed
/// on accept.
pub const MAX_HANDSHAKES: usize = 128;

/// Most TLS handshakes from one source (an IPv4 address, an IPv6 /64) at
/// once.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 16;

/// Most connections without a client certificate (joining nodes) a server
/// holds at once, from all sources together.
pub const MAX_UNAUTHENTICATED_CONNECTIONS: usize = 64;

/// Most connections without a client certificate from one source (an
/// IPv4 address, an IPv6 /64) at once.
pub const MAX_UNAUTHENTICATED_PER_SOURCE: usize = 8;

/// How long a connection without a client certificate may wait after its
/// handshake before its one call starts; then it is closed.
pub const UNAUTHENTICATED_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the one call of a connection without a client certificate may
/// run (a join waits for its node to be committed through Raft).
pub const UNAUTHENTICATED_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection without a client certificate stays open after
/// its call answered, for the answer to reach the caller.
pub const UNAUTHENTICATED_LINGER: Duration = Duration::from_secs(1);

/// Largest encoded request accepted from a caller without a client
/// certificate (64 KiB): a join request (token, CSR, rejoin proof) or a
/// CA-bundle request is a few KiB.
pub const MAX_UNAUTHENTICATED_REQUEST_BYTES: usize = 64 * 1024;

/// Each connection pool logs at most one refused connection per interval;
/// the line counts the refusals it did not log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
