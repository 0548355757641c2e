//! Regression for issue 16, finding 1 (connection-slot exhaustion): a few
//! hundred idle TLS connections without a client certificate, from one
//! address, against every manager of a real cluster. While they keep
//! coming, a new worker joins, a restarted worker reconnects, and every
//! member keeps heartbeating and renews its certificate.
//!
//! The flood comes from 127.0.0.2, the cluster from 127.0.0.1: members do
//! not share the flooding source's per-source budget (as members on other
//! machines would not).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moat_testkit::Harness;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

/// Where the flood comes from (any 127/8 address is local on Linux).
const FLOOD_SOURCE: &str = "127.0.0.2";
/// Connections the flood keeps trying to hold open against each manager.
const FLOOD_PER_MANAGER: usize = 300;
/// How long a flooding task waits before opening its next connection.
const FLOOD_RECONNECT: Duration = Duration::from_secs(2);

/// What the flood saw.
#[derive(Default)]
struct FloodStats {
    /// Connections attempted (TCP connect started).
    attempts: AtomicU64,
    /// TLS handshakes completed without a client certificate.
    handshakes: AtomicU64,
    /// Completed connections the server closed later.
    closed_by_server: AtomicU64,
    /// Longest a completed connection stayed open before the server
    /// closed it, in milliseconds.
    longest_ms: AtomicU64,
}

/// One flooding connection, over and over: TCP from [`FLOOD_SOURCE`], a
/// full TLS 1.3 handshake with no client certificate, then silence until
/// the server closes it.
async fn flood_one(target: SocketAddr, connector: TlsConnector, stats: Arc<FloodStats>) {
    let source: SocketAddr = format!("{FLOOD_SOURCE}:0").parse().unwrap();
    loop {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let attempt = async {
            let socket = TcpSocket::new_v4().ok()?;
            socket.bind(source).ok()?;
            let tcp = socket.connect(target).await.ok()?;
            connector
                .connect(moat_pki::manager_server_name(), tcp)
                .await
                .ok()
        };
        if let Ok(Some(mut tls)) = tokio::time::timeout(Duration::from_secs(10), attempt).await {
            stats.handshakes.fetch_add(1, Ordering::Relaxed);
            let opened = Instant::now();
            let mut buf = [0u8; 4096];
            // Never send a byte; read (and drop) whatever the server says
            // until it closes the connection.
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
            let held = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            stats.longest_ms.fetch_max(held, Ordering::Relaxed);
        }
        tokio::time::sleep(FLOOD_RECONNECT).await;
    }
}

/// Starts the flood against `targets` on its own runtime; it runs until
/// the runtime is dropped.
fn start_flood(targets: &[SocketAddr], stats: &Arc<FloodStats>) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // What a joining node uses for its first call: TLS 1.3, no client
    // certificate, the server's certificate not checked.
    let mut config = moat_pki::bootstrap_client_config().unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    for target in targets {
        for _ in 0..FLOOD_PER_MANAGER {
            rt.spawn(flood_one(*target, connector.clone(), stats.clone()));
        }
    }
    rt
}

fn serials(h: &Harness) -> BTreeMap<String, String> {
    h.nodes("m1")
        .into_iter()
        .map(|(name, n)| (name, n["cert_serial"].as_str().unwrap().to_string()))
        .collect()
}

fn all_ready(h: &Harness, count: usize) -> bool {
    let nodes = h.nodes("m1");
    nodes.len() == count && nodes.values().all(|n| n["status"] == "ready")
}

/// Guards issue 16 finding 1: idle unauthenticated connections cannot
/// take the slots that joins, renewals, heartbeats and reconnects need.
#[test]
fn unauthenticated_flood_does_not_starve_joins_or_members() {
    let mut h = Harness::new(env!("CARGO_BIN_EXE_moat"));
    for name in ["m1", "m2", "m3", "w1", "w2"] {
        h.start(name);
    }
    // One-minute certificates: every node renews within the test.
    let (addr, worker_token) = h.init("m1", &["--cert-expiry", "1m"]);
    let manager_token = h
        .moat("m1", &["join-token", "-q", "manager"])
        .ok()
        .trim()
        .to_string();
    h.join("m2", &manager_token, &addr).ok();
    h.join("m3", &manager_token, &addr).ok();
    h.join("w1", &worker_token, &addr).ok();
    h.wait_until("four ready nodes", Duration::from_secs(30), || {
        all_ready(&h, 4)
    });
    let nodes = h.nodes("m1");
    let targets: Vec<SocketAddr> = ["m1", "m2", "m3"]
        .iter()
        .map(|m| nodes[*m]["address"].as_str().unwrap().parse().unwrap())
        .collect();

    // The flood: a few hundred idle TLS connections per manager, from one
    // address, reopened as soon as the server closes them.
    let stats = Arc::new(FloodStats::default());
    let flood = start_flood(&targets, &stats);
    let started = Instant::now();
    h.wait_until(
        "the flood to have tried every connection",
        Duration::from_secs(60),
        || {
            stats.attempts.load(Ordering::Relaxed) >= (targets.len() * FLOOD_PER_MANAGER) as u64
                && started.elapsed() > Duration::from_secs(3)
        },
    );
    assert!(
        stats.handshakes.load(Ordering::Relaxed) > 0,
        "the flood completed no TLS handshake: the test tests nothing"
    );
    let before = serials(&h);

    // A new worker joins through the flooded manager.
    let out = h.join("w2", &worker_token, &addr);
    assert_eq!(
        out.ok().trim(),
        "This node joined the cluster as a worker.",
        "{}",
        out.stderr
    );
    // A restarted worker opens new connections with its certificate.
    h.kill("w1");
    h.restart("w1");
    h.wait_until(
        "five ready nodes during the flood",
        Duration::from_secs(30),
        || all_ready(&h, 5),
    );
    let w2_first = serials(&h)["w2"].clone();

    // Every member renews (heartbeats all the while: no node goes down).
    h.wait_until(
        "every node to renew its certificate during the flood",
        Duration::from_secs(120),
        || {
            let nodes = h.nodes("m1");
            for (name, n) in &nodes {
                assert_ne!(n["status"], "down", "{name} went down during the flood");
            }
            let now = serials(&h);
            now.len() == 5
                && now.iter().all(|(name, serial)| match name.as_str() {
                    "w2" => *serial != w2_first,
                    _ => before.get(name) != Some(serial),
                })
        },
    );
    assert!(all_ready(&h, 5), "{:#?}", h.nodes("m1"));
    let flooded_for = started.elapsed();
    drop(flood);

    // The server closed the idle connections on its own, within the idle
    // timeout (10 s) plus slack for a loaded machine.
    let closed = stats.closed_by_server.load(Ordering::Relaxed);
    let longest = Duration::from_millis(stats.longest_ms.load(Ordering::Relaxed));
    assert!(closed > 0, "the server never closed an idle connection");
    assert!(
        longest < Duration::from_secs(20),
        "an idle unauthenticated connection stayed open {longest:?}"
    );
    // Refusals are logged, naming the pool and the source, but not one
    // line per refused connection.
    for m in ["m1", "m2", "m3"] {
        let log = h.daemon(m).log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(FLOOD_SOURCE) && l.contains("refused"))
            .collect();
        assert!(
            lines.iter().any(|l| l.contains("unauthenticated")),
            "{m} logged no refusal naming the pool:\n{}",
            lines.join("\n")
        );
        let bound = 4 * (flooded_for.as_secs() / 10 + 2);
        assert!(
            lines.len() as u64 <= bound,
            "{m} logged {} refusal lines in {flooded_for:?} (at most {bound} expected)",
            lines.len()
        );
    }
}
