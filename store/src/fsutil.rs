//! File helpers with the durability every store write needs.

use std::io::Read;
use std::path::Path;

use crate::StoreError;

/// Writes `bytes` to `path` atomically and durably (see
/// [`moat_lock::write_file_atomic`]: temp file, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    Ok(moat_lock::write_file_atomic(path, bytes)?)
}

/// fsyncs a directory so that renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

/// Reads a whole file, refusing one larger than `limit` before reading.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, StoreError> {
    let file = std::fs::File::open(path).map_err(StoreError::io("open", path))?;
    let len = file.metadata().map_err(StoreError::io("stat", path))?.len();
    if len > limit {
        return Err(StoreError::corrupt(
            path,
            "size",
            format!("{len} bytes is over the {limit} byte limit"),
        ));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(limit)
        .read_to_end(&mut buf)
        .map_err(StoreError::io("read", path))?;
    Ok(buf)
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(StoreError::io("create", dir))
}
