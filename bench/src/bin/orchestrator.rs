//! moat's scheduler throughput benchmark (issue 17).
//!
//! A real cluster of managers in this process (default 3; each with its
//! own encrypted store, real fsync, and a mutual-TLS transport on a
//! loopback port: `cluster.rs`, shared with the `store` benchmark) is given
//! N ready worker records (`Command::PutNode`, default 1,000; untimed),
//! then one replicated service of M tasks (default 10,000). From the
//! service's proposal on, the benchmark does on the leader what the
//! leader's loop does (`node/src/orchestrate.rs`): read the applied state,
//! run `moat_orchestrator::reconcile` with the default `Limits` (at most
//! 5,000 changes a plan), commit the plan as one `Reconcile` entry with a
//! `task.place` audit record, and again, until a plan is empty. Every task
//! must then be `assigned`, spread evenly over the nodes.
//!
//! Reported: placements committed per second (tasks over the time from
//! proposing the service to the last plan's commit, acknowledged =
//! committed on a majority and applied on the leader), that time split
//! into reconcile and commit, and the pure `reconcile` cost of the same
//! placement without Raft (in memory: reconcile and `State::apply` until
//! done, with the default limit and as one uncapped plan).
//!
//! `cargo run --release -p moat-bench --bin orchestrator -- [--quick]
//! [--nodes N] [--tasks M] [--managers K] [--rounds R] [--dir DIR]
//! [--json PATH]`. `--quick`: 100 nodes, 1,000 tasks, one round (a smoke
//! run; figures not meaningful).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Printing the table and its progress is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, ensure};
use clap::Parser as _;
use moat_audit::{Action, Actor, Details, Event, Outcome, Text};
use moat_orchestrator::{
    Change, Limits, Mode, NodeAvailability, NodeRole, NodeView, RestartPolicy, Service,
    ServiceSpec, State, TaskSpec, TaskState, UpdateConfig,
};
use moat_pki::{NodeId, Role};
use moat_store::model::{Availability, Command, NodeRecord};

#[path = "../cluster.rs"]
mod cluster;
use cluster::Pki;

/// Concurrent writers that enter the node records (untimed).
const NODE_WRITERS: usize = 64;

/// Placements committed per second through a real Raft cluster, next to
/// `reconcile` alone.
#[derive(clap::Parser)]
#[command(name = "orchestrator")]
struct Options {
    /// 1,000 tasks on 100 nodes, one round: a smoke run (CI); figures not
    /// meaningful.
    #[arg(long)]
    quick: bool,
    /// Ready worker nodes [default: 1,000, or 100 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    nodes: Option<u32>,
    /// Replicas of the service [default: 10,000, or 1,000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    tasks: Option<u64>,
    /// Managers in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    managers: u8,
    /// Rounds [default: 3, or 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// Where the stores go [default: the system temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The sizes of a run, defaults filled in.
struct Sizes {
    quick: bool,
    nodes: u32,
    tasks: u64,
    managers: usize,
    rounds: u32,
    dir: PathBuf,
    json: Option<PathBuf>,
}

impl Options {
    fn sizes(self) -> Sizes {
        let quick = self.quick;
        let pick =
            |v: Option<u32>, full: u32, small: u32| v.unwrap_or(if quick { small } else { full });
        Sizes {
            quick,
            nodes: pick(self.nodes, 1_000, 100),
            tasks: self.tasks.unwrap_or(if quick { 1_000 } else { 10_000 }),
            managers: usize::from(self.managers),
            rounds: pick(self.rounds, 3, 1),
            dir: self.dir.unwrap_or_else(std::env::temp_dir),
            json: self.json,
        }
    }
}

fn main() -> Result<()> {
    let opts = Options::parse().sizes();
    cluster::runtime()?.block_on(run(&opts))
}

async fn run(opts: &Sizes) -> Result<()> {
    eprintln!(
        "{} tasks on {} nodes, {} manager(s), {} round(s), stores under {}",
        opts.tasks,
        opts.nodes,
        opts.managers,
        opts.rounds,
        opts.dir.display()
    );
    let pki = Pki::generate(opts.managers)?;
    let mut pure = Vec::new();
    let mut committed = Vec::new();
    for round in 0..opts.rounds {
        eprintln!("round {}/{}: in memory", round + 1, opts.rounds);
        pure.push(in_memory(opts.nodes, opts.tasks)?);
        eprintln!("round {}/{}: committed", round + 1, opts.rounds);
        committed.push(
            committed_run(&pki, opts)
                .await
                .with_context(|| format!("committed run {}", round + 1))?,
        );
    }
    report(opts, &pure, &committed)
}

// ---------------------------------------------------------------------------
// What is placed

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A new task id, as the leader makes them.
fn new_id() -> String {
    NodeId::generate().to_string()
}

/// The service: `tasks` replicas of `/bin/sleep 300` (runtime process;
/// the scheduler does not look at what a task runs).
fn service(tasks: u64, now: i64) -> Service {
    Service {
        id: new_id(),
        spec: ServiceSpec {
            name: "bench".into(),
            labels: BTreeMap::new(),
            task: TaskSpec {
                image: "/bin/sleep".into(),
                args: vec!["300".into()],
                ..TaskSpec::default()
            },
            mode: Mode::Replicated { replicas: tasks },
            constraints: Vec::new(),
            spread_over: Vec::new(),
            restart: RestartPolicy::default(),
            update: UpdateConfig::default(),
        },
        previous_spec: None,
        version: 1,
        created_at: now,
        updated_at: now,
        update_status: None,
    }
}

/// How the scheduler sees a node record (the leader's conversion).
fn view(r: &NodeRecord) -> NodeView {
    let role = if r.role == Role::Manager {
        NodeRole::Manager
    } else {
        NodeRole::Worker
    };
    let availability = match r.availability {
        Availability::Active => NodeAvailability::Active,
        Availability::Pause => NodeAvailability::Pause,
        Availability::Drain => NodeAvailability::Drain,
    };
    NodeView {
        id: r.id.to_string(),
        hostname: r.hostname.clone(),
        labels: r.labels.clone(),
        ready: r.ready,
        role,
        availability,
    }
}

fn placements(changes: &[Change]) -> usize {
    changes
        .iter()
        .filter(|c| matches!(c, Change::Assign { .. }))
        .count()
}

/// Fails unless every task of `state` is assigned, `tasks` of them, spread
/// over `min(nodes, tasks)` nodes with at most one more on any node than
/// on another.
fn check_placed(state: &State, nodes: u32, tasks: u64) -> Result<()> {
    let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
    for t in state.tasks.values() {
        ensure!(
            t.status.state == TaskState::Assigned,
            "task {} is {:?}",
            t.id,
            t.status.state
        );
        let node = t
            .node_id
            .as_deref()
            .context("an assigned task without a node")?;
        *per_node.entry(node).or_default() += 1;
    }
    ensure!(
        state.tasks.len() as u64 == tasks,
        "{} tasks, not {tasks}",
        state.tasks.len()
    );
    let used = per_node.len() as u64;
    ensure!(used == tasks.min(u64::from(nodes)), "tasks on {used} nodes");
    let counts: BTreeSet<u64> = per_node.values().copied().collect();
    let (lo, hi) = (counts.first().copied(), counts.last().copied());
    ensure!(
        hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
        "uneven spread: {lo:?} to {hi:?} tasks per node"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// In memory: reconcile alone

/// One in-memory placement of `tasks` on `nodes`.
struct Pure {
    /// Reconcile and apply until done, default limits.
    reconcile: Duration,
    apply: Duration,
    plans: usize,
    /// One uncapped plan for the whole service.
    one_plan: Duration,
    /// JSON size of the plans' `Reconcile` commands, bytes.
    entry_bytes: usize,
}

fn in_memory(nodes: u32, tasks: u64) -> Result<Pure> {
    let views: Vec<NodeView> = cluster::node_records(nodes, true)
        .iter()
        .map(view)
        .collect();
    let now = unix_ms();
    let mut state = State::default();
    let create = moat_orchestrator::Command::CreateService(service(tasks, now));
    state.apply(&create).map_err(|e| anyhow!("{e}"))?;
    let fresh = state.clone();
    let limits = Limits::default();
    let mut pure = Pure {
        reconcile: Duration::ZERO,
        apply: Duration::ZERO,
        plans: 0,
        one_plan: Duration::ZERO,
        entry_bytes: 0,
    };
    loop {
        let t = Instant::now();
        let plan = moat_orchestrator::reconcile(&views, &state, now, &mut new_id, &limits);
        pure.reconcile += t.elapsed();
        if plan.changes.is_empty() {
            break;
        }
        pure.plans += 1;
        let cmd = moat_orchestrator::Command::Reconcile {
            changes: plan.changes,
            now,
        };
        let t = Instant::now();
        state.apply(&cmd).map_err(|e| anyhow!("{e}"))?;
        pure.apply += t.elapsed();
        pure.entry_bytes += serde_json::to_vec(&cmd).map_or(0, |v| v.len());
    }
    check_placed(&state, nodes, tasks)?;
    let uncapped = Limits {
        max_changes: usize::MAX,
        ..limits
    };
    let t = Instant::now();
    let plan = moat_orchestrator::reconcile(&views, &fresh, now, &mut new_id, &uncapped);
    pure.one_plan = t.elapsed();
    ensure!(
        placements(&plan.changes) as u64 == tasks,
        "one uncapped plan placed {} tasks",
        placements(&plan.changes)
    );
    Ok(pure)
}

// ---------------------------------------------------------------------------
// Committed through Raft

/// One committed placement of the service.
struct Committed {
    /// From proposing the service to the last plan's commit.
    total: Duration,
    /// Of which: proposing the service.
    create: Duration,
    /// Reading the state and running `reconcile`, every round.
    reconcile: Duration,
    /// Committing the plans (`client_write` until applied on the leader).
    commit: Duration,
    /// Plans committed.
    plans: usize,
    placed: usize,
}

/// `change` in one entry with its audit record, as the leader commits an
/// operator's change or a round of placements.
fn audited(
    change: Command,
    manager: NodeId,
    actor: Actor,
    action: Action,
    target: &str,
    detail: (&str, String),
) -> Result<Command> {
    let mut details = Details::new();
    details.insert(detail.0, &detail.1)?;
    let event = Event {
        node: manager,
        actor,
        action,
        target: Text::new("target", target)?,
        outcome: Outcome::Success,
        details,
    };
    Ok(Command::Audited {
        change: Box::new(change),
        time: unix_ms() / 1000,
        event,
    })
}

async fn committed_run(pki: &Pki, opts: &Sizes) -> Result<Committed> {
    let root = tempfile::Builder::new()
        .prefix("moat-bench-orchestrator-")
        .tempdir_in(&opts.dir)
        .with_context(|| format!("creating a temporary directory in {}", opts.dir.display()))?;
    let mut managers = Vec::with_capacity(opts.managers);
    let result = async {
        let leader = cluster::start(pki, root.path(), opts.managers, true, &mut managers).await?;
        let (raft, applied, me) = (
            managers[leader].raft.clone(),
            managers[leader].applied.clone(),
            managers[leader].id,
        );
        let write = move |cmd: Command| {
            let raft = raft.clone();
            async move { cluster::write(&raft, cmd).await }
        };

        // The nodes, untimed, from concurrent writers.
        let mut records = cluster::node_records(opts.nodes, true);
        let mut writers = tokio::task::JoinSet::new();
        let per_writer = records.len().div_ceil(NODE_WRITERS).max(1);
        while !records.is_empty() {
            let batch: Vec<NodeRecord> = records.drain(..per_writer.min(records.len())).collect();
            let write = write.clone();
            writers.spawn(async move {
                for r in batch {
                    write(Command::PutNode(r)).await?;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(done) = writers.join_next().await {
            done.context("a node writer panicked")??;
        }

        let limits = Limits::default();
        let start = Instant::now();
        let create = service(opts.tasks, unix_ms());
        let target = format!("service:{}", create.spec.name);
        write(audited(
            Command::orchestrate(moat_orchestrator::Command::CreateService(create)),
            me,
            Actor::local_user(1000),
            Action::SERVICE_CREATE,
            &target,
            ("request", "moat service create".into()),
        )?)
        .await?;
        let mut run = Committed {
            total: Duration::ZERO,
            create: start.elapsed(),
            reconcile: Duration::ZERO,
            commit: Duration::ZERO,
            plans: 0,
            placed: 0,
        };
        loop {
            let t = Instant::now();
            let now = unix_ms();
            let plan = {
                let applied = applied
                    .read()
                    .map_err(|_| anyhow!("the applied state's lock is poisoned"))?;
                let nodes: Vec<NodeView> = applied.state.nodes.values().map(view).collect();
                moat_orchestrator::reconcile(
                    &nodes,
                    &applied.state.orchestrator,
                    now,
                    &mut new_id,
                    &limits,
                )
            };
            run.reconcile += t.elapsed();
            if plan.changes.is_empty() {
                break;
            }
            let placed = placements(&plan.changes);
            let t = Instant::now();
            write(audited(
                Command::orchestrate(moat_orchestrator::Command::Reconcile {
                    changes: plan.changes,
                    now,
                }),
                me,
                Actor::node(me),
                Action::TASK_PLACE,
                &target,
                ("service_1", format!("bench: placed {placed}")),
            )?)
            .await?;
            run.commit += t.elapsed();
            run.total = start.elapsed();
            run.plans += 1;
            run.placed += placed;
        }
        let applied = applied
            .read()
            .map_err(|_| anyhow!("the applied state's lock is poisoned"))?;
        check_placed(&applied.state.orchestrator, opts.nodes, opts.tasks)?;
        Ok(run)
    }
    .await;
    cluster::stop(managers, root).await?;
    result
}

// ---------------------------------------------------------------------------
// Output

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, min, max) of `xs`.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (median, xs[0], xs[n - 1])
}

fn report(opts: &Sizes, pure: &[Pure], committed: &[Committed]) -> Result<()> {
    let tasks = opts.tasks as f64;
    let row = |xs: Vec<f64>| {
        let (m, lo, hi) = spread(xs);
        serde_json::json!({"median": m, "min": lo, "max": hi})
    };
    let rate = row(committed
        .iter()
        .map(|c| c.placed as f64 / c.total.as_secs_f64())
        .collect());
    let out = serde_json::json!({
        "nodes": opts.nodes,
        "tasks": opts.tasks,
        "managers": opts.managers,
        "rounds": opts.rounds,
        "quick": opts.quick,
        "committed": {
            "placements_per_s": rate,
            "total_ms": row(committed.iter().map(|c| ms(c.total)).collect()),
            "create_ms": row(committed.iter().map(|c| ms(c.create)).collect()),
            "reconcile_ms": row(committed.iter().map(|c| ms(c.reconcile)).collect()),
            "commit_ms": row(committed.iter().map(|c| ms(c.commit)).collect()),
            "plans": committed.first().map_or(0, |c| c.plans),
        },
        "in_memory": {
            "reconcile_ms": row(pure.iter().map(|p| ms(p.reconcile)).collect()),
            "apply_ms": row(pure.iter().map(|p| ms(p.apply)).collect()),
            "plans": pure.first().map_or(0, |p| p.plans),
            "one_plan_ms": row(pure.iter().map(|p| ms(p.one_plan)).collect()),
            "placements_per_s": row(pure.iter().map(|p| tasks / p.reconcile.as_secs_f64()).collect()),
            "entry_mb": pure.first().map_or(0.0, |p| p.entry_bytes as f64 / 1e6),
        },
    });
    let f = |v: &serde_json::Value| {
        format!(
            "{:.1} ({:.1}-{:.1})",
            v["median"].as_f64().unwrap_or(f64::NAN),
            v["min"].as_f64().unwrap_or(f64::NAN),
            v["max"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let (c, p) = (&out["committed"], &out["in_memory"]);
    println!();
    println!(
        "{} tasks on {} ready nodes, {} manager(s), {} round(s); median (min-max)",
        opts.tasks, opts.nodes, opts.managers, opts.rounds
    );
    println!(
        "committed: {} placements/s; {} ms from proposing the service to the last commit",
        f(&c["placements_per_s"]),
        f(&c["total_ms"])
    );
    println!(
        "  of which: service create {} ms, reconcile (state read + plan) {} ms, \
         commit of {} plans {} ms",
        f(&c["create_ms"]),
        f(&c["reconcile_ms"]),
        c["plans"],
        f(&c["commit_ms"])
    );
    println!(
        "in memory: reconcile {} ms over {} plans (apply {} ms; {:.1} MB of Reconcile JSON); \
         one uncapped plan {} ms",
        f(&p["reconcile_ms"]),
        p["plans"],
        f(&p["apply_ms"]),
        p["entry_mb"].as_f64().unwrap_or(f64::NAN),
        f(&p["one_plan_ms"])
    );
    if opts.quick {
        println!("(--quick: small sizes, figures are only a smoke test)");
    }
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
