//! `moat daemon`: runs a node (moat-node) in the foreground.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::args::DaemonArgs;
use crate::output::Failure;

/// The environment variable holding the log filter.
const LOG_ENV: &str = "MOAT_LOG";

pub(crate) fn run(args: DaemonArgs) -> Result<(), Failure> {
    init_logging()?;
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
    moat_node::run_daemon(moat_node::DaemonOptions {
        state_dir: args.state_dir,
        control_socket: args.control_socket,
        hostname: args.hostname,
    })
    .await
    .map_err(|e| {
        Failure::new(
            anyhow::Error::new(e).context("the daemon stopped"),
            format!(
                "see the log lines above; the node's state is in {}",
                state_dir.display()
            ),
        )
    })
}
