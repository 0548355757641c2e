//! Recovering from a lost quorum with `moat init --force-new-cluster`, on
//! real daemons, through the CLI.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use moat_testkit::Harness;

#[test]
fn force_new_cluster_on_the_survivor_of_a_lost_quorum() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, worker_token) = h.cluster(&["manager-1", "manager-2", "manager-3"], &["worker-1"]);
    h.moat(
        "manager-1",
        &["node", "update", "--label-add", "zone=eu", "worker-1"],
    )
    .ok();
    let before = h.moat("manager-1", &["info", "--format", "json"]).json();

    // Two of three managers are gone for good: no quorum, no writes.
    h.kill("manager-2");
    h.kill("manager-3");
    let refused = h.moat("manager-1", &["update", "--cert-expiry", "48h"]);
    refused.fails_with("quorum");

    let out = h.moat("manager-1", &["init", "--force-new-cluster"]);
    let text = out.ok();
    assert!(
        text.starts_with("Cluster initialized: current node"),
        "{text}"
    );
    // The survivor keeps the cluster: same id, same token, same objects.
    assert!(text.contains(&worker_token), "{text}");
    let after = h.moat("manager-1", &["info", "--format", "json"]).json();
    assert_eq!(after["cluster_id"], before["cluster_id"]);
    assert_eq!(after["node_id"], before["node_id"]);
    // Writes work again, on a one-voter cluster.
    h.moat("manager-1", &["update", "--cert-expiry", "48h"])
        .ok();
    let info = h.moat("manager-1", &["info", "--format", "json"]).json();
    assert_eq!(info["cert_expiry_seconds"], 172_800);
    let nodes = h.nodes("manager-1");
    assert_eq!(nodes.len(), 4, "every node record is kept: {nodes:?}");
    assert_eq!(nodes["worker-1"]["labels"]["zone"], "eu");
    assert_eq!(nodes["manager-1"]["manager_status"], "leader");
    // The worker, whose managers list still holds manager-1, stays Ready;
    // the dead managers show Down.
    h.wait_until(
        "worker Ready, dead managers Down",
        Duration::from_secs(20),
        || {
            let nodes = h.nodes("manager-1");
            nodes["worker-1"]["status"] == "ready"
                && nodes["manager-2"]["status"] == "down"
                && nodes["manager-3"]["status"] == "down"
        },
    );

    // A lost manager that comes back anyway is refused: it was evicted.
    h.restart("manager-3");
    h.wait_until(
        "manager-3 told it was removed",
        Duration::from_secs(20),
        || {
            let info = h.moat("manager-3", &["info", "--format", "json"]).json();
            info["error"]
                .as_str()
                .is_some_and(|e| e.contains("removed from the cluster"))
        },
    );
    let info = h.moat("manager-1", &["info", "--format", "json"]).json();
    assert_eq!(info["cluster_id"], before["cluster_id"]);

    // The dead managers' records go, and a new one joins: quorum is back.
    for m in ["manager-2", "manager-3"] {
        h.moat("manager-1", &["node", "rm", "--force", m]).ok();
    }
    let manager_token = h
        .moat("manager-1", &["join-token", "-q", "manager"])
        .ok()
        .trim()
        .to_string();
    h.start("manager-4");
    h.join("manager-4", &manager_token, &addr).ok();
    h.wait_until("the new manager reachable", Duration::from_secs(20), || {
        let nodes = h.nodes("manager-4");
        nodes.len() == 3 && nodes["manager-4"]["manager_status"] == "reachable"
    });
    h.moat("manager-4", &["update", "--cert-expiry", "72h"])
        .ok();
    let info = h.moat("manager-1", &["info", "--format", "json"]).json();
    assert_eq!(info["cert_expiry_seconds"], 259_200);
}

#[test]
fn force_new_cluster_needs_a_manager() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.start("idle");
    h.moat("idle", &["init", "--force-new-cluster"])
        .fails_with("moat restore");
    h.cluster(&["manager-1"], &["worker-1"]);
    h.moat("worker-1", &["init", "--force-new-cluster"])
        .fails_with("only a manager can force a new cluster");
    // A healthy cluster is never forked.
    h.moat("manager-1", &["init", "--force-new-cluster"])
        .fails_with("has a quorum");
    h.moat(
        "manager-1",
        &["init", "--force-new-cluster", "--cert-expiry", "48h"],
    )
    .fails_with("cannot be combined");
}
