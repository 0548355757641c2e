//! Text forms of DER objects: PEM armor and SHA-256 fingerprints.

/// PEM armor of `der` under `label` (`CERTIFICATE`, `CERTIFICATE
/// REQUEST`, …), 64 base64 characters a line.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every 64-byte chunk is a whole line of text.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// PEM of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE", der)
}

/// PEM of a DER certificate request.
pub fn csr_pem(der: &[u8]) -> String {
    pem_encode("CERTIFICATE REQUEST", der)
}

/// `sha256:<hex>` of a DER certificate: how moat names a root CA (and a
/// certificate's issuer) in its records, reports and heartbeats.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    format!("sha256:{}", data_encoding::HEXLOWER.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_wraps_at_64_and_round_trips() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = cert_pem(&der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        use crate::pem::PemObject;
        let back = crate::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice());
        assert!(csr_pem(&der).contains("BEGIN CERTIFICATE REQUEST"));
    }

    #[test]
    fn fingerprint_is_sha256_hex() {
        // SHA-256 of the empty string.
        assert_eq!(
            fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
