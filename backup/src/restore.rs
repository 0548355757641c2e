//! All-or-nothing restore of a verified backup into a directory.
//!
//! Everything is written into a sibling temporary directory
//! `PARENT/.NAME.restoring-<16 hex>`, each file created with mode 0600,
//! written, given its recorded mode and fsynced; every directory is 0700 and
//! fsynced; then the temporary directory is renamed onto the target (which
//! replaces an empty target directory atomically on Linux) and the parent is
//! fsynced. On any failure before the rename the temporary directory is
//! removed and the target is left as it was.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;

use crate::Backup;
use crate::check::{Limits, check_files};
use crate::error::BackupError;

/// Restores `backup` into `dir`; see [`crate::restore_into`].
pub(crate) fn restore(
    backup: &Backup,
    dir: &Path,
    before_file: &mut dyn FnMut(usize) -> io::Result<()>,
) -> Result<(), BackupError> {
    // `Backup`'s fields are public: check again what `read_backup` checked.
    check_files(
        backup
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.data.len() as u64)),
        &Limits::DEFAULT,
    )
    .map_err(|e| e.in_backup())?;

    check_target(dir)?;
    let name = dir.file_name().ok_or_else(|| BackupError::InvalidTarget {
        path: dir.to_path_buf(),
        reason: "has no final name (such as `.` or `..`)",
    })?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(BackupError::InvalidTarget {
            path: dir.to_path_buf(),
            reason: "has no parent directory (create the parent first)",
        });
    }

    let mut suffix = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| BackupError::Random)?;
    let tmp = parent.join(format!(
        ".{}.restoring-{}",
        name.to_string_lossy(),
        data_encoding::HEXLOWER.encode(&suffix)
    ));
    make_dir(&tmp)?;
    let guard = RemoveOnDrop(Some(tmp.clone()));

    let mut dirs = vec![tmp.clone()];
    let mut made = HashSet::new();
    for (i, file) in backup.files.iter().enumerate() {
        let path = tmp.join(&file.path);
        before_file(i).map_err(io_err(&path, "write"))?;
        // Parent directories, shallowest first; already validated: no `..`.
        let mut sub = tmp.clone();
        let components: Vec<&str> = file.path.split('/').collect();
        for c in &components[..components.len() - 1] {
            sub.push(c);
            if made.insert(sub.clone()) {
                make_dir(&sub)?;
                dirs.push(sub.clone());
            }
        }
        write_file(&path, &file.data, file.mode)?;
    }
    // Deepest first, then the temporary root.
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }

    fs::rename(&tmp, dir).map_err(|e| match e.kind() {
        io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists => {
            BackupError::TargetNotEmpty {
                path: dir.to_path_buf(),
            }
        }
        _ => BackupError::Io {
            path: dir.to_path_buf(),
            action: "move the restored files into place at",
            source: e,
        },
    })?;
    guard.disarm();
    sync_dir(parent).map_err(|e| match e {
        BackupError::Io { source, .. } => BackupError::SyncAfterRestore {
            path: dir.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// `dir` must not exist, or be an empty directory (not a symlink).
fn check_target(dir: &Path) -> Result<(), BackupError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir, "inspect")(e)),
    };
    let invalid = |reason| BackupError::InvalidTarget {
        path: dir.to_path_buf(),
        reason,
    };
    if meta.file_type().is_symlink() {
        return Err(invalid("is a symbolic link; give the real directory"));
    }
    if !meta.is_dir() {
        return Err(invalid("exists and is not a directory"));
    }
    let mut entries = fs::read_dir(dir).map_err(io_err(dir, "list"))?;
    if entries.next().is_some() {
        return Err(BackupError::TargetNotEmpty {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn make_dir(path: &Path) -> Result<(), BackupError> {
    DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_err(path, "create the directory"))?;
    // The umask may have removed bits; set exactly 0700.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(io_err(path, "set the mode of"))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), BackupError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path, "create"))?;
    f.write_all(data).map_err(io_err(path, "write"))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path, "set the mode of"))?;
    f.sync_all().map_err(io_err(path, "fsync"))
}

fn sync_dir(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path, "fsync the directory"))
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        path,
        action,
        source,
    }
}

/// Removes the temporary directory unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            // Best effort: the error being returned matters more.
            let _ = fs::remove_dir_all(p);
        }
    }
}
