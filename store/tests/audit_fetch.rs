//! A manager that installed a snapshot fills its gap with records fetched
//! from another manager (issue 19, step 3), and records are archived
//! (`Command::AuditArchive`, decision D48): through the store's public API,
//! as `moat-node` drives it.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use moat_audit::{Action, Actor, Details, Event, Outcome, Record, Text, leaf_hash};
use moat_lock::{KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId};
use moat_store::audit::{ArchiveMark, AuditReadError};
use moat_store::audit_segments::FillError;
use moat_store::model::Command;
use moat_store::{Entry, LogId, OpenStore};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};

fn event(i: u64) -> Event {
    Event {
        node: "0123456789abcdefghijklmn00".parse().unwrap(),
        actor: Actor::local_operator(),
        action: Action::POLICY_UPDATE,
        target: Text::new("target", &format!("t{i}")).unwrap(),
        outcome: Outcome::Success,
        details: Details::new(),
    }
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, NodeId::default()), index),
        payload: EntryPayload::Normal(command),
    }
}

fn audits(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| {
            entry(
                i,
                Command::Audit {
                    time: 1_700_000_000 + i as i64,
                    event: event(i),
                },
            )
        })
        .collect()
}

fn store(dir: &std::path::Path, cluster: ClusterId, key: &UnlockKey) -> OpenStore {
    OpenStore::create(dir, KeySource::Key(key), cluster, NodeId::generate()).unwrap()
}

#[tokio::test]
async fn a_gap_after_a_snapshot_is_filled_from_a_peer_and_tampered_records_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = ClusterId::generate();
    let key = UnlockKey::generate().unwrap();
    let mut leader = store(&tmp.path().join("leader"), cluster, &key);
    leader.sm.apply(audits(1, 400)).await.unwrap();
    let snap = leader.sm.build_snapshot().await.unwrap();

    let mut follower = store(&tmp.path().join("follower"), cluster, &key);
    follower.sm.apply(audits(1, 10)).await.unwrap();
    follower
        .sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    follower.sm.apply(audits(401, 420)).await.unwrap();
    leader.sm.apply(audits(401, 420)).await.unwrap();

    let trail = follower.sm.applied().read().unwrap().state.audit.clone();
    let peer = leader.sm.applied().read().unwrap().state.audit.clone();
    assert_eq!(trail.missing(), vec![(11, 400)]);
    assert!(matches!(
        trail.try_record(200),
        Err(AuditReadError::Missing {
            from: 11,
            to: 400,
            ..
        })
    ));

    // What the peer serves (read from its own segments).
    let page = |from: u64, to: u64| peer.records(from, (to - from + 1) as usize).unwrap();

    // A record altered on the way: its successor's link does not match.
    let mut bad = page(201, 400);
    let record = Record::from_line(bad[50].as_bytes()).unwrap();
    bad[50] = bad[50].replace("\"t251\"", "\"t999\"");
    assert_ne!(
        leaf_hash(bad[50].as_bytes()),
        leaf_hash(page(251, 251)[0].as_bytes())
    );
    assert_eq!(record.seq(), 251);
    match trail.fill(201, &bad) {
        Err(FillError::Refused(why)) => assert!(why.contains("record 252"), "{why}"),
        other => panic!("a tampered record was accepted: {other:?}"),
    }
    assert_eq!(trail.missing(), vec![(11, 400)], "nothing written");
    assert!(trail.try_record(300).is_err(), "nothing served");

    // Records below the log's start of what is kept, or past the gap: refused.
    assert!(trail.fill(401, &page(401, 410)).is_err());

    // The real ones, newest first, as the fetch loop asks for them.
    assert!(!trail.fill(201, &page(201, 400)).unwrap());
    assert_eq!(trail.missing(), vec![(11, 200)]);
    assert!(trail.fill(11, &page(11, 200)).unwrap());
    assert!(trail.missing().is_empty());
    assert_eq!(
        trail.try_record(300).unwrap(),
        peer.try_record(300).unwrap()
    );
    let root = trail.with_tree(|t| t.root(420).unwrap()).unwrap();
    assert_eq!(root, peer.current_root());

    // After a restart the segments are whole and checked against the state.
    follower.sm.build_snapshot().await.unwrap();
    drop(trail);
    drop(follower);
    let reopened = OpenStore::open(&tmp.path().join("follower"), KeySource::Key(&key)).unwrap();
    let trail = reopened.sm.applied().read().unwrap().state.audit.clone();
    assert!(trail.missing().is_empty());
    assert_eq!(
        trail.try_record(150).unwrap(),
        peer.try_record(150).unwrap()
    );
    assert_eq!(trail.with_tree(|t| t.root(420).unwrap()).unwrap(), root);
}

#[tokio::test]
async fn archived_records_are_refused_with_where_to_read_them() {
    let tmp = tempfile::tempdir().unwrap();
    let key = UnlockKey::generate().unwrap();
    let mut s = store(&tmp.path().join("m"), ClusterId::generate(), &key);
    s.sm.apply(audits(1, 100)).await.unwrap();
    let mark = ArchiveMark {
        below: 61,
        time: 1_700_000_500,
        digest: format!("sha256:{}", "ab".repeat(32)),
    };
    let archive = |index: u64, mark: ArchiveMark| {
        entry(
            index,
            Command::Audited {
                change: Box::new(Command::AuditArchive(mark)),
                time: 1_700_000_500,
                event: Event {
                    action: Action::AUDIT_ARCHIVE,
                    ..event(index)
                },
            },
        )
    };
    s.sm.apply(vec![archive(101, mark.clone())]).await.unwrap();
    let trail = s.sm.applied().read().unwrap().state.audit.clone();
    assert_eq!(trail.size(), 101, "the archival is a record of its own");
    assert_eq!(trail.first_kept(), 61);
    assert_eq!(trail.archived(), Some(&mark));
    let err = trail.try_record(10).unwrap_err();
    assert!(matches!(err, AuditReadError::Archived { .. }));
    let text = err.to_string();
    assert!(text.contains("records 1 to 60 were archived"), "{text}");
    assert!(text.contains(&mark.digest), "{text}");
    assert!(text.contains("--archive DIR"), "{text}");
    assert!(trail.try_record(61).unwrap().is_some());
    assert!(
        trail.missing().is_empty(),
        "archived records are never fetched"
    );
    // Proofs over the whole log still work here (leaf hashes kept).
    assert!(trail.with_tree(|t| t.root(101).unwrap()).is_ok());

    // Archiving again below the mark, or past the log: refused (and
    // recorded as failed).
    s.sm.apply(vec![archive(102, mark.clone())]).await.unwrap();
    let too_far = ArchiveMark {
        below: 500,
        ..mark.clone()
    };
    s.sm.apply(vec![archive(103, too_far)]).await.unwrap();
    let trail = s.sm.applied().read().unwrap().state.audit.clone();
    assert_eq!(trail.first_kept(), 61);
    for seq in [102, 103] {
        let line = trail.try_record(seq).unwrap().unwrap();
        assert!(line.contains("\"outcome\":\"failed\""), "{line}");
    }
    // The mark travels in snapshots and survives a restart.
    s.sm.build_snapshot().await.unwrap();
    drop(trail);
    drop(s);
    let s = OpenStore::open(&tmp.path().join("m"), KeySource::Key(&key)).unwrap();
    let trail = s.sm.applied().read().unwrap().state.audit.clone();
    assert_eq!(trail.archived(), Some(&mark));
    assert!(matches!(
        trail.try_record(1),
        Err(AuditReadError::Archived { .. })
    ));
}

#[tokio::test]
async fn a_manager_that_joins_after_an_archival_adopts_the_archived_leaf_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = ClusterId::generate();
    let key = UnlockKey::generate().unwrap();
    let mut leader = store(&tmp.path().join("leader"), cluster, &key);
    leader.sm.apply(audits(1, 400)).await.unwrap();
    let mark = ArchiveMark {
        below: 201,
        time: 1_700_000_500,
        digest: format!("sha256:{}", "cd".repeat(32)),
    };
    leader
        .sm
        .apply(vec![entry(401, Command::AuditArchive(mark))])
        .await
        .unwrap();
    let snap = leader.sm.build_snapshot().await.unwrap();
    let peer = leader.sm.applied().read().unwrap().state.audit.clone();

    let mut joiner = store(&tmp.path().join("joiner"), cluster, &key);
    joiner
        .sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    let trail = joiner.sm.applied().read().unwrap().state.audit.clone();
    assert_eq!(
        trail.missing(),
        vec![(201, 400)],
        "archived records are not fetched"
    );
    assert!(!trail.lacks_archived_leaves(), "records first");
    assert!(trail.fill(201, &peer.records(201, 200).unwrap()).unwrap());
    assert!(trail.missing().is_empty());
    assert!(trail.lacks_archived_leaves());
    assert!(trail.with_tree(|_| ()).is_err(), "no tree without them");

    let leaves: Vec<_> = peer
        .with_tree(|t| (0..200).map(|i| t.leaf_hash(i).unwrap()).collect())
        .unwrap();
    // Wrong ones (one changed, or too few) are refused, nothing kept.
    let mut wrong = leaves.clone();
    wrong[7] = leaf_hash(b"not a record");
    assert!(matches!(
        trail.adopt_archived_leaves(&wrong),
        Err(FillError::Refused(_))
    ));
    assert!(matches!(
        trail.adopt_archived_leaves(&leaves[..199]),
        Err(FillError::Refused(_))
    ));
    assert!(trail.lacks_archived_leaves());
    // The right ones: the whole tree, as on the leader.
    assert!(trail.adopt_archived_leaves(&leaves).unwrap());
    assert!(!trail.lacks_archived_leaves());
    assert_eq!(
        trail.with_tree(|t| t.root(400).unwrap()).unwrap(),
        peer.with_tree(|t| t.root(400).unwrap()).unwrap()
    );
    // And after a restart.
    joiner.sm.build_snapshot().await.unwrap();
    drop(trail);
    drop(joiner);
    let joiner = OpenStore::open(&tmp.path().join("joiner"), KeySource::Key(&key)).unwrap();
    let trail = joiner.sm.applied().read().unwrap().state.audit.clone();
    assert!(!trail.lacks_archived_leaves());
    assert!(trail.with_tree(|t| t.root(400).unwrap()).is_ok());
}

#[tokio::test]
async fn a_manager_with_a_gap_below_an_archival_gets_whole_again() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = ClusterId::generate();
    let key = UnlockKey::generate().unwrap();
    let mut leader = store(&tmp.path().join("leader"), cluster, &key);
    leader.sm.apply(audits(1, 400)).await.unwrap();
    let snap = leader.sm.build_snapshot().await.unwrap();
    let mut follower = store(&tmp.path().join("follower"), cluster, &key);
    follower.sm.apply(audits(1, 10)).await.unwrap();
    follower
        .sm
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    // Records 11 to 400 missing here when the archival of 1 to 200 applies.
    let mark = ArchiveMark {
        below: 201,
        time: 1_700_000_500,
        digest: format!("sha256:{}", "ef".repeat(32)),
    };
    for s in [&mut leader, &mut follower] {
        s.sm.apply(vec![entry(401, Command::AuditArchive(mark.clone()))])
            .await
            .unwrap();
    }
    let peer = leader.sm.applied().read().unwrap().state.audit.clone();
    let trail = follower.sm.applied().read().unwrap().state.audit.clone();
    assert_eq!(trail.missing(), vec![(201, 400)]);
    trail.fill(201, &peer.records(201, 200).unwrap()).unwrap();
    assert!(trail.missing().is_empty());
    assert!(trail.lacks_archived_leaves());
    let leaves: Vec<_> = peer
        .with_tree(|t| (0..200).map(|i| t.leaf_hash(i).unwrap()).collect())
        .unwrap();
    assert!(trail.adopt_archived_leaves(&leaves).unwrap());
    assert_eq!(
        trail.with_tree(|t| t.root(400).unwrap()).unwrap(),
        peer.with_tree(|t| t.root(400).unwrap()).unwrap()
    );
    assert!(trail.segments().unwrap().gaps().is_empty());
}
