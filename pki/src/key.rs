//! Private keys, their algorithms, and certificate signing requests.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm};
use rustls::pki_types::{CertificateSigningRequestDer, pem::PemObject};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use zeroize::{Zeroize, Zeroizing};

use crate::CertError;

/// Key algorithms moat generates keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256: the default, as in Docker Swarm.
    #[default]
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// Name used on the command line and in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| CertError::UnsupportedKeyAlgorithm {
                algorithm: s.chars().take(32).collect(),
            })
    }
}

/// A private signing key: a CA key or a node's TLS key.
///
/// It has no `Debug` or `Display`, and its PKCS#8 encoding is zeroized on
/// drop. (The expanded key inside the crypto library is that library's to
/// manage; ring does not zeroize it.) Read the encoding only through
/// [`PrivateKey::to_pkcs8_der`], to seal it.
pub struct PrivateKey {
    pub(crate) pair: KeyPair,
}

impl PrivateKey {
    /// Generates a key from the operating system's CSPRNG.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, CertError> {
        let pair = KeyPair::generate_for(algorithm.rcgen())
            .map_err(|e| CertError::generation("private key", e))?;
        Ok(Self { pair })
    }

    /// Loads a PKCS#8 DER key (as written by [`PrivateKey::to_pkcs8_der`]).
    ///
    /// Only the algorithms of [`KeyAlgorithm`] are accepted.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CertError> {
        let pair = KeyPair::try_from(der).map_err(|_| {
            CertError::malformed("private key", "not a PKCS#8 ECDSA P-256 or Ed25519 key")
        })?;
        let alg = pair.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256 && alg != &rcgen::PKCS_ED25519 {
            return Err(CertError::UnsupportedKeyAlgorithm {
                algorithm: format!("{alg:?}"),
            });
        }
        Ok(Self { pair })
    }

    /// Reads a PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`), e.g. an
    /// operator's own root CA key.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, CertError> {
        use rustls::pki_types::PrivatePkcs8KeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| {
            CertError::malformed("private key", format!("not a PKCS#8 PEM key ({e})"))
        })?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The PKCS#8 DER encoding, in a buffer that is zeroized when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pair.serialize_der())
    }

    /// Signs `message` (ECDSA P-256 with SHA-256 in ASN.1 form, or
    /// Ed25519): for proving possession of this key, e.g. when a node
    /// rejoins with the key of its expired certificate.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CertError> {
        use rcgen::SigningKey as _;
        self.pair
            .sign(message)
            .map_err(|e| CertError::generation("signature", e))
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> KeyAlgorithm {
        if self.pair.algorithm() == &rcgen::PKCS_ED25519 {
            KeyAlgorithm::Ed25519
        } else {
            KeyAlgorithm::EcdsaP256
        }
    }

    /// The DER SubjectPublicKeyInfo of this key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// A certificate signing request for this key, in DER.
    ///
    /// The CA takes only the public key from it; the subject written here is
    /// a placeholder, because subject, names and lifetime are the CA's choice.
    pub fn csr(&self) -> Result<CertificateSigningRequestDer<'static>, CertError> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "moat node");
        let csr = params
            .serialize_request(&self.pair)
            .map_err(|e| CertError::generation("certificate signing request", e))?;
        Ok(csr.into())
    }
}

impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&self.pair)
    }
}

impl rcgen::SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.pair.sign(msg)
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.pair.zeroize();
    }
}

/// A certificate signing request whose signature has been verified.
///
/// Only the public key survives parsing: a CA built on this type cannot copy
/// a name, extension or lifetime from the request by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    public_key: CsrPublicKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CsrPublicKey {
    algorithm: &'static SignatureAlgorithm,
    raw: Vec<u8>,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// Largest CSR accepted, checked before parsing (a P-256 CSR is ~250 bytes).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

impl VerifiedCsr {
    /// Parses a DER CSR and verifies its self-signature.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        const WHAT: &str = "certificate signing request";
        if der.len() > MAX_CSR_BYTES {
            return Err(CertError::malformed(
                WHAT,
                format!(
                    "{} bytes is larger than the {MAX_CSR_BYTES} byte limit",
                    der.len()
                ),
            ));
        }
        let (rest, csr) =
            X509CertificationRequest::from_der(der).map_err(|e| CertError::malformed(WHAT, e))?;
        if !rest.is_empty() {
            return Err(CertError::malformed(
                WHAT,
                "trailing bytes after the request",
            ));
        }
        let spki = &csr.certification_request_info.subject_pki;
        let algorithm = csr_key_algorithm(spki)?;
        csr.verify_signature()
            .map_err(|_| CertError::BadSignature { what: WHAT })?;
        Ok(Self {
            public_key: CsrPublicKey {
                algorithm,
                raw: spki.subject_public_key.data.to_vec(),
            },
        })
    }

    /// Parses a PEM `CERTIFICATE REQUEST` and verifies its self-signature.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertError> {
        let der = CertificateSigningRequestDer::from_pem_slice(pem)
            .map_err(|e| CertError::malformed("certificate signing request", e))?;
        Self::from_der(der.as_ref())
    }

    pub(crate) fn public_key(&self) -> &impl PublicKeyData {
        &self.public_key
    }
}

fn csr_key_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<&'static SignatureAlgorithm, CertError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_SIG_ED25519 {
        return Ok(&rcgen::PKCS_ED25519);
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => return Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
            Some(c) if c == OID_NIST_EC_P384 => return Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
            Some(c) => {
                return Err(CertError::UnsupportedKeyAlgorithm {
                    algorithm: format!("ECDSA on curve {c}"),
                });
            }
            None => {
                return Err(CertError::malformed(
                    "certificate signing request",
                    "EC key without a named curve",
                ));
            }
        }
    }
    Err(CertError::UnsupportedKeyAlgorithm {
        algorithm: crate::inspect::oid_name(oid),
    })
}
