//! The daemon process: opens the state directory (one daemon per
//! directory), the journal and the clock, restores the node, serves the
//! control socket and the metrics endpoint until SIGTERM or SIGINT, then
//! stops the node.

use std::sync::Arc;

use crate::clock::Clock;
use crate::daemon::{Daemon, DaemonOptions, machine_hostname};
use crate::error::NodeError;
use crate::files::Layout;
use crate::journal::{Journal, JournalAction, JournalActor, JournalEvent};

/// Runs a daemon until SIGTERM or SIGINT.
pub async fn run_daemon(opts: DaemonOptions) -> Result<(), NodeError> {
    let hostname = checked_hostname(opts.hostname.as_deref())?;
    let layout = Layout::new(&opts.state_dir);
    let _lock = layout.lock()?;
    let clock = Clock::danger_ahead(opts.danger_clock_ahead);
    if !opts.danger_clock_ahead.is_zero() {
        tracing::warn!(
            ahead_s = opts.danger_clock_ahead.as_secs(),
            "this daemon's clock runs ahead of the system's (--danger-clock-ahead): for tests only"
        );
    }
    let (journal, broken) = Journal::open(layout.dir(), clock.clone());
    if let Some(b) = &broken {
        tracing::error!(line = b.line, problem = %b.problem, "the local security journal {} was altered or damaged", layout.dir().join("journal.jsonl").display());
        journal.record_or_log(
            "",
            JournalEvent::new(JournalActor::ThisNode, JournalAction::TamperDetected)
                .failed(format!("journal.jsonl line {}: {}", b.line, b.problem)),
        );
    }
    let daemon = Arc::new(Daemon::new(
        layout.clone(),
        Arc::new(journal),
        hostname,
        clock,
        crate::tasks::Settings {
            docker_host: opts.docker_host.clone(),
            secrets_dir: opts.secrets_dir.clone(),
        },
    ));
    let metrics = match &opts.metrics_addr {
        Some(addr) => Some(crate::metrics::bind(addr).await?),
        None => None,
    };
    // The first TLS handshake of a process seeds aws-lc's random generator
    // from CPU jitter (tens of ms): do it before the socket answers, not
    // during the first join.
    let mut seed = [0u8; 32];
    let _ = moat_pki::provider().secure_random.fill(&mut seed);
    daemon.restore(opts.unlock_key).await?;

    let socket = opts.control_socket.unwrap_or_else(|| layout.socket());
    let listener = crate::control::bind(&socket)?;
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        }
        tokio::spawn(crate::metrics::serve(listener, daemon.clone()));
    }
    tracing::info!(socket = %socket.display(), state_dir = %layout.dir().display(), "moat daemon ready");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
    };
    let served = crate::control::serve(listener, daemon.clone(), shutdown).await;
    daemon.stop().await;
    let _ = std::fs::remove_file(&socket);
    served
}

/// The host name this node reports: the one given, or the machine's; a
/// name other than RFC 1123's (a terminal escape, a space, `_`) is refused
/// before it can reach the cluster.
fn checked_hostname(given: Option<&str>) -> Result<String, NodeError> {
    let (name, source) = match given {
        Some(name) => (name.to_string(), "--hostname"),
        None => (machine_hostname(), "the machine's host name"),
    };
    moat_api::validate_hostname(&name).map_err(|e| {
        NodeError::new(
            moat_api::ErrorKind::InvalidArgument,
            format!("{source} is not a valid host name: {e}"),
        )
        .hint(
            "give `moat daemon --hostname NAME`, with ASCII letters, digits and hyphens \
             (dots between labels), e.g. `--hostname worker-1`",
        )
    })?;
    Ok(name)
}
