//! `moat ca`: show the root CA, rotate it (with progress), force or roll
//! back a rotation.

use std::io::{self, IsTerminal as _, Write};
use std::time::Duration;

use anyhow::Context as _;
use moat_api::{CaInfo, CaRotateRequest, Empty, SecretString, path};
use time::OffsetDateTime;

use crate::args::{CaArgs, Format};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, write_fields, write_json};
use crate::render::{parse_time, relative};

/// Largest certificate or key file read for --ca-cert / --ca-key.
const MAX_PEM_FILE: u64 = 64 * 1024;

pub(crate) fn run(args: &CaArgs) -> Result<(), Failure> {
    let client = client(&args.host);
    let info: CaInfo = if args.rollback {
        let info: CaInfo =
            block_on(async { client.post(path::CA_ROLLBACK, &Empty {}).await.or_fail() })?;
        if !args.quiet {
            writeln!(
                io::stderr().lock(),
                "Root CA rotation rolled back: every node returns to the current root."
            )?;
        }
        info
    } else if args.rotate {
        let read = |p: &std::path::Path, what: &str| -> Result<String, Failure> {
            let bytes = crate::output::read_input(p, MAX_PEM_FILE)
                .with_context(|| format!("cannot read the {what} {}", p.display()))
                .map_err(|e| {
                    Failure::new(
                        e,
                        format!("give a PEM file of at most {MAX_PEM_FILE} bytes"),
                    )
                })?;
            String::from_utf8(bytes)
                .with_context(|| format!("{} is not PEM text", p.display()))
                .map_err(|e| Failure::new(e, "give a PEM file"))
        };
        let request = CaRotateRequest {
            cert_expiry_seconds: args.cert_expiry.map(|d| d.as_secs()),
            ca_cert_pem: args
                .ca_cert
                .as_deref()
                .map(|p| read(p, "CA certificate"))
                .transpose()?,
            ca_key_pem: args
                .ca_key
                .as_deref()
                .map(|p| read(p, "CA key").map(SecretString::new))
                .transpose()?,
            force: args.force,
        };
        let started: Result<CaInfo, Failure> =
            block_on(async { client.post(path::CA_ROTATE, &request).await.or_fail() });
        drop(request);
        let started = started?;
        if args.detach {
            started
        } else {
            follow(&client, &started, args.quiet)?
        }
    } else {
        block_on(async { client.get(path::CA).await.or_fail() })?
    };
    let mut out = io::stdout().lock();
    if args.quiet {
        out.write_all(info.root_pem.as_bytes())?;
        return Ok(());
    }
    match args.format {
        Format::Json => write_json(&mut out, &info)?,
        Format::Table => render(&mut out, &info, OffsetDateTime::now_utc())?,
    }
    Ok(())
}

/// Waits for the rotation `started` describes to finish (or be rolled
/// back), with a progress bar of the nodes on the new root.
fn follow(client: &moat_api::Client, started: &CaInfo, quiet: bool) -> Result<CaInfo, Failure> {
    let Some(rotation) = &started.rotation else {
        return Ok(started.clone());
    };
    let id = rotation.id;
    // The header first, then the bar under it: a bar drawn before a line
    // written around it is redrawn in the wrong place and left behind.
    if !quiet {
        writeln!(
            io::stderr().lock(),
            "Rotating to root {} (rotation {id}); Ctrl-C stops watching, not the rotation.",
            rotation.new_root.fingerprint
        )?;
    }
    let bar = progress_bar(rotation.nodes_total, quiet || !io::stderr().is_terminal());
    let info = block_on(async {
        loop {
            let info: CaInfo = client.get(path::CA).await.or_fail()?;
            match &info.rotation {
                Some(r) if r.id == id => {
                    bar.set_length(r.nodes_total);
                    bar.set_position(r.nodes_done);
                    let down: Vec<&str> = r
                        .waiting
                        .iter()
                        .filter(|w| !w.ready)
                        .map(|w| w.hostname.as_str())
                        .collect();
                    bar.set_message(if r.phase == "finishing" {
                        "switching trust to the new root".to_string()
                    } else if !down.is_empty() {
                        format!(
                            "waiting for {} node(s), down: {} (--force finishes without them)",
                            r.waiting.len(),
                            crate::output::safe(&down.join(", "))
                        )
                    } else {
                        format!("waiting for {} node(s)", r.waiting.len())
                    });
                }
                _ => return Ok::<_, Failure>(info),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Gone from the terminal whatever the outcome, before anything else
    // is printed.
    bar.finish_and_clear();
    let info = info?;
    if info.generation < id {
        return Err(Failure::new(
            anyhow::anyhow!("root CA rotation {id} was rolled back"),
            "`moat audit ls --action ca.rotate` shows who rolled it back",
        ));
    }
    if !quiet {
        writeln!(
            io::stderr().lock(),
            "Root CA rotated: every node now trusts {} alone; the join tokens were replaced (`moat join-token worker`).",
            info.root.fingerprint
        )?;
    }
    Ok(info)
}

/// The bar of nodes on the new root, drawn on standard error; `hidden`
/// (with -q, or when standard error is not a terminal) draws nothing.
fn progress_bar(nodes: u64, hidden: bool) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(nodes),
        if hidden {
            indicatif::ProgressDrawTarget::hidden()
        } else {
            indicatif::ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} nodes {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix("certificates reissued");
    bar
}

fn render(out: &mut impl Write, info: &CaInfo, now: OffsetDateTime) -> io::Result<()> {
    let expires = |t: &str| {
        parse_time(t).map_or_else(
            || t.to_string(),
            |at| format!("{t} ({})", relative(at, now)),
        )
    };
    let mut fields = vec![
        ("Root CA", info.root.subject.clone()),
        ("Fingerprint", info.root.fingerprint.clone()),
        ("Algorithm", info.root.algorithm.clone()),
        ("Expires", expires(&info.root.not_after)),
        ("Rotations", info.generation.to_string()),
    ];
    match &info.rotation {
        None => fields.push(("Rotation", "none in progress".into())),
        Some(r) => {
            fields.push((
                "Rotation",
                format!(
                    "{} {}: {}/{} nodes on the new root (started {})",
                    r.id, r.phase, r.nodes_done, r.nodes_total, r.started_at
                ),
            ));
            fields.push((
                "New root",
                format!("{} ({})", r.new_root.subject, r.new_root.fingerprint),
            ));
            if !r.waiting.is_empty() {
                let names: Vec<String> = r
                    .waiting
                    .iter()
                    .map(|w| format!("{}{}", w.hostname, if w.ready { "" } else { " (down)" }))
                    .collect();
                fields.push((
                    "Waiting for",
                    format!("{} node(s): {}", r.waiting.len(), names.join(", ")),
                ));
            }
        }
    }
    write_fields(out, &fields)?;
    writeln!(out)?;
    out.write_all(info.root_pem.as_bytes())
}
