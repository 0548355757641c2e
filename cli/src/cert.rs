//! `moat cert …`

use std::io::{self, Write};

use anyhow::Context as _;
use moat_pki::CertReport;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::args::{CertInspect, Format};
use crate::output::{Failure, read_input, write_fields, write_json};

/// Largest certificate file read: a bundle of the most roots moat accepts.
const MAX_INPUT: u64 = (moat_pki::MAX_CERT_BYTES * 3 * moat_pki::MAX_CHAIN_LEN) as u64;

pub(crate) fn inspect(args: &CertInspect) -> Result<(), Failure> {
    let bytes = read_input(&args.path, MAX_INPUT)
        .with_context(|| format!("cannot read {}", args.path.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "pass the path of a PEM or DER certificate file, or - for standard input",
            )
        })?;
    let reports = moat_pki::inspect(&bytes)
        .with_context(|| format!("{} is not a certificate moat can read", args.path.display()))
        .map_err(|e| {
            Failure::new(
                e,
                "expected one or more PEM 'CERTIFICATE' blocks or a single DER certificate \
                 (a private key or CSR is not a certificate)",
            )
        })?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &reports)?,
        Format::Table => {
            let now = OffsetDateTime::now_utc();
            for (i, r) in reports.iter().enumerate() {
                if reports.len() > 1 {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    writeln!(out, "Certificate {} of {}", i + 1, reports.len())?;
                }
                write_fields(&mut out, &fields(r, now))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn fields(r: &CertReport, now: OffsetDateTime) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Subject", r.subject.clone()),
        ("Issuer", r.issuer.clone()),
        ("Serial", r.serial.clone()),
        ("Not before", r.not_before.clone()),
        (
            "Not after",
            format!("{} ({})", r.not_after, remaining(&r.not_after, now)),
        ),
        ("Public key", format!("{} {}", r.key_algorithm, r.key_size)),
        ("Signature algorithm", r.signature_algorithm.clone()),
        ("SHA-256 fingerprint", r.sha256_fingerprint.clone()),
        (
            "Subject alt names",
            if r.subject_alt_names.is_empty() {
                "none".into()
            } else {
                r.subject_alt_names.join(", ")
            },
        ),
        ("CA", if r.is_ca { "yes" } else { "no" }.into()),
    ];
    if let Some(node) = &r.moat_node {
        f.push((
            "moat node",
            format!(
                "{} ({}) of cluster {}",
                node.node_id, node.role, node.cluster_id
            ),
        ));
    }
    f
}

/// "expires in 23h 59m" / "expired 2h 1m ago", to the minute.
fn remaining(not_after: &str, now: OffsetDateTime) -> String {
    let Ok(t) = OffsetDateTime::parse(not_after, &Rfc3339) else {
        return "unknown".into();
    };
    let secs = (t - now).whole_seconds();
    let span = |s: i64| {
        let s = s.unsigned_abs() / 60 * 60;
        let d = std::time::Duration::from_secs(s.max(60));
        humanize(d)
    };
    if secs >= 0 {
        format!("expires in {}", span(secs))
    } else {
        format!("EXPIRED {} ago", span(secs))
    }
}

fn humanize(d: std::time::Duration) -> String {
    let mins = d.as_secs() / 60;
    let (days, hours, mins) = (mins / 1440, mins / 60 % 24, mins % 60);
    match (days, hours) {
        (0, 0) => format!("{mins}m"),
        (0, _) => format!("{hours}h {mins}m"),
        _ => format!("{days}d {hours}h"),
    }
}
