//! Random clusters and random histories: the reconciler keeps its
//! invariants and converges.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Sim, node, spec};
use moat_orchestrator::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: u8,
        replicas: Option<u64>,
        spread: bool,
        zone_a: bool,
    },
    Scale {
        name: u8,
        replicas: u64,
    },
    Image {
        name: u8,
        tag: u8,
    },
    Remove {
        name: u8,
    },
    Report {
        pick: usize,
        state: TaskState,
    },
    Node {
        pick: usize,
        ready: bool,
        availability: NodeAvailability,
    },
    RunAll,
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0u8..3,
            proptest::option::weighted(0.8, 0u64..6),
            any::<bool>(),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(name, replicas, spread, zone_a)| Op::Create {
                name,
                replicas,
                spread,
                zone_a
            }),
        (0u8..3, 0u64..7).prop_map(|(name, replicas)| Op::Scale { name, replicas }),
        (0u8..3, 0u8..3).prop_map(|(name, tag)| Op::Image { name, tag }),
        (0u8..3).prop_map(|name| Op::Remove { name }),
        (
            any::<usize>(),
            prop_oneof![
                Just(TaskState::Running),
                Just(TaskState::Failed),
                Just(TaskState::Complete),
                Just(TaskState::Shutdown),
                Just(TaskState::Rejected),
            ]
        )
            .prop_map(|(pick, state)| Op::Report { pick, state }),
        (
            any::<usize>(),
            any::<bool>(),
            prop_oneof![
                Just(NodeAvailability::Active),
                Just(NodeAvailability::Pause),
                Just(NodeAvailability::Drain),
            ]
        )
            .prop_map(|(pick, ready, availability)| Op::Node {
                pick,
                ready,
                availability
            }),
        Just(Op::RunAll),
        (0i64..20_000).prop_map(Op::Wait),
    ]
}

fn nodes() -> impl Strategy<Value = Vec<NodeView>> {
    proptest::collection::vec((0u8..3, any::<bool>()), 1..6).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (zone, ready))| {
                let mut n = match zone {
                    0 => node(&format!("n{i}"), &[("zone", "a")]),
                    1 => node(&format!("n{i}"), &[("zone", "b")]),
                    _ => node(&format!("n{i}"), &[]),
                };
                n.ready = ready;
                n
            })
            .collect()
    })
}

/// No slot (node, for a global service) has two live tasks.
fn check_slots(state: &State) {
    let mut seen = BTreeSet::new();
    for t in state.tasks.values() {
        if t.desired_state != TaskState::Running {
            continue;
        }
        let key = if t.slot == 0 {
            (t.service_id.clone(), 0, t.node_id.clone())
        } else {
            (t.service_id.clone(), t.slot, None)
        };
        assert!(seen.insert(key), "two live tasks in one slot: {t:#?}");
    }
}

fn plan_with(sim: &Sim, now: i64) -> Plan {
    let mut next = sim.next;
    let mut new_id = || {
        next += 1;
        format!("t{next:06}")
    };
    reconcile(&sim.nodes, &sim.state, now, &mut new_id, &sim.limits)
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    condition: RestartCondition,
    max_attempts: Option<u64>,
    rollback: bool,
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(RestartCondition::Any),
            Just(RestartCondition::OnFailure),
            Just(RestartCondition::None),
        ],
        proptest::option::of(0u64..3),
        any::<bool>(),
    )
        .prop_map(|(condition, max_attempts, rollback)| Policy {
            condition,
            max_attempts,
            rollback,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// With restart policies that may give up: never two live tasks in a
    /// slot, plans deterministic and idempotent, and a slot without a live
    /// task is one that was given up.
    #[test]
    fn restart_policies_keep_slots_consistent(
        nodes in nodes(),
        ops in proptest::collection::vec(op(), 1..25),
        policy in policy(),
    ) {
        let mut sim = Sim::new(0);
        sim.nodes = nodes;
        let mut now = 1_000i64;
        let names = ["a", "b", "c"];
        for op in ops {
            match op {
                Op::Create { name, replicas, .. } => {
                    let n = names[usize::from(name)];
                    if sim.state.service(n).is_none() {
                        let mode = match replicas {
                            Some(r) => Mode::Replicated { replicas: r },
                            None => Mode::Global,
                        };
                        let mut s = spec(n, mode);
                        s.restart.condition = policy.condition;
                        s.restart.max_attempts = policy.max_attempts;
                        s.restart.delay_ms = 0;
                        s.update.monitor_ms = 0;
                        if policy.rollback {
                            s.update.failure_action = FailureAction::Rollback;
                        }
                        sim.create(s, now);
                    }
                }
                Op::Image { name, tag } => {
                    if let Some(svc) = sim.state.service(names[usize::from(name)]) {
                        let id = svc.id.clone();
                        sim.update(&id, |s| s.task.image = format!("app:{tag}"), now);
                    }
                }
                Op::Report { pick, state } => {
                    let placed: Vec<(String, String)> = sim
                        .state
                        .tasks
                        .values()
                        .filter_map(|t| t.node_id.clone().map(|n| (t.id.clone(), n)))
                        .collect();
                    if !placed.is_empty() {
                        let (task, node) = placed[pick % placed.len()].clone();
                        sim.state.apply(&Command::ReportTasks {
                            node,
                            reports: vec![TaskReport {
                                task_id: task,
                                state,
                                since: now,
                                message: String::new(),
                                error: None,
                                runtime_id: None,
                                exit_code: None,
                            }],
                            now,
                        }).unwrap();
                    }
                }
                Op::Node { pick, ready, availability } => {
                    let len = sim.nodes.len();
                    let n = &mut sim.nodes[pick % len];
                    n.ready = ready;
                    n.availability = availability;
                }
                Op::RunAll => sim.run_all(now),
                Op::Wait(ms) => now += ms,
                Op::Scale { .. } | Op::Remove { .. } => {}
            }
            let a = plan_with(&sim, now);
            let b = plan_with(&sim, now);
            prop_assert_eq!(&a, &b);
            let applied = sim.step(now);
            check_slots(&sim.state);
            let rollback = applied.changes.iter().any(|c| matches!(c, Change::SetSpec { .. }));
            let again = plan_with(&sim, now);
            if !rollback {
                prop_assert!(again.changes.is_empty(), "after {:#?}\nagain {:#?}", applied, again);
            }
            // Once quiet, a slot without a live task was given up.
            let quiet = if again.changes.is_empty() { sim.state.services.values().collect() } else { Vec::new() };
            for svc in quiet {
                let Mode::Replicated { replicas } = svc.spec.mode else {
                    continue;
                };
                for slot in 1..=replicas {
                    let tasks: Vec<&Task> =
                        sim.state.tasks_of(&svc.id).filter(|t| t.slot == slot).collect();
                    if tasks.iter().any(|t| t.desired_state == TaskState::Running) {
                        continue;
                    }
                    let newest = tasks
                        .iter()
                        .max_by_key(|t| (t.created_at, t.version, t.attempt, t.id.clone()))
                        .unwrap();
                    prop_assert_eq!(newest.desired_state, TaskState::Shutdown);
                    prop_assert!(newest.status.state.is_terminal());
                }
            }
        }
    }

    #[test]
    fn reconcile_keeps_invariants_and_converges(
        nodes in nodes(),
        ops in proptest::collection::vec(op(), 1..25),
        max_changes in prop_oneof![Just(5000usize), 3usize..12],
    ) {
        let mut sim = Sim::new(0);
        sim.nodes = nodes;
        sim.limits.max_changes = max_changes;
        let mut now = 1_000i64;
        let names = ["a", "b", "c"];
        for op in ops {
            match op {
                Op::Create { name, replicas, spread, zone_a } => {
                    let n = names[usize::from(name)];
                    if sim.state.service(n).is_none() {
                        let mode = match replicas {
                            Some(r) => Mode::Replicated { replicas: r },
                            None => Mode::Global,
                        };
                        let mut s = spec(n, mode);
                        if spread {
                            s.spread_over = vec!["zone".into()];
                        }
                        if zone_a {
                            s.constraints = vec![parse_constraint("node.labels.zone==a").unwrap()];
                        }
                        s.update.monitor_ms = 1_000;
                        sim.create(s, now);
                    }
                }
                Op::Scale { name, replicas } => {
                    if let Some(svc) = sim.state.service(names[usize::from(name)]) {
                        let id = svc.id.clone();
                        if matches!(svc.spec.mode, Mode::Replicated { .. }) {
                            sim.update(&id, |s| s.mode = Mode::Replicated { replicas }, now);
                        }
                    }
                }
                Op::Image { name, tag } => {
                    if let Some(svc) = sim.state.service(names[usize::from(name)]) {
                        let id = svc.id.clone();
                        sim.update(&id, |s| s.task.image = format!("app:{tag}"), now);
                    }
                }
                Op::Remove { name } => {
                    if let Some(svc) = sim.state.service(names[usize::from(name)]) {
                        let id = svc.id.clone();
                        sim.state.apply(&Command::RemoveService { id }).unwrap();
                    }
                }
                Op::Report { pick, state } => {
                    let placed: Vec<(String, String)> = sim
                        .state
                        .tasks
                        .values()
                        .filter_map(|t| t.node_id.clone().map(|n| (t.id.clone(), n)))
                        .collect();
                    if !placed.is_empty() {
                        let (task, node) = placed[pick % placed.len()].clone();
                        sim.state.apply(&Command::ReportTasks {
                            node,
                            reports: vec![TaskReport {
                                task_id: task,
                                state,
                                since: now,
                                message: String::new(),
                                error: None,
                                runtime_id: None,
                                exit_code: None,
                            }],
                            now,
                        }).unwrap();
                    }
                }
                Op::Node { pick, ready, availability } => {
                    let len = sim.nodes.len();
                    let n = &mut sim.nodes[pick % len];
                    n.ready = ready;
                    n.availability = availability;
                }
                Op::RunAll => sim.run_all(now),
                Op::Wait(ms) => now += ms,
            }
            // Deterministic: the same inputs give the same plan.
            let a = plan_with(&sim, now);
            let b = plan_with(&sim, now);
            prop_assert_eq!(&a, &b);
            prop_assert!(a.changes.len() <= sim.limits.max_changes);
            let applied = sim.step(now);
            check_slots(&sim.state);
            // Idempotent: once a whole plan is applied, nothing is left to
            // do at the same time (a rollback takes a second plan).
            let rollback = applied.changes.iter().any(|c| matches!(c, Change::SetSpec { .. }));
            if sim.limits.max_changes == 5000 && !rollback {
                let again = plan_with(&sim, now);
                prop_assert!(again.changes.is_empty(), "after {:#?}\nagain {:#?}", applied, again);
            }
        }

        // Every node up and active; nodes run what they are told.
        for n in &mut sim.nodes {
            n.ready = true;
            n.availability = NodeAvailability::Active;
        }
        let mut quiet = false;
        for _ in 0..60 {
            now += 10_000;
            let plan = sim.step(now);
            check_slots(&sim.state);
            let before = sim.state.clone();
            sim.run_all(now);
            if plan.changes.is_empty() && before == sim.state {
                quiet = true;
                break;
            }
        }
        prop_assert!(quiet, "no convergence: {:#?}", sim.state);

        let zone_a: Vec<&NodeView> = sim
            .nodes
            .iter()
            .filter(|n| n.labels.get("zone").map(String::as_str) == Some("a"))
            .collect();
        for svc in sim.state.services.values() {
            let live: Vec<&Task> = sim
                .state
                .tasks_of(&svc.id)
                .filter(|t| t.desired_state == TaskState::Running)
                .collect();
            let unplaceable = !svc.spec.constraints.is_empty() && zone_a.is_empty();
            match svc.spec.mode {
                Mode::Replicated { replicas } => {
                    let slots: BTreeSet<u64> = live.iter().map(|t| t.slot).collect();
                    prop_assert_eq!(live.len() as u64, replicas);
                    prop_assert_eq!(slots, (1..=replicas).collect::<BTreeSet<u64>>());
                    let paused = svc.update_status.as_ref().is_some_and(|u| {
                        matches!(u.phase, UpdatePhase::Paused | UpdatePhase::RollbackPaused)
                    });
                    for t in &live {
                        if !paused {
                            prop_assert_eq!(t.version, svc.version);
                        }
                        let want = if unplaceable { TaskState::Pending } else { TaskState::Running };
                        prop_assert_eq!(t.status.state, want);
                    }
                }
                Mode::Global => {
                    let on: BTreeMap<&str, usize> = live.iter().fold(BTreeMap::new(), |mut m, t| {
                        *m.entry(t.node_id.as_deref().unwrap_or("")).or_insert(0) += 1;
                        m
                    });
                    let want: usize = if svc.spec.constraints.is_empty() { sim.nodes.len() } else { zone_a.len() };
                    prop_assert_eq!(on.len(), want);
                    prop_assert!(live.iter().all(|t| t.status.state == TaskState::Running));
                }
            }
            if let Some(u) = svc.update_status.as_ref().filter(|_| !unplaceable) {
                prop_assert!(
                    !matches!(u.phase, UpdatePhase::Updating | UpdatePhase::RollbackStarted),
                    "update not finished: {:?}", u
                );
            }
        }
        // Nothing is left running that should not.
        for t in sim.state.tasks.values() {
            prop_assert!(
                t.desired_state == TaskState::Running || t.status.state.is_terminal(),
                "not stopped: {:#?}", t
            );
            prop_assert!(sim.state.services.contains_key(&t.service_id));
        }
    }
}

fn any_state() -> impl Strategy<Value = TaskState> {
    (0usize..13).prop_map(|i| {
        [
            TaskState::New,
            TaskState::Pending,
            TaskState::Assigned,
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Complete,
            TaskState::Shutdown,
            TaskState::Failed,
            TaskState::Rejected,
            TaskState::Remove,
            TaskState::Orphaned,
        ][i]
    })
}

fn change() -> impl Strategy<Value = Change> {
    let task = (0u8..4).prop_map(|i| format!("T{i}"));
    let node = (0u8..3).prop_map(|i| format!("n{i}"));
    prop_oneof![
        (
            task.clone(),
            0u64..3,
            proptest::option::of(node.clone()),
            any_state(),
            any_state()
        )
            .prop_map(|(id, slot, node_id, state, desired)| {
                let mut t = Task {
                    id,
                    service_id: "svc-a".into(),
                    slot,
                    node_id,
                    version: 1,
                    spec: spec("a", Mode::Global).task,
                    desired_state: desired,
                    status: TaskStatus {
                        state,
                        since: 0,
                        message: String::new(),
                        error: None,
                        runtime_id: None,
                        exit_code: None,
                    },
                    attempt: 0,
                    created_at: 0,
                    identity: None,
                };
                if t.slot == 0 {
                    t.slot = 1;
                }
                Change::AddTask(t)
            }),
        (task.clone(), node.clone()).prop_map(|(task, node)| Change::Assign { task, node }),
        task.clone().prop_map(|task| Change::Pending {
            task,
            reason: "r".into()
        }),
        (task.clone(), any_state())
            .prop_map(|(task, desired)| Change::SetDesired { task, desired }),
        (task.clone(), any_state()).prop_map(|(task, state)| Change::SetState {
            task,
            state,
            message: "m".into()
        }),
        task.clone().prop_map(Change::DeleteTask),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any changes and reports, in any order: apply never fails or panics,
    /// states and desired states never move backward (but for an orphan's
    /// end), and no slot gets two live tasks from `AddTask`.
    #[test]
    fn apply_is_total_and_forward_only(
        steps in proptest::collection::vec(
            (proptest::collection::vec(change(), 0..6), 0u8..3, any_state(), 0u8..4),
            1..20,
        ),
    ) {
        let mut sim = Sim::new(0);
        sim.create(spec("a", Mode::Replicated { replicas: 2 }), 0);
        for (i, (changes, node, state, task)) in steps.into_iter().enumerate() {
            let before = sim.state.clone();
            let now = i as i64;
            // Each AddTask is a new incarnation, told apart by created_at.
            let mut changes = changes;
            for (k, c) in changes.iter_mut().enumerate() {
                if let Change::AddTask(t) = c {
                    t.created_at = 1_000 * (i as i64 + 1) + k as i64;
                }
            }
            sim.state.apply(&Command::Reconcile { changes, now }).unwrap();
            sim.state.apply(&Command::ReportTasks {
                node: format!("n{node}"),
                reports: vec![TaskReport {
                    task_id: format!("T{task}"),
                    state,
                    since: 0,
                    message: String::new(),
                    error: None,
                    runtime_id: None,
                    exit_code: None,
                }],
                now,
            }).unwrap();
            for (id, old) in &before.tasks {
                if let Some(new) = sim.state.tasks.get(id).filter(|n| n.created_at == old.created_at) {
                    prop_assert!(new.desired_state >= old.desired_state);
                    let orphan_end = old.status.state == TaskState::Orphaned
                        && new.status.state.is_terminal();
                    prop_assert!(new.status.state >= old.status.state || orphan_end);
                    if old.status.state.is_terminal() && !orphan_end {
                        prop_assert_eq!(new.status.state, old.status.state);
                    }
                }
            }
            let live: Vec<u64> = sim
                .state
                .tasks
                .values()
                .filter(|t| t.desired_state == TaskState::Running)
                .map(|t| t.slot)
                .collect();
            let distinct: BTreeSet<u64> = live.iter().copied().collect();
            let had_dupes = {
                let b: Vec<u64> = before.tasks.values().filter(|t| t.desired_state == TaskState::Running).map(|t| t.slot).collect();
                b.len() != b.iter().collect::<BTreeSet<_>>().len()
            };
            if !had_dupes {
                prop_assert_eq!(live.len(), distinct.len());
            }
        }
    }

    /// Any text: parsing never panics, and what parses prints back to
    /// text that parses to the same constraint.
    #[test]
    fn constraint_parse_round_trips(text in "(node\\.(id|hostname|role|labels\\.[a-z!= ]{0,4}|zone)|[ -~]{0,6})[ ]?(==|!=|=|)[ ]?[ -~]{0,8}") {
        if let Ok(c) = parse_constraint(&text) {
            let back = parse_constraint(&c.to_string());
            prop_assert_eq!(back, Ok(c));
        }
    }
}
