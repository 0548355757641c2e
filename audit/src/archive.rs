//! Archives of the log's oldest records (`moat audit archive`, decision
//! D48): a bundle directory (as `moat audit export --output DIR` writes)
//! plus `archive.json`, which names the range, the SHA-256 of
//! `records.jsonl` and the signed tree head at the archive's last record.
//! The cluster keeps the SHA-256 of `archive.json` (the archive's
//! *digest*) in its state and in an `audit.archive` record, then drops the
//! records. Format: `docs/formats/audit.md#archives`.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::bundle::{create_new, read_limited, tmp_name};
use crate::{
    Bundle, BundleError, Error, Frontier, InclusionProofFile, Layout, MerkleLog, RECORDS_FILE,
    Record, Report, SignedTreeHead, read_bundle, verify_bundle,
};

/// The `format` of `archive.json`.
pub const ARCHIVE_FORMAT: &str = "moat-audit-archive-v1";

/// The manifest's file name in an archive directory.
pub const ARCHIVE_MANIFEST: &str = "archive.json";

/// The largest `archive.json` read (checked before reading).
pub const MAX_ARCHIVE_MANIFEST_BYTES: u64 = 64 * 1024;

/// `archive.json`: what an archive holds and the head that covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveManifest {
    /// Always [`ARCHIVE_FORMAT`].
    pub format: String,
    /// The cluster's id.
    pub cluster: String,
    /// The first record archived (the bundle's `base_size + 1`).
    pub first: u64,
    /// The last record archived (`head.size`).
    pub last: u64,
    /// The date asked for (`--before`), RFC 3339.
    pub before: String,
    /// When the archive was written, RFC 3339.
    pub created: String,
    /// Lower-case hex SHA-256 of `records.jsonl`.
    pub records_sha256: String,
    /// A signed tree head at size `last`: it covers every archived record.
    pub head: SignedTreeHead,
}

/// An archive read back and checked by [`verify_archive`].
#[derive(Debug)]
pub struct VerifiedArchive {
    /// Its manifest.
    pub manifest: ArchiveManifest,
    /// `sha256:` and the hex SHA-256 of `archive.json`.
    pub digest: String,
    /// The bundle (records stay on disk).
    pub bundle: Bundle,
    /// The bundle's verification (with the manifest's head as the trusted
    /// head); the archive holds only if [`Report::ok`].
    pub report: Report,
}

/// Writes `bundle` (records `bundle.base_size + 1 ..= head.size`, with
/// `head` among its heads) to `dir` in the directory layout, then
/// `archive.json` (temp file, fsync, rename, fsync of the directory).
/// `dir` must not exist or be empty. Returns the archive's digest.
pub fn write_archive(
    dir: &Path,
    bundle: &Bundle,
    head: &SignedTreeHead,
    cluster: &str,
    before: &str,
    created: &str,
) -> Result<String, BundleError> {
    if !bundle
        .heads
        .iter()
        .any(|h| h.size == head.size && h.root == head.root)
    {
        return Err(BundleError::malformed(
            "archive",
            "the head at the archive's last record is not among the bundle's heads",
        ));
    }
    bundle.write(dir, Layout::Directory)?;
    let records_sha256 = sha256_file(&dir.join(RECORDS_FILE))?;
    let manifest = ArchiveManifest {
        format: ARCHIVE_FORMAT.to_owned(),
        cluster: cluster.to_owned(),
        first: bundle.base_size + 1,
        last: head.size,
        before: before.to_owned(),
        created: created.to_owned(),
        records_sha256,
        head: head.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BundleError::malformed("archive manifest", e))?;
    json.push(b'\n');
    let target = dir.join(ARCHIVE_MANIFEST);
    let tmp = tmp_name(&target);
    let mut f = create_new(&tmp)?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .map_err(|e| BundleError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &target).map_err(|e| BundleError::io(&target, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BundleError::io(dir, e))?;
    Ok(digest_of(&json))
}

/// Parses `archive.json`'s bytes (at most [`MAX_ARCHIVE_MANIFEST_BYTES`]).
/// Never panics.
pub fn parse_archive_manifest(bytes: &[u8]) -> Result<ArchiveManifest, BundleError> {
    if bytes.len() as u64 > MAX_ARCHIVE_MANIFEST_BYTES {
        return Err(BundleError::TooLarge {
            what: "archive manifest",
            bytes: bytes.len() as u64,
            max: MAX_ARCHIVE_MANIFEST_BYTES,
        });
    }
    #[derive(Deserialize)]
    struct Format {
        format: String,
    }
    let format: Format =
        serde_json::from_slice(bytes).map_err(|e| BundleError::malformed("archive manifest", e))?;
    if format.format != ARCHIVE_FORMAT {
        return Err(BundleError::UnsupportedFormat {
            what: "archive",
            found: format.format,
            expected: ARCHIVE_FORMAT,
        });
    }
    let m: ArchiveManifest =
        serde_json::from_slice(bytes).map_err(|e| BundleError::malformed("archive manifest", e))?;
    if m.first == 0 || m.last < m.first || m.head.size != m.last {
        return Err(BundleError::malformed(
            "archive manifest",
            format!(
                "records {} to {} with a head at size {} do not make an archive",
                m.first, m.last, m.head.size
            ),
        ));
    }
    if m.records_sha256.len() != 64
        || !m
            .records_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(BundleError::malformed(
            "archive manifest",
            "records_sha256 is not 64 lower-case hex digits",
        ));
    }
    Ok(m)
}

/// Reads and checks the archive in `dir`: the manifest, the digest of
/// `records.jsonl`, the range against the bundle, and the bundle itself
/// ([`verify_bundle`] against `ca_pem`, or the archive's own `ca.pem`,
/// with the manifest's head as the trusted head, so the records must
/// reproduce its root). A malformed archive is an error; a bundle that
/// does not verify is a report with problems.
pub fn verify_archive(dir: &Path, ca_pem: Option<&[u8]>) -> Result<VerifiedArchive, BundleError> {
    let bytes = read_limited(
        &dir.join(ARCHIVE_MANIFEST),
        MAX_ARCHIVE_MANIFEST_BYTES,
        "archive manifest",
    )?;
    let manifest = parse_archive_manifest(&bytes)?;
    let digest = digest_of(&bytes);
    let bundle = read_bundle(dir)?;
    if bundle.base_size + 1 != manifest.first {
        return Err(BundleError::malformed(
            "archive",
            format!(
                "the manifest names records from {}, the bundle starts after record {}",
                manifest.first, bundle.base_size
            ),
        ));
    }
    let records_sha256 = sha256_file(&dir.join(RECORDS_FILE))?;
    if records_sha256 != manifest.records_sha256 {
        return Err(BundleError::malformed(
            "archive",
            format!(
                "{RECORDS_FILE} does not match the digest in {ARCHIVE_MANIFEST}: it was changed"
            ),
        ));
    }
    let ca = ca_pem.unwrap_or(bundle.ca_pem.as_bytes()).to_vec();
    let report = verify_bundle(&bundle, &ca, Some(&manifest.head));
    Ok(VerifiedArchive {
        manifest,
        digest,
        bundle,
        report,
    })
}

/// An inclusion proof for record `seq` from an archive starting at record
/// 1, against the archive's own head (when no manager can link the record
/// to the cluster's current head). The records are read once; the proof
/// file verifies with [`crate::verify_inclusion_file`].
pub fn prove_from_archive(
    archive: &VerifiedArchive,
    seq: u64,
) -> Result<InclusionProofFile, Error> {
    let m = &archive.manifest;
    if seq < m.first || seq > m.last {
        return Err(Error::Bundle(BundleError::malformed(
            "archive",
            format!(
                "record {seq} is not in this archive ({} to {})",
                m.first, m.last
            ),
        )));
    }
    if archive.bundle.base_size != 0 {
        return Err(Error::Bundle(BundleError::malformed(
            "archive",
            format!(
                "this archive starts at record {}: a proof from it alone needs the records before it; ask a manager (it keeps their leaf hashes)",
                m.first
            ),
        )));
    }
    let mut tree = MerkleLog::new();
    let mut found = None;
    archive.bundle.scan_records(&mut |line| {
        tree.push_leaf(line);
        if tree.size() == seq {
            found = Some(line.to_vec());
        }
        tree.size() < m.last
    })?;
    let line = found.ok_or_else(|| {
        Error::Bundle(BundleError::malformed(
            "archive",
            format!("record {seq} is missing from the archive"),
        ))
    })?;
    let record = Record::from_line(&line)?;
    InclusionProofFile::new(&tree, record, m.head.clone())
}

/// Whether a bundle that starts after record `base_size` with
/// `base_frontier` continues the archive: it must start right after the
/// archive's last record, and its frontier there must have the root of the
/// archive's head (the later records then extend the archived ones).
pub fn continues_archive(manifest: &ArchiveManifest, bundle: &Bundle) -> Result<(), String> {
    if bundle.base_size != manifest.last {
        return Err(format!(
            "the bundle starts after record {}, the archive ends at record {}: export with `--since {}`",
            bundle.base_size,
            manifest.last,
            manifest.last + 1
        ));
    }
    let frontier = Frontier::from_parts(bundle.base_size, bundle.base_frontier.clone())
        .ok_or_else(|| "the bundle's base frontier does not fit its base size".to_string())?;
    if frontier.root() != manifest.head.root {
        return Err(format!(
            "the bundle's records do not continue the archive: its frontier at size {} does not have the archive head's root",
            manifest.last
        ));
    }
    Ok(())
}

fn digest_of(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&SHA256, bytes);
    format!("sha256:{}", hex(d.as_ref()))
}

fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| BundleError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
