//! The cluster lifecycle end to end: real `moat daemon` processes on
//! loopback, driven only through the `moat` CLI.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use moat_testkit::{Harness, Start};

/// A dead node shows Down within DOWN_AFTER (5 s) + a tick + a commit;
/// tests allow generous slack on a loaded 2-core machine.
const DOWN_BOUND: Duration = Duration::from_secs(15);

fn ready(h: &Harness, on: &str, host: &str) -> bool {
    h.nodes(on)
        .get(host)
        .is_some_and(|n| n["status"] == "ready")
}

/// Three managers and two workers; tokens, labels, roles, removal.
#[test]
fn three_managers_two_workers() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    for name in [
        "manager-1",
        "manager-2",
        "manager-3",
        "worker-1",
        "worker-2",
    ] {
        h.start(name);
    }
    let out = h.moat("manager-1", &["info", "--format", "json"]).json();
    assert_eq!(out["state"], "inactive");

    let (addr, worker_token) = h.init("manager-1", &[]);
    let manager_token = h
        .moat("manager-1", &["join-token", "-q", "manager"])
        .ok()
        .trim()
        .to_string();
    assert!(manager_token.starts_with("MOATTKN-1-"));
    assert_ne!(manager_token, worker_token);
    for (m, even) in [("manager-2", true), ("manager-3", false)] {
        let out = h.join(m, &manager_token, &addr);
        assert_eq!(
            out.ok().trim(),
            "This node joined the cluster as a manager."
        );
        // Two managers tolerate no more failures than one: the operator is told.
        assert_eq!(out.stderr.contains("warning:"), even, "{}", out.stderr);
    }
    for w in ["worker-1", "worker-2"] {
        let out = h.join(w, &worker_token, &addr);
        assert_eq!(out.ok().trim(), "This node joined the cluster as a worker.");
    }

    // Every manager sees five Ready nodes, one leader, two reachable.
    h.wait_until("five ready nodes", Duration::from_secs(20), || {
        let nodes = h.nodes("manager-3");
        nodes.len() == 5 && nodes.values().all(|n| n["status"] == "ready")
    });
    let nodes = h.nodes("manager-2");
    let statuses: Vec<_> = ["manager-1", "manager-2", "manager-3"]
        .iter()
        .map(|m| nodes[*m]["manager_status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "leader").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "reachable").count(),
        2,
        "{statuses:?}"
    );
    assert!(nodes["worker-1"]["manager_status"].is_null());
    assert_eq!(nodes["worker-1"]["role"], "worker");
    assert_eq!(nodes["manager-2"]["self"], true);
    assert_eq!(nodes["manager-1"]["self"], false);
    assert!(
        nodes["worker-1"]["cert_not_after"]
            .as_str()
            .unwrap()
            .contains('T')
    );

    // The human table marks the local node and names the leader.
    let table = h.moat("manager-1", &["node", "ls"]);
    let table = table.ok();
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(" * "), "the local node is marked:\n{table}");
    assert!(
        table.contains("Leader") && table.contains("Ready"),
        "{table}"
    );
    let quiet = h.moat("manager-1", &["node", "ls", "-q"]);
    assert_eq!(quiet.ok().lines().count(), 5);

    // Worker restrictions.
    for args in [
        &["node", "ls"][..],
        &["join-token", "worker"],
        &["update", "--cert-expiry", "48h"],
    ] {
        h.moat("worker-1", args)
            .fails_with("This node is not a cluster manager");
    }

    // Labels and availability, by host name or id prefix.
    let w1_id = nodes["worker-1"]["id"].as_str().unwrap().to_string();
    h.moat(
        "manager-3",
        &[
            "node",
            "update",
            "--label-add",
            "zone=a",
            "--label-add",
            "disk=ssd",
            "--availability",
            "drain",
            "worker-1",
        ],
    )
    .ok();
    h.moat(
        "manager-1",
        &["node", "update", "--label-rm", "disk", &w1_id[..6]],
    )
    .ok();
    let inspect = h
        .moat(
            "manager-2",
            &["node", "inspect", "worker-1", "--format", "json"],
        )
        .json();
    assert_eq!(inspect["labels"], serde_json::json!({"zone": "a"}));
    assert_eq!(inspect["availability"], "drain");
    assert!(
        inspect["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!inspect["cert_serial"].as_str().unwrap().is_empty());
    assert!(
        inspect["cert_issuer_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    h.moat("manager-1", &["node", "inspect", "nosuchnode"])
        .fails_with("No such node: nosuchnode");

    // Rotation takes effect cluster-wide: the old token is refused, the
    // new one works, existing nodes stay.
    let rotated = h.moat("manager-2", &["join-token", "--rotate", "worker"]);
    let rotated_text = rotated.ok();
    assert!(
        rotated_text.contains("Successfully rotated worker join token."),
        "{rotated_text}"
    );
    let new_token = h
        .moat("manager-3", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    assert_ne!(new_token, worker_token);
    h.start("worker-3");
    h.join("worker-3", &worker_token, &addr)
        .fails_with("invalid join token");
    h.join("worker-3", &new_token, &addr).ok();
    assert!(ready(&h, "manager-1", "worker-1"));

    // Promote to four managers: warned about the even number. Demote back.
    let out = h.moat("manager-1", &["node", "promote", "worker-2"]);
    assert!(out.ok().contains("promoted to a manager"), "{}", out.stdout);
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("odd"),
        "{}",
        out.stderr
    );
    assert!(
        !h.daemon("worker-1").state_dir.join("store").exists(),
        "a worker holds no store"
    );
    h.wait_until(
        "worker-2 to act as a manager",
        Duration::from_secs(30),
        || h.moat("worker-2", &["node", "ls", "-q"]).code == 0,
    );
    // Its certificate was reissued with the manager role, and it holds a
    // store now.
    let crt = h.daemon("worker-2").state_dir.join("certs/node.crt");
    let cert = h.moat("worker-2", &["cert", "inspect", crt.to_str().unwrap()]);
    assert!(cert.ok().contains("OU=moat-manager"), "{}", cert.stdout);
    assert!(
        h.daemon("worker-2")
            .state_dir
            .join("store/store.json")
            .exists()
    );
    h.wait_until("worker-2 to be reachable", Duration::from_secs(20), || {
        h.nodes("manager-1")["worker-2"]["manager_status"] == "reachable"
            || h.nodes("manager-1")["worker-2"]["manager_status"] == "leader"
    });
    let out = h.moat("manager-1", &["node", "demote", "worker-2"]);
    assert!(out.ok().contains("demoted"), "{}", out.stdout);
    h.wait_until(
        "worker-2 to be a worker again",
        Duration::from_secs(30),
        || {
            h.moat("worker-2", &["info", "--format", "json"]).json()["is_manager"] == false
                && h.nodes("manager-1")["worker-2"]["role"] == "worker"
        },
    );
    let cert = h.moat("worker-2", &["cert", "inspect", crt.to_str().unwrap()]);
    assert!(cert.ok().contains("OU=moat-worker"), "{}", cert.stdout);
    h.moat("worker-2", &["node", "ls"])
        .fails_with("not a cluster manager");
    assert!(
        !h.daemon("worker-2").state_dir.join("store").exists(),
        "a demoted manager deletes its store"
    );

    // A live worker cannot be removed without --force; a dead one can.
    h.moat("manager-1", &["node", "rm", "worker-3"])
        .fails_with("is not down");
    h.kill("worker-3");
    h.wait_until("worker-3 to be down", DOWN_BOUND, || {
        h.nodes("manager-1")["worker-3"]["status"] == "down"
    });
    h.moat("manager-1", &["node", "rm", "worker-3"]).ok();
    assert!(!h.nodes("manager-2").contains_key("worker-3"));
    // It comes back: refused, with a clear message.
    h.restart("worker-3");
    h.wait_until(
        "worker-3 to learn it was removed",
        Duration::from_secs(10),
        || {
            let info = h.moat("worker-3", &["info", "--format", "json"]).json();
            info["state"] == "error"
                && info["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("removed from the cluster")
        },
    );

    // A live worker removed with --force is refused within a second or so.
    h.moat("manager-1", &["node", "rm", "--force", "worker-1"])
        .ok();
    h.wait_until("worker-1 to be locked out", Duration::from_secs(5), || {
        let info = h.moat("worker-1", &["info", "--format", "json"]).json();
        info["state"] == "error"
    });

    // Demoting a manager is allowed while the other two are reachable;
    // removing a manager needs a demotion first.
    h.moat("manager-1", &["node", "rm", "manager-3"])
        .fails_with("must be demoted");
}

/// Crashes and restarts: identity survives SIGKILL, a worker fails over
/// when its manager dies, SIGTERM is clean.
#[test]
fn restart_and_failover() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1", "m2", "m3"], &["w1"]);
    let w1_id = h.nodes("m1")["w1"]["id"].clone();

    // SIGKILL the worker and start it again: same id, Ready, no token.
    h.kill("w1");
    h.restart("w1");
    let info = h.moat("w1", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "active");
    assert_eq!(info["node_id"], w1_id);
    h.wait_until("w1 ready again", Duration::from_secs(10), || {
        ready(&h, "m2", "w1")
    });

    // Kill the leader (w1 heartbeats to it): a new leader is elected and
    // w1 stays Ready through it.
    let leader = h
        .nodes("m2")
        .into_iter()
        .find(|(_, n)| n["manager_status"] == "leader")
        .map(|(name, _)| name)
        .unwrap();
    h.kill(&leader);
    let others: Vec<&str> = ["m1", "m2", "m3"]
        .into_iter()
        .filter(|m| *m != leader)
        .collect();
    h.wait_until("a new leader", Duration::from_secs(20), || {
        let n = h.nodes(others[0]);
        n.values()
            .any(|n| n["manager_status"] == "leader" && n["hostname"] != leader.as_str())
    });
    h.wait_until("the dead leader to be unreachable", DOWN_BOUND, || {
        h.nodes(others[1])[&leader]["manager_status"] == "unreachable"
    });
    // Through the whole failover and for a while after, the worker is Ready.
    for _ in 0..20 {
        assert!(
            ready(&h, others[0], "w1"),
            "the worker went down during failover"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Two of three managers are up: demoting one of them would lose quorum.
    h.moat(others[0], &["node", "demote", others[1]])
        .fails_with("quorum");

    // The old leader restarts with its identity and rejoins as a follower.
    h.restart(&leader);
    h.wait_until(
        "the old leader to be reachable again",
        Duration::from_secs(20),
        || h.nodes(others[0])[&leader]["manager_status"] == "reachable",
    );

    // SIGTERM stops a daemon cleanly (exit 0) and its socket goes away.
    assert_eq!(h.stop("w1"), Some(0));
    assert!(!h.daemon("w1").state_dir.join("moat.sock").exists());
}

/// Bad inputs to join, each with a message that names the problem.
#[test]
fn bad_join_inputs() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("m");
    h.start("other");
    h.start("w");
    let (addr, token) = h.init("m", &[]);
    let (_, foreign) = h.init("other", &[]);

    h.join("w", "MOATTKN-garbage", &addr).fails_with("token");
    // One character changed: the checksum catches it before any network.
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 12;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    let typo: String = chars.into_iter().collect();
    h.join("w", &typo, &addr).fails_with("checksum");
    h.join(
        "w",
        "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx",
        &addr,
    )
    .fails_with("Docker");
    // Another cluster's token: the CA pin does not match this manager.
    h.join("w", &foreign, &addr)
        .fails_with("is not part of the cluster this join token belongs to");
    // Nothing was left behind: the node is inactive and can still join.
    let info = h.moat("w", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "inactive");
    h.join("w", &token, &addr).ok();
    // Joining twice is refused.
    h.join("w", &token, &addr)
        .fails_with("already part of a cluster");
    // No daemon at all.
    let none = h.moat("w", &["--help"]);
    assert_eq!(none.code, 0);
}

/// A daemon killed while joining restarts either joined or cleanly
/// inactive, never half-joined.
#[test]
fn daemon_killed_mid_join() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("m");
    let (addr, token) = h.init("m", &[]);
    for (i, delay_ms) in [0u64, 15, 40, 80].into_iter().enumerate() {
        let name = format!("w{i}");
        h.start(&name);
        let join = h.spawn_join(&name, &token, &addr);
        std::thread::sleep(Duration::from_millis(delay_ms));
        h.kill(&name);
        let _ = join.wait_with_output();
        h.restart(&name);
        let info = h.moat(&name, &["info", "--format", "json"]).json();
        match info["state"].as_str().unwrap() {
            "inactive" => {
                h.join(&name, &token, &addr).ok();
            }
            "active" => {}
            other => panic!("after a kill mid-join the node is {other}: {info}"),
        }
        h.wait_until("the node to be ready", Duration::from_secs(15), || {
            ready(&h, "m", &name)
        });
    }
}

/// Certificates renew on their own, and a node whose certificate expired
/// while it was down is told how to come back, and can.
#[test]
fn certificates_renew_and_expire() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("m");
    h.start("w");
    let (addr, token) = h.init("m", &["--cert-expiry", "1m"]);
    h.join("w", &token, &addr).ok();
    let first = h.nodes("m")["w"]["cert_serial"].clone();
    // Renewal at 50–80 % of one minute: within 50 s, without a restart.
    h.wait_until(
        "the worker's certificate to renew",
        Duration::from_secs(60),
        || h.nodes("m")["w"]["cert_serial"] != first,
    );
    assert!(ready(&h, "m", "w"));

    // The whole cluster is down for longer than certificates live: both
    // come back on a clock 62 s ahead (the daemons' injected clock; no
    // sleeping), so every certificate they hold has expired.
    assert_eq!(h.stop("w"), Some(0));
    assert_eq!(h.stop("m"), Some(0));
    let later = Start {
        args: &["--danger-clock-ahead", "62s"],
        stdin: None,
    };
    // The manager renews its own certificate from the CA in its store.
    h.restart_with("m", later);
    let info = h.moat("m", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "active", "{info}");
    h.moat("m", &["node", "ls"]).ok();
    // The worker cannot: it is told exactly how to come back.
    h.restart_with("w", later);
    let info = h.moat("w", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "error", "{info}");
    let error = info["error"].as_str().unwrap();
    assert!(
        error.contains("expired") && error.contains("--rejoin"),
        "{error}"
    );
    let id = info["node_id"].clone();
    let token = h
        .moat("m", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    h.moat(
        "w",
        &[
            "join",
            "--rejoin",
            "--token",
            &token,
            "--listen-addr",
            "127.0.0.1:0",
            &addr,
        ],
    )
    .ok();
    let info = h.moat("w", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "active");
    assert_eq!(info["node_id"], id, "a rejoin keeps the node's identity");
    h.wait_until(
        "the rejoined worker to be ready",
        Duration::from_secs(15),
        || ready(&h, "m", "w"),
    );
}

/// Leaving: a worker leaves and can join again; a manager whose leaving
/// would lose quorum is refused unless --force; the last manager too.
#[test]
fn leave_rules() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, token) = h.cluster(&["m1", "m2", "m3"], &["w"]);

    // The worker leaves: its state is gone, the cluster shows it Down.
    assert_eq!(
        h.moat("w", &["leave"]).ok().trim(),
        "Node left the cluster."
    );
    let info = h.moat("w", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "inactive");
    assert!(!h.daemon("w").state_dir.join("node.json").exists());
    h.wait_until("the departed worker to be down", DOWN_BOUND, || {
        h.nodes("m1")["w"]["status"] == "down"
    });
    h.join("w", &token, &addr).ok();

    // m3 dies: m2 leaving would leave m1 and the dead m3, one of two.
    h.kill("m3");
    h.wait_until("m3 to be unreachable", DOWN_BOUND, || {
        h.nodes("m1")["m3"]["manager_status"] == "unreachable"
    });
    h.moat("m2", &["leave"]).fails_with("quorum");
    assert_eq!(
        h.moat("m2", &["info", "--format", "json"]).json()["state"],
        "active"
    );
    // With --force it leaves anyway, within a bounded time.
    h.moat("m2", &["leave", "--force"]).ok();
    let info = h.moat("m2", &["info", "--format", "json"]).json();
    assert_eq!(info["state"], "inactive");
}

/// `moat dev` starts a whole cluster; a killed daemon is reported and the
/// others go on as a real cluster would (issue 20, item 1): another
/// manager leads, the dead one shows Down, `moat dev restart` brings it
/// back Ready. SIGTERM stops every daemon.
#[test]
fn dev_cluster_survives_a_dead_leader() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let dir = h.dir().join("dev");
    /// `moat dev`, stopped with SIGTERM (so that it stops its daemons)
    /// if the test fails before it does.
    struct Dev(std::process::Child);
    impl Drop for Dev {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.0.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = self.0.wait();
            }
        }
    }
    let mut dev = Dev(Command::new(h.moat_binary())
        .args(["dev", "--managers", "3", "--workers", "1", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let dev = &mut dev.0;
    // Standard error, line by line, as moat dev prints it.
    let stderr = dev.stderr.take().unwrap();
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let said_in = said.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            let mut said = said_in.lock().unwrap();
            said.push_str(&line);
            said.push('\n');
        }
    });
    let stdout = dev.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // name -> (MOAT_HOST, pid); and the leader's name.
    let mut nodes = std::collections::BTreeMap::new();
    let mut leader = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("export MOAT_HOST") {
            continue;
        }
        if let Some(at) = line.find("MOAT_HOST=unix://") {
            let name = line.split_whitespace().next().unwrap().to_string();
            let host = line[at + "MOAT_HOST=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(';')
                .to_string();
            let pid: u32 = line
                .split("pid ")
                .nth(1)
                .and_then(|p| p.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no pid on {line:?}"));
            if line.ends_with("(leader)") {
                leader = Some(name.clone());
            }
            nodes.entry(name).or_insert((host, pid));
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert_eq!(nodes.len(), 4, "moat dev printed {nodes:?}");
    let leader = leader.expect("moat dev names the leader");
    let moat = |name: &str, args: &[&str]| {
        Command::new(h.moat_binary())
            .args(args)
            .env("MOAT_HOST", &nodes[name].0)
            .output()
            .unwrap()
    };
    let json = |name: &str, args: &[&str]| -> serde_json::Value {
        let out = moat(name, args);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let status_of = |on: &str, node: &str| {
        json(on, &["node", "ls", "--format", "json"])
            .as_array()
            .and_then(|all| all.iter().find(|n| n["hostname"] == node).cloned())
            .map(|n| n["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(
        json("manager-2", &["node", "ls", "--format", "json"])
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    for d in ["manager-1", "manager-2", "manager-3", "worker-1"] {
        assert!(
            dir.join(d).join("node.json").exists(),
            "{d} has no node.json"
        );
    }
    // `moat dev restart` reaches it on a socket only this user may use.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("dev.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "dev.sock is {mode:o}");

    // SIGKILL the leader's daemon: moat dev says so and keeps running.
    let killed = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nodes[&leader].1 as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(killed.is_ok());
    let other = ["manager-1", "manager-2", "manager-3"]
        .into_iter()
        .find(|m| *m != leader)
        .unwrap();
    let killed_answers = json(&leader, &["info", "--format", "json"]);
    assert!(killed_answers.is_null(), "the killed daemon still answers");
    h.wait_until("another manager to lead", Duration::from_secs(10), || {
        let info = json(other, &["info", "--format", "json"]);
        let leader_id = info["leader"].as_str().unwrap_or_default().to_string();
        !leader_id.is_empty()
            && json(other, &["node", "ls", "--format", "json"])
                .as_array()
                .is_some_and(|all| {
                    all.iter()
                        .any(|n| n["id"] == leader_id.as_str() && n["hostname"] != leader.as_str())
                })
    });
    h.wait_until("the killed leader to show Down", DOWN_BOUND, || {
        status_of(other, &leader).as_deref() == Some("down")
    });
    assert!(dev.try_wait().unwrap().is_none(), "moat dev stopped");
    let report = said.lock().unwrap().clone();
    let log = dir.join(&leader).join("daemon.log");
    assert!(
        report.contains(&format!(
            "{leader}: the daemon was killed (signal: 9 (SIGKILL))"
        )) && report.contains(&log.display().to_string())
            && report.contains(&format!("dev restart {leader} --dir ")),
        "{report}"
    );

    // Brought back as the message says, it is Ready again.
    let restart = Command::new(h.moat_binary())
        .args(["dev", "restart", &leader, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        restart.status.success(),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );
    h.wait_until("the restarted node to be Ready", DOWN_BOUND, || {
        status_of(other, &leader).as_deref() == Some("ready")
    });
    // A running node is not started twice.
    let twice = Command::new(h.moat_binary())
        .args(["dev", "restart", &leader, "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&twice.stderr).contains("is running"),
        "{}",
        String::from_utf8_lossy(&twice.stderr)
    );

    std::process::Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    let status = dev.wait().unwrap();
    assert!(status.success(), "moat dev exited with {status}");
    // Every daemon is gone, the restarted one too: their sockets no
    // longer answer.
    for name in nodes.keys() {
        assert_eq!(
            moat(name, &["info"]).status.code(),
            Some(1),
            "{name} still answers after moat dev stopped"
        );
    }
}

/// Issue 16, finding 7b: the join commands `moat init` and `moat
/// join-token` print carry the token in `MOAT_JOIN_TOKEN`, not in an
/// argument any local user reads in `ps`; a node joins with it from the
/// environment, and with `--token -` from standard input, without a
/// warning; `--token TOKEN` still joins, with one.
#[test]
fn join_takes_the_token_from_the_environment_or_standard_input() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    for name in ["m", "w-env", "w-stdin", "w-argv"] {
        h.start(name);
    }
    let init = h
        .moat("m", &["init", "--listen-addr", "127.0.0.1:0"])
        .ok()
        .to_string();
    let (token, addr) = moat_testkit::join_command(&init).unwrap();
    assert!(
        init.contains(&format!("\n    MOAT_JOIN_TOKEN={token} moat join {addr}\n")),
        "{init}"
    );
    assert!(!init.contains("--token"), "{init}");
    for args in [
        &["join-token", "worker"][..],
        &["join-token", "manager"],
        &["join-token", "create", "--role", "worker", "--uses", "1"],
    ] {
        let out = h.moat("m", args).ok().to_string();
        let (t, a) = moat_testkit::join_command(&out).unwrap();
        assert!(t.starts_with("MOATTKN-1-") && a == addr, "{out}");
        assert!(!out.contains("--token"), "{out}");
    }

    // The printed command, as a shell runs it: the token in the
    // environment of `moat join` alone.
    let out = h.moat_env(
        "w-env",
        &["join", "--listen-addr", "127.0.0.1:0", &addr],
        &[("MOAT_JOIN_TOKEN", &token)],
        None,
    );
    assert_eq!(out.ok().trim(), "This node joined the cluster as a worker.");
    assert_eq!(out.stderr, "", "no warning");

    // Standard input: one line, as `moat join-token -q worker | …` gives it.
    let quiet = h
        .moat("m", &["join-token", "-q", "worker"])
        .ok()
        .to_string();
    let out = h.moat_stdin(
        "w-stdin",
        &[
            "join",
            "--token",
            "-",
            "--listen-addr",
            "127.0.0.1:0",
            &addr,
        ],
        &quiet,
    );
    assert_eq!(out.ok().trim(), "This node joined the cluster as a worker.");
    assert_eq!(out.stderr, "", "no warning");

    // The old way still works, with a warning on stderr.
    let out = h.moat(
        "w-argv",
        &[
            "join",
            "--token",
            &token,
            "--listen-addr",
            "127.0.0.1:0",
            &addr,
        ],
    );
    assert_eq!(out.ok().trim(), "This node joined the cluster as a worker.");
    assert!(
        out.stderr
            .starts_with("warning: the join token is on the command line"),
        "{}",
        out.stderr
    );
    h.wait_until("three ready workers", Duration::from_secs(20), || {
        ["w-env", "w-stdin", "w-argv"]
            .iter()
            .all(|w| ready(&h, "m", w))
    });
}

/// Issue 16, finding 5: a daemon refuses a host name with an OSC escape
/// before it starts (so it never joins and never reaches the cluster's
/// store), saying why without sending the escape to the terminal; a
/// cluster's `node ls` shows only clean names.
#[test]
fn a_hostile_hostname_never_reaches_the_cluster() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("m");
    let (addr, _token) = h.init("m", &[]);
    let evil = "\u{1b}]0;pwned\u{7}";
    let state = h.dir().join("evil");
    let out = std::process::Command::new(h.moat_binary())
        .arg("daemon")
        .arg("--state-dir")
        .arg(&state)
        .args(["--hostname", evil])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.lines().next(),
        Some(
            "moat: invalid --hostname: the host name has U+001B at character 1: \
             only ASCII letters, digits, hyphens and dots are allowed"
        ),
        "{err:?}"
    );
    assert!(
        err.contains("hint: give a host name of ASCII letters"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(
        !state.exists(),
        "the refused daemon made its state directory"
    );
    assert!(!addr.is_empty());
    let table = h.moat("m", &["node", "ls"]).ok().to_string();
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert_eq!(table.lines().count(), 2, "{table}");
}
