//! The live TLS probe (`moat_swarm::probe`) against real servers: an
//! in-test rustls server, `openssl s_server`, and a real Docker Swarm
//! manager started on this machine's engine.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::fs::File;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use moat_api::{ProbeGroup, TlsProbe};
use moat_swarm::probe::{ProbeError, probe};
use moat_testkit::docker::{DockerSwarm, docker_ok};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throwaway CA and a leaf for `swarm-manager`, both ECDSA P-256.
struct TestPki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    leaf_key_der: Vec<u8>,
    leaf_key_pem: String,
}

fn test_pki() -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "probe-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["swarm-manager".to_owned(), "node-1".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "node-1");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    TestPki {
        ca_der: ca.der().clone(),
        ca_pem: ca.pem(),
        leaf_der: leaf.der().clone(),
        leaf_pem: leaf.pem(),
        leaf_key_der: leaf_key.serialize_der(),
        leaf_key_pem: leaf_key.serialize_pem(),
    }
}

fn sha256(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn names(probe: &TlsProbe) -> Vec<&str> {
    probe
        .cipher_suites
        .iter()
        .map(|s| s.name.as_str())
        .collect()
}

fn group(name: &str, versions: &[&str], post_quantum: bool) -> ProbeGroup {
    ProbeGroup {
        name: name.to_owned(),
        versions: versions.iter().map(|v| (*v).to_owned()).collect(),
        post_quantum,
    }
}

/// Guards the whole enumeration: every offer got an answer.
fn assert_all_tested(probe: &TlsProbe) {
    assert!(
        !probe.notes.iter().any(|n| n.starts_with("not tested")),
        "notes: {:#?}",
        probe.notes
    );
}

/// Serves TLS 1.3 only (AES-256-GCM and ChaCha20, X25519MLKEM768 and
/// X25519) with rustls, asking for an optional client certificate.
fn rustls_server(pki: &TestPki) -> std::net::SocketAddr {
    let mut provider = aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
        aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    provider.kx_groups = vec![
        aws_lc_rs::kx_group::X25519MLKEM768,
        aws_lc_rs::kx_group::X25519,
    ];
    let provider = Arc::new(provider);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![pki.leaf_der.clone(), pki.ca_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key_der.clone())),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The thread ends with the test binary.
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            while conn.is_handshaking() {
                if conn.complete_io(&mut stream).is_err() {
                    break;
                }
            }
            let _ = conn.complete_io(&mut stream);
        }
    });
    addr
}

/// Guards: exact versions, suites and groups of a TLS 1.3-only server with
/// a post-quantum group, the chain as sent, the negotiated parameters and
/// the client-certificate request.
#[test]
fn rustls_server_tls13_only_post_quantum() {
    let pki = test_pki();
    let addr = rustls_server(&pki);
    let found = probe(&addr.to_string(), Duration::from_secs(5)).unwrap();

    assert_eq!(found.address, addr.to_string());
    assert_eq!(found.peer, addr.to_string());
    assert_eq!(found.versions, ["TLSv1.3"]);
    assert_eq!(
        names(&found),
        ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    );
    assert!(
        found
            .cipher_suites
            .iter()
            .all(|s| s.version == "TLSv1.3" && !s.weak)
    );
    assert_eq!(
        found.key_exchange_groups,
        [
            group("X25519MLKEM768", &["TLSv1.3"], true),
            group("X25519", &["TLSv1.3"], false)
        ]
    );
    assert!(found.post_quantum);
    assert!(found.client_cert_requested);
    let negotiated = found.negotiated.as_ref().unwrap();
    assert_eq!(negotiated.version, "TLSv1.3");
    assert!(names(&found).contains(&negotiated.cipher_suite.as_str()));
    assert_eq!(
        negotiated.key_exchange_group.as_deref(),
        Some("X25519MLKEM768")
    );

    assert_eq!(found.chain.len(), 2);
    let (leaf, ca) = (&found.chain[0], &found.chain[1]);
    assert_eq!(leaf.subject, "CN=node-1");
    assert_eq!(leaf.issuer, "CN=probe-test-ca");
    assert_eq!(leaf.key_algorithm, "ECDSA P-256");
    assert_eq!(leaf.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(leaf.subject_alt_names, ["DNS:swarm-manager", "DNS:node-1"]);
    assert_eq!(leaf.sha256, sha256(&pki.leaf_der));
    assert!(!leaf.is_ca);
    assert!(ca.is_ca);
    assert_eq!(ca.sha256, sha256(&pki.ca_der));
    time::OffsetDateTime::parse(
        &leaf.not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    time::OffsetDateTime::parse(
        &found.probed_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_all_tested(&found);
    // The result is plain data: it survives JSON.
    let json = serde_json::to_string(&found).unwrap();
    assert_eq!(serde_json::from_str::<TlsProbe>(&json).unwrap(), found);
}

/// Kills the `openssl s_server` this test started.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: &str, server: &mut Child) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("openssl s_server exited with {status} before listening on {addr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "nothing listens on {addr}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Guards: a TLS 1.2-only server with a CBC-SHA suite; the probe finds
/// exactly its suites, marks the CBC one weak, finds its groups.
#[test]
fn openssl_tls12_cbc_suite_is_found_and_weak() {
    let openssl = Command::new("openssl").arg("version").output();
    assert!(
        openssl.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs `openssl` (s_server) on PATH: {openssl:?}"
    );
    let pki = test_pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("leaf.pem");
    let key = dir.path().join("leaf.key");
    let chain = dir.path().join("ca.pem");
    File::create(&cert)
        .unwrap()
        .write_all(pki.leaf_pem.as_bytes())
        .unwrap();
    File::create(&key)
        .unwrap()
        .write_all(pki.leaf_key_pem.as_bytes())
        .unwrap();
    File::create(&chain)
        .unwrap()
        .write_all(pki.ca_pem.as_bytes())
        .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = KillOnDrop(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-tls1_2", "-accept", &addr])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-cert_chain")
            .arg(&chain)
            .args([
                "-cipher",
                "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384",
            ])
            .args(["-groups", "X25519:P-256"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&addr, &mut server.0);

    let found = probe(&addr, Duration::from_secs(5)).unwrap();
    println!("{}", serde_json::to_string_pretty(&found).unwrap());
    assert_eq!(found.versions, ["TLSv1.2"]);
    assert_eq!(
        names(&found),
        [
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        ]
    );
    let gcm = &found.cipher_suites[0];
    assert!(!gcm.weak && gcm.weaknesses.is_empty(), "{gcm:?}");
    let cbc = &found.cipher_suites[1];
    assert_eq!(cbc.version, "TLSv1.2");
    assert!(cbc.weak);
    assert_eq!(cbc.weaknesses, ["CBC mode", "SHA-1 MAC"]);
    assert_eq!(
        found.key_exchange_groups,
        [
            group("X25519", &["TLSv1.2"], false),
            group("secp256r1", &["TLSv1.2"], false)
        ]
    );
    assert!(!found.post_quantum);
    // moat's client speaks only TLS 1.3; the chain comes from the TLS 1.2
    // flight, which is in clear.
    assert_eq!(found.negotiated, None);
    assert!(!found.client_cert_requested);
    assert_eq!(found.chain.len(), 2);
    assert_eq!(found.chain[0].sha256, sha256(&pki.leaf_der));
    assert_eq!(
        found.chain[0].subject_alt_names,
        ["DNS:swarm-manager", "DNS:node-1"]
    );
    assert_eq!(found.chain[1].sha256, sha256(&pki.ca_der));
    assert_all_tested(&found);
}

/// Guards the errors' hints: nothing listening, and not TLS.
#[test]
fn refused_and_not_tls_say_what_to_check() {
    let port = free_port();
    let err = probe(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, ProbeError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("2377"), "{err}");

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let err = probe(&addr.to_string(), Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, ProbeError::NotTls { .. }), "{err:?}");
    assert!(err.to_string().contains("HTTP/"), "{err}");

    let err = probe("no-port-here", Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, ProbeError::Address { .. }), "{err:?}");
}

/// Guards the probe against the real thing: a Docker Swarm manager's port
/// (Docker 20.10 here). What it asserts was measured: TLS 1.2 and 1.3,
/// AES-CBC-SHA suites still served under 1.2 (weak), X25519 without a
/// post-quantum group, and the manager's chain (SAN `swarm-manager`,
/// issued by `swarm-ca`).
#[test]
fn docker_swarm_manager_port() {
    let (_swarm, _) = DockerSwarm::init(&[]);

    let found = probe("127.0.0.1:2377", Duration::from_secs(5)).unwrap();
    println!(
        "probe of a Docker {} swarm manager:\n{}",
        docker_ok(&["version", "--format", "{{.Server.Version}}"]).trim(),
        serde_json::to_string_pretty(&found).unwrap()
    );

    // Measured on Docker 20.10.24 (Go crypto/tls): TLS 1.2 and 1.3; under
    // 1.2 the ECDSA AEAD suites and two AES-CBC-SHA ones; X25519 and the
    // NIST curves, no post-quantum group.
    assert_eq!(found.versions, ["TLSv1.2", "TLSv1.3"]);
    assert_eq!(
        names(&found),
        [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        ],
        "{:#?}",
        found.cipher_suites
    );
    let weak: Vec<&str> = found
        .cipher_suites
        .iter()
        .filter(|s| s.weak)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        weak,
        [
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        ]
    );
    assert!(
        found
            .cipher_suites
            .iter()
            .filter(|s| s.weak)
            .all(|s| s.version == "TLSv1.2")
    );
    let both = ["TLSv1.2", "TLSv1.3"];
    assert_eq!(
        found.key_exchange_groups,
        [
            group("X25519", &both, false),
            group("secp256r1", &both, false),
            group("secp384r1", &both, false),
            group("secp521r1", &both, false),
        ]
    );
    assert!(!found.post_quantum);
    // VerifyClientCertIfGiven: asked, and the handshake completes without.
    assert!(found.client_cert_requested);
    let negotiated = found.negotiated.as_ref().expect("a full handshake");
    assert_eq!(negotiated.version, "TLSv1.3");
    assert_eq!(negotiated.cipher_suite, "TLS_AES_128_GCM_SHA256");
    assert_eq!(negotiated.key_exchange_group.as_deref(), Some("X25519"));
    // The manager sends its leaf alone.
    assert_eq!(found.chain.len(), 1, "{:#?}", found.chain);
    let leaf = &found.chain[0];
    assert!(
        leaf.subject_alt_names
            .iter()
            .any(|s| s == "DNS:swarm-manager"),
        "{leaf:?}"
    );
    assert!(leaf.subject.contains("OU=swarm-manager"), "{leaf:?}");
    assert_eq!(leaf.issuer, "CN=swarm-ca");
    assert_eq!(leaf.key_algorithm, "ECDSA P-256");
    assert_eq!(leaf.signature_algorithm, "ecdsa-with-SHA256");
    assert!(!leaf.is_ca);
    assert!(
        !found.notes.iter().any(|n| n.contains("could not complete")),
        "{:#?}",
        found.notes
    );
    assert_all_tested(&found);
}
