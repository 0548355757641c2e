//! How a node's identity is written into its certificate, and checked
//! when it is read back.
//!
//! The subject says who the holder is: `CN=<node id>, OU=moat-<role>,
//! O=<cluster id>`. The subject alternative names say it again as DNS
//! names that an RFC 5280 linter accepts (D37), under [`NAME_ZONE`]:
//!
//! * `<node id>.<cluster id>.moat.internal`: this node of this cluster;
//! * `manager.moat.internal` or `worker.moat.internal`: its role, the TLS
//!   server name a node asks for when it connects to a manager.
//!
//! `.internal` is reserved by ICANN for private use and will never be
//! delegated, so these names can never belong to a real host. A
//! certificate is accepted only if its names are exactly the ones its
//! subject implies: a mismatch is refused, whatever else is right.
//!
//! Key identifiers (subject and authority) use RFC 7093 method 1: the
//! leftmost 160 bits of the SHA-256 of the subjectPublicKey bits, so
//! linters recognise the method and path builders can match an issuer by
//! key.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{CertError, ClusterId, NodeId, Role};

/// The DNS zone of every name in a moat node certificate.
pub const NAME_ZONE: &str = "moat.internal";

impl Role {
    /// The DNS name a certificate of this role carries:
    /// `manager.moat.internal` or `worker.moat.internal`.
    pub const fn dns_name(self) -> &'static str {
        match self {
            Role::Manager => "manager.moat.internal",
            Role::Worker => "worker.moat.internal",
        }
    }
}

/// The DNS name of one node of one cluster: `<node id>.<cluster id>.moat.internal`.
pub fn node_dns_name(node: &NodeId, cluster: &ClusterId) -> String {
    format!("{node}.{cluster}.{NAME_ZONE}")
}

/// The subject alternative names (all DNS names) of a node certificate,
/// in the order the CA writes them.
pub(crate) fn node_san_names(node: &NodeId, role: Role, cluster: &ClusterId) -> Vec<String> {
    vec![node_dns_name(node, cluster), role.dns_name().to_string()]
}

/// The names of certificates issued before D37 (`<node id>`,
/// `moat-<role>`, and `moat-ca` on managers): not valid DNS names, but the
/// same identity as the subject. Still accepted, so that nodes upgraded
/// one at a time keep talking until every certificate has been renewed
/// (within one certificate lifetime); to be refused before 1.0.
fn legacy_san_names(node: &NodeId, role: Role) -> Vec<String> {
    let mut names = vec![node.to_string(), role.organizational_unit().to_string()];
    if role == Role::Manager {
        names.push("moat-ca".to_string());
    }
    names
}

/// Checks that the subject alternative names of `cert` are exactly those
/// of a certificate for `node` with `role` in `cluster` (or their pre-D37
/// form): DNS names only, none missing, none extra.
pub(crate) fn check_san_names(
    cert: &X509Certificate<'_>,
    node: &NodeId,
    role: Role,
    cluster: &ClusterId,
) -> Result<(), CertError> {
    let bad = |reason: String| CertError::BadSubject { reason };
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subject alternative names ({e})")))?
        .ok_or_else(|| bad("no subject alternative names".into()))?;
    let mut found = Vec::with_capacity(ext.value.general_names.len());
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => found.push((*d).to_string()),
            other => {
                return Err(bad(format!(
                    "subject alternative name {other} is not a DNS name"
                )));
            }
        }
    }
    found.sort();
    let same = |mut expected: Vec<String>| {
        expected.sort();
        expected == found
    };
    if same(node_san_names(node, role, cluster)) || same(legacy_san_names(node, role)) {
        Ok(())
    } else {
        Err(bad(format!(
            "subject alternative names [{}] do not name {} node {node} of cluster {cluster}",
            found.join(", "),
            role
        )))
    }
}

/// The key identifier of a public key: RFC 7093 method 1, the leftmost
/// 160 bits of the SHA-256 of the subjectPublicKey BIT STRING's bytes.
pub(crate) fn key_identifier(subject_public_key: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, subject_public_key);
    digest.as_ref()[..20].to_vec()
}

/// The subject key identifier of a certificate, if it carries one.
pub(crate) fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_dns_names() {
        let node = NodeId::generate();
        let cluster = ClusterId::generate();
        for role in Role::ALL {
            for name in node_san_names(&node, role, &cluster) {
                // webpki's DNS name syntax (the one TLS name checks use).
                assert!(
                    rustls::pki_types::DnsName::try_from(name.as_str()).is_ok(),
                    "{name}"
                );
                assert!(name.ends_with(".moat.internal"), "{name}");
                assert!(name.len() <= 253, "{name}");
                assert!(name.split('.').all(|l| !l.is_empty() && l.len() <= 63));
            }
        }
        assert_eq!(crate::MANAGER_SERVER_NAME, Role::Manager.dns_name());
    }

    #[test]
    fn key_identifier_is_truncated_sha256() {
        // SHA-256("abc") begins ba7816bf8f01cfea414140de5dae2223b00361a3.
        assert_eq!(
            data_encoding::HEXLOWER.encode(&key_identifier(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a3"
        );
    }
}
