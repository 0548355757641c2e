//! What a live TLS probe of a Docker Swarm manager's port found
//! (`moat audit report --docker-swarm DIR --probe ADDR:PORT`).
//!
//! Pure data: `moat-swarm`'s `probe` module measures, the report renders
//! and checks. Every list holds only what the server was seen to accept;
//! what could not be tested is said in [`TlsProbe::notes`].

use serde::{Deserialize, Serialize};

/// The result of probing one TLS port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsProbe {
    /// The address probed, as given (`host:port`).
    pub address: String,
    /// The socket address it resolved to; every connection of the probe
    /// went there.
    pub peer: String,
    /// When the probe started (RFC 3339, UTC).
    pub probed_at: String,
    /// Protocol versions the server accepted, oldest first: any of
    /// `TLSv1.0`, `TLSv1.1`, `TLSv1.2`, `TLSv1.3`.
    pub versions: Vec<String>,
    /// Cipher suites the server accepted, one entry per version and suite,
    /// newest version first.
    pub cipher_suites: Vec<ProbeSuite>,
    /// Key-exchange groups the server accepted.
    pub key_exchange_groups: Vec<ProbeGroup>,
    /// Whether any accepted group is post-quantum (a hybrid such as
    /// `X25519MLKEM768`, or pure ML-KEM).
    pub post_quantum: bool,
    /// Whether the server asked for a client certificate in the full
    /// handshake (it got none).
    pub client_cert_requested: bool,
    /// The certificate chain the server presented, leaf first, as sent
    /// (not verified: this is an inspection, not a trust decision).
    pub chain: Vec<ProbeCert>,
    /// What a full handshake by moat's own TLS client negotiated; `None`
    /// when it did not complete (the reason is in `notes`).
    pub negotiated: Option<ProbeNegotiated>,
    /// What could not be tested and why, and anything odd the server did.
    pub notes: Vec<String>,
}

/// One cipher suite the server accepted under one protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSuite {
    /// The IANA name, e.g. `TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA` or
    /// `TLS_AES_128_GCM_SHA256`.
    pub name: String,
    /// The protocol version it was accepted under (`TLSv1.2`…).
    pub version: String,
    /// Whether the suite is weak: true exactly when `weaknesses` is not
    /// empty.
    pub weak: bool,
    /// Why it is weak, e.g. `CBC mode`, `SHA-1 MAC`, `no forward secrecy`,
    /// `3DES`, `RC4`.
    pub weaknesses: Vec<String>,
}

/// One key-exchange group the server accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeGroup {
    /// The group's name as rustls prints it, e.g. `X25519`, `secp256r1`,
    /// `X25519MLKEM768`.
    pub name: String,
    /// The protocol versions it was accepted under (`TLSv1.2`,
    /// `TLSv1.3`), oldest first.
    pub versions: Vec<String>,
    /// Whether the group is post-quantum (hybrid or pure ML-KEM).
    pub post_quantum: bool,
}

/// One certificate of the presented chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCert {
    /// The subject distinguished name (`CN=…, OU=…, O=…`); empty when the
    /// certificate does not parse (see the probe's notes).
    pub subject: String,
    /// The issuer distinguished name.
    pub issuer: String,
    /// The public key, e.g. `ECDSA P-256`, `RSA 2048`, `Ed25519`.
    pub key_algorithm: String,
    /// The signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// SHA-256 of the DER certificate: `sha256:<lowercase hex>`.
    pub sha256: String,
    /// Subject alternative names, `DNS:swarm-manager`, `IP:10.0.0.5`,
    /// `URI:…`.
    pub subject_alt_names: Vec<String>,
    /// Whether the certificate is a CA (basic constraints).
    pub is_ca: bool,
    /// The certificate as presented, PEM: evidence, and what the report
    /// checks against the state directory's root CA.
    #[serde(default)]
    pub pem: String,
}

/// What a full handshake negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeNegotiated {
    /// The protocol version (`TLSv1.3`…).
    pub version: String,
    /// The cipher suite's IANA name.
    pub cipher_suite: String,
    /// The key-exchange group, when there was one.
    pub key_exchange_group: Option<String>,
}
