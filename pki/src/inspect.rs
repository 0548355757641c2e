//! Human- and machine-readable reports on certificates.

use serde::Serialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, Oid};
use x509_parser::public_key::PublicKey;

use crate::verify::{certs_from_pem, identity_of, parse_cert};
use crate::{CertError, Identity};

/// What `moat cert inspect` shows about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertReport {
    /// Subject distinguished name, RFC 4514 style.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Public key algorithm, e.g. `ECDSA`, `Ed25519`, `RSA`.
    pub key_algorithm: String,
    /// Curve name or key size, e.g. `P-256`, `2048 bits`.
    pub key_size: String,
    /// Signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// SHA-256 of the DER encoding, upper-case hex pairs joined by `:`.
    pub sha256_fingerprint: String,
    /// Subject alternative names (`DNS:…`, `IP:…`, `URI:…`, `email:…`).
    pub subject_alt_names: Vec<String>,
    /// Whether the certificate may issue certificates.
    pub is_ca: bool,
    /// The moat node identity the subject names, if it is a node
    /// certificate (not a proof: inspection verifies nothing).
    pub moat_node: Option<Identity>,
}

/// Reports on every certificate in `input`: a PEM text with one or more
/// `CERTIFICATE` blocks, or a single DER certificate.
pub fn inspect(input: &[u8]) -> Result<Vec<CertReport>, CertError> {
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        certs_from_pem(trimmed)?
            .iter()
            .map(|der| report(der))
            .collect()
    } else {
        Ok(vec![report(input)?])
    }
}

fn report(der: &[u8]) -> Result<CertReport, CertError> {
    let cert = parse_cert(der)?;
    let (key_algorithm, key_size) = key_description(&cert);
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, der);
    Ok(CertReport {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: crate::ca::hex(cert.raw_serial()),
        not_before: rfc3339(cert.validity().not_before.to_datetime()),
        not_after: rfc3339(cert.validity().not_after.to_datetime()),
        key_algorithm,
        key_size,
        signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
        sha256_fingerprint: fingerprint
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        subject_alt_names: sans(&cert),
        is_ca: cert.is_ca(),
        moat_node: identity_of(&cert).ok(),
    })
}

fn key_description(cert: &X509Certificate<'_>) -> (String, String) {
    let spki = cert.public_key();
    let alg = &spki.algorithm;
    if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|c| match oid_name(&c).as_str() {
                "prime256v1" => "P-256".to_string(),
                "secp384r1" => "P-384".to_string(),
                "secp521r1" => "P-521".to_string(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "unknown curve".into());
        return ("ECDSA".into(), curve);
    }
    let name = oid_name(&alg.algorithm);
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => ("RSA".into(), format!("{} bits", rsa.key_size())),
        _ if name == "ed25519" => ("Ed25519".into(), "256 bits".into()),
        _ => (name, "unknown".into()),
    }
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => format!(
                    "IP:{}",
                    std::net::Ipv4Addr::from([ip[0], ip[1], ip[2], ip[3]])
                ),
                16 => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(ip);
                    format!("IP:{}", std::net::Ipv6Addr::from(b))
                }
                _ => "IP:<malformed>".into(),
            },
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::RFC822Name(e) => format!("email:{e}"),
            other => format!("{other}"),
        })
        .collect()
}

/// Short name of an OID, or its dotted form when unknown.
pub(crate) fn oid_name(oid: &Oid<'_>) -> String {
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| oid.to_id_string())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
