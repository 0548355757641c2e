//! `moat dev`: a local cluster of daemons on loopback, for trying moat out.
//!
//! Every node is a `moat daemon` child process of this one, with its own
//! state directory, control socket and log file under one directory. The
//! daemons run in their own process group, so a Ctrl-C in the terminal
//! reaches only this process, which then stops them all with SIGTERM (and
//! SIGKILL after 10 s).
//!
//! Once the cluster is up, a daemon that exits (killed to watch a
//! failover, say) is reported and the others keep running, as machines of
//! a real cluster would. `moat dev restart NAME`, from another terminal,
//! asks this process over a unix socket in the cluster's directory
//! (`dev.sock`, mode 0600) to start that node's daemon again.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::anyhow;
use moat_api::{
    Client, ClientError, Host, Info, InitRequest, InitResponse, JoinRequest, JoinResponse,
    JoinTokenRequest, JoinTokenResponse, NodeState, Role, SecretString, path,
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::args::{DevArgs, DevCommand, DevRestart};
use crate::client::block_on;
use crate::output::{Failure, progress};
use crate::render::{self, DevNode, DevSummary};

/// How long a daemon may take to answer on its control socket.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Every node listens on loopback, on a port the system picks.
const LISTEN_ADDR: &str = "127.0.0.1:0";
/// The socket `moat dev restart` talks to, in the cluster's directory.
const CONTROL_SOCKET: &str = "dev.sock";
/// Where a temporary cluster directory is made, and its name's prefix.
const TEMP_PREFIX: &str = "moat-dev-";
/// The longest request line `moat dev restart` may send.
const MAX_REQUEST: usize = 256;

pub(crate) fn run(args: &DevArgs) -> Result<(), Failure> {
    match &args.command {
        Some(DevCommand::Restart(restart)) => self::restart(restart),
        None => up(args),
    }
}

/// `moat dev`: starts the cluster and runs it until Ctrl-C.
fn up(args: &DevArgs) -> Result<(), Failure> {
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
            let temp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempdir()?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    let outcome = block_on(async {
        let mut cluster = Cluster {
            exe,
            dir: dir.clone(),
            keep_dir: args.dir.is_some(),
            metrics_port: args.metrics_port,
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
    /// The first node's metrics port, if metrics are on.
    metrics_port: Option<u16>,
    nodes: Vec<Node>,
}

/// One daemon.
struct Node {
    name: String,
    dir: PathBuf,
    host: Host,
    /// Where it serves metrics, if it does.
    metrics_addr: Option<String>,
    child: Child,
    /// When its daemon was started, last.
    started: Instant,
    /// Whether its exit was reported already.
    exit_reported: bool,
    /// Its id once it initialized or joined.
    id: Option<String>,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The daemon's process id, while it runs.
    fn pid(&self) -> Option<u32> {
        if self.exit_reported {
            None
        } else {
            self.child.id()
        }
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
        let control = self.listen()?;
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
        // From here on a dead daemon is news, not a failure: the others
        // go on as a real cluster's machines would.
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => self.report_exits()?,
                accepted = control.accept() => match accepted {
                    Ok((stream, _)) => self.serve(stream).await,
                    Err(e) => progress(format_args!("moat dev: {}: {e}", CONTROL_SOCKET)),
                },
            }
        }
    }

    /// Listens on the cluster directory's `dev.sock`, for `moat dev
    /// restart`; only this user may connect (the directory is 0700 when
    /// temporary, and the socket is 0600).
    fn listen(&self) -> Result<UnixListener, Failure> {
        let path = self.dir.join(CONTROL_SOCKET);
        let listener = UnixListener::bind(&path).map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context(format!("cannot listen on {}", path.display())),
                "give --dir a shorter path (a unix socket path has at most 107 bytes)",
            )
        })?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Answers one `moat dev restart` request: a line `restart NAME`,
    /// answered with a line `ok MESSAGE` or `error MESSAGE`.
    async fn serve(&mut self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let read = BufReader::new(read).take(MAX_REQUEST as u64);
        let request =
            tokio::time::timeout(Duration::from_secs(5), Box::pin(read).read_line(&mut line)).await;
        let answer = match request {
            Ok(Ok(_)) => match line.trim_end().strip_prefix("restart ") {
                Some(name) => match self.restart(name).await {
                    Ok(message) => format!("ok {message}"),
                    Err(message) => format!("error {message}"),
                },
                None => "error unknown request".to_string(),
            },
            _ => return,
        };
        let _ = write
            .write_all(format!("{}\n", answer.replace('\n', " ")).as_bytes())
            .await;
    }

    /// Starts node `name`'s daemon again, if it is not running, and waits
    /// until it answers.
    async fn restart(&mut self, name: &str) -> Result<String, String> {
        self.report_exits()
            .map_err(|_| "cannot check the daemons".to_string())?;
        let Some(i) = self.nodes.iter().position(|n| n.name == name) else {
            let names: Vec<_> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(format!(
                "no node named {name:?} in this cluster (its nodes: {})",
                names.join(", ")
            ));
        };
        if let Some(pid) = self.nodes[i].pid() {
            return Err(format!(
                "{name} is running (pid {pid}); stop it first (`kill {pid}`)"
            ));
        }
        let node = &self.nodes[i];
        let child = self
            .start(&node.name, &node.dir, node.metrics_addr.as_deref())
            .map_err(|p| p.to_string())?;
        let node = &mut self.nodes[i];
        node.child = child;
        node.started = Instant::now();
        node.exit_reported = false;
        progress(format_args!(
            "{name}: started again (pid {})",
            node.child.id().unwrap_or_default()
        ));
        self.wait_ready(i).await.map_err(|p| p.to_string())?;
        let node = &self.nodes[i];
        let pid = node.child.id().unwrap_or_default();
        match node.client().get::<Info>(path::INFO).await {
            // Autolock on (`moat update --autolock`): a restarted manager
            // waits for its key, as a real one does.
            Ok(info) if info.state == NodeState::Locked => Ok(format!(
                "{name} is running again (pid {pid}) and locked, as autolock is on: \
                 unlock it with `MOAT_HOST={} {} unlock`",
                node.host,
                moat_command(&self.exe)
            )),
            _ => Ok(format!(
                "{name} is running again (pid {pid}); it rejoins the cluster on its own"
            )),
        }
    }

    /// Starts `moat daemon` for a new node named `name`, logging to its
    /// directory.
    fn spawn(&mut self, name: String) -> Result<(), Failure> {
        let dir = self.dir.join(&name);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failure::new(e, format!("cannot create {}", dir.display())))?;
        let metrics_addr = self.metrics_port.map(|base| {
            let port = u32::from(base) + u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
            format!("127.0.0.1:{port}")
        });
        let child = self.start(&name, &dir, metrics_addr.as_deref())?;
        self.nodes.push(Node {
            host: Host::unix(dir.join("moat.sock")),
            name,
            dir,
            metrics_addr,
            child,
            started: Instant::now(),
            exit_reported: false,
            id: None,
        });
        Ok(())
    }

    /// Runs `moat daemon` for node `name` in `dir`, appending to its log.
    fn start(&self, name: &str, dir: &Path, metrics_addr: Option<&str>) -> Result<Child, Problem> {
        let log_path = dir.join("daemon.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Problem {
                error: anyhow::Error::new(e).context(format!("cannot open {}", log_path.display())),
                hint: "check the cluster directory's permissions".into(),
            })?;
        let mut command = Command::new(&self.exe);
        command
            .arg("daemon")
            .arg("--state-dir")
            .arg(dir)
            .arg("--control-socket")
            .arg(dir.join("moat.sock"))
            .arg("--hostname")
            .arg(name);
        if let Some(addr) = metrics_addr {
            command.arg("--metrics-addr").arg(addr);
        }
        command
            .env_remove("MOAT_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Problem {
                error: anyhow::Error::new(e)
                    .context(format!("cannot start {}", self.exe.display())),
                hint: "moat dev runs its own binary as `moat daemon`".into(),
            })
    }

    /// Waits until node `i` answers `GET /v1/info`.
    async fn wait_ready(&mut self, i: usize) -> Result<(), Problem> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let node = &mut self.nodes[i];
            if let Some(status) = node.child.try_wait()? {
                node.exit_reported = true;
                return Err(Problem {
                    error: anyhow!("{}: the daemon exited early ({status})", node.name),
                    hint: format!("see its log, {}", node.log().display()),
                });
            }
            match node.client().get::<Info>(path::INFO).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(Problem {
                        error: anyhow!(
                            "{}: the control socket {} did not answer within {} s: {e}",
                            node.name,
                            node.host.socket().display(),
                            READY_TIMEOUT.as_secs()
                        ),
                        hint: format!("see its log, {}", node.log().display()),
                    });
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
            moat: moat_command(&self.exe),
            restart_dir: self.keep_dir.then(|| self.dir.clone()),
            nodes: self
                .nodes
                .iter()
                .map(|n| DevNode {
                    name: n.name.clone(),
                    host: n.host.clone(),
                    pid: n.pid(),
                    metrics_addr: n.metrics_addr.clone(),
                    leader: info.leader.is_some() && n.id == info.leader,
                })
                .collect(),
            join_addr: init.advertise_addr,
            worker_token: init.worker_token.expose_secret().to_string(),
            manager_token: manager_token.token.expose_secret().to_string(),
        })
    }

    /// While the cluster forms: fails naming the first daemon that
    /// exited, and its log.
    fn check_alive(&mut self) -> Result<(), Failure> {
        for node in &mut self.nodes {
            if let Some(status) = node.child.try_wait()? {
                return Err(Failure::new(
                    anyhow!("{}: the daemon exited early ({status})", node.name),
                    format!("see its log, {}", node.log().display()),
                ));
            }
        }
        Ok(())
    }

    /// Once the cluster is up: says which daemons exited since last
    /// asked, how, and how to bring them back.
    fn report_exits(&mut self) -> Result<(), Failure> {
        let restart = match self.keep_dir {
            true => format!(" --dir {}", self.dir.display()),
            false => String::new(),
        };
        for node in &mut self.nodes {
            if node.exit_reported {
                continue;
            }
            if let Some(status) = node.child.try_wait()? {
                node.exit_reported = true;
                progress(format_args!(
                    "{}: the daemon {} after {}; the other nodes keep running. \
                     Its log: {}. Bring it back with `{} dev restart {}{restart}`",
                    node.name,
                    exit_wording(status),
                    crate::render::human_duration(node.started.elapsed()),
                    node.log().display(),
                    moat_command(&self.exe),
                    node.name,
                ));
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
        let _ = fs::remove_file(self.dir.join(CONTROL_SOCKET));
        if self.keep_dir {
            progress(format_args!(
                "State and logs kept in {}",
                self.dir.display()
            ));
        }
    }
}

/// Something that stopped a node from starting, with what to do about it.
struct Problem {
    error: anyhow::Error,
    hint: String,
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Self {
        Self {
            error: e.into(),
            hint: "see the output of `moat dev`".into(),
        }
    }
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        Failure::new(p.error, p.hint)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#} (hint: {})", self.error, self.hint)
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

/// How a daemon ended, in words: `stopped (exit status: 0)`, `was
/// killed (signal: 9 (SIGKILL))`, `failed (exit status: 1)`.
fn exit_wording(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if status.success() {
        format!("stopped ({status})")
    } else if status.signal().is_some() {
        format!("was killed ({status})")
    } else {
        format!("failed ({status})")
    }
}

/// How to run this binary from a shell: `moat` when that is what `moat`
/// on PATH is, else its full path.
fn moat_command(exe: &Path) -> String {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moat"))
            .find(|candidate| candidate.is_file())
    });
    let same = |a: &Path, b: &Path| match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match on_path {
        Some(found) if same(&found, exe) => "moat".to_string(),
        _ => exe.display().to_string(),
    }
}

/// `moat dev restart NAME`: asks the running `moat dev` to start NAME's
/// daemon again.
fn restart(args: &DevRestart) -> Result<(), Failure> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => running_cluster()?,
    };
    let socket = dir.join(CONTROL_SOCKET);
    let answer = block_on(async {
        let mut stream = UnixStream::connect(&socket).await.map_err(|e| {
            Failure::new(
                anyhow::Error::new(e)
                    .context(format!("no `moat dev` answers on {}", socket.display())),
                "is `moat dev` still running? Give the directory it printed with --dir",
            )
        })?;
        stream
            .write_all(format!("restart {}\n", args.name).as_bytes())
            .await?;
        let mut line = String::new();
        BufReader::new(stream.take(4096))
            .read_line(&mut line)
            .await?;
        Ok(line)
    })?;
    match answer.trim_end().split_once(' ') {
        Some(("ok", message)) => {
            progress(message);
            Ok(())
        }
        Some(("error", message)) => Err(Failure::with_hint(anyhow!("{message}"), None)),
        _ => Err(Failure::new(
            anyhow!("`moat dev` gave no answer"),
            "see the output of `moat dev` in its terminal",
        )),
    }
}

/// The directory of the one `moat dev` cluster that runs under the
/// temporary directory (its `dev.sock` answers).
fn running_cluster() -> Result<PathBuf, Failure> {
    let temp = std::env::temp_dir();
    let mut found = Vec::new();
    for entry in fs::read_dir(&temp)?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let socket = entry.path().join(CONTROL_SOCKET);
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            found.push(entry.path());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Failure::new(
            anyhow!("no `moat dev` cluster is running under {}", temp.display()),
            "start one with `moat dev`, or give its directory with --dir",
        )),
        _ => Err(Failure::new(
            anyhow!(
                "{} `moat dev` clusters are running: {}",
                found.len(),
                found
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "say which with --dir",
        )),
    }
}
