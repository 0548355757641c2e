//! `moat store …`

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use moat_lock::{KeySource, UnlockKey};
use moat_store::offline::{self, VerifyReport};

use crate::args::{Format, StoreArgs};
use crate::output::{Failure, write_fields, write_json};

/// Where a node keeps its unlock key while autolock is off.
const KEY_FILE: &str = "unlock.key";

pub(crate) fn verify(args: &StoreArgs) -> Result<(), Failure> {
    if let Some(dir) = &args.docker_swarm {
        return crate::swarm::verify(dir, args);
    }
    let key = unlock_key(args)?;
    let report =
        block_on(offline::verify(&store_dir(args), KeySource::Key(&key)))?.map_err(bad_store)?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &report)?,
        Format::Table => {
            write_fields(&mut out, &summary(&report))?;
            writeln!(
                out,
                "Every key file, log record, vote and snapshot authenticated."
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn dump(args: &StoreArgs, show_secrets: bool) -> Result<(), Failure> {
    if let Some(dir) = &args.docker_swarm {
        return crate::swarm::dump(dir, args, show_secrets);
    }
    let key = unlock_key(args)?;
    let report = block_on(offline::dump(
        &store_dir(args),
        KeySource::Key(&key),
        show_secrets,
    ))?
    .map_err(bad_store)?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &report)?,
        Format::Table => {
            write_fields(&mut out, &summary(&report.verify))?;
            if report.uncommitted_entries > 0 {
                writeln!(
                    out,
                    "{} uncommitted log entries are not applied below.",
                    report.uncommitted_entries
                )?;
            }
            writeln!(out)?;
            write_json(&mut out, &report.state)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    Ok(runtime.block_on(f))
}

/// `--state-dir`, which clap requires unless `--docker-swarm` is given.
fn state_dir(args: &StoreArgs) -> &Path {
    args.state_dir.as_deref().unwrap_or(Path::new("."))
}

fn store_dir(args: &StoreArgs) -> PathBuf {
    state_dir(args).join("store")
}

fn unlock_key(args: &StoreArgs) -> Result<UnlockKey, Failure> {
    let identity = store_dir(args).join("store.json");
    if !identity.is_file() {
        return Err(Failure::new(
            anyhow::anyhow!(
                "{} holds no moat store ({} is missing)",
                state_dir(args).display(),
                identity.display()
            ),
            "pass the state directory of a manager (the one given to `moat daemon --state-dir`), or the root of a restored backup of it",
        ));
    }
    let path = args
        .unlock_key_file
        .clone()
        .unwrap_or_else(|| state_dir(args).join(KEY_FILE));
    moat_lock::read_unlock_key_file(&path)
        .context("cannot read the unlock key")
        .map_err(|e| {
            Failure::new(
                e,
                format!(
                    "with autolock off the key is in {}; with autolock on, put the unlock key in a file only you can read (chmod 600) and pass --unlock-key-file",
                    state_dir(args).join(KEY_FILE).display()
                ),
            )
        })
}

fn bad_store(e: moat_store::StoreError) -> Failure {
    let hint = match &e {
        moat_store::StoreError::Key { .. } => {
            "check that this is the unlock key of this node (after a rotation, the newest key)"
        }
        moat_store::StoreError::Corrupt { .. } => {
            "the store was damaged or tampered with: do not start this manager from it; restore it from a backup or remove it and rejoin"
        }
        _ => "check --state-dir: it must be a moat node's state directory with a store in it",
    };
    Failure::new(
        anyhow::Error::new(e).context("store verification failed"),
        hint,
    )
}

fn summary(r: &VerifyReport) -> Vec<(&'static str, String)> {
    let range = match (r.log_first, r.log_last) {
        (Some(a), Some(b)) => format!("{} records, indexes {a} to {b}", r.log_records),
        _ => "no records".into(),
    };
    vec![
        ("Cluster", r.identity.cluster_id.to_string()),
        ("Node", r.identity.node_id.to_string()),
        (
            "Data keys",
            match r.dek_versions.as_slice() {
                [current] => format!("DEK v{current}"),
                [current, pending] => {
                    format!("DEK v{current} (current), v{pending} (pending: rotation in progress)")
                }
                other => format!("{other:?}"),
            },
        ),
        (
            "Snapshot",
            match &r.snapshot {
                Some(s) => format!(
                    "{} (through index {})",
                    s.id,
                    s.last_index.map_or("-".into(), |i| i.to_string())
                ),
                None => "none".into(),
            },
        ),
        ("Log", range),
        (
            "Committed",
            r.committed.map_or("none".into(), |c| format!("index {c}")),
        ),
        (
            "Vote",
            r.vote_term.map_or("none".into(), |t| format!("term {t}")),
        ),
    ]
}
