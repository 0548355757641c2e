//! Root CA rotation on real daemons, through the CLI: a live cluster keeps
//! serving while it rotates; rollback; a leader crash mid-rotation; the
//! operator's own root, and the roots that are refused.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moat_pki::{ClusterId, OffsetDateTime, RootCa, RootOptions};
use moat_testkit::Harness;
use serde_json::Value;

fn ca(h: &Harness, node: &str) -> Value {
    h.moat(node, &["ca", "--format", "json"]).json()
}

fn fingerprint(h: &Harness, node: &str) -> String {
    ca(h, node)["root"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every node's recorded certificate issuer.
fn issuers(h: &Harness, node: &str) -> Vec<String> {
    h.nodes(node)
        .values()
        .map(|n| n["cert_issuer_fingerprint"].as_str().unwrap().to_string())
        .collect()
}

/// The roots a node trusts (its certs/ca.crt).
fn trusted(h: &Harness, node: &str) -> String {
    std::fs::read_to_string(h.daemon(node).state_dir.join("certs/ca.crt")).unwrap()
}

#[test]
fn a_live_cluster_rotates_without_a_failed_request() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let managers = ["manager-1", "manager-2", "manager-3"];
    let workers = ["worker-1", "worker-2", "worker-3"];
    let (addr, old_worker_token) = h.cluster(&managers, &workers);
    let old = fingerprint(&h, "manager-1");
    let old_trust = trusted(&h, "worker-1");
    let worker_id = h.nodes("manager-1")["worker-1"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Enough audit records for the leader to sign a tree head under the
    // old root (it signs every 256 records).
    for i in 0..260 {
        h.moat(
            "manager-1",
            &[
                "node",
                "update",
                "--label-add",
                &format!("pre={i}"),
                &worker_id,
            ],
        )
        .ok();
    }
    h.wait_until(
        "a tree head signed under the old root",
        Duration::from_secs(10),
        || {
            let r = h.moat("manager-1", &["audit", "report", "--format", "json"]);
            serde_json::from_str::<Value>(&r.stdout)
                .is_ok_and(|v| v["inventory"]["audit"]["heads"].as_u64() >= Some(1))
        },
    );

    // A client keeps writing to the store through every manager.
    let h = Arc::new(h);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (h, stop, ok, failed, worker_id) = (
            h.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            worker_id.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0u64;
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let m = ["manager-1", "manager-2", "manager-3"][i as usize % 3];
                let label = format!("seq={i}");
                let run = h.moat(m, &["node", "update", "--label-add", &label, &worker_id]);
                if run.code == 0 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    errors.push(run.stderr);
                }
                i += 1;
            }
            errors
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    let out = h.moat("manager-2", &["ca", "--rotate"]);
    let text = out.ok().to_string();
    assert!(text.contains("-----BEGIN CERTIFICATE-----"), "{text}");
    // Standard error is not a terminal here: the header first, the result
    // last, and no progress bar drawn or left behind (issue 20, finding 9).
    let progress: Vec<&str> = out.stderr.lines().collect();
    assert!(
        progress.len() == 2
            && progress[0].starts_with("Rotating to root ")
            && progress[1].starts_with("Root CA rotated: "),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("certificates reissued") && !out.stderr.contains('\u{1b}'),
        "{}",
        out.stderr
    );
    stop.store(true, Ordering::SeqCst);
    let errors = writer.join().unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed writes: {errors:#?}"
    );
    assert!(ok.load(Ordering::SeqCst) > 5);

    // Every node: on the new root, trusting it alone, still ready.
    let new = fingerprint(&h, "manager-3");
    assert_ne!(new, old);
    let info = ca(&h, "manager-1");
    assert_eq!(info["generation"], 1);
    assert!(info["rotation"].is_null(), "{info}");
    assert!(issuers(&h, "manager-1").iter().all(|i| *i == new));
    h.wait_until(
        "every node to trust the new root alone",
        Duration::from_secs(10),
        || {
            managers
                .iter()
                .chain(&workers)
                .all(|n| trusted(&h, n) == info["root_pem"].as_str().unwrap())
        },
    );
    assert_ne!(trusted(&h, "worker-1"), old_trust);
    h.wait_until("every node ready", Duration::from_secs(10), || {
        h.nodes("manager-1")
            .values()
            .all(|n| n["status"] == "ready")
    });
    // The audit log has the phases.
    let phases = h
        .moat(
            "manager-1",
            &["audit", "ls", "--action", "ca.rotate", "--format", "json"],
        )
        .ok()
        .to_string();
    assert!(
        phases.contains("\"phase\":\"start\"") && phases.contains("\"phase\":\"finish\""),
        "{phases}"
    );

    // The audit log signed before and after the rotation still verifies:
    // the export carries the old root too.
    let export = h.dir().join("audit");
    h.moat(
        "manager-1",
        &["audit", "export", "-o", &format!("{}/", export.display())],
    )
    .ok();
    let verified = h.moat("manager-1", &["audit", "verify", export.to_str().unwrap()]);
    assert!(verified.ok().contains("OK: "), "{}", verified.stdout);
    let roots = std::fs::read_to_string(export.join("ca.pem")).unwrap();
    assert_eq!(roots.matches("BEGIN CERTIFICATE").count(), 2, "{roots}");
    // …which the head signed before the rotation needs.
    let new_only = h.dir().join("new-root.pem");
    std::fs::write(&new_only, info["root_pem"].as_str().unwrap()).unwrap();
    let partial = h.moat(
        "manager-1",
        &[
            "audit",
            "verify",
            export.to_str().unwrap(),
            "--ca",
            new_only.to_str().unwrap(),
        ],
    );
    assert_eq!(partial.code, 1, "{}", partial.stdout);

    // Old tokens are refused, new ones work.
    let mut h = Arc::try_unwrap(h).unwrap_or_else(|_| panic!("harness still shared"));
    h.start("late-1");
    let refused = h.join("late-1", &old_worker_token, &addr);
    assert_ne!(refused.code, 0, "the old token still works");
    refused.fails_with("root CA was rotated");
    let new_token = h
        .moat("manager-1", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    assert_ne!(new_token, old_worker_token);
    h.join("late-1", &new_token, &addr).ok();
    let late = h.nodes("manager-1")["late-1"].clone();
    assert_eq!(late["cert_issuer_fingerprint"], new.as_str());
}

#[test]
fn a_rotation_waits_for_a_down_node_and_rolls_back() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, token) = h.cluster(&["manager-1"], &["worker-1"]);
    let old = fingerprint(&h, "manager-1");
    h.stop("worker-1");
    h.wait_until("worker-1 down", Duration::from_secs(15), || {
        h.nodes("manager-1")["worker-1"]["status"] == "down"
    });
    let started = h
        .moat(
            "manager-1",
            &["ca", "--rotate", "--detach", "--format", "json"],
        )
        .json();
    assert_eq!(started["rotation"]["id"], 1);
    // The manager renews; the rotation then waits for the down worker.
    h.wait_until(
        "the manager on the new root",
        Duration::from_secs(10),
        || ca(&h, "manager-1")["rotation"]["nodes_done"] == 1,
    );
    let shown = h.moat("manager-1", &["ca"]).ok().to_string();
    assert!(
        shown.contains("Waiting for") && shown.contains("worker-1 (down)"),
        "{shown}"
    );
    let info = h.moat("manager-1", &["info"]).ok().to_string();
    assert!(info.contains("Root Rotation In Progress: true"), "{info}");
    // A second rotation is refused while one is under way.
    h.moat("manager-1", &["ca", "--rotate", "--detach"])
        .fails_with("already under way");

    h.moat("manager-1", &["ca", "--rollback"]).ok();
    h.restart("worker-1");
    h.wait_until(
        "every node back on the old root",
        Duration::from_secs(20),
        || issuers(&h, "manager-1").iter().all(|i| *i == old),
    );
    let info = ca(&h, "manager-1");
    assert_eq!(info["generation"], 0);
    assert_eq!(info["root"]["fingerprint"], old.as_str());
    h.wait_until(
        "the manager to trust the old root alone",
        Duration::from_secs(10),
        || {
            trusted(&h, "manager-1") == info["root_pem"].as_str().unwrap()
                && trusted(&h, "worker-1") == info["root_pem"].as_str().unwrap()
        },
    );
    // Nothing else changed: the token still admits a node.
    h.start("late-1");
    h.join("late-1", &token, &addr).ok();
    h.moat("manager-1", &["ca", "--rollback"])
        .fails_with("no root CA rotation is under way");
}

#[test]
fn a_rotation_survives_the_leader_crashing() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["manager-1", "manager-2", "manager-3"], &["worker-1"]);
    h.stop("worker-1");
    h.wait_until("worker-1 down", Duration::from_secs(15), || {
        h.nodes("manager-1")["worker-1"]["status"] == "down"
    });
    h.moat("manager-1", &["ca", "--rotate", "--detach"]).ok();
    h.wait_until(
        "the managers on the new root",
        Duration::from_secs(15),
        || ca(&h, "manager-2")["rotation"]["nodes_done"] == 3,
    );
    let leader = h.moat("manager-2", &["info", "--format", "json"]).json()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    let leader_name = h
        .nodes("manager-2")
        .into_iter()
        .find(|(_, n)| n["id"] == leader.as_str())
        .map(|(name, _)| name)
        .unwrap();
    h.kill(&leader_name);
    let other = ["manager-1", "manager-2", "manager-3"]
        .into_iter()
        .find(|m| *m != leader_name)
        .unwrap();
    // The worker comes back; the new leader finishes the rotation.
    h.restart("worker-1");
    h.wait_until(
        "the rotation to finish under the new leader",
        Duration::from_secs(30),
        || {
            let c = h.moat(other, &["ca", "--format", "json"]);
            c.code == 0 && c.json()["generation"] == 1
        },
    );
    h.restart(&leader_name);
    h.wait_until(
        "every node ready on the new root",
        Duration::from_secs(30),
        || {
            let nodes = h.nodes(other);
            let new = fingerprint(&h, other);
            nodes
                .values()
                .all(|n| n["status"] == "ready" && n["cert_issuer_fingerprint"] == new.as_str())
        },
    );
}

#[test]
fn the_operators_own_root_is_checked_then_used() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, old_token) = h.cluster(&["manager-1"], &["worker-1"]);
    let cluster: ClusterId =
        h.moat("manager-1", &["info", "--format", "json"]).json()["cluster_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let dir = h.dir().to_path_buf();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let now = OffsetDateTime::now_utc();
    let root = |cluster: ClusterId, generation: u32, validity_days: u64, at: OffsetDateTime| {
        RootCa::generate(
            cluster,
            &RootOptions {
                generation,
                validity: Duration::from_secs(validity_days * 86_400),
                ..RootOptions::default()
            },
            at,
        )
        .unwrap()
    };
    let save = |name: &str, ca: &RootCa| {
        (
            write(&format!("{name}.crt"), &ca.certificate_pem()),
            write(
                &format!("{name}.key"),
                &moat_pki::pem_encode("PRIVATE KEY", &ca.key().to_pkcs8_der()),
            ),
        )
    };
    let rotate = |h: &Harness, cert: &str, key: &str| {
        h.moat(
            "manager-1",
            &["ca", "--rotate", "--ca-cert", cert, "--ca-key", key],
        )
    };

    let (good_crt, good_key) = save("good", &root(cluster, 40, 3650, now));
    let (expired_crt, expired_key) = save(
        "expired",
        &root(cluster, 41, 1, now - Duration::from_secs(3 * 86_400)),
    );
    let (short_crt, short_key) = save("short", &root(cluster, 42, 10, now));
    let (foreign_crt, foreign_key) = save("foreign", &root(ClusterId::generate(), 43, 3650, now));
    rotate(&h, &expired_crt, &expired_key).fails_with("expired");
    rotate(&h, &short_crt, &short_key).fails_with("too soon");
    rotate(&h, &foreign_crt, &foreign_key).fails_with("not this cluster");
    rotate(&h, &good_crt, &expired_key).fails_with("cannot be this cluster's root");
    // A node certificate is not a CA.
    let leaf = h.daemon("worker-1").state_dir.join("certs/node.crt");
    rotate(&h, leaf.to_str().unwrap(), &good_key).fails_with("cannot be this cluster's root");
    rotate(&h, &good_crt, &write("junk.key", "not a key")).fails_with("--ca-key");
    h.moat("manager-1", &["ca", "--rotate", "--ca-cert", &good_crt])
        .code
        .ne(&0)
        .then_some(())
        .unwrap();
    // Nothing started.
    assert!(ca(&h, "manager-1")["rotation"].is_null());
    assert_eq!(ca(&h, "manager-1")["generation"], 0);

    rotate(&h, &good_crt, &good_key).ok();
    let info = ca(&h, "manager-1");
    assert_eq!(info["generation"], 1);
    assert_eq!(
        info["root_pem"],
        std::fs::read_to_string(Path::new(&good_crt)).unwrap()
    );
    assert!(
        info["root"]["subject"]
            .as_str()
            .unwrap()
            .contains("moat root CA 40")
    );

    // A token made before the rotation: refused, saying why (the same
    // cluster, a rotated root) and how to get a current token; never the
    // "another cluster" message.
    h.start("late-1");
    let refused = h.join("late-1", &old_token, &addr);
    let e = refused.fails_with("the cluster's root CA was rotated since");
    assert!(e.contains("`moat join-token worker`"), "{e}");
    assert!(!e.contains("not part of the cluster"), "{e}");
    assert!(!e.contains(&old_token), "{e}");
    let new_token = h
        .moat("manager-1", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    h.join("late-1", &new_token, &addr).ok();
}
