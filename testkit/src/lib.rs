//! The multi-process test harness: real `moat daemon` processes, each with
//! its own state directory and loopback port, driven only through the
//! `moat` command line — the way an operator would.
//!
//! moat-testkit owns process handling for tests: starting, killing (SIGKILL), stopping (SIGTERM) and
//! restarting daemons, running CLI commands against one of them, and
//! polling until the cluster reaches a state. Every daemon is killed when
//! the [`Harness`] is dropped, also when a test fails. It has no knowledge
//! of moat's internals: only the CLI's documented outputs. The scenarios
//! live in the `moat` package's integration tests (`cli/tests/cluster.rs`),
//! so that cargo builds the binary under test fresh before they run.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The result of one CLI command.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from_output(command: String, out: Output) -> Self {
        Self {
            command,
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics unless the command exited 0; returns its stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "`{}` failed (exit {}):\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Panics unless the command exited 1 and its stderr contains `needle`.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) -> &str {
        assert_eq!(
            self.code, 1,
            "`{}` should have failed with exit 1:\nstdout:\n{}\nstderr:\n{}",
            self.command, self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "`{}` failed, but stderr lacks {needle:?}:\n{}",
            self.command,
            self.stderr
        );
        &self.stderr
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| {
            panic!("`{}` printed no JSON ({e}):\n{}", self.command, self.stdout)
        })
    }
}

/// One daemon process.
#[derive(Debug)]
pub struct Daemon {
    /// Its name: host name and state directory name.
    pub name: String,
    /// Its state directory.
    pub state_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// `unix://…/moat.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.state_dir.join("moat.sock").display())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// How to start a daemon beyond the defaults (`moat daemon --state-dir
/// DIR/NAME --hostname NAME`, standard input `/dev/null`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Start<'a> {
    /// More arguments for `moat daemon`, e.g.
    /// `["--unlock-key-file", path]`.
    pub args: &'a [&'a str],
    /// Text written to the daemon's standard input through a pipe, which
    /// is then closed; e.g. the unlock key for `--unlock-key-fd 0`.
    pub stdin: Option<&'a str>,
}

/// Longest a `moat` command run by [`Harness::moat`] may take before its
/// test fails.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// A set of daemons in one temporary directory.
pub struct Harness {
    dir: tempfile::TempDir,
    moat: PathBuf,
    daemons: BTreeMap<String, Daemon>,
    /// The daemons' secrets directories (`--secrets-dir`), on /dev/shm,
    /// removed with the harness.
    shm: Option<tempfile::TempDir>,
    /// The daemons' `MOAT_LOG`.
    log_filter: String,
}

impl Harness {
    /// An empty harness running the `moat` binary at `moat`: from an
    /// integration test of the `moat` package, `env!("CARGO_BIN_EXE_moat")`,
    /// which cargo builds fresh before the tests run.
    pub fn new(moat: impl Into<PathBuf>) -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("moat-test-")
                .tempdir()
                .unwrap_or_else(|e| panic!("creating a temporary directory: {e}")),
            moat: moat.into(),
            daemons: BTreeMap::new(),
            shm: tempfile::Builder::new()
                .prefix("moat-test-")
                .tempdir_in("/dev/shm")
                .ok(),
            log_filter: "info,moat_node=debug".into(),
        }
    }

    /// Daemons started from now on log with `filter` (`MOAT_LOG`) instead
    /// of `info,moat_node=debug`: a load generator keeps the managers'
    /// logging out of what it measures.
    pub fn with_log_filter(mut self, filter: &str) -> Self {
        self.log_filter = filter.to_string();
        self
    }

    /// Where daemon `name` writes its tasks' secrets and configs (given as
    /// `--secrets-dir`), if the machine has /dev/shm.
    pub fn secrets_dir(&self, name: &str) -> Option<PathBuf> {
        self.shm.as_ref().map(|d| d.path().join(name))
    }

    /// The `moat` binary this harness runs.
    pub fn moat_binary(&self) -> &Path {
        &self.moat
    }

    /// The harness's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon called `name`.
    #[track_caller]
    pub fn daemon(&self, name: &str) -> &Daemon {
        self.daemons
            .get(name)
            .unwrap_or_else(|| panic!("no daemon {name}"))
    }

    /// Starts `moat daemon` as `name` (state dir `DIR/name`) and waits
    /// until its control socket answers.
    pub fn start(&mut self, name: &str) -> &Daemon {
        self.start_with(name, Start::default())
    }

    /// Like [`start`](Self::start), with more daemon arguments or input.
    pub fn start_with(&mut self, name: &str, start: Start<'_>) -> &Daemon {
        let state_dir = self.dir.path().join(name);
        let log = self.dir.path().join(format!("{name}.log"));
        let child = self.spawn(name, &state_dir, &log, start);
        self.daemons.insert(
            name.to_string(),
            Daemon {
                name: name.to_string(),
                state_dir,
                child: Some(child),
                log,
            },
        );
        self.wait_ready(name);
        self.daemon(name)
    }

    fn spawn(&self, name: &str, state_dir: &Path, log: &Path, start: Start<'_>) -> Child {
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let mut command = Command::new(&self.moat);
        command
            .arg("daemon")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--hostname")
            .arg(name)
            .args(start.args);
        if let Some(dir) = self.secrets_dir(name)
            && !start.args.contains(&"--secrets-dir")
        {
            command.arg("--secrets-dir").arg(dir);
        }
        let mut child = command
            .env("MOAT_LOG", &self.log_filter)
            .stdin(if start.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.moat.display()));
        if let (Some(input), Some(mut pipe)) = (start.stdin, child.stdin.take()) {
            use std::io::Write;
            // A daemon that never reads its input closes the pipe: not
            // this function's failure to report.
            let _ = pipe.write_all(input.as_bytes());
        }
        child
    }

    /// Runs `moat daemon` for `name` (state dir `DIR/name`, which must not
    /// be running) in the foreground and waits at most `limit` for it to
    /// exit, as one that refuses to start does. A daemon still running
    /// then is killed and reported with exit code -1. Its output is not
    /// added to `name`'s log.
    pub fn run_daemon(&self, name: &str, start: Start<'_>, limit: Duration) -> Run {
        if let Some(d) = self.daemons.get(name) {
            assert!(d.child.is_none(), "daemon {name} is running");
        }
        let state_dir = self.dir.path().join(name);
        let out_path = self.dir.path().join(format!("{name}.run.log"));
        let command = format!(
            "moat daemon --state-dir {} --hostname {name} {}",
            state_dir.display(),
            start.args.join(" ")
        );
        let out = File::create(&out_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", out_path.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("opening {}: {e}", out_path.display()));
        let mut child = Command::new(&self.moat)
            .arg("daemon")
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--hostname")
            .arg(name)
            .args(start.args)
            .env("MOAT_LOG", "info,moat_node=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("running {command}: {e}"));
        let deadline = Instant::now() + limit;
        let code = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = std::fs::read_to_string(&out_path).unwrap_or_default();
        if code == -1 {
            stderr.push_str(&format!("\n(still running after {limit:?}: killed)"));
        }
        Run {
            command,
            code,
            stdout: String::new(),
            stderr,
        }
    }

    fn wait_ready(&mut self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.moat(name, &["info", "--format", "json"]).code == 0 {
                return;
            }
            let daemon = self.daemons.get_mut(name).unwrap_or_else(|| unreachable!());
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "daemon {name} exited with {status} while starting:\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon {name} did not answer within 30 s:\n{}",
                self.daemon(name).log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Runs `moat ARGS…` against daemon `name`.
    pub fn moat(&self, name: &str, args: &[&str]) -> Run {
        let host = self.daemon(name).host();
        self.moat_with(&host, args, None)
    }

    /// Runs `moat ARGS…` against daemon `name` with `stdin` as input.
    pub fn moat_stdin(&self, name: &str, args: &[&str], stdin: &str) -> Run {
        let host = self.daemon(name).host();
        self.moat_with(&host, args, Some(stdin))
    }

    /// Runs `moat ARGS…` against daemon `name` with more environment
    /// variables (e.g. `MOAT_JOIN_TOKEN`) and, when given, `stdin`.
    pub fn moat_env(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Run {
        let host = self.daemon(name).host();
        self.moat_with_env(&host, args, env, stdin)
    }

    fn moat_with(&self, host: &str, args: &[&str], stdin: Option<&str>) -> Run {
        self.moat_with_env(host, args, &[], stdin)
    }

    fn moat_with_env(
        &self,
        host: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Run {
        use std::io::Write;
        let command = format!("MOAT_HOST={host} moat {}", args.join(" "));
        let mut child = Command::new(&self.moat)
            .args(args)
            .env("MOAT_HOST", host)
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {command}: {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let _ = pipe.write_all(input.as_bytes());
        }
        // A command that hangs fails its test (and the harness cleans up)
        // instead of hanging the suite.
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                buf
            })
        };
        let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + COMMAND_LIMIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = stderr.join().unwrap_or_default();
                    panic!(
                        "{command} did not finish within {} s; its stderr so far:\n{}",
                        COMMAND_LIMIT.as_secs(),
                        String::from_utf8_lossy(&err)
                    );
                }
                Err(e) => panic!("waiting for {command}: {e}"),
            }
        };
        let out = std::process::Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        };
        Run::from_output(command, out)
    }

    /// Starts `MOAT_JOIN_TOKEN=TOKEN moat join --listen-addr 127.0.0.1:0
    /// ADDR` against daemon `name` without waiting for it (for races and
    /// for killing a daemon mid-join); its output is piped.
    pub fn spawn_join(&self, name: &str, token: &str, addr: &str) -> Child {
        Command::new(&self.moat)
            .args(["join", "--listen-addr", "127.0.0.1:0", addr])
            .env("MOAT_HOST", self.daemon(name).host())
            .env(JOIN_TOKEN_ENV, token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running moat join: {e}"))
    }

    /// Kills daemon `name` with SIGKILL, as a crash would.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.daemons.get_mut(name).and_then(|d| d.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops daemon `name` with SIGTERM and waits for it to exit; returns
    /// its exit code.
    pub fn stop(&mut self, name: &str) -> Option<i32> {
        let mut child = self.daemons.get_mut(name).and_then(|d| d.child.take())?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon {name} did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a stopped or killed daemon again on the same state directory.
    pub fn restart(&mut self, name: &str) {
        self.restart_with(name, Start::default());
    }

    /// Like [`restart`](Self::restart), with more daemon arguments or
    /// input (those of an earlier start are not reused).
    pub fn restart_with(&mut self, name: &str, start: Start<'_>) {
        let (state_dir, log) = {
            let d = self.daemon(name);
            assert!(d.child.is_none(), "daemon {name} is still running");
            (d.state_dir.clone(), d.log.clone())
        };
        let child = self.spawn(name, &state_dir, &log, start);
        let daemon = self
            .daemons
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("checked above"));
        daemon.child = Some(child);
        self.wait_ready(name);
    }

    /// `moat init --listen-addr 127.0.0.1:0` on `name`; returns the address
    /// to join and the worker token.
    pub fn init(&self, name: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["init", "--listen-addr", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let out = self.moat(name, &args);
        let text = out.ok();
        let (token, addr) =
            join_command(text).unwrap_or_else(|| panic!("init printed no join command:\n{text}"));
        (addr, token)
    }

    /// Starts `managers` and `workers`, initializes the cluster on the
    /// first manager, joins the rest, and waits until every node is Ready;
    /// returns the address to join and the worker token.
    pub fn cluster(&mut self, managers: &[&str], workers: &[&str]) -> (String, String) {
        self.cluster_with(managers, workers, &[])
    }

    /// Like [`cluster`](Self::cluster), passing `init_args` to `moat init`
    /// (e.g. `["--autolock"]`).
    pub fn cluster_with(
        &mut self,
        managers: &[&str],
        workers: &[&str],
        init_args: &[&str],
    ) -> (String, String) {
        for name in managers.iter().chain(workers) {
            self.start(name);
        }
        let (first, others) = managers
            .split_first()
            .unwrap_or_else(|| panic!("a cluster needs a manager"));
        let (addr, worker_token) = self.init(first, init_args);
        let manager_token = self
            .moat(first, &["join-token", "-q", "manager"])
            .ok()
            .trim()
            .to_string();
        for m in others {
            self.join(m, &manager_token, &addr).ok();
        }
        for w in workers {
            self.join(w, &worker_token, &addr).ok();
        }
        let count = managers.len() + workers.len();
        self.wait_until("every node to be ready", Duration::from_secs(30), || {
            let nodes = self.nodes(first);
            nodes.len() == count && nodes.values().all(|n| n["status"] == "ready")
        });
        (addr, worker_token)
    }

    /// `MOAT_JOIN_TOKEN=TOKEN moat join --listen-addr 127.0.0.1:0 ADDR` on
    /// `name`, as the join command `moat init` prints.
    pub fn join(&self, name: &str, token: &str, addr: &str) -> Run {
        self.moat_env(
            name,
            &["join", "--listen-addr", "127.0.0.1:0", addr],
            &[(JOIN_TOKEN_ENV, token)],
            None,
        )
    }

    /// `moat join-token create ARGS…` on `name`: the new token's id and
    /// the token.
    pub fn create_token(&self, name: &str, args: &[&str]) -> (String, String) {
        let mut all = vec!["join-token", "create"];
        all.extend_from_slice(args);
        let out = self.moat(name, &all);
        let text = out.ok();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Created join token "))
            .unwrap_or_else(|| panic!("no id in:\n{text}"))
            .trim_end_matches('.')
            .to_string();
        let (token, _) =
            join_command(text).unwrap_or_else(|| panic!("no join command in:\n{text}"));
        (id, token)
    }

    /// `moat node ls --format json` on `name`, as (hostname → node) pairs.
    pub fn nodes(&self, name: &str) -> BTreeMap<String, serde_json::Value> {
        let v = self.moat(name, &["node", "ls", "--format", "json"]).json();
        v.as_array()
            .unwrap_or_else(|| panic!("node ls JSON is not an array: {v}"))
            .iter()
            .map(|n| {
                (
                    n["hostname"].as_str().unwrap_or_default().to_string(),
                    n.clone(),
                )
            })
            .collect()
    }

    /// Polls `check` every 100 ms until it holds, for at most `limit`.
    #[track_caller]
    pub fn wait_until(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !check() {
            if Instant::now() > deadline {
                let logs: String = self
                    .daemons
                    .values()
                    .map(|d| format!("--- {} ---\n{}\n", d.name, tail(&d.log(), 40)))
                    .collect();
                panic!("timed out after {limit:?} waiting for {what}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Harness {
    // A test harness talks to the person running the tests.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        for d in self.daemons.values_mut() {
            if let Some(mut child) = d.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Task processes outlive their daemons (as they must: see
        // node/src/tasks.rs); the test's end is theirs too.
        let killed = self.kill_tasks();
        if killed > 0 && !std::thread::panicking() {
            eprintln!("stopped {killed} task process(es) left running by the test");
        }
        // MOAT_TEST_KEEP=1 keeps a failed test's state directories and logs.
        if std::thread::panicking() && std::env::var_os("MOAT_TEST_KEEP").is_some() {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::Builder::new()
                    .prefix("moat-test-unused-")
                    .tempdir()
                    .unwrap_or_else(|e| panic!("creating a temporary directory: {e}")),
            );
            let kept = dir.keep();
            eprintln!("kept the failed test's directory: {}", kept.display());
        }
    }
}

impl Harness {
    /// The processes whose working directory is inside this harness's
    /// directory: the tasks of runtime `process` that its daemons started
    /// (each runs in its own directory under the node's state directory).
    pub fn task_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let root = self.dir.path();
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(root))
            })
            .collect()
    }

    /// Kills (SIGKILL) every process [`task_pids`](Self::task_pids) finds;
    /// returns how many.
    pub fn kill_tasks(&self) -> usize {
        let pids = self.task_pids();
        for pid in &pids {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        pids.len()
    }
}

/// The environment variable `moat join` reads its token from.
pub const JOIN_TOKEN_ENV: &str = "MOAT_JOIN_TOKEN";

/// The token and address of the join command in `text`, as `moat init`,
/// `moat join-token` and `moat join-token create` print it
/// (`MOAT_JOIN_TOKEN=TOKEN moat join ADDR`).
pub fn join_command(text: &str) -> Option<(String, String)> {
    text.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            [assignment, "moat", "join", addr] => assignment
                .strip_prefix(JOIN_TOKEN_ENV)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|token| (token.to_string(), addr.to_string())),
            _ => None,
        }
    })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub mod docker;

/// A name unlikely to be used by another test or test run:
/// `<prefix><pid>x<nanoseconds>x<counter>`.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{}x{nanos}x{n}", std::process::id())
}

/// Decoders for scanning files for secrets, written independently of the
/// product's own (so a bug there cannot hide a leak).
pub mod secrets {
    /// The bytes a base32 text (`0-9a-v`, unpadded, as in keys and tokens)
    /// stands for.
    pub fn base32_decode(text: &str) -> Vec<u8> {
        decode(b"0123456789abcdefghijklmnopqrstuv", text)
    }

    /// The bytes a standard base64 text stands for.
    pub fn base64_decode(text: &str) -> Vec<u8> {
        decode(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            text,
        )
    }

    /// Decodes `text` in a power-of-two `alphabet` (32 or 64 symbols),
    /// skipping whitespace and `=` padding.
    fn decode(alphabet: &[u8], text: &str) -> Vec<u8> {
        let width = alphabet.len().trailing_zeros();
        let (mut bits, mut acc, mut out) = (0u32, 0u32, Vec::new());
        for c in text
            .bytes()
            .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        {
            let v = alphabet
                .iter()
                .position(|&a| a == c)
                .unwrap_or_else(|| panic!("{c:?} is not in the alphabet"))
                as u32;
            acc = (acc << width) | v;
            bits += width;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    /// The secret field of an armored key or token (`PREFIX-1-…-SECRET-CHECK`:
    /// the field before the checksum) as text and as the bytes it encodes.
    pub fn secret_field(armored: &str) -> (String, Vec<u8>) {
        let parts: Vec<&str> = armored.split('-').collect();
        let field = parts[parts.len() - 2];
        (field.to_string(), base32_decode(field))
    }

    /// Whether `needle` (non-empty) occurs in `haystack`.
    pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Every file under `dir` (recursively) whose bytes contain `needle`.
    pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                found.extend(files_containing(&path, needle));
            } else if meta.is_file() && std::fs::read(&path).is_ok_and(|b| contains(&b, needle)) {
                found.push(path);
            }
        }
        found
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// RFC 4648 test vectors (base32 in moat's `0-9a-v` alphabet).
        #[test]
        fn decoders() {
            assert_eq!(base32_decode("cpnmuoj1e8"), b"foobar");
            assert_eq!(base32_decode("cpnmuog"), b"foob");
            assert_eq!(base64_decode("Zm9vYmFy"), b"foobar");
            assert_eq!(base64_decode("Zm9vYg=="), b"foob");
            assert_eq!(
                secret_field("MOATKEY-1-cpnmuoj1e8-abcdefgh"),
                ("cpnmuoj1e8".to_string(), b"foobar".to_vec())
            );
            assert!(contains(b"xxfoobar", b"oba") && !contains(b"abc", b""));
        }
    }
}
