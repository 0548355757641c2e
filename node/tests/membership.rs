//! Managers join as learner then voter, leave only when quorum survives,
//! and linearizable reads go through the leader.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use moat_node::ManagerError;
use moat_store::{QuorumError, ReadError, read_linearizable};
use openraft::BasicNode;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_shrink_and_read() {
    let root = tempfile::tempdir().unwrap();
    let (_, members) = members(3, &root);
    let mut nodes = Vec::new();
    for m in &members {
        nodes.push(start(m, TcpListener::bind("127.0.0.1:0").await.unwrap()).await);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    a.raft
        .initialize(BTreeMap::from([(a.id, BasicNode::new(a.addr.to_string()))]))
        .await
        .unwrap();
    leader_among(&[a], None).await;
    write(a, 0, 100).await;

    a.add_manager(b.id, b.addr).await.unwrap();
    a.add_manager(c.id, c.addr).await.unwrap();
    let all: BTreeSet<_> = [a.id, b.id, c.id].into();
    assert_eq!(a.voters(), all);
    let last = a.raft.metrics().borrow().last_log_index.unwrap();
    wait_applied(c, last).await;
    assert_eq!(
        serde_json::to_value(state(c)).unwrap(),
        serde_json::to_value(state(a)).unwrap(),
        "new voter caught up"
    );

    // Linearizable reads: the leader answers, a follower is sent to it.
    let count = read_linearizable(&a.raft, &a.applied, |s| s.nodes.len())
        .await
        .unwrap();
    assert_eq!(count, 100);
    match read_linearizable(&b.raft, &b.applied, |s| s.nodes.len()).await {
        Err(ReadError::Raft(e)) => assert!(e.to_string().contains("forward"), "{e}"),
        other => panic!(
            "a follower must not serve a linearizable read: {:?}",
            other.map(drop)
        ),
    }

    // With b and c unreachable, removing b would leave a alone with c down.
    let only_a: BTreeSet<_> = [a.id].into();
    match a.remove_manager(b.id, &only_a).await {
        Err(ManagerError::Quorum(QuorumError::WouldLoseQuorum {
            remaining: 2,
            reachable_after: 1,
            needed: 2,
            ..
        })) => {}
        other => panic!("expected a quorum refusal, got {other:?}"),
    }
    assert_eq!(a.voters(), all, "refused change must not happen");

    // With everyone up, c may leave.
    a.remove_manager(c.id, &all).await.unwrap();
    assert_eq!(a.voters(), BTreeSet::from([a.id, b.id]));
    write(a, 100, 10).await;

    for n in nodes {
        n.shutdown().await;
    }
}
