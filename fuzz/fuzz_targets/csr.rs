#![no_main]
//! Fuzzes `VerifiedCsr::from_der`; every accepted request must yield a node certificate that verifies.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moat_pki::{
    CertExpiry, ClusterId, MAX_CSR_BYTES, NodeId, OffsetDateTime, Role, RootCa, RootOptions,
    TrustRoots, Usage, VerifiedCsr, inspect, verify_chain,
};
use x509_parser::prelude::{FromDer, X509Certificate, X509CertificationRequest};

/// A fixed "now", so a crash does not depend on the day it is replayed.
fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A throwaway CA (fresh key per process; no check depends on which key).
fn ca() -> &'static (RootCa, TrustRoots) {
    static CA: OnceLock<(RootCa, TrustRoots)> = OnceLock::new();
    CA.get_or_init(|| {
        let root = RootCa::generate(ClusterId::generate(), &RootOptions::default(), now())
            .unwrap_or_else(|e| panic!("fixture root CA: {e}"));
        let roots = TrustRoots::new(vec![root.certificate().clone()])
            .unwrap_or_else(|e| panic!("fixture trust roots: {e}"));
        (root, roots)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(csr) = VerifiedCsr::from_der(data) else {
        return;
    };
    assert!(data.len() <= MAX_CSR_BYTES);

    // Parsing is deterministic, and trailing bytes are refused.
    assert_eq!(VerifiedCsr::from_der(data).ok().as_ref(), Some(&csr));
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        VerifiedCsr::from_der(&longer).is_err(),
        "CSR with a trailing byte accepted"
    );

    // Whatever passed verification, the CA can certify, and the result
    // verifies as exactly the node and role the CA chose.
    let (root, roots) = ca();
    let node = NodeId::generate();
    let issued = root
        .issue(&csr, node, Role::Worker, CertExpiry::DEFAULT, now())
        .unwrap_or_else(|e| panic!("the CA cannot certify a verified CSR: {e}"));
    let identity = verify_chain(
        std::slice::from_ref(&issued.der),
        roots,
        &root.cluster_id(),
        Usage::Client,
        now(),
    )
    .unwrap_or_else(|e| panic!("certificate issued for a verified CSR does not verify: {e}"));
    assert_eq!(identity.node_id, node);
    assert_eq!(identity.role, Role::Worker);
    assert_eq!(identity.cluster_id, root.cluster_id());

    let reports = inspect(issued.der.as_ref())
        .unwrap_or_else(|e| panic!("issued certificate does not inspect: {e}"));
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].is_ca);
    assert_eq!(reports[0].moat_node.as_ref(), Some(&identity));

    // The certificate certifies the request's public key.
    let (_, request) = X509CertificationRequest::from_der(data).expect("parsed above");
    let (_, cert) = X509Certificate::from_der(issued.der.as_ref()).expect("inspected above");
    let (requested, certified) = (
        &request.certification_request_info.subject_pki,
        cert.public_key(),
    );
    assert_eq!(
        certified.algorithm.algorithm, requested.algorithm.algorithm,
        "issued certificate has another key algorithm than the CSR"
    );
    assert_eq!(
        certified.subject_public_key.data, requested.subject_public_key.data,
        "issued certificate does not certify the CSR's key"
    );
});
