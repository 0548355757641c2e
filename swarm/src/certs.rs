//! The certificates of a state directory as the report shows them, and
//! the join-token CA digest. Facts come from `moat-pki`'s inspection (the
//! same wording as `moat cert inspect`); "issued by the root" is a
//! signature check.

use moat_api::{ProbeCert, RootCaInfo, SwarmCert};
use x509_parser::prelude::{FromDer, X509Certificate};

/// One certificate: its DER and what inspection says of it.
pub(crate) struct Parsed {
    /// The DER bytes.
    pub(crate) der: Vec<u8>,
    /// Inspection.
    pub(crate) report: moat_pki::CertReport,
}

/// The first certificate of a PEM text (`None` if none parses).
pub(crate) fn first(pem_text: &[u8]) -> Option<Parsed> {
    let block = pem::parse_many(pem_text)
        .ok()?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")?;
    let der = block.contents().to_vec();
    let report = moat_pki::inspect(&der).ok()?.into_iter().next()?;
    Some(Parsed { der, report })
}

fn algorithm(r: &moat_pki::CertReport) -> String {
    if r.key_size.is_empty() {
        r.key_algorithm.clone()
    } else {
        format!("{} {}", r.key_algorithm, r.key_size)
    }
}

/// `sha256:<lower-case hex>`, from inspection's `AA:BB:…`.
fn fingerprint(r: &moat_pki::CertReport) -> String {
    format!(
        "sha256:{}",
        r.sha256_fingerprint.replace(':', "").to_ascii_lowercase()
    )
}

/// The root CA's facts.
pub(crate) fn root_info(c: &Parsed) -> RootCaInfo {
    let r = &c.report;
    RootCaInfo {
        subject: r.subject.clone(),
        algorithm: algorithm(r),
        signature_algorithm: r.signature_algorithm.clone(),
        fingerprint: fingerprint(r),
        serial: r.serial.clone(),
        not_before: r.not_before.clone(),
        not_after: r.not_after.clone(),
    }
}

/// A root that does not parse: every fact empty (the report says so).
pub(crate) fn root_info_unparsed() -> RootCaInfo {
    RootCaInfo {
        subject: "(does not parse)".into(),
        algorithm: String::new(),
        signature_algorithm: String::new(),
        fingerprint: String::new(),
        serial: String::new(),
        not_before: String::new(),
        not_after: String::new(),
    }
}

/// A node certificate's facts; `roots_pem` are the roots it is checked
/// against (its signature, by one of them).
pub(crate) fn swarm_cert(c: &Parsed, roots_pem: &[u8]) -> SwarmCert {
    let r = &c.report;
    let lifetime_seconds = match (parse_time(&r.not_before), parse_time(&r.not_after)) {
        (Some(a), Some(b)) => u64::try_from((b - a).whole_seconds()).unwrap_or(0),
        _ => 0,
    };
    SwarmCert {
        subject: r.subject.clone(),
        issuer: r.issuer.clone(),
        algorithm: algorithm(r),
        signature_algorithm: r.signature_algorithm.clone(),
        sans: r
            .subject_alt_names
            .iter()
            .map(|s| s.strip_prefix("DNS:").unwrap_or(s).to_owned())
            .collect(),
        serial: r.serial.clone(),
        fingerprint: fingerprint(r),
        issued_by_root: signed_by_any(&c.der, roots_pem),
        not_before: r.not_before.clone(),
        not_after: r.not_after.clone(),
        lifetime_seconds,
    }
}

/// A certificate a probed server presented (`index` in its chain), with
/// its PEM; one that does not parse keeps its fingerprint and says so.
pub(crate) fn probe_cert(index: usize, der: &[u8]) -> ProbeCert {
    let pem_text = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    match moat_pki::inspect(der)
        .ok()
        .and_then(|r| r.into_iter().next())
    {
        Some(r) => ProbeCert {
            subject: r.subject.clone(),
            issuer: r.issuer.clone(),
            key_algorithm: algorithm(&r),
            signature_algorithm: r.signature_algorithm.clone(),
            not_before: r.not_before.clone(),
            not_after: r.not_after.clone(),
            sha256: fingerprint(&r),
            subject_alt_names: r.subject_alt_names.clone(),
            is_ca: r.is_ca,
            pem: pem_text,
        },
        None => ProbeCert {
            subject: String::new(),
            issuer: String::new(),
            key_algorithm: String::new(),
            signature_algorithm: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            sha256: short_sha256_full(der),
            subject_alt_names: vec![format!("<certificate {index} does not parse>")],
            is_ca: false,
            pem: pem_text,
        },
    }
}

/// Whether the first certificate of `leaf_pem` is signed by one of the
/// certificates in `roots_pem` (a signature check).
pub(crate) fn pem_signed_by(leaf_pem: &str, roots_pem: &[u8]) -> bool {
    first(leaf_pem.as_bytes()).is_some_and(|leaf| signed_by_any(&leaf.der, roots_pem))
}

/// `sha256:<hex>` of `bytes`.
fn short_sha256_full(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A certificate file that does not parse.
pub(crate) fn empty_cert() -> SwarmCert {
    SwarmCert {
        subject: "(does not parse)".into(),
        issuer: String::new(),
        algorithm: String::new(),
        signature_algorithm: String::new(),
        sans: Vec::new(),
        serial: String::new(),
        fingerprint: String::new(),
        issued_by_root: false,
        not_before: String::new(),
        not_after: String::new(),
        lifetime_seconds: 0,
    }
}

/// A Swarm node certificate's identity: cluster (`O=`), node (`CN=`) and
/// role (`OU=swarm-manager` → `manager`).
pub(crate) fn identity(c: &Parsed) -> (String, String, String) {
    let Ok((_, cert)) = X509Certificate::from_der(&c.der) else {
        return Default::default();
    };
    let attr = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let subject = cert.subject();
    let cluster = attr(&mut subject.iter_organization());
    let node = attr(&mut subject.iter_common_name());
    let ou = attr(&mut subject.iter_organizational_unit());
    let role = ou.strip_prefix("swarm-").unwrap_or(&ou).to_owned();
    (cluster, node, role)
}

/// Whether `der` is signed by one of the certificates in `roots_pem`.
fn signed_by_any(der: &[u8], roots_pem: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(roots) = pem::parse_many(roots_pem) else {
        return false;
    };
    roots.iter().filter(|p| p.tag() == "CERTIFICATE").any(|p| {
        X509Certificate::from_der(p.contents())
            .ok()
            .is_some_and(|(_, root)| cert.verify_signature(Some(root.public_key())).is_ok())
    })
}

/// The CA digest a join token carries: SHA-256 of the root CA's PEM
/// bytes, in base 36, zero-padded to 50 digits (SwarmKit's format).
pub(crate) fn token_digest(root_pem: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, root_pem);
    base36(digest.as_ref(), 50)
}

/// `bytes` (big-endian) in base 36 with lower-case digits, left-padded
/// with zeros to `width`.
fn base36(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n: Vec<u8> = bytes.to_vec();
    let mut out = Vec::new();
    while n.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// `sha256:` and the first 16 hex digits of SHA-256 over `bytes`.
pub(crate) fn short_sha256(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn parse_time(t: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_pads_and_converts() {
        assert_eq!(base36(&[0], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[36], 1), "10");
        assert_eq!(base36(&[1, 0], 4), "0074"); // 256 = 7*36 + 4
        assert_eq!(base36(&[0xff; 32], 50).len(), 50);
    }
}
