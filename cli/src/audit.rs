//! `moat audit verify` and `moat audit verify-proof` (offline), and the
//! commands that ask a manager: export, prove, ls, tail, hash, report.
//!
//! The checks are moat-audit's ([`moat_audit::verify_bundle`],
//! [`moat_audit::verify_inclusion_file`]); this file reads the inputs,
//! prints the outcome and maps it to the exit code.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use moat_api::{
    AuditExportRequest, AuditHashRequest, AuditHashResponse, AuditProveRequest,
    AuditRecordsRequest, AuditRecordsResponse, MAX_AUDIT_PAGE, SecretString, path,
};
use moat_audit::{InclusionProofFile, Layout, Record, Report, SignedTreeHead};
use zeroize::Zeroizing;

use crate::args::{
    AuditArchive, AuditExport, AuditHash, AuditLs, AuditProve, AuditReport, AuditTail, AuditVerify,
    AuditVerifyProof, Format,
};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, read_input, safe, warn, write_json, write_table};

/// Said when no `--ca` is given: the bundle vouches for itself.
const SELF_TRUST: &str = "trusting the CA certificate inside the bundle; pass --ca ROOT.crt to \
                          check against one you obtained independently";

/// Largest trusted head file read (`SignedTreeHead::from_json` refuses
/// anything over its own, smaller, limit).
const MAX_HEAD_FILE: u64 = (moat_audit::MAX_CHAIN_PEM_BYTES + 4096) as u64;

pub(crate) fn verify(args: &AuditVerify) -> Result<(), Failure> {
    let ca = match &args.ca {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    let archive = match &args.archive {
        Some(dir) => Some(check_archive(dir, ca.as_deref(), args.format)?),
        None => None,
    };
    let Some(bundle_path) = &args.bundle else {
        return Ok(());
    };
    let bundle = moat_audit::read_bundle(bundle_path)
        .with_context(|| format!("cannot read the audit bundle {}", bundle_path.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "pass the file or directory written by `moat audit export --output`",
            )
        })?;
    if let Some(archive) = &archive {
        moat_audit::continues_archive(&archive.manifest, &bundle)
            .map_err(|why| {
                anyhow!(
                    "the bundle {} does NOT continue the archive: {why}",
                    bundle_path.display()
                )
            })
            .map_err(|e| {
                Failure::new(
                    e,
                    "export from the record after the archive's last, from the same cluster",
                )
            })?;
    }
    let trusted = match &args.trusted_head {
        Some(path) => Some(read_trusted_head(path)?),
        None => None,
    };
    let ca_pem = ca.as_deref().unwrap_or(bundle.ca_pem.as_bytes());
    let report = moat_audit::verify_bundle(&bundle, ca_pem, trusted.as_ref());

    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => {
            if ca.is_none() {
                warn(SELF_TRUST);
            }
            write_json(&mut out, &report)?;
        }
        Format::Table => {
            if ca.is_none() {
                writeln!(out, "note: {SELF_TRUST}")?;
            }
            write_report(&mut out, &report, trusted.as_ref())?;
        }
    }
    out.flush()?;
    if report.ok() {
        return Ok(());
    }
    let count = report.problems.len() as u64 + report.more_problems;
    Err(Failure::new(
        anyhow!(
            "the audit bundle {} does NOT verify: {count} problem{} ({})",
            bundle_path.display(),
            if count == 1 { "" } else { "s" },
            match args.format {
                Format::Table => "listed above",
                Format::Json => "in the report's `problems`",
            }
        ),
        "do not rely on these records: compare with an export from another manager, \
         and check that --ca is your cluster's root CA certificate",
    ))
}

/// Reads and verifies an archive directory, prints what it holds and its
/// report; fails unless it verifies.
fn check_archive(
    dir: &Path,
    ca: Option<&[u8]>,
    format: Format,
) -> Result<moat_audit::VerifiedArchive, Failure> {
    let archive = moat_audit::verify_archive(dir, ca)
        .with_context(|| format!("cannot read the audit archive {}", dir.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "pass the directory written by `moat audit archive --output`; if a file in it was changed, it no longer matches its digest",
            )
        })?;
    let m = &archive.manifest;
    let mut out = io::stdout().lock();
    match format {
        Format::Json => write_json(&mut out, &archive.report)?,
        Format::Table => {
            if ca.is_none() {
                writeln!(out, "note: {SELF_TRUST}")?;
            }
            writeln!(
                out,
                "archive {}: records {} to {} made before {}, digest {}",
                dir.display(),
                m.first,
                m.last,
                m.before,
                archive.digest
            )?;
            write_report(&mut out, &archive.report, Some(&m.head))?;
        }
    }
    out.flush()?;
    if !archive.report.ok() {
        let count = archive.report.problems.len() as u64 + archive.report.more_problems;
        return Err(Failure::new(
            anyhow!(
                "the audit archive {} does NOT verify: {count} problem(s)",
                dir.display()
            ),
            "do not rely on these records; compare the digest with the cluster's `audit.archive` record (`moat audit ls --action audit.archive`)",
        ));
    }
    Ok(archive)
}

pub(crate) fn verify_proof(args: &AuditVerifyProof) -> Result<(), Failure> {
    let bytes = read_input(&args.proof, moat_audit::MAX_PROOF_FILE_BYTES as u64)
        .with_context(|| format!("cannot read {}", args.proof.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "pass the file written by `moat audit prove SEQ`, or - for standard input",
            )
        })?;
    let file = InclusionProofFile::from_json(&bytes)
        .with_context(|| format!("{} is not an audit inclusion proof", args.proof.display()))
        .map_err(|e| Failure::new(e, "pass the file written by `moat audit prove SEQ`"))?;
    let ca = read_ca(&args.ca)?;
    let proven = moat_audit::verify_inclusion_file(&file, &ca)
        .with_context(|| {
            format!(
                "{} does NOT prove that record {} is in the log",
                args.proof.display(),
                file.record.seq()
            )
        })
        .map_err(|e| {
            Failure::new(
                e,
                "the record, the proof or the signed tree head was altered, or --ca is not \
                 the root CA certificate of the cluster that wrote it",
            )
        })?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "record {} is included in the log of size {} signed by {} at {}",
        proven.seq, proven.head_size, proven.signer.node_id, file.head.time
    )?;
    out.flush()?;
    Ok(())
}

/// Table output: one summary line if all holds, else one line per problem
/// with the sequence number it is about; then the report's notes.
fn write_report(
    out: &mut impl Write,
    report: &Report,
    trusted: Option<&SignedTreeHead>,
) -> io::Result<()> {
    if report.ok() {
        let records = match report.records {
            0 => "0 records".to_owned(),
            n if report.base_size == 0 => format!("{n} records"),
            n => format!(
                "{n} records ({} to {})",
                report.base_size + 1,
                report.base_size + n
            ),
        };
        let trusted = match trusted {
            Some(h) => format!(", log consistent with the trusted head (size {})", h.size),
            None => String::new(),
        };
        writeln!(
            out,
            "OK: {records}, {} signed tree heads verified{trusted}",
            report.heads_verified
        )?;
    } else {
        let rows: Vec<[String; 2]> = report
            .problems
            .iter()
            .map(|p| [p.seq().map_or("-".into(), |s| s.to_string()), p.to_string()])
            .collect();
        write_table(out, &["SEQ", "PROBLEM"], &rows)?;
        if report.more_problems > 0 {
            writeln!(out, "… and {} more problems", report.more_problems)?;
        }
    }
    for note in &report.notes {
        writeln!(out, "note: {}", safe(&note.to_string()))?;
    }
    Ok(())
}

fn read_ca(path: &Path) -> Result<Vec<u8>, Failure> {
    read_input(path, moat_audit::MAX_CA_PEM_BYTES)
        .with_context(|| format!("cannot read the CA certificate {}", path.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "pass --ca with the cluster's root CA certificate (PEM), e.g. a copy of \
                 certs/ca.crt from a node's state directory",
            )
        })
}

fn read_trusted_head(path: &Path) -> Result<SignedTreeHead, Failure> {
    let hint = "pass a signed tree head (JSON) you kept from an earlier export's heads";
    let bytes = read_input(path, MAX_HEAD_FILE)
        .with_context(|| format!("cannot read the trusted head {}", path.display()))
        .map_err(|e| Failure::new(e, hint))?;
    SignedTreeHead::from_json(&bytes)
        .with_context(|| format!("{} is not a signed tree head", path.display()))
        .map_err(|e| Failure::new(e, hint))
}

// -------------------------------------------------------------------------
// Online commands: ask a manager.

/// `moat audit export`: the daemon sends a one-file bundle, which is
/// checked to parse, then written in the layout asked for (crash-safe, never
/// over an existing file).
pub(crate) fn export(args: &AuditExport) -> Result<(), Failure> {
    let output = &args.output;
    let layout = if output.is_dir() || output.as_os_str().to_string_lossy().ends_with('/') {
        Layout::Directory
    } else {
        Layout::File
    };
    if layout == Layout::File && output.exists() {
        return Err(Failure::new(
            anyhow!("{} already exists", output.display()),
            "choose a new file name, or an empty directory for the directory layout",
        ));
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() && layout == Layout::File => p.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&parent)
        .map_err(|e| Failure::new(e, format!("check that {} is writable", parent.display())))?;
    let request = AuditExportRequest {
        since: args.since.unwrap_or(0),
        until: 0,
    };
    block_on(async {
        let file = tmp.as_file_mut();
        client(&args.host)
            .post_download(path::AUDIT_EXPORT, &request, |chunk, _| {
                file.write_all(chunk)
            })
            .await
            .map_err(Failure::api)
    })?;
    tmp.as_file().sync_all()?;
    let bundle = moat_audit::read_bundle(tmp.path())
        .context("the manager sent an export that cannot be read")
        .map_err(|e| Failure::new(e, "try again; if it persists, export from another manager"))?;
    bundle
        .write(output, layout)
        .with_context(|| format!("cannot write the export to {}", output.display()))
        .map_err(|e| Failure::new(e, "give a new file name, or a new or empty directory"))?;
    let mut records = 0u64;
    bundle
        .for_each_record(|_| records += 1)
        .map_err(|e| Failure::new(e, "check the export with `moat audit verify`"))?;
    let newest = bundle.heads.iter().max_by_key(|h| h.size);
    if let (Some(path), Some(head)) = (&args.keep_head, newest) {
        write_new_file(path, format!("{}\n", head.to_json()).as_bytes())?;
    }
    let mut out = io::stdout().lock();
    let range = match records {
        0 => "no records".to_string(),
        n => format!(
            "{n} records ({} to {})",
            bundle.base_size + 1,
            bundle.base_size + n
        ),
    };
    writeln!(
        out,
        "Exported {range} and {} signed tree heads to {}.",
        bundle.heads.len(),
        output.display()
    )?;
    if let Some(head) = newest {
        writeln!(
            out,
            "Newest signed tree head: size {}, root {}, signed by {} at {}.",
            head.size, head.root, head.signer, head.time
        )?;
    }
    writeln!(
        out,
        "Check it with: moat audit verify {} --ca ROOT.crt",
        output.display()
    )?;
    Ok(())
}

/// Creates `path` (never over an existing file) with `bytes`, fsynced.
fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
        .map_err(|e| Failure::new(e, "choose a file name that does not exist yet"))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

pub(crate) fn prove(args: &AuditProve) -> Result<(), Failure> {
    let mut json = match &args.archive {
        Some(dir) => prove_archived(args, dir)?,
        None => {
            let request = AuditProveRequest {
                seq: args.seq,
                record: None,
            };
            ask_proof(args, &request)?
        }
    };
    if !json.ends_with(b"\n") {
        json.push(b'\n');
    }
    match &args.output {
        Some(path) => {
            write_new_file(path, &json)?;
            let mut err = io::stderr().lock();
            writeln!(
                err,
                "Inclusion proof for record {} written to {}; check it with `moat audit verify-proof {} --ca ROOT.crt`.",
                args.seq,
                path.display(),
                path.display()
            )?;
        }
        None => io::stdout().lock().write_all(&json)?,
    }
    Ok(())
}

/// Asks the manager for a proof and checks that it parses.
fn ask_proof(args: &AuditProve, request: &AuditProveRequest) -> Result<Vec<u8>, Failure> {
    let json = download_proof(args, request)?.map_err(Failure::api)?;
    // Check what the manager sent parses before handing it on.
    InclusionProofFile::from_json(&json)
        .context("the manager sent a proof that cannot be read")
        .map_err(|e| Failure::new(e, "try again, or ask another manager"))?;
    Ok(json)
}

/// The manager's answer to a proof request: the outer error is this
/// command's (no runtime), the inner one the manager's.
fn download_proof(
    args: &AuditProve,
    request: &AuditProveRequest,
) -> Result<Result<Vec<u8>, moat_api::ClientError>, Failure> {
    let mut json = Vec::new();
    let answer = block_on(async {
        Ok(client(&args.host)
            .post_download(path::AUDIT_PROVE, request, |chunk, _| {
                json.extend_from_slice(chunk);
                Ok(())
            })
            .await)
    })?;
    Ok(answer.map(|_| json))
}

/// `moat audit prove SEQ --archive DIR`: the archive is verified, then the
/// manager is asked to prove the archived record against the cluster's
/// current head (it checks the record's leaf hash against the one it
/// keeps); if it cannot, the proof leads to the archive's own head.
fn prove_archived(args: &AuditProve, dir: &Path) -> Result<Vec<u8>, Failure> {
    let ca = match &args.ca {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    let archive = moat_audit::verify_archive(dir, ca.as_deref())
        .with_context(|| format!("cannot read the audit archive {}", dir.display()))
        .map_err(|e| Failure::new(e, "pass the directory written by `moat audit archive`"))?;
    if !archive.report.ok() {
        return Err(Failure::new(
            anyhow!("the audit archive {} does NOT verify", dir.display()),
            "run `moat audit verify --archive DIR` to see why",
        ));
    }
    let m = &archive.manifest;
    if args.seq < m.first || args.seq > m.last {
        return Err(Failure::new(
            anyhow!(
                "record {} is not in the archive {} (records {} to {})",
                args.seq,
                dir.display(),
                m.first,
                m.last
            ),
            "give the archive that holds it, or no --archive for records the managers keep",
        ));
    }
    let mut line = None;
    let mut seq = archive.bundle.base_size;
    archive
        .bundle
        .for_each_record(|l| {
            seq += 1;
            if seq == args.seq {
                line = Some(String::from_utf8_lossy(l).into_owned());
            }
        })
        .map_err(|e| Failure::new(e, "run `moat audit verify --archive DIR`"))?;
    let line = line.ok_or_else(|| {
        Failure::new(
            anyhow!("record {} is missing from the archive", args.seq),
            "run `moat audit verify --archive DIR`",
        )
    })?;
    let request = AuditProveRequest {
        seq: args.seq,
        record: Some(line),
    };
    let asked = download_proof(args, &request)?.map_err(|e| safe(&e.to_string()).into_owned());
    if let Ok(json) = &asked
        && InclusionProofFile::from_json(json).is_ok()
    {
        writeln!(
            io::stderr().lock(),
            "The proof leads to the cluster's current signed tree head."
        )?;
        return Ok(json.clone());
    }
    let why = asked
        .err()
        .unwrap_or_else(|| "the manager sent a proof that cannot be read".into());
    let file = moat_audit::prove_from_archive(&archive, args.seq)
        .context("no manager could prove the record, and the archive alone cannot")
        .map_err(|e| Failure::new(e, why.clone()))?;
    writeln!(
        io::stderr().lock(),
        "warning: the manager could not link the record to the cluster's current head ({why}); the proof leads to the archive's head at size {}",
        m.last
    )?;
    let mut json = file.to_json().into_bytes();
    json.push(b'\n');
    Ok(json)
}

/// `moat audit archive` (decision D48): find the first record at or after
/// DATE, export the records before it with a head signed at the last of
/// them, write the archive (fsynced), verify it, then ask the cluster to
/// drop them.
pub(crate) fn archive(args: &AuditArchive) -> Result<(), Failure> {
    let before = parse_before(&args.before)?;
    let before_text = moat_store::model::rfc3339(before);
    if args.output.exists()
        && std::fs::read_dir(&args.output).map_or(true, |mut d| d.next().is_some())
    {
        return Err(Failure::new(
            anyhow!(
                "{} already exists and is not an empty directory",
                args.output.display()
            ),
            "give a new or empty directory: an archive is never written over anything",
        ));
    }
    let ca = match &args.ca {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    // 1. Where the archive ends: the first record at or after DATE.
    let mut first = None;
    let (size, below) = block_on(fetch_until(&args.host, 0, |record| {
        first.get_or_insert(record.seq());
        Ok(if record.time().unix_seconds() >= before {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }))?;
    let first = first.unwrap_or(below);
    if below <= first {
        return Err(Failure::new(
            anyhow!(
                "no audit record before {before_text} is still on the managers (the first kept, {first}, is not older)"
            ),
            "give a later --before",
        ));
    }
    let last = below - 1;
    // 2. The records and a head at the last of them.
    let dir_parent = std::env::temp_dir();
    let mut tmp = tempfile::NamedTempFile::new_in(&dir_parent).map_err(|e| {
        Failure::new(
            e,
            format!("check that {} is writable", dir_parent.display()),
        )
    })?;
    let request = AuditExportRequest {
        since: first,
        until: last,
    };
    block_on(async {
        let file = tmp.as_file_mut();
        client(&args.host)
            .post_download(path::AUDIT_EXPORT, &request, |chunk, _| {
                file.write_all(chunk)
            })
            .await
            .map_err(Failure::api)
    })?;
    tmp.as_file().sync_all()?;
    let bundle = moat_audit::read_bundle(tmp.path())
        .context("the manager sent an export that cannot be read")
        .map_err(|e| {
            Failure::new(
                e,
                "try again; if it persists, archive through another manager",
            )
        })?;
    let head = bundle
        .heads
        .iter()
        .find(|h| h.size == last)
        .cloned()
        .ok_or_else(|| {
            Failure::new(
                anyhow!("the manager sent no signed tree head at record {last}"),
                "try again, or through another manager",
            )
        })?;
    let roots = moat_pki::TrustRoots::from_pem(ca.as_deref().unwrap_or(bundle.ca_pem.as_bytes()))
        .context("the CA certificate cannot be read")
        .map_err(|e| Failure::new(e, "check --ca"))?;
    let signer = head
        .verify(&roots)
        .context("the head at the archive's last record does not verify")
        .map_err(|e| Failure::new(e, "check --ca; nothing was archived"))?;
    // 3. Written and fsynced, then verified from disk.
    let created = moat_store::model::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    );
    moat_audit::write_archive(
        &args.output,
        &bundle,
        &head,
        &signer.cluster_id.to_string(),
        &before_text,
        &created,
    )
    .with_context(|| format!("cannot write the archive to {}", args.output.display()))
    .map_err(|e| {
        Failure::new(
            e,
            "give a new or empty directory on a writable file system; nothing was dropped",
        )
    })?;
    let archive = moat_audit::verify_archive(&args.output, ca.as_deref())
        .with_context(|| {
            format!(
                "the archive written to {} cannot be read back",
                args.output.display()
            )
        })
        .map_err(|e| Failure::new(e, "check the disk; nothing was dropped from the managers"))?;
    if !archive.report.ok() || archive.manifest.last != last || archive.manifest.first != first {
        let mut out = io::stdout().lock();
        write_report(&mut out, &archive.report, Some(&head))?;
        return Err(Failure::new(
            anyhow!(
                "the archive written to {} does NOT verify",
                args.output.display()
            ),
            "nothing was dropped from the managers; try again, or through another manager",
        ));
    }
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "Archived records {first} to {last} (made before {before_text}) to {}: verified, digest {}.",
        args.output.display(),
        archive.digest
    )?;
    if args.keep {
        writeln!(out, "--keep: the managers keep the records.")?;
        return Ok(());
    }
    // 4. Only now: the cluster drops them.
    let answer: moat_api::AuditArchiveResponse = block_on(async {
        client(&args.host)
            .post(
                moat_api::AUDIT_ARCHIVE_PATH,
                &moat_api::AuditArchiveRequest {
                    below,
                    digest: archive.digest.clone(),
                    root: head.root.to_hex(),
                    before: before_text.clone(),
                },
            )
            .await
            .or_fail()
    })?;
    writeln!(
        out,
        "The managers dropped records {first} to {last} (the log has {} records; {} on are kept). Keep {}: read it with `moat audit verify --archive {}`.",
        answer.size,
        answer.below,
        args.output.display(),
        args.output.display()
    )?;
    let _ = size;
    Ok(())
}

/// `--before`: RFC 3339, or a day (midnight UTC), as Unix seconds.
fn parse_before(text: &str) -> Result<i64, Failure> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let day = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &day)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| {
            Failure::new(
                anyhow!("--before {text:?} is not a date"),
                "give RFC 3339 (2026-01-01T00:00:00Z) or a day (2026-01-01)",
            )
        })
}

/// Fetches records `since` on (0: from the first record the managers
/// keep), page by page, calling `each` with every record; returns the
/// log's size and the next sequence number.
async fn fetch_records(
    host: &crate::args::HostArgs,
    since: u64,
    mut each: impl FnMut(Record) -> Result<(), Failure>,
) -> Result<(u64, u64), Failure> {
    fetch_until(host, since, |r| each(r).map(ControlFlow::Continue)).await
}

/// [`fetch_records`], stopping at the first record `each` breaks on: then
/// the second number returned is that record's sequence number.
async fn fetch_until(
    host: &crate::args::HostArgs,
    since: u64,
    mut each: impl FnMut(Record) -> Result<ControlFlow<()>, Failure>,
) -> Result<(u64, u64), Failure> {
    let client = client(host);
    let mut next = since;
    loop {
        let page: AuditRecordsResponse = client
            .post(
                path::AUDIT_RECORDS,
                &AuditRecordsRequest {
                    since: next,
                    limit: MAX_AUDIT_PAGE,
                },
            )
            .await
            .or_fail()?;
        let got = page.records.len() as u64;
        if next == 0 {
            next = page.first.max(1);
        }
        for line in page.records {
            let record = Record::from_line(line.as_bytes())
                .with_context(|| format!("the manager sent a malformed record after {}", next - 1))
                .map_err(|e| {
                    Failure::new(
                        e,
                        "run `moat audit export` and `moat audit verify` to check the log",
                    )
                })?;
            let seq = record.seq();
            if each(record)?.is_break() {
                return Ok((page.size, seq));
            }
        }
        next += got;
        if got == 0 || next > page.size {
            return Ok((page.size, next));
        }
    }
}

/// Whether `record` passes `ls`'s filters.
fn selected(record: &Record, action: Option<&str>, node: Option<&str>) -> bool {
    let e = record.event();
    let action_ok = action.is_none_or(|a| {
        let have = e.action.as_str();
        have == a
            || have
                .strip_prefix(a)
                .is_some_and(|rest| rest.starts_with('.'))
    });
    let node_ok = node.is_none_or(|n| e.node.to_string().starts_with(n));
    action_ok && node_ok
}

/// A record's cells: SEQ, TIME, NODE, ACTOR, ACTION, TARGET, OUTCOME, DETAILS.
fn record_cells(record: &Record) -> [String; 8] {
    let e = record.event();
    let mut details: Vec<String> = e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !e.outcome.reason().is_empty() {
        details.insert(0, format!("reason={}", e.outcome.reason()));
    }
    let node = e.node.to_string();
    // A node's own journal event, forwarded: the node vouches for it, no
    // manager saw it happen.
    let actor = match e.details.get("forwarded") {
        Some(from) => format!("{} (forwarded {from})", e.actor),
        None => e.actor.to_string(),
    };
    [
        record.seq().to_string(),
        record.time().to_string(),
        node.chars().take(12).collect(),
        actor,
        e.action.to_string(),
        e.target.to_string(),
        e.outcome.as_str().to_string(),
        details.join(" "),
    ]
}

const RECORD_HEADERS: [&str; 8] = [
    "SEQ", "TIME", "NODE", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAILS",
];

pub(crate) fn ls(args: &AuditLs) -> Result<(), Failure> {
    let mut rows = Vec::new();
    let mut out = io::stdout().lock();
    let json = matches!(args.format, Format::Json);
    block_on(fetch_records(
        &args.host,
        args.since.unwrap_or(0),
        |record| {
            if selected(&record, args.action.as_deref(), args.node.as_deref()) {
                if json {
                    out.write_all(&record.to_line())?;
                    out.write_all(b"\n")?;
                } else {
                    rows.push(record_cells(&record));
                }
            }
            Ok(())
        },
    ))?;
    if !json {
        write_table(&mut out, &RECORD_HEADERS, &rows)?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn tail(args: &AuditTail) -> Result<(), Failure> {
    let json = matches!(args.format, Format::Json);
    let print = |record: &Record| -> Result<(), Failure> {
        let mut out = io::stdout().lock();
        if json {
            out.write_all(&record.to_line())?;
            out.write_all(b"\n")?;
        } else {
            let cells = record_cells(record).map(|c| safe(&c).into_owned());
            writeln!(out, "{}", cells.join("  ").trim_end())?;
        }
        out.flush()?;
        Ok(())
    };
    block_on(async {
        // The size first, then the last N records.
        let page: AuditRecordsResponse = client(&args.host)
            .post(
                path::AUDIT_RECORDS,
                &AuditRecordsRequest {
                    since: u64::MAX,
                    limit: 1,
                },
            )
            .await
            .or_fail()?;
        let since = (page.size.saturating_sub(args.lines) + 1).max(page.first);
        let (_, mut next) = fetch_records(&args.host, since, |r| print(&r)).await?;
        if !args.follow {
            return Ok(());
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let (_, n) = fetch_records(&args.host, next, |r| print(&r)).await?;
            next = n;
        }
    })
}

pub(crate) fn hash(args: &AuditHash) -> Result<(), Failure> {
    let value = match args.value.as_deref() {
        Some(v) if v != "-" => Zeroizing::new(v.to_owned()),
        _ => {
            let hint = "give the value as an argument, or as UTF-8 text on standard input";
            let bytes = Zeroizing::new(
                read_input(Path::new("-"), 64 * 1024)
                    .context("cannot read the value from standard input")
                    .map_err(|e| Failure::new(e, hint))?,
            );
            let text = std::str::from_utf8(&bytes)
                .context("the value on standard input is not UTF-8 text")
                .map_err(|e| Failure::new(e, hint))?;
            Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned())
        }
    };
    if value.is_empty() {
        return Err(Failure::new(
            anyhow!("no value to hash"),
            "give the value as an argument, or on standard input",
        ));
    }
    let request = AuditHashRequest {
        value: SecretString::new(value.to_string()),
    };
    let answer: Result<AuditHashResponse, Failure> = block_on(async {
        client(&args.host)
            .post(path::AUDIT_HASH, &request)
            .await
            .or_fail()
    });
    drop(request);
    writeln!(io::stdout().lock(), "{}", answer?.hash)?;
    Ok(())
}

pub(crate) fn report(args: &AuditReport) -> Result<(), Failure> {
    use crate::report;
    let policy = report_policy(args)?;
    let inventory: moat_api::CryptoInventory =
        block_on(async { client(&args.host).get(path::AUDIT_REPORT).await.or_fail() })?;
    let now = time::OffsetDateTime::now_utc();
    let findings = report::findings(&inventory, &policy, now);
    let text = report::render(&inventory, &findings, &policy, args.format, now);
    emit_report(args, &text, &findings, &policy)
}

/// The policy `moat audit report` checks against: `--policy FILE`, or the
/// defaults.
pub(crate) fn report_policy(args: &AuditReport) -> Result<moat_report::Policy, Failure> {
    match &args.policy {
        Some(path) => crate::report::load_policy(path).map_err(|e| {
            Failure::new(
                e,
                "fix the policy file; docs/audit-report.md lists every key",
            )
        }),
        None => Ok(moat_report::Policy::default()),
    }
}

/// Writes a rendered report (to `-o FILE` or standard output) and fails
/// with [`crate::report::EXIT_FINDINGS`] when a finding is at or above the
/// policy's `fail_on`.
pub(crate) fn emit_report(
    args: &AuditReport,
    text: &str,
    findings: &[moat_report::Finding],
    policy: &moat_report::Policy,
) -> Result<(), Failure> {
    use crate::report;
    match &args.output {
        Some(path) => {
            write_new_file(path, text.as_bytes())?;
            writeln!(io::stderr().lock(), "Report written to {}.", path.display())?;
        }
        None => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    if report::fails(findings, policy) {
        let at_or_above = findings
            .iter()
            .filter(|f| policy.fails_on(f.severity))
            .count();
        return Err(Failure::new(
            anyhow!(
                "{at_or_above} finding(s) at or above severity {}",
                policy.fail_on
            ),
            "each finding above names its fix",
        )
        .with_code(report::EXIT_FINDINGS));
    }
    Ok(())
}
