//! Which key seals a node's keys, and how they move from one key to
//! another.
//!
//! Every node seals its TLS key (`certs/node.sealed`) and, on managers, the
//! store's data keys (`store/keys/dek-<v>.sealed`) under one
//! key-encryption key (KEK):
//!
//! - **autolock off**, or any worker: a random key of the node's own,
//!   kept in `unlock.key` (0600). A restart needs nothing from anyone.
//! - **autolock on**, managers: the cluster's unlock key, which the store
//!   holds (encrypted under the data key) and no file on disk does. A
//!   restarted manager stays locked until someone gives it the key.
//!
//! Moving from one KEK to another ([`rekey`]) re-seals every file, and
//! must leave all of them under one key or the other whatever the moment
//! of a crash, or the node could not be unlocked with either. So it is a
//! tiny journal: each file's new content is written beside it as
//! `<file>.next` (fsynced), then `rekey.commit` names them (the commit
//! point, written atomically), then each `.next` file is renamed over its
//! original and the commit record removed. At start, [`finish_rekey`]
//! rolls a committed change forward (renames need no key) and discards an
//! uncommitted one.

use std::fs;
use std::path::{Path, PathBuf};

use moat_api::ErrorKind;
use moat_lock::{KeySource, LockError, UnlockKey};
use moat_pki::{ClusterId, NodeId, Role};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::NodeError;
use crate::files::{self, Layout, io_error};

const COMMIT_FILE: &str = "rekey.commit";
const NEXT_SUFFIX: &str = ".next";
/// The largest commit record read back.
const MAX_COMMIT_BYTES: u64 = 64 * 1024;

/// What happens to `unlock.key` as part of a rekey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KekFile {
    /// Left as it is.
    Keep,
    /// Written with the new key (autolock turned off).
    Write,
    /// Removed (autolock turned on: the key is no longer on disk).
    Remove,
}

#[derive(Debug, Serialize, Deserialize)]
struct Commit {
    /// Files (relative to the state directory) whose `.next` replaces them.
    files: Vec<String>,
    kek_file: KekFile,
}

fn next_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(NEXT_SUFFIX);
    PathBuf::from(name)
}

fn lock_error(what: &str, e: LockError) -> NodeError {
    NodeError::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// Re-seals this node's sealed files from `old` to `new`, crash-safely
/// (see the module docs), and applies `kek_file`.
pub(crate) fn rekey(
    layout: &Layout,
    cluster: &ClusterId,
    node: &NodeId,
    old: &UnlockKey,
    new: &UnlockKey,
    kek_file: KekFile,
) -> Result<(), NodeError> {
    // A previous attempt's leftovers first (committed or not).
    finish_rekey(layout)?;
    let commit = stage(layout, cluster, node, old, new, kek_file)?;
    let json = serde_json::to_vec(&commit)
        .map_err(|e| NodeError::new(ErrorKind::Internal, format!("encoding the rekey: {e}")))?;
    // The commit point: from here on the new key is the one.
    moat_lock::write_file_atomic(layout.dir().join(COMMIT_FILE), &json)
        .map_err(|e| lock_error("committing the rekey", e))?;
    finish_rekey(layout)?;
    Ok(())
}

/// Writes each file's re-sealed content beside it as `<file>.next`.
fn stage(
    layout: &Layout,
    cluster: &ClusterId,
    node: &NodeId,
    old: &UnlockKey,
    new: &UnlockKey,
    kek_file: KekFile,
) -> Result<Commit, NodeError> {
    let mut staged = Vec::new();
    let tls = layout.sealed_tls_file();
    if tls.exists() {
        let blob = files::reseal_tls(layout, old, new, cluster, node)?;
        moat_lock::write_sealed_file(next_of(&tls), &blob)
            .map_err(|e| lock_error("staging the re-sealed TLS key", e))?;
        staged.push(tls);
    }
    let store = layout.store_dir();
    if store.join("store.json").exists() {
        let deks = moat_store::rewrap_deks(&store, KeySource::Key(old), KeySource::Key(new))
            .map_err(|e| {
                NodeError::new(
                    ErrorKind::Internal,
                    format!("re-sealing the store's data keys: {e}"),
                )
            })?;
        for (path, blob) in deks {
            moat_lock::write_sealed_file(next_of(&path), &blob)
                .map_err(|e| lock_error("staging a re-sealed data key", e))?;
            staged.push(path);
        }
    }
    if kek_file == KekFile::Write {
        let path = layout.kek_file();
        moat_lock::write_unlock_key_file(next_of(&path), new)
            .map_err(|e| lock_error("staging the node key file", e))?;
        staged.push(path);
    }
    Ok(Commit {
        files: staged
            .iter()
            .filter_map(|p| p.strip_prefix(layout.dir()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        kek_file,
    })
}

/// Completes a committed rekey, or discards an uncommitted one; returns
/// whether a committed one was found.
pub(crate) fn finish_rekey(layout: &Layout) -> Result<bool, NodeError> {
    let path = layout.dir().join(COMMIT_FILE);
    let bytes = match fs::File::open(&path) {
        Ok(f) => {
            use std::io::Read;
            let mut bytes = Vec::new();
            f.take(MAX_COMMIT_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| io_error(&format!("reading {}", path.display()), e))?;
            Some(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&format!("opening {}", path.display()), e)),
    };
    let Some(bytes) = bytes else {
        discard_staged(layout)?;
        return Ok(false);
    };
    let commit: Commit = serde_json::from_slice(&bytes).map_err(|e| {
        NodeError::fatal(&path, format!("the key-change record is damaged: {e}"))
            .hint(crate::files::START_OVER_HINT)
    })?;
    let mut dirs = std::collections::BTreeSet::new();
    for rel in &commit.files {
        if !is_sealed_file(rel) {
            return Err(NodeError::fatal(
                &path,
                format!("the key-change record names {rel:?}, which is not a key file"),
            )
            .hint(crate::files::START_OVER_HINT));
        }
        let target = layout.dir().join(rel);
        let next = next_of(&target);
        if next.exists() {
            fs::rename(&next, &target)
                .map_err(|e| io_error(&format!("renaming {}", next.display()), e))?;
        }
        if let Some(parent) = target.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    if commit.kek_file == KekFile::Remove {
        files::remove_file(&layout.kek_file())?;
    }
    for dir in dirs {
        files::sync_dir(&dir)?;
    }
    files::remove_file(&path)?;
    files::sync_dir(layout.dir())?;
    Ok(true)
}

/// The files a rekey may replace.
fn is_sealed_file(rel: &str) -> bool {
    rel == "certs/node.sealed"
        || rel == "unlock.key"
        || rel
            .strip_prefix("store/keys/dek-")
            .and_then(|r| r.strip_suffix(".sealed"))
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

fn discard_staged(layout: &Layout) -> Result<(), NodeError> {
    for dir in [
        layout.dir().to_path_buf(),
        layout.dir().join("certs"),
        layout.store_dir().join("keys"),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(NEXT_SUFFIX) {
                files::remove_file(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// The cluster's autolock setting as this manager's store holds it.
pub(crate) struct Autolock {
    /// Grows with every change (see `ClusterState::unlock_key_version`).
    pub(crate) generation: u32,
    /// The unlock key while autolock is on.
    pub(crate) key: Option<UnlockKey>,
}

impl Autolock {
    /// Reads the setting from a manager's applied state.
    pub(crate) fn of(state: &moat_store::model::ClusterState) -> Result<Self, NodeError> {
        let key = match (&state.unlock_key, state.policy.autolock) {
            (Some(k), true) => Some(k.expose_secret().parse::<UnlockKey>().map_err(|e| {
                NodeError::new(
                    ErrorKind::Internal,
                    format!("the unlock key in the store is malformed: {e}"),
                )
            })?),
            _ => None,
        };
        Ok(Self {
            generation: state.unlock_key_version,
            key,
        })
    }
}

/// A copy of a key (the type is deliberately not `Clone`).
pub(crate) fn clone_key(key: &UnlockKey) -> Result<UnlockKey, NodeError> {
    key.expose_for_operator()
        .parse()
        .map_err(|e: LockError| NodeError::new(ErrorKind::Internal, e.to_string()))
}

/// What a node must do to its keys to match the cluster's autolock policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPlan {
    /// Nothing.
    Keep,
    /// Autolock turned on: move from the node's own key to the unlock key,
    /// remove `unlock.key`, then rotate the data key and the TLS key (both
    /// were sealed under a key kept on disk).
    Lock,
    /// The unlock key was rotated: move to the new one.
    Rotate,
    /// Autolock turned off (or this node is a worker now): move to a new key
    /// of the node's own, written to `unlock.key`.
    Unlock,
}

/// Decides the [`KeyPlan`]. `setting` is the cluster's autolock setting as
/// a manager's store holds it (`None` on a worker: workers are never
/// locked), `file_generation` the setting this node's files last followed
/// (a manager's view may lag behind its files after a restart: only a
/// newer setting is acted on), `on_disk` whether `unlock.key` exists and
/// `current` the KEK in use.
pub(crate) fn plan(
    role: Role,
    setting: Option<&Autolock>,
    file_generation: u32,
    on_disk: bool,
    current: &UnlockKey,
) -> KeyPlan {
    let setting = match setting {
        Some(s) if role == Role::Manager => s,
        // A manager whose store is not open yet (just joined, or taking up
        // the role) has no view of the setting: it keeps what it has. It
        // must not fall back to a key of its own, which would write its
        // KEK to disk in a cluster with autolock on.
        None if role == Role::Manager => return KeyPlan::Keep,
        _ if on_disk => return KeyPlan::Keep,
        _ => return KeyPlan::Unlock,
    };
    if setting.generation <= file_generation {
        return KeyPlan::Keep;
    }
    match (&setting.key, on_disk) {
        (Some(_), true) => KeyPlan::Lock,
        (Some(k), false) if !bool::from(k.ct_eq(current)) => KeyPlan::Rotate,
        (None, false) => KeyPlan::Unlock,
        _ => KeyPlan::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_follows_policy_role_and_generation() {
        let a = UnlockKey::generate().unwrap();
        let b = UnlockKey::generate().unwrap();
        let on = |g, k: &UnlockKey| Autolock {
            generation: g,
            key: Some(clone_key(k).unwrap()),
        };
        let off = |g| Autolock {
            generation: g,
            key: None,
        };
        let m = Role::Manager;
        assert_eq!(plan(m, Some(&on(1, &a)), 0, true, &b), KeyPlan::Lock);
        assert_eq!(plan(m, Some(&on(2, &a)), 1, false, &a), KeyPlan::Keep);
        assert_eq!(plan(m, Some(&on(2, &a)), 1, false, &b), KeyPlan::Rotate);
        assert_eq!(plan(m, Some(&off(3)), 2, false, &a), KeyPlan::Unlock);
        assert_eq!(plan(m, Some(&off(3)), 2, true, &a), KeyPlan::Keep);
        // A stale view (after a restart, before the log is replayed) is
        // not acted on.
        assert_eq!(plan(m, Some(&on(1, &a)), 2, false, &b), KeyPlan::Keep);
        assert_eq!(plan(m, Some(&off(1)), 2, false, &b), KeyPlan::Keep);
        // A manager without a view of the setting yet keeps its keys, on
        // disk or not (it joined an autolocked cluster sealed under the
        // unlock key: falling back to a key of its own would write it).
        assert_eq!(plan(m, None, 0, false, &a), KeyPlan::Keep);
        assert_eq!(plan(m, None, 0, true, &a), KeyPlan::Keep);
        // Workers are never locked: a demoted manager gets its own key back.
        assert_eq!(plan(Role::Worker, None, 5, false, &a), KeyPlan::Unlock);
        assert_eq!(
            plan(Role::Worker, Some(&on(6, &a)), 5, false, &a),
            KeyPlan::Unlock
        );
        assert_eq!(plan(Role::Worker, None, 0, true, &b), KeyPlan::Keep);
    }

    /// A node's key files sealed under `key`: TLS and a store.
    fn node_dir(key: &UnlockKey) -> (tempfile::TempDir, Layout, ClusterId, NodeId) {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let (cluster, node) = (ClusterId::generate(), NodeId::generate());
        let roots = {
            let root = moat_pki::RootCa::generate(
                cluster,
                &moat_pki::RootOptions::default(),
                moat_pki::OffsetDateTime::now_utc(),
            )
            .unwrap();
            moat_pki::TrustRoots::new(vec![root.certificate().clone()]).unwrap()
        };
        let pk = moat_pki::PrivateKey::generate(moat_pki::KeyAlgorithm::default()).unwrap();
        files::save_tls(&layout, key, &cluster, &node, &roots.to_pem(), &pk, &roots).unwrap();
        moat_store::OpenStore::create(&layout.store_dir(), KeySource::Key(key), cluster, node)
            .unwrap();
        moat_lock::write_unlock_key_file(layout.kek_file(), key).unwrap();
        (tmp, layout, cluster, node)
    }

    fn opens_with(layout: &Layout, c: &ClusterId, n: &NodeId, key: &UnlockKey) -> bool {
        let tls = match files::open_tls(layout, key, c, n) {
            Ok(opened) => opened.is_some(),
            Err(e) => panic!("{e}"),
        };
        let store = moat_store::OpenStore::open(&layout.store_dir(), KeySource::Key(key)).is_ok();
        assert_eq!(tls, store, "TLS key and store sealed under different keys");
        tls
    }

    #[test]
    fn rekey_moves_every_file_and_the_key_file() {
        let (a, b) = (
            UnlockKey::generate().unwrap(),
            UnlockKey::generate().unwrap(),
        );
        let (_tmp, layout, c, n) = node_dir(&a);
        rekey(&layout, &c, &n, &a, &b, KekFile::Remove).unwrap();
        assert!(opens_with(&layout, &c, &n, &b));
        assert!(!opens_with(&layout, &c, &n, &a));
        assert!(!layout.kek_file().exists());
        rekey(&layout, &c, &n, &b, &a, KekFile::Write).unwrap();
        assert!(opens_with(&layout, &c, &n, &a));
        assert!(moat_lock::read_unlock_key_file(layout.kek_file()).unwrap() == a);
    }

    #[test]
    fn a_crash_leaves_every_file_under_one_key() {
        let (a, b) = (
            UnlockKey::generate().unwrap(),
            UnlockKey::generate().unwrap(),
        );
        // Crash after staging, before the commit: the old key still opens all.
        let (_tmp, layout, c, n) = node_dir(&a);
        stage(&layout, &c, &n, &a, &b, KekFile::Remove).unwrap();
        assert!(!finish_rekey(&layout).unwrap());
        assert!(opens_with(&layout, &c, &n, &a));
        assert!(layout.kek_file().exists());
        // Crash after the commit, before (some of) the renames: rolled forward.
        let commit = stage(&layout, &c, &n, &a, &b, KekFile::Remove).unwrap();
        moat_lock::write_file_atomic(
            layout.dir().join(COMMIT_FILE),
            &serde_json::to_vec(&commit).unwrap(),
        )
        .unwrap();
        let first = layout.dir().join(&commit.files[0]);
        fs::rename(next_of(&first), &first).unwrap();
        assert!(finish_rekey(&layout).unwrap());
        assert!(opens_with(&layout, &c, &n, &b));
        assert!(!layout.kek_file().exists());
        assert!(!layout.dir().join(COMMIT_FILE).exists());
    }

    #[test]
    fn only_key_files_may_be_named_in_a_commit() {
        assert!(is_sealed_file("certs/node.sealed"));
        assert!(is_sealed_file("store/keys/dek-12.sealed"));
        assert!(is_sealed_file("unlock.key"));
        for bad in [
            "../etc/passwd",
            "store/keys/dek-.sealed",
            "store/keys/dek-1/../../x.sealed",
            "node.json",
            "/certs/node.sealed",
        ] {
            assert!(!is_sealed_file(bad), "{bad}");
        }
    }
}
