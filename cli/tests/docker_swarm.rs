//! `moat audit report --docker-swarm`, `moat store dump --docker-swarm` and
//! `moat store verify --docker-swarm` against real Docker Swarm state made
//! here, on the machine's Docker Engine: autolock on and off, a secret, a
//! service, an unlock-key rotation, a forced snapshot, a certificate-expiry
//! change, and a live probe of the manager's port. The swarm is left and
//! everything it made removed when the test ends (`testkit::docker`).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Std;

use assert_cmd::Command;
use moat_testkit::docker::{DockerSwarm, docker_ok};
use serde_json::Value;

fn moat() -> Command {
    Command::cargo_bin("moat").unwrap()
}

const SECRET_VALUE: &str = "only-with-show-secrets-4f1c";
const ENV_VALUE: &str = "env-value-never-printed-9a2e";

/// A copy of the manager's state directory, as the runbook says to take
/// one (sparse, modes kept).
fn copy_state(to: &Path) -> PathBuf {
    let dest = to.to_path_buf();
    let status = Std::new("cp")
        .args(["-a", "--sparse=always", "/var/lib/docker/swarm"])
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success(), "cp of /var/lib/docker/swarm failed");
    dest
}

/// Every file under `dir` with its bytes' digest and its mtime.
fn fingerprint(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
                out.insert(
                    e.path(),
                    (digest.as_ref().to_vec(), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn report_json(state: &Path, key: Option<&Path>, extra: &[&str]) -> (Value, i32, String) {
    let mut cmd = moat();
    cmd.args(["audit", "report", "--format", "json", "--docker-swarm"])
        .arg(state);
    if let Some(k) = key {
        cmd.arg("--unlock-key-file").arg(k);
    }
    cmd.args(extra);
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}); exit {code}; stderr: {}; stdout: {text}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (json, code, text)
}

/// The live manager's key file.
const NODE_KEY: &str = "/var/lib/docker/swarm/certificates/swarm-node.key";

/// Waits (at most 30 s) until the manager has done `what`.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "the manager did not finish within 30 s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn finding<'a>(report: &'a Value, subject: &str, words: &str) -> Option<&'a Value> {
    report["findings"].as_array().unwrap().iter().find(|f| {
        f["subject"].as_str().unwrap().contains(subject)
            && f["problem"].as_str().unwrap().contains(words)
    })
}

#[test]
fn audit_a_real_docker_swarm_offline() {
    assert!(
        Path::new("/var/run/docker.sock").exists(),
        "the Docker Swarm tests need the machine's Docker Engine (/var/run/docker.sock)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (_swarm, init) = DockerSwarm::init(&["--autolock"]);
    let key1 = init
        .split_whitespace()
        .find(|w| w.starts_with("SWMKEY-1-"))
        .expect("swarm init --autolock prints the unlock key")
        .to_owned();
    let key1_file = key_file(tmp.path(), "key1", &key1);

    // A secret, a service using it (no replicas: no image is needed) and
    // a shorter certificate lifetime.
    let mut create = Std::new("docker")
        .args(["secret", "create", "s1", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(create.stdin.as_mut().unwrap(), SECRET_VALUE.as_bytes()).unwrap();
    drop(create.stdin.take());
    assert!(create.wait().unwrap().success());
    docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        "web",
        "--replicas",
        "0",
        "--no-resolve-image",
        "--secret",
        "s1",
        "--env",
        &format!("PASSWORD={ENV_VALUE}"),
        "busybox:none",
        "sleep",
        "1",
    ]);
    docker_ok(&["swarm", "update", "--cert-expiry", "720h"]);
    let worker_token = docker_ok(&["swarm", "join-token", "-q", "worker"])
        .trim()
        .to_owned();
    let locked = copy_state(&tmp.path().join("locked"));
    let before = fingerprint(&locked);

    // With the key: the whole inventory, and a live probe of the port.
    let (r, code, text) = report_json(&locked, Some(&key1_file), &["--probe", "127.0.0.1:2377"]);
    assert_eq!(code, 3, "findings at or above high: {text}");
    let inv = &r["inventory"];
    assert_eq!(inv["store_read"], true);
    assert_eq!(inv["autolock"]["on"], true, "{}", inv["autolock"]);
    assert_eq!(inv["autolock"]["consistent"], true);
    assert_eq!(inv["autolock"]["given_key_is_current"], true);
    assert_eq!(inv["key_protection"]["matches_cert"], true);
    assert!(
        inv["key_protection"]["scheme"]
            .as_str()
            .unwrap()
            .contains("PBKDF2-HMAC-SHA1, 2048 iterations, AES-256-CBC")
    );
    assert_eq!(inv["cert_expiry_seconds"], 720 * 3600);
    assert_eq!(inv["root_ca_key_in_store"], true);
    assert_eq!(inv["root_ca_matches_store"], true);
    assert_eq!(inv["node_role"], "manager");
    let secrets = inv["secrets"].as_array().unwrap();
    let s1 = secrets.iter().find(|s| s["name"] == "s1").expect("s1");
    assert_eq!(s1["size"], SECRET_VALUE.len());
    assert_eq!(s1["used_by"][0], "web");
    let web = &inv["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["env_vars"], 1);
    let tokens = inv["join_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens.iter().all(|t| t["ca_digest_matches"] == true),
        "{tokens:?}"
    );
    let worker = tokens.iter().find(|t| t["role"] == "worker").unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, worker_token.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(worker["fingerprint"], format!("sha256:{hex}"));
    // The probe measured Docker's port.
    let probe = &inv["probe"];
    assert_eq!(probe["versions"], serde_json::json!(["TLSv1.2", "TLSv1.3"]));
    assert_eq!(inv["probe_chain_from_root"], true);
    assert!(finding(&r, "TLS on 127.0.0.1:2377", "TLSv1.2").is_some());
    assert!(finding(&r, "node certificate lifetime", "").is_some());
    assert!(finding(&r, "root CA key", "unencrypted").is_some());
    assert!(finding(&r, "autolock", "").is_none(), "autolock is on");
    // No secret, key or token reaches the report.
    for secret in [
        SECRET_VALUE,
        ENV_VALUE,
        &key1,
        &worker_token,
        "PRIVATE KEY-----\n",
    ] {
        assert!(!text.contains(secret), "the report leaks {secret:.12}…");
    }

    // Without the key: the files alone, and what could not be checked.
    let (r, _, _) = report_json(&locked, None, &[]);
    let inv = &r["inventory"];
    assert_eq!(inv["store_read"], false);
    assert_eq!(inv["autolock"]["key_file_encrypted"], true);
    assert_eq!(inv["autolock"]["data_key_readable_without_key"], false);
    assert!(!inv["not_checked"].as_array().unwrap().is_empty());
    assert!(finding(&r, "not checked", "raft store").is_some());
    assert!(
        finding(&r, "node certificate lifetime", "").is_some(),
        "from the cert file"
    );

    // A mistyped key and a wrong one say which check failed.
    moat()
        .args(["audit", "report", "--docker-swarm"])
        .arg(&locked)
        .args(["--unlock-key", "-"])
        .write_stdin("SWMKEY-1-not-a-key\n")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("not a Docker Swarm unlock key"));
    let wrong = key_file(
        tmp.path(),
        "wrong",
        "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let out = moat()
        .args(["audit", "report", "--docker-swarm"])
        .arg(&locked)
        .arg("--unlock-key-file")
        .arg(&wrong)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("wrong unlock key"), "{stderr}");

    // The dump: redacted, then with --show-secrets.
    let out = moat()
        .args(["store", "dump", "--format", "json", "--docker-swarm"])
        .arg(&locked)
        .args(["--unlock-key", "-"])
        .write_stdin(format!("{key1}\n"))
        .assert()
        .success();
    let dump = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(dump.contains("\"s1\""), "the secret's name is shown");
    for secret in [SECRET_VALUE, ENV_VALUE, "BEGIN EC PRIVATE KEY"] {
        assert!(!dump.contains(secret), "the dump leaks {secret:.12}…");
    }
    let out = moat()
        .args([
            "store",
            "dump",
            "--format",
            "json",
            "--show-secrets",
            "--docker-swarm",
        ])
        .arg(&locked)
        .arg("--unlock-key-file")
        .arg(&key1_file)
        .assert()
        .success();
    let shown = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        shown.contains(SECRET_VALUE),
        "--show-secrets shows the secret"
    );
    assert!(shown.contains(ENV_VALUE));

    // Verify: every CRC and record.
    moat()
        .args(["store", "verify", "--docker-swarm"])
        .arg(&locked)
        .arg("--unlock-key-file")
        .arg(&key1_file)
        .assert()
        .success()
        .stdout(predicates::str::contains("every CRC-32C matched"));

    // Nothing in the directory changed.
    assert_eq!(
        fingerprint(&locked),
        before,
        "the reader changed the directory"
    );

    // A byte flipped in the WAL is found and named.
    let flipped = copy_state(&tmp.path().join("flipped"));
    let wal_dir = flipped.join("raft/wal-v3-encrypted");
    let wal = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[300] ^= 0x40;
    std::fs::write(&wal, &bytes).unwrap();
    let out = moat()
        .args(["store", "verify", "--docker-swarm"])
        .arg(&flipped)
        .arg("--unlock-key-file")
        .arg(&key1_file)
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains(".wal") && stderr.contains("byte"),
        "names the file and offset: {stderr}"
    );

    // Rotate the unlock key, and force a snapshot.
    let key_before = std::fs::read(NODE_KEY).unwrap();
    let key2 = docker_ok(&["swarm", "unlock-key", "--rotate", "-q"])
        .trim()
        .to_owned();
    let key2_file = key_file(tmp.path(), "key2", &key2);
    docker_ok(&["swarm", "update", "--snapshot-interval", "3"]);
    for i in 0..6 {
        docker_ok(&[
            "service",
            "update",
            "-d",
            "--env-add",
            &format!("N={i}"),
            "web",
        ]);
    }
    // The commands return before the manager has rewritten its files.
    wait_for("swarm-node.key re-wrapped under the new key", || {
        std::fs::read(NODE_KEY).is_ok_and(|k| k != key_before)
    });
    wait_for("a snapshot", || {
        std::fs::read_dir("/var/lib/docker/swarm/raft/snap-v3-encrypted").is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "snap")))
        })
    });
    let rotated = copy_state(&tmp.path().join("rotated"));
    let out = moat()
        .args(["audit", "report", "--docker-swarm"])
        .arg(&rotated)
        .arg("--unlock-key-file")
        .arg(&key1_file)
        .assert()
        .code(1);
    assert!(
        String::from_utf8_lossy(&out.get_output().stderr).contains("wrong unlock key"),
        "the old key no longer opens it"
    );
    let (r, _, _) = report_json(&rotated, Some(&key2_file), &[]);
    let inv = &r["inventory"];
    assert_eq!(inv["autolock"]["given_key_is_current"], true);
    assert!(
        inv["raft"]["snapshot_index"].as_u64().is_some(),
        "a snapshot was written: {}",
        inv["raft"]
    );
    assert_eq!(inv["raft"]["snapshot_interval"], 3);
    assert_eq!(inv["services"][0]["env_vars"], 2, "PASSWORD and N");

    // Autolock off: no key needed, and the high finding says why.
    docker_ok(&["swarm", "update", "--autolock=false"]);
    wait_for("swarm-node.key written in clear", || {
        std::fs::read_to_string(NODE_KEY)
            .is_ok_and(|k| k.starts_with("-----BEGIN PRIVATE KEY-----"))
    });
    let open = copy_state(&tmp.path().join("open"));
    let (r, code, _) = report_json(&open, None, &[]);
    assert_eq!(code, 3);
    let inv = &r["inventory"];
    assert_eq!(inv["store_read"], true);
    assert_eq!(inv["autolock"]["on"], false);
    assert_eq!(inv["autolock"]["data_key_readable_without_key"], true);
    let f = finding(&r, "autolock", "raft-dek").expect("autolock finding");
    assert_eq!(f["severity"], "high");
    let f = finding(&r, "root CA key", "").expect("CA key finding");
    assert_eq!(f["severity"], "high");
    moat()
        .args(["store", "dump", "--docker-swarm"])
        .arg(&open)
        .assert()
        .success()
        .stdout(predicates::str::contains("\"web\""));
}

#[test]
fn a_directory_that_is_not_a_swarm_state_dir_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    moat()
        .args(["audit", "report", "--docker-swarm"])
        .arg(tmp.path())
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "is not a Docker Swarm state directory",
        ));
    moat()
        .args(["store", "verify", "--docker-swarm"])
        .arg(tmp.path())
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "is not a Docker Swarm state directory",
        ));
}

#[test]
fn a_key_on_the_command_line_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    moat()
        .args(["store", "dump", "--docker-swarm"])
        .arg(tmp.path())
        .args(["--unlock-key", "SWMKEY-1-AAAA"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("shows in `ps`"));
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    std::fs::write(
        &key,
        "SWMKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    moat()
        .args(["audit", "report", "--docker-swarm"])
        .arg(tmp.path())
        .arg("--unlock-key-file")
        .arg(&key)
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "can be read by others (mode 0644)",
        ))
        .stderr(predicates::str::contains("chmod 600"));
    moat()
        .args([
            "audit",
            "report",
            "--policy",
            "-",
            "--unlock-key",
            "-",
            "--docker-swarm",
        ])
        .arg(tmp.path())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("both want standard input"));
}
