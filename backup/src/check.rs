//! Checks shared by the writer, the reader and restore: limits, paths and
//! modes of a set of files.

use std::collections::BTreeSet;

use crate::error::{BackupError, InputError, Limit, PathProblem};

/// The limits a reader enforces and a writer respects. The public
/// `MAX_*` constants are the defaults; tests use smaller ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) manifest: u64,
    pub(crate) files: u64,
    pub(crate) file: u64,
    pub(crate) total: u64,
    pub(crate) path: u64,
    pub(crate) age_header: u64,
}

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits {
        manifest: crate::MAX_MANIFEST_LEN,
        files: crate::MAX_FILES,
        file: crate::MAX_FILE_LEN,
        total: crate::MAX_TOTAL_LEN,
        path: crate::MAX_PATH_LEN,
        age_header: crate::MAX_AGE_HEADER_LEN,
    };

    /// `Err` when `found > max`.
    pub(crate) fn check(what: Limit, found: u64, max: u64) -> Result<(), Invalid> {
        if found > max {
            Err(Invalid::TooLarge { what, found, max })
        } else {
            Ok(())
        }
    }
}

/// A problem with a set of files, before it is known whether the set came
/// from the caller or from a backup file.
#[derive(Debug)]
pub(crate) enum Invalid {
    Path { path: String, reason: PathProblem },
    Mode { path: String, mode: u32 },
    TooLarge { what: Limit, found: u64, max: u64 },
}

impl Invalid {
    /// As a problem found in a backup file.
    pub(crate) fn in_backup(self) -> BackupError {
        match self {
            Invalid::Path { path, reason } => BackupError::UnsafePath { path, reason },
            Invalid::Mode { path, mode } => BackupError::UnsafeMode { path, mode },
            Invalid::TooLarge { what, found, max } => BackupError::TooLarge { what, found, max },
        }
    }

    /// As a caller's mistake in `write_backup`.
    pub(crate) fn in_input(self) -> BackupError {
        BackupError::InvalidInput(match self {
            Invalid::Path { path, reason } => InputError::UnsafePath { path, reason },
            Invalid::Mode { path, mode } => InputError::UnsafeMode { path, mode },
            Invalid::TooLarge { what, found, max } => InputError::TooLarge { what, found, max },
        })
    }
}

/// Checks one path: relative, `/`-separated, no empty, `.` or `..`
/// component, no NUL, at most `limits.path` bytes.
pub(crate) fn check_path(path: &str, limits: &Limits) -> Result<(), Invalid> {
    Limits::check(Limit::PathLength, path.len() as u64, limits.path)?;
    let bad = |reason| {
        Err(Invalid::Path {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad(PathProblem::Empty);
    }
    if path.contains('\0') {
        return bad(PathProblem::Nul);
    }
    if path.starts_with('/') {
        return bad(PathProblem::Absolute);
    }
    for component in path.split('/') {
        match component {
            "" => return bad(PathProblem::EmptyComponent),
            "." => return bad(PathProblem::DotComponent),
            ".." => return bad(PathProblem::ParentComponent),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a whole set of files: count, each path and mode, each size, the
/// total size, and that no path is repeated or is also another file's
/// directory.
pub(crate) fn check_files<'a>(
    files: impl ExactSizeIterator<Item = (&'a str, u32, u64)>,
    limits: &Limits,
) -> Result<(), Invalid> {
    Limits::check(Limit::FileCount, files.len() as u64, limits.files)?;
    let mut paths = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    let mut total: u64 = 0;
    for (path, mode, len) in files {
        check_path(path, limits)?;
        if mode & !0o777 != 0 {
            return Err(Invalid::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        Limits::check(Limit::FileSize, len, limits.file)?;
        total = total.saturating_add(len);
        Limits::check(Limit::TotalSize, total, limits.total)?;
        if !paths.insert(path) {
            return Err(Invalid::Path {
                path: path.to_owned(),
                reason: PathProblem::Duplicate,
            });
        }
        for (i, _) in path.match_indices('/') {
            dirs.insert(&path[..i]);
        }
    }
    if let Some(clash) = paths.intersection(&dirs).next() {
        return Err(Invalid::Path {
            path: (*clash).to_owned(),
            reason: PathProblem::FileIsDirectory,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_err(p: &str) -> Option<PathProblem> {
        match check_path(p, &Limits::DEFAULT) {
            Ok(()) => None,
            Err(Invalid::Path { reason, .. }) => Some(reason),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn safe_paths_pass() {
        for p in [
            "node.json",
            "certs/ca.crt",
            "a/b/c/d",
            "..a",
            "a..",
            ".hidden",
            "a b",
        ] {
            assert_eq!(path_err(p), None, "{p}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let cases = [
            ("", PathProblem::Empty),
            ("/etc/passwd", PathProblem::Absolute),
            ("a//b", PathProblem::EmptyComponent),
            ("a/", PathProblem::EmptyComponent),
            ("./a", PathProblem::DotComponent),
            ("a/./b", PathProblem::DotComponent),
            ("..", PathProblem::ParentComponent),
            ("../x", PathProblem::ParentComponent),
            ("a/../../x", PathProblem::ParentComponent),
            ("a\0b", PathProblem::Nul),
        ];
        for (p, want) in cases {
            assert_eq!(path_err(p), Some(want), "{p:?}");
        }
    }

    #[test]
    fn overlong_path_is_too_large() {
        let p = "a".repeat(crate::MAX_PATH_LEN as usize + 1);
        assert!(matches!(
            check_path(&p, &Limits::DEFAULT),
            Err(Invalid::TooLarge {
                what: Limit::PathLength,
                ..
            })
        ));
    }

    #[test]
    fn duplicates_and_file_directory_clashes_are_refused() {
        let dup = [("a", 0o600, 1), ("a", 0o600, 1)];
        assert!(matches!(
            check_files(dup.into_iter(), &Limits::DEFAULT),
            Err(Invalid::Path {
                reason: PathProblem::Duplicate,
                ..
            })
        ));
        let clash = [("a/b", 0o600, 1), ("a", 0o600, 1)];
        assert!(matches!(
            check_files(clash.into_iter(), &Limits::DEFAULT),
            Err(Invalid::Path {
                reason: PathProblem::FileIsDirectory,
                ..
            })
        ));
        let fine = [("a/b", 0o600, 1), ("a/c", 0o644, 1), ("ab", 0o600, 0)];
        assert!(check_files(fine.into_iter(), &Limits::DEFAULT).is_ok());
    }

    #[test]
    fn special_mode_bits_are_refused() {
        for mode in [0o4755, 0o2755, 0o1777, 0o100644] {
            assert!(matches!(
                check_files([("a", mode, 0)].into_iter(), &Limits::DEFAULT),
                Err(Invalid::Mode { .. })
            ));
        }
    }
}
