//! `moat store verify` and `moat store dump` on a real store directory.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use moat_lock::{KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId};
use moat_store::model::{Command as StoreCommand, Secret};
use moat_store::{Entry, LogId, OpenStore};
use openraft::{CommittedLeaderId, EntryPayload};
use predicates::prelude::*;
use predicates::str::contains;

fn moat() -> Command {
    Command::cargo_bin("moat").unwrap()
}

/// A state dir with `unlock.key` and a store holding two committed entries.
fn state_dir() -> (tempfile::TempDir, UnlockKey) {
    let tmp = tempfile::tempdir().unwrap();
    let key = UnlockKey::generate().unwrap();
    moat_lock::write_unlock_key_file(tmp.path().join("unlock.key"), &key).unwrap();
    let mut store = OpenStore::create(
        &tmp.path().join("store"),
        KeySource::Key(&key),
        ClusterId::generate(),
        NodeId::generate(),
    )
    .unwrap();
    let at = |i| LogId::new(CommittedLeaderId::new(1, NodeId::default()), i);
    let entries: Vec<Entry> = vec![
        Entry {
            log_id: at(0),
            payload: EntryPayload::Normal(StoreCommand::SetUnlockKey(Some(Secret::new(
                "DUMP-SECRET-1",
            )))),
        },
        Entry {
            log_id: at(1),
            payload: EntryPayload::Normal(StoreCommand::PruneRemoved { now: 0 }),
        },
    ];
    store.log.append_entries(entries).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(openraft::storage::RaftLogStorage::save_committed(
            &mut store.log,
            Some(at(1)),
        ))
        .unwrap();
    (tmp, key)
}

fn segment(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("store/log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap()
}

#[test]
fn verify_summarizes_a_good_store() {
    let (dir, _) = state_dir();
    moat()
        .args(["store", "verify", "--state-dir"])
        .arg(dir.path())
        .assert()
        .success()
        .stdout(
            contains("Data keys: DEK v1")
                .and(contains("Log:       2 records, indexes 0 to 1"))
                .and(contains("Committed: index 1"))
                .and(contains("authenticated")),
        );
}

#[test]
fn dump_redacts_unless_asked() {
    let (dir, _) = state_dir();
    let out = moat()
        .args(["store", "dump", "--format", "json", "--state-dir"])
        .arg(dir.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["state"]["unlock_key"], "<redacted>");
    assert!(!String::from_utf8_lossy(&out).contains("DUMP-SECRET-1"));
    moat()
        .args(["store", "dump", "--show-secrets", "--state-dir"])
        .arg(dir.path())
        .assert()
        .success()
        .stdout(contains("DUMP-SECRET-1"));
}

#[test]
fn tampered_record_names_file_and_offset() {
    let (dir, _) = state_dir();
    let seg = segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x10; // inside the first frame's sealed payload
    std::fs::write(&seg, bytes).unwrap();
    moat()
        .args(["store", "verify", "--state-dir"])
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(
            contains("moat: store verification failed: ")
                .and(contains(seg.file_name().unwrap().to_str().unwrap()))
                .and(contains("is corrupt at"))
                .and(contains("hint: the store was damaged or tampered with")),
        );
}

#[test]
fn key_file_problems_are_explained() {
    let (dir, _) = state_dir();
    let other = dir.path().join("other.key");
    moat_lock::write_unlock_key_file(&other, &UnlockKey::generate().unwrap()).unwrap();
    moat()
        .args(["store", "verify", "--state-dir"])
        .arg(dir.path())
        .arg("--unlock-key-file")
        .arg(&other)
        .assert()
        .code(1)
        .stderr(
            contains("wrong unlock key").and(contains("hint: check that this is the unlock key")),
        );
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    moat()
        .args(["store", "verify", "--state-dir"])
        .arg(dir.path())
        .arg("--unlock-key-file")
        .arg(&other)
        .assert()
        .code(1)
        .stderr(contains("chmod 600"));
    moat()
        .args(["store", "verify", "--state-dir", "/nonexistent"])
        .assert()
        .code(1)
        .stderr(
            contains("/nonexistent holds no moat store")
                .and(contains("hint: pass the state directory")),
        );
    std::fs::remove_file(dir.path().join("unlock.key")).unwrap();
    moat()
        .args(["store", "verify", "--state-dir"])
        .arg(dir.path())
        .assert()
        .code(1)
        .stderr(contains("cannot read the unlock key").and(contains("--unlock-key-file")));
}

/// Guards issue 16, finding 7: a manager whose store data key has sealed
/// 3/4 of its record limit (here: counted so in `keys/dek-1.uses` while
/// it was stopped) rotates that key by itself once it runs again, and the
/// old key's count goes with the old key.
#[test]
fn a_worn_data_key_is_rotated_by_its_manager() {
    let mut h = moat_testkit::Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("m");
    h.init("m", &[]);
    let keys = h.daemon("m").state_dir.join("store/keys");
    h.wait_until(
        "the data key's count is on disk",
        Duration::from_secs(20),
        || keys.join("dek-1.uses").exists(),
    );
    assert_eq!(h.stop("m"), Some(0));
    let worn = moat_lock::DEK_ROTATE_AT;
    std::fs::write(
        keys.join("dek-1.uses"),
        format!(r#"{{"format":1,"dek":1,"leased":{worn}}}"#),
    )
    .unwrap();
    h.restart("m");
    h.wait_until(
        "the worn data key is rotated",
        Duration::from_secs(60),
        || keys.join("dek-2.sealed").exists() && !keys.join("dek-1.sealed").exists(),
    );
    assert!(
        !keys.join("dek-1.uses").exists(),
        "the old count stays behind"
    );
    assert!(keys.join("dek-2.uses").exists());
    h.moat("m", &["node", "ls"]).ok();
}
