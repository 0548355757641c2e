//! Who made a backup: the manager's signature over the manifest, checked
//! against the cluster roots the backup carries, and the operator's pin on
//! which cluster (and root) that must be.
//!
//! The signing input binds the exact manifest bytes (which hold every
//! file's SHA-256, so the signature covers every file) and the exact root
//! bundle:
//!
//! ```text
//! moat-backup-origin-v1
//! manifest=<SHA-256 of the manifest JSON bytes, 64 lower-case hex>
//! roots=<SHA-256 of the roots PEM bytes, 64 lower-case hex>
//! ```
//!
//! Checks, in order, all through moat-pki: the bundle parses as roots of
//! one cluster; that cluster is the manifest's `cluster_id`; the signer's
//! chain leads to one of the roots and is valid at the manifest's
//! `created_at`; it is a **manager** certificate of that cluster for the
//! manifest's `node_id`; the signature verifies with its key. The roots the
//! chain actually leads to (each root is tried alone, so a copied root
//! named like the real one never counts) are the ones reported and pinned.

use std::sync::Arc;

use moat_pki::pem::PemObject;
use moat_pki::{
    CertificateDer, ClusterId, Identity, OffsetDateTime, PrivateKey, Role, TrustRoots, Usage,
    verify_chain, verify_possession,
};
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::error::OriginError;

/// Domain separator at the start of the signing input.
pub const ORIGIN_SIGNING_CONTEXT: &str = "moat-backup-origin-v1";
/// Largest origin block accepted, in bytes, checked before reading it.
pub const MAX_ORIGIN_LEN: u64 = 64 << 10;
/// Largest signature accepted (an ECDSA P-384 signature is at most 104
/// bytes).
const MAX_SIGNATURE_BYTES: usize = 512;

/// The signing manager's key and certificate chain and the cluster roots
/// it trusts, for [`write_backup`](crate::write_backup).
///
/// Nothing is checked when it is built: the writer signs, then verifies its
/// own signature exactly as a reader will, before writing a byte, so a
/// signer that would produce an unverifiable backup is refused
/// ([`InputError::Signer`](crate::InputError::Signer)).
pub struct Signer {
    key: Arc<PrivateKey>,
    chain: Vec<CertificateDer<'static>>,
    roots: TrustRoots,
}

impl Signer {
    /// A manager's key, its certificate chain (leaf first) and the roots
    /// it trusts.
    pub fn new(
        key: Arc<PrivateKey>,
        chain: Vec<CertificateDer<'static>>,
        roots: TrustRoots,
    ) -> Self {
        Self { key, chain, roots }
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Where a backup that was read comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Format 2: signed by a manager of the cluster whose roots the backup
    /// carries; the signature verified.
    Signed(SignedBy),
    /// Format 1 (written before moat signed backups): nothing says which
    /// cluster made it.
    Unsigned,
}

/// A verified backup signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    /// The cluster: the roots', the signer certificate's and the
    /// manifest's, which are all the same.
    pub cluster_id: ClusterId,
    /// The manager that signed, from its certificate.
    pub signer: Identity,
    /// `sha256:<hex>` fingerprints of the roots the signer's chain leads
    /// to (one, or two during a root rotation): what `--expect-root`
    /// pins and what `moat ca` prints as the root's fingerprint.
    pub roots: Vec<String>,
    /// The root bundle the backup carries, PEM.
    pub roots_pem: String,
}

/// What the operator trusts a backup's origin to be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trust {
    /// The backup must be signed by a manager of this cluster, and, when
    /// `root` is given (`sha256:<hex>`), under that root.
    Cluster {
        /// The expected cluster id.
        id: ClusterId,
        /// The expected root fingerprint, if pinned.
        root: Option<String>,
    },
    /// Any origin: the operator vouches for the file. An unsigned (format
    /// 1) backup is accepted only this way.
    AnyCluster,
}

/// The origin block of a format-2 payload, as stored (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginBlock {
    /// The roots the signer trusts, PEM.
    pub(crate) roots_pem: String,
    /// The signer's certificate, then any intermediates, PEM.
    pub(crate) chain_pem: String,
    /// The signature over the signing input, base64.
    pub(crate) signature: String,
}

/// Signs `manifest_json` and returns the origin block's JSON bytes, after
/// checking that a reader will accept it.
pub(crate) fn sign(
    signer: &Signer,
    manifest_json: &[u8],
    manifest: &crate::Manifest,
) -> Result<Vec<u8>, OriginError> {
    let roots_pem = signer.roots.to_pem();
    let input = signing_input(manifest_json, roots_pem.as_bytes());
    let signature = signer
        .key
        .sign(&input)
        .map_err(|e| OriginError::Malformed {
            reason: format!("the key refused to sign: {e}"),
        })?;
    let block = OriginBlock {
        roots_pem,
        chain_pem: signer
            .chain
            .iter()
            .map(|c| moat_pki::cert_pem(c.as_ref()))
            .collect(),
        signature: data_encoding::BASE64.encode(&signature),
    };
    let json = serde_json::to_vec(&block).map_err(|e| OriginError::Malformed {
        reason: e.to_string(),
    })?;
    if json.len() as u64 > MAX_ORIGIN_LEN {
        return Err(OriginError::Malformed {
            reason: format!(
                "the roots and certificate chain take {} bytes, more than the {MAX_ORIGIN_LEN} a reader accepts",
                json.len()
            ),
        });
    }
    verify(&json, manifest_json, manifest)?;
    Ok(json)
}

/// Verifies an origin block (JSON bytes, already within
/// [`MAX_ORIGIN_LEN`]) against the exact manifest bytes and the parsed
/// manifest.
pub(crate) fn verify(
    block_json: &[u8],
    manifest_json: &[u8],
    manifest: &crate::Manifest,
) -> Result<SignedBy, OriginError> {
    let block: OriginBlock =
        serde_json::from_slice(block_json).map_err(|e| OriginError::Malformed {
            reason: e.to_string(),
        })?;
    let signature = data_encoding::BASE64
        .decode(block.signature.as_bytes())
        .map_err(|e| OriginError::Malformed {
            reason: format!("signature: {e}"),
        })?;
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(OriginError::Malformed {
            reason: format!("a signature of {} bytes", signature.len()),
        });
    }
    let roots = TrustRoots::from_pem(block.roots_pem.as_bytes()).map_err(OriginError::Roots)?;
    let cluster = roots.cluster_id().map_err(OriginError::Roots)?;
    if manifest.cluster_id != cluster.to_string() {
        return Err(OriginError::ClusterMismatch {
            manifest: manifest.cluster_id.clone(),
            roots: cluster.to_string(),
        });
    }
    let chain = CertificateDer::pem_slice_iter(block.chain_pem.as_bytes())
        .take(moat_pki::MAX_CHAIN_LEN + 1)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OriginError::Malformed {
            reason: format!("certificate chain: {e}"),
        })?;
    let at = OffsetDateTime::from_unix_timestamp(manifest.created_at).map_err(|_| {
        OriginError::Malformed {
            reason: format!("created_at {} is not a time", manifest.created_at),
        }
    })?;
    let signer = verify_chain(&chain, &roots, &cluster, Usage::Client, at)
        .map_err(OriginError::Certificate)?;
    if signer.role != Role::Manager {
        return Err(OriginError::NotAManager {
            node: signer.node_id.to_string(),
            role: signer.role,
        });
    }
    if manifest.node_id != signer.node_id.to_string() {
        return Err(OriginError::WrongSigner {
            named: manifest.node_id.clone(),
            certified: signer.node_id.to_string(),
        });
    }
    let input = signing_input(manifest_json, block.roots_pem.as_bytes());
    verify_possession(&chain, &roots, &cluster, &input, &signature)
        .map_err(|_| OriginError::BadSignature)?;
    // The roots that anchor the chain, each tried on its own.
    let anchors: Vec<String> = roots
        .certs()
        .iter()
        .filter(|root| {
            TrustRoots::new(vec![(*root).clone()])
                .is_ok_and(|one| verify_chain(&chain, &one, &cluster, Usage::Client, at).is_ok())
        })
        .map(|root| moat_pki::fingerprint(root.as_ref()))
        .collect();
    if anchors.is_empty() {
        return Err(OriginError::Certificate(moat_pki::CertError::UnknownIssuer));
    }
    Ok(SignedBy {
        cluster_id: cluster,
        signer,
        roots: anchors,
        roots_pem: block.roots_pem,
    })
}

/// Checks `origin` against what the operator trusts.
pub(crate) fn check_trust(origin: &Origin, trust: &Trust) -> Result<(), OriginError> {
    match (trust, origin) {
        (Trust::AnyCluster, _) => Ok(()),
        (Trust::Cluster { id, .. }, Origin::Unsigned) => Err(OriginError::Unsigned {
            expected: id.to_string(),
        }),
        (Trust::Cluster { id, root }, Origin::Signed(s)) => {
            if s.cluster_id != *id {
                return Err(OriginError::WrongCluster {
                    expected: id.to_string(),
                    found: s.cluster_id.to_string(),
                });
            }
            match root {
                Some(want) if !s.roots.iter().any(|r| r.eq_ignore_ascii_case(want)) => {
                    Err(OriginError::WrongRoot {
                        expected: want.clone(),
                        found: s.roots.join(", "),
                    })
                }
                _ => Ok(()),
            }
        }
    }
}

fn signing_input(manifest_json: &[u8], roots_pem: &[u8]) -> Vec<u8> {
    let hex =
        |b: &[u8]| data_encoding::HEXLOWER.encode(digest::digest(&digest::SHA256, b).as_ref());
    format!(
        "{ORIGIN_SIGNING_CONTEXT}\nmanifest={}\nroots={}\n",
        hex(manifest_json),
        hex(roots_pem)
    )
    .into_bytes()
}
