//! DEK rotation on a running manager, and recovery from a crash after
//! each step of it.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use common::*;
use moat_lock::{DekVersion, KeySource};
use moat_node::{RaftManager, RotationStep};
use moat_store::{OpenStore, files_sealed_with, offline};
use openraft::BasicNode;
use tokio::net::TcpListener;

async fn single(m: &Member) -> RaftManager {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(m, listener).await
}

async fn leader_of_one(m: &Member) -> RaftManager {
    let node = single(m).await;
    let membership = BTreeMap::from([(m.id, BasicNode::new(node.addr.to_string()))]);
    node.raft.initialize(membership).await.unwrap();
    leader_among(&[&node], None).await;
    node
}

fn dek_files(m: &Member) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m.dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dek-") && n.ends_with(".sealed"))
        .collect();
    v.sort();
    v
}

async fn check_finished(m: &Member, expected_nodes: usize) {
    assert_eq!(dek_files(m), vec!["dek-2.sealed".to_string()]);
    // The record count goes with the retired key; the new key has one.
    assert!(!m.dir.join("keys/dek-1.uses").exists());
    assert!(m.dir.join("keys/dek-2.uses").exists());
    assert!(files_sealed_with(&m.dir, DekVersion(1)).unwrap().is_empty());
    let report = offline::verify(&m.dir, KeySource::Key(&m.key))
        .await
        .unwrap();
    assert_eq!(report.dek_versions, vec![2]);
    let dump = offline::dump(&m.dir, KeySource::Key(&m.key), false)
        .await
        .unwrap();
    assert_eq!(
        dump.state["nodes"].as_object().unwrap().len(),
        expected_nodes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_moves_every_record_to_the_new_key() {
    let root = tempfile::tempdir().unwrap();
    let (_, members) = members(1, &root);
    let m = &members[0];
    let node = leader_of_one(m).await;
    write(&node, 0, 300).await;
    assert!(!files_sealed_with(&m.dir, DekVersion(1)).unwrap().is_empty());

    let v = node
        .rotate_dek(&m.dir, KeySource::Key(&m.key), None)
        .await
        .unwrap();
    assert_eq!(v, DekVersion(2));
    write(&node, 300, 50).await;
    node.shutdown().await;
    check_finished(m, 350).await;
}

/// A crash after each step: the manager restarts with both keys, every
/// write is still there, and the rotation resumes and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_recovers_from_a_crash_at_each_step() {
    for step in [
        RotationStep::Begun,
        RotationStep::Snapshotted,
        RotationStep::Purged,
    ] {
        let root = tempfile::tempdir().unwrap();
        let (_, members) = members(1, &root);
        let m = &members[0];
        let node = leader_of_one(m).await;
        write(&node, 0, 300).await;
        node.rotate_dek(&m.dir, KeySource::Key(&m.key), Some(step))
            .await
            .unwrap();
        write(&node, 300, 50).await;
        node.kill().await;

        assert_eq!(
            dek_files(m),
            vec!["dek-1.sealed".to_string(), "dek-2.sealed".to_string()],
            "{step:?}"
        );
        let reopened = OpenStore::open(&m.dir, KeySource::Key(&m.key)).unwrap();
        drop(reopened);
        let node = single(m).await;
        leader_among(&[&node], None).await;
        let last = node.raft.metrics().borrow().last_log_index.unwrap();
        wait_applied(&node, last).await;
        assert_eq!(
            state(&node).nodes.len(),
            350,
            "{step:?}: writes lost across the crash"
        );
        node.rotate_dek(&m.dir, KeySource::Key(&m.key), None)
            .await
            .unwrap();
        write(&node, 350, 10).await;
        node.shutdown().await;
        check_finished(m, 360).await;
    }
}
