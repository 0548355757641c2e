//! `moat backup` (online, through the daemon), `moat backup inspect`,
//! `moat backup keygen` and `moat restore` (offline).

use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;

use moat_api::{BackupRequest, SecretString, path};
use moat_backup::{AgeIdentity, Backup, BackupError, Manifest, Origin, Trust, Unprotect};
use zeroize::Zeroizing;

use crate::args::{BackupAction, BackupArgs, BackupInspect, Format, RestoreArgs};
use crate::client::{block_on, client};
use crate::output::{Failure, write_json};

pub(crate) fn backup(args: &BackupArgs) -> Result<(), Failure> {
    match &args.action {
        Some(BackupAction::Inspect(a)) => return inspect(a),
        Some(BackupAction::Keygen { output }) => return keygen(output),
        None => {}
    }
    let output = args.output.as_ref().ok_or_else(|| {
        Failure::new(
            anyhow::anyhow!("say where to write the backup"),
            "run `moat backup --output FILE --recipient AGE_RECIPIENT` (or `--passphrase`)",
        )
    })?;
    let passphrase = if args.passphrase {
        Some(read_passphrase(true)?)
    } else {
        None
    };
    let request = BackupRequest {
        recipients: args.recipients.clone(),
        passphrase: passphrase.map(SecretString::from),
        insecure_plaintext: args.insecure_plaintext,
    };
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Failure::new(e, format!("check that {} is writable", dir.display())))?;
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        if io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} backing up {bytes}/{total_bytes} {wide_bar} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let written = block_on(async {
        let file = tmp.as_file_mut();
        client(&args.host)
            .post_download(path::BACKUP, &request, |chunk, total| {
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.inc(chunk.len() as u64);
                file.write_all(chunk)
            })
            .await
            .map_err(Failure::api)
    });
    drop(request);
    bar.finish_and_clear();
    let written = written?;
    {
        use std::os::unix::fs::PermissionsExt;
        let file = tmp.as_file();
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.sync_all()?;
    }
    tmp.persist(output).map_err(|e| {
        Failure::new(
            e.error,
            format!("check that {} can be written", output.display()),
        )
    })?;
    File::open(dir)?.sync_all()?;
    let how = if args.insecure_plaintext {
        "UNENCRYPTED".to_string()
    } else if args.passphrase {
        "encrypted with a passphrase".to_string()
    } else {
        format!("encrypted to {} recipient(s)", args.recipients.len())
    };
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "Backup written to {} ({written} bytes, {how}).",
        output.display()
    )?;
    Ok(())
}

fn keygen(output: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let identity = AgeIdentity::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context(format!("creating {}", output.display())),
                "give a path that does not exist yet; an existing identity is never overwritten",
            )
        })?;
    file.write_all(identity.to_file_text().as_bytes())?;
    file.sync_all()?;
    let mut out = io::stdout().lock();
    writeln!(out, "Public key: {}", identity.recipient())?;
    writeln!(
        out,
        "Identity written to {}; keep it secret and away from the cluster.",
        output.display()
    )?;
    Ok(())
}

/// Reads and verifies a backup file.
fn open(file: &Path, unprotect: &crate::args::Unprotect) -> Result<Backup, Failure> {
    let how = if let Some(path) = &unprotect.identity {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context(format!("reading {}", path.display())),
                "give the age identity file (AGE-SECRET-KEY-1…) whose public key the backup was encrypted to",
            )
        })?);
        Unprotect::Identities(vec![text])
    } else if unprotect.passphrase {
        Unprotect::Passphrase(read_passphrase(false)?)
    } else {
        Unprotect::None
    };
    let input = File::open(file).map_err(|e| {
        Failure::new(
            anyhow::Error::new(e).context(format!("opening {}", file.display())),
            "check the path of the backup file",
        )
    })?;
    moat_backup::read_backup(io::BufReader::new(input), &how).map_err(|e| {
        let hint = match &e {
            BackupError::WrongIdentity => Some(format!(
                "{} does not hold the key of any recipient of {}",
                unprotect
                    .identity
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                file.display()
            )),
            BackupError::NeedsIdentity => Some("add --identity KEYFILE".into()),
            BackupError::NeedsPassphrase => Some("add --passphrase".into()),
            _ => None,
        };
        Failure::with_hint(
            anyhow::Error::new(e).context(format!("{} cannot be used", file.display())),
            hint,
        )
    })
}

/// `moat backup inspect --format json`: the manifest's fields, written as
/// every command writes them (`created_at` in RFC 3339, a file's `mode`
/// in octal as the table shows it, `"0600"`), plus `origin`. The backup
/// file keeps its own format (Unix seconds, a number).
#[derive(serde::Serialize)]
struct InspectJson<'a> {
    format: u32,
    moat_version: &'a str,
    cluster_id: &'a str,
    node_id: &'a str,
    created_at: String,
    raft_index: u64,
    raft_term: u64,
    nodes: u32,
    managers: u32,
    autolock: bool,
    files: Vec<FileJson<'a>>,
    origin: OriginJson<'a>,
}

#[derive(serde::Serialize)]
struct FileJson<'a> {
    path: &'a str,
    len: u64,
    sha256: &'a str,
    mode: String,
}

impl<'a> InspectJson<'a> {
    fn new(m: &'a Manifest, origin: &'a Origin) -> Self {
        // Every field named: a new manifest field fails to compile here
        // until it is shown.
        let Manifest {
            format,
            moat_version,
            cluster_id,
            node_id,
            created_at,
            raft_index,
            raft_term,
            nodes,
            managers,
            autolock,
            files,
        } = m;
        Self {
            format: *format,
            moat_version,
            cluster_id,
            node_id,
            created_at: moat_store::model::rfc3339(*created_at),
            raft_index: *raft_index,
            raft_term: *raft_term,
            nodes: *nodes,
            managers: *managers,
            autolock: *autolock,
            files: files
                .iter()
                .map(|f| FileJson {
                    path: &f.path,
                    len: f.len,
                    sha256: &f.sha256,
                    mode: file_mode(f.mode),
                })
                .collect(),
            origin: origin_json(origin),
        }
    }
}

/// A file's permission bits as `ls`, chmod and the table write them:
/// `0600`.
fn file_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

#[derive(serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum OriginJson<'a> {
    /// Format 2: the signature verified.
    Signed {
        cluster_id: String,
        signer: String,
        signer_serial: &'a str,
        roots: &'a [String],
    },
    /// Format 1: no signature.
    Unsigned,
}

fn origin_json(origin: &Origin) -> OriginJson<'_> {
    match origin {
        Origin::Signed(s) => OriginJson::Signed {
            cluster_id: s.cluster_id.to_string(),
            signer: s.signer.node_id.to_string(),
            signer_serial: &s.signer.serial,
            roots: &s.roots,
        },
        _ => OriginJson::Unsigned,
    }
}

/// The `Signed by:` and `Root CA:` lines (or the unsigned warning).
fn write_origin(out: &mut impl Write, origin: &Origin) -> io::Result<()> {
    match origin {
        Origin::Signed(s) => {
            writeln!(
                out,
                "Signed by:     manager {} of cluster {} (signature verified)",
                s.signer.node_id, s.cluster_id
            )?;
            writeln!(out, "Root CA:       {}", s.roots.join(", "))
        }
        _ => {
            writeln!(
                out,
                "Signed by:     NOBODY: format 1 backup, its cluster cannot be proven"
            )?;
            writeln!(out, "Root CA:       unknown")
        }
    }
}

fn inspect(args: &BackupInspect) -> Result<(), Failure> {
    let backup = open(&args.file, &args.unprotect)?;
    let m = &backup.manifest;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &InspectJson::new(m, &backup.origin))?,
        Format::Table => {
            writeln!(out, "Backup:        {} (verified)", args.file.display())?;
            writeln!(out, "Encryption:    {:?}", backup.encryption)?;
            writeln!(out, "Cluster:       {}", m.cluster_id)?;
            write_origin(&mut out, &backup.origin)?;
            writeln!(out, "Taken from:    {}", m.node_id)?;
            writeln!(
                out,
                "Taken at:      {}",
                moat_store::model::rfc3339(m.created_at)
            )?;
            writeln!(
                out,
                "Log index:     {} (term {})",
                m.raft_index, m.raft_term
            )?;
            writeln!(out, "Nodes:         {} ({} managers)", m.nodes, m.managers)?;
            writeln!(
                out,
                "Autolock:      {}",
                if m.autolock {
                    "on (restoring needs the unlock key valid when it was taken)"
                } else {
                    "off"
                }
            )?;
            writeln!(out, "Moat version:  {}", m.moat_version)?;
            writeln!(out, "Files:")?;
            for f in &m.files {
                writeln!(out, "  {}  {:>9}  {}", file_mode(f.mode), f.len, f.path)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn restore(args: &RestoreArgs) -> Result<(), Failure> {
    let unlock_key = match &args.unlock_key_file {
        Some(path) => Some(moat_lock::read_unlock_key_file(path).map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context("reading the unlock key"),
                "the file must hold the unlock key (MOATKEY-1-…) on its first line and be readable by its owner only (chmod 600)",
            )
        })?),
        None => None,
    };
    let expected = match &args.expect_cluster {
        Some(id) => Some(id.parse::<moat_pki::ClusterId>().map_err(|e| {
            Failure::new(
                anyhow::anyhow!("--expect-cluster {id:?} is not a cluster id: {e}"),
                "give the cluster id as `moat info` prints it (26 characters, 0-9 and a-v)",
            )
        })?),
        None => None,
    };
    let backup = open(&args.file, &args.unprotect)?;
    let (created_at, index) = (backup.manifest.created_at, backup.manifest.raft_index);
    {
        let mut out = io::stdout().lock();
        writeln!(
            out,
            "Backup of cluster {} taken from manager {}",
            backup.manifest.cluster_id, backup.manifest.node_id
        )?;
        write_origin(&mut out, &backup.origin)?;
        out.flush()?;
    }
    let trust = trust_for(&backup, expected, args)?;
    if matches!(backup.origin, Origin::Unsigned) {
        writeln!(
            io::stderr().lock(),
            "WARNING: {} is an unsigned (format 1) backup: nothing proves it comes from your cluster. Restoring it because of --trust-any-cluster.",
            args.file.display()
        )?;
    }
    let restored = moat_node::restore_backup(
        backup,
        &args.state_dir,
        args.listen_addr.as_deref(),
        args.advertise_addr.as_deref(),
        unlock_key.as_ref(),
        &trust,
    )
    .map_err(|e| {
        Failure::with_hint(
            anyhow::anyhow!(
                "restoring into {}: {}",
                args.state_dir.display(),
                e.message()
            ),
            e.hint_text().map(str::to_owned),
        )
    })?;
    let dir = args.state_dir.display();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "Restored manager {} of cluster {} into {dir}",
        restored.node_id, restored.cluster_id
    )?;
    writeln!(
        out,
        "(backup taken at {}, log index {index}); it will listen on {} and advertise {}.",
        moat_store::model::rfc3339(created_at),
        restored.listen_addr,
        restored.advertise_addr
    )?;
    writeln!(out)?;
    let host = format!(
        "unix://{}",
        std::path::absolute(args.state_dir.join("moat.sock"))
            .unwrap_or_else(|_| args.state_dir.join("moat.sock"))
            .display()
    );
    writeln!(out, "Next:")?;
    writeln!(out, "    moat daemon --state-dir {dir}")?;
    if restored.locked {
        writeln!(
            out,
            "    moat unlock -H {host}    # autolock was on: give the unlock key valid when the backup was taken"
        )?;
    }
    writeln!(out, "    moat init -H {host} --force-new-cluster")?;
    writeln!(out)?;
    writeln!(
        out,
        "Then join the other nodes again. Do not start the cluster the backup came from again."
    )?;
    Ok(())
}

/// What the operator trusts the backup's origin to be, from the flags;
/// neither flag is a refusal that names what the backup is.
fn trust_for(
    backup: &Backup,
    expected: Option<moat_pki::ClusterId>,
    args: &RestoreArgs,
) -> Result<Trust, Failure> {
    if let Some(id) = expected {
        return Ok(Trust::Cluster {
            id,
            root: args.expect_root.clone(),
        });
    }
    if args.trust_any_cluster {
        return Ok(Trust::AnyCluster);
    }
    Err(match &backup.origin {
        Origin::Signed(s) => Failure::new(
            anyhow::anyhow!(
                "this backup is of cluster {} (root CA {}); restore needs to know which cluster you expect, and nothing was written",
                s.cluster_id,
                s.roots.join(", ")
            ),
            format!(
                "if that is your cluster (`moat info` on one of its nodes, or your records, show its id), pass --expect-cluster {}; add --expect-root {} to pin its root CA as well",
                s.cluster_id,
                s.roots.first().map(String::as_str).unwrap_or("sha256:…")
            ),
        ),
        _ => Failure::new(
            anyhow::anyhow!(
                "this backup is unsigned (format 1, written before moat signed backups): nothing proves it comes from cluster {} as it says, and nothing was written",
                backup.manifest.cluster_id
            ),
            "if you know where this file came from, pass --trust-any-cluster",
        ),
    })
}

/// A passphrase from the terminal (asked twice when `confirm`) or the
/// first line of standard input.
fn read_passphrase(confirm: bool) -> Result<Zeroizing<String>, Failure> {
    let hint = "type it at the prompt, or pipe it as the first line of standard input";
    let pass = if io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password("Backup passphrase: ").map_err(|e| Failure::new(e, hint))?,
        );
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Repeat the passphrase: ")
                    .map_err(|e| Failure::new(e, hint))?,
            );
            if *again != *first {
                return Err(Failure::new(
                    anyhow::anyhow!("the passphrases differ"),
                    "run the command again",
                ));
            }
        }
        first
    } else {
        let mut line = Zeroizing::new(String::new());
        io::Read::take(io::stdin().lock(), 4096)
            .read_line(&mut line)
            .map_err(|e| Failure::new(e, hint))?;
        Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string())
    };
    if pass.is_empty() {
        return Err(Failure::new(
            anyhow::anyhow!("the passphrase is empty"),
            hint,
        ));
    }
    Ok(pass)
}
