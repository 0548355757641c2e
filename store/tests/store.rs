//! A whole store directory: nothing secret on disk, every file kind
//! tamper-evident, and the offline tools over both DEKs of a rotation.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use moat_lock::{Aad, DekVersion, KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId, Role};
use moat_store::model::{CaMaterial, Command, JoinTokens, Policy, Secret};
use moat_store::{Entry, LogId, OpenStore, StoreError, Vote, offline};
use moat_tokens::JoinToken;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload};

const CA_MARKER: &str = "CA-KEY-MARKER-5e1f0c";
const UNLOCK_MARKER: &str = "UNLOCK-KEY-MARKER-77a1";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: UnlockKey,
    tokens: JoinTokens,
}

fn entry(index: u64, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, NodeId::default()), index),
        payload: EntryPayload::Normal(command),
    }
}

/// A store with entries 0..=3 applied and snapshotted, then 4..=5 in the
/// log only, a vote and a committed index.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let key = UnlockKey::generate().unwrap();
    let cluster = ClusterId::generate();
    let tokens = JoinTokens {
        worker: JoinToken::generate(b"bundle").unwrap(),
        manager: JoinToken::generate(b"bundle").unwrap(),
        worker_issued_at: 0,
        manager_issued_at: 0,
    };
    let mut store =
        OpenStore::create(&dir, KeySource::Key(&key), cluster, NodeId::generate()).unwrap();
    let first = vec![
        entry(
            0,
            Command::Init {
                cluster_id: cluster,
                policy: Policy::default(),
                ca: CaMaterial {
                    root_cert_pem: "cert".into(),
                    root_key_pkcs8: Secret::new(CA_MARKER),
                },
                join_tokens: tokens.clone(),
            },
        ),
        entry(1, Command::SetUnlockKey(Some(Secret::new(UNLOCK_MARKER)))),
        entry(
            2,
            Command::RotateJoinToken {
                role: Role::Worker,
                token: tokens.worker.clone(),
                issued_at: 0,
            },
        ),
        entry(3, Command::PruneRemoved { now: 1 }),
    ];
    store.log.append_entries(first.clone()).unwrap();
    store.sm.apply(first).await.unwrap();
    store.sm.build_snapshot().await.unwrap();
    let later = vec![
        entry(
            4,
            Command::SetPolicy(Policy {
                cert_expiry_secs: 600,
                autolock: true,
                token_ttl_secs: None,
            }),
        ),
        entry(5, Command::PruneRemoved { now: 2 }),
    ];
    store.log.append_entries(later).unwrap();
    store
        .log
        .save_vote(&Vote::new(1, NodeId::default()))
        .await
        .unwrap();
    store
        .log
        .save_committed(Some(LogId::new(
            CommittedLeaderId::new(1, NodeId::default()),
            4,
        )))
        .await
        .unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        key,
        tokens,
    }
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn nothing_secret_on_disk_in_plaintext() {
    let f = fixture().await;
    let identity = moat_store::read_identity(&f.dir).unwrap();
    let (cluster, node) = (
        identity.cluster_id.to_string(),
        identity.node_id.to_string(),
    );
    let dek_file = f.dir.join("keys/dek-1.sealed");
    let raw_dek = moat_lock::unseal_file(
        &dek_file,
        KeySource::Key(&f.key),
        &Aad::new("store-dek", &cluster, &node),
    )
    .unwrap()
    .plaintext;
    assert_eq!(raw_dek.len(), 32);
    let worker = f.tokens.worker.expose_secret();
    let manager = f.tokens.manager.expose_secret();
    let unlock = f.key.expose_for_operator();
    let files = all_files(&f.dir);
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for (what, needle) in [
            ("CA key", CA_MARKER.as_bytes()),
            ("stored unlock key", UNLOCK_MARKER.as_bytes()),
            ("worker token", worker.as_bytes()),
            ("manager token", manager.as_bytes()),
            ("KEK", unlock.as_bytes()),
            ("raw DEK", &raw_dek[..]),
        ] {
            assert!(
                !contains(&bytes, needle),
                "{what} in plaintext in {}",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn verify_and_dump_report_the_store() {
    let f = fixture().await;
    let report = offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap();
    assert_eq!(report.dek_versions, vec![1]);
    assert_eq!(report.snapshot.unwrap().last_index, Some(3));
    assert_eq!(
        (report.log_first, report.log_last, report.committed),
        (Some(0), Some(5), Some(4))
    );
    let dump = offline::dump(&f.dir, KeySource::Key(&f.key), false)
        .await
        .unwrap();
    assert_eq!(
        dump.state["policy"]["cert_expiry_secs"], 600,
        "committed entry 4 applied"
    );
    assert_eq!(dump.uncommitted_entries, 1);
    let text = dump.state.to_string();
    assert!(!text.contains(CA_MARKER) && !text.contains(UNLOCK_MARKER));
    let shown = offline::dump(&f.dir, KeySource::Key(&f.key), true)
        .await
        .unwrap()
        .state
        .to_string();
    assert!(shown.contains(CA_MARKER) && shown.contains(UNLOCK_MARKER));

    let wrong = UnlockKey::generate().unwrap();
    let err = offline::verify(&f.dir, KeySource::Key(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Key { .. }), "{err}");
    assert!(err.to_string().contains("dek-1.sealed"), "{err}");
}

/// SwarmKit's rafttool never tried the pending DEK; ours must.
#[tokio::test]
async fn records_sealed_with_the_pending_dek_are_read() {
    let f = fixture().await;
    {
        let mut store = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
        let identity = store.identity;
        store
            .cipher
            .with_deks(|deks| {
                let pending = deks.begin_rotation().unwrap();
                moat_store::write_dek(&f.dir, &identity, KeySource::Key(&f.key), pending).unwrap();
            })
            .unwrap();
        store
            .log
            .append_entries(vec![entry(
                6,
                Command::SetPolicy(Policy {
                    cert_expiry_secs: 900,
                    autolock: true,
                    token_ttl_secs: None,
                }),
            )])
            .unwrap();
        store
            .log
            .save_committed(Some(LogId::new(
                CommittedLeaderId::new(1, NodeId::default()),
                6,
            )))
            .await
            .unwrap();
    }
    let report = offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap();
    assert_eq!(report.dek_versions, vec![1, 2]);
    let dump = offline::dump(&f.dir, KeySource::Key(&f.key), false)
        .await
        .unwrap();
    assert_eq!(dump.state["policy"]["cert_expiry_secs"], 900);

    // Without the pending key the records sealed with it are refused.
    std::fs::remove_file(f.dir.join("keys/dek-2.sealed")).unwrap();
    let err = offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

/// For each kind of file the store writes, a flipped byte or a cut file
/// stops the store with a message naming that file.
#[tokio::test]
async fn every_file_kind_is_tamper_evident() {
    let f = fixture().await;
    let files = all_files(&f.dir);
    let pick = |pred: &dyn Fn(&str) -> bool| {
        files
            .iter()
            .find(|p| pred(p.file_name().unwrap().to_str().unwrap()))
            .cloned()
            .unwrap_or_else(|| panic!("no such file in {files:?}"))
    };
    let kinds = [
        ("identity", pick(&|n| n == "store.json")),
        ("DEK", pick(&|n| n.starts_with("dek-"))),
        ("log segment", pick(&|n| n.ends_with(".seg"))),
        ("vote", pick(&|n| n == "vote")),
        ("metadata", pick(&|n| n == "meta")),
        ("snapshot", pick(&|n| n.ends_with(".snap"))),
    ];
    for (kind, path) in kinds {
        let good = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut cases: Vec<(String, Vec<u8>)> = vec![(format!("{kind}: flip middle byte"), {
            let mut b = good.clone();
            b[good.len() / 2] ^= 0x04;
            b
        })];
        if kind != "log segment" {
            // Cutting the log's tail is what a crash does and is repaired;
            // every other file is written atomically, so a short one is bad.
            cases.push((
                format!("{kind}: truncated"),
                good[..good.len() - 3].to_vec(),
            ));
        }
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let err = OpenStore::open(&f.dir, KeySource::Key(&f.key))
                .err()
                .unwrap_or_else(|| panic!("{what}: store opened"));
            let msg = format!("{err:#}");
            let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            assert!(
                chain.contains(&name),
                "{what}: error does not name {name}: {msg} / {chain}"
            );
        }
        std::fs::write(&path, &good).unwrap();
    }
    OpenStore::open(&f.dir, KeySource::Key(&f.key)).expect("restored files open again");
}

/// Verifying a backup must not change it, not even by repairing a torn
/// log tail the way a starting manager would.
#[tokio::test]
async fn verify_is_read_only() {
    let f = fixture().await;
    let seg = all_files(&f.dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0, 0, 1, 0, 7]); // a torn, half-written frame
    std::fs::write(&seg, &bytes).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = all_files(&f.dir)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let report = offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap();
    assert_eq!(report.log_last, Some(5));
    let after: Vec<(PathBuf, Vec<u8>)> = all_files(&f.dir)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert!(before == after, "verify changed the store");
    // A manager starting from it does repair the tail.
    drop(OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap());
    assert!(std::fs::read(&seg).unwrap().len() < bytes.len());
}

#[tokio::test]
async fn a_store_is_opened_by_one_process_at_a_time() {
    let f = fixture().await;
    let first = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
    let err = OpenStore::open(&f.dir, KeySource::Key(&f.key))
        .err()
        .expect("second open must fail");
    assert!(
        err.to_string().contains("in use by another moat process"),
        "{err}"
    );
    // Offline verification reads without taking the lock.
    offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap();
    drop(first);
    OpenStore::open(&f.dir, KeySource::Key(&f.key)).expect("lock released with the store");
}

/// The committed id is durable when first set, then every
/// `COMMITTED_PERSIST_EVERY` entries and at a clean shutdown; a crash
/// leaves it behind by less than that, never ahead.
#[tokio::test]
async fn committed_id_is_persisted_lazily_but_never_ahead() {
    let f = fixture().await; // committed index 4 is on disk
    let at = |i| LogId::new(CommittedLeaderId::new(1, NodeId::default()), i);
    {
        let mut store = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
        store.log.save_committed(Some(at(5))).await.unwrap();
        assert_eq!(store.log.read_committed().await.unwrap(), Some(at(5)));
        std::mem::forget(store); // a crash: no shutdown hook runs
    }
    // The forgotten store still holds the directory lock in this process;
    // a read-only open does not need it.
    let report = offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap();
    assert_eq!(report.committed, Some(4), "lagging, never ahead");
}

#[tokio::test]
async fn committed_id_is_flushed_at_clean_shutdown() {
    let f = fixture().await;
    let at = |i| LogId::new(CommittedLeaderId::new(1, NodeId::default()), i);
    let mut store = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
    store.log.save_committed(Some(at(5))).await.unwrap();
    drop(store);
    let report = offline::verify(&f.dir, KeySource::Key(&f.key))
        .await
        .unwrap();
    assert_eq!(report.committed, Some(5));
}

/// The lease end `keys/dek-<v>.uses` holds.
fn leased(path: &Path) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["leased"].as_u64().unwrap()
}

fn seal_one(store: &OpenStore) -> Result<Vec<u8>, StoreError> {
    store
        .cipher
        .seal(moat_store::FileKind::Meta, b"lease-test", b"record")
}

/// Guards issue 16, finding 7: a DEK's record count survives a restart
/// (it used to start from zero in every process).
#[tokio::test]
async fn dek_record_count_survives_a_restart() {
    let f = fixture().await;
    let sealed = {
        let store = OpenStore::open_with_lease(&f.dir, KeySource::Key(&f.key), 4).unwrap();
        for _ in 0..10 {
            seal_one(&store).unwrap();
        }
        let (version, sealed) = store.cipher.records_sealed().unwrap();
        assert_eq!(version, DekVersion(1));
        sealed
    };
    assert!(sealed >= 10, "{sealed}");
    let uses = f.dir.join("keys/dek-1.uses");
    assert!(
        leased(&uses) >= sealed,
        "the lease on disk covers every record"
    );

    let store = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
    let (_, resumed) = store.cipher.records_sealed().unwrap();
    assert!(
        resumed >= sealed,
        "the count restarted at {resumed}, below the {sealed} records sealed before"
    );
    assert_eq!(resumed, leased(&uses), "every leased record counts as used");
}

/// Guards issue 16, finding 7: the lease is extended on disk before a
/// record past it is sealed; if that write fails, nothing is sealed.
#[tokio::test]
async fn dek_lease_is_durable_before_a_record_past_it() {
    let f = fixture().await;
    let uses = f.dir.join("keys/dek-1.uses");
    let store = OpenStore::open_with_lease(&f.dir, KeySource::Key(&f.key), 4).unwrap();
    let count = || store.cipher.records_sealed().unwrap().1;
    let start = count();
    assert_eq!(start, leased(&uses), "the count starts at the lease end");

    seal_one(&store).unwrap();
    assert_eq!(leased(&uses), start + 4, "extended before the first record");
    for _ in 0..3 {
        seal_one(&store).unwrap();
    }
    assert_eq!(count(), start + 4);
    assert_eq!(leased(&uses), start + 4, "no write inside the lease");

    // The next lease cannot be written: a directory stands in its place.
    std::fs::remove_file(&uses).unwrap();
    std::fs::create_dir(&uses).unwrap();
    std::fs::write(uses.join("block"), b"").unwrap();
    let err = seal_one(&store).unwrap_err();
    assert!(err.to_string().contains("dek-1.uses"), "{err}");
    assert_eq!(count(), start + 4, "nothing sealed past the durable lease");

    std::fs::remove_dir_all(&uses).unwrap();
    seal_one(&store).unwrap();
    assert_eq!(count(), start + 5);
    assert_eq!(leased(&uses), start + 8);
}

/// Guards issue 16, finding 7: a damaged record count is never taken for
/// zero; the store refuses to open and names the file.
#[tokio::test]
async fn a_damaged_dek_lease_file_is_refused() {
    let f = fixture().await;
    let uses = f.dir.join("keys/dek-1.uses");
    let over = moat_lock::MAX_RECORDS_PER_DEK + 1;
    for bad in [
        "garbage".to_string(),
        r#"{"format":1,"dek":2,"leased":5}"#.to_string(),
        format!(r#"{{"format":1,"dek":1,"leased":{over}}}"#),
        r#"{"format":9,"dek":1,"leased":5}"#.to_string(),
        r#"{"format":1,"dek":1,"leased":-1}"#.to_string(),
    ] {
        std::fs::write(&uses, &bad).unwrap();
        let err = match OpenStore::open(&f.dir, KeySource::Key(&f.key)) {
            Err(e) => e,
            Ok(_) => panic!("{bad}: a damaged count was accepted"),
        };
        assert!(matches!(err, StoreError::Lease { .. }), "{bad}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&uses.display().to_string()), "{msg}");
        assert!(msg.contains("delete it"), "{msg}");
        let err = offline::verify(&f.dir, KeySource::Key(&f.key))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Lease { .. }), "verify: {err}");
    }
}

/// A DEK without a record count (sealed by an older moat, or restored
/// from a backup) counts as due for rotation, and keeps counting so.
#[tokio::test]
async fn a_missing_dek_lease_file_counts_the_key_as_due_for_rotation() {
    let f = fixture().await;
    let uses = f.dir.join("keys/dek-1.uses");
    std::fs::remove_file(&uses).unwrap();
    {
        let store = OpenStore::open_with_lease(&f.dir, KeySource::Key(&f.key), 4).unwrap();
        assert_eq!(
            store.cipher.records_sealed(),
            Some((DekVersion(1), moat_lock::DEK_ROTATE_AT))
        );
        assert!(store.cipher.rotation_advised());
        seal_one(&store).unwrap();
        assert_eq!(leased(&uses), moat_lock::DEK_ROTATE_AT + 4);
    }
    let store = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
    assert!(store.cipher.rotation_advised());
}

/// At the limit sealing refuses and says to rotate; a rotation starts
/// the new key's count at zero, on disk before its first record.
#[tokio::test]
async fn a_worn_out_dek_refuses_and_rotation_starts_a_new_count() {
    let f = fixture().await;
    let max = moat_lock::MAX_RECORDS_PER_DEK;
    std::fs::write(
        f.dir.join("keys/dek-1.uses"),
        format!(r#"{{"format":1,"dek":1,"leased":{max}}}"#),
    )
    .unwrap();
    let store = OpenStore::open(&f.dir, KeySource::Key(&f.key)).unwrap();
    assert!(store.cipher.rotation_advised());
    let err = seal_one(&store).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Lock(moat_lock::LockError::DekUsageLimit { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rotate"), "{err}");

    let version = moat_store::begin_dek_rotation(
        &f.dir,
        &store.identity,
        KeySource::Key(&f.key),
        &store.cipher,
    )
    .unwrap();
    assert_eq!(version, DekVersion(2));
    let uses2 = f.dir.join("keys/dek-2.uses");
    assert_eq!(leased(&uses2), 0, "the new key's count is on disk first");
    assert!(!store.cipher.rotation_advised());
    seal_one(&store).unwrap();
    assert_eq!(store.cipher.records_sealed(), Some((DekVersion(2), 1)));
    assert_eq!(leased(&uses2), moat_store::DEK_USE_LEASE);
}
