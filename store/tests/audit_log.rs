//! The audit log out of the replicated state (issue 19, decision D45):
//! 100,000 records committed as `Command::Audit` entries through the real
//! encrypted Raft log and state machine leave the snapshot small, read back
//! from the segments, prove, survive a restart, and a flipped byte in a
//! segment stops the store naming the file.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use moat_audit::{
    Action, Actor, Details, Event, MerkleLog, Outcome, Record, Text, verify_inclusion,
};
use moat_lock::{KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId};
use moat_store::model::{ClusterState, Command};
use moat_store::{Entry, LogId, OpenStore, StoreError};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};

const RECORDS: u64 = 100_000;
const BATCH: u64 = 1_000;

fn entry(index: u64) -> Entry {
    let event = Event {
        node: "0123456789abcdefghijklmn00".parse().unwrap(),
        actor: Actor::local_operator(),
        action: Action::POLICY_UPDATE,
        target: Text::new("target", &format!("token:{index:08}")).unwrap(),
        outcome: Outcome::Success,
        details: Details::new(),
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, NodeId::default()), index),
        payload: EntryPayload::Normal(Command::Audit {
            time: 1_700_000_000 + index as i64,
            event,
        }),
    }
}

#[tokio::test]
async fn a_hundred_thousand_records_leave_the_snapshot_small() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let key = UnlockKey::generate().unwrap();
    let mut store = OpenStore::create(
        &dir,
        KeySource::Key(&key),
        ClusterId::generate(),
        NodeId::generate(),
    )
    .unwrap();
    // The same commands a manager commits, in batches as openraft applies
    // them: appended to the encrypted log, then applied.
    let zero = vec![Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, NodeId::default()), 0),
        payload: EntryPayload::Normal(Command::PruneRemoved { now: 1 }),
    }];
    store.log.append_entries(zero.clone()).unwrap();
    store.sm.apply(zero).await.unwrap();
    let mut before = ClusterState::default();
    for b in 0..RECORDS / BATCH {
        let entries: Vec<Entry> = (b * BATCH + 1..=(b + 1) * BATCH).map(entry).collect();
        if b < 10 {
            for e in &entries {
                if let EntryPayload::Normal(c) = &e.payload {
                    before.apply(c);
                }
            }
        }
        store.log.append_entries(entries.clone()).unwrap();
        store.sm.apply(entries).await.unwrap();
    }
    store.sm.build_snapshot().await.unwrap();
    let applied = store.sm.applied();
    let (bytes, root, size) = {
        let a = applied.read().unwrap();
        (
            a.snapshot_bytes,
            a.state.audit.current_root(),
            a.state.audit.size(),
        )
    };
    assert_eq!(size, RECORDS);
    // What the state alone would weigh with its records in it (measured on
    // the first 10,000 and scaled): the size before D45.
    let old = serde_json::to_vec(&before).unwrap().len() as u64 * (RECORDS / 10_000);
    eprintln!(
        "snapshot with {RECORDS} audit records: {bytes} bytes (records in the state: about {old} bytes of JSON)"
    );
    assert!(bytes < 1 << 20, "{bytes} bytes");

    // Every record reads back from the segments, links and hashes to the
    // state's root; a proof for one of them checks.
    let mut tree = MerkleLog::new();
    {
        let a = applied.read().unwrap();
        a.state
            .audit
            .for_each_record(1, RECORDS, |_, line| {
                let r = Record::from_line(line.as_bytes()).unwrap();
                tree.append_record(&r).unwrap();
                Ok(true)
            })
            .unwrap();
        assert_eq!(tree.current_root(), root);
        let seq = 77_777;
        let line = a.state.audit.try_record(seq).unwrap().unwrap();
        let proof = a
            .state
            .audit
            .with_tree(|t| t.inclusion_proof(seq - 1, RECORDS).unwrap())
            .unwrap();
        verify_inclusion(
            &moat_audit::leaf_hash(line.as_bytes()),
            seq - 1,
            RECORDS,
            &proof,
            &root,
        )
        .unwrap();
    }
    let files = applied
        .read()
        .unwrap()
        .state
        .audit
        .segments()
        .unwrap()
        .files();
    drop(applied);
    drop(store);

    // Rebuilt from its snapshot and segments, the manager serves the same log.
    let store = OpenStore::open(&dir, KeySource::Key(&key)).unwrap();
    {
        let applied = store.sm.applied();
        let a = applied.read().unwrap();
        assert_eq!(a.state.audit.size(), RECORDS);
        assert_eq!(a.state.audit.current_root(), root);
        assert_eq!(a.state.audit.with_tree(|t| t.current_root()).unwrap(), root);
        let last = a.state.audit.records(RECORDS - 1, 10).unwrap();
        assert_eq!(last.len(), 2);
    }
    drop(store);

    // A byte flipped in a segment: the store refuses to open, naming it.
    let (path, _, _) = &files[files.len() / 2];
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(path, &bytes).unwrap();
    match OpenStore::open(&dir, KeySource::Key(&key)) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("byte "), "{text}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a flipped byte in {} was accepted", path.display()),
    }
}
