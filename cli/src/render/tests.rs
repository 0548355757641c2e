//! Snapshots of what people read, from fixed API values and a fixed `now`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use moat_api::{ManagerStatus, Role};
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-11-27 18:00:00 UTC);
const TOKEN_W: &str = "MOATTKN-1-0h2k4m6p8r0t2v4h6k8m0p2r4t6v8h0k2m4p6r8t0v2h4k6m-0a1b2c3d4e5f6g7h8i9j0k1l2m-3f9k2d0a";
const TOKEN_M: &str = "MOATTKN-1-0h2k4m6p8r0t2v4h6k8m0p2r4t6v8h0k2m4p6r8t0v2h4k6m-9v8u7t6s5r4q3p2o1n0m9l8k7j-7u1c5e9b";

fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn node(
    id: &str,
    hostname: &str,
    role: Role,
    status: NodeStatus,
    availability: Availability,
    manager_status: Option<ManagerStatus>,
    cert_not_after: &str,
    is_self: bool,
) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        hostname: hostname.into(),
        role,
        status,
        availability,
        manager_status,
        labels: BTreeMap::new(),
        cert_not_after: cert_not_after.into(),
        is_self,
        address: "127.0.0.1:4377".into(),
        cert_serial: "5c0d4e7a19b2f3c8".into(),
        cert_issuer_fingerprint:
            "sha256:6b1f0c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b".into(),
    }
}

/// Five nodes, given out of order, covering every status, availability,
/// manager status and expiry form (future, past, unparseable).
fn cluster() -> Vec<NodeInfo> {
    use Availability::*;
    use ManagerStatus::*;
    use NodeStatus::*;
    vec![
        node(
            "9f1c0e2d4b6a8c0e2d4b6a8c0e",
            "worker-10",
            Role::Worker,
            Ready,
            Drain,
            None,
            "2026-11-28T17:00:00Z",
            false,
        ),
        node(
            "3q0kd8vj1n5s6p7r2t4u9m0abc",
            "manager-1",
            Role::Manager,
            Ready,
            Active,
            Some(Leader),
            "2026-11-28T17:59:00Z",
            true,
        ),
        node(
            "7h2m4p6r8t0v2h4k6m8p0r2t4v",
            "manager-2",
            Role::Manager,
            Down,
            Active,
            Some(Unreachable),
            "2026-11-27T16:00:00Z",
            false,
        ),
        node(
            "5a7c9e1g3i5k7m9o1q3s5u7a9c",
            "manager-3",
            Role::Manager,
            Ready,
            Pause,
            Some(Reachable),
            "2027-02-25T18:00:00Z",
            false,
        ),
        node(
            "1b3d5f7h9j1l3n5p7r9t1v3b5d",
            "worker-2",
            Role::Worker,
            Ready,
            Active,
            None,
            "not a time",
            false,
        ),
    ]
}

#[test]
fn node_ls_table() {
    insta::assert_snapshot!(text(|o| node_table(o, &cluster(), NOW)));
}

#[test]
fn node_ls_quiet_uses_table_order() {
    insta::assert_snapshot!(text(|o| node_ids(o, &cluster())));
}

#[test]
fn node_ls_empty_is_a_header() {
    assert_eq!(
        text(|o| node_table(o, &[], NOW)),
        "ID   HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS   CERT EXPIRES\n"
    );
}

#[test]
fn node_inspect_manager_with_labels() {
    let mut n = cluster().swap_remove(1);
    n.labels.insert("zone".into(), "eu-west-1a".into());
    n.labels.insert("disk".into(), "ssd".into());
    insta::assert_snapshot!(text(|o| node_fields(o, &n, NOW)));
}

/// Guards issue 16, finding 5: a host name with an OSC sequence (from a
/// store written before joins were checked) and a label with a screen
/// clear and a new line are shown escaped in `node ls` and `node
/// inspect`: nothing reaches the terminal raw, and every row stays one
/// line.
#[test]
fn hostile_host_names_and_labels_are_printed_escaped() {
    let mut nodes = cluster();
    nodes[0].hostname = "\u{1b}]0;pwned\u{7}".into();
    nodes[1].hostname = "evil\u{9b}2J\nfake-row".into();
    nodes[2]
        .labels
        .insert("zone\u{1b}[2J".into(), "a\r\u{202e}b".into());
    let table = text(|o| node_table(o, &nodes, NOW));
    let inspect = text(|o| node_fields(o, &nodes[2], NOW));
    for t in [&table, &inspect] {
        assert!(
            !t.chars()
                .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
            "{t:?}"
        );
    }
    assert_eq!(table.lines().count(), 1 + nodes.len(), "{table}");
    assert!(table.contains("\\u{1b}]0;pwned\\u{7}"), "{table}");
    assert!(table.contains("evil\\u{9b}2J\\nfake-row"), "{table}");
    assert!(
        inspect.contains("zone\\u{1b}[2J=a\\r\\u{202e}b"),
        "{inspect}"
    );
    insta::assert_snapshot!(table);
}

#[test]
fn node_inspect_worker() {
    let n = cluster().swap_remove(0);
    insta::assert_snapshot!(text(|o| node_fields(o, &n, NOW)));
}

fn active_manager() -> Info {
    Info {
        state: NodeState::Active,
        node_id: Some("3q0kd8vj1n5s6p7r2t4u9m0abc".into()),
        hostname: "manager-1".into(),
        is_manager: true,
        cluster_id: Some("k2m4p6r8t0v2h4k6m8p0r2t4v6".into()),
        managers: 3,
        nodes: 5,
        cert_expiry_seconds: 86_400,
        autolock: false,
        manager_addresses: vec![
            "127.0.0.1:4379".into(),
            "127.0.0.1:4377".into(),
            "127.0.0.1:4378".into(),
        ],
        node_address: Some("127.0.0.1:4377".into()),
        leader: Some("3q0kd8vj1n5s6p7r2t4u9m0abc".into()),
        cert_not_after: Some("2026-11-28T17:00:00Z".into()),
        error: None,
        unlock_key_set_at: None,
        unlock_key_generation: 0,
        data_key_version: Some(1),
        root_rotation: None,
    }
}

#[test]
fn info_active_manager() {
    insta::assert_snapshot!(text(|o| info(o, &active_manager(), NOW)));
}

#[test]
fn info_autolocked_manager_shows_key_ages() {
    let i = Info {
        autolock: true,
        unlock_key_set_at: Some("2026-11-27T09:00:00Z".into()),
        unlock_key_generation: 3,
        data_key_version: Some(2),
        ..active_manager()
    };
    let t = text(|o| info(o, &i, NOW));
    assert!(
        t.contains(" Autolock Managers: true\n Unlock Key Set: 2026-11-27T09:00:00Z (generation 3)\n Store Data Key Version: 2\n"),
        "{t}"
    );
}

#[test]
fn info_worker() {
    let i = Info {
        node_id: Some("1b3d5f7h9j1l3n5p7r9t1v3b5d".into()),
        hostname: "worker-2".into(),
        is_manager: false,
        managers: 0,
        nodes: 0,
        manager_addresses: vec!["127.0.0.1:4377".into()],
        node_address: Some("127.0.0.1:4380".into()),
        leader: None,
        ..active_manager()
    };
    insta::assert_snapshot!(text(|o| info(o, &i, NOW)));
}

#[test]
fn info_error_says_why() {
    let i = Info {
        state: NodeState::Error,
        error: Some(
            "this node was removed from the cluster: run `moat leave --force`, then join again"
                .into(),
        ),
        cert_not_after: Some("2026-11-20T00:00:00Z".into()),
        ..active_manager()
    };
    insta::assert_snapshot!(text(|o| info(o, &i, NOW)));
}

#[test]
fn info_inactive_and_locked_are_one_line() {
    let inactive = Info {
        state: NodeState::Inactive,
        node_id: None,
        cluster_id: None,
        ..active_manager()
    };
    assert_eq!(text(|o| info(o, &inactive, NOW)), "Cluster: inactive\n");
    let locked = Info {
        state: NodeState::Locked,
        error: Some("This node is locked.".into()),
        ..active_manager()
    };
    let t = text(|o| info(o, &locked, NOW));
    assert!(t.starts_with("Cluster: locked\n NodeID: "), "{t:?}");
    assert!(t.ends_with(" Error: This node is locked.\n"), "{t:?}");
    assert!(
        !t.contains("Managers"),
        "a locked node knows no cluster state: {t:?}"
    );
}

#[test]
fn init_text() {
    let r = InitResponse {
        node_id: "3q0kd8vj1n5s6p7r2t4u9m0abc".into(),
        cluster_id: "k2m4p6r8t0v2h4k6m8p0r2t4v6".into(),
        advertise_addr: "192.168.1.10:4377".into(),
        worker_token: TOKEN_W.into(),
        unlock_key: None,
    };
    let t = text(|o| init(o, &r));
    assert!(t.ends_with("follow the instructions.\n"), "{t:?}");
    insta::assert_snapshot!(t);
    let locked = InitResponse {
        unlock_key: Some(UNLOCK_KEY.into()),
        ..r
    };
    let t = text(|o| init(o, &locked));
    assert!(t.contains(&format!("\n    {UNLOCK_KEY}\n")), "{t:?}");
    assert!(t.contains("moat unlock"), "{t:?}");
    insta::assert_snapshot!("init_text_autolock", t);
}

const UNLOCK_KEY: &str = "MOATKEY-1-nubug6g7bknmkgoidjsmqj7uh8k3lk8falj44esb51125dpgddg0-s1vjjvd3";

#[test]
fn unlock_shares_text() {
    let shares = [
        "MOATSHARE-1-aaaaaaa-0c-0k-04-x",
        "MOATSHARE-1-aaaaaaa-0c-0k-08-y",
    ];
    let t = text(|o| unlock_shares(o, 3, &shares));
    assert!(t.contains("any 3 of them"), "{t:?}");
    assert!(
        t.contains("Share 2 of 2:\n    MOATSHARE-1-aaaaaaa-0c-0k-08-y\n"),
        "{t:?}"
    );
    insta::assert_snapshot!(t);
}

fn token_answer(role: Role, rotated: bool) -> JoinTokenResponse {
    JoinTokenResponse {
        role,
        token: if role == Role::Worker {
            TOKEN_W
        } else {
            TOKEN_M
        }
        .into(),
        addr: "192.168.1.10:4377".into(),
        rotated,
    }
}

#[test]
fn join_token_worker() {
    let t = text(|o| join_token(o, &token_answer(Role::Worker, false), false));
    // Docker ends with a blank line; snapshots do not show trailing ones.
    assert!(t.ends_with(" 192.168.1.10:4377\n\n"), "{t:?}");
    insta::assert_snapshot!(t);
}

#[test]
fn join_token_manager_rotated() {
    insta::assert_snapshot!(text(|o| join_token(
        o,
        &token_answer(Role::Manager, true),
        false
    )));
}

#[test]
fn join_token_quiet_is_the_token_alone() {
    assert_eq!(
        text(|o| join_token(o, &token_answer(Role::Manager, true), true)),
        format!("{TOKEN_M}\n")
    );
}

#[test]
fn join_text() {
    let r = JoinResponse {
        node_id: "x".into(),
        role: Role::Manager,
        warning: None,
    };
    assert_eq!(
        text(|o| join(o, &r)),
        "This node joined the cluster as a manager.\n"
    );
}

#[test]
fn dev_summary_text() {
    let node = |name: &str, pid, leader| DevNode {
        name: name.into(),
        host: Host::unix(format!("/tmp/moat-dev-x/{name}/moat.sock")),
        pid: Some(pid),
        metrics_addr: None,
        leader,
    };
    let summary = |moat: &str, restart_dir: Option<&str>, metrics: bool| {
        let mut nodes = vec![
            node("manager-1", 2131, true),
            node("manager-2", 2132, false),
            node("worker-1", 2134, false),
        ];
        if metrics {
            for (i, n) in nodes.iter_mut().enumerate() {
                n.metrics_addr = Some(format!("127.0.0.1:{}", 9100 + i));
            }
        }
        DevSummary {
            dir: "/tmp/moat-dev-x".into(),
            removed_on_exit: restart_dir.is_none(),
            moat: moat.into(),
            restart_dir: restart_dir.map(Into::into),
            nodes,
            join_addr: "127.0.0.1:40123".into(),
            worker_token: TOKEN_W.into(),
            manager_token: TOKEN_M.into(),
        }
    };
    // `moat` on PATH, a temporary directory: `moat dev restart` needs no
    // --dir.
    insta::assert_snapshot!(text(|o| dev_summary(o, &summary("moat", None, false))));
    // Run by path (after `cargo run`), a kept directory, metrics on.
    insta::assert_snapshot!(
        "dev_summary_by_path",
        text(|o| dev_summary(
            o,
            &summary("/src/moat/target/debug/moat", Some("/tmp/moat-dev-x"), true)
        ))
    );
}

#[test]
fn human_durations_follow_docker() {
    let cases = [
        (0, "less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "about a minute"),
        (119, "about a minute"),
        (59 * 60, "59 minutes"),
        (3600, "about an hour"),
        (90 * 60, "2 hours"),
        (23 * 3600 + 59 * 60, "24 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (13 * 86_400, "13 days"),
        (14 * 86_400, "2 weeks"),
        (90 * 86_400, "3 months"),
        (730 * 86_400, "2 years"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs} s");
    }
}

#[test]
fn relative_times() {
    assert_eq!(
        relative(datetime!(2026-11-28 17:00:00 UTC), NOW),
        "in 23 hours"
    );
    assert_eq!(
        relative(datetime!(2026-11-27 16:00:00 UTC), NOW),
        "expired 2 hours ago"
    );
}

#[test]
fn exact_durations() {
    assert_eq!(exact_duration(86_400), "1 day");
    assert_eq!(exact_duration(90 * 86_400), "90 days");
    assert_eq!(exact_duration(5400), "1 hour 30 minutes");
    assert_eq!(exact_duration(45), "45 seconds");
    assert_eq!(exact_duration(0), "0 seconds");
}

#[test]
fn natural_order() {
    let mut v = vec!["node-10", "node-2", "node-1", "alpha", "node-02x"];
    v.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(v, ["alpha", "node-1", "node-2", "node-02x", "node-10"]);
}

#[test]
fn token_table() {
    let tokens = vec![
        moat_api::TokenSummary {
            id: "b50a2c231d65818a".into(),
            kind: "standing".into(),
            role: Role::Worker,
            created_at: Some("2026-11-27T20:00:00Z".into()),
            created_by: "cluster".into(),
            expires_at: None,
            uses_left: None,
            description: "standing worker token".into(),
            labels: BTreeMap::new(),
        },
        moat_api::TokenSummary {
            id: "0aa931221c362a77".into(),
            kind: "scoped".into(),
            role: Role::Manager,
            created_at: Some("2026-11-27T21:00:00Z".into()),
            created_by: "local operator on m (x)".into(),
            expires_at: Some("2026-11-28T21:00:00Z".into()),
            uses_left: Some(3),
            description: "rack 4".into(),
            labels: BTreeMap::from([("rack".to_string(), "4".to_string())]),
        },
    ];
    let shown = text(|o| token_ls(o, &tokens));
    // Never a secret: only ids (fingerprints) are printed.
    assert!(!shown.contains("MOATTKN"));
    insta::assert_snapshot!(shown);
}

/// A token's description (any operator's words, replicated to every
/// manager) cannot drive the terminal of whoever lists the tokens.
#[test]
fn token_table_escapes_descriptions() {
    let token = moat_api::TokenSummary {
        id: "0aa931221c362a77".into(),
        kind: "scoped".into(),
        role: Role::Worker,
        created_at: None,
        created_by: "x".into(),
        expires_at: None,
        uses_left: None,
        description: "rack 4\u{1b}]52;c;cm0gLXJmIH4=\u{7}".into(),
        labels: BTreeMap::new(),
    };
    let shown = text(|o| token_ls(o, &[token]));
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    assert!(
        shown.contains("rack 4\\u{1b}]52;c;cm0gLXJmIH4=\\u{7}"),
        "{shown}"
    );
}

/// Issue 16, finding 7b: the printed join command keeps the token out of
/// `moat join`'s arguments (which every local user can read in `ps`).
#[test]
fn the_join_command_passes_the_token_in_the_environment() {
    let t = text(|o| join_token(o, &token_answer(Role::Worker, false), false));
    assert!(
        t.contains(&format!(
            "\n    MOAT_JOIN_TOKEN={TOKEN_W} moat join 192.168.1.10:4377\n"
        )),
        "{t}"
    );
    assert!(!t.contains("--token"), "{t}");
}

/// An error the daemon sends back for `moat info` (it may quote a peer)
/// is shown escaped.
#[test]
fn info_error_is_escaped() {
    let mut i = active_manager();
    i.error = Some("peer \u{1b}]0;pwned\u{7} refused".into());
    let t = text(|o| info(o, &i, NOW));
    assert!(
        t.contains(" Error: peer \\u{1b}]0;pwned\\u{7} refused\n"),
        "{t}"
    );
}
