//! A node run inside another process, for load generators such as
//! `bench/scale`: the daemon of [`run_daemon`](crate::run_daemon) without
//! its control socket, signals or metrics listener. Everything a node does
//! in the cluster is the daemon's own code: the join (pin, CSR, token), the
//! agent (heartbeats, renewals, role), the task loop and its executor. Many
//! of these share one process and one tokio runtime; each has its own
//! state directory, key, certificate and mutual-TLS sessions.
//!
//! What it adds is observation: an [`AgentProbe`] the agent reports each
//! heartbeat's and renewal's round trip to.

use std::path::Path;
use std::sync::Arc;

use moat_api::{JoinRequest, SecretString};

use crate::clock::Clock;
use crate::daemon::Daemon;
use crate::error::NodeError;
use crate::files::Layout;
use crate::journal::Journal;
use crate::probe::AgentProbe;

/// A node inside this process; stopped when dropped only by [`stop`]
/// (its background work is tokio tasks of the caller's runtime).
///
/// [`stop`]: InProcessNode::stop
pub struct InProcessNode {
    daemon: Arc<Daemon>,
    probe: Option<Arc<AgentProbe>>,
    /// The state directory's lock, as a daemon holds it.
    _lock: std::fs::File,
}

impl InProcessNode {
    /// A node outside any cluster, with `state_dir` (created 0700 if
    /// missing, and locked as a daemon locks it) and `hostname`,
    /// reporting to `probe`.
    pub fn new(
        state_dir: &Path,
        hostname: &str,
        probe: Option<Arc<AgentProbe>>,
    ) -> Result<Self, NodeError> {
        Self::with_source(state_dir, hostname, probe, None)
    }

    /// Like [`new`](Self::new); once joined, the node calls managers from
    /// the local address `source` (e.g. its own address in 127.0.0.0/8),
    /// as a real node calls from its own address.
    pub fn with_source(
        state_dir: &Path,
        hostname: &str,
        probe: Option<Arc<AgentProbe>>,
        source: Option<std::net::IpAddr>,
    ) -> Result<Self, NodeError> {
        moat_api::validate_hostname(hostname).map_err(|e| {
            NodeError::new(
                moat_api::ErrorKind::InvalidArgument,
                format!("not a valid host name: {e}"),
            )
        })?;
        let layout = Layout::new(state_dir);
        let lock = layout.lock()?;
        let clock = Clock::system();
        let (journal, _broken) = Journal::open(layout.dir(), clock.clone());
        let daemon = Arc::new(Daemon::new(
            layout,
            Arc::new(journal),
            hostname.to_string(),
            clock,
            crate::tasks::Settings::default(),
        ));
        if let Some(source) = source {
            let _ = daemon.source.set(source);
        }
        Ok(Self {
            daemon,
            probe,
            _lock: lock,
        })
    }

    /// `moat join --token TOKEN MANAGER`, listening (for a later
    /// promotion) on a free loopback port.
    pub async fn join(&self, token: &str, manager: &str) -> Result<(), NodeError> {
        self.daemon
            .join(JoinRequest {
                token: SecretString::new(token.to_string()),
                remote_addr: manager.to_string(),
                listen_addr: "127.0.0.1:0".into(),
                advertise_addr: None,
                rejoin: false,
            })
            .await?;
        if let (Some(node), Some(probe)) = (self.daemon.node().await, &self.probe) {
            node.set_probe(probe.clone());
        }
        Ok(())
    }

    /// This node's id, once it joined.
    pub async fn node_id(&self) -> Option<String> {
        self.daemon.node().await.map(|n| n.id.to_string())
    }

    /// Why this node cannot take part, if it cannot (removed, expired).
    pub async fn fault(&self) -> Option<NodeError> {
        self.daemon.node().await.and_then(|n| n.fault())
    }

    /// Stops the agent and the task loop.
    pub async fn stop(&self) {
        self.daemon.stop().await;
    }
}
