//! Crash-safe sealed files.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::LockError;
use crate::key::{KeySource, fill_random};
use crate::seal::{Aad, MAX_BLOB_LEN, Unsealed, inspect, seal, unseal};

/// Writes `blob` to `path` atomically and durably.
///
/// `blob` must be a sealed blob (its header is checked with
/// [`inspect`](crate::inspect) first), so this function cannot be used to
/// put plaintext on disk. Steps: create a temporary file in the same
/// directory with mode 0600, write, fsync, rename over `path`, fsync the
/// directory. When this returns `Ok`, the new content survives a crash; on
/// any error the previous content of `path` is untouched and the temporary
/// file is removed.
pub fn write_sealed_file(path: impl AsRef<Path>, blob: &[u8]) -> Result<(), LockError> {
    let path = path.as_ref();
    inspect(blob).map_err(|e| e.in_file(path))?;
    write_file_atomic(path, blob)
}

/// Writes `bytes` to `path` so that after a crash the file holds either
/// its old content or all of the new, readable only by its owner: a
/// temporary file (mode 0600, random name) in the same directory, write,
/// fsync, rename over `path`, fsync the directory. On any error the
/// previous content of `path` is untouched and the temporary file removed.
///
/// It writes whatever it is given: callers put only sealed or public data
/// through it ([`write_sealed_file`] checks that for them).
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), LockError> {
    let path = path.as_ref();
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| LockError::Io {
        path: path.to_path_buf(),
        action: "write (the path has no file name)",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", moat_codec::base32::encode(&suffix)));
    let tmp = dir.join(tmp_name);

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, "create temporary file", e))?;
    let written = file
        .write_all(bytes)
        .map_err(|e| io_error(&tmp, "write", e))
        .and_then(|()| file.sync_all().map_err(|e| io_error(&tmp, "fsync", e)))
        .and_then(|()| {
            drop(file);
            fs::rename(&tmp, path).map_err(|e| io_error(path, "rename into place", e))
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&dir, "fsync directory", e))
}

/// Reads a sealed file, refusing files larger than
/// [`MAX_BLOB_LEN`](crate::MAX_BLOB_LEN) before reading them. Every error
/// names `path`.
pub fn read_sealed_file(path: impl AsRef<Path>) -> Result<Vec<u8>, LockError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
    let meta = file.metadata().map_err(|e| io_error(path, "stat", e))?;
    if !meta.is_file() {
        return Err(io_error(
            path,
            "read (not a regular file)",
            std::io::ErrorKind::InvalidInput.into(),
        ));
    }
    let max = MAX_BLOB_LEN as u64;
    if meta.len() > max {
        return Err(LockError::TooLarge {
            len: meta.len(),
            max,
        }
        .in_file(path));
    }
    // The file may grow between stat and read: never read more than max + 1.
    let mut blob = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(MAX_BLOB_LEN));
    file.take(max + 1)
        .read_to_end(&mut blob)
        .map_err(|e| io_error(path, "read", e))?;
    if blob.len() > MAX_BLOB_LEN {
        return Err(LockError::TooLarge {
            len: blob.len() as u64,
            max,
        }
        .in_file(path));
    }
    Ok(blob)
}

/// [`seal`](crate::seal)s `plaintext` and writes it with
/// [`write_sealed_file`].
pub fn seal_to_file(
    path: impl AsRef<Path>,
    key: KeySource<'_>,
    key_id: u32,
    aad: &Aad<'_>,
    plaintext: &[u8],
) -> Result<(), LockError> {
    let path = path.as_ref();
    let blob = seal(key, key_id, aad, plaintext).map_err(|e| e.in_file(path))?;
    write_sealed_file(path, &blob)
}

/// Reads `path` with [`read_sealed_file`] and [`unseal`](crate::unseal)s it.
/// Every error names `path`.
pub fn unseal_file(
    path: impl AsRef<Path>,
    key: KeySource<'_>,
    aad: &Aad<'_>,
) -> Result<Unsealed, LockError> {
    let path = path.as_ref();
    let blob = read_sealed_file(path)?;
    unseal(key, aad, &blob).map_err(|e| e.in_file(path))
}

/// Reads an unlock key from the first line of a file that only its owner
/// may read (mode `0600` or stricter): for unattended unlock and for the
/// node key file when autolock is off. A file readable by group or others
/// is refused before it is read.
pub fn read_unlock_key_file(path: impl AsRef<Path>) -> Result<crate::UnlockKey, LockError> {
    use std::os::unix::fs::PermissionsExt;
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| io_error(path, "open", e))?;
    let mode = file
        .metadata()
        .map_err(|e| io_error(path, "stat", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(LockError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    // An unlock key is 71 characters; allow a newline and some slack.
    let mut text = zeroize::Zeroizing::new(String::with_capacity(256));
    file.take(256)
        .read_to_string(&mut text)
        .map_err(|e| io_error(path, "read", e))?;
    let line = text.lines().next().unwrap_or_default();
    line.parse().map_err(|e| LockError::KeyFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Writes an unlock key to `path` (mode 0600, atomic), for autolock-off
/// nodes whose key lives in the state directory.
pub fn write_unlock_key_file(
    path: impl AsRef<Path>,
    key: &crate::UnlockKey,
) -> Result<(), LockError> {
    let path = path.as_ref();
    let mut text = key.expose_for_operator();
    text.push('\n');
    write_file_atomic(path, text.as_bytes())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> LockError {
    LockError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::key::UnlockKey;
    use crate::seal::tests::AAD;
    use std::os::unix::fs::PermissionsExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_with_mode_0600_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key.sealed");
        let key = UnlockKey::generate().unwrap();
        seal_to_file(&path, KeySource::Key(&key), 3, &AAD, b"ca private key").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(entries(dir.path()), ["ca.key.sealed"]);
        let out = unseal_file(&path, KeySource::Key(&key), &AAD).unwrap();
        assert_eq!(out.plaintext.as_slice(), b"ca private key");
        assert_eq!(out.key_id, 3);

        // Overwriting replaces the content and keeps the mode, even if the old
        // file was world-readable.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        seal_to_file(&path, KeySource::Key(&key), 4, &AAD, b"rotated").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let out = unseal_file(&path, KeySource::Key(&key), &AAD).unwrap();
        assert_eq!((out.key_id, out.plaintext.as_slice()), (4, &b"rotated"[..]));
        assert_eq!(entries(dir.path()), ["ca.key.sealed"]);
    }

    #[test]
    fn refuses_to_write_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        // A PEM header built at run time: plaintext that must never be written.
        let pem = format!("-----BEGIN {} KEY-----", "PRIVATE");
        let err = write_sealed_file(&path, pem.as_bytes()).unwrap_err();
        assert!(matches!(err.root(), LockError::NotSealed));
        assert!(entries(dir.path()).is_empty(), "nothing may be written");
    }

    #[test]
    fn failed_write_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let key = UnlockKey::generate().unwrap();
        let blob = seal(KeySource::Key(&key), 1, &AAD, b"new").unwrap();

        // Missing directory: error names it, nothing is created.
        let missing = dir.path().join("no-such-dir").join("file");
        match write_sealed_file(&missing, &blob) {
            Err(LockError::Io { path, .. }) => {
                assert!(path.starts_with(dir.path().join("no-such-dir")))
            }
            other => panic!("expected Io error, got {other:?}"),
        }
        assert!(entries(dir.path()).is_empty());

        // The rename fails (target is a non-empty directory): the old content
        // stays and the temporary file is removed.
        let target = dir.path().join("target");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), b"old content").unwrap();
        let err = write_sealed_file(&target, &blob).unwrap_err();
        assert!(
            matches!(
                err,
                LockError::Io {
                    action: "rename into place",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(fs::read(target.join("old")).unwrap(), b"old content");
        assert_eq!(
            entries(dir.path()),
            ["target"],
            "temporary file left behind"
        );

        // A rejected blob does not touch an existing file.
        let file = dir.path().join("sealed");
        write_sealed_file(&file, &blob).unwrap();
        assert!(write_sealed_file(&file, &blob[..50]).is_err());
        assert_eq!(fs::read(&file).unwrap(), blob);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dek.sealed");
        let key = UnlockKey::generate().unwrap();
        seal_to_file(&path, KeySource::Key(&key), 1, &AAD, b"payload").unwrap();
        let shown = path.display().to_string();

        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = unseal_file(&path, KeySource::Key(&key), &AAD).unwrap_err();
        assert!(err.to_string().contains(&shown), "{err}");
        assert!(matches!(err.root(), LockError::Tampered));
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("tampered"), "{source}");

        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = unseal_file(&path, KeySource::Key(&key), &AAD).unwrap_err();
        assert!(err.to_string().contains(&shown));
        assert!(matches!(err.root(), LockError::HeaderDamaged));

        let other = UnlockKey::generate().unwrap();
        seal_to_file(&path, KeySource::Key(&key), 1, &AAD, b"payload").unwrap();
        let err = unseal_file(&path, KeySource::Key(&other), &AAD).unwrap_err();
        assert!(err.to_string().contains(&shown));
        assert!(matches!(err.root(), LockError::WrongKey));

        let missing = dir.path().join("missing");
        let err = read_sealed_file(&missing).unwrap_err();
        assert!(matches!(&err, LockError::Io { action: "open", .. }));
        assert!(err.to_string().contains(&missing.display().to_string()));

        let err = read_sealed_file(dir.path()).unwrap_err();
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn oversized_file_is_rejected_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        // Sparse: no data is written, and none must be read.
        File::create(&path)
            .unwrap()
            .set_len(MAX_BLOB_LEN as u64 + 1)
            .unwrap();
        let err = read_sealed_file(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(matches!(err.root(), LockError::TooLarge { .. }));
    }
}

#[cfg(test)]
mod key_file_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unlock_key_file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unlock.key");
        let key = crate::UnlockKey::generate().unwrap();
        write_unlock_key_file(&path, &key).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(read_unlock_key_file(&path).unwrap() == key);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_unlock_key_file(&path).unwrap_err();
        assert!(
            matches!(err, LockError::KeyFilePermissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "MOATKEY-1-short\n").unwrap();
        let err = read_unlock_key_file(&path).unwrap_err();
        assert!(matches!(err, LockError::KeyFile { .. }), "{err}");
        assert!(err.to_string().contains("unlock.key"), "{err}");
    }
}
