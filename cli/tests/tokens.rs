//! Scoped join tokens end to end: real daemons, driven through the CLI.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use moat_testkit::Harness;

fn harness() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_moat"))
}

fn token_entry(h: &Harness, id: &str) -> Option<serde_json::Value> {
    let all = h
        .moat("m", &["join-token", "ls", "--format", "json"])
        .json();
    all.as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
}

/// A `--uses 1` token raced by several nodes: exactly one joins, the
/// others are told the token is used up; the joined node carries the
/// token's labels; `ls` never shows a secret; every attempt is logged by
/// fingerprint, never by secret.
#[test]
fn single_use_token_under_a_race() {
    let mut h = harness();
    // Three managers: the racers reach different ones, and still exactly
    // one wins (the Raft log decides).
    h.cluster(&["m", "m2", "m3"], &[]);
    let managers: Vec<String> = ["m", "m2", "m3"]
        .iter()
        .map(|m| h.nodes("m")[*m]["address"].as_str().unwrap().to_string())
        .collect();
    let racers = ["r1", "r2", "r3", "r4"];
    for r in racers {
        h.start(r);
    }
    let (id, token) = h.create_token(
        "m",
        &[
            "--role",
            "worker",
            "--uses",
            "1",
            "--label",
            "pool=gpu",
            "--description",
            "one gpu box",
        ],
    );
    let entry = token_entry(&h, &id).unwrap();
    assert_eq!(entry["uses_left"], 1);
    assert_eq!(entry["kind"], "scoped");
    let listing = h.moat("m", &["join-token", "ls"]);
    assert!(listing.ok().contains(&id), "{}", listing.stdout);
    let secret_part = token.split('-').nth(3).unwrap();
    assert!(!listing.stdout.contains(secret_part), "ls shows a secret");

    // All racers at once.
    let children: Vec<_> = racers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let addr = &managers[i % managers.len()];
            h.spawn_join(r, &token, addr)
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let joined: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(joined.len(), 1, "exactly one racer joins");
    for o in outputs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("join token has been used up"), "{err}");
        assert!(!err.contains("invalid token"), "{err}");
    }
    assert_eq!(token_entry(&h, &id).unwrap()["uses_left"], 0);
    let nodes = h.nodes("m");
    let winner = nodes
        .values()
        .find(|n| n["hostname"].as_str().unwrap().starts_with('r'))
        .expect("the joined node");
    assert_eq!(winner["labels"]["pool"], "gpu");

    // The managers' logs name each attempt by fingerprint, never by secret.
    let log: String = ["m", "m2", "m3"]
        .iter()
        .map(|m| h.daemon(m).log())
        .collect();
    assert!(log.contains("join accepted") && log.contains("join refused"));
    assert!(
        log.contains(&format!("token={id}")),
        "attempts carry the token id"
    );
    assert!(!log.contains(secret_part), "a token secret reached the log");
}

/// Expiry, revocation, and a lifetime for the standing tokens.
#[test]
fn expiry_revocation_and_standing_ttl() {
    let mut h = harness();
    let (addr, worker_token) = h.cluster(&["m"], &[]);
    for w in ["w1", "w2", "w3"] {
        h.start(w);
    }

    // A token that lives two seconds.
    let (_, short) = h.create_token("m", &["--role", "worker", "--ttl", "2s"]);
    std::thread::sleep(Duration::from_millis(2_500));
    let err = h.join("w1", &short, &addr);
    let err = err.fails_with("join token expired at");
    assert!(!err.contains("invalid"), "{err}");

    // A revoked token is simply invalid.
    let (id, revoked) = h.create_token("m", &["--role", "worker"]);
    h.moat("m", &["join-token", "revoke", &id[..8]]).ok();
    assert!(token_entry(&h, &id).is_none());
    h.join("w1", &revoked, &addr)
        .fails_with("invalid join token");
    // The standing tokens cannot be revoked, only rotated.
    let standing = h
        .moat("m", &["join-token", "ls", "--format", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "standing")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    h.moat("m", &["join-token", "revoke", &standing])
        .fails_with("no scoped join token");
    // Bad limits are refused before anything is created.
    h.moat(
        "m",
        &["join-token", "create", "--role", "worker", "--uses", "0"],
    )
    .fails_with("--uses");

    // A manager token created with limits admits a manager.
    let (_, manager_once) = h.create_token("m", &["--role", "manager", "--uses", "1"]);
    h.join("w2", &manager_once, &addr).ok();
    assert_eq!(h.nodes("m")["w2"]["role"], "manager");

    // Standing tokens with a lifetime rotate on their own.
    h.moat("m", &["update", "--token-ttl", "2s"]).ok();
    h.wait_until(
        "the standing worker token to rotate",
        Duration::from_secs(15),
        || h.moat("m", &["join-token", "-q", "worker"]).ok().trim() != worker_token,
    );
    let out = h.join("w3", &worker_token, &addr);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("invalid join token") || out.stderr.contains("expired"),
        "{}",
        out.stderr
    );
    h.moat("m", &["update", "--token-ttl", "none"]).ok();
    let current = h
        .moat("m", &["join-token", "-q", "worker"])
        .ok()
        .trim()
        .to_string();
    h.join("w3", &current, &addr).ok();
}
