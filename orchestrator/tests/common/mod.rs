//! A small simulated cluster for the reconciler tests.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;

use moat_orchestrator::*;

pub struct Sim {
    pub nodes: Vec<NodeView>,
    pub state: State,
    pub next: u64,
    pub limits: Limits,
}

pub fn node(id: &str, labels: &[(&str, &str)]) -> NodeView {
    NodeView {
        id: id.into(),
        hostname: format!("host-{id}"),
        role: NodeRole::Worker,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        availability: NodeAvailability::Active,
        ready: true,
    }
}

pub fn spec(name: &str, mode: Mode) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        task: TaskSpec {
            image: "app:1".into(),
            ..TaskSpec::default()
        },
        mode,
        ..ServiceSpec::default()
    }
}

impl Sim {
    pub fn new(n: usize) -> Sim {
        Sim {
            nodes: (1..=n).map(|i| node(&format!("n{i}"), &[])).collect(),
            state: State::default(),
            next: 0,
            limits: Limits::default(),
        }
    }

    pub fn node_mut(&mut self, id: &str) -> &mut NodeView {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    pub fn create(&mut self, spec: ServiceSpec, now: i64) -> ServiceId {
        let id = format!("svc-{}", spec.name);
        self.state
            .apply(&Command::CreateService(Service {
                id: id.clone(),
                spec,
                previous_spec: None,
                version: 1,
                created_at: now,
                updated_at: now,
                update_status: None,
            }))
            .unwrap();
        id
    }

    pub fn update(&mut self, id: &str, f: impl FnOnce(&mut ServiceSpec), now: i64) {
        let mut spec = self.state.services[id].spec.clone();
        f(&mut spec);
        self.state
            .apply(&Command::UpdateService {
                id: id.into(),
                spec,
                force: false,
                now,
            })
            .unwrap();
    }

    pub fn plan(&mut self, now: i64) -> Plan {
        let next = &mut self.next;
        let mut new_id = || {
            *next += 1;
            format!("t{:06}", *next)
        };
        reconcile(&self.nodes, &self.state, now, &mut new_id, &self.limits)
    }

    /// Reconciles and applies the plan.
    pub fn step(&mut self, now: i64) -> Plan {
        let plan = self.plan(now);
        self.state
            .apply(&Command::Reconcile {
                changes: plan.changes.clone(),
                now,
            })
            .unwrap();
        plan
    }

    /// Steps until the plan is empty; returns how many steps made changes.
    pub fn converge(&mut self, now: i64) -> usize {
        for i in 0..50 {
            if self.step(now).changes.is_empty() {
                return i;
            }
        }
        panic!("no convergence in 50 steps");
    }

    /// The plan is empty now (without using ids).
    pub fn assert_converged(&mut self, now: i64) {
        let plan = self.plan(now);
        assert!(
            plan.changes.is_empty(),
            "not converged: {:#?}",
            plan.changes
        );
    }

    pub fn report(&mut self, task: &str, state: TaskState, now: i64) {
        let node = self.state.tasks[task].node_id.clone().unwrap();
        self.state
            .apply(&Command::ReportTasks {
                node,
                reports: vec![TaskReport {
                    task_id: task.into(),
                    state,
                    since: now,
                    message: state.as_str().into(),
                    error: None,
                    runtime_id: None,
                    exit_code: None,
                }],
                now,
            })
            .unwrap();
    }

    /// Every ready node does what its assignments say: runs what should
    /// run, stops what should stop.
    pub fn run_all(&mut self, now: i64) {
        for n in self.nodes.clone() {
            if !n.ready {
                continue;
            }
            let reports: Vec<TaskReport> = self
                .state
                .assignments_for(&n.id)
                .into_iter()
                .filter_map(|a| {
                    let cur = self.state.tasks[&a.task_id].status.state;
                    let want = if a.desired_state == TaskState::Running {
                        TaskState::Running
                    } else {
                        TaskState::Shutdown
                    };
                    (cur != want).then(|| TaskReport {
                        task_id: a.task_id,
                        state: want,
                        since: now,
                        message: String::new(),
                        error: None,
                        runtime_id: Some("123".into()),
                        exit_code: None,
                    })
                })
                .collect();
            self.state
                .apply(&Command::ReportTasks {
                    node: n.id.clone(),
                    reports,
                    now,
                })
                .unwrap();
        }
    }

    pub fn live<'a>(&'a self, service: &'a str) -> Vec<&'a Task> {
        self.state
            .tasks_of(service)
            .filter(|t| t.desired_state == TaskState::Running)
            .collect()
    }

    /// Live tasks per node.
    pub fn spread(&self, service: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for t in self.live(service) {
            *m.entry(t.node_id.clone().unwrap_or_default()).or_insert(0) += 1;
        }
        m
    }

    /// The live task of a slot.
    pub fn in_slot<'a>(&'a self, service: &'a str, slot: u64) -> &'a Task {
        let live: Vec<&Task> = self
            .live(service)
            .into_iter()
            .filter(|t| t.slot == slot)
            .collect();
        assert_eq!(live.len(), 1, "slot {slot}: {live:#?}");
        live[0]
    }
}
