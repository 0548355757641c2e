//! Integration tests of moat-transport over real TCP on 127.0.0.1 with
//! real certificates generated at run time: authorization of every call,
//! the client's peer identity check, error mapping, large snapshots,
//! reconnection.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moat_pki::{
    CertExpiry, ClusterId, Credentials, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role,
    RootCa, RootOptions, TlsContext, TrustRoots,
};
use moat_store::TypeConfig;
use moat_store::model::{Command, Secret};
use moat_transport::{
    Backoff, Clock, MAX_MESSAGE_BYTES, Network, PeerClient, RaftHandler, RaftService,
    SNAPSHOT_CHUNK_BYTES,
};
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------- fixtures

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

struct Ca {
    ca: RootCa,
}

impl Ca {
    fn new() -> Self {
        Self::for_cluster(ClusterId::generate())
    }

    fn for_cluster(cluster: ClusterId) -> Self {
        Self {
            ca: RootCa::generate(cluster, &RootOptions::default(), now()).unwrap(),
        }
    }

    fn roots(&self) -> TrustRoots {
        TrustRoots::new(vec![self.ca.certificate().clone()]).unwrap()
    }

    /// A node of `role` with a fresh key and certificate, trusting this CA.
    fn node(&self, role: Role) -> (NodeId, Arc<TlsContext>) {
        let id = NodeId::generate();
        let tls = TlsContext::new(self.ca.cluster_id(), self.roots());
        tls.set_credentials(self.credentials(id, role), now())
            .unwrap();
        (id, tls)
    }

    fn credentials(&self, id: NodeId, role: Role) -> Credentials {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let issued = self
            .ca
            .sign_csr(
                key.csr().unwrap().as_ref(),
                id,
                role,
                CertExpiry::DEFAULT,
                now(),
            )
            .unwrap();
        Credentials {
            chain: vec![issued.der],
            key,
        }
    }
}

/// A handler that records every call it gets and reassembles snapshots.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    snapshot: Mutex<Vec<u8>>,
    fail_votes: bool,
}

impl Recorder {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl RaftHandler for Recorder {
    async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("append_entries:{}", req.entries.len()));
        Ok(AppendEntriesResponse::Success)
    }

    async fn vote(
        &self,
        req: VoteRequest<NodeId>,
    ) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.calls.lock().unwrap().push("vote".into());
        if self.fail_votes {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        Ok(VoteResponse {
            vote: req.vote,
            vote_granted: true,
            last_log_id: None,
        })
    }

    async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.calls.lock().unwrap().push(format!(
            "install_snapshot:{}:{}:{}",
            req.offset,
            req.data.len(),
            req.done
        ));
        let mut snap = self.snapshot.lock().unwrap();
        let end = req.offset as usize + req.data.len();
        if snap.len() < end {
            snap.resize(end, 0);
        }
        snap[req.offset as usize..end].copy_from_slice(&req.data);
        Ok(InstallSnapshotResponse { vote: req.vote })
    }
}

struct Server {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(service: RaftService) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, service)
    }

    fn start_on(listener: TcpListener, service: RaftService) -> Self {
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

/// A manager server with a recording handler and a removed-node set.
struct Fixture {
    ca: Ca,
    server_id: NodeId,
    recorder: Arc<Recorder>,
    removed: Arc<Mutex<HashSet<NodeId>>>,
    server: Server,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_recorder(Recorder::default()).await
    }

    async fn with_recorder(recorder: Recorder) -> Self {
        let ca = Ca::new();
        let (server_id, server_tls) = ca.node(Role::Manager);
        let recorder = Arc::new(recorder);
        let removed = Arc::new(Mutex::new(HashSet::new()));
        let policy = {
            let removed = removed.clone();
            move |n: &NodeId| removed.lock().unwrap().contains(n)
        };
        let service = RaftService::new(server_tls, recorder.clone(), Arc::new(policy));
        let server = Server::start(service).await;
        Self {
            ca,
            server_id,
            recorder,
            removed,
            server,
        }
    }

    /// A client from `tls` to the fixture's server.
    fn client(&self, tls: Arc<TlsContext>) -> PeerClient {
        Network::new(tls).client(self.server_id, &BasicNode::new(&self.server.addr))
    }
}

fn opt() -> RPCOption {
    RPCOption::new(Duration::from_secs(5))
}

fn vote_of(id: NodeId) -> VoteRequest<NodeId> {
    VoteRequest::new(Vote::new(3, id), None)
}

fn blank_entries(leader: NodeId, n: u64) -> Vec<Entry<TypeConfig>> {
    (1..=n)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, leader), i),
            payload: EntryPayload::Blank,
        })
        .collect()
}

fn append_of(leader: NodeId, entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(3, leader),
        prev_log_id: None,
        entries,
        leader_commit: None,
    }
}

fn snapshot_of(
    leader: NodeId,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(3, leader),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(3, leader), 7)),
            last_membership: StoredMembership::default(),
            snapshot_id: "snap-1".into(),
        },
        offset,
        data,
        done,
    }
}

fn unreachable_text<E: std::error::Error>(e: RPCError<NodeId, BasicNode, E>) -> String {
    match e {
        RPCError::Unreachable(u) => u.to_string(),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

// ------------------------------------------------------------------- tests

/// A manager reaches all three RPCs, requests and responses survive the
/// encoding, and the handler sees exactly what was sent.
#[tokio::test]
async fn manager_calls_all_three_rpcs() {
    let f = Fixture::new().await;
    let (me, tls) = f.ca.node(Role::Manager);
    let mut client = f.client(tls);

    let resp = client.vote(vote_of(me), opt()).await.unwrap();
    assert!(resp.vote_granted);
    assert_eq!(resp.vote, Vote::new(3, me));

    let resp = client
        .append_entries(append_of(me, blank_entries(me, 3)), opt())
        .await
        .unwrap();
    assert_eq!(resp, AppendEntriesResponse::Success);

    let resp = client
        .install_snapshot(snapshot_of(me, 0, b"state".to_vec(), true), opt())
        .await
        .unwrap();
    assert_eq!(resp.vote, Vote::new_committed(3, me));

    assert_eq!(
        f.recorder.calls(),
        ["vote", "append_entries:3", "install_snapshot:0:5:true"]
    );
    assert_eq!(*f.recorder.snapshot.lock().unwrap(), b"state");
    f.server.stop().await;
}

/// Regression guard: a worker certificate is valid for the cluster and
/// passes the TLS handshake, but must never reach Raft.
#[tokio::test]
async fn worker_certificate_is_denied_and_handler_never_called() {
    let f = Fixture::new().await;
    let (worker, tls) = f.ca.node(Role::Worker);
    let mut client = f.client(tls);

    let err = unreachable_text(client.vote(vote_of(worker), opt()).await.unwrap_err());
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains("worker certificate cannot call raft RPCs"),
        "{err}"
    );

    // Every RPC is checked, not just the first on a connection. Let the
    // backoff pass so the calls are really sent.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let err = unreachable_text(
        client
            .append_entries(append_of(worker, blank_entries(worker, 1)), opt())
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("worker certificate cannot call raft RPCs"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let err = unreachable_text(
        client
            .install_snapshot(snapshot_of(worker, 0, vec![1], true), opt())
            .await
            .unwrap_err(),
    );
    assert!(
        err.contains("worker certificate cannot call raft RPCs"),
        "{err}"
    );

    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// A removed manager keeps a valid certificate; the policy is consulted on
/// every call, including on a connection that was allowed before.
#[tokio::test]
async fn removed_manager_is_denied_naming_the_removal() {
    let f = Fixture::new().await;
    let (me, tls) = f.ca.node(Role::Manager);
    let mut client = f.client(tls);
    client.vote(vote_of(me), opt()).await.unwrap();

    f.removed.lock().unwrap().insert(me);
    let err = unreachable_text(client.vote(vote_of(me), opt()).await.unwrap_err());
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains(&format!("node {me} was removed from the cluster")),
        "{err}"
    );
    assert_eq!(f.recorder.calls(), ["vote"]);
    f.server.stop().await;
}

/// A client with no certificate completes the handshake (joining nodes
/// need that) but every Raft call is refused.
#[tokio::test]
async fn client_without_certificate_is_refused() {
    let f = Fixture::new().await;
    let tls = TlsContext::new(f.ca.ca.cluster_id(), f.ca.roots());
    let mut client = f.client(tls);

    let err = unreachable_text(
        client
            .vote(vote_of(NodeId::generate()), opt())
            .await
            .unwrap_err(),
    );
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(err.contains("no client certificate"), "{err}");
    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// A manager of another cluster cannot even complete the handshake: it
/// does not trust our server, and our server does not trust it.
#[tokio::test]
async fn manager_of_another_cluster_fails_the_handshake() {
    let f = Fixture::new().await;
    let other = Ca::new();
    let (id, tls) = other.node(Role::Manager);
    let mut client = f.client(tls);

    let err = unreachable_text(client.vote(vote_of(id), opt()).await.unwrap_err());
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(!err.contains("PermissionDenied"), "{err}");
    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// A client certificate from a forged CA that claims our cluster id is
/// rejected by the server during the handshake (here the client trusts our
/// root, so only the server's check stands in the way).
#[tokio::test]
async fn forged_client_certificate_is_rejected_by_the_server_handshake() {
    let f = Fixture::new().await;
    let forged = Ca::for_cluster(f.ca.ca.cluster_id());
    let roots = TrustRoots::new(vec![
        f.ca.ca.certificate().clone(),
        forged.ca.certificate().clone(),
    ])
    .unwrap();
    let tls = TlsContext::new(f.ca.ca.cluster_id(), roots);
    let id = NodeId::generate();
    tls.set_credentials(forged.credentials(id, Role::Manager), now())
        .unwrap();
    let mut client = f.client(tls);

    let err = unreachable_text(client.vote(vote_of(id), opt()).await.unwrap_err());
    assert!(err.contains("received fatal alert"), "{err}");
    assert!(!err.contains("PermissionDenied"), "{err}");
    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// The client checks that the manager it reached is the node openraft
/// asked for: a stale address must not deliver votes to another node.
#[tokio::test]
async fn client_refuses_a_manager_that_is_not_the_target() {
    let f = Fixture::new().await;
    let (me, tls) = f.ca.node(Role::Manager);
    let someone_else = NodeId::generate();
    let mut client = Network::new(tls).client(someone_else, &BasicNode::new(&f.server.addr));

    let err = unreachable_text(client.vote(vote_of(me), opt()).await.unwrap_err());
    assert!(
        err.contains(&format!("expected manager {someone_else}")),
        "{err}"
    );
    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// A manager speaks only for itself: a vote naming another node as
/// candidate or leader is refused.
#[tokio::test]
async fn manager_cannot_speak_for_another_node() {
    let f = Fixture::new().await;
    let (me, tls) = f.ca.node(Role::Manager);
    let mut client = f.client(tls);
    let other = NodeId::generate();

    let err = unreachable_text(client.vote(vote_of(other), opt()).await.unwrap_err());
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains(&format!(
            "certificate of node {me} cannot speak for node {other}"
        )),
        "{err}"
    );
    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// Certificates are checked against the clock on every call, not only at
/// the handshake: a connection outliving its certificate is refused.
#[tokio::test]
async fn certificate_is_checked_on_every_call_against_the_clock() {
    #[derive(Debug)]
    struct Later(Mutex<OffsetDateTime>);
    impl Clock for Later {
        fn now(&self) -> OffsetDateTime {
            *self.0.lock().unwrap()
        }
    }
    let ca = Ca::new();
    let (server_id, server_tls) = ca.node(Role::Manager);
    let clock = Arc::new(Later(Mutex::new(now())));
    let recorder = Arc::new(Recorder::default());
    let service = RaftService::new(server_tls, recorder.clone(), Arc::new(|_: &NodeId| false))
        .with_clock(clock.clone());
    let server = Server::start(service).await;
    let (me, tls) = ca.node(Role::Manager);
    let mut client = Network::new(tls).client(server_id, &BasicNode::new(&server.addr));

    client.vote(vote_of(me), opt()).await.unwrap();
    *clock.0.lock().unwrap() = now() + time::Duration::days(30);
    let err = unreachable_text(client.vote(vote_of(me), opt()).await.unwrap_err());
    assert!(err.contains("client certificate rejected"), "{err}");
    assert_eq!(recorder.calls(), ["vote"]);
    server.stop().await;
}

/// Errors of the peer's Raft travel back as openraft remote errors, so
/// openraft sees them as such (not as network trouble).
#[tokio::test]
async fn raft_errors_travel_back_as_remote_errors() {
    let f = Fixture::with_recorder(Recorder {
        fail_votes: true,
        ..Recorder::default()
    })
    .await;
    let (me, tls) = f.ca.node(Role::Manager);
    let mut client = f.client(tls);
    match client.vote(vote_of(me), opt()).await.unwrap_err() {
        RPCError::RemoteError(e) => {
            assert_eq!(e.target, f.server_id);
            assert_eq!(e.source, RaftError::Fatal(Fatal::Stopped));
        }
        other => panic!("expected RemoteError, got {other:?}"),
    }
    f.server.stop().await;
}

/// A multi-MB snapshot chunk (bigger than a message may be) is split into
/// pieces under the limit and arrives intact; only the last piece is
/// marked done.
#[tokio::test]
async fn multi_megabyte_snapshot_arrives_intact() {
    let f = Fixture::new().await;
    let (me, tls) = f.ca.node(Role::Manager);
    let mut client = f.client(tls);
    let size = MAX_MESSAGE_BYTES + 3 * 1024 * 1024 + 17;
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let base = 1024;

    // The first openraft chunk, then the rest as a second one.
    client
        .install_snapshot(snapshot_of(me, 0, data[..base].to_vec(), false), opt())
        .await
        .unwrap();
    client
        .install_snapshot(
            snapshot_of(me, base as u64, data[base..].to_vec(), true),
            opt(),
        )
        .await
        .unwrap();

    let calls = f.recorder.calls();
    let pieces = (size - base).div_ceil(SNAPSHOT_CHUNK_BYTES);
    assert_eq!(calls.len(), 1 + pieces, "{calls:?}");
    assert_eq!(
        calls[1],
        format!("install_snapshot:{base}:{SNAPSHOT_CHUNK_BYTES}:false")
    );
    assert!(calls.last().unwrap().ends_with(":true"), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.ends_with(":true")).count(), 1);
    assert!(*f.recorder.snapshot.lock().unwrap() == data);
    f.server.stop().await;
}

/// An AppendEntries request too large for one message is not sent; openraft
/// gets PayloadTooLarge with a hint to send fewer entries.
#[tokio::test]
async fn oversized_append_entries_asks_openraft_for_fewer_entries() {
    let f = Fixture::new().await;
    let (me, tls) = f.ca.node(Role::Manager);
    let mut client = f.client(tls);
    let big = "k".repeat(1024 * 1024);
    let entries: Vec<Entry<TypeConfig>> = (1..=24)
        .map(|i| Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, me), i),
            payload: EntryPayload::Normal(Command::SetUnlockKey(Some(Secret::new(big.clone())))),
        })
        .collect();
    match client
        .append_entries(append_of(me, entries), opt())
        .await
        .unwrap_err()
    {
        RPCError::PayloadTooLarge(p) => {
            let hint = p.entries_hint();
            assert!((1..24).contains(&hint), "hint {hint}");
            assert!(hint >= 12, "hint {hint} is needlessly small");
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(f.recorder.calls().is_empty());
    f.server.stop().await;
}

/// A peer that is down is Unreachable (openraft backs off); calls within
/// the backoff window fail at once without dialling; once the peer is back
/// the same client reconnects by itself.
#[tokio::test]
async fn unreachable_peer_backs_off_then_reconnects() {
    let ca = Ca::new();
    let (server_id, server_tls) = ca.node(Role::Manager);
    let (me, tls) = ca.node(Role::Manager);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let backoff = Backoff {
        base: Duration::from_millis(300),
        max: Duration::from_millis(600),
    };
    let mut client = Network::new(tls)
        .with_backoff(backoff)
        .client(server_id, &BasicNode::new(addr.to_string()));

    let err = unreachable_text(client.vote(vote_of(me), opt()).await.unwrap_err());
    assert!(err.contains("connecting to"), "{err}");
    assert_eq!(client.failures(), 1);
    let err = unreachable_text(client.vote(vote_of(me), opt()).await.unwrap_err());
    assert!(err.contains("not retrying"), "{err}");
    assert_eq!(
        client.failures(),
        1,
        "a call skipped by the backoff is no new failure"
    );
    let delays: Vec<_> = client.backoff().take(3).collect();
    assert_eq!(
        delays,
        [300, 600, 600].map(Duration::from_millis),
        "openraft's backoff follows the same schedule"
    );

    // The peer comes back on the same address.
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::start_on(
        listener,
        RaftService::new(
            server_tls.clone(),
            recorder.clone(),
            Arc::new(|_: &NodeId| false),
        ),
    );
    tokio::time::sleep(backoff.delay(1)).await;
    client.vote(vote_of(me), opt()).await.unwrap();
    assert_eq!(client.failures(), 0);

    // It goes away and comes back again: the broken connection is dropped
    // and redialled.
    server.stop().await;
    let first = client.vote(vote_of(me), opt()).await.unwrap_err();
    assert!(
        matches!(first, RPCError::Network(_) | RPCError::Unreachable(_)),
        "{first:?}"
    );
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::start_on(
        listener,
        RaftService::new(server_tls, recorder.clone(), Arc::new(|_: &NodeId| false)),
    );
    let mut ok = false;
    for _ in 0..20 {
        if client.vote(vote_of(me), opt()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "client reconnected after the peer restarted");
    assert_eq!(recorder.calls(), ["vote", "vote"]);
    server.stop().await;
}

// ------------------------------------------- connection pools (issue 16)

/// Connections without a client certificate (issue 16, finding 1): their
/// own small pool, capped per source, idle-timed-out, one small call per
/// connection; members keep connecting while they flood.
mod pools {
    use std::time::Instant;

    use moat_transport::{
        Caller, ClusterClient, ClusterHandler, MAX_UNAUTHENTICATED_PER_SOURCE,
        MAX_UNAUTHENTICATED_REQUEST_BYTES, ServerTrust, Status, UNAUTHENTICATED_IDLE_TIMEOUT,
    };
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::*;

    /// Answers every cluster call with its own data, counting calls.
    #[derive(Default)]
    struct Echo {
        calls: Mutex<Vec<(bool, usize)>>,
    }

    #[async_trait::async_trait]
    impl ClusterHandler for Echo {
        async fn call(
            &self,
            caller: Caller,
            _method: &str,
            data: Vec<u8>,
        ) -> Result<Vec<u8>, Status> {
            self.calls
                .lock()
                .unwrap()
                .push((caller.identity.is_some(), data.len()));
            Ok(data)
        }
    }

    struct Manager {
        ca: Ca,
        server_id: NodeId,
        echo: Arc<Echo>,
        server: Server,
    }

    async fn manager() -> Manager {
        let ca = Ca::new();
        let (server_id, server_tls) = ca.node(Role::Manager);
        let echo = Arc::new(Echo::default());
        let service = RaftService::new(
            server_tls,
            Arc::new(Recorder::default()),
            Arc::new(|_: &NodeId| false),
        )
        .with_cluster(echo.clone());
        let server = Server::start(service).await;
        Manager {
            ca,
            server_id,
            echo,
            server,
        }
    }

    /// A TLS 1.3 connection without a client certificate that sends
    /// nothing, as a flood would open.
    async fn idle_connection(addr: &str) -> TlsStream<TcpStream> {
        let mut config = moat_pki::bootstrap_client_config().unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(moat_pki::manager_server_name(), tcp)
            .await
            .unwrap()
    }

    /// Reads until the server closes `conn`; `None` if it is still open
    /// after `limit`.
    async fn closed_within(conn: &mut TlsStream<TcpStream>, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        let read_to_end = async {
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(limit, read_to_end)
            .await
            .ok()
            .map(|()| start.elapsed())
    }

    /// Guards the per-source cap and the idle timeout: a source holds at
    /// most its share of idle connections, each closed after the idle
    /// timeout; a manager's certificate still gets in meanwhile, and the
    /// source's share comes back.
    #[tokio::test]
    async fn idle_unauthenticated_connections_are_capped_per_source_and_timed_out() {
        let m = manager().await;
        let addr = m.server.addr.clone();
        let opened = Instant::now();
        let mut held = Vec::new();
        for _ in 0..MAX_UNAUTHENTICATED_PER_SOURCE {
            held.push(idle_connection(&addr).await);
        }
        // Past the share: the handshake completes, then the server closes.
        for _ in 0..4 {
            let mut extra = idle_connection(&addr).await;
            assert!(
                closed_within(&mut extra, Duration::from_secs(3))
                    .await
                    .is_some(),
                "a connection past the per-source share was kept"
            );
        }
        // Members are not in that pool: Raft and cluster calls work.
        let (me, tls) = m.ca.node(Role::Manager);
        let mut peer = Network::new(tls.clone()).client(m.server_id, &BasicNode::new(&addr));
        peer.vote(vote_of(me), opt()).await.unwrap();
        let member =
            ClusterClient::connect(&addr, ServerTrust::Verified(tls), Duration::from_secs(5))
                .await
                .unwrap();
        for _ in 0..3 {
            member
                .call("heartbeat", b"{}".to_vec(), Duration::from_secs(5))
                .await
                .unwrap();
        }
        // The share's connections are closed once idle for the timeout.
        for conn in &mut held {
            closed_within(conn, UNAUTHENTICATED_IDLE_TIMEOUT + Duration::from_secs(5))
                .await
                .expect("an idle unauthenticated connection outlived the idle timeout");
        }
        let lived = opened.elapsed();
        assert!(
            lived >= UNAUTHENTICATED_IDLE_TIMEOUT - Duration::from_secs(1),
            "idle connections were closed after {lived:?}, before the idle timeout"
        );
        // The share is back: a joining node's call goes through.
        let joiner = ClusterClient::connect(&addr, ServerTrust::Bootstrap, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            joiner
                .call("ca_bundle", b"{}".to_vec(), Duration::from_secs(5))
                .await
                .unwrap(),
            b"{}"
        );
        let calls = m.echo.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().filter(|(member, _)| *member).count(), 3);
        assert_eq!(calls.iter().filter(|(member, _)| !*member).count(), 1);
        m.server.stop().await;
    }

    /// Guards one call per connection without a certificate: the second
    /// call on it is refused, saying why; a member makes as many as it
    /// likes on one connection.
    #[tokio::test]
    async fn an_unauthenticated_connection_carries_one_call() {
        let m = manager().await;
        let addr = m.server.addr.clone();
        let joiner = ClusterClient::connect(&addr, ServerTrust::Bootstrap, Duration::from_secs(5))
            .await
            .unwrap();
        joiner
            .call("ca_bundle", b"{}".to_vec(), Duration::from_secs(5))
            .await
            .unwrap();
        let second = joiner
            .call("join", b"{}".to_vec(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(second.code(), tonic::Code::ResourceExhausted, "{second:?}");
        assert!(second.message().contains("one call"), "{second:?}");
        assert_eq!(m.echo.calls.lock().unwrap().len(), 1);
        m.server.stop().await;
    }

    /// Guards the request cap without a certificate: a body over 64 KiB
    /// is refused before the handler, with the limit in the message; the
    /// same body from a member goes through.
    #[tokio::test]
    async fn an_oversized_unauthenticated_request_is_refused_with_the_limit() {
        let m = manager().await;
        let addr = m.server.addr.clone();
        let big = vec![b'x'; MAX_UNAUTHENTICATED_REQUEST_BYTES + 1];
        let joiner = ClusterClient::connect(&addr, ServerTrust::Bootstrap, Duration::from_secs(5))
            .await
            .unwrap();
        let err = joiner
            .call("join", big.clone(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        assert!(
            err.message()
                .contains(&MAX_UNAUTHENTICATED_REQUEST_BYTES.to_string())
                && err.message().contains("without a client certificate"),
            "{err:?}"
        );
        assert!(m.echo.calls.lock().unwrap().is_empty());

        // Just under the cap is fine.
        let fits = vec![b'x'; MAX_UNAUTHENTICATED_REQUEST_BYTES - 64];
        let joiner = ClusterClient::connect(&addr, ServerTrust::Bootstrap, Duration::from_secs(5))
            .await
            .unwrap();
        joiner
            .call("join", fits, Duration::from_secs(5))
            .await
            .unwrap();

        let (_, tls) = m.ca.node(Role::Worker);
        let member =
            ClusterClient::connect(&addr, ServerTrust::Verified(tls), Duration::from_secs(5))
                .await
                .unwrap();
        assert_eq!(
            member
                .call("renew", big.clone(), Duration::from_secs(5))
                .await
                .unwrap()
                .len(),
            big.len()
        );
        m.server.stop().await;
    }
}

// ------------------------------------------------- real openraft cluster

/// Three, then four, real `openraft::Raft` managers with moat-store's
/// encrypted log and state machine, talking only through this transport.
mod cluster {
    use std::collections::BTreeMap;
    use std::path::Path;

    use moat_lock::{Dek, DekSet, DekVersion};
    use moat_store::{LogStore, RecordCipher, StateMachineStore};
    use openraft::Config;

    use super::*;

    struct Manager {
        id: NodeId,
        addr: String,
        raft: openraft::Raft<TypeConfig>,
        sm: Arc<std::sync::RwLock<moat_store::Applied>>,
        server: Server,
    }

    async fn manager(ca: &Ca, dir: &Path) -> Manager {
        let (id, tls) = ca.node(Role::Manager);
        let cipher = Arc::new(RecordCipher::new(
            ca.ca.cluster_id(),
            id,
            DekSet::new(Dek::generate(DekVersion(1)).unwrap()),
        ));
        let log = LogStore::open(&dir.join("log"), cipher.clone()).unwrap();
        let sm = StateMachineStore::open(&dir.join("sm"), cipher).unwrap();
        let applied = sm.applied();
        let config = Config {
            cluster_name: "transport-test".into(),
            // Generous: in an unoptimized test build openraft's generic
            // code and the store run at opt-level 0, and a large entry
            // holds up heartbeats to a follower until it is stored.
            heartbeat_interval: 500,
            election_timeout_min: 3000,
            election_timeout_max: 6000,
            install_snapshot_timeout: 20_000,
            snapshot_max_chunk_size: 256 * 1024,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let raft = openraft::Raft::new(id, Arc::new(config), Network::new(tls.clone()), log, sm)
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = RaftService::new(tls, Arc::new(raft.clone()), Arc::new(|_: &NodeId| false));
        let server = Server::start_on(listener, service);
        Manager {
            id,
            addr,
            raft,
            sm: applied,
            server,
        }
    }

    fn unlock_key(m: &Manager) -> Option<String> {
        m.sm.read()
            .unwrap()
            .state
            .unlock_key
            .as_ref()
            .map(|k| k.expose_secret().to_string())
    }

    /// Elects a leader, replicates commands to every manager, then brings a
    /// new manager up to date from a snapshot of several chunks (the log it
    /// would need is purged), so openraft's chunked snapshot transfer runs
    /// over the transport end to end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_managers_elect_replicate_and_ship_a_snapshot() {
        let ca = Ca::new();
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut managers = Vec::new();
        for dir in &dirs[..3] {
            managers.push(manager(&ca, dir.path()).await);
        }
        let members: BTreeMap<NodeId, BasicNode> = managers
            .iter()
            .map(|m| (m.id, BasicNode::new(&m.addr)))
            .collect();
        managers[0].raft.initialize(members).await.unwrap();

        let wait = Some(Duration::from_secs(20));
        let metrics = managers[0]
            .raft
            .wait(wait)
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .unwrap();
        let leader_id = metrics.current_leader.unwrap();
        let leader = managers.iter().find(|m| m.id == leader_id).unwrap();
        leader
            .raft
            .wait(wait)
            .state(openraft::ServerState::Leader, "the leader takes office")
            .await
            .unwrap();
        for m in &managers {
            m.raft
                .wait(wait)
                .current_leader(leader_id, "every manager follows the leader")
                .await
                .unwrap();
        }

        // A few commands, the last one a 1 MiB secret so the snapshot spans
        // several openraft chunks (256 KiB here). Multi-MB chunks are
        // covered by `multi_megabyte_snapshot_arrives_intact`.
        let big = "s".repeat(1024 * 1024);
        let commands = [
            Command::SetUnlockKey(Some(Secret::new("first"))),
            Command::SetUnlockKey(Some(Secret::new("second"))),
            Command::SetUnlockKey(Some(Secret::new(big.clone()))),
        ];
        let mut last = 0;
        for c in commands {
            last = leader.raft.client_write(c).await.unwrap().log_id.index;
        }
        for m in &managers {
            m.raft
                .wait(wait)
                .applied_index_at_least(Some(last), "replicated")
                .await
                .unwrap();
            assert_eq!(unlock_key(m).as_deref(), Some(big.as_str()));
        }

        // Snapshot and purge the leader's log, then add a fourth manager:
        // it can only catch up through InstallSnapshot.
        leader.raft.trigger().snapshot().await.unwrap();
        let m = leader
            .raft
            .wait(wait)
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= last),
                "snapshot built",
            )
            .await
            .unwrap();
        let snap = m.snapshot.unwrap();
        leader.raft.trigger().purge_log(snap.index).await.unwrap();
        leader
            .raft
            .wait(wait)
            .purged(Some(snap), "log purged")
            .await
            .unwrap();

        let newcomer = manager(&ca, dirs[3].path()).await;
        leader
            .raft
            .add_learner(newcomer.id, BasicNode::new(&newcomer.addr), true)
            .await
            .unwrap();
        newcomer
            .raft
            .wait(wait)
            .applied_index_at_least(Some(last), "caught up from the snapshot")
            .await
            .unwrap();
        assert_eq!(unlock_key(&newcomer).as_deref(), Some(big.as_str()));
        let newcomer_metrics = newcomer.raft.metrics().borrow().clone();
        assert!(
            newcomer_metrics
                .snapshot
                .is_some_and(|s| s.index >= snap.index),
            "the newcomer installed the snapshot: {:?}",
            newcomer_metrics.snapshot
        );

        managers.push(newcomer);
        for m in managers {
            m.raft.shutdown().await.unwrap();
            m.server.stop().await;
        }
    }
}
