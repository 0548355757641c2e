//! `--docker-swarm DIR`: `moat audit report`, `moat store dump` and
//! `moat store verify` on a Docker Swarm manager's state directory, read
//! offline by `moat-swarm`. This file reads the unlock key, calls the
//! library, prints, and names the exit code; it never writes into DIR.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use moat_swarm::SwarmError;
use moat_swarm::key::UnlockKey;

use crate::args::{AuditReport, Format, StoreArgs, SwarmKeyArgs};
use crate::output::{Failure, read_input, write_fields, write_json};

/// Most bytes read for an unlock key (`SWMKEY-1-` and 43 characters, with
/// room for a new line and spaces).
const MAX_KEY_BYTES: u64 = 1024;

/// How long each of `--probe`'s connections may take (the whole probe is
/// capped at 30 times this).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn report(dir: &Path, args: &AuditReport) -> Result<(), Failure> {
    if args.swarm_key.stdin.is_some() && args.policy.as_deref() == Some(Path::new("-")) {
        return Err(Failure::new(
            anyhow!("--policy - and --unlock-key - both want standard input"),
            "give the policy in a file (`--policy FILE`) or the key in one (`--unlock-key-file FILE`)",
        )
        .with_code(2));
    }
    let policy = crate::audit::report_policy(args)?;
    let key = unlock_key(&args.swarm_key)?;
    let probe = match &args.probe {
        Some(addr) => Some(moat_swarm::probe::probe(addr, PROBE_TIMEOUT).map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context(format!("cannot probe {addr}")),
                "give the address of a running Swarm manager's port (2377 by default), or leave --probe out",
            )
        })?),
        None => None,
    };
    let now = time::OffsetDateTime::now_utc();
    let opened = moat_swarm::open(dir, key.as_ref()).map_err(bad_swarm)?;
    let inventory = moat_swarm::inventory::build(&opened, probe, now);
    let findings = moat_report::swarm_findings(&inventory, &policy, now);
    let text = crate::report::render_swarm(&inventory, &findings, &policy, args.format, now);
    crate::audit::emit_report(args, &text, &findings, &policy)
}

pub(crate) fn dump(dir: &Path, args: &StoreArgs, show_secrets: bool) -> Result<(), Failure> {
    let key = unlock_key(&SwarmKeyArgs {
        file: args.unlock_key_file.clone(),
        stdin: args.unlock_key.clone(),
    })?;
    let opened = moat_swarm::open(dir, key.as_ref()).map_err(bad_swarm)?;
    let dump = moat_swarm::dump_store(&opened, show_secrets).map_err(bad_swarm)?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &dump)?,
        Format::Table => {
            write_fields(&mut out, &moat_swarm::summary(&opened))?;
            if !show_secrets {
                writeln!(
                    out,
                    "Secrets, keys, credentials and environment values are redacted; \
                     --show-secrets prints them."
                )?;
            }
            writeln!(out)?;
            write_json(&mut out, &dump)?;
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn verify(dir: &Path, args: &StoreArgs) -> Result<(), Failure> {
    let key = unlock_key(&SwarmKeyArgs {
        file: args.unlock_key_file.clone(),
        stdin: args.unlock_key.clone(),
    })?;
    let report = moat_swarm::verify(dir, key.as_ref()).map_err(bad_swarm)?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &report)?,
        Format::Table => {
            write_fields(&mut out, &moat_swarm::verify_summary(&report))?;
            writeln!(out, "{}", moat_swarm::verify_verdict(&report))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The unlock key from `--unlock-key-file FILE` or `--unlock-key -`, if
/// given. Its text never reaches an error message.
fn unlock_key(args: &SwarmKeyArgs) -> Result<Option<UnlockKey>, Failure> {
    let (bytes, from) = match (&args.file, &args.stdin) {
        (Some(path), _) => {
            check_private(path)?;
            (
            read_input(path, MAX_KEY_BYTES).map_err(|e| {
                Failure::new(
                    anyhow::Error::new(e)
                        .context(format!("cannot read the unlock key file {}", path.display())),
                    "put the key that `docker swarm unlock-key -q` prints in a file only you can read (chmod 600)",
                )
            })?,
            path.display().to_string(),
        )
        }
        (None, Some(dash)) if dash == "-" => (
            read_input(Path::new("-"), MAX_KEY_BYTES).map_err(|e| {
                Failure::new(
                    anyhow::Error::new(e).context("cannot read the unlock key from standard input"),
                    "pipe the key in: `docker swarm unlock-key -q | moat … --unlock-key -`",
                )
            })?,
            "standard input".to_owned(),
        ),
        (None, Some(_)) => {
            return Err(Failure::new(
                anyhow!("--unlock-key takes only `-` (read the key from standard input)"),
                "a key on the command line shows in `ps` and in shell history: use `--unlock-key -` or `--unlock-key-file FILE`",
            )
            .with_code(2));
        }
        (None, None) => return Ok(None),
    };
    let bytes = zeroize::Zeroizing::new(bytes);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Failure::new(
            anyhow!("the unlock key from {from} is not text"),
            "a Swarm unlock key looks like SWMKEY-1- followed by 43 characters",
        )
    })?;
    text.trim().parse::<UnlockKey>().map(Some).map_err(|e| {
        Failure::new(
            anyhow::Error::new(e).context(format!("the unlock key from {from} is not valid")),
            "a Swarm unlock key looks like SWMKEY-1- followed by 43 characters; `docker swarm unlock-key -q` on a manager prints it",
        )
    })
}

/// Refuses an unlock key file that others can read: the key opens the
/// whole store.
fn check_private(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(Failure::new(
            anyhow!(
                "the unlock key file {} can be read by others (mode {mode:04o})",
                path.display()
            ),
            format!(
                "`chmod 600 {}`, or pipe the key in with `--unlock-key -`",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// A reading error: its message already names the next step.
fn bad_swarm(e: SwarmError) -> Failure {
    Failure::with_hint(anyhow::Error::new(e), None)
}
