//! Inclusion proof files (`moat audit prove SEQ`): one record, the audit
//! path to a signed tree head, and the head; checkable alone with the
//! cluster CA certificate.

use moat_pki::{Identity, TrustRoots};

use crate::error::{BundleError, Error, HeadError, ProofError};
use crate::hash::Hash;
use crate::head::SignedTreeHead;
use crate::merkle::{MerkleLog, verify_inclusion};
use crate::record::Record;

/// The `format` of a proof file.
pub const PROOF_FORMAT: &str = "moat-audit-proof-v1";
/// Largest proof file accepted, checked before parsing.
pub const MAX_PROOF_FILE_BYTES: usize = 256 * 1024;
/// Most hashes in an audit path (a tree of 2^64 leaves needs 64).
const MAX_PROOF_HASHES: usize = 64;

/// Proof that one record is in the log a signed tree head describes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProofFile {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The record (its canonical JSON object).
    pub record: Record,
    /// Its leaf index: `seq - 1`.
    pub leaf_index: u64,
    /// The size of the tree the proof is for: `head.size`.
    pub tree_size: u64,
    /// The audit path, from the leaf up (RFC 6962 §2.1.1).
    pub proof: Vec<Hash>,
    /// The signed tree head the proof leads to.
    pub head: SignedTreeHead,
}

/// What [`verify_inclusion_file`] proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedInclusion {
    /// The record's sequence number.
    pub seq: u64,
    /// The size of the signed tree head.
    pub head_size: u64,
    /// The manager that signed the head.
    pub signer: Identity,
}

impl InclusionProofFile {
    /// Builds the proof that `record` is in `log`, up to the signed `head`.
    ///
    /// Checks that the record is the log's leaf at its position and that
    /// the head's root is the log's root at its size.
    pub fn new(log: &MerkleLog, record: Record, head: SignedTreeHead) -> Result<Self, Error> {
        let index = record.seq() - 1;
        let proof = log.inclusion_proof(index, head.size)?;
        if log.leaf_hash(index) != Some(record.leaf_hash()) {
            return Err(ProofError::LeafMismatch {
                seq: record.seq(),
                index,
            }
            .into());
        }
        if log.root(head.size)? != head.root {
            return Err(ProofError::RootMismatch.into());
        }
        Ok(Self {
            format: PROOF_FORMAT.to_owned(),
            record,
            leaf_index: index,
            tree_size: head.size,
            proof,
            head,
        })
    }

    /// The file's JSON text (indented, with a final newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a proof file always serializes");
        text.push('\n');
        text
    }

    /// Parses a proof file, rejecting oversized input before parsing.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_PROOF_FILE_BYTES {
            return Err(BundleError::TooLarge {
                what: "proof file",
                bytes: bytes.len() as u64,
                max: MAX_PROOF_FILE_BYTES as u64,
            });
        }
        let file: Self =
            serde_json::from_slice(bytes).map_err(|e| BundleError::malformed("proof file", e))?;
        if file.format != PROOF_FORMAT {
            return Err(BundleError::UnsupportedFormat {
                what: "proof file",
                found: file.format.chars().take(64).collect(),
                expected: PROOF_FORMAT,
            });
        }
        Ok(file)
    }
}

/// Checks a proof file alone, with the cluster CA certificate(s) `ca_pem`:
/// the head verifies (a manager of that cluster signed it), and the audit
/// path leads from the record's leaf hash to the head's root.
pub fn verify_inclusion_file(
    file: &InclusionProofFile,
    ca_pem: &[u8],
) -> Result<VerifiedInclusion, Error> {
    if file.format != PROOF_FORMAT {
        return Err(BundleError::UnsupportedFormat {
            what: "proof file",
            found: file.format.chars().take(64).collect(),
            expected: PROOF_FORMAT,
        }
        .into());
    }
    let seq = file.record.seq();
    if seq - 1 != file.leaf_index {
        return Err(ProofError::LeafMismatch {
            seq,
            index: file.leaf_index,
        }
        .into());
    }
    if file.tree_size != file.head.size {
        return Err(ProofError::HeadMismatch {
            proof_size: file.tree_size,
            head_size: file.head.size,
        }
        .into());
    }
    if file.proof.len() > MAX_PROOF_HASHES {
        return Err(ProofError::WrongLength.into());
    }
    let roots = TrustRoots::from_pem(ca_pem).map_err(HeadError::from)?;
    let signer = file.head.verify(&roots)?;
    verify_inclusion(
        &file.record.leaf_hash(),
        file.leaf_index,
        file.tree_size,
        &file.proof,
        &file.head.root,
    )?;
    Ok(VerifiedInclusion {
        seq,
        head_size: file.head.size,
        signer,
    })
}
