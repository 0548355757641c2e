//! moat's replicated-store write benchmark.
//!
//! Writes N `Command::PutNode` commands through the Raft leader of a real
//! cluster — managers in this process, each with its own store directory
//! (real fsync) and a mutual-TLS transport on a loopback port — and prints
//! throughput and latency for every combination of:
//!
//! * 1 and 3 managers;
//! * the encrypted store (`OpenStore::create`/`open`, every log record and
//!   snapshot sealed with the DEK) and the same store with encryption off
//!   (`RecordCipher::danger_plaintext`, which exists only for this);
//! * 1 writer and 64 concurrent writers;
//! * in-process writes (through the leader's `moat_store::Proposer`, as a
//!   manager proposes: the writes waiting together are committed in one
//!   entry, decision D47) and, for the encrypted store, the same writes
//!   sent over a client connection ("moat gRPC"): each command as JSON in
//!   a unary gRPC call over one HTTP/2 connection to a small service on
//!   the leader, which proposes it the same way and answers once it is
//!   committed and applied — the same client hop etcd's `KV/Put` takes
//!   below (both without TLS on that hop);
//! * with `--audit`, also the encrypted store with every write wrapped in
//!   `Command::Audited` (the change and its audit record, a `node.label`
//!   event, committed in one raft entry), as moat's control API writes an
//!   operator's change.
//!
//! The runs of one (cluster size, writers) pair are interleaved — plaintext,
//! encrypted, audited in even rounds, the reverse in odd ones — and every
//! run starts from fresh directories and is warmed up before timing, so all
//! see the same machine conditions. The ratio columns are encrypted over
//! plaintext throughput (target: at least 95 %), audited over unaudited
//! encrypted throughput ("audit on/off"), and each moat row over etcd's
//! row of the same cluster size and writers ("/ etcd", when etcd ran).
//!
//! If an `etcd` binary is on `PATH` (or named by `MOAT_BENCH_ETCD`), the
//! same puts are then sent to a 1-member and a 3-member etcd cluster on
//! loopback over etcd's gRPC API, as a baseline. etcd runs without TLS.
//!
//! `cargo run --release -p moat-bench --bin store -- [--quick]
//! [--commands N] [--rounds R] [--audit] [--direct] [--no-etcd] [--dir DIR]`.
//! `--quick` writes 300 commands per run once (a smoke run; figures not
//! meaningful). `--direct` calls `Raft::client_write` for every write
//! instead of the proposer (one entry per write, the path before D47), to
//! compare the two.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Printing the table and its progress is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use moat_audit::{Action, Actor, Details, Event, Outcome, Text};
use moat_pki::{NodeId, OffsetDateTime};
use moat_store::Proposer;
use moat_store::model::{Command, NodeRecord, Response};
use tempfile::TempDir;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

#[path = "../cluster.rs"]
mod cluster;
use cluster::Pki;

const USAGE: &str = "usage: store [--quick] [--commands N] [--rounds R] [--audit] [--direct] [--no-etcd] [--dir DIR]";

/// Untimed writes before every timed run: connections are up, the leader
/// has replicated to its followers and the log files exist.
const WARM_UP: u32 = 128;

/// What to run.
struct Options {
    quick: bool,
    commands: u32,
    rounds: u32,
    audit: bool,
    /// `Raft::client_write` per write instead of the proposer.
    direct: bool,
    etcd: bool,
    dir: PathBuf,
}

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        quick: false,
        commands: 5_000,
        rounds: 2,
        audit: false,
        direct: false,
        etcd: true,
        dir: std::env::temp_dir(),
    };
    let (mut commands, mut rounds) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--commands" => {
                let v = value("--commands")?;
                commands = Some(v.parse().with_context(|| format!("--commands {v}"))?);
            }
            "--rounds" => {
                let v = value("--rounds")?;
                rounds = Some(v.parse().with_context(|| format!("--rounds {v}"))?);
            }
            "--dir" => opts.dir = PathBuf::from(value("--dir")?),
            "--audit" => opts.audit = true,
            "--direct" => opts.direct = true,
            "--no-etcd" => opts.etcd = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if opts.quick {
        (opts.commands, opts.rounds) = (300, 1);
    }
    opts.commands = commands.unwrap_or(opts.commands);
    opts.rounds = rounds.unwrap_or(opts.rounds);
    ensure!(opts.commands > 0, "--commands must be at least 1");
    ensure!(opts.rounds > 0, "--rounds must be at least 1");
    Ok(opts)
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    cluster::runtime()?.block_on(run(&opts))
}

async fn run(opts: &Options) -> Result<()> {
    let mut table = Table::default();
    let pki = Pki::generate(3)?;
    eprintln!(
        "{} commands per run, {} round(s), stores under {}",
        opts.commands,
        opts.rounds,
        opts.dir.display()
    );
    let modes: &[Mode] = if opts.audit {
        &[
            Mode::Plaintext,
            Mode::Encrypted,
            Mode::Client,
            Mode::Audited,
        ]
    } else {
        &[Mode::Plaintext, Mode::Encrypted, Mode::Client]
    };
    for size in [1, 3] {
        for writers in [1, 64] {
            let mut samples: Vec<Sample> = modes.iter().map(|_| Sample::default()).collect();
            for round in 0..opts.rounds {
                // Neighbours swap who goes first every round.
                let mut order: Vec<usize> = (0..modes.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for i in order {
                    let mode = modes[i];
                    eprintln!(
                        "moat: {size} manager(s), {}, {writers} writer(s), round {}/{}",
                        mode.label(),
                        round + 1,
                        opts.rounds
                    );
                    let writer = Writer::new(opts.direct);
                    let sample =
                        moat_run(&pki, &opts.dir, size, mode, writer, writers, opts.commands)
                            .await
                            .with_context(|| {
                                format!(
                                    "moat, {size} manager(s), {}, {writers} writer(s)",
                                    mode.label()
                                )
                            })?;
                    samples[i].merge(sample);
                }
            }
            let mut samples = samples.into_iter();
            let (plain, sealed) = (
                samples.next().unwrap_or_default(),
                samples.next().unwrap_or_default(),
            );
            let (plain_rate, sealed_rate) = (plain.rate(), sealed.rate());
            table.row("moat", size, "plaintext", writers, plain, None);
            let ratio = Ratio::EncPlain(sealed_rate / plain_rate);
            table.row("moat", size, "AES-256-GCM", writers, sealed, Some(ratio));
            if let Some(client) = samples.next() {
                table.row("moat gRPC", size, "AES-256-GCM", writers, client, None);
            }
            if let Some(audited) = samples.next() {
                let ratio = Ratio::AuditOnOff(audited.rate() / sealed_rate);
                table.row(
                    "moat+audit",
                    size,
                    "AES-256-GCM",
                    writers,
                    audited,
                    Some(ratio),
                );
            }
        }
    }

    let mut notes = Vec::new();
    if opts.etcd {
        match etcd_binary() {
            Ok((bin, version)) => {
                let label = format!("etcd {version}");
                for size in [1, 3] {
                    for writers in [1, 64] {
                        let mut sample = Sample::default();
                        for round in 0..opts.rounds {
                            eprintln!(
                                "etcd: {size} member(s), {writers} writer(s), round {}/{}",
                                round + 1,
                                opts.rounds
                            );
                            sample.merge(
                                etcd_run(&bin, &opts.dir, size, writers, opts.commands)
                                    .await
                                    .with_context(|| {
                                        format!("etcd, {size} member(s), {writers} writer(s)")
                                    })?,
                            );
                        }
                        table.row(&label, size, "none, no TLS", writers, sample, None);
                    }
                }
            }
            Err(e) => notes.push(format!("etcd baseline skipped: {e:#}")),
        }
    } else {
        notes.push("etcd baseline skipped: --no-etcd".to_string());
    }

    table.print(opts);
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Measurement

/// Latencies of acknowledged writes and the wall time they took, over one
/// or more runs.
#[derive(Default)]
struct Sample {
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Throughput of each merged run, writes/s.
    runs: Vec<f64>,
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.runs.push(other.rate());
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }

    /// The slowest and fastest run's throughput, as "min-max".
    fn spread(&self) -> String {
        let min = self.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.runs.iter().copied().fold(0.0, f64::max);
        if self.runs.len() < 2 {
            String::new()
        } else {
            format!("{min:.0}-{max:.0}")
        }
    }

    /// Acknowledged writes per second over all merged runs.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-th percentile latency in milliseconds (nearest rank).
    fn percentile_ms(&mut self, p: usize) -> f64 {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let rank = (n * p).div_ceil(100).clamp(1, n.max(1));
        self.latencies
            .get(rank - 1)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    }
}

/// Runs `op(i)` for every `i` in `range` from `writers` concurrent tasks,
/// each issuing its next write as soon as the previous one is acknowledged.
async fn drive<F, Fut>(writers: usize, range: Range<u32>, op: F) -> Result<Sample>
where
    F: Fn(u32) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicU32::new(range.start));
    let end = range.end;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for _ in 0..writers {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(range.len());
    for task in tasks {
        latencies.extend(task.await.context("a writer task panicked")??);
    }
    Ok(Sample {
        elapsed: start.elapsed(),
        latencies,
        runs: Vec::new(),
    })
}

/// `record` written as an operator's label change is: in one raft entry
/// with its audit record, recorded by `manager` at `time`.
fn audited(record: NodeRecord, manager: NodeId, time: i64) -> Result<Command> {
    let mut details = Details::new();
    details.insert("hostname", &record.hostname)?;
    let labels: Vec<String> = record
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    details.insert("labels_add", &labels.join(","))?;
    details.insert("request", "moat node update --label-add")?;
    let event = Event {
        node: manager,
        actor: Actor::local_user(1000),
        action: Action::NODE_LABEL,
        target: Text::new("target", &format!("node:{}", record.id))?,
        outcome: Outcome::Success,
        details,
    };
    Ok(Command::Audited {
        change: Box::new(Command::PutNode(record)),
        time,
        event,
    })
}

// ---------------------------------------------------------------------------
// moat

/// What a run's store is and what it is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Encryption off (`RecordCipher::danger_plaintext`), plain writes.
    Plaintext,
    /// The normal, encrypted store, plain writes.
    Encrypted,
    /// The encrypted store, plain writes sent over a gRPC client
    /// connection to the leader ([`ProposeService`]).
    Client,
    /// The encrypted store, every write wrapped in `Command::Audited`.
    Audited,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Plaintext => "plaintext",
            Mode::Encrypted => "encrypted",
            Mode::Client => "encrypted, over gRPC",
            Mode::Audited => "encrypted, audited",
        }
    }
}

/// How the leader is handed a write.
#[derive(Clone)]
enum Writer {
    /// Not started yet: the leader's [`Proposer`] (`direct: false`), or
    /// `Raft::client_write` per write.
    Unstarted { direct: bool },
    /// Through the leader's proposer, as a manager proposes.
    Proposer(Proposer),
    /// `Raft::client_write` on the leader's handle, one entry per write.
    Direct(moat_store::Raft),
}

impl Writer {
    fn new(direct: bool) -> Self {
        Writer::Unstarted { direct }
    }

    /// The writer for `raft`, the leader's handle.
    fn start(self, raft: moat_store::Raft) -> Self {
        match self {
            Writer::Unstarted { direct: true } => Writer::Direct(raft),
            _ => Writer::Proposer(Proposer::new(raft)),
        }
    }

    /// Writes `cmd` and fails unless it was committed and applied.
    async fn write(&self, cmd: Command) -> Result<()> {
        match self {
            Writer::Proposer(p) => {
                let w = p.write(cmd).await.map_err(|e| anyhow!("write: {e}"))?;
                ensure!(w.data == Response::Applied, "write refused: {:?}", w.data);
                Ok(())
            }
            Writer::Direct(raft) => cluster::write(raft, cmd).await,
            Writer::Unstarted { .. } => bail!("the writer was not started"),
        }
    }
}

/// One measured moat run: a fresh cluster of `size` managers, warm-up,
/// `commands` timed writes through the leader, shutdown.
async fn moat_run(
    pki: &Pki,
    base: &Path,
    size: usize,
    mode: Mode,
    writer: Writer,
    writers: usize,
    commands: u32,
) -> Result<Sample> {
    let root = tempfile::Builder::new()
        .prefix("moat-bench-store-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    let mut managers = Vec::with_capacity(size);
    let result = async {
        let leader = cluster::start(
            pki,
            root.path(),
            size,
            mode != Mode::Plaintext,
            &mut managers,
        )
        .await?;
        let writer = writer.start(managers[leader].raft.clone());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let writes = cluster::node_records(WARM_UP + commands, false)
            .into_iter()
            .map(|r| match mode {
                Mode::Audited => audited(r, managers[leader].id, now),
                Mode::Plaintext | Mode::Encrypted | Mode::Client => Ok(Command::PutNode(r)),
            })
            .collect::<Result<Vec<_>>>()?;
        if mode == Mode::Client {
            return client_run(writer, &writes, writers, commands).await;
        }
        let writes = Arc::new(writes);
        let write = move |i: u32| {
            let (writer, writes) = (writer.clone(), writes.clone());
            async move { writer.write(writes[i as usize].clone()).await }
        };
        drive(writers, 0..WARM_UP, write.clone()).await?;
        drive(writers, WARM_UP..WARM_UP + commands, write).await
    }
    .await;
    cluster::stop(managers, root).await?;
    result
}

/// The timed part of a [`Mode::Client`] run: a [`ProposeService`] in front
/// of the leader, one gRPC connection to it shared by every writer (as
/// etcd's run shares one), warm-up, then `commands` timed calls.
async fn client_run(
    writer: Writer,
    writes: &[Command],
    writers: usize,
    commands: u32,
) -> Result<Sample> {
    // Serialized before timing, as etcd's puts are.
    let requests = writes
        .iter()
        .map(|cmd| {
            Ok(ProposeRequest {
                command: serde_json::to_vec(cmd).context("serializing a command")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let requests = Arc::new(requests);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port for the client service")?;
    let addr = listener.local_addr().context("reading the client port")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProposeService { writer })
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let result = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .context("client endpoint")?
            .connect()
            .await
            .context("connecting to the leader's client service")?;
        let grpc = tonic::client::Grpc::new(channel);
        let propose = move |i: u32| {
            let (mut grpc, requests) = (grpc.clone(), requests.clone());
            async move {
                let req = requests[i as usize].clone();
                unary_call::<ProposeRequest, ProposeResponse>(&mut grpc, PROPOSE_PATH, req).await?;
                Ok(())
            }
        };
        drive(writers, 0..WARM_UP, propose.clone()).await?;
        drive(writers, WARM_UP..WARM_UP + commands, propose).await
    }
    .await;
    let _ = stop.send(());
    server
        .await
        .context("the client service panicked")?
        .context("the client service failed")?;
    result
}

/// The gRPC path of [`ProposeService`]'s one method.
const PROPOSE_PATH: &str = "/moat.bench.Store/Propose";

/// The leader's end of the client connection: a unary gRPC method that
/// decodes a JSON `Command` (moat's RPCs carry JSON), proposes it through
/// the leader's [`Proposer`] (or `Raft::client_write` with `--direct`) and
/// answers once it is committed and applied, as etcd answers a `KV/Put`.
#[derive(Clone)]
struct ProposeService {
    writer: Writer,
}

impl tonic::server::NamedService for ProposeService {
    const NAME: &'static str = "moat.bench.Store";
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for ProposeService {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let writer = self.writer.clone();
        Box::pin(async move {
            if req.uri().path() != PROPOSE_PATH {
                return Ok(tonic::Status::unimplemented(req.uri().path().to_string()).into_http());
            }
            let codec = tonic_prost::ProstCodec::<ProposeResponse, ProposeRequest>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(Propose(writer), req)
                .await)
        })
    }
}

/// One call of [`ProposeService`].
struct Propose(Writer);

impl tonic::server::UnaryService<ProposeRequest> for Propose {
    type Response = ProposeResponse;
    type Future = tonic::codegen::BoxFuture<tonic::Response<ProposeResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<ProposeRequest>) -> Self::Future {
        let writer = self.0.clone();
        Box::pin(async move {
            let cmd: Command = serde_json::from_slice(&request.into_inner().command)
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            writer
                .write(cmd)
                .await
                .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
            Ok(tonic::Response::new(ProposeResponse {}))
        })
    }
}

/// A command for [`ProposeService`]: its JSON.
#[derive(Clone, PartialEq, prost::Message)]
struct ProposeRequest {
    #[prost(bytes = "vec", tag = "1")]
    command: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProposeResponse {}

// ---------------------------------------------------------------------------
// etcd

/// The etcd binary to use and its version.
fn etcd_binary() -> Result<(PathBuf, String)> {
    let bin = std::env::var_os("MOAT_BENCH_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"));
    let out = Process::new(&bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install it with `apt-get install etcd-server`, or set MOAT_BENCH_ETCD)",
                bin.display()
            )
        })?;
    ensure!(
        out.status.success(),
        "{} --version failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "(unknown version)".into());
    Ok((bin, version))
}

/// Running etcd members; dropping it kills them and removes their data.
struct EtcdCluster {
    children: Vec<Child>,
    clients: Vec<SocketAddr>,
    dir: TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl EtcdCluster {
    fn start(bin: &Path, base: &Path, size: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("moat-bench-etcd-")
            .tempdir_in(base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        // Reserve 2 ports per member, then release them for etcd to bind.
        let ports = (0..2 * size)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()
            .context("reserving loopback ports")?;
        let addrs = ports
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<Vec<_>>>()
            .context("reading reserved ports")?;
        drop(ports);
        let (clients, peers) = addrs.split_at(size);
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            children: Vec::with_capacity(size),
            clients: clients.to_vec(),
            dir,
        };
        for (i, (client, peer)) in clients.iter().zip(peers).enumerate() {
            let log_path = cluster.log_path(i);
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let log2 = log
                .try_clone()
                .with_context(|| format!("duplicating {}", log_path.display()))?;
            let child = Process::new(bin)
                .arg(format!("--name=m{i}"))
                .arg(format!(
                    "--data-dir={}",
                    cluster.dir.path().join(format!("m{i}")).display()
                ))
                .arg(format!("--listen-client-urls=http://{client}"))
                .arg(format!("--advertise-client-urls=http://{client}"))
                .arg(format!("--listen-peer-urls=http://{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=moat-bench")
                .arg("--logger=zap")
                .arg("--log-outputs=stderr")
                .arg("--log-level=warn")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    fn log_path(&self, member: usize) -> PathBuf {
        self.dir.path().join(format!("m{member}.log"))
    }

    /// Fails if a member exited, with the end of its log.
    fn check_alive(&mut self) -> Result<()> {
        for i in 0..self.children.len() {
            let status = self.children[i]
                .try_wait()
                .context("checking an etcd member")?;
            if let Some(status) = status {
                let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!("etcd member m{i} exited ({status}):\n{}", tail.join("\n"));
            }
        }
        Ok(())
    }

    /// Waits until a member reports itself leader and returns a gRPC
    /// channel to it.
    async fn leader(&mut self) -> Result<Channel> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            self.check_alive()?;
            for addr in self.clients.clone() {
                let Ok(channel) = Endpoint::from_shared(format!("http://{addr}"))
                    .context("etcd endpoint")?
                    .connect()
                    .await
                else {
                    continue;
                };
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                let Ok(status) = unary_call::<StatusRequest, StatusResponse>(
                    &mut grpc,
                    "/etcdserverpb.Maintenance/Status",
                    StatusRequest {},
                )
                .await
                else {
                    continue;
                };
                let me = status.header.map(|h| h.member_id);
                if status.leader != 0 && Some(status.leader) == me {
                    return Ok(channel);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.check_alive()?;
        bail!("no etcd leader within 30 s")
    }
}

/// One measured etcd run: a fresh cluster of `size` members, warm-up,
/// `commands` timed puts through the leader, shutdown.
async fn etcd_run(
    bin: &Path,
    base: &Path,
    size: usize,
    writers: usize,
    commands: u32,
) -> Result<Sample> {
    let mut cluster = EtcdCluster::start(bin, base, size)?;
    let channel = cluster.leader().await?;
    // The same records, serialized as moat's API would show them.
    let puts = cluster::node_records(WARM_UP + commands, false)
        .iter()
        .map(|r| {
            Ok(PutRequest {
                key: format!("/moat/nodes/{}", r.id).into_bytes(),
                value: serde_json::to_vec(r).context("serializing a record")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let puts = Arc::new(puts);
    let grpc = tonic::client::Grpc::new(channel);
    let put = move |i: u32| {
        let (mut grpc, puts) = (grpc.clone(), puts.clone());
        async move {
            let req = puts[i as usize].clone();
            unary_call::<PutRequest, PutResponse>(&mut grpc, "/etcdserverpb.KV/Put", req).await?;
            Ok(())
        }
    };
    drive(writers, 0..WARM_UP, put.clone()).await?;
    let sample = drive(writers, WARM_UP..WARM_UP + commands, put).await;
    cluster.check_alive()?;
    drop(cluster);
    sample
}

/// One unary gRPC call (etcd's, or [`ProposeService`]'s).
async fn unary_call<Req, Resp>(
    grpc: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    request: Req,
) -> Result<Resp>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready()
        .await
        .map_err(|e| anyhow!("gRPC connection: {e}"))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let resp = grpc
        .unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(path),
            codec,
        )
        .await
        .map_err(|e| anyhow!("{path}: {e}"))?;
    Ok(resp.into_inner())
}

// The few etcd v3 API messages used (etcdserverpb, rpc.proto), written out
// by hand so the benchmark needs no protoc; fields not listed are skipped.

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    member_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

// ---------------------------------------------------------------------------
// Output

struct Row {
    system: String,
    nodes: usize,
    encryption: &'static str,
    writers: usize,
    sample: Sample,
    ratio: Option<Ratio>,
}

/// A row's throughput over another row's of the same configuration.
#[derive(Clone, Copy)]
enum Ratio {
    /// Encrypted over plaintext.
    EncPlain(f64),
    /// Audited over unaudited (both encrypted).
    AuditOnOff(f64),
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn row(
        &mut self,
        system: &str,
        nodes: usize,
        encryption: &'static str,
        writers: usize,
        sample: Sample,
        ratio: Option<Ratio>,
    ) {
        self.rows.push(Row {
            system: system.to_string(),
            nodes,
            encryption,
            writers,
            sample,
            ratio,
        });
    }

    fn print(&mut self, opts: &Options) {
        // The audit column only when audited rows were measured.
        let audit_column = |text: &str| {
            if opts.audit {
                format!(" {text:>12}")
            } else {
                String::new()
            }
        };
        let percent = |r: f64| format!("{:.1}%", 100.0 * r);
        // etcd's throughput per (size, writers), for the "/ etcd" column.
        let etcd: Vec<(usize, usize, f64)> = self
            .rows
            .iter()
            .filter(|r| r.system.starts_with("etcd"))
            .map(|r| (r.nodes, r.writers, r.sample.rate()))
            .collect();
        let versus = |row: &Row| {
            etcd.iter()
                .find(|(n, w, _)| *n == row.nodes && *w == row.writers)
                .filter(|_| row.system.starts_with("moat"))
                .map(|(_, _, rate)| format!("{:.2}x", row.sample.rate() / rate))
                .unwrap_or_default()
        };
        println!();
        println!(
            "{:<12} {:>5} {:<14} {:>7} {:>9} {:>12} {:>8} {:>8} {:>12} {:>7}{}",
            "system",
            "nodes",
            "encryption",
            "writers",
            "writes/s",
            "runs min-max",
            "p50 ms",
            "p99 ms",
            "enc / plain",
            "/ etcd",
            audit_column("audit on/off")
        );
        for row in &mut self.rows {
            let (enc, audit) = match row.ratio {
                None => (String::new(), String::new()),
                Some(Ratio::EncPlain(r)) => (percent(r), String::new()),
                Some(Ratio::AuditOnOff(r)) => (String::new(), percent(r)),
            };
            let vs_etcd = versus(row);
            println!(
                "{:<12} {:>5} {:<14} {:>7} {:>9.0} {:>12} {:>8.2} {:>8.2} {:>12} {:>7}{}",
                row.system,
                row.nodes,
                row.encryption,
                row.writers,
                row.sample.rate(),
                row.sample.spread(),
                row.sample.percentile_ms(50),
                row.sample.percentile_ms(99),
                enc,
                vs_etcd,
                audit_column(&audit)
            );
        }
        println!(
            "{} commands per run x {} run(s) per row, each after {WARM_UP} untimed warm-up writes; \
             writes/s and latencies over all runs of a row; \
             enc / plain = encrypted over plaintext throughput (target >= 95%); \
             / etcd = throughput over etcd's with the same cluster size and writers",
            opts.commands, opts.rounds
        );
        let path = if opts.direct {
            "Raft::client_write on the leader's handle (--direct: one entry per write)"
        } else {
            "the leader's Proposer (writes waiting together share one entry, D47)"
        };
        println!(
            "moat: {path}, in process; moat gRPC: the same writes as JSON in unary gRPC calls \
             over one HTTP/2 connection to the leader, no TLS on that hop (like etcd's KV/Put \
             here); peers talk mutual TLS 1.3"
        );
        if opts.audit {
            println!(
                "moat+audit: every write is Command::Audited (the PutNode and its node.label \
                 audit record in one raft entry); audit on/off = its throughput over \
                 AES-256-GCM's without audit"
            );
        }
        if opts.quick {
            println!("(--quick: short runs, figures are only a smoke test)");
        }
    }
}
