//! `moat audit verify` and `moat audit verify-proof` (offline).
//!
//! The checks are moat-audit's ([`moat_audit::verify_bundle`],
//! [`moat_audit::verify_inclusion_file`]); this file reads the inputs,
//! prints the outcome and maps it to the exit code.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context as _, anyhow};
use moat_audit::{InclusionProofFile, Report, SignedTreeHead};

use crate::args::{AuditVerify, AuditVerifyProof, Format};
use crate::output::{Failure, read_input, warn, write_json, write_table};

/// Said when no `--ca` is given: the bundle vouches for itself.
const SELF_TRUST: &str = "trusting the CA certificate inside the bundle; pass --ca ROOT.crt to \
                          check against one you obtained independently";

/// Largest trusted head file read (`SignedTreeHead::from_json` refuses
/// anything over its own, smaller, limit).
const MAX_HEAD_FILE: u64 = (moat_audit::MAX_CHAIN_PEM_BYTES + 4096) as u64;

pub(crate) fn verify(args: &AuditVerify) -> Result<(), Failure> {
    let bundle = moat_audit::read_bundle(&args.bundle)
        .with_context(|| format!("cannot read the audit bundle {}", args.bundle.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "pass the file or directory written by `moat audit export --output`",
            )
        })?;
    let ca = match &args.ca {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
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
            args.bundle.display(),
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
        writeln!(out, "note: {note}")?;
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
