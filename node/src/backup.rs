//! Online backups of a manager, and laying a backup out as a state
//! directory (`moat restore`).
//!
//! A backup holds what a restore needs and nothing is decrypted for it:
//! the node's files as they are on disk (its sealed TLS keys, its sealed
//! data keys, `node.json`, the public certificates, the local journal),
//! plus a snapshot of the state machine taken at a linearizable point and
//! sealed with the store's data key in the snapshot file format, and the
//! audit log's segment files as sealed on disk (decision D45). With
//! autolock on, the backup therefore opens only with the unlock key valid
//! when it was taken; with autolock off it also holds `unlock.key`. The
//! whole is encrypted with age (moat-backup) and its manifest is signed
//! with this manager's node key (its certificate chain and the cluster's
//! roots go into the backup), so a restore can tell which cluster made it.

use std::path::Path;
use std::sync::Arc;

use moat_api::{BackupRequest, ErrorKind};
use moat_backup::{Backup, BackupFile, Manifest, Origin, Protection, Signer, Trust};
use moat_pki::Role;
use zeroize::Zeroizing;

use crate::error::NodeError;
use crate::files::NodeFile;
use crate::journal::{JournalAction, JournalActor, JournalEvent};
use crate::member::Member;

/// Files copied as they are (relative to the state directory), if present.
const NODE_FILES: &[&str] = &[
    "node.json",
    "certs/node.sealed",
    "certs/node.crt",
    "certs/ca.crt",
    "store/store.json",
    "unlock.key",
    "journal.jsonl",
];

fn internal(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// Takes a backup of this manager, without stopping it; returns the
/// backup file's bytes.
pub(crate) async fn take(node: &Arc<Member>, req: BackupRequest) -> Result<Vec<u8>, NodeError> {
    let protection = match (
        req.recipients.is_empty(),
        req.passphrase,
        req.insecure_plaintext,
    ) {
        (false, None, false) => Protection::Recipients(req.recipients),
        (true, Some(p), false) => Protection::Passphrase(p.into_zeroizing()),
        (true, None, true) => Protection::InsecurePlaintext,
        (true, None, false) => {
            return Err(NodeError::new(
                ErrorKind::InvalidArgument,
                "a backup holds the cluster's keys and must be encrypted",
            )
            .hint("give --recipient AGE_RECIPIENT (repeatable; `moat backup keygen` makes a key pair) or --passphrase; --insecure-plaintext writes it unencrypted"));
        }
        _ => {
            return Err(NodeError::new(
                ErrorKind::InvalidArgument,
                "choose one of --recipient, --passphrase and --insecure-plaintext",
            ));
        }
    };
    let m = node.require_manager()?;
    // The node key, not the CA key: its certificate names this manager, its
    // role and its cluster, and the CA key keeps the one use of issuing.
    let (chain, key) = node.tls.signing_identity().ok_or_else(|| {
        NodeError::new(
            ErrorKind::Unavailable,
            "this manager has no certificate yet",
        )
    })?;
    let signer = Signer::new(key, chain, (*node.tls.roots()).clone());
    // Everything committed before this call is in what follows.
    let state = node.read_state().await.map_err(NodeError::from)?;
    let cipher = m
        .inner
        .lock()
        .await
        .as_ref()
        .map(|r| r.cipher())
        .ok_or_else(|| NodeError::new(ErrorKind::Unavailable, "this manager is stopping"))?;
    let created_at = node.clock.unix();
    let (files, manifest) = {
        let applied = m
            .applied
            .read()
            .map_err(|_| NodeError::new(ErrorKind::Internal, "state lock poisoned"))?;
        let last = applied.last_applied.ok_or_else(|| {
            NodeError::new(
                ErrorKind::Unavailable,
                "this manager has applied nothing yet",
            )
        })?;
        let snapshot = moat_store::SnapshotFile {
            meta: moat_store::SnapshotMeta {
                last_log_id: Some(last),
                last_membership: applied.membership.clone(),
                snapshot_id: format!("{}-{created_at}-backup", last.index),
            },
            state: applied.state.clone(),
        };
        drop(applied);
        // Key files and the snapshot's DEK must match: no rekey or DEK
        // rotation step runs while they are read.
        let _held = node.keyring().hold();
        let (name, sealed) = moat_store::seal_snapshot(&cipher, &snapshot)
            .map_err(|e| internal("sealing the snapshot", e))?;
        let mut files = vec![BackupFile::new(
            format!("store/snapshots/{name}"),
            0o600,
            Zeroizing::new(sealed),
        )];
        let dir = node.layout.dir();
        for rel in NODE_FILES {
            if let Some(f) = read_file(dir, rel)? {
                files.push(f);
            }
        }
        let keys_dir = node.layout.store_dir().join("keys");
        let entries = std::fs::read_dir(&keys_dir)
            .map_err(|e| internal(&format!("listing {}", keys_dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("dek-")
                && name.ends_with(".sealed")
                && let Some(f) = read_file(dir, &format!("store/keys/{name}"))?
            {
                files.push(f);
            }
        }
        // The audit log's records (decision D45), as sealed on disk, read
        // after the state was copied: they hold every record it counts (a
        // frame being appended meanwhile is a torn tail, cut at the next
        // start).
        let audit_dir = node
            .layout
            .store_dir()
            .join("snapshots")
            .join(moat_store::audit_segments::AUDIT_DIR);
        if let Ok(entries) = std::fs::read_dir(&audit_dir) {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("audit-") && n.ends_with(".seg"))
                .collect();
            names.sort();
            for name in names {
                let rel = format!(
                    "store/snapshots/{}/{name}",
                    moat_store::audit_segments::AUDIT_DIR
                );
                if let Some(f) = read_file(dir, &rel)? {
                    files.push(f);
                }
            }
        }
        let managers = state
            .nodes
            .values()
            .filter(|n| n.role == Role::Manager)
            .count();
        let manifest = Manifest {
            format: moat_backup::FORMAT_VERSION,
            moat_version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_id: node.cluster.to_string(),
            node_id: node.id.to_string(),
            created_at,
            raft_index: last.index,
            raft_term: last.leader_id.term,
            nodes: u32::try_from(state.nodes.len()).unwrap_or(u32::MAX),
            managers: u32::try_from(managers).unwrap_or(u32::MAX),
            autolock: !node.layout.kek_file().exists(),
            files: Vec::new(),
        };
        (files, manifest)
    };
    // age's scrypt (passphrase) takes a second of CPU: off the runtime.
    let bytes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        moat_backup::write_backup(&mut out, manifest, &files, protection, &signer).map(|_| out)
    })
    .await
    .map_err(|e| internal("writing the backup", e))?
    .map_err(|e| match e {
        // The daemon gathered something it must not archive, or its own
        // certificate cannot sign: a bug or a broken node, not the caller's.
        moat_backup::BackupError::InvalidInput(_) => {
            NodeError::new(ErrorKind::Internal, e.to_string())
        }
        _ => NodeError::new(ErrorKind::InvalidArgument, e.to_string()),
    })?;
    node.journal(
        JournalEvent::new(JournalActor::LocalOperator, JournalAction::Backup)
            .note(format!("{} bytes", bytes.len())),
    );
    tracing::info!(bytes = bytes.len(), "backup taken");
    Ok(bytes)
}

fn read_file(dir: &Path, rel: &str) -> Result<Option<BackupFile>, NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(rel);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(internal(&format!("reading {}", path.display()), e)),
    };
    let data =
        std::fs::read(&path).map_err(|e| internal(&format!("reading {}", path.display()), e))?;
    Ok(Some(BackupFile::new(
        rel,
        meta.permissions().mode() & 0o777,
        Zeroizing::new(data),
    )))
}

/// What `moat restore` laid out.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The cluster.
    pub cluster_id: String,
    /// The restored manager's id.
    pub node_id: String,
    /// Whether the daemon will start locked (autolock was on).
    pub locked: bool,
    /// The address it will listen on.
    pub listen_addr: String,
    /// The address it will advertise.
    pub advertise_addr: String,
}

/// Lays `backup` out as the state directory `dir` (which must not exist or
/// be empty; nothing is written to it unless all of it is): the node is
/// marked restored, so its daemon waits for `moat init
/// --force-new-cluster`, and gets the addresses given.
///
/// First the backup's origin must be what `trust` says (a signed backup of
/// the expected cluster, or anything with [`Trust::AnyCluster`]), and a
/// signed backup's `node.json` must name the cluster and manager that
/// signed it.
pub fn restore_backup(
    mut backup: Backup,
    dir: &Path,
    listen_addr: Option<&str>,
    advertise_addr: Option<&str>,
    unlock_key: Option<&moat_lock::UnlockKey>,
    trust: &Trust,
) -> Result<Restored, NodeError> {
    backup.check_trust(trust).map_err(|e| {
        NodeError::new(ErrorKind::PermissionDenied, e.to_string()).hint("nothing was written")
    })?;
    if backup.file("store/store.json").is_none() {
        return Err(NodeError::new(
            ErrorKind::InvalidArgument,
            "the backup holds no store: it was not taken from a manager",
        ));
    }
    let entry = backup.file("node.json").ok_or_else(|| {
        NodeError::new(
            ErrorKind::InvalidArgument,
            "the backup holds no node.json: it is not a backup of a manager",
        )
    })?;
    let mut file: NodeFile = serde_json::from_slice(&entry.data).map_err(|e| {
        NodeError::new(
            ErrorKind::InvalidArgument,
            format!("the backup's node.json is malformed: {e}"),
        )
    })?;
    if let Some(a) = advertise_addr {
        file.advertise_addr = crate::addr::normalize_listen(a)?;
        file.listen_addr = match listen_addr {
            Some(l) => crate::addr::normalize_listen(l)?,
            None => {
                let port = file
                    .advertise_addr
                    .rsplit_once(':')
                    .map(|(_, p)| p)
                    .unwrap_or("4377");
                format!("0.0.0.0:{port}")
            }
        };
    } else if let Some(l) = listen_addr {
        file.listen_addr = crate::addr::normalize_listen(l)?;
    }
    if let Origin::Signed(signed) = &backup.origin
        && (file.cluster_id != signed.cluster_id || file.node_id != signed.signer.node_id)
    {
        return Err(NodeError::new(
            ErrorKind::PermissionDenied,
            format!(
                "the backup's node.json names manager {} of cluster {}, but manager {} of cluster {} signed the backup: it is inconsistent; do not restore from it",
                file.node_id, file.cluster_id, signed.signer.node_id, signed.cluster_id
            ),
        ));
    }
    let locked = backup.file("unlock.key").is_none();
    if let Some(key) = unlock_key {
        check_unlock_key(&backup, &file, locked, key)?;
    }
    file.restored = true;
    file.managers.clear();
    let json = serde_json::to_vec_pretty(&file).map_err(|e| internal("encoding node.json", e))?;
    if let Some(entry) = backup.files.iter_mut().find(|f| f.path == "node.json") {
        entry.data = Zeroizing::new(json);
    }
    moat_backup::restore_into(&backup, dir)
        .map_err(|e| NodeError::new(ErrorKind::FailedPrecondition, e.to_string()))?;
    Ok(Restored {
        cluster_id: file.cluster_id.to_string(),
        node_id: file.node_id.to_string(),
        locked,
        listen_addr: file.listen_addr,
        advertise_addr: file.advertise_addr,
    })
}

/// Checks, before anything is written, that `key` opens the backup's
/// sealed keys (the unlock key current when it was taken).
fn check_unlock_key(
    backup: &Backup,
    file: &NodeFile,
    locked: bool,
    key: &moat_lock::UnlockKey,
) -> Result<(), NodeError> {
    if !locked {
        return Err(NodeError::new(
            ErrorKind::InvalidArgument,
            "this backup was taken with autolock off: it needs no unlock key",
        )
        .hint("restore it without --unlock-key-file"));
    }
    let sealed = backup.file("certs/node.sealed").ok_or_else(|| {
        NodeError::new(
            ErrorKind::InvalidArgument,
            "the backup holds no sealed TLS keys: it is incomplete",
        )
    })?;
    let opens = crate::files::tls_blob_opens(&sealed.data, key, &file.cluster_id, &file.node_id)
        .map_err(|e| {
            NodeError::new(
                ErrorKind::InvalidArgument,
                format!("the backup's sealed TLS keys are damaged: {e}"),
            )
        })?;
    if !opens {
        return Err(NodeError::new(
            ErrorKind::PermissionDenied,
            format!(
                "invalid unlock key: it does not open this backup, which needs the unlock key current at {}",
                moat_store::model::rfc3339(backup.manifest.created_at)
            ),
        )
        .hint("give the key that was current when the backup was taken (a key rotated since does not open it); nothing was written"));
    }
    Ok(())
}
