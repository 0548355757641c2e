//! Integration tests of moat-pki through its public API: CA, issuance,
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
//! verification, cross-signing, inspection and real TLS handshakes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use moat_pki::*;
use proptest::prelude::*;
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn root() -> RootCa {
    RootCa::generate(ClusterId::generate(), &RootOptions::default(), now()).unwrap()
}

fn roots_of(ca: &RootCa) -> TrustRoots {
    TrustRoots::new(vec![ca.certificate().clone()]).unwrap()
}

/// A fresh node key and a certificate for it from `ca`.
fn node(ca: &RootCa, role: Role, at: OffsetDateTime) -> (NodeId, Credentials, IssuedCert) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let id = NodeId::generate();
    let issued = ca
        .sign_csr(
            key.csr().unwrap().as_ref(),
            id,
            role,
            CertExpiry::DEFAULT,
            at,
        )
        .unwrap();
    let creds = Credentials {
        chain: vec![issued.der.clone()],
        key,
    };
    (id, creds, issued)
}

fn report(der: &[u8]) -> CertReport {
    inspect(der).unwrap().remove(0)
}

#[test]
fn root_ca_defaults_to_p256_ten_years() {
    let cluster = ClusterId::generate();
    let t = now();
    let ca = RootCa::generate(cluster, &RootOptions::default(), t).unwrap();
    let r = report(ca.certificate());
    assert!(r.is_ca);
    assert_eq!(r.key_algorithm, "ECDSA");
    assert_eq!(r.key_size, "P-256");
    assert_eq!(r.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(r.subject, format!("CN=moat root CA 1, O={cluster}"));
    assert_eq!(r.subject, r.issuer, "self-signed");
    let not_after =
        OffsetDateTime::parse(&r.not_after, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let years = (not_after - t).whole_days() as f64 / 365.0;
    assert!((9.99..10.01).contains(&years), "{years}");
    assert_eq!(ca.cluster_id(), cluster);
    assert_eq!(ca.key().algorithm(), KeyAlgorithm::EcdsaP256);
}

#[test]
fn ed25519_root_issues_verifiable_certs() {
    let opts = RootOptions {
        algorithm: KeyAlgorithm::Ed25519,
        ..RootOptions::default()
    };
    let ca = RootCa::generate(ClusterId::generate(), &opts, now()).unwrap();
    assert_eq!(report(ca.certificate()).key_algorithm, "Ed25519");
    let (id, creds, _) = node(&ca, Role::Worker, now());
    let ident = verify_chain(
        &creds.chain,
        &roots_of(&ca),
        &ca.cluster_id(),
        Usage::Client,
        now(),
    )
    .unwrap();
    assert_eq!(ident.node_id, id);
}

#[test]
fn root_reloads_from_parts_and_rejects_wrong_key() {
    let ca = root();
    let key = PrivateKey::from_pkcs8_der(&ca.key().to_pkcs8_der()).unwrap();
    let again = RootCa::from_parts(ca.certificate().clone(), key).unwrap();
    assert_eq!(again.cluster_id(), ca.cluster_id());
    // The reloaded CA issues certificates that the original root verifies.
    let (_, creds, _) = node(&again, Role::Manager, now());
    verify_chain(
        &creds.chain,
        &roots_of(&ca),
        &ca.cluster_id(),
        Usage::Server,
        now(),
    )
    .unwrap();

    let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    assert!(matches!(
        RootCa::from_parts(ca.certificate().clone(), other),
        Err(CertError::KeyMismatch)
    ));
    let (_, leaf, _) = node(&ca, Role::Worker, now());
    assert!(matches!(
        RootCa::from_parts(leaf.chain[0].clone(), leaf.key),
        Err(CertError::NotACa { .. })
    ));
}

#[test]
fn private_keys_round_trip_and_unsupported_algorithms_are_named() {
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let key = PrivateKey::generate(alg).unwrap();
        let again = PrivateKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(again.algorithm(), alg);
        assert_eq!(again.public_key_der(), key.public_key_der());
    }
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(matches!(
        PrivateKey::from_pkcs8_der(&p384.serialize_der()),
        Err(CertError::UnsupportedKeyAlgorithm { .. })
    ));
    assert!(matches!(
        PrivateKey::from_pkcs8_der(b"junk"),
        Err(CertError::Malformed { .. })
    ));
    assert_eq!(
        "ed25519".parse::<KeyAlgorithm>().unwrap(),
        KeyAlgorithm::Ed25519
    );
    assert!("rsa".parse::<KeyAlgorithm>().is_err());
}

#[test]
fn issued_certificate_follows_ca_policy_not_csr() {
    let ca = root();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    // A CSR that asks for a CA-chosen name, another cluster, a SAN and CA rights.
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "other-cluster");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "moat-manager");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
    let kp = rcgen::KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap();
    let csr = params.serialize_request(&kp).unwrap();

    let id = NodeId::generate();
    let t = now().replace_nanosecond(0).unwrap();
    let issued = ca
        .sign_csr(csr.der(), id, Role::Worker, CertExpiry::DEFAULT, t)
        .unwrap();
    let r = report(&issued.der);
    assert_eq!(
        r.subject,
        format!("CN={id}, OU=moat-worker, O={}", ca.cluster_id())
    );
    assert_eq!(
        r.subject_alt_names,
        vec![
            format!("DNS:{id}.{}.moat.internal", ca.cluster_id()),
            "DNS:worker.moat.internal".to_string()
        ]
    );
    assert!(!r.is_ca);
    assert_eq!(r.serial.len(), 32, "128-bit serial");
    assert_eq!(issued.not_after, t + Duration::hours(24));
    assert_eq!(issued.not_before, t - Duration::minutes(5));
    // The key in the certificate is the CSR's key.
    let ident = verify_chain(
        std::slice::from_ref(&issued.der),
        &roots_of(&ca),
        &ca.cluster_id(),
        Usage::Client,
        t,
    )
    .unwrap();
    assert_eq!(ident.role, Role::Worker);
    assert_eq!(ident.serial, issued.serial);
    let tls = TlsContext::new(ca.cluster_id(), roots_of(&ca));
    tls.set_credentials(
        Credentials {
            chain: vec![issued.der],
            key,
        },
        t,
    )
    .unwrap();
}

#[test]
fn manager_certificates_carry_manager_name_and_both_usages() {
    let ca = root();
    let (id, creds, _) = node(&ca, Role::Manager, now());
    let r = report(&creds.chain[0]);
    assert_eq!(
        r.subject_alt_names,
        vec![
            format!("DNS:{id}.{}.moat.internal", ca.cluster_id()),
            format!("DNS:{MANAGER_SERVER_NAME}"),
        ]
    );
    assert_eq!(MANAGER_SERVER_NAME, "manager.moat.internal");
    for usage in [Usage::Client, Usage::Server] {
        let ident =
            verify_chain(&creds.chain, &roots_of(&ca), &ca.cluster_id(), usage, now()).unwrap();
        assert_eq!(ident.role, Role::Manager);
        assert_eq!(ident.node_id, id);
    }
}

#[test]
fn csr_errors_are_typed() {
    let ca = root();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = key.csr().unwrap().as_ref().to_vec();
    let id = NodeId::generate();
    let issue = |der: &[u8]| ca.sign_csr(der, id, Role::Worker, CertExpiry::DEFAULT, now());

    // A changed byte inside the signed part: the self-signature no longer verifies.
    let mut tampered = csr.clone();
    let pos = find(&tampered, b"moat node").unwrap();
    tampered[pos] ^= 0x20;
    assert!(matches!(
        issue(&tampered),
        Err(CertError::BadSignature { .. })
    ));

    // The last byte is inside the signature value.
    let mut bad_sig = csr.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    assert!(matches!(
        issue(&bad_sig),
        Err(CertError::BadSignature { .. })
    ));

    // prime256v1 (1.2.840.10045.3.1.7) turned into an unknown curve.
    let mut curve = csr.clone();
    let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let pos = find(&curve, &oid).unwrap() + 7;
    curve[pos] = 0x09;
    assert!(matches!(
        issue(&curve),
        Err(CertError::UnsupportedKeyAlgorithm { .. })
    ));

    assert!(matches!(
        issue(b"not der"),
        Err(CertError::Malformed { .. })
    ));
    let mut trailing = csr.clone();
    trailing.push(0);
    assert!(matches!(issue(&trailing), Err(CertError::Malformed { .. })));
    assert!(matches!(
        issue(&vec![0x30; MAX_CSR_BYTES + 1]),
        Err(CertError::Malformed { .. })
    ));
    assert!(matches!(
        VerifiedCsr::from_pem(
            b"-----BEGIN CERTIFICATE REQUEST-----\n!!\n-----END CERTIFICATE REQUEST-----\n"
        ),
        Err(CertError::Malformed { .. })
    ));
}

/// The limits in messages and help are written from the constants, in a
/// form that parses back to them.
#[test]
fn compact_duration_reads_back() {
    for (d, text) in [
        (CertExpiry::MIN, "1m"),
        (CertExpiry::MAX, "365d"),
        (WorkloadTtl::MIN, "5m"),
        (WorkloadTtl::MAX, "24h"),
        (std::time::Duration::from_secs(90), "90s"),
        (std::time::Duration::from_secs(48 * 3600), "2d"),
    ] {
        assert_eq!(moat_pki::compact_duration(d), text);
        assert_eq!(humantime::parse_duration(text).unwrap(), d);
    }
}

#[test]
fn cert_expiry_bounds() {
    assert_eq!("24h".parse::<CertExpiry>().unwrap(), CertExpiry::DEFAULT);
    assert_eq!("1m".parse::<CertExpiry>().unwrap().duration().as_secs(), 60);
    assert_eq!(
        "365d".parse::<CertExpiry>().unwrap().duration().as_secs(),
        365 * 86400
    );
    for bad in ["59s", "366d", "0s", "soon", ""] {
        let err = bad.parse::<CertExpiry>().unwrap_err();
        assert!(matches!(err, CertError::ValidityOutOfRange { .. }), "{bad}");
        assert!(err.to_string().contains("between 1m and 365d"), "{err}");
    }
    assert_eq!(CertExpiry::DEFAULT.backdate().as_secs(), 300);
    assert_eq!("1m".parse::<CertExpiry>().unwrap().backdate().as_secs(), 6);
}

#[test]
fn verification_checks_time_cluster_and_issuer() {
    let ca = root();
    let t = now().replace_nanosecond(0).unwrap();
    let (_, creds, issued) = node(&ca, Role::Worker, t);
    let roots = roots_of(&ca);
    let check = |at: OffsetDateTime| {
        verify_chain(&creds.chain, &roots, &ca.cluster_id(), Usage::Client, at)
    };
    assert!(check(t + Duration::hours(23)).is_ok());
    assert!(
        check(t - Duration::minutes(4)).is_ok(),
        "back-dated for clock skew"
    );
    match check(t + Duration::hours(25)) {
        Err(CertError::Expired { not_after, .. }) => assert_eq!(not_after, issued.not_after),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        check(t - Duration::hours(1)),
        Err(CertError::NotYetValid { .. })
    ));

    let other = root();
    assert!(matches!(
        verify_chain(
            &creds.chain,
            &roots_of(&other),
            &other.cluster_id(),
            Usage::Client,
            t
        ),
        Err(CertError::UnknownIssuer)
    ));
    assert!(matches!(
        verify_chain(&creds.chain, &roots, &other.cluster_id(), Usage::Client, t),
        Err(CertError::WrongCluster { .. })
    ));
    assert!(matches!(
        verify_chain(&[], &roots, &ca.cluster_id(), Usage::Client, t),
        Err(CertError::Rejected { .. })
    ));
}

/// `verify_peer` remembers what verified, but only for the roots it
/// verified against and only within the certificate's validity: the
/// answers are the same as without the cache.
#[test]
fn peer_verification_answers_the_same_when_remembered() {
    let ca = root();
    let t = now().replace_nanosecond(0).unwrap();
    let (id, creds, issued) = node(&ca, Role::Worker, t);
    let ctx = TlsContext::new(ca.cluster_id(), roots_of(&ca));
    let first = ctx
        .verify_peer(&creds.chain, t + Duration::hours(1))
        .unwrap();
    assert_eq!(first.node_id, id);
    // Again, from the cache: the same identity.
    let again = ctx
        .verify_peer(&creds.chain, t + Duration::hours(2))
        .unwrap();
    assert_eq!(again.serial, first.serial);
    // Past its end, or before its start, it fails as it did uncached.
    match ctx.verify_peer(&creds.chain, t + Duration::hours(25)) {
        Err(CertError::Expired { not_after, .. }) => assert_eq!(not_after, issued.not_after),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        ctx.verify_peer(&creds.chain, t - Duration::hours(1)),
        Err(CertError::NotYetValid { .. })
    ));
    // New roots that do not hold its issuer: refused at once.
    ctx.set_roots(roots_of(&root()));
    assert!(matches!(
        ctx.verify_peer(&creds.chain, t + Duration::hours(1)),
        Err(CertError::UnknownIssuer)
    ));
    // A certificate from another root is never taken for a remembered one.
    let (_, stranger, _) = node(&root(), Role::Worker, t);
    assert!(
        ctx.verify_peer(&stranger.chain, t + Duration::hours(1))
            .is_err()
    );
}

#[test]
fn any_flipped_byte_of_a_certificate_is_detected() {
    let ca = root();
    let t = now();
    let (_, creds, _) = node(&ca, Role::Manager, t);
    let roots = roots_of(&ca);
    let der = creds.chain[0].as_ref();
    for i in 0..der.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = der.to_vec();
            bad[i] ^= mask;
            let res = verify_chain(&[bad.into()], &roots, &ca.cluster_id(), Usage::Server, t);
            assert!(
                res.is_err(),
                "flip {mask:#x} at byte {i} of {} accepted",
                der.len()
            );
        }
    }
}

#[test]
fn cross_signed_rotation_verifies_against_old_and_new_roots() {
    let old = root();
    let new = RootCa::generate(
        old.cluster_id(),
        &RootOptions {
            generation: 2,
            ..RootOptions::default()
        },
        now(),
    )
    .unwrap();
    let cross = old.cross_sign(&new, now()).unwrap();
    let cross_report = report(&cross);
    assert!(cross_report.is_ca);
    assert_eq!(cross_report.subject, report(new.certificate()).subject);
    assert_eq!(cross_report.issuer, report(old.certificate()).subject);

    let (_, creds, _) = node(&new, Role::Worker, now());
    let chain = vec![creds.chain[0].clone(), cross];
    let cluster = old.cluster_id();
    verify_chain(&chain, &roots_of(&old), &cluster, Usage::Client, now())
        .expect("via the old root");
    verify_chain(&chain, &roots_of(&new), &cluster, Usage::Client, now())
        .expect("via the new root");
    let both = TrustRoots::new(vec![old.certificate().clone(), new.certificate().clone()]).unwrap();
    verify_chain(&chain, &both, &cluster, Usage::Client, now()).expect("during the overlap");
    // Without the intermediate, the old root cannot vouch for the new leaf.
    assert!(matches!(
        verify_chain(&chain[..1], &roots_of(&old), &cluster, Usage::Client, now()),
        Err(CertError::UnknownIssuer)
    ));
    // A root of another cluster is not cross-signed.
    assert!(matches!(
        old.cross_sign(&root(), now()),
        Err(CertError::WrongCluster { .. })
    ));
    // Which root issued a leaf, by name and key identifier.
    let (_, old_creds, _) = node(&old, Role::Worker, now());
    assert!(moat_pki::issued_by(
        chain[0].as_ref(),
        new.certificate().as_ref()
    ));
    assert!(!moat_pki::issued_by(
        chain[0].as_ref(),
        old.certificate().as_ref()
    ));
    assert!(moat_pki::issued_by(
        old_creds.chain[0].as_ref(),
        old.certificate().as_ref()
    ));
    assert!(!moat_pki::issued_by(
        old_creds.chain[0].as_ref(),
        new.certificate().as_ref()
    ));
    assert!(!moat_pki::issued_by(b"junk", new.certificate().as_ref()));
}

#[test]
fn a_pkcs8_pem_key_reads_back() {
    let ca = root();
    let der = ca.key().to_pkcs8_der();
    let b64 = data_encoding::BASE64.encode(&der);
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let key = PrivateKey::from_pkcs8_pem(pem.as_bytes()).unwrap();
    assert_eq!(key.public_key_der(), ca.key().public_key_der());
    assert!(PrivateKey::from_pkcs8_pem(b"not a key").is_err());
}

#[test]
fn trust_roots_pem_round_trip() {
    let a = root();
    let b = root();
    let roots = TrustRoots::new(vec![a.certificate().clone(), b.certificate().clone()]).unwrap();
    let pem = roots.to_pem();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    let again = TrustRoots::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(again.certs(), roots.certs());
    assert!(TrustRoots::from_pem(b"no pem here").is_err());
    let (_, leaf, _) = node(&a, Role::Worker, now());
    assert!(matches!(
        TrustRoots::new(leaf.chain),
        Err(CertError::NotACa { .. })
    ));
}

#[test]
fn inspect_reads_pem_bundles_and_der() {
    let ca = root();
    let (_, creds, issued) = node(&ca, Role::Manager, now());
    let bundle = format!("{}{}", ca.certificate_pem(), ca.certificate_pem());
    assert_eq!(inspect(bundle.as_bytes()).unwrap().len(), 2);
    let r = report(&creds.chain[0]);
    assert_eq!(r.serial, issued.serial);
    assert_eq!(r.sha256_fingerprint.len(), 32 * 3 - 1);
    assert!(!r.is_ca);
    let node = r.moat_node.expect("a node certificate names a node");
    assert_eq!(
        (node.role, node.cluster_id),
        (Role::Manager, ca.cluster_id())
    );
    assert!(report(ca.certificate()).moat_node.is_none());
    assert!(inspect(b"garbage").is_err());
    assert!(inspect(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").is_err());
}

// ---- TLS over real TCP sockets on loopback --------------------------------

struct ServerSide {
    peer: Option<Identity>,
    kx: String,
}

/// Runs one TLS connection between `server` and `client` over loopback TCP,
/// exchanges a byte each way, and returns each side's outcome.
fn handshake(
    server: &Arc<TlsContext>,
    client: &Arc<TlsContext>,
) -> (Result<ServerSide, String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_config = Arc::new(server.server_config().unwrap());
    let server_ctx = server.clone();
    let srv = thread::spawn(move || -> Result<ServerSide, String> {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let conn = rustls::ServerConnection::new(server_config).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).map_err(|e| e.to_string())?;
        tls.write_all(&byte).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let peer = match tls.conn.peer_certificates() {
            Some(chain) => Some(
                server_ctx
                    .verify_peer(chain, now())
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let kx = format!(
            "{:?}",
            tls.conn.negotiated_key_exchange_group().map(|g| g.name())
        );
        Ok(ServerSide { peer, kx })
    });
    let cli = (|| -> Result<(), String> {
        let conn = rustls::ClientConnection::new(
            Arc::new(client.client_config().unwrap()),
            manager_server_name(),
        )
        .map_err(|e| e.to_string())?;
        let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"x").map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).map_err(|e| e.to_string())?;
        assert_eq!(
            tls.conn.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        Ok(())
    })();
    (srv.join().unwrap(), cli)
}

fn context(ca: &RootCa, role: Role, at: OffsetDateTime) -> (Arc<TlsContext>, NodeId) {
    let ctx = TlsContext::new(ca.cluster_id(), roots_of(ca));
    let (id, creds, _) = node(ca, role, at);
    ctx.set_credentials(creds, at).unwrap();
    (ctx, id)
}

#[test]
fn tls_mutual_auth_both_directions_with_post_quantum_kx() {
    let ca = root();
    let (m1, id1) = context(&ca, Role::Manager, now());
    let (m2, id2) = context(&ca, Role::Manager, now());
    let (w, wid) = context(&ca, Role::Worker, now());

    let (s, c) = handshake(&m1, &w);
    c.unwrap();
    let s = s.unwrap();
    assert_eq!(s.peer.unwrap().node_id, wid);
    assert_eq!(s.kx, "Some(X25519MLKEM768)");

    let (s, c) = handshake(&m1, &m2);
    c.unwrap();
    assert_eq!(s.unwrap().peer.unwrap().node_id, id2);
    let (s, c) = handshake(&m2, &m1);
    c.unwrap();
    let peer = s.unwrap().peer.unwrap();
    assert_eq!((peer.node_id, peer.role), (id1, Role::Manager));
}

#[test]
fn tls_client_without_certificate_is_allowed_but_anonymous() {
    let ca = root();
    let (m, _) = context(&ca, Role::Manager, now());
    let joiner = TlsContext::new(ca.cluster_id(), roots_of(&ca));
    let (s, c) = handshake(&m, &joiner);
    c.unwrap();
    assert!(s.unwrap().peer.is_none());
}

#[test]
fn tls_rejects_client_from_another_cluster() {
    let ca = root();
    let (m, _) = context(&ca, Role::Manager, now());
    // A node of another cluster cannot even install its certificate in a
    // context for ours.
    let other = root();
    let mixed = TlsContext::new(
        ca.cluster_id(),
        TrustRoots::new(vec![ca.certificate().clone(), other.certificate().clone()]).unwrap(),
    );
    let (_, creds, _) = node(&other, Role::Manager, now());
    assert!(matches!(
        mixed.set_credentials(creds, now()),
        Err(Error::Cert(CertError::WrongCluster { .. }))
    ));

    // The attacker's CA copies our (public) cluster id; the attacker trusts
    // our root so it accepts our server, and presents its own certificate.
    let forged = RootCa::generate(ca.cluster_id(), &RootOptions::default(), now()).unwrap();
    let stranger = TlsContext::new(
        ca.cluster_id(),
        TrustRoots::new(vec![ca.certificate().clone(), forged.certificate().clone()]).unwrap(),
    );
    let (_, creds, _) = node(&forged, Role::Manager, now());
    stranger.set_credentials(creds, now()).unwrap();
    let (s, _c) = handshake(&m, &stranger);
    let err = s.err().expect("server must refuse the foreign client");
    // Same subject name as our root, so path building finds our root and
    // the signature check fails.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn tls_rejects_expired_client_certificate() {
    let ca = root();
    let (m, _) = context(&ca, Role::Manager, now());
    let then = now() - Duration::days(3);
    let (old, _) = context(&ca, Role::Worker, then);
    let (s, _c) = handshake(&m, &old);
    let err = s
        .err()
        .expect("server must refuse an expired client certificate");
    assert!(err.contains("Expired"), "{err}");
}

#[test]
fn tls_rejects_worker_posing_as_manager() {
    let ca = root();
    let (w_server, _) = context(&ca, Role::Worker, now());
    let (m_client, _) = context(&ca, Role::Manager, now());
    let (_s, c) = handshake(&w_server, &m_client);
    let err = c.expect_err("client must refuse a worker acting as server");
    assert!(
        err.contains("WrongRole { expected: Manager, found: Worker }"),
        "{err}"
    );
}

#[test]
fn tls_certificate_and_roots_swap_without_rebuilding_configs() {
    let ca = root();
    let (server, sid) = context(&ca, Role::Manager, now());
    let (client, _) = context(&ca, Role::Worker, now());

    // One long-lived connection across the swap.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_config = Arc::new(server.server_config().unwrap());
    let srv = thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..2 {
            let (sock, _) = listener.accept().unwrap();
            let cfg = server_config.clone();
            handles.push(thread::spawn(move || {
                let mut tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), sock);
                let mut buf = [0u8; 1];
                while tls.read_exact(&mut buf).is_ok() {
                    tls.write_all(&buf).unwrap();
                    tls.flush().unwrap();
                }
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    let client_config = Arc::new(client.client_config().unwrap());
    let connect = || {
        let conn =
            rustls::ClientConnection::new(client_config.clone(), manager_server_name()).unwrap();
        rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap())
    };
    let ping = |tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        tls.write_all(b"p").unwrap();
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).unwrap();
    };
    let serial_of = |tls: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        report(&tls.conn.peer_certificates().unwrap()[0]).serial
    };
    let mut first = connect();
    ping(&mut first);
    let first_serial = serial_of(&first);

    // Renewal: same node, new key and certificate.
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let renewed = ca
        .sign_csr(
            key.csr().unwrap().as_ref(),
            sid,
            Role::Manager,
            CertExpiry::DEFAULT,
            now(),
        )
        .unwrap();
    server
        .set_credentials(
            Credentials {
                chain: vec![renewed.der],
                key,
            },
            now(),
        )
        .unwrap();

    ping(&mut first); // the established connection is untouched
    let mut second = connect();
    ping(&mut second);
    assert_eq!(serial_of(&second), renewed.serial);
    assert_ne!(first_serial, renewed.serial);
    drop(first);
    drop(second);
    srv.join().unwrap();

    // A certificate for another node is refused and the current one stays.
    let (_, stranger, _) = node(&ca, Role::Manager, now());
    assert!(matches!(
        server.set_credentials(stranger, now()),
        Err(Error::Cert(CertError::WrongNode { .. }))
    ));
    assert_eq!(server.identity().unwrap().serial, renewed.serial);
}

#[test]
fn tls_roots_swap_takes_effect_on_next_handshake() {
    let old = root();
    let new = RootCa::generate(
        old.cluster_id(),
        &RootOptions {
            generation: 2,
            ..Default::default()
        },
        now(),
    )
    .unwrap();
    // Server already moved to the new root; client trusts only the old one.
    let server = TlsContext::new(old.cluster_id(), roots_of(&new));
    let (_, creds, _) = node(&new, Role::Manager, now());
    server.set_credentials(creds, now()).unwrap();
    let (client, _) = context(&old, Role::Worker, now());
    server.set_roots(
        TrustRoots::new(vec![old.certificate().clone(), new.certificate().clone()]).unwrap(),
    );
    let (_s, c) = handshake(&server, &client);
    assert!(c.is_err(), "client must not trust the new root yet");
    client.set_roots(
        TrustRoots::new(vec![old.certificate().clone(), new.certificate().clone()]).unwrap(),
    );
    let (s, c) = handshake(&server, &client);
    c.unwrap();
    s.unwrap();
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csr_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = VerifiedCsr::from_der(&bytes);
        let _ = VerifiedCsr::from_pem(&bytes);
    }

    #[test]
    fn key_and_expiry_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), text in "\\PC{0,24}") {
        let _ = PrivateKey::from_pkcs8_der(&bytes);
        let _ = text.parse::<CertExpiry>();
        let _ = text.parse::<KeyAlgorithm>();
        let _ = text.parse::<Role>();
    }

    #[test]
    fn inspect_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = inspect(&bytes);
        let _ = TrustRoots::from_pem(&bytes);
    }

    #[test]
    fn mutated_csr_never_panics_and_never_verifies_with_changed_key(pos in 0usize..400, val in any::<u8>()) {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let mut der = key.csr().unwrap().as_ref().to_vec();
        let pos = pos % der.len();
        prop_assume!(der[pos] != val);
        der[pos] = val;
        if let Ok(csr) = VerifiedCsr::from_der(&der) {
            // Only a change that keeps the request intact and signed may pass,
            // and then it must still be for the same key.
            let ca = root();
            let cert = ca.issue(&csr, NodeId::generate(), Role::Worker, CertExpiry::DEFAULT, now()).unwrap();
            let tls = TlsContext::new(ca.cluster_id(), roots_of(&ca));
            let creds = Credentials { chain: vec![cert.der], key };
            prop_assert!(tls.set_credentials(creds, now()).is_ok());
        }
    }
}

#[test]
fn possession_of_an_expired_certificate_key_is_proven_by_signature() {
    let ca = root();
    let roots = roots_of(&ca);
    let cluster = ca.cluster_id();
    // Issued long ago with a one-hour lifetime: expired now.
    let (id, creds, _) = node(&ca, Role::Worker, now() - Duration::days(3));
    let chain = creds.chain.clone();
    assert!(verify_chain(&chain, &roots, &cluster, Usage::Client, now()).is_err());

    let message = b"moat-rejoin-v1 new csr";
    let signature = creds.key.sign(message).unwrap();
    let identity = verify_possession(&chain, &roots, &cluster, message, &signature).unwrap();
    assert_eq!(identity.node_id, id);

    // Another message, another key, another cluster's roots: refused.
    assert!(verify_possession(&chain, &roots, &cluster, b"other", &signature).is_err());
    let other = PrivateKey::generate(KeyAlgorithm::default()).unwrap();
    let forged = other.sign(message).unwrap();
    assert!(verify_possession(&chain, &roots, &cluster, message, &forged).is_err());
    let foreign = root();
    assert!(
        verify_possession(
            &chain,
            &roots_of(&foreign),
            &foreign.cluster_id(),
            message,
            &signature
        )
        .is_err()
    );
}

/// A DNS name in the preferred name syntax of RFC 1034 §3.5 as RFC 5280
/// §4.2.1.6 asks, the way pkilint checks it: at least two labels of
/// letters, digits and inner hyphens, at most 63 characters each, and a
/// top-level label of letters only.
fn is_preferred_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_alphabetic())
}

fn parsed(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(der)
        .unwrap()
        .1
}

fn ski(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    parsed(der)
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn aki(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    parsed(der)
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// Regression (issue 16, finding 8: an RFC 5280 linter rejected the node
/// certificates): every name in every certificate moat makes — root,
/// manager, worker, the next root, the cross-signed root and a leaf of the
/// next root — is a valid DNS name; every certificate carries a subject key
/// identifier made by RFC 7093 method 1, and every certificate not
/// self-signed an authority key identifier equal to its issuer's.
#[test]
fn certificates_have_valid_dns_names_and_linked_key_identifiers() {
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
        let opts = |generation| RootOptions {
            algorithm,
            generation,
            ..RootOptions::default()
        };
        let old = RootCa::generate(ClusterId::generate(), &opts(1), now()).unwrap();
        let new = RootCa::generate(old.cluster_id(), &opts(2), now()).unwrap();
        let cross = old.cross_sign(&new, now()).unwrap();
        let (_, manager, _) = node(&old, Role::Manager, now());
        let (_, worker, _) = node(&old, Role::Worker, now());
        let (_, next, _) = node(&new, Role::Manager, now());
        // (certificate, its issuer's certificate)
        let certs = [
            (old.certificate().clone(), old.certificate().clone()),
            (new.certificate().clone(), new.certificate().clone()),
            (cross.clone(), old.certificate().clone()),
            (manager.chain[0].clone(), old.certificate().clone()),
            (worker.chain[0].clone(), old.certificate().clone()),
            (next.chain[0].clone(), new.certificate().clone()),
        ];
        for (i, (cert, issuer)) in certs.iter().enumerate() {
            let what = format!("{algorithm} certificate {i}");
            for name in report(cert).subject_alt_names {
                let dns = name.strip_prefix("DNS:").unwrap_or("");
                assert!(is_preferred_dns_name(dns), "{what}: {name}");
            }
            let p = parsed(cert);
            let key_bits = &p.public_key().subject_public_key.data;
            let digest = ring::digest::digest(&ring::digest::SHA256, key_bits);
            assert_eq!(
                ski(cert).as_deref(),
                Some(&digest.as_ref()[..20]),
                "{what}: subject key identifier (RFC 7093 method 1)"
            );
            if cert != issuer {
                assert_eq!(aki(cert), ski(issuer), "{what}: authority key identifier");
                assert!(aki(cert).is_some(), "{what}");
            }
        }
        // A leaf of the new root names the new root's key, and so does the
        // cross-signed root that stands in for it.
        assert_eq!(aki(&next.chain[0]), ski(&cross));
        // Node certificates are not CAs (no basic constraints: cA=FALSE is
        // the default and DER forbids writing it).
        for leaf in [&manager.chain[0], &worker.chain[0], &next.chain[0]] {
            assert!(parsed(leaf).basic_constraints().unwrap().is_none());
            assert!(!parsed(leaf).is_ca());
        }
    }
}

/// A certificate signed with `ca`'s key for `node` as `role` with exactly
/// the DNS names `names` (what a CA of an older moat, or a faulty one,
/// would issue).
fn minted(
    ca: &RootCa,
    node: NodeId,
    role: Role,
    names: &[String],
) -> (Credentials, OffsetDateTime) {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let ca_key = PrivateKey::from_pkcs8_der(&ca.key().to_pkcs8_der()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(ca.certificate(), ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, node.to_string());
    dn.push(
        rcgen::DnType::OrganizationalUnitName,
        role.organizational_unit(),
    );
    dn.push(rcgen::DnType::OrganizationName, ca.cluster_id().to_string());
    params.distinguished_name = dn;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let t = now().replace_nanosecond(0).unwrap();
    params.not_before = t - Duration::minutes(5);
    params.not_after = t + Duration::hours(1);
    let kp = rcgen::KeyPair::try_from(key.to_pkcs8_der().as_slice()).unwrap();
    let cert = params.signed_by(&kp, &issuer).unwrap();
    (
        Credentials {
            chain: vec![cert.der().clone()],
            key,
        },
        t,
    )
}

/// Regression (finding 8): the DNS names must say what the subject says.
/// A certificate of this cluster's CA whose names point at another node,
/// another cluster or another role, or add a name, is refused; the names
/// of certificates issued before D37 (`<node id>`, `moat-<role>`,
/// `moat-ca`) are still accepted until they are renewed.
#[test]
fn names_that_disagree_with_the_subject_are_refused() {
    let ca = root();
    let cluster = ca.cluster_id();
    let id = NodeId::generate();
    let own = node_dns_name(&id, &cluster);
    let check = |role: Role, names: Vec<String>| {
        let (creds, t) = minted(&ca, id, role, &names);
        verify_chain(&creds.chain, &roots_of(&ca), &cluster, Usage::Server, t)
    };
    let refused = [
        (
            Role::Worker,
            vec![
                node_dns_name(&NodeId::generate(), &cluster),
                "worker.moat.internal".into(),
            ],
        ),
        (
            Role::Worker,
            vec![
                node_dns_name(&id, &ClusterId::generate()),
                "worker.moat.internal".into(),
            ],
        ),
        (
            Role::Worker,
            vec![own.clone(), "manager.moat.internal".into()],
        ),
        (
            Role::Manager,
            vec![own.clone(), "worker.moat.internal".into()],
        ),
        (
            Role::Manager,
            vec![
                own.clone(),
                "manager.moat.internal".into(),
                "evil.example".into(),
            ],
        ),
        (Role::Manager, vec![own.clone()]),
        (Role::Worker, vec![]),
        (Role::Worker, vec![id.to_string(), "moat-manager".into()]),
    ];
    for (role, names) in refused {
        let Err(err) = check(role, names.clone()) else {
            panic!("{role} {names:?} was accepted");
        };
        assert!(
            matches!(err, CertError::BadSubject { .. }),
            "{role} {names:?}: {err}"
        );
    }
    // Accepted: the names moat issues, and the pre-D37 ones.
    for (role, names) in [
        (
            Role::Worker,
            vec!["worker.moat.internal".into(), own.clone()],
        ),
        (Role::Worker, vec![id.to_string(), "moat-worker".into()]),
        (
            Role::Manager,
            vec![id.to_string(), "moat-manager".into(), "moat-ca".into()],
        ),
    ] {
        let ident = check(role, names.clone()).unwrap_or_else(|e| panic!("{role} {names:?}: {e}"));
        assert_eq!((ident.node_id, ident.role), (id, role));
    }
}

/// A manager still holding a certificate issued before D37 (DNS name
/// `moat-manager`, not `manager.moat.internal`) is still accepted as a
/// manager by an upgraded node; a worker with the old names is still
/// refused as a server.
#[test]
fn tls_accepts_a_manager_certificate_issued_before_d37() {
    let ca = root();
    let (client, _) = context(&ca, Role::Worker, now());
    for (role, names) in [
        (
            Role::Manager,
            vec!["moat-manager".to_string(), "moat-ca".into()],
        ),
        (Role::Worker, vec!["moat-worker".to_string()]),
    ] {
        let id = NodeId::generate();
        let mut all = vec![id.to_string()];
        all.extend(names);
        let (creds, t) = minted(&ca, id, role, &all);
        let server = TlsContext::new(ca.cluster_id(), roots_of(&ca));
        server.set_credentials(creds, t).unwrap();
        let (_s, c) = handshake(&server, &client);
        match role {
            Role::Manager => c.unwrap(),
            Role::Worker => assert!(c.unwrap_err().contains("WrongRole"), "worker as server"),
        }
    }
}

/// A workload certificate (issue 18): SPIFFE's X.509-SVID profile from the
/// cluster's own root, and never usable as a node's.
#[test]
fn workload_certificates_name_their_service_and_never_pass_for_a_node() {
    let ca = root();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let csr = VerifiedCsr::from_der(key.csr().unwrap().as_ref()).unwrap();
    let t = now().replace_nanosecond(0).unwrap();
    let ttl = WorkloadTtl::new(std::time::Duration::from_secs(3600)).unwrap();
    // Task ids look like node ids: only the OU tells them apart.
    let task = NodeId::generate().to_string();
    let issued = ca.issue_workload(&csr, &task, "web", ttl, t).unwrap();
    let r = report(&issued.der);
    assert_eq!(
        r.subject,
        format!("CN={task}, OU=moat-workload, O={}", ca.cluster_id())
    );
    assert_eq!(
        r.subject_alt_names,
        vec![format!("URI:spiffe://{}/service/web", ca.cluster_id())],
        "exactly one URI name, the SPIFFE ID"
    );
    assert!(!r.is_ca);
    assert_eq!(issued.not_after, t + Duration::hours(1));
    assert_eq!(issued.not_before, t - Duration::minutes(5));
    // The node authorization refuses it, as client and as server.
    for usage in [Usage::Client, Usage::Server] {
        let err = verify_chain(
            std::slice::from_ref(&issued.der),
            &roots_of(&ca),
            &ca.cluster_id(),
            usage,
            t,
        )
        .unwrap_err();
        assert!(err.to_string().contains("moat-workload"), "{err}");
    }
    // What the task's node checks before it uses it: its key, its task,
    // its SPIFFE ID, this cluster's roots.
    let chain = std::slice::from_ref(&issued.der);
    let id = format!("spiffe://{}/service/web", ca.cluster_id());
    verify_workload(chain, &roots_of(&ca), &key, &task, &id, t).unwrap();
    let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let err = verify_workload(chain, &roots_of(&ca), &other_key, &task, &id, t).unwrap_err();
    assert!(err.to_string().contains("another key"), "{err}");
    let err = verify_workload(chain, &roots_of(&ca), &key, "other-task", &id, t).unwrap_err();
    assert!(err.to_string().contains("not task other-task"), "{err}");
    let err = verify_workload(
        chain,
        &roots_of(&ca),
        &key,
        &task,
        "spiffe://x/service/web",
        t,
    )
    .unwrap_err();
    assert!(err.to_string().contains("exactly the URI"), "{err}");
    assert!(verify_workload(chain, &roots_of(&root()), &key, &task, &id, t).is_err());
    // Bounds: 5 minutes to 24 hours; names that are not SPIFFE path
    // segments, and task ids that are not ids, are refused.
    assert!(WorkloadTtl::new(std::time::Duration::from_secs(299)).is_err());
    assert!(WorkloadTtl::new(std::time::Duration::from_secs(86_401)).is_err());
    assert_eq!(WorkloadTtl::DEFAULT.duration().as_secs(), 3600);
    for bad in ["", ".", "..", "a/b", "a b", "é"] {
        assert!(spiffe_id(&ca.cluster_id(), bad).is_err(), "{bad:?}");
        assert!(
            ca.issue_workload(&csr, "task1", bad, ttl, t).is_err(),
            "{bad:?}"
        );
    }
    for bad in ["", "a/b", "x\n"] {
        assert!(
            ca.issue_workload(&csr, bad, "web", ttl, t).is_err(),
            "{bad:?}"
        );
    }
}
