//! The security regression suite: every attack the project knows of, tried
//! against real `moat daemon` processes over mutual TLS on loopback, each
//! printed with what the cluster answered. Run it with
//!
//! ```sh
//! cargo test -p moat --test security -- --nocapture
//! ```
//!
//! to see the authorization matrix: one line per attack, `refused: <the
//! reason the cluster gave>` or `held: <what still worked>`. Every row is
//! also an assertion: an attack that gets through fails the test.
//!
//! The attacker here holds what each attack assumes: a worker's key (it
//! mints the worker's certificate with the CA key read off a stopped
//! manager's disk, which stands for "has that node's credentials"), a
//! demoted manager's, a made-up manager id, a forged CA for the same
//! cluster id, another cluster's tokens and backups.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // tests

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use moat_audit::{Action, Actor, Details, Event, Outcome, Text};
use moat_pki::{
    CertExpiry, CertificateDer, Credentials, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey,
    Role, RootCa, RootOptions, TlsContext, TrustRoots,
};
use moat_store::audit::ForwardedEvent;
use moat_testkit::Harness;
use moat_transport::{ClusterClient, Network, ServerTrust};
use openraft::network::{RPCOption, RaftNetwork as _};
use serde_json::{Value, json};

/// One line of the matrix.
struct Row {
    attack: &'static str,
    outcome: String,
    passed: bool,
}

#[derive(Default)]
struct Matrix(Vec<Row>);

impl Matrix {
    /// The attack must be refused with a reason containing `expect`.
    fn refused(&mut self, attack: &'static str, result: Result<String, String>, expect: &str) {
        let (outcome, passed) = match result {
            Err(reason) => {
                let passed = reason.contains(expect);
                (format!("refused: {}", one_line(&reason)), passed)
            }
            Ok(answer) => (format!("ACCEPTED: {}", one_line(&answer)), false),
        };
        self.push(attack, outcome, passed);
    }

    /// What must still hold under the attack.
    fn held(&mut self, attack: &'static str, passed: bool, what: String) {
        let outcome = if passed {
            format!("held: {what}")
        } else {
            format!("BROKEN: {what}")
        };
        self.push(attack, outcome, passed);
    }

    fn push(&mut self, attack: &'static str, outcome: String, passed: bool) {
        println!("{attack:<58} {outcome}");
        let _ = std::io::stdout().flush();
        self.0.push(Row {
            attack,
            outcome,
            passed,
        });
    }

    fn finish(self) {
        let failed: Vec<String> = self
            .0
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{}: {}", r.attack, r.outcome))
            .collect();
        assert!(
            failed.is_empty(),
            "attacks that were not refused as expected:\n{}",
            failed.join("\n")
        );
    }
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(220).collect()
}

/// The attacker's CA: the cluster's own root key (read off a stopped
/// manager's store), to mint any node's certificate.
struct Forge {
    ca: RootCa,
}

impl Forge {
    fn from_dump(dump: &Value) -> Self {
        let ca = &dump["ca"];
        let pem = ca["root_cert_pem"]
            .as_str()
            .expect("the dump shows the root");
        let cert = pem_der(pem);
        let key_b64 = ca["root_key_pkcs8"]
            .as_str()
            .expect("--show-secrets shows the key");
        let key = data_encoding::BASE64.decode(key_b64.as_bytes()).unwrap();
        let key = PrivateKey::from_pkcs8_der(&key).unwrap();
        let ca = RootCa::from_parts(cert, key).unwrap();
        Self { ca }
    }

    /// A TLS context presenting a certificate for `id` as `role`, issued
    /// at `at` for `expiry`, by `issuer` (this cluster's CA unless given).
    fn tls(
        &self,
        id: NodeId,
        role: Role,
        at: OffsetDateTime,
        issuer: Option<&RootCa>,
    ) -> Arc<TlsContext> {
        let issuer = issuer.unwrap_or(&self.ca);
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let issued = issuer
            .sign_csr(
                key.csr().unwrap().as_ref(),
                id,
                role,
                CertExpiry::new(Duration::from_secs(3600)).unwrap(),
                at,
            )
            .unwrap();
        let mut roots = vec![self.ca.certificate().clone()];
        if let Some(other) = Some(issuer).filter(|i| i.certificate() != self.ca.certificate()) {
            roots.push(other.certificate().clone());
        }
        let tls = TlsContext::new(self.ca.cluster_id(), TrustRoots::new(roots).unwrap());
        tls.set_credentials(
            Credentials {
                chain: vec![issued.der],
                key,
            },
            at + time::Duration::minutes(1),
        )
        .unwrap();
        tls
    }

    /// A current certificate.
    fn now(&self, id: NodeId, role: Role) -> Arc<TlsContext> {
        self.tls(id, role, OffsetDateTime::now_utc(), None)
    }
}

fn pem_der(pem: &str) -> CertificateDer<'static> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    CertificateDer::from(data_encoding::BASE64.decode(body.as_bytes()).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One cluster call as `tls` (no certificate: `None`); `Err` carries the
/// refusal, from the TLS layer, the gRPC status or the answer.
fn call(
    addr: &str,
    tls: Option<Arc<TlsContext>>,
    method: &str,
    body: Value,
) -> Result<String, String> {
    call_within(addr, tls, method, body, Duration::from_secs(10))
}

/// [`call`] with a time limit of `limit` for the answer (a long poll).
fn call_within(
    addr: &str,
    tls: Option<Arc<TlsContext>>,
    method: &str,
    body: Value,
    limit: Duration,
) -> Result<String, String> {
    runtime().block_on(async {
        let trust = match tls {
            Some(t) => ServerTrust::Verified(t),
            None => ServerTrust::Bootstrap,
        };
        let client = ClusterClient::connect(addr, trust, Duration::from_secs(5))
            .await
            .map_err(|e| with_causes(&e))?;
        let bytes = client
            .call(method, serde_json::to_vec(&body).unwrap(), limit)
            .await
            .map_err(|s| with_causes(&s))?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match answer.get("Err") {
            Some(err) => Err(err["message"].as_str().unwrap_or_default().to_string()),
            None => Ok(answer["Ok"].to_string()),
        }
    })
}

/// A TLS connection to `addr` presenting `tls`'s certificate, then one
/// HTTP/2 preface: `Err` with the alert the manager answers with (a bad
/// client certificate is refused in the handshake, before any call).
fn tls_refusal(addr: &str, tls: Arc<TlsContext>) -> Result<String, String> {
    tls_refusal_with(addr, tls.client_config().map_err(|e| e.to_string())?)
}

/// [`tls_refusal`] with any client configuration (a TLS stack other than
/// moat's, which presents what it is given).
fn tls_refusal_with(
    addr: &str,
    mut config: tokio_rustls::rustls::ClientConfig,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    runtime().block_on(async {
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = connector
            .connect(moat_pki::manager_server_name(), tcp)
            .await
            .map_err(|e| with_causes(&e))?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .map_err(|e| with_causes(&e))?;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) => Err("the manager closed the connection".into()),
            Ok(Ok(n)) => Ok(format!("the manager answered {n} bytes")),
            Ok(Err(e)) => Err(with_causes(&e)),
            Err(_) => Ok("the manager kept the connection open".into()),
        }
    })
}

/// An error and its sources, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `moat daemon ARGS` in `dir`: its result if it exits within `limit`,
/// else it is killed and counted as started.
fn daemon_exit(dir: &std::path::Path, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .arg("daemon")
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            return if out.status.success() {
                Ok(err)
            } else {
                Err(err)
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(format!("the daemon was still running after {limit:?}"))
}

/// `count` TCP connections to `addr` from 127.0.0.2 that never start TLS.
fn idle_connections(
    addr: &str,
    count: usize,
) -> (tokio::runtime::Runtime, Vec<tokio::net::TcpStream>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let streams = rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..count {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(s) = socket.connect(target).await {
                out.push(s);
            }
        }
        out
    });
    (rt, streams)
}

/// An AppendEntries with an empty batch and a high term, as `caller`
/// claiming to lead, to the manager `target` at `addr`.
fn append_entries(
    tls: Arc<TlsContext>,
    caller: NodeId,
    target: NodeId,
    addr: &str,
) -> Result<String, String> {
    runtime().block_on(async {
        let mut client = Network::new(tls).client(target, &openraft::BasicNode::new(addr));
        let req = openraft::raft::AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1_000_000, caller),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        client
            .append_entries(req, RPCOption::new(Duration::from_secs(5)))
            .await
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string())
    })
}

/// A command's result: its output, or the error it printed.
fn outcome(run: moat_testkit::Run) -> Result<String, String> {
    if run.code == 0 {
        Ok(run.stdout)
    } else {
        Err(run.stderr)
    }
}

fn node_id(h: &Harness, on: &str, name: &str) -> NodeId {
    h.nodes(on)[name]["id"].as_str().unwrap().parse().unwrap()
}

/// The worker token and join address of a fresh single-manager cluster
/// on `name` (another cluster, for cross-cluster attacks).
fn other_cluster(h: &mut Harness, name: &str, extra: &[&str]) -> (String, String) {
    h.start(name);
    h.init(name, extra)
}

#[test]
fn authorization_matrix() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, worker_token) = h.cluster(&["m1", "m2", "m3"], &["w1", "w2"]);
    let mut m = Matrix::default();
    let ids = |h: &Harness, n: &str| node_id(h, "m1", n);
    let (m1, m3, w1, w2) = (ids(&h, "m1"), ids(&h, "m3"), ids(&h, "w1"), ids(&h, "w2"));

    // The attacker's kit: the CA key off m3's disk (stopped for the read).
    h.stop("m3");
    let dump = h.moat(
        "m3",
        &[
            "store",
            "dump",
            "--show-secrets",
            "--state-dir",
            h.daemon("m3").state_dir.to_str().unwrap(),
        ],
    );
    // A summary, then the state as JSON.
    let text = dump.ok();
    let state: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let forge = Forge::from_dump(&state);
    h.restart("m3");

    // --- Unauthenticated callers ---------------------------------------
    m.refused(
        "no certificate: propose",
        call(
            &addr,
            None,
            "propose",
            json!({"command": {"PruneRemoved": {"now": 0}}}),
        ),
        "needs a node certificate",
    );
    let forged_root = RootCa::generate(
        forge.ca.cluster_id(),
        &RootOptions::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    m.refused(
        "certificate from a forged CA with this cluster's id: TLS",
        tls_refusal(
            &addr,
            forge.tls(
                w1,
                Role::Worker,
                OffsetDateTime::now_utc(),
                Some(&forged_root),
            ),
        ),
        "fatal alert",
    );
    m.refused(
        "expired worker certificate: TLS handshake",
        tls_refusal(
            &addr,
            forge.tls(
                w1,
                Role::Worker,
                OffsetDateTime::now_utc() - time::Duration::days(2),
                None,
            ),
        ),
        "CertificateExpired",
    );

    // --- A worker's key -------------------------------------------------
    let worker = forge.now(w1, Role::Worker);
    m.refused(
        "worker certificate: propose (a manager call)",
        call(
            &addr,
            Some(worker.clone()),
            "propose",
            json!({"command": {"PruneRemoved": {"now": 0}}}),
        ),
        "only managers may make this call",
    );
    m.refused(
        "worker certificate: Raft AppendEntries",
        append_entries(worker.clone(), w1, m1, &addr),
        "worker certificate cannot call raft RPCs",
    );
    // Issue 19, step 3: audit records travel between managers only.
    m.refused(
        "worker certificate: audit_records (a manager-only call)",
        call(
            &addr,
            Some(worker.clone()),
            "audit_records",
            json!({"from": 1, "to": 1}),
        ),
        "only managers may make this call",
    );
    // Decision D48: archiving (dropping records) is a manager's operator's.
    m.refused(
        "worker's control socket: audit archive",
        outcome(h.moat(
            "w1",
            &[
                "audit",
                "archive",
                "--before",
                "2999-01-01",
                "-o",
                h.dir().join("w1-archive").to_str().unwrap(),
            ],
        )),
        "not a cluster manager",
    );
    // Finding 2: a journal line claiming an operator removed a node, a
    // year ago, forwarded as the worker's own.
    let forged = ForwardedEvent {
        journal_seq: 1_000_000,
        time: OffsetDateTime::now_utc().unix_timestamp() - 365 * 86_400,
        event: Event {
            node: w1,
            actor: Actor::local_operator(),
            action: Action::NODE_REMOVE,
            target: Text::new("target", &format!("node:{m3}")).unwrap(),
            outcome: Outcome::Success,
            details: Details::new(),
        },
    };
    let sent = call(
        &addr,
        Some(worker.clone()),
        "audit_forward",
        json!({"events": [forged]}),
    );
    let records = h
        .moat(
            "m1",
            &[
                "audit",
                "ls",
                "--format",
                "json",
                "--action",
                "audit.forward",
            ],
        )
        .ok()
        .to_string();
    let recorded = records
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| {
            r["details"]["claimed_action"] == "node.remove" && r["actor"] == format!("node:{w1}")
        });
    let no_forged_removal = !h
        .moat(
            "m1",
            &["audit", "ls", "--format", "json", "--action", "node.remove"],
        )
        .ok()
        .contains(&format!("node:{m3}"));
    m.refused(
        "forged journal event (operator removed a node, a year ago)",
        match (&sent, &recorded) {
            (Ok(_), Some(r)) if no_forged_removal => Err(format!(
                "recorded as audit.forward, {}: {}",
                r["outcome"].as_str().unwrap_or_default(),
                r["reason"].as_str().unwrap_or_default()
            )),
            _ => Ok(format!("sent: {sent:?}, recorded: {recorded:?}")),
        },
        "may not hold the action node.remove",
    );

    // --- Manager powers without membership (finding 3) -------------------
    let stranger = NodeId::generate();
    let unknown = forge.now(stranger, Role::Manager);
    m.refused(
        "manager certificate for an unknown id: propose",
        call(
            &addr,
            Some(unknown.clone()),
            "propose",
            json!({"command": {"PruneRemoved": {"now": 0}}}),
        ),
        &format!("does not know node {stranger}"),
    );
    m.refused(
        "manager certificate for an unknown id: Raft AppendEntries",
        append_entries(unknown, stranger, m1, &addr),
        "is not a voter",
    );
    h.moat("m1", &["node", "demote", "m3"]).ok();
    h.wait_until("m3 to leave the voters", Duration::from_secs(30), || {
        h.nodes("m1")["m3"]["role"] == "worker"
    });
    let demoted = forge.now(m3, Role::Manager);
    m.refused(
        "demoted manager's key: Raft AppendEntries",
        append_entries(demoted.clone(), m3, m1, &addr),
        "is not a voter",
    );
    m.refused(
        "demoted manager's key: propose",
        call(
            &addr,
            Some(demoted),
            "propose",
            json!({"command": {"PruneRemoved": {"now": 0}}}),
        ),
        "was demoted to worker",
    );

    // --- Removed node ---------------------------------------------------
    h.stop("w2");
    h.moat("m1", &["node", "rm", "--force", "w2"]).ok();
    m.refused(
        "removed node's key: heartbeat",
        call(
            &addr,
            Some(forge.now(w2, Role::Worker)),
            "heartbeat",
            json!({"address": ""}),
        ),
        "removed from the cluster",
    );

    // --- Unauthenticated flood (finding 1) --------------------------------
    // From 127.0.0.2: the members and the joiner are on 127.0.0.1.
    let (flood_rt, idle) = idle_connections(&addr, 300);
    let after_flood = call(
        &addr,
        Some(worker.clone()),
        "heartbeat",
        json!({"address": ""}),
    );
    h.start("w3");
    let joined = h.join("w3", &worker_token, &addr);
    m.held(
        "300 idle connections from one address, then a member and a joiner",
        after_flood.is_ok() && joined.code == 0,
        format!(
            "{} connections held open; heartbeat {}; join {}",
            idle.len(),
            if after_flood.is_ok() {
                "answered"
            } else {
                "FAILED"
            },
            if joined.code == 0 {
                "succeeded"
            } else {
                "FAILED"
            }
        ),
    );
    drop(idle);
    drop(flood_rt);

    // --- Tokens ----------------------------------------------------------
    h.moat("m1", &["join-token", "--rotate", "worker"]).ok();
    h.start("w4");
    m.refused(
        "join with a rotated (old) worker token",
        outcome(h.join("w4", &worker_token, &addr)),
        "",
    );
    let printed = h.moat("m1", &["join-token", "worker"]).ok().to_string();
    m.held(
        "join token in a process's argv (ps)",
        printed.contains("MOAT_JOIN_TOKEN=") && !printed.contains("--token"),
        format!(
            "the printed command passes it in the environment: {}",
            printed
                .lines()
                .find(|l| l.contains("moat join"))
                .unwrap_or_default()
                .trim()
                .split('=')
                .next()
                .unwrap_or_default()
        ),
    );
    let (other_addr, other_token) = other_cluster(&mut h, "x1", &[]);
    let _ = other_addr;
    m.refused(
        "join with another cluster's token (wrong CA pin)",
        outcome(h.join("w4", &other_token, &addr)),
        "",
    );

    // --- Backups (finding 4) ----------------------------------------------
    // Someone who knows our (public) age recipient and can write to the
    // backup store puts a backup of their own cluster there.
    let dir = h.dir().to_path_buf();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let keygen = outcome(h.moat("m1", &["backup", "keygen", "-o", &p("backup.key")])).unwrap();
    let recipient = keygen
        .lines()
        .find_map(|l| l.strip_prefix("Public key: "))
        .unwrap()
        .trim()
        .to_string();
    h.moat(
        "x1",
        &[
            "backup",
            "--output",
            &p("forged.moat"),
            "--recipient",
            &recipient,
        ],
    )
    .ok();
    let ours = h.moat("m1", &["info", "--format", "json"]).json()["cluster_id"]
        .as_str()
        .unwrap()
        .to_string();
    m.refused(
        "restore of another cluster's backup, same age recipient",
        outcome(h.moat(
            "m1",
            &[
                "restore",
                &p("forged.moat"),
                "--state-dir",
                &p("restored"),
                "-i",
                &p("backup.key"),
                "--expect-cluster",
                &ours,
            ],
        )),
        &format!("not of cluster {ours}"),
    );

    // --- Host names (finding 5) -----------------------------------------
    m.refused(
        "daemon host name with terminal escapes",
        daemon_exit(
            &h.dir().join("evil"),
            &["--hostname", "evil\u{1b}]0;pwned\u{7}"],
            Duration::from_secs(20),
        ),
        "host name",
    );

    // --- Process memory (finding 6) --------------------------------------
    let pid = h.daemon("m1").pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    m.held(
        "core dump of a running manager",
        core == "Max core file size 0 0 bytes",
        core.clone(),
    );

    // --- Unlock key (autolock) -------------------------------------------
    let (_, _) = other_cluster(&mut h, "x2", &["--autolock"]);
    h.kill("x2");
    h.restart("x2");
    let wrong = moat_lock::UnlockKey::generate()
        .unwrap()
        .expose_for_operator();
    let mut last = Ok(String::new());
    for _ in 0..6 {
        last = outcome(h.moat_stdin("x2", &["unlock"], &format!("{}\n", wrong.as_str())));
    }
    m.refused(
        "wrong unlock key, six times",
        last,
        "too many failed unlock attempts",
    );

    m.finish();
}

/// m1's state with its secrets (`store dump --show-secrets`), read off its
/// disk with the daemon stopped: the attacker's kit. m1 stays stopped.
fn dump_m1(h: &mut Harness) -> Value {
    h.stop("m1");
    let dump = h.moat(
        "m1",
        &[
            "store",
            "dump",
            "--show-secrets",
            "--state-dir",
            h.daemon("m1").state_dir.to_str().unwrap(),
        ],
    );
    let text = dump.ok();
    serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap()
}

/// `task_sync` as `tls`, answered: its `Ok` value (`assignments`, `digest`).
fn task_sync(addr: &str, tls: &Arc<TlsContext>, body: Value) -> Result<Value, String> {
    call(addr, Some(tls.clone()), "task_sync", body).map(|ok| serde_json::from_str(&ok).unwrap())
}

/// `moat service ps web --format json` on m1, by task id.
fn ps_web(h: &Harness) -> std::collections::BTreeMap<String, Value> {
    h.moat("m1", &["service", "ps", "web", "--format", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_string(), t.clone()))
        .collect()
}

/// What a report could change about a task, as `service ps` shows it.
fn task_status(t: &Value) -> Value {
    json!({
        "node_id": t["node_id"], "state": t["state"], "desired_state": t["desired_state"],
        "pid": t["pid"], "error": t["error"], "exit_code": t["exit_code"],
        "message": t["message"],
    })
}

/// The total size of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_size(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// Text that neither repeats nor compresses much (hex of an xorshift).
fn noise(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    out
}

/// The first object in `v` (searched depth first) whose `id` is `id`.
fn find_by_id<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    match v {
        Value::Object(map) => {
            if map.get("id").and_then(Value::as_str) == Some(id) {
                return Some(v);
            }
            map.values().find_map(|x| find_by_id(x, id))
        }
        Value::Array(items) => items.iter().find_map(|x| find_by_id(x, id)),
        _ => None,
    }
}

/// `task_sync` (issue 17): any member, for itself, on the leader. A real
/// service runs on m1 and w1; w2 (paused, so it has no task) and w1 are
/// the attackers, with their own keys.
#[test]
fn task_sync_authorization_matrix() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, _) = h.cluster(&["m1"], &["w1", "w2"]);
    let mut m = Matrix::default();
    let ids = |h: &Harness, n: &str| node_id(h, "m1", n);
    let (m1, w1, w2) = (ids(&h, "m1"), ids(&h, "w1"), ids(&h, "w2"));

    // The attacker's kit: the CA key off m1's disk (stopped for the read).
    let forge = Forge::from_dump(&dump_m1(&mut h));
    h.restart("m1");
    let as_w1 = forge.now(w1, Role::Worker);
    let as_w2 = forge.now(w2, Role::Worker);

    // A real service: w2 is paused, so both tasks go to m1 and w1. Its
    // environment value stands for a secret.
    h.moat("m1", &["node", "update", "--availability", "pause", "w2"])
        .ok();
    let probe = moat_testkit::unique("envprobe");
    let env = format!("PROBE={probe}");
    h.moat(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--env",
            &env,
            "/bin/sleep",
            "300",
        ],
    )
    .ok();
    h.wait_until("web's two tasks to run", Duration::from_secs(60), || {
        let tasks = ps_web(&h);
        tasks.len() == 2
            && tasks
                .values()
                .all(|t| t["state"] == "running" && t["pid"].is_u64())
    });
    let tasks = ps_web(&h);
    let on = |node: NodeId| -> String {
        tasks
            .iter()
            .find(|(_, t)| t["node_id"] == node.to_string())
            .unwrap_or_else(|| panic!("no task on {node}: {tasks:?}"))
            .0
            .clone()
    };
    let (t_m1, t_w1) = (on(m1), on(w1));
    let status = |h: &Harness, id: &str| task_status(&ps_web(h)[id]);
    let (before_m1, before_w1) = (status(&h, &t_m1), status(&h, &t_w1));
    let pid_w1 = before_w1["pid"].as_u64().unwrap().to_string();
    // Each forged report carries a 1 MiB error text: one the leader
    // proposes (a Raft entry) shows as growth of m1's state directory,
    // so a row fails if either the leader's filter (node/src/service/
    // tasks.rs `news`) or the store's apply rule (orchestrator/src/
    // state.rs `report_tasks`) stops holding.
    let report = |id: &str, state: &str| {
        json!({"task_id": id, "state": state, "since": 0, "message": "attack",
               "error": noise(1 << 20, 7), "exit_code": 1, "runtime_id": "1"})
    };
    let m1_dir = h.daemon("m1").state_dir.clone();
    let growth = |action: &mut dyn FnMut()| -> u64 {
        let before = dir_size(&m1_dir);
        action();
        std::thread::sleep(Duration::from_secs(1));
        dir_size(&m1_dir).saturating_sub(before)
    };

    // --- Unauthenticated ----------------------------------------------------
    m.refused(
        "no certificate: task_sync",
        call(&addr, None, "task_sync", json!({"reports": []})),
        "needs a node certificate",
    );

    // --- Reports about another node's tasks ---------------------------------
    let (mut lie_w2, mut lie_w1) = (Err(String::new()), Err(String::new()));
    let grown = growth(&mut || {
        lie_w2 = task_sync(
            &addr,
            &as_w2,
            json!({"reports": [report(&t_m1, "failed"), report(&t_w1, "complete")]}),
        );
        lie_w1 = task_sync(
            &addr,
            &as_w1,
            json!({"reports": [report(&t_m1, "shutdown")]}),
        );
    });
    let (after_m1, after_w1) = (status(&h, &t_m1), status(&h, &t_w1));
    m.held(
        "worker reports other nodes' running tasks as ended",
        lie_w2.is_ok()
            && lie_w1.is_ok()
            && after_m1 == before_m1
            && after_w1 == before_w1
            && grown < 512 << 10,
        format!(
            "calls answered: {}/{}; m1's task {} {}, w1's task {} {}; Raft log +{} KiB",
            lie_w2.is_ok(),
            lie_w1.is_ok(),
            after_m1["state"],
            if after_m1 == before_m1 {
                "unchanged"
            } else {
                "CHANGED"
            },
            after_w1["state"],
            if after_w1 == before_w1 {
                "unchanged"
            } else {
                "CHANGED"
            },
            grown >> 10,
        ),
    );

    // --- What a node learns ---------------------------------------------------
    let empty = task_sync(&addr, &as_w2, json!({"reports": []}));
    let own = task_sync(&addr, &as_w1, json!({"reports": []}));
    let listed = |a: &Result<Value, String>| -> Vec<String> {
        a.as_ref()
            .map(|v| {
                v["assignments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x["task_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (empty_ids, own_ids) = (listed(&empty), listed(&own));
    m.held(
        "node without tasks asks for assignments (others run two)",
        empty.is_ok() && empty_ids.is_empty(),
        format!("w2 was given {} assignment(s): {empty:?}", empty_ids.len()),
    );
    m.held(
        "worker asks for assignments: only its own",
        own_ids == vec![t_w1.clone()],
        format!("w1 was given {own_ids:?} (its task: {t_w1}; m1's: {t_m1})"),
    );

    // --- Reports that move backwards or claim a leader-only state ------------
    for (attack, states) in [
        (
            "worker moves its running task back (new … starting)",
            &["new", "pending", "assigned", "accepted", "starting"][..],
        ),
        (
            "worker reports its task orphaned/remove (leader-only)",
            &["orphaned", "remove"][..],
        ),
    ] {
        let reports: Vec<Value> = states.iter().map(|s| report(&t_w1, s)).collect();
        let mut back = Err(String::new());
        let grown = growth(&mut || {
            back = task_sync(&addr, &as_w1, json!({"reports": reports}));
        });
        let after = status(&h, &t_w1);
        m.held(
            attack,
            back.is_ok() && after == before_w1 && grown < 512 << 10,
            format!(
                "call answered: {}; w1's task {} {}; Raft log +{} KiB",
                back.is_ok(),
                after["state"],
                if after == before_w1 {
                    "unchanged"
                } else {
                    "CHANGED"
                },
                grown >> 10,
            ),
        );
    }

    // --- Floods -----------------------------------------------------------------
    let many = |n: usize| -> Value {
        let reports: Vec<Value> = (0..n)
            .map(|i| json!({"task_id": format!("T{i}"), "state": "running", "since": 0}))
            .collect();
        json!({"reports": reports})
    };
    m.refused(
        "task_sync with 10,001 reports",
        task_sync(&addr, &as_w1, many(10_001)).map(|v| v.to_string()),
        "10001 task reports in one call; at most 10000",
    );
    let at_bound = task_sync(&addr, &as_w1, many(10_000));
    m.held(
        "task_sync with 10,000 reports (the bound)",
        at_bound.is_ok(),
        format!("answered: {:?}", at_bound.as_ref().map(|_| "ok")),
    );
    // A report in the task's current state with an error text is "news"
    // to the leader, which proposes it; apply keeps only forward moves.
    let mut answered = 0;
    let grown = growth(&mut || {
        for i in 0..8 {
            let same = json!({"task_id": t_w1, "state": "running", "since": 0,
                              "runtime_id": pid_w1, "error": noise(1 << 20, i + 1)});
            if task_sync(&addr, &as_w1, json!({"reports": [same]})).is_ok() {
                answered += 1;
            }
        }
    });
    let after = status(&h, &t_w1);
    m.held(
        "8 reports of a task's current state, 1 MiB error each",
        answered == 8 && after == before_w1 && grown < 2 << 20,
        format!(
            "{answered} answered; w1's task {}; m1's state directory grew {} KiB (Raft entries that change nothing)",
            if after == before_w1 { "unchanged" } else { "CHANGED" },
            grown >> 10
        ),
    );
    // The long poll: a node that already has its assignments waits for a
    // change, at most 15 s whatever it asks.
    let digest = empty
        .as_ref()
        .map(|v| v["digest"].clone())
        .unwrap_or_default();
    let start = std::time::Instant::now();
    let held_open = call_within(
        &addr,
        Some(as_w2.clone()),
        "task_sync",
        json!({"reports": [], "known": digest, "wait_ms": u64::MAX}),
        Duration::from_secs(60),
    );
    let waited = start.elapsed();
    m.held(
        "long poll asking to wait u64::MAX ms",
        held_open.is_ok() && waited >= Duration::from_secs(14) && waited < Duration::from_secs(25),
        format!(
            "answered after {:.1} s: {}",
            waited.as_secs_f64(),
            one_line(&format!("{held_open:?}"))
        ),
    );

    // --- Environment values ---------------------------------------------------
    let runner_has_it = own.as_ref().is_ok_and(|v| v.to_string().contains(&probe));
    let shown: Vec<&str> = [
        (
            "service inspect",
            h.moat("m1", &["service", "inspect", "web"])
                .ok()
                .to_string(),
        ),
        (
            "service ls",
            h.moat("m1", &["service", "ls", "--format", "json"])
                .ok()
                .to_string(),
        ),
        (
            "service ps",
            h.moat("m1", &["service", "ps", "web", "--format", "json"])
                .ok()
                .to_string(),
        ),
        (
            "audit ls",
            h.moat("m1", &["audit", "ls", "--format", "json"])
                .ok()
                .to_string(),
        ),
        ("w2's answer", format!("{empty:?}")),
    ]
    .iter()
    .filter(|(_, text)| text.contains(&probe))
    .map(|(what, _)| *what)
    .collect();
    let on_disk = moat_testkit::secrets::files_containing(h.dir(), probe.as_bytes());
    m.held(
        "env value: CLI, audit, other nodes, disks and logs",
        runner_has_it && shown.is_empty() && on_disk.is_empty(),
        format!(
            "in w1's own assignment: {runner_has_it}; shown by: {shown:?}; files holding it: {on_disk:?}"
        ),
    );

    // --- Not the control API ----------------------------------------------------
    let routes = |tls: &Arc<TlsContext>| -> Result<String, String> {
        let mut refusals = Vec::new();
        for method in [
            "service_create",
            "service_update",
            "service_scale",
            "service_rm",
            "service_ls",
        ] {
            let body = json!({"spec": {"name": "evil", "task": {"image": "/bin/sh"}}, "id": "web"});
            match call(&addr, Some(tls.clone()), method, body) {
                Err(e) if e.contains("unknown cluster method") => refusals.push(e),
                other => return Ok(format!("{method}: {other:?}")),
            }
        }
        Err(refusals.join(" / "))
    };
    m.refused(
        "worker certificate: service_* over the cluster port",
        routes(&as_w1),
        "unknown cluster method \\\"service_create\\\"",
    );
    m.refused(
        "manager certificate: service_* over the cluster port",
        routes(&forge.now(m1, Role::Manager)),
        "unknown cluster method \\\"service_create\\\"",
    );

    // --- Removed node -----------------------------------------------------------
    h.stop("w2");
    h.moat("m1", &["node", "rm", "--force", "w2"]).ok();
    m.refused(
        "removed node's key: task_sync",
        call(
            &addr,
            Some(as_w2.clone()),
            "task_sync",
            json!({"reports": []}),
        ),
        "removed from the cluster",
    );

    // --- Oversized fields (last: it ends w1's task) --------------------------
    // 1,000 copies of one report (a task ends once): what reaches the
    // store is cut to MAX_REPORT_MESSAGE / MAX_RUNTIME_ID, and what
    // reaches the Raft log should be too.
    let big = json!({"task_id": t_w1, "state": "failed", "since": 0,
                     "message": noise(5000, 11), "error": noise(5000, 12),
                     "runtime_id": "9".repeat(500), "exit_code": 7});
    let mut sent = Err(String::new());
    let grown = growth(&mut || {
        sent = task_sync(&addr, &as_w1, json!({"reports": vec![big.clone(); 1000]}));
    });
    let shown = ps_web(&h)[&t_w1].clone();
    let state = dump_m1(&mut h);
    let stored = find_by_id(&state, &t_w1).cloned().unwrap_or_default();
    let len = |v: &Value| v.as_str().map_or(0, str::len);
    let lens = (
        len(&shown["message"]),
        len(&shown["error"]),
        len(&stored["status"]["runtime_id"]),
    );
    m.held(
        "report with 5,000-byte message/error, 500-byte runtime id",
        sent.is_ok() && shown["state"] == "failed" && lens == (1024, 1024, 128),
        format!(
            "state {}; kept {} / {} / {} bytes",
            shown["state"], lens.0, lens.1, lens.2
        ),
    );
    m.held(
        "1,000 copies of that report in one call",
        sent.is_ok() && grown < 1 << 20,
        format!(
            "m1's state directory grew {} KiB for one task's end (kept: {} bytes)",
            grown >> 10,
            lens.0 + lens.1 + lens.2
        ),
    );

    m.finish();
}

/// `task_secrets` (issue 18): a node gets a task's secrets only while
/// that task is assigned to it and is to run; every other request is
/// refused and audited (`secret.deny`), within a per-node rate limit. A
/// real service with a secret runs on w1; w2 (with its own key) and a
/// caller without a certificate are the attackers.
#[test]
fn task_secrets_authorization_matrix() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, _) = h.cluster(&["m1"], &["w1", "w2"]);
    let mut m = Matrix::default();
    let (w1, w2) = (node_id(&h, "m1", "w1"), node_id(&h, "m1", "w2"));
    let forge = Forge::from_dump(&dump_m1(&mut h));
    h.restart("m1");
    let (as_w1, as_w2) = (forge.now(w1, Role::Worker), forge.now(w2, Role::Worker));

    let value = moat_testkit::unique("matrix-secret");
    h.moat_stdin("m1", &["secret", "create", "db", "-"], &value)
        .ok();
    h.moat(
        "m1",
        &[
            "service",
            "create",
            "--name",
            "app",
            "--secret",
            "db",
            "--constraint",
            "node.hostname==w1",
            "/bin/sleep",
            "300",
        ],
    )
    .ok();
    let task = h
        .moat("m1", &["service", "ps", "app", "--format", "json"])
        .json()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ask = |tls: Option<Arc<TlsContext>>, task: &str| {
        call(&addr, tls, "task_secrets", json!({"task_id": task}))
    };

    m.refused(
        "no certificate: task_secrets",
        ask(None, &task),
        "needs a node certificate",
    );
    m.refused(
        "another node's task: w2 asks for w1's secrets",
        ask(Some(as_w2.clone()), &task),
        "not assigned to this node",
    );
    m.refused(
        "a task that does not exist",
        ask(Some(as_w2.clone()), "NOSUCHTASK"),
        "does not exist",
    );
    m.refused(
        "a task id of 10,000 bytes",
        ask(Some(as_w2.clone()), &"A".repeat(10_000)),
        "1 to 128 bytes",
    );
    let own = ask(Some(as_w1.clone()), &task);
    let b64 = |t: &str| {
        let json = json!(data_b64(t.as_bytes()));
        json.as_str().unwrap().to_owned()
    };
    m.held(
        "the assigned node asks for its own task's secrets",
        own.as_ref().is_ok_and(|a| a.contains(&b64(&value))),
        format!(
            "w1 got its file ({} bytes of answer)",
            own.as_ref().map_or(0, String::len)
        ),
    );

    // A flood of refusals: every one refused, few recorded.
    let refused = (0..40)
        .filter(|_| ask(Some(as_w2.clone()), &task).is_err())
        .count();
    let denials = h
        .moat(
            "m1",
            &["audit", "ls", "--format", "json", "--action", "secret.deny"],
        )
        .ok()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect::<Vec<_>>();
    let names_w2 = denials
        .iter()
        .any(|r| r["actor"] == format!("node:{w2}") && r.to_string().contains("secret:db"));
    m.held(
        "w2 asks 40 more times: all refused, few recorded",
        refused == 40 && names_w2 && denials.len() <= 12,
        format!("{refused} refused, {} secret.deny records", denials.len()),
    );

    // Once the task is to stop, its own node is refused too.
    h.moat("m1", &["service", "rm", "app"]).ok();
    m.refused(
        "w1 asks again after the service is removed",
        ask(Some(as_w1), &task),
        "",
    );
    let audit = h
        .moat("m1", &["audit", "ls", "--format", "json"])
        .ok()
        .to_owned();
    m.held(
        "the secret's bytes in no audit record",
        !audit.contains(&value) && !audit.contains(&b64(&value)),
        "audit ls".into(),
    );
    m.finish();
}

/// `task_identity` (issue 18): a task's workload certificate goes only to
/// its own node, for a task to run, of a service with an identity; a
/// refusal is audited; a workload certificate never passes for a node's.
#[test]
fn task_identity_authorization_matrix() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    let (addr, _) = h.cluster(&["m1"], &["w1", "w2"]);
    let mut m = Matrix::default();
    let (w1, w2) = (node_id(&h, "m1", "w1"), node_id(&h, "m1", "w2"));
    let forge = Forge::from_dump(&dump_m1(&mut h));
    h.restart("m1");
    let (as_w1, as_w2) = (forge.now(w1, Role::Worker), forge.now(w2, Role::Worker));
    for (name, extra) in [("app", None), ("plain", Some("--no-identity"))] {
        let mut args = vec![
            "service",
            "create",
            "--name",
            name,
            "--constraint",
            "node.hostname==w1",
        ];
        args.extend(extra);
        args.extend(["/bin/sleep", "300"]);
        h.moat("m1", &args).ok();
    }
    let task_of = |h: &Harness, service: &str| {
        h.moat("m1", &["service", "ps", service, "--format", "json"])
            .json()[0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (task, plain) = (task_of(&h, "app"), task_of(&h, "plain"));
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = moat_pki::csr_pem(key.csr().unwrap().as_ref());
    let ask = |tls: Option<Arc<TlsContext>>, task: &str, csr: &str| {
        call(
            &addr,
            tls,
            "task_identity",
            json!({"task_id": task, "csr_pem": csr}),
        )
    };

    m.refused(
        "no certificate: task_identity",
        ask(None, &task, &csr),
        "needs a node certificate",
    );
    m.refused(
        "another node's task: w2 asks for w1's task's identity",
        ask(Some(as_w2.clone()), &task, &csr),
        "not assigned to this node",
    );
    m.refused(
        "a task of a service created with --no-identity",
        ask(Some(as_w1.clone()), &plain, &csr),
        "no workload identity",
    );
    m.refused(
        "a request that is not a CSR",
        ask(Some(as_w1.clone()), &task, "not a certificate request"),
        "certificate request",
    );
    m.refused(
        "a CSR of 100,000 bytes",
        ask(Some(as_w1.clone()), &task, &"A".repeat(100_000)),
        "at most",
    );
    let own = ask(Some(as_w1.clone()), &task, &csr);
    let spiffe = format!("spiffe://{}/service/app", forge.ca.cluster_id());
    m.held(
        "the assigned node asks for its own task's identity",
        own.as_ref().is_ok_and(|a| a.contains(&spiffe)),
        format!(
            "w1 got {}",
            own.as_ref()
                .map_or_else(|e| e.clone(), |a| a.chars().take(80).collect())
        ),
    );
    // The certificate it got never passes for a node's, with its key.
    let answer: Value = serde_json::from_str(own.as_deref().unwrap_or("{}")).unwrap();
    let chain = answer["chain_pem"].as_str().unwrap_or_default();
    let presented = if chain.is_empty() {
        Err("no certificate".to_owned())
    } else {
        // A plain rustls client, not moat's TLS stack (which would not
        // present it): the manager must refuse it in the handshake.
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(forge.ca.certificate().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![pem_der(chain)],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.to_pkcs8_der().to_vec().into()),
        )
        .unwrap();
        tls_refusal_with(&addr, config)
    };
    m.refused(
        "a task's certificate presented as a node's (TLS client auth)",
        presented,
        "",
    );
    let issued = h
        .moat(
            "m1",
            &[
                "audit",
                "ls",
                "--format",
                "json",
                "--action",
                "identity.issue",
            ],
        )
        .ok()
        .to_owned();
    m.held(
        "the issue is audited with the node and the SPIFFE ID",
        issued.contains(&format!("node:{w1}")) && issued.contains(&spiffe),
        "audit ls --action identity.issue".into(),
    );
    let denied = h
        .moat(
            "m1",
            &[
                "audit",
                "ls",
                "--format",
                "json",
                "--action",
                "identity.deny",
            ],
        )
        .ok()
        .to_owned();
    m.held(
        "w2's refusal is audited",
        denied.contains(&format!("node:{w2}")) && denied.contains("not assigned"),
        "audit ls --action identity.deny".into(),
    );

    // Once the task is to stop, its own node is refused too.
    h.moat("m1", &["service", "rm", "app", "plain"]).ok();
    m.refused(
        "w1 asks again after the service is removed",
        ask(Some(as_w1), &task, &csr),
        "",
    );
    m.finish();
}

/// Standard base64, as the wire carries a secret's data.
fn data_b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}
