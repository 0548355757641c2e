//! Secrets and configs end to end (issue 18): real `moat daemon`
//! processes on loopback, real child processes (and containers on the
//! machine's Docker Engine) as tasks, driven only through the `moat` CLI.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use moat_testkit::Harness;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(60);

/// A process task that writes the SHA-256 of its secret `db` (and the
/// listing of its secrets directory) to its working directory, then
/// waits.
const DIGESTER: [&str; 3] = [
    "/bin/sh",
    "-c",
    "sha256sum < \"$MOAT_SECRETS_DIR/db\" > digest; cat \"$MOAT_CONFIGS_DIR/app.conf\" > conf; exec sleep 300",
];

fn sha256_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn running(h: &Harness, service: &str) -> Vec<Value> {
    h.moat("m1", &["service", "ps", service, "--format", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["desired_state"] == "running" && t["state"] == "running")
        .cloned()
        .collect()
}

/// The running task of `service` among the task ids `among`, once it has
/// written `file` in its working directory: (task id, the file's text).
fn task_output(h: &Harness, service: &str, file: &str, among: &[String]) -> (String, String) {
    let mut found = None;
    h.wait_until(
        &format!("{service}'s task to write {file}"),
        CONVERGE,
        || {
            found = running(h, service).into_iter().find_map(|t| {
                let id = t["id"].as_str()?.to_owned();
                if !among.contains(&id) {
                    return None;
                }
                let pid = t["pid"].as_u64()?;
                let text = std::fs::read_to_string(format!("/proc/{pid}/cwd/{file}")).ok()?;
                (!text.is_empty()).then_some((id, text))
            });
            found.is_some()
        },
    );
    found.unwrap()
}

/// Where node `name` keeps its tasks' secrets: `--secrets-dir` (the
/// harness's, on /dev/shm) `/moat-<node id>`.
fn secrets_root(h: &Harness, name: &str) -> PathBuf {
    let id = h.nodes("m1")[name]["id"].as_str().unwrap().to_owned();
    h.secrets_dir(name).unwrap().join(format!("moat-{id}"))
}

fn versions(h: &Harness, name: &str) -> Vec<u64> {
    let info = h
        .moat("m1", &["secret", "inspect", name, "--format", "json"])
        .json();
    info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// Create, deliver to a process task on a worker (tmpfs only, mode 0400,
/// nowhere on disk or in a log), versions and the rolling update they
/// start, Docker's rotation by a second secret, configs, bad input.
#[test]
fn secrets_reach_only_their_tasks_and_never_a_disk() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1"], &["w1", "w2"]);
    if h.secrets_dir("w1").is_none() {
        eprintln!("SKIPPED: no /dev/shm on this machine");
        return;
    }
    let v1 = moat_testkit::unique("db-password-one");
    let v2 = moat_testkit::unique("db-password-two");

    // Bad input: a clear error, and nothing made.
    let big = h.dir().join("big");
    std::fs::write(&big, vec![b'x'; 500 * 1024 + 1]).unwrap();
    h.moat("m1", &["secret", "create", "huge", big.to_str().unwrap()])
        .fails_with("larger than 512000 bytes");
    h.moat_stdin("m1", &["secret", "create", "bad/name", "-"], "x")
        .fails_with("invalid secret name");
    h.moat(
        "m1",
        &[
            "service",
            "create",
            "--detach",
            "--secret",
            "nope",
            "/bin/true",
        ],
    )
    .fails_with("no such secret: nope");
    let empty = h.moat("m1", &["secret", "ls", "--format", "json"]).json();
    assert_eq!(empty, serde_json::json!([]));
    let none = h.moat("m1", &["service", "ls", "--format", "json"]).json();
    assert_eq!(none, serde_json::json!([]));

    // Create from standard input, and a config.
    let id = h
        .moat_stdin("m1", &["secret", "create", "db", "-"], &v1)
        .ok()
        .trim()
        .to_owned();
    assert_eq!(id.len(), 26, "{id}");
    h.moat_stdin("m1", &["secret", "create", "db", "-"], "again")
        .fails_with("a secret named db already exists");
    h.moat_stdin("m1", &["config", "create", "app.conf", "-"], "port=8080\n")
        .ok();
    let conf = h
        .moat("m1", &["config", "inspect", "app.conf"])
        .ok()
        .to_owned();
    assert!(conf.contains("port=8080"), "a config's data shows:\n{conf}");
    let inspect = h.moat("m1", &["secret", "inspect", "db"]).ok().to_owned();
    assert!(
        !inspect.contains(&v1),
        "a secret's data never shows:\n{inspect}"
    );
    assert!(inspect.contains("hmac-sha256:"), "{inspect}");

    // A service on w1 that uses both.
    h.moat(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "app",
            "--secret",
            "db",
            "--config",
            "app.conf",
            "--constraint",
            "node.hostname==w1",
            "--update-monitor",
            "1s",
            "--restart-delay",
            "0s",
            "--stop-grace-period",
            "1s",
            DIGESTER[0],
            DIGESTER[1],
            DIGESTER[2],
        ],
    )
    .ok();
    let all = |h: &Harness| -> Vec<String> {
        h.moat("m1", &["service", "ps", "app", "--format", "json"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (t1, digest) = task_output(&h, "app", "digest", &all(&h));
    assert!(
        digest.starts_with(&sha256_hex(v1.as_bytes())),
        "the task read its secret: {digest}"
    );
    let (_, conf) = task_output(&h, "app", "conf", &all(&h));
    assert_eq!(conf, "port=8080\n");
    // On w1's tmpfs, mode 0400, in a 0700 directory.
    let file = secrets_root(&h, "w1").join(&t1).join("secrets").join("db");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), v1);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400, "{}", file.display());
    let dir_mode = std::fs::metadata(file.parent().unwrap().parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    // Nowhere else: no node's state directory, no daemon log.
    let leaks = moat_testkit::secrets::files_containing(h.dir(), v1.as_bytes());
    assert!(leaks.is_empty(), "the secret is on disk: {leaks:?}");
    assert!(
        moat_testkit::secrets::files_containing(&h.secrets_dir("w2").unwrap(), v1.as_bytes())
            .is_empty()
            && moat_testkit::secrets::files_containing(
                &h.secrets_dir("m1").unwrap(),
                v1.as_bytes()
            )
            .is_empty(),
        "only the task's node has it"
    );

    // The compliance report lists it (name, size, users), never its data.
    let report = h.moat("m1", &["audit", "report", "--format", "json"]);
    let text = report.stdout.clone();
    let json: Value = serde_json::from_str(&text).unwrap();
    let listed = &json["inventory"]["secrets"];
    let db = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db" && s["kind"] == "secret")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(db["size"], v1.len() as u64);
    assert_eq!(db["used_by"], serde_json::json!(["app"]));
    assert!(!text.contains(&v1), "the report holds a secret");

    // In use: not removable, and the message names the service.
    h.moat("m1", &["secret", "rm", "db"])
        .fails_with("secret db is in use by service app");

    // A new version rolls the service: the new task reads v2; the old
    // version is dropped once no task holds it; the old task's files go.
    let before = all(&h);
    let out = h
        .moat_stdin("m1", &["secret", "update", "db", "-"], &v2)
        .ok()
        .to_owned();
    assert!(
        out.contains("db version 2") && out.contains("service app"),
        "{out}"
    );
    let (t2, digest) = task_output(&h, "app", "digest", &{
        let mut fresh = all(&h);
        h.wait_until("a task of the new version", CONVERGE, || {
            fresh = all(&h)
                .into_iter()
                .filter(|t| !before.contains(t))
                .collect();
            !fresh.is_empty()
        });
        fresh
    });
    assert_ne!(t1, t2);
    assert!(digest.starts_with(&sha256_hex(v2.as_bytes())), "{digest}");
    h.wait_until("version 1 to be dropped", CONVERGE, || {
        versions(&h, "db") == [2]
    });
    let old = secrets_root(&h, "w1").join(&t1);
    h.wait_until("the old task's secrets to go", CONVERGE, || !old.exists());
    let info = h
        .moat("m1", &["service", "inspect", "app", "--format", "json"])
        .json();
    let versions: Vec<(&str, u64)> = info["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(versions, [("db", 2), ("app.conf", 1)], "{info}");

    // Rotation as Docker users do it: a second secret, swapped in by a
    // rolling update, then the first removed.
    h.moat_stdin("m1", &["secret", "create", "db_v2", "-"], &v1)
        .ok();
    h.moat(
        "m1",
        &[
            "service",
            "update",
            "--secret-rm",
            "db",
            "--secret-add",
            "source=db_v2,target=db",
            "app",
        ],
    )
    .ok();
    let info = h
        .moat("m1", &["service", "inspect", "app", "--format", "json"])
        .json();
    let secret = info["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["kind"] == "secret")
        .unwrap()
        .clone();
    assert_eq!(secret["name"], "db_v2", "{info}");
    assert_eq!(secret["target"], "db", "{info}");
    h.moat("m1", &["secret", "rm", "db"]).ok();
    let ls = h.moat("m1", &["secret", "ls", "--format", "json"]).json();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db_v2"]);

    // The audit log names them by keyed digest only.
    let records = h
        .moat("m1", &["audit", "ls", "--format", "json"])
        .ok()
        .to_owned();
    for action in [
        "secret.create",
        "secret.update",
        "secret.remove",
        "config.create",
    ] {
        assert!(records.contains(action), "no {action} record");
    }
    for v in [&v1, &v2] {
        assert!(!records.contains(v.as_str()), "a secret in the audit log");
    }

    // A daemon restart keeps the files of the task it adopts and wipes
    // any other task directory it finds there.
    let root = secrets_root(&h, "w1");
    let live: Vec<String> = running(&h, "app")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    h.stop("w1");
    let leftover = root.join("LEFTOVERTASK0000000000000").join("secrets");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("db"), "stale").unwrap();
    h.restart("w1");
    h.wait_until("the leftover task directory to go", CONVERGE, || {
        !leftover.parent().unwrap().exists()
    });
    assert!(
        root.join(&live[0]).join("secrets").join("db").exists(),
        "the adopted task keeps its secret"
    );

    // Removing the service stops the task; its files go with it.
    h.moat("m1", &["service", "rm", "app"]).ok();
    h.wait_until("every task's secrets to go", CONVERGE, || {
        std::fs::read_dir(&root).map_or(true, |mut d| d.next().is_none())
    });
    let leaks = moat_testkit::secrets::files_containing(h.dir(), v2.as_bytes());
    assert!(leaks.is_empty(), "the second version is on disk: {leaks:?}");
}

/// A container task sees its secret at /run/secrets/NAME (read-only).
#[test]
fn a_container_task_reads_its_secret_at_run_secrets() {
    use moat_testkit::docker::{Containers, test_image, unavailable};
    if let Some(why) = unavailable() {
        // Not hidden: CI installs both (see .ci/run).
        eprintln!("SKIPPED: {why}");
        return;
    }
    let image = test_image().unwrap();
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1"], &[]);
    let node = h.nodes("m1")["m1"]["id"].as_str().unwrap().to_owned();
    let _cleanup = Containers { node };
    let value = moat_testkit::unique("container-secret");
    h.moat_stdin("m1", &["secret", "create", "token", "-"], &value)
        .ok();
    h.moat(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "boxed",
            "--runtime",
            "docker",
            "--secret",
            "token,mode=0440",
            "--stop-grace-period",
            "1s",
            &image.tag,
            "sh",
            "-c",
            "busybox sha256sum /run/secrets/token; busybox ls -l /run/secrets/token; \
             busybox ls /run/secrets/identity/; busybox test -S /run/spiffe/agent.sock && echo socket-ok; \
             echo \"endpoint=$SPIFFE_ENDPOINT_SOCKET\"; \
             busybox touch /run/secrets/x || echo read-only; exec sleep 300",
        ],
    )
    .ok();
    let want = sha256_hex(value.as_bytes());
    let mut logs = String::new();
    h.wait_until(
        "the container to print its secret's digest",
        CONVERGE,
        || {
            logs = h.moat("m1", &["service", "logs", "boxed"]).ok().to_owned();
            logs.contains("read-only")
        },
    );
    assert!(logs.contains(&want), "{logs}");
    assert!(logs.contains("-r--r-----"), "mode 0440: {logs}");
    // Its identity beside its secrets, and its Workload API socket.
    for want in [
        "bundle.pem",
        "cert.pem",
        "key.pem",
        "socket-ok",
        "endpoint=unix:///run/spiffe/agent.sock",
    ] {
        assert!(logs.contains(want), "{want}: {logs}");
    }
    assert!(!logs.contains(&value));
    h.moat("m1", &["service", "rm", "boxed"]).ok();
    let root = secrets_root(&h, "m1");
    h.wait_until("the task's secrets to go", CONVERGE, || {
        std::fs::read_dir(&root).map_or(true, |mut d| d.next().is_none())
    });
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `openssl x509` on `pem` with `args`: its output.
fn openssl_x509(pem: &[u8], args: &[&str]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .arg("x509")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl x509: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A task's identity directory on its node.
fn identity_dir(h: &Harness, node: &str, task: &str) -> PathBuf {
    secrets_root(h, node)
        .join(task)
        .join("secrets")
        .join("identity")
}

/// The SPIFFE ID `service inspect` gives `service`.
fn spiffe_id_of(h: &Harness, service: &str) -> String {
    let info = h
        .moat("m1", &["service", "inspect", service, "--format", "json"])
        .json();
    info["identity"]["spiffe_id"].as_str().unwrap().to_owned()
}

/// Flags that give a task its identity files, for openssl.
const ID_FLAGS: &str = "-cert \"$MOAT_SECRETS_DIR/identity/cert.pem\" -key \"$MOAT_SECRETS_DIR/identity/key.pem\" -CAfile \"$MOAT_SECRETS_DIR/identity/bundle.pem\" -verify_return_error";

/// Two process tasks of different services talk mutual TLS with their
/// identity files (an openssl s_server / s_client pair), each sees the
/// other's SPIFFE ID, and a task certificate of another cluster is
/// refused; the key is mode 0400, on the tmpfs only, and goes with the
/// task.
#[test]
fn tasks_talk_mutual_tls_with_their_identities() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1"], &["w1"]);
    if h.secrets_dir("w1").is_none() {
        eprintln!("SKIPPED: no /dev/shm on this machine");
        return;
    }
    let port = free_port();
    let server =
        format!("sleep 100000 | openssl s_server -accept 127.0.0.1:{port} {ID_FLAGS} -Verify 1");
    let client = format!(
        "until openssl s_client -connect 127.0.0.1:{port} {ID_FLAGS} </dev/null > out 2>&1; do sleep 0.2; done; \
         openssl x509 -noout -ext subjectAltName < out > peer; exec sleep 300"
    );
    for (name, node, script) in [("api", "w1", &server), ("web", "m1", &client)] {
        h.moat(
            "m1",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--constraint",
                &format!("node.hostname=={node}"),
                "--stop-grace-period",
                "1s",
                "/bin/sh",
                "-c",
                script,
            ],
        )
        .ok();
    }
    let api_id = spiffe_id_of(&h, "api");
    let web_id = spiffe_id_of(&h, "web");
    let cluster = h.moat("m1", &["info", "--format", "json"]).json()["cluster_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api_id, format!("spiffe://{cluster}/service/api"));

    // The client saw the server's id...
    let tasks = |h: &Harness, s: &str| -> Vec<String> {
        running(h, s)
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    h.wait_until("both services to run", CONVERGE, || {
        tasks(&h, "api").len() == 1 && tasks(&h, "web").len() == 1
    });
    let (_, peer) = task_output(&h, "web", "peer", &tasks(&h, "web"));
    assert!(peer.contains(&format!("URI:{api_id}")), "{peer}");
    // ...and the server the client's.
    let api_task = tasks(&h, "api").pop().unwrap();
    let log = h
        .dir()
        .join("w1")
        .join("tasks")
        .join(format!("{api_task}.log"));
    let mut logs = String::new();
    h.wait_until(
        "the server to print its client's certificate",
        CONVERGE,
        || {
            logs = std::fs::read_to_string(&log).unwrap_or_default();
            logs.contains("Client certificate")
        },
    );
    let pem_start = logs.find("-----BEGIN CERTIFICATE-----").unwrap();
    let pem_end = logs[pem_start..].find("-----END CERTIFICATE-----").unwrap() + 25;
    let client_cert = &logs[pem_start..pem_start + pem_end];
    let names = openssl_x509(
        client_cert.as_bytes(),
        &["-noout", "-ext", "subjectAltName"],
    );
    assert!(names.contains(&format!("URI:{web_id}")), "{names}");

    // On w1's tmpfs: the key 0400, the certificate naming the service.
    let dir = identity_dir(&h, "w1", &api_task);
    let key = std::fs::read(dir.join("key.pem")).unwrap();
    let mode = std::fs::metadata(dir.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400);
    let subject = openssl_x509(
        &std::fs::read(dir.join("cert.pem")).unwrap(),
        &["-noout", "-subject"],
    );
    assert!(
        subject.contains(&api_task),
        "the task id in the subject: {subject}"
    );
    let leaks = moat_testkit::secrets::files_containing(h.dir(), &key[40..100]);
    assert!(leaks.is_empty(), "the task's key is on disk: {leaks:?}");

    // A task certificate of another cluster, for a service of the same
    // name: refused by the server (unknown CA).
    let mut other = Harness::new(env!("CARGO_BIN_EXE_moat"));
    other.cluster(&["m1"], &[]);
    other
        .moat(
            "m1",
            &[
                "service",
                "create",
                "--detach",
                "--name",
                "web",
                "/bin/sleep",
                "300",
            ],
        )
        .ok();
    let mut foreign = PathBuf::new();
    other.wait_until("the other cluster's task identity", CONVERGE, || {
        let Some(t) = running(&other, "web").pop() else {
            return false;
        };
        foreign = identity_dir(&other, "m1", t["id"].as_str().unwrap());
        foreign.join("cert.pem").exists()
    });
    let out = std::process::Command::new("openssl")
        // -ign_eof: read until the server answers the certificate (in
        // TLS 1.3 the server judges it after the client's handshake ends).
        .args([
            "s_client",
            "-ign_eof",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("-cert")
        .arg(foreign.join("cert.pem"))
        .arg("-key")
        .arg(foreign.join("key.pem"))
        .arg("-CAfile")
        .arg(dir.join("bundle.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("unknown ca"), "{text}");
    h.wait_until("the server to log the refusal", CONVERGE, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("verify error:num=20:unable to get local issuer certificate")
    });

    // Gone with the task: the key and the Workload API socket.
    h.moat("m1", &["service", "rm", "api", "web"]).ok();
    let task_dir = secrets_root(&h, "w1").join(&api_task);
    h.wait_until("the task's identity to go", CONVERGE, || !task_dir.exists());
}

/// A task's identity through the SPIFFE Workload API, fetched with an
/// existing client library (the `spiffe` crate, not moat's code) from the
/// socket the task is given in SPIFFE_ENDPOINT_SOCKET: the SVID and the
/// bundle, a renewal at half the certificate's life arriving on the
/// stream, and a new SVID under both roots when the CA rotates.
#[test]
fn a_spiffe_client_gets_the_task_identity_and_its_renewals() {
    use futures_util::StreamExt;

    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    h.cluster(&["m1"], &["w1"]);
    if h.secrets_dir("w1").is_none() {
        eprintln!("SKIPPED: no /dev/shm on this machine");
        return;
    }
    h.moat(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "api",
            "--identity-ttl",
            "5m",
            "--constraint",
            "node.hostname==w1",
            "/bin/sh",
            "-c",
            "echo \"$SPIFFE_ENDPOINT_SOCKET\" > sock; exec sleep 600",
        ],
    )
    .ok();
    let all: Vec<String> = running(&h, "api")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let (task, sock) = task_output(&h, "api", "sock", &all);
    let address = sock.trim().to_owned();
    let want = identity_dir(&h, "w1", &task)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("spiffe")
        .join("agent.sock");
    assert_eq!(address, format!("unix://{}", want.display()));
    let spiffe_id = spiffe_id_of(&h, "api");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let wait = |secs| Duration::from_secs(secs);
    rt.block_on(async {
        let client = spiffe::WorkloadApiClient::connect_to(&address)
            .await
            .unwrap();
        let svid = client.fetch_x509_svid().await.unwrap();
        assert_eq!(svid.spiffe_id().to_string(), spiffe_id);
        let bundles = client.fetch_x509_bundles().await.unwrap();
        let td = svid.spiffe_id().trust_domain().clone();
        assert_eq!(bundles.get(&td).unwrap().authorities().len(), 1);

        let mut stream = client.stream_x509_contexts().await.unwrap();
        let first = tokio::time::timeout(wait(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let first_leaf = first.default_svid().unwrap().leaf().as_ref().to_vec();
        // Renewed at half of 5 minutes: a new certificate, issued about
        // 150 s after the first (NotBefore is back-dated by the same 30 s
        // in both).
        let renewed = tokio::time::timeout(wait(240), stream.next())
            .await
            .expect("a renewal within 4 minutes")
            .unwrap()
            .unwrap();
        let renewed_leaf = renewed.default_svid().unwrap().leaf().as_ref().to_vec();
        assert_ne!(renewed_leaf, first_leaf);
        let not_before = |der: &[u8]| {
            let text = openssl_x509(der, &["-inform", "DER", "-noout", "-startdate"]);
            let date = text.trim().trim_start_matches("notBefore=").to_owned();
            let out = std::process::Command::new("date")
                .args(["-d", &date, "+%s"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        let gap = not_before(&renewed_leaf) - not_before(&first_leaf);
        assert!((120..=200).contains(&gap), "renewed {gap} s after issue");

        // A CA rotation: as the node's trust moves (both roots, then the
        // new one alone), the task gets a new certificate and bundle.
        let old_roots = bundles.get(&td).unwrap().authorities().to_vec();
        h.moat("m1", &["ca", "--rotate", "--detach"]).ok();
        let rotated = tokio::time::timeout(wait(90), async {
            loop {
                let ctx = stream.next().await.unwrap().unwrap();
                if ctx.bundle_set().get(&td).unwrap().authorities() != old_roots.as_slice() {
                    return ctx;
                }
            }
        })
        .await
        .expect("a new SVID under new roots within 90 s");
        assert_eq!(
            rotated.default_svid().unwrap().spiffe_id().to_string(),
            spiffe_id
        );
    });
    h.moat("m1", &["service", "rm", "api"]).ok();
}
