//! Export bundles: records as JSON Lines, the signed tree heads and the CA
//! certificate, as one file or as a directory.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::BundleError;
use crate::hash::Hash;
use crate::head::SignedTreeHead;
use crate::record::MAX_RECORD_BYTES;

/// The `format` of a bundle's header.
pub const BUNDLE_FORMAT: &str = "moat-audit-bundle-v1";
/// Largest header (`heads.json`, or the first line of a one-file bundle).
pub const MAX_HEADER_BYTES: u64 = 64 * 1024 * 1024;
/// Most signed tree heads in one bundle.
pub const MAX_HEADS: usize = 50_000;
/// Largest CA certificate file.
pub const MAX_CA_PEM_BYTES: u64 = 64 * 1024;
/// Largest `base_size` a bundle header may claim. No log comes near 2^62
/// records; the bound keeps every `base_size + n` of the verifier far from
/// overflow (a crafted header with a base near `u64::MAX` made
/// `verify_bundle` overflow; reproduced through the `audit_bundle` fuzz
/// target, whose seeds now hold such a header).
const MAX_BASE_SIZE: u64 = 1 << 62;

/// Name of the records file in a directory bundle.
pub const RECORDS_FILE: &str = "records.jsonl";
/// Name of the header file in a directory bundle.
pub const HEADS_FILE: &str = "heads.json";
/// Name of the CA certificate file in a directory bundle.
pub const CA_FILE: &str = "ca.pem";

/// How a bundle is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One file: the header as one JSON line (with the CA certificate in
    /// it), then one record per line.
    File,
    /// A directory holding `heads.json`, `ca.pem` and `records.jsonl`.
    Directory,
}

/// An exported piece of the audit log: records `base_size + 1` onwards,
/// the signed tree heads that cover them, and the cluster CA certificate.
///
/// Records stay on disk for a bundle read with [`read_bundle`]: they are
/// streamed when verified, never loaded whole.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Records before the first one in the bundle (0 for a full export).
    pub base_size: u64,
    /// [`MerkleLog::frontier`](crate::MerkleLog::frontier) at `base_size`:
    /// lets a verifier hash on from there (empty for a full export).
    pub base_frontier: Vec<Hash>,
    /// Signed tree heads, in any order.
    pub heads: Vec<SignedTreeHead>,
    /// The cluster's root CA certificate(s), PEM, as the exporter saw them.
    pub ca_pem: String,
    records: Records,
}

#[derive(Debug, Clone)]
enum Records {
    Memory(Vec<u8>),
    File { path: PathBuf, offset: u64 },
}

/// The header of a bundle: `heads.json` in a directory, the first line of
/// a one-file bundle (which also carries `ca_pem`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    base_size: u64,
    base_frontier: Vec<Hash>,
    heads: Vec<SignedTreeHead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_pem: Option<String>,
}

impl Bundle {
    /// An empty bundle of a full export (starting at record 1) in memory.
    pub fn new(ca_pem: String, heads: Vec<SignedTreeHead>) -> Self {
        Self {
            base_size: 0,
            base_frontier: Vec::new(),
            heads,
            ca_pem,
            records: Records::Memory(Vec::new()),
        }
    }

    /// Makes the bundle start after record `base_size`, whose tree has the
    /// frontier `base_frontier` ([`MerkleLog::frontier`](crate::MerkleLog::frontier)).
    pub fn with_base(mut self, base_size: u64, base_frontier: Vec<Hash>) -> Self {
        self.base_size = base_size;
        self.base_frontier = base_frontier;
        self
    }

    /// Appends one record line (its canonical JSON, no newline) to an
    /// in-memory bundle. A bundle read from disk cannot be appended to.
    pub fn push_record(&mut self, line: &[u8]) -> Result<(), BundleError> {
        check_line(line)?;
        match &mut self.records {
            Records::Memory(buf) => {
                buf.extend_from_slice(line);
                buf.push(b'\n');
                Ok(())
            }
            Records::File { path, .. } => Err(BundleError::malformed(
                "bundle",
                format!(
                    "{} is read from disk; records cannot be added",
                    path.display()
                ),
            )),
        }
    }

    /// Calls `f` with each record line, as stored, without its newline
    /// (for listing them; [`verify_bundle`](crate::verify_bundle) streams
    /// them itself).
    pub fn for_each_record(&self, mut f: impl FnMut(&[u8])) -> Result<(), BundleError> {
        self.scan_records(&mut |line| {
            f(line);
            true
        })
    }

    /// Calls `f` with each record line until it returns `false`.
    pub(crate) fn scan_records(&self, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), BundleError> {
        match &self.records {
            Records::Memory(buf) => scan_lines(&mut &buf[..], Path::new("<memory>"), f),
            Records::File { path, offset } => {
                let mut file = File::open(path).map_err(|e| BundleError::io(path, e))?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| BundleError::io(path, e))?;
                let mut reader = BufReader::with_capacity(1 << 20, file);
                scan_lines(&mut reader, path, f)
            }
        }
    }

    /// The bundle in the one-file layout, in memory (what a daemon sends
    /// for `moat audit export`).
    pub fn to_one_file(&self) -> Result<Vec<u8>, BundleError> {
        let header = Header {
            format: BUNDLE_FORMAT.to_owned(),
            base_size: self.base_size,
            base_frontier: self.base_frontier.clone(),
            heads: self.heads.clone(),
            ca_pem: Some(self.ca_pem.clone()),
        };
        let mut out = header_json(&header)?;
        out.push(b'\n');
        self.scan_records(&mut |line| {
            out.extend_from_slice(line);
            out.push(b'\n');
            true
        })?;
        Ok(out)
    }

    /// Writes the bundle to `path` in `layout` (see [`BundleWriter`]).
    pub fn write(&self, path: &Path, layout: Layout) -> Result<(), BundleError> {
        let mut w = BundleWriter::create(
            path,
            layout,
            self.base_size,
            &self.base_frontier,
            &self.heads,
            &self.ca_pem,
        )?;
        let mut result = Ok(());
        self.scan_records(&mut |line| {
            result = w.write_record(line);
            result.is_ok()
        })?;
        result?;
        w.finish()
    }
}

/// Writes `bundle` to `path` (a new file or directory) in `layout`.
pub fn write_bundle(path: &Path, bundle: &Bundle, layout: Layout) -> Result<(), BundleError> {
    bundle.write(path, layout)
}

/// Reads a bundle's header and CA certificate from `path` (a one-file
/// bundle or a bundle directory); the records stay on disk. Sizes are
/// checked before anything is read into memory.
pub fn read_bundle(path: &Path) -> Result<Bundle, BundleError> {
    let meta = fs::metadata(path).map_err(|e| BundleError::io(path, e))?;
    if meta.is_dir() {
        let heads_path = path.join(HEADS_FILE);
        let header_bytes = read_limited(&heads_path, MAX_HEADER_BYTES, "bundle header")?;
        let header = parse_header(&header_bytes)?;
        let ca_path = path.join(CA_FILE);
        let ca = read_limited(&ca_path, MAX_CA_PEM_BYTES, "CA certificate")?;
        let ca_pem = String::from_utf8(ca)
            .map_err(|_| BundleError::malformed("CA certificate", "not UTF-8 text"))?;
        let records = path.join(RECORDS_FILE);
        fs::metadata(&records).map_err(|e| BundleError::io(&records, e))?;
        Ok(Bundle {
            base_size: header.base_size,
            base_frontier: header.base_frontier,
            heads: header.heads,
            ca_pem,
            records: Records::File {
                path: records,
                offset: 0,
            },
        })
    } else {
        let file = File::open(path).map_err(|e| BundleError::io(path, e))?;
        let mut reader = BufReader::new(file).take(MAX_HEADER_BYTES + 1);
        let mut first = Vec::new();
        reader
            .read_until(b'\n', &mut first)
            .map_err(|e| BundleError::io(path, e))?;
        if first.last() != Some(&b'\n') {
            if first.len() as u64 > MAX_HEADER_BYTES {
                return Err(BundleError::TooLarge {
                    what: "bundle header",
                    bytes: first.len() as u64,
                    max: MAX_HEADER_BYTES,
                });
            }
            return Err(BundleError::malformed(
                "bundle",
                "the file ends inside its header line",
            ));
        }
        let offset = first.len() as u64;
        first.pop();
        let header = parse_header(&first)?;
        let ca_pem = header.ca_pem.ok_or_else(|| {
            BundleError::malformed("bundle header", "a one-file bundle carries ca_pem")
        })?;
        if ca_pem.len() as u64 > MAX_CA_PEM_BYTES {
            return Err(BundleError::TooLarge {
                what: "CA certificate",
                bytes: ca_pem.len() as u64,
                max: MAX_CA_PEM_BYTES,
            });
        }
        Ok(Bundle {
            base_size: header.base_size,
            base_frontier: header.base_frontier,
            heads: header.heads,
            ca_pem,
            records: Records::File {
                path: path.to_path_buf(),
                offset,
            },
        })
    }
}

/// Writes a bundle record by record, so an export never holds the log in
/// memory.
///
/// Durability: every file is written under a temporary name, flushed and
/// fsynced, renamed into place, and the directory fsynced, by
/// [`BundleWriter::finish`]; a bundle that was not finished leaves only
/// `*.tmp` files behind.
pub struct BundleWriter {
    layout: Layout,
    path: PathBuf,
    records_tmp: PathBuf,
    records: BufWriter<File>,
    dir: PathBuf,
    /// Side files of a directory bundle: (temporary, final) names.
    side_files: Vec<(PathBuf, PathBuf)>,
}

impl BundleWriter {
    /// Starts a bundle at `path`, which must not exist (for a directory
    /// bundle it may be an empty directory).
    pub fn create(
        path: &Path,
        layout: Layout,
        base_size: u64,
        base_frontier: &[Hash],
        heads: &[SignedTreeHead],
        ca_pem: &str,
    ) -> Result<Self, BundleError> {
        if heads.len() > MAX_HEADS {
            return Err(BundleError::TooManyHeads {
                found: heads.len(),
                max: MAX_HEADS,
            });
        }
        let mut header = Header {
            format: BUNDLE_FORMAT.to_owned(),
            base_size,
            base_frontier: base_frontier.to_vec(),
            heads: heads.to_vec(),
            ca_pem: None,
        };
        match layout {
            Layout::File => {
                if path.exists() {
                    return Err(BundleError::Exists {
                        path: path.to_path_buf(),
                    });
                }
                let dir = parent_dir(path);
                let tmp = tmp_name(path);
                let file = create_new(&tmp)?;
                let mut records = BufWriter::with_capacity(1 << 20, file);
                header.ca_pem = Some(ca_pem.to_owned());
                let json = header_json(&header)?;
                records
                    .write_all(&json)
                    .and_then(|()| records.write_all(b"\n"))
                    .map_err(|e| BundleError::io(&tmp, e))?;
                Ok(Self {
                    layout,
                    path: path.to_path_buf(),
                    records_tmp: tmp,
                    records,
                    dir,
                    side_files: Vec::new(),
                })
            }
            Layout::Directory => {
                match fs::read_dir(path) {
                    Ok(mut entries) => {
                        if entries.next().is_some() {
                            return Err(BundleError::Exists {
                                path: path.to_path_buf(),
                            });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        fs::create_dir(path).map_err(|e| BundleError::io(path, e))?;
                    }
                    Err(e) => return Err(BundleError::io(path, e)),
                }
                let mut side_files = Vec::new();
                for (name, bytes) in [
                    (HEADS_FILE, header_json(&header)?),
                    (CA_FILE, ca_pem.as_bytes().to_vec()),
                ] {
                    let target = path.join(name);
                    let tmp = tmp_name(&target);
                    let mut f = create_new(&tmp)?;
                    f.write_all(&bytes)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| BundleError::io(&tmp, e))?;
                    side_files.push((tmp, target));
                }
                let target = path.join(RECORDS_FILE);
                let tmp = tmp_name(&target);
                let records = BufWriter::with_capacity(1 << 20, create_new(&tmp)?);
                Ok(Self {
                    layout,
                    path: target,
                    records_tmp: tmp,
                    records,
                    dir: path.to_path_buf(),
                    side_files,
                })
            }
        }
    }

    /// Appends one record line (canonical JSON, no newline).
    pub fn write_record(&mut self, line: &[u8]) -> Result<(), BundleError> {
        check_line(line)?;
        self.records
            .write_all(line)
            .and_then(|()| self.records.write_all(b"\n"))
            .map_err(|e| BundleError::io(&self.records_tmp, e))
    }

    /// Flushes, fsyncs and renames every file into place, then fsyncs the
    /// directory.
    pub fn finish(self) -> Result<(), BundleError> {
        let Self {
            layout: _,
            path,
            records_tmp,
            records,
            dir,
            side_files,
        } = self;
        let file = records
            .into_inner()
            .map_err(|e| BundleError::io(&records_tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| BundleError::io(&records_tmp, e))?;
        drop(file);
        for (tmp, target) in side_files {
            fs::rename(&tmp, &target).map_err(|e| BundleError::io(&target, e))?;
        }
        if path.exists() {
            return Err(BundleError::Exists { path });
        }
        fs::rename(&records_tmp, &path).map_err(|e| BundleError::io(&path, e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BundleError::io(&dir, e))
    }

    /// The layout being written.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}

fn check_line(line: &[u8]) -> Result<(), BundleError> {
    if line.len() > MAX_RECORD_BYTES {
        return Err(BundleError::TooLarge {
            what: "record",
            bytes: line.len() as u64,
            max: MAX_RECORD_BYTES as u64,
        });
    }
    if line.contains(&b'\n') {
        return Err(BundleError::malformed(
            "record",
            "a record line holds a newline",
        ));
    }
    Ok(())
}

fn header_json(header: &Header) -> Result<Vec<u8>, BundleError> {
    let json =
        serde_json::to_vec(header).map_err(|e| BundleError::malformed("bundle header", e))?;
    if json.len() as u64 > MAX_HEADER_BYTES {
        return Err(BundleError::TooLarge {
            what: "bundle header",
            bytes: json.len() as u64,
            max: MAX_HEADER_BYTES,
        });
    }
    Ok(json)
}

fn parse_header(bytes: &[u8]) -> Result<Header, BundleError> {
    // Look at the format before anything else, so that another version is
    // reported as such rather than as a malformed header.
    #[derive(serde::Deserialize)]
    struct Format {
        format: String,
    }
    let format: Format =
        serde_json::from_slice(bytes).map_err(|e| BundleError::malformed("bundle header", e))?;
    if format.format != BUNDLE_FORMAT {
        return Err(BundleError::UnsupportedFormat {
            what: "bundle",
            found: format.format.chars().take(64).collect(),
            expected: BUNDLE_FORMAT,
        });
    }
    let header: Header =
        serde_json::from_slice(bytes).map_err(|e| BundleError::malformed("bundle header", e))?;
    if header.heads.len() > MAX_HEADS {
        return Err(BundleError::TooManyHeads {
            found: header.heads.len(),
            max: MAX_HEADS,
        });
    }
    if header.base_size > MAX_BASE_SIZE {
        return Err(BundleError::malformed(
            "bundle header",
            format!(
                "base_size {} is past any log (at most {MAX_BASE_SIZE} records): the bundle was not written by moat",
                header.base_size
            ),
        ));
    }
    if header.base_frontier.len() != header.base_size.count_ones() as usize {
        return Err(BundleError::malformed(
            "bundle header",
            format!(
                "base_frontier has {} hashes; a tree of {} records has {}",
                header.base_frontier.len(),
                header.base_size,
                header.base_size.count_ones()
            ),
        ));
    }
    Ok(header)
}

pub(crate) fn read_limited(
    path: &Path,
    max: u64,
    what: &'static str,
) -> Result<Vec<u8>, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io(path, e))?;
    let len = file.metadata().map_err(|e| BundleError::io(path, e))?.len();
    if len > max {
        return Err(BundleError::TooLarge {
            what,
            bytes: len,
            max,
        });
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| BundleError::io(path, e))?;
    if out.len() as u64 > max {
        return Err(BundleError::TooLarge {
            what,
            bytes: out.len() as u64,
            max,
        });
    }
    Ok(out)
}

/// Calls `f` with each line (without its `\n`) until it returns `false`.
/// Lines in the reader's buffer are passed without copying; a line longer
/// than [`MAX_RECORD_BYTES`] stops the scan with an error. A last line
/// without a newline counts as a line.
fn scan_lines(
    reader: &mut dyn BufRead,
    path: &Path,
    f: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), BundleError> {
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(|e| BundleError::io(path, e))?;
        if buf.is_empty() {
            if !partial.is_empty() {
                f(&partial);
            }
            return Ok(());
        }
        let mut start = 0;
        let mut keep_going = true;
        while let Some(pos) = memchr::memchr(b'\n', &buf[start..]) {
            let end = start + pos;
            keep_going = if partial.is_empty() {
                line_fits(&buf[start..end])? && f(&buf[start..end])
            } else {
                partial.extend_from_slice(&buf[start..end]);
                let go = line_fits(&partial)? && f(&partial);
                partial.clear();
                go
            };
            start = end + 1;
            if !keep_going {
                break;
            }
        }
        if keep_going {
            partial.extend_from_slice(&buf[start..]);
            line_fits(&partial)?;
        }
        let consumed = buf.len();
        reader.consume(consumed);
        if !keep_going {
            return Ok(());
        }
    }
}

fn line_fits(line: &[u8]) -> Result<bool, BundleError> {
    if line.len() > MAX_RECORD_BYTES {
        return Err(BundleError::TooLarge {
            what: "record line",
            bytes: line.len() as u64,
            max: MAX_RECORD_BYTES as u64,
        });
    }
    Ok(true)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(crate) fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

pub(crate) fn create_new(path: &Path) -> Result<File, BundleError> {
    File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| BundleError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hash, verify_bundle};

    /// A one-file bundle after `base` records (a frontier of the right
    /// length, all zero) holding one record line.
    fn one_file_after(base: u64) -> Vec<u8> {
        let frontier = vec![Hash::ZERO; base.count_ones() as usize];
        let mut bundle = Bundle::new(String::new(), Vec::new()).with_base(base, frontier);
        bundle.push_record(b"{}").expect("a short line");
        bundle.to_one_file().expect("in memory")
    }

    /// Regression (issue 16, fuzzing `audit_bundle`): a header claiming a base
    /// near `u64::MAX` made `verify_bundle` overflow `base + n` (a panic
    /// with overflow checks, a wrong sequence check without). It is
    /// refused when read, with a message naming the field.
    #[test]
    fn a_base_size_past_any_log_is_refused_when_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        for base in [u64::MAX, u64::MAX - 1, MAX_BASE_SIZE + 1] {
            let path = dir.path().join(format!("b{base}"));
            fs::write(&path, one_file_after(base)).expect("write");
            match read_bundle(&path) {
                Err(BundleError::Malformed { reason, .. }) => {
                    assert!(reason.contains("base_size"), "{reason}");
                }
                Err(e) => panic!("base {base}: unexpected error {e}"),
                Ok(bundle) => {
                    // What the old code went on to do.
                    let report = verify_bundle(&bundle, b"", None);
                    panic!("base {base} was read (verified to: {report})");
                }
            }
        }
        // The largest base allowed still reads, and verifies without a
        // panic (to "not verified": there is no head).
        let path = dir.path().join("max");
        fs::write(&path, one_file_after(MAX_BASE_SIZE)).expect("write");
        let bundle = read_bundle(&path).expect("the largest base reads");
        assert!(!verify_bundle(&bundle, b"", None).ok());
    }
}
