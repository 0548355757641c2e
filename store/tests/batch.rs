//! The leader's proposer (`moat_store::Proposer`, decision D47) on a real
//! single-manager openraft store: concurrent proposals share log entries,
//! each caller gets its own response, a lone write is not wrapped, the
//! caps hold, and errors reach every caller as `client_write` gives them.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moat_lock::{KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId, Role};
use moat_store::model::{Availability, Command, NodeRecord, Response};
use moat_store::{
    Applied, BatchLimits, LogStoreReader, OpenStore, Proposer, Raft, TypeConfig, WriteError,
};
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{BasicNode, EntryPayload, ServerState};

const WRITERS: usize = 64;

/// A single manager, so no peer is ever called.
struct NoPeers;

struct NoPeer;

fn unreachable_peer<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(openraft::error::Unreachable::new(&std::io::Error::other(
        "a single-manager test has no peers",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoPeer {
        NoPeer
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable_peer())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable_peer())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable_peer())
    }
}

/// One manager on a fresh encrypted store, with a reader of its log and
/// its applied state.
struct Single {
    _tmp: tempfile::TempDir,
    raft: Raft,
    log: LogStoreReader,
    applied: Arc<RwLock<Applied>>,
}

/// Starts one manager; `lead`: initialized and leader (otherwise it has
/// no leader and refuses writes).
async fn single(lead: bool) -> Single {
    let tmp = tempfile::tempdir().unwrap();
    let id = NodeId::generate();
    let key = UnlockKey::generate().unwrap();
    let mut store = OpenStore::create(
        &tmp.path().join("store"),
        KeySource::Key(&key),
        ClusterId::generate(),
        id,
    )
    .unwrap();
    let log = store.log.get_log_reader().await;
    let applied = store.sm.applied();
    let config = openraft::Config {
        cluster_name: "batch-test".into(),
        ..Default::default()
    };
    let raft = Raft::new(
        id,
        Arc::new(config.validate().unwrap()),
        NoPeers,
        store.log,
        store.sm,
    )
    .await
    .unwrap();
    if lead {
        raft.initialize(BTreeMap::from([(id, BasicNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        raft.wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "leader")
            .await
            .unwrap();
    }
    Single {
        _tmp: tmp,
        raft,
        log,
        applied,
    }
}

fn record(id: NodeId) -> NodeRecord {
    NodeRecord {
        id,
        hostname: "h".into(),
        role: Role::Worker,
        address: String::new(),
        labels: BTreeMap::new(),
        cert_serial: "01".into(),
        cert_not_after: 100,
        cert_issuer: String::new(),
        availability: Availability::Active,
        ready: true,
    }
}

fn last_index(raft: &Raft) -> u64 {
    raft.metrics().borrow().last_log_index.unwrap_or(0)
}

/// The commands of log entries `from..=to`, one list per entry.
async fn entries(log: &mut LogStoreReader, from: u64, to: u64) -> Vec<Vec<Command>> {
    log.try_get_log_entries(from..=to)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(Command::Batch(commands)) => Some(commands),
            EntryPayload::Normal(command) => Some(vec![command]),
            _ => None,
        })
        .collect()
}

/// `commands` written at once by as many callers; the answers in order.
async fn write_all(
    proposer: &Proposer,
    commands: Vec<Command>,
) -> Vec<Result<moat_store::Written, WriteError>> {
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|c| {
            let p = proposer.clone();
            tokio::spawn(async move { p.write(c).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn concurrent_proposals_share_log_entries() {
    let mut s = single(true).await;
    let proposer = Proposer::new(s.raft.clone());
    let before = last_index(&s.raft);
    let ids: Vec<NodeId> = (0..WRITERS).map(|_| NodeId::generate()).collect();
    let answers = write_all(
        &proposer,
        ids.iter().map(|id| Command::PutNode(record(*id))).collect(),
    )
    .await;
    let after = last_index(&s.raft);
    let mut log_ids = BTreeSet::new();
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a.data, Response::Applied);
        log_ids.insert(a.log_id.index);
    }
    let used = after - before;
    assert!(
        used <= 4,
        "{WRITERS} concurrent proposals took {used} log entries"
    );
    assert_eq!(log_ids.len() as u64, used, "every entry answered someone");
    // Every command is in the log once, in the entries the callers were told.
    let logged: Vec<Command> = entries(&mut s.log, before + 1, after)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(logged.len(), WRITERS);
    let state = s.applied.read().unwrap();
    assert!(ids.iter().all(|id| state.state.nodes.contains_key(id)));
}

#[tokio::test]
async fn each_caller_gets_its_own_response() {
    let s = single(true).await;
    let proposer = Proposer::new(s.raft.clone());
    // Even callers add a node, odd ones touch a node that does not exist.
    let ids: Vec<NodeId> = (0..WRITERS).map(|_| NodeId::generate()).collect();
    let commands = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i % 2 {
            0 => Command::PutNode(record(*id)),
            _ => Command::SetNodeStatus {
                id: *id,
                ready: false,
            },
        })
        .collect();
    let answers = write_all(&proposer, commands).await;
    let entries: BTreeSet<u64> = answers
        .iter()
        .map(|a| a.as_ref().unwrap().log_id.index)
        .collect();
    assert!(entries.len() <= 4, "batched: {} entries", entries.len());
    for (i, (answer, id)) in answers.into_iter().zip(&ids).enumerate() {
        match (i % 2, answer.unwrap().data) {
            (0, Response::Applied) => {}
            (1, Response::Rejected(why)) => assert!(why.contains(&id.to_string()), "{why}"),
            (_, other) => panic!("caller {i} got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_lone_write_is_proposed_as_itself() {
    let mut s = single(true).await;
    let proposer = Proposer::new(s.raft.clone());
    for _ in 0..3 {
        let id = NodeId::generate();
        let w = proposer.write(Command::PutNode(record(id))).await.unwrap();
        assert_eq!(w.data, Response::Applied);
        let entry = s
            .log
            .try_get_log_entries(w.log_id.index..=w.log_id.index)
            .await
            .unwrap();
        assert!(
            matches!(&entry[0].payload, EntryPayload::Normal(Command::PutNode(r)) if r.id == id),
            "{:?}",
            entry[0].payload
        );
    }
}

#[tokio::test]
async fn batches_stay_within_their_caps() {
    // At most 4 commands a batch.
    let mut s = single(true).await;
    let limits = BatchLimits {
        commands: 4,
        ..BatchLimits::default()
    };
    let proposer = Proposer::with_limits(s.raft.clone(), limits);
    let before = last_index(&s.raft);
    let commands = (0..WRITERS)
        .map(|_| Command::PutNode(record(NodeId::generate())))
        .collect();
    assert!(
        write_all(&proposer, commands)
            .await
            .iter()
            .all(|a| a.is_ok())
    );
    let after = last_index(&s.raft);
    let logged = entries(&mut s.log, before + 1, after).await;
    assert!(logged.iter().all(|e| e.len() <= 4), "{logged:?}");
    assert_eq!(logged.iter().map(Vec::len).sum::<usize>(), WRITERS);

    // A byte cap smaller than any command: each goes alone, unwrapped.
    let limits = BatchLimits {
        bytes: 1,
        ..BatchLimits::default()
    };
    let proposer = Proposer::with_limits(s.raft.clone(), limits);
    let before = last_index(&s.raft);
    let commands = (0..8)
        .map(|_| Command::PutNode(record(NodeId::generate())))
        .collect();
    assert!(
        write_all(&proposer, commands)
            .await
            .iter()
            .all(|a| a.is_ok())
    );
    let after = last_index(&s.raft);
    assert_eq!(after - before, 8);
    let raw = s.log.try_get_log_entries(before + 1..=after).await.unwrap();
    assert!(
        raw.iter()
            .all(|e| matches!(e.payload, EntryPayload::Normal(Command::PutNode(_))))
    );
}

#[tokio::test]
async fn audited_writes_keep_their_records_in_a_batch() {
    let s = single(true).await;
    let proposer = Proposer::new(s.raft.clone());
    let commands = (0..16)
        .map(|i| Command::Audited {
            change: Box::new(Command::PutNode(record(NodeId::generate()))),
            time: 1_700_000_000 + i,
            event: moat_audit::Event {
                node: NodeId::generate(),
                actor: moat_audit::Actor::local_user(1000),
                action: moat_audit::Action::NODE_LABEL,
                target: moat_audit::Text::new("target", &format!("node:{i}")).unwrap(),
                outcome: moat_audit::Outcome::Success,
                details: moat_audit::Details::new(),
            },
        })
        .collect();
    let answers = write_all(&proposer, commands).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().unwrap().data == Response::Applied)
    );
    let state = s.applied.read().unwrap();
    assert_eq!(state.state.audit.size(), 16);
    // Written to this manager's segments when the entry applied.
    assert!(state.state.audit.pending().1.is_empty());
    for seq in 1..=16 {
        assert!(state.state.audit.try_record(seq).unwrap().is_some());
    }
}

#[tokio::test]
async fn without_a_leader_every_caller_gets_client_writes_error() {
    let s = single(false).await;
    let alone = s
        .raft
        .client_write(Command::PruneRemoved { now: 1 })
        .await
        .unwrap_err();
    assert!(alone.forward_to_leader().is_some(), "{alone}");
    let proposer = Proposer::new(s.raft.clone());
    let commands = (0..8).map(|now| Command::PruneRemoved { now }).collect();
    for answer in write_all(&proposer, commands).await {
        let e = answer.unwrap_err();
        assert_eq!(e, alone, "the same error as alone");
    }
}

#[tokio::test]
async fn a_stopped_raft_fails_every_caller() {
    let s = single(true).await;
    let proposer = Proposer::new(s.raft.clone());
    s.raft.shutdown().await.unwrap();
    let commands = (0..8).map(|now| Command::PruneRemoved { now }).collect();
    for answer in write_all(&proposer, commands).await {
        assert!(
            matches!(answer, Err(RaftError::Fatal(Fatal::Stopped))),
            "{answer:?}"
        );
    }
    let alone = s.raft.client_write(Command::PruneRemoved { now: 1 }).await;
    assert!(matches!(alone, Err(RaftError::Fatal(Fatal::Stopped))));
}
