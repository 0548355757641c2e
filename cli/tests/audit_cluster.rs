//! The audit log of a real cluster, through the CLI: security events are
//! committed through raft on every manager, exported, verified offline,
//! tampered with and caught, proven record by record, searched by keyed
//! hash; changes fail closed without quorum; the compliance report.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use moat_testkit::Harness;
use serde_json::Value;

fn records(h: &Harness, node: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "ls", "--format", "json"];
    args.extend_from_slice(extra);
    h.moat(node, &args)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn actions(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect()
}

fn ca(h: &Harness) -> String {
    h.daemon("manager-1")
        .state_dir
        .join("certs/ca.crt")
        .display()
        .to_string()
}

/// Removes line `n` (from 1) of `path`, or swaps lines `n` and `n + 1`.
fn edit_lines(path: &Path, n: usize, swap: bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    if swap {
        lines.swap(n - 1, n);
    } else {
        lines.remove(n - 1);
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn security_events_are_logged_on_every_manager_and_verify_offline() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, worker_token) = h.cluster(&["manager-1", "manager-2", "manager-3"], &["worker-1"]);
    let workers: Vec<String> = h
        .nodes("manager-1")
        .into_iter()
        .filter(|(_, n)| n["role"] == "worker")
        .map(|(id, _)| id)
        .collect();
    let worker = workers[0].clone();

    // Security events, by hand.
    h.moat("manager-1", &["join-token", "--rotate", "-q", "manager"])
        .ok();
    let (token_id, _) = h.create_token("manager-2", &["--role", "worker", "--uses", "1"]);
    h.moat(
        "manager-3",
        &["node", "update", "--label-add", "zone=eu", &worker],
    )
    .ok();
    h.moat("manager-1", &["update", "--cert-expiry", "48h"])
        .ok();
    // A refused join: a real token, revoked.
    let (revoked_id, fake) = h.create_token("manager-1", &["--role", "worker"]);
    h.moat("manager-1", &["join-token", "revoke", &revoked_id])
        .ok();
    h.start("intruder");
    assert!(h.join("intruder", &fake, &addr).code != 0);

    // Every manager holds the same ordered log (raft), with the events.
    let mine = records(&h, "manager-1", &[]);
    h.wait_until(
        "every manager to have the log",
        Duration::from_secs(10),
        || {
            ["manager-2", "manager-3"]
                .iter()
                .all(|m| records(&h, m, &[]).len() >= mine.len())
        },
    );
    for m in ["manager-2", "manager-3"] {
        assert_eq!(records(&h, m, &[])[..mine.len()], mine[..], "{m}");
    }
    let seen = actions(&mine);
    for want in [
        "cluster.init success",
        "cert.issue success",
        "node.join success",
        "token.rotate success",
        "token.create success",
        "node.label success",
        "policy.update success",
        "node.join denied",
        "token.revoke success",
    ] {
        assert!(seen.iter().any(|a| a == want), "no {want:?} in {seen:#?}");
    }
    for (i, r) in mine.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
    }
    // Who, what, from where; never a secret.
    let denied = mine
        .iter()
        .find(|r| r["action"] == "node.join" && r["outcome"] == "denied")
        .unwrap();
    assert!(
        denied["details"]["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(
        denied["reason"].as_str().unwrap().contains("token"),
        "{denied}"
    );
    let created = mine
        .iter()
        .find(|r| r["action"] == "token.create" && r["target"] == format!("token:{token_id}"))
        .unwrap();
    assert_eq!(created["target"], format!("token:{token_id}"));
    assert_eq!(created["actor"], "operator:local");
    let all_text = h
        .moat("manager-1", &["audit", "ls", "--format", "json"])
        .ok()
        .to_string();
    assert!(
        !all_text.contains(&worker_token),
        "a join token leaked into the log"
    );
    assert!(!all_text.contains(&fake));

    // The keyed hash finds the records that name a secret.
    let hashed = h
        .moat_stdin("manager-2", &["audit", "hash"], &format!("{fake}\n"))
        .ok()
        .trim()
        .to_string();
    assert!(hashed.starts_with("hmac-sha256:"), "{hashed}");
    assert_eq!(denied["details"]["token_hmac"], hashed);
    let worker_hash = h
        .moat("manager-3", &["audit", "hash", &worker_token])
        .ok()
        .trim()
        .to_string();
    assert!(
        mine.iter().any(|r| r["action"] == "node.join"
            && r["outcome"] == "success"
            && r["details"]["token_hmac"] == worker_hash),
        "the worker's join does not carry its token's keyed hash"
    );
    assert_ne!(worker_hash, hashed);

    // Filters.
    let node_only = records(&h, "manager-1", &["--action", "node"]);
    assert!(!node_only.is_empty());
    assert!(
        node_only
            .iter()
            .all(|r| r["action"].as_str().unwrap().starts_with("node."))
    );
    let table = h
        .moat("manager-1", &["audit", "ls", "--action", "token.revoke"])
        .ok()
        .to_string();
    assert!(table.starts_with("SEQ"), "{table}");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains(&revoked_id), "{table}");
    let tail = h
        .moat(
            "manager-1",
            &["audit", "tail", "-n", "2", "--format", "json"],
        )
        .ok()
        .to_string();
    assert_eq!(tail.lines().count(), 2);

    // Export both layouts; both verify against the CA alone.
    let dir = h.dir().join("export-dir");
    let file = h.dir().join("export.jsonl");
    let kept = h.dir().join("kept-head.json");
    let out = h
        .moat(
            "manager-2",
            &[
                "audit",
                "export",
                "-o",
                file.to_str().unwrap(),
                "--keep-head",
                kept.to_str().unwrap(),
            ],
        )
        .ok()
        .to_string();
    assert!(out.contains("Exported"), "{out}");
    h.moat(
        "manager-3",
        &["audit", "export", "-o", &format!("{}/", dir.display())],
    )
    .ok();
    for bundle in [&file, &dir] {
        let ok = h.moat(
            "manager-1",
            &["audit", "verify", bundle.to_str().unwrap(), "--ca", &ca(&h)],
        );
        assert!(ok.ok().starts_with("OK: "), "{}", ok.stdout);
    }
    // An existing file is never overwritten.
    h.moat(
        "manager-1",
        &["audit", "export", "-o", file.to_str().unwrap()],
    )
    .fails_with("already exists");

    // Tampering, each located by sequence number.
    let records_file = dir.join("records.jsonl");
    let pristine = std::fs::read(&records_file).unwrap();
    let verify = |h: &Harness| {
        h.moat(
            "manager-1",
            &["audit", "verify", dir.to_str().unwrap(), "--ca", &ca(h)],
        )
    };
    // A record deleted.
    edit_lines(&records_file, 5, false);
    let v = verify(&h);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains("record 5 removed"), "{}", v.stdout);
    // One byte changed.
    let mut bytes = pristine.clone();
    let line_start = pristine
        .split(|b| *b == b'\n')
        .take(6)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let pos = line_start
        + pristine[line_start..]
            .windows(8)
            .position(|w| w == b"\"target\"")
            .unwrap()
        + 11;
    bytes[pos] ^= 0x01;
    std::fs::write(&records_file, &bytes).unwrap();
    let v = verify(&h);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains("record 7 was altered"), "{}", v.stdout);
    // Two reordered.
    std::fs::write(&records_file, &pristine).unwrap();
    edit_lines(&records_file, 3, true);
    let v = verify(&h);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains("reordered"), "{}", v.stdout);
    std::fs::write(&records_file, &pristine).unwrap();
    verify(&h).ok();

    // The log grows; a later export is consistent with the kept head…
    h.moat("manager-1", &["join-token", "--rotate", "-q", "worker"])
        .ok();
    let later = h.dir().join("later");
    h.moat(
        "manager-1",
        &["audit", "export", "-o", &format!("{}/", later.display())],
    )
    .ok();
    let later_ok = h.moat(
        "manager-1",
        &[
            "audit",
            "verify",
            later.to_str().unwrap(),
            "--ca",
            &ca(&h),
            "--trusted-head",
            kept.to_str().unwrap(),
        ],
    );
    assert!(
        later_ok.ok().contains("consistent with the trusted head"),
        "{}",
        later_ok.stdout
    );
    // …and truncating its tail (with its heads) back before the kept head
    // is caught.
    let kept_size = serde_json::from_str::<Value>(&std::fs::read_to_string(&kept).unwrap()).unwrap()
        ["size"]
        .as_u64()
        .unwrap() as usize;
    let heads_file = later.join("heads.json");
    let mut header: Value =
        serde_json::from_str(&std::fs::read_to_string(&heads_file).unwrap()).unwrap();
    header["heads"] = Value::Array(
        header["heads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["size"].as_u64().unwrap() < kept_size as u64 - 2)
            .cloned()
            .collect(),
    );
    std::fs::write(&heads_file, header.to_string()).unwrap();
    let text = std::fs::read_to_string(later.join("records.jsonl")).unwrap();
    let cut: Vec<&str> = text.lines().take(kept_size - 2).collect();
    std::fs::write(later.join("records.jsonl"), cut.join("\n") + "\n").unwrap();
    let v = h.moat(
        "manager-1",
        &[
            "audit",
            "verify",
            later.to_str().unwrap(),
            "--ca",
            &ca(&h),
            "--trusted-head",
            kept.to_str().unwrap(),
        ],
    );
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stdout.contains("truncated"), "{}", v.stdout);

    // An inclusion proof for one record checks alone, and not once altered.
    let proof = h.dir().join("proof.json");
    h.moat(
        "manager-2",
        &["audit", "prove", "3", "-o", proof.to_str().unwrap()],
    )
    .ok();
    let proven = h
        .moat(
            "manager-1",
            &[
                "audit",
                "verify-proof",
                proof.to_str().unwrap(),
                "--ca",
                &ca(&h),
            ],
        )
        .ok()
        .to_string();
    assert!(proven.starts_with("record 3 is included"), "{proven}");
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    p["record"]["target"] = Value::String("node:someone-else".into());
    let forged = h.dir().join("forged.json");
    std::fs::write(&forged, p.to_string()).unwrap();
    h.moat(
        "manager-1",
        &[
            "audit",
            "verify-proof",
            forged.to_str().unwrap(),
            "--ca",
            &ca(&h),
        ],
    )
    .fails_with("does NOT prove");
    h.moat("manager-1", &["audit", "prove", "100000"])
        .fails_with("no record 100000");

    // The compliance report: every node, its algorithm, and findings.
    let report = h.moat("manager-1", &["audit", "report", "--format", "json"]);
    assert!(report.code == 0 || report.code == 3, "{}", report.stderr);
    let r: Value = serde_json::from_str(&report.stdout).unwrap();
    let nodes = r["inventory"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    assert!(
        nodes.iter().all(|n| n["algorithm"] == "ECDSA P-256"),
        "{nodes:#?}"
    );
    assert!(
        r["inventory"]["tls"]["versions"]
            .to_string()
            .contains("TLSv1.3")
    );
    let findings = r["findings"].to_string();
    assert!(findings.contains("autolock"), "{findings}");
    let html = h.dir().join("report.html");
    let _ = h.moat(
        "manager-1",
        &[
            "audit",
            "report",
            "--format",
            "html",
            "-o",
            html.to_str().unwrap(),
        ],
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("manager-2") && page.contains("worker-1"));
    assert!(!page.contains("http://") && !page.contains("https://"));
}

#[test]
fn a_change_without_quorum_fails_and_is_never_half_recorded() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["manager-1", "manager-2", "manager-3"], &[]);
    let token_before = h
        .moat("manager-1", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    h.kill("manager-2");
    h.kill("manager-3");
    let refused = h.moat("manager-1", &["join-token", "--rotate", "-q", "worker"]);
    refused.fails_with("quorum");
    // Quorum back: the change and its record are both in the log, or
    // neither is (they were one raft entry).
    h.restart("manager-2");
    h.restart("manager-3");
    h.wait_until("the cluster to answer", Duration::from_secs(30), || {
        h.moat("manager-1", &["join-token", "-q", "worker"]).code == 0
    });
    let token_after = h
        .moat("manager-1", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    let rotated = records(&h, "manager-1", &["--action", "token.rotate"]);
    assert_eq!(
        token_after != token_before,
        !rotated.is_empty(),
        "the token changed: {}, rotation records: {rotated:?}",
        token_after != token_before
    );
}

/// A loopback address with a port free right now (for `--metrics-addr`).
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `moat audit verify EXPORT --ca` with `node`'s root certificate; fails
/// the test unless the export verifies.
fn verify_export(h: &Harness, node: &str, export: &Path) {
    let ca = h.daemon(node).state_dir.join("certs/ca.crt");
    h.moat(
        node,
        &[
            "audit",
            "verify",
            export.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
        ],
    )
    .ok();
}

/// `GET /metrics` on `addr`, as text.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

/// A metric's value (the first sample whose line starts with `prefix`).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

#[test]
fn unlock_attempts_on_a_locked_manager_reach_the_log_and_the_metrics() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let addr = free_addr();
    let start = moat_testkit::Start {
        args: &["--metrics-addr", &addr],
        stdin: None,
    };
    h.start_with("m", start);
    let out = h
        .moat("m", &["init", "--listen-addr", "127.0.0.1:0", "--autolock"])
        .ok()
        .to_string();
    assert!(out.contains("MOATKEY-"), "{out}");
    let old_key = h.moat("m", &["unlock-key", "-q"]).ok().trim().to_string();
    h.moat("m", &["unlock-key", "--rotate"]).ok();
    let key = h.moat("m", &["unlock-key", "-q"]).ok().trim().to_string();
    assert_ne!(key, old_key);

    let text = scrape(&addr);
    assert_eq!(metric(&text, "moat_locked "), 0.0);
    assert_eq!(metric(&text, "moat_raft_is_leader "), 1.0);
    assert_eq!(metric(&text, "moat_autolock "), 1.0);
    assert!(metric(&text, "moat_audit_records ") >= 3.0);
    assert_eq!(metric(&text, "moat_snapshot_limit_bytes "), 268_435_456.0);
    assert_eq!(
        metric(&text, "moat_snapshot_bytes "),
        0.0,
        "no snapshot yet"
    );
    assert_eq!(metric(&text, "moat_join_refusals_total "), 0.0);
    assert!(metric(&text, "moat_root_ca_expiry_timestamp_seconds ") > 1.7e9);
    assert!(
        text.contains("moat_node_cert_expiry_timestamp_seconds{node=\""),
        "{text}"
    );
    assert!(text.contains("hostname=\"m\",role=\"manager\"}"), "{text}");
    assert!(text.contains("moat_join_token_age_seconds{id=\""), "{text}");
    assert!(!text.contains(&key), "the unlock key is in the metrics");

    // Locked after a restart: a wrong key (the one before a rotation) is
    // refused and counted.
    h.stop("m");
    h.restart_with("m", start);
    assert_eq!(metric(&scrape(&addr), "moat_locked "), 1.0);
    let wrong = old_key;
    assert_ne!(
        h.moat_stdin("m", &["unlock"], &format!("{wrong}\n")).code,
        0
    );
    let text = scrape(&addr);
    assert_eq!(metric(&text, "moat_unlock_failures_total "), 1.0);
    h.moat_stdin("m", &["unlock"], &format!("{key}\n")).ok();
    assert_eq!(metric(&scrape(&addr), "moat_locked "), 0.0);

    // The journal's events reach the cluster log once it is open again.
    h.wait_until(
        "the unlock attempts in the log",
        Duration::from_secs(10),
        || {
            let unlocks = records(&h, "m", &["--action", "node.unlock"]);
            unlocks.iter().any(|r| r["outcome"] == "denied")
                && unlocks.iter().any(|r| r["outcome"] == "success")
        },
    );
    // Forwarded once, even across further rounds.
    std::thread::sleep(Duration::from_secs(2));
    let unlocks = records(&h, "m", &["--action", "node.unlock"]);
    assert_eq!(unlocks.len(), 2, "{unlocks:#?}");
    // A node's journal speaks only for that node (issue 16, finding 2):
    // the operator it names is kept as a claim.
    let me = h.moat("m", &["info", "--format", "json"]).json()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(unlocks[0]["actor"], format!("node:{me}"));
    assert_eq!(unlocks[0]["details"]["claimed_actor"], "operator:local");
    assert_eq!(unlocks[0]["details"]["forwarded"], "journal");
    assert!(unlocks[0]["details"]["journal_seq"].is_string());

    // The leader signs a tree head on its own once records wait 30 s, and
    // it verifies.
    h.wait_until("a signed tree head", Duration::from_secs(45), || {
        metric(&scrape(&addr), "moat_audit_signed_size ") > 0.0
    });
    let export = h.dir().join("signed");
    h.moat(
        "m",
        &["audit", "export", "-o", &format!("{}/", export.display())],
    )
    .ok();
    let header: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("heads.json")).unwrap()).unwrap();
    // The export needs no head of its own when the leader's covers it all.
    let heads = header["heads"].as_array().unwrap();
    assert!(
        !heads.is_empty() && heads[0]["size"].as_u64().unwrap() > 0,
        "{header}"
    );
    verify_export(&h, "m", &export);
}

#[test]
fn tampering_found_on_a_worker_reaches_the_cluster_log() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["manager-1"], &["worker-1"]);
    let worker = h.nodes("manager-1")["worker-1"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.stop("worker-1");
    let journal = h.daemon("worker-1").state_dir.join("journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).unwrap_or_default();
    text.push_str("{\"seq\":99,\"forged\":true}\n");
    std::fs::write(&journal, text).unwrap();
    h.restart("worker-1");
    h.wait_until(
        "the worker's tamper record in the log",
        Duration::from_secs(15),
        || {
            records(
                &h,
                "manager-1",
                &["--action", "tamper.detect", "--node", &worker],
            )
            .iter()
            .any(|r| r["reason"].as_str().unwrap_or("").contains("journal.jsonl"))
        },
    );
    // Only the worker's own events: nothing it forwards names another node.
    let theirs = records(&h, "manager-1", &["--node", &worker]);
    assert!(theirs.iter().all(|r| r["node"] == worker.as_str()));
}

/// A change asked of a follower while the leader has no quorum: it fails
/// once, within the bound, and is never proposed twice.
#[test]
fn a_change_on_a_follower_without_quorum_is_proposed_once() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let names = [
        "manager-1",
        "manager-2",
        "manager-3",
        "manager-4",
        "manager-5",
    ];
    h.cluster(&names, &[]);
    let leader = h.moat("manager-1", &["info", "--format", "json"]).json()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let ids = h.nodes("manager-1");
    let leader_name = ids
        .iter()
        .find(|(_, n)| n["id"] == leader.as_str())
        .map(|(name, _)| name.clone())
        .unwrap();
    let followers: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != leader_name)
        .collect();
    let asker = followers[0];
    for gone in &followers[1..] {
        h.kill(gone);
    }
    let started = std::time::Instant::now();
    h.moat(asker, &["join-token", "--rotate", "-q", "worker"])
        .fails_with("quorum");
    assert!(started.elapsed() < Duration::from_secs(30));
    for gone in &followers[1..] {
        h.restart(gone);
    }
    h.wait_until("the cluster to answer", Duration::from_secs(30), || {
        h.moat(asker, &["join-token", "-q", "worker"]).code == 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let rotated = records(&h, asker, &["--action", "token.rotate"]);
    assert!(rotated.len() <= 1, "proposed more than once: {rotated:#?}");
}

#[test]
fn a_flood_of_refused_joins_is_rate_limited_in_the_log_and_summarised() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let metrics = free_addr();
    h.start_with(
        "m",
        moat_testkit::Start {
            args: &["--metrics-addr", &metrics],
            stdin: None,
        },
    );
    let (addr, _) = h.init("m", &[]);
    let (revoked_id, revoked) = h.create_token("m", &["--role", "worker"]);
    h.moat("m", &["join-token", "revoke", &revoked_id]).ok();
    let denied = |h: &Harness| -> Vec<Value> {
        records(h, "m", &["--action", "node.join"])
            .into_iter()
            .filter(|r| r["outcome"] == "denied")
            .collect()
    };
    let before = records(&h, "m", &[]).len();

    // Twelve refused joins from one address (loopback): five recorded one
    // by one (the per-source burst), seven counted.
    h.start("intruder");
    for _ in 0..12 {
        assert_ne!(h.join("intruder", &revoked, &addr).code, 0);
    }
    let text = scrape(&metrics);
    assert_eq!(metric(&text, "moat_join_refusals_total "), 12.0);
    assert_eq!(metric(&text, "moat_join_refusals_unrecorded_total "), 7.0);
    let one_by_one = denied(&h);
    assert_eq!(one_by_one.len(), 5, "{one_by_one:#?}");
    for r in &one_by_one {
        assert_eq!(
            r["details"]["source"].as_str().unwrap().split(':').next(),
            Some("127.0.0.1")
        );
        assert!(r["details"]["token_hmac"].is_string(), "{r}");
    }
    assert_eq!(records(&h, "m", &[]).len(), before + 5);

    // Within a minute or so, one summary record holds the seven.
    h.wait_until(
        "the summary of the refused joins",
        Duration::from_secs(90),
        || denied(&h).len() == 6,
    );
    let summary = denied(&h).pop().unwrap();
    assert_eq!(summary["details"]["suppressed"], "7", "{summary}");
    assert_eq!(summary["details"]["sources"], "127.0.0.1 ×7", "{summary}");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .contains("7 more refused join(s) were counted"),
        "{summary}"
    );
    // Nothing else was recorded meanwhile, and the log still verifies.
    assert_eq!(records(&h, "m", &[]).len(), before + 6);
    let bundle = h.dir().join("refusals.bundle");
    h.moat("m", &["audit", "export", "-o", bundle.to_str().unwrap()])
        .ok();
    verify_export(&h, "m", &bundle);
}

/// The report's "Data key created", as JSON.
fn data_key(h: &Harness, node: &str) -> Value {
    let report = h.moat(node, &["audit", "report", "--format", "json"]);
    assert!(report.code == 0 || report.code == 3, "{}", report.stderr);
    serde_json::from_str::<Value>(&report.stdout).unwrap()["inventory"]["data_key"].clone()
}

/// The one record of `action` in `node`'s log.
fn the_record(h: &Harness, node: &str, action: &str) -> Value {
    let found = records(h, node, &["--action", action]);
    assert_eq!(found.len(), 1, "{found:#?}");
    found[0].clone()
}

/// Guards: a data key's age comes from the audit log. Rotating the unlock
/// key re-wraps the data key (its file is rewritten) but does not make it
/// any younger, so the report's "Data key created" stays the time of the
/// key's making: the cluster's init for the first, the forwarded
/// `dek.rotate` (its journal time, never later than the record) after a
/// rotation.
#[test]
fn the_data_keys_age_survives_an_unlock_key_rotation() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("m");
    h.init("m", &[]);
    let init = the_record(&h, "m", "cluster.init");
    let first = data_key(&h, "m");
    assert_eq!(first["version"], 1, "{first}");
    assert_eq!(first["created_at"], init["time"], "{first} {init}");

    // Autolock on: the data key is replaced (v2) and its rotation
    // forwarded to the log.
    h.moat("m", &["update", "--autolock=true"]).ok();
    h.wait_until(
        "the data key rotation to reach the log",
        Duration::from_secs(30),
        || !records(&h, "m", &["--action", "dek.rotate"]).is_empty(),
    );
    let rotated = the_record(&h, "m", "dek.rotate");
    let claimed = rotated["details"]["claimed_time"].as_str().unwrap();
    let made = std::cmp::min(claimed, rotated["time"].as_str().unwrap());
    assert_eq!(data_key(&h, "m")["created_at"], made);

    // A rotation of the unlock key, seconds later, rewrites the key file.
    std::thread::sleep(Duration::from_millis(2100));
    h.moat("m", &["unlock-key", "--rotate", "-q"]).ok();
    let rewrapped = records(&h, "m", &["--action", "unlock_key.rotate"]);
    let rewrapped_at = rewrapped.last().unwrap()["time"].as_str().unwrap();
    assert!(rewrapped_at > made, "{rewrapped_at} {made}");
    let after = data_key(&h, "m");
    assert_eq!(after["version"], 2, "{after}");
    assert_eq!(
        after["created_at"], made,
        "the re-wrap made the key look younger"
    );
    let table = h.moat("m", &["audit", "report"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains("Data key created:"))
        .unwrap();
    assert!(line.contains(made), "{line}");
}
