//! The reconciler on small simulated clusters.

mod common;

use std::collections::BTreeMap;

use common::{Sim, node, spec};
use moat_orchestrator::*;

fn count(plan: &Plan, f: impl Fn(&Change) -> bool) -> usize {
    plan.changes.iter().filter(|c| f(c)).count()
}

fn adds(plan: &Plan) -> Vec<&Task> {
    plan.changes
        .iter()
        .filter_map(|c| match c {
            Change::AddTask(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn map(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn replicated(n: u64) -> Mode {
    Mode::Replicated { replicas: n }
}

#[test]
fn three_replicas_on_three_nodes_one_each() {
    let mut sim = Sim::new(3);
    let id = sim.create(spec("web", replicated(3)), 0);
    let plan = sim.step(1000);
    assert_eq!(count(&plan, |c| matches!(c, Change::AddTask(_))), 3);
    assert_eq!(count(&plan, |c| matches!(c, Change::Assign { .. })), 3);
    assert_eq!(sim.spread(&id), map(&[("n1", 1), ("n2", 1), ("n3", 1)]));
    let slots: Vec<u64> = sim.live(&id).iter().map(|t| t.slot).collect();
    assert_eq!(slots, vec![1, 2, 3]);
    assert_eq!(
        plan.placements,
        vec![PlacementSummary {
            service_id: id.clone(),
            service_name: "web".into(),
            placed: [
                ("n1".to_string(), 1),
                ("n2".to_string(), 1),
                ("n3".to_string(), 1)
            ]
            .into_iter()
            .collect(),
            pending: 0,
            reason: None,
        }]
    );
    for t in sim.live(&id) {
        assert_eq!(t.status.state, TaskState::Assigned);
        assert_eq!(t.version, 1);
        assert_eq!(t.attempt, 0);
        assert_eq!(t.spec.image, "app:1");
    }
    sim.assert_converged(1000);
    sim.run_all(1000);
    sim.assert_converged(50_000);
    assert_eq!(sim.state.assignments_for("n2").len(), 1);
}

#[test]
fn placement_prefers_nodes_with_fewest_tasks_overall() {
    let mut sim = Sim::new(3);
    let a = sim.create(spec("a", replicated(2)), 0);
    sim.converge(0);
    assert_eq!(sim.spread(&a), map(&[("n1", 1), ("n2", 1)]));
    let b = sim.create(spec("b", replicated(1)), 0);
    sim.converge(0);
    assert_eq!(sim.spread(&b), map(&[("n3", 1)]));
    // n3 carries fewest overall; then n1 and n2 tie and n1 wins by id;
    // a fourth task goes to the node with fewest of the service.
    let mut sim = Sim::new(3);
    sim.create(spec("a", replicated(2)), 0);
    sim.converge(0);
    let c = sim.create(spec("c", replicated(2)), 0);
    sim.converge(0);
    assert_eq!(sim.spread(&c), map(&[("n1", 1), ("n3", 1)]));
    sim.update(&c, |s| s.mode = replicated(3), 0);
    sim.converge(0);
    assert_eq!(sim.spread(&c), map(&[("n1", 1), ("n2", 1), ("n3", 1)]));
}

#[test]
fn no_suitable_node_reasons_count() {
    let mut sim = Sim::new(5);
    let mut s = spec("db", replicated(1));
    s.constraints = vec![parse_constraint("node.labels.zone==a").unwrap()];
    let id = sim.create(s, 0);
    let plan = sim.step(10);
    let reason = "no suitable node (constraint node.labels.zone==a matched 0 of 5 nodes)";
    assert!(plan.changes.contains(&Change::Pending {
        task: "t000001".into(),
        reason: reason.into(),
    }));
    assert_eq!(plan.placements[0].pending, 1);
    assert_eq!(plan.placements[0].reason.as_deref(), Some(reason));
    let t = &sim.state.tasks["t000001"];
    assert_eq!(t.status.state, TaskState::Pending);
    assert_eq!(t.status.message, reason);
    // Same reason: no new change.
    sim.assert_converged(20);
    // A node gets the label: the task goes there.
    sim.node_mut("n4").labels.insert("zone".into(), "a".into());
    let plan = sim.step(30);
    assert_eq!(
        plan.changes,
        vec![Change::Assign {
            task: "t000001".into(),
            node: "n4".into()
        }]
    );
    assert_eq!(sim.spread(&id), map(&[("n4", 1)]));

    let mut sim = Sim::new(5);
    for n in &mut sim.nodes {
        n.ready = false;
    }
    sim.create(spec("x", replicated(1)), 0);
    let plan = sim.step(10);
    assert_eq!(
        plan.placements[0].reason.as_deref(),
        Some("no suitable node (0 of 5 nodes are ready and active)")
    );
    let mut sim = Sim::new(0);
    sim.create(spec("x", replicated(2)), 0);
    let plan = sim.step(10);
    assert_eq!(plan.placements[0].pending, 2);
    assert_eq!(
        plan.placements[0].reason.as_deref(),
        Some("no suitable node (the cluster has no nodes)")
    );
    sim.assert_converged(10);
}

#[test]
fn spread_over_zones() {
    let mut sim = Sim::new(0);
    sim.nodes = vec![
        node("n1", &[("zone", "a")]),
        node("n2", &[("zone", "a")]),
        node("n3", &[("zone", "a")]),
        node("n4", &[("zone", "b")]),
    ];
    let mut s = spec("web", replicated(4));
    s.spread_over = vec![parse_spread("spread=node.labels.zone").unwrap()];
    let id = sim.create(s, 0);
    sim.converge(0);
    assert_eq!(sim.spread(&id), map(&[("n1", 1), ("n2", 1), ("n4", 2)]));
    // Without the preference the same cluster gets one per node first.
    let other = sim.create(spec("plain", replicated(4)), 0);
    sim.converge(0);
    assert_eq!(
        sim.spread(&other),
        map(&[("n1", 1), ("n2", 1), ("n3", 1), ("n4", 1)])
    );
}

#[test]
fn scale_up_and_down() {
    let mut sim = Sim::new(3);
    let id = sim.create(spec("web", replicated(3)), 0);
    sim.converge(0);
    sim.run_all(0);
    let before: Vec<String> = sim.live(&id).iter().map(|t| t.id.clone()).collect();
    sim.update(&id, |s| s.mode = replicated(5), 100);
    let svc = &sim.state.services[&id];
    assert_eq!(svc.version, 2);
    assert_eq!(svc.update_status, None, "scaling is no rolling update");
    let plan = sim.step(100);
    let added = adds(&plan);
    assert_eq!(added.iter().map(|t| t.slot).collect::<Vec<_>>(), vec![4, 5]);
    assert!(added.iter().all(|t| t.version == 2));
    sim.converge(100);
    sim.run_all(100);
    assert_eq!(sim.live(&id).len(), 5);
    // The first tasks were kept (relabelled to the new version).
    for t in &before {
        assert_eq!(sim.state.tasks[t].desired_state, TaskState::Running);
        assert_eq!(sim.state.tasks[t].version, 2);
    }
    sim.assert_converged(200);

    sim.update(&id, |s| s.mode = replicated(2), 300);
    let plan = sim.step(300);
    let removed: Vec<u64> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::SetDesired { task, desired } => {
                assert_eq!(*desired, TaskState::Remove);
                Some(sim.state.tasks[task].slot)
            }
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![5, 4, 3], "highest slots first");
    sim.assert_converged(300);
    sim.run_all(400);
    // Stopped tasks of removed slots are deleted.
    assert_eq!(sim.state.tasks.len(), 2);
    assert_eq!(
        sim.live(&id).iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![1, 2]
    );
    sim.assert_converged(500);
}

#[test]
fn global_follows_nodes() {
    let mut sim = Sim::new(2);
    let id = sim.create(spec("agent", Mode::Global), 0);
    let plan = sim.step(0);
    assert_eq!(count(&plan, |c| matches!(c, Change::AddTask(_))), 2);
    assert_eq!(count(&plan, |c| matches!(c, Change::Assign { .. })), 0);
    assert_eq!(plan.placements[0].placed.len(), 2);
    assert!(
        sim.live(&id)
            .iter()
            .all(|t| t.slot == 0 && t.status.state == TaskState::Assigned)
    );
    sim.assert_converged(0);
    sim.run_all(0);
    // A node joins.
    sim.nodes.push(node("n3", &[]));
    let plan = sim.step(10);
    assert_eq!(adds(&plan).len(), 1);
    assert_eq!(adds(&plan)[0].node_id.as_deref(), Some("n3"));
    sim.run_all(10);
    // A node is drained: its task is removed, not replaced.
    sim.node_mut("n2").availability = NodeAvailability::Drain;
    let plan = sim.step(20);
    let n2_task = sim.state.tasks_on("n2").next().unwrap().id.clone();
    assert_eq!(
        plan.changes,
        vec![Change::SetDesired {
            task: n2_task.clone(),
            desired: TaskState::Remove
        }]
    );
    sim.run_all(30);
    assert!(!sim.state.tasks.contains_key(&n2_task));
    assert_eq!(sim.spread(&id), map(&[("n1", 1), ("n3", 1)]));
    sim.assert_converged(40);
    // Paused: keeps its task but gets no new one.
    sim.node_mut("n3").availability = NodeAvailability::Pause;
    sim.assert_converged(50);
    sim.node_mut("n2").availability = NodeAvailability::Active;
    let plan = sim.step(60);
    assert_eq!(adds(&plan)[0].node_id.as_deref(), Some("n2"));
    // A constraint excludes n1.
    sim.update(
        &id,
        |s| s.constraints = vec![parse_constraint("node.id!=n1").unwrap()],
        70,
    );
    let plan = sim.step(70);
    let n1_task = sim.state.tasks_on("n1").next().unwrap().id.clone();
    assert!(plan.changes.contains(&Change::SetDesired {
        task: n1_task,
        desired: TaskState::Remove
    }));
}

#[test]
fn restart_waits_for_the_delay() {
    let mut sim = Sim::new(2);
    let mut s = spec("web", replicated(1));
    s.restart.delay_ms = 5_000;
    let id = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(1_000);
    let first = sim.in_slot(&id, 1).id.clone();
    sim.report(&first, TaskState::Failed, 2_000);
    assert!(sim.plan(6_999).changes.is_empty(), "too early");
    let plan = sim.step(7_000);
    assert_eq!(
        plan.changes[0],
        Change::SetDesired {
            task: first.clone(),
            desired: TaskState::Shutdown
        }
    );
    let new = adds(&plan)[0];
    assert_eq!((new.slot, new.attempt, new.version), (1, 1, 1));
    assert_eq!(count(&plan, |c| matches!(c, Change::Assign { .. })), 1);
    assert_ne!(sim.in_slot(&id, 1).id, first);
    sim.assert_converged(7_000);
}

#[test]
fn on_failure_does_not_restart_completed_tasks() {
    let mut sim = Sim::new(1);
    let mut s = spec("job", replicated(1));
    s.restart.condition = RestartCondition::OnFailure;
    s.restart.delay_ms = 0;
    let job = sim.create(s.clone(), 0);
    s.name = "flaky".into();
    let flaky = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(0);
    let j = sim.in_slot(&job, 1).id.clone();
    let f = sim.in_slot(&flaky, 1).id.clone();
    sim.report(&j, TaskState::Complete, 10);
    sim.report(&f, TaskState::Failed, 10);
    let plan = sim.step(10);
    // The completed job is given up (desired Shutdown, no new task)...
    assert!(plan.changes.contains(&Change::SetDesired {
        task: j.clone(),
        desired: TaskState::Shutdown
    }));
    assert!(adds(&plan).iter().all(|t| t.service_id == flaky));
    assert!(sim.live(&job).is_empty());
    // ...the failed one is restarted.
    assert_eq!(sim.in_slot(&flaky, 1).attempt, 1);
    sim.assert_converged(10);
    sim.assert_converged(1_000_000);
    // A forced update revives the finished slot.
    let spec = sim.state.services[&job].spec.clone();
    sim.state
        .apply(&Command::UpdateService {
            id: job.clone(),
            spec,
            force: true,
            now: 20,
        })
        .unwrap();
    sim.step(20);
    assert_eq!(sim.live(&job).len(), 1);
}

#[test]
fn max_attempts_gives_up() {
    let mut sim = Sim::new(1);
    let mut s = spec("web", replicated(1));
    s.restart.delay_ms = 0;
    s.restart.max_attempts = Some(2);
    let id = sim.create(s, 0);
    sim.converge(0);
    let mut now = 0;
    for attempt in 0..=2 {
        sim.run_all(now);
        let t = sim.in_slot(&id, 1);
        assert_eq!(t.attempt, attempt);
        let tid = t.id.clone();
        now += 100;
        sim.report(&tid, TaskState::Failed, now);
        let plan = sim.step(now);
        if attempt < 2 {
            assert_eq!(adds(&plan).len(), 1);
        } else {
            assert_eq!(
                plan.changes,
                vec![Change::SetDesired {
                    task: tid,
                    desired: TaskState::Shutdown
                }]
            );
        }
    }
    assert!(sim.live(&id).is_empty());
    assert_eq!(sim.state.tasks.len(), 3);
    sim.assert_converged(now + 1_000_000);
}

#[test]
fn lost_node_orphans_and_replaces_then_stops_old_task() {
    let mut sim = Sim::new(3);
    let mut s = spec("web", replicated(3));
    s.restart.delay_ms = 60_000;
    let id = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(0);
    let old = sim.state.tasks_on("n1").next().unwrap().clone();
    sim.node_mut("n1").ready = false;
    let plan = sim.step(1_000);
    assert_eq!(
        plan.changes[0..2],
        [
            Change::SetState {
                task: old.id.clone(),
                state: TaskState::Orphaned,
                message: "node n1 is down".into()
            },
            Change::SetDesired {
                task: old.id.clone(),
                desired: TaskState::Shutdown
            }
        ]
    );
    let new = adds(&plan)[0].clone();
    assert_eq!((new.slot, new.attempt), (old.slot, 1));
    let placed = sim.in_slot(&id, old.slot);
    assert_eq!(placed.id, new.id);
    assert_ne!(placed.node_id.as_deref(), Some("n1"));
    sim.assert_converged(1_000);
    sim.run_all(2_000);
    // The node comes back: it is told to stop the old task.
    sim.node_mut("n1").ready = true;
    let a = sim.state.assignments_for("n1");
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].task_id, old.id);
    assert_eq!(a[0].desired_state, TaskState::Shutdown);
    sim.assert_converged(3_000);
    sim.run_all(3_000);
    assert_eq!(sim.state.tasks[&old.id].status.state, TaskState::Shutdown);
    // Ended: still listed (its output kept) but only ever to stop.
    assert!(
        sim.state
            .assignments_for("n1")
            .iter()
            .all(|a| a.desired_state != TaskState::Running),
        "{:#?}",
        sim.state.assignments_for("n1")
    );
    // A node missing from the list counts as lost too.
    let on_n2 = sim.spread(&id)["n2"];
    sim.nodes.retain(|n| n.id != "n2");
    let plan = sim.step(4_000);
    assert_eq!(
        count(&plan, |c| matches!(c, Change::SetState { .. })),
        on_n2
    );
    assert_eq!(adds(&plan).len(), on_n2);
    sim.converge(4_000);
    assert_eq!(sim.live(&id).len(), 3);
}

#[test]
fn down_grace_delays_orphaning() {
    let mut sim = Sim::new(2);
    sim.limits.down_grace_ms = 10_000;
    let id = sim.create(spec("web", replicated(2)), 0);
    sim.converge(0);
    sim.run_all(0);
    sim.node_mut("n1").ready = false;
    sim.assert_converged(9_999);
    let plan = sim.step(10_000);
    assert_eq!(count(&plan, |c| matches!(c, Change::SetState { .. })), 1);
    assert_eq!(sim.spread(&id), map(&[("n2", 2)]));
}

#[test]
fn drain_moves_tasks_in_their_slot() {
    let mut sim = Sim::new(3);
    let id = sim.create(spec("web", replicated(3)), 0);
    sim.converge(0);
    sim.run_all(0);
    let old = sim.state.tasks_on("n2").next().unwrap().clone();
    sim.node_mut("n2").availability = NodeAvailability::Drain;
    let plan = sim.step(100);
    assert_eq!(
        plan.changes[0],
        Change::SetDesired {
            task: old.id.clone(),
            desired: TaskState::Shutdown
        }
    );
    let moved = sim.in_slot(&id, old.slot);
    assert_ne!(moved.id, old.id);
    assert_eq!(moved.attempt, old.attempt + 1);
    assert!(matches!(moved.node_id.as_deref(), Some("n1") | Some("n3")));
    // The drained node is told to stop it.
    assert_eq!(
        sim.state.assignments_for("n2")[0].desired_state,
        TaskState::Shutdown
    );
    sim.assert_converged(100);
}

fn update_sim(action: FailureAction) -> (Sim, ServiceId) {
    let mut sim = Sim::new(5);
    let mut s = spec("web", replicated(5));
    s.update.parallelism = 2;
    s.update.monitor_ms = 10_000;
    s.update.delay_ms = 0;
    s.update.failure_action = action;
    s.restart.delay_ms = 5_000;
    let id = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(0);
    sim.update(&id, |s| s.task.image = "app:2".into(), 100_000);
    (sim, id)
}

fn versions(sim: &Sim, id: &str) -> Vec<u64> {
    let mut v: Vec<u64> = sim.live(id).iter().map(|t| t.version).collect();
    v.sort();
    v
}

#[test]
fn rolling_update_in_batches_waits_for_monitor() {
    let (mut sim, id) = update_sim(FailureAction::Pause);
    let svc = &sim.state.services[&id];
    assert_eq!(svc.version, 2);
    assert_eq!(
        svc.update_status.as_ref().unwrap().phase,
        UpdatePhase::Updating
    );
    let plan = sim.step(100_000);
    let new: Vec<u64> = adds(&plan).iter().map(|t| t.slot).collect();
    assert_eq!(new, vec![1, 2]);
    assert!(
        adds(&plan)
            .iter()
            .all(|t| t.spec.image == "app:2" && t.attempt == 0)
    );
    assert_eq!(versions(&sim, &id), vec![1, 1, 1, 2, 2]);
    sim.assert_converged(100_000);
    sim.run_all(101_000);
    // Monitor: the new tasks must run 10 s first.
    sim.assert_converged(110_999);
    let plan = sim.step(111_000);
    assert_eq!(
        adds(&plan).iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert_eq!(
        sim.state.services[&id]
            .update_status
            .as_ref()
            .unwrap()
            .last_batch_at,
        111_000
    );
    sim.run_all(112_000);
    let plan = sim.step(122_000);
    assert_eq!(
        adds(&plan).iter().map(|t| t.slot).collect::<Vec<_>>(),
        vec![5]
    );
    sim.run_all(123_000);
    sim.assert_converged(132_999);
    let plan = sim.step(133_000);
    assert_eq!(plan.changes.len(), 1);
    let status = sim.state.services[&id].update_status.clone().unwrap();
    assert_eq!(status.phase, UpdatePhase::Completed);
    assert_eq!(versions(&sim, &id), vec![2, 2, 2, 2, 2]);
    assert!(sim.live(&id).iter().all(|t| t.spec.image == "app:2"));
    sim.assert_converged(200_000);
}

#[test]
fn update_pauses_on_failure() {
    let (mut sim, id) = update_sim(FailureAction::Pause);
    sim.step(100_000);
    sim.run_all(101_000);
    let failed = sim.in_slot(&id, 1).id.clone();
    sim.report(&failed, TaskState::Failed, 102_000);
    let plan = sim.step(102_000);
    let status = sim.state.services[&id].update_status.clone().unwrap();
    assert_eq!(status.phase, UpdatePhase::Paused);
    assert_eq!(
        status.message,
        format!("update paused due to failure or early termination of task {failed}")
    );
    assert_eq!(plan.changes.len(), 1);
    // The restart policy still applies; no further batch.
    let plan = sim.step(107_000);
    assert_eq!(adds(&plan).len(), 1);
    sim.run_all(108_000);
    sim.converge(500_000);
    assert_eq!(versions(&sim, &id), vec![1, 1, 1, 2, 2]);
    // A new update resumes.
    sim.update(&id, |s| s.task.image = "app:3".into(), 600_000);
    let plan = sim.step(600_000);
    assert_eq!(adds(&plan).len(), 2);
}

#[test]
fn update_rolls_back_on_failure() {
    let (mut sim, id) = update_sim(FailureAction::Rollback);
    sim.step(100_000);
    sim.run_all(101_000);
    let untouched: Vec<String> = sim
        .live(&id)
        .iter()
        .filter(|t| t.version == 1)
        .map(|t| t.id.clone())
        .collect();
    let failed = sim.in_slot(&id, 2).id.clone();
    sim.report(&failed, TaskState::Rejected, 102_000);
    let plan = sim.step(102_000);
    assert!(matches!(plan.changes[0], Change::SetSpec { .. }));
    let svc = sim.state.services[&id].clone();
    assert_eq!(svc.spec.task.image, "app:1");
    assert_eq!(svc.previous_spec.unwrap().task.image, "app:2");
    assert_eq!(svc.version, 3);
    let status = svc.update_status.unwrap();
    assert_eq!(status.phase, UpdatePhase::RollbackStarted);
    assert!(status.message.contains(&failed));
    // Tasks that never left the old spec stay.
    for t in &untouched {
        assert_eq!(sim.state.tasks[t].desired_state, TaskState::Running);
        assert_eq!(sim.state.tasks[t].version, 3);
    }
    sim.step(102_000);
    sim.run_all(103_000);
    sim.step(107_000);
    sim.run_all(107_000);
    // Slot 1 (still on the new spec) is rolled back as a batch.
    let plan = sim.step(200_000);
    assert_eq!(adds(&plan).len(), 1);
    assert_eq!(adds(&plan)[0].slot, 1);
    sim.run_all(200_000);
    sim.converge(300_000);
    let status = sim.state.services[&id].update_status.clone().unwrap();
    assert_eq!(status.phase, UpdatePhase::RollbackCompleted);
    assert!(sim.live(&id).iter().all(|t| t.spec.image == "app:1"));
    for t in &untouched {
        assert_eq!(sim.state.tasks[t].desired_state, TaskState::Running);
    }
}

#[test]
fn removed_service_tasks_go() {
    let mut sim = Sim::new(1);
    let id = sim.create(spec("web", replicated(2)), 0);
    let mut s = spec("stuck", replicated(1));
    s.constraints = vec![parse_constraint("node.role==manager").unwrap()];
    let stuck = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(0);
    sim.state
        .apply(&Command::RemoveService { id: id.clone() })
        .unwrap();
    sim.state
        .apply(&Command::RemoveService { id: stuck.clone() })
        .unwrap();
    assert!(
        sim.state
            .tasks
            .values()
            .all(|t| t.desired_state == TaskState::Remove)
    );
    let plan = sim.step(10);
    // The never-placed task goes at once; the others when stopped.
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(sim.state.tasks.len(), 2);
    assert_eq!(sim.state.assignments_for("n1").len(), 2);
    sim.run_all(20);
    assert!(sim.state.tasks.is_empty());
}

#[test]
fn history_is_bounded() {
    let mut sim = Sim::new(1);
    sim.limits.history_per_slot = 3;
    let mut s = spec("web", replicated(1));
    s.restart.delay_ms = 0;
    let id = sim.create(s, 0);
    sim.converge(0);
    for i in 1..=8 {
        sim.run_all(i * 10);
        let t = sim.in_slot(&id, 1).id.clone();
        sim.report(&t, TaskState::Failed, i * 10);
        sim.step(i * 10);
        sim.assert_converged(i * 10);
    }
    let all: Vec<&Task> = sim.state.tasks_of(&id).collect();
    assert_eq!(all.len(), 4, "3 ended + 1 live");
    assert_eq!(sim.in_slot(&id, 1).attempt, 8);
}

#[test]
fn cap_never_splits_a_replacement() {
    let mut sim = Sim::new(4);
    let id = sim.create(spec("web", replicated(8)), 0);
    sim.converge(0);
    sim.run_all(0);
    sim.node_mut("n1").availability = NodeAvailability::Drain;
    sim.limits.max_changes = 3;
    let plan = sim.step(10);
    assert!(plan.changes.len() <= 3);
    for (i, c) in plan.changes.iter().enumerate() {
        if let Change::SetDesired { .. } = c {
            assert!(matches!(plan.changes.get(i + 1), Some(Change::AddTask(_))));
        }
    }
    let steps = sim.converge(10);
    assert!(steps > 1);
    assert_eq!(sim.live(&id).len(), 8);
    assert_eq!(sim.spread(&id).get("n1"), None);

    sim.limits.max_changes = 5;
    let big = sim.create(spec("big", replicated(20)), 0);
    let plan = sim.step(20);
    assert_eq!(plan.changes.len(), 5);
    sim.converge(20);
    assert_eq!(sim.live(&big).len(), 20);
}

#[test]
fn plan_is_deterministic() {
    let mut a = Sim::new(7);
    a.nodes[2].ready = false;
    a.nodes[4].labels.insert("zone".into(), "b".into());
    let mut s = spec("x", replicated(9));
    s.spread_over = vec!["zone".into()];
    a.create(s, 0);
    a.create(spec("g", Mode::Global), 0);
    let mut b = Sim {
        nodes: a.nodes.clone(),
        state: a.state.clone(),
        next: 0,
        limits: a.limits,
    };
    assert_eq!(a.plan(5), b.plan(5));
}

#[test]
fn ten_thousand_tasks_on_a_thousand_nodes() {
    let mut sim = Sim::new(1000);
    for i in 0..10 {
        let mut s = spec(&format!("s{i}"), replicated(1000));
        s.spread_over = vec!["zone".into()];
        sim.create(s, 0);
    }
    for (i, n) in sim.nodes.iter_mut().enumerate() {
        n.labels.insert("zone".into(), format!("z{}", i % 7));
    }
    sim.limits.max_changes = 50_000;
    sim.step(0);
    sim.run_all(0);
    assert_eq!(sim.state.tasks.len(), 10_000);
    for (_, count) in sim.spread("svc-s3") {
        assert_eq!(count, 1);
    }
    for n in sim.nodes.iter_mut().take(100) {
        n.ready = false;
    }
    let started = std::time::Instant::now();
    let plan = sim.plan(10);
    let took = started.elapsed();
    assert_eq!(count(&plan, |c| matches!(c, Change::AddTask(_))), 1_000);
    eprintln!("10,000 tasks, 1,000 nodes, 100 lost: {took:?}");
    assert!(took.as_secs() < 20, "took {took:?}");
}

#[test]
fn update_delay_between_batches() {
    let mut sim = Sim::new(2);
    let mut s = spec("web", replicated(2));
    s.update.parallelism = 1;
    s.update.monitor_ms = 0;
    s.update.delay_ms = 30_000;
    let id = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(0);
    sim.update(&id, |s| s.task.image = "app:2".into(), 100_000);
    // No delay before the first batch.
    let plan = sim.step(100_000);
    assert_eq!(adds(&plan).len(), 1);
    sim.run_all(100_000);
    sim.assert_converged(129_999);
    let plan = sim.step(130_000);
    assert_eq!(adds(&plan).len(), 1);
    sim.run_all(130_000);
    sim.step(130_000);
    assert_eq!(
        sim.state.services[&id]
            .update_status
            .as_ref()
            .unwrap()
            .phase,
        UpdatePhase::Completed
    );
}

#[test]
fn lost_node_of_a_removed_service_deletes_its_tasks() {
    let mut sim = Sim::new(2);
    let id = sim.create(spec("web", replicated(2)), 0);
    sim.converge(0);
    sim.run_all(0);
    sim.state
        .apply(&Command::RemoveService { id: id.clone() })
        .unwrap();
    sim.node_mut("n1").ready = false;
    let plan = sim.step(10);
    assert_eq!(plan.changes.len(), 1);
    assert!(matches!(plan.changes[0], Change::DeleteTask(_)));
    assert_eq!(sim.state.tasks.len(), 1);
    sim.run_all(20);
    assert!(sim.state.tasks.is_empty());
}

#[test]
fn global_task_of_a_lost_node_comes_back_with_it() {
    let mut sim = Sim::new(2);
    let id = sim.create(spec("agent", Mode::Global), 0);
    sim.converge(0);
    sim.run_all(0);
    let old = sim.state.tasks_on("n2").next().unwrap().id.clone();
    sim.node_mut("n2").ready = false;
    let plan = sim.step(10);
    assert_eq!(plan.changes.len(), 2, "orphaned, not moved: {plan:#?}");
    assert_eq!(sim.state.tasks[&old].status.state, TaskState::Orphaned);
    assert_eq!(sim.spread(&id), map(&[("n1", 1)]));
    sim.assert_converged(10);
    sim.node_mut("n2").ready = true;
    let plan = sim.step(20);
    let new = adds(&plan)[0];
    assert_eq!((new.node_id.as_deref(), new.attempt), (Some("n2"), 1));
    let a = sim.state.assignments_for("n2");
    assert_eq!(a.len(), 2, "the old one to stop, the new one to run");
}

#[test]
fn node_that_no_longer_meets_constraints_loses_its_tasks() {
    let mut sim = Sim::new(0);
    sim.nodes = vec![
        node("n1", &[("disk", "ssd")]),
        node("n2", &[("disk", "ssd")]),
    ];
    let mut s = spec("db", replicated(2));
    s.constraints = vec![parse_constraint("node.labels.disk==ssd").unwrap()];
    let id = sim.create(s, 0);
    sim.converge(0);
    sim.run_all(0);
    assert_eq!(sim.spread(&id), map(&[("n1", 1), ("n2", 1)]));
    sim.node_mut("n1").labels.clear();
    sim.step(10);
    assert_eq!(sim.spread(&id), map(&[("n2", 2)]));
    sim.assert_converged(10);
}
