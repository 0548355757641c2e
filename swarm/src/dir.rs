//! A Swarm manager's state directory (`<data-root>/swarm`, by default
//! `/var/lib/docker/swarm`), opened read-only.
//!
//! [`StateDir::open`] checks the layout (the node key, its certificate, the
//! root CA and `raft/wal-v3-encrypted`), [`StateDir::files`] lists every
//! file with its mode and owner for the report's file-mode findings, and
//! the readers check a file's size *before* reading it: certificates, keys
//! and JSON files at most [`MAX_SMALL_FILE`], snapshots at most
//! [`crate::snap::MAX_SNAPSHOT`], WAL segments at most
//! [`crate::wal::MAX_SEGMENT`] (and only up to the end of their data).
//!
//! Nothing here creates, changes, renames or locks anything: every file is
//! opened read-only and symbolic links are listed, never followed by the
//! listing.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Notice, NoticeKind, Result, SwarmError};
use crate::key::{NODE_KEY_FILE, NodeKeyFile, OpenedKey, UnlockKey};

/// The largest certificate, key or JSON file read.
pub const MAX_SMALL_FILE: u64 = 1024 * 1024;

/// The node certificate's path in a state directory.
pub const NODE_CERT_FILE: &str = "certificates/swarm-node.crt";

/// The root CA certificate's path in a state directory.
pub const ROOT_CA_FILE: &str = "certificates/swarm-root-ca.crt";

/// The encrypted WAL directory.
pub const WAL_DIR: &str = "raft/wal-v3-encrypted";

/// The encrypted snapshot directory.
pub const SNAP_DIR: &str = "raft/snap-v3-encrypted";

/// Legacy unencrypted raft directories (migrated by SwarmKit on start).
const LEGACY_DIRS: [&str; 4] = ["raft/wal-v3", "raft/snap-v3", "raft/wal", "raft/snap"];

/// The most directory entries [`StateDir::files`] lists.
const MAX_LISTED: usize = 100_000;

/// The deepest [`StateDir::files`] goes.
const MAX_DEPTH: usize = 8;

/// A Swarm manager's state directory.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    notices: Vec<Notice>,
}

/// One entry of [`StateDir::files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileInfo {
    /// The path relative to the state directory (`.` for the directory
    /// itself).
    pub rel_path: String,
    /// What it is.
    pub kind: FileKind,
    /// The permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// The size in bytes.
    pub size: u64,
    /// The owner's uid.
    pub uid: u32,
    /// The group's gid.
    pub gid: u32,
}

/// The kind of a [`FileInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (not followed).
    Symlink,
    /// Anything else (socket, device, fifo).
    Other,
}

impl StateDir {
    /// Opens a state directory after checking that it looks like a Swarm
    /// manager's. Notes legacy raft directories and leftover temporary
    /// files as notices.
    pub fn open(path: impl AsRef<Path>) -> Result<StateDir> {
        let root = path.as_ref().to_path_buf();
        let meta = fs::metadata(&root).map_err(|source| SwarmError::Io {
            path: root.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(SwarmError::NotAStateDir {
                path: root,
                missing: "a directory".into(),
                hint: "give the directory itself; Docker's default is /var/lib/docker/swarm".into(),
            });
        }
        let required = [
            (NODE_KEY_FILE, false),
            (NODE_CERT_FILE, false),
            (ROOT_CA_FILE, false),
            ("raft", true),
            (WAL_DIR, true),
        ];
        for (rel, want_dir) in required {
            let p = root.join(rel);
            let ok = match fs::metadata(&p) {
                Ok(m) => m.is_dir() == want_dir,
                Err(_) => false,
            };
            if !ok {
                let hint = if root.join("swarm").join(NODE_KEY_FILE).exists() {
                    format!("did you mean {}?", root.join("swarm").display())
                } else if rel.starts_with("raft") && root.join(NODE_KEY_FILE).exists() {
                    if LEGACY_DIRS.iter().any(|d| root.join(d).is_dir()) {
                        "only a legacy unencrypted raft log is there (raft/wal-v3 or raft/wal); this \
                         reader needs raft/wal-v3-encrypted, which SwarmKit creates on its next start"
                            .into()
                    } else {
                        "this looks like a worker's state directory: only managers keep the raft log"
                            .into()
                    }
                } else {
                    "a manager's state directory is <data-root>/swarm; Docker's default is \
                     /var/lib/docker/swarm"
                        .into()
                };
                return Err(SwarmError::NotAStateDir {
                    path: root,
                    missing: rel.into(),
                    hint,
                });
            }
        }
        let mut notices = Vec::new();
        for d in LEGACY_DIRS {
            if root.join(d).is_dir() {
                notices.push(Notice::new(
                    NoticeKind::LegacyDir,
                    d,
                    None,
                    "a legacy unencrypted raft directory is present (SwarmKit migrates it on start); \
                     it is not read, and it may hold raft data in clear",
                ));
            }
        }
        let leftover = "certificates/.swarm-node.crt";
        if fs::symlink_metadata(root.join(leftover)).is_ok() {
            notices.push(Notice::new(
                NoticeKind::LeftoverFile,
                leftover,
                None,
                "a temporary node certificate left by an interrupted renewal; it is ignored",
            ));
        }
        Ok(StateDir { root, notices })
    }

    /// The directory's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The notices found when opening (legacy directories, leftovers).
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// Every file and directory under the state directory (the directory
    /// itself first as `.`), sorted by path, symbolic links not followed.
    pub fn files(&self) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        let meta = fs::symlink_metadata(&self.root).map_err(|source| SwarmError::Io {
            path: self.root.clone(),
            source,
        })?;
        out.push(info(".".into(), &meta));
        self.walk(&self.root, "", 0, &mut out)?;
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    fn walk(&self, dir: &Path, prefix: &str, depth: usize, out: &mut Vec<FileInfo>) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Ok(());
        }
        let io = |source| SwarmError::Io {
            path: dir.to_path_buf(),
            source,
        };
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if out.len() >= MAX_LISTED {
                return Err(SwarmError::TooLarge {
                    what: format!("the number of files under {}", self.root.display()),
                    size: out.len() as u64,
                    limit: MAX_LISTED as u64,
                });
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(entry.path()).map_err(|source| SwarmError::Io {
                path: entry.path(),
                source,
            })?;
            let fi = info(rel.clone(), &meta);
            let is_dir = fi.kind == FileKind::Dir;
            out.push(fi);
            if is_dir {
                self.walk(&entry.path(), &rel, depth + 1, out)?;
            }
        }
        Ok(())
    }

    /// Reads a certificate, key or JSON file (at most [`MAX_SMALL_FILE`]).
    pub fn read_small(&self, rel: &str) -> Result<Vec<u8>> {
        self.read_bounded(rel, MAX_SMALL_FILE)
    }

    /// Reads and parses `certificates/swarm-node.key`.
    pub fn node_key(&self) -> Result<NodeKeyFile> {
        NodeKeyFile::parse(&self.read_small(NODE_KEY_FILE)?)
    }

    /// Opens the node's data keys with the unlock key, if any, and checks
    /// the TLS key against `certificates/swarm-node.crt`
    /// (see [`NodeKeyFile::open`]).
    pub fn open_keys(&self, kek: Option<&UnlockKey>) -> Result<OpenedKey> {
        let key = self.node_key()?;
        let cert = self.read_small(NODE_CERT_FILE)?;
        key.open(kek, Some(&cert)).map_err(|e| match e {
            SwarmError::Locked { .. } => SwarmError::Locked {
                path: self.root.join(NODE_KEY_FILE),
            },
            other => other,
        })
    }

    /// The WAL segment files (paths relative to the state directory) in
    /// name order, and notices for the files ignored (`*.tmp` spares,
    /// other names).
    pub fn wal_segments(&self) -> Result<(Vec<String>, Vec<Notice>)> {
        let (mut names, notices) = self.list(
            WAL_DIR,
            |n| crate::wal::parse_segment_name(n).is_some(),
            |n| {
                if n.ends_with(".tmp") {
                    "a preallocated spare WAL segment; ignored"
                } else {
                    "not a WAL segment name; ignored"
                }
            },
        )?;
        names.sort();
        Ok((
            names
                .into_iter()
                .map(|n| format!("{WAL_DIR}/{n}"))
                .collect(),
            notices,
        ))
    }

    /// The snapshot files (paths relative to the state directory), newest
    /// first, and notices for the files ignored (`*.broken`, other names).
    /// An absent snapshot directory means no snapshots.
    pub fn snapshot_files(&self) -> Result<(Vec<String>, Vec<Notice>)> {
        if !self.root.join(SNAP_DIR).is_dir() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (mut names, notices) = self.list(
            SNAP_DIR,
            |n| crate::snap::parse_snapshot_name(n).is_some(),
            |n| {
                if n.ends_with(".broken") {
                    "a snapshot etcd marked as broken; ignored"
                } else {
                    "not a snapshot name; ignored"
                }
            },
        )?;
        names.sort();
        names.reverse();
        Ok((
            names
                .into_iter()
                .map(|n| format!("{SNAP_DIR}/{n}"))
                .collect(),
            notices,
        ))
    }

    fn list(
        &self,
        rel_dir: &str,
        wanted: impl Fn(&str) -> bool,
        why_ignored: impl Fn(&str) -> &'static str,
    ) -> Result<(Vec<String>, Vec<Notice>)> {
        let dir = self.root.join(rel_dir);
        let io = |source| SwarmError::Io {
            path: dir.clone(),
            source,
        };
        let mut names = Vec::new();
        let mut notices = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if names.len() + notices.len() >= MAX_LISTED {
                return Err(SwarmError::TooLarge {
                    what: format!("the number of files in {rel_dir}"),
                    size: MAX_LISTED as u64,
                    limit: MAX_LISTED as u64,
                });
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && wanted(&name) {
                names.push(name);
            } else {
                notices.push(Notice::new(
                    NoticeKind::IgnoredFile,
                    format!("{rel_dir}/{name}"),
                    None,
                    why_ignored(&name),
                ));
            }
        }
        notices.sort_by(|a, b| a.file.cmp(&b.file));
        Ok((names, notices))
    }

    /// The absolute path of a file given relative to the state directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Reads a file (relative path) read-only after checking its size
    /// against `limit`.
    pub(crate) fn read_bounded(&self, rel: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.root.join(rel);
        let io = |source| SwarmError::Io {
            path: path.clone(),
            source,
        };
        let file = fs::File::open(&path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        if size > limit {
            return Err(SwarmError::TooLarge {
                what: rel.to_owned(),
                size,
                limit,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // `take` guards against a file that grows while being read.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.len() as u64 > limit {
            return Err(SwarmError::TooLarge {
                what: rel.to_owned(),
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(buf)
    }
}

fn info(rel_path: String, meta: &fs::Metadata) -> FileInfo {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileInfo {
        rel_path,
        kind,
        mode: meta.mode() & 0o7777,
        size: meta.len(),
        uid: meta.uid(),
        gid: meta.gid(),
    }
}
