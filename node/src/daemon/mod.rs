//! `moat daemon`: one node's process. Holds the node's phase (inactive,
//! locked, member), restores it from the state directory at start, and
//! serves the control socket until SIGTERM or SIGINT. Each lifecycle step
//! has its own file:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the phases, start and stop, restoring a member from its files |
//! | `init.rs` | `moat init`: a new cluster |
//! | `force_new.rs` | `moat init --force-new-cluster`: a restored or surviving manager alone |
//! | `join.rs` | `moat join`, `--rejoin` |
//! | `leave.rs` | `moat leave` |
//! | `unlock.rs` | `moat unlock` on a locked manager (the gate is moat-lock's) |

mod force_new;
mod init;
mod join;
mod leave;
mod unlock;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moat_api::ErrorKind;
use moat_lock::{UnlockGate, UnlockKey};
use moat_pki::{CertError, Credentials, Role, TlsContext};
use tokio::sync::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::error::NodeError;
use crate::faults::{locked_error, not_in_cluster, restored_fault};
use crate::files::{Layout, NodeFile, TlsFiles};
use crate::journal::{Journal, JournalActor};
use crate::member::Member;

/// How a daemon is started.
#[derive(Debug)]
pub struct DaemonOptions {
    /// The node's state directory.
    pub state_dir: PathBuf,
    /// The control socket; default `state_dir/moat.sock`.
    pub control_socket: Option<PathBuf>,
    /// The host name to report; default the machine's.
    pub hostname: Option<String>,
    /// Unlock key for unattended start of a locked manager (read from
    /// `--unlock-key-file` or `--unlock-key-fd`); tried once at start.
    pub unlock_key: Option<UnlockKey>,
    /// Serve Prometheus metrics on this address (`--metrics-addr`); off
    /// when `None`.
    pub metrics_addr: Option<String>,
    /// Run the daemon's clock this far ahead of the system's (tests only:
    /// see `clock`). Zero for every real daemon.
    pub danger_clock_ahead: Duration,
    /// The Docker Engine API the docker runtime talks to (`unix:///…`);
    /// `None`: the engine's usual socket (or `DOCKER_HOST`).
    pub docker_host: Option<String>,
    /// The tmpfs directory in whose subdirectory `moat-<node id>` tasks'
    /// secrets and configs are kept (`--secrets-dir`); `None`: `/dev/shm`.
    pub secrets_dir: Option<std::path::PathBuf>,
}

pub(crate) enum Phase {
    Inactive,
    /// A manager with autolock on, restarted: nothing is decrypted until
    /// someone gives the unlock key.
    Locked(Box<Locked>),
    Member {
        node: Arc<Member>,
        agent: Option<JoinHandle<()>>,
    },
}

/// What a locked node holds: no key, only who it is and the gate its
/// unlock attempts go through.
pub(crate) struct Locked {
    pub(crate) file: NodeFile,
    gate: UnlockGate,
}

/// The running daemon.
pub(crate) struct Daemon {
    pub(crate) layout: Layout,
    pub(crate) journal: Arc<Journal>,
    pub(crate) hostname: String,
    pub(crate) clock: Clock,
    pub(crate) phase: RwLock<Phase>,
    /// Serializes init, join, leave and role changes of this node.
    lifecycle: Mutex<()>,
    /// Failed unlock attempts since start (a metric).
    pub(crate) failed_unlocks: std::sync::atomic::AtomicU64,
    /// `--docker-host` and `--secrets-dir`, for the executor.
    pub(crate) executor: crate::tasks::Settings,
    /// The local address a node joined by this daemon calls managers from
    /// (in-process nodes of a load generator only).
    pub(crate) source: std::sync::OnceLock<std::net::IpAddr>,
}

pub(crate) fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl Daemon {
    pub(crate) fn new(
        layout: Layout,
        journal: Arc<Journal>,
        hostname: String,
        clock: Clock,
        executor: crate::tasks::Settings,
    ) -> Self {
        Self {
            layout,
            journal,
            hostname,
            clock,
            phase: RwLock::new(Phase::Inactive),
            lifecycle: Mutex::new(()),
            failed_unlocks: std::sync::atomic::AtomicU64::new(0),
            executor,
            source: std::sync::OnceLock::new(),
        }
    }

    /// The member node, if any.
    pub(crate) async fn node(&self) -> Option<Arc<Member>> {
        match &*self.phase.read().await {
            Phase::Inactive | Phase::Locked(_) => None,
            Phase::Member { node, .. } => Some(node.clone()),
        }
    }

    /// Who this node is while it is locked.
    pub(crate) async fn locked(&self) -> Option<NodeFile> {
        match &*self.phase.read().await {
            Phase::Locked(l) => Some(l.file.clone()),
            _ => None,
        }
    }

    /// The member node, or the error every cluster command gives on an
    /// inactive, locked or faulted node.
    pub(crate) async fn member(&self) -> Result<Arc<Member>, NodeError> {
        if self.locked().await.is_some() {
            return Err(locked_error());
        }
        let node = self.node().await.ok_or_else(not_in_cluster)?;
        if let Some(fault) = node.fault() {
            return Err(fault);
        }
        Ok(node)
    }

    pub(crate) async fn stop(&self) {
        let mut phase = self.phase.write().await;
        if let Phase::Member { node, agent } = &mut *phase {
            if let Some(agent) = agent.take() {
                agent.abort();
            }
            node.stop_manager().await;
        }
    }

    /// Brings back the node described by the state directory, or discards
    /// what an interrupted init or join left behind.
    pub(crate) async fn restore(&self, unlock_key: Option<UnlockKey>) -> Result<(), NodeError> {
        if !self.layout.has_node_file() {
            // No node.json: not in a cluster. Anything else is the residue of
            // an init or join that did not finish; it is set aside, never
            // deleted, in case node.json was lost some other way.
            if let Some(aside) = self.layout.set_aside_leftovers(self.clock.unix())? {
                tracing::warn!(
                    moved_to = %aside.display(),
                    "found keys or a store without node.json (an interrupted init or join?); set them aside and started as a node outside any cluster"
                );
            }
            return Ok(());
        }
        // A key change interrupted by a crash is finished (or undone) first.
        if crate::keys::finish_rekey(&self.layout)? {
            tracing::warn!("finished re-sealing this node's keys, interrupted by the last stop");
        }
        let file = NodeFile::load(&self.layout)?;
        if !self.layout.kek_file().exists() {
            tracing::warn!(node = %file.node_id, "this manager is locked (autolock is on): run `moat unlock` and provide the unlock key");
            *self.phase.write().await = Phase::Locked(Box::new(Locked {
                file,
                gate: UnlockGate::new(),
            }));
            if let Some(key) = unlock_key {
                match self.unlock_with(key, JournalActor::UnattendedStart).await {
                    Ok(_) => tracing::info!("unlocked with the key given at start"),
                    Err(e) => {
                        tracing::error!(error = %e, "the unlock key given at start did not unlock this node; it stays locked")
                    }
                }
            }
            return Ok(());
        }
        let kek = moat_lock::read_unlock_key_file(self.layout.kek_file())
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let tls = crate::files::load_tls(&self.layout, &kek, &file.cluster_id, &file.node_id)?;
        self.bring_up(file, kek, tls).await
    }

    /// Starts the member this node's files describe, with their key and
    /// what it opened.
    async fn bring_up(
        &self,
        file: NodeFile,
        kek: UnlockKey,
        opened: TlsFiles,
    ) -> Result<(), NodeError> {
        let TlsFiles { chain, key, roots } = opened;
        let tls = self.tls_context(file.cluster_id, roots);
        let node = Member::new(
            file.clone(),
            self.layout.clone(),
            tls.clone(),
            kek,
            self.journal.clone(),
            self.clock.clone(),
        );
        match tls.set_credentials(Credentials { chain, key }, self.clock.now()) {
            Ok(identity) => {
                tracing::info!(node = %identity.node_id, role = identity.role.as_str(), "restoring cluster membership");
                self.run_member(node, identity.role).await?;
            }
            Err(moat_pki::Error::Cert(CertError::Expired { not_after, .. }))
                if self.layout.store_dir().join("store.json").exists() =>
            {
                // A manager holds the CA key in its store: it renews its own
                // certificate rather than stay locked out (all managers may
                // have been down for longer than a certificate lives).
                match node.self_renew().await {
                    Ok(identity) => {
                        tracing::warn!(
                            expired = %not_after,
                            not_after = %identity.not_after,
                            "this manager's certificate expired while it was down; issued itself a new one from the cluster CA"
                        );
                        self.run_member(node, Role::Manager).await?;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "renewing this manager's expired certificate from its store failed");
                        node.set_fault(crate::faults::expired_fault(not_after));
                        *self.phase.write().await = Phase::Member { node, agent: None };
                    }
                }
            }
            Err(moat_pki::Error::Cert(CertError::Expired { not_after, .. })) => {
                let fault = crate::faults::expired_fault(not_after);
                tracing::error!("{}", fault.message());
                node.set_fault(fault);
                *self.phase.write().await = Phase::Member { node, agent: None };
            }
            Err(e) => {
                return Err(NodeError::new(
                    ErrorKind::Internal,
                    format!("this node's certificate cannot be used: {e}"),
                )
                .hint(crate::files::START_OVER_HINT));
            }
        }
        Ok(())
    }

    /// Runs a member whose keys are loaded: a manager's store and
    /// listener, and the agent. A manager restored from a backup waits
    /// for `moat init --force-new-cluster` instead.
    async fn run_member(&self, node: Arc<Member>, role: Role) -> Result<(), NodeError> {
        if node.node_file().restored {
            tracing::warn!(
                "this manager was restored from a backup: run `moat init --force-new-cluster` to start the restored cluster"
            );
            node.set_fault(restored_fault());
            *self.phase.write().await = Phase::Member { node, agent: None };
            return Ok(());
        }
        if role == Role::Manager {
            crate::roles::start_manager(&node, &node.node_file().listen_addr).await?;
            resume_dek_rotation(&node);
        }
        self.run_agent(node).await;
        Ok(())
    }

    async fn ensure_inactive(&self) -> Result<(), NodeError> {
        if self.locked().await.is_some() {
            return Err(locked_error());
        }
        if self.node().await.is_some() {
            return Err(NodeError::new(
                ErrorKind::FailedPrecondition,
                "This node is already part of a cluster.",
            )
            .hint("use `moat leave` to leave this cluster and join another one"));
        }
        Ok(())
    }

    /// A TLS context for `cluster` trusting `roots`, on the daemon's clock.
    fn tls_context(
        &self,
        cluster: moat_pki::ClusterId,
        roots: moat_pki::TrustRoots,
    ) -> Arc<TlsContext> {
        TlsContext::with_clock(cluster, roots, Arc::new(self.clock.clone()))
    }

    /// Starts the agent of `node` and makes it this daemon's member.
    async fn run_agent(&self, node: Arc<Member>) {
        let settings = self.executor.clone();
        let member = node.clone();
        // The agent and the task loop stop together (a fault, `leave`);
        // the tasks themselves keep running (see `tasks`).
        let agent = tokio::spawn(async move {
            let tasks = {
                let member = member.clone();
                async move {
                    crate::tasks::run(member, settings).await;
                    // The executor could not open (or the node is
                    // faulted): the agent goes on alone.
                    std::future::pending::<()>().await
                }
            };
            tokio::select! {
                () = crate::agent::run(member) => {}
                () = tasks => {}
            }
        });
        *self.phase.write().await = Phase::Member {
            node,
            agent: Some(agent),
        };
    }

    /// Stops whatever a failed init or join started and removes its files.
    async fn abandon(&self) {
        // Only ever called before node.json exists.
        let mut phase = self.phase.write().await;
        if let Phase::Member { node, agent } = &mut *phase {
            if let Some(agent) = agent.take() {
                agent.abort();
            }
            node.stop_manager().await;
        }
        *phase = Phase::Inactive;
        if let Err(e) = self.layout.wipe() {
            tracing::error!(error = %e, "cleaning up after a failed init or join");
        }
    }
}

/// Finishes a data-key rotation a restart interrupted (or one that was
/// due and never began).
fn resume_dek_rotation(node: &Arc<Member>) {
    let node = node.clone();
    tokio::spawn(async move {
        let Some(m) = node.manager() else {
            return;
        };
        let pending = m
            .inner
            .lock()
            .await
            .as_ref()
            .and_then(|r| r.dek_versions())
            .is_some_and(|(_, pending)| pending.is_some());
        if pending || node.node_file().dek_rotation_due {
            tracing::info!("resuming the store data key rotation interrupted by the last stop");
            if let Err(e) = node.rotate_dek().await {
                tracing::error!(error = %e, "resuming the data key rotation failed");
            }
        }
    });
}
