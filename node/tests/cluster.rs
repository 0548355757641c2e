//! Three managers in one process, each with its own encrypted store and a
//! real mutual-TLS transport on a loopback port: replication, leader loss,
//! and a restarted manager catching up through a snapshot.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use moat_lock::KeySource;
use moat_node::RaftManager;
use moat_pki::NodeId;
use moat_store::OpenStore;
use openraft::BasicNode;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_lose_leader_and_catch_up_through_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let (_, members) = members(3, &root);
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut running = Vec::new();
    for (m, l) in members.iter().zip(listeners) {
        running.push(Some(start(m, l).await));
    }
    let membership: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .zip(&addrs)
        .map(|(m, a)| (m.id, BasicNode::new(a.to_string())))
        .collect();
    running[0]
        .as_ref()
        .unwrap()
        .raft
        .initialize(membership)
        .await
        .unwrap();

    // 10,000 commands through the leader.
    let all: Vec<&RaftManager> = running.iter().flatten().collect();
    let leader_id = leader_among(&all, None).await;
    let li = members.iter().position(|m| m.id == leader_id).unwrap();
    let mut acked = write(running[li].as_ref().unwrap(), 0, 10_000).await;
    assert_eq!(acked.len(), 10_000);

    // Kill the leader; the two others elect a new one and keep accepting.
    let dead = running[li].take().unwrap();
    dead.kill().await;
    let survivors: Vec<&RaftManager> = running.iter().flatten().collect();
    let new_leader = leader_among(&survivors, Some(leader_id)).await;
    assert_ne!(new_leader, leader_id);
    let nl = survivors.iter().find(|m| m.id == new_leader).unwrap();
    acked.extend(write(nl, 10_000, 1_000).await);

    // Every acknowledged command is on both survivors, and they agree.
    let last = nl.raft.metrics().borrow().last_applied.unwrap().index;
    for s in &survivors {
        wait_applied(s, last).await;
    }
    let reference = state(survivors[0]);
    assert_eq!(
        json(&state(survivors[1])),
        json(&reference),
        "survivors disagree"
    );
    let present: BTreeSet<NodeId> = reference.nodes.keys().copied().collect();
    for id in &acked {
        assert!(present.contains(id), "acknowledged write {id} lost");
    }
    assert_eq!(present.len(), 11_000);

    // The dead manager restarts from its own disk, on its old address.
    let old_last = {
        let store = OpenStore::open(&members[li].dir, KeySource::Key(&members[li].key)).unwrap();
        store
            .sm
            .applied()
            .read()
            .unwrap()
            .last_applied
            .map_or(0, |l| l.index)
    };
    let listener = TcpListener::bind(addrs[li]).await.unwrap();
    let back = start(&members[li], listener).await;
    wait_applied(&back, last).await;
    assert_eq!(
        json(&state(&back)),
        json(&reference),
        "restarted manager differs"
    );
    let snap = back.raft.metrics().borrow().snapshot;
    assert!(
        snap.is_some_and(|s| s.index > old_last),
        "expected a snapshot install past index {old_last}, metrics say {snap:?}"
    );

    back.shutdown().await;
    for m in running.into_iter().flatten() {
        m.shutdown().await;
    }
}

/// A state as JSON, secrets included: states have no `PartialEq` (they
/// hold secrets), and every field is serialized.
fn json(state: &moat_store::model::ClusterState) -> serde_json::Value {
    serde_json::to_value(state).unwrap()
}
