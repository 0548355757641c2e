//! The plaintext payload: magic line, manifest, file records, SHA-256
//! trailer (layout in the crate docs and `docs/formats/backup.md`).
//!
//! The parser reads from any `Read` and never allocates more than it has
//! actually received plus one growth step: every length is checked against
//! [`Limits`] before use, and buffers grow as data arrives.

use std::io::{self, Read, Write};

use ring::digest;
use zeroize::Zeroizing;

use crate::check::{Limits, check_files};
use crate::error::{BackupError, Damage, Limit, PathProblem, Section};
use crate::{BackupFile, FORMAT_VERSION, FileEntry, Manifest};

/// The first ten bytes of a payload.
pub(crate) const MAGIC: &[u8; 10] = b"MOATBACKUP";
/// Length of the magic line: `MOATBACKUP`, one ASCII digit, `\n`.
pub(crate) const MAGIC_LINE_LEN: usize = 12;
/// Length of the trailer.
const TRAILER_LEN: usize = 32;
/// First allocation for a buffer whose declared length is larger.
const INITIAL_ALLOC: usize = 64 * 1024;

/// The first format version with an origin block after the manifest.
pub(crate) const SIGNED_VERSION: u32 = 2;

/// A payload as read: the manifest (parsed, and its exact bytes, which the
/// signature covers), the origin block (format 2) and the files.
pub(crate) struct Payload {
    pub(crate) manifest: Manifest,
    pub(crate) manifest_json: Zeroizing<Vec<u8>>,
    pub(crate) origin_json: Option<Zeroizing<Vec<u8>>>,
    pub(crate) files: Vec<BackupFile>,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("manifest", &self.manifest)
            .field("signed", &self.origin_json.is_some())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Writes a complete payload (format [`FORMAT_VERSION`]) to `out` and
/// returns `out`.
pub(crate) fn write_payload<W: Write>(
    out: W,
    manifest_json: &[u8],
    origin_json: &[u8],
    files: &[BackupFile],
) -> io::Result<W> {
    let mut w = HashingWriter {
        inner: out,
        ctx: digest::Context::new(&digest::SHA256),
    };
    w.write_all(MAGIC)?;
    w.write_all(&[b'0' + FORMAT_VERSION as u8, b'\n'])?;
    w.write_all(&len_u32(manifest_json.len())?.to_be_bytes())?;
    w.write_all(manifest_json)?;
    w.write_all(&len_u32(origin_json.len())?.to_be_bytes())?;
    w.write_all(origin_json)?;
    w.write_all(&len_u32(files.len())?.to_be_bytes())?;
    for file in files {
        let path_len = u16::try_from(file.path.len()).map_err(|_| too_long())?;
        w.write_all(&path_len.to_be_bytes())?;
        w.write_all(file.path.as_bytes())?;
        w.write_all(&file.mode.to_be_bytes())?;
        w.write_all(&(file.data.len() as u64).to_be_bytes())?;
        w.write_all(&file.data)?;
    }
    let HashingWriter { mut inner, ctx } = w;
    inner.write_all(ctx.finish().as_ref())?;
    Ok(inner)
}

/// How to classify I/O errors from the payload's reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Plaintext file: only end-of-file means something.
    Plain,
    /// age `StreamReader`: end-of-file is truncation at a chunk boundary,
    /// `InvalidData` is a chunk that failed authentication.
    Age,
}

impl Source {
    pub(crate) fn classify(self, e: io::Error, at: Section) -> BackupError {
        match (self, e.kind()) {
            (_, io::ErrorKind::UnexpectedEof) => BackupError::Truncated { at },
            (Source::Age, io::ErrorKind::InvalidData) => BackupError::Damaged {
                reason: Damage::Encryption,
            },
            _ => BackupError::Read { source: e },
        }
    }
}

/// Reads and fully verifies a payload whose magic has not been consumed
/// yet: framing, limits, trailer, end of input, manifest, file list, paths
/// and modes. The origin block, if any, is returned unchecked.
pub(crate) fn read_payload<R: Read>(
    input: R,
    source: Source,
    limits: &Limits,
) -> Result<Payload, BackupError> {
    let mut r = HashingReader {
        inner: input,
        ctx: digest::Context::new(&digest::SHA256),
    };
    let err = |at| move |e| source.classify(e, at);

    let mut magic = [0u8; MAGIC_LINE_LEN];
    r.read_exact(&mut magic).map_err(err(Section::Start))?;
    if &magic[..MAGIC.len()] != MAGIC || magic[MAGIC_LINE_LEN - 1] != b'\n' {
        return Err(BackupError::NotABackup);
    }
    let version = magic[MAGIC.len()];
    if !version.is_ascii_digit() {
        return Err(BackupError::NotABackup);
    }
    let version = u32::from(version - b'0');
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(BackupError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }

    let manifest_len = u64::from(read_u32(&mut r).map_err(err(Section::Manifest))?);
    check(Limit::ManifestSize, manifest_len, limits.manifest)?;
    let manifest_json = read_growing(&mut r, manifest_len).map_err(err(Section::Manifest))?;
    let origin_json = if version >= SIGNED_VERSION {
        let len = u64::from(read_u32(&mut r).map_err(err(Section::Origin))?);
        check(Limit::OriginSize, len, crate::MAX_ORIGIN_LEN)?;
        Some(read_growing(&mut r, len).map_err(err(Section::Origin))?)
    } else {
        None
    };

    let count = u64::from(read_u32(&mut r).map_err(err(Section::FileRecord))?);
    check(Limit::FileCount, count, limits.files)?;
    let mut records = Vec::new();
    let mut total: u64 = 0;
    for _ in 0..count {
        let mut path_len = [0u8; 2];
        r.read_exact(&mut path_len)
            .map_err(err(Section::FileRecord))?;
        let path_len = u64::from(u16::from_be_bytes(path_len));
        check(Limit::PathLength, path_len, limits.path)?;
        let path = read_growing(&mut r, path_len).map_err(err(Section::FileRecord))?;
        let mode = read_u32(&mut r).map_err(err(Section::FileRecord))?;
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(err(Section::FileRecord))?;
        let len = u64::from_be_bytes(len);
        check(Limit::FileSize, len, limits.file)?;
        total = total.saturating_add(len);
        check(Limit::TotalSize, total, limits.total)?;
        let data = read_growing(&mut r, len).map_err(err(Section::FileData))?;
        records.push((path, mode, data));
    }

    let expected = r.ctx.clone().finish();
    let mut trailer = [0u8; TRAILER_LEN];
    r.inner
        .read_exact(&mut trailer)
        .map_err(err(Section::Trailer))?;
    if trailer[..] != *expected.as_ref() {
        return Err(BackupError::Damaged {
            reason: Damage::Trailer,
        });
    }
    // Read to the end: this also makes age authenticate its last chunk.
    let mut extra = [0u8; 1];
    loop {
        match r.inner.read(&mut extra) {
            Ok(0) => break,
            Ok(_) => {
                return Err(BackupError::Damaged {
                    reason: Damage::TrailingData,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(source.classify(e, Section::Trailer)),
        }
    }

    // The bytes are exactly what the writer wrote; now check what it wrote.
    let manifest = parse_manifest(&manifest_json, version)?;
    let mut files = Vec::with_capacity(records.len());
    for (path, mode, data) in records {
        let path = match std::str::from_utf8(&path) {
            Ok(p) => p.to_owned(),
            Err(_) => {
                return Err(BackupError::UnsafePath {
                    path: String::from_utf8_lossy(&path).into_owned(),
                    reason: PathProblem::NotUtf8,
                });
            }
        };
        files.push(BackupFile { path, mode, data });
    }
    check_files(
        files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.data.len() as u64)),
        limits,
    )
    .map_err(|e| e.in_backup())?;
    check_against_manifest(&manifest, &files)?;
    Ok(Payload {
        manifest,
        manifest_json,
        origin_json,
        files,
    })
}

/// The manifest entry the writer records for `file`.
pub(crate) fn entry_for(file: &BackupFile) -> FileEntry {
    FileEntry {
        path: file.path.clone(),
        len: file.data.len() as u64,
        sha256: sha256_hex(&file.data),
        mode: file.mode,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// The manifest's `format` must be the magic line's `version`.
fn parse_manifest(json: &[u8], version: u32) -> Result<Manifest, BackupError> {
    /// Reads only the version, so a future manifest of another shape is
    /// reported as a version problem, not as damage.
    #[derive(serde::Deserialize)]
    struct Probe {
        format: u32,
    }
    let damaged = |e: serde_json::Error| BackupError::Damaged {
        reason: Damage::Manifest(e.to_string()),
    };
    let probe: Probe = serde_json::from_slice(json).map_err(damaged)?;
    if !(1..=FORMAT_VERSION).contains(&probe.format) {
        return Err(BackupError::UnsupportedVersion {
            found: probe.format,
            supported: FORMAT_VERSION,
        });
    }
    if probe.format != version {
        return Err(BackupError::Damaged {
            reason: Damage::Manifest(format!(
                "it says format {} inside a format {version} payload",
                probe.format
            )),
        });
    }
    serde_json::from_slice(json).map_err(damaged)
}

fn check_against_manifest(manifest: &Manifest, files: &[BackupFile]) -> Result<(), BackupError> {
    let mismatch = |path: &str, field| BackupError::Damaged {
        reason: Damage::ManifestMismatch {
            path: path.to_owned(),
            field,
        },
    };
    if manifest.files.len() != files.len() {
        return Err(mismatch("", "count"));
    }
    for (entry, file) in manifest.files.iter().zip(files) {
        if entry.path != file.path {
            return Err(mismatch(&file.path, "path"));
        }
        if entry.mode != file.mode {
            return Err(mismatch(&file.path, "mode"));
        }
        if entry.len != file.data.len() as u64 {
            return Err(mismatch(&file.path, "length"));
        }
        if entry.sha256 != sha256_hex(&file.data) {
            return Err(mismatch(&file.path, "sha256"));
        }
    }
    Ok(())
}

fn check(what: Limit, found: u64, max: u64) -> Result<(), BackupError> {
    Limits::check(what, found, max).map_err(|e| e.in_backup())
}

fn read_u32<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Reads exactly `len` bytes into a zeroizing buffer that grows as data
/// arrives (doubling from 64 KiB), so a large declared length followed by
/// little data costs little memory. Each growth copies into a new
/// zeroizing buffer and wipes the old one, so no copy of the data is left
/// behind. `len` must already be checked against a limit.
fn read_growing<R: Read>(r: &mut R, len: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let len = usize::try_from(len).map_err(|_| too_long())?;
    let mut buf = Zeroizing::new(Vec::with_capacity(len.min(INITIAL_ALLOC)));
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            let new_cap = buf.capacity().saturating_mul(2).max(INITIAL_ALLOC).min(len);
            let mut bigger = Zeroizing::new(Vec::with_capacity(new_cap));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        let start = buf.len();
        let end = buf.capacity().min(len);
        buf.resize(end, 0);
        match r.read(&mut buf[start..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

fn len_u32(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| too_long())
}

fn too_long() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "length does not fit its field")
}

/// Hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    ctx: digest::Context,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    ctx: digest::Context,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_with_manifest(json: &[u8]) -> Vec<u8> {
        let mut v = b"MOATBACKUP1\n".to_vec();
        v.extend_from_slice(&(json.len() as u32).to_be_bytes());
        v.extend_from_slice(json);
        v
    }

    fn read(bytes: &[u8], limits: &Limits) -> Result<Payload, BackupError> {
        read_payload(bytes, Source::Plain, limits)
    }

    #[test]
    fn huge_manifest_length_is_too_large_before_reading_it() {
        let mut v = b"MOATBACKUP1\n".to_vec();
        v.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read(&v, &Limits::DEFAULT).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::TooLarge {
                    what: Limit::ManifestSize,
                    found: 0xffff_ffff,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn huge_file_count_is_too_large() {
        let mut v = header_with_manifest(b"{}");
        v.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = read(&v, &Limits::DEFAULT).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::TooLarge {
                    what: Limit::FileCount,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    fn one_file_record(declared_len: u64, data: &[u8]) -> Vec<u8> {
        let mut v = header_with_manifest(b"{}");
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        v.push(b'a');
        v.extend_from_slice(&0o600u32.to_be_bytes());
        v.extend_from_slice(&declared_len.to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn huge_declared_file_length_is_too_large_without_allocating() {
        for len in [u64::MAX, crate::MAX_FILE_LEN + 1] {
            let e = read(&one_file_record(len, b"xyz"), &Limits::DEFAULT).unwrap_err();
            assert!(
                matches!(
                    e,
                    BackupError::TooLarge {
                        what: Limit::FileSize,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn allowed_but_absent_file_length_is_truncated_and_allocates_little() {
        // 512 MiB declared, 3 bytes present: reports truncation after one
        // 64 KiB allocation (a 512 MiB zeroed buffer would take a visible
        // fraction of a second; this guards the growth strategy).
        let e = read(
            &one_file_record(crate::MAX_FILE_LEN, b"xyz"),
            &Limits::DEFAULT,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::Truncated {
                    at: Section::FileData
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn read_growing_grows_and_keeps_data() {
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let got = read_growing(&mut &data[..], data.len() as u64).unwrap();
        assert_eq!(&got[..], &data[..]);
        let e = read_growing(&mut &data[..10], 11).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn total_size_limit_applies_across_files() {
        let limits = Limits {
            file: 10,
            total: 15,
            ..Limits::DEFAULT
        };
        let mut v = header_with_manifest(b"{}");
        v.extend_from_slice(&2u32.to_be_bytes());
        for name in [b'a', b'b'] {
            v.extend_from_slice(&1u16.to_be_bytes());
            v.push(name);
            v.extend_from_slice(&0o600u32.to_be_bytes());
            v.extend_from_slice(&8u64.to_be_bytes());
            v.extend_from_slice(&[0u8; 8]);
        }
        let e = read(&v, &limits).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::TooLarge {
                    what: Limit::TotalSize,
                    found: 16,
                    max: 15
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn other_magic_versions_are_unsupported_and_other_text_is_not_a_backup() {
        let e = read(b"MOATBACKUP3\n", &Limits::DEFAULT).unwrap_err();
        assert!(
            matches!(
                e,
                BackupError::UnsupportedVersion {
                    found: 3,
                    supported: 2
                }
            ),
            "{e:?}"
        );
        let e = read(b"MOATBACKUPx\n", &Limits::DEFAULT).unwrap_err();
        assert!(matches!(e, BackupError::NotABackup), "{e:?}");
    }
}
