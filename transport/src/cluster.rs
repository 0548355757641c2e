//! The cluster service (`moat.cluster.v1.Cluster`): one generic call whose
//! method name and JSON body moat-node interprets, next to the Raft
//! service on a manager's listener.
//!
//! The transport frames bytes and tells the handler who is calling: the
//! remote address and, if the caller presented a certificate, the identity
//! it verifies to **now** against the cluster roots. Which methods need
//! which identity is the handler's decision.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use moat_pki::{Identity, TlsContext, manager_server_name};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::with_causes;
use crate::pb_cluster::cluster_client::ClusterClient as GrpcClusterClient;
use crate::pb_cluster::cluster_server::Cluster as ClusterRpc;
use crate::pb_cluster::{CallRequest, CallResponse};
use moat_pki::Clock;

use crate::server::PeerInfo;
use crate::{MAX_MESSAGE_BYTES, TransportError};

/// Longest method name accepted.
const MAX_METHOD_LEN: usize = 64;

/// Who made a cluster call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The TCP peer address.
    pub remote: Option<SocketAddr>,
    /// The identity the caller's certificate verifies to now, if it
    /// presented one.
    pub identity: Option<Identity>,
    /// Why a presented certificate did not verify (expired since the
    /// handshake, roots rotated).
    pub rejected: Option<String>,
}

/// What a manager does with a cluster call: `method` names the operation,
/// `data` is its JSON request; the answer is the JSON response. Errors the
/// handler wants the caller to see travel inside the answer; a `Status`
/// is for failures of the call itself.
#[async_trait::async_trait]
pub trait ClusterHandler: Send + Sync + 'static {
    /// Handles one call.
    async fn call(&self, caller: Caller, method: &str, data: Vec<u8>) -> Result<Vec<u8>, Status>;
}

pub(crate) struct ClusterService {
    pub(crate) tls: Arc<TlsContext>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) handler: Arc<dyn ClusterHandler>,
}

#[tonic::async_trait]
impl ClusterRpc for ClusterService {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let info = request.extensions().get::<PeerInfo>().cloned();
        let req = request.into_inner();
        if req.method.len() > MAX_METHOD_LEN {
            return Err(Status::invalid_argument("method name too long"));
        }
        let mut caller = Caller {
            remote: info.as_ref().map(|i| i.remote),
            identity: None,
            rejected: None,
        };
        if let Some(chain) = info.as_ref().and_then(|i| i.certs.as_deref())
            && !chain.is_empty()
        {
            match self.tls.verify_peer(chain, self.clock.now()) {
                Ok(identity) => caller.identity = Some(identity),
                Err(e) => caller.rejected = Some(e.to_string()),
            }
        }
        let data = self.handler.call(caller, &req.method, req.data).await?;
        Ok(Response::new(CallResponse { data }))
    }
}

/// How a [`ClusterClient`] authenticates the manager it reaches.
#[derive(Clone)]
pub enum ServerTrust {
    /// Verify the manager against the node's roots and present the node's
    /// certificate when it has one.
    Verified(Arc<TlsContext>),
    /// Verify nothing: only for downloading the root CA bundle that the
    /// join token's digest is then checked against (see
    /// [`moat_pki::bootstrap_client_config`]).
    Bootstrap,
}

/// A client for one manager's cluster service.
#[derive(Clone)]
pub struct ClusterClient {
    addr: String,
    inner: GrpcClusterClient<Channel>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// Connects to the manager at `addr` (`host:port`) within `timeout`:
    /// TCP, then TLS 1.3 as `trust` says, ALPN `h2`.
    pub async fn connect(
        addr: &str,
        trust: ServerTrust,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        Self::connect_from(addr, trust, timeout, None).await
    }

    /// Like [`connect`](Self::connect), from the local address `source`
    /// when one is given (the system's choice otherwise). Load generators
    /// give each simulated node its own loopback address, as real nodes
    /// have their own, so that a manager's per-source limits see what they
    /// would see in a real cluster.
    pub async fn connect_from(
        addr: &str,
        trust: ServerTrust,
        timeout: Duration,
        source: Option<IpAddr>,
    ) -> Result<Self, TransportError> {
        let mut config = match &trust {
            ServerTrust::Verified(tls) => tls.client_config(),
            ServerTrust::Bootstrap => moat_pki::bootstrap_client_config(),
        }
        .map_err(TransportError::TlsConfig)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| TransportError::InvalidAddress {
                addr: addr.to_string(),
                reason: with_causes(&e),
            })?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let target = addr.to_string();
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let io = |e| TransportError::Io {
                    what: format!("connecting to {target}"),
                    source: e,
                };
                let tcp = match source {
                    None => TcpStream::connect(&target).await.map_err(io)?,
                    Some(local) => {
                        let remote = tokio::net::lookup_host(&target)
                            .await
                            .map_err(io)?
                            .find(|a| a.is_ipv4() == local.is_ipv4())
                            .ok_or_else(|| {
                                io(std::io::Error::new(
                                    std::io::ErrorKind::AddrNotAvailable,
                                    format!("{target} has no address of {local}'s family"),
                                ))
                            })?;
                        let socket = if local.is_ipv4() {
                            tokio::net::TcpSocket::new_v4()
                        } else {
                            tokio::net::TcpSocket::new_v6()
                        }
                        .map_err(io)?;
                        socket.bind(SocketAddr::new(local, 0)).map_err(io)?;
                        socket.connect(remote).await.map_err(io)?
                    }
                };
                let _ = tcp.set_nodelay(true);
                let tls = connector
                    .connect(manager_server_name(), tcp)
                    .await
                    .map_err(|source| TransportError::Io {
                        what: format!("TLS handshake with {target}"),
                        source,
                    })?;
                Ok::<_, TransportError>(TokioIo::new(tls))
            }
        }));
        let channel = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(TransportError::Grpc {
                    what: format!("connecting to {addr}"),
                    reason: with_causes(&e),
                });
            }
            Err(_) => {
                return Err(TransportError::Timeout {
                    what: format!("connecting to {addr}"),
                    after: timeout,
                });
            }
        };
        Ok(Self {
            addr: addr.to_string(),
            inner: GrpcClusterClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// The manager's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Calls `method` with `data`, waiting at most `timeout`.
    pub async fn call(
        &self,
        method: &str,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Status> {
        let mut request = Request::new(CallRequest {
            method: method.to_string(),
            data,
        });
        request.set_timeout(timeout);
        let mut inner = self.inner.clone();
        match tokio::time::timeout(timeout, inner.call(request)).await {
            Ok(result) => result.map(|r| r.into_inner().data),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{method} to {} took longer than {} ms",
                self.addr,
                timeout.as_millis()
            ))),
        }
    }
}
