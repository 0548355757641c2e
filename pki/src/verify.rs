//! Verification of presented certificate chains into node identities.

use rcgen::DnType;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime, pem::PemObject};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::{CertError, ClusterId, NodeId, Role};

/// Largest certificate accepted, checked before parsing.
pub const MAX_CERT_BYTES: usize = 16 * 1024;
/// Most certificates accepted in one presented chain or root bundle.
pub const MAX_CHAIN_LEN: usize = 8;

/// Who a verified certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The certificate's `CN`.
    pub node_id: NodeId,
    /// The role from the certificate's `OU`.
    pub role: Role,
    /// The certificate's `O`.
    pub cluster_id: ClusterId,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// Which side of a TLS connection a certificate authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A node connecting to another (client authentication).
    Client,
    /// A node accepting connections (server authentication).
    Server,
}

/// The root certificates a node trusts: one normally, two during a root
/// rotation.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustRoots {
    /// Trusts `certs`, which must be CA certificates.
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        if certs.is_empty() || certs.len() > MAX_CHAIN_LEN {
            return Err(CertError::malformed(
                "root CA bundle",
                format!(
                    "expected 1 to {MAX_CHAIN_LEN} certificates, found {}",
                    certs.len()
                ),
            ));
        }
        let mut anchors = Vec::with_capacity(certs.len());
        for cert in &certs {
            if !parse_cert(cert)?.is_ca() {
                return Err(CertError::NotACa {
                    reason: "a certificate in the root bundle is not a CA".into(),
                });
            }
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| CertError::malformed("root CA certificate", format!("{e:?}")))?;
            anchors.push(anchor.to_owned());
        }
        Ok(Self { certs, anchors })
    }

    /// Parses a PEM bundle of root certificates.
    pub fn from_pem(bundle: &[u8]) -> Result<Self, CertError> {
        Self::new(certs_from_pem(bundle)?)
    }

    /// The bundle as PEM: the exact bytes a joining node downloads and
    /// whose SHA-256 its join token pins.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(to_pem).collect()
    }

    /// The cluster the bundle's roots serve (their subject `O`), which must
    /// be the same for every root in it.
    pub fn cluster_id(&self) -> Result<ClusterId, CertError> {
        let mut found: Option<ClusterId> = None;
        for cert in &self.certs {
            let parsed = parse_cert(cert)?;
            let cluster: ClusterId = subject_attr(&parsed, DnType::OrganizationName)?
                .parse()
                .map_err(|e| CertError::NotACa {
                    reason: format!("root subject O is not a moat cluster id ({e})"),
                })?;
            if found.is_some_and(|f| f != cluster) {
                return Err(CertError::NotACa {
                    reason: "the root bundle mixes roots of different clusters".into(),
                });
            }
            found = Some(cluster);
        }
        found.ok_or_else(|| CertError::malformed("root CA bundle", "no certificate"))
    }

    /// The trusted certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

/// Verifies that `chain` (leaf first, then intermediates) leads to one of
/// `roots`, is valid at `now` for `usage`, and names a node of `cluster`:
/// node, role and cluster from the subject, and subject alternative names
/// that say exactly the same (see `names.rs`).
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    roots: &TrustRoots,
    cluster: &ClusterId,
    usage: Usage,
    now: OffsetDateTime,
) -> Result<Identity, CertError> {
    let parsed = verify_path(chain, roots, usage, now)?;
    let identity = identity_of(&parsed)?;
    crate::names::check_san_names(
        &parsed,
        &identity.node_id,
        identity.role,
        &identity.cluster_id,
    )?;
    if identity.cluster_id != *cluster {
        return Err(CertError::WrongCluster {
            expected: cluster.to_string(),
            found: identity.cluster_id.to_string(),
        });
    }
    Ok(identity)
}

/// Verifies that `chain` leads to one of `roots` and is valid at `now`
/// for `usage`; returns its leaf, parsed.
fn verify_path<'a>(
    chain: &'a [CertificateDer<'_>],
    roots: &TrustRoots,
    usage: Usage,
    now: OffsetDateTime,
) -> Result<X509Certificate<'a>, CertError> {
    let (leaf, intermediates) = chain.split_first().ok_or_else(|| CertError::Rejected {
        reason: "no certificate was presented".into(),
    })?;
    if intermediates.len() >= MAX_CHAIN_LEN {
        return Err(CertError::Rejected {
            reason: format!("chain of {} certificates is too long", chain.len()),
        });
    }
    let parsed = parse_cert(leaf)?;
    let ee = EndEntityCert::try_from(leaf).map_err(|e| webpki_error(e, &parsed, now, usage))?;
    let eku = match usage {
        Usage::Client => KeyUsage::client_auth(),
        Usage::Server => KeyUsage::server_auth(),
    };
    let algs = crate::tls::provider().signature_verification_algorithms.all;
    ee.verify_for_usage(
        algs,
        &roots.anchors,
        intermediates,
        unix_time(now),
        eku,
        None,
        None,
    )
    .map_err(|e| webpki_error(e, &parsed, now, usage))?;
    Ok(parsed)
}

/// Checks a workload certificate the CA sent for `key` before it is used:
/// `chain` leads to one of `roots` and is valid at `now` for TLS client and
/// server use, its leaf certifies `key`, names task `task` (`CN`) with the
/// `OU` [`crate::WORKLOAD_OU`], and has exactly one subject alternative
/// name, the URI `spiffe_id`.
pub fn verify_workload(
    chain: &[CertificateDer<'_>],
    roots: &TrustRoots,
    key: &crate::PrivateKey,
    task: &str,
    spiffe_id: &str,
    now: OffsetDateTime,
) -> Result<(), CertError> {
    verify_path(chain, roots, Usage::Server, now)?;
    let leaf = verify_path(chain, roots, Usage::Client, now)?;
    let bad = |reason: String| CertError::BadSubject { reason };
    if leaf.public_key().raw != key.public_key_der().as_slice() {
        return Err(bad("it certifies another key than the one sent".into()));
    }
    let cn = subject_attr(&leaf, DnType::CommonName)?;
    let ou = subject_attr(&leaf, DnType::OrganizationalUnitName)?;
    if cn != task || ou != crate::WORKLOAD_OU {
        return Err(bad(format!(
            "subject CN={cn}, OU={ou} is not task {task}'s workload certificate"
        )));
    }
    let names = leaf
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subject alternative names ({e})")))?
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    match names.as_slice() {
        [x509_parser::extensions::GeneralName::URI(uri)] if *uri == spiffe_id => Ok(()),
        _ => Err(bad(format!(
            "its subject alternative names are not exactly the URI {spiffe_id}"
        ))),
    }
}

/// Reads the identity fields of a certificate without verifying it. Only
/// for display and for certificates that were verified already.
pub(crate) fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, CertError> {
    let bad = |reason: String| CertError::BadSubject { reason };
    let cn = subject_attr(cert, DnType::CommonName)?;
    let ou = subject_attr(cert, DnType::OrganizationalUnitName)?;
    let o = subject_attr(cert, DnType::OrganizationName)?;
    Ok(Identity {
        node_id: cn.parse().map_err(|e| bad(format!("CN: {e}")))?,
        role: Role::from_organizational_unit(&ou)
            .ok_or_else(|| bad(format!("OU {ou:?} is not moat-manager or moat-worker")))?,
        cluster_id: o.parse().map_err(|e| bad(format!("O: {e}")))?,
        serial: crate::ca::hex(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// Parses one DER certificate, rejecting oversized input and trailing bytes.
pub(crate) fn parse_cert<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    if der.len() > MAX_CERT_BYTES {
        return Err(CertError::malformed(
            "certificate",
            format!(
                "{} bytes is larger than the {MAX_CERT_BYTES} byte limit",
                der.len()
            ),
        ));
    }
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CertError::malformed("certificate", e))?;
    if !rest.is_empty() {
        return Err(CertError::malformed(
            "certificate",
            "trailing bytes after the certificate",
        ));
    }
    Ok(cert)
}

/// The single value of a subject attribute; absent or repeated is an error,
/// since an ambiguous subject must never be read as an identity.
pub(crate) fn subject_attr(cert: &X509Certificate<'_>, ty: DnType) -> Result<String, CertError> {
    let (oid, name) = match ty {
        DnType::CommonName => (x509_parser::oid_registry::OID_X509_COMMON_NAME, "CN"),
        DnType::OrganizationalUnitName => (
            x509_parser::oid_registry::OID_X509_ORGANIZATIONAL_UNIT,
            "OU",
        ),
        _ => (x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME, "O"),
    };
    let mut values = cert
        .subject()
        .iter_attributes()
        .filter(|a| *a.attr_type() == oid);
    let bad = |reason: String| CertError::BadSubject { reason };
    let first = values.next().ok_or_else(|| bad(format!("no {name}")))?;
    if values.next().is_some() {
        return Err(bad(format!("more than one {name}")));
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|_| bad(format!("{name} is not a string")))
}

/// Parses every `CERTIFICATE` block of a PEM text.
pub(crate) fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .take(MAX_CHAIN_LEN + 1)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::malformed("PEM certificate", e))?;
    if certs.is_empty() {
        return Err(CertError::malformed(
            "PEM certificate",
            "no CERTIFICATE block found",
        ));
    }
    Ok(certs)
}

/// A DER certificate as PEM.
pub(crate) fn to_pem(cert: &CertificateDer<'_>) -> String {
    let b64 = data_encoding::BASE64.encode(cert.as_ref());
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

pub(crate) fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        t.unix_timestamp().max(0) as u64
    ))
}

pub(crate) fn from_unix_time(t: UnixTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_secs().min(i64::MAX as u64) as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Proof of possession for a node whose certificate has expired: verifies
/// that `chain` was issued under `roots` to a node of `cluster` — checked
/// as of the last second of the leaf's validity, because it has expired —
/// and that `signature` over `message` was made with the leaf's key.
/// The caller makes `message` fresh (it covers the new CSR), so the old
/// certificate proves identity but grants nothing by itself.
pub fn verify_possession(
    chain: &[CertificateDer<'_>],
    roots: &TrustRoots,
    cluster: &ClusterId,
    message: &[u8],
    signature: &[u8],
) -> Result<Identity, CertError> {
    let leaf = chain.first().ok_or_else(|| CertError::Rejected {
        reason: "no certificate was presented".into(),
    })?;
    let parsed = parse_cert(leaf)?;
    let last_second = parsed.validity().not_after.to_datetime() - time::Duration::seconds(1);
    let identity = verify_chain(chain, roots, cluster, Usage::Client, last_second)?;
    let ee = EndEntityCert::try_from(leaf).map_err(|e| CertError::Rejected {
        reason: format!("certificate: {e:?}"),
    })?;
    let verified = crate::tls::provider()
        .signature_verification_algorithms
        .all
        .iter()
        .any(|alg| ee.verify_signature(*alg, message, signature).is_ok());
    if !verified {
        return Err(CertError::Rejected {
            reason: "the proof of possession does not verify with the certificate's key".into(),
        });
    }
    Ok(identity)
}

fn webpki_error(
    e: webpki::Error,
    leaf: &X509Certificate<'_>,
    now: OffsetDateTime,
    usage: Usage,
) -> CertError {
    use webpki::Error as W;
    match e {
        W::CertExpired { .. } => CertError::Expired {
            not_after: leaf.validity().not_after.to_datetime(),
            now,
        },
        W::CertNotValidYet { .. } => CertError::NotYetValid {
            not_before: leaf.validity().not_before.to_datetime(),
            now,
        },
        W::UnknownIssuer => CertError::UnknownIssuer,
        W::InvalidSignatureForPublicKey => CertError::BadSignature {
            what: "certificate chain",
        },
        W::RequiredEkuNotFoundContext(_) => CertError::WrongUsage {
            usage: match usage {
                Usage::Client => "client",
                Usage::Server => "server",
            },
        },
        other => CertError::Rejected {
            reason: format!("{other}"),
        },
    }
}

/// Whether `cert` (DER) names `root` (DER) as its issuer: the same
/// distinguished name, and the same key identifier where both carry one.
/// This is naming, not proof (no signature is checked): it tells which of
/// the roots a node trusts issued a certificate already verified.
pub fn issued_by(cert: &[u8], root: &[u8]) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let (Ok(cert), Ok(root)) = (parse_cert(cert), parse_cert(root)) else {
        return false;
    };
    if cert.issuer().as_raw() != root.subject().as_raw() {
        return false;
    }
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        });
    let ski = root
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        });
    match (aki, ski) {
        (Some(a), Some(s)) => a == s,
        _ => true,
    }
}
