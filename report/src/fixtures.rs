//! Sample inventories for tests (this crate's, and a renderer's with the
//! `fixtures` feature): [`healthy`] has nothing wrong at [`NOW`] under the
//! default policy, [`troubled`] something wrong in every section,
//! [`malformed`] values no manager should send.

use moat_api::{
    AuditSummary, CryptoInventory, DataKeyInfo, KeyAge, NodeCrypto, ProbeGroup, ProbeSuite, Role,
    RootCaInfo, SwarmAutolock, SwarmCert, SwarmFile, SwarmInventory, SwarmJoinToken,
    SwarmKeyProtection, SwarmNode, SwarmRaft, TlsInfo, TlsProbe, TokenCrypto,
};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

/// The time the samples are checked at.
pub const NOW: OffsetDateTime = datetime!(2026-11-27 18:00:00 UTC);

/// The samples' root CA fingerprint.
pub const ROOT_FP: &str = "sha256:5f1c0e8a3d2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f506";

/// [`NOW`] moved by `d`, as the inventory writes times (RFC 3339).
pub fn at(d: Duration) -> String {
    (NOW + d)
        .format(&Rfc3339)
        .unwrap_or_else(|e| panic!("a sample time does not format: {e}"))
}

/// A ready node on a 24 h certificate from the samples' root, at half its
/// life.
pub fn node(id: &str, hostname: &str, role: Role) -> NodeCrypto {
    NodeCrypto {
        id: id.into(),
        hostname: hostname.into(),
        role,
        ready: true,
        algorithm: "ECDSA P-256".into(),
        serial: "4f2a9c01d3".into(),
        issuer_fingerprint: ROOT_FP.into(),
        not_before: Some(at(Duration::hours(-12))),
        not_after: at(Duration::hours(12)),
    }
}

/// A cluster the default policy has nothing to say about at [`NOW`]: a
/// manager and a worker, a standing and a scoped token, autolock on.
pub fn healthy() -> CryptoInventory {
    CryptoInventory {
        generated_at: at(Duration::seconds(-2)),
        cluster_id: "9f1c3b7d2e4a6c8b0d1f3e5a7c9b1d3f".into(),
        answered_by: "k3q0h7m2p9r4t6v8".into(),
        cert_expiry_seconds: 86_400,
        root_ca: RootCaInfo {
            subject: "CN=moat root CA,O=9f1c3b7d2e4a6c8b0d1f3e5a7c9b1d3f".into(),
            algorithm: "ECDSA P-256".into(),
            signature_algorithm: "ecdsa-with-SHA256".into(),
            fingerprint: ROOT_FP.into(),
            serial: "01".into(),
            not_before: at(Duration::days(-365)),
            not_after: at(Duration::days(365 * 9)),
        },
        nodes: vec![
            node("k3q0h7m2p9r4t6v8", "manager-1", Role::Manager),
            node("a8c2e4g6j8l0n2q4", "web-1", Role::Worker),
        ],
        tls: TlsInfo {
            versions: vec!["TLSv1.3".into()],
            cipher_suites: vec![
                "TLS13_AES_256_GCM_SHA384".into(),
                "TLS13_CHACHA20_POLY1305_SHA256".into(),
            ],
            key_exchange_groups: vec!["X25519MLKEM768".into(), "X25519".into()],
            mutual: true,
        },
        join_tokens: vec![
            TokenCrypto {
                id: "3f9k2d0a7u1c5e9b".into(),
                kind: "standing".into(),
                role: Role::Worker,
                created_at: Some(at(Duration::days(-1))),
                expires_at: None,
                uses_left: None,
            },
            TokenCrypto {
                id: "7u1c5e9b3f9k2d0a".into(),
                kind: "scoped".into(),
                role: Role::Manager,
                created_at: Some(at(Duration::days(-1))),
                expires_at: Some(at(Duration::hours(1))),
                uses_left: Some(1),
            },
        ],
        token_ttl_seconds: Some(7 * 86_400),
        autolock: true,
        unlock_key: Some(KeyAge {
            version: 2,
            set_at: Some(at(Duration::days(-10))),
        }),
        data_key: DataKeyInfo {
            algorithm: "AES-256-GCM".into(),
            version: 3,
            created_at: Some(at(Duration::days(-10))),
            rotating_to: None,
            wrapped_by: "unlock key".into(),
        },
        audit: AuditSummary {
            records: 120,
            heads: 12,
            last_head_size: Some(120),
            last_head_at: Some(at(Duration::minutes(-5))),
            snapshot_bytes: Some(2 << 20),
            snapshot_limit_bytes: Some(256 << 20),
        },
        services: vec![moat_api::ServicePlacement {
            id: "q2e8tkb4n0s1l7p3r9v5x1z3ab".into(),
            name: "web".into(),
            mode: "replicated".into(),
            runtime: "process".into(),
            image: "/usr/bin/web-server".into(),
            desired: 3,
            running: 3,
            nodes: [("worker-1".to_string(), 2), ("worker-2".to_string(), 1)]
                .into_iter()
                .collect(),
            identity_ttl_secs: Some(3600),
        }],
        secrets: vec![moat_api::SecretSummary {
            kind: "secret".into(),
            name: "db_password".into(),
            version: 2,
            versions_kept: 1,
            size: 24,
            created_at: at(Duration::days(-40)),
            updated_at: at(Duration::days(-10)),
            used_by: vec!["web".into()],
        }],
        workload_certs: vec![moat_api::WorkloadCert {
            service: "web".into(),
            task: "t3h5j7l9n1p3r5t7v9x1z3b5d7".into(),
            node: "worker-1".into(),
            spiffe_id: "spiffe://c9t3xq2v7m4k8p1w6z0r5n2b8d/service/web".into(),
            serial: "5f1e0c2a9b7d4e8f".into(),
            not_after: at(Duration::minutes(40)),
            issuer_fingerprint: ROOT_FP.into(),
        }],
    }
}

/// [`healthy`] with something wrong in every section (an expired node,
/// a down one, one from another root with no recorded algorithm, a root
/// CA expiring in 200 days, an old token and data key, unsigned audit
/// records), and a host name that tries to run a script.
pub fn troubled() -> CryptoInventory {
    let mut inv = healthy();
    inv.nodes[1].hostname = "<script>alert(1)</script>".into();
    inv.nodes[1].not_after = at(Duration::hours(-3));
    inv.nodes.push(NodeCrypto {
        ready: false,
        not_before: Some(at(Duration::hours(-21))),
        not_after: at(Duration::hours(3)),
        ..node("m5p7r9t1v3x5z7b9", "db-2", Role::Worker)
    });
    inv.nodes.push(NodeCrypto {
        algorithm: String::new(),
        issuer_fingerprint: "sha256:1d0e99c2a4b6".into(),
        ..node("q2s4u6w8y0a2c4e6", "legacy-7", Role::Worker)
    });
    inv.root_ca.not_after = at(Duration::days(200));
    inv.join_tokens[0].created_at = Some(at(Duration::days(-45)));
    inv.data_key.created_at = Some(at(Duration::days(-120)));
    inv.audit.records = 131;
    inv.secrets[0].updated_at = at(Duration::days(-200));
    inv.services[0].identity_ttl_secs = None;
    inv.workload_certs[0].not_after = at(Duration::minutes(-5));
    inv
}

/// [`troubled`] as a large cluster shows it, for checks of the report's
/// layout (`scripts/check-report-layout`): fifteen more nodes, listed out
/// of host-name order, with long host names, and ids, serials and issuer
/// fingerprints as long as real ones (26-character ids, 128-bit serials,
/// SHA-256 fingerprints); a second service with a long image path and
/// placement; workload certificates, one from a root that is not the
/// cluster's.
pub fn wide() -> CryptoInventory {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    // Deterministic, evenly spread characters: `len` of them from `seed`
    // (seeds that differ modulo the alphabet's length never give the same
    // text).
    let chars = |seed: usize, len: usize, alphabet: &[u8]| -> String {
        (0..len)
            .map(|i| char::from(alphabet[(seed * 7 + i * 13 + i * i) % alphabet.len()]))
            .collect()
    };
    let mut inv = troubled();
    for i in (1..=15).rev() {
        let (hostname, role) = match i {
            1..=2 => (
                format!("manager-{i}.control-plane.eu-west-1.prod.example.internal"),
                Role::Manager,
            ),
            _ => (
                format!("worker-{i}.batch-processing.eu-west-1b.prod.example.internal"),
                Role::Worker,
            ),
        };
        inv.nodes.push(NodeCrypto {
            serial: chars(i, 32, &ALPHABET[..16]),
            issuer_fingerprint: ROOT_FP.into(),
            ..node(&chars(i, 26, ALPHABET), &hostname, role)
        });
    }
    inv.nodes[2].id = chars(20, 26, ALPHABET);
    inv.nodes[2].serial = chars(16, 32, &ALPHABET[..16]);
    let mut batch = inv.services[0].clone();
    batch.id = chars(22, 26, ALPHABET);
    batch.name = "nightly-ledger-reconciliation".into();
    batch.image =
        "/opt/example/ledger/bin/reconcile-ledger-entries-against-payment-provider".into();
    batch.desired = 12;
    batch.running = 11;
    batch.nodes = (3..=15)
        .map(|i| {
            (
                format!("worker-{i}.batch-processing.eu-west-1b.prod.example.internal"),
                1,
            )
        })
        .collect();
    inv.services.push(batch);
    let mut other = inv.workload_certs[0].clone();
    other.task = chars(23, 26, ALPHABET);
    other.node = "worker-3.batch-processing.eu-west-1b.prod.example.internal".into();
    other.serial = chars(24, 32, &ALPHABET[..16]).chars().rev().collect();
    other.issuer_fingerprint = format!("sha256:{}", chars(25, 64, &ALPHABET[..16]));
    inv.workload_certs.push(other);
    inv
}

/// [`healthy`] with times that do not parse (one with an escape
/// sequence), a multi-byte id and the largest numbers: a check or a
/// renderer must not panic on it.
pub fn malformed() -> CryptoInventory {
    let mut inv = healthy();
    inv.root_ca.not_after = "next tuesday".into();
    inv.nodes[0].not_after = String::new();
    inv.nodes[1].not_before = Some("\u{1b}[31m".into());
    inv.nodes[1].id = "é".repeat(40);
    inv.join_tokens[0].created_at = Some("9999-99-99".into());
    inv.unlock_key = Some(KeyAge {
        version: u32::MAX,
        set_at: Some("-".into()),
    });
    inv.data_key.created_at = Some("+999999-01-01T00:00:00Z".into());
    inv.cert_expiry_seconds = u64::MAX;
    inv.audit.last_head_size = Some(u64::MAX);
    inv.audit.last_head_at = Some("yesterday".into());
    inv
}

/// A Docker Swarm manager as `docker swarm init` leaves it, read with no
/// unlock key needed (autolock off): 90-day certificates, the data key in
/// clear, a probe that found TLS 1.2 with CBC suites and no post-quantum
/// group. [`swarm_locked`] is the same manager with autolock on, read
/// without its key.
pub fn swarm_default() -> SwarmInventory {
    let cert = |subject: &str, not_before: Duration, life_days: i64| SwarmCert {
        subject: subject.into(),
        issuer: "CN=swarm-ca".into(),
        algorithm: "ECDSA P-256".into(),
        signature_algorithm: "ecdsa-with-SHA256".into(),
        sans: vec![
            "swarm-manager".into(),
            "tuowb0mdxb4gkstj0rxyd34wv".into(),
            "swarm-ca".into(),
        ],
        serial: "3b1f00aa".into(),
        fingerprint: "sha256:aa11".into(),
        issued_by_root: true,
        // Swarm backdates a certificate's start by an hour.
        not_before: at(not_before - Duration::hours(1)),
        not_after: at(not_before + Duration::days(life_days)),
        lifetime_seconds: u64::try_from(life_days * 86_400 + 3600).unwrap_or(0),
    };
    SwarmInventory {
        generated_at: at(Duration::ZERO),
        state_dir: "/srv/copy/swarm".into(),
        cluster_id: "7k3xq0m9r2l8w5v1c4n6b0z2t".into(),
        node_id: "tuowb0mdxb4gkstj0rxyd34wv".into(),
        node_role: "manager".into(),
        unlock_key_given: false,
        store_read: true,
        not_checked: vec![],
        root_ca: RootCaInfo {
            subject: "CN=swarm-ca".into(),
            algorithm: "ECDSA P-256".into(),
            signature_algorithm: "ecdsa-with-SHA256".into(),
            fingerprint: ROOT_FP.into(),
            serial: "5e2d".into(),
            not_before: at(Duration::days(-10)),
            not_after: at(Duration::days(20 * 365 - 10)),
        },
        root_ca_matches_store: Some(true),
        root_rotation: None,
        root_ca_key_in_store: Some(true),
        root_ca_key_format: Some("EC PRIVATE KEY".into()),
        node_cert: cert(
            "CN=tuowb0mdxb4gkstj0rxyd34wv, OU=swarm-manager",
            Duration::days(-10),
            90,
        ),
        nodes: vec![SwarmNode {
            id: "tuowb0mdxb4gkstj0rxyd34wv".into(),
            hostname: "vm".into(),
            role: "manager".into(),
            availability: "active".into(),
            status: "ready".into(),
            manager_status: "leader".into(),
            cert: Some(cert(
                "CN=tuowb0mdxb4gkstj0rxyd34wv, OU=swarm-manager",
                Duration::days(-10),
                90,
            )),
            cert_source: "file".into(),
            fips: false,
        }],
        cert_expiry_seconds: Some(90 * 86_400),
        external_cas: vec![],
        signing_ca_supplied: Some(false),
        force_rotate: Some(0),
        join_tokens: vec![SwarmJoinToken {
            role: "worker".into(),
            format: "SWMTKN-1".into(),
            fingerprint: "sha256:0c1d2e3f4a5b6c7d".into(),
            ca_digest_matches: true,
            changed_at: None,
            made_at_or_after: Some(at(Duration::days(-10))),
        }],
        autolock: SwarmAutolock {
            key_file_encrypted: false,
            data_key_wrapped: false,
            cluster_setting: Some(false),
            unlock_key_in_store: Some(false),
            given_key_is_current: None,
            kek_version: Some(0),
            data_key_readable_without_key: true,
            pending_data_key: false,
            needs_rotation: false,
            consistent: true,
            on: false,
        },
        key_protection: SwarmKeyProtection {
            pem_type: "PRIVATE KEY".into(),
            scheme: "none".into(),
            weak: false,
            matches_cert: Some(true),
        },
        raft: SwarmRaft {
            algorithms: vec!["secretbox (XSalsa20-Poly1305)".into()],
            wal_segments: 1,
            entries: 14,
            last_index: 14,
            commit_index: 14,
            uncommitted: 0,
            snapshot_index: None,
            snapshot_bytes: None,
            snapshot_interval: Some(10_000),
            keep_old_snapshots: Some(0),
            members: vec!["127.0.0.1:2377".into()],
        },
        fips: Some(false),
        secrets: vec![],
        services: vec![],
        files: vec![SwarmFile {
            path: "certificates/swarm-node.key".into(),
            mode: "0600".into(),
            size: 300,
            expected: "0600".into(),
            too_open: false,
        }],
        probe: Some(TlsProbe {
            address: "127.0.0.1:2377".into(),
            peer: "127.0.0.1:2377".into(),
            probed_at: at(Duration::ZERO),
            versions: vec!["TLSv1.2".into(), "TLSv1.3".into()],
            cipher_suites: vec![ProbeSuite {
                name: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA".into(),
                version: "TLSv1.2".into(),
                weak: true,
                weaknesses: vec!["CBC mode".into(), "SHA-1 MAC".into()],
            }],
            key_exchange_groups: vec![ProbeGroup {
                name: "X25519".into(),
                versions: vec!["TLSv1.2".into(), "TLSv1.3".into()],
                post_quantum: false,
            }],
            post_quantum: false,
            client_cert_requested: true,
            chain: vec![],
            negotiated: None,
            notes: vec![],
        }),
        probe_chain_from_root: Some(true),
        notices: vec![],
    }
}

/// [`swarm_default`] with autolock on, read without the unlock key: the
/// store could not be read.
pub fn swarm_locked() -> SwarmInventory {
    let mut inv = swarm_default();
    inv.store_read = false;
    inv.not_checked = vec!["the raft store (nodes, join tokens, the CA key, secrets)".into()];
    inv.root_ca_matches_store = None;
    inv.root_ca_key_in_store = None;
    inv.root_ca_key_format = None;
    inv.nodes.clear();
    inv.cert_expiry_seconds = None;
    inv.signing_ca_supplied = None;
    inv.force_rotate = None;
    inv.join_tokens.clear();
    inv.fips = None;
    inv.probe = None;
    inv.probe_chain_from_root = None;
    inv.autolock = SwarmAutolock {
        key_file_encrypted: true,
        data_key_wrapped: true,
        cluster_setting: None,
        unlock_key_in_store: None,
        given_key_is_current: None,
        kek_version: Some(15),
        data_key_readable_without_key: false,
        pending_data_key: false,
        needs_rotation: false,
        consistent: true,
        on: true,
    };
    inv.key_protection = SwarmKeyProtection {
        pem_type: "ENCRYPTED PRIVATE KEY".into(),
        scheme: "PKCS#8 PBES2: PBKDF2-HMAC-SHA1, 2048 iterations, AES-256-CBC".into(),
        weak: false,
        matches_cert: None,
    };
    inv
}
