//! `moat dev`: a local cluster of daemons on loopback, for trying moat out.
//!
//! Every node is a `moat daemon` child process of this one, with its own
//! state directory, control socket and log file under one directory. The
//! daemons run in their own process group, so a Ctrl-C in the terminal
//! reaches only this process, which then stops them all with SIGTERM (and
//! SIGKILL after 10 s).

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::anyhow;
use moat_api::{
    Client, ClientError, Host, Info, InitRequest, InitResponse, JoinRequest, JoinResponse,
    JoinTokenRequest, JoinTokenResponse, Role, SecretString, path,
};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::args::DevArgs;
use crate::client::block_on;
use crate::output::{Failure, progress};
use crate::render::{self, DevNode, DevSummary};

/// How long a daemon may take to answer on its control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Every node listens on loopback, on a port the system picks.
const LISTEN_ADDR: &str = "127.0.0.1:0";

pub(crate) fn run(args: &DevArgs) -> Result<(), Failure> {
    let exe = std::env::current_exe().map_err(|e| {
        Failure::new(
            e,
            "moat dev starts copies of its own binary; run it by path",
        )
    })?;
    // A directory given is kept; a temporary one lives as long as `temp`,
    // unless something failed: then its logs are worth reading.
    let (dir, temp) = match &args.dir {
        Some(dir) => {
            let dir = std::path::absolute(dir)?;
            fs::create_dir_all(&dir)
                .map_err(|e| Failure::new(e, format!("cannot create {}", dir.display())))?;
            if fs::read_dir(&dir)?.next().is_some() {
                return Err(Failure::new(
                    anyhow!("{} is not empty", dir.display()),
                    "moat dev builds a new cluster: give --dir a new or empty directory \
                     (or remove the old one)",
                ));
            }
            (dir, None)
        }
        None => {
            let temp = tempfile::Builder::new().prefix("moat-dev-").tempdir()?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let outcome = block_on(async {
        let mut cluster = Cluster {
            exe,
            dir: dir.clone(),
            keep_dir: args.dir.is_some(),
            nodes: Vec::new(),
        };
        let stop_signal = stop_signal()?;
        let outcome = tokio::select! {
            r = cluster.up_and_watch(args.managers, args.workers) => r,
            () = stop_signal => Ok(()),
        };
        cluster.stop().await;
        outcome
    });
    if outcome.is_err()
        && let Some(temp) = temp
    {
        let _ = temp.keep();
        progress(format_args!(
            "Kept {} for its logs; remove it when done",
            dir.display()
        ));
    }
    outcome
}

/// The daemons started so far.
struct Cluster {
    exe: PathBuf,
    dir: PathBuf,
    keep_dir: bool,
    nodes: Vec<Node>,
}

/// One daemon.
struct Node {
    name: String,
    dir: PathBuf,
    host: Host,
    child: Child,
    /// Its id once it initialized or joined.
    id: Option<String>,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    fn client(&self) -> Client {
        Client::new(self.host.clone())
    }

    /// A failed request to this node, with the daemon's hint or else a
    /// pointer to its log.
    fn failed(&self, doing: &str, e: ClientError) -> Failure {
        let hint = match &e {
            ClientError::Api(api) => api.hint.clone(),
            _ => None,
        };
        Failure::new(
            anyhow!("{}: {doing}: {e}", self.name),
            hint.unwrap_or_else(|| format!("see its log, {}", self.log().display())),
        )
    }
}

impl Cluster {
    /// Starts the daemons, forms the cluster, prints how to use it, and
    /// waits; returns only on failure (the caller stops on a signal).
    async fn up_and_watch(&mut self, managers: u16, workers: u16) -> Result<(), Failure> {
        progress(format_args!(
            "Starting {} and {} in {}",
            plural(managers.into(), "manager"),
            plural(workers.into(), "worker"),
            self.dir.display()
        ));
        for i in 1..=managers {
            self.spawn(format!("manager-{i}"))?;
        }
        for i in 1..=workers {
            self.spawn(format!("worker-{i}"))?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i).await?;
        }
        let summary = self.form(usize::from(managers)).await?;
        let mut out = io::stdout().lock();
        render::dev_summary(&mut out, &summary)?;
        out.flush()?;
        drop(out);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.check_alive()?;
        }
    }

    /// Starts `moat daemon` for a node named `name`, logging to its
    /// directory.
    fn spawn(&mut self, name: String) -> Result<(), Failure> {
        let dir = self.dir.join(&name);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failure::new(e, format!("cannot create {}", dir.display())))?;
        let socket = dir.join("moat.sock");
        let log_path = dir.join("daemon.log");
        let log = File::create(&log_path)
            .map_err(|e| Failure::new(e, format!("cannot create {}", log_path.display())))?;
        let child = Command::new(&self.exe)
            .arg("daemon")
            .arg("--state-dir")
            .arg(&dir)
            .arg("--control-socket")
            .arg(&socket)
            .arg("--hostname")
            .arg(&name)
            .env_remove("MOAT_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Failure::new(
                    anyhow::Error::new(e).context(format!("cannot start {}", self.exe.display())),
                    "moat dev runs its own binary as `moat daemon`",
                )
            })?;
        self.nodes.push(Node {
            name,
            dir,
            host: Host::unix(socket),
            child,
            id: None,
        });
        Ok(())
    }

    /// Waits until node `i` answers `GET /v1/info`.
    async fn wait_ready(&mut self, i: usize) -> Result<(), Failure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            let node = &self.nodes[i];
            match node.client().get::<Info>(path::INFO).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(Failure::new(
                        anyhow!(
                            "{}: the control socket {} did not answer within {} s: {e}",
                            node.name,
                            node.host.socket().display(),
                            READY_TIMEOUT.as_secs()
                        ),
                        format!("see its log, {}", node.log().display()),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Initializes the cluster on the first node, joins the other
    /// `managers - 1` managers one at a time, then the workers.
    async fn form(&mut self, managers: usize) -> Result<DevSummary, Failure> {
        let first = &self.nodes[0];
        progress(format_args!("Initializing the cluster on {}", first.name));
        let init: InitResponse = first
            .client()
            .post(
                path::INIT,
                &InitRequest {
                    listen_addr: LISTEN_ADDR.into(),
                    advertise_addr: None,
                    cert_expiry_seconds: None,
                    autolock: false,
                    force_new_cluster: false,
                },
            )
            .await
            .map_err(|e| first.failed("init", e))?;
        let manager_token: JoinTokenResponse = first
            .client()
            .post(
                path::JOIN_TOKEN,
                &JoinTokenRequest {
                    role: Role::Manager,
                    rotate: false,
                },
            )
            .await
            .map_err(|e| first.failed("join-token manager", e))?;
        self.nodes[0].id = Some(init.node_id.clone());
        for i in 1..self.nodes.len() {
            let token = if i < managers {
                &manager_token.token
            } else {
                &init.worker_token
            };
            let request = JoinRequest {
                token: SecretString::new(token.expose_secret().to_string()),
                remote_addr: init.advertise_addr.clone(),
                listen_addr: LISTEN_ADDR.into(),
                advertise_addr: None,
                rejoin: false,
            };
            let node = &self.nodes[i];
            let joined: Result<JoinResponse, _> = node.client().post(path::JOIN, &request).await;
            let joined = match joined {
                Ok(j) => j,
                Err(e) => {
                    self.check_alive()?;
                    return Err(self.nodes[i].failed("join", e));
                }
            };
            progress(format_args!("{} joined as a {}", node.name, joined.role));
            self.nodes[i].id = Some(joined.node_id);
        }
        let info: Info = self.nodes[0]
            .client()
            .get(path::INFO)
            .await
            .map_err(|e| self.nodes[0].failed("info", e))?;
        Ok(DevSummary {
            dir: self.dir.clone(),
            removed_on_exit: !self.keep_dir,
            nodes: self
                .nodes
                .iter()
                .map(|n| DevNode {
                    name: n.name.clone(),
                    host: n.host.clone(),
                    leader: info.leader.is_some() && n.id == info.leader,
                })
                .collect(),
            join_addr: init.advertise_addr,
            worker_token: init.worker_token.expose_secret().to_string(),
            manager_token: manager_token.token.expose_secret().to_string(),
        })
    }

    /// Fails naming the first daemon that exited, and its log.
    fn check_alive(&mut self) -> Result<(), Failure> {
        for node in &mut self.nodes {
            if let Some(status) = node.child.try_wait()? {
                return Err(died(&node.name, status, &node.log()));
            }
        }
        Ok(())
    }

    /// SIGTERM to every daemon still running, then SIGKILL to those that
    /// have not stopped after [`STOP_TIMEOUT`].
    async fn stop(&mut self) {
        if self.nodes.is_empty() {
            return;
        }
        progress(format_args!(
            "Stopping {}",
            plural(self.nodes.len(), "daemon")
        ));
        for node in &self.nodes {
            if let Some(pid) = node.child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in &mut self.nodes {
            if tokio::time::timeout_at(deadline, node.child.wait())
                .await
                .is_err()
            {
                progress(format_args!(
                    "{} did not stop within {} s; killing it",
                    node.name,
                    STOP_TIMEOUT.as_secs()
                ));
                let _ = node.child.kill().await;
            }
        }
        if self.keep_dir {
            progress(format_args!(
                "State and logs kept in {}",
                self.dir.display()
            ));
        }
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
fn stop_signal() -> Result<impl Future<Output = ()>, Failure> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// `1 manager`, `2 managers`.
fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn died(name: &str, status: ExitStatus, log: &Path) -> Failure {
    Failure::new(
        anyhow!("{name}: the daemon exited early ({status})"),
        format!("see its log, {}", log.display()),
    )
}
