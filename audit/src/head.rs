//! Signed tree heads: a manager's signature over the size and root of the
//! audit log at a point in time, checkable offline with the cluster CA.

use std::collections::HashMap;

use moat_pki::pem::PemObject;
use moat_pki::{
    CertificateDer, ClusterId, Identity, NodeId, OffsetDateTime, PrivateKey, Role, TrustRoots,
    Usage, verify_chain,
};
use ring::signature;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::HeadError;
use crate::hash::Hash;
use crate::record::Timestamp;

/// Domain separator at the start of every head's signing input.
pub const HEAD_SIGNING_CONTEXT: &str = "moat-audit-sth-v1";
/// Largest `cert_chain_pem` accepted in a head, checked before parsing.
pub const MAX_CHAIN_PEM_BYTES: usize = 32 * 1024;
/// Largest signature accepted (an ECDSA P-384 signature is at most 104 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 512;

/// A signed tree head: "the audit log had `size` records and root `root`
/// at `time`", signed by manager `signer` whose certificate chain, leaf
/// first, is `cert_chain_pem`.
///
/// The signature covers [`SignedTreeHead::signing_input`]. Make one with
/// [`HeadSigner`]; check one with [`SignedTreeHead::verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTreeHead {
    /// Number of records the head covers.
    pub size: u64,
    /// RFC 6962 root of the first `size` records.
    pub root: Hash,
    /// When the head was signed.
    pub time: Timestamp,
    /// The manager that signed it.
    pub signer: NodeId,
    /// The signature: ECDSA (ASN.1 DER) or Ed25519, base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub signature: Vec<u8>,
    /// The signer's certificate, then any intermediates, as PEM.
    pub cert_chain_pem: String,
}

impl SignedTreeHead {
    /// The bytes the signature covers (UTF-8, every line ending in `\n`):
    ///
    /// ```text
    /// moat-audit-sth-v1
    /// size=<decimal>
    /// root=<64 hex digits>
    /// time=<YYYY-MM-DDTHH:MM:SSZ>
    /// signer=<node id>
    /// ```
    pub fn signing_input(&self) -> Vec<u8> {
        signing_input(self.size, &self.root, self.time, &self.signer)
    }

    /// Verifies the head against the cluster's `roots`: the chain leads to
    /// a root, is valid at the head's `time`, names a **manager** of the
    /// roots' cluster whose node id is `signer`, and the signature over
    /// [`SignedTreeHead::signing_input`] verifies with its key.
    ///
    /// Returns the signer's identity.
    pub fn verify(&self, roots: &TrustRoots) -> Result<Identity, HeadError> {
        HeadVerifier::new(roots)?.verify(self)
    }

    /// The head as JSON (one line).
    pub fn to_json(&self) -> String {
        // Strings, integers and a node id always serialize.
        serde_json::to_string(self).expect("a signed tree head always serializes")
    }

    /// Parses a head from JSON, rejecting oversized input before parsing.
    pub fn from_json(bytes: &[u8]) -> Result<Self, HeadError> {
        let max = MAX_CHAIN_PEM_BYTES + 4096;
        if bytes.len() > max {
            return Err(HeadError::Malformed {
                reason: format!("{} bytes is more than the {max} byte limit", bytes.len()),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| HeadError::Malformed {
            reason: e.to_string(),
        })
    }
}

fn signing_input(size: u64, root: &Hash, time: Timestamp, signer: &NodeId) -> Vec<u8> {
    format!("{HEAD_SIGNING_CONTEXT}\nsize={size}\nroot={root}\ntime={time}\nsigner={signer}\n")
        .into_bytes()
}

/// Signs tree heads with a manager's key.
///
/// Built only from a key and a certificate chain that belong together and
/// that the cluster's roots accept as a manager's, so every head it signs
/// verifies (while the certificate is valid).
pub struct HeadSigner<'k> {
    key: &'k PrivateKey,
    node: NodeId,
    chain_pem: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl<'k> HeadSigner<'k> {
    /// Checks `chain` (leaf first) against `roots` at `now`, that it is a
    /// manager certificate, and that `key` is its key.
    pub fn new(
        key: &'k PrivateKey,
        chain: &[CertificateDer<'_>],
        roots: &TrustRoots,
        now: OffsetDateTime,
    ) -> Result<Self, HeadError> {
        let cluster = roots.cluster_id()?;
        let identity = verify_chain(chain, roots, &cluster, Usage::Client, now)?;
        if identity.role != Role::Manager {
            return Err(HeadError::NotAManager {
                node: identity.node_id.to_string(),
                role: identity.role,
            });
        }
        let leaf = parse_cert(chain.first().map(|c| c.as_ref()).unwrap_or_default())?;
        if leaf.public_key().raw != key.public_key_der().as_slice() {
            return Err(HeadError::KeyMismatch);
        }
        let chain_pem = chain.iter().map(|c| cert_pem(c.as_ref())).collect();
        Ok(Self {
            key,
            node: identity.node_id,
            chain_pem,
            not_before: identity.not_before,
            not_after: identity.not_after,
        })
    }

    /// The signing manager.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Signs the head for a log of `size` records with root `root` at `time`.
    ///
    /// `time` must lie within the certificate's validity, or the head would
    /// never verify: after a renewal, build a new signer.
    pub fn sign(
        &self,
        size: u64,
        root: Hash,
        time: Timestamp,
    ) -> Result<SignedTreeHead, HeadError> {
        let at = time.to_datetime();
        if at < self.not_before {
            return Err(moat_pki::CertError::NotYetValid {
                not_before: self.not_before,
                now: at,
            }
            .into());
        }
        if at > self.not_after {
            return Err(moat_pki::CertError::Expired {
                not_after: self.not_after,
                now: at,
            }
            .into());
        }
        let input = signing_input(size, &root, time, &self.node);
        let signature = self.key.sign(&input).map_err(|e| HeadError::Signing {
            reason: e.to_string(),
        })?;
        Ok(SignedTreeHead {
            size,
            root,
            time,
            signer: self.node,
            signature,
            cert_chain_pem: self.chain_pem.clone(),
        })
    }
}

/// Verifies many heads against one set of roots, checking each distinct
/// certificate chain once.
pub(crate) struct HeadVerifier<'r> {
    roots: &'r TrustRoots,
    cluster: ClusterId,
    chains: HashMap<String, CheckedChain>,
}

/// A chain that verified at some time: who it names, when every
/// certificate in it is valid, and the leaf's public key.
struct CheckedChain {
    identity: Identity,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    algorithm: &'static dyn signature::VerificationAlgorithm,
    public_key: Vec<u8>,
}

impl<'r> HeadVerifier<'r> {
    pub(crate) fn new(roots: &'r TrustRoots) -> Result<Self, HeadError> {
        Ok(Self {
            roots,
            cluster: roots.cluster_id()?,
            chains: HashMap::new(),
        })
    }

    pub(crate) fn verify(&mut self, head: &SignedTreeHead) -> Result<Identity, HeadError> {
        if head.signature.len() > MAX_SIGNATURE_BYTES {
            return Err(HeadError::Malformed {
                reason: format!("a signature of {} bytes", head.signature.len()),
            });
        }
        let at = head.time.to_datetime();
        let cached = self
            .chains
            .get(&head.cert_chain_pem)
            .is_some_and(|c| c.not_before <= at && at <= c.not_after);
        if !cached {
            let checked = self.check_chain(&head.cert_chain_pem, at)?;
            self.chains.insert(head.cert_chain_pem.clone(), checked);
        }
        let chain = self
            .chains
            .get(&head.cert_chain_pem)
            .ok_or(HeadError::BadSignature)?;
        let identity = &chain.identity;
        if identity.role != Role::Manager {
            return Err(HeadError::NotAManager {
                node: identity.node_id.to_string(),
                role: identity.role,
            });
        }
        if identity.node_id != head.signer {
            return Err(HeadError::WrongSigner {
                named: head.signer.to_string(),
                certified: identity.node_id.to_string(),
            });
        }
        signature::UnparsedPublicKey::new(chain.algorithm, &chain.public_key)
            .verify(&head.signing_input(), &head.signature)
            .map_err(|_| HeadError::BadSignature)?;
        Ok(identity.clone())
    }

    fn check_chain(&self, pem: &str, at: OffsetDateTime) -> Result<CheckedChain, HeadError> {
        if pem.len() > MAX_CHAIN_PEM_BYTES {
            return Err(HeadError::Malformed {
                reason: format!(
                    "certificate chain of {} bytes is more than the {MAX_CHAIN_PEM_BYTES} byte limit",
                    pem.len()
                ),
            });
        }
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .take(moat_pki::MAX_CHAIN_LEN + 1)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HeadError::Malformed {
                reason: format!("certificate chain: {e}"),
            })?;
        let identity = verify_chain(&chain, self.roots, &self.cluster, Usage::Client, at)?;
        let mut not_before = OffsetDateTime::UNIX_EPOCH;
        let mut not_after = OffsetDateTime::UNIX_EPOCH;
        for (i, der) in chain.iter().enumerate() {
            let cert = parse_cert(der.as_ref())?;
            let (nb, na) = (
                cert.validity().not_before.to_datetime(),
                cert.validity().not_after.to_datetime(),
            );
            if i == 0 {
                (not_before, not_after) = (nb, na);
            } else {
                not_before = not_before.max(nb);
                not_after = not_after.min(na);
            }
        }
        let leaf = parse_cert(chain.first().map(|c| c.as_ref()).unwrap_or_default())?;
        let (algorithm, public_key) = leaf_key(&leaf)?;
        Ok(CheckedChain {
            identity,
            not_before,
            not_after,
            algorithm,
            public_key,
        })
    }
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, HeadError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| HeadError::Malformed {
        reason: format!("certificate: {e}"),
    })?;
    Ok(cert)
}

type LeafKey = (&'static dyn signature::VerificationAlgorithm, Vec<u8>);

/// The verification algorithm and raw public key of a certificate's key.
fn leaf_key(cert: &X509Certificate<'_>) -> Result<LeafKey, HeadError> {
    let spki = cert.public_key();
    let oid = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.to_vec();
    if *oid == OID_SIG_ED25519 {
        return Ok((&signature::ED25519, key));
    }
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => return Ok((&signature::ECDSA_P256_SHA256_ASN1, key)),
            Some(c) if c == OID_NIST_EC_P384 => {
                return Ok((&signature::ECDSA_P384_SHA384_ASN1, key));
            }
            other => {
                return Err(HeadError::UnsupportedKey {
                    algorithm: format!("ECDSA on curve {other:?}"),
                });
            }
        }
    }
    Err(HeadError::UnsupportedKey {
        algorithm: oid.to_id_string(),
    })
}

fn cert_pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

mod base64_bytes {
    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::BASE64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        if text.len() > 4 * super::MAX_SIGNATURE_BYTES {
            return Err(serde::de::Error::custom("signature too long"));
        }
        data_encoding::BASE64
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
