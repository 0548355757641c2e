//! The tamper-evident audit log.
//!
//! moat-audit owns:
//!
//! * records: [`Record`] (an [`Event`] with its sequence number, time and
//!   link to the previous record) and its canonical JSON form, the Merkle
//!   leaf; [`AuditKey`], the keyed hash under which secrets are named;
//! * the RFC 6962 Merkle tree: [`MerkleLog`] (roots, inclusion and
//!   consistency proofs for any size) and [`verify_inclusion`],
//!   [`verify_consistency`];
//! * signed tree heads: [`HeadSigner`] signs with a manager's key,
//!   [`SignedTreeHead::verify`] checks with the cluster CA;
//! * export: [`Bundle`], [`write_bundle`], [`read_bundle`],
//!   [`BundleWriter`]; offline checks: [`verify_bundle`] and its
//!   [`Report`], [`InclusionProofFile`] and [`verify_inclusion_file`];
//! * archives of the oldest records: [`write_archive`],
//!   [`verify_archive`], [`prove_from_archive`].
//!
//! It never holds a secret in a record (only [`AuditKey::hash`] of it),
//! never prints the audit key, implements no cryptography (SHA-256, HMAC
//! and signature checks are `ring`'s; certificate chains are checked by
//! `moat-pki`), and decides no policy: which events to record and when to
//! sign a head is the node's choice. It calls only `moat-pki`. Formats:
//! `docs/formats/audit.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod archive;
mod bundle;
mod error;
mod hash;
mod head;
mod key;
mod merkle;
mod proof;
mod record;
mod verify;

pub use archive::{
    ARCHIVE_FORMAT, ARCHIVE_MANIFEST, ArchiveManifest, MAX_ARCHIVE_MANIFEST_BYTES, VerifiedArchive,
    continues_archive, parse_archive_manifest, prove_from_archive, verify_archive, write_archive,
};
pub use bundle::{
    BUNDLE_FORMAT, Bundle, BundleWriter, CA_FILE, HEADS_FILE, Layout, MAX_CA_PEM_BYTES,
    MAX_HEADER_BYTES, MAX_HEADS, RECORDS_FILE, read_bundle, write_bundle,
};
pub use error::{BundleError, Error, HashParseError, HeadError, KeyError, ProofError, RecordError};
pub use hash::{HASH_BYTES, Hash, empty_root, leaf_hash, node_hash};
pub use head::{
    HEAD_SIGNING_CONTEXT, HeadSigner, MAX_CHAIN_PEM_BYTES, MAX_SIGNATURE_BYTES, SignedTreeHead,
};
pub use key::{AUDIT_HASH_PREFIX, AuditKey};
pub use merkle::{Frontier, MerkleLog, verify_consistency, verify_inclusion};
pub use proof::{
    InclusionProofFile, MAX_PROOF_FILE_BYTES, PROOF_FORMAT, VerifiedInclusion,
    verify_inclusion_file,
};
pub use record::{
    Action, Actor, Details, Event, MAX_DETAILS, MAX_NAME_BYTES, MAX_RECORD_BYTES, MAX_TEXT_BYTES,
    Outcome, Record, Text, Timestamp,
};
pub use verify::{MAX_PROBLEMS, Problem, Report, verify_bundle};
