//! `moat daemon`: runs a node (moat-node) in the foreground.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::args::DaemonArgs;
use crate::output::Failure;

/// The environment variable holding the log filter.
const LOG_ENV: &str = "MOAT_LOG";

pub(crate) fn run(args: DaemonArgs) -> Result<(), Failure> {
    if let Some(name) = &args.hostname {
        moat_api::validate_hostname(name).map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context("invalid --hostname"),
                "give a host name of ASCII letters, digits and hyphens, with dots between \
                 labels (RFC 1123), e.g. --hostname worker-1",
            )
        })?;
    }
    init_logging()?;
    // Before the runtime starts (its threads are locked too) and before
    // any key is read.
    crate::harden::harden();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_node(args))
}

/// Logs go to stderr at the level in `MOAT_LOG` (default `info`), in colour
/// only on a terminal.
fn init_logging() -> Result<(), Failure> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context(format!("invalid {LOG_ENV} filter {spec:?}")),
                format!(
                    "set {LOG_ENV} to a level (error, warn, info, debug, trace) or a list of \
                     target=level directives, e.g. {LOG_ENV}=moat_node=debug,info"
                ),
            )
        })?,
        _ => EnvFilter::new("info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Runs the node until SIGTERM or SIGINT (moat-node handles both).
async fn run_node(args: DaemonArgs) -> Result<(), Failure> {
    let state_dir = args.state_dir.clone();
    let unlock_key = read_unlock_key(&args)?;
    moat_node::run_daemon(moat_node::DaemonOptions {
        state_dir: args.state_dir,
        control_socket: args.control_socket,
        hostname: args.hostname,
        unlock_key,
        metrics_addr: args.metrics_addr,
        danger_clock_ahead: args.danger_clock_ahead.unwrap_or_default(),
        docker_host: args.docker_host,
        secrets_dir: args.secrets_dir,
    })
    .await
    .map_err(|e| {
        let hint = e.hint_text().map(str::to_owned).unwrap_or_else(|| {
            format!(
                "see the log lines above; the node's state is in {}",
                state_dir.display()
            )
        });
        Failure::new(anyhow::Error::new(e).context("the daemon stopped"), hint)
    })
}

/// The key of `--unlock-key-file` or `--unlock-key-fd`: a file readable by
/// group or others is refused before it is read.
fn read_unlock_key(args: &DaemonArgs) -> Result<Option<moat_lock::UnlockKey>, Failure> {
    let path = match (&args.unlock_key_file, args.unlock_key_fd) {
        (Some(p), _) => p.clone(),
        (None, Some(fd)) => std::path::PathBuf::from(format!("/proc/self/fd/{fd}")),
        (None, None) => return Ok(None),
    };
    moat_lock::read_unlock_key_file(&path).map(Some).map_err(|e| {
        Failure::new(
            anyhow::Error::new(e).context("reading the unlock key"),
            "the file must hold the unlock key (MOATKEY-1-…) on its first line and be readable by its owner only (chmod 600)",
        )
    })
}
