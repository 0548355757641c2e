//! A task's secrets and configs on its node: written only to a tmpfs,
//! never to the state directory or any other disk, and removed as soon as
//! the task ends.
//!
//! Layout, under the executor's `secrets_root` (`<secrets_dir>/moat-<node
//! id>`, on a tmpfs, `0700`; nothing else in `secrets_dir` is touched):
//!
//! ```text
//! <secrets_dir>/<task_id>/            0700
//! <secrets_dir>/<task_id>/secrets/    0755  MOAT_SECRETS_DIR; /run/secrets in a container
//! <secrets_dir>/<task_id>/configs/    0755  MOAT_CONFIGS_DIR; each file at /<target> in a container
//! ```
//!
//! Each file has the mode its service gave (`0400` for a secret, `0444`
//! for a config, unless the service says). The task directory's `0700`
//! keeps other users of the node out; inside a container, the bind mounts
//! show the two subdirectories only.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use moat_orchestrator::{SecretData, SecretKind};
use serde::{Deserialize, Serialize};

/// One secret or config as a task's node receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFile {
    /// Which kind (where it is written).
    pub kind: SecretKind,
    /// Its file name.
    pub target: String,
    /// Its mode.
    pub mode: u32,
    /// The bytes (zeroized on drop, never printed).
    pub data: SecretData,
}

/// The directory of `task_id`'s files.
pub(crate) fn task_dir(root: &Path, task_id: &str) -> PathBuf {
    root.join(task_id)
}

/// Where a kind's files of a task are.
pub(crate) fn kind_dir(root: &Path, task_id: &str, kind: SecretKind) -> PathBuf {
    task_dir(root, task_id).join(match kind {
        SecretKind::Secret => "secrets",
        SecretKind::Config => "configs",
    })
}

/// Makes `root` (0700) if missing and checks that it is on a tmpfs.
pub(crate) fn prepare_root(root: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
    {
        Ok(()) => {}
        Err(e) => return Err(format!("cannot create {}: {e}", root.display())),
    }
    let fs = nix::sys::statfs::statfs(root)
        .map_err(|e| format!("cannot look at the file system of {}: {e}", root.display()))?;
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return Err(format!(
            "{} is not on a tmpfs, and secrets are written only to memory: start the daemon \
             with --secrets-dir naming a directory on a tmpfs (the default is /dev/shm)",
            root.display()
        ));
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot restrict {}: {e}", root.display()))
}

/// Writes `material` for `task_id` (replacing whatever a previous attempt
/// left). On error nothing of the task's is left behind.
pub(crate) fn write(
    root: &Path,
    task_id: &str,
    material: &crate::TaskMaterial,
) -> Result<(), String> {
    let _held = ROOT.lock().unwrap_or_else(|p| p.into_inner());
    prepare_root(root)?;
    remove(root, task_id);
    let result =
        write_all(root, task_id, &material.files).and_then(|()| match &material.identity {
            Some(identity) => crate::identity::write(
                &kind_dir(root, task_id, SecretKind::Secret),
                &crate::identity::spiffe_dir(root, task_id),
                identity,
            ),
            None => Ok(()),
        });
    if result.is_err() {
        remove(root, task_id);
    }
    result
}

fn write_all(root: &Path, task_id: &str, files: &[TaskFile]) -> Result<(), String> {
    let dir = task_dir(root, task_id);
    mkdir(&dir, 0o700)?;
    for kind in [SecretKind::Secret, SecretKind::Config] {
        mkdir(&kind_dir(root, task_id, kind), 0o755)?;
    }
    for f in files {
        if moat_orchestrator::validate_target(f.kind, &f.target).is_err() || f.mode > 0o777 {
            return Err(format!(
                "{} target {:?} is not a file name",
                f.kind, f.target
            ));
        }
        let path = kind_dir(root, task_id, f.kind).join(&f.target);
        write_new(&path, f.data.expose_secret(), f.mode)?;
    }
    Ok(())
}

/// Creates `path` (which must not exist, so a link planted there is not
/// followed) owner-only, writes `data`, then gives it `mode`.
pub(crate) fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

pub(crate) fn mkdir(dir: &Path, mode: u32) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))
}

/// Held while a task's directory is made or the root may be removed, so
/// that removing an empty root never races a task's new directory.
static ROOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Removes `task_id`'s files (its task ended) and `root` too if no other
/// task has files left: a node that runs nothing leaves nothing on the
/// tmpfs.
pub(crate) fn remove_task(root: &Path, task_id: &str) {
    let _held = ROOT.lock().unwrap_or_else(|p| p.into_inner());
    remove(root, task_id);
    // Refused while another task's directory is there: that is the point.
    let _ = std::fs::remove_dir(root);
}

/// Removes `task_id`'s files, if any.
pub(crate) fn remove(root: &Path, task_id: &str) {
    let dir = task_dir(root, task_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::debug!(task = task_id, "removed the task's secrets and configs"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(task = task_id, dir = %dir.display(), error = %e, "cannot remove a task's secrets and configs")
        }
    }
}

/// Removes the files of every task under `root` but those in `keep`
/// (only directories named as task ids: anything else is not the
/// executor's), and `root` if nothing is left in it.
pub(crate) fn wipe_except(root: &Path, keep: &BTreeSet<String>) {
    let _held = ROOT.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::record::valid_task_id(&name) && !keep.contains(&name) {
            tracing::info!(task = %name, "removing the secrets and configs of a task this node no longer runs");
            remove(root, &name);
        }
    }
    let _ = std::fs::remove_dir(root);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(kind: SecretKind, target: &str, mode: u32, data: &[u8]) -> TaskFile {
        TaskFile {
            kind,
            target: target.into(),
            mode,
            data: SecretData::new(data.to_vec()),
        }
    }

    fn material(files: &[TaskFile]) -> crate::TaskMaterial {
        crate::TaskMaterial {
            files: files.to_vec(),
            identity: None,
        }
    }

    fn shm() -> Option<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("moat-files-test-")
            .tempdir_in("/dev/shm")
            .ok()?;
        Some(dir)
    }

    #[test]
    fn files_land_with_their_modes_and_go() {
        let Some(root) = shm() else {
            eprintln!("SKIPPED: no /dev/shm");
            return;
        };
        let files = [
            file(SecretKind::Secret, "db", 0o400, b"hunter2"),
            file(SecretKind::Config, "app.conf", 0o444, b"port=80"),
        ];
        write(root.path(), "T1", &material(&files)).unwrap();
        let secret = kind_dir(root.path(), "T1", SecretKind::Secret).join("db");
        assert_eq!(std::fs::read(&secret).unwrap(), b"hunter2");
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        let dir_mode = std::fs::metadata(task_dir(root.path(), "T1"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let config = kind_dir(root.path(), "T1", SecretKind::Config).join("app.conf");
        assert_eq!(std::fs::read(&config).unwrap(), b"port=80");
        // Written again (a restart of the task): replaced, not refused.
        write(root.path(), "T1", &material(&files[..1])).unwrap();
        assert!(!config.exists());
        write(root.path(), "T2", &material(&files)).unwrap();
        std::fs::create_dir(root.path().join("not.a.task")).unwrap();
        wipe_except(root.path(), &BTreeSet::from(["T2".to_owned()]));
        assert!(!task_dir(root.path(), "T1").exists());
        assert!(
            root.path().join("not.a.task").exists(),
            "only task directories are the executor's"
        );
        assert!(task_dir(root.path(), "T2").exists());
        std::fs::remove_dir(root.path().join("not.a.task")).unwrap();
        remove_task(root.path(), "T2");
        assert!(!task_dir(root.path(), "T2").exists());
        assert!(
            !root.path().exists(),
            "the last task's files take the root with them"
        );
    }

    #[test]
    fn a_bad_target_leaves_nothing() {
        let Some(root) = shm() else {
            eprintln!("SKIPPED: no /dev/shm");
            return;
        };
        let files = [
            file(SecretKind::Secret, "ok", 0o400, b"a"),
            file(SecretKind::Secret, "../escape", 0o400, b"b"),
        ];
        let err = write(root.path(), "T1", &material(&files)).unwrap_err();
        assert!(err.contains("not a file name"), "{err}");
        assert!(!task_dir(root.path(), "T1").exists());
        assert!(!root.path().join("escape").exists());
    }

    #[test]
    fn a_directory_on_disk_is_refused() {
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let Ok(fs) = nix::sys::statfs::statfs(disk.path()) else {
            return;
        };
        if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("SKIPPED: the source tree is on a tmpfs");
            return;
        }
        let err = write(
            disk.path(),
            "T1",
            &material(&[file(SecretKind::Secret, "db", 0o400, b"x")]),
        )
        .unwrap_err();
        assert!(err.contains("not on a tmpfs"), "{err}");
        assert!(!task_dir(disk.path(), "T1").exists());
    }
}
