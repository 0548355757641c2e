#![no_main]
//! Fuzzes the orchestrator's replicated state machine, `State::apply`, on
//! sequences of `Command`s: a worker's `task_sync` reports reach it through
//! the leader as `ReportTasks`, and every manager applies every command of
//! the Raft log.
//!
//! Two input forms. Input starting with `[` that parses as a JSON array of
//! commands (the form of the Raft log) is applied as it is; anything else
//! drives a small builder (services `S0`-`S2`, tasks `T0`-`T5`, nodes
//! `n0`-`n2`), which reaches deep states far faster than mutated JSON.
//!
//! Checks after every command: no panic; a refused command leaves the
//! state as it was; a task's state moves only forward (an `Orphaned` task
//! may take the end its node reports) and nothing leaves a terminal
//! state; its desired state only moves forward; its node, once set, never
//! changes. For `ReportTasks` (what a worker controls): services are
//! untouched, only the reporting node's tasks change, only their status
//! (or they are deleted: ended while desired `Remove`), and kept texts
//! are within `MAX_REPORT_MESSAGE` / `MAX_RUNTIME_ID`. `assignments_for`
//! names only the node's own tasks; every command survives a JSON round
//! trip. Secrets (`K0`, `K1`): every service's references name a version
//! that is kept, every secret keeps at least one version, in increasing
//! order, within `MAX_SECRET_VERSIONS`, all within
//! `MAX_TOTAL_SECRET_BYTES`; `task_files` hands data only for a task of
//! the asking node. At the end: the same commands on a fresh state give the same
//! state (determinism), and the state survives a JSON round trip.
//!
//! With `MOAT_FUZZ_SEED_CHECK` set, a `[` input that does not parse
//! panics: `MOAT_FUZZ_SEED_CHECK=1 cargo +nightly fuzz run
//! orchestrator_apply fuzz/seeds/orchestrator_apply -- -runs=0` checks the
//! committed seeds.

use libfuzzer_sys::fuzz_target;
use moat_orchestrator::{
    Change, Command, IdentitySpec, MAX_REPORT_MESSAGE, MAX_RUNTIME_ID, MAX_SECRET_VERSIONS,
    MAX_TOTAL_SECRET_BYTES, Mode, Secret, SecretData, SecretKind, SecretRef, SecretVersion,
    Service, ServiceSpec, State, Task, TaskIdentity, TaskReport, TaskSpec, TaskState, TaskStatus,
};

/// Most commands one input applies.
const MAX_COMMANDS: usize = 32;

const STATES: [TaskState; 13] = [
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
];

fuzz_target!(|data: &[u8]| {
    let commands = if data.first() == Some(&b'[') {
        match serde_json::from_slice::<Vec<Command>>(data) {
            Ok(commands) => commands,
            Err(e) => {
                if std::env::var_os("MOAT_FUZZ_SEED_CHECK").is_some() {
                    panic!("a JSON seed does not parse: {e}");
                }
                build(data)
            }
        }
    } else {
        build(data)
    };
    let commands = &commands[..commands.len().min(MAX_COMMANDS)];
    let mut state = State::default();
    for cmd in commands {
        step(&mut state, cmd);
    }

    // The same commands on another state give the same state.
    let mut twin = State::default();
    for cmd in commands {
        let _ = twin.apply(cmd);
    }
    assert_eq!(twin, state, "apply is not deterministic");

    let text = serde_json::to_string(&state).expect("the state serializes");
    let back: State = serde_json::from_str(&text).expect("the state's JSON parses");
    assert_eq!(back, state, "the state's JSON round trip changed it");
});

fn step(state: &mut State, cmd: &Command) {
    let text = serde_json::to_string(cmd).expect("a command serializes");
    let back: Command = serde_json::from_str(&text).expect("a command's JSON parses");
    assert_eq!(&back, cmd, "a command's JSON round trip changed it");

    let before = state.clone();
    let result = state.apply(cmd);
    if result.is_err() {
        assert_eq!(*state, before, "a refused command changed the state");
        return;
    }

    // Tasks re-added under an id deleted in the same round are new tasks.
    let readded: Vec<&str> = match cmd {
        Command::Reconcile { changes, .. } => changes
            .iter()
            .filter_map(|c| match c {
                Change::AddTask(t) => Some(t.id.as_str()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for (id, old) in &before.tasks {
        let Some(new) = state.tasks.get(id) else {
            continue;
        };
        if readded.contains(&id.as_str()) {
            continue;
        }
        let (a, b) = (old.status.state, new.status.state);
        let orphan_ended = a == TaskState::Orphaned && b.is_terminal();
        assert!(
            b >= a || orphan_ended,
            "task {id} moved back from {a:?} to {b:?} on {cmd:?}"
        );
        assert!(
            !a.is_terminal() || a == b || (a == TaskState::Orphaned && orphan_ended),
            "task {id} left the end state {a:?} for {b:?} on {cmd:?}"
        );
        assert!(
            new.desired_state >= old.desired_state,
            "task {id}'s desired state moved back on {cmd:?}"
        );
        if old.node_id.is_some() {
            assert_eq!(new.node_id, old.node_id, "task {id} moved to another node");
        }
    }

    // A recorded certificate lands only on a task to run on the node that
    // asked, and changes nothing else.
    if let Command::RecordIdentity { task, node, identity } = cmd {
        let mut expected = before.clone();
        if let Some(t) = expected.tasks.get_mut(task)
            && t.node_id.as_deref() == Some(node.as_str())
            && t.desired_state == TaskState::Running
            && !t.status.state.is_terminal()
        {
            t.identity = Some(identity.clone());
        }
        assert_eq!(*state, expected, "RecordIdentity did more than record");
    }

    if let Command::ReportTasks { node, .. } = cmd {
        assert_eq!(
            state.services, before.services,
            "a report changed a service"
        );
        for (id, new) in &state.tasks {
            let old = before
                .tasks
                .get(id)
                .unwrap_or_else(|| panic!("a report made task {id}"));
            if new == old {
                continue;
            }
            assert_eq!(
                old.node_id.as_deref(),
                Some(node.as_str()),
                "a report of node {node} changed task {id} of another node"
            );
            let mut same = new.clone();
            same.status = old.status.clone();
            assert_eq!(&same, old, "a report changed more than task {id}'s status");
            let s = &new.status;
            assert!(s.message.len() <= MAX_REPORT_MESSAGE);
            assert!(
                s.error
                    .as_ref()
                    .is_none_or(|e| e.len() <= MAX_REPORT_MESSAGE)
            );
            assert!(
                s.runtime_id
                    .as_ref()
                    .is_none_or(|r| r.len() <= MAX_RUNTIME_ID)
            );
        }
        for (id, old) in &before.tasks {
            if !state.tasks.contains_key(id) {
                assert_eq!(old.node_id.as_deref(), Some(node.as_str()));
                assert_eq!(
                    old.desired_state,
                    TaskState::Remove,
                    "a report deleted task {id}, which was not being removed"
                );
            }
        }
    }

    for s in state.services.values() {
        for r in &s.spec.task.secrets {
            assert!(
                state
                    .secrets
                    .get(&r.secret_id)
                    .is_some_and(|k| k.kind == r.kind && k.version(r.version).is_some()),
                "service {} refers to {r:?}, which is not kept, after {cmd:?}",
                s.id
            );
        }
    }
    for k in state.secrets.values() {
        assert!(!k.versions.is_empty(), "secret {} has no version", k.id);
        assert!(k.versions.len() <= MAX_SECRET_VERSIONS);
        assert!(
            k.versions.windows(2).all(|w| w[0].version < w[1].version),
            "versions out of order"
        );
    }
    assert!(state.secret_bytes() <= MAX_TOTAL_SECRET_BYTES);
    for (id, t) in &state.tasks {
        for node in ["n0", "n1", "n2"] {
            if state.task_files(id, node).is_ok() {
                assert_eq!(t.node_id.as_deref(), Some(node), "another node's task's files");
                assert_eq!(t.desired_state, TaskState::Running);
                assert!(!t.status.state.is_terminal());
            }
        }
    }

    for node in ["n0", "n1", "n2"] {
        for a in state.assignments_for(node) {
            let task = &state.tasks[&a.task_id];
            assert_eq!(
                task.node_id.as_deref(),
                Some(node),
                "another node's assignment"
            );
        }
    }
}

/// Reads the builder's choices from the input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn pick(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }
    fn bit(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    fn state(&mut self) -> TaskState {
        STATES[self.pick(STATES.len())]
    }
    fn id(&mut self, prefix: &str, n: usize) -> String {
        format!("{prefix}{}", self.pick(n))
    }
    fn node(&mut self) -> String {
        self.id("n", 3)
    }
    fn opt_node(&mut self) -> Option<String> {
        if self.bit() { Some(self.node()) } else { None }
    }
    /// Text, mostly short, sometimes up to 1.5 KiB (past the limits of
    /// 128 and 1024 bytes), sometimes multibyte.
    fn text(&mut self) -> String {
        let b = usize::from(self.byte());
        let len = if b < 16 { b * 100 + b % 3 } else { b % 8 };
        let c = if self.bit() { 'é' } else { 'x' };
        std::iter::repeat_n(c, len / c.len_utf8()).collect()
    }
    fn opt_text(&mut self) -> Option<String> {
        if self.bit() { Some(self.text()) } else { None }
    }
    fn spec(&mut self) -> ServiceSpec {
        let name = format!("web{}", self.pick(3));
        let mode = if self.pick(4) == 0 {
            Mode::Global
        } else {
            Mode::Replicated {
                replicas: u64::from(self.byte() % 5),
            }
        };
        let secrets = if self.bit() {
            vec![self.secret_ref()]
        } else {
            Vec::new()
        };
        ServiceSpec {
            name,
            task: TaskSpec {
                image: format!("/bin/app{}", self.pick(2)),
                secrets,
                identity: self.bit().then(|| IdentitySpec {
                    ttl_secs: 300 + u64::from(self.byte()),
                }),
                ..TaskSpec::default()
            },
            mode,
            ..ServiceSpec::default()
        }
    }
    fn secret_ref(&mut self) -> SecretRef {
        let id = self.id("K", 2);
        SecretRef {
            kind: SecretKind::Secret,
            name: format!("db{id}"),
            secret_id: id,
            version: 1 + u64::from(self.byte() % 3),
            pinned: self.bit(),
            target: "db".into(),
            mode: 0o400,
        }
    }
    fn secret_version(&mut self, version: u64, now: i64) -> SecretVersion {
        SecretVersion {
            version,
            data: SecretData::new(vec![self.byte(); usize::from(self.byte())]),
            digest: "hmac-sha256:00".into(),
            created_at: now,
        }
    }
    fn task(&mut self, now: i64) -> Task {
        let service_id = self.id("S", 3);
        Task {
            id: self.id("T", 6),
            service_id,
            slot: u64::from(self.byte() % 4),
            node_id: self.opt_node(),
            version: u64::from(self.byte() % 3),
            spec: TaskSpec {
                image: format!("/bin/app{}", self.pick(2)),
                ..TaskSpec::default()
            },
            desired_state: self.state(),
            status: TaskStatus {
                state: self.state(),
                since: now,
                message: String::new(),
                error: None,
                runtime_id: None,
                exit_code: None,
            },
            attempt: 0,
            created_at: now,
            identity: None,
        }
    }
    fn change(&mut self, now: i64) -> Change {
        match self.pick(8) {
            0 => Change::AddTask(self.task(now)),
            1 => Change::Assign {
                task: self.id("T", 6),
                node: self.node(),
            },
            2 => Change::Pending {
                task: self.id("T", 6),
                reason: self.text(),
            },
            3 => Change::SetDesired {
                task: self.id("T", 6),
                desired: self.state(),
            },
            4 => Change::SetState {
                task: self.id("T", 6),
                state: self.state(),
                message: self.text(),
            },
            5 => Change::DeleteTask(self.id("T", 6)),
            6 => Change::SetUpdateStatus {
                service: self.id("S", 3),
                status: None,
            },
            _ => {
                let previous = if self.bit() { Some(self.spec()) } else { None };
                Change::SetSpec {
                    service: self.id("S", 3),
                    spec: self.spec(),
                    previous,
                }
            }
        }
    }
    fn report(&mut self) -> TaskReport {
        TaskReport {
            task_id: self.id("T", 6),
            state: self.state(),
            since: i64::from(self.byte()),
            message: self.text(),
            error: self.opt_text(),
            runtime_id: self.opt_text(),
            exit_code: if self.bit() {
                Some(i32::from(self.byte()))
            } else {
                None
            },
        }
    }
}

/// Commands chosen by `data`, one per few bytes, until it runs out.
fn build(data: &[u8]) -> Vec<Command> {
    let mut b = Bytes(data);
    let mut commands = Vec::new();
    let mut now = 0i64;
    while !b.0.is_empty() && commands.len() < MAX_COMMANDS {
        now += 1_000;
        let cmd = match b.pick(10) {
            0 => {
                let spec = b.spec();
                Command::CreateService(Service {
                    id: b.id("S", 3),
                    spec,
                    previous_spec: None,
                    version: 1,
                    created_at: now,
                    updated_at: now,
                    update_status: None,
                })
            }
            1 => Command::UpdateService {
                id: b.id("S", 3),
                spec: b.spec(),
                force: b.bit(),
                now,
            },
            2 => Command::RollbackService {
                id: b.id("S", 3),
                now,
            },
            3 => Command::RemoveService { id: b.id("S", 3) },
            6 => {
                let id = b.id("K", 2);
                let v = b.secret_version(1, now);
                Command::CreateSecret(Secret {
                    name: format!("db{id}"),
                    id,
                    kind: SecretKind::Secret,
                    labels: Default::default(),
                    created_at: now,
                    updated_at: now,
                    versions: vec![v],
                })
            }
            7 => {
                let id = b.id("K", 2);
                let v = 1 + u64::from(b.byte() % 4);
                Command::UpdateSecret {
                    id,
                    version: b.secret_version(v, now),
                    now,
                }
            }
            8 => Command::RemoveSecret { id: b.id("K", 2) },
            9 => Command::RecordIdentity {
                task: b.id("T", 6),
                node: b.node(),
                identity: TaskIdentity {
                    serial: format!("{:02x}", b.byte()),
                    not_after: now,
                    issuer: "sha256:00".into(),
                },
            },
            4 => {
                let n = 1 + b.pick(4);
                Command::Reconcile {
                    changes: (0..n).map(|_| b.change(now)).collect(),
                    now,
                }
            }
            _ => {
                let n = 1 + b.pick(4);
                Command::ReportTasks {
                    node: b.node(),
                    reports: (0..n).map(|_| b.report()).collect(),
                    now,
                }
            }
        };
        commands.push(cmd);
    }
    commands
}
