//! The client side: openraft's network factory and one lazily connected,
//! identity-checked gRPC client per peer.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use moat_pki::{NodeId, TlsContext, Usage, manager_server_name, verify_chain};
use moat_store::TypeConfig;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{FRAMING_ALLOWANCE, check_size, decode, encode};
use crate::error::with_causes;
use crate::pb::Payload;
use crate::pb::raft_client::RaftClient;
use crate::{CONNECT_TIMEOUT, MAX_MESSAGE_BYTES, SNAPSHOT_CHUNK_BYTES, TransportError};
use moat_pki::Clock;

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Exponential backoff between attempts to reach a peer that failed:
/// `base`, `2·base`, `4·base`, … capped at `max`.
///
/// Keep `max` below the election timeout: a peer that comes back is
/// reached again within `max`, before it would start an election of its
/// own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 1 s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (0 for none).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// openraft's network factory for the managers of one cluster: every
/// connection is mutual TLS 1.3 with this node's [`TlsContext`], to a
/// manager whose certificate names the node openraft asked for.
#[derive(Clone)]
pub struct Network {
    tls: Arc<TlsContext>,
    backoff: Backoff,
    connect_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("tls", &self.tls)
            .field("backoff", &self.backoff)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// A factory using `tls` for every connection (and its clock for
    /// certificate checks), with the default [`Backoff`] and
    /// [`CONNECT_TIMEOUT`].
    pub fn new(tls: Arc<TlsContext>) -> Self {
        Self {
            clock: tls.clock(),
            tls,
            backoff: Backoff::default(),
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// Uses `backoff` between attempts to reach a failed peer.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Gives each TCP connect plus TLS handshake at most `timeout`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Uses `clock` for checking peer certificates after the handshake.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A client for `target` at `node.addr`; it connects on first use.
    pub fn client(&self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            net: self.clone(),
            target,
            node: node.clone(),
            client: None,
            proven: false,
            failures: 0,
            retry_at: None,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        self.client(target, node)
    }
}

/// The connection to one peer manager, as openraft's [`RaftNetwork`].
///
/// It dials on first use and after a failure, no sooner than the
/// [`Backoff`] allows. Failures map onto openraft's errors as follows:
///
/// * cannot connect, wrong peer, refused by the peer (`PermissionDenied`
///   for a worker or removed node), or an unreadable reply →
///   [`Unreachable`]: openraft backs off ([`RaftNetwork::backoff`] uses the
///   same schedule);
/// * a connection that had worked broke during the call →
///   [`NetworkError`]: the connection is dropped and the next call
///   redials (a connection that fails its first call, as when the server
///   rejects our certificate at the end of the TLS 1.3 handshake, is
///   [`Unreachable`]);
/// * no reply within openraft's deadline → [`Timeout`];
/// * an AppendEntries request too big to send → [`PayloadTooLarge`] with a
///   hint, so openraft sends fewer entries;
/// * an error from the peer's Raft → [`RemoteError`].
pub struct PeerClient {
    net: Network,
    target: NodeId,
    node: BasicNode,
    client: Option<RaftClient<Channel>>,
    /// Whether a call on the current connection has succeeded. With TLS
    /// 1.3 the server checks our certificate after our side of the
    /// handshake is done, so a refusal shows up on the first call.
    proven: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("target", &self.target)
            .field("addr", &self.node.addr)
            .field("connected", &self.client.is_some())
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// How a call failed, before it becomes an openraft error.
enum CallError {
    /// Back off before trying again.
    Unreachable(TransportError),
    /// Retry at once on a fresh connection.
    Network(TransportError),
    /// The deadline passed.
    Timeout(Duration),
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "AppendEntries",
            Rpc::Vote => "Vote",
            Rpc::InstallSnapshot => "InstallSnapshot",
        }
    }

    fn openraft(self) -> RPCTypes {
        match self {
            Rpc::AppendEntries => RPCTypes::AppendEntries,
            Rpc::Vote => RPCTypes::Vote,
            Rpc::InstallSnapshot => RPCTypes::InstallSnapshot,
        }
    }
}

impl PeerClient {
    /// The node this client talks to.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Consecutive failed attempts since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Sends one request and decodes the peer's `Result<Resp, RaftError>`.
    async fn call<Resp, E>(
        &mut self,
        rpc: Rpc,
        payload: Payload,
        deadline: Instant,
    ) -> Result<Result<Resp, RaftError<NodeId, E>>, CallError>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self.connected(deadline).await?;
        let ttl = deadline.saturating_duration_since(Instant::now());
        let mut request = tonic::Request::new(payload);
        request.set_timeout(ttl);
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => return Err(CallError::Timeout(ttl)),
            Ok(Err(status)) => return Err(self.on_status(rpc, status, ttl)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        match decode(response_name(rpc), &reply.data) {
            Ok(result) => {
                self.proven = true;
                self.failures = 0;
                self.retry_at = None;
                Ok(result)
            }
            Err(e) => {
                // A peer that answers with something else is not going to
                // start making sense on an immediate retry.
                self.failed();
                Err(CallError::Unreachable(e))
            }
        }
    }

    /// The gRPC client, dialling if there is none and the backoff allows.
    async fn connected(&mut self, deadline: Instant) -> Result<RaftClient<Channel>, CallError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let now = Instant::now();
        if let Some(at) = self.retry_at
            && now < at
        {
            return Err(CallError::Unreachable(TransportError::BackingOff {
                addr: self.node.addr.clone(),
                failures: self.failures,
                remaining: at - now,
            }));
        }
        let limit = self
            .net
            .connect_timeout
            .min(deadline.saturating_duration_since(now));
        match tokio::time::timeout(limit, self.dial(limit)).await {
            Ok(Ok(client)) => {
                self.client = Some(client.clone());
                self.proven = false;
                Ok(client)
            }
            Ok(Err(e)) => {
                self.failed();
                Err(CallError::Unreachable(e))
            }
            Err(_) => {
                self.failed();
                Err(CallError::Unreachable(TransportError::Timeout {
                    what: format!("connecting to {}", self.node.addr),
                    after: limit,
                }))
            }
        }
    }

    async fn dial(&self, limit: Duration) -> Result<RaftClient<Channel>, TransportError> {
        let addr = self.node.addr.clone();
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| TransportError::InvalidAddress {
                addr: addr.clone(),
                reason: with_causes(&e),
            })?
            .connect_timeout(limit)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let mut config = self
            .net
            .tls
            .client_config()
            .map_err(TransportError::TlsConfig)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = Connector {
            tls: TlsConnector::from(Arc::new(config)),
            ctx: self.net.tls.clone(),
            clock: self.net.clock.clone(),
            addr: addr.clone(),
            target: self.target,
        };
        // tonic reuses the connector if the connection drops, so every
        // connection to this peer goes through the same identity check.
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_uri| {
                let connector = connector.clone();
                async move { connector.connect().await }
            }))
            .await
            .map_err(|e| TransportError::Grpc {
                what: format!("connecting to {addr}"),
                reason: with_causes(&e),
            })?;
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn failed(&mut self) {
        self.client = None;
        self.proven = false;
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + self.net.backoff.delay(self.failures));
    }

    fn on_status(&mut self, rpc: Rpc, status: tonic::Status, ttl: Duration) -> CallError {
        use tonic::Code;
        let message = match std::error::Error::source(&status) {
            Some(cause) => format!("{}: {}", status.message(), with_causes(cause)),
            None => status.message().to_string(),
        };
        let err = TransportError::Refused {
            rpc: rpc.name(),
            code: status.code(),
            message,
        };
        match status.code() {
            Code::DeadlineExceeded => CallError::Timeout(ttl),
            // The connection broke under a call after earlier calls had
            // worked: redial on the next one.
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted if self.proven => {
                self.client = None;
                CallError::Network(err)
            }
            // Refused (worker or removed node, expired certificate), a new
            // connection that failed its first call (the server rejected
            // our certificate after the TLS 1.3 handshake), or a peer that
            // does not speak this protocol: an immediate retry would not
            // help. A fresh connection later re-runs the handshake with our
            // current certificate.
            _ => {
                tracing::warn!(target_node = %self.target, addr = %self.node.addr, error = %err, "raft RPC refused");
                self.failed();
                CallError::Unreachable(err)
            }
        }
    }

    fn to_rpc_error<E: std::error::Error>(
        &self,
        rpc: Rpc,
        e: CallError,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
            CallError::Timeout(after) => RPCError::Timeout(Timeout {
                action: rpc.openraft(),
                id: self
                    .net
                    .tls
                    .identity()
                    .map(|i| i.node_id)
                    .unwrap_or_default(),
                target: self.target,
                timeout: after,
            }),
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            e,
        ))
    }
}

fn response_name(rpc: Rpc) -> &'static str {
    match rpc {
        Rpc::AppendEntries => "AppendEntries response",
        Rpc::Vote => "Vote response",
        Rpc::InstallSnapshot => "InstallSnapshot response",
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let deadline = Instant::now() + option.hard_ttl();
        let entries = rpc.entries.len();
        let data = match encode("AppendEntries request", &rpc) {
            Ok(data) => data,
            Err(e @ TransportError::TooLarge { size, limit, .. }) if entries > 1 => {
                // Ask openraft to resend with proportionally fewer entries.
                let fit = (entries as u64).saturating_mul(limit) / size.max(1);
                return Err(
                    PayloadTooLarge::new_entries_hint(fit.clamp(1, entries as u64 - 1))
                        .with_source_error(&e)
                        .into(),
                );
            }
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
        };
        let payload = Payload {
            data,
            chunk: Vec::new(),
        };
        match self.call(Rpc::AppendEntries, payload, deadline).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.to_rpc_error(Rpc::AppendEntries, e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let deadline = Instant::now() + option.hard_ttl();
        let data = encode("Vote request", &rpc)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let payload = Payload {
            data,
            chunk: Vec::new(),
        };
        match self.call(Rpc::Vote, payload, deadline).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.to_rpc_error(Rpc::Vote, e)),
        }
    }

    /// Sends one snapshot chunk from openraft, split into pieces of at most
    /// [`SNAPSHOT_CHUNK_BYTES`] so that each fits in a message whatever
    /// openraft's `snapshot_max_chunk_size`. Only the last piece carries
    /// `done`; a piece answered with a higher vote ends the transfer early.
    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let deadline = Instant::now() + option.hard_ttl();
        let data = std::mem::take(&mut rpc.data);
        let done = rpc.done;
        let mut offset = 0usize;
        loop {
            let end = data.len().min(offset + SNAPSHOT_CHUNK_BYTES);
            let last = end == data.len();
            let mut piece = rpc.clone();
            piece.offset = rpc.offset + offset as u64;
            piece.done = done && last;
            let meta = encode("InstallSnapshot request", &piece)
                .and_then(|meta| {
                    check_size(
                        "InstallSnapshot request",
                        meta.len() + (end - offset),
                        MAX_MESSAGE_BYTES - FRAMING_ALLOWANCE,
                    )
                    .map(|()| meta)
                })
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            let payload = Payload {
                data: meta,
                chunk: data[offset..end].to_vec(),
            };
            let resp: InstallSnapshotResponse<NodeId> = match self
                .call::<_, InstallSnapshotError>(Rpc::InstallSnapshot, payload, deadline)
                .await
            {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => return Err(self.remote(e)),
                Err(e) => return Err(self.to_rpc_error(Rpc::InstallSnapshot, e)),
            };
            if last || resp.vote > rpc.vote {
                return Ok(resp);
            }
            offset = end;
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        let schedule = self.net.backoff;
        openraft::network::Backoff::new((1u32..).map(move |n| schedule.delay(n)))
    }
}

/// Dials one peer: TCP, then TLS 1.3 with ALPN `h2` and the manager server
/// name, then checks that the certificate names the node we dialled for.
#[derive(Clone)]
struct Connector {
    tls: TlsConnector,
    ctx: Arc<TlsContext>,
    clock: Arc<dyn Clock>,
    addr: String,
    target: NodeId,
}

impl Connector {
    async fn connect(self) -> Result<TokioIo<TlsStream<TcpStream>>, TransportError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| TransportError::Io {
                what: format!("connecting to {}", self.addr),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream = self
            .tls
            .connect(manager_server_name(), tcp)
            .await
            .map_err(|source| TransportError::Io {
                what: format!("TLS handshake with {}", self.addr),
                source,
            })?;
        let chain = stream.get_ref().1.peer_certificates().unwrap_or_default();
        // The handshake already verified the chain and the manager role;
        // this reads the node id from it.
        let identity = verify_chain(
            chain,
            &self.ctx.roots(),
            &self.ctx.cluster_id(),
            Usage::Server,
            self.clock.now(),
        )
        .map_err(|e| TransportError::PeerCertificate {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        if identity.node_id != self.target {
            return Err(TransportError::WrongPeer {
                addr: self.addr,
                expected: self.target,
                found: identity.node_id,
            });
        }
        Ok(TokioIo::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the reconnect schedule: exponential from the base, capped,
    /// and no overflow after many failures.
    #[test]
    fn backoff_doubles_then_caps() {
        let b = Backoff::default();
        let delays: Vec<_> = (0..7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay(40), Duration::from_secs(1));
    }
}
