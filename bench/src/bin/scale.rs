//! `bench/scale`: how many workers a moat cluster holds.
//!
//! Starts a real cluster of `moat daemon` manager processes (their own
//! state directories, fsync, mutual TLS on loopback ports, metrics on),
//! then joins N simulated workers to it from child processes of this
//! program, many per process. Each simulated worker is moat-node's own
//! daemon code run in-process ([`moat_node::InProcessNode`]): its own key,
//! the real join (pinned CA, CSR, token), its own certificate and its own
//! mutual-TLS sessions, the agent's heartbeats and renewals and the task
//! loop, exactly as in a `moat daemon` worker. One real `moat daemon`
//! worker process joins too, for its memory.
//!
//! It reports the time to join all N, the managers' CPU and RSS (max over
//! the run), heartbeat and renewal round trips (p50/p99, as the workers'
//! agents saw them), renewals and Raft writes per second, `moat node ls`
//! latency at N nodes, snapshot and audit-log growth per hour, and whether
//! any node was ever marked Down while its worker was running. With
//! `--json` the last line of output is one JSON object.
//!
//! usage: scale [--workers N] [--managers M] [--cert-expiry 5m]
//!              [--duration S] [--per-process P] [--json]
//!
//! Run it through `scripts/bench-scale` (release build, open-files limit).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use moat_node::{AgentProbe, InProcessNode, LatencyHistogram};
use moat_testkit::{Harness, Start};
use serde_json::{Value, json};

/// The benchmark's command line.
#[derive(Parser, Debug)]
#[command(about = "Joins N simulated workers to a real moat cluster and measures it")]
struct Args {
    /// Simulated workers to join.
    #[arg(long, default_value_t = 10_000)]
    workers: usize,
    /// Manager daemons (processes).
    #[arg(long, default_value_t = 3)]
    managers: usize,
    /// Node certificate lifetime (`moat init --cert-expiry`).
    #[arg(long, default_value = "5m")]
    cert_expiry: String,
    /// Seconds to run once every worker is Ready.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Simulated workers per child process.
    #[arg(long, default_value_t = 2_500)]
    per_process: usize,
    /// Joins in flight in all (split between the child processes). A
    /// manager takes at most 8 connections without a certificate from one
    /// source address at once, and every simulated worker comes from
    /// 127.0.0.1: more would be refused and retried.
    #[arg(long, default_value_t = 8)]
    join_concurrency: usize,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Exit 1 unless every worker joined and was Ready, none was marked
    /// Down wrongly or faulted, and `node ls` never failed (CI's pass).
    #[arg(long)]
    strict: bool,
    /// The `moat` binary (default: next to this program).
    #[arg(long)]
    moat: Option<PathBuf>,
    /// Child mode: host `--count` workers (internal).
    #[arg(long, hide = true)]
    host: bool,
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    offset: usize,
    #[arg(long, hide = true, default_value = "")]
    token: String,
    #[arg(long, hide = true, default_value = "")]
    manager: String,
    #[arg(long, hide = true)]
    dir: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.host {
        return host(&args);
    }
    ensure!(args.workers > 0, "--workers must be at least 1");
    ensure!(args.managers > 0, "--managers must be at least 1");
    ensure!(args.per_process > 0, "--per-process must be at least 1");
    let report = run(&args)?;
    print_report(&report, args.json);
    if args.strict {
        let mut wrong = Vec::new();
        if report.joined < report.workers {
            wrong.push(format!(
                "{} of {} workers joined",
                report.joined, report.workers
            ));
        }
        if report.ready < report.joined {
            wrong.push(format!(
                "{} of {} workers Ready",
                report.ready, report.joined
            ));
        }
        if report.false_down > 0 {
            wrong.push(format!("{} workers wrongly marked Down", report.false_down));
        }
        if report.faulted > 0 {
            wrong.push(format!("{} workers faulted", report.faulted));
        }
        if !report.node_ls_failures.is_empty() {
            wrong.push(format!(
                "`node ls` failed {} times",
                report.node_ls_failures.len()
            ));
        }
        ensure!(wrong.is_empty(), "scale --strict: {}", wrong.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Child process: many in-process workers.
// ---------------------------------------------------------------------

/// Joins `--count` workers, reports progress as JSON lines on standard
/// output, runs them until standard input says `stop` (or closes), then
/// prints what their agents saw.
fn host(args: &Args) -> Result<()> {
    let dir = args.dir.clone().context("--dir is required with --host")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let probe = Arc::new(AgentProbe::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(args.join_concurrency.max(1)));
        let started = Instant::now();
        let mut joins = tokio::task::JoinSet::new();
        for i in 0..args.count {
            let n = args.offset + i;
            let (probe, gate) = (probe.clone(), gate.clone());
            let (token, manager) = (args.token.clone(), args.manager.clone());
            let state = dir.join(format!("w{n}"));
            joins.spawn(async move {
                let _permit = gate.acquire_owned().await;
                // Its own address in 127.0.0.0/8, as a real worker has
                // its own: a manager's per-source connection limits see
                // 10,000 sources, not one.
                let source = std::net::Ipv4Addr::new(
                    127,
                    1 + (n / 62_500) as u8,
                    (n / 250 % 250) as u8,
                    (n % 250 + 1) as u8,
                );
                let node = InProcessNode::with_source(
                    &state,
                    &format!("sim-{n}"),
                    Some(probe),
                    Some(source.into()),
                )
                .map_err(|e| e.to_string())?;
                // A refused join (a busy leader's timeout) is retried: the
                // time to join all counts it.
                let mut last = String::new();
                for _ in 0..5 {
                    match node.join(&token, &manager).await {
                        Ok(()) => return Ok(node),
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(last)
            });
        }
        let mut nodes = Vec::with_capacity(args.count);
        let mut errors: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                next = joins.join_next() => match next {
                    Some(Ok(Ok(node))) => nodes.push(node),
                    Some(Ok(Err(e))) => errors.push(e),
                    Some(Err(e)) => errors.push(format!("join task: {e}")),
                    None => break,
                },
                _ = tick.tick() => emit(&json!({"joined": nodes.len(), "failed": errors.len()})),
            }
        }
        errors.truncate(5);
        let mut ids = Vec::with_capacity(nodes.len());
        for node in &nodes {
            ids.extend(node.node_id().await);
        }
        emit(&json!({
            "done": true,
            "ids": ids,
            "joined": nodes.len(),
            "failed": args.count - nodes.len(),
            "join_s": started.elapsed().as_secs_f64(),
            "errors": errors,
        }));
        // Until the parent says stop.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
        let _ = rx.await;
        let mut faulted = 0usize;
        for node in &nodes {
            if node.fault().await.is_some() {
                faulted += 1;
            }
        }
        emit(&json!({
            "final": true,
            "heartbeats": sparse(&probe.heartbeats),
            "renewals": sparse(&probe.renewals),
            "heartbeat_failures": probe.heartbeat_failures.load(Ordering::Relaxed),
            "renewal_failures": probe.renewal_failures.load(Ordering::Relaxed),
            "faulted": faulted,
        }));
        Ok(())
    })
}

/// One JSON line on standard output.
fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// A histogram as `[[ms, count], …]` for its non-empty buckets.
fn sparse(h: &LatencyHistogram) -> Value {
    Value::Array(
        h.counts()
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(ms, c)| json!([ms, c]))
            .collect(),
    )
}

// ---------------------------------------------------------------------
// Parent: the cluster, the children, the measurements.
// ---------------------------------------------------------------------

/// What one run measured.
#[derive(Debug, Default)]
struct Report {
    workers: usize,
    managers: usize,
    cert_expiry: String,
    duration_s: u64,
    joined: usize,
    ready: usize,
    join_s: f64,
    ready_s: f64,
    join_errors: Vec<String>,
    heartbeats: u64,
    heartbeat_p50_ms: u64,
    heartbeat_p99_ms: u64,
    heartbeat_failures: u64,
    renewals: u64,
    renewals_per_s: f64,
    renew_p50_ms: u64,
    renew_p99_ms: u64,
    renewal_failures: u64,
    faulted: u64,
    raft_writes_per_s: f64,
    manager_rss_mb_max: f64,
    manager_cpu_pct_max: f64,
    manager_cpu_pct_mean: f64,
    host_rss_mb_max: f64,
    worker_daemon_rss_mb: f64,
    node_ls_ms: f64,
    node_ls_ms_p90: f64,
    node_ls_ms_max: f64,
    /// The three slowest `node ls` calls: seconds into the steady run,
    /// and milliseconds (to line them up with snapshots and renewals).
    node_ls_slowest: Vec<(f64, f64)>,
    snapshot_bytes_start: f64,
    snapshot_bytes_end: f64,
    snapshot_growth_per_hour: f64,
    audit_records_start: f64,
    audit_records_end: f64,
    audit_growth_per_hour: f64,
    false_down: usize,
    false_down_nodes: Vec<String>,
    /// `moat node ls` calls that failed, and why.
    node_ls_failures: Vec<String>,
    /// Raft terms that began during the steady run (elections).
    elections: f64,
}

/// A child process hosting workers.
struct Host {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// A line from a child, or its end.
enum HostEvent {
    Line(usize, Value),
    Closed(usize),
}

fn run(args: &Args) -> Result<Report> {
    let moat = match &args.moat {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("moat"),
    };
    ensure!(
        moat.is_file(),
        "no moat binary at {}: build it with `cargo build --release -p moat` (scripts/bench-scale does) or give --moat",
        moat.display()
    );
    let mut report = Report {
        workers: args.workers,
        managers: args.managers,
        cert_expiry: args.cert_expiry.clone(),
        duration_s: args.duration,
        ..Report::default()
    };
    let mut h = Harness::new(&moat).with_log_filter("warn");
    // Managers with metrics.
    let names: Vec<String> = (1..=args.managers).map(|i| format!("m{i}")).collect();
    let mut metrics = Vec::new();
    for name in &names {
        let addr = free_port().context("a port for metrics")?;
        h.start_with(
            name,
            Start {
                args: &["--metrics-addr", &addr],
                stdin: None,
            },
        );
        metrics.push(addr);
    }
    let (addr, token) = h.init(&names[0], &["--cert-expiry", &args.cert_expiry]);
    let manager_token = h
        .moat(&names[0], &["join-token", "-q", "manager"])
        .ok()
        .trim()
        .to_string();
    for name in &names[1..] {
        h.join(name, &manager_token, &addr).ok();
    }
    let manager_pids: Vec<u32> = names
        .iter()
        .map(|n| h.daemon(n).pid().context("manager pid"))
        .collect::<Result<_>>()?;
    note(&format!(
        "scale: {} managers up; joining {} workers from {} processes",
        args.managers,
        args.workers,
        args.workers.div_ceil(args.per_process)
    ));

    // Resource sampling for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let pids = manager_pids.clone();
        std::thread::spawn(move || sample(&pids, &stop))
    };

    // Children.
    let work = h.dir().join("sim");
    std::fs::create_dir_all(&work).context("the workers' directory")?;
    let exe = std::env::current_exe().context("locating this program")?;
    let (tx, rx) = mpsc::channel::<HostEvent>();
    let mut hosts = Vec::new();
    let mut offset = 0;
    let processes = args.workers.div_ceil(args.per_process);
    let per_host_joins = (args.join_concurrency / processes).max(1);
    let started = Instant::now();
    while offset < args.workers {
        let count = args.per_process.min(args.workers - offset);
        let mut child = Command::new(&exe)
            .args(["--host", "--count", &count.to_string()])
            .args(["--offset", &offset.to_string(), "--token", &token])
            .args(["--manager", &addr])
            .args(["--join-concurrency", &per_host_joins.to_string()])
            .arg("--dir")
            .arg(&work)
            .env("MOAT_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker host")?;
        let stdout = child.stdout.take().context("worker host output")?;
        let stdin = child.stdin.take();
        let (tx, i) = (tx.clone(), hosts.len());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(HostEvent::Line(i, v));
                }
            }
            let _ = tx.send(HostEvent::Closed(i));
        });
        hosts.push(Host { child, stdin });
        offset += count;
    }
    drop(tx);
    let host_pids: Vec<u32> = hosts.iter().map(|x| x.child.id()).collect();

    // Joins.
    // The workers that joined and run until the end: only these can be
    // wrongly marked Down.
    let mut alive: BTreeSet<String> = BTreeSet::new();
    let mut done = vec![false; hosts.len()];
    let mut joined = vec![0usize; hosts.len()];
    let mut last_note = Instant::now();
    while !done.iter().all(|d| *d) {
        match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(HostEvent::Line(i, v)) => {
                joined[i] = v["joined"].as_u64().unwrap_or(0) as usize;
                if v["done"] == true {
                    done[i] = true;
                    for id in v["ids"].as_array().into_iter().flatten() {
                        alive.insert(id.as_str().unwrap_or_default().to_string());
                    }
                    report.join_s = report.join_s.max(v["join_s"].as_f64().unwrap_or(0.0));
                    for e in v["errors"].as_array().into_iter().flatten() {
                        report
                            .join_errors
                            .push(e.as_str().unwrap_or_default().into());
                    }
                }
                if last_note.elapsed() >= Duration::from_secs(10) {
                    note(&format!(
                        "scale: {} of {} joined after {:.0} s",
                        joined.iter().sum::<usize>(),
                        args.workers,
                        started.elapsed().as_secs_f64()
                    ));
                    last_note = Instant::now();
                }
            }
            Ok(HostEvent::Closed(i)) if !done[i] => bail!("worker host {i} exited while joining"),
            Ok(HostEvent::Closed(_)) => {}
            Err(_) => bail!("no word from the worker hosts for 10 minutes"),
        }
    }
    report.joined = joined.iter().sum();
    note(&format!(
        "scale: {} joined in {:.1} s ({} failed)",
        report.joined,
        report.join_s,
        args.workers - report.joined
    ));

    managers_alive(&h, &names, &manager_pids)?;

    // One real worker daemon, for its memory.
    h.start("wd");
    h.join("wd", &token, &addr).ok();
    let wd_pid = h.daemon("wd").pid();

    // Ready.
    let ready_deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let nodes = match node_ls(&h, &names[0]) {
            Ok((nodes, _)) => nodes,
            Err(e) => {
                report.node_ls_failures.push(e.to_string());
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        report.ready = alive
            .iter()
            .filter(|id| nodes.get(*id).copied() == Some(true))
            .count();
        if report.ready == alive.len() {
            break;
        }
        if Instant::now() > ready_deadline {
            note(&format!(
                "scale: only {} of {} workers Ready after 300 s",
                report.ready,
                alive.len()
            ));
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    report.ready_s = started.elapsed().as_secs_f64();
    note(&format!(
        "scale: {} workers Ready after {:.1} s; running {} s",
        report.ready, report.ready_s, args.duration
    ));

    // Steady state.
    // The leader's metrics; during an election nobody leads, so ask for
    // up to 30 s, and say what the managers logged if it stays so.
    let leader_metrics = || -> Result<BTreeMap<String, f64>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            for m in &metrics {
                match scrape(m) {
                    Ok(values) if values.get("moat_raft_is_leader").copied() == Some(1.0) => {
                        return Ok(values);
                    }
                    Ok(_) => {}
                    Err(e) => last = format!("{e:#}"),
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let logs: Vec<String> = names
            .iter()
            .map(|n| {
                let log = h.daemon(n).log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {n} ---\n{}", tail.join("\n"))
            })
            .collect();
        Err(anyhow!(
            "no manager says it leads for 30 s (last scrape error: {last:?}); the managers' logs end:\n{}",
            logs.join("\n")
        ))
    };
    let first = leader_metrics()?;
    let steady = Instant::now();
    let mut seen_ready: BTreeSet<String> = BTreeSet::new();
    let mut down: BTreeSet<String> = BTreeSet::new();
    let mut ls_times = Vec::new();
    while steady.elapsed() < Duration::from_secs(args.duration) {
        let (nodes, took) = match node_ls(&h, &names[0]) {
            Ok(answer) => answer,
            Err(e) => {
                report.node_ls_failures.push(e.to_string());
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        ls_times.push((steady.elapsed().as_secs_f64(), took));
        for (id, ready) in nodes {
            if !alive.contains(&id) {
                continue;
            }
            if ready {
                seen_ready.insert(id);
            } else if seen_ready.contains(&id) {
                down.insert(id);
            }
        }
        let left = Duration::from_secs(args.duration).saturating_sub(steady.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(5)));
    }
    let elapsed = steady.elapsed().as_secs_f64();
    managers_alive(&h, &names, &manager_pids)?;
    let last = leader_metrics()?;
    let per_hour = |k: &str| {
        let (a, b) = (
            first.get(k).copied().unwrap_or(0.0),
            last.get(k).copied().unwrap_or(0.0),
        );
        (a, b, (b - a) / elapsed * 3600.0)
    };
    let writes = per_hour("moat_raft_last_log_index");
    report.elections = per_hour("moat_raft_term").2 / 3600.0 * elapsed;
    report.raft_writes_per_s = writes.2 / 3600.0;
    (
        report.snapshot_bytes_start,
        report.snapshot_bytes_end,
        report.snapshot_growth_per_hour,
    ) = per_hour("moat_snapshot_bytes");
    (
        report.audit_records_start,
        report.audit_records_end,
        report.audit_growth_per_hour,
    ) = per_hour("moat_audit_records");
    ls_times.sort_by(|a, b| a.1.total_cmp(&b.1));
    let ls_at = |q: f64| {
        let i = ((ls_times.len() as f64 * q) as usize).min(ls_times.len().saturating_sub(1));
        ls_times.get(i).map_or(0.0, |s| s.1)
    };
    report.node_ls_ms = ls_at(0.5);
    report.node_ls_ms_p90 = ls_at(0.9);
    report.node_ls_ms_max = ls_times.last().map_or(0.0, |s| s.1);
    report.node_ls_slowest = ls_times.iter().rev().take(3).copied().collect();
    report.false_down = down.len();
    report.false_down_nodes = down.into_iter().take(10).collect();
    report.worker_daemon_rss_mb = wd_pid.map(rss_mb).unwrap_or(0.0);
    report.host_rss_mb_max = host_pids.iter().map(|p| rss_mb(*p)).fold(0.0, f64::max);

    // The workers' view.
    let mut heartbeats = vec![0u64; LatencyHistogram::MAX_MS + 1];
    let mut renewals = vec![0u64; LatencyHistogram::MAX_MS + 1];
    for host in &mut hosts {
        if let Some(mut stdin) = host.stdin.take() {
            let _ = stdin.write_all(b"stop\n");
        }
    }
    let mut finals = 0;
    while finals < hosts.len() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(HostEvent::Line(_, v)) if v["final"] == true => {
                finals += 1;
                add_sparse(&mut heartbeats, &v["heartbeats"]);
                add_sparse(&mut renewals, &v["renewals"]);
                report.heartbeat_failures += v["heartbeat_failures"].as_u64().unwrap_or(0);
                report.renewal_failures += v["renewal_failures"].as_u64().unwrap_or(0);
                report.faulted += v["faulted"].as_u64().unwrap_or(0);
            }
            Ok(HostEvent::Line(..)) => {}
            Ok(HostEvent::Closed(i)) => bail!("worker host {i} exited before its report"),
            Err(_) => bail!("a worker host did not report within 60 s of stop"),
        }
    }
    for host in &mut hosts {
        let _ = host.child.wait();
    }
    (
        report.heartbeats,
        report.heartbeat_p50_ms,
        report.heartbeat_p99_ms,
    ) = percentiles(&heartbeats);
    (report.renewals, report.renew_p50_ms, report.renew_p99_ms) = percentiles(&renewals);
    report.renewals_per_s = report.renewals as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let usage = sampler
        .join()
        .map_err(|_| anyhow!("the sampling thread panicked"))?;
    report.manager_rss_mb_max = usage.rss_mb_max;
    report.manager_cpu_pct_max = usage.cpu_pct_max;
    report.manager_cpu_pct_mean = usage.cpu_pct_mean;
    drop(h);
    Ok(report)
}

/// Fails, with the end of its log, if a manager process has exited.
fn managers_alive(h: &Harness, names: &[String], pids: &[u32]) -> Result<()> {
    for (name, pid) in names.iter().zip(pids) {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = state
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X");
        if !running {
            let log = h.daemon(name).log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "manager {name} exited; the end of its log:\n{}",
                tail.join("\n")
            );
        }
    }
    Ok(())
}

/// A note on standard error (progress).
fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// A free loopback port, as `127.0.0.1:PORT`.
fn free_port() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// `moat node ls --format json` on `name`: node id → Ready, and how long
/// the command took in milliseconds; an error says why it failed.
fn node_ls(h: &Harness, name: &str) -> Result<(BTreeMap<String, bool>, f64)> {
    let t = Instant::now();
    let out = h.moat(name, &["node", "ls", "--format", "json"]);
    let took = t.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        out.code == 0,
        "`moat node ls` failed after {took:.0} ms: {}",
        out.stderr.trim()
    );
    let v: Value = serde_json::from_str(&out.stdout).context("node ls printed no JSON")?;
    let nodes = v
        .as_array()
        .context("node ls JSON is not an array")?
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or_default().to_string(),
                n["status"] == "ready",
            )
        })
        .collect();
    Ok((nodes, took))
}

/// `GET /metrics` from `addr`: name (without labels) → value, the last
/// sample of each name.
fn scrape(addr: &str) -> Result<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?.to_string();
            Some((name, value.parse().ok()?))
        })
        .collect())
}

/// Managers' resource use over the run.
#[derive(Debug, Default)]
struct Usage {
    rss_mb_max: f64,
    cpu_pct_max: f64,
    cpu_pct_mean: f64,
}

/// Samples `pids` once a second until `stop`: each process's CPU over the
/// last second (100 % = one core) and RSS.
fn sample(pids: &[u32], stop: &AtomicBool) -> Usage {
    let tick = clock_ticks();
    let mut usage = Usage::default();
    let mut last: Vec<Option<u64>> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let mut last_at = Instant::now();
    let (mut sum, mut n) = (0.0, 0u64);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let dt = last_at.elapsed().as_secs_f64();
        last_at = Instant::now();
        for (i, pid) in pids.iter().enumerate() {
            let now = cpu_ticks(*pid);
            if let (Some(a), Some(b)) = (last[i], now) {
                let pct = (b.saturating_sub(a)) as f64 / tick / dt * 100.0;
                usage.cpu_pct_max = usage.cpu_pct_max.max(pct);
                sum += pct;
                n += 1;
            }
            last[i] = now;
            usage.rss_mb_max = usage.rss_mb_max.max(rss_mb(*pid));
        }
    }
    usage.cpu_pct_mean = if n > 0 { sum / n as f64 } else { 0.0 };
    usage
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU ticks of `pid` (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields count from after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of `pid` in MiB (0 when it is gone).
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn add_sparse(into: &mut [u64], v: &Value) {
    for pair in v.as_array().into_iter().flatten() {
        if let (Some(ms), Some(c)) = (pair[0].as_u64(), pair[1].as_u64())
            && let Some(slot) = into.get_mut(ms as usize)
        {
            *slot += c;
        }
    }
}

/// Count, p50 and p99 (ms) of a histogram.
fn percentiles(h: &[u64]) -> (u64, u64, u64) {
    let total: u64 = h.iter().sum();
    let at = |q: f64| {
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (ms, c) in h.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ms as u64;
            }
        }
        0
    };
    if total == 0 {
        return (0, 0, 0);
    }
    (total, at(0.50), at(0.99))
}

fn print_report(r: &Report, as_json: bool) {
    let rows: Vec<(&str, String)> = vec![
        (
            "workers joined / asked",
            format!("{} / {}", r.joined, r.workers),
        ),
        ("workers Ready", r.ready.to_string()),
        ("managers", r.managers.to_string()),
        ("certificate lifetime", r.cert_expiry.clone()),
        ("time to join all", format!("{:.1} s", r.join_s)),
        ("time until all Ready", format!("{:.1} s", r.ready_s)),
        ("steady run", format!("{} s", r.duration_s)),
        (
            "heartbeat round trip p50 / p99",
            format!(
                "{} / {} ms ({} beats, {} failed)",
                r.heartbeat_p50_ms, r.heartbeat_p99_ms, r.heartbeats, r.heartbeat_failures
            ),
        ),
        (
            "renewal round trip p50 / p99",
            format!(
                "{} / {} ms ({} renewals, {} failed)",
                r.renew_p50_ms, r.renew_p99_ms, r.renewals, r.renewal_failures
            ),
        ),
        ("renewals per second", format!("{:.1}", r.renewals_per_s)),
        (
            "raft writes per second (steady)",
            format!("{:.1}", r.raft_writes_per_s),
        ),
        (
            "manager CPU max / mean (100 % = 1 core)",
            format!(
                "{:.0} % / {:.0} %",
                r.manager_cpu_pct_max, r.manager_cpu_pct_mean
            ),
        ),
        (
            "manager RSS max",
            format!("{:.0} MiB", r.manager_rss_mb_max),
        ),
        (
            "worker host process RSS max",
            format!("{:.0} MiB", r.host_rss_mb_max),
        ),
        (
            "moat daemon worker RSS",
            format!("{:.1} MiB", r.worker_daemon_rss_mb),
        ),
        (
            "node ls p50 / p90 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                r.node_ls_ms, r.node_ls_ms_p90, r.node_ls_ms_max
            ),
        ),
        (
            "node ls slowest (s into the run: ms)",
            r.node_ls_slowest
                .iter()
                .map(|(at, ms)| format!("{at:.0}: {ms:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "snapshot bytes start -> end (per hour)",
            format!(
                "{:.0} -> {:.0} ({:+.0}/h)",
                r.snapshot_bytes_start, r.snapshot_bytes_end, r.snapshot_growth_per_hour
            ),
        ),
        (
            "audit records start -> end (per hour)",
            format!(
                "{:.0} -> {:.0} ({:+.0}/h)",
                r.audit_records_start, r.audit_records_end, r.audit_growth_per_hour
            ),
        ),
        (
            "elections during the steady run",
            format!("{:.0}", r.elections),
        ),
        (
            "nodes wrongly marked Down",
            format!("{} {:?}", r.false_down, r.false_down_nodes),
        ),
        ("nodes faulted", r.faulted.to_string()),
    ];
    let mut out = std::io::stdout().lock();
    for (k, v) in &rows {
        let _ = writeln!(out, "{k:<42} {v}");
    }
    for e in &r.join_errors {
        let _ = writeln!(out, "join error: {e}");
    }
    for e in r.node_ls_failures.iter().take(5) {
        let _ = writeln!(out, "node ls error: {e}");
    }
    if as_json {
        let v = json!({
            "workers": r.workers,
            "managers": r.managers,
            "cert_expiry": r.cert_expiry,
            "duration_s": r.duration_s,
            "joined": r.joined,
            "ready": r.ready,
            "join_s": r.join_s,
            "ready_s": r.ready_s,
            "heartbeat_p50_ms": r.heartbeat_p50_ms,
            "heartbeat_p99_ms": r.heartbeat_p99_ms,
            "heartbeats": r.heartbeats,
            "heartbeat_failures": r.heartbeat_failures,
            "renew_p50_ms": r.renew_p50_ms,
            "renew_p99_ms": r.renew_p99_ms,
            "renewals": r.renewals,
            "renewals_per_s": r.renewals_per_s,
            "renewal_failures": r.renewal_failures,
            "raft_writes_per_s": r.raft_writes_per_s,
            "manager_rss_mb_max": r.manager_rss_mb_max,
            "manager_cpu_pct_max": r.manager_cpu_pct_max,
            "manager_cpu_pct_mean": r.manager_cpu_pct_mean,
            "host_rss_mb_max": r.host_rss_mb_max,
            "worker_daemon_rss_mb": r.worker_daemon_rss_mb,
            "node_ls_ms": r.node_ls_ms,
            "node_ls_ms_max": r.node_ls_ms_max,
            "node_ls_ms_p90": r.node_ls_ms_p90,
            "snapshot_bytes_per_hour": r.snapshot_growth_per_hour,
            "audit_records_per_hour": r.audit_growth_per_hour,
            "false_down": r.false_down,
            "elections": r.elections,
            "node_ls_failures": r.node_ls_failures.len(),
            "faulted": r.faulted,
        });
        let _ = writeln!(out, "{v}");
    }
}
