//! rustls configurations for cluster traffic: TLS 1.3 only, hybrid
//! post-quantum key exchange preferred, mutual authentication against the
//! cluster roots, and certificates and roots that can be swapped while
//! connections stay up.

use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use time::OffsetDateTime;

use crate::clock::{Clock, HandshakeTime, SystemClock};
use crate::verify::{from_unix_time, verify_chain};
use crate::{CertError, ClusterId, Error, Identity, PrivateKey, Role, TrustRoots, Usage};

/// The TLS server name a node asks for when it connects to a manager. Every
/// manager certificate carries it as a DNS name ([`Role::dns_name`]).
pub const MANAGER_SERVER_NAME: &str = Role::Manager.dns_name();

/// The crypto provider for every cluster connection: aws-lc-rs with its
/// default key-exchange order (X25519MLKEM768 first) and only the TLS 1.3
/// cipher suites.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut p = rustls::crypto::aws_lc_rs::default_provider();
            p.cipher_suites
                .retain(|s| s.version() == &rustls::version::TLS13);
            Arc::new(p)
        })
        .clone()
}

/// What every cluster connection negotiates from: protocol versions,
/// cipher suites and key-exchange groups, in preference order (for the
/// compliance report; nothing in moat can change them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSummary {
    /// Protocol versions, e.g. `TLSv1.3`.
    pub versions: Vec<String>,
    /// Cipher suites, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suites: Vec<String>,
    /// Key-exchange groups, e.g. `X25519MLKEM768`.
    pub key_exchange_groups: Vec<String>,
}

/// The TLS parameters of [`provider`].
pub fn tls_summary() -> TlsSummary {
    let p = provider();
    TlsSummary {
        // rustls names it `TLSv1_3`; people and policies write `TLSv1.3`.
        versions: vec![format!("{:?}", rustls::version::TLS13.version).replace('_', ".")],
        cipher_suites: p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect(),
        key_exchange_groups: p
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect(),
    }
}

/// A node's certificate chain (leaf first) and private key.
pub struct Credentials {
    /// Leaf first, then any intermediates (the cross-signed root during a
    /// root rotation).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKey,
}

/// The live TLS state of a node: its trust roots and, once it has one, its
/// certificate. Both can be replaced at any time; configurations built from
/// a context see the change on their next handshake, and established
/// connections are untouched.
pub struct TlsContext {
    cluster: ClusterId,
    clock: Arc<dyn Clock>,
    roots: ArcSwap<TrustRoots>,
    current: ArcSwapOption<Current>,
    /// Peers' one-certificate chains that verified, by SHA-256 of the
    /// certificate: see [`TlsContext::verify_peer`].
    verified: std::sync::Mutex<PeerCache>,
}

/// The identities of peer certificates that verified against one set of
/// roots (the `Arc` held, compared by pointer: new roots empty the cache).
#[derive(Default)]
struct PeerCache {
    roots: Option<Arc<TrustRoots>>,
    identities: std::collections::HashMap<[u8; 32], Identity>,
}

/// Most peer certificates [`TlsContext::verify_peer`] remembers; past it
/// the cache starts again empty (a leader holds one per node: 16,384 is
/// the transport's bound on workers' connections).
const PEER_CACHE_MAX: usize = 20_000;

struct Current {
    certified: Arc<CertifiedKey>,
    identity: Identity,
    key: Arc<PrivateKey>,
}

impl TlsContext {
    /// A context for a node of `cluster` that trusts `roots` and has no
    /// certificate yet (a joining node).
    pub fn new(cluster: ClusterId, roots: TrustRoots) -> Arc<Self> {
        Self::with_clock(cluster, roots, Arc::new(SystemClock))
    }

    /// [`TlsContext::new`], checking peers' certificates in handshakes
    /// against `clock` instead of the system clock.
    pub fn with_clock(cluster: ClusterId, roots: TrustRoots, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            clock,
            roots: ArcSwap::from_pointee(roots),
            current: ArcSwapOption::empty(),
            verified: std::sync::Mutex::new(PeerCache::default()),
        })
    }

    /// The cluster this node belongs to.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster
    }

    /// The identity in the current certificate, if there is one.
    pub fn identity(&self) -> Option<Identity> {
        self.current.load().as_ref().map(|c| c.identity.clone())
    }

    /// The current certificate chain (leaf first) and its key, to sign
    /// with this node's identity (audit tree heads).
    pub fn signing_identity(&self) -> Option<(Vec<CertificateDer<'static>>, Arc<PrivateKey>)> {
        let current = self.current.load_full()?;
        Some((current.certified.cert.clone(), current.key.clone()))
    }

    /// The trusted roots.
    pub fn roots(&self) -> Arc<TrustRoots> {
        self.roots.load_full()
    }

    /// Installs a certificate after checking it: the chain must verify
    /// against the current roots at `now` for both client and server use,
    /// name this cluster, match the private key, and — if a certificate is
    /// installed already — name the same node. A rejected certificate
    /// leaves the current one in place.
    pub fn set_credentials(
        &self,
        creds: Credentials,
        now: OffsetDateTime,
    ) -> Result<Identity, Error> {
        let roots = self.roots.load();
        let identity = verify_chain(&creds.chain, &roots, &self.cluster, Usage::Server, now)?;
        verify_chain(&creds.chain, &roots, &self.cluster, Usage::Client, now)?;
        if let Some(current) = self.current.load().as_ref()
            && current.identity.node_id != identity.node_id
        {
            return Err(CertError::WrongNode {
                expected: current.identity.node_id.to_string(),
                found: identity.node_id.to_string(),
            }
            .into());
        }
        let key_der = PrivatePkcs8KeyDer::from(creds.key.to_pkcs8_der().to_vec());
        let certified = CertifiedKey::from_der(creds.chain, key_der.into(), &provider()).map_err(
            |e| match e {
                rustls::Error::InconsistentKeys(_) => Error::Cert(CertError::KeyMismatch),
                other => Error::Tls(other),
            },
        )?;
        self.current.store(Some(Arc::new(Current {
            certified: Arc::new(certified),
            identity: identity.clone(),
            key: Arc::new(creds.key),
        })));
        Ok(identity)
    }

    /// Replaces the trusted roots (for a root rotation: old and new together,
    /// then the new one alone).
    pub fn set_roots(&self, roots: TrustRoots) {
        self.roots.store(Arc::new(roots));
    }

    /// Verifies a peer's presented chain (as a server sees a client) and
    /// returns its identity: for per-request authorization.
    pub fn verify_peer(
        &self,
        chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<Identity, CertError> {
        let roots = self.roots.load_full();
        // A leaf alone (every node's chain outside a root rotation) that
        // verified against these very roots is not verified again: only
        // its validity window is checked against `now`. Servers check the
        // peer at every call (heartbeats of 10,000 nodes were a fifth of
        // the leader's CPU in signature checks, bench/scale). The result
        // depends on nothing else: the chain, the roots, this cluster and
        // the time. New roots (a rotation) start the cache afresh.
        let key = match chain {
            [leaf] => {
                let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
                let mut key = [0u8; 32];
                key.copy_from_slice(digest.as_ref());
                Some(key)
            }
            _ => None,
        };
        if let Some(key) = &key {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if cache.roots.as_ref().is_some_and(|r| Arc::ptr_eq(r, &roots))
                && let Some(identity) = cache.identities.get(key)
                && identity.not_before <= now
                && now < identity.not_after
            {
                return Ok(identity.clone());
            }
        }
        let identity = verify_chain(chain, &roots, &self.cluster, Usage::Client, now)?;
        if let Some(key) = key {
            let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if !cache.roots.as_ref().is_some_and(|r| Arc::ptr_eq(r, &roots))
                || cache.identities.len() >= PEER_CACHE_MAX
            {
                cache.identities.clear();
                cache.roots = Some(roots);
            }
            cache.identities.insert(key, identity.clone());
        }
        Ok(identity)
    }

    /// A server configuration: TLS 1.3 only; a client certificate is asked
    /// for but optional (so that a joining node can fetch the root bundle
    /// and present its join token), and when one is presented it must
    /// verify against the cluster roots and name this cluster, or the
    /// handshake fails. Handlers authorize each request with the peer's
    /// [`Identity`] (see [`TlsContext::verify_peer`]).
    ///
    /// Session resumption is off: every connection runs a full handshake, so
    /// a peer's certificate is verified (expiry, roots, cluster) each time,
    /// and a renewed, rotated or revoked certificate takes effect on the
    /// next connection.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, Error> {
        let mut config = ServerConfig::builder_with_details(provider(), self.handshake_time())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(ClusterClientVerifier(self.clone())))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// A client configuration for connecting to a manager: TLS 1.3 only;
    /// the server must present a manager certificate of this cluster that
    /// verifies against the roots; this node's certificate is presented
    /// when it has one. No session resumption (see
    /// [`TlsContext::server_config`]).
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, Error> {
        let mut config = ClientConfig::builder_with_details(provider(), self.handshake_time())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            // Not weaker than the default verifier: ours runs the same
            // webpki path validation, then also checks cluster and role.
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ManagerServerVerifier(self.clone())))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// The clock this context checks certificates against.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    fn handshake_time(&self) -> Arc<dyn rustls::time_provider::TimeProvider> {
        Arc::new(HandshakeTime(self.clock.clone()))
    }

    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.certified.clone())
    }
}

/// A client configuration for the one call a joining node makes before it
/// trusts anything: downloading the cluster's root CA bundle.
///
/// The server's certificate is **not** verified (the node has no roots
/// yet), so nothing sent or received on such a connection may be trusted
/// or secret: the caller must compare the bundle's SHA-256 with the digest
/// in its join token before using it, and only then open a verified
/// connection ([`TlsContext::client_config`]) for the join itself. TLS 1.3
/// only; no client certificate; no session resumption.
pub fn bootstrap_client_config() -> Result<ClientConfig, Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedBootstrap))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake
/// signature, for [`bootstrap_client_config`].
/// The signature half of a certificate verifier, the same for every
/// verifier here: TLS 1.2 refused, TLS 1.3 signatures checked with the
/// provider's algorithms.
macro_rules! tls13_only_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(tls12_refused())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

#[derive(Debug)]
struct UnverifiedBootstrap;

impl ServerCertVerifier for UnverifiedBootstrap {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    tls13_only_signatures!();
}

/// The server name to use with [`TlsContext::client_config`].
pub fn manager_server_name() -> ServerName<'static> {
    ServerName::DnsName(
        rustls::pki_types::DnsName::try_from(MANAGER_SERVER_NAME)
            .unwrap_or_else(|_| unreachable!("constant is a valid DNS name")),
    )
}

#[derive(Debug)]
struct Resolver(Arc<TlsContext>);

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("cluster", &self.cluster)
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified()
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.certified()
    }

    fn has_certs(&self) -> bool {
        self.0.current.load().is_some()
    }
}

#[derive(Debug)]
struct ClusterClientVerifier(Arc<TlsContext>);

impl ClientCertVerifier for ClusterClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let chain = chain_of(end_entity, intermediates);
        self.0
            .verify_peer(&chain, from_unix_time(now))
            .map_err(to_rustls)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_only_signatures!();
}

#[derive(Debug)]
struct ManagerServerVerifier(Arc<TlsContext>);

impl ServerCertVerifier for ManagerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = chain_of(end_entity, intermediates);
        let roots = self.0.roots.load();
        let identity = verify_chain(
            &chain,
            &roots,
            &self.0.cluster,
            Usage::Server,
            from_unix_time(now),
        )
        .map_err(to_rustls)?;
        if identity.role != Role::Manager {
            return Err(to_rustls(CertError::WrongRole {
                expected: Role::Manager,
                found: identity.role,
            }));
        }
        // Only the manager name is asked for. verify_chain checked that the
        // certificate's DNS names are exactly those of its subject, so a
        // manager certificate carries this name (or, issued before D37,
        // its old form `moat-manager`, accepted until renewed).
        if server_name.to_str() != MANAGER_SERVER_NAME {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_only_signatures!();
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not allowed on moat connections".into())
}

fn tls13_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider().signature_verification_algorithms,
    )
}

fn chain_of<'a>(
    end_entity: &CertificateDer<'a>,
    intermediates: &[CertificateDer<'a>],
) -> Vec<CertificateDer<'a>> {
    let mut chain = Vec::with_capacity(intermediates.len() + 1);
    chain.push(end_entity.clone());
    chain.extend(intermediates.iter().cloned());
    chain
}

/// Maps our verdict onto the TLS alert rustls sends, keeping our message.
fn to_rustls(e: CertError) -> rustls::Error {
    let cert_error = match e {
        CertError::Expired { .. } => CertificateError::Expired,
        CertError::NotYetValid { .. } => CertificateError::NotValidYet,
        CertError::UnknownIssuer => CertificateError::UnknownIssuer,
        CertError::BadSignature { .. } => CertificateError::BadSignature,
        CertError::Malformed { .. } => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(cert_error)
}
