//! The server side: TLS accept loop, per-call authorization, dispatch to
//! the Raft handler.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use moat_pki::{CertificateDer, Clock, Identity, NodeId, Role, TlsContext};
use moat_store::TypeConfig;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::anonymous::{Lifetime, OneCall, OneCallLayer};
use crate::cluster::{ClusterHandler, ClusterService};
use crate::codec::{decode, encode};
use crate::error::with_causes;
use crate::limits::{Key, Limits, Pool, Refusal};
use crate::pb::Payload;
use crate::pb::raft_server::{Raft as RaftRpc, RaftServer as GrpcRaftServer};
use crate::pb_cluster::cluster_server::ClusterServer as GrpcClusterServer;
use crate::{
    HANDSHAKE_TIMEOUT, MAX_MESSAGE_BYTES, MAX_SNAPSHOT_BYTES, MAX_UNAUTHENTICATED_REQUEST_BYTES,
    REFUSAL_LOG_INTERVAL, SERVER_REQUEST_TIMEOUT, TransportError, UNAUTHENTICATED_REQUEST_TIMEOUT,
};

/// What the server calls once a request is authorized: normally the local
/// [`openraft::Raft`], a recording fake in tests.
///
/// Errors are openraft's own; they travel back to the caller, which hands
/// them to its openraft as remote errors.
#[async_trait::async_trait]
pub trait RaftHandler: Send + Sync + 'static {
    /// Handles an AppendEntries request from the leader.
    async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;

    /// Handles a RequestVote request from a candidate.
    async fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>>;

    /// Handles one chunk of a snapshot from the leader.
    async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;
}

#[async_trait::async_trait]
impl RaftHandler for openraft::Raft<TypeConfig> {
    async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        openraft::Raft::append_entries(self, req).await
    }

    async fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        openraft::Raft::vote(self, req).await
    }

    async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        openraft::Raft::install_snapshot(self, req).await
    }
}

/// Which managers are no longer members: their certificates may still be
/// valid, but their calls are refused.
pub trait PeerPolicy: Send + Sync + 'static {
    /// Whether `node` was removed from the cluster.
    fn is_removed(&self, node: &NodeId) -> bool;

    /// Whether `node` may ask for votes. A manager being demoted keeps
    /// replicating (it may be the leader committing its own removal) but
    /// must not start elections. Everyone may, unless the policy says
    /// otherwise.
    fn may_vote(&self, node: &NodeId) -> bool {
        let _ = node;
        true
    }

    /// Whether the manager certificate `peer` (verified, not removed) may
    /// talk Raft here at all: the node must be in this manager's Raft
    /// membership, its certificate not revoked. `Err` says why not.
    /// Everyone may, unless the policy says otherwise.
    fn admit(&self, peer: &Identity) -> Result<(), String> {
        let _ = peer;
        Ok(())
    }

    /// Whether `ip` is the address of a current manager: its connections
    /// handshake in a pool of their own, so that thousands of workers
    /// reconnecting at once (after an election) never crowd the managers
    /// out of the handshakes Raft needs. Nobody is, unless the policy
    /// says otherwise. A spoofed source gains nothing but that pool: the
    /// handshake still needs a manager's certificate to go further.
    fn is_manager_source(&self, ip: std::net::IpAddr) -> bool {
        let _ = ip;
        false
    }
}

/// Any `Fn(&NodeId) -> bool` is a policy: `|_| false` removes nobody.
impl<F> PeerPolicy for F
where
    F: Fn(&NodeId) -> bool + Send + Sync + 'static,
{
    fn is_removed(&self, node: &NodeId) -> bool {
        self(node)
    }
}

/// The Raft gRPC server of one manager.
pub struct RaftService {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    tls: Arc<TlsContext>,
    handler: Arc<dyn RaftHandler>,
    policy: Arc<dyn PeerPolicy>,
    clock: Arc<dyn Clock>,
    cluster: Option<Arc<dyn ClusterHandler>>,
}

impl RaftService {
    /// A server that authorizes calls with `tls` (at the time of its
    /// clock) and `policy` and hands authorized requests to `handler`.
    pub fn new(
        tls: Arc<TlsContext>,
        handler: Arc<dyn RaftHandler>,
        policy: Arc<dyn PeerPolicy>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock: tls.clock(),
                tls,
                handler,
                policy,
                cluster: None,
            }),
        }
    }

    /// Uses `clock` instead of the system clock for certificate checks.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.clock = clock;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Also serves the cluster service (joins, renewals, heartbeats) with
    /// `handler`, on the same listener.
    pub fn with_cluster(self, handler: Arc<dyn ClusterHandler>) -> Self {
        let mut inner = (*self.inner).clone();
        inner.cluster = Some(handler);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Serves on `listener` until `shutdown` completes, then stops
    /// accepting and lets calls in flight finish.
    ///
    /// Each accepted connection gets [`HANDSHAKE_TIMEOUT`] to complete the
    /// TLS handshake (ALPN `h2`). Connections are held in bounded pools
    /// (see `limits.rs`): one for handshakes, one for members (a client
    /// certificate that verified), one for callers without a certificate.
    /// The last are served apart, with one call per connection, at most
    /// [`MAX_UNAUTHENTICATED_REQUEST_BYTES`] per request, one stream at a
    /// time, [`UNAUTHENTICATED_REQUEST_TIMEOUT`] per call and an idle
    /// timeout (see `anonymous.rs`). A refused connection is closed and
    /// logged at most once per [`REFUSAL_LOG_INTERVAL`] per pool.
    /// Handshake failures are logged at debug level and do not stop the
    /// server.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), TransportError> {
        let mut config = self
            .inner
            .tls
            .server_config()
            .map_err(TransportError::TlsConfig)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let (members_tx, members_rx) = mpsc::channel::<Result<ServerStream, io::Error>>(16);
        let (anonymous_tx, anonymous_rx) = mpsc::channel::<Result<ServerStream, io::Error>>(16);
        let routes = Routes {
            members: members_tx,
            anonymous: anonymous_tx,
        };
        // Aborted when this future ends or is dropped, so the listener closes
        // with the server (a restarted node can bind its address again).
        let _accept = AbortOnDrop(tokio::spawn(accept_loop(
            listener,
            acceptor,
            self.inner.clone(),
            routes,
        )));

        let (stop, stopped) = watch::channel(false);
        let members = tonic::transport::Server::builder()
            .timeout(SERVER_REQUEST_TIMEOUT)
            .concurrency_limit_per_connection(32)
            .max_concurrent_streams(64)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .http2_max_header_list_size(16 * 1024)
            .add_service(self.raft_grpc(MAX_MESSAGE_BYTES))
            .add_optional_service(self.cluster_grpc(MAX_MESSAGE_BYTES))
            .serve_with_incoming_shutdown(ReceiverStream::new(members_rx), until(stopped.clone()));
        // Callers without a certificate (joining nodes): one small call per
        // connection, one stream, a shorter deadline. Raft calls are served
        // too, only to be refused with the reason.
        let anonymous = tonic::transport::Server::builder()
            .timeout(UNAUTHENTICATED_REQUEST_TIMEOUT)
            .concurrency_limit_per_connection(1)
            .max_concurrent_streams(1)
            .http2_max_header_list_size(16 * 1024)
            .layer(OneCallLayer)
            .add_service(self.raft_grpc(MAX_UNAUTHENTICATED_REQUEST_BYTES))
            .add_optional_service(self.cluster_grpc(MAX_UNAUTHENTICATED_REQUEST_BYTES))
            .serve_with_incoming_shutdown(ReceiverStream::new(anonymous_rx), until(stopped));
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let ((), members, anonymous) = tokio::join!(signal, members, anonymous);
        members.and(anonymous).map_err(|e| TransportError::Grpc {
            what: "raft gRPC server".into(),
            reason: with_causes(&e),
        })
    }

    /// The Raft gRPC service, decoding requests of at most `max_request`
    /// bytes.
    fn raft_grpc(&self, max_request: usize) -> GrpcRaftServer<GrpcService> {
        GrpcRaftServer::new(GrpcService {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The cluster gRPC service, if this server has one, decoding requests
    /// of at most `max_request` bytes.
    fn cluster_grpc(&self, max_request: usize) -> Option<GrpcClusterServer<ClusterService>> {
        self.inner.cluster.clone().map(|handler| {
            GrpcClusterServer::new(ClusterService {
                tls: self.inner.tls.clone(),
                clock: self.inner.clock.clone(),
                handler,
            })
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
        })
    }
}

/// Completes once `stopped` turns true (or its sender is gone).
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Serves Raft RPCs on `listener` until `shutdown` completes (see
/// [`RaftService::serve`]).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsContext>,
    handler: Arc<dyn RaftHandler>,
    policy: Arc<dyn PeerPolicy>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TransportError> {
    RaftService::new(tls, handler, policy)
        .serve(listener, shutdown)
        .await
}

/// Where a connection goes once its handshake is done: to the server for
/// members, or to the one for callers without a certificate.
struct Routes {
    members: mpsc::Sender<Result<ServerStream, io::Error>>,
    anonymous: mpsc::Sender<Result<ServerStream, io::Error>>,
}

/// Accepts TCP connections and hands each to its own handshake task, so a
/// slow or silent client cannot hold up others; keeps every connection in
/// its pool (see `limits.rs`).
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    inner: Arc<Inner>,
    routes: Routes,
) {
    let limits = Arc::new(Limits::default());
    let routes = Arc::new(routes);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or an aborted connection: wait a
                // little instead of spinning, and keep serving.
                tracing::warn!(error = %e, "raft listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = Key::source(remote);
        let pool = if inner.policy.is_manager_source(remote.ip().to_canonical()) {
            Pool::ManagerHandshake
        } else {
            Pool::Handshake
        };
        let handshake = match limits.enter(pool, source) {
            Ok(slot) => slot,
            Err(why) => {
                refused(&limits, pool, source, remote, why);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let inner = inner.clone();
        let limits = limits.clone();
        let routes = routes.clone();
        tokio::spawn(async move {
            // Without Nagle, small RPCs (votes, heartbeats) are not delayed.
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %remote, error = %e, "raft listener: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %remote, "raft listener: TLS handshake timed out");
                    return;
                }
            };
            drop(handshake);
            let certs: Option<Arc<[CertificateDer<'static>]>> =
                tls.get_ref().1.peer_certificates().map(|chain| {
                    chain
                        .iter()
                        .map(|c| c.clone().into_owned())
                        .collect::<Vec<_>>()
                        .into()
                });
            // A presented certificate verified in the handshake (or the
            // handshake failed); checked once more at the service's clock.
            let node = certs
                .as_deref()
                .filter(|chain| !chain.is_empty())
                .and_then(|chain| inner.tls.verify_peer(chain, inner.clock.now()).ok())
                .map(|identity| (identity.node_id, identity.role));
            let (pool, key, call) = match node {
                Some((node, Role::Manager)) => (Pool::Manager, Key::Node(node), None),
                Some((node, _)) => (Pool::Member, Key::Node(node), None),
                None => (
                    Pool::Unauthenticated,
                    source,
                    Some(Arc::new(OneCall::new(tokio::time::Instant::now()))),
                ),
            };
            let slot = match limits.enter(pool, key) {
                Ok(slot) => slot,
                Err(why) => {
                    refused(&limits, pool, key, remote, why);
                    return;
                }
            };
            let stream = ServerStream {
                inner: tls,
                lifetime: call.clone().map(Lifetime::new),
                info: PeerInfo {
                    remote,
                    certs,
                    call,
                },
                _slot: slot,
            };
            let route = match pool {
                Pool::Member | Pool::Manager => &routes.members,
                Pool::Handshake | Pool::ManagerHandshake | Pool::Unauthenticated => {
                    &routes.anonymous
                }
            };
            let _ = route.send(Ok(stream)).await;
        });
    }
}

/// Logs a refused connection, at most once per [`REFUSAL_LOG_INTERVAL`]
/// per pool.
fn refused(limits: &Limits, pool: Pool, key: Key, remote: SocketAddr, why: Refusal) {
    let Some(unlogged) = limits.note_refusal(pool, std::time::Instant::now()) else {
        return;
    };
    let (total, share) = pool.caps();
    let name = pool.name();
    let reason = match why {
        Refusal::PoolFull => format!("the {name} pool is full ({total} connections)"),
        Refusal::ShareFull => match key {
            Key::Node(_) => {
                format!("{key} already holds {share} {name} connections, its most")
            }
            Key::Source(_) => {
                format!("{key} already holds {share} {name} connections, the most per source")
            }
        },
    };
    tracing::warn!(
        pool = name,
        source = %remote.ip(),
        unlogged,
        "raft listener: refused a connection from {remote}: {reason}; \
         {unlogged} more {name} connections refused since this pool's last such line \
         (one line per {}s at most)",
        REFUSAL_LOG_INTERVAL.as_secs()
    );
}

/// A server-side TLS connection, carrying what tonic puts in each
/// request's extensions, and the connection slot it holds.
struct ServerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    /// For a connection without a client certificate: when it ends.
    lifetime: Option<Lifetime>,
    _slot: crate::limits::Slot,
}

/// The connection a request arrived on: the peer's address, the
/// certificate chain it presented in the handshake, if any, and without
/// one, the connection's call budget.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub(crate) remote: SocketAddr,
    pub(crate) certs: Option<Arc<[CertificateDer<'static>]>>,
    pub(crate) call: Option<Arc<OneCall>>,
}

impl Connected for ServerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(lifetime) = &mut this.lifetime
            && lifetime.poll_expired(cx).is_ready()
        {
            // End of stream: HTTP/2 closes the connection (flushing what it
            // still has to send) and the slot is given back.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The generated gRPC service, backed by the handler.
struct GrpcService {
    inner: Arc<Inner>,
}

impl Inner {
    /// Authorizes one call: the connection's certificate chain must verify
    /// now, name a manager, and not a removed one.
    fn authorize<T>(&self, rpc: &'static str, req: &Request<T>) -> Result<Identity, Status> {
        let info = req.extensions().get::<PeerInfo>();
        let chain = info
            .and_then(|i| i.certs.as_deref())
            .filter(|chain| !chain.is_empty());
        let Some(chain) = chain else {
            return Err(deny(
                rpc,
                info,
                "no client certificate: raft RPCs need a manager certificate".into(),
            ));
        };
        let identity = self
            .tls
            .verify_peer(chain, self.clock.now())
            .map_err(|e| deny(rpc, info, format!("client certificate rejected: {e}")))?;
        if identity.role != Role::Manager {
            return Err(deny(
                rpc,
                info,
                format!(
                    "{} certificate cannot call raft RPCs (node {})",
                    identity.role.as_str(),
                    identity.node_id
                ),
            ));
        }
        if self.policy.is_removed(&identity.node_id) {
            return Err(deny(
                rpc,
                info,
                format!("node {} was removed from the cluster", identity.node_id),
            ));
        }
        self.policy
            .admit(&identity)
            .map_err(|why| deny(rpc, info, why))?;
        Ok(identity)
    }
}

/// Checks that the vote in a request names the caller: a manager speaks
/// only for itself, never as another node's leader or candidate.
fn check_speaker(
    rpc: &'static str,
    caller: &Identity,
    vote: &openraft::Vote<NodeId>,
) -> Result<(), Status> {
    match vote.leader_id().voted_for() {
        Some(node) if node == caller.node_id => Ok(()),
        Some(node) => Err(Status::permission_denied(format!(
            "{rpc}: the certificate of node {} cannot speak for node {node}",
            caller.node_id
        ))),
        None => Err(Status::invalid_argument(format!(
            "{rpc}: the vote names no node"
        ))),
    }
}

fn deny(rpc: &'static str, info: Option<&PeerInfo>, why: String) -> Status {
    match info {
        Some(i) => tracing::info!(peer = %i.remote, rpc, reason = %why, "raft RPC refused"),
        None => tracing::info!(rpc, reason = %why, "raft RPC refused"),
    }
    Status::permission_denied(why)
}

fn bad_request(e: TransportError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Response<Payload>, Status> {
    let data = encode(what, value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload {
        data,
        chunk: Vec::new(),
    }))
}

#[tonic::async_trait]
impl RaftRpc for GrpcService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        const RPC: &str = "AppendEntries";
        let caller = self.inner.authorize(RPC, &request)?;
        let payload = request.into_inner();
        let req: AppendEntriesRequest<TypeConfig> =
            decode("AppendEntries request", &payload.data).map_err(bad_request)?;
        check_speaker(RPC, &caller, &req.vote)?;
        let result = self.inner.handler.append_entries(req).await;
        reply("AppendEntries response", &result)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        const RPC: &str = "Vote";
        let caller = self.inner.authorize(RPC, &request)?;
        let payload = request.into_inner();
        let req: VoteRequest<NodeId> =
            decode("Vote request", &payload.data).map_err(bad_request)?;
        check_speaker(RPC, &caller, &req.vote)?;
        if !self.inner.policy.may_vote(&caller.node_id) {
            return Err(Status::permission_denied(format!(
                "{RPC}: node {} is no longer a manager and may not stand for election",
                caller.node_id
            )));
        }
        let result = self.inner.handler.vote(req).await;
        reply("Vote response", &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        const RPC: &str = "InstallSnapshot";
        let caller = self.inner.authorize(RPC, &request)?;
        let payload = request.into_inner();
        let mut req: InstallSnapshotRequest<TypeConfig> =
            decode("InstallSnapshot request", &payload.data).map_err(bad_request)?;
        check_speaker(RPC, &caller, &req.vote)?;
        if !req.data.is_empty() {
            return Err(Status::invalid_argument(
                "InstallSnapshot: snapshot bytes must travel in the chunk field",
            ));
        }
        // The receiver seeks to `offset` and writes: bound the end before
        // anything is allocated.
        let end = req.offset.checked_add(payload.chunk.len() as u64);
        if end.is_none_or(|end| end > MAX_SNAPSHOT_BYTES) {
            return Err(Status::invalid_argument(format!(
                "InstallSnapshot: chunk at offset {} of {} bytes ends past the {MAX_SNAPSHOT_BYTES}-byte snapshot limit",
                req.offset,
                payload.chunk.len()
            )));
        }
        req.data = payload.chunk;
        let result = self.inner.handler.install_snapshot(req).await;
        reply("InstallSnapshot response", &result)
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
