//! Backup and restore end to end (issue 6): real `moat daemon` processes,
//! driven only through the `moat` CLI. An online backup of an autolocked
//! three-manager cluster, restored on a new address after every node and
//! state directory is gone, brings back every object; a damaged, truncated
//! or foreign backup, the wrong age identity or passphrase, and a used
//! target directory are each refused with their own message before
//! anything is written; a backup file holds no secret in the clear; a
//! restored state directory opens offline with the unlock key before its
//! first start; and a backup that outlived its manager's certificate still
//! restores into a cluster that nodes can join.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use moat_testkit::secrets::{base64_decode, contains, secret_field};
use moat_testkit::{Harness, Run};

/// Cross-node convergence (heartbeats, a commit, a node going Down after
/// 5 s) on a loaded 2-core machine, with generous slack.
const CONVERGE: Duration = Duration::from_secs(30);

/// What every command but `info` and `unlock` says on a locked manager.
const LOCKED: &str = "This node is locked. Run `moat unlock` and provide the unlock key.";

/// What a restored manager says until `moat init --force-new-cluster`.
const NOT_RUNNING: &str = "This manager was restored from a backup and is not running yet.";

// The distinct messages of a backup that cannot be used.
const TRUNCATED: &str = "the backup is truncated";
const DAMAGED: &str = "the backup is damaged or was modified";
const WRONG_IDENTITY: &str = "not encrypted to any identity";
const WRONG_PASSPHRASE: &str = "wrong passphrase for this backup";
const NOT_A_BACKUP: &str = "this is not a moat backup";
const NEEDS_IDENTITY: &str = "this backup is encrypted to age recipients";
const NEEDS_PASSPHRASE: &str = "this backup is encrypted with a passphrase, not to an identity";
const NOT_EMPTY: &str = "is not empty; restore into a new or empty directory";

fn harness() -> Harness {
    Harness::new(env!("CARGO_BIN_EXE_moat"))
}

/// Runs `moat ARGS…` with no daemon (`MOAT_HOST` unset), with `stdin` as
/// input (or `/dev/null`): the offline commands `backup inspect`,
/// `backup keygen`, `restore`, `store dump`.
fn offline(args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write as _;
    let command = format!("moat {}", args.join(" "));
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .env_remove("MOAT_HOST")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    Run {
        command,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `moat backup keygen -o DIR/file`; returns the identity file and the
/// public key (age1…) it printed.
fn keygen(h: &Harness, file: &str) -> (PathBuf, String) {
    let path = h.dir().join(file);
    let out = offline(&["backup", "keygen", "-o", s(&path)], None);
    let recipient = out
        .ok()
        .lines()
        .find_map(|l| l.strip_prefix("Public key: "))
        .unwrap_or_else(|| panic!("keygen printed no public key:\n{}", out.stdout))
        .trim()
        .to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (path, recipient)
}

/// `moat backup -o DIR/file ARGS…` against daemon `on` (with `stdin`, for
/// a passphrase); returns the backup's path.
fn backup(h: &Harness, on: &str, file: &str, args: &[&str], stdin: Option<&str>) -> PathBuf {
    let path = h.dir().join(file);
    let mut all = vec!["backup", "--output", s(&path)];
    all.extend_from_slice(args);
    let out = match stdin {
        Some(input) => h.moat_stdin(on, &all, input),
        None => h.moat(on, &all),
    };
    let text = out.ok();
    assert!(
        text.starts_with(&format!("Backup written to {} (", path.display())),
        "{text}"
    );
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(text.contains(&format!("({len} bytes, ")), "{text}");
    assert_eq!(mode(&path), 0o600, "a backup is written 0600");
    path
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `info`'s state: `locked`, `error`, `active`, …
fn state(h: &Harness, name: &str) -> String {
    h.moat(name, &["info", "--format", "json"]).json()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `moat unlock` with `key` on stdin.
fn unlock(h: &Harness, name: &str, key: &str) -> Run {
    h.moat_stdin(name, &["unlock"], &format!("{key}\n"))
}

/// Whether `name` keeps its key-encryption key on disk (autolock off).
fn has_key_file(h: &Harness, name: &str) -> bool {
    h.daemon(name).state_dir.join("unlock.key").exists()
}

/// `node ls --format json` on `name` as (hostname → node), or `None` while
/// the manager does not answer (no leader yet).
fn try_nodes(
    h: &Harness,
    name: &str,
) -> Option<std::collections::BTreeMap<String, serde_json::Value>> {
    let out = h.moat(name, &["node", "ls", "--format", "json"]);
    if out.code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    Some(
        v.as_array()?
            .iter()
            .map(|n| {
                (
                    n["hostname"].as_str().unwrap_or_default().to_string(),
                    n.clone(),
                )
            })
            .collect(),
    )
}

fn quiet_token(h: &Harness, on: &str, role: &str) -> String {
    h.moat(on, &["join-token", "-q", role])
        .ok()
        .trim()
        .to_string()
}

/// The whole path of the issue: three managers and two workers with
/// autolock on, state written, an online backup from a manager, every
/// daemon and state directory destroyed, the backup restored on a new
/// address into a new directory; the restored manager starts locked,
/// refuses a key rotated after the backup, unlocks with the key valid at
/// backup time, waits for `init --force-new-cluster`, and then serves the
/// same cluster (id, CA, nodes, labels, policy, tokens, autolock); a new
/// manager joins with a fresh token and a new worker with the worker token
/// learned before the backup.
#[test]
fn whole_cluster_restored_on_a_new_address_after_all_state_is_lost() {
    let mut h = harness();
    let managers = ["manager-1", "manager-2", "manager-3"];
    let workers = ["worker-1", "worker-2"];
    let (_, first_worker_token) = h.cluster_with(&managers, &workers, &["--autolock"]);
    let key = h
        .moat("manager-1", &["unlock-key", "-q"])
        .ok()
        .trim()
        .to_string();
    assert!(key.starts_with("MOATKEY-1-"), "{key}");
    h.wait_until("every manager to drop its key file", CONVERGE, || {
        managers.iter().all(|m| !has_key_file(&h, m))
    });

    // State to survive: a label, a policy, a scoped token, a rotated token.
    h.moat(
        "manager-1",
        &["node", "update", "--label-add", "zone=eu", "worker-1"],
    )
    .ok();
    h.moat("manager-2", &["update", "--cert-expiry", "48h"])
        .ok();
    let (scoped_id, scoped_token) = h.create_token(
        "manager-1",
        &["--role", "worker", "--uses", "3", "--description", "dr"],
    );
    let rotated = h.moat("manager-2", &["join-token", "--rotate", "worker"]);
    assert!(
        rotated
            .ok()
            .contains("Successfully rotated worker join token."),
        "{}",
        rotated.stdout
    );
    let worker_token = quiet_token(&h, "manager-1", "worker");
    assert_ne!(worker_token, first_worker_token);
    let manager_token = quiet_token(&h, "manager-1", "manager");
    let before = h.moat("manager-3", &["info", "--format", "json"]).json();
    let cluster_id = before["cluster_id"].as_str().unwrap().to_string();
    let backed_up_id = before["node_id"].as_str().unwrap().to_string();
    assert_eq!(before["cert_expiry_seconds"], 172_800);

    // An online backup from a running manager, encrypted to an age key.
    let (identity, recipient) = keygen(&h, "backup.key");
    assert_eq!(mode(&identity), 0o600, "an identity is written 0600");
    let file = backup(
        &h,
        "manager-3",
        "cluster.moat",
        &["--recipient", &recipient],
        None,
    );
    let inspect = offline(&["backup", "inspect", s(&file), "-i", s(&identity)], None);
    let text = inspect.ok();
    for line in [
        &cluster_id[..],
        &backed_up_id,
        "Nodes:         5 (3 managers)",
        "Autolock:      on",
    ] {
        assert!(text.contains(line), "inspect lacks {line:?}:\n{text}");
    }
    // The key rotated after the backup does not open it.
    let later_key = h
        .moat("manager-1", &["unlock-key", "--rotate", "-q"])
        .ok()
        .trim()
        .to_string();
    assert!(later_key.starts_with("MOATKEY-1-") && later_key != key);

    // Every node and every state directory is gone.
    for name in managers.iter().chain(&workers) {
        h.kill(name);
        let dir = h.daemon(name).state_dir.clone();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // Restored on a new address into a new directory. The key can be
    // checked before anything is written: a key rotated since is refused.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let target = h.dir().join("restored");
    let key_file = |name: &str, key: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = h.dir().join(name);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let (later_file, key_path) = (
        key_file("later.key", &later_key),
        key_file("right.key", &key),
    );
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            s(&file),
            "--state-dir",
            s(&target),
            "-i",
            s(&identity),
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
        ];
        args.extend_from_slice(extra);
        offline(&args, None)
    };
    // Without saying which cluster it must be, restore names what it found
    // and the flag to pass, and writes nothing.
    let refused = restore(&["--unlock-key-file", s(&key_path)]);
    let err = refused.fails_with(&format!("this backup is of cluster {cluster_id}"));
    assert!(
        refused
            .stderr
            .contains(&format!("--expect-cluster {cluster_id}")),
        "{err}\n{}",
        refused.stderr
    );
    assert!(
        !target.exists(),
        "a refused restore wrote {}",
        target.display()
    );
    let restore = |extra: &[&str]| {
        let mut args = vec!["--expect-cluster", &cluster_id];
        args.extend_from_slice(extra);
        restore(&args)
    };
    restore(&["--unlock-key-file", s(&later_file)]).fails_with("invalid unlock key");
    assert!(
        !target.exists(),
        "a refused restore wrote {}",
        target.display()
    );
    let out = restore(&["--unlock-key-file", s(&key_path)]);
    let text = out.ok();
    assert!(
        text.starts_with(&format!(
            "Backup of cluster {cluster_id} taken from manager {backed_up_id}\n\
             Signed by:     manager {backed_up_id} of cluster {cluster_id} (signature verified)\n\
             Root CA:       sha256:"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\nRestored manager {backed_up_id} of cluster {cluster_id} into "
        )),
        "{text}"
    );
    assert!(text.contains(&format!("advertise {addr}")), "{text}");
    assert!(text.contains("moat unlock"), "autolock was on:\n{text}");
    assert!(!target.join("unlock.key").exists(), "no key on disk");
    assert_eq!(mode(&target), 0o700);

    // Locked: the key rotated after the backup is refused, the one valid
    // when it was taken unlocks.
    h.start("restored");
    let info = h.moat("restored", &["info"]);
    assert!(info.ok().contains("Cluster: locked"), "{}", info.stdout);
    h.moat("restored", &["node", "ls"]).fails_with(LOCKED);
    unlock(&h, "restored", &later_key).fails_with("invalid unlock key");
    assert_eq!(state(&h, "restored"), "locked");
    assert_eq!(
        unlock(&h, "restored", &key).ok().trim(),
        "This node is unlocked."
    );

    // Unlocked, it waits for force-new-cluster.
    let info = h.moat("restored", &["info"]);
    assert!(info.ok().contains(NOT_RUNNING), "{}", info.stdout);
    for args in [&["node", "ls"][..], &["join-token", "-q", "worker"]] {
        h.moat("restored", args).fails_with(NOT_RUNNING);
    }
    let out = h.moat(
        "restored",
        &["init", "--force-new-cluster", "--advertise-addr", &addr],
    );
    let text = out.ok();
    assert!(
        text.starts_with(&format!(
            "Cluster initialized: current node ({backed_up_id}) is now a manager."
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("MOAT_JOIN_TOKEN={worker_token} moat join {addr}")),
        "the worker join command names the kept token and the new address:\n{text}"
    );

    // Every object survived.
    h.wait_until("the restored manager to serve", CONVERGE, || {
        try_nodes(&h, "restored").is_some()
    });
    let info = h.moat("restored", &["info", "--format", "json"]).json();
    assert_eq!(info["cluster_id"], cluster_id.as_str());
    assert_eq!(info["node_id"], backed_up_id.as_str());
    assert_eq!(info["cert_expiry_seconds"], 172_800);
    // The audit log's records came back with their segments (D45): the
    // restored manager lists the log from its first record.
    let log = h.moat("restored", &["audit", "ls"]);
    let log = log.ok();
    assert!(log.contains("cluster.init"), "{log}");
    // The lost managers' records stay (as in Docker, `info` still counts
    // them); the restored one is listed at its new address.
    assert!(
        info["manager_addresses"]
            .as_array()
            .unwrap()
            .contains(&addr.as_str().into()),
        "{info}"
    );
    let text = h.moat("restored", &["info"]);
    assert!(
        text.ok().contains("Autolock Managers: true"),
        "{}",
        text.stdout
    );
    let nodes = h.nodes("restored");
    // The restored manager runs on another machine: it reports that host name.
    assert!(!nodes.contains_key("manager-3"), "{nodes:?}");
    assert_eq!(nodes.len(), 5, "every node record is kept: {nodes:?}");
    let me = &nodes["restored"];
    assert_eq!(me["id"], backed_up_id.as_str());
    assert_eq!(me["self"], true);
    assert_eq!(me["address"], addr.as_str());
    assert_eq!(me["manager_status"], "leader");
    assert_eq!(nodes["worker-1"]["labels"]["zone"], "eu");
    h.wait_until("the four lost nodes to show Down", CONVERGE, || {
        try_nodes(&h, "restored").is_some_and(|n| {
            ["manager-1", "manager-2", "worker-1", "worker-2"]
                .iter()
                .all(|x| n[*x]["status"] == "down")
                && ["manager-1", "manager-2"]
                    .iter()
                    .all(|x| n[*x]["manager_status"] == "unreachable")
        })
    });
    // It is the only voter: it commits alone.
    h.moat(
        "restored",
        &["node", "update", "--label-add", "restored=yes", "worker-2"],
    )
    .ok();
    assert_eq!(quiet_token(&h, "restored", "worker"), worker_token);
    assert_eq!(quiet_token(&h, "restored", "manager"), manager_token);
    let tokens = h
        .moat("restored", &["join-token", "ls", "--format", "json"])
        .json();
    let scoped = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == scoped_id.as_str())
        .unwrap_or_else(|| panic!("the scoped token is gone: {tokens}"));
    assert_eq!(scoped["description"], "dr");
    assert_eq!(scoped["uses_left"], 3);
    let listing = h.moat("restored", &["join-token", "ls"]);
    assert!(listing.ok().contains(&scoped_id), "{}", listing.stdout);

    // A new manager joins with a fresh manager token.
    h.start("manager-4");
    let fresh = quiet_token(&h, "restored", "manager");
    h.join("manager-4", &fresh, &addr).ok();
    h.wait_until("manager-4 Ready and Reachable", CONVERGE, || {
        try_nodes(&h, "restored").is_some_and(|n| {
            n.get("manager-4")
                .is_some_and(|m| m["status"] == "ready" && m["manager_status"] == "reachable")
        })
    });
    // The two managers make a working quorum: a write through the new one.
    h.moat("manager-4", &["update", "--cert-expiry", "72h"])
        .ok();
    let info = h.moat("restored", &["info", "--format", "json"]).json();
    assert_eq!(info["cert_expiry_seconds"], 259_200);

    // Workers: the token from before the rotation stays refused; the
    // worker token learned before the backup and the scoped token work.
    h.start("worker-3");
    h.join("worker-3", &first_worker_token, &addr)
        .fails_with("invalid join token");
    assert_eq!(
        h.join("worker-3", &worker_token, &addr).ok().trim(),
        "This node joined the cluster as a worker."
    );
    h.start("worker-4");
    h.join("worker-4", &scoped_token, &addr).ok();
    h.wait_until("the new workers Ready", CONVERGE, || {
        try_nodes(&h, "restored").is_some_and(|n| {
            n.len() == 8
                && ["worker-3", "worker-4"]
                    .iter()
                    .all(|w| n.get(*w).is_some_and(|x| x["status"] == "ready"))
        })
    });
    let tokens = h
        .moat("restored", &["join-token", "ls", "--format", "json"])
        .json();
    let scoped = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == scoped_id.as_str())
        .unwrap();
    assert_eq!(scoped["uses_left"], 2);
}

/// A directory entry of `parent` left behind by a restore
/// (`.NAME.restoring-…`).
fn leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".restoring-"))
        .collect()
}

/// Where the age header of an encrypted backup ends: after the line that
/// starts with `--- ` (its MAC). The 16-byte payload nonce follows.
fn age_header_end(bytes: &[u8]) -> usize {
    let mac = bytes
        .windows(5)
        .position(|w| w == b"\n--- ")
        .unwrap_or_else(|| panic!("no age header in the backup"));
    mac + 1 + bytes[mac + 1..].iter().position(|&b| b == b'\n').unwrap() + 1
}

/// One bad input: what is given, and the message it must be refused with.
struct Case {
    what: String,
    file: PathBuf,
    unprotect: Vec<String>,
    stdin: Option<String>,
    needle: &'static str,
}

/// A truncated backup (at several points), a flipped byte (in the age
/// header and in the payload), the wrong age identity, no identity, a file
/// that is no backup, a passphrase backup with the wrong passphrase or
/// opened as a recipient backup: each is refused by `inspect` and
/// `restore` with its own message, and the target directory is neither
/// created nor (when it was created empty) filled, with no leftovers next
/// to it. A target that is not empty, or is a file, is refused too. The
/// intact backup, as a control, restores into an empty directory.
#[test]
fn damaged_or_foreign_backups_are_refused_before_anything_is_written() {
    let mut h = harness();
    h.start("m");
    h.init("m", &["--autolock"]);
    let (identity, recipient) = keygen(&h, "right.key");
    let (other, _) = keygen(&h, "other.key");
    // An identity is never overwritten.
    offline(&["backup", "keygen", "-o", s(&identity)], None).fails_with("File exists");
    let good = backup(&h, "m", "good.moat", &["--recipient", &recipient], None);
    let pass = backup(
        &h,
        "m",
        "pass.moat",
        &["--passphrase"],
        Some("correct horse\n"),
    );
    let bytes = std::fs::read(&good).unwrap();
    assert!(
        bytes.len() < 64 * 1024,
        "the backup fits one age chunk: {}",
        bytes.len()
    );
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    let header_end = age_header_end(&bytes);
    let payload = header_end + 16;
    assert!(payload + 100 < bytes.len());

    let bad = |name: &str, data: &[u8]| -> PathBuf {
        let path = h.dir().join(name);
        std::fs::write(&path, data).unwrap();
        path
    };
    let id_args = || vec!["-i".to_string(), s(&identity).to_string()];
    let mut cases = Vec::new();
    // Cut before or at the end of the age header (and nonce): the file
    // visibly ends early, "truncated".
    for cut in [0, 10, header_end / 2, header_end - 1, header_end, payload] {
        cases.push(Case {
            what: format!("cut at {cut} of {}", bytes.len()),
            file: bad(&format!("cut-{cut}.moat"), &bytes[..cut]),
            unprotect: id_args(),
            stdin: None,
            needle: TRUNCATED,
        });
    }
    // Cut inside the one encrypted chunk: age cannot tell a cut chunk
    // from a modified one, so this is "damaged" (see `mid_chunk` below).
    for cut in [payload + 1, (payload + bytes.len()) / 2, bytes.len() - 1] {
        cases.push(Case {
            what: format!("cut inside the chunk at {cut} of {}", bytes.len()),
            file: bad(&format!("cut-{cut}.moat"), &bytes[..cut]),
            unprotect: id_args(),
            stdin: None,
            needle: DAMAGED,
        });
    }
    // One flipped bit in the header's MAC, in the nonce, in the payload,
    // in the last byte.
    for at in [
        header_end - 3,
        header_end + 4,
        (payload + bytes.len()) / 2,
        bytes.len() - 1,
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        cases.push(Case {
            what: format!("byte {at} flipped"),
            file: bad(&format!("flip-{at}.moat"), &flipped),
            unprotect: id_args(),
            stdin: None,
            needle: DAMAGED,
        });
    }
    // One more byte after the end.
    let mut longer = bytes.clone();
    longer.push(0);
    cases.push(Case {
        what: "a byte appended".into(),
        file: bad("longer.moat", &longer),
        unprotect: id_args(),
        stdin: None,
        needle: DAMAGED,
    });
    cases.push(Case {
        what: "the wrong identity".into(),
        file: good.clone(),
        unprotect: vec!["-i".into(), s(&other).into()],
        stdin: None,
        needle: WRONG_IDENTITY,
    });
    cases.push(Case {
        what: "no identity".into(),
        file: good.clone(),
        unprotect: vec![],
        stdin: None,
        needle: NEEDS_IDENTITY,
    });
    cases.push(Case {
        what: "a text file".into(),
        file: bad(
            "notes.txt",
            b"these are not the backups you are looking for\n",
        ),
        unprotect: id_args(),
        stdin: None,
        needle: NOT_A_BACKUP,
    });
    cases.push(Case {
        what: "an identity file".into(),
        file: identity.clone(),
        unprotect: id_args(),
        stdin: None,
        needle: NOT_A_BACKUP,
    });
    cases.push(Case {
        what: "a passphrase backup, wrong passphrase".into(),
        file: pass.clone(),
        unprotect: vec!["--passphrase".into()],
        stdin: Some("battery staple\n".into()),
        needle: WRONG_PASSPHRASE,
    });
    cases.push(Case {
        what: "a passphrase backup, an identity".into(),
        file: pass.clone(),
        unprotect: id_args(),
        stdin: None,
        needle: NEEDS_PASSPHRASE,
    });

    let mut messages = std::collections::BTreeSet::new();
    for (i, case) in cases.iter().enumerate() {
        let unprotect: Vec<&str> = case.unprotect.iter().map(String::as_str).collect();
        let mut args = vec!["backup", "inspect", s(&case.file)];
        args.extend_from_slice(&unprotect);
        let err = offline(&args, case.stdin.as_deref())
            .fails_with(case.needle)
            .to_string();
        messages.insert(case.needle);
        assert!(!err.contains("panicked"), "{}: {err}", case.what);
        // A target that does not exist is not created; one created empty
        // stays empty.
        for precreate in [false, true] {
            let target = h.dir().join(format!("target-{i}-{precreate}"));
            if precreate {
                std::fs::create_dir(&target).unwrap();
            }
            let mut args = vec![
                "restore",
                s(&case.file),
                "--state-dir",
                s(&target),
                "--trust-any-cluster",
            ];
            args.extend_from_slice(&unprotect);
            let out = offline(&args, case.stdin.as_deref());
            assert_eq!(
                out.code, 1,
                "{}: restore was not refused:\n{}",
                case.what, out.stdout
            );
            assert!(
                out.stderr.contains(case.needle),
                "{}: restore refused without {:?}:\n{}",
                case.what,
                case.needle,
                out.stderr
            );
            if precreate {
                assert_eq!(
                    std::fs::read_dir(&target).unwrap().count(),
                    0,
                    "{}: the empty target was written to",
                    case.what
                );
            } else {
                assert!(!target.exists(), "{}: the target was created", case.what);
            }
        }
    }
    assert_eq!(messages.len(), 7, "{messages:?}");
    assert!(leftovers(h.dir()).is_empty(), "{:?}", leftovers(h.dir()));

    // The truncation message names where the data ran out.
    let err = offline(
        &[
            "backup",
            "inspect",
            s(&h.dir().join("cut-10.moat")),
            "-i",
            s(&identity),
        ],
        None,
    );
    assert!(err.fails_with(TRUNCATED).contains("ends inside the"));

    // A used target is refused and left as it was.
    let used = h.dir().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("keep"), b"mine").unwrap();
    let as_file = h.dir().join("a-file");
    std::fs::write(&as_file, b"mine").unwrap();
    for (target, needle) in [
        (&used, NOT_EMPTY),
        (&as_file, "exists and is not a directory"),
    ] {
        offline(
            &[
                "restore",
                s(&good),
                "--state-dir",
                s(target),
                "-i",
                s(&identity),
                "--trust-any-cluster",
            ],
            None,
        )
        .fails_with(needle);
    }
    let kept: Vec<_> = std::fs::read_dir(&used)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(kept, ["keep"]);
    assert_eq!(std::fs::read(used.join("keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read(&as_file).unwrap(), b"mine");

    // The control: the intact backup restores into an empty directory,
    // and then that directory is no longer empty.
    let fine = h.dir().join("fine");
    std::fs::create_dir(&fine).unwrap();
    let args = [
        "restore",
        s(&good),
        "--state-dir",
        s(&fine),
        "-i",
        s(&identity),
        "--trust-any-cluster",
    ];
    offline(&args, None).ok();
    assert!(fine.join("node.json").is_file() && fine.join("store/store.json").is_file());
    assert!(!fine.join("unlock.key").exists(), "autolock was on");
    offline(&args, None).fails_with(NOT_EMPTY);
    // The passphrase backup with the right passphrase, as a control too.
    offline(
        &["backup", "inspect", s(&pass), "--passphrase"],
        Some("correct horse\n"),
    )
    .ok();
    assert!(leftovers(h.dir()).is_empty(), "{:?}", leftovers(h.dir()));
}

/// Without a protection flag a backup is refused and nothing is written;
/// `--insecure-plaintext` writes one that `inspect` reads without a key
/// and that describes the cluster (JSON manifest); a passphrase backup
/// takes its passphrase from stdin, opens only with it, and restores into
/// a manager that (autolock being off) is not locked and runs after
/// `init --force-new-cluster`.
#[test]
fn plaintext_needs_a_flag_and_passphrase_backups_round_trip() {
    let mut h = harness();
    h.cluster(&["m"], &["w"]);
    let info = h.moat("m", &["info", "--format", "json"]).json();
    let out_dir = h.dir().join("out");
    std::fs::create_dir(&out_dir).unwrap();

    let refused = out_dir.join("refused.moat");
    h.moat("m", &["backup", "--output", s(&refused)])
        .fails_with("a backup holds the cluster's keys and must be encrypted");
    assert!(!refused.exists());
    h.moat("m", &["backup", "--output", s(&refused), "--passphrase"])
        .fails_with("the passphrase is empty");
    assert!(!refused.exists());
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "a refused backup leaves no temporary file"
    );

    // Plaintext, on request: inspect needs no key.
    let plain = backup(&h, "m", "out/plain.moat", &["--insecure-plaintext"], None);
    let bytes = std::fs::read(&plain).unwrap();
    assert!(!bytes.starts_with(b"age-encryption.org"), "not encrypted");
    let text = offline(&["backup", "inspect", s(&plain)], None);
    let text = text.ok();
    for line in [
        "(verified)",
        "Nodes:         2 (1 managers)",
        "Autolock:      off",
    ] {
        assert!(text.contains(line), "inspect lacks {line:?}:\n{text}");
    }
    let manifest = offline(&["backup", "inspect", s(&plain), "--format", "json"], None).json();
    assert_eq!(manifest["format"], 2);
    assert_eq!(manifest["cluster_id"], info["cluster_id"]);
    assert_eq!(manifest["origin"]["kind"], "signed");
    assert_eq!(manifest["origin"]["cluster_id"], info["cluster_id"]);
    assert_eq!(manifest["origin"]["signer"], info["node_id"]);
    assert_eq!(manifest["node_id"], info["node_id"]);
    assert_eq!(manifest["nodes"], 2);
    assert_eq!(manifest["managers"], 1);
    assert_eq!(manifest["autolock"], false);
    assert!(manifest["raft_index"].as_u64().unwrap() > 0, "{manifest}");
    assert!(manifest["raft_term"].as_u64().unwrap() >= 1, "{manifest}");
    // RFC 3339, as every command writes times (issue 20, finding 7).
    let created = unix_time(manifest["created_at"].as_str().unwrap());
    assert!(created <= now() && now() - created < 600, "{manifest}");
    let files = manifest["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    for p in [
        "node.json",
        "store/store.json",
        "certs/ca.crt",
        "unlock.key",
    ] {
        assert!(paths.contains(&p), "{p} missing: {paths:?}");
    }
    assert!(
        paths.iter().any(|p| p.starts_with("store/snapshots/")),
        "{paths:?}"
    );
    for f in files {
        assert_eq!(f["sha256"].as_str().unwrap().len(), 64, "{f}");
        assert!(f["len"].as_u64().unwrap() > 0, "{f}");
        // Octal text, as the table shows it (not 384).
        assert_eq!(f["mode"], "0600", "{f}");
        assert!(
            text.contains(&format!(
                "  0600  {:>9}  {}",
                f["len"].as_u64().unwrap(),
                f["path"].as_str().unwrap()
            )),
            "the table shows {f} otherwise:\n{text}"
        );
    }

    // Passphrase: from stdin; opens only with it.
    let pass = backup(
        &h,
        "m",
        "out/pass.moat",
        &["--passphrase"],
        Some("correct horse\n"),
    );
    assert!(
        std::fs::read(&pass)
            .unwrap()
            .starts_with(b"age-encryption.org")
    );
    let text = offline(
        &["backup", "inspect", s(&pass), "--passphrase"],
        Some("correct horse\n"),
    );
    assert!(
        text.ok().contains("Nodes:         2 (1 managers)"),
        "{}",
        text.stdout
    );
    offline(
        &["backup", "inspect", s(&pass), "--passphrase"],
        Some("correct horsf\n"),
    )
    .fails_with(WRONG_PASSPHRASE);
    offline(&["backup", "inspect", s(&pass)], None).fails_with("encrypted with a passphrase");

    // Restored from the passphrase backup: not locked, waits for
    // force-new-cluster, then serves the cluster alone.
    h.kill("m");
    h.kill("w");
    let target = h.dir().join("restored");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = offline(
        &[
            "restore",
            s(&pass),
            "--state-dir",
            s(&target),
            "--trust-any-cluster",
            "--passphrase",
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
        ],
        Some("correct horse\n"),
    );
    assert!(!out.ok().contains("moat unlock"), "{}", out.stdout);
    h.start("restored");
    assert_eq!(state(&h, "restored"), "error");
    h.moat("restored", &["node", "ls"]).fails_with(NOT_RUNNING);
    h.moat("restored", &["init", "--force-new-cluster"]).ok();
    h.wait_until("the restored manager to lead", CONVERGE, || {
        try_nodes(&h, "restored").is_some_and(|n| n["restored"]["manager_status"] == "leader")
    });
    let after = h.moat("restored", &["info", "--format", "json"]).json();
    assert_eq!(after["cluster_id"], info["cluster_id"]);
    assert_eq!(after["autolock"], false);
    assert_eq!(after["node_address"], addr.as_str());
}

/// `moat store dump --show-secrets --format json` of the state directory
/// `dir`, opened with the unlock key in `key_file`: the cluster state.
fn dump(dir: &Path, key_file: &Path) -> serde_json::Value {
    let out = offline(
        &[
            "store",
            "dump",
            "--state-dir",
            s(dir),
            "--unlock-key-file",
            s(key_file),
            "--show-secrets",
            "--format",
            "json",
        ],
        None,
    );
    out.json()["state"].clone()
}

/// One autolocked manager with a scoped token, backed up twice (to an age
/// recipient and with `--insecure-plaintext`), then stopped.
struct Backups {
    h: Harness,
    /// The unlock key, and a 0600 file holding it.
    key: String,
    key_file: PathBuf,
    /// The scoped token's text.
    scoped: String,
    identity: PathBuf,
    sealed: PathBuf,
    plain: PathBuf,
}

fn autolocked_backups() -> Backups {
    let mut h = harness();
    h.start("m");
    let init = h.moat("m", &["init", "--autolock", "--listen-addr", "127.0.0.1:0"]);
    let key = init
        .ok()
        .lines()
        .find_map(|l| l.strip_prefix("    MOATKEY-"))
        .map(|rest| format!("MOATKEY-{rest}"))
        .unwrap_or_else(|| panic!("init printed no unlock key:\n{}", init.stdout));
    let (_, scoped) = h.create_token("m", &["--role", "manager", "--uses", "2"]);
    let (identity, recipient) = keygen(&h, "backup.key");
    let sealed = backup(&h, "m", "sealed.moat", &["--recipient", &recipient], None);
    let plain = backup(&h, "m", "plain.moat", &["--insecure-plaintext"], None);
    assert_eq!(h.stop("m"), Some(0));
    let key_file = h.dir().join("unlock.txt");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Backups {
        h,
        key,
        key_file,
        scoped,
        identity,
        sealed,
        plain,
    }
}

/// With autolock on, a backup — age-encrypted, and even one written with
/// `--insecure-plaintext` — holds none of the cluster's secrets in the
/// clear: not the unlock key, not a join token, not the CA key (base64,
/// DER or scalar), no PEM private key; the plaintext one holds no
/// `unlock.key`. The secrets are learned from the stopped manager's store.
#[test]
fn no_secret_in_a_backup_of_an_autolocked_manager() {
    let b = autolocked_backups();
    let manifest = offline(
        &["backup", "inspect", s(&b.plain), "--format", "json"],
        None,
    )
    .json();
    assert_eq!(manifest["autolock"], true);
    let paths: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(!paths.contains(&"unlock.key"), "{paths:?}");

    let state = dump(&b.h.daemon("m").state_dir, &b.key_file);
    assert_eq!(state["unlock_key"], b.key.as_str());
    let ca_key = state["ca"]["root_key_pkcs8"].as_str().unwrap().to_string();
    let ca_der = base64_decode(&ca_key);
    assert!(ca_der.len() > 40, "{ca_key}");
    // The private scalar: the first OCTET STRING of 32 bytes in the PKCS#8.
    let at = ca_der.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
    let scalar = ca_der[at + 2..at + 34].to_vec();
    let tokens: Vec<String> = ["manager", "worker"]
        .iter()
        .map(|r| state["join_tokens"][*r].as_str().unwrap().to_string())
        .chain([b.scoped.clone()])
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
    for (what, armored) in
        std::iter::once(("unlock key", &b.key)).chain(tokens.iter().map(|t| ("join token", t)))
    {
        let (field, bytes) = secret_field(armored);
        assert!(bytes.len() >= 16, "{what}: {field}");
        secrets.push((format!("{what} (text)"), armored.clone().into_bytes()));
        secrets.push((format!("{what} (secret field)"), field.into_bytes()));
        secrets.push((format!("{what} (bytes)"), bytes));
    }
    for file in [&b.sealed, &b.plain] {
        let bytes = std::fs::read(file).unwrap();
        assert!(bytes.len() > 1000, "{}", file.display());
        for (what, secret) in &secrets {
            assert!(
                !contains(&bytes, secret),
                "{} holds the {what} in the clear",
                file.display()
            );
        }
    }
    // The plaintext backup really is plaintext: its file list and the
    // public CA certificate are readable in it.
    let bytes = std::fs::read(&b.plain).unwrap();
    assert!(contains(&bytes, b"store/store.json"));
    assert!(contains(&bytes, b"BEGIN CERTIFICATE"));
}

/// Regression guard: a state directory laid out by `moat restore` is a
/// manager's state directory that `moat store dump` (and `store verify`)
/// can read with the unlock key before its daemon first starts, as the
/// CLI's own hint says ("… or the root of a restored backup of it"); and
/// what it reads is the cluster's secrets, sealed in the backup: the same
/// CA key, join tokens and unlock key as the manager it came from.
#[test]
fn store_dump_reads_a_freshly_restored_state_directory() {
    let b = autolocked_backups();
    let state = dump(&b.h.daemon("m").state_dir, &b.key_file);
    for (name, file, unprotect) in [
        ("from-plain", &b.plain, vec![]),
        ("from-sealed", &b.sealed, vec!["-i", s(&b.identity)]),
    ] {
        let target = b.h.dir().join(name);
        let mut args = vec![
            "restore",
            s(file),
            "--state-dir",
            s(&target),
            "--trust-any-cluster",
        ];
        args.extend_from_slice(&unprotect);
        offline(&args, None).ok();
        offline(
            &[
                "store",
                "verify",
                "--state-dir",
                s(&target),
                "--unlock-key-file",
                s(&b.key_file),
            ],
            None,
        )
        .ok();
        let restored = dump(&target, &b.key_file);
        assert_eq!(restored["ca"], state["ca"], "{name}");
        assert_eq!(restored["join_tokens"], state["join_tokens"], "{name}");
        assert_eq!(restored["scoped_tokens"], state["scoped_tokens"], "{name}");
        assert_eq!(restored["unlock_key"], b.key.as_str(), "{name}");
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time
/// (`2026-11-29T00:24:00Z`, fractions of a second ignored).
fn unix_time(text: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| -> i64 {
        text.get(r)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 time: {text:?}"))
    };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    assert!(text.ends_with('Z'), "not UTC: {text:?}");
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Regression guard: a backup usually outlives the certificate of the
/// manager it was taken from (24 h by default, renewed after 12 to 19 h),
/// and restoring it must still work. A restored manager whose certificate
/// expired while it sat in the backup issues itself a new one from the CA
/// in its store (as a manager that was down too long does), waits for
/// `init --force-new-cluster` like any restored manager, and then serves
/// with a valid certificate: a new worker joins it.
///
/// Uses one-minute certificates, so it waits up to a minute for the one
/// in the backup to expire.
#[test]
fn restoring_a_backup_whose_certificate_has_expired() {
    let mut h = harness();
    h.cluster(&["m1"], &[]);
    h.moat("m1", &["update", "--cert-expiry", "1m"]).ok();
    // Joined after the change: its certificate lives one minute.
    h.start("m2");
    let addr = h.moat("m1", &["info", "--format", "json"]).json()["node_address"]
        .as_str()
        .unwrap()
        .to_string();
    let manager_token = quiet_token(&h, "m1", "manager");
    h.join("m2", &manager_token, &addr).ok();
    h.wait_until("m2 to serve", CONVERGE, || try_nodes(&h, "m2").is_some());
    let (identity, recipient) = keygen(&h, "backup.key");
    let file = backup(&h, "m2", "old.moat", &["--recipient", &recipient], None);
    // The certificate in the backup expires no later than the one m2
    // holds now.
    let info = h.moat("m2", &["info", "--format", "json"]).json();
    let not_after = unix_time(info["cert_not_after"].as_str().unwrap());
    assert!(not_after - now() <= 70, "a one-minute certificate: {info}");
    let worker_token = quiet_token(&h, "m1", "worker");
    h.kill("m1");
    h.kill("m2");

    let port = free_port();
    let new_addr = format!("127.0.0.1:{port}");
    let target = h.dir().join("restored");
    offline(
        &[
            "restore",
            s(&file),
            "--state-dir",
            s(&target),
            "-i",
            s(&identity),
            "--trust-any-cluster",
            "--advertise-addr",
            &new_addr,
            "--listen-addr",
            &new_addr,
        ],
        None,
    )
    .ok();
    h.wait_until(
        "the certificate in the backup to expire",
        Duration::from_secs(90),
        || now() > not_after + 1,
    );

    h.start("restored");
    let info = h.moat("restored", &["info"]);
    let text = info.ok();
    assert!(
        text.contains(NOT_RUNNING) && !text.contains("expired"),
        "the restored manager with an expired certificate should renew it \
         from its own CA and wait for force-new-cluster; it says:\n{text}\n\
         log:\n{}",
        h.daemon("restored").log()
    );
    h.moat(
        "restored",
        &["init", "--force-new-cluster", "--advertise-addr", &new_addr],
    )
    .ok();
    h.wait_until("the restored manager to serve", CONVERGE, || {
        try_nodes(&h, "restored").is_some()
    });
    let me = h.moat("restored", &["info", "--format", "json"]).json();
    assert!(
        unix_time(me["cert_not_after"].as_str().unwrap()) > now(),
        "serving with an expired certificate: {me}"
    );
    h.start("w");
    h.join("w", &worker_token, &new_addr).ok();
    h.wait_until("the new worker Ready", CONVERGE, || {
        try_nodes(&h, "restored")
            .is_some_and(|n| n.get("w").is_some_and(|w| w["status"] == "ready"))
    });
}

/// The plaintext payload of a backup taken apart (format 2): the bytes up
/// to the origin block, the block (JSON), the rest without the trailer.
fn split_origin(payload: &[u8]) -> (Vec<u8>, serde_json::Value, Vec<u8>) {
    assert!(payload.starts_with(b"MOATBACKUP2\n"), "a format 2 backup");
    let u32_at = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap()) as usize;
    let o_at = 16 + u32_at(12);
    let o_len = u32_at(o_at);
    let origin = serde_json::from_slice(&payload[o_at + 4..o_at + 4 + o_len]).unwrap();
    (
        payload[..o_at].to_vec(),
        origin,
        payload[o_at + 4 + o_len..payload.len() - 32].to_vec(),
    )
}

/// Regression (issue 16, finding 4): a backup's integrity was proven but
/// not its origin, so anyone who knew the age recipient and could write
/// to backup storage could substitute a backup of their own cluster, and
/// restore trusted it. Two real clusters back up to the same recipient:
/// restore expecting ours refuses theirs, naming both ids; without a flag
/// it refuses, naming what it found; a signature changed after signing is
/// refused by `backup inspect` and `restore`; and ours, pinned by cluster
/// id and by the root fingerprint `moat ca` prints, restores.
#[test]
fn a_backup_of_another_cluster_or_with_a_tampered_signature_is_refused() {
    let mut h = harness();
    h.start("ours");
    h.init("ours", &[]);
    h.start("theirs");
    h.init("theirs", &[]);
    let id = |name: &str| {
        h.moat(name, &["info", "--format", "json"]).json()["cluster_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (our_id, their_id) = (id("ours"), id("theirs"));
    assert_ne!(our_id, their_id);
    let ca = h.moat("ours", &["ca"]);
    let root = ca
        .ok()
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("moat ca shows no fingerprint:\n{}", ca.stdout))
        .to_string();
    let (identity, recipient) = keygen(&h, "shared.key");
    let mine = backup(&h, "ours", "ours.moat", &["--recipient", &recipient], None);
    let forged = backup(
        &h,
        "theirs",
        "theirs.moat",
        &["--recipient", &recipient],
        None,
    );

    let inspect = offline(&["backup", "inspect", s(&forged), "-i", s(&identity)], None);
    assert!(
        inspect
            .ok()
            .contains(&format!("of cluster {their_id} (signature verified)")),
        "{}",
        inspect.stdout
    );
    let restore = |file: &Path, target: &str, extra: &[&str]| {
        let target = h.dir().join(target);
        let mut args = vec![
            "restore",
            s(file),
            "--state-dir",
            s(&target),
            "-i",
            s(&identity),
        ];
        args.extend_from_slice(extra);
        (offline(&args, None), target)
    };

    // Theirs, expecting ours: refused, naming both; nothing written.
    let (out, target) = restore(&forged, "t1", &["--expect-cluster", &our_id]);
    out.fails_with(&format!(
        "this backup is of cluster {their_id}, not of cluster {our_id}"
    ));
    assert!(out.stdout.contains(&their_id), "{}", out.stdout);
    assert!(
        !target.exists(),
        "a refused restore wrote {}",
        target.display()
    );
    // Ours, without either flag: refused, naming its id and the flag.
    let (out, target) = restore(&mine, "t2", &[]);
    out.fails_with(&format!(
        "this backup is of cluster {our_id} (root CA {root})"
    ));
    assert!(
        out.stderr.contains(&format!("--expect-cluster {our_id}")),
        "{}",
        out.stderr
    );
    assert!(
        !target.exists(),
        "a refused restore wrote {}",
        target.display()
    );
    // Ours, pinned to another root: refused.
    let other_root = format!("sha256:{}", "0".repeat(64));
    let (out, target) = restore(
        &mine,
        "t3",
        &["--expect-cluster", &our_id, "--expect-root", &other_root],
    );
    out.fails_with("not under the expected root");
    assert!(!target.exists());

    // A plaintext backup whose signature is changed after signing (the
    // trailer recomputed, so only the signature can tell).
    let plain = backup(&h, "ours", "plain.moat", &["--insecure-plaintext"], None);
    let bytes = std::fs::read(&plain).unwrap();
    offline(&["backup", "inspect", s(&plain)], None).ok();
    let (head, mut origin, rest) = split_origin(&bytes);
    let mut sig = base64_decode(origin["signature"].as_str().unwrap());
    let last = sig.len() - 1;
    sig[last] ^= 1;
    origin["signature"] = data_encoding::BASE64.encode(&sig).into();
    let origin = serde_json::to_vec(&origin).unwrap();
    let mut tampered = head;
    tampered.extend_from_slice(&(origin.len() as u32).to_be_bytes());
    tampered.extend_from_slice(&origin);
    tampered.extend_from_slice(&rest);
    // `fingerprint` is `sha256:<hex>` of any bytes: the trailer.
    let trailer = moat_pki::fingerprint(&tampered);
    let trailer = data_encoding::HEXLOWER
        .decode(trailer.trim_start_matches("sha256:").as_bytes())
        .unwrap();
    tampered.extend_from_slice(&trailer);
    let tampered_file = h.dir().join("tampered.moat");
    std::fs::write(&tampered_file, &tampered).unwrap();
    offline(&["backup", "inspect", s(&tampered_file)], None)
        .fails_with("the backup's signature does not verify");
    let (out, target) = restore(&tampered_file, "t4", &["--expect-cluster", &our_id]);
    out.fails_with("the backup's signature does not verify");
    assert!(!target.exists());

    // The same backup as format 1 (no origin block, as moat wrote before
    // it signed backups): refused when a cluster is expected or nothing
    // is said, restored with --trust-any-cluster and a warning.
    let (head, _, rest) = split_origin(&bytes);
    let manifest =
        String::from_utf8(head[16..].to_vec())
            .unwrap()
            .replacen("\"format\":2", "\"format\":1", 1);
    let mut old = b"MOATBACKUP1\n".to_vec();
    old.extend_from_slice(&(manifest.len() as u32).to_be_bytes());
    old.extend_from_slice(manifest.as_bytes());
    old.extend_from_slice(&rest);
    let trailer = moat_pki::fingerprint(&old);
    let trailer = data_encoding::HEXLOWER
        .decode(trailer.trim_start_matches("sha256:").as_bytes())
        .unwrap();
    old.extend_from_slice(&trailer);
    let old_file = h.dir().join("format1.moat");
    std::fs::write(&old_file, &old).unwrap();
    let inspect = offline(&["backup", "inspect", s(&old_file)], None);
    assert!(
        inspect.ok().contains("Signed by:     NOBODY"),
        "{}",
        inspect.stdout
    );
    let (out, target) = restore(&old_file, "t6", &["--expect-cluster", &our_id]);
    out.fails_with("this backup is unsigned (format 1");
    assert!(!target.exists());
    let (out, target) = restore(&old_file, "t7", &[]);
    out.fails_with("pass --trust-any-cluster");
    assert!(!target.exists());
    let (out, target) = restore(&old_file, "t8", &["--trust-any-cluster"]);
    out.ok();
    assert!(out.stderr.contains("WARNING: "), "{}", out.stderr);
    assert!(target.join("node.json").is_file());

    // Ours, pinned by cluster and root: restored.
    let (out, target) = restore(
        &mine,
        "t5",
        &["--expect-cluster", &our_id, "--expect-root", &root],
    );
    let text = out.ok();
    assert!(text.contains(&format!("Root CA:       {root}")), "{text}");
    assert!(
        text.contains(&format!("of cluster {our_id} into ")),
        "{text}"
    );
    assert!(target.join("node.json").is_file());
}
