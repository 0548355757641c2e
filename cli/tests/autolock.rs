//! Autolock end to end: real `moat daemon` processes, driven only through
//! the `moat` CLI. A manager restarted with autolock on stays locked until
//! it is given the unlock key (on standard input, from a key file or
//! descriptor, or as Shamir shares); guessing is slowed down and journaled;
//! the setting and the key move through the store to every manager, also
//! to one that was down; and a locked manager's disk holds no secret.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use moat_testkit::secrets::{base64_decode, contains, secret_field};
use moat_testkit::{Harness, Start};

/// What every command but `info` and `unlock` says on a locked manager.
const LOCKED: &str = "This node is locked. Run `moat unlock` and provide the unlock key.";

/// Cross-node propagation (a heartbeat, a commit, a re-seal) on a loaded
/// 2-core machine, with generous slack.
const PROPAGATION: Duration = Duration::from_secs(20);

fn harness() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_moat"))
}

/// One manager, initialized with `moat init --autolock`; returns the key
/// init printed.
fn autolocked_manager(h: &mut Harness, name: &str) -> String {
    h.start(name);
    let init = h.moat(
        name,
        &["init", "--autolock", "--listen-addr", "127.0.0.1:0"],
    );
    let text = init.ok();
    assert!(
        text.contains("Cluster initialized") && text.contains("moat unlock"),
        "{text}"
    );
    printed_key(text)
}

/// The unlock key a command printed: exactly one line, indented by four
/// spaces, `MOATKEY-1-<52 chars>-<8 chars>`.
#[track_caller]
fn printed_key(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("MOATKEY-")).collect();
    assert_eq!(lines.len(), 1, "one key line expected in:\n{text}");
    let key = lines[0]
        .strip_prefix("    ")
        .unwrap_or_else(|| panic!("the key line is not indented by 4 spaces:\n{text}"));
    assert_eq!(key.len(), 71, "{key:?}");
    let parts: Vec<&str> = key.split('-').collect();
    assert_eq!(parts.len(), 4, "{key:?}");
    assert_eq!((parts[0], parts[1]), ("MOATKEY", "1"), "{key:?}");
    assert_eq!((parts[2].len(), parts[3].len()), (52, 8), "{key:?}");
    key.to_string()
}

/// `info`'s state: `locked`, `active`, …
fn state(h: &Harness, name: &str) -> String {
    h.moat(name, &["info", "--format", "json"]).json()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `moat unlock` with `input` (a key or share, or several lines) on stdin.
fn unlock(h: &Harness, name: &str, input: &str) -> moat_testkit::Run {
    h.moat_stdin(name, &["unlock"], &format!("{input}\n"))
}

/// Whether `name` keeps its key-encryption key on disk (autolock off, or
/// a worker).
fn has_key_file(h: &Harness, name: &str) -> bool {
    h.daemon(name).state_dir.join("unlock.key").exists()
}

/// Waits until `name` answers cluster commands (a manager needs a leader).
#[track_caller]
fn wait_serving(h: &Harness, name: &str) {
    h.wait_until(&format!("{name} to serve node ls"), PROPAGATION, || {
        h.moat(name, &["node", "ls", "-q"]).code == 0
    });
}

/// Whether `name` answers `node ls` with `count` nodes, all Ready.
fn all_ready(h: &Harness, name: &str, count: usize) -> bool {
    let out = h.moat(name, &["node", "ls", "--format", "json"]);
    out.code == 0
        && serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|nodes| {
                nodes.len() == count && nodes.iter().all(|n| n["status"] == "ready")
            })
}

/// The records of `name`'s local security journal (`DIR/journal.jsonl`);
/// a line being written is skipped.
fn journal(h: &Harness, name: &str) -> Vec<serde_json::Value> {
    let path = h.daemon(name).state_dir.join("journal.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn journal_count(h: &Harness, name: &str, action: &str) -> usize {
    journal(h, name)
        .iter()
        .filter(|r| r["action"] == action && r["outcome"] == "success")
        .count()
}

/// Writes `text` and a newline to `DIR/file` with permission bits `mode`;
/// returns the path.
fn secret_file(h: &Harness, file: &str, text: &str, mode: u32) -> String {
    let path = h.dir().join(file);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

/// Every regular file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// A restarted manager is locked: `info` says so and every other command is
/// refused with one message. Wrong keys are refused at once five times,
/// then each attempt waits (even with the right key), 1 s, then 2 s after
/// the next failure; the right key after the wait unlocks; every attempt
/// is journaled, without the key.
#[test]
fn locked_manager_refuses_commands_and_slows_guessing() {
    let mut h = harness();
    let first = autolocked_manager(&mut h, "m");
    assert_eq!(h.moat("m", &["unlock-key", "-q"]).ok().trim(), first);
    assert!(!has_key_file(&h, "m"), "autolock on: no key on disk");
    // Rotating makes the first key a well-formed wrong key.
    let rotated = h.moat("m", &["unlock-key", "--rotate"]);
    assert!(
        rotated
            .ok()
            .starts_with("Successfully rotated manager unlock key."),
        "{}",
        rotated.stdout
    );
    let key = printed_key(&rotated.stdout);
    assert_ne!(key, first);
    assert_eq!(h.moat("m", &["unlock-key", "-q"]).ok().trim(), key);
    unlock(&h, "m", &key).fails_with("This node is not locked.");

    h.kill("m");
    h.restart("m");
    let info = h.moat("m", &["info"]);
    assert!(info.ok().contains("Cluster: locked"), "{}", info.stdout);
    assert_eq!(state(&h, "m"), "locked");
    for args in [
        &["node", "ls"][..],
        &["node", "inspect", "self"],
        &["join-token", "worker"],
        &["join-token", "ls"],
        &["unlock-key", "-q"],
        &["unlock-key", "--rotate"],
        &["update", "--autolock=false"],
        &["update", "--cert-expiry", "48h"],
        &["init", "--listen-addr", "127.0.0.1:0"],
        &["leave"],
        &["leave", "--force"],
    ] {
        h.moat("m", args).fails_with(LOCKED);
    }
    assert_eq!(
        state(&h, "m"),
        "locked",
        "a refused command changed nothing"
    );

    // Five wrong (well-formed) keys, each refused at once.
    for _ in 0..5 {
        let out = unlock(&h, "m", &first);
        let err = out.fails_with("invalid unlock key");
        assert!(!err.contains("too many"), "{err}");
        assert!(!err.contains(&first) && !err.contains(&key), "{err}");
    }
    let after_fifth = Instant::now();
    // The sixth waits, even with the right key: during the backoff no
    // guess is answered.
    let sixth = unlock(&h, "m", &key);
    assert_eq!(
        sixth.code,
        1,
        "the sixth attempt, {:?} after the fifth failure, was not throttled:\n{}",
        after_fifth.elapsed(),
        sixth.stdout
    );
    let err = sixth.fails_with("too many failed unlock attempts (5 in a row): try again in ");
    let wait: u64 = err
        .split("try again in ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {err:?}"));
    assert_eq!(wait, 1, "the first backoff is 1 s: {err}");
    assert_eq!(state(&h, "m"), "locked");
    // After the wait a guess is answered again; failing doubles the wait.
    std::thread::sleep(Duration::from_secs(wait));
    unlock(&h, "m", &first).fails_with("invalid unlock key");
    let err = unlock(&h, "m", &key)
        .fails_with("too many failed unlock attempts (6 in a row): try again in ")
        .to_string();
    assert!(
        err.contains("try again in 2 s"),
        "the second backoff is 2 s: {err}"
    );
    // Waiting out the advertised backoff is enough.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(unlock(&h, "m", &key).ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m");
    assert_eq!(state(&h, "m"), "active");
    assert!(!has_key_file(&h, "m"), "unlocking writes no key to disk");

    // The journal: five refusals, a throttled attempt, a refusal, a
    // throttled attempt, the success, in a hash chain; never the key.
    let records = journal(&h, "m");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1, "{r}");
        for field in ["time", "node", "actor", "action", "outcome", "prev"] {
            assert!(r[field].is_string(), "{field} missing in {r}");
        }
        let prev = r["prev"].as_str().unwrap();
        assert_eq!(prev.len(), 64, "{r}");
        assert_eq!(i == 0, prev.bytes().all(|b| b == b'0'), "{r}");
    }
    let unlocks: Vec<_> = records.iter().filter(|r| r["action"] == "unlock").collect();
    let outcomes: Vec<_> = unlocks.iter().map(|r| r["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        [
            "denied", "denied", "denied", "denied", "denied", "denied", "denied", "denied",
            "success"
        ],
        "{unlocks:#?}"
    );
    for (i, r) in unlocks[..8].iter().enumerate() {
        let reason = r["reason"].as_str().unwrap();
        let throttled = i == 5 || i == 7;
        assert_eq!(reason.contains("throttl"), throttled, "{r}");
        assert_eq!(reason.contains("invalid"), !throttled, "{r}");
    }
    let text = std::fs::read_to_string(h.daemon("m").state_dir.join("journal.jsonl")).unwrap();
    let log = h.daemon("m").log();
    for k in [&key, &first] {
        let (body, _) = secret_field(k);
        assert!(!text.contains(&body), "the journal holds an unlock key");
        assert!(!log.contains(&body), "the daemon log holds an unlock key");
    }
}

/// A mistyped key (one character changed) is refused by `moat unlock`
/// itself, with the parser's message, and never reaches the daemon: six in
/// a row leave no throttle behind, and the right key unlocks at once.
#[test]
fn mistyped_keys_are_refused_by_the_cli_and_never_throttle() {
    let mut h = harness();
    let key = autolocked_manager(&mut h, "m");
    h.kill("m");
    h.restart("m");
    assert_eq!(state(&h, "m"), "locked");
    let before = journal(&h, "m").len();
    for i in 0..6 {
        let mut typo: Vec<u8> = key.clone().into_bytes();
        // A character of the secret field, changed within the alphabet.
        let at = 12 + i;
        typo[at] = if typo[at] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        let err = unlock(&h, "m", &typo)
            .fails_with("invalid unlock key")
            .to_string();
        assert!(err.contains("checksum"), "attempt {i}: {err}");
        assert!(!err.contains("too many"), "attempt {i}: {err}");
    }
    assert_eq!(
        journal(&h, "m").len(),
        before,
        "a mistyped key reached the daemon"
    );
    // A throttled daemon would refuse even the right key ("too many
    // failed unlock attempts"): this one answers it at once.
    assert_eq!(unlock(&h, "m", &key).ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m");
}

/// Unattended restarts: a key file readable by others stops the daemon
/// at start; a private key file, or the key on an inherited descriptor,
/// unlocks it before it serves; a stale key leaves it locked (and
/// journaled) but running.
#[test]
fn unattended_unlock_from_a_key_file_or_descriptor() {
    let mut h = harness();
    let old = autolocked_manager(&mut h, "m");
    let key = h
        .moat("m", &["unlock-key", "--rotate", "-q"])
        .ok()
        .trim()
        .to_string();
    assert_ne!(key, old);
    assert_eq!(h.stop("m"), Some(0));

    let loose = secret_file(&h, "loose.key", &key, 0o644);
    let refused = h.run_daemon(
        "m",
        Start {
            args: &["--unlock-key-file", &loose],
            stdin: None,
        },
        Duration::from_secs(20),
    );
    assert!(
        refused.code > 0,
        "a daemon given a key file readable by others must exit non-zero at start (exit {}):\n{}",
        refused.code,
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&loose) && refused.stderr.contains("0644"),
        "the refusal names the file and its mode:\n{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(&secret_field(&key).0));

    let private = secret_file(&h, "private.key", &key, 0o600);
    h.restart_with(
        "m",
        Start {
            args: &["--unlock-key-file", &private],
            stdin: None,
        },
    );
    // Unlocked before the control socket answers.
    assert_eq!(state(&h, "m"), "active");
    wait_serving(&h, "m");

    h.kill("m");
    let input = format!("{key}\n");
    h.restart_with(
        "m",
        Start {
            args: &["--unlock-key-fd", "0"],
            stdin: Some(&input),
        },
    );
    assert_eq!(state(&h, "m"), "active");
    wait_serving(&h, "m");

    // A key file from before the rotation: the daemon runs, locked.
    h.kill("m");
    let stale = secret_file(&h, "stale.key", &old, 0o600);
    h.restart_with(
        "m",
        Start {
            args: &["--unlock-key-file", &stale],
            stdin: None,
        },
    );
    assert_eq!(state(&h, "m"), "locked");
    h.moat("m", &["node", "ls"]).fails_with(LOCKED);
    let last = journal(&h, "m").pop().unwrap();
    assert_eq!(
        (&last["action"], &last["outcome"]),
        (&"unlock".into(), &"denied".into()),
        "{last}"
    );
    assert_eq!(last["actor"], "unattended start", "{last}");
    assert_eq!(unlock(&h, "m", &key).ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m");
}

/// `update --autolock=true|false` on three managers and a worker: the
/// managers drop (and get back) their key files, the worker keeps its
/// own; a restarted manager is locked only while autolock is on; a
/// restarted worker never is. A manager down during the change follows it
/// when it is back: turned on, it restarts unlocked (its files predate
/// the change) and then locks; turned off, it restarts locked, needs the
/// key from before, and then keeps a key of its own.
#[test]
fn autolock_turned_on_and_off_across_three_managers() {
    let mut h = harness();
    let managers = ["m1", "m2", "m3"];
    h.cluster(&managers, &["w1"]);
    for n in ["m1", "m2", "m3", "w1"] {
        assert!(has_key_file(&h, n), "autolock off: {n} keeps its key");
    }
    h.moat("m2", &["unlock-key"])
        .fails_with("no unlock key is set");

    // On, with m3 down.
    assert_eq!(h.stop("m3"), Some(0));
    let out = h.moat("m1", &["update", "--autolock=true"]);
    assert!(out.ok().contains("Cluster updated."), "{}", out.stdout);
    let key = printed_key(&out.stdout);
    // The answering manager has re-sealed before answering.
    assert!(!has_key_file(&h, "m1"), "m1 re-sealed before answering");
    h.wait_until("m2 to drop its key file", PROPAGATION, || {
        !has_key_file(&h, "m2")
    });
    assert!(has_key_file(&h, "w1"), "a worker is never locked");
    h.restart("m3");
    assert_eq!(
        state(&h, "m3"),
        "active",
        "m3 was down when autolock went on"
    );
    h.wait_until("m3 to follow and drop its key file", PROPAGATION, || {
        !has_key_file(&h, "m3")
    });
    for m in managers {
        assert_eq!(h.moat(m, &["unlock-key", "-q"]).ok().trim(), key, "{m}");
    }
    assert!(has_key_file(&h, "w1"), "a worker is never locked");

    // A follower restarted: locked until unlocked, then back in the cluster.
    let m2_addr = h.nodes("m1")["m2"]["address"].as_str().unwrap().to_string();
    h.kill("m2");
    h.restart("m2");
    assert_eq!(state(&h, "m2"), "locked");
    assert!(
        std::net::TcpStream::connect(&m2_addr).is_err(),
        "a locked manager serves no cluster traffic, but {m2_addr} accepts connections"
    );
    h.moat("m2", &["join-token", "-q", "worker"])
        .fails_with(LOCKED);
    assert_eq!(unlock(&h, "m2", &key).ok().trim(), "This node is unlocked.");
    h.wait_until("m2 to see four ready nodes", PROPAGATION, || {
        all_ready(&h, "m2", 4)
    });
    // A worker restarted comes up by itself.
    h.kill("w1");
    h.restart("w1");
    assert_eq!(state(&h, "w1"), "active");

    // Off, with m2 down.
    assert_eq!(h.stop("m2"), Some(0));
    let out = h.moat("m3", &["update", "--autolock=false"]);
    assert!(out.ok().contains("Cluster updated."), "{}", out.stdout);
    assert!(!out.stdout.contains("MOATKEY"), "{}", out.stdout);
    assert!(has_key_file(&h, "m3"), "m3 re-sealed before answering");
    h.wait_until("m1 to keep its key file again", PROPAGATION, || {
        has_key_file(&h, "m1")
    });
    h.moat("m1", &["unlock-key"])
        .fails_with("no unlock key is set");
    h.restart("m2");
    assert_eq!(
        state(&h, "m2"),
        "locked",
        "m2 was down when autolock went off"
    );
    assert_eq!(unlock(&h, "m2", &key).ok().trim(), "This node is unlocked.");
    h.wait_until("m2 to follow and keep its key file", PROPAGATION, || {
        has_key_file(&h, "m2")
    });
    for m in ["m1", "m2"] {
        h.kill(m);
        h.restart(m);
        assert_eq!(state(&h, m), "active", "{m}");
    }
    h.wait_until("four ready nodes", PROPAGATION, || all_ready(&h, "m1", 4));
}

/// A manager down during a rotation unlocks once with the old key (the
/// new one is refused), re-seals under the new key as it catches up, and
/// from then on needs the new key.
#[test]
fn rotation_while_a_manager_is_down() {
    let mut h = harness();
    let managers = ["m1", "m2", "m3"];
    h.cluster_with(&managers, &[], &["--autolock"]);
    let old = h.moat("m1", &["unlock-key", "-q"]).ok().trim().to_string();
    h.wait_until(
        "the joined managers to drop their key files",
        PROPAGATION,
        || managers.iter().all(|m| !has_key_file(&h, m)),
    );
    assert_eq!(h.stop("m3"), Some(0));

    // Rotated through a follower, which has re-sealed before it answers.
    let mut follower = "";
    h.wait_until("a leader among m1 and m2", PROPAGATION, || {
        let out = h.moat("m1", &["node", "ls", "--format", "json"]);
        let Ok(nodes) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
            return false;
        };
        let status = |m: &str| {
            nodes
                .as_array()
                .and_then(|a| a.iter().find(|n| n["hostname"] == m))
                .map(|n| n["manager_status"].clone())
        };
        match (status("m1"), status("m2")) {
            (Some(a), Some(b)) if a == "leader" && b == "reachable" => follower = "m2",
            (Some(a), Some(b)) if a == "reachable" && b == "leader" => follower = "m1",
            _ => return false,
        }
        true
    });
    let resealed = journal_count(&h, follower, "unlock-key-rotated");
    let new = h
        .moat(follower, &["unlock-key", "--rotate", "-q"])
        .ok()
        .trim()
        .to_string();
    assert_ne!(new, old);
    assert_eq!(
        journal_count(&h, follower, "unlock-key-rotated"),
        resealed + 1,
        "{follower} answered before re-sealing its keys"
    );
    for m in ["m1", "m2"] {
        assert_eq!(h.moat(m, &["unlock-key", "-q"]).ok().trim(), new, "{m}");
    }
    let rotations_before = journal_count(&h, "m3", "unlock-key-rotated");

    h.restart("m3");
    assert_eq!(state(&h, "m3"), "locked");
    unlock(&h, "m3", &new).fails_with("invalid unlock key");
    assert_eq!(unlock(&h, "m3", &old).ok().trim(), "This node is unlocked.");
    h.wait_until("m3 to learn the new key", PROPAGATION, || {
        let out = h.moat("m3", &["unlock-key", "-q"]);
        out.code == 0 && out.stdout.trim() == new
    });
    h.wait_until("m3 to re-seal under the new key", PROPAGATION, || {
        journal_count(&h, "m3", "unlock-key-rotated") > rotations_before
    });

    h.kill("m3");
    h.restart("m3");
    assert_eq!(state(&h, "m3"), "locked");
    unlock(&h, "m3", &old).fails_with("invalid unlock key");
    assert_eq!(unlock(&h, "m3", &new).ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m3");

    // The whole cluster down at once (a power cut): every manager comes
    // back locked, and once each is unlocked the cluster is whole again.
    for m in managers {
        h.kill(m);
    }
    for m in managers {
        h.restart(m);
        assert_eq!(state(&h, m), "locked", "{m}");
    }
    for m in managers {
        assert_eq!(unlock(&h, m, &new).ok().trim(), "This node is unlocked.");
    }
    h.wait_until(
        "three ready managers after a full restart",
        PROPAGATION,
        || managers.iter().all(|m| all_ready(&h, m, 3)),
    );
}

/// `unlock-key --split 3/5`: five distinct shares; a locked manager
/// counts them one call at a time (refusing a repeated share, one of
/// another split and a mistyped one) and unlocks at the third; several
/// shares on stdin in one call work too; after a rotation the old shares
/// are refused. Every attempt is journaled, never a share.
#[test]
fn split_key_unlocks_with_three_of_five_shares() {
    let mut h = harness();
    let key = autolocked_manager(&mut h, "m");
    let out = h.moat("m", &["unlock-key", "--split", "3/5", "-q"]);
    let shares: Vec<String> = out.ok().lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(shares.len(), 5, "{}", out.stdout);
    assert!(
        shares.iter().all(|s| s.starts_with("MOATSHARE-1-")),
        "{shares:?}"
    );
    assert_eq!(shares.iter().collect::<BTreeSet<_>>().len(), 5);
    let (body, _) = secret_field(&key);
    assert!(!out.stdout.contains(&body), "the split shows the key");
    // Another split of the same key, to mix in.
    let other = h.moat("m", &["unlock-key", "--split", "2/3", "-q"]);
    let other: Vec<String> = other.ok().lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(other.len(), 3);
    assert!(other.iter().all(|s| !shares.contains(s)));

    h.kill("m");
    h.restart("m");
    assert_eq!(state(&h, "m"), "locked");
    let one = unlock(&h, "m", &shares[0]);
    assert!(
        one.ok()
            .contains("This node is still locked: need 3 of 5 shares, have 1."),
        "{}",
        one.stdout
    );
    assert!(
        one.stderr
            .contains("Share accepted: need 3 of 5 shares, have 1."),
        "{}",
        one.stderr
    );
    assert_eq!(state(&h, "m"), "locked");
    h.moat("m", &["node", "ls"]).fails_with(LOCKED);
    // Refused: a share given twice (by the daemon), a mistyped share (by
    // the CLI, before anything is sent). Neither counts.
    unlock(&h, "m", &shares[0]).fails_with("already given");
    let mistyped = mistype(&shares[2]);
    let err = unlock(&h, "m", &mistyped)
        .fails_with("invalid share")
        .to_string();
    assert!(err.contains("checksum"), "{err}");
    // A share of another split sets the collected ones aside (so a holder
    // of an old share cannot block the others until a restart), and the
    // operator is told.
    let foreign = unlock(&h, "m", &other[0]);
    assert!(
        foreign.ok().contains("need 2 of 3 shares, have 1."),
        "{}",
        foreign.stdout
    );
    assert!(
        foreign.stderr.contains("another split") && foreign.stderr.contains("set aside"),
        "{}",
        foreign.stderr
    );
    let back = unlock(&h, "m", &shares[1]);
    assert!(
        back.ok().contains("need 3 of 5 shares, have 1."),
        "{}",
        back.stdout
    );
    let two = unlock(&h, "m", &shares[3]);
    assert!(
        two.ok().contains("need 3 of 5 shares, have 2."),
        "{}",
        two.stdout
    );
    let three = unlock(&h, "m", &shares[0]);
    assert_eq!(three.ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m");

    // Three shares in one call.
    h.kill("m");
    h.restart("m");
    let all = unlock(
        &h,
        "m",
        &format!("{}\n{}\n{}", shares[4], shares[2], shares[0]),
    );
    assert_eq!(all.ok().trim(), "This node is unlocked.");
    assert!(all.stderr.contains("have 2."), "{}", all.stderr);
    wait_serving(&h, "m");

    // After a rotation (split at once) the old shares rebuild the old key,
    // which is refused; the new shares unlock.
    let out = h.moat("m", &["unlock-key", "--rotate", "--split", "2/3", "-q"]);
    let new: Vec<String> = out.ok().lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(new.len(), 3, "{}", out.stdout);
    h.kill("m");
    h.restart("m");
    unlock(&h, "m", &shares[4]).ok();
    unlock(&h, "m", &shares[2]).ok();
    unlock(&h, "m", &shares[0]).fails_with("invalid unlock key");
    assert_eq!(state(&h, "m"), "locked");
    let both = unlock(&h, "m", &format!("{}\n{}", new[2], new[0]));
    assert_eq!(both.ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m");

    // Every attempt is journaled, the refused shares too.
    let records = journal(&h, "m");
    let refused: Vec<_> = records
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .unwrap_or_default()
                .starts_with("unlock")
                && r["outcome"] == "denied"
        })
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "four refused unlock attempts (a repeated share, two switches \
         between splits, then old shares rebuilding the old key) should be \
         journaled, and not the mistyped share the CLI refused:\n{records:#?}"
    );
    let text = std::fs::read_to_string(h.daemon("m").state_dir.join("journal.jsonl")).unwrap();
    for share in shares.iter().chain(&other).chain(&new) {
        assert!(
            !text.contains(&secret_field(share).0),
            "the journal holds a share"
        );
    }
}

/// `share` with one character of its secret field changed (still in the
/// base32 alphabet, so that only the checksum catches it).
fn mistype(share: &str) -> String {
    let mut parts: Vec<String> = share.split('-').map(str::to_string).collect();
    let i = parts.len() - 2;
    let mut field: Vec<u8> = parts[i].clone().into_bytes();
    field[3] = if field[3] == b'a' { b'b' } else { b'a' };
    parts[i] = String::from_utf8(field).unwrap();
    parts.join("-")
}

/// With autolock turned on, a manager's state directory (stopped, and
/// running locked) and its log hold no secret in the clear: not the
/// unlock key (text or bytes), not the key the node kept on disk before,
/// not a join token, not the CA key (base64, DER or scalar), no PEM
/// private key. The node's former key no longer opens the store.
#[test]
fn no_secret_on_a_locked_managers_disk() {
    let mut h = harness();
    h.start("m");
    h.init("m", &[]);
    let scoped = h.moat("m", &["join-token", "create", "--role", "worker"]);
    let (scoped, _) = moat_testkit::join_command(scoped.ok()).unwrap();
    let dir = h.daemon("m").state_dir.clone();
    let former = std::fs::read_to_string(dir.join("unlock.key"))
        .unwrap()
        .trim()
        .to_string();
    let before = h.moat("m", &["info", "--format", "json"]).json();
    assert_eq!(before["data_key_version"], 1, "{before}");
    assert!(before["unlock_key_set_at"].is_null(), "{before}");
    let out = h.moat("m", &["update", "--autolock=true"]);
    let key = printed_key(out.ok());
    assert!(!has_key_file(&h, "m"));
    // Turning autolock on also replaces the store's data key, which
    // `moat info` shows auditors, with the unlock key's generation.
    h.wait_until("the data key to be rotated", PROPAGATION, || {
        journal_count(&h, "m", "dek-rotated") > 0
    });
    let after = h.moat("m", &["info", "--format", "json"]).json();
    assert_eq!(after["data_key_version"], 2, "{after}");
    assert_eq!(after["unlock_key_generation"], 1, "{after}");
    assert!(after["unlock_key_set_at"].is_string(), "{after}");
    assert_eq!(h.stop("m"), Some(0));

    let former_file = secret_file(&h, "former.key", &former, 0o600);
    let key_file = secret_file(&h, "unlock.key", &key, 0o600);
    let dir_arg = dir.to_str().unwrap();
    let store = |file: &str| {
        h.moat(
            "m",
            &[
                "store",
                "dump",
                "--state-dir",
                dir_arg,
                "--unlock-key-file",
                file,
                "--show-secrets",
                "--format",
                "json",
            ],
        )
    };
    let stale = store(&former_file);
    assert_ne!(stale.code, 0, "the former key still opens the store");
    let dump = store(&key_file).json();
    let cluster = &dump["state"];
    assert_eq!(cluster["unlock_key"], key.as_str());
    let ca_key = cluster["ca"]["root_key_pkcs8"]
        .as_str()
        .unwrap()
        .to_string();
    let ca_der = base64_decode(&ca_key);
    assert!(ca_der.len() > 40, "{ca_key}");
    // The private scalar: the first OCTET STRING of 32 bytes in the PKCS#8.
    let at = ca_der.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
    let scalar = ca_der[at + 2..at + 34].to_vec();
    let tokens: Vec<String> = ["manager", "worker"]
        .iter()
        .map(|r| cluster["join_tokens"][*r].as_str().unwrap().to_string())
        .chain([scoped])
        .collect();
    assert!(
        tokens.iter().all(|t| t.starts_with("MOATTKN-1-")),
        "{tokens:?}"
    );

    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("PEM private key".into(), b"PRIVATE KEY".to_vec()),
        ("CA key (base64)".into(), ca_key.clone().into_bytes()),
        ("CA key (DER)".into(), ca_der),
        ("CA key (scalar)".into(), scalar),
    ];
    for (what, armored) in [("unlock key", &key), ("former node key", &former)]
        .into_iter()
        .chain(tokens.iter().map(|t| ("join token", t)))
    {
        let (field, bytes) = secret_field(armored);
        assert!(bytes.len() >= 16, "{what}: {field}");
        secrets.push((format!("{what} (text)"), armored.clone().into_bytes()));
        secrets.push((format!("{what} (secret field)"), field.into_bytes()));
        secrets.push((format!("{what} (bytes)"), bytes));
    }
    let scan = |h: &Harness, when: &str| {
        let mut files = files_under(&dir);
        files.push(("the daemon log".into(), h.daemon("m").log().into_bytes()));
        assert!(files.len() > 5, "{when}: {files:?}");
        for (path, bytes) in &files {
            for (what, secret) in &secrets {
                assert!(
                    !contains(bytes, secret),
                    "{when}: {path} holds the {what} in the clear"
                );
            }
        }
    };
    scan(&h, "stopped");
    h.restart("m");
    assert_eq!(state(&h, "m"), "locked");
    scan(&h, "running locked");
}

/// Role changes follow autolock: a worker promoted while autolock is on
/// drops its own key and comes up locked after a restart; a manager
/// demoted gets a key of its own back and restarts unattended.
#[test]
fn promoted_worker_locks_and_demoted_manager_unlocks() {
    let mut h = harness();
    h.cluster_with(&["m1", "m2", "m3"], &["w1"], &["--autolock"]);
    let key = h.moat("m1", &["unlock-key", "-q"]).ok().trim().to_string();
    // Managers that join while autolock is on get the unlock key with
    // their certificate: no key file of their own, not even for a moment.
    for m in ["m1", "m2", "m3"] {
        assert!(!has_key_file(&h, m), "{m} keeps a key file");
    }
    assert!(has_key_file(&h, "w1"), "a worker is never locked");
    h.kill("m2");
    h.restart("m2");
    assert_eq!(state(&h, "m2"), "locked");
    assert_eq!(unlock(&h, "m2", &key).ok().trim(), "This node is unlocked.");
    wait_serving(&h, "m2");

    h.moat("m1", &["node", "promote", "w1"]).ok();
    h.wait_until(
        "w1 to act as a manager, sealed under the unlock key",
        PROPAGATION,
        || h.moat("w1", &["node", "ls", "-q"]).code == 0 && !has_key_file(&h, "w1"),
    );
    h.kill("w1");
    h.restart("w1");
    assert_eq!(state(&h, "w1"), "locked");
    assert_eq!(unlock(&h, "w1", &key).ok().trim(), "This node is unlocked.");
    wait_serving(&h, "w1");

    h.moat("m1", &["node", "demote", "m3"]).ok();
    h.wait_until("m3 to keep a key of its own", PROPAGATION, || {
        has_key_file(&h, "m3")
    });
    h.kill("m3");
    h.restart("m3");
    assert_eq!(state(&h, "m3"), "active");

    // Promoted again, it locks again (the setting is old, the role new).
    h.wait_until("m3 ready as a worker", PROPAGATION, || {
        h.nodes("m1")
            .get("m3")
            .is_some_and(|n| n["status"] == "ready" && n["role"] == "worker")
    });
    h.moat("m1", &["node", "promote", "m3"]).ok();
    h.wait_until(
        "m3 to act as a manager again, sealed under the unlock key",
        PROPAGATION,
        || h.moat("m3", &["node", "ls", "-q"]).code == 0 && !has_key_file(&h, "m3"),
    );
    h.kill("m3");
    h.restart("m3");
    assert_eq!(state(&h, "m3"), "locked");
}

/// Issue 20, finding 7 (Docker habits): `join-token ROLE` and `unlock-key`
/// print JSON on request, with what their text shows (the secret
/// included: printing it is what they are for); `-H` before the command
/// reaches the daemon, as docker's does.
#[test]
fn join_token_and_unlock_key_as_json_and_host_before_the_command() {
    let mut h = harness();
    let key = autolocked_manager(&mut h, "m");
    let host = h.daemon("m").host();

    let before = std::process::Command::new(h.moat_binary())
        .args(["-H", &host, "node", "ls", "-q"])
        .env("MOAT_HOST", "unix:///nonexistent/moat.sock")
        .output()
        .unwrap();
    assert!(before.status.success(), "{before:?}");
    assert_eq!(String::from_utf8(before.stdout).unwrap().lines().count(), 1);

    // join-token: the text's join command, token, role and address.
    let text = h.moat("m", &["join-token", "worker"]).ok().to_string();
    let json = h
        .moat("m", &["join-token", "worker", "--format", "json"])
        .json();
    assert_eq!(json["role"], "worker", "{json}");
    assert_eq!(json["rotated"], false, "{json}");
    let token = json["token"].as_str().unwrap();
    assert!(token.starts_with("MOATTKN-1-"), "{json}");
    let addr = json["addr"].as_str().unwrap();
    assert!(!addr.is_empty(), "{json}");
    let command = format!("MOAT_JOIN_TOKEN={token} moat join {addr}");
    assert_eq!(json["command"], command.as_str());
    assert!(text.contains(&format!("\n    {command}\n")), "{text}");
    let rotated = h
        .moat(
            "m",
            &["join-token", "manager", "--rotate", "--format", "json"],
        )
        .json();
    assert_eq!(rotated["role"], "manager");
    assert_eq!(rotated["rotated"], true);
    assert_eq!(
        h.moat("m", &["join-token", "-q", "manager"]).ok().trim(),
        rotated["token"].as_str().unwrap()
    );
    assert_eq!(
        h.moat("m", &["join-token", "-q", "worker", "--format", "json"])
            .code,
        2,
        "-q prints the token alone; it takes no format"
    );

    // unlock-key: the key, or the shares and how many unlock.
    let json = h.moat("m", &["unlock-key", "--format", "json"]).json();
    assert_eq!(json["key"], key.as_str(), "{json}");
    assert_eq!(json["rotated"], false, "{json}");
    assert!(
        json["set_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {json}"
    );
    let split = h
        .moat("m", &["unlock-key", "--split", "2/3", "--format", "json"])
        .json();
    assert_eq!(split["threshold"], 2, "{split}");
    let shares = split["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 3, "{split}");
    assert!(
        shares
            .iter()
            .all(|s| s.as_str().unwrap().starts_with("MOATSHARE-1-")),
        "{split}"
    );
    assert!(split.get("key").is_none(), "a split prints no whole key");
    let new = h
        .moat("m", &["unlock-key", "--rotate", "--format", "json"])
        .json();
    assert_eq!(new["rotated"], true, "{new}");
    assert_ne!(new["key"], key.as_str());
    assert_eq!(
        h.moat("m", &["unlock-key", "-q"]).ok().trim(),
        new["key"].as_str().unwrap()
    );
}
